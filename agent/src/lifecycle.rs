//! The driver of one tunnel's life: it registers the request, then runs
//! the pure state machine (`machine`) on a supervisor thread and carries
//! out its actions: control-plane calls, the support access, hooks, the
//! tunnel peer, the record and the owner's log.
//!
//! Control-plane traffic runs on helper threads (one attempt each; the
//! machine decides about retries), so a stop never waits for a long poll.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support_protocol::bounded::{BoundedString, BoundedVec, FixedBytes};
use support_protocol::connected_report::ConnectedReport;
use support_protocol::control_channel::StaticKeypair;
use support_protocol::messages::device::{ConnectedNotice, PollRequest, StoppedNotice};
use support_protocol::messages::{
    DeviceFacts, DeviceRequest, DeviceResponse, ErrorCode, TunnelRequest,
};
use support_protocol::one_time_code::OneTimeCode;
use support_protocol::state::TunnelState;
use support_protocol::tunnel_keys::DeviceTunnelKeys;
use support_protocol::ApprovalSeq;
use support_tunnel::{Engine, EngineHandle, Event};
use zeroize::Zeroizing;

use crate::access::{self, Grant};
use crate::config::pending_window_secs;
use crate::control::{Backoff, CallError};
use crate::group_grants;
use crate::hooks::{self, HookStage};
use crate::journal::{debug, error};
use crate::machine::{Action, Answer, Input, Machine};
use crate::owner_log::Entry;
use crate::runtime::Ctx;
use crate::socket::{ErrorCode as SocketError, Failure};
use crate::state::{Phase, TunnelRecord};
use crate::util::{bounded, random, wall_now};

/// How long the control plane may hold a poll.
const POLL_WAIT_SECS: u16 = 25;
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Peer events logged per second at most; the rest are counted.
const PEER_EVENTS_PER_SEC: u32 = 20;

/// What a supervisor reacts to.
pub enum Msg {
    /// The owner (or the local socket) stops the tunnel.
    Stop,
    /// A poll answered (or failed).
    Poll(Result<DeviceResponse, CallError>),
    /// The connected report was answered.
    Connected(Answer),
    /// The stop notice was answered.
    Stopped(Answer),
    /// The peer reported something.
    Peer(Event),
    /// Peer events were dropped instead of logged (a connection flood).
    PeerEventsDropped(u64),
}

/// What the owner's stop learns: whether the access is gone.
#[derive(Default)]
struct Gone {
    result: Mutex<Option<Result<(), String>>>,
    signal: Condvar,
}

/// Why the owner's stop could not confirm that the support access is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopError {
    /// Removing the access failed (the machine's account of why).
    NotRemoved(String),
    /// The teardown had not finished when the stop stopped waiting.
    StillRunning {
        /// How long the stop waited.
        waited: Duration,
    },
}

impl std::fmt::Display for StopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotRemoved(why) => f.write_str(why),
            Self::StillRunning { waited } => write!(
                f,
                "the teardown is still running after {} s; the access may still exist",
                waited.as_secs()
            ),
        }
    }
}

impl std::error::Error for StopError {}

/// A supervisor's mailbox. A stop also raises a flag the supervisor checks
/// before anything else, so it never waits behind queued events.
#[derive(Clone)]
pub struct Mailbox {
    tx: Sender<Msg>,
    stop: Arc<AtomicBool>,
    gone: Arc<Gone>,
    ended: Arc<AtomicBool>,
}

impl Mailbox {
    /// The owner's stop: returns once the support access is gone (or could
    /// not be removed), or says the teardown is still running after `wait`.
    pub fn stop(&self, wait: Duration) -> Result<(), StopError> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Msg::Stop);
        let deadline = Instant::now() + wait;
        let mut r = self.gone.result.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(done) = r.as_ref() {
                return done.clone().map_err(StopError::NotRemoved);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StopError::StillRunning { waited: wait });
            }
            r = self
                .gone
                .signal
                .wait_timeout(r, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// True once the tunnel has ended (its stop notice may still be due).
    pub fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
}

/// A newly registered tunnel.
pub struct Registered {
    /// Its record (saved).
    pub record: TunnelRecord,
    /// The code to show the owner. Shown, never logged.
    pub code: Zeroizing<String>,
    /// Seconds until the request goes stale.
    pub stale_after_secs: u32,
}

impl Registered {
    /// When the request goes stale (wall clock).
    pub fn stale_at(&self) -> u64 {
        self.record.requested_at + u64::from(self.stale_after_secs)
    }
}

/// Registers a request with the control plane. The record is saved before
/// the call (so a crash leaves nothing unknown) and removed if it fails.
pub fn register(
    ctx: &Ctx,
    duration_secs: u32,
    ports: &[u16],
    note: &str,
) -> Result<Registered, Failure> {
    let c = &ctx.config;
    let bad = |text: String| Failure::new(SocketError::BadRequest, text);
    if let Some(why) =
        group_grants::refusal(&c.group, &group_grants::group_grants(&c.group, ctx.gid))
    {
        return Err(Failure::failed(why));
    }
    if duration_secs == 0 || duration_secs > c.max_duration_secs() {
        return Err(bad(format!(
            "a duration of {} is not allowed here (at most {})",
            crate::util::format_duration(u64::from(duration_secs)),
            crate::util::format_duration(u64::from(c.max_duration_secs()))
        )));
    }
    if let Some(p) = ports.iter().find(|p| !c.ports.contains_key(p)) {
        return Err(bad(format!(
            "port {p} is not in this device's allowlist (allowed: {:?})",
            c.allowed_ports()
        )));
    }
    let note = BoundedString::<256>::new(note)
        .map_err(|e| bad(format!("the note cannot be used: {e}")))?;
    let ports_b = BoundedVec::try_from(ports).map_err(|e| bad(format!("too many ports: {e}")))?;
    let keys = DeviceTunnelKeys::from_seed(random());
    let window = pending_window_secs(c);
    let request = TunnelRequest::new(&keys, device_facts(), duration_secs, ports_b, note.clone())
        .with_pending_window(&keys, window);
    let id = keys.tunnel_id().to_string();
    let mut record = TunnelRecord {
        id: id.clone(),
        duration_secs,
        ports: ports.to_vec(),
        note: note.as_str().to_string(),
        requested_at: wall_now(),
        pending_window_secs: window,
        phase: Phase::Pending,
    };
    ctx.state
        .save_seed(&id, keys.seed())
        .and_then(|()| ctx.state.save(&record))
        .map_err(|e| Failure::failed(format!("cannot save the request: {e}")))?;
    let created = ctx.cp.call(
        &keys.credential(),
        DeviceRequest::Create(Box::new(request)),
        CALL_TIMEOUT,
    );
    let stale_after_secs = match created {
        Ok(DeviceResponse::Created {
            tunnel_id,
            stale_after_secs,
        }) if tunnel_id == keys.tunnel_id() => stale_after_secs.min(window),
        other => {
            let _ = ctx.state.remove(&id);
            return Err(Failure::new(
                SocketError::ControlPlane,
                match other {
                    Err(e) => e.to_string(),
                    Ok(r) => format!("the control plane answered the request with {r:?}"),
                },
            ));
        }
    };
    if stale_after_secs < window {
        // The control plane keeps it for less: the device follows.
        record.pending_window_secs = stale_after_secs;
        let _ = ctx.state.save(&record);
    }
    ctx.log(
        &id,
        Entry::Requested {
            duration_secs,
            ports: ports.to_vec(),
            note: record.note.clone(),
        },
    );
    let code = OneTimeCode {
        tunnel_id: keys.tunnel_id(),
        secret: keys.one_time_secret(),
    }
    .to_display_string();
    Ok(Registered {
        record,
        code,
        stale_after_secs,
    })
}

fn first_line(path: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let l = s
        .lines()
        .next()?
        .trim_matches(char::from(0))
        .trim()
        .to_string();
    (!l.is_empty()).then_some(l)
}

/// Hostname, model, firmware, agent version: what support sees (and the tag covers).
fn device_facts() -> DeviceFacts {
    let firmware = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    DeviceFacts {
        hostname: bounded(
            &first_line("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".into()),
        ),
        model: bounded(
            &first_line("/proc/device-tree/model")
                .or_else(|| first_line("/sys/class/dmi/id/product_name"))
                .unwrap_or_else(|| "unknown".into()),
        ),
        firmware: bounded(&firmware),
        agent_version: bounded(env!("CARGO_PKG_VERSION")),
    }
}

/// A running tunnel peer.
struct Peer {
    engine: EngineHandle,
    thread: JoinHandle<std::io::Result<()>>,
}

/// Supervises one tunnel: runs its machine and carries out the actions.
pub struct Supervisor {
    ctx: Arc<Ctx>,
    machine: Machine,
    keys: Option<DeviceTunnelKeys>,
    credential: Option<StaticKeypair>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    stop_requested: Arc<AtomicBool>,
    stop_poll: Arc<AtomicBool>,
    polling: bool,
    known: Arc<Mutex<TunnelState>>,
    peer: Option<Peer>,
    gone: Arc<Gone>,
    ended: Arc<AtomicBool>,
}

impl Supervisor {
    /// Starts supervising `rec` on a new thread; returns its mailbox. With
    /// `stop_first`, the owner's stop is handled before anything else (the
    /// CLI's stop when no daemon runs). Fails only if the thread cannot start.
    pub fn spawn(
        ctx: Arc<Ctx>,
        rec: TunnelRecord,
        stop_first: bool,
    ) -> std::io::Result<(Mailbox, JoinHandle<()>)> {
        let seed = ctx.state.seed(&rec.id);
        let keys = seed.as_ref().map(|s| DeviceTunnelKeys::from_seed(**s));
        // Once the seed is wiped, the record keeps the credential for the stop notice.
        let kept = match &rec.phase {
            Phase::Ended(note) => note.credential.as_deref(),
            Phase::Ending(e) => e.credential.as_deref(),
            _ => None,
        };
        let credential = keys.as_ref().map(|k| k.credential()).or_else(|| {
            kept.and_then(|h| hex::decode(h).ok())
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(StaticKeypair::from_secret)
        });
        let known = match &rec.phase {
            Phase::Connected(l) if l.reported_connected => {
                TunnelState::Connected(ApprovalSeq(l.accepted_seq))
            }
            _ => TunnelState::Pending,
        };
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        let mut machine = Machine::new(
            rec,
            seed.as_ref().map(|s| DeviceTunnelKeys::from_seed(**s)),
            ctx.config.clone(),
            now,
            wall_now(),
            ctx.state.time_floor(),
            u64::from_le_bytes(random()),
        );
        if stop_first {
            machine.handle(now, wall_now(), Input::OwnerStop);
        }
        // Published before the caller learns the id, so a `watch` or
        // `status` right after a `request` finds the tunnel.
        let status = machine.status();
        ctx.update(&status.id.clone(), |s| *s = status);
        let mailbox = Mailbox {
            tx: tx.clone(),
            stop: Arc::new(AtomicBool::new(stop_first)),
            gone: Arc::new(Gone::default()),
            ended: Arc::new(AtomicBool::new(false)),
        };
        let mut sup = Supervisor {
            ctx,
            machine,
            keys,
            credential,
            tx,
            rx,
            stop_requested: mailbox.stop.clone(),
            stop_poll: Arc::new(AtomicBool::new(false)),
            polling: false,
            known: Arc::new(Mutex::new(known)),
            peer: None,
            gone: mailbox.gone.clone(),
            ended: mailbox.ended.clone(),
        };
        let id = sup.machine.record().id.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tunnel-{}", &id[..8.min(id.len())]))
            .spawn(move || sup.run())?;
        Ok((mailbox, thread))
    }

    fn id(&self) -> String {
        self.machine.record().id.clone()
    }

    fn run(&mut self) {
        let mut stop_seen = self.stop_requested.load(Ordering::SeqCst);
        self.drive();
        if self.machine.record().is_live() {
            self.start_poller();
        }
        while !self.machine.is_finished() {
            let wait = self
                .machine
                .poll_timeout()
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600));
            let msg = self.rx.recv_timeout(wait);
            let (now, wall) = (Instant::now(), wall_now());
            if !stop_seen && self.stop_requested.load(Ordering::SeqCst) {
                stop_seen = true;
                self.machine.handle(now, wall, Input::OwnerStop);
                self.drive();
            }
            match msg {
                Ok(Msg::Stop) => {
                    // Handled through the flag (first, and once); a later stop
                    // of an ended tunnel is answered at once.
                    if self.machine.has_ended() {
                        self.machine.handle(now, wall, Input::OwnerStop);
                    }
                }
                Ok(Msg::Poll(r)) => {
                    let input = self.poll_input(r);
                    self.machine.handle(now, wall, input);
                }
                Ok(Msg::Connected(a)) => self.machine.handle(now, wall, Input::ConnectedAnswer(a)),
                Ok(Msg::Stopped(a)) => self.machine.handle(now, wall, Input::StoppedAnswer(a)),
                Ok(Msg::Peer(ev)) => self.log(peer_entry(ev)),
                Ok(Msg::PeerEventsDropped(n)) => self.log(Entry::Problem {
                    what: format!("{n} connection events not logged (too many at once)"),
                }),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.machine.handle_timeout(Instant::now(), wall_now());
            self.drive();
        }
        self.stop_poll.store(true, Ordering::SeqCst);
        if let Some(p) = self.peer.take() {
            p.engine.shutdown();
            let _ = p.thread.join();
        }
        self.ended.store(true, Ordering::SeqCst);
    }

    fn poll_input(&self, r: Result<DeviceResponse, CallError>) -> Input {
        match &r {
            Ok(DeviceResponse::Poll { state, approval }) => debug!(
                "tunnel {}: poll answered: {state:?}{}",
                self.id(),
                if approval.is_some() {
                    ", with an approval"
                } else {
                    ""
                }
            ),
            Ok(_) => {}
            Err(e) => debug!("tunnel {}: poll failed: {e}", self.id()),
        }
        match r {
            Ok(DeviceResponse::Poll { state, approval }) => Input::Polled {
                state,
                approval,
                time_floor: self.ctx.state.time_floor(),
            },
            Ok(other) => Input::PollFailed(Answer::Retry(format!(
                "the control plane answered a poll with {other:?}"
            ))),
            Err(e) => Input::PollFailed(answer_of(Err(e))),
        }
    }

    /// Carries out the machine's actions until it has none, feeding back
    /// the results it waits for; then publishes its status.
    fn drive(&mut self) {
        while let Some(action) = self.machine.poll_action() {
            if let Some(input) = self.execute(action) {
                self.machine.handle(Instant::now(), wall_now(), input);
            }
        }
        if self.machine.has_ended() {
            self.ended.store(true, Ordering::SeqCst);
        }
        let status = self.machine.status();
        self.ctx.update(&status.id.clone(), |s| *s = status);
    }

    fn log(&self, entry: Entry) {
        journal_echo(&self.id(), &entry);
        self.ctx.log(&self.id(), entry);
    }

    fn grant(&self, admin_ssh: &[u8; 32], expiry_wall: u64) -> Option<Grant<'_>> {
        Some(Grant {
            tunnel: self.machine.record().tunnel_id()?,
            instance: &self.ctx.instance,
            admin_ssh_key: *admin_ssh,
            expiry_wall,
        })
    }

    fn execute(&mut self, action: Action) -> Option<Input> {
        let id = self.id();
        match action {
            Action::Save(record) => {
                if let Err(e) = self.ctx.state.save(&record) {
                    error!("tunnel {id}: cannot save its record: {e}");
                }
            }
            Action::RaiseTimeFloor(t) => {
                if let Err(e) = self.ctx.state.raise_time_floor(t) {
                    error!("cannot save the time floor: {e}");
                }
            }
            Action::Log(entry) => self.log(entry),
            Action::RunHook(stage, values) => {
                let r = hooks::run(stage, stage.script(&self.ctx.config.hooks), &values)
                    .map_err(|e| e.to_string());
                if stage == HookStage::PreUp {
                    return Some(Input::PreUpDone(r));
                }
                if let Err(what) = r {
                    self.log(Entry::Problem { what });
                }
            }
            Action::CreateAccess {
                admin_ssh,
                expiry_wall,
            } => {
                let group = &self.ctx.config.group;
                let grants = group_grants::group_grants(group, self.ctx.gid);
                let r = match (
                    group_grants::refusal(group, &grants),
                    self.grant(&admin_ssh, expiry_wall),
                ) {
                    (Some(why), _) => Err(why),
                    (None, Some(g)) => access::create(&self.ctx.config, &self.ctx.state, &g)
                        .map(|sessions| self.log(Entry::recording(&sessions)))
                        .map_err(|e| format!("cannot create the support access: {e}")),
                    (None, None) => Err("the tunnel id is unreadable".into()),
                };
                if let Err(e) = &r {
                    error!("tunnel {id}: {e}");
                }
                return Some(Input::AccessCreated(r));
            }
            Action::RewriteExpiry {
                admin_ssh,
                expiry_wall,
            } => {
                let what = match self.grant(&admin_ssh, expiry_wall) {
                    Some(g) => match access::create(&self.ctx.config, &self.ctx.state, &g) {
                        Ok(_) => "the wall clock jumped; the key's and sudo's expiry follow the time left".into(),
                        Err(e) => format!("cannot rewrite the access's expiry: {e}"),
                    },
                    None => "the tunnel id is unreadable".into(),
                };
                self.log(Entry::Problem { what });
            }
            Action::StartPeer(config) => {
                let (events_tx, events_rx) = mpsc::channel::<Event>();
                let mailbox = self.tx.clone();
                let _ = std::thread::Builder::new()
                    .name("peer-events".into())
                    .spawn(move || forward_peer_events(events_rx, mailbox));
                return Some(Input::PeerStarted(
                    match Engine::spawn(*config, Some(events_tx)) {
                        Ok((engine, thread)) => {
                            self.peer = Some(Peer { engine, thread });
                            Ok(())
                        }
                        Err(e) => Err(format!("cannot start the tunnel peer: {e}")),
                    },
                ));
            }
            Action::SendConnected { seq, box_hash } => self.send_connected(seq, box_hash),
            Action::StopPolling => self.stop_poll.store(true, Ordering::SeqCst),
            Action::CutNetwork => {
                if let Some(p) = &self.peer {
                    p.engine.shutdown();
                }
            }
            Action::RemoveAccess => {
                let r = match self.machine.record().tunnel_id() {
                    Some(t) => access::remove(&self.ctx.config, &access::user_name(t))
                        .map_err(|e| e.to_string()),
                    None => Err("the tunnel id is unreadable".into()),
                };
                if let Err(e) = &r {
                    error!("tunnel {id}: {e}");
                }
                return Some(Input::AccessRemoved(r));
            }
            Action::AccessGone(r) => {
                let mut slot = self.gone.result.lock().unwrap_or_else(|p| p.into_inner());
                *slot = Some(r);
                self.gone.signal.notify_all();
            }
            Action::WipeSeed => {
                if let Err(e) = self.ctx.state.wipe_seed(&id) {
                    error!("tunnel {id}: cannot wipe its seed: {e}");
                }
            }
            Action::SendStopped(reason) => {
                let Some(tunnel_id) = self.machine.record().tunnel_id() else {
                    return Some(Input::StoppedAnswer(Answer::Accepted));
                };
                self.call_in_background(
                    DeviceRequest::Stopped(StoppedNotice { tunnel_id, reason }),
                    Msg::Stopped,
                );
            }
            Action::RemoveRecord => {
                let _ = self.ctx.state.remove(&id);
            }
            Action::Finished => {}
        }
        None
    }

    /// One attempt at a call on a helper thread; the answer comes back as a message.
    fn call_in_background(&self, req: DeviceRequest, wrap: fn(Answer) -> Msg) {
        let Some(cred) = self.credential.clone() else {
            let _ = self.tx.send(wrap(Answer::Refused {
                text: "the tunnel's credential is gone".into(),
                gone: false,
            }));
            return;
        };
        let ctx = self.ctx.clone();
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name("control-call".into())
            .spawn(move || {
                let _ = tx.send(wrap(answer_of(ctx.cp.call(&cred, req, CALL_TIMEOUT))));
            });
        if spawned.is_err() {
            let _ = self
                .tx
                .send(wrap(Answer::Retry("cannot start a thread".into())));
        }
    }

    /// The sealed connected report: the accepted box's hash and sshd's host keys.
    fn send_connected(&self, seq: ApprovalSeq, box_hash: [u8; 32]) {
        let Some(keys) = &self.keys else { return };
        let host_keys: Vec<BoundedString<1024>> = access::host_keys(&self.ctx.config)
            .iter()
            .filter_map(|k| BoundedString::new(k).ok())
            .take(support_protocol::connected_report::MAX_HOST_KEYS)
            .collect();
        let report = ConnectedReport {
            accepted_box: FixedBytes(box_hash),
            host_keys: BoundedVec::new(host_keys).unwrap_or_default(),
        };
        match report.seal(keys.tunnel_id(), seq, &keys.one_time_secret(), random()) {
            Ok(report) => self.call_in_background(
                DeviceRequest::Connected(ConnectedNotice {
                    tunnel_id: keys.tunnel_id(),
                    approval_seq: seq,
                    report,
                }),
                Msg::Connected,
            ),
            Err(e) => {
                let _ = self.tx.send(Msg::Connected(Answer::Refused {
                    text: format!("cannot seal the connected report: {e}"),
                    gone: false,
                }));
            }
        }
    }

    /// Polls on its own thread until told to stop; updates `known` itself so
    /// it never spins on a state it has already reported.
    fn start_poller(&mut self) {
        if self.polling {
            return;
        }
        let (Some(cred), Some(tunnel_id)) =
            (self.credential.clone(), self.machine.record().tunnel_id())
        else {
            return;
        };
        self.polling = true;
        let ctx = self.ctx.clone();
        let known = self.known.clone();
        let stop = self.stop_poll.clone();
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name("poll".into())
            .spawn(move || {
                let mut backoff = Backoff::new(Duration::from_secs(60));
                while !stop.load(Ordering::SeqCst) {
                    let k = *known.lock().unwrap_or_else(|p| p.into_inner());
                    let started = Instant::now();
                    let r = ctx.cp.call(
                        &cred,
                        DeviceRequest::Poll(PollRequest {
                            tunnel_id,
                            known: k,
                            wait_secs: POLL_WAIT_SECS,
                        }),
                        Duration::from_secs(u64::from(POLL_WAIT_SECS) + 15),
                    );
                    let delay = match &r {
                        Ok(DeviceResponse::Poll { state, .. }) => {
                            backoff.reset();
                            *known.lock().unwrap_or_else(|p| p.into_inner()) = *state;
                            // An answer that came at once for an unchanged state is a misbehaving server.
                            Duration::from_millis(200).saturating_sub(started.elapsed())
                        }
                        _ => backoff.next_delay(),
                    };
                    if stop.load(Ordering::SeqCst) || tx.send(Msg::Poll(r)).is_err() {
                        return;
                    }
                    sleep_unless(&stop, delay);
                }
            });
        if let Err(e) = spawned {
            error!("cannot start the poll thread: {e}");
        }
    }
}

/// How a call's outcome reads to the machine: retryable or not.
fn answer_of(r: Result<DeviceResponse, CallError>) -> Answer {
    match r {
        Ok(_) => Answer::Accepted,
        Err(e @ (CallError::Unreachable(_) | CallError::Garbage(_))) => {
            Answer::Retry(e.to_string())
        }
        Err(CallError::Refused(api)) if api.code.is_retryable() => {
            Answer::Retry(CallError::Refused(api).to_string())
        }
        Err(CallError::Refused(api)) => Answer::Refused {
            gone: api.code == ErrorCode::NotFound,
            text: CallError::Refused(api).to_string(),
        },
    }
}

fn peer_entry(ev: Event) -> Entry {
    match ev {
        Event::TunnelUp => Entry::TunnelUp,
        Event::Opened { id, port } => Entry::Opened { id, port },
        Event::Closed {
            id,
            port,
            bytes_in,
            bytes_out,
            duration,
        } => Entry::Closed {
            id,
            port,
            bytes_in,
            bytes_out,
            secs: duration.as_secs(),
        },
        Event::Refused { port, reason } => Entry::ConnectionRefused { port, reason },
    }
}

/// Passes peer events on, at most [`PEER_EVENTS_PER_SEC`] a second; a flood
/// of connections is counted, not logged line by line (it would fill the
/// disk and delay everything queued behind it).
fn forward_peer_events(events: mpsc::Receiver<Event>, mailbox: Sender<Msg>) {
    let mut window = Instant::now();
    let (mut sent, mut dropped) = (0u32, 0u64);
    loop {
        let ev = events.recv_timeout(Duration::from_secs(1));
        if window.elapsed() >= Duration::from_secs(1) {
            if dropped > 0 && mailbox.send(Msg::PeerEventsDropped(dropped)).is_err() {
                return;
            }
            window = Instant::now();
            sent = 0;
            dropped = 0;
        }
        match ev {
            Ok(ev) if sent < PEER_EVENTS_PER_SEC => {
                sent += 1;
                if mailbox.send(Msg::Peer(ev)).is_err() {
                    return;
                }
            }
            Ok(_) => dropped += 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
}

/// Every entry of the owner's log also goes to the system journal, at its priority.
fn journal_echo(id: &str, entry: &Entry) {
    crate::journal::write(
        entry.priority(),
        format_args!("tunnel {id}: {}", entry.describe()),
    );
}
