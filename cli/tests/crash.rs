//! Crash recovery with real processes: `peerlab node` is SIGKILLed (no flush, no clean
//! close of its database) at random points while clients write to it, restarted from its
//! data dir, and every write it acknowledged must be there.

// The kill points and the seed come from the wall clock (real processes, not a core).
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Proc, eventually};

/// Kill-and-restart rounds per run.
const ROUNDS: usize = 4;
/// How long after the first acknowledged put of a round the kill may come (uniform).
const KILL_WINDOW_MS: u64 = 1500;

/// A small deterministic generator for the kill points (the seed is printed, so that a
/// failing run can be repeated with `PEERLAB_CRASH_SEED`).
struct XorShift(u64);

impl XorShift {
    /// Seeded from `PEERLAB_CRASH_SEED`, or from the clock (the seed is printed).
    fn seeded() -> XorShift {
        let seed = std::env::var("PEERLAB_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("PEERLAB_CRASH_SEED={seed}");
        XorShift(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Clients put `k<round>-<i>` in a loop; the node is SIGKILLed at a random point while
/// they do, then restarted: every put that returned success is read back.
#[test]
fn every_acknowledged_put_survives_sigkill() {
    let mut rng = XorShift::seeded();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("n");
    let port = common::free_port();
    let mut acked_total: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let mut node = Proc::start(&dir, port, None, &[]);
        // Everything acknowledged before this crash (and the ones before) is readable.
        for key in &acked_total {
            assert_eq!(
                node.get(key).as_deref(),
                Some(key.as_str()),
                "round {round}: acknowledged {key} lost (seed printed above)"
            );
        }
        // A lone node creates its ring shortly after start.
        assert!(
            eventually(Duration::from_secs(20), || node.put("ready", "1")),
            "round {round}: the node never accepted a put"
        );
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (acked, stop, dir) = (acked.clone(), stop.clone(), dir.clone());
                std::thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("k{round}-{w}-{i}");
                        let o = common::cli(&dir, &["put", &key, &key]);
                        if o.status.success() {
                            acked.lock().unwrap().push(key);
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        // The kill point: a random moment of the put loop (not a wait for anything).
        std::thread::sleep(Duration::from_millis(rng.below(KILL_WINDOW_MS)));
        node.crash();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        let acked = acked.lock().unwrap().clone();
        eprintln!(
            "round {round}: {} puts acknowledged before SIGKILL",
            acked.len()
        );
        acked_total.extend(acked);
    }
    let node = Proc::start(&dir, port, None, &[]);
    for key in &acked_total {
        assert_eq!(
            node.get(key).as_deref(),
            Some(key.as_str()),
            "acknowledged {key} lost (seed printed above)"
        );
    }
}

/// Bytes of the file fetched across a crash: large enough that the fetch is under way
/// when the fetching node is killed.
const FETCH_BYTES: usize = 48 << 20;

/// `peerlab fetch CID -o out --detach`; the fetching node is SIGKILLed mid-transfer and
/// restarted, and nobody watches: the node resumes the transfer by itself and `out`
/// appears, byte-identical. `-o` onto an existing file is refused without `--force`.
#[test]
fn a_fetch_killed_mid_transfer_finishes_unwatched_after_restart() {
    let root = tempfile::tempdir().unwrap();
    let (a, mut b) = common::started_pair(root.path());
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let data: Vec<u8> = (0..FETCH_BYTES / 8)
        .flat_map(|_| rng.below(u64::MAX).to_le_bytes())
        .collect();
    let file = root.path().join("shared.bin");
    std::fs::write(&file, &data).unwrap();
    let o = a.cli(&["share", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let cid = common::stdout(&o).trim().to_string();

    let taken = root.path().join("taken.bin");
    std::fs::write(&taken, b"keep me").unwrap();
    let o = b.cli(&["fetch", &cid, "-o", taken.to_str().unwrap(), "--detach"]);
    assert!(!o.status.success(), "an existing output is refused");
    assert!(
        common::stderr(&o).contains("--force"),
        "{}",
        common::stderr(&o)
    );
    assert_eq!(std::fs::read(&taken).unwrap(), b"keep me");

    let out = root.path().join("out.bin");
    // The provider record may take a moment to be found.
    assert!(
        eventually(Duration::from_secs(30), || b
            .cli(&["fetch", &cid, "-o", out.to_str().unwrap(), "--detach"])
            .status
            .success()),
        "the fetch never started"
    );
    // Kill B once part of the file has arrived.
    let (api, token) = (
        std::fs::read_to_string(b.dir.join("api.addr")).unwrap(),
        std::fs::read_to_string(b.dir.join("api.token")).unwrap(),
    );
    let client = peerlab_node::client::Client::new(api.trim(), token.trim());
    let started = eventually(Duration::from_secs(60), || {
        client
            .fetch_progress(&cid)
            .is_ok_and(|p| p.have > 0 || p.done)
    });
    assert!(started, "no chunk arrived");
    let before = client.fetch_progress(&cid).unwrap();
    b.crash();
    eprintln!("killed at {}/{} chunks", before.have, before.total);
    let (dir, port) = (b.dir.clone(), b.port);
    let b = Proc::start(&dir, port, Some(&a.addr()), &[]);
    let written = eventually(Duration::from_secs(120), || {
        std::fs::read(&out).is_ok_and(|got| got == data)
    });
    let api = std::fs::read_to_string(b.dir.join("api.addr")).unwrap();
    let client = peerlab_node::client::Client::new(api.trim(), token.trim());
    assert!(
        written,
        "the output never appeared byte-identical after the restart: {:?}\n\
         B's log:\n{}\nA's status: {}\nA's log:\n{}",
        client.fetch_progress(&cid),
        b.log_tail(),
        common::stdout(&a.cli(&["status"])),
        a.log_tail()
    );
}

/// Bytes of the file shared across a crash.
const SHARE_BYTES: usize = 64 << 20;

/// `peerlab share` runs and the sharing node is SIGKILLed at a random point of it; after
/// the restart the file is shared (again, or still) under the same content id, and another
/// node fetches it byte-identical with no chunk failing verification: a crash mid-share
/// leaves a whole share or none, never one that serves what the manifest does not say.
#[test]
fn a_share_killed_midway_is_whole_or_absent_after_restart() {
    let mut rng = XorShift::seeded();
    let root = tempfile::tempdir().unwrap();
    let (mut a, b) = common::started_pair(root.path());
    let mut bytes = XorShift(0x2545_f491_4f6c_dd1d);
    let data: Vec<u8> = (0..SHARE_BYTES / 8)
        .flat_map(|_| bytes.below(u64::MAX).to_le_bytes())
        .collect();
    let file = root.path().join("shared.bin");
    std::fs::write(&file, &data).unwrap();
    // How long a share of this size takes here: a file of other bytes shared first.
    let other = root.path().join("other.bin");
    std::fs::write(&other, data.iter().map(|b| !b).collect::<Vec<u8>>()).unwrap();
    let t = std::time::Instant::now();
    assert!(a.cli(&["share", other.to_str().unwrap()]).status.success());
    let took = t.elapsed().as_millis() as u64;

    let (dir, path) = (a.dir.clone(), file.to_str().unwrap().to_string());
    let sharing = std::thread::spawn(move || common::cli(&dir, &["share", &path]));
    // The kill point: a random moment of the time a share takes (not a wait for anything).
    let kill_at = rng.below(took.max(1));
    std::thread::sleep(Duration::from_millis(kill_at));
    a.crash();
    let before = sharing.join().unwrap();
    eprintln!(
        "killed {kill_at} ms into a share that takes {took} ms: {}",
        if before.status.success() {
            "acknowledged"
        } else {
            "not acknowledged"
        }
    );
    let (dir, port) = (a.dir.clone(), a.port);
    let a = Proc::start(&dir, port, None, &[]);
    if before.status.success() {
        // An acknowledged share is shared again by the restarted node by itself.
        let acked = common::stdout(&before).trim().to_string();
        assert!(
            eventually(Duration::from_secs(10), || common::stdout(
                &a.cli(&["fetches", "--json"])
            )
            .contains(&acked)),
            "the acknowledged share is gone after the restart"
        );
    }
    // Sharing the file again answers its content id whether or not the first share was
    // kept (a share that survived is not refused as a duplicate).
    let o = a.cli(&["share", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let cid = common::stdout(&o).trim().to_string();
    if before.status.success() {
        assert_eq!(
            common::stdout(&before).trim(),
            cid,
            "the content id changed"
        );
    }
    assert!(
        eventually(Duration::from_secs(60), || a.sees_alive(&b.peer_id)
            && b.sees_alive(&a.peer_id)),
        "A and B did not rejoin after the restart"
    );
    let out = root.path().join("out.bin");
    let o = b.cli(&["fetch", &cid, "-o", out.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "{}\n{}",
        common::stderr(&o),
        b.log_tail()
    );
    assert!(
        std::fs::read(&out).unwrap() == data,
        "the fetched file differs"
    );
    let api = std::fs::read_to_string(b.dir.join("api.addr")).unwrap();
    let token = std::fs::read_to_string(b.dir.join("api.token")).unwrap();
    let client = peerlab_node::client::Client::new(api.trim(), token.trim());
    assert_eq!(client.fetch_progress(&cid).unwrap().corrupt_chunks, 0);
}
