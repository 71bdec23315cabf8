//! The state directory: one record per tunnel (secrets, 0600), the status
//! the `support` group may read, the owner's log, and the time floor.
//!
//! ```text
//! STATE/tunnels/<id>.key    0600 root        the tunnel's seed: written once, wiped at the end
//! STATE/tunnels/<id>.json   0600 root        request, accepted approval, time used (rewritten often)
//! STATE/status.json         0600 root        what `status` shows root without the daemon
//! STATE/log/<id>.log        0600 root        the owner's record (JSON lines), kept after the end
//! STATE/next-uid            0600 root        the uid the next support user gets
//! STATE/floor               0600 root        the time floor (newest issued_at accepted)
//! STATE/agent.lock                           held by the process that runs tunnels
//! ```
//!
//! Every write is atomic (temp file, fsync, rename), so a kill -9 at any
//! moment leaves each file either old or new. Nothing here is readable by
//! the support group: support users are in it too. The owner's web UI reads
//! status and logs through the daemon's socket, which knows who asks.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use support_protocol::messages::StopReason;
use support_protocol::TunnelId;

use crate::util::{ensure_dir, wipe_file, write_atomic};

/// Where a tunnel is, as the agent keeps it. Each phase carries exactly
/// what that phase needs, so a record cannot say "ended" and still hold an
/// approval to resume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Registered, waiting for an approval.
    Pending,
    /// An approval was accepted. Saved before the support access is
    /// created, so after a crash the tunnel is resumed (or repaired).
    Connected(Live),
    /// The end is decided and saved; the teardown may not have finished.
    /// A restart finishes it and never resumes the tunnel.
    Ending(Ending),
    /// Torn down; only the stop notice for the control plane may remain.
    Ended(EndNote),
}

/// An accepted approval and the time used under it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    /// The approval's sequence number.
    pub accepted_seq: u32,
    /// The approval, encoded (hex), to re-verify and resume after a restart.
    pub approval: String,
    /// Connected time used so far, counted on the monotonic clock.
    pub used_secs: u64,
    /// The wall clock when `used_secs` was saved (see `expiry`).
    pub checkpoint_wall: u64,
    /// The control plane acknowledged "connected".
    pub reported_connected: bool,
    /// The device's tunnel address (for the hooks).
    pub address: [u8; 4],
    /// The tunnel network's prefix length (for the hooks).
    pub prefix_len: u8,
}

/// A decided end whose teardown may still be running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ending {
    /// Why it ends.
    pub reason: StopReason,
    /// Whether the control plane still has to be told.
    pub notify: bool,
    /// The approval it ran under, if one was accepted (support access may exist).
    pub live: Option<Live>,
    /// The control-channel credential (hex), kept for the stop notice once
    /// the seed is wiped.
    #[serde(default)]
    pub credential: Option<String>,
}

/// How a tunnel ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndNote {
    /// Why, as the stop notice carries it.
    pub reason: StopReason,
    /// The same, readable.
    pub text: String,
    /// Wall-clock time (display only).
    pub at: u64,
    /// The control plane has been told (or told us).
    pub notified: bool,
    /// The control-channel credential (hex), kept only until the stop notice
    /// is delivered. It opens nothing but this tunnel's record.
    pub credential: Option<String>,
}

/// One tunnel's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelRecord {
    /// The tunnel id (hex).
    pub id: String,
    /// Requested duration.
    pub duration_secs: u32,
    /// Requested ports.
    pub ports: Vec<u16>,
    /// The owner's note.
    pub note: String,
    /// Wall-clock time of the request (display, and the pending window after a restart).
    pub requested_at: u64,
    /// How long the request stays approvable.
    pub pending_window_secs: u32,
    /// Where it is.
    #[serde(flatten)]
    pub phase: Phase,
}

impl TunnelRecord {
    /// The id parsed.
    pub fn tunnel_id(&self) -> Option<TunnelId> {
        self.id.parse().ok()
    }

    /// True while the tunnel may hold support access legitimately.
    pub fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Pending | Phase::Connected(_))
    }
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed) the directory tree.
    pub fn open(root: &Path) -> io::Result<StateDir> {
        ensure_dir(root, 0o755)?;
        ensure_dir(&root.join("tunnels"), 0o700)?;
        ensure_dir(&root.join("log"), 0o700)?;
        Ok(StateDir {
            root: root.to_path_buf(),
        })
    }

    /// Makes the log directory and the status root's alone (older versions
    /// let the support group read them, and support users are in it).
    pub fn make_private(&self) -> io::Result<()> {
        let log = self.root.join("log");
        std::os::unix::fs::chown(&log, Some(0), Some(0))?;
        fs::set_permissions(&log, fs::Permissions::from_mode(0o700))?;
        for e in fs::read_dir(&log)?.flatten() {
            fs::set_permissions(e.path(), fs::Permissions::from_mode(0o600))?;
        }
        let status = self.root.join("status.json");
        if status.exists() {
            fs::set_permissions(&status, fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }

    /// Opens an existing directory read-only (status readers in the group).
    pub fn existing(root: &Path) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
        }
    }

    /// The root path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.root.join("tunnels").join(format!("{id}.json"))
    }

    /// Saves a record (0600).
    pub fn save(&self, r: &TunnelRecord) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(r).map_err(io::Error::other)?;
        write_atomic(&self.record_path(&r.id), &json, 0o600)
    }

    /// Loads every record. An unreadable one is reported, not fatal.
    pub fn records(&self) -> (Vec<TunnelRecord>, Vec<String>) {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        let Ok(entries) = fs::read_dir(self.root.join("tunnels")) else {
            return (out, problems);
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            match fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<TunnelRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => out.push(r),
                Err(e) => problems.push(format!("{}: {e}", p.display())),
            }
        }
        out.sort_by_key(|r| r.requested_at);
        (out, problems)
    }

    /// Removes temp files an interrupted write left (at start only: while
    /// running, another thread's temp file may be mid-write).
    pub fn clean_temp_files(&self) {
        for e in fs::read_dir(self.root.join("tunnels"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = wipe_file(&e.path());
            }
        }
    }

    fn seed_path(&self, id: &str) -> PathBuf {
        self.root.join("tunnels").join(format!("{id}.key"))
    }

    /// Saves a tunnel's seed (0600), once.
    pub fn save_seed(&self, id: &str, seed: &[u8; 32]) -> io::Result<()> {
        let hexed = zeroize::Zeroizing::new(hex::encode(seed));
        write_atomic(&self.seed_path(id), hexed.as_bytes(), 0o600)
    }

    /// A tunnel's seed, while it is live.
    pub fn seed(&self, id: &str) -> Option<zeroize::Zeroizing<[u8; 32]>> {
        let text = zeroize::Zeroizing::new(fs::read_to_string(self.seed_path(id)).ok()?);
        let bytes = zeroize::Zeroizing::new(hex::decode(text.trim()).ok()?);
        let seed: [u8; 32] = bytes.as_slice().try_into().ok()?;
        Some(zeroize::Zeroizing::new(seed))
    }

    /// Overwrites and removes a tunnel's seed.
    pub fn wipe_seed(&self, id: &str) -> io::Result<()> {
        wipe_file(&self.seed_path(id))
    }

    /// Wipes and removes a record.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        let _ = self.wipe_seed(id);
        wipe_file(&self.record_path(id))
    }

    /// Writes the status (0600: the socket serves it to the owner's group).
    pub fn write_status(&self, json: &[u8]) -> io::Result<()> {
        write_atomic(&self.root.join("status.json"), json, 0o600)
    }

    /// Reads the status file.
    pub fn read_status(&self) -> io::Result<Vec<u8>> {
        fs::read(self.root.join("status.json"))
    }

    /// The owner's log file of a tunnel.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.root.join("log").join(format!("{id}.log"))
    }

    /// Appends one line to a tunnel's owner log (0600) and syncs it.
    pub fn append_log(&self, id: &str, line: &str) -> io::Result<()> {
        let p = self.log_path(id);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&p)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(line.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_data()
    }

    /// Every tunnel that has an owner log, newest last.
    pub fn logged_tunnels(&self) -> Vec<String> {
        let mut ids: Vec<(std::time::SystemTime, String)> = fs::read_dir(self.root.join("log"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".log")?.to_string();
                let t = e
                    .metadata()
                    .ok()?
                    .created()
                    .ok()
                    .or_else(|| e.metadata().ok().and_then(|m| m.modified().ok()))?;
                Some((t, name))
            })
            .collect();
        ids.sort();
        ids.into_iter().map(|(_, n)| n).collect()
    }

    /// The time floor: a lower bound on the current time known without the
    /// wall clock (see `support_protocol::certificate`).
    pub fn time_floor(&self) -> u64 {
        fs::read_to_string(self.root.join("floor"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
            .max(crate::RELEASE_TIME)
    }

    /// Raises the time floor to `t` (never lowers it).
    pub fn raise_time_floor(&self, t: u64) -> io::Result<()> {
        if t > self.time_floor() {
            write_atomic(&self.root.join("floor"), t.to_string().as_bytes(), 0o600)?;
        }
        Ok(())
    }

    /// The uid the next support user should get (0 before the first).
    pub fn next_support_uid(&self) -> u32 {
        fs::read_to_string(self.root.join("next-uid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Saves the uid the next support user should get.
    pub fn set_next_support_uid(&self, uid: u32) -> io::Result<()> {
        write_atomic(
            &self.root.join("next-uid"),
            uid.to_string().as_bytes(),
            0o600,
        )
    }

    /// The lock file path.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("agent.lock")
    }
}

/// Holds the state directory's lock while alive: only one process runs tunnels.
pub struct StateLock {
    _file: fs::File,
}

/// Why the state directory's lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// The lock file cannot be opened.
    Open {
        /// The lock file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// Another process holds it.
    Held,
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Open { path, error } => write!(f, "cannot open {}: {error}", path.display()),
            Self::Held => f.write_str(
                "another support-agent (the daemon, or a request --wait) is running; use it, or stop it first",
            ),
        }
    }
}

impl std::error::Error for LockError {}

impl StateLock {
    /// Takes the lock, or says why not.
    pub fn acquire(state: &StateDir) -> Result<StateLock, LockError> {
        let path = state.lock_path();
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|error| LockError::Open { path, error })?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| LockError::Held)?;
        Ok(StateLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_holds_the_lock() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateDir::open(dir.path()).expect("state dir");
        let held = StateLock::acquire(&state).expect("first");
        assert!(matches!(StateLock::acquire(&state), Err(LockError::Held)));
        drop(held);
        let again = StateLock::acquire(&state);
        assert!(again.is_ok(), "free again once dropped");
    }
}
