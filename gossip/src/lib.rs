//! Gossip: membership and versioned data spread by rumor mongering and anti-entropy, as a
//! sans-IO core ([`Gossip`] implements [`peerlab_overlay::Protocol`]).
//!
//! # Layout
//!
//! One file per machine or role, named after the papers' vocabulary:
//!
//! - `lib.rs` (this file): the [`Gossip`] core — its state, getters, the [`Protocol`]
//!   dispatch and the gossip round ([`Timer::Tick`]) — with its [`Command`]s,
//!   [`Event`]s, [`Timer`]s and [`Error`].
//! - `config.rs`: [`Config`] with presets ([`Config::lan`], [`Config::wan`],
//!   [`Config::synchronous_rounds`]) and the enums that select the algorithms.
//! - `message.rs`: the wire [`Message`]s and their bounds.
//! - `members.rs`: the member table, SWIM's precedence rules, and the ideal
//!   [`StaticView`].
//! - `swim.rs`: SWIM failure detection — probes, indirect probes, suspicion, refutation
//!   by incarnation, joining (Das et al., DSN 2002).
//! - `member_sync.rs`: the periodic digest/delta push-pull of the member table that
//!   catches what membership rumors missed.
//! - `rumor.rs`: rumor mongering (SIR) with Demers' four ways of losing interest
//!   (Demers et al., PODC 1987); membership updates ride on the same pushes.
//! - `anti_entropy.rs`: Scuttlebutt reconciliation — digests, deltas cut as per-origin
//!   prefixes, push / pull / push-pull (van Renesse et al., 2008).
//! - `data.rs`: local writes and the activation of received versions.
//! - `store.rs`: the versioned per-origin data with its watermarks.
//! - `partners.rs`: whom to gossip with — uniform members or a partial view kept uniform
//!   by reservoir sampling.
//! - `cadence.rs`: when the push-pulls run — at their periods while news arrives, slowing
//!   to memberlist's size-scaled push-pull period at rest.
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
//!   never sent while an older one is left out (`anti_entropy.rs`).
//!
//! [`Mode::Combined`] (the default) runs both: rumors for speed, anti-entropy so that the
//! residue rumor mongering leaves is eventually reached.
//!
//! # Quiet at rest
//!
//! A group with nothing new to say sends only SWIM's probes and, now and then, a push-pull:
//!
//! - a round without hot rumors sends nothing;
//! - the push-pulls (data anti-entropy, member sync) run at their periods while news
//!   arrives and back off while it does not, up to [`Config::push_pull_rest`] scaled by
//!   group size as memberlist scales its push-pull (30 s up to 32 members, 90 s at 100,
//!   150 s at 300; [`rest_period`]); any news — a new version, a join, a suspicion, a
//!   death — brings them back to their periods (`cadence.rs`);
//! - so that news needs no fast anti-entropy, a data rumor gets memberlist's budget of
//!   `4 · ⌈log10(N + 1)⌉` transmissions before its [`Variant`] may drop it
//!   ([`Config::data_retransmit_mult`]), and a rumor a node has just learned is pushed at
//!   once rather than at its next round ([`Config::eager_push`], at most once per round).
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
//! (with its addresses, ≈ 120 bytes) both ways and merge each one. Departed members stay
//! as tombstones for [`Config::tombstone_expiry`], members declared dead for
//! [`Config::dead_expiry`]: member syncs go to them now and then, so a member that was only
//! cut off is found again and the two sides of a healed partition meet.
//!
//! **Local health (Lifeguard).** A member that is itself slow — an overloaded machine, a
//! stalled event loop — times out its probes of healthy members and accuses them; their
//! refutations then load everyone further. Following Lifeguard (Dadgar, Phillips, Currey,
//! DSN Workshops 2018) and memberlist, a node keeps a local health score that rises when its
//! probes fail without the relays' `Nack` (a relay that cannot reach the target says so
//! after 80 % of its probe timeout, so a healthy prober of a dead member is not blamed) and
//! when it must refute a suspicion of itself, and falls with every answered probe; its probe
//! period and timeout are multiplied by `score + 1`, up to
//! [`Config::max_health_multiplier`] (`health.rs`). The bounds below hold for a healthy node.
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

mod anti_entropy;
mod budget;
mod cadence;
mod config;
mod data;
mod health;
mod member_sync;
mod members;
mod message;
mod partners;
mod record;
mod rumor;
mod store;
mod swim;

use std::time::Duration;

use peerlab_overlay::{ConfigError, Cx, Instant, Keypair, Offence, PeerId, Protocol, Signature};

pub use cadence::{PUSH_PULL_SCALE_THRESHOLD, rest_period};
pub use config::{
    Activation, Config, Exchange, MAX_HEALTH_MULTIPLIER, MAX_PARTNER_VIEW, MAX_VERSION, Mode,
    Variant,
};
pub use members::{Member, MemberState, StaticView};
pub use message::{Digest, Entry, MAX_ITEMS, MemberRow, MemberUpdate, Message, OriginDelta};
pub use record::{MEMBER_DOMAIN, VerifiedRecords};
pub use store::{Rejection, StoredEntry};

use cadence::Cadence;
use data::Pending;
use health::LocalHealth;
use member_sync::CatchUp;
use members::{Table, View};
use partners::Partners;
use rumor::Rumors;
use store::Store;
use swim::{Join, Probe, Relay};

/// Why a command or configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The configuration is inconsistent; nothing was started.
    #[error(transparent)]
    Config(#[from] ConfigError),
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
    /// [`Event::Published`] or [`Event::CommandFailed`] carrying the same `req`.
    Publish {
        /// Caller-chosen request id echoed in the answer.
        req: u64,
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Delete `key` (a versioned tombstone). Answered like `Publish`.
    Delete {
        /// Caller-chosen request id echoed in the answer.
        req: u64,
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
    /// A member held dead is alive again (after its `MemberUp`): it was only cut off — a
    /// partition, a frozen process — and may have been part of another overlay meanwhile.
    MemberBack {
        /// The member.
        peer: PeerId,
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
        req: u64,
        /// The version it was given.
        version: u64,
    },
    /// A command was refused.
    CommandFailed {
        /// The command's request id.
        req: u64,
        /// Why.
        error: Error,
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
    /// The indirect probe this node relays as `seq` may be owed a nack.
    RelayNack {
        /// The relay's own sequence number.
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
    /// Items refused because a cap (members, origins, entries, pending) or the data budget
    /// is reached.
    pub over_capacity: u64,
    /// Member records whose signature is not their member's (see `record.rs`).
    pub forged: u64,
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
            + self.forged
    }
}

/// The node's own life cycle.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Leaving { ticks: u32 },
    Gone,
}

/// The gossip core. See the [crate docs](crate).
///
/// Its state is split by role: the membership view (`members.rs`, driven by `swim.rs` and
/// `member_sync.rs`), the data store (`store.rs`, `data.rs`), hot rumors (`rumor.rs`),
/// the partial view of partners (`partners.rs`). Each of those files holds the handlers of
/// its role as an `impl Gossip` block; this one holds the dispatch.
pub struct Gossip {
    me: PeerId,
    /// This node's key: it signs this node's member record.
    key: Keypair,
    addrs: Vec<String>,
    /// This node's signature of its current record (see `record.rs`).
    signature: Signature,
    config: Config,
    incarnation: u64,
    view: View,
    store: Store,
    rumors: Rumors,
    pending: Vec<Pending>,
    /// Bytes the pending versions cost (`budget.rs`).
    pending_bytes: usize,
    probe: Option<Probe>,
    probe_order: Vec<PeerId>,
    relays: std::collections::BTreeMap<u64, Relay>,
    /// Lifeguard's local health score (`health.rs`).
    health: LocalHealth,
    seq: u64,
    tick: u64,
    ae_every: u64,
    /// Bumped by every news: a new version, any change of the member table (`cadence.rs`).
    news: u64,
    /// When the data anti-entropy runs (`cadence.rs`).
    ae_cadence: Cadence,
    /// When the member sync runs (`cadence.rs`).
    sync_cadence: Cadence,
    rejected: Rejected,
    phase: Phase,
    join: Option<Join>,
    /// Whether a seed has answered a join of this node's (in this life).
    joined: bool,
    /// Newer records to send back to the sender of stale suspicions (see `swim.rs`).
    corrections: Vec<MemberUpdate>,
    /// The partial view (see [`Config::partner_view`]).
    partners: Partners,
    /// When the member table last grew and when a probe's member count last made this
    /// node ask for a sync (`member_sync.rs`, "Stragglers").
    catch_up: CatchUp,
    /// The worst offence of the message being handled, reported against its sender once
    /// the message is done (one report per message, however many of its items were bad).
    offence: Option<Offence>,
    /// A memo of verified records shared with other cores of this process, if any.
    verified: Option<VerifiedRecords>,
}

impl Gossip {
    /// A node with SWIM membership that knows nobody yet (send [`Command::Join`]). `key` is
    /// the node's key: its id, and the signer of its member record.
    pub fn new(key: Keypair, addrs: Vec<String>, config: Config) -> Result<Gossip, Error> {
        let mut g = Gossip::build(key, addrs, config, View::Swim(Table::default()))?;
        g.sign_self();
        Ok(g)
    }

    fn build(
        key: Keypair,
        addrs: Vec<String>,
        config: Config,
        view: View,
    ) -> Result<Gossip, Error> {
        config.validate()?;
        let ae_every = (config.anti_entropy_period.as_micros() / config.period.as_micros().max(1))
            .max(1) as u64;
        let mut addrs = addrs;
        addrs.truncate(config.max_addrs);
        addrs.retain(|a| a.len() <= config.max_addr_len);
        let health = LocalHealth::new(config.max_health_multiplier);
        Ok(Gossip {
            me: key.peer_id(),
            key,
            addrs,
            signature: record::UNSIGNED,
            config,
            incarnation: 0,
            view,
            store: Store::default(),
            rumors: Rumors::default(),
            pending: Vec::new(),
            pending_bytes: 0,
            probe: None,
            probe_order: Vec::new(),
            relays: std::collections::BTreeMap::new(),
            health,
            seq: 0,
            tick: 0,
            ae_every,
            news: 0,
            ae_cadence: Cadence::default(),
            sync_cadence: Cadence::leaping(),
            rejected: Rejected::default(),
            phase: Phase::Running,
            join: None,
            joined: false,
            corrections: Vec::new(),
            partners: Partners::default(),
            catch_up: CatchUp::default(),
            offence: None,
            verified: None,
        })
    }

    /// A node with SWIM membership whose table starts with `members` (no events are emitted
    /// for them): a restart from a saved table, or a simulated group that starts formed.
    /// The records must be signed by their members ([`MemberUpdate::alive`]); they are
    /// trusted, not verified, since they come from this node's caller, not from a peer.
    pub fn with_members(
        key: Keypair,
        addrs: Vec<String>,
        config: Config,
        members: impl IntoIterator<Item = MemberUpdate>,
    ) -> Result<Gossip, Error> {
        let mut g = Gossip::new(key, addrs, config)?;
        let me = g.me;
        if let View::Swim(t) = &mut g.view {
            for u in members {
                if u.peer == me {
                    continue;
                }
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
        key: Keypair,
        view: StaticView,
        config: Config,
    ) -> Result<Gossip, Error> {
        Gossip::build(key, Vec::new(), config, View::Static(view))
    }

    /// Shares `memo` of verified member records with the other cores of this process that
    /// hold it (a simulated group): each record is then verified once for all of them. It
    /// changes no result, only how often the same signature is checked (see `record.rs`).
    pub fn share_verified(&mut self, memo: VerifiedRecords) {
        self.verified = Some(memo);
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
        self.partners.peers()
    }

    /// Number of members that are alive or suspect (the static view's size minus this node).
    pub fn up_count(&self) -> usize {
        match &self.view {
            View::Swim(t) => t.up_count(),
            View::Static(v) => v.len_without(&self.me),
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
        self.rumors.data_len()
    }

    /// Versions received but not yet active ([`Activation::CycleEnd`]).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Counters of refused input.
    pub fn rejected(&self) -> &Rejected {
        &self.rejected
    }

    /// Bytes the stored data and the versions pending activation cost, against
    /// [`Config::data_budget`].
    pub fn data_bytes(&self) -> usize {
        self.store.bytes() + self.pending_bytes
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

    // ---- helpers shared by the roles ----

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Whether `seq` could answer something this node sent (sequence numbers are issued in
    /// order; a later answer may have lost a race with its timeout, a higher one cannot).
    fn issued(&self, seq: u64) -> bool {
        seq <= self.seq
    }

    /// Notes that the message being handled broke a rule (see [`Gossip::offence`]).
    fn offend(&mut self, offence: Offence) {
        if self
            .offence
            .is_none_or(|o| o.severity() < offence.severity())
        {
            self.offence = Some(offence);
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

    /// The longest wait of a push-pull of period `base` at rest, in periods
    /// ([`Config::push_pull_rest`] scaled by the group's size; 1 without it).
    fn rest_periods(&self, base: Duration) -> u64 {
        self.config.push_pull_rest.map_or(1, |rest| {
            cadence::periods_in(cadence::rest_period(rest, self.up_count() + 1), base)
        })
    }

    /// Notes news: the push-pulls return to their base periods (`cadence.rs`).
    fn note_news(&mut self) {
        self.news = self.news.wrapping_add(1);
    }

    fn update_of(&self, p: &PeerId) -> Option<MemberUpdate> {
        match &self.view {
            View::Swim(t) => t.update_of(p),
            View::Static(_) => None,
        }
    }

    // ---- the round ----

    fn on_tick(&mut self, cx: &mut Cx<'_, Self>) {
        if self.phase == Phase::Gone {
            return;
        }
        self.tick += 1;
        // 1. What was learned during the last cycle becomes active.
        self.activate_pending(cx);
        // 2. Rumor mongering.
        self.push_rumors(cx);
        // 3. Anti-entropy.
        if self.phase == Phase::Running
            && self.config.mode != Mode::Rumor
            && self.tick.is_multiple_of(self.ae_every)
        {
            // In combined mode rumors carry the news and the exchange is a backstop that
            // may slow down at rest; otherwise it is the only carrier and never does.
            let rest = match self.config.mode {
                Mode::Combined => self.rest_periods(self.config.anti_entropy_period),
                Mode::AntiEntropy | Mode::Rumor => 1,
            };
            if self.ae_cadence.due(self.news, rest) {
                self.start_exchange(cx);
            }
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
        self.offence = None;
        self.dispatch(cx, from, msg);
        if let Some(offence) = self.offence.take() {
            cx.penalize(from, offence);
        }
    }

    fn handle_timer(&mut self, cx: &mut Cx<'_, Self>, timer: Timer) {
        match timer {
            Timer::Tick => self.on_tick(cx),
            Timer::Probe => self.on_probe(cx),
            Timer::ProbeTimeout { seq } => self.on_probe_timeout(cx, seq),
            Timer::RelayNack { seq } => self.on_relay_nack(cx, seq),
            Timer::Suspicion { peer, incarnation } => {
                self.on_suspicion_timeout(cx, peer, incarnation)
            }
            Timer::MemberSync => self.on_member_sync(cx),
            Timer::JoinRetry { attempt } => self.on_join_retry(cx, attempt),
        }
    }

    fn handle_command(&mut self, cx: &mut Cx<'_, Self>, cmd: Command) {
        match cmd {
            Command::Join { seeds } => self.join(cx, seeds),
            Command::Leave => self.leave(),
            Command::Publish { req, key, value } => self.write(cx, req, key, Some(value)),
            Command::Delete { req, key } => self.delete(cx, req, key),
        }
    }

    fn handle_peer_down(&mut self, _cx: &mut Cx<'_, Self>, _peer: PeerId) {
        // A hint only: SWIM's probes and suspicion decide; acting on transport hints would
        // let one flaky connection declare a member dead.
    }
}

impl Gossip {
    /// Routes a message to its role's handler.
    fn dispatch(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Message) {
        match msg {
            Message::Ping { seq, members } => self.on_ping(cx, from, seq, members),
            Message::Ack { seq, members } => self.on_ack(cx, from, seq, members),
            Message::PingReq { seq, target } => self.on_ping_req(cx, from, seq, target),
            Message::IndirectAck { seq, target } => self.on_indirect_ack(seq, target),
            Message::Nack { seq } => self.on_nack(from, seq),
            Message::Join {
                incarnation,
                addrs,
                signature,
            } => self.on_join(cx, from, incarnation, addrs, signature),
            Message::JoinReply { members } => self.on_join_reply(cx, from, members),
            Message::MemberDigest { complete, rows } => {
                self.on_member_digest(cx, from, complete, rows)
            }
            Message::MemberDelta { members, want } => self.on_member_delta(cx, from, members, want),
            Message::Gossip {
                seq,
                feedback,
                members,
                entries,
            } => self.on_gossip(cx, from, seq, feedback, members, entries),
            Message::GossipReply { seq, known } => self.on_feedback(cx, seq, known),
            Message::Syn { exchange, digest } => self.on_syn(cx, from, exchange, digest),
            Message::SynAck { deltas, request } => self.on_syn_ack(cx, from, deltas, request),
            Message::Delta { deltas } => self.receive_deltas(cx, deltas),
        }
    }
}

#[cfg(test)]
mod tests;
