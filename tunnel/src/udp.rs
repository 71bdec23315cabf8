//! The peer's UDP socket: connected to its one endpoint (the kernel drops
//! every other sender and caches the route), read in batches with
//! `recvmmsg`, and written in segments with UDP GSO. A bulk transfer costs
//! one system call per batch of datagrams instead of one per datagram; the
//! profile of the device peer under iperf3 showed those per-datagram calls
//! as most of its CPU (`cross/FOOTPRINT.md`).
//!
//! Where the kernel has no UDP GSO (before Linux 4.18), or a device refuses
//! it, datagrams go out one `send` each.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use mio::net::UdpSocket;
use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, ControlMessage, MsgFlags, MultiHeaders};

use crate::TUNNEL_MTU;

/// Datagrams read by one `recvmmsg`.
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
    Ok(s.into())
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
        Udp {
            socket,
            headers: MultiHeaders::preallocate(RECV_BATCH, None),
            rx: vec![0; RECV_BATCH * SLOT],
            tx: Vec::new(),
            seg: 0,
            count: 0,
            gso,
        }
    }

    /// Reads one batch of datagrams and hands each to `each`.
    pub fn receive(&mut self, each: &mut dyn FnMut(&[u8])) -> io::Result<Received> {
        let mut lens = [0usize; RECV_BATCH];
        let got = loop {
            let mut iovs: Vec<[IoSliceMut; 1]> = self
                .rx
                .chunks_mut(SLOT)
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
                    for (len, m) in lens.iter_mut().zip(results) {
                        // A datagram longer than a slot is not ours to read.
                        *len = if m.flags.contains(MsgFlags::MSG_TRUNC) {
                            0
                        } else {
                            m.bytes
                        };
                        n += 1;
                    }
                    break n;
                }
                Err(Errno::EAGAIN) => {
                    return Ok(Received {
                        datagrams: 0,
                        dry: true,
                    })
                }
                // Interrupted; or an ICMP port unreachable from a relay
                // that is restarting, reported on the connected socket.
                Err(Errno::EINTR | Errno::ECONNREFUSED) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        for (i, len) in lens.iter().take(got).enumerate() {
            if *len > 0 {
                each(&self.rx[i * SLOT..i * SLOT + len]);
            }
        }
        Ok(Received {
            datagrams: got,
            dry: got < RECV_BATCH,
        })
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
