//! Versioned data: this node's writes, and the activation of versions received from others.
//!
//! Applications publish key/value entries. Each entry is owned by its *origin* and
//! versioned by the origin's own counter (1, 2, 3, … per write), so "newer" is unambiguous
//! and a delete travels as a versioned tombstone (Demers et al., PODC 1987). A version that
//! becomes active here is stored ([`Store`](crate::store)), reported
//! ([`Event::EntryUpdated`]) and, unless only anti-entropy runs, made a hot rumor.
//!
//! Received versions become active at once ([`Activation::Immediate`](crate::Activation::Immediate)) or at the node's
//! next tick ([`Activation::CycleEnd`](crate::Activation::CycleEnd), the synchronous-cycle model of the papers), in
//! which case they wait in a bounded pending list.

use peerlab_overlay::{Cx, Offence, PeerId};
use serde_bytes::ByteBuf;

use crate::budget::PENDING_OVERHEAD;
use crate::config::Mode;
use crate::message::{Entry, OriginDelta};
use crate::store::{Applied, Rejection};
use crate::{Error, Event, Gossip, Phase};

/// A received version waiting for the cycle's end.
pub(crate) enum Pending {
    /// One entry of a rumor push.
    Entry(Entry),
    /// One anti-entropy delta row (applied whole).
    Delta(OriginDelta),
}

impl Pending {
    /// Bytes it costs while it waits (`budget.rs`).
    fn cost(&self) -> usize {
        let value = |v: &Option<ByteBuf>| v.as_ref().map_or(0, |v| v.len());
        match self {
            Pending::Entry(e) => PENDING_OVERHEAD + e.key.len() + value(&e.value),
            Pending::Delta(d) => {
                PENDING_OVERHEAD
                    + d.entries
                        .iter()
                        .map(|(k, _, v)| PENDING_OVERHEAD + k.len() + value(v))
                        .sum::<usize>()
            }
        }
    }
}

impl Gossip {
    /// A `Publish` (`value` is `Some`) or a `Delete` (`None`): this node's next version.
    pub(crate) fn write(
        &mut self,
        cx: &mut Cx<'_, Self>,
        req: u64,
        key: String,
        value: Option<Vec<u8>>,
    ) {
        let fail = |cx: &mut Cx<'_, Self>, error| cx.emit(Event::CommandFailed { req, error });
        if self.phase != Phase::Running {
            return fail(cx, Error::NotRunning);
        }
        if key.len() > self.config.max_key_len {
            return fail(cx, Error::KeyTooLong(self.config.max_key_len));
        }
        if value
            .as_ref()
            .is_some_and(|v| v.len() > self.config.max_value_len)
        {
            return fail(cx, Error::ValueTooLarge(self.config.max_value_len));
        }
        let version = self.store.watermark(&self.me) + 1;
        let deleted = value.is_none();
        let older = self.store.get(&self.me, &key).map(|e| e.version);
        let budget = self.store_budget();
        match self.store.apply(
            self.me,
            &key,
            version,
            value,
            &self.config,
            &self.me,
            budget,
        ) {
            Ok(_) => {}
            Err(_) => return fail(cx, Error::CapacityReached),
        }
        cx.emit(Event::EntryUpdated {
            origin: self.me,
            key: key.clone(),
            version,
            deleted,
        });
        cx.emit(Event::Published { req, version });
        if self.config.mode != Mode::AntiEntropy {
            self.add_data_rumor(self.me, key, version, older);
            self.push_fresh(cx);
        }
    }

    /// A `Delete` of one of this node's live keys.
    pub(crate) fn delete(&mut self, cx: &mut Cx<'_, Self>, req: u64, key: String) {
        let live = self
            .store
            .get(&self.me, &key)
            .is_some_and(|e| e.value.is_some());
        if !live {
            cx.emit(Event::CommandFailed {
                req,
                error: Error::NotFound,
            });
            return;
        }
        self.write(cx, req, key, None);
    }

    /// Makes a validated entry active: stores it, emits the event, makes it a hot rumor.
    pub(crate) fn activate_entry(
        &mut self,
        cx: &mut Cx<'_, Self>,
        origin: PeerId,
        key: &str,
        version: u64,
        value: Option<Vec<u8>>,
    ) {
        let deleted = value.is_none();
        let older = self.store.get(&origin, key).map(|e| e.version);
        let budget = self.store_budget();
        match self
            .store
            .apply(origin, key, version, value, &self.config, &self.me, budget)
        {
            Ok(Applied::New) => {
                cx.emit(Event::EntryUpdated {
                    origin,
                    key: key.to_string(),
                    version,
                    deleted,
                });
                if self.config.mode != Mode::AntiEntropy {
                    // A newer version replaces any hot rumor of an older one of the same key.
                    self.add_data_rumor(origin, key.to_string(), version, older);
                }
            }
            Ok(Applied::Known) => {}
            Err(r) => self.count(r),
        }
    }

    /// Activates what was received during the last cycle ([`Activation::CycleEnd`](crate::Activation::CycleEnd)).
    pub(crate) fn activate_pending(&mut self, cx: &mut Cx<'_, Self>) {
        self.pending_bytes = 0;
        for p in std::mem::take(&mut self.pending) {
            match p {
                Pending::Entry(e) => self.activate_entry(
                    cx,
                    e.origin,
                    &e.key,
                    e.version,
                    e.value.map(ByteBuf::into_vec),
                ),
                Pending::Delta(d) => self.apply_delta(cx, d),
            }
        }
    }

    /// Keeps a received version for the cycle's end, within the `max_rumors` bound and the
    /// data budget.
    pub(crate) fn push_pending(&mut self, p: Pending) {
        let cost = p.cost();
        if self.pending.len() >= self.config.max_rumors
            || self.data_bytes() + cost > self.config.data_budget()
        {
            self.rejected.over_capacity += 1;
        } else {
            self.pending_bytes += cost;
            self.pending.push(p);
        }
    }

    /// What the store may hold: the data budget less what pending versions take.
    fn store_budget(&self) -> usize {
        self.config.data_budget().saturating_sub(self.pending_bytes)
    }

    /// Counts a refused entry or delta row.
    pub(crate) fn count(&mut self, r: Rejection) {
        match r {
            Rejection::UnknownOrigin => self.rejected.unknown_origin += 1,
            Rejection::AbsurdVersion | Rejection::NotWritten => self.rejected.absurd_version += 1,
            Rejection::Oversized => self.rejected.oversized += 1,
            Rejection::Malformed => self.rejected.malformed += 1,
            Rejection::OverCapacity => self.rejected.over_capacity += 1,
        }
    }

    /// Counts a refused entry or delta row of the message being handled and holds its
    /// sender to account. Input no honest peer sends is `Malformed`; input an honest peer
    /// with an older or newer view may send (an origin it knows and this node not yet, a
    /// version of this node's data from before it restarted) is `Refused`. A refusal for
    /// lack of room is no offence: the sender may be relaying an origin's data faithfully,
    /// and the budget's fairness rule already bounds what that origin gets.
    pub(crate) fn refuse(&mut self, r: Rejection) {
        self.count(r);
        match r {
            Rejection::AbsurdVersion | Rejection::Oversized | Rejection::Malformed => {
                self.offend(Offence::Malformed)
            }
            Rejection::UnknownOrigin | Rejection::NotWritten => self.offend(Offence::Refused),
            Rejection::OverCapacity => {}
        }
    }

    /// Checks a received entry: its origin is a member, its sizes and version plausible.
    pub(crate) fn check_entry(&self, e: &Entry) -> Result<(), Rejection> {
        if !self.is_member(&e.origin) {
            return Err(Rejection::UnknownOrigin);
        }
        self.store.check_entry(&self.me, e, &self.config)
    }
}
