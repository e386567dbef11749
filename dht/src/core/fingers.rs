//! Fix-fingers: keeping each virtual node's finger table (`finger[i] = successor(n + 2^i)`)
//! fresh, one index per virtual node per tick (Chord §4.4).
//!
//! Fingers are only an optimisation: correctness rests on successor lists. A finger is
//! first checked with the finger itself (is its predecessor at or past the finger's
//! start? then nodes joined in between and the start is looked up), so a ring at rest
//! confirms fingers in one exchange and a node talks only to the peers in its own tables;
//! missing fingers are looked up. Indices a successor list already determines are not
//! stored.
//!
//! A node that knows the overlay's live members (`member_hints`) asks membership first:
//! where the first member's virtual node at or after the finger's start (unless one of its
//! own lies in between) is the finger held, the finger is confirmed without an exchange, so
//! a ring at rest talks only to its neighbours; where no finger is held (a joiner's table,
//! a finger membership reported down), that member becomes the finger without a lookup, so
//! a joiner's finger table costs no connections. Where membership names another member
//! than the finger held, that member may be up but not yet in the ring (a node restarting
//! under churn), and the finger is checked with the finger itself as above, which only
//! ever leads to nodes in the ring. A member that died unnoticed costs a lookup that uses
//! it a timeout and a detour, as any stale finger does; membership reporting a peer down
//! removes it from the fingers at once (`Dht::member_down`). Without members, fingers are
//! checked as in Chord.

use peerlab_overlay::{Cx, Id};

use super::pending::Pending;
use super::routing::Purpose;
use super::{Dht, MAX_INTERNAL_LOOKUPS, VNode};
use crate::message::{Message, NodeRef};
use crate::ring::{FINGERS, first_uncovered, successor_in_list};

impl Dht {
    /// One fix-fingers tick: refresh the next finger of every joined virtual node.
    pub(super) fn fix_fingers(&mut self, cx: &mut Cx<'_, Self>) {
        for vi in 0..self.vnodes.len() {
            if self.lookups.len() >= MAX_INTERNAL_LOOKUPS {
                break;
            }
            let v = &mut self.vnodes[vi];
            if !v.joined || v.fixing {
                continue;
            }
            let last = v.succs.last().map_or(v.id, |s| s.id);
            let lo = first_uncovered(&v.id, &last);
            if lo >= FINGERS {
                continue;
            }
            if v.next_finger < lo || v.next_finger >= FINGERS {
                v.next_finger = lo;
            }
            let index = v.next_finger;
            let (vnode, key) = (v.id, v.id.add_pow2(index));
            let cur = v.fingers.get(index);
            let held = cur.filter(|c| key.in_half_open(&vnode, &c.id));
            if let Some(f) = self.finger_by_members(&key)
                && held.is_none_or(|c| c == f)
            {
                // Membership confirms the finger held, or places a missing one: taken
                // without an exchange. A member it names in place of a finger held may be
                // up but not yet in the ring, so that case is checked with the finger.
                self.counters.fingers_by_members += 1;
                let hi = self.set_finger(vi, index, f);
                self.vnodes[vi].next_finger = hi;
                continue;
            }
            self.vnodes[vi].fixing = true;
            match cur {
                // Ask the finger itself rather than look its start up again: a
                // converged ring confirms it in one exchange, and a node keeps to
                // its own fingers instead of touching a new lookup path each round
                // (which over time connects every node to every other). A finger
                // before its start (copied from the successor at join) is looked
                // up: predecessors only ever lead backwards.
                Some(cur) if key.in_half_open(&vnode, &cur.id) => {
                    let req = self.fresh();
                    self.request(
                        cx,
                        cur.peer,
                        req,
                        Message::GetState {
                            req,
                            vnode: cur.id,
                            pred_only: true,
                        },
                        Pending::FingerCheck { vnode, index, cur },
                    );
                }
                _ => {
                    self.start_lookup(cx, key, Purpose::Finger { vnode, index });
                }
            }
        }
    }

    /// Makes `f` finger `index` of vnode `vi` (and every later finger whose start also
    /// falls in `(n, f]`); returns the first index past that range.
    pub(super) fn set_finger(&mut self, vi: usize, index: usize, f: NodeRef) -> usize {
        let v = &mut self.vnodes[vi];
        let mut hi = index + 1;
        while hi < FINGERS && v.id.add_pow2(hi).in_half_open(&v.id, &f.id) {
            hi += 1;
        }
        // The successor list may have grown since the request went out: fingers it
        // covers now are not stored.
        let last = v.succs.last().map_or(v.id, |s| s.id);
        let index = index.max(first_uncovered(&v.id, &last));
        if index < hi && v.id.add_pow2(index).in_half_open(&v.id, &f.id) {
            if v.fingers.get(index) != Some(f) {
                self.finger_epoch += 1;
            }
            v.fingers.set_range(index, hi, f);
        }
        hi
    }

    /// The answer of finger `cur` of `vnode` to a fix-fingers check: if its predecessor
    /// lies in `[start, cur)`, nodes joined between the finger's start and `cur`, and the
    /// start is looked up (walking back predecessor by predecessor would take one round
    /// per node); otherwise `cur` is confirmed.
    pub(super) fn on_finger_state(
        &mut self,
        cx: &mut Cx<'_, Self>,
        vnode: Id,
        index: usize,
        cur: NodeRef,
        pred: Option<NodeRef>,
    ) {
        let Some(vi) = self.vidx(&vnode) else { return };
        let start = vnode.add_pow2(index);
        match pred {
            Some(p) if p.id == start || p.id.in_open(&start, &cur.id) => {
                // `fixing` stays set: the lookup's answer clears it.
                self.start_lookup(cx, start, Purpose::Finger { vnode, index });
            }
            _ => {
                self.vnodes[vi].fixing = false;
                let hi = self.set_finger(vi, index, cur);
                self.vnodes[vi].next_finger = hi;
            }
        }
    }
}

/// Finger `i` of `v` as routing uses it: from the successor list where that determines it,
/// else from the stored runs.
pub(super) fn finger_of(v: &VNode, i: usize) -> Option<NodeRef> {
    let start = v.id.add_pow2(i);
    if let Some(last) = v.succs.last()
        && start.in_half_open(&v.id, &last.id)
    {
        return successor_in_list(&v.id, &v.succs, &start);
    }
    v.fingers.get(i)
}
