//! Rejoining: a node that is alone keeps looking for the overlay, forever.
//!
//! A node is *alone* when it has no connection at all, or when its cores see no other live
//! member (the DHT ring holds only its own virtual nodes, or gossip knows no other member
//! that is up; see `NetCore::isolated`). A restart of the bootstrap node, a network blip
//! or a partition all end there, and nothing from outside will bring the node back: peers
//! that declared it dead do not dial it. So while it is alone the driver runs *rejoin
//! rounds*: each round dials the configured bootstrap addresses and up to
//! [`REJOIN_DIALS_PER_ROUND`] of the peers it knew last (the ones it was connected to, kept
//! in the data dir's `peers` file so that a restarted node has them too, at most
//! [`MAX_KNOWN_PEERS`]), and a connection to any of them hands the core a bootstrap command
//! through that peer (a gossip join, and a DHT join or, for a ring of its own, fallback
//! peers through which the DHT merges its ring into the other).
//!
//! Rounds follow a capped exponential backoff with jitter, as in the AWS architecture
//! note "Exponential Backoff And Jitter" (2015): the delay starts at
//! [`REJOIN_FIRST_DELAY`], doubles after every round up to [`REJOIN_MAX_DELAY`], and each
//! wait is drawn uniformly from the upper half of the current delay, so that the nodes cut
//! off by one event do not all dial the same peer in the same second when it comes back.
//! The backoff resets as soon as the node is no longer alone.

use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// Delay before the second rejoin round (the first runs at once): a dropped link to a live
/// peer is usually back within a second.
pub(crate) const REJOIN_FIRST_DELAY: Duration = Duration::from_millis(500);

/// Longest delay between rejoin rounds. A peer that comes back is found within this long
/// (plus a dial), and a node alone for hours costs a handful of dials per this period.
pub(crate) const REJOIN_MAX_DELAY: Duration = Duration::from_secs(10);

/// Most last-known peers dialed in one round besides the bootstrap addresses (enough that a
/// few dead ones do not hide a live one; few enough that a round is cheap).
pub(crate) const REJOIN_DIALS_PER_ROUND: usize = 8;

/// Most last-known peers remembered (and written to the data dir): a node needs one live
/// peer to rejoin, and dials at most [`REJOIN_DIALS_PER_ROUND`] a round anyway.
pub(crate) const MAX_KNOWN_PEERS: usize = 32;

/// Most addresses kept per last-known peer.
pub(crate) const KNOWN_ADDRS_PER_PEER: usize = 4;

/// The backoff between rejoin rounds.
#[derive(Debug)]
pub(super) struct Backoff {
    delay: Duration,
    /// When the next round may run (`None`: at once).
    next: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            delay: REJOIN_FIRST_DELAY,
            next: None,
        }
    }
}

impl Backoff {
    /// Whether a round is due at `now`; if so, schedules the next one. `jitter` is a
    /// uniform draw in `[0, 1)`: the wait is `delay * (1 + jitter) / 2`.
    pub(super) fn due(&mut self, now: Instant, jitter: f64) -> bool {
        if self.next.is_some_and(|n| now < n) {
            return false;
        }
        let wait = self.delay.mul_f64((1.0 + jitter.clamp(0.0, 1.0)) / 2.0);
        self.next = Some(now + wait);
        self.delay = (self.delay * 2).min(REJOIN_MAX_DELAY);
        true
    }

    /// The node is no longer alone: the next time it is, the first round runs at once.
    pub(super) fn reset(&mut self) {
        *self = Backoff::default();
    }

    /// Whether rounds have started since the last reset.
    pub(super) fn active(&self) -> bool {
        self.next.is_some()
    }
}

/// The peer a multiaddr names in its `/p2p/` suffix.
pub(super) fn peer_of(addr: &Multiaddr) -> Option<libp2p::PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

/// Parses the `peers` file: one multiaddr ending in `/p2p/<id>` per line. Lines that do not
/// parse or name no peer are skipped (a hand-edited file must not stop the node); at most
/// [`MAX_KNOWN_PEERS`] peers are kept.
pub(super) fn parse_known(text: &str) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    let mut peers = Vec::new();
    for line in text.lines() {
        let Ok(a) = line.trim().parse::<Multiaddr>() else {
            continue;
        };
        let Some(p) = peer_of(&a) else { continue };
        if !peers.contains(&p) {
            if peers.len() >= MAX_KNOWN_PEERS {
                continue;
            }
            peers.push(p);
        }
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert!(!b.active());
        assert!(b.due(t0, 0.999), "the first round runs at once");
        assert!(b.active());
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..12 {
            // Not due a moment before the scheduled time (jitter 1: the full delay).
            let next = b.next.unwrap();
            assert!(!b.due(next - Duration::from_millis(1), 1.0));
            waits.push(next - now);
            now = next;
            assert!(b.due(now, 1.0));
        }
        assert!(waits[0] >= REJOIN_FIRST_DELAY.mul_f64(0.99));
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= REJOIN_MAX_DELAY), "{waits:?}");
        assert_eq!(*waits.last().unwrap(), REJOIN_MAX_DELAY.mul_f64(1.0));
        b.reset();
        assert!(!b.active());
        assert!(
            b.due(now, 0.5),
            "after a reset the first round runs at once again"
        );
    }

    #[test]
    fn jitter_stays_in_the_upper_half_of_the_delay() {
        let t0 = Instant::now();
        for j in [0.0, 0.25, 0.999, 7.0, -3.0] {
            let mut b = Backoff::default();
            b.due(t0, j);
            b.due(t0 + Duration::from_secs(3600), j);
            let wait = b.next.unwrap() - (t0 + Duration::from_secs(3600));
            let d = REJOIN_FIRST_DELAY * 2;
            assert!(wait >= d / 2 && wait <= d, "jitter {j}: {wait:?}");
        }
    }

    #[test]
    fn known_peers_file_is_bounded_and_tolerant() {
        let id = libp2p::PeerId::random();
        let mut text =
            format!("/ip4/127.0.0.1/tcp/1/p2p/{id}\nnot an address\n/ip4/127.0.0.1/tcp/2\n");
        for i in 0..(MAX_KNOWN_PEERS + 10) {
            text.push_str(&format!(
                "/ip4/127.0.0.1/tcp/{}/p2p/{}\n",
                100 + i,
                libp2p::PeerId::random()
            ));
        }
        let known = parse_known(&text);
        assert_eq!(known.len(), MAX_KNOWN_PEERS, "one address per peer here");
        assert_eq!(peer_of(&known[0]), Some(id));
        assert!(known.iter().all(|a| peer_of(a).is_some()));
    }
}
