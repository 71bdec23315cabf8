//! Counting a tunnel's time on the device, without trusting the wall clock.
//!
//! While the agent runs, connected time is counted on the monotonic clock
//! and saved every [`CHECKPOINT`]. After a restart (a crash or a reboot)
//! the agent cannot know how long it was down, so it assumes the worst that
//! it can bound: the whole unsaved checkpoint interval was used, and if the
//! wall clock moved forward since the last save, that much time passed too.
//! A wall clock that jumps forward can only end a tunnel early; one that
//! jumps back (no RTC, the Pi boots in 1970) changes nothing. Neither can
//! lengthen a tunnel.

use std::time::{Duration, Instant};

/// How often used time is saved while connected.
pub const CHECKPOINT: Duration = Duration::from_secs(10);

/// Used time after a restart, from the last saved state.
pub fn resumed_used_secs(saved_used: u64, saved_wall: u64, wall_now: u64) -> u64 {
    saved_used
        .saturating_add(CHECKPOINT.as_secs())
        .saturating_add(wall_now.saturating_sub(saved_wall))
}

/// A running tunnel's clock.
#[derive(Debug, Clone, Copy)]
pub struct TunnelClock {
    used_at_start: u64,
    started: Instant,
    duration: u64,
}

impl TunnelClock {
    /// A clock that has `used` seconds of `duration` behind it at `now`.
    pub fn new(used: u64, duration: u64, now: Instant) -> TunnelClock {
        TunnelClock {
            used_at_start: used,
            started: now,
            duration,
        }
    }

    /// Seconds used at `now`.
    pub fn used(&self, now: Instant) -> u64 {
        self.used_at_start
            .saturating_add(now.saturating_duration_since(self.started).as_secs())
    }

    /// Time left at `now` (zero when expired).
    pub fn remaining(&self, now: Instant) -> Duration {
        let used = self.used_at_start as u128 * 1000
            + now.saturating_duration_since(self.started).as_millis();
        let total = self.duration as u128 * 1000;
        Duration::from_millis(total.saturating_sub(used) as u64)
    }

    /// The instant the duration is used up.
    pub fn expires_at(&self) -> Instant {
        self.started + Duration::from_secs(self.duration.saturating_sub(self.used_at_start))
    }

    /// True once the duration is used up.
    pub fn expired(&self, now: Instant) -> bool {
        self.remaining(now).is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_monotonic_time() {
        let t0 = Instant::now();
        let c = TunnelClock::new(100, 600, t0);
        assert_eq!(c.remaining(t0), Duration::from_secs(500));
        assert_eq!(c.used(t0 + Duration::from_secs(50)), 150);
        assert!(!c.expired(t0 + Duration::from_secs(499)));
        assert!(c.expired(t0 + Duration::from_secs(500)));
    }

    #[test]
    fn a_restart_never_lengthens_a_tunnel() {
        // Clock unchanged or set back (no RTC): only the unsaved interval is charged.
        assert_eq!(resumed_used_secs(100, 1_800_000_000, 1_800_000_000), 110);
        assert_eq!(resumed_used_secs(100, 1_800_000_000, 0), 110);
        // Clock moved forward while down: that time counts as used.
        assert_eq!(resumed_used_secs(100, 1_800_000_000, 1_800_000_300), 410);
        // A wild forward jump ends the tunnel (conservative), without overflow.
        assert_eq!(resumed_used_secs(u64::MAX - 5, 0, u64::MAX), u64::MAX);
    }
}
