//! `Node`: the [`Peer`] as the real node runs it — file-backed chunk stores and durable DHT
//! records and shares.
//!
//! `Node` wraps a `Peer` and forwards every input to it unchanged (the two have the same
//! message, timer and event types). After each run of inputs the driver asks it to persist
//! (`NetCore::after_input`): it takes the keys the DHT's store changed
//! (`Dht::take_changed`), compares just those with what the database holds, and commits
//! the difference in one redb transaction — every write of the run in one commit. The
//! driver does this before it hands any reply to the API or any frame to the network.
//! When the commit fails, the run's write acknowledgments do not leave: a local put is
//! answered with `dht::Error::NotDurable`, and the acknowledgments this node owes other
//! peers (`PutAck`, `HandoffAck`) are dropped, so their writers time out and retry rather
//! than believe the write kept. Nothing is acknowledged that a crash could lose.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use peerlab_dht::{self as dht, Changed, Record, Version};
use peerlab_overlay::{CodecError, Cx, Id, Instant, PeerId, Protocol, codec};
use peerlab_swarm::{ContentId, FileStore, Manifest, StoreError, StoreFactory};
use serde::{Deserialize, Serialize};

use crate::NodeError;
use crate::driver::NetCore;
use crate::peer::{self, Command, Event, Message, Peer, Timer};
use crate::store::{Change, DHT_RECORDS, SWARM_STATE, Store};
use crate::wire::Channel;

/// Opens each download in its own directory `<root>/<content id>/`, so two files with the
/// same name never collide.
#[derive(Clone, Debug)]
pub struct CidDirFactory {
    /// The chunk directory of the data dir.
    pub root: PathBuf,
}

impl StoreFactory for CidDirFactory {
    type Store = FileStore;
    fn open(&mut self, manifest: &Manifest) -> Result<FileStore, StoreError> {
        FileStore::open(&self.root.join(manifest.content_id().to_hex()), manifest)
    }
}

/// The `tracing` target of membership changes: one `info` line each time this node sees a
/// member join, become suspect, fail, leave or refute a suspicion, so that its log tells
/// when it learned of each (`peerlab testnet compare` reads these lines from every node).
pub const MEMBERS_LOG_TARGET: &str = "peerlab::members";

fn log_member_change(event: &Event) {
    use peerlab_gossip as gossip;
    let Event::Gossip(e) = event else { return };
    let (peer, state) = match e {
        gossip::Event::MemberUp { peer, .. } => (peer, "up"),
        gossip::Event::MemberAlive { peer } => (peer, "alive"),
        gossip::Event::MemberSuspect { peer } => (peer, "suspect"),
        gossip::Event::MemberDown { peer } => (peer, "dead"),
        gossip::Event::MemberLeft { peer } => (peer, "left"),
        _ => return,
    };
    tracing::info!(target: MEMBERS_LOG_TARGET, %peer, %state, "member");
}

/// The peer type the real node runs.
pub(crate) type NodePeer = Peer<CidDirFactory>;

/// A share or fetch remembered across restarts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransferRecord {
    /// `share` (serving a file at `path`) or `fetch` (downloading into the chunk dir).
    pub kind: TransferKind,
    /// For shares: the shared file.
    pub path: Option<String>,
    /// For fetches: where the user asked the file to be written.
    pub output: Option<String>,
    /// The manifest, once known.
    pub manifest: Option<Manifest>,
    /// For fetches: replace an existing file at `output` (`--force`).
    #[serde(default)]
    pub force: bool,
    /// For fetches: the output was written (not written again after a restart).
    #[serde(default)]
    pub written: bool,
}

/// What a transfer is: shared by this node or fetched by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    /// Serving a local file.
    Share,
    /// Downloading.
    Fetch,
}

/// The real node's core: a [`Peer`] plus durable state.
pub struct Node {
    peer: NodePeer,
    db: Arc<Store>,
    persisted: BTreeMap<Id, Version>,
    /// A commit failed: the next persist compares every record, not only changed ones.
    rescan: bool,
    persist_errors: u64,
    /// Woken when a transfer completes, so that its output is written at once rather than
    /// at the output writer's next check ([`crate::api::OUTPUT_CHECK`]).
    finished: Arc<tokio::sync::Notify>,
}

impl Node {
    /// Wraps `peer`, restoring the DHT records stored in `db` into it.
    pub fn new(mut peer: NodePeer, db: Arc<Store>, now: Instant) -> Node {
        let mut persisted = BTreeMap::new();
        match db.entries(DHT_RECORDS) {
            Ok(rows) => {
                for (k, v) in rows {
                    let (Ok(key), Ok(rec)) = (
                        <[u8; 20]>::try_from(k.as_slice()),
                        codec::decode::<Record>(&v),
                    ) else {
                        tracing::warn!("skipping an unreadable stored record");
                        continue;
                    };
                    let version = rec.version;
                    if peer.dht_mut().insert_record(Id(key), rec, now).is_ok() {
                        persisted.insert(Id(key), version);
                    }
                }
            }
            Err(e) => tracing::warn!(%e, "cannot read stored records"),
        }
        Node {
            peer,
            db,
            persisted,
            rescan: false,
            persist_errors: 0,
            finished: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Notified whenever a transfer completes (the output writer waits on it).
    pub(crate) fn finished(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.finished)
    }

    /// The composed peer.
    pub fn peer(&self) -> &NodePeer {
        &self.peer
    }

    /// The database.
    pub fn db(&self) -> &Arc<Store> {
        &self.db
    }

    /// Records held durably.
    pub fn persisted_records(&self) -> usize {
        self.persisted.len()
    }

    /// Failed commits so far (each is retried at the next change).
    pub fn persist_errors(&self) -> u64 {
        self.persist_errors
    }

    /// Remembers a share or fetch so that a restart resumes it.
    pub fn remember_transfer(&self, cid: &ContentId, rec: &TransferRecord) {
        if let Ok(v) = codec::encode(rec)
            && let Err(e) = self.db.apply(
                SWARM_STATE,
                &[Change::Put {
                    key: cid.0.to_vec(),
                    value: v,
                }],
            )
        {
            tracing::warn!(%e, "cannot persist a transfer");
        }
    }

    /// Forgets a share or fetch (cancelled: not resumed after a restart).
    pub fn forget_transfer(&self, cid: &ContentId) {
        if let Err(e) = self.db.apply(
            SWARM_STATE,
            &[Change::Delete {
                key: cid.0.to_vec(),
            }],
        ) {
            tracing::warn!(%e, "cannot forget a transfer");
        }
    }

    /// Records that the output of fetch `cid` was written.
    pub fn mark_written(&self, cid: &ContentId) {
        let rec = self
            .db
            .get(SWARM_STATE, &cid.0)
            .ok()
            .flatten()
            .and_then(|v| codec::decode::<TransferRecord>(&v).ok());
        if let Some(mut rec) = rec {
            rec.written = true;
            self.remember_transfer(cid, &rec);
        }
    }

    /// Shares and fetches remembered in the database.
    pub fn transfers(&self) -> Vec<(ContentId, TransferRecord)> {
        self.db
            .entries(SWARM_STATE)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| {
                let cid = ContentId(<[u8; 32]>::try_from(k.as_slice()).ok()?);
                Some((cid, codec::decode(&v).ok()?))
            })
            .collect()
    }

    /// Commits the records the DHT changed since the last call; on failure the next call
    /// compares everything again (the failed changes are not lost from memory).
    fn persist(&mut self) -> Result<(), NodeError> {
        let changed = self.peer.dht_mut().take_changed();
        let keys: Vec<Id> = match changed {
            Changed::Keys(k) if !self.rescan => k.into_iter().collect(),
            _ => {
                let store = self.peer.dht().store();
                let mut all: BTreeSet<Id> =
                    store.keys_in(&Id::ZERO, &Id::ZERO).into_iter().collect();
                all.extend(self.persisted.keys().copied());
                all.into_iter().collect()
            }
        };
        if keys.is_empty() {
            return Ok(());
        }
        let store = self.peer.dht().store();
        let mut changes = Vec::new();
        let mut done: Vec<(Id, Option<Version>)> = Vec::new();
        for k in keys {
            match store.get(&k) {
                Some(rec) if self.persisted.get(&k) != Some(&rec.version) => {
                    match codec::encode(rec) {
                        Ok(value) => {
                            changes.push(Change::Put {
                                key: k.0.to_vec(),
                                value,
                            });
                            done.push((k, Some(rec.version)));
                        }
                        Err(e) => tracing::warn!(%e, "cannot encode a record"),
                    }
                }
                None if self.persisted.contains_key(&k) => {
                    changes.push(Change::Delete { key: k.0.to_vec() });
                    done.push((k, None));
                }
                _ => {}
            }
        }
        if changes.is_empty() {
            self.rescan = false;
            return Ok(());
        }
        match self.db.apply(DHT_RECORDS, &changes) {
            Ok(()) => {
                self.rescan = false;
                for (k, v) in done {
                    match v {
                        Some(v) => self.persisted.insert(k, v),
                        None => self.persisted.remove(&k),
                    };
                }
                Ok(())
            }
            Err(e) => {
                self.persist_errors += 1;
                self.rescan = true;
                tracing::error!(%e, "cannot persist DHT records; their writes are not acknowledged");
                Err(e)
            }
        }
    }
}

impl Protocol for Node {
    type Message = Message;
    type Timer = Timer;
    type Command = Command<FileStore>;
    type Event = Event;

    fn handle_start(&mut self, cx: &mut Cx<'_, Self>) {
        self.peer.handle_start(cx);
    }

    fn handle_message(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Message) {
        self.peer.handle_message(cx, from, msg);
    }

    fn handle_timer(&mut self, cx: &mut Cx<'_, Self>, timer: Timer) {
        self.peer.handle_timer(cx, timer);
    }

    fn handle_command(&mut self, cx: &mut Cx<'_, Self>, cmd: Command<FileStore>) {
        self.peer.handle_command(cx, cmd);
    }

    fn handle_peer_down(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId) {
        self.peer.handle_peer_down(cx, peer);
    }
}

impl NetCore for Node {
    fn channel(msg: &Message) -> Channel {
        peer::net::channel(msg)
    }
    fn encode(msg: &Message) -> Result<Vec<u8>, CodecError> {
        peer::net::encode(msg)
    }
    fn decode(channel: Channel, frame: &[u8]) -> Result<Message, CodecError> {
        peer::net::decode(channel, frame)
    }
    fn reply_to(event: &Event) -> Option<(u64, bool)> {
        peer::net::reply_to(event)
    }
    fn bootstrap_command(peers: Vec<PeerId>) -> Option<Command<FileStore>> {
        Some(Command::Bootstrap(peers))
    }
    fn address_command(addrs: Vec<String>) -> Option<Command<FileStore>> {
        Some(Command::Addresses(addrs))
    }
    fn addresses_of(event: &Event) -> Vec<(PeerId, String)> {
        peer::net::addresses_of(event)
    }
    fn isolated(&self) -> bool {
        let dht = self.peer.dht();
        let me = dht.peer();
        // A ring of its own: every virtual node is its own only successor.
        let lone_ring = dht.is_joined()
            && dht.vnode_ids().iter().all(|id| {
                dht.vnode(id)
                    .is_none_or(|v| v.succs.iter().all(|s| s.peer == me))
            });
        let gossip = self.peer.gossip();
        let no_member = gossip.up_count() == 0 && !gossip.is_joining();
        !dht.has_left() && (lone_ring || no_member)
    }
    fn leave_command() -> Option<Command<FileStore>> {
        Some(Command::Leave)
    }
    fn observe(&mut self, event: &Event) {
        log_member_change(event);
        if let Event::Swarm(peerlab_swarm::Event::StoreFailed { cid, error }) = event {
            tracing::warn!(cid = %cid.to_hex(), %error, "a transfer's file store failed");
        }
        if matches!(event, Event::Swarm(peerlab_swarm::Event::Completed { .. })) {
            // A permit is kept if the writer is busy: it looks again right after.
            self.finished.notify_one();
        }
    }
    fn after_input(&mut self) -> Result<(), String> {
        self.persist().map_err(|e| e.to_string())
    }
    fn not_durable(event: Event, why: &str) -> Event {
        match event {
            Event::Dht(dht::Event::Reply {
                req,
                result: Ok(dht::Reply::Stored { .. }),
            }) => Event::Dht(dht::Event::Reply {
                req,
                result: Err(dht::Error::NotDurable(why.to_string())),
            }),
            other => other,
        }
    }
    fn is_durable_ack(msg: &Message) -> bool {
        matches!(
            msg,
            Message::Dht(dht::Message::PutAck { .. } | dht::Message::HandoffAck { .. })
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use peerlab_overlay::{Context, Keypair, Outbox, Output, Rng};

    use super::*;

    type Out = Outbox<Message, Timer, Event>;

    /// Runs `f` on the node as the driver would: the input, then persistence, then what
    /// leaves (events mapped, durable acks withheld when the commit failed).
    fn turn(
        node: &mut Node,
        now: Instant,
        f: impl FnOnce(&mut Node, &mut Cx<'_, Node>),
    ) -> (Vec<Event>, Vec<Message>, Vec<(Instant, Timer)>) {
        let (mut rng, mut out): (Rng, Out) = (Rng::seed(7), Outbox::new());
        f(node, &mut Context::new(now, &mut rng, &mut out));
        let failed = node.after_input().err();
        let (mut evs, mut msgs, mut timers) = (Vec::new(), Vec::new(), Vec::new());
        for o in out.drain() {
            match o {
                Output::Event(e) => evs.push(match &failed {
                    Some(why) => Node::not_durable(e, why),
                    None => e,
                }),
                Output::Send { msg, .. } => {
                    if failed.is_none() || !Node::is_durable_ack(&msg) {
                        msgs.push(msg)
                    }
                }
                Output::Timer { at, timer } => timers.push((at, timer)),
                Output::Offence { .. } => {}
            }
        }
        (evs, msgs, timers)
    }

    fn put(req: u64, key: &str) -> Command<FileStore> {
        Command::Dht(dht::Command::Put {
            req,
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ttl: None,
        })
    }

    fn reply(evs: &[Event], req: u64) -> Option<Result<(), dht::Error>> {
        evs.iter().find_map(|e| match e {
            Event::Dht(dht::Event::Reply { req: r, result }) if *r == req => {
                Some(result.as_ref().map(|_| ()).map_err(Clone::clone))
            }
            _ => None,
        })
    }

    /// A put is answered `Stored` only once its commit succeeded: a failed commit turns the
    /// reply into `NotDurable`, the record is not in the database, and the next commit
    /// (which succeeds) writes it.
    #[test]
    fn a_put_whose_commit_failed_is_not_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Store::open(&dir.path().join("store.redb")).unwrap());
        let peer = Peer::new(
            Keypair::synthetic(1),
            peer::Config::lan(),
            CidDirFactory {
                root: dir.path().join("chunks"),
            },
        )
        .unwrap();
        let mut now = Instant(1_000_000_000);
        let mut node = Node::new(peer, db.clone(), now);
        let (_, _, mut timers) = turn(&mut node, now, |n, cx| n.handle_start(cx));
        // A lone node creates its ring; run its timers until it has.
        for _ in 0..1000 {
            if node.peer().dht().is_joined() {
                break;
            }
            timers.sort_by_key(|(at, _)| *at);
            let (at, t) = timers.remove(0);
            now = now.max(at);
            let (_, _, more) = turn(&mut node, now, |n, cx| n.handle_timer(cx, t));
            timers.extend(more);
        }
        assert!(node.peer().dht().is_joined());

        let (evs, _, _) = turn(&mut node, now, |n, cx| n.handle_command(cx, put(1, "a")));
        assert_eq!(reply(&evs, 1), Some(Ok(())));
        assert_eq!(node.persisted_records(), 1);

        db.fail_commits.store(true, Ordering::Relaxed);
        let (evs, _, _) = turn(&mut node, now, |n, cx| n.handle_command(cx, put(2, "b")));
        assert!(
            matches!(reply(&evs, 2), Some(Err(dht::Error::NotDurable(_)))),
            "{evs:?}"
        );
        assert_eq!(node.persist_errors(), 1);
        assert_eq!(
            db.entries(DHT_RECORDS).unwrap().len(),
            1,
            "b is not on disk"
        );

        db.fail_commits.store(false, Ordering::Relaxed);
        let (evs, _, _) = turn(&mut node, now, |n, cx| n.handle_command(cx, put(3, "c")));
        assert_eq!(reply(&evs, 3), Some(Ok(())));
        assert_eq!(
            db.entries(DHT_RECORDS).unwrap().len(),
            3,
            "the commit after a failure writes what the failed one did not"
        );
    }

    #[test]
    fn write_acks_are_the_durable_ones() {
        let v = Version {
            wall_ms: 0,
            logical: 0,
            writer: Keypair::synthetic(1).peer_id(),
        };
        let ack = Message::Dht(dht::Message::PutAck { req: 1, stored: v });
        assert!(Node::is_durable_ack(&ack));
        let get = Message::Dht(dht::Message::Get {
            req: 1,
            vnode: Id::ZERO,
            key: Id::ZERO,
        });
        assert!(!Node::is_durable_ack(&get));
    }
}
