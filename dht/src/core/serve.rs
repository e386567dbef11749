//! Serving: answering the requests other peers (or this peer's own virtual nodes, inline)
//! send, and applying their one-way messages.
//!
//! A request names the virtual node it is meant for; a peer that does not run it (or whose
//! virtual node is still joining) refuses with a [`Reject`] instead of guessing. Every list
//! in a request is checked against its protocol bound before anything is applied.

use peerlab_overlay::{Cx, Id, Instant, Offence, PeerId};

use super::admission::{Intake, worse};
use super::fingers::finger_of;
use super::{Dht, Phase};
use crate::CLAIM_WINDOW;
use crate::message::{
    MAX_BATCH_ENTRIES, MAX_FINGER_ENTRIES, MAX_HINT_FORWARDS, MAX_PROVIDERS_PER_MESSAGE,
    MAX_SUCCESSORS, Message, NodeRef, Reject, Version,
};
use crate::ring::FINGERS;

/// What a repair offer of one record means to the replica.
enum Offer {
    /// Ask for it: missing here, or newer.
    Want,
    /// Nothing to do: held as new, the claims are settled, or this store would refuse it.
    Have,
}

impl Dht {
    /// Refuses request `req` from `from` for `reason`: counts it, reports the offence it
    /// is worth and returns the refusal to send.
    pub(super) fn reject(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        req: u64,
        reason: Reject,
    ) -> Option<Message> {
        match reason {
            Reject::UnknownVnode => self.counters.unknown_vnode += 1,
            Reject::BadFingerIndex => self.counters.bad_finger_index += 1,
            Reject::ValueTooLarge => self.counters.oversized_value += 1,
            Reject::StoreFull => self.counters.store_full += 1,
            Reject::Malformed => self.counters.malformed += 1,
            _ => {}
        }
        if let Some(o) = self.charge(from, reason, false, cx.now()) {
            self.penalize(cx, from, o);
        }
        Some(Message::Rejected { req, reason })
    }

    /// Counts a one-way message from `from` that breaks a rule and reports it.
    fn refuse(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, reason: Reject) {
        let _ = self.reject(cx, from, 0, reason);
    }

    /// What `from`'s repair offer of `(key, version, since)` means here: a record this peer
    /// lacks or holds older ([`Offer::Want`]), or nothing to do ([`Offer::Have`]: held as
    /// new, which confirms it, or the claims are settled). Another writer's record is
    /// wanted only from a holder closer to the key while the claim held is contestable:
    /// the owner settles conflicting first writes (`admission`).
    fn offered(&mut self, from: PeerId, key: &Id, version: Version, now: Instant) -> Offer {
        let now_ms = self.clock.wall_ms(now);
        let Some(held) = self.store.live(key, now_ms) else {
            // A record this store would refuse whatever its size (its writer's quota or
            // fair share is used up) is not asked for: it would be checked and refused at
            // every repair round.
            if self.cfg.defenses && self.store.refuses(&version.writer) {
                return Offer::Have;
            }
            return Offer::Want;
        };
        if !self.cfg.defenses || held.writer() == version.writer {
            if held.version >= version {
                self.store.confirm(key, now);
                return Offer::Have;
            }
            return Offer::Want;
        }
        let contestable = held
            .since
            .wall_ms
            .saturating_add(CLAIM_WINDOW.as_millis() as u64)
            > now_ms;
        if contestable && self.closer_holder(key, from) {
            Offer::Want
        } else {
            Offer::Have
        }
    }

    /// Finds an addressed virtual node that can serve, or the reason it cannot.
    pub(super) fn served_vnode(&self, vnode: &Id) -> Result<usize, Reject> {
        if !self.in_ring() {
            return Err(Reject::NotJoined);
        }
        let vi = self.vidx(vnode).ok_or(Reject::UnknownVnode)?;
        // A virtual node still (re)joining is not in the ring: its empty state must not
        // be taken for a ring member's (a stabilize adopting it would cut the asker's
        // successor list down to this one unjoined entry).
        if !self.vnodes[vi].joined {
            return Err(Reject::NotJoined);
        }
        Ok(vi)
    }

    /// Handles one incoming message; returns the reply to send, if any.
    pub(super) fn serve(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        msg: Message,
    ) -> Option<Message> {
        let now = cx.now();
        let now_ms = self.clock.wall_ms(now);
        match msg {
            Message::FindStep { req, vnode, key } => {
                if let Some(v) = vnode
                    && let Err(r) = self.served_vnode(&v)
                {
                    return self.reject(cx, from, req, r);
                }
                match self.local_step(&key) {
                    Some(step) => Some(Message::StepReply { req, step }),
                    None => self.reject(cx, from, req, Reject::NotJoined),
                }
            }
            Message::GetState {
                req,
                vnode,
                pred_only,
            } => match self.served_vnode(&vnode) {
                Ok(vi) => {
                    let v = &self.vnodes[vi];
                    Some(Message::State {
                        req,
                        pred: v.pred,
                        succs: if pred_only {
                            Vec::new()
                        } else {
                            v.succs.clone()
                        },
                    })
                }
                Err(r) => self.reject(cx, from, req, r),
            },
            Message::SuccessorHint {
                vnode,
                candidate,
                forwards,
            } => {
                if self.vidx(&vnode).is_none() {
                    self.refuse(cx, from, Reject::UnknownVnode);
                } else if self.in_ring() {
                    let forwards = forwards.min(MAX_HINT_FORWARDS);
                    self.on_successor_hint(cx, from, vnode, candidate, forwards);
                }
                None
            }
            Message::Notify { vnode, from: n } => {
                if n.peer != from {
                    // A notify in another peer's name.
                    self.counters.malformed += 1;
                    self.penalize(cx, from, Offence::Forged);
                } else if self.vidx(&vnode).is_none() {
                    self.refuse(cx, from, Reject::UnknownVnode);
                } else if self.in_ring() {
                    self.on_notify(cx, vnode, n);
                }
                None
            }
            Message::GetFingers {
                req,
                vnode,
                from_index,
            } => {
                let vi = match self.served_vnode(&vnode) {
                    Ok(vi) => vi,
                    Err(r) => return self.reject(cx, from, req, r),
                };
                if from_index as usize >= FINGERS {
                    return self.reject(cx, from, req, Reject::BadFingerIndex);
                }
                let v = &self.vnodes[vi];
                let mut runs: Vec<(u16, NodeRef)> = Vec::new();
                for i in from_index as usize..FINGERS {
                    if let Some(f) = finger_of(v, i)
                        && runs.last().is_none_or(|(_, l)| *l != f)
                    {
                        runs.push((i as u16, f));
                    }
                }
                runs.truncate(MAX_FINGER_ENTRIES);
                Some(Message::Fingers { req, runs })
            }
            Message::Leaving {
                vnode,
                leaving,
                pred: _,
                succs,
            } => {
                if leaving.peer != from {
                    // A leave in another peer's name.
                    self.counters.malformed += 1;
                    self.penalize(cx, from, Offence::Forged);
                } else if succs.len() > MAX_SUCCESSORS {
                    self.refuse(cx, from, Reject::Malformed);
                } else if self.vidx(&vnode).is_none() {
                    self.refuse(cx, from, Reject::UnknownVnode);
                } else {
                    self.on_leaving(cx, vnode, leaving, succs);
                }
                None
            }
            Message::Put {
                req,
                vnode,
                key,
                record,
            } => {
                let vi = match self.served_vnode(&vnode) {
                    Ok(vi) => vi,
                    Err(r) => return self.reject(cx, from, req, r),
                };
                let version = record.version;
                if let Err(r) = self.admit_record(key, record, now, Intake::Put) {
                    return self.reject(cx, from, req, r);
                }
                let replicas = self.replicas_of(&self.vnodes[vi]);
                for r in replicas {
                    self.push_records(cx, r.peer, &[key]);
                }
                // Without the defenses a newer write by anyone may have won: say which.
                let stored = if self.cfg.defenses {
                    version
                } else {
                    self.store.version(&key).unwrap_or(version)
                };
                Some(Message::PutAck { req, stored })
            }
            Message::Get { req, vnode, key } => {
                let vi = match self.served_vnode(&vnode) {
                    Ok(vi) => vi,
                    Err(r) => return self.reject(cx, from, req, r),
                };
                let replicas = self.read_candidates(&self.vnodes[vi]);
                Some(Message::GetReply {
                    req,
                    record: self.store.live(&key, now_ms).cloned(),
                    replicas,
                })
            }
            Message::AddProvider {
                req,
                vnode,
                key,
                entry,
            } => {
                let vi = match self.served_vnode(&vnode) {
                    Ok(vi) => vi,
                    Err(r) => return self.reject(cx, from, req, r),
                };
                if let Err(r) = self.admit_provider(cx, key, entry, Some(from)) {
                    return self.reject(cx, from, req, r);
                }
                let replicas = self.replicas_of(&self.vnodes[vi]);
                for r in replicas {
                    self.push_providers(cx, r.peer, &[key], now);
                }
                let providers = self.store.providers(&key, now_ms);
                Some(Message::Providers {
                    req,
                    providers: providers
                        .into_iter()
                        .take(MAX_PROVIDERS_PER_MESSAGE)
                        .collect(),
                })
            }
            Message::GetProviders { req, vnode, key } => {
                if let Err(r) = self.served_vnode(&vnode) {
                    return self.reject(cx, from, req, r);
                }
                let providers = self.store.providers(&key, now_ms);
                Some(Message::Providers {
                    req,
                    providers: providers
                        .into_iter()
                        .take(MAX_PROVIDERS_PER_MESSAGE)
                        .collect(),
                })
            }
            Message::Offer {
                req,
                from: range_from,
                to: range_to,
                digest,
                providers,
            } => {
                if !self.in_ring() {
                    return self.reject(cx, from, req, Reject::NotJoined);
                }
                if digest.len() > MAX_BATCH_ENTRIES || providers.len() > MAX_BATCH_ENTRIES {
                    return self.reject(cx, from, req, Reject::Malformed);
                }
                let mut keys = Vec::new();
                for (k, version, _since) in digest {
                    if let Offer::Want = self.offered(from, &k, version, now) {
                        keys.push(k);
                    }
                }
                let missing = self.providers_missing_from(&range_from, &range_to, &providers, now);
                if let Some(o) = self.merge_providers(cx, from, providers) {
                    self.penalize(cx, from, o);
                }
                self.push_providers(cx, from, &missing, now);
                Some(Message::Want { req, keys })
            }
            Message::Store { records, providers } => {
                if records.len() > MAX_BATCH_ENTRIES || providers.len() > MAX_BATCH_ENTRIES {
                    self.refuse(cx, from, Reject::Malformed);
                    return None;
                }
                if self.phase == Phase::Left || self.phase == Phase::Idle {
                    return None;
                }
                let a = self.apply_batch(from, records, now);
                let b = self.merge_providers(cx, from, providers);
                if let Some(o) = worse(a, b) {
                    self.penalize(cx, from, o);
                }
                None
            }
            Message::Handoff {
                req,
                vnode,
                records,
            } => {
                let vi = match self.served_vnode(&vnode) {
                    Ok(vi) => vi,
                    Err(r) => return self.reject(cx, from, req, r),
                };
                if records.len() > MAX_BATCH_ENTRIES {
                    return self.reject(cx, from, req, Reject::Malformed);
                }
                if let Some(o) = self.apply_batch(from, records, now) {
                    self.penalize(cx, from, o);
                }
                let keep = self
                    .replicas_of(&self.vnodes[vi])
                    .iter()
                    .any(|r| r.peer == from);
                Some(Message::HandoffAck { req, keep })
            }
            reply @ (Message::StepReply { .. }
            | Message::State { .. }
            | Message::Fingers { .. }
            | Message::PutAck { .. }
            | Message::GetReply { .. }
            | Message::Providers { .. }
            | Message::Want { .. }
            | Message::HandoffAck { .. }
            | Message::Rejected { .. }) => {
                self.on_reply(cx, from, reply);
                None
            }
        }
    }
}
