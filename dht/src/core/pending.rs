//! Requests in flight: sending them, matching their answers, refusals and timeouts.
//!
//! Every request carries a fresh `req` and is remembered with the peer it went to and when
//! it was sent; an answer is accepted only from that peer and only once, and is a
//! round-trip sample of it (`rtt`). A request that goes unanswered for that peer's timeout
//! — its round-trip timeout clamped between
//! [`Config::request_timeout`](crate::Config::request_timeout) and
//! [`MAX_RTO_FACTOR`](super::MAX_RTO_FACTOR) times that, so with no sample or on fast
//! links exactly `request_timeout` — is Chord's failure detector: the peer is evicted from
//! every table. An answer that comes after its timeout is not acted on, but still gives a
//! sample, so a live peer that answers late is evicted once and then given time to answer.
//! A refusal (the addressed virtual node is not there) forgets that virtual node only.

use std::time::Duration;

use peerlab_overlay::{Cx, Id, Instant, Offence, PeerId};

use super::{Dht, Timer};
use crate::Error;
use crate::message::{
    MAX_BATCH_ENTRIES, MAX_FINGER_ENTRIES, MAX_HINT_FORWARDS, MAX_SUCCESSORS, Message, NodeRef,
    Reject,
};
use crate::ring::FINGERS;

/// What a request in flight was for.
#[derive(Clone, Debug)]
pub(super) enum Pending {
    Step {
        lookup: u64,
        asked: Option<NodeRef>,
    },
    /// A lookup's anchor asked for its successors after a refused answer (`lookup`).
    StepState {
        lookup: u64,
        asked: NodeRef,
    },
    Stabilize {
        vnode: Id,
        succ: NodeRef,
    },
    Candidate {
        vnode: Id,
        succ: NodeRef,
        list: Vec<NodeRef>,
        cand: NodeRef,
    },
    JoinState {
        vnode: Id,
        /// The joining vnode's successor as the lookup found it.
        succ: NodeRef,
        /// The vnode whose state was asked for: `succ`, or its predecessor when `succ` is
        /// this very vnode as an earlier run of this peer left it in others' tables.
        ask: NodeRef,
        /// The joining vnode's predecessor as the lookup found it (told once joined).
        pred: NodeRef,
    },
    /// Check-predecessor: is virtual node `vnode`'s predecessor alive, and who precedes it?
    CheckPred {
        vnode: Id,
    },
    /// A stabilize round that membership settled (`member_hints`, "Neighbours at rest"):
    /// is `succ` alive, and does it still take `vnode` for its predecessor?
    SuccCheck {
        vnode: Id,
        succ: NodeRef,
    },
    Ping,
    /// Fix-fingers through the current finger: is its predecessor a closer one?
    FingerCheck {
        vnode: Id,
        index: usize,
        cur: NodeRef,
    },
    Fingers {
        vnode: Id,
        from: usize,
    },
    Op {
        op: u64,
        target: NodeRef,
    },
    /// A get's read of one replica (`read`).
    Read {
        op: u64,
        target: NodeRef,
    },
    Offer,
    Handoff {
        keys: Vec<Id>,
    },
}

/// A request in flight: whom it went to, when, with what timeout, and what it was for.
#[derive(Clone, Debug)]
pub(super) struct PendingReq {
    pub(super) to: PeerId,
    pub(super) kind: Pending,
    /// When it was sent (its answer's round trip is measured from here).
    pub(super) sent: Instant,
    /// The timeout its timer was set with (zero for requests served inline).
    pub(super) timeout: Duration,
}

impl Dht {
    /// Sends a request (or serves it inline when addressed to this peer) and remembers it.
    pub(super) fn request(
        &mut self,
        cx: &mut Cx<'_, Self>,
        to: PeerId,
        req: u64,
        msg: Message,
        kind: Pending,
    ) {
        let timeout = if to == self.me {
            Duration::ZERO
        } else {
            self.rtt.timeout(&to)
        };
        let sent = cx.now();
        self.pending.insert(
            req,
            PendingReq {
                to,
                kind,
                sent,
                timeout,
            },
        );
        if to == self.me {
            if let Some(reply) = self.serve(cx, to, msg) {
                self.on_reply(cx, to, reply);
            }
        } else {
            cx.set_timer(timeout, Timer::Request(req));
            cx.send(to, msg);
        }
    }

    /// Sends a one-way message, or handles it inline when addressed to this peer.
    pub(super) fn tell(&mut self, cx: &mut Cx<'_, Self>, to: PeerId, msg: Message) {
        if to == self.me {
            let _ = self.serve(cx, to, msg);
        } else {
            cx.send(to, msg);
        }
    }

    pub(super) fn on_reply(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Message) {
        let req = match &msg {
            Message::StepReply { req, .. }
            | Message::State { req, .. }
            | Message::Fingers { req, .. }
            | Message::PutAck { req, .. }
            | Message::GetReply { req, .. }
            | Message::Providers { req, .. }
            | Message::Want { req, .. }
            | Message::HandoffAck { req, .. }
            | Message::Rejected { req, .. } => *req,
            _ => return,
        };
        match self.pending.get(&req) {
            Some(p) if p.to == from => {}
            Some(_) => {
                // An answer to what was asked of another peer.
                self.counters.unexpected_reply += 1;
                self.penalize(cx, from, Offence::Unsolicited);
                return;
            }
            None => {
                // Late (after its timeout), duplicate, or never asked for. Only the last is
                // an offence: a peer that was slow, frozen or cut off delivers its backlog of
                // answers at once when it comes back, and charging each would ban it just as
                // it becomes reachable again. Request ids are issued in order, so an id above
                // the last issued one was never asked for. A late answer from the peer asked
                // is still a round-trip sample: the next request to it waits long enough.
                self.counters.unexpected_reply += 1;
                if self.rtt.late_answer(req, from, cx.now()) {
                    self.counters.late_replies += 1;
                }
                if req > self.next_id {
                    self.penalize(cx, from, Offence::Unsolicited);
                }
                return;
            }
        }
        let Some(p) = self.pending.remove(&req) else {
            return;
        };
        if p.to != self.me {
            self.rtt.sample(p.to, p.sent, cx.now());
        }
        if let Message::Rejected { reason, .. } = msg {
            self.on_rejected(cx, p, reason);
            return;
        }
        match (p.kind, msg) {
            (Pending::Step { lookup, .. }, Message::StepReply { step, .. }) => {
                self.on_step(cx, from, lookup, step);
            }
            (kind, Message::State { pred, succs, .. }) => {
                if succs.len() > MAX_SUCCESSORS {
                    self.bad_reply(cx, from, kind);
                    return;
                }
                match kind {
                    Pending::Stabilize { vnode, succ } => {
                        self.on_stabilize_state(cx, vnode, succ, pred, succs)
                    }
                    Pending::Candidate {
                        vnode,
                        succ: old,
                        cand,
                        ..
                    } => {
                        // The successor we move away from may belong right after the
                        // candidate (two chains of concurrent joins interleaved): say so.
                        if let Some(first) = succs.first()
                            && old.id != cand.id
                            && old.id.in_open(&cand.id, &first.id)
                        {
                            self.tell(
                                cx,
                                cand.peer,
                                Message::SuccessorHint {
                                    vnode: cand.id,
                                    candidate: old,
                                    forwards: 0,
                                },
                            );
                        }
                        // The candidate's answer is a stabilize answer from our new
                        // successor: its predecessor may be closer still.
                        self.on_stabilize_state(cx, vnode, cand, pred, succs);
                    }
                    Pending::JoinState {
                        vnode, succ, pred, ..
                    } => {
                        let before = self.vnode_joined(&vnode);
                        self.on_join_state(cx, vnode, succ, succs);
                        if !before && self.vnode_joined(&vnode) && pred.id != vnode {
                            let hint = Message::SuccessorHint {
                                vnode: pred.id,
                                candidate: self.me_at(vnode),
                                forwards: MAX_HINT_FORWARDS,
                            };
                            self.tell(cx, pred.peer, hint);
                        }
                    }
                    Pending::FingerCheck { vnode, index, cur } => {
                        self.on_finger_state(cx, vnode, index, cur, pred)
                    }
                    Pending::CheckPred { vnode } => self.on_pred_state(vnode, from, pred),
                    Pending::SuccCheck { vnode, succ } => self.on_succ_check(cx, vnode, succ, pred),
                    Pending::StepState { lookup, .. } => {
                        self.on_step_state(cx, from, lookup, succs)
                    }
                    Pending::Ping => {}
                    other => self.bad_reply(cx, from, other),
                }
            }
            (Pending::Fingers { vnode, from: first }, Message::Fingers { runs, .. }) => {
                if runs.len() > MAX_FINGER_ENTRIES
                    || runs.iter().any(|(i, _)| *i as usize >= FINGERS)
                {
                    self.counters.bad_finger_index += 1;
                    self.penalize(cx, from, Offence::Malformed);
                    return;
                }
                if let Some(vi) = self.vidx(&vnode) {
                    let v = &mut self.vnodes[vi];
                    if v.fingers.runs().is_empty() {
                        v.fingers.install(&runs, first);
                    }
                }
            }
            (
                Pending::Op { op, target },
                m @ (Message::PutAck { .. } | Message::GetReply { .. } | Message::Providers { .. }),
            ) => {
                self.on_op_reply(cx, op, target, m);
            }
            (Pending::Read { op, target }, Message::GetReply { record, .. }) => {
                let key = self.ops.get(&op).map(|o| o.kind.key());
                let record = match (record, key) {
                    (Some(r), Some(key)) => self.read_check(cx, from, &key, r).ok().flatten(),
                    _ => None,
                };
                self.on_replica_read(cx, op, target, Some(record));
            }
            (Pending::Offer, Message::Want { keys, .. }) => {
                if keys.len() > MAX_BATCH_ENTRIES {
                    self.bad_reply(cx, from, Pending::Offer);
                    return;
                }
                self.push_records(cx, from, &keys);
            }
            (Pending::Handoff { keys }, Message::HandoffAck { keep, .. }) => {
                let now = cx.now();
                for k in keys {
                    if keep || self.is_primary(&k) {
                        self.store.confirm(&k, now);
                    } else {
                        self.store.remove(&k);
                    }
                }
            }
            (kind, _) => self.bad_reply(cx, from, kind),
        }
    }

    /// A reply from `from` that breaks a bound or does not fit its request: reported, and
    /// the request is over as if refused (whatever waited on it carries on).
    fn bad_reply(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, kind: Pending) {
        self.counters.malformed += 1;
        self.penalize(cx, from, Offence::Malformed);
        self.on_failed(cx, from, kind, false);
    }

    pub(super) fn on_rejected(&mut self, cx: &mut Cx<'_, Self>, p: PendingReq, reason: Reject) {
        match p.kind {
            Pending::Op { op, target } => {
                self.on_op_reply(cx, op, target, Message::Rejected { req: 0, reason });
            }
            kind => {
                // The peer is alive but the virtual node we addressed is not there (it
                // left, or the peer is rejoining): forget that pointer and carry on as on
                // a timeout, without suspecting the whole peer.
                let node = match &kind {
                    Pending::Step { asked, .. } => *asked,
                    Pending::StepState { asked, .. } => Some(*asked),
                    Pending::Stabilize { succ, .. } | Pending::JoinState { ask: succ, .. } => {
                        Some(*succ)
                    }
                    Pending::Candidate { cand, .. } => Some(*cand),
                    Pending::SuccCheck { succ, .. } => Some(*succ),
                    Pending::FingerCheck { cur, .. } => Some(*cur),
                    Pending::Read { target, .. } => Some(*target),
                    // A predecessor that is out of the ring (its peer restarted and is
                    // rejoining) would otherwise be kept for as long as its peer answers,
                    // and refuse every closer node's notify meanwhile.
                    Pending::CheckPred { vnode } => self
                        .vidx(vnode)
                        .and_then(|vi| self.vnodes[vi].pred)
                        .filter(|pred| pred.peer == p.to),
                    _ => None,
                };
                if let Some(n) = node {
                    self.forget_vnode(cx, n);
                }
                self.on_failed(cx, p.to, kind, false);
            }
        }
    }

    pub(super) fn on_timeout(&mut self, cx: &mut Cx<'_, Self>, req: u64) {
        let Some(p) = self.pending.remove(&req) else {
            return;
        };
        self.counters.timeouts += 1;
        self.rtt.timed_out(req, p.to, p.sent, p.timeout);
        self.on_failed(cx, p.to, p.kind, true);
    }

    /// A request got no useful answer; `timed_out` means the whole peer is suspect.
    pub(super) fn on_failed(
        &mut self,
        cx: &mut Cx<'_, Self>,
        to: PeerId,
        kind: Pending,
        timed_out: bool,
    ) {
        match kind {
            Pending::Step { lookup, .. } | Pending::StepState { lookup, .. } => {
                if timed_out {
                    self.evict(cx, to);
                }
                self.on_step_failed(cx, lookup, timed_out.then_some(to));
            }
            Pending::Stabilize { vnode, .. } | Pending::SuccCheck { vnode, .. } => {
                if timed_out {
                    self.evict(cx, to);
                }
                if let Some(vi) = self.vidx(&vnode) {
                    self.vnodes[vi].stabilizing = false;
                    // Skip the dead successor and stabilize through the next live one.
                    self.stabilize_vnode(cx, vnode);
                }
            }
            Pending::Candidate {
                vnode, succ, list, ..
            } => {
                if timed_out {
                    self.evict(cx, to);
                }
                if let Some(vi) = self.vidx(&vnode) {
                    self.vnodes[vi].stabilizing = false;
                    self.vnodes[vi].walk = 0;
                    if self.vnodes[vi].joined && !self.moved_closer(vi, &succ) {
                        self.adopt(cx, vi, succ, &list);
                        self.notify(cx, vnode, succ);
                    }
                    self.stabilize_if_hinted(cx, vi);
                }
            }
            Pending::JoinState { vnode, .. } => {
                if timed_out {
                    self.evict(cx, to);
                }
                self.retry_join(cx, vnode);
            }
            Pending::CheckPred { .. } | Pending::Ping | Pending::Offer => {
                if timed_out {
                    self.evict(cx, to);
                }
            }
            Pending::FingerCheck { vnode, .. } => {
                if timed_out {
                    self.evict(cx, to);
                }
                // The finger is gone from the table now: the next round looks it up.
                if let Some(vi) = self.vidx(&vnode) {
                    self.vnodes[vi].fixing = false;
                }
            }
            Pending::Fingers { .. } | Pending::Handoff { .. } => {}
            Pending::Read { op, target } => {
                if timed_out {
                    self.evict(cx, target.peer);
                }
                self.on_replica_read(cx, op, target, None);
            }
            Pending::Op { op, target } => {
                if timed_out {
                    self.evict(cx, target.peer);
                    if let Some(o) = self.ops.get_mut(&op)
                        && !o.dead.contains(&target.peer)
                    {
                        o.dead.push(target.peer);
                    }
                }
                self.retry_op(cx, op, Error::Timeout);
            }
        }
    }
}
