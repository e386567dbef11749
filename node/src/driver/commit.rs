//! Group commit off the event loop: the run's store writes go to the storage (tokio's
//! blocking pool), and the run's durable acknowledgments wait for them.
//!
//! After each run of inputs the driver takes the run's store changes from the core and the
//! run's *durable acknowledgments* — the frames that tell a writer this node keeps its write
//! (`PutAck`, `HandoffAck`) and the events that answer a local put — out of what the run
//! produced; everything else leaves at once. The changes join the next commit group; the
//! acknowledgments are held until that group's commit reports success, then released in the
//! order the runs produced them. One group is committed at a time: while it is in flight,
//! later runs' changes accumulate into the next group, which goes as one transaction (one
//! redb commit, one fsync) when the first reports. This is group commit as database logs do
//! it (Gray & Reuter, *Transaction Processing*, §9.4.7; PostgreSQL's `commit_delay`), with
//! the loop never waiting on the disk while the storage keeps up.
//!
//! A run that changed nothing but acknowledges a write (a writer's retry of a write this
//! node already holds) waits for the groups already queued: the write it acknowledges may
//! be in one of them. When a commit fails, every acknowledgment held at that moment fails —
//! events become `NotDurable` errors, frames are dropped so their writers retry — including
//! those waiting on the group behind it, whose acknowledgments may rest on the failed one.
//!
//! **Back-pressure.** Held runs ([`MAX_HELD_RUNS`]) and the accumulating group's bytes
//! ([`MAX_GROUP_BYTES`]) are bounded; at either bound [`Pipeline::is_full`] holds, and the
//! driver takes no new input until the commit in flight reports. A disk slower than the
//! writes therefore slows the node's intake instead of growing memory without bound.
//!
//! This module is the bookkeeping only (no I/O, no clock), so it is tested on its own; the
//! driver runs the commits.

use std::collections::VecDeque;

use crate::store::Change;

/// Most runs whose acknowledgments wait for commits. A run holds at most its turn's
/// answers (up to `STREAM_EVENTS_PER_TURN` frames' worth); 1024 runs cover about a second
/// of a busy node's writes behind one slow fsync, after which intake waits for the disk.
pub(crate) const MAX_HELD_RUNS: usize = 1024;

/// Most bytes of changes (keys and values) the next group accumulates while one commit is
/// in flight; beyond this intake waits for the disk. 64 MiB is a thousand records at the
/// DHT's largest value, a few hundred milliseconds of a disk's write bandwidth.
pub(crate) const MAX_GROUP_BYTES: usize = 64 << 20;

/// A group of runs' changes committed in one transaction.
#[derive(Debug)]
pub(crate) struct Group {
    /// Its number (groups are numbered in commit order).
    pub(crate) id: u64,
    /// The changes, in the order the runs made them (a later change to a key wins).
    pub(crate) changes: Vec<Change>,
}

/// What the driver does after a step of the pipeline.
#[derive(Debug)]
pub(crate) struct Step<A> {
    /// Acknowledgments whose writes are durable, in order: send them.
    pub(crate) released: Vec<A>,
    /// Acknowledgments whose writes may not be durable: fail them, with this reason.
    pub(crate) failed: Option<(String, Vec<A>)>,
    /// A group to commit now (nothing else is in flight).
    pub(crate) start: Option<Group>,
}

impl<A> Default for Step<A> {
    fn default() -> Self {
        Step {
            released: Vec::new(),
            failed: None,
            start: None,
        }
    }
}

/// The commit pipeline's state (see the module docs).
#[derive(Debug)]
pub(crate) struct Pipeline<A> {
    /// The group in flight.
    in_flight: Option<u64>,
    /// The number the accumulating group will have.
    next_id: u64,
    /// Changes of the accumulating group.
    next: Vec<Change>,
    next_bytes: usize,
    /// Held acknowledgments per run, oldest first, with the group whose success releases
    /// them (that group and every earlier one).
    held: VecDeque<(u64, Vec<A>)>,
    max_held: usize,
    max_bytes: usize,
}

impl<A> Default for Pipeline<A> {
    fn default() -> Self {
        Pipeline::with_bounds(MAX_HELD_RUNS, MAX_GROUP_BYTES)
    }
}

fn change_bytes(c: &Change) -> usize {
    match c {
        Change::Put { key, value } => key.len() + value.len(),
        Change::Delete { key } => key.len(),
    }
}

impl<A> Pipeline<A> {
    /// A pipeline with other bounds than the defaults (tests).
    pub(crate) fn with_bounds(max_held: usize, max_bytes: usize) -> Pipeline<A> {
        Pipeline {
            in_flight: None,
            next_id: 0,
            next: Vec::new(),
            next_bytes: 0,
            held: VecDeque::new(),
            max_held,
            max_bytes,
        }
    }

    /// Ends a run: its `changes` join the next group, its durable acknowledgments `acks`
    /// wait for it (or are released at once when nothing is queued).
    pub(crate) fn run(&mut self, changes: Vec<Change>, acks: Vec<A>) -> Step<A> {
        let mut step = Step::default();
        let tag = if !changes.is_empty() {
            self.next_bytes += changes.iter().map(change_bytes).sum::<usize>();
            self.next.extend(changes);
            Some(self.next_id)
        } else if !self.next.is_empty() {
            Some(self.next_id)
        } else {
            self.in_flight
        };
        match tag {
            _ if acks.is_empty() => {}
            Some(g) => self.held.push_back((g, acks)),
            // Nothing queued: every earlier acknowledgment was released, so these go too.
            None => step.released = acks,
        }
        step.start = self.start_next();
        step
    }

    /// The commit of group `id` reported `result`.
    pub(crate) fn completed(&mut self, id: u64, result: Result<(), String>) -> Step<A> {
        debug_assert_eq!(
            self.in_flight,
            Some(id),
            "completion of a group not in flight"
        );
        self.in_flight = None;
        let mut step = Step::default();
        match result {
            Ok(()) => {
                while let Some((g, _)) = self.held.front()
                    && *g <= id
                {
                    if let Some((_, acks)) = self.held.pop_front() {
                        step.released.extend(acks);
                    }
                }
            }
            Err(why) => {
                let failed = self.held.drain(..).flat_map(|(_, a)| a).collect();
                step.failed = Some((why, failed));
            }
        }
        step.start = self.start_next();
        step
    }

    /// Starts the accumulated group if nothing is in flight.
    fn start_next(&mut self) -> Option<Group> {
        if self.in_flight.is_some() || self.next.is_empty() {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight = Some(id);
        self.next_bytes = 0;
        Some(Group {
            id,
            changes: std::mem::take(&mut self.next),
        })
    }

    /// Whether intake must wait for the commit in flight (see the module docs). Only ever
    /// true while a commit is in flight, whose completion makes room.
    pub(crate) fn is_full(&self) -> bool {
        self.in_flight.is_some()
            && (self.held.len() >= self.max_held || self.next_bytes >= self.max_bytes)
    }

    /// Whether a commit is in flight.
    #[cfg(test)]
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: u8) -> Change {
        Change::Put {
            key: vec![k],
            value: vec![k; 3],
        }
    }

    fn keys(g: &Group) -> Vec<u8> {
        g.changes
            .iter()
            .map(|c| match c {
                Change::Put { key, .. } | Change::Delete { key } => key[0],
            })
            .collect()
    }

    /// Acknowledgments leave only after their group's commit, in the order of their runs;
    /// a run without changes waits for the groups queued before it.
    #[test]
    fn acks_are_released_in_order_after_their_commit() {
        let mut p = Pipeline::default();
        let s = p.run(vec![put(1)], vec!["a1"]);
        assert!(s.released.is_empty(), "not before the commit");
        let g1 = s.start.expect("first group starts at once");
        assert_eq!(keys(&g1), vec![1]);

        let s = p.run(vec![put(2)], vec!["a2"]);
        assert!(
            s.released.is_empty() && s.start.is_none(),
            "one commit at a time"
        );
        // No change, but it may acknowledge a write queued in group 2.
        let s = p.run(vec![], vec!["a3"]);
        assert!(s.released.is_empty() && s.start.is_none());

        let s = p.completed(g1.id, Ok(()));
        assert_eq!(s.released, vec!["a1"], "only group 1's run");
        let g2 = s.start.expect("the accumulated group starts");
        assert_eq!(keys(&g2), vec![2]);

        let s = p.completed(g2.id, Ok(()));
        assert_eq!(s.released, vec!["a2", "a3"]);
        assert!(s.start.is_none() && !p.busy());

        // Nothing queued: released at once.
        let s = p.run(vec![], vec!["a4"]);
        assert_eq!(s.released, vec!["a4"]);
    }

    /// A run without changes while only a commit is in flight waits for that commit.
    #[test]
    fn a_run_without_changes_waits_for_the_commit_in_flight() {
        let mut p = Pipeline::default();
        let g = p.run(vec![put(1)], vec![]).start.unwrap();
        let s = p.run(vec![], vec!["retry-ack"]);
        assert!(s.released.is_empty());
        assert_eq!(p.completed(g.id, Ok(())).released, vec!["retry-ack"]);
    }

    /// A failed commit fails every held acknowledgment (its own and those queued behind
    /// it), releases none, and the queued changes are still committed.
    #[test]
    fn a_failed_commit_fails_the_held_acks() {
        let mut p = Pipeline::default();
        let g1 = p.run(vec![put(1)], vec!["a1"]).start.unwrap();
        p.run(vec![put(2)], vec!["a2"]);
        let s = p.completed(g1.id, Err("disk full".into()));
        assert!(s.released.is_empty());
        let (why, failed) = s.failed.expect("failed acks");
        assert_eq!(why, "disk full");
        assert_eq!(failed, vec!["a1", "a2"]);
        let g2 = s.start.expect("group 2 is still written");
        assert_eq!(keys(&g2), vec![2]);
        // Later runs are unaffected.
        let s = p.run(vec![], vec!["a3"]);
        assert!(s.released.is_empty());
        let s = p.completed(g2.id, Ok(()));
        assert_eq!(s.released, vec!["a3"]);
        assert!(s.failed.is_none());
    }

    /// Runs that end while a commit is in flight go together as one group, in order.
    #[test]
    fn runs_behind_a_commit_form_one_group() {
        let mut p: Pipeline<u32> = Pipeline::default();
        let g1 = p.run(vec![put(1)], vec![1]).start.unwrap();
        let mut starts = 1;
        for k in 2..=5 {
            let s = p.run(vec![put(k)], vec![k as u32]);
            starts += usize::from(s.start.is_some());
        }
        assert_eq!(starts, 1);
        let s = p.completed(g1.id, Ok(()));
        let g2 = s.start.unwrap();
        assert_eq!(keys(&g2), vec![2, 3, 4, 5], "one group, in run order");
        assert_eq!(p.completed(g2.id, Ok(())).released, vec![2, 3, 4, 5]);
    }

    /// Intake stops at the bounds while a commit is in flight and resumes when it reports.
    #[test]
    fn bounded_queue_applies_back_pressure() {
        let mut p: Pipeline<u32> = Pipeline::with_bounds(3, 1 << 20);
        let g1 = p.run(vec![put(0)], vec![0]).start.unwrap();
        assert!(!p.is_full());
        p.run(vec![put(1)], vec![1]);
        assert!(!p.is_full());
        p.run(vec![], vec![2]);
        assert!(p.is_full(), "three runs held");
        let s = p.completed(g1.id, Ok(()));
        assert!(!p.is_full(), "room after the commit reported");
        let g2 = s.start.unwrap();
        assert!(p.busy());
        p.completed(g2.id, Ok(()));

        // The byte bound: the accumulating group's size.
        let mut p: Pipeline<u32> = Pipeline::with_bounds(100, 10);
        p.run(vec![put(0)], vec![]).start.unwrap();
        p.run(vec![put(1), put(2)], vec![]);
        assert!(!p.is_full(), "8 bytes");
        p.run(vec![put(3)], vec![]);
        assert!(p.is_full(), "12 bytes");
    }
}
