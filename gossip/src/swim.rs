//! SWIM failure detection and membership dissemination (Das, Gupta, Motivala, "SWIM:
//! Scalable Weakly-consistent Infection-style Process Group Membership Protocol", DSN 2002).
//!
//! - **Probing** (§3.1). Every [`Config::probe_period`](crate::Config) a node pings the next
//!   member of a shuffled round-robin list of members that are up. Without an ack within
//!   `probe_timeout` it asks `indirect_probes` other members to ping the target for it
//!   ([`Message::PingReq`]); they relay the target's ack ([`Message::IndirectAck`]).
//!   Without any ack by the next probe, the target becomes suspect.
//!   A relay that cannot reach the target in time answers [`Message::Nack`]; what the
//!   concluded probe shows of this node's own health scales its next probe period and
//!   timeout (Lifeguard's local health, `health.rs`).
//! - **Suspicion** (§4.2). A suspect that does not refute within `suspicion_timeout` is
//!   declared dead. The prober tells the suspect directly as well as gossiping the
//!   suspicion, so the suspect can answer at once.
//! - **Refutation by incarnation.** Only a member raises its own incarnation; it does so to
//!   refute a suspicion (or death) of itself, and its `alive` record at the higher
//!   incarnation overrides the claim everywhere (the precedence rules of `members.rs`).
//!   A node that sees a stale suspicion — of itself, or of a member whose
//!   refutation it holds — answers the sender with the newer record (a *correction*), so a
//!   refutation whose rumor died out cannot be lost.
//! - **Dissemination** (§4.1). Updates piggyback on the rumor pushes (`rumor.rs`); the
//!   member sync (`member_sync.rs`) catches what they miss.
//! - **Joining and leaving.** A joiner asks its seeds in turn for the member list, waiting
//!   one more join timeout each round; a join asked for while one is under way only adds
//!   seeds, and a node a seed has answered does not join again while it has members. A
//!   leaving node gossips its `left` record for a few rounds, then goes silent.

use peerlab_overlay::{Cx, Instant, Offence, PeerId, Signature};

use crate::config::MAX_VERSION;
use crate::members::{self, Change, MemberState, View};
use crate::message::{MemberUpdate, Message};
use crate::record::{MEMBER_DOMAIN, statement};
use crate::{Event, Gossip, Phase, Timer};

/// Indirect-probe relays kept at once; each lives one probe period. Bounds the state a
/// burst of `PingReq`s can create.
pub(crate) const MAX_RELAYS: usize = 256;
/// Join attempts per seed before giving up.
const JOIN_ROUNDS: u32 = 3;
/// Seeds a join rotates through (the driver offers its bootstrap peers and, while alone,
/// some last-known peers).
const MAX_JOIN_SEEDS: usize = 16;
/// Ticks a leaving node keeps gossiping its departure before going silent.
const LEAVE_TICKS: u32 = 3;
/// Most corrections sent back for one received message (each is one member record).
const MAX_CORRECTIONS: usize = 64;

/// The probe under way.
pub(crate) struct Probe {
    seq: u64,
    target: PeerId,
    acked: bool,
    /// Relays: members asked to probe `target` indirectly (at most `indirect_probes`).
    asked: Vec<PeerId>,
    /// Relays that nacked (each counted once).
    nacked: Vec<PeerId>,
}

impl Probe {
    /// What the concluded probe says about this node's own health (see `health.rs`): an
    /// ack `−1`; a failure without a single nack from its relays (or without relays) `+1`;
    /// a failure some relay nacked `0`.
    fn health_delta(&self) -> i64 {
        if self.acked {
            -1
        } else if self.nacked.is_empty() {
            1
        } else {
            0
        }
    }
}

/// An indirect probe this node makes for another.
pub(crate) struct Relay {
    requester: PeerId,
    seq: u64,
    target: PeerId,
    born: Instant,
}

/// A join under way.
pub(crate) struct Join {
    seeds: Vec<PeerId>,
    attempt: u32,
}

impl Gossip {
    /// This node's own state: alive, or left once it leaves.
    fn own_state(&self) -> MemberState {
        match self.phase {
            Phase::Running => MemberState::Alive,
            _ => MemberState::Left,
        }
    }

    /// This node's own record, signed.
    pub(crate) fn self_update(&self) -> MemberUpdate {
        MemberUpdate {
            peer: self.me,
            incarnation: self.incarnation,
            state: self.own_state(),
            addrs: self.addrs.clone(),
            signature: self.signature,
        }
    }

    /// Signs this node's current record: at start, and whenever its incarnation or its
    /// state (leaving) changes.
    pub(crate) fn sign_self(&mut self) {
        let bytes = statement(&self.me, self.incarnation, self.own_state(), &self.addrs);
        self.signature = self.key.sign(MEMBER_DOMAIN, &bytes);
    }

    // ---- probing ----

    pub(crate) fn on_ping(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, seq: u64, members: u32) {
        if self.phase == Phase::Running {
            let ours = self.members_held_up();
            cx.send(from, Message::Ack { seq, members: ours });
            self.on_member_count(cx, from, members);
        }
    }

    pub(crate) fn on_probe(&mut self, cx: &mut Cx<'_, Self>) {
        if self.phase != Phase::Running {
            return;
        }
        let now = cx.now();
        // Conclude the previous probe.
        if let Some(p) = self.probe.take() {
            self.health.apply(p.health_delta());
            if !p.acked {
                self.suspect(cx, p.target);
            }
        }
        let period = self.config.probe_period;
        self.relays
            .retain(|_, r| now.saturating_since(r.born) < period);
        let c = &self.config;
        let (left, dead, cap) = (c.tombstone_expiry, c.dead_expiry, c.max_dead_kept);
        if let View::Swim(t) = &mut self.view {
            t.expire(now, left, dead, cap);
        }
        // Next target: shuffled round-robin over members that are up.
        let target = loop {
            let Some(p) = self.probe_order.pop() else {
                let mut order = match &mut self.view {
                    View::Swim(t) => t.up().to_vec(),
                    View::Static(_) => Vec::new(),
                };
                if order.is_empty() {
                    break None;
                }
                cx.rng().shuffle(&mut order);
                self.probe_order = order;
                continue;
            };
            if self.member(&p).is_some_and(|m| m.state.is_up()) {
                break Some(p);
            }
        };
        if let Some(target) = target {
            let seq = self.next_seq();
            self.probe = Some(Probe {
                seq,
                target,
                acked: false,
                asked: Vec::new(),
                nacked: Vec::new(),
            });
            let members = self.members_held_up();
            cx.send(target, Message::Ping { seq, members });
            let timeout = self.health.scale(self.config.probe_timeout);
            cx.set_timer(timeout, Timer::ProbeTimeout { seq });
        }
        cx.set_timer(self.health.scale(period), Timer::Probe);
    }

    /// Lifeguard's local health score: 0 when healthy, up to `max_health_multiplier − 1`
    /// while this node's probes fail for reasons of its own (`health.rs`).
    pub fn local_health(&self) -> u32 {
        self.health.score()
    }

    pub(crate) fn on_probe_timeout(&mut self, cx: &mut Cx<'_, Self>, seq: u64) {
        let Some(p) = &self.probe else {
            return;
        };
        if p.seq != seq || p.acked {
            return;
        }
        let target = p.target;
        let relays = self.random_peers(cx, self.config.indirect_probes, Some(target));
        for &h in &relays {
            cx.send(h, Message::PingReq { seq, target });
        }
        if let Some(p) = &mut self.probe {
            p.asked = relays;
        }
    }

    /// A relay could not reach the target of this node's probe `seq`.
    pub(crate) fn on_nack(&mut self, from: PeerId, seq: u64) {
        if let Some(p) = self.answered_probe(seq)
            && p.asked.contains(&from)
            && !p.nacked.contains(&from)
        {
            p.nacked.push(from);
        }
    }

    /// The probe under way if `seq` is its; an answer to a sequence number never issued is
    /// an offence.
    fn answered_probe(&mut self, seq: u64) -> Option<&mut Probe> {
        if !self.issued(seq) {
            self.offend(Offence::Unsolicited);
            return None;
        }
        self.probe.as_mut().filter(|p| p.seq == seq)
    }

    /// The nack deadline of an indirect probe this node relays: still unanswered, the
    /// requester hears so.
    pub(crate) fn on_relay_nack(&mut self, cx: &mut Cx<'_, Self>, seq: u64) {
        if let Some(r) = self.relays.get(&seq) {
            cx.send(r.requester, Message::Nack { seq: r.seq });
        }
    }

    pub(crate) fn on_ack(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, seq: u64, members: u32) {
        if !self.issued(seq) {
            self.offend(Offence::Unsolicited);
            return;
        }
        if let Some(p) = &mut self.probe
            && p.seq == seq
            && p.target == from
        {
            p.acked = true;
            self.on_member_count(cx, from, members);
            return;
        }
        if self.relays.get(&seq).is_some_and(|r| r.target == from)
            && let Some(r) = self.relays.remove(&seq)
        {
            self.on_member_count(cx, from, members);
            cx.send(
                r.requester,
                Message::IndirectAck {
                    seq: r.seq,
                    target: r.target,
                },
            );
        }
    }

    pub(crate) fn on_indirect_ack(&mut self, seq: u64, target: PeerId) {
        if let Some(p) = self.answered_probe(seq)
            && p.target == target
        {
            p.acked = true;
        }
    }

    pub(crate) fn on_ping_req(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        seq: u64,
        target: PeerId,
    ) {
        if target == self.me {
            // Nobody chooses a member to probe a member on its own behalf.
            self.offend(Offence::Malformed);
            return;
        }
        if self.relays.len() >= MAX_RELAYS {
            self.offend(Offence::Excess);
            return;
        }
        let relay_seq = self.next_seq();
        self.relays.insert(
            relay_seq,
            Relay {
                requester: from,
                seq,
                target,
                born: cx.now(),
            },
        );
        let members = self.members_held_up();
        cx.send(
            target,
            Message::Ping {
                seq: relay_seq,
                members,
            },
        );
        let nack_after = self
            .config
            .probe_timeout
            .mul_f64(crate::health::NACK_FRACTION);
        cx.set_timer(nack_after, Timer::RelayNack { seq: relay_seq });
    }

    // ---- suspicion ----

    fn suspect(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId) {
        let Some(held) = self.update_of(&peer) else {
            return;
        };
        if held.state != MemberState::Alive {
            return;
        }
        let u = held.claim(MemberState::Suspect);
        self.on_member_update(cx, u.clone(), None);
        // Tell the suspect itself so it can refute before the timeout.
        let seq = self.next_seq();
        cx.send(
            peer,
            Message::Gossip {
                seq,
                feedback: false,
                members: vec![u],
                entries: vec![],
            },
        );
    }

    pub(crate) fn on_suspicion_timeout(
        &mut self,
        cx: &mut Cx<'_, Self>,
        peer: PeerId,
        incarnation: u64,
    ) {
        if self.phase == Phase::Gone {
            return;
        }
        let Some(held) = self.update_of(&peer) else {
            return;
        };
        if held.state == MemberState::Suspect && held.incarnation == incarnation {
            self.on_member_update(cx, held.claim(MemberState::Dead), None);
        }
    }

    // ---- membership updates ----

    fn valid_update(&mut self, u: &MemberUpdate) -> bool {
        if u.addrs.len() > self.config.max_addrs
            || u.addrs.iter().any(|a| a.len() > self.config.max_addr_len)
        {
            self.rejected.oversized += 1;
            self.offend(Offence::Malformed);
            return false;
        }
        if u.incarnation > MAX_VERSION {
            self.rejected.absurd_version += 1;
            self.offend(Offence::Malformed);
            return false;
        }
        true
    }

    /// Whether `u`'s signature is its member's (from the shared memo when there is one).
    fn verify(&self, u: &MemberUpdate) -> bool {
        match &self.verified {
            Some(memo) => memo.verify(u),
            None => u.verify(),
        }
    }

    /// A record whose signature is not its member's: dropped, counted, reported.
    fn forged(&mut self) {
        self.rejected.forged += 1;
        self.offend(Offence::Forged);
    }

    /// Whether a claim `(incarnation, state)` about this node makes it refute.
    fn refutes(&self, incarnation: u64, state: MemberState) -> bool {
        self.phase == Phase::Running
            && match state {
                MemberState::Alive => incarnation > self.incarnation,
                _ => incarnation >= self.incarnation,
            }
    }

    /// Whether an update about this node carries a record it signed: its current one (no
    /// need to verify), or one of a previous life (a restart with the same key), verified.
    fn signed_by_me(&self, u: &MemberUpdate) -> bool {
        !self.config.defenses
            || (u.incarnation == self.incarnation
                && u.signature == self.signature
                && (u.state == MemberState::Left) == (self.own_state() == MemberState::Left)
                && u.addrs == self.addrs)
            || self.verify(u)
    }

    /// Applies one membership update, from `from` (or from this node's own detector when
    /// `None`): events, suspicion timer, rumor, and corrections of stale claims. An update
    /// from a peer that would change the table is applied only if its member signed it
    /// (see `record.rs`).
    pub(crate) fn on_member_update(
        &mut self,
        cx: &mut Cx<'_, Self>,
        u: MemberUpdate,
        from: Option<PeerId>,
    ) {
        if !self.valid_update(&u) {
            return;
        }
        let now = cx.now();
        if u.peer == self.me {
            if u.state != MemberState::Alive
                && u.incarnation < self.incarnation
                && self.phase == Phase::Running
                && from.is_some()
            {
                // A stale suspicion of this node is still travelling: answer it.
                self.corrections.push(self.self_update());
            }
            if from.is_some() && self.refutes(u.incarnation, u.state) && !self.signed_by_me(&u) {
                return self.forged();
            }
            self.about_me(cx, u.incarnation, u.state, from);
            return;
        }
        let cap = self.config.max_members;
        let defenses = self.config.defenses;
        let memo = self.verified.as_ref();
        let View::Swim(t) = &mut self.view else {
            return;
        };
        if from.is_some()
            && matches!(u.state, MemberState::Suspect | MemberState::Dead)
            && let Some(m) = t.get(&u.peer)
            && m.state == MemberState::Alive
            && members::overrides(m.incarnation, m.state, u.incarnation, u.state)
            && let Some(newer) = t.update_of(&u.peer)
        {
            // The sender suspects a member whose refutation it missed (the refutation's
            // rumor has died out); without a correction its timer would declare it dead.
            self.corrections.push(newer);
        }
        if from.is_some()
            && defenses
            && t.needs_proof(&u, cap)
            && !memo.map_or_else(|| u.verify(), |m| m.verify(&u))
        {
            return self.forged();
        }
        let was_known = t.get(&u.peer).is_some();
        let (change, moved) = match t.apply(&u, now, cap) {
            Ok(c) => c,
            Err(()) => {
                self.rejected.over_capacity += 1;
                return;
            }
        };
        if matches!(change, Change::None) {
            return;
        }
        let addrs = t.get(&u.peer).map(|m| m.addrs.clone()).unwrap_or_default();
        let peer = u.peer;
        if moved
            && matches!(
                change,
                Change::Refreshed | Change::Refuted | Change::Suspected
            )
        {
            cx.emit(Event::MemberAddrs {
                peer,
                addrs: addrs.clone(),
            });
        }
        // The members held up grew: a member joined, came back, or arrived suspect.
        if matches!(change, Change::Up | Change::Back)
            || (matches!(change, Change::Suspected) && !was_known)
        {
            self.catch_up.grew = Some(now);
        }
        match change {
            Change::None => return,
            Change::Refreshed | Change::Tombstone => {}
            Change::Up => {
                self.offer_partner(cx, peer);
                cx.emit(Event::MemberUp { peer, addrs });
            }
            Change::Back => {
                self.offer_partner(cx, peer);
                cx.emit(Event::MemberUp { peer, addrs });
                cx.emit(Event::MemberBack { peer });
            }
            Change::Refuted => cx.emit(Event::MemberAlive { peer }),
            Change::Suspected => {
                if !was_known {
                    self.offer_partner(cx, peer);
                    cx.emit(Event::MemberUp { peer, addrs });
                }
                cx.emit(Event::MemberSuspect { peer });
                cx.set_timer(
                    self.config.suspicion_timeout,
                    Timer::Suspicion {
                        peer,
                        incarnation: u.incarnation,
                    },
                );
            }
            Change::Down => cx.emit(Event::MemberDown { peer }),
            Change::Left => cx.emit(Event::MemberLeft { peer }),
        }
        self.add_member_rumor(peer);
    }

    /// A claim `(incarnation, state)` about this node: a suspicion or death at its current
    /// incarnation (or an `alive` above it) is refuted by raising the incarnation.
    pub(crate) fn about_me(
        &mut self,
        cx: &mut Cx<'_, Self>,
        incarnation: u64,
        state: MemberState,
        from: Option<PeerId>,
    ) {
        if !self.refutes(incarnation, state) {
            return;
        }
        self.incarnation = incarnation + 1;
        // Others found this node unresponsive: it may be the slow one (Lifeguard).
        self.health.apply(1);
        self.sign_self();
        cx.emit(Event::Refuted {
            incarnation: self.incarnation,
        });
        self.add_member_rumor(self.me);
        if let Some(from) = from {
            // Answer the accuser at once: the suspicion's originator is usually the sender.
            let seq = self.next_seq();
            let msg = Message::Gossip {
                seq,
                feedback: false,
                members: vec![self.self_update()],
                entries: Vec::new(),
            };
            cx.send(from, msg);
        }
    }

    /// Sends the corrections gathered while handling one message back to its sender.
    pub(crate) fn flush_corrections(&mut self, cx: &mut Cx<'_, Self>, to: PeerId) {
        if self.corrections.is_empty() {
            return;
        }
        let mut members = std::mem::take(&mut self.corrections);
        members.truncate(MAX_CORRECTIONS);
        let seq = self.next_seq();
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

    // ---- joining and leaving ----

    /// `Command::Join`.
    pub(crate) fn join(&mut self, cx: &mut Cx<'_, Self>, seeds: Vec<PeerId>) {
        if self.phase != Phase::Running || !matches!(self.view, View::Swim(_)) {
            return;
        }
        let me = self.me;
        let fresh = seeds.into_iter().filter(|s| *s != me);
        if let Some(j) = &mut self.join {
            // A join under way keeps its own pace; new seeds join its rotation.
            for s in fresh {
                if j.seeds.len() < MAX_JOIN_SEEDS && !j.seeds.contains(&s) {
                    j.seeds.push(s);
                }
            }
            return;
        }
        if self.joined && self.up_count() > 0 {
            // Already a member with members: another join would only fetch the table again
            // (the driver asks again while the node's other protocols are still alone).
            return;
        }
        let mut seeds: Vec<PeerId> = Vec::new();
        for s in fresh {
            if seeds.len() < MAX_JOIN_SEEDS && !seeds.contains(&s) {
                seeds.push(s);
            }
        }
        self.join = Some(Join { seeds, attempt: 0 });
        self.on_join_attempt(cx);
    }

    /// `Command::Leave`.
    pub(crate) fn leave(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        self.phase = Phase::Leaving { ticks: LEAVE_TICKS };
        self.sign_self();
        self.add_member_rumor(self.me);
    }

    fn on_join_attempt(&mut self, cx: &mut Cx<'_, Self>) {
        let Some(j) = &self.join else {
            return;
        };
        if j.seeds.is_empty() || j.attempt >= j.seeds.len() as u32 * JOIN_ROUNDS {
            self.join = None;
            cx.emit(Event::JoinFailed);
            return;
        }
        let seed = j.seeds[j.attempt as usize % j.seeds.len()];
        let attempt = j.attempt;
        cx.send(
            seed,
            Message::Join {
                incarnation: self.incarnation,
                addrs: self.addrs.clone(),
                signature: self.signature,
            },
        );
        // Round r (every seed asked once per round) waits r + 1 timeouts: a seed slow to
        // answer under load is not asked again before its first answer could arrive.
        let round = attempt / j.seeds.len() as u32;
        let wait = self.config.join_timeout.saturating_mul(round + 1);
        cx.set_timer(wait, Timer::JoinRetry { attempt });
    }

    pub(crate) fn on_join_retry(&mut self, cx: &mut Cx<'_, Self>, attempt: u32) {
        if let Some(j) = &mut self.join
            && j.attempt == attempt
        {
            j.attempt += 1;
            self.on_join_attempt(cx);
        }
    }

    /// A joiner's request: it is a member now, and gets a sample of the member list.
    pub(crate) fn on_join(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        incarnation: u64,
        addrs: Vec<String>,
        signature: Signature,
    ) {
        if !matches!(self.view, View::Swim(_)) || from == self.me {
            return;
        }
        let u = MemberUpdate {
            peer: from,
            incarnation,
            state: MemberState::Alive,
            addrs,
            signature,
        };
        self.on_member_update(cx, u, Some(from));
        let members = self.member_sample(cx);
        cx.send(from, Message::JoinReply { members });
    }

    /// A seed's member list.
    pub(crate) fn on_join_reply(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        members: Vec<MemberUpdate>,
    ) {
        self.merge_members(cx, members, from);
        if self.join.take().is_some() {
            self.joined = true;
            let members = self.up_count();
            cx.emit(Event::Joined { members });
            self.add_member_rumor(self.me);
            // The seed's table lacks the members whose rumors died down before they
            // reached it; the next member sync would bring them, up to a sync period
            // later. One digest to another member brings them a round trip after the join
            // (memberlist's join is a full push-pull for the same reason).
            if let Some(p) = self.random_peers(cx, 1, Some(from)).first().copied() {
                let (complete, rows) = self.member_digest(cx);
                cx.send(p, Message::MemberDigest { complete, rows });
            }
        }
    }
}
