//! A peerlab node: the sans-IO [`Peer`] that composes the cores, and the tokio + libp2p
//! driver that runs one for real, with its data dir, control API and metrics.
//!
//! # Layout
//!
//! - [`peer`]: `Peer`, the composition of the cores (sans-IO; also runs in the simulator).
//! - [`wire`]: one libp2p protocol per core, stream framing, frame limits.
//! - `driver`: the tokio task that owns the libp2p swarm and the `Peer`.
//! - `datadir`, [`config`], `store`: identity, configuration file, durable records;
//!   `storage`: files written for the user (fetch outputs), whole or not at all.
//! - [`api`]: the HTTP + JSON control API; `api_server`: its server and limits;
//!   [`client`]: a blocking client for it.
//! - `metrics`: metric names and the per-node Prometheus recorder.
//!
//! # Starting a node in-process
//!
//! ```no_run
//! # async fn f() -> Result<(), peerlab_node::NodeError> {
//! use peerlab_node::{NodeOptions, config::{Config, Transport}};
//! let dir = std::path::PathBuf::from("/tmp/peerlab-a");
//! let node = peerlab_node::spawn(NodeOptions::new(dir, Config::local(Transport::Quic))).await?;
//! println!("{} listens on {:?}, API on {}", node.peer_id(), node.listen_addrs(), node.api_addr());
//! let status = node.client().status();
//! node.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod api;
mod api_server;
pub mod api_tls;
pub mod client;
pub mod config;
mod datadir;
mod driver;
mod metrics;
mod node;
pub mod peer;
mod storage;
mod store;
pub mod wire;

pub use datadir::{API_ADDR_FILE, API_TOKEN_FILE, CONFIG_FILE, LISTEN_ADDRS_FILE};
pub use libp2p;
pub use node::{MEMBERS_LOG_TARGET, Node};
pub use peer::Peer;

/// Why a node could not start (or a data dir could not be used).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A file in the data dir could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration file is invalid.
    #[error("config {}: {source}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What the TOML parser found wrong.
        source: toml::de::Error,
    },
    /// A configuration value is invalid.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// A multiaddr (listen or bootstrap) does not parse.
    #[error("multiaddr {value:?}: {source}")]
    Multiaddr {
        /// The text given.
        value: String,
        /// Why it does not parse.
        source: libp2p::multiaddr::Error,
    },
    /// The control API's address does not parse.
    #[error("api address {value:?}: {source}")]
    ApiAddr {
        /// The text given.
        value: String,
        /// Why it does not parse.
        source: std::net::AddrParseError,
    },
    /// A core refused its configuration.
    #[error(transparent)]
    Core(#[from] peer::Error),
    /// The identity key file could not be decoded (or a new key encoded).
    #[error("identity {}: {source}", path.display())]
    Identity {
        /// The key file.
        path: PathBuf,
        /// The decoding error.
        source: libp2p::identity::DecodingError,
    },
    /// The identity key file holds a key of another type than Ed25519.
    #[error("identity {}: not an Ed25519 key", path.display())]
    KeyType {
        /// The key file.
        path: PathBuf,
        /// The key type error.
        source: libp2p::identity::OtherVariantError,
    },
    /// The node key is not an Ed25519 key (the cores name peers by Ed25519 keys).
    #[error("the node key must be Ed25519")]
    NotEd25519,
    /// A secret file in the data dir may be read by group or others.
    #[error(
        "{} is accessible by group or others (mode {mode:o}); it is a secret: run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The embedded database failed.
    #[error("store: {0}")]
    Store(#[from] redb::Error),
    /// The Noise handshake configuration of the TCP transport could not be built.
    #[error("tcp transport: {0}")]
    Noise(#[source] libp2p::noise::Error),
    /// The system's resolver configuration (`/etc/resolv.conf`) could not be read.
    #[error("dns resolver: {0}")]
    Dns(#[source] std::io::Error),
    /// The node cannot listen on an address.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// The transport's error.
        source: libp2p::TransportError<std::io::Error>,
    },
    /// The probe datagram socket cannot bind its address (`probe_port` taken?).
    #[error(
        "cannot bind the probe socket on {addr}: {source} (set probe_port, or probe_datagrams = false)"
    )]
    ProbeSocket {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The control API cannot bind its address.
    #[error("cannot bind the API on {addr}: {source}")]
    ApiBind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What [`spawn`] needs.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The data dir (created if missing).
    pub data_dir: PathBuf,
    /// The configuration in force (file merged with flags by the caller).
    pub config: config::Config,
}

impl NodeOptions {
    /// Options for a node at `data_dir` with `config`.
    pub fn new(data_dir: impl Into<PathBuf>, config: config::Config) -> NodeOptions {
        NodeOptions {
            data_dir: data_dir.into(),
            config,
        }
    }
}

/// A running node: its identity, addresses, and the means to stop it.
pub struct NodeHandle {
    peer_id: libp2p::PeerId,
    api_addr: SocketAddr,
    listen_addrs: Vec<Multiaddr>,
    token: String,
    /// The API's TLS certificate (PEM and parsed), when it serves TLS (`allow_remote_api`).
    api_cert: Option<(String, ureq::tls::Certificate<'static>)>,
    data_dir: PathBuf,
    driver: driver::DriverHandle<node::Node>,
    driver_task: JoinHandle<()>,
    api_task: JoinHandle<()>,
    api_stop: Option<oneshot::Sender<()>>,
    /// The read-only metrics endpoint's address, when configured.
    metrics_addr: Option<SocketAddr>,
    /// The read-only metrics server, when configured, and its stop signal.
    metrics_server: Option<(JoinHandle<()>, oneshot::Sender<()>)>,
    /// Writes finished fetches' outputs ([`api::write_outputs`]).
    output_task: JoinHandle<()>,
    /// Resolves once the database is closed, waited for when the node stops: a commit
    /// running on the blocking pool holds it a little longer than the tasks.
    db_closed: Option<oneshot::Receiver<()>>,
}

/// Longest a stopped node waits for its database's last commit to finish and close it.
const DB_CLOSE_WAIT: Duration = Duration::from_secs(10);

impl NodeHandle {
    /// The node's libp2p peer id.
    pub fn peer_id(&self) -> libp2p::PeerId {
        self.peer_id
    }

    /// The node's peer id as the cores see it.
    pub fn overlay_id(&self) -> Option<peerlab_overlay::PeerId> {
        driver::from_libp2p(&self.peer_id)
    }

    /// The control API's address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The API bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The control API's TLS certificate (PEM), when it serves TLS (`allow_remote_api`).
    pub fn api_cert(&self) -> Option<&str> {
        self.api_cert.as_ref().map(|c| c.0.as_str())
    }

    /// The listen multiaddrs, each ending in `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// The data dir.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// A blocking API client for this node (do not call it from an async task).
    pub fn client(&self) -> client::Client {
        let addr = client::reachable(&self.api_addr.to_string());
        match &self.api_cert {
            Some((_, cert)) => client::Client::with_certificate(&addr, &self.token, cert.clone()),
            None => client::Client::new(&addr, &self.token),
        }
    }

    /// The driver handle, for in-process control without HTTP.
    pub fn driver(&self) -> &driver::DriverHandle<node::Node> {
        &self.driver
    }

    /// The read-only metrics endpoint's address (`Config::metrics`), if it serves one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Leaves the overlay gracefully and stops the node.
    pub async fn shutdown(mut self) {
        self.output_task.abort();
        let _ = self.driver.shutdown().await;
        let _ = (&mut self.driver_task).await;
        if let Some(stop) = self.api_stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.api_task).await;
        if let Some((task, stop)) = self.metrics_server.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
        let _ = (&mut self.output_task).await;
        self.db_closed().await;
    }

    /// Waits (at most [`DB_CLOSE_WAIT`]) until nothing holds the database any more, so a
    /// node restarted from the same data dir can open it.
    async fn db_closed(&mut self) {
        if let Some(closed) = self.db_closed.take() {
            let _ = tokio::time::timeout(DB_CLOSE_WAIT, closed).await;
        }
    }

    /// Stops the node abruptly: no leave, no hand-off — but this is **not** a crash. The
    /// driver and API tasks are aborted, and dropping them still flushes the chunk store
    /// and closes the database cleanly, so it cannot show what a crash loses. Crash
    /// recovery is tested with real processes killed by SIGKILL (`cli/tests/crash.rs`).
    pub async fn abort(mut self) {
        self.output_task.abort();
        self.driver_task.abort();
        self.api_task.abort();
        let _ = (&mut self.driver_task).await;
        let _ = (&mut self.api_task).await;
        if let Some((task, _)) = self.metrics_server.take() {
            task.abort();
            let _ = task.await;
        }
        let _ = (&mut self.output_task).await;
        self.db_closed().await;
    }
}

/// How long start-up waits for the listeners to report their addresses.
const LISTEN_WAIT: Duration = Duration::from_secs(10);

/// Starts a node: loads the identity from the data dir, opens the store, starts the libp2p
/// driver and the control API. Must be called inside a tokio runtime.
pub async fn spawn(opts: NodeOptions) -> Result<NodeHandle, NodeError> {
    let cfg = &opts.config;
    let dir = datadir::DataDir::open(&opts.data_dir)?;
    let key = dir.identity()?;
    let token = dir.token()?;

    let api_addr: SocketAddr = cfg.api.parse().map_err(|source| NodeError::ApiAddr {
        value: cfg.api.clone(),
        source,
    })?;
    let metrics_addr: Option<SocketAddr> = cfg
        .metrics
        .as_ref()
        .map(|m| {
            m.parse().map_err(|source| NodeError::ApiAddr {
                value: m.clone(),
                source,
            })
        })
        .transpose()?;
    if !api::is_local(&api_addr) && !cfg.allow_remote_api {
        return Err(NodeError::Invalid(format!(
            "refusing to serve the control API on non-loopback {api_addr} without --allow-remote-api"
        )));
    }
    let parse = |s: &String| {
        s.parse::<Multiaddr>()
            .map_err(|source| NodeError::Multiaddr {
                value: s.clone(),
                source,
            })
    };
    let listen = cfg
        .listen_addrs()
        .iter()
        .map(parse)
        .collect::<Result<Vec<_>, _>>()?;
    let bootstrap = cfg
        .bootstrap
        .iter()
        .map(parse)
        .collect::<Result<Vec<_>, _>>()?;
    cfg.validate().map_err(NodeError::Invalid)?;
    let net = driver::NetConfig {
        listen: listen.clone(),
        bootstrap,
        idle_timeout: cfg.idle_timeout(),
        max_connections: cfg.max_connections,
        max_peers: cfg.max_peers,
        max_connections_per_ip: cfg.max_connections_per_ip,
        prefer_quic: cfg.transport == config::Transport::Quic,
        seed: cfg.seed,
        known_peers_file: Some(dir.known_peers_file()),
        delay: driver::Delay::from_millis(cfg.delay_ms, cfg.delay_jitter_ms),
        probe_datagrams: cfg.probe_datagrams,
        probe_port: cfg.probe_port,
        ..driver::NetConfig::default()
    };

    let node_key = overlay_key(&key).ok_or(NodeError::NotEd25519)?;
    let factory = node::CidDirFactory::new(dir.chunks_dir());
    let reopen = factory.clone();
    let peer_cfg = cfg.peer_config();
    if !peer_cfg.dht.defenses {
        // Only the simulator's attack experiments run the DHT without its rules.
        return Err(NodeError::Invalid(
            "the DHT's defenses are off: a node on a network must not run without them".into(),
        ));
    }
    let peer = Peer::new(node_key, peer_cfg, factory)?;
    let mut db = store::Store::open(&dir.store_file())?;
    let db_closed = db.watch_close();
    let db = Arc::new(db);
    let core = node::Node::new(peer, db.clone(), driver::wall_clock());
    let finished = core.finished();
    let resume = core.transfers();
    // Fetches that asked for an output and have not written it yet: the output writer
    // finishes them after a restart too.
    let fetches: api::Fetches = Default::default();
    if let Ok(mut f) = fetches.lock() {
        for (cid, rec) in &resume {
            if rec.kind == node::TransferKind::Fetch
                && let Some(out) = &rec.output
            {
                f.insert(
                    *cid,
                    api::FetchTarget {
                        output: Some(PathBuf::from(out)),
                        force: rec.force,
                        written: rec.written,
                        error: None,
                    },
                );
            }
        }
    }
    let recorder = Arc::new(metrics::recorder());
    let metrics_handle = recorder.handle();
    let (mut drv, handle) = driver::Driver::new(key, core, &net, recorder)?;
    let peer_id = drv.local_libp2p();
    let bound = drv.wait_listening(listen.len(), LISTEN_WAIT).await;
    let listen_addrs: Vec<Multiaddr> = bound
        .into_iter()
        .map(|a| a.with(libp2p::multiaddr::Protocol::P2p(peer_id)))
        .collect();
    dir.write_listen_addrs(
        &listen_addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>(),
    )?;
    let driver_task = tokio::spawn(drv.run());
    resume_transfers(&handle, &reopen, resume).await;

    let listener = tokio::net::TcpListener::bind(api_addr)
        .await
        .map_err(|source| NodeError::ApiBind {
            addr: api_addr,
            source,
        })?;
    let api_addr = listener.local_addr().map_err(|source| NodeError::ApiBind {
        addr: api_addr,
        source,
    })?;
    // The certificate before the address: `api.addr` tells a waiting client that the API
    // is ready, `api.cert` then how to speak to it.
    let tls = if cfg.allow_remote_api {
        Some(api_tls::start(&dir, api_addr, &cfg.api_names)?)
    } else {
        api_tls::forget(&dir)?;
        None
    };
    dir.write_api_addr(&api_addr)?;
    let api_cert = match &tls {
        Some(t) => Some((
            t.cert_pem.clone(),
            client::parse_cert(&t.cert_pem).map_err(|e| NodeError::Invalid(e.to_string()))?,
        )),
        None => None,
    };
    let metrics_listener = match metrics_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::ApiBind { addr, source })?,
        ),
        None => None,
    };
    let app = api::router(api::ApiState {
        driver: handle.clone(),
        token: Arc::new(token.clone()),
        metrics: metrics_handle.clone(),
        fetches: fetches.clone(),
        accept_crash: cfg.accept_crash,
    });
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr().map_err(|source| NodeError::ApiBind {
            addr: metrics_addr.unwrap_or(api_addr),
            source,
        })?),
        None => None,
    };
    let metrics_server = match metrics_listener {
        Some(listener) => {
            let (stop, stop_rx) = oneshot::channel::<()>();
            let task = tokio::spawn(api_server::serve(
                listener,
                api::metrics_router(metrics_handle),
                api_server::Limits::default(),
                None,
                stop_rx,
            ));
            Some((task, stop))
        }
        None => None,
    };
    let output_task = tokio::spawn(api::write_outputs(handle.clone(), fetches, finished));
    let (api_stop, stop_rx) = oneshot::channel::<()>();
    let api_task = tokio::spawn(api_server::serve(
        listener,
        app,
        api_server::Limits::default(),
        tls.map(|t| t.acceptor),
        stop_rx,
    ));
    tracing::info!(%peer_id, %api_addr, ?metrics_addr, "node started");
    Ok(NodeHandle {
        peer_id,
        api_addr,
        listen_addrs,
        token,
        api_cert,
        data_dir: opts.data_dir,
        driver: handle,
        driver_task,
        api_task,
        api_stop: Some(api_stop),
        metrics_addr,
        metrics_server,
        output_task,
        db_closed: Some(db_closed),
    })
}

/// Logs a resumed transfer the swarm did not take up.
fn log_refusal(cid: &peerlab_swarm::ContentId, answer: Result<peer::Event, driver::DriverError>) {
    match answer {
        Ok(peer::Event::Swarm(peerlab_swarm::Event::Accepted { .. })) => {}
        Ok(peer::Event::Swarm(peerlab_swarm::Event::Refused { error, .. })) => {
            tracing::warn!(cid = %cid.to_hex(), %error, "a transfer was not resumed")
        }
        other => tracing::warn!(cid = %cid.to_hex(), ?other, "a transfer was not resumed"),
    }
}

/// Re-shares the files shared before a restart and resumes unfinished fetches.
async fn resume_transfers(
    handle: &driver::DriverHandle<node::Node>,
    factory: &node::CidDirFactory,
    records: Vec<(peerlab_swarm::ContentId, node::TransferRecord)>,
) {
    for (cid, rec) in records {
        match (rec.kind, rec.path, rec.manifest) {
            (node::TransferKind::Share, Some(path), Some(manifest)) => {
                let m2 = manifest.clone();
                let seeded = tokio::task::spawn_blocking(move || {
                    peerlab_swarm::FileStore::seed(std::path::Path::new(&path), &m2)
                })
                .await;
                match seeded {
                    Ok(Ok(store)) => {
                        let share = |req| peer::Command::Share {
                            req,
                            manifest,
                            store,
                        };
                        log_refusal(&cid, handle.call_once(share, api::API_TIMEOUT).await);
                    }
                    _ => {
                        tracing::warn!(cid = %cid.to_hex(), "a shared file is gone or changed; not re-shared")
                    }
                }
            }
            (node::TransferKind::Fetch, _, _) => {
                // The partial file is verified here, on the blocking pool, rather than in
                // the core when the manifest arrives (see `CidDirFactory`).
                let f = factory.clone();
                let _ = tokio::task::spawn_blocking(move || f.preopen(&cid)).await;
                let fetch = |req| peer::Command::Fetch {
                    req,
                    cid,
                    providers: Vec::new(),
                };
                log_refusal(&cid, handle.call_once(fetch, api::API_TIMEOUT).await);
            }
            _ => {}
        }
    }
}

/// The cores' view of the node key (the same Ed25519 key pair): it signs what only this node
/// may say, such as its gossip member record. `None` unless the key is Ed25519.
fn overlay_key(key: &libp2p::identity::Keypair) -> Option<peerlab_overlay::Keypair> {
    let ed = key.clone().try_into_ed25519().ok()?;
    let secret: [u8; 32] = ed.secret().as_ref().try_into().ok()?;
    let ours = peerlab_overlay::Keypair::from_secret(secret);
    (driver::from_libp2p(&key.public().to_peer_id()) == Some(ours.peer_id())).then_some(ours)
}
