//! Token buckets: one per client address and one overall, for tunnel creates.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A per-address and global rate limit.
pub struct RateLimiter {
    per_addr_per_min: f64,
    burst: f64,
    global_per_min: f64,
    state: Mutex<(HashMap<IpAddr, Bucket>, Bucket)>,
}

impl RateLimiter {
    /// `per_addr_per_min` per address (bursts of `burst`), `global_per_min` overall.
    pub fn new(per_addr_per_min: u32, burst: u32, global_per_min: u32) -> Self {
        let now = Instant::now();
        Self {
            per_addr_per_min: f64::from(per_addr_per_min),
            burst: f64::from(burst.max(1)),
            global_per_min: f64::from(global_per_min),
            state: Mutex::new((
                HashMap::new(),
                Bucket {
                    tokens: f64::from(global_per_min.max(1)),
                    at: now,
                },
            )),
        }
    }

    fn refill(b: &mut Bucket, per_min: f64, cap: f64, now: Instant) {
        let dt = now.duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + dt * per_min / 60.0).min(cap);
        b.at = now;
    }

    /// Takes a token for `addr` (and one globally) if both have one.
    pub fn allow(&self, addr: IpAddr) -> bool {
        let now = Instant::now();
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (map, global) = &mut *guard;
        Self::refill(
            global,
            self.global_per_min,
            self.global_per_min.max(1.0),
            now,
        );
        if map.len() > 100_000 {
            // Forget addresses whose buckets are full again.
            let (per, cap) = (self.per_addr_per_min, self.burst);
            map.retain(|_, b| {
                Self::refill(b, per, cap, now);
                b.tokens < cap
            });
        }
        let b = map.entry(addr).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        Self::refill(b, self.per_addr_per_min, self.burst, now);
        if b.tokens < 1.0 || global.tokens < 1.0 {
            return false;
        }
        b.tokens -= 1.0;
        global.tokens -= 1.0;
        true
    }
}
