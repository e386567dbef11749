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
//!
//! # Layout
//!
//! This file holds the core's state and its dispatch; each role lives in its own file:
//! `config` (limits and configuration), `message` (the wire messages and the local
//! interface), `discovery` (neighbours and Ping/Pong), `query` (flooded queries and their
//! hits), `walk` (random walkers), `search` (searches this node originates), and the
//! pieces they use: `index` (the keyword index), `neighbours` (the neighbour set and host
//! cache), `seen` (the bounded seen-GUID table).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::guid::Guid;
use crate::{Cx, Instant, PeerId, Protocol};

mod config;
mod discovery;
mod index;
mod message;
mod neighbours;
mod query;
mod search;
mod seen;
mod walk;

pub use config::{
    Config, ConfigError, DEFAULT_TTL, MAX_CAPACITY, MAX_DEGREE, MAX_HIT_NAMES, MAX_RESPONDERS,
    MAX_SEARCHES, MAX_TERM_LEN, MAX_TERMS, MAX_TTL, MAX_WALK_STEPS, MAX_WALKERS,
};
pub use index::{Index, IndexError, MAX_NAME_LEN, keywords};
pub use message::{Command, Counters, Error, Event, Message, SEARCH_KINDS, Strategy, Timer};
pub use neighbours::{Neighbour, Neighbours};

use search::Search;
use seen::SeenCache;
use walk::Parked;

/// Message family in the seen table: Gnutella keys duplicates by (type, GUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    Ping,
    Query,
    Walk,
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
mod tests;
