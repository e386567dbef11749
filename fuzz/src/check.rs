//! Properties every decoded value must have, beyond "decoding did not panic".

use peerlab_overlay::codec;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Decode → encode → decode is stable: a value a peer made us decode encodes again, its
/// frame is as long as `codec::encoded_len` says (the length the simulator charges), and
/// decoding that frame gives a value that encodes to the very same bytes. Catches a serde
/// impl that accepts what it cannot write back, or reads back something else.
pub fn round_trip<M: Serialize + DeserializeOwned>(msg: &M) {
    let frame = codec::encode_with_limit(msg, usize::MAX).expect("a decoded value encodes");
    assert_eq!(
        frame.len(),
        codec::encoded_len(msg),
        "encoded_len differs from the frame"
    );
    let back: M = codec::decode_with_limit(&frame, usize::MAX).expect("its frame decodes");
    let again = codec::encode_with_limit(&back, usize::MAX).expect("a decoded value encodes");
    assert!(frame == again, "decode → encode → decode is not stable");
}
