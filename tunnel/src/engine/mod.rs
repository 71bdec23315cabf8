//! The I/O loop of a peer: one UDP socket to the relay (or the peer), the
//! WireGuard session, smoltcp, and the connections it forwards.
//!
//! One thread, mio for readiness, no async runtime (the device side must not
//! need tokio). Each turn it drains the UDP socket, accepts local clients
//! (admin role), polls smoltcp, promotes accepted tunnel connections
//! (device role), pumps bytes between every smoltcp socket and its local
//! stream (reading straight into smoltcp's buffers), encrypts what smoltcp
//! sent, and runs the timers.
//!
//! | module | owns |
//! |---|---|
//! | this one | the configuration, the loop, UDP and WireGuard |
//! | `handle` | [`EngineHandle`] (commands in) and [`Event`] (events out) |
//! | `pump` | the connections: a smoltcp socket and a local stream each |
//! | `device` | the device role: listening pools, promotion to a local target |
//! | `admin` | the admin role: local listeners, connections to the device |

mod admin;
mod device;
mod handle;
mod pump;

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use crate::ingress::Ingress;
use crate::profile::BufferProfile;
use crate::udp::{Udp, RECV_BATCH};
use crate::virtual_device::VirtualDevice;
use crate::wireguard::{Accepted, WireGuard};
use admin::Listener;
use handle::Command;
pub use handle::{EngineHandle, Event};
pub use pump::tcp_socket;
use pump::Conn;

const UDP: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_LISTENER: usize = 16;
const FIRST_CONN: usize = 1 << 20;
const TICK: Duration = Duration::from_millis(100);
/// Packets smoltcp queues before the engine encrypts and sends them: one
/// UDP GSO send's worth.
const EGRESS_BATCH: usize = 64;
/// Datagrams read before smoltcp takes them in.
const INGRESS_BATCH: usize = 2 * RECV_BATCH;

/// One allowlisted device port and where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The port on the device's tunnel address.
    pub port: u16,
    /// The local service it reaches (e.g. 127.0.0.1:22).
    pub target: SocketAddr,
}

/// Which end of the tunnel this peer is.
#[derive(Clone, Debug)]
pub enum Role {
    /// Accepts connections on allowlisted ports only and forwards each to its target.
    Device {
        /// The allowlist.
        forwards: Vec<Forward>,
    },
    /// Opens connections to the device.
    Admin,
}

/// Everything a peer needs.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Our WireGuard private key.
    pub private_key: [u8; 32],
    /// The other peer's WireGuard public key.
    pub peer_public: [u8; 32],
    /// The pre-shared key (the hybrid PSK).
    pub psk: [u8; 32],
    /// Where datagrams go (the relay, or the peer itself).
    pub endpoint: SocketAddr,
    /// The local UDP address to bind (port 0 for any).
    pub bind: SocketAddr,
    /// Our tunnel address.
    pub local_ip: Ipv4Addr,
    /// The other peer's tunnel address.
    pub peer_ip: Ipv4Addr,
    /// The tunnel network's prefix length.
    pub prefix_len: u8,
    /// WireGuard persistent keepalive (holds NAT mappings), seconds.
    pub keepalive_secs: u16,
    /// Buffer sizes and limits.
    pub profile: BufferProfile,
    /// Device or admin.
    pub role: Role,
    /// Random bits for WireGuard's session index and smoltcp's seed.
    pub random: u64,
}

/// A running peer.
pub struct Engine {
    config: EngineConfig,
    poll: Poll,
    udp: Udp,
    commands: Receiver<Command>,
    events: Option<Sender<Event>>,
    wg: WireGuard,
    iface: Interface,
    dev: VirtualDevice,
    sockets: SocketSet<'static>,
    /// Device role: listening sockets per port.
    pool: Vec<(u16, SocketHandle)>,
    conns: HashMap<Token, Conn>,
    listeners: HashMap<Token, Listener>,
    next_token: usize,
    next_listener: usize,
    next_id: u64,
    next_port: u16,
    tunnel_up: bool,
    /// mio said the UDP socket is readable, and it has not yet run dry.
    udp_readable: bool,
    /// When the earliest write held for a batch is due (`pump.rs`).
    write_hold: Option<Instant>,
    udp_out: Vec<Vec<u8>>,
    reap: Vec<SocketHandle>,
    started: Instant,
}

fn smol_now(start: Instant) -> smoltcp::time::Instant {
    smol_at(start, Instant::now())
}

/// `now` on smoltcp's clock, which starts at the engine's start.
fn smol_at(start: Instant, now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.saturating_duration_since(start).as_micros() as i64)
}

impl Engine {
    /// Binds the UDP socket and starts the engine on its own thread.
    /// `events` receives connection events (the agent logs them).
    pub fn spawn(
        config: EngineConfig,
        events: Option<Sender<Event>>,
    ) -> io::Result<(EngineHandle, std::thread::JoinHandle<io::Result<()>>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut udp = UdpSocket::from_std(crate::udp::connected(
            config.bind,
            config.endpoint,
            config.profile.udp_buffer,
        )?);
        poll.registry()
            .register(&mut udp, UDP, Interest::READABLE)?;
        let local_udp = udp.local_addr()?;
        let (tx, rx) = mpsc::channel();
        let handle = EngineHandle {
            commands: tx,
            waker,
            local_udp,
        };
        let thread = std::thread::Builder::new()
            .name("support-tunnel".into())
            .spawn(move || {
                let mut engine = Engine::new(config, poll, udp, rx, events);
                engine.run()
            })?;
        Ok((handle, thread))
    }

    fn new(
        config: EngineConfig,
        poll: Poll,
        udp: UdpSocket,
        commands: Receiver<Command>,
        events: Option<Sender<Event>>,
    ) -> Self {
        let start = Instant::now();
        let wg = WireGuard::new(
            config.private_key,
            config.peer_public,
            config.psk,
            config.keepalive_secs,
            config.random as u32,
            start,
        );
        let mut dev = VirtualDevice::default();
        let mut iface_config = Config::new(HardwareAddress::Ip);
        iface_config.random_seed = config.random;
        let mut iface = Interface::new(
            iface_config,
            &mut dev,
            smoltcp::time::Instant::from_micros(0),
        );
        iface.update_ip_addrs(|ips| {
            let _ = ips.push(IpCidr::new(
                IpAddress::Ipv4(config.local_ip),
                config.prefix_len,
            ));
        });
        let mut engine = Self {
            next_port: 49152 + (config.random % 8192) as u16,
            config,
            poll,
            udp: Udp::new(udp),
            commands,
            events,
            wg,
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            pool: Vec::new(),
            conns: HashMap::new(),
            listeners: HashMap::new(),
            next_token: FIRST_CONN,
            next_listener: FIRST_LISTENER,
            next_id: 1,
            tunnel_up: false,
            udp_readable: true,
            write_hold: None,
            udp_out: Vec::new(),
            reap: Vec::new(),
            started: start,
        };
        engine.open_pools();
        engine
    }

    fn emit(&self, e: Event) {
        if let Some(tx) = &self.events {
            let _ = tx.send(e);
        }
    }

    fn run(&mut self) -> io::Result<()> {
        let start = self.started;
        let mut events = Events::with_capacity(256);
        let mut next_tick = Instant::now();
        self.wg
            .start(Instant::now(), &mut |p| self.udp_out.push(p.to_vec()));
        self.flush_udp();
        let mut busy = false;
        loop {
            // While work moves, only collect readiness; otherwise sleep
            // until smoltcp's next timer or our tick.
            let delay = if busy {
                Duration::ZERO
            } else {
                let now = Instant::now();
                let mut delay = self
                    .iface
                    .poll_delay(smol_at(start, now), &self.sockets)
                    .map(Duration::from)
                    .unwrap_or(TICK)
                    .min(next_tick.saturating_duration_since(now));
                if let Some(due) = self.write_hold {
                    delay = delay.min(due.saturating_duration_since(now));
                }
                delay
            };
            match self.poll.poll(&mut events, Some(delay)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                self.note_ready(event);
            }
            while let Ok(cmd) = self.commands.try_recv() {
                match cmd {
                    Command::Shutdown => {
                        self.close_all();
                        return Ok(());
                    }
                    Command::Listen {
                        listener,
                        remote_port,
                        once,
                    } => self.add_listener(listener, remote_port, once)?,
                }
            }
            busy = self.turn()?;
            if Instant::now() >= next_tick {
                self.wg
                    .tick(Instant::now(), &mut |p| self.udp_out.push(p.to_vec()));
                self.flush_udp();
                next_tick = Instant::now() + TICK;
            }
        }
    }

    /// Records what mio reported ready. Its readiness is edge-triggered: a
    /// flag set here stays set until a call on that socket would block, so
    /// no turn spends a system call on a socket with nothing for it.
    fn note_ready(&mut self, event: &mio::event::Event) {
        let token = event.token();
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        let writable = event.is_writable() || event.is_write_closed() || event.is_error();
        if token == UDP {
            self.udp_readable |= readable;
        } else if let Some(c) = self.conns.get_mut(&token) {
            c.note_ready(readable, writable);
        } else if let Some(l) = self.listeners.get_mut(&token) {
            l.ready |= readable;
        }
    }

    /// One pass over everything that is ready. Returns whether anything moved.
    fn turn(&mut self) -> io::Result<bool> {
        // One clock reading per turn: a turn takes microseconds.
        let now = Instant::now();
        let ts = smol_at(self.started, now);
        let mut progress = self.receive_udp(now)?;
        progress |= self.accept_local();
        // One packet at a time, refilling the listening pool in between:
        // smoltcp has no accept backlog, so a burst of SYNs would otherwise
        // meet a closed port.
        let mut ingress = Ingress::default();
        while ingress.take_one(ts, &mut self.iface, &mut self.dev, &mut self.sockets) {
            progress = true;
            self.promote_accepted();
        }
        progress |= self.pump_all(now);
        // smoltcp sends at most 64 segments per socket per call (upstream:
        // one): call it until it has nothing more, encrypting and sending a
        // batch at a time, so that a burst leaves in few system calls and
        // few packet buffers are held.
        loop {
            let mut emitted = false;
            while self.dev.queued_tx() < EGRESS_BATCH {
                let queued = self.dev.queued_tx();
                let _ = self.iface.poll_egress(ts, &mut self.dev, &mut self.sockets);
                if self.dev.queued_tx() == queued {
                    break;
                }
                emitted = true;
            }
            progress |= self.encrypt_outgoing();
            if !emitted {
                break;
            }
        }
        for h in self.reap.drain(..) {
            self.sockets.remove(h);
        }
        self.flush_udp();
        Ok(progress)
    }

    /// Reads datagrams while the socket has them, up to `INGRESS_BATCH`
    /// waiting for smoltcp (the rest waits in the socket's buffer for the
    /// next turn rather than in ours).
    fn receive_udp(&mut self, now: Instant) -> io::Result<bool> {
        let mut got = false;
        while self.udp_readable && self.dev.queued_rx() + RECV_BATCH <= INGRESS_BATCH {
            let (wg, udp_out, dev) = (&mut self.wg, &mut self.udp_out, &mut self.dev);
            let mut proof = false;
            let received = self.udp.receive(&mut |d| {
                let accepted = wg.datagram(now, d, &mut |p| udp_out.push(p.to_vec()), &mut |p| {
                    dev.push_rx(p)
                });
                proof |= matches!(accepted, Ok(Accepted::Proof));
            })?;
            if proof && !self.tunnel_up {
                self.tunnel_up = true;
                self.emit(Event::TunnelUp);
            }
            got |= received.datagrams > 0;
            self.udp_readable = !received.dry;
            self.flush_udp();
        }
        Ok(got)
    }

    /// Sends what WireGuard answered outside the data path (handshakes,
    /// cookies, keepalives).
    fn flush_udp(&mut self) {
        for p in self.udp_out.drain(..) {
            self.udp.queue(&p);
        }
        self.udp.flush();
    }

    fn encrypt_outgoing(&mut self) -> bool {
        let mut any = false;
        while let Some(p) = self.dev.pop_tx() {
            any = true;
            let udp = &mut self.udp;
            self.wg.send(&p, &mut |d| udp.queue(d));
            self.dev.recycle(p);
        }
        self.udp.flush();
        any
    }
}
