//! Shrinking the vulnerability window: acting on a death the moment it is detected.
//!
//! A key is lost when all `R` holders of its replica group die before the group is
//! refilled. With failures arriving at rate `C`, the expected loss grows with the square of
//! the time `W` a group runs short (docs/experiments/chord.md: `E[lost] ≈ 0.216·C³·W²`),
//! so the lever is `W`: the time from a holder's death to the copy that replaces it.
//! Chord's periodic tasks alone make it the sum of a detection and a repair round — up to a
//! repair period to notice, another for the next digest to reach the new replica, and for a
//! dead owner up to a stabilize period before its successor takes the range over. The rules
//! here leave only the detection (a request timing out):
//!
//! - **re-replicate at once**: when a peer is evicted (a request to it timed out: a repair
//!   digest, a lookup hop, a stabilize or check-predecessor query), every virtual node of
//!   this peer whose replica set gained a member sends that member the digest of its range
//!   right away, the same `Offer` the periodic repair sends (the replica asks for what it
//!   lacks). The next live successor is already in the successor list, so no lookup is
//!   needed;
//! - **adopt a dead predecessor's range at once**: each virtual node keeps a stand-in
//!   predecessor ([`VNode::pred_hint`](super::VNode)): the predecessor's own predecessor from
//!   the last check-predecessor answer, or a node that notified it while lying before its
//!   predecessor. When a request to the predecessor times out, the stand-in becomes the
//!   predecessor, so the dead node's range is owned — and offered to this node's replicas —
//!   without waiting for the stand-in's next stabilize and notify (Zave's rectify still
//!   applies: a closer notifier replaces it, and the periodic check evicts it if it is dead
//!   too);
//! - **tell the new successor at once**: a virtual node whose first successor was evicted
//!   notifies the next one right away. That node's predecessor was the dead one, or lies
//!   between; if it still lists a predecessor after the notifier, it checks that
//!   predecessor now rather than at its next check-predecessor tick (one check in flight
//!   per virtual node), and a timeout there hands it the range as above.
//!
//! Each rule costs at most one repair round's messages per eviction; a false suspicion (a
//! slow peer) costs a digest exchange, never data (replicas only ever add copies).

use peerlab_overlay::{Cx, Id, PeerId};

use super::Dht;
use super::pending::Pending;
use crate::message::{Message, NodeRef};

/// What a virtual node looked like before an eviction, to tell what the eviction changed.
pub(super) struct Before {
    id: Id,
    pred: Option<NodeRef>,
    succ: Option<NodeRef>,
    replicas: Vec<PeerId>,
}

impl Dht {
    /// The joined virtual nodes' predecessors, first successors and replica sets.
    pub(super) fn window_snapshot(&self) -> Vec<Before> {
        self.vnodes
            .iter()
            .filter(|v| v.joined)
            .map(|v| Before {
                id: v.id,
                pred: v.pred,
                succ: v.succs.first().copied(),
                replicas: self.replicas_of(v).iter().map(|r| r.peer).collect(),
            })
            .collect()
    }

    /// After evictions: offers each virtual node's range to the replicas it gained (all of
    /// them when the range grew by a dead predecessor's), and notifies a new first
    /// successor.
    pub(super) fn close_window(&mut self, cx: &mut Cx<'_, Self>, before: &[Before]) {
        for b in before {
            let Some(vi) = self.vidx(&b.id) else { continue };
            let v = &self.vnodes[vi];
            if !v.joined {
                continue;
            }
            let succ = v.succs.first().copied();
            if let Some(pred) = v.pred {
                let grew = b.pred.is_some_and(|old| old != pred);
                let targets: Vec<NodeRef> = self
                    .replicas_of(v)
                    .into_iter()
                    .filter(|r| grew || !b.replicas.contains(&r.peer))
                    .collect();
                if !targets.is_empty() {
                    self.counters.prompt_repairs += 1;
                    self.offer_range(cx, pred.id, b.id, &targets);
                }
            }
            if let Some(s) = succ
                && s.peer != self.me
                && b.succ.is_some_and(|old| old.id != s.id)
            {
                self.tell(
                    cx,
                    s.peer,
                    Message::Notify {
                        vnode: s.id,
                        from: self.me_at(b.id),
                    },
                );
            }
        }
    }

    /// `from` notified virtual node `vi` although its predecessor lies between them: keep
    /// `from` as the stand-in and check the predecessor now.
    pub(super) fn suspect_pred(&mut self, cx: &mut Cx<'_, Self>, vi: usize, from: NodeRef) {
        let v = &mut self.vnodes[vi];
        let Some(pred) = v.pred else { return };
        if pred.peer == self.me || from.id == pred.id {
            return;
        }
        v.pred_hint = Some(from);
        let vnode = v.id;
        let checking = self
            .pending
            .values()
            .any(|p| matches!(p.kind, Pending::CheckPred { vnode: w } if w == vnode));
        if !checking {
            self.check_pred(cx, vnode, pred);
        }
    }

    /// Asks `pred`, the predecessor of `vnode`, for its state (a timeout evicts it).
    pub(super) fn check_pred(&mut self, cx: &mut Cx<'_, Self>, vnode: Id, pred: NodeRef) {
        let req = self.fresh();
        self.request(
            cx,
            pred.peer,
            req,
            Message::GetState {
                req,
                vnode: pred.id,
                pred_only: true,
            },
            Pending::CheckPred { vnode },
        );
    }

    /// The predecessor `from` of `vnode` answered a check: its own predecessor is the
    /// stand-in should it die.
    pub(super) fn on_pred_state(&mut self, vnode: Id, from: PeerId, pred_of_pred: Option<NodeRef>) {
        let Some(vi) = self.vidx(&vnode) else { return };
        let v = &mut self.vnodes[vi];
        if v.pred.is_none_or(|p| p.peer != from) {
            return;
        }
        if let Some(h) = pred_of_pred
            && h.id != v.id
            && h.peer != from
        {
            v.pred_hint = Some(h);
        }
    }
}
