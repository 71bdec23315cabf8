//! A device peer and an admin peer, our relay between them (in-process, on
//! loopback), local services on the device side, and a UDP "NAT" that can
//! rebind or cut a peer's path.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support_tunnel::{BufferProfile, Engine, EngineConfig, EngineHandle, Event, Forward, Role};

pub const DEVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const ADMIN_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);

pub fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).expect("randomness");
    b
}

pub fn public(private: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*private)).to_bytes()
}

pub use support_testkit::relay::RelayThread;
pub use support_testkit::wan::{Impairment, WanStage};

/// A UDP hop that stands for a NAT in front of one peer: it can rebind to
/// a new source port (roaming) or drop everything (the peer "dies"). It
/// notes the WireGuard message type of each datagram it passes.
pub struct Nat {
    pub addr: SocketAddr,
    rebind: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    passed: Arc<Mutex<Vec<Passed>>>,
}

/// A datagram the NAT passed: its direction and WireGuard message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Passed {
    /// From the peer behind the NAT.
    Out(u8),
    /// To the peer behind the NAT.
    In(u8),
}

impl Nat {
    pub fn start(upstream: SocketAddr) -> Nat {
        let inside = UdpSocket::bind("127.0.0.1:0").expect("binds");
        inside
            .set_read_timeout(Some(Duration::from_millis(5)))
            .expect("timeout");
        let addr = inside.local_addr().expect("addr");
        let (rebind, cut, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let passed = Arc::new(Mutex::new(Vec::new()));
        let (r2, c2, s2, p2) = (rebind.clone(), cut.clone(), stop.clone(), passed.clone());
        std::thread::spawn(move || {
            let mut outside = UdpSocket::bind("127.0.0.1:0").expect("binds");
            outside.set_nonblocking(true).expect("nonblocking");
            let mut peer: Option<SocketAddr> = None;
            let mut buf = vec![0u8; 65536];
            while !s2.load(Ordering::Relaxed) {
                if r2.swap(false, Ordering::Relaxed) {
                    outside = UdpSocket::bind("127.0.0.1:0").expect("rebinds");
                    outside.set_nonblocking(true).expect("nonblocking");
                }
                let cut = c2.load(Ordering::Relaxed);
                while let Ok((n, from)) = inside.recv_from(&mut buf) {
                    peer = Some(from);
                    if !cut {
                        p2.lock().expect("lock").push(Passed::Out(buf[0]));
                        let _ = outside.send_to(&buf[..n], upstream);
                    }
                }
                while let Ok((n, _)) = outside.recv_from(&mut buf) {
                    if let (Some(p), false) = (peer, cut) {
                        p2.lock().expect("lock").push(Passed::In(buf[0]));
                        let _ = inside.send_to(&buf[..n], p);
                    }
                }
            }
        });
        Nat {
            addr,
            rebind,
            cut,
            stop,
            passed,
        }
    }

    /// Whether the peer behind the NAT, after a handshake response reached
    /// it, sent a new initiation: it refused the response (a peer that
    /// accepted one starts over only after minutes).
    pub fn started_over(&self) -> bool {
        self.passed
            .lock()
            .expect("lock")
            .iter()
            .skip_while(|p| **p != Passed::In(2))
            .any(|p| *p == Passed::Out(1))
    }

    pub fn rebind(&self) {
        self.rebind.store(true, Ordering::Relaxed);
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Deterministic bytes: `n` bytes of a xorshift stream from `seed`.
pub fn pattern(seed: u64, n: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut x = seed | 1;
    let mut left = n;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let len = left.min(64 * 1024);
        left -= len;
        let mut chunk = Vec::with_capacity(len);
        while chunk.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.extend_from_slice(&x.to_le_bytes());
        }
        chunk.truncate(len);
        Some(chunk)
    })
}

pub fn pattern_sha(seed: u64, n: usize) -> [u8; 32] {
    let mut h = Sha256::new();
    for c in pattern(seed, n) {
        h.update(&c);
    }
    h.finalize().into()
}

/// A loopback TCP service that runs `serve` on each connection in a thread of its own.
fn serve_each(serve: fn(TcpStream)) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve(s));
        }
    });
    addr
}

/// A device-side service: each connection first sends 8 bytes (seed) + 8
/// bytes (length) to ask, then receives that many pattern bytes.
pub fn source_server() -> SocketAddr {
    serve_each(|mut s| {
        let mut req = [0u8; 16];
        if s.read_exact(&mut req).is_err() {
            return;
        }
        let seed = u64::from_le_bytes(req[..8].try_into().unwrap_or_default());
        let n = u64::from_le_bytes(req[8..].try_into().unwrap_or_default()) as usize;
        for c in pattern(seed, n) {
            if s.write_all(&c).is_err() {
                return;
            }
        }
    })
}

/// A device-side sink: each connection sends 8 bytes (length), then that
/// many bytes; the sink answers their SHA-256.
pub fn sink_server() -> SocketAddr {
    serve_each(|mut s| {
        let mut len = [0u8; 8];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut left = u64::from_le_bytes(len) as usize;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        while left > 0 {
            match s.read(&mut buf[..left.min(256 * 1024)]) {
                Ok(0) | Err(_) => return,
                Ok(k) => {
                    h.update(&buf[..k]);
                    left -= k;
                }
            }
        }
        let _ = s.write_all(&h.finalize());
    })
}

/// Sends `n` pattern bytes through `via` to the sink and returns the hash it computed.
pub fn push(via: SocketAddr, seed: u64, n: usize, timeout: Duration) -> std::io::Result<[u8; 32]> {
    let mut s = TcpStream::connect(via)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(&(n as u64).to_le_bytes())?;
    for c in pattern(seed, n) {
        s.write_all(&c)?;
    }
    let mut h = [0u8; 32];
    s.read_exact(&mut h)?;
    Ok(h)
}

/// Retries a 1 MB fetch through `via` until its checksum matches or `limit`
/// passes; returns how long recovery took.
pub fn recovers_within(via: SocketAddr, seed: u64, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if fetch(via, seed, 1 << 20, Duration::from_secs(5)).ok()
            == Some(pattern_sha(seed, 1 << 20))
        {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// Asks the source for `n` bytes through `via` and returns their hash.
pub fn fetch(via: SocketAddr, seed: u64, n: usize, timeout: Duration) -> std::io::Result<[u8; 32]> {
    let mut s = TcpStream::connect(via)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(&seed.to_le_bytes())?;
    s.write_all(&(n as u64).to_le_bytes())?;
    let mut h = Sha256::new();
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    while got < n {
        let k = s.read(&mut buf)?;
        if k == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {got} of {n} bytes"),
            ));
        }
        h.update(&buf[..k]);
        got += k;
    }
    Ok(h.finalize().into())
}

/// Both peers, the relay, and the device's services.
pub struct Pair {
    pub relay: RelayThread,
    pub device: EngineHandle,
    pub admin: EngineHandle,
    pub device_events: Receiver<Event>,
    pub admin_events: Receiver<Event>,
    pub source: SocketAddr,
    pub keys: Keys,
    threads: Vec<JoinHandle<std::io::Result<()>>>,
}

#[derive(Clone, Copy)]
pub struct Keys {
    pub device: [u8; 32],
    pub admin: [u8; 32],
    pub psk: [u8; 32],
}

impl Keys {
    pub fn new() -> Keys {
        Keys {
            device: random32(),
            admin: random32(),
            psk: random32(),
        }
    }
}

/// One peer's config: the device's keys, address and profile for
/// `Role::Device`, the admin's for `Role::Admin`.
pub fn peer_config(keys: &Keys, endpoint: SocketAddr, role: Role) -> EngineConfig {
    let (ours, theirs, local_ip, peer_ip, profile) = match role {
        Role::Device { .. } => (
            keys.device,
            keys.admin,
            DEVICE_IP,
            ADMIN_IP,
            BufferProfile::DEVICE,
        ),
        Role::Admin => (
            keys.admin,
            keys.device,
            ADMIN_IP,
            DEVICE_IP,
            BufferProfile::ADMIN,
        ),
    };
    EngineConfig {
        private_key: ours,
        peer_public: public(&theirs),
        psk: keys.psk,
        endpoint,
        bind: "127.0.0.1:0".parse().expect("addr"),
        local_ip,
        peer_ip,
        prefix_len: 28,
        keepalive_secs: 5,
        profile,
        role,
        random: u64::from_le_bytes(random32()[..8].try_into().unwrap_or_default()),
    }
}

impl Pair {
    /// Device forwards port 22 to the source service; both go through the relay,
    /// each optionally through its own NAT hop.
    pub fn start(
        keys: Keys,
        admin_psk: Option<[u8; 32]>,
        admin_nat: bool,
        device_nat: bool,
    ) -> (Pair, Option<Nat>, Option<Nat>) {
        let relay = RelayThread::start(public(&keys.device), public(&keys.admin));
        let source = source_server();
        let dnat = device_nat.then(|| Nat::start(relay.addr));
        let anat = admin_nat.then(|| Nat::start(relay.addr));
        let forwards = vec![Forward {
            port: 22,
            target: source,
        }];
        let dcfg = peer_config(
            &keys,
            dnat.as_ref().map_or(relay.addr, |n| n.addr),
            Role::Device { forwards },
        );
        let mut acfg = peer_config(
            &keys,
            anat.as_ref().map_or(relay.addr, |n| n.addr),
            Role::Admin,
        );
        if let Some(psk) = admin_psk {
            acfg.psk = psk;
        }
        (Pair::spawn(relay, source, keys, dcfg, acfg), anat, dnat)
    }

    /// Both peers reach the relay through one WAN stage: the device forwards
    /// port 22 to the source service and port 24 to the sink.
    pub fn through_wan(keys: Keys, imp: Impairment) -> (Pair, WanStage) {
        let relay = RelayThread::start(public(&keys.device), public(&keys.admin));
        let stage = WanStage::start("127.0.0.1:0".parse().expect("addr"), relay.addr, imp)
            .expect("stage starts");
        let (source, sink) = (source_server(), sink_server());
        let forwards = vec![
            Forward {
                port: 22,
                target: source,
            },
            Forward {
                port: 24,
                target: sink,
            },
        ];
        let dcfg = peer_config(&keys, stage.addr, Role::Device { forwards });
        let acfg = peer_config(&keys, stage.addr, Role::Admin);
        (Pair::spawn(relay, source, keys, dcfg, acfg), stage)
    }

    /// Starts both engines.
    fn spawn(
        relay: RelayThread,
        source: SocketAddr,
        keys: Keys,
        dcfg: EngineConfig,
        acfg: EngineConfig,
    ) -> Pair {
        let (dtx, drx) = mpsc::channel();
        let (atx, arx) = mpsc::channel();
        let (device, dt) = Engine::spawn(dcfg, Some(dtx)).expect("device starts");
        let (admin, at) = Engine::spawn(acfg, Some(atx)).expect("admin starts");
        Pair {
            relay,
            device,
            admin,
            device_events: drx,
            admin_events: arx,
            source,
            keys,
            threads: vec![dt, at],
        }
    }

    /// Admin side: a loopback listener forwarding to `port` on the device.
    pub fn forward(&self, port: u16) -> SocketAddr {
        self.admin
            .forward_local("127.0.0.1:0".parse().expect("addr"), port)
            .expect("forward")
    }

    /// Waits for the tunnel to come up on both sides.
    pub fn wait_up(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        [&self.device_events, &self.admin_events]
            .into_iter()
            .all(|rx| {
                let left = deadline.saturating_duration_since(Instant::now());
                next_event(rx, left, |e| *e == Event::TunnelUp).is_some()
            })
    }
}

/// The next event from `rx` that `want` accepts (the others are passed
/// over), waiting at most `within`.
pub fn next_event(
    rx: &Receiver<Event>,
    within: Duration,
    mut want: impl FnMut(&Event) -> bool,
) -> Option<Event> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let e = rx.recv_timeout(left).ok()?;
        if want(&e) {
            return Some(e);
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.device.shutdown();
        self.admin.shutdown();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Collects events seen so far.
pub fn drain(rx: &Receiver<Event>, into: &Mutex<Vec<Event>>) {
    while let Ok(e) = rx.try_recv() {
        into.lock().expect("lock").push(e);
    }
}

/// A current-thread tokio runtime for the admin side's in-process streams.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
