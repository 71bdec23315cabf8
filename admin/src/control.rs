//! The admin API client: one Noise IK call per POST, as the engineer's
//! enrolled key, to the control plane's pinned keys.

use std::fmt;
use std::io::Read;
use std::time::Duration;

use support_protocol::bounded::BoundError;
use support_protocol::codec::CodecError;
use support_protocol::control_channel::{Api, ChannelError, ClientCall, StaticKeypair};
use support_protocol::failover::Failover;
use support_protocol::messages::admin::{ListQuery, StopRequest, TunnelDetail, TunnelSummary};
use support_protocol::messages::{
    AdminCall, AdminReply, AdminRequest, AdminResponse, ApiError, ErrorCode,
};
use support_protocol::{RequestId, TunnelId};

use crate::secret_file::random;

const MAX_RESPONSE: u64 = 256 * 1024;

/// Why a call to the control plane (or setting up its client) failed.
#[derive(Debug)]
pub enum ControlPlaneError {
    /// The configured URL is not `http://` or `https://`.
    BadUrl(String),
    /// No control-plane key is pinned.
    NoPinnedKey,
    /// The call does not encode.
    Encode(CodecError),
    /// The call's Noise session could not start.
    Channel(ChannelError),
    /// No HTTP answer.
    Unreachable {
        /// The control plane's URL.
        url: String,
        /// What the HTTP client said.
        source: Box<ureq::Error>,
    },
    /// The answer could not be read.
    Read(std::io::Error),
    /// No pinned key's session was answered: the last answer's HTTP status,
    /// why it does not open, and the start of its text.
    Unauthenticated {
        /// The HTTP status.
        status: u16,
        /// Why the answer does not open as the call's Noise reply.
        error: ChannelError,
        /// The answer's first characters (control characters left out).
        text: String,
    },
    /// The answer opened but does not decode.
    Undecodable(CodecError),
    /// The answer is for another call.
    AnotherCall,
    /// The control plane refused the call.
    Refused(ApiError),
    /// An answer of another kind than the call expects.
    Unexpected(Box<AdminResponse>),
    /// The stop note does not fit.
    Note(BoundError),
}

impl ControlPlaneError {
    /// An answer that does not fit the call.
    pub fn unexpected(r: AdminResponse) -> ControlPlaneError {
        ControlPlaneError::Unexpected(Box::new(r))
    }

    /// Whether the control plane refused the call with `code`.
    pub fn is_refusal(&self, code: ErrorCode) -> bool {
        matches!(self, ControlPlaneError::Refused(e) if e.code == code)
    }
}

impl fmt::Display for ControlPlaneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadUrl(url) => write!(
                f,
                "the control plane URL must start with http:// or https://, got '{url}'"
            ),
            Self::NoPinnedKey => f.write_str(
                "no control-plane key is pinned: set control_plane_keys in admin.toml or pass --control-plane-key",
            ),
            Self::Encode(e) => write!(f, "the call to the control plane does not encode: {e}"),
            Self::Channel(e) => write!(f, "the call to the control plane cannot start: {e}"),
            Self::Unreachable { url, source } => {
                write!(f, "the control plane at {url} is unreachable: {source}")
            }
            Self::Read(e) => write!(f, "reading the control plane's answer: {e}"),
            Self::Unauthenticated {
                status,
                error,
                text,
            } => write!(
                f,
                "the control plane answered HTTP {status}: {error} ({text})"
            ),
            Self::Undecodable(e) => write!(f, "the control plane's answer does not decode: {e}"),
            Self::AnotherCall => f.write_str("the control plane answered another call"),
            Self::Refused(e) => write!(f, "the control plane refused: {e}"),
            Self::Unexpected(r) => {
                write!(f, "the control plane gave an unexpected answer: {r:?}")
            }
            Self::Note(e) => write!(f, "the note cannot be used: {e}"),
        }
    }
}

impl std::error::Error for ControlPlaneError {}

/// A control plane: one URL (a single or load-balanced address), or each
/// replica's, tried in turn when one does not answer.
pub struct ControlPlane {
    urls: Vec<String>,
    keys: Vec<[u8; 32]>,
    me: StaticKeypair,
    /// Which URL answered last: later calls start there.
    replicas: Failover,
}

impl ControlPlane {
    /// `urls` (one, or several separated by commas) with pinned `keys`,
    /// calling as `me`.
    pub fn new(
        urls: &str,
        keys: Vec<[u8; 32]>,
        me: StaticKeypair,
    ) -> Result<ControlPlane, ControlPlaneError> {
        let urls: Vec<String> = urls
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .collect();
        if let Some(bad) = urls
            .iter()
            .find(|u| !u.starts_with("http://") && !u.starts_with("https://"))
        {
            return Err(ControlPlaneError::BadUrl(bad.clone()));
        }
        if keys.is_empty() {
            return Err(ControlPlaneError::NoPinnedKey);
        }
        Ok(ControlPlane {
            urls,
            keys,
            me,
            replicas: Failover::default(),
        })
    }

    /// One call, at the URL that answered last, then at each other one
    /// while they are unreachable.
    pub fn call(&self, request: AdminRequest) -> Result<AdminResponse, ControlPlaneError> {
        let call = AdminCall {
            request_id: RequestId(u64::from_le_bytes(random())),
            request,
        };
        let bytes = support_protocol::encode(&call).map_err(ControlPlaneError::Encode)?;
        self.replicas.call(
            self.urls.len(),
            ControlPlaneError::NoPinnedKey,
            |e| matches!(e, ControlPlaneError::Unreachable { .. }),
            |at| self.call_at(&self.urls[at], &call, &bytes),
        )
    }

    /// The call at `url`, to each pinned key in turn until one answers.
    fn call_at(
        &self,
        url: &str,
        call: &AdminCall,
        bytes: &[u8],
    ) -> Result<AdminResponse, ControlPlaneError> {
        let mut last = ControlPlaneError::NoPinnedKey;
        for server in &self.keys {
            let (pending, body) = ClientCall::start(Api::Admin, &self.me, server, random(), bytes)
                .map_err(ControlPlaneError::Channel)?;
            let agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(30)))
                .http_status_as_error(false)
                .build()
                .new_agent();
            let mut resp = agent
                .post(format!("{url}/v1/admin"))
                .header("content-type", "application/octet-stream")
                .send(&body[..])
                .map_err(|e| ControlPlaneError::Unreachable {
                    url: url.to_string(),
                    source: Box::new(e),
                })?;
            let status = resp.status().as_u16();
            let mut answer = Vec::new();
            resp.body_mut()
                .as_reader()
                .take(MAX_RESPONSE)
                .read_to_end(&mut answer)
                .map_err(ControlPlaneError::Read)?;
            match pending.finish(&answer) {
                Ok(plain) => {
                    let reply: AdminReply =
                        support_protocol::decode(&plain).map_err(ControlPlaneError::Undecodable)?;
                    if reply.request_id != call.request_id {
                        return Err(ControlPlaneError::AnotherCall);
                    }
                    return reply.result.map_err(ControlPlaneError::Refused);
                }
                Err(error) => {
                    last = ControlPlaneError::Unauthenticated {
                        status,
                        error,
                        text: String::from_utf8_lossy(&answer)
                            .chars()
                            .filter(|c| !c.is_control())
                            .take(160)
                            .collect(),
                    };
                }
            }
        }
        Err(last)
    }

    /// A tunnel's detail.
    pub fn show(&self, id: TunnelId) -> Result<TunnelDetail, ControlPlaneError> {
        match self.call(AdminRequest::Show(id))? {
            AdminResponse::Show(d) => Ok(*d),
            other => Err(ControlPlaneError::unexpected(other)),
        }
    }

    /// Every tunnel (all pages).
    pub fn list_all(
        &self,
        state: Option<support_protocol::messages::TunnelStateKind>,
    ) -> Result<Vec<TunnelSummary>, ControlPlaneError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            match self.call(AdminRequest::List(ListQuery {
                state,
                after,
                limit: 100,
            }))? {
                AdminResponse::List { tunnels, next } => {
                    out.extend(tunnels.iter().cloned());
                    match next {
                        Some(n) if Some(n) != after => after = Some(n),
                        _ => return Ok(out),
                    }
                }
                other => return Err(ControlPlaneError::unexpected(other)),
            }
        }
    }

    /// Stops a tunnel.
    pub fn stop(&self, id: TunnelId, note: &str) -> Result<(), ControlPlaneError> {
        let note =
            support_protocol::bounded::BoundedString::new(note).map_err(ControlPlaneError::Note)?;
        match self.call(AdminRequest::Stop(StopRequest {
            tunnel_id: id,
            note,
        }))? {
            AdminResponse::Stopped => Ok(()),
            other => Err(ControlPlaneError::unexpected(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use support_protocol::control_channel::ServerKeys;
    use support_testkit::http::{read_request, respond};

    use super::*;

    fn me() -> StaticKeypair {
        StaticKeypair::from_secret(random())
    }

    /// A control plane on a local port that answers every call with `result`.
    fn answering(result: Result<AdminResponse, ApiError>) -> (String, [u8; 32]) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let key = StaticKeypair::from_secret(random());
        let public = key.public;
        let keys = ServerKeys::new(vec![key]);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(request) = read_request(&mut stream) else {
                    continue;
                };
                let Ok(incoming) = keys.accept(Api::Admin, &request.body, random()) else {
                    respond(&mut stream, 401, b"no");
                    continue;
                };
                let Ok(call) = support_protocol::decode::<AdminCall>(&incoming.call) else {
                    continue;
                };
                let reply = AdminReply {
                    request_id: call.request_id,
                    result: result.clone(),
                };
                let bytes = support_protocol::encode(&reply).expect("encodes");
                let answer = incoming.respond(&bytes).expect("responds");
                respond(&mut stream, 200, &answer);
            }
        });
        (url, public)
    }

    #[test]
    fn settings_that_cannot_work_are_refused_before_any_call() {
        assert!(matches!(
            ControlPlane::new("ftp://cp", vec![[1; 32]], me()),
            Err(ControlPlaneError::BadUrl(u)) if u == "ftp://cp"
        ));
        assert!(matches!(
            ControlPlane::new("http://cp", vec![], me()),
            Err(ControlPlaneError::NoPinnedKey)
        ));
    }

    #[test]
    fn an_unreachable_control_plane_is_named() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let cp = ControlPlane::new(&url, vec![[1; 32]], me()).expect("client");
        match cp.show(TunnelId(1)) {
            Err(ControlPlaneError::Unreachable { url: u, .. }) => assert_eq!(u, url),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_replica_that_does_not_answer_passes_the_call_to_the_next() {
        // A "replica" that takes each connection and hangs up, counting them.
        let dead = TcpListener::bind("127.0.0.1:0").expect("binds");
        let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
        let hangups = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = hangups.clone();
        std::thread::spawn(move || {
            for stream in dead.incoming() {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        let (live, key) = answering(Ok(AdminResponse::Stopped));
        let cp =
            ControlPlane::new(&format!("{dead_url}, {live}/"), vec![key], me()).expect("client");
        cp.stop(TunnelId(1), "test")
            .expect("the second one answers");
        assert_eq!(hangups.load(Ordering::SeqCst), 1);
        // The next call starts at the one that answered.
        cp.stop(TunnelId(2), "test").expect("answered");
        assert_eq!(hangups.load(Ordering::SeqCst), 1);
        // A refusal is an answer: it is not tried elsewhere.
        let (refusing, key2) = answering(Err(ApiError::new(ErrorCode::NotFound, "no")));
        let (other, _) = answering(Ok(AdminResponse::Stopped));
        let cp =
            ControlPlane::new(&format!("{refusing},{other}"), vec![key2], me()).expect("client");
        assert!(cp
            .stop(TunnelId(1), "test")
            .expect_err("refused")
            .is_refusal(ErrorCode::NotFound));
        // None answers: the last one's failure is named.
        let cp =
            ControlPlane::new(&format!("{dead_url},{dead_url}"), vec![key], me()).expect("client");
        match cp.stop(TunnelId(1), "test") {
            Err(ControlPlaneError::Unreachable { url, .. }) => assert_eq!(url, dead_url),
            other => panic!("{other:?}"),
        }
        assert_eq!(hangups.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_refusal_keeps_its_code_and_says_it_once() {
        let (url, key) = answering(Err(ApiError::new(ErrorCode::NotFound, "no such tunnel")));
        let cp = ControlPlane::new(&url, vec![key], me()).expect("client");
        let e = cp.show(TunnelId(1)).expect_err("refused");
        assert!(e.is_refusal(ErrorCode::NotFound), "{e:?}");
        assert!(!e.is_refusal(ErrorCode::Forbidden));
        assert_eq!(
            e.to_string(),
            "the control plane refused: no such tunnel (error 20 NotFound)"
        );
    }

    #[test]
    fn an_answer_of_another_kind_is_unexpected() {
        let (url, key) = answering(Ok(AdminResponse::Stopped));
        let cp = ControlPlane::new(&url, vec![key], me()).expect("client");
        assert!(matches!(
            cp.show(TunnelId(1)),
            Err(ControlPlaneError::Unexpected(r)) if matches!(*r, AdminResponse::Stopped)
        ));
        cp.stop(TunnelId(1), "test").expect("stopped");
    }

    #[test]
    fn a_control_plane_without_the_pinned_key_is_not_believed() {
        let (url, _) = answering(Ok(AdminResponse::Stopped));
        let cp = ControlPlane::new(&url, vec![[9; 32]], me()).expect("client");
        match cp.stop(TunnelId(1), "test") {
            Err(ControlPlaneError::Unauthenticated { status: 401, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
