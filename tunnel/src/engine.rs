//! The I/O loop of a peer: one UDP socket to the relay (or the peer), the
//! WireGuard session, smoltcp, and the connections it forwards.
//!
//! One thread, mio for readiness, no async runtime (the device side must not
//! need tokio). Each turn it drains the UDP socket, accepts local clients
//! (admin role), polls smoltcp, promotes accepted tunnel connections
//! (device role), pumps bytes between every smoltcp socket and its local
//! stream (reading straight into smoltcp's buffers), encrypts what smoltcp
//! sent, and runs the timers.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use smoltcp::iface::{Config, Interface, PollIngressSingleResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};

use crate::profile::BufferProfile;
use crate::virtual_device::VirtualDevice;
use crate::wireguard::WireGuard;

const UDP: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_LISTENER: usize = 16;
const FIRST_CONN: usize = 1 << 20;
/// A connection whose peer stops acknowledging is aborted after this.
const TCP_TIMEOUT: Duration = Duration::from_secs(20);
/// TCP keepalive on tunnel connections, so a dead peer is noticed while idle.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
const TICK: Duration = Duration::from_millis(100);
/// The queueing delay a bulk transfer may add to the path (or a quarter of
/// the path's round trip, if more): an SSH keystroke next to a transfer
/// waits behind at most this much of it.
const QUEUE_DELAY_TARGET: Duration = Duration::from_millis(5);

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

/// What happened, for the agent's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The first authenticated datagram arrived: the handshake completed.
    TunnelUp,
    /// A connection through the tunnel opened.
    Opened {
        /// Connection number.
        id: u64,
        /// The device port.
        port: u16,
    },
    /// A connection closed, with its byte counts.
    Closed {
        /// Connection number.
        id: u64,
        /// The device port.
        port: u16,
        /// Bytes from the tunnel to the local side.
        bytes_in: u64,
        /// Bytes from the local side into the tunnel.
        bytes_out: u64,
        /// How long it was open.
        duration: Duration,
    },
    /// A connection was refused (cap reached, or the local target refused).
    Refused {
        /// The device port.
        port: u16,
        /// Why.
        reason: String,
    },
}

enum Command {
    Listen {
        listener: std::net::TcpListener,
        remote_port: u16,
        /// Closed after its first connection (`open`).
        once: bool,
    },
    Shutdown,
}

/// Controls a running engine from other threads.
#[derive(Clone)]
pub struct EngineHandle {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    /// The UDP address the engine bound.
    pub local_udp: SocketAddr,
}

impl EngineHandle {
    /// Admin role: listens on `local` (e.g. 127.0.0.1:0) and forwards each
    /// accepted connection to `remote_port` on the device. Returns the bound address.
    pub fn forward_local(&self, local: SocketAddr, remote_port: u16) -> io::Result<SocketAddr> {
        self.listen(local, remote_port, false)
    }

    fn listen(&self, local: SocketAddr, remote_port: u16, once: bool) -> io::Result<SocketAddr> {
        let listener = std::net::TcpListener::bind(local)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        self.commands
            .send(Command::Listen {
                listener,
                remote_port,
                once,
            })
            .map_err(|_| {
                io::Error::new(io::ErrorKind::BrokenPipe, "the tunnel engine has stopped")
            })?;
        self.waker.wake()?;
        Ok(addr)
    }

    /// Admin role, feature `tokio`: a stream to `remote_port` on the device,
    /// implementing tokio's `AsyncRead + AsyncWrite`. It is a loopback
    /// connection into this engine (one internal listener per call, closed
    /// after its one connection).
    #[cfg(feature = "tokio")]
    pub async fn open(&self, remote_port: u16) -> io::Result<tokio::net::TcpStream> {
        let addr = self.listen(SocketAddr::from(([127, 0, 0, 1], 0)), remote_port, true)?;
        tokio::net::TcpStream::connect(addr).await
    }

    /// Stops the engine: every connection is closed.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
        let _ = self.waker.wake();
    }
}

struct Conn {
    id: u64,
    port: u16,
    handle: SocketHandle,
    stream: TcpStream,
    opened: Instant,
    last_active: Instant,
    bytes_in: u64,
    bytes_out: u64,
    local_eof: bool,
    remote_eof: bool,
}

struct Listener {
    listener: TcpListener,
    remote_port: u16,
    once: bool,
}

/// A running peer.
pub struct Engine {
    config: EngineConfig,
    poll: Poll,
    udp: UdpSocket,
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
    udp_out: Vec<Vec<u8>>,
    scratch: Vec<u8>,
    reap: Vec<SocketHandle>,
    started: Instant,
}

/// A non-blocking UDP socket with the buffers the profile asks for.
fn udp_socket(bind: SocketAddr, buffer: usize) -> io::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(bind),
        socket2::Type::DGRAM,
        None,
    )?;
    // Best effort: the kernel caps these at its configured maximum.
    let _ = s.set_recv_buffer_size(buffer);
    let _ = s.set_send_buffer_size(buffer);
    s.set_nonblocking(true)?;
    s.bind(&bind.into())?;
    Ok(s.into())
}

/// A TCP socket as every tunnel connection has it: the profile's buffers,
/// Nagle off, the congestion controller, the timeout and the keepalive.
/// Public so the simulations (`benches/tcp_sim.rs`) run the same sockets.
pub fn tcp_socket(p: &BufferProfile) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; p.tcp_rx]),
        tcp::SocketBuffer::new(vec![0; p.tcp_tx]),
    );
    s.set_congestion_control(tcp::CongestionControl::Reno);
    s.set_timeout(Some(smoltcp::time::Duration::from_millis(
        TCP_TIMEOUT.as_millis() as u64,
    )));
    s.set_keep_alive(Some(smoltcp::time::Duration::from_millis(
        TCP_KEEPALIVE.as_millis() as u64,
    )));
    s.set_nagle_enabled(false);
    s.set_queue_delay_target(Some(smoltcp::time::Duration::from_millis(
        QUEUE_DELAY_TARGET.as_millis() as u64,
    )));
    s
}

fn smol_now(start: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(start.elapsed().as_micros() as i64)
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
        let mut udp = UdpSocket::from_std(udp_socket(config.bind, config.profile.udp_buffer)?);
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
            udp,
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
            udp_out: Vec::new(),
            scratch: Vec::new(),
            reap: Vec::new(),
            started: start,
        };
        if let Role::Device { forwards } = engine.config.role.clone() {
            for f in forwards {
                for _ in 0..engine.config.profile.listen_pool {
                    engine.add_listening(f.port);
                }
            }
        }
        engine
    }

    fn emit(&self, e: Event) {
        if let Some(tx) = &self.events {
            let _ = tx.send(e);
        }
    }

    fn add_listening(&mut self, port: u16) {
        let mut s = tcp_socket(&self.config.profile);
        if s.listen(IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(self.config.local_ip)),
            port,
        })
        .is_ok()
        {
            let h = self.sockets.add(s);
            self.pool.push((port, h));
        }
    }

    fn run(&mut self) -> io::Result<()> {
        let start = self.started;
        let mut events = Events::with_capacity(256);
        let mut next_tick = Instant::now();
        self.wg
            .start(Instant::now(), &mut |p| self.udp_out.push(p.to_vec()));
        self.flush_udp();
        loop {
            let now = Instant::now();
            let delay = self
                .iface
                .poll_delay(smol_now(start), &self.sockets)
                .map(|d| Duration::from_micros(d.total_micros()))
                .unwrap_or(TICK)
                .min(next_tick.saturating_duration_since(now));
            match self.poll.poll(&mut events, Some(delay)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
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
                    } => {
                        let mut l = TcpListener::from_std(listener);
                        let t = Token(self.next_listener);
                        self.next_listener += 1;
                        self.poll
                            .registry()
                            .register(&mut l, t, Interest::READABLE)?;
                        self.listeners.insert(
                            t,
                            Listener {
                                listener: l,
                                remote_port,
                                once,
                            },
                        );
                    }
                }
            }
            // Work until nothing moves, then sleep in poll.
            for _ in 0..64 {
                let mut progress = self.receive_udp()?;
                progress |= self.accept_local();
                // One packet at a time, refilling the listening pool in
                // between: smoltcp has no accept backlog, so a burst of SYNs
                // would otherwise meet a closed port.
                loop {
                    let ts = smol_now(start);
                    match self
                        .iface
                        .poll_ingress_single(ts, &mut self.dev, &mut self.sockets)
                    {
                        PollIngressSingleResult::None => break,
                        _ => {
                            progress = true;
                            self.promote_accepted();
                        }
                    }
                }
                progress |= self.pump_all();
                let ts = smol_now(start);
                let _ = self.iface.poll_egress(ts, &mut self.dev, &mut self.sockets);
                for h in self.reap.drain(..) {
                    self.sockets.remove(h);
                }
                progress |= self.encrypt_outgoing();
                self.flush_udp();
                if Instant::now() >= next_tick {
                    self.wg
                        .tick(Instant::now(), &mut |p| self.udp_out.push(p.to_vec()));
                    self.flush_udp();
                    next_tick = Instant::now() + TICK;
                }
                if !progress {
                    break;
                }
            }
        }
    }

    fn receive_udp(&mut self) -> io::Result<bool> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(65_536, 0);
        let mut got = false;
        loop {
            match self.udp.recv_from(&mut buf) {
                Ok((n, from)) => {
                    // Only the configured endpoint speaks to us; the rest is noise.
                    if from != self.config.endpoint {
                        continue;
                    }
                    got = true;
                    let (udp_out, dev) = (&mut self.udp_out, &mut self.dev);
                    let ok = self.wg.datagram(
                        Instant::now(),
                        &buf[..n],
                        &mut |p| udp_out.push(p.to_vec()),
                        &mut |p| dev.push_rx(p),
                    );
                    if ok && !self.tunnel_up {
                        self.tunnel_up = true;
                        self.emit(Event::TunnelUp);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP port unreachable from a relay that is restarting.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => {
                    self.scratch = buf;
                    return Err(e);
                }
            }
        }
        self.scratch = buf;
        self.flush_udp();
        Ok(got)
    }

    fn flush_udp(&mut self) {
        for p in self.udp_out.drain(..) {
            // A full socket buffer drops the datagram; WireGuard and TCP recover.
            let _ = self.udp.send_to(&p, self.config.endpoint);
        }
    }

    fn encrypt_outgoing(&mut self) -> bool {
        let mut any = false;
        while let Some(p) = self.dev.pop_tx() {
            any = true;
            let udp = &self.udp;
            let endpoint = self.config.endpoint;
            self.wg.send(&p, &mut |d| {
                let _ = udp.send_to(d, endpoint);
            });
            self.dev.recycle(p);
        }
        any
    }

    fn register_conn(
        &mut self,
        handle: SocketHandle,
        mut stream: TcpStream,
        port: u16,
    ) -> io::Result<()> {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let id = self.next_id;
        self.next_id += 1;
        self.conns.insert(
            token,
            Conn {
                id,
                port,
                handle,
                stream,
                opened: Instant::now(),
                last_active: Instant::now(),
                bytes_in: 0,
                bytes_out: 0,
                local_eof: false,
                remote_eof: false,
            },
        );
        self.emit(Event::Opened { id, port });
        Ok(())
    }

    /// Admin role: local clients become tunnel connections to the device.
    fn accept_local(&mut self) -> bool {
        let mut accepted = Vec::new();
        let mut spent = Vec::new();
        for (t, l) in self.listeners.iter() {
            while let Ok((s, _)) = l.listener.accept() {
                accepted.push((s, l.remote_port));
                if l.once {
                    // `open`'s listener: one connection, then gone (each
                    // listener costs an accept call on every turn).
                    spent.push(*t);
                    break;
                }
            }
        }
        for t in spent {
            if let Some(mut l) = self.listeners.remove(&t) {
                let _ = self.poll.registry().deregister(&mut l.listener);
            }
        }
        let any = !accepted.is_empty();
        for (stream, port) in accepted {
            if self.conns.len() >= self.config.profile.max_connections {
                self.emit(Event::Refused {
                    port,
                    reason: "connection cap reached".into(),
                });
                continue;
            }
            let mut s = tcp_socket(&self.config.profile);
            self.next_port = if self.next_port >= 65000 {
                49152
            } else {
                self.next_port + 1
            };
            let remote = (IpAddress::Ipv4(self.config.peer_ip), port);
            if s.connect(self.iface.context(), remote, self.next_port)
                .is_err()
            {
                continue;
            }
            let h = self.sockets.add(s);
            if self.register_conn(h, stream, port).is_err() {
                self.sockets.remove(h);
            }
        }
        any
    }

    /// Device role: a listening socket that got a SYN becomes a connection
    /// to the port's local target, and the pool is refilled.
    fn promote_accepted(&mut self) {
        let Role::Device { forwards } = &self.config.role else {
            return;
        };
        let forwards = forwards.clone();
        let mut promoted = Vec::new();
        for (i, (port, h)) in self.pool.iter().enumerate() {
            let s = self.sockets.get::<tcp::Socket>(*h);
            if s.state() != tcp::State::Listen {
                promoted.push((i, *port, *h));
            }
        }
        for (i, port, h) in promoted.into_iter().rev() {
            self.pool.remove(i);
            let target = forwards.iter().find(|f| f.port == port).map(|f| f.target);
            let ok = match target {
                Some(target) if self.conns.len() < self.config.profile.max_connections => {
                    match TcpStream::connect(target) {
                        Ok(stream) => self.register_conn(h, stream, port).is_ok(),
                        Err(e) => {
                            self.emit(Event::Refused {
                                port,
                                reason: format!("local target {target}: {e}"),
                            });
                            false
                        }
                    }
                }
                _ => {
                    self.emit(Event::Refused {
                        port,
                        reason: "connection cap reached".into(),
                    });
                    false
                }
            };
            if !ok {
                // Reset the peer's connection; the socket goes after the RST is sent.
                self.sockets.get_mut::<tcp::Socket>(h).abort();
                self.reap.push(h);
            }
            self.add_listening(port);
        }
    }

    fn pump_all(&mut self) -> bool {
        let mut progress = false;
        let mut done = Vec::new();
        let idle_timeout = self.config.profile.idle_timeout;
        for (t, c) in self.conns.iter_mut() {
            let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
            let (moved, mut finished) = pump(c, s);
            if moved {
                c.last_active = Instant::now();
            } else if c.last_active.elapsed() >= idle_timeout {
                s.abort();
                finished = true;
            }
            progress |= moved;
            if finished {
                done.push(*t);
            }
        }
        for t in done {
            if let Some(mut c) = self.conns.remove(&t) {
                let _ = self.poll.registry().deregister(&mut c.stream);
                let _ = c.stream.shutdown(Shutdown::Both);
                // Removed after the next egress poll, so a reset still goes out.
                self.reap.push(c.handle);
                let e = Event::Closed {
                    id: c.id,
                    port: c.port,
                    bytes_in: c.bytes_in,
                    bytes_out: c.bytes_out,
                    duration: c.opened.elapsed(),
                };
                self.emit(e);
                progress = true;
            }
        }
        progress
    }

    fn close_all(&mut self) {
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for t in tokens {
            if let Some(c) = self.conns.remove(&t) {
                let _ = c.stream.shutdown(Shutdown::Both);
                self.sockets.get_mut::<tcp::Socket>(c.handle).abort();
            }
        }
        let _ = self
            .iface
            .poll_egress(smol_now(self.started), &mut self.dev, &mut self.sockets);
        let _ = self.encrypt_outgoing();
    }
}

/// Moves bytes both ways between a tunnel socket and its local stream.
/// Returns (bytes moved?, connection finished?).
fn pump(c: &mut Conn, s: &mut tcp::Socket<'static>) -> (bool, bool) {
    let mut moved = false;
    // Local -> tunnel, read straight into smoltcp's send buffer, no further
    // ahead than the window needs (a later write, a keystroke after a burst
    // of output, does not wait behind megabytes of it).
    while !c.local_eof && s.can_send() && s.send_queue() < s.send_backlog_hint() {
        let r = s.send(|buf| match c.stream.read(buf) {
            Ok(0) => (0, Ok(0)),
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match r {
            Ok(Ok(0)) => {
                c.local_eof = true;
                s.close();
            }
            Ok(Ok(n)) => {
                c.bytes_out += n as u64;
                moved = true;
            }
            Ok(Err(e))
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::NotConnected =>
            {
                break
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(_)) | Err(_) => {
                s.abort();
                return (true, true);
            }
        }
    }
    // Tunnel -> local.
    while s.can_recv() {
        let r = s.recv(|buf| match c.stream.write(buf) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match r {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                c.bytes_in += n as u64;
                moved = true;
            }
            Ok(Err(e))
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::NotConnected =>
            {
                break
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(_)) | Err(_) => {
                s.abort();
                return (true, true);
            }
        }
    }
    if !c.remote_eof
        && !s.may_recv()
        && s.recv_queue() == 0
        && s.state() != tcp::State::SynSent
        && s.state() != tcp::State::SynReceived
        && s.state() != tcp::State::Listen
    {
        c.remote_eof = true;
        let _ = c.stream.shutdown(Shutdown::Write);
        moved = true;
    }
    let finished = match s.state() {
        tcp::State::Closed => true,
        tcp::State::TimeWait => c.local_eof,
        _ => c.local_eof && c.remote_eof && !s.is_active(),
    };
    (moved, finished)
}
