//! The unstructured overlay and Gnutella-style search, as one sans-IO core.
//!
//! # The overlay
//!
//! Each node keeps a bounded set of neighbours ([`Config::min_degree`] ..=
//! [`Config::max_degree`]) and a small cache of other hosts. As in Gnutella 0.6, peers are
//! discovered with **Ping/Pong**: a Ping is flooded with a small TTL, every node that sees it
//! answers with a Pong naming itself, and Pongs travel back hop by hop along the reverse path
//! of their Ping (each node remembers where a Ping's GUID came from). Pongs that reach the
//! originator fill its host cache. A neighbour that says `Bye`, that the driver reports down,
//! or that stays silent for [`Config::neighbour_timeout`] is dropped, and the node connects to
//! cached hosts (or pings for new ones) until it is back at its minimum degree. Quiet
//! neighbours receive a TTL-1 Ping as keepalive every [`Config::keepalive_interval`].
//!
//! A connection is implicit: the first overlay message from an unknown peer makes it a
//! neighbour if there is room, and is answered with `Bye` otherwise. So a symmetric topology
//! handed to every node with [`Command::AddNeighbours`] costs no handshake traffic, and an
//! asymmetric one (say, from gossip membership) heals on first contact.
//!
//! # Search (Gnutella 0.6 routing rules)
//!
//! Query and QueryHit carry a 16-byte [`Guid`], a TTL and a hop count. On each hop the TTL
//! is decremented and the hop count incremented; a message is never forwarded once its TTL is
//! 0; a TTL above [`MAX_TTL`] from the network is clamped to it; a (type, GUID) already seen is
//! dropped (the seen cache is bounded and expires). A node whose [`Index`] matches every
//! keyword of a Query answers with a QueryHit, which travels back only along the reverse path
//! of its Query; a QueryHit whose Query this node never saw is dropped. A new query's TTL
//! defaults to [`DEFAULT_TTL`] (the spec: SHOULD be ≤ 7, MUST be ≤ 10).
//!
//! Three strategies can be chosen per search ([`Strategy`]), following Lv, Cao, Cohen, Li and
//! Shenker, *Search and Replication in Unstructured Peer-to-Peer Networks* (ICS 2002):
//!
//! - **Flood**: one Query with the search's TTL; the search ends after
//!   2·TTL·[`Config::hop_wait`].
//! - **Expanding ring**: floods with TTL 1, 2, 4, … (capped at the search's TTL), each with a
//!   fresh GUID, waiting 2·TTL·`hop_wait` after each ring, until enough distinct responders
//!   answered.
//! - **k random walkers**: `k` Walk messages each step to one random neighbour (not the one
//!   it came from, and — Lv's "state keeping" — preferring neighbours this node has not yet
//!   sent this walk to). Every [`Config::walk_check_every`] steps a walker pauses and checks
//!   back with the origin, which says whether to go on; a walker also dies after its step
//!   budget. A node on a walk answers directly to the origin with a WalkHit (as Lv's
//!   walkers report to the requester), so hits do not retrace a path of hundreds of hops.
//!
//! # Driving it
//!
//! Inputs follow [`Protocol`]; outputs go to the context. Everything that came from the
//! network and was refused is counted in [`Counters`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::index::{Index, IndexError, MAX_NAME_LEN, keywords};
pub use crate::neighbours::{Neighbour, Neighbours};

use crate::guid::Guid;
use crate::seen::SeenCache;
use crate::{Cx, Instant, PeerId, Protocol};

/// Largest TTL accepted from the network; larger values are clamped (Gnutella 0.6: MUST ≤ 10).
pub const MAX_TTL: u8 = 10;
/// TTL of a new query when the caller gives none (Gnutella 0.6: SHOULD ≤ 7).
pub const DEFAULT_TTL: u8 = 7;
/// Most keywords in one query; longer queries are refused (bounds the per-hop index work).
pub const MAX_TERMS: usize = 16;
/// Longest keyword in bytes; longer ones are refused.
pub const MAX_TERM_LEN: usize = 64;
/// Most names in one QueryHit or WalkHit from the network (bounds a hit's size).
pub const MAX_HIT_NAMES: usize = 64;
/// Upper bound for [`Config::max_degree`].
pub const MAX_DEGREE: usize = 4096;
/// Upper bound for the number of walkers of one search.
pub const MAX_WALKERS: u16 = 256;
/// Upper bound for [`Config::max_walk_steps`] (Lv et al. use 1024-step walkers).
pub const MAX_WALK_STEPS: u16 = 8192;
/// Upper bound for the capacity fields of [`Config`] (seen cache, index, parked walkers).
pub const MAX_CAPACITY: usize = 1 << 22;
/// Upper bound for [`Config::max_searches`].
pub const MAX_SEARCHES: usize = 1 << 16;
/// Most distinct responders a search remembers (hits are counted per responder).
pub const MAX_RESPONDERS: usize = 4096;

/// Configuration of the flooding core. Every field has a documented default
/// ([`Config::default`]) and bound ([`Config::validate`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Below this many neighbours the node connects to cached hosts or pings for new ones.
    /// Default 4. Must be ≤ `max_degree`.
    pub min_degree: usize,
    /// Most neighbours; messages from further peers are answered with `Bye`. Default 8,
    /// at most [`MAX_DEGREE`].
    pub max_degree: usize,
    /// Candidate hosts remembered from Pongs and [`Command::AddNeighbours`] overflow.
    /// Default 64, at most [`MAX_DEGREE`].
    pub host_cache: usize,
    /// Neighbours silent this long get a TTL-1 keepalive Ping; also the housekeeping period.
    /// Default 30 s; must be non-zero.
    pub keepalive_interval: Duration,
    /// A confirmed neighbour silent this long is dropped and replaced. Default 90 s; must be
    /// longer than `keepalive_interval` so a keepalive can be answered first.
    pub neighbour_timeout: Duration,
    /// A connection attempt (a host we pinged but never heard from) is given up after this.
    /// Default 10 s.
    pub connect_timeout: Duration,
    /// TTL of discovery Pings. Default 2, in 1..=[`MAX_TTL`].
    pub discovery_ttl: u8,
    /// Minimum gap between two discovery floods of this node. Default 10 s.
    pub discovery_interval: Duration,
    /// Entries in the seen-GUID routing table. Default 16 384, in 1..=[`MAX_CAPACITY`].
    /// Too small and answers of long searches lose their reverse path under load.
    pub seen_capacity: usize,
    /// How long a seen GUID is remembered (and its reverse path kept). Default 120 s; must
    /// exceed the longest wait of a search so its hits can still be routed.
    pub seen_ttl: Duration,
    /// Most shared names in the local index. Default 10 000, at most [`MAX_CAPACITY`].
    pub index_capacity: usize,
    /// Most names this node puts in one hit. Default 8, in 1..=[`MAX_HIT_NAMES`].
    pub max_hit_names: usize,
    /// Expected bound on one hop's delay. A flood or ring of TTL t waits 2·t·`hop_wait` for
    /// hits; a walk of s steps gives up after 2·s·`hop_wait`. Default 100 ms; non-zero.
    pub hop_wait: Duration,
    /// Concurrent searches this node runs as origin. Default 64, in 1..=[`MAX_SEARCHES`].
    pub max_searches: usize,
    /// A walker checks back with its origin every this many steps (Lv et al.: 4).
    /// Default 4, at least 1.
    pub walk_check_every: u16,
    /// Step budget accepted on a Walk from the network (larger budgets are clamped).
    /// Default 1024, in 1..=[`MAX_WALK_STEPS`].
    pub max_walk_steps: u16,
    /// Walkers parked here while their origin is asked whether to continue. Default 1024,
    /// in 1..=[`MAX_CAPACITY`]; a walker arriving when full is dropped.
    pub max_parked_walkers: usize,
    /// A parked walker whose origin does not answer within this is dropped. Default 10 s.
    pub park_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_degree: 4,
            max_degree: 8,
            host_cache: 64,
            keepalive_interval: Duration::from_secs(30),
            neighbour_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(10),
            discovery_ttl: 2,
            discovery_interval: Duration::from_secs(10),
            seen_capacity: 16_384,
            seen_ttl: Duration::from_secs(120),
            index_capacity: 10_000,
            max_hit_names: 8,
            hop_wait: Duration::from_millis(100),
            max_searches: 64,
            walk_check_every: 4,
            max_walk_steps: 1024,
            max_parked_walkers: 1024,
            park_timeout: Duration::from_secs(10),
        }
    }
}

pub use crate::ConfigError;

impl Config {
    /// Checks every field against its documented bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_degree == 0 || self.max_degree > MAX_DEGREE {
            return ConfigError::err("max_degree", format!("must be in 1..={MAX_DEGREE}"));
        }
        if self.min_degree > self.max_degree {
            return ConfigError::err("min_degree", "must not exceed max_degree");
        }
        if self.host_cache > MAX_DEGREE {
            return ConfigError::err("host_cache", format!("must be at most {MAX_DEGREE}"));
        }
        if self.keepalive_interval.is_zero() {
            return ConfigError::err("keepalive_interval", "must be non-zero");
        }
        if self.neighbour_timeout <= self.keepalive_interval {
            return ConfigError::err("neighbour_timeout", "must exceed keepalive_interval");
        }
        if self.connect_timeout.is_zero() {
            return ConfigError::err("connect_timeout", "must be non-zero");
        }
        if self.discovery_ttl == 0 || self.discovery_ttl > MAX_TTL {
            return ConfigError::err("discovery_ttl", format!("must be in 1..={MAX_TTL}"));
        }
        if self.seen_capacity == 0 || self.seen_capacity > MAX_CAPACITY {
            return ConfigError::err("seen_capacity", format!("must be in 1..={MAX_CAPACITY}"));
        }
        if self.hop_wait.is_zero() {
            return ConfigError::err("hop_wait", "must be non-zero");
        }
        let longest_ring = self.hop_wait * 2 * u32::from(MAX_TTL);
        if self.seen_ttl <= longest_ring {
            return ConfigError::err(
                "seen_ttl",
                format!("must exceed the longest search wait ({longest_ring:?})"),
            );
        }
        if self.index_capacity > MAX_CAPACITY {
            return ConfigError::err("index_capacity", format!("must be at most {MAX_CAPACITY}"));
        }
        if self.max_hit_names == 0 || self.max_hit_names > MAX_HIT_NAMES {
            return ConfigError::err("max_hit_names", format!("must be in 1..={MAX_HIT_NAMES}"));
        }
        if self.max_searches == 0 || self.max_searches > MAX_SEARCHES {
            return ConfigError::err("max_searches", format!("must be in 1..={MAX_SEARCHES}"));
        }
        if self.walk_check_every == 0 {
            return ConfigError::err("walk_check_every", "must be at least 1");
        }
        if self.max_walk_steps == 0 || self.max_walk_steps > MAX_WALK_STEPS {
            return ConfigError::err("max_walk_steps", format!("must be in 1..={MAX_WALK_STEPS}"));
        }
        if self.max_parked_walkers == 0 || self.max_parked_walkers > MAX_CAPACITY {
            return ConfigError::err(
                "max_parked_walkers",
                format!("must be in 1..={MAX_CAPACITY}"),
            );
        }
        if self.park_timeout.is_zero() {
            return ConfigError::err("park_timeout", "must be non-zero");
        }
        Ok(())
    }
}

/// How one search explores the overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// One flood with the search's TTL.
    Flood,
    /// Floods with TTL 1, 2, 4, … up to the search's TTL until enough hits arrived.
    ExpandingRing,
    /// `walkers` random walkers of at most `steps` steps each.
    RandomWalk {
        /// Number of walkers, 1..=[`MAX_WALKERS`].
        walkers: u16,
        /// Step budget of each walker, 1..=[`Config::max_walk_steps`].
        steps: u16,
    },
}

impl Strategy {
    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Flood => "flood",
            Strategy::ExpandingRing => "expanding-ring",
            Strategy::RandomWalk { .. } => "random-walk",
        }
    }
}

/// A message of the overlay and search protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Discovery or keepalive; flooded with a TTL, answered with a Pong.
    Ping {
        /// Message id.
        guid: Guid,
        /// Remaining hops.
        ttl: u8,
        /// Hops travelled.
        hops: u8,
    },
    /// Answer to a Ping, routed back along its path; names one reachable peer.
    Pong {
        /// The Ping's id.
        guid: Guid,
        /// Remaining hops.
        ttl: u8,
        /// Hops travelled.
        hops: u8,
        /// The peer that answered.
        peer: PeerId,
        /// How many names it shares.
        shared: u32,
    },
    /// The sender drops (or refuses) the connection.
    Bye,
    /// A keyword search, flooded with a TTL.
    Query {
        /// Message id.
        guid: Guid,
        /// Remaining hops.
        ttl: u8,
        /// Hops travelled.
        hops: u8,
        /// Keywords (lowercase, as [`keywords`] splits them); all must match.
        terms: Vec<String>,
    },
    /// Names matching a Query, routed back along the Query's path.
    QueryHit {
        /// The Query's id.
        guid: Guid,
        /// Remaining hops.
        ttl: u8,
        /// Hops travelled.
        hops: u8,
        /// The peer that shares the names.
        responder: PeerId,
        /// Matching names.
        names: Vec<String>,
    },
    /// A random walker (Lv et al.): steps to one neighbour at a time.
    Walk {
        /// The walk's id (shared by all walkers of one search).
        guid: Guid,
        /// Which walker of the search.
        walker: u16,
        /// Steps the walker may still take.
        steps_left: u16,
        /// Steps taken.
        hops: u16,
        /// The searching peer, for check-backs and hits.
        origin: PeerId,
        /// Keywords; all must match.
        terms: Vec<String>,
    },
    /// A node holding a parked walker asks the origin whether to go on.
    WalkCheck {
        /// The walk's id.
        guid: Guid,
        /// Which walker.
        walker: u16,
    },
    /// The origin's answer to a [`Message::WalkCheck`].
    WalkVerdict {
        /// The walk's id.
        guid: Guid,
        /// Which walker.
        walker: u16,
        /// Whether the walker continues.
        go: bool,
    },
    /// A walk found names here; sent straight to the origin.
    WalkHit {
        /// The walk's id.
        guid: Guid,
        /// Steps the walker had taken to reach the responder.
        hops: u16,
        /// Matching names.
        names: Vec<String>,
    },
}

impl crate::Message for Message {
    fn kind(&self) -> &'static str {
        match self {
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
            Message::Bye => "bye",
            Message::Query { .. } => "query",
            Message::QueryHit { .. } => "query_hit",
            Message::Walk { .. } => "walk",
            Message::WalkCheck { .. } => "walk_check",
            Message::WalkVerdict { .. } => "walk_verdict",
            Message::WalkHit { .. } => "walk_hit",
        }
    }
}

/// Message kinds that belong to searches (as opposed to overlay maintenance); experiments sum
/// these to count a search's messages.
pub const SEARCH_KINDS: [&str; 6] = [
    "query",
    "query_hit",
    "walk",
    "walk_check",
    "walk_verdict",
    "walk_hit",
];

/// Timers of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Periodic housekeeping: keepalives, timeouts, refilling the neighbour set.
    Tick,
    /// A search's current flood, ring or walk has had its time.
    Deadline {
        /// The search.
        req: u64,
        /// Which ring (0 for flood and walk); stale deadlines are recognised by it.
        ring: u8,
    },
}

/// Local commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Adds these peers as neighbours, as far as there is room; the rest become candidate
    /// hosts. No message is sent: the link becomes mutual on first contact (module docs).
    AddNeighbours(Vec<PeerId>),
    /// Remembers these peers as candidate hosts (say, members a membership service
    /// announced) without linking to them; while below `min_degree` the node connects to the
    /// newest ones with a TTL-1 hello Ping each, which a full host refuses with `Bye`. Unlike
    /// [`Command::AddNeighbours`] this never creates a one-sided link that a later Query
    /// would be refused (and lost) on.
    AddHosts(Vec<PeerId>),
    /// Shares a name in the local index (failure: [`Event::ShareRejected`]).
    Share {
        /// The name.
        name: String,
    },
    /// Stops sharing a name.
    Unshare {
        /// The name.
        name: String,
    },
    /// Starts a search; answered with [`Event::SearchHit`]s and one [`Event::SearchDone`], or
    /// one [`Event::SearchRejected`].
    Search {
        /// Caller-chosen id echoed in the events.
        req: u64,
        /// What to look for; split into keywords, all of which must match.
        terms: String,
        /// How to explore.
        strategy: Strategy,
        /// TTL of a flood, or the last ring of an expanding ring; [`DEFAULT_TTL`] if `None`.
        /// Ignored by random walks (they use their step budget).
        ttl: Option<u8>,
        /// Distinct responders wanted: an expanding ring stops growing and a walk stops once
        /// this many answered (at least 1).
        want_hits: u32,
    },
    /// Says `Bye` to every neighbour and forgets them; afterwards the node refuses new
    /// neighbours (it still answers walk check-backs of its own searches).
    Leave,
}

/// Events for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A responder answered a search (each responder is reported once per search).
    SearchHit {
        /// The search.
        req: u64,
        /// The peer sharing the names.
        responder: PeerId,
        /// Matching names.
        names: Vec<String>,
        /// Overlay hops (walk steps) from the origin to the responder.
        hops: u16,
    },
    /// A search finished.
    SearchDone {
        /// The search.
        req: u64,
        /// Distinct responders.
        hits: u32,
        /// Hops to the nearest responder, if any answered.
        first_hit_hops: Option<u16>,
        /// Floods sent (rings for an expanding ring; 1 otherwise).
        rings: u8,
    },
    /// A search command was refused; nothing was sent.
    SearchRejected {
        /// The search.
        req: u64,
        /// Why.
        error: Error,
    },
    /// A share command was refused; the index is unchanged.
    ShareRejected {
        /// The name.
        name: String,
        /// Why.
        error: IndexError,
    },
}

/// Why a command was refused. The core's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The search terms contain no keyword.
    #[error("search has no keywords")]
    NoTerms,
    /// More keywords than [`MAX_TERMS`].
    #[error("search has {0} keywords, more than {MAX_TERMS}")]
    TooManyTerms(usize),
    /// A keyword longer than [`MAX_TERM_LEN`] bytes.
    #[error("a keyword is {0} bytes, longer than {MAX_TERM_LEN}")]
    TermTooLong(usize),
    /// TTL outside 1..=[`MAX_TTL`].
    #[error("TTL must be in 1..={MAX_TTL}, got {0}")]
    BadTtl(u8),
    /// Walker count outside 1..=[`MAX_WALKERS`].
    #[error("random walk needs 1..={MAX_WALKERS} walkers, got {0}")]
    BadWalkers(u16),
    /// Walk step budget outside 1..=`max_walk_steps`.
    #[error("walk steps must be in 1..={max}, got {got}")]
    BadWalkSteps {
        /// Requested.
        got: u16,
        /// Configured maximum.
        max: u16,
    },
    /// The request id belongs to a search still running.
    #[error("request id {0} is already in use")]
    DuplicateRequest(u64),
    /// [`Config::max_searches`] searches are running.
    #[error("too many concurrent searches (limit {0})")]
    TooManySearches(usize),
}

/// Counters of what the core did and refused. Monotonic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Queries received from neighbours.
    pub queries_received: u64,
    /// Query copies forwarded.
    pub queries_forwarded: u64,
    /// Queries dropped because their GUID was already seen.
    pub duplicate_queries: u64,
    /// Queries this node answered from its index.
    pub queries_answered: u64,
    /// QueryHits forwarded along a reverse path.
    pub hits_routed: u64,
    /// QueryHits (or Pongs) dropped because their Query (Ping) was never seen here or its
    /// reverse-path neighbour is gone.
    pub unroutable: u64,
    /// Hits for a search that already finished.
    pub late_hits: u64,
    /// TTLs above [`MAX_TTL`] clamped.
    pub ttl_clamped: u64,
    /// Messages arriving with TTL 0 (or a walk with no steps left), dropped.
    pub ttl_zero: u64,
    /// Answers not forwarded because their TTL ran out on the way back.
    pub ttl_expired: u64,
    /// Pings dropped because their GUID was already seen.
    pub duplicate_pings: u64,
    /// Overlay messages from non-neighbours refused (set full), answered with Bye.
    pub refused_peers: u64,
    /// Messages with out-of-bounds content (too many or too long keywords or names).
    pub malformed: u64,
    /// Walk steps received.
    pub walk_steps: u64,
    /// Walk steps arriving at a node the walk had already visited.
    pub walk_revisits: u64,
    /// Walkers dropped: parking space full, park timeout, or stopped by the origin.
    pub walkers_dropped: u64,
    /// Walk check-backs and verdicts that match no walk here (stale or forged).
    pub walk_unknown: u64,
    /// Peers that became neighbours (any way).
    pub neighbours_added: u64,
    /// Neighbours lost (Bye, peer down, timeout).
    pub neighbours_lost: u64,
}

/// Message family in the seen table: Gnutella keys duplicates by (type, GUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    Ping,
    Query,
    Walk,
}

#[derive(Debug, Clone)]
struct Search {
    terms: Vec<String>,
    strategy: Strategy,
    max_ttl: u8,
    want: u32,
    ring: u8,
    ring_ttl: u8,
    guids: Vec<Guid>,
    responders: BTreeSet<PeerId>,
    first_hit_hops: Option<u16>,
}

#[derive(Debug, Clone)]
struct Parked {
    origin: PeerId,
    from: PeerId,
    steps_left: u16,
    hops: u16,
    terms: Vec<String>,
    since: Instant,
}

/// The overlay + search core. See the module docs.
#[derive(Debug, Clone)]
pub struct Flood {
    id: PeerId,
    config: Config,
    neighbours: Neighbours,
    index: Index,
    /// Seen (type, GUID) → the neighbour it came from (`None`: originated here).
    seen: SeenCache<(Family, Guid), Option<PeerId>>,
    /// Walk GUID → neighbours this node already sent that walk to (Lv's state keeping).
    /// Kept apart from `seen` so that flood entries stay small.
    walk_tried: SeenCache<Guid, Vec<PeerId>>,
    searches: BTreeMap<u64, Search>,
    by_guid: BTreeMap<Guid, u64>,
    parked: BTreeMap<(Guid, u16), Parked>,
    last_discovery: Option<Instant>,
    /// Set by [`Command::Leave`]: the node no longer accepts or seeks neighbours.
    left: bool,
    counters: Counters,
}

impl Flood {
    /// A core for peer `id`, or why `config` is invalid.
    pub fn new(id: PeerId, config: Config) -> Result<Flood, ConfigError> {
        config.validate()?;
        Ok(Flood {
            id,
            neighbours: Neighbours::new(config.max_degree, config.host_cache),
            index: Index::new(config.index_capacity),
            seen: SeenCache::new(config.seen_capacity, config.seen_ttl),
            walk_tried: SeenCache::new(config.seen_capacity, config.seen_ttl),
            searches: BTreeMap::new(),
            by_guid: BTreeMap::new(),
            parked: BTreeMap::new(),
            last_discovery: None,
            left: false,
            counters: Counters::default(),
            config,
        })
    }

    /// This peer.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The neighbour set.
    pub fn neighbours(&self) -> &Neighbours {
        &self.neighbours
    }

    /// The local index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// What the core did and refused so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Number of searches running with this node as origin.
    pub fn active_searches(&self) -> usize {
        self.searches.len()
    }

    // ----- overlay maintenance -----

    /// Accepts an overlay message from `from`: refreshes a neighbour, adopts an unknown peer
    /// if there is room, or refuses it with Bye.
    fn admit(&mut self, cx: &mut Cx<'_, Self>, from: PeerId) -> bool {
        if self.neighbours.heard(&from, cx.now()) {
            return true;
        }
        if !self.left && from != self.id && self.neighbours.insert(from, cx.now(), true) {
            self.counters.neighbours_added += 1;
            return true;
        }
        self.counters.refused_peers += 1;
        cx.send(from, Message::Bye);
        false
    }

    fn lose(&mut self, cx: &mut Cx<'_, Self>, peer: &PeerId) {
        if self.neighbours.remove(peer) {
            self.counters.neighbours_lost += 1;
            self.refill(cx);
        }
    }

    /// Tops the neighbour set up to `min_degree`: connect to cached hosts, else ping for more.
    fn refill(&mut self, cx: &mut Cx<'_, Self>) {
        if self.left {
            return;
        }
        while self.neighbours.len() < self.config.min_degree {
            let Some(host) = self.neighbours.take_host() else {
                break;
            };
            if host == self.id || !self.neighbours.insert(host, cx.now(), false) {
                continue;
            }
            self.counters.neighbours_added += 1;
            // The hello is a TTL-1 Ping: its Pong confirms the connection.
            self.ping(cx, &[host], 1);
        }
        if self.neighbours.len() < self.config.min_degree && !self.neighbours.is_empty() {
            let due = self
                .last_discovery
                .is_none_or(|t| cx.now().saturating_since(t) >= self.config.discovery_interval);
            if due {
                self.last_discovery = Some(cx.now());
                let all: Vec<PeerId> = self.neighbours.peers().collect();
                self.ping(cx, &all, self.config.discovery_ttl);
            }
        }
    }

    /// Sends one new Ping (one GUID) to `to`.
    fn ping(&mut self, cx: &mut Cx<'_, Self>, to: &[PeerId], ttl: u8) {
        if to.is_empty() {
            return;
        }
        let guid = Guid::random(cx.rng());
        self.seen.insert(cx.now(), (Family::Ping, guid), None);
        for &p in to {
            cx.send(p, Message::Ping { guid, ttl, hops: 0 });
        }
    }

    fn on_tick(&mut self, cx: &mut Cx<'_, Self>) {
        let now = cx.now();
        let gone = self.neighbours.expire(
            now,
            self.config.neighbour_timeout,
            self.config.connect_timeout,
        );
        self.counters.neighbours_lost += gone.len() as u64;
        let quiet = self.neighbours.quiet(now, self.config.keepalive_interval);
        if !quiet.is_empty() {
            self.ping(cx, &quiet, 1);
        }
        let timeout = self.config.park_timeout;
        let before = self.parked.len();
        self.parked
            .retain(|_, p| now.saturating_since(p.since) < timeout);
        self.counters.walkers_dropped += (before - self.parked.len()) as u64;
        self.seen.purge(now);
        self.refill(cx);
        cx.set_timer(self.config.keepalive_interval, Timer::Tick);
    }

    // ----- message handlers -----

    /// Clamps a TTL from the network; `None` if it is 0 (never forwarded, so never valid).
    fn accept_ttl(&mut self, ttl: u8) -> Option<u8> {
        if ttl == 0 {
            self.counters.ttl_zero += 1;
            return None;
        }
        if ttl > MAX_TTL {
            self.counters.ttl_clamped += 1;
            return Some(MAX_TTL);
        }
        Some(ttl)
    }

    fn terms_ok(&mut self, terms: &[String]) -> bool {
        let ok = !terms.is_empty()
            && terms.len() <= MAX_TERMS
            && terms
                .iter()
                .all(|t| !t.is_empty() && t.len() <= MAX_TERM_LEN);
        if !ok {
            self.counters.malformed += 1;
        }
        ok
    }

    fn names_ok(&mut self, names: &[String]) -> bool {
        let ok = !names.is_empty()
            && names.len() <= MAX_HIT_NAMES
            && names.iter().all(|n| n.len() <= MAX_NAME_LEN);
        if !ok {
            self.counters.malformed += 1;
        }
        ok
    }

    /// TTL for an answer that must travel `hops` hops back: a little slack, clamped.
    fn answer_ttl(hops: u8) -> u8 {
        hops.saturating_add(2).min(MAX_TTL)
    }

    fn on_ping(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, guid: Guid, ttl: u8, hops: u8) {
        let Some(ttl) = self.accept_ttl(ttl) else {
            return;
        };
        let route = Some(from);
        if !self.seen.insert(cx.now(), (Family::Ping, guid), route) {
            self.counters.duplicate_pings += 1;
            return;
        }
        let (ttl, hops) = (ttl - 1, hops.saturating_add(1));
        cx.send(
            from,
            Message::Pong {
                guid,
                ttl: Self::answer_ttl(hops),
                hops: 0,
                peer: self.id,
                shared: self.index.len() as u32,
            },
        );
        if ttl > 0 {
            for p in self.neighbours.peers().filter(|p| *p != from) {
                cx.send(p, Message::Ping { guid, ttl, hops });
            }
        }
    }

    /// Where an answer to (family, guid) goes: `Ok(None)` = here, `Ok(Some(p))` = forward to p.
    fn reverse_path(&mut self, now: Instant, family: Family, guid: Guid) -> Option<Option<PeerId>> {
        let route = self.seen.get(now, &(family, guid)).copied();
        match route {
            None => {
                self.counters.unroutable += 1;
                None
            }
            Some(Some(p)) if !self.neighbours.contains(&p) => {
                self.counters.unroutable += 1;
                None
            }
            Some(r) => Some(r),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_pong(
        &mut self,
        cx: &mut Cx<'_, Self>,
        guid: Guid,
        ttl: u8,
        hops: u8,
        peer: PeerId,
        shared: u32,
    ) {
        let Some(ttl) = self.accept_ttl(ttl) else {
            return;
        };
        match self.reverse_path(cx.now(), Family::Ping, guid) {
            None => {}
            Some(None) if peer != self.id && !self.neighbours.contains(&peer) => {
                self.neighbours.add_host(peer);
                self.refill(cx);
            }
            Some(None) => {}
            Some(Some(prev)) => {
                let (ttl, hops) = (ttl - 1, hops.saturating_add(1));
                if ttl == 0 {
                    self.counters.ttl_expired += 1;
                    return;
                }
                cx.send(
                    prev,
                    Message::Pong {
                        guid,
                        ttl,
                        hops,
                        peer,
                        shared,
                    },
                );
            }
        }
    }

    fn on_query(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        guid: Guid,
        ttl: u8,
        hops: u8,
        terms: Vec<String>,
    ) {
        self.counters.queries_received += 1;
        if !self.terms_ok(&terms) {
            return;
        }
        let Some(ttl) = self.accept_ttl(ttl) else {
            return;
        };
        let route = Some(from);
        if !self.seen.insert(cx.now(), (Family::Query, guid), route) {
            self.counters.duplicate_queries += 1;
            return;
        }
        let (ttl, hops) = (ttl - 1, hops.saturating_add(1));
        let names = self.index.search(&terms, self.config.max_hit_names);
        if !names.is_empty() {
            self.counters.queries_answered += 1;
            cx.send(
                from,
                Message::QueryHit {
                    guid,
                    ttl: Self::answer_ttl(hops),
                    hops: 0,
                    responder: self.id,
                    names,
                },
            );
        }
        if ttl > 0 {
            let mut forwarded = 0;
            for p in self.neighbours.peers().filter(|p| *p != from) {
                let terms = terms.clone();
                cx.send(
                    p,
                    Message::Query {
                        guid,
                        ttl,
                        hops,
                        terms,
                    },
                );
                forwarded += 1;
            }
            self.counters.queries_forwarded += forwarded;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_query_hit(
        &mut self,
        cx: &mut Cx<'_, Self>,
        guid: Guid,
        ttl: u8,
        hops: u8,
        responder: PeerId,
        names: Vec<String>,
    ) {
        if !self.names_ok(&names) {
            return;
        }
        let Some(ttl) = self.accept_ttl(ttl) else {
            return;
        };
        match self.reverse_path(cx.now(), Family::Query, guid) {
            None => {}
            Some(None) => {
                let hops = u16::from(hops) + 1;
                self.deliver_hit(cx, guid, responder, names, hops);
            }
            Some(Some(prev)) => {
                let (ttl, hops) = (ttl - 1, hops.saturating_add(1));
                if ttl == 0 {
                    self.counters.ttl_expired += 1;
                    return;
                }
                self.counters.hits_routed += 1;
                cx.send(
                    prev,
                    Message::QueryHit {
                        guid,
                        ttl,
                        hops,
                        responder,
                        names,
                    },
                );
            }
        }
    }

    fn deliver_hit(
        &mut self,
        cx: &mut Cx<'_, Self>,
        guid: Guid,
        responder: PeerId,
        names: Vec<String>,
        hops: u16,
    ) {
        let Some(&req) = self.by_guid.get(&guid) else {
            self.counters.late_hits += 1;
            return;
        };
        let Some(search) = self.searches.get_mut(&req) else {
            self.counters.late_hits += 1;
            return;
        };
        if search.responders.len() >= MAX_RESPONDERS || !search.responders.insert(responder) {
            return;
        }
        search.first_hit_hops = Some(search.first_hit_hops.map_or(hops, |h| h.min(hops)));
        let satisfied = search.responders.len() as u32 >= search.want;
        let walk = matches!(search.strategy, Strategy::RandomWalk { .. });
        cx.emit(Event::SearchHit {
            req,
            responder,
            names,
            hops,
        });
        if walk && satisfied {
            self.finish(cx, req);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_walk(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        guid: Guid,
        walker: u16,
        steps_left: u16,
        hops: u16,
        origin: PeerId,
        terms: Vec<String>,
    ) {
        if !self.terms_ok(&terms) {
            return;
        }
        if steps_left == 0 {
            self.counters.ttl_zero += 1;
            return;
        }
        self.counters.walk_steps += 1;
        let steps_left = steps_left.min(self.config.max_walk_steps) - 1;
        let hops = hops.saturating_add(1);
        let route = Some(from);
        if self.seen.insert(cx.now(), (Family::Walk, guid), route) {
            let names = self.index.search(&terms, self.config.max_hit_names);
            if !names.is_empty() {
                self.counters.queries_answered += 1;
                cx.send(origin, Message::WalkHit { guid, hops, names });
            }
        } else {
            self.counters.walk_revisits += 1;
        }
        if steps_left == 0 {
            return;
        }
        let parked = Parked {
            origin,
            from,
            steps_left,
            hops,
            terms,
            since: cx.now(),
        };
        if !hops.is_multiple_of(self.config.walk_check_every) {
            self.step_walker(cx, guid, walker, parked);
        } else if origin == self.id {
            // The walker came home: the origin decides on the spot.
            if self.walk_wanted(&guid) {
                self.step_walker(cx, guid, walker, parked);
            } else {
                self.counters.walkers_dropped += 1;
            }
        } else if self.parked.len() >= self.config.max_parked_walkers {
            self.counters.walkers_dropped += 1;
        } else {
            self.parked.insert((guid, walker), parked);
            cx.send(origin, Message::WalkCheck { guid, walker });
        }
    }

    /// Sends a walker one step on: to a random neighbour other than the one it came from,
    /// preferring neighbours this node has not sent this walk to yet.
    fn step_walker(&mut self, cx: &mut Cx<'_, Self>, guid: Guid, walker: u16, w: Parked) {
        let mut options: Vec<PeerId> = self.neighbours.peers().filter(|p| *p != w.from).collect();
        if options.is_empty() {
            if self.neighbours.contains(&w.from) {
                options.push(w.from);
            } else {
                self.counters.walkers_dropped += 1;
                return;
            }
        }
        let now = cx.now();
        self.walk_tried.insert(now, guid, Vec::new());
        let next = match self.walk_tried.get_mut(now, &guid) {
            Some(tried) => {
                let fresh: Vec<PeerId> = options
                    .iter()
                    .copied()
                    .filter(|p| !tried.contains(p))
                    .collect();
                let pick = if fresh.is_empty() {
                    tried.clear();
                    options[cx.rng().index(options.len())]
                } else {
                    fresh[cx.rng().index(fresh.len())]
                };
                if tried.len() < self.config.max_degree {
                    tried.push(pick);
                }
                pick
            }
            None => options[cx.rng().index(options.len())],
        };
        cx.send(
            next,
            Message::Walk {
                guid,
                walker,
                steps_left: w.steps_left,
                hops: w.hops,
                origin: w.origin,
                terms: w.terms,
            },
        );
    }

    /// Whether this node runs walk `guid` and still wants more hits.
    fn walk_wanted(&self, guid: &Guid) -> bool {
        self.by_guid
            .get(guid)
            .and_then(|r| self.searches.get(r))
            .is_some_and(|s| {
                matches!(s.strategy, Strategy::RandomWalk { .. })
                    && (s.responders.len() as u32) < s.want
            })
    }

    fn on_walk_verdict(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        guid: Guid,
        walker: u16,
        go: bool,
    ) {
        let key = (guid, walker);
        match self.parked.get(&key) {
            Some(p) if p.origin == from => {}
            _ => {
                self.counters.walk_unknown += 1;
                return;
            }
        }
        let Some(parked) = self.parked.remove(&key) else {
            return;
        };
        if go {
            self.step_walker(cx, guid, walker, parked);
        } else {
            self.counters.walkers_dropped += 1;
        }
    }

    // ----- searches -----

    fn start_search(
        &mut self,
        cx: &mut Cx<'_, Self>,
        req: u64,
        terms: &str,
        strategy: Strategy,
        ttl: Option<u8>,
        want_hits: u32,
    ) -> Result<(), Error> {
        let mut words: Vec<String> = Vec::new();
        for w in keywords(terms) {
            if w.len() > MAX_TERM_LEN {
                return Err(Error::TermTooLong(w.len()));
            }
            if !words.contains(&w) {
                words.push(w);
            }
        }
        if words.is_empty() {
            return Err(Error::NoTerms);
        }
        if words.len() > MAX_TERMS {
            return Err(Error::TooManyTerms(words.len()));
        }
        let ttl = ttl.unwrap_or(DEFAULT_TTL);
        if ttl == 0 || ttl > MAX_TTL {
            return Err(Error::BadTtl(ttl));
        }
        if let Strategy::RandomWalk { walkers, steps } = strategy {
            if walkers == 0 || walkers > MAX_WALKERS {
                return Err(Error::BadWalkers(walkers));
            }
            if steps == 0 || steps > self.config.max_walk_steps {
                return Err(Error::BadWalkSteps {
                    got: steps,
                    max: self.config.max_walk_steps,
                });
            }
        }
        if self.searches.contains_key(&req) {
            return Err(Error::DuplicateRequest(req));
        }
        if self.searches.len() >= self.config.max_searches {
            return Err(Error::TooManySearches(self.config.max_searches));
        }
        let first_ttl = match strategy {
            Strategy::ExpandingRing => 1,
            _ => ttl,
        };
        self.searches.insert(
            req,
            Search {
                terms: words,
                strategy,
                max_ttl: ttl,
                want: want_hits.max(1),
                ring: 0,
                ring_ttl: first_ttl,
                guids: Vec::new(),
                responders: BTreeSet::new(),
                first_hit_hops: None,
            },
        );
        match strategy {
            Strategy::RandomWalk { walkers, steps } => self.launch_walkers(cx, req, walkers, steps),
            _ => self.launch_ring(cx, req),
        }
        Ok(())
    }

    /// Sends the current ring (or the single flood) of a search with a fresh GUID.
    fn launch_ring(&mut self, cx: &mut Cx<'_, Self>, req: u64) {
        let guid = Guid::random(cx.rng());
        let Some(search) = self.searches.get_mut(&req) else {
            return;
        };
        search.guids.push(guid);
        let (ttl, ring, terms) = (search.ring_ttl, search.ring, search.terms.clone());
        self.by_guid.insert(guid, req);
        self.seen.insert(cx.now(), (Family::Query, guid), None);
        let to: Vec<PeerId> = self.neighbours.peers().collect();
        for p in to {
            cx.send(
                p,
                Message::Query {
                    guid,
                    ttl,
                    hops: 0,
                    terms: terms.clone(),
                },
            );
        }
        cx.set_timer(
            self.config.hop_wait * 2 * u32::from(ttl),
            Timer::Deadline { req, ring },
        );
    }

    fn launch_walkers(&mut self, cx: &mut Cx<'_, Self>, req: u64, walkers: u16, steps: u16) {
        let guid = Guid::random(cx.rng());
        let Some(search) = self.searches.get_mut(&req) else {
            return;
        };
        search.guids.push(guid);
        let terms = search.terms.clone();
        self.by_guid.insert(guid, req);
        self.seen.insert(cx.now(), (Family::Walk, guid), None);
        let mut to: Vec<PeerId> = self.neighbours.peers().collect();
        cx.rng().shuffle(&mut to);
        if !to.is_empty() {
            for w in 0..walkers {
                cx.send(
                    to[usize::from(w) % to.len()],
                    Message::Walk {
                        guid,
                        walker: w,
                        steps_left: steps,
                        hops: 0,
                        origin: self.id,
                        terms: terms.clone(),
                    },
                );
            }
        }
        cx.set_timer(
            self.config.hop_wait * 2 * u32::from(steps),
            Timer::Deadline { req, ring: 0 },
        );
    }

    fn on_deadline(&mut self, cx: &mut Cx<'_, Self>, req: u64, ring: u8) {
        let Some(search) = self.searches.get_mut(&req) else {
            return;
        };
        if search.ring != ring {
            return;
        }
        let grow = search.strategy == Strategy::ExpandingRing
            && (search.responders.len() as u32) < search.want
            && search.ring_ttl < search.max_ttl;
        if grow {
            search.ring += 1;
            search.ring_ttl = search.ring_ttl.saturating_mul(2).min(search.max_ttl);
            self.launch_ring(cx, req);
        } else {
            self.finish(cx, req);
        }
    }

    fn finish(&mut self, cx: &mut Cx<'_, Self>, req: u64) {
        let Some(search) = self.searches.remove(&req) else {
            return;
        };
        for g in &search.guids {
            self.by_guid.remove(g);
        }
        cx.emit(Event::SearchDone {
            req,
            hits: search.responders.len() as u32,
            first_hit_hops: search.first_hit_hops,
            rings: search.ring + 1,
        });
    }
}

impl Protocol for Flood {
    type Message = Message;
    type Timer = Timer;
    type Command = Command;
    type Event = Event;

    fn handle_start(&mut self, cx: &mut Cx<'_, Self>) {
        // Spread the first housekeeping tick over one period so nodes started together do
        // not ping in lockstep.
        let period = self
            .config
            .keepalive_interval
            .as_micros()
            .min(u64::MAX as u128) as u64;
        let first = cx.rng().range(1, period.max(2));
        cx.set_timer(Duration::from_micros(first), Timer::Tick);
    }

    fn handle_message(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Message) {
        match msg {
            // Direct messages between a walk's nodes and its origin need no neighbourship.
            Message::WalkCheck { guid, walker } => {
                let go = self.walk_wanted(&guid);
                cx.send(from, Message::WalkVerdict { guid, walker, go });
            }
            Message::WalkVerdict { guid, walker, go } => {
                self.on_walk_verdict(cx, from, guid, walker, go)
            }
            Message::WalkHit { guid, hops, names } => {
                if self.names_ok(&names) {
                    if self.walk_wanted(&guid) {
                        self.deliver_hit(cx, guid, from, names, hops);
                    } else {
                        self.counters.late_hits += 1;
                    }
                }
            }
            Message::Bye => self.lose(cx, &from),
            // Everything else travels over neighbour links.
            other => {
                if !self.admit(cx, from) {
                    return;
                }
                match other {
                    Message::Ping { guid, ttl, hops } => self.on_ping(cx, from, guid, ttl, hops),
                    Message::Pong {
                        guid,
                        ttl,
                        hops,
                        peer,
                        shared,
                    } => self.on_pong(cx, guid, ttl, hops, peer, shared),
                    Message::Query {
                        guid,
                        ttl,
                        hops,
                        terms,
                    } => self.on_query(cx, from, guid, ttl, hops, terms),
                    Message::QueryHit {
                        guid,
                        ttl,
                        hops,
                        responder,
                        names,
                    } => self.on_query_hit(cx, guid, ttl, hops, responder, names),
                    Message::Walk {
                        guid,
                        walker,
                        steps_left,
                        hops,
                        origin,
                        terms,
                    } => self.on_walk(cx, from, guid, walker, steps_left, hops, origin, terms),
                    Message::Bye
                    | Message::WalkCheck { .. }
                    | Message::WalkVerdict { .. }
                    | Message::WalkHit { .. } => {}
                }
            }
        }
    }

    fn handle_timer(&mut self, cx: &mut Cx<'_, Self>, timer: Timer) {
        match timer {
            Timer::Tick => self.on_tick(cx),
            Timer::Deadline { req, ring } => self.on_deadline(cx, req, ring),
        }
    }

    fn handle_command(&mut self, cx: &mut Cx<'_, Self>, cmd: Command) {
        match cmd {
            Command::AddNeighbours(peers) => {
                for p in peers {
                    if p == self.id {
                        continue;
                    }
                    if self.neighbours.insert(p, cx.now(), true) {
                        self.counters.neighbours_added += 1;
                    } else if !self.neighbours.contains(&p) {
                        self.neighbours.add_host(p);
                    }
                }
            }
            Command::AddHosts(peers) => {
                for p in peers {
                    if p != self.id && !self.neighbours.contains(&p) {
                        self.neighbours.add_host(p);
                    }
                }
                self.refill(cx);
            }
            Command::Share { name } => {
                if let Err(error) = self.index.insert(&name) {
                    cx.emit(Event::ShareRejected { name, error });
                }
            }
            Command::Unshare { name } => {
                self.index.remove(&name);
            }
            Command::Search {
                req,
                terms,
                strategy,
                ttl,
                want_hits,
            } => {
                if let Err(error) = self.start_search(cx, req, &terms, strategy, ttl, want_hits) {
                    cx.emit(Event::SearchRejected { req, error });
                }
            }
            Command::Leave => {
                self.left = true;
                let all: Vec<PeerId> = self.neighbours.peers().collect();
                for p in all {
                    cx.send(p, Message::Bye);
                    self.neighbours.remove(&p);
                    self.counters.neighbours_lost += 1;
                }
            }
        }
    }

    fn handle_peer_down(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId) {
        self.lose(cx, &peer);
    }
}

#[cfg(test)]
#[path = "flood_tests.rs"]
mod tests;
