//! The relay's socket, read and written in batches: `recvmmsg` takes what
//! has arrived (waiting for the first datagram up to the socket's read
//! timeout) and `sendmmsg` forwards it in one call. A burst that a peer sent
//! together (one GSO send) leaves together, so the peer on the far side
//! wakes once for it rather than once per datagram, and the relay spends
//! two system calls per batch instead of two per datagram.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{self, MsgFlags, MultiHeaders, SockaddrStorage};

/// Datagrams per batch.
pub const BATCH: usize = 32;
/// Room for one datagram. A WireGuard packet through a path with a
/// 1500-byte MTU is at most 1,472 bytes; a longer datagram is cut short by
/// the kernel and dropped here, and counted.
pub const SLOT: usize = 4096;

/// One batch: the datagrams read and where each goes.
pub struct Batch {
    rx_headers: MultiHeaders<SockaddrStorage>,
    tx_headers: MultiHeaders<SockaddrStorage>,
    buf: Vec<u8>,
    /// Each datagram's sender and length (None: cut short, or no address).
    got: [Option<(SocketAddr, usize)>; BATCH],
    n: usize,
    /// The datagrams to send: slot and destination.
    out: Vec<(usize, SocketAddr)>,
    /// Datagrams dropped for being longer than a slot.
    pub oversized: u64,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// Empty buffers for one batch.
    pub fn new() -> Batch {
        Batch {
            rx_headers: MultiHeaders::preallocate(BATCH, None),
            tx_headers: MultiHeaders::preallocate(2 * BATCH, None),
            buf: vec![0; BATCH * SLOT],
            got: [None; BATCH],
            n: 0,
            out: Vec::with_capacity(2 * BATCH),
            oversized: 0,
        }
    }

    /// Waits for a datagram (up to the socket's read timeout, then
    /// `WouldBlock`) and reads it with whatever else has arrived.
    pub fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.n = 0;
        self.out.clear();
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
        for (slot, m) in self.got.iter_mut().zip(results) {
            *slot = match (m.address.as_ref().and_then(to_std), m.flags) {
                (Some(from), f) if !f.contains(MsgFlags::MSG_TRUNC) => Some((from, m.bytes)),
                _ => {
                    self.oversized += 1;
                    None
                }
            };
            self.n += 1;
        }
        Ok(self.n)
    }

    /// How many datagrams the last [`Batch::receive`] read.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether it read none.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Datagram `i` of the batch and its sender, unless it was dropped.
    pub fn datagram(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        let (from, len) = self.got.get(i).copied().flatten()?;
        Some((from, &self.buf[i * SLOT..i * SLOT + len]))
    }

    /// Queues datagram `i` to go to `to`.
    pub fn forward(&mut self, i: usize, to: SocketAddr) {
        if self.got.get(i).copied().flatten().is_some() {
            self.out.push((i, to));
        }
    }

    /// Sends what was queued; `failed` hears of each datagram that could
    /// not be sent.
    pub fn send(&mut self, socket: &UdpSocket, failed: &mut dyn FnMut(SocketAddr, io::Error)) {
        let mut sent = 0;
        while sent < self.out.len() {
            let pending = &self.out[sent..];
            let slices: Vec<[IoSlice; 1]> = pending
                .iter()
                .map(|(i, _)| {
                    let len = self.got[*i].map_or(0, |(_, l)| l);
                    [IoSlice::new(&self.buf[i * SLOT..i * SLOT + len])]
                })
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> = pending
                .iter()
                .map(|(_, to)| Some(SockaddrStorage::from(*to)))
                .collect();
            match socket::sendmmsg(
                socket.as_raw_fd(),
                &mut self.tx_headers,
                slices.iter(),
                &addrs,
                [],
                MsgFlags::empty(),
            ) {
                Ok(results) => sent += results.count().max(1),
                Err(Errno::EINTR) => {}
                // The first pending datagram failed: report it and go on
                // with the rest, as one send per datagram would.
                Err(e) => {
                    failed(pending[0].1, e.into());
                    sent += 1;
                }
            }
        }
        self.out.clear();
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
        let s = UdpSocket::bind("127.0.0.1:0").expect("binds");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s
    }

    #[test]
    fn a_batch_is_read_with_its_senders_and_forwarded_in_order() {
        let (relay, a, b) = (socket(), socket(), socket());
        let to = relay.local_addr().expect("addr");
        let sent: Vec<Vec<u8>> = (0..BATCH + 3).map(|i| vec![i as u8; 10 + i]).collect();
        for (i, d) in sent.iter().enumerate() {
            let from = if i % 2 == 0 { &a } else { &b };
            from.send_to(d, to).expect("sends");
        }
        let mut batch = Batch::new();
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
        let (relay, a) = (socket(), socket());
        let to = relay.local_addr().expect("addr");
        a.send_to(&vec![1u8; SLOT + 1], to).expect("sends");
        a.send_to(&[2u8; 8], to).expect("sends");
        let mut batch = Batch::new();
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
        let e = Batch::new().receive(&relay).expect_err("times out");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }
}
