//! The WireGuard session (boringtun's `Tunn`), its timers, and the rule
//! that keeps it alive across relay restarts. Sans-IO: datagrams and time
//! in, datagrams and IP packets out through callbacks.

use std::time::{Duration, Instant};

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

    /// Handles a datagram from the network. Returns true if it proved the
    /// session: transport data (or a keepalive) that decrypted, or a
    /// handshake response that completed our handshake. A handshake
    /// initiation proves nothing yet (a wrong PSK only shows in the response).
    pub fn datagram(
        &mut self,
        now: Instant,
        d: &[u8],
        to_net: &mut dyn FnMut(&[u8]),
        to_tunnel: &mut dyn FnMut(&[u8]),
    ) -> bool {
        let mut ok = true;
        let mut first = true;
        loop {
            let input: &[u8] = if first { d } else { &[] };
            first = false;
            match self.tunn.decapsulate(None, input, &mut self.buf) {
                TunnResult::Done => break,
                TunnResult::Err(_) => {
                    ok = false;
                    break;
                }
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
        let proves = ok && matches!(d.first(), Some(2) | Some(4));
        if proves {
            self.last_rx = Some(now);
        }
        proves
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
            TunnResult::Err(boringtun::noise::errors::WireGuardError::ConnectionExpired) => true,
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
