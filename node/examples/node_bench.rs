//! Node benchmarks (figures for docs/experiments/node.md).
//!
//! ```text
//! cargo run --release -p peerlab-node --example node_bench -- fetch 256      # MiB, QUIC and TCP
//! cargo run --release -p peerlab-node --example node_bench -- fetch 256 /dev/shm quic
//! cargo run --release -p peerlab-node --example node_bench -- fetch 256 /dev/shm both 5
//! cargo run --release -p peerlab-node --example node_bench -- loop-latency quic 1024 # MiB
//! cargo run --release -p peerlab-node --example node_bench -- memory 100     # nodes in one process
//! ```
//!
//! `fetch` shares a file of the given size on one node and fetches it from a second over
//! QUIC and then over TCP (or only the transport named), and compares with the raw
//! throughput of one libp2p stream (a single request-response substream carrying the same
//! number of bytes) on the same transport. The fetch is timed until the file is complete in
//! the fetcher's chunk store; the copy that `fetch -o PATH` adds is timed after it and
//! reported as `fetch_and_copy_mib_s` (a plain copy, what `-o` costs). With a repetition count (fifth argument) raw
//! stream and fetch alternate that many times per transport (odd repetitions fetch first),
//! each pair printed with the 1-minute load average, then the medians of the raw and fetch
//! figures and of the per-pair ratios: the raw figure varies by a factor of two between
//! back-to-back runs on a shared machine, so one pair says little. `raw_cpu_s` and
//! `fetch_cpu_s` are the CPU seconds (all threads, user + system) the process used while
//! each was timed: both nodes, or both bare swarms, run in this one process. The optional
//! directory holds both nodes' data dirs (default: the system's temporary directory); on a
//! tmpfs such as `/dev/shm` the chunk store's `fsync`s cost nothing, which separates the
//! network path from the disk. `loop-latency` measures the fetching node's event loop:
//! node B is probed every 20 ms with a DHT lookup of a random key and a `/status` request
//! (answered by the driver task), first idle for 5 s, then while it fetches a file of
//! pseudo-random bytes (default 1024 MiB, data dirs in the system's temporary directory or
//! the directory given) from node A; it prints p50 / p99 / max of each and the fetch's MiB/s.
//! `memory` reports the resident set size of the process with
//! one idle node and with N connected nodes.
//!
//! With `NODE_BENCH_WINDOW` set, every fetch prints its timed window to stderr as two
//! monotonic-clock instants, to cut a profile to it:
//! `perf record -k CLOCK_MONOTONIC …` then `perf report --time START,END` (seconds).

// A benchmark measures wall-clock time.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use peerlab_node::config::{Config, Transport};
use peerlab_node::libp2p::futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use peerlab_node::libp2p::request_response::{self, ProtocolSupport};
use peerlab_node::libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use peerlab_node::libp2p::{self, Multiaddr, StreamProtocol, Swarm, noise, tcp, yamux};
use peerlab_node::{NodeHandle, NodeOptions};

/// Longest a benchmark fetch may take.
const FETCH_DEADLINE: Duration = Duration::from_secs(600);

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

async fn start(
    dir: &std::path::Path,
    transport: Transport,
    bootstrap: Option<String>,
) -> NodeHandle {
    let mut cfg = Config::local(transport);
    if let Some(b) = bootstrap {
        cfg.bootstrap = vec![b];
    }
    peerlab_node::spawn(NodeOptions::new(dir, cfg))
        .await
        .expect("node starts")
}

fn addr_of(n: &NodeHandle, transport: Transport) -> String {
    let want = match transport {
        Transport::Quic => "quic",
        Transport::Tcp => "tcp",
    };
    n.listen_addrs()
        .iter()
        .map(|a| a.to_string())
        .find(|a| a.contains(want))
        .expect("listen address")
}

/// CPU time (user + system, every thread) this process has used so far, in seconds.
fn cpu_secs() -> f64 {
    // Fields 14 and 15 of /proc/self/stat, in clock ticks of 1/100 s on Linux; the command
    // name (field 2) may hold spaces, so count from its closing parenthesis.
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

/// Two nodes in one process with both DHTs joined (so provider records can be found): `a`
/// shares, `b` fetches. Their data dirs live in `base` and are removed on drop.
struct Pair {
    a: NodeHandle,
    b: NodeHandle,
    dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Pair {
    async fn start(transport: Transport, base: &std::path::Path) -> Pair {
        let dirs = (
            tempfile::tempdir_in(base).unwrap(),
            tempfile::tempdir_in(base).unwrap(),
        );
        let a = start(dirs.0.path(), transport, None).await;
        let b = start(dirs.1.path(), transport, Some(addr_of(&a, transport))).await;
        let (ca, cb) = (a.client(), b.client());
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            while !(ca.status().map(|s| s.dht_joined).unwrap_or(false)
                && cb.status().map(|s| s.dht_joined).unwrap_or(false))
            {
                assert!(t0.elapsed() < Duration::from_secs(30), "DHT join");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap();
        Pair { a, b, dirs }
    }

    async fn stop(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
    }
}

/// Shares `file` on `ca`'s node and fetches it on `cb`'s, the provider given explicitly;
/// returns the seconds from the fetch request until the file is complete, verified and
/// renamed in the fetcher's chunk store, the CPU seconds meanwhile, and that file's path.
/// (With `-o PATH` the node copies it out afterwards; callers time that separately.)
fn share_and_fetch(
    ca: &peerlab_node::client::Client,
    cb: &peerlab_node::client::Client,
    file: &std::path::Path,
) -> (f64, f64, std::path::PathBuf) {
    let cid = ca.share(file).unwrap().cid;
    let provider = ca.status().unwrap().peer_id;
    let start = Instant::now();
    let cpu0 = cpu_secs();
    let _: serde_json::Value = cb
        .post(
            "/fetch",
            &serde_json::json!({"cid": cid, "providers": [provider]}),
        )
        .unwrap();
    let path = loop {
        let p = cb.fetch_progress(&cid).unwrap();
        assert!(p.error.is_none(), "{p:?}");
        // Far beyond a 1 GiB fetch at the slowest rate this machine has shown (~40 MiB/s):
        // a stalled fetch ends the benchmark instead of hanging it.
        assert!(start.elapsed() < FETCH_DEADLINE, "fetch stalled: {p:?}");
        if p.done {
            break std::path::PathBuf::from(p.path.expect("finished file path"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    if std::env::var_os("NODE_BENCH_WINDOW").is_some() {
        eprintln!("fetch window {start:?} .. {:?}", Instant::now());
    }
    (secs, cpu, path)
}

/// Shares `size` bytes on node A and fetches them on node B; returns MiB/s of the fetch,
/// of the fetch plus a copy to an output file (what `fetch -o PATH` adds across file
/// systems), and the CPU seconds the process used during the timed fetch.
async fn fetch_once(transport: Transport, size: usize, base: &std::path::Path) -> (f64, f64, f64) {
    let pair = Pair::start(transport, base).await;
    let (ca, cb) = (pair.a.client(), pair.b.client());
    let file = pair.dirs.0.path().join("payload.bin");
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[2])
        .collect();
    std::fs::write(&file, &data).unwrap();
    let out = pair.dirs.1.path().join("out.bin");
    let res = tokio::task::spawn_blocking(move || {
        let (secs, cpu, path) = share_and_fetch(&ca, &cb, &file);
        let copy_start = Instant::now();
        std::fs::copy(&path, &out).unwrap();
        let copy_secs = copy_start.elapsed().as_secs_f64();
        assert!(
            std::fs::read(&path).unwrap() == data,
            "fetched bytes differ"
        );
        let mib = size as f64 / (1 << 20) as f64;
        (mib / secs, mib / (secs + copy_secs), cpu)
    })
    .await
    .unwrap();
    pair.stop().await;
    res
}

/// Period of the latency probe: one lookup and one status request per period.
const PROBE_PERIOD: Duration = Duration::from_millis(20);

/// How long the idle probe runs (no transfer) before the fetch starts.
const IDLE_PROBE: Duration = Duration::from_secs(5);

/// Round-trip times in milliseconds of the requests one probe made, by kind.
#[derive(Default)]
struct Probe {
    lookup_ms: Vec<f64>,
    status_ms: Vec<f64>,
    failed: usize,
}

/// Probes the event loop of the node behind `c` every [`PROBE_PERIOD`] until `stop` is set
/// (or `max` has passed): a DHT lookup of a fresh random key (`GET /lookup`, a route the
/// driver's DHT core computes, asking the ring as needed) and `GET /status` (answered by
/// the driver itself between two inputs). Each is timed from request to answer.
fn probe(
    c: &peerlab_node::client::Client,
    stop: &std::sync::atomic::AtomicBool,
    max: Duration,
    seed: u64,
) -> Probe {
    let mut p = Probe::default();
    let mut x = seed | 1;
    let t0 = Instant::now();
    let mut next = t0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && t0.elapsed() < max {
        x = xorshift(x);
        let t = Instant::now();
        match c.lookup(&format!("probe-{x:016x}")) {
            Ok(_) => p.lookup_ms.push(t.elapsed().as_secs_f64() * 1e3),
            Err(_) => p.failed += 1,
        }
        let t = Instant::now();
        match c.status() {
            Ok(_) => p.status_ms.push(t.elapsed().as_secs_f64() * 1e3),
            Err(_) => p.failed += 1,
        }
        next += PROBE_PERIOD;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // A slow answer: the next probe goes out now, not in a burst of missed ones.
            next = now;
        }
    }
    p
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// Writes `size` pseudo-random bytes to `path` (streamed, 1 MiB at a time); returns their
/// BLAKE3 hash.
fn write_random(path: &std::path::Path, size: usize, seed: u64) -> blake3::Hash {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut h = blake3::Hasher::new();
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len());
        for w in buf[..n].chunks_mut(8) {
            x = xorshift(x);
            w.copy_from_slice(&x.to_le_bytes()[..w.len()]);
        }
        f.write_all(&buf[..n]).unwrap();
        h.update(&buf[..n]);
        left -= n;
    }
    f.into_inner().unwrap().sync_all().unwrap();
    h.finalize()
}

/// p-quantile (0..=1) of `v` by the nearest-rank method; NaN if empty.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

fn latency_json(v: &[f64]) -> String {
    format!(
        "{{\"n\":{},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
        v.len(),
        quantile(v, 0.5),
        quantile(v, 0.99),
        v.iter().copied().fold(f64::NAN, f64::max)
    )
}

/// The fetching node's event-loop latency: probes node B idle, then while it fetches
/// `size` pseudo-random bytes from node A; prints both probes and the fetch's MiB/s.
async fn loop_latency(transport: Transport, size: usize, base: &std::path::Path) {
    let pair = Pair::start(transport, base).await;
    let (ca, cb) = (pair.a.client(), pair.b.client());
    let file = pair.dirs.0.path().join("payload.bin");
    let mib = size as f64 / (1 << 20) as f64;
    tokio::task::spawn_blocking(move || {
        let want = write_random(&file, size, 0x9e37_79b9_7f4a_7c15);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let idle = probe(&cb, &stop, IDLE_PROBE, 1);
        let cb2 = cb.clone();
        let (busy, (secs, cpu, path)) = std::thread::scope(|s| {
            let prober = s.spawn(|| probe(&cb2, &stop, Duration::from_secs(3600), 2));
            let r = share_and_fetch(&ca, &cb, &file);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            (prober.join().unwrap(), r)
        });
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(&path).unwrap())
            .unwrap();
        assert_eq!(h.finalize(), want, "fetched bytes differ");
        println!(
            "{{\"bench\":\"loop_latency\",\"transport\":\"{transport:?}\",\"mib\":{mib},\"fetch_mib_s\":{:.1},\"fetch_cpu_s\":{cpu:.2},\"idle\":{{\"lookup\":{},\"status\":{},\"failed\":{}}},\"fetching\":{{\"lookup\":{},\"status\":{},\"failed\":{}}},\"load1\":{:.2}}}",
            mib / secs,
            latency_json(&idle.lookup_ms),
            latency_json(&idle.status_ms),
            idle.failed,
            latency_json(&busy.lookup_ms),
            latency_json(&busy.status_ms),
            busy.failed,
            load1()
        );
    })
    .await
    .unwrap();
    pair.stop().await;
}

/// A codec whose one request is `n` bytes streamed on one substream.
#[derive(Clone, Default)]
struct Bulk;

impl request_response::Codec for Bulk {
    type Protocol = StreamProtocol;
    type Request = u64;
    type Response = u64;
    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<u64>
    where
        T: libp2p::futures::AsyncRead + Unpin + Send,
    {
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        loop {
            let r = io.read(&mut buf).await?;
            if r == 0 {
                return Ok(n);
            }
            n += r as u64;
        }
    }
    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<u64>
    where
        T: libp2p::futures::AsyncRead + Unpin + Send,
    {
        let mut b = [0u8; 8];
        io.read_exact(&mut b).await?;
        Ok(u64::from_be_bytes(b))
    }
    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        n: u64,
    ) -> std::io::Result<()>
    where
        T: libp2p::futures::AsyncWrite + Unpin + Send,
    {
        let buf = vec![7u8; 1 << 16];
        let mut left = n;
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            io.write_all(&buf[..k]).await?;
            left -= k as u64;
        }
        io.close().await
    }
    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        n: u64,
    ) -> std::io::Result<()>
    where
        T: libp2p::futures::AsyncWrite + Unpin + Send,
    {
        io.write_all(&n.to_be_bytes()).await?;
        io.close().await
    }
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "peerlab_node::libp2p::swarm::derive_prelude")]
struct BulkBehaviour {
    rr: request_response::Behaviour<Bulk>,
}

fn bulk_swarm() -> Swarm<BulkBehaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_quic()
        .with_behaviour(|_| BulkBehaviour {
            rr: request_response::Behaviour::new(
                [(StreamProtocol::new("/bench/bulk/1"), ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(600)),
            ),
        })
        .unwrap()
        .build()
}

/// Raw throughput of one libp2p substream carrying `size` bytes: MiB/s, and the CPU seconds
/// the process used meanwhile.
async fn raw_once(transport: Transport, size: u64) -> (f64, f64) {
    let mut server = bulk_swarm();
    let listen: Multiaddr = match transport {
        Transport::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
        Transport::Tcp => "/ip4/127.0.0.1/tcp/0",
    }
    .parse()
    .unwrap();
    server.listen_on(listen).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let server_id = *server.local_peer_id();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(BulkBehaviourEvent::Rr(
                request_response::Event::Message {
                    message:
                        request_response::Message::Request {
                            request, channel, ..
                        },
                    ..
                },
            )) = server.select_next_some().await
            {
                let _ = server.behaviour_mut().rr.send_response(channel, request);
            }
        }
    });
    let mut client = bulk_swarm();
    client
        .dial(addr.with(libp2p::multiaddr::Protocol::P2p(server_id)))
        .unwrap();
    loop {
        if let SwarmEvent::ConnectionEstablished { .. } = client.select_next_some().await {
            break;
        }
    }
    let start = Instant::now();
    let cpu0 = cpu_secs();
    client.behaviour_mut().rr.send_request(&server_id, size);
    loop {
        match client.select_next_some().await {
            SwarmEvent::Behaviour(BulkBehaviourEvent::Rr(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            })) => {
                assert_eq!(response, size);
                break;
            }
            SwarmEvent::Behaviour(BulkBehaviourEvent::Rr(
                request_response::Event::OutboundFailure { error, .. },
            )) => panic!("raw transfer failed: {error}"),
            _ => {}
        }
    }
    (
        size as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64(),
        cpu_secs() - cpu0,
    )
}

async fn memory(n: usize) {
    let base = rss_mib();
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = start(dirs[0].path(), Transport::Quic, None).await;
    let boot = addr_of(&first, Transport::Quic);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let one = rss_mib();
    let mut nodes = vec![first];
    for d in &dirs[1..] {
        nodes.push(start(d.path(), Transport::Quic, Some(boot.clone())).await);
    }
    // Let membership, the ring and the flooding overlay settle before measuring.
    let c = nodes[0].client();
    let want = n - 1;
    let settled = tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(120) {
            if c.status().map(|s| s.members_alive >= want).unwrap_or(false) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let all = rss_mib();
    println!(
        "{{\"bench\":\"memory\",\"baseline_mib\":{base:.1},\"one_idle_node_mib\":{:.1},\"nodes\":{n},\"all_nodes_mib\":{:.1},\"per_node_mib\":{:.2},\"membership_settled\":{settled}}}",
        one - base,
        all - base,
        (all - base) / n as f64
    );
    for node in nodes {
        node.abort().await;
    }
}

/// The median of some figures (the mean of the middle two for an even count).
fn median(it: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = it.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The 1-minute load average (the machine is shared; every figure carries it).
fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    match args.get(1).map(String::as_str) {
        Some("fetch") => {
            let mib: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256);
            let base = args
                .get(3)
                .map(std::path::PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            let transports = match args.get(4).map(String::as_str) {
                Some("quic") => vec![Transport::Quic],
                Some("tcp") => vec![Transport::Tcp],
                _ => vec![Transport::Quic, Transport::Tcp],
            };
            let reps: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
            for t in transports {
                let mut rows = Vec::new();
                for rep in 0..reps {
                    // Raw and fetch alternate, so that both see the same machine load; odd
                    // repetitions run the fetch first, so neither always follows the other.
                    let ((raw, raw_cpu), (fetch, with_copy, fetch_cpu)) = if rep % 2 == 0 {
                        let raw = rt.block_on(raw_once(t, (mib as u64) << 20));
                        (raw, rt.block_on(fetch_once(t, mib << 20, &base)))
                    } else {
                        let f = rt.block_on(fetch_once(t, mib << 20, &base));
                        (rt.block_on(raw_once(t, (mib as u64) << 20)), f)
                    };
                    println!(
                        "{{\"bench\":\"fetch\",\"transport\":\"{t:?}\",\"mib\":{mib},\"dir\":\"{}\",\"rep\":{rep},\"fetch_mib_s\":{fetch:.1},\"fetch_and_copy_mib_s\":{with_copy:.1},\"raw_stream_mib_s\":{raw:.1},\"ratio\":{:.2},\"ratio_with_copy\":{:.2},\"raw_cpu_s\":{raw_cpu:.2},\"fetch_cpu_s\":{fetch_cpu:.2},\"load1\":{:.2}}}",
                        base.display(),
                        fetch / raw,
                        with_copy / raw,
                        load1()
                    );
                    rows.push((raw, fetch, with_copy));
                }
                if reps > 1 {
                    let med = |f: &dyn Fn(&(f64, f64, f64)) -> f64| median(rows.iter().map(f));
                    println!(
                        "{{\"bench\":\"fetch_median\",\"transport\":\"{t:?}\",\"mib\":{mib},\"reps\":{reps},\"raw_stream_mib_s\":{:.1},\"fetch_mib_s\":{:.1},\"fetch_and_copy_mib_s\":{:.1},\"ratio\":{:.2},\"ratio_with_copy\":{:.2}}}",
                        med(&|r| r.0),
                        med(&|r| r.1),
                        med(&|r| r.2),
                        med(&|r| r.1 / r.0),
                        med(&|r| r.2 / r.0)
                    );
                }
            }
        }
        Some("loop-latency") => {
            let transport = match args.get(2).map(String::as_str) {
                Some("tcp") => Transport::Tcp,
                _ => Transport::Quic,
            };
            let mib: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1024);
            let base = args
                .get(4)
                .map(std::path::PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            rt.block_on(loop_latency(transport, mib << 20, &base));
        }
        Some("memory") => {
            let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
            rt.block_on(memory(n));
        }
        _ => {
            eprintln!(
                "usage: node_bench fetch [MiB [DIR [quic|tcp|both [REPS]]]] | loop-latency [quic|tcp [MiB [DIR]]] | memory [nodes]"
            )
        }
    }
}
