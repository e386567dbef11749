//! Link estimates: how fast a peer delivers to us, how long it takes to answer, and how
//! fast our own uplink drains — measured from the core's clock (`cx.now()`) and the
//! messages it sees, never from sockets.
//!
//! - **Round trip.** Every block answers a request we timed, but a request sent behind
//!   others of ours waits for them at the uploader, and by Little's law (queue = rate ×
//!   waiting time) a queue sized by rate × *that* time would only ever grow. So only a
//!   request sent while none of ours was outstanding at the peer (the head of a burst:
//!   after an `Unchoke`, or once the queue ran dry) gives a sample — path, transmission
//!   and the uploader's other peers, not our own queue — and the queue is sized by the
//!   **smallest** such sample within [`MIN_RTT_WINDOW`], as BBR's min-RTT filter does
//!   (Cardwell et al. 2016; the window is Linux TCP's, see the constant).
//! - **Delivery rate.** Bytes received from the peer per window of at least one round trip
//!   (and [`RATE_WINDOW_FLOOR`]), smoothed over windows (weight 1/[`RATE_SMOOTHING`] for
//!   the newest): the rate the peer gives us on average, including the gaps while it
//!   serves its other unchoked peers — what libtorrent sizes its queue by. (Sizing by the
//!   rate of a paced uploader's one-chunk bursts instead left more requests waiting at
//!   each uploader than one chunk's turn uses, and the last chunks of a flash crowd
//!   queued behind them.)
//! - **Request queue.** libtorrent keeps `download_rate × request_queue_time / block_size`
//!   requests outstanding at each peer; here the queue time is
//!   [`Config::request_queue_rtts`] round trips: depth = ⌈rtts × rate × min RTT / block⌉,
//!   clamped to [[`Config::min_pipeline_depth`], [`Config::pipeline_depth`]]. A queue
//!   limited by its depth delivers depth / RTT, so each window the depth grows by the factor
//!   `rtts` until the link, not the queue, limits the rate (a slow start), and it settles at
//!   `rtts` times the bandwidth-delay product.

use std::time::Duration;

use peerlab_overlay::Instant;

use super::Config;
use crate::picker::BlockRef;

/// How long the smallest round-trip sample stays valid before a newer one replaces it: a
/// route that changed for good shows up within this. 300 s, Linux TCP's min-RTT window
/// (`tcp_min_rtt_wlen`). A burst's head waits for the uploader's other peers' turns (up to
/// a second at 8 Mbit/s with five unchoked peers), so samples are inflated most of the
/// time; over minutes some head finds the uploader idle and shows the path. With BBR's
/// 10 s the inflated samples set the queue and it grew to several times what the link
/// needs (in `peerlab sim swarm` at 8 Mbit/s and 50 ms, efficiency 0.84 against 0.90).
pub(crate) const MIN_RTT_WINDOW: Duration = Duration::from_secs(300);

/// Shortest window a delivery-rate sample is taken over: a few 16 KiB blocks even on a
/// LAN, so one block's early arrival does not read as a burst of gigabits.
pub(crate) const RATE_WINDOW_FLOOR: Duration = Duration::from_millis(20);

/// The newest delivery-rate window weighs 1/this in the smoothed rate: a peer's rate is
/// followed within a few round trips, while one window that caught a gap between two of
/// its uploader's turns does not halve the queue.
pub(crate) const RATE_SMOOTHING: u64 = 4;

/// Round-trip and delivery-rate estimate of one peer as a source of blocks.
#[derive(Debug, Clone)]
pub(crate) struct LinkEstimate {
    /// Smallest request → block time within [`MIN_RTT_WINDOW`], and when it was taken.
    min_rtt: Option<(Duration, Instant)>,
    /// Start of the current delivery-rate window, and bytes received since.
    window: Option<(Instant, u64)>,
    /// The request that headed the current burst (sent while nothing of ours was
    /// outstanding at the peer): its block is the next round-trip sample.
    head: Option<BlockRef>,
    /// Smoothed delivery rate, bytes per second.
    rate: Option<u64>,
}

impl LinkEstimate {
    /// No samples yet.
    pub(crate) fn new() -> LinkEstimate {
        LinkEstimate {
            min_rtt: None,
            window: None,
            head: None,
            rate: None,
        }
    }

    /// Request `r` is sent while nothing of ours is outstanding at the peer: it heads a
    /// burst, and its block will be a round-trip sample. The delivery-rate window restarts
    /// with the next block, so the idle time before it does not count against the rate.
    pub(crate) fn head_of_burst(&mut self, r: BlockRef) {
        self.head = Some(r);
        self.window = None;
    }

    /// Block `r` of `bytes`, answering a request sent at `sent_at`, arrived at `now`.
    pub(crate) fn on_block(&mut self, now: Instant, r: BlockRef, sent_at: Instant, bytes: u64) {
        if self.head == Some(r) {
            self.head = None;
            let rtt = now.saturating_since(sent_at);
            let replace = self
                .min_rtt
                .is_none_or(|(m, at)| rtt <= m || now.saturating_since(at) >= MIN_RTT_WINDOW);
            if replace {
                self.min_rtt = Some((rtt, now));
            }
        }
        let Some((start, got)) = self.window else {
            // The first block opens the window: its own bytes came over an unknown interval.
            self.window = Some((now, 0));
            return;
        };
        let got = got + bytes;
        let span = now.saturating_since(start);
        let min_span = self.min_rtt().unwrap_or_default().max(RATE_WINDOW_FLOOR);
        if span < min_span {
            self.window = Some((start, got));
            return;
        }
        let sample = (got as u128 * 1_000_000 / span.as_micros().max(1)) as u64;
        self.rate = Some(match self.rate {
            None => sample,
            Some(r) => {
                let n = RATE_SMOOTHING.max(1) as i128;
                (r as i128 + (sample as i128 - r as i128) / n) as u64
            }
        });
        self.window = Some((now, 0));
    }

    /// The smallest recent round trip, once a block came.
    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.map(|(m, _)| m)
    }

    /// The smoothed delivery rate in bytes per second, once measured.
    pub(crate) fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// Requests to keep outstanding at this peer (see the module docs): the configured
    /// floor until a rate and a round trip are measured.
    pub(crate) fn queue_depth(&self, config: &Config, block_size: u32) -> usize {
        let floor = config.min_pipeline_depth.min(config.pipeline_depth);
        let (Some(rtt), Some(rate)) = (self.min_rtt(), self.rate()) else {
            return floor;
        };
        let bdp = rate as u128 * rtt.as_micros() / 1_000_000;
        let want = (bdp * config.request_queue_rtts as u128).div_ceil(block_size.max(1) as u128);
        (want.min(usize::MAX as u128) as usize).clamp(floor, config.pipeline_depth)
    }
}

/// Utilisation of our uplink over a choke round, measured against its known rate or, when
/// the core is not told one, against the fastest round so far (libtorrent's rate-based
/// choker likewise learns capacity from what was achieved).
#[derive(Debug, Clone, Default)]
pub(crate) struct UplinkUse {
    /// Payload bytes handed out since the round began.
    pub(crate) round_bytes: u64,
    /// Fastest round so far, bytes per second (the capacity estimate without a known rate).
    best_rate: u64,
}

impl UplinkUse {
    /// The fastest round so far, bytes per second, once one moved any data.
    pub(crate) fn best_rate(&self) -> Option<u64> {
        (self.best_rate > 0).then_some(self.best_rate)
    }

    /// Ends a round of length `span`: the fraction of capacity used, in percent (100 when
    /// nothing is known yet, so an unmeasured uplink never opens slots).
    pub(crate) fn end_round(&mut self, span: Duration, capacity: Option<u64>) -> u32 {
        let secs = span.as_secs_f64().max(1e-3);
        let rate = (self.round_bytes as f64 / secs) as u64;
        self.round_bytes = 0;
        self.best_rate = self.best_rate.max(rate);
        let cap = capacity.unwrap_or(self.best_rate);
        if cap == 0 {
            return 100;
        }
        ((rate as u128 * 100 / cap as u128).min(100)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: u32 = 16 * 1024;

    fn at(ms: u64) -> Instant {
        Instant(ms * 1000)
    }

    /// Blocks arriving every `gap_ms` for `secs`, each answering a request sent `rtt_ms`
    /// earlier, each the head of its burst.
    fn stream(e: &mut LinkEstimate, from_ms: u64, gap_ms: u64, rtt_ms: u64, secs: u64) -> u64 {
        let mut t = from_ms;
        let mut block = 0;
        while t < from_ms + secs * 1000 {
            e.head = Some((0, block));
            e.on_block(at(t), (0, block), at(t - rtt_ms), BLOCK as u64);
            t += gap_ms;
            block += 1;
        }
        t
    }

    fn config(min: usize, cap: usize, rtts: u32) -> Config {
        Config {
            min_pipeline_depth: min,
            pipeline_depth: cap,
            request_queue_rtts: rtts,
            ..Config::default()
        }
    }

    #[test]
    fn queue_depth_tracks_rate_times_round_trip() {
        let c = config(2, 1024, 2);
        // 16 KiB every 6.5 ms ≈ 20 Mbit/s over a 300 ms round trip: BDP ≈ 46 blocks.
        let mut fast_far = LinkEstimate::new();
        stream(&mut fast_far, 1000, 6, 300, 3);
        let d = fast_far.queue_depth(&c, BLOCK);
        // 2 × BDP = 2 × (16 KiB / 6 ms) × 0.3 s / 16 KiB = 100 blocks.
        assert!((95..=105).contains(&d), "depth {d}");
        // Same rate, a tenth of the round trip: a tenth of the queue.
        let mut fast_near = LinkEstimate::new();
        stream(&mut fast_near, 1000, 6, 30, 3);
        let near = fast_near.queue_depth(&c, BLOCK);
        assert!((9..=11).contains(&near), "depth {near}");
        // Same round trip, a quarter of the rate: a quarter of the queue.
        let mut slow_far = LinkEstimate::new();
        stream(&mut slow_far, 1000, 24, 300, 3);
        let slow = slow_far.queue_depth(&c, BLOCK);
        assert!((24..=27).contains(&slow), "depth {slow}");
    }

    #[test]
    fn our_own_queue_does_not_inflate_the_round_trip() {
        let c = config(2, 1024, 2);
        let mut e = LinkEstimate::new();
        // The head of a burst comes back after 100 ms; the requests behind it wait in the
        // uploader's queue behind ours, for 12 s of blocks. Only
        // the head is a sample: the depth stays sized by 100 ms, not by the wait.
        e.head_of_burst((0, 0));
        e.on_block(at(3000), (0, 0), at(2900), BLOCK as u64);
        for k in 1..1200u32 {
            let t = 3000 + 10 * k as u64;
            e.on_block(at(t), (0, k), at(t - 2000), BLOCK as u64);
        }
        let d = e.queue_depth(&c, BLOCK);
        // 2 × (16 KiB / 10 ms) × 0.1 s / 16 KiB = 20.
        assert!((19..=21).contains(&d), "depth {d}");
        // Every block a sample (the wrong rule): the 2 s wait sets the depth, 400 blocks.
        let mut wrong = LinkEstimate::new();
        stream(&mut wrong, 3000, 10, 2000, 12);
        assert!(wrong.queue_depth(&c, BLOCK) > 300);
    }

    #[test]
    fn depth_is_floored_before_samples_and_capped_after() {
        let e = LinkEstimate::new();
        assert_eq!(e.queue_depth(&config(8, 128, 2), BLOCK), 8);
        let mut fast = LinkEstimate::new();
        stream(&mut fast, 1000, 1, 500, 2);
        assert_eq!(fast.queue_depth(&config(8, 128, 2), BLOCK), 128);
        // A floor above the cap cannot lift the depth over it.
        assert_eq!(e.queue_depth(&config(200, 128, 2), BLOCK), 128);
    }

    #[test]
    fn the_queue_follows_the_average_rate_not_one_burst() {
        let c = config(2, 1024, 2);
        let mut e = LinkEstimate::new();
        // 20 Mbit/s for 3 s over 100 ms: 2 × (16 KiB / 6 ms) × 0.1 s / 16 KiB ≈ 33 blocks.
        let end = stream(&mut e, 1000, 6, 100, 3);
        let fast = e.queue_depth(&c, BLOCK);
        assert!((31..=35).contains(&fast), "depth {fast}");
        // The uploader now shares its uplink with four others: one block in 30 ms on
        // average. The queue follows within a few windows instead of keeping the burst's.
        stream(&mut e, end, 30, 100, 3);
        let shared = e.queue_depth(&c, BLOCK);
        assert!((6..=8).contains(&shared), "depth {shared}");
        // One window that caught a 300 ms gap moves the rate by a quarter of the gap's
        // effect, not all of it.
        let mut g = LinkEstimate::new();
        let end = stream(&mut g, 1000, 6, 100, 3);
        g.head = Some((1, 0));
        g.on_block(at(end + 300), (1, 0), at(end + 200), BLOCK as u64);
        let after_gap = g.queue_depth(&c, BLOCK);
        assert!(
            after_gap > fast * 2 / 3,
            "depth {after_gap} after one gap, {fast} before"
        );
    }

    #[test]
    fn uplink_use_is_measured_against_the_known_rate_or_the_best_round() {
        let mut u = UplinkUse {
            round_bytes: 500_000,
            ..UplinkUse::default()
        };
        assert_eq!(u.end_round(Duration::from_secs(1), Some(1_000_000)), 50);
        // Unknown capacity: the first round is the best so far, so fully used.
        let mut u = UplinkUse {
            round_bytes: 500_000,
            ..UplinkUse::default()
        };
        assert_eq!(u.end_round(Duration::from_secs(1), None), 100);
        u.round_bytes = 100_000;
        assert_eq!(u.end_round(Duration::from_secs(1), None), 20);
        assert_eq!(u.best_rate(), Some(500_000));
        // Nothing sent yet and nothing known: never reads as idle capacity.
        let mut fresh = UplinkUse::default();
        assert_eq!(fresh.end_round(Duration::from_secs(1), None), 100);
    }
}
