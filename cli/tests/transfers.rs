//! Managing transfers from the command line: `fetches` lists them, `cancel` stops a fetch
//! and frees its slot, `unshare` stops serving a file; none of them comes back after a
//! restart.

mod common;

use std::time::Duration;

use common::{Proc, eventually, stderr, stdout};

fn listed(p: &Proc, cid: &str) -> bool {
    let o = p.cli(&["fetches", "--json"]);
    serde_json::from_str::<serde_json::Value>(&stdout(&o))
        .ok()
        .and_then(|v| v.as_array().cloned())
        .is_some_and(|a| a.iter().any(|t| t["cid"].as_str() == Some(cid)))
}

#[test]
fn fetches_lists_cancel_and_unshare_stop_and_forget() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("n");
    let port = common::free_port();
    let mut node = Proc::start(&dir, port, None, &[]);
    assert!(
        eventually(Duration::from_secs(20), || node.put("ready", "1")),
        "the node never accepted a put"
    );
    let file = root.path().join("notes.txt");
    std::fs::write(&file, b"some shared notes").unwrap();
    let o = node.cli(&["share", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shared = stdout(&o).trim().to_string();
    // A fetch of content nobody has runs (looking for providers) until cancelled.
    let missing = "ab".repeat(32);
    let out = root.path().join("missing.bin");
    let o = node.cli(&["fetch", &missing, "-o", out.to_str().unwrap(), "--detach"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(listed(&node, &shared) && listed(&node, &missing));
    let text = stdout(&node.cli(&["fetches"]));
    assert!(text.contains("share") && text.contains("fetch"), "{text}");

    let o = node.cli(&["cancel", &missing]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!listed(&node, &missing));
    let o = node.cli(&["cancel", &missing]);
    assert!(!o.status.success(), "a second cancel finds nothing");
    assert!(stderr(&o).contains("no transfer"), "{}", stderr(&o));

    let o = node.cli(&["unshare", &shared]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!listed(&node, &shared));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"some shared notes",
        "file left alone"
    );

    // Forgotten for good: a restart resumes neither (resumption happens before the node
    // prints its start-up line).
    node.crash();
    let node = Proc::start(&dir, port, None, &[]);
    assert!(!listed(&node, &shared) && !listed(&node, &missing));
}
