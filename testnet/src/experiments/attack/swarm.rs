//! `block-inject`: corrupt and unsolicited blocks against the real [`Swarm`] core.
//!
//! A flash crowd fetches one file ([`FILE_BYTES`], 64 KiB chunks of four 16 KiB blocks)
//! from [`SEEDERS`] honest seeders; every peer's uplink is 8 Mbit/s and its downlink
//! 100 Mbit/s, links 10–90 ms. Each fetcher is given [`NEIGHBOURS`] random peers of the
//! swarm and one seeder as providers, as a DHT provider lookup would. Hostile peers hold
//! the whole file and announce it (no super-seeding, in the baseline too), and their
//! uplinks are 100 Mbit/s: attackers rent servers.
//!
//! The attack goes after what a fetcher without defenses cannot survive: a chunk that
//! fails verification with blocks of several senders strikes nobody, and a block is taken
//! from any connected peer for a slot that is missing or requested. From [`ATTACK_FROM`]
//! each hostile peer opens the transfer with every honest fetcher (taking a connection
//! slot there) and answers interest with `Unchoke`, so fetchers ask it for blocks. It
//! serves none: every request is refused (`Reject`), so it never contributes a block to a
//! chunk but garbage. The first chunk a fetcher asks it for becomes that fetcher's target
//! (one per fetcher, at most [`MAX_TARGETS`] fetchers per hostile peer): right away and
//! then every [`ATTACK_EVERY`] until the fetcher announces the chunk, it sends one garbage
//! block for the chunk's first block, nobody having asked. Whenever the fetcher is
//! downloading the chunk, from whichever peers, one of its blocks is garbage: every
//! attempt fails verification with mixed senders. A fetcher with defenses drops each of
//! these blocks as unsolicited. An honest download succeeds when it completes before
//! [`DEADLINE`] and its bytes equal the file.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use peerlab_overlay::{Cx, Instant, Keypair, PeerId, Rng};
use peerlab_sim::{Latency, Sim, SimConfig};
use peerlab_swarm::bytes::Bytes;
use peerlab_swarm::{Bitfield, Body, Command, Config, ContentId, Event, Manifest, Message, Swarm};

use super::node::{Attack, Node};
use super::{ExperimentError, Offences, Outcome, Setup, sent_by};
use crate::experiments::swarm::{SimFactory, SimStore};

/// The file's size.
const FILE_BYTES: usize = 4 << 20;
/// Its chunk size: four blocks, so chunks can mix blocks of several senders.
const CHUNK_BYTES: u32 = 64 * 1024;
/// Honest seeders.
const SEEDERS: usize = 4;
/// Providers each fetcher starts with (besides one seeder).
const NEIGHBOURS: usize = 20;
/// When the attack starts (every fetcher has started by then).
const ATTACK_FROM: Duration = Duration::from_secs(1);
/// Time between two garbage blocks for one target chunk. A restarted chunk's first block
/// comes back from an honest peer at the earliest after a round trip of 20 ms and 16 ms on
/// an 8 Mbit/s uplink; garbage sent every 5 ms (arriving with 10–90 ms of jitter, about
/// 200 a second) leaves such a 36 ms window without garbage in e^-7 ≈ 0.1 % of attempts,
/// so the chunk fails again and again — without defenses — until the deadline.
const ATTACK_EVERY: Duration = Duration::from_millis(5);
/// Fetchers one hostile peer keeps a chunk poisoned at: its uplink's worth. One 16 KiB
/// block per target every [`ATTACK_EVERY`] is 3.3 MB/s, and 3 targets take 9.8 of its
/// 12.5 MB/s. The attacker denies a few downloads for sure rather than many by chance.
const MAX_TARGETS: usize = 3;
/// When an unfinished download counts as failed: five times the 8 s (virtual) in which the
/// last fetcher of the crowd completes without an attack (seeds 1–3, N = 500). A download
/// slowed by the attack's traffic or by a few failed chunks still counts as a success; one
/// that is five times late has been denied.
const DEADLINE: Duration = Duration::from_secs(40);
/// Uplink of every peer, bytes/s (8 Mbit/s).
const UPLINK: u64 = 1_000_000;
/// Downlink of every peer, bytes/s (100 Mbit/s).
const DOWNLINK: u64 = 12_500_000;
/// Uplink of a hostile peer, bytes/s (100 Mbit/s): attackers rent servers.
const ATTACKER_UPLINK: u64 = 12_500_000;

/// The hostile peer's injections.
pub(crate) struct Inject {
    cid: ContentId,
    manifest: Manifest,
    /// Every honest fetcher: the transfer is opened with each.
    victims: BTreeSet<PeerId>,
    /// The fetchers this peer poisons a chunk at (see [`assign`]).
    assigned: BTreeSet<PeerId>,
    /// Fetchers told that we hold every chunk.
    announced: BTreeSet<PeerId>,
    /// Whether the transfer was opened with every victim.
    opened: bool,
    /// The chunk kept poisoned at each fetcher, shared by the colluding hostile peers.
    targets: Rc<RefCell<BTreeMap<PeerId, u32>>>,
}

impl Attack<Swarm<SimFactory>> for Inject {
    fn schedule(&self) -> (Instant, Duration) {
        (Instant::ZERO + ATTACK_FROM, ATTACK_EVERY)
    }

    fn act(&mut self, _core: &mut Swarm<SimFactory>, cx: &mut Cx<'_, Swarm<SimFactory>>) {
        if cx.now() > Instant::ZERO + DEADLINE {
            return;
        }
        if !self.opened {
            self.opened = true;
            for &v in &self.victims {
                cx.send(
                    v,
                    Message {
                        cid: self.cid,
                        body: Body::Handshake,
                    },
                );
            }
        }
        let targets = self.targets.borrow();
        for v in &self.assigned {
            if let Some(&chunk) = targets.get(v) {
                self.garbage(cx, *v, chunk);
            }
        }
    }

    fn intercept(
        &mut self,
        _core: &mut Swarm<SimFactory>,
        cx: &mut Cx<'_, Swarm<SimFactory>>,
        from: PeerId,
        msg: &Message,
    ) -> bool {
        if cx.now() < Instant::ZERO + ATTACK_FROM || cx.now() > Instant::ZERO + DEADLINE {
            return true;
        }
        match msg.body {
            // The answer to our handshake: the connection stands, and the fetcher learns
            // that we hold every chunk (our core never saw the connection).
            Body::Bitfield(_) if self.victims.contains(&from) && self.announced.insert(from) => {
                cx.send(
                    from,
                    Message {
                        cid: self.cid,
                        body: Body::Bitfield(Bitfield::full(self.manifest.chunk_count())),
                    },
                );
            }
            // Be asked (the core's choker would make most wait for a slot).
            Body::Interested => cx.send(
                from,
                Message {
                    cid: self.cid,
                    body: Body::Unchoke,
                },
            ),
            // A request names a chunk the asker is downloading now; none is served.
            Body::Request { chunk, block } => {
                let new =
                    self.victims.contains(&from) && !self.targets.borrow().contains_key(&from);
                if new {
                    self.targets.borrow_mut().insert(from, chunk);
                    if self.assigned.contains(&from) {
                        self.garbage(cx, from, chunk);
                    }
                }
                cx.send(
                    from,
                    Message {
                        cid: self.cid,
                        body: Body::Reject { chunk, block },
                    },
                );
                return false;
            }
            // The target chunk passed despite the garbage: the victim is left alone.
            Body::Have { chunk } if self.targets.borrow().get(&from) == Some(&chunk) => {
                self.targets.borrow_mut().remove(&from);
            }
            _ => {}
        }
        true
    }
}

impl Inject {
    /// Garbage for the first block of `chunk`, sent to `to` unasked. The first block: an
    /// uploader sends a chunk's blocks in order, so the honest copy of the first block
    /// arrives (and is dropped as a duplicate) before the attempt fails. Were it a later
    /// block, its honest copy would still be on the way when the attempt fails and would
    /// fill that slot of the next attempt before the garbage could.
    fn garbage(&self, cx: &mut Cx<'_, Swarm<SimFactory>>, to: PeerId, chunk: u32) {
        let block = 0;
        let len = self.manifest.block_len(chunk, block).unwrap_or(0) as usize;
        cx.send(
            to,
            Message {
                cid: self.cid,
                body: Body::Block {
                    chunk,
                    block,
                    data: Bytes::from(vec![0x5a; len]),
                },
            },
        );
    }
}

/// The colluding hostile peers share the fetchers out: each takes [`MAX_TARGETS`] of them,
/// every fetcher going to one more hostile peer before any goes to two, so the poison is
/// spread evenly (a fetcher's downlink is not spent on one peer's garbage alone).
fn assign(hostile: &[usize], victims: &[PeerId]) -> BTreeMap<usize, BTreeSet<PeerId>> {
    let mut out: BTreeMap<usize, BTreeSet<PeerId>> = BTreeMap::new();
    if victims.is_empty() {
        return out;
    }
    let pairs = (hostile.len() * MAX_TARGETS).min(victims.len() * hostile.len());
    for n in 0..pairs {
        out.entry(hostile[n % hostile.len()])
            .or_default()
            .insert(victims[n % victims.len()]);
    }
    out
}

type SwarmNode = Node<Swarm<SimFactory>, Inject>;

fn file(seed: u64) -> Bytes {
    let mut rng = Rng::seed(seed ^ 0x6669_6c65);
    let mut v = vec![0u8; FILE_BYTES];
    rng.fill(&mut v);
    Bytes::from(v)
}

/// Runs `block-inject` (or its baseline).
pub(crate) fn run(s: Setup) -> Result<Outcome, ExperimentError> {
    let data = file(s.seed);
    let manifest = Manifest::from_bytes("attack.bin", &data, CHUNK_BYTES)
        .map_err(|e| ExperimentError::Failed(e.to_string()))?;
    let cid = manifest.content_id();
    let config = Config {
        progress_every: 0,
        defenses: s.defenses,
        ..Config::default()
    };
    // Hostile peers announce everything they hold, so fetchers ask them (a super-seeder
    // reveals a few chunks at a time); in the baseline too, so that only the attack differs.
    let hostile_config = Config {
        super_seed: false,
        ..config.clone()
    };
    let mut sim: Sim<SwarmNode> = Sim::new(SimConfig {
        seed: s.seed,
        latency: Latency::Uniform {
            min: Duration::from_millis(10),
            max: Duration::from_millis(90),
        },
        upload_bps: Some(UPLINK),
        download_bps: Some(DOWNLINK),
        ..SimConfig::default()
    });
    let ids: Vec<PeerId> = (0..s.nodes as u64)
        .map(|i| Keypair::synthetic(i).peer_id())
        .collect();
    // Seeders are the first peers; hostile peers are drawn from the others.
    let mut rng = Rng::seed(s.seed ^ 0x686f_7374_696c_6573);
    let mut hostile = vec![false; s.nodes];
    for i in rng.sample_indices(s.nodes - SEEDERS, s.attackers) {
        hostile[SEEDERS + i] = true;
    }
    let fetchers: Vec<usize> = (SEEDERS..s.nodes).filter(|&i| !hostile[i]).collect();
    let victims: Vec<PeerId> = fetchers.iter().map(|&i| ids[i]).collect();
    let hostile_set: BTreeSet<PeerId> = (0..s.nodes)
        .filter(|&i| hostile[i])
        .map(|i| ids[i])
        .collect();
    let hostile_idx: Vec<usize> = (0..s.nodes).filter(|&i| hostile[i]).collect();
    let mut assigned = assign(&hostile_idx, &victims);
    let targets = Rc::new(RefCell::new(BTreeMap::new()));
    let core = |c: &Config| {
        Swarm::new(c.clone(), SimFactory { corrupt: false })
            .map_err(|e| ExperimentError::InvalidArgument(e.to_string()))
    };
    for i in 0..s.nodes {
        let peer = ids[i];
        if i < SEEDERS || hostile[i] {
            let node = if hostile[i] {
                let attack = s.attack.then(|| Inject {
                    cid,
                    manifest: manifest.clone(),
                    victims: victims.iter().copied().collect(),
                    assigned: assigned.remove(&i).unwrap_or_default(),
                    opened: false,
                    announced: BTreeSet::new(),
                    targets: Rc::clone(&targets),
                });
                Node::hostile(core(&hostile_config)?, attack)
            } else {
                Node::honest(core(&config)?)
            };
            sim.add_node(peer, node);
            if hostile[i] {
                sim.set_bandwidth(peer, Some(ATTACKER_UPLINK), Some(DOWNLINK));
            }
            let store = SimStore::full(&manifest, data.clone());
            sim.command(
                peer,
                Command::Share {
                    req: 0,
                    manifest: manifest.clone(),
                    store,
                },
            );
        }
    }
    for &i in &fetchers {
        let peer = ids[i];
        let mut providers: Vec<PeerId> = rng
            .sample_indices(s.nodes, NEIGHBOURS + 1)
            .into_iter()
            .filter(|&j| j != i)
            .take(NEIGHBOURS)
            .map(|j| ids[j])
            .collect();
        let seeder = ids[rng.index(SEEDERS)];
        if !providers.contains(&seeder) {
            providers.push(seeder);
        }
        let start = Instant(rng.below(1_000_000));
        let node = core(&config)?;
        sim.schedule(start, move |sim| {
            sim.add_node(peer, Node::honest(node));
            sim.command(
                peer,
                Command::Fetch {
                    req: 1,
                    cid,
                    providers,
                },
            );
        });
    }

    let mut offences = Offences::default();
    let mut completed: BTreeSet<PeerId> = BTreeSet::new();
    let mut banned_honest = 0u64;
    let mut last_done = Instant::ZERO;
    let deadline = Instant::ZERO + DEADLINE;
    while sim.now() < deadline && completed.len() < fetchers.len() {
        sim.run_until((sim.now() + Duration::from_secs(1)).min(deadline));
        offences.absorb(sim.take_offences(), &hostile_set);
        for (at, who, ev) in sim.take_events() {
            match ev {
                Event::Completed { cid: c, .. } if c == cid && !hostile_set.contains(&who) => {
                    completed.insert(who);
                    last_done = last_done.max(at);
                }
                Event::PeerBanned { peer, .. }
                    if !hostile_set.contains(&who) && !hostile_set.contains(&peer) =>
                {
                    banned_honest += 1;
                }
                _ => {}
            }
        }
    }
    let mut out = Outcome {
        ops: fetchers.len() as u64,
        ..Outcome::default()
    };
    let mut corrupt_chunks = 0u64;
    let mut unsolicited = 0u64;
    for v in &victims {
        let Some(n) = sim.node(v) else { continue };
        if let Some(st) = n.core().stats(&cid) {
            corrupt_chunks += st.corrupt_chunks as u64;
            unsolicited += st.unsolicited;
        }
        let identical = n
            .core()
            .store(&cid)
            .and_then(|st| st.memory().contents())
            .is_some_and(|c| c == data[..]);
        if completed.contains(v) && identical {
            out.ok += 1;
        }
    }
    let hostile_ids: Vec<PeerId> = hostile_set.iter().copied().collect();
    out.attacker_messages = sent_by(&sim, hostile_ids.iter());
    out.honest_messages = sent_by(&sim, ids.iter().filter(|p| !hostile_set.contains(p)));
    out.offences = offences;
    out.detail
        .insert("downloads completed", completed.len() as u64);
    out.detail.insert("corrupt chunks rejected", corrupt_chunks);
    out.detail.insert("unsolicited blocks dropped", unsolicited);
    out.detail.insert(
        "last download done (ms)",
        last_done.saturating_since(Instant::ZERO).as_millis() as u64,
    );
    out.detail
        .insert("honest peers banned by honest", banned_honest);
    out.virtual_seconds = sim.now().as_secs_f64();
    out.events = sim.events_processed();
    Ok(out)
}
