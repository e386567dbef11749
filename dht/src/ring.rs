//! Ring helpers: the compact finger table, closest-preceding-node selection and the ideal
//! (converged) ring computed from a sorted list of virtual nodes.
//!
//! Finger `i` of virtual node `n` is `successor(n + 2^i)` (Chord §4.3). On a ring of `M`
//! virtual nodes only about `log2 M` of the 160 fingers differ, and the low ones all equal
//! entries of the successor list. The table therefore stores *runs*: `(first index, node)`
//! pairs in ascending index order, only for indices the successor list does not already
//! determine. Lookups treat fingers purely as an optimisation (Zave 2017): a wrong finger
//! costs hops, never correctness.

use peerlab_overlay::ID_BITS;
use peerlab_overlay::{Id, PeerId};

use crate::message::NodeRef;

/// Number of fingers per virtual node (one per bit of the identifier).
pub(crate) const FINGERS: usize = ID_BITS;

/// Bit length of `d` read as an unsigned 160-bit integer (0 for 0).
pub(crate) fn bit_len(d: &Id) -> usize {
    for (i, &b) in d.0.iter().enumerate() {
        if b != 0 {
            return (d.0.len() - i) * 8 - b.leading_zeros() as usize;
        }
    }
    0
}

/// The lowest finger index *not* determined by a successor list reaching `last`:
/// `n + 2^i ∈ (n, last]` exactly when `2^i ≤ distance(n, last)`.
pub(crate) fn first_uncovered(n: &Id, last: &Id) -> usize {
    if n == last {
        return 0;
    }
    bit_len(&n.distance_to(last))
}

/// `successor(start)` among `succs` (the successor list of `n`), if the list reaches it.
pub(crate) fn successor_in_list(n: &Id, succs: &[NodeRef], start: &Id) -> Option<NodeRef> {
    let mut prev = *n;
    for s in succs {
        if start.in_half_open(&prev, &s.id) {
            return Some(*s);
        }
        prev = s.id;
    }
    None
}

/// A compact finger table: runs of equal fingers, ascending by first index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingers {
    runs: Vec<(u8, NodeRef)>,
}

impl Fingers {
    /// The stored runs `(first index, node)`.
    pub fn runs(&self) -> &[(u8, NodeRef)] {
        &self.runs
    }

    /// The stored finger for index `i` (`None` if no run covers it).
    pub fn get(&self, i: usize) -> Option<NodeRef> {
        self.runs
            .iter()
            .take_while(|(f, _)| (*f as usize) <= i)
            .last()
            .map(|(_, n)| *n)
    }

    /// Sets fingers `lo..hi` to `node`. Out-of-range bounds are clamped.
    pub(crate) fn set_range(&mut self, lo: usize, hi: usize, node: NodeRef) {
        let hi = hi.min(FINGERS);
        if lo >= hi {
            return;
        }
        let mut full: Vec<Option<NodeRef>> = (0..FINGERS).map(|i| self.get(i)).collect();
        for f in &mut full[lo..hi] {
            *f = Some(node);
        }
        self.compress(&full);
    }

    /// Drops every run pointing at a node for which `dead` holds; its indices fall back to
    /// the run below.
    pub(crate) fn remove_where(&mut self, dead: impl Fn(&NodeRef) -> bool) {
        if self.runs.iter().any(|(_, n)| dead(n)) {
            self.runs.retain(|(_, n)| !dead(n));
            let full: Vec<Option<NodeRef>> = (0..FINGERS).map(|i| self.get(i)).collect();
            self.compress(&full);
        }
    }

    /// Drops the runs for indices below `lo` (a successor list now determines them).
    pub(crate) fn remove_below(&mut self, lo: usize) {
        let full: Vec<Option<NodeRef>> = (0..FINGERS)
            .map(|i| if i < lo { None } else { self.get(i) })
            .collect();
        self.compress(&full);
    }

    /// Replaces the table with runs received from a peer, ignoring out-of-range indices.
    pub(crate) fn install(&mut self, runs: &[(u16, NodeRef)], from: usize) {
        for w in 0..runs.len() {
            let (lo, node) = runs[w];
            let hi = runs.get(w + 1).map_or(FINGERS, |r| r.0 as usize);
            let lo = (lo as usize).max(from);
            self.set_range(lo, hi, node);
        }
    }

    /// Distinct nodes in the table.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeRef> {
        self.runs.iter().map(|(_, n)| n)
    }

    fn compress(&mut self, full: &[Option<NodeRef>]) {
        self.runs.clear();
        let mut last: Option<NodeRef> = None;
        for (i, f) in full.iter().enumerate() {
            if let Some(n) = f
                && last != Some(*n)
            {
                self.runs.push((i as u8, *n));
                last = Some(*n);
            }
        }
    }
}

/// Clockwise distance from `from` to `key` with distance 0 read as the whole ring, so a
/// node *at* the key is the farthest predecessor, not the closest.
pub(crate) fn preceding_distance(from: &Id, key: &Id) -> Id {
    let d = from.distance_to(key);
    if d.is_zero() { Id::MAX } else { d }
}

/// Among `candidates`, those strictly inside `(after, key)`, ordered closest-preceding
/// first (smallest distance to `key`), without duplicates, at most `max`.
pub(crate) fn closest_preceding<'a>(
    after: &Id,
    key: &Id,
    candidates: impl Iterator<Item = &'a NodeRef>,
    max: usize,
) -> Vec<NodeRef> {
    let mut out: Vec<NodeRef> = Vec::with_capacity(max + 1);
    for c in candidates {
        if !c.id.in_open(after, key) || out.iter().any(|o| o.id == c.id) {
            continue;
        }
        let d = c.id.distance_to(key);
        let pos = out.partition_point(|o| o.id.distance_to(key) < d);
        if pos < max {
            out.insert(pos, *c);
            out.truncate(max);
        }
    }
    out
}

/// The converged ring over a set of virtual nodes, for building ideal state and for
/// checking a live ring against it.
#[derive(Clone, Debug)]
pub struct IdealRing {
    nodes: Vec<NodeRef>,
}

/// The state one virtual node has on the converged ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdealView {
    /// Predecessor.
    pub pred: NodeRef,
    /// Successor list.
    pub succs: Vec<NodeRef>,
    /// Compact finger runs (indices the successor list does not determine).
    pub fingers: Fingers,
}

impl IdealRing {
    /// The ring of these virtual nodes (sorted and deduplicated by id here).
    pub fn new(mut nodes: Vec<NodeRef>) -> IdealRing {
        nodes.sort_unstable_by_key(|n| n.id);
        nodes.dedup_by(|a, b| a.id == b.id);
        IdealRing { nodes }
    }

    /// All virtual nodes in ring order.
    pub fn nodes(&self) -> &[NodeRef] {
        &self.nodes
    }

    /// Number of virtual nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Index of the successor of `key`: the first node with id ≥ key, wrapping.
    pub fn successor_index(&self, key: &Id) -> usize {
        let i = self.nodes.partition_point(|n| n.id < *key);
        if i == self.nodes.len() { 0 } else { i }
    }

    /// The owner of `key` (`None` on an empty ring).
    pub fn successor(&self, key: &Id) -> Option<NodeRef> {
        if self.nodes.is_empty() {
            return None;
        }
        Some(self.nodes[self.successor_index(key)])
    }

    /// The ideal successor list of the node at index `i`: the next `r` other nodes.
    pub fn successor_list(&self, i: usize, r: usize) -> Vec<NodeRef> {
        let m = self.nodes.len();
        if m == 1 {
            return vec![self.nodes[i]];
        }
        (1..=r.min(m - 1))
            .map(|k| self.nodes[(i + k) % m])
            .collect()
    }

    /// The peers that should hold `key` on this ring when each key is kept by `r` peers:
    /// the owner's peer, then the peers of the following virtual nodes, each peer once
    /// (a peer's other virtual nodes add no copy). Fewer than `r` when the ring has fewer
    /// peers; empty on an empty ring. This is the replica set the core keeps
    /// ([`Dht::replica_set`](crate::Dht::replica_set) with the owner added) once the ring
    /// has converged, so it is the oracle experiments and testnets check stored keys
    /// against.
    pub fn replica_peers(&self, key: &Id, r: usize) -> Vec<PeerId> {
        let mut out: Vec<PeerId> = Vec::with_capacity(r.min(self.nodes.len()));
        let start = self.successor_index(key);
        for k in 0..self.nodes.len() {
            if out.len() >= r {
                break;
            }
            let p = self.nodes[(start + k) % self.nodes.len()].peer;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }

    /// The ideal finger `f` of the node at index `i`.
    pub fn finger(&self, i: usize, f: usize) -> NodeRef {
        self.nodes[self.successor_index(&self.nodes[i].id.add_pow2(f))]
    }

    /// The full converged view of the node at index `i` with successor lists of length `r`.
    pub fn view(&self, i: usize, r: usize) -> IdealView {
        let m = self.nodes.len();
        let me = self.nodes[i];
        let pred = self.nodes[(i + m - 1) % m];
        let succs = self.successor_list(i, r);
        let last = succs.last().map_or(me.id, |s| s.id);
        let lo = if m == 1 {
            FINGERS
        } else {
            first_uncovered(&me.id, &last)
        };
        let mut fingers = Fingers::default();
        let mut full: Vec<Option<NodeRef>> = vec![None; FINGERS];
        for (f, slot) in full.iter_mut().enumerate().skip(lo) {
            *slot = Some(self.finger(i, f));
        }
        fingers.compress(&full);
        IdealView {
            pred,
            succs,
            fingers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u64) -> NodeRef {
        NodeRef {
            id: Id::from_u64(v),
            peer: PeerId::synthetic(v),
        }
    }

    #[test]
    fn bit_len_and_coverage() {
        assert_eq!(bit_len(&Id::ZERO), 0);
        assert_eq!(bit_len(&Id::from_u64(1)), 1);
        assert_eq!(bit_len(&Id::from_u64(8)), 4);
        assert_eq!(bit_len(&Id::MAX), 160);
        // successors reach distance 8: fingers 0..=3 (2^3 = 8 ≤ 8) are determined.
        assert_eq!(first_uncovered(&Id::from_u64(10), &Id::from_u64(18)), 4);
        assert_eq!(first_uncovered(&Id::from_u64(10), &Id::from_u64(17)), 3);
    }

    #[test]
    fn closest_preceding_interval_edges() {
        let key = Id::from_u64(50);
        let cands = [n(10), n(49), n(50), n(51), n(30), n(49)];
        // strictly inside (10, 50): 49 then 30; 10 (= after), 50 (= key), 51 excluded; dup 49 once.
        let got = closest_preceding(&Id::from_u64(10), &key, cands.iter(), 4);
        assert_eq!(got, vec![n(49), n(30)]);
        // wrap-around: after = 60, key = 5: (60, 5) holds 2^160-1 … 0 … 4.
        let wrap = [n(3), n(61), n(70), n(5), n(59)];
        let got = closest_preceding(&Id::from_u64(60), &Id::from_u64(5), wrap.iter(), 2);
        assert_eq!(got, vec![n(3), n(70)]);
        // after == key: the whole ring except the key itself.
        let got = closest_preceding(&key, &key, cands.iter(), 10);
        assert_eq!(got, vec![n(49), n(30), n(10), n(51)]);
        assert!(closest_preceding(&key, &key, [].iter(), 3).is_empty());
    }

    #[test]
    fn preceding_distance_treats_self_as_far() {
        assert_eq!(
            preceding_distance(&Id::from_u64(5), &Id::from_u64(5)),
            Id::MAX
        );
        assert_eq!(
            preceding_distance(&Id::from_u64(5), &Id::from_u64(7)),
            Id::from_u64(2)
        );
    }

    #[test]
    fn finger_runs_set_get_remove() {
        let mut f = Fingers::default();
        f.set_range(100, 160, n(1));
        f.set_range(120, 140, n(2));
        assert_eq!(f.get(99), None);
        assert_eq!(f.get(100), Some(n(1)));
        assert_eq!(f.get(125), Some(n(2)));
        assert_eq!(f.get(140), Some(n(1)));
        assert_eq!(f.runs().len(), 3);
        f.set_range(150, 400, n(3)); // clamped
        assert_eq!(f.get(159), Some(n(3)));
        f.remove_where(|x| *x == n(2));
        assert_eq!(f.get(125), Some(n(1)));
        assert_eq!(f.runs().len(), 2);
        f.set_range(5, 5, n(9)); // empty range: no-op
        assert_eq!(f.get(5), None);
    }

    #[test]
    fn replica_peers_skip_a_peers_other_vnodes_and_wrap() {
        let (a, b, c) = (
            PeerId::synthetic(1),
            PeerId::synthetic(2),
            PeerId::synthetic(3),
        );
        let at = |v: u64, peer: PeerId| NodeRef {
            id: Id::from_u64(v),
            peer,
        };
        // Ring order: 10 a, 20 a, 30 b, 40 a, 50 c.
        let ring = IdealRing::new(vec![at(40, a), at(10, a), at(50, c), at(30, b), at(20, a)]);
        // Owned by 20 (a); 30 (b) next; 40 is a again, so 50 (c) is the third copy.
        assert_eq!(ring.replica_peers(&Id::from_u64(15), 3), vec![a, b, c]);
        assert_eq!(ring.replica_peers(&Id::from_u64(15), 2), vec![a, b]);
        // Past the last node the owner is the first: 10 (a), then b, then c.
        assert_eq!(ring.replica_peers(&Id::from_u64(60), 3), vec![a, b, c]);
        // Owned by 50 (c), wrapping to a, then b.
        assert_eq!(ring.replica_peers(&Id::from_u64(45), 3), vec![c, a, b]);
        assert_eq!(
            ring.replica_peers(&Id::from_u64(45), 9),
            vec![c, a, b],
            "three peers"
        );
        assert!(ring.replica_peers(&Id::from_u64(45), 0).is_empty());
        assert!(
            IdealRing::new(vec![])
                .replica_peers(&Id::ZERO, 3)
                .is_empty()
        );
    }

    #[test]
    fn ideal_ring_views() {
        let ring = IdealRing::new(vec![n(40), n(10), n(30), n(20)]);
        assert_eq!(ring.successor(&Id::from_u64(11)), Some(n(20)));
        assert_eq!(ring.successor(&Id::from_u64(20)), Some(n(20)));
        assert_eq!(ring.successor(&Id::from_u64(41)), Some(n(10)), "wraps");
        let v = ring.view(0, 8);
        assert_eq!(v.pred, n(40));
        assert_eq!(
            v.succs,
            vec![n(20), n(30), n(40)],
            "other nodes only, no wrap to self"
        );
        // successor list reaches 40: fingers with 2^i ≤ 30 are determined by it; finger 5
        // (10 + 32 = 42) wraps to 10 itself.
        assert_eq!(v.fingers.get(4), None);
        assert_eq!(v.fingers.get(5), Some(n(10)));
        assert_eq!(ring.finger(0, 0), n(20));
        let single = IdealRing::new(vec![n(7)]);
        assert_eq!(single.view(0, 4).succs, vec![n(7)]);
    }
}
