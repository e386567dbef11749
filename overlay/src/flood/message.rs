//! What the flooding core speaks: its wire messages, and its local interface (commands,
//! events, errors, timers, counters).

use serde::{Deserialize, Serialize};

use super::{IndexError, MAX_TERM_LEN, MAX_TERMS, MAX_TTL, MAX_WALKERS};
use crate::PeerId;
use crate::guid::Guid;

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
        /// Step budget of each walker, 1..=[`Config::max_walk_steps`](super::Config::max_walk_steps).
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
        /// Keywords (lowercase, as [`keywords`](super::keywords) splits them); all must match.
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
        /// TTL of a flood, or the last ring of an expanding ring; [`DEFAULT_TTL`](super::DEFAULT_TTL) if `None`.
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
    /// [`Config::max_searches`](super::Config::max_searches) searches are running.
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
