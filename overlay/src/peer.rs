//! Peer identities as the cores see them.
//!
//! A peer is named by its Ed25519 public key. The libp2p `PeerId` of such a key is the
//! identity multihash of its protobuf encoding — a fixed 6-byte prefix followed by the
//! 32 key bytes — so the two forms convert without loss and the cores need no libp2p.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Prefix of a libp2p `PeerId` for an Ed25519 key: identity multihash (0x00), length 36,
/// protobuf field 1 = KeyType Ed25519 (0x08 0x01), field 2 = 32 bytes (0x12 0x20).
const LIBP2P_ED25519_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// Length of the libp2p byte form of a peer id.
pub const LIBP2P_PEER_ID_LEN: usize = 38;

/// A peer's identity: its Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(#[serde(with = "crate::id::serde_bytes_array")] [u8; 32]);

impl PeerId {
    /// The peer id of an Ed25519 public key.
    pub const fn from_public_key(key: [u8; 32]) -> PeerId {
        PeerId(key)
    }

    /// The Ed25519 public key bytes.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.0
    }

    /// The peer id of simulated peer number `n`: the public key of
    /// [`Keypair::synthetic(n)`](crate::identity::Keypair::synthetic), so simulated peers
    /// sign and verify like real ones.
    pub fn synthetic(n: u64) -> PeerId {
        crate::identity::Keypair::synthetic(n).peer_id()
    }

    /// The libp2p `PeerId::to_bytes()` form of this peer's id.
    pub fn to_libp2p_bytes(&self) -> [u8; LIBP2P_PEER_ID_LEN] {
        let mut b = [0u8; LIBP2P_PEER_ID_LEN];
        b[..6].copy_from_slice(&LIBP2P_ED25519_PREFIX);
        b[6..].copy_from_slice(&self.0);
        b
    }

    /// Parses the libp2p byte form; `None` unless it names an Ed25519 key inline.
    pub fn from_libp2p_bytes(b: &[u8]) -> Option<PeerId> {
        if b.len() != LIBP2P_PEER_ID_LEN || b[..6] != LIBP2P_ED25519_PREFIX {
            return None;
        }
        Some(PeerId(b[6..].try_into().ok()?))
    }

    /// A short hex form for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libp2p_round_trip() {
        let p = PeerId::synthetic(42);
        let b = p.to_libp2p_bytes();
        assert_eq!(PeerId::from_libp2p_bytes(&b), Some(p));
        let mut bad = b;
        bad[2] = 0x09;
        assert_eq!(PeerId::from_libp2p_bytes(&bad), None);
        assert_eq!(PeerId::from_libp2p_bytes(&b[..37]), None);
        assert_ne!(PeerId::synthetic(1), PeerId::synthetic(2));
    }
}
