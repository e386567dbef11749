//! Reads that return the newest version they can find, and repair what they pass.
//!
//! Under churn a key's owner can hold an older copy than one of its replicas (a new owner
//! whose hand-off has not arrived, a replica that took over a dead owner's range before the
//! last write reached it) or none at all. A get therefore asks the owner, then the
//! replicas the owner names (at most [`MAX_READ_REPLICAS`], in parallel), and returns the
//! newest version among the answers — quorum-free read repair as in Dynamo (DeCandia et
//! al., SOSP 2007) and Cassandra: every asked holder that answered with an older copy of
//! the same writer's record, or with none, is sent the newest one (a `Store`, which it
//! admits by the usual rules). Records of another writer than the owner's are never
//! preferred to the owner's: the owner settles conflicting claims (`admission`).
//!
//! While ownership moves, the copies can sit past the replica set: a run of peers that just
//! joined in front of a key owns it and replicates it before the hand-offs reach them. So
//! the owner names the next distinct peers of its successor list too (up to `R − 1` more),
//! and when the owner and every replica answered "none", the get asks those before it
//! reports the key missing (and repairs the owner and replicas from what it finds).
//!
//! A replica that does not answer within the request timeout is evicted like any silent
//! peer (which starts the re-replication of `window`); the read completes with the
//! answers it has.

use peerlab_overlay::{Cx, Id};

use super::Dht;
use super::ops::OpKind;
use super::pending::Pending;
use crate::message::{Message, NodeRef, Record};
use crate::{Reply, Route};

/// Peers a get asks besides the owner, at most: the `R − 1` replicas and as many after
/// them for any usual `R`, and a bound on what one get costs however long a list the owner
/// returns.
pub const MAX_READ_REPLICAS: usize = 8;

/// A get's answers: the owner's first, then the replicas'.
#[derive(Clone, Debug, Default)]
pub(super) struct Read {
    /// Who answered and what it holds (`None`: no live record).
    answers: Vec<(NodeRef, Option<Record>)>,
    /// Replicas asked that have neither answered nor failed yet.
    waiting: usize,
    /// Peers after the replica set, asked only when every answer was "none".
    further: Vec<NodeRef>,
}

impl Dht {
    /// The owner `target` answered get `op` with `record` and named its `replicas`: ask
    /// them, or finish at once when there are none.
    pub(super) fn on_owner_read(
        &mut self,
        cx: &mut Cx<'_, Self>,
        op: u64,
        target: NodeRef,
        record: Option<Record>,
        replicas: Vec<NodeRef>,
    ) {
        let fanout = self.cfg.replicas.saturating_sub(1).min(MAX_READ_REPLICAS);
        let mut named: Vec<NodeRef> = Vec::new();
        for r in replicas {
            if named.len() >= (2 * fanout).min(MAX_READ_REPLICAS) {
                break;
            }
            if r.peer != target.peer && !named.iter().any(|a| a.peer == r.peer) {
                named.push(r);
            }
        }
        let further = named.split_off(fanout.min(named.len()));
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        o.read = Some(Read {
            answers: vec![(target, record)],
            waiting: 0,
            further,
        });
        self.ask_replicas(cx, op, named);
    }

    /// Asks `replicas` for get `op`'s key, or finishes the read when there are none.
    fn ask_replicas(&mut self, cx: &mut Cx<'_, Self>, op: u64, replicas: Vec<NodeRef>) {
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        let OpKind::Get { key } = o.kind else { return };
        let Some(read) = o.read.as_mut() else { return };
        read.waiting = replicas.len();
        if replicas.is_empty() {
            self.finish_read(cx, op, key);
            return;
        }
        for r in replicas {
            let req = self.fresh();
            let msg = Message::Get {
                req,
                vnode: r.id,
                key,
            };
            self.request(cx, r.peer, req, msg, Pending::Read { op, target: r });
        }
    }

    /// Replica `target` of get `op` answered (`Some(record)`, the record checked) or
    /// failed (`None`).
    pub(super) fn on_replica_read(
        &mut self,
        cx: &mut Cx<'_, Self>,
        op: u64,
        target: NodeRef,
        answer: Option<Option<Record>>,
    ) {
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        let OpKind::Get { key } = o.kind else { return };
        let Some(read) = o.read.as_mut() else { return };
        if let Some(record) = answer {
            read.answers.push((target, record));
        }
        read.waiting = read.waiting.saturating_sub(1);
        if read.waiting > 0 {
            return;
        }
        if read.answers.iter().all(|(_, r)| r.is_none()) && !read.further.is_empty() {
            // Nobody in the replica set holds the key: maybe it has not reached them yet.
            let further = std::mem::take(&mut read.further);
            self.ask_replicas(cx, op, further);
            return;
        }
        self.finish_read(cx, op, key);
    }

    /// Answers get `op` with the newest record found and repairs the holders behind it.
    fn finish_read(&mut self, cx: &mut Cx<'_, Self>, op: u64, key: Id) {
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        let Some(read) = o.read.take() else { return };
        let owner_writer = read
            .answers
            .first()
            .and_then(|(_, r)| r.as_ref())
            .map(Record::writer);
        let newest = read
            .answers
            .iter()
            .filter_map(|(_, r)| r.as_ref())
            .filter(|r| owner_writer.is_none_or(|w| r.writer() == w))
            .max_by_key(|r| r.version)
            .cloned();
        if let Some(best) = &newest {
            for (holder, held) in &read.answers {
                let behind = match held {
                    None => true,
                    Some(h) => h.writer() == best.writer() && h.version < best.version,
                };
                if behind {
                    self.counters.read_repairs += 1;
                    let msg = Message::Store {
                        records: vec![(key, best.clone())],
                        providers: Vec::new(),
                    };
                    self.tell(cx, holder.peer, msg);
                }
            }
        }
        let route = self.ops.get(&op).and_then(|o| o.route);
        let route = route.or_else(|| {
            read.answers.first().map(|(t, _)| Route {
                owner: t.peer,
                vnode: t.id,
                hops: 0,
            })
        });
        let Some(route) = route else { return };
        let version = newest.as_ref().map(|r| r.version);
        let value = newest.and_then(|r| r.value);
        self.finish_op(
            cx,
            op,
            Reply::Value {
                route,
                value,
                version,
            },
        );
    }
}
