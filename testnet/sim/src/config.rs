//! Simulator configuration: the network model's knobs.

use std::time::Duration;

/// How one-way link latency is distributed. Each ordered pair of peers gets one latency for
/// the whole run, drawn from this distribution by hashing the pair with the seed, so a link
/// keeps FIFO order and a run stays reproducible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// Every link has the same latency.
    Fixed(Duration),
    /// Uniform in `[min, max]`.
    Uniform {
        /// Smallest latency.
        min: Duration,
        /// Largest latency.
        max: Duration,
    },
    /// `min` plus an exponential tail with the given mean (a heavy-ish WAN-like spread).
    Exponential {
        /// Propagation floor.
        min: Duration,
        /// Mean of the exponential part.
        mean: Duration,
    },
}

impl Default for Latency {
    /// 10 ms one-way: a LAN-to-metro figure that keeps message ordering interesting without
    /// dominating protocol periods of 200 ms and more.
    fn default() -> Self {
        Latency::Fixed(Duration::from_millis(10))
    }
}

impl Latency {
    /// The latency for a link whose hash maps to `u ∈ [0, 1)`.
    pub(crate) fn sample(&self, u: f64) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => {
                let span = max.saturating_sub(min);
                min + span.mul_f64(u)
            }
            Latency::Exponential { min, mean } => {
                min + Duration::from_secs_f64(-mean.as_secs_f64() * (1.0 - u).ln())
            }
        }
    }
}

/// Default cap on buffered core events between two `take_events` calls. Ten million events
/// of a few dozen bytes each stay well under a gigabyte; experiments drain far more often.
pub const DEFAULT_EVENT_BUFFER_LIMIT: usize = 10_000_000;

/// The simulator's configuration.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of every random choice in the run (network and cores alike).
    pub seed: u64,
    /// Link latency distribution.
    pub latency: Latency,
    /// Probability that any one message is lost.
    pub loss: f64,
    /// Default upload bandwidth per node in bytes per second (`None`: unlimited).
    pub upload_bps: Option<u64>,
    /// Default download bandwidth per node in bytes per second (`None`: unlimited).
    pub download_bps: Option<u64>,
    /// If set, a send to a dead or unknown peer tells the sender `handle_peer_down` after
    /// this delay (a refused connection); if `None`, such messages vanish silently.
    pub unreachable_notice: Option<Duration>,
    /// Cap on core events buffered until `take_events`; beyond it, events are counted in
    /// `NetStats::events_overflowed` and dropped.
    pub event_buffer_limit: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            latency: Latency::default(),
            loss: 0.0,
            upload_bps: None,
            download_bps: None,
            unreachable_notice: None,
            event_buffer_limit: DEFAULT_EVENT_BUFFER_LIMIT,
        }
    }
}
