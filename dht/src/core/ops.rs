//! Storage operations, the client side: put, get, delete and provider records.
//!
//! An operation looks its key's owner up, sends the request to it and retries with a fresh
//! lookup (at most [`MAX_OP_ATTEMPTS`]) when the owner times out or no longer runs the
//! virtual node. A get that misses at the owner asks the owner's replicas in turn.

use peerlab_overlay::{Cx, Id, Instant};

use super::pending::Pending;
use super::routing::Purpose;
use super::{Dht, Phase};
use crate::message::{
    MAX_PROVIDERS_PER_MESSAGE, MAX_SUCCESSORS, Message, NodeRef, ProviderEntry, Record, Reject,
    Version,
};
use crate::{Error, Reply, Route};

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

/// A client's storage operation in flight.
#[derive(Clone, Debug)]
pub(super) struct Op {
    pub(super) req: u64,
    pub(super) kind: OpKind,
    pub(super) attempts: u32,
    pub(super) route: Option<Route>,
    pub(super) replicas: Vec<NodeRef>,
    pub(super) asked_replicas: bool,
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
                replicas: Vec::new(),
                asked_replicas: false,
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
        o.replicas.clear();
        o.asked_replicas = false;
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
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        let route = o.route.unwrap_or(Route {
            owner: target.peer,
            vnode: target.id,
            hops: 0,
        });
        match (msg, &o.kind) {
            (Message::PutAck { stored, .. }, OpKind::Put { .. }) => {
                let req = o.req;
                self.ops.remove(&op);
                self.emit(
                    cx,
                    req,
                    Ok(Reply::Stored {
                        route,
                        version: stored,
                    }),
                );
            }
            (
                Message::GetReply {
                    record, replicas, ..
                },
                OpKind::Get { .. },
            ) => {
                if record.is_none() && !o.asked_replicas {
                    o.asked_replicas = true;
                    o.replicas = replicas
                        .into_iter()
                        .filter(|r| r.peer != target.peer)
                        .take(MAX_SUCCESSORS)
                        .collect();
                }
                if record.is_none() && !o.replicas.is_empty() {
                    let next = o.replicas.remove(0);
                    let kind = o.kind.clone();
                    self.send_op_to(cx, op, next, &kind);
                    return;
                }
                let req = o.req;
                self.ops.remove(&op);
                let version = record.as_ref().map(|r| r.version);
                let value = record.and_then(|r| r.value);
                self.emit(
                    cx,
                    req,
                    Ok(Reply::Value {
                        route,
                        value,
                        version,
                    }),
                );
            }
            (Message::Providers { providers, .. }, kind) => {
                let reply = match kind {
                    OpKind::AddProvider { .. } => Reply::ProviderAdded { route },
                    _ => Reply::Providers {
                        route,
                        providers: providers
                            .into_iter()
                            .take(MAX_PROVIDERS_PER_MESSAGE)
                            .collect(),
                    },
                };
                let req = o.req;
                self.ops.remove(&op);
                self.emit(cx, req, Ok(reply));
            }
            (Message::Rejected { reason, .. }, _) => match reason {
                Reject::UnknownVnode | Reject::NotJoined => {
                    self.forget_vnode(cx, target);
                    self.retry_op(cx, op, Error::Rejected(reason));
                }
                _ => self.fail_op(cx, op, Error::Rejected(reason)),
            },
            _ => self.counters.unexpected_reply += 1,
        }
    }

    pub(super) fn write(
        &mut self,
        cx: &mut Cx<'_, Self>,
        req: u64,
        key: &[u8],
        value: Option<Vec<u8>>,
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
        let time = now.as_micros().max(self.last_version + 1);
        self.last_version = time;
        let record = Record {
            version: Version {
                time,
                writer: self.me,
            },
            value,
        };
        self.start_op(
            cx,
            req,
            OpKind::Put {
                key: Id::hash(key),
                record,
            },
        );
    }
}
