//! The bounded neighbour set of the unstructured overlay, and its host cache.
//!
//! A Gnutella servent keeps a handful of connections (its neighbours) and a cache of other
//! hosts it has heard of through Pongs. It tries to stay between a minimum and a maximum
//! degree: below the minimum it connects to cached hosts, and above the maximum it refuses
//! new connections. Liveness is tracked per neighbour by the time any message was last
//! heard from it; the flooding core pings quiet neighbours and drops silent ones.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::{Instant, PeerId};

/// What the overlay knows about one neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// When any message from this neighbour last arrived (or when it was added).
    pub last_heard: Instant,
    /// Whether the neighbour has answered since we added it. Unconfirmed neighbours are
    /// connection attempts and time out sooner.
    pub confirmed: bool,
}

/// A neighbour set of at most `max` peers plus a bounded cache of candidate hosts.
#[derive(Debug, Clone)]
pub struct Neighbours {
    max: usize,
    host_cache_cap: usize,
    peers: BTreeMap<PeerId, Neighbour>,
    /// Known peers that are not neighbours, newest at the back.
    hosts: VecDeque<PeerId>,
}

impl Neighbours {
    /// An empty set of at most `max` neighbours with a host cache of `host_cache_cap`.
    pub fn new(max: usize, host_cache_cap: usize) -> Neighbours {
        Neighbours {
            max,
            host_cache_cap,
            peers: BTreeMap::new(),
            hosts: VecDeque::new(),
        }
    }

    /// Number of neighbours.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether there are no neighbours.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Whether no neighbour can be added.
    pub fn is_full(&self) -> bool {
        self.peers.len() >= self.max
    }

    /// Whether `peer` is a neighbour.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// The neighbours, in id order.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    /// One neighbour's state.
    pub fn get(&self, peer: &PeerId) -> Option<&Neighbour> {
        self.peers.get(peer)
    }

    /// Adds `peer` as a neighbour heard at `now`. Returns `false` (and changes nothing) if it
    /// is already a neighbour or the set is full.
    pub fn insert(&mut self, peer: PeerId, now: Instant, confirmed: bool) -> bool {
        if self.peers.contains_key(&peer) || self.is_full() {
            return false;
        }
        self.hosts.retain(|h| *h != peer);
        self.peers.insert(
            peer,
            Neighbour {
                last_heard: now,
                confirmed,
            },
        );
        true
    }

    /// Removes a neighbour; returns whether it was one.
    pub fn remove(&mut self, peer: &PeerId) -> bool {
        self.peers.remove(peer).is_some()
    }

    /// Notes that `peer` was heard at `now`; returns whether it is a neighbour.
    pub fn heard(&mut self, peer: &PeerId, now: Instant) -> bool {
        match self.peers.get_mut(peer) {
            Some(n) => {
                n.last_heard = n.last_heard.max(now);
                n.confirmed = true;
                true
            }
            None => false,
        }
    }

    /// Neighbours not heard from for at least `quiet` (candidates for a keepalive ping).
    pub fn quiet(&self, now: Instant, quiet: Duration) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, n)| now.saturating_since(n.last_heard) >= quiet)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Removes and returns the neighbours that have gone away: confirmed ones silent for
    /// `timeout`, unconfirmed ones silent for `connect_timeout`.
    pub fn expire(
        &mut self,
        now: Instant,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Vec<PeerId> {
        let gone: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, n)| {
                let limit = if n.confirmed {
                    timeout
                } else {
                    connect_timeout
                };
                now.saturating_since(n.last_heard) >= limit
            })
            .map(|(p, _)| *p)
            .collect();
        for p in &gone {
            self.peers.remove(p);
        }
        gone
    }

    /// Remembers `peer` as a candidate host (not if it is a neighbour). When the cache is
    /// full the oldest candidate is forgotten.
    pub fn add_host(&mut self, peer: PeerId) {
        if self.host_cache_cap == 0 || self.peers.contains_key(&peer) {
            return;
        }
        self.hosts.retain(|h| *h != peer);
        if self.hosts.len() >= self.host_cache_cap {
            self.hosts.pop_front();
        }
        self.hosts.push_back(peer);
    }

    /// Takes the newest candidate host.
    pub fn take_host(&mut self) -> Option<PeerId> {
        self.hosts.pop_back()
    }

    /// Number of candidate hosts cached.
    pub fn hosts_len(&self) -> usize {
        self.hosts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u64) -> PeerId {
        PeerId::synthetic(n)
    }

    #[test]
    fn bounded_set_and_cache() {
        let mut n = Neighbours::new(2, 2);
        assert!(n.insert(p(1), Instant::ZERO, true));
        assert!(!n.insert(p(1), Instant::ZERO, true));
        assert!(n.insert(p(2), Instant::ZERO, true));
        assert!(!n.insert(p(3), Instant::ZERO, true), "full");
        n.add_host(p(1));
        assert_eq!(n.hosts_len(), 0, "neighbours are not candidates");
        n.add_host(p(3));
        n.add_host(p(4));
        n.add_host(p(5));
        assert_eq!(n.hosts_len(), 2);
        assert_eq!(n.take_host(), Some(p(5)));
        assert_eq!(n.take_host(), Some(p(4)));
        assert_eq!(n.take_host(), None);
    }

    #[test]
    fn expiry_respects_confirmation() {
        let s = Duration::from_secs(1);
        let mut n = Neighbours::new(4, 4);
        n.insert(p(1), Instant::ZERO, true);
        n.insert(p(2), Instant::ZERO, false);
        n.insert(p(3), Instant::ZERO, true);
        n.heard(&p(3), Instant::ZERO + s * 5);
        let mut want = vec![p(1), p(2)];
        want.sort();
        assert_eq!(
            n.quiet(Instant::ZERO + s * 5, s * 2),
            want,
            "p(3) was heard recently"
        );
        let gone = n.expire(Instant::ZERO + s * 5, s * 10, s * 3);
        assert_eq!(gone, vec![p(2)]);
        let gone = n.expire(Instant::ZERO + s * 10, s * 10, s * 3);
        assert_eq!(gone, vec![p(1)]);
        assert_eq!(n.peers().collect::<Vec<_>>(), vec![p(3)]);
    }
}
