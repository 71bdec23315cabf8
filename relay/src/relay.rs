//! The relay core, sans-IO: a datagram, its source and the time in; where to
//! send it (or why it is dropped) out.
//!
//! # How endpoints are learned without keys
//!
//! The relay knows the two peers' WireGuard public keys and nothing secret.
//! A handshake message's `mac1` is keyed with its receiver's public key, so
//! it tells which side sent it (not who: anyone with the public key can
//! compute a `mac1`). What an off-path third party cannot produce is the
//! genuine initiator's *first data packet* after a genuine response: it
//! carries the responder's session index and comes from the initiator's
//! address. Endpoints are confirmed by exactly that:
//!
//! 1. An initiation from X (side S) is forwarded to the other side's
//!    confirmed endpoint and to the addresses that recently sent data the
//!    relay could not place (a peer that roamed, or both peers after a relay
//!    restart); before any of that, to the other side's last initiation
//!    address. It is remembered as pending.
//! 2. A response that answers a pending initiation (its receiver index) and
//!    comes from an address the initiation was sent to is forwarded to X, and
//!    remembered as a proposal (responder address Y, responder index R).
//!    Forged responses are forwarded too; the real initiator rejects them.
//! 3. Data from X carrying receiver index R confirms both endpoints: S at X,
//!    the other side at Y. Only then does transport data flow, and only
//!    between the two confirmed endpoints. Once endpoints exist, such a
//!    confirmation may move only one of them, and only when the other party
//!    is the other side's confirmed endpoint (a roaming peer handshaking with
//!    the one that stayed), so two colluding strangers who know the public
//!    keys cannot complete a "handshake" between themselves and take over.
//!
//! Pending initiations are never evicted by newer ones (a flood is refused
//! instead, at most 8 per source address), and a copy of a pending
//! initiation is never forwarded, so an attacker who receives one cannot
//! replay it to steal the genuine response.
//!
//! A third party can make the relay pass initiations and responses to a peer
//! (which WireGuard rejects; handshakes are rate-limited here), but cannot
//! get data forwarded or move an endpoint. While it floods the relay with
//! data from many addresses it can crowd a roamed peer out of the
//! unplaced-sender list and so delay recovery: denial of service, never
//! disclosure.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::rate_limit::HandshakeLimiter;
use crate::wire::{self, Message};

/// Which end of the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The device (support-agent).
    Device,
    /// The admin (support-admin).
    Admin,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Device => Side::Admin,
            Side::Admin => Side::Device,
        }
    }

    fn idx(self) -> usize {
        match self {
            Side::Device => 0,
            Side::Admin => 1,
        }
    }
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not a WireGuard message.
    NotWireGuard,
    /// A handshake message whose `mac1` fits neither peer.
    BadMac1,
    /// Too many handshake messages from this source or overall.
    RateLimited,
    /// The other side has not been heard from yet.
    NoPeerYet,
    /// A response or cookie that answers no pending initiation, or comes
    /// from another address than the one the initiation went to.
    Unsolicited,
    /// Data from an address that is not a confirmed endpoint.
    UnknownSource,
}

/// The relay's settings; nothing here is secret.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The device's WireGuard public key.
    pub device_key: [u8; 32],
    /// The admin's WireGuard public key.
    pub admin_key: [u8; 32],
    /// Handshake messages per second per source address.
    pub handshakes_per_source: u32,
    /// Handshake messages per second overall.
    pub handshakes_total: u32,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    sender_index: u32,
    side: Side,
    from: SocketAddr,
    sent_to: [Option<SocketAddr>; MAX_FANOUT],
    at: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Proposal {
    initiator_side: Side,
    initiator: SocketAddr,
    responder: SocketAddr,
    responder_index: u32,
    at: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Unplaced {
    addr: SocketAddr,
    at: Instant,
}

/// How long a forwarded initiation waits for its response, and a response
/// for the initiator's first data (WireGuard's REKEY_TIMEOUT is 5 s).
const PENDING_TTL: Duration = Duration::from_secs(10);
const MAX_PENDING: usize = 64;
const MAX_PENDING_PER_IP: usize = 8;
/// The most addresses one initiation is sent to.
const MAX_FANOUT: usize = 4;
/// How long an address that sent unplaceable data stays a forwarding candidate.
const UNPLACED_TTL: Duration = Duration::from_secs(30);
const MAX_UNPLACED: usize = 8;

/// Counters for the relay's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams forwarded.
    pub forwarded: u64,
    /// Bytes forwarded.
    pub forwarded_bytes: u64,
    /// Datagrams dropped.
    pub dropped: u64,
}

/// Where one datagram goes: nowhere, or up to `MAX_FANOUT` addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Targets {
    addrs: [Option<SocketAddr>; MAX_FANOUT],
}

impl Targets {
    fn one(a: SocketAddr) -> Self {
        let mut addrs = [None; MAX_FANOUT];
        addrs[0] = Some(a);
        Self { addrs }
    }

    /// The addresses.
    pub fn iter(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.addrs.iter().flatten().copied()
    }
}

/// The relay's state for one tunnel.
#[derive(Debug)]
pub struct Relay {
    /// `mac1` keys of messages addressed to the device, and to the admin.
    mac1_keys: [[u8; 32]; 2],
    endpoints: [Option<SocketAddr>; 2],
    /// Where each side last initiated from (before anything is confirmed).
    candidates: [Option<SocketAddr>; 2],
    pending: Vec<Pending>,
    proposals: Vec<Proposal>,
    unplaced: Vec<Unplaced>,
    limiter: HandshakeLimiter,
    stats: Stats,
}

impl Relay {
    /// A relay for the tunnel between these two keys.
    pub fn new(config: &RelayConfig, now: Instant) -> Self {
        Self {
            mac1_keys: [
                wire::mac1_key(&config.device_key),
                wire::mac1_key(&config.admin_key),
            ],
            endpoints: [None, None],
            candidates: [None, None],
            pending: Vec::with_capacity(MAX_PENDING),
            proposals: Vec::with_capacity(MAX_PENDING),
            unplaced: Vec::with_capacity(MAX_UNPLACED),
            limiter: HandshakeLimiter::new(
                config.handshakes_per_source,
                config.handshakes_total,
                now,
            ),
            stats: Stats::default(),
        }
    }

    /// The confirmed endpoint of `side`.
    pub fn endpoint(&self, side: Side) -> Option<SocketAddr> {
        self.endpoints[side.idx()]
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The side a handshake message comes from, by the receiver its `mac1` is for.
    fn sender_side(&self, d: &[u8]) -> Option<Side> {
        if wire::mac1_valid(&self.mac1_keys[Side::Device.idx()], d) {
            Some(Side::Admin)
        } else if wire::mac1_valid(&self.mac1_keys[Side::Admin.idx()], d) {
            Some(Side::Device)
        } else {
            None
        }
    }

    /// Decides where datagram `d` from `from` goes at `now`.
    pub fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        d: &[u8],
    ) -> Result<Targets, DropReason> {
        let r = self.decide(now, from, d);
        match &r {
            Ok(t) => {
                let n = t.iter().count() as u64;
                self.stats.forwarded += n;
                self.stats.forwarded_bytes += n * d.len() as u64;
            }
            Err(_) => self.stats.dropped += 1,
        }
        r
    }

    fn decide(&mut self, now: Instant, from: SocketAddr, d: &[u8]) -> Result<Targets, DropReason> {
        let msg = wire::parse(d).map_err(|_| DropReason::NotWireGuard)?;
        if let Message::Data { receiver_index } = msg {
            return self.data(now, from, receiver_index);
        }
        let side = match (self.sender_side(d), msg) {
            (Some(s), _) => s,
            // Cookie replies carry no mac1; they are matched to a pending handshake below.
            (None, Message::CookieReply { .. }) => Side::Device,
            (None, _) => return Err(DropReason::BadMac1),
        };
        if !self.limiter.allow(from.ip(), now) {
            return Err(DropReason::RateLimited);
        }
        self.expire(now);
        match msg {
            Message::Initiation { sender_index } => self.initiation(now, from, side, sender_index),
            Message::Response {
                sender_index,
                receiver_index,
            } => self.response(now, from, side, sender_index, receiver_index),
            Message::CookieReply { receiver_index } => self.cookie(from, receiver_index),
            Message::Data { receiver_index } => self.data(now, from, receiver_index),
        }
    }

    fn expire(&mut self, now: Instant) {
        self.pending
            .retain(|p| now.saturating_duration_since(p.at) < PENDING_TTL);
        self.proposals
            .retain(|p| now.saturating_duration_since(p.at) < PENDING_TTL);
        self.unplaced
            .retain(|u| now.saturating_duration_since(u.at) < UNPLACED_TTL);
    }

    fn initiation(
        &mut self,
        now: Instant,
        from: SocketAddr,
        side: Side,
        sender_index: u32,
    ) -> Result<Targets, DropReason> {
        let other = side.other();
        let mut sent_to = [None; MAX_FANOUT];
        let mut n = 0;
        let firsts = [self.endpoints[other.idx()], self.candidates[other.idx()]];
        let candidates = firsts
            .into_iter()
            .flatten()
            .chain(self.unplaced.iter().rev().map(|u| u.addr));
        for a in candidates {
            let own = Some(a) == self.endpoints[side.idx()];
            if a != from && !own && !sent_to.contains(&Some(a)) && n < MAX_FANOUT {
                sent_to[n] = Some(a);
                n += 1;
            }
        }
        self.candidates[side.idx()] = Some(from);
        if n == 0 {
            return Err(DropReason::NoPeerYet);
        }
        // A copy of a pending initiation (a replay racing the original) is
        // never forwarded, and live entries are never evicted: a flood can
        // only be refused, not crowd out the genuine handshake.
        if self.pending.iter().any(|p| p.sender_index == sender_index) {
            return Err(DropReason::Unsolicited);
        }
        let from_this_ip = self
            .pending
            .iter()
            .filter(|p| p.from.ip() == from.ip())
            .count();
        if self.pending.len() >= MAX_PENDING || from_this_ip >= MAX_PENDING_PER_IP {
            return Err(DropReason::RateLimited);
        }
        self.pending.push(Pending {
            sender_index,
            side,
            from,
            sent_to,
            at: now,
        });
        Ok(Targets { addrs: sent_to })
    }

    fn response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        side: Side,
        sender_index: u32,
        receiver_index: u32,
    ) -> Result<Targets, DropReason> {
        let p = self
            .pending
            .iter()
            .find(|p| {
                p.sender_index == receiver_index
                    && p.side == side.other()
                    && p.sent_to.contains(&Some(from))
            })
            .copied()
            .ok_or(DropReason::Unsolicited)?;
        if self.proposals.len() >= MAX_PENDING {
            self.proposals.remove(0);
        }
        self.proposals.push(Proposal {
            initiator_side: p.side,
            initiator: p.from,
            responder: from,
            responder_index: sender_index,
            at: now,
        });
        Ok(Targets::one(p.from))
    }

    fn cookie(&mut self, from: SocketAddr, receiver_index: u32) -> Result<Targets, DropReason> {
        self.pending
            .iter()
            .find(|p| p.sender_index == receiver_index && p.sent_to.contains(&Some(from)))
            .map(|p| Targets::one(p.from))
            .ok_or(DropReason::Unsolicited)
    }

    fn data(
        &mut self,
        now: Instant,
        from: SocketAddr,
        receiver_index: u32,
    ) -> Result<Targets, DropReason> {
        // The initiator's first data after a genuine response confirms both
        // endpoints (also when one of them moved).
        if !self.proposals.is_empty() {
            if let Some(pos) = self.proposals.iter().position(|p| {
                p.initiator == from
                    && p.responder_index == receiver_index
                    && now.saturating_duration_since(p.at) < PENDING_TTL
            }) {
                let p = self.proposals.swap_remove(pos);
                self.proposals.retain(|q| q.initiator != from);
                let (i_side, r_side) = (p.initiator_side, p.initiator_side.other());
                // Once the tunnel has endpoints, a handshake may move at most
                // one of them, and only when the other party is the other
                // side's confirmed endpoint: two strangers completing a
                // "handshake" between themselves move nothing.
                let first_time = self.endpoints == [None, None];
                let initiator_known = self.endpoints[i_side.idx()] == Some(p.initiator);
                let responder_known = self.endpoints[r_side.idx()] == Some(p.responder);
                if first_time || initiator_known || responder_known {
                    self.endpoints[i_side.idx()] = Some(p.initiator);
                    self.endpoints[r_side.idx()] = Some(p.responder);
                    self.unplaced
                        .retain(|u| u.addr != p.initiator && u.addr != p.responder);
                    return Ok(Targets::one(p.responder));
                }
                return Err(DropReason::UnknownSource);
            }
        }
        let [device, admin] = self.endpoints;
        if Some(from) == device {
            return admin.map(Targets::one).ok_or(DropReason::NoPeerYet);
        }
        if Some(from) == admin {
            return device.map(Targets::one).ok_or(DropReason::NoPeerYet);
        }
        self.note_unplaced(now, from);
        Err(DropReason::UnknownSource)
    }

    fn note_unplaced(&mut self, now: Instant, from: SocketAddr) {
        if let Some(u) = self.unplaced.iter_mut().find(|u| u.addr == from) {
            u.at = now;
            return;
        }
        // At most two ports per address, so one host cannot fill the list alone.
        if self
            .unplaced
            .iter()
            .filter(|u| u.addr.ip() == from.ip())
            .count()
            >= 2
        {
            return;
        }
        if self.unplaced.len() >= MAX_UNPLACED {
            self.unplaced.remove(0);
        }
        self.unplaced.push(Unplaced {
            addr: from,
            at: now,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE: [u8; 32] = [1; 32];
    const ADMIN: [u8; 32] = [2; 32];

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    fn relay(now: Instant) -> Relay {
        Relay::new(
            &RelayConfig {
                device_key: DEVICE,
                admin_key: ADMIN,
                handshakes_per_source: 20,
                handshakes_total: 200,
            },
            now,
        )
    }

    /// A handshake message of `len` bytes, type `ty`, with a valid mac1 for `to`.
    fn handshake(ty: u8, len: usize, sender: u32, receiver: u32, to: &[u8; 32]) -> Vec<u8> {
        let mut m = vec![0u8; len];
        m[0] = ty;
        m[4..8].copy_from_slice(&sender.to_le_bytes());
        if ty == 2 {
            m[8..12].copy_from_slice(&receiver.to_le_bytes());
        }
        let at = len - 32;
        let mac = wire::mac1(&wire::mac1_key(to), &m[..at]);
        m[at..at + 16].copy_from_slice(&mac);
        m
    }

    fn initiation(sender: u32, to: &[u8; 32]) -> Vec<u8> {
        handshake(1, 148, sender, 0, to)
    }

    fn response(sender: u32, receiver: u32, to: &[u8; 32]) -> Vec<u8> {
        handshake(2, 92, sender, receiver, to)
    }

    fn data(receiver: u32) -> Vec<u8> {
        let mut m = vec![0u8; 64];
        m[0] = 4;
        m[4..8].copy_from_slice(&receiver.to_le_bytes());
        m
    }

    fn to(r: Result<Targets, DropReason>) -> Vec<SocketAddr> {
        r.map(|t| t.iter().collect()).unwrap_or_default()
    }

    /// Device at `d` and admin at `a` complete a handshake through the relay.
    fn connect(r: &mut Relay, now: Instant, d: SocketAddr, a: SocketAddr) {
        // The device initiates first; the admin is unknown yet.
        assert_eq!(
            r.handle(now, d, &initiation(10, &ADMIN)),
            Err(DropReason::NoPeerYet)
        );
        // The admin initiates: sent to where the device initiated from.
        assert_eq!(to(r.handle(now, a, &initiation(20, &DEVICE))), vec![d]);
        // The device answers; nothing is confirmed by a response alone.
        assert_eq!(to(r.handle(now, d, &response(11, 20, &ADMIN))), vec![a]);
        assert_eq!(r.endpoint(Side::Device), None);
        // The admin's first data to the device's index confirms both.
        assert_eq!(to(r.handle(now, a, &data(11))), vec![d]);
        assert_eq!(r.endpoint(Side::Device), Some(d));
        assert_eq!(r.endpoint(Side::Admin), Some(a));
    }

    #[test]
    fn both_sides_behind_nat_meet_and_data_flows_both_ways() {
        let now = Instant::now();
        let mut r = relay(now);
        let (d, a) = (addr("198.51.100.1:40000"), addr("203.0.113.5:50000"));
        connect(&mut r, now, d, a);
        assert_eq!(to(r.handle(now, a, &data(11))), vec![d]);
        assert_eq!(to(r.handle(now, d, &data(20))), vec![a]);
    }

    #[test]
    fn strangers_get_nothing_forwarded_and_move_no_endpoint() {
        let now = Instant::now();
        let mut r = relay(now);
        let (d, a, x) = (
            addr("198.51.100.1:40000"),
            addr("203.0.113.5:50000"),
            addr("192.0.2.66:6666"),
        );
        connect(&mut r, now, d, a);
        assert_eq!(r.handle(now, x, &data(11)), Err(DropReason::UnknownSource));
        assert_eq!(r.handle(now, x, b"hello"), Err(DropReason::NotWireGuard));
        assert_eq!(
            r.handle(now, x, &initiation(30, &[9; 32])),
            Err(DropReason::BadMac1)
        );
        // A stranger who knows the public keys: its initiation reaches the
        // device (which rejects it: it cannot be genuine), nothing more.
        assert_eq!(to(r.handle(now, x, &initiation(30, &DEVICE))), vec![d]);
        assert_eq!(
            r.handle(now, x, &response(31, 20, &DEVICE)),
            Err(DropReason::Unsolicited)
        );
        // Forged data claiming a proposal it never had.
        assert_eq!(r.handle(now, x, &data(31)), Err(DropReason::UnknownSource));
        assert_eq!(
            (r.endpoint(Side::Device), r.endpoint(Side::Admin)),
            (Some(d), Some(a))
        );
        assert_eq!(to(r.handle(now, a, &data(11))), vec![d]);
    }

    #[test]
    fn a_forged_response_to_a_real_initiation_moves_nothing() {
        let now = Instant::now();
        let mut r = relay(now);
        let (d, a, x) = (
            addr("198.51.100.1:40000"),
            addr("203.0.113.5:50000"),
            addr("192.0.2.66:6666"),
        );
        connect(&mut r, now, d, a);
        // The stranger makes itself a forwarding candidate by sending data.
        let _ = r.handle(now, x, &data(1));
        // The admin's next initiation goes to the device and to the candidate.
        assert_eq!(to(r.handle(now, a, &initiation(60, &DEVICE))), vec![d, x]);
        // The stranger answers first, with a forged response: passed on to the
        // admin (who rejects it and never sends data to index 99)...
        assert_eq!(to(r.handle(now, x, &response(99, 60, &ADMIN))), vec![a]);
        // ...so even the stranger's own data to index 99 moves nothing.
        assert_eq!(r.handle(now, x, &data(99)), Err(DropReason::UnknownSource));
        assert_eq!(
            (r.endpoint(Side::Device), r.endpoint(Side::Admin)),
            (Some(d), Some(a))
        );
        // The device's genuine response completes the handshake as usual.
        assert_eq!(to(r.handle(now, d, &response(12, 60, &ADMIN))), vec![a]);
        assert_eq!(to(r.handle(now, a, &data(12))), vec![d]);
        assert_eq!(
            (r.endpoint(Side::Device), r.endpoint(Side::Admin)),
            (Some(d), Some(a))
        );
    }

    #[test]
    fn two_strangers_who_know_both_public_keys_cannot_take_over() {
        let now = Instant::now();
        let mut r = relay(now);
        let (d, a) = (addr("198.51.100.1:40000"), addr("203.0.113.5:50000"));
        let (x, z) = (addr("192.0.2.66:6666"), addr("192.0.2.77:7777"));
        connect(&mut r, now, d, a);
        // Z makes itself an unplaced candidate; X "initiates" as the admin;
        // Z "responds" as the device; X sends data to Z's index.
        let _ = r.handle(now, z, &data(1));
        assert!(to(r.handle(now, x, &initiation(300, &DEVICE))).contains(&z));
        assert_eq!(to(r.handle(now, z, &response(301, 300, &ADMIN))), vec![x]);
        assert_eq!(r.handle(now, x, &data(301)), Err(DropReason::UnknownSource));
        assert_eq!(
            (r.endpoint(Side::Device), r.endpoint(Side::Admin)),
            (Some(d), Some(a))
        );
    }

    #[test]
    fn a_replayed_copy_of_a_pending_initiation_cannot_steal_the_response() {
        let now = Instant::now();
        let mut r = relay(now);
        let (d, a, x) = (
            addr("198.51.100.1:40000"),
            addr("203.0.113.5:50000"),
            addr("192.0.2.66:6666"),
        );
        connect(&mut r, now, d, a);
        let _ = r.handle(now, x, &data(1));
        // The admin's genuine initiation; the stranger gets a copy.
        assert_eq!(to(r.handle(now, a, &initiation(400, &DEVICE))), vec![d, x]);
        // It replays the copy and floods fresh initiations to crowd it out.
        assert_eq!(
            r.handle(now, x, &initiation(400, &DEVICE)),
            Err(DropReason::Unsolicited)
        );
        for i in 0..200 {
            let _ = r.handle(now, x, &initiation(500 + i, &DEVICE));
        }
        // The device's genuine response still reaches the genuine admin.
        assert_eq!(to(r.handle(now, d, &response(15, 400, &ADMIN))), vec![a]);
        assert_eq!(to(r.handle(now, a, &data(15))), vec![d]);
        assert_eq!(
            (r.endpoint(Side::Device), r.endpoint(Side::Admin)),
            (Some(d), Some(a))
        );
    }

    #[test]
    fn a_roaming_peer_is_followed_after_the_next_handshake_whoever_starts_it() {
        let now = Instant::now();
        let mut r = relay(now);
        let (d, a, a2, a3) = (
            addr("198.51.100.1:40000"),
            addr("203.0.113.5:50000"),
            addr("203.0.113.5:50001"),
            addr("203.0.113.5:50002"),
        );
        connect(&mut r, now, d, a);
        // The admin's NAT rebinds: its data from the new port is not trusted yet.
        assert_eq!(r.handle(now, a2, &data(11)), Err(DropReason::UnknownSource));
        // The device's next initiation also reaches the unplaced new address...
        let t = now + Duration::from_secs(5);
        assert_eq!(to(r.handle(t, d, &initiation(70, &ADMIN))), vec![a, a2]);
        // ...the admin answers from it, and the device's data confirms it.
        assert_eq!(to(r.handle(t, a2, &response(21, 70, &DEVICE))), vec![d]);
        assert_eq!(to(r.handle(t, d, &data(21))), vec![a2]);
        assert_eq!(r.endpoint(Side::Admin), Some(a2));
        assert_eq!(r.handle(t, a, &data(12)), Err(DropReason::UnknownSource));
        // Rebinding again; this time the admin initiates from the new port.
        let t = t + Duration::from_secs(5);
        // (the old address, still sending stale data, is a candidate too: harmless)
        assert_eq!(to(r.handle(t, a3, &initiation(80, &DEVICE))), vec![d, a]);
        assert_eq!(to(r.handle(t, d, &response(13, 80, &ADMIN))), vec![a3]);
        assert_eq!(to(r.handle(t, a3, &data(13))), vec![d]);
        assert_eq!(r.endpoint(Side::Admin), Some(a3));
    }

    #[test]
    fn a_restarted_relay_reconnects_peers_that_only_send_data() {
        let now = Instant::now();
        let mut r = relay(now);
        let (d, a) = (addr("198.51.100.1:40000"), addr("203.0.113.5:50000"));
        // Both peers keep sending data (keepalives) to the fresh relay.
        assert_eq!(r.handle(now, d, &data(20)), Err(DropReason::UnknownSource));
        assert_eq!(r.handle(now, a, &data(11)), Err(DropReason::UnknownSource));
        // The first to re-initiate reaches the other through the unplaced list.
        assert_eq!(to(r.handle(now, a, &initiation(90, &DEVICE))), vec![d]);
        assert_eq!(to(r.handle(now, d, &response(14, 90, &ADMIN))), vec![a]);
        assert_eq!(to(r.handle(now, a, &data(14))), vec![d]);
        assert_eq!(
            (r.endpoint(Side::Device), r.endpoint(Side::Admin)),
            (Some(d), Some(a))
        );
    }

    #[test]
    fn a_response_after_the_pending_window_is_refused() {
        let now = Instant::now();
        let mut r = relay(now);
        let (d, a) = (addr("198.51.100.1:40000"), addr("203.0.113.5:50000"));
        connect(&mut r, now, d, a);
        assert_eq!(to(r.handle(now, a, &initiation(50, &DEVICE))), vec![d]);
        let late = now + PENDING_TTL + Duration::from_secs(1);
        assert_eq!(
            r.handle(late, d, &response(13, 50, &ADMIN)),
            Err(DropReason::Unsolicited)
        );
    }

    #[test]
    fn handshake_floods_are_rate_limited_and_state_stays_bounded() {
        let now = Instant::now();
        let mut r = relay(now);
        let (d, a) = (addr("198.51.100.1:40000"), addr("203.0.113.5:50000"));
        connect(&mut r, now, d, a);
        let x = addr("192.0.2.66:6666");
        let limited = (0..100u32)
            .filter(|i| {
                r.handle(now, x, &initiation(1000 + i, &DEVICE)) == Err(DropReason::RateLimited)
            })
            .count();
        assert!(limited >= 55, "only {limited} of 100 limited");
        for i in 0..2000u32 {
            let src = SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 1000));
            let _ = r.handle(now, src, &initiation(5000 + i, &DEVICE));
            let _ = r.handle(now, src, &data(i));
            let _ = r.handle(now, src, &response(i, 5000 + i, &ADMIN));
        }
        assert!(r.pending.len() <= MAX_PENDING);
        assert!(r.proposals.len() <= MAX_PENDING);
        assert!(r.unplaced.len() <= MAX_UNPLACED);
        // The real peers' data is never rate-limited.
        assert_eq!(to(r.handle(now, a, &data(11))), vec![d]);
    }

    #[test]
    fn malformed_datagrams_of_every_length_are_dropped_without_panicking() {
        let now = Instant::now();
        let mut r = relay(now);
        let from = addr("192.0.2.1:1");
        for len in 0..300 {
            for ty in 0..6u8 {
                let mut m = vec![0xa5u8; len];
                if let Some(b) = m.first_mut() {
                    *b = ty;
                }
                if len >= 4 {
                    m[1..4].copy_from_slice(&[0, 0, 0]);
                }
                let expected = match (ty, len) {
                    (1, 148) | (2, 92) => DropReason::BadMac1,
                    // A cookie reply has no mac1; with no handshake pending it answers nothing.
                    (3, 64) => DropReason::Unsolicited,
                    (4, n) if n >= 32 => DropReason::UnknownSource,
                    _ => DropReason::NotWireGuard,
                };
                assert_eq!(
                    r.handle(now, from, &m),
                    Err(expected),
                    "type {ty}, {len} bytes"
                );
            }
        }
    }
}
