//! `block-inject`: corrupt and unsolicited blocks against the real [`Swarm`] core.
//!
//! A flash crowd fetches one file ([`FILE_BYTES`], 64 KiB chunks of four 16 KiB blocks)
//! from [`SEEDERS`] honest seeders; every peer's uplink is 8 Mbit/s and its downlink
//! 100 Mbit/s, links 10–90 ms. Each fetcher is given [`NEIGHBOURS`] random peers of the
//! swarm and one seeder as providers, as a DHT provider lookup would.
//!
//! Hostile peers claim the whole file, and every 250 ms, from 1 s on, each opens the
//! transfer with [`TARGETS_PER_ROUND`] random honest fetchers (taking a connection slot
//! there) and sends each [`INJECTS_PER_ROUND`] blocks of garbage nobody asked for, in
//! chunks the fetcher has not announced (`Have`) yet. Hostile uplinks are 100 Mbit/s. A
//! hostile peer unchokes every peer that is interested in it, and when a peer requests a
//! block of a chunk, it sends garbage for the chunk's other blocks (asked of other peers)
//! at once. An honest download succeeds when it completes before [`DEADLINE`]
//! and its bytes equal the file.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use peerlab_overlay::{Cx, Instant, Keypair, PeerId, Rng};
use peerlab_sim::{Latency, Sim, SimConfig};
use peerlab_swarm::bytes::Bytes;
use peerlab_swarm::{Body, Command, Config, ContentId, Event, Manifest, Message, Swarm};

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
/// Honest fetchers each hostile peer targets per round.
const TARGETS_PER_ROUND: usize = 10;
/// Garbage blocks per target per round.
const INJECTS_PER_ROUND: usize = 16;
/// When the attack starts.
const ATTACK_FROM: Duration = Duration::from_secs(1);
/// Time between two rounds of the attack.
const ATTACK_EVERY: Duration = Duration::from_millis(250);
/// When an unfinished download counts as failed: far beyond the few seconds the flash
/// crowd needs without an attack.
const DEADLINE: Duration = Duration::from_secs(180);
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
    victims: Vec<PeerId>,
    opened: BTreeSet<PeerId>,
    /// Chunks each victim announced (`Have`, `Bitfield`): the others are worth poisoning.
    held: BTreeMap<PeerId, BTreeSet<u32>>,
    rng: Rng,
}

impl Attack<Swarm<SimFactory>> for Inject {
    fn schedule(&self) -> (Instant, Duration) {
        (Instant::ZERO + ATTACK_FROM, ATTACK_EVERY)
    }

    fn act(&mut self, _core: &mut Swarm<SimFactory>, cx: &mut Cx<'_, Swarm<SimFactory>>) {
        if cx.now() > Instant::ZERO + DEADLINE || self.victims.is_empty() {
            return;
        }
        let chunks = self.manifest.chunk_count();
        for _ in 0..TARGETS_PER_ROUND {
            let v = self.victims[self.rng.index(self.victims.len())];
            if self.opened.insert(v) {
                cx.send(
                    v,
                    Message {
                        cid: self.cid,
                        body: Body::Handshake,
                    },
                );
            }
            let held = self.held.get(&v);
            let missing: Vec<u32> = (0..chunks)
                .filter(|c| held.is_none_or(|h| !h.contains(c)))
                .collect();
            if missing.is_empty() {
                continue;
            }
            for _ in 0..INJECTS_PER_ROUND {
                let chunk = missing[self.rng.index(missing.len())];
                let blocks = self
                    .manifest
                    .chunk_len(chunk)
                    .div_ceil(self.manifest.block_size());
                let block = self.rng.below(u64::from(blocks.max(1))) as u32;
                let len = self.manifest.block_len(chunk, block).unwrap_or(0) as usize;
                cx.send(
                    v,
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
            // Serve anyone who asks (the core then answers requests from the corrupt store).
            Body::Interested => cx.send(
                from,
                Message {
                    cid: self.cid,
                    body: Body::Unchoke,
                },
            ),
            // A request shows which chunk the asker is fetching: the rest of that chunk,
            // asked of other peers, gets garbage first.
            Body::Request { chunk, block } => self.poison_chunk(cx, from, chunk, block),
            Body::Have { chunk } => {
                self.held.entry(from).or_default().insert(chunk);
            }
            Body::Bitfield(ref b) => {
                let h = self.held.entry(from).or_default();
                h.extend((0..b.len()).filter(|&c| b.get(c)));
            }
            _ => {}
        }
        true
    }
}

impl Inject {
    /// Garbage for every block of `chunk` but `except`, sent to `to` unasked.
    fn poison_chunk(
        &self,
        cx: &mut Cx<'_, Swarm<SimFactory>>,
        to: PeerId,
        chunk: u32,
        except: u32,
    ) {
        let blocks = self
            .manifest
            .chunk_len(chunk)
            .div_ceil(self.manifest.block_size());
        for block in (0..blocks).filter(|b| *b != except) {
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
                    victims: victims.clone(),
                    opened: BTreeSet::new(),
                    held: BTreeMap::new(),
                    rng: Rng::seed(s.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                });
                Node::hostile(core(&config)?, attack)
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
    let deadline = Instant::ZERO + DEADLINE;
    while sim.now() < deadline && completed.len() < fetchers.len() {
        sim.run_until((sim.now() + Duration::from_secs(1)).min(deadline));
        offences.absorb(sim.take_offences(), &hostile_set);
        for (_, who, ev) in sim.take_events() {
            match ev {
                Event::Completed { cid: c, .. } if c == cid && !hostile_set.contains(&who) => {
                    completed.insert(who);
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
    out.detail
        .insert("honest peers banned by honest", banned_honest);
    out.virtual_seconds = sim.now().as_secs_f64();
    out.events = sim.events_processed();
    Ok(out)
}
