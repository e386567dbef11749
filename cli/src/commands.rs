//! `peerlab node` and the client commands that talk to a running node's control API.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use peerlab_node::api_tls::API_CERT_FILE;
use peerlab_node::client::{Client, ClientError, urlencode};
use peerlab_node::config::{self, Config, Transport};
use serde_json::{Value, json};

/// Where to find the node a client command talks to.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
    /// The node's data dir (its API address and token are read from there).
    #[arg(long, env = "PEERLAB_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// API address `host:port` (overrides the data dir's `api.addr`).
    #[arg(long)]
    api: Option<String>,
    /// API bearer token (overrides the data dir's `api.token`).
    #[arg(long, env = "PEERLAB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The node's API certificate (PEM, its `api.cert`, as `peerlab credentials` prints
    /// it): speak TLS to --api and trust only this certificate. Needed for a node started
    /// with --allow-remote-api [default: the data dir's `api.cert`, when there is one].
    #[arg(long, value_name = "FILE")]
    api_cert: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl ClientArgs {
    fn client(&self) -> anyhow::Result<Client> {
        let dir = self
            .data_dir
            .clone()
            .unwrap_or_else(config::default_data_dir);
        let read = |name: &str, flag: &str| {
            std::fs::read_to_string(dir.join(name))
                .map(|s| s.trim().to_string())
                .with_context(|| {
                    format!(
                        "no running node found in {} (start one with `peerlab node`, or pass {flag})",
                        dir.display()
                    )
                })
        };
        let api = match &self.api {
            Some(a) => a.clone(),
            None => read(peerlab_node::API_ADDR_FILE, "--api")?,
        };
        let api = peerlab_node::client::reachable(&api);
        let token = match &self.token {
            Some(t) => t.clone(),
            None => read(peerlab_node::API_TOKEN_FILE, "--token")?,
        };
        let cert = match &self.api_cert {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the API certificate {}", path.display()))?,
            ),
            None if self.api.is_none() && dir.join(API_CERT_FILE).exists() => {
                Some(read(API_CERT_FILE, "--api-cert")?)
            }
            None => None,
        };
        Ok(match cert {
            Some(pem) => Client::with_cert(&api, &token, &pem)?,
            None => Client::new(&api, &token),
        })
    }
}

/// Transport choice on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum TransportArg {
    /// QUIC, with TCP beside it.
    Quic,
    /// TCP + Noise + Yamux only.
    Tcp,
}

/// `peerlab node` flags; each overrides the config file.
#[derive(Debug, Clone, Args)]
pub(crate) struct NodeArgs {
    /// Data dir: identity, config, records, chunks [default: the user data dir]/peerlab.
    #[arg(long, env = "PEERLAB_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Config file [default: <data-dir>/config.toml].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Join through this peer (multiaddr with /p2p/<id>); repeatable.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// Listen on this multiaddr; repeatable [default: 0.0.0.0, OS-assigned ports].
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Control API address [default: 127.0.0.1:0].
    #[arg(long, value_name = "HOST:PORT")]
    api: Option<String>,
    /// Allow the control API on a non-loopback address. It then speaks only TLS with a
    /// certificate the node makes (`api.cert`); clients pin it (`peerlab credentials`).
    #[arg(long)]
    allow_remote_api: bool,
    /// A name (DNS name or IP) other hosts reach the API by, added to its certificate
    /// (repeatable; e.g. a pod's `peerlab-3.peerlab`).
    #[arg(long = "api-name", value_name = "NAME")]
    api_names: Vec<String>,
    /// Let the API's POST /crash end this process at once, as SIGKILL would: what `testnet
    /// churn` uses against nodes on other hosts, whose orchestrator restarts them.
    #[arg(long)]
    accept_crash: bool,
    /// Also serve the metrics, read-only and without a token, at GET /metrics on this
    /// address (for a Prometheus scraper; e.g. 0.0.0.0:9100 in a container).
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<String>,
    /// Virtual nodes on the Chord ring.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    vnodes: Option<u16>,
    /// Transport [default: quic].
    #[arg(long, value_enum)]
    transport: Option<TransportArg>,
    /// DHT maintenance period in ms of a ring at rest (stabilize, fix fingers; twice it
    /// for check-predecessor and repair). Longer than the profile's period, it makes
    /// maintenance adaptive: the profile's period while the ring changes, this one once it
    /// is quiet [default: the profile's, 1000 on a LAN].
    #[arg(long, value_name = "MS")]
    maintenance_ms: Option<u64>,
    /// Gossip round period in ms [default: 200].
    #[arg(long, value_name = "MS")]
    gossip_interval_ms: Option<u64>,
    /// Gossip fan-out: peers contacted per round [default: 3].
    #[arg(long, value_name = "F")]
    gossip_fanout: Option<usize>,
    /// Gossip partial view: draw gossip partners from a random sample of K members
    /// instead of from all (0 = all) [default: 0].
    #[arg(long, value_name = "K")]
    gossip_view: Option<usize>,
    /// Delay every frame sent to a peer by this many ms (latency injected by the node
    /// itself, for emulated hosts on one machine) [default: 0].
    #[arg(long, value_name = "MS")]
    delay_ms: Option<u64>,
    /// Spread the delay uniformly over delay-ms ± this many ms [default: 0].
    #[arg(long, value_name = "MS")]
    delay_jitter_ms: Option<u64>,
    /// UDP port of the probe socket (SWIM's probes travel as datagrams beside QUIC), on
    /// the first listen address's IP; advertised to peers, so it need not be known in
    /// advance; fix it where a firewall or published container ports must name it
    /// [default: 0, a port the OS picks].
    #[arg(long, value_name = "PORT")]
    probe_port: Option<u16>,
    /// Carry SWIM's probes on the QUIC/TCP connections instead of as datagrams (peers
    /// probe this node that way too).
    #[arg(long)]
    no_probe_datagrams: bool,
    /// Worker threads of the node's runtime; 1 runs everything on one thread (local
    /// testnets of hundreds of processes on a few cores: no work stealing, fewer context
    /// switches) [default: one per core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// Print the start-up summary as JSON.
    #[arg(long)]
    json: bool,
}

/// The node-facing commands.
#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// Run a node until SIGINT/SIGTERM (then leave the ring gracefully).
    #[command(
        after_help = "Example:\n  peerlab node --data-dir /tmp/a --listen /ip4/127.0.0.1/udp/4001/quic-v1\n  \
        peerlab node --data-dir /tmp/b --bootstrap /ip4/127.0.0.1/udp/4001/quic-v1/p2p/12D3KooW..."
    )]
    Node(NodeArgs),
    /// Show the node's identity, addresses and counts.
    #[command(after_help = "Example:\n  peerlab status --data-dir /tmp/a")]
    Status(ClientArgs),
    /// Print what a controller on another host needs to reach this node's API, as one JSON
    /// line: peer id, API address, token and TLS certificate. The token is a secret: move
    /// the line only over an encrypted channel (kubectl exec, ssh) into a file only you
    /// read, then `peerlab testnet attach --credentials FILE`.
    #[command(
        after_help = "Example:\n  peerlab credentials --data-dir /tmp/a --address node-3.example:7000\n  \
        kubectl exec peerlab-3 -- peerlab credentials --address peerlab-3.peerlab:7000 >> creds.jsonl"
    )]
    Credentials {
        /// The address other hosts reach the API at, `host:port` (a name the certificate
        /// holds: see --api-name) [default: the address the API bound].
        #[arg(long, value_name = "HOST:PORT")]
        address: Option<String>,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// List connected peers.
    #[command(after_help = "Example:\n  peerlab peers --data-dir /tmp/a --json")]
    Peers(ClientArgs),
    /// Show the node's Chord ring view: virtual nodes, successors, fingers.
    #[command(after_help = "Example:\n  peerlab ring --data-dir /tmp/a")]
    Ring(ClientArgs),
    /// Find the peer that owns KEY on the ring.
    #[command(after_help = "Example:\n  peerlab lookup alice --data-dir /tmp/a")]
    Lookup {
        /// The key.
        key: String,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Store VALUE under KEY in the DHT.
    #[command(after_help = "Example:\n  peerlab put alice 42 --data-dir /tmp/a")]
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Read KEY from the DHT.
    #[command(after_help = "Example:\n  peerlab get alice --data-dir /tmp/b")]
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Delete KEY from the DHT.
    #[command(after_help = "Example:\n  peerlab delete alice --data-dir /tmp/a")]
    Delete {
        /// The key.
        key: String,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Publish KEY = VALUE through gossip to every member.
    #[command(after_help = "Example:\n  peerlab publish motd hello --data-dir /tmp/a")]
    Publish {
        /// The key.
        key: String,
        /// The value.
        value: String,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Read a gossiped KEY.
    #[command(after_help = "Example:\n  peerlab read motd --data-dir /tmp/b")]
    Read {
        /// The key.
        key: String,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// List gossip members and their states.
    #[command(after_help = "Example:\n  peerlab members --data-dir /tmp/a")]
    Members(ClientArgs),
    /// Flooding search for shared files matching all TERMS.
    #[command(after_help = "Example:\n  peerlab search holiday photos --ttl 4 --data-dir /tmp/b")]
    Search {
        /// Keywords.
        #[arg(required = true)]
        terms: Vec<String>,
        /// Flood TTL (1..=10) [default: 7].
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=10))]
        ttl: Option<u8>,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Share a file: chunk it, announce it, and print its content id.
    ///
    /// The chunk size follows the file's size: 64 KiB up to 64 MiB, 128 KiB up to 128
    /// MiB, then 256 KiB (larger only past 30 000 chunks), so small files still spread
    /// through a swarm in many verified pieces.
    #[command(after_help = "Example:\n  peerlab share ./video.mp4 --data-dir /tmp/a")]
    Share {
        /// The file.
        path: PathBuf,
        /// Chunk size in KiB instead of the one chosen for the file's size: a power of two
        /// from 1 to 16384, and at most 30 000 chunks.
        #[arg(long, value_name = "KIB")]
        chunk_kib: Option<u32>,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Fetch a file by content id from its providers (verifies every chunk; resumes).
    ///
    /// The node does the work: it writes the file to OUTPUT when the last chunk is
    /// verified (whole or not at all: a temporary file, synced, then renamed), whether or
    /// not this command is still watching, and after a restart of the node too. An existing
    /// OUTPUT is never replaced without --force, and a symbolic link is never written
    /// through.
    #[command(
        after_help = "Examples:\n  peerlab fetch 3f9a…e1 -o video.mp4 --data-dir /tmp/b\n  \
        peerlab fetch 3f9a…e1 -o video.mp4 --detach   # return at once; the node finishes it"
    )]
    Fetch {
        /// The content id (hex): 64 hex digits, as `peerlab share` prints it.
        cid: String,
        /// Where to write the file [default: ./<cid>].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Replace OUTPUT if it exists.
        #[arg(long)]
        force: bool,
        /// Start the fetch and return without waiting (`peerlab fetch CID` again shows
        /// its progress).
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// List the node's shares and fetches: progress, peers, bytes moved and, for a fetch,
    /// where its output goes and whether it was written.
    #[command(after_help = "Example:\n  peerlab fetches --data-dir /tmp/b")]
    Fetches(ClientArgs),
    /// Stop a fetch and forget it: its slot is free at once and it is not resumed after a
    /// restart (the partial file stays in the chunk dir; fetching the CID again resumes it).
    #[command(after_help = "Example:\n  peerlab cancel 3f9a…e1 --data-dir /tmp/b")]
    Cancel {
        /// The content id of the fetch (see `peerlab fetches`).
        cid: String,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Stop serving a shared file (the file itself is left alone; announcements of it
    /// expire).
    #[command(after_help = "Example:\n  peerlab unshare 3f9a…e1 --data-dir /tmp/a")]
    Unshare {
        /// The content id `peerlab share` printed (see `peerlab fetches`).
        cid: String,
        #[command(flatten)]
        c: ClientArgs,
    },
}

/// A write refused because another writer owns `key` reads as one line naming the owner.
fn owned(key: &str, e: ClientError) -> anyhow::Error {
    match e {
        ClientError::NotOwner { owner } => anyhow::anyhow!("key {key:?} belongs to {owner}"),
        e => e.into(),
    }
}

fn print(json: bool, v: &Value, text: impl FnOnce(&Value) -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(v)?);
    } else {
        let t = text(v);
        if t.ends_with('\n') {
            print!("{t}");
        } else {
            println!("{t}");
        }
    }
    Ok(())
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `peerlab credentials`: the node's peer id, API address, token and certificate, read
/// from its data dir (and the node asked for its peer id, so that only a running node's
/// credentials are printed).
fn credentials(address: Option<String>, c: &ClientArgs) -> anyhow::Result<()> {
    let dir = c.data_dir.clone().unwrap_or_else(config::default_data_dir);
    let cert_path = dir.join(API_CERT_FILE);
    let cert = std::fs::read_to_string(&cert_path).with_context(|| {
        format!(
            "no API certificate in {}: the node's API is loopback-only (start it with --allow-remote-api)",
            dir.display()
        )
    })?;
    let client = c.client()?;
    let status = client.status()?;
    let address = address.unwrap_or_else(|| client.addr().to_string());
    let line = json!({
        "peer_id": status.peer_id,
        "api": address,
        "token": client.token(),
        "cert": cert,
    });
    println!("{}", serde_json::to_string(&line)?);
    Ok(())
}

/// Runs a node-facing command.
pub(crate) fn run(cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::Node(a) => run_node(a),
        NodeCommand::Credentials { address, c } => credentials(address, &c),
        NodeCommand::Status(c) => {
            let v: Value = c.client()?.get("/status")?;
            print(c.json, &v, |v| {
                let mut out = String::new();
                if let Value::Object(m) = v {
                    for (k, val) in m {
                        match val {
                            Value::Array(items) => {
                                out.push_str(&format!("{k}:\n"));
                                for i in items {
                                    out.push_str(&format!("  {}\n", s(i)));
                                }
                            }
                            other => out.push_str(&format!("{k}: {}\n", s(other))),
                        }
                    }
                }
                out
            })
        }
        NodeCommand::Peers(c) => {
            let v: Value = c.client()?.get("/peers")?;
            print(c.json, &v, |v| {
                let mut out = String::new();
                for p in v.as_array().into_iter().flatten() {
                    let rtt = p["rtt_ms"]
                        .as_f64()
                        .map(|r| format!("{r:.2} ms"))
                        .unwrap_or_else(|| "-".into());
                    out.push_str(&format!(
                        "{}  rtt {rtt}  {}\n",
                        s(&p["peer_id"]),
                        p["addresses"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(s)
                            .collect::<Vec<_>>()
                            .join(" ")
                    ));
                }
                if out.is_empty() {
                    out.push_str("no peers connected\n");
                }
                out
            })
        }
        NodeCommand::Ring(c) => {
            let v: Value = c.client()?.get("/ring")?;
            print(c.json, &v, pretty)
        }
        NodeCommand::Lookup { key, c } => {
            let v: Value = c.client()?.get(&format!("/lookup/{}", urlencode(&key)))?;
            print(c.json, &v, |v| {
                format!(
                    "owner {}  vnode {}  hops {}",
                    s(&v["owner"]),
                    s(&v["vnode"]),
                    s(&v["hops"])
                )
            })
        }
        NodeCommand::Put { key, value, c } => {
            let v: Value = c
                .client()?
                .put(
                    &format!("/kv/{}", urlencode(&key)),
                    &json!({ "value": value }),
                )
                .map_err(|e| owned(&key, e))?;
            print(c.json, &v, |v| {
                format!("stored at {} ({} hops)", s(&v["owner"]), s(&v["hops"]))
            })
        }
        NodeCommand::Get { key, c } => {
            let v: Value = c.client()?.get(&format!("/kv/{}", urlencode(&key)))?;
            if v["value"].is_null() && !c.json {
                bail!("key {key:?} not found");
            }
            print(c.json, &v, |v| s(&v["value"]))
        }
        NodeCommand::Delete { key, c } => {
            let v: Value = c
                .client()?
                .delete(&format!("/kv/{}", urlencode(&key)))
                .map_err(|e| owned(&key, e))?;
            print(c.json, &v, |_| format!("deleted {key}"))
        }
        NodeCommand::Publish { key, value, c } => {
            let v: Value = c
                .client()?
                .post("/gossip", &json!({ "key": key, "value": value }))?;
            print(c.json, &v, |v| {
                format!("published {key} (version {})", s(&v["version"]))
            })
        }
        NodeCommand::Read { key, c } => {
            let v: Value = c.client()?.get(&format!("/gossip/{}", urlencode(&key)))?;
            if v["value"].is_null() && !c.json {
                bail!("gossip key {key:?} not known here");
            }
            print(c.json, &v, |v| s(&v["value"]))
        }
        NodeCommand::Members(c) => {
            let v: Value = c.client()?.get("/members")?;
            print(c.json, &v, |v| {
                let mut out = String::new();
                for m in v.as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "{}  {}  {}\n",
                        s(&m["peer_id"]),
                        s(&m["state"]),
                        s(&m["address"])
                    ));
                }
                out
            })
        }
        NodeCommand::Search { terms, ttl, c } => {
            let v = c.client()?.search(&terms.join(" "), ttl)?;
            let v = serde_json::to_value(v)?;
            print(c.json, &v, |v| {
                let mut out = String::new();
                for h in v["hits"].as_array().into_iter().flatten() {
                    for n in h["names"].as_array().into_iter().flatten() {
                        out.push_str(&format!(
                            "{}  (from {}, {} hops)\n",
                            s(n),
                            s(&h["peer_id"]),
                            s(&h["hops"])
                        ));
                    }
                }
                if out.is_empty() {
                    out.push_str("no hits\n");
                }
                out
            })
        }
        NodeCommand::Share { path, chunk_kib, c } => {
            let abs = std::fs::canonicalize(&path)
                .with_context(|| format!("cannot share {}", path.display()))?;
            let mut body = json!({ "path": abs.display().to_string() });
            if let Some(k) = chunk_kib {
                body["chunk_kib"] = json!(k);
            }
            let v: Value = c.client()?.post("/share", &body)?;
            print(c.json, &v, |v| s(&v["cid"]))
        }
        NodeCommand::Fetch {
            cid,
            output,
            force,
            detach,
            c,
        } => fetch(&cid, output, force, detach, &c),
        NodeCommand::Fetches(c) => {
            let list = c.client()?.transfers()?;
            let v = serde_json::to_value(&list)?;
            print(c.json, &v, |_| {
                if list.is_empty() {
                    return "no shares or fetches\n".into();
                }
                let mut out = String::new();
                for t in &list {
                    let kind = match t.kind {
                        peerlab_node::api::TransferKind::Share => "share",
                        peerlab_node::api::TransferKind::Fetch => "fetch",
                    };
                    let state = match (&t.error, t.written, t.have == t.total && t.total > 0) {
                        (Some(e), _, _) => format!("failed: {e}"),
                        (None, true, _) => "written".into(),
                        (None, false, true) => "complete".into(),
                        _ => "running".into(),
                    };
                    // A transfer whose provider record the DHT has not stored yet cannot
                    // be found by other nodes' provider look-ups: say so.
                    let state = if t.announcements == 0 && t.error.is_none() {
                        format!("{state}, not announced yet")
                    } else {
                        state
                    };
                    out.push_str(&format!(
                        "{}  {kind}  {}/{} chunks  {} peers  down {} B  up {} B  {state}{}\n",
                        t.cid,
                        t.have,
                        t.total,
                        t.peers,
                        t.downloaded,
                        t.uploaded,
                        t.output
                            .as_deref()
                            .map(|o| format!("  -> {o}"))
                            .unwrap_or_default(),
                    ));
                }
                out
            })
        }
        NodeCommand::Cancel { cid, c } => {
            let v = c.client()?.cancel(&cid, false)?;
            print(c.json, &v, |_| format!("cancelled {cid}"))
        }
        NodeCommand::Unshare { cid, c } => {
            let v = c.client()?.cancel(&cid, true)?;
            print(c.json, &v, |_| format!("no longer sharing {cid}"))
        }
    }
}

fn fetch(
    cid: &str,
    output: Option<PathBuf>,
    force: bool,
    detach: bool,
    c: &ClientArgs,
) -> anyhow::Result<()> {
    let out = output.unwrap_or_else(|| PathBuf::from(cid));
    let out = if out.is_absolute() {
        out
    } else {
        std::env::current_dir()?.join(out)
    };
    let client = c.client()?;
    let started: Value = client.post(
        "/fetch",
        &json!({ "cid": cid, "output": out.display().to_string(), "force": force }),
    )?;
    if detach {
        return print(c.json, &started, |_| {
            format!("fetching {cid}; the node writes it to {}", out.display())
        });
    }
    let mut last = String::new();
    loop {
        let p: Value = client.get(&format!("/fetch/{}", urlencode(cid)))?;
        if let Some(err) = p["error"].as_str() {
            if !c.json {
                eprintln!();
            }
            bail!("fetch failed: {err}");
        }
        let have = p["have"].as_u64().unwrap_or(0);
        let total = p["total"].as_u64().unwrap_or(0);
        if !c.json {
            let line = if total == 0 {
                // No manifest yet: say what the node is doing to find one.
                let found = p["providers"].as_u64().unwrap_or(0);
                let lookups = p["provider_lookups"].as_u64().unwrap_or(0);
                let asked = p["manifest_requests"].as_u64().unwrap_or(0);
                format!(
                    "\rlooking for the manifest: {found} providers found in {lookups} look-ups, \
                     {asked} asked"
                )
            } else {
                format!("\r{have}/{total} chunks")
            };
            if line != last {
                eprint!("{line}");
                let _ = std::io::stderr().flush();
                last = line;
            }
        }
        if p["done"].as_bool() == Some(true) {
            if !c.json {
                eprintln!();
            }
            return print(c.json, &p, |_| {
                format!("fetched {cid} into {}", out.display())
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn load_config(a: &NodeArgs, data_dir: &Path) -> anyhow::Result<Config> {
    let path = a
        .config
        .clone()
        .unwrap_or_else(|| data_dir.join(peerlab_node::CONFIG_FILE));
    if a.config.is_some() && !path.exists() {
        bail!("config file {} does not exist", path.display());
    }
    let mut cfg = Config::load(&path)?;
    if !a.bootstrap.is_empty() {
        cfg.bootstrap = a.bootstrap.clone();
    }
    if !a.listen.is_empty() {
        cfg.listen = a.listen.clone();
    }
    if let Some(api) = &a.api {
        cfg.api = api.clone();
    }
    if a.allow_remote_api {
        cfg.allow_remote_api = true;
    }
    if !a.api_names.is_empty() {
        cfg.api_names = a.api_names.clone();
    }
    if a.accept_crash {
        cfg.accept_crash = true;
    }
    if a.metrics.is_some() {
        cfg.metrics = a.metrics.clone();
    }
    if let Some(v) = a.vnodes {
        cfg.vnodes = v;
    }
    if let Some(t) = a.transport {
        cfg.transport = match t {
            TransportArg::Quic => Transport::Quic,
            TransportArg::Tcp => Transport::Tcp,
        };
    }
    if a.maintenance_ms.is_some() {
        cfg.maintenance_ms = a.maintenance_ms;
    }
    if a.gossip_interval_ms.is_some() {
        cfg.gossip_interval_ms = a.gossip_interval_ms;
    }
    if a.gossip_fanout.is_some() {
        cfg.gossip_fanout = a.gossip_fanout;
    }
    if a.gossip_view.is_some() {
        cfg.gossip_view = a.gossip_view;
    }
    if let Some(d) = a.delay_ms {
        cfg.delay_ms = d;
    }
    if let Some(j) = a.delay_jitter_ms {
        cfg.delay_jitter_ms = j;
    }
    if let Some(p) = a.probe_port {
        cfg.probe_port = p;
    }
    if a.no_probe_datagrams {
        cfg.probe_datagrams = false;
    }
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("bad timing setting: {e}"))?;
    for b in &cfg.bootstrap {
        b.parse::<peerlab_node::libp2p::Multiaddr>()
            .map_err(|e| anyhow::anyhow!("bad --bootstrap {b:?}: {e}"))?;
    }
    for l in &cfg.listen {
        l.parse::<peerlab_node::libp2p::Multiaddr>()
            .map_err(|e| anyhow::anyhow!("bad --listen {l:?}: {e}"))?;
    }
    Ok(cfg)
}

fn run_node(a: NodeArgs) -> anyhow::Result<()> {
    let data_dir = a.data_dir.clone().unwrap_or_else(config::default_data_dir);
    let cfg = load_config(&a, &data_dir)?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match a.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(n))
            .enable_all()
            .build(),
        None => tokio::runtime::Runtime::new(),
    }
    .context("cannot start the tokio runtime")?;
    rt.block_on(async move {
        let node = peerlab_node::spawn(peerlab_node::NodeOptions::new(&data_dir, cfg)).await?;
        let summary = json!({
            "peer_id": node.peer_id().to_string(),
            "listen_addrs": node.listen_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "api": node.api_addr().to_string(),
            "data_dir": data_dir.display().to_string(),
        });
        print(a.json, &summary, |v| {
            let mut out = format!("peer id  {}\napi      {}\n", s(&v["peer_id"]), s(&v["api"]));
            for l in v["listen_addrs"].as_array().into_iter().flatten() {
                out.push_str(&format!("listen   {}\n", s(l)));
            }
            out
        })?;
        let _ = std::io::stdout().flush();
        wait_for_signal().await;
        tracing::info!("leaving the overlay");
        node.shutdown().await;
        anyhow::Ok(())
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
