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

/// Where a tunnel is, as `status` and `watch` show it (agent/SOCKET.md
/// lists the names; a tunnel moves forward only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatusPhase {
    /// Waiting for an approval.
    #[default]
    Pending,
    /// An approval passed every check; the access and the peer are coming up.
    Connecting,
    /// Support can log in.
    Connected,
    /// The end is decided; the access is being removed.
    Ending,
    /// Everything is gone.
    Ended,
}

impl StatusPhase {
    /// Every phase, in the order of a tunnel's life.
    pub const ALL: [StatusPhase; 5] = [
        StatusPhase::Pending,
        StatusPhase::Connecting,
        StatusPhase::Connected,
        StatusPhase::Ending,
        StatusPhase::Ended,
    ];

    /// The phase's one name, as the socket and `status --json` give it.
    pub fn name(self) -> &'static str {
        match self {
            StatusPhase::Pending => "pending",
            StatusPhase::Connecting => "connecting",
            StatusPhase::Connected => "connected",
            StatusPhase::Ending => "ending",
            StatusPhase::Ended => "ended",
        }
    }
}

/// Why a tunnel ended, for programs (agent/SOCKET.md lists the names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The owner stopped it.
    Owner,
    /// Support stopped it.
    Support,
    /// Its approved time ran out.
    Expired,
    /// Nobody approved it in time.
    Stale,
    /// The device refused the approval.
    Refused,
    /// It failed to come up, or to go on.
    Failed,
}

impl EndReason {
    /// Every reason.
    pub const ALL: [EndReason; 6] = [
        EndReason::Owner,
        EndReason::Support,
        EndReason::Expired,
        EndReason::Stale,
        EndReason::Refused,
        EndReason::Failed,
    ];

    /// The reason's one name, as the socket and `status --json` give it.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Owner => "owner",
            EndReason::Support => "support",
            EndReason::Expired => "expired",
            EndReason::Stale => "stale",
            EndReason::Refused => "refused",
            EndReason::Failed => "failed",
        }
    }
}

/// On the wire (JSON) as its `name()`; only the names of `ALL` read back.
macro_rules! serde_by_name {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let name = String::deserialize(d)?;
                <$t>::ALL
                    .into_iter()
                    .find(|x| x.name() == name)
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown value '{name}'")))
            }
        }
    };
}

serde_by_name!(StatusPhase);
serde_by_name!(EndReason);

/// One tunnel as `status` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TunnelStatus {
    /// Tunnel id.
    pub id: String,
    /// Where it is.
    pub phase: StatusPhase,
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
    /// Why it ended, for programs.
    #[serde(default)]
    pub end_reason: Option<EndReason>,
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
    /// Session recordings.
    pub recordings: crate::recording::Recordings,
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
        let recordings = crate::recording::Recordings::new(&state, config.recording.cap);
        Arc::new(Ctx {
            recordings,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The backquoted words of the row of `field` in SOCKET.md's status table.
    fn documented(field: &str) -> Vec<String> {
        let doc = include_str!("../SOCKET.md");
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{field}` |")))
            .expect("the field's row");
        let meaning = row.rsplit('|').nth(1).expect("meaning column");
        // "once `ending`/`ended`: `owner`, ...": the values follow the colon.
        let values = meaning.rsplit_once(": ").map_or(meaning, |(_, v)| v);
        values
            .split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect()
    }

    #[test]
    fn phase_and_end_reason_names_are_the_documented_wire_strings() {
        let phases: Vec<&str> = StatusPhase::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(documented("phase"), phases);
        let reasons: Vec<&str> = EndReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(documented("end_reason"), reasons);
        // serde writes and reads the same names.
        for p in StatusPhase::ALL {
            let json = serde_json::to_string(&p).expect("serializes");
            assert_eq!(json, format!("\"{}\"", p.name()));
            assert_eq!(serde_json::from_str::<StatusPhase>(&json).ok(), Some(p));
        }
        for r in EndReason::ALL {
            let json = serde_json::to_string(&r).expect("serializes");
            assert_eq!(json, format!("\"{}\"", r.name()));
            assert_eq!(serde_json::from_str::<EndReason>(&json).ok(), Some(r));
        }
    }
}
