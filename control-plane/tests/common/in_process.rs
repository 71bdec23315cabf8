//! The control plane in this process: a [`Service`] over a store in a temp
//! dir (or PostgreSQL, see `super::postgres`), and its warp routes driven as a tower service (what
//! `warp::test` does; its feature needs hyper's client, which this offline
//! build does not have). No binary, no socket: calls take microseconds and
//! the service's clock is an argument.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use support_control_plane::config::CreateLimits;
use support_control_plane::http::{routes, AppState, Peer, Routes};
use support_control_plane::service::{Caller, Service, ServiceConfig};
use support_control_plane::store::{AdminRecord, AdminRole, Store};
use support_protocol::audit::Actor;
use support_protocol::control_channel::{ServerKeys, StaticKeypair};
use tower_service::Service as _;
use warp::filters::BoxedFilter;
use warp::hyper::body::{Body, Frame, SizeHint};
use warp::reply::Response;

use super::{seed, Client, Raw};

/// The address calls come from unless a test says otherwise.
pub const PEER: &str = "198.51.100.7:40000";

/// Limits no test reaches by accident.
pub const PERMISSIVE: CreateLimits = CreateLimits {
    per_address_per_minute: 1_000_000,
    per_address_burst: 1_000_000,
    per_minute: 1_000_000,
};

/// What an in-process control plane is built from.
pub struct Setup {
    pub config: ServiceConfig,
    pub creates: CreateLimits,
    pub trusted_proxies: Vec<IpAddr>,
    pub routes: Routes,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            config: ServiceConfig::default(),
            creates: PERMISSIVE,
            trusted_proxies: Vec::new(),
            routes: Routes::Api { with_metrics: true },
        }
    }
}

/// A control plane in this process.
pub struct InProcess {
    pub dir: tempfile::TempDir,
    pub service: Arc<Service>,
    pub state: Arc<AppState>,
    /// The served static key (clients pin its public half).
    pub key: StaticKeypair,
    filter: BoxedFilter<(Response,)>,
    rt: tokio::runtime::Runtime,
}

impl InProcess {
    /// Defaults, with permissive create limits.
    pub fn start() -> Arc<InProcess> {
        Self::with(Setup::default())
    }

    pub fn with(setup: Setup) -> Arc<InProcess> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = super::postgres::open_store_for_test(dir.path());
        let service = Arc::new(Service::new(
            store,
            setup.config,
            setup.creates.limiter(std::time::Instant::now()),
        ));
        let key = StaticKeypair::from_secret(seed());
        let keys = Arc::new(RwLock::new(Arc::new(ServerKeys::new(vec![key.clone()]))));
        let state = Arc::new(AppState {
            trusted_proxies: setup.trusted_proxies,
            ..AppState::new(service.clone(), keys)
        });
        let filter = routes(state.clone(), setup.routes);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        Arc::new(InProcess {
            dir,
            service,
            state,
            key,
            filter,
            rt,
        })
    }

    /// A client whose calls go to these routes.
    pub fn client(self: &Arc<Self>) -> Client {
        Client {
            url: String::new(),
            server: self.key.public,
            in_process: Some(self.clone()),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.service.store()
    }

    /// Enrolls an admin, as `admins add` does.
    pub fn enroll(&self, name: &str, key: &StaticKeypair, role: AdminRole) {
        let admin = AdminRecord {
            name: name.into(),
            key: key.public,
            role,
        };
        self.store()
            .put_admin(
                &admin,
                Actor::System,
                support_control_plane::service::unix_now(),
            )
            .expect("enrolls");
    }

    /// One HTTP request through the routes, from `peer`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        peer: SocketAddr,
        headers: &[(&str, &str)],
    ) -> Raw {
        let mut req = warp::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-length", body.len());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req
            .body(OneShot(Some(Bytes::copy_from_slice(body))))
            .expect("request");
        req.extensions_mut().insert(Peer(peer));
        let mut svc = warp::service(self.filter.clone());
        self.rt.block_on(async move {
            let resp = svc.call(req).await.unwrap_or_else(|e| match e {});
            let status = resp.status().as_u16();
            Raw {
                status,
                body: collect(resp.into_body()).await,
            }
        })
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Raw {
        self.request("POST", path, body, peer(PEER), &[])
    }

    pub fn get(&self, path: &str) -> Raw {
        self.request("GET", path, b"", peer(PEER), &[])
    }
}

pub fn peer(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// Who calls the service directly: `key`'s holder from [`PEER`].
pub fn caller(key: &StaticKeypair) -> Caller {
    Caller {
        key: key.public,
        addr: peer(PEER).ip(),
    }
}

/// A request body sent in one piece.
struct OneShot(Option<Bytes>);

impl Body for OneShot {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

async fn collect<B: Body>(body: B) -> Vec<u8>
where
    B::Error: std::fmt::Debug,
{
    let mut body = Box::pin(body);
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        if let Ok(mut data) = frame.expect("response body").into_data() {
            while data.has_remaining() {
                let chunk = data.chunk();
                out.extend_from_slice(chunk);
                let n = chunk.len();
                data.advance(n);
            }
        }
    }
    out
}
