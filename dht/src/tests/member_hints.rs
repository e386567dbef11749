//! Member hints (`core::member_hints`): lookups that start where membership places the key.

use std::time::Duration;

use peerlab_overlay::{Id, PeerId};

use super::{RingNet, cfg, converged_with};
use crate::{Command, Reply};

/// Hops of lookups for `keys` keys asked at `p` (request ids from `base`).
fn hops(net: &mut super::Net, p: PeerId, base: u64, keys: u64) -> Vec<u32> {
    for k in 0..keys {
        net.command(
            p,
            Command::Lookup {
                req: base + k,
                key: Id::hash(&k.to_be_bytes()),
            },
        );
    }
    net.run_for(Duration::from_secs(10));
    (0..keys)
        .map(|k| match net.reply(base + k) {
            Some(Ok(Reply::Lookup(route))) => {
                let owner = net.ring().successor(&Id::hash(&k.to_be_bytes())).unwrap();
                assert_eq!(route.owner, owner.peer, "lookup {k} found the wrong owner");
                route.hops
            }
            other => panic!("lookup {k}: {other:?}"),
        })
        .collect()
}

#[test]
fn a_lookup_starting_at_a_member_hint_reaches_the_owner_in_one_hop() {
    let (mut net, peers) = converged_with(64, cfg(1));
    let asker = peers[0];
    let before = hops(&mut net, asker, 10_000, 100);
    for p in &peers {
        net.node_mut(&asker).member_up(*p);
    }
    let after = hops(&mut net, asker, 20_000, 100);
    let mean = |h: &[u32]| h.iter().sum::<u32>() as f64 / h.len() as f64;
    // Finger routing in a ring of 64 takes about ½·log2 64 = 3 hops to the key's
    // predecessor, then one to the owner; the hint is the predecessor itself.
    assert!(
        mean(&before) >= mean(&after) + 1.0,
        "finger routing {before:?}, with hints {after:?}"
    );
    assert!(after.iter().all(|&h| h <= 2), "with hints: {after:?}");
}

#[test]
fn a_stale_hint_costs_a_detour_not_a_failed_lookup() {
    let (mut net, peers) = converged_with(32, cfg(1));
    let asker = peers[0];
    for p in &peers {
        net.node_mut(&asker).member_up(*p);
    }
    // Crashed, and still a member as far as the asker's membership knows.
    for dead in [peers[3], peers[9], peers[17]] {
        net.crash(dead);
    }
    // The ring repairs itself; the hints are not told.
    net.run_for(Duration::from_secs(60));
    let h = hops(&mut net, asker, 30_000, 60);
    assert_eq!(h.len(), 60);
    // Members reported down are no longer hints.
    for dead in [peers[3], peers[9], peers[17]] {
        net.node_mut(&asker).member_down(dead);
    }
    let h = hops(&mut net, asker, 40_000, 60);
    assert!(h.iter().all(|&h| h <= 2), "{h:?}");
}
