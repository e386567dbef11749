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

#[test]
fn share_picks_the_chunk_size_for_the_file_and_takes_a_valid_one_asked_for() {
    let root = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let node = Proc::start(&root.path().join("n"), port, None, &[]);
    assert!(
        eventually(Duration::from_secs(20), || node.put("ready", "1")),
        "the node never accepted a put"
    );
    let file = root.path().join("one-mib.bin");
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let chunks = |args: &[&str]| {
        let mut all = vec!["share", "--json", file.to_str().unwrap()];
        all.extend_from_slice(args);
        let o = node.cli(&all);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        v["chunks"].as_u64().unwrap()
    };
    // 1 MiB: the smallest automatic chunk, 64 KiB.
    assert_eq!(chunks(&[]), 16);
    assert_eq!(chunks(&["--chunk-kib", "16"]), 64);

    let o = node.cli(&["share", file.to_str().unwrap(), "--chunk-kib", "3"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("power of two"), "{}", stderr(&o));
    // A sparse 40 MiB file in 1 KiB chunks would need 40 960 chunks: refused before it is
    // read.
    let big = root.path().join("sparse.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(40 << 20)
        .unwrap();
    let o = node.cli(&["share", big.to_str().unwrap(), "--chunk-kib", "1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("exceed the limit"), "{}", stderr(&o));
}
