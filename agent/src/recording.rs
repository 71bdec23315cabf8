//! Session recordings, the daemon's side: what the session recorder
//! (`recorder`) streams over the local socket becomes one asciicast v2 file
//! per session under `STATE/recordings/<tunnel>/`, root's alone (the owner
//! reads them through the socket, which refuses support users).
//!
//! Each tunnel has a byte cap: the oldest finished sessions of the tunnel
//! are rotated out to make room, and once only the live session is left it
//! stops being recorded (a marker says so) while the session goes on.
//! Watchers of a live session follow its file as it grows.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::state::StateDir;
use crate::util::{format_duration, wall_now};

/// The most output an `exec` session records (the recorder enforces it).
pub const EXEC_OUTPUT_CAP: u64 = 256 << 10;
/// The largest frame the recorder may send. Small: the daemon turns each
/// into JSON in memory, and its whole budget is 4 MB.
pub const MAX_FRAME: usize = 16 << 10;
/// Transfers kept in one session's summary; more are counted only.
const MAX_TRANSFERS: usize = 200;
/// All recordings on the device stay within this many tunnel caps; the
/// oldest tunnels' go first.
pub const DEVICE_CAPS: u64 = 4;
/// Room left past the cap for the marker that says recording stopped.
const MARKER_ROOM: u64 = 512;

/// Frame tags, recorder to daemon: `[tag][u32 length][payload]`.
pub mod tag {
    /// What the device showed.
    pub const OUTPUT: u8 = b'o';
    /// What the engineer typed (when `record_input`).
    pub const INPUT: u8 = b'i';
    /// A window change: columns and rows, two big-endian u16.
    pub const RESIZE: u8 = b'r';
    /// A file transfer or file operation: a JSON [`super::Transfer`].
    pub const TRANSFER: u8 = b't';
    /// A note for the recording (output not recorded past a cap, say).
    pub const MARKER: u8 = b'm';
    /// The end: a JSON [`super::End`].
    pub const END: u8 = b'e';
}

/// What a session is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An interactive login shell.
    Shell,
    /// A command (`ssh host cmd`, `support-admin exec`).
    Exec,
    /// The SFTP protocol (sftp, and scp's default).
    Sftp,
    /// scp's legacy protocol (`scp -O`).
    Scp,
}

impl Kind {
    /// The name, as recordings and the owner's log give it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Shell => "shell",
            Kind::Exec => "exec",
            Kind::Sftp => "sftp",
            Kind::Scp => "scp",
        }
    }
}

/// What a transfer did.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A file came from support to the device.
    Upload,
    /// A file went from the device to support.
    Download,
    /// A file was removed.
    Remove,
    /// A file was renamed (`path` is `old -> new`).
    Rename,
    /// A directory was made.
    Mkdir,
    /// A directory was removed.
    Rmdir,
}

/// One file transfer or file operation of an sftp or scp session.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// What was done.
    pub action: Action,
    /// The file, as the session named it.
    pub path: String,
    /// Bytes moved.
    pub bytes: u64,
    /// Whether it worked.
    pub ok: bool,
}

impl Transfer {
    /// One line for people.
    pub fn describe(&self) -> String {
        let action = serde_json::to_value(self.action)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let result = if self.ok { "ok" } else { "FAILED" };
        match self.action {
            Action::Upload | Action::Download => {
                format!("{action} {} ({} bytes) {result}", self.path, self.bytes)
            }
            _ => format!("{action} {} {result}", self.path),
        }
    }
}

/// How a session ended, as the recorder saw it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct End {
    /// The command's or shell's exit code (none when killed by a signal).
    pub exit_code: Option<i32>,
    /// Bytes from support into the session.
    pub bytes_in: u64,
    /// Bytes from the session to support.
    pub bytes_out: u64,
}

/// What the owner's log keeps of a recorded session.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Summary {
    /// The session's number in its tunnel.
    pub session: u32,
    /// What it was.
    pub kind: Kind,
    /// The command (exec, scp); empty for a shell or sftp.
    pub command: String,
    /// How long it lasted, in seconds.
    pub secs: u64,
    /// Its exit code; none if it was killed or the recorder vanished.
    pub exit_code: Option<i32>,
    /// Bytes from support.
    pub bytes_in: u64,
    /// Bytes to support.
    pub bytes_out: u64,
    /// Transfers and file operations (the first ones).
    pub transfers: Vec<Transfer>,
    /// Transfers beyond those listed.
    pub more_transfers: u64,
    /// Bytes of its recording.
    pub recorded_bytes: u64,
    /// The tunnel's cap stopped the recording before the session ended.
    pub truncated: bool,
    /// The recorder said how it ended (false: it vanished).
    pub complete: bool,
}

impl Summary {
    /// One line (and one per transfer) for `support-agent log`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "session {} ({}) ended after {}",
            self.session,
            self.kind.name(),
            format_duration(self.secs)
        );
        if !self.command.is_empty() {
            s.push_str(&format!(": {}", self.command));
        }
        match (self.complete, self.exit_code) {
            (true, Some(c)) => s.push_str(&format!(", exit {c}")),
            (true, None) => s.push_str(", killed"),
            (false, _) => s.push_str(", the recorder vanished"),
        }
        s.push_str(&format!(
            ", {} bytes in, {} out; recording {} bytes{}",
            self.bytes_in,
            self.bytes_out,
            self.recorded_bytes,
            if self.truncated {
                " (cut at the tunnel's recording_cap)"
            } else {
                ""
            }
        ));
        for t in &self.transfers {
            s.push_str(&format!("\n      {}", t.describe()));
        }
        if self.more_transfers > 0 {
            s.push_str(&format!("\n      ... and {} more", self.more_transfers));
        }
        s
    }
}

/// What a session announces when it starts (the socket's `record` request).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Start {
    /// What it is.
    pub kind: Kind,
    /// The command, as sshd passed it.
    pub command: Option<String>,
    /// The terminal's columns (shells).
    pub width: Option<u16>,
    /// The terminal's rows.
    pub height: Option<u16>,
    /// `TERM`.
    pub term: Option<String>,
}

/// One recording on disk.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The session number.
    pub session: u32,
    /// Bytes.
    pub bytes: u64,
    /// Still being recorded.
    pub live: bool,
}

/// A session being recorded, as watchers see it.
struct Live {
    tunnel: String,
    session: u32,
    written: u64,
    ended: bool,
}

#[derive(Default)]
struct Registry {
    live: Vec<Live>,
    /// Bytes of recordings per tunnel (read from disk on first use).
    used: HashMap<String, u64>,
    /// The next session number per tunnel.
    next: HashMap<String, u32>,
    generation: u64,
}

/// Every recording of this device: the live ones and the cap's accounting.
pub struct Recordings {
    root: PathBuf,
    cap: u64,
    registry: Mutex<Registry>,
    changed: Condvar,
}

/// Why a recording could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// No such tunnel or session.
    NotFound(String),
    /// The file could not be read.
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound(what) => f.write_str(what),
            Self::Io(e) => write!(f, "cannot read the recording: {e}"),
        }
    }
}

/// The directory of every tunnel's recordings.
pub fn root(state: &StateDir) -> PathBuf {
    state.root().join("recordings")
}

fn tunnel_dir(root: &Path, tunnel: &str) -> PathBuf {
    root.join(tunnel)
}

fn cast_path(root: &Path, tunnel: &str, session: u32) -> PathBuf {
    tunnel_dir(root, tunnel).join(format!("{session:04}.cast"))
}

/// The recordings of `tunnel` on disk, oldest first.
pub fn list(root: &Path, tunnel: &str) -> Vec<(u32, u64)> {
    let mut all: Vec<(u32, u64)> = fs::read_dir(tunnel_dir(root, tunnel))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let n = name.strip_suffix(".cast")?.parse().ok()?;
            Some((n, e.metadata().ok()?.len()))
        })
        .collect();
    all.sort_unstable();
    all
}

/// The recordings of `tunnel` under `state`, as the socket lists them
/// (read from disk: none is live).
pub fn listed_on_disk(state: &StateDir, tunnel: &str) -> Vec<Listed> {
    list(&root(state), tunnel)
        .into_iter()
        .map(|(session, bytes)| Listed {
            session,
            bytes,
            live: false,
        })
        .collect()
}

/// Opens one recording for reading (`replay`).
pub fn open(root: &Path, tunnel: &str, session: u32) -> Result<fs::File, ReadError> {
    fs::File::open(cast_path(root, tunnel, session)).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ReadError::NotFound(format!(
            "tunnel {tunnel} has no recording of session {session} (support-agent log lists them)"
        )),
        _ => ReadError::Io(e),
    })
}

impl Recordings {
    /// The recordings under `state`, each tunnel's kept within `cap` bytes.
    pub fn new(state: &StateDir, cap: u64) -> Recordings {
        Recordings {
            root: root(state),
            cap,
            registry: Mutex::new(Registry::default()),
            changed: Condvar::new(),
        }
    }

    /// Where they are.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The recordings of `tunnel`, oldest first, with which are live.
    pub fn listed(&self, tunnel: &str) -> Vec<Listed> {
        let reg = self.lock();
        list(&self.root, tunnel)
            .into_iter()
            .map(|(session, bytes)| Listed {
                session,
                bytes,
                live: reg
                    .live
                    .iter()
                    .any(|l| l.tunnel == tunnel && l.session == session && !l.ended),
            })
            .collect()
    }

    /// Starts recording a session of `tunnel`: numbers it and writes the
    /// asciicast header.
    pub fn begin(&self, tunnel: &str, user: &str, start: &Start) -> io::Result<Writer<'_>> {
        self.prune_older_tunnels(tunnel);
        let dir = tunnel_dir(&self.root, tunnel);
        fs::create_dir_all(&dir)?;
        let existing = list(&self.root, tunnel);
        let session = {
            let mut reg = self.lock();
            let on_disk = existing.last().map_or(1, |(n, _)| n + 1);
            let next = reg.next.entry(tunnel.to_string()).or_insert(on_disk);
            *next = (*next).max(on_disk);
            let n = *next;
            *next += 1;
            reg.used
                .entry(tunnel.to_string())
                .or_insert_with(|| existing.iter().map(|(_, b)| b).sum());
            reg.live.push(Live {
                tunnel: tunnel.to_string(),
                session: n,
                written: 0,
                ended: false,
            });
            reg.generation += 1;
            n
        };
        self.changed.notify_all();
        let path = cast_path(&self.root, tunnel, session);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let header = serde_json::json!({
            "version": 2,
            "width": start.width.unwrap_or(80),
            "height": start.height.unwrap_or(24),
            "timestamp": wall_now(),
            "title": match &start.command {
                Some(c) => format!("{} {}: {c}", user, start.kind.name()),
                None => format!("{} {}", user, start.kind.name()),
            },
            "env": {"TERM": start.term.clone().unwrap_or_default()},
            "support_tunnel": {
                "tunnel": tunnel,
                "session": session,
                "user": user,
                "kind": start.kind,
                "command": start.command,
            },
        });
        let mut w = Writer {
            recordings: self,
            tunnel: tunnel.to_string(),
            session,
            file: io::BufWriter::with_capacity(4 << 10, file),
            started: Instant::now(),
            written: 0,
            truncated: false,
            pending: Vec::new(),
            scratch: Vec::new(),
        };
        w.line(header.to_string().as_bytes())?;
        w.flush()?;
        Ok(w)
    }

    /// Before a session begins, brings every tunnel's recordings together
    /// within [`DEVICE_CAPS`] tunnel caps: the recordings of the tunnels
    /// recorded longest ago go first (never `current`'s, nor a tunnel with a
    /// live session). With the new session, the device holds at most one
    /// cap more.
    fn prune_older_tunnels(&self, current: &str) {
        let mut dirs: Vec<(std::time::SystemTime, String, u64)> = fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let modified = e.metadata().ok()?.modified().ok()?;
                let bytes = list(&self.root, &name).iter().map(|(_, b)| b).sum();
                Some((modified, name, bytes))
            })
            .collect();
        dirs.sort();
        let mut total: u64 = dirs.iter().map(|(_, _, b)| b).sum();
        for (_, name, bytes) in dirs {
            if total <= self.cap.saturating_mul(DEVICE_CAPS) {
                break;
            }
            let mut reg = self.lock();
            if name == current || reg.live.iter().any(|l| l.tunnel == name) {
                continue;
            }
            if fs::remove_dir_all(tunnel_dir(&self.root, &name)).is_ok() {
                total = total.saturating_sub(bytes);
                reg.used.remove(&name);
                crate::journal::info!(
                    "tunnel {name}: its recordings rotated out (all recordings past {DEVICE_CAPS} x recording_cap)"
                );
            }
        }
    }

    /// Reserves `n` bytes of `tunnel`'s cap, rotating out its oldest
    /// finished recordings as needed; false when only live ones are left.
    fn reserve(&self, tunnel: &str, n: u64) -> bool {
        loop {
            let mut reg = self.lock();
            let used = reg.used.get(tunnel).copied().unwrap_or(0);
            if used + n <= self.cap {
                reg.used.insert(tunnel.to_string(), used + n);
                return true;
            }
            let live: Vec<u32> = reg
                .live
                .iter()
                .filter(|l| l.tunnel == tunnel && !l.ended)
                .map(|l| l.session)
                .collect();
            let Some((oldest, bytes)) = list(&self.root, tunnel)
                .into_iter()
                .find(|(s, _)| !live.contains(s))
            else {
                return false;
            };
            if fs::remove_file(cast_path(&self.root, tunnel, oldest)).is_err() {
                return false;
            }
            reg.used
                .insert(tunnel.to_string(), used.saturating_sub(bytes));
            drop(reg);
            crate::journal::info!(
                "tunnel {tunnel}: recording of session {oldest} rotated out (recording_cap)"
            );
        }
    }

    fn progress(&self, tunnel: &str, session: u32, written: u64, ended: bool) {
        let mut reg = self.lock();
        if let Some(l) = reg
            .live
            .iter_mut()
            .find(|l| l.tunnel == tunnel && l.session == session)
        {
            l.written = written;
            l.ended = ended;
        }
        if ended {
            reg.live
                .retain(|l| !(l.tunnel == tunnel && l.session == session));
        }
        reg.generation += 1;
        drop(reg);
        self.changed.notify_all();
    }

    /// The newest live session of `tunnel` not among `followed`, if any.
    pub fn live_session(&self, tunnel: &str, followed: &[u32]) -> Option<u32> {
        self.lock()
            .live
            .iter()
            .filter(|l| l.tunnel == tunnel && !l.ended && !followed.contains(&l.session))
            .map(|l| l.session)
            .max()
    }

    /// How far the live `session` is written, and whether it has ended
    /// (a session no longer live has ended).
    fn position(&self, tunnel: &str, session: u32) -> (u64, bool) {
        self.lock()
            .live
            .iter()
            .find(|l| l.tunnel == tunnel && l.session == session)
            .map_or((u64::MAX, true), |l| (l.written, l.ended))
    }

    /// Waits until something changes, or `timeout`.
    pub fn wait(&self, timeout: Duration) {
        let reg = self.lock();
        let seen = reg.generation;
        let _ = self
            .changed
            .wait_timeout_while(reg, timeout, |r| r.generation == seen);
    }

    /// Sends each line of `session` as it is written to `send`, until the
    /// session ends (then true) or `send` fails (false).
    pub fn follow(
        &self,
        tunnel: &str,
        session: u32,
        mut send: impl FnMut(&str) -> bool,
        gone: impl Fn() -> bool,
    ) -> bool {
        let Ok(file) = open(&self.root, tunnel, session) else {
            return true;
        };
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        let mut read = 0u64;
        loop {
            let (written, ended) = self.position(tunnel, session);
            while read < written {
                line.clear();
                match (&mut reader).take(1 << 20).read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(n) if line.ends_with('\n') => {
                        read += n as u64;
                        if !send(line.trim_end()) {
                            return false;
                        }
                    }
                    // `written` is always at a line's end: a line without
                    // one is a file cut short (a full disk). Nothing follows.
                    Ok(_) => return true,
                }
            }
            if ended && read >= written.min(file_len(&self.root, tunnel, session)) {
                return true;
            }
            if gone() {
                return false;
            }
            self.wait(Duration::from_secs(5));
        }
    }
}

fn file_len(root: &Path, tunnel: &str, session: u32) -> u64 {
    fs::metadata(cast_path(root, tunnel, session)).map_or(0, |m| m.len())
}

/// Writes one session's recording.
pub struct Writer<'a> {
    recordings: &'a Recordings,
    tunnel: String,
    /// The session's number.
    pub session: u32,
    file: io::BufWriter<fs::File>,
    started: Instant,
    written: u64,
    truncated: bool,
    /// Output bytes of an unfinished UTF-8 sequence, kept for the next frame.
    pending: Vec<u8>,
    /// The line being built.
    scratch: Vec<u8>,
}

impl Writer<'_> {
    fn line(&mut self, text: &[u8]) -> io::Result<()> {
        self.file.write_all(text)?;
        self.file.write_all(b"\n")?;
        self.written += text.len() as u64 + 1;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.recordings
            .progress(&self.tunnel, self.session, self.written, false);
        Ok(())
    }

    /// Whether the tunnel's cap stopped this recording.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    fn event(&mut self, code: &str, data: &str) -> io::Result<()> {
        if self.truncated {
            return Ok(());
        }
        let t = self.started.elapsed().as_secs_f64();
        // One buffer for every line: no allocation per event.
        let mut text = std::mem::take(&mut self.scratch);
        text.clear();
        let _ = write!(text, "[{t:.6}, \"{code}\", ");
        serde_json::to_writer(&mut text, data).map_err(io::Error::other)?;
        text.push(b']');
        if !self.recordings.reserve(&self.tunnel, text.len() as u64 + 1) {
            self.truncated = true;
            let _ = self.recordings.reserve(&self.tunnel, MARKER_ROOM);
            let note = format!(
                "[{t:.6}, \"m\", \"support-tunnel: the tunnel's recording_cap ({} bytes) is reached; the rest of this session is not recorded\"]",
                self.recordings.cap
            );
            self.scratch = text;
            self.line(note.as_bytes())?;
            return self.flush();
        }
        let written = self.line(&text);
        self.scratch = text;
        written?;
        // Each event reaches the file (not the disk) at once: watchers see
        // it, and the recorder's frames are already large under load.
        self.flush()
    }

    /// Output (`o`) or input (`i`) bytes; an unfinished UTF-8 sequence at
    /// the end waits for the next frame.
    pub fn data(&mut self, code: &str, bytes: &[u8]) -> io::Result<()> {
        let joined;
        let all = if self.pending.is_empty() {
            bytes
        } else {
            let mut a = std::mem::take(&mut self.pending);
            a.extend_from_slice(bytes);
            joined = a;
            &joined[..]
        };
        let keep = incomplete_tail(all);
        let (now, later) = all.split_at(all.len() - keep);
        self.pending = later.to_vec();
        if now.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(now);
        self.event(code, &text)
    }

    /// A window change.
    pub fn resize(&mut self, cols: u16, rows: u16) -> io::Result<()> {
        self.event("r", &format!("{cols}x{rows}"))
    }

    /// A marker (`m`) event: a transfer, or a note.
    pub fn marker(&mut self, text: &str) -> io::Result<()> {
        self.event("m", text)
    }

    /// Ends the recording: the end marker, flushed and synced.
    pub fn finish(mut self, end: Option<&End>) -> io::Result<u64> {
        let text = match end {
            Some(End {
                exit_code: Some(c), ..
            }) => format!("support-tunnel: session ended, exit {c}"),
            Some(_) => "support-tunnel: session ended (killed)".to_string(),
            None => "support-tunnel: the recorder vanished".to_string(),
        };
        let truncated = self.truncated;
        self.truncated = false;
        let _ = self.recordings.reserve(&self.tunnel, MARKER_ROOM);
        let t = self.started.elapsed().as_secs_f64();
        self.line(
            format!(
                "[{t:.6}, \"m\", {}]",
                serde_json::to_string(&text).unwrap_or_default()
            )
            .as_bytes(),
        )?;
        self.truncated = truncated;
        self.file.flush()?;
        self.file.get_ref().sync_data()?;
        Ok(self.written)
    }

    /// Seconds since the session began.
    pub fn secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        let _ = self.file.flush();
        self.recordings
            .progress(&self.tunnel, self.session, self.written, true);
    }
}

/// Recorded output made safe for the owner's terminal: colours and cursor
/// movement (CSI) stay, but operating-system commands, device control and
/// the like (OSC, DCS, APC, PM, SOS: clipboard writes, titles, hyperlinks)
/// and 8-bit C1 controls are dropped, so a session cannot act on the
/// terminal of the owner who watches it.
pub fn terminal_safe(data: &str) -> String {
    let mut out = String::with_capacity(data.len());
    let mut chars = data.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' if matches!(chars.peek(), Some(']' | 'P' | '_' | '^' | 'X')) => {
                // Skip to the string terminator: BEL, or ESC \.
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            '\u{80}'..='\u{9f}' => {}
            c => out.push(c),
        }
    }
    out
}

/// How many bytes at the end of `b` start a UTF-8 sequence that is not
/// complete yet (0 to 3).
fn incomplete_tail(b: &[u8]) -> usize {
    for back in 1..=3.min(b.len()) {
        let byte = b[b.len() - back];
        if byte & 0xC0 == 0x80 {
            continue;
        }
        let need = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// Reads one frame: its tag and payload (at most [`MAX_FRAME`] bytes).
/// `Ok(None)` at a clean end of the stream.
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Option<u8>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..])?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a recorder frame of {len} bytes (at most {MAX_FRAME})"),
        ));
    }
    buf.resize(len, 0);
    r.read_exact(buf)?;
    Ok(Some(head[0]))
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, tag: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut head = [0u8; 5];
    head[0] = tag;
    head[1..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&head)?;
    w.write_all(payload)
}

/// Records one session from the recorder's frames on `stream` until it ends;
/// returns its summary for the owner's log.
pub fn record(
    recordings: &Recordings,
    tunnel: &str,
    user: &str,
    start: &Start,
    stream: &mut impl Read,
    on_begin: impl FnOnce(u32),
) -> io::Result<Summary> {
    let mut w = recordings.begin(tunnel, user, start)?;
    on_begin(w.session);
    let mut summary = Summary {
        session: w.session,
        kind: start.kind,
        command: start.command.clone().unwrap_or_default(),
        secs: 0,
        exit_code: None,
        bytes_in: 0,
        bytes_out: 0,
        transfers: Vec::new(),
        more_transfers: 0,
        recorded_bytes: 0,
        truncated: false,
        complete: false,
    };
    let mut buf = Vec::new();
    let mut end = None;
    loop {
        let frame = match read_frame(stream, &mut buf) {
            Ok(Some(t)) => t,
            Ok(None) => break,
            Err(e) => {
                crate::journal::warning!("tunnel {tunnel}: session {}: {e}", w.session);
                break;
            }
        };
        match frame {
            tag::OUTPUT => w.data("o", &buf)?,
            tag::INPUT => w.data("i", &buf)?,
            tag::RESIZE if buf.len() == 4 => w.resize(
                u16::from_be_bytes([buf[0], buf[1]]),
                u16::from_be_bytes([buf[2], buf[3]]),
            )?,
            tag::MARKER => w.marker(&String::from_utf8_lossy(&buf))?,
            tag::TRANSFER => {
                if let Ok(t) = serde_json::from_slice::<Transfer>(&buf) {
                    w.marker(&t.describe())?;
                    if summary.transfers.len() < MAX_TRANSFERS {
                        summary.transfers.push(t);
                    } else {
                        summary.more_transfers += 1;
                    }
                }
            }
            tag::END => {
                end = serde_json::from_slice::<End>(&buf).ok();
                break;
            }
            _ => {}
        }
    }
    summary.secs = w.secs();
    summary.truncated = w.truncated();
    if let Some(e) = &end {
        summary.exit_code = e.exit_code;
        summary.bytes_in = e.bytes_in;
        summary.bytes_out = e.bytes_out;
        summary.complete = true;
    }
    summary.recorded_bytes = w.finish(end.as_ref())?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(list: &[(u8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (t, p) in list {
            write_frame(&mut out, *t, p).expect("frame");
        }
        out
    }

    fn cast_lines(r: &Recordings, tunnel: &str, session: u32) -> Vec<serde_json::Value> {
        let text = fs::read_to_string(cast_path(r.root(), tunnel, session)).expect("cast");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    fn shell() -> Start {
        Start {
            kind: Kind::Shell,
            command: None,
            width: Some(100),
            height: Some(30),
            term: Some("xterm".into()),
        }
    }

    #[test]
    fn a_session_becomes_an_asciicast_with_split_utf8_kept_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let state = StateDir::open(dir.path()).expect("state");
        let r = Recordings::new(&state, 1 << 20);
        let end = serde_json::to_vec(&End {
            exit_code: Some(3),
            bytes_in: 5,
            bytes_out: 9,
        })
        .expect("json");
        let snow = "☃".as_bytes();
        let stream = frames(&[
            (tag::OUTPUT, b"hello "),
            (tag::OUTPUT, &snow[..1]),
            (tag::OUTPUT, &snow[1..]),
            (tag::RESIZE, &[0, 120, 0, 40]),
            (tag::END, &end),
        ]);
        let s = record(&r, "t1", "support-t1", &shell(), &mut &stream[..], |_| {}).expect("ok");
        assert_eq!((s.session, s.exit_code, s.complete), (1, Some(3), true));
        let lines = cast_lines(&r, "t1", 1);
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[0]["width"], 100);
        assert_eq!(lines[0]["support_tunnel"]["kind"], "shell");
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "hello ");
        assert_eq!(lines[2][2], "☃", "the split character is whole");
        assert_eq!(lines[3][1], "r");
        assert_eq!(lines[3][2], "120x40");
        assert_eq!(
            lines.last().expect("end")[2],
            "support-tunnel: session ended, exit 3"
        );
        // The next session gets the next number.
        let s = record(&r, "t1", "support-t1", &shell(), &mut &b""[..], |_| {}).expect("ok");
        assert_eq!((s.session, s.complete), (2, false));
    }

    #[test]
    fn the_cap_rotates_old_sessions_out_then_stops_recording_the_live_one() {
        let dir = tempfile::tempdir().expect("dir");
        let state = StateDir::open(dir.path()).expect("state");
        let cap = 64 << 10;
        let r = Recordings::new(&state, cap);
        let chunk = vec![b'x'; 8 << 10];
        let small: Vec<(u8, &[u8])> = (0..4).map(|_| (tag::OUTPUT, &chunk[..])).collect();
        record(&r, "t", "u", &shell(), &mut &frames(&small)[..], |_| {}).expect("first");
        assert_eq!(list(r.root(), "t").len(), 1);
        // A session far over the cap: the first is rotated out, then it stops.
        let big: Vec<(u8, &[u8])> = (0..40).map(|_| (tag::OUTPUT, &chunk[..])).collect();
        let s = record(&r, "t", "u", &shell(), &mut &frames(&big)[..], |_| {}).expect("second");
        assert!(s.truncated);
        let on_disk = list(r.root(), "t");
        assert_eq!(on_disk.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![2]);
        let total: u64 = on_disk.iter().map(|(_, b)| b).sum();
        assert!(total <= cap + 2 * MARKER_ROOM + 1024, "{total} bytes");
        let lines = cast_lines(&r, "t", 2);
        assert!(lines
            .iter()
            .any(|l| l[2].as_str().is_some_and(|m| m.contains("recording_cap"))));
    }

    #[test]
    fn the_oldest_tunnels_recordings_go_once_all_pass_four_caps() {
        let dir = tempfile::tempdir().expect("dir");
        let state = StateDir::open(dir.path()).expect("state");
        let cap = 64 << 10;
        let r = Recordings::new(&state, cap);
        let chunk = vec![b'x'; 8 << 10];
        let full: Vec<(u8, &[u8])> = (0..7).map(|_| (tag::OUTPUT, &chunk[..])).collect();
        for (n, t) in ["t1", "t2", "t3", "t4", "t5", "t6"].into_iter().enumerate() {
            record(&r, t, "u", &shell(), &mut &frames(&full)[..], |_| {}).expect("rec");
            // Directory times order the tunnels: t1 oldest, whatever the
            // file system's timestamp granularity.
            let at = std::time::UNIX_EPOCH + Duration::from_secs(1_000 + n as u64);
            fs::File::open(tunnel_dir(r.root(), t))
                .and_then(|d| d.set_modified(at))
                .expect("dir time");
        }
        let left: Vec<String> = {
            let mut v: Vec<String> = fs::read_dir(r.root())
                .expect("root")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        // t6 began with five tunnels' recordings on disk, past four caps.
        assert_eq!(left, vec!["t2", "t3", "t4", "t5", "t6"], "t1 went first");
        let total: u64 = left
            .iter()
            .flat_map(|t| list(r.root(), t))
            .map(|(_, b)| b)
            .sum();
        assert!(total <= 5 * cap, "{total}");
    }

    #[test]
    fn hostile_frames_end_the_recording_without_panic() {
        let dir = tempfile::tempdir().expect("dir");
        let state = StateDir::open(dir.path()).expect("state");
        let r = Recordings::new(&state, 1 << 20);
        let mut huge = vec![tag::OUTPUT];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        let s = record(&r, "t", "u", &shell(), &mut &huge[..], |_| {}).expect("ends");
        assert!(!s.complete);
        let mut junk = frames(&[(tag::RESIZE, b"xx"), (b'?', b"??"), (tag::TRANSFER, b"{")]);
        junk.extend_from_slice(&[tag::OUTPUT, 0, 0]);
        let s = record(&r, "t", "u", &shell(), &mut &junk[..], |_| {}).expect("ends");
        assert!(!s.complete && s.transfers.is_empty());
    }

    #[test]
    fn terminal_commands_do_not_reach_the_owners_terminal() {
        let shown = terminal_safe(
            "\u{1b}[31mred\u{1b}[0m \u{1b}]52;c;ZXZpbA==\u{7}clip \u{1b}]0;title\u{1b}\\t \u{1b}Pq#0\u{1b}\\d \u{9d}8;;x\u{7}",
        );
        assert_eq!(shown, "\u{1b}[31mred\u{1b}[0m clip t d 8;;x\u{7}");
        assert_eq!(terminal_safe("\u{1b}]unterminated"), "");
    }

    #[test]
    fn utf8_tails() {
        assert_eq!(incomplete_tail(b"abc"), 0);
        assert_eq!(incomplete_tail(&[b'a', 0xE2]), 1);
        assert_eq!(incomplete_tail(&[0xE2, 0x98]), 2);
        assert_eq!(incomplete_tail(&[0xE2, 0x98, 0x83]), 0);
        assert_eq!(incomplete_tail(&[0xF0, 0x9F, 0x98]), 3);
        assert_eq!(incomplete_tail(&[0x80, 0x80, 0x80, 0x80]), 0);
    }
}
