//! The WireGuard session (boringtun's `Tunn`), its timers, and the rule
//! that keeps it alive across relay restarts. Sans-IO: datagrams and time
//! in, datagrams and IP packets out through callbacks.

use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};

/// Re-handshake when nothing authenticated arrived for this many keepalive
/// intervals (boringtun gives up after 90 s of failed handshakes, and a
/// restarted relay forgets both endpoints).
const SILENCE_INTERVALS: u32 = 3;
/// The least time between forced handshakes (WireGuard's REKEY_TIMEOUT).
const FORCE_EVERY: Duration = Duration::from_secs(5);

/// Largest datagram: a full-MTU packet plus WireGuard's 32 bytes of framing.
const BUF: usize = 65_536;

/// The WireGuard side of a peer.
pub struct WireGuard {
    tunn: Tunn,
    buf: Vec<u8>,
    started: Instant,
    last_rx: Option<Instant>,
    last_forced: Option<Instant>,
    silence: Duration,
}

/// A datagram the session accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// It proved the session: transport data (or a keepalive) that
    /// decrypted, or a handshake response that completed our handshake.
    Proof,
    /// Valid, but it proves nothing yet: a handshake initiation (a wrong
    /// PSK only shows in the response) or a cookie reply.
    NoProofYet,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct WgStats {
    /// Authenticated datagrams received.
    pub rx_authenticated: u64,
    /// Datagrams refused (failed authentication, replays, junk).
    pub rx_refused: u64,
}

impl WireGuard {
    /// A session to `peer_public` with our `private` key and the `psk`.
    pub fn new(
        private: [u8; 32],
        peer_public: [u8; 32],
        psk: [u8; 32],
        keepalive_secs: u16,
        index: u32,
        now: Instant,
    ) -> Self {
        let tunn = Tunn::new(
            x25519_dalek::StaticSecret::from(private),
            x25519_dalek::PublicKey::from(peer_public),
            Some(psk),
            (keepalive_secs > 0).then_some(keepalive_secs),
            index & 0x00ff_ffff,
            None,
        );
        Self {
            tunn,
            buf: vec![0u8; BUF],
            started: now,
            last_rx: None,
            last_forced: None,
            silence: Duration::from_secs(u64::from(keepalive_secs.max(5))) * SILENCE_INTERVALS,
        }
    }

    /// When something authenticated last arrived.
    pub fn last_authenticated(&self) -> Option<Instant> {
        self.last_rx
    }

    /// Starts the handshake (a peer behind NAT must speak first).
    pub fn start(&mut self, now: Instant, to_net: &mut dyn FnMut(&[u8])) {
        self.force_handshake(now, to_net);
    }

    fn force_handshake(&mut self, now: Instant, to_net: &mut dyn FnMut(&[u8])) {
        self.last_forced = Some(now);
        if let TunnResult::WriteToNetwork(p) =
            self.tunn.format_handshake_initiation(&mut self.buf, true)
        {
            to_net(p);
        }
    }

    /// Handles a datagram from the network: what it proved, or why
    /// WireGuard refused it (junk, a replay, a wrong key or PSK).
    pub fn datagram(
        &mut self,
        now: Instant,
        d: &[u8],
        to_net: &mut dyn FnMut(&[u8]),
        to_tunnel: &mut dyn FnMut(&[u8]),
    ) -> Result<Accepted, WireGuardError> {
        let mut first = true;
        loop {
            let input: &[u8] = if first { d } else { &[] };
            first = false;
            match self.tunn.decapsulate(None, input, &mut self.buf) {
                TunnResult::Done => break,
                TunnResult::Err(e) => return Err(e),
                TunnResult::WriteToNetwork(p) => {
                    to_net(p);
                    // Queued packets may follow: keep draining.
                    continue;
                }
                TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                    to_tunnel(p);
                    break;
                }
            }
        }
        if matches!(d.first(), Some(2) | Some(4)) {
            self.last_rx = Some(now);
            Ok(Accepted::Proof)
        } else {
            Ok(Accepted::NoProofYet)
        }
    }

    /// Encrypts an IP packet for the peer.
    pub fn send(&mut self, packet: &[u8], to_net: &mut dyn FnMut(&[u8])) {
        if let TunnResult::WriteToNetwork(p) = self.tunn.encapsulate(packet, &mut self.buf) {
            to_net(p);
        }
    }

    /// Runs WireGuard's timers (call every ~100 ms), and re-handshakes when
    /// the peer has been silent too long.
    pub fn tick(&mut self, now: Instant, to_net: &mut dyn FnMut(&[u8])) {
        let expired = match self.tunn.update_timers(&mut self.buf) {
            TunnResult::WriteToNetwork(p) => {
                to_net(p);
                false
            }
            TunnResult::Err(WireGuardError::ConnectionExpired) => true,
            _ => false,
        };
        let silent_for = now.saturating_duration_since(self.last_rx.unwrap_or(self.started));
        let may_force = self
            .last_forced
            .is_none_or(|t| now.saturating_duration_since(t) >= FORCE_EVERY);
        if may_force && (expired || silent_for >= self.silence) {
            self.force_handshake(now, to_net);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Two wrappers in memory, on a simulated clock: every `now` below is
    //! `t0` plus a simulated offset, and nothing sleeps.
    //!
    //! boringtun 0.7 reads its own clock for its timers (retransmission,
    //! keepalive, rekey, expiry); its only simulated clock is the
    //! `mock-instant` feature, which swaps that clock for the whole build
    //! (every test binary of the workspace, the real-parts ones included),
    //! so these tests simulate the wrapper's time, and boringtun's timers
    //! stay idle within the test's real milliseconds.
    use super::*;

    const ADMIN: [u8; 32] = [1; 32];
    const DEVICE: [u8; 32] = [2; 32];
    const PSK: [u8; 32] = [3; 32];

    fn public(private: [u8; 32]) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(private)).to_bytes()
    }

    /// Our peer with `private` talking to the peer with `peer`.
    fn wrapper(private: [u8; 32], peer: [u8; 32], psk: [u8; 32], t0: Instant) -> WireGuard {
        WireGuard::new(private, public(peer), psk, 5, u32::from(private[0]), t0)
    }

    /// The datagrams `f` sends to the network.
    fn sent(f: impl FnOnce(&mut dyn FnMut(&[u8]))) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        f(&mut |p| out.push(p.to_vec()));
        out
    }

    /// What a wrapper made of a datagram: the outcome, the datagrams it
    /// answered with, and the packets it passed into the tunnel.
    type Delivered = (Result<Accepted, WireGuardError>, Vec<Vec<u8>>, Vec<Vec<u8>>);

    /// Hands `d` to `wg` at `now`.
    fn deliver(wg: &mut WireGuard, now: Instant, d: &[u8]) -> Delivered {
        let (mut net, mut tunnel) = (Vec::new(), Vec::new());
        let r = wg.datagram(now, d, &mut |p| net.push(p.to_vec()), &mut |p| {
            tunnel.push(p.to_vec())
        });
        (r, net, tunnel)
    }

    /// WireGuard's message type: 1 initiation, 2 response, 4 transport data.
    fn kinds(datagrams: &[Vec<u8>]) -> Vec<u8> {
        datagrams.iter().map(|d| d[0]).collect()
    }

    /// A minimal IPv4 packet (boringtun reads the version and the length).
    fn ipv4(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 6, 0, 0, 10, 77, 0, 3, 10, 77, 0, 2,
        ];
        p.extend_from_slice(payload);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    }

    /// Runs a handshake between `admin` (initiating) and `device` at `now`.
    /// Returns what the initiator made of the response.
    fn handshake(
        admin: &mut WireGuard,
        device: &mut WireGuard,
        now: Instant,
        initiation: &[u8],
    ) -> Result<Accepted, WireGuardError> {
        let (r, response, _) = deliver(device, now, initiation);
        assert_eq!(
            r.expect("the device accepts the initiation"),
            Accepted::NoProofYet
        );
        assert_eq!(kinds(&response), [2]);
        let (r, confirm, _) = deliver(admin, now, &response[0]);
        if r.is_ok() {
            // The initiator confirms with a keepalive, which proves the session to the responder.
            assert_eq!(kinds(&confirm), [4]);
            let (r, _, tunnel) = deliver(device, now, &confirm[0]);
            assert_eq!(
                r.expect("the device accepts the keepalive"),
                Accepted::Proof
            );
            assert!(tunnel.is_empty(), "a keepalive carries no packet");
        }
        r
    }

    /// Two wrappers with a completed handshake at `t0`.
    fn connected(t0: Instant) -> (WireGuard, WireGuard) {
        let mut admin = wrapper(ADMIN, DEVICE, PSK, t0);
        let mut device = wrapper(DEVICE, ADMIN, PSK, t0);
        let init = sent(|to_net| admin.start(t0, to_net));
        assert_eq!(kinds(&init), [1]);
        let r = handshake(&mut admin, &mut device, t0, &init[0]);
        assert_eq!(r.expect("the admin accepts the response"), Accepted::Proof);
        (admin, device)
    }

    #[test]
    fn two_wrappers_complete_a_handshake_and_carry_packets_both_ways() {
        let t0 = Instant::now();
        let (mut admin, mut device) = connected(t0);
        assert_eq!(admin.last_authenticated(), Some(t0));
        assert_eq!(device.last_authenticated(), Some(t0));

        let t1 = t0 + Duration::from_secs(1);
        carries(&mut admin, &mut device, t1, b"to the device");
        carries(&mut device, &mut admin, t1, b"to the admin");
    }

    /// A packet `from` sends arrives whole at `to`, as proof of the session.
    fn carries(from: &mut WireGuard, to: &mut WireGuard, now: Instant, payload: &[u8]) {
        let packet = ipv4(payload);
        let out = sent(|to_net| from.send(&packet, to_net));
        assert_eq!(kinds(&out), [4]);
        let (r, answers, tunnel) = deliver(to, now, &out[0]);
        assert_eq!(r.expect("transport data decrypts"), Accepted::Proof);
        assert!(answers.is_empty());
        assert_eq!(tunnel, [packet]);
        assert_eq!(to.last_authenticated(), Some(now));
    }

    #[test]
    fn a_wrong_psk_shows_in_the_response_and_is_refused() {
        let t0 = Instant::now();
        let mut admin = wrapper(ADMIN, DEVICE, [9; 32], t0);
        let mut device = wrapper(DEVICE, ADMIN, PSK, t0);
        let init = sent(|to_net| admin.start(t0, to_net));
        let r = handshake(&mut admin, &mut device, t0, &init[0]);
        assert!(matches!(r, Err(WireGuardError::InvalidAeadTag)), "{r:?}");
        assert_eq!(admin.last_authenticated(), None);
        assert_eq!(device.last_authenticated(), None);
    }

    #[test]
    fn an_initiation_from_an_unknown_key_is_refused() {
        let t0 = Instant::now();
        let mut stranger = wrapper([7; 32], DEVICE, PSK, t0);
        let mut device = wrapper(DEVICE, ADMIN, PSK, t0);
        let init = sent(|to_net| stranger.start(t0, to_net));
        let (r, answers, _) = deliver(&mut device, t0, &init[0]);
        assert!(matches!(r, Err(WireGuardError::WrongKey)), "{r:?}");
        assert!(answers.is_empty(), "the device answered a stranger");
    }

    #[test]
    fn garbage_replays_and_forgeries_are_refused_with_their_reason() {
        let t0 = Instant::now();
        let (mut admin, mut device) = connected(t0);
        let now = t0 + Duration::from_secs(1);

        let (r, answers, _) = deliver(&mut device, now, b"hello");
        assert!(matches!(r, Err(WireGuardError::InvalidPacket)), "{r:?}");
        assert!(answers.is_empty());

        let data = sent(|to_net| admin.send(&ipv4(b"once"), to_net)).remove(0);
        let (r, _, _) = deliver(&mut device, now, &data);
        assert_eq!(r.expect("the original decrypts"), Accepted::Proof);
        let (r, _, tunnel) = deliver(&mut device, now, &data);
        assert!(matches!(r, Err(WireGuardError::DuplicateCounter)), "{r:?}");
        assert!(tunnel.is_empty(), "a replay reached the tunnel");

        let mut forged = sent(|to_net| admin.send(&ipv4(b"twice"), to_net)).remove(0);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let (r, _, tunnel) = deliver(&mut device, now, &forged);
        assert!(matches!(r, Err(WireGuardError::InvalidAeadTag)), "{r:?}");
        assert!(tunnel.is_empty(), "a forgery reached the tunnel");

        // None of it counted as proof of the session.
        assert_eq!(device.last_authenticated(), Some(now));
        let later = now + Duration::from_secs(1);
        let (r, _, _) = deliver(&mut device, later, b"hello");
        assert!(matches!(r, Err(WireGuardError::InvalidPacket)), "{r:?}");
        assert_eq!(device.last_authenticated(), Some(now));
    }

    #[test]
    fn a_replayed_initiation_is_refused() {
        let t0 = Instant::now();
        let mut admin = wrapper(ADMIN, DEVICE, PSK, t0);
        let mut device = wrapper(DEVICE, ADMIN, PSK, t0);
        let init = sent(|to_net| admin.start(t0, to_net)).remove(0);
        let (r, _, _) = deliver(&mut device, t0, &init);
        assert_eq!(r.expect("the first one is accepted"), Accepted::NoProofYet);
        let (r, answers, _) = deliver(&mut device, t0, &init);
        assert!(
            matches!(r, Err(WireGuardError::WrongTai64nTimestamp)),
            "{r:?}"
        );
        assert!(answers.is_empty());
    }

    #[test]
    fn silence_forces_a_handshake_at_most_every_five_seconds() {
        let t0 = Instant::now();
        let (mut admin, mut device) = connected(t0);
        let at = |secs: f64| t0 + Duration::from_secs_f64(secs);
        // Keepalive 5 s: three silent intervals are 15 s.
        assert!(sent(|n| admin.tick(at(14.9), n)).is_empty());
        let forced = sent(|n| admin.tick(at(15.0), n));
        assert_eq!(kinds(&forced), [1], "no handshake after 15 s of silence");
        // Still silent, but the last one went out less than 5 s ago.
        assert!(sent(|n| admin.tick(at(16.0), n)).is_empty());
        assert!(sent(|n| admin.tick(at(19.9), n)).is_empty());
        let again = sent(|n| admin.tick(at(20.0), n));
        assert_eq!(kinds(&again), [1]);

        // The device answers the latest: the silence is over.
        let r = handshake(&mut admin, &mut device, at(21.0), &again[0]);
        assert_eq!(r.expect("the re-handshake completes"), Accepted::Proof);
        assert_eq!(admin.last_authenticated(), Some(at(21.0)));
        assert!(sent(|n| admin.tick(at(35.9), n)).is_empty());
        assert_eq!(kinds(&sent(|n| admin.tick(at(36.0), n))), [1]);
    }

    #[test]
    fn silence_counts_from_the_start_when_nothing_ever_arrived() {
        first_forced_after(5, 15);
    }

    /// With `keepalive_secs`, the first forced handshake after the start
    /// comes after `silent_secs` of silence, not a millisecond earlier.
    fn first_forced_after(keepalive_secs: u16, silent_secs: u64) {
        let t0 = Instant::now();
        let mut wg = WireGuard::new(ADMIN, public(DEVICE), PSK, keepalive_secs, 1, t0);
        let _ = sent(|n| wg.start(t0, n));
        let due = t0 + Duration::from_secs(silent_secs);
        let early = due - Duration::from_millis(1);
        assert!(sent(|n| wg.tick(early, n)).is_empty());
        assert_eq!(kinds(&sent(|n| wg.tick(due, n))), [1]);
    }

    #[test]
    fn a_short_keepalive_still_waits_fifteen_seconds() {
        first_forced_after(1, 15);
    }

    #[test]
    fn a_long_keepalive_waits_three_of_its_intervals() {
        first_forced_after(25, 75);
    }
}
