//! `Node`: the [`Peer`] as the real node runs it — file-backed chunk stores and durable DHT
//! records and shares.
//!
//! `Node` wraps a `Peer` and forwards every input to it unchanged (the two have the same
//! message, timer and event types). After each run of inputs the driver takes the run's
//! writes (`NetCore::take_writes`): the keys the DHT's store changed
//! (`Dht::take_changed`), compared with what the database holds (or will hold once the
//! commits already queued are done), as redb changes. The driver commits them off its loop,
//! grouped with other runs' (see `driver::commit`), and holds the run's write
//! acknowledgments until that commit succeeded: a local put's `Stored` reply, and the
//! acknowledgments this node owes other peers (`PutAck`, `HandoffAck`). When the commit
//! fails, a local put is answered with `dht::Error::NotDurable`, the frames are dropped so
//! their writers time out and retry rather than believe the write kept, and the failed keys
//! are written again with the next run's changes. Nothing is acknowledged that a crash
//! could lose.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use peerlab_dht::{self as dht, Changed, Record, Version};
use peerlab_overlay::{CodecError, Cx, Id, Instant, PeerId, Protocol, codec};
use peerlab_swarm::{ContentId, FileStore, Manifest, StoreError, StoreFactory};
use serde::{Deserialize, Serialize};

use crate::driver::{Committer, NetCore};
use crate::peer::{self, Command, Event, Message, Peer, Timer};
use crate::store::{Change, DHT_RECORDS, SWARM_STATE, Store};
use crate::wire::Channel;

/// Opens each download in its own directory `<root>/<content id>/`, so two files with the
/// same name never collide.
///
/// Resuming a download re-reads and re-hashes every chunk its `.part` file claims, which
/// for a large file takes seconds. The swarm core opens stores synchronously when a
/// download's manifest arrives, so that would stall the event loop; instead the factory
/// keeps each download's manifest beside its chunks ([`MANIFEST_FILE`]), and after a
/// restart the node opens (and so verifies) the resumed downloads' stores on the blocking
/// pool before it resumes them ([`CidDirFactory::preopen`]). When the manifest then
/// arrives, the core gets the store already verified.
#[derive(Clone, Debug)]
pub struct CidDirFactory {
    /// The chunk directory of the data dir.
    pub root: PathBuf,
    /// Stores opened ahead of their manifest's arrival, by content id.
    preopened: Arc<std::sync::Mutex<BTreeMap<ContentId, FileStore>>>,
}

/// The file beside a download's chunks holding its manifest (codec-encoded), so that a
/// restart can verify the partial file before the core resumes the download.
pub(crate) const MANIFEST_FILE: &str = "manifest.cbor";

impl CidDirFactory {
    /// A factory opening downloads under `root`.
    pub fn new(root: PathBuf) -> CidDirFactory {
        CidDirFactory {
            root,
            preopened: Default::default(),
        }
    }

    fn dir(&self, cid: &ContentId) -> PathBuf {
        self.root.join(cid.to_hex())
    }

    /// Opens the store of download `cid` from its kept manifest, verifying what its
    /// partial file claims (blocking: call it off the event loop). The core's next open of
    /// that content takes this store. Returns whether a store was opened.
    pub fn preopen(&self, cid: &ContentId) -> bool {
        let dir = self.dir(cid);
        let Some(manifest) = std::fs::read(dir.join(MANIFEST_FILE))
            .ok()
            .and_then(|b| codec::decode::<Manifest>(&b).ok())
            .filter(|m| m.verify(cid).is_ok())
        else {
            return false;
        };
        match FileStore::open(&dir, &manifest) {
            Ok(store) => {
                if let Ok(mut p) = self.preopened.lock() {
                    p.insert(*cid, store);
                }
                true
            }
            Err(e) => {
                tracing::warn!(cid = %cid.to_hex(), %e, "cannot reopen a download");
                false
            }
        }
    }
}

impl StoreFactory for CidDirFactory {
    type Store = FileStore;
    fn open(&mut self, manifest: &Manifest) -> Result<FileStore, StoreError> {
        let cid = manifest.content_id();
        if let Some(store) = self.preopened.lock().ok().and_then(|mut p| p.remove(&cid)) {
            return Ok(store);
        }
        let dir = self.dir(&cid);
        let store = FileStore::open(&dir, manifest)?;
        // Kept for a restart's resume (see above); without it a resume verifies in the core.
        if !store.is_finished()
            && let Ok(bytes) = codec::encode(manifest)
            && let Err(e) = std::fs::write(dir.join(MANIFEST_FILE), bytes)
        {
            tracing::debug!(%e, "cannot keep a download's manifest");
        }
        Ok(store)
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
    /// The version of each record the database holds once the commits already handed to
    /// the driver are done.
    persisted: BTreeMap<Id, Version>,
    /// Keys whose commit failed: what the database holds for them is unknown, so the next
    /// writes include them whatever `persisted` says.
    suspect: BTreeSet<Id>,
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
            suspect: BTreeSet::new(),
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

    /// Records held durably (or handed to the driver's commits).
    pub fn persisted_records(&self) -> usize {
        self.persisted.len()
    }

    /// Failed commits so far (their keys are written again with the next writes).
    pub fn persist_errors(&self) -> u64 {
        self.persist_errors
    }

    /// Remembers a share or fetch in `db` so that a restart resumes it (a commit: call it
    /// off the event loop).
    pub fn remember_transfer(db: &Store, cid: &ContentId, rec: &TransferRecord) {
        if let Ok(v) = codec::encode(rec)
            && let Err(e) = db.apply(
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

    /// Forgets a share or fetch in `db` (cancelled: not resumed after a restart; a commit:
    /// call it off the event loop).
    pub fn forget_transfer(db: &Store, cid: &ContentId) {
        if let Err(e) = db.apply(
            SWARM_STATE,
            &[Change::Delete {
                key: cid.0.to_vec(),
            }],
        ) {
            tracing::warn!(%e, "cannot forget a transfer");
        }
    }

    /// Records in `db` that the output of fetch `cid` was written (a commit: call it off
    /// the event loop).
    pub fn mark_written(db: &Store, cid: &ContentId) {
        let rec = db
            .get(SWARM_STATE, &cid.0)
            .ok()
            .flatten()
            .and_then(|v| codec::decode::<TransferRecord>(&v).ok());
        if let Some(mut rec) = rec {
            rec.written = true;
            Node::remember_transfer(db, cid, &rec);
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

    /// The changes to the database that bring it to the DHT's store: the keys the DHT
    /// changed since the last call and those whose commit failed, compared with what the
    /// database holds once the queued commits are done. `persisted` then assumes they
    /// will be committed; [`Node::commit_failed`] corrects it.
    fn writes(&mut self) -> Vec<Change> {
        let mut keys = std::mem::take(&mut self.suspect);
        let suspect = keys.clone();
        match self.peer.dht_mut().take_changed() {
            Changed::Keys(k) => keys.extend(k),
            _ => {
                let store = self.peer.dht().store();
                keys.extend(store.keys_in(&Id::ZERO, &Id::ZERO));
                keys.extend(self.persisted.keys().copied());
            }
        }
        let store = self.peer.dht().store();
        let mut changes = Vec::new();
        for k in keys {
            let unknown = suspect.contains(&k);
            match store.get(&k) {
                Some(rec) if unknown || self.persisted.get(&k) != Some(&rec.version) => {
                    match codec::encode(rec) {
                        Ok(value) => {
                            changes.push(Change::Put {
                                key: k.0.to_vec(),
                                value,
                            });
                            self.persisted.insert(k, rec.version);
                        }
                        Err(e) => tracing::warn!(%e, "cannot encode a record"),
                    }
                }
                None if unknown || self.persisted.contains_key(&k) => {
                    changes.push(Change::Delete { key: k.0.to_vec() });
                    self.persisted.remove(&k);
                }
                _ => {}
            }
        }
        changes
    }

    /// A commit of `changes` failed: the database's state of their keys is unknown.
    fn failed(&mut self, changes: &[Change]) {
        self.persist_errors += 1;
        for c in changes {
            let (Change::Put { key, .. } | Change::Delete { key }) = c;
            if let Ok(k) = <[u8; 20]>::try_from(key.as_slice()) {
                self.suspect.insert(Id(k));
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
    fn probe_role(msg: &Message) -> Option<crate::driver::ProbeRole> {
        peer::net::probe_role(msg)
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
    fn needed_peers(&self) -> Vec<PeerId> {
        self.peer.needed_peers()
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
    fn committer(&self) -> Option<Committer> {
        let db = self.db.clone();
        Some(Arc::new(move |changes: &[Change]| {
            db.apply(DHT_RECORDS, changes).map_err(|e| e.to_string())
        }))
    }
    fn take_writes(&mut self) -> Vec<Change> {
        self.writes()
    }
    fn commit_failed(&mut self, changes: &[Change]) {
        self.failed(changes);
    }
    fn is_durable_event(event: &Event) -> bool {
        matches!(
            event,
            Event::Dht(dht::Event::Reply {
                result: Ok(dht::Reply::Stored { .. }),
                ..
            })
        )
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

    /// Runs `f` on the node as the driver would with a commit per run: the input, the
    /// run's writes committed, then what leaves (durable acknowledgments failed when the
    /// commit failed).
    fn turn(
        node: &mut Node,
        now: Instant,
        f: impl FnOnce(&mut Node, &mut Cx<'_, Node>),
    ) -> (Vec<Event>, Vec<Message>, Vec<(Instant, Timer)>) {
        let (mut rng, mut out): (Rng, Out) = (Rng::seed(7), Outbox::new());
        f(node, &mut Context::new(now, &mut rng, &mut out));
        let writes = node.take_writes();
        let commit = node.committer().unwrap();
        let failed = commit(&writes).err();
        if failed.is_some() {
            node.commit_failed(&writes);
        }
        let (mut evs, mut msgs, mut timers) = (Vec::new(), Vec::new(), Vec::new());
        for o in out.drain() {
            match o {
                Output::Event(e) => evs.push(match &failed {
                    Some(why) if Node::is_durable_event(&e) => Node::not_durable(e, why),
                    _ => e,
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
            CidDirFactory::new(dir.path().join("chunks")),
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
