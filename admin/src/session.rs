//! One WireGuard peer per tunnel, shared by every tool (the ssh
//! ControlMaster pattern). Two peers with the same key take turns at the
//! relay, so `connect`, `exec`, `forward` and `proxy` never start their own:
//! the first one that needs the tunnel starts a background session process
//! (`support-admin up ID` does it on purpose), and all of them attach to it
//! over a Unix socket in the tunnel's 0700 record directory, mode 0600,
//! whose callers must also be this user (`SO_PEERCRED`).
//!
//! On the socket a client writes the device port as one line (`22\n`) and
//! reads `ok\n` (then the stream is that connection) or `error TEXT\n`;
//! `quit\n` ends the session. The session ends by itself once no client
//! has been attached for its idle time, at the tunnel's expiry, or when
//! the tunnel's record is wiped (stop, gc).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support_protocol::TunnelId;
use support_tunnel::{Engine, EngineHandle};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::error::{AdminError, FileError};
use crate::records::{AdminTunnel, Records};

/// Why a tunnel's session could not be started, attached to, or run.
#[derive(Debug)]
pub enum SessionError {
    /// The session process could not be started.
    Spawn(std::io::Error),
    /// It started but did not say `ready` (in time, or at all), and what
    /// its log says.
    DidNotStart {
        /// Whether it said something else (rather than nothing in time).
        answered: bool,
        /// Its log.
        said: String,
    },
    /// Talking to the session's socket failed.
    Socket(std::io::Error),
    /// The session closed the connection before answering.
    Closed,
    /// The session did not answer in time.
    Silent,
    /// The session's own error (the port is not approved, the tunnel does not open).
    Said(String),
    /// The session answered something else than `ok` or `error`.
    Garbled(String),
    /// `session` was started for a tunnel whose session runs.
    AlreadyRuns(TunnelId),
    /// The WireGuard peer did not start.
    Peer(std::io::Error),
    /// The async runtime did not start.
    Runtime(std::io::Error),
    /// A file or the socket's path.
    File(FileError),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn(e) => write!(f, "cannot start the tunnel's session: {e}"),
            Self::DidNotStart { answered, said } => write!(
                f,
                "the tunnel's session did not start{}: {said}",
                if *answered { "" } else { " in time" }
            ),
            Self::Socket(e) => write!(f, "the tunnel's session: {e}"),
            Self::Closed => f.write_str("the tunnel's session closed the connection"),
            Self::Silent => f.write_str("the tunnel's session did not answer in 30 s"),
            Self::Said(e) => f.write_str(e),
            Self::Garbled(answer) => write!(f, "the tunnel's session said {answer:?}"),
            Self::AlreadyRuns(id) => write!(f, "a session for tunnel {id} already runs"),
            Self::Peer(e) => write!(f, "cannot start the WireGuard peer: {e}"),
            Self::Runtime(e) => e.fmt(f),
            Self::File(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SessionError {}

impl From<FileError> for SessionError {
    fn from(e: FileError) -> Self {
        SessionError::File(e)
    }
}

/// How long a session stays without clients, unless told otherwise.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(300);
/// How long starting a session may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where tunnel `id`'s session listens.
pub fn socket_path(records: &Records, id: TunnelId) -> PathBuf {
    records.files(id).join("session.sock")
}

/// Whether a session of tunnel `id` is listening.
pub fn running(records: &Records, id: TunnelId) -> bool {
    std::os::unix::net::UnixStream::connect(socket_path(records, id)).is_ok()
}

/// How to start a session process: this program, with `--home` if the
/// command line had one.
pub struct Launcher {
    /// This program.
    pub exe: PathBuf,
    /// `--home`.
    pub home: Option<PathBuf>,
    /// Idle time of a session started now.
    pub idle: Duration,
    /// The tag on every process this engineer's data directory started
    /// (its relays too): what tells them from another engineer's.
    pub owner: String,
}

impl Launcher {
    /// Starts the session of `rec` unless one runs; returns once it listens.
    pub fn ensure(&self, records: &Records, rec: &AdminTunnel) -> Result<bool, SessionError> {
        if running(records, rec.id) {
            return Ok(false);
        }
        let dir = records.files(rec.id);
        std::fs::create_dir_all(&dir).map_err(FileError::at(&dir))?;
        let log = dir.join("session.log");
        let err = std::fs::File::create(&log).map_err(FileError::at(&log))?;
        let mut cmd = Command::new(&self.exe);
        if let Some(h) = &self.home {
            cmd.arg("--home").arg(h);
        }
        let (mut child, line) = crate::hub::spawn_and_read_line(
            cmd.args([
                "session",
                &rec.id.to_string(),
                "--idle",
                &self.idle.as_secs().to_string(),
            ])
            .env("SUPPORT_HUB_OWNER", &self.owner)
            .stderr(err),
            START_TIMEOUT,
        )
        .map_err(SessionError::Spawn)?;
        match line {
            Some(line) if line.trim() == "ready" => Ok(true),
            other => {
                let _ = child.kill();
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                Err(SessionError::DidNotStart {
                    answered: other.is_some(),
                    said: said.trim().to_string(),
                })
            }
        }
    }

    /// A stream to device `port` through `rec`'s session (started if needed).
    pub async fn open(
        &self,
        records: &Records,
        rec: &AdminTunnel,
        port: u16,
    ) -> Result<UnixStream, SessionError> {
        let path = socket_path(records, rec.id);
        let stream = match UnixStream::connect(&path).await {
            Ok(s) => s,
            Err(_) => {
                self.ensure(records, rec)?;
                UnixStream::connect(&path)
                    .await
                    .map_err(SessionError::Socket)?
            }
        };
        attach(stream, port).await
    }
}

/// Asks the session for a connection to `port`.
async fn attach(mut stream: UnixStream, port: u16) -> Result<UnixStream, SessionError> {
    stream
        .write_all(format!("{port}\n").as_bytes())
        .await
        .map_err(SessionError::Socket)?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while answer.len() < 512 && byte[0] != b'\n' {
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut byte)).await {
            Ok(Ok(1)) => answer.push(byte[0]),
            Ok(Ok(_)) => return Err(SessionError::Closed),
            Ok(Err(e)) => return Err(SessionError::Socket(e)),
            Err(_) => return Err(SessionError::Silent),
        }
    }
    let answer = String::from_utf8_lossy(&answer).trim().to_string();
    match answer.strip_prefix("error ") {
        None if answer == "ok" => Ok(stream),
        Some(e) => Err(SessionError::Said(e.to_string())),
        None => Err(SessionError::Garbled(answer)),
    }
}

/// Ends `id`'s session, if one runs (after stop).
pub fn quit(records: &Records, id: TunnelId) {
    if let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket_path(records, id)) {
        let _ = std::io::Write::write_all(&mut s, b"quit\n");
    }
}

/// The session process: the one peer of `rec`, until idle, expiry, quit or
/// the record's end. Prints `ready` on stdout once it listens.
pub fn serve(records: &Records, rec: &AdminTunnel, idle: Duration) -> Result<(), AdminError> {
    let dir = records.files(rec.id);
    std::fs::create_dir_all(&dir).map_err(FileError::at(&dir))?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(FileError::at(&dir))?;
    if running(records, rec.id) {
        return Err(SessionError::AlreadyRuns(rec.id).into());
    }
    let path = socket_path(records, rec.id);
    let _ = std::fs::remove_file(&path);
    let contents = rec.contents()?;
    let expires = rec.approved_at + u64::from(contents.duration_secs);
    let (peer, _thread) = Engine::spawn(rec.engine_config()?, None).map_err(SessionError::Peer)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SessionError::Runtime)?;
    let record = records.path(rec.id);
    let result = rt.block_on(run(&path, &peer, &contents.ports, idle, expires, &record));
    peer.shutdown();
    let _ = std::fs::remove_file(&path);
    rt.shutdown_background();
    Ok(result?)
}

async fn run(
    path: &Path,
    peer: &EngineHandle,
    ports: &[u16],
    idle: Duration,
    expires: u64,
    record: &Path,
) -> Result<(), SessionError> {
    let listener = UnixListener::bind(path).map_err(FileError::at(path))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(FileError::at(path))?;
    println!("ready");
    let me = rustix::process::getuid().as_raw();
    let attached = Arc::new(AtomicUsize::new(0));
    let (quit_tx, mut quit_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut last_active = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                if stream.peer_cred().map(|c| c.uid()).ok() != Some(me) {
                    continue;
                }
                let (peer, ports, attached, quit) =
                    (peer.clone(), ports.to_vec(), attached.clone(), quit_tx.clone());
                attached.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    client(stream, &peer, &ports, quit).await;
                    attached.fetch_sub(1, Ordering::SeqCst);
                });
            }
            _ = quit_rx.recv() => return Ok(()),
            _ = tick.tick() => {
                if attached.load(Ordering::SeqCst) > 0 {
                    last_active = Instant::now();
                } else if last_active.elapsed() >= idle {
                    return Ok(());
                }
                if crate::ca::now() >= expires || !record.exists() {
                    return Ok(());
                }
            }
        }
    }
}

/// Serves one attached client.
async fn client(
    stream: UnixStream,
    peer: &EngineHandle,
    ports: &[u16],
    quit: tokio::sync::mpsc::Sender<()>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        (&mut reader).take(64).read_line(&mut line),
    )
    .await;
    let mut stream = reader.into_inner();
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return;
    }
    let line = line.trim();
    if line == "quit" {
        let _ = quit.send(()).await;
        return;
    }
    let port = match line.parse::<u16>() {
        Ok(p) if ports.contains(&p) => p,
        Ok(p) => {
            let _ = stream
                .write_all(
                    format!("error port {p} is not among the approved ports {ports:?}\n")
                        .as_bytes(),
                )
                .await;
            return;
        }
        Err(_) => {
            let _ = stream.write_all(b"error not a port number\n").await;
            return;
        }
    };
    match peer.open(port).await {
        Ok(mut tcp) => {
            if stream.write_all(b"ok\n").await.is_ok() {
                let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
            }
        }
        Err(e) => {
            let _ = stream
                .write_all(format!("error cannot open the tunnel: {e}\n").as_bytes())
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `attach` makes of the session's answer `said` (after which the
    /// session keeps the stream open, or closes it).
    async fn attach_to(said: &'static [u8], close: bool) -> Result<UnixStream, SessionError> {
        let (ours, mut theirs) = UnixStream::pair().expect("pair");
        tokio::spawn(async move {
            let mut line = [0u8; 3];
            let _ = theirs.read_exact(&mut line).await;
            assert_eq!(&line, b"22\n");
            let _ = theirs.write_all(said).await;
            if !close {
                // Open until the test is done with it.
                let _ = theirs.read(&mut line).await;
            }
        });
        attach(ours, 22).await
    }

    #[tokio::test]
    async fn the_sessions_answers_become_errors() {
        assert!(attach_to(b"ok\n", false).await.is_ok());
        match attach_to(
            b"error port 22 is not among the approved ports [80]\n",
            false,
        )
        .await
        {
            Err(SessionError::Said(e)) => {
                assert_eq!(e, "port 22 is not among the approved ports [80]")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            attach_to(b"what\n", false).await,
            Err(SessionError::Garbled(a)) if a == "what"
        ));
        assert!(matches!(
            attach_to(b"o", true).await,
            Err(SessionError::Closed)
        ));
    }
}
