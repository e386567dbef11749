//! The DHT state machine.
//!
//! Methods by family: constructors ([`Dht::new`], [`Dht::from_ideal`]); getters for the ring
//! view, the store and the counters; the `handle_*` inputs of
//! [`peerlab_overlay::Protocol`]. Requests to this peer's own virtual nodes never leave it:
//! they are served inline, so a peer with several virtual nodes sends no messages to itself.

use std::collections::BTreeMap;
use std::time::Duration;

use peerlab_overlay::{Cx, Id, Instant, PeerId, Protocol};

use crate::message::{
    MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, MAX_FINGER_ENTRIES, MAX_HINT_FORWARDS,
    MAX_PROVIDERS_PER_MESSAGE, MAX_STEP_CANDIDATES, MAX_SUCCESSORS, Message, NodeRef,
    ProviderEntry, Record, Reject, Step, Version,
};
use crate::ring::{
    FINGERS, Fingers, IdealRing, closest_preceding, first_uncovered, preceding_distance,
    successor_in_list,
};
use crate::store::{Applied, Store};
use crate::{Command, Config, Error, Event, Reply, Route};

/// Closer successors a virtual node walks back through, one round trip each, before it also
/// looks its successor up through other peers: after concurrent joins a node can sit
/// hundreds of positions past its true successor (the ring creator's vnodes each start
/// with a quarter of the ring), and a lookup takes O(log N) hops where the walk takes one
/// per node in between.
const WALK_BEFORE_LOOKUP: u32 = 8;

/// Candidates a lookup remembers (best first). Enough to route around several dead hops.
const MAX_LOOKUP_CANDIDATES: usize = 16;

/// Hops after which a lookup gives up: far above `log2` of any ring we simulate, so only a
/// routing loop (or a lying peer) reaches it.
const MAX_LOOKUP_HOPS: u32 = 64;

/// Attempts of a storage operation (a fresh lookup each) before it fails.
const MAX_OP_ATTEMPTS: u32 = 3;

/// Attempts to join one virtual node before the join fails.
const MAX_JOIN_ATTEMPTS: u32 = 6;

/// Most bootstrap (fallback) peers kept for joins and rejoins.
const MAX_FALLBACK_PEERS: usize = 64;

/// Hand-back lookups in flight at once (each moves up to one batch of orphaned records).
const MAX_HANDBACKS: usize = 4;

/// Repair periods a record may go unconfirmed by its owner before it counts as orphaned
/// and is handed back.
const ORPHAN_PERIODS: u32 = 3;

/// Internal (maintenance) lookups in flight at once; beyond it a tick's work is skipped.
const MAX_INTERNAL_LOOKUPS: usize = 1024;

/// Stabilize rounds a joined peer may spend with no virtual node in the ring before it
/// starts a ring of its own (see [`Dht::join_stragglers`]). When every peer of a small
/// ring dropped every other at once (all requests timed out during a load spike) each
/// rejoins through peers that are out of the ring too, and without this nobody would ever
/// be in a ring again. Ten rounds let a rejoin through a live ring succeed first (it takes
/// one lookup), so a peer only cut off for a moment goes back into the one ring.
const LONE_RING_ROUNDS: u32 = 10;

/// The core's timers. Periodic ones carry the generation they were set in, so timers from
/// before a leave (or a rejoin) are recognised as stale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Run stabilize on every virtual node.
    Stabilize(u64),
    /// Refresh one finger per virtual node.
    FixFingers(u64),
    /// Check predecessors are alive.
    CheckPredecessor(u64),
    /// Replica repair and hand-back.
    Repair(u64),
    /// Request `req` may have timed out.
    Request(u64),
}

/// Counters of rejected input and failure detection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests naming a virtual node this peer does not run.
    pub unknown_vnode: u64,
    /// Requests with a finger index outside `0..160`.
    pub bad_finger_index: u64,
    /// Values over the size limit (in requests or pushed batches).
    pub oversized_value: u64,
    /// Writes refused because the store was full.
    pub store_full: u64,
    /// Messages over a list bound.
    pub malformed: u64,
    /// Replies that matched no pending request (late, duplicate or forged).
    pub unexpected_reply: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Peers dropped from the tables after a timeout.
    pub evictions: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Joining { req: u64 },
    Joined,
    Left,
}

#[derive(Clone, Debug)]
struct VNode {
    id: Id,
    joined: bool,
    pred: Option<NodeRef>,
    succs: Vec<NodeRef>,
    fingers: Fingers,
    next_finger: usize,
    stabilizing: bool,
    fixing: bool,
    join_attempts: u32,
    /// The closest successor candidate a [`Message::SuccessorHint`] (or a resync lookup)
    /// named while a stabilize round was in flight; checked when the round ends.
    hint: Option<NodeRef>,
    /// Closer successors adopted in a row by the current stabilize round.
    walk: u32,
    /// Whether a resync lookup of this vnode's successor is in flight.
    resyncing: bool,
}

/// Read-only view of one virtual node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VnodeView {
    /// Ring position.
    pub id: Id,
    /// Whether it is part of the ring.
    pub joined: bool,
    /// Predecessor.
    pub pred: Option<NodeRef>,
    /// Successor list.
    pub succs: Vec<NodeRef>,
    /// All 160 fingers as this node would route with them (`None` where unknown).
    pub fingers: Vec<Option<NodeRef>>,
    /// Distinct stored finger runs.
    pub finger_runs: usize,
    /// Whether a stabilize round is in flight.
    pub stabilizing: bool,
}

#[derive(Clone, Debug)]
enum Purpose {
    Client {
        req: u64,
    },
    Op {
        op: u64,
    },
    Join {
        vnode: Id,
    },
    Finger {
        vnode: Id,
        index: usize,
    },
    /// The successor of a vnode whose stabilize walk grew long (see [`WALK_BEFORE_LOOKUP`]).
    Resync {
        vnode: Id,
    },
    Handback,
}

#[derive(Clone, Debug)]
struct Lookup {
    key: Id,
    purpose: Purpose,
    cands: Vec<NodeRef>,
    bootstrap: Vec<PeerId>,
    tried: Vec<Id>,
    hops: u32,
    timeouts: u32,
    /// The peer that answered the last step (the key's predecessor once done).
    last: Option<PeerId>,
}

#[derive(Clone, Debug)]
enum OpKind {
    Put { key: Id, record: Record },
    Get { key: Id },
    AddProvider { key: Id, entry: ProviderEntry },
    GetProviders { key: Id },
}

impl OpKind {
    fn key(&self) -> Id {
        match self {
            OpKind::Put { key, .. }
            | OpKind::Get { key }
            | OpKind::AddProvider { key, .. }
            | OpKind::GetProviders { key } => *key,
        }
    }
}

#[derive(Clone, Debug)]
struct Op {
    req: u64,
    kind: OpKind,
    attempts: u32,
    route: Option<Route>,
    replicas: Vec<NodeRef>,
    asked_replicas: bool,
}

#[derive(Clone, Debug)]
enum Pending {
    Step {
        lookup: u64,
        asked: Option<NodeRef>,
    },
    Stabilize {
        vnode: Id,
        succ: NodeRef,
    },
    Candidate {
        vnode: Id,
        succ: NodeRef,
        list: Vec<NodeRef>,
        cand: NodeRef,
    },
    JoinState {
        vnode: Id,
        /// The joining vnode's successor as the lookup found it.
        succ: NodeRef,
        /// The vnode whose state was asked for: `succ`, or its predecessor when `succ` is
        /// this very vnode as an earlier run of this peer left it in others' tables.
        ask: NodeRef,
        /// The joining vnode's predecessor as the lookup found it (told once joined).
        pred: NodeRef,
    },
    CheckPred,
    Ping,
    /// Fix-fingers through the current finger: is its predecessor a closer one?
    FingerCheck {
        vnode: Id,
        index: usize,
        cur: NodeRef,
    },
    Fingers {
        vnode: Id,
        from: usize,
    },
    Op {
        op: u64,
        target: NodeRef,
    },
    Offer,
    Handoff {
        keys: Vec<Id>,
    },
}

#[derive(Clone, Debug)]
struct PendingReq {
    to: PeerId,
    kind: Pending,
}

/// A peer's Chord DHT: its virtual nodes, store and in-flight requests.
#[derive(Debug)]
pub struct Dht {
    cfg: Config,
    me: PeerId,
    phase: Phase,
    generation: u64,
    /// The generation whose periodic timers are armed (at most one set per generation).
    timers_armed: Option<u64>,
    vnodes: Vec<VNode>,
    store: Store,
    bootstrap: Vec<PeerId>,
    pending: BTreeMap<u64, PendingReq>,
    lookups: BTreeMap<u64, Lookup>,
    ops: BTreeMap<u64, Op>,
    client_lookups: usize,
    handbacks: usize,
    next_id: u64,
    last_version: u64,
    counters: Counters,
    /// Bumped whenever a successor list, a predecessor or a vnode's membership of the ring
    /// changes (adaptive maintenance: see [`Config::max_backoff`]).
    ring_epoch: u64,
    /// Bumped whenever a finger changes.
    finger_epoch: u64,
    /// Adaptive maintenance state of the periodic tasks, indexed by [`Task`].
    backoff: [Backoff; 4],
    /// Stabilize rounds spent joined with no virtual node in the ring ([`LONE_RING_ROUNDS`]).
    orphan_rounds: u32,
}

/// The periodic maintenance tasks, as indices into [`Dht::backoff`].
#[derive(Clone, Copy, Debug)]
enum Task {
    Stabilize = 0,
    FixFingers = 1,
    CheckPredecessor = 2,
    Repair = 3,
}

/// When a periodic task next does its work (adaptive maintenance).
#[derive(Clone, Copy, Debug)]
struct Backoff {
    /// Periods between two rounds of work now: 1 after a change, doubled after each quiet
    /// round up to [`Config::max_backoff`].
    level: u32,
    /// Periods since the last round of work.
    ticks: u32,
    /// The change counter the last round of work saw.
    epoch: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            level: 1,
            ticks: 0,
            epoch: u64::MAX,
        }
    }
}

impl Dht {
    /// A DHT core for peer `me`, not yet joined (send [`Command::Join`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`].
    pub fn new(cfg: Config, me: PeerId) -> Result<Dht, Error> {
        cfg.validate()?;
        let mut vnodes: Vec<VNode> = (0..cfg.vnodes)
            .map(|i| VNode {
                id: Id::vnode(&me, i),
                joined: false,
                pred: None,
                succs: Vec::new(),
                fingers: Fingers::default(),
                next_finger: 0,
                stabilizing: false,
                fixing: false,
                join_attempts: 0,
                hint: None,
                walk: 0,
                resyncing: false,
            })
            .collect();
        vnodes.sort_by_key(|v| v.id);
        vnodes.dedup_by(|a, b| a.id == b.id);
        let store = Store::new(
            cfg.max_stored_bytes,
            cfg.max_value_size,
            cfg.max_providers_per_key,
        );
        Ok(Dht {
            cfg,
            me,
            phase: Phase::Idle,
            generation: 0,
            timers_armed: None,
            vnodes,
            store,
            bootstrap: Vec::new(),
            pending: BTreeMap::new(),
            lookups: BTreeMap::new(),
            ops: BTreeMap::new(),
            client_lookups: 0,
            handbacks: 0,
            next_id: 1,
            last_version: 0,
            counters: Counters::default(),
            ring_epoch: 0,
            finger_epoch: 0,
            backoff: [Backoff::default(); 4],
            orphan_rounds: 0,
        })
    }

    /// A core already joined to the converged `ring` (which must contain this peer's
    /// virtual nodes): pointers, successor lists and fingers are copied from it. For
    /// simulations at scale; lookups then still run as real messages.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], or [`Error::UnknownVnode`] if a virtual node is missing
    /// from the ring.
    pub fn from_ideal(cfg: Config, me: PeerId, ring: &IdealRing) -> Result<Dht, Error> {
        let mut d = Dht::new(cfg, me)?;
        let r = d.cfg.successors;
        for v in &mut d.vnodes {
            let i = ring.successor_index(&v.id);
            if ring.nodes().get(i).map(|n| n.id) != Some(v.id) {
                return Err(Error::UnknownVnode(v.id));
            }
            let view = ring.view(i, r);
            v.pred = Some(view.pred);
            v.succs = view.succs;
            v.fingers = view.fingers;
            v.joined = true;
        }
        d.phase = Phase::Joined;
        Ok(d)
    }

    // ---- getters -------------------------------------------------------------------

    /// This peer.
    pub fn peer(&self) -> PeerId {
        self.me
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether every virtual node is part of the ring.
    pub fn is_joined(&self) -> bool {
        self.phase == Phase::Joined
    }

    /// Whether the node left gracefully.
    pub fn has_left(&self) -> bool {
        self.phase == Phase::Left
    }

    /// Virtual node ids, ascending.
    pub fn vnode_ids(&self) -> Vec<Id> {
        self.vnodes.iter().map(|v| v.id).collect()
    }

    /// The view of virtual node `id`.
    pub fn vnode(&self, id: &Id) -> Option<VnodeView> {
        let v = self.vnodes.iter().find(|v| v.id == *id)?;
        let fingers = (0..FINGERS).map(|i| finger_of(v, i)).collect();
        Some(VnodeView {
            id: v.id,
            joined: v.joined,
            pred: v.pred,
            succs: v.succs.clone(),
            fingers,
            finger_runs: v.fingers.runs().len(),
            stabilizing: v.stabilizing,
        })
    }

    /// Finger `i` of virtual node `id` as routing would use it.
    ///
    /// # Errors
    /// [`Error::UnknownVnode`], [`Error::BadFingerIndex`].
    pub fn finger(&self, id: &Id, i: usize) -> Result<Option<NodeRef>, Error> {
        let v = self
            .vnodes
            .iter()
            .find(|v| v.id == *id)
            .ok_or(Error::UnknownVnode(*id))?;
        if i >= FINGERS {
            return Err(Error::BadFingerIndex(i.min(u16::MAX as usize) as u16));
        }
        Ok(finger_of(v, i))
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Number of stored records (tombstones included).
    pub fn stored_keys(&self) -> usize {
        self.store.len()
    }

    /// Counters of rejected input and failure detection.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Requests and lookups in flight (for tests that check nothing leaks).
    pub fn in_flight(&self) -> (usize, usize, usize) {
        (self.pending.len(), self.lookups.len(), self.ops.len())
    }

    /// Stores `record` directly (experiment set-up, bypassing the network).
    ///
    /// # Errors
    /// [`Error::ValueTooLarge`], [`Error::StoreFull`].
    pub fn insert_record(
        &mut self,
        key: Id,
        record: Record,
        now: Instant,
    ) -> Result<Applied, Error> {
        self.store.apply(key, record, now)
    }

    /// The peers this virtual node replicates its range to (the first `R − 1` successors
    /// on distinct peers other than this one).
    pub fn replica_set(&self, vnode: &Id) -> Vec<NodeRef> {
        self.vnodes
            .iter()
            .find(|v| v.id == *vnode)
            .map_or_else(Vec::new, |v| self.replicas_of(v))
    }

    fn replicas_of(&self, v: &VNode) -> Vec<NodeRef> {
        let mut out: Vec<NodeRef> = Vec::new();
        for s in &v.succs {
            if out.len() + 1 >= self.cfg.replicas {
                break;
            }
            if s.peer != self.me && !out.iter().any(|o| o.peer == s.peer) {
                out.push(*s);
            }
        }
        out
    }

    // ---- helpers -------------------------------------------------------------------

    fn fresh(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn me_at(&self, id: Id) -> NodeRef {
        NodeRef { id, peer: self.me }
    }

    fn vidx(&self, id: &Id) -> Option<usize> {
        self.vnodes.binary_search_by(|v| v.id.cmp(id)).ok()
    }

    fn jittered(&self, cx: &mut Cx<'_, Self>, period: Duration) -> Duration {
        let j = self.cfg.jitter;
        let f = 1.0 - j + 2.0 * j * cx.rng().unit_f64();
        period.mul_f64(f)
    }

    fn emit(&self, cx: &mut Cx<'_, Self>, req: u64, result: Result<Reply, Error>) {
        cx.emit(Event::Reply { req, result });
    }

    fn in_ring(&self) -> bool {
        matches!(self.phase, Phase::Joined | Phase::Joining { .. })
            && self.vnodes.iter().any(|v| v.joined)
    }

    /// Sends a request (or serves it inline when addressed to this peer) and remembers it.
    fn request(
        &mut self,
        cx: &mut Cx<'_, Self>,
        to: PeerId,
        req: u64,
        msg: Message,
        kind: Pending,
    ) {
        self.pending.insert(req, PendingReq { to, kind });
        if to == self.me {
            if let Some(reply) = self.serve(cx, to, msg) {
                self.on_reply(cx, to, reply);
            }
        } else {
            cx.set_timer(self.cfg.request_timeout, Timer::Request(req));
            cx.send(to, msg);
        }
    }

    /// Sends a one-way message, or handles it inline when addressed to this peer.
    fn tell(&mut self, cx: &mut Cx<'_, Self>, to: PeerId, msg: Message) {
        if to == self.me {
            let _ = self.serve(cx, to, msg);
        } else {
            cx.send(to, msg);
        }
    }

    /// Arms the periodic timers of the current generation, unless they already are.
    fn start_timers(&mut self, cx: &mut Cx<'_, Self>) {
        let g = self.generation;
        if self.timers_armed == Some(g) {
            return;
        }
        self.timers_armed = Some(g);
        let s = self.jittered(cx, self.cfg.stabilize_period);
        cx.set_timer(s, Timer::Stabilize(g));
        let f = self.jittered(cx, self.cfg.fix_fingers_period);
        cx.set_timer(f, Timer::FixFingers(g));
        let c = self.jittered(cx, self.cfg.check_predecessor_period);
        cx.set_timer(c, Timer::CheckPredecessor(g));
        let r = self.jittered(cx, self.cfg.repair_period);
        cx.set_timer(r, Timer::Repair(g));
    }

    /// Drops every pointer to `peer` after it failed to answer.
    fn evict(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId) {
        if peer == self.me {
            return;
        }
        self.counters.evictions += 1;
        self.drop_where(cx, |n| n.peer == peer);
    }

    /// Drops every pointer to one virtual node (it left, or its peer disowned it). Our own
    /// virtual nodes are forgotten only while they are out of the ring (a restarted peer's
    /// stale entries, copied back from others' successor lists).
    fn forget_vnode(&mut self, cx: &mut Cx<'_, Self>, node: NodeRef) {
        if node.peer == self.me && self.vidx(&node.id).is_none_or(|vi| self.vnodes[vi].joined) {
            return;
        }
        self.drop_where(cx, |n| *n == node);
    }

    fn drop_where(&mut self, cx: &mut Cx<'_, Self>, dead: impl Fn(&NodeRef) -> bool) {
        let mut orphaned = Vec::new();
        let mut changed = false;
        for v in &mut self.vnodes {
            let had = !v.succs.is_empty();
            let len = v.succs.len();
            v.succs.retain(|s| !dead(s));
            changed |= v.succs.len() != len;
            if v.pred.is_some_and(|p| dead(&p)) {
                v.pred = None;
                changed = true;
            }
            let runs = v.fingers.runs().len();
            v.fingers.remove_where(&dead);
            changed |= v.fingers.runs().len() != runs;
            if had && v.succs.is_empty() && v.joined {
                orphaned.push(v.id);
            }
        }
        if changed {
            self.ring_epoch += 1;
        }
        for l in self.lookups.values_mut() {
            l.cands.retain(|c| !dead(c));
        }
        for id in orphaned {
            self.rejoin_vnode(cx, id);
        }
    }

    // ---- routing -------------------------------------------------------------------

    /// One routing step over all of this peer's joined virtual nodes.
    fn local_step(&self, key: &Id) -> Option<Step> {
        let v = self
            .vnodes
            .iter()
            .filter(|v| v.joined && !v.succs.is_empty())
            .min_by_key(|v| preceding_distance(&v.id, key))?;
        let s = v.succs[0];
        if key.in_half_open(&v.id, &s.id) {
            return Some(Step::Done {
                pred: self.me_at(v.id),
                owner: s,
            });
        }
        let all = self
            .vnodes
            .iter()
            .filter(|w| w.joined)
            .flat_map(|w| w.succs.iter().chain(w.fingers.nodes()).chain(w.pred.iter()));
        let candidates = closest_preceding(&v.id, key, all, MAX_STEP_CANDIDATES);
        Some(Step::Next { candidates })
    }

    fn start_lookup(&mut self, cx: &mut Cx<'_, Self>, key: Id, purpose: Purpose) -> u64 {
        let id = self.fresh();
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
        let l = Lookup {
            key,
            purpose,
            cands: Vec::new(),
            bootstrap,
            tried: Vec::new(),
            hops: 0,
            timeouts: 0,
            last: None,
        };
        self.lookups.insert(id, l);
        if self.lookups[&id].bootstrap.is_empty() {
            match self.local_step(&key) {
                Some(Step::Done { pred, owner }) => {
                    self.finish_lookup(cx, id, Ok((pred, owner)));
                    return id;
                }
                Some(Step::Next { candidates }) => self.merge_cands(id, candidates, None),
                None => {}
            }
        }
        self.advance_lookup(cx, id);
        id
    }

    /// Up to [`MAX_FALLBACK_PEERS`] other peers from this peer's routing tables.
    fn known_peers(&self) -> Vec<PeerId> {
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

    fn merge_cands(&mut self, id: u64, new: Vec<NodeRef>, bound: Option<Id>) {
        let me = self.me;
        let Some(l) = self.lookups.get_mut(&id) else {
            return;
        };
        let key = l.key;
        for c in new {
            // Progress: only nodes strictly closer to the key than the one that answered.
            if let Some(b) = bound
                && preceding_distance(&c.id, &key) >= preceding_distance(&b, &key)
            {
                continue;
            }
            if c.peer == me || l.tried.contains(&c.id) || l.cands.contains(&c) {
                continue;
            }
            l.cands.push(c);
        }
        l.cands.sort_by_key(|c| preceding_distance(&c.id, &key));
        l.cands.truncate(MAX_LOOKUP_CANDIDATES);
    }

    fn advance_lookup(&mut self, cx: &mut Cx<'_, Self>, id: u64) {
        let Some(l) = self.lookups.get_mut(&id) else {
            return;
        };
        if l.hops >= MAX_LOOKUP_HOPS || l.timeouts > self.cfg.lookup_retries {
            let e = Error::LookupFailed {
                hops: l.hops,
                timeouts: l.timeouts,
            };
            self.finish_lookup(cx, id, Err(e));
            return;
        }
        let key = l.key;
        let stranded = l.cands.is_empty() && l.bootstrap.is_empty() && l.timeouts > 0;
        if stranded && self.in_ring() {
            // A hop timed out and the path it was on has no other candidate left: start
            // again from this peer's own tables (the dead peer is evicted from them by now),
            // rather than fail a lookup the ring can still answer. Nodes that answered may
            // be asked again; the hop and timeout limits bound the restarts.
            if let Some(l) = self.lookups.get_mut(&id) {
                l.tried.clear();
            }
            match self.local_step(&key) {
                Some(Step::Done { pred, owner }) => {
                    self.finish_lookup(cx, id, Ok((pred, owner)));
                    return;
                }
                Some(Step::Next { candidates }) => self.merge_cands(id, candidates, None),
                None => {}
            }
        }
        let req = self.next_id + 1;
        let Some(l) = self.lookups.get_mut(&id) else {
            return;
        };
        let (to, asked) = if !l.cands.is_empty() {
            let c = l.cands.remove(0);
            l.tried.push(c.id);
            (c.peer, Some(c))
        } else if let Some(b) = l.bootstrap.pop() {
            (b, None)
        } else {
            let e = Error::LookupFailed {
                hops: l.hops,
                timeouts: l.timeouts,
            };
            self.finish_lookup(cx, id, Err(e));
            return;
        };
        l.hops += 1;
        self.next_id = req;
        let msg = Message::FindStep {
            req,
            vnode: asked.map(|a| a.id),
            key,
        };
        self.request(cx, to, req, msg, Pending::Step { lookup: id, asked });
    }

    fn on_step(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        lookup: u64,
        asked: Option<NodeRef>,
        step: Step,
    ) {
        let Some(l) = self.lookups.get_mut(&lookup) else {
            return;
        };
        l.last = Some(from);
        match step {
            Step::Done { pred, owner } => self.finish_lookup(cx, lookup, Ok((pred, owner))),
            Step::Next { candidates } => {
                if candidates.len() > MAX_STEP_CANDIDATES {
                    self.counters.malformed += 1;
                }
                let c: Vec<NodeRef> = candidates.into_iter().take(MAX_STEP_CANDIDATES).collect();
                self.merge_cands(lookup, c, asked.map(|a| a.id));
                self.advance_lookup(cx, lookup);
            }
        }
    }

    fn finish_lookup(
        &mut self,
        cx: &mut Cx<'_, Self>,
        id: u64,
        res: Result<(NodeRef, NodeRef), Error>,
    ) {
        let Some(l) = self.lookups.remove(&id) else {
            return;
        };
        // The path ends at the owner: reaching it costs one more message unless it runs on
        // this peer or on the peer that answered last (own virtual nodes are free).
        let hops = match &res {
            Ok((_, o)) if o.peer != self.me && Some(o.peer) != l.last => l.hops + 1,
            _ => l.hops,
        };
        match l.purpose {
            Purpose::Client { req } => {
                self.client_lookups = self.client_lookups.saturating_sub(1);
                let r = res.map(|(_, o)| {
                    Reply::Lookup(Route {
                        owner: o.peer,
                        vnode: o.id,
                        hops,
                    })
                });
                self.emit(cx, req, r);
            }
            Purpose::Op { op } => {
                self.client_lookups = self.client_lookups.saturating_sub(1);
                match res {
                    Ok((_, owner)) => self.send_op(cx, op, owner, hops),
                    Err(e) => self.fail_op(cx, op, e),
                }
            }
            Purpose::Join { vnode } => match res {
                Ok((pred, owner)) if owner.id != vnode => {
                    let req = self.fresh();
                    let msg = Message::GetState {
                        req,
                        vnode: owner.id,
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
                Ok((pred, owner)) if owner.peer == self.me && pred.id != vnode => {
                    // The ring still lists this vnode: an earlier run of this peer (same
                    // key, same ids) was in it and others have not noticed the restart.
                    // The predecessor's successor list without ourselves is ours.
                    let req = self.fresh();
                    let msg = Message::GetState {
                        req,
                        vnode: pred.id,
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
                if let Ok((_, f)) = res {
                    let hi = self.set_finger(vi, index, f);
                    self.vnodes[vi].next_finger = hi;
                } else {
                    self.vnodes[vi].next_finger = index + 1;
                }
            }
            Purpose::Resync { vnode } => {
                let Some(vi) = self.vidx(&vnode) else { return };
                self.vnodes[vi].resyncing = false;
                if let Ok((_, owner)) = res {
                    self.on_successor_hint(cx, vnode, owner, 0);
                }
            }
            Purpose::Handback => {
                self.handbacks = self.handbacks.saturating_sub(1);
                if let Ok((pred, owner)) = res {
                    self.hand_back(cx, pred, owner);
                }
            }
        }
    }

    /// Makes `f` finger `index` of vnode `vi` (and every later finger whose start also
    /// falls in `(n, f]`); returns the first index past that range.
    fn set_finger(&mut self, vi: usize, index: usize, f: NodeRef) -> usize {
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
    fn on_finger_state(
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

    // ---- joining and leaving -----------------------------------------------------------

    fn create_ring(&mut self) {
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

    fn retry_join(&mut self, cx: &mut Cx<'_, Self>, vnode: Id) {
        let Some(vi) = self.vidx(&vnode) else { return };
        if self.phase == Phase::Left || self.phase == Phase::Idle {
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
    fn join_stragglers(&mut self, cx: &mut Cx<'_, Self>) {
        if self.phase == Phase::Joined && !self.vnodes.iter().any(|v| v.joined) {
            self.orphan_rounds += 1;
            if self.orphan_rounds >= LONE_RING_ROUNDS {
                // Every rejoin went through peers out of the ring for many rounds: the
                // ring is gone (or out of reach). Be a ring of our own; `merge_lone_ring`
                // brings it into any other ring a fallback peer knows.
                self.orphan_rounds = 0;
                self.create_ring();
                return;
            }
        } else {
            self.orphan_rounds = 0;
        }
        let idle: Vec<Id> =
            self.vnodes
                .iter()
                .filter(|v| !v.joined)
                .map(|v| v.id)
                .filter(|id| {
                    !self
                        .lookups
                        .values()
                        .any(|l| matches!(l.purpose, Purpose::Join { vnode } if vnode == *id))
                        && !self.pending.values().any(
                            |p| matches!(p.kind, Pending::JoinState { vnode, .. } if vnode == *id),
                        )
                })
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

    /// A peer whose virtual nodes are each other's only successors (a ring of its own: it
    /// created the ring and nobody joined yet, or it started one after losing the ring, see
    /// [`LONE_RING_ROUNDS`]) looks the successor of each vnode up through its fallback
    /// peers every stabilize round. An answer from another ring is checked like any
    /// successor hint and adopted, and stabilization then merges the two rings; an answer
    /// from a peer out of any ring fails and changes nothing.
    fn merge_lone_ring(&mut self, cx: &mut Cx<'_, Self>) {
        if self.phase != Phase::Joined || self.bootstrap.is_empty() {
            return;
        }
        let me = self.me;
        let lone = self
            .vnodes
            .iter()
            .all(|v| v.joined && v.succs.iter().all(|s| s.peer == me));
        if !lone {
            return;
        }
        for vi in 0..self.vnodes.len() {
            if self.lookups.len() >= MAX_INTERNAL_LOOKUPS {
                break;
            }
            let v = &mut self.vnodes[vi];
            if v.resyncing {
                continue;
            }
            v.resyncing = true;
            let vnode = v.id;
            self.start_lookup(cx, vnode.add_pow2(0), Purpose::Resync { vnode });
        }
    }

    /// Keeps up to [`MAX_FALLBACK_PEERS`] of `peers` (not this node) to join through.
    fn set_bootstrap(&mut self, peers: Vec<PeerId>) {
        let me = self.me;
        self.bootstrap = peers
            .into_iter()
            .filter(|p| *p != me)
            .take(MAX_FALLBACK_PEERS)
            .collect();
    }

    fn rejoin_vnode(&mut self, cx: &mut Cx<'_, Self>, vnode: Id) {
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

    fn on_join_state(
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
        self.adopt(vi, succ, &list);
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
        self.tell(
            cx,
            succ.peer,
            Message::Notify {
                vnode: succ.id,
                from: self.me_at(vnode),
            },
        );
        if from < FINGERS && succ.peer != self.me {
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
                let rest: Vec<Id> = self
                    .vnodes
                    .iter()
                    .filter(|v| !v.joined)
                    .map(|v| v.id)
                    .collect();
                for id in rest {
                    self.start_lookup(cx, id, Purpose::Join { vnode: id });
                }
            }
        }
    }

    /// Sets `succ` followed by `list` as the successor list of vnode `vi`.
    fn adopt(&mut self, vi: usize, succ: NodeRef, list: &[NodeRef]) {
        let r = self.cfg.successors;
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
        // Only a new first successor counts as a change for adaptive maintenance: the
        // rest of the list follows it one stabilize round at a time anyway, and counting
        // every far entry would keep whole arcs of a growing ring at the fast period.
        let changed = v.succs.first() != out.first();
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
        if changed {
            self.ring_epoch += 1;
        }
    }

    fn leave(&mut self, cx: &mut Cx<'_, Self>, req: u64) {
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
        let lookups: Vec<u64> = self.lookups.keys().copied().collect();
        for l in lookups {
            self.finish_lookup(cx, l, Err(Error::Leaving));
        }
        self.emit(cx, req, Ok(Reply::Left));
    }

    fn on_leaving(
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
                self.adopt(vi, first, rest);
            }
            // The hand-over came from the leaver; check the new successor at once.
            if pos == 0 {
                self.stabilize_vnode(cx, vnode);
            }
        }
        self.forget_vnode(cx, leaving);
    }

    // ---- stabilization -------------------------------------------------------------

    fn stabilize_vnode(&mut self, cx: &mut Cx<'_, Self>, vnode: Id) {
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
            Message::GetState { req, vnode: s.id },
            Pending::Stabilize { vnode, succ: s },
        );
    }

    fn on_stabilize_state(
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
        self.adopt(vi, succ, &list);
        self.vnodes[vi].stabilizing = false;
        self.tell(
            cx,
            succ.peer,
            Message::Notify {
                vnode: succ.id,
                from: self.me_at(vnode),
            },
        );
    }

    /// Whether vnode `vi`'s first successor is now strictly closer than `succ`, the one a
    /// request in flight was about.
    fn moved_closer(&self, vi: usize, succ: &NodeRef) -> bool {
        let v = &self.vnodes[vi];
        v.succs
            .first()
            .is_some_and(|f| f.id != succ.id && f.id.in_open(&v.id, &succ.id))
    }

    /// Asks `cand`, a possible closer successor of vnode `vi`, for its state (the answer
    /// is handled as a stabilize answer from it).
    fn check_candidate(&mut self, cx: &mut Cx<'_, Self>, vi: usize, cand: NodeRef) {
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
    fn stabilize_if_hinted(&mut self, cx: &mut Cx<'_, Self>, vi: usize) {
        let v = &self.vnodes[vi];
        if v.joined && !v.stabilizing && v.hint.is_some() {
            let id = v.id;
            self.stabilize_vnode(cx, id);
        }
    }

    /// A [`Message::SuccessorHint`]: `candidate` may be the successor of `vnode`.
    fn on_successor_hint(
        &mut self,
        cx: &mut Cx<'_, Self>,
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

    fn on_notify(&mut self, cx: &mut Cx<'_, Self>, vnode: Id, from: NodeRef) {
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
        if !better || v.pred == Some(from) {
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

    // ---- storage -------------------------------------------------------------------

    fn start_op(&mut self, cx: &mut Cx<'_, Self>, req: u64, kind: OpKind) {
        if !self.in_ring() {
            let e = if self.phase == Phase::Left {
                Error::Leaving
            } else {
                Error::NotJoined
            };
            self.emit(cx, req, Err(e));
            return;
        }
        if self.client_lookups >= self.cfg.max_concurrent_lookups {
            self.emit(cx, req, Err(Error::Busy(self.cfg.max_concurrent_lookups)));
            return;
        }
        let op = self.fresh();
        let key = kind.key();
        self.ops.insert(
            op,
            Op {
                req,
                kind,
                attempts: 1,
                route: None,
                replicas: Vec::new(),
                asked_replicas: false,
            },
        );
        self.client_lookups += 1;
        self.start_lookup(cx, key, Purpose::Op { op });
    }

    fn send_op(&mut self, cx: &mut Cx<'_, Self>, op: u64, owner: NodeRef, hops: u32) {
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        o.route = Some(Route {
            owner: owner.peer,
            vnode: owner.id,
            hops,
        });
        let kind = o.kind.clone();
        self.send_op_to(cx, op, owner, &kind);
    }

    fn send_op_to(&mut self, cx: &mut Cx<'_, Self>, op: u64, target: NodeRef, kind: &OpKind) {
        let req = self.fresh();
        let vnode = target.id;
        let msg = match kind.clone() {
            OpKind::Put { key, record } => Message::Put {
                req,
                vnode,
                key,
                record,
            },
            OpKind::Get { key } => Message::Get { req, vnode, key },
            OpKind::AddProvider { key, entry } => Message::AddProvider {
                req,
                vnode,
                key,
                entry,
            },
            OpKind::GetProviders { key } => Message::GetProviders { req, vnode, key },
        };
        self.request(cx, target.peer, req, msg, Pending::Op { op, target });
    }

    fn fail_op(&mut self, cx: &mut Cx<'_, Self>, op: u64, e: Error) {
        if let Some(o) = self.ops.remove(&op) {
            self.emit(cx, o.req, Err(e));
        }
    }

    fn retry_op(&mut self, cx: &mut Cx<'_, Self>, op: u64, e: Error) {
        let in_ring = self.in_ring();
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        if o.attempts >= MAX_OP_ATTEMPTS || !in_ring {
            self.fail_op(cx, op, e);
            return;
        }
        o.attempts += 1;
        o.replicas.clear();
        o.asked_replicas = false;
        let key = o.kind.key();
        self.client_lookups += 1;
        self.start_lookup(cx, key, Purpose::Op { op });
    }

    fn on_op_reply(&mut self, cx: &mut Cx<'_, Self>, op: u64, target: NodeRef, msg: Message) {
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        let route = o.route.unwrap_or(Route {
            owner: target.peer,
            vnode: target.id,
            hops: 0,
        });
        match (msg, &o.kind) {
            (Message::PutAck { stored, .. }, OpKind::Put { .. }) => {
                let req = o.req;
                self.ops.remove(&op);
                self.emit(
                    cx,
                    req,
                    Ok(Reply::Stored {
                        route,
                        version: stored,
                    }),
                );
            }
            (
                Message::GetReply {
                    record, replicas, ..
                },
                OpKind::Get { .. },
            ) => {
                if record.is_none() && !o.asked_replicas {
                    o.asked_replicas = true;
                    o.replicas = replicas
                        .into_iter()
                        .filter(|r| r.peer != target.peer)
                        .take(MAX_SUCCESSORS)
                        .collect();
                }
                if record.is_none() && !o.replicas.is_empty() {
                    let next = o.replicas.remove(0);
                    let kind = o.kind.clone();
                    self.send_op_to(cx, op, next, &kind);
                    return;
                }
                let req = o.req;
                self.ops.remove(&op);
                let version = record.as_ref().map(|r| r.version);
                let value = record.and_then(|r| r.value);
                self.emit(
                    cx,
                    req,
                    Ok(Reply::Value {
                        route,
                        value,
                        version,
                    }),
                );
            }
            (Message::Providers { providers, .. }, kind) => {
                let reply = match kind {
                    OpKind::AddProvider { .. } => Reply::ProviderAdded { route },
                    _ => Reply::Providers {
                        route,
                        providers: providers
                            .into_iter()
                            .take(MAX_PROVIDERS_PER_MESSAGE)
                            .collect(),
                    },
                };
                let req = o.req;
                self.ops.remove(&op);
                self.emit(cx, req, Ok(reply));
            }
            (Message::Rejected { reason, .. }, _) => match reason {
                Reject::UnknownVnode | Reject::NotJoined => {
                    self.forget_vnode(cx, target);
                    self.retry_op(cx, op, Error::Rejected(reason));
                }
                _ => self.fail_op(cx, op, Error::Rejected(reason)),
            },
            _ => self.counters.unexpected_reply += 1,
        }
    }

    /// Pushes records to `to` in bounded batches.
    fn push_records(&mut self, cx: &mut Cx<'_, Self>, to: PeerId, keys: &[Id]) {
        if to == self.me {
            return;
        }
        let mut batch: Vec<(Id, Record)> = Vec::new();
        let mut bytes = 0usize;
        for k in keys {
            let Some(r) = self.store.get(k) else { continue };
            if batch.len() >= MAX_BATCH_ENTRIES || bytes + r.value_len() > MAX_BATCH_BYTES {
                cx.send(
                    to,
                    Message::Store {
                        records: std::mem::take(&mut batch),
                        providers: Vec::new(),
                    },
                );
                bytes = 0;
            }
            bytes += r.value_len();
            batch.push((*k, r.clone()));
        }
        if !batch.is_empty() {
            cx.send(
                to,
                Message::Store {
                    records: batch,
                    providers: Vec::new(),
                },
            );
        }
    }

    fn provider_batch(&self, keys: &[Id], now: Instant) -> Vec<(Id, Vec<ProviderEntry>)> {
        keys.iter()
            .map(|k| {
                let mut p = self.store.providers(k, now);
                p.truncate(MAX_PROVIDERS_PER_MESSAGE);
                (*k, p)
            })
            .filter(|(_, p)| !p.is_empty())
            .collect()
    }

    fn push_providers(&mut self, cx: &mut Cx<'_, Self>, to: PeerId, keys: &[Id], now: Instant) {
        if to == self.me {
            return;
        }
        for chunk in keys.chunks(MAX_BATCH_ENTRIES / 8) {
            let providers = self.provider_batch(chunk, now);
            if !providers.is_empty() {
                cx.send(
                    to,
                    Message::Store {
                        records: Vec::new(),
                        providers,
                    },
                );
            }
        }
    }

    fn merge_providers(&mut self, providers: Vec<(Id, Vec<ProviderEntry>)>, now: Instant) {
        let max_ttl = self.cfg.max_provider_ttl.as_millis() as u64;
        for (k, list) in providers.into_iter().take(MAX_BATCH_ENTRIES) {
            for e in list.into_iter().take(MAX_PROVIDERS_PER_MESSAGE) {
                let ttl = Duration::from_millis(e.ttl_ms.min(max_ttl));
                self.store.add_provider(k, e.provider, now + ttl, now);
            }
        }
    }

    fn is_primary(&self, key: &Id) -> bool {
        self.vnodes
            .iter()
            .any(|v| v.joined && v.pred.is_some_and(|p| key.in_half_open(&p.id, &v.id)))
    }

    fn repair(&mut self, cx: &mut Cx<'_, Self>) {
        let now = cx.now();
        self.store.expire_providers(now);
        let owned: Vec<(Id, Id, Vec<NodeRef>)> = self
            .vnodes
            .iter()
            .filter(|v| v.joined)
            .filter_map(|v| v.pred.map(|p| (p.id, v.id, self.replicas_of(v))))
            .collect();
        for (from, to, replicas) in owned {
            let keys = self.store.keys_in(&from, &to);
            for k in &keys {
                self.store.confirm(k, now);
            }
            let pkeys = self.store.provider_keys_in(&from, &to);
            let providers = self.provider_batch(&pkeys[..pkeys.len().min(MAX_BATCH_ENTRIES)], now);
            let chunks: Vec<&[Id]> = if keys.is_empty() {
                vec![&[][..]]
            } else {
                keys.chunks(MAX_BATCH_ENTRIES).collect()
            };
            for r in replicas {
                for (n, chunk) in chunks.iter().enumerate() {
                    let digest: Vec<(Id, Version)> = chunk
                        .iter()
                        .filter_map(|k| self.store.version(k).map(|v| (*k, v)))
                        .collect();
                    // Provider sets ride on the first offer; the first offer goes out even
                    // when empty, since it is also the replica's liveness check.
                    let p = if n == 0 {
                        providers.clone()
                    } else {
                        Vec::new()
                    };
                    let req = self.fresh();
                    let msg = Message::Offer {
                        req,
                        from,
                        to,
                        digest,
                        providers: p,
                    };
                    self.request(cx, r.peer, req, msg, Pending::Offer);
                }
            }
        }
        // Hand back records nobody has confirmed for a while.
        let stale = now
            .as_micros()
            .saturating_sub(self.cfg.repair_period.as_micros() as u64 * ORPHAN_PERIODS as u64);
        if self.handbacks < MAX_HANDBACKS && self.lookups.len() < MAX_INTERNAL_LOOKUPS {
            let orphans: Vec<Id> = self
                .store
                .records
                .iter()
                .filter(|(_, e)| e.confirmed.as_micros() < stale)
                .map(|(k, _)| *k)
                .filter(|k| !self.is_primary(k))
                .take(MAX_HANDBACKS - self.handbacks)
                .collect();
            for k in orphans {
                self.handbacks += 1;
                // Avoid handing the same record back again before the answer arrives.
                self.store.confirm(&k, now);
                self.start_lookup(cx, k, Purpose::Handback);
            }
        }
    }

    fn hand_back(&mut self, cx: &mut Cx<'_, Self>, pred: NodeRef, owner: NodeRef) {
        if owner.peer == self.me {
            return;
        }
        let mut keys = self.store.keys_in(&pred.id, &owner.id);
        keys.truncate(MAX_BATCH_ENTRIES);
        let mut records = Vec::with_capacity(keys.len());
        let mut bytes = 0;
        for k in &keys {
            if let Some(r) = self.store.get(k) {
                if bytes + r.value_len() > MAX_BATCH_BYTES {
                    break;
                }
                bytes += r.value_len();
                records.push((*k, r.clone()));
            }
        }
        let keys: Vec<Id> = records.iter().map(|(k, _)| *k).collect();
        let req = self.fresh();
        let msg = Message::Handoff {
            req,
            vnode: owner.id,
            records,
        };
        self.request(cx, owner.peer, req, msg, Pending::Handoff { keys });
    }

    // ---- serving requests ------------------------------------------------------------

    fn reject(&mut self, req: u64, reason: Reject) -> Option<Message> {
        match reason {
            Reject::UnknownVnode => self.counters.unknown_vnode += 1,
            Reject::BadFingerIndex => self.counters.bad_finger_index += 1,
            Reject::ValueTooLarge => self.counters.oversized_value += 1,
            Reject::StoreFull => self.counters.store_full += 1,
            Reject::Malformed => self.counters.malformed += 1,
            Reject::NotJoined => {}
        }
        Some(Message::Rejected { req, reason })
    }

    /// Finds an addressed virtual node that can serve, or the reason it cannot.
    fn served_vnode(&self, vnode: &Id) -> Result<usize, Reject> {
        if !self.in_ring() {
            return Err(Reject::NotJoined);
        }
        let vi = self.vidx(vnode).ok_or(Reject::UnknownVnode)?;
        // A virtual node still (re)joining is not in the ring: its empty state must not
        // be taken for a ring member's (a stabilize adopting it would cut the asker's
        // successor list down to this one unjoined entry).
        if !self.vnodes[vi].joined {
            return Err(Reject::NotJoined);
        }
        Ok(vi)
    }

    /// Handles one incoming message; returns the reply to send, if any.
    fn serve(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Message) -> Option<Message> {
        let now = cx.now();
        match msg {
            Message::FindStep { req, vnode, key } => {
                if let Some(v) = vnode
                    && let Err(r) = self.served_vnode(&v)
                {
                    return self.reject(req, r);
                }
                match self.local_step(&key) {
                    Some(step) => Some(Message::StepReply { req, step }),
                    None => self.reject(req, Reject::NotJoined),
                }
            }
            Message::GetState { req, vnode } => match self.served_vnode(&vnode) {
                Ok(vi) => {
                    let v = &self.vnodes[vi];
                    Some(Message::State {
                        req,
                        pred: v.pred,
                        succs: v.succs.clone(),
                    })
                }
                Err(r) => self.reject(req, r),
            },
            Message::SuccessorHint {
                vnode,
                candidate,
                forwards,
            } => {
                if self.in_ring() {
                    let forwards = forwards.min(MAX_HINT_FORWARDS);
                    self.on_successor_hint(cx, vnode, candidate, forwards);
                }
                None
            }
            Message::Notify { vnode, from: n } => {
                if n.peer != from {
                    self.counters.malformed += 1;
                } else if self.in_ring() {
                    self.on_notify(cx, vnode, n);
                }
                None
            }
            Message::GetFingers {
                req,
                vnode,
                from_index,
            } => {
                let vi = match self.served_vnode(&vnode) {
                    Ok(vi) => vi,
                    Err(r) => return self.reject(req, r),
                };
                if from_index as usize >= FINGERS {
                    return self.reject(req, Reject::BadFingerIndex);
                }
                let v = &self.vnodes[vi];
                let mut runs: Vec<(u16, NodeRef)> = Vec::new();
                for i in from_index as usize..FINGERS {
                    if let Some(f) = finger_of(v, i)
                        && runs.last().is_none_or(|(_, l)| *l != f)
                    {
                        runs.push((i as u16, f));
                    }
                }
                runs.truncate(MAX_FINGER_ENTRIES);
                Some(Message::Fingers { req, runs })
            }
            Message::Leaving {
                vnode,
                leaving,
                pred: _,
                succs,
            } => {
                if leaving.peer != from || succs.len() > MAX_SUCCESSORS {
                    self.counters.malformed += 1;
                } else if self.vidx(&vnode).is_none() {
                    self.counters.unknown_vnode += 1;
                } else {
                    self.on_leaving(cx, vnode, leaving, succs);
                }
                None
            }
            Message::Put {
                req,
                vnode,
                key,
                record,
            } => {
                let vi = match self.served_vnode(&vnode) {
                    Ok(vi) => vi,
                    Err(r) => return self.reject(req, r),
                };
                match self.store.apply(key, record.clone(), now) {
                    Ok(_) => {}
                    Err(Error::ValueTooLarge { .. }) => {
                        return self.reject(req, Reject::ValueTooLarge);
                    }
                    Err(_) => return self.reject(req, Reject::StoreFull),
                }
                let replicas = self.replicas_of(&self.vnodes[vi]);
                for r in replicas {
                    self.push_records(cx, r.peer, &[key]);
                }
                let stored = self.store.version(&key).unwrap_or(record.version);
                Some(Message::PutAck { req, stored })
            }
            Message::Get { req, vnode, key } => {
                let vi = match self.served_vnode(&vnode) {
                    Ok(vi) => vi,
                    Err(r) => return self.reject(req, r),
                };
                let replicas = self.replicas_of(&self.vnodes[vi]);
                Some(Message::GetReply {
                    req,
                    record: self.store.get(&key).cloned(),
                    replicas,
                })
            }
            Message::AddProvider {
                req,
                vnode,
                key,
                entry,
            } => {
                let vi = match self.served_vnode(&vnode) {
                    Ok(vi) => vi,
                    Err(r) => return self.reject(req, r),
                };
                self.merge_providers(vec![(key, vec![entry])], now);
                let replicas = self.replicas_of(&self.vnodes[vi]);
                for r in replicas {
                    self.push_providers(cx, r.peer, &[key], now);
                }
                let providers = self.store.providers(&key, now);
                Some(Message::Providers {
                    req,
                    providers: providers
                        .into_iter()
                        .take(MAX_PROVIDERS_PER_MESSAGE)
                        .collect(),
                })
            }
            Message::GetProviders { req, vnode, key } => {
                if let Err(r) = self.served_vnode(&vnode) {
                    return self.reject(req, r);
                }
                let providers = self.store.providers(&key, now);
                Some(Message::Providers {
                    req,
                    providers: providers
                        .into_iter()
                        .take(MAX_PROVIDERS_PER_MESSAGE)
                        .collect(),
                })
            }
            Message::Offer {
                req,
                from: _,
                to: _,
                digest,
                providers,
            } => {
                if !self.in_ring() {
                    return self.reject(req, Reject::NotJoined);
                }
                if digest.len() > MAX_BATCH_ENTRIES || providers.len() > MAX_BATCH_ENTRIES {
                    return self.reject(req, Reject::Malformed);
                }
                let mut keys = Vec::new();
                for (k, ver) in digest {
                    match self.store.version(&k) {
                        Some(have) if have >= ver => self.store.confirm(&k, now),
                        _ => keys.push(k),
                    }
                }
                self.merge_providers(providers, now);
                Some(Message::Want { req, keys })
            }
            Message::Store { records, providers } => {
                if records.len() > MAX_BATCH_ENTRIES || providers.len() > MAX_BATCH_ENTRIES {
                    self.counters.malformed += 1;
                    return None;
                }
                if self.phase == Phase::Left || self.phase == Phase::Idle {
                    return None;
                }
                self.apply_batch(records, now);
                self.merge_providers(providers, now);
                None
            }
            Message::Handoff {
                req,
                vnode,
                records,
            } => {
                let vi = match self.served_vnode(&vnode) {
                    Ok(vi) => vi,
                    Err(r) => return self.reject(req, r),
                };
                if records.len() > MAX_BATCH_ENTRIES {
                    return self.reject(req, Reject::Malformed);
                }
                self.apply_batch(records, now);
                let keep = self
                    .replicas_of(&self.vnodes[vi])
                    .iter()
                    .any(|r| r.peer == from);
                Some(Message::HandoffAck { req, keep })
            }
            reply @ (Message::StepReply { .. }
            | Message::State { .. }
            | Message::Fingers { .. }
            | Message::PutAck { .. }
            | Message::GetReply { .. }
            | Message::Providers { .. }
            | Message::Want { .. }
            | Message::HandoffAck { .. }
            | Message::Rejected { .. }) => {
                self.on_reply(cx, from, reply);
                None
            }
        }
    }

    fn apply_batch(&mut self, records: Vec<(Id, Record)>, now: Instant) {
        for (k, r) in records {
            match self.store.apply(k, r, now) {
                Ok(Applied::Stored) => {}
                Ok(Applied::Stale) => self.store.confirm(&k, now),
                Err(Error::ValueTooLarge { .. }) => self.counters.oversized_value += 1,
                Err(_) => self.counters.store_full += 1,
            }
        }
    }

    // ---- replies and timeouts ----------------------------------------------------------

    fn on_reply(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Message) {
        let req = match &msg {
            Message::StepReply { req, .. }
            | Message::State { req, .. }
            | Message::Fingers { req, .. }
            | Message::PutAck { req, .. }
            | Message::GetReply { req, .. }
            | Message::Providers { req, .. }
            | Message::Want { req, .. }
            | Message::HandoffAck { req, .. }
            | Message::Rejected { req, .. } => *req,
            _ => return,
        };
        match self.pending.get(&req) {
            Some(p) if p.to == from => {}
            _ => {
                self.counters.unexpected_reply += 1;
                return;
            }
        }
        let Some(p) = self.pending.remove(&req) else {
            return;
        };
        if let Message::Rejected { reason, .. } = msg {
            self.on_rejected(cx, p, reason);
            return;
        }
        match (p.kind, msg) {
            (Pending::Step { lookup, asked }, Message::StepReply { step, .. }) => {
                self.on_step(cx, from, lookup, asked, step);
            }
            (kind, Message::State { pred, succs, .. }) => {
                if succs.len() > MAX_SUCCESSORS {
                    self.counters.malformed += 1;
                    return;
                }
                match kind {
                    Pending::Stabilize { vnode, succ } => {
                        self.on_stabilize_state(cx, vnode, succ, pred, succs)
                    }
                    Pending::Candidate {
                        vnode,
                        succ: old,
                        cand,
                        ..
                    } => {
                        // The successor we move away from may belong right after the
                        // candidate (two chains of concurrent joins interleaved): say so.
                        if let Some(first) = succs.first()
                            && old.id != cand.id
                            && old.id.in_open(&cand.id, &first.id)
                        {
                            self.tell(
                                cx,
                                cand.peer,
                                Message::SuccessorHint {
                                    vnode: cand.id,
                                    candidate: old,
                                    forwards: 0,
                                },
                            );
                        }
                        // The candidate's answer is a stabilize answer from our new
                        // successor: its predecessor may be closer still.
                        self.on_stabilize_state(cx, vnode, cand, pred, succs);
                    }
                    Pending::JoinState {
                        vnode, succ, pred, ..
                    } => {
                        self.on_join_state(cx, vnode, succ, succs);
                        let joined = self.vidx(&vnode).is_some_and(|vi| self.vnodes[vi].joined);
                        if joined && pred.id != vnode {
                            let hint = Message::SuccessorHint {
                                vnode: pred.id,
                                candidate: self.me_at(vnode),
                                forwards: MAX_HINT_FORWARDS,
                            };
                            self.tell(cx, pred.peer, hint);
                        }
                    }
                    Pending::FingerCheck { vnode, index, cur } => {
                        self.on_finger_state(cx, vnode, index, cur, pred)
                    }
                    Pending::CheckPred | Pending::Ping => {}
                    _ => self.counters.unexpected_reply += 1,
                }
            }
            (Pending::Fingers { vnode, from }, Message::Fingers { runs, .. }) => {
                if runs.len() > MAX_FINGER_ENTRIES
                    || runs.iter().any(|(i, _)| *i as usize >= FINGERS)
                {
                    self.counters.bad_finger_index += 1;
                    return;
                }
                if let Some(vi) = self.vidx(&vnode) {
                    let v = &mut self.vnodes[vi];
                    if v.fingers.runs().is_empty() {
                        v.fingers.install(&runs, from);
                    }
                }
            }
            (
                Pending::Op { op, target },
                m @ (Message::PutAck { .. } | Message::GetReply { .. } | Message::Providers { .. }),
            ) => {
                self.on_op_reply(cx, op, target, m);
            }
            (Pending::Offer, Message::Want { keys, .. }) => {
                if keys.len() > MAX_BATCH_ENTRIES {
                    self.counters.malformed += 1;
                    return;
                }
                self.push_records(cx, from, &keys);
            }
            (Pending::Handoff { keys }, Message::HandoffAck { keep, .. }) => {
                let now = cx.now();
                for k in keys {
                    if keep || self.is_primary(&k) {
                        self.store.confirm(&k, now);
                    } else {
                        self.store.remove(&k);
                    }
                }
            }
            _ => self.counters.unexpected_reply += 1,
        }
    }

    fn on_rejected(&mut self, cx: &mut Cx<'_, Self>, p: PendingReq, reason: Reject) {
        match p.kind {
            Pending::Op { op, target } => {
                self.on_op_reply(cx, op, target, Message::Rejected { req: 0, reason });
            }
            kind => {
                // The peer is alive but the virtual node we addressed is not there (it
                // left, or the peer is rejoining): forget that pointer and carry on as on
                // a timeout, without suspecting the whole peer.
                let node = match &kind {
                    Pending::Step { asked, .. } => *asked,
                    Pending::Stabilize { succ, .. } | Pending::JoinState { ask: succ, .. } => {
                        Some(*succ)
                    }
                    Pending::Candidate { cand, .. } => Some(*cand),
                    Pending::FingerCheck { cur, .. } => Some(*cur),
                    _ => None,
                };
                if let Some(n) = node {
                    self.forget_vnode(cx, n);
                }
                self.on_failed(cx, p.to, kind, false);
            }
        }
    }

    fn on_timeout(&mut self, cx: &mut Cx<'_, Self>, req: u64) {
        let Some(p) = self.pending.remove(&req) else {
            return;
        };
        self.counters.timeouts += 1;
        self.on_failed(cx, p.to, p.kind, true);
    }

    /// A request got no useful answer; `timed_out` means the whole peer is suspect.
    fn on_failed(&mut self, cx: &mut Cx<'_, Self>, to: PeerId, kind: Pending, timed_out: bool) {
        match kind {
            Pending::Step { lookup, .. } => {
                if timed_out {
                    self.evict(cx, to);
                }
                if let Some(l) = self.lookups.get_mut(&lookup) {
                    l.timeouts += 1;
                    self.advance_lookup(cx, lookup);
                }
            }
            Pending::Stabilize { vnode, .. } => {
                if timed_out {
                    self.evict(cx, to);
                }
                if let Some(vi) = self.vidx(&vnode) {
                    self.vnodes[vi].stabilizing = false;
                    // Skip the dead successor and stabilize through the next live one.
                    self.stabilize_vnode(cx, vnode);
                }
            }
            Pending::Candidate {
                vnode, succ, list, ..
            } => {
                if timed_out {
                    self.evict(cx, to);
                }
                if let Some(vi) = self.vidx(&vnode) {
                    self.vnodes[vi].stabilizing = false;
                    self.vnodes[vi].walk = 0;
                    if self.vnodes[vi].joined && !self.moved_closer(vi, &succ) {
                        self.adopt(vi, succ, &list);
                        self.tell(
                            cx,
                            succ.peer,
                            Message::Notify {
                                vnode: succ.id,
                                from: self.me_at(vnode),
                            },
                        );
                    }
                    self.stabilize_if_hinted(cx, vi);
                }
            }
            Pending::JoinState { vnode, .. } => {
                if timed_out {
                    self.evict(cx, to);
                }
                self.retry_join(cx, vnode);
            }
            Pending::CheckPred | Pending::Ping | Pending::Offer => {
                if timed_out {
                    self.evict(cx, to);
                }
            }
            Pending::FingerCheck { vnode, .. } => {
                if timed_out {
                    self.evict(cx, to);
                }
                // The finger is gone from the table now: the next round looks it up.
                if let Some(vi) = self.vidx(&vnode) {
                    self.vnodes[vi].fixing = false;
                }
            }
            Pending::Fingers { .. } | Pending::Handoff { .. } => {}
            Pending::Op { op, target } => {
                if timed_out {
                    self.evict(cx, target.peer);
                }
                self.retry_op(cx, op, Error::Timeout);
            }
        }
    }

    /// Whether periodic task `task` does its work on this tick (adaptive maintenance, see
    /// [`Config::max_backoff`]); with `max_backoff` 1 it always does.
    fn due(&mut self, task: Task) -> bool {
        let epoch = match task {
            Task::FixFingers => self.ring_epoch.wrapping_add(self.finger_epoch),
            _ => self.ring_epoch,
        };
        let joining = self.vnodes.iter().any(|v| !v.joined);
        let max = self.cfg.max_backoff.max(1);
        let b = &mut self.backoff[task as usize];
        b.ticks = b.ticks.saturating_add(1);
        if epoch != b.epoch || joining {
            b.level = 1;
        }
        if b.ticks < b.level {
            return false;
        }
        // A round of work: the next one comes sooner if something changed since the last.
        b.level = if epoch == b.epoch && !joining {
            b.level.saturating_mul(2).min(max)
        } else {
            1
        };
        b.epoch = epoch;
        b.ticks = 0;
        true
    }

    fn on_periodic(&mut self, cx: &mut Cx<'_, Self>, t: Timer) {
        let task = match t {
            Timer::Stabilize(_) => Task::Stabilize,
            Timer::FixFingers(_) => Task::FixFingers,
            Timer::CheckPredecessor(_) => Task::CheckPredecessor,
            Timer::Repair(_) => Task::Repair,
            Timer::Request(_) => return,
        };
        if !self.due(task) {
            let period = match task {
                Task::Stabilize => self.cfg.stabilize_period,
                Task::FixFingers => self.cfg.fix_fingers_period,
                Task::CheckPredecessor => self.cfg.check_predecessor_period,
                Task::Repair => self.cfg.repair_period,
            };
            let d = self.jittered(cx, period);
            cx.set_timer(d, t);
            return;
        }
        match t {
            Timer::Stabilize(_) => {
                self.join_stragglers(cx);
                self.merge_lone_ring(cx);
                let ids = self.vnode_ids();
                for id in ids {
                    self.stabilize_vnode(cx, id);
                }
                let d = self.jittered(cx, self.cfg.stabilize_period);
                cx.set_timer(d, Timer::Stabilize(self.generation));
            }
            Timer::FixFingers(_) => {
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
                    v.fixing = true;
                    let (vnode, key) = (v.id, v.id.add_pow2(index));
                    match v.fingers.get(index) {
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
                                Message::GetState { req, vnode: cur.id },
                                Pending::FingerCheck { vnode, index, cur },
                            );
                        }
                        _ => {
                            self.start_lookup(cx, key, Purpose::Finger { vnode, index });
                        }
                    }
                }
                let d = self.jittered(cx, self.cfg.fix_fingers_period);
                cx.set_timer(d, Timer::FixFingers(self.generation));
            }
            Timer::CheckPredecessor(_) => {
                let preds: Vec<NodeRef> = self
                    .vnodes
                    .iter()
                    .filter(|v| v.joined)
                    .filter_map(|v| v.pred)
                    .filter(|p| p.peer != self.me)
                    .collect();
                for p in preds {
                    let req = self.fresh();
                    self.request(
                        cx,
                        p.peer,
                        req,
                        Message::GetState { req, vnode: p.id },
                        Pending::CheckPred,
                    );
                }
                let d = self.jittered(cx, self.cfg.check_predecessor_period);
                cx.set_timer(d, Timer::CheckPredecessor(self.generation));
            }
            Timer::Repair(_) => {
                self.repair(cx);
                let d = self.jittered(cx, self.cfg.repair_period);
                cx.set_timer(d, Timer::Repair(self.generation));
            }
            Timer::Request(_) => {}
        }
    }
}

fn finger_of(v: &VNode, i: usize) -> Option<NodeRef> {
    let start = v.id.add_pow2(i);
    if let Some(last) = v.succs.last()
        && start.in_half_open(&v.id, &last.id)
    {
        return successor_in_list(&v.id, &v.succs, &start);
    }
    v.fingers.get(i)
}

impl Protocol for Dht {
    type Message = Message;
    type Timer = Timer;
    type Command = Command;
    type Event = Event;

    fn handle_start(&mut self, cx: &mut Cx<'_, Self>) {
        if self.phase == Phase::Joined {
            self.start_timers(cx);
        }
    }

    fn handle_message(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Message) {
        if from == self.me {
            // Own virtual nodes talk inline; a frame claiming to be from us is bogus.
            self.counters.malformed += 1;
            return;
        }
        if let Some(reply) = self.serve(cx, from, msg) {
            cx.send(from, reply);
        }
    }

    fn handle_timer(&mut self, cx: &mut Cx<'_, Self>, timer: Timer) {
        match timer {
            Timer::Request(req) => self.on_timeout(cx, req),
            Timer::Stabilize(g)
            | Timer::FixFingers(g)
            | Timer::CheckPredecessor(g)
            | Timer::Repair(g) => {
                // While joining, too: the stabilize tick restarts joins that ran out of
                // attempts. Leaving or a failed join bumps the generation and ends the chain.
                if g == self.generation
                    && matches!(self.phase, Phase::Joined | Phase::Joining { .. })
                {
                    self.on_periodic(cx, timer);
                }
            }
        }
    }

    fn handle_command(&mut self, cx: &mut Cx<'_, Self>, cmd: Command) {
        let now = cx.now();
        match cmd {
            Command::SetFallbackPeers { peers } => {
                if self.phase != Phase::Joined {
                    // A join under way keeps the peers it was given.
                    return;
                }
                self.set_bootstrap(peers);
            }
            Command::Join { req, bootstrap } => {
                if self.phase != Phase::Idle {
                    self.emit(cx, req, Err(Error::AlreadyJoined));
                    return;
                }
                self.set_bootstrap(bootstrap);
                self.generation += 1;
                if self.bootstrap.is_empty() {
                    self.create_ring();
                    self.phase = Phase::Joined;
                    self.start_timers(cx);
                    self.emit(cx, req, Ok(Reply::Joined));
                } else {
                    self.phase = Phase::Joining { req };
                    // Periodic work runs while joining too: its stabilize tick restarts the
                    // joins of vnodes whose attempts ran out (`join_stragglers`).
                    self.start_timers(cx);
                    let first = self.vnodes[0].id;
                    self.start_lookup(cx, first, Purpose::Join { vnode: first });
                }
            }
            Command::Leave { req } => {
                if self.phase != Phase::Joined {
                    self.emit(cx, req, Err(Error::NotJoined));
                    return;
                }
                self.leave(cx, req);
            }
            Command::Lookup { req, key } => {
                if !self.in_ring() {
                    self.emit(cx, req, Err(Error::NotJoined));
                    return;
                }
                if self.client_lookups >= self.cfg.max_concurrent_lookups {
                    self.emit(cx, req, Err(Error::Busy(self.cfg.max_concurrent_lookups)));
                    return;
                }
                self.client_lookups += 1;
                self.start_lookup(cx, key, Purpose::Client { req });
            }
            Command::Put { req, key, value } => self.write(cx, req, &key, Some(value), now),
            Command::Delete { req, key } => self.write(cx, req, &key, None, now),
            Command::Get { req, key } => self.start_op(
                cx,
                req,
                OpKind::Get {
                    key: Id::hash(&key),
                },
            ),
            Command::AddProvider {
                req,
                key,
                provider,
                ttl,
            } => {
                let ttl = ttl.min(self.cfg.max_provider_ttl);
                let entry = ProviderEntry {
                    provider,
                    ttl_ms: ttl.as_millis() as u64,
                };
                self.start_op(cx, req, OpKind::AddProvider { key, entry });
            }
            Command::GetProviders { req, key } => {
                self.start_op(cx, req, OpKind::GetProviders { key })
            }
        }
    }

    fn handle_peer_down(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId) {
        // A hint: check with a request of our own, and evict only if it times out.
        if peer == self.me || !self.in_ring() {
            return;
        }
        let known = self
            .vnodes
            .iter()
            .flat_map(|v| v.succs.iter().chain(v.pred.iter()).chain(v.fingers.nodes()))
            .find(|n| n.peer == peer)
            .copied();
        if let Some(n) = known {
            let req = self.fresh();
            self.request(
                cx,
                peer,
                req,
                Message::GetState { req, vnode: n.id },
                Pending::Ping,
            );
        }
    }
}

impl Dht {
    fn write(
        &mut self,
        cx: &mut Cx<'_, Self>,
        req: u64,
        key: &[u8],
        value: Option<Vec<u8>>,
        now: Instant,
    ) {
        let len = value.as_ref().map_or(0, Vec::len);
        if len > self.cfg.max_value_size {
            self.emit(
                cx,
                req,
                Err(Error::ValueTooLarge {
                    len,
                    max: self.cfg.max_value_size,
                }),
            );
            return;
        }
        let time = now.as_micros().max(self.last_version + 1);
        self.last_version = time;
        let record = Record {
            version: Version {
                time,
                writer: self.me,
            },
            value,
        };
        self.start_op(
            cx,
            req,
            OpKind::Put {
                key: Id::hash(key),
                record,
            },
        );
    }
}
