//! Member hints: where the overlay's membership says a key's predecessor is.
//!
//! A virtual node's id is `SHA-1(peer id ‖ i)` (`Id::vnode`), so a peer that knows the
//! overlay's live members — the gossip layer's SWIM membership, whose records each member
//! signs — can place every member's virtual nodes on the ring without asking anyone. A
//! lookup that starts from its own finger table walks about ½·log2 N hops, each to a peer
//! the lookup was referred to, and a peer meets a new one at nearly every hop: on a
//! starting 300-node testnet the lookups' hops made a third of all connections. A lookup
//! that starts at the member placed just before its key is answered by that member in one
//! step when membership is right (the idea of one-hop lookups with full membership:
//! Gupta, Liskov & Rodrigues, HotOS 2003).
//!
//! The hints only choose where a lookup starts. Everything after is the iterative lookup
//! as before, with its checks on every answer (`lookup`), so a stale member (dead, or
//! not yet in the ring) costs one timeout or one referral, and a member that lies is
//! routed around like any other liar. Without members (a core on its own, or in a test)
//! lookups start from the finger table as in Chord.
//!
//! # Neighbours at rest
//!
//! The same placement settles most of a ring at rest's stabilization. A stabilize round
//! asks the first successor for its predecessor and successor list — about 1 KB with 20
//! successors, most of what a ring at rest sends. When membership places the head of the
//! successor list a virtual node holds (its first `R` entries, where a record's replicas
//! go; among the members' and this peer's own joined virtual nodes), and the successor's
//! last answer named this node its predecessor, the round could only confirm what both
//! already know: it asks the successor for its predecessor only, a liveness check that
//! finds a dead successor as fast as a full round (a timeout evicts it, and the node
//! stabilizes through the next), and a successor that no longer names this node starts a
//! full round at once. Nothing is *taken* from membership: a member that membership places
//! differently (up but not yet in the ring, or in the ring but not yet a member) leaves
//! the full round to run as in Chord, and a joiner still announces itself by notify and
//! successor hints. After [`ROUNDS_BETWEEN_EXCHANGES`] settled rounds the next is a full
//! one anyway, for the deeper entries of the list. Predecessor checks run as before: they are small, and
//! they are how a dead predecessor's range is taken over (`window`) before membership,
//! whose failure detection takes tens of seconds on a large testnet, reports the death.
//! Repair's offers are not settled this way, not even for a range that holds nothing: an
//! owner that restarted without its providers gets them back from its replicas through
//! that offer. A ring at rest then sends about a fifth of Chord's stabilization bytes and
//! nothing for fingers (`fingers`).

use std::collections::BTreeMap;

use peerlab_overlay::{Id, PeerId};

use super::Dht;
use crate::message::NodeRef;

/// Most peers whose virtual nodes are kept as hints, the gossip layer's own bound on
/// members (`peerlab_gossip::Config::max_members`); members beyond it are simply not
/// hinted at.
pub(crate) const MAX_MEMBER_HINT_PEERS: usize = 10_000;

/// Hints offered to a lookup's first step: the members' virtual nodes just before its
/// key, so that a stale nearest one leaves a second to try.
const MEMBER_HINTS_PER_LOOKUP: usize = 2;

/// Stabilize rounds in a row that membership may settle with a liveness check; the next
/// one is a full round. Four: a ring at rest (32 s rounds on a LAN) still refreshes its
/// successor lists every two minutes or so, while the stabilization bytes of a ring at
/// rest fall about five-fold.
pub(crate) const ROUNDS_BETWEEN_EXCHANGES: u32 = 4;

/// The live members' virtual nodes, by id (this peer's own are never among them).
#[derive(Debug, Default)]
pub(crate) struct MemberHints {
    ring: BTreeMap<Id, PeerId>,
}

impl MemberHints {
    /// Up to [`MEMBER_HINTS_PER_LOOKUP`] hinted virtual nodes preceding `key` (before it on the
    /// ring, wrapping), nearest first.
    pub(crate) fn preceding(&self, key: &Id) -> Vec<NodeRef> {
        self.ring
            .range(..*key)
            .rev()
            .chain(self.ring.range(*key..).rev())
            .take(MEMBER_HINTS_PER_LOOKUP)
            .map(|(id, peer)| NodeRef {
                id: *id,
                peer: *peer,
            })
            .collect()
    }

    /// Whether no member is hinted (a core told of no members).
    pub(crate) fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The first hinted virtual node at or after `start` (wrapping): where membership
    /// places `start`'s successor among the other peers.
    pub(crate) fn successor(&self, start: &Id) -> Option<NodeRef> {
        self.ring
            .range(*start..)
            .chain(self.ring.range(..*start))
            .next()
            .map(|(id, peer)| NodeRef {
                id: *id,
                peer: *peer,
            })
    }
}

impl Dht {
    /// Where membership places the `n` virtual nodes after vnode `vi`, nearest first: the
    /// members' and this peer's other joined virtual nodes.
    fn placed_after(&self, vi: usize, n: usize) -> Vec<NodeRef> {
        let id = self.vnodes[vi].id;
        let mut out: Vec<NodeRef> = self
            .member_hints
            .ring
            .range(id..)
            .chain(self.member_hints.ring.range(..id))
            .filter(|(h, _)| **h != id)
            .take(n)
            .map(|(id, peer)| NodeRef {
                id: *id,
                peer: *peer,
            })
            .chain(self.own_joined_except(id))
            .collect();
        out.sort_by_key(|r| id.distance_to(&r.id));
        out.truncate(n);
        out
    }

    fn own_joined_except(&self, id: Id) -> impl Iterator<Item = NodeRef> + '_ {
        self.vnodes
            .iter()
            .filter(move |v| v.joined && v.id != id)
            .map(|v| self.me_at(v.id))
    }

    /// Whether vnode `vi`'s periodic stabilize round may be settled by a liveness check of
    /// its successor ("Neighbours at rest"): no round or successor hint is pending, its successor's last answer named it
    /// predecessor, membership places the successor list
    /// it holds, and the last few rounds did not all skip. Counts the skip.
    pub(super) fn succs_at_rest(&mut self, vi: usize) -> bool {
        if self.member_hints.is_empty() {
            return false;
        }
        let v = &self.vnodes[vi];
        let settled = v.joined
            && !v.stabilizing
            && v.hint.is_none()
            && v.succs.first().map(|s| s.id) == v.succ_confirmed
            && v.succ_confirmed.is_some()
            && v.succ_rounds_by_members < ROUNDS_BETWEEN_EXCHANGES
            && {
                // The replica set's part of the list: deeper entries follow the
                // successor's own list a round behind, and a change there that moves a
                // replica set comes with the successor's hint (`on_successor_hint`).
                let k = v.succs.len().min(self.cfg.replicas);
                self.placed_after(vi, k) == v.succs[..k]
            };
        let v = &mut self.vnodes[vi];
        if settled {
            v.succ_rounds_by_members += 1;
            self.counters.neighbours_by_members += 1;
        } else {
            v.succ_rounds_by_members = 0;
        }
        settled
    }

    /// Where membership places the successor of `start`, finger `start`'s holder: the
    /// first hinted virtual node at or after it, unless one of this peer's own virtual
    /// nodes lies in between (`fingers`).
    pub(super) fn finger_by_members(&self, start: &Id) -> Option<NodeRef> {
        let f = self.member_hints.successor(start)?;
        let own_between = self
            .vnodes
            .iter()
            .any(|v| v.id == *start || v.id.in_open(start, &f.id));
        (!own_between).then_some(f)
    }

    /// The overlay's membership reports `peer` up: its virtual nodes become lookup hints
    /// (at most `MAX_MEMBER_HINT_PEERS`, 10 000, peers).
    pub fn member_up(&mut self, peer: PeerId) {
        if peer == self.me {
            return;
        }
        let vnodes = usize::from(self.cfg.vnodes);
        let h = &mut self.member_hints;
        if h.ring.get(&Id::vnode(&peer, 0)) == Some(&peer)
            || h.ring.len() >= MAX_MEMBER_HINT_PEERS * vnodes
        {
            return;
        }
        for i in 0..self.cfg.vnodes {
            h.ring.insert(Id::vnode(&peer, i), peer);
        }
    }

    /// The overlay's membership reports `peer` down or gone: no longer a hint, and no
    /// longer a finger (fingers are membership's word too; successors and predecessors
    /// keep their own checks).
    pub fn member_down(&mut self, peer: PeerId) {
        let h = &mut self.member_hints;
        if h.ring.get(&Id::vnode(&peer, 0)) != Some(&peer) {
            return;
        }
        for i in 0..self.cfg.vnodes {
            h.ring.remove(&Id::vnode(&peer, i));
        }
        for v in &mut self.vnodes {
            v.fingers.remove_where(|n| n.peer == peer);
        }
        self.finger_epoch += 1;
    }
}
