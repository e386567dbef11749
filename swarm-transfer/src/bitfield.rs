//! Bitfields: which chunks a peer holds (BEP 3's `bitfield` message).
//!
//! Bit `i` is bit `7 - i % 8` of byte `i / 8` (high bit first, as in BEP 3). Spare bits
//! in the last byte must be zero; a received bitfield with the wrong length or set spare
//! bits is refused.

use serde::{Deserialize, Serialize};

/// A fixed-length set of chunk indices.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bitfield {
    len: u32,
    #[serde(with = "serde_bytes")]
    bits: Vec<u8>,
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.count(), self.len)
    }
}

impl Bitfield {
    /// An empty bitfield of `len` bits.
    pub fn new(len: u32) -> Bitfield {
        Bitfield {
            len,
            bits: vec![0; len.div_ceil(8) as usize],
        }
    }

    /// A full bitfield of `len` bits.
    pub fn full(len: u32) -> Bitfield {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Rebuilds a bitfield from its bytes; `None` if the length is wrong or spare bits are set.
    pub fn from_bytes(len: u32, bits: Vec<u8>) -> Option<Bitfield> {
        let b = Bitfield { len, bits };
        b.is_well_formed().then_some(b)
    }

    /// Whether the byte length matches `len` and spare bits are zero.
    pub fn is_well_formed(&self) -> bool {
        if self.bits.len() != self.len.div_ceil(8) as usize {
            return false;
        }
        let spare = self.bits.len() as u32 * 8 - self.len;
        match self.bits.last() {
            Some(&last) if spare > 0 => last & ((1u8 << spare) - 1) == 0,
            _ => true,
        }
    }

    /// Number of bits.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the bitfield has no bits at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Whether bit `i` is set (`false` outside the range).
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bits[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Sets bit `i`; returns whether it was newly set (`false` outside the range).
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bits[(i / 8) as usize] |= 0x80 >> (i % 8);
        true
    }

    /// Clears bit `i`.
    pub fn clear(&mut self, i: u32) {
        if i < self.len {
            self.bits[(i / 8) as usize] &= !(0x80 >> (i % 8));
        }
    }

    /// Number of set bits.
    pub fn count(&self) -> u32 {
        self.bits.iter().map(|b| b.count_ones()).sum()
    }

    /// Whether every bit is set.
    pub fn is_complete(&self) -> bool {
        self.count() == self.len
    }

    /// Whether `self` has a bit that `other` lacks (same length assumed).
    pub fn has_any_missing_from(&self, other: &Bitfield) -> bool {
        self.bits.iter().zip(&other.bits).any(|(a, b)| a & !b != 0)
    }

    /// Indices of the set bits, ascending. Walks the bytes, not the bits: a whole byte of
    /// zeros costs one comparison (the picker and the request filler call this for every
    /// chunk started, on bitfields of up to `MAX_CHUNKS` bits).
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        let len = self.len;
        Ones::new(self.bits.iter().copied()).take_while(move |&i| i < len)
    }

    /// Indices set here and not in `other`, ascending: what a peer holding `self` has that
    /// a peer holding `other` lacks. Bits beyond `other`'s length count as not set there.
    pub fn ones_missing_from<'a>(&'a self, other: &'a Bitfield) -> impl Iterator<Item = u32> + 'a {
        let len = self.len;
        let bytes = self
            .bits
            .iter()
            .enumerate()
            .map(|(k, &a)| a & !other.bits.get(k).copied().unwrap_or(0));
        Ones::new(bytes).take_while(move |&i| i < len)
    }
}

/// The indices of the set bits of a byte sequence, high bit first (the bitfield layout).
struct Ones<I> {
    bytes: I,
    /// Index of the first bit after the current byte.
    next_base: u32,
    /// The bits of the current byte not yet returned.
    cur: u8,
}

impl<I> Ones<I> {
    fn new(bytes: I) -> Ones<I> {
        Ones {
            bytes,
            next_base: 0,
            cur: 0,
        }
    }
}

impl<I: Iterator<Item = u8>> Iterator for Ones<I> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        while self.cur == 0 {
            self.cur = self.bytes.next()?;
            self.next_base += 8;
        }
        let bit = self.cur.leading_zeros();
        self.cur &= !(0x80u8 >> bit);
        Some(self.next_base - 8 + bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count() {
        let mut b = Bitfield::new(10);
        assert_eq!(b.as_bytes().len(), 2);
        assert!(b.set(0) && b.set(9) && !b.set(9) && !b.set(10));
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert!(b.get(9) && !b.get(8) && !b.get(100));
        assert_eq!(b.count(), 2);
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![0, 9]);
        b.clear(0);
        assert_eq!(b.count(), 1);
        assert!(Bitfield::full(10).is_complete());
        assert!(Bitfield::new(0).is_complete());
    }

    #[test]
    fn malformed_bitfields_are_refused() {
        assert!(Bitfield::from_bytes(10, vec![0xff, 0xc0]).is_some());
        assert!(
            Bitfield::from_bytes(10, vec![0xff, 0xe0]).is_none(),
            "spare bit set"
        );
        assert!(Bitfield::from_bytes(10, vec![0xff]).is_none(), "too short");
        assert!(Bitfield::from_bytes(8, vec![0xff, 0]).is_none(), "too long");
        assert!(Bitfield::from_bytes(0, vec![]).is_some());
    }

    #[test]
    fn ones_walk_bytes_in_bit_order() {
        // Checked against the bit-by-bit definition on assorted patterns and lengths.
        let mut rng = peerlab_overlay::Rng::seed(7);
        for len in [0u32, 1, 7, 8, 9, 63, 64, 65, 1000] {
            let (mut a, mut b) = (Bitfield::new(len), Bitfield::new(len));
            for i in 0..len {
                if rng.below(3) == 0 {
                    a.set(i);
                }
                if rng.below(2) == 0 {
                    b.set(i);
                }
            }
            let slow: Vec<u32> = (0..len).filter(|&i| a.get(i)).collect();
            assert_eq!(a.ones().collect::<Vec<_>>(), slow, "len {len}");
            let slow: Vec<u32> = (0..len).filter(|&i| a.get(i) && !b.get(i)).collect();
            assert_eq!(
                a.ones_missing_from(&b).collect::<Vec<_>>(),
                slow,
                "len {len}"
            );
        }
        let full = Bitfield::full(13);
        assert_eq!(full.ones().count(), 13);
        assert_eq!(full.ones_missing_from(&Bitfield::new(5)).count(), 13);
        assert_eq!(full.ones_missing_from(&full).count(), 0);
    }

    #[test]
    fn missing_from() {
        let mut a = Bitfield::new(12);
        let mut b = Bitfield::new(12);
        a.set(11);
        assert!(a.has_any_missing_from(&b));
        b.set(11);
        assert!(!a.has_any_missing_from(&b));
    }
}
