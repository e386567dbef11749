//! `peerlab demo`: a 32-node testnet that shows every part of peerlab working together.
//!
//! Steps, each with a deadline; the first failure stops the demo (the testnet is still
//! shut down) and the command exits non-zero:
//!
//! 1. start the testnet (one `peerlab node` process per node by default) and wait until the
//!    ring is the ideal ring and membership is complete everywhere;
//! 2. DHT: put a record at one node, read it at another, look its key up at a third, and
//!    check the owner against the ideal ring;
//! 3. 200 lookups of random keys: hops against ½·log2 N;
//! 4. gossip: publish at one node, record when every other node has it;
//! 5. swarm: three nodes share the same file; a flooding search from a fourth finds it; the
//!    fourth fetches it from the swarm and the copy is byte-identical;
//! 6. shut everything down and check no node process is left.

#![allow(clippy::disallowed_methods)] // a driver: wall-clock time is its job

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use peerlab_node::config::Transport;
use serde::Serialize;

use crate::measure;
use crate::process::{
    Mode, NodeProgram, Testnet, TestnetError, Timings, UpOptions, key_owner, wait_until,
};

/// Deadline for the testnet to converge.
pub const CONVERGE_DEADLINE: Duration = Duration::from_secs(90);
/// Deadline for the flooding search to find the shared file (searches are repeated until a
/// hit comes back; the first one normally finds it, in one 1.4 s search window).
pub const SEARCH_DEADLINE: Duration = Duration::from_secs(20);
/// Deadline for the fetch to complete.
pub const FETCH_DEADLINE: Duration = Duration::from_secs(30);
/// Size of the shared file.
pub const FILE_BYTES: usize = 8 << 20;
/// Lookups of step 3.
pub const LOOKUPS: usize = 200;

/// Flags of `peerlab demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Nodes in the demo testnet.
    #[arg(long, default_value_t = 32)]
    pub nodes: usize,
    /// Run all nodes inside this process instead of one process each.
    #[arg(long)]
    pub in_process: bool,
    /// Where the node data dirs go [default: a fresh temporary dir, removed afterwards].
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// One row of the summary.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The step.
    pub step: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was measured.
    pub measured: String,
    /// Seconds the step took.
    pub seconds: f64,
}

/// What the demo did.
#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    /// Nodes.
    pub nodes: usize,
    /// `processes` or `in-process`.
    pub mode: Mode,
    /// The steps.
    pub rows: Vec<Row>,
    /// Whether every step passed.
    pub ok: bool,
    /// Wall-clock seconds of the whole demo.
    pub total_seconds: f64,
}

impl DemoReport {
    /// The summary table.
    pub fn render_table(&self) -> String {
        let mut s = format!(
            "peerlab demo: {} nodes on 127.0.0.1 ({})\n\n",
            self.nodes,
            match self.mode {
                Mode::Processes => "one OS process per node",
                Mode::InProcess => "all nodes in this process",
                Mode::Remote => "nodes on other hosts",
            }
        );
        s += &format!("{:<22} {:<5} {:>7}  {}\n", "step", "ok", "secs", "measured");
        s += &format!("{}\n", "-".repeat(100));
        for r in &self.rows {
            s += &format!(
                "{:<22} {:<5} {:>7.2}  {}\n",
                r.step,
                if r.ok { "yes" } else { "FAIL" },
                r.seconds,
                r.measured
            );
        }
        s += &format!(
            "\n{} in {:.1} s\n",
            if self.ok {
                "all steps passed"
            } else {
                "a step FAILED"
            },
            self.total_seconds
        );
        s
    }
}

struct Steps {
    rows: Vec<Row>,
    start: Instant,
    verbose: bool,
}

impl Steps {
    fn run<T>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> Result<(T, String), TestnetError>,
    ) -> Result<T, TestnetError> {
        if self.verbose {
            eprintln!("[{:>5.1}s] {name} …", self.start.elapsed().as_secs_f64());
        }
        let t = Instant::now();
        let r = f();
        let seconds = t.elapsed().as_secs_f64();
        match r {
            Ok((v, measured)) => {
                self.rows.push(Row {
                    step: name.into(),
                    ok: true,
                    measured,
                    seconds,
                });
                Ok(v)
            }
            Err(e) => {
                self.rows.push(Row {
                    step: name.into(),
                    ok: false,
                    measured: e.to_string(),
                    seconds,
                });
                Err(e)
            }
        }
    }
}

fn fail<T>(msg: impl Into<String>) -> Result<T, TestnetError> {
    Err(TestnetError::Failed(msg.into()))
}

/// Runs the demo. `program` starts node processes (ignored with `--in-process`).
pub fn run(
    args: &DemoArgs,
    program: Option<NodeProgram>,
    verbose: bool,
) -> Result<DemoReport, TestnetError> {
    if !(4..=200).contains(&args.nodes) {
        return Err(TestnetError::Invalid("--nodes must be in 4..=200".into()));
    }
    let start = Instant::now();
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = TempDir::new()?;
            tmp.0.clone()
        }
    };
    let mode = if args.in_process {
        Mode::InProcess
    } else {
        Mode::Processes
    };
    let mut steps = Steps {
        rows: Vec::new(),
        start,
        verbose,
    };
    let n = args.nodes;
    let opts = UpOptions {
        nodes: n,
        dir: dir.join("testnet"),
        transport: Transport::Quic,
        vnodes: 4,
        mode,
        base_port: None,
        program,
        seed: 1,
        timings: Timings::default(),
        hosts: None,
    };
    let net = steps.run("start testnet", || {
        let net = Testnet::start(opts, verbose)?;
        let h = net.wait_converged(CONVERGE_DEADLINE, verbose)?;
        let m = format!(
            "{n} nodes up; ring = ideal ring ({} vnodes) on {}/{n}, membership complete on {}/{n}; RSS {:.0} MiB",
            net.ideal_ring().len(),
            h.ring_correct,
            h.membership_complete,
            h.rss_kib as f64 / 1024.0
        );
        Ok((net, m))
    });
    let mut net = match net {
        Ok(n) => n,
        Err(_) => return Ok(finish(n, mode, steps, start)),
    };
    let body = demo_steps(&net, &mut steps, &dir);
    let _ = body;
    steps
        .run("shutdown", || {
            let was = net.down();
            let left = net.leftover_pids();
            if !left.is_empty() {
                return fail(format!("processes left behind: {left:?}"));
            }
            Ok((
                (),
                match mode {
                    Mode::Processes => {
                        format!("{was} node processes stopped (SIGTERM, graceful leave); none left")
                    }
                    Mode::InProcess | Mode::Remote => {
                        format!("{was} nodes left the ring and stopped")
                    }
                },
            ))
        })
        .ok();
    Ok(finish(n, mode, steps, start))
}

fn finish(n: usize, mode: Mode, steps: Steps, start: Instant) -> DemoReport {
    DemoReport {
        nodes: n,
        mode,
        ok: steps.rows.iter().all(|r| r.ok),
        rows: steps.rows,
        total_seconds: start.elapsed().as_secs_f64(),
    }
}

fn demo_steps(net: &Testnet, steps: &mut Steps, dir: &std::path::Path) -> Result<(), TestnetError> {
    let alive = net.alive();
    let n = alive.len();
    let pick = |k: usize| alive[k % n];
    let ring = net.ideal_ring();

    steps.run("DHT put / get", || {
        let (a, b) = (pick(1), pick(n / 2 + 1));
        let t = Instant::now();
        let put = net
            .client(a)
            .kv_put("demo/greeting", "hello from peerlab")
            .map_err(|e| TestnetError::Failed(format!("put at node {a}: {e}")))?;
        let put_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let got = net
            .client(b)
            .kv_get("demo/greeting")
            .map_err(|e| TestnetError::Failed(format!("get at node {b}: {e}")))?;
        let get_ms = t.elapsed().as_secs_f64() * 1e3;
        if got.value.as_deref() != Some("hello from peerlab") {
            return fail(format!("node {b} read {:?}", got.value));
        }
        Ok((
            (),
            format!(
                "put at node {a} ({} hops, {put_ms:.1} ms), read back at node {b} ({} hops, {get_ms:.1} ms)",
                put.route.hops, got.route.hops
            ),
        ))
    })?;

    steps.run("DHT lookup", || {
        let c = pick(n - 1);
        let r = net
            .client(c)
            .lookup("demo/greeting")
            .map_err(|e| TestnetError::Failed(format!("lookup at node {c}: {e}")))?;
        let want = key_owner(&ring, "demo/greeting").map(|o| o.id.to_hex()).unwrap_or_default();
        if r.vnode != want {
            return fail(format!("node {c} says vnode {} owns the key; the ideal ring says {want}", r.vnode));
        }
        let rep = measure::lookups(net, LOOKUPS, 7)?;
        if rep.failed > 0 || rep.wrong_owner > 0 {
            return fail(format!(
                "{} of {LOOKUPS} lookups failed, {} had the wrong owner",
                rep.failed, rep.wrong_owner
            ));
        }
        Ok((
            (),
            format!(
                "owner = ideal owner; {LOOKUPS} random lookups all correct: hops mean {:.2} (½·log2 N = {:.2}, ½·log2 N·V = {:.2}), latency p50 {:.1} ms p99 {:.1} ms",
                rep.hops.mean, rep.chord_half_log2_n, rep.chord_half_log2_nv, rep.latency_ms.p50, rep.latency_ms.p99
            ),
        ))
    })?;

    steps.run("gossip convergence", || {
        let o = pick(3);
        let a = measure::gossip_arrivals(net, o, "demo/motd", "peerlab says hi", measure::ARRIVAL_DEADLINE)?;
        let (Some(t99), Some(t100)) = (a.time_to(0.99), a.time_to(1.0)) else {
            return fail(format!(
                "the update reached {} of {} nodes",
                a.arrivals.len(),
                a.targets
            ));
        };
        let t = net.manifest().timings;
        let sim = measure::simulated_arrivals(
            n,
            t.gossip_fanout,
            t.gossip_view,
            Duration::from_millis(t.gossip_interval_ms),
            1,
        );
        let sim100 = measure::time_to(&sim, n - 1, 1.0).unwrap_or(f64::NAN);
        Ok((
            (),
            format!(
                "published at node {o}: all {} others had it after {:.2} s (99 % after {t99:.2} s, poll cycle {:.0} ms); simulator predicts {sim100:.2} s",
                a.targets,
                t100,
                a.poll_cycle * 1e3
            ),
        ))
    })?;

    let sharers = [pick(5), pick(9), pick(13)];
    let fetcher = pick(n - 2);
    let data: Vec<u8> = (0..FILE_BYTES)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect();
    let cid = steps.run("share from 3 nodes", || {
        let mut cid = String::new();
        for s in sharers {
            let p = dir
                .join(format!("share-{s}"))
                .join("peerlab-demo-video.bin");
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| TestnetError::Failed(e.to_string()))?;
            }
            std::fs::write(&p, &data).map_err(|e| TestnetError::Failed(e.to_string()))?;
            let sh = net
                .client(s)
                .share(&p)
                .map_err(|e| TestnetError::Failed(format!("share at node {s}: {e}")))?;
            if !cid.is_empty() && cid != sh.cid {
                return fail("the same bytes got two content ids");
            }
            cid = sh.cid;
        }
        let short = cid[..12.min(cid.len())].to_string();
        Ok((
            cid,
            format!(
                "nodes {sharers:?} share {} MiB as content {short}…",
                FILE_BYTES >> 20
            ),
        ))
    })?;

    steps.run("flooding search", || {
        let c = net.client(fetcher);
        let t = Instant::now();
        let hits = wait_until(
            "a flooding search hit for the shared file",
            SEARCH_DEADLINE,
            || {
                let r = c.search("peerlab demo video", None).ok()?;
                let h: Vec<_> = r
                    .hits
                    .into_iter()
                    .filter(|h| h.names.iter().any(|n| n.contains(&cid)))
                    .collect();
                (!h.is_empty()).then_some(h)
            },
        )?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let hops: Vec<u16> = hits.iter().map(|h| h.hops).collect();
        Ok((
            (),
            format!(
                "node {fetcher} found it: {} hit(s) at {hops:?} overlay hops, {ms:.0} ms",
                hits.len()
            ),
        ))
    })?;

    steps.run("swarm fetch", || {
        let c = net.client(fetcher);
        let out = dir.join("fetched").join("peerlab-demo-video.bin");
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| TestnetError::Failed(e.to_string()))?;
        }
        let t = Instant::now();
        c.fetch(&cid, Some(&out))
            .map_err(|e| TestnetError::Failed(format!("fetch at node {fetcher}: {e}")))?;
        wait_until("the fetch to complete", FETCH_DEADLINE, || {
            let p = c.fetch_progress(&cid).ok()?;
            (p.done || p.error.is_some()).then_some(p)
        })
        .and_then(|p| match p.error {
            Some(e) => fail(format!("fetch failed: {e}")),
            None => Ok(p),
        })?;
        let secs = t.elapsed().as_secs_f64();
        let got = std::fs::read(&out).map_err(|e| TestnetError::Failed(e.to_string()))?;
        if got != data {
            return fail("the fetched file differs from the shared one");
        }
        let uploaders = sharers
            .iter()
            .filter(|&&s| net.client(s).fetch_progress(&cid).is_ok_and(|p| p.uploaded > 0))
            .count();
        Ok((
            (),
            format!(
                "node {fetcher} fetched {} MiB in {secs:.2} s ({:.1} MiB/s) from {uploaders} of 3 sharers; byte-identical",
                FILE_BYTES >> 20,
                (FILE_BYTES >> 20) as f64 / secs
            ),
        ))
    })?;
    Ok(())
}

/// A temporary dir removed on drop (the demo needs no set-up and leaves nothing behind).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, TestnetError> {
        let base = std::env::temp_dir();
        for k in 0..1000u32 {
            let p = base.join(format!("peerlab-demo-{}-{k}", std::process::id()));
            if std::fs::create_dir(&p).is_ok() {
                return Ok(TempDir(p));
            }
        }
        Err(TestnetError::Resources(format!(
            "cannot create a temporary dir in {}",
            base.display()
        )))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
