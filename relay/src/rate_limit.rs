//! Token buckets for handshake messages: per source address and overall.
//! Time is an argument, so the limits test deterministically.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Limits handshake messages to `per_source` per second per address (bursts
/// of twice that) and `total` per second overall.
#[derive(Debug)]
pub struct HandshakeLimiter {
    per_source: f64,
    total: f64,
    global: Bucket,
    sources: HashMap<IpAddr, Bucket>,
}

/// The most source addresses tracked; beyond it the table is cleared (the
/// global bucket still bounds the rate).
const MAX_SOURCES: usize = 4096;

impl HandshakeLimiter {
    /// A limiter starting full at `now`.
    pub fn new(per_source: u32, total: u32, now: Instant) -> Self {
        let total = f64::from(total.max(1));
        Self {
            per_source: f64::from(per_source.max(1)),
            total,
            global: Bucket {
                tokens: total,
                at: now,
            },
            sources: HashMap::new(),
        }
    }

    /// Takes a token for `source` if it and the global bucket have one.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&source) {
            self.sources.clear();
        }
        let (rate, burst) = (self.per_source, self.per_source * 2.0);
        let b = self.sources.entry(source).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        if !b.take(now, rate, burst) {
            return false;
        }
        self.global.take(now, self.total, self.total)
    }
}
