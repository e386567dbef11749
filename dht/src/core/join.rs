//! Joining, rejoining and leaving the ring (Zave's corrected protocol).
//!
//! **Join** looks up the new virtual node's own id to find its successor, checks that
//! successor is alive by fetching its state, and copies its successor list; the
//! predecessor starts unknown (Zave, *Reasoning about identifier spaces: how to make Chord
//! correct*, IEEE TSE 2017). The first virtual node of a peer joins through a bootstrap
//! peer; the others join through it (a free first hop). A virtual node whose successors all
//! died rejoins; a peer cut off from every ring for [`LONE_RING_ROUNDS`] starts one of its
//! own and merges it back into any ring a fallback peer knows; rings of several peers that
//! formed apart are unified the same way ([`Dht::unify_rings`]).
//!
//! **Leave** is graceful: the leaving virtual node tells its predecessor and successor
//! (`Leaving`, with its last view, so they patch their pointers) and hands its whole range
//! to its successor, the new owner.

use peerlab_overlay::{Cx, Id, PeerId};

use super::pending::Pending;
use super::routing::Purpose;
use super::{Dht, MAX_INTERNAL_LOOKUPS, Phase, VNode};
use crate::message::{Message, NodeRef};
use crate::ring::{FINGERS, Fingers, IdealRing, first_uncovered};
use crate::{Error, Reply};

/// Attempts to join one virtual node before the join fails.
const MAX_JOIN_ATTEMPTS: u32 = 6;

/// Most bootstrap (fallback) peers kept for joins and rejoins.
pub(super) const MAX_FALLBACK_PEERS: usize = 64;

/// Stabilize rounds a joined peer may spend with no virtual node in the ring before it
/// starts a ring of its own (see [`Dht::join_stragglers`]). When every peer of a small
/// ring dropped every other at once (all requests timed out during a load spike) each
/// rejoins through peers that are out of the ring too, and without this nobody would ever
/// be in a ring again. Ten rounds let a rejoin through a live ring succeed first (it takes
/// one lookup), so a peer only cut off for a moment goes back into the one ring.
pub(super) const LONE_RING_ROUNDS: u32 = 10;

/// Most peers waiting for a ring-unification check (`Dht::unify_rings`, sent by
/// [`Command::CheckRing`](crate::Command::CheckRing)). After a
/// partition heals, membership names every peer of the other side at once; one live peer
/// of the other ring is enough to merge, a few more cover those that fail, and more would
/// only cost lookups.
pub const MAX_UNIFY_CANDIDATES: usize = 16;

impl Dht {
    pub(super) fn create_ring(&mut self) {
        self.ring_epoch += 1;
        let me = self.me;
        let refs: Vec<NodeRef> = self
            .vnodes
            .iter()
            .map(|v| NodeRef { id: v.id, peer: me })
            .collect();
        let ring = IdealRing::new(refs);
        let r = self.cfg.successors;
        for (i, v) in self.vnodes.iter_mut().enumerate() {
            let view = ring.view(i, r);
            v.pred = Some(view.pred);
            v.succs = view.succs;
            v.fingers = view.fingers;
            v.joined = true;
        }
    }

    pub(super) fn retry_join(&mut self, cx: &mut Cx<'_, Self>, vnode: Id) {
        let Some(vi) = self.vidx(&vnode) else { return };
        if self.phase == Phase::Left || self.phase == Phase::Idle || self.vnodes[vi].joined {
            // A failed duplicate join of a vnode another join already placed: nothing to
            // retry.
            return;
        }
        self.vnodes[vi].join_attempts += 1;
        if self.vnodes[vi].join_attempts < MAX_JOIN_ATTEMPTS {
            self.start_lookup(cx, vnode, Purpose::Join { vnode });
            return;
        }
        self.vnodes[vi].join_attempts = 0;
        if let Phase::Joining { req } = self.phase
            && !self.vnodes.iter().any(|v| v.joined)
        {
            self.phase = Phase::Idle;
            self.generation += 1;
            self.emit(
                cx,
                req,
                Err(Error::JoinFailed(
                    "no bootstrap peer led to a live successor".into(),
                )),
            );
        }
        // Otherwise the stabilize tick tries again later (see `join_stragglers`).
    }

    /// Restarts joins of virtual nodes that are out of the ring with no join under way.
    pub(super) fn join_stragglers(&mut self, cx: &mut Cx<'_, Self>) {
        if self.phase == Phase::Joined && !self.vnodes.iter().any(|v| v.joined) {
            self.orphan_rounds += 1;
            if self.orphan_rounds >= LONE_RING_ROUNDS {
                // Every rejoin went through peers out of the ring for many rounds: the
                // ring is gone (or out of reach). Be a ring of our own; `unify_rings`
                // brings it into any other ring a fallback peer knows.
                self.orphan_rounds = 0;
                self.create_ring();
                return;
            }
        } else {
            self.orphan_rounds = 0;
        }
        let idle: Vec<Id> = self
            .vnodes
            .iter()
            .filter(|v| !v.joined)
            .map(|v| v.id)
            .filter(|id| !self.joining_vnode(*id))
            .collect();
        if idle.is_empty() {
            return;
        }
        if !self.vnodes.iter().any(|v| v.joined) && self.bootstrap.is_empty() {
            // Alone with nobody to ask: be a ring of our own until someone joins us.
            self.create_ring();
            return;
        }
        for id in idle {
            self.start_lookup(cx, id, Purpose::Join { vnode: id });
        }
    }

    /// Ring unification (Shafaat, Ghodsi and Haridi, *Handling network partitions and
    /// mergers in structured overlay networks*, P2P 2007): rings that formed apart — a
    /// partition, a restart of every bootstrap peer — become one once a peer looks its own
    /// place up through a peer of the other ring. Each stabilize round this peer takes one
    /// waiting candidate (a peer membership saw come back after declaring it dead,
    /// [`Command::CheckRing`](crate::Command::CheckRing)) and looks the successor of one
    /// of its virtual nodes (in turn) up through it alone. The answer is checked like any
    /// successor hint ([`Dht::on_successor_hint`]: adopted only if it lies between the
    /// virtual node and its successor and answers), and stabilization then zips the two
    /// rings together. Through a peer of our own ring the answer is our successor, and
    /// nothing changes. A ring at rest has no candidates and sends nothing for this.
    ///
    /// A peer whose virtual nodes are each other's only successors (it created the ring and
    /// nobody joined yet, or it started one after losing the ring, see
    /// [`LONE_RING_ROUNDS`]) looks every virtual node up through its fallback peers every
    /// stabilize round. An answer from a peer out of any ring fails and changes nothing.
    pub(super) fn unify_rings(&mut self, cx: &mut Cx<'_, Self>) {
        if self.phase != Phase::Joined {
            return;
        }
        let me = self.me;
        let lone = self
            .vnodes
            .iter()
            .all(|v| v.joined && v.succs.iter().all(|s| s.peer == me));
        let (check, via): (Vec<usize>, Option<PeerId>) = if lone {
            if self.bootstrap.is_empty() {
                return;
            }
            ((0..self.vnodes.len()).collect(), None)
        } else {
            let Some(via) = self.unify_candidates.pop_front() else {
                return;
            };
            self.unify_next = (self.unify_next + 1) % self.vnodes.len();
            (vec![self.unify_next], Some(via))
        };
        for vi in check {
            if self.lookups.len() >= MAX_INTERNAL_LOOKUPS {
                break;
            }
            let v = &mut self.vnodes[vi];
            if !v.joined || v.resyncing {
                continue;
            }
            v.resyncing = true;
            let vnode = v.id;
            let key = vnode.add_pow2(0);
            match via {
                Some(p) => self.start_lookup_via(cx, key, Purpose::Resync { vnode }, vec![p]),
                None => self.start_lookup(cx, key, Purpose::Resync { vnode }),
            };
        }
    }

    /// Queues `peers` for ring-unification checks (see [`Dht::unify_rings`]).
    pub(super) fn check_ring(&mut self, peers: Vec<PeerId>) {
        for p in peers {
            if p != self.me
                && !self.unify_candidates.contains(&p)
                && self.unify_candidates.len() < MAX_UNIFY_CANDIDATES
            {
                self.unify_candidates.push_back(p);
            }
        }
    }

    /// Keeps up to [`MAX_FALLBACK_PEERS`] of `peers` (not this node) to join through.
    pub(super) fn set_bootstrap(&mut self, peers: Vec<PeerId>) {
        let me = self.me;
        self.bootstrap = peers
            .into_iter()
            .filter(|p| *p != me)
            .take(MAX_FALLBACK_PEERS)
            .collect();
    }

    pub(super) fn rejoin_vnode(&mut self, cx: &mut Cx<'_, Self>, vnode: Id) {
        let Some(vi) = self.vidx(&vnode) else { return };
        self.ring_epoch += 1;
        let v = &mut self.vnodes[vi];
        v.joined = false;
        v.succs.clear();
        v.pred = None;
        v.fingers = Fingers::default();
        if !self.vnodes.iter().any(|v| v.joined) && self.bootstrap.is_empty() {
            self.create_ring();
            return;
        }
        self.start_lookup(cx, vnode, Purpose::Join { vnode });
    }

    pub(super) fn on_join_state(
        &mut self,
        cx: &mut Cx<'_, Self>,
        vnode: Id,
        succ: NodeRef,
        list: Vec<NodeRef>,
    ) {
        let Some(vi) = self.vidx(&vnode) else { return };
        if !matches!(self.phase, Phase::Joining { .. } | Phase::Joined) {
            // A late answer to a join that already failed (or a peer that left).
            return;
        }
        if self.vnodes[vi].joined {
            // Another join of this vnode got in first, and stabilization keeps its
            // successors since: this answer's list may predate them (adopting it could move
            // the successor back past nodes that joined in between).
            return;
        }
        self.adopt(cx, vi, succ, &list);
        // `adopt` drops this vnode's own entry, so the head is the true successor.
        let succ = self.vnodes[vi].succs[0];
        if succ.id == vnode {
            // Nothing but ourselves: the answer carried no live successor.
            self.vnodes[vi].succs.clear();
            self.retry_join(cx, vnode);
            return;
        }
        self.ring_epoch += 1;
        let v = &mut self.vnodes[vi];
        v.joined = true;
        v.join_attempts = 0;
        let last = v.succs.last().map_or(v.id, |s| s.id);
        let from = first_uncovered(&v.id, &last);
        self.notify(cx, vnode, succ);
        // The successor's fingers seed this vnode's, unless membership places them: fingers
        // copied from the successor would be held, and a held finger that membership
        // contradicts is checked and looked up (`fingers`).
        if from < FINGERS && succ.peer != self.me && self.member_hints.is_empty() {
            let req = self.fresh();
            let msg = Message::GetFingers {
                req,
                vnode: succ.id,
                from_index: from as u16,
            };
            self.request(cx, succ.peer, req, msg, Pending::Fingers { vnode, from });
        }
        if let Phase::Joining { req } = self.phase {
            if self.vnodes.iter().all(|v| v.joined) {
                self.phase = Phase::Joined;
                self.emit(cx, req, Ok(Reply::Joined));
            } else if self.vnodes.iter().filter(|v| v.joined).count() == 1 {
                // The first virtual node is in: the others join through it (free first hop).
                // Those whose join the stabilize tick restarted meanwhile
                // (`join_stragglers`) have one under way already.
                let rest: Vec<Id> = self
                    .vnodes
                    .iter()
                    .filter(|v| !v.joined)
                    .map(|v| v.id)
                    .filter(|id| !self.joining_vnode(*id))
                    .collect();
                for id in rest {
                    self.start_lookup(cx, id, Purpose::Join { vnode: id });
                }
            }
        }
    }

    /// Sets `succ` followed by `list` as the successor list of vnode `vi`; replicas the
    /// list adds to the vnode's replica set are offered its range at once.
    pub(super) fn adopt(
        &mut self,
        cx: &mut Cx<'_, Self>,
        vi: usize,
        succ: NodeRef,
        list: &[NodeRef],
    ) {
        let r = self.cfg.successors;
        let replicas_before = self.replicas_of(&self.vnodes[vi]);
        let v = &mut self.vnodes[vi];
        let mut out: Vec<NodeRef> = Vec::with_capacity(r);
        for n in std::iter::once(&succ).chain(list.iter()) {
            if out.len() >= r {
                break;
            }
            if n.id == v.id {
                if out.is_empty() {
                    // Our own stale entry at the head (a restart): skip it.
                    continue;
                }
                // The list has gone once round the ring: what follows is a second lap,
                // and a departed node there would circulate from list to list for ever
                // in a ring smaller than the list (nobody ever contacts a list's tail).
                break;
            }
            if !out.iter().any(|o| o.id == n.id) {
                out.push(*n);
            }
        }
        if out.is_empty() {
            out.push(NodeRef {
                id: v.id,
                peer: self.me,
            });
        }
        // Only a new first successor counts as a change for adaptive maintenance: counting
        // every list change kept whole arcs of a growing ring at the fast period. A new
        // replica set is passed back to the predecessor at once instead (below).
        let first_changed = v.succs.first() != out.first();
        v.succs = out;
        // Fingers the successor list now determines need not be stored.
        let last = v.succs.last().map_or(v.id, |s| s.id);
        let lo = first_uncovered(&v.id, &last);
        if v.fingers
            .runs()
            .first()
            .is_some_and(|(i, _)| (*i as usize) < lo)
        {
            v.fingers.remove_below(lo);
        }
        if first_changed {
            self.ring_epoch += 1;
        }
        let v = &self.vnodes[vi];
        let replicas = self.replicas_of(v);
        if replicas == replicas_before || !v.joined {
            return;
        }
        let Some(pred) = v.pred.filter(|p| p.id != v.id) else {
            return;
        };
        let gained: Vec<NodeRef> = replicas
            .into_iter()
            .filter(|n| !replicas_before.iter().any(|b| b.peer == n.peer))
            .collect();
        let (from, to) = (pred.id, v.id);
        if !gained.is_empty() && self.store.holds_any_in(&from, &to) {
            self.counters.prompt_repairs += 1;
            self.offer_range(cx, from, to, &gained);
        }
        // The predecessor's list is this vnode and this list: its replica set has likely
        // changed too. Tell it to stabilize now (a hint naming its own successor), so a
        // joined peer reaches the replica sets before it one round trip per vnode rather
        // than one stabilize round per vnode, backed off at rest (a record put meanwhile
        // kept one replica too few for tens of seconds). The chain ends where replica sets
        // stop changing.
        self.tell(
            cx,
            pred.peer,
            Message::SuccessorHint {
                vnode: pred.id,
                candidate: self.me_at(to),
                forwards: 0,
            },
        );
    }

    pub(super) fn leave(&mut self, cx: &mut Cx<'_, Self>, req: u64) {
        let me = self.me;
        let views: Vec<VNode> = self.vnodes.iter().filter(|v| v.joined).cloned().collect();
        for v in &views {
            let node = NodeRef { id: v.id, peer: me };
            let succs: Vec<NodeRef> = v.succs.iter().filter(|s| s.peer != me).copied().collect();
            let pred = v.pred.filter(|p| p.peer != me);
            if let Some(p) = pred {
                let msg = Message::Leaving {
                    vnode: p.id,
                    leaving: node,
                    pred,
                    succs: succs.clone(),
                };
                cx.send(p.peer, msg);
            }
            if let Some(s) = succs.first() {
                let msg = Message::Leaving {
                    vnode: s.id,
                    leaving: node,
                    pred,
                    succs: succs.clone(),
                };
                cx.send(s.peer, msg);
                // Hand the whole range over; the successor becomes its owner.
                let from = v.pred.map_or(v.id, |p| p.id);
                let keys = self.store.keys_in(&from, &v.id);
                self.push_records(cx, s.peer, &keys);
                let pkeys = self.store.provider_keys_in(&from, &v.id);
                self.push_providers(cx, s.peer, &pkeys, cx.now());
            }
        }
        self.phase = Phase::Left;
        self.generation += 1;
        for v in &mut self.vnodes {
            v.joined = false;
        }
        self.abort_lookups(cx, &Error::Leaving);
        self.emit(cx, req, Ok(Reply::Left));
    }

    pub(super) fn on_leaving(
        &mut self,
        cx: &mut Cx<'_, Self>,
        vnode: Id,
        leaving: NodeRef,
        succs: Vec<NodeRef>,
    ) {
        let Some(vi) = self.vidx(&vnode) else { return };
        let v = &mut self.vnodes[vi];
        if v.pred == Some(leaving) {
            // Rectify: the predecessor's predecessor will notify us once it stabilizes.
            v.pred = None;
        }
        if let Some(pos) = v.succs.iter().position(|s| *s == leaving) {
            let mut list: Vec<NodeRef> = v.succs[..pos].to_vec();
            list.extend(succs.iter().copied());
            list.extend(v.succs[pos + 1..].iter().copied());
            if let Some((&first, rest)) = list.split_first() {
                self.adopt(cx, vi, first, rest);
            }
            // The hand-over came from the leaver; check the new successor at once.
            if pos == 0 {
                self.stabilize_vnode(cx, vnode);
            }
        }
        self.forget_vnode(cx, leaving);
    }
}
