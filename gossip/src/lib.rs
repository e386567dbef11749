//! Gossip: membership and versioned data spread by rumor mongering and anti-entropy, as a
//! sans-IO core ([`Gossip`] implements [`peerlab_overlay::Protocol`]).
//!
//! # Layout
//!
//! - [`config`]: [`Config`] with presets ([`Config::lan`], [`Config::wan`],
//!   [`Config::synchronous_rounds`]) and the enums that select the algorithms.
//! - [`message`]: the wire [`Message`]s.
//! - [`members`]: the member table and SWIM's precedence rules.
//! - [`store`]: versioned per-origin data and Scuttlebutt digests and deltas.
//! - this module: the state machine, its [`Command`]s, [`Event`]s and [`Timer`]s.
//!
//! # Data: rumor mongering and anti-entropy
//!
//! Applications publish key/value entries. Each entry is owned by its *origin* and versioned
//! by the origin's own counter, so "newer" is unambiguous and a delete travels as a
//! versioned tombstone (Demers et al., "Epidemic Algorithms for Replicated Database
//! Maintenance", PODC 1987). Two mechanisms spread them:
//!
//! - **Rumor mongering (SIR).** A newly learned version is a *hot rumor*. Every period
//!   ([`Config::period`], one *round*) an infective node pushes its hot rumors to
//!   [`Config::fanout`] random members and loses interest by one of Demers' four
//!   [`Variant`]s: feedback or blind, counter or coin. With feedback the recipient answers
//!   which rumors it already knew; the counter counts *consecutive* unnecessary contacts
//!   and a useful contact resets it — the reading under which Demers' table is reproduced.
//! - **Anti-entropy.** Every [`Config::anti_entropy_period`] a node reconciles with one
//!   random member by Scuttlebutt (van Renesse et al., "Efficient Reconciliation and Flow
//!   Control for Anti-Entropy Protocols", 2008): it sends a digest (per origin, the highest
//!   version held completely) and only the missing deltas travel back (pull), forth (push)
//!   or both (push-pull, `log3 N + O(ln ln N)` rounds, Karp et al., FOCS 2000). Deltas are
//!   cut to the byte budget as per-origin prefixes in version order, so a newer version is
//!   never sent while an older one is left out (see [`store`]).
//!
//! [`Mode::Combined`] (the default) runs both: rumors for speed, anti-entropy so that the
//! residue rumor mongering leaves is eventually reached.
//!
//! Partners are uniform random members, as in the papers, unless [`Config::partner_view`]
//! sets a partial view: then rumor and anti-entropy partners come from a uniform sample of
//! that many members, kept uniform by reservoir sampling as members appear (Vitter's
//! algorithm R) and refilled when a partner goes down — the role HyParView's active view
//! plays (Leitão et al., DSN 2007) — so that a node of a large group keeps a bounded set of
//! transport connections instead of one to every member.
//!
//! For the synchronous-round model of the papers, [`Activation::CycleEnd`] keeps what a
//! node learns during a round pending until its next tick and [`Config::synchronous_ticks`]
//! aligns every node's ticks; [`Config::synchronous_rounds`] sets both.
//!
//! # Membership: SWIM
//!
//! Members are tracked with SWIM (Das, Gupta, Motivala, DSN 2002) rather than a phi-accrual
//! detector. Phi-accrual needs every node to see a steady stream of every other node's
//! heartbeats — `O(N²)` traffic per heartbeat interval when heartbeats are gossiped, as in
//! Cassandra or chitchat — whereas SWIM's probing costs `O(1)` messages per node per probe
//! period whatever `N`, its detection time does not grow with `N`, and its suspicion
//! mechanism with refutation by incarnation keeps false positives rare under message loss.
//!
//! Every [`Config::probe_period`] `T` a node probes the next member of a shuffled
//! round-robin list with a `Ping`; without an `Ack` within [`Config::probe_timeout`] it asks
//! [`Config::indirect_probes`] others to probe (`PingReq`). Without any ack by the next
//! probe, the target becomes *suspect*; a suspect that does not refute (by raising its
//! incarnation) within [`Config::suspicion_timeout`] `S` is declared *dead*. Membership
//! updates are rumors: each is pushed with the data rumors to `fanout` members per round,
//! `member_retransmit_mult · ⌈log10(N+1)⌉` times (memberlist's rule), and a periodic
//! push-pull of the member table ([`Config::member_sync_period`]) catches whatever a rumor
//! missed. The push-pull is digest-based, like the data's Scuttlebutt exchange: the
//! initiator sends `(peer, incarnation, state)` rows (`Message::MemberDigest`, ≈ 43 bytes a
//! member, so about 1500 fit a 64 KiB message), the partner answers with the full records
//! in which the initiator is behind and a list of the members it is behind on
//! (`Message::MemberDelta`), and the initiator sends those. Tables that agree cost one
//! digest and no answer; memberlist's full-state push-pull would send every record
//! (with its addresses, ≈ 120 bytes) both ways and merge each one. Dead and departed
//! members stay as tombstones for [`Config::tombstone_expiry`].
//!
//! **Detection bound.** A crashed member is probed in a given probe period by at least one
//! of the other `N − 1` members with probability `1 − (1 − 1/(N−1))^(N−1) ≥ 1 − 1/e`, so it
//! stays unprobed for `m` periods with probability at most `e^(−m)`. The failed probe makes
//! it suspect at the next probe tick (at most `T` later), it is declared dead after `S`,
//! and the `dead` rumor, pushed to `F = fanout` members per round, reaches all live members
//! in about `log_(F+1) N + ln N / F` rounds (a push epidemic with fan-out `F`); five
//! more rounds absorb loss, so `R = ⌈log_(F+1) N + ln N / F + 5⌉`. Hence, with probability
//! at least `1 − e^(−m)`, every live member knows of the crash within
//!
//! ```text
//!     D = (m + 1)·T + S + R·period
//! ```
//!
//! With the LAN defaults (`T` = 5 rounds, `S` = 25 rounds, `F` = 3), `N = 1000` and
//! `m = 7` (ε ≈ 10⁻³): `D = 40 + 25 + 13 = 78` rounds of 200 ms (15.6 s). Typical times
//! are far shorter, since probes of the crashed member arrive at rate about one per `T`
//! (measured in `docs/experiments/gossip.md`).
//!
//! False positives need a live member's direct probe and all indirect probes to fail
//! (≈ 6·10⁻⁴ per probe at 5 % loss: `(1 − 0.95²)·(1 − 0.95⁴)³`) *and* its refutation to
//! miss some member for `S` = 25 rounds. The prober sends the suspicion straight to the
//! suspect as well as gossiping it, and the suspect answers its accuser directly, so a
//! suspicion is normally refuted within a round or two. A member list merged from another
//! node (join reply, member sync) is second-hand and may be old, so a `dead` it claims about
//! a member held up here only makes that member suspect, giving it the chance to refute
//! (memberlist does the same); member syncs also go now and then to members held dead, so
//! the two sides of a healed partition find each other again.
//!
//! # Ideal membership for data experiments
//!
//! [`Gossip::with_static_view`] replaces SWIM by a fixed, shared list of peers (a
//! [`StaticView`]): every peer is assumed alive and no probing runs. Per-node state is then
//! independent of `N`, which is what lets the simulator spread data over 10⁵ nodes.
//!
//! # Driving the core
//!
//! Inputs are the `handle_*` methods of [`Protocol`]; outputs go into the context's outbox.
//! Read-only accessors ([`Gossip::members`], [`Gossip::entry`], [`Gossip::versions`],
//! [`Gossip::rejected`], …) expose the state. Nothing received from the network can make
//! the core panic, grow without bound, or lose a newer version: bad input is refused and
//! counted in [`Rejected`].

pub mod config;
pub mod members;
pub mod message;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use peerlab_overlay::{Cx, Instant, PeerId, Protocol, Rng};
use serde_bytes::ByteBuf;

pub use config::{Activation, Config, Exchange, MAX_PARTNER_VIEW, MAX_VERSION, Mode, Variant};
pub use members::{Member, MemberState};
pub use message::{Digest, Entry, MemberRow, MemberUpdate, Message, OriginDelta};
pub use store::{Rejection, StoredEntry};

use members::{Change, Table};
use message::{FRAME_SLACK, MAX_ITEMS, item_len};
use store::{Applied, Store};

/// Why a command or configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GossipError {
    /// The configuration is inconsistent; nothing was started.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The key is longer than `max_key_len`; nothing was stored.
    #[error("key longer than {0} bytes")]
    KeyTooLong(usize),
    /// The value is longer than `max_value_len`; nothing was stored.
    #[error("value longer than {0} bytes")]
    ValueTooLarge(usize),
    /// Delete of a key this node never published (or already deleted); nothing changed.
    #[error("no such key")]
    NotFound,
    /// The entry cap for this node's own data is reached; nothing was stored.
    #[error("entry cap reached")]
    CapacityReached,
    /// This node has left; nothing changed.
    #[error("node has left the group")]
    NotRunning,
}

/// A local command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Join the group through any of `seeds` (tried in turn). Answered by
    /// [`Event::Joined`] or [`Event::JoinFailed`].
    Join {
        /// Peers to ask for the member list.
        seeds: Vec<PeerId>,
    },
    /// Leave gracefully: the departure spreads as a rumor, then the node goes silent
    /// ([`Event::Left`]).
    Leave,
    /// Publish `value` under `key` as this node's next version. Answered by
    /// [`Event::Published`] or [`Event::CommandFailed`].
    Publish {
        /// Caller-chosen id echoed in the answer.
        request: u64,
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Delete `key` (a versioned tombstone). Answered like `Publish`.
    Delete {
        /// Caller-chosen id echoed in the answer.
        request: u64,
        /// The key.
        key: String,
    },
}

/// What the core reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A member became alive: newly known, or back after being dead or gone. Emitted once
    /// per transition, so a consumer (DHT bootstrap, flooding neighbours) can mirror the set.
    MemberUp {
        /// The member.
        peer: PeerId,
        /// Its addresses.
        addrs: Vec<String>,
    },
    /// A member that stays up announced other addresses (a restarted process with the same
    /// identity listening on new ports, before anyone declared it dead): whoever dials
    /// members must learn them, or it keeps dialling the dead process's ports.
    MemberAddrs {
        /// The member.
        peer: PeerId,
        /// Its addresses now.
        addrs: Vec<String>,
    },
    /// A member is suspected (still counted as up).
    MemberSuspect {
        /// The member.
        peer: PeerId,
    },
    /// A suspected member refuted the suspicion.
    MemberAlive {
        /// The member.
        peer: PeerId,
    },
    /// A member that was up was declared dead.
    MemberDown {
        /// The member.
        peer: PeerId,
    },
    /// A member that was up left gracefully.
    MemberLeft {
        /// The member.
        peer: PeerId,
    },
    /// This node refuted a suspicion about itself by raising its incarnation.
    Refuted {
        /// The new incarnation.
        incarnation: u64,
    },
    /// A seed answered; the member table holds `members` members.
    Joined {
        /// Member count after merging the seed's list.
        members: usize,
    },
    /// No seed answered.
    JoinFailed,
    /// The departure was gossiped; the node is now silent.
    Left,
    /// A newer version of an entry became active here.
    EntryUpdated {
        /// The entry's origin.
        origin: PeerId,
        /// Its key.
        key: String,
        /// Its version.
        version: u64,
        /// Whether it is a tombstone.
        deleted: bool,
    },
    /// A `Publish` or `Delete` was stored as `version`.
    Published {
        /// The command's request id.
        request: u64,
        /// The version it was given.
        version: u64,
    },
    /// A command was refused.
    CommandFailed {
        /// The command's request id.
        request: u64,
        /// Why.
        error: GossipError,
    },
}

/// The core's timers. The tick chain is started once; probe timers carry the probe's
/// sequence number and suspicion timers the incarnation, so stale ones are recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Timer {
    /// One gossip round: activate pending versions, push rumors, maybe anti-entropy.
    Tick,
    /// Conclude the previous probe and start the next.
    Probe,
    /// The direct probe `seq` may have timed out.
    ProbeTimeout {
        /// Probe sequence number.
        seq: u64,
    },
    /// `peer`'s suspicion at `incarnation` may have expired.
    Suspicion {
        /// The suspect.
        peer: PeerId,
        /// The incarnation it was suspected at.
        incarnation: u64,
    },
    /// Membership anti-entropy.
    MemberSync,
    /// The join attempt `attempt` may have timed out.
    JoinRetry {
        /// Attempt number.
        attempt: u32,
    },
}

/// Counters of refused input (each a count of items, or of whole messages for the
/// `*_messages` fields). Refused input changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rejected {
    /// Entries or delta rows of origins that are not members.
    pub unknown_origin: u64,
    /// Versions or incarnations that are zero, above [`MAX_VERSION`], too far ahead, or
    /// claim this node's own data beyond what it wrote.
    pub absurd_version: u64,
    /// Keys, values or addresses over their limits.
    pub oversized: u64,
    /// Messages whose lists (digests, deltas, rumor batches, member lists) exceed their caps.
    pub oversized_messages: u64,
    /// Delta rows whose range or order is inconsistent.
    pub malformed: u64,
    /// Items refused because a cap (members, origins, entries, pending) is reached.
    pub over_capacity: u64,
}

impl Rejected {
    /// Sum of all counters.
    pub fn total(&self) -> u64 {
        self.unknown_origin
            + self.absurd_version
            + self.oversized
            + self.oversized_messages
            + self.malformed
            + self.over_capacity
    }
}

/// A fixed, shared membership for data experiments (sorted, deduplicated).
#[derive(Clone, Debug)]
pub struct StaticView(Arc<[PeerId]>);

impl StaticView {
    /// A view of `peers`.
    pub fn new(mut peers: Vec<PeerId>) -> StaticView {
        peers.sort();
        peers.dedup();
        StaticView(peers.into())
    }

    /// The peers.
    pub fn peers(&self) -> &[PeerId] {
        &self.0
    }

    fn contains(&self, p: &PeerId) -> bool {
        self.0.binary_search(p).is_ok()
    }
}

enum View {
    Swim(Table),
    Static(StaticView),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum RumorKey {
    Member(PeerId),
    Data(PeerId, u64),
}

#[derive(Clone, Debug)]
struct Rumor {
    /// Data rumors: the key (the rumor is keyed by origin and version).
    key: String,
    /// Rounds in which it was pushed (blind counter, age cap).
    rounds: u32,
    /// Feedback counter, or transmissions for membership rumors.
    counter: u32,
    /// Insertion order, for evicting the oldest.
    born: u64,
}

enum Pending {
    Entry(Entry),
    Delta(OriginDelta),
}

struct Probe {
    seq: u64,
    target: PeerId,
    acked: bool,
}

struct Relay {
    requester: PeerId,
    seq: u64,
    target: PeerId,
    born: Instant,
}

struct InFlight {
    tick: u64,
    ids: Vec<(PeerId, u64)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Leaving { ticks: u32 },
    Gone,
}

struct Join {
    seeds: Vec<PeerId>,
    attempt: u32,
}

/// Indirect-probe relays kept at once; each lives one probe period. Bounds the state a
/// burst of `PingReq`s can create.
const MAX_RELAYS: usize = 256;
/// Ticks a feedback record waits for its reply (late replies are ignored).
const IN_FLIGHT_TICKS: u64 = 5;
/// Rumor batches awaiting feedback; with fan-out F a node has about `F · IN_FLIGHT_TICKS`.
const MAX_IN_FLIGHT: usize = 1024;
/// Ticks a leaving node keeps gossiping its departure before going silent.
const LEAVE_TICKS: u32 = 3;
/// Probability that a member sync goes to a member held dead rather than one that is up.
/// A dead-but-alive member (one that was cut off) is found again within about
/// `member_sync_period / DEAD_SYNC_CHANCE / N_dead`; the cost is one wasted sync in four.
const DEAD_SYNC_CHANCE: f64 = 0.25;
/// Most corrections sent back for one received message (each is one member record).
const MAX_CORRECTIONS: usize = 64;
/// Join attempts per seed before giving up.
const JOIN_ROUNDS: u32 = 3;

/// `first`, then `then`, as many as fit `budget` bytes after `reserved`; `first` is
/// shuffled when it does not all fit. `then` is taken lazily: no record past the budget is
/// built.
fn fit_records(
    budget: usize,
    rng: &mut Rng,
    mut first: Vec<MemberUpdate>,
    then: impl IntoIterator<Item = MemberUpdate>,
    reserved: usize,
) -> Vec<MemberUpdate> {
    let mut room = budget.saturating_sub(FRAME_SLACK + reserved);
    let first_len: usize = first.iter().map(item_len).sum();
    if first_len > room {
        rng.shuffle(&mut first);
    }
    let mut out = Vec::new();
    for u in first.into_iter().chain(then) {
        let l = item_len(&u);
        if l > room {
            break;
        }
        room -= l;
        out.push(u);
    }
    out
}

/// The gossip core. See the [crate docs](crate).
pub struct Gossip {
    me: PeerId,
    addrs: Vec<String>,
    config: Config,
    incarnation: u64,
    view: View,
    store: Store,
    rumors: BTreeMap<RumorKey, Rumor>,
    born: u64,
    pending: Vec<Pending>,
    probe: Option<Probe>,
    probe_order: Vec<PeerId>,
    relays: BTreeMap<u64, Relay>,
    in_flight: BTreeMap<u64, InFlight>,
    seq: u64,
    tick: u64,
    ae_every: u64,
    rejected: Rejected,
    phase: Phase,
    join: Option<Join>,
    /// Newer records to send back to the sender of stale suspicions (see `correct`).
    corrections: Vec<MemberUpdate>,
    /// The partial view (at most `config.partner_view` members; see [`Config::partner_view`]).
    partners: Vec<PeerId>,
    /// Members offered to the partial view so far (the reservoir's count).
    partners_seen: u64,
}

impl Gossip {
    /// A node with SWIM membership that knows nobody yet (send [`Command::Join`]).
    pub fn new(me: PeerId, addrs: Vec<String>, config: Config) -> Result<Gossip, GossipError> {
        config.validate()?;
        let ae_every = (config.anti_entropy_period.as_micros() / config.period.as_micros().max(1))
            .max(1) as u64;
        let mut addrs = addrs;
        addrs.truncate(config.max_addrs);
        addrs.retain(|a| a.len() <= config.max_addr_len);
        Ok(Gossip {
            me,
            addrs,
            config,
            incarnation: 0,
            view: View::Swim(Table::default()),
            store: Store::default(),
            rumors: BTreeMap::new(),
            born: 0,
            pending: Vec::new(),
            probe: None,
            probe_order: Vec::new(),
            relays: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            seq: 0,
            tick: 0,
            ae_every,
            rejected: Rejected::default(),
            phase: Phase::Running,
            join: None,
            corrections: Vec::new(),
            partners: Vec::new(),
            partners_seen: 0,
        })
    }

    /// A node with SWIM membership whose table starts with `members` alive (incarnation 0):
    /// a restart from a saved table, or a simulated group that starts formed. No events are
    /// emitted for them.
    pub fn with_members(
        me: PeerId,
        addrs: Vec<String>,
        config: Config,
        members: impl IntoIterator<Item = (PeerId, Vec<String>)>,
    ) -> Result<Gossip, GossipError> {
        let mut g = Gossip::new(me, addrs, config)?;
        if let View::Swim(t) = &mut g.view {
            for (peer, addrs) in members {
                if peer == me {
                    continue;
                }
                let u = MemberUpdate {
                    peer,
                    incarnation: 0,
                    state: MemberState::Alive,
                    addrs,
                };
                if t.apply(&u, Instant::ZERO, g.config.max_members).is_err() {
                    break;
                }
            }
        }
        Ok(g)
    }

    /// A node with ideal membership: `view` (shared by all nodes), all assumed alive, no
    /// probing. For data experiments at scale.
    pub fn with_static_view(
        me: PeerId,
        view: StaticView,
        config: Config,
    ) -> Result<Gossip, GossipError> {
        let mut g = Gossip::new(me, Vec::new(), config)?;
        g.view = View::Static(view);
        Ok(g)
    }

    // ---- getters ----

    /// This node's id.
    pub fn id(&self) -> PeerId {
        self.me
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The member table (empty with a static view), in peer-id order, tombstones included.
    pub fn members(&self) -> impl Iterator<Item = (&PeerId, &Member)> {
        let t = match &self.view {
            View::Swim(t) => Some(t.members.iter()),
            View::Static(_) => None,
        };
        t.into_iter().flatten()
    }

    /// One member's record.
    pub fn member(&self, peer: &PeerId) -> Option<&Member> {
        match &self.view {
            View::Swim(t) => t.get(peer),
            View::Static(_) => None,
        }
    }

    /// The partial view gossip partners are drawn from (empty when
    /// [`Config::partner_view`] is 0: partners then come from all members).
    pub fn partners(&self) -> &[PeerId] {
        &self.partners
    }

    /// Number of members that are alive or suspect (the static view's size minus this node).
    pub fn up_count(&self) -> usize {
        match &self.view {
            View::Swim(t) => t.members.values().filter(|m| m.state.is_up()).count(),
            View::Static(v) => v.0.len().saturating_sub(usize::from(v.contains(&self.me))),
        }
    }

    /// The newest version of `key` from `origin` held here (tombstones included).
    pub fn entry(&self, origin: &PeerId, key: &str) -> Option<&StoredEntry> {
        self.store.get(origin, key)
    }

    /// All entries of `origin`, in key order.
    pub fn entries(&self, origin: &PeerId) -> impl Iterator<Item = (&String, &StoredEntry)> {
        self.store
            .origins
            .get(origin)
            .into_iter()
            .flat_map(|o| o.entries.iter())
    }

    /// Per-origin watermarks (the Scuttlebutt digest): everything of the origin up to this
    /// version is held.
    pub fn versions(&self) -> impl Iterator<Item = (&PeerId, u64)> {
        self.store.origins.iter().map(|(p, o)| (p, o.watermark))
    }

    /// Whether `version` of `origin`'s `key` (or newer) is held and active.
    pub fn knows(&self, origin: &PeerId, key: &str, version: u64) -> bool {
        self.store.knows(origin, key, version)
    }

    /// Hot rumors (data and membership) this node still pushes.
    pub fn hot_rumors(&self) -> usize {
        self.rumors.len()
    }

    /// Hot data rumors.
    pub fn hot_data_rumors(&self) -> usize {
        self.rumors
            .keys()
            .filter(|k| matches!(k, RumorKey::Data(..)))
            .count()
    }

    /// Versions received but not yet active ([`Activation::CycleEnd`]).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Counters of refused input.
    pub fn rejected(&self) -> &Rejected {
        &self.rejected
    }

    /// Whether a join through seeds is under way (between `Command::Join` and
    /// [`Event::Joined`] or [`Event::JoinFailed`]).
    pub fn is_joining(&self) -> bool {
        self.join.is_some()
    }

    /// Whether the node has left.
    pub fn has_left(&self) -> bool {
        self.phase == Phase::Gone
    }

    // ---- helpers ----

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn self_update(&self) -> MemberUpdate {
        let state = match self.phase {
            Phase::Running => MemberState::Alive,
            _ => MemberState::Left,
        };
        MemberUpdate {
            peer: self.me,
            incarnation: self.incarnation,
            state,
            addrs: self.addrs.clone(),
        }
    }

    fn first_deadline(&self, cx: &mut Cx<'_, Self>, period: Duration) -> Instant {
        let p = period.as_micros().max(1) as u64;
        let now = cx.now().as_micros();
        if self.config.synchronous_ticks {
            Instant((now / p + 1) * p)
        } else {
            Instant(now + 1 + cx.rng().below(p))
        }
    }

    fn is_member(&self, p: &PeerId) -> bool {
        *p == self.me
            || match &self.view {
                View::Swim(t) => t.get(p).is_some(),
                View::Static(v) => v.contains(p),
            }
    }

    /// `n` distinct random peers other than this node (and other than `except`).
    fn random_peers(
        &mut self,
        cx: &mut Cx<'_, Self>,
        n: usize,
        except: Option<PeerId>,
    ) -> Vec<PeerId> {
        let me = self.me;
        let list: &[PeerId] = match &mut self.view {
            View::Swim(t) => t.up(),
            View::Static(v) => &v.0,
        };
        if list.is_empty() || n == 0 {
            return Vec::new();
        }
        let extra = 1 + usize::from(except.is_some());
        cx.rng()
            .sample_indices(list.len(), (n + extra).min(list.len()))
            .into_iter()
            .map(|i| list[i])
            .filter(|p| *p != me && Some(*p) != except)
            .take(n)
            .collect()
    }

    /// `n` distinct random gossip partners: from the partial view if one is configured,
    /// otherwise from all members that are up.
    fn partner_peers(&mut self, cx: &mut Cx<'_, Self>, n: usize) -> Vec<PeerId> {
        if self.config.partner_view == 0 {
            return self.random_peers(cx, n, None);
        }
        self.refresh_partners(cx);
        let len = self.partners.len();
        cx.rng()
            .sample_indices(len, n.min(len))
            .into_iter()
            .map(|i| self.partners[i])
            .collect()
    }

    /// Offers a member that came up to the partial view: reservoir sampling (Vitter's
    /// algorithm R), so that the view stays a uniform sample of every member seen, however
    /// the group grew — a view filled while only the first joiners were known would
    /// otherwise keep them, and they would become everyone's partners.
    fn offer_partner(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId) {
        let k = self.config.partner_view;
        if k == 0 || peer == self.me {
            return;
        }
        self.partners_seen += 1;
        if self.partners.contains(&peer) {
            return;
        }
        if self.partners.len() < k {
            self.partners.push(peer);
        } else if cx.rng().below(self.partners_seen) < k as u64 {
            let slot = cx.rng().index(self.partners.len());
            self.partners[slot] = peer;
        }
    }

    /// Drops partners that are no longer up and tops the view up to `partner_view` with
    /// random members that are.
    fn refresh_partners(&mut self, cx: &mut Cx<'_, Self>) {
        let k = self.config.partner_view;
        let me = self.me;
        let list: &[PeerId] = match &mut self.view {
            View::Swim(t) => t.up(),
            View::Static(v) => &v.0,
        };
        self.partners.retain(|p| list.binary_search(p).is_ok());
        let others = list.len() - usize::from(list.binary_search(&me).is_ok());
        let want = k.min(others);
        let rng = cx.rng();
        while self.partners.len() < want {
            // Random probes first; a scan when the view covers nearly everyone.
            let mut found = None;
            for _ in 0..8 {
                let c = list[rng.index(list.len())];
                if c != me && !self.partners.contains(&c) {
                    found = Some(c);
                    break;
                }
            }
            let found = found.or_else(|| {
                list.iter()
                    .copied()
                    .find(|c| *c != me && !self.partners.contains(c))
            });
            match found {
                Some(c) => self.partners.push(c),
                None => break,
            }
        }
    }

    fn add_rumor(&mut self, key: RumorKey, data_key: String) {
        if !self.rumors.contains_key(&key) && self.rumors.len() >= self.config.max_rumors {
            // Evict the oldest; anti-entropy (or the member sync) delivers it instead.
            if let Some(old) = self
                .rumors
                .iter()
                .min_by_key(|(_, r)| r.born)
                .map(|(k, _)| *k)
            {
                self.rumors.remove(&old);
            }
        }
        self.born += 1;
        self.rumors.insert(
            key,
            Rumor {
                key: data_key,
                rounds: 0,
                counter: 0,
                born: self.born,
            },
        );
    }

    fn add_member_rumor(&mut self, peer: PeerId) {
        self.add_rumor(RumorKey::Member(peer), String::new());
    }

    // ---- data ----

    /// Makes a validated entry active: stores it, emits the event, makes it a hot rumor.
    fn activate_entry(
        &mut self,
        cx: &mut Cx<'_, Self>,
        origin: PeerId,
        key: &str,
        version: u64,
        value: Option<Vec<u8>>,
    ) {
        let deleted = value.is_none();
        let older = self.store.get(&origin, key).map(|e| e.version);
        match self.store.apply(origin, key, version, value, &self.config) {
            Ok(Applied::New) => {
                cx.emit(Event::EntryUpdated {
                    origin,
                    key: key.to_string(),
                    version,
                    deleted,
                });
                if self.config.mode != Mode::AntiEntropy {
                    // A newer version replaces any hot rumor of an older one of the same key.
                    if let Some(v) = older {
                        self.rumors.remove(&RumorKey::Data(origin, v));
                    }
                    self.add_rumor(RumorKey::Data(origin, version), key.to_string());
                }
            }
            Ok(Applied::Known) => {}
            Err(r) => self.count(r),
        }
    }

    fn count(&mut self, r: Rejection) {
        match r {
            Rejection::UnknownOrigin => self.rejected.unknown_origin += 1,
            Rejection::AbsurdVersion => self.rejected.absurd_version += 1,
            Rejection::Oversized => self.rejected.oversized += 1,
            Rejection::Malformed => self.rejected.malformed += 1,
            Rejection::OverCapacity => self.rejected.over_capacity += 1,
        }
    }

    fn check_entry(&self, e: &Entry) -> Result<(), Rejection> {
        if !self.is_member(&e.origin) {
            return Err(Rejection::UnknownOrigin);
        }
        self.store.check_entry(&self.me, e, &self.config)
    }

    fn apply_delta(&mut self, cx: &mut Cx<'_, Self>, d: OriginDelta) {
        for (key, version, value) in d.entries {
            let e = Entry {
                origin: d.origin,
                key,
                version,
                value,
            };
            if let Err(r) = self.store.check_entry(&self.me, &e, &self.config) {
                // One bad row entry spoils the row's completeness claim: apply nothing more.
                self.count(r);
                return;
            }
            self.activate_entry(
                cx,
                e.origin,
                &e.key,
                e.version,
                e.value.map(ByteBuf::into_vec),
            );
        }
        self.store.cover(&d.origin, d.from, d.to);
    }

    fn receive_deltas(&mut self, cx: &mut Cx<'_, Self>, deltas: Vec<OriginDelta>) {
        if deltas.len() > MAX_ITEMS {
            self.rejected.oversized_messages += 1;
            return;
        }
        for d in deltas {
            if !self.is_member(&d.origin) {
                self.rejected.unknown_origin += 1;
                continue;
            }
            if let Err(r) = self.store.check_delta(&self.me, &d, &self.config) {
                self.count(r);
                continue;
            }
            match self.config.activation {
                Activation::Immediate => self.apply_delta(cx, d),
                Activation::CycleEnd => self.push_pending(Pending::Delta(d)),
            }
        }
    }

    fn push_pending(&mut self, p: Pending) {
        if self.pending.len() >= self.config.max_rumors {
            self.rejected.over_capacity += 1;
        } else {
            self.pending.push(p);
        }
    }

    fn check_digest(&mut self, d: &mut Digest) -> bool {
        if d.versions.len() > self.config.max_origins.min(MAX_ITEMS) {
            self.rejected.oversized_messages += 1;
            return false;
        }
        let before = d.versions.len();
        d.versions.retain(|(_, v)| *v <= MAX_VERSION);
        self.rejected.absurd_version += (before - d.versions.len()) as u64;
        true
    }

    // ---- membership ----

    fn valid_update(&mut self, u: &MemberUpdate) -> bool {
        if u.addrs.len() > self.config.max_addrs
            || u.addrs.iter().any(|a| a.len() > self.config.max_addr_len)
        {
            self.rejected.oversized += 1;
            return false;
        }
        if u.incarnation > MAX_VERSION {
            self.rejected.absurd_version += 1;
            return false;
        }
        true
    }

    fn on_member_update(&mut self, cx: &mut Cx<'_, Self>, u: MemberUpdate, from: Option<PeerId>) {
        if !self.valid_update(&u) {
            return;
        }
        let now = cx.now();
        if u.peer == self.me {
            if u.state != MemberState::Alive
                && u.incarnation < self.incarnation
                && self.phase == Phase::Running
                && from.is_some()
            {
                // A stale suspicion of this node is still travelling: answer it.
                self.corrections.push(self.self_update());
            }
            self.about_me(cx, &u, from);
            return;
        }
        let cap = self.config.max_members;
        let View::Swim(t) = &mut self.view else {
            return;
        };
        if from.is_some()
            && matches!(u.state, MemberState::Suspect | MemberState::Dead)
            && let Some(m) = t.get(&u.peer)
            && m.state == MemberState::Alive
            && members::overrides(m.incarnation, m.state, u.incarnation, u.state)
            && let Some(newer) = t.update_of(&u.peer)
        {
            // The sender suspects a member whose refutation it missed (the refutation's
            // rumor has died out); without a correction its timer would declare it dead.
            self.corrections.push(newer);
        }
        let was_known = t.get(&u.peer).is_some();
        let (change, moved) = match t.apply(&u, now, cap) {
            Ok(c) => c,
            Err(()) => {
                self.rejected.over_capacity += 1;
                return;
            }
        };
        if matches!(change, Change::None) {
            return;
        }
        let addrs = t.get(&u.peer).map(|m| m.addrs.clone()).unwrap_or_default();
        let peer = u.peer;
        if moved
            && matches!(
                change,
                Change::Refreshed | Change::Refuted | Change::Suspected
            )
        {
            cx.emit(Event::MemberAddrs {
                peer,
                addrs: addrs.clone(),
            });
        }
        match change {
            Change::None => return,
            Change::Refreshed | Change::Tombstone => {}
            Change::Up => {
                self.offer_partner(cx, peer);
                cx.emit(Event::MemberUp { peer, addrs });
            }
            Change::Refuted => cx.emit(Event::MemberAlive { peer }),
            Change::Suspected => {
                if !was_known {
                    self.offer_partner(cx, peer);
                    cx.emit(Event::MemberUp { peer, addrs });
                }
                cx.emit(Event::MemberSuspect { peer });
                cx.set_timer(
                    self.config.suspicion_timeout,
                    Timer::Suspicion {
                        peer,
                        incarnation: u.incarnation,
                    },
                );
            }
            Change::Down => cx.emit(Event::MemberDown { peer }),
            Change::Left => cx.emit(Event::MemberLeft { peer }),
        }
        self.add_member_rumor(peer);
    }

    fn about_me(&mut self, cx: &mut Cx<'_, Self>, u: &MemberUpdate, from: Option<PeerId>) {
        if self.phase != Phase::Running {
            return;
        }
        let stale = match u.state {
            MemberState::Alive => u.incarnation > self.incarnation,
            _ => u.incarnation >= self.incarnation,
        };
        if !stale {
            return;
        }
        self.incarnation = u.incarnation + 1;
        cx.emit(Event::Refuted {
            incarnation: self.incarnation,
        });
        self.add_member_rumor(self.me);
        if let Some(from) = from {
            // Answer the accuser at once: the suspicion's originator is usually the sender.
            let seq = self.next_seq();
            let msg = Message::Gossip {
                seq,
                feedback: false,
                members: vec![self.self_update()],
                entries: Vec::new(),
            };
            cx.send(from, msg);
        }
    }

    fn suspect(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId) {
        let Some(m) = self.member(&peer) else {
            return;
        };
        if m.state != MemberState::Alive {
            return;
        }
        let u = MemberUpdate {
            peer,
            incarnation: m.incarnation,
            state: MemberState::Suspect,
            addrs: Vec::new(),
        };
        self.on_member_update(cx, u.clone(), None);
        // Tell the suspect itself so it can refute before the timeout.
        let seq = self.next_seq();
        cx.send(
            peer,
            Message::Gossip {
                seq,
                feedback: false,
                members: vec![u],
                entries: vec![],
            },
        );
    }

    /// A sample of the member table (with this node's own record first) within the budget.
    fn member_sample(&mut self, cx: &mut Cx<'_, Self>) -> Vec<MemberUpdate> {
        let me = self.self_update();
        let all: Vec<MemberUpdate> = match &self.view {
            View::Swim(t) => t.members.keys().filter_map(|p| t.update_of(p)).collect(),
            View::Static(_) => Vec::new(),
        };
        let mut out = vec![me];
        let reserved = item_len(&out[0]);
        let budget = self.config.max_message_bytes;
        out.extend(fit_records(budget, cx.rng(), all, Vec::new(), reserved));
        out
    }

    fn update_of(&self, p: &PeerId) -> Option<MemberUpdate> {
        match &self.view {
            View::Swim(t) => t.update_of(p),
            _ => None,
        }
    }

    /// This node's member table as digest rows, its own row first, within the message
    /// budget (a random subset when the table does not fit). Returns `(complete, rows)`.
    fn member_digest(&mut self, cx: &mut Cx<'_, Self>) -> (bool, Vec<MemberRow>) {
        let mut rows = vec![MemberRow(self.me, self.incarnation, MemberState::Alive)];
        let View::Swim(t) = &self.view else {
            return (true, rows);
        };
        // The longest row: the largest incarnation and the longest state name.
        let row_len = item_len(&MemberRow(self.me, MAX_VERSION, MemberState::Suspect));
        let fit = self.config.max_message_bytes.saturating_sub(FRAME_SLACK) / row_len.max(1);
        let mut all: Vec<MemberRow> = t
            .members
            .iter()
            .map(|(p, m)| MemberRow(*p, m.incarnation, m.state))
            .collect();
        let complete = all.len() < fit;
        if !complete {
            cx.rng().shuffle(&mut all);
            all.truncate(fit.saturating_sub(1));
        }
        rows.extend(all);
        (complete, rows)
    }

    /// Answers a member digest: the records in which its sender is behind, and the members
    /// about which this node is behind. Nothing is sent when the tables agree.
    fn on_member_digest(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        complete: bool,
        rows: Vec<MemberRow>,
    ) {
        if rows.len() > MAX_ITEMS {
            self.rejected.oversized_messages += 1;
            return;
        }
        if !matches!(self.view, View::Swim(_)) || from == self.me {
            return;
        }
        let mut newer = Vec::new();
        let mut want = Vec::new();
        let mut listed = std::collections::BTreeSet::new();
        for MemberRow(peer, incarnation, state) in rows {
            if incarnation > MAX_VERSION {
                self.rejected.absurd_version += 1;
                continue;
            }
            listed.insert(peer);
            if peer == self.me {
                let before = self.incarnation;
                let u = MemberUpdate {
                    peer,
                    incarnation,
                    state,
                    addrs: Vec::new(),
                };
                // A suspicion of this node at its current incarnation is refuted (and the
                // refutation sent) as any other; an older record is answered with this one.
                self.about_me(cx, &u, Some(from));
                if self.incarnation == before
                    && (incarnation, state) != (before, MemberState::Alive)
                {
                    newer.push(self.self_update());
                }
                continue;
            }
            match self.member(&peer) {
                None => want.push(peer),
                Some(m) if members::overrides(incarnation, state, m.incarnation, m.state) => {
                    want.push(peer)
                }
                Some(m) if members::overrides(m.incarnation, m.state, incarnation, state) => {
                    newer.extend(self.update_of(&peer))
                }
                Some(_) => {}
            }
        }
        let mut unlisted: Vec<MemberUpdate> = Vec::new();
        if !listed.contains(&self.me) {
            unlisted.push(self.self_update());
        }
        if let View::Swim(t) = &self.view {
            unlisted.extend(
                t.members
                    .keys()
                    .filter(|p| !listed.contains(*p))
                    .filter_map(|p| t.update_of(p)),
            );
        }
        if !complete {
            // The sender may know these already; they fill what room is left, at random.
            cx.rng().shuffle(&mut unlisted);
        }
        // The want list takes at most half the budget; the records the rest.
        let id_len = item_len(&self.me);
        want.truncate(self.config.max_message_bytes / 2 / id_len.max(1));
        let budget = self.config.max_message_bytes;
        let members = fit_records(budget, cx.rng(), newer, unlisted, want.len() * id_len);
        if !members.is_empty() || !want.is_empty() {
            cx.send(from, Message::MemberDelta { members, want });
        }
    }

    fn merge_members(&mut self, cx: &mut Cx<'_, Self>, members: Vec<MemberUpdate>, from: PeerId) {
        if members.len() > MAX_ITEMS {
            self.rejected.oversized_messages += 1;
            return;
        }
        for mut u in members {
            // A list merge is second-hand and possibly old (a healed partition's view): a
            // "dead" it claims about a member that is up here becomes a suspicion, which the
            // member can refute (memberlist does the same).
            if u.state == MemberState::Dead && self.member(&u.peer).is_some_and(|m| m.state.is_up())
            {
                u.state = MemberState::Suspect;
            }
            self.on_member_update(cx, u, Some(from));
        }
        self.flush_corrections(cx, from);
    }

    /// Sends the corrections gathered while handling one message back to its sender.
    fn flush_corrections(&mut self, cx: &mut Cx<'_, Self>, to: PeerId) {
        if self.corrections.is_empty() {
            return;
        }
        let mut members = std::mem::take(&mut self.corrections);
        members.truncate(MAX_CORRECTIONS);
        let seq = self.next_seq();
        cx.send(
            to,
            Message::Gossip {
                seq,
                feedback: false,
                members,
                entries: Vec::new(),
            },
        );
    }

    /// The member-sync partner: a random member that is up, or now and then (always, when
    /// none is up) a member held dead, so that both sides of a healed partition meet again.
    fn sync_partner(&mut self, cx: &mut Cx<'_, Self>) -> Option<PeerId> {
        let up = self.random_peers(cx, 1, None).first().copied();
        let View::Swim(t) = &self.view else {
            return up;
        };
        if up.is_some() && !cx.rng().chance(DEAD_SYNC_CHANCE) {
            return up;
        }
        let dead: Vec<PeerId> = t
            .members
            .iter()
            .filter(|(_, m)| m.state == MemberState::Dead)
            .map(|(p, _)| *p)
            .collect();
        cx.rng().choose(&dead).copied().or(up)
    }

    // ---- rounds ----

    fn on_tick(&mut self, cx: &mut Cx<'_, Self>) {
        if self.phase == Phase::Gone {
            return;
        }
        self.tick += 1;
        // 1. What was learned during the last cycle becomes active.
        for p in std::mem::take(&mut self.pending) {
            match p {
                Pending::Entry(e) => self.activate_entry(
                    cx,
                    e.origin,
                    &e.key,
                    e.version,
                    e.value.map(ByteBuf::into_vec),
                ),
                Pending::Delta(d) => self.apply_delta(cx, d),
            }
        }
        // 2. Rumor mongering.
        self.push_rumors(cx);
        // 3. Anti-entropy.
        if self.phase == Phase::Running
            && self.config.mode != Mode::Rumor
            && self.tick.is_multiple_of(self.ae_every)
            && let Some(partner) = self.partner_peers(cx, 1).first().copied()
        {
            let budget = self.config.max_message_bytes;
            let digest = self.store.digest(budget, cx.rng());
            cx.send(
                partner,
                Message::Syn {
                    exchange: self.config.exchange,
                    digest,
                },
            );
        }
        if let Phase::Leaving { ticks } = self.phase {
            if ticks <= 1 {
                self.phase = Phase::Gone;
                cx.emit(Event::Left);
                return;
            }
            self.phase = Phase::Leaving { ticks: ticks - 1 };
        }
        let tick_at = cx.now() + self.config.period;
        cx.set_timer_at(tick_at, Timer::Tick);
    }

    fn push_rumors(&mut self, cx: &mut Cx<'_, Self>) {
        self.in_flight
            .retain(|_, f| f.tick + IN_FLIGHT_TICKS > self.tick);
        let max_rounds = self.config.max_rumor_rounds;
        self.rumors
            .retain(|k, r| matches!(k, RumorKey::Member(_)) || r.rounds < max_rounds);
        if self.rumors.is_empty() {
            return;
        }
        // Build one batch: membership updates (fewest transmissions first), then entries.
        let mut room = self.config.max_message_bytes.saturating_sub(FRAME_SLACK);
        let mut member_keys: Vec<(u32, PeerId)> = self
            .rumors
            .iter()
            .filter_map(|(k, r)| match k {
                RumorKey::Member(p) => Some((r.counter, *p)),
                RumorKey::Data(..) => None,
            })
            .collect();
        member_keys.sort();
        let mut members = Vec::new();
        let mut sent_members = Vec::new();
        for (_, p) in member_keys {
            let u = if p == self.me {
                Some(self.self_update())
            } else {
                match &self.view {
                    View::Swim(t) => t.update_of(&p),
                    View::Static(_) => None,
                }
            };
            let Some(u) = u else {
                self.rumors.remove(&RumorKey::Member(p));
                continue;
            };
            let l = item_len(&u);
            if l > room {
                break;
            }
            room -= l;
            members.push(u);
            sent_members.push(p);
        }
        let mut entries = Vec::new();
        let mut ids = Vec::new();
        let mut stale = Vec::new();
        for (k, r) in &self.rumors {
            let RumorKey::Data(origin, version) = *k else {
                continue;
            };
            let Some(e) = self
                .store
                .get(&origin, &r.key)
                .filter(|e| e.version == version)
            else {
                stale.push(*k);
                continue;
            };
            let entry = Entry {
                origin,
                key: r.key.clone(),
                version,
                value: e.value.clone().map(ByteBuf::from),
            };
            let l = item_len(&entry);
            if l > room {
                break;
            }
            room -= l;
            entries.push(entry);
            ids.push((origin, version));
        }
        for k in stale {
            self.rumors.remove(&k);
        }
        if members.is_empty() && entries.is_empty() {
            return;
        }
        let n = self.up_count();
        let targets = self.partner_peers(cx, self.config.fanout);
        if targets.is_empty() {
            return;
        }
        let feedback = self.config.variant.needs_feedback() && !entries.is_empty();
        for to in &targets {
            let seq = self.next_seq();
            if feedback && self.in_flight.len() < MAX_IN_FLIGHT {
                self.in_flight.insert(
                    seq,
                    InFlight {
                        tick: self.tick,
                        ids: ids.clone(),
                    },
                );
            }
            let msg = Message::Gossip {
                seq,
                feedback,
                members: members.clone(),
                entries: entries.clone(),
            };
            cx.send(*to, msg);
        }
        let limit = self.config.member_retransmits(n + 1);
        for p in sent_members {
            if let Some(r) = self.rumors.get_mut(&RumorKey::Member(p)) {
                r.counter += targets.len() as u32;
                if r.counter >= limit {
                    self.rumors.remove(&RumorKey::Member(p));
                }
            }
        }
        let k = self.config.k.get();
        for (origin, version) in ids {
            let key = RumorKey::Data(origin, version);
            let Some(r) = self.rumors.get_mut(&key) else {
                continue;
            };
            r.rounds += 1;
            let drop = match self.config.variant {
                Variant::BlindCounter => r.rounds >= k,
                Variant::BlindCoin => cx.rng().chance(1.0 / k as f64),
                Variant::FeedbackCounter | Variant::FeedbackCoin => false,
            };
            if drop {
                self.rumors.remove(&key);
            }
        }
    }

    fn on_feedback(&mut self, cx: &mut Cx<'_, Self>, seq: u64, known: Vec<bool>) {
        let Some(f) = self.in_flight.remove(&seq) else {
            return;
        };
        let k = self.config.k.get();
        for ((origin, version), knew) in f.ids.into_iter().zip(known) {
            let key = RumorKey::Data(origin, version);
            let Some(r) = self.rumors.get_mut(&key) else {
                continue;
            };
            let drop = match (self.config.variant, knew) {
                (Variant::FeedbackCounter, true) => {
                    r.counter += 1;
                    r.counter >= k
                }
                (Variant::FeedbackCounter, false) => {
                    r.counter = 0;
                    false
                }
                (Variant::FeedbackCoin, true) => cx.rng().chance(1.0 / k as f64),
                _ => false,
            };
            if drop {
                self.rumors.remove(&key);
            }
        }
    }

    fn on_gossip(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        seq: u64,
        feedback: bool,
        members: Vec<MemberUpdate>,
        entries: Vec<Entry>,
    ) {
        if members.len() > MAX_ITEMS || entries.len() > MAX_ITEMS {
            self.rejected.oversized_messages += 1;
            return;
        }
        for u in members {
            self.on_member_update(cx, u, Some(from));
        }
        self.flush_corrections(cx, from);
        let mut known = Vec::with_capacity(if feedback { entries.len() } else { 0 });
        for e in entries {
            let knew = match self.check_entry(&e) {
                Err(r) => {
                    self.count(r);
                    true
                }
                Ok(()) => self.store.knows(&e.origin, &e.key, e.version),
            };
            if feedback {
                known.push(knew);
            }
            if knew {
                continue;
            }
            match self.config.activation {
                Activation::Immediate => self.activate_entry(
                    cx,
                    e.origin,
                    &e.key,
                    e.version,
                    e.value.map(ByteBuf::into_vec),
                ),
                Activation::CycleEnd => self.push_pending(Pending::Entry(e)),
            }
        }
        if feedback {
            cx.send(from, Message::GossipReply { seq, known });
        }
    }

    // ---- probing ----

    fn on_probe(&mut self, cx: &mut Cx<'_, Self>) {
        if self.phase != Phase::Running {
            return;
        }
        let now = cx.now();
        // Conclude the previous probe.
        if let Some(p) = self.probe.take()
            && !p.acked
        {
            self.suspect(cx, p.target);
        }
        let period = self.config.probe_period;
        self.relays
            .retain(|_, r| now.saturating_since(r.born) < period);
        let expiry = self.config.tombstone_expiry;
        if let View::Swim(t) = &mut self.view {
            t.expire(now, expiry);
        }
        // Next target: shuffled round-robin over members that are up.
        let target = loop {
            let Some(p) = self.probe_order.pop() else {
                let mut order = match &mut self.view {
                    View::Swim(t) => t.up().to_vec(),
                    View::Static(_) => Vec::new(),
                };
                if order.is_empty() {
                    break None;
                }
                cx.rng().shuffle(&mut order);
                self.probe_order = order;
                continue;
            };
            if self.member(&p).is_some_and(|m| m.state.is_up()) {
                break Some(p);
            }
        };
        if let Some(target) = target {
            let seq = self.next_seq();
            self.probe = Some(Probe {
                seq,
                target,
                acked: false,
            });
            cx.send(target, Message::Ping { seq });
            cx.set_timer(self.config.probe_timeout, Timer::ProbeTimeout { seq });
        }
        cx.set_timer(period, Timer::Probe);
    }

    fn on_probe_timeout(&mut self, cx: &mut Cx<'_, Self>, seq: u64) {
        let Some(p) = &self.probe else {
            return;
        };
        if p.seq != seq || p.acked {
            return;
        }
        let target = p.target;
        let helpers = self.random_peers(cx, self.config.indirect_probes, Some(target));
        for h in helpers {
            cx.send(h, Message::PingReq { seq, target });
        }
    }

    fn on_ack(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, seq: u64) {
        if let Some(p) = &mut self.probe
            && p.seq == seq
            && p.target == from
        {
            p.acked = true;
            return;
        }
        if self.relays.get(&seq).is_some_and(|r| r.target == from)
            && let Some(r) = self.relays.remove(&seq)
        {
            cx.send(
                r.requester,
                Message::IndirectAck {
                    seq: r.seq,
                    target: r.target,
                },
            );
        }
    }

    fn on_ping_req(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, seq: u64, target: PeerId) {
        if self.relays.len() >= MAX_RELAYS || target == self.me {
            return;
        }
        let relay_seq = self.next_seq();
        self.relays.insert(
            relay_seq,
            Relay {
                requester: from,
                seq,
                target,
                born: cx.now(),
            },
        );
        cx.send(target, Message::Ping { seq: relay_seq });
    }

    fn on_join_attempt(&mut self, cx: &mut Cx<'_, Self>) {
        let Some(j) = &self.join else {
            return;
        };
        if j.seeds.is_empty() || j.attempt >= j.seeds.len() as u32 * JOIN_ROUNDS {
            self.join = None;
            cx.emit(Event::JoinFailed);
            return;
        }
        let seed = j.seeds[j.attempt as usize % j.seeds.len()];
        let attempt = j.attempt;
        cx.send(
            seed,
            Message::Join {
                incarnation: self.incarnation,
                addrs: self.addrs.clone(),
            },
        );
        cx.set_timer(self.config.join_timeout, Timer::JoinRetry { attempt });
    }
}

impl Protocol for Gossip {
    type Message = Message;
    type Timer = Timer;
    type Command = Command;
    type Event = Event;

    fn handle_start(&mut self, cx: &mut Cx<'_, Self>) {
        let at = self.first_deadline(cx, self.config.period);
        cx.set_timer_at(at, Timer::Tick);
        if matches!(self.view, View::Swim(_)) {
            let at = self.first_deadline(cx, self.config.probe_period);
            cx.set_timer_at(at, Timer::Probe);
            let at = self.first_deadline(cx, self.config.member_sync_period);
            cx.set_timer_at(at, Timer::MemberSync);
        }
    }

    fn handle_message(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Message) {
        if self.phase == Phase::Gone {
            return;
        }
        match msg {
            Message::Ping { seq } => {
                if self.phase == Phase::Running {
                    cx.send(from, Message::Ack { seq });
                }
            }
            Message::Ack { seq } => self.on_ack(cx, from, seq),
            Message::PingReq { seq, target } => self.on_ping_req(cx, from, seq, target),
            Message::IndirectAck { seq, target } => {
                if let Some(p) = &mut self.probe
                    && p.seq == seq
                    && p.target == target
                {
                    p.acked = true;
                }
            }
            Message::Join { incarnation, addrs } => {
                if !matches!(self.view, View::Swim(_)) || from == self.me {
                    return;
                }
                let u = MemberUpdate {
                    peer: from,
                    incarnation,
                    state: MemberState::Alive,
                    addrs,
                };
                self.on_member_update(cx, u, None);
                let members = self.member_sample(cx);
                cx.send(from, Message::JoinReply { members });
            }
            Message::JoinReply { members } => {
                self.merge_members(cx, members, from);
                if self.join.take().is_some() {
                    let members = self.up_count();
                    cx.emit(Event::Joined { members });
                    self.add_member_rumor(self.me);
                }
            }
            Message::MemberDigest { complete, rows } => {
                self.on_member_digest(cx, from, complete, rows)
            }
            Message::MemberDelta { members, want } => {
                if want.len() > MAX_ITEMS {
                    self.rejected.oversized_messages += 1;
                    return;
                }
                self.merge_members(cx, members, from);
                if want.is_empty() {
                    return;
                }
                let records = want.iter().filter_map(|p| {
                    if *p == self.me {
                        Some(self.self_update())
                    } else {
                        self.update_of(p)
                    }
                });
                let budget = self.config.max_message_bytes;
                let members = fit_records(budget, cx.rng(), Vec::new(), records, 0);
                if !members.is_empty() {
                    cx.send(
                        from,
                        Message::MemberDelta {
                            members,
                            want: Vec::new(),
                        },
                    );
                }
            }
            Message::Gossip {
                seq,
                feedback,
                members,
                entries,
            } => self.on_gossip(cx, from, seq, feedback, members, entries),
            Message::GossipReply { seq, known } => self.on_feedback(cx, seq, known),
            Message::Syn {
                exchange,
                mut digest,
            } => {
                if !self.check_digest(&mut digest) {
                    return;
                }
                let budget = self.config.max_message_bytes;
                let request = match exchange {
                    Exchange::Pull => Vec::new(),
                    Exchange::Push | Exchange::PushPull => {
                        let mut r = self.store.behind(&digest);
                        let fit = budget / 2 / item_len(&(self.me, MAX_VERSION)).max(1);
                        r.truncate(fit);
                        r
                    }
                };
                let deltas = match exchange {
                    Exchange::Push => Vec::new(),
                    Exchange::Pull | Exchange::PushPull => {
                        let room = budget.saturating_sub(item_len(&request));
                        self.store.deltas_for(&digest, room, cx.rng())
                    }
                };
                if !deltas.is_empty() || !request.is_empty() {
                    cx.send(from, Message::SynAck { deltas, request });
                }
            }
            Message::SynAck { deltas, request } => {
                self.receive_deltas(cx, deltas);
                if request.is_empty() || self.config.exchange == Exchange::Pull {
                    return;
                }
                let mut d = Digest {
                    complete: false,
                    versions: request,
                };
                if !self.check_digest(&mut d) {
                    return;
                }
                let deltas =
                    self.store
                        .deltas_from(d.versions, self.config.max_message_bytes, cx.rng());
                if !deltas.is_empty() {
                    cx.send(from, Message::Delta { deltas });
                }
            }
            Message::Delta { deltas } => self.receive_deltas(cx, deltas),
        }
    }

    fn handle_timer(&mut self, cx: &mut Cx<'_, Self>, timer: Timer) {
        match timer {
            Timer::Tick => self.on_tick(cx),
            Timer::Probe => self.on_probe(cx),
            Timer::ProbeTimeout { seq } => self.on_probe_timeout(cx, seq),
            Timer::Suspicion { peer, incarnation } => {
                if self.phase == Phase::Gone {
                    return;
                }
                let Some(m) = self.member(&peer) else {
                    return;
                };
                if m.state == MemberState::Suspect && m.incarnation == incarnation {
                    let u = MemberUpdate {
                        peer,
                        incarnation,
                        state: MemberState::Dead,
                        addrs: Vec::new(),
                    };
                    self.on_member_update(cx, u, None);
                }
            }
            Timer::MemberSync => {
                if self.phase != Phase::Running {
                    return;
                }
                if let Some(p) = self.sync_partner(cx) {
                    let (complete, rows) = self.member_digest(cx);
                    cx.send(p, Message::MemberDigest { complete, rows });
                }
                cx.set_timer(self.config.member_sync_period, Timer::MemberSync);
            }
            Timer::JoinRetry { attempt } => {
                if let Some(j) = &mut self.join
                    && j.attempt == attempt
                {
                    j.attempt += 1;
                    self.on_join_attempt(cx);
                }
            }
        }
    }

    fn handle_command(&mut self, cx: &mut Cx<'_, Self>, cmd: Command) {
        let running = self.phase == Phase::Running;
        match cmd {
            Command::Join { seeds } => {
                if !running || !matches!(self.view, View::Swim(_)) {
                    return;
                }
                let seeds: Vec<PeerId> = seeds.into_iter().filter(|s| *s != self.me).collect();
                self.join = Some(Join { seeds, attempt: 0 });
                self.on_join_attempt(cx);
            }
            Command::Leave => {
                if !running {
                    return;
                }
                self.phase = Phase::Leaving { ticks: LEAVE_TICKS };
                self.add_member_rumor(self.me);
            }
            Command::Publish {
                request,
                key,
                value,
            } => {
                self.write(cx, request, key, Some(value));
            }
            Command::Delete { request, key } => {
                let live = self
                    .store
                    .get(&self.me, &key)
                    .is_some_and(|e| e.value.is_some());
                if !live {
                    cx.emit(Event::CommandFailed {
                        request,
                        error: GossipError::NotFound,
                    });
                    return;
                }
                self.write(cx, request, key, None);
            }
        }
    }

    fn handle_peer_down(&mut self, _cx: &mut Cx<'_, Self>, _peer: PeerId) {
        // A hint only: SWIM's probes and suspicion decide; acting on transport hints would
        // let one flaky connection declare a member dead.
    }
}

impl Gossip {
    fn write(&mut self, cx: &mut Cx<'_, Self>, request: u64, key: String, value: Option<Vec<u8>>) {
        let fail = |cx: &mut Cx<'_, Self>, error| cx.emit(Event::CommandFailed { request, error });
        if self.phase != Phase::Running {
            return fail(cx, GossipError::NotRunning);
        }
        if key.len() > self.config.max_key_len {
            return fail(cx, GossipError::KeyTooLong(self.config.max_key_len));
        }
        if value
            .as_ref()
            .is_some_and(|v| v.len() > self.config.max_value_len)
        {
            return fail(cx, GossipError::ValueTooLarge(self.config.max_value_len));
        }
        let version = self.store.watermark(&self.me) + 1;
        let deleted = value.is_none();
        let older = self.store.get(&self.me, &key).map(|e| e.version);
        match self
            .store
            .apply(self.me, &key, version, value, &self.config)
        {
            Ok(_) => {}
            Err(_) => return fail(cx, GossipError::CapacityReached),
        }
        cx.emit(Event::EntryUpdated {
            origin: self.me,
            key: key.clone(),
            version,
            deleted,
        });
        cx.emit(Event::Published { request, version });
        if self.config.mode != Mode::AntiEntropy {
            if let Some(v) = older {
                self.rumors.remove(&RumorKey::Data(self.me, v));
            }
            self.add_rumor(RumorKey::Data(self.me, version), key);
        }
    }
}

#[cfg(test)]
mod tests;
