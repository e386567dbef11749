//! Traffic counters: per message type and per node.

use std::collections::BTreeMap;

use serde::Serialize;

/// Counters for one message type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KindStats {
    /// Messages handed to the network.
    pub sent: u64,
    /// Bytes handed to the network (real frame lengths).
    pub sent_bytes: u64,
    /// Messages delivered to a live core.
    pub delivered: u64,
    /// Bytes delivered to a live core.
    pub delivered_bytes: u64,
    /// Messages lost (random loss, partition, dead or unknown destination).
    pub dropped: u64,
    /// With [`Sim::track_contacts`](crate::Sim::track_contacts): messages that were the
    /// first between their two peers, i.e. the ones a node would dial a connection for
    /// (the simulator's `peerlab_dials_total{kind}`).
    #[serde(skip_serializing_if = "is_zero")]
    pub first_contacts: u64,
}

/// Network-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetStats {
    /// Counters per message kind (`Message::kind`).
    pub kinds: BTreeMap<&'static str, KindStats>,
    /// Sum over all kinds.
    pub total: KindStats,
    /// Core events dropped because the event buffer was full.
    pub events_overflowed: u64,
    /// Offences cores reported against peers (`Output::Offence`).
    #[serde(skip_serializing_if = "is_zero")]
    pub offences: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl NetStats {
    fn bump(&mut self, kind: &'static str, f: impl Fn(&mut KindStats)) {
        f(self.kinds.entry(kind).or_default());
        f(&mut self.total);
    }

    pub(crate) fn on_send(&mut self, kind: &'static str, bytes: usize) {
        self.bump(kind, |k| {
            k.sent += 1;
            k.sent_bytes += bytes as u64;
        });
    }

    pub(crate) fn on_deliver(&mut self, kind: &'static str, bytes: usize) {
        self.bump(kind, |k| {
            k.delivered += 1;
            k.delivered_bytes += bytes as u64;
        });
    }

    pub(crate) fn on_first_contact(&mut self, kind: &'static str) {
        self.bump(kind, |k| k.first_contacts += 1);
    }

    pub(crate) fn on_drop(&mut self, kind: &'static str) {
        self.bump(kind, |k| k.dropped += 1);
    }
}

/// Counters for one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NodeStats {
    /// Messages this node sent.
    pub sent: u64,
    /// Bytes this node sent.
    pub sent_bytes: u64,
    /// Messages delivered to this node.
    pub received: u64,
    /// Bytes delivered to this node.
    pub received_bytes: u64,
    /// With [`Sim::track_contacts`](crate::Sim::track_contacts): peers this node has
    /// exchanged a message with, either way — the connections it would hold if none were
    /// ever closed.
    #[serde(skip_serializing_if = "is_zero")]
    pub contacts: u64,
}
