//! The HTTP front: `POST /v1/device`, `POST /v1/admin`, `GET /healthz`,
//! `GET /metrics` (on its own private address with `--metrics-listen`).
//!
//! | module | owns |
//! |---|---|
//! | [`server`] | our accept loop around warp's filters: connection cap, header-read and request timeouts, graceful shutdown |
//! | [`routes`](mod@routes) | the warp filters, built from an [`AppState`] (so a test can drive them without a socket) |
//! | [`call`] | one Noise call: authenticate, decode, run the [`Service`], encrypt the answer |
//! | `device_conn` | device calls read and answered without hyper, so a held long-poll stays small |

pub mod call;
mod device_conn;
pub mod routes;
pub mod server;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use support_protocol::control_channel::ServerKeys;
use warp::http::StatusCode;
use warp::reply::Response as WarpResponse;

use crate::config::DEFAULT_MAX_CONNECTIONS;
use crate::metrics::Metrics;
use crate::service::Service;

pub use call::client_addr;
pub use routes::{routes, Routes};
pub use server::serve;

/// The largest request body accepted (one Noise message and its framing).
pub const MAX_BODY: u64 = 65_535 + 16;

/// The peer address of the TCP connection a request came on: the accept
/// loop puts it in each request's extensions (a test puts its own).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// What the HTTP layer shares.
pub struct AppState {
    /// The logic.
    pub service: Arc<Service>,
    /// The served static keys (swapped on rotation).
    pub keys: Arc<RwLock<Arc<ServerKeys>>>,
    /// The counters.
    pub metrics: Metrics,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// The connection cap.
    pub max_connections: usize,
    /// The connection cap of one client address (IPv6: its /64); trusted
    /// proxies have none of their own.
    pub max_connections_per_address: usize,
}

impl AppState {
    /// `service` served with `keys`: fresh counters, no trusted proxy, the
    /// default connection cap.
    pub fn new(service: Arc<Service>, keys: Arc<RwLock<Arc<ServerKeys>>>) -> Self {
        Self {
            service,
            keys,
            metrics: Metrics::default(),
            trusted_proxies: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: crate::config::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        }
    }
}

/// A plain-text response (for whoever could not be authenticated).
fn plain(status: StatusCode, text: &str) -> WarpResponse {
    let mut r = WarpResponse::new(format!("{text}\n").into());
    *r.status_mut() = status;
    r
}
