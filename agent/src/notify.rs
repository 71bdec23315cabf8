//! systemd's notification protocol (sd_notify(3)): READY once the socket
//! listens, a STATUS line that follows the tunnels, and the watchdog's
//! keep-alive. Without `NOTIFY_SOCKET` (not under systemd) it does nothing.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::runtime::{Ctx, StatusPhase, TunnelStatus};
use crate::util::{format_duration, wall_now};

/// The link to systemd.
pub struct Notifier {
    socket: UnixDatagram,
    target: std::os::unix::net::SocketAddr,
    watchdog: Option<Duration>,
    next_ping: Instant,
}

impl Notifier {
    /// The notifier systemd asked for, if any.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let target = address(&path.to_string_lossy())?;
        let socket = UnixDatagram::unbound().ok()?;
        // WATCHDOG_PID, when set, names the process that must ping.
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|p| p.parse() == Ok(std::process::id()));
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(|u| Duration::from_micros(u) / 2);
        Some(Notifier {
            socket,
            target,
            watchdog,
            next_ping: Instant::now(),
        })
    }

    /// Sends `state` (newline-separated `KEY=value` assignments).
    pub fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.target) {
            crate::journal::warning!("cannot notify systemd: {e}");
        }
    }

    /// READY=1 with the first status, then a thread that sends STATUS at
    /// every change of the tunnels (and each minute, for the time left).
    pub fn ready(&self, ctx: Arc<Ctx>) {
        let mut last = status_line(&ctx.statuses(), wall_now());
        self.send(&format!("READY=1\nSTATUS={last}"));
        let Ok(socket) = self.socket.try_clone() else {
            return;
        };
        let status = Notifier {
            socket,
            target: self.target.clone(),
            watchdog: None,
            next_ping: self.next_ping,
        };
        let _ = std::thread::Builder::new()
            .name("systemd-status".into())
            .spawn(move || {
                let mut seen = ctx.generation();
                loop {
                    seen = ctx.wait_change(seen, Duration::from_secs(60));
                    let line = status_line(&ctx.statuses(), wall_now());
                    if line != last {
                        status.send(&format!("STATUS={line}"));
                        last = line;
                    }
                }
            });
    }

    /// The watchdog's ping, when due: called from the socket loop, so a
    /// hung loop stops the pings and systemd restarts the agent.
    pub fn watchdog(&mut self) {
        if let Some(every) = self.watchdog {
            if Instant::now() >= self.next_ping {
                self.send("WATCHDOG=1");
                self.next_ping = Instant::now() + every;
            }
        }
    }

    /// STOPPING=1.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }
}

fn address(path: &str) -> Option<std::os::unix::net::SocketAddr> {
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()
        }
        None if path.starts_with('/') => std::os::unix::net::SocketAddr::from_pathname(path).ok(),
        None => None,
    }
}

/// One line for `systemctl status`: the live tunnels, or that there are none.
pub fn status_line(tunnels: &[TunnelStatus], now: u64) -> String {
    let live: Vec<String> = tunnels
        .iter()
        .filter(|t| t.phase != StatusPhase::Ended)
        .map(|t| {
            let who = t.approver.as_deref().unwrap_or("?");
            match t.phase {
                StatusPhase::Pending => format!("{}: waiting for approval", short(&t.id)),
                StatusPhase::Connecting => {
                    format!("{}: approved by {who}, connecting", short(&t.id))
                }
                StatusPhase::Connected => format!(
                    "connected: {who}, user {}, {} left",
                    t.user.as_deref().unwrap_or("?"),
                    format_duration(t.expires_at.unwrap_or(now).saturating_sub(now) / 60 * 60)
                ),
                other => format!("{}: {}", short(&t.id), other.name()),
            }
        })
        .collect();
    if live.is_empty() {
        "no support tunnel".into()
    } else {
        live.join("; ")
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_line(&[], 0), "no support tunnel");
        let t = TunnelStatus {
            id: "0123456789abcdef".into(),
            phase: StatusPhase::Connected,
            approver: Some("alice".into()),
            user: Some("support-01234567".into()),
            expires_at: Some(1000 + 4350),
            ..TunnelStatus::default()
        };
        let line = status_line(&[t], 1000);
        assert_eq!(line, "connected: alice, user support-01234567, 1h 12m left");
    }
}
