//! Self-healing connectivity with real processes on 127.0.0.1 and no harness help: a node
//! whose peer crashed, restarted or froze finds it again by itself (the driver's rejoin
//! rounds), and the two serve each other's DHT keys again.

mod common;

use std::time::Duration;

use common::{Proc, eventually, signal};

/// How long the joined pair may take to form at start.
const JOIN_WITHIN: Duration = Duration::from_secs(60);
/// How long the pair may take to find each other again once both run (the requirement).
const REJOIN_WITHIN: Duration = Duration::from_secs(60);

/// Whether `a` and `b` list each other as alive members.
fn mutual(a: &Proc, b: &Proc) -> bool {
    a.sees_alive(&b.peer_id) && b.sees_alive(&a.peer_id)
}

/// Whether a key put on one node is read on the other, both ways (fresh keys per call:
/// reading an old key could succeed from a local replica alone).
fn serve_each_other(a: &Proc, b: &Proc, tag: &str) -> bool {
    for (w, r, side) in [(a, b, "ab"), (b, a, "ba")] {
        // Several keys, so that some are owned by the other node whichever ids they have.
        for i in 0..4 {
            let key = format!("{tag}-{side}-{i}");
            if !w.put(&key, &key) || r.get(&key).as_deref() != Some(key.as_str()) {
                return false;
            }
        }
    }
    true
}

/// Starts A, then B bootstrapped from A, and waits until they are joined.
fn joined_pair(root: &std::path::Path) -> (Proc, Proc) {
    let a = Proc::start(&root.join("a"), common::free_port(), None, &[]);
    let b = Proc::start(&root.join("b"), common::free_port(), Some(&a.addr()), &[]);
    assert!(
        eventually(JOIN_WITHIN, || mutual(&a, &b)
            && serve_each_other(&a, &b, "start")),
        "A and B never joined"
    );
    (a, b)
}

/// A is SIGKILLed and restarted from its data dir on the same port 20 s later. A has no
/// bootstrap address: it finds B through the peers it wrote to its data dir, and B keeps
/// re-dialing A, its bootstrap peer, with backoff.
#[test]
fn a_crashed_and_restarted_bootstrap_node_is_rejoined() {
    let root = tempfile::tempdir().unwrap();
    let (mut a, b) = joined_pair(root.path());
    // The last-known peers are written within KNOWN_PEERS_SAVE (10 s) of a change.
    assert!(
        eventually(Duration::from_secs(15), || std::fs::read_to_string(
            a.dir.join("peers")
        )
        .is_ok_and(|t| t.contains(&b.peer_id))),
        "A never wrote B to its peers file"
    );
    let (dir, port) = (a.dir.clone(), a.port);
    a.crash();
    std::thread::sleep(Duration::from_secs(20));
    let a = Proc::start(&dir, port, None, &[]);
    assert!(
        eventually(REJOIN_WITHIN, || mutual(&a, &b)
            && serve_each_other(&a, &b, "restart")),
        "A and B did not rejoin within {REJOIN_WITHIN:?} of A's restart\nA {}\nB {}",
        a.describe(),
        b.describe()
    );
}

/// B's only connection (to A) is cut for 30 s by freezing A (SIGSTOP: A's sockets stay
/// open but nothing answers, as on a partitioned link), then A thaws (SIGCONT).
#[test]
fn a_pair_cut_apart_for_30_s_rejoins() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = joined_pair(root.path());
    signal(a.pid(), "STOP");
    std::thread::sleep(Duration::from_secs(30));
    signal(a.pid(), "CONT");
    assert!(
        eventually(REJOIN_WITHIN, || mutual(&a, &b)
            && serve_each_other(&a, &b, "thaw")),
        "A and B did not rejoin within {REJOIN_WITHIN:?} of the cut's end\nA {}\nB {}",
        a.describe(),
        b.describe()
    );
}
