//! The daemon's local socket: one JSON request per connection, one JSON
//! answer. The socket file is 0660 root:support (the kernel refuses anyone
//! else), and the daemon also checks the caller's credentials.

use std::io::{BufRead, BufReader, Read, Write};

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::owner_log::{ListRow, LogLine};
use crate::runtime::TunnelStatus;

/// The longest request line read from the socket.
pub const MAX_REQUEST: u64 = 4096;

/// A request to the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

/// The daemon's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SocketResponse {
    /// Whether it worked.
    pub ok: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The new tunnel's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The one-time code (only to the caller of `request`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// When a new request goes stale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_after_secs: Option<u32>,
    /// Tunnels' status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnels: Option<Vec<TunnelStatus>>,
    /// The owner's record of the tunnel `id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<Vec<LogLine>>,
    /// Every tunnel on record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<Vec<ListRow>>,
    /// What a stop or repair did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done: Option<Vec<String>>,
}

impl SocketResponse {
    /// A failure answer.
    pub fn error(e: impl Into<String>) -> SocketResponse {
        SocketResponse {
            ok: false,
            error: Some(e.into()),
            ..SocketResponse::default()
        }
    }
}

/// Sends `req` to the daemon at `path`. `Ok(None)` when no daemon listens.
pub fn call(path: &Path, req: &SocketRequest) -> Result<Option<SocketResponse>, String> {
    let mut stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(format!(
                "permission denied on {}: only root and the support group may use the agent",
                path.display()
            ))
        }
        Err(e) => {
            return Err(format!(
                "cannot reach the daemon at {}: {e}",
                path.display()
            ))
        }
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| format!("talking to the daemon: {e}"))?;
    let mut answer = String::new();
    BufReader::new(stream.take(1 << 20))
        .read_line(&mut answer)
        .map_err(|e| format!("reading the daemon's answer: {e}"))?;
    serde_json::from_str(&answer)
        .map(Some)
        .map_err(|e| format!("the daemon's answer is not understood: {e}"))
}

/// Reads one request line (bounded in size, and in time overall: a client
/// trickling a byte at a time cannot hold a slot) from a client.
pub fn read_request(mut stream: &UnixStream) -> Result<SocketRequest, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 512];
    while !bytes.contains(&b'\n') && (bytes.len() as u64) < MAX_REQUEST {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err("the request took too long to arrive".into());
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("the request took too long to arrive".into())
            }
            Err(e) => return Err(format!("reading the request: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&bytes).to_string();
    if !line.ends_with('\n') {
        return Err(format!(
            "the request must be one JSON line of at most {MAX_REQUEST} bytes"
        ));
    }
    serde_json::from_str(&line).map_err(|e| format!("the request is not understood: {e}"))
}

/// Writes the answer line.
pub fn write_response(mut stream: &UnixStream, r: &SocketResponse) {
    if let Ok(mut line) = serde_json::to_vec(r) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
}
