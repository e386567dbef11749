//! The flooding core's configuration and its bounds.

use std::time::Duration;

pub use crate::ConfigError;

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
    /// Candidate hosts remembered from Pongs and [`Command::AddNeighbours`](super::Command::AddNeighbours) overflow.
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
