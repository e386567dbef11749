//! Chord with virtual nodes, successor lists and replicated key/value storage, as a sans-IO
//! core.
//!
//! # Protocol
//!
//! Every peer runs `V` virtual nodes ([`Config::vnodes`]) at `SHA-1(peer_id ‖ u16_be(i))` on
//! the 160-bit ring (Stoica et al., *Chord*, SIGCOMM 2001 / ToN 2003). A key's owner is its
//! successor: the first virtual node at or after `SHA-1(key)`. Each virtual node keeps a
//! predecessor, a successor list of length `r` and a finger table (`finger[i] =
//! successor(n + 2^i)`), stored compactly as runs of equal entries.
//!
//! Ring maintenance follows Pamela Zave's corrected protocol (*Reasoning about identifier
//! spaces: how to make Chord correct*, IEEE TSE 2017), not the original pseudocode:
//!
//! - **join** looks up the new node's own id to find its successor, checks that successor is
//!   alive by fetching its state, and copies its successor list; the predecessor starts
//!   unknown;
//! - **stabilize** asks the first *live* successor for its predecessor and successor list;
//!   a successor that does not answer within its request timeout (below) is dropped and
//!   the next one is asked at once; a better successor candidate (the successor's predecessor)
//!   is adopted only after it answered a liveness check;
//! - **notify / rectify**: a node adopts a notifier as predecessor when it has none (a dead
//!   predecessor is cleared by the periodic check) or the notifier lies between the old
//!   predecessor and itself;
//! - **fingers** are only an optimisation, refreshed one index per virtual node per
//!   fix-fingers tick: a finger is first checked with the finger itself (is its
//!   predecessor at or past the finger's start? then nodes joined in between and the start
//!   is looked up), so a ring at rest confirms fingers in one exchange and a node talks
//!   only to the peers in its own tables; missing fingers are looked up. Indices a
//!   successor list already determines are not stored.
//! - **adaptive maintenance** ([`Config::max_backoff`], off by default): each periodic
//!   task runs at its period while the ring around the peer changes and backs off
//!   exponentially while it is quiet (Ghinita & Teo, "An Adaptive Stabilization Framework
//!   for Distributed Hash Tables", IPDPS 2006). A failure notice about a peer in the
//!   tables counts as a change, so a death is handled at the base period; repair backs
//!   off only on a peer that holds no record. A node's LAN profile runs it
//!   ([`LAN_MAX_BACKOFF`]: 1 s under change, 32 s at rest).
//! - **successor hints** (beyond the paper, for many concurrent joins): a
//!   `SuccessorHint { candidate }` names a possible closer successor. A joining virtual
//!   node sends one to the predecessor its lookup found, a node that takes a closer
//!   predecessor sends one to the predecessor it displaced, and a node whose successor
//!   moves closer sends one to the new successor about the old one when that lies just
//!   after it (interleaved chains of joiners). The receiver checks a candidate exactly as
//!   stabilize checks a successor's predecessor — it asks the candidate and adopts it only
//!   once it answered — and passes a candidate past its own successor on along the ring
//!   (bounded by `MAX_HINT_FORWARDS`), so a false hint costs an exchange, never
//!   correctness. A candidate's answer continues the same stabilize round, so walking back
//!   to a much closer successor costs a round trip per node, not a period; after
//!   `WALK_BEFORE_LOOKUP` steps the node also looks its successor up through other peers.
//!   Measured with `peerlab sim startup` (docs/experiments/testnet.md).
//!
//! Liveness is judged only by this core's own request timeouts; the driver's
//! `handle_peer_down` is a hint that triggers a check. A request's timeout is its peer's
//! retransmission timeout (Jacobson's rule as RFC 6298 states it: smoothed round trip plus
//! four times its mean deviation) clamped between [`Config::request_timeout`] and
//! [`MAX_RTO_FACTOR`] times that, and doubled, within that ceiling, after a timeout of a
//! peer known to be slow until its next answer; answers that arrive after their timeout
//! are samples too. On fast links every timeout is
//! `request_timeout`; a live peer that answers slower than that is evicted once and then
//! waited for, instead of being declared dead at every request.
//!
//! # Lookups and hops
//!
//! Lookups are iterative and driven by the asking peer: it asks the closest preceding node
//! it knows, which answers either "the owner is my successor" or with a few closer
//! candidates. A silent hop times out, the peer is dropped from every table, and the lookup
//! continues through the next-best candidate. A peer routes across all its virtual nodes'
//! tables at once, so **a hop is one message to another physical peer along the path from
//! the asking peer to the key's owner**: each `FindStep` request to another peer, plus the
//! final step to the owner unless the owner runs on the asking peer or on the peer that
//! answered last (that peer hands over to its own virtual node for free). Moving between a
//! peer's own virtual nodes is never counted. This is the paper's path length (nodes
//! traversed from the initiator to the key's successor).
//!
//! **Member hints** (`member_hints`). A peer that runs beside a membership protocol (the
//! node's SWIM gossip) tells the core which peers are up ([`Dht::member_up`],
//! [`Dht::member_down`]); their virtual nodes' ids follow from their peer ids, so the core
//! places them on the ring and starts each lookup of its own at the member just before the
//! key instead of at its closest finger. When membership is right that member answers with
//! the owner: two hops instead of about ½·log2 N, and a lookup meets one peer it may not
//! know instead of one per hop (Gupta, Liskov & Rodrigues, "One Hop Lookups for
//! Peer-to-Peer Overlays", HotOS 2003, with full membership from gossip). The rest of the
//! lookup — its checks, timeouts and detours — is unchanged, so a stale hint costs a
//! timeout or a referral. The same placement gives the fingers: fix-fingers takes the
//! member placed first at or after a finger's start as that finger without asking anyone,
//! so a joiner's finger table costs no lookups and a ring at rest exchanges messages with
//! its ring neighbours only (`core::fingers`); a member membership reports down leaves the
//! fingers at once. A core told of no members (the simulator's Chord experiments) routes
//! and checks fingers as in Chord.
//!
//! # Storage
//!
//! `put`/`get`/`delete` work on byte keys placed at `SHA-1(key)`. The owner stores a write
//! and pushes it to its replica set: the first `R − 1` successors that belong to peers
//! other than the owner and each other ([`Config::replicas`] = `R`). Every
//! [`Config::repair_period`] an owner sends each replica a digest of its range; the replica
//! asks for what it lacks (that is also the replicas' liveness check, usually faster than
//! stabilization). A death is acted on when it is detected, not at the next period: a peer
//! that evicts a silent peer offers its ranges at once to the replicas that took its place,
//! a successor takes a dead predecessor's range over as soon as a request to it times out,
//! and the new successor of a dead node is notified at once (`core::window`). A `get`
//! reads the owner and up to [`MAX_READ_REPLICAS`] replicas, returns the newest version
//! found and pushes it to the holders that answered older or nothing (read repair).
//! A peer that holds records nobody confirmed for a while hands them back
//! to their current owner. On join the old owner hands the new node its range; on a
//! graceful leave a node hands its range to its successor. Provider records (for swarm
//! discovery) are per-key sets of signed entries kept the same way, but in memory only: a
//! replica whose owner's repair offer lacks entries it holds gives them back, so an owner
//! that restarted (without any ring pointer changing) has its sets again one period later.
//!
//! # Records only their writer can change
//!
//! An open overlay admits anyone, so no peer is trusted with more than it can prove
//! (docs/wire.md has the byte-level rules):
//!
//! - every [`Record`] is signed by its writer's node key over the ring id, value or
//!   tombstone, [`Version`], claim and expiry; replicas verify it when it arrives and
//!   readers when a `GetReply` brings it. Versions are hybrid logical clocks (Kulkarni et
//!   al., OPODIS 2014): a version more than [`MAX_CLOCK_SKEW`] ahead of the receiver's
//!   clock is refused, and clocks advance past what they accept;
//! - a key belongs to its first writer until the record expires (at most
//!   [`MAX_RECORD_TTL`]): others are refused with [`Error::NotOwner`]. Conflicting first
//!   writes converge on the claim the key's owner holds, relayed by the owner while the
//!   replaced claim is younger than [`CLAIM_WINDOW`]; a claim's self-chosen date decides
//!   nothing, so a peer that sees a fresh write cannot take the key by back-dating one;
//! - a peer stores records only for keys it owns or replicates by its own view, and each
//!   writer only up to a quota ([`Config::max_writer_bytes`], [`Config::max_writer_records`]);
//!   a full store admits a writer holding less than its fair share (the budget divided by
//!   the writers present, in bytes and records) by evicting records of the writer holding
//!   the most beyond its share, so a crowd of identities cannot lock honest writers out;
//! - a provider entry is signed by its provider, announced only by the provider itself,
//!   lives at most [`MAX_PROVIDER_TTL`]; a full set drops expired entries, then one at
//!   random among the least recently announced;
//! - every rejection of a peer's input is reported as an [`Offence`](peerlab_overlay::Offence)
//!   against the sender.
//!
//! [`Config::defenses`] turns these rules off, for the lab's attack baselines only.
//!
//! # Layout
//!
//! - `message`: the wire messages ([`Message`], [`Record`], [`Version`], [`NodeRef`], …)
//!   and their bounds.
//! - `ring`: finger tables, closest-preceding selection, the ideal ring ([`IdealRing`]).
//! - `store`: the versioned store and provider sets ([`Store`]).
//! - `core`: the state machine [`Dht`], in rooms named after Chord's vocabulary —
//!   `lookup` (the iterative lookup as a pure state machine), `routing`,
//!   `member_hints` (where a lookup starts), `join`,
//!   `stabilize`, `fingers`, `backoff` (adaptive maintenance), `ops` (client storage
//!   operations), `repair` (replication and hand-off), `serve` (answering requests) and
//!   `pending` (requests in flight, answers and timeouts).

mod clock;
mod core;
mod message;
mod record;
mod ring;
mod store;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use crate::core::{
    CLOCK_GRANULARITY, Counters, Dht, Estimate, MAX_READ_REPLICAS, MAX_RTO_FACTOR, MAX_TIMED_OUT,
    MAX_TIMED_PEERS, MAX_UNIFY_CANDIDATES, Timer, VnodeView,
};
pub use message::{
    MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, MAX_FINGER_ENTRIES, MAX_HINT_FORWARDS,
    MAX_PROVIDERS_PER_MESSAGE, MAX_STEP_CANDIDATES, MAX_SUCCESSORS, Message, NodeRef,
    ProviderEntry, Record, Reject, Step, Version,
};
pub use peerlab_overlay::{ConfigError, Id, Keypair, PeerId, Signature};
pub use record::{
    CLAIM_WINDOW, MAX_CLOCK_SKEW, MAX_RECORD_TTL, PROVIDER_DOMAIN, RECORD_DOMAIN, RecordError,
};
pub use ring::{Fingers, IdealRing, IdealView};
pub use store::{
    Applied, Changed, Limits, MAX_TRACKED_CHANGES, PROVIDER_OVERHEAD, RECORD_OVERHEAD, Store,
    record_capacity,
};

/// DHT configuration. Defaults follow the Chord ToN experiments where they give one.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Virtual nodes per peer. Default 8: spreads load (the ToN paper's table shows the 99th
    /// percentile falling from 4.8× to about 2× the mean by 10) at 8× the routing state.
    pub vnodes: u16,
    /// Successor list length `r`. Default `2·⌈log2 N_expected⌉` capped at 32 (ToN uses
    /// `2·log2 N`), here for `N_expected = 1024`: 20. See [`Config::for_network`].
    pub successors: usize,
    /// Replicas per key, owner included (`R`). Default 3.
    pub replicas: usize,
    /// Mean period of stabilize. Default 30 s (ToN: uniform in 15–45 s).
    pub stabilize_period: Duration,
    /// Mean period of fix-fingers (one finger lookup per virtual node per tick). Default 30 s.
    pub fix_fingers_period: Duration,
    /// Mean period of the predecessor liveness check. Default 30 s.
    pub check_predecessor_period: Duration,
    /// Mean period of replica repair (digest exchange with replicas, hand-back of orphans).
    /// Default 10 s: replicas are checked faster than the ring is stabilized so data
    /// survives churn between stabilizations.
    pub repair_period: Duration,
    /// Periods are drawn uniformly from `period · [1 − jitter, 1 + jitter]`. Default 0.5
    /// (15–45 s for a 30 s period), so peers do not synchronise.
    pub jitter: f64,
    /// How long a request (a lookup hop, a state query, a store operation) may go
    /// unanswered before the peer is considered dead, at least: the timeout of a peer
    /// never answered, and the floor of the timeout a peer's round trips give it, whose
    /// ceiling is [`MAX_RTO_FACTOR`] times this. Default 1 s.
    pub request_timeout: Duration,
    /// Timed-out hops a lookup tolerates before it fails. Default 4.
    pub lookup_retries: u32,
    /// Client lookups (including those behind put/get) in flight at once; more are refused
    /// with [`Error::Busy`]. Default 256.
    pub max_concurrent_lookups: usize,
    /// Largest value accepted, bytes. Default 64 KiB.
    pub max_value_size: usize,
    /// Storage budget of the peer in bytes (values plus a fixed per-record overhead).
    /// Default 64 MiB.
    pub max_stored_bytes: u64,
    /// Providers kept per key. Default 32; a full set drops expired entries, then one at
    /// random among the least recently announced quarter.
    pub max_providers_per_key: usize,
    /// Lifetime a put or delete gets when its command names none. Default 24 h; at most
    /// [`MAX_RECORD_TTL`].
    pub record_ttl: Duration,
    /// Bytes of records one writer may hold on this peer (values plus the per-record
    /// overhead). Default 4 MiB, a sixteenth of the default store: one writer cannot make
    /// the store refuse honest writes; it takes sixteen writers' full shares in one
    /// peer's range to fill it.
    pub max_writer_bytes: u64,
    /// Records one writer may hold on this peer. Default 16 384: 4 MiB of empty records,
    /// so a writer of many tiny records meets the same bound as one of large ones.
    pub max_writer_records: u64,
    /// Whether the rules against hostile peers apply: signatures, ownership, the clock
    /// skew bound, storage only for keys this peer replicates, per-writer quotas and
    /// providers only from themselves. Default true. `false` is the behaviour without
    /// them, for the lab's attack experiments to measure what they buy; a real node
    /// refuses to start with it.
    pub defenses: bool,
    /// Adaptive maintenance: how far quiet rounds may stretch the periods above, as a
    /// factor (at most [`MAX_BACKOFF`]). While the ring around this peer changes, every
    /// periodic task runs at its period; after a round in which nothing changed it waits
    /// four times as many periods, up to this factor, and any change (a new successor or
    /// predecessor, an eviction, a join, a new finger, a failure notice about a peer in the
    /// tables) brings it back to one period — the
    /// adaptive stabilization of Ghinita & Teo (IPDPS 2006). Stabilization stays Chord's
    /// (and stays correct: only its timing changes); a ring at rest costs `max_backoff`
    /// times fewer maintenance messages, a ring under change is repaired at full speed.
    /// Default 1: fixed periods, as in the paper.
    pub max_backoff: u32,
}

/// Longest provider entry accepted: twice the hour an honest node's entries live (it
/// re-announces every 15 minutes), so an entry survives a missed announcement while one
/// that would outlive its provider's departure by a day, as a flood of fake entries wants
/// to, is refused.
pub const MAX_PROVIDER_TTL: Duration = Duration::from_secs(2 * 3600);

/// Longest provider entry accepted with [`Config::defenses`] off: what peers accepted
/// before provider entries were bounded (the lab's undefended baseline).
pub const UNDEFENDED_PROVIDER_TTL: Duration = Duration::from_secs(24 * 3600);

/// The [`Config::max_backoff`] of a node's LAN profile: maintenance at the LAN's 1 s period
/// while the ring around the node changes stretches to 32 s at rest — about the 30 s
/// period of the Chord paper's experiments, which a ring at rest needs no faster, since a
/// failure notice, a join or an eviction brings the base period back at once.
pub const LAN_MAX_BACKOFF: u32 = 32;

/// Largest [`Config::max_backoff`] accepted: beyond it a quiet node checks its
/// neighbours too rarely to notice a silent failure in useful time.
pub const MAX_BACKOFF: u32 = 64;

impl Default for Config {
    fn default() -> Self {
        Config {
            vnodes: 8,
            successors: successor_list_len(1024),
            replicas: 3,
            stabilize_period: Duration::from_secs(30),
            fix_fingers_period: Duration::from_secs(30),
            check_predecessor_period: Duration::from_secs(30),
            repair_period: Duration::from_secs(10),
            jitter: 0.5,
            request_timeout: Duration::from_secs(1),
            lookup_retries: 4,
            max_concurrent_lookups: 256,
            max_value_size: 64 * 1024,
            max_stored_bytes: 64 << 20,
            max_providers_per_key: 32,
            record_ttl: Duration::from_secs(24 * 3600),
            max_writer_bytes: 4 << 20,
            max_writer_records: 16 * 1024,
            defenses: true,
            max_backoff: 1,
        }
    }
}

/// `2·⌈log2 n⌉` capped at [`MAX_SUCCESSORS`], at least 2.
pub fn successor_list_len(n_expected: usize) -> usize {
    let log = usize::BITS - n_expected.max(2).saturating_sub(1).leading_zeros();
    (2 * log as usize).clamp(2, MAX_SUCCESSORS)
}

impl Config {
    /// Defaults with the successor list sized for a ring of about `n_expected` peers.
    pub fn for_network(n_expected: usize) -> Config {
        Config {
            successors: successor_list_len(n_expected),
            ..Config::default()
        }
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vnodes == 0 {
            return ConfigError::err("vnodes", "must be at least 1");
        }
        if self.successors == 0 || self.successors > MAX_SUCCESSORS {
            return ConfigError::err("successors", format!("must be in 1..={MAX_SUCCESSORS}"));
        }
        if self.replicas == 0 || self.replicas > self.successors + 1 {
            return ConfigError::err("replicas", "must be in 1..=successors+1");
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return ConfigError::err("jitter", "must be in [0, 1)");
        }
        for (field, d) in [
            ("request_timeout", self.request_timeout),
            ("stabilize_period", self.stabilize_period),
            ("fix_fingers_period", self.fix_fingers_period),
            ("check_predecessor_period", self.check_predecessor_period),
            ("repair_period", self.repair_period),
        ] {
            if d.is_zero() {
                return ConfigError::err(field, "must be positive");
            }
        }
        if self.max_backoff == 0 || self.max_backoff > MAX_BACKOFF {
            return ConfigError::err("max_backoff", format!("must be in 1..={MAX_BACKOFF}"));
        }
        if self.max_concurrent_lookups == 0 {
            return ConfigError::err("max_concurrent_lookups", "must be positive");
        }
        if self.max_providers_per_key == 0 {
            return ConfigError::err("max_providers_per_key", "must be positive");
        }
        if self.record_ttl.is_zero() || self.record_ttl > MAX_RECORD_TTL {
            return ConfigError::err("record_ttl", "must be positive and at most MAX_RECORD_TTL");
        }
        if self.max_writer_bytes == 0 || self.max_writer_records == 0 {
            return ConfigError::err("max_writer_bytes", "writer quotas must be positive");
        }
        Ok(())
    }
}

/// Commands to the DHT. Each carries a caller-chosen request id, answered by an
/// [`Event::Reply`] with the same id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Join the ring through any of `bootstrap`; an empty list creates a new ring.
    Join {
        /// Request id.
        req: u64,
        /// Peers already in the ring.
        bootstrap: Vec<PeerId>,
    },
    /// Peers known to be in the ring (from membership), asked when a virtual node's rejoin
    /// through this node's own routing state led nowhere (at most 64 are kept). Without
    /// them, a node whose successors were all dropped (false timeouts under overload) can
    /// only find its own virtual nodes and stays out of the ring.
    SetFallbackPeers {
        /// Live peers; this node is ignored.
        peers: Vec<PeerId>,
    },
    /// Peers that may be in another ring: membership saw them come back after it had
    /// declared them dead (a healed partition). The node looks its own place up through
    /// each, and a successor found in another ring merges the two (ring unification, see
    /// the `join` module). At most [`MAX_UNIFY_CANDIDATES`] wait at a time.
    CheckRing {
        /// The peers; this node is ignored.
        peers: Vec<PeerId>,
    },
    /// Leave gracefully: hand keys and pointers to neighbours, then stop.
    Leave {
        /// Request id.
        req: u64,
    },
    /// Find the owner of a ring id.
    Lookup {
        /// Request id.
        req: u64,
        /// The ring id.
        key: Id,
    },
    /// Store `value` under `key`, signed by this peer. The key then belongs to this peer
    /// until the record expires: other writers are refused ([`Error::NotOwner`]).
    Put {
        /// Request id.
        req: u64,
        /// The key bytes (placed at `SHA-1(key)`).
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// How long the record lives; `None` for [`Config::record_ttl`]. At most
        /// [`MAX_RECORD_TTL`].
        ttl: Option<Duration>,
    },
    /// Read `key`.
    Get {
        /// Request id.
        req: u64,
        /// The key bytes.
        key: Vec<u8>,
    },
    /// Delete `key`: a tombstone signed by this peer, which must own the key. The
    /// tombstone keeps the key this peer's for [`Config::record_ttl`].
    Delete {
        /// Request id.
        req: u64,
        /// The key bytes.
        key: Vec<u8>,
    },
    /// Announce this peer as a provider of `key` for `ttl` (capped at
    /// [`MAX_PROVIDER_TTL`]).
    AddProvider {
        /// Request id.
        req: u64,
        /// The key (e.g. a content id).
        key: Id,
        /// How long the entry lives.
        ttl: Duration,
    },
    /// Find providers of `key`.
    GetProviders {
        /// Request id.
        req: u64,
        /// The key.
        key: Id,
    },
}

/// Where a lookup ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The owner's peer.
    pub owner: PeerId,
    /// The owner virtual node.
    pub vnode: Id,
    /// Hops: messages to other peers on the path to the owner (see the crate docs; own
    /// virtual nodes are free).
    pub hops: u32,
}

/// A successful command's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Joined the ring (all virtual nodes).
    Joined,
    /// Left the ring.
    Left,
    /// Lookup result.
    Lookup(Route),
    /// A put or delete was stored at the owner under `version`.
    Stored {
        /// The route to the owner.
        route: Route,
        /// The version written.
        version: Version,
    },
    /// A get's result: `value` is `None` when the key is absent or deleted.
    Value {
        /// The route to the owner.
        route: Route,
        /// The value.
        value: Option<Vec<u8>>,
        /// The version read, if any record (value or tombstone) was found.
        version: Option<Version>,
    },
    /// A provider record was added.
    ProviderAdded {
        /// The route to the owner.
        route: Route,
    },
    /// Providers of a key, longest-lived first.
    Providers {
        /// The route to the owner.
        route: Route,
        /// The providers.
        providers: Vec<ProviderEntry>,
    },
}

/// Events the DHT emits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The answer to the command with id `req`.
    Reply {
        /// The command's request id.
        req: u64,
        /// Its result.
        result: Result<Reply, Error>,
    },
}

/// DHT errors. None of them changes stored data unless stated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The configuration is inconsistent; nothing was built.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command needs a joined node.
    #[error("not joined to a ring")]
    NotJoined,
    /// Join or create was asked of a node that is already joined or joining.
    #[error("already joined or joining")]
    AlreadyJoined,
    /// Joining failed: no bootstrap peer led to a live successor.
    #[error("join failed: {0}")]
    JoinFailed(String),
    /// Too many lookups are in flight.
    #[error("too many concurrent lookups (limit {0})")]
    Busy(usize),
    /// A lookup ran out of candidates, retries or hops.
    #[error("lookup failed after {hops} hops and {timeouts} timeouts")]
    LookupFailed {
        /// Hops sent.
        hops: u32,
        /// Hops that timed out.
        timeouts: u32,
    },
    /// The owner did not answer a storage request in time (after retries).
    #[error("storage request timed out")]
    Timeout,
    /// A value over [`Config::max_value_size`]; nothing was stored.
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// Value length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The store's byte budget ([`Config::max_stored_bytes`]) is exhausted; nothing stored.
    #[error("storage full: {needed} more bytes do not fit in {max}")]
    StoreFull {
        /// Bytes the record needs.
        needed: u64,
        /// The budget.
        max: u64,
    },
    /// Another writer holds the key and its record has not expired; nothing stored.
    #[error("key belongs to {owner}")]
    NotOwner {
        /// The writer that holds the key.
        owner: PeerId,
    },
    /// The writer's share of the store ([`Config::max_writer_bytes`],
    /// [`Config::max_writer_records`]) is used up; nothing stored.
    #[error("writer {writer:?} has used up its share of the store")]
    QuotaExceeded {
        /// The writer.
        writer: PeerId,
    },
    /// A message named a virtual node this peer does not run.
    #[error("unknown virtual node {0:?}")]
    UnknownVnode(Id),
    /// A finger index outside `0..160`.
    #[error("finger index {0} out of range")]
    BadFingerIndex(u16),
    /// A message broke a protocol bound (list too long).
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// The remote peer refused the request.
    #[error("remote refused: {0}")]
    Rejected(Reject),
    /// The node is leaving or has left.
    #[error("node is leaving")]
    Leaving,
    /// The write was applied in memory but could not be made durable (the node's database
    /// commit failed); it is not acknowledged and may be lost on a restart.
    #[error("the write could not be made durable: {0}")]
    NotDurable(String),
}
