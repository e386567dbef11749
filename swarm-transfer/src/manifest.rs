//! Manifests and content ids.
//!
//! A manifest describes one file: its name, its size, its chunk size (a power of two;
//! BEP 3's common 2^18 bytes by default) and the BLAKE3 hash of every chunk. Its
//! *canonical encoding* is the wire frame of the manifest ([`peerlab_overlay::codec`]:
//! a version byte and CBOR with fields in declaration order, definite lengths, the chunk
//! hashes as one byte string), and the file's [`ContentId`] is the BLAKE3 hash of that
//! encoding. A manifest received from a peer is only used after [`Manifest::verify`]
//! has recomputed the id — so a peer cannot make us download the wrong file.
//!
//! Chunks are transferred in blocks of [`BLOCK_SIZE`] bytes (BEP 3's 2^14), the last
//! block of the last chunk may be shorter.

use std::fmt;

use bytes::Bytes;
use peerlab_overlay::{Id, codec};
use serde::{Deserialize, Serialize};

/// Bytes in one transfer block (BEP 3 requests are 2^14 bytes). Chunks smaller than
/// this are sent as a single block.
pub const BLOCK_SIZE: u32 = 16 * 1024;

/// Default chunk size: 2^18 bytes, the most common BitTorrent piece size, and the
/// largest [`auto_chunk_size`] picks while a file fits in [`MAX_CHUNKS`] of it.
pub const DEFAULT_CHUNK_SIZE: u32 = 256 * 1024;

/// Chunks [`auto_chunk_size`] aims for. A chunk is served only once it is verified, so
/// every hop a chunk takes through a swarm costs a whole chunk's transfer time: fewer,
/// larger chunks make the start (the first chunk a peer can pass on) and the end (the last
/// chunk's ~log2 N hops) slower. In the simulated flash crowd (`peerlab sim swarm`,
/// docs/experiments/swarm.md) 32 MiB in 64 KiB chunks reaches 0.82–0.84 of the
/// distribution bound where 256 KiB reaches 0.79–0.80, and 100 MiB in 128 KiB chunks
/// 0.90–0.92 where 256 KiB reaches 0.87–0.90.
pub const AUTO_TARGET_CHUNKS: u64 = 1024;

/// Smallest chunk [`auto_chunk_size`] picks (64 KiB, four blocks). Smaller chunks cost a
/// `Have` to every neighbour and a request round trip per few blocks: over 150 ms links
/// 32 KiB chunks made the simulated 32 MiB flash crowd slower than 256 KiB ones.
pub const AUTO_MIN_CHUNK_SIZE: u32 = 64 * 1024;

/// The chunk size for a file of `len` bytes: the power of two nearest above
/// `len / AUTO_TARGET_CHUNKS`, within [`AUTO_MIN_CHUNK_SIZE`]..=[`DEFAULT_CHUNK_SIZE`],
/// and then as large as [`MAX_CHUNKS`] needs (up to [`MAX_CHUNK_SIZE`]); like
/// libtorrent's automatic piece size, the chunk grows with the file.
pub fn auto_chunk_size(len: u64) -> u32 {
    let wanted = len
        .div_ceil(AUTO_TARGET_CHUNKS)
        .next_power_of_two()
        .clamp(AUTO_MIN_CHUNK_SIZE as u64, DEFAULT_CHUNK_SIZE as u64);
    let needed = len
        .div_ceil(MAX_CHUNKS as u64)
        .next_power_of_two()
        .min(MAX_CHUNK_SIZE as u64);
    wanted.max(needed) as u32
}

/// Smallest chunk size accepted (1 KiB): keeps per-chunk overhead (a 32-byte hash and a
/// bitfield bit) below 4 % of the data.
pub const MIN_CHUNK_SIZE: u32 = 1024;

/// Largest chunk size accepted (16 MiB): a chunk is buffered in memory until verified.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;

/// Most chunks in one manifest. 30 000 hashes (≈ 960 KB) keep a manifest inside the
/// codec's 1 MiB frame limit; at 256 KiB chunks that is files up to ≈ 7.3 GiB (larger
/// files need larger chunks).
pub const MAX_CHUNKS: u32 = 30_000;

/// Longest file name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Bytes in a BLAKE3 hash.
pub const HASH_LEN: usize = 32;

/// A file's content id: the BLAKE3 hash of its canonical manifest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContentId(#[serde(with = "serde_bytes")] pub [u8; HASH_LEN]);

impl ContentId {
    /// Where providers of this content are announced in the DHT: `Id::hash` (SHA-1) of
    /// the content id's bytes, like every other key on the ring.
    pub fn dht_key(&self) -> Id {
        Id::hash(&self.0)
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex_string(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<ContentId> {
        if s.len() != 2 * HASH_LEN || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; HASH_LEN];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ContentId(out))
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cid:{}", &self.to_hex()[..12])
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Why a manifest was refused. Nothing is stored or fetched for a refused manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The manifest's hash is not the content id it was fetched for.
    #[error("manifest hashes to {got:?}, expected {expected:?}")]
    CidMismatch {
        /// The content id asked for.
        expected: ContentId,
        /// The hash of the manifest received.
        got: ContentId,
    },
    /// The chunk size is not a power of two in the accepted range.
    #[error("chunk size {0} is not a power of two between 1 KiB and 16 MiB")]
    ChunkSize(u32),
    /// The number of chunk hashes does not match the size and chunk size.
    #[error("manifest lists {got} chunk hashes, the size needs {expected}")]
    HashCount {
        /// Hashes the size implies.
        expected: u64,
        /// Hashes present.
        got: u64,
    },
    /// The file has more chunks than [`MAX_CHUNKS`].
    #[error("{0} chunks exceed the limit of {MAX_CHUNKS}")]
    TooManyChunks(u64),
    /// The name is empty, too long, or names a path rather than a file.
    #[error("invalid file name")]
    Name,
}

/// A file's description: name, size, chunk size and per-chunk BLAKE3 hashes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    name: String,
    size: u64,
    chunk_size: u32,
    /// The chunk hashes concatenated (32 bytes each), one CBOR byte string.
    #[serde(with = "serde_bytes")]
    hashes: Vec<u8>,
}

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manifest")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("chunk_size", &self.chunk_size)
            .field("chunks", &self.chunk_count())
            .finish()
    }
}

impl Manifest {
    /// Describes `data` as a file called `name`, hashing every chunk.
    pub fn from_bytes(name: &str, data: &[u8], chunk_size: u32) -> Result<Manifest, ManifestError> {
        let mut b = ManifestBuilder::new(name, chunk_size)?;
        b.update(data);
        b.finish()
    }

    /// Checks the manifest's internal consistency (what [`Manifest::verify`] also does).
    pub fn validate(&self) -> Result<(), ManifestError> {
        validate_chunk_size(self.chunk_size)?;
        validate_name(&self.name)?;
        let expected = self.size.div_ceil(self.chunk_size as u64);
        if expected > MAX_CHUNKS as u64 {
            return Err(ManifestError::TooManyChunks(expected));
        }
        let got = (self.hashes.len() / HASH_LEN) as u64;
        if !self.hashes.len().is_multiple_of(HASH_LEN) || got != expected {
            return Err(ManifestError::HashCount { expected, got });
        }
        Ok(())
    }

    /// The canonical encoding (the manifest's wire frame).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Bounded by MAX_CHUNKS and MAX_NAME_LEN, so always within the codec's frame limit;
        // a manifest built outside those bounds fails `validate` before anyone encodes it.
        codec::encode_with_limit(self, usize::MAX).unwrap_or_default()
    }

    /// The content id: BLAKE3 of the canonical encoding.
    pub fn content_id(&self) -> ContentId {
        ContentId(*blake3::hash(&self.canonical_bytes()).as_bytes())
    }

    /// Checks that this manifest is consistent and is the one `cid` names.
    pub fn verify(&self, cid: &ContentId) -> Result<(), ManifestError> {
        self.validate()?;
        let got = self.content_id();
        if got != *cid {
            return Err(ManifestError::CidMismatch {
                expected: *cid,
                got,
            });
        }
        Ok(())
    }

    /// File name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// File size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Chunk size in bytes.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u32 {
        (self.hashes.len() / HASH_LEN) as u32
    }

    /// BLAKE3 hash of chunk `i`, `None` outside the file.
    pub fn chunk_hash(&self, i: u32) -> Option<[u8; HASH_LEN]> {
        let start = (i as usize).checked_mul(HASH_LEN)?;
        let slice = self.hashes.get(start..start + HASH_LEN)?;
        slice.try_into().ok()
    }

    /// Byte offset of chunk `i` in the file.
    pub fn chunk_offset(&self, i: u32) -> u64 {
        i as u64 * self.chunk_size as u64
    }

    /// Length of chunk `i` (the last one may be short; 0 outside the file).
    pub fn chunk_len(&self, i: u32) -> u32 {
        if i >= self.chunk_count() {
            return 0;
        }
        let start = self.chunk_offset(i);
        (self.size - start).min(self.chunk_size as u64) as u32
    }

    /// Block size inside chunks: [`BLOCK_SIZE`], or the chunk size if that is smaller.
    pub fn block_size(&self) -> u32 {
        BLOCK_SIZE.min(self.chunk_size)
    }

    /// Number of blocks in chunk `i`.
    pub fn block_count(&self, i: u32) -> u32 {
        self.chunk_len(i).div_ceil(self.block_size())
    }

    /// Length of block `b` of chunk `i`, `None` if the block is outside the file.
    pub fn block_len(&self, i: u32, b: u32) -> Option<u32> {
        let chunk_len = self.chunk_len(i);
        let start = b.checked_mul(self.block_size())?;
        if start >= chunk_len {
            return None;
        }
        Some((chunk_len - start).min(self.block_size()))
    }

    /// Whether `data` is chunk `i` (BLAKE3 of the blocks in order equals the manifest's hash).
    pub fn verify_chunk(&self, i: u32, blocks: &[Bytes]) -> bool {
        let Some(expected) = self.chunk_hash(i) else {
            return false;
        };
        let mut h = blake3::Hasher::new();
        let mut len = 0usize;
        for b in blocks {
            h.update(b);
            len += b.len();
        }
        len == self.chunk_len(i) as usize && *h.finalize().as_bytes() == expected
    }

    /// Whether the contiguous `data` is chunk `i`.
    pub fn verify_chunk_bytes(&self, i: u32, data: &[u8]) -> bool {
        self.chunk_hash(i).is_some_and(|e| {
            data.len() == self.chunk_len(i) as usize && *blake3::hash(data).as_bytes() == e
        })
    }
}

fn validate_chunk_size(c: u32) -> Result<(), ManifestError> {
    if c.is_power_of_two() && (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&c) {
        Ok(())
    } else {
        Err(ManifestError::ChunkSize(c))
    }
}

fn validate_name(name: &str) -> Result<(), ManifestError> {
    let bad = name.is_empty()
        || name.len() > MAX_NAME_LEN
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0']);
    if bad {
        Err(ManifestError::Name)
    } else {
        Ok(())
    }
}

/// Builds a manifest from a stream of bytes (so a large file need not be in memory).
#[derive(Debug)]
pub struct ManifestBuilder {
    name: String,
    chunk_size: u32,
    size: u64,
    hashes: Vec<u8>,
    current: blake3::Hasher,
    current_len: u32,
}

impl ManifestBuilder {
    /// Starts a manifest for a file called `name`.
    pub fn new(name: &str, chunk_size: u32) -> Result<ManifestBuilder, ManifestError> {
        validate_chunk_size(chunk_size)?;
        validate_name(name)?;
        Ok(ManifestBuilder {
            name: name.to_owned(),
            chunk_size,
            size: 0,
            hashes: Vec::new(),
            current: blake3::Hasher::new(),
            current_len: 0,
        })
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = ((self.chunk_size - self.current_len) as usize).min(data.len());
            self.current.update(&data[..take]);
            self.current_len += take as u32;
            self.size += take as u64;
            data = &data[take..];
            if self.current_len == self.chunk_size {
                self.close_chunk();
            }
        }
    }

    fn close_chunk(&mut self) {
        self.hashes
            .extend_from_slice(self.current.finalize().as_bytes());
        self.current = blake3::Hasher::new();
        self.current_len = 0;
    }

    /// Finishes the manifest.
    pub fn finish(mut self) -> Result<Manifest, ManifestError> {
        if self.current_len > 0 {
            self.close_chunk();
        }
        let m = Manifest {
            name: self.name,
            size: self.size,
            chunk_size: self.chunk_size,
            hashes: self.hashes,
        };
        m.validate()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn geometry_of_a_non_divisible_file() {
        let m = Manifest::from_bytes("f", &data(5000), 2048).unwrap();
        assert_eq!(m.chunk_count(), 3);
        assert_eq!(
            (m.chunk_len(0), m.chunk_len(2), m.chunk_len(3)),
            (2048, 904, 0)
        );
        assert_eq!(m.block_size(), 2048);
        assert_eq!(m.block_count(2), 1);
        assert_eq!(m.block_len(2, 0), Some(904));
        assert_eq!(m.block_len(2, 1), None);
        let big = Manifest::from_bytes("g", &data(300_000), DEFAULT_CHUNK_SIZE).unwrap();
        assert_eq!(big.block_count(0), 16);
        assert_eq!(
            big.block_count(1),
            (300_000u32 - 262_144).div_ceil(BLOCK_SIZE)
        );
        assert_eq!(
            big.block_len(1, 2),
            Some(300_000 - 262_144 - 2 * BLOCK_SIZE)
        );
    }

    #[test]
    fn auto_chunk_size_grows_with_the_file_within_its_bounds() {
        const MIB: u64 = 1 << 20;
        assert_eq!(auto_chunk_size(0), AUTO_MIN_CHUNK_SIZE);
        assert_eq!(auto_chunk_size(MIB), AUTO_MIN_CHUNK_SIZE);
        assert_eq!(auto_chunk_size(32 * MIB), 64 * 1024);
        assert_eq!(auto_chunk_size(64 * MIB + 1), 128 * 1024);
        assert_eq!(auto_chunk_size(100 * MIB), 128 * 1024);
        assert_eq!(auto_chunk_size(256 * MIB), DEFAULT_CHUNK_SIZE);
        assert_eq!(auto_chunk_size(4096 * MIB), DEFAULT_CHUNK_SIZE);
        // Past MAX_CHUNKS default chunks the chunk grows so the manifest still fits.
        let big = 10 * 1024 * MIB;
        let c = auto_chunk_size(big);
        assert_eq!(c, 512 * 1024);
        assert!(big.div_ceil(c as u64) <= MAX_CHUNKS as u64);
        assert_eq!(auto_chunk_size(u64::MAX), MAX_CHUNK_SIZE);
        for len in [0, 1, 5 * MIB, 777 * MIB, big] {
            assert!(validate_chunk_size(auto_chunk_size(len)).is_ok());
        }
    }

    #[test]
    fn empty_file_has_no_chunks() {
        let m = Manifest::from_bytes("empty", &[], 4096).unwrap();
        assert_eq!(m.chunk_count(), 0);
        assert!(m.verify(&m.content_id()).is_ok());
    }

    #[test]
    fn content_id_is_blake3_of_canonical_encoding_and_round_trips() {
        let m = Manifest::from_bytes("f", &data(10_000), 4096).unwrap();
        let frame = m.canonical_bytes();
        assert_eq!(m.content_id().0, *blake3::hash(&frame).as_bytes());
        let back: Manifest = codec::decode(&frame).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.canonical_bytes(), frame);
        assert!(back.verify(&m.content_id()).is_ok());
    }

    #[test]
    fn manifest_not_matching_its_cid_is_refused() {
        let m = Manifest::from_bytes("f", &data(10_000), 4096).unwrap();
        let cid = m.content_id();
        let mut forged = m.clone();
        forged.hashes[0] ^= 1;
        assert!(matches!(
            forged.verify(&cid),
            Err(ManifestError::CidMismatch { .. })
        ));
        let mut renamed = m.clone();
        renamed.name = "g".into();
        assert!(matches!(
            renamed.verify(&cid),
            Err(ManifestError::CidMismatch { .. })
        ));
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let m = Manifest::from_bytes("f", &data(10_000), 4096).unwrap();
        let mut short = m.clone();
        short.hashes.truncate(HASH_LEN);
        assert!(matches!(
            short.validate(),
            Err(ManifestError::HashCount {
                expected: 3,
                got: 1
            })
        ));
        let mut odd = m.clone();
        odd.chunk_size = 3000;
        assert_eq!(odd.validate(), Err(ManifestError::ChunkSize(3000)));
        assert_eq!(
            Manifest::from_bytes("../x", b"a", 4096),
            Err(ManifestError::Name)
        );
        assert_eq!(
            Manifest::from_bytes("", b"a", 4096),
            Err(ManifestError::Name)
        );
        let mut huge = m;
        huge.size = u64::MAX;
        assert!(matches!(
            huge.validate(),
            Err(ManifestError::TooManyChunks(_))
        ));
    }

    #[test]
    fn chunk_verification() {
        let d = data(10_000);
        let m = Manifest::from_bytes("f", &d, 4096).unwrap();
        let chunk = Bytes::copy_from_slice(&d[4096..8192]);
        assert!(m.verify_chunk(1, &[chunk.slice(..1000), chunk.slice(1000..)]));
        assert!(m.verify_chunk_bytes(1, &chunk));
        assert!(!m.verify_chunk(0, std::slice::from_ref(&chunk)));
        assert!(!m.verify_chunk(1, &[chunk.slice(..4095)]));
        assert!(!m.verify_chunk(9, &[chunk]));
    }

    #[test]
    fn builder_streaming_equals_one_shot() {
        let d = data(70_001);
        let mut b = ManifestBuilder::new("f", 8192).unwrap();
        for piece in d.chunks(777) {
            b.update(piece);
        }
        assert_eq!(
            b.finish().unwrap(),
            Manifest::from_bytes("f", &d, 8192).unwrap()
        );
    }

    #[test]
    fn cid_hex_round_trip() {
        let cid = Manifest::from_bytes("f", b"x", 4096).unwrap().content_id();
        assert_eq!(ContentId::from_hex(&cid.to_hex()), Some(cid));
        assert_eq!(ContentId::from_hex("zz"), None);
    }
}
