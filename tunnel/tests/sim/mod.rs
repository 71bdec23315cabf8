//! Two smoltcp hosts with the tunnel's sockets (`support_tunnel::tcp_socket`)
//! joined by a simulated path (`support_testkit::sim_path`): a bulk transfer
//! A -> B and, on a second connection, a 16-byte exchange every 20 ms, on a
//! simulated clock. Shared by `tests/tcp_path.rs` (assertions) and
//! `benches/tcp_sim.rs` (tables); deterministic, no sockets, no threads.
#![allow(dead_code)]

use std::collections::BTreeMap;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Packet, TcpPacket};
use support_testkit::sim_path::{Rng, SimLink};
use support_tunnel::ingress::Ingress;
use support_tunnel::virtual_device::VirtualDevice;
use support_tunnel::{tcp_socket, BufferProfile};

const A: [u8; 4] = [10, 77, 0, 3];
const B: [u8; 4] = [10, 77, 0, 2];
const BULK_PORT: u16 = 4000;
const ECHO_PORT: u16 = 4001;
/// The simulated clock's step, microseconds.
const STEP_US: i64 = 50;

/// One simulated run's path and length.
#[derive(Clone, Copy, Debug)]
pub struct Path {
    /// Bottleneck rate each way, MB/s.
    pub rate_mb_s: f64,
    /// Bytes the bottleneck may queue.
    pub queue: usize,
    /// Round trip without queueing, ms.
    pub rtt_ms: i64,
    /// Loss at each of two crossings each way.
    pub loss: f64,
    /// Simulated seconds.
    pub secs: f64,
    /// The sender's send and the receiver's receive buffer, if not the profiles'.
    pub window: Option<usize>,
    /// The random seed of the losses.
    pub seed: u64,
    /// B takes nothing in for `.1` µs every `.0` µs (a device whose CPU
    /// is busy elsewhere), if set.
    pub pauses: Option<(i64, i64)>,
}

impl Path {
    /// A path of `rtt_ms` and `loss` at 25 MB/s with a 2 MiB queue, 10 s.
    pub fn new(rtt_ms: i64, loss: f64) -> Path {
        Path {
            rate_mb_s: 25.0,
            queue: 2 << 20,
            rtt_ms,
            loss,
            secs: 10.0,
            window: None,
            seed: 0x9E37_79B9_7F4A_7C15,
            pauses: None,
        }
    }
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Bytes the receiving application got, per second (MiB/s).
    pub mb_s: f64,
    /// The sender's loss-recovery counters.
    pub stats: tcp::Stats,
    /// Exchange times, ms.
    pub echo_ms: Vec<f64>,
    /// Bulk data segments that reached B and held nothing B did not already have.
    pub needless: u64,
    /// Bulk data segments that reached B.
    pub arrived: u64,
    /// Packets dropped from the full bottleneck queue, A -> B.
    pub overflowed: u64,
    /// The longest the bottleneck queue (A -> B) held a packet after the
    /// first second, ms.
    pub max_queue_ms: f64,
}

impl Outcome {
    /// The `p` quantile of the exchange times, ms.
    pub fn echo(&self, p: f64) -> f64 {
        let mut v = self.echo_ms.clone();
        v.sort_by(|x, y| x.total_cmp(y));
        v.get(((v.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    }
}

struct Host {
    iface: Interface,
    dev: VirtualDevice,
    sockets: SocketSet<'static>,
    bulk: SocketHandle,
    echo: SocketHandle,
}

impl Host {
    fn new(ip: [u8; 4], seed: u64, profile: &BufferProfile) -> Host {
        let mut dev = VirtualDevice::default();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut dev, Instant::from_micros(0));
        iface.update_ip_addrs(|ips| {
            let _ = ips.push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 28));
        });
        let mut sockets = SocketSet::new(Vec::new());
        let bulk = sockets.add(tcp_socket(profile));
        let echo = sockets.add(tcp_socket(profile));
        Host {
            iface,
            dev,
            sockets,
            bulk,
            echo,
        }
    }

    /// What the engine does on each wake-up: every packet in (with an ACK
    /// every `ACK_EVERY`), then egress until smoltcp has nothing more to send.
    fn turn(&mut self, t: Instant, out: &mut Vec<Vec<u8>>) {
        let mut ingress = Ingress::default();
        while ingress.take_one(t, &mut self.iface, &mut self.dev, &mut self.sockets) {}
        loop {
            self.iface.poll_egress(t, &mut self.dev, &mut self.sockets);
            let before = out.len();
            while let Some(p) = self.dev.pop_tx() {
                out.push(p.clone());
                self.dev.recycle(p);
            }
            if out.len() == before {
                break;
            }
        }
    }

    fn bulk(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.bulk)
    }

    fn echo(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.echo)
    }

    fn connect(&mut self, port: u16, local: u16, handle: SocketHandle) {
        let cx = self.iface.context();
        self.sockets
            .get_mut::<tcp::Socket>(handle)
            .connect(cx, (IpAddress::v4(B[0], B[1], B[2], B[3]), port), local)
            .expect("connects");
    }
}

/// A bulk transfer A -> B over a 10 ms, 25 MB/s path; after half a second
/// B stops taking packets until `burst` have arrived, then takes them all
/// in one turn (as a relay's train, a NIC's coalesced batch or a busy
/// device would give them). Returns the ACKs B answers that turn with.
pub fn acks_for_a_burst(burst: usize) -> usize {
    let (mut a, mut b) = (
        Host::new(A, 1, &BufferProfile::ADMIN),
        Host::new(B, 2, &BufferProfile::DEVICE),
    );
    b.bulk().listen(BULK_PORT).expect("listens");
    let bulk = a.bulk;
    a.connect(BULK_PORT, 50000, bulk);
    let link = || SimLink::new(25.0, 2 << 20, 5_000, 0.0);
    let (mut ab, mut ba) = (link(), link());
    let mut rng = Rng(1);
    let chunk = vec![0x5au8; 64 * 1024];
    let (mut out, mut held, mut now) = (Vec::new(), Vec::new(), 0i64);
    while held.len() < burst {
        assert!(now < 5_000_000, "only {} segments arrived", held.len());
        let t = Instant::from_micros(now);
        let paused = now >= 500_000;
        for p in ab.arrived(now) {
            if !paused {
                b.dev.push_rx(&p);
            } else if bulk_segment(&p).is_some() {
                held.push(p);
            }
        }
        for p in ba.arrived(now) {
            a.dev.push_rx(&p);
        }
        let _ = a.bulk().send_slice(&chunk);
        a.turn(t, &mut out);
        out.drain(..).for_each(|p| ab.send(now, p, &mut rng));
        if !paused {
            b.turn(t, &mut out);
            while b.bulk().recv(|d| (d.len(), d.len())).unwrap_or(0) > 0 {}
            out.drain(..).for_each(|p| ba.send(now, p, &mut rng));
        }
        now += STEP_US;
    }
    for p in &held[..burst] {
        b.dev.push_rx(p);
    }
    b.turn(Instant::from_micros(now), &mut out);
    out.iter()
        .filter(|p| {
            let ip = Ipv4Packet::new_checked(&p[..]).expect("IPv4");
            let tcp = TcpPacket::new_checked(ip.payload()).expect("TCP");
            tcp.ack() && tcp.payload().is_empty()
        })
        .count()
}

/// The sequence range of a bulk data segment, if `p` is one.
fn bulk_segment(p: &[u8]) -> Option<(u32, u32)> {
    let ip = Ipv4Packet::new_checked(p).ok()?;
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    let len = tcp.payload().len() as u32;
    (tcp.dst_port() == BULK_PORT && len > 0).then(|| {
        let seq = tcp.seq_number().0 as u32;
        (seq, seq.wrapping_add(len))
    })
}

/// What B has received of the bulk stream, as ranges relative to the first
/// data byte (no wrap in a test's few hundred megabytes).
#[derive(Default)]
struct Received {
    base: Option<u32>,
    ranges: BTreeMap<u64, u64>,
}

impl Received {
    /// Records a segment; returns whether it held anything new.
    fn add(&mut self, (seq, end): (u32, u32)) -> bool {
        let base = *self.base.get_or_insert(seq);
        let l = u64::from(seq.wrapping_sub(base));
        let r = l + u64::from(end.wrapping_sub(seq));
        let (mut nl, mut nr) = (l, r);
        let covered = self
            .ranges
            .range(..=l)
            .next_back()
            .is_some_and(|(_, &e)| e >= r);
        if covered {
            return false;
        }
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=r)
            .filter(|(_, &e)| e >= l)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            nl = nl.min(s);
            nr = nr.max(e);
        }
        self.ranges.insert(nl, nr);
        true
    }
}

/// Runs a bulk transfer A -> B over `path`; `trace` gets a line per 100 ms.
pub fn run(path: &Path, mut trace: Option<&mut dyn FnMut(String)>) -> Outcome {
    let (mut admin, mut device) = (BufferProfile::ADMIN, BufferProfile::DEVICE);
    if let Some(w) = path.window {
        (admin.tcp_tx, device.tcp_rx) = (w, w);
    }
    let (mut a, mut b) = (Host::new(A, 1, &admin), Host::new(B, 2, &device));
    b.bulk().listen(BULK_PORT).expect("listens");
    b.echo().listen(ECHO_PORT).expect("listens");
    let (bulk, echo) = (a.bulk, a.echo);
    a.connect(BULK_PORT, 50000, bulk);
    a.connect(ECHO_PORT, 50001, echo);
    let one_way = path.rtt_ms * 500;
    let link = || SimLink::new(path.rate_mb_s, path.queue, one_way, path.loss);
    let (mut ab, mut ba) = (link(), link());
    let mut rng = Rng(path.seed);
    let chunk = vec![0x5au8; 64 * 1024];
    let end = (path.secs * 1e6) as i64;
    let mut o = Outcome::default();
    let mut received = 0u64;
    let mut at_b = Received::default();
    let (mut last_trace, mut last_bytes) = (0i64, 0u64);
    let mut asked: Option<i64> = None;
    let (mut echo_rx, mut next_echo) = (0usize, 0i64);
    let mut now = 0i64;
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    while now < end {
        let t = Instant::from_micros(now);
        for p in ab.arrived(now) {
            if let Some(seg) = bulk_segment(&p) {
                o.arrived += 1;
                if !at_b.add(seg) {
                    o.needless += 1;
                }
            }
            b.dev.push_rx(&p);
        }
        for p in ba.arrived(now) {
            a.dev.push_rx(&p);
        }
        if a.bulk().can_send() {
            let _ = a.bulk().send_slice(&chunk);
        }
        // A asks every 20 ms once the last answer came back.
        if a.echo().may_send() && asked.is_none() && now >= next_echo {
            if a.echo().send_slice(&[b'e'; 16]) == Ok(16) {
                asked = Some(now);
            }
            next_echo = now + 20_000;
        }
        a.turn(t, &mut out);
        for p in out.drain(..) {
            ab.send(now, p, &mut rng);
        }
        let paused = path.pauses.is_some_and(|(every, off)| now % every < off);
        if !paused {
            b.turn(t, &mut out);
        }
        while !paused && b.bulk().can_recv() {
            let _ = b.bulk().recv(|d| {
                received += d.len() as u64;
                (d.len(), ())
            });
        }
        // B answers at once.
        while b.echo().can_recv() {
            let n = b.echo().recv_slice(&mut buf).unwrap_or(0);
            let _ = b.echo().send_slice(&buf[..n]);
        }
        if !paused {
            b.turn(t, &mut out);
        }
        for p in out.drain(..) {
            ba.send(now, p, &mut rng);
        }
        while a.echo().can_recv() {
            echo_rx += a.echo().recv_slice(&mut buf).unwrap_or(0);
        }
        if echo_rx >= 16 {
            echo_rx -= 16;
            if let Some(s) = asked.take() {
                o.echo_ms.push((now - s) as f64 / 1000.0);
            }
        }
        if now >= 1_000_000 {
            o.max_queue_ms = o.max_queue_ms.max(ab.queueing_delay(now) / 1000.0);
        }
        if let Some(tr) = trace.as_mut() {
            if now - last_trace >= 100_000 {
                let s = a.bulk().stats();
                tr(format!(
                    "  t={:>5.1}s {:>7.2} MB/s  window {:>5} KiB  queue {:>5.1} ms  dupacks {} recoveries {} holes {} timeouts {} overflowed {}",
                    now as f64 / 1e6,
                    (received - last_bytes) as f64 / 1_048_576.0 / 0.1,
                    s.delay_window / 1024,
                    ab.queueing_delay(now) / 1000.0,
                    s.dup_acks,
                    s.fast_retransmits,
                    s.hole_retransmits,
                    s.timeouts,
                    ab.overflowed
                ));
                last_trace = now;
                last_bytes = received;
            }
        }
        now += STEP_US;
    }
    o.mb_s = received as f64 / 1_048_576.0 / path.secs;
    o.stats = a.bulk().stats();
    o.overflowed = ab.overflowed;
    o
}
