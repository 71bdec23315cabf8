//! A token bucket with no clock: the caller passes the time, so limits
//! test deterministically and nothing here reads a clock or does I/O.
//!
//! The relay (handshake messages, built for the device with Rust 1.85) and
//! the control plane (tunnel creates) keep their buckets with this one
//! implementation. Each keeps its own table of buckets per address, with
//! its own bound and policy; what they share is the arithmetic.
//!
//! Time is any ordered type whose difference is a [`Duration`]:
//! `std::time::Instant` in the programs, a `Duration` since an arbitrary
//! origin in tests.
#![no_std]
#![forbid(unsafe_code)]

use core::ops::Sub;
use core::time::Duration;

/// How fast a bucket refills and how many tokens it holds at most.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    tokens: f64,
    per_secs: f64,
    burst: f64,
}

impl Rate {
    /// `tokens` every `per`, holding at most `burst`. A `per` of zero
    /// refills at once: the bucket is always full.
    pub fn new(tokens: u32, per: Duration, burst: u32) -> Self {
        Self {
            tokens: f64::from(tokens),
            per_secs: per.as_secs_f64(),
            burst: f64::from(burst),
        }
    }

    /// The tokens this rate gives over `secs` seconds.
    fn over(&self, secs: f64) -> f64 {
        if self.per_secs > 0.0 {
            secs * self.tokens / self.per_secs
        } else {
            self.burst
        }
    }
}

/// One bucket: its tokens at its last refill, and when that was.
#[derive(Clone, Copy, Debug)]
pub struct Bucket<T> {
    tokens: f64,
    at: T,
}

impl<T: Copy + PartialOrd + Sub<Output = Duration>> Bucket<T> {
    /// A bucket holding `rate`'s whole burst at `now`.
    pub fn full(rate: &Rate, now: T) -> Self {
        Self {
            tokens: rate.burst,
            at: now,
        }
    }

    /// Adds what `rate` gave since the last refill, up to the burst. A
    /// `now` earlier than the last refill adds nothing (and counts from
    /// `now` on).
    pub fn refill(&mut self, rate: &Rate, now: T) {
        let secs = if now > self.at {
            (now - self.at).as_secs_f64()
        } else {
            0.0
        };
        self.tokens = (self.tokens + rate.over(secs)).min(rate.burst);
        self.at = now;
    }

    /// Whether a whole token is there (as of the last refill).
    pub fn has_token(&self) -> bool {
        self.tokens >= 1.0
    }

    /// Spends one token; false, and nothing spent, if there is none.
    pub fn spend(&mut self) -> bool {
        if self.has_token() {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Refills, then spends one token if there is one.
    pub fn take(&mut self, rate: &Rate, now: T) -> bool {
        self.refill(rate, now);
        self.spend()
    }

    /// Whether the bucket holds its whole burst (as of the last refill):
    /// forgetting it then loses nothing.
    pub fn is_full(&self, rate: &Rate) -> bool {
        self.tokens >= rate.burst
    }
}

#[cfg(test)]
mod tests {
    use super::{Bucket, Rate};
    use core::time::Duration;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// How many of `n` takes at `now` succeed.
    fn takes(b: &mut Bucket<Duration>, rate: &Rate, now: Duration, n: usize) -> usize {
        (0..n).filter(|_| b.take(rate, now)).count()
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_refuses() {
        let rate = Rate::new(10, secs(60), 3);
        let mut b = Bucket::full(&rate, secs(0));
        assert_eq!(takes(&mut b, &rate, secs(0), 10), 3);
        assert!(!b.has_token());
        assert!(!b.spend(), "nothing to spend");
    }

    #[test]
    fn tokens_come_back_at_the_rate_and_not_before() {
        // 10 a minute: one every 6 s.
        let rate = Rate::new(10, secs(60), 2);
        let mut b = Bucket::full(&rate, secs(0));
        assert_eq!(takes(&mut b, &rate, secs(0), 2), 2);
        let mut early = b;
        assert!(!early.take(&rate, Duration::from_millis(5_999)));
        assert!(b.take(&rate, secs(6)));
        assert!(!b.take(&rate, secs(6)));
        // Two half periods make a token too: nothing is lost between refills.
        assert!(!b.take(&rate, secs(9)));
        assert!(b.take(&rate, secs(12)));
    }

    #[test]
    fn an_idle_bucket_fills_to_its_burst_only() {
        let rate = Rate::new(1, secs(1), 4);
        let mut b = Bucket::full(&rate, secs(0));
        assert_eq!(takes(&mut b, &rate, secs(0), 4), 4);
        b.refill(&rate, secs(3600));
        assert!(b.is_full(&rate));
        assert_eq!(takes(&mut b, &rate, secs(3600), 100), 4);
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let rate = Rate::new(1, secs(1), 1);
        let mut b = Bucket::full(&rate, secs(100));
        assert!(b.take(&rate, secs(100)));
        assert!(!b.take(&rate, secs(50)), "an earlier time gave a token");
        // Counted from the earlier time on.
        assert!(b.take(&rate, secs(51)));
    }

    #[test]
    fn a_zero_rate_never_refills_and_a_zero_period_is_always_full() {
        let never = Rate::new(0, secs(60), 1);
        let mut b = Bucket::full(&never, secs(0));
        assert!(b.take(&never, secs(0)));
        assert!(!b.take(&never, secs(1_000_000)));
        let always = Rate::new(5, Duration::ZERO, 2);
        let mut b = Bucket::full(&always, secs(0));
        assert_eq!(takes(&mut b, &always, secs(0), 10), 10);
    }

    #[test]
    fn works_with_the_programs_clock_type() {
        extern crate std;
        use std::time::Instant;
        let rate = Rate::new(1, secs(1), 1);
        let t0 = Instant::now();
        let mut b = Bucket::full(&rate, t0);
        assert!(b.take(&rate, t0));
        assert!(!b.take(&rate, t0 + Duration::from_millis(999)));
        assert!(b.take(&rate, t0 + secs(2)));
    }
}
