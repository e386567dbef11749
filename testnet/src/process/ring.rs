//! The ideal ring of a testnet's live nodes: what their Chord ring looks like once it has
//! converged, computed by [`peerlab_dht::IdealRing`] — the same oracle the simulator's
//! experiments check rings against — from the peer ids in `testnet.json`.
//!
//! The control API names ring positions in hex and peers by their libp2p peer ids; the
//! functions here translate between those names and the ring's.

use peerlab_dht::{IdealRing, NodeRef};
use peerlab_node::api::RingView;
use peerlab_overlay::{Id, PeerId};

use super::Testnet;

/// The core's peer id of a libp2p peer id (base58); `None` unless it names an Ed25519 key.
pub fn core_peer_id(libp2p: &str) -> Option<PeerId> {
    let p = libp2p.parse::<peerlab_node::libp2p::PeerId>().ok()?;
    PeerId::from_libp2p_bytes(&p.to_bytes())
}

/// The ideal ring of `peers` (libp2p peer ids) with `vnodes` virtual nodes each: virtual
/// node `i` of peer `p` sits at `SHA-1(p ‖ i)`. Peer ids that do not parse are left out.
pub fn ideal_ring<'a>(peers: impl IntoIterator<Item = &'a str>, vnodes: u16) -> IdealRing {
    let nodes = peers
        .into_iter()
        .filter_map(core_peer_id)
        .flat_map(|peer| {
            (0..vnodes).map(move |i| NodeRef {
                id: Id::vnode(&peer, i),
                peer,
            })
        })
        .collect();
    IdealRing::new(nodes)
}

/// The virtual node that owns `key` (a key as the API takes it, placed at `SHA-1(key)`).
pub fn key_owner(ring: &IdealRing, key: &str) -> Option<NodeRef> {
    ring.successor(&Id::hash(key.as_bytes()))
}

/// Whether a node's ring view has joined every virtual node with its ideal successor and
/// predecessor.
pub fn view_is_ideal(ring: &IdealRing, view: &RingView) -> bool {
    let nodes = ring.nodes();
    let n = nodes.len();
    if !view.joined || view.vnodes.is_empty() || n == 0 {
        return false;
    }
    view.vnodes.iter().all(|v| {
        let Some(id) = Id::from_hex(&v.id) else {
            return false;
        };
        let i = ring.successor_index(&id);
        if nodes[i].id != id {
            return false;
        }
        let succ = nodes[(i + 1) % n].id.to_hex();
        let pred = nodes[(i + n - 1) % n].id.to_hex();
        v.joined
            && v.successors.first().map(|s| &s.id) == Some(&succ)
            && v.predecessor.as_ref().map(|p| &p.id) == Some(&pred)
    })
}

impl Testnet {
    /// The ideal ring of the live nodes.
    pub fn ideal_ring(&self) -> IdealRing {
        ideal_ring(
            self.manifest
                .nodes
                .iter()
                .filter(|n| n.alive && !n.peer_id.is_empty())
                .map(|n| n.peer_id.as_str()),
            self.manifest.vnodes,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use peerlab_node::api::{RingNode, VnodeInfo};

    use super::*;

    fn peers(n: u64) -> Vec<String> {
        (0..n)
            .map(|i| {
                let key = PeerId::synthetic(i).to_libp2p_bytes();
                peerlab_node::libp2p::PeerId::from_bytes(&key)
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn libp2p_names_map_to_core_peer_ids() {
        let names = peers(3);
        assert_eq!(core_peer_id(&names[2]), Some(PeerId::synthetic(2)));
        assert_eq!(core_peer_id("not a peer id"), None);
        let ring = ideal_ring(names.iter().map(String::as_str).chain(["junk"]), 4);
        assert_eq!(ring.len(), 12, "junk is left out");
    }

    /// Owners and replica sets against a brute-force reading of the definitions: the owner
    /// is the first virtual node at or after the key's id (wrapping), the replicas are the
    /// owner's peer and the next distinct peers along the ring.
    #[test]
    fn owners_and_replica_sets_follow_the_ring() {
        let names = peers(7);
        let ring = ideal_ring(names.iter().map(String::as_str), 3);
        let mut ids: Vec<(String, PeerId)> = (0..7)
            .flat_map(|p| {
                let peer = PeerId::synthetic(p);
                (0..3).map(move |i| (Id::vnode(&peer, i).to_hex(), peer))
            })
            .collect();
        ids.sort();
        for k in 0..200 {
            let key = format!("k{k}");
            let at = Id::hash(key.as_bytes()).to_hex();
            let start = ids.iter().position(|(id, _)| *id >= at).unwrap_or(0);
            let owner = key_owner(&ring, &key).unwrap();
            assert_eq!((owner.id.to_hex(), owner.peer), ids[start]);
            let mut want: Vec<PeerId> = Vec::new();
            for j in 0..ids.len() {
                let p = ids[(start + j) % ids.len()].1;
                if want.len() < 3 && !want.contains(&p) {
                    want.push(p);
                }
            }
            let got = ring.replica_peers(&Id::hash(key.as_bytes()), 3);
            assert_eq!(got, want, "{key}");
            assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), 3);
        }
        assert_eq!(
            ring.replica_peers(&Id::hash(b"x"), 9).len(),
            7,
            "no more than the peers"
        );
    }

    #[test]
    fn a_view_is_ideal_only_with_the_ideal_neighbours() {
        let names = peers(4);
        let ring = ideal_ring(names.iter().map(String::as_str), 2);
        let nodes = ring.nodes().to_vec();
        let at = |i: usize| RingNode {
            id: nodes[i % nodes.len()].id.to_hex(),
            peer_id: String::new(),
        };
        let view_of = |peer: PeerId, shift: usize| RingView {
            joined: true,
            vnodes: nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.peer == peer)
                .map(|(i, n)| VnodeInfo {
                    id: n.id.to_hex(),
                    joined: true,
                    predecessor: Some(at(i + nodes.len() - 1)),
                    successors: vec![at(i + 1 + shift)],
                    fingers: Vec::new(),
                })
                .collect(),
        };
        let p = PeerId::synthetic(1);
        assert!(view_is_ideal(&ring, &view_of(p, 0)));
        assert!(!view_is_ideal(&ring, &view_of(p, 1)), "a skipped successor");
        let mut unjoined = view_of(p, 0);
        unjoined.joined = false;
        assert!(!view_is_ideal(&ring, &unjoined));
        let mut stranger = view_of(p, 0);
        stranger.vnodes[0].id = Id::from_u64(1).to_hex();
        assert!(!view_is_ideal(&ring, &stranger), "a vnode not on the ring");
        assert!(!view_is_ideal(&ideal_ring([], 2), &view_of(p, 0)));
    }
}
