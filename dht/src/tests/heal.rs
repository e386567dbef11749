//! Offences while a partition heals: the two sides' views of who owns and who replicates
//! what disagree until the rings have merged, and that disagreement alone must never add up
//! to a ban of an honest peer.

use std::collections::BTreeMap;
use std::time::Duration;

use peerlab_overlay::{Instant, Offence, PeerId};

use super::{RingNet, cfg, converged_with};
use crate::Command;

/// The node driver's strike bucket (node/src/driver/limits.rs), replayed over the offences
/// the cores report: a peer is banned at [`Offence::PROVEN`] points, and sheds one point
/// per this much time.
const STRIKE_LEAK: Duration = Duration::from_secs(10);

/// The most points any reporter's bucket held against any one peer over `offences`.
fn worst_bucket(
    offences: &[(Instant, PeerId, PeerId, Offence)],
) -> (u32, Option<(PeerId, PeerId)>) {
    let mut buckets: BTreeMap<(PeerId, PeerId), (u32, Instant)> = BTreeMap::new();
    let mut worst = (0, None);
    for &(at, reporter, offender, offence) in offences {
        let (points, since) = buckets.entry((reporter, offender)).or_insert((0, at));
        let shed = (at.saturating_since(*since).as_nanos() / STRIKE_LEAK.as_nanos()) as u32;
        *points = points.saturating_sub(shed);
        *since = *since + STRIKE_LEAK * shed;
        *points += offence.severity();
        if *points > worst.0 {
            worst = (*points, Some((reporter, offender)));
        }
    }
    worst
}

/// A ring of twelve peers cut in halves for a minute (each half closes on itself, repairs
/// its replica sets and takes writes), then healed, twice. The node configuration's
/// maintenance: 4 virtual nodes, repair every 2 s.
#[test]
fn a_healing_partition_bans_no_honest_peer() {
    let c = crate::Config {
        repair_period: Duration::from_secs(2),
        ..cfg(4)
    };
    let (mut net, peers) = converged_with(12, c);
    // Twice: the second heal starts from the state the first one left.
    for round in 0..2 {
        // Writes `count` keys named `prefix`-i, key i at the node `at(i)`.
        let write = |net: &mut super::Net, prefix: &str, count: u64, at: &dyn Fn(u64) -> PeerId| {
            for i in 0..count {
                net.command(
                    at(i),
                    Command::Put {
                        req: 1000 + i,
                        key: format!("{prefix}{round}-{i}").into_bytes(),
                        value: vec![round as u8],
                        ttl: None,
                    },
                );
            }
        };
        write(&mut net, "k", 120, &|i| peers[i as usize % 12]);
        net.run_for(Duration::from_secs(10));

        // Cut the ring in two halves long enough for each to close on itself and repair its
        // replica sets, and write on both sides meanwhile.
        let (a, b) = peers.split_at(6);
        for &p in b {
            net.set_partition(p, 1);
        }
        net.run_for(Duration::from_secs(30));
        write(&mut net, "n", 120, &|i| {
            let side = if i % 2 == 0 { a } else { b };
            side[i as usize % 6]
        });
        net.run_for(Duration::from_secs(30));
        assert!(!net.neighbours_ideal(), "each side closed on itself");

        // Heal; membership reports the other side's peers back (the node's `CheckRing`).
        net.heal_partitions();
        net.take_offences();
        for (i, &p) in peers.iter().enumerate() {
            let other = if i < 6 { b } else { a };
            net.command(
                p,
                Command::CheckRing {
                    peers: other.to_vec(),
                },
            );
        }
        net.run_for(Duration::from_secs(120));
        net.assert_ideal();

        let offences = net.take_offences();
        let (points, pair) = worst_bucket(&offences);
        assert!(
            points < Offence::PROVEN,
            "disagreeing views after the heal took a bucket to {points} points ({pair:?}); \
         offences: {}",
            offences.len()
        );
    }
}
