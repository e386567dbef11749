//! The DHT attacks: `dht-overwrite`, `dht-fill`, `provider-flood` and `sybil-eclipse`.
//!
//! Every peer runs the real [`Dht`] core on a converged ring ([`Dht::from_ideal`], 8
//! virtual nodes, 3 replicas, the default periods, latency uniform in 10–90 ms). Hostile
//! peers are ring members like the others; they know the ring (the ideal one), every honest
//! key and its writer, and attack with the real wire messages, each message sent from their
//! own (authenticated) peer id.
//!
//! Workload: [`KEYS`] honest keys, each put by a random honest peer through the real
//! protocol; [`READS_PER_KEY`] gets of each by random honest peers once the attack has had
//! its effect. For `provider-flood`, [`KEYS`] content ids announced by
//! [`PROVIDERS_PER_CONTENT`] honest providers each, and provider lookups instead of gets.
//!
//! - **dht-overwrite** (attack from 10 s to 40 s, each attacker four target keys a second):
//!   in turn, a put signed by the attacker for the key (a newer version than the honest
//!   one); a put and a `Store` to every replica with a version a year ahead; a `Store` to
//!   every replica of a record in the honest writer's name with a forged signature; a
//!   tombstone a year ahead, put and stored.
//! - **dht-fill** (attack from 1 s to 20 s, honest puts at 25–30 s): every attacker pushes
//!   `Store` batches of its own validly signed 4 KiB records, for ring ids inside every
//!   honest peer's ranges, until together they have sent 1.5 times each peer's store budget, then
//!   records with empty values that close the gap the large ones leave.
//!   Store budgets are scaled down to [`STORE_BYTES`] (the per-writer quotas keep their
//!   default share of it, a sixteenth) so that filling 500 stores fits in memory.
//! - **provider-flood** (attack from 10 s to 40 s, each content id flooded every 10 s): 40
//!   `AddProvider`s per content id with entries of other identities (validly signed by keys
//!   the attacker made up) living 24 h; the attacker's own entry living 24 h; and a `Store`
//!   to the owner and replicas carrying 40 entries of made-up identities living
//!   [`MAX_PROVIDER_TTL`].
//! - **sybil-eclipse**: hostile identities are ground (key pairs tried until one of their
//!   virtual nodes lands between a target key and the honest virtual node before it), one
//!   or more targets each; from 10 s on they answer every lookup step for a target with
//!   "the owner is me" and every get for it with a record in the honest writer's name with a
//!   forged signature and no replicas.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use peerlab_dht::{
    Command, Config, Dht, Event, IdealRing, MAX_BATCH_BYTES, MAX_PROVIDER_TTL, MAX_RECORD_TTL,
    Message, NodeRef, ProviderEntry, Record, Reply, Step, Version,
};
use peerlab_overlay::{Cx, Id, Instant, Keypair, PeerId, Rng};
use peerlab_sim::{Latency, Sim, SimConfig};

use super::node::{Attack, Node};
use super::{ExperimentError, Kind, Offences, Outcome, Setup, sent_by};
use crate::experiments::chord::SIM_EPOCH_US;

/// Honest keys (or content ids) in the workload.
pub(crate) const KEYS: usize = 200;
/// Gets (or provider lookups) of each key by random honest peers.
pub(crate) const READS_PER_KEY: usize = 2;
/// Honest providers announcing each content id.
pub(crate) const PROVIDERS_PER_CONTENT: usize = 3;
/// Store budget of every peer: scaled down from the 64 MiB default so that the fill attack
/// on hundreds of peers fits in memory; the writer quotas keep their default share.
pub(crate) const STORE_BYTES: u64 = 256 * 1024;
/// Replicas per key (the default).
const REPLICAS: usize = 3;
/// Value of each record a filler sends: large, to fill with few signatures.
const FILL_VALUE: usize = 4 * 1024;
/// Empty-valued records each filler sends per victim virtual node after its large ones:
/// together (8 virtual nodes a peer) they cover more than one large record's cost, the gap
/// large records alone leave under the budget.
const GAP_FILLERS_PER_VNODE: usize = 4;
/// How much a filling crowd sends to each honest peer, as a multiple of its store budget.
const FILL_FACTOR: f64 = 1.5;
/// Target keys each overwriter attacks per round.
const OVERWRITES_PER_ROUND: usize = 4;
/// Made-up identities whose entries a provider flooder sends per content id: more than a
/// full provider set (32).
const FAKE_PROVIDERS: usize = 40;
/// Rounds between two floods of one content id.
const FLOOD_EVERY: u64 = 10;
/// Key pairs tried when grinding sybil identities, per hostile peer: a peer's 8 virtual
/// nodes land in one of `KEYS` gaps out of thousands with probability `8·KEYS / (8·N)`.
const GRIND_TRIES_PER_SYBIL: u64 = 20_000;
/// First synthetic key index of ground sybil identities, far from honest ones.
const SYBIL_KEY_BASE: u64 = 1 << 40;
/// First synthetic key index of made-up provider identities.
const FAKE_KEY_BASE: u64 = 1 << 41;
/// Request ids of the workload (puts, gets, provider announcements, provider lookups).
const PUT_REQ: u64 = 1 << 50;
const GET_REQ: u64 = 2 << 50;
const ANNOUNCE_REQ: u64 = 3 << 50;
/// The value hostile writes carry.
const EVIL: &[u8] = b"evil";
/// How long an honest provider's entry lives: the hour an honest node announces for.
const HONEST_PROVIDER_TTL: Duration = Duration::from_secs(3600);
/// Lifetime of the flooder's long-lived entries (what peers accepted before the bound).
const LONG_TTL_MS: u64 = 24 * 3600 * 1000;

/// One phase of a run, in virtual seconds from the start.
#[derive(Clone, Copy, Debug)]
struct Timeline {
    writes: (f64, f64),
    attack: (f64, f64),
    reads: (f64, f64),
    end: f64,
}

fn timeline(kind: Kind) -> Timeline {
    match kind {
        Kind::DhtFill => Timeline {
            writes: (25.0, 30.0),
            attack: (1.0, 20.0),
            reads: (45.0, 55.0),
            end: 65.0,
        },
        _ => Timeline {
            writes: (1.0, 6.0),
            attack: (10.0, 40.0),
            reads: (45.0, 55.0),
            end: 65.0,
        },
    }
}

fn at(secs: f64) -> Instant {
    Instant((secs * 1e6) as u64)
}

/// What every hostile peer knows: the ring and the honest workload.
struct Intel {
    ring: IdealRing,
    /// Target ring ids and their honest writers (for provider floods: the content ids).
    targets: Vec<(Id, PeerId)>,
    /// Honest peers' virtual nodes (fill victims).
    honest_vnodes: Vec<NodeRef>,
    /// Made-up identities for provider floods.
    fakes: Vec<Keypair>,
    attackers: usize,
    timeline: Timeline,
}

/// The DHT attacks.
pub(crate) struct DhtAttack {
    kind: Kind,
    key: Keypair,
    /// This attacker's rank among the hostile peers.
    rank: usize,
    intel: Rc<Intel>,
    rng: Rng,
    round: u64,
    /// Flood entries per target index, signed once.
    floods: BTreeMap<usize, (Vec<ProviderEntry>, Vec<ProviderEntry>)>,
    /// Sybil: target ring ids this peer's virtual nodes sit just before, and which one.
    covers: BTreeMap<Id, Id>,
}

fn epoch_ms() -> u64 {
    (SIM_EPOCH_US / 1000) as u64
}

impl DhtAttack {
    fn me(&self) -> PeerId {
        self.key.peer_id()
    }

    fn active(&self, now: Instant) -> bool {
        let (from, until) = self.intel.timeline.attack;
        now >= at(from) && now <= at(until)
    }

    fn overwrite(&mut self, core: &Dht, cx: &mut Cx<'_, Dht>) {
        let now_ms = core.wall_ms(cx.now());
        let me = self.me();
        for _ in 0..OVERWRITES_PER_ROUND {
            let t = self.rng.index(self.intel.targets.len());
            let (key, writer) = self.intel.targets[t];
            let Some(owner) = self.intel.ring.successor(&key) else {
                return;
            };
            let replicas = self.intel.ring.replica_peers(&key, REPLICAS);
            let action = self.round.wrapping_add(t as u64) % 4;
            let year_ms = 365 * 24 * 3600 * 1000;
            let (record, put, store) = match action {
                0 => {
                    let v = version(now_ms, me);
                    let r = Record::sign(
                        &key,
                        Some(EVIL.to_vec()),
                        v,
                        v,
                        now_ms + 3_600_000,
                        &self.key,
                    );
                    (r, true, false)
                }
                1 => {
                    let v = version(now_ms + year_ms, me);
                    let r = Record::sign(
                        &key,
                        Some(EVIL.to_vec()),
                        v,
                        v,
                        v.wall_ms + ttl_ms(),
                        &self.key,
                    );
                    (r, true, true)
                }
                2 => {
                    // In the honest writer's name, signed by the wrong key.
                    let v = version(now_ms + 24 * 3600 * 1000, writer);
                    let r = Record::sign(
                        &key,
                        Some(EVIL.to_vec()),
                        v,
                        v,
                        v.wall_ms + ttl_ms(),
                        &self.key,
                    );
                    (r, false, true)
                }
                _ => {
                    let v = version(now_ms + year_ms, me);
                    let r = Record::sign(&key, None, v, v, v.wall_ms + ttl_ms(), &self.key);
                    (r, true, true)
                }
            };
            if put {
                let req = cx.rng().next_u64();
                cx.send(
                    owner.peer,
                    Message::Put {
                        req,
                        vnode: owner.id,
                        key,
                        record: record.clone(),
                    },
                );
            }
            if store {
                for p in replicas.into_iter().filter(|p| *p != me) {
                    cx.send(
                        p,
                        Message::Store {
                            records: vec![(key, record.clone())],
                            providers: Vec::new(),
                        },
                    );
                }
            }
        }
    }

    fn fill(&mut self, core: &Dht, cx: &mut Cx<'_, Dht>) {
        let intel = Rc::clone(&self.intel);
        let (from, until) = intel.timeline.attack;
        let rounds = ((until - from).floor() as u64).max(1);
        if self.round >= rounds {
            return;
        }
        // Each honest peer's budget, shared among the attackers, in records.
        let cost = FILL_VALUE as f64 + peerlab_dht::RECORD_OVERHEAD as f64;
        let per_victim_peer = (FILL_FACTOR * STORE_BYTES as f64 / cost).ceil();
        let vnodes_per_peer = intel.honest_vnodes.len() as f64
            / intel
                .honest_vnodes
                .iter()
                .map(|n| n.peer)
                .collect::<BTreeSet<_>>()
                .len()
                .max(1) as f64;
        let per_vnode =
            (per_victim_peer / vnodes_per_peer / intel.attackers as f64).ceil() as usize;
        let n = intel.honest_vnodes.len();
        let lo = n * self.round as usize / rounds as usize;
        let hi = n * (self.round as usize + 1) / rounds as usize;
        let now_ms = core.wall_ms(cx.now());
        let me = self.me();
        let value = vec![self.rank as u8; FILL_VALUE];
        for victim in &intel.honest_vnodes[lo..hi] {
            let mut batch = Vec::new();
            let mut bytes = 0;
            for _ in 0..per_vnode {
                // A ring id just before the victim's virtual node: in its own range.
                let back = Id::from_u64(self.rng.next_u64() | 1);
                let key = victim.id.wrapping_sub(&back);
                let v = Version {
                    wall_ms: now_ms,
                    logical: self.rng.next_u64() as u32,
                    writer: me,
                };
                let r = Record::sign(
                    &key,
                    Some(value.clone()),
                    v,
                    v,
                    now_ms + LONG_TTL_MS,
                    &self.key,
                );
                bytes += FILL_VALUE + 256;
                batch.push((key, r));
                if bytes + FILL_VALUE + 256 > MAX_BATCH_BYTES {
                    cx.send(
                        victim.peer,
                        Message::Store {
                            records: std::mem::take(&mut batch),
                            providers: Vec::new(),
                        },
                    );
                    bytes = 0;
                }
            }
            // Records with empty values close the gap the large ones leave, so that no
            // honest record fits either.
            for _ in 0..GAP_FILLERS_PER_VNODE {
                let back = Id::from_u64(self.rng.next_u64() | 1);
                let key = victim.id.wrapping_sub(&back);
                let v = Version {
                    wall_ms: now_ms,
                    logical: self.rng.next_u64() as u32,
                    writer: me,
                };
                batch.push((
                    key,
                    Record::sign(
                        &key,
                        Some(Vec::new()),
                        v,
                        v,
                        now_ms + LONG_TTL_MS,
                        &self.key,
                    ),
                ));
            }
            if !batch.is_empty() {
                cx.send(
                    victim.peer,
                    Message::Store {
                        records: batch,
                        providers: Vec::new(),
                    },
                );
            }
        }
    }

    fn flood(&mut self, core: &Dht, cx: &mut Cx<'_, Dht>) {
        let intel = Rc::clone(&self.intel);
        let now_ms = core.wall_ms(cx.now());
        let me = self.me();
        let start_ms = epoch_ms() + (intel.timeline.attack.0 * 1000.0) as u64;
        for (t, (key, _)) in intel.targets.iter().enumerate() {
            if t % intel.attackers != self.rank
                || (t / intel.attackers) as u64 % FLOOD_EVERY != self.round % FLOOD_EVERY
            {
                continue;
            }
            let Some(owner) = intel.ring.successor(key) else {
                continue;
            };
            let (long, bounded) = self.floods.entry(t).or_insert_with(|| {
                let long = intel
                    .fakes
                    .iter()
                    .map(|k| ProviderEntry::sign(key, start_ms + LONG_TTL_MS, k))
                    .collect();
                let bounded = intel
                    .fakes
                    .iter()
                    .map(|k| {
                        ProviderEntry::sign(key, start_ms + MAX_PROVIDER_TTL.as_millis() as u64, k)
                    })
                    .collect();
                (long, bounded)
            });
            for entry in long.iter() {
                let req = cx.rng().next_u64();
                cx.send(
                    owner.peer,
                    Message::AddProvider {
                        req,
                        vnode: owner.id,
                        key: *key,
                        entry: *entry,
                    },
                );
            }
            let own = ProviderEntry::sign(key, now_ms + LONG_TTL_MS, &self.key);
            let req = cx.rng().next_u64();
            cx.send(
                owner.peer,
                Message::AddProvider {
                    req,
                    vnode: owner.id,
                    key: *key,
                    entry: own,
                },
            );
            for p in intel
                .ring
                .replica_peers(key, REPLICAS)
                .into_iter()
                .filter(|p| *p != me)
            {
                cx.send(
                    p,
                    Message::Store {
                        records: Vec::new(),
                        providers: vec![(*key, bounded.clone())],
                    },
                );
            }
        }
    }
}

fn ttl_ms() -> u64 {
    MAX_RECORD_TTL.as_millis() as u64
}

fn version(wall_ms: u64, writer: PeerId) -> Version {
    Version {
        wall_ms,
        logical: 0,
        writer,
    }
}

impl Attack<Dht> for DhtAttack {
    fn schedule(&self) -> (Instant, Duration) {
        (at(self.intel.timeline.attack.0), Duration::from_secs(1))
    }

    fn act(&mut self, core: &mut Dht, cx: &mut Cx<'_, Dht>) {
        if !self.active(cx.now()) {
            return;
        }
        match self.kind {
            Kind::DhtOverwrite => self.overwrite(core, cx),
            Kind::DhtFill => self.fill(core, cx),
            Kind::ProviderFlood => self.flood(core, cx),
            _ => {}
        }
        self.round += 1;
    }

    fn intercept(
        &mut self,
        core: &mut Dht,
        cx: &mut Cx<'_, Dht>,
        from: PeerId,
        msg: &Message,
    ) -> bool {
        if self.kind != Kind::SybilEclipse || cx.now() < at(self.intel.timeline.attack.0) {
            return true;
        }
        let me = self.me();
        match msg {
            Message::FindStep { req, key, .. } => {
                let Some(&vnode) = self.covers.get(key) else {
                    return true;
                };
                let mine = NodeRef {
                    id: vnode,
                    peer: me,
                };
                cx.send(
                    from,
                    Message::StepReply {
                        req: *req,
                        step: Step::Done {
                            pred: mine,
                            owner: mine,
                        },
                    },
                );
                false
            }
            Message::Get { req, key, .. } | Message::Put { req, key, .. } => {
                if !self.covers.contains_key(key) {
                    return true;
                }
                let writer = self
                    .intel
                    .targets
                    .iter()
                    .find(|(k, _)| k == key)
                    .map_or(me, |(_, w)| *w);
                let now_ms = core.wall_ms(cx.now());
                let v = version(now_ms, writer);
                let record = Record::sign(
                    key,
                    Some(EVIL.to_vec()),
                    v,
                    v,
                    now_ms + 3_600_000,
                    &self.key,
                );
                if matches!(msg, Message::Get { .. }) {
                    cx.send(
                        from,
                        Message::GetReply {
                            req: *req,
                            record: Some(record),
                            replicas: Vec::new(),
                        },
                    );
                }
                false
            }
            _ => true,
        }
    }
}

type DhtNode = Node<Dht, DhtAttack>;

/// The peers of a run: key pairs, which are hostile, and what sybils cover.
struct Peers {
    keys: Vec<Keypair>,
    hostile: Vec<bool>,
    covers: BTreeMap<usize, BTreeMap<Id, Id>>,
}

fn vnodes_of(peer: &PeerId, v: u16) -> Vec<NodeRef> {
    (0..v)
        .map(|i| NodeRef {
            id: Id::vnode(peer, i),
            peer: *peer,
        })
        .collect()
}

/// Grinds `count` identities whose virtual nodes land just before target keys (between a
/// target and the honest virtual node before it), each covering at least one target not
/// yet covered.
fn grind(
    honest: &IdealRing,
    targets: &[Id],
    count: usize,
    v: u16,
) -> Vec<(Keypair, BTreeMap<Id, Id>)> {
    let nodes = honest.nodes();
    // Targets by the index of their honest successor.
    let mut by_gap: BTreeMap<usize, Vec<Id>> = BTreeMap::new();
    for t in targets {
        by_gap
            .entry(honest.successor_index(t))
            .or_default()
            .push(*t);
    }
    let mut covered: BTreeSet<Id> = BTreeSet::new();
    let mut out = Vec::new();
    let mut n = 0u64;
    let limit = GRIND_TRIES_PER_SYBIL * count as u64;
    while out.len() < count && n < limit {
        let key = Keypair::synthetic(SYBIL_KEY_BASE + n);
        n += 1;
        let peer = key.peer_id();
        let mut mine = BTreeMap::new();
        for node in vnodes_of(&peer, v) {
            let i = honest.successor_index(&node.id);
            let succ = nodes[i].id;
            for t in by_gap.get(&i).into_iter().flatten() {
                if t.in_half_open(&node.id, &succ) && *t != succ {
                    mine.insert(*t, node.id);
                }
            }
        }
        if mine.keys().any(|t| !covered.contains(t)) || covered.len() == targets.len() {
            covered.extend(mine.keys().copied());
            out.push((key, mine));
        }
    }
    out
}

fn choose_peers(kind: Kind, s: Setup, cfg: &Config, targets: &[Id]) -> Peers {
    let honest_n = s.nodes - s.attackers;
    if kind == Kind::SybilEclipse {
        let mut keys: Vec<Keypair> = (0..honest_n as u64).map(Keypair::synthetic).collect();
        let honest_nodes: Vec<NodeRef> = keys
            .iter()
            .flat_map(|k| vnodes_of(&k.peer_id(), cfg.vnodes))
            .collect();
        let ring = IdealRing::new(honest_nodes);
        let sybils = grind(&ring, targets, s.attackers, cfg.vnodes);
        let mut hostile = vec![false; keys.len()];
        let mut covers = BTreeMap::new();
        for (k, c) in sybils {
            covers.insert(keys.len(), c);
            keys.push(k);
            hostile.push(true);
        }
        return Peers {
            keys,
            hostile,
            covers,
        };
    }
    let keys: Vec<Keypair> = (0..s.nodes as u64).map(Keypair::synthetic).collect();
    let mut rng = Rng::seed(s.seed ^ 0x686f_7374_696c_6573);
    let mut hostile = vec![false; s.nodes];
    for i in rng.sample_indices(s.nodes, s.attackers) {
        hostile[i] = true;
    }
    Peers {
        keys,
        hostile,
        covers: BTreeMap::new(),
    }
}

fn key_bytes(i: usize) -> Vec<u8> {
    format!("attack-key-{i}").into_bytes()
}

fn value_of(i: usize) -> Vec<u8> {
    format!("honest-value-{i}").into_bytes()
}

fn content_id(i: usize) -> Id {
    Id::hash(format!("attack-content-{i}").as_bytes())
}

/// Runs one DHT attack (or its baseline).
pub(crate) fn run(kind: Kind, s: Setup) -> Result<Outcome, ExperimentError> {
    let tl = timeline(kind);
    let cfg = Config {
        max_stored_bytes: STORE_BYTES,
        max_writer_bytes: STORE_BYTES / 16,
        max_writer_records: STORE_BYTES / 16 / peerlab_dht::RECORD_OVERHEAD,
        max_concurrent_lookups: 4096,
        defenses: s.defenses,
        ..Config::for_network(s.nodes)
    };
    cfg.validate()
        .map_err(|e| ExperimentError::InvalidArgument(e.to_string()))?;
    let target_ids: Vec<Id> = (0..KEYS)
        .map(|i| {
            if kind == Kind::ProviderFlood {
                content_id(i)
            } else {
                Id::hash(&key_bytes(i))
            }
        })
        .collect();
    let peers = choose_peers(kind, s, &cfg, &target_ids);
    let ids: Vec<PeerId> = peers.keys.iter().map(Keypair::peer_id).collect();
    let honest: Vec<usize> = (0..ids.len()).filter(|&i| !peers.hostile[i]).collect();
    let hostile_set: BTreeSet<PeerId> = (0..ids.len())
        .filter(|&i| peers.hostile[i])
        .map(|i| ids[i])
        .collect();
    let ring = IdealRing::new(ids.iter().flat_map(|p| vnodes_of(p, cfg.vnodes)).collect());

    let mut sim: Sim<DhtNode> = Sim::new(SimConfig {
        seed: s.seed,
        latency: Latency::Uniform {
            min: Duration::from_millis(10),
            max: Duration::from_millis(90),
        },
        ..SimConfig::default()
    });
    // The workload: writers, providers, readers, chosen from the honest peers.
    let mut wl = Rng::seed(s.seed ^ 0x776f_726b_6c6f_6164);
    let writers: Vec<usize> = (0..KEYS).map(|_| honest[wl.index(honest.len())]).collect();
    let targets: Vec<(Id, PeerId)> = target_ids
        .iter()
        .zip(&writers)
        .map(|(k, &w)| (*k, ids[w]))
        .collect();
    let providers: Vec<Vec<usize>> = (0..KEYS)
        .map(|_| {
            wl.sample_indices(honest.len(), PROVIDERS_PER_CONTENT)
                .into_iter()
                .map(|j| honest[j])
                .collect()
        })
        .collect();
    let readers: Vec<Vec<usize>> = (0..KEYS)
        .map(|_| {
            (0..READS_PER_KEY)
                .map(|_| honest[wl.index(honest.len())])
                .collect()
        })
        .collect();

    let intel = Rc::new(Intel {
        ring: IdealRing::new(ring.nodes().to_vec()),
        targets: targets.clone(),
        honest_vnodes: ring
            .nodes()
            .iter()
            .filter(|n| !hostile_set.contains(&n.peer))
            .copied()
            .collect(),
        fakes: (0..FAKE_PROVIDERS as u64)
            .map(|i| Keypair::synthetic(FAKE_KEY_BASE + i))
            .collect(),
        attackers: hostile_set.len().max(1),
        timeline: tl,
    });
    let mut rank = 0;
    for (i, key) in peers.keys.iter().enumerate() {
        let mut d = Dht::from_ideal(cfg.clone(), key.clone(), &ring)
            .map_err(|e| ExperimentError::Failed(e.to_string()))?;
        d.set_clock_offset(SIM_EPOCH_US);
        let node = if peers.hostile[i] {
            let attack = s.attack.then(|| DhtAttack {
                kind,
                key: key.clone(),
                rank,
                intel: Rc::clone(&intel),
                rng: Rng::seed(s.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                round: 0,
                floods: BTreeMap::new(),
                covers: peers.covers.get(&i).cloned().unwrap_or_default(),
            });
            rank += 1;
            Node::hostile(d, attack)
        } else {
            Node::honest(d)
        };
        sim.add_node(ids[i], node);
    }

    // Schedule the workload.
    let span = |w: (f64, f64), k: usize| at(w.0 + (w.1 - w.0) * k as f64 / KEYS as f64);
    for k in 0..KEYS {
        if kind == Kind::ProviderFlood {
            for (j, &p) in providers[k].iter().enumerate() {
                let peer = ids[p];
                let key = target_ids[k];
                let req = ANNOUNCE_REQ + (k * PROVIDERS_PER_CONTENT + j) as u64;
                sim.schedule(span(tl.writes, k), move |sim| {
                    sim.command(
                        peer,
                        Command::AddProvider {
                            req,
                            key,
                            ttl: HONEST_PROVIDER_TTL,
                        },
                    );
                });
            }
        } else {
            let peer = ids[writers[k]];
            sim.schedule(span(tl.writes, k), move |sim| {
                sim.command(
                    peer,
                    Command::Put {
                        req: PUT_REQ + k as u64,
                        key: key_bytes(k),
                        value: value_of(k),
                        ttl: None,
                    },
                );
            });
        }
        for (j, &r) in readers[k].iter().enumerate() {
            let peer = ids[r];
            let req = GET_REQ + (k * READS_PER_KEY + j) as u64;
            let key = target_ids[k];
            let provider_flood = kind == Kind::ProviderFlood;
            sim.schedule(span(tl.reads, k), move |sim| {
                let cmd = if provider_flood {
                    Command::GetProviders { req, key }
                } else {
                    Command::Get {
                        req,
                        key: key_bytes(k),
                    }
                };
                sim.command(peer, cmd);
            });
        }
    }

    let mut out = Outcome {
        ops: (KEYS * READS_PER_KEY) as u64,
        ..Outcome::default()
    };
    let mut offences = Offences::default();
    let honest_providers: Vec<BTreeSet<PeerId>> = providers
        .iter()
        .map(|ps| ps.iter().map(|&p| ids[p]).collect())
        .collect();
    let (mut puts_ok, mut puts_failed) = (0u64, 0u64);
    let mut answered = 0u64;
    let end = at(tl.end);
    while sim.now() < end {
        sim.run_until((sim.now() + Duration::from_secs(1)).min(end));
        offences.absorb(sim.take_offences(), &hostile_set);
        for (_, who, ev) in sim.take_events() {
            if hostile_set.contains(&who) {
                continue;
            }
            let Event::Reply { req, result } = ev;
            if (PUT_REQ..PUT_REQ + KEYS as u64).contains(&req) {
                if result.is_ok() {
                    puts_ok += 1;
                } else {
                    puts_failed += 1;
                }
            } else if (GET_REQ..GET_REQ + (KEYS * READS_PER_KEY) as u64).contains(&req) {
                answered += 1;
                let k = ((req - GET_REQ) as usize) / READS_PER_KEY;
                let ok = match result {
                    Ok(Reply::Value { value, .. }) => value.as_deref() == Some(&value_of(k)[..]),
                    Ok(Reply::Providers { providers, .. }) => providers
                        .iter()
                        .any(|e| honest_providers[k].contains(&e.provider)),
                    _ => false,
                };
                if ok {
                    out.ok += 1;
                }
            }
        }
    }
    let hostile_ids: Vec<PeerId> = hostile_set.iter().copied().collect();
    let honest_ids: Vec<PeerId> = honest.iter().map(|&i| ids[i]).collect();
    out.attacker_messages = sent_by(&sim, hostile_ids.iter());
    out.honest_messages = sent_by(&sim, honest_ids.iter());
    out.offences = offences;
    if kind != Kind::ProviderFlood {
        out.detail.insert("honest puts stored", puts_ok);
        out.detail.insert("honest puts failed", puts_failed);
    }
    out.detail.insert("reads answered", answered);
    if kind == Kind::SybilEclipse {
        let covered: BTreeSet<Id> = peers
            .covers
            .values()
            .flat_map(|c| c.keys().copied())
            .collect();
        out.detail
            .insert("target keys covered by sybils", covered.len() as u64);
    }
    if kind == Kind::DhtFill {
        let full = honest_ids
            .iter()
            .filter_map(|p| sim.node(p))
            .filter(|n| n.core().store().bytes() + 4 * 1024 > STORE_BYTES)
            .count();
        out.detail.insert("honest stores full", full as u64);
    }
    out.virtual_seconds = sim.now().as_secs_f64();
    out.events = sim.events_processed();
    Ok(out)
}
