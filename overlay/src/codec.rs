//! The wire codec: one version byte, then the message in CBOR (through serde and `cbor4ii`).
//!
//! Every frame has a size limit that is checked *before* any byte is decoded, so a peer
//! cannot make a node allocate or parse more than the limit. Decoding arbitrary bytes
//! returns a [`CodecError`]; it never panics (property-tested below). CBOR nesting depth
//! is bounded by `cbor4ii`'s own recursion limit.

use serde::{Serialize, de::DeserializeOwned};

/// The wire protocol version carried in the first byte of every frame. A peer that speaks
/// another version is refused rather than misread.
pub const PROTOCOL_VERSION: u8 = 1;

/// Default frame limit: 1 MiB. The largest regular messages are swarm blocks (16 KiB of
/// data) and gossip anti-entropy batches (64 KiB budget); 1 MiB leaves room for a manifest
/// of a ~1 TiB file at 256 KiB chunks (4 Mi hashes would not fit — larger manifests are
/// refused) while keeping one hostile frame cheap to reject.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The frame is longer than the limit; nothing was decoded.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Length of the offending frame.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The frame has no version byte.
    #[error("empty frame")]
    Empty,
    /// The peer speaks another protocol version.
    #[error("protocol version {got} is not supported (this node speaks {expected})")]
    Version {
        /// Version byte found in the frame.
        got: u8,
        /// Version this node speaks.
        expected: u8,
    },
    /// The CBOR body is malformed or does not match the message type.
    #[error("malformed message: {0}")]
    Decode(String),
    /// The message could not be serialised (a bug, or a message over the limit).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Encodes `msg` into a frame, refusing frames over `max` bytes.
pub fn encode_with_limit<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, CodecError> {
    let buf = cbor4ii::serde::to_vec(vec![PROTOCOL_VERSION], msg)
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    if buf.len() > max {
        return Err(CodecError::TooLarge {
            len: buf.len(),
            max,
        });
    }
    Ok(buf)
}

/// Encodes `msg` into a frame under [`DEFAULT_MAX_FRAME`].
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    encode_with_limit(msg, DEFAULT_MAX_FRAME)
}

/// Decodes a frame, checking its size against `max` first.
pub fn decode_with_limit<T: DeserializeOwned>(frame: &[u8], max: usize) -> Result<T, CodecError> {
    if frame.len() > max {
        return Err(CodecError::TooLarge {
            len: frame.len(),
            max,
        });
    }
    let (&version, body) = frame.split_first().ok_or(CodecError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(CodecError::Version {
            got: version,
            expected: PROTOCOL_VERSION,
        });
    }
    cbor4ii::serde::from_slice(body).map_err(|e| CodecError::Decode(e.to_string()))
}

/// Decodes a frame under [`DEFAULT_MAX_FRAME`].
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, CodecError> {
    decode_with_limit(frame, DEFAULT_MAX_FRAME)
}

/// The exact length [`encode`] would produce, computed without allocating the frame.
///
/// The simulator charges links and upload queues with this, so the bytes it accounts are
/// the bytes the real node would send.
pub fn encoded_len<T: Serialize>(msg: &T) -> usize {
    let mut ser = cbor4ii::serde::Serializer::new(Counter(0));
    match msg.serialize(&mut ser) {
        Ok(()) => 1 + ser.into_inner().0,
        // Counting cannot fail; a message that cannot serialise is sized as a bare header.
        Err(_) => 1,
    }
}

/// A `cbor4ii` writer that only counts bytes.
struct Counter(usize);

impl cbor4ii::core::enc::Write for Counter {
    type Error = std::convert::Infallible;
    fn push(&mut self, input: &[u8]) -> Result<(), Self::Error> {
        self.0 += input.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Id;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Ping {
            nonce: u64,
        },
        Data {
            id: Id,
            #[serde(with = "serde_bytes")]
            payload: Vec<u8>,
            tags: Vec<String>,
        },
    }

    fn msg() -> impl Strategy<Value = Msg> {
        prop_oneof![
            any::<u64>().prop_map(|nonce| Msg::Ping { nonce }),
            (
                any::<[u8; 20]>(),
                proptest::collection::vec(any::<u8>(), 0..300),
                proptest::collection::vec(".{0,8}", 0..4)
            )
                .prop_map(|(id, payload, tags)| Msg::Data {
                    id: Id(id),
                    payload,
                    tags
                }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(m in msg()) {
            let frame = encode(&m).unwrap();
            prop_assert_eq!(frame.len(), encoded_len(&m));
            prop_assert_eq!(decode::<Msg>(&frame).unwrap(), m);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Msg>(&bytes);
            let mut framed = vec![PROTOCOL_VERSION];
            framed.extend_from_slice(&bytes);
            let _ = decode::<Msg>(&framed);
        }

        #[test]
        fn truncated_frames_are_errors(m in msg(), cut in 0usize..64) {
            let frame = encode(&m).unwrap();
            let cut = cut.min(frame.len().saturating_sub(1));
            prop_assert!(decode::<Msg>(&frame[..cut]).is_err());
        }
    }

    #[test]
    fn limit_checked_before_decoding() {
        let big = Msg::Data {
            id: Id::ZERO,
            payload: vec![0; 2000],
            tags: vec![],
        };
        let frame = encode(&big).unwrap();
        assert_eq!(
            decode_with_limit::<Msg>(&frame, 1000),
            Err(CodecError::TooLarge {
                len: frame.len(),
                max: 1000
            })
        );
        assert!(matches!(
            encode_with_limit(&big, 1000),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn version_and_empty() {
        let mut frame = encode(&Msg::Ping { nonce: 1 }).unwrap();
        frame[0] = 99;
        assert_eq!(
            decode::<Msg>(&frame),
            Err(CodecError::Version {
                got: 99,
                expected: 1
            })
        );
        assert_eq!(decode::<Msg>(&[]), Err(CodecError::Empty));
    }

    #[test]
    fn id_is_a_byte_string() {
        // 1 version byte + CBOR byte-string header (1 byte, length < 24) + 20 bytes.
        assert_eq!(encoded_len(&Id::ZERO), 1 + 1 + 20);
    }
}
