//! The targets that check one decoder on its own: the frame codec, the node's stream
//! reader, manifests and bitfields. The protocol messages are checked by [`crate::cores`],
//! which also hands them to the cores.

use std::io;
use std::pin::Pin;
use std::task::{self, Poll, Waker};

use libp2p::futures::AsyncRead;
use peerlab_overlay::codec::{self, CodecError};
use peerlab_swarm::MAX_CHUNKS;
use peerlab_swarm::{Bitfield, Manifest};
use serde::de::IgnoredAny;

use crate::check;
use crate::wire::{Channel, StreamFrame, read_stream_frame};

/// The frame limits the codec is used with: the node's two channel limits and a small one.
const LIMITS: [usize; 3] = [
    crate::wire::SMALL_FRAME_LIMIT,
    crate::wire::TRANSFER_FRAME_LIMIT,
    64,
];

/// The frame codec (`overlay::codec`) on any CBOR: byte 0 picks the limit, the rest is the
/// frame. The outcome must match the frame: too large exactly when over the limit (checked
/// before any decoding), empty, wrong version, or decoded / malformed otherwise.
pub fn codec(data: &[u8]) {
    let Some((&pick, frame)) = data.split_first() else {
        return;
    };
    let limit = LIMITS[pick as usize % LIMITS.len()];
    match codec::decode_with_limit::<IgnoredAny>(frame, limit) {
        Err(CodecError::TooLarge { len, max }) => {
            assert!(len == frame.len() && max == limit && len > limit)
        }
        Err(CodecError::Empty) => assert!(frame.is_empty()),
        Err(CodecError::Version { got, expected }) => {
            assert!(frame.len() <= limit && got == frame[0] && got != expected)
        }
        Ok(_) | Err(CodecError::Decode(_)) => {
            assert!(frame.len() <= limit && frame[0] == codec::PROTOCOL_VERSION)
        }
        Err(CodecError::Encode(e)) => panic!("decoding reported an encoding error: {e}"),
    }
}

/// How [`stream_frame`] inputs begin: the channel, then four read sizes.
pub const STREAM_HEADER: usize = 5;

/// The node's stream reader (node/src/wire.rs, `read_stream_frame`) over a transport that
/// hands out bytes in fuzzer-chosen pieces and sometimes is not ready. Byte 0 picks the
/// channel, bytes 1–4 are the sizes of successive reads (0: not ready this time), the rest
/// is what the peer wrote. Every frame returned must be exactly the bytes its prefix
/// announced, within the channel's limit; an oversized prefix must be over it; the stream
/// must end cleanly only between frames.
pub fn stream_frame(data: &[u8]) {
    if data.len() < STREAM_HEADER {
        return;
    }
    let channel = Channel::ALL[data[0] as usize % Channel::ALL.len()];
    let max = channel.max_frame();
    let (sizes, stream) = (&data[1..STREAM_HEADER], &data[STREAM_HEADER..]);
    let mut io = Pieces {
        data: stream,
        sizes,
        turn: 0,
    };
    let mut pos = 0; // where the next frame's prefix starts in `stream`
    loop {
        let got = poll_to_end(read_stream_frame(&mut io, max));
        let rest = &stream[pos..];
        match got {
            Ok(Some(StreamFrame::Data(frame))) => {
                let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                assert!(len <= max, "a frame over the limit was read");
                assert_eq!(frame, rest[4..4 + len], "frame differs from what was sent");
                pos += 4 + len;
            }
            Ok(Some(StreamFrame::Oversized(len))) => {
                let sent = u32::from_be_bytes(rest[..4].try_into().unwrap());
                assert!(len == sent as u64 && len > max as u64);
                return;
            }
            Ok(None) => {
                assert!(rest.is_empty(), "clean end reported inside the stream");
                return;
            }
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
                let len = rest
                    .get(..4)
                    .map(|p| u32::from_be_bytes(p.try_into().unwrap()) as usize);
                let short = match len {
                    None => !rest.is_empty(),
                    Some(len) => rest.len() < 4 + len,
                };
                assert!(short, "end of stream reported for a complete frame");
                return;
            }
        }
    }
}

/// The node's probe datagram reader (node/src/wire.rs, `Datagram::parse`) on any bytes,
/// and the gossip decoder behind it on the body. A datagram is refused exactly when it is
/// over [`MAX_DATAGRAM`](crate::wire::MAX_DATAGRAM), shorter than the header, of another
/// version or of no channel; one that is read writes back to the same bytes.
pub fn datagram(data: &[u8]) {
    use crate::wire::{DATAGRAM_HEADER, DATAGRAM_VERSION, Datagram, DatagramError, MAX_DATAGRAM};
    match Datagram::parse(data) {
        Ok(d) => {
            assert_eq!(d.to_bytes().as_deref(), Some(data), "not the bytes read");
            let _ = codec::decode_with_limit::<peerlab_gossip::Message>(d.body, MAX_DATAGRAM);
        }
        Err(DatagramError::Long) => assert!(data.len() > MAX_DATAGRAM),
        Err(DatagramError::Short) => {
            assert!(data.len() <= MAX_DATAGRAM && data.len() < DATAGRAM_HEADER)
        }
        Err(DatagramError::Version) => assert!(data[0] != DATAGRAM_VERSION),
        Err(DatagramError::Channel) => {
            assert!(usize::from(data[DATAGRAM_HEADER - 1]) >= Channel::ALL.len())
        }
    }
}

/// Polls a read to its end, as an executor would after each wake-up.
fn poll_to_end<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = task::Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// A transport that delivers `data` in pieces of the sizes in `sizes` (cycled); a size of
/// 0 means "not ready" once (the reader is woken and polls again).
struct Pieces<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    turn: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let size = self.sizes[self.turn % self.sizes.len()] as usize;
        self.turn += 1;
        if size == 0 && !self.data.is_empty() && self.turn % 2 == 1 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = size.max(1).min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(n))
    }
}

/// Manifests (`swarm::Manifest`, the body of a `Manifest` message and the canonical bytes
/// its content id hashes): one frame at the transfer channel's limit. Whatever decodes
/// must round-trip; a manifest that passes `validate` — all a fetcher checks before using
/// it — must describe its file consistently: at most `MAX_CHUNKS` chunks whose lengths add
/// up to the size, blocks that tile each chunk, a hash per chunk and none beyond, and a
/// content id it verifies against.
pub fn manifest(data: &[u8]) {
    let Ok(m) = codec::decode_with_limit::<Manifest>(data, Channel::Swarm.max_frame()) else {
        return;
    };
    check::round_trip(&m);
    if m.validate().is_err() {
        assert!(
            m.verify(&m.content_id()).is_err(),
            "verify passed an invalid manifest"
        );
        return;
    }
    let cid = m.content_id();
    assert_eq!(m.verify(&cid), Ok(()));
    let again: Manifest =
        codec::decode_with_limit(&m.canonical_bytes(), usize::MAX).expect("canonical bytes decode");
    assert!(again == m && again.content_id() == cid);

    let chunks = m.chunk_count();
    assert!(chunks <= MAX_CHUNKS);
    assert!(m.chunk_hash(chunks).is_none());
    assert!(m.block_size() >= 1 && m.block_size() <= m.chunk_size());
    let mut total = 0u64;
    for i in 0..chunks {
        let len = m.chunk_len(i);
        assert!(
            len >= 1 && len <= m.chunk_size(),
            "chunk {i} of {len} bytes"
        );
        assert_eq!(m.chunk_offset(i), total);
        assert!(m.chunk_hash(i).is_some());
        let blocks = m.block_count(i);
        let sum: u64 = (0..blocks)
            .map(|b| m.block_len(i, b).expect("block inside the chunk") as u64)
            .sum();
        assert_eq!(sum, len as u64, "blocks do not tile chunk {i}");
        assert!(m.block_len(i, blocks).is_none());
        total += len as u64;
    }
    assert_eq!(total, m.size(), "chunk lengths do not add up to the size");
    assert_eq!(m.chunk_len(chunks), 0);
    if chunks > 0 {
        // Wrong data never verifies as a chunk: a flipped byte, or a short chunk.
        let mut wrong = vec![0u8; m.chunk_len(0) as usize];
        wrong[0] ^= 1;
        let ok = m.verify_chunk_bytes(0, &wrong);
        wrong[0] ^= 1;
        assert!(
            !(ok && m.verify_chunk_bytes(0, &wrong)),
            "two contents verify"
        );
        assert!(!m.verify_chunk_bytes(0, &wrong[1..]));
    }
}

/// Bitfields (`swarm::Bitfield`, the body of a `Bitfield` message): one frame at the small
/// swarm limit. Whatever decodes must round-trip; `is_well_formed` must agree with
/// `from_bytes`; a well-formed bitfield — all a peer's bitfield is checked for before use —
/// must count, list and update its bits consistently within its length.
pub fn bitfield(data: &[u8]) {
    let limit = peerlab_swarm::MAX_SMALL_FRAME;
    let Ok(b) = codec::decode_with_limit::<Bitfield>(data, limit) else {
        return;
    };
    check::round_trip(&b);
    let len = b.len();
    let rebuilt = Bitfield::from_bytes(len, b.as_bytes().to_vec());
    assert_eq!(rebuilt.is_some(), b.is_well_formed());
    if !b.is_well_formed() {
        return;
    }
    assert_eq!(b.as_bytes().len(), len.div_ceil(8) as usize);
    let ones: Vec<u32> = b.ones().collect();
    assert!(ones.windows(2).all(|w| w[0] < w[1]), "ones not ascending");
    assert!(ones.iter().all(|&i| i < len && b.get(i)));
    assert_eq!(ones.len() as u32, b.count());
    assert!(!b.get(len), "a bit beyond the length");
    assert_eq!(b.is_complete(), b.count() == len);
    assert_eq!(b.is_empty(), len == 0);

    let empty = Bitfield::new(len);
    assert!(b.ones_missing_from(&empty).eq(ones.iter().copied()));
    assert_eq!(b.has_any_missing_from(&empty), !ones.is_empty());
    assert_eq!(b.ones_missing_from(&b).count(), 0);
    assert_eq!(b.ones_missing_from(&Bitfield::full(len)).count(), 0);

    let mut c = b.clone();
    for &i in &ones {
        assert!(!c.set(i), "set reported a set bit as new");
        c.clear(i);
    }
    assert_eq!(c, empty);
    for &i in &ones {
        assert!(c.set(i));
    }
    assert_eq!(c, b);
}

/// Where a [`signature`] input's fields end: key, signature, domain length.
const SIG_HEADER: usize = 32 + 64 + 1;

const PEER_ID_LEN: usize = peerlab_overlay::LIBP2P_PEER_ID_LEN;

/// Signatures (`overlay::identity`), the check every signed record and member record goes
/// through: a 32-byte public key, a 64-byte signature, a domain of the length in the next
/// byte, then the payload. Verifying any of it must return, never panic: keys that are no
/// curve point or of small order, non-canonical or malleable signatures. (That real
/// signatures verify only for their key, domain and payload is unit-tested in the overlay;
/// a fuzzer cannot forge one, and signing on every input would halve the rate.)
pub fn signature(data: &[u8]) {
    use peerlab_overlay::{PeerId, Signature};

    if data.len() < SIG_HEADER {
        return;
    }
    let key = PeerId::from_public_key(data[..32].try_into().unwrap());
    let sig = Signature(data[32..96].try_into().unwrap());
    let rest = &data[SIG_HEADER..];
    let (domain, payload) = rest.split_at((data[96] as usize).min(rest.len()));
    // Domains are constants in the code, never peer input, and contain no NUL.
    let Ok(domain) = std::str::from_utf8(domain) else {
        return;
    };
    if domain.contains('\0') {
        return;
    }
    let _ = key.verify(domain, payload, &sig);

    // The libp2p form of a key round-trips, and what parses as one is one.
    assert_eq!(PeerId::from_libp2p_bytes(&key.to_libp2p_bytes()), Some(key));
    let head = &data[..PEER_ID_LEN];
    if let Some(p) = PeerId::from_libp2p_bytes(head) {
        assert_eq!(p.to_libp2p_bytes()[..], head[..]);
    }
}
