//! Node keys and signatures.
//!
//! A node is its Ed25519 key pair: the public half is its [`PeerId`], the secret half signs
//! what only this node may say — its DHT records, its own membership record. Signing is
//! deterministic (RFC 8032), so a core that signs stays a pure function of its inputs.
//!
//! Every signature is made over a *domain tag* followed by the payload, so a signature made
//! for one purpose (a DHT record, say) can never be replayed as another (a member record):
//! the signed bytes are `tag ‖ 0x00 ‖ payload`. Verification is `verify_strict`
//! (no malleable signatures, no small-order keys).

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::peer::PeerId;

/// Length of a signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// A node's Ed25519 key pair.
#[derive(Clone)]
pub struct Keypair {
    key: SigningKey,
    peer: PeerId,
}

impl Keypair {
    /// The key pair of a 32-byte Ed25519 secret key.
    pub fn from_secret(secret: [u8; 32]) -> Keypair {
        let key = SigningKey::from_bytes(&secret);
        let peer = PeerId::from_public_key(key.verifying_key().to_bytes());
        Keypair { key, peer }
    }

    /// A deterministic key pair for simulated peer number `n`: its secret is derived from
    /// `n` alone, so a simulation names the same peers for the same numbers on every run.
    /// Never use it for a real node.
    pub fn synthetic(n: u64) -> Keypair {
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&n.to_be_bytes());
        secret[8..28].copy_from_slice(&crate::id::Id::hash(&n.to_le_bytes()).0);
        secret[28..].copy_from_slice(b"plab");
        Keypair::from_secret(secret)
    }

    /// The 32 secret bytes (for the node's key file; handle with care).
    pub fn secret(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// This key pair's peer id (its public key).
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// Signs `payload` for the purpose named by `domain` (see the module docs).
    pub fn sign(&self, domain: &str, payload: &[u8]) -> Signature {
        Signature(self.key.sign(&tagged(domain, payload)).to_bytes())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({:?})", self.peer)
    }
}

impl PeerId {
    /// Whether `sig` is this peer's signature of `payload` for `domain`. `false` for any
    /// invalid key, malformed or malleable signature: nothing a peer sends can panic here.
    pub fn verify(&self, domain: &str, payload: &[u8], sig: &Signature) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(self.public_key()) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        key.verify_strict(&tagged(domain, payload), &sig).is_ok()
    }
}

fn tagged(domain: &str, payload: &[u8]) -> Vec<u8> {
    // The NUL separator is unambiguous only while no domain contains one; domains are
    // constants in the code, never peer input.
    debug_assert!(!domain.contains('\0'), "signature domain contains NUL");
    let mut b = Vec::with_capacity(domain.len() + 1 + payload.len());
    b.extend_from_slice(domain.as_bytes());
    b.push(0);
    b.extend_from_slice(payload);
    b
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "crate::id::serde_bytes_array")] pub [u8; SIGNATURE_LEN]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..4]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_key_domain_and_payload() {
        let a = Keypair::synthetic(1);
        let b = Keypair::synthetic(2);
        let sig = a.sign("test/1", b"hello");
        assert!(a.peer_id().verify("test/1", b"hello", &sig));
        assert!(!b.peer_id().verify("test/1", b"hello", &sig), "other key");
        assert!(
            !a.peer_id().verify("test/2", b"hello", &sig),
            "other domain"
        );
        assert!(
            !a.peer_id().verify("test/1", b"hellp", &sig),
            "other payload"
        );
        let mut bad = sig;
        bad.0[10] ^= 1;
        assert!(!a.peer_id().verify("test/1", b"hello", &bad), "flipped bit");
        // A domain cannot be shifted into the payload.
        assert!(!a.peer_id().verify("test", b"/1\0hello", &sig));
    }

    #[test]
    fn synthetic_keys_are_stable_and_distinct() {
        assert_eq!(
            Keypair::synthetic(7).peer_id(),
            Keypair::synthetic(7).peer_id()
        );
        assert_ne!(
            Keypair::synthetic(7).peer_id(),
            Keypair::synthetic(8).peer_id()
        );
        let k = Keypair::synthetic(3);
        assert_eq!(Keypair::from_secret(k.secret()).peer_id(), k.peer_id());
    }

    #[test]
    fn arbitrary_bytes_as_key_or_signature_never_panic() {
        let p = PeerId::from_public_key([0xff; 32]);
        assert!(!p.verify("d", b"x", &Signature([0; 64])));
        assert!(!PeerId::from_public_key([0; 32]).verify("d", b"x", &Signature([0xff; 64])));
    }
}
