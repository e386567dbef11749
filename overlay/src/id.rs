//! 160-bit ring identifiers and the interval arithmetic Chord needs.
//!
//! Identifiers live on the ring `Z / 2^160`, stored big-endian so that the derived
//! byte-wise ordering is numeric ordering. Intervals follow the Chord paper's
//! notation: `(a, b)` is open, `(a, b]` is half-open; both walk clockwise from `a`
//! and wrap past zero. When `a == b` an interval spans the whole ring: `(a, a]` is
//! every identifier, `(a, a)` is every identifier except `a` — the convention that
//! makes a one-node ring its own successor (Zave 2017, §4).

use std::fmt;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::peer::PeerId;

/// Number of bits in a ring identifier (SHA-1's output size).
pub const ID_BITS: usize = 160;

/// Number of bytes in a ring identifier.
pub const ID_BYTES: usize = ID_BITS / 8;

/// A point on the 160-bit identifier ring, big-endian.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Id(#[serde(with = "serde_bytes_array")] pub [u8; ID_BYTES]);

impl Id {
    /// The identifier 0.
    pub const ZERO: Id = Id([0; ID_BYTES]);
    /// The identifier 2^160 − 1.
    pub const MAX: Id = Id([0xff; ID_BYTES]);

    /// SHA-1 of arbitrary bytes: where a key sits on the ring.
    pub fn hash(bytes: &[u8]) -> Id {
        Id(Sha1::digest(bytes).into())
    }

    /// Where virtual node `index` of `peer` sits: `SHA-1(peer_id_bytes ‖ u16_be(index))`,
    /// with the peer id in its libp2p byte form (see [`PeerId::to_libp2p_bytes`]).
    pub fn vnode(peer: &PeerId, index: u16) -> Id {
        let mut h = Sha1::new();
        h.update(peer.to_libp2p_bytes());
        h.update(index.to_be_bytes());
        Id(h.finalize().into())
    }

    /// An identifier from its low 64 bits (the high bits are zero). Handy in tests.
    pub fn from_u64(v: u64) -> Id {
        let mut b = [0; ID_BYTES];
        b[ID_BYTES - 8..].copy_from_slice(&v.to_be_bytes());
        Id(b)
    }

    /// `2^i` for `i < 160`.
    ///
    /// # Panics
    /// If `i >= 160`; callers validate indices from the network first.
    pub fn pow2(i: usize) -> Id {
        assert!(i < ID_BITS, "bit index {i} out of range");
        let mut b = [0; ID_BYTES];
        b[ID_BYTES - 1 - i / 8] = 1 << (i % 8);
        Id(b)
    }

    /// `self + other mod 2^160`.
    pub fn wrapping_add(&self, other: &Id) -> Id {
        let mut out = [0; ID_BYTES];
        let mut carry = 0u16;
        for i in (0..ID_BYTES).rev() {
            let s = self.0[i] as u16 + other.0[i] as u16 + carry;
            out[i] = s as u8;
            carry = s >> 8;
        }
        Id(out)
    }

    /// `self − other mod 2^160`.
    pub fn wrapping_sub(&self, other: &Id) -> Id {
        let mut out = [0; ID_BYTES];
        let mut borrow = 0i16;
        for i in (0..ID_BYTES).rev() {
            let mut d = self.0[i] as i16 - other.0[i] as i16 - borrow;
            borrow = 0;
            if d < 0 {
                d += 256;
                borrow = 1;
            }
            out[i] = d as u8;
        }
        Id(out)
    }

    /// `self + 2^i mod 2^160`: the start of finger `i` (Chord's `n + 2^i`).
    pub fn add_pow2(&self, i: usize) -> Id {
        self.wrapping_add(&Id::pow2(i))
    }

    /// Clockwise distance from `self` to `to`: `to − self mod 2^160`.
    pub fn distance_to(&self, to: &Id) -> Id {
        to.wrapping_sub(self)
    }

    /// `self ∈ (a, b)` clockwise; `(a, a)` is the whole ring except `a`.
    pub fn in_open(&self, a: &Id, b: &Id) -> bool {
        if a == b {
            return self != a;
        }
        let d = a.distance_to(self);
        !d.is_zero() && d < a.distance_to(b)
    }

    /// `self ∈ (a, b]` clockwise; `(a, a]` is the whole ring.
    pub fn in_half_open(&self, a: &Id, b: &Id) -> bool {
        if a == b {
            return true;
        }
        let d = a.distance_to(self);
        !d.is_zero() && d <= a.distance_to(b)
    }

    /// `self ∈ [a, b)` clockwise; `[a, a)` is the whole ring.
    pub fn in_closed_open(&self, a: &Id, b: &Id) -> bool {
        a == b || self.distance_to(a).is_zero() || self.in_open(a, b)
    }

    /// Whether this is the identifier 0.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }

    /// The top 64 bits, as a fraction-of-the-ring proxy (for statistics and plots).
    pub fn high_u64(&self) -> u64 {
        u64::from_be_bytes(self.0[..8].try_into().expect("20 >= 8 bytes"))
    }

    /// Position on the ring as a fraction in `[0, 1)`.
    pub fn as_fraction(&self) -> f64 {
        self.high_u64() as f64 / 2f64.powi(64)
    }

    /// Full lowercase hex form (40 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the 40-character hex form.
    pub fn from_hex(s: &str) -> Option<Id> {
        let mut b = [0; ID_BYTES];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(Id(b))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", &self.to_hex()[..10])
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Serialises fixed-size byte arrays as CBOR byte strings rather than arrays of integers.
pub(crate) mod serde_bytes_array {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer, const N: usize>(
        v: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let b: &serde_bytes::Bytes = Deserialize::deserialize(d)?;
        <[u8; N]>::try_from(&b[..]).map_err(|_| D::Error::invalid_length(b.len(), &"fixed size"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id() -> impl Strategy<Value = Id> {
        prop_oneof![
            any::<[u8; 20]>().prop_map(Id),
            (0u64..16).prop_map(Id::from_u64),
            (0u64..16).prop_map(|v| Id::MAX.wrapping_sub(&Id::from_u64(v))),
        ]
    }

    /// Reference model over u128 on a small ring would not cover wrap at 2^160, so the
    /// properties are checked against the definitions via clockwise distance.
    #[test]
    fn pow2_and_add() {
        assert_eq!(Id::ZERO.add_pow2(0), Id::from_u64(1));
        assert_eq!(Id::ZERO.add_pow2(63), Id::from_u64(1 << 63));
        assert_eq!(Id::MAX.add_pow2(0), Id::ZERO, "wraps past 2^160");
        let top = Id::pow2(159);
        assert_eq!(top.wrapping_add(&top), Id::ZERO);
        assert_eq!(
            Id::from_u64(5).wrapping_sub(&Id::from_u64(7)),
            Id::MAX.wrapping_sub(&Id::from_u64(1))
        );
    }

    #[test]
    fn intervals_small_cases() {
        let (a, b, c) = (Id::from_u64(10), Id::from_u64(20), Id::from_u64(30));
        assert!(b.in_open(&a, &c));
        assert!(!a.in_open(&a, &c));
        assert!(!c.in_open(&a, &c));
        assert!(c.in_half_open(&a, &c));
        assert!(!a.in_half_open(&a, &c));
        assert!(a.in_closed_open(&a, &c) && !c.in_closed_open(&a, &c));
        // wrap-around: (30, 10) contains 0 and MAX but not 20
        assert!(Id::ZERO.in_open(&c, &a));
        assert!(Id::MAX.in_open(&c, &a));
        assert!(!b.in_open(&c, &a));
        // full ring
        assert!(b.in_open(&a, &a) && !a.in_open(&a, &a));
        assert!(a.in_half_open(&a, &a) && b.in_half_open(&a, &a));
    }

    #[test]
    fn vnode_placement_is_sha1_of_peer_and_index() {
        let p = PeerId::from_public_key([7; 32]);
        let mut bytes = p.to_libp2p_bytes().to_vec();
        bytes.extend_from_slice(&3u16.to_be_bytes());
        assert_eq!(Id::vnode(&p, 3), Id::hash(&bytes));
        assert_ne!(Id::vnode(&p, 3), Id::vnode(&p, 4));
        // SHA-1("abc") test vector
        assert_eq!(
            Id::hash(b"abc").to_hex(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    proptest! {
        #[test]
        fn add_sub_inverse(a in id(), b in id()) {
            prop_assert_eq!(a.wrapping_add(&b).wrapping_sub(&b), a);
            prop_assert_eq!(a.distance_to(&b).wrapping_add(&a), b);
        }

        #[test]
        fn open_interval_excludes_endpoints(x in id(), a in id(), b in id()) {
            if x.in_open(&a, &b) {
                prop_assert!(x != a && x != b);
            }
        }

        #[test]
        fn half_open_is_open_plus_end(x in id(), a in id(), b in id()) {
            let expect = x.in_open(&a, &b) || x == b;
            prop_assert_eq!(x.in_half_open(&a, &b), expect);
        }

        #[test]
        fn closed_open_is_open_plus_start(x in id(), a in id(), b in id()) {
            let expect = a == b || x.in_open(&a, &b) || x == a;
            prop_assert_eq!(x.in_closed_open(&a, &b), expect);
        }

        #[test]
        fn ring_partitions(x in id(), a in id(), b in id()) {
            // For a != b, every x is in exactly one of (a, b], (b, a].
            prop_assume!(a != b);
            prop_assert!(x.in_half_open(&a, &b) ^ x.in_half_open(&b, &a));
        }

        #[test]
        fn full_ring_cases(x in id(), a in id()) {
            prop_assert!(x.in_half_open(&a, &a));
            prop_assert_eq!(x.in_open(&a, &a), x != a);
        }

        #[test]
        fn open_interval_by_distance(x in id(), a in id(), b in id()) {
            // x ∈ (a, b) iff walking clockwise from a we meet x strictly before b.
            prop_assume!(a != b);
            let dx = a.distance_to(&x);
            let db = a.distance_to(&b);
            prop_assert_eq!(x.in_open(&a, &b), !dx.is_zero() && dx < db);
        }

        #[test]
        fn finger_start_in_interval(a in id(), i in 0usize..160) {
            let s = a.add_pow2(i);
            prop_assert!(s.in_half_open(&a, &a));
            prop_assert_eq!(a.distance_to(&s), Id::pow2(i));
        }
    }
}
