//! A WAN in userspace: a UDP stage in front of the relay that delays, drops,
//! reorders and duplicates datagrams, both ways.
//!
//! This kernel has no netem, so the tests and benchmarks put this stage
//! between each peer and the relay: the peer is told the stage's address as
//! its endpoint, and the stage forwards each client's datagrams to the relay
//! from a socket of that client's own (so the relay still sees one source per
//! peer), and the relay's answers back to the client. Every datagram in either
//! direction passes the same [`Impairment`], so our peers and a stock
//! wireguard-go pair meet the same network.
//!
//! A datagram with nothing to wait for is sent by the thread that received
//! it; delayed ones go through one scheduler thread (a timer heap). The queue
//! is bounded like a router's buffer: beyond it datagrams are dropped and
//! counted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most datagrams waiting in the stage (about 90 MB/s for 75 ms).
pub const MAX_QUEUED: usize = 65_536;

/// What the stage does to each datagram, in each direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Impairment {
    /// Added to every datagram, each way (half the added round trip).
    pub one_way_delay: Duration,
    /// A further uniform random delay in `0..=jitter` (it reorders too).
    pub jitter: Duration,
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is held back by `reorder_by` more, so the
    /// ones behind it overtake it.
    pub reorder: f64,
    /// How much longer a reordered datagram waits.
    pub reorder_by: Duration,
    /// Probability that a datagram is sent twice.
    pub duplicate: f64,
    /// Seed for the random choices; 0 picks one at random.
    pub seed: u64,
}

impl Impairment {
    /// Nothing changes: the stage only forwards.
    pub const NONE: Impairment = Impairment {
        one_way_delay: Duration::ZERO,
        jitter: Duration::ZERO,
        loss: 0.0,
        reorder: 0.0,
        reorder_by: Duration::ZERO,
        duplicate: 0.0,
        seed: 0,
    };

    /// A path with an added round trip `rtt` and a loss rate `loss` each way.
    pub fn wan(rtt: Duration, loss: f64) -> Impairment {
        Impairment {
            one_way_delay: rtt / 2,
            loss,
            ..Impairment::NONE
        }
    }
}

/// What the stage did, for a test's assertions and a benchmark's table.
#[derive(Debug, Default)]
pub struct WanStats {
    /// Datagrams received from either side.
    pub received: AtomicU64,
    /// Datagrams sent on (duplicates included).
    pub sent: AtomicU64,
    /// Datagrams dropped as loss.
    pub dropped: AtomicU64,
    /// Datagrams sent twice.
    pub duplicated: AtomicU64,
    /// Datagrams held back to be overtaken.
    pub reordered: AtomicU64,
    /// Datagrams dropped because the queue was full.
    pub overflowed: AtomicU64,
}

/// A running stage; stops (and joins its threads) on drop.
pub struct WanStage {
    /// Where peers send: give this to them as their endpoint.
    pub addr: SocketAddr,
    setting: Arc<Setting>,
    /// Counters.
    pub stats: Arc<WanStats>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// The impairment in force, changeable while the stage runs.
struct Setting {
    imp: Mutex<Impairment>,
    version: AtomicU64,
}

/// Where a scheduled datagram goes.
enum Out {
    Upstream(Arc<UdpSocket>),
    Client(SocketAddr),
}

struct Pending {
    due: Instant,
    seq: u64,
    out: Out,
    data: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// xorshift64*: fast, and good enough to pick which datagrams to drop.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut s = seed;
        if s == 0 {
            let mut b = [0u8; 8];
            let _ = getrandom::getrandom(&mut b);
            s = u64::from_le_bytes(b);
        }
        Rng((s ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn upto(&mut self, d: Duration) -> Duration {
        if d.is_zero() {
            return d;
        }
        Duration::from_nanos(self.next() % (d.as_nanos() as u64 + 1))
    }
}

/// One direction's decisions: drop, or when to send (and how many times).
struct Shaper {
    imp: Impairment,
    version: u64,
    setting: Arc<Setting>,
    rng: Rng,
    stats: Arc<WanStats>,
    schedule: Sender<Pending>,
    queued: Arc<AtomicU64>,
    seq: u64,
}

impl Shaper {
    fn pass(&mut self, data: &[u8], out: impl Fn() -> Out, send_now: impl Fn(&[u8])) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let v = self.setting.version.load(Ordering::Acquire);
        if v != self.version {
            if let Ok(imp) = self.setting.imp.lock() {
                self.imp = *imp;
            }
            self.version = v;
        }
        if self.rng.chance(self.imp.loss) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let copies = if self.rng.chance(self.imp.duplicate) {
            self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = self.imp.one_way_delay + self.rng.upto(self.imp.jitter);
            if self.rng.chance(self.imp.reorder) {
                self.stats.reordered.fetch_add(1, Ordering::Relaxed);
                delay += self.imp.reorder_by;
            }
            if delay.is_zero() {
                send_now(data);
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if self.queued.load(Ordering::Relaxed) as usize >= MAX_QUEUED {
                self.stats.overflowed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.queued.fetch_add(1, Ordering::Relaxed);
            self.seq += 1;
            let _ = self.schedule.send(Pending {
                due: Instant::now() + delay,
                seq: self.seq,
                out: out(),
                data: data.to_vec(),
            });
        }
    }
}

fn scheduler(
    front: Arc<UdpSocket>,
    inbox: Receiver<Pending>,
    stop: Arc<AtomicBool>,
    stats: Arc<WanStats>,
    queued: Arc<AtomicU64>,
) {
    let mut heap: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while heap.peek().is_some_and(|p| p.0.due <= now) {
            let Some(Reverse(p)) = heap.pop() else { break };
            let _ = match &p.out {
                Out::Upstream(s) => s.send(&p.data),
                Out::Client(to) => front.send_to(&p.data, to),
            };
            queued.fetch_sub(1, Ordering::Relaxed);
            stats.sent.fetch_add(1, Ordering::Relaxed);
        }
        let wait = heap
            .peek()
            .map(|p| p.0.due.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(50))
            .min(Duration::from_millis(50));
        match inbox.recv_timeout(wait) {
            Ok(p) => {
                heap.push(Reverse(p));
                // Take whatever else arrived without sleeping again.
                while let Ok(p) = inbox.try_recv() {
                    heap.push(Reverse(p));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn udp_socket(bind: SocketAddr) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(bind)?;
    // A window arrives as a burst: a small kernel buffer would be loss we did not ask for.
    let sock = socket2::SockRef::from(&s);
    let _ = sock.set_recv_buffer_size(8 << 20);
    let _ = sock.set_send_buffer_size(8 << 20);
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok(s)
}

impl WanStage {
    /// Listens on `bind` (e.g. `0.0.0.0:0` so namespaces reach it) and
    /// forwards to `upstream` (the relay) through `imp`, both ways.
    pub fn start(bind: SocketAddr, upstream: SocketAddr, imp: Impairment) -> io::Result<WanStage> {
        let front = Arc::new(udp_socket(bind)?);
        let addr = front.local_addr()?;
        let stats = Arc::new(WanStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicU64::new(0));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let seed = Rng::new(imp.seed, 0).next();
        let setting = Arc::new(Setting {
            imp: Mutex::new(imp),
            version: AtomicU64::new(0),
        });
        let sched = {
            let (front, stop, stats, queued) =
                (front.clone(), stop.clone(), stats.clone(), queued.clone());
            std::thread::spawn(move || scheduler(front, rx, stop, stats, queued))
        };
        let shaper = {
            let (stats, tx, queued) = (stats.clone(), tx.clone(), queued.clone());
            let setting = setting.clone();
            move |stream: u64| Shaper {
                imp,
                version: 0,
                setting: setting.clone(),
                rng: Rng::new(seed, stream),
                stats: stats.clone(),
                schedule: tx.clone(),
                queued: queued.clone(),
                seq: stream << 48,
            }
        };
        let mut up = shaper(1);
        let mut next_stream = 1;
        let front_reader = {
            let (front, stop, threads) = (front.clone(), stop.clone(), threads.clone());
            std::thread::spawn(move || {
                let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let (n, from) = match front.recv_from(&mut buf) {
                        Ok(x) => x,
                        Err(_) => continue,
                    };
                    let back = match backs.get(&from) {
                        Some(b) => b.clone(),
                        None => {
                            let Ok(b) = new_back(upstream) else { continue };
                            let b = Arc::new(b);
                            backs.insert(from, b.clone());
                            next_stream += 1;
                            let down = shaper(next_stream);
                            let t = spawn_back_reader(
                                b.clone(),
                                from,
                                front.clone(),
                                down,
                                stop.clone(),
                            );
                            if let Ok(mut v) = threads.lock() {
                                v.push(t);
                            }
                            b
                        }
                    };
                    let b2 = back.clone();
                    up.pass(
                        &buf[..n],
                        || Out::Upstream(b2.clone()),
                        |d| {
                            let _ = back.send(d);
                        },
                    );
                }
            })
        };
        if let Ok(mut v) = threads.lock() {
            v.push(sched);
            v.push(front_reader);
        }
        Ok(WanStage {
            addr,
            setting,
            stats,
            stop,
            threads,
        })
    }

    /// Changes the impairment for every datagram from now on (one already
    /// waiting keeps its time).
    pub fn set(&self, imp: Impairment) {
        if let Ok(mut i) = self.setting.imp.lock() {
            *i = imp;
        }
        self.setting.version.fetch_add(1, Ordering::Release);
    }

    /// The datagrams dropped as loss so far.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }
}

fn new_back(upstream: SocketAddr) -> io::Result<UdpSocket> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0".parse().map_err(io::Error::other)?
    } else {
        "[::]:0".parse().map_err(io::Error::other)?
    };
    let s = udp_socket(bind)?;
    s.connect(upstream)?;
    Ok(s)
}

fn spawn_back_reader(
    back: Arc<UdpSocket>,
    client: SocketAddr,
    front: Arc<UdpSocket>,
    mut down: Shaper,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while !stop.load(Ordering::Relaxed) {
            let n = match back.recv(&mut buf) {
                Ok(n) => n,
                Err(_) => continue,
            };
            down.pass(
                &buf[..n],
                || Out::Client(client),
                |d| {
                    let _ = front.send_to(d, client);
                },
            );
        }
    })
}

impl Drop for WanStage {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let threads = self
            .threads
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_upstream() -> (SocketAddr, Arc<AtomicBool>) {
        let s = udp_socket("127.0.0.1:0".parse().expect("addr")).expect("binds");
        let addr = s.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        });
        (addr, stop)
    }

    fn client(stage: &WanStage) -> UdpSocket {
        let c = udp_socket("127.0.0.1:0".parse().expect("addr")).expect("binds");
        c.connect(stage.addr).expect("connects");
        c.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        c
    }

    #[test]
    fn forwards_both_ways_after_the_round_trip() {
        let (up, stop) = echo_upstream();
        let imp = Impairment::wan(Duration::from_millis(40), 0.0);
        let stage = WanStage::start("127.0.0.1:0".parse().expect("addr"), up, imp).expect("stage");
        let c = client(&stage);
        let start = Instant::now();
        c.send(b"ping").expect("sends");
        let mut buf = [0u8; 16];
        let n = c.recv(&mut buf).expect("echo");
        let took = start.elapsed();
        assert_eq!(&buf[..n], b"ping");
        // Through the stage once each way: 20 ms + 20 ms.
        assert!(took >= Duration::from_millis(40), "took {took:?}");
        stop.store(true, Ordering::Relaxed);
    }

    #[test]
    fn drops_about_the_share_asked_for() {
        let (up, stop) = echo_upstream();
        let imp = Impairment {
            loss: 0.1,
            seed: 7,
            ..Impairment::NONE
        };
        let stage = WanStage::start("127.0.0.1:0".parse().expect("addr"), up, imp).expect("stage");
        let c = client(&stage);
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        for i in 0..2000u32 {
            c.send(&i.to_le_bytes()).expect("sends");
        }
        let mut back = 0;
        let mut buf = [0u8; 16];
        while c.recv(&mut buf).is_ok() {
            back += 1;
        }
        // Each datagram crosses the stage twice: 0.9^2 = 81% come back.
        assert!((1500..1740).contains(&back), "{back} of 2000 came back");
        let st = &stage.stats;
        let (received, sent) = (
            st.received.load(Ordering::Relaxed),
            st.sent.load(Ordering::Relaxed),
        );
        assert_eq!(
            received,
            sent + stage.dropped(),
            "every datagram is sent or dropped"
        );
        stop.store(true, Ordering::Relaxed);
    }

    #[test]
    fn reorders_and_duplicates() {
        let (up, stop) = echo_upstream();
        let imp = Impairment {
            reorder: 0.2,
            reorder_by: Duration::from_millis(20),
            duplicate: 0.1,
            seed: 3,
            ..Impairment::NONE
        };
        let stage = WanStage::start("127.0.0.1:0".parse().expect("addr"), up, imp).expect("stage");
        let c = client(&stage);
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        for i in 0..500u32 {
            c.send(&i.to_le_bytes()).expect("sends");
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        while let Ok(n) = c.recv(&mut buf) {
            got.push(u32::from_le_bytes(buf[..n].try_into().expect("4 bytes")));
        }
        let mut unique = got.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 500, "nothing is lost");
        assert!(got.len() > 500, "some came twice");
        assert!(got.windows(2).any(|w| w[0] > w[1]), "some were overtaken");
        stop.store(true, Ordering::Relaxed);
    }
}
