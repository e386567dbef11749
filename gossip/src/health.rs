//! Local health: Lifeguard's answer to a failure detector that is itself slow (Dadgar,
//! Phillips, Currey, "Lifeguard: Local Health Awareness for More Accurate Failure
//! Detection", DSN Workshops 2018, §IV-A; memberlist's `awareness`).
//!
//! SWIM assumes that when a probe goes unanswered the *target* is at fault. On an
//! overloaded machine — hundreds of node processes starting on two cores, a node whose event
//! loop stalls — the prober is just as often the one that is late: its timeouts fire before
//! it has read the acks waiting in its socket, and it suspects healthy members, whose
//! refutations then flood the group and load it further. Lifeguard lets a node notice that it
//! is the slow one and back off.
//!
//! The node keeps a *local health score* `s ∈ [0, max − 1]` and multiplies its probe period
//! and probe timeout by `s + 1` (the local health multiplier, LHM). The score moves on what
//! the node sees of its own probes:
//!
//! - a probe acknowledged (directly or through a relay): `−1`;
//! - a probe that failed without a single *nack* from its relays: `+1` — a relay that
//!   could not reach the target says so after part of the probe timeout
//!   ([`NACK_FRACTION`]), so a prober that hears a nack learns that the target, not itself,
//!   is unreachable (`+0`); a failed probe without relays counts `+1`;
//! - having to refute a suspicion of itself: `+1` (others found it unresponsive).
//!
//! memberlist adds one for *every* relay that did not nack. That also blames a prober cut
//! off from part of the group: on the small side of a partition most relays are across it,
//! their nacks never come, the score saturates within seconds and the probe period
//! stretches eight-fold just when the other side has to be detected (a 4 + 8-node partition
//! test did not see its sides split within 30 s). A slow node misses *all* nacks, a
//! partitioned one hears those of the relays on its side, so counting only probes without
//! any nack keeps the first signal and drops the second.
//!
//! `max` is [`Config::max_health_multiplier`](crate::Config) (memberlist's
//! `AwarenessMaxMultiplier`, 8 on a LAN); `1` turns local health off.

use std::time::Duration;

/// Part of a relay's own probe timeout after which it nacks an indirect probe whose target
/// has not answered (memberlist nacks at 80 %), so that the nack reaches the requester before
/// the requester's probe ends.
pub(crate) const NACK_FRACTION: f64 = 0.8;

/// The local health score (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LocalHealth {
    score: u32,
    /// Largest multiplier: the score stays below it.
    max: u32,
}

impl LocalHealth {
    /// A healthy node (score 0) whose multiplier never exceeds `max` (at least 1).
    pub(crate) fn new(max: u32) -> LocalHealth {
        LocalHealth {
            score: 0,
            max: max.max(1),
        }
    }

    /// The score: 0 for a healthy node.
    pub(crate) fn score(&self) -> u32 {
        self.score
    }

    /// Moves the score by `delta`, within `[0, max − 1]`.
    pub(crate) fn apply(&mut self, delta: i64) {
        let top = i64::from(self.max - 1);
        self.score = (i64::from(self.score) + delta).clamp(0, top) as u32;
    }

    /// `d` scaled by the multiplier `score + 1`.
    pub(crate) fn scale(&self, d: Duration) -> Duration {
        d.saturating_mul(self.score + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_saturates_at_both_ends() {
        let mut h = LocalHealth::new(8);
        h.apply(-3);
        assert_eq!(h.score(), 0);
        h.apply(100);
        assert_eq!(h.score(), 7);
        assert_eq!(h.scale(Duration::from_millis(500)), Duration::from_secs(4));
        h.apply(-1);
        assert_eq!(h.score(), 6);
    }

    #[test]
    fn a_multiplier_of_one_turns_it_off() {
        for max in [0, 1] {
            let mut h = LocalHealth::new(max);
            h.apply(5);
            assert_eq!(h.score(), 0);
            assert_eq!(h.scale(Duration::from_secs(1)), Duration::from_secs(1));
        }
    }
}
