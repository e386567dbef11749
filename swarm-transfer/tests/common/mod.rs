//! Swarm cores on the shared test harness ([`peerlab_sim::testing::Net`]): stores that
//! serve corrupt blocks on purpose, and the checks the tests make. Tests inject messages as
//! any peer, including peers that are not cores at all (scripted adversaries).

#![allow(dead_code)]

use bytes::Bytes;
use peerlab_overlay::{Instant, Offence, PeerId, Rng};
use peerlab_swarm::{
    Bitfield, ChunkStore, Command, Config, ContentId, Event, Manifest, MemoryStore, Message,
    ProtocolError, StoreError, StoreFactory, Swarm,
};

/// Which blocks a store serves corrupted (an adversary's store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Poison {
    /// None: an honest store.
    Never,
    /// Every block.
    Every,
    /// The first block of every chunk only: one bad block in each chunk it helps with.
    FirstBlock,
}

/// A memory store that serves blocks as its [`Poison`] says.
pub(crate) struct TestStore {
    pub(crate) inner: MemoryStore,
    pub(crate) poison: Poison,
}

impl ChunkStore for TestStore {
    fn held(&self) -> &Bitfield {
        self.inner.held()
    }
    fn read_block(&mut self, chunk: u32, offset: u32, len: u32) -> Result<Bytes, StoreError> {
        let b = self.inner.read_block(chunk, offset, len)?;
        if self.poison == Poison::Every || (self.poison == Poison::FirstBlock && offset == 0) {
            let mut v = b.to_vec();
            v[0] ^= 0xff;
            return Ok(Bytes::from(v));
        }
        Ok(b)
    }
    fn write_chunk(&mut self, chunk: u32, blocks: &[Bytes]) -> Result<(), StoreError> {
        self.inner.write_chunk(chunk, blocks)
    }
    fn finish(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

pub(crate) struct Factory;

impl StoreFactory for Factory {
    type Store = TestStore;
    fn open(&mut self, m: &Manifest) -> Result<TestStore, StoreError> {
        Ok(TestStore {
            inner: MemoryStore::empty(m),
            poison: Poison::Never,
        })
    }
}

pub(crate) type Core = Swarm<Factory>;

/// The test network: [`peerlab_sim::testing::Net`] of swarm cores, messages delivered at
/// once in FIFO order (before any timer due at the same instant), every message logged.
pub(crate) type Net = peerlab_sim::testing::Net<Core>;

/// Most events at one instant: messages take no time here, so a whole transfer, or a
/// retry loop that never ends, happens at one instant; the bound sits above the budget
/// of [`SwarmNet::run_bounded`] in the tests of endless retries, which stop on the budget.
const STEP_LIMIT: u64 = 2_000_000;

/// A net with the send log on; its seed only names failures, since every core gets its
/// own random source (see [`SwarmNet::add_with`]).
pub(crate) fn new_net() -> Net {
    Net::new(1).with_send_log().with_step_limit(STEP_LIMIT)
}

/// A net for retry loops that never end (hundreds of thousands of blocks): no send log,
/// and no codec round trip, so that the blocks are shared with the sender's store instead
/// of copied into every message.
pub(crate) fn endless_net() -> Net {
    Net::new(1).without_codec().with_step_limit(STEP_LIMIT)
}

/// What the swarm tests ask of a net of swarm cores.
pub(crate) trait SwarmNet {
    /// Adds a core for synthetic peer `n` with the default configuration.
    fn add_node(&mut self, n: u64) -> PeerId;
    /// Adds a core for synthetic peer `n`, its random source seeded with `n`.
    fn add_with(&mut self, n: u64, config: Config) -> PeerId;
    /// Delivers `body` about `cid` to `to` now, as if `from` had sent it.
    fn inject(&mut self, from: PeerId, to: PeerId, body: Body, cid: ContentId);
    /// Runs until `until`: messages are instantaneous, timers advance the clock.
    fn run(&mut self, until: Instant);
    /// Runs until `until` or for at most `steps` deliveries and timers; true if it got to
    /// `until` (or ran out of work), false if it was still busy after `steps`.
    fn run_bounded(&mut self, until: Instant, steps: u64) -> bool;
    /// A node's core.
    fn core(&self, p: PeerId) -> &Core;
    /// The protocol errors `at` penalised peers for, in order.
    fn penalties(&self, at: PeerId) -> Vec<ProtocolError>;
    /// The offences `reporter` reported against `offender`.
    fn offences_by(&self, reporter: PeerId, offender: PeerId) -> Vec<Offence>;
    /// How many messages of `kind` `from` sent to `to`.
    fn sent_count(&self, from: PeerId, to: PeerId, kind: &str) -> usize;
    /// Whether `p` completed the transfer.
    fn completed(&self, p: PeerId) -> bool;
}

impl SwarmNet for Net {
    fn add_node(&mut self, n: u64) -> PeerId {
        self.add_with(n, Config::default())
    }

    fn add_with(&mut self, n: u64, config: Config) -> PeerId {
        let p = PeerId::synthetic(n);
        self.add_with_rng(p, Swarm::new(config, Factory).unwrap(), Rng::seed(n));
        p
    }

    fn inject(&mut self, from: PeerId, to: PeerId, body: Body, cid: ContentId) {
        self.deliver(from, to, Message { cid, body });
    }

    fn run(&mut self, until: Instant) {
        self.advance_to(until);
    }

    fn run_bounded(&mut self, until: Instant, steps: u64) -> bool {
        let start = self.events_processed();
        !self.run_until(until, |net| net.events_processed() - start >= steps)
    }

    fn core(&self, p: PeerId) -> &Core {
        self.node(&p)
    }

    fn penalties(&self, at: PeerId) -> Vec<ProtocolError> {
        self.events()
            .iter()
            .filter(|(_, p, _)| *p == at)
            .filter_map(|(_, _, e)| match e {
                Event::PeerPenalised { error, .. } => Some(error.clone()),
                _ => None,
            })
            .collect()
    }

    fn offences_by(&self, reporter: PeerId, offender: PeerId) -> Vec<Offence> {
        self.offences()
            .iter()
            .filter(|(_, r, o, _)| *r == reporter && *o == offender)
            .map(|(_, _, _, o)| *o)
            .collect()
    }

    fn sent_count(&self, from: PeerId, to: PeerId, kind: &str) -> usize {
        self.sent()
            .iter()
            .filter(|m| m.from == from && m.to == to && m.msg.body.kind() == kind)
            .count()
    }

    fn completed(&self, p: PeerId) -> bool {
        self.events()
            .iter()
            .any(|(_, q, e)| *q == p && matches!(e, Event::Completed { .. }))
    }
}

pub(crate) use peerlab_swarm::Body;

pub(crate) fn secs(s: u64) -> Instant {
    Instant(s * 1_000_000)
}

pub(crate) fn file(n: usize) -> Bytes {
    let mut v = vec![0u8; n];
    Rng::seed(n as u64).fill(&mut v);
    Bytes::from(v)
}

/// `p` shares `data` in chunks of `chunk` bytes, serving corrupt blocks if `corrupt`.
pub(crate) fn share(
    net: &mut Net,
    p: PeerId,
    data: &Bytes,
    chunk: u32,
    corrupt: bool,
) -> (Manifest, ContentId) {
    let poison = if corrupt {
        Poison::Every
    } else {
        Poison::Never
    };
    share_poisoned(net, p, data, chunk, poison)
}

/// `p` shares `data` in chunks of `chunk` bytes, serving blocks as `poison` says.
pub(crate) fn share_poisoned(
    net: &mut Net,
    p: PeerId,
    data: &Bytes,
    chunk: u32,
    poison: Poison,
) -> (Manifest, ContentId) {
    let m = Manifest::from_bytes("f.bin", data, chunk).unwrap();
    let store = TestStore {
        inner: MemoryStore::full(&m, data.clone()),
        poison,
    };
    net.command(
        p,
        Command::Share {
            req: 1,
            manifest: m.clone(),
            store,
        },
    );
    let cid = m.content_id();
    (m, cid)
}

pub(crate) fn contents(net: &Net, p: PeerId, cid: &ContentId) -> Option<Vec<u8>> {
    net.core(p).store(cid)?.inner.contents()
}
