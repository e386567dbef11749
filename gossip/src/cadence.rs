//! Quiet at rest: when the periodic push-pulls (data anti-entropy, member sync) run.
//!
//! Rumors carry everything new at once; the push-pulls are the backstop that reaches what
//! a rumor missed. memberlist runs its full-state push-pull every 30 s, scaled up beyond 32
//! members (`pushPullScale`: `30 s · (⌈log2 N − log2 32⌉ + 1)`, 90 s at N = 100), so that a
//! group at rest costs little whatever its size. Here each push-pull keeps its base period
//! ([`Config::anti_entropy_period`](crate::Config), [`Config::member_sync_period`](crate::Config))
//! while news arrives, and stretches to memberlist's scaled period while it does not:
//!
//! - every news (a new version of an entry, any change of the member table: a join, a
//!   suspicion, a refutation, a death, a departure) bumps a counter;
//! - a push-pull that saw the counter move since its last run runs again after one base
//!   period; one that saw nothing new waits twice as many base periods as last time, up to
//!   the rest period [`rest_period`] — the adaptive scheme of the DHT's maintenance
//!   (Ghinita & Teo, IPDPS 2006) applied to gossip's backstop;
//! - the member sync goes to the rest period after its first quiet run: a node its rumors
//!   missed learns so from the member counts its probes carry (`member_sync.rs`,
//!   "Stragglers") rather than from a sync that happens to come soon.
//!
//! A partition that heals, a node that joins or dies is news, so the push-pulls run at full
//! speed exactly when their work matters. Data anti-entropy backs off only in
//! [`Mode::Combined`](crate::Mode): in [`Mode::AntiEntropy`](crate::Mode) the exchange is
//! the only carrier of news, and a node cannot know what it has not heard of.

use std::time::Duration;

/// Group size up to which the rest period is not scaled (memberlist's
/// `pushPullScaleThreshold`): below it a push-pull of the whole table is cheap.
pub const PUSH_PULL_SCALE_THRESHOLD: usize = 32;

/// The rest period of a push-pull in a group of `n` members: `rest` up to
/// [`PUSH_PULL_SCALE_THRESHOLD`] members, then `rest · (⌈log2 n − log2 32⌉ + 1)`
/// (memberlist's `pushPullScale`): each node's push-pull costs `O(n)` bytes, so the period
/// grows with `n` to keep the group's traffic at rest from growing as `n²`.
pub fn rest_period(rest: Duration, n: usize) -> Duration {
    if n <= PUSH_PULL_SCALE_THRESHOLD {
        return rest;
    }
    let excess = (n as f64).log2() - (PUSH_PULL_SCALE_THRESHOLD as f64).log2();
    let multiplier = excess.ceil() as u32 + 1;
    rest.saturating_mul(multiplier)
}

/// When one push-pull does its work: called once per base period, it answers whether this
/// one is due.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cadence {
    /// Base periods between two runs now: 1 after news, doubled after each quiet run up to
    /// the maximum.
    level: u64,
    /// Base periods since the last run.
    ticks: u64,
    /// The news counter the last run saw.
    seen: u64,
    /// Whether a quiet run goes straight to the maximum instead of doubling.
    leap: bool,
}

impl Default for Cadence {
    fn default() -> Self {
        Cadence {
            level: 1,
            ticks: 0,
            seen: u64::MAX,
            leap: false,
        }
    }
}

impl Cadence {
    /// A cadence whose first quiet run goes straight to the rest period: for a push-pull
    /// whose misses something else reports at once (the member sync, whose stragglers the
    /// probes' member counts find; `member_sync.rs`).
    pub(crate) fn leaping() -> Cadence {
        Cadence {
            leap: true,
            ..Cadence::default()
        }
    }

    /// One base period passed; `news` is the news counter now, `max` the longest wait in
    /// base periods (1: every period, no backoff). Whether the push-pull runs now.
    pub(crate) fn due(&mut self, news: u64, max: u64) -> bool {
        let max = max.max(1);
        self.ticks = self.ticks.saturating_add(1);
        if news != self.seen {
            // News since the last run: the next comes after one base period.
            self.level = 1;
        }
        if self.ticks < self.level.min(max) {
            return false;
        }
        self.level = if news != self.seen {
            1
        } else if self.leap {
            max
        } else {
            self.level.saturating_mul(2).min(max)
        };
        self.seen = news;
        self.ticks = 0;
        true
    }
}

/// Base periods in `rest` (at least 1).
pub(crate) fn periods_in(rest: Duration, base: Duration) -> u64 {
    (rest.as_micros() / base.as_micros().max(1)).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(c: &mut Cadence, news: &[u64], max: u64) -> String {
        news.iter()
            .map(|n| if c.due(*n, max) { 'x' } else { '.' })
            .collect()
    }

    #[test]
    fn rest_period_scales_like_memberlist_beyond_32_members() {
        let s = Duration::from_secs(30);
        assert_eq!(rest_period(s, 1), s);
        assert_eq!(rest_period(s, 32), s);
        assert_eq!(rest_period(s, 33), 2 * s);
        assert_eq!(rest_period(s, 64), 2 * s);
        assert_eq!(rest_period(s, 100), 3 * s);
        assert_eq!(rest_period(s, 300), 5 * s);
        assert_eq!(rest_period(s, 1000), 6 * s);
    }

    #[test]
    fn quiet_runs_back_off_up_to_the_rest_period() {
        let mut c = Cadence::default();
        // The first run always works (no news seen yet), then 1, 2, 4, 5, 5 periods apart.
        assert_eq!(pattern(&mut c, &[0; 18], 5), "xx.x...x....x....x");
    }

    #[test]
    fn news_brings_the_base_period_back_at_once() {
        let mut c = Cadence::default();
        assert_eq!(pattern(&mut c, &[0; 8], 8), "xx.x...x");
        // The news is acted on at the very next period, though the quiet schedule said wait.
        assert_eq!(pattern(&mut c, &[1, 1, 1, 1], 8), "xx.x");
        // A stream of news keeps it at every period.
        assert_eq!(pattern(&mut c, &[2, 3, 4, 5], 8), "xxxx");
    }

    #[test]
    fn a_leaping_cadence_goes_to_the_rest_period_after_one_quiet_run() {
        let mut c = Cadence::leaping();
        assert_eq!(pattern(&mut c, &[0; 12], 5), "xx....x....x");
        // News still brings the base period back at once.
        assert_eq!(pattern(&mut c, &[1, 2, 2, 2, 2, 2, 2], 5), "xxx....");
    }

    #[test]
    fn max_one_never_backs_off() {
        let mut c = Cadence::default();
        assert_eq!(pattern(&mut c, &[0; 6], 1), "xxxxxx");
    }
}
