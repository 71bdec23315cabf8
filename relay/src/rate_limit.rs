//! Token buckets for handshake messages: per source address and overall,
//! each the workspace's sans-IO `support_token_bucket::Bucket`. Time is an
//! argument, so the limits test deterministically.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use support_token_bucket::{Bucket, Rate};

/// Limits handshake messages to `per_source` per second per address (bursts
/// of twice that) and `total` per second overall.
#[derive(Debug)]
pub struct HandshakeLimiter {
    per_source: Rate,
    total: Rate,
    global: Bucket<Instant>,
    sources: HashMap<IpAddr, Bucket<Instant>>,
}

/// The most source addresses tracked; beyond it the table is cleared (the
/// global bucket still bounds the rate).
const MAX_SOURCES: usize = 4096;

const SECOND: Duration = Duration::from_secs(1);

impl HandshakeLimiter {
    /// A limiter starting full at `now`.
    pub fn new(per_source: u32, total: u32, now: Instant) -> Self {
        let per_source = per_source.max(1);
        let total = Rate::new(total.max(1), SECOND, total.max(1));
        Self {
            per_source: Rate::new(per_source, SECOND, per_source.saturating_mul(2)),
            total,
            global: Bucket::full(&total, now),
            sources: HashMap::new(),
        }
    }

    /// Takes a token for `source` if it and the global bucket have one.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&source) {
            self.sources.clear();
        }
        let b = self
            .sources
            .entry(source)
            .or_insert(Bucket::full(&self.per_source, now));
        if !b.take(&self.per_source, now) {
            return false;
        }
        self.global.take(&self.total, now)
    }
}

#[cfg(test)]
mod tests {
    use super::HandshakeLimiter;
    use std::net::IpAddr;
    use std::time::{Duration, Instant};

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_source_gets_twice_its_rate_at_once_then_its_rate() {
        let t0 = Instant::now();
        let mut l = HandshakeLimiter::new(5, 1000, t0);
        let burst = (0..100).filter(|_| l.allow(ip(1), t0)).count();
        assert_eq!(burst, 10);
        // Another source has its own bucket.
        assert!(l.allow(ip(2), t0));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| l.allow(ip(1), t1)).count(), 5);
    }

    #[test]
    fn the_total_bounds_every_source_together() {
        let t0 = Instant::now();
        let mut l = HandshakeLimiter::new(5, 3, t0);
        let allowed = (1..=20).filter(|i| l.allow(ip(*i), t0)).count();
        assert_eq!(allowed, 3);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((21..=40).filter(|i| l.allow(ip(*i), t1)).count(), 3);
    }
}
