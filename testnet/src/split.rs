//! `testnet split`: a partition between emulated hosts and its heal, on a running testnet.
//!
//! 1. The testnet must be converged. `keys` records are written at random nodes and read
//!    back (the *before* keys).
//! 2. The hosts are cut into the groups of `--groups` (nftables on the bridge, silent
//!    drops). The controller polls every node's membership until each side lists exactly
//!    its own nodes as alive (*sides split*) or half the partition has passed.
//! 3. On each side `keys` records are written at that side's nodes (the *during* keys),
//!    and `conflicts` keys are written on both sides with different values.
//! 4. When `seconds` have passed since the cut, the partition is removed (*heal*).
//! 5. *Whole again*: the time from the heal until every node's ring view is the ideal ring
//!    of all nodes and every node lists every other as alive ([`Testnet::health`]).
//! 6. Every acknowledged key is read at a node of the other side (a before key at a random
//!    node) until it returns the value written, and every conflicting key at two nodes of
//!    each side until all four agree on one of the two values, up to `heal_timeout`
//!    seconds after the heal. A key still unreadable then is *lost*; a conflicting key
//!    still read differently is *unreconciled*.
//!
//! Only acknowledged writes count: a put that failed was never promised. Which value a
//! conflicting key ends with is the DHT's rule (the owner's record wins, see
//! `peerlab_dht::record`), reported per side.

#![allow(clippy::disallowed_methods)] // a driver: wall-clock time is its job

use std::time::{Duration, Instant};

use clap::Args;
use peerlab_overlay::Rng;
use serde::Serialize;

use crate::cmd::{DirArg, render_groups};
use crate::process::{Testnet, TestnetError, par_map, parse_groups};

/// Pause between two polls of membership or of the keys: short against the seconds the
/// protocols take (failure detection, repair), long enough that the controller's API
/// calls do not load the machine it measures.
pub const POLL_PERIOD: Duration = Duration::from_millis(500);
/// Longest wait for the testnet to be converged before the partition.
pub const READY_DEADLINE: Duration = Duration::from_secs(120);
/// Nodes of each side a conflicting key is read at.
pub const CONFLICT_READERS_PER_SIDE: usize = 2;

/// `peerlab testnet split`.
#[derive(Debug, Clone, Args)]
pub struct Params {
    /// The testnet dir.
    #[command(flatten)]
    pub dir: DirArg,
    /// The two groups of hosts, separated by '/'.
    #[arg(long, default_value = "1-3/4-6")]
    pub groups: String,
    /// Seconds the partition lasts.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Keys written before the partition, and on each side during it.
    #[arg(long, default_value_t = 100)]
    pub keys: usize,
    /// Keys written on both sides during the partition, with different values.
    #[arg(long, default_value_t = 20)]
    pub conflicts: usize,
    /// Seconds after the heal within which the testnet must be whole and every key
    /// readable.
    #[arg(long, default_value_t = 300)]
    pub heal_timeout: u64,
    /// Seed of the nodes written at and read from.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Writes and reads of one class of keys.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KeyCount {
    /// Puts issued.
    pub written: usize,
    /// Puts acknowledged.
    pub acked: usize,
    /// Acknowledged keys that did not read back the value written by the deadline.
    pub lost: usize,
}

/// What `testnet split` measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SplitReport {
    /// Nodes.
    pub nodes: usize,
    /// Emulated hosts.
    pub hosts: usize,
    /// The groups, e.g. `1,2,3 / 4,5,6`.
    pub groups: String,
    /// Nodes on each side.
    pub side_nodes: Vec<usize>,
    /// Seconds the partition lasted.
    pub partition_seconds: f64,
    /// Seconds from the cut until every node listed exactly its side as alive (`None`:
    /// not within half the partition).
    pub sides_split_seconds: Option<f64>,
    /// Keys written before the partition.
    pub before: KeyCount,
    /// Keys written on each side during the partition.
    pub during: Vec<KeyCount>,
    /// Keys written on both sides.
    pub conflicts: KeyCount,
    /// Conflicting keys every reader agreed on by the deadline.
    pub conflicts_reconciled: usize,
    /// Reconciled conflicting keys that ended with each side's value.
    pub conflicts_won: Vec<usize>,
    /// Seconds from the heal until ring and membership were whole (`None`: not by the
    /// deadline).
    pub whole_seconds: Option<f64>,
    /// Seconds from the heal until every acknowledged key read back and every conflict
    /// was reconciled (`None`: not by the deadline).
    pub keys_seconds: Option<f64>,
    /// Keys lost or unreconciled at the deadline because a reader answered with an error
    /// (a request that failed, not a missing or different value).
    pub unread_by_error: usize,
    /// Nodes with the ideal ring view at the end.
    pub ring_correct: usize,
    /// Nodes with complete membership at the end.
    pub membership_complete: usize,
}

impl SplitReport {
    /// Keys lost in total.
    pub fn lost(&self) -> usize {
        self.before.lost + self.during.iter().map(|k| k.lost).sum::<usize>() + self.conflicts.lost
    }

    /// A human-readable table.
    pub fn render_table(&self) -> String {
        let secs = |s: Option<f64>| s.map_or("not reached".into(), |s| format!("{s:.1} s"));
        let mut t = format!(
            "partition {} of {} nodes on {} hosts ({} nodes per side) for {:.0} s\n",
            self.groups,
            self.nodes,
            self.hosts,
            self.side_nodes
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" + "),
            self.partition_seconds
        );
        t.push_str(&format!(
            "sides split (membership)   {}\n",
            secs(self.sides_split_seconds)
        ));
        t.push_str(&format!(
            "whole again after heal     {}  (ring correct {}/{n}, membership complete {}/{n})\n",
            secs(self.whole_seconds),
            self.ring_correct,
            self.membership_complete,
            n = self.nodes
        ));
        t.push_str(&format!(
            "all keys read back after   {}\n",
            secs(self.keys_seconds)
        ));
        let row = |name: &str, k: &KeyCount| {
            format!(
                "{name:<26} written {:>4}  acked {:>4}  lost {:>3}\n",
                k.written, k.acked, k.lost
            )
        };
        t.push_str(&row("keys before", &self.before));
        for (i, k) in self.during.iter().enumerate() {
            t.push_str(&row(&format!("keys during, side {}", i + 1), k));
        }
        t.push_str(&row("conflicting keys", &self.conflicts));
        t.push_str(&format!(
            "not read back by an error  {} (a reader's request failed)\n",
            self.unread_by_error
        ));
        t.push_str(&format!(
            "conflicts reconciled       {}/{} (values kept per side: {})\n",
            self.conflicts_reconciled,
            self.conflicts.acked,
            self.conflicts_won
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" / ")
        ));
        t
    }
}

/// One acknowledged key and who reads it after the heal.
struct Check {
    key: String,
    /// The value that must be read; `None` for a conflict (any one value, agreed by all).
    value: Option<String>,
    readers: Vec<usize>,
    /// Values of a conflict per side (`a`, `b`).
    sides: Option<(String, String)>,
    done: bool,
    /// The value read when `done`.
    read: Option<String>,
    /// Whether a reader answered with an error in the last round (rather than a value).
    read_error: bool,
    /// Index of the class in the report: 0 before, 1.. during per side, usize::MAX conflict.
    class: usize,
}

/// Runs the experiment on the running testnet `net` (which must run on emulated hosts).
pub fn run(net: &mut Testnet, p: &Params, progress: bool) -> Result<SplitReport, TestnetError> {
    let hosts = net.hosts().cloned().ok_or_else(|| {
        TestnetError::Invalid(format!(
            "the testnet in {} runs on 127.0.0.1: `testnet split` needs `testnet up --hosts H`",
            net.dir().display()
        ))
    })?;
    let groups = parse_groups(&p.groups, hosts.count)?;
    if groups.len() != 2 {
        return Err(TestnetError::Invalid(
            "`testnet split` cuts the hosts into exactly two groups, e.g. 1-3/4-6".into(),
        ));
    }
    if !hosts.faults.partition.is_empty() {
        return Err(TestnetError::Invalid(
            "the hosts are partitioned already: `peerlab testnet heal` first".into(),
        ));
    }
    let alive = net.alive();
    let side_of = |i: usize| {
        let h = hosts.host_of(i);
        groups.iter().position(|g| g.contains(&h))
    };
    let sides: Vec<Vec<usize>> = (0..2)
        .map(|s| {
            alive
                .iter()
                .copied()
                .filter(|&i| side_of(i) == Some(s))
                .collect()
        })
        .collect();
    if sides.iter().any(Vec::is_empty) {
        return Err(TestnetError::Invalid(format!(
            "groups {}: a side without a running node",
            p.groups
        )));
    }
    let mut rng = Rng::seed(p.seed);
    let mut report = SplitReport {
        nodes: alive.len(),
        hosts: hosts.count,
        groups: render_groups(&groups),
        side_nodes: sides.iter().map(Vec::len).collect(),
        during: vec![KeyCount::default(); 2],
        conflicts_won: vec![0; 2],
        ..SplitReport::default()
    };
    net.wait_converged(READY_DEADLINE, progress)?;

    // Before: written anywhere, read back anywhere.
    let pick = |rng: &mut Rng, from: &[usize]| from[rng.index(from.len())];
    let mut checks: Vec<Check> = Vec::new();
    let writes: Vec<(usize, String, String)> = (0..p.keys)
        .map(|k| {
            (
                pick(&mut rng, &alive),
                format!("split-{}-before-{k}", p.seed),
                format!("b{k}"),
            )
        })
        .collect();
    let acked = put_all(net, &writes);
    report.before.written = writes.len();
    for ((_, key, value), ok) in writes.into_iter().zip(acked) {
        if ok {
            report.before.acked += 1;
            checks.push(Check {
                key,
                value: Some(value),
                readers: vec![pick(&mut rng, &alive)],
                sides: None,
                done: false,
                read: None,
                read_error: false,
                class: 0,
            });
        }
    }

    // The cut.
    let mut faults = hosts.faults.clone();
    faults.partition = groups.clone();
    net.set_faults(faults.clone())?;
    let cut = Instant::now();
    let partition = Duration::from_secs(p.seconds);
    let result = during_partition(net, p, &sides, &mut rng, &mut report, &mut checks, cut);
    // Whatever happened, the partition ends: a testnet left cut would fail everything
    // run on it next.
    let rest = partition.saturating_sub(cut.elapsed());
    if result.is_ok() {
        std::thread::sleep(rest);
    }
    faults.partition.clear();
    net.set_faults(faults)?;
    result?;
    let heal = Instant::now();
    report.partition_seconds = heal.duration_since(cut).as_secs_f64();
    let deadline = heal + Duration::from_secs(p.heal_timeout);

    // Whole again, and the keys back, polled side by side until the deadline.
    loop {
        if report.whole_seconds.is_none() {
            let h = net.health();
            report.ring_correct = h.ring_correct;
            report.membership_complete = h.membership_complete;
            if h.converged() {
                report.whole_seconds = Some(heal.elapsed().as_secs_f64());
            }
        }
        if report.keys_seconds.is_none() && read_round(net, &mut checks) {
            report.keys_seconds = Some(heal.elapsed().as_secs_f64());
        }
        if (report.whole_seconds.is_some() && report.keys_seconds.is_some())
            || Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(POLL_PERIOD);
    }
    if report.whole_seconds.is_some() {
        let h = net.health();
        report.ring_correct = h.ring_correct;
        report.membership_complete = h.membership_complete;
    }
    for c in &checks {
        report.unread_by_error += usize::from(!c.done && c.read_error);
        match c.class {
            usize::MAX => {
                if c.done {
                    report.conflicts_reconciled += 1;
                    if let (Some(r), Some((a, b))) = (&c.read, &c.sides)
                        && let Some(w) = winner(r, a, b)
                    {
                        report.conflicts_won[w] += 1;
                    }
                } else {
                    report.conflicts.lost += 1;
                }
            }
            0 => report.before.lost += usize::from(!c.done),
            s => report.during[s - 1].lost += usize::from(!c.done),
        }
    }
    Ok(report)
}

/// Steps 2 and 3: waits for the sides to split (or half the partition), then writes on
/// each side.
fn during_partition(
    net: &Testnet,
    p: &Params,
    sides: &[Vec<usize>],
    rng: &mut Rng,
    report: &mut SplitReport,
    checks: &mut Vec<Check>,
    cut: Instant,
) -> Result<(), TestnetError> {
    let half = Duration::from_secs(p.seconds) / 2;
    let members: Vec<(usize, usize)> = sides
        .iter()
        .flat_map(|s| s.iter().map(move |&i| (i, s.len() - 1)))
        .collect();
    while cut.elapsed() < half {
        let split = par_map(&members, |&(i, want)| {
            net.client(i)
                .status()
                .is_ok_and(|s| s.members_alive == want)
        });
        if split.iter().all(|&s| s) {
            report.sides_split_seconds = Some(cut.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(POLL_PERIOD);
    }
    let pick = |rng: &mut Rng, from: &[usize]| from[rng.index(from.len())];
    for (s, side) in sides.iter().enumerate() {
        let other = &sides[1 - s];
        let writes: Vec<(usize, String, String)> = (0..p.keys)
            .map(|k| {
                (
                    pick(rng, side),
                    format!("split-{}-side{}-{k}", p.seed, s + 1),
                    format!("s{}-{k}", s + 1),
                )
            })
            .collect();
        let acked = put_all(net, &writes);
        report.during[s].written = writes.len();
        for ((_, key, value), ok) in writes.into_iter().zip(acked) {
            if ok {
                report.during[s].acked += 1;
                checks.push(Check {
                    key,
                    value: Some(value),
                    readers: vec![pick(rng, other)],
                    sides: None,
                    done: false,
                    read: None,
                    read_error: false,
                    class: s + 1,
                });
            }
        }
    }
    for k in 0..p.conflicts {
        let key = format!("split-{}-both-{k}", p.seed);
        let (a, b) = (format!("a{k}"), format!("b{k}"));
        let writes = vec![
            (pick(rng, &sides[0]), key.clone(), a.clone()),
            (pick(rng, &sides[1]), key.clone(), b.clone()),
        ];
        let acked = put_all(net, &writes);
        report.conflicts.written += 1;
        if acked.iter().all(|&ok| ok) {
            report.conflicts.acked += 1;
            let mut readers = Vec::new();
            for side in sides {
                for _ in 0..CONFLICT_READERS_PER_SIDE {
                    readers.push(pick(rng, side));
                }
            }
            checks.push(Check {
                key,
                value: None,
                readers,
                sides: Some((a, b)),
                done: false,
                read: None,
                read_error: false,
                class: usize::MAX,
            });
        }
    }
    Ok(())
}

/// Puts every `(node, key, value)`; whether each was acknowledged.
fn put_all(net: &Testnet, writes: &[(usize, String, String)]) -> Vec<bool> {
    par_map(writes, |(i, k, v)| net.client(*i).kv_put(k, v).is_ok())
}

/// Reads every key not yet confirmed; true when all are.
fn read_round(net: &Testnet, checks: &mut [Check]) -> bool {
    let open: Vec<usize> = (0..checks.len()).filter(|&c| !checks[c].done).collect();
    let results = par_map(&open, |&c| {
        let ch = &checks[c];
        let answers: Vec<Option<Option<String>>> = ch
            .readers
            .iter()
            .map(|&r| net.client(r).kv_get(&ch.key).ok().map(|v| v.value))
            .collect();
        let read_error = answers.iter().any(Option::is_none);
        let values: Vec<Option<String>> = answers.into_iter().map(Option::flatten).collect();
        let first = values.first().cloned().flatten();
        let agreed = values.iter().all(|v| *v == first);
        let ok = match (&ch.value, &ch.sides) {
            (Some(want), _) => first.as_ref() == Some(want) && agreed,
            (None, Some((a, b))) => {
                agreed && first.as_ref().is_some_and(|f| winner(f, a, b).is_some())
            }
            (None, None) => false,
        };
        (ok, first, read_error)
    });
    for (&c, (ok, read, read_error)) in open.iter().zip(results) {
        checks[c].done = ok;
        checks[c].read = read;
        checks[c].read_error = read_error;
    }
    checks.iter().all(|c| c.done)
}

/// Which side's value a reconciled conflict kept: 0 for `a`, 1 for `b`.
fn winner(read: &str, a: &str, b: &str) -> Option<usize> {
    if read == a {
        Some(0)
    } else if read == b {
        Some(1)
    } else {
        None
    }
}
