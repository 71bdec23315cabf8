//! The relay's socket, read and written in batches: `recvmmsg` takes what
//! has arrived (waiting for the first datagram up to the socket's read
//! timeout) and `sendmmsg` forwards it in one call.
//!
//! Where the kernel offers it, datagrams travel in trains both ways: with
//! UDP GRO (enabled by [`crate::bind`]) the kernel hands over a run of one
//! flow's datagrams as one message and its segment size, and consecutive
//! datagrams forwarded to the same peer leave as one UDP GSO message. A
//! burst a peer sent together (one GSO send) is read, checked datagram by
//! datagram and forwarded as one train, and the peer on the far side wakes
//! once for it. The relay spends a few system calls per window rather than
//! two per datagram, and on one host the kernel never cuts the train in
//! between.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{
    self, sockopt, ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage,
};

/// Messages per `recvmmsg`; with GRO each may hold many datagrams.
pub const BATCH: usize = 16;
/// Room for one message: GRO joins up to 64 KiB of datagrams.
const SLOT: usize = 64 * 1024;
/// The longest datagram relayed. A WireGuard packet through a path with a
/// 1500-byte MTU is at most 1,472 bytes; longer ones are dropped and
/// counted.
pub const MAX_DATAGRAM: usize = 4096;
/// Datagrams in one GSO send (the kernel's `UDP_MAX_SEGMENTS` before 6.9).
const GSO_MAX_SEGMENTS: usize = 64;
/// Bytes in one GSO send: the train is one IP datagram until it is cut.
const GSO_MAX_BYTES: usize = 60 * 1024;
/// Messages per `sendmmsg`.
const SEND_BATCH: usize = 64;

/// One datagram read: where it is in the buffer and who sent it.
#[derive(Clone, Copy)]
struct Datagram {
    at: usize,
    len: usize,
    from: SocketAddr,
}

/// One message to send: bytes `at..at + len` of the buffer, cut into
/// `seg`-byte datagrams (the last may be shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Train {
    at: usize,
    len: usize,
    seg: usize,
    count: usize,
    to: SocketAddr,
}

impl Train {
    /// Whether datagram `d` can ride at the end of this train.
    fn takes(&self, d: &Datagram, to: SocketAddr) -> bool {
        self.to == to
            && self.seg > 0
            && self.at + self.len == d.at
            && self.len == self.count * self.seg
            && d.len <= self.seg
            && self.count < GSO_MAX_SEGMENTS
            && self.len + d.len <= GSO_MAX_BYTES
    }

    /// The train as single datagrams, for a kernel that cannot segment.
    fn split(self) -> impl Iterator<Item = Train> {
        (0..self.count).map(move |k| {
            let at = self.at + k * self.seg;
            let len = self.seg.min(self.at + self.len - at);
            Train {
                at,
                len,
                seg: len,
                count: 1,
                to: self.to,
            }
        })
    }
}

fn rx_headers() -> MultiHeaders<SockaddrStorage> {
    MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(i32)))
}

/// How many of `trains`, from the first, share one `sendmmsg`, and their
/// GSO segment size. The size applies to every message of a call, so a
/// call takes trains of one segment size and single datagrams no longer
/// than it (the kernel sends those whole).
fn call(trains: &[Train]) -> (usize, Option<u16>) {
    let mut seg: Option<usize> = None;
    let mut longest_single = 0;
    let mut n = 0;
    for t in trains.iter().take(SEND_BATCH) {
        if t.count > 1 {
            match seg {
                None if longest_single <= t.seg => seg = Some(t.seg),
                Some(s) if s == t.seg => {}
                _ => break,
            }
        } else if seg.is_some_and(|s| t.len > s) {
            break;
        } else {
            longest_single = longest_single.max(t.len);
        }
        n += 1;
    }
    // Segments are at most MAX_DATAGRAM bytes.
    (n.max(1), seg.map(|s| s as u16))
}

/// One batch: the datagrams read and where each goes.
pub struct Batch {
    rx_headers: MultiHeaders<SockaddrStorage>,
    tx_plain: MultiHeaders<SockaddrStorage>,
    tx_gso: MultiHeaders<SockaddrStorage>,
    buf: Vec<u8>,
    got: Vec<Datagram>,
    /// The datagrams to send, in order: index into `got`, destination.
    out: Vec<(usize, SocketAddr)>,
    trains: Vec<Train>,
    /// The kernel takes UDP GSO sends (cleared when it refuses one).
    gso: bool,
    /// Datagrams dropped for being longer than [`MAX_DATAGRAM`].
    pub oversized: u64,
}

impl Batch {
    /// Empty buffers for one batch on `socket`.
    pub fn new(socket: &UdpSocket) -> Batch {
        Batch {
            rx_headers: rx_headers(),
            tx_plain: MultiHeaders::preallocate(SEND_BATCH, None),
            tx_gso: MultiHeaders::preallocate(SEND_BATCH, Some(nix::cmsg_space!(u16))),
            buf: vec![0; BATCH * SLOT],
            got: Vec::with_capacity(BATCH),
            out: Vec::with_capacity(2 * BATCH),
            trains: Vec::with_capacity(SEND_BATCH),
            gso: socket::getsockopt(socket, sockopt::UdpGsoSegment).is_ok(),
            oversized: 0,
        }
    }

    /// Waits for a datagram (up to the socket's read timeout, then
    /// `WouldBlock`) and reads it with whatever else has arrived. Returns
    /// how many datagrams it kept.
    pub fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.got.clear();
        self.out.clear();
        // nix's recvmmsg leaves each header's control length where the
        // last call's kernel put it (0 after a datagram without GRO), which
        // would cut the next segment size off: fresh headers each batch.
        self.rx_headers = rx_headers();
        let mut iovs: Vec<[IoSliceMut; 1]> = self
            .buf
            .chunks_mut(SLOT)
            .map(|c| [IoSliceMut::new(c)])
            .collect();
        let results = socket::recvmmsg(
            socket.as_raw_fd(),
            &mut self.rx_headers,
            iovs.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )
        .map_err(io::Error::from)?;
        for (slot, m) in results.enumerate() {
            let from = m.address.as_ref().and_then(to_std);
            let seg = m
                .cmsgs()
                .ok()
                .and_then(|mut c| {
                    c.find_map(|c| match c {
                        ControlMessageOwned::UdpGroSegments(s) => usize::try_from(s).ok(),
                        _ => None,
                    })
                })
                .filter(|&s| s > 0)
                .unwrap_or(m.bytes.max(1));
            let (Some(from), false) = (from, m.flags.contains(MsgFlags::MSG_TRUNC)) else {
                self.oversized += 1;
                continue;
            };
            if seg > MAX_DATAGRAM {
                self.oversized += m.bytes.div_ceil(seg) as u64;
                continue;
            }
            let start = slot * SLOT;
            for at in (0..m.bytes).step_by(seg) {
                self.got.push(Datagram {
                    at: start + at,
                    len: seg.min(m.bytes - at),
                    from,
                });
            }
        }
        Ok(self.got.len())
    }

    /// How many datagrams the last [`Batch::receive`] kept.
    pub fn len(&self) -> usize {
        self.got.len()
    }

    /// Whether it kept none.
    pub fn is_empty(&self) -> bool {
        self.got.is_empty()
    }

    /// Datagram `i` of the batch and its sender.
    pub fn datagram(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        let d = self.got.get(i)?;
        Some((d.from, &self.buf[d.at..d.at + d.len]))
    }

    /// Queues datagram `i` to go to `to`.
    pub fn forward(&mut self, i: usize, to: SocketAddr) {
        if i < self.got.len() {
            self.out.push((i, to));
        }
    }

    /// Sends what was queued, in order; `failed` hears of each message
    /// that could not be sent.
    pub fn send(&mut self, socket: &UdpSocket, failed: &mut dyn FnMut(SocketAddr, io::Error)) {
        self.trains.clear();
        for &(i, to) in &self.out {
            let d = self.got[i];
            match self.trains.last_mut() {
                Some(t) if self.gso && t.takes(&d, to) => {
                    t.len += d.len;
                    t.count += 1;
                }
                _ => self.trains.push(Train {
                    at: d.at,
                    len: d.len,
                    seg: d.len,
                    count: 1,
                    to,
                }),
            }
        }
        self.out.clear();
        let mut sent = 0;
        while sent < self.trains.len() {
            let (n, seg) = call(&self.trains[sent..]);
            let pending = &self.trains[sent..sent + n];
            let slices: Vec<[IoSlice; 1]> = pending
                .iter()
                .map(|t| [IoSlice::new(&self.buf[t.at..t.at + t.len])])
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> = pending
                .iter()
                .map(|t| Some(SockaddrStorage::from(t.to)))
                .collect();
            // Headers with room for a control message hand that room to
            // the kernel even when none is written (it refuses the empty
            // one): sends without one use headers of their own.
            let gso_seg = seg.unwrap_or(0);
            let gso = [ControlMessage::UdpGsoSegments(&gso_seg)];
            let (headers, cmsgs): (_, &[ControlMessage]) = match seg {
                Some(_) => (&mut self.tx_gso, &gso),
                None => (&mut self.tx_plain, &[]),
            };
            let result = socket::sendmmsg(
                socket.as_raw_fd(),
                headers,
                slices.iter(),
                &addrs,
                cmsgs,
                MsgFlags::empty(),
            )
            .map(|r| r.count());
            match result {
                Ok(n) => sent += n.max(1),
                Err(Errno::EINTR) => {}
                // The kernel or the route cannot segment: send this call's
                // trains again one datagram each, and never join again.
                Err(Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT) if seg.is_some() => {
                    self.gso = false;
                    let split: Vec<Train> = self
                        .trains
                        .drain(sent..sent + n)
                        .flat_map(Train::split)
                        .collect();
                    self.trains.splice(sent..sent, split);
                }
                // The first pending message failed: report it and go on
                // with the rest, as one send per datagram would.
                Err(e) => {
                    failed(pending[0].to, e.into());
                    sent += 1;
                }
            }
        }
    }
}
fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn socket() -> UdpSocket {
        let s = crate::bind("127.0.0.1:0".parse().expect("addr")).expect("binds");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s
    }

    /// A peer's socket: no GRO, so a train arrives as the datagrams it carries.
    fn peer() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").expect("binds");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn single(at: usize, len: usize, to: SocketAddr) -> Train {
        Train {
            at,
            len,
            seg: len,
            count: 1,
            to,
        }
    }

    #[test]
    fn a_train_is_read_checked_one_by_one_and_forwarded_whole() {
        let (relay, a, b) = (socket(), peer(), peer());
        let to = relay.local_addr().expect("addr");
        // One GSO send: ten 1000-byte datagrams and a 300-byte tail.
        let sent: Vec<Vec<u8>> = (0..11u8)
            .map(|i| vec![i; if i < 10 { 1000 } else { 300 }])
            .collect();
        let mut batch = Batch::new(&relay);
        // A plain datagram first: the next read must still see segment sizes.
        a.send_to(b"plain", to).expect("sends");
        assert_eq!(batch.receive(&relay).expect("receives"), 1);
        let seg = 1000u16;
        socket::sendmsg(
            a.as_raw_fd(),
            &[IoSlice::new(&sent.concat())],
            &[ControlMessage::UdpGsoSegments(&seg)],
            MsgFlags::empty(),
            Some(&SockaddrStorage::from(to)),
        )
        .expect("GSO send");
        assert_eq!(batch.receive(&relay).expect("receives"), sent.len());
        let from = a.local_addr().expect("addr");
        for (i, d) in sent.iter().enumerate() {
            assert_eq!(batch.datagram(i), Some((from, &d[..])));
        }
        // GRO: one message, so the datagrams lie back to back.
        assert!(batch.got.windows(2).all(|w| w[0].at + w[0].len == w[1].at));
        let dest = b.local_addr().expect("addr");
        for i in 0..batch.len() {
            batch.forward(i, dest);
        }
        batch.send(&relay, &mut |to, e| panic!("send to {to}: {e}"));
        assert_eq!(
            batch.trains,
            vec![Train {
                at: 0,
                len: 10_300,
                seg: 1000,
                count: 11,
                to: dest
            }]
        );
        let mut buf = [0u8; 2048];
        for d in &sent {
            let (n, source) = b.recv_from(&mut buf).expect("forwarded");
            assert_eq!((&buf[..n], source), (&d[..], to));
        }
    }

    #[test]
    fn a_train_ends_at_a_short_datagram_another_destination_a_gap_or_its_limits() {
        let (x, y) = (addr(1), addr(2));
        let d = |at, len| Datagram { at, len, from: x };
        let t = Train {
            at: 0,
            len: 3000,
            seg: 1000,
            count: 3,
            to: x,
        };
        assert!(t.takes(&d(3000, 1000), x));
        assert!(t.takes(&d(3000, 10), x));
        assert!(!t.takes(&d(3000, 1001), x), "longer than a segment");
        assert!(!t.takes(&d(3000, 1000), y), "another destination");
        assert!(!t.takes(&d(3001, 1000), x), "not adjacent");
        let short = Train { len: 2500, ..t };
        assert!(!short.takes(&d(2500, 500), x), "after a short datagram");
        let full = Train {
            len: GSO_MAX_SEGMENTS * 10,
            seg: 10,
            count: GSO_MAX_SEGMENTS,
            ..t
        };
        assert!(!full.takes(&d(full.len, 10), x), "segment limit");
        let big = Train {
            len: 61 * 1000,
            count: 61,
            ..t
        };
        assert!(!big.takes(&d(big.len, 1000), x), "byte limit");
        assert!(!single(0, 0, x).takes(&d(0, 0), x), "empty datagrams");
    }

    #[test]
    fn one_call_takes_one_segment_size_and_no_single_longer_than_it() {
        let x = addr(1);
        let train = |seg: usize, count: usize| Train {
            at: 0,
            len: seg * count,
            seg,
            count,
            to: x,
        };
        let trains = [
            single(0, 100, x),
            train(1000, 3),
            train(1000, 2),
            single(0, 900, x),
            single(0, 1200, x),
            single(0, 50, x),
            train(500, 2),
            single(0, 1200, x),
        ];
        assert_eq!(call(&trains), (4, Some(1000)));
        assert_eq!(call(&trains[4..]), (2, None));
        assert_eq!(call(&trains[6..]), (1, Some(500)));
        assert_eq!(call(&trains[7..]), (1, None));
        let singles = vec![single(0, 10, x); SEND_BATCH + 1];
        assert_eq!(call(&singles), (SEND_BATCH, None));
    }

    #[test]
    fn a_train_splits_into_its_datagrams() {
        let x = addr(1);
        let t = Train {
            at: 100,
            len: 2500,
            seg: 1000,
            count: 3,
            to: x,
        };
        assert_eq!(
            t.split().collect::<Vec<_>>(),
            vec![
                single(100, 1000, x),
                single(1100, 1000, x),
                single(2100, 500, x)
            ]
        );
    }

    #[test]
    fn a_batch_is_read_with_its_senders_and_forwarded_in_order() {
        let (relay, a, b) = (socket(), peer(), peer());
        let to = relay.local_addr().expect("addr");
        let sent: Vec<Vec<u8>> = (0..BATCH + 3).map(|i| vec![i as u8; 10 + i]).collect();
        for (i, d) in sent.iter().enumerate() {
            let from = if i % 2 == 0 { &a } else { &b };
            from.send_to(d, to).expect("sends");
        }
        let mut batch = Batch::new(&relay);
        let mut got = Vec::new();
        while got.len() < sent.len() {
            batch.receive(&relay).expect("receives");
            for i in 0..batch.len() {
                let (from, d) = batch.datagram(i).expect("kept");
                got.push((from, d.to_vec()));
                // Each goes back to the other sender.
                let other = if from == a.local_addr().expect("addr") {
                    b.local_addr().expect("addr")
                } else {
                    a.local_addr().expect("addr")
                };
                batch.forward(i, other);
            }
            batch.send(&relay, &mut |to, e| panic!("send to {to}: {e}"));
        }
        let expected: Vec<(SocketAddr, Vec<u8>)> = sent
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let from = if i % 2 == 0 { &a } else { &b };
                (from.local_addr().expect("addr"), d.clone())
            })
            .collect();
        assert_eq!(got, expected);
        let mut buf = [0u8; 100];
        for (i, d) in sent.iter().enumerate() {
            let at = if i % 2 == 0 { &b } else { &a };
            let (n, from) = at.recv_from(&mut buf).expect("forwarded");
            assert_eq!((&buf[..n], from), (&d[..], to));
        }
    }

    #[test]
    fn an_oversized_datagram_is_dropped_and_counted() {
        let (relay, a) = (socket(), peer());
        let to = relay.local_addr().expect("addr");
        a.send_to(&vec![1u8; MAX_DATAGRAM + 1], to).expect("sends");
        a.send_to(&[2u8; 8], to).expect("sends");
        let mut batch = Batch::new(&relay);
        let mut kept = Vec::new();
        while kept.is_empty() {
            batch.receive(&relay).expect("receives");
            kept.extend(
                (0..batch.len()).filter_map(|i| batch.datagram(i).map(|(_, d)| d.to_vec())),
            );
        }
        assert_eq!(kept, vec![vec![2u8; 8]]);
        assert_eq!(batch.oversized, 1);
    }

    #[test]
    fn nothing_arriving_ends_at_the_read_timeout() {
        let relay = socket();
        relay
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let e = Batch::new(&relay).receive(&relay).expect_err("times out");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }
}
