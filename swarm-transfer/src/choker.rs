//! Choking: to whom we upload.
//!
//! BitTorrent's tit-for-tat (Cohen 2003; BEP 3): every [`Config::interval`] (10 s) the
//! [`Config::slots`] (4) interested peers that gave us the best download rate over the
//! last round are unchoked — or, once we are seeding, the peers we uploaded to fastest,
//! which favours peers that can take data quickly. One more *optimistic unchoke* is
//! rotated every [`Config::optimistic_interval`] (30 s) among the remaining interested
//! peers, picked at random with peers connected for less than that interval
//! [`Config::new_peer_weight`] (3) times as likely: it lets newcomers get a first chunk to
//! trade and discovers peers better than the current ones. Legout et al. (IMC 2006) show
//! that this choke algorithm is fair and keeps the swarm's upload capacity in use.
//!
//! The choker is a pure function of the candidate list, its own optimistic choice and
//! the random source; the transfer applies the result by sending `Choke`/`Unchoke`.

use std::collections::BTreeSet;
use std::time::Duration;

use peerlab_overlay::{Instant, PeerId, Rng};

/// Choker parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Regular unchoke slots. Default 4 (BEP 3).
    pub slots: usize,
    /// How often the regular slots are re-chosen. Default 10 s (BEP 3).
    pub interval: Duration,
    /// How often the optimistic unchoke rotates. Default 30 s (BEP 3).
    pub optimistic_interval: Duration,
    /// Weight of a peer connected for less than `optimistic_interval` in the optimistic
    /// draw (others weigh 1). Default 3 (BEP 3: "three times as likely").
    pub new_peer_weight: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            slots: 4,
            interval: Duration::from_secs(10),
            optimistic_interval: Duration::from_secs(30),
            new_peer_weight: 3,
        }
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

/// The choker's state: the current optimistic unchoke.
#[derive(Debug, Clone, Default)]
pub struct Choker {
    optimistic: Option<PeerId>,
    last_rotation: Option<Instant>,
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

    /// Chooses who is unchoked from now on.
    pub fn rechoke(
        &mut self,
        config: &Config,
        candidates: &[Candidate],
        now: Instant,
        rng: &mut Rng,
    ) -> BTreeSet<PeerId> {
        let mut interested: Vec<&Candidate> = candidates.iter().filter(|c| c.interested).collect();
        // Shuffle first so equal rates (e.g. everyone at 0 in a fresh swarm) are broken at
        // random rather than by peer id; the sort is stable.
        rng.shuffle(&mut interested);
        interested.sort_by_key(|c| std::cmp::Reverse(c.rate));
        let mut unchoked: BTreeSet<PeerId> = interested
            .iter()
            .take(config.slots)
            .map(|c| c.peer)
            .collect();

        let due = self
            .last_rotation
            .is_none_or(|t| now.saturating_since(t) >= config.optimistic_interval);
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

    #[test]
    fn four_fastest_interested_plus_one_optimistic() {
        let cs: Vec<_> = (0..10).map(|i| cand(i, i != 9, i * 100, 1000)).collect();
        let mut ch = Choker::new();
        let cfg = Config::default();
        let u = ch.rechoke(&cfg, &cs, NOW, &mut Rng::seed(1));
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
        ch.rechoke(&cfg, &cs, NOW, &mut rng);
        let first = ch.optimistic();
        for s in [10, 20] {
            ch.rechoke(&cfg, &cs, Instant(NOW.0 + s * 1_000_000), &mut rng);
            assert_eq!(ch.optimistic(), first, "kept at +{s}s");
        }
        let mut changed = false;
        for k in 1..10 {
            ch.rechoke(&cfg, &cs, Instant(NOW.0 + k * 30_000_000), &mut rng);
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
            ch.rechoke(&cfg, &cs, NOW, &mut rng);
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
        let u = Choker::new().rechoke(&Config::default(), &cs, NOW, &mut Rng::seed(0));
        assert!(u.is_empty());
    }
}
