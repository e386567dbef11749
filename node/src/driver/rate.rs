//! Per-peer rate limits: a token bucket for messages and one for bytes, per peer and
//! channel.
//!
//! Each frame a peer sends on a channel takes one token from the peer's message bucket of
//! that channel and as many tokens as it has bytes from its byte bucket; buckets refill at
//! their rate up to their burst. A frame that finds either bucket short is dropped before
//! it is decoded (it costs no more than its read) and counted; at most once per
//! [`EXCESS_REPORT_INTERVAL`] per peer and channel, the drop is charged to the peer as an
//! [`Offence::Excess`](peerlab_overlay::Offence::Excess), so a peer that stays over its rate is
//! banned within seconds while one burst over it costs two points that leak away.
//!
//! The rates ([`rate_of`]) are sized so that honest peers at the LAN settings never reach
//! them: the transfer channel carries a fetch at the full speed of loopback (a 64 MiB fetch
//! whole within the burst), the others many times what maintenance, lookups and gossip send
//! one peer. They bound what one peer can make the node decode and hand to its cores, not
//! what honest traffic needs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::wire::Channel;

/// The limits of one channel's traffic from one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChannelRate {
    /// Messages per second, sustained.
    pub messages_per_sec: u64,
    /// Messages at once (the message bucket's size).
    pub message_burst: u64,
    /// Bytes per second, sustained.
    pub bytes_per_sec: u64,
    /// Bytes at once (the byte bucket's size; at least the channel's frame limit).
    pub byte_burst: u64,
}

/// DHT traffic from one peer: maintenance is a few messages a second, a node answering a
/// flood of lookups forwards a few hundred to one peer; the byte burst lets a whole 64 MiB
/// store (the DHT's store budget) arrive in one hand-off.
pub(crate) const DHT_RATE: ChannelRate = ChannelRate {
    messages_per_sec: 2_000,
    message_burst: 4_000,
    bytes_per_sec: 16 << 20,
    byte_burst: 64 << 20,
};

/// Gossip traffic from one peer: a round every 200 ms with an anti-entropy batch of at most
/// 64 KiB, probes and member syncs; the burst covers a start-up's full member exchange.
pub(crate) const GOSSIP_RATE: ChannelRate = ChannelRate {
    messages_per_sec: 1_000,
    message_burst: 4_000,
    bytes_per_sec: 8 << 20,
    byte_burst: 32 << 20,
};

/// Flooding traffic from one peer: pings, pongs, and queries and hits forwarded along the
/// neighbour graph.
pub(crate) const FLOOD_RATE: ChannelRate = ChannelRate {
    messages_per_sec: 1_000,
    message_burst: 2_000,
    bytes_per_sec: 4 << 20,
    byte_burst: 8 << 20,
};

/// Transfer traffic from one peer: 16 KiB blocks at the speed of loopback (fetches measured
/// at 150–500 MiB/s) with room to spare; a 64 MiB fetch fits in the burst alone.
pub(crate) const SWARM_RATE: ChannelRate = ChannelRate {
    messages_per_sec: 100_000,
    message_burst: 20_000,
    bytes_per_sec: 1 << 30,
    byte_burst: 256 << 20,
};

/// The limits of `ch`.
pub(crate) const fn rate_of(ch: Channel) -> ChannelRate {
    match ch {
        Channel::Dht => DHT_RATE,
        Channel::Gossip => GOSSIP_RATE,
        Channel::Flood => FLOOD_RATE,
        Channel::Swarm => SWARM_RATE,
    }
}

/// Shortest time between two `Excess` offences charged for one peer and channel: a peer
/// over its rate is charged once a second while it stays over, not once per dropped frame.
pub(crate) const EXCESS_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A token bucket: `tokens` as of `at`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst as f64,
            at: now,
        }
    }

    /// Refills at `per_sec` up to `burst`, then takes `n` tokens if there are that many.
    fn take(&mut self, n: u64, per_sec: u64, burst: u64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec as f64).min(burst as f64);
        self.at = self.at.max(now);
        if self.tokens < n as f64 {
            return false;
        }
        self.tokens -= n as f64;
        true
    }

    /// Gives back `n` tokens taken (the frame was dropped by the other bucket).
    fn put_back(&mut self, n: u64) {
        self.tokens += n as f64;
    }
}

/// The two buckets of one peer and channel.
#[derive(Clone, Copy, Debug)]
struct Meter {
    messages: Bucket,
    bytes: Bucket,
    /// When an `Excess` was last charged.
    reported: Option<Instant>,
}

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Within the rate: handle it.
    Admit,
    /// Over the rate: drop it, and charge an `Excess` if `charge`.
    Drop {
        /// Whether this drop is the one charged in the current interval.
        charge: bool,
    },
}

/// The buckets of every peer that sent something since it connected.
#[derive(Debug, Default)]
pub(super) struct RateLimits {
    meters: BTreeMap<(libp2p::PeerId, Channel), Meter>,
}

impl RateLimits {
    /// Meters a frame of `len` bytes from `peer` on `ch` at `now`.
    pub(super) fn admit(
        &mut self,
        peer: libp2p::PeerId,
        ch: Channel,
        len: usize,
        now: Instant,
    ) -> Verdict {
        let rate = rate_of(ch);
        let m = self.meters.entry((peer, ch)).or_insert_with(|| Meter {
            messages: Bucket::full(rate.message_burst, now),
            bytes: Bucket::full(rate.byte_burst, now),
            reported: None,
        });
        if m.messages
            .take(1, rate.messages_per_sec, rate.message_burst, now)
        {
            if m.bytes
                .take(len as u64, rate.bytes_per_sec, rate.byte_burst, now)
            {
                return Verdict::Admit;
            }
            m.messages.put_back(1);
        }
        let charge = m
            .reported
            .is_none_or(|at| now.saturating_duration_since(at) >= EXCESS_REPORT_INTERVAL);
        if charge {
            m.reported = Some(now);
        }
        Verdict::Drop { charge }
    }

    /// Forgets the peers `keep` does not name (those no longer connected).
    pub(super) fn retain(&mut self, keep: impl Fn(&libp2p::PeerId) -> bool) {
        self.meters.retain(|(p, _), _| keep(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_burst_holds_a_frame_at_its_channel_limit() {
        for ch in Channel::ALL {
            let r = rate_of(ch);
            assert!(r.byte_burst >= ch.max_frame() as u64, "{ch:?}");
            assert!(r.message_burst >= 1 && r.bytes_per_sec > 0, "{ch:?}");
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_refills() {
        let t = Instant::now();
        let mut r = RateLimits::default();
        let p = libp2p::PeerId::random();
        let burst = FLOOD_RATE.message_burst;
        for i in 0..burst {
            assert_eq!(
                r.admit(p, Channel::Flood, 10, t),
                Verdict::Admit,
                "frame {i}"
            );
        }
        assert_eq!(
            r.admit(p, Channel::Flood, 10, t),
            Verdict::Drop { charge: true },
            "over the burst"
        );
        assert_eq!(
            r.admit(p, Channel::Flood, 10, t),
            Verdict::Drop { charge: false },
            "charged once per interval, not per frame"
        );
        // Another peer and another channel have buckets of their own.
        let q = libp2p::PeerId::random();
        assert_eq!(r.admit(q, Channel::Flood, 10, t), Verdict::Admit);
        assert_eq!(r.admit(p, Channel::Dht, 10, t), Verdict::Admit);
        // 10 ms refill 10 messages at 1000/s: ten pass, the eleventh does not.
        let later = t + Duration::from_millis(10);
        for i in 0..10 {
            assert_eq!(r.admit(p, Channel::Flood, 10, later), Verdict::Admit, "{i}");
        }
        assert!(matches!(
            r.admit(p, Channel::Flood, 10, later),
            Verdict::Drop { .. }
        ));
        // A second later, still over: the excess is charged again, once.
        let second = t + EXCESS_REPORT_INTERVAL;
        let charged = (0..2 * FLOOD_RATE.message_burst)
            .filter(|_| r.admit(p, Channel::Flood, 10, second) == Verdict::Drop { charge: true })
            .count();
        assert_eq!(charged, 1);
    }

    #[test]
    fn bytes_are_metered_and_a_dropped_frame_costs_no_message_token() {
        let t = Instant::now();
        let mut r = RateLimits::default();
        let p = libp2p::PeerId::random();
        let big = Channel::Gossip.max_frame();
        let fit = (GOSSIP_RATE.byte_burst / big as u64) as usize;
        for i in 0..fit {
            assert_eq!(r.admit(p, Channel::Gossip, big, t), Verdict::Admit, "{i}");
        }
        assert!(matches!(
            r.admit(p, Channel::Gossip, big, t),
            Verdict::Drop { .. }
        ));
        // Small frames still pass: the byte bucket has a few bytes left and the refused big
        // frame gave its message token back.
        let left = GOSSIP_RATE.byte_burst - (fit * big) as u64;
        if left > 0 {
            assert_eq!(
                r.admit(p, Channel::Gossip, left as usize, t),
                Verdict::Admit
            );
        }
        let m = r.meters[&(p, Channel::Gossip)];
        assert_eq!(
            m.messages.tokens as u64,
            GOSSIP_RATE.message_burst - fit as u64 - u64::from(left > 0)
        );
    }

    #[test]
    fn a_fetch_at_loopback_speed_is_never_throttled() {
        // 64 MiB in 16 KiB blocks as fast as the fastest fetch measured on loopback
        // (500 MiB/s), then another 1 GiB at that speed.
        let t = Instant::now();
        let mut r = RateLimits::default();
        let p = libp2p::PeerId::random();
        let block = 16 * 1024 + 64;
        let per_block = Duration::from_secs_f64(block as f64 / (500.0 * 1024.0 * 1024.0));
        let blocks = (64 + 1024) * 64;
        for i in 0..blocks {
            let now = t + per_block * i;
            assert_eq!(
                r.admit(p, Channel::Swarm, block, now),
                Verdict::Admit,
                "block {i}"
            );
        }
    }
}
