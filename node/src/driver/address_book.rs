//! The address book: where to dial a peer the cores name.
//!
//! An address enters the book in one of two ways:
//!
//! - **confirmed**, by a live connection to the peer: the address a dial to it succeeded
//!   on, and the listen addresses the peer itself sent through identify on an authenticated
//!   connection;
//! - **claimed**, by a gossip membership event, which carries only addresses from the
//!   member's own signed record (a claim no other peer can make for it, but not yet shown to
//!   reach it).
//!
//! A peer's confirmed addresses are never pushed out by claims: a claim takes a free slot
//! or replaces an older claim, and a confirmation turns a claim into a confirmed address.
//! Each peer holds at most [`MAX_ADDRS_PER_PEER`] addresses, so one peer's claims can only
//! ever touch its own entry. The book holds at most [`MAX_ADDRESS_BOOK`] peers, of which at
//! most [`MAX_CLAIMED_PEERS`] known only from claims; when full, a new claimed-only peer
//! replaces the claimed-only peer claimed longest ago, and a newly confirmed peer replaces a
//! claimed-only peer first, then the peer confirmed longest ago. Connected peers are never
//! forgotten. A flood of identities (identities are free) can thus only churn the
//! claimed-only part of the book; the addresses of peers the node has reached stay.

use std::collections::{BTreeMap, VecDeque};

use libp2p::Multiaddr;

use super::transport::strip_p2p;

/// Most peers whose addresses are remembered.
pub(crate) const MAX_ADDRESS_BOOK: usize = 4096;

/// Most peers remembered only from claims (half the book: the other half is always there
/// for peers a connection confirmed).
pub(crate) const MAX_CLAIMED_PEERS: usize = MAX_ADDRESS_BOOK / 2;

/// Most addresses remembered per peer (a node listens on a few: QUIC and TCP, IPv4 and
/// IPv6, a couple of interfaces).
pub(crate) const MAX_ADDRS_PER_PEER: usize = 8;

/// How an address came to be known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// By a live connection to the peer.
    Confirmed,
    /// By a signed claim of the peer relayed through gossip.
    Claimed,
}

/// One peer's addresses.
#[derive(Debug, Default)]
struct Entry {
    /// Confirmed addresses, oldest first.
    confirmed: VecDeque<Multiaddr>,
    /// Claimed addresses, oldest first.
    claimed: VecDeque<Multiaddr>,
    /// When (in the book's own sequence) the entry last learned something.
    touched: u64,
}

impl Entry {
    fn len(&self) -> usize {
        self.confirmed.len() + self.claimed.len()
    }
}

/// Known addresses per peer.
#[derive(Debug, Default)]
pub(super) struct AddressBook {
    peers: BTreeMap<libp2p::PeerId, Entry>,
    clock: u64,
}

impl AddressBook {
    /// The addresses known for `peer`, confirmed ones first.
    pub(super) fn addrs(&self, peer: &libp2p::PeerId) -> Vec<Multiaddr> {
        self.peers
            .get(peer)
            .map(|e| e.confirmed.iter().chain(&e.claimed).cloned().collect())
            .unwrap_or_default()
    }

    /// Remembers `addr` for `peer`, learned from `source` (see the module docs for what may
    /// replace what). `connected` says which peers have a connection (never forgotten).
    pub(super) fn remember(
        &mut self,
        peer: libp2p::PeerId,
        addr: Multiaddr,
        source: Source,
        connected: impl Fn(&libp2p::PeerId) -> bool,
    ) {
        if addr.is_empty() {
            return;
        }
        if !self.peers.contains_key(&peer) && !self.make_room(source, &connected) {
            return;
        }
        self.clock += 1;
        let e = self.peers.entry(peer).or_default();
        match source {
            Source::Confirmed => {
                e.claimed.retain(|a| *a != addr);
                e.confirmed.retain(|a| *a != addr);
                if e.len() >= MAX_ADDRS_PER_PEER && e.claimed.pop_front().is_none() {
                    e.confirmed.pop_front();
                }
                e.confirmed.push_back(addr);
            }
            Source::Claimed => {
                if e.confirmed.contains(&addr) {
                    return;
                }
                e.claimed.retain(|a| *a != addr);
                if e.len() >= MAX_ADDRS_PER_PEER && e.claimed.pop_front().is_none() {
                    // Every slot holds a confirmed address: the claim adds nothing.
                    return;
                }
                e.claimed.push_back(addr);
            }
        }
        e.touched = self.clock;
    }

    /// Makes room for a new peer learned from `source`; returns whether there is room.
    fn make_room(&mut self, source: Source, connected: &impl Fn(&libp2p::PeerId) -> bool) -> bool {
        let book_full = self.peers.len() >= MAX_ADDRESS_BOOK;
        match source {
            Source::Claimed => {
                let claimed_only = self
                    .peers
                    .values()
                    .filter(|e| e.confirmed.is_empty())
                    .count();
                if claimed_only >= MAX_CLAIMED_PEERS || book_full {
                    self.evict(connected, true)
                } else {
                    true
                }
            }
            Source::Confirmed if book_full => {
                self.evict(connected, true) || self.evict(connected, false)
            }
            Source::Confirmed => true,
        }
    }

    /// Forgets the not-connected peer touched longest ago, among claimed-only peers if
    /// `claimed_only`, else among those with confirmed addresses.
    fn evict(&mut self, connected: &impl Fn(&libp2p::PeerId) -> bool, claimed_only: bool) -> bool {
        let victim = self
            .peers
            .iter()
            .filter(|(p, e)| e.confirmed.is_empty() == claimed_only && !connected(p))
            .min_by_key(|(_, e)| e.touched)
            .map(|(p, _)| *p);
        victim.is_some_and(|v| self.peers.remove(&v).is_some())
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
        let Some(e) = self.peers.get_mut(peer) else {
            return;
        };
        for a in failed {
            let a = strip_p2p(a);
            if e.len() > 1 {
                e.confirmed.retain(|x| *x != a);
                if e.len() > 1 {
                    e.claimed.retain(|x| *x != a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: usize) -> Multiaddr {
        format!("/ip4/10.0.{}.{}/udp/4001/quic-v1", i / 256, i % 256)
            .parse()
            .unwrap()
    }

    fn nobody(_: &libp2p::PeerId) -> bool {
        false
    }

    #[test]
    fn claims_never_push_out_confirmed_addresses() {
        let mut b = AddressBook::default();
        let p = libp2p::PeerId::random();
        let real: Vec<Multiaddr> = (0..MAX_ADDRS_PER_PEER).map(addr).collect();
        for a in &real {
            b.remember(p, a.clone(), Source::Confirmed, nobody);
        }
        for i in 0..100 {
            b.remember(p, addr(1000 + i), Source::Claimed, nobody);
        }
        assert_eq!(
            b.addrs(&p),
            real,
            "a full set of confirmed addresses stays whole"
        );

        // With free slots, claims fill them and replace each other, oldest first.
        let q = libp2p::PeerId::random();
        b.remember(q, addr(1), Source::Confirmed, nobody);
        b.remember(q, addr(2), Source::Confirmed, nobody);
        for i in 0..10 {
            b.remember(q, addr(100 + i), Source::Claimed, nobody);
        }
        let mut want = vec![addr(1), addr(2)];
        want.extend((104..110).map(addr));
        assert_eq!(b.addrs(&q), want);

        // A confirmation turns a claim into a confirmed address, which claims then keep.
        b.remember(q, addr(105), Source::Confirmed, nobody);
        for i in 0..20 {
            b.remember(q, addr(200 + i), Source::Claimed, nobody);
        }
        let got = b.addrs(&q);
        assert_eq!(&got[..3], &[addr(1), addr(2), addr(105)]);
        assert_eq!(got.len(), MAX_ADDRS_PER_PEER);

        // A claim of an address already confirmed changes nothing.
        b.remember(q, addr(1), Source::Claimed, nobody);
        assert_eq!(b.addrs(&q)[0], addr(1));
    }

    #[test]
    fn a_flood_of_claimed_peers_does_not_evict_confirmed_or_connected_ones() {
        let mut b = AddressBook::default();
        let reached: Vec<libp2p::PeerId> = (0..10).map(|_| libp2p::PeerId::random()).collect();
        for (i, p) in reached.iter().enumerate() {
            b.remember(*p, addr(i), Source::Confirmed, nobody);
        }
        let first_claim = libp2p::PeerId::random();
        b.remember(first_claim, addr(50), Source::Claimed, nobody);
        let connected = first_claim;
        let is_connected = |p: &libp2p::PeerId| *p == connected;
        for i in 0..3 * MAX_ADDRESS_BOOK {
            b.remember(
                libp2p::PeerId::random(),
                addr(i),
                Source::Claimed,
                is_connected,
            );
        }
        assert!(b.peers.len() <= MAX_ADDRESS_BOOK);
        let claimed_only = b.peers.values().filter(|e| e.confirmed.is_empty()).count();
        assert!(claimed_only <= MAX_CLAIMED_PEERS, "{claimed_only}");
        for (i, p) in reached.iter().enumerate() {
            assert_eq!(b.addrs(p), vec![addr(i)], "a confirmed peer was evicted");
        }
        assert_eq!(
            b.addrs(&first_claim),
            vec![addr(50)],
            "a connected peer was evicted"
        );
    }

    #[test]
    fn a_full_book_makes_room_for_a_confirmed_peer() {
        let mut b = AddressBook::default();
        for i in 0..MAX_ADDRESS_BOOK {
            b.remember(libp2p::PeerId::random(), addr(i), Source::Confirmed, nobody);
        }
        let oldest = *b.peers.iter().min_by_key(|(_, e)| e.touched).unwrap().0;
        // A claim finds no claimed-only peer to replace: it is not taken.
        let claim = libp2p::PeerId::random();
        b.remember(claim, addr(1), Source::Claimed, nobody);
        assert!(b.addrs(&claim).is_empty());
        // A confirmed peer replaces the peer confirmed longest ago.
        let new = libp2p::PeerId::random();
        b.remember(new, addr(2), Source::Confirmed, nobody);
        assert_eq!(b.addrs(&new), vec![addr(2)]);
        assert!(b.addrs(&oldest).is_empty());
        assert_eq!(b.peers.len(), MAX_ADDRESS_BOOK);
    }

    #[test]
    fn failed_addresses_go_while_others_remain() {
        let mut b = AddressBook::default();
        let p = libp2p::PeerId::random();
        b.remember(p, addr(1), Source::Confirmed, nobody);
        b.remember(p, addr(2), Source::Claimed, nobody);
        b.forget_failed(&p, [addr(1)].iter());
        assert_eq!(b.addrs(&p), vec![addr(2)]);
        b.forget_failed(&p, [addr(2)].iter());
        assert_eq!(b.addrs(&p), vec![addr(2)], "the last address is kept");
    }
}
