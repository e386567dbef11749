//! Signed records and provider entries: what only their writer can say.
//!
//! A [`Record`] is signed by its writer's node key (Ed25519, the libp2p identity) over a
//! canonical encoding of everything a replica acts on: the key's ring id, the value (or
//! tombstone), the [`Version`], the writer's claim on the key ([`Record::since`]) and the
//! expiry. Every replica verifies the signature when a record reaches it (a `Put`, `Store`,
//! `Handoff` or repair) and a reader verifies what a `GetReply` returns, so no peer can
//! invent, alter or replay a record under another key. A [`ProviderEntry`] is signed by the
//! provider over the key and its expiry, so an owner can replicate provider sets and a
//! replica can check every entry.
//!
//! # Signed bytes
//!
//! Both signatures are domain-separated ([`Keypair::sign`]): the signed message is
//! `domain ‖ 0x00 ‖ payload`, with domains [`RECORD_DOMAIN`] and [`PROVIDER_DOMAIN`]. The
//! payloads are fixed-layout big-endian, never a serializer's output:
//!
//! ```text
//! record:   key (20) ‖ version.wall_ms (8) ‖ version.logical (4)
//!           ‖ since.wall_ms (8) ‖ since.logical (4) ‖ expires_ms (8)
//!           ‖ 0x00                          (tombstone)
//!           | 0x01 ‖ len (4) ‖ value (len)  (value)
//! provider: key (20) ‖ expires_ms (8)
//! ```
//!
//! The writer is not in the payload: it is the key that verifies, `version.writer`, and
//! `since.writer` must equal it.
//!
//! # Order and ownership
//!
//! Versions are hybrid logical clocks ([`crate::Hlc`]): wall-clock milliseconds, a
//! logical counter, the writer; they are totally ordered in that order. Between two
//! records of one writer, [`Record::beats`] decides: the newer version wins. Between
//! writers, ownership decides (see `store` and `core::admission`): a record held and
//! unexpired is replaced by another writer's only when a peer holding the key ahead of the
//! receiver (its owner) relays it and the held claim (`since`, the version of the writer's
//! first write of the key) is younger than [`CLAIM_WINDOW`]. Replicas that saw conflicting
//! first writes (two sides of a partition, two puts that reached two owners while the ring
//! changed) therefore converge on the owner's record, and a writer's self-chosen `since`
//! never wins a key by itself.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use peerlab_overlay::{Id, Keypair, PeerId, Signature};

/// Domain tag of record signatures.
pub const RECORD_DOMAIN: &str = "peerlab/dht/record/1";

/// Domain tag of provider-entry signatures.
pub const PROVIDER_DOMAIN: &str = "peerlab/dht/provider/1";

/// Longest a record may live: its expiry is at most this far past its version's wall time.
/// A week: lab runs and testnets need no republishing, yet a key whose writer went away (or
/// that someone squats on) is free again within a week.
pub const MAX_RECORD_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Largest clock skew tolerated: a version whose wall time is more than this ahead of the
/// receiver's clock is refused. NTP keeps honest clocks within well under a second; a
/// minute leaves room for a badly set one while a fast clock cannot win races for long
/// (a version far ahead would otherwise win every last-writer-wins race, or lock a key).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// How long after its first write a claim on a key can still be replaced by the owner's
/// record of another writer (conflicting first writes: racing puts, a short partition, a
/// write that reached a stale owner). After it, the claim is final until the record
/// expires, even against the owner: a peer that gains the owner's position later (by
/// joining there) cannot take old keys. Two skews plus a minute of churn: honest conflicts
/// meet within seconds.
pub const CLAIM_WINDOW: Duration = Duration::from_secs(3 * 60);

/// A write's version: a hybrid logical clock reading of its writer (Kulkarni et al.,
/// "Logical Physical Clocks", OPODIS 2014). Ordered by wall time, then logical counter,
/// then writer, so versions of different writers never tie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Physical part: the writer's wall clock in milliseconds since 1970, or a larger time
    /// the writer had seen.
    pub wall_ms: u64,
    /// Logical part: orders versions within one millisecond.
    pub logical: u32,
    /// The writing peer.
    pub writer: PeerId,
}

/// A stored value with its version; `value: None` is a tombstone (a versioned delete).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Version of this write.
    pub version: Version,
    /// The version of the writer's first write of this key: its claim. Same writer as
    /// `version`, not newer than it.
    pub since: Version,
    /// When the record expires, wall-clock milliseconds since 1970.
    pub expires_ms: u64,
    /// The value, or `None` for a delete.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// The writer's signature over the canonical encoding (module docs).
    pub signature: Signature,
}

/// Why a record is malformed regardless of who holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The signature does not verify under the writer's key for this ring id.
    #[error("signature does not verify")]
    BadSignature,
    /// `since` names another writer or is newer than the version.
    #[error("claim does not precede the version")]
    BadClaim,
    /// The expiry is further past the version than [`MAX_RECORD_TTL`].
    #[error("lifetime exceeds the limit")]
    TtlTooLong,
}

impl Record {
    /// A record of `value` under ring id `key`, signed by `key_pair` (whose peer id must be
    /// `version.writer` for the record to verify).
    pub fn sign(
        key: &Id,
        value: Option<Vec<u8>>,
        version: Version,
        since: Version,
        expires_ms: u64,
        key_pair: &Keypair,
    ) -> Record {
        let payload = record_payload(key, &version, &since, expires_ms, value.as_deref());
        let signature = key_pair.sign(RECORD_DOMAIN, &payload);
        Record {
            version,
            since,
            expires_ms,
            value,
            signature,
        }
    }

    /// The writer.
    pub fn writer(&self) -> PeerId {
        self.version.writer
    }

    /// Bytes of payload this record holds.
    pub fn value_len(&self) -> usize {
        self.value.as_ref().map_or(0, Vec::len)
    }

    /// Whether the record has expired at wall time `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_ms <= now_ms
    }

    /// Checks the record's own rules and its signature for ring id `key`.
    ///
    /// # Errors
    /// The first rule broken; the signature is checked last (it is the costly check).
    pub fn check(&self, key: &Id) -> Result<(), RecordError> {
        if self.since.writer != self.version.writer || self.since > self.version {
            return Err(RecordError::BadClaim);
        }
        let max_ms = self
            .version
            .wall_ms
            .saturating_add(MAX_RECORD_TTL.as_millis() as u64);
        if self.expires_ms > max_ms {
            return Err(RecordError::TtlTooLong);
        }
        let payload = record_payload(
            key,
            &self.version,
            &self.since,
            self.expires_ms,
            self.value.as_deref(),
        );
        if !self
            .version
            .writer
            .verify(RECORD_DOMAIN, &payload, &self.signature)
        {
            return Err(RecordError::BadSignature);
        }
        Ok(())
    }

    /// Whether this record supersedes `other` (a record of the same key by the same
    /// writer): it is the newer version. Records of different writers are not ordered
    /// by their own fields, which their writers choose: ownership decides between them
    /// (`store`).
    pub fn beats(&self, other: &Record) -> bool {
        self.writer() == other.writer() && self.version > other.version
    }
}

fn record_payload(
    key: &Id,
    version: &Version,
    since: &Version,
    expires_ms: u64,
    value: Option<&[u8]>,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + 12 + 12 + 8 + 5 + value.map_or(0, <[u8]>::len));
    b.extend_from_slice(&key.0);
    b.extend_from_slice(&version.wall_ms.to_be_bytes());
    b.extend_from_slice(&version.logical.to_be_bytes());
    b.extend_from_slice(&since.wall_ms.to_be_bytes());
    b.extend_from_slice(&since.logical.to_be_bytes());
    b.extend_from_slice(&expires_ms.to_be_bytes());
    match value {
        None => b.push(0),
        Some(v) => {
            b.push(1);
            // Values are bounded far below 4 GiB (`Config::max_value_size`); a longer one
            // saturates the length and cannot verify against a shorter one's signature.
            b.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_be_bytes());
            b.extend_from_slice(v);
        }
    }
    b
}

/// One provider of a key, signed by the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEntry {
    /// The providing peer.
    pub provider: PeerId,
    /// When the entry expires, wall-clock milliseconds since 1970.
    pub expires_ms: u64,
    /// The provider's signature over the key and the expiry.
    pub signature: Signature,
}

impl ProviderEntry {
    /// An entry announcing `key_pair`'s peer as a provider of ring id `key` until
    /// `expires_ms`.
    pub fn sign(key: &Id, expires_ms: u64, key_pair: &Keypair) -> ProviderEntry {
        ProviderEntry {
            provider: key_pair.peer_id(),
            expires_ms,
            signature: key_pair.sign(PROVIDER_DOMAIN, &provider_payload(key, expires_ms)),
        }
    }

    /// Whether the provider signed this entry for ring id `key`.
    pub fn verify(&self, key: &Id) -> bool {
        self.provider.verify(
            PROVIDER_DOMAIN,
            &provider_payload(key, self.expires_ms),
            &self.signature,
        )
    }
}

fn provider_payload(key: &Id, expires_ms: u64) -> [u8; 28] {
    let mut b = [0u8; 28];
    b[..20].copy_from_slice(&key.0);
    b[20..].copy_from_slice(&expires_ms.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(wall_ms: u64, logical: u32, writer: PeerId) -> Version {
        Version {
            wall_ms,
            logical,
            writer,
        }
    }

    fn rec(k: &Keypair, key: &Id, value: &[u8], at: u64) -> Record {
        let ver = v(at, 0, k.peer_id());
        Record::sign(key, Some(value.to_vec()), ver, ver, at + 1000, k)
    }

    #[test]
    fn a_record_verifies_only_unchanged_and_under_its_key() {
        let w = Keypair::synthetic(1);
        let key = Id::hash(b"k");
        let r = rec(&w, &key, b"v", 100);
        assert_eq!(r.check(&key), Ok(()));
        assert_eq!(
            r.check(&Id::hash(b"other")),
            Err(RecordError::BadSignature),
            "moved to another key"
        );
        let mut t = r.clone();
        t.value = Some(b"w".to_vec());
        assert_eq!(t.check(&key), Err(RecordError::BadSignature), "value");
        let mut t = r.clone();
        t.value = None;
        assert_eq!(t.check(&key), Err(RecordError::BadSignature), "tombstone");
        let mut t = r.clone();
        t.version.logical += 1;
        assert_eq!(t.check(&key), Err(RecordError::BadSignature), "version");
        let mut t = r.clone();
        t.expires_ms += 1;
        assert_eq!(t.check(&key), Err(RecordError::BadSignature), "expiry");
        let mut t = r.clone();
        t.since.wall_ms -= 1;
        assert_eq!(t.check(&key), Err(RecordError::BadSignature), "claim");
        // Another key pair cannot sign in the writer's name.
        let forged = Record::sign(
            &key,
            Some(b"x".to_vec()),
            r.version,
            r.since,
            r.expires_ms,
            &Keypair::synthetic(2),
        );
        assert_eq!(forged.check(&key), Err(RecordError::BadSignature));
    }

    #[test]
    fn record_rules_hold_whatever_the_signature() {
        let w = Keypair::synthetic(1);
        let key = Id::hash(b"k");
        let now = v(1000, 0, w.peer_id());
        let later = v(2000, 0, w.peer_id());
        let other = v(10, 0, PeerId::synthetic(2));
        let r = Record::sign(&key, None, now, later, 1500, &w);
        assert_eq!(
            r.check(&key),
            Err(RecordError::BadClaim),
            "claim after version"
        );
        let r = Record::sign(&key, None, now, other, 1500, &w);
        assert_eq!(
            r.check(&key),
            Err(RecordError::BadClaim),
            "claim of another"
        );
        let too_long = 1000 + MAX_RECORD_TTL.as_millis() as u64 + 1;
        let r = Record::sign(&key, None, now, now, too_long, &w);
        assert_eq!(r.check(&key), Err(RecordError::TtlTooLong));
        let r = Record::sign(&key, None, now, now, too_long - 1, &w);
        assert_eq!(r.check(&key), Ok(()));
    }

    #[test]
    fn only_a_newer_version_of_the_same_writer_supersedes() {
        let (a, b) = (Keypair::synthetic(1), Keypair::synthetic(2));
        let key = Id::hash(b"k");
        let a1 = rec(&a, &key, b"a1", 100);
        let mut a2 = a1.clone();
        a2.version.wall_ms = 300; // same claim, newer write
        let b1 = rec(&b, &key, b"b1", 200);
        assert!(a2.beats(&a1) && !a1.beats(&a2) && !a1.beats(&a1));
        // Whatever their dates, records of two writers never supersede one another.
        assert!(!a1.beats(&b1) && !a2.beats(&b1));
        assert!(!b1.beats(&a1) && !b1.beats(&a2));
    }

    #[test]
    fn provider_entries_verify_only_for_their_key_expiry_and_provider() {
        let p = Keypair::synthetic(5);
        let key = Id::hash(b"cid");
        let e = ProviderEntry::sign(&key, 7_000, &p);
        assert!(e.verify(&key));
        assert!(!e.verify(&Id::hash(b"other")));
        let mut t = e;
        t.expires_ms += 1;
        assert!(!t.verify(&key), "extended lifetime");
        let mut t = e;
        t.provider = PeerId::synthetic(6);
        assert!(!t.verify(&key), "someone else's name");
    }
}
