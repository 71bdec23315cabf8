//! smoltcp's `Device` over two packet queues, with recycled buffers so the
//! hot path does not allocate per packet.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use smoltcp::phy::{Checksum, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

use crate::TUNNEL_MTU;

/// The most packets queued in either direction. Beyond it, packets from the
/// tunnel are dropped (TCP recovers), and smoltcp is told the device is busy
/// so it holds its own packets until the engine has encrypted the queue: a
/// window bigger than the queue must not be cut short by our own drop.
pub const MAX_QUEUED: usize = 1024;

type Pool = Rc<RefCell<Vec<Vec<u8>>>>;

fn take(pool: &Pool) -> Vec<u8> {
    pool.borrow_mut()
        .pop()
        .unwrap_or_else(|| Vec::with_capacity(TUNNEL_MTU + 64))
}

/// Spare buffers kept for reuse: about the engine's batches (64 out, 64
/// in). A burst beyond them is freed after it (about 1.5 KiB each, so a
/// full queue's worth would stay resident on the device).
const POOL_KEPT: usize = 128;

fn give(pool: &Pool, mut b: Vec<u8>) {
    let mut p = pool.borrow_mut();
    if p.len() < POOL_KEPT {
        b.clear();
        p.push(b);
    }
}

/// IP packets between WireGuard and smoltcp.
#[derive(Default)]
pub struct VirtualDevice {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    pool: Pool,
}

impl VirtualDevice {
    /// Queues a packet that came out of the tunnel for smoltcp.
    pub fn push_rx(&mut self, packet: &[u8]) {
        if self.rx.len() >= MAX_QUEUED {
            return;
        }
        let mut b = take(&self.pool);
        b.extend_from_slice(packet);
        self.rx.push_back(b);
    }

    /// Takes a packet smoltcp wants sent into the tunnel; give it back with [`Self::recycle`].
    pub fn pop_tx(&mut self) -> Option<Vec<u8>> {
        self.tx.pop_front()
    }

    /// How many packets from the tunnel wait for smoltcp.
    pub fn queued_rx(&self) -> usize {
        self.rx.len()
    }

    /// How many packets smoltcp has queued to be sent.
    pub fn queued_tx(&self) -> usize {
        self.tx.len()
    }

    /// Returns a buffer to the pool.
    pub fn recycle(&mut self, b: Vec<u8>) {
        give(&self.pool, b);
    }
}

/// Receives one packet.
pub struct Rx(Vec<u8>, Pool);
/// Sends one packet.
pub struct Tx<'a>(&'a mut VecDeque<Vec<u8>>, Pool);

impl RxToken for Rx {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let r = f(&self.0);
        give(&self.1, self.0);
        r
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut b = take(&self.1);
        b.resize(len, 0);
        let r = f(&mut b);
        if self.0.len() < MAX_QUEUED {
            self.0.push_back(b);
        } else {
            give(&self.1, b);
        }
        r
    }
}

impl Device for VirtualDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if self.tx.len() >= MAX_QUEUED {
            return None;
        }
        let p = self.rx.pop_front()?;
        Some((
            Rx(p, self.pool.clone()),
            Tx(&mut self.tx, self.pool.clone()),
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<Self::TxToken<'_>> {
        (self.tx.len() < MAX_QUEUED).then(|| Tx(&mut self.tx, self.pool.clone()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = TUNNEL_MTU;
        // Every packet smoltcp receives came out of WireGuard's AEAD, so it
        // is byte for byte what the peer's stack sent: verifying its IP and
        // TCP checksums again would only spend CPU (about 5% of the device
        // peer's under a bulk transfer). Ours are still computed, for peers
        // whose stack checks them (kernel TCP behind wireguard-go).
        c.checksum.ipv4 = Checksum::Tx;
        c.checksum.tcp = Checksum::Tx;
        c
    }
}
