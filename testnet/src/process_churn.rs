//! `peerlab testnet churn`: Poisson churn on a running process testnet under a steady
//! workload — real node processes killed and restarted. (The simulator's churn is
//! `peerlab_sim::churn`: schedules of simulated joins and departures.)
//!
//! Before churn starts, `--keys` records are put into the DHT (the nodes replicate each on
//! R = 3 successors). During `--duration` seconds, departures and restarts each arrive as a
//! Poisson process of `--rate` events per second (Chord paper, ToN §6: joins and failures
//! each at rate R). A departure picks a random live non-seed node and kills it with SIGKILL
//! (with probability `--crash-fraction`; otherwise SIGTERM, a graceful leave); a restart
//! brings a random node back from its data dir (same identity and records) that has been
//! down for at least `--min-downtime` seconds (when none has, the event is skipped). At most a
//! fifth of the nodes are down at once. Meanwhile [`WORKERS`] threads issue lookups, gets
//! and updates at `--ops-rate` per second in total (half lookups; of the rest, one in
//! [`UPDATE_EVERY`] an update), each at a random live node:
//!
//! - a lookup *fails* when the API answers an error, and has the *wrong owner* when the
//!   answer differs from the ideal ring of the nodes alive at that moment (right after a
//!   crash the ideal ring already excludes the victim, while the overlay has not noticed it
//!   yet, so wrong owners are expected to follow each crash for about the detection time);
//! - an update writes the next version of a record through the node that first wrote it
//!   (a record belongs to its writer), when that node is up;
//! - a get is *right* when it returns the newest version acknowledged before it was sent
//!   (or a newer one), *stale* when it returns an older version, *missing* when the record
//!   is not found, and *failed* when the API answers an error; a get that does not return
//!   the right value counts as a failed get in the per-bucket figures;
//! - a request that cannot reach its node at all (it was killed in between) is counted as
//!   *unreachable* and is no overlay failure.
//!
//! Failure-detection latency: after a crash, three random live observers are polled until
//! none lists the victim as alive or suspect (`GET /members`); a victim that answers its API
//! again first (restarted by an orchestrator) leaves its detection unmeasured. Join latency: from a
//! restart's spawn until the node's ring view is the ideal ring of the live nodes. Lost
//! keys: after churn, once the ring re-converged (or `--settle` seconds passed), every
//! acknowledged record is read from a random node; a missing value, or one older than the
//! newest acknowledged version, is lost.
//!
//! Output: a JSON report, `churn.csv` (one row per [`BUCKET`]), and `churn.png` /
//! `churn.svg` (failure rates over time) plus `churn_nodes.png/.svg` (live nodes).

#![allow(clippy::disallowed_methods)] // a driver: wall-clock time is its job

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use peerlab_dht::IdealRing;
use peerlab_node::client::{Client, ClientError};
use peerlab_overlay::{Id, PeerId, Rng};
use serde::Serialize;

use crate::measure::Percentiles;
use crate::plot::{self, Series};
use crate::process::{
    Testnet, TestnetError, core_peer_id, key_owner, par_map, progress_bar, view_is_ideal,
};

/// Of the workload's non-lookup operations, one in this many is an update (the others are
/// gets): enough versions to see stale reads while ownership moves, few enough that most
/// operations measure reads.
pub const UPDATE_EVERY: usize = 5;

/// Width of one time bucket in the CSV and plots.
pub const BUCKET: Duration = Duration::from_secs(10);
/// Workload threads.
pub const WORKERS: usize = 4;
/// Longest churn run, seconds.
pub const MAX_DURATION: u64 = 24 * 3600;
/// Most records put before churn.
pub const MAX_KEYS: usize = 100_000;
/// Most probe threads (detection and join timing) alive at once; later events go unprobed.
pub const MAX_PROBES: usize = 64;
/// How long a detection or join probe waits before giving up.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(120);
/// Observers polled per crash for failure detection.
pub const OBSERVERS: usize = 3;
/// Lost records listed by name in the report (the count covers all of them).
pub const MAX_LOST_LISTED: usize = 50;

/// A record missing after churn, and the peers that held it when it was written.
#[derive(Debug, Clone, Serialize)]
pub struct LostKey {
    /// The record's key.
    pub key: String,
    /// Its replica set in the ring as it was before churn (owner first).
    pub replicas: Vec<ReplicaFate>,
}

/// What churn did to one replica holder of a lost record.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaFate {
    /// Node index.
    pub node: usize,
    /// Times the node departed during churn.
    pub departures: u32,
    /// Whether it was running at the end.
    pub alive_at_end: bool,
}

/// The churn to run: rates, workload and seed (the flags of `peerlab testnet churn` beside
/// the testnet dir and the output dir).
#[derive(Debug, Clone, Args)]
pub struct Params {
    /// Departures per second, and restarts per second (each a Poisson process).
    #[arg(long, default_value_t = 0.1)]
    pub rate: f64,
    /// Seconds of churn.
    #[arg(long, default_value_t = 120)]
    pub duration: u64,
    /// Fraction of departures that are crashes (SIGKILL); the rest leave gracefully (SIGTERM).
    #[arg(long, default_value_t = 1.0)]
    pub crash_fraction: f64,
    /// Lookups and gets per second, in total.
    #[arg(long, default_value_t = 10.0)]
    pub ops_rate: f64,
    /// Records put before churn and read during and after it.
    #[arg(long, default_value_t = 200)]
    pub keys: usize,
    /// Seconds a departed node stays down at least before a restart may pick it (a node
    /// restarted with the same identity before the overlay declared it dead can stay
    /// isolated: see docs/experiments/testnet.md).
    #[arg(long, default_value_t = 15)]
    pub min_downtime: u64,
    /// Seconds to wait after churn for the ring to re-converge before counting lost keys.
    #[arg(long, default_value_t = 120)]
    pub settle: u64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Distinct error texts counted in [`ChurnReport::failures_by_error`]; the rest count as
/// "other" (a node answering with ever-new texts must not grow the report without bound).
pub const MAX_FAILURE_KINDS: usize = 32;

/// The error text of a failed request with its digits removed (ids, durations and counts
/// differ between otherwise equal failures).
fn failure_kind(e: &impl std::fmt::Display) -> String {
    let text: String = e
        .to_string()
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .take(120)
        .collect();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One time bucket.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Bucket {
    /// Bucket start, seconds since churn began.
    pub t: f64,
    /// Lookups answered or failed.
    pub lookups: usize,
    /// Lookups that failed.
    pub failed_lookups: usize,
    /// Lookups with the wrong owner.
    pub wrong_owner: usize,
    /// Gets issued.
    pub gets: usize,
    /// Gets that did not return the right value (stale, missing or an error).
    pub failed_gets: usize,
    /// Gets that returned an older version than the newest acknowledged.
    pub stale_gets: usize,
    /// Gets that found no record.
    pub missing_gets: usize,
    /// Gets the API answered with an error.
    pub errored_gets: usize,
    /// Updates issued.
    pub updates: usize,
    /// Updates the API answered with an error.
    pub failed_updates: usize,
    /// Requests whose node was unreachable.
    pub unreachable: usize,
    /// Requests refused because their node was not in the ring (yet).
    pub joining: usize,
    /// Live nodes at the end of the bucket.
    pub alive: usize,
    /// Crashes and leaves in the bucket.
    pub departures: usize,
    /// Restarts in the bucket.
    pub restarts: usize,
}

/// What `testnet churn` measured.
#[derive(Clone, Debug, Serialize)]
pub struct ChurnReport {
    /// Nodes in the testnet.
    pub nodes: usize,
    /// Event rate per second (departures; restarts the same).
    pub rate: f64,
    /// Seconds of churn.
    pub duration: u64,
    /// Fraction of departures that were crashes.
    pub crash_fraction: f64,
    /// DHT replication factor of the nodes.
    pub replicas: usize,
    /// Crashes (SIGKILL).
    pub crashes: usize,
    /// Graceful leaves (SIGTERM).
    pub leaves: usize,
    /// Restarts.
    pub restarts: usize,
    /// Lookups issued.
    pub lookups: usize,
    /// Failed lookups.
    pub failed_lookups: usize,
    /// Failed lookups ÷ lookups.
    pub failed_lookup_rate: f64,
    /// Lookups whose owner differed from the ideal ring of the live nodes.
    pub wrong_owners: usize,
    /// Wrong owners ÷ lookups.
    pub wrong_owner_rate: f64,
    /// Gets issued.
    pub gets: usize,
    /// Failed gets.
    pub failed_gets: usize,
    /// Gets that returned the newest acknowledged version (or a newer one).
    pub reads_right: usize,
    /// Gets that returned an older version.
    pub reads_stale: usize,
    /// Gets that found no record.
    pub reads_missing: usize,
    /// Gets the API answered with an error.
    pub reads_failed: usize,
    /// `reads_stale / gets`.
    pub stale_read_rate: f64,
    /// Updates acknowledged or refused.
    pub updates: usize,
    /// Updates the API refused.
    pub failed_updates: usize,
    /// Requests to nodes that were gone.
    pub unreachable: usize,
    /// Requests refused by nodes not in the ring (restarted, still rejoining); not counted
    /// as lookups or gets.
    pub refused_while_joining: usize,
    /// Failed lookups and gets by the error the node answered (digits removed, so that
    /// similar errors count together; at most [`MAX_FAILURE_KINDS`] kinds).
    pub failures_by_error: BTreeMap<String, usize>,
    /// Records acknowledged before churn.
    pub keys: usize,
    /// Records missing or wrong after churn.
    pub lost_keys: usize,
    /// The first [`MAX_LOST_LISTED`] lost records, with where their replicas were.
    pub lost: Vec<LostKey>,
    /// Whether the ring re-converged after churn within `--settle`.
    pub settled: bool,
    /// Failure-detection latency, seconds (crashes only).
    pub detection_secs: Percentiles,
    /// Crashes whose detection was measured.
    pub detections: usize,
    /// Join latency, seconds.
    pub join_secs: Percentiles,
    /// Restarts whose join was measured.
    pub joins: usize,
    /// Per-bucket figures.
    pub buckets: Vec<Bucket>,
    /// Files written.
    pub files: Vec<String>,
}

/// What a workload operation does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Lookup,
    Get,
    Update,
}

/// What a get returned, against the newest version acknowledged before it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    Right,
    Stale,
    Missing,
    Failed,
}

impl Read {
    fn name(self) -> &'static str {
        match self {
            Read::Right => "right value",
            Read::Stale => "stale value",
            Read::Missing => "missing value",
            Read::Failed => "failed",
        }
    }
}

/// The value of version `v` of record `k`.
fn value(k: usize, v: u64) -> String {
    format!("value-{k}-{v}")
}

/// Classifies what a get of record `k` returned when `newest` was the newest acknowledged
/// version: a version at least as new is right (an update may have landed meanwhile), an
/// older one stale, anything that is no version of this record wrong (counted as failed).
fn classify(got: Option<&str>, k: usize, newest: u64) -> Read {
    let Some(got) = got else {
        return Read::Missing;
    };
    let prefix = format!("value-{k}-");
    match got
        .strip_prefix(&prefix)
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(v) if v >= newest => Read::Right,
        Some(_) => Read::Stale,
        None => Read::Failed,
    }
}

#[derive(Clone)]
struct LiveNode {
    index: usize,
    client: Client,
}

struct Shared {
    live: Vec<LiveNode>,
    ring: IdealRing,
}

fn snapshot(net: &Testnet) -> Shared {
    Shared {
        live: net
            .alive()
            .into_iter()
            .map(|i| LiveNode {
                index: i,
                client: net.client(i),
            })
            .collect(),
        ring: net.ideal_ring(),
    }
}

fn unreachable(e: &ClientError) -> bool {
    matches!(e, ClientError::Unreachable { .. })
}

/// Whether the node refused because it is not (yet) in the ring: a restarted node answers
/// 503 "not joined to a ring" until its virtual nodes have rejoined. Such a request never
/// became a lookup (Chord's failed-lookup figures count lookups issued by nodes in the
/// ring), so it is counted apart, like a request to a node that is down.
fn still_joining(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status: 503, msg } if msg.contains("not joined"))
}

/// Runs churn on `net` (a process testnet), writing results into `out`.
pub fn run(
    net: &mut Testnet,
    a: &Params,
    out: &Path,
    progress: bool,
) -> Result<ChurnReport, TestnetError> {
    if !(a.rate > 0.0 && a.rate <= 10.0) {
        return Err(TestnetError::Invalid("--rate must be in (0, 10]".into()));
    }
    if a.duration == 0 || a.duration > MAX_DURATION {
        return Err(TestnetError::Invalid(format!(
            "--duration must be in 1..={MAX_DURATION}"
        )));
    }
    if !(0.0..=1.0).contains(&a.crash_fraction) {
        return Err(TestnetError::Invalid(
            "--crash-fraction must be in [0, 1]".into(),
        ));
    }
    if !(a.ops_rate > 0.0 && a.ops_rate <= 1000.0) {
        return Err(TestnetError::Invalid(
            "--ops-rate must be in (0, 1000]".into(),
        ));
    }
    if a.keys == 0 || a.keys > MAX_KEYS {
        return Err(TestnetError::Invalid(format!(
            "--keys must be in 1..={MAX_KEYS}"
        )));
    }
    let n = net.len();
    if n < 4 {
        return Err(TestnetError::Invalid(
            "churn needs a testnet of at least 4 nodes".into(),
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| TestnetError::Io {
        path: out.display().to_string(),
        msg: e.to_string(),
    })?;
    let mut rng = Rng::seed(a.seed);
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let key = |k: usize| format!("churn/{run_id}/{k}");

    // 1. Records.
    let alive0 = net.alive();
    let ring0 = net.ideal_ring();
    let replicas = peerlab_node::config::Config::default()
        .peer_config()
        .dht
        .replicas;
    let ks: Vec<usize> = (0..a.keys).collect();
    // Each record's writer: the node that puts it, and the only one that may update it.
    let writer_of = |k: usize| alive0[(k * 7919) % alive0.len()];
    let acked: Vec<usize> = par_map(&ks, |&k| {
        let i = writer_of(k);
        (0..3)
            .any(|_| net.client(i).kv_put(&key(k), &value(k, 0)).is_ok())
            .then_some(k)
    })
    .into_iter()
    .flatten()
    .collect();

    // Newest acknowledged version of each record, and the last version handed out.
    let versions: Vec<AtomicU64> = (0..a.keys).map(|_| AtomicU64::new(0)).collect();
    let next_version: Vec<AtomicU64> = (0..a.keys).map(|_| AtomicU64::new(0)).collect();

    // 2. Churn with a workload.
    let shared = Mutex::new(snapshot(net));
    let stop = AtomicBool::new(false);
    let nb = (a.duration as f64 / BUCKET.as_secs_f64()).ceil() as usize + 1;
    let buckets = Mutex::new(
        (0..nb)
            .map(|b| Bucket {
                t: b as f64 * BUCKET.as_secs_f64(),
                ..Bucket::default()
            })
            .collect::<Vec<_>>(),
    );
    let detections = Mutex::new(Vec::<f64>::new());
    let joins = Mutex::new(Vec::<f64>::new());
    let failures = Mutex::new(BTreeMap::<String, usize>::new());
    let probes = AtomicUsize::new(0);
    let (mut crashes, mut leaves, mut restarts) = (0, 0, 0);
    let t0 = Instant::now();
    let bucket_of = |t: Instant| ((t - t0).as_secs_f64() / BUCKET.as_secs_f64()) as usize;
    let bar = progress_bar(progress, a.duration, "churn");
    let max_down = (n / 5).max(1);
    let seeds: Vec<usize> = (0..n).filter(|&i| net.node(i).seed).collect();
    let min_down = Duration::from_secs(a.min_downtime);
    let mut departed: Vec<u32> = vec![0; n];
    let mut down_since: Vec<Option<Instant>> = (0..n)
        .map(|i| (!net.node(i).alive).then(|| t0.checked_sub(min_down).unwrap_or(t0)))
        .collect();
    std::thread::scope(|s| -> Result<(), TestnetError> {
        for w in 0..WORKERS {
            let (shared, stop, buckets, acked, failures) =
                (&shared, &stop, &buckets, &acked, &failures);
            let (versions, next_version, writer_of, key) =
                (&versions, &next_version, &writer_of, &key);
            let mut wr = Rng::seed(a.seed ^ (0x5151 + w as u64));
            let gap = Duration::from_secs_f64(WORKERS as f64 / a.ops_rate);
            s.spawn(move || {
                let mut next = t0 + gap.mul_f64(w as f64 / WORKERS as f64);
                let mut op = w;
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now < next {
                        std::thread::sleep((next - now).min(Duration::from_millis(100)));
                        continue;
                    }
                    next += gap;
                    op += 1;
                    let kind = if op % 2 == 0 {
                        Op::Lookup
                    } else if (op / 2) % UPDATE_EVERY == 0 {
                        Op::Update
                    } else {
                        Op::Get
                    };
                    let k = acked[wr
                        .index(acked.len().max(1))
                        .min(acked.len().saturating_sub(1))];
                    let (node, ring) = {
                        let Ok(sh) = shared.lock() else { return };
                        if sh.live.is_empty() {
                            continue;
                        }
                        let node = if kind == Op::Update {
                            // A record belongs to its writer: only it may update it.
                            match sh.live.iter().find(|l| l.index == writer_of(k)) {
                                Some(l) => l.clone(),
                                None => continue,
                            }
                        } else {
                            sh.live[wr.index(sh.live.len())].clone()
                        };
                        (node, sh.ring.clone())
                    };
                    let (mut failed, mut wrong, mut unr) = (false, false, false);
                    let mut why: Option<String> = None;
                    let mut joining = false;
                    let mut read = None;
                    match kind {
                        Op::Lookup => {
                            let lk = format!("churn-lookup/{}", wr.next_u64());
                            match node.client.lookup(&lk) {
                                Ok(r) => {
                                    wrong = key_owner(&ring, &lk).map(|o| o.id.to_hex())
                                        != Some(r.vnode);
                                }
                                Err(e) if unreachable(&e) => unr = true,
                                Err(e) if still_joining(&e) => joining = true,
                                Err(e) => {
                                    failed = true;
                                    why = Some(failure_kind(&e));
                                }
                            }
                        }
                        Op::Update => {
                            let v = next_version[k].fetch_add(1, Ordering::Relaxed) + 1;
                            match node.client.kv_put(&key(k), &value(k, v)) {
                                Ok(_) => {
                                    versions[k].fetch_max(v, Ordering::Relaxed);
                                }
                                Err(e) if unreachable(&e) => unr = true,
                                Err(e) if still_joining(&e) => joining = true,
                                Err(e) => {
                                    failed = true;
                                    why = Some(format!("put: {}", failure_kind(&e)));
                                }
                            }
                        }
                        Op::Get => {
                            let newest = versions[k].load(Ordering::Relaxed);
                            match node.client.kv_get(&key(k)) {
                                Ok(v) => {
                                    let r = classify(v.value.as_deref(), k, newest);
                                    if r != Read::Right {
                                        why = Some(format!("get: {}", r.name()));
                                    }
                                    read = Some(r);
                                }
                                Err(e) if unreachable(&e) => unr = true,
                                Err(e) if still_joining(&e) => joining = true,
                                Err(e) => {
                                    read = Some(Read::Failed);
                                    why = Some(format!("get: {}", failure_kind(&e)));
                                }
                            }
                        }
                    }
                    if let Some(w) = why
                        && let Ok(mut f) = failures.lock()
                    {
                        let n = f.len();
                        let k = if f.contains_key(&w) || n < MAX_FAILURE_KINDS {
                            w
                        } else {
                            "other".into()
                        };
                        *f.entry(k).or_insert(0) += 1;
                    }
                    let b = bucket_of(Instant::now());
                    if let Ok(mut bs) = buckets.lock()
                        && let Some(bk) = bs.get_mut(b)
                    {
                        if unr {
                            bk.unreachable += 1;
                        } else if joining {
                            bk.joining += 1;
                        } else {
                            match kind {
                                Op::Lookup => {
                                    bk.lookups += 1;
                                    bk.failed_lookups += usize::from(failed);
                                    bk.wrong_owner += usize::from(wrong);
                                }
                                Op::Update => {
                                    bk.updates += 1;
                                    bk.failed_updates += usize::from(failed);
                                }
                                Op::Get => {
                                    bk.gets += 1;
                                    match read {
                                        Some(Read::Right) | None => {}
                                        Some(Read::Stale) => bk.stale_gets += 1,
                                        Some(Read::Missing) => bk.missing_gets += 1,
                                        Some(Read::Failed) => bk.errored_gets += 1,
                                    }
                                    bk.failed_gets += usize::from(read != Some(Read::Right));
                                }
                            }
                        }
                    }
                }
            });
        }
        // The churn schedule: two Poisson processes.
        let end = t0 + Duration::from_secs(a.duration);
        let mean_gap = 1.0 / a.rate;
        let mut next_down = t0 + Duration::from_secs_f64(rng.exp(mean_gap));
        let mut next_up = t0 + Duration::from_secs_f64(rng.exp(mean_gap));
        loop {
            let now = Instant::now();
            bar.set_position((now - t0).as_secs().min(a.duration));
            if now >= end {
                break;
            }
            let b = bucket_of(now);
            if now >= next_down {
                next_down += Duration::from_secs_f64(rng.exp(mean_gap));
                let alive = net.alive();
                let cands: Vec<usize> = alive
                    .iter()
                    .copied()
                    .filter(|i| !seeds.contains(i))
                    .collect();
                if n - alive.len() < max_down && !cands.is_empty() {
                    let v = cands[rng.index(cands.len())];
                    let crash = rng.chance(a.crash_fraction);
                    let victim_peer = net.node(v).peer_id.clone();
                    if crash {
                        net.kill(v);
                        crashes += 1;
                    } else {
                        net.stop(v);
                        leaves += 1;
                    }
                    let t_dead = Instant::now();
                    down_since[v] = Some(t_dead);
                    departed[v] += 1;
                    let snap = snapshot(net);
                    let observers: Vec<Client> = rng
                        .sample_indices(snap.live.len(), OBSERVERS.min(snap.live.len()))
                        .into_iter()
                        .map(|j| snap.live[j].client.clone())
                        .collect();
                    if let Ok(mut sh) = shared.lock() {
                        *sh = snap;
                    }
                    if let Ok(mut bs) = buckets.lock()
                        && let Some(bk) = bs.get_mut(b)
                    {
                        bk.departures += 1;
                    }
                    if crash && probes.load(Ordering::Relaxed) < MAX_PROBES {
                        probes.fetch_add(1, Ordering::Relaxed);
                        let (detections, probes) = (&detections, &probes);
                        let victim = net.client(v);
                        s.spawn(move || {
                            let seen_down = |c: &Client| {
                                c.members().is_ok_and(|ms| {
                                    !ms.iter().any(|m| {
                                        m.peer_id == victim_peer
                                            && (m.state == "alive" || m.state == "suspect")
                                    })
                                })
                            };
                            while t_dead.elapsed() < PROBE_DEADLINE {
                                // Back before the overlay declared it dead (an orchestrator
                                // restarted it): no detection to time.
                                if victim.status().is_ok() {
                                    break;
                                }
                                if observers.iter().all(seen_down) {
                                    if let Ok(mut d) = detections.lock() {
                                        d.push(t_dead.elapsed().as_secs_f64());
                                    }
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(200));
                            }
                            probes.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                }
                continue;
            }
            if now >= next_up {
                next_up += Duration::from_secs_f64(rng.exp(mean_gap));
                let dead: Vec<usize> = (0..n)
                    .filter(|&i| !net.node(i).alive)
                    .filter(|&i| down_since[i].is_some_and(|d| d.elapsed() >= min_down))
                    .collect();
                if !dead.is_empty() {
                    let v = dead[rng.index(dead.len())];
                    let t_spawn = Instant::now();
                    net.restart(v)?;
                    down_since[v] = None;
                    restarts += 1;
                    let snap = snapshot(net);
                    let me = snap.live.iter().find(|l| l.index == v).cloned();
                    if let Ok(mut sh) = shared.lock() {
                        *sh = snap;
                    }
                    if let Ok(mut bs) = buckets.lock()
                        && let Some(bk) = bs.get_mut(b)
                    {
                        bk.restarts += 1;
                    }
                    if let Some(me) = me
                        && probes.load(Ordering::Relaxed) < MAX_PROBES
                    {
                        probes.fetch_add(1, Ordering::Relaxed);
                        let (joins, probes, shared) = (&joins, &probes, &shared);
                        s.spawn(move || {
                            while t_spawn.elapsed() < PROBE_DEADLINE {
                                let ring = shared
                                    .lock()
                                    .map(|s| s.ring.clone())
                                    .unwrap_or_else(|_| IdealRing::new(Vec::new()));
                                if me.client.ring().is_ok_and(|v| view_is_ideal(&ring, &v)) {
                                    if let Ok(mut j) = joins.lock() {
                                        j.push(t_spawn.elapsed().as_secs_f64());
                                    }
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(200));
                            }
                            probes.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                }
                continue;
            }
            if let Ok(mut bs) = buckets.lock()
                && let Some(bk) = bs.get_mut(b)
            {
                bk.alive = net.alive().len();
            }
            let wake = next_down.min(next_up).min(end);
            std::thread::sleep(
                wake.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200)),
            );
        }
        stop.store(true, Ordering::Relaxed);
        Ok(())
    })?;
    bar.finish_and_clear();

    // 3. Settle, then count lost keys. Nodes on other hosts that churn crashed come back by
    // themselves (their orchestrator restarts them), so the ring to settle on has them all:
    // wait for each to answer again first.
    if net.manifest().mode == crate::process::Mode::Remote {
        let down: Vec<usize> = (0..n).filter(|&i| !net.node(i).alive).collect();
        for i in down {
            net.restart(i)?;
        }
    }
    let settled = net
        .wait_converged(Duration::from_secs(a.settle), progress)
        .is_ok();
    let alive = net.alive();
    let missing = par_map(&acked, |&k| {
        let i = alive[(k * 31) % alive.len()];
        let c = net.client(i);
        let newest = versions[k].load(Ordering::Relaxed);
        !(0..3).any(|_| {
            c.kv_get(&key(k))
                .is_ok_and(|v| classify(v.value.as_deref(), k, newest) == Read::Right)
        })
    });
    // Where each lost record's replicas were when it was written, and what befell them.
    let index_of: BTreeMap<PeerId, usize> = (0..n)
        .filter_map(|i| Some((core_peer_id(&net.node(i).peer_id)?, i)))
        .collect();
    let lost_total = missing.iter().filter(|m| **m).count();
    let lost: Vec<LostKey> = acked
        .iter()
        .zip(&missing)
        .filter(|(_, m)| **m)
        .take(MAX_LOST_LISTED)
        .map(|(&k, _)| {
            let replicas = ring0
                .replica_peers(&Id::hash(key(k).as_bytes()), replicas)
                .iter()
                .filter_map(|p| index_of.get(p).copied())
                .map(|i| ReplicaFate {
                    node: i,
                    departures: departed[i],
                    alive_at_end: net.node(i).alive,
                })
                .collect();
            LostKey {
                key: key(k),
                replicas,
            }
        })
        .collect();

    let buckets = buckets.into_inner().unwrap_or_default();
    let sum = |f: &dyn Fn(&Bucket) -> usize| buckets.iter().map(f).sum::<usize>();
    let lookups = sum(&|b| b.lookups);
    let failed_lookups = sum(&|b| b.failed_lookups);
    let wrong_owners = sum(&|b| b.wrong_owner);
    let gets = sum(&|b| b.gets);
    let reads_stale = sum(&|b| b.stale_gets);
    let det = detections.into_inner().unwrap_or_default();
    let jn = joins.into_inner().unwrap_or_default();
    let files = write_outputs(&buckets, out);
    Ok(ChurnReport {
        nodes: n,
        rate: a.rate,
        duration: a.duration,
        crash_fraction: a.crash_fraction,
        replicas,
        crashes,
        leaves,
        restarts,
        lookups,
        failed_lookups,
        failed_lookup_rate: failed_lookups as f64 / lookups.max(1) as f64,
        wrong_owners,
        wrong_owner_rate: wrong_owners as f64 / lookups.max(1) as f64,
        gets,
        failed_gets: sum(&|b| b.failed_gets),
        reads_right: gets - sum(&|b| b.failed_gets),
        reads_stale,
        reads_missing: sum(&|b| b.missing_gets),
        reads_failed: sum(&|b| b.errored_gets),
        stale_read_rate: reads_stale as f64 / gets.max(1) as f64,
        updates: sum(&|b| b.updates),
        failed_updates: sum(&|b| b.failed_updates),
        unreachable: sum(&|b| b.unreachable),
        refused_while_joining: sum(&|b| b.joining),
        failures_by_error: failures.into_inner().unwrap_or_default(),
        keys: acked.len(),
        lost_keys: lost_total,
        lost,
        settled,
        detection_secs: Percentiles::of(&det),
        detections: det.len(),
        join_secs: Percentiles::of(&jn),
        joins: jn.len(),
        buckets,
        files,
    })
}

fn write_outputs(buckets: &[Bucket], out: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let csv_path = out.join("churn.csv");
    let mut csv = String::from(
        "t,lookups,failed_lookups,wrong_owner,gets,failed_gets,stale_gets,missing_gets,errored_gets,updates,failed_updates,unreachable,joining,alive,departures,restarts\n",
    );
    for b in buckets {
        csv += &format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            b.t,
            b.lookups,
            b.failed_lookups,
            b.wrong_owner,
            b.gets,
            b.failed_gets,
            b.stale_gets,
            b.missing_gets,
            b.errored_gets,
            b.updates,
            b.failed_updates,
            b.unreachable,
            b.joining,
            b.alive,
            b.departures,
            b.restarts
        );
    }
    if std::fs::write(&csv_path, csv).is_ok() {
        files.push(csv_path.display().to_string());
    }
    let pct = |f: &dyn Fn(&Bucket) -> (usize, usize)| -> Vec<(f64, f64)> {
        buckets
            .iter()
            .map(|b| {
                let (x, of) = f(b);
                (
                    b.t,
                    if of == 0 {
                        0.0
                    } else {
                        100.0 * x as f64 / of as f64
                    },
                )
            })
            .collect()
    };
    let series = [
        Series {
            label: "failed lookups %".into(),
            points: pct(&|b| (b.failed_lookups, b.lookups)),
        },
        Series {
            label: "wrong owner %".into(),
            points: pct(&|b| (b.wrong_owner, b.lookups)),
        },
        Series {
            label: "failed gets %".into(),
            points: pct(&|b| (b.failed_gets, b.gets)),
        },
        Series {
            label: "stale gets %".into(),
            points: pct(&|b| (b.stale_gets, b.gets)),
        },
    ];
    match plot::line_chart(
        &out.join("churn"),
        "churn: failures per 10 s bucket",
        "seconds since churn began",
        "percent of requests",
        &series,
    ) {
        Ok(f) => files.extend(f.iter().map(|p| p.display().to_string())),
        Err(e) => tracing::warn!(%e, "cannot draw the churn plot"),
    }
    let nodes = [Series {
        label: "live nodes".into(),
        points: buckets.iter().map(|b| (b.t, b.alive as f64)).collect(),
    }];
    if let Ok(f) = plot::line_chart(
        &out.join("churn_nodes"),
        "churn: live nodes",
        "seconds since churn began",
        "nodes",
        &nodes,
    ) {
        files.extend(f.iter().map(|p| p.display().to_string()));
    }
    files
}

impl ChurnReport {
    /// A short table.
    pub fn render_table(&self) -> String {
        let mut s = String::new();
        s += &format!(
            "nodes {} · rate {}/s for {} s · crash fraction {} · R = {}\n",
            self.nodes, self.rate, self.duration, self.crash_fraction, self.replicas
        );
        s += &format!(
            "events              {} crashes, {} leaves, {} restarts\n",
            self.crashes, self.leaves, self.restarts
        );
        s += &format!(
            "lookups             {} · failed {} ({:.2} %) · wrong owner {} ({:.2} %)\n",
            self.lookups,
            self.failed_lookups,
            100.0 * self.failed_lookup_rate,
            self.wrong_owners,
            100.0 * self.wrong_owner_rate
        );
        s += &format!(
            "gets                {} · right {} · stale {} ({:.3} %) · missing {} · failed {}\n",
            self.gets,
            self.reads_right,
            self.reads_stale,
            100.0 * self.stale_read_rate,
            self.reads_missing,
            self.reads_failed
        );
        s += &format!(
            "updates             {} · refused {} · unreachable requests {}\n",
            self.updates, self.failed_updates, self.unreachable
        );
        s += &format!(
            "refused             {} requests to restarted nodes not yet back in the ring\n",
            self.refused_while_joining
        );
        for (why, n) in &self.failures_by_error {
            s += &format!("  failed ×{n:<5} {why}\n");
        }
        s += &format!(
            "keys                {} put · {} lost (ring re-converged: {})\n",
            self.keys,
            self.lost_keys,
            if self.settled { "yes" } else { "no" }
        );
        for l in &self.lost {
            let fates: Vec<String> = l
                .replicas
                .iter()
                .map(|r| {
                    format!(
                        "node {} ({} departures, {})",
                        r.node,
                        r.departures,
                        if r.alive_at_end { "up" } else { "down" }
                    )
                })
                .collect();
            s += &format!("  lost {}: replicas {}\n", l.key, fates.join(", "));
        }
        s += &format!(
            "failure detection   {} measured · mean {:.2} s · p90 {:.2} s · max {:.2} s\n",
            self.detections,
            self.detection_secs.mean,
            self.detection_secs.p90,
            self.detection_secs.max
        );
        s += &format!(
            "join                {} measured · mean {:.2} s · p90 {:.2} s · max {:.2} s\n",
            self.joins, self.join_secs.mean, self.join_secs.p90, self.join_secs.max
        );
        for f in &self.files {
            s += &format!("wrote {f}\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_judged_against_the_newest_acknowledged_version() {
        assert_eq!(classify(Some("value-7-3"), 7, 3), Read::Right);
        // An update acknowledged after the get was sent may already be visible.
        assert_eq!(classify(Some("value-7-4"), 7, 3), Read::Right);
        assert_eq!(classify(Some("value-7-2"), 7, 3), Read::Stale);
        assert_eq!(classify(None, 7, 0), Read::Missing);
        // Another record's value, or no version at all, is wrong: a failure.
        assert_eq!(classify(Some("value-8-3"), 7, 3), Read::Failed);
        assert_eq!(classify(Some("value-7-"), 7, 0), Read::Failed);
        assert_eq!(classify(Some("value-77-3"), 7, 0), Read::Failed);
        assert_eq!(value(7, 3), "value-7-3");
    }
}
