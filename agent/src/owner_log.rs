//! The owner's record of each tunnel: who approved (from the certificate),
//! which key, when connections came and went, bytes per port. JSON lines in
//! `STATE/log/<id>.log`, readable by the `support` group, kept after the
//! tunnel ends. Never holds a secret: no code, no key other than public ones.

use serde::{Deserialize, Serialize};

use crate::socket::{ErrorCode, Failure};
use crate::state::StateDir;
use crate::util::{format_duration, format_time};

/// One line of the log.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    /// Wall-clock time (as the device saw it).
    pub at: u64,
    /// What happened.
    #[serde(flatten)]
    pub entry: Entry,
}

/// What happened.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Entry {
    /// The owner asked for support.
    Requested {
        /// Seconds asked for.
        duration_secs: u32,
        /// Ports asked for.
        ports: Vec<u16>,
        /// The owner's note.
        note: String,
    },
    /// An approval passed every check.
    Approved {
        /// Approval number.
        approval: u32,
        /// The approver, as the support CA certified them.
        approver: String,
        /// The certificate's serial.
        certificate_serial: u64,
        /// The approver's signing key (hex).
        approver_key: String,
        /// The admin's SSH key fingerprint.
        ssh_key: String,
        /// Seconds granted.
        duration_secs: u32,
        /// Ports granted.
        ports: Vec<u16>,
        /// The hub.
        relay: String,
    },
    /// An approval was refused; nothing was changed.
    Refused {
        /// Why.
        reason: String,
    },
    /// The support access and the tunnel peer are up.
    Up {
        /// The support user.
        user: String,
        /// The device's tunnel address.
        address: String,
        /// Time left.
        remaining_secs: u64,
    },
    /// The agent restarted and resumed the tunnel.
    Resumed {
        /// Time already used (counted conservatively).
        used_secs: u64,
    },
    /// The WireGuard handshake with the admin completed.
    TunnelUp,
    /// A connection through the tunnel opened.
    Opened {
        /// Connection number.
        id: u64,
        /// Device port.
        port: u16,
    },
    /// A connection closed.
    Closed {
        /// Connection number.
        id: u64,
        /// Device port.
        port: u16,
        /// Bytes from support into the device.
        bytes_in: u64,
        /// Bytes from the device to support.
        bytes_out: u64,
        /// How long it lasted.
        secs: u64,
    },
    /// A connection was refused.
    ConnectionRefused {
        /// Device port.
        port: u16,
        /// Why.
        reason: String,
    },
    /// Whether the support user's sessions are recorded, and if not, why.
    Recording {
        /// Recorded.
        recorded: bool,
        /// Why not (empty when recorded).
        why: String,
    },
    /// A recorded session began.
    SessionStarted {
        /// The session's number in the tunnel.
        session: u32,
        /// shell, exec, sftp or scp.
        kind: String,
        /// The command (exec, scp), empty for a shell.
        command: String,
    },
    /// A recorded session ended (its recording: `support-agent replay`).
    SessionEnded(crate::recording::Summary),
    /// Something went wrong that the owner may want to know.
    Problem {
        /// What.
        what: String,
    },
    /// The tunnel ended and its access was removed.
    Ended {
        /// Why.
        reason: String,
    },
}

impl LogLine {
    /// One readable line for `support-agent log`.
    pub fn render(&self) -> String {
        format!("{}  {}", format_time(self.at), self.entry.describe())
    }
}

impl Entry {
    /// What the owner is told about recording when the access is made.
    pub fn recording(sessions: &crate::access::Sessions) -> Entry {
        match sessions {
            crate::access::Sessions::Recorded => Entry::Recording {
                recorded: true,
                why: String::new(),
            },
            crate::access::Sessions::Unrecorded(why) => Entry::Recording {
                recorded: false,
                why: why.clone(),
            },
        }
    }

    /// How important the entry is in the system journal.
    pub fn priority(&self) -> crate::journal::Level {
        use crate::journal::Level;
        match self {
            Entry::Refused { .. }
            | Entry::ConnectionRefused { .. }
            | Entry::Problem { .. }
            | Entry::Recording {
                recorded: false, ..
            } => Level::Warning,
            _ => Level::Info,
        }
    }

    /// The entry in words.
    pub fn describe(&self) -> String {
        match self {
            Entry::Requested {
                duration_secs,
                ports,
                note,
            } => format!(
                "support requested for {} on ports {ports:?}{}",
                format_duration(u64::from(*duration_secs)),
                if note.is_empty() {
                    String::new()
                } else {
                    format!(" ({note})")
                }
            ),
            Entry::Approved {
                approval,
                approver,
                certificate_serial,
                ssh_key,
                duration_secs,
                ports,
                relay,
                ..
            } => format!(
                "approved (#{approval}) by {approver} (certificate {certificate_serial}), SSH key {ssh_key}, {} on ports {ports:?}, hub {relay}",
                format_duration(u64::from(*duration_secs))
            ),
            Entry::Refused { reason } => format!("REFUSED, nothing changed: {reason}"),
            Entry::Up {
                user,
                address,
                remaining_secs,
            } => format!(
                "access open: user {user}, tunnel address {address}, ends in {}",
                format_duration(*remaining_secs)
            ),
            Entry::Resumed { used_secs } => format!(
                "agent restarted; tunnel resumed with {} counted as used",
                format_duration(*used_secs)
            ),
            Entry::TunnelUp => "the support engineer's peer is connected".to_string(),
            Entry::Opened { id, port } => format!("connection {id} to port {port} opened"),
            Entry::Closed {
                id,
                port,
                bytes_in,
                bytes_out,
                secs,
            } => format!(
                "connection {id} to port {port} closed after {}: {bytes_in} bytes in, {bytes_out} bytes out",
                format_duration(*secs)
            ),
            Entry::ConnectionRefused { port, reason } => {
                format!("connection to port {port} refused: {reason}")
            }
            Entry::Recording { recorded: true, .. } => {
                "sessions are recorded: support-agent watch follows them live, replay shows them".into()
            }
            Entry::Recording { why, .. } => format!("sessions are NOT recorded: {why}"),
            Entry::SessionStarted {
                session,
                kind,
                command,
            } => match command.is_empty() {
                true => format!("session {session} ({kind}) started"),
                false => format!("session {session} ({kind}) started: {command}"),
            },
            Entry::SessionEnded(s) => s.describe(),
            Entry::Problem { what } => format!("problem: {what}"),
            Entry::Ended { reason } => format!("ended ({reason})"),
        }
    }
}

/// One tunnel in `list`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ListRow {
    /// The tunnel id.
    pub id: String,
    /// When its record begins (wall clock).
    pub requested_at: u64,
    /// Its last line, rendered.
    pub last: String,
}

fn read_lines(state: &StateDir, id: &str) -> Vec<LogLine> {
    std::fs::read_to_string(state.log_path(id))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The record of tunnel `id` (a unique prefix will do), or of the newest.
/// `not_found` when there is none.
pub fn read_tunnel(state: &StateDir, id: Option<&str>) -> Result<(String, Vec<LogLine>), Failure> {
    let ids = state.logged_tunnels();
    let not_found = |text: String| Failure::new(ErrorCode::NotFound, text);
    let id = match id {
        Some(p) => crate::daemon::resolve(p, ids.iter())
            .map_err(|_| not_found(format!("no tunnel {p} on record (see support-agent list)")))?,
        None => ids
            .last()
            .cloned()
            .ok_or_else(|| not_found("this device has no support tunnels on record".into()))?,
    };
    let lines = read_lines(state, &id);
    Ok((id, lines))
}

/// Every tunnel on record, newest last.
pub fn list(state: &StateDir) -> Vec<ListRow> {
    state
        .logged_tunnels()
        .into_iter()
        .map(|id| {
            let lines = read_lines(state, &id);
            ListRow {
                requested_at: lines.first().map(|l| l.at).unwrap_or(0),
                last: lines.last().map(|l| l.render()).unwrap_or_default(),
                id,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_as_json() {
        let l = LogLine {
            at: 1_800_000_000,
            entry: Entry::Closed {
                id: 1,
                port: 22,
                bytes_in: 10,
                bytes_out: 20,
                secs: 3,
            },
        };
        let json = serde_json::to_string(&l).expect("serializes");
        assert!(json.contains("\"event\":\"closed\""), "{json}");
        assert_eq!(serde_json::from_str::<LogLine>(&json).expect("parses"), l);
        assert!(l.render().contains("10 bytes in, 20 bytes out"));
    }
}
