//! How packets from the tunnel enter smoltcp: one at a time (the device
//! role refills its listening pools in between), with a chance for smoltcp
//! to answer after every [`ACK_EVERY`].
//!
//! smoltcp acknowledges once per `poll_egress`, however much it took in
//! before. A peer that takes a whole burst and then answers sends one ACK
//! per burst, and bursts grow with batching: a relay that forwards trains
//! of 64 datagrams (UDP GSO), or a NIC that coalesces them (GRO), made it
//! one ACK per 93 KB. The sender's window grows per ACK (smoltcp's Reno
//! adds a segment per ACK; kernel TCP's pacing follows the ACK clock), so
//! through such a relay our bulk throughput fell from about 200 to 30-70
//! MB/s. An ACK per 16 segments (23 KB) keeps the sender's clock and costs
//! a sixteenth of the per-packet work an ACK per segment would.

use smoltcp::iface::{Interface, PollIngressSingleResult, SocketSet};
use smoltcp::time::Instant;

use crate::virtual_device::VirtualDevice;

/// Packets taken in before smoltcp gets to answer them.
pub const ACK_EVERY: usize = 16;

/// Counts what a turn took in.
#[derive(Debug, Default)]
pub struct Ingress {
    taken: usize,
}

impl Ingress {
    /// Takes one waiting packet into smoltcp, and after every
    /// [`ACK_EVERY`]th lets it send what it has to (its ACKs among it).
    /// Returns whether a packet was taken.
    pub fn take_one(
        &mut self,
        t: Instant,
        iface: &mut Interface,
        dev: &mut VirtualDevice,
        sockets: &mut SocketSet<'_>,
    ) -> bool {
        if iface.poll_ingress_single(t, dev, sockets) == PollIngressSingleResult::None {
            return false;
        }
        self.taken += 1;
        if self.taken % ACK_EVERY == 0 {
            let _ = iface.poll_egress(t, dev, sockets);
        }
        true
    }
}
