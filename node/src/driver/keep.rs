//! The connection manager: which connections a node keeps open.
//!
//! Every message to a peer without a connection dials it, and a long-lived stream keeps a
//! connection alive for as long as either end sends now and then. Left alone, a node's
//! connections drift towards a full mesh: each SWIM probe, indirect probe, member sync,
//! iterative lookup hop and flooding hello meets another member, and each such connection
//! costs both ends memory (quinn's connection state and buffers, libp2p's connection task,
//! the stream tasks) for as long as it lives. rust-libp2p's own answer is a connection
//! manager that keeps the peers the node's protocols rely on and trims the rest (the
//! `KeepAlive` of its protocol handlers, go-libp2p's `connmgr` with its low and high
//! watermarks, and the protected peers of both); this is peerlab's.
//!
//! The rules, applied every housekeeping period:
//!
//! - A **needed** peer is never closed here: the core names them
//!   ([`NetCore::needed_peers`](super::NetCore::needed_peers): DHT predecessors,
//!   successors and fingers, gossip partners, flooding neighbours). A peer with frames
//!   waiting to it (a transfer in flight) counts as needed too.
//! - A connection to another peer that **this node dialled** is closed once no frame went
//!   either way for [`OUTBOUND_IDLE`]: it was opened for an exchange (a probe, a lookup hop,
//!   a member sync), and that exchange is over. SWIM probes of members outside the partial
//!   view thus use short-lived connections.
//! - A connection **the peer dialled** is the peer's to close: the peer needed it, and the
//!   period at which it uses it (its fix-fingers or stabilize period, up to tens of seconds
//!   at rest) is its own. It is closed here only after [`INBOUND_IDLE`] without a frame, or
//!   when the bound is exceeded. Closing it earlier would make the peer dial again at each
//!   maintenance round: a QUIC handshake per round and peer, which at hundreds of nodes on
//!   one machine costs more than the connection does.
//! - The manager runs only with a bound set (`NetConfig::max_peers` > 0; off by default,
//!   see [`DEFAULT_MAX_PEERS`]).
//! - While more peers than the **bound** (`NetConfig::max_peers`) are connected, the
//!   connections to peers that are not needed are closed, least recently used first, as
//!   long as they were quiet for [`EVICT_QUIET`] (longer than a peer that needs the
//!   connection leaves it unused).
//!   Needed peers are kept even above the bound: a node whose protocols need more peers
//!   than the bound says so through the `peerlab_connections` gauge rather than losing its
//!   ring.
//!
//! A connection this manager closed does not tell the core that the peer is down (it is
//! not; the core's next message dials again).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A connection this node dialled to a peer it does not need is closed after this long
/// without a frame either way. Longer than the exchanges such connections are opened for:
/// a SWIM probe with its indirect probes (one probe period, 1–7.5 s on a testnet), a lookup
/// hop or a member sync (a round trip); short enough that the members a node probes in turn
/// do not add up to a full mesh (one probe per period: at most a handful open at once).
pub(crate) const OUTBOUND_IDLE: Duration = Duration::from_secs(10);

/// A connection the peer dialled is closed here after this long without a frame either
/// way (the peer stopped using it without closing it). Above the longest period at which a
/// peer uses a connection it keeps — DHT maintenance at rest, 25 s on a 1000-node testnet —
/// with room for a round skipped, so that a peer's fingers do not cost it a handshake per
/// round.
pub(crate) const INBOUND_IDLE: Duration = Duration::from_secs(90);

/// Above the bound, a connection to a peer that is not needed is closed only once it was
/// quiet this long. The node cannot tell whether the peer needs the connection (it is the
/// peer's finger, successor or gossip partner): a peer uses such a connection at least once
/// per maintenance period, 25 s at rest on a 1000-node testnet, so a connection quiet for
/// longer is one the peer no longer uses. A shorter quiet time made nodes whose own needed
/// peers exceeded the bound close each other's fingers every few seconds: a 100-process
/// testnet spent its cores on ~700 QUIC handshakes a second and took 310 s to converge.
pub(crate) const EVICT_QUIET: Duration = Duration::from_secs(30);

/// The default of `NetConfig::max_peers`: 0, the manager off (connections live until
/// libp2p's idle timeout, as without it). With a bound of 40, a 100-process testnet with
/// four virtual nodes did not converge within 7 minutes (18.6 s without the manager), and a
/// 1000-node in-process testnet kept 27–45 connected peers per node but did not converge
/// within 15 minutes (neither did one without the manager within 10); until that is
/// understood (docs/experiments/testnet.md, Lighter nodes) a node opts in.
pub(crate) const DEFAULT_MAX_PEERS: u32 = 0;

/// One connected peer as the manager sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Candidate<P> {
    pub peer: P,
    /// Whether this node dialled a connection to it (otherwise the peer dialled).
    pub dialled: bool,
    /// Needed by the core, or frames waiting to it.
    pub needed: bool,
    /// The last frame sent or received (the connection's start if none).
    pub last: Instant,
}

/// When each peer last sent or was sent a frame.
#[derive(Debug)]
pub(super) struct Activity<P: Ord> {
    last: BTreeMap<P, Instant>,
}

impl<P: Ord> Default for Activity<P> {
    fn default() -> Self {
        Activity {
            last: BTreeMap::new(),
        }
    }
}

impl<P: Ord + Copy> Activity<P> {
    /// A frame went to or came from `peer` at `now`.
    pub(super) fn touch(&mut self, peer: P, now: Instant) {
        self.last.insert(peer, now);
    }

    /// When `peer` last had a frame (`None`: never since it connected).
    pub(super) fn last(&self, peer: &P) -> Option<Instant> {
        self.last.get(peer).copied()
    }

    /// Forgets every peer for which `keep` is false (the disconnected ones).
    pub(super) fn retain(&mut self, keep: impl Fn(&P) -> bool) {
        self.last.retain(|p, _| keep(p));
    }
}

/// The peers whose connections close now, given every connected peer and the bound on how
/// many the node keeps (see the module docs for the rules).
pub(super) fn to_close<P: Copy + Ord>(
    peers: &[Candidate<P>],
    bound: usize,
    now: Instant,
) -> Vec<P> {
    let quiet = |c: &Candidate<P>| now.saturating_duration_since(c.last);
    let mut close: Vec<P> = peers
        .iter()
        .filter(|c| !c.needed)
        .filter(|c| {
            quiet(c)
                >= if c.dialled {
                    OUTBOUND_IDLE
                } else {
                    INBOUND_IDLE
                }
        })
        .map(|c| c.peer)
        .collect();
    let left = peers.len() - close.len();
    if left > bound {
        let mut idle: Vec<&Candidate<P>> = peers
            .iter()
            .filter(|c| !c.needed && quiet(c) >= EVICT_QUIET && !close.contains(&c.peer))
            .collect();
        // Least recently used first; the peer id breaks ties so the choice is stable.
        idle.sort_by_key(|c| (c.last, c.peer));
        close.extend(idle.into_iter().take(left - bound).map(|c| c.peer));
    }
    close
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(peer: u32, dialled: bool, needed: bool, last: Instant) -> Candidate<u32> {
        Candidate {
            peer,
            dialled,
            needed,
            last,
        }
    }

    #[test]
    fn unneeded_connections_close_after_their_direction_s_idle_time() {
        let t0 = Instant::now();
        let peers = [
            cand(1, true, false, t0),
            cand(2, false, false, t0),
            cand(3, true, true, t0),
            cand(4, false, true, t0),
        ];
        let at = |d: Duration| {
            let mut v = to_close(&peers, 100, t0 + d);
            v.sort();
            v
        };
        assert!(at(OUTBOUND_IDLE - Duration::from_millis(1)).is_empty());
        assert_eq!(at(OUTBOUND_IDLE), vec![1], "a dialled, unneeded peer goes");
        assert_eq!(
            at(INBOUND_IDLE - Duration::from_millis(1)),
            vec![1],
            "the peer's own connection is its to close"
        );
        assert_eq!(at(INBOUND_IDLE), vec![1, 2]);
        assert_eq!(
            at(INBOUND_IDLE * 100),
            vec![1, 2],
            "needed peers are kept however quiet"
        );
    }

    #[test]
    fn above_the_bound_the_least_recently_used_unneeded_peers_go() {
        let t0 = Instant::now();
        let s = EVICT_QUIET / 10;
        let now = t0 + s * 13;
        // Ten inbound peers, none idle long enough to go by itself; peer i last used at i s.
        let mut peers: Vec<Candidate<u32>> =
            (0..10).map(|i| cand(i, false, false, t0 + s * i)).collect();
        // Needed peers count towards the bound but are never picked.
        peers.push(cand(100, true, true, t0));
        peers.push(cand(101, false, true, t0));
        let mut closed = to_close(&peers, 6, now);
        closed.sort();
        // 12 connected, bound 6: six go, the oldest unneeded ones, quiet for EVICT_QUIET.
        assert_eq!(closed, vec![0, 1, 2, 3]);
        assert!(
            closed.len() < 6,
            "peers used within EVICT_QUIET stay even above the bound"
        );
        let later = t0 + s * 21;
        let mut closed = to_close(&peers, 6, later);
        closed.sort();
        assert_eq!(closed, vec![0, 1, 2, 3, 4, 5]);
        // Only needed peers left, more than the bound: nothing to close.
        let needed: Vec<_> = (0..10).map(|i| cand(i, true, true, t0)).collect();
        assert!(to_close(&needed, 2, later).is_empty());
    }

    #[test]
    fn activity_is_kept_per_peer_until_it_disconnects() {
        let t0 = Instant::now();
        let mut a = Activity::default();
        a.touch(1u32, t0);
        a.touch(2, t0);
        a.touch(1, t0 + Duration::from_secs(3));
        assert_eq!(a.last(&1), Some(t0 + Duration::from_secs(3)));
        a.retain(|p| *p != 2);
        assert_eq!(a.last(&2), None);
    }
}
