//! Choking: to whom we upload.
//!
//! BitTorrent's tit-for-tat (Cohen 2003; BEP 3): every round the interested peers that gave
//! us the best download rate over the last round are unchoked — or, once we are seeding,
//! the peers we uploaded to fastest, which favours peers that can take data quickly. One
//! more *optimistic unchoke* is rotated every three rounds (at most
//! [`Config::optimistic_interval`], 30 s) among the remaining interested peers, picked at
//! random with peers connected for less than that interval [`Config::new_peer_weight`] (3)
//! times as likely: it lets newcomers get a first chunk to trade and discovers peers better
//! than the current ones. Legout et al. (IMC 2006) show that this choke algorithm is fair
//! and keeps the swarm's upload capacity in use.
//!
//! BEP 3 fixes 4 regular slots and 10 s rounds; both were chosen for links of one speed.
//! Here they adapt to the measured uplink (libtorrent's rate-based choker opens slots while
//! the peers already unchoked do not use the uplink):
//!
//! - **Slots.** After each round: if a regular slot's peer took nothing, the uplink's
//!   spare capacity is not for want of slots, and one is given up (never below
//!   [`Config::slots`]); otherwise, if the round used less than [`SLOTS_FULL_PERCENT`] of
//!   the uplink's capacity and interested peers are still choked, one is added (at most
//!   [`Config::max_slots`]). Capacity is the core's known upload rate or else the fastest
//!   round so far.
//! - **Rounds.** A round lasts until every unchoked peer could have received
//!   [`Config::round_chunks`] chunks at the uplink's capacity, clamped to
//!   [`Config::min_interval`]..=[`Config::interval`]: on a fast uplink a 10 s round spans
//!   hundreds of chunks and a whole small download, on a slow one BEP 3's 10 s stays. The
//!   first round comes after [`Config::min_interval`], before any capacity is measured, so
//!   the start-up unchokes (first come, first served) are revised early.
//!
//! The choker is a pure function of the candidate list, its own state and the random
//! source; the transfer applies the result by sending `Choke`/`Unchoke`.

use std::collections::BTreeSet;
use std::time::Duration;

use peerlab_overlay::{Instant, PeerId, Rng};

/// A round in which at least this share of the uplink's capacity (percent) was used is
/// full: no slot is added. 90: pacing and the gaps between one chunk's turn and the next
/// keep a busy uplink a few percent under its rate.
pub const SLOTS_FULL_PERCENT: u32 = 90;

/// Choker parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Regular unchoke slots to start with, and the fewest kept. Default 4 (BEP 3).
    pub slots: usize,
    /// Most regular unchoke slots, however idle the uplink. Default 16: a peer's tracker
    /// list gives it about 20 neighbours, and an uplink 16 peers cannot fill is one the
    /// rest of the swarm has no use for.
    pub max_slots: usize,
    /// Longest round between two re-choices of the regular slots. Default 10 s (BEP 3):
    /// rates measured over shorter rounds are noise on slow links.
    pub interval: Duration,
    /// Shortest round, and the first one. Default 2 s: about twenty round trips even over
    /// 50 ms links, so a newly unchoked peer's rate is measured before it is judged.
    pub min_interval: Duration,
    /// A round lasts until every unchoked peer could have received this many chunks at the
    /// uplink's capacity (then clamped to `min_interval..=interval`). Default 8: at 8
    /// Mbit/s with 256 KiB chunks and 5 unchoked peers that is BEP 3's 10 s; at 20 Mbit/s
    /// 4.2 s.
    pub round_chunks: u32,
    /// Longest time between two rotations of the optimistic unchoke, which otherwise
    /// rotates every three rounds. Default 30 s (BEP 3).
    pub optimistic_interval: Duration,
    /// Weight of a peer connected for less than `optimistic_interval` in the optimistic
    /// draw (others weigh 1). Default 3 (BEP 3: "three times as likely").
    pub new_peer_weight: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            slots: 4,
            max_slots: 16,
            interval: Duration::from_secs(10),
            min_interval: Duration::from_secs(2),
            round_chunks: 8,
            optimistic_interval: Duration::from_secs(30),
            new_peer_weight: 3,
        }
    }
}

impl Config {
    /// How long the next round lasts when `unchoked` peers share an uplink of `capacity`
    /// bytes per second (unknown: `None`) with chunks of `chunk_size` bytes.
    pub fn round(&self, capacity: Option<u64>, unchoked: usize, chunk_size: u32) -> Duration {
        let Some(cap) = capacity.filter(|&c| c > 0) else {
            return self.min_interval.min(self.interval);
        };
        let bytes = self.round_chunks as u128 * chunk_size as u128 * unchoked.max(1) as u128;
        let micros = (bytes * 1_000_000 / cap as u128).min(u64::MAX as u128) as u64;
        Duration::from_micros(micros).clamp(self.min_interval.min(self.interval), self.interval)
    }
}

/// One connected peer as the choker sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The peer.
    pub peer: PeerId,
    /// Whether it wants data from us (only interested peers are unchoked).
    pub interested: bool,
    /// Bytes per second over the last round: received from it while downloading, sent to
    /// it while seeding.
    pub rate: u64,
    /// When the connection was made.
    pub connected_at: Instant,
}

/// The choker's state: the current optimistic unchoke and the number of regular slots.
#[derive(Debug, Clone, Default)]
pub struct Choker {
    optimistic: Option<PeerId>,
    last_rotation: Option<Instant>,
    /// Regular slots now (0: not yet set, [`Config::slots`]).
    slots: usize,
}

impl Choker {
    /// A choker with no optimistic unchoke yet.
    pub fn new() -> Choker {
        Choker::default()
    }

    /// The current optimistic unchoke.
    pub fn optimistic(&self) -> Option<PeerId> {
        self.optimistic
    }

    /// Regular unchoke slots now, within `config.slots..=config.max_slots`.
    pub fn slots(&self, config: &Config) -> usize {
        let floor = config.slots.min(config.max_slots);
        if self.slots == 0 {
            floor
        } else {
            self.slots.clamp(floor, config.max_slots)
        }
    }

    /// Adapts the slot count after a round that used `used_percent` of the uplink's
    /// capacity: one fewer if `idle_slot` (a regular slot's peer took nothing: more slots
    /// would not fill the uplink), else one more while the uplink had room and
    /// `choked_demand` (interested peers we choke) could use it. See the module docs.
    pub fn adapt_slots(
        &mut self,
        config: &Config,
        used_percent: u32,
        choked_demand: bool,
        idle_slot: bool,
    ) {
        let mut n = self.slots(config);
        if idle_slot {
            n = n.saturating_sub(1);
        } else if used_percent < SLOTS_FULL_PERCENT && choked_demand {
            n += 1;
        }
        self.slots = n.clamp(config.slots.min(config.max_slots), config.max_slots);
    }

    /// Chooses who is unchoked from now on.
    ///
    /// `round` is the length of the round that just ended: the optimistic unchoke rotates
    /// every three rounds, at most every [`Config::optimistic_interval`].
    pub fn rechoke(
        &mut self,
        config: &Config,
        candidates: &[Candidate],
        now: Instant,
        round: Duration,
        rng: &mut Rng,
    ) -> BTreeSet<PeerId> {
        let optimistic_every = round.saturating_mul(3).min(config.optimistic_interval);
        let mut interested: Vec<&Candidate> = candidates.iter().filter(|c| c.interested).collect();
        // Shuffle first so equal rates (e.g. everyone at 0 in a fresh swarm) are broken at
        // random rather than by peer id; the sort is stable.
        rng.shuffle(&mut interested);
        interested.sort_by_key(|c| std::cmp::Reverse(c.rate));
        let mut unchoked: BTreeSet<PeerId> = interested
            .iter()
            .take(self.slots(config))
            .map(|c| c.peer)
            .collect();

        let due = self
            .last_rotation
            .is_none_or(|t| now.saturating_since(t) >= optimistic_every);
        let still_valid = self
            .optimistic
            .is_some_and(|o| interested.iter().any(|c| c.peer == o) && !unchoked.contains(&o));
        if due || !still_valid {
            let pool: Vec<(&Candidate, u64)> = interested
                .iter()
                .filter(|c| !unchoked.contains(&c.peer))
                .map(|c| {
                    let young = now.saturating_since(c.connected_at) < config.optimistic_interval;
                    (
                        *c,
                        if young {
                            config.new_peer_weight.max(1) as u64
                        } else {
                            1
                        },
                    )
                })
                .collect();
            let total: u64 = pool.iter().map(|(_, w)| w).sum();
            self.optimistic = None;
            if total > 0 {
                let mut x = rng.below(total);
                for (c, w) in pool {
                    if x < w {
                        self.optimistic = Some(c.peer);
                        break;
                    }
                    x -= w;
                }
            }
            self.last_rotation = Some(now);
        }
        if let Some(o) = self.optimistic {
            unchoked.insert(o);
        }
        unchoked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(n: u64, interested: bool, rate: u64, age_secs: u64) -> Candidate {
        Candidate {
            peer: PeerId::synthetic(n),
            interested,
            rate,
            connected_at: Instant(1_000_000_000 - age_secs * 1_000_000),
        }
    }

    const NOW: Instant = Instant(1_000_000_000);
    const ROUND: Duration = Duration::from_secs(10);

    #[test]
    fn four_fastest_interested_plus_one_optimistic() {
        let cs: Vec<_> = (0..10).map(|i| cand(i, i != 9, i * 100, 1000)).collect();
        let mut ch = Choker::new();
        let cfg = Config::default();
        let u = ch.rechoke(&cfg, &cs, NOW, ROUND, &mut Rng::seed(1));
        assert_eq!(u.len(), 5);
        // Peer 9 is fastest but not interested; 8,7,6,5 are the regular slots.
        for i in [5, 6, 7, 8] {
            assert!(u.contains(&PeerId::synthetic(i)));
        }
        assert!(!u.contains(&PeerId::synthetic(9)));
        let o = ch.optimistic().unwrap();
        assert!((0..5).any(|i| PeerId::synthetic(i) == o));
    }

    #[test]
    fn optimistic_rotates_only_every_30_seconds() {
        let cs: Vec<_> = (0..20).map(|i| cand(i, true, i, 1000)).collect();
        let cfg = Config::default();
        let mut ch = Choker::new();
        let mut rng = Rng::seed(2);
        ch.rechoke(&cfg, &cs, NOW, ROUND, &mut rng);
        let first = ch.optimistic();
        for s in [10, 20] {
            ch.rechoke(&cfg, &cs, Instant(NOW.0 + s * 1_000_000), ROUND, &mut rng);
            assert_eq!(ch.optimistic(), first, "kept at +{s}s");
        }
        let mut changed = false;
        for k in 1..10 {
            ch.rechoke(&cfg, &cs, Instant(NOW.0 + k * 30_000_000), ROUND, &mut rng);
            changed |= ch.optimistic() != first;
        }
        assert!(changed);
    }

    #[test]
    fn new_peers_are_three_times_as_likely() {
        // 1 new peer against 3 old ones, all slower than the 4 regular slots.
        let mut cs: Vec<_> = (0..4).map(|i| cand(i, true, 1000, 1000)).collect();
        cs.extend((4..7).map(|i| cand(i, true, 0, 1000)));
        cs.push(cand(7, true, 0, 5));
        let cfg = Config::default();
        let mut rng = Rng::seed(3);
        let mut new_wins = 0;
        let trials = 4000;
        for _ in 0..trials {
            let mut ch = Choker::new();
            ch.rechoke(&cfg, &cs, NOW, ROUND, &mut rng);
            if ch.optimistic() == Some(PeerId::synthetic(7)) {
                new_wins += 1;
            }
        }
        // Expected share 3 / (3 + 3) = 0.5; uniform would give 0.25.
        let share = new_wins as f64 / trials as f64;
        assert!((0.45..0.55).contains(&share), "share {share}");
    }

    #[test]
    fn nobody_interested_nobody_unchoked() {
        let cs: Vec<_> = (0..3).map(|i| cand(i, false, 5, 1)).collect();
        let u = Choker::new().rechoke(&Config::default(), &cs, NOW, ROUND, &mut Rng::seed(0));
        assert!(u.is_empty());
    }

    #[test]
    fn a_slot_opens_while_the_uplink_has_room_and_peers_wait() {
        let cfg = Config::default();
        let cs: Vec<_> = (0..20).map(|i| cand(i, true, i, 1000)).collect();
        let mut ch = Choker::new();
        let mut rng = Rng::seed(4);
        assert_eq!(ch.rechoke(&cfg, &cs, NOW, ROUND, &mut rng).len(), 5);
        // Half the uplink unused with choked peers waiting: one more regular slot a round.
        ch.adapt_slots(&cfg, 50, true, false);
        assert_eq!(ch.slots(&cfg), 5);
        assert_eq!(ch.rechoke(&cfg, &cs, NOW, ROUND, &mut rng).len(), 6);
        // Room but nobody waiting: nothing to open a slot for.
        ch.adapt_slots(&cfg, 50, false, false);
        assert_eq!(ch.slots(&cfg), 5);
        // A full uplink keeps the slots; an idle slot is given up, however idle the uplink.
        ch.adapt_slots(&cfg, 95, true, false);
        assert_eq!(ch.slots(&cfg), 5);
        ch.adapt_slots(&cfg, 10, true, true);
        assert_eq!(ch.slots(&cfg), 4);
        // Never below the floor, never above the cap.
        ch.adapt_slots(&cfg, 95, false, true);
        assert_eq!(ch.slots(&cfg), cfg.slots);
        for _ in 0..100 {
            ch.adapt_slots(&cfg, 0, true, false);
        }
        assert_eq!(ch.slots(&cfg), cfg.max_slots);
    }

    #[test]
    fn rounds_follow_the_uplink_within_their_bounds() {
        let cfg = Config::default();
        let chunk = 256 * 1024;
        // Unknown capacity (start-up): the shortest round.
        assert_eq!(cfg.round(None, 5, chunk), cfg.min_interval);
        // 20 Mbit/s, 5 unchoked: 8 chunks each = 10 MiB in 4.19 s.
        let fast = cfg.round(Some(2_500_000), 5, chunk);
        assert!((4100..4300).contains(&fast.as_millis()), "{fast:?}");
        // 2 Mbit/s: BEP 3's 10 s cap; 1 Gbit/s: the 2 s floor.
        assert_eq!(cfg.round(Some(250_000), 5, chunk), cfg.interval);
        assert_eq!(cfg.round(Some(125_000_000), 5, chunk), cfg.min_interval);
        // More unchoked peers, a longer round.
        assert!(cfg.round(Some(2_500_000), 10, chunk) > fast);
    }

    #[test]
    fn the_optimistic_unchoke_rotates_every_three_short_rounds() {
        let cs: Vec<_> = (0..20).map(|i| cand(i, true, i, 1000)).collect();
        let cfg = Config::default();
        let round = Duration::from_secs(2);
        let mut ch = Choker::new();
        let mut rng = Rng::seed(5);
        ch.rechoke(&cfg, &cs, NOW, round, &mut rng);
        let first = ch.optimistic();
        ch.rechoke(&cfg, &cs, Instant(NOW.0 + 4_000_000), round, &mut rng);
        assert_eq!(ch.optimistic(), first, "kept within three rounds");
        let mut changed = false;
        // 6, 12, 18, 24 s: all before BEP 3's fixed 30 s.
        for k in 1..5 {
            ch.rechoke(&cfg, &cs, Instant(NOW.0 + k * 6_000_000), round, &mut rng);
            changed |= ch.optimistic() != first;
        }
        assert!(changed, "rotated every 6 s, well before 30 s");
    }
}
