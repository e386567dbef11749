//! The peer wire protocol (after BEP 3), one CBOR frame per message.
//!
//! Every message names the transfer it belongs to by content id, so one connection
//! carries any number of transfers. Per transfer, the opening side sends `Handshake`
//! and its `Bitfield`, and the other side answers with its own `Bitfield`; afterwards `Have` announces each newly verified chunk,
//! `Interested`/`NotInterested` say whether the sender wants data, `Choke`/`Unchoke` say
//! whether it will serve requests, `Request` asks for one block, `Block` carries it and
//! `Cancel` withdraws a request (endgame) and `Reject` refuses one that arrived after
//! a `Choke` (BEP 6). `ManifestRequest`/`Manifest` fetch the
//! manifest for a content id before joining. `Close` ends the sender's part in the
//! transfer with the receiver (BitTorrent closes the TCP connection; here one connection
//! carries every protocol, so closing is a message): a peer that evicts another, refuses
//! its handshake because its slots are full, or stops the transfer says so, and the
//! receiver forgets the connection instead of waiting on it.
//!
//! Limits: a `Block` carries at most [`BLOCK_SIZE`] bytes and its frame is at most
//! [`MAX_BLOCK_FRAME`]; every other message except `Manifest` fits in [`MAX_SMALL_FRAME`];
//! a `Manifest` frame is at most the codec's [`codec::DEFAULT_MAX_FRAME`]. Drivers check
//! the frame length before decoding ([`decode_frame`]); the core re-checks the fields.

use bytes::Bytes;
use peerlab_overlay::codec::{self, CodecError};
use serde::{Deserialize, Serialize};

use crate::bitfield::Bitfield;
use crate::manifest::{BLOCK_SIZE, ContentId, MAX_CHUNKS, Manifest};

/// libp2p protocol name of the swarm wire protocol.
pub const PROTOCOL_NAME: &str = "/peerlab/swarm/1";

/// Largest `Block` frame: a full block plus the envelope (content id, indices, headers).
pub const MAX_BLOCK_FRAME: usize = BLOCK_SIZE as usize + 128;

/// Largest frame of any other message but `Manifest`: a bitfield of [`MAX_CHUNKS`] bits
/// plus the envelope.
pub const MAX_SMALL_FRAME: usize = MAX_CHUNKS as usize / 8 + 128;

/// One swarm message: the transfer it belongs to and what it says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The transfer.
    pub cid: ContentId,
    /// The message proper.
    pub body: Body,
}

/// What a swarm message says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// Opens the transfer with the receiver, who answers with its bitfield.
    Handshake,
    /// The chunks the sender holds; sent with `Handshake` and as the answer to one.
    Bitfield(Bitfield),
    /// The sender has verified and stored this chunk.
    Have {
        /// Chunk index.
        chunk: u32,
    },
    /// The sender wants chunks the receiver has.
    Interested,
    /// The sender no longer wants anything from the receiver.
    NotInterested,
    /// The sender will not answer requests.
    Choke,
    /// The sender will answer requests.
    Unchoke,
    /// Asks for one block.
    Request {
        /// Chunk index.
        chunk: u32,
        /// Block index inside the chunk.
        block: u32,
    },
    /// One block of data.
    Block {
        /// Chunk index.
        chunk: u32,
        /// Block index inside the chunk.
        block: u32,
        /// The bytes (at most [`BLOCK_SIZE`]).
        data: Bytes,
    },
    /// Withdraws a request.
    Cancel {
        /// Chunk index.
        chunk: u32,
        /// Block index inside the chunk.
        block: u32,
    },
    /// The sender will not serve this request (it arrived while the requester was
    /// choked); the requester asks elsewhere. After BEP 6's `reject request`.
    Reject {
        /// Chunk index.
        chunk: u32,
        /// Block index inside the chunk.
        block: u32,
    },
    /// The sender no longer takes part in the transfer with the receiver; the receiver
    /// drops the connection (and its requests to the sender go elsewhere).
    Close,
    /// Asks for the manifest of the content id.
    ManifestRequest,
    /// The manifest; the receiver verifies it against the content id.
    Manifest(Manifest),
}

impl peerlab_overlay::Message for Message {
    fn kind(&self) -> &'static str {
        self.body.kind()
    }
}

impl Body {
    /// A stable name of the message type, for counters and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Handshake => "swarm_handshake",
            Body::Bitfield(_) => "swarm_bitfield",
            Body::Have { .. } => "swarm_have",
            Body::Interested => "swarm_interested",
            Body::NotInterested => "swarm_not_interested",
            Body::Choke => "swarm_choke",
            Body::Unchoke => "swarm_unchoke",
            Body::Request { .. } => "swarm_request",
            Body::Block { .. } => "swarm_block",
            Body::Cancel { .. } => "swarm_cancel",
            Body::Reject { .. } => "swarm_reject",
            Body::Close => "swarm_close",
            Body::ManifestRequest => "swarm_manifest_request",
            Body::Manifest(_) => "swarm_manifest",
        }
    }
}

impl Message {
    /// The frame limit for this message's type.
    pub fn frame_limit(&self) -> usize {
        match self.body {
            Body::Block { .. } => MAX_BLOCK_FRAME,
            Body::Manifest(_) => codec::DEFAULT_MAX_FRAME,
            _ => MAX_SMALL_FRAME,
        }
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame does not decode (or exceeds the absolute limit).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The frame decoded but is longer than its message type allows.
    #[error("{kind} frame of {len} bytes exceeds its limit of {max}")]
    Oversized {
        /// Message type.
        kind: &'static str,
        /// Frame length.
        len: usize,
        /// Limit for that type.
        max: usize,
    },
}

/// Encodes a message into a frame.
pub fn encode_frame(msg: &Message) -> Result<Vec<u8>, CodecError> {
    codec::encode_with_limit(msg, msg.frame_limit())
}

/// Decodes a frame: the absolute limit is checked before decoding, the per-type limit after.
pub fn decode_frame(frame: &[u8]) -> Result<Message, FrameError> {
    let msg: Message = codec::decode_with_limit(frame, codec::DEFAULT_MAX_FRAME)?;
    let max = msg.frame_limit();
    if frame.len() > max {
        return Err(FrameError::Oversized {
            kind: peerlab_overlay::Message::kind(&msg),
            len: frame.len(),
            max,
        });
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerlab_overlay::Message as _;

    fn cid() -> ContentId {
        ContentId([3; 32])
    }

    #[test]
    fn round_trip_and_exact_wire_len() {
        let msgs = [
            Body::Handshake,
            Body::Bitfield(Bitfield::full(13)),
            Body::Have { chunk: 7 },
            Body::Request { chunk: 1, block: 2 },
            Body::Block {
                chunk: 1,
                block: 2,
                data: Bytes::from(vec![9u8; BLOCK_SIZE as usize]),
            },
            Body::Cancel { chunk: 1, block: 2 },
            Body::Close,
            Body::Manifest(Manifest::from_bytes("f", b"hello", 1024).unwrap()),
        ];
        for body in msgs {
            let m = Message { cid: cid(), body };
            let frame = encode_frame(&m).unwrap();
            assert_eq!(frame.len(), m.wire_len());
            assert!(frame.len() <= m.frame_limit());
            assert_eq!(decode_frame(&frame).unwrap(), m);
        }
    }

    #[test]
    fn oversized_block_frame_is_refused() {
        let m = Message {
            cid: cid(),
            body: Body::Block {
                chunk: 0,
                block: 0,
                data: Bytes::from(vec![0u8; 4 * BLOCK_SIZE as usize]),
            },
        };
        let frame = codec::encode(&m).unwrap();
        assert!(matches!(
            decode_frame(&frame),
            Err(FrameError::Oversized {
                kind: "swarm_block",
                ..
            })
        ));
        assert!(encode_frame(&m).is_err());
        let huge = vec![1u8; codec::DEFAULT_MAX_FRAME + 1];
        assert!(matches!(
            decode_frame(&huge),
            Err(FrameError::Codec(CodecError::TooLarge { .. }))
        ));
    }
}
