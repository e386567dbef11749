//! The downloading role: asking peers for blocks, receiving them, verifying chunks.
//!
//! We declare interest in a peer that has a chunk we lack (BEP 3; or, with
//! [`Config::release_idle_interest`], a block we could request now) and, once it unchokes
//! us, keep block requests outstanding at it, chosen by the
//! [`Picker`](crate::picker::Picker): as many as its measured delivery rate times its round
//! trip calls for (libtorrent's request queue, see the `estimate` module), between
//! [`Config::min_pipeline_depth`] and [`Config::pipeline_depth`]. Blocks are buffered by the picker until their
//! chunk is complete; the chunk is then hashed with BLAKE3 by the store and only a matching
//! chunk is written, announced with `Have` and served. A chunk that fails is dropped and
//! fetched again. Its blocks are kept (at most [`Config::max_failed_records`] such records)
//! until the chunk passes; then every peer whose block differs from the verified data
//! provably sent corrupt data (libtorrent's "smart ban"). In endgame the same block may be
//! outstanding at two peers; when one copy arrives the others are cancelled.
//!
//! With [`Config::defenses`] (after libtorrent's parole and BEP 3's rule that a block
//! answers a request):
//!
//! - A block is accepted only from a peer it is outstanding at. One answering a request we
//!   withdrew (cancelled, timed out) is late and dropped; any other is unsolicited: dropped,
//!   counted in [`TransferStats::unsolicited`](crate::TransferStats::unsolicited) and
//!   reported as [`Offence::Unsolicited`]. So every block of a chunk comes from a peer we
//!   chose, and the picker knows who sent which.
//! - A chunk that fails verification with a single contributor convicts it: reported as
//!   [`Offence::Corrupt`] and banned from the transfer, never asked again. With several,
//!   the chunk goes on parole: it is fetched again whole from one peer, so a second
//!   failure names the liar, and a pass names every peer whose block differed. Honest
//!   contributors are never struck, and a peer that slips one bad block into every retry
//!   can no longer keep a chunk from completing.
//!
//! Without defenses a sole contributor gets a strike and [`Config::ban_after_corrupt`]
//! strikes ban it; a multi-peer failure strikes nobody until the chunk passes.

use std::collections::BTreeSet;

use bytes::Bytes;
use peerlab_overlay::{Offence, PeerId};

use super::connection::{Connection, offer};
use super::transfer::{Active, Local, Transfer};
use super::{Config, Event, ProtocolError, SwarmCx, send};
use crate::manifest::BLOCK_SIZE;
use crate::picker::{BlockOutcome, BlockRef};
use crate::storage::{ChunkStore, StoreError};
use crate::wire::Body;

impl<S: ChunkStore> Transfer<S> {
    /// A block arrived from `from`.
    pub(crate) fn on_block(
        &mut self,
        cx: &mut SwarmCx<'_>,
        from: PeerId,
        chunk: u32,
        block: u32,
        data: Bytes,
    ) -> Result<(), ProtocolError> {
        let cid = self.cid;
        let defenses = self.config.defenses;
        // As for every other message: one from a peer we are not connected to (any more) is
        // a race, ignored.
        let Some(a) = &mut self.active else {
            return Ok(());
        };
        let Some(p) = a.peers.get_mut(&from) else {
            if defenses {
                self.stats.unsolicited += 1;
            }
            return Ok(());
        };
        if data.len() > BLOCK_SIZE as usize {
            return Err(ProtocolError::Oversized {
                kind: "swarm_block",
                len: data.len(),
                max: BLOCK_SIZE as usize,
            });
        }
        let Some(expected) = a.local.manifest.block_len(chunk, block) else {
            return Err(ProtocolError::OutOfRange { chunk, block });
        };
        if data.len() != expected as usize {
            return Err(ProtocolError::BlockLength {
                chunk,
                block,
                got: data.len(),
                expected,
            });
        }
        let r = (chunk, block);
        let asked_at = p
            .outstanding
            .iter()
            .find(|(o, _)| *o == r)
            .map(|(_, at)| *at);
        let asked = asked_at.is_some();
        // A block answering a request we withdrew: dropped, but not held against the peer.
        let late = defenses && !asked && p.take_withdrawn(r);
        if defenses && !asked && !late {
            self.stats.unsolicited += 1;
            cx.penalize(from, Offence::Unsolicited);
            return Ok(());
        }
        if defenses && asked {
            p.proven = true;
            p.awaiting_since = cx.now();
        }
        if let Some(at) = asked_at {
            p.estimate.on_block(cx.now(), r, at, expected as u64);
        }
        let mut retry = None;
        self.stats.downloaded += expected as u64;
        p.down_round += expected as u64;
        p.outstanding.retain(|(o, _)| *o != r);
        let outcome = if late {
            BlockOutcome::Unwanted
        } else {
            a.local.picker.block_received(r, data, from)
        };
        match outcome {
            BlockOutcome::Stored => {}
            BlockOutcome::Duplicate | BlockOutcome::Unwanted => {
                self.stats.wasted += expected as u64
            }
            BlockOutcome::Complete(blocks) => {
                let datas: Vec<Bytes> = blocks.iter().map(|(d, _)| d.clone()).collect();
                // The store verifies the chunk against the manifest before it holds it (the
                // one BLAKE3 pass per chunk; see `ChunkStore::write_chunk`).
                let verified = match a.local.store.write_chunk(chunk, &datas) {
                    Ok(()) => true,
                    Err(StoreError::HashMismatch(_)) => false,
                    Err(e) => {
                        cx.emit(Event::StoreFailed {
                            cid,
                            error: e.to_string(),
                        });
                        return Ok(());
                    }
                };
                if verified {
                    a.local.picker.mark_have(chunk);
                    if let Some(bad) = a.local.failed.remove(&chunk) {
                        // Smart ban: blocks that differ from the verified chunk were corrupt.
                        let mut guilty = BTreeSet::new();
                        for ((bad_data, sender), good) in bad.iter().zip(&datas) {
                            if bad_data != good {
                                guilty.insert(*sender);
                            }
                        }
                        for g in guilty {
                            if defenses {
                                self.convict(cx, g);
                            } else {
                                self.strike(cx, g);
                            }
                        }
                    }
                    self.on_chunk_verified(cx, chunk);
                } else {
                    self.stats.corrupt_chunks += 1;
                    let senders: BTreeSet<PeerId> = blocks.iter().map(|(_, p)| *p).collect();
                    cx.emit(Event::ChunkRejected {
                        cid,
                        chunk,
                        from: senders.iter().copied().collect(),
                    });
                    if senders.len() == 1 {
                        for s in senders {
                            if defenses {
                                self.convict(cx, s);
                            } else {
                                self.strike(cx, s);
                            }
                        }
                    } else if let Some(a) = &mut self.active {
                        if a.local.failed.len() >= self.config.max_failed_records {
                            a.local.failed.pop_first();
                        }
                        a.local.failed.insert(chunk, blocks);
                        if defenses {
                            a.local.picker.put_on_parole(chunk);
                        }
                    }
                    // The chunk is wanted again, from whoever holds it — after the cancels
                    // below, which are for this round's requests: asked first, the new round's
                    // requests for block `r` would be cancelled with them and their picker
                    // slot left "requested" from no one, the chunk never asked for again.
                    retry = Some(chunk);
                }
            }
        }
        let config = &*self.config;
        if let Some(a) = &mut self.active {
            // Endgame: cancel the same block elsewhere (a late block fills no slot, so the
            // requests elsewhere still stand).
            for (peer, q) in a.peers.iter_mut() {
                if *peer == from || late {
                    continue;
                }
                let before = q.outstanding.len();
                q.outstanding.retain(|(o, _)| *o != r);
                if q.outstanding.len() != before {
                    send(cx, *peer, cid, Body::Cancel { chunk, block });
                    if defenses {
                        q.withdraw(r, 2 * config.pipeline_depth);
                    }
                    a.local.fill_requests(config, cx, *peer, q);
                }
            }
            if let Some(p) = a.peers.get_mut(&from) {
                a.local.fill_requests(config, cx, from, p);
            }
            if let Some(c) = retry {
                a.reconsider_interest(config, cx, Some(c));
            }
        }
        Ok(())
    }

    /// Chunk `chunk` verified and stored: announced to every peer; peers that now have
    /// nothing we lack are told we are no longer interested.
    fn on_chunk_verified(&mut self, cx: &mut SwarmCx<'_>, chunk: u32) {
        let config = &*self.config;
        let cid = self.cid;
        let Some(a) = &mut self.active else { return };
        let picker = &a.local.picker;
        let have = picker.have().count();
        let total = a.local.manifest.chunk_count();
        for (peer, p) in a.peers.iter_mut() {
            send(cx, *peer, cid, Body::Have { chunk });
            if p.am_interested && p.has.get(chunk) && !picker.wants_from(&p.has) {
                p.am_interested = false;
                send(cx, *peer, cid, Body::NotInterested);
            }
        }
        if config.progress_every > 0 && (have % config.progress_every == 0 || have == total) {
            cx.emit(Event::Progress { cid, have, total });
        }
        if picker.is_complete() {
            self.finish(cx);
        }
    }

    /// Every chunk is held: the store is finished and the transfer seeds from now on.
    pub(crate) fn finish(&mut self, cx: &mut SwarmCx<'_>) {
        let cid = self.cid;
        let Some(a) = &mut self.active else { return };
        if let Err(e) = a.local.store.finish() {
            cx.emit(Event::StoreFailed {
                cid,
                error: e.to_string(),
            });
            return;
        }
        // Nothing is wanted any more: stray endgame requests are simply forgotten.
        let (defenses, cap) = (self.config.defenses, 2 * self.config.pipeline_depth);
        for p in a.peers.values_mut() {
            for (r, _) in std::mem::take(&mut p.outstanding) {
                if defenses {
                    p.withdraw(r, cap);
                }
            }
        }
        self.stats.completed_at = Some(cx.now());
        cx.emit(Event::Completed {
            cid,
            downloaded: self.stats.downloaded,
            uploaded: self.stats.uploaded,
        });
    }
}

impl<S: ChunkStore> Local<S> {
    /// Tops up our requests to `peer` (unchoking us, and interesting) to the depth its
    /// measured rate and round trip call for (see the `estimate` module), between
    /// [`Config::min_pipeline_depth`] and [`Config::pipeline_depth`].
    pub(crate) fn fill_requests(
        &mut self,
        config: &Config,
        cx: &mut SwarmCx<'_>,
        peer: PeerId,
        p: &mut Connection,
    ) {
        let now = cx.now();
        if p.peer_choking || !p.am_interested {
            return;
        }
        let offer = offer(&p.has, &p.refused);
        let burst = p.outstanding.is_empty();
        if burst {
            p.awaiting_since = now;
        }
        let depth = p.estimate.queue_depth(config, self.manifest.block_size());
        // Kept in step with `p.outstanding` below: one copy per fill, not one per pick.
        let mut outstanding: Vec<BlockRef> = p.outstanding.iter().map(|(r, _)| *r).collect();
        while p.outstanding.len() < depth {
            let Some(r) = self
                .picker
                .pick(&self.manifest, peer, &offer, &outstanding, cx.rng())
            else {
                break;
            };
            if burst && p.outstanding.is_empty() {
                p.estimate.head_of_burst(r);
            }
            p.outstanding.push((r, now));
            outstanding.push(r);
            send(
                cx,
                peer,
                self.cid,
                Body::Request {
                    chunk: r.0,
                    block: r.1,
                },
            );
        }
        if config.release_idle_interest && p.outstanding.is_empty() {
            // Unchoked, yet everything it has that we lack is requested elsewhere: free its
            // slot for a peer that can use it (see `Config::release_idle_interest`).
            p.am_interested = false;
            send(cx, peer, self.cid, Body::NotInterested);
        }
    }

    /// Whether we want something from `p` now: with [`Config::release_idle_interest`] a
    /// block we could request ([`Picker::can_pick`](crate::picker::Picker::can_pick) over
    /// what it offers), else any chunk we lack.
    pub(crate) fn wants_now(&self, config: &Config, peer: PeerId, p: &Connection) -> bool {
        if !config.release_idle_interest {
            return self.picker.wants_from(&p.has);
        }
        self.picker.can_pick(peer, &p.offer())
    }

    /// Gives up `chunk`, on parole and owned by `peer`, which refused or dropped one of its
    /// blocks: the requests still outstanding for it at `peer` are withdrawn (`Cancel`) and
    /// the next peer to start it fetches it whole.
    pub(crate) fn abandon_parole(
        &mut self,
        config: &Config,
        cx: &mut SwarmCx<'_>,
        peer: PeerId,
        p: &mut Connection,
        chunk: u32,
    ) {
        self.picker.abandon(chunk);
        let mut withdrawn = Vec::new();
        p.outstanding.retain(|(r, _)| {
            let drop = r.0 == chunk;
            if drop {
                withdrawn.push(*r);
            }
            !drop
        });
        for r in withdrawn {
            send(
                cx,
                peer,
                self.cid,
                Body::Cancel {
                    chunk: r.0,
                    block: r.1,
                },
            );
            p.withdraw(r, 2 * config.pipeline_depth);
        }
    }

    /// Declares or withdraws interest in `peer` as [`Local::wants_now`] says, and asks it
    /// for blocks when interest is new.
    pub(crate) fn update_interest(
        &mut self,
        config: &Config,
        cx: &mut SwarmCx<'_>,
        peer: PeerId,
        p: &mut Connection,
    ) {
        let wants = self.wants_now(config, peer, p);
        if wants && !p.am_interested {
            p.am_interested = true;
            send(cx, peer, self.cid, Body::Interested);
            self.fill_requests(config, cx, peer, p);
        } else if !wants && p.am_interested {
            p.am_interested = false;
            send(cx, peer, self.cid, Body::NotInterested);
        }
    }
}

impl<S: ChunkStore> Active<S> {
    /// Tops up our requests to every peer, in peer order.
    pub(crate) fn fill_all(&mut self, config: &Config, cx: &mut SwarmCx<'_>) {
        for (peer, p) in self.peers.iter_mut() {
            self.local.fill_requests(config, cx, *peer, p);
        }
    }

    /// Declares interest again in peers we went quiet on that now have a block we could
    /// request (only peers holding `chunk`, if given): called when requests are dropped or a
    /// chunk fails verification, so its blocks are requestable again.
    pub(crate) fn reconsider_interest(
        &mut self,
        config: &Config,
        cx: &mut SwarmCx<'_>,
        chunk: Option<u32>,
    ) {
        if !config.release_idle_interest || self.local.picker.is_complete() {
            return;
        }
        // Chosen before any is asked: each request changes what the next peer could offer.
        let chosen: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.am_interested && p.got_bitfield)
            .filter(|(_, p)| chunk.is_none_or(|c| p.has.get(c)))
            .filter(|(id, p)| self.local.wants_now(config, **id, p))
            .map(|(id, _)| *id)
            .collect();
        for q in chosen {
            if let Some(p) = self.peers.get_mut(&q) {
                p.am_interested = true;
                send(cx, q, self.local.cid, Body::Interested);
                self.local.fill_requests(config, cx, q, p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use peerlab_overlay::{Instant, Rng};
    use peerlab_sim::testing::Net;

    use super::*;
    use crate::bitfield::Bitfield;
    use crate::manifest::{ContentId, Manifest};
    use crate::storage::MemoryFactory;
    use crate::swarm::{Command, Swarm};
    use crate::wire::Message;

    type Core = Swarm<MemoryFactory>;

    /// One fetching core on the test harness; the peers it talks to are played by the test.
    struct Fetcher {
        net: Net<Core>,
        me: PeerId,
        cid: ContentId,
    }

    impl Fetcher {
        fn deliver(&mut self, from: PeerId, body: Body) {
            let msg = Message {
                cid: self.cid,
                body,
            };
            self.net.deliver(from, self.me, msg);
        }

        fn count(&self, to: PeerId, kind: &str) -> usize {
            self.net
                .sent()
                .iter()
                .filter(|m| m.to == to && m.msg.body.kind() == kind)
                .count()
        }
    }

    /// A fetcher of a two-chunk file (eight 16 KiB blocks per chunk, one pipeline's worth)
    /// connected to two peers that hold chunk 0 only, interested in both, both still
    /// choking it. Chunk 1 is nowhere, so endgame never starts.
    fn fetcher(config: Config) -> (Fetcher, PeerId, PeerId) {
        assert!(
            config.min_pipeline_depth >= 8,
            "a fresh peer is asked for a whole chunk"
        );
        let data = Bytes::from(vec![3u8; 16 * BLOCK_SIZE as usize]);
        let m = Manifest::from_bytes("f", &data, 8 * BLOCK_SIZE).unwrap();
        let (u1, u2) = (PeerId::synthetic(1), PeerId::synthetic(2));
        let mut net = Net::new(7).with_send_log();
        net.advance_to(Instant(1_000_000));
        let me = PeerId::synthetic(0);
        net.add_with_rng(me, Swarm::new(config, MemoryFactory).unwrap(), Rng::seed(7));
        let mut h = Fetcher {
            net,
            me,
            cid: m.content_id(),
        };
        h.net.command(
            me,
            Command::Fetch {
                req: 1,
                cid: h.cid,
                providers: vec![u1, u2],
            },
        );
        h.deliver(u1, Body::Manifest(m.clone()));
        let mut full = Bitfield::new(2);
        full.set(0);
        for u in [u1, u2] {
            h.deliver(u, Body::Bitfield(full.clone()));
            assert_eq!(h.count(u, "swarm_interested"), 1);
        }
        (h, u1, u2)
    }

    fn request_now() -> Config {
        Config {
            release_idle_interest: true,
            ..Config::default()
        }
    }

    /// `u1` is asked for chunk 0 and `u2`, asked for nothing, slips a garbage copy of the
    /// chunk's first block in before `u1` delivers it; `rounds` times, each time `u1` having
    /// been asked for the chunk again.
    fn poison_chunk_zero(h: &mut Fetcher, u1: PeerId, u2: PeerId, rounds: usize) {
        let good = Bytes::from(vec![3u8; BLOCK_SIZE as usize]);
        let garbage = Bytes::from(vec![0x5a; BLOCK_SIZE as usize]);
        for _ in 0..rounds {
            h.deliver(
                u2,
                Body::Block {
                    chunk: 0,
                    block: 0,
                    data: garbage.clone(),
                },
            );
            for block in 0..8 {
                h.deliver(
                    u1,
                    Body::Block {
                        chunk: 0,
                        block,
                        data: good.clone(),
                    },
                );
            }
        }
    }

    #[test]
    fn a_chunk_poisoned_by_an_unasked_peer_still_completes_with_defenses() {
        let (mut h, u1, u2) = fetcher(Config::default());
        h.deliver(u1, Body::Unchoke);
        assert_eq!(h.count(u1, "swarm_request"), 8);
        poison_chunk_zero(&mut h, u1, u2, 1);
        let st = h.net.node(&h.me).stats(&h.cid).unwrap();
        assert_eq!(st.have, 1, "the chunk passed with u1's blocks");
        assert_eq!(st.corrupt_chunks, 0);
        assert_eq!(st.unsolicited, 1);
        let charged: Vec<(PeerId, Offence)> = h
            .net
            .offences()
            .iter()
            .map(|(_, _, p, o)| (*p, *o))
            .collect();
        assert_eq!(charged, vec![(u2, Offence::Unsolicited)]);
        assert_eq!(h.count(u1, "swarm_have"), 1);
    }

    #[test]
    fn without_defenses_one_unasked_block_per_retry_stalls_a_chunk_and_strikes_nobody() {
        let config = Config {
            defenses: false,
            ..Config::default()
        };
        let (mut h, u1, u2) = fetcher(config);
        h.deliver(u1, Body::Unchoke);
        assert_eq!(h.count(u1, "swarm_request"), 8);
        poison_chunk_zero(&mut h, u1, u2, 3);
        let st = h.net.node(&h.me).stats(&h.cid).unwrap();
        // The garbage is taken for a requested slot, every attempt fails with two senders,
        // and neither is struck: the chunk is asked for again each time and never held.
        assert_eq!(st.have, 0);
        assert_eq!(st.corrupt_chunks, 3);
        assert_eq!(h.count(u1, "swarm_request"), 4 * 8);
        assert!(h.net.offences().is_empty());
        assert!(
            !h.net
                .events()
                .iter()
                .any(|(_, _, e)| matches!(e, Event::PeerBanned { .. }))
        );
    }

    #[test]
    fn unchoked_by_a_peer_with_nothing_requestable_we_release_its_slot() {
        let (mut h, u1, u2) = fetcher(request_now());
        // `u1` unchokes first and is asked for all eight blocks of chunk 0.
        h.deliver(u1, Body::Unchoke);
        assert_eq!(h.count(u1, "swarm_request"), 8);
        // `u2` unchokes too: everything it has is already requested from `u1`, so its
        // slot would sit idle; we say NotInterested so it can unchoke someone else.
        h.deliver(u2, Body::Unchoke);
        assert_eq!(h.count(u2, "swarm_request"), 0);
        assert_eq!(h.count(u2, "swarm_not_interested"), 1);
        // `u1` refuses one block: it is requestable again, and `u2` is asked for it.
        h.deliver(u1, Body::Reject { chunk: 0, block: 7 });
        assert_eq!(h.count(u2, "swarm_interested"), 2);
        assert_eq!(h.count(u2, "swarm_request"), 1);
    }

    #[test]
    fn with_bep3_interest_the_idle_slot_is_kept() {
        let config = Config {
            release_idle_interest: false,
            ..Config::default()
        };
        let (mut h, u1, u2) = fetcher(config);
        h.deliver(u1, Body::Unchoke);
        h.deliver(u2, Body::Unchoke);
        assert_eq!(h.count(u2, "swarm_request"), 0);
        assert_eq!(h.count(u2, "swarm_not_interested"), 0);
    }

    #[test]
    fn interest_is_not_declared_for_chunks_already_fully_requested() {
        let (mut h, u1, _) = fetcher(request_now());
        h.deliver(u1, Body::Unchoke);
        assert_eq!(h.count(u1, "swarm_request"), 8);
        // A third peer announces the chunk: nothing in it can be requested now.
        let u3 = PeerId::synthetic(3);
        h.deliver(u3, Body::Handshake);
        h.deliver(u3, Body::Bitfield(Bitfield::new(2)));
        h.deliver(u3, Body::Have { chunk: 0 });
        assert_eq!(h.count(u3, "swarm_interested"), 0);
    }
}
