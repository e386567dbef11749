//! The DHT state machine: [`Dht`], its tables and its dispatch.
//!
//! Methods by family: constructors ([`Dht::new`], [`Dht::from_ideal`]); getters for the ring
//! view, the store and the counters; the `handle_*` inputs of
//! [`peerlab_overlay::Protocol`]. Requests to this peer's own virtual nodes never leave it:
//! they are served inline, so a peer with several virtual nodes sends no messages to itself.
//!
//! The machine's parts live in files named after Chord's vocabulary; each adds methods to
//! [`Dht`] for one role, except the two pure machines:
//!
//! - `lookup`: the iterative lookup as a pure state machine (whom to ask next);
//! - `backoff`: adaptive maintenance (when a periodic task does its work);
//! - `routing`: this peer's own routing step, running lookups and what their results do;
//! - `join`: creating, joining, rejoining and leaving the ring;
//! - `stabilize`: stabilize, notify, successor hints and the predecessor check;
//! - `fingers`: fix-fingers;
//! - `ops`: the client side of put/get/delete and provider records;
//! - `read`: a get's reads of the owner and its replicas, and read repair;
//! - `repair`: replication, repair digests and hand-off of records;
//! - `window`: acting on a detected death at once (re-replication, taking over a dead
//!   predecessor's range);
//! - `serve`: answering requests from other peers;
//! - `admission`: which records and provider entries from peers are taken, and what a
//!   refusal costs the sender;
//! - `pending`: requests in flight, their answers, refusals and timeouts;
//! - `rtt`: round-trip estimation per peer (Jacobson/Karels, RFC 6298), which sets each
//!   request's timeout.

mod admission;
mod backoff;
mod fingers;
mod join;
mod member_hints;
#[cfg(test)]
pub(crate) use admission::VIEW_REFUSAL_SPACING;
pub use join::MAX_UNIFY_CANDIDATES;
mod lookup;
mod ops;
mod pending;
mod read;
mod repair;
mod routing;
mod rtt;
mod serve;
mod stabilize;
mod window;

use std::collections::BTreeMap;
use std::time::Duration;

use peerlab_overlay::{Cx, Id, Instant, Keypair, PeerId, Protocol};

use crate::clock::Hlc;
use crate::message::{Message, NodeRef, ProviderEntry, Record};
use crate::ring::{FINGERS, Fingers, IdealRing};
use crate::store::{Applied, Limits, Store};
use crate::{Command, Config, Error, Event, MAX_PROVIDER_TTL, Reply};

use self::backoff::{Schedule, Task};
use self::fingers::finger_of;
use self::ops::{Op, OpKind};
use self::pending::{Pending, PendingReq};
use self::routing::{Purpose, Running};

pub use self::read::MAX_READ_REPLICAS;
use self::rtt::RttTable;
pub use self::rtt::{CLOCK_GRANULARITY, Estimate, MAX_RTO_FACTOR, MAX_TIMED_OUT, MAX_TIMED_PEERS};

/// Internal (maintenance) lookups in flight at once; beyond it a tick's work is skipped.
const MAX_INTERNAL_LOOKUPS: usize = 1024;

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
    /// Lookup answers refused as inconsistent (an owner the asked node cannot vouch for;
    /// see `lookup`).
    pub refused_steps: u64,
    /// Replies that matched no pending request (late, duplicate or forged).
    pub unexpected_reply: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Answers that arrived after their request timed out, from the peer asked: not acted
    /// on (they count as `unexpected_reply` too), but taken as round-trip samples (`rtt`).
    pub late_replies: u64,
    /// Peers dropped from the tables after a timeout.
    pub evictions: u64,
    /// Forgeries: signatures that do not verify, claims made in another peer's name.
    pub forged: u64,
    /// Input refused by the storage rules (another writer's key, a version too far
    /// ahead, a key this peer does not replicate, a quota, an unknown virtual node) and
    /// charged to the sender.
    pub refused: u64,
    /// View-dependent refusals not charged: the sender had been charged for one within
    /// the spacing (`admission`).
    pub view_refusals_uncharged: u64,
    /// Ranges offered to replicas at once after an eviction changed a replica set or
    /// handed over a dead predecessor's range (`window`), or a new successor list added a
    /// replica.
    pub prompt_repairs: u64,
    /// Stale or missing copies a read found at replicas and pushed the newest to (read
    /// repair).
    pub read_repairs: u64,
    /// Fix-fingers rounds settled by the overlay's membership without an exchange
    /// (`fingers`).
    pub fingers_by_members: u64,
    /// Stabilize rounds settled by the overlay's membership with a liveness check
    /// (`member_hints`, "Neighbours at rest").
    pub neighbours_by_members: u64,
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
    /// Who takes over as predecessor the moment the predecessor is found dead: a notifier
    /// that lay before the predecessor, or else the predecessor's own predecessor as the
    /// last check-predecessor answer gave it. With it the range of a dead predecessor is
    /// owned, and re-replicated, as soon as a request to the predecessor times out,
    /// rather than after the next notify (`window`).
    pred_hint: Option<NodeRef>,
    /// The first successor whose last stabilize answer named this vnode its predecessor:
    /// with membership placing the same successors, a round may be skipped
    /// (`member_hints`, "Neighbours at rest").
    succ_confirmed: Option<Id>,
    /// Stabilize rounds in a row that membership settled (with a liveness check only).
    succ_rounds_by_members: u32,
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

/// A peer's Chord DHT: its virtual nodes, store and in-flight requests.
#[derive(Debug)]
pub struct Dht {
    cfg: Config,
    /// This node's key: signs its records and provider entries.
    key: Keypair,
    /// Its peer id (`key.peer_id()`).
    me: PeerId,
    phase: Phase,
    generation: u64,
    /// The generation whose periodic timers are armed (at most one set per generation).
    timers_armed: Option<u64>,
    vnodes: Vec<VNode>,
    store: Store,
    bootstrap: Vec<PeerId>,
    pending: BTreeMap<u64, PendingReq>,
    lookups: BTreeMap<u64, Running>,
    ops: BTreeMap<u64, Op>,
    client_lookups: usize,
    handbacks: usize,
    next_id: u64,
    /// Wall clock and hybrid logical clock for versions.
    clock: Hlc,
    counters: Counters,
    /// Bumped whenever a successor list, a predecessor or a vnode's membership of the ring
    /// changes (adaptive maintenance: see [`Config::max_backoff`]).
    ring_epoch: u64,
    /// Bumped whenever a finger changes.
    finger_epoch: u64,
    /// Adaptive maintenance state of the periodic tasks.
    schedule: Schedule,
    /// Stabilize rounds spent joined with no virtual node in the ring
    /// ([`join::LONE_RING_ROUNDS`]).
    orphan_rounds: u32,
    /// Peers to look this peer's place up through: maybe in another ring (`unify_rings`).
    pub(crate) unify_candidates: std::collections::VecDeque<PeerId>,
    /// The virtual node (index) checked last by `unify_rings`.
    unify_next: usize,
    /// When each sender was last charged for a view-dependent refusal
    /// (`admission::VIEW_REFUSAL_SPACING`; at most `MAX_VIEW_REFUSAL_RECORDS`).
    view_refusals: BTreeMap<PeerId, Instant>,
    /// Round-trip estimates per peer: each request's timeout (`rtt`).
    rtt: RttTable,
    /// The live members' virtual nodes, where lookups start (`member_hints`).
    member_hints: member_hints::MemberHints,
}

impl Dht {
    /// A DHT core for the peer of `key` (its node key, which signs its records), not yet
    /// joined (send [`Command::Join`]). Its wall clock is protocol time until
    /// [`Dht::set_clock_offset`] says otherwise.
    ///
    /// # Errors
    /// [`Error::Config`].
    pub fn new(cfg: Config, key: Keypair) -> Result<Dht, Error> {
        cfg.validate()?;
        let me = key.peer_id();
        let rtt = RttTable::new(cfg.request_timeout);
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
                pred_hint: None,
                succ_confirmed: None,
                succ_rounds_by_members: 0,
            })
            .collect();
        vnodes.sort_by_key(|v| v.id);
        vnodes.dedup_by(|a, b| a.id == b.id);
        let store = Store::new(Limits {
            max_bytes: cfg.max_stored_bytes,
            max_value: cfg.max_value_size,
            max_providers: cfg.max_providers_per_key,
            writer_bytes: cfg.max_writer_bytes,
            writer_records: cfg.max_writer_records,
            defenses: cfg.defenses,
        });
        Ok(Dht {
            cfg,
            key,
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
            clock: Hlc::default(),
            counters: Counters::default(),
            ring_epoch: 0,
            finger_epoch: 0,
            schedule: Schedule::default(),
            orphan_rounds: 0,
            unify_candidates: std::collections::VecDeque::new(),
            unify_next: 0,
            view_refusals: BTreeMap::new(),
            rtt,
            member_hints: member_hints::MemberHints::default(),
        })
    }

    /// A core already joined to the converged `ring` (which must contain this peer's
    /// virtual nodes): pointers, successor lists and fingers are copied from it. For
    /// simulations at scale; lookups then still run as real messages.
    ///
    /// # Errors
    /// [`Error::Config`], or [`Error::UnknownVnode`] if a virtual node is missing
    /// from the ring.
    pub fn from_ideal(cfg: Config, key: Keypair, ring: &IdealRing) -> Result<Dht, Error> {
        let mut d = Dht::new(cfg, key)?;
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

    /// The local store, for tests that script a copy going missing.
    #[cfg(test)]
    pub(crate) fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// The keys written or removed since the last call (for a holder that keeps the store
    /// on disk; see [`Store::take_changed`]).
    pub fn take_changed(&mut self) -> crate::Changed {
        self.store.take_changed()
    }

    /// Number of stored records (tombstones included).
    pub fn stored_keys(&self) -> usize {
        self.store.len()
    }

    /// Counters of rejected input and failure detection.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// How long a request to `peer` may go unanswered now: its round-trip timeout clamped
    /// to [`Config::request_timeout`] ..= [`MAX_RTO_FACTOR`] times that, backed off after a
    /// timeout of a peer known to be slow (`rtt`).
    pub fn request_timeout_to(&self, peer: &PeerId) -> Duration {
        self.rtt.timeout(peer)
    }

    /// The round-trip estimate of `peer`, if a request to it was ever answered (and the
    /// estimate not dropped for newer ones, see [`MAX_TIMED_PEERS`]).
    pub fn rtt_estimate(&self, peer: &PeerId) -> Option<Estimate> {
        self.rtt.estimate(peer)
    }

    /// Requests and lookups in flight (for tests that check nothing leaks).
    pub fn in_flight(&self) -> (usize, usize, usize) {
        (self.pending.len(), self.lookups.len(), self.ops.len())
    }

    /// Stores `record` directly: local, trusted input (experiment set-up, the node's own
    /// records read back from its disk), so neither its signature nor the range is
    /// checked; the store's rules (order, ownership, quotas, bounds) still apply.
    ///
    /// # Errors
    /// [`Error::ValueTooLarge`], [`Error::NotOwner`], [`Error::QuotaExceeded`],
    /// [`Error::StoreFull`].
    pub fn insert_record(
        &mut self,
        key: Id,
        record: Record,
        now: Instant,
    ) -> Result<Applied, Error> {
        let now_ms = self.clock.wall_ms(now);
        self.store.apply(key, record, now, now_ms, false)
    }

    /// Sets the offset from protocol time to the Unix epoch, in microseconds: the wall
    /// clock that versions and expiries are read from is `now + offset`. A real node whose
    /// protocol time is Unix time leaves it at 0; a simulator gives each node its own (and
    /// skews one to model a fast or slow clock).
    pub fn set_clock_offset(&mut self, offset_us: i64) {
        self.clock.set_offset(offset_us);
    }

    /// Wall-clock milliseconds since 1970 at protocol time `now`, as this node reads them.
    pub fn wall_ms(&self, now: Instant) -> u64 {
        self.clock.wall_ms(now)
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
        self.distinct_successors(v, self.cfg.replicas.saturating_sub(1))
    }

    /// The replica set of `v` and as many distinct peers after it, within
    /// [`MAX_READ_REPLICAS`](read::MAX_READ_REPLICAS): what an owner names to a get (`read`).
    fn read_candidates(&self, v: &VNode) -> Vec<NodeRef> {
        let n = 2 * self.cfg.replicas.saturating_sub(1);
        self.distinct_successors(v, n.min(read::MAX_READ_REPLICAS))
    }

    /// The first `n` successors of `v` on distinct peers other than this one.
    fn distinct_successors(&self, v: &VNode, n: usize) -> Vec<NodeRef> {
        let mut out: Vec<NodeRef> = Vec::new();
        for s in &v.succs {
            if out.len() >= n {
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

    /// Whether this peer's virtual node `id` is in the ring.
    fn vnode_joined(&self, id: &Id) -> bool {
        self.vidx(id).is_some_and(|vi| self.vnodes[vi].joined)
    }

    fn jittered(&self, cx: &mut Cx<'_, Self>, period: Duration) -> Duration {
        let j = self.cfg.jitter;
        let f = 1.0 - j + 2.0 * j * cx.rng().unit_f64();
        period.mul_f64(f)
    }

    fn emit(&self, cx: &mut Cx<'_, Self>, req: u64, result: Result<Reply, Error>) {
        cx.emit(Event::Reply { req, result });
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
        let before = self.window_snapshot();
        let mut orphaned = Vec::new();
        let mut changed = false;
        for v in &mut self.vnodes {
            let had = !v.succs.is_empty();
            let len = v.succs.len();
            v.succs.retain(|s| !dead(s));
            changed |= v.succs.len() != len;
            if v.pred_hint.is_some_and(|h| dead(&h)) {
                v.pred_hint = None;
            }
            if v.pred.is_some_and(|p| dead(&p)) {
                // The dead predecessor's range is ours now: take the node before it as
                // predecessor at once (`window`); without one, the periodic check and the
                // next notify settle it.
                v.pred = v.pred_hint.take().filter(|h| h.id != v.id);
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
            l.lookup.remove_where(&dead);
        }
        for id in orphaned {
            self.rejoin_vnode(cx, id);
        }
        self.close_window(cx, &before);
    }

    fn on_periodic(&mut self, cx: &mut Cx<'_, Self>, t: Timer) {
        let task = match t {
            Timer::Stabilize(_) => Task::Stabilize,
            Timer::FixFingers(_) => Task::FixFingers,
            Timer::CheckPredecessor(_) => Task::CheckPredecessor,
            Timer::Repair(_) => Task::Repair,
            Timer::Request(_) => return,
        };
        let epoch = match task {
            Task::FixFingers => self.ring_epoch.wrapping_add(self.finger_epoch),
            _ => self.ring_epoch,
        };
        let joining = self.vnodes.iter().any(|v| !v.joined);
        let max = match task {
            // A replica counts a record orphaned when its owner's offers have not confirmed
            // it for `ORPHAN_PERIODS` repair periods of time: offers slower than the period
            // would make every replica hand its records back. Only a peer that holds no
            // record (nothing to confirm, nothing to orphan) lets repair back off.
            Task::Repair if !self.store.is_empty() => 1,
            _ => self.cfg.max_backoff,
        };
        if !self.schedule.due(task, epoch, joining, max) {
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
                self.unify_rings(cx);
                let ids = self.vnode_ids();
                for id in ids {
                    match self.vidx(&id) {
                        Some(vi) if self.succs_at_rest(vi) => self.check_succ(cx, vi),
                        _ => self.stabilize_vnode(cx, id),
                    }
                }
                let d = self.jittered(cx, self.cfg.stabilize_period);
                cx.set_timer(d, Timer::Stabilize(self.generation));
            }
            Timer::FixFingers(_) => {
                self.fix_fingers(cx);
                let d = self.jittered(cx, self.cfg.fix_fingers_period);
                cx.set_timer(d, Timer::FixFingers(self.generation));
            }
            Timer::CheckPredecessor(_) => {
                self.check_predecessors(cx);
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
            Command::CheckRing { peers } => {
                if self.phase == Phase::Joined {
                    self.check_ring(peers);
                }
            }
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
            Command::Put {
                req,
                key,
                value,
                ttl,
            } => self.write(cx, req, &key, Some(value), ttl, now),
            Command::Delete { req, key } => self.write(cx, req, &key, None, None, now),
            Command::Get { req, key } => self.start_op(
                cx,
                req,
                OpKind::Get {
                    key: Id::hash(&key),
                },
            ),
            Command::AddProvider { req, key, ttl } => {
                let ttl = ttl.min(MAX_PROVIDER_TTL);
                let expires_ms = self
                    .clock
                    .wall_ms(now)
                    .saturating_add(ttl.as_millis() as u64);
                let entry = ProviderEntry::sign(&key, expires_ms, &self.key);
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
            // A failure notice about a peer in this node's tables: whatever the check
            // finds, maintenance returns to its base period (`backoff`), so a ring at rest
            // repairs around a death as fast as a ring under change.
            self.ring_epoch += 1;
            let req = self.fresh();
            self.request(
                cx,
                peer,
                req,
                Message::GetState {
                    req,
                    vnode: n.id,
                    pred_only: true,
                },
                Pending::Ping,
            );
        }
    }
}
