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
