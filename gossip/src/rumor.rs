//! Rumor mongering: the SIR epidemic of Demers et al. ("Epidemic Algorithms for Replicated
//! Database Maintenance", PODC 1987, §3).
//!
//! A newly learned version is a *hot rumor*; the node is *infective* while it holds hot
//! rumors. Every round ([`Config::period`](crate::Config)) it pushes one batch of them to
//! `fanout` partners, and it loses interest in each rumor by one of Demers' four
//! [`Variant`]s:
//!
//! - *feedback*: the recipient answers ([`Message::GossipReply`]) which rumors of the push
//!   it already knew, and only those unnecessary contacts count — as *consecutive* contacts
//!   reset by a useful one (counter), or as a coin of probability `1/k` (coin);
//! - *blind*: every round in which the rumor was pushed counts, whatever the recipients
//!   knew — `k` rounds (counter) or a coin of probability `1/k` per round (coin).
//!
//! A rumor is dropped after [`Config::max_rumor_rounds`](crate::Config) whatever its variant
//! says, so a feedback rumor whose replies are all lost cannot stay hot for ever. Before
//! any variant may drop it, a data rumor gets memberlist's budget of transmissions,
//! `data_retransmit_mult · ⌈log10(N + 1)⌉` ([`Config::data_retransmits`](crate::Config)):
//! the variants alone leave a residue of nodes that only anti-entropy reaches, and in a
//! group at rest anti-entropy is slow (`cadence.rs`). The oldest rumor is evicted when [`Config::max_rumors`](crate::Config) is reached. Anti-entropy
//! delivers whatever a dropped rumor would have.
//!
//! A data rumor a node has just learned (published, or received in a push) is pushed at
//! once rather than at the next round ([`Config::eager_push`](crate::Config), at most one
//! such push per round): each hop of a fresh rumor then costs a message's latency instead
//! of up to a period, which is what an event's spread time is made of (memberlist queues
//! a broadcast until its next gossip round). Rounds that bring nothing new send nothing.
//!
//! Membership updates ride on the same pushes, ahead of the data: each is sent
//! `member_retransmit_mult · ⌈log10(N + 1)⌉` times (memberlist's rule), fewest
//! transmissions first.

use std::collections::BTreeMap;
use std::sync::Arc;

use peerlab_overlay::{Cx, Offence, PeerId};
use serde_bytes::ByteBuf;

use crate::Gossip;
use crate::config::{Activation, Variant};
use crate::data::Pending;
use crate::members::View;
use crate::message::{Entry, FRAME_SLACK, MAX_ITEMS, MemberUpdate, Message, item_len};

/// Ticks a feedback record waits for its reply (late replies are ignored).
pub(crate) const IN_FLIGHT_TICKS: u64 = 5;
/// Rumor batches awaiting feedback; with fan-out F a node has about `F · IN_FLIGHT_TICKS`.
pub(crate) const MAX_IN_FLIGHT: usize = 1024;

/// What a hot rumor is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RumorKey {
    /// A member's record (sent as the current record when pushed).
    Member(PeerId),
    /// One version of one origin's data.
    Data(PeerId, u64),
}

#[derive(Clone, Debug)]
struct Rumor {
    /// Data rumors: the key (the rumor is keyed by origin and version).
    key: String,
    /// Rounds in which it was pushed (blind counter, age cap).
    rounds: u32,
    /// Feedback counter, or transmissions for membership rumors.
    counter: u32,
    /// Data rumors: transmissions so far (against [`Config::data_retransmits`]).
    sent: u32,
    /// Insertion order, for evicting the oldest.
    born: u64,
}

/// A push awaiting its feedback reply.
#[derive(Debug)]
struct InFlight {
    tick: u64,
    /// The pushed versions, shared by the push's targets.
    ids: Arc<[(PeerId, u64)]>,
}

/// The hot rumors and the pushes awaiting feedback.
#[derive(Debug, Default)]
pub(crate) struct Rumors {
    hot: BTreeMap<RumorKey, Rumor>,
    /// Insertion counter.
    born: u64,
    in_flight: BTreeMap<u64, InFlight>,
    /// The round of the last eager push (at most one per round).
    eager_tick: Option<u64>,
}

impl Rumors {
    pub(crate) fn len(&self) -> usize {
        self.hot.len()
    }

    pub(crate) fn data_len(&self) -> usize {
        self.hot
            .keys()
            .filter(|k| matches!(k, RumorKey::Data(..)))
            .count()
    }

    pub(crate) fn remove(&mut self, key: &RumorKey) {
        self.hot.remove(key);
    }

    /// Makes `key` hot (again, from scratch), evicting the oldest rumor when `cap` are hot.
    fn add(&mut self, key: RumorKey, data_key: String, cap: usize) {
        if !self.hot.contains_key(&key) && self.hot.len() >= cap {
            // Evict the oldest; anti-entropy (or the member sync) delivers it instead.
            if let Some(old) = self.hot.iter().min_by_key(|(_, r)| r.born).map(|(k, _)| *k) {
                self.hot.remove(&old);
            }
        }
        self.born += 1;
        self.hot.insert(
            key,
            Rumor {
                key: data_key,
                rounds: 0,
                counter: 0,
                sent: 0,
                born: self.born,
            },
        );
    }
}

impl Gossip {
    /// Makes one version of `origin`'s `key` a hot rumor, retiring the rumor of the `older`
    /// version it replaces.
    pub(crate) fn add_data_rumor(
        &mut self,
        origin: PeerId,
        key: String,
        version: u64,
        older: Option<u64>,
    ) {
        if let Some(v) = older {
            self.rumors.remove(&RumorKey::Data(origin, v));
        }
        self.note_news();
        let cap = self.config.max_rumors;
        self.rumors.add(RumorKey::Data(origin, version), key, cap);
    }

    pub(crate) fn add_member_rumor(&mut self, peer: PeerId) {
        self.note_news();
        let cap = self.config.max_rumors;
        self.rumors.add(RumorKey::Member(peer), String::new(), cap);
    }

    /// One round of rumor mongering: one batch (membership updates, fewest transmissions
    /// first, then entries) to `fanout` partners, then loss of interest.
    pub(crate) fn push_rumors(&mut self, cx: &mut Cx<'_, Self>) {
        self.push_batch(cx, false);
    }

    /// The eager push ([`Config::eager_push`](crate::Config)): data rumors never pushed
    /// yet go to `fanout` partners at once instead of at the next round, at most once per
    /// round, so that each hop of a fresh rumor costs a message's latency rather than up
    /// to a period. Loss of interest counts it as one of the rumor's rounds.
    pub(crate) fn push_fresh(&mut self, cx: &mut Cx<'_, Self>) {
        if !self.config.eager_push
            || self.config.activation != Activation::Immediate
            || self.rumors.eager_tick == Some(self.tick)
            || !self
                .rumors
                .hot
                .iter()
                .any(|(k, r)| matches!(k, RumorKey::Data(..)) && r.rounds == 0)
        {
            return;
        }
        self.rumors.eager_tick = Some(self.tick);
        self.push_batch(cx, true);
    }

    /// One batch to `fanout` partners: every hot rumor, or (`fresh`) only the data rumors
    /// never pushed yet.
    fn push_batch(&mut self, cx: &mut Cx<'_, Self>, fresh: bool) {
        let tick = self.tick;
        self.rumors
            .in_flight
            .retain(|_, f| f.tick + IN_FLIGHT_TICKS > tick);
        let max_rounds = self.config.max_rumor_rounds;
        self.rumors
            .hot
            .retain(|k, r| matches!(k, RumorKey::Member(_)) || r.rounds < max_rounds);
        if self.rumors.hot.is_empty() {
            return;
        }
        // Build one batch: membership updates (fewest transmissions first), then entries.
        let mut room = self.config.max_message_bytes.saturating_sub(FRAME_SLACK);
        let mut member_keys: Vec<(u32, PeerId)> = self
            .rumors
            .hot
            .iter()
            .filter_map(|(k, r)| match k {
                RumorKey::Member(p) if !fresh => Some((r.counter, *p)),
                RumorKey::Member(_) | RumorKey::Data(..) => None,
            })
            .collect();
        member_keys.sort();
        let mut members = Vec::new();
        let mut sent_members = Vec::new();
        for (_, p) in member_keys {
            let u = if p == self.me {
                Some(self.self_update())
            } else {
                match &self.view {
                    View::Swim(t) => t.update_of(&p),
                    View::Static(_) => None,
                }
            };
            let Some(u) = u else {
                self.rumors.remove(&RumorKey::Member(p));
                continue;
            };
            let l = item_len(&u);
            if l > room {
                break;
            }
            room -= l;
            members.push(u);
            sent_members.push(p);
        }
        let mut entries = Vec::new();
        let mut ids = Vec::new();
        let mut stale = Vec::new();
        for (k, r) in &self.rumors.hot {
            let RumorKey::Data(origin, version) = *k else {
                continue;
            };
            if fresh && r.rounds > 0 {
                continue;
            }
            let Some(e) = self
                .store
                .get(&origin, &r.key)
                .filter(|e| e.version == version)
            else {
                stale.push(*k);
                continue;
            };
            let entry = Entry {
                origin,
                key: r.key.clone(),
                version,
                value: e.value.clone().map(ByteBuf::from),
            };
            let l = item_len(&entry);
            if l > room {
                break;
            }
            room -= l;
            entries.push(entry);
            ids.push((origin, version));
        }
        for k in stale {
            self.rumors.remove(&k);
        }
        if members.is_empty() && entries.is_empty() {
            return;
        }
        let n = self.up_count();
        let targets = self.partner_peers(cx, self.config.fanout);
        if targets.is_empty() {
            return;
        }
        let feedback = self.config.variant.needs_feedback() && !entries.is_empty();
        let shared: Arc<[(PeerId, u64)]> = if feedback {
            ids.as_slice().into()
        } else {
            Arc::new([])
        };
        for to in &targets {
            let seq = self.next_seq();
            if feedback && self.rumors.in_flight.len() < MAX_IN_FLIGHT {
                self.rumors.in_flight.insert(
                    seq,
                    InFlight {
                        tick: self.tick,
                        ids: Arc::clone(&shared),
                    },
                );
            }
            let msg = Message::Gossip {
                seq,
                feedback,
                members: members.clone(),
                entries: entries.clone(),
            };
            cx.send(*to, msg);
        }
        let limit = self.config.member_retransmits(n + 1);
        for p in sent_members {
            if let Some(r) = self.rumors.hot.get_mut(&RumorKey::Member(p)) {
                r.counter += targets.len() as u32;
                if r.counter >= limit {
                    self.rumors.remove(&RumorKey::Member(p));
                }
            }
        }
        let k = self.config.k.get();
        let budget = self.config.data_retransmits(n + 1);
        for (origin, version) in ids {
            let key = RumorKey::Data(origin, version);
            let Some(r) = self.rumors.hot.get_mut(&key) else {
                continue;
            };
            r.rounds += 1;
            r.sent = r.sent.saturating_add(targets.len() as u32);
            if r.sent < budget {
                continue;
            }
            let drop = match self.config.variant {
                Variant::BlindCounter => r.rounds >= k,
                Variant::BlindCoin => cx.rng().chance(1.0 / k as f64),
                Variant::FeedbackCounter | Variant::FeedbackCoin => false,
            };
            if drop {
                self.rumors.remove(&key);
            }
        }
    }

    /// A feedback reply: which rumors of push `seq` the recipient already knew.
    pub(crate) fn on_feedback(&mut self, cx: &mut Cx<'_, Self>, seq: u64, known: Vec<bool>) {
        if !self.issued(seq) {
            self.offend(Offence::Unsolicited);
            return;
        }
        let Some(f) = self.rumors.in_flight.remove(&seq) else {
            return;
        };
        let k = self.config.k.get();
        let budget = self.config.data_retransmits(self.up_count() + 1);
        for (&(origin, version), knew) in f.ids.iter().zip(known) {
            let key = RumorKey::Data(origin, version);
            let Some(r) = self.rumors.hot.get_mut(&key) else {
                continue;
            };
            let spent = r.sent >= budget;
            let drop = match (self.config.variant, knew) {
                (Variant::FeedbackCounter, true) => {
                    r.counter += 1;
                    spent && r.counter >= k
                }
                (Variant::FeedbackCounter, false) => {
                    r.counter = 0;
                    false
                }
                (Variant::FeedbackCoin, true) => spent && cx.rng().chance(1.0 / k as f64),
                _ => false,
            };
            if drop {
                self.rumors.remove(&key);
            }
        }
    }

    /// A received push: its membership updates, then its entries, answered with feedback
    /// when the sender asked for it.
    pub(crate) fn on_gossip(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        seq: u64,
        feedback: bool,
        members: Vec<MemberUpdate>,
        entries: Vec<Entry>,
    ) {
        if members.len() > MAX_ITEMS || entries.len() > MAX_ITEMS {
            self.rejected.oversized_messages += 1;
            self.offend(Offence::Malformed);
            return;
        }
        for u in members {
            self.on_member_update(cx, u, Some(from));
        }
        self.flush_corrections(cx, from);
        let mut known = Vec::with_capacity(if feedback { entries.len() } else { 0 });
        for e in entries {
            let knew = match self.check_entry(&e) {
                Err(r) => {
                    self.refuse(r);
                    true
                }
                Ok(()) => self.store.knows(&e.origin, &e.key, e.version),
            };
            if feedback {
                known.push(knew);
            }
            if knew {
                continue;
            }
            match self.config.activation {
                Activation::Immediate => self.activate_entry(
                    cx,
                    e.origin,
                    &e.key,
                    e.version,
                    e.value.map(ByteBuf::into_vec),
                ),
                Activation::CycleEnd => self.push_pending(Pending::Entry(e)),
            }
        }
        if feedback {
            cx.send(from, Message::GossipReply { seq, known });
        }
        self.push_fresh(cx);
    }
}
