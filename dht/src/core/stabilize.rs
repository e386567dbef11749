//! Stabilization: keeping successors and predecessors right (Zave's corrected protocol).
//!
//! - **stabilize** asks the first *live* successor for its predecessor and successor list;
//!   a successor that does not answer within the request timeout is dropped and the next
//!   one is asked at once; a better successor candidate (the successor's predecessor) is
//!   adopted only after it answered a liveness check, and its answer continues the round,
//!   so a node far behind its true successor walks back one round trip per step;
//! - **notify / rectify**: a node adopts a notifier as predecessor when it has none (a dead
//!   predecessor is cleared by the periodic check) or the notifier lies between the old
//!   predecessor and itself;
//! - **successor hints** name a possible closer successor; the receiver checks a candidate
//!   exactly as stabilize checks a successor's predecessor, and passes a candidate past its
//!   own successor on along the ring (bounded by `MAX_HINT_FORWARDS`);
//! - **check-predecessor** asks each predecessor for its state; silence evicts it.

use peerlab_overlay::{Cx, Id, PeerId};

use super::Dht;
use super::pending::Pending;
use super::routing::Purpose;
use crate::message::{MAX_HINT_FORWARDS, Message, NodeRef};

/// Closer successors a virtual node walks back through, one round trip each, before it also
/// looks its successor up through other peers: after concurrent joins a node can sit
/// hundreds of positions past its true successor (the ring creator's vnodes each start
/// with a quarter of the ring), and a lookup takes O(log N) hops where the walk takes one
/// per node in between.
pub(super) const WALK_BEFORE_LOOKUP: u32 = 8;

impl Dht {
    /// Tells `succ` that this node's virtual node `vnode` may be its predecessor (Chord's
    /// notify).
    pub(super) fn notify(&mut self, cx: &mut Cx<'_, Self>, vnode: Id, succ: NodeRef) {
        self.tell(
            cx,
            succ.peer,
            Message::Notify {
                vnode: succ.id,
                from: self.me_at(vnode),
            },
        );
    }

    pub(super) fn stabilize_vnode(&mut self, cx: &mut Cx<'_, Self>, vnode: Id) {
        let Some(vi) = self.vidx(&vnode) else { return };
        let v = &mut self.vnodes[vi];
        if !v.joined || v.stabilizing {
            return;
        }
        let Some(&s) = v.succs.first() else {
            self.rejoin_vnode(cx, vnode);
            return;
        };
        if let Some(h) = v.hint.take()
            && h.id.in_open(&vnode, &s.id)
        {
            // A hinted closer successor: ask it first (its answer continues the round).
            self.check_candidate(cx, vi, h);
            return;
        }
        v.stabilizing = true;
        let req = self.fresh();
        self.request(
            cx,
            s.peer,
            req,
            Message::GetState {
                req,
                vnode: s.id,
                pred_only: false,
            },
            Pending::Stabilize { vnode, succ: s },
        );
    }

    pub(super) fn on_stabilize_state(
        &mut self,
        cx: &mut Cx<'_, Self>,
        vnode: Id,
        succ: NodeRef,
        pred: Option<NodeRef>,
        list: Vec<NodeRef>,
    ) {
        let Some(vi) = self.vidx(&vnode) else { return };
        if self.moved_closer(vi, &succ) {
            // A hint moved the successor closer while this answer was on its way: it is
            // stale, and adopting it would move the successor back out.
            self.vnodes[vi].stabilizing = false;
            self.stabilize_if_hinted(cx, vi);
            return;
        }
        // The successor knows this node as its predecessor ("Neighbours at rest").
        let confirmed = (pred == Some(self.me_at(vnode))).then_some(succ.id);
        // The closest of the successor's predecessor and a hint that came in meanwhile.
        let v = &mut self.vnodes[vi];
        let mut best = pred.filter(|p| p.id.in_open(&vnode, &succ.id));
        if let Some(h) = v.hint.take()
            && h.id.in_open(&vnode, &succ.id)
            && best.is_none_or(|b| h.id.in_open(&vnode, &b.id))
        {
            best = Some(h);
        }
        if let Some(cand) = best {
            // A better successor: adopt it only once it has answered (Zave). Its answer
            // continues the round, so a node far behind its true successor walks back one
            // round trip per step instead of one stabilize period per step.
            v.walk += 1;
            if v.walk == WALK_BEFORE_LOOKUP && !v.resyncing {
                v.resyncing = true;
                self.start_lookup(cx, vnode.add_pow2(0), Purpose::Resync { vnode });
            }
            let req = self.fresh();
            let msg = Message::GetState {
                req,
                vnode: cand.id,
                pred_only: false,
            };
            self.request(
                cx,
                cand.peer,
                req,
                msg,
                Pending::Candidate {
                    vnode,
                    succ,
                    list,
                    cand,
                },
            );
            return;
        }
        v.walk = 0;
        v.succ_confirmed = confirmed;
        self.adopt(cx, vi, succ, &list);
        self.vnodes[vi].stabilizing = false;
        self.notify(cx, vnode, succ);
    }

    /// Whether vnode `vi`'s first successor is now strictly closer than `succ`, the one a
    /// request in flight was about.
    pub(super) fn moved_closer(&self, vi: usize, succ: &NodeRef) -> bool {
        let v = &self.vnodes[vi];
        v.succs
            .first()
            .is_some_and(|f| f.id != succ.id && f.id.in_open(&v.id, &succ.id))
    }

    /// Asks `cand`, a possible closer successor of vnode `vi`, for its state (the answer
    /// is handled as a stabilize answer from it).
    pub(super) fn check_candidate(&mut self, cx: &mut Cx<'_, Self>, vi: usize, cand: NodeRef) {
        let v = &mut self.vnodes[vi];
        let Some((&succ, rest)) = v.succs.split_first() else {
            return;
        };
        let list = rest.to_vec();
        let vnode = v.id;
        v.stabilizing = true;
        let req = self.fresh();
        self.request(
            cx,
            cand.peer,
            req,
            Message::GetState {
                req,
                vnode: cand.id,
                pred_only: false,
            },
            Pending::Candidate {
                vnode,
                succ,
                list,
                cand,
            },
        );
    }

    /// Starts a stabilize round for a hint that arrived while the last one was in flight.
    pub(super) fn stabilize_if_hinted(&mut self, cx: &mut Cx<'_, Self>, vi: usize) {
        let v = &self.vnodes[vi];
        if v.joined && !v.stabilizing && v.hint.is_some() {
            let id = v.id;
            self.stabilize_vnode(cx, id);
        }
    }

    /// A [`Message::SuccessorHint`] from `from`: `candidate` may be the successor of
    /// `vnode`. A hint from the successor naming itself says its successor list changed
    /// the replica set: stabilize now (one round in flight at a time).
    pub(super) fn on_successor_hint(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        vnode: Id,
        candidate: NodeRef,
        forwards: u8,
    ) {
        let Some(vi) = self.vidx(&vnode) else {
            self.counters.unknown_vnode += 1;
            return;
        };
        let v = &mut self.vnodes[vi];
        if !v.joined || candidate.id == v.id {
            return;
        }
        let Some(&succ) = v.succs.first() else { return };
        if candidate == succ {
            if from == succ.peer && !v.stabilizing {
                self.stabilize_vnode(cx, vnode);
            }
            return;
        }
        if candidate.id == succ.id {
            return;
        }
        if candidate.id.in_open(&vnode, &succ.id) {
            // Whatever the answer, the ring around this vnode is changing.
            self.ring_epoch += 1;
            if v.stabilizing {
                if v.hint.is_none_or(|h| candidate.id.in_open(&vnode, &h.id)) {
                    v.hint = Some(candidate);
                }
            } else {
                self.check_candidate(cx, vi, candidate);
            }
        } else if forwards > 0 {
            // The candidate lies past our successor: its predecessor is further along.
            self.tell(
                cx,
                succ.peer,
                Message::SuccessorHint {
                    vnode: succ.id,
                    candidate,
                    forwards: forwards - 1,
                },
            );
        }
    }

    pub(super) fn on_notify(&mut self, cx: &mut Cx<'_, Self>, vnode: Id, from: NodeRef) {
        let Some(vi) = self.vidx(&vnode) else {
            self.counters.unknown_vnode += 1;
            return;
        };
        let v = &mut self.vnodes[vi];
        if !v.joined || from.id == v.id {
            return;
        }
        let better = match v.pred {
            None => true,
            Some(p) => p == from || from.id.in_open(&p.id, &v.id),
        };
        if !better {
            // `from` takes us for its successor although our predecessor lies between:
            // either it has not met our predecessor yet or our predecessor is dead.
            self.suspect_pred(cx, vi, from);
            return;
        }
        if v.pred == Some(from) {
            return;
        }
        let old = v.pred.replace(from);
        // A node that was alone learns of its first neighbour as a successor too.
        if v.succs.len() == 1 && v.succs[0].id == v.id {
            v.succs = vec![from];
        }
        self.ring_epoch += 1;
        // The displaced predecessor's successor is now `from` (or a node between them):
        // tell it, or it learns so only at its next stabilize round — and when several
        // nodes joined into one gap at once, one node per round.
        if let Some(old) = old
            && old.peer != self.me
            && old.id != from.id
        {
            self.tell(
                cx,
                old.peer,
                Message::SuccessorHint {
                    vnode: old.id,
                    candidate: from,
                    forwards: MAX_HINT_FORWARDS,
                },
            );
        }
        // Hand-off on join: the new predecessor now owns (old, from].
        if let Some(old) = old
            && from.peer != self.me
        {
            let keys = self.store.keys_in(&old.id, &from.id);
            self.push_records(cx, from.peer, &keys);
            let pkeys = self.store.provider_keys_in(&old.id, &from.id);
            self.push_providers(cx, from.peer, &pkeys, cx.now());
            let now = cx.now();
            for k in keys {
                self.store.confirm(&k, now);
            }
        }
    }

    /// One check-predecessor tick: ask every predecessor on another peer for its state
    /// (a timeout evicts it).
    pub(super) fn check_predecessors(&mut self, cx: &mut Cx<'_, Self>) {
        let preds: Vec<(Id, NodeRef)> = self
            .vnodes
            .iter()
            .filter(|v| v.joined)
            .filter_map(|v| v.pred.map(|p| (v.id, p)))
            .filter(|(_, p)| p.peer != self.me)
            .collect();
        for (vnode, p) in preds {
            self.check_pred(cx, vnode, p);
        }
    }

    /// A stabilize round that membership settled (`member_hints`, "Neighbours at rest"):
    /// only asks vnode `vi`'s successor for its predecessor, so that a successor that died
    /// is found (a timeout evicts it and stabilizes through the next) as fast as by a full
    /// round, at a tenth of its bytes (no successor list comes back).
    pub(super) fn check_succ(&mut self, cx: &mut Cx<'_, Self>, vi: usize) {
        let v = &mut self.vnodes[vi];
        let Some(&succ) = v.succs.first() else { return };
        if succ.peer == self.me {
            return;
        }
        v.stabilizing = true;
        let vnode = v.id;
        let req = self.fresh();
        self.request(
            cx,
            succ.peer,
            req,
            Message::GetState {
                req,
                vnode: succ.id,
                pred_only: true,
            },
            Pending::SuccCheck { vnode, succ },
        );
    }

    /// The successor's answer to a settled round's check: if it no longer takes this
    /// vnode for its predecessor, the next round is a full one — at once; a successor hint
    /// that arrived meanwhile is checked now.
    pub(super) fn on_succ_check(
        &mut self,
        cx: &mut Cx<'_, Self>,
        vnode: Id,
        succ: NodeRef,
        pred: Option<NodeRef>,
    ) {
        let Some(vi) = self.vidx(&vnode) else { return };
        self.vnodes[vi].stabilizing = false;
        if pred != Some(self.me_at(vnode)) && self.vnodes[vi].succs.first() == Some(&succ) {
            self.vnodes[vi].succ_confirmed = None;
            self.stabilize_vnode(cx, vnode);
        } else {
            // A successor hint that came in while the check was out.
            self.stabilize_if_hinted(cx, vi);
        }
    }
}
