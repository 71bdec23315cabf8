//! The peer's UDP socket: connected to its one endpoint (the kernel drops
//! every other sender and caches the route), read in batches with
//! `recvmmsg`, and written in segments with UDP GSO. A bulk transfer costs
//! one system call per batch of datagrams instead of one per datagram; the
//! profile of the device peer under iperf3 showed those per-datagram calls
//! as most of its CPU (`cross/FOOTPRINT.md`).
//!
//! Where the kernel has no UDP GSO (before Linux 4.18), or a device refuses
//! it, datagrams go out one `send` each.
//!
//! With UDP GRO (Linux 5.0), the kernel hands over a run of datagrams that
//! arrived together (a train the relay forwarded whole, or what a NIC's
//! NAPI poll coalesced) as one message, and a train costs one system call
//! and one wake-up. A train may be 64 KiB, so the 64 KiB receive buffer is
//! then one slot. Where nothing is joined (a NIC driver without GRO, such
//! as some Wi-Fi), that would be one call per datagram: after
//! [`UNMERGED_LIMIT`] full-size datagrams in a row arrived alone, GRO is
//! turned off and the same buffer is read as 32 slots with `recvmmsg`.
//! It is turned off when the socket has just run dry: a train queued
//! before would be read without its segment size (the kernel reports it
//! only while GRO is on), and lost.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use mio::net::UdpSocket;
use nix::errno::Errno;
use nix::sys::socket::{
    self, sockopt, ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders,
};

use crate::TUNNEL_MTU;

/// Datagrams read by one `recvmmsg` without GRO.
pub const RECV_BATCH: usize = 32;
/// Room for one datagram: a WireGuard data packet for our MTU is
/// `TUNNEL_MTU` + 32 bytes. A longer one is cut short by the kernel and
/// dropped here, as WireGuard would refuse it anyway.
const SLOT: usize = 2048;
/// The most segments in one GSO send (the kernel's limit, `UDP_MAX_SEGMENTS`,
/// is 64 before Linux 6.9).
const GSO_MAX_SEGMENTS: usize = 64;
/// The most bytes in one GSO send: the segments travel as one IP datagram
/// until they are cut, so they must fit its 64 KiB.
const GSO_MAX_BYTES: usize = 60 * 1024;

const _: () = assert!(TUNNEL_MTU + 32 <= SLOT);

/// Room for one train with GRO: the kernel joins up to 64 KiB. The
/// receive buffer is this one slot, or `RECV_BATCH` slots without GRO.
const TRAIN_SLOT: usize = RECV_BATCH * SLOT;
const _: () = assert!(TRAIN_SLOT == 64 * 1024);
/// Full-size datagrams in a row that came one per message before GRO is
/// judged useless here and turned off.
pub const UNMERGED_LIMIT: usize = 64;
/// A datagram at least this long is part of a bulk stream (a keystroke's
/// is a few hundred bytes, and comes alone anyway).
const FULL_SIZE: usize = 1024;

/// How the socket is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// GRO on: one message per call, a train of datagrams or one.
    Trains,
    /// One datagram per message, `RECV_BATCH` per call.
    Datagrams,
}

/// A non-blocking UDP socket bound to `bind` with the buffers asked for,
/// connected to `endpoint`.
pub fn connected(
    bind: SocketAddr,
    endpoint: SocketAddr,
    buffer: usize,
) -> io::Result<std::net::UdpSocket> {
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
    s.connect(&endpoint.into())?;
    let s: std::net::UdpSocket = s.into();
    // Best effort: without it (before Linux 5.0) datagrams come one by one.
    let _ = socket::setsockopt(&s, sockopt::UdpGroSegment, &true);
    Ok(s)
}

/// What a [`Udp::receive`] came to.
#[derive(Debug, PartialEq, Eq)]
pub struct Received {
    /// Datagrams handed over.
    pub datagrams: usize,
    /// The socket ran dry (mio reports it again when more arrive).
    pub dry: bool,
}

/// The connected, batched UDP socket of one peer.
pub struct Udp {
    socket: UdpSocket,
    /// Without room for senders' addresses: the socket is connected.
    headers: MultiHeaders<()>,
    rx: Vec<u8>,
    layout: Layout,
    /// Full-size datagrams in a row that came alone (with GRO on).
    unmerged: usize,
    /// Datagrams waiting to go, back to back: all `seg` bytes long but the last.
    tx: Vec<u8>,
    seg: usize,
    count: usize,
    gso: bool,
}

impl Udp {
    /// Wraps a socket already connected to its endpoint (see [`connected`]).
    pub fn new(socket: UdpSocket) -> Udp {
        let gso = socket::getsockopt(&socket, sockopt::UdpGsoSegment).is_ok();
        let gro = socket::getsockopt(&socket, sockopt::UdpGroSegment).unwrap_or(false);
        Udp {
            socket,
            headers: MultiHeaders::preallocate(RECV_BATCH, None),
            rx: vec![0; TRAIN_SLOT],
            layout: if gro {
                Layout::Trains
            } else {
                Layout::Datagrams
            },
            unmerged: 0,
            tx: Vec::new(),
            seg: 0,
            count: 0,
            gso,
        }
    }

    /// Reads one batch of datagrams (or one train) and hands each to `each`.
    pub fn receive(&mut self, each: &mut dyn FnMut(&[u8])) -> io::Result<Received> {
        let (slots, slot) = match self.layout {
            Layout::Trains => (1, TRAIN_SLOT),
            Layout::Datagrams => (RECV_BATCH, SLOT),
        };
        // Each message's length and segment size.
        let mut got = [(0usize, 0usize); RECV_BATCH];
        let n = loop {
            if slots == 1 {
                // nix's recvmmsg leaves a header's control length where the
                // last call's kernel put it (0 after a message without a
                // segment size), which would cut the next one off: fresh
                // headers each call, a few small allocations per train.
                self.headers = MultiHeaders::preallocate(1, Some(nix::cmsg_space!(i32)));
            }
            let mut iovs: Vec<[IoSliceMut; 1]> = self
                .rx
                .chunks_mut(slot)
                .map(|c| [IoSliceMut::new(c)])
                .collect();
            match socket::recvmmsg(
                self.socket.as_raw_fd(),
                &mut self.headers,
                iovs.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(results) => {
                    let mut n = 0;
                    for (g, m) in got.iter_mut().zip(results) {
                        // A message longer than its slot is not ours to read.
                        *g = if m.flags.contains(MsgFlags::MSG_TRUNC) {
                            (0, 0)
                        } else {
                            (m.bytes, gro_segment(&m).unwrap_or(m.bytes))
                        };
                        n += 1;
                    }
                    break n;
                }
                Err(Errno::EAGAIN) => {
                    if self.layout == Layout::Trains && self.unmerged >= UNMERGED_LIMIT {
                        let _ = socket::setsockopt(&self.socket, sockopt::UdpGroSegment, &false);
                        self.layout = Layout::Datagrams;
                        self.headers = MultiHeaders::preallocate(RECV_BATCH, None);
                    }
                    return Ok(Received {
                        datagrams: 0,
                        dry: true,
                    });
                }
                // Interrupted; or an ICMP port unreachable from a relay
                // that is restarting, reported on the connected socket.
                Err(Errno::EINTR | Errno::ECONNREFUSED) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let mut datagrams = 0;
        for (i, &(len, seg)) in got.iter().take(n).enumerate() {
            let message = &self.rx[i * slot..i * slot + len];
            // A datagram longer than SLOT is not WireGuard's for our MTU.
            for d in message.chunks(seg.max(1)).filter(|d| d.len() <= SLOT) {
                each(d);
                datagrams += 1;
            }
        }
        if self.layout == Layout::Trains && n == 1 {
            self.note_merging(got[0]);
        }
        Ok(Received {
            datagrams,
            dry: n < slots,
        })
    }

    /// Counts bulk datagrams that came one per message; at
    /// `UNMERGED_LIMIT` in a row, GRO goes off at the next dry read (a
    /// system call per datagram costs more than GRO saves).
    fn note_merging(&mut self, (len, seg): (usize, usize)) {
        if len > seg {
            self.unmerged = 0;
        } else if len >= FULL_SIZE {
            self.unmerged += 1;
        }
    }

    /// Queues a datagram. It goes out with the batch at [`Udp::flush`], or
    /// at once when it cannot join the batch.
    pub fn queue(&mut self, datagram: &[u8]) {
        if !self.gso {
            self.send_one(datagram);
            return;
        }
        let joins = self.count == 0
            || (self.tx.len() == self.count * self.seg
                && datagram.len() <= self.seg
                && self.count < GSO_MAX_SEGMENTS
                && self.tx.len() + datagram.len() <= GSO_MAX_BYTES);
        if !joins {
            self.flush();
        }
        if self.count == 0 {
            self.seg = datagram.len();
        }
        self.tx.extend_from_slice(datagram);
        self.count += 1;
    }

    /// Sends what is queued. A full socket buffer drops it, as it would
    /// drop single datagrams: WireGuard and TCP recover.
    pub fn flush(&mut self) {
        if self.count == 1 {
            self.send_one(&self.tx);
        } else if self.count > 1 {
            let seg = self.seg as u16;
            let sent = socket::sendmsg::<()>(
                self.socket.as_raw_fd(),
                &[IoSlice::new(&self.tx)],
                &[ControlMessage::UdpGsoSegments(&seg)],
                MsgFlags::empty(),
                None,
            );
            // EIO: the device cannot segment; EINVAL, ENOPROTOOPT: the
            // kernel has no UDP GSO. Send them one by one from now on.
            if let Err(Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT) = sent {
                self.gso = false;
                for d in self.tx.chunks(self.seg) {
                    self.send_one(d);
                }
            }
        }
        self.tx.clear();
        self.count = 0;
    }

    fn send_one(&self, datagram: &[u8]) {
        // A full socket buffer drops the datagram; WireGuard and TCP recover.
        let _ = self.socket.send(datagram);
    }
}

/// The segment size of a train the kernel joined (UDP GRO), if it is one.
fn gro_segment<S>(m: &socket::RecvMsg<'_, '_, S>) -> Option<usize> {
    m.cmsgs()
        .ok()?
        .find_map(|c| match c {
            ControlMessageOwned::UdpGroSegments(s) => usize::try_from(s).ok(),
            _ => None,
        })
        .filter(|&s| s > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Udp, std::net::UdpSocket) {
        let far = std::net::UdpSocket::bind("127.0.0.1:0").expect("binds");
        let any = "127.0.0.1:0".parse().expect("addr");
        let near = connected(any, far.local_addr().expect("addr"), 1 << 20).expect("binds");
        let udp = Udp::new(UdpSocket::from_std(near));
        far.connect(udp.socket.local_addr().expect("addr"))
            .expect("connects");
        (udp, far)
    }

    fn receive_all(udp: &mut Udp, want: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < want && std::time::Instant::now() < deadline {
            udp.receive(&mut |d| got.push(d.to_vec()))
                .expect("receives");
        }
        got
    }

    #[test]
    fn a_batch_of_datagrams_arrives_whole_and_in_order() {
        let (mut udp, far) = pair();
        let sent: Vec<Vec<u8>> = (0..RECV_BATCH + 5)
            .map(|i| vec![i as u8; 1 + i * 37])
            .collect();
        for d in &sent {
            far.send(d).expect("sends");
        }
        assert_eq!(receive_all(&mut udp, sent.len()), sent);
        let r = udp
            .receive(&mut |_| panic!("nothing more"))
            .expect("receives");
        assert_eq!(
            r,
            Received {
                datagrams: 0,
                dry: true
            }
        );
    }

    #[test]
    fn a_datagram_longer_than_a_slot_is_dropped_and_the_rest_kept() {
        let (mut udp, far) = pair();
        far.send(&[1u8; 100]).expect("sends");
        far.send(&vec![2u8; SLOT + 1]).expect("sends");
        far.send(&[3u8; 100]).expect("sends");
        let mut got = Vec::new();
        while got.len() < 2 {
            udp.receive(&mut |d| got.push(d.to_vec()))
                .expect("receives");
        }
        assert_eq!(got, vec![vec![1u8; 100], vec![3u8; 100]]);
    }

    #[test]
    fn queued_datagrams_arrive_as_sent_whatever_their_sizes() {
        let (mut udp, far) = pair();
        // Full-size segments, a short tail, a longer one (a new batch),
        // more than a batch's worth, and single ones.
        let mut sent: Vec<Vec<u8>> = Vec::new();
        sent.extend((0..10).map(|i| vec![i as u8; 1452]));
        sent.push(vec![0xaa; 60]);
        sent.push(vec![0xbb; 1452]);
        sent.extend((0..GSO_MAX_SEGMENTS + 3).map(|i| vec![i as u8; 500]));
        sent.push(vec![0xcc; 1]);
        for d in &sent {
            udp.queue(d);
        }
        udp.flush();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        far.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        while got.len() < sent.len() {
            let n = far.recv(&mut buf).expect("receives");
            got.push(buf[..n].to_vec());
        }
        assert_eq!(got, sent);
    }

    /// Each datagram's length and first byte, short enough to print.
    fn summary(v: &[Vec<u8>]) -> Vec<(usize, u8)> {
        v.iter().map(|d| (d.len(), d[0])).collect()
    }

    /// Sends `datagrams` (all as long as the first but the last) as one
    /// GSO train, as the relay forwards them.
    fn send_train(far: &std::net::UdpSocket, datagrams: &[Vec<u8>]) {
        let seg = datagrams[0].len() as u16;
        socket::sendmsg::<()>(
            far.as_raw_fd(),
            &[IoSlice::new(&datagrams.concat())],
            &[ControlMessage::UdpGsoSegments(&seg)],
            MsgFlags::empty(),
            None,
        )
        .expect("GSO send");
    }

    #[test]
    fn a_train_arrives_in_one_call_as_its_datagrams() {
        let (mut udp, far) = pair();
        assert_eq!(udp.layout, Layout::Trains, "this kernel has UDP GRO");
        let mut sent: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1452]).collect();
        sent.push(vec![0xee; 300]);
        send_train(&far, &sent);
        let mut got = Vec::new();
        let r = udp
            .receive(&mut |d| got.push(d.to_vec()))
            .expect("receives");
        assert_eq!((r.datagrams, got), (sent.len(), sent));
        assert_eq!(udp.layout, Layout::Trains);
    }

    #[test]
    fn bulk_datagrams_arriving_alone_turn_gro_off_and_none_is_lost() {
        let (mut udp, far) = pair();
        // A train, then full-size datagrams one by one: nothing joins them
        // on the way.
        let train: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1000]).collect();
        send_train(&far, &train);
        let alone: Vec<Vec<u8>> = (0..UNMERGED_LIMIT + 10)
            .map(|i| vec![i as u8; 1400])
            .collect();
        for d in &alone {
            far.send(d).expect("sends");
        }
        let sent = [train.clone(), alone].concat();
        let mut got = receive_all(&mut udp, sent.len());
        assert_eq!(summary(&got), summary(&sent));
        assert_eq!(got, sent);
        assert_eq!(udp.layout, Layout::Trains);
        // Dry once: from now on, batches of single datagrams.
        let r = udp
            .receive(&mut |_| panic!("nothing more"))
            .expect("receives");
        assert!(r.dry);
        assert_eq!(udp.layout, Layout::Datagrams);
        got.clear();
        send_train(&far, &train);
        let burst: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 700]).collect();
        for d in &burst {
            far.send(d).expect("sends");
        }
        let r = udp
            .receive(&mut |d| got.push(d.to_vec()))
            .expect("receives");
        assert_eq!(r.datagrams, RECV_BATCH.min(train.len() + burst.len()));
        got.extend(receive_all(&mut udp, train.len() + burst.len() - got.len()));
        assert_eq!(got, [train, burst].concat());
    }

    #[test]
    fn small_datagrams_arriving_alone_leave_gro_on() {
        let (mut udp, far) = pair();
        let sent: Vec<Vec<u8>> = (0..2 * UNMERGED_LIMIT)
            .map(|i| vec![i as u8; 200])
            .collect();
        for d in &sent {
            far.send(d).expect("sends");
        }
        assert_eq!(receive_all(&mut udp, sent.len()), sent);
        assert_eq!(udp.layout, Layout::Trains);
    }

    #[test]
    fn datagrams_from_anyone_but_the_endpoint_are_not_read() {
        let (mut udp, far) = pair();
        let stranger = std::net::UdpSocket::bind("127.0.0.1:0").expect("binds");
        let to = udp.socket.local_addr().expect("addr");
        stranger.send_to(b"stranger", to).expect("sends");
        far.send(b"endpoint").expect("sends");
        assert_eq!(receive_all(&mut udp, 1), vec![b"endpoint".to_vec()]);
        let r = udp
            .receive(&mut |_| panic!("nothing more"))
            .expect("receives");
        assert!(r.dry);
    }
}
