//! The daemon's local socket, protocol version 1 (agent/SOCKET.md is its
//! contract). The socket file is 0660 root:support (the kernel refuses
//! anyone else), and the daemon also checks the caller's credentials.
//!
//! Two framings share the socket, told apart by the first byte: a JSON
//! line (`{"op":"status"}\n`, one answer line back; `watch` streams lines),
//! and a minimal HTTP/1.1 request (`curl --unix-socket`), whose body or
//! path carries the same request and whose body is the same answer.

use std::io::{BufRead, BufReader, Read, Write};

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::owner_log::{ListRow, LogLine};
use crate::runtime::TunnelStatus;

/// The socket protocol's version: answers carry it as `v`; a request may
/// name the version it speaks and is refused if it is newer.
pub const VERSION: u32 = 1;
/// The longest request read from the socket (a JSON line, or HTTP head and body).
pub const MAX_REQUEST: usize = 4096;
/// How long a client has to send its whole request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// A request to the daemon.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum SocketRequest {
    /// Register a support request and return its code.
    Request {
        /// Seconds (the config's default when absent).
        duration_secs: Option<u32>,
        /// Ports (the config's default when absent).
        ports: Option<Vec<u16>>,
        /// A note for support.
        note: Option<String>,
    },
    /// Every tunnel's status.
    Status {},
    /// The owner's record of one tunnel (the newest when absent).
    Log {
        /// The tunnel (or a unique prefix of its id).
        id: Option<String>,
    },
    /// Every tunnel on record, newest last.
    List {},
    /// Stop one tunnel, or all.
    Stop {
        /// The tunnel (all when absent).
        id: Option<String>,
    },
    /// Remove what ended tunnels left behind.
    Repair {},
    /// One tunnel's status now and at every change, until it has ended.
    Watch {
        /// The tunnel (or a unique prefix; the newest live one when absent).
        id: Option<String>,
    },
    /// The session recorder asks to record a session (support users only;
    /// the tunnel is the caller's own, known by its uid). After the answer,
    /// the recorder streams frames (SOCKET.md, "Recording").
    Record {
        /// shell, exec, sftp or scp.
        kind: crate::recording::Kind,
        /// The command sshd was asked to run.
        command: Option<String>,
        /// The terminal's columns.
        width: Option<u16>,
        /// Its rows.
        height: Option<u16>,
        /// `TERM`.
        term: Option<String>,
    },
    /// The recordings of one tunnel (the newest when absent).
    Recordings {
        /// The tunnel (or a unique prefix of its id).
        id: Option<String>,
    },
    /// One recording, streamed as asciicast v2 lines.
    Replay {
        /// The tunnel (or a unique prefix; the newest when absent).
        id: Option<String>,
        /// The session number.
        session: u32,
    },
    /// A tunnel's live sessions as they are recorded (asciicast v2 lines,
    /// a header line at each session's start), until the tunnel ends.
    WatchSession {
        /// The tunnel (or a unique prefix; the newest live one when absent).
        id: Option<String>,
    },
}

/// What kind of failure an answer reports, for programs (SOCKET.md lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed, or asks for what the config does not allow.
    BadRequest,
    /// The request names a protocol version this agent does not speak.
    UnsupportedVersion,
    /// The caller may not do this.
    Forbidden,
    /// Too many clients of the caller's kind are being served; retry.
    Busy,
    /// No such tunnel.
    NotFound,
    /// The id prefix matches more than one tunnel.
    Ambiguous,
    /// The control plane is unreachable or refused (the request was not made).
    ControlPlane,
    /// Anything else (the text says what).
    Failed,
}

/// A failure with its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Its kind.
    pub code: ErrorCode,
    /// What happened, for people.
    pub text: String,
}

impl Failure {
    /// A failure of kind `code`.
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Failure {
        Failure {
            code,
            text: text.into(),
        }
    }

    /// A failure of no more specific kind (`failed`).
    pub fn failed(text: impl Into<String>) -> Failure {
        Failure::new(ErrorCode::Failed, text)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Failure {}

/// Why a client of the socket (the CLI) got no answer from the daemon.
#[derive(Debug)]
pub enum ClientError {
    /// The socket refuses this user.
    PermissionDenied(PathBuf),
    /// The socket is there, but connecting to it failed.
    Unreachable {
        /// The socket.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Writing the request failed.
    Send(std::io::Error),
    /// Reading the answer failed.
    Receive(std::io::Error),
    /// The answer is not one this client understands.
    Garbled(serde_json::Error),
    /// The daemon closed the connection without an answer.
    NoAnswer,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PermissionDenied(path) => write!(
                f,
                "permission denied on {}: only root and the support group may use the agent",
                path.display()
            ),
            Self::Unreachable { path, error } => {
                write!(f, "cannot reach the daemon at {}: {error}", path.display())
            }
            Self::Send(e) => write!(f, "cannot send the request to the daemon: {e}"),
            Self::Receive(e) => write!(f, "cannot read the daemon's answer: {e}"),
            Self::Garbled(e) => write!(f, "the daemon's answer is not understood: {e}"),
            Self::NoAnswer => f.write_str("the daemon closed the connection without an answer"),
        }
    }
}

impl std::error::Error for ClientError {}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SocketResponse {
    /// The protocol version ([`VERSION`]).
    pub v: u32,
    /// Whether it worked.
    pub ok: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why not, for programs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<ErrorCode>,
    /// The new (or watched, or logged) tunnel's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The one-time code (only to the caller of `request`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// When a new request goes stale, in seconds from now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_after_secs: Option<u32>,
    /// When a new request goes stale (wall clock, seconds since 1970).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_at: Option<u64>,
    /// Tunnels' status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnels: Option<Vec<TunnelStatus>>,
    /// One tunnel's status (each line of `watch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelStatus>,
    /// The owner's record of the tunnel `id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<Vec<LogLine>>,
    /// Every tunnel on record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<Vec<ListRow>>,
    /// What a stop or repair did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done: Option<Vec<String>>,
    /// The session number a recording got (`record`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<u32>,
    /// Whether the recorder records input too (`record`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_input: Option<bool>,
    /// The SFTP server the recorder runs (`record`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sftp_server: Option<String>,
    /// A tunnel's recordings (`recordings`, `log`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recordings: Option<Vec<crate::recording::Listed>>,
}

impl Default for SocketResponse {
    fn default() -> SocketResponse {
        SocketResponse {
            v: VERSION,
            ok: true,
            error: None,
            error_code: None,
            id: None,
            code: None,
            stale_after_secs: None,
            stale_at: None,
            tunnels: None,
            tunnel: None,
            log: None,
            list: None,
            done: None,
            session: None,
            record_input: None,
            sftp_server: None,
            recordings: None,
        }
    }
}

impl SocketResponse {
    /// A failure answer.
    pub fn error(code: ErrorCode, e: impl Into<String>) -> SocketResponse {
        SocketResponse {
            ok: false,
            error: Some(e.into()),
            error_code: Some(code),
            ..SocketResponse::default()
        }
    }

    /// The answer for `f`.
    pub fn failure(f: Failure) -> SocketResponse {
        SocketResponse::error(f.code, f.text)
    }
}

/// Connects to the daemon at `path`. `Ok(None)` when no daemon listens.
pub fn connect(path: &Path) -> Result<Option<UnixStream>, ClientError> {
    match UnixStream::connect(path) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(ClientError::PermissionDenied(path.to_path_buf()))
        }
        Err(error) => Err(ClientError::Unreachable {
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// Sends `req` as one JSON line on `stream`.
pub fn send(mut stream: &UnixStream, req: &SocketRequest) -> Result<(), ClientError> {
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Send(e.into()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(ClientError::Send)
}

/// Reads one answer line; `Ok(None)` at the end of the stream.
pub fn receive(reader: &mut impl BufRead) -> Result<Option<SocketResponse>, ClientError> {
    let mut answer = String::new();
    let n = reader
        .take(1 << 20)
        .read_line(&mut answer)
        .map_err(ClientError::Receive)?;
    if n == 0 {
        return Ok(None);
    }
    serde_json::from_str(&answer)
        .map(Some)
        .map_err(ClientError::Garbled)
}

/// Sends `req` to the daemon at `path` and reads its answer. `Ok(None)`
/// when no daemon listens.
pub fn call(path: &Path, req: &SocketRequest) -> Result<Option<SocketResponse>, ClientError> {
    let Some(stream) = connect(path)? else {
        return Ok(None);
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    send(&stream, req)?;
    receive(&mut BufReader::new(stream))?
        .map(Some)
        .ok_or(ClientError::NoAnswer)
}

/// How the client framed its request, and so how it gets its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// JSON lines.
    Line,
    /// HTTP/1.1; the answer is a response with the JSON as its body.
    Http,
}

/// Reads one request (bounded in size, and in time overall: a client
/// trickling a byte at a time cannot hold a slot) from a client. On
/// failure the framing is still known, so the error can be answered in kind.
pub fn read_request(mut stream: &UnixStream) -> (Framing, Result<SocketRequest, Failure>) {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let framing = framing_of(&bytes);
        match complete(&bytes, framing) {
            Ok(true) => return (framing, parse(&bytes, framing)),
            Ok(false) => {}
            Err(e) => return (framing, Err(e)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (framing, Err(too_slow()));
        }
        let _ = stream.set_read_timeout(Some(left));
        let room = (MAX_REQUEST - bytes.len().min(MAX_REQUEST)).clamp(1, chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) => {
                let e = match framing {
                    Framing::Line => {
                        format!("the request must be one JSON line of at most {MAX_REQUEST} bytes")
                    }
                    Framing::Http => "the HTTP request ended early".into(),
                };
                return (framing, Err(Failure::new(ErrorCode::BadRequest, e)));
            }
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (framing, Err(too_slow()))
            }
            Err(e) => {
                return (
                    framing,
                    Err(Failure::failed(format!("cannot read the request: {e}"))),
                )
            }
        }
    }
}

fn too_slow() -> Failure {
    Failure::new(ErrorCode::BadRequest, "the request took too long to arrive")
}

fn framing_of(bytes: &[u8]) -> Framing {
    if bytes.first().is_some_and(u8::is_ascii_uppercase) {
        Framing::Http
    } else {
        Framing::Line
    }
}

/// Whether `bytes` hold a whole request; an error once they cannot.
fn complete(bytes: &[u8], framing: Framing) -> Result<bool, Failure> {
    let too_long = || {
        Failure::new(
            ErrorCode::BadRequest,
            format!("the request is longer than {MAX_REQUEST} bytes"),
        )
    };
    match framing {
        Framing::Line => match bytes.iter().position(|&b| b == b'\n') {
            Some(_) => Ok(true),
            None if bytes.len() >= MAX_REQUEST => Err(too_long()),
            None => Ok(false),
        },
        Framing::Http => match http_head_end(bytes) {
            Some(end) => {
                let head = String::from_utf8_lossy(&bytes[..end]);
                let length = content_length(&head)?;
                if length > MAX_REQUEST.saturating_sub(end) {
                    return Err(too_long());
                }
                Ok(bytes.len() >= end + length)
            }
            None if bytes.len() >= MAX_REQUEST => Err(too_long()),
            None => Ok(false),
        },
    }
}

fn http_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

fn content_length(head: &str) -> Result<usize, Failure> {
    for line in head.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(Failure::new(
                    ErrorCode::BadRequest,
                    "chunked bodies are not accepted; send Content-Length",
                ));
            }
            if name.eq_ignore_ascii_case("content-length") {
                return value.trim().parse().map_err(|_| {
                    Failure::new(ErrorCode::BadRequest, "the Content-Length is not a number")
                });
            }
        }
    }
    Ok(0)
}

fn parse(bytes: &[u8], framing: Framing) -> Result<SocketRequest, Failure> {
    match framing {
        Framing::Line => {
            let end = bytes
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(bytes.len());
            parse_json(&bytes[..end])
        }
        Framing::Http => {
            let end = http_head_end(bytes).unwrap_or(bytes.len());
            let head = String::from_utf8_lossy(&bytes[..end]);
            let mut words = head.lines().next().unwrap_or("").split(' ');
            let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let length = content_length(&head).unwrap_or(0);
            let body = bytes.get(end..end + length).unwrap_or_default();
            http_request(method, target, body)
        }
    }
}

/// Parses a JSON request, with its optional version.
pub fn parse_json(bytes: &[u8]) -> Result<SocketRequest, Failure> {
    let bad = |e: String| {
        Failure::new(
            ErrorCode::BadRequest,
            format!("the request is not understood: {e}"),
        )
    };
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if let Some(map) = value.as_object_mut() {
        if let Some(v) = map.remove("v") {
            match v.as_u64() {
                Some(n) if n <= u64::from(VERSION) && n > 0 => {}
                _ => {
                    return Err(Failure::new(
                        ErrorCode::UnsupportedVersion,
                        format!("this agent speaks socket protocol version {VERSION}, not {v}"),
                    ))
                }
            }
        }
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

/// The HTTP routes: `POST /v1` with a JSON request as the body, or
/// `GET /v1/status`, `/v1/list`, `/v1/log[/ID]`, `/v1/watch[/ID]`.
fn http_request(method: &str, target: &str, body: &[u8]) -> Result<SocketRequest, Failure> {
    let path = target.split('?').next().unwrap_or("");
    let mut parts = path.trim_start_matches('/').splitn(4, '/');
    let (version, op, id, more) = (parts.next(), parts.next(), parts.next(), parts.next());
    if version != Some("v1") {
        return Err(Failure::new(
            ErrorCode::NotFound,
            format!("no such path {path}; see SOCKET.md (POST /v1, GET /v1/status ...)"),
        ));
    }
    let id = id.filter(|s| !s.is_empty()).map(str::to_string);
    let not_found = || {
        Failure::new(
            ErrorCode::NotFound,
            format!("no route {method} {path}; see SOCKET.md (POST /v1, GET /v1/status ...)"),
        )
    };
    if let ("GET", Some("replay")) = (method, op) {
        let session = more.and_then(|s| s.parse().ok()).ok_or_else(not_found)?;
        return Ok(SocketRequest::Replay { id, session });
    }
    if more.is_some() {
        return Err(not_found());
    }
    match (method, op) {
        ("POST", None | Some("")) => parse_json(body),
        ("GET", Some("recordings")) => Ok(SocketRequest::Recordings { id }),
        ("GET", Some("watch-session")) => Ok(SocketRequest::WatchSession { id }),
        ("GET", Some("status")) if id.is_none() => Ok(SocketRequest::Status {}),
        ("GET", Some("list")) if id.is_none() => Ok(SocketRequest::List {}),
        ("GET", Some("log")) => Ok(SocketRequest::Log { id }),
        ("GET", Some("watch")) => Ok(SocketRequest::Watch { id }),
        _ => Err(not_found()),
    }
}

/// Writes answers in the client's framing.
pub struct Replier<'a> {
    stream: &'a UnixStream,
    framing: Framing,
    started: bool,
}

impl<'a> Replier<'a> {
    /// Answers on `stream` in `framing`.
    pub fn new(stream: &'a UnixStream, framing: Framing) -> Replier<'a> {
        Replier {
            stream,
            framing,
            started: false,
        }
    }

    /// The one answer of a request.
    pub fn answer(&mut self, r: &SocketResponse) {
        let mut body = serde_json::to_vec(r).unwrap_or_default();
        body.push(b'\n');
        let mut out = Vec::new();
        if self.framing == Framing::Http {
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    http_status(r),
                    body.len()
                )
                .as_bytes(),
            );
        }
        out.extend_from_slice(&body);
        let mut s = self.stream;
        let _ = s.write_all(&out);
    }

    /// One line of a stream of answers (`watch`); false once the client is gone.
    pub fn stream_line(&mut self, r: &SocketResponse) -> bool {
        let line = serde_json::to_string(r).unwrap_or_default();
        self.raw_line(&line)
    }

    /// One line of a stream as it is (an asciicast line); false once the
    /// client is gone.
    pub fn raw_line(&mut self, line: &str) -> bool {
        let mut s = self.stream;
        if !self.started && self.framing == Framing::Http {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n";
            if s.write_all(head.as_bytes()).is_err() {
                return false;
            }
        }
        self.started = true;
        s.write_all(line.as_bytes()).is_ok() && s.write_all(b"\n").is_ok()
    }
}

fn http_status(r: &SocketResponse) -> &'static str {
    match r.error_code {
        None => "200 OK",
        Some(ErrorCode::BadRequest) => "400 Bad Request",
        Some(ErrorCode::UnsupportedVersion) => "400 Bad Request",
        Some(ErrorCode::Forbidden) => "403 Forbidden",
        Some(ErrorCode::NotFound) => "404 Not Found",
        Some(ErrorCode::Ambiguous) => "409 Conflict",
        Some(ErrorCode::Busy) => "503 Service Unavailable",
        Some(ErrorCode::ControlPlane) => "502 Bad Gateway",
        Some(ErrorCode::Failed) => "500 Internal Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_with_and_without_a_version() {
        assert_eq!(
            parse_json(br#"{"op":"status"}"#),
            Ok(SocketRequest::Status {})
        );
        assert_eq!(
            parse_json(br#"{"v":1,"op":"stop","id":"ab"}"#),
            Ok(SocketRequest::Stop {
                id: Some("ab".into())
            })
        );
        let e = parse_json(br#"{"v":2,"op":"status"}"#).expect_err("refused");
        assert_eq!(e.code, ErrorCode::UnsupportedVersion);
        let e = parse_json(br#"{"v":"x","op":"status"}"#).expect_err("refused");
        assert_eq!(e.code, ErrorCode::UnsupportedVersion);
        let e = parse_json(br#"{"op":"status","extra":1}"#).expect_err("refused");
        assert_eq!(e.code, ErrorCode::BadRequest);
    }

    #[test]
    fn http_routes() {
        let get = |t: &str| http_request("GET", t, b"");
        assert_eq!(get("/v1/status"), Ok(SocketRequest::Status {}));
        assert_eq!(get("/v1/log"), Ok(SocketRequest::Log { id: None }));
        assert_eq!(
            get("/v1/watch/abc"),
            Ok(SocketRequest::Watch {
                id: Some("abc".into())
            })
        );
        assert_eq!(
            http_request("POST", "/v1", br#"{"op":"list"}"#),
            Ok(SocketRequest::List {})
        );
        assert_eq!(
            get("/v1/replay/abc/3"),
            Ok(SocketRequest::Replay {
                id: Some("abc".into()),
                session: 3
            })
        );
        assert_eq!(
            get("/v1/recordings/abc"),
            Ok(SocketRequest::Recordings {
                id: Some("abc".into())
            })
        );
        assert_eq!(
            get("/v1/watch-session"),
            Ok(SocketRequest::WatchSession { id: None })
        );
        for wrong in ["/v1/replay/abc", "/v1/replay/abc/x", "/v1/status/a/b"] {
            assert_eq!(get(wrong).expect_err(wrong).code, ErrorCode::NotFound);
        }
        assert_eq!(
            get("/v2/status").expect_err("refused").code,
            ErrorCode::NotFound
        );
        assert_eq!(
            get("/v1/stop").expect_err("refused").code,
            ErrorCode::NotFound
        );
        assert_eq!(
            http_request("DELETE", "/v1/status", b"")
                .expect_err("refused")
                .code,
            ErrorCode::NotFound
        );
    }

    #[test]
    fn completeness_is_bounded() {
        let too_long = || {
            Err(Failure::new(
                ErrorCode::BadRequest,
                "the request is longer than 4096 bytes",
            ))
        };
        assert_eq!(complete(b"{\"op\"", Framing::Line), Ok(false));
        assert_eq!(complete(b"{}\n", Framing::Line), Ok(true));
        assert_eq!(complete(&[b'x'; MAX_REQUEST], Framing::Line), too_long());
        let head = b"POST /v1 HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(complete(head, Framing::Http), Ok(false));
        assert_eq!(
            complete(&[&head[..], b"{...}"].concat(), Framing::Http),
            Ok(true)
        );
        let huge = b"POST /v1 HTTP/1.1\r\nContent-Length: 999999\r\n\r\n";
        assert_eq!(complete(huge, Framing::Http), too_long());
        let max = format!(
            "POST /v1 HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            usize::MAX
        );
        assert_eq!(complete(max.as_bytes(), Framing::Http), too_long());
        let chunked = b"POST /v1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            complete(chunked, Framing::Http),
            Err(Failure::new(
                ErrorCode::BadRequest,
                "chunked bodies are not accepted; send Content-Length"
            ))
        );
        let not_a_number = b"POST /v1 HTTP/1.1\r\nContent-Length: lots\r\n\r\n";
        assert_eq!(
            complete(not_a_number, Framing::Http),
            Err(Failure::new(
                ErrorCode::BadRequest,
                "the Content-Length is not a number"
            ))
        );
    }
}
