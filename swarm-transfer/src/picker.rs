//! Piece picking: which block to ask a peer for next.
//!
//! The rules are Cohen's (2003) and BEP 3's, applied in this order for every request
//! slot that opens on a peer that has unchoked us:
//!
//! 1. **Strict priority** — a started chunk the peer has, with a block nobody has been
//!    asked for yet, is continued before anything new is started, so chunks complete
//!    (and can be verified, stored and served) as soon as possible.
//! 2. **Random first** — until we hold [`Config::random_first`] chunks we start a
//!    uniformly random chunk the peer has: rare chunks download slowly, and a newcomer
//!    needs *something* to trade quickly.
//! 3. **Rarest first** — afterwards we start the chunk the peer has that is held by the
//!    fewest of our neighbours (ties broken at random), which keeps chunk diversity high
//!    and the swarm robust to the seeder leaving (Legout et al., IMC 2006).
//! 4. **Endgame** — once every missing block has been requested, blocks already
//!    requested elsewhere are requested again (at most [`Config::endgame_copies`]
//!    outstanding copies); when one copy arrives the caller cancels the others.
//!
//! [`Strategy::Random`] replaces rule 3 by rule 2 for comparison experiments.
//!
//! **Parole** (libtorrent's name for it): a chunk that failed verification with blocks
//! from several peers is put on parole ([`Picker::put_on_parole`]). The peer that starts it
//! next owns it: every block of the chunk is requested from that peer alone, no other peer
//! continues it and endgame does not duplicate its requests, so if it fails again its one
//! contributor is the liar. [`Picker::abandon`] gives an owned chunk up (its owner refused
//! or left) so that the next peer starts it afresh.
//!
//! The picker buffers the blocks of started chunks until the chunk is complete; the
//! caller then verifies it as a whole. Its memory is bounded by the number of started
//! chunks, which is bounded by the caller's request pipeline (every started chunk has a
//! block outstanding or received).

use std::collections::BTreeMap;

use bytes::Bytes;
use peerlab_overlay::{PeerId, Rng};

use crate::bitfield::Bitfield;
use crate::manifest::Manifest;

/// How new chunks are chosen once the random-first phase is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Strategy {
    /// Rarest among our neighbours first (BitTorrent's policy).
    #[default]
    RarestFirst,
    /// Uniformly random (the baseline Legout et al. compare against).
    Random,
}

/// Picker parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Chunks picked at random before rarest first starts. Default 4 (libtorrent's value).
    pub random_first: u32,
    /// Most outstanding requests for one block in endgame mode. Default 2: enough to route
    /// around one slow peer without multiplying the tail traffic.
    pub endgame_copies: u8,
    /// Rarest first or random.
    pub strategy: Strategy,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            random_first: 4,
            endgame_copies: 2,
            strategy: Strategy::RarestFirst,
        }
    }
}

/// One block of a chunk.
pub type BlockRef = (u32, u32);

#[derive(Debug, Clone)]
enum Slot {
    /// Not requested from anyone.
    Missing,
    /// Requested from this many peers, none answered yet.
    Requested(u8),
    /// Received (not yet verified: that happens when the whole chunk is in).
    Received(Bytes, PeerId),
}

#[derive(Debug)]
struct Partial {
    slots: Vec<Slot>,
    received: u32,
    /// Slots still `Missing`.
    missing: u32,
    /// For a chunk on parole: the one peer it is fetched from.
    owner: Option<PeerId>,
}

/// What became of a received block.
#[derive(Debug)]
pub enum BlockOutcome {
    /// Stored; the chunk still misses blocks.
    Stored,
    /// This block was already received (an endgame duplicate) or its chunk is held.
    Duplicate,
    /// The chunk is not being downloaded (an unrequested block); dropped.
    Unwanted,
    /// The chunk is complete: its blocks in order with the peer that sent each. The
    /// caller verifies it, then calls [`Picker::mark_have`] or lets it be fetched again.
    Complete(Vec<(Bytes, PeerId)>),
}

/// Per-transfer piece-picking state.
#[derive(Debug)]
pub struct Picker {
    config: Config,
    have: Bitfield,
    have_count: u32,
    availability: Vec<u32>,
    partial: BTreeMap<u32, Partial>,
    /// Slots in state `Missing` over all partial chunks.
    missing_in_partials: u64,
    /// The chunks neither held nor started, shuffled once (at the first chunk start, with
    /// that call's random source): a new chunk is the first one here that the peer has at
    /// the least availability, so ties are broken at random and, in the common case of a
    /// peer holding what we lack, a chunk start costs a short scan instead of a pass over
    /// every chunk of the file (which made a download quadratic in its chunk count).
    unstarted: Vec<u32>,
    /// Where each chunk is in `unstarted` ([`NOT_LISTED`] if it is not there).
    position: Vec<u32>,
    /// `by_availability[a]`: chunks in `unstarted` with availability `a`. Its first
    /// non-zero entry from `a = 1` is the floor no candidate can be below, which ends a scan
    /// early.
    by_availability: Vec<u32>,
    /// Whether `unstarted` has been shuffled.
    shuffled: bool,
    /// Chunks on parole: fetched whole from one peer when next started.
    parole: Bitfield,
}

/// [`Picker::position`] of a chunk that is held or started.
const NOT_LISTED: u32 = u32::MAX;

impl Picker {
    /// A picker for `chunks` chunks, of which `have` are already held.
    pub fn new(config: Config, have: Bitfield) -> Picker {
        let n = have.len();
        let unstarted: Vec<u32> = (0..n).filter(|&i| !have.get(i)).collect();
        let mut position = vec![NOT_LISTED; n as usize];
        for (k, &i) in unstarted.iter().enumerate() {
            position[i as usize] = k as u32;
        }
        Picker {
            config,
            have_count: have.count(),
            have,
            availability: vec![0; n as usize],
            partial: BTreeMap::new(),
            missing_in_partials: 0,
            by_availability: vec![unstarted.len() as u32],
            unstarted,
            position,
            shuffled: false,
            parole: Bitfield::new(n),
        }
    }

    /// Takes chunk `i` out of the unstarted list (it was started or is now held).
    fn unlist(&mut self, i: u32) {
        let Some(&k) = self.position.get(i as usize) else {
            return;
        };
        if k == NOT_LISTED {
            return;
        }
        self.unstarted.swap_remove(k as usize);
        if let Some(&moved) = self.unstarted.get(k as usize) {
            self.position[moved as usize] = k;
        }
        self.position[i as usize] = NOT_LISTED;
        self.by_availability[self.availability[i as usize] as usize] -= 1;
    }

    /// Puts chunk `i` back in the unstarted list (its blocks arrived but it is not held yet:
    /// if it fails verification it must be startable again).
    fn relist(&mut self, i: u32) {
        if self.have.get(i) || self.position.get(i as usize) != Some(&NOT_LISTED) {
            return;
        }
        self.position[i as usize] = self.unstarted.len() as u32;
        self.unstarted.push(i);
        self.count_availability(self.availability[i as usize], 1);
    }

    /// Adds `delta` (±1) to the number of unstarted chunks at availability `a`.
    fn count_availability(&mut self, a: u32, delta: i32) {
        let a = a as usize;
        if self.by_availability.len() <= a {
            self.by_availability.resize(a + 1, 0);
        }
        self.by_availability[a] = self.by_availability[a].saturating_add_signed(delta);
    }

    /// Changes chunk `i`'s availability by `delta` (±1), keeping the counts in step.
    fn change_availability(&mut self, i: u32, delta: i32) {
        let Some(&a) = self.availability.get(i as usize) else {
            return;
        };
        let b = a.saturating_add_signed(delta);
        self.availability[i as usize] = b;
        if self.position[i as usize] != NOT_LISTED && a != b {
            self.count_availability(a, -1);
            self.count_availability(b, 1);
        }
    }

    /// Chunks we hold.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Whether every chunk is held.
    pub fn is_complete(&self) -> bool {
        self.have_count == self.have.len()
    }

    /// How many neighbours hold chunk `i`.
    pub fn availability(&self, i: u32) -> u32 {
        self.availability.get(i as usize).copied().unwrap_or(0)
    }

    /// Number of chunks started and not complete.
    pub fn partial_count(&self) -> usize {
        self.partial.len()
    }

    /// Whether every block still missing has been requested at least once.
    pub fn in_endgame(&self) -> bool {
        let unstarted = self.have.len() - self.have_count - self.partial.len() as u32;
        !self.is_complete() && unstarted == 0 && self.missing_in_partials == 0
    }

    /// A neighbour announced all of `bits`.
    pub fn add_peer(&mut self, bits: &Bitfield) {
        for i in bits.ones() {
            self.change_availability(i, 1);
        }
    }

    /// A neighbour left; its chunks no longer count.
    pub fn remove_peer(&mut self, bits: &Bitfield) {
        for i in bits.ones() {
            self.change_availability(i, -1);
        }
    }

    /// A neighbour announced chunk `i`.
    pub fn add_have(&mut self, i: u32) {
        self.change_availability(i, 1);
    }

    /// Picks the next block to request from `peer`, which holds `peer_has`, skipping
    /// blocks already outstanding at that peer (`outstanding`). Marks it requested.
    pub fn pick(
        &mut self,
        manifest: &Manifest,
        peer: PeerId,
        peer_has: &Bitfield,
        outstanding: &[BlockRef],
        rng: &mut Rng,
    ) -> Option<BlockRef> {
        // 1. Strict priority: continue a started chunk (one on parole only by its owner).
        if self.missing_in_partials > 0 {
            for (&chunk, p) in self.partial.iter_mut() {
                if p.missing == 0 || !peer_has.get(chunk) || p.owner.is_some_and(|o| o != peer) {
                    continue;
                }
                if let Some(b) = p.slots.iter().position(|s| matches!(s, Slot::Missing)) {
                    p.slots[b] = Slot::Requested(1);
                    p.missing -= 1;
                    self.missing_in_partials -= 1;
                    return Some((chunk, b as u32));
                }
            }
        }
        // 2./3. Start a new chunk.
        if let Some(chunk) = self.choose_new(peer_has, rng) {
            let blocks = manifest.block_count(chunk).max(1);
            let mut slots = vec![Slot::Missing; blocks as usize];
            slots[0] = Slot::Requested(1);
            self.unlist(chunk);
            let owner = self.parole.get(chunk).then_some(peer);
            self.partial.insert(
                chunk,
                Partial {
                    slots,
                    received: 0,
                    missing: blocks - 1,
                    owner,
                },
            );
            self.missing_in_partials += (blocks - 1) as u64;
            return Some((chunk, 0));
        }
        // 4. Endgame: duplicate an outstanding request (never one of a chunk on parole).
        if self.in_endgame() {
            for (&chunk, p) in self.partial.iter_mut() {
                if !peer_has.get(chunk) || p.owner.is_some() {
                    continue;
                }
                for (b, s) in p.slots.iter_mut().enumerate() {
                    if let Slot::Requested(n) = s
                        && *n < self.config.endgame_copies
                        && !outstanding.contains(&(chunk, b as u32))
                    {
                        *n += 1;
                        return Some((chunk, b as u32));
                    }
                }
            }
        }
        None
    }

    /// The chunk to start: among those `peer_has` holds and we neither hold nor have
    /// started, the least available (every one equally, in the random phase); among equals
    /// the first in the shuffled unstarted list, i.e. a random one. The scan stops at the
    /// first candidate at the lowest non-zero availability any unstarted chunk has.
    fn choose_new(&mut self, peer_has: &Bitfield, rng: &mut Rng) -> Option<u32> {
        if !self.shuffled {
            rng.shuffle(&mut self.unstarted);
            for (k, &i) in self.unstarted.iter().enumerate() {
                self.position[i as usize] = k as u32;
            }
            self.shuffled = true;
        }
        let random =
            self.have_count < self.config.random_first || self.config.strategy == Strategy::Random;
        // A chunk the peer has counts the peer in its availability, so the least a candidate
        // can have is the lowest availability of one or more among unstarted chunks; chunks
        // no neighbour has (0: not yet revealed by a super-seeder, say) cannot be picked
        // from this peer and must not keep the scan going.
        let floor = if random {
            0
        } else {
            self.by_availability
                .iter()
                .enumerate()
                .skip(1)
                .find(|&(_, &n)| n > 0)
                .map_or(u32::MAX, |(a, _)| a as u32)
        };
        let mut best: Option<(u32, u32)> = None;
        for &i in &self.unstarted {
            if !peer_has.get(i) {
                continue;
            }
            let a = if random {
                0
            } else {
                self.availability[i as usize]
            };
            if a <= floor {
                return Some(i);
            }
            if best.is_none_or(|(b, _)| a < b) {
                best = Some((a, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// Whether [`Picker::pick`] could find a block in `peer_has` for `peer` right now: a
    /// chunk not held and not started, a started chunk (not another peer's on parole) with a
    /// block nobody has been asked for, or — in endgame — a block requested fewer than
    /// [`Config::endgame_copies`] times. Stricter than [`Picker::wants_from`]: a peer whose
    /// only chunks we lack are already fully requested elsewhere has nothing to give us
    /// *now*.
    pub fn can_pick(&self, peer: PeerId, peer_has: &Bitfield) -> bool {
        let endgame = self.in_endgame();
        for i in peer_has.ones_missing_from(&self.have) {
            let Some(p) = self.partial.get(&i) else {
                return true;
            };
            if p.owner.is_some_and(|o| o != peer) {
                continue;
            }
            if p.missing > 0 {
                return true;
            }
            if endgame
                && p.owner.is_none()
                && p.slots
                    .iter()
                    .any(|s| matches!(s, Slot::Requested(n) if *n < self.config.endgame_copies))
            {
                return true;
            }
        }
        false
    }

    /// Whether `peer_has` holds a chunk we still need (not held).
    pub fn wants_from(&self, peer_has: &Bitfield) -> bool {
        peer_has.has_any_missing_from(&self.have)
    }

    /// A request for block `r` will not be answered (choke, timeout, peer gone).
    pub fn request_dropped(&mut self, r: BlockRef) {
        if let Some(p) = self.partial.get_mut(&r.0)
            && let Some(s) = p.slots.get_mut(r.1 as usize)
            && let Slot::Requested(n) = s
        {
            if *n <= 1 {
                *s = Slot::Missing;
                p.missing += 1;
                self.missing_in_partials += 1;
            } else {
                *n -= 1;
            }
        }
    }

    /// Block `r` arrived from `from` (its length has been checked by the caller).
    pub fn block_received(&mut self, r: BlockRef, data: Bytes, from: PeerId) -> BlockOutcome {
        if self.have.get(r.0) {
            return BlockOutcome::Duplicate;
        }
        let Some(p) = self.partial.get_mut(&r.0) else {
            return BlockOutcome::Unwanted;
        };
        let Some(slot) = p.slots.get_mut(r.1 as usize) else {
            return BlockOutcome::Unwanted;
        };
        match slot {
            Slot::Received(..) => return BlockOutcome::Duplicate,
            Slot::Missing => {
                p.missing -= 1;
                self.missing_in_partials -= 1;
            }
            Slot::Requested(_) => {}
        }
        *slot = Slot::Received(data, from);
        p.received += 1;
        if (p.received as usize) < p.slots.len() {
            return BlockOutcome::Stored;
        }
        let Some(p) = self.partial.remove(&r.0) else {
            return BlockOutcome::Stored;
        };
        self.relist(r.0);
        let blocks = p
            .slots
            .into_iter()
            .filter_map(|s| match s {
                Slot::Received(d, f) => Some((d, f)),
                _ => None,
            })
            .collect();
        BlockOutcome::Complete(blocks)
    }

    /// Puts chunk `i` on parole: whoever starts it next fetches all of it (see the module
    /// docs). Lifted when the chunk is held.
    pub fn put_on_parole(&mut self, i: u32) {
        if !self.have.get(i) {
            self.parole.set(i);
        }
    }

    /// Whether chunk `i` is on parole.
    pub fn on_parole(&self, i: u32) -> bool {
        self.parole.get(i)
    }

    /// The peer a started chunk on parole is fetched from.
    pub fn owner(&self, i: u32) -> Option<PeerId> {
        self.partial.get(&i)?.owner
    }

    /// Gives up the started chunk `i` (its owner refused or left): its blocks are dropped
    /// and the next peer to start it fetches it whole. The caller withdraws the requests
    /// still outstanding for it.
    pub fn abandon(&mut self, i: u32) {
        if let Some(p) = self.partial.remove(&i) {
            self.missing_in_partials -= p.missing as u64;
            self.relist(i);
        }
    }

    /// The started chunks on parole that `peer` owns.
    pub fn owned_by(&self, peer: PeerId) -> Vec<u32> {
        self.partial
            .iter()
            .filter(|(_, p)| p.owner == Some(peer))
            .map(|(&i, _)| i)
            .collect()
    }

    /// Chunk `i` verified and stored.
    pub fn mark_have(&mut self, i: u32) {
        if self.have.set(i) {
            self.have_count += 1;
        }
        self.parole.clear(i);
        self.unlist(i);
        if let Some(p) = self.partial.remove(&i) {
            self.missing_in_partials -= p.missing as u64;
        }
    }

    /// Blocks received so far (held chunks are not counted).
    pub fn blocks_buffered(&self) -> u64 {
        self.partial.values().map(|p| p.received as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(chunks: u32, chunk_size: u32) -> Manifest {
        let data = vec![7u8; (chunks * chunk_size) as usize];
        Manifest::from_bytes("f", &data, chunk_size).unwrap()
    }

    fn bits(n: u32, ones: &[u32]) -> Bitfield {
        let mut b = Bitfield::new(n);
        for &i in ones {
            b.set(i);
        }
        b
    }

    /// The peer every pick is for, where it does not matter.
    fn peer() -> PeerId {
        PeerId::synthetic(100)
    }

    fn picker(n: u32, random_first: u32) -> Picker {
        Picker::new(
            Config {
                random_first,
                ..Config::default()
            },
            Bitfield::new(n),
        )
    }

    #[test]
    fn rarest_first_after_random_first() {
        let m = manifest(8, 1024);
        let mut p = picker(8, 0);
        // Chunk 5 is held by one neighbour, everything else by three.
        let all = Bitfield::full(8);
        p.add_peer(&all);
        p.add_peer(&all);
        p.add_peer(&bits(8, &[0, 1, 2, 3, 4, 6, 7]));
        let mut rng = Rng::seed(1);
        assert_eq!(p.pick(&m, peer(), &all, &[], &mut rng), Some((5, 0)));
    }

    #[test]
    fn random_first_ignores_rarity_and_random_strategy_spreads() {
        let m = manifest(64, 1024);
        let all = Bitfield::full(64);
        let mut rare = Bitfield::full(64);
        rare.clear(63);
        let mut picked = std::collections::BTreeSet::new();
        for seed in 0..20 {
            let mut p = picker(64, 4);
            p.add_peer(&all);
            p.add_peer(&rare);
            picked.insert(
                p.pick(&m, peer(), &all, &[], &mut Rng::seed(seed))
                    .unwrap()
                    .0,
            );
        }
        assert!(picked.len() > 5, "random first spreads: {picked:?}");
        // After the random-first phase, rarest (63) is always chosen.
        for seed in 0..5 {
            let mut p = picker(64, 0);
            p.add_peer(&all);
            p.add_peer(&rare);
            assert_eq!(
                p.pick(&m, peer(), &all, &[], &mut Rng::seed(seed)),
                Some((63, 0))
            );
        }
    }

    #[test]
    fn ties_among_the_rarest_are_broken_at_random() {
        let m = manifest(64, 1024);
        let all = Bitfield::full(64);
        let rare = [3, 17, 22, 40, 41, 58];
        let common = bits(
            64,
            &(0..64).filter(|i| !rare.contains(i)).collect::<Vec<_>>(),
        );
        let mut picked = std::collections::BTreeSet::new();
        for seed in 0..30 {
            let mut p = picker(64, 0);
            p.add_peer(&all);
            p.add_peer(&common);
            let (c, _) = p.pick(&m, peer(), &all, &[], &mut Rng::seed(seed)).unwrap();
            assert!(
                rare.contains(&c),
                "seed {seed}: {c} is not among the rarest"
            );
            picked.insert(c);
        }
        assert!(picked.len() >= 4, "ties spread over seeds: {picked:?}");
    }

    #[test]
    fn rarest_first_follows_availability_that_changes_after_the_first_pick() {
        let m = manifest(32, 1024);
        let all = Bitfield::full(32);
        let mut p = picker(32, 0);
        p.add_peer(&all);
        let mut rng = Rng::seed(3);
        let (first, _) = p.pick(&m, peer(), &all, &[], &mut rng).unwrap();
        p.mark_have(first);
        // A second neighbour arrives with everything but chunk 9 (or 10, if 9 is held):
        // that chunk is now the rarest and must come next, wherever the shuffle put it.
        let rare = if first == 9 { 10 } else { 9 };
        let mut most = Bitfield::full(32);
        most.clear(rare);
        p.add_peer(&most);
        assert_eq!(p.pick(&m, peer(), &all, &[], &mut rng), Some((rare, 0)));
        p.mark_have(rare);
        // Once it leaves, every chunk is equally rare again and the picks cover the rest.
        p.remove_peer(&most);
        let mut seen = std::collections::BTreeSet::from([first, rare]);
        while let Some((c, _)) = p.pick(&m, peer(), &all, &[], &mut rng) {
            assert!(seen.insert(c), "chunk {c} started twice");
            p.mark_have(c);
        }
        assert_eq!(seen.len(), 32);
        assert!(p.is_complete());
    }

    #[test]
    fn a_chunk_that_failed_verification_can_be_started_again() {
        let m = manifest(4, 1024); // one block per chunk
        let all = Bitfield::full(4);
        let mut p = picker(4, 0);
        p.add_peer(&all);
        let mut rng = Rng::seed(5);
        let (bad, _) = p.pick(&m, peer(), &all, &[], &mut rng).unwrap();
        let from = PeerId::synthetic(9);
        assert!(matches!(
            p.block_received((bad, 0), Bytes::from_static(b"x"), from),
            BlockOutcome::Complete(_)
        ));
        // The caller found the chunk corrupt and did not mark it held: it is started
        // again (once), and the download completes.
        let mut started = vec![];
        while let Some((c, _)) = p.pick(&m, peer(), &all, &[], &mut rng) {
            started.push(c);
            p.mark_have(c);
        }
        started.sort();
        assert_eq!(started, vec![0, 1, 2, 3], "bad chunk {bad}");
        assert!(p.is_complete());
    }

    #[test]
    fn strict_priority_finishes_started_chunks() {
        let m = manifest(4, 64 * 1024); // 4 blocks per chunk
        let mut p = picker(4, 0);
        let all = Bitfield::full(4);
        p.add_peer(&all);
        let mut rng = Rng::seed(3);
        let (c, b) = p.pick(&m, peer(), &all, &[], &mut rng).unwrap();
        assert_eq!(b, 0);
        // The next three requests continue the same chunk, in block order.
        for want in 1..4 {
            assert_eq!(p.pick(&m, peer(), &all, &[], &mut rng), Some((c, want)));
        }
        // Only then is a new chunk started.
        let (c2, b2) = p.pick(&m, peer(), &all, &[], &mut rng).unwrap();
        assert!(c2 != c && b2 == 0);
        // A peer without chunk c cannot continue it.
        let mut p2 = picker(4, 0);
        let (c3, _) = p2.pick(&m, peer(), &bits(4, &[1]), &[], &mut rng).unwrap();
        assert_eq!(c3, 1);
        assert_eq!(
            p2.pick(&m, peer(), &bits(4, &[2]), &[], &mut rng),
            Some((2, 0))
        );
    }

    #[test]
    fn never_picks_what_the_peer_lacks_or_we_hold() {
        let m = manifest(4, 1024);
        let mut p = picker(4, 0);
        p.mark_have(1);
        let mut rng = Rng::seed(0);
        assert_eq!(p.pick(&m, peer(), &bits(4, &[1]), &[], &mut rng), None);
        assert_eq!(p.pick(&m, peer(), &bits(4, &[]), &[], &mut rng), None);
    }

    #[test]
    fn dropped_requests_are_picked_again() {
        let m = manifest(1, 1024);
        let mut p = picker(1, 0);
        let all = Bitfield::full(1);
        let mut rng = Rng::seed(0);
        let r = p.pick(&m, peer(), &all, &[], &mut rng).unwrap();
        p.request_dropped(r);
        assert!(!p.in_endgame());
        assert_eq!(p.pick(&m, peer(), &all, &[], &mut rng), Some(r));
    }

    #[test]
    fn endgame_duplicates_outstanding_requests_up_to_the_limit() {
        let m = manifest(1, 2 * 1024);
        let mut p = picker(1, 0);
        let all = Bitfield::full(1);
        let mut rng = Rng::seed(0);
        let r = p.pick(&m, peer(), &all, &[], &mut rng).unwrap();
        assert!(p.in_endgame());
        // Same peer: nothing new (it already has r outstanding).
        assert_eq!(p.pick(&m, peer(), &all, &[r], &mut rng), None);
        // Another peer gets a duplicate, a third one nothing (endgame_copies = 2).
        assert_eq!(p.pick(&m, peer(), &all, &[], &mut rng), Some(r));
        assert_eq!(p.pick(&m, peer(), &all, &[], &mut rng), None);
        let a = PeerId::synthetic(1);
        match p.block_received(r, Bytes::from_static(&[7; 1024]), a) {
            BlockOutcome::Complete(blocks) => assert_eq!(blocks.len(), 1),
            o => panic!("{o:?}"),
        }
        // The second copy is a duplicate: the caller cancels it, nothing changes.
        assert!(matches!(
            p.block_received(r, Bytes::from_static(&[7; 1024]), a),
            BlockOutcome::Unwanted
        ));
        p.mark_have(0);
        assert!(p.is_complete() && !p.in_endgame());
        assert!(matches!(
            p.block_received(r, Bytes::new(), a),
            BlockOutcome::Duplicate
        ));
    }

    #[test]
    fn availability_tracks_peers() {
        let mut p = picker(3, 0);
        let b = bits(3, &[0, 2]);
        p.add_peer(&b);
        p.add_have(1);
        assert_eq!(
            (p.availability(0), p.availability(1), p.availability(2)),
            (1, 1, 1)
        );
        p.remove_peer(&b);
        assert_eq!((p.availability(0), p.availability(2)), (0, 0));
        assert!(p.wants_from(&bits(3, &[1])));
        p.mark_have(1);
        assert!(!p.wants_from(&bits(3, &[1])));
    }

    #[test]
    fn can_pick_only_when_a_block_is_unrequested() {
        let m = manifest(2, 2 * crate::manifest::BLOCK_SIZE);
        let mut pk = picker(2, 0);
        let only0 = bits(2, &[0]);
        let mut rng = Rng::seed(1);
        assert!(pk.can_pick(peer(), &only0));
        // Both blocks of chunk 0 requested: nothing left to ask a holder of chunk 0 only.
        assert_eq!(pk.pick(&m, peer(), &only0, &[], &mut rng), Some((0, 0)));
        assert_eq!(pk.pick(&m, peer(), &only0, &[], &mut rng), Some((0, 1)));
        assert!(!pk.can_pick(peer(), &only0));
        assert!(pk.wants_from(&only0));
        // Chunk 1 is unstarted; a dropped request makes chunk 0 requestable again.
        assert!(pk.can_pick(peer(), &bits(2, &[0, 1])));
        pk.request_dropped((0, 1));
        assert!(pk.can_pick(peer(), &only0));
    }
    #[test]
    fn a_chunk_on_parole_is_fetched_whole_from_the_peer_that_starts_it() {
        let m = manifest(2, 4 * crate::manifest::BLOCK_SIZE); // 4 blocks per chunk
        let all = Bitfield::full(2);
        let (a, b) = (PeerId::synthetic(1), PeerId::synthetic(2));
        let mut pk = picker(2, 0);
        pk.add_peer(&all);
        pk.add_peer(&all);
        pk.put_on_parole(0);
        pk.put_on_parole(1);
        let mut rng = Rng::seed(4);
        let (c, _) = pk.pick(&m, a, &all, &[], &mut rng).unwrap();
        assert_eq!(pk.owner(c), Some(a));
        // `b` may not continue `a`'s chunk: it starts the other one and owns it.
        let (d, _) = pk.pick(&m, b, &all, &[], &mut rng).unwrap();
        assert_ne!(c, d);
        assert_eq!(pk.owner(d), Some(b));
        // Each continues only its own chunk; nobody duplicates the other's requests, even
        // once every block is requested (endgame).
        for _ in 0..3 {
            assert_eq!(pk.pick(&m, a, &all, &[], &mut rng).map(|r| r.0), Some(c));
            assert_eq!(pk.pick(&m, b, &all, &[], &mut rng).map(|r| r.0), Some(d));
        }
        assert!(pk.in_endgame());
        assert_eq!(pk.pick(&m, a, &all, &[], &mut rng), None);
        assert!(!pk.can_pick(b, &all));
        // `a` goes away: its chunk is abandoned and `b` may start it afresh, alone.
        assert_eq!(pk.owned_by(a), vec![c]);
        pk.abandon(c);
        assert_eq!(pk.owner(c), None);
        assert_eq!(pk.pick(&m, b, &all, &[], &mut rng), Some((c, 0)));
        assert_eq!(pk.owner(c), Some(b));
        // Parole ends when the chunk is held.
        pk.mark_have(c);
        assert!(!pk.on_parole(c) && pk.on_parole(d));
    }

    #[test]
    fn without_parole_any_peer_continues_a_started_chunk() {
        let m = manifest(1, 4 * crate::manifest::BLOCK_SIZE);
        let all = Bitfield::full(1);
        let (a, b) = (PeerId::synthetic(1), PeerId::synthetic(2));
        let mut pk = picker(1, 0);
        let mut rng = Rng::seed(4);
        assert_eq!(pk.pick(&m, a, &all, &[], &mut rng), Some((0, 0)));
        assert_eq!(pk.owner(0), None);
        assert_eq!(pk.pick(&m, b, &all, &[], &mut rng), Some((0, 1)));
    }
}
