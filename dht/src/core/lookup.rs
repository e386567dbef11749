//! The iterative lookup, as a pure state machine.
//!
//! A lookup walks the ring towards the key's owner by asking one peer at a time: the closest
//! preceding node it knows answers either "the owner is my successor" ([`Step::Done`]) or
//! with a few nodes closer to the key ([`Step::Next`]); those join the candidate list and
//! the best untried candidate is asked next (Stoica et al., *Chord*, §4.3, iterative style;
//! the shape follows rust-libp2p kad's `ClosestPeersIter`). The machine decides whom to ask
//! and when it is over; the [`Dht`](super::Dht) sends the requests, times them out and feeds
//! the answers back:
//!
//! - [`Lookup::next`] → [`Next::Ask`] (send a `FindStep` to this peer), [`Next::Waiting`]
//!   (the step is in flight) or [`Next::Finished`];
//! - [`Lookup::on_success`] with the answer of the peer asked;
//! - [`Lookup::on_failure`] when it timed out or refused.
//!
//! One step is in flight at a time (α = 1, as in Chord): a lookup costs one message per hop.
//! Time does not enter the machine: request timeouts are the core's own timers, which turn
//! into [`Lookup::on_failure`].
//!
//! Rules that keep a lookup bounded and making progress:
//! - a candidate is accepted only if it is strictly closer to the key than the node that
//!   named it (so a lying or stale peer cannot send the lookup backwards or in circles),
//!   and never this peer itself nor a node already asked;
//! - at most [`MAX_LOOKUP_CANDIDATES`] candidates are kept, best first;
//! - the lookup fails after [`MAX_LOOKUP_HOPS`] requests or when more than `retries`
//!   requests failed;
//! - a peer whose request timed out is left out of the rest of the lookup with all its
//!   virtual nodes, however many other peers still name them, and a `Done` naming it as
//!   the owner, or an answer whose closest node before the key is one of its virtual
//!   nodes, makes the lookup ask the sender for its successor list ([`Next::AskState`]),
//!   which passes the dead node to the live successor that takes its range over: a dead
//!   peer costs a lookup one timeout, not one per virtual node, and never strands it;
//! - a lookup whose every path died ("stranded": no candidate, no bootstrap peer left, at
//!   least one failure) starts once more from this peer's own routing step, since the dead
//!   peer has been evicted from the tables by then; nodes already asked may be asked again.
//!
//! Rules that keep a lying peer from ending a lookup (with [`Lookup::checked`], which the
//! core sets when its defenses are on). A peer whose virtual node sits between a key and
//! the key's true predecessor (an identity ground for that position: virtual-node ids are
//! hashes of the peer id, so trying key pairs places one anywhere) is asked last, and
//! could otherwise answer "the owner is me". A [`Step::Done`] `{ pred, owner }` from peer
//! `from` is taken only if it is consistent:
//! - `pred` is a virtual node of `from` (the sender is authenticated) at least as close
//!   before the key as the virtual node asked (a peer answers from its own closest one);
//! - the key lies in `(pred, owner]` and `owner != pred` — a ring of one virtual node aside,
//!   which only a peer that knows no other ring member can meet (outside the ring, or
//!   alone in one of its own that is about to merge);
//! - both are real virtual nodes: `id == Id::vnode(peer, i)` for some `i` below the
//!   network's virtual-node count, so a peer can name only positions its identities have.
//!
//! An inconsistent answer is reported by [`Lookup::on_success`], its sender is excluded
//! from the rest of the lookup, and the lookup goes on by another route: it asks the
//! *anchor* — the last node that answered with closer candidates, whose successors
//! include the asked node, or this peer's own virtual node closest before the key — for
//! its successor list ([`Next::AskState`]); the first node in it past the key (skipping
//! excluded peers) is the owner. A list that ends before the key adds its nodes as
//! candidates instead. A later node whose candidates name an excluded peer becomes the
//! anchor asked next. Each anchor is asked once.

use peerlab_overlay::{Id, PeerId};

use crate::message::{MAX_STEP_CANDIDATES, MAX_SUCCESSORS, NodeRef, Step};
use crate::ring::preceding_distance;

/// Candidates a lookup remembers (best first). Enough to route around several dead hops.
pub(crate) const MAX_LOOKUP_CANDIDATES: usize = 16;

/// Hops after which a lookup gives up: far above `log2` of any ring we simulate, so only a
/// routing loop (or a lying peer) reaches it.
pub(crate) const MAX_LOOKUP_HOPS: u32 = 64;

/// What a lookup wants done next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Ask `peer` for a routing step; `node` is the virtual node addressed (`None` for a
    /// bootstrap peer, whose ring position is not known yet).
    Ask {
        /// The peer to send the `FindStep` to.
        peer: PeerId,
        /// The virtual node asked, if known.
        node: Option<NodeRef>,
    },
    /// Ask `node` (on `peer`; possibly this peer itself) for its successor list and hand
    /// it to [`Lookup::on_state`]: a `Done` was refused and the lookup goes on from there.
    AskState {
        /// The peer to send the `GetState` to.
        peer: PeerId,
        /// The virtual node whose successors are wanted.
        node: NodeRef,
    },
    /// A step is in flight; wait for its answer or its failure.
    Waiting,
    /// The lookup is over.
    Finished(Result<Found, Failed>),
}

/// A lookup's result: the key lies in `(pred, owner]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// The virtual node preceding the key (the one that answered last).
    pub(crate) pred: NodeRef,
    /// The key's owner.
    pub(crate) owner: NodeRef,
    /// Path length: requests to other peers, plus the final step to the owner unless the
    /// owner runs on this peer or on the peer that answered last (see the crate docs).
    pub(crate) hops: u32,
}

/// A lookup that ran out of candidates, retries or hops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Failed {
    /// Requests sent.
    pub(crate) hops: u32,
    /// Requests that failed.
    pub(crate) timeouts: u32,
}

#[derive(Clone, Debug)]
enum State {
    /// Ready to ask the next candidate.
    Ready,
    /// A step to `asked` is in flight.
    Waiting { asked: Option<NodeRef> },
    /// A successor list of `anchor` is wanted.
    Successors { anchor: NodeRef },
    /// The owner is known.
    Done { pred: NodeRef, owner: NodeRef },
}

/// One iterative lookup of a ring id.
#[derive(Clone, Debug)]
pub(crate) struct Lookup {
    key: Id,
    me: PeerId,
    retries: u32,
    cands: Vec<NodeRef>,
    bootstrap: Vec<PeerId>,
    tried: Vec<Id>,
    hops: u32,
    timeouts: u32,
    /// The peer that answered the last step (the key's predecessor once done).
    last: Option<PeerId>,
    state: State,
    /// Whether answers are checked, and against how many virtual nodes a peer runs.
    check: Option<Check>,
    /// Peers whose answer was inconsistent: neither asked nor taken as candidates again.
    excluded: Vec<PeerId>,
    /// Peers a request of this lookup timed out at: neither asked nor taken as candidates
    /// again either. A dead peer runs several virtual nodes, and peers that have not
    /// noticed its death yet keep naming them: without this a lookup could spend every
    /// retry on one dead peer. At most `retries + 1` entries (one per timeout), and an
    /// operation's owners found dead by its earlier attempts.
    dead: Vec<PeerId>,
    /// The closest node before the key known to have answered with candidates (or this
    /// peer's own closest virtual node): where a refused `Done` is routed around from.
    anchor: Option<NodeRef>,
    /// Anchors already asked for their successor list.
    anchors_asked: Vec<Id>,
    /// A `Done` was refused: ask the anchor next.
    recover: bool,
}

/// How a lookup checks the answers it gets (module docs).
#[derive(Clone, Copy, Debug)]
struct Check {
    /// Virtual nodes every peer runs (the network's `Config::vnodes`).
    vnodes: u16,
    /// Whether a ring of one virtual node is possible: this peer knows no other ring
    /// member.
    alone: bool,
}

/// Whether `n` is a virtual node its peer really has: `Id::vnode(peer, i)`, `i < vnodes`.
pub(crate) fn is_vnode(n: &NodeRef, vnodes: u16) -> bool {
    (0..vnodes).any(|i| Id::vnode(&n.peer, i) == n.id)
}

impl Lookup {
    /// A lookup of `key` by peer `me` that tolerates `retries` failed requests. With
    /// `bootstrap` peers it asks them (last first) once its candidates run out; a lookup
    /// from inside the ring starts with [`Lookup::start_local`] instead.
    pub(crate) fn new(key: Id, me: PeerId, retries: u32, bootstrap: Vec<PeerId>) -> Lookup {
        Lookup {
            key,
            me,
            retries,
            cands: Vec::new(),
            bootstrap,
            tried: Vec::new(),
            hops: 0,
            timeouts: 0,
            last: None,
            state: State::Ready,
            check: None,
            excluded: Vec::new(),
            dead: Vec::new(),
            anchor: None,
            anchors_asked: Vec::new(),
            recover: false,
        }
    }

    /// Checks every `Done` against the rules in the module docs, for a network whose peers
    /// run `vnodes` virtual nodes each; `alone`: this peer knows no other ring member, so a
    /// ring of one virtual node is possible.
    pub(crate) fn checked(mut self, vnodes: u16, alone: bool) -> Lookup {
        self.check = Some(Check { vnodes, alone });
        self
    }

    /// Leaves `peer` out of this lookup from the start: a peer that answered an earlier
    /// attempt of the same operation with a forgery. A `Done` naming it as the owner is
    /// routed around like a refused one (without blaming its sender), so the lookup ends at
    /// the next holder of the key.
    pub(crate) fn exclude(&mut self, peer: PeerId) {
        if !self.excluded.contains(&peer) {
            self.excluded.push(peer);
        }
    }

    /// Leaves `peer` out of this lookup from the start as if a request of it had timed out
    /// there: an owner an earlier attempt of the same operation found dead. A `Done`
    /// naming it is routed around to the next live successor.
    pub(crate) fn timed_out_at(&mut self, peer: PeerId) {
        if peer != self.me && !self.dead.contains(&peer) {
            self.dead.push(peer);
        }
    }

    /// This peer's own virtual node closest before the key: the anchor a refused first
    /// `Done` is routed around from. Set before [`Lookup::start_local`].
    pub(crate) fn set_anchor(&mut self, node: Option<NodeRef>) {
        self.anchor = node;
    }

    /// The id looked up.
    pub(crate) fn key(&self) -> Id {
        self.key
    }

    /// Seeds the lookup with this peer's own routing step (free: no message).
    pub(crate) fn start_local(&mut self, step: Option<Step>) {
        match step {
            // An owner known to lie (see `exclude`) or found dead: go past it.
            Some(Step::Done { owner, .. }) if self.left_out(&owner.peer) => {
                self.recover = true;
            }
            Some(Step::Done { pred, owner }) => self.state = State::Done { pred, owner },
            Some(Step::Next { candidates }) => self.merge(candidates, None),
            None => {}
        }
    }

    /// What to do next. `restart` is this peer's own routing step for the key, asked only
    /// when the lookup is stranded (`None` when this peer is out of the ring).
    pub(crate) fn next(&mut self, restart: impl FnOnce(&Id) -> Option<Step>) -> Next {
        match self.state {
            State::Waiting { .. } | State::Successors { .. } => return Next::Waiting,
            State::Done { pred, owner } => return Next::Finished(Ok(self.found(pred, owner))),
            State::Ready => {}
        }
        if self.hops >= MAX_LOOKUP_HOPS || self.timeouts > self.retries {
            return Next::Finished(Err(self.failed()));
        }
        if std::mem::take(&mut self.recover)
            && let Some(a) = self.anchor
            && !self.anchors_asked.contains(&a.id)
            && !self.left_out(&a.peer)
        {
            self.anchors_asked.push(a.id);
            if a.peer != self.me {
                self.hops += 1;
            }
            self.state = State::Successors { anchor: a };
            return Next::AskState {
                peer: a.peer,
                node: a,
            };
        }
        let stranded = self.cands.is_empty()
            && self.bootstrap.is_empty()
            && (self.timeouts > 0 || !self.excluded.is_empty());
        if stranded && let Some(step) = restart(&self.key) {
            self.tried.clear();
            match step {
                // Our own tables lead to a peer caught lying: no route past it is left.
                Step::Done { owner, .. } if self.excluded.contains(&owner.peer) => {
                    return Next::Finished(Err(self.failed()));
                }
                Step::Done { pred, owner } => {
                    self.state = State::Done { pred, owner };
                    return Next::Finished(Ok(self.found(pred, owner)));
                }
                Step::Next { candidates } => self.merge(candidates, None),
            }
        }
        let (peer, node) = if !self.cands.is_empty() {
            let c = self.cands.remove(0);
            self.tried.push(c.id);
            (c.peer, Some(c))
        } else if let Some(b) = self.bootstrap.pop() {
            (b, None)
        } else {
            return Next::Finished(Err(self.failed()));
        };
        self.hops += 1;
        self.state = State::Waiting { asked: node };
        Next::Ask { peer, node }
    }

    /// The peer asked answered `step`. Returns whether the answer broke a protocol rule:
    /// too many candidates (the surplus is ignored), or an inconsistent `Done` (refused;
    /// the lookup goes on around its sender, see the module docs).
    pub(crate) fn on_success(&mut self, from: PeerId, step: Step) -> bool {
        let State::Waiting { asked } = self.state else {
            return false;
        };
        match step {
            Step::Done { pred, owner } => {
                if self.check.is_some() && self.excluded.contains(&owner.peer) {
                    // An owner this lookup caught lying: routed around, the answer is not
                    // the sender's fault.
                    self.recover = true;
                    self.state = State::Ready;
                    return false;
                }
                if !self.consistent(from, asked, &pred, &owner) {
                    self.excluded.push(from);
                    self.cands.retain(|c| c.peer != from);
                    self.recover = true;
                    self.state = State::Ready;
                    return true;
                }
                if self.dead.contains(&owner.peer) {
                    // A consistent answer naming an owner found dead, which the sender has
                    // not noticed yet: the sender is the dead node's predecessor, and its
                    // successor list goes past it.
                    if let Some(a) = asked {
                        self.anchor = Some(a);
                    }
                    self.recover = true;
                    self.state = State::Ready;
                    return false;
                }
                self.last = Some(from);
                self.state = State::Done { pred, owner };
                false
            }
            Step::Next { candidates } => {
                self.last = Some(from);
                self.state = State::Ready;
                // Only the first MAX_STEP_CANDIDATES are read; a longer list is an offence.
                let malformed = candidates.len() > MAX_STEP_CANDIDATES;
                let c: Vec<NodeRef> = candidates.into_iter().take(MAX_STEP_CANDIDATES).collect();
                if asked.is_some() {
                    self.anchor = asked;
                    // A node that leads to a peer caught lying sits right before it: its
                    // successors pass the liar. So does a node whose closest node before the
                    // key is a peer found dead: the key lies past the dead node, which the
                    // answering one (its predecessor) has not noticed yet, and the only way
                    // on is through that node's successor list.
                    let key = self.key;
                    let closest_dead = c
                        .iter()
                        .min_by_key(|n| preceding_distance(&n.id, &key))
                        .is_some_and(|n| self.dead.contains(&n.peer));
                    if closest_dead || c.iter().any(|n| self.excluded.contains(&n.peer)) {
                        self.recover = true;
                    }
                }
                self.merge(c, asked.map(|a| a.id));
                malformed
            }
        }
    }

    /// Whether `Done { pred, owner }` from `from`, asked at `asked`, keeps the rules (module
    /// docs). Always true without [`Lookup::checked`].
    fn consistent(
        &self,
        from: PeerId,
        asked: Option<NodeRef>,
        pred: &NodeRef,
        owner: &NodeRef,
    ) -> bool {
        let Some(check) = self.check else {
            return true;
        };
        if pred.peer != from {
            return false;
        }
        if let Some(a) = asked
            && preceding_distance(&pred.id, &self.key) > preceding_distance(&a.id, &self.key)
        {
            return false;
        }
        let spans = if pred.id == owner.id {
            check.alone && pred == owner
        } else {
            self.key.in_half_open(&pred.id, &owner.id)
        };
        spans && is_vnode(pred, check.vnodes) && is_vnode(owner, check.vnodes)
    }

    /// The anchor asked after a refused `Done` answered with its successor list (`from`:
    /// the authenticated sender). Returns whether the list broke a rule (a node that is not
    /// a real virtual node; ignored).
    pub(crate) fn on_state(&mut self, from: PeerId, succs: Vec<NodeRef>) -> bool {
        let State::Successors { anchor } = self.state else {
            return false;
        };
        self.state = State::Ready;
        self.last = Some(from);
        let check = self.check;
        let mut bad = false;
        let mut prev = anchor;
        let mut before = Vec::new();
        for s in succs.into_iter().take(MAX_SUCCESSORS) {
            if self.left_out(&s.peer) || s.id == prev.id {
                continue;
            }
            if check.is_some_and(|c| !is_vnode(&s, c.vnodes)) {
                bad = true;
                continue;
            }
            if self.key.in_half_open(&prev.id, &s.id) {
                self.state = State::Done {
                    pred: prev,
                    owner: s,
                };
                return bad;
            }
            before.push(s);
            prev = s;
        }
        // The list ends before the key: what it knows closer than the anchor is worth asking.
        self.merge(before, Some(anchor.id));
        bad
    }

    /// The peer asked did not answer in time (`dead`: that peer), or refused (`None`: the
    /// virtual node asked is gone, its peer may run others). A dead peer is left out of the
    /// rest of the lookup, all its virtual nodes with it, and a `Done` naming it as the
    /// owner is routed around to the next live successor.
    pub(crate) fn on_failure(&mut self, dead: Option<PeerId>) {
        if matches!(self.state, State::Waiting { .. } | State::Successors { .. }) {
            self.state = State::Ready;
        }
        self.timeouts += 1;
        if let Some(p) = dead {
            self.timed_out_at(p);
            self.cands.retain(|c| c.peer != p);
        }
    }

    /// Drops candidates known to be dead.
    pub(crate) fn remove_where(&mut self, dead: impl Fn(&NodeRef) -> bool) {
        self.cands.retain(|c| !dead(c));
    }

    /// Whether `peer` is out of this lookup: caught lying, or timed out.
    fn left_out(&self, peer: &PeerId) -> bool {
        self.excluded.contains(peer) || self.dead.contains(peer)
    }

    fn found(&self, pred: NodeRef, owner: NodeRef) -> Found {
        // The path ends at the owner: reaching it costs one more message unless it runs on
        // this peer or on the peer that answered last (own virtual nodes are free).
        let hops = if owner.peer != self.me && Some(owner.peer) != self.last {
            self.hops + 1
        } else {
            self.hops
        };
        Found { pred, owner, hops }
    }

    fn failed(&self) -> Failed {
        Failed {
            hops: self.hops,
            timeouts: self.timeouts,
        }
    }

    fn merge(&mut self, new: Vec<NodeRef>, bound: Option<Id>) {
        let key = self.key;
        for c in new {
            // Progress: only nodes strictly closer to the key than the one that answered.
            if let Some(b) = bound
                && preceding_distance(&c.id, &key) >= preceding_distance(&b, &key)
            {
                continue;
            }
            if c.peer == self.me
                || self.tried.contains(&c.id)
                || self.cands.contains(&c)
                || self.left_out(&c.peer)
            {
                continue;
            }
            self.cands.push(c);
        }
        self.cands.sort_by_key(|c| preceding_distance(&c.id, &key));
        self.cands.truncate(MAX_LOOKUP_CANDIDATES);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ring::{IdealRing, closest_preceding};

    /// The routing step node `i` of an ideal ring answers (one virtual node per peer).
    fn answer(ring: &IdealRing, i: usize, key: &Id, r: usize) -> Step {
        let view = ring.view(i, r);
        let me = ring.nodes()[i];
        let s = view.succs[0];
        if key.in_half_open(&me.id, &s.id) {
            return Step::Done { pred: me, owner: s };
        }
        let all = view
            .succs
            .iter()
            .chain(view.fingers.nodes())
            .chain(std::iter::once(&view.pred));
        Step::Next {
            candidates: closest_preceding(&me.id, key, all, MAX_STEP_CANDIDATES),
        }
    }

    fn ring_of(n: u64) -> IdealRing {
        IdealRing::new(
            (0..n)
                .map(|p| {
                    let peer = PeerId::synthetic(p);
                    NodeRef {
                        id: Id::vnode(&peer, 0),
                        peer,
                    }
                })
                .collect(),
        )
    }

    fn index_of(ring: &IdealRing, node: &NodeRef) -> usize {
        ring.nodes().iter().position(|n| n == node).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// In an ideal ring every lookup ends at the key's true owner, within `log2 N + 2`
        /// requests, and never asks a node twice; checked, no honest answer is refused.
        #[test]
        fn ideal_ring_lookup_finds_owner_without_asking_twice(
            n in 2u64..200,
            start in any::<prop::sample::Index>(),
            key in any::<[u8; 20]>(),
            checked in any::<bool>(),
        ) {
            let ring = ring_of(n);
            let key = Id(key);
            let r = 4;
            let i = start.index(ring.len());
            let me = ring.nodes()[i].peer;
            let mut l = Lookup::new(key, me, 4, Vec::new());
            if checked {
                l = l.checked(1, false);
            }
            l.start_local(Some(answer(&ring, i, &key, r)));
            let mut asked = Vec::new();
            let found = loop {
                match l.next(|_| None) {
                    Next::Ask { peer, node } => {
                        let node = node.expect("asks ring members only");
                        prop_assert_eq!(node.peer, peer);
                        prop_assert!(!asked.contains(&node), "asked {:?} twice", node);
                        asked.push(node);
                        let step = answer(&ring, index_of(&ring, &node), &key, r);
                        prop_assert!(!l.on_success(peer, step), "an honest answer refused");
                    }
                    Next::AskState { .. } => prop_assert!(false, "no answer was refused"),
                    Next::Waiting => prop_assert!(false, "nothing is in flight"),
                    Next::Finished(res) => break res,
                }
            };
            let found = found.expect("an ideal ring answers every lookup");
            prop_assert_eq!(Some(found.owner), ring.successor(&key));
            let bound = 64 - n.leading_zeros() + 2;
            prop_assert!(found.hops <= bound, "{} hops > {}", found.hops, bound);
        }

        /// Whatever the peers answer (random candidates, random owners, random successor
        /// lists, silence), a lookup, checked or not, finishes within `MAX_LOOKUP_HOPS`
        /// requests, never asks itself, and between two restarts never asks the same node
        /// twice.
        #[test]
        fn any_answers_terminate_within_the_hop_bound(
            seed in any::<u64>(),
            retries in 0u32..8,
            answers in prop::collection::vec((0u8..4, any::<[u8; 20]>(), 0usize..6), 0..200),
            checked in any::<bool>(),
        ) {
            let me = PeerId::synthetic(seed);
            let key = Id::hash(&seed.to_be_bytes());
            let node = |b: [u8; 20]| NodeRef { id: Id(b), peer: PeerId::synthetic(b[0] as u64 % 16) };
            let bootstrap = (100..104).map(PeerId::synthetic).collect();
            let mut l = Lookup::new(key, me, retries, bootstrap);
            if checked {
                l = l.checked(2, false);
                l.set_anchor(Some(node(Id::hash(b"anchor").0)));
            }
            let mut answers = answers.into_iter();
            let mut asked: Vec<Id> = Vec::new();
            let mut requests = 0u32;
            loop {
                let restart = |_: &Id| {
                    Some(Step::Next { candidates: vec![node(Id::hash(b"r").0)] })
                };
                match l.next(restart) {
                    Next::Ask { peer, node: n } => {
                        requests += 1;
                        prop_assert!(requests <= MAX_LOOKUP_HOPS);
                        prop_assert_ne!(peer, me);
                        if let Some(n) = n {
                            if asked.contains(&n.id) {
                                // Only a restart (after a failure or a refused answer) may
                                // ask a node again.
                                prop_assert!(l.timeouts > 0 || !l.excluded.is_empty());
                                asked.clear();
                            }
                            asked.push(n.id);
                        }
                        let (kind, b, count) = answers.next().unwrap_or((0, [0; 20], 0));
                        match kind {
                            0 => l.on_failure(Some(peer)),
                            1 => {
                                l.on_success(peer, Step::Done { pred: node(b), owner: node(b) });
                            }
                            _ => {
                                let candidates = (0..count)
                                    .map(|j| { let mut c = b; c[19] = c[19].wrapping_add(j as u8); node(c) })
                                    .collect();
                                l.on_success(peer, Step::Next { candidates });
                            }
                        }
                    }
                    Next::AskState { peer, .. } => {
                        prop_assert!(
                            checked || l.timeouts > 0,
                            "only a checked lookup, or one that met a dead peer, routes around"
                        );
                        if peer != me {
                            requests += 1;
                        }
                        prop_assert!(requests <= MAX_LOOKUP_HOPS);
                        let (kind, b, count) = answers.next().unwrap_or((0, [0; 20], 0));
                        if kind == 0 {
                            l.on_failure(Some(peer));
                        } else {
                            let succs = (0..count)
                                .map(|j| { let mut c = b; c[0] = c[0].wrapping_add(j as u8); node(c) })
                                .collect();
                            l.on_state(peer, succs);
                        }
                    }
                    Next::Waiting => prop_assert!(false, "nothing is in flight"),
                    Next::Finished(_) => break,
                }
            }
        }
    }

    /// Virtual node `i` of synthetic peer `p`.
    fn vn(p: u64, i: u16) -> NodeRef {
        let peer = PeerId::synthetic(p);
        NodeRef {
            id: Id::vnode(&peer, i),
            peer,
        }
    }

    /// A real virtual node (of peers 10 and up, two each) after which `key` lies in
    /// `(after, node]`.
    fn node_past(after: &Id, key: &Id) -> NodeRef {
        (10..)
            .flat_map(|p| [vn(p, 0), vn(p, 1)])
            .find(|n| key.in_half_open(after, &n.id) && n.id != *key)
            .unwrap()
    }

    /// A checked lookup by peer 1 (two virtual nodes a peer) of a key just past `a`, which
    /// it has asked: what it asks next after `a` answers `step`, and whether the answer
    /// was reported.
    fn after_answer(key: Id, a: NodeRef, step: Step, alone: bool) -> (Lookup, bool, Next) {
        let me = PeerId::synthetic(1);
        let mut l = Lookup::new(key, me, 4, Vec::new()).checked(2, alone);
        l.set_anchor(Some(vn(1, 0)));
        l.start_local(Some(Step::Next {
            candidates: vec![a],
        }));
        assert_eq!(
            l.next(|_| None),
            Next::Ask {
                peer: a.peer,
                node: Some(a)
            }
        );
        let reported = l.on_success(a.peer, step);
        let next = l.next(|_| None);
        (l, reported, next)
    }

    #[test]
    fn a_consistent_done_is_taken() {
        let a = vn(2, 0);
        let key = a.id.wrapping_add(&Id::from_u64(10));
        let owner = node_past(&a.id, &key);
        let (_, reported, next) = after_answer(key, a, Step::Done { pred: a, owner }, false);
        assert!(!reported);
        let Next::Finished(Ok(f)) = next else {
            panic!("{next:?}")
        };
        assert_eq!((f.pred, f.owner), (a, owner));
    }

    #[test]
    fn inconsistent_done_answers_are_refused_and_routed_around() {
        let a = vn(2, 0);
        let key = a.id.wrapping_add(&Id::from_u64(10));
        let owner = node_past(&a.id, &key);
        // A's other virtual node, farther before the key than the one asked.
        let far = vn(2, 1);
        let past_far = node_past(&far.id, &key);
        // A real node, and a key just past it: (a, x] does not hold the key.
        let x = vn(4, 0);
        let key_past_x = x.id.wrapping_add(&Id::from_u64(5));
        let made_up = NodeRef {
            id: key,
            peer: owner.peer,
        };
        let cases = [
            ("the owner is me", key, Step::Done { pred: a, owner: a }),
            (
                "pred of another peer",
                key,
                Step::Done {
                    pred: vn(3, 0),
                    owner,
                },
            ),
            (
                "pred farther than the node asked",
                key,
                Step::Done {
                    pred: far,
                    owner: past_far,
                },
            ),
            (
                "key not in (pred, owner]",
                key_past_x,
                Step::Done { pred: a, owner: x },
            ),
            (
                "owner not a real virtual node",
                key,
                Step::Done {
                    pred: a,
                    owner: made_up,
                },
            ),
            (
                "pred not a real virtual node",
                key,
                Step::Done {
                    pred: NodeRef {
                        id: key.wrapping_sub(&Id::from_u64(1)),
                        peer: a.peer,
                    },
                    owner,
                },
            ),
        ];
        for (what, key, step) in cases {
            let (mut l, reported, next) = after_answer(key, a, step.clone(), false);
            assert!(reported, "{what}");
            // Routed around through this peer's own successor list: the liar is skipped.
            let mine = vn(1, 0);
            assert_eq!(
                next,
                Next::AskState {
                    peer: mine.peer,
                    node: mine
                },
                "{what}"
            );
            let true_owner = node_past(&mine.id, &key);
            assert!(
                !l.on_state(mine.peer, vec![a, vn(2, 1), true_owner]),
                "{what}"
            );
            let Next::Finished(Ok(f)) = l.next(|_| None) else {
                panic!("{what}")
            };
            assert_eq!(f.owner, true_owner, "{what}");
            // Unchecked (defenses off), the same answer ends the lookup.
            let mut u = Lookup::new(key, PeerId::synthetic(1), 4, Vec::new());
            u.start_local(Some(Step::Next {
                candidates: vec![a],
            }));
            let _ = u.next(|_| None);
            assert!(!u.on_success(a.peer, step), "{what}");
            assert!(matches!(u.next(|_| None), Next::Finished(Ok(_))), "{what}");
        }
    }

    #[test]
    fn a_ring_of_one_is_taken_only_by_a_peer_that_knows_no_other_member() {
        let a = vn(2, 0);
        let key = a.id.wrapping_add(&Id::from_u64(10));
        let alone = Step::Done { pred: a, owner: a };
        let (_, reported, next) = after_answer(key, a, alone.clone(), true);
        assert!(!reported);
        assert!(matches!(next, Next::Finished(Ok(f)) if f.owner == a));
        let (_, reported, _) = after_answer(key, a, alone, false);
        assert!(reported);
    }

    #[test]
    fn the_anchor_is_the_last_node_that_led_towards_the_liar() {
        // Peer 3 answers with candidates naming a; a lies; peer 3's successor list, with a
        // skipped, names the owner. Each anchor is asked once.
        let me = PeerId::synthetic(1);
        let a = vn(2, 0);
        let key = a.id.wrapping_add(&Id::from_u64(10));
        let c = vn(3, 0);
        let owner = node_past(&c.id, &key);
        let mut l = Lookup::new(key, me, 4, Vec::new()).checked(2, false);
        l.start_local(Some(Step::Next {
            candidates: vec![c],
        }));
        assert!(matches!(l.next(|_| None), Next::Ask { node: Some(n), .. } if n == c));
        assert!(!l.on_success(
            c.peer,
            Step::Next {
                candidates: vec![a]
            }
        ));
        assert!(matches!(l.next(|_| None), Next::Ask { node: Some(n), .. } if n == a));
        assert!(l.on_success(a.peer, Step::Done { pred: a, owner: a }));
        assert_eq!(
            l.next(|_| None),
            Next::AskState {
                peer: c.peer,
                node: c
            }
        );
        // A made-up entry is skipped and reported; the liar is skipped.
        let fake = NodeRef {
            id: key,
            peer: c.peer,
        };
        assert!(l.on_state(c.peer, vec![fake, a, owner]));
        let Next::Finished(Ok(f)) = l.next(|_| None) else {
            panic!()
        };
        assert_eq!(f.owner, owner);
        assert_eq!(f.hops, 4, "c, a, c's successors, the owner");
    }

    /// A node at ring position `id` of synthetic peer `p`.
    fn at(id: u64, p: u64) -> NodeRef {
        NodeRef {
            id: Id::from_u64(id),
            peer: PeerId::synthetic(p),
        }
    }

    #[test]
    fn a_dead_peer_costs_a_lookup_one_timeout_and_is_routed_around_as_the_owner() {
        let me = PeerId::synthetic(1);
        let key = Id::from_u64(1000);
        // Peer 9 is dead and runs four virtual nodes around the key; peers 3, 4 and 5 live.
        let (d990, d980, d1005) = (at(990, 9), at(980, 9), at(1005, 9));
        let (c, e, f) = (at(970, 3), at(995, 4), at(1010, 5));
        let mut l = Lookup::new(key, me, 4, Vec::new());
        l.start_local(Some(Step::Next {
            candidates: vec![d990, d980, c],
        }));
        assert_eq!(
            l.next(|_| None),
            Next::Ask {
                peer: d990.peer,
                node: Some(d990)
            }
        );
        l.on_failure(Some(d990.peer));
        assert_eq!(
            l.next(|_| None),
            Next::Ask {
                peer: c.peer,
                node: Some(c)
            },
            "the dead peer's other virtual node is not asked"
        );
        // A peer that has not noticed the death names another of its virtual nodes, behind
        // a live one: the live one is asked, the dead one never.
        assert!(!l.on_success(
            c.peer,
            Step::Next {
                candidates: vec![e, d980]
            }
        ));
        assert_eq!(
            l.next(|_| None),
            Next::Ask {
                peer: e.peer,
                node: Some(e)
            },
        );
        // The key's predecessor names the dead peer as the owner: its successor list, the
        // dead peer skipped, gives the live successor that takes its range over.
        assert!(!l.on_success(
            e.peer,
            Step::Done {
                pred: e,
                owner: d1005
            }
        ));
        assert_eq!(
            l.next(|_| None),
            Next::AskState {
                peer: e.peer,
                node: e
            },
            "the sender, the dead owner's predecessor, is asked for its successors"
        );
        assert!(!l.on_state(e.peer, vec![d1005, f]));
        let Next::Finished(Ok(found)) = l.next(|_| None) else {
            panic!("the lookup ends at the live successor")
        };
        assert_eq!((found.pred, found.owner), (e, f));
        assert_eq!(l.timeouts, 1, "one timeout for the dead peer");
    }

    #[test]
    fn a_lookup_passes_a_dead_node_through_its_predecessors_successor_list() {
        // The key lies just past a dead node whose live predecessor has not noticed: the
        // predecessor names the dead node as the closest before the key (its successor), so
        // no candidate leads on. Its successor list does, the dead node skipped.
        let me = PeerId::synthetic(1);
        let key = Id::from_u64(1000);
        let (dead, pred, owner, far) = (at(990, 9), at(970, 3), at(1010, 5), at(500, 6));
        let mut l = Lookup::new(key, me, 4, Vec::new());
        l.start_local(Some(Step::Next {
            candidates: vec![far],
        }));
        assert!(matches!(l.next(|_| None), Next::Ask { node: Some(n), .. } if n == far));
        assert!(!l.on_success(
            far.peer,
            Step::Next {
                candidates: vec![dead, pred]
            }
        ));
        assert!(matches!(l.next(|_| None), Next::Ask { node: Some(n), .. } if n == dead));
        l.on_failure(Some(dead.peer));
        assert!(matches!(l.next(|_| None), Next::Ask { node: Some(n), .. } if n == pred));
        assert!(!l.on_success(
            pred.peer,
            Step::Next {
                candidates: vec![dead]
            }
        ));
        assert_eq!(
            l.next(|_| None),
            Next::AskState {
                peer: pred.peer,
                node: pred
            },
            "the predecessor of the dead node is asked for its successors"
        );
        assert!(!l.on_state(pred.peer, vec![dead, owner]));
        let Next::Finished(Ok(found)) = l.next(|_| None) else {
            panic!("the lookup ends at the dead node's live successor")
        };
        assert_eq!((found.pred, found.owner), (pred, owner));
        assert_eq!(
            (found.hops, l.timeouts),
            (5, 1),
            "far, dead, pred, its list, the owner"
        );
    }

    #[test]
    fn candidates_must_be_closer_than_the_node_that_named_them() {
        let me = PeerId::synthetic(1);
        let key = Id::from_u64(1000);
        let asked = NodeRef {
            id: Id::from_u64(900),
            peer: PeerId::synthetic(2),
        };
        let mut l = Lookup::new(key, me, 4, Vec::new());
        l.start_local(Some(Step::Next {
            candidates: vec![asked],
        }));
        assert_eq!(
            l.next(|_| None),
            Next::Ask {
                peer: asked.peer,
                node: Some(asked)
            }
        );
        assert_eq!(l.next(|_| None), Next::Waiting);
        let behind = NodeRef {
            id: Id::from_u64(800),
            peer: PeerId::synthetic(3),
        };
        let ahead = NodeRef {
            id: Id::from_u64(950),
            peer: PeerId::synthetic(4),
        };
        let myself = NodeRef {
            id: Id::from_u64(990),
            peer: me,
        };
        assert!(!l.on_success(
            asked.peer,
            Step::Next {
                candidates: vec![behind, myself, ahead]
            }
        ));
        assert_eq!(
            l.next(|_| None),
            Next::Ask {
                peer: ahead.peer,
                node: Some(ahead)
            },
            "only the node past the one asked, and never this peer"
        );
        l.on_failure(Some(ahead.peer));
        // Stranded, out of the ring: over.
        assert_eq!(
            l.next(|_| None),
            Next::Finished(Err(Failed {
                hops: 2,
                timeouts: 1
            }))
        );
    }

    #[test]
    fn the_final_step_to_the_owner_counts_unless_it_is_free() {
        let me = PeerId::synthetic(1);
        let other = PeerId::synthetic(2);
        let n = |id, peer| NodeRef {
            id: Id::from_u64(id),
            peer,
        };
        // Own routing step says done, owner on another peer: one hop.
        let mut l = Lookup::new(Id::from_u64(5), me, 1, Vec::new());
        l.start_local(Some(Step::Done {
            pred: n(1, me),
            owner: n(9, other),
        }));
        let Next::Finished(Ok(f)) = l.next(|_| None) else {
            panic!()
        };
        assert_eq!(f.hops, 1);
        // The peer that answered last runs the owner: free.
        let mut l = Lookup::new(Id::from_u64(5), me, 1, vec![other]);
        assert_eq!(
            l.next(|_| None),
            Next::Ask {
                peer: other,
                node: None
            }
        );
        l.on_success(
            other,
            Step::Done {
                pred: n(1, other),
                owner: n(9, other),
            },
        );
        let Next::Finished(Ok(f)) = l.next(|_| None) else {
            panic!()
        };
        assert_eq!(f.hops, 1);
    }
}
