//! Crash recovery with real processes: `peerlab node` is SIGKILLed (no flush, no clean
//! close of its database) at random points while clients write to it, restarted from its
//! data dir, and every write it acknowledged must be there.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Proc, eventually};

/// Kill-and-restart rounds per run.
const ROUNDS: usize = 4;
/// How long after the first acknowledged put of a round the kill may come (uniform).
const KILL_WINDOW_MS: u64 = 1500;

/// A small deterministic generator for the kill points (the seed is printed, so that a
/// failing run can be repeated with `PEERLAB_CRASH_SEED`).
struct XorShift(u64);

impl XorShift {
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
    let mut rng = XorShift(seed);
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
                "round {round}: acknowledged {key} lost (seed {seed})"
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
        let kill_at = Instant::now() + Duration::from_millis(rng.below(KILL_WINDOW_MS));
        while Instant::now() < kill_at {
            std::thread::sleep(Duration::from_millis(10));
        }
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
            "acknowledged {key} lost (seed {seed})"
        );
    }
}
