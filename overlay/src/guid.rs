//! 16-byte message identifiers, as in the Gnutella 0.6 header.
//!
//! Every Ping and Query (and every random walk) gets a fresh GUID from the seeded random
//! source. Nodes remember the GUIDs they have seen to drop duplicates and to route the
//! answers (Pongs, QueryHits) back along the reverse path.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Rng;

/// Length of a GUID in bytes (Gnutella 0.6: 16).
pub const GUID_LEN: usize = 16;

/// A 16-byte globally unique message identifier.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Guid(#[serde(with = "crate::id::serde_bytes_array")] pub [u8; GUID_LEN]);

impl Guid {
    /// A fresh random GUID drawn from the core's seeded random source.
    ///
    /// Gnutella 0.6 marks modern servents by setting byte 8 to 0xff and byte 15 to 0;
    /// we do the same so captured identifiers look like the real thing.
    pub fn random(rng: &mut Rng) -> Guid {
        let mut b = [0u8; GUID_LEN];
        rng.fill(&mut b);
        b[8] = 0xff;
        b[15] = 0;
        Guid(b)
    }

    /// A short hex form for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({})", self.short())
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_guids_differ_and_round_trip() {
        let mut rng = Rng::seed(5);
        let a = Guid::random(&mut rng);
        let b = Guid::random(&mut rng);
        assert_ne!(a, b);
        assert_eq!(a.0[8], 0xff);
        let bytes = crate::codec::encode(&a).unwrap();
        let back: Guid = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back, a);
    }
}
