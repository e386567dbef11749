//! `member-poison`: forged member addresses and death claims against the real [`Gossip`]
//! core (SWIM membership, LAN configuration, links of 10–90 ms).
//!
//! All `N` peers start as one formed group (`Gossip::with_members`, every member's own
//! signed record), hostile peers among them. From 2 s to 30 s every hostile peer pushes,
//! every gossip round (200 ms), a rumor of [`UPDATES_PER_PUSH`] forged member updates to
//! [`FANOUT`] random honest peers, about random honest members, in turn:
//!
//! - the member alive at the next incarnation at an address of the attacker's choosing,
//!   signed by the attacker's key;
//! - the member dead at the largest incarnation peers accept (no refutation can outbid it);
//! - the member dead at the next incarnation, with the signature of the record held (an
//!   incarnation the member never announced).
//!
//! Death claims at the incarnation a member holds, which SWIM allows anyone to make (the
//! member refutes them), are not part of this kind.
//!
//! The honest operation is an (honest peer, honest member) pair: it succeeds when the
//! peer's table holds the member up (alive or suspect) at its real addresses. Pairs are
//! checked at [`SAMPLES`] (during the attack, and 10 s after it).

use std::collections::BTreeSet;
use std::time::Duration;

use peerlab_gossip::{
    Config, Gossip, MAX_VERSION, MemberState, MemberUpdate, Message, VerifiedRecords,
};
use peerlab_overlay::{Cx, Instant, Keypair, PeerId, Rng};
use peerlab_sim::{Latency, Sim, SimConfig};

use super::node::{Attack, Node};
use super::{ExperimentError, Offences, Outcome, Setup, sent_by};

/// Honest peers each hostile peer pushes forged updates to per round.
const FANOUT: usize = 3;
/// Forged updates per push.
const UPDATES_PER_PUSH: usize = 6;
/// The attack's window, seconds.
const ATTACK: (u64, u64) = (2, 30);
/// When member tables are checked, seconds.
const SAMPLES: [u64; 6] = [10, 15, 20, 25, 30, 40];
/// Verified-record memo shared by the simulated peers (a pure function's cache).
const VERIFIED_MEMO: usize = 1 << 16;

fn addrs_of(i: usize) -> Vec<String> {
    vec![format!("/sim/{i}")]
}

/// The hostile peer's forgeries.
pub(crate) struct Poison {
    key: Keypair,
    victims: Vec<PeerId>,
    rng: Rng,
    round: u64,
}

impl Attack<Gossip> for Poison {
    fn schedule(&self) -> (Instant, Duration) {
        (
            Instant::ZERO + Duration::from_secs(ATTACK.0),
            Duration::from_millis(200),
        )
    }

    fn act(&mut self, core: &mut Gossip, cx: &mut Cx<'_, Gossip>) {
        if cx.now() > Instant::ZERO + Duration::from_secs(ATTACK.1) || self.victims.is_empty() {
            return;
        }
        let me = self.key.peer_id();
        for _ in 0..FANOUT {
            let to = self.victims[self.rng.index(self.victims.len())];
            let mut members = Vec::with_capacity(UPDATES_PER_PUSH);
            for _ in 0..UPDATES_PER_PUSH {
                let v = self.victims[self.rng.index(self.victims.len())];
                let Some(m) = core.member(&v) else { continue };
                self.round += 1;
                let u = match self.round % 3 {
                    0 => {
                        let addrs = vec![format!("/sim/evil/{me}")];
                        let signature =
                            MemberUpdate::alive(&self.key, m.incarnation + 1, addrs.clone())
                                .signature;
                        MemberUpdate {
                            peer: v,
                            incarnation: m.incarnation + 1,
                            state: MemberState::Alive,
                            addrs,
                            signature,
                        }
                    }
                    1 => MemberUpdate {
                        peer: v,
                        incarnation: MAX_VERSION,
                        state: MemberState::Dead,
                        addrs: m.addrs.clone(),
                        signature: m.signature,
                    },
                    _ => MemberUpdate {
                        peer: v,
                        incarnation: m.incarnation + 1,
                        state: MemberState::Dead,
                        addrs: m.addrs.clone(),
                        signature: m.signature,
                    },
                };
                members.push(u);
            }
            let seq = self.rng.next_u64();
            cx.send(
                to,
                Message::Gossip {
                    seq,
                    feedback: false,
                    members,
                    entries: Vec::new(),
                },
            );
        }
    }
}

type GossipNode = Node<Gossip, Poison>;

/// Runs `member-poison` (or its baseline).
pub(crate) fn run(s: Setup) -> Result<Outcome, ExperimentError> {
    let config = Config {
        defenses: s.defenses,
        ..Config::lan()
    };
    let mut sim: Sim<GossipNode> = Sim::new(SimConfig {
        seed: s.seed,
        latency: Latency::Uniform {
            min: Duration::from_millis(10),
            max: Duration::from_millis(90),
        },
        ..SimConfig::default()
    });
    let keys: Vec<Keypair> = (0..s.nodes as u64).map(Keypair::synthetic).collect();
    let ids: Vec<PeerId> = keys.iter().map(Keypair::peer_id).collect();
    let mut rng = Rng::seed(s.seed ^ 0x686f_7374_696c_6573);
    let mut hostile = vec![false; s.nodes];
    for i in rng.sample_indices(s.nodes, s.attackers) {
        hostile[i] = true;
    }
    let honest: Vec<usize> = (0..s.nodes).filter(|&i| !hostile[i]).collect();
    let victims: Vec<PeerId> = honest.iter().map(|&i| ids[i]).collect();
    let hostile_set: BTreeSet<PeerId> = (0..s.nodes)
        .filter(|&i| hostile[i])
        .map(|i| ids[i])
        .collect();
    let records: Vec<MemberUpdate> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| MemberUpdate::alive(k, 0, addrs_of(i)))
        .collect();
    let verified = VerifiedRecords::new(VERIFIED_MEMO);
    for (i, key) in keys.iter().enumerate() {
        let others = records.iter().filter(|r| r.peer != ids[i]).cloned();
        let mut core = Gossip::with_members(key.clone(), addrs_of(i), config.clone(), others)
            .map_err(|e| ExperimentError::InvalidArgument(e.to_string()))?;
        core.share_verified(verified.clone());
        let node = if hostile[i] {
            let attack = s.attack.then(|| Poison {
                key: key.clone(),
                victims: victims.clone(),
                rng: Rng::seed(s.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                round: i as u64,
            });
            Node::hostile(core, attack)
        } else {
            Node::honest(core)
        };
        sim.add_node(ids[i], node);
    }

    let mut out = Outcome::default();
    let mut offences = Offences::default();
    let (mut dead, mut moved) = (0u64, 0u64);
    for t in SAMPLES {
        let until = Instant::ZERO + Duration::from_secs(t);
        while sim.now() < until {
            sim.run_until((sim.now() + Duration::from_secs(1)).min(until));
            offences.absorb(sim.take_offences(), &hostile_set);
            sim.take_events();
        }
        for &o in &honest {
            let Some(node) = sim.node(&ids[o]) else {
                continue;
            };
            for &m in &honest {
                if m == o {
                    continue;
                }
                out.ops += 1;
                match node.core().member(&ids[m]) {
                    Some(r) if r.state.is_up() && r.addrs == addrs_of(m) => out.ok += 1,
                    Some(r) if r.state.is_up() => moved += 1,
                    _ => dead += 1,
                }
            }
        }
    }
    let hostile_ids: Vec<PeerId> = hostile_set.iter().copied().collect();
    out.attacker_messages = sent_by(&sim, hostile_ids.iter());
    out.honest_messages = sent_by(&sim, victims.iter());
    out.offences = offences;
    out.detail.insert("pair checks: member down", dead);
    out.detail.insert("pair checks: wrong addresses", moved);
    out.detail.insert(
        "forged records refused",
        honest
            .iter()
            .filter_map(|&i| sim.node(&ids[i]))
            .map(|n| n.core().rejected().forged)
            .sum(),
    );
    out.virtual_seconds = sim.now().as_secs_f64();
    out.events = sim.events_processed();
    Ok(out)
}
