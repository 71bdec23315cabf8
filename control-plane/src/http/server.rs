//! Our own accept loop around warp's filters (warp 0.4's `serve` offers no
//! connection cap or header timeout), so that the connection cap,
//! header-read timeout, per-request timeout and graceful shutdown are ours
//! to set. Device calls skip hyper (`device_conn` says why).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service as _;
use warp::http::StatusCode;
use warp::Reply;

use super::device_conn::{self, Head, Replay};
use super::{plain, routes, AppState, Peer, Routes};
use crate::rate_limit::NetworkShares;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take in all (a long-poll holds at most 25 s of it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);
/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves on `listener` until `shutdown` resolves, then stops accepting,
/// ends long-polls, and waits (bounded) for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    which: Routes,
    shutdown: impl Future<Output = ()>,
) {
    let filter = routes(state.clone(), which);
    let conns = Arc::new(Semaphore::new(state.max_connections));
    let per_network = Arc::new(NetworkShares::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let (stopping, _) = tokio::sync::watch::channel(false);
    let device_calls = matches!(which, Routes::Api { .. });
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // A trusted proxy carries many clients: the global cap bounds it,
        // and their polls are capped per client address.
        let share = if state.trusted_proxies.contains(&peer.ip()) {
            None
        } else if let Some(share) = per_network.take(peer.ip(), state.max_connections_per_address) {
            Some(share)
        } else {
            tracing::debug!(%peer, "this address's connection cap reached; closing connection");
            state.metrics.request("address-connection-cap", 503);
            drop(stream);
            continue;
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection cap reached; closing connection");
            state.metrics.request("connection-cap", 503);
            drop(stream);
            continue;
        };
        let svc = warp::service(filter.clone());
        let watcher = graceful.watcher();
        let (state, mut stopping) = (state.clone(), stopping.subscribe());
        tokio::spawn(async move {
            let _permit = permit;
            let _share = share;
            let mut stream = stream;
            // A device call is answered without hyper (device_conn says
            // why); anything else goes to hyper with what was read replayed.
            let accepted = std::time::Instant::now();
            let read = if device_calls {
                let head = tokio::select! {
                    head = tokio::time::timeout(HEADER_TIMEOUT, device_conn::read_head(&mut stream)) => head,
                    _ = stopping.changed() => return,
                };
                match head {
                    Err(_) | Ok(Head::Closed) => return,
                    Ok(Head::Device(req)) => {
                        device_conn::serve(stream, req, state, peer, REQUEST_TIMEOUT).await;
                        return;
                    }
                    Ok(Head::Other(read)) => read,
                }
            } else {
                Vec::new()
            };
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(Peer(peer));
                let mut svc = svc.clone();
                async move {
                    match tokio::time::timeout(REQUEST_TIMEOUT, svc.call(req)).await {
                        Ok(r) => r,
                        Err(_) => Ok(plain(StatusCode::SERVICE_UNAVAILABLE, "request timed out")
                            .into_response()),
                    }
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                // The head's time is counted from the accept, whoever reads it.
                .header_read_timeout(HEADER_TIMEOUT.saturating_sub(accepted.elapsed()))
                .serve_connection(TokioIo::new(Replay::new(read, stream)), svc);
            let _ = watcher.watch(conn).await;
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; ending long-polls");
    let _ = stopping.send(true);
    state.service.polls().shutdown();
    // Every connection holds a permit until it is done: hyper's and the
    // device calls answered without it alike.
    let everyone = u32::try_from(state.max_connections).unwrap_or(u32::MAX);
    let drained = async {
        graceful.shutdown().await;
        let _ = conns.acquire_many(everyone).await;
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        tracing::warn!("in-flight requests did not finish in time");
    }
}
