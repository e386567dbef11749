//! The seeded random source handed to cores.
//!
//! xoshiro256++ (Blackman & Vigna, 2019): 32 bytes of state, fast, statistically strong for
//! simulation, and — implemented here in a dozen lines rather than borrowed from `rand` —
//! its output for a seed is fixed forever, so a seed replays a run on any machine and any
//! future build. The sampling helpers are implemented here too, on `next_u64`, for the same
//! reason. Small state matters: the simulator keeps one generator per node, 10^5 nodes.
//! Not for cryptography: identities and tokens come from the OS generator in the driver.

/// A deterministic random number generator (xoshiro256++).
#[derive(Clone, Debug)]
pub struct Rng([u64; 4]);

impl Rng {
    /// A generator from a 64-bit seed, expanded with SplitMix64 as the authors recommend.
    pub fn seed(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    /// An independent child generator (e.g. one per simulated node).
    pub fn fork(&mut self) -> Rng {
        Rng::seed(self.next_u64())
    }

    /// 64 uniformly random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    /// Uniform in `0..n`; `n` must be non-zero. Lemire's nearly-divisionless method.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            let lo = m as u64;
            if lo >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform index into a collection of `len` elements; `len` must be non-zero.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// Uniform in `[lo, hi)`; returns `lo` when the range is empty.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.below(hi - lo)
        }
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit_f64() < p
    }

    /// Exponentially distributed with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit_f64()).ln()
    }

    /// A uniformly random element, `None` if empty.
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            Some(&items[self.index(items.len())])
        }
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.index(i + 1);
            items.swap(i, j);
        }
    }

    /// `k` distinct indices from `0..n` (all of them, shuffled, when `k >= n`).
    pub fn sample_indices(&mut self, n: usize, k: usize) -> Vec<usize> {
        if k * 4 >= n {
            let mut all: Vec<usize> = (0..n).collect();
            self.shuffle(&mut all);
            all.truncate(k);
            return all;
        }
        let mut out = Vec::with_capacity(k);
        let mut seen = std::collections::BTreeSet::new();
        while out.len() < k {
            let i = self.index(n);
            if seen.insert(i) {
                out.push(i);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_reference_xoshiro256plusplus() {
        // Reference output of xoshiro256++ for state [1, 2, 3, 4] (Vigna's test vector).
        let mut r = Rng([1, 2, 3, 4]);
        let expect = [41943041u64, 58720359, 3588806011781223, 3591011842654386];
        for e in expect {
            assert_eq!(r.next_u64(), e);
        }
    }

    #[test]
    fn fill_covers_partial_words() {
        let mut a = Rng::seed(1);
        let mut buf = [0u8; 13];
        a.fill(&mut buf);
        let mut b = Rng::seed(1);
        let w0 = b.next_u64().to_le_bytes();
        let w1 = b.next_u64().to_le_bytes();
        assert_eq!(&buf[..8], &w0);
        assert_eq!(&buf[8..], &w1[..5]);
    }

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::seed(7);
        let mut b = Rng::seed(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::seed(7).next_u64(), Rng::seed(8).next_u64());
    }

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut r = Rng::seed(1);
        let mut hits = [0u32; 7];
        for _ in 0..7000 {
            hits[r.below(7) as usize] += 1;
        }
        assert!(hits.iter().all(|&h| (800..1200).contains(&h)), "{hits:?}");
    }

    #[test]
    fn sample_indices_distinct() {
        let mut r = Rng::seed(3);
        for (n, k) in [(10, 3), (10, 10), (1000, 5), (5, 9)] {
            let s = r.sample_indices(n, k);
            assert_eq!(s.len(), k.min(n));
            let set: std::collections::BTreeSet<_> = s.iter().collect();
            assert_eq!(set.len(), s.len());
            assert!(s.iter().all(|&i| i < n));
        }
    }
}
