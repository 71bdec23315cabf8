//! The HTTP front: `POST /v1/device`, `POST /v1/admin`, `GET /healthz`,
//! `GET /metrics` (on its own private address with `--metrics-listen`). Our own accept loop around warp's filters, so that the
//! connection cap, header-read timeout, per-request timeout and graceful
//! shutdown are ours to set.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use support_protocol::codec::{decode, encode, CodecError, Message};
use support_protocol::control_channel::{Api, ChannelError, IncomingCall, ServerKeys};
use support_protocol::messages::{
    AdminCall, AdminReply, ApiError, DeviceCall, DeviceReply, DeviceResponse, ErrorCode,
};
use support_protocol::RequestId;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service as _;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response as WarpResponse;
use warp::{Filter, Rejection, Reply};

use crate::metrics::Metrics;
use crate::service::{unix_now, Caller, DeviceOutcome, Service};

/// The largest request body accepted (one Noise message and its framing).
pub const MAX_BODY: u64 = 65_535 + 16;
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take in all (a long-poll holds at most 25 s of it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);
/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The peer address of the TCP connection a request came on.
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

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
}

fn plain(status: StatusCode, text: &str) -> WarpResponse {
    let mut r = WarpResponse::new(format!("{text}\n").into());
    *r.status_mut() = status;
    r
}

fn random_seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    // The OS RNG does not fail on Linux once booted; a zero seed would only
    // weaken forward secrecy of this one answer, never authentication.
    if getrandom::getrandom(&mut s).is_err() {
        tracing::error!("OS randomness unavailable");
    }
    s
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the
/// rightmost address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_addr(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let Some(xff) = forwarded_for else {
        return peer;
    };
    let mut addr = peer;
    for part in xff.rsplit(',') {
        match part.trim().parse::<IpAddr>() {
            Ok(ip) => {
                addr = ip;
                if !trusted.contains(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    addr
}

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Malformed | ErrorCode::UnsupportedVersion => StatusCode::BAD_REQUEST,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyExists | ErrorCode::InvalidState | ErrorCode::StaleApproval => {
            StatusCode::CONFLICT
        }
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn channel_status(e: ChannelError) -> StatusCode {
    match e {
        ChannelError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ChannelError::Handshake | ChannelError::UnknownServerKey => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn codec_error(e: &CodecError) -> ApiError {
    let code = match e {
        CodecError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
        CodecError::TooLarge { .. } => ErrorCode::TooLarge,
        _ => ErrorCode::Malformed,
    };
    ApiError::new(code, &e.to_string())
}

/// The two APIs' reply types: an answer or an error, for one request id.
trait ApiReply: Message {
    fn error(request_id: RequestId, err: ApiError) -> Self;
    fn error_code(&self) -> Option<ErrorCode>;
}

impl ApiReply for DeviceReply {
    fn error(request_id: RequestId, err: ApiError) -> Self {
        DeviceReply {
            request_id,
            result: Err(err),
        }
    }
    fn error_code(&self) -> Option<ErrorCode> {
        self.result.as_ref().err().map(|e| e.code)
    }
}

impl ApiReply for AdminReply {
    fn error(request_id: RequestId, err: ApiError) -> Self {
        AdminReply {
            request_id,
            result: Err(err),
        }
    }
    fn error_code(&self) -> Option<ErrorCode> {
        self.result.as_ref().err().map(|e| e.code)
    }
}

/// Encrypts `reply` to the caller; the HTTP status mirrors its result.
fn respond<R: ApiReply>(incoming: IncomingCall, reply: &R) -> WarpResponse {
    let status = reply.error_code().map_or(StatusCode::OK, status_of);
    let Ok(bytes) = encode(reply) else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "reply did not encode");
    };
    match incoming.respond(&bytes) {
        Ok(body) => {
            let mut r = WarpResponse::new(body.into());
            *r.status_mut() = status;
            r.headers_mut().insert(
                "content-type",
                warp::http::HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

struct Authenticated<C> {
    incoming: IncomingCall,
    caller: Caller,
    call: C,
}

/// Authenticates the body and decodes its call; on failure, the response
/// to send (plain text if nobody could be authenticated, else an encrypted
/// error reply).
fn authenticate<C: Message, R: ApiReply>(
    state: &AppState,
    api: Api,
    body: &[u8],
    peer: Peer,
    xff: Option<&str>,
) -> Result<Authenticated<C>, Box<WarpResponse>> {
    let keys = state.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
    let incoming = keys
        .accept(api, body, random_seed())
        .map_err(|e| plain(channel_status(e), &e.to_string()))?;
    let addr = client_addr(peer.0.ip(), xff, &state.trusted_proxies);
    let caller = Caller {
        key: incoming.client_public,
        addr,
    };
    match decode::<C>(&incoming.call) {
        Ok(call) => Ok(Authenticated {
            incoming,
            caller,
            call,
        }),
        Err(e) => Err(Box::new(respond(
            incoming,
            &R::error(RequestId(0), codec_error(&e)),
        ))),
    }
}

async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let start = Instant::now();
    let r = tokio::task::spawn_blocking(f).await.ok();
    state.metrics.store_latency(start.elapsed());
    r
}

async fn device(
    state: Arc<AppState>,
    body: Bytes,
    peer: Peer,
    xff: Option<String>,
) -> WarpResponse {
    let Authenticated {
        incoming,
        caller,
        call,
    } = match authenticate::<DeviceCall, DeviceReply>(
        &state,
        Api::Device,
        &body,
        peer,
        xff.as_deref(),
    ) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let svc = state.service.clone();
    let first = {
        let call = call.clone();
        let svc = svc.clone();
        blocking(&state, move || svc.device_call(caller, call, unix_now())).await
    };
    let reply = match first {
        None => DeviceReply {
            request_id: call.request_id,
            result: Err(ApiError::new(ErrorCode::Internal, "internal error")),
        },
        Some(DeviceOutcome::Reply(r)) => r,
        Some(DeviceOutcome::Wait {
            tunnel_id,
            wait_secs,
        }) => {
            let polls = svc.polls().clone();
            let guard = polls.register(tunnel_id);
            let notified = guard.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let shutdown = polls.shutdown_signal();
            tokio::pin!(shutdown);
            shutdown.as_mut().enable();
            // Check again now that the wake-up is armed, so no change is missed.
            let again = {
                let call = call.clone();
                let svc = svc.clone();
                blocking(&state, move || svc.device_call(caller, call, unix_now())).await
            };
            match again {
                Some(DeviceOutcome::Reply(r)) => r,
                _ => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = &mut shutdown => {}
                        _ = tokio::time::sleep(Duration::from_secs(wait_secs)) => {}
                    }
                    let svc2 = svc.clone();
                    let result: Result<DeviceResponse, ApiError> =
                        blocking(&state, move || svc2.poll_now(caller, tunnel_id))
                            .await
                            .unwrap_or_else(|| {
                                Err(ApiError::new(ErrorCode::Internal, "internal error"))
                            });
                    DeviceReply {
                        request_id: call.request_id,
                        result,
                    }
                }
            }
        }
    };
    respond(incoming, &reply)
}

async fn admin(state: Arc<AppState>, body: Bytes, peer: Peer, xff: Option<String>) -> WarpResponse {
    let Authenticated {
        incoming,
        caller,
        call,
    } = match authenticate::<AdminCall, AdminReply>(&state, Api::Admin, &body, peer, xff.as_deref())
    {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let svc = state.service.clone();
    let request_id = call.request_id;
    let reply = blocking(&state, move || svc.admin_call(caller, call, unix_now()))
        .await
        .unwrap_or(AdminReply {
            request_id,
            result: Err(ApiError::new(ErrorCode::Internal, "internal error")),
        });
    respond(incoming, &reply)
}

fn with_state(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// Which routes a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routes {
    /// The API and `/healthz`, and `/metrics` when it has no address of its own.
    Api {
        /// Whether `/metrics` is served here too.
        with_metrics: bool,
    },
    /// Only `/metrics` and `/healthz` (the `--metrics-listen` address).
    Metrics,
}

/// The filter for `which` routes.
pub fn routes(state: Arc<AppState>, which: Routes) -> BoxedFilter<(WarpResponse,)> {
    let call = |path: &'static str| {
        warp::post()
            .and(warp::path("v1"))
            .and(warp::path(path))
            .and(warp::path::end())
            .and(warp::body::content_length_limit(MAX_BODY))
            .and(warp::body::bytes())
            .and(warp::ext::get::<Peer>())
            .and(warp::header::optional::<String>("x-forwarded-for"))
    };
    let device_route = with_state(state.clone()).and(call("device")).then(
        |st: Arc<AppState>, body, peer, xff| async move {
            let r = device(st.clone(), body, peer, xff).await;
            st.metrics.request("/v1/device", r.status().as_u16());
            r
        },
    );
    let admin_route = with_state(state.clone()).and(call("admin")).then(
        |st: Arc<AppState>, body, peer, xff| async move {
            let r = admin(st.clone(), body, peer, xff).await;
            st.metrics.request("/v1/admin", r.status().as_u16());
            r
        },
    );
    let health = warp::get()
        .and(warp::path("healthz"))
        .and(warp::path::end())
        .map(|| plain(StatusCode::OK, "ok"));
    let metrics = with_state(state.clone())
        .and(warp::get())
        .and(warp::path("metrics"))
        .and(warp::path::end())
        .then(|st: Arc<AppState>| async move {
            let svc = st.service.clone();
            let counts = tokio::task::spawn_blocking(move || svc.store().count_by_state()).await;
            let refs: Vec<(&str, u64)> = match counts {
                Ok(Ok(c)) => c.into_iter().map(|(k, n)| (k.name(), n)).collect(),
                _ => Vec::new(),
            };
            let text = st.metrics.render(&refs, st.service.polls().waiting());
            let mut r = WarpResponse::new(text.into());
            r.headers_mut().insert(
                "content-type",
                warp::http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        });
    let metrics = metrics.or(health).unify();
    let filter = match which {
        Routes::Metrics => metrics.boxed(),
        Routes::Api { with_metrics: true } => device_route
            .or(admin_route)
            .unify()
            .or(metrics)
            .unify()
            .boxed(),
        Routes::Api {
            with_metrics: false,
        } => device_route
            .or(admin_route)
            .unify()
            .or(health)
            .unify()
            .boxed(),
    };
    filter.recover(rejection).unify().boxed()
}

async fn rejection(r: Rejection) -> Result<WarpResponse, Infallible> {
    let (status, text) = if r.is_not_found() {
        (StatusCode::NOT_FOUND, "no such route")
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        (StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        (StatusCode::LENGTH_REQUIRED, "a Content-Length is required")
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else {
        (StatusCode::BAD_REQUEST, "bad request")
    };
    Ok(plain(status, text))
}

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
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection cap reached; closing connection");
            state.metrics.request("connection-cap", 503);
            drop(stream);
            continue;
        };
        let svc = warp::service(filter.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
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
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = watcher.watch(conn).await;
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; ending long-polls");
    state.service.polls().shutdown();
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish in time");
    }
}

#[cfg(test)]
mod tests {
    use super::client_addr;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy = ip("10.0.0.1");
        let trusted = [proxy, ip("10.0.0.2")];
        // An untrusted peer's header is ignored: it could claim any address.
        assert_eq!(
            client_addr(ip("198.51.100.7"), Some("203.0.113.9"), &trusted),
            ip("198.51.100.7")
        );
        // From a trusted proxy: the rightmost untrusted address.
        assert_eq!(
            client_addr(proxy, Some("203.0.113.9"), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_addr(proxy, Some("1.2.3.4, 203.0.113.9, 10.0.0.2"), &trusted),
            ip("203.0.113.9")
        );
        // No header, or garbage: the proxy itself.
        assert_eq!(client_addr(proxy, None, &trusted), proxy);
        assert_eq!(client_addr(proxy, Some("not-an-ip"), &trusted), proxy);
    }
}

#[cfg(test)]
mod long_poll_tests {
    use crate::long_poll::LongPolls;
    use support_protocol::TunnelId;

    #[test]
    fn a_tunnel_s_notifier_goes_with_its_last_waiter() {
        let polls = LongPolls::default();
        {
            let _a = polls.register(TunnelId(1));
            let _b = polls.register(TunnelId(1));
            let _c = polls.register(TunnelId(2));
            assert_eq!(polls.tunnels_tracked(), 2);
            assert_eq!(polls.waiting(), 3);
        }
        assert_eq!(
            polls.tunnels_tracked(),
            0,
            "entries leaked after their waiters left"
        );
        assert_eq!(polls.waiting(), 0);
    }
}
