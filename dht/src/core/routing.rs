//! Routing: this peer's own routing step, running [`Lookup`]s, and what their results do.
//!
//! A peer routes across all its virtual nodes' tables at once: its routing step for a key
//! starts from its own virtual node closest before the key and offers the closest
//! preceding nodes of all its tables. Lookups are driven from here: [`Dht::start_lookup`]
//! seeds one, [`Dht::advance_lookup`] sends the requests its machine asks for, and
//! [`Dht::finish_lookup`] hands the result to whoever started it (a client, a storage
//! operation, a join, fix-fingers, a successor resync or a hand-back).

use peerlab_overlay::{Cx, Id, Offence, PeerId};

use super::join::MAX_FALLBACK_PEERS;
use super::lookup::{Found, Lookup, Next};
use super::pending::Pending;
use super::{Dht, Phase, VNode};
use crate::message::{MAX_STEP_CANDIDATES, Message, NodeRef, Step};
use crate::ring::{closest_preceding, preceding_distance};
use crate::{Error, Reply, Route};

/// Why a lookup runs: what its result is for.
#[derive(Clone, Debug)]
pub(super) enum Purpose {
    /// A client's [`Command::Lookup`](crate::Command::Lookup).
    Client { req: u64 },
    /// The owner of a storage operation's key.
    Op { op: u64 },
    /// A joining virtual node's successor.
    Join { vnode: Id },
    /// A finger's start.
    Finger { vnode: Id, index: usize },
    /// The successor of a vnode whose stabilize walk grew long (see
    /// [`WALK_BEFORE_LOOKUP`](super::stabilize::WALK_BEFORE_LOOKUP)).
    Resync { vnode: Id },
    /// The owner of orphaned records to hand back.
    Handback,
}

/// A lookup in flight and what it is for.
#[derive(Clone, Debug)]
pub(super) struct Running {
    pub(super) lookup: Lookup,
    pub(super) purpose: Purpose,
}

/// This peer's joined virtual node closest before `key` (with successors).
fn closest_vnode<'a>(vnodes: &'a [VNode], key: &Id) -> Option<&'a VNode> {
    vnodes
        .iter()
        .filter(|v| v.joined && !v.succs.is_empty())
        .min_by_key(|v| preceding_distance(&v.id, key))
}

/// One routing step over all of `vnodes` (this peer's, `me`), and the virtual nodes of
/// members placed just before `key` (`member_hints`; empty when answering another peer).
fn local_step(vnodes: &[VNode], me: PeerId, key: &Id, hints: &[NodeRef]) -> Option<Step> {
    let v = closest_vnode(vnodes, key)?;
    let s = v.succs[0];
    if key.in_half_open(&v.id, &s.id) {
        return Some(Step::Done {
            pred: NodeRef { id: v.id, peer: me },
            owner: s,
        });
    }
    let all = vnodes
        .iter()
        .filter(|w| w.joined)
        .flat_map(|w| w.succs.iter().chain(w.fingers.nodes()).chain(w.pred.iter()))
        .chain(hints);
    let candidates = closest_preceding(&v.id, key, all, MAX_STEP_CANDIDATES);
    Some(Step::Next { candidates })
}

impl Dht {
    /// One routing step over all of this peer's joined virtual nodes.
    pub(super) fn local_step(&self, key: &Id) -> Option<Step> {
        local_step(&self.vnodes, self.me, key, &[])
    }

    /// [`Dht::local_step`] for a lookup of our own: it may start at a member hint.
    fn own_step(&self, key: &Id) -> Option<Step> {
        local_step(
            &self.vnodes,
            self.me,
            key,
            &self.member_hints.preceding(key),
        )
    }

    pub(super) fn start_lookup(&mut self, cx: &mut Cx<'_, Self>, key: Id, purpose: Purpose) -> u64 {
        // A join starts from the bootstrap peers when no virtual node of ours is in the
        // ring. Otherwise attempts alternate: our own routing state first (it knows the
        // live neighbours after a restart), the bootstrap peers on every other retry (our
        // state may lead only to ourselves once all successors were dropped).
        let external = match purpose {
            Purpose::Join { vnode } => {
                !self.vnodes.iter().any(|v| v.joined)
                    || self
                        .vidx(&vnode)
                        .is_some_and(|vi| self.vnodes[vi].join_attempts % 2 == 1)
            }
            // Our own tables lead back to our own (too far) successor.
            Purpose::Resync { .. } => true,
            _ => false,
        };
        let bootstrap = if external {
            let mut b = self.bootstrap.clone();
            if b.is_empty() {
                b = self.known_peers();
            }
            cx.rng().shuffle(&mut b);
            b
        } else {
            Vec::new()
        };
        self.start_lookup_via(cx, key, purpose, bootstrap)
    }

    /// [`Dht::start_lookup`] starting from `seeds` (from our own tables when empty).
    pub(super) fn start_lookup_via(
        &mut self,
        cx: &mut Cx<'_, Self>,
        key: Id,
        purpose: Purpose,
        seeds: Vec<PeerId>,
    ) -> u64 {
        let id = self.fresh();
        let local = seeds.is_empty();
        let mut lookup = Lookup::new(key, self.me, self.cfg.lookup_retries, seeds);
        if self.cfg.defenses {
            // A ring of one virtual node can answer only a peer that knows no other ring
            // member: outside the ring, or alone in a ring of its own (rings merging).
            let alone = self
                .vnodes
                .iter()
                .filter(|v| v.joined)
                .all(|v| v.succs.iter().all(|s| s.peer == self.me));
            lookup = lookup.checked(self.cfg.vnodes, alone);
        }
        if let Purpose::Op { op } = purpose
            && let Some(o) = self.ops.get(&op)
        {
            for p in &o.liars {
                lookup.exclude(*p);
            }
            for p in &o.dead {
                lookup.timed_out_at(*p);
            }
        }
        if local {
            lookup.set_anchor(closest_vnode(&self.vnodes, &key).map(|v| self.me_at(v.id)));
            lookup.start_local(self.own_step(&key));
        }
        self.lookups.insert(id, Running { lookup, purpose });
        self.advance_lookup(cx, id);
        id
    }

    /// Up to [`MAX_FALLBACK_PEERS`] other peers from this peer's routing tables.
    pub(super) fn known_peers(&self) -> Vec<PeerId> {
        let mut out: Vec<PeerId> = Vec::new();
        let all = self
            .vnodes
            .iter()
            .flat_map(|v| v.succs.iter().chain(v.fingers.nodes()).chain(v.pred.iter()));
        for n in all {
            if out.len() >= MAX_FALLBACK_PEERS {
                break;
            }
            if n.peer != self.me && !out.contains(&n.peer) {
                out.push(n.peer);
            }
        }
        out
    }

    /// Sends the request lookup `id` asks for, or finishes it.
    pub(super) fn advance_lookup(&mut self, cx: &mut Cx<'_, Self>, id: u64) {
        let in_ring = self.in_ring();
        let (vnodes, me, hints) = (&self.vnodes, self.me, &self.member_hints);
        let Some(r) = self.lookups.get_mut(&id) else {
            return;
        };
        // A stranded lookup (its path died) starts again from this peer's own tables (the
        // dead peer is evicted from them by now), rather than fail a lookup the ring can
        // still answer.
        let next = r.lookup.next(|key| {
            if in_ring {
                local_step(vnodes, me, key, &hints.preceding(key))
            } else {
                None
            }
        });
        let key = r.lookup.key();
        match next {
            Next::Ask { peer, node } => {
                let req = self.fresh();
                let msg = Message::FindStep {
                    req,
                    vnode: node.map(|a| a.id),
                    key,
                };
                self.request(
                    cx,
                    peer,
                    req,
                    msg,
                    Pending::Step {
                        lookup: id,
                        asked: node,
                    },
                );
            }
            Next::AskState { peer, node } if peer == self.me => {
                // This peer's own successor list: no message.
                let succs = self
                    .vidx(&node.id)
                    .map(|vi| self.vnodes[vi].succs.clone())
                    .unwrap_or_default();
                if let Some(r) = self.lookups.get_mut(&id) {
                    r.lookup.on_state(peer, succs);
                }
                self.advance_lookup(cx, id);
            }
            Next::AskState { peer, node } => {
                let req = self.fresh();
                let msg = Message::GetState {
                    req,
                    vnode: node.id,
                    pred_only: false,
                };
                self.request(
                    cx,
                    peer,
                    req,
                    msg,
                    Pending::StepState {
                        lookup: id,
                        asked: node,
                    },
                );
            }
            Next::Waiting => {}
            Next::Finished(Ok(found)) => self.finish_lookup(cx, id, Ok(found)),
            Next::Finished(Err(f)) => {
                let e = Error::LookupFailed {
                    hops: f.hops,
                    timeouts: f.timeouts,
                };
                self.finish_lookup(cx, id, Err(e));
            }
        }
    }

    /// The peer asked by lookup `lookup` answered `step`.
    pub(super) fn on_step(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, lookup: u64, step: Step) {
        let Some(r) = self.lookups.get_mut(&lookup) else {
            return;
        };
        let done = matches!(step, Step::Done { .. });
        if r.lookup.on_success(from, step) {
            if done {
                self.counters.refused_steps += 1;
            } else {
                self.counters.malformed += 1;
            }
            self.penalize(cx, from, Offence::Malformed);
        }
        self.advance_lookup(cx, lookup);
    }

    /// The anchor asked by lookup `lookup` after a refused answer sent its successors.
    pub(super) fn on_step_state(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        lookup: u64,
        succs: Vec<NodeRef>,
    ) {
        let Some(r) = self.lookups.get_mut(&lookup) else {
            return;
        };
        if r.lookup.on_state(from, succs) {
            self.counters.malformed += 1;
            self.penalize(cx, from, Offence::Malformed);
        }
        self.advance_lookup(cx, lookup);
    }

    /// The request of lookup `lookup` failed: timed out at `dead`, or refused (`None`).
    pub(super) fn on_step_failed(
        &mut self,
        cx: &mut Cx<'_, Self>,
        lookup: u64,
        dead: Option<PeerId>,
    ) {
        if let Some(r) = self.lookups.get_mut(&lookup) {
            r.lookup.on_failure(dead);
            self.advance_lookup(cx, lookup);
        }
    }

    pub(super) fn finish_lookup(
        &mut self,
        cx: &mut Cx<'_, Self>,
        id: u64,
        res: Result<Found, Error>,
    ) {
        let Some(r) = self.lookups.remove(&id) else {
            return;
        };
        match r.purpose {
            Purpose::Client { req } => {
                self.client_lookups = self.client_lookups.saturating_sub(1);
                let r = res.map(|f| {
                    Reply::Lookup(Route {
                        owner: f.owner.peer,
                        vnode: f.owner.id,
                        hops: f.hops,
                    })
                });
                self.emit(cx, req, r);
            }
            Purpose::Op { op } => {
                self.client_lookups = self.client_lookups.saturating_sub(1);
                match res {
                    Ok(f) => self.send_op(cx, op, f.owner, f.hops),
                    Err(e) => self.fail_op(cx, op, e),
                }
            }
            // A duplicate join of a vnode already in the ring (see `on_join_state`).
            Purpose::Join { vnode } if self.vnode_joined(&vnode) => {}
            Purpose::Join { vnode } => match res {
                Ok(Found { pred, owner, .. }) if owner.id != vnode => {
                    let req = self.fresh();
                    let msg = Message::GetState {
                        req,
                        vnode: owner.id,
                        pred_only: false,
                    };
                    self.request(
                        cx,
                        owner.peer,
                        req,
                        msg,
                        Pending::JoinState {
                            vnode,
                            succ: owner,
                            ask: owner,
                            pred,
                        },
                    );
                }
                Ok(Found { pred, owner, .. }) if owner.peer == self.me && pred.id != vnode => {
                    // The ring still lists this vnode: an earlier run of this peer (same
                    // key, same ids) was in it and others have not noticed the restart.
                    // The predecessor's successor list without ourselves is ours.
                    let req = self.fresh();
                    let msg = Message::GetState {
                        req,
                        vnode: pred.id,
                        pred_only: false,
                    };
                    self.request(
                        cx,
                        pred.peer,
                        req,
                        msg,
                        Pending::JoinState {
                            vnode,
                            succ: owner,
                            ask: pred,
                            pred,
                        },
                    );
                }
                _ => self.retry_join(cx, vnode),
            },
            Purpose::Finger { vnode, index } => {
                let Some(vi) = self.vidx(&vnode) else { return };
                self.vnodes[vi].fixing = false;
                if let Ok(f) = res {
                    let hi = self.set_finger(vi, index, f.owner);
                    self.vnodes[vi].next_finger = hi;
                } else {
                    self.vnodes[vi].next_finger = index + 1;
                }
            }
            Purpose::Resync { vnode } => {
                let Some(vi) = self.vidx(&vnode) else { return };
                self.vnodes[vi].resyncing = false;
                if let Ok(f) = res {
                    self.on_successor_hint(cx, self.me, vnode, f.owner, 0);
                }
            }
            Purpose::Handback => {
                self.handbacks = self.handbacks.saturating_sub(1);
                if let Ok(f) = res {
                    self.hand_back(cx, f.pred, f.owner);
                }
            }
        }
    }

    /// Ends every lookup in flight with `e` (the node is leaving).
    pub(super) fn abort_lookups(&mut self, cx: &mut Cx<'_, Self>, e: &Error) {
        let lookups: Vec<u64> = self.lookups.keys().copied().collect();
        for l in lookups {
            self.finish_lookup(cx, l, Err(e.clone()));
        }
    }

    /// Joins of `vnode` under way: lookups, and requests for the found successor's state.
    #[cfg(test)]
    pub(crate) fn joins_under_way(&self, vnode: Id) -> usize {
        let lookups = self
            .lookups
            .values()
            .filter(|r| matches!(r.purpose, Purpose::Join { vnode: v } if v == vnode))
            .count();
        let states = self
            .pending
            .values()
            .filter(|p| matches!(p.kind, Pending::JoinState { vnode: v, .. } if v == vnode))
            .count();
        lookups + states
    }

    /// Whether a join lookup for `vnode` is running.
    pub(super) fn joining_vnode(&self, vnode: Id) -> bool {
        self.lookups
            .values()
            .any(|r| matches!(r.purpose, Purpose::Join { vnode: v } if v == vnode))
            || self
                .pending
                .values()
                .any(|p| matches!(p.kind, Pending::JoinState { vnode: v, .. } if v == vnode))
    }

    /// Whether this peer can route: joined or joining, with a virtual node in the ring.
    pub(super) fn in_ring(&self) -> bool {
        matches!(self.phase, Phase::Joined | Phase::Joining { .. })
            && self.vnodes.iter().any(|v| v.joined)
    }
}
