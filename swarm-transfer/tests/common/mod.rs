//! A tiny in-memory network for swarm cores: messages are delivered in FIFO order and
//! instantly, timers fire in deadline order and move the clock; tests inject messages as
//! any peer, including peers that are not cores at all (scripted adversaries).

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use peerlab_overlay::{Context, Instant, Offence, Outbox, Output, PeerId, Protocol, Rng};
use peerlab_swarm::{
    Bitfield, ChunkStore, Command, Config, ContentId, Event, Manifest, MemoryStore, Message,
    ProtocolError, StoreError, StoreFactory, Swarm, Timer,
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

/// A message on its way: sender, receiver, message.
pub(crate) type InFlight = (PeerId, PeerId, Message);

pub(crate) struct Net {
    pub(crate) nodes: BTreeMap<PeerId, (Core, Rng)>,
    pub(crate) queue: VecDeque<InFlight>,
    pub(crate) timers: BTreeMap<(Instant, u64), (PeerId, Timer)>,
    pub(crate) seq: u64,
    pub(crate) now: Instant,
    /// Events, each with the length of `log` when it was emitted (what had been sent
    /// before it).
    pub(crate) events: Vec<(PeerId, Event)>,
    pub(crate) marks: Vec<usize>,
    /// (reporter, offender, offence).
    pub(crate) offences: Vec<(PeerId, PeerId, Offence)>,
    /// Every message sent by a core, in order.
    pub(crate) log: Vec<InFlight>,
}

impl Net {
    pub(crate) fn new() -> Net {
        Net {
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            timers: BTreeMap::new(),
            seq: 0,
            now: Instant::ZERO,
            events: Vec::new(),
            marks: Vec::new(),
            offences: Vec::new(),
            log: Vec::new(),
        }
    }

    pub(crate) fn with<R>(
        &mut self,
        p: PeerId,
        f: impl FnOnce(&mut Core, &mut Context<'_, Message, Timer, Event>) -> R,
    ) -> R {
        let mut out = Outbox::new();
        let (core, rng) = self.nodes.get_mut(&p).expect("node");
        let r = f(core, &mut Context::new(self.now, rng, &mut out));
        for o in out.drain() {
            match o {
                Output::Send { to, msg } => {
                    self.log.push((p, to, msg.clone()));
                    self.queue.push_back((p, to, msg));
                }
                Output::Timer { at, timer } => {
                    self.seq += 1;
                    self.timers.insert((at, self.seq), (p, timer));
                }
                Output::Event(e) => {
                    self.events.push((p, e));
                    self.marks.push(self.log.len());
                }
                Output::Offence { peer, offence } => self.offences.push((p, peer, offence)),
            }
        }
        r
    }

    pub(crate) fn add(&mut self, n: u64) -> PeerId {
        self.add_with(n, Config::default())
    }

    pub(crate) fn add_with(&mut self, n: u64, config: Config) -> PeerId {
        let p = PeerId::synthetic(n);
        self.nodes
            .insert(p, (Swarm::new(config, Factory).unwrap(), Rng::seed(n)));
        self.with(p, |c, cx| c.handle_start(cx));
        p
    }

    pub(crate) fn command(&mut self, p: PeerId, cmd: Command<TestStore>) {
        self.with(p, |c, cx| c.handle_command(cx, cmd));
    }

    /// Delivers `msg` to `to` as if `from` had sent it.
    pub(crate) fn inject(&mut self, from: PeerId, to: PeerId, body: Body, cid: ContentId) {
        self.with(to, |c, cx| {
            c.handle_message(cx, from, Message { cid, body })
        });
    }

    /// Runs until `until` (messages are instantaneous; timers advance the clock).
    pub(crate) fn run(&mut self, until: Instant) {
        assert!(
            self.run_tapped(until, 2_000_000, |_| Vec::new()),
            "livelock"
        );
    }

    /// Runs until `until` or for at most `steps` deliveries and timers; true if it got to
    /// `until` (or ran out of work). Before each message is delivered, `tap` sees it and
    /// may return messages that are delivered first, at once (an adversary that reacts to
    /// what it observes on the wire).
    pub(crate) fn run_tapped(
        &mut self,
        until: Instant,
        steps: usize,
        mut tap: impl FnMut(&InFlight) -> Vec<InFlight>,
    ) -> bool {
        for _ in 0..steps {
            if let Some(m) = self.queue.pop_front() {
                for (from, to, msg) in tap(&m) {
                    if self.nodes.contains_key(&to) {
                        self.with(to, |c, cx| c.handle_message(cx, from, msg));
                    }
                }
                let (from, to, msg) = m;
                if self.nodes.contains_key(&to) {
                    self.with(to, |c, cx| c.handle_message(cx, from, msg));
                }
                continue;
            }
            let Some((&(at, seq), _)) = self.timers.first_key_value() else {
                return true;
            };
            if at > until {
                return true;
            }
            let (p, t) = self.timers.remove(&(at, seq)).unwrap();
            self.now = at;
            if self.nodes.contains_key(&p) {
                self.with(p, |c, cx| c.handle_timer(cx, t));
            }
        }
        false
    }

    pub(crate) fn core(&self, p: PeerId) -> &Core {
        &self.nodes[&p].0
    }

    pub(crate) fn penalties(&self, at: PeerId) -> Vec<ProtocolError> {
        self.events
            .iter()
            .filter(|(p, _)| *p == at)
            .filter_map(|(_, e)| match e {
                Event::PeerPenalised { error, .. } => Some(error.clone()),
                _ => None,
            })
            .collect()
    }

    /// The offences `reporter` reported against `offender`.
    pub(crate) fn offences(&self, reporter: PeerId, offender: PeerId) -> Vec<Offence> {
        self.offences
            .iter()
            .filter(|(r, o, _)| *r == reporter && *o == offender)
            .map(|(_, _, o)| *o)
            .collect()
    }

    pub(crate) fn sent(&self, from: PeerId, to: PeerId, kind: &str) -> usize {
        self.log
            .iter()
            .filter(|(f, t, m)| *f == from && *t == to && m.body.kind() == kind)
            .count()
    }

    /// Whether `p` completed the transfer.
    pub(crate) fn completed(&self, p: PeerId) -> bool {
        self.events
            .iter()
            .any(|(q, e)| *q == p && matches!(e, Event::Completed { .. }))
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
