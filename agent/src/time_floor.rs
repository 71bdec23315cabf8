//! The device's time floor: a lower bound on "now" that needs no clock
//! (see `support_protocol::certificate`). It starts at the release time and
//! rises with the `issued_at` of accepted approvals, so that certificates
//! expired long ago are refused even on a Pi whose clock reads 1970.
//!
//! An approval's `issued_at` is the approver's claim. One from a laptop
//! whose clock is years ahead would lift the floor past every other
//! certificate's end and lock support out of the device. So one approval
//! may lift the floor at most [`MAX_STEP`] past the later of the current
//! floor and the device's own wall clock.

/// How far past the floor (or the device's clock) one approval may lift it.
pub const MAX_STEP: u64 = 24 * 3600;

/// The floor after accepting an approval issued at `issued_at`, with the
/// device's wall clock reading `wall` (which may be wrong either way).
pub fn raised(floor: u64, issued_at: u64, wall: u64) -> u64 {
    let ceiling = floor.max(wall).saturating_add(MAX_STEP);
    floor.max(issued_at.min(ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn an_honest_approval_lifts_the_floor_to_its_time() {
        assert_eq!(raised(NOW - 1000, NOW - 10, NOW), NOW - 10);
        assert_eq!(raised(NOW - 1000, NOW - 10, 0), NOW - 10, "clock at 1970");
        assert_eq!(raised(NOW, NOW - 10, NOW), NOW, "never lowered");
    }

    #[test]
    fn a_future_issued_at_lifts_it_at_most_a_day_past_what_the_device_knows() {
        let year = 365 * 86400;
        assert_eq!(raised(NOW, NOW + 3 * year, NOW), NOW + MAX_STEP);
        assert_eq!(
            raised(NOW, NOW + 3 * year, 0),
            NOW + MAX_STEP,
            "clock at 1970"
        );
        assert_eq!(raised(NOW, u64::MAX, u64::MAX), u64::MAX, "no overflow");
    }
}
