//! Membership anti-entropy: a periodic digest/delta push-pull of the member table.
//!
//! Membership rumors reach everyone with high probability, not certainty. Every
//! [`Config::member_sync_period`](crate::Config) a node therefore reconciles its member
//! table with one random member, the way Scuttlebutt reconciles data (`anti_entropy.rs`):
//!
//! 1. the initiator sends `(peer, incarnation, state)` rows ([`Message::MemberDigest`],
//!    ≈ 43 bytes a member, its own row first; a random subset marked incomplete when the
//!    table does not fit the message budget);
//! 2. the partner answers ([`Message::MemberDelta`]) with the full records in which the
//!    initiator is behind (or that it did not list) and the members about which the
//!    partner itself is behind (`want`);
//! 3. the initiator answers the `want` with those records.
//!
//! While the table changes the sync runs every period; after one quiet run it stretches to
//! memberlist's scaled push-pull period (`cadence.rs`). Tables that agree cost one digest
//! and no answer; memberlist's full-state push-pull would send every record with its
//! addresses both ways. A list of records merged from
//! another node (a join reply, a member delta) is second-hand and may be old, so a `dead`
//! it claims about a member held up here only makes that member suspect, giving it the
//! chance to refute (memberlist does the same). Member syncs also go now and then to
//! members held dead, so the two sides of a healed partition find each other again.
//!
//! # Stragglers
//!
//! A node that joins while others do can miss a member's rumor altogether: the rumor had
//! died down before anyone knew of the joiner, and its seed's answer predates the member.
//! Such a node would wait for its next member sync — at rest, up to memberlist's scaled
//! push-pull period. So every probe carries its sender's count of members held up
//! ([`Message::Ping`], [`Message::Ack`], a few bytes), and a node that hears a count above
//! its own and whose table has not grown for a probe period (it is not merely still taking
//! in rumors) sends that prober a digest at once, at most once per probe period. A count
//! is a claim: the most a false one buys is one digest, within that rate, to a peer that
//! is probing or was probed.

use std::collections::BTreeSet;

use peerlab_overlay::{Cx, Instant, Offence, PeerId, Rng};

use crate::config::MAX_VERSION;
use crate::members::{self, MemberState, View};
use crate::message::{FRAME_SLACK, MAX_ITEMS, MemberRow, MemberUpdate, Message, item_len};
use crate::{Gossip, Phase, Timer};

/// Probability that a member sync goes to a member held dead rather than one that is up.
/// A dead-but-alive member (one that was cut off) is found again within about
/// `member_sync_period / DEAD_SYNC_CHANCE / N_dead`; the cost is one wasted sync in four.
const DEAD_SYNC_CHANCE: f64 = 0.25;

/// When the member table last grew, and when a member count last started a sync.
#[derive(Debug, Default)]
pub(crate) struct CatchUp {
    /// The last time a member was added (or came back).
    pub(crate) grew: Option<Instant>,
    /// The last time a probe's member count made this node send a digest.
    asked: Option<Instant>,
}

/// `first`, then `then`, as many as fit `budget` bytes after `reserved`; `first` is
/// shuffled when it does not all fit. `then` is taken lazily: no record past the budget is
/// built.
fn fit_records(
    budget: usize,
    rng: &mut Rng,
    mut first: Vec<MemberUpdate>,
    then: impl IntoIterator<Item = MemberUpdate>,
    reserved: usize,
) -> Vec<MemberUpdate> {
    let mut room = budget.saturating_sub(FRAME_SLACK + reserved);
    let first_len: usize = first.iter().map(item_len).sum();
    if first_len > room {
        rng.shuffle(&mut first);
    }
    let mut out = Vec::new();
    for u in first.into_iter().chain(then) {
        let l = item_len(&u);
        if l > room {
            break;
        }
        room -= l;
        out.push(u);
    }
    out
}

impl Gossip {
    /// The sync timer: a digest to one partner.
    pub(crate) fn on_member_sync(&mut self, cx: &mut Cx<'_, Self>) {
        if self.phase != Phase::Running {
            return;
        }
        let rest = self.rest_periods(self.config.member_sync_period);
        if self.sync_cadence.due(self.news, rest)
            && let Some(p) = self.sync_partner(cx)
        {
            let (complete, rows) = self.member_digest(cx);
            cx.send(p, Message::MemberDigest { complete, rows });
        }
        cx.set_timer(self.config.member_sync_period, Timer::MemberSync);
    }

    /// Members this node holds up, itself included: the count its probes carry.
    pub(crate) fn members_held_up(&self) -> u32 {
        u32::try_from(self.up_count() + 1).unwrap_or(u32::MAX)
    }

    /// A probe from or answered by `from` says it holds `theirs` members up: a node that
    /// holds fewer and has stopped learning members is a straggler and asks `from` for a
    /// sync (see "Stragglers" above).
    pub(crate) fn on_member_count(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, theirs: u32) {
        if self.phase != Phase::Running || theirs <= self.members_held_up() {
            return;
        }
        let now = cx.now();
        let period = self.config.probe_period;
        let recent = |t: Option<Instant>| t.is_some_and(|t| now.saturating_since(t) < period);
        if recent(self.catch_up.grew) || recent(self.catch_up.asked) {
            return;
        }
        self.catch_up.asked = Some(now);
        let (complete, rows) = self.member_digest(cx);
        cx.send(from, Message::MemberDigest { complete, rows });
    }

    /// The member-sync partner: a random member that is up, or now and then (always, when
    /// none is up) a member held dead, so that both sides of a healed partition meet again.
    fn sync_partner(&mut self, cx: &mut Cx<'_, Self>) -> Option<PeerId> {
        let up = self.random_peers(cx, 1, None).first().copied();
        let View::Swim(t) = &self.view else {
            return up;
        };
        if up.is_some() && !cx.rng().chance(DEAD_SYNC_CHANCE) {
            return up;
        }
        let dead: Vec<PeerId> = t
            .members
            .iter()
            .filter(|(_, m)| m.state == MemberState::Dead)
            .map(|(p, _)| *p)
            .collect();
        cx.rng().choose(&dead).copied().or(up)
    }

    /// A sample of the member table (with this node's own record first) within the budget:
    /// the answer to a join.
    pub(crate) fn member_sample(&mut self, cx: &mut Cx<'_, Self>) -> Vec<MemberUpdate> {
        let me = self.self_update();
        let all: Vec<MemberUpdate> = match &self.view {
            View::Swim(t) => t.members.keys().filter_map(|p| t.update_of(p)).collect(),
            View::Static(_) => Vec::new(),
        };
        let mut out = vec![me];
        let reserved = item_len(&out[0]);
        let budget = self.config.max_message_bytes;
        out.extend(fit_records(budget, cx.rng(), all, Vec::new(), reserved));
        out
    }

    /// This node's member table as digest rows, its own row first, within the message
    /// budget (a random subset when the table does not fit). Returns `(complete, rows)`.
    pub(crate) fn member_digest(&mut self, cx: &mut Cx<'_, Self>) -> (bool, Vec<MemberRow>) {
        let mut rows = vec![MemberRow(self.me, self.incarnation, MemberState::Alive)];
        let View::Swim(t) = &self.view else {
            return (true, rows);
        };
        // The longest row: the largest incarnation and the longest state name.
        let row_len = item_len(&MemberRow(self.me, MAX_VERSION, MemberState::Suspect));
        let fit = self.config.max_message_bytes.saturating_sub(FRAME_SLACK) / row_len.max(1);
        let mut all: Vec<MemberRow> = t
            .members
            .iter()
            .map(|(p, m)| MemberRow(*p, m.incarnation, m.state))
            .collect();
        let complete = all.len() < fit;
        if !complete {
            cx.rng().shuffle(&mut all);
            all.truncate(fit.saturating_sub(1));
        }
        rows.extend(all);
        (complete, rows)
    }

    /// Answers a member digest: the records in which its sender is behind, and the members
    /// about which this node is behind. Nothing is sent when the tables agree.
    pub(crate) fn on_member_digest(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        complete: bool,
        rows: Vec<MemberRow>,
    ) {
        if rows.len() > MAX_ITEMS {
            self.rejected.oversized_messages += 1;
            self.offend(Offence::Malformed);
            return;
        }
        if !matches!(self.view, View::Swim(_)) || from == self.me {
            return;
        }
        let mut newer = Vec::new();
        let mut want = Vec::new();
        let mut listed = BTreeSet::new();
        for MemberRow(peer, incarnation, state) in rows {
            if incarnation > MAX_VERSION {
                self.rejected.absurd_version += 1;
                self.offend(Offence::Malformed);
                continue;
            }
            listed.insert(peer);
            if peer == self.me {
                if self.config.defenses && incarnation > self.incarnation {
                    // A record of this node newer than this life's: only its signature can
                    // prove it (a previous life under the same key), so ask for the record
                    // rather than outbid a bare row.
                    want.push(peer);
                    continue;
                }
                let before = self.incarnation;
                // A suspicion of this node at its current incarnation is refuted (and the
                // refutation sent) as any other; an older record is answered with this one.
                self.about_me(cx, incarnation, state, Some(from));
                if self.incarnation == before
                    && (incarnation, state) != (before, MemberState::Alive)
                {
                    newer.push(self.self_update());
                }
                continue;
            }
            match self.member(&peer) {
                None => want.push(peer),
                Some(m) if members::overrides(incarnation, state, m.incarnation, m.state) => {
                    want.push(peer)
                }
                Some(m) if members::overrides(m.incarnation, m.state, incarnation, state) => {
                    newer.extend(self.update_of(&peer))
                }
                Some(_) => {}
            }
        }
        let mut unlisted: Vec<MemberUpdate> = Vec::new();
        if !listed.contains(&self.me) {
            unlisted.push(self.self_update());
        }
        if let View::Swim(t) = &self.view {
            unlisted.extend(
                t.members
                    .keys()
                    .filter(|p| !listed.contains(*p))
                    .filter_map(|p| t.update_of(p)),
            );
        }
        if !complete {
            // The sender may know these already; they fill what room is left, at random.
            cx.rng().shuffle(&mut unlisted);
        }
        // The want list takes at most half the budget; the records the rest.
        let id_len = item_len(&self.me);
        want.truncate(self.config.max_message_bytes / 2 / id_len.max(1));
        let budget = self.config.max_message_bytes;
        let members = fit_records(budget, cx.rng(), newer, unlisted, want.len() * id_len);
        if !members.is_empty() || !want.is_empty() {
            cx.send(from, Message::MemberDelta { members, want });
        }
    }

    /// A digest's answer (or the answer to a `want`): merge its records, then send the
    /// records it wants.
    pub(crate) fn on_member_delta(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        members: Vec<MemberUpdate>,
        want: Vec<PeerId>,
    ) {
        if want.len() > MAX_ITEMS {
            self.rejected.oversized_messages += 1;
            self.offend(Offence::Malformed);
            return;
        }
        self.merge_members(cx, members, from);
        if want.is_empty() {
            return;
        }
        let records = want.iter().filter_map(|p| {
            if *p == self.me {
                Some(self.self_update())
            } else {
                self.update_of(p)
            }
        });
        let budget = self.config.max_message_bytes;
        let members = fit_records(budget, cx.rng(), Vec::new(), records, 0);
        if !members.is_empty() {
            cx.send(
                from,
                Message::MemberDelta {
                    members,
                    want: Vec::new(),
                },
            );
        }
    }

    /// Merges a second-hand member list (join reply, member delta).
    pub(crate) fn merge_members(
        &mut self,
        cx: &mut Cx<'_, Self>,
        members: Vec<MemberUpdate>,
        from: PeerId,
    ) {
        if members.len() > MAX_ITEMS {
            self.rejected.oversized_messages += 1;
            self.offend(Offence::Malformed);
            return;
        }
        for mut u in members {
            // A list merge is second-hand and possibly old (a healed partition's view): a
            // "dead" it claims about a member that is up here becomes a suspicion, which the
            // member can refute (memberlist does the same).
            if u.state == MemberState::Dead && self.member(&u.peer).is_some_and(|m| m.state.is_up())
            {
                u.state = MemberState::Suspect;
            }
            self.on_member_update(cx, u, Some(from));
        }
        self.flush_corrections(cx, from);
    }
}
