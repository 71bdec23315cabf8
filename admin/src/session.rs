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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support_tunnel::{Engine, EngineHandle};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::records::{AdminTunnel, Records};

/// How long a session stays without clients, unless told otherwise.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(300);
/// How long starting a session may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where tunnel `id`'s session listens.
pub fn socket_path(records: &Records, id: &str) -> PathBuf {
    records.files(id).join("session.sock")
}

/// Whether a session of tunnel `id` is listening.
pub fn running(records: &Records, id: &str) -> bool {
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
    pub fn ensure(&self, records: &Records, rec: &AdminTunnel) -> Result<bool, String> {
        if running(records, &rec.id) {
            return Ok(false);
        }
        let dir = records.files(&rec.id);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let log = dir.join("session.log");
        let err = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = Command::new(&self.exe);
        if let Some(h) = &self.home {
            cmd.arg("--home").arg(h);
        }
        let (mut child, line) = crate::hub::spawn_and_read_line(
            cmd.args([
                "session",
                &rec.id,
                "--idle",
                &self.idle.as_secs().to_string(),
            ])
            .env("SUPPORT_HUB_OWNER", &self.owner)
            .stderr(err),
            START_TIMEOUT,
        )
        .map_err(|e| format!("cannot start the tunnel's session: {e}"))?;
        match line {
            Some(line) if line.trim() == "ready" => Ok(true),
            other => {
                let _ = child.kill();
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                Err(format!(
                    "the tunnel's session did not start{}: {}",
                    if other.is_none() { " in time" } else { "" },
                    said.trim()
                ))
            }
        }
    }

    /// A stream to device `port` through `rec`'s session (started if needed).
    pub async fn open(
        &self,
        records: &Records,
        rec: &AdminTunnel,
        port: u16,
    ) -> Result<UnixStream, String> {
        let path = socket_path(records, &rec.id);
        let stream = match UnixStream::connect(&path).await {
            Ok(s) => s,
            Err(_) => {
                self.ensure(records, rec)?;
                UnixStream::connect(&path)
                    .await
                    .map_err(|e| format!("the tunnel's session: {e}"))?
            }
        };
        attach(stream, port).await
    }
}

/// Asks the session for a connection to `port`.
async fn attach(mut stream: UnixStream, port: u16) -> Result<UnixStream, String> {
    stream
        .write_all(format!("{port}\n").as_bytes())
        .await
        .map_err(|e| format!("the tunnel's session: {e}"))?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while answer.len() < 512 && byte[0] != b'\n' {
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut byte)).await {
            Ok(Ok(1)) => answer.push(byte[0]),
            Ok(Ok(_)) => return Err("the tunnel's session closed the connection".into()),
            Ok(Err(e)) => return Err(format!("the tunnel's session: {e}")),
            Err(_) => return Err("the tunnel's session did not answer in 30 s".into()),
        }
    }
    let answer = String::from_utf8_lossy(&answer).trim().to_string();
    match answer.strip_prefix("error ") {
        None if answer == "ok" => Ok(stream),
        Some(e) => Err(e.to_string()),
        None => Err(format!("the tunnel's session said {answer:?}")),
    }
}

/// Ends `id`'s session, if one runs (after stop).
pub fn quit(records: &Records, id: &str) {
    if let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket_path(records, id)) {
        let _ = std::io::Write::write_all(&mut s, b"quit\n");
    }
}

/// The session process: the one peer of `rec`, until idle, expiry, quit or
/// the record's end. Prints `ready` on stdout once it listens.
pub fn serve(records: &Records, rec: &AdminTunnel, idle: Duration) -> Result<(), String> {
    let dir = records.files(&rec.id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    if running(records, &rec.id) {
        return Err(format!("a session for tunnel {} already runs", rec.id));
    }
    let path = socket_path(records, &rec.id);
    let _ = std::fs::remove_file(&path);
    let contents = rec.contents()?;
    let expires = rec.approved_at + u64::from(contents.duration_secs);
    let (peer, _thread) = Engine::spawn(rec.engine_config()?, None)
        .map_err(|e| format!("cannot start the WireGuard peer: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let record = records.path(&rec.id);
    let result = rt.block_on(run(&path, &peer, &contents.ports, idle, expires, &record));
    peer.shutdown();
    let _ = std::fs::remove_file(&path);
    rt.shutdown_background();
    result
}

async fn run(
    path: &Path,
    peer: &EngineHandle,
    ports: &[u16],
    idle: Duration,
    expires: u64,
    record: &Path,
) -> Result<(), String> {
    let listener = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
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
