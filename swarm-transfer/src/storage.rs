//! Chunk storage: the only module that touches files.
//!
//! The swarm core is sans-IO; it reads and writes chunks through the [`ChunkStore`]
//! trait and opens stores through a [`StoreFactory`]. Two stores exist:
//!
//! - [`MemoryStore`] keeps chunks as reference-counted [`Bytes`] blocks. The simulator
//!   uses it: a seeder's store slices one shared buffer, and a downloader stores the very
//!   `Bytes` it received, so serving a block onward copies nothing and a thousand
//!   simulated peers share one copy of the file.
//! - [`FileStore`] is what the real node uses. Data is written in place into a
//!   preallocated `<name>.part` file and a persisted bitfield (`<name>.part.bits`,
//!   replaced atomically by rename) lists the chunks known to be on disk. Durability is
//!   batched: a written chunk is held (served to others, counted by the core) at once,
//!   but it reaches the persisted bitfield only at the next *flush* — `fdatasync` of the
//!   data file first, then the bitfield — which happens once [`FLUSH_BYTES`] have been
//!   written since the last one, when [`FLUSH_INTERVAL`] has passed at a write, at
//!   completion and when the store is dropped. The persisted bitfield therefore only ever
//!   lists chunks whose data was synced before it was written, so a chunk interrupted
//!   half-way is never counted; a crash loses at most the chunks written since the last
//!   flush, which are simply fetched again. Re-opening resumes: every chunk the bitfield
//!   claims is read back and re-verified against the manifest, and whatever fails is
//!   fetched again. When every chunk is in, the file is synced and renamed to `<name>`.
//!
//!   The flushes that writes trigger run *behind* them, on a thread of their own (a
//!   write-behind store): the write that triggers one takes a snapshot of the chunks held
//!   — each already written to the file — and the flush thread syncs the data and then
//!   persists that snapshot, while the caller (the node's event loop) goes on. One flush
//!   runs at a time; a write that triggers the next while one is still running waits for
//!   it, so at most two batches ([`FLUSH_BYTES`] each) are unsynced and a disk slower than
//!   the network slows the writes down instead of letting dirty data pile up. A failed
//!   background flush is reported by the next write (that chunk is not stored) and its
//!   chunks are flushed again. [`FileStore::flush`], completion and drop flush in the
//!   caller's thread, after the background flush in flight.
//!
//! The store does I/O and reads the wall clock (only to decide when to flush); the swarm
//! core itself stays sans-IO and never sees either.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::bitfield::Bitfield;
use crate::manifest::{MAX_CHUNKS, Manifest, ManifestBuilder, ManifestError};

/// Why a store operation failed. A failed write leaves the chunk not held.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The chunk or block lies outside the file.
    #[error("chunk {chunk} (offset {offset}, length {len}) is outside the file")]
    OutOfRange {
        /// Chunk index.
        chunk: u32,
        /// Offset inside the chunk.
        offset: u32,
        /// Length asked for.
        len: u32,
    },
    /// The chunk is not held (yet).
    #[error("chunk {0} is not held")]
    NotHeld(u32),
    /// The data does not hash to the manifest's chunk hash; nothing was written.
    #[error("chunk {0} does not match its hash")]
    HashMismatch(u32),
    /// A file with the final name exists and is not this content.
    #[error("{0} exists and does not match the manifest")]
    Conflict(PathBuf),
    /// The manifest could not be built.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// An operating-system error.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Where the core keeps a transfer's chunks.
pub trait ChunkStore {
    /// The chunks held and verified.
    fn held(&self) -> &Bitfield;

    /// `len` bytes at `offset` inside held chunk `chunk`.
    fn read_block(&mut self, chunk: u32, offset: u32, len: u32) -> Result<Bytes, StoreError>;

    /// Verifies a complete chunk, given as its blocks in order, against the manifest and
    /// stores it; on success the chunk is held.
    ///
    /// The store is the one place a received chunk is verified (one BLAKE3 pass per chunk;
    /// the core relies on this): blocks that do not hash to the manifest's chunk hash give
    /// [`StoreError::HashMismatch`], and nothing is written or marked held, so a store never
    /// holds or serves an unverified chunk. `Ok` therefore also tells the caller that the
    /// blocks were the right ones (the core's smart ban compares earlier corrupt blocks
    /// with them).
    fn write_chunk(&mut self, chunk: u32, blocks: &[Bytes]) -> Result<(), StoreError>;

    /// Called once every chunk is held (moves the file into place).
    fn finish(&mut self) -> Result<(), StoreError>;
}

/// Opens stores for the core when a download's manifest arrives.
pub trait StoreFactory {
    /// The store type.
    type Store: ChunkStore;

    /// Opens (or resumes) the store for `manifest`.
    fn open(&mut self, manifest: &Manifest) -> Result<Self::Store, StoreError>;
}

/// Chunks in memory as `Bytes` blocks (zero-copy forwarding).
#[derive(Debug, Clone)]
pub struct MemoryStore {
    chunks: Vec<Option<Box<[Bytes]>>>,
    held: Bitfield,
    block_size: u32,
    /// What written chunks are verified against.
    manifest: Manifest,
}

impl MemoryStore {
    /// An empty store for `manifest`.
    pub fn empty(manifest: &Manifest) -> MemoryStore {
        let n = manifest.chunk_count();
        MemoryStore {
            chunks: vec![None; n as usize],
            held: Bitfield::new(n),
            block_size: manifest.block_size(),
            manifest: manifest.clone(),
        }
    }

    /// A store holding the whole file `data`, as slices of it (no copy).
    ///
    /// The data is trusted to match the manifest (it is the original).
    pub fn full(manifest: &Manifest, data: Bytes) -> MemoryStore {
        let mut s = MemoryStore::empty(manifest);
        for c in 0..manifest.chunk_count() {
            let start = manifest.chunk_offset(c) as usize;
            let blocks: Box<[Bytes]> = (0..manifest.block_count(c))
                .filter_map(|b| {
                    let len = manifest.block_len(c, b)? as usize;
                    let off = start + (b * s.block_size) as usize;
                    Some(data.slice(off..off + len))
                })
                .collect();
            s.chunks[c as usize] = Some(blocks);
            s.held.set(c);
        }
        s
    }

    /// The whole file if every chunk is held.
    pub fn contents(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for c in &self.chunks {
            for b in c.as_deref()? {
                out.extend_from_slice(b);
            }
        }
        Some(out)
    }

    /// BLAKE3 of the whole file if every chunk is held (streamed, no copy).
    pub fn file_hash(&self) -> Option<blake3::Hash> {
        let mut h = blake3::Hasher::new();
        for c in &self.chunks {
            for b in c.as_deref()? {
                h.update(b);
            }
        }
        Some(h.finalize())
    }

    /// The stored blocks of chunk `c`.
    pub fn chunk_blocks(&self, c: u32) -> Option<&[Bytes]> {
        self.chunks.get(c as usize)?.as_deref()
    }
}

impl ChunkStore for MemoryStore {
    fn held(&self) -> &Bitfield {
        &self.held
    }

    fn read_block(&mut self, chunk: u32, offset: u32, len: u32) -> Result<Bytes, StoreError> {
        let range = StoreError::OutOfRange { chunk, offset, len };
        let blocks = match self.chunks.get(chunk as usize) {
            None => return Err(range),
            Some(None) => return Err(StoreError::NotHeld(chunk)),
            Some(Some(b)) => b,
        };
        // The common case: a whole stored block, shared rather than copied.
        if offset.is_multiple_of(self.block_size)
            && let Some(b) = blocks.get((offset / self.block_size) as usize)
            && b.len() == len as usize
        {
            return Ok(b.clone());
        }
        let mut out = Vec::with_capacity(len as usize);
        let mut skip = offset as usize;
        for b in blocks.iter() {
            if out.len() == len as usize {
                break;
            }
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            let take = (b.len() - skip).min(len as usize - out.len());
            out.extend_from_slice(&b[skip..skip + take]);
            skip = 0;
        }
        if out.len() != len as usize {
            return Err(range);
        }
        Ok(Bytes::from(out))
    }

    fn write_chunk(&mut self, chunk: u32, blocks: &[Bytes]) -> Result<(), StoreError> {
        let slot = self
            .chunks
            .get_mut(chunk as usize)
            .ok_or(StoreError::OutOfRange {
                chunk,
                offset: 0,
                len: 0,
            })?;
        if !self.manifest.verify_chunk(chunk, blocks) {
            return Err(StoreError::HashMismatch(chunk));
        }
        *slot = Some(blocks.to_vec().into_boxed_slice());
        self.held.set(chunk);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Opens [`MemoryStore`]s (the simulator's factory).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryFactory;

impl StoreFactory for MemoryFactory {
    type Store = MemoryStore;
    fn open(&mut self, manifest: &Manifest) -> Result<MemoryStore, StoreError> {
        Ok(MemoryStore::empty(manifest))
    }
}

/// Magic bytes at the start of a persisted bitfield file.
const BITS_MAGIC: &[u8; 8] = b"PLSWBF01";

/// Bytes written since the last flush that trigger the next one.
///
/// Each flush costs one `fdatasync` of the data file plus a write, `fsync` and rename of
/// the bitfield file — about 12 ms on the build VM's ext4 disk, which per 256 KiB chunk
/// capped a fetch near 20 MiB/s. Batching 8 MiB (32 chunks of 256 KiB) makes that cost
/// negligible while bounding what a crash can lose to 8 MiB that is fetched again.
pub const FLUSH_BYTES: u64 = 8 << 20;

/// Longest time written chunks wait for a flush while writes keep arriving.
///
/// On a slow download [`FLUSH_BYTES`] may take long to fill; this bounds the progress a
/// crash loses to about one second of transfer. It is checked at each write (the store
/// has no timer), so a stalled download keeps its unflushed chunks until the next write,
/// completion or drop — still at most [`FLUSH_BYTES`].
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// When a [`FileStore`] makes its written chunks durable (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Flush once this many bytes were written since the last flush. Default
    /// [`FLUSH_BYTES`].
    pub bytes: u64,
    /// Flush at a write once this long has passed since the last flush. Default
    /// [`FLUSH_INTERVAL`].
    pub interval: Duration,
}

impl Default for FlushPolicy {
    fn default() -> FlushPolicy {
        FlushPolicy {
            bytes: FLUSH_BYTES,
            interval: FLUSH_INTERVAL,
        }
    }
}

/// Bytes of recently read chunks kept in memory, so the blocks of one chunk are served
/// from one read instead of a system call, an allocation and a copy per block.
///
/// Requesters ask for the blocks of a chunk back to back (strict priority in the
/// picker) and a seeder serves a few peers at once; 4 MiB holds 16 chunks of the default
/// 256 KiB. A chunk larger than this is not cached (its blocks are read one by one).
pub const READ_CACHE_BYTES: usize = 4 << 20;

/// A file written in place, resumable (see the module docs).
#[derive(Debug)]
pub struct FileStore {
    manifest: Manifest,
    final_path: PathBuf,
    part_path: PathBuf,
    bits_path: PathBuf,
    file: File,
    /// Chunks written and verified (held), whether or not they are flushed yet.
    held: Bitfield,
    /// When written chunks are made durable.
    policy: FlushPolicy,
    /// Bytes written since the last flush (0: the bitfield on disk is up to date).
    unflushed: u64,
    /// When the last flush happened (or the store was opened).
    last_flush: Instant,
    /// The flush running behind the writes, and the bytes it covers.
    flushing: Option<(std::thread::JoinHandle<Result<(), StoreError>>, u64)>,
    /// Recently read chunks, newest last, at most [`READ_CACHE_BYTES`] in all.
    read_cache: VecDeque<(u32, Bytes)>,
    finished: bool,
}

impl FileStore {
    /// Opens the download of `manifest` into directory `dir`: resumes a `.part` file
    /// (re-verifying every chunk its bitfield claims), adopts a complete file already at
    /// the final name, or starts a new preallocated `.part` file.
    pub fn open(dir: &Path, manifest: &Manifest) -> Result<FileStore, StoreError> {
        manifest.validate()?;
        let final_path = dir.join(manifest.name());
        let part_path = dir.join(format!("{}.part", manifest.name()));
        let bits_path = dir.join(format!("{}.part.bits", manifest.name()));
        if final_path.exists() && !part_path.exists() {
            let store = FileStore::seed(&final_path, manifest)?;
            return Ok(store);
        }
        fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part_path)?;
        if file.metadata()?.len() != manifest.size() {
            // Preallocate (sparse where the file system allows).
            file.set_len(manifest.size())?;
        }
        let mut store = FileStore {
            manifest: manifest.clone(),
            final_path,
            part_path,
            bits_path,
            file,
            held: Bitfield::new(manifest.chunk_count()),
            policy: FlushPolicy::default(),
            unflushed: 0,
            last_flush: now(),
            flushing: None,
            read_cache: VecDeque::new(),
            finished: false,
        };
        let claimed = store.load_bits();
        let mut buf = Vec::new();
        for c in claimed.ones() {
            if store.read_chunk(c, &mut buf).is_ok() && manifest.verify_chunk_bytes(c, &buf) {
                store.held.set(c);
            }
        }
        store.save_bits()?;
        Ok(store)
    }

    /// Serves an existing complete file at `path` (every chunk is verified first).
    pub fn seed(path: &Path, manifest: &Manifest) -> Result<FileStore, StoreError> {
        manifest.validate()?;
        let file = OpenOptions::new().read(true).open(path)?;
        let mut store =
            FileStore::complete(path, manifest, file, Bitfield::new(manifest.chunk_count()));
        if store.file.metadata()?.len() != manifest.size() {
            return Err(StoreError::Conflict(path.to_owned()));
        }
        let mut buf = Vec::new();
        for c in 0..manifest.chunk_count() {
            store.read_chunk(c, &mut buf)?;
            if !manifest.verify_chunk_bytes(c, &buf) {
                return Err(StoreError::Conflict(path.to_owned()));
            }
            store.held.set(c);
        }
        Ok(store)
    }

    /// Shares the file at `path` (named by its file name): builds its manifest and a store
    /// serving it from one read of the file, where [`manifest_from_file`] then
    /// [`FileStore::seed`] read it twice (the second pass only re-hashes what the first
    /// just hashed). Fails with [`StoreError::Conflict`] if the file's length changed while
    /// it was read; a chunk count over [`MAX_CHUNKS`] is refused before any of it is read.
    pub fn share(path: &Path, chunk_size: u32) -> Result<(Manifest, FileStore), StoreError> {
        let mut file = OpenOptions::new().read(true).open(path)?;
        // (A zero chunk size is left to the manifest builder, which names it.)
        let chunks = file
            .metadata()?
            .len()
            .div_ceil(u64::from(chunk_size.max(1)));
        if chunk_size > 0 && chunks > u64::from(MAX_CHUNKS) {
            return Err(ManifestError::TooManyChunks(chunks).into());
        }
        let manifest = manifest_from_reader(path, chunk_size, &mut file)?;
        if file.metadata()?.len() != manifest.size() {
            return Err(StoreError::Conflict(path.to_owned()));
        }
        let held = Bitfield::full(manifest.chunk_count());
        let store = FileStore::complete(path, &manifest, file, held);
        Ok((manifest, store))
    }

    /// A store for a complete file at its final name, holding the chunks in `held`.
    fn complete(path: &Path, manifest: &Manifest, file: File, held: Bitfield) -> FileStore {
        FileStore {
            manifest: manifest.clone(),
            final_path: path.to_owned(),
            part_path: path.to_owned(),
            bits_path: path.to_owned(),
            file,
            held,
            policy: FlushPolicy::default(),
            unflushed: 0,
            last_flush: now(),
            flushing: None,
            read_cache: VecDeque::new(),
            finished: true,
        }
    }

    /// Whether the file is complete and at its final name.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Where the complete file is (or will be).
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    fn read_chunk(&mut self, c: u32, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.resize(self.manifest.chunk_len(c) as usize, 0);
        self.file.read_exact_at(buf, self.manifest.chunk_offset(c))
    }

    /// Makes every chunk written so far durable: syncs the data, then persists the
    /// bitfield. Until this returns, a crash leaves those chunks unclaimed on disk (they
    /// are fetched again), never claimed but missing.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.settle()?;
        if self.finished || self.unflushed == 0 {
            return Ok(());
        }
        // Data first, then the bits: the bitfield never lists a chunk whose data was not
        // synced before it was written.
        self.file.sync_data()?;
        self.save_bits()?;
        self.unflushed = 0;
        self.last_flush = now();
        Ok(())
    }

    /// Waits for the flush running behind the writes, if any; its error, if it failed
    /// (its chunks then count as unflushed again, for the next flush).
    pub fn settle(&mut self) -> Result<(), StoreError> {
        let Some((task, bytes)) = self.flushing.take() else {
            return Ok(());
        };
        let r = task
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the flush thread panicked").into()));
        if r.is_err() {
            self.unflushed += bytes;
        }
        r
    }

    /// Starts a flush behind the writes (see the module docs), after the one running.
    fn flush_behind(&mut self) -> Result<(), StoreError> {
        self.settle()?;
        // Every chunk in the snapshot is in the file already: the sync covers it.
        let bits = self.held.clone();
        let file = self.file.try_clone()?;
        let (path, cid) = (self.bits_path.clone(), self.manifest.content_id());
        let task = std::thread::Builder::new()
            .name("chunk-flush".into())
            .spawn(move || {
                file.sync_data()?;
                write_bits(&path, &cid.0, &bits)
            })?;
        self.flushing = Some((task, self.unflushed));
        self.unflushed = 0;
        self.last_flush = now();
        Ok(())
    }

    /// Replaces the flush policy (the default is [`FlushPolicy::default`]).
    pub fn set_flush_policy(&mut self, policy: FlushPolicy) {
        self.policy = policy;
    }

    /// Number of bytes written but not yet flushed (tests and metrics).
    pub fn unflushed_bytes(&self) -> u64 {
        self.unflushed
    }

    /// Writes `blocks` contiguously at `offset`, in as few system calls as possible.
    fn write_blocks_at(&mut self, offset: u64, blocks: &[Bytes]) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(offset))?;
        let mut slices: Vec<IoSlice<'_>> = blocks.iter().map(|b| IoSlice::new(b)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match self.file.write_vectored(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Chunk `c` as one shared buffer, from the read cache or read once from the file;
    /// `None` if the chunk is too large to cache.
    fn cached_chunk(&mut self, c: u32) -> io::Result<Option<Bytes>> {
        if let Some((_, b)) = self.read_cache.iter().find(|(k, _)| *k == c) {
            return Ok(Some(b.clone()));
        }
        let len = self.manifest.chunk_len(c) as usize;
        if len > READ_CACHE_BYTES {
            return Ok(None);
        }
        let mut cached: usize = self.read_cache.iter().map(|(_, b)| b.len()).sum();
        while cached + len > READ_CACHE_BYTES {
            let Some((_, old)) = self.read_cache.pop_front() else {
                break;
            };
            cached -= old.len();
        }
        let mut buf = Vec::new();
        self.read_chunk(c, &mut buf)?;
        let b = Bytes::from(buf);
        self.read_cache.push_back((c, b.clone()));
        Ok(Some(b))
    }

    /// The bitfield persisted on disk; empty if missing or damaged.
    fn load_bits(&self) -> Bitfield {
        let n = self.manifest.chunk_count();
        let Ok(raw) = fs::read(&self.bits_path) else {
            return Bitfield::new(n);
        };
        let cid = self.manifest.content_id();
        let header = BITS_MAGIC.len() + cid.0.len();
        if raw.len() < header || &raw[..8] != BITS_MAGIC || raw[8..header] != cid.0 {
            return Bitfield::new(n);
        }
        Bitfield::from_bytes(n, raw[header..].to_vec()).unwrap_or_else(|| Bitfield::new(n))
    }

    /// Persists the bitfield atomically (see [`write_bits`]).
    fn save_bits(&self) -> Result<(), StoreError> {
        write_bits(&self.bits_path, &self.manifest.content_id().0, &self.held)
    }
}

/// Persists bitfield `bits` of content `cid` at `path` atomically: write a temporary file,
/// sync it, rename it.
fn write_bits(path: &Path, cid: &[u8], bits: &Bitfield) -> Result<(), StoreError> {
    let tmp = path.with_extension("bits.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(BITS_MAGIC)?;
    f.write_all(cid)?;
    f.write_all(bits.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}

impl ChunkStore for FileStore {
    fn held(&self) -> &Bitfield {
        &self.held
    }

    fn read_block(&mut self, chunk: u32, offset: u32, len: u32) -> Result<Bytes, StoreError> {
        let chunk_len = self.manifest.chunk_len(chunk);
        if chunk >= self.manifest.chunk_count() || offset as u64 + len as u64 > chunk_len as u64 {
            return Err(StoreError::OutOfRange { chunk, offset, len });
        }
        if !self.held.get(chunk) {
            return Err(StoreError::NotHeld(chunk));
        }
        // Held chunks never change, so a cached copy never goes stale.
        if let Some(whole) = self.cached_chunk(chunk)? {
            return Ok(whole.slice(offset as usize..(offset + len) as usize));
        }
        let mut buf = vec![0; len as usize];
        self.file
            .read_exact_at(&mut buf, self.manifest.chunk_offset(chunk) + offset as u64)?;
        Ok(Bytes::from(buf))
    }

    fn write_chunk(&mut self, chunk: u32, blocks: &[Bytes]) -> Result<(), StoreError> {
        if chunk >= self.manifest.chunk_count() {
            return Err(StoreError::OutOfRange {
                chunk,
                offset: 0,
                len: 0,
            });
        }
        // The only verification of a received chunk (see the trait): nothing unverified is
        // written, held or served. A chunk already held is not written again, but `Ok` still
        // means these blocks are the right ones.
        if !self.manifest.verify_chunk(chunk, blocks) {
            return Err(StoreError::HashMismatch(chunk));
        }
        if self.held.get(chunk) {
            return Ok(());
        }
        // A background flush that failed is reported here (its chunks are flushed again).
        if self.flushing.as_ref().is_some_and(|(t, _)| t.is_finished()) {
            self.settle()?;
        }
        self.write_blocks_at(self.manifest.chunk_offset(chunk), blocks)?;
        // Held (and servable) now; durable at the next flush, which syncs the data
        // before it lists the chunk in the bitfield on disk.
        self.held.set(chunk);
        self.unflushed += self.manifest.chunk_len(chunk) as u64;
        if (self.unflushed >= self.policy.bytes
            || now().duration_since(self.last_flush) >= self.policy.interval)
            && let Err(e) = self.flush_behind()
        {
            // The caller learns that this chunk was not stored, so store and caller agree:
            // it is not held, and the earlier unflushed ones wait for the next flush.
            self.held.clear(chunk);
            self.unflushed -= self.manifest.chunk_len(chunk) as u64;
            return Err(e);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StoreError> {
        if self.finished {
            return Ok(());
        }
        if !self.held.is_complete() {
            return Err(StoreError::NotHeld(
                (0..self.held.len())
                    .find(|&c| !self.held.get(c))
                    .unwrap_or(0),
            ));
        }
        // Everything is written: one sync covers the last batch, and the bitfield is
        // removed below, so no final bitfield write is needed.
        self.settle()?;
        self.file.sync_all()?;
        self.unflushed = 0;
        fs::rename(&self.part_path, &self.final_path)?;
        let _ = fs::remove_file(&self.bits_path);
        self.part_path = self.final_path.clone();
        self.bits_path = self.final_path.clone();
        self.finished = true;
        Ok(())
    }
}

impl Drop for FileStore {
    /// A store closed in an orderly way (node shutdown, transfer dropped) flushes, so a
    /// restart resumes from everything written. Errors cannot be reported here; the
    /// unflushed chunks are then fetched again after the restart.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// The wall clock, read only to decide when to flush (never seen by the core).
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// Opens [`FileStore`]s under one download directory (the real node's factory).
#[derive(Debug, Clone)]
pub struct FileFactory {
    /// Directory downloads are written to.
    pub dir: PathBuf,
}

impl StoreFactory for FileFactory {
    type Store = FileStore;
    fn open(&mut self, manifest: &Manifest) -> Result<FileStore, StoreError> {
        FileStore::open(&self.dir, manifest)
    }
}

/// Builds the manifest of the file at `path` (named by its file name), streaming it.
pub fn manifest_from_file(path: &Path, chunk_size: u32) -> Result<Manifest, StoreError> {
    manifest_from_reader(path, chunk_size, &mut File::open(path)?)
}

/// Builds the manifest of what `f` reads to its end, named by `path`'s file name.
fn manifest_from_reader(
    path: &Path,
    chunk_size: u32,
    f: &mut impl Read,
) -> Result<Manifest, StoreError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or(StoreError::Manifest(ManifestError::Name))?;
    let mut b = ManifestBuilder::new(name, chunk_size)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        b.update(&buf[..n]);
    }
    Ok(b.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(seed).wrapping_add((i >> 8) as u8))
            .collect()
    }

    fn blocks_of(m: &Manifest, d: &[u8], c: u32) -> Vec<Bytes> {
        let start = m.chunk_offset(c) as usize;
        (0..m.block_count(c))
            .map(|b| {
                let off = start + (b * m.block_size()) as usize;
                Bytes::copy_from_slice(&d[off..off + m.block_len(c, b).unwrap() as usize])
            })
            .collect()
    }

    #[test]
    fn memory_store_shares_blocks() {
        let d = Bytes::from(data(100_000, 7));
        let m = Manifest::from_bytes("f", &d, 32 * 1024).unwrap();
        let mut full = MemoryStore::full(&m, d.clone());
        let b = full.read_block(1, 16 * 1024, 16 * 1024).unwrap();
        assert_eq!(&b[..], &d[48 * 1024..64 * 1024]);
        // Zero-copy: the block points into the original buffer.
        assert_eq!(b.as_ptr(), d[48 * 1024..].as_ptr());
        assert_eq!(full.read_block(0, 100, 50).unwrap(), d.slice(100..150));
        assert!(matches!(
            full.read_block(9, 0, 1),
            Err(StoreError::OutOfRange { .. })
        ));
        let mut empty = MemoryStore::empty(&m);
        assert!(matches!(
            empty.read_block(0, 0, 1),
            Err(StoreError::NotHeld(0))
        ));
        assert_eq!(full.file_hash(), Some(blake3::hash(&d)));
        assert_eq!(empty.file_hash(), None);
    }

    #[test]
    fn file_store_refuses_unverified_data_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let d = data(10_000, 3);
        let m = Manifest::from_bytes("f.bin", &d, 4096).unwrap();
        let mut s = FileStore::open(dir.path(), &m).unwrap();
        let mut bad = blocks_of(&m, &d, 1);
        bad[0] = Bytes::from(vec![0u8; bad[0].len()]);
        assert!(matches!(
            s.write_chunk(1, &bad),
            Err(StoreError::HashMismatch(1))
        ));
        assert!(!s.held().get(1));
        drop(s);
        let on_disk = fs::read(dir.path().join("f.bin.part")).unwrap();
        assert!(on_disk.iter().all(|&b| b == 0), "nothing written");
    }

    #[test]
    fn stores_verify_every_chunk_even_one_already_held() {
        // The store is the only place a received chunk is verified (the core relies on
        // it): both stores refuse wrong blocks, and `Ok` for a held chunk still means the
        // blocks matched.
        let dir = tempfile::tempdir().unwrap();
        let d = data(10_000, 9);
        let m = Manifest::from_bytes("f.bin", &d, 4096).unwrap();
        let good = blocks_of(&m, &d, 1);
        let mut bad = good.clone();
        bad[0] = Bytes::from(vec![0u8; bad[0].len()]);
        let mut mem = MemoryStore::empty(&m);
        assert!(matches!(
            mem.write_chunk(1, &bad),
            Err(StoreError::HashMismatch(1))
        ));
        assert!(!mem.held().get(1));
        assert!(matches!(
            mem.read_block(1, 0, 1),
            Err(StoreError::NotHeld(1))
        ));
        // Short data (a missing block) is refused too.
        assert!(matches!(
            mem.write_chunk(1, &good[..0]),
            Err(StoreError::HashMismatch(1))
        ));
        mem.write_chunk(1, &good).unwrap();
        assert!(matches!(
            mem.write_chunk(1, &bad),
            Err(StoreError::HashMismatch(1))
        ));
        assert_eq!(mem.chunk_blocks(1).unwrap(), &good[..]);

        let mut file = FileStore::open(dir.path(), &m).unwrap();
        file.write_chunk(1, &good).unwrap();
        assert!(matches!(
            file.write_chunk(1, &bad),
            Err(StoreError::HashMismatch(1))
        ));
        assert!(file.held().get(1));
        assert_eq!(&file.read_block(1, 0, 4096).unwrap()[..], &d[4096..8192]);
    }

    /// Drives one swarm core over a [`FileStore`] by hand.
    struct FileCore {
        core: crate::swarm::Swarm<FileFactory>,
        rng: peerlab_overlay::Rng,
        sent: Vec<(peerlab_overlay::PeerId, crate::wire::Body)>,
        events: Vec<crate::swarm::Event>,
        cid: crate::manifest::ContentId,
    }

    impl FileCore {
        fn step(
            &mut self,
            f: impl FnOnce(
                &mut crate::swarm::Swarm<FileFactory>,
                &mut peerlab_overlay::Cx<'_, crate::swarm::Swarm<FileFactory>>,
            ),
        ) {
            use peerlab_overlay::{Context, Instant, Outbox, Output};
            let mut out = Outbox::new();
            f(
                &mut self.core,
                &mut Context::new(Instant(1_000_000), &mut self.rng, &mut out),
            );
            for o in out.drain() {
                match o {
                    Output::Send { to, msg } => self.sent.push((to, msg.body)),
                    Output::Event(e) => self.events.push(e),
                    Output::Timer { .. } | Output::Offence { .. } => {}
                }
            }
        }

        fn deliver(&mut self, from: peerlab_overlay::PeerId, body: crate::wire::Body) {
            use peerlab_overlay::Protocol;
            let msg = crate::wire::Message {
                cid: self.cid,
                body,
            };
            self.step(|c, cx| c.handle_message(cx, from, msg));
        }
    }

    #[test]
    fn core_over_a_file_store_never_holds_or_serves_a_corrupt_chunk() {
        use crate::swarm::{Command, Config, Event, Swarm};
        use crate::wire::Body;
        use peerlab_overlay::{PeerId, Protocol};

        // A fetching core writing into a file store; its seeder sends chunk 0 with one
        // block corrupted, then correctly.
        let dir = tempfile::tempdir().unwrap();
        let bs = crate::manifest::BLOCK_SIZE as usize;
        let d = data(8 * bs, 11);
        let m = Manifest::from_bytes("f.bin", &d, 4 * bs as u32).unwrap();
        let (seeder, other) = (PeerId::synthetic(1), PeerId::synthetic(2));
        let mut h = FileCore {
            core: Swarm::new(
                Config::default(),
                FileFactory {
                    dir: dir.path().to_owned(),
                },
            )
            .unwrap(),
            rng: peerlab_overlay::Rng::seed(3),
            sent: Vec::new(),
            events: Vec::new(),
            cid: m.content_id(),
        };
        let cid = h.cid;
        h.step(|c, cx| {
            c.handle_start(cx);
            c.handle_command(
                cx,
                Command::Fetch {
                    req: 1,
                    cid,
                    providers: vec![seeder],
                },
            );
        });
        for body in [
            Body::Manifest(m.clone()),
            Body::Bitfield(Bitfield::full(m.chunk_count())),
            Body::Unchoke,
        ] {
            h.deliver(seeder, body);
        }
        let deliver_chunk0 = |h: &mut FileCore, seeder: PeerId, corrupt: bool| {
            for (b, data) in blocks_of(&m, &d, 0).into_iter().enumerate() {
                let data = if corrupt && b == 2 {
                    let mut v = data.to_vec();
                    v[100] ^= 1;
                    Bytes::from(v)
                } else {
                    data
                };
                h.deliver(
                    seeder,
                    Body::Block {
                        chunk: 0,
                        block: b as u32,
                        data,
                    },
                );
            }
        };
        let part = dir.path().join("f.bin.part");

        deliver_chunk0(&mut h, seeder, true);
        assert!(
            h.events
                .iter()
                .any(|e| matches!(e, Event::ChunkRejected { chunk: 0, .. })),
            "{:?}",
            h.events
        );
        assert_eq!(h.core.stats(&cid).unwrap().corrupt_chunks, 1);
        assert!(!h.core.have(&cid).unwrap().get(0), "corrupt chunk counted");
        assert!(
            !h.core.store(&cid).unwrap().held().get(0),
            "corrupt chunk held"
        );
        assert!(
            fs::read(&part).unwrap()[..4 * bs].iter().all(|&b| b == 0),
            "corrupt bytes written"
        );
        assert!(!h.sent.iter().any(|(_, b)| matches!(b, Body::Have { .. })));
        // A peer asking for it gets no data.
        h.deliver(other, Body::Handshake);
        h.deliver(other, Body::Interested);
        h.sent.clear();
        h.deliver(other, Body::Request { chunk: 0, block: 0 });
        assert!(
            !h.sent.iter().any(|(_, b)| matches!(b, Body::Block { .. })),
            "{:?}",
            h.sent
        );

        // The same chunk sent correctly (by another seeder: the first one proved a liar and
        // is banned) is verified, held, announced and written.
        let second = PeerId::synthetic(3);
        for body in [
            Body::Handshake,
            Body::Bitfield(Bitfield::full(m.chunk_count())),
            Body::Unchoke,
        ] {
            h.deliver(second, body);
        }
        h.sent.clear();
        deliver_chunk0(&mut h, second, false);
        assert!(h.core.have(&cid).unwrap().get(0));
        assert!(h.core.store(&cid).unwrap().held().get(0));
        assert!(
            h.sent
                .iter()
                .any(|(_, b)| matches!(b, Body::Have { chunk: 0 }))
        );
        assert_eq!(&fs::read(&part).unwrap()[..4 * bs], &d[..4 * bs]);
    }

    #[test]
    fn file_store_rejects_corruption_found_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let d = data(10_000, 5);
        let m = Manifest::from_bytes("f.bin", &d, 4096).unwrap();
        let mut s = FileStore::open(dir.path(), &m).unwrap();
        for c in 0..2 {
            s.write_chunk(c, &blocks_of(&m, &d, c)).unwrap();
        }
        drop(s);
        // Damage chunk 0 on disk behind the store's back.
        let part = dir.path().join("f.bin.part");
        let mut raw = fs::read(&part).unwrap();
        raw[10] ^= 0xff;
        fs::write(&part, raw).unwrap();
        let s = FileStore::open(dir.path(), &m).unwrap();
        assert!(!s.held().get(0) && s.held().get(1));
    }

    #[test]
    fn complete_file_is_renamed_and_then_seeded() {
        let dir = tempfile::tempdir().unwrap();
        let d = data(9000, 11);
        let m = Manifest::from_bytes("out.bin", &d, 4096).unwrap();
        let mut s = FileStore::open(dir.path(), &m).unwrap();
        for c in 0..m.chunk_count() {
            s.write_chunk(c, &blocks_of(&m, &d, c)).unwrap();
        }
        assert!(!dir.path().join("out.bin").exists());
        s.finish().unwrap();
        assert_eq!(fs::read(dir.path().join("out.bin")).unwrap(), d);
        assert!(!dir.path().join("out.bin.part").exists());
        assert!(!dir.path().join("out.bin.part.bits").exists());
        let mut again = FileStore::open(dir.path(), &m).unwrap();
        assert!(again.is_finished() && again.held().is_complete());
        assert_eq!(&again.read_block(2, 0, 808).unwrap()[..], &d[8192..]);
        assert_eq!(
            manifest_from_file(&dir.path().join("out.bin"), 4096).unwrap(),
            m
        );
    }

    /// A crash (the store vanishes without its drop-time flush, and whatever was not
    /// synced never reached the disk) loses exactly the chunks written since the last
    /// flush: the bitfield on disk lists only flushed chunks, resume counts only those,
    /// and the rest are fetched again into a byte-identical file.
    #[test]
    fn crash_between_flushes_loses_only_unflushed_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let d = data(20 * 1024, 13);
        let m = Manifest::from_bytes("c.bin", &d, 1024).unwrap();
        let mut s = FileStore::open(dir.path(), &m).unwrap();
        s.set_flush_policy(FlushPolicy {
            bytes: 4 * 1024,
            interval: Duration::from_secs(3600),
        });
        for c in 0..10 {
            s.write_chunk(c, &blocks_of(&m, &d, c)).unwrap();
        }
        // Flushes after chunks 3 and 7; chunks 8 and 9 are held but not yet durable.
        assert_eq!(s.unflushed_bytes(), 2 * 1024);
        assert_eq!(s.held().count(), 10);
        assert_eq!(
            &s.read_block(9, 0, 1024).unwrap()[..],
            &d[9 * 1024..10 * 1024]
        );
        // The crash, after the flush running behind the writes is done: no drop, no flush.
        s.settle().unwrap();
        std::mem::forget(s);
        let part = dir.path().join("c.bin.part");
        let mut raw = fs::read(&part).unwrap();
        raw[8 * 1024..10 * 1024].fill(0xaa); // the unsynced writes never made it
        fs::write(&part, raw).unwrap();
        let mut s = FileStore::open(dir.path(), &m).unwrap();
        assert_eq!(
            s.held().ones().collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
        for c in 8..m.chunk_count() {
            s.write_chunk(c, &blocks_of(&m, &d, c)).unwrap();
        }
        s.finish().unwrap();
        assert_eq!(fs::read(dir.path().join("c.bin")).unwrap(), d);
    }

    /// A flush behind the writes persists the chunks held when it was triggered, not those
    /// written while it ran: their data may not be covered by its sync.
    #[test]
    fn a_flush_behind_the_writes_claims_only_what_preceded_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = data(8 * 1024, 23);
        let m = Manifest::from_bytes("w.bin", &d, 1024).unwrap();
        let mut s = FileStore::open(dir.path(), &m).unwrap();
        s.set_flush_policy(FlushPolicy {
            bytes: 3 * 1024,
            interval: Duration::from_secs(3600),
        });
        for c in 0..3 {
            s.write_chunk(c, &blocks_of(&m, &d, c)).unwrap();
        }
        assert_eq!(s.unflushed_bytes(), 0, "the third write started a flush");
        s.write_chunk(3, &blocks_of(&m, &d, 3)).unwrap();
        s.write_chunk(4, &blocks_of(&m, &d, 4)).unwrap();
        s.settle().unwrap();
        std::mem::forget(s);
        let s = FileStore::open(dir.path(), &m).unwrap();
        assert_eq!(s.held().ones().collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    /// Even if the unflushed data did reach the disk, the chunks are not counted: only a
    /// flush (data synced first) puts a chunk into the bitfield on disk.
    #[test]
    fn unflushed_chunks_are_not_claimed_even_if_their_bytes_are_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let d = data(8 * 1024, 17);
        let m = Manifest::from_bytes("u.bin", &d, 1024).unwrap();
        let mut s = FileStore::open(dir.path(), &m).unwrap();
        s.set_flush_policy(FlushPolicy {
            bytes: u64::MAX,
            interval: Duration::from_secs(3600),
        });
        for c in 0..3 {
            s.write_chunk(c, &blocks_of(&m, &d, c)).unwrap();
        }
        s.flush().unwrap();
        s.write_chunk(5, &blocks_of(&m, &d, 5)).unwrap();
        std::mem::forget(s);
        let s = FileStore::open(dir.path(), &m).unwrap();
        assert_eq!(s.held().ones().collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn blocks_are_served_through_the_read_cache_correctly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        // 40 chunks of 128 KiB (5 MiB): more than the cache holds, so chunks are evicted
        // and read again.
        let d = data(40 * 128 * 1024 + 777, 19);
        fs::write(&path, &d).unwrap();
        let m = manifest_from_file(&path, 128 * 1024).unwrap();
        let mut s = FileStore::seed(&path, &m).unwrap();
        for round in 0..2 {
            for c in 0..m.chunk_count() {
                for b in 0..m.block_count(c) {
                    let len = m.block_len(c, b).unwrap();
                    let off = m.chunk_offset(c) as usize + (b * m.block_size()) as usize;
                    let got = s.read_block(c, b * m.block_size(), len).unwrap();
                    assert_eq!(&got[..], &d[off..off + len as usize], "round {round}");
                }
            }
        }
        let mid = s.read_block(3, 1000, 50_000).unwrap();
        let off = m.chunk_offset(3) as usize + 1000;
        assert_eq!(&mid[..], &d[off..off + 50_000]);
        assert!(matches!(
            s.read_block(3, 128 * 1024 - 10, 11),
            Err(StoreError::OutOfRange { .. })
        ));
    }

    #[test]
    fn share_reads_once_what_manifest_and_seed_read_twice() {
        let dir = tempfile::tempdir().unwrap();
        for (name, len) in [
            ("s.bin", 5 * 4096 + 123),
            ("empty.bin", 0),
            ("one.bin", 4096),
        ] {
            let path = dir.path().join(name);
            let d = data(len, 23);
            fs::write(&path, &d).unwrap();
            let (m, mut s) = FileStore::share(&path, 4096).unwrap();
            // The same manifest (hence content id) as the two-pass way, every chunk held
            // and served byte for byte.
            assert_eq!(m, manifest_from_file(&path, 4096).unwrap(), "{name}");
            let seeded = FileStore::seed(&path, &m).unwrap();
            assert_eq!(s.held(), seeded.held(), "{name}");
            assert!(s.held().is_complete() && s.is_finished());
            for c in 0..m.chunk_count() {
                let got = s.read_block(c, 0, m.chunk_len(c)).unwrap();
                let off = m.chunk_offset(c) as usize;
                assert_eq!(&got[..], &d[off..off + got.len()], "{name} chunk {c}");
            }
        }
        assert!(FileStore::share(&dir.path().join("missing.bin"), 4096).is_err());
        assert!(FileStore::share(dir.path(), 4096).is_err(), "a directory");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Random chunk sizes, file sizes (0 and non-divisible included), write orders and
        /// interruption points — including a chunk half-written when the "crash" happens
        /// and a torn bitfield update — always resume to a byte-identical file.
        #[test]
        fn resume_produces_a_byte_identical_file(
            chunk_shift in 10u32..15,
            size in prop_oneof![Just(0usize), 1usize..70_000],
            seed in any::<u8>(),
            order_seed in any::<u64>(),
            cuts in proptest::collection::vec(0usize..40, 1..4),
            torn in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let d = data(size, seed | 1);
            let m = Manifest::from_bytes("file.bin", &d, 1 << chunk_shift).unwrap();
            let mut order: Vec<u32> = (0..m.chunk_count()).collect();
            peerlab_overlay::Rng::seed(order_seed).shuffle(&mut order);
            let mut done = 0usize;
            for cut in cuts {
                let mut s = FileStore::open(dir.path(), &m).unwrap();
                prop_assert_eq!(s.held().count() as usize, done);
                let stop = (done + cut).min(order.len());
                for &c in &order[done..stop] {
                    s.write_chunk(c, &blocks_of(&m, &d, c)).unwrap();
                }
                done = stop;
                drop(s);
                // The crash: the next chunk is half-written but its bit never saved.
                if let Some(&next) = order.get(done) {
                    let part = dir.path().join("file.bin.part");
                    let mut raw = fs::read(&part).unwrap();
                    let off = m.chunk_offset(next) as usize;
                    let half = m.chunk_len(next) as usize / 2;
                    raw[off..off + half].copy_from_slice(&d[off..off + half]);
                    fs::write(&part, raw).unwrap();
                }
                if torn {
                    // A leftover temporary bitfield from an interrupted save is ignored.
                    fs::write(dir.path().join("file.bin.part.bits.tmp"), b"junk").unwrap();
                }
            }
            let mut s = FileStore::open(dir.path(), &m).unwrap();
            prop_assert_eq!(s.held().count() as usize, done);
            for &c in &order[done..] {
                s.write_chunk(c, &blocks_of(&m, &d, c)).unwrap();
            }
            s.finish().unwrap();
            prop_assert_eq!(fs::read(dir.path().join("file.bin")).unwrap(), d);
        }
    }
}
