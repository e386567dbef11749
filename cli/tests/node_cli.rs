//! The node-facing CLI end to end: `peerlab node` as a child process, client commands
//! against it, SIGTERM for a graceful exit, and clear errors for bad arguments.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn peerlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peerlab"))
        .args(args)
        .output()
        .expect("run peerlab")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_arguments_get_clear_errors() {
    let o = peerlab(&["lookup"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("<KEY>"), "{}", stderr(&o));

    let o = peerlab(&["search", "x", "--ttl", "11"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--ttl"), "{}", stderr(&o));

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let o = peerlab(&["status", "--data-dir", d]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("no running node found"), "{err}");

    let o = peerlab(&["node", "--data-dir", d, "--bootstrap", "not-a-multiaddr"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bad --bootstrap"), "{}", stderr(&o));

    let o = peerlab(&["node", "--data-dir", d, "--api", "0.0.0.0:0"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--allow-remote-api"), "{}", stderr(&o));

    let o = peerlab(&["put", "--help"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("Example:"), "{}", stdout(&o));
}

#[test]
fn node_serves_the_cli_and_leaves_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_peerlab"))
        .args([
            "node",
            "--data-dir",
            &d,
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--json",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start peerlab node");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let summary: serde_json::Value = serde_json::from_str(&line).expect("JSON start-up line");
    let peer_id = summary["peer_id"].as_str().unwrap().to_string();

    let o = peerlab(&["status", "--data-dir", &d, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let st: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(st["peer_id"], peer_id.as_str());

    // A lone node owns the whole ring: put and get work once its DHT created the ring.
    let mut ok = false;
    for _ in 0..100 {
        let o = peerlab(&["put", "greeting", "hello", "--data-dir", &d]);
        if o.status.success() {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "put succeeds");
    let o = peerlab(&["get", "greeting", "--data-dir", &d]);
    assert_eq!(stdout(&o).trim(), "hello", "{}", stderr(&o));
    let o = peerlab(&["get", "missing", "--data-dir", &d]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));

    let o = peerlab(&["publish", "motd", "hi", "--data-dir", &d]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = peerlab(&["read", "motd", "--data-dir", &d]);
    assert_eq!(stdout(&o).trim(), "hi");

    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"some shared notes").unwrap();
    let o = peerlab(&["share", file.to_str().unwrap(), "--data-dir", &d]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cid = stdout(&o).trim().to_string();
    assert_eq!(cid.len(), 64, "a content id: {cid}");

    let o = peerlab(&["ring", "--data-dir", &d, "--json"]);
    let ring: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(ring["vnodes"].as_array().unwrap().len(), 4);

    let o = peerlab(&["status", "--data-dir", &d, "--token", "wrong"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));

    // SIGTERM: the node leaves and exits cleanly.
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut exited = None;
    for _ in 0..200 {
        if let Some(s) = child.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = exited.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("node did not exit within 10 s of SIGTERM")
    });
    assert!(status.success(), "exit status {status}");
}
