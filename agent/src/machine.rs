//! One tunnel's life as a pure state machine: time and events in, actions
//! out (the shape of `quinn-proto` and boringtun's `noise`). It never reads
//! a clock, touches a file or calls the network; the driver in `lifecycle`
//! carries out its actions and feeds the results back. Every decision (when
//! a request goes stale, when a tunnel expires, what a restart charges, the
//! teardown's order, what is retried) is therefore tested with simulated
//! time in this file's tests.
//!
//! The teardown order, on every path that ends a tunnel (owner's stop,
//! support's stop, expiry, a refused or failed approval, a restart that
//! finds a decided end):
//!
//! 1. the record is saved as `ending` (a crash from here on finishes the
//!    end; it never resumes the tunnel);
//! 2. polling stops and the tunnel peer is cut (no new connection);
//! 3. the support access is removed: every process of the user, then the
//!    key, the sudoers entry, the user (see `access::remove`);
//! 4. the owner's stop is answered (it waits for step 3 only, never a hook);
//! 5. the `pre_down` and `post_down` hooks run, if the tunnel had come up;
//! 6. the seed is wiped, the end logged and the record saved as `ended`;
//! 7. the control plane is told, retried with backoff while its errors are
//!    retryable, for up to a day.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use support_protocol::approval_box::SealedApproval;
use support_protocol::messages::StopReason;
use support_protocol::state::TunnelState;
use support_protocol::tunnel_keys::DeviceTunnelKeys;
use support_protocol::ApprovalSeq;
use support_tunnel::EngineConfig;

use crate::approval::{self, Accepted, Requested};
use crate::config::{Config, PreUpFailure};
use crate::expiry::{resumed_used_secs, TunnelClock, CHECKPOINT};
use crate::hooks::{HookStage, HookValues};
use crate::owner_log::Entry;
use crate::runtime::{EndReason, StatusPhase, TunnelStatus};
use crate::state::{EndNote, Ending, Live, Phase, TunnelRecord};
use crate::time_floor;
use crate::util::bounded;

/// How long the stop notice is retried before the record is left for the next start.
const NOTICE_GIVE_UP: Duration = Duration::from_secs(24 * 3600);
/// The longest wait between two attempts at a report or a notice.
const RETRY_CAP: Duration = Duration::from_secs(300);

/// What the machine reacts to.
#[derive(Debug)]
pub enum Input {
    /// The owner (the CLI or the local socket) stops the tunnel.
    OwnerStop,
    /// A poll answered.
    Polled {
        /// The tunnel's state at the control plane.
        state: TunnelState,
        /// The approval, when approved.
        approval: Option<Box<SealedApproval>>,
        /// The device's time floor now.
        time_floor: u64,
    },
    /// A poll failed.
    PollFailed(Answer),
    /// The pre-up hook finished.
    PreUpDone(Result<(), String>),
    /// The support access was created.
    AccessCreated(Result<(), String>),
    /// The tunnel peer started.
    PeerStarted(Result<(), String>),
    /// The support access was removed (or not).
    AccessRemoved(Result<(), String>),
    /// The connected report was answered.
    ConnectedAnswer(Answer),
    /// The stop notice was answered.
    StoppedAnswer(Answer),
}

/// How the control plane answered a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It took it.
    Accepted,
    /// No answer, or a refusal that may pass later (unavailable, rate-limited, internal).
    Retry(String),
    /// A refusal that will not change; `gone` when the tunnel is unknown to it.
    Refused {
        /// Why.
        text: String,
        /// The control plane no longer knows the tunnel.
        gone: bool,
    },
}

/// What the driver must do, in order.
#[derive(Debug)]
pub enum Action {
    /// Persist this record (the state at the moment the action was decided).
    Save(Box<TunnelRecord>),
    /// Raise the device's time floor to this (never lowers it).
    RaiseTimeFloor(u64),
    /// Append to the owner's log.
    Log(Entry),
    /// Run a hook; a failure is logged. `PreUp` answers with `PreUpDone`.
    RunHook(HookStage, HookValues),
    /// Create (or re-assert) the support access; answers with `AccessCreated`.
    CreateAccess {
        /// The admin's SSH key.
        admin_ssh: [u8; 32],
        /// When OpenSSH and sudo stop honouring it (wall clock).
        expiry_wall: u64,
    },
    /// Rewrite the access's wall-clock expiry after a clock jump; a failure is logged.
    RewriteExpiry {
        /// The admin's SSH key.
        admin_ssh: [u8; 32],
        /// The new expiry (wall clock).
        expiry_wall: u64,
    },
    /// Start the tunnel peer; answers with `PeerStarted`.
    StartPeer(Box<EngineConfig>),
    /// Send the sealed connected report (one attempt); answers with `ConnectedAnswer`.
    SendConnected {
        /// The accepted approval.
        seq: ApprovalSeq,
        /// The hash of the accepted box.
        box_hash: [u8; 32],
    },
    /// Stop the long poll.
    StopPolling,
    /// Shut the tunnel peer down.
    CutNetwork,
    /// Remove the support access; answers with `AccessRemoved`.
    RemoveAccess,
    /// The access is gone (or could not be removed): answers the owner's stop.
    AccessGone(Result<(), String>),
    /// Wipe the tunnel's seed.
    WipeSeed,
    /// Send the stop notice (one attempt); answers with `StoppedAnswer`.
    SendStopped(StopReason),
    /// Remove the record: nothing is left to do.
    RemoveRecord,
    /// The machine has nothing more to do.
    Finished,
}

/// Where the machine is, beyond what the record says.
enum Stage {
    /// Waiting for an approval until `stale_at`.
    Pending { stale_at: Instant },
    /// Bringing an accepted approval up: waiting for the named step's answer.
    BringingUp {
        acc: Box<Accepted>,
        used: u64,
        step: UpStep,
    },
    /// Up.
    Up(Box<Running>),
    /// Tearing down: waiting for the access removal.
    Removing { hooks: Option<HookValues> },
    /// Ended; the notice may still be due.
    Ended { notice: Option<Retry> },
    /// Nothing left.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpStep {
    PreUp,
    Access,
    Peer,
}

struct Running {
    acc: Accepted,
    clock: TunnelClock,
    next_checkpoint: Instant,
    written_expiry: u64,
    remaining_shown: u64,
    report: Option<Retry>,
    peer_up: bool,
}

/// A call retried with exponential backoff and jitter.
struct Retry {
    due: Option<Instant>,
    attempt: u32,
    give_up: Option<Instant>,
}

impl Retry {
    /// The first attempt is under way; the next is due when it fails.
    fn in_flight(give_up: Option<Instant>) -> Retry {
        Retry {
            due: None,
            attempt: 0,
            give_up,
        }
    }
}

/// One tunnel's lifecycle.
pub struct Machine {
    rec: TunnelRecord,
    keys: Option<DeviceTunnelKeys>,
    config: Config,
    stage: Stage,
    actions: VecDeque<Action>,
    approver: Option<String>,
    control_plane_error: Option<String>,
    stale_at_wall: Option<u64>,
    jitter: u64,
    /// The monotonic and wall clocks of the input being handled.
    now: Instant,
    wall: u64,
}

impl Machine {
    /// A machine for `rec`, as found at `now` (a new request, or any record
    /// after a restart). `keys` come from the tunnel's seed; an ended record
    /// has none. `jitter` seeds the retry jitter. `stale_after` is how long
    /// the control plane keeps the request (when it said so).
    pub fn new(
        rec: TunnelRecord,
        keys: Option<DeviceTunnelKeys>,
        config: Config,
        now: Instant,
        wall: u64,
        time_floor: u64,
        jitter: u64,
    ) -> Machine {
        let mut m = Machine {
            rec,
            keys,
            config,
            stage: Stage::Done,
            actions: VecDeque::new(),
            approver: None,
            control_plane_error: None,
            stale_at_wall: None,
            jitter: jitter | 1,
            now,
            wall,
        };
        m.start(now, wall, time_floor);
        m
    }

    fn start(&mut self, now: Instant, wall: u64, time_floor: u64) {
        if self.keys.is_none() && self.rec.is_live() {
            return self.end(StopReason::Failed(bounded("its seed is missing")), false);
        }
        match self.rec.phase.clone() {
            Phase::Pending => {
                // The window counts from the request; a clock set back since
                // (no RTC) cannot lengthen it, only restart it from now.
                let window = u64::from(self.rec.pending_window_secs);
                let elapsed = wall.saturating_sub(self.rec.requested_at).min(window);
                let left = window - elapsed;
                self.stale_at_wall = Some(wall + left);
                self.stage = Stage::Pending {
                    stale_at: now + Duration::from_secs(left),
                };
            }
            Phase::Connected(live) => self.resume(now, wall, time_floor, &live),
            Phase::Ending(e) => self.teardown(e),
            Phase::Ended(note) => {
                self.stage = if note.notified || note.credential.is_none() {
                    self.actions.push_back(Action::RemoveRecord);
                    self.actions.push_back(Action::Finished);
                    Stage::Done
                } else {
                    self.actions
                        .push_back(Action::SendStopped(note.reason.clone()));
                    Stage::Ended {
                        notice: Some(Retry::in_flight(Some(now + NOTICE_GIVE_UP))),
                    }
                };
            }
        }
    }

    fn save(&mut self) {
        self.actions
            .push_back(Action::Save(Box::new(self.rec.clone())));
    }

    /// The record as it stands.
    pub fn record(&self) -> &TunnelRecord {
        &self.rec
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.stage {
            Stage::Pending { stale_at } => Some(*stale_at),
            Stage::Up(r) => {
                let expiry = r.next_checkpoint.min(r.clock.expires_at());
                Some(match r.report.as_ref().and_then(|x| x.due) {
                    Some(d) => d.min(expiry),
                    None => expiry,
                })
            }
            Stage::Ended { notice: Some(n) } => match (n.due, n.give_up) {
                (Some(d), Some(g)) => Some(d.min(g)),
                (d, g) => d.or(g),
            },
            _ => None,
        }
    }

    /// True once the machine has nothing left to do.
    pub fn is_finished(&self) -> bool {
        matches!(self.stage, Stage::Done) && self.actions.is_empty()
    }

    /// True once the tunnel has ended (its notice may still be due).
    pub fn has_ended(&self) -> bool {
        matches!(self.rec.phase, Phase::Ended(_))
    }

    /// What `status` shows.
    pub fn status(&self) -> TunnelStatus {
        let (phase, user, remaining, ended) = match (&self.rec.phase, &self.stage) {
            (Phase::Pending, _) => (StatusPhase::Pending, None, None, None),
            (Phase::Connected(_), Stage::Up(r)) if r.peer_up => (
                StatusPhase::Connected,
                Some(self.user()),
                // The expiry OpenSSH and sudo enforce: it moves only when the wall clock jumps.
                Some((r.remaining_shown, r.written_expiry.saturating_sub(1))),
                None,
            ),
            (Phase::Connected(_), _) => (StatusPhase::Connecting, None, None, None),
            (Phase::Ending(e), _) => (
                StatusPhase::Ending,
                None,
                None,
                Some(reason_text(&e.reason)),
            ),
            (Phase::Ended(n), _) => (StatusPhase::Ended, None, None, Some(n.text.clone())),
        };
        let reason = match &self.rec.phase {
            Phase::Ending(e) => Some(&e.reason),
            Phase::Ended(n) => Some(&n.reason),
            _ => None,
        };
        TunnelStatus {
            id: self.rec.id.clone(),
            phase,
            requested_at: self.rec.requested_at,
            stale_at: (phase == StatusPhase::Pending)
                .then_some(self.stale_at_wall)
                .flatten(),
            approver: self.approver.clone(),
            user,
            remaining_secs: remaining.map(|r| r.0),
            expires_at: remaining.map(|r| r.1),
            ended,
            end_reason: reason.map(|r| end_reason(r, self.approver.is_some())),
            control_plane_error: self.control_plane_error.clone(),
        }
    }

    fn user(&self) -> String {
        self.rec
            .tunnel_id()
            .map(|t| t.support_user())
            .unwrap_or_default()
    }

    /// Handles an input at `now` (monotonic) and `wall` (the wall clock,
    /// used only for what OpenSSH and sudo read, and for display).
    pub fn handle(&mut self, now: Instant, wall: u64, input: Input) {
        (self.now, self.wall) = (now, wall);
        match input {
            Input::OwnerStop => {
                if self.rec.is_live() {
                    self.end(StopReason::Owner, true);
                } else {
                    // Already ending or ended: the stop is answered when the access is gone.
                    if !matches!(self.stage, Stage::Removing { .. }) {
                        self.actions.push_back(Action::AccessGone(Ok(())));
                    }
                }
            }
            Input::Polled {
                state,
                approval,
                time_floor,
            } => {
                self.control_plane_error = None;
                self.on_polled(now, wall, state, approval, time_floor);
            }
            Input::PollFailed(answer) => match answer {
                Answer::Refused { text, gone: true } if self.rec.is_live() => {
                    // The control plane no longer knows the tunnel (purged): it is over.
                    self.end(StopReason::Failed(bounded(&text)), false);
                }
                Answer::Refused { text, .. } | Answer::Retry(text) => {
                    self.control_plane_error = Some(text);
                }
                Answer::Accepted => {}
            },
            Input::PreUpDone(r) => self.on_step(now, wall, UpStep::PreUp, r),
            Input::AccessCreated(r) => self.on_step(now, wall, UpStep::Access, r),
            Input::PeerStarted(r) => self.on_step(now, wall, UpStep::Peer, r),
            Input::AccessRemoved(r) => self.on_removed(r),
            Input::ConnectedAnswer(a) => self.on_connected_answer(now, a),
            Input::StoppedAnswer(a) => self.on_stopped_answer(now, a),
        }
    }

    /// Handles the passing of time (call at `poll_timeout()` or later).
    pub fn handle_timeout(&mut self, now: Instant, wall: u64) {
        (self.now, self.wall) = (now, wall);
        match &mut self.stage {
            Stage::Pending { stale_at } if now >= *stale_at => {
                // The control plane expires it too; this holds when it is unreachable.
                self.end(StopReason::Expired, true);
            }
            Stage::Up(r) => {
                if r.clock.expired(now) {
                    return self.end(StopReason::Expired, true);
                }
                if let Some(rep) = &mut r.report {
                    if rep.due.is_some_and(|d| now >= d) {
                        rep.due = None;
                        self.actions.push_back(Action::SendConnected {
                            seq: r.acc.seq,
                            box_hash: r.acc.box_hash,
                        });
                    }
                }
                if now >= r.next_checkpoint {
                    self.checkpoint(now, wall);
                }
            }
            Stage::Ended { notice: Some(n) } => {
                if n.give_up.is_some_and(|g| now >= g) {
                    // Left for the next start, which tries again.
                    self.stage = Stage::Done;
                    self.actions.push_back(Action::Finished);
                } else if n.due.is_some_and(|d| now >= d) {
                    n.due = None;
                    if let Phase::Ended(note) = &self.rec.phase {
                        self.actions
                            .push_back(Action::SendStopped(note.reason.clone()));
                    }
                }
            }
            _ => {}
        }
    }

    fn on_polled(
        &mut self,
        now: Instant,
        wall: u64,
        state: TunnelState,
        sealed: Option<Box<SealedApproval>>,
        time_floor: u64,
    ) {
        if !self.rec.is_live() {
            return;
        }
        match state {
            TunnelState::Stopped => self.end(StopReason::Admin, false),
            TunnelState::Expired => self.end(StopReason::Expired, false),
            TunnelState::Failed => self.end(
                StopReason::Failed(bounded("the control plane marked it failed")),
                false,
            ),
            TunnelState::Approved(_) if self.rec.phase == Phase::Pending => {
                if let Some(sealed) = sealed {
                    self.on_approval(now, wall, &sealed, time_floor);
                }
            }
            _ => {}
        }
    }

    fn requested(&self) -> Requested<'_> {
        Requested {
            ports: &self.rec.ports,
            duration_secs: self.rec.duration_secs,
        }
    }

    /// Verifies an approval; only if it passes does anything change.
    fn on_approval(&mut self, now: Instant, wall: u64, sealed: &SealedApproval, floor: u64) {
        let Some(keys) = &self.keys else { return };
        let accepted = approval::accept(sealed, keys, &self.requested(), &self.config, floor, None);
        let acc = match accepted {
            Ok(a) => a,
            Err(refusal) => {
                let reason = refusal.to_string();
                self.actions.push_back(Action::Log(Entry::Refused {
                    reason: reason.clone(),
                }));
                return self.end(StopReason::Refused(bounded(&reason)), true);
            }
        };
        let cert = &sealed.certificate.body;
        let name = cert.name.as_str().to_string();
        self.actions.push_back(Action::Log(Entry::Approved {
            approval: acc.seq.0,
            approver: name.clone(),
            certificate_serial: cert.serial,
            approver_key: hex::encode(cert.key.0),
            ssh_key: approval::ssh_fingerprint(&acc.contents.admin_ssh.0),
            duration_secs: acc.contents.duration_secs,
            ports: acc.contents.ports.to_vec(),
            relay: approval::relay_addr(&acc.contents.relay).to_string(),
        }));
        self.actions
            .push_back(Action::RaiseTimeFloor(time_floor::raised(
                floor,
                acc.contents.issued_at,
                wall,
            )));
        self.approver = Some(name);
        let a = &acc.contents.addresses;
        self.rec.phase = Phase::Connected(Live {
            accepted_seq: acc.seq.0,
            approval: support_protocol::encode(sealed)
                .map(hex::encode)
                .unwrap_or_default(),
            used_secs: 0,
            checkpoint_wall: wall,
            reported_connected: false,
            address: a.device,
            prefix_len: a.prefix_len,
        });
        // Saved before any change, so a crash from here on is resumed or repaired.
        self.save();
        self.bring_up(now, wall, acc, 0);
    }

    /// After a restart: re-verify the saved approval and bring it back up.
    fn resume(&mut self, now: Instant, wall: u64, floor: u64, live: &Live) {
        let sealed = hex::decode(&live.approval)
            .ok()
            .and_then(|b| support_protocol::decode::<SealedApproval>(&b).ok());
        let (Some(sealed), Some(keys)) = (sealed, &self.keys) else {
            return self.end(
                StopReason::Failed(bounded("the saved approval is unreadable")),
                true,
            );
        };
        let acc =
            match approval::accept(&sealed, keys, &self.requested(), &self.config, floor, None) {
                Ok(a) => a,
                Err(e) => return self.end(StopReason::Failed(bounded(&e.to_string())), true),
            };
        self.approver = Some(sealed.certificate.body.name.as_str().to_string());
        let used = resumed_used_secs(live.used_secs, live.checkpoint_wall, wall);
        self.actions
            .push_back(Action::Log(Entry::Resumed { used_secs: used }));
        self.bring_up(now, wall, acc, used);
    }

    fn hook_values(&self) -> Option<HookValues> {
        let live = match &self.rec.phase {
            Phase::Connected(l) => l,
            Phase::Ending(Ending { live: Some(l), .. }) => l,
            _ => return None,
        };
        Some(HookValues {
            tunnel_id: self.rec.id.clone(),
            tunnel_name: format!("support-{}", self.rec.id),
            address: std::net::Ipv4Addr::from(live.address).to_string(),
            network: network_cidr(live.address, live.prefix_len),
            user: self.user(),
        })
    }

    fn bring_up(&mut self, now: Instant, wall: u64, acc: Accepted, used: u64) {
        let clock = TunnelClock::new(used, u64::from(acc.contents.duration_secs), now);
        if clock.expired(now) {
            return self.end(StopReason::Expired, true);
        }
        self.stage = Stage::BringingUp {
            acc: Box::new(acc),
            used,
            step: UpStep::PreUp,
        };
        match self.hook_values() {
            Some(v) => self.actions.push_back(Action::RunHook(HookStage::PreUp, v)),
            None => self.on_step(now, wall, UpStep::PreUp, Ok(())),
        }
    }

    fn on_step(&mut self, now: Instant, wall: u64, done: UpStep, result: Result<(), String>) {
        let Stage::BringingUp { step, .. } = &self.stage else {
            return;
        };
        if *step != done {
            return;
        }
        if let Err(e) = result {
            self.actions
                .push_back(Action::Log(Entry::Problem { what: e.clone() }));
            let go_on =
                done == UpStep::PreUp && self.config.pre_up_failure == PreUpFailure::Continue;
            if !go_on {
                return self.end(StopReason::Failed(bounded(&e)), true);
            }
        }
        let Stage::BringingUp { acc, used, step } = std::mem::replace(&mut self.stage, Stage::Done)
        else {
            return;
        };
        let clock = TunnelClock::new(used, u64::from(acc.contents.duration_secs), now);
        match step {
            UpStep::PreUp => {
                self.actions.push_back(Action::CreateAccess {
                    admin_ssh: acc.contents.admin_ssh.0,
                    expiry_wall: wall + clock.remaining(now).as_secs() + 1,
                });
                self.stage = Stage::BringingUp {
                    acc,
                    used,
                    step: UpStep::Access,
                };
            }
            UpStep::Access => {
                let keys = self.keys.as_ref().expect("a live tunnel has its keys");
                let config = approval::engine_config(keys, &acc, &self.config);
                self.actions.push_back(Action::StartPeer(Box::new(config)));
                self.stage = Stage::BringingUp {
                    acc,
                    used,
                    step: UpStep::Peer,
                };
            }
            UpStep::Peer => self.up(now, wall, *acc, used),
        }
    }

    fn up(&mut self, now: Instant, wall: u64, acc: Accepted, used: u64) {
        let clock = TunnelClock::new(used, u64::from(acc.contents.duration_secs), now);
        let remaining = clock.remaining(now).as_secs();
        if let Some(v) = self.hook_values() {
            self.actions
                .push_back(Action::RunHook(HookStage::PostUp, v));
        }
        let mut reported = false;
        if let Phase::Connected(live) = &mut self.rec.phase {
            live.used_secs = used;
            live.checkpoint_wall = wall;
            reported = live.reported_connected;
        }
        self.save();
        let address = std::net::Ipv4Addr::from(acc.contents.addresses.device).to_string();
        self.actions.push_back(Action::Log(Entry::Up {
            user: self.user(),
            address,
            remaining_secs: remaining,
        }));
        let report = (!reported).then(|| Retry::in_flight(None));
        if report.is_some() {
            self.actions.push_back(Action::SendConnected {
                seq: acc.seq,
                box_hash: acc.box_hash,
            });
        }
        self.stage = Stage::Up(Box::new(Running {
            written_expiry: wall + remaining + 1,
            acc,
            clock,
            next_checkpoint: now + CHECKPOINT,
            remaining_shown: remaining,
            report,
            peer_up: true,
        }));
    }

    fn checkpoint(&mut self, now: Instant, wall: u64) {
        let Stage::Up(r) = &mut self.stage else {
            return;
        };
        r.next_checkpoint = now + CHECKPOINT;
        let remaining = r.clock.remaining(now).as_secs();
        r.remaining_shown = remaining;
        if let Phase::Connected(live) = &mut self.rec.phase {
            live.used_secs = r.clock.used(now);
            live.checkpoint_wall = wall;
        }
        // The expiries OpenSSH and sudo enforce are wall-clock times; when
        // the wall clock jumps (NTP fixing a Pi's 1970), they follow the
        // monotonic time left.
        let expiry = wall + remaining + 1;
        if r.written_expiry.abs_diff(expiry) > 60 {
            r.written_expiry = expiry;
            self.actions.push_back(Action::RewriteExpiry {
                admin_ssh: r.acc.contents.admin_ssh.0,
                expiry_wall: expiry,
            });
        }
        self.save();
    }

    fn backoff(&mut self, attempt: u32) -> Duration {
        // xorshift: deterministic in tests, spread out across devices.
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        let ceiling = Duration::from_secs(1u64 << attempt.min(16)).min(RETRY_CAP);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(ms / 2 + self.jitter % (ms / 2 + 1))
    }

    fn on_connected_answer(&mut self, now: Instant, answer: Answer) {
        let attempt = match &mut self.stage {
            Stage::Up(r) => match &mut r.report {
                Some(rep) => {
                    rep.attempt += 1;
                    rep.attempt
                }
                None => return,
            },
            _ => return,
        };
        match answer {
            Answer::Accepted => {
                if let Stage::Up(r) = &mut self.stage {
                    r.report = None;
                }
                if let Phase::Connected(live) = &mut self.rec.phase {
                    live.reported_connected = true;
                }
                self.save();
            }
            Answer::Retry(text) => {
                let wait = self.backoff(attempt - 1);
                self.control_plane_error = Some(text);
                if let Stage::Up(r) = &mut self.stage {
                    if let Some(rep) = &mut r.report {
                        rep.due = Some(now + wait);
                    }
                }
            }
            Answer::Refused { text, .. } => {
                if let Stage::Up(r) = &mut self.stage {
                    r.report = None;
                }
                self.actions.push_back(Action::Log(Entry::Problem {
                    // `text` already says the control plane refused, and why.
                    what: format!("the connected report was not taken: {text}"),
                }));
            }
        }
    }

    fn on_stopped_answer(&mut self, now: Instant, answer: Answer) {
        let Stage::Ended { notice: Some(n) } = &mut self.stage else {
            return;
        };
        n.attempt += 1;
        let attempt = n.attempt;
        match answer {
            Answer::Retry(text) => {
                self.control_plane_error = Some(text);
                let wait = self.backoff(attempt - 1);
                if let Stage::Ended { notice: Some(n) } = &mut self.stage {
                    n.due = Some(now + wait);
                }
            }
            // Taken, or refused for good (the tunnel already ended or was
            // purged there): nothing is left to tell.
            Answer::Accepted | Answer::Refused { .. } => {
                if let Answer::Refused { text, .. } = &answer {
                    self.actions.push_back(Action::Log(Entry::Problem {
                        what: format!("the stop notice was not taken: {text}"),
                    }));
                }
                if let Phase::Ended(note) = &mut self.rec.phase {
                    note.notified = true;
                    note.credential = None;
                }
                self.stage = Stage::Done;
                self.actions.push_back(Action::RemoveRecord);
                self.actions.push_back(Action::Finished);
            }
        }
    }

    /// Decides the end: saved first, then the teardown in the documented order.
    fn end(&mut self, reason: StopReason, notify: bool) {
        let live = match std::mem::replace(&mut self.rec.phase, Phase::Pending) {
            Phase::Connected(l) => Some(l),
            Phase::Ending(e) => {
                // Already decided (a restart): keep the first reason.
                self.rec.phase = Phase::Ending(e.clone());
                return self.teardown(e);
            }
            other => {
                self.rec.phase = other;
                None
            }
        };
        let ending = Ending {
            reason,
            notify,
            live,
            credential: None,
        };
        self.rec.phase = Phase::Ending(ending.clone());
        self.save();
        self.teardown(ending);
    }

    fn teardown(&mut self, e: Ending) {
        let was_up = matches!(self.stage, Stage::Up(_) | Stage::BringingUp { .. });
        self.actions.push_back(Action::StopPolling);
        if was_up {
            self.actions.push_back(Action::CutNetwork);
        }
        let hooks = self.hook_values();
        if e.live.is_some() {
            self.actions.push_back(Action::RemoveAccess);
            self.stage = Stage::Removing { hooks };
        } else {
            self.stage = Stage::Removing { hooks: None };
            self.on_removed(Ok(()));
        }
    }

    fn on_removed(&mut self, result: Result<(), String>) {
        let Stage::Removing { hooks } = std::mem::replace(&mut self.stage, Stage::Done) else {
            return;
        };
        let Phase::Ending(mut e) = self.rec.phase.clone() else {
            return;
        };
        if let Err(what) = &result {
            // The access may still exist: stay `ending`, so the next start
            // (or `stop`) tries again; never claim it is gone.
            self.actions
                .push_back(Action::Log(Entry::Problem { what: what.clone() }));
            self.actions.push_back(Action::AccessGone(result));
            self.actions.push_back(Action::Finished);
            return;
        }
        // The secrets go with the access, before the stop is answered; only
        // the credential stays, for the stop notice.
        if e.notify && e.credential.is_none() {
            e.credential = self
                .keys
                .as_ref()
                .map(|k| hex::encode(k.credential().secret()));
        }
        self.rec.phase = Phase::Ending(e.clone());
        self.save();
        self.actions.push_back(Action::WipeSeed);
        self.actions.push_back(Action::AccessGone(Ok(())));
        if let Some(v) = hooks {
            self.actions
                .push_back(Action::RunHook(HookStage::PreDown, v.clone()));
            self.actions
                .push_back(Action::RunHook(HookStage::PostDown, v));
        }
        let text = reason_text(&e.reason);
        self.actions.push_back(Action::Log(Entry::Ended {
            reason: text.clone(),
        }));
        self.rec.phase = Phase::Ended(EndNote {
            reason: e.reason.clone(),
            text,
            at: self.wall,
            notified: !e.notify,
            credential: e.credential.filter(|_| e.notify),
        });
        if e.notify {
            self.save();
            self.actions.push_back(Action::SendStopped(e.reason));
            self.stage = Stage::Ended {
                notice: Some(Retry::in_flight(Some(self.now + NOTICE_GIVE_UP))),
            };
        } else {
            self.actions.push_back(Action::RemoveRecord);
            self.actions.push_back(Action::Finished);
        }
    }
}

/// How a stop reason reads in logs and status.
pub fn reason_text(r: &StopReason) -> String {
    match r {
        StopReason::Owner => "stopped by the owner".into(),
        StopReason::Admin => "stopped by support".into(),
        StopReason::Expired => "expired".into(),
        StopReason::Refused(why) => format!("refused: {}", why.as_str()),
        StopReason::Failed(why) => format!("failed: {}", why.as_str()),
    }
}

/// A stop reason for programs (agent/SOCKET.md): `stale` is an expiry
/// before any approval was accepted.
pub fn end_reason(r: &StopReason, approved: bool) -> EndReason {
    match r {
        StopReason::Owner => EndReason::Owner,
        StopReason::Admin => EndReason::Support,
        StopReason::Expired if approved => EndReason::Expired,
        StopReason::Expired => EndReason::Stale,
        StopReason::Refused(_) => EndReason::Refused,
        StopReason::Failed(_) => EndReason::Failed,
    }
}

fn network_cidr(addr: [u8; 4], prefix: u8) -> String {
    let bits = u32::from_be_bytes(addr);
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    format!("{}/{prefix}", std::net::Ipv4Addr::from(bits & mask))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::tests::{fixture, sealed, Fixture};
    use crate::config::PreUpFailure;

    const WALL: u64 = crate::RELEASE_TIME + 1000;

    fn record(f: &Fixture, phase: Phase) -> TunnelRecord {
        TunnelRecord {
            id: f.device.tunnel_id().to_string(),
            duration_secs: 3600,
            ports: vec![22],
            note: String::new(),
            requested_at: WALL,
            pending_window_secs: 24 * 3600,
            phase,
        }
    }

    fn machine(f: &Fixture, phase: Phase, t0: Instant) -> Machine {
        let keys = DeviceTunnelKeys::from_seed([3; 32]);
        Machine::new(
            record(f, phase),
            Some(keys),
            f.config.clone(),
            t0,
            WALL,
            0,
            42,
        )
    }

    /// The names of the actions due, in order.
    fn names(m: &mut Machine) -> Vec<&'static str> {
        std::iter::from_fn(|| m.poll_action())
            .map(|a| match a {
                Action::Save(_) => "save",
                Action::RaiseTimeFloor(_) => "raise-floor",
                Action::Log(Entry::Refused { .. }) => "log-refused",
                Action::Log(Entry::Ended { .. }) => "log-ended",
                Action::Log(Entry::Problem { .. }) => "log-problem",
                Action::Log(_) => "log",
                Action::RunHook(HookStage::PreUp, _) => "pre-up",
                Action::RunHook(HookStage::PostUp, _) => "post-up",
                Action::RunHook(HookStage::PreDown, _) => "pre-down",
                Action::RunHook(HookStage::PostDown, _) => "post-down",
                Action::CreateAccess { .. } => "create-access",
                Action::RewriteExpiry { .. } => "rewrite-expiry",
                Action::StartPeer(_) => "start-peer",
                Action::SendConnected { .. } => "send-connected",
                Action::StopPolling => "stop-polling",
                Action::CutNetwork => "cut-network",
                Action::RemoveAccess => "remove-access",
                Action::AccessGone(Ok(())) => "access-gone",
                Action::AccessGone(Err(_)) => "access-not-gone",
                Action::WipeSeed => "wipe-seed",
                Action::SendStopped(_) => "send-stopped",
                Action::RemoveRecord => "remove-record",
                Action::Finished => "finished",
            })
            .collect()
    }

    fn approved(f: &Fixture, seq: u32) -> Input {
        Input::Polled {
            state: TunnelState::Approved(ApprovalSeq(seq)),
            approval: Some(Box::new(sealed(f, seq))),
            time_floor: crate::RELEASE_TIME,
        }
    }

    /// Pending → approved → up, at `t0`.
    fn up(f: &Fixture, t0: Instant) -> Machine {
        let mut m = machine(f, Phase::Pending, t0);
        assert!(names(&mut m).is_empty());
        m.handle(t0, WALL, approved(f, 1));
        assert_eq!(names(&mut m), ["log", "raise-floor", "save", "pre-up"]);
        m.handle(t0, WALL, Input::PreUpDone(Ok(())));
        assert_eq!(names(&mut m), ["create-access"]);
        m.handle(t0, WALL, Input::AccessCreated(Ok(())));
        assert_eq!(names(&mut m), ["start-peer"]);
        m.handle(t0, WALL, Input::PeerStarted(Ok(())));
        assert_eq!(names(&mut m), ["post-up", "save", "log", "send-connected"]);
        assert_eq!(m.status().phase, StatusPhase::Connected);
        m
    }

    #[test]
    fn no_access_before_an_accepted_approval() {
        let f = fixture();
        let t0 = Instant::now();
        let mut m = machine(&f, Phase::Pending, t0);
        // Approved without a box, then a box for another approval number
        // that is tampered with: nothing that changes the device.
        m.handle(
            t0,
            WALL,
            Input::Polled {
                state: TunnelState::Approved(ApprovalSeq(1)),
                approval: None,
                time_floor: 0,
            },
        );
        assert!(names(&mut m).is_empty());
        let mut bad = sealed(&f, 1);
        bad.approval_seq = ApprovalSeq(9);
        m.handle(
            t0,
            WALL,
            Input::Polled {
                state: TunnelState::Approved(ApprovalSeq(9)),
                approval: Some(Box::new(bad)),
                time_floor: 0,
            },
        );
        let done = names(&mut m);
        assert_eq!(
            done,
            [
                "log-refused",
                "save",
                "stop-polling",
                "save",
                "wipe-seed",
                "access-gone",
                "log-ended",
                "save",
                "send-stopped"
            ]
        );
        assert!(matches!(
            &m.record().phase,
            Phase::Ended(EndNote {
                reason: StopReason::Refused(_),
                ..
            })
        ));
        // A good approval arriving later changes nothing: the tunnel has ended.
        m.handle(t0, WALL, approved(&f, 2));
        assert!(names(&mut m).is_empty());
    }

    #[test]
    fn a_refusal_reads_once_in_the_owners_log_and_the_status() {
        let mut f = fixture();
        f.config.ports.clear();
        let t0 = Instant::now();
        let mut m = machine(&f, Phase::Pending, t0);
        m.handle(t0, WALL, approved(&f, 1));
        let logged: Vec<String> = std::iter::from_fn(|| m.poll_action())
            .filter_map(|a| match a {
                Action::Log(e) => Some(e.describe()),
                _ => None,
            })
            .collect();
        let why = "approval #1: port 22 was not requested or is not allowed on this device";
        assert_eq!(
            logged,
            [
                format!("REFUSED, nothing changed: {why}"),
                format!("ended (refused: {why})")
            ]
        );
        let status = m.status();
        assert_eq!(status.phase, StatusPhase::Ended);
        assert_eq!(status.end_reason, Some(EndReason::Refused));
        assert_eq!(status.ended, Some(format!("refused: {why}")));
    }

    #[test]
    fn a_pending_request_goes_stale_at_the_end_of_its_window() {
        let f = fixture();
        let t0 = Instant::now();
        let mut m = machine(&f, Phase::Pending, t0);
        let window = Duration::from_secs(24 * 3600);
        assert_eq!(m.poll_timeout(), Some(t0 + window));
        assert_eq!(m.status().stale_at, Some(WALL + window.as_secs()));
        m.handle_timeout(t0 + window - Duration::from_secs(1), WALL);
        assert!(names(&mut m).is_empty());
        m.handle_timeout(t0 + window, WALL);
        assert_eq!(names(&mut m)[..2], ["save", "stop-polling"]);
        assert!(matches!(
            &m.record().phase,
            Phase::Ended(EndNote {
                reason: StopReason::Expired,
                ..
            })
        ));
    }

    #[test]
    fn a_restart_keeps_the_pending_window_counted_from_the_request() {
        let f = fixture();
        let t0 = Instant::now();
        let keys = DeviceTunnelKeys::from_seed([3; 32]);
        // Ten hours after the request (by the wall clock): 14 h left.
        let m = Machine::new(
            record(&f, Phase::Pending),
            Some(keys),
            f.config.clone(),
            t0,
            WALL + 36_000,
            0,
            1,
        );
        assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(14 * 3600)));
        // A clock set back since (no RTC): the window restarts, never grows beyond itself.
        let keys = DeviceTunnelKeys::from_seed([3; 32]);
        let m = Machine::new(
            record(&f, Phase::Pending),
            Some(keys),
            f.config.clone(),
            t0,
            0,
            0,
            1,
        );
        assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(24 * 3600)));
    }

    #[test]
    fn expiry_falls_exactly_at_the_approved_duration() {
        let f = fixture();
        let t0 = Instant::now();
        let mut m = up(&f, t0);
        let duration = Duration::from_secs(600); // what the fixture approves
        let mut t = t0;
        while t + CHECKPOINT < t0 + duration {
            t += CHECKPOINT;
            m.handle_timeout(t, WALL + (t - t0).as_secs());
            assert_eq!(names(&mut m), ["save"], "a checkpoint at {:?}", t - t0);
        }
        m.handle_timeout(t0 + duration - Duration::from_millis(1), WALL + 599);
        assert!(m.record().is_live(), "not a moment early");
        m.handle_timeout(t0 + duration, WALL + 600);
        assert!(matches!(&m.record().phase, Phase::Ending(_)));
        assert_eq!(
            names(&mut m),
            ["save", "stop-polling", "cut-network", "remove-access"]
        );
    }

    #[test]
    fn a_restart_charges_the_unsaved_interval_and_any_forward_jump() {
        let f = fixture();
        let t0 = Instant::now();
        let mut m = up(&f, t0);
        m.handle_timeout(t0 + CHECKPOINT * 10, WALL + 100);
        let Phase::Connected(live) = m.record().phase.clone() else {
            panic!("connected")
        };
        assert_eq!(live.used_secs, 100);
        // The device was down; its wall clock moved 200 s since the last save.
        let t1 = Instant::now();
        let keys = DeviceTunnelKeys::from_seed([3; 32]);
        let mut r = Machine::new(
            m.record().clone(),
            Some(keys),
            f.config.clone(),
            t1,
            WALL + 300,
            0,
            7,
        );
        assert_eq!(names(&mut r), ["log", "pre-up"]);
        r.handle(t1, WALL + 300, Input::PreUpDone(Ok(())));
        r.handle(t1, WALL + 300, Input::AccessCreated(Ok(())));
        r.handle(t1, WALL + 300, Input::PeerStarted(Ok(())));
        // 600 s approved - (100 used + 10 unsaved + 200 jumped) = 290 s left.
        let _ = names(&mut r);
        r.handle_timeout(t1 + Duration::from_secs(289), WALL + 589);
        assert!(r.record().is_live());
        r.handle_timeout(t1 + Duration::from_secs(290), WALL + 590);
        assert!(!r.record().is_live());
        // A clock set back instead charges only the unsaved interval, never less.
        let keys = DeviceTunnelKeys::from_seed([3; 32]);
        let r = Machine::new(
            m.record().clone(),
            Some(keys),
            f.config.clone(),
            t1,
            5,
            0,
            7,
        );
        assert!(r.record().is_live());
        assert_eq!(r.status().phase, StatusPhase::Connecting);
    }

    #[test]
    fn a_wall_clock_jump_rewrites_what_openssh_and_sudo_enforce() {
        let f = fixture();
        let t0 = Instant::now();
        let mut m = up(&f, t0);
        m.handle_timeout(t0 + CHECKPOINT, WALL + 10 + 30);
        assert_eq!(names(&mut m), ["save"], "drift under a minute is ignored");
        let year = 365 * 86400;
        m.handle_timeout(t0 + CHECKPOINT * 2, WALL + 20 + year);
        let actions: Vec<Action> = std::iter::from_fn(|| m.poll_action()).collect();
        let Some(Action::RewriteExpiry { expiry_wall, .. }) = actions.first() else {
            panic!("{actions:?}")
        };
        assert_eq!(*expiry_wall, WALL + 20 + year + (600 - 20) + 1);
        assert!(
            m.record().is_live(),
            "a jump never ends the tunnel by itself"
        );
    }

    #[test]
    fn the_teardown_cuts_and_removes_before_any_hook_and_saves_the_end_first() {
        let f = fixture();
        let t0 = Instant::now();
        let mut m = up(&f, t0);
        m.handle(t0, WALL, Input::OwnerStop);
        assert!(matches!(
            &m.record().phase,
            Phase::Ending(Ending {
                reason: StopReason::Owner,
                live: Some(_),
                ..
            })
        ));
        assert_eq!(
            names(&mut m),
            ["save", "stop-polling", "cut-network", "remove-access"]
        );
        m.handle(t0, WALL, Input::AccessRemoved(Ok(())));
        assert_eq!(
            names(&mut m),
            [
                "save",
                "wipe-seed",
                "access-gone",
                "pre-down",
                "post-down",
                "log-ended",
                "save",
                "send-stopped"
            ]
        );
        // A second stop is answered at once.
        m.handle(t0, WALL, Input::OwnerStop);
        assert_eq!(names(&mut m), ["access-gone"]);
    }

    #[test]
    fn a_restart_during_the_teardown_finishes_it_and_never_resumes() {
        let f = fixture();
        let t0 = Instant::now();
        let mut m = up(&f, t0);
        m.handle(t0, WALL, Input::OwnerStop);
        let _ = names(&mut m);
        // Crash here: the saved record says "ending".
        let saved = m.record().clone();
        let keys = DeviceTunnelKeys::from_seed([3; 32]);
        let mut r = Machine::new(saved, Some(keys), f.config.clone(), t0, WALL, 0, 3);
        assert_eq!(names(&mut r), ["stop-polling", "remove-access"]);
        r.handle(t0, WALL, Input::AccessRemoved(Ok(())));
        let done = names(&mut r);
        assert!(!done.contains(&"create-access") && !done.contains(&"start-peer"));
        assert_eq!(
            done[..5],
            ["save", "wipe-seed", "access-gone", "pre-down", "post-down"],
            "hooks on this path too"
        );
    }

    #[test]
    fn a_crash_after_the_seed_is_wiped_still_runs_the_hooks_and_tells_the_control_plane() {
        let f = fixture();
        let t0 = Instant::now();
        let mut m = up(&f, t0);
        m.handle(t0, WALL, Input::OwnerStop);
        let _ = names(&mut m);
        m.handle(t0, WALL, Input::AccessRemoved(Ok(())));
        // What was saved just before the seed was wiped; then the crash.
        let saved = std::iter::from_fn(|| m.poll_action())
            .find_map(|a| match a {
                Action::Save(r) => Some(*r),
                _ => None,
            })
            .expect("saved");
        let Phase::Ending(e) = &saved.phase else {
            panic!("{:?}", saved.phase)
        };
        assert!(e.credential.is_some(), "the credential outlives the seed");
        let mut r = Machine::new(saved, None, f.config.clone(), t0, WALL, 0, 3);
        assert_eq!(names(&mut r), ["stop-polling", "remove-access"]);
        r.handle(t0, WALL, Input::AccessRemoved(Ok(())));
        let done = names(&mut r);
        assert!(done.contains(&"pre-down") && done.contains(&"post-down"));
        assert_eq!(done.last(), Some(&"send-stopped"));
        let Phase::Ended(note) = &r.record().phase else {
            panic!()
        };
        assert!(note.credential.is_some() && !note.notified);
    }

    #[test]
    fn an_access_that_could_not_be_removed_is_never_called_gone() {
        let f = fixture();
        let t0 = Instant::now();
        let mut m = up(&f, t0);
        m.handle(t0, WALL, Input::OwnerStop);
        let _ = names(&mut m);
        m.handle(
            t0,
            WALL,
            Input::AccessRemoved(Err("processes survive".into())),
        );
        let done = names(&mut m);
        assert_eq!(done[..2], ["log-problem", "access-not-gone"]);
        assert!(!done.contains(&"wipe-seed"));
        assert!(
            matches!(&m.record().phase, Phase::Ending(_)),
            "the next start tries again"
        );
    }

    #[test]
    fn only_retryable_answers_are_retried() {
        let f = fixture();
        let t0 = Instant::now();
        let mut m = up(&f, t0);
        // The connected report: unavailable, then taken.
        m.handle(
            t0,
            WALL,
            Input::ConnectedAnswer(Answer::Retry("unavailable".into())),
        );
        assert!(names(&mut m).is_empty());
        let due = m.poll_timeout().expect("a retry is due");
        assert!(
            due > t0 && due <= t0 + Duration::from_secs(1),
            "{:?}",
            due - t0
        );
        m.handle_timeout(due, WALL + 1);
        assert_eq!(names(&mut m), ["send-connected"]);
        m.handle(due, WALL + 1, Input::ConnectedAnswer(Answer::Accepted));
        assert_eq!(names(&mut m), ["save"]);
        let Phase::Connected(live) = &m.record().phase else {
            panic!()
        };
        assert!(live.reported_connected);

        // The stop notice: retried with growing waits while retryable...
        m.handle(due, WALL, Input::OwnerStop);
        m.handle(due, WALL, Input::AccessRemoved(Ok(())));
        let _ = names(&mut m);
        let mut last = Duration::ZERO;
        let mut t = due;
        for attempt in 0..6 {
            m.handle(
                t,
                WALL,
                Input::StoppedAnswer(Answer::Retry("rate limited".into())),
            );
            let next = m.poll_timeout().expect("retry");
            let wait = next - t;
            assert!(wait <= RETRY_CAP);
            if attempt > 1 {
                assert!(wait > last / 2, "backoff grows: {wait:?} after {last:?}");
            }
            last = wait;
            t = next;
            m.handle_timeout(t, WALL);
            assert_eq!(names(&mut m), ["send-stopped"]);
        }
        // ...and a refusal for good is final: the record goes.
        m.handle(
            t,
            WALL,
            Input::StoppedAnswer(Answer::Refused {
                text: "no such tunnel".into(),
                gone: true,
            }),
        );
        assert_eq!(names(&mut m), ["log-problem", "remove-record", "finished"]);
        assert!(m.is_finished());
    }

    #[test]
    fn a_refused_connected_report_is_not_retried() {
        let f = fixture();
        let t0 = Instant::now();
        let mut m = up(&f, t0);
        m.handle(
            t0,
            WALL,
            Input::ConnectedAnswer(Answer::Refused {
                text: "forbidden".into(),
                gone: false,
            }),
        );
        assert_eq!(names(&mut m), ["log-problem"]);
        assert_eq!(
            m.poll_timeout(),
            Some(t0 + CHECKPOINT),
            "only the checkpoint is due"
        );
    }

    #[test]
    fn the_stop_notice_gives_up_after_a_day_and_keeps_the_record() {
        let f = fixture();
        let t0 = Instant::now();
        let mut m = machine(&f, Phase::Pending, t0);
        m.handle(t0, WALL, Input::OwnerStop);
        assert_eq!(names(&mut m).last(), Some(&"send-stopped"));
        let mut t = t0;
        while !m.is_finished() {
            m.handle(
                t,
                WALL,
                Input::StoppedAnswer(Answer::Retry("unreachable".into())),
            );
            t = m.poll_timeout().expect("due");
            m.handle_timeout(t, WALL);
            let done = names(&mut m);
            assert!(!done.contains(&"remove-record"), "kept for the next start");
        }
        assert!(t >= t0 + NOTICE_GIVE_UP && t < t0 + NOTICE_GIVE_UP + RETRY_CAP);
        let Phase::Ended(note) = &m.record().phase else {
            panic!()
        };
        assert!(!note.notified && note.credential.is_some());
    }

    #[test]
    fn a_failing_pre_up_hook_aborts_or_is_logged_as_configured() {
        let mut f = fixture();
        let t0 = Instant::now();
        let mut m = machine(&f, Phase::Pending, t0);
        m.handle(t0, WALL, approved(&f, 1));
        let _ = names(&mut m);
        m.handle(t0, WALL, Input::PreUpDone(Err("exit 1".into())));
        let done = names(&mut m);
        assert_eq!(done[0], "log-problem");
        assert!(!done.contains(&"create-access"));
        assert_eq!(
            done.last(),
            Some(&"remove-access"),
            "whatever the hook did is undone"
        );
        m.handle(t0, WALL, Input::AccessRemoved(Ok(())));
        let _ = names(&mut m);
        assert!(matches!(
            &m.record().phase,
            Phase::Ended(EndNote {
                reason: StopReason::Failed(_),
                ..
            })
        ));

        f.config.pre_up_failure = PreUpFailure::Continue;
        let mut m = machine(&f, Phase::Pending, t0);
        m.handle(t0, WALL, approved(&f, 1));
        let _ = names(&mut m);
        m.handle(t0, WALL, Input::PreUpDone(Err("exit 1".into())));
        assert_eq!(names(&mut m), ["log-problem", "create-access"]);
    }

    #[test]
    fn the_time_floor_moves_at_most_a_day_past_what_the_device_knows() {
        let f = fixture();
        let t0 = Instant::now();
        let mut m = machine(&f, Phase::Pending, t0);
        // The fixture's approval says RELEASE_TIME + 10; the device's clock reads 1970.
        // (An approval from the future is the `time_floor` module's test.)
        m.handle(t0, 0, approved(&f, 1));
        let floor = std::iter::from_fn(|| m.poll_action()).find_map(|a| match a {
            Action::RaiseTimeFloor(t) => Some(t),
            _ => None,
        });
        assert_eq!(floor, Some(crate::RELEASE_TIME + 10));
    }
}
