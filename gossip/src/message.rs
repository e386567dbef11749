//! Wire messages.
//!
//! Every message is bounded by [`Config::max_message_bytes`](crate::Config) when sent; on
//! receipt, list lengths are checked against [`MAX_ITEMS`] (and digests against
//! `max_origins`) before anything is applied.

use peerlab_overlay::{PeerId, Signature};
use serde::{Deserialize, Serialize};

use crate::config::Exchange;
use crate::members::MemberState;

/// Most items (member updates, entries, digest rows, delta rows) a received message may
/// carry. A 64 KiB message cannot hold more than about 4000 of the smallest items, so a
/// longer list is hostile and is refused whole.
pub const MAX_ITEMS: usize = 4096;

/// One membership fact: `peer` is in `state` at `incarnation`, with the member's own signed
/// record of that incarnation (see the rules in `record.rs`: [`MemberUpdate::alive`],
/// [`MemberUpdate::verify`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberUpdate {
    /// The member.
    pub peer: PeerId,
    /// The member's incarnation; only the member itself raises it (to refute suspicion).
    pub incarnation: u64,
    /// Its state at that incarnation: `Alive` and `Left` are the member's own statements,
    /// `Suspect` and `Dead` are claims by others about its record at `incarnation`.
    pub state: MemberState,
    /// Its addresses (opaque strings, e.g. multiaddrs), as the member signed them.
    pub addrs: Vec<String>,
    /// The member's signature of `(incarnation, addrs)`: of its `left` statement when
    /// `state` is `Left`, of its `alive` statement otherwise.
    pub signature: Signature,
}

/// One row of a member digest: what the sender holds of `peer`, without its addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow(
    /// The member.
    pub PeerId,
    /// Its incarnation.
    pub u64,
    /// Its state at that incarnation.
    pub MemberState,
);

/// One versioned entry in transit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The peer that owns and versions the entry.
    pub origin: PeerId,
    /// The key within the origin's data.
    pub key: String,
    /// The origin's version counter when the entry was written (≥ 1).
    pub version: u64,
    /// The value; `None` is a tombstone (the key was deleted).
    pub value: Option<serde_bytes::ByteBuf>,
}

/// Entries of one origin with versions in `(from, to]`: every entry the sender holds in
/// that range, so that after applying it the receiver is as complete as the sender up to `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginDelta {
    /// The origin.
    pub origin: PeerId,
    /// The version the receiver claimed to hold (exclusive lower bound).
    pub from: u64,
    /// The highest version the range covers (inclusive).
    pub to: u64,
    /// `(key, version, value)` in ascending version order.
    pub entries: Vec<(String, u64, Option<serde_bytes::ByteBuf>)>,
}

/// A Scuttlebutt digest: the highest version held completely, per origin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Whether every origin the sender knows is listed; an unlisted origin then means
    /// "version 0". A digest that did not fit the budget lists a random subset.
    pub complete: bool,
    /// `(origin, version)` rows.
    pub versions: Vec<(PeerId, u64)>,
}

/// A gossip message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// SWIM direct probe.
    Ping {
        /// Probe sequence number, echoed in the ack.
        seq: u64,
        /// Members the sender holds up, itself included: a receiver that holds fewer asks
        /// for a member sync (`member_sync.rs`, "Stragglers"). Absent (0) from older nodes.
        #[serde(default)]
        members: u32,
    },
    /// Answer to [`Message::Ping`].
    Ack {
        /// The ping's sequence number.
        seq: u64,
        /// Members the sender holds up, itself included (as in [`Message::Ping`]).
        #[serde(default)]
        members: u32,
    },
    /// Asks the receiver to probe `target` on the sender's behalf.
    PingReq {
        /// The requester's probe sequence number.
        seq: u64,
        /// The member to probe.
        target: PeerId,
    },
    /// `target` answered an indirect probe.
    IndirectAck {
        /// The requester's probe sequence number.
        seq: u64,
        /// The member that answered.
        target: PeerId,
    },
    /// The receiver asked this node to probe `target` (a [`Message::PingReq`]) and `target`
    /// has not answered in time (Lifeguard's nack): the requester's own missed acks were not
    /// its own fault. Only the requester's probe sequence number travels.
    Nack {
        /// The requester's probe sequence number.
        seq: u64,
    },
    /// A joining node asks a seed for the member list.
    Join {
        /// The joiner's incarnation.
        incarnation: u64,
        /// The joiner's addresses.
        addrs: Vec<String>,
        /// The joiner's signature of its `alive` record (see [`MemberUpdate`]).
        signature: Signature,
    },
    /// The seed's answer: its member table (a random subset if it does not fit the budget).
    JoinReply {
        /// Member records, the seed's own first.
        members: Vec<MemberUpdate>,
    },
    /// Membership anti-entropy opening: the sender's member table as `(peer, incarnation,
    /// state)` rows, its own first — about 43 bytes a member against about 120 for a full
    /// record, and comparing a row costs one table look-up.
    MemberDigest {
        /// Whether every member the sender holds is listed (an unlisted member is then
        /// unknown to it). A table that does not fit the budget is sent as a random subset.
        complete: bool,
        /// The rows.
        rows: Vec<MemberRow>,
    },
    /// Membership anti-entropy answer: the records in which the digest's sender is behind,
    /// and the members about which the answerer is behind (answered with another
    /// `MemberDelta` whose `want` is empty).
    MemberDelta {
        /// Records newer than (or missing from) the digest.
        members: Vec<MemberUpdate>,
        /// Members whose records in the digest were newer than the answerer's.
        want: Vec<PeerId>,
    },
    /// A rumor push: hot membership updates and hot entries.
    Gossip {
        /// Sequence number for feedback.
        seq: u64,
        /// Whether the sender wants a [`Message::GossipReply`] (feedback variants).
        feedback: bool,
        /// Membership updates.
        members: Vec<MemberUpdate>,
        /// Entries.
        entries: Vec<Entry>,
    },
    /// Feedback: which of a push's entries the receiver already knew.
    GossipReply {
        /// The push's sequence number.
        seq: u64,
        /// One flag per entry of the push, in order.
        known: Vec<bool>,
    },
    /// Anti-entropy opening: the initiator's digest.
    Syn {
        /// Direction the initiator wants.
        exchange: Exchange,
        /// The initiator's digest.
        digest: Digest,
    },
    /// Anti-entropy answer: what the initiator lacks (pull) and what the responder wants (push).
    SynAck {
        /// Deltas for the initiator.
        deltas: Vec<OriginDelta>,
        /// The responder's versions of the origins where the initiator is ahead.
        request: Vec<(PeerId, u64)>,
    },
    /// Anti-entropy push: deltas for the responder.
    Delta {
        /// Deltas.
        deltas: Vec<OriginDelta>,
    },
}

impl peerlab_overlay::Message for Message {
    fn kind(&self) -> &'static str {
        match self {
            Message::Ping { .. } => "gossip_ping",
            Message::Ack { .. } => "gossip_ack",
            Message::PingReq { .. } => "gossip_ping_req",
            Message::IndirectAck { .. } => "gossip_indirect_ack",
            Message::Nack { .. } => "gossip_nack",
            Message::Join { .. } => "gossip_join",
            Message::JoinReply { .. } => "gossip_join_reply",
            Message::MemberDigest { .. } => "gossip_member_digest",
            Message::MemberDelta { .. } => "gossip_member_delta",
            Message::Gossip { .. } => "gossip_rumor",
            Message::GossipReply { .. } => "gossip_feedback",
            Message::Syn { .. } => "gossip_syn",
            Message::SynAck { .. } => "gossip_syn_ack",
            Message::Delta { .. } => "gossip_delta",
        }
    }
}

/// Framing overhead reserved when filling a message up to the budget: version byte, enum
/// tag, field names and list headers (CBOR array headers take at most 9 bytes each).
pub(crate) const FRAME_SLACK: usize = 96;

/// Encoded size of one item, without the codec's version byte.
pub(crate) fn item_len<T: Serialize>(item: &T) -> usize {
    peerlab_overlay::codec::encoded_len(item).saturating_sub(1)
}
