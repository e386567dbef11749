//! Serving: answering the requests other peers (or this peer's own virtual nodes, inline)
//! send, and applying their one-way messages.
//!
//! A request names the virtual node it is meant for; a peer that does not run it (or whose
//! virtual node is still joining) refuses with a [`Reject`] instead of guessing. Every list
//! in a request is checked against its protocol bound before anything is applied.

use peerlab_overlay::{Cx, Id, PeerId};

use super::fingers::finger_of;
use super::{Dht, Phase};
use crate::Error;
use crate::message::{
    MAX_BATCH_ENTRIES, MAX_FINGER_ENTRIES, MAX_HINT_FORWARDS, MAX_PROVIDERS_PER_MESSAGE,
    MAX_SUCCESSORS, Message, NodeRef, Reject,
};
use crate::ring::FINGERS;

impl Dht {
    pub(super) fn reject(&mut self, req: u64, reason: Reject) -> Option<Message> {
        match reason {
            Reject::UnknownVnode => self.counters.unknown_vnode += 1,
            Reject::BadFingerIndex => self.counters.bad_finger_index += 1,
            Reject::ValueTooLarge => self.counters.oversized_value += 1,
            Reject::StoreFull => self.counters.store_full += 1,
            Reject::Malformed => self.counters.malformed += 1,
            Reject::NotJoined => {}
        }
        Some(Message::Rejected { req, reason })
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
        match msg {
            Message::FindStep { req, vnode, key } => {
                if let Some(v) = vnode
                    && let Err(r) = self.served_vnode(&v)
                {
                    return self.reject(req, r);
                }
                match self.local_step(&key) {
                    Some(step) => Some(Message::StepReply { req, step }),
                    None => self.reject(req, Reject::NotJoined),
                }
            }
            Message::GetState { req, vnode } => match self.served_vnode(&vnode) {
                Ok(vi) => {
                    let v = &self.vnodes[vi];
                    Some(Message::State {
                        req,
                        pred: v.pred,
                        succs: v.succs.clone(),
                    })
                }
                Err(r) => self.reject(req, r),
            },
            Message::SuccessorHint {
                vnode,
                candidate,
                forwards,
            } => {
                if self.in_ring() {
                    let forwards = forwards.min(MAX_HINT_FORWARDS);
                    self.on_successor_hint(cx, vnode, candidate, forwards);
                }
                None
            }
            Message::Notify { vnode, from: n } => {
                if n.peer != from {
                    self.counters.malformed += 1;
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
                    Err(r) => return self.reject(req, r),
                };
                if from_index as usize >= FINGERS {
                    return self.reject(req, Reject::BadFingerIndex);
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
                if leaving.peer != from || succs.len() > MAX_SUCCESSORS {
                    self.counters.malformed += 1;
                } else if self.vidx(&vnode).is_none() {
                    self.counters.unknown_vnode += 1;
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
                    Err(r) => return self.reject(req, r),
                };
                match self.store.apply(key, record.clone(), now) {
                    Ok(_) => {}
                    Err(Error::ValueTooLarge { .. }) => {
                        return self.reject(req, Reject::ValueTooLarge);
                    }
                    Err(_) => return self.reject(req, Reject::StoreFull),
                }
                let replicas = self.replicas_of(&self.vnodes[vi]);
                for r in replicas {
                    self.push_records(cx, r.peer, &[key]);
                }
                let stored = self.store.version(&key).unwrap_or(record.version);
                Some(Message::PutAck { req, stored })
            }
            Message::Get { req, vnode, key } => {
                let vi = match self.served_vnode(&vnode) {
                    Ok(vi) => vi,
                    Err(r) => return self.reject(req, r),
                };
                let replicas = self.replicas_of(&self.vnodes[vi]);
                Some(Message::GetReply {
                    req,
                    record: self.store.get(&key).cloned(),
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
                    Err(r) => return self.reject(req, r),
                };
                self.merge_providers(vec![(key, vec![entry])], now);
                let replicas = self.replicas_of(&self.vnodes[vi]);
                for r in replicas {
                    self.push_providers(cx, r.peer, &[key], now);
                }
                let providers = self.store.providers(&key, now);
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
                    return self.reject(req, r);
                }
                let providers = self.store.providers(&key, now);
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
                from: _,
                to: _,
                digest,
                providers,
            } => {
                if !self.in_ring() {
                    return self.reject(req, Reject::NotJoined);
                }
                if digest.len() > MAX_BATCH_ENTRIES || providers.len() > MAX_BATCH_ENTRIES {
                    return self.reject(req, Reject::Malformed);
                }
                let mut keys = Vec::new();
                for (k, ver) in digest {
                    match self.store.version(&k) {
                        Some(have) if have >= ver => self.store.confirm(&k, now),
                        _ => keys.push(k),
                    }
                }
                self.merge_providers(providers, now);
                Some(Message::Want { req, keys })
            }
            Message::Store { records, providers } => {
                if records.len() > MAX_BATCH_ENTRIES || providers.len() > MAX_BATCH_ENTRIES {
                    self.counters.malformed += 1;
                    return None;
                }
                if self.phase == Phase::Left || self.phase == Phase::Idle {
                    return None;
                }
                self.apply_batch(records, now);
                self.merge_providers(providers, now);
                None
            }
            Message::Handoff {
                req,
                vnode,
                records,
            } => {
                let vi = match self.served_vnode(&vnode) {
                    Ok(vi) => vi,
                    Err(r) => return self.reject(req, r),
                };
                if records.len() > MAX_BATCH_ENTRIES {
                    return self.reject(req, Reject::Malformed);
                }
                self.apply_batch(records, now);
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
