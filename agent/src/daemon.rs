//! The daemon: repairs, resumes live tunnels, and serves the local socket.
//! `request --wait` runs the same thing in the foreground for one tunnel.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::access::{self, AccessError};
use crate::config::Config;
use crate::journal::{debug, error, info};
use crate::lifecycle::{self, Mailbox, Registered, Supervisor};
use crate::notify::Notifier;
use crate::owner_log;
use crate::repair::{self, Repaired};
use crate::runtime::{Ctx, StatusPhase, TunnelStatus};
use crate::socket::{self, ErrorCode, Failure, Replier, SocketRequest, SocketResponse};
use crate::state::{LockError, Phase, StateDir, StateLock};

/// Socket clients served at once from the owner's group (the web UI); root
/// (the owner's CLI) is always served, so a flood cannot block the kill switch.
const MAX_OWNER_CLIENTS: usize = 8;
/// Socket clients served at once from support sessions, which have their
/// own budget: they can never take the owner's slots.
const MAX_SUPPORT_CLIENTS: usize = 2;
/// Sessions recorded at once (each holds a thread while it lasts); a
/// recorder moves from the support budget to this one.
const MAX_RECORDINGS: usize = 16;
/// How long a stop waits for the access to be removed.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// How often a `watch` with nothing to say checks that its client is still there.
const WATCH_CHECK: Duration = Duration::from_secs(5);
/// How long an answer may wait for a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Tunnels pending or connected at once. Each holds two threads, and the
/// unit allows 64 tasks: a flood of requests must not leave none for a stop.
const MAX_LIVE_TUNNELS: usize = 4;

/// Who is calling on the socket, decided before the caller takes a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    /// root: always served.
    Root,
    /// A member of the owner's group (the device's web UI).
    Owner,
    /// A support user of this device; may look at its own tunnel only.
    Support(u32),
    /// Anyone else.
    Outsider,
}

struct Running {
    mailbox: Mailbox,
    thread: JoinHandle<()>,
}

/// Why the agent cannot run tunnels or serve its socket.
#[derive(Debug)]
pub enum DaemonError {
    /// It runs as another user than root.
    NotRoot,
    /// The state directory cannot be opened or made private.
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The state directory's lock is not to be had.
    Lock(LockError),
    /// The support group cannot be made.
    Group(AccessError),
    /// The socket cannot be set up.
    Socket {
        /// The socket.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotRoot => {
                f.write_str("this needs root (it manages the support user); or ask the daemon")
            }
            Self::StateDir { path, error } => {
                write!(
                    f,
                    "cannot use the state directory {}: {error}",
                    path.display()
                )
            }
            Self::Lock(e) => write!(f, "{e}"),
            Self::Group(e) => write!(f, "cannot make the support group: {e}"),
            Self::Socket { path, error } => {
                write!(f, "cannot set up the socket {}: {error}", path.display())
            }
        }
    }
}

impl std::error::Error for DaemonError {}

/// A running agent.
pub struct Daemon {
    /// Shared context.
    pub ctx: Arc<Ctx>,
    tunnels: Mutex<HashMap<String, Running>>,
    recorders: AtomicUsize,
    _lock: StateLock,
}

impl Daemon {
    /// Takes the state lock, repairs, and resumes every live tunnel.
    pub fn start(config: Config) -> Result<Arc<Daemon>, DaemonError> {
        let (ctx, lock) = open_state(config)?;
        let daemon = Arc::new(Daemon {
            ctx,
            tunnels: Mutex::new(HashMap::new()),
            recorders: AtomicUsize::new(0),
            _lock: lock,
        });
        let group = &daemon.ctx.config.group;
        if let Some(why) = crate::group_grants::refusal(
            group,
            &crate::group_grants::group_grants(group, daemon.ctx.gid),
        ) {
            error!("support cannot be given on this device: {why}");
        }
        let report = daemon.repair_and_resume();
        for line in &report.done {
            info!("repair: {line}");
        }
        for line in &report.problems {
            error!("repair: {line}");
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
            // Every record goes back to its machine: a live one resumes, an
            // ending one finishes its teardown (hooks included), an ended
            // one delivers its stop notice.
            let (id, phase) = (rec.id.clone(), rec.phase.clone());
            match self.supervise(rec, false) {
                Err(e) => report.problems.push(format!("tunnel {id}: {e}")),
                Ok(()) => match phase {
                    Phase::Pending | Phase::Connected(_) => {
                        report.done.push(format!("resumed tunnel {id}"))
                    }
                    Phase::Ending(_) => report
                        .done
                        .push(format!("finishing the end of tunnel {id}")),
                    Phase::Ended(_) => {}
                },
            }
        }
        report
    }

    fn supervise(&self, rec: crate::state::TunnelRecord, stop_first: bool) -> Result<(), Failure> {
        let id = rec.id.clone();
        let (mailbox, thread) = spawn_supervisor(self.ctx.clone(), rec, stop_first)?;
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
    ) -> Result<Registered, Failure> {
        let live = self.live_count();
        if live >= MAX_LIVE_TUNNELS {
            return Err(Failure::new(
                ErrorCode::Busy,
                format!("{live} tunnels are already pending or open; stop one first"),
            ));
        }
        let c = &self.ctx.config;
        let duration = duration_secs.unwrap_or(c.default_duration.as_secs() as u32);
        let ports = ports.unwrap_or_else(|| c.default_ports.clone());
        let reg = lifecycle::register(&self.ctx, duration, &ports, note)?;
        self.supervise(reg.record.clone(), false)?;
        info!("tunnel {}: support requested", reg.record.id);
        Ok(reg)
    }

    /// Stops one tunnel (or all live ones) and returns once each one's
    /// access is removed; says so truthfully when it is not.
    pub fn stop(&self, id: Option<&str>) -> Result<Vec<String>, Failure> {
        let targets: Vec<(String, Mailbox)> = {
            let map = self.lock_tunnels();
            let live: Vec<&String> = map
                .iter()
                .filter(|(_, r)| !r.mailbox.has_ended())
                .map(|(k, _)| k)
                .collect();
            let ids: Vec<String> = match id {
                Some(id) => vec![resolve(id, live.into_iter())?],
                None => live.into_iter().cloned().collect(),
            };
            ids.into_iter()
                .filter_map(|i| map.get(&i).map(|r| (i, r.mailbox.clone())))
                .collect()
        };
        let mut stopped = Vec::new();
        let mut problems = Vec::new();
        for (id, mailbox) in targets {
            match mailbox.stop(STOP_WAIT) {
                Ok(()) => stopped.push(id),
                Err(e) => problems.push(format!("tunnel {id}: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(stopped)
        } else {
            Err(Failure::failed(problems.join("; ")))
        }
    }

    /// Tunnels that are live (not ended).
    fn live_count(&self) -> usize {
        self.lock_tunnels()
            .values()
            .filter(|r| !r.mailbox.has_ended())
            .count()
    }

    /// True while any tunnel is live (not ended).
    pub fn any_live(&self) -> bool {
        self.live_count() > 0
    }

    /// True while any supervisor still has work (a stop notice, say).
    pub fn any_running(&self) -> bool {
        let mut map = self.lock_tunnels();
        map.retain(|_, r| !r.thread.is_finished());
        !map.is_empty()
    }

    /// Reads one request from `stream` and answers it in the client's
    /// framing. A recorder gives its support slot back (`slot`) and takes
    /// one of the recordings' budget for as long as its session lasts.
    fn serve_client(&self, stream: &UnixStream, caller: Caller, slot: Option<&AtomicUsize>) {
        let (framing, req) = socket::read_request(stream);
        debug!("socket: {caller:?} ({framing:?}) asks {req:?}");
        // A client that stops reading cannot hold this thread and its slot.
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let mut reply = Replier::new(stream, framing);
        let owner = !matches!(caller, Caller::Support(_));
        match req {
            Err(f) => reply.answer(&SocketResponse::failure(f)),
            Ok(SocketRequest::Watch { id }) if owner => {
                self.watch(id.as_deref(), &mut reply, stream)
            }
            Ok(SocketRequest::WatchSession { id }) if owner => {
                self.watch_session(id.as_deref(), &mut reply, stream)
            }
            Ok(SocketRequest::Replay { id, session }) if owner => {
                self.replay(id.as_deref(), session, &mut reply)
            }
            Ok(SocketRequest::Record {
                kind,
                command,
                width,
                height,
                term,
            }) => {
                let Caller::Support(uid) = caller else {
                    return reply.answer(&SocketResponse::error(
                        ErrorCode::Forbidden,
                        "only a support session's recorder records",
                    ));
                };
                if let Some(s) = slot {
                    s.fetch_sub(1, Ordering::SeqCst);
                }
                if self.recorders.fetch_add(1, Ordering::SeqCst) >= MAX_RECORDINGS {
                    reply.answer(&SocketResponse::error(
                        ErrorCode::Busy,
                        format!("{MAX_RECORDINGS} sessions are being recorded already"),
                    ));
                } else {
                    let start = crate::recording::Start {
                        kind,
                        command,
                        width,
                        height,
                        term,
                    };
                    self.record(stream, &mut reply, uid, &start);
                }
                self.recorders.fetch_sub(1, Ordering::SeqCst);
                if let Some(s) = slot {
                    s.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(req) => reply.answer(&self.handle(req, caller)),
        }
    }

    /// Records one session of the support user `uid`, filed under the
    /// tunnel that user belongs to (and no other).
    fn record(
        &self,
        stream: &UnixStream,
        reply: &mut Replier<'_>,
        uid: u32,
        start: &crate::recording::Start,
    ) {
        let user = access::user_of_uid(uid);
        let tunnel = self
            .ctx
            .statuses()
            .into_iter()
            .find(|s| s.user.is_some() && s.user == user && s.phase == StatusPhase::Connected)
            .map(|s| s.id);
        let (Some(user), Some(tunnel)) = (user, tunnel) else {
            return reply.answer(&SocketResponse::error(
                ErrorCode::Forbidden,
                "no connected tunnel has this support user",
            ));
        };
        // A session may sit idle for hours; it ends when its recorder does.
        let _ = stream.set_read_timeout(None);
        let ctx = &self.ctx;
        let mut answered = false;
        let result = crate::recording::record(
            &ctx.recordings,
            &tunnel,
            &user,
            start,
            &mut &*stream,
            |session| {
                answered = true;
                reply.answer(&SocketResponse {
                    id: Some(tunnel.clone()),
                    session: Some(session),
                    record_input: Some(ctx.config.recording.input),
                    sftp_server: Some(ctx.config.recording.sftp_server.display().to_string()),
                    ..SocketResponse::default()
                });
                log_session(
                    ctx,
                    &tunnel,
                    owner_log::Entry::SessionStarted {
                        session,
                        kind: start.kind.name().into(),
                        command: start.command.clone().unwrap_or_default(),
                    },
                );
            },
        );
        match result {
            Ok(summary) => log_session(ctx, &tunnel, owner_log::Entry::SessionEnded(summary)),
            Err(e) => {
                error!("tunnel {tunnel}: cannot record a session: {e}");
                if !answered {
                    reply.answer(&SocketResponse::error(
                        ErrorCode::Failed,
                        format!("the agent cannot write the recording: {e}"),
                    ));
                }
            }
        }
    }

    /// A tunnel with an owner log: `id` (a unique prefix), or the newest.
    fn logged_tunnel(&self, id: Option<&str>) -> Result<String, Failure> {
        let known = self.ctx.state.logged_tunnels();
        match id {
            Some(p) => resolve(p, known.iter()),
            None => known
                .last()
                .cloned()
                .ok_or_else(|| Failure::new(ErrorCode::NotFound, "this device has no tunnels")),
        }
    }

    /// Streams one recording's lines.
    fn replay(&self, id: Option<&str>, session: u32, reply: &mut Replier<'_>) {
        let tunnel = match self.logged_tunnel(id) {
            Ok(t) => t,
            Err(f) => return reply.answer(&SocketResponse::failure(f)),
        };
        let file = match crate::recording::open(self.ctx.recordings.root(), &tunnel, session) {
            Ok(f) => f,
            Err(e) => {
                let code = match e {
                    crate::recording::ReadError::NotFound(_) => ErrorCode::NotFound,
                    crate::recording::ReadError::Io(_) => ErrorCode::Failed,
                };
                return reply.answer(&SocketResponse::error(code, e.to_string()));
            }
        };
        for line in BufReader::new(file).lines() {
            match line {
                Ok(l) if reply.raw_line(&l) => {}
                _ => return,
            }
        }
    }

    /// The tunnel a watch follows: the one `id` names (a prefix will do),
    /// else the newest live one.
    fn watched(&self, id: Option<&str>) -> Result<String, Failure> {
        let statuses = self.ctx.statuses();
        match id {
            Some(p) => resolve(p, statuses.iter().map(|s| &s.id)),
            None => statuses
                .iter()
                .rev()
                .filter(|s| s.phase != StatusPhase::Ended)
                .max_by_key(|s| s.requested_at)
                .map(|s| s.id.clone())
                .ok_or_else(|| Failure::new(ErrorCode::NotFound, "no live tunnel to watch")),
        }
    }

    /// Streams a tunnel's live sessions as they are recorded, each from its
    /// start, until the tunnel has ended or the client leaves.
    fn watch_session(&self, id: Option<&str>, reply: &mut Replier<'_>, stream: &UnixStream) {
        let tunnel = match self.watched(id) {
            Ok(t) => t,
            Err(f) => return reply.answer(&SocketResponse::failure(f)),
        };
        let recordings = &self.ctx.recordings;
        let mut followed: Vec<u32> = Vec::new();
        loop {
            if let Some(n) = recordings.live_session(&tunnel, &followed) {
                let gone = || client_gone(stream);
                if !recordings.follow(&tunnel, n, |l| reply.raw_line(l), gone) {
                    return;
                }
                followed.push(n);
                continue;
            }
            let ended = self
                .ctx
                .statuses()
                .iter()
                .find(|s| s.id == tunnel)
                .is_none_or(|s| s.phase == StatusPhase::Ended);
            if ended || client_gone(stream) {
                return;
            }
            recordings.wait(WATCH_CHECK);
        }
    }

    /// Streams one tunnel's status: now, then at each change, until it has ended.
    fn watch(&self, id: Option<&str>, reply: &mut Replier<'_>, stream: &UnixStream) {
        let id = match self.watched(id) {
            Ok(id) => id,
            Err(f) => return reply.answer(&SocketResponse::failure(f)),
        };
        let mut last: Option<TunnelStatus> = None;
        let mut seen = self.ctx.generation();
        loop {
            let Some(now) = self.ctx.statuses().into_iter().find(|s| s.id == id) else {
                return reply.answer(&SocketResponse::error(
                    ErrorCode::NotFound,
                    format!("tunnel {id} is no longer known"),
                ));
            };
            if let Some(s) = Some(now).filter(|s| Some(s) != last.as_ref()) {
                let ended = s.phase == StatusPhase::Ended;
                let line = SocketResponse {
                    id: Some(id.clone()),
                    tunnel: Some(s.clone()),
                    ..SocketResponse::default()
                };
                if !reply.stream_line(&line) || ended {
                    return;
                }
                last = Some(s);
            }
            seen = self.ctx.wait_change(seen, WATCH_CHECK);
            if client_gone(stream) {
                return;
            }
        }
    }

    fn handle(&self, req: SocketRequest, caller: Caller) -> SocketResponse {
        if let Caller::Support(uid) = caller {
            // Support users are in the group too; they may look at their own
            // tunnel, not act, and not read the owner's records: a session
            // could otherwise grant itself a fresh tunnel.
            return match req {
                SocketRequest::Status {} => SocketResponse {
                    tunnels: Some(
                        self.ctx
                            .statuses()
                            .into_iter()
                            .filter(|s| s.user.is_some() && s.user == access::user_of_uid(uid))
                            .collect(),
                    ),
                    ..SocketResponse::default()
                },
                _ => SocketResponse::error(
                    ErrorCode::Forbidden,
                    "a support session cannot request support, change tunnels or read the owner's records or recordings; only the owner can",
                ),
            };
        }
        match req {
            SocketRequest::Request {
                duration_secs,
                ports,
                note,
            } => match self.request(duration_secs, ports, note.as_deref().unwrap_or("")) {
                Ok(r) => SocketResponse {
                    id: Some(r.record.id.clone()),
                    code: Some(r.code.to_string()),
                    stale_after_secs: Some(r.stale_after_secs),
                    stale_at: Some(r.stale_at()),
                    ..SocketResponse::default()
                },
                Err(e) => SocketResponse::failure(e),
            },
            SocketRequest::Status {} => SocketResponse {
                tunnels: Some(self.ctx.statuses()),
                ..SocketResponse::default()
            },
            SocketRequest::Log { id } => {
                match owner_log::read_tunnel(&self.ctx.state, id.as_deref()) {
                    Ok((id, lines)) => SocketResponse {
                        recordings: Some(self.ctx.recordings.listed(&id)),
                        id: Some(id),
                        log: Some(lines),
                        ..SocketResponse::default()
                    },
                    Err(f) => SocketResponse::failure(f),
                }
            }
            SocketRequest::List {} => SocketResponse {
                list: Some(owner_log::list(&self.ctx.state)),
                ..SocketResponse::default()
            },
            SocketRequest::Stop { id } => match self.stop(id.as_deref()) {
                Ok(done) => SocketResponse {
                    done: Some(done),
                    ..SocketResponse::default()
                },
                Err(e) => SocketResponse::failure(e),
            },
            SocketRequest::Repair {} => {
                let (records, _) = self.ctx.state.records();
                let live = repair::live_ids(&self.ctx.state, &records);
                let r = repair::remove_orphans(&self.ctx, &live);
                let mut answer = match r.problems.is_empty() {
                    true => SocketResponse::default(),
                    false => SocketResponse::error(ErrorCode::Failed, r.problems.join("; ")),
                };
                answer.done = Some(r.done);
                answer
            }
            SocketRequest::Recordings { id } => match self.logged_tunnel(id.as_deref()) {
                Ok(id) => SocketResponse {
                    recordings: Some(self.ctx.recordings.listed(&id)),
                    id: Some(id),
                    ..SocketResponse::default()
                },
                Err(f) => SocketResponse::failure(f),
            },
            SocketRequest::Watch { .. }
            | SocketRequest::WatchSession { .. }
            | SocketRequest::Replay { .. }
            | SocketRequest::Record { .. } => SocketResponse::error(
                ErrorCode::Forbidden,
                "a support session cannot watch tunnels",
            ),
        }
    }

    /// Who `uid` is, from /etc/passwd and /etc/group.
    fn classify(&self, uid: u32) -> Caller {
        if uid == 0 {
            return Caller::Root;
        }
        let Some(gid) = self.ctx.gid else {
            return Caller::Outsider;
        };
        let Some(user) = access::users().into_iter().find(|u| u.id == uid) else {
            return Caller::Outsider;
        };
        if user.info.starts_with("support-tunnel ") {
            return Caller::Support(uid);
        }
        if user.gid == gid || access::group_members(&self.ctx.config.group).contains(&user.name) {
            Caller::Owner
        } else {
            Caller::Outsider
        }
    }

    /// Serves the socket until `exit_when_idle` finds no tunnel left (or forever).
    pub fn serve(
        self: &Arc<Self>,
        exit_when_idle: bool,
        stop: &AtomicBool,
    ) -> Result<(), DaemonError> {
        let path = self.ctx.config.socket.clone();
        let socket_error = |error| DaemonError::Socket {
            path: path.clone(),
            error,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(socket_error)?;
        }
        // A leftover socket of a dead daemon (we hold the state lock, so it is dead).
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(socket_error)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
            .map_err(socket_error)?;
        std::os::unix::fs::chown(&path, Some(0), self.ctx.gid).map_err(socket_error)?;
        listener.set_nonblocking(true).map_err(socket_error)?;
        let owner_clients = Arc::new(AtomicUsize::new(0));
        let support_clients = Arc::new(AtomicUsize::new(0));
        let mut systemd = Notifier::from_env();
        if let Some(n) = &systemd {
            n.ready(self.ctx.clone());
        }
        info!("listening on {}", path.display());
        loop {
            if let Some(n) = &mut systemd {
                n.watchdog();
            }
            if stop.load(Ordering::SeqCst) || (exit_when_idle && !self.any_live()) {
                if let Some(n) = &systemd {
                    n.stopping();
                }
                let _ = std::fs::remove_file(&path);
                return Ok(());
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    let uid = rustix::net::sockopt::socket_peercred(&stream)
                        .map(|c| c.uid.as_raw())
                        .unwrap_or(u32::MAX);
                    // Classified before it takes a slot: each kind of caller
                    // has its own budget, and root needs none.
                    let caller = self.classify(uid);
                    let (budget, limit) = match caller {
                        Caller::Root => (None, 0),
                        Caller::Owner => (Some(owner_clients.clone()), MAX_OWNER_CLIENTS),
                        Caller::Support(_) => (Some(support_clients.clone()), MAX_SUPPORT_CLIENTS),
                        Caller::Outsider => {
                            refuse(
                                &stream,
                                ErrorCode::Forbidden,
                                "only root and the support group may use the agent",
                            );
                            continue;
                        }
                    };
                    if let Some(b) = &budget {
                        if b.load(Ordering::SeqCst) >= limit {
                            refuse(&stream, ErrorCode::Busy, "the agent is busy; try again");
                            continue;
                        }
                        b.fetch_add(1, Ordering::SeqCst);
                    }
                    let me = self.clone();
                    let count = budget.clone();
                    let spawned = std::thread::Builder::new()
                        .name("socket-client".into())
                        .spawn(move || {
                            me.serve_client(&stream, caller, count.as_deref());
                            if let Some(c) = count {
                                c.fetch_sub(1, Ordering::SeqCst);
                            }
                        });
                    if let (Err(_), Some(b)) = (spawned, budget) {
                        b.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    error!("socket accept: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
}

/// A session's start or end: in the owner's log, and in the journal.
fn log_session(ctx: &Ctx, tunnel: &str, entry: owner_log::Entry) {
    info!("tunnel {tunnel}: {}", entry.describe());
    ctx.log(tunnel, entry);
}

/// Answers a caller who is not served, in a line a JSON-lines client reads.
/// (Refused before its request is read: an HTTP client sees the line as a
/// malformed response and fails, which is what it should do.)
fn refuse(stream: &UnixStream, code: ErrorCode, text: &str) {
    Replier::new(stream, socket::Framing::Line).answer(&SocketResponse::error(code, text));
}

/// Starts supervising `rec` (see [`Supervisor::spawn`]).
fn spawn_supervisor(
    ctx: Arc<Ctx>,
    rec: crate::state::TunnelRecord,
    stop_first: bool,
) -> Result<(Mailbox, JoinHandle<()>), Failure> {
    Supervisor::spawn(ctx, rec, stop_first)
        .map_err(|e| Failure::failed(format!("cannot start a supervisor thread: {e}")))
}

/// Opens the state directory and takes its lock (one process runs tunnels).
pub fn open_state(config: Config) -> Result<(Arc<Ctx>, StateLock), DaemonError> {
    if !rustix::process::geteuid().is_root() {
        return Err(DaemonError::NotRoot);
    }
    let state_error = |error| DaemonError::StateDir {
        path: config.state_dir.clone(),
        error,
    };
    let state = StateDir::open(&config.state_dir).map_err(state_error)?;
    let lock = StateLock::acquire(&state).map_err(DaemonError::Lock)?;
    let gid = access::ensure_group(&config.group).map_err(DaemonError::Group)?;
    // Older versions let the group read the logs and the status; close that.
    state.make_private().map_err(state_error)?;
    Ok((Ctx::new(config, state, Some(gid)), lock))
}

/// Without a daemon: ends live tunnels (`id`, or all) on the spot, and
/// finishes any teardown a crash interrupted. Each end runs the same
/// machine as in the daemon; the stop notice gets a few seconds, and if it
/// does not get through the record keeps it for the daemon's next start.
pub fn stop_offline(config: Config, id: Option<&str>) -> Result<Vec<String>, Failure> {
    let (ctx, _lock) = open_state(config).map_err(|e| Failure::failed(e.to_string()))?;
    let (records, _) = ctx.state.records();
    let targets: Vec<_> = records
        .into_iter()
        .filter(|r| r.is_live() || matches!(r.phase, Phase::Ending(_)))
        .collect();
    let ids: Vec<String> = targets.iter().map(|r| r.id.clone()).collect();
    let wanted = match id {
        Some(id) => vec![resolve(id, ids.iter())?],
        None => ids,
    };
    let mut done = Vec::new();
    let mut problems = Vec::new();
    let mut threads = Vec::new();
    for rec in targets.into_iter().filter(|r| wanted.contains(&r.id)) {
        let id = rec.id.clone();
        let (mailbox, thread) = spawn_supervisor(ctx.clone(), rec, true)?;
        match mailbox.stop(STOP_WAIT) {
            Ok(()) => done.push(id),
            Err(e) => problems.push(format!("tunnel {id}: {e}")),
        }
        threads.push(thread);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if problems.is_empty() {
        Ok(done)
    } else {
        Err(Failure::failed(problems.join("; ")))
    }
}

/// Without a daemon: removes what belongs to no live tunnel.
pub fn repair_offline(config: Config) -> Result<Repaired, DaemonError> {
    let (ctx, _lock) = open_state(config)?;
    let (records, unreadable) = ctx.state.records();
    let mut r = repair::remove_orphans(&ctx, &repair::live_ids(&ctx.state, &records));
    r.problems.extend(unreadable);
    Ok(r)
}

/// A full id, or a unique prefix of one.
pub fn resolve<'a>(id: &str, known: impl Iterator<Item = &'a String>) -> Result<String, Failure> {
    let matches: Vec<&String> = known.filter(|k| k.starts_with(id)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Failure::new(
            ErrorCode::NotFound,
            format!("no running tunnel {id}"),
        )),
        _ => Err(Failure::new(
            ErrorCode::Ambiguous,
            format!("{id} matches more than one tunnel; give more digits"),
        )),
    }
}

/// True once the client at the other end of `stream` has closed it. A
/// Unix stream socket reports POLLHUP only when the peer has closed both
/// ways, so a client that merely half-closes (`socat`) keeps its watch, and
/// bytes it sent after its request do not hide its leaving.
fn client_gone(stream: &UnixStream) -> bool {
    use rustix::event::{PollFd, PollFlags};
    let mut fds = [PollFd::new(stream, PollFlags::empty())];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match rustix::event::poll(&mut fds, Some(&zero)) {
        Ok(_) => fds[0]
            .revents()
            .intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL),
        Err(_) => true,
    }
}
