//! Round-trip estimation per peer: how long a request to one peer may go unanswered.
//!
//! Every answered request is a round-trip sample R of the peer it went to, and each peer
//! keeps the smoothed round trip SRTT and its mean deviation RTTVAR of Jacobson's rule
//! (V. Jacobson, "Congestion Avoidance and Control", SIGCOMM 1988) as RFC 6298 states it
//! (V. Paxson, M. Allman, J. Chu, M. Sargent, "Computing TCP's Retransmission Timer",
//! 2011):
//!
//! - the first sample sets SRTT = R and RTTVAR = R/2;
//! - each later one sets RTTVAR = ¾·RTTVAR + ¼·|SRTT − R|, then SRTT = ⅞·SRTT + ⅛·R;
//! - the retransmission timeout is RTO = SRTT + max(G, 4·RTTVAR), G the clock granularity
//!   ([`CLOCK_GRANULARITY`]): a peer with a perfectly steady round trip is not timed out
//!   at the very instant its answer is due.
//!
//! A request to the peer times out after RTO clamped to
//! [`Config::request_timeout`](crate::Config::request_timeout) below and
//! [`MAX_RTO_FACTOR`] times that above; a peer with no sample gets the floor. The floor
//! plays RFC 6298's lower bound (§2.4): fast peers keep the configured timeout, so on fast
//! links nothing changes, while a peer that is alive but answers late (an overloaded host)
//! gets a timeout that fits its round trip instead of being declared dead over and over.
//!
//! A timeout of a peer whose timeout is above the floor (one known to be slow) doubles it,
//! up to the ceiling, until the peer's next sample (§5.5). A peer whose round trips fit
//! under the floor keeps the floor after a timeout: for it a timeout says dead rather than
//! slow, a late answer is a sample anyway, and a dead peer learned again from another
//! peer's stale tables is detected exactly as fast as with a fixed timeout.
//!
//! Answers that arrive after their request timed out are samples too: the request ids,
//! peers and send times of the last [`MAX_TIMED_OUT`] timed-out requests are kept, so the
//! first late answer of a slow peer already teaches its round trip. Requests are never
//! retransmitted here, so an answer belongs to one transmission and Karn's ambiguity does
//! not arise. Only the peer a request went to gives a sample of it, and requests to this
//! peer itself (served inline) are never timed.
//!
//! Estimates outlive evictions (a peer evicted for a late answer that comes back gets its
//! learned timeout at once), and the table holds at most [`MAX_TIMED_PEERS`] peers.

use std::collections::BTreeMap;
use std::time::Duration;

use peerlab_overlay::{Instant, PeerId};

/// The ceiling on a peer's request timeout, as a multiple of
/// [`Config::request_timeout`](crate::Config::request_timeout). A peer can slow down only
/// the requests made to itself, by answering late; the ceiling bounds how long a lookup
/// waits on one hop through such a peer, and how late the death of a peer that used to be
/// slow is noticed (Chord's failure detector is this timeout).
pub const MAX_RTO_FACTOR: u32 = 4;

/// RFC 6298's G: the resolution of the timers a request's timeout is armed on. The node's
/// driver runs the core's timers on tokio's timer wheel, which ticks in milliseconds.
pub const CLOCK_GRANULARITY: Duration = Duration::from_millis(1);

/// Peers whose round trip is remembered; when full, the peer sampled least recently is
/// dropped. A node talks to its neighbours, its fingers and the peers of its lookups' paths,
/// a few hundred peers at most in rings of thousands: the bound keeps the table (about
/// 100 bytes a peer) small however many peers a node ever meets, and a peer dropped from
/// it only goes back to the floor.
pub const MAX_TIMED_PEERS: usize = 1024;

/// Timed-out requests remembered so that a late answer still gives a sample; beyond it the
/// oldest is dropped. A dead peer's requests are never answered and would otherwise pile
/// up; a slow peer's late answer comes a round trip after its request, and a node times
/// out far fewer than this many requests in that time.
pub const MAX_TIMED_OUT: usize = 256;

/// One peer's smoothed round trip and its mean deviation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// Smoothed round-trip time.
    pub srtt: Duration,
    /// Round-trip time variation (mean deviation).
    pub rttvar: Duration,
}

impl Estimate {
    /// The estimate after a first sample `r`.
    fn first(r: Duration) -> Estimate {
        Estimate {
            srtt: r,
            rttvar: r / 2,
        }
    }

    /// Takes a later sample `r` in (RTTVAR first, from the old SRTT).
    fn update(&mut self, r: Duration) {
        let dev = self.srtt.abs_diff(r);
        self.rttvar = self.rttvar * 3 / 4 + dev / 4;
        self.srtt = self.srtt * 7 / 8 + r / 8;
    }

    /// The retransmission timeout, unclamped: SRTT + max(G, 4·RTTVAR).
    pub fn rto(&self) -> Duration {
        let var = self.rttvar.saturating_mul(4).max(CLOCK_GRANULARITY);
        self.srtt.saturating_add(var)
    }
}

/// What is known of one peer's round trip.
#[derive(Clone, Copy, Debug)]
struct Peer {
    /// `None` until the first sample.
    estimate: Option<Estimate>,
    /// The backed-off timeout after a timeout, until the next sample.
    backoff: Option<Duration>,
    /// When the last sample was taken: the least recent goes first when full.
    sampled: Instant,
}

/// A timed-out request whose answer may still come.
#[derive(Clone, Copy, Debug)]
struct TimedOut {
    to: PeerId,
    sent: Instant,
}

/// Round-trip estimates of the peers this node sends requests to, and the request timeouts
/// they give.
#[derive(Clone, Debug)]
pub(super) struct RttTable {
    floor: Duration,
    peers: BTreeMap<PeerId, Peer>,
    /// By request id: ids are issued in order, so the first is the oldest.
    timed_out: BTreeMap<u64, TimedOut>,
}

impl RttTable {
    /// An empty table whose timeouts are clamped to `floor ..= MAX_RTO_FACTOR · floor`.
    pub(super) fn new(floor: Duration) -> RttTable {
        RttTable {
            floor,
            peers: BTreeMap::new(),
            timed_out: BTreeMap::new(),
        }
    }

    /// The longest timeout a request gets.
    pub(super) fn ceiling(&self) -> Duration {
        self.floor.saturating_mul(MAX_RTO_FACTOR)
    }

    /// How long a request to `peer` may go unanswered now.
    pub(super) fn timeout(&self, peer: &PeerId) -> Duration {
        let Some(p) = self.peers.get(peer) else {
            return self.floor;
        };
        let rto = p.estimate.map_or(self.floor, |e| e.rto());
        let rto = rto.clamp(self.floor, self.ceiling());
        p.backoff.map_or(rto, |b| b.max(rto))
    }

    /// The estimate of `peer`, if it was ever sampled (and not dropped since).
    pub(super) fn estimate(&self, peer: &PeerId) -> Option<Estimate> {
        self.peers.get(peer).and_then(|p| p.estimate)
    }

    /// Peers in the table.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.peers.len()
    }

    /// A request to `peer` sent at `sent` was answered at `now`.
    pub(super) fn sample(&mut self, peer: PeerId, sent: Instant, now: Instant) {
        let r = now.saturating_since(sent);
        let p = self.entry(peer, now);
        match &mut p.estimate {
            Some(e) => e.update(r),
            None => p.estimate = Some(Estimate::first(r)),
        }
        p.backoff = None;
        p.sampled = now;
    }

    /// Request `req` to `peer`, sent at `sent` with timeout `armed`, timed out: a late
    /// answer is waited for, and a peer known to be slow has its timeout doubled (up to the
    /// ceiling). Concurrent requests that time out together double it once, not once each.
    pub(super) fn timed_out(&mut self, req: u64, peer: PeerId, sent: Instant, armed: Duration) {
        let ceiling = self.ceiling();
        let slow = self.timeout(&peer) > self.floor;
        if let Some(p) = self.peers.get_mut(&peer).filter(|_| slow) {
            let doubled = armed.saturating_mul(2).min(ceiling);
            p.backoff = Some(p.backoff.map_or(doubled, |b| b.max(doubled)));
        }
        if self.timed_out.len() >= MAX_TIMED_OUT {
            self.timed_out.pop_first();
        }
        self.timed_out.insert(req, TimedOut { to: peer, sent });
    }

    /// An answer to request `req` came from `from` at `now`, after the request timed out:
    /// a sample if `from` is the peer it went to. Returns whether it was one.
    pub(super) fn late_answer(&mut self, req: u64, from: PeerId, now: Instant) -> bool {
        match self.timed_out.get(&req) {
            Some(t) if t.to == from => {
                let sent = t.sent;
                self.timed_out.remove(&req);
                self.sample(from, sent, now);
                true
            }
            _ => false,
        }
    }

    /// `peer`'s entry, made (dropping the least recently sampled peer when full) if new.
    fn entry(&mut self, peer: PeerId, now: Instant) -> &mut Peer {
        if !self.peers.contains_key(&peer)
            && self.peers.len() >= MAX_TIMED_PEERS
            && let Some(oldest) = self
                .peers
                .iter()
                .min_by_key(|(_, p)| p.sampled)
                .map(|(id, _)| *id)
        {
            self.peers.remove(&oldest);
        }
        self.peers.entry(peer).or_insert(Peer {
            estimate: None,
            backoff: None,
            sampled: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOOR: Duration = Duration::from_millis(300);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at(ms: u64) -> Instant {
        Instant(ms * 1000)
    }

    fn peer(n: u64) -> PeerId {
        PeerId::synthetic(n)
    }

    #[test]
    fn a_peer_never_sampled_gets_the_floor() {
        let t = RttTable::new(FLOOR);
        assert_eq!(t.timeout(&peer(1)), FLOOR);
        assert_eq!(t.estimate(&peer(1)), None);
        assert_eq!(t.ceiling(), FLOOR * MAX_RTO_FACTOR);
    }

    #[test]
    fn the_first_sample_sets_srtt_and_half_of_it_as_rttvar() {
        let mut t = RttTable::new(FLOOR);
        t.sample(peer(1), at(1000), at(1200));
        let e = t.estimate(&peer(1)).unwrap();
        assert_eq!(e.srtt, ms(200));
        assert_eq!(e.rttvar, ms(100));
        assert_eq!(e.rto(), ms(600));
        assert_eq!(t.timeout(&peer(1)), ms(600));
    }

    #[test]
    fn later_samples_are_smoothed_rttvar_from_the_old_srtt() {
        let mut t = RttTable::new(FLOOR);
        t.sample(peer(1), at(0), at(200));
        t.sample(peer(1), at(1000), at(1600));
        let e = t.estimate(&peer(1)).unwrap();
        // RTTVAR = ¾·100 + ¼·|200 − 600| = 175; SRTT = ⅞·200 + ⅛·600 = 250.
        assert_eq!(e.rttvar, ms(175));
        assert_eq!(e.srtt, ms(250));
        assert_eq!(e.rto(), ms(950));
        // A steady round trip: the variation decays, the timeout comes down towards it.
        for i in 0..100 {
            t.sample(peer(1), at(2000 + i * 1000), at(2000 + i * 1000 + 500));
        }
        let e = t.estimate(&peer(1)).unwrap();
        assert!(e.srtt.abs_diff(ms(500)) < ms(1), "{e:?}");
        assert!(e.rttvar < ms(1), "{e:?}");
        assert_eq!(
            t.timeout(&peer(1)),
            e.srtt + CLOCK_GRANULARITY.max(e.rttvar * 4)
        );
        assert!(t.timeout(&peer(1)) > ms(500), "never the round trip itself");
    }

    #[test]
    fn the_timeout_is_clamped_to_floor_and_ceiling() {
        let mut t = RttTable::new(FLOOR);
        // A fast peer: RTO 60 ms, the floor applies.
        t.sample(peer(1), at(0), at(20));
        assert_eq!(t.estimate(&peer(1)).unwrap().rto(), ms(60));
        assert_eq!(t.timeout(&peer(1)), FLOOR);
        // A very slow one: RTO 3 s, the ceiling applies.
        t.sample(peer(2), at(0), at(1000));
        assert_eq!(t.estimate(&peer(2)).unwrap().rto(), ms(3000));
        assert_eq!(t.timeout(&peer(2)), ms(1200));
        // In between: the RTO itself.
        t.sample(peer(3), at(0), at(250));
        assert_eq!(t.timeout(&peer(3)), ms(750));
    }

    #[test]
    fn a_slow_peers_timeout_doubles_up_to_the_ceiling_until_the_next_sample() {
        let mut t = RttTable::new(FLOOR);
        let p = peer(1);
        // RTO 3·120 = 360 ms: above the floor.
        t.sample(p, at(0), at(120));
        assert_eq!(t.timeout(&p), ms(360));
        t.timed_out(1, p, at(1000), ms(360));
        assert_eq!(t.timeout(&p), ms(720));
        // Two requests armed with the same timeout that time out together double it once.
        t.timed_out(2, p, at(2000), ms(720));
        t.timed_out(3, p, at(2000), ms(720));
        assert_eq!(t.timeout(&p), ms(1200), "1440 ms, capped at the ceiling");
        t.timed_out(4, p, at(3000), ms(1200));
        assert_eq!(t.timeout(&p), ms(1200), "not past the ceiling");
        // A sample ends the backoff: the timeout is the estimate's again.
        t.sample(p, at(4000), at(4200));
        let rto = t.estimate(&p).unwrap().rto();
        assert!(rto < ms(1200) && rto > FLOOR, "{rto:?}");
        assert_eq!(t.timeout(&p), rto);
    }

    #[test]
    fn a_timeout_leaves_a_fast_or_unknown_peer_at_the_floor() {
        let mut t = RttTable::new(FLOOR);
        t.sample(peer(1), at(0), at(20));
        t.timed_out(1, peer(1), at(1000), FLOOR);
        assert_eq!(t.timeout(&peer(1)), FLOOR);
        t.timed_out(2, peer(2), at(1000), FLOOR);
        assert_eq!(t.timeout(&peer(2)), FLOOR);
        assert_eq!(t.len(), 1, "a peer never answered takes no entry");
    }

    #[test]
    fn a_late_answer_from_the_peer_asked_is_a_sample_once() {
        let mut t = RttTable::new(FLOOR);
        let p = peer(1);
        t.timed_out(7, p, at(0), FLOOR);
        assert!(!t.late_answer(7, peer(2), at(500)), "another peer's answer");
        assert!(!t.late_answer(8, p, at(500)), "another request");
        assert!(t.late_answer(7, p, at(600)));
        let e = t.estimate(&p).unwrap();
        assert_eq!(e.srtt, ms(600));
        assert_eq!(t.timeout(&p), ms(1200));
        assert!(!t.late_answer(7, p, at(700)), "a duplicate");
        assert_eq!(t.estimate(&p).unwrap().srtt, ms(600));
    }

    #[test]
    fn timed_out_requests_are_bounded_oldest_dropped() {
        let mut t = RttTable::new(FLOOR);
        let p = peer(1);
        for req in 0..MAX_TIMED_OUT as u64 + 10 {
            t.timed_out(req, p, at(req), FLOOR);
        }
        assert_eq!(t.timed_out.len(), MAX_TIMED_OUT);
        assert!(!t.late_answer(0, p, at(5000)), "the oldest was dropped");
        assert!(t.late_answer(MAX_TIMED_OUT as u64 + 9, p, at(5000)));
    }

    #[test]
    fn the_table_is_bounded_least_recently_sampled_dropped() {
        let mut t = RttTable::new(FLOOR);
        let n = MAX_TIMED_PEERS as u64;
        for i in 0..n {
            t.sample(peer(i), at(i), at(i + 500));
        }
        // Peer 0 sampled again: now peer 1 is the least recent.
        t.sample(peer(0), at(n), at(n + 500));
        t.sample(peer(n), at(n + 1), at(n + 501));
        assert_eq!(t.len(), MAX_TIMED_PEERS);
        assert!(t.estimate(&peer(0)).is_some());
        assert!(t.estimate(&peer(1)).is_none(), "dropped");
        assert_eq!(t.timeout(&peer(1)), FLOOR);
        assert!(t.estimate(&peer(n)).is_some());
    }
}
