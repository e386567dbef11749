//! The address book: where to dial a peer the cores name.
//!
//! Addresses come from identify on a live connection, from the address a dial succeeded
//! on, and from gossip membership events. The book is bounded in peers
//! ([`MAX_ADDRESS_BOOK`]) and per peer ([`MAX_ADDRS_PER_PEER`]).

use std::collections::{BTreeMap, VecDeque};

use libp2p::Multiaddr;

use super::transport::strip_p2p;

/// Most peers whose addresses are remembered (identify, dials, gossip membership).
pub const MAX_ADDRESS_BOOK: usize = 4096;

/// Most addresses remembered per peer.
pub const MAX_ADDRS_PER_PEER: usize = 8;

/// Known addresses per peer.
#[derive(Debug, Default)]
pub(super) struct AddressBook {
    peers: BTreeMap<libp2p::PeerId, VecDeque<Multiaddr>>,
}

impl AddressBook {
    /// The addresses known for `peer`.
    pub(super) fn addrs(&self, peer: &libp2p::PeerId) -> Vec<Multiaddr> {
        self.peers
            .get(peer)
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Remembers `addr` for `peer`. When the book is full, a peer that is not connected
    /// (`connected` says which are) is forgotten to make room; when `peer` has
    /// [`MAX_ADDRS_PER_PEER`] addresses, its oldest goes.
    pub(super) fn remember(
        &mut self,
        peer: libp2p::PeerId,
        addr: Multiaddr,
        connected: impl Fn(&libp2p::PeerId) -> bool,
    ) {
        if addr.is_empty() {
            return;
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_ADDRESS_BOOK {
            let victim = self.peers.keys().find(|p| !connected(p)).copied();
            match victim {
                Some(v) => {
                    self.peers.remove(&v);
                }
                None => return,
            }
        }
        let list = self.peers.entry(peer).or_default();
        if list.contains(&addr) {
            return;
        }
        if list.len() >= MAX_ADDRS_PER_PEER {
            list.pop_front();
        }
        list.push_back(addr);
    }

    /// Drops addresses of `peer` that a dial just failed on, as long as others remain to
    /// try: a process restarted on new ports leaves its old ones in the book, and since
    /// only the preferred transport's addresses are dialled, a dead one of those would
    /// otherwise hide the live addresses of the other transport for ever.
    pub(super) fn forget_failed<'a>(
        &mut self,
        peer: &libp2p::PeerId,
        failed: impl Iterator<Item = &'a Multiaddr>,
    ) {
        let Some(list) = self.peers.get_mut(peer) else {
            return;
        };
        for a in failed {
            let a = strip_p2p(a);
            if list.len() > 1 {
                list.retain(|x| *x != a);
            }
        }
    }
}
