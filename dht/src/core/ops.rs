//! Storage operations, the client side: put, get, delete and provider records.
//!
//! An operation looks its key's owner up, sends the request to it and retries with a fresh
//! lookup (at most [`MAX_OP_ATTEMPTS`]) when the owner times out or no longer runs the
//! virtual node. A get reads the owner and its replicas and returns the newest version
//! (`read`). An owner that answers a get with a record whose signature does not verify is
//! reported, and the get is tried again with a lookup that goes past that peer
//! ([`Lookup::exclude`](super::lookup::Lookup::exclude)), so it reads the key's next holder
//! rather than trust the liar's word on who else holds the key.

use std::time::Duration;

use peerlab_overlay::{Cx, Id, Instant, Offence, PeerId};

use super::pending::Pending;
use super::read::Read;
use super::routing::Purpose;
use super::{Dht, Phase};
use crate::message::{
    MAX_PROVIDERS_PER_MESSAGE, Message, NodeRef, ProviderEntry, Record, Reject, Version,
};
use crate::{Error, MAX_RECORD_TTL, Reply, Route};

/// Attempts of a storage operation (a fresh lookup each) before it fails.
const MAX_OP_ATTEMPTS: u32 = 3;

/// A storage operation: what is sent to the key's owner.
#[derive(Clone, Debug)]
pub(super) enum OpKind {
    Put { key: Id, record: Record },
    Get { key: Id },
    AddProvider { key: Id, entry: ProviderEntry },
    GetProviders { key: Id },
}

impl OpKind {
    pub(super) fn key(&self) -> Id {
        match self {
            OpKind::Put { key, .. }
            | OpKind::Get { key }
            | OpKind::AddProvider { key, .. }
            | OpKind::GetProviders { key } => *key,
        }
    }
}

/// A record in a `GetReply` whose signature does not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Forged;

/// A client's storage operation in flight.
#[derive(Clone, Debug)]
pub(super) struct Op {
    pub(super) req: u64,
    pub(super) kind: OpKind,
    pub(super) attempts: u32,
    pub(super) route: Option<Route>,
    /// A get's answers once the owner has answered (`read`).
    pub(super) read: Option<Read>,
    /// Whether a put was already signed again after an [`Reject::Outdated`].
    pub(super) resigned: bool,
    /// Peers that answered this get as its owner with a forged record: later attempts
    /// look past them (at most [`MAX_OP_ATTEMPTS`]).
    pub(super) liars: Vec<PeerId>,
    /// Owners a request of this operation timed out at: later attempts look past them too
    /// (at most [`MAX_OP_ATTEMPTS`]). The key's predecessor may not have noticed the death
    /// yet and would name the same dead owner to every attempt.
    pub(super) dead: Vec<PeerId>,
}

impl Dht {
    pub(super) fn start_op(&mut self, cx: &mut Cx<'_, Self>, req: u64, kind: OpKind) {
        if !self.in_ring() {
            let e = if self.phase == Phase::Left {
                Error::Leaving
            } else {
                Error::NotJoined
            };
            self.emit(cx, req, Err(e));
            return;
        }
        if self.client_lookups >= self.cfg.max_concurrent_lookups {
            self.emit(cx, req, Err(Error::Busy(self.cfg.max_concurrent_lookups)));
            return;
        }
        let op = self.fresh();
        let key = kind.key();
        self.ops.insert(
            op,
            Op {
                req,
                kind,
                attempts: 1,
                route: None,
                read: None,
                resigned: false,
                liars: Vec::new(),
                dead: Vec::new(),
            },
        );
        self.client_lookups += 1;
        self.start_lookup(cx, key, Purpose::Op { op });
    }

    pub(super) fn send_op(&mut self, cx: &mut Cx<'_, Self>, op: u64, owner: NodeRef, hops: u32) {
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        o.route = Some(Route {
            owner: owner.peer,
            vnode: owner.id,
            hops,
        });
        let kind = o.kind.clone();
        self.send_op_to(cx, op, owner, &kind);
    }

    pub(super) fn send_op_to(
        &mut self,
        cx: &mut Cx<'_, Self>,
        op: u64,
        target: NodeRef,
        kind: &OpKind,
    ) {
        let req = self.fresh();
        let vnode = target.id;
        let msg = match kind.clone() {
            OpKind::Put { key, record } => Message::Put {
                req,
                vnode,
                key,
                record,
            },
            OpKind::Get { key } => Message::Get { req, vnode, key },
            OpKind::AddProvider { key, entry } => Message::AddProvider {
                req,
                vnode,
                key,
                entry,
            },
            OpKind::GetProviders { key } => Message::GetProviders { req, vnode, key },
        };
        self.request(cx, target.peer, req, msg, Pending::Op { op, target });
    }

    pub(super) fn fail_op(&mut self, cx: &mut Cx<'_, Self>, op: u64, e: Error) {
        if let Some(o) = self.ops.remove(&op) {
            self.emit(cx, o.req, Err(e));
        }
    }

    pub(super) fn retry_op(&mut self, cx: &mut Cx<'_, Self>, op: u64, e: Error) {
        let in_ring = self.in_ring();
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        if o.attempts >= MAX_OP_ATTEMPTS || !in_ring {
            self.fail_op(cx, op, e);
            return;
        }
        o.attempts += 1;
        o.read = None;
        let key = o.kind.key();
        self.client_lookups += 1;
        self.start_lookup(cx, key, Purpose::Op { op });
    }

    pub(super) fn on_op_reply(
        &mut self,
        cx: &mut Cx<'_, Self>,
        op: u64,
        target: NodeRef,
        msg: Message,
    ) {
        let Some(o) = self.ops.get(&op) else {
            return;
        };
        let route = o.route.unwrap_or(Route {
            owner: target.peer,
            vnode: target.id,
            hops: 0,
        });
        let kind = o.kind.clone();
        match (msg, kind) {
            (Message::PutAck { stored, .. }, OpKind::Put { .. }) => {
                self.clock.observe(&stored);
                self.finish_op(
                    cx,
                    op,
                    Reply::Stored {
                        route,
                        version: stored,
                    },
                );
            }
            (
                Message::GetReply {
                    record, replicas, ..
                },
                OpKind::Get { key },
            ) => {
                let record = match record.map(|r| self.read_check(cx, target.peer, &key, r)) {
                    Some(Err(Forged)) => {
                        // The owner lied: ask the key's next holders instead, found by a
                        // lookup that goes past this peer.
                        if let Some(o) = self.ops.get_mut(&op) {
                            o.liars.push(target.peer);
                        }
                        self.retry_op(cx, op, Error::Rejected(Reject::BadSignature));
                        return;
                    }
                    Some(Ok(r)) => r,
                    None => None,
                };
                self.on_owner_read(cx, op, target, record, replicas);
            }
            (Message::Providers { .. }, OpKind::AddProvider { .. }) => {
                self.finish_op(cx, op, Reply::ProviderAdded { route });
            }
            (Message::Providers { providers, .. }, OpKind::GetProviders { key }) => {
                let providers = self.read_providers(cx, target.peer, &key, providers);
                self.finish_op(cx, op, Reply::Providers { route, providers });
            }
            (Message::Rejected { reason, .. }, kind) => match reason {
                Reject::UnknownVnode | Reject::NotJoined => {
                    self.forget_vnode(cx, target);
                    self.retry_op(cx, op, Error::Rejected(reason));
                }
                // The target does not see the key in its ranges: our route was stale.
                Reject::NotReplica => self.retry_op(cx, op, Error::Rejected(reason)),
                Reject::NotOwner { owner } => self.fail_op(cx, op, Error::NotOwner { owner }),
                Reject::QuotaExceeded => {
                    let writer = self.me;
                    self.fail_op(cx, op, Error::QuotaExceeded { writer });
                }
                Reject::Outdated { since, version } => {
                    self.resign(cx, op, target, kind, since, version, reason);
                }
                _ => self.fail_op(cx, op, Error::Rejected(reason)),
            },
            _ => {
                self.counters.unexpected_reply += 1;
                self.penalize(cx, target.peer, Offence::Malformed);
            }
        }
    }

    pub(super) fn finish_op(&mut self, cx: &mut Cx<'_, Self>, op: u64, reply: Reply) {
        if let Some(o) = self.ops.remove(&op) {
            self.emit(cx, o.req, Ok(reply));
        }
    }

    /// The owner holds this peer's own record of the key under claim `since` at `version`:
    /// sign the write again on that claim, newer than `version`, and send it once more.
    #[allow(clippy::too_many_arguments)]
    fn resign(
        &mut self,
        cx: &mut Cx<'_, Self>,
        op: u64,
        target: NodeRef,
        kind: OpKind,
        since: Version,
        version: Version,
        reason: Reject,
    ) {
        let OpKind::Put { key, record } = kind else {
            return self.fail_op(cx, op, Error::Rejected(reason));
        };
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        if o.resigned || since.writer != self.me || version.writer != self.me {
            return self.fail_op(cx, op, Error::Rejected(reason));
        }
        o.resigned = true;
        self.clock.observe(&version);
        let ver = self.clock.tick(cx.now(), self.me);
        let ttl = record.expires_ms.saturating_sub(record.version.wall_ms);
        let record = Record::sign(
            &key,
            record.value,
            ver,
            since,
            ver.wall_ms.saturating_add(ttl),
            &self.key,
        );
        let kind = OpKind::Put { key, record };
        if let Some(o) = self.ops.get_mut(&op) {
            o.kind = kind.clone();
        }
        self.send_op_to(cx, op, target, &kind);
    }

    /// A record a `GetReply` from `from` returned for `key`: kept if its signature verifies
    /// and it has not expired (`Ok(None)`: expired). A forgery is reported and returned as
    /// `Err(Forged)`.
    pub(super) fn read_check(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        key: &Id,
        record: Record,
    ) -> Result<Option<Record>, Forged> {
        let now = cx.now();
        if !self.cfg.defenses {
            return Ok(Some(record));
        }
        if record.check(key).is_err() {
            self.penalize(cx, from, Offence::Forged);
            return Err(Forged);
        }
        if record.is_expired(self.clock.wall_ms(now)) {
            return Ok(None);
        }
        if !self.clock.too_far_ahead(&record.version, now) {
            self.clock.observe(&record.version);
        }
        Ok(Some(record))
    }

    /// Provider entries a `Providers` answer from `from` returned for `key`: the ones
    /// their providers signed (a forgery is reported once), at most
    /// [`MAX_PROVIDERS_PER_MESSAGE`].
    fn read_providers(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        key: &Id,
        providers: Vec<ProviderEntry>,
    ) -> Vec<ProviderEntry> {
        let mut list: Vec<ProviderEntry> = providers
            .into_iter()
            .take(MAX_PROVIDERS_PER_MESSAGE)
            .collect();
        if self.cfg.defenses {
            let before = list.len();
            list.retain(|e| e.verify(key));
            if list.len() < before {
                self.penalize(cx, from, Offence::Forged);
            }
        }
        list
    }

    /// Signs and sends a put (`value`) or delete (`None`) of `key` that lives `ttl`.
    pub(super) fn write(
        &mut self,
        cx: &mut Cx<'_, Self>,
        req: u64,
        key: &[u8],
        value: Option<Vec<u8>>,
        ttl: Option<Duration>,
        now: Instant,
    ) {
        let len = value.as_ref().map_or(0, Vec::len);
        if len > self.cfg.max_value_size {
            self.emit(
                cx,
                req,
                Err(Error::ValueTooLarge {
                    len,
                    max: self.cfg.max_value_size,
                }),
            );
            return;
        }
        let id = Id::hash(key);
        let now_ms = self.clock.wall_ms(now);
        // A copy held here tells the claim to write on (and the version to pass).
        let held = self
            .store
            .live(&id, now_ms)
            .map(|h| (h.writer(), h.since, h.version));
        if let Some((_, _, v)) = held {
            self.clock.observe(&v);
        }
        let version = self.clock.tick(now, self.me);
        let since = match held {
            Some((w, since, _)) if w == self.me => since,
            _ => version,
        };
        let ttl = ttl.unwrap_or(self.cfg.record_ttl).min(MAX_RECORD_TTL);
        let expires_ms = version.wall_ms.saturating_add(ttl.as_millis() as u64);
        let record = Record::sign(&id, value, version, since, expires_ms, &self.key);
        self.start_op(cx, req, OpKind::Put { key: id, record });
    }
}
