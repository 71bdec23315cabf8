//! A lying control plane: speaks the real device API (HTTP + Noise with its
//! own pinned key) but serves whatever approval the test hands it, or
//! garbage. This is the adversary of DESIGN invariant 2, so it has to be a
//! double: the real control plane never lies.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support_protocol::approval_box::SealedApproval;
use support_protocol::bounded::BoundedString;
use support_protocol::control_channel::{Api, ServerKeys, StaticKeypair};
use support_protocol::messages::{
    ApiError, DeviceCall, DeviceReply, DeviceRequest, DeviceResponse, ErrorCode, StopReason,
    TunnelRequest,
};
use support_protocol::state::TunnelState;
use support_protocol::TunnelId;

use super::random32;
use support_testkit::http::{read_request, respond};

/// How the fake answers.
#[derive(Clone)]
pub enum Mode {
    /// Correct framing; polls get `serve`.
    Normal,
    /// 200 with random bytes.
    Garbage,
    /// 200 with 8 MiB.
    Huge,
    /// 500 with a text body.
    ServerError,
}

#[derive(Default)]
pub struct Seen {
    pub requests: Vec<TunnelRequest>,
    pub connected: Vec<TunnelId>,
    pub stopped: Vec<(TunnelId, StopReason)>,
    /// Connected reports and stop notices answered with a transient error.
    pub turned_away: u32,
    /// How many more connected reports and stop notices to answer with a
    /// transient error (unavailable, then rate-limited, alternating).
    pub transient_errors: u32,
}

/// What polls answer, and to whom it was answered.
pub struct Served {
    pub state: TunnelState,
    pub approval: SealedApproval,
    /// The tunnel of each poll answered with this approval (recorded as
    /// the answer is made).
    pub answered: Vec<TunnelId>,
}

pub struct FakeControlPlane {
    pub url: String,
    pub public: [u8; 32],
    pub mode: Arc<Mutex<Mode>>,
    /// What polls answer (Pending without one).
    pub serve: Arc<Mutex<Option<Served>>>,
    pub seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
}

impl FakeControlPlane {
    pub fn start() -> FakeControlPlane {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let key = StaticKeypair::from_secret(random32());
        let public = key.public;
        let keys = Arc::new(ServerKeys::new(vec![key]));
        let f = FakeControlPlane {
            url,
            public,
            mode: Arc::new(Mutex::new(Mode::Normal)),
            serve: Arc::new(Mutex::new(None)),
            seen: Arc::new(Mutex::new(Seen::default())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (mode, serve, seen, stop) = (
            f.mode.clone(),
            f.serve.clone(),
            f.seen.clone(),
            f.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (keys, mode, serve, seen) =
                            (keys.clone(), mode.clone(), serve.clone(), seen.clone());
                        std::thread::spawn(move || {
                            handle(stream, &keys, &mode, &serve, &seen);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        f
    }

    pub fn set_mode(&self, m: Mode) {
        *self.mode.lock().expect("lock") = m;
    }

    pub fn serve(&self, state: TunnelState, approval: SealedApproval) {
        *self.serve.lock().expect("lock") = Some(Served {
            state,
            approval,
            answered: Vec::new(),
        });
    }

    /// How many of `id`'s polls were answered with what [`Self::serve`] serves now.
    pub fn answers_served(&self, id: TunnelId) -> usize {
        self.serve
            .lock()
            .expect("lock")
            .as_ref()
            .map_or(0, |s| s.answered.iter().filter(|t| **t == id).count())
    }

    pub fn clear(&self) {
        *self.serve.lock().expect("lock") = None;
    }

    pub fn request_of(&self, id: TunnelId) -> TunnelRequest {
        self.seen
            .lock()
            .expect("lock")
            .requests
            .iter()
            .find(|r| r.body.tunnel_id == id)
            .cloned()
            .expect("the device sent its request")
    }
}

impl Drop for FakeControlPlane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Takes one transient error from the budget, if any is left.
fn transient(seen: &Mutex<Seen>) -> bool {
    let mut s = seen.lock().expect("lock");
    if s.transient_errors == 0 {
        return false;
    }
    s.transient_errors -= 1;
    s.turned_away += 1;
    true
}

fn handle(
    mut stream: TcpStream,
    keys: &ServerKeys,
    mode: &Mutex<Mode>,
    serve: &Mutex<Option<Served>>,
    seen: &Mutex<Seen>,
) {
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    let body = request.body;
    match mode.lock().expect("lock").clone() {
        Mode::Normal => {}
        Mode::Garbage => return respond(&mut stream, 200, &random32()),
        Mode::Huge => return respond(&mut stream, 200, &vec![7u8; 8 << 20]),
        Mode::ServerError => return respond(&mut stream, 500, b"database on fire"),
    }
    let Ok(incoming) = keys.accept(Api::Device, &body, random32()) else {
        return respond(&mut stream, 400, b"bad channel");
    };
    let Ok(call) = support_protocol::decode::<DeviceCall>(&incoming.call) else {
        return respond(&mut stream, 400, b"bad call");
    };
    let result = match call.request {
        DeviceRequest::Create(r) => {
            let id = r.body.tunnel_id;
            seen.lock().expect("lock").requests.push(*r);
            DeviceResponse::Created {
                tunnel_id: id,
                stale_after_secs: 3600,
            }
        }
        DeviceRequest::Poll(p) => {
            // Counted under the same lock as read: a count never mixes
            // answers of an earlier `serve` in.
            let served = serve.lock().expect("lock").as_mut().map(|s| {
                s.answered.push(p.tunnel_id);
                (s.state, s.approval.clone())
            });
            let (state, approval) = match served {
                Some((s, a)) => (s, Some(Box::new(a))),
                None => (TunnelState::Pending, None),
            };
            if state == p.known {
                // A long poll with nothing new.
                std::thread::sleep(Duration::from_millis(300));
            }
            DeviceResponse::Poll { state, approval }
        }
        DeviceRequest::Connected(_) | DeviceRequest::Stopped(_) if transient(seen) => {
            let reply = DeviceReply {
                request_id: call.request_id,
                result: Err(ApiError {
                    code: if seen.lock().expect("lock").turned_away % 2 == 1 {
                        ErrorCode::Unavailable
                    } else {
                        ErrorCode::RateLimited
                    },
                    message: BoundedString::new("try again later").expect("fits"),
                }),
            };
            let bytes = support_protocol::encode(&reply).expect("encodes");
            return match incoming.respond(&bytes) {
                Ok(b) => respond(&mut stream, 200, &b),
                Err(_) => respond(&mut stream, 500, b"respond"),
            };
        }
        DeviceRequest::Connected(n) => {
            seen.lock().expect("lock").connected.push(n.tunnel_id);
            DeviceResponse::Ack
        }
        DeviceRequest::Stopped(n) => {
            seen.lock()
                .expect("lock")
                .stopped
                .push((n.tunnel_id, n.reason));
            DeviceResponse::Ack
        }
    };
    let reply = DeviceReply {
        request_id: call.request_id,
        result: Ok(result),
    };
    let bytes = support_protocol::encode(&reply).expect("encodes");
    match incoming.respond(&bytes) {
        Ok(b) => respond(&mut stream, 200, &b),
        Err(_) => respond(&mut stream, 500, b"respond"),
    }
}
