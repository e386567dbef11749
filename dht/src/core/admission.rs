//! Admission: which records and provider entries from peers this peer takes, and what a
//! refusal costs the sender.
//!
//! A record arriving in a `Put`, `Store`, `Handoff` or repair push is taken only if (with
//! [`Config::defenses`](crate::Config::defenses) on):
//!
//! 1. its ring id lies in a range this peer owns or replicates, by its own view
//!    ([`Dht::stores_for`]) — views can be stale, so this refusal is mild;
//! 2. its version is at most [`MAX_CLOCK_SKEW`](crate::MAX_CLOCK_SKEW) ahead of this
//!    peer's wall clock, and it has not expired;
//! 3. it keeps its own rules and its writer's signature verifies for this ring id
//!    ([`Record::check`]) — once per receipt, and not at all for a copy of the very record
//!    held;
//! 4. the store's rules let it in: order, ownership, quotas, bounds (`store`).
//!
//! A `Put` adds one rule: a writer overwriting its own key must sign on the claim held
//! and with a newer version, or it is told [`Reject::Outdated`] (with what is held) and
//! signs again. A `Put` never replaces another writer's live record (first arrival at the
//! owner wins); a relayed copy does only if its sender holds the key ahead of this peer
//! ([`Dht::closer_holder`]: a ring member in this peer's routing state, the owner or an
//! earlier replica) and the held claim is younger than [`CLAIM_WINDOW`](crate::CLAIM_WINDOW).
//! A replica whose routing state does not name the owner (the third of three, in a large
//! ring) keeps the claim it holds: safety over convergence in the rare honest race. Conflicting first writes (racing puts that
//! reached two owners while the ring changed, two sides of a short partition) thus converge
//! on the owner's record, while a writer's self-chosen claim time decides nothing: a peer
//! that saw a fresh write and back-dates a claim of its own is refused everywhere but where
//! it is itself the closer holder (a position only a Sybil attack on the ring buys). Provider entries must be signed by their provider, no longer-lived than
//! [`MAX_PROVIDER_TTL`](crate::MAX_PROVIDER_TTL), and an `AddProvider` must come from the
//! provider itself.
//!
//! Every refusal of a peer's input is reported against the sender as an [`Offence`]
//! ([`offence_of`]): forgeries are proof of malice; refusals an honest peer with a stale
//! view can earn are mild; refusals that are part of the protocol's normal flow (a full
//! store, a write to re-sign, a record that expired on its way) cost nothing.
//!
//! Refusals that only say the sender's view differs from this peer's (a range this peer
//! does not own or replicate, a virtual node it does not have, and for relayed copies a
//! claim this peer holds for another writer: [`view_dependent`]) are charged at most once
//! per sender per [`VIEW_REFUSAL_SPACING`]. Views disagree for as
//! long as the ring changes — two rings merging after a partition heals take a minute or
//! more — and an honest peer then sends many such messages in a row: charged each time,
//! they added up to a ban between honest neighbours. Charged once a spacing, they never
//! outgrow the node's leaky strike bucket, while every refusal is still counted.

use std::time::Duration;

use peerlab_overlay::{Cx, Id, Instant, Offence, PeerId};

use super::Dht;
use crate::message::Reject;
use crate::record::{ProviderEntry, Record, RecordError};
use crate::store::Applied;
use crate::{Error, MAX_CLOCK_SKEW, MAX_PROVIDER_TTL, UNDEFENDED_PROVIDER_TTL};

/// Average gaps between virtual nodes, per replica, that the stretch before a virtual
/// node whose keys this peer accepts spans (see [`Dht::stores_for`]). Six per replica: a
/// replica set's `R` nodes spread over more than `6R` average gaps about once in a
/// thousand sets, while a peer accepts about `6R / N` of arbitrary keys.
const REPLICA_SPAN: f64 = 6.0;

/// The least time between two view-dependent refusals charged to one sender: the node's
/// strike bucket sheds one point per 10 s, so a 1-point charge per 10 s never accumulates,
/// however long a ring change keeps two views apart.
pub(crate) const VIEW_REFUSAL_SPACING: Duration = Duration::from_secs(10);

/// Most senders whose last view-dependent charge is remembered. Beyond it, charges older
/// than [`VIEW_REFUSAL_SPACING`] are forgotten first, then the oldest one: forgetting a
/// sender only means its next such refusal is charged again.
pub(crate) const MAX_VIEW_REFUSAL_RECORDS: usize = 1024;

/// How a record arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Intake {
    /// A write sent to this peer as the key's owner.
    Put,
    /// A copy pushed by another holder (repair, replication, hand-off).
    Relay {
        /// The authenticated sender.
        from: PeerId,
    },
}

/// What refusing input for `reason` charges its sender, if anything.
pub(super) fn offence_of(reason: Reject) -> Option<Offence> {
    match reason {
        Reject::BadSignature => Some(Offence::Forged),
        Reject::Malformed | Reject::BadFingerIndex => Some(Offence::Malformed),
        Reject::ValueTooLarge => Some(Offence::Excess),
        Reject::UnknownVnode
        | Reject::NotOwner { .. }
        | Reject::TooFarAhead
        | Reject::NotReplica
        | Reject::QuotaExceeded => Some(Offence::Refused),
        Reject::StoreFull | Reject::NotJoined | Reject::Outdated { .. } | Reject::Expired => None,
    }
}

/// Whether refusing for `reason` may mean no more than that the sender's view differs from
/// this peer's: of the ring (a range or virtual node), or — for a copy `relayed` by another
/// holder — of a key's claim, which two sides of a healed partition hold differently until
/// the claims settle. A write sent to the owner for another writer's key stays charged
/// each time: nothing but the writer's own choice makes it.
pub(super) fn view_dependent(reason: Reject, relayed: bool) -> bool {
    match reason {
        Reject::UnknownVnode | Reject::NotReplica => true,
        Reject::NotOwner { .. } => relayed,
        _ => false,
    }
}

/// The worse of two offences (by severity).
pub(super) fn worse(a: Option<Offence>, b: Option<Offence>) -> Option<Offence> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.severity() > x.severity() { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Dht {
    /// Reports `offence` against `peer` (never against this peer itself) and counts it.
    pub(super) fn penalize(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId, offence: Offence) {
        if peer == self.me {
            return;
        }
        match offence {
            Offence::Forged => self.counters.forged += 1,
            Offence::Refused => self.counters.refused += 1,
            _ => {}
        }
        cx.penalize(peer, offence);
    }

    /// What refusing `from`'s input (`relayed`: a copy pushed by another holder) for
    /// `reason` at `now` charges it: [`offence_of`], except that a [`view_dependent`]
    /// refusal is charged only if none was in the last [`VIEW_REFUSAL_SPACING`].
    pub(super) fn charge(
        &mut self,
        from: PeerId,
        reason: Reject,
        relayed: bool,
        now: Instant,
    ) -> Option<Offence> {
        let offence = offence_of(reason)?;
        if !view_dependent(reason, relayed) {
            return Some(offence);
        }
        let charged = &mut self.view_refusals;
        if charged
            .get(&from)
            .is_some_and(|&at| now.saturating_since(at) < VIEW_REFUSAL_SPACING)
        {
            self.counters.view_refusals_uncharged += 1;
            return None;
        }
        if charged.len() >= MAX_VIEW_REFUSAL_RECORDS && !charged.contains_key(&from) {
            charged.retain(|_, at| now.saturating_since(*at) < VIEW_REFUSAL_SPACING);
            let oldest = charged.iter().min_by_key(|(_, at)| **at).map(|(p, _)| *p);
            if let Some(oldest) = oldest.filter(|_| charged.len() >= MAX_VIEW_REFUSAL_RECORDS) {
                charged.remove(&oldest);
            }
        }
        charged.insert(from, now);
        Some(offence)
    }

    /// Whether ring id `key` lies in a range this peer owns or replicates, by its own
    /// view: the range of one of its joined virtual nodes `v`, or the stretch of
    /// [`REPLICA_SPAN`] · `R` average gaps before `v` (the gap estimated from all its
    /// successor lists). The replica sets that include `v` start about `R − 1` virtual
    /// nodes before it, a few more where one peer's virtual nodes sit side by side or gaps
    /// run long. Tolerant on purpose, since a stale view or uneven spacing must not refuse
    /// an honest replica its copies; a record for an arbitrary key is still refused by
    /// all but about `REPLICA_SPAN · R / N` of the peers.
    pub(super) fn stores_for(&self, key: &Id) -> bool {
        let (mut spanned, mut gaps) = (0.0, 0usize);
        for v in self.vnodes.iter().filter(|v| v.joined) {
            if v.pred.is_some_and(|p| key.in_half_open(&p.id, &v.id)) {
                return true;
            }
            let Some(last) = v.succs.last() else {
                continue;
            };
            if last.id == v.id {
                return true; // alone in the ring: everything is ours
            }
            spanned += v.id.distance_to(&last.id).as_fraction();
            gaps += v.succs.len();
        }
        if gaps == 0 {
            return false;
        }
        let span = REPLICA_SPAN * self.cfg.replicas as f64 * spanned / gaps as f64;
        span >= 1.0
            || self
                .vnodes
                .iter()
                .filter(|v| v.joined)
                .any(|v| key.distance_to(&v.id).as_fraction() <= span)
    }

    /// Takes `record` for ring id `key` if the rules allow (module docs).
    ///
    /// # Errors
    /// Why it was refused, as the reason a `Put` would be rejected with.
    pub(super) fn admit_record(
        &mut self,
        key: Id,
        record: Record,
        now: Instant,
        intake: Intake,
    ) -> Result<Applied, Reject> {
        let now_ms = self.clock.wall_ms(now);
        if !self.cfg.defenses {
            return self
                .store
                .apply(key, record, now, now_ms, true)
                .map_err(reject_of);
        }
        if self.store.get(&key) == Some(&record) {
            // A copy of what is held (a repair repeat): nothing to check or change.
            return Ok(Applied::Stale);
        }
        if !self.stores_for(&key) {
            return Err(Reject::NotReplica);
        }
        if self.clock.too_far_ahead(&record.version, now) {
            return Err(Reject::TooFarAhead);
        }
        if record.is_expired(now_ms) {
            return Err(Reject::Expired);
        }
        if record.value_len() > self.cfg.max_value_size {
            return Err(Reject::ValueTooLarge);
        }
        match record.check(&key) {
            Ok(()) => {}
            Err(RecordError::BadSignature) => return Err(Reject::BadSignature),
            Err(RecordError::BadClaim | RecordError::TtlTooLong) => return Err(Reject::Malformed),
        }
        if intake == Intake::Put
            && let Some(held) = self.store.live(&key, now_ms)
            && held.writer() == record.writer()
            && (held.since != record.since || held.version >= record.version)
        {
            return Err(Reject::Outdated {
                since: held.since,
                version: held.version,
            });
        }
        // Another writer's claim replaces the one held only when a holder closer to the key
        // relays it: the owner settles conflicting first writes, and a peer that merely
        // saw a write cannot take the key by back-dating a claim of its own.
        let may_contest = match intake {
            Intake::Put => false,
            Intake::Relay { from } => {
                self.store
                    .live(&key, now_ms)
                    .is_some_and(|held| held.writer() != record.writer())
                    && self.closer_holder(&key, from)
            }
        };
        let version = record.version;
        let applied = self
            .store
            .apply(key, record, now, now_ms, may_contest)
            .map_err(reject_of)?;
        self.clock.observe(&version);
        Ok(applied)
    }

    /// Whether `peer` holds ring id `key` ahead of this peer: it is a ring member this
    /// peer's routing state names (a predecessor, successor or finger, learned by
    /// stabilization, so not a stranger that merely computed a position), and one of its
    /// virtual nodes (assuming the network's [`Config::vnodes`](crate::Config::vnodes), as
    /// every peer places its virtual nodes by the same rule) follows `key` more closely
    /// than any of this peer's joined ones: it is the key's owner or an earlier replica.
    pub(super) fn closer_holder(&self, key: &Id, peer: PeerId) -> bool {
        let known = self.vnodes.iter().any(|v| {
            v.pred
                .iter()
                .chain(&v.succs)
                .chain(v.fingers.nodes())
                .any(|n| n.peer == peer)
        });
        if !known || peer == self.me {
            return false;
        }
        let Some(mine) = self
            .vnodes
            .iter()
            .filter(|v| v.joined)
            .map(|v| key.distance_to(&v.id))
            .min()
        else {
            return false;
        };
        (0..self.cfg.vnodes).any(|i| key.distance_to(&Id::vnode(&peer, i)) < mine)
    }

    /// Takes a provider `entry` for ring id `key` if the rules allow: signed by its
    /// provider, not longer-lived than [`MAX_PROVIDER_TTL`] (plus the skew bound), and —
    /// when `from` is given (an `AddProvider`) — announced by the provider itself.
    ///
    /// # Errors
    /// Why it was refused.
    pub(super) fn admit_provider(
        &mut self,
        cx: &mut Cx<'_, Self>,
        key: Id,
        mut entry: ProviderEntry,
        from: Option<PeerId>,
    ) -> Result<(), Reject> {
        let now = cx.now();
        let now_ms = self.clock.wall_ms(now);
        if self.cfg.defenses {
            if from.is_some_and(|f| f != entry.provider) {
                return Err(Reject::BadSignature);
            }
            let skew = MAX_CLOCK_SKEW.as_millis() as u64;
            let cap = now_ms.saturating_add(MAX_PROVIDER_TTL.as_millis() as u64 + skew);
            if entry.expires_ms > cap {
                return Err(Reject::TooFarAhead);
            }
            if !self.stores_for(&key) {
                return Err(Reject::NotReplica);
            }
            if !entry.verify(&key) {
                return Err(Reject::BadSignature);
            }
        } else {
            let cap = now_ms.saturating_add(UNDEFENDED_PROVIDER_TTL.as_millis() as u64);
            entry.expires_ms = entry.expires_ms.min(cap);
        }
        let pick = cx.rng().next_u64();
        self.store
            .add_provider(key, entry, now, now_ms, pick, from.is_some());
        Ok(())
    }
}

/// The reason a `Put` is rejected with when the store refuses a record.
fn reject_of(e: Error) -> Reject {
    match e {
        Error::ValueTooLarge { .. } => Reject::ValueTooLarge,
        Error::NotOwner { owner } => Reject::NotOwner { owner },
        Error::QuotaExceeded { .. } => Reject::QuotaExceeded,
        _ => Reject::StoreFull,
    }
}
