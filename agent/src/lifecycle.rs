//! One tunnel's life on the device: register, wait for the approval on a
//! long poll, verify it, bring up the access and the peer, report, then
//! watch for the owner's stop, the admin's stop and expiry, and tear down.
//!
//! Each tunnel has a supervisor thread that owns its record and reacts to
//! messages (owner stop, poll results, peer events, timer). Control-plane
//! traffic runs on helper threads, so a stop never waits for a long poll.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support_protocol::approval_box::SealedApproval;
use support_protocol::bounded::{BoundedString, BoundedVec, FixedBytes};
use support_protocol::connected_report::ConnectedReport;
use support_protocol::control_channel::StaticKeypair;
use support_protocol::messages::device::{ConnectedNotice, PollRequest, StoppedNotice};
use support_protocol::messages::{
    DeviceFacts, DeviceRequest, DeviceResponse, StopReason, TunnelRequest,
};
use support_protocol::one_time_code::OneTimeCode;
use support_protocol::state::TunnelState;
use support_protocol::tunnel_keys::DeviceTunnelKeys;
use support_protocol::ApprovalSeq;
use support_tunnel::{Engine, EngineHandle, Event};
use zeroize::Zeroizing;

use crate::access::{self, Grant};
use crate::approval::{self, Accepted, Requested};
use crate::control::{Backoff, CallError};
use crate::expiry::{resumed_used_secs, TunnelClock, CHECKPOINT};
use crate::hooks::{self, HookValues};
use crate::owner_log::Entry;
use crate::runtime::Ctx;
use crate::state::{EndNote, Phase, TunnelRecord};
use crate::util::{bounded, random, wall_now};

/// How long the control plane may hold a poll.
const POLL_WAIT_SECS: u16 = 25;
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// What a supervisor reacts to.
pub enum Msg {
    /// The owner (or the local socket) stops the tunnel.
    Stop,
    /// A poll answered (or failed).
    Poll(Result<DeviceResponse, CallError>),
    /// The control plane acknowledged "connected".
    ConnectedAcknowledged,
    /// The peer reported something.
    Peer(Event),
    /// Peer events were dropped instead of logged (a connection flood).
    PeerEventsDropped(u64),
}

/// A supervisor's mailbox. A stop also raises a flag the supervisor checks
/// before anything else, so it never waits behind queued events.
#[derive(Clone)]
pub struct Mailbox {
    tx: Sender<Msg>,
    stop: Arc<AtomicBool>,
}

impl Mailbox {
    /// The owner's stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Msg::Stop);
    }
}

/// Peer events logged per second at most; the rest are counted.
const PEER_EVENTS_PER_SEC: u32 = 20;
/// The longest a pending request is kept, whatever the control plane says.
const MAX_STALE_SECS: u32 = 3600;

/// A newly registered tunnel.
pub struct Registered {
    /// Its record (saved).
    pub record: TunnelRecord,
    /// The code to show the owner. Shown, never logged.
    pub code: Zeroizing<String>,
    /// Seconds until the request goes stale.
    pub stale_after_secs: u32,
}

/// Registers a request with the control plane. The record is saved before
/// the call (so a crash leaves nothing unknown) and removed if it fails.
pub fn register(
    ctx: &Ctx,
    duration_secs: u32,
    ports: &[u16],
    note: &str,
) -> Result<Registered, String> {
    let c = &ctx.config;
    if duration_secs == 0 || duration_secs > c.max_duration_secs() {
        return Err(format!(
            "a duration of {} is not allowed here (at most {})",
            crate::util::format_duration(u64::from(duration_secs)),
            crate::util::format_duration(u64::from(c.max_duration_secs()))
        ));
    }
    if let Some(p) = ports.iter().find(|p| !c.ports.contains_key(p)) {
        return Err(format!(
            "port {p} is not in this device's allowlist (allowed: {:?})",
            c.allowed_ports()
        ));
    }
    let note =
        BoundedString::<256>::new(note).map_err(|e| format!("the note cannot be used: {e}"))?;
    let ports_b = BoundedVec::try_from(ports).map_err(|e| format!("too many ports: {e}"))?;
    let keys = DeviceTunnelKeys::from_seed(random());
    let request = TunnelRequest::new(&keys, device_facts(), duration_secs, ports_b, note.clone());
    let id = keys.tunnel_id().to_string();
    let record = TunnelRecord {
        id: id.clone(),
        credential: None,
        duration_secs,
        ports: ports.to_vec(),
        note: note.as_str().to_string(),
        requested_at: wall_now(),
        phase: Phase::Pending,
        accepted_seq: None,
        approval: None,
        used_secs: 0,
        checkpoint_wall: wall_now(),
        reported_connected: false,
        end: None,
    };
    ctx.state
        .save_seed(&id, keys.seed())
        .and_then(|()| ctx.state.save(&record))
        .map_err(|e| format!("cannot save the request: {e}"))?;
    let created = ctx.cp.call(
        &keys.credential(),
        DeviceRequest::Create(Box::new(request)),
        CALL_TIMEOUT,
    );
    let stale_after_secs = match created {
        Ok(DeviceResponse::Created {
            tunnel_id,
            stale_after_secs,
        }) if tunnel_id == keys.tunnel_id() => stale_after_secs,
        other => {
            let _ = ctx.state.remove(&id);
            return Err(match other {
                Err(e) => e.to_string(),
                Ok(r) => format!("the control plane answered the request with {r:?}"),
            });
        }
    };
    ctx.log(
        &id,
        Entry::Requested {
            duration_secs,
            ports: ports.to_vec(),
            note: record.note.clone(),
        },
    );
    ctx.update(&id, |s| {
        s.phase = "pending".into();
        s.requested_at = record.requested_at;
    });
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

/// A running peer and its access.
struct Up {
    /// The admin's SSH key (to rewrite the expiry after a clock jump).
    admin_ssh: [u8; 32],
    /// The wall-clock expiry written into authorized_keys and sudoers.
    written_expiry: u64,
    engine: EngineHandle,
    thread: JoinHandle<std::io::Result<()>>,
    clock: TunnelClock,
    /// What the hooks are given (the support user, the addresses).
    hook_values: HookValues,
}

/// Supervises one tunnel until it ends.
pub struct Supervisor {
    ctx: Arc<Ctx>,
    rec: TunnelRecord,
    keys: DeviceTunnelKeys,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    known: Arc<Mutex<TunnelState>>,
    stop_poll: Arc<AtomicBool>,
    stop_requested: Arc<AtomicBool>,
    up: Option<Up>,
    last_checkpoint: Instant,
    pending_since: Instant,
    stale_after: Duration,
}

impl Supervisor {
    /// Starts supervising `rec` on a new thread; returns its mailbox.
    pub fn spawn(
        ctx: Arc<Ctx>,
        rec: TunnelRecord,
        stale_after_secs: u32,
    ) -> Result<(Mailbox, JoinHandle<()>), String> {
        let seed = ctx
            .state
            .seed(&rec.id)
            .ok_or_else(|| format!("tunnel {}: its seed is missing", rec.id))?;
        let keys = DeviceTunnelKeys::from_seed(*seed);
        let (tx, rx) = mpsc::channel();
        let stop_requested = Arc::new(AtomicBool::new(false));
        let known = match rec.phase {
            Phase::Connected if rec.reported_connected => {
                TunnelState::Connected(ApprovalSeq(rec.accepted_seq.unwrap_or(1)))
            }
            _ => TunnelState::Pending,
        };
        let mut sup = Supervisor {
            ctx,
            rec,
            keys,
            tx: tx.clone(),
            rx,
            known: Arc::new(Mutex::new(known)),
            stop_poll: Arc::new(AtomicBool::new(false)),
            stop_requested: stop_requested.clone(),
            up: None,
            last_checkpoint: Instant::now(),
            pending_since: Instant::now(),
            stale_after: Duration::from_secs(u64::from(stale_after_secs.clamp(60, MAX_STALE_SECS))),
        };
        let name = format!("tunnel-{}", &sup.rec.id[..8.min(sup.rec.id.len())]);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || sup.run())
            .map_err(|e| format!("cannot start the tunnel thread: {e}"))?;
        Ok((
            Mailbox {
                tx,
                stop: stop_requested,
            },
            thread,
        ))
    }

    fn id(&self) -> String {
        self.rec.id.clone()
    }

    fn run(&mut self) {
        if matches!(self.rec.phase, Phase::Connecting | Phase::Connected) {
            self.resume();
            if self.rec.phase == Phase::Ended {
                return;
            }
        } else {
            let id = self.id();
            self.ctx.update(&id, |s| {
                s.phase = "pending".into();
                s.requested_at = self.rec.requested_at;
            });
        }
        self.start_poller();
        loop {
            let wait = match &self.up {
                Some(up) => up
                    .clock
                    .remaining(Instant::now())
                    .min(CHECKPOINT.saturating_sub(self.last_checkpoint.elapsed())),
                None => self
                    .stale_after
                    .saturating_sub(self.pending_since.elapsed())
                    .min(Duration::from_secs(5)),
            };
            let msg = self.rx.recv_timeout(wait);
            if self.stop_requested.load(Ordering::SeqCst) {
                return self.end(StopReason::Owner, true);
            }
            match msg {
                Ok(Msg::Stop) => return self.end(StopReason::Owner, true),
                Ok(Msg::PeerEventsDropped(n)) => {
                    let id = self.id();
                    self.ctx.log(
                        &id,
                        Entry::Problem {
                            what: format!("{n} connection events not logged (too many at once)"),
                        },
                    );
                }
                Ok(Msg::Poll(r)) => {
                    if self.on_poll(r) {
                        return;
                    }
                }
                Ok(Msg::ConnectedAcknowledged) => {
                    self.rec.reported_connected = true;
                    self.save();
                }
                Ok(Msg::Peer(ev)) => self.on_peer(ev),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if let Some(up) = &self.up {
                let now = Instant::now();
                if up.clock.expired(now) {
                    return self.end(StopReason::Expired, true);
                }
                if self.last_checkpoint.elapsed() >= CHECKPOINT {
                    self.checkpoint();
                }
            } else if self.rec.phase == Phase::Pending
                && self.pending_since.elapsed() >= self.stale_after
            {
                // The control plane expires it too; this holds when it is unreachable.
                return self.end(StopReason::Expired, true);
            }
        }
    }

    /// Polls on its own thread until told to stop; updates `known` itself so
    /// it never spins on a state it has already reported.
    fn start_poller(&self) {
        let ctx = self.ctx.clone();
        let cred = self.keys.credential();
        let tunnel_id = self.keys.tunnel_id();
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
                        Ok(_) => backoff.next_delay(),
                        Err(_) => backoff.next_delay(),
                    };
                    if stop.load(Ordering::SeqCst) || tx.send(Msg::Poll(r)).is_err() {
                        return;
                    }
                    sleep_unless(&stop, delay);
                }
            });
        if let Err(e) = spawned {
            eprintln!("support-agent: cannot start the poll thread: {e}");
        }
    }

    /// Handles a poll answer; true when the tunnel has ended.
    fn on_poll(&mut self, r: Result<DeviceResponse, CallError>) -> bool {
        let id = self.id();
        let (state, approval) = match r {
            Ok(DeviceResponse::Poll { state, approval }) => (state, approval),
            Ok(other) => {
                let e = format!("the control plane answered a poll with {other:?}");
                self.ctx.update(&id, |s| s.control_plane_error = Some(e));
                return false;
            }
            Err(e) => {
                let text = e.to_string();
                self.ctx
                    .update(&id, |s| s.control_plane_error = Some(text.clone()));
                if let CallError::Refused(api) = &e {
                    if api.code == support_protocol::messages::ErrorCode::NotFound {
                        // The control plane no longer knows the tunnel (purged): it is over.
                        self.end(StopReason::Failed(text200(&text)), false);
                        return true;
                    }
                }
                return false;
            }
        };
        self.ctx.update(&id, |s| s.control_plane_error = None);
        match state {
            TunnelState::Stopped => {
                self.end(StopReason::Admin, false);
                true
            }
            TunnelState::Expired => {
                self.end(StopReason::Expired, false);
                true
            }
            TunnelState::Failed => {
                self.end(
                    StopReason::Failed(text200("the control plane marked it failed")),
                    false,
                );
                true
            }
            TunnelState::Approved(_) if self.rec.phase == Phase::Pending => match approval {
                Some(sealed) => self.on_approval(&sealed),
                None => false,
            },
            _ => false,
        }
    }

    /// Verifies an approval and, only if it passes, brings the tunnel up.
    fn on_approval(&mut self, sealed: &SealedApproval) -> bool {
        let id = self.id();
        let accepted = approval::accept(
            sealed,
            &self.keys,
            &Requested {
                ports: &self.rec.ports,
                duration_secs: self.rec.duration_secs,
            },
            &self.ctx.config,
            self.ctx.state.time_floor(),
            self.rec.accepted_seq.map(ApprovalSeq),
        );
        let acc = match accepted {
            Ok(a) => a,
            Err(reason) => {
                eprintln!("support-agent: tunnel {id}: {reason}");
                self.ctx.log(
                    &id,
                    Entry::Refused {
                        reason: reason.clone(),
                    },
                );
                self.end(StopReason::Refused(text200(&reason)), true);
                return true;
            }
        };
        let cert = &sealed.certificate.body;
        self.ctx.log(
            &id,
            Entry::Approved {
                approval: acc.seq.0,
                approver: cert.name.as_str().to_string(),
                certificate_serial: cert.serial,
                approver_key: hex::encode(cert.key.0),
                ssh_key: approval::ssh_fingerprint(&acc.contents.admin_ssh.0),
                duration_secs: acc.contents.duration_secs,
                ports: acc.contents.ports.to_vec(),
                relay: approval::relay_addr(&acc.contents.relay).to_string(),
            },
        );
        if let Err(e) = self.ctx.state.raise_time_floor(acc.contents.issued_at) {
            eprintln!("support-agent: cannot save the time floor: {e}");
        }
        // Saved before any change, so a crash from here on is repaired or resumed.
        self.rec.phase = Phase::Connecting;
        self.rec.accepted_seq = Some(acc.seq.0);
        self.rec.approval = support_protocol::encode(sealed).ok().map(hex::encode);
        self.rec.used_secs = 0;
        self.rec.checkpoint_wall = wall_now();
        self.save();
        let name = cert.name.as_str().to_string();
        self.ctx.update(&id, |s| {
            s.phase = "connecting".into();
            s.approver = Some(name);
        });
        self.bring_up(&acc, 0)
    }

    /// After a restart: re-verify the saved approval and bring it back up.
    fn resume(&mut self) {
        let id = self.id();
        let sealed = self
            .rec
            .approval
            .as_deref()
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| support_protocol::decode::<SealedApproval>(&b).ok());
        let Some(sealed) = sealed else {
            return self.end(
                StopReason::Failed(text200("the saved approval is unreadable")),
                true,
            );
        };
        let accepted = approval::accept(
            &sealed,
            &self.keys,
            &Requested {
                ports: &self.rec.ports,
                duration_secs: self.rec.duration_secs,
            },
            &self.ctx.config,
            self.ctx.state.time_floor(),
            None,
        );
        let acc = match accepted {
            Ok(a) => a,
            Err(reason) => return self.end(StopReason::Failed(text200(&reason)), true),
        };
        let used = resumed_used_secs(self.rec.used_secs, self.rec.checkpoint_wall, wall_now());
        self.ctx.log(&id, Entry::Resumed { used_secs: used });
        let name = sealed.certificate.body.name.as_str().to_string();
        self.ctx.update(&id, |s| {
            s.phase = "connecting".into();
            s.requested_at = self.rec.requested_at;
            s.approver = Some(name);
        });
        self.bring_up(&acc, used);
    }

    /// Creates the access, starts the peer, reports connected. True if it ended instead.
    fn bring_up(&mut self, acc: &Accepted, used: u64) -> bool {
        let id = self.id();
        let duration = u64::from(acc.contents.duration_secs);
        let clock = TunnelClock::new(used, duration, Instant::now());
        let remaining = clock.remaining(Instant::now());
        if remaining.is_zero() {
            self.end(StopReason::Expired, true);
            return true;
        }
        let user = access::user_name(self.keys.tunnel_id());
        let a = &acc.contents.addresses;
        let address = std::net::Ipv4Addr::from(a.device).to_string();
        let network = network_cidr(a.device, a.prefix_len);
        let values = HookValues {
            tunnel_id: id.clone(),
            tunnel_name: format!("support-{id}"),
            address: address.clone(),
            network,
            user: user.clone(),
        };
        let hooks = self.ctx.config.hooks.clone();
        if let Err(e) = hooks::run("pre-up", hooks.pre_up.as_deref(), &values) {
            self.ctx.log(&id, Entry::Problem { what: e.clone() });
            self.end(StopReason::Failed(text200(&e)), true);
            return true;
        }
        let grant = Grant {
            tunnel: self.keys.tunnel_id(),
            instance: &self.ctx.instance,
            admin_ssh: &acc.contents.admin_ssh.0,
            expiry_wall: wall_now() + remaining.as_secs() + 1,
        };
        if let Err(e) = access::create(&self.ctx.config, &grant) {
            let what = format!("cannot create the support access: {e}");
            eprintln!("support-agent: tunnel {id}: {what}");
            self.ctx.log(&id, Entry::Problem { what: what.clone() });
            self.end(StopReason::Failed(text200(&what)), true);
            return true;
        }
        let (events_tx, events_rx) = mpsc::channel::<Event>();
        let mailbox = self.tx.clone();
        let _ = std::thread::Builder::new()
            .name("peer-events".into())
            .spawn(move || forward_peer_events(events_rx, mailbox));
        let config = approval::engine_config(&self.keys, acc, &self.ctx.config);
        let (engine, thread) = match Engine::spawn(config, Some(events_tx)) {
            Ok(e) => e,
            Err(e) => {
                let what = format!("cannot start the tunnel peer: {e}");
                self.ctx.log(&id, Entry::Problem { what: what.clone() });
                self.end(StopReason::Failed(text200(&what)), true);
                return true;
            }
        };
        self.up = Some(Up {
            admin_ssh: acc.contents.admin_ssh.0,
            written_expiry: grant.expiry_wall,
            engine,
            thread,
            clock,
            hook_values: values,
        });
        if let Some(up) = &self.up {
            self.run_hook("post-up", hooks.post_up.as_deref(), &up.hook_values);
        }
        self.rec.phase = Phase::Connected;
        self.rec.used_secs = used;
        self.rec.checkpoint_wall = wall_now();
        self.last_checkpoint = Instant::now();
        self.save();
        self.ctx.log(
            &id,
            Entry::Up {
                user: user.clone(),
                address,
                remaining_secs: remaining.as_secs(),
            },
        );
        self.ctx.update(&id, |s| {
            s.phase = "connected".into();
            s.user = Some(user);
            s.remaining_secs = Some(remaining.as_secs());
        });
        if !self.rec.reported_connected {
            self.report_connected(acc);
        }
        false
    }

    /// Sends the sealed connected report, retrying with backoff on a helper thread.
    fn report_connected(&self, acc: &Accepted) {
        let host_keys: Vec<BoundedString<1024>> = access::host_keys(&self.ctx.config)
            .iter()
            .filter_map(|k| BoundedString::new(k).ok())
            .take(support_protocol::connected_report::MAX_HOST_KEYS)
            .collect();
        let report = ConnectedReport {
            accepted_box: FixedBytes(acc.box_hash),
            host_keys: BoundedVec::new(host_keys).unwrap_or_default(),
        };
        let sealed = match report.seal(
            self.keys.tunnel_id(),
            acc.seq,
            &self.keys.one_time_secret(),
            random(),
        ) {
            Ok(s) => s,
            Err(e) => {
                self.ctx.log(
                    &self.id(),
                    Entry::Problem {
                        what: format!("cannot seal the connected report: {e}"),
                    },
                );
                return;
            }
        };
        let notice = DeviceRequest::Connected(ConnectedNotice {
            tunnel_id: self.keys.tunnel_id(),
            approval_seq: acc.seq,
            report: sealed,
        });
        let ctx = self.ctx.clone();
        let cred = self.keys.credential();
        let stop = self.stop_poll.clone();
        let tx = self.tx.clone();
        let _ = std::thread::Builder::new()
            .name("report".into())
            .spawn(move || {
                if deliver(&ctx, &cred, notice, &stop) {
                    let _ = tx.send(Msg::ConnectedAcknowledged);
                }
            });
    }

    fn on_peer(&mut self, ev: Event) {
        let id = self.id();
        let entry = match ev {
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
        };
        self.ctx.log(&id, entry);
    }

    fn checkpoint(&mut self) {
        self.follow_clock_jumps();
        if let Some(up) = &self.up {
            let now = Instant::now();
            self.rec.used_secs = up.clock.used(now);
            self.rec.checkpoint_wall = wall_now();
            self.last_checkpoint = now;
            let remaining = up.clock.remaining(now).as_secs();
            self.save();
            let id = self.id();
            self.ctx.update(&id, |s| s.remaining_secs = Some(remaining));
        }
    }

    /// The wall-clock expiries OpenSSH and sudo enforce were computed from
    /// the wall clock at connect. When that clock jumps (a Pi without RTC
    /// syncing NTP mid-tunnel), they are rewritten from the monotonic time left.
    fn follow_clock_jumps(&mut self) {
        let Some(up) = &self.up else { return };
        let expiry = wall_now() + up.clock.remaining(Instant::now()).as_secs() + 1;
        if !expiry_moved(up.written_expiry, expiry) {
            return;
        }
        let grant = Grant {
            tunnel: self.keys.tunnel_id(),
            instance: &self.ctx.instance,
            admin_ssh: &up.admin_ssh,
            expiry_wall: expiry,
        };
        let id = self.id();
        match access::create(&self.ctx.config, &grant) {
            Ok(()) => {
                if let Some(up) = &mut self.up {
                    up.written_expiry = expiry;
                }
                self.ctx.log(
                    &id,
                    Entry::Problem {
                        what: "the wall clock jumped; the key's and sudo's expiry follow the time left".into(),
                    },
                );
            }
            Err(e) => self.ctx.log(&id, Entry::Problem { what: e }),
        }
    }

    /// Runs a hook; a failure is logged for the owner.
    fn run_hook(&self, stage: &str, hook: Option<&std::path::Path>, values: &HookValues) {
        if let Err(e) = hooks::run(stage, hook, values) {
            self.ctx.log(&self.rec.id, Entry::Problem { what: e });
        }
    }

    fn save(&self) {
        if let Err(e) = self.ctx.state.save(&self.rec) {
            eprintln!(
                "support-agent: tunnel {}: cannot save its record: {e}",
                self.rec.id
            );
        }
    }

    /// Tears everything down, wipes the secrets, and (if `notify`) tells the
    /// control plane, retrying in the background until it hears.
    fn end(&mut self, reason: StopReason, notify: bool) {
        self.stop_poll.store(true, Ordering::SeqCst);
        let id = self.id();
        let user = access::user_name(self.keys.tunnel_id());
        let hooks = self.ctx.config.hooks.clone();
        let up = self.up.take();
        if let Some(up) = &up {
            self.run_hook("pre-down", hooks.pre_down.as_deref(), &up.hook_values);
            up.engine.shutdown();
        }
        if self.rec.accepted_seq.is_some() {
            if let Err(e) = access::remove(&self.ctx.config, &user) {
                eprintln!("support-agent: tunnel {id}: {e}");
                self.ctx.log(&id, Entry::Problem { what: e });
            }
        }
        if let Some(up) = up {
            let _ = up.thread.join();
            self.run_hook("post-down", hooks.post_down.as_deref(), &up.hook_values);
        }
        let reason_text = reason_text(&reason);
        self.ctx.log(
            &id,
            Entry::Ended {
                reason: reason_text.clone(),
            },
        );
        self.ctx.update(&id, |s| {
            s.phase = "ended".into();
            s.remaining_secs = None;
            s.ended = Some(reason_text.clone());
        });
        finish_record(
            &self.ctx,
            &mut self.rec,
            &self.keys.credential(),
            reason,
            notify,
        );
    }
}

/// Ends a tunnel that no supervisor runs (no daemon): removes its access,
/// wipes its secrets, and tries once to tell the control plane; if that
/// fails the record keeps the credential and the daemon retries at start.
pub fn end_offline(ctx: &Arc<Ctx>, rec: &mut TunnelRecord) {
    let Some(id) = rec.tunnel_id() else { return };
    let seed = ctx.state.seed(&rec.id);
    if rec.accepted_seq.is_some() {
        if let Err(e) = access::remove(&ctx.config, &access::user_name(id)) {
            ctx.log(&rec.id, Entry::Problem { what: e });
        }
    }
    let reason = StopReason::Owner;
    ctx.log(
        &rec.id,
        Entry::Ended {
            reason: reason_text(&reason),
        },
    );
    let Some(seed) = seed else { return };
    let cred = DeviceTunnelKeys::from_seed(*seed).credential();
    let _ = ctx.state.wipe_seed(&rec.id);
    let told = ctx
        .cp
        .call(
            &cred,
            DeviceRequest::Stopped(StoppedNotice {
                tunnel_id: id,
                reason: reason.clone(),
            }),
            CALL_TIMEOUT,
        )
        .is_ok();
    rec.approval = None;
    rec.phase = Phase::Ended;
    rec.end = Some(EndNote {
        text: reason_text(&reason),
        reason,
        at: wall_now(),
        notified: told,
    });
    if told {
        let _ = ctx.state.remove(&rec.id);
    } else {
        rec.credential = Some(hex::encode(cred.secret()));
        let _ = ctx.state.save(rec);
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

/// Wipes a record's secrets; keeps only the credential until the stop notice
/// is delivered (then removes the record).
pub fn finish_record(
    ctx: &Arc<Ctx>,
    rec: &mut TunnelRecord,
    cred: &StaticKeypair,
    reason: StopReason,
    notify: bool,
) {
    if let Err(e) = ctx.state.wipe_seed(&rec.id) {
        eprintln!(
            "support-agent: tunnel {}: cannot wipe its seed: {e}",
            rec.id
        );
    }
    rec.approval = None;
    rec.phase = Phase::Ended;
    rec.end = Some(EndNote {
        text: reason_text(&reason),
        reason: reason.clone(),
        at: wall_now(),
        notified: !notify,
    });
    if !notify {
        let _ = ctx.state.remove(&rec.id);
        return;
    }
    rec.credential = Some(hex::encode(cred.secret()));
    if let Err(e) = ctx.state.save(rec) {
        eprintln!(
            "support-agent: tunnel {}: cannot save its record: {e}",
            rec.id
        );
    }
    spawn_stop_notice(ctx.clone(), rec.clone(), cred.clone(), reason);
}

/// Tells the control plane a tunnel ended (retrying), then drops its record.
pub fn spawn_stop_notice(
    ctx: Arc<Ctx>,
    rec: TunnelRecord,
    cred: StaticKeypair,
    reason: StopReason,
) {
    let Some(tunnel_id) = rec.tunnel_id() else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("stop-notice".into())
        .spawn(move || {
            let never = AtomicBool::new(false);
            let notice = DeviceRequest::Stopped(StoppedNotice { tunnel_id, reason });
            if deliver(&ctx, &cred, notice, &never) {
                let _ = ctx.state.remove(&rec.id);
            }
        });
}

/// Calls until the control plane accepts (or says the tunnel has already
/// ended), with backoff and jitter; gives up after a day or when `stop` is set.
fn deliver(ctx: &Ctx, cred: &StaticKeypair, req: DeviceRequest, stop: &AtomicBool) -> bool {
    let mut backoff = Backoff::new(Duration::from_secs(300));
    let give_up = Instant::now() + Duration::from_secs(24 * 3600);
    while Instant::now() < give_up && !stop.load(Ordering::SeqCst) {
        match ctx.cp.call(cred, req.clone(), CALL_TIMEOUT) {
            Ok(_) => return true,
            // The control plane knows better (ended or purged): nothing left to tell.
            Err(CallError::Refused(_)) => return true,
            Err(_) => sleep_unless(stop, backoff.next_delay()),
        }
    }
    false
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
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

/// A reason cut to what the protocol carries.
pub fn text200(s: &str) -> BoundedString<200> {
    bounded(s)
}

/// True when the wall clock moved by more than a minute against the monotonic one.
fn expiry_moved(written: u64, now_expiry: u64) -> bool {
    written.abs_diff(now_expiry) > 60
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

    #[test]
    fn expiries_follow_only_real_clock_jumps() {
        assert!(!expiry_moved(1000, 1000));
        assert!(!expiry_moved(1000, 1059), "drift and rounding are ignored");
        assert!(
            expiry_moved(1000, 1000 + 86400 * 365),
            "NTP fixing a 1970 clock"
        );
        assert!(expiry_moved(1_800_000_000, 100), "a clock set back");
    }

    #[test]
    fn network_of_an_address() {
        assert_eq!(network_cidr([10, 77, 0, 2], 28), "10.77.0.0/28");
        assert_eq!(network_cidr([10, 77, 0, 18], 28), "10.77.0.16/28");
    }

    #[test]
    fn reasons_fit_the_protocol() {
        let long = "é".repeat(300);
        assert!(text200(&long).as_str().len() <= 200);
        assert_eq!(text200("a\nb").as_str(), "ab");
    }
}
