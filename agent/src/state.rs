//! The state directory: one record per tunnel (secrets, 0600), the status
//! the `support` group may read, the owner's log, and the time floor.
//!
//! ```text
//! STATE/tunnels/<id>.key    0600 root        the tunnel's seed: written once, wiped at the end
//! STATE/tunnels/<id>.json   0600 root        request, accepted approval, time used (rewritten often)
//! STATE/status.json         0640 root:group  what status/list show without the daemon
//! STATE/log/<id>.log        0640 root:group  the owner's record (JSON lines), kept after the end
//! STATE/floor               0600 root        the time floor (newest issued_at accepted)
//! STATE/agent.lock                           held by the process that runs tunnels
//! ```
//!
//! Every write is atomic (temp file, fsync, rename), so a kill -9 at any
//! moment leaves each file either old or new.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use support_protocol::TunnelId;

use crate::util::{ensure_dir, wipe_file, write_atomic};

/// Where a tunnel is, as the agent keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Registered, waiting for an approval.
    Pending,
    /// An approval was accepted; the support access and the peer are coming up
    /// (or are up: the agent was restarted before it finished).
    Connecting,
    /// Up.
    Connected,
    /// Torn down; only the stop notice for the control plane may remain.
    Ended,
}

/// One tunnel's record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TunnelRecord {
    /// The tunnel id (hex).
    pub id: String,
    /// The control-channel credential (hex), kept after the end only until
    /// the stop notice is delivered. It opens nothing but this tunnel's record.
    pub credential: Option<String>,
    /// Requested duration.
    pub duration_secs: u32,
    /// Requested ports.
    pub ports: Vec<u16>,
    /// The owner's note.
    pub note: String,
    /// Wall-clock time of the request (display only).
    pub requested_at: u64,
    /// Where it is.
    pub phase: Phase,
    /// The newest approval accepted.
    pub accepted_seq: Option<u32>,
    /// That approval, encoded (hex), to resume after a restart.
    pub approval: Option<String>,
    /// Connected time used so far, counted on the monotonic clock.
    pub used_secs: u64,
    /// The wall clock when `used_secs` was saved (see `expiry`).
    pub checkpoint_wall: u64,
    /// The control plane acknowledged "connected".
    pub reported_connected: bool,
    /// Why it ended, once it has; and whether the control plane was told.
    pub end: Option<EndNote>,
}

/// How a tunnel ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndNote {
    /// Why, as the stop notice carries it.
    pub reason: support_protocol::messages::StopReason,
    /// The same, readable.
    pub text: String,
    /// Wall-clock time (display only).
    pub at: u64,
    /// The control plane has been told (or told us).
    pub notified: bool,
}

impl TunnelRecord {
    /// The id parsed.
    pub fn tunnel_id(&self) -> Option<TunnelId> {
        self.id.parse().ok()
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
        ensure_dir(&root.join("log"), 0o750)?;
        Ok(StateDir {
            root: root.to_path_buf(),
        })
    }

    /// Lets `gid` (the support group) read the status and the owner logs.
    pub fn share_with(&self, gid: u32) -> io::Result<()> {
        std::os::unix::fs::chown(self.root.join("log"), Some(0), Some(gid))
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

    /// Writes the group-readable status (0640).
    pub fn write_status(&self, json: &[u8], gid: Option<u32>) -> io::Result<()> {
        let p = self.root.join("status.json");
        write_atomic(&p, json, 0o640)?;
        if let Some(g) = gid {
            std::os::unix::fs::chown(&p, Some(0), Some(g))?;
        }
        Ok(())
    }

    /// Reads the status file.
    pub fn read_status(&self) -> io::Result<Vec<u8>> {
        fs::read(self.root.join("status.json"))
    }

    /// The owner's log file of a tunnel.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.root.join("log").join(format!("{id}.log"))
    }

    /// Appends one line to a tunnel's owner log (0640, group-readable) and syncs it.
    pub fn append_log(&self, id: &str, line: &str, gid: Option<u32>) -> io::Result<()> {
        let p = self.log_path(id);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(&p)?;
        f.set_permissions(fs::Permissions::from_mode(0o640))?;
        if let Some(g) = gid {
            std::os::unix::fs::chown(&p, Some(0), Some(g))?;
        }
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

    /// The lock file path.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("agent.lock")
    }
}

/// Holds the state directory's lock while alive: only one process runs tunnels.
pub struct StateLock {
    _file: fs::File,
}

impl StateLock {
    /// Takes the lock, or says who holds it.
    pub fn acquire(state: &StateDir) -> Result<StateLock, String> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(state.lock_path())
            .map_err(|e| format!("cannot open {}: {e}", state.lock_path().display()))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| {
                "another support-agent (the daemon, or a request --wait) is running; use it, or stop it first"
                    .to_string()
            },
        )?;
        Ok(StateLock { _file: file })
    }
}
