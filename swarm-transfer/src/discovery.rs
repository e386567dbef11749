//! Provider discovery through the DHT — the interface the node wires up.
//!
//! A content id is announced under the ring key [`ContentId::dht_key`] (SHA-1 of the
//! cid's bytes, i.e. `Id::hash`), like any key in the Chord DHT. The swarm core does not
//! talk to the DHT itself; it emits [`Event::Discovery`](crate::Event::Discovery) with a
//! [`Discovery`] request and the node translates:
//!
//! | swarm emits | node does |
//! |---|---|
//! | `Discovery::Announce { key, ttl, .. }` | `dht::Command::AddProvider { key, provider: self, ttl }`, then `swarm::Command::Announced { cid, stored }` with the outcome |
//! | `Discovery::FindProviders { cid, key }` | `dht::Command::GetProviders { key }`, then `swarm::Command::AddPeers { cid, peers }` with the answer |
//!
//! A provider announces when its manifest is known (it can serve at least the manifest)
//! and again every [`Config::announce_interval`](crate::Config::announce_interval) — or,
//! when the DHT could not store the record (the node is not in the ring yet, a lookup
//! failed), after [`ANNOUNCE_RETRY`](crate::ANNOUNCE_RETRY), doubling per failure; records
//! live [`Config::provider_ttl`](crate::Config::provider_ttl) in the DHT, so a provider
//! that leaves disappears from lookups within that time. A fetcher looks up providers
//! when it starts and whenever it has fewer than
//! [`Config::min_peers`](crate::Config::min_peers) connections (at most once per
//! [`Config::lookup_interval`](crate::Config::lookup_interval)).

use std::time::Duration;

use peerlab_overlay::Id;

use crate::manifest::ContentId;

/// The DHT key under which providers of `cid` are announced.
pub fn dht_key(cid: &ContentId) -> Id {
    cid.dht_key()
}

/// A request from the swarm core to the application's DHT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// Announce this node as a provider of `cid`.
    Announce {
        /// The content id.
        cid: ContentId,
        /// Its DHT key.
        key: Id,
        /// How long the provider record should live.
        ttl: Duration,
    },
    /// Find providers of `cid`; answer with `Command::AddPeers`.
    FindProviders {
        /// The content id.
        cid: ContentId,
        /// Its DHT key.
        key: Id,
    },
}
