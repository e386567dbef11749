//! Strikes and bans: what a peer's bad input costs it.
//!
//! A frame that fails to decode, exceeds its channel's limit or comes from a key type the
//! cores cannot name, and every input a core rejects (`Output::Offence`), adds strike
//! points against the sending peer; at [`STRIKE_LIMIT`] points the peer is disconnected and
//! refused for [`BAN_DURATION`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use peerlab_overlay::Offence;

/// Strike points after which a peer is disconnected and banned: one proven offence
/// (`Offence::PROVEN`, a forged signature or corrupt data) or three bad frames.
pub const STRIKE_LIMIT: u32 = Offence::PROVEN;

/// How long a banned peer is refused.
pub const BAN_DURATION: Duration = Duration::from_secs(600);

/// Most peers remembered as banned; the oldest ban is forgotten first beyond this.
pub const MAX_BANNED: usize = 1024;

/// Strike points per peer and the peers banned until a deadline.
#[derive(Debug, Default)]
pub(super) struct Strikes {
    points: BTreeMap<libp2p::PeerId, u32>,
    banned: BTreeMap<libp2p::PeerId, Instant>,
}

impl Strikes {
    /// Adds `points` against `peer`; returns whether that banned it (until `now` +
    /// [`BAN_DURATION`]).
    pub(super) fn add(&mut self, peer: libp2p::PeerId, points: u32, now: Instant) -> bool {
        let n = self.points.entry(peer).or_default();
        *n += points;
        if *n < STRIKE_LIMIT {
            return false;
        }
        if self.banned.len() >= MAX_BANNED
            && let Some(oldest) = self.banned.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p)
        {
            self.banned.remove(&oldest);
        }
        self.banned.insert(peer, now + BAN_DURATION);
        self.points.remove(&peer);
        true
    }

    /// Whether `peer` is banned.
    pub(super) fn is_banned(&self, peer: &libp2p::PeerId) -> bool {
        self.banned.contains_key(peer)
    }

    /// Strike points against `peer`.
    pub(super) fn of(&self, peer: &libp2p::PeerId) -> u32 {
        self.points.get(peer).copied().unwrap_or(0)
    }

    /// Peers banned now.
    pub(super) fn banned(&self) -> usize {
        self.banned.len()
    }

    /// Lifts the bans that ended by `now`.
    pub(super) fn expire(&mut self, now: Instant) {
        self.banned.retain(|_, until| *until > now);
    }
}
