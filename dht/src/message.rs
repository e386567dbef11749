//! The DHT's wire messages.
//!
//! Every request carries a request id chosen by the sender; the reply echoes it, so the
//! sender matches replies to its own table of pending requests and times out the ones that
//! never come back (Chord's liveness checks are exactly these timeouts). Requests name the
//! virtual node they are meant for; a peer that has no such virtual node rejects the request
//! with [`Reject::UnknownVnode`] instead of guessing.
//!
//! Lists inside messages are bounded by the constants below; a message over a bound is
//! rejected whole and counted, never truncated silently.

use serde::{Deserialize, Serialize};

use peerlab_overlay::{Id, PeerId};

pub use crate::record::{ProviderEntry, Record, Version};

/// Most successor-list entries a message may carry: the largest successor list a node keeps
/// (Chord's `r = 2·log2 N` reaches 32 near N = 65 536 and is capped there).
pub const MAX_SUCCESSORS: usize = 32;

/// Most candidates a routing step returns. A few are enough to route around a dead next
/// hop without another round trip; more only enlarge the reply.
pub const MAX_STEP_CANDIDATES: usize = 4;

/// Times a [`Message::SuccessorHint`] is passed on along successors before it is dropped:
/// a displaced predecessor's hint lands one or two nodes early when several joins raced;
/// the bound keeps a stale hint from circling the ring.
pub const MAX_HINT_FORWARDS: u8 = 8;

/// Most records (or digest entries) in one storage batch, so a repair round or a hand-off
/// never builds one huge frame; larger sets go in several batches.
pub const MAX_BATCH_ENTRIES: usize = 512;

/// Payload budget of one storage batch in bytes (values plus a fixed per-record size for
/// key, versions, expiry and signature), under the node's 256 KiB frame limit for the DHT
/// protocol with room for the message around it.
pub const MAX_BATCH_BYTES: usize = 192 * 1024;

/// Most finger runs one `Fingers` reply carries (a finger table has 160 entries; in compact
/// form far fewer distinct runs).
pub const MAX_FINGER_ENTRIES: usize = 160;

/// Most providers returned or pushed for one key in one message.
pub const MAX_PROVIDERS_PER_MESSAGE: usize = 64;

/// A virtual node as others see it: its ring position and the peer that runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeRef {
    /// Ring position of the virtual node.
    pub id: Id,
    /// Physical peer running it.
    pub peer: PeerId,
}

/// The answer of one routing step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// The key lies in `(pred, owner]`: `owner` is the key's successor.
    Done {
        /// The virtual node preceding the key (the one that answered).
        pred: NodeRef,
        /// The key's owner.
        owner: NodeRef,
    },
    /// Ask one of these next, best (closest preceding the key) first.
    Next {
        /// Closer nodes, at most [`MAX_STEP_CANDIDATES`].
        candidates: Vec<NodeRef>,
    },
}

/// Why a peer refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Reject {
    /// The addressed virtual node does not exist (any more) at this peer.
    #[error("unknown virtual node")]
    UnknownVnode,
    /// A finger index outside `0..160`.
    #[error("finger index out of range")]
    BadFingerIndex,
    /// A value over the receiver's size limit.
    #[error("value too large")]
    ValueTooLarge,
    /// The receiver's storage budget is exhausted.
    #[error("storage full")]
    StoreFull,
    /// The receiver is not (or no longer) part of a ring.
    #[error("not joined")]
    NotJoined,
    /// A list in the request is longer than the protocol allows, or a record breaks its
    /// own rules (a claim after its version, a lifetime over the limit).
    #[error("malformed request")]
    Malformed,
    /// The record's signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Another writer holds the key (its record has not expired).
    #[error("key belongs to {owner}")]
    NotOwner {
        /// The writer that holds the key.
        owner: PeerId,
    },
    /// The writer's own record held here is newer, or stands on another claim: sign the
    /// write again with this `since` and a version newer than `version`.
    #[error("a newer record of the same writer is held")]
    Outdated {
        /// The claim held.
        since: Version,
        /// The version held.
        version: Version,
    },
    /// The version is further ahead of the receiver's clock than the skew bound.
    #[error("version too far in the future")]
    TooFarAhead,
    /// The record has already expired.
    #[error("record expired")]
    Expired,
    /// The key is outside the ranges the receiver owns or replicates.
    #[error("not a replica of the key")]
    NotReplica,
    /// The writer's share of the receiver's store is used up.
    #[error("writer quota exceeded")]
    QuotaExceeded,
}

/// A DHT message between peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// One iterative routing step: "what do you know about `key`?" `vnode` names the virtual
    /// node the asker believes is here (`None` when joining through a bootstrap peer).
    FindStep {
        /// Request id.
        req: u64,
        /// Addressed virtual node.
        vnode: Option<Id>,
        /// The key being looked up.
        key: Id,
    },
    /// Reply to [`Message::FindStep`].
    StepReply {
        /// Request id.
        req: u64,
        /// The step's answer.
        step: Step,
    },
    /// Asks a virtual node for its predecessor and successor list (stabilize, join and the
    /// liveness check all use it).
    GetState {
        /// Request id.
        req: u64,
        /// Addressed virtual node.
        vnode: Id,
        /// The asker needs only the predecessor (a finger, predecessor or liveness check):
        /// the answer's successor list stays empty. A successor list is most of a state
        /// answer (up to [`MAX_SUCCESSORS`] entries of ≈ 70 bytes), and these checks are
        /// most of what a ring at rest sends. Absent on the wire when false.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pred_only: bool,
    },
    /// Reply to [`Message::GetState`].
    State {
        /// Request id.
        req: u64,
        /// The answering virtual node's predecessor.
        pred: Option<NodeRef>,
        /// Its successor list, at most [`MAX_SUCCESSORS`].
        succs: Vec<NodeRef>,
    },
    /// "I might be your predecessor" (Chord's notify). Carries no request id: it needs no
    /// answer, and the notifier is alive since it just sent this.
    Notify {
        /// Addressed virtual node.
        vnode: Id,
        /// The notifying virtual node.
        from: NodeRef,
    },
    /// "`candidate` may be your successor": sent by a joining virtual node (itself the
    /// candidate) to the predecessor its join lookup found, by a virtual node that took a
    /// new predecessor to the one it displaced, and by a node whose successor moved closer
    /// to the node it moved to, when the one it left lies just after it. The receiver
    /// checks the claim as Chord's stabilize checks a successor's predecessor (asks the
    /// candidate before adopting it); a candidate that is not between the receiver and its
    /// successor is passed on along the successor, at most [`MAX_HINT_FORWARDS`] times.
    /// Without hints, a node learns of a closer successor one stabilize period per node
    /// walked back (after concurrent joins, hundreds of periods). A successor naming itself
    /// says its successor list changed its replica set: the receiver stabilizes now (a new
    /// peer reaches the replica sets before it one round trip per virtual node).
    SuccessorHint {
        /// Addressed virtual node.
        vnode: Id,
        /// The virtual node that may be its successor.
        candidate: NodeRef,
        /// How many more times the hint may be passed on.
        forwards: u8,
    },
    /// Asks for a virtual node's fingers from index `from_index` up (a joining node copies
    /// its successor's table as a first guess, Chord §4.4).
    GetFingers {
        /// Request id.
        req: u64,
        /// Addressed virtual node.
        vnode: Id,
        /// First finger index wanted, `< 160`.
        from_index: u16,
    },
    /// Reply to [`Message::GetFingers`]: runs `(first index, node)` in ascending order.
    Fingers {
        /// Request id.
        req: u64,
        /// Finger runs, at most [`MAX_FINGER_ENTRIES`].
        runs: Vec<(u16, NodeRef)>,
    },
    /// A graceful leave: the sender's virtual node `leaving` goes away; `pred` and `succs` are
    /// its last view, which the receiver uses to patch its own pointers.
    Leaving {
        /// The receiver's virtual node this concerns.
        vnode: Id,
        /// The departing virtual node.
        leaving: NodeRef,
        /// Its predecessor.
        pred: Option<NodeRef>,
        /// Its successor list.
        succs: Vec<NodeRef>,
    },
    /// Write a record at its owner (or replica). `key` is the ring id.
    Put {
        /// Request id.
        req: u64,
        /// Addressed virtual node (the owner the lookup found).
        vnode: Id,
        /// Key id.
        key: Id,
        /// The record.
        record: Record,
    },
    /// Reply to [`Message::Put`]: the version now stored (which may be newer than the write).
    PutAck {
        /// Request id.
        req: u64,
        /// Version the owner holds after the write.
        stored: Version,
    },
    /// Read a record.
    Get {
        /// Request id.
        req: u64,
        /// Addressed virtual node.
        vnode: Id,
        /// Key id.
        key: Id,
    },
    /// Reply to [`Message::Get`]: the record if held, and the replica set to ask otherwise.
    GetReply {
        /// Request id.
        req: u64,
        /// The record (tombstones included), if this peer holds one.
        record: Option<Record>,
        /// The owner's replica peers, for a read that missed at the owner.
        replicas: Vec<NodeRef>,
    },
    /// Add a provider of `key` at its owner; the entry's provider must be the sender.
    AddProvider {
        /// Request id.
        req: u64,
        /// Addressed virtual node.
        vnode: Id,
        /// Key id.
        key: Id,
        /// The provider's signed entry.
        entry: ProviderEntry,
    },
    /// Ask the owner for providers of `key`.
    GetProviders {
        /// Request id.
        req: u64,
        /// Addressed virtual node.
        vnode: Id,
        /// Key id.
        key: Id,
    },
    /// Providers of a key (answer to [`Message::GetProviders`] or ack of
    /// [`Message::AddProvider`]).
    Providers {
        /// Request id.
        req: u64,
        /// Current unexpired providers, at most [`MAX_PROVIDERS_PER_MESSAGE`].
        providers: Vec<ProviderEntry>,
    },
    /// Repair: the owner's digest of its range `(from, to]` sent to a replica.
    Offer {
        /// Request id.
        req: u64,
        /// Range start (exclusive).
        from: Id,
        /// Range end (inclusive).
        to: Id,
        /// `(key, version, claim)` of each record held, at most [`MAX_BATCH_ENTRIES`]: the
        /// claim ([`Record::since`]) lets the replica tell which of two writers' records
        /// wins without fetching it.
        digest: Vec<(Id, Version, Version)>,
        /// Provider sets of the range, merged by the replica.
        providers: Vec<(Id, Vec<ProviderEntry>)>,
    },
    /// Reply to [`Message::Offer`]: the keys the replica lacks or holds older versions of.
    Want {
        /// Request id.
        req: u64,
        /// Wanted keys.
        keys: Vec<Id>,
    },
    /// Records pushed to a replica or a new owner (no reply).
    Store {
        /// The records, at most [`MAX_BATCH_ENTRIES`] and [`MAX_BATCH_BYTES`] of payload.
        records: Vec<(Id, Record)>,
        /// Provider sets pushed with them.
        providers: Vec<(Id, Vec<ProviderEntry>)>,
    },
    /// Records handed back to their owner by a peer that no longer knows itself a replica.
    Handoff {
        /// Request id.
        req: u64,
        /// Addressed virtual node (the owner).
        vnode: Id,
        /// The records.
        records: Vec<(Id, Record)>,
    },
    /// Reply to [`Message::Handoff`]: whether the sender is among the owner's replicas.
    HandoffAck {
        /// Request id.
        req: u64,
        /// `true` if the sender should keep its copies.
        keep: bool,
    },
    /// A request was refused.
    Rejected {
        /// Request id.
        req: u64,
        /// Why.
        reason: Reject,
    },
}

impl peerlab_overlay::Message for Message {
    fn kind(&self) -> &'static str {
        match self {
            Message::FindStep { .. } => "find_step",
            Message::StepReply { .. } => "step_reply",
            Message::GetState { .. } => "get_state",
            Message::State { .. } => "state",
            Message::Notify { .. } => "notify",
            Message::SuccessorHint { .. } => "successor_hint",
            Message::GetFingers { .. } => "get_fingers",
            Message::Fingers { .. } => "fingers",
            Message::Leaving { .. } => "leaving",
            Message::Put { .. } => "put",
            Message::PutAck { .. } => "put_ack",
            Message::Get { .. } => "get",
            Message::GetReply { .. } => "get_reply",
            Message::AddProvider { .. } => "add_provider",
            Message::GetProviders { .. } => "get_providers",
            Message::Providers { .. } => "providers",
            Message::Offer { .. } => "offer",
            Message::Want { .. } => "want",
            Message::Store { .. } => "store",
            Message::Handoff { .. } => "handoff",
            Message::HandoffAck { .. } => "handoff_ack",
            Message::Rejected { .. } => "rejected",
        }
    }
}

#[cfg(test)]
mod tests {
    use peerlab_overlay::codec;

    use super::*;

    /// `pred_only` crosses the codec both ways, and a request without it (as older nodes
    /// send it) reads as a request for the whole state.
    #[test]
    fn a_predecessor_only_request_survives_the_codec() {
        for pred_only in [false, true] {
            let m = Message::GetState {
                req: 9,
                vnode: Id::from_u64(5),
                pred_only,
            };
            let back: Message = codec::decode(&codec::encode(&m).unwrap()).unwrap();
            assert_eq!(back, m);
        }
        #[derive(Serialize)]
        enum Old {
            GetState { req: u64, vnode: Id },
        }
        let old = codec::encode(&Old::GetState {
            req: 9,
            vnode: Id::from_u64(5),
        })
        .unwrap();
        let back: Message = codec::decode(&old).unwrap();
        assert!(matches!(
            back,
            Message::GetState {
                pred_only: false,
                ..
            }
        ));
    }
}
