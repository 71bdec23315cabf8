//! What every running tunnel shares: config, control plane, state dir, the
//! owner's log writer and the live status table.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::control::ControlPlane;
use crate::owner_log::{Entry, LogLine};
use crate::state::StateDir;
use crate::util::wall_now;

/// One tunnel as `status` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TunnelStatus {
    /// Tunnel id.
    pub id: String,
    /// pending, connecting, connected, ended.
    pub phase: String,
    /// When requested (wall clock).
    pub requested_at: u64,
    /// When a pending request goes stale if nobody approves it (wall clock).
    #[serde(default)]
    pub stale_at: Option<u64>,
    /// The approver, once approved.
    pub approver: Option<String>,
    /// The support user, once created.
    pub user: Option<String>,
    /// Seconds left, while connected.
    pub remaining_secs: Option<u64>,
    /// When it expires (wall clock), while connected.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Why it ended, for people.
    pub ended: Option<String>,
    /// Why it ended, for programs: owner, support, expired, stale, refused, failed.
    #[serde(default)]
    pub end_reason: Option<String>,
    /// The last control-plane problem, if the last call failed.
    pub control_plane_error: Option<String>,
}

/// The shared context.
pub struct Ctx {
    /// Validated config.
    pub config: Config,
    /// The control plane.
    pub cp: ControlPlane,
    /// The state directory.
    pub state: StateDir,
    /// This agent's tag on users and sudoers files.
    pub instance: String,
    /// The support group's gid.
    pub gid: Option<u32>,
    status: Mutex<StatusTable>,
    changed: Condvar,
}

/// Every tunnel's status, and a counter of changes for watchers.
#[derive(Default)]
struct StatusTable {
    tunnels: BTreeMap<String, TunnelStatus>,
    generation: u64,
}

impl Ctx {
    /// A context for `config`.
    pub fn new(config: Config, state: StateDir, gid: Option<u32>) -> Arc<Ctx> {
        Arc::new(Ctx {
            cp: ControlPlane::new(&config.control_plane, config.control_plane_keys.clone()),
            instance: instance_tag(state.root()),
            config,
            state,
            gid,
            status: Mutex::new(StatusTable::default()),
            changed: Condvar::new(),
        })
    }

    /// Appends to a tunnel's owner log; a failure goes to stderr (never fatal).
    pub fn log(&self, id: &str, entry: Entry) {
        let line = LogLine {
            at: wall_now(),
            entry,
        };
        let json = serde_json::to_string(&line).unwrap_or_default();
        if let Err(e) = self.state.append_log(id, &json) {
            crate::journal::error!("cannot write the owner log of {id}: {e}");
        }
    }

    /// Updates a tunnel's status and rewrites the status file.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut TunnelStatus)) {
        let snapshot = {
            let mut table = self.lock_status();
            let s = table
                .tunnels
                .entry(id.to_string())
                .or_insert_with(|| TunnelStatus {
                    id: id.to_string(),
                    ..TunnelStatus::default()
                });
            let before = s.clone();
            f(s);
            if *s == before {
                // Unchanged: no write (status changes on every poll would wear the flash).
                return;
            }
            table.generation += 1;
            self.changed.notify_all();
            table.tunnels.values().cloned().collect::<Vec<_>>()
        };
        let json = serde_json::to_vec_pretty(&snapshot).unwrap_or_default();
        if let Err(e) = self.state.write_status(&json) {
            crate::journal::error!("cannot write the status file: {e}");
        }
    }

    /// Every tunnel's status.
    pub fn statuses(&self) -> Vec<TunnelStatus> {
        self.lock_status().tunnels.values().cloned().collect()
    }

    /// Counts status changes: compare with [`Ctx::wait_change`]'s answer.
    pub fn generation(&self) -> u64 {
        self.lock_status().generation
    }

    /// Waits until some status changes after `seen` (a generation), or
    /// `timeout` passes; returns the generation now.
    pub fn wait_change(&self, seen: u64, timeout: Duration) -> u64 {
        let table = self.lock_status();
        let (table, _) = self
            .changed
            .wait_timeout_while(table, timeout, |t| t.generation == seen)
            .unwrap_or_else(|p| p.into_inner());
        table.generation
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, StatusTable> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Eight hex digits naming this agent instance by its state directory, so
/// that agents with different state dirs (tests) never repair each other's users.
pub fn instance_tag(root: &std::path::Path) -> String {
    use sha2::Digest;
    let canonical = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let h = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    hex::encode(&h[..4])
}
