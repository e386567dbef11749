//! Strikes and bans: what a peer's bad input costs it.
//!
//! Every input of a peer that the node rejects adds strike points against it: a frame that
//! fails to decode, exceeds its channel's limit or comes from a key type the cores cannot
//! name ([`Offence::Malformed`]), a frame that stalls half-way ([`Offence::Stalled`]),
//! traffic over the peer's rate ([`Offence::Excess`], see `rate.rs`), and every input a core
//! rejects (`Output::Offence`), each weighed by [`Offence::severity`]. Points leak away, one
//! per [`STRIKE_LEAK`] (a leaky bucket), so the occasional stale message of an honest peer
//! never adds up, while bad input in quick succession does: at [`STRIKE_LIMIT`] points the
//! peer is disconnected and refused for [`BAN_DURATION`]; then the ban ends and the peer
//! starts again from zero.
//!
//! Identities are free, so a ban alone does not stop a determined peer from coming back
//! under a new one; what bounds it is the per-address connection cap (`gate.rs`). Both
//! tables are bounded ([`MAX_STRIKE_RECORDS`], [`MAX_BANNED`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use peerlab_overlay::Offence;

/// Strike points at which a peer is disconnected and banned: one proven offence
/// (`Offence::PROVEN`, a forged signature or corrupt data), three malformed frames within
/// the leak of one point, or six stalls or rate excesses close together.
pub(crate) const STRIKE_LIMIT: u32 = Offence::PROVEN;

/// A peer sheds one strike point per this much time. An honest peer whose view is stale
/// earns a 1-point offence now and then (a write sent to a former replica, a reply that
/// raced its timeout); at one per 10 s or fewer its points never grow, while a peer that
/// sends three malformed frames (4 points each) within 10 s reaches the limit.
pub(crate) const STRIKE_LEAK: Duration = Duration::from_secs(10);

/// How long a banned peer is refused.
pub(crate) const BAN_DURATION: Duration = Duration::from_secs(600);

/// Most peers remembered as banned; the ban that ends first is forgotten first beyond this.
pub(crate) const MAX_BANNED: usize = 1024;

/// Most peers with strike points remembered. Beyond it, records that leaked to zero go
/// first, then the one with the fewest points (a peer far from a ban loses little by being
/// forgotten).
pub(crate) const MAX_STRIKE_RECORDS: usize = 4096;

/// One peer's points as of `at`.
#[derive(Clone, Copy, Debug)]
struct Record {
    points: u32,
    at: Instant,
}

impl Record {
    /// The record leaked until `now`: whole points shed, the remainder of the current leak
    /// period kept.
    fn at(self, now: Instant) -> Record {
        let periods = now.saturating_duration_since(self.at).as_nanos() / STRIKE_LEAK.as_nanos();
        let shed = u32::try_from(periods).unwrap_or(u32::MAX);
        if shed >= self.points {
            return Record { points: 0, at: now };
        }
        Record {
            points: self.points - shed,
            at: self.at + STRIKE_LEAK * shed,
        }
    }
}

/// Strike points per peer and the peers banned until a deadline.
#[derive(Debug, Default)]
pub(super) struct Strikes {
    records: BTreeMap<libp2p::PeerId, Record>,
    banned: BTreeMap<libp2p::PeerId, Instant>,
}

impl Strikes {
    /// Adds `points` against `peer` at `now`; returns whether that banned it (until `now` +
    /// [`BAN_DURATION`]).
    pub(super) fn add(&mut self, peer: libp2p::PeerId, points: u32, now: Instant) -> bool {
        if !self.records.contains_key(&peer) && self.records.len() >= MAX_STRIKE_RECORDS {
            self.records.retain(|_, r| r.at(now).points > 0);
            if self.records.len() >= MAX_STRIKE_RECORDS
                && let Some(least) = self
                    .records
                    .iter()
                    .min_by_key(|(_, r)| r.at(now).points)
                    .map(|(p, _)| *p)
            {
                self.records.remove(&least);
            }
        }
        let current = self
            .records
            .get(&peer)
            .map(|r| r.at(now))
            .unwrap_or(Record { points: 0, at: now });
        let total = current.points.saturating_add(points);
        if total < STRIKE_LIMIT {
            self.records.insert(
                peer,
                Record {
                    points: total,
                    at: current.at,
                },
            );
            return false;
        }
        self.records.remove(&peer);
        if self.banned.len() >= MAX_BANNED
            && let Some(first) = self.banned.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p)
        {
            self.banned.remove(&first);
        }
        self.banned.insert(peer, now + BAN_DURATION);
        true
    }

    /// Whether `peer` is banned at `now`.
    pub(super) fn is_banned(&self, peer: &libp2p::PeerId, now: Instant) -> bool {
        self.banned.get(peer).is_some_and(|until| *until > now)
    }

    /// Strike points against `peer` at `now`.
    pub(super) fn of(&self, peer: &libp2p::PeerId, now: Instant) -> u32 {
        self.records.get(peer).map_or(0, |r| r.at(now).points)
    }

    /// Peers banned now.
    pub(super) fn banned(&self) -> usize {
        self.banned.len()
    }

    /// Lifts the bans that ended by `now` and forgets records that leaked to zero.
    pub(super) fn expire(&mut self, now: Instant) {
        self.banned.retain(|_, until| *until > now);
        self.records.retain(|_, r| r.at(now).points > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> libp2p::PeerId {
        libp2p::PeerId::random()
    }

    #[test]
    fn three_malformed_frames_at_once_or_one_forgery_ban() {
        let t = Instant::now();
        let mut s = Strikes::default();
        let (a, b) = (peer(), peer());
        let malformed = Offence::Malformed.severity();
        assert!(!s.add(a, malformed, t));
        assert!(!s.add(a, malformed, t));
        assert!(s.add(a, malformed, t), "the third reaches the limit");
        assert!(s.is_banned(&a, t));
        assert!(s.add(b, Offence::Forged.severity(), t));
        assert_eq!(s.banned(), 2);
    }

    #[test]
    fn points_leak_away_over_time() {
        let t = Instant::now();
        let mut s = Strikes::default();
        let p = peer();
        assert!(!s.add(p, STRIKE_LIMIT - 1, t));
        assert_eq!(
            s.of(&p, t + STRIKE_LEAK / 2),
            STRIKE_LIMIT - 1,
            "no point before a period"
        );
        assert_eq!(s.of(&p, t + STRIKE_LEAK), STRIKE_LIMIT - 2);
        // One more point a leak period later stays below the limit; without the leak it
        // would ban.
        assert!(!s.add(p, 1, t + STRIKE_LEAK));
        assert_eq!(s.of(&p, t + STRIKE_LEAK), STRIKE_LIMIT - 1);
        // The remainder of a period is kept: 1.5 periods later only one more point went.
        assert_eq!(s.of(&p, t + STRIKE_LEAK * 5 / 2), STRIKE_LIMIT - 2);
        // An honest peer's 1-point offence every leak period never accumulates.
        let q = peer();
        for i in 0..1000 {
            assert!(!s.add(q, 1, t + STRIKE_LEAK * i), "round {i}");
        }
        assert!(s.of(&q, t + STRIKE_LEAK * 1000) <= 1);
        // Everything leaks away eventually, and the record is then forgotten.
        s.expire(t + STRIKE_LEAK * 2000);
        assert!(s.records.is_empty());
    }

    #[test]
    fn bans_end_after_their_duration_and_the_peer_starts_from_zero() {
        let t = Instant::now();
        let mut s = Strikes::default();
        let p = peer();
        assert!(s.add(p, STRIKE_LIMIT, t));
        assert!(s.is_banned(&p, t + BAN_DURATION - Duration::from_secs(1)));
        assert!(!s.is_banned(&p, t + BAN_DURATION), "a ban is time-limited");
        s.expire(t + BAN_DURATION);
        assert_eq!(s.banned(), 0);
        let later = t + BAN_DURATION;
        assert_eq!(s.of(&p, later), 0);
        assert!(
            !s.add(p, 1, later),
            "a single point after the ban does not ban again"
        );
    }

    #[test]
    fn the_tables_are_bounded() {
        let t = Instant::now();
        let mut s = Strikes::default();
        let heavy = peer();
        s.add(heavy, STRIKE_LIMIT - 1, t);
        for _ in 0..MAX_STRIKE_RECORDS + 100 {
            s.add(peer(), 1, t);
        }
        assert!(s.records.len() <= MAX_STRIKE_RECORDS);
        assert_eq!(
            s.of(&heavy, t),
            STRIKE_LIMIT - 1,
            "a flood of fresh identities does not wipe a peer close to a ban"
        );
        for _ in 0..MAX_BANNED + 10 {
            s.add(peer(), STRIKE_LIMIT, t);
        }
        assert_eq!(s.banned(), MAX_BANNED);
    }
}
