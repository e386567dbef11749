//! Initial seeding (BEP 16, "super-seeding").
//!
//! A transfer started by [`Command::Share`](crate::Command::Share) advertises an empty
//! bitfield and reveals chunks to each peer a few at a time with `Have`: always the chunk
//! with the fewest copies out (held by neighbours or already sent by us), then the least
//! revealed, ties at random. A peer is shown more when it announces a chunk it was shown,
//! and it is shown one chunk more for good each time it has asked for every chunk shown
//! to it, so the reveals grow with its request queue (rate × round trip) instead of a
//! constant tuned to one link (see `reveal_target`). While some chunk has never left us, a request for a chunk already sent to another
//! peer is refused (`Reject`, see the `upload` module) and a fresh chunk revealed instead,
//! so the seeder's upload carries each chunk once before any chunk twice. Once every chunk
//! is held by some neighbour the seeder sends everyone its full bitfield and seeds
//! normally.
//!
//! A super-seeder holds every chunk, so it never downloads: the download side of a
//! transfer (interest, requests) is idle while this runs.

use peerlab_overlay::PeerId;

use super::connection::Connection;
use super::transfer::{Active, Local};
use super::{Config, SwarmCx, send};
use crate::bitfield::Bitfield;
use crate::manifest::Manifest;
use crate::storage::ChunkStore;
use crate::wire::Body;

/// Super-seeding bookkeeping, one entry per chunk.
pub(crate) struct SuperSeed {
    /// Times the chunk was revealed with `Have`.
    pub(crate) revealed: Vec<u32>,
    /// Times we served its first block: a chunk revealed to a peer that never asks for it
    /// (e.g. one we keep choked) has not cost any upload and is revealed again before a
    /// chunk already on the wire.
    pub(crate) served: Vec<u32>,
    /// The peer we first served each chunk to.
    pub(crate) first_served_to: Vec<Option<PeerId>>,
    /// Chunks never served yet. While some are left, a request for a chunk already sent to
    /// another peer is refused (`Reject`) and a fresh chunk revealed instead, so the
    /// seeder's upload carries each chunk once before any chunk twice (BEP 16's aim; a
    /// chunk revealed to a peer we kept choked is later revealed to a second peer too,
    /// and without this both would download it from us).
    pub(crate) unserved: u32,
}

impl SuperSeed {
    /// Nothing revealed or served yet, for a file of `chunks` chunks.
    pub(crate) fn new(chunks: u32) -> SuperSeed {
        SuperSeed {
            revealed: vec![0; chunks as usize],
            served: vec![0; chunks as usize],
            first_served_to: vec![None; chunks as usize],
            unserved: chunks,
        }
    }
}

/// Chunks a super-seeder keeps revealed to `p`: [`Config::super_seed_reveals`] plus one
/// for each time the peer had asked for every chunk revealed to it
/// ([`Connection::reveal_extra`]). A peer whose request queue spans every revealed chunk
/// is held back by the reveals — each chunk it could ask for next waits out a reveal round
/// trip (`Have` up, `Have` down) — so it is shown one more; a queue that fits in fewer
/// chunks never asks for the last one shown, and the count stops growing. The count
/// follows the downloader's own queue (rate × round trip, see the `estimate` module)
/// without knowing it, on a paced or a FIFO uplink alike. At most twice the chunks our own
/// cap [`Config::pipeline_depth`] spans (16 with the node's 128-block LAN queue over
/// 16-block chunks), so a peer asking for everything cannot have the whole file shown.
pub(crate) fn reveal_target(config: &Config, m: &Manifest, p: &Connection) -> usize {
    let floor = config.super_seed_reveals;
    (floor + p.reveal_extra).min(reveal_cap(config, m).max(floor))
}

/// Most chunks revealed to one peer (see [`reveal_target`]).
fn reveal_cap(config: &Config, m: &Manifest) -> usize {
    let blocks_per_chunk = (m.chunk_size() / m.block_size().max(1)).max(1) as usize;
    2 * config.pipeline_depth.div_ceil(blocks_per_chunk)
}

impl<S: ChunkStore> Local<S> {
    /// Sends our bitfield to `peer`: the chunks we hold, or — while super-seeding — an
    /// empty one followed by a few revealed chunks.
    pub(crate) fn send_bitfield(
        &mut self,
        config: &Config,
        cx: &mut SwarmCx<'_>,
        peer: PeerId,
        p: &mut Connection,
    ) {
        if self.super_seed.is_some() {
            let empty = Bitfield::new(self.manifest.chunk_count());
            send(cx, peer, self.cid, Body::Bitfield(empty));
            self.reveal(config, cx, peer, p);
        } else {
            send(
                cx,
                peer,
                self.cid,
                Body::Bitfield(self.picker.have().clone()),
            );
        }
    }

    /// Super-seeding: tops up the chunks revealed to `peer`, least available and least
    /// revealed first (ties at random).
    pub(crate) fn reveal(
        &mut self,
        config: &Config,
        cx: &mut SwarmCx<'_>,
        peer: PeerId,
        p: &mut Connection,
    ) {
        let Some(ss) = &mut self.super_seed else {
            return;
        };
        let target = reveal_target(config, &self.manifest, p);
        while p.revealed.len() < target {
            let mut best: Option<u32> = None;
            let mut best_key = u64::MAX;
            let mut ties = 0u64;
            for c in 0..self.manifest.chunk_count() {
                if p.has.get(c) || p.revealed.contains(&c) {
                    continue;
                }
                // Least copies out (held by neighbours or already sent by us) first, then
                // least revealed: a chunk revealed but never requested is still fresh, one
                // already being uploaded would be sent twice.
                let out = self.picker.availability(c) as u64 + ss.served[c as usize] as u64;
                let key = (out << 32) | ss.revealed[c as usize] as u64;
                if key < best_key {
                    (best, best_key, ties) = (Some(c), key, 1);
                } else if key == best_key {
                    ties += 1;
                    if cx.rng().below(ties) == 0 {
                        best = Some(c);
                    }
                }
            }
            let Some(c) = best else { break };
            ss.revealed[c as usize] += 1;
            p.revealed.push(c);
            send(cx, peer, self.cid, Body::Have { chunk: c });
        }
    }
}

impl<S: ChunkStore> Local<S> {
    /// Super-seeding: `peer` asked for a block of `chunk`. Once it has asked for every
    /// chunk revealed to it, it is shown one more (see [`reveal_target`]).
    pub(crate) fn note_request(
        &mut self,
        config: &Config,
        cx: &mut SwarmCx<'_>,
        peer: PeerId,
        p: &mut Connection,
        chunk: u32,
    ) {
        if self.super_seed.is_none() || !p.revealed.contains(&chunk) {
            return;
        }
        let revealed = &p.revealed;
        p.revealed_asked.retain(|c| revealed.contains(c));
        if p.revealed_asked.contains(&chunk) {
            return;
        }
        p.revealed_asked.push(chunk);
        if p.revealed_asked.len() == p.revealed.len()
            && reveal_target(config, &self.manifest, p) < reveal_cap(config, &self.manifest)
        {
            p.reveal_extra += 1;
            self.reveal(config, cx, peer, p);
        }
    }
}

impl<S: ChunkStore> Active<S> {
    /// Ends super-seeding once every chunk is held by some neighbour: the full bitfield
    /// goes to everyone.
    pub(crate) fn maybe_end_super_seed(&mut self, cx: &mut SwarmCx<'_>) {
        let local = &mut self.local;
        if local.super_seed.is_none() {
            return;
        }
        if (0..local.manifest.chunk_count()).all(|c| local.picker.availability(c) > 0) {
            local.super_seed = None;
            for (peer, p) in self.peers.iter_mut() {
                p.revealed.clear();
                send(
                    cx,
                    *peer,
                    local.cid,
                    Body::Bitfield(local.picker.have().clone()),
                );
            }
        }
    }
}
