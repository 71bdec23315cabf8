//! `support-control-plane`: the bookkeeping service of support-tunnel.
//!
//! It stores device requests, relays sealed approvals and reports, holds
//! long-polls, expires tunnels and keeps a hash-chained audit log. It never
//! sees a private key, a PSK or a one-time secret, and it cannot grant
//! access: devices verify CA-certified approvals, admins verify request tags.
//!
//! | module | owns |
//! |---|---|
//! | [`service`] | the API logic (device and admin calls), sans HTTP |
//! | [`store`] | the `Store` trait and its redb implementation |
//! | [`http`] | the accept loop and its limits, the routes, one Noise call; graceful shutdown |
//! | [`long_poll`] | wake-ups for waiting devices |
//! | [`rate_limit`] | per-address and global create limits (time an argument) |
//! | [`server_keys`] | the static Noise keys and their rotation |
//! | [`operator`] | operator commands over the local socket |
//! | [`metrics`] | Prometheus text metrics |
//! | [`config`] | `serve`'s settings: flag, environment, file, default |
#![forbid(unsafe_code)]

pub mod config;
pub mod http;
pub mod long_poll;
pub mod metrics;
pub mod operator;
pub mod rate_limit;
pub mod server_keys;
pub mod service;
pub mod store;
