//! Adaptive maintenance: when a periodic task does its work.
//!
//! Every periodic task (stabilize, fix-fingers, check-predecessor, repair) keeps its timer
//! at its configured period, but does its work only every `level` periods. After a round in
//! which the ring around this peer did not change, `level` grows [`QUIET_GROWTH`]-fold up to
//! [`Config::max_backoff`](crate::Config::max_backoff); any change (a change counter moved)
//! or a virtual node still joining brings it back to 1. This is the adaptive stabilization
//! of Ghinita & Teo ("An Adaptive Stabilization Framework for Distributed Hash Tables",
//! IPDPS 2006): a ring at rest costs `max_backoff` times fewer maintenance messages, a ring
//! under change is repaired at full speed. Only the timing changes; stabilization itself
//! stays Chord's. With `max_backoff` 1 every tick does its work.
//!
//! What counts as a change: a new successor list or predecessor, a joining virtual node, a
//! new finger (fix-fingers), an eviction after a failed request, and a failure notice
//! (`handle_peer_down`) about a peer in this node's tables — so a death is handled at the
//! base period however long the ring was at rest. Repair backs off only while the peer
//! holds no record: replicas count a record orphaned after a fixed time without an offer
//! from its owner (`repair`).

/// How much longer a task waits after each round in which nothing changed. Four: a LAN
/// node (1 s base, 32 s at rest) reaches its rest period after 1 + 4 + 16 = 21 s of quiet
/// rather than the 31 s of doubling, and since any change brings the base period back at
/// once, a faster climb costs no repair speed.
pub(crate) const QUIET_GROWTH: u32 = 4;

/// The periodic maintenance tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Task {
    /// Stabilize (and restarting joins).
    Stabilize = 0,
    /// Fix-fingers.
    FixFingers = 1,
    /// Check-predecessor.
    CheckPredecessor = 2,
    /// Replica repair and hand-back.
    Repair = 3,
}

/// When one task next does its work.
#[derive(Clone, Copy, Debug)]
struct Backoff {
    /// Periods between two rounds of work now: 1 after a change, [`QUIET_GROWTH`] times
    /// longer after each quiet round, up to the maximum.
    level: u32,
    /// Periods since the last round of work.
    ticks: u32,
    /// The change counter the last round of work saw.
    epoch: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            level: 1,
            ticks: 0,
            epoch: u64::MAX,
        }
    }
}

/// The backoff state of every periodic task.
#[derive(Clone, Debug, Default)]
pub(crate) struct Schedule {
    tasks: [Backoff; 4],
}

impl Schedule {
    /// Called on every tick of `task`: whether it does its work on this one. `epoch` is the
    /// change counter the task watches, `joining` whether a virtual node is out of the
    /// ring, `max` the largest level (at least 1).
    pub(crate) fn due(&mut self, task: Task, epoch: u64, joining: bool, max: u32) -> bool {
        let max = max.max(1);
        let b = &mut self.tasks[task as usize];
        b.ticks = b.ticks.saturating_add(1);
        if epoch != b.epoch || joining {
            b.level = 1;
        }
        if b.ticks < b.level {
            return false;
        }
        // A round of work: the next one comes sooner if something changed since the last.
        b.level = if epoch == b.epoch && !joining {
            b.level.saturating_mul(QUIET_GROWTH).min(max)
        } else {
            1
        };
        b.epoch = epoch;
        b.ticks = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(s: &mut Schedule, epochs: &[u64], max: u32) -> String {
        epochs
            .iter()
            .map(|e| {
                if s.due(Task::Stabilize, *e, false, max) {
                    'x'
                } else {
                    '.'
                }
            })
            .collect()
    }

    #[test]
    fn quiet_rounds_back_off_exponentially_up_to_the_maximum() {
        let mut s = Schedule::default();
        // First tick always works (unknown epoch), then 1, 4, 16, 20, 20 periods apart.
        let want = format!(
            "xx...x{q15}x{q19}x{q19}x{q19}x",
            q15 = ".".repeat(15),
            q19 = ".".repeat(19)
        );
        assert_eq!(pattern(&mut s, &[0; 82], 20), want);
    }

    #[test]
    fn a_change_brings_the_period_back_at_once() {
        let mut s = Schedule::default();
        assert_eq!(pattern(&mut s, &[0; 12], 8), "xx...x......");
        // The change is seen on the very next tick, though the quiet schedule said wait.
        assert_eq!(pattern(&mut s, &[1, 1, 1, 1, 1, 1], 8), "xx...x");
    }

    #[test]
    fn joining_or_max_one_never_backs_off() {
        let mut s = Schedule::default();
        for _ in 0..10 {
            assert!(s.due(Task::Repair, 0, true, 64));
        }
        let mut s = Schedule::default();
        assert_eq!(pattern(&mut s, &[0; 10], 1), "xxxxxxxxxx");
        // Tasks are independent.
        let mut s = Schedule::default();
        assert_eq!(pattern(&mut s, &[0; 6], 4), "xx...x");
        assert!(s.due(Task::Repair, 0, false, 4), "first repair tick works");
    }
}
