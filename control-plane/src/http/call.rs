//! One Noise call over HTTP: authenticate the body against the served
//! keys, decode the call, run it on the [`Service`](crate::service::Service)
//! off the async threads (holding a long-poll until its tunnel changes),
//! and encrypt the answer to the caller. The HTTP status mirrors the
//! encrypted answer.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support_protocol::codec::{decode, encode, CodecError, Message};
use support_protocol::control_channel::{Api, ChannelError, IncomingCall};
use support_protocol::messages::{
    AdminCall, AdminReply, ApiError, DeviceCall, DeviceReply, DeviceResponse, ErrorCode,
};
use support_protocol::RequestId;
use warp::http::StatusCode;
use warp::reply::Response as WarpResponse;

use super::{plain, AppState, Peer};
use crate::service::{unix_now, Caller, DeviceOutcome};

fn random_seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    // The OS RNG does not fail on Linux once booted; a zero seed would only
    // weaken forward secrecy of this one answer, never authentication.
    if getrandom::getrandom(&mut s).is_err() {
        tracing::error!("OS randomness unavailable");
    }
    s
}

/// Every `X-Forwarded-For` line of a request, in order, joined as one list
/// (a proxy may add its own line rather than extend the client's); None
/// without one. Err when a line is not visible ASCII (warp's rule for a
/// header read as text): the request is refused.
pub(crate) fn forwarded_for<'a>(
    lines: impl Iterator<Item = &'a [u8]>,
) -> Result<Option<String>, ()> {
    let mut joined: Option<String> = None;
    for line in lines {
        let text = std::str::from_utf8(line).map_err(|_| ())?;
        if !text
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            return Err(());
        }
        match &mut joined {
            Some(j) => {
                j.push_str(", ");
                j.push_str(text);
            }
            None => joined = Some(text.to_string()),
        }
    }
    Ok(joined)
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

/// The HTTP status of an answer carrying `code`.
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

/// Both reply types are a request id and a result.
macro_rules! api_reply {
    ($($reply:ident),*) => {$(
        impl ApiReply for $reply {
            fn error(request_id: RequestId, err: ApiError) -> Self {
                $reply {
                    request_id,
                    result: Err(err),
                }
            }
            fn error_code(&self) -> Option<ErrorCode> {
                self.result.as_ref().err().map(|e| e.code)
            }
        }
    )*};
}

api_reply!(DeviceReply, AdminReply);

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

/// Runs `f` on the blocking pool (the store fsyncs), timing it.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let start = Instant::now();
    let r = tokio::task::spawn_blocking(f).await.ok();
    state.metrics.store_latency(start.elapsed());
    r
}

/// Authenticates `body` as a call of `api`, runs `handle` on it and
/// encrypts its reply; or the response that says why not.
async fn answer<C, R, F, Fut>(
    state: Arc<AppState>,
    api: Api,
    body: Bytes,
    peer: Peer,
    xff: Option<String>,
    handle: F,
) -> WarpResponse
where
    C: Message,
    R: ApiReply,
    F: FnOnce(Arc<AppState>, Caller, C) -> Fut,
    Fut: Future<Output = R>,
{
    let authenticated = authenticate::<C, R>(&state, api, &body, peer, xff.as_deref());
    // The body shares its allocation with the connection's first read
    // buffer (8 KiB): let it go before a long-poll is held.
    drop(body);
    match authenticated {
        Ok(Authenticated {
            incoming,
            caller,
            call,
        }) => {
            let reply = handle(state, caller, call).await;
            respond(incoming, &reply)
        }
        Err(r) => *r,
    }
}

/// `POST /v1/device`.
pub(super) async fn device(
    state: Arc<AppState>,
    body: Bytes,
    peer: Peer,
    xff: Option<String>,
) -> WarpResponse {
    answer(state, Api::Device, body, peer, xff, device_reply).await
}

/// `POST /v1/admin`.
pub(super) async fn admin(
    state: Arc<AppState>,
    body: Bytes,
    peer: Peer,
    xff: Option<String>,
) -> WarpResponse {
    answer(state, Api::Admin, body, peer, xff, admin_reply).await
}

/// A device call's reply; a long-poll is held here until its tunnel
/// changes, its time is up or the server shuts down.
async fn device_reply(state: Arc<AppState>, caller: Caller, call: DeviceCall) -> DeviceReply {
    let svc = state.service.clone();
    let first = {
        let call = call.clone();
        let svc = svc.clone();
        blocking(&state, move || svc.device_call(caller, call, unix_now())).await
    };
    match first {
        None => DeviceReply::error(
            call.request_id,
            ApiError::new(ErrorCode::Internal, "internal error"),
        ),
        Some(DeviceOutcome::Reply(r)) => r,
        Some(DeviceOutcome::Wait {
            tunnel_id,
            wait_secs,
        }) => {
            let polls = svc.polls().clone();
            let Some(guard) =
                polls.register(tunnel_id, caller.addr, svc.config().max_polls_per_address)
            else {
                state.metrics.request("long-poll-cap", 429);
                return DeviceReply::error(
                    call.request_id,
                    ApiError::new(
                        ErrorCode::RateLimited,
                        "too many long-polls from this address; retry later",
                    ),
                );
            };
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
    }
}

/// An admin call's reply.
async fn admin_reply(state: Arc<AppState>, caller: Caller, call: AdminCall) -> AdminReply {
    let svc = state.service.clone();
    let request_id = call.request_id;
    blocking(&state, move || svc.admin_call(caller, call, unix_now()))
        .await
        .unwrap_or_else(|| {
            AdminReply::error(
                request_id,
                ApiError::new(ErrorCode::Internal, "internal error"),
            )
        })
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
