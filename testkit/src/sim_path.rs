//! A network path on a simulated clock, for TCP tests and the `tcp_sim`
//! bench: a bottleneck that serialises packets at a rate behind a bounded
//! queue (drop-tail, like a home router), then a propagation delay, with
//! random loss before it. Time is in microseconds and given by the caller,
//! so a run is the same on every machine.

use std::collections::VecDeque;

/// xorshift64: which packets the path loses, from a seed.
#[derive(Clone, Copy, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// One direction of a path.
#[derive(Debug)]
pub struct SimLink {
    /// Bottleneck rate, bytes per second.
    pub rate: f64,
    /// The most bytes waiting for the bottleneck; more are dropped.
    pub queue: f64,
    /// One-way propagation delay, microseconds.
    pub delay: i64,
    /// Loss at each of `crossings` lossy stages (the WAN bench's stage is
    /// crossed twice each way).
    pub loss: f64,
    /// How many lossy stages a packet crosses.
    pub crossings: u32,
    free_at: f64,
    flight: VecDeque<(i64, Vec<u8>)>,
    /// Packets lost at random.
    pub lost: u64,
    /// Packets dropped because the queue was full.
    pub overflowed: u64,
}

impl SimLink {
    /// A link of `rate_mb_s` MB/s (MiB) behind a `queue_bytes` queue, with
    /// `delay_us` one way and `loss` at each of two crossings.
    pub fn new(rate_mb_s: f64, queue_bytes: usize, delay_us: i64, loss: f64) -> SimLink {
        SimLink {
            rate: rate_mb_s * 1_048_576.0,
            queue: queue_bytes as f64,
            delay: delay_us,
            loss,
            crossings: 2,
            free_at: 0.0,
            flight: VecDeque::new(),
            lost: 0,
            overflowed: 0,
        }
    }

    /// The time a packet sent now would wait for the bottleneck, microseconds.
    pub fn queueing_delay(&self, now: i64) -> f64 {
        (self.free_at - now as f64).max(0.0)
    }

    /// Offers packet `p` at `now`.
    pub fn send(&mut self, now: i64, p: Vec<u8>, rng: &mut Rng) {
        for _ in 0..self.crossings {
            if rng.chance(self.loss) {
                self.lost += 1;
                return;
            }
        }
        let start = self.free_at.max(now as f64);
        if (start - now as f64) * self.rate / 1e6 > self.queue {
            self.overflowed += 1;
            return;
        }
        self.free_at = start + p.len() as f64 * 1e6 / self.rate;
        self.flight.push_back((self.free_at as i64 + self.delay, p));
    }

    /// The packets that have arrived by `now`, in order.
    pub fn arrived(&mut self, now: i64) -> impl Iterator<Item = Vec<u8>> + '_ {
        let n = self.flight.iter().take_while(|(at, _)| *at <= now).count();
        self.flight.drain(..n).map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_serialised_delayed_and_queued_within_bounds() {
        // 1 MiB/s: a 1,048-byte packet takes 1,000 µs; 10 ms of delay.
        let mut l = SimLink::new(1.0, 3000, 10_000, 0.0);
        let mut rng = Rng(1);
        for _ in 0..4 {
            l.send(0, vec![0; 1048], &mut rng);
        }
        // Two wait in the queue (2,096 bytes), the fourth finds it full.
        assert_eq!(l.overflowed, 1);
        assert_eq!(l.arrived(10_998).count(), 0);
        assert_eq!(l.arrived(11_000).count(), 1);
        assert_eq!(l.arrived(13_000).count(), 2);
        assert!(l.queueing_delay(13_000) < 1.0);
    }

    #[test]
    fn loss_is_applied_at_each_crossing() {
        let mut l = SimLink::new(1000.0, usize::MAX, 0, 0.1);
        let mut rng = Rng(7);
        for _ in 0..100_000 {
            l.send(0, vec![0; 10], &mut rng);
        }
        // 1 - 0.9² = 19% lost.
        assert!((18_000..20_000).contains(&l.lost), "{}", l.lost);
    }
}
