//! smoltcp's loss recovery as the tunnel carries it (third_party/smoltcp,
//! PATCHES.md), on a simulated clock: two interfaces joined by a 20 ms
//! round trip that loses exactly the segments a test names. Deterministic:
//! no sockets, no threads, no wall clock.

use std::collections::VecDeque;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Packet, TcpPacket};
use support_tunnel::virtual_device::VirtualDevice;

const A: [u8; 4] = [10, 77, 0, 3];
const B: [u8; 4] = [10, 77, 0, 2];
/// One way, in milliseconds (the clock advances 1 ms per step).
const ONE_WAY_MS: u64 = 10;

struct Host {
    iface: Interface,
    dev: VirtualDevice,
    sockets: SocketSet<'static>,
    tcp: SocketHandle,
}

impl Host {
    fn new(ip: [u8; 4], seed: u64, buffer: usize) -> Host {
        let mut dev = VirtualDevice::default();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut dev, Instant::from_millis(0));
        iface.update_ip_addrs(|ips| {
            let _ = ips.push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 28));
        });
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; buffer]),
            tcp::SocketBuffer::new(vec![0; buffer]),
        );
        s.set_nagle_enabled(false);
        let mut sockets = SocketSet::new(Vec::new());
        let tcp = sockets.add(s);
        Host {
            iface,
            dev,
            sockets,
            tcp,
        }
    }

    fn poll(&mut self, now: Instant) {
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
    }

    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.tcp)
    }
}

/// The TCP payload length and sequence number of an IPv4 packet, if it carries data.
fn data_segment(p: &[u8]) -> Option<(u32, usize)> {
    let ip = Ipv4Packet::new_checked(p).ok()?;
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    let len = tcp.payload().len();
    (len > 0).then(|| (tcp.seq_number().0 as u32, len))
}

struct Run {
    delivered: Vec<u8>,
    /// Data segments sent again: sent, less the distinct sequence numbers.
    /// (Counted this way, not against the payload over the MSS: a burst
    /// ends with whatever part of a segment the send buffer held.)
    resent: usize,
    stats: tcp::Stats,
}

/// A sends `n` bytes to B; for each `(index, times)` in `lose`, the data
/// segment with that (0-based) index is dropped the first `times` times it is sent.
fn transfer(n: usize, lose: &[(usize, usize)]) -> Run {
    transfer_with(n, lose, Random::NONE, 256 * 1024)
}

/// Random loss of any packet, both ways, from a seeded generator.
#[derive(Clone, Copy)]
struct Random {
    loss: f64,
    seed: u64,
}

impl Random {
    const NONE: Random = Random { loss: 0.0, seed: 1 };

    fn drop(&mut self) -> bool {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        ((self.seed >> 11) as f64 / (1u64 << 53) as f64) < self.loss
    }
}

fn transfer_with(n: usize, lose: &[(usize, usize)], mut random: Random, buffer: usize) -> Run {
    let (mut a, mut b) = (Host::new(A, 1, buffer), Host::new(B, 2, buffer));
    b.socket().listen(4000).expect("listens");
    let cx = a.iface.context();
    a.sockets
        .get_mut::<tcp::Socket>(a.tcp)
        .connect(cx, (IpAddress::v4(B[0], B[1], B[2], B[3]), 4000), 50000)
        .expect("connects");
    let payload: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
    let (mut sent, mut delivered) = (0, Vec::new());
    let mut wire: VecDeque<(u64, bool, Vec<u8>)> = VecDeque::new();
    let mut first_seq_seen: Vec<u32> = Vec::new();
    let mut dropped: Vec<usize> = Vec::new();
    let mut data_segments_sent = 0;
    for ms in 0..120_000u64 {
        let now = Instant::from_millis(ms as i64);
        // Deliver what is due.
        while wire.front().is_some_and(|(at, _, _)| *at <= ms) {
            let Some((_, to_b, p)) = wire.pop_front() else {
                break;
            };
            if to_b {
                b.dev.push_rx(&p);
            } else {
                a.dev.push_rx(&p);
            }
        }
        if a.socket().can_send() && sent < n {
            let k = a.socket().send_slice(&payload[sent..]).expect("sends");
            sent += k;
            if sent == n {
                a.socket().close();
            }
        }
        a.poll(now);
        b.poll(now);
        while b.socket().can_recv() {
            b.socket()
                .recv(|buf| {
                    delivered.extend_from_slice(buf);
                    (buf.len(), ())
                })
                .expect("receives");
        }
        b.poll(now);
        // Put what each side sent on the wire, losing the chosen segments once.
        while let Some(p) = a.dev.pop_tx() {
            if let Some((seq, _)) = data_segment(&p) {
                data_segments_sent += 1;
                if !first_seq_seen.contains(&seq) {
                    first_seq_seen.push(seq);
                }
                let index = first_seq_seen.iter().position(|s| *s == seq).unwrap_or(0);
                let times = lose.iter().find(|(i, _)| *i == index).map_or(0, |l| l.1);
                if dropped.iter().filter(|d| **d == index).count() < times || random.drop() {
                    dropped.push(index);
                    a.dev.recycle(p);
                    continue;
                }
            }
            wire.push_back((ms + ONE_WAY_MS, true, p.clone()));
            a.dev.recycle(p);
        }
        while let Some(p) = b.dev.pop_tx() {
            if random.drop() {
                b.dev.recycle(p);
                continue;
            }
            wire.push_back((ms + ONE_WAY_MS, false, p.clone()));
            b.dev.recycle(p);
        }
        // Done when B has every byte and A's FIN.
        if delivered.len() == n && !b.socket().may_recv() {
            break;
        }
    }
    let stats = a.socket().stats();
    assert!(
        delivered.len() == n && !b.socket().may_recv(),
        "the transfer (and its FIN) did not complete in 120 simulated seconds: {} of {n} bytes ({stats:?}, A {:?}, B {:?})",
        delivered.len(),
        a.socket().state(),
        b.socket().state()
    );
    assert!(delivered == payload, "the bytes arrived changed");
    Run {
        delivered,
        resent: data_segments_sent - first_seq_seen.len(),
        stats,
    }
}

#[test]
fn without_loss_every_segment_is_sent_once() {
    let n = 400 * 1024;
    let r = transfer(n, &[]);
    assert_eq!(r.delivered.len(), n);
    assert_eq!(r.resent, 0);
    assert_eq!(r.stats, tcp::Stats::default());
}

#[test]
fn one_lost_segment_is_resent_alone_without_a_timeout() {
    let n = 400 * 1024;
    let r = transfer(n, &[(60, 1)]);
    assert_eq!(r.stats.fast_retransmits, 1, "{:?}", r.stats);
    assert_eq!(r.stats.hole_retransmits, 1, "{:?}", r.stats);
    assert_eq!(r.stats.timeouts, 0, "{:?}", r.stats);
    // Upstream 0.12 sent everything after the hole again.
    assert_eq!(r.resent, 1);
}

#[test]
fn several_holes_in_one_window_are_each_resent_once() {
    let n = 400 * 1024;
    let r = transfer(n, &[(60, 1), (64, 1), (70, 1), (71, 1), (90, 1)]);
    assert_eq!(r.stats.timeouts, 0, "{:?}", r.stats);
    assert_eq!(r.stats.hole_retransmits, 5, "{:?}", r.stats);
    assert_eq!(r.resent, 5);
}

#[test]
fn a_lost_retransmission_is_sent_again_and_only_it() {
    // The receive window fills behind the hole, so no further ACK comes:
    // the timer notices, and the recovery resends the hole alone.
    let n = 400 * 1024;
    let r = transfer(n, &[(60, 2)]);
    assert_eq!(r.stats.hole_retransmits, 2, "{:?}", r.stats);
    assert!(r.stats.timeouts <= 1, "{:?}", r.stats);
    assert_eq!(r.resent, 2);
}

#[test]
fn a_timeout_during_a_recovery_resends_the_holes_not_the_window() {
    // The hole is lost three times: by then the sender has nothing new to
    // send, no ACK arrives to drive the recovery, and the timer fires.
    let n = 100 * 1024;
    let r = transfer(n, &[(60, 3)]);
    assert!(r.stats.timeouts >= 1, "{:?}", r.stats);
    // Only the hole went out again, each time; never the segments after it.
    assert_eq!(r.resent, r.stats.hole_retransmits as usize, "{:?}", r.stats);
}

#[test]
fn a_lost_tail_behind_a_hole_is_sent_again_after_a_timeout_or_two() {
    // A hole near the end of the window, three segments the receiver
    // holds, and the last ten segments lost (a NAT that dropped a burst):
    // once the hole is filled no SACK block shows the tail. The first
    // timeout resends the hole, the second finds nothing held beyond its
    // retransmission, and the tail goes again. Before, the recovery still
    // counted as running at the timeout and resent one segment per
    // timeout, each twice as long as the last (12 timeouts here; a 1 MB
    // transfer in tests/peer.rs stalled for minutes).
    let n: usize = 100 * 1024;
    let segments = n.div_ceil(1380);
    let mut lose = vec![(segments - 14, 1)];
    lose.extend((segments - 10..segments).map(|i| (i, 1)));
    let r = transfer(n, &lose);
    assert_eq!(r.delivered.len(), n, "{:?}", r.stats);
    assert!(r.stats.timeouts <= 2, "{:?}", r.stats);
}

#[test]
fn two_percent_random_loss_both_ways_with_big_windows_never_stalls() {
    for seed in 1..=50u64 {
        let n = 4 << 20;
        let r = transfer_with(
            n,
            &[],
            Random {
                loss: 0.02,
                seed: seed * 0x9E37_79B9,
            },
            2 << 20,
        );
        assert_eq!(r.delivered.len(), n, "seed {seed}");
    }
}
