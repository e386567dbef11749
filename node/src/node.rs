//! `Node`: the [`Peer`] as the real node runs it — file-backed chunk stores and durable DHT
//! records and shares.
//!
//! `Node` wraps a `Peer` and forwards every input to it unchanged (the two have the same
//! message, timer and event types). After each input that may have changed the DHT's
//! store it compares the store with what the database holds and commits the difference in
//! one redb transaction. The driver calls this hook before it hands any reply to the API
//! or any frame to the network, so a write is durable before it is acknowledged.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use peerlab_dht::{Record, Version};
use peerlab_overlay::{CodecError, Cx, Id, Instant, PeerId, Protocol, codec};
use peerlab_swarm::{ContentId, FileStore, Manifest, StoreError, StoreFactory};
use serde::{Deserialize, Serialize};

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
pub type NodePeer = Peer<CidDirFactory>;

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
}

/// What a [`TransferRecord`] is.
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
    dirty: bool,
    persist_errors: u64,
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
            dirty: false,
            persist_errors: 0,
        }
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

    fn persist(&mut self) {
        let store = self.peer.dht().store();
        let keys = store.keys_in(&Id::ZERO, &Id::ZERO);
        let mut changes = Vec::new();
        let mut now_held = BTreeMap::new();
        for k in keys {
            let Some(rec) = store.get(&k) else { continue };
            now_held.insert(k, rec.version);
            if self.persisted.get(&k) != Some(&rec.version) {
                match codec::encode(rec) {
                    Ok(value) => changes.push(Change::Put {
                        key: k.0.to_vec(),
                        value,
                    }),
                    Err(e) => tracing::warn!(%e, "cannot encode a record"),
                }
            }
        }
        for k in self.persisted.keys() {
            if !now_held.contains_key(k) {
                changes.push(Change::Delete { key: k.0.to_vec() });
            }
        }
        if changes.is_empty() {
            return;
        }
        match self.db.apply(DHT_RECORDS, &changes) {
            Ok(()) => self.persisted = now_held,
            Err(e) => {
                self.persist_errors += 1;
                tracing::error!(%e, "cannot persist DHT records");
            }
        }
    }
}

/// DHT message kinds that never change the store (routing and reads).
const READ_ONLY_KINDS: [&str; 11] = [
    "find_step",
    "step_reply",
    "get_state",
    "state",
    "notify",
    "get_fingers",
    "fingers",
    "get",
    "get_reply",
    "get_providers",
    "providers",
];

impl Protocol for Node {
    type Message = Message;
    type Timer = Timer;
    type Command = Command<FileStore>;
    type Event = Event;

    fn handle_start(&mut self, cx: &mut Cx<'_, Self>) {
        self.peer.handle_start(cx);
    }

    fn handle_message(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Message) {
        if let Message::Dht(m) = &msg
            && !READ_ONLY_KINDS.contains(&peerlab_overlay::Message::kind(m))
        {
            self.dirty = true;
        }
        self.peer.handle_message(cx, from, msg);
    }

    fn handle_timer(&mut self, cx: &mut Cx<'_, Self>, timer: Timer) {
        if matches!(timer, Timer::Dht(_)) {
            self.dirty = true;
        }
        self.peer.handle_timer(cx, timer);
    }

    fn handle_command(&mut self, cx: &mut Cx<'_, Self>, cmd: Command<FileStore>) {
        if matches!(cmd, Command::Dht(_) | Command::Leave) {
            self.dirty = true;
        }
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
    fn leave_command() -> Option<Command<FileStore>> {
        Some(Command::Leave)
    }
    fn observe(&mut self, event: &Event) {
        log_member_change(event);
    }
    fn after_input(&mut self) {
        if self.dirty {
            self.dirty = false;
            self.persist();
        }
    }
}
