//! The control API: HTTP + JSON on a loopback address, guarded by a bearer token.
//!
//! Every route requires `Authorization: Bearer <token>`, where the token is the content of
//! `api.token` in the data dir (mode 0600); without it the answer is 401. The API refuses
//! to bind a non-loopback address unless `allow_remote_api` is set, and then speaks only
//! TLS ([`crate::api_tls`]). Handlers never touch
//! protocol state themselves: they send a command or an inspection closure to the driver
//! task and await the answer with a deadline.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/status` | identity, addresses, counts |
//! | GET | `/peers` | connected peers |
//! | GET | `/ring` | virtual nodes with predecessor, successors, fingers |
//! | GET | `/lookup/{key}` | owner of `SHA-1(key)` and hops |
//! | PUT / GET / DELETE | `/kv/{key}` | DHT put (`{"value": "…"}`), get, delete |
//! | POST | `/gossip` | publish `{"key", "value"}` |
//! | GET | `/gossip/{key}` | read a gossiped key (every origin) |
//! | GET | `/members` | gossip members and states |
//! | GET | `/search?q=TERMS&ttl=N` | flooding search |
//! | POST | `/share` | share `{"path"}`; answers the content id |
//! | POST | `/fetch` | fetch `{"cid", "output"}` |
//! | GET | `/fetch/{cid}` | fetch progress |
//! | DELETE | `/fetch/{cid}` | cancel a fetch (frees its slot; not resumed) |
//! | DELETE | `/share/{cid}` | stop serving a shared file |
//! | GET | `/transfers` | shares and fetches with their progress |
//! | GET | `/metrics` | Prometheus text format |
//! | POST | `/crash` | end the process as SIGKILL would (only with `accept_crash`) |

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use peerlab_dht as dht;
use peerlab_gossip as gossip;
use peerlab_overlay::{Id, PeerId, flood};
use peerlab_swarm::ContentId;
use serde::{Deserialize, Serialize};

use crate::driver::{DriverError, DriverHandle, NetStatus, PeerInfo};
pub use crate::node::TransferKind;
use crate::node::{Node, TransferRecord};
use crate::peer::{self, Command, Event};
use crate::store::Store;

/// How long a handler waits for the driver before answering 504.
pub const API_TIMEOUT: Duration = Duration::from_secs(30);

/// Most fetches whose output the node tracks; when the table is full, entries whose output
/// was written (or failed) make room.
pub const MAX_FETCHES: usize = 1024;

/// How often the node looks for finished fetches whose output is still to be written,
/// besides right after each completed transfer (a restart's resumed fetches, a write that
/// failed for lack of the file yet).
pub const OUTPUT_CHECK: Duration = Duration::from_secs(1);

/// Where a fetch's file goes and whether it was written there.
#[derive(Clone, Debug)]
pub(crate) struct FetchTarget {
    pub(crate) output: Option<PathBuf>,
    pub(crate) force: bool,
    pub(crate) written: bool,
    pub(crate) error: Option<String>,
}

/// The fetches the node tracks, shared by the API and the output writer.
pub(crate) type Fetches = Arc<Mutex<BTreeMap<ContentId, FetchTarget>>>;

/// Writes the output of every finished fetch that asked for one, whether or not a client
/// is watching, in the blocking pool (see [`crate::storage::publish`]); runs until aborted.
pub(crate) async fn write_outputs(
    driver: DriverHandle<Node>,
    fetches: Fetches,
    finished: Arc<tokio::sync::Notify>,
) {
    let mut tick = tokio::time::interval(OUTPUT_CHECK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = finished.notified() => {}
        }
        let due: Vec<(ContentId, PathBuf, bool)> = match fetches.lock() {
            Ok(f) => f
                .iter()
                .filter(|(_, t)| !t.written && t.error.is_none())
                .filter_map(|(c, t)| Some((*c, t.output.clone()?, t.force)))
                .collect(),
            Err(_) => return,
        };
        for (cid, out, force) in due {
            let src = driver
                .inspect(move |n: &mut Node, _| {
                    let s = n.peer().swarm().store(&cid)?;
                    s.is_finished().then(|| s.final_path().to_path_buf())
                })
                .await;
            let Ok(Some(src)) = src else { continue };
            let out2 = out.clone();
            let r = tokio::task::spawn_blocking(move || {
                if src == out2 {
                    return Ok(());
                }
                crate::storage::publish(&src, &out2, force)
            })
            .await;
            let ok = matches!(r, Ok(Ok(())));
            if let Ok(mut f) = fetches.lock()
                && let Some(t) = f.get_mut(&cid)
            {
                match r {
                    Ok(Ok(())) => t.written = true,
                    Ok(Err(e)) => t.error = Some(e.to_string()),
                    Err(e) => t.error = Some(e.to_string()),
                }
            }
            if ok {
                tracing::info!(cid = %cid.to_hex(), out = %out.display(), "fetch written");
                let _ = on_db(&driver, move |db| Node::mark_written(db, &cid)).await;
            }
        }
    }
}

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) driver: DriverHandle<Node>,
    pub(crate) token: Arc<String>,
    pub(crate) metrics: PrometheusHandle,
    pub(crate) fetches: Fetches,
    /// Whether `POST /crash` ends the process (`Config::accept_crash`).
    pub(crate) accept_crash: bool,
}

/// Runs `f` on the node's database on the blocking pool: the transfer records the API
/// writes are committed there, not on the driver's loop. (The database is asked of the
/// driver each time rather than kept, so that nothing outlives a stopped node's store.)
async fn on_db<R: Send + 'static>(
    driver: &DriverHandle<Node>,
    f: impl FnOnce(&Store) -> R + Send + 'static,
) -> Result<R, ApiError> {
    let db = driver.inspect(|n: &mut Node, _| n.db().clone()).await?;
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))
}

/// An API error: a status code, one line of text and, for a write refused because another
/// writer owns the key, that owner's libp2p peer id; sent as `{"error": "...", "owner": ...}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String, pub Option<String>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.1,
            owner: self.2,
        };
        (self.0, Json(body)).into_response()
    }
}

impl From<DriverError> for ApiError {
    fn from(e: DriverError) -> Self {
        let code = match e {
            DriverError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            DriverError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            DriverError::Refused(_) => StatusCode::BAD_REQUEST,
        };
        ApiError(code, e.to_string(), None)
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into(), None)
}

/// The JSON body of an error.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One line saying what went wrong.
    pub error: String,
    /// For a put or delete of a key another writer owns: the owner's libp2p peer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// libp2p peer id.
    pub peer_id: String,
    /// Listen multiaddrs with `/p2p/<id>`.
    pub listen_addrs: Vec<String>,
    /// Where the node takes SWIM's probe datagrams (`/ip4/…/udp/…`); absent when its
    /// probes travel on connections (`probe_datagrams = false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_addr: Option<String>,
    /// Connected peers.
    pub connected_peers: usize,
    /// Seconds since start.
    pub uptime_secs: f64,
    /// Whether the DHT has joined a ring.
    pub dht_joined: bool,
    /// Virtual nodes on the ring.
    pub vnodes: usize,
    /// DHT records held (tombstones included).
    pub dht_records: usize,
    /// Gossip members known alive (self excluded).
    pub members_alive: usize,
    /// Flooding neighbours.
    pub flood_neighbours: usize,
    /// Names shared in the flooding index.
    pub shared_names: usize,
    /// Swarm transfers (shares and fetches).
    pub transfers: usize,
    /// Peers banned for bad frames.
    pub banned_peers: usize,
    /// Bad frames received.
    pub bad_frames: u64,
}

/// A ring position as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RingNode {
    /// Ring id (hex).
    pub id: String,
    /// libp2p peer id of the peer running it.
    pub peer_id: String,
}

/// One run of equal fingers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FingerRun {
    /// First finger index of the run.
    pub from: usize,
    /// Last finger index of the run.
    pub to: usize,
    /// The node these fingers point to.
    pub node: RingNode,
}

/// One virtual node in `GET /ring`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VnodeInfo {
    /// Ring id (hex).
    pub id: String,
    /// Whether it is part of the ring.
    pub joined: bool,
    /// Predecessor.
    pub predecessor: Option<RingNode>,
    /// Successor list.
    pub successors: Vec<RingNode>,
    /// Fingers, as runs of equal entries.
    pub fingers: Vec<FingerRun>,
}

/// `GET /ring`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RingView {
    /// Whether the DHT joined.
    pub joined: bool,
    /// The virtual nodes.
    pub vnodes: Vec<VnodeInfo>,
}

/// A DHT route.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Route {
    /// The key's ring id (hex).
    pub key_id: String,
    /// libp2p peer id of the owner.
    pub owner: String,
    /// The owning virtual node (hex).
    pub vnode: String,
    /// Hops to the owner.
    pub hops: u32,
}

/// `PUT /kv/{key}` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutBody {
    /// The value (UTF-8).
    pub value: String,
    /// How long the record lives, in seconds; the node's default when absent (capped at
    /// `peerlab_dht::MAX_RECORD_TTL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// Answer to put and delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    /// Route to the owner.
    #[serde(flatten)]
    pub route: Route,
    /// The version written: its wall-clock time in milliseconds since 1970.
    pub version: u64,
}

/// Answer to get.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Value {
    /// Route to the owner.
    #[serde(flatten)]
    pub route: Route,
    /// The value (lossy UTF-8), `None` when absent or deleted.
    pub value: Option<String>,
    /// The version read (wall-clock milliseconds since 1970), if any record was found.
    pub version: Option<u64>,
}

/// `POST /gossip` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishBody {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// Answer to publish.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    /// The version the entry got.
    pub version: u64,
}

/// One origin's entry in `GET /gossip/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GossipEntry {
    /// libp2p peer id of the origin.
    pub origin: String,
    /// Origin's version.
    pub version: u64,
    /// Value (lossy UTF-8), `None` for a tombstone.
    pub value: Option<String>,
    /// When this version became active on this node (its own entries: when published),
    /// milliseconds since the Unix epoch with µs precision; `None` if no longer
    /// remembered. Nodes on one machine share the clock, so a testnet compares them.
    #[serde(default)]
    pub arrived_unix_ms: Option<f64>,
}

/// `GET /gossip/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GossipValue {
    /// The key.
    pub key: String,
    /// The value of the first origin holding a live entry (`None` if none).
    pub value: Option<String>,
    /// Every origin's entry.
    pub entries: Vec<GossipEntry>,
}

/// One gossip member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberInfo {
    /// libp2p peer id.
    pub peer_id: String,
    /// alive / suspect / dead / left.
    pub state: String,
    /// First announced address.
    pub address: Option<String>,
    /// Incarnation.
    pub incarnation: u64,
}

/// `GET /search` query string.
#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    /// Search terms.
    pub q: String,
    /// TTL of the flood (default 7).
    pub ttl: Option<u8>,
}

/// One search hit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchHit {
    /// The responder's libp2p peer id.
    pub peer_id: String,
    /// Matching names (`"<file name> <content id>"` for shared files).
    pub names: Vec<String>,
    /// Overlay hops to the responder.
    pub hops: u16,
}

/// `GET /search` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchResult {
    /// Hits, in arrival order.
    pub hits: Vec<SearchHit>,
}

/// `POST /share` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareBody {
    /// Absolute path of the file.
    pub path: String,
    /// Chunk size in KiB (a power of two, 1..=16384); absent: chosen from the file's size
    /// (`peerlab_swarm::auto_chunk_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_kib: Option<u32>,
}

/// Answer to share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shared {
    /// Content id (hex).
    pub cid: String,
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Chunks.
    pub chunks: u32,
}

/// `POST /fetch` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchBody {
    /// Content id (hex).
    pub cid: String,
    /// Absolute path to write the file to (optional; it always lands in the chunk dir).
    pub output: Option<String>,
    /// libp2p peer ids of peers known to have it (optional; the DHT finds providers).
    #[serde(default)]
    pub providers: Vec<String>,
    /// Replace an existing file at `output` (otherwise such a fetch is refused).
    #[serde(default)]
    pub force: bool,
}

/// One entry of `GET /transfers`: a share or fetch the node runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferInfo {
    /// Content id.
    pub cid: String,
    /// `share` or `fetch`.
    pub kind: TransferKind,
    /// The file's name (once the manifest is known).
    pub name: Option<String>,
    /// Chunks held.
    pub have: u32,
    /// Chunks in the file (0 until the manifest arrived).
    pub total: u32,
    /// Connected swarm peers.
    pub peers: u32,
    /// Payload bytes received.
    pub downloaded: u64,
    /// Payload bytes sent to others.
    pub uploaded: u64,
    /// This node's announcements as a provider that the DHT stored (0: provider look-ups
    /// cannot find this node for the file yet).
    #[serde(default)]
    pub announcements: u32,
    /// For fetches: where the file is written, and whether it was.
    pub output: Option<String>,
    /// Whether the output was written.
    pub written: bool,
    /// Why writing the output failed, if it did.
    pub error: Option<String>,
}

/// `GET /fetch/{cid}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchProgress {
    /// Content id.
    pub cid: String,
    /// Chunks held.
    pub have: u32,
    /// Chunks in the file (0 until the manifest arrived).
    pub total: u32,
    /// Connected swarm peers.
    pub peers: u32,
    /// Peers known to have the file, connected or not (before the manifest arrives: the
    /// providers found so far).
    #[serde(default)]
    pub providers: u32,
    /// Provider look-ups asked of the DHT so far.
    #[serde(default)]
    pub provider_lookups: u32,
    /// This node's announcements as a provider that the DHT stored (a share is found by
    /// provider look-ups once this is at least 1).
    #[serde(default)]
    pub announcements: u32,
    /// Manifest requests sent so far.
    #[serde(default)]
    pub manifest_requests: u32,
    /// Payload bytes received.
    pub downloaded: u64,
    /// Payload bytes sent to others.
    pub uploaded: u64,
    /// Chunks that failed verification.
    pub corrupt_chunks: u32,
    /// Complete, verified and written to the output (if one was asked for).
    pub done: bool,
    /// Where the file is.
    pub path: Option<String>,
    /// Why the fetch failed, if it did.
    pub error: Option<String>,
}

fn libp2p_string(p: &PeerId) -> String {
    crate::driver::to_libp2p(p)
        .map(|p| p.to_string())
        .unwrap_or_else(|| p.to_string())
}

fn ring_node(n: &dht::NodeRef) -> RingNode {
    RingNode {
        id: n.id.to_hex(),
        peer_id: libp2p_string(&n.peer),
    }
}

fn route(key: Id, r: &dht::Route) -> Route {
    Route {
        key_id: key.to_hex(),
        owner: libp2p_string(&r.owner),
        vnode: r.vnode.to_hex(),
        hops: r.hops,
    }
}

fn lossy(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

async fn dht_call(
    st: &ApiState,
    make: impl FnOnce(u64) -> dht::Command,
) -> Result<dht::Reply, ApiError> {
    match st
        .driver
        .call_once(|req| Command::Dht(make(req)), API_TIMEOUT)
        .await?
    {
        Event::Dht(dht::Event::Reply { result, .. }) => result.map_err(|e| {
            let code = match e {
                dht::Error::NotJoined | dht::Error::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
                dht::Error::LookupFailed { .. } => StatusCode::BAD_GATEWAY,
                dht::Error::NotDurable(_) => StatusCode::INTERNAL_SERVER_ERROR,
                dht::Error::NotOwner { owner } => {
                    let owner = libp2p_string(&owner);
                    let msg = format!("key belongs to {owner}");
                    return ApiError(StatusCode::CONFLICT, msg, Some(owner));
                }
                _ => StatusCode::BAD_REQUEST,
            };
            ApiError(code, e.to_string(), None)
        }),
        other => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected answer {other:?}"),
            None,
        )),
    }
}

async fn status(State(st): State<ApiState>) -> Result<Json<Status>, ApiError> {
    let s = st
        .driver
        .inspect(|n: &mut Node, net: &NetStatus| {
            let p = n.peer();
            Status {
                peer_id: net.peer_id.clone(),
                listen_addrs: net.listen_addrs.clone(),
                probe_addr: net.probe_addr.clone(),
                connected_peers: net.peers.len(),
                uptime_secs: net.uptime_secs,
                dht_joined: p.dht().is_joined(),
                vnodes: p.dht().vnode_ids().len(),
                dht_records: p.dht().stored_keys(),
                members_alive: p
                    .gossip()
                    .members()
                    .filter(|(id, m)| **id != p.id() && m.state == gossip::MemberState::Alive)
                    .count(),
                flood_neighbours: p.flood().neighbours().len(),
                shared_names: p.flood().index().len(),
                transfers: p.swarm().transfers().len(),
                banned_peers: net.banned,
                bad_frames: net.bad_frames,
            }
        })
        .await?;
    Ok(Json(s))
}

async fn peers(State(st): State<ApiState>) -> Result<Json<Vec<PeerInfo>>, ApiError> {
    Ok(Json(st.driver.inspect(|_, n| n.peers.clone()).await?))
}

async fn ring(State(st): State<ApiState>) -> Result<Json<RingView>, ApiError> {
    let v = st
        .driver
        .inspect(|n: &mut Node, _| {
            let d = n.peer().dht();
            let vnodes = d
                .vnode_ids()
                .iter()
                .filter_map(|id| d.vnode(id))
                .map(|v| {
                    let mut fingers: Vec<FingerRun> = Vec::new();
                    for (i, f) in v.fingers.iter().enumerate() {
                        let Some(f) = f else { continue };
                        let node = ring_node(f);
                        match fingers.last_mut() {
                            Some(run) if run.node == node && run.to + 1 == i => run.to = i,
                            _ => fingers.push(FingerRun {
                                from: i,
                                to: i,
                                node,
                            }),
                        }
                    }
                    VnodeInfo {
                        id: v.id.to_hex(),
                        joined: v.joined,
                        predecessor: v.pred.as_ref().map(ring_node),
                        successors: v.succs.iter().map(ring_node).collect(),
                        fingers,
                    }
                })
                .collect();
            RingView {
                joined: d.is_joined(),
                vnodes,
            }
        })
        .await?;
    Ok(Json(v))
}

async fn lookup(
    State(st): State<ApiState>,
    Path(key): Path<String>,
) -> Result<Json<Route>, ApiError> {
    let id = peer::key_id(key.as_bytes());
    match dht_call(&st, |req| dht::Command::Lookup { req, key: id }).await? {
        dht::Reply::Lookup(r) => Ok(Json(route(id, &r))),
        other => Err(unexpected(other)),
    }
}

async fn kv_put(
    State(st): State<ApiState>,
    Path(key): Path<String>,
    Json(body): Json<PutBody>,
) -> Result<Json<Stored>, ApiError> {
    let id = peer::key_id(key.as_bytes());
    let k = key.into_bytes();
    let v = body.value.into_bytes();
    let ttl = body.ttl_secs.map(Duration::from_secs);
    match dht_call(&st, |req| dht::Command::Put {
        req,
        key: k,
        value: v,
        ttl,
    })
    .await?
    {
        dht::Reply::Stored { route: r, version } => Ok(Json(Stored {
            route: route(id, &r),
            version: version.wall_ms,
        })),
        other => Err(unexpected(other)),
    }
}

async fn kv_get(
    State(st): State<ApiState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = peer::key_id(key.as_bytes());
    let k = key.into_bytes();
    match dht_call(&st, |req| dht::Command::Get { req, key: k }).await? {
        dht::Reply::Value {
            route: r,
            value,
            version,
        } => Ok(Json(Value {
            route: route(id, &r),
            value: value.as_deref().map(lossy),
            version: version.map(|v| v.wall_ms),
        })),
        other => Err(unexpected(other)),
    }
}

async fn kv_delete(
    State(st): State<ApiState>,
    Path(key): Path<String>,
) -> Result<Json<Stored>, ApiError> {
    let id = peer::key_id(key.as_bytes());
    let k = key.into_bytes();
    match dht_call(&st, |req| dht::Command::Delete { req, key: k }).await? {
        dht::Reply::Stored { route: r, version } => Ok(Json(Stored {
            route: route(id, &r),
            version: version.wall_ms,
        })),
        other => Err(unexpected(other)),
    }
}

async fn publish(
    State(st): State<ApiState>,
    Json(body): Json<PublishBody>,
) -> Result<Json<Published>, ApiError> {
    let ev = st
        .driver
        .call_once(
            |req| {
                Command::Gossip(gossip::Command::Publish {
                    req,
                    key: body.key,
                    value: body.value.into_bytes(),
                })
            },
            API_TIMEOUT,
        )
        .await?;
    match ev {
        Event::Gossip(gossip::Event::Published { version, .. }) => Ok(Json(Published { version })),
        Event::Gossip(gossip::Event::CommandFailed { error, .. }) => Err(bad(error.to_string())),
        other => Err(unexpected(other)),
    }
}

async fn gossip_read(
    State(st): State<ApiState>,
    Path(key): Path<String>,
) -> Result<Json<GossipValue>, ApiError> {
    let v = st
        .driver
        .inspect(move |n: &mut Node, _| {
            let g = n.peer().gossip();
            let origins: Vec<PeerId> = g.versions().map(|(p, _)| *p).collect();
            let entries: Vec<GossipEntry> = origins
                .iter()
                .filter_map(|o| {
                    g.entry(o, &key).map(|e| GossipEntry {
                        origin: libp2p_string(o),
                        version: e.version,
                        value: e.value.as_deref().map(lossy),
                        arrived_unix_ms: n
                            .peer()
                            .gossip_arrival(o, &key)
                            .map(|t| t.as_micros() as f64 / 1000.0),
                    })
                })
                .collect();
            GossipValue {
                value: entries.iter().find_map(|e| e.value.clone()),
                key,
                entries,
            }
        })
        .await?;
    Ok(Json(v))
}

/// A member's address as users dial it: with `/p2p/<id>` (records leave it out).
fn with_peer_id(addr: &str, peer: &PeerId) -> String {
    if addr.contains("/p2p/") {
        addr.to_string()
    } else {
        format!("{addr}/p2p/{}", libp2p_string(peer))
    }
}

async fn members(State(st): State<ApiState>) -> Result<Json<Vec<MemberInfo>>, ApiError> {
    let v = st
        .driver
        .inspect(|n: &mut Node, _| {
            n.peer()
                .gossip()
                .members()
                .map(|(p, m)| MemberInfo {
                    peer_id: libp2p_string(p),
                    state: format!("{:?}", m.state).to_lowercase(),
                    address: m.addrs.first().map(|a| with_peer_id(a, p)),
                    incarnation: m.incarnation,
                })
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(v))
}

async fn search(
    State(st): State<ApiState>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<SearchResult>, ApiError> {
    let terms = q.q;
    let ttl = q.ttl;
    let mut rx = st
        .driver
        .call(|req| {
            Command::Flood(flood::Command::Search {
                req,
                terms,
                strategy: flood::Strategy::Flood,
                ttl,
                want_hits: 1,
            })
        })
        .await?;
    let mut hits = Vec::new();
    let deadline = tokio::time::Instant::now() + peer::SEARCH_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Event::Flood(flood::Event::SearchHit {
                responder,
                names,
                hops,
                ..
            }))) => hits.push(SearchHit {
                peer_id: libp2p_string(&responder),
                names,
                hops,
            }),
            Ok(Some(Event::Flood(flood::Event::SearchRejected { error, .. }))) => {
                return Err(bad(error.to_string()));
            }
            Ok(Some(_)) | Ok(None) | Err(_) => break,
        }
    }
    Ok(Json(SearchResult { hits }))
}

async fn share(
    State(st): State<ApiState>,
    Json(body): Json<ShareBody>,
) -> Result<Json<Shared>, ApiError> {
    let path = PathBuf::from(&body.path);
    if !path.is_absolute() {
        return Err(bad(format!(
            "share needs an absolute path, got {:?}",
            body.path
        )));
    }
    let p2 = path.clone();
    let chunk_kib = body.chunk_kib;
    let (manifest, store) = tokio::task::spawn_blocking(move || {
        // Unless asked for, the chunk size follows the file's length; `share` checks a
        // requested one (and refuses a file whose length changes while it is read).
        let chunk_size = match chunk_kib {
            Some(k) => k.saturating_mul(1024),
            None => peerlab_swarm::auto_chunk_size(std::fs::metadata(&p2)?.len()),
        };
        peerlab_swarm::FileStore::share(&p2, chunk_size)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?
    .map_err(|e| bad(format!("cannot share {}: {e}", path.display())))?;
    let cid = manifest.content_id();
    let out = Shared {
        cid: cid.to_hex(),
        name: manifest.name().to_string(),
        size: manifest.size(),
        chunks: manifest.chunk_count(),
    };
    let rec = TransferRecord {
        kind: TransferKind::Share,
        path: Some(body.path.clone()),
        output: None,
        manifest: Some(manifest.clone()),
        force: false,
        written: false,
    };
    let reply = st
        .driver
        .call_once(
            |req| Command::Share {
                req,
                manifest,
                store,
            },
            API_TIMEOUT,
        )
        .await?;
    let running = matches!(
        reply,
        Event::Swarm(peerlab_swarm::Event::Refused {
            error: peerlab_swarm::CommandError::Duplicate,
            ..
        })
    );
    if !running {
        swarm_answer(reply, "share")?;
    } else if st.fetches.lock().is_ok_and(|f| f.contains_key(&cid)) {
        return Err(bad(format!(
            "a fetch of {} is running; `peerlab cancel` it to share this file instead",
            cid.to_hex()
        )));
    } else {
        // Shared already (again after a restart, or twice): the same content, the same
        // answer; the first share's record stands.
        return Ok(Json(out));
    }
    on_db(&st.driver, move |db| {
        Node::remember_transfer(db, &cid, &rec)
    })
    .await?;
    Ok(Json(out))
}

/// The swarm's answer to a share or fetch: accepted, or refused with its reason.
fn swarm_answer(reply: Event, what: &str) -> Result<(), ApiError> {
    match reply {
        Event::Swarm(peerlab_swarm::Event::Accepted { .. }) => Ok(()),
        Event::Swarm(peerlab_swarm::Event::Refused { error, .. }) => {
            Err(bad(format!("the swarm refused the {what}: {error}")))
        }
        other => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected answer to a {what}: {other:?}"),
            None,
        )),
    }
}

/// `GET /transfers`: every share and fetch the node runs, with its progress.
async fn transfers(State(st): State<ApiState>) -> Result<Json<Vec<TransferInfo>>, ApiError> {
    let targets = st.fetches.lock().map(|f| f.clone()).unwrap_or_default();
    let list = st
        .driver
        .inspect(move |n: &mut Node, _| {
            let sw = n.peer().swarm();
            n.transfers()
                .into_iter()
                .filter_map(|(cid, rec)| {
                    let stats = sw.stats(&cid)?;
                    let t = targets.get(&cid);
                    Some(TransferInfo {
                        cid: cid.to_hex(),
                        kind: rec.kind,
                        name: rec.manifest.as_ref().map(|m| m.name().to_string()),
                        have: stats.have,
                        total: stats.chunks,
                        peers: stats.peers,
                        downloaded: stats.downloaded,
                        uploaded: stats.uploaded,
                        announcements: stats.announcements,
                        output: rec.output.clone(),
                        written: t.map_or(rec.written, |t| t.written),
                        error: t.and_then(|t| t.error.clone()),
                    })
                })
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(list))
}

/// `DELETE /fetch/{cid}` and `DELETE /share/{cid}`: stops the transfer, frees its slot and
/// forgets it (not resumed after a restart). A fetch's partial file stays in the chunk dir.
async fn cancel(
    State(st): State<ApiState>,
    Path(cid_hex): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cid = parse_cid(&cid_hex)?;
    let reply = st
        .driver
        .call_once(|req| Command::Cancel { req, cid }, API_TIMEOUT)
        .await?;
    if let Event::Swarm(peerlab_swarm::Event::Refused { error, .. }) = &reply {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no transfer of {cid_hex}: {error}"),
            None,
        ));
    }
    swarm_answer(reply, "cancel")?;
    if let Ok(mut f) = st.fetches.lock() {
        f.remove(&cid);
    }
    on_db(&st.driver, move |db| Node::forget_transfer(db, &cid)).await?;
    Ok(Json(serde_json::json!({ "cid": cid_hex, "stopped": true })))
}

fn parse_cid(s: &str) -> Result<ContentId, ApiError> {
    ContentId::from_hex(s).ok_or_else(|| bad(format!("{s:?} is not a content id (64 hex digits)")))
}

async fn fetch(
    State(st): State<ApiState>,
    Json(body): Json<FetchBody>,
) -> Result<Json<FetchProgress>, ApiError> {
    let cid = parse_cid(&body.cid)?;
    let output = body.output.map(PathBuf::from);
    if let Some(o) = &output
        && !o.is_absolute()
    {
        return Err(bad("fetch output must be an absolute path"));
    }
    if let Some(o) = &output {
        crate::storage::check_output(o, body.force)
            .map_err(|e| ApiError(StatusCode::CONFLICT, e.to_string(), None))?;
    }
    let mut providers = Vec::new();
    for p in &body.providers {
        let pid: libp2p::PeerId = p.parse().map_err(|e| bad(format!("provider {p:?}: {e}")))?;
        providers.push(
            crate::driver::from_libp2p(&pid)
                .ok_or_else(|| bad(format!("provider {p:?} is not an Ed25519 peer")))?,
        );
    }
    {
        let mut f = st.fetches.lock().map_err(|_| bad("poisoned"))?;
        if f.len() >= MAX_FETCHES && !f.contains_key(&cid) {
            // Finished entries make room.
            f.retain(|_, t| !t.written && t.error.is_none());
        }
        if f.len() >= MAX_FETCHES && !f.contains_key(&cid) {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many fetches".into(),
                None,
            ));
        }
        f.insert(
            cid,
            FetchTarget {
                output: output.clone(),
                force: body.force,
                written: false,
                error: None,
            },
        );
    }
    let rec = TransferRecord {
        kind: TransferKind::Fetch,
        path: None,
        output: output.map(|o| o.display().to_string()),
        manifest: None,
        force: body.force,
        written: false,
    };
    let already = st
        .driver
        .inspect(move |n: &mut Node, _| n.peer().swarm().stats(&cid).is_some())
        .await?;
    if !already {
        let reply = st
            .driver
            .call_once(
                |req| Command::Fetch {
                    req,
                    cid,
                    providers,
                },
                API_TIMEOUT,
            )
            .await?;
        swarm_answer(reply, "fetch")?;
        on_db(&st.driver, move |db| {
            Node::remember_transfer(db, &cid, &rec)
        })
        .await?;
    }
    progress(State(st), Path(body.cid)).await
}

async fn progress(
    State(st): State<ApiState>,
    Path(cid_hex): Path<String>,
) -> Result<Json<FetchProgress>, ApiError> {
    let cid = parse_cid(&cid_hex)?;
    let snap = st
        .driver
        .inspect(move |n: &mut Node, _| {
            let sw = n.peer().swarm();
            let stats = sw.stats(&cid)?;
            let path = sw.store(&cid).map(|s| s.final_path().to_path_buf());
            let finished = sw.store(&cid).is_some_and(|s| s.is_finished());
            Some((stats, path, finished))
        })
        .await?;
    let Some((stats, path, finished)) = snap else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no transfer of {cid_hex} (refused or never started)"),
            None,
        ));
    };
    // The output is written by `write_outputs`, watched or not; this only reports.
    let target = st.fetches.lock().ok().and_then(|f| f.get(&cid).cloned());
    let error = target.as_ref().and_then(|t| t.error.clone());
    let (done, shown) = match target
        .as_ref()
        .and_then(|t| t.output.clone().map(|o| (t, o)))
    {
        Some((t, out)) => (finished && t.written, Some(out)),
        None => (finished, path),
    };
    Ok(Json(FetchProgress {
        cid: cid_hex,
        have: stats.have,
        total: stats.chunks,
        peers: stats.peers,
        providers: stats.providers,
        provider_lookups: stats.provider_lookups,
        announcements: stats.announcements,
        manifest_requests: stats.manifest_requests,
        downloaded: stats.downloaded,
        uploaded: stats.uploaded,
        corrupt_chunks: stats.corrupt_chunks,
        done: done && error.is_none(),
        path: shown.map(|p| p.display().to_string()),
        error,
    }))
}

async fn metrics_text(State(st): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
}

/// The read-only metrics endpoint: `GET /metrics` alone, without a token (see
/// `Config::metrics`).
pub(crate) fn metrics_router(metrics: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let text = metrics.render();
            async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
        }),
    )
}

/// Compares two byte strings in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), st.token.as_bytes()));
    if !ok {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (see api.token in the data dir)".into(),
            None,
        )
        .into_response();
    }
    next.run(req).await
}

/// Exit status of a process ended by `POST /crash`: a shell's for death by SIGKILL.
pub const CRASH_EXIT_CODE: i32 = 137;

/// `POST /crash`: ends the process at once, as SIGKILL would — no leave, no hand-off, no
/// closing of connections or the database, and no answer: the caller sees its connection
/// close — for churn experiments against nodes on other hosts, which a controller cannot
/// signal (their orchestrator restarts them). Refused (403) unless the node runs with
/// `accept_crash`.
async fn crash(State(st): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    if !st.accept_crash {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "this node does not accept /crash (start it with --accept-crash)".into(),
            None,
        ));
    }
    tracing::warn!("POST /crash: ending the process as a crash would");
    std::process::exit(CRASH_EXIT_CODE)
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/peers", get(peers))
        .route("/ring", get(ring))
        .route("/lookup/{key}", get(lookup))
        .route("/kv/{key}", get(kv_get).put(kv_put).delete(kv_delete))
        .route("/gossip", post(publish))
        .route("/gossip/{key}", get(gossip_read))
        .route("/members", get(members))
        .route("/search", get(search))
        .route("/share", post(share))
        .route("/fetch", post(fetch))
        .route("/fetch/{cid}", get(progress).delete(cancel))
        .route("/share/{cid}", axum::routing::delete(cancel))
        .route("/transfers", get(transfers))
        .route("/metrics", get(metrics_text))
        .route("/crash", post(crash))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// Whether `addr` may be bound without `allow_remote_api`.
pub fn is_local(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// A core answered a request with a reply of the wrong kind: a bug, reported as a 500.
fn unexpected(reply: impl std::fmt::Debug) -> ApiError {
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("unexpected {reply:?}"),
        None,
    )
}
