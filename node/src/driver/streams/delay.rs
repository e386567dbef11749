//! Latency injected by the node itself: an optional stage between the driver and a stream
//! writer that holds every outgoing frame for a delay drawn from a [`Delay`].
//!
//! Emulated hosts on one machine (network namespaces) have no latency of their own, and
//! the kernels a testnet runs on may lack `netem`; a node started with `--delay-ms` makes
//! its peerlab streams behave like a link with that one-way delay. Frames keep their order
//! (each leaves no earlier than the one before it), as on a real path. Only the cores'
//! frames wait: libp2p's handshakes, identify and ping do not, so connection set-up stays
//! fast and what is delayed is what the protocols measure.

use std::collections::VecDeque;
use std::time::Duration;

use peerlab_overlay::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Longest one-way delay accepted (mean plus jitter): beyond it the cores' request
/// timeouts (a second or two on a LAN profile) expire on every exchange.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(10);

/// A distribution of one-way delays: uniform in `mean ± jitter`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Delay {
    /// Mean delay.
    pub(crate) mean: Duration,
    /// Half-width of the uniform spread around the mean (at most the mean).
    pub(crate) jitter: Duration,
}

impl Delay {
    /// `mean_ms ± jitter_ms`, or `None` when both are 0 (no stage at all).
    pub(crate) fn from_millis(mean_ms: u64, jitter_ms: u64) -> Option<Delay> {
        (mean_ms > 0 || jitter_ms > 0).then(|| Delay {
            mean: Duration::from_millis(mean_ms),
            jitter: Duration::from_millis(jitter_ms.min(mean_ms)),
        })
    }

    /// One delay drawn from `rng`.
    pub(crate) fn sample(&self, rng: &mut Rng) -> Duration {
        let lo = self.mean.saturating_sub(self.jitter).as_micros() as u64;
        let hi = (self.mean + self.jitter).as_micros() as u64;
        Duration::from_micros(if hi > lo { rng.range(lo, hi + 1) } else { lo })
    }
}

/// Passes frames from `rx` to `tx`, each [`Delay::sample`] after it arrived and never
/// before the frame ahead of it. Ends when the driver drops its sender (after passing on
/// what waits) or when the writer stops taking frames (what waits is lost, as delivery is
/// best-effort).
pub(super) async fn delay_stage(
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    delay: Delay,
    mut rng: Rng,
) {
    let mut waiting: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut last = Instant::now();
    let mut open = true;
    loop {
        let due = waiting.front().map(|(at, _)| *at);
        if !open && due.is_none() {
            return;
        }
        tokio::select! {
            f = rx.recv(), if open => match f {
                Some(f) => {
                    let at = (Instant::now() + delay.sample(&mut rng)).max(last);
                    last = at;
                    waiting.push_back((at, f));
                }
                None => open = false,
            },
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                if let Some((_, f)) = waiting.pop_front()
                    && tx.send(f).is_err()
                {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_stay_within_the_spread_and_zero_means_no_stage() {
        assert_eq!(Delay::from_millis(0, 0), None);
        let d = Delay::from_millis(30, 10).unwrap();
        let mut rng = Rng::seed(7);
        let s: Vec<Duration> = (0..1000).map(|_| d.sample(&mut rng)).collect();
        assert!(
            s.iter().all(|x| (20..=40).contains(&x.as_millis())),
            "{s:?}"
        );
        assert!(s.iter().any(|x| x.as_millis() < 25) && s.iter().any(|x| x.as_millis() > 35));
        // Jitter beyond the mean would make negative delays: it is capped.
        let c = Delay::from_millis(5, 50).unwrap();
        assert_eq!(c.jitter, Duration::from_millis(5));
        assert_eq!(
            Delay::from_millis(12, 0).unwrap().sample(&mut rng),
            Duration::from_millis(12)
        );
    }

    #[tokio::test]
    async fn frames_wait_their_delay_and_keep_their_order() {
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel();
        let delay = Delay::from_millis(20, 15).unwrap();
        tokio::spawn(delay_stage(in_rx, out_tx, delay, Rng::seed(1)));
        let mut sent = Vec::new();
        for i in 0..20u8 {
            sent.push(Instant::now());
            in_tx.send(vec![i]).unwrap();
        }
        drop(in_tx);
        let mut got = Vec::new();
        while let Some(f) = out_rx.recv().await {
            // Never before the shortest delay the distribution draws.
            let waited = sent[usize::from(f[0])].elapsed();
            assert!(
                waited >= Duration::from_millis(5),
                "frame {f:?} after {waited:?}"
            );
            got.push(f[0]);
        }
        // Everything arrives (dropping the driver's sender flushes), in order.
        assert_eq!(got, (0..20).collect::<Vec<u8>>());
    }
}
