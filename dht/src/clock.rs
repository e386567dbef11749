//! The hybrid logical clock that versions writes.
//!
//! A version's physical part is wall-clock time, but the core never reads a clock: the
//! driver tells it the offset between protocol time and the Unix epoch
//! ([`Dht::set_clock_offset`](crate::Dht::set_clock_offset); the real node's protocol time
//! *is* Unix time, so its offset is 0, and the simulator gives every node its own, skewed
//! where an experiment wants a fast or slow clock).
//!
//! The clock follows Kulkarni et al., "Logical Physical Clocks and Consistent Snapshots in
//! Globally Distributed Databases" (OPODIS 2014): a reading is `(l, c)` — the largest wall
//! time seen and a counter — so every new version is newer than everything this node wrote
//! *and* every version it has accepted from others, even when its own clock runs slow. A
//! version more than [`MAX_CLOCK_SKEW`](crate::MAX_CLOCK_SKEW) ahead of the receiver's
//! wall clock is refused before the clock advances past it, so a fast clock cannot drag
//! honest clocks (or win every race) by more than that bound.

use peerlab_overlay::{Instant, PeerId};

use crate::record::{MAX_CLOCK_SKEW, Version};

/// A node's wall clock and its hybrid logical clock.
#[derive(Clone, Debug, Default)]
pub(crate) struct Hlc {
    /// Microseconds to add to protocol time to get Unix time.
    offset_us: i64,
    /// The last reading given out or observed: `(wall_ms, logical)`.
    last: (u64, u32),
}

impl Hlc {
    /// Sets the offset between protocol time and the Unix epoch, in microseconds.
    pub(crate) fn set_offset(&mut self, offset_us: i64) {
        self.offset_us = offset_us;
    }

    /// Wall-clock milliseconds since 1970 at protocol time `now`.
    pub(crate) fn wall_ms(&self, now: Instant) -> u64 {
        let us = i128::from(now.as_micros()) + i128::from(self.offset_us);
        u64::try_from(us.max(0) / 1000).unwrap_or(u64::MAX)
    }

    /// A new version for `writer`, newer than every reading before it.
    pub(crate) fn tick(&mut self, now: Instant, writer: PeerId) -> Version {
        let pt = self.wall_ms(now);
        let (l, c) = self.last;
        self.last = if pt > l {
            (pt, 0)
        } else if c == u32::MAX {
            (l.saturating_add(1), 0)
        } else {
            (l, c + 1)
        };
        Version {
            wall_ms: self.last.0,
            logical: self.last.1,
            writer,
        }
    }

    /// Advances past `v`, a version this node accepted (its next reading is newer).
    pub(crate) fn observe(&mut self, v: &Version) {
        self.last = self.last.max((v.wall_ms, v.logical));
    }

    /// Whether `v` lies more than [`MAX_CLOCK_SKEW`] ahead of this node's wall clock.
    pub(crate) fn too_far_ahead(&self, v: &Version, now: Instant) -> bool {
        v.wall_ms
            > self
                .wall_ms(now)
                .saturating_add(MAX_CLOCK_SKEW.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_US: i64 = 3600 * 1_000_000;

    #[test]
    fn readings_only_grow_even_when_the_clock_stands_still_or_steps_back() {
        let me = PeerId::synthetic(1);
        let mut h = Hlc::default();
        h.set_offset(10 * HOUR_US);
        let a = h.tick(Instant(1_000_000), me);
        let b = h.tick(Instant(1_000_000), me);
        assert!(
            b > a && b.wall_ms == a.wall_ms,
            "same millisecond: logical step"
        );
        h.set_offset(9 * HOUR_US); // the clock stepped back an hour
        let c = h.tick(Instant(2_000_000), me);
        assert!(c > b);
        assert_eq!(h.wall_ms(Instant(0)), 9 * 3600 * 1000);
    }

    #[test]
    fn a_slow_clock_writes_after_what_it_has_seen() {
        let (slow, fast) = (PeerId::synthetic(1), PeerId::synthetic(2));
        let mut h = Hlc::default();
        h.set_offset(-50 * 1_000_000); // 50 s slow: within the skew bound
        let now = Instant(HOUR_US as u64);
        let seen = Version {
            wall_ms: HOUR_US as u64 / 1000,
            logical: 7,
            writer: fast,
        };
        assert!(!h.too_far_ahead(&seen, now), "50 s is within the bound");
        assert!(
            h.tick(now, slow) < seen,
            "unobserved: the slow clock is behind"
        );
        h.observe(&seen);
        let mine = h.tick(now, slow);
        assert!(mine > seen, "{mine:?} after {seen:?}");
        assert_eq!((mine.wall_ms, mine.logical), (seen.wall_ms, 8));
    }

    #[test]
    fn skew_bound_is_exact() {
        let w = PeerId::synthetic(1);
        let h = Hlc::default();
        let now = Instant(5_000_000);
        let edge = 5_000 + MAX_CLOCK_SKEW.as_millis() as u64;
        let at = |wall_ms| Version {
            wall_ms,
            logical: 0,
            writer: w,
        };
        assert!(!h.too_far_ahead(&at(edge), now));
        assert!(h.too_far_ahead(&at(edge + 1), now));
        assert!(h.too_far_ahead(&at(u64::MAX), now));
    }
}
