//! The daemon: repairs, resumes live tunnels, and serves the local socket.
//! `request --wait` runs the same thing in the foreground for one tunnel.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::access;
use crate::config::Config;
use crate::lifecycle::{self, Mailbox, Registered, Supervisor};
use crate::repair::{self, Repaired};
use crate::runtime::Ctx;
use crate::socket::{self, SocketRequest, SocketResponse};
use crate::state::{Phase, StateDir, StateLock};
use support_protocol::control_channel::StaticKeypair;

/// At most this many non-root socket clients are served at once; root (the
/// owner's CLI) is always served, so a flood cannot block the kill switch.
const MAX_CLIENTS: usize = 8;
/// How long a stop waits for the teardown to finish.
const STOP_WAIT: Duration = Duration::from_secs(10);

struct Running {
    mailbox: Mailbox,
    thread: JoinHandle<()>,
}

/// A running agent.
pub struct Daemon {
    /// Shared context.
    pub ctx: Arc<Ctx>,
    tunnels: Mutex<HashMap<String, Running>>,
    _lock: StateLock,
}

impl Daemon {
    /// Takes the state lock, repairs, and resumes every live tunnel.
    pub fn start(config: Config) -> Result<Arc<Daemon>, String> {
        let (ctx, lock) = open_state(config)?;
        let daemon = Arc::new(Daemon {
            ctx,
            tunnels: Mutex::new(HashMap::new()),
            _lock: lock,
        });
        let report = daemon.repair_and_resume();
        for line in report.done.iter().chain(&report.problems) {
            eprintln!("support-agent: repair: {line}");
        }
        Ok(daemon)
    }

    fn repair_and_resume(&self) -> Repaired {
        self.ctx.state.clean_temp_files();
        let (records, unreadable) = self.ctx.state.records();
        let live = repair::live_ids(&self.ctx.state, &records);
        let mut report = repair::remove_orphans(&self.ctx, &live);
        report.problems.extend(unreadable);
        for rec in records {
            match rec.phase {
                Phase::Ended => self.resume_notice(rec),
                _ if self.ctx.state.seed(&rec.id).is_none() => {
                    let _ = self.ctx.state.remove(&rec.id);
                }
                _ => {
                    let id = rec.id.clone();
                    if let Err(e) = self.supervise(rec, 3600) {
                        report.problems.push(format!("tunnel {id}: {e}"));
                    } else {
                        report.done.push(format!("resumed tunnel {id}"));
                    }
                }
            }
        }
        report
    }

    /// An ended tunnel whose stop notice was not delivered yet: deliver it.
    fn resume_notice(&self, rec: crate::state::TunnelRecord) {
        let done = rec.end.as_ref().is_none_or(|e| e.notified);
        let cred = rec
            .credential
            .as_deref()
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        match (done, cred) {
            (false, Some(c)) => {
                let reason = rec
                    .end
                    .as_ref()
                    .map(|e| e.reason.clone())
                    .unwrap_or(support_protocol::messages::StopReason::Owner);
                lifecycle::spawn_stop_notice(
                    self.ctx.clone(),
                    rec,
                    StaticKeypair::from_secret(c),
                    reason,
                );
            }
            _ => {
                let _ = self.ctx.state.remove(&rec.id);
            }
        }
    }

    fn supervise(
        &self,
        rec: crate::state::TunnelRecord,
        stale_after_secs: u32,
    ) -> Result<(), String> {
        let id = rec.id.clone();
        let (mailbox, thread) = Supervisor::spawn(self.ctx.clone(), rec, stale_after_secs)?;
        self.lock_tunnels().insert(id, Running { mailbox, thread });
        Ok(())
    }

    fn lock_tunnels(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.tunnels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a request and starts supervising it.
    pub fn request(
        &self,
        duration_secs: Option<u32>,
        ports: Option<Vec<u16>>,
        note: &str,
    ) -> Result<Registered, String> {
        let c = &self.ctx.config;
        let duration = duration_secs.unwrap_or(c.default_duration.as_secs() as u32);
        let ports = ports.unwrap_or_else(|| c.default_ports.clone());
        let reg = lifecycle::register(&self.ctx, duration, &ports, note)?;
        self.supervise(reg.record.clone(), reg.stale_after_secs)?;
        Ok(reg)
    }

    /// Stops one tunnel (or all) and waits for the teardown. Returns what stopped.
    pub fn stop(&self, id: Option<&str>) -> Result<Vec<String>, String> {
        let targets: Vec<(String, Running)> = {
            let mut map = self.lock_tunnels();
            let ids: Vec<String> = match id {
                Some(id) => {
                    let id = resolve(id, map.keys())?;
                    vec![id]
                }
                None => map.keys().cloned().collect(),
            };
            ids.into_iter()
                .filter_map(|i| map.remove(&i).map(|r| (i, r)))
                .collect()
        };
        let mut stopped = Vec::new();
        for (id, r) in targets {
            if r.thread.is_finished() {
                continue;
            }
            r.mailbox.stop();
            let deadline = Instant::now() + STOP_WAIT;
            while !r.thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            stopped.push(id);
        }
        Ok(stopped)
    }

    /// True while any tunnel is supervised.
    pub fn any_running(&self) -> bool {
        let mut map = self.lock_tunnels();
        map.retain(|_, r| !r.thread.is_finished());
        !map.is_empty()
    }

    fn handle(&self, stream: &UnixStream, uid: u32) -> SocketResponse {
        if !self.allowed(uid) {
            return SocketResponse::error("only root and the support group may use the agent");
        }
        let req = match socket::read_request(stream) {
            Ok(r) => r,
            Err(e) => return SocketResponse::error(e),
        };
        if self.is_support_user(uid) && !matches!(req, SocketRequest::Status {}) {
            // Support users are in the group too; they may look, not act:
            // a session could otherwise grant itself a fresh tunnel.
            return SocketResponse::error(
                "a support session cannot request support or change tunnels; only the owner can",
            );
        }
        match req {
            SocketRequest::Request {
                duration_secs,
                ports,
                note,
            } => match self.request(duration_secs, ports, note.as_deref().unwrap_or("")) {
                Ok(r) => SocketResponse {
                    ok: true,
                    id: Some(r.record.id.clone()),
                    code: Some(r.code.to_string()),
                    stale_after_secs: Some(r.stale_after_secs),
                    ..SocketResponse::default()
                },
                Err(e) => SocketResponse::error(e),
            },
            SocketRequest::Status {} => SocketResponse {
                ok: true,
                tunnels: Some(self.ctx.statuses()),
                ..SocketResponse::default()
            },
            SocketRequest::Stop { id } => match self.stop(id.as_deref()) {
                Ok(done) => SocketResponse {
                    ok: true,
                    done: Some(done),
                    ..SocketResponse::default()
                },
                Err(e) => SocketResponse::error(e),
            },
            SocketRequest::Repair {} => {
                let (records, _) = self.ctx.state.records();
                let live = repair::live_ids(&self.ctx.state, &records);
                let r = repair::remove_orphans(&self.ctx, &live);
                SocketResponse {
                    ok: r.problems.is_empty(),
                    error: (!r.problems.is_empty()).then(|| r.problems.join("; ")),
                    done: Some(r.done),
                    ..SocketResponse::default()
                }
            }
        }
    }

    fn allowed(&self, uid: u32) -> bool {
        if uid == 0 {
            return true;
        }
        let Some(gid) = self.ctx.gid else {
            return false;
        };
        let Some(user) = access::users().into_iter().find(|u| u.id == uid) else {
            return false;
        };
        user.gid == gid || access::group_members(&self.ctx.config.group).contains(&user.name)
    }

    fn is_support_user(&self, uid: u32) -> bool {
        access::users()
            .iter()
            .any(|u| u.id == uid && u.info.starts_with("support-tunnel "))
    }

    /// Serves the socket until `exit_when_idle` finds no tunnel left (or forever).
    pub fn serve(self: &Arc<Self>, exit_when_idle: bool, stop: &AtomicBool) -> Result<(), String> {
        let path = self.ctx.config.socket.clone();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        // A leftover socket of a dead daemon (we hold the state lock, so it is dead).
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).map_err(|e| format!("socket {}: {e}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| format!("socket {}: {e}", path.display()))?;
        std::os::unix::fs::chown(&path, Some(0), self.ctx.gid)
            .map_err(|e| format!("socket {}: {e}", path.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("socket: {e}"))?;
        let clients = Arc::new(AtomicUsize::new(0));
        loop {
            if stop.load(Ordering::SeqCst) || (exit_when_idle && !self.any_running()) {
                let _ = std::fs::remove_file(&path);
                return Ok(());
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    let uid = rustix::net::sockopt::socket_peercred(&stream)
                        .map(|c| c.uid.as_raw())
                        .unwrap_or(u32::MAX);
                    if uid != 0 && clients.load(Ordering::SeqCst) >= MAX_CLIENTS {
                        socket::write_response(
                            &stream,
                            &SocketResponse::error("the agent is busy; try again"),
                        );
                        continue;
                    }
                    clients.fetch_add(1, Ordering::SeqCst);
                    let me = self.clone();
                    let count = clients.clone();
                    let spawned = std::thread::Builder::new()
                        .name("socket-client".into())
                        .spawn(move || {
                            let r = me.handle(&stream, uid);
                            socket::write_response(&stream, &r);
                            count.fetch_sub(1, Ordering::SeqCst);
                        });
                    if spawned.is_err() {
                        clients.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    eprintln!("support-agent: socket accept: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
}

/// Opens the state directory and takes its lock (one process runs tunnels).
pub fn open_state(config: Config) -> Result<(Arc<Ctx>, StateLock), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("this needs root (it manages the support user); or ask the daemon".into());
    }
    let state = StateDir::open(&config.state_dir)
        .map_err(|e| format!("state dir {}: {e}", config.state_dir.display()))?;
    let lock = StateLock::acquire(&state)?;
    let gid = access::ensure_group(&config.group)?;
    state
        .share_with(gid)
        .map_err(|e| format!("state dir {}: {e}", config.state_dir.display()))?;
    Ok((Ctx::new(config, state, Some(gid)), lock))
}

/// Without a daemon: ends live tunnels (`id`, or all) on the spot.
pub fn stop_offline(config: Config, id: Option<&str>) -> Result<Vec<String>, String> {
    let (ctx, _lock) = open_state(config)?;
    let (records, _) = ctx.state.records();
    let live: Vec<_> = records
        .into_iter()
        .filter(|r| r.phase != Phase::Ended && ctx.state.seed(&r.id).is_some())
        .collect();
    let ids: Vec<String> = live.iter().map(|r| r.id.clone()).collect();
    let wanted = match id {
        Some(id) => vec![resolve(id, ids.iter())?],
        None => ids,
    };
    let mut done = Vec::new();
    for mut rec in live.into_iter().filter(|r| wanted.contains(&r.id)) {
        lifecycle::end_offline(&ctx, &mut rec);
        done.push(rec.id);
    }
    Ok(done)
}

/// Without a daemon: removes what belongs to no live tunnel.
pub fn repair_offline(config: Config) -> Result<Repaired, String> {
    let (ctx, _lock) = open_state(config)?;
    let (records, unreadable) = ctx.state.records();
    let mut r = repair::remove_orphans(&ctx, &repair::live_ids(&ctx.state, &records));
    r.problems.extend(unreadable);
    Ok(r)
}

/// A full id, or a unique prefix of one.
pub fn resolve<'a>(id: &str, known: impl Iterator<Item = &'a String>) -> Result<String, String> {
    let matches: Vec<&String> = known.filter(|k| k.starts_with(id)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!("no running tunnel {id}")),
        _ => Err(format!(
            "{id} matches more than one tunnel; give more digits"
        )),
    }
}
