//! A controller on another host: nodes whose control API allows remote clients speak only
//! TLS with their own certificate; `peerlab credentials` hands a controller what it needs,
//! `peerlab testnet attach` checks it, and the measurements then run over TLS; `POST /crash`
//! ends a node as SIGKILL would, only where the node accepts it.

// Real processes run on the wall clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Proc, eventually, free_port, stderr, stdout};
use peerlab_node::client::Client;

/// Flags of a node whose API other hosts may reach and that churn may crash.
const REMOTE: [&str; 2] = ["--allow-remote-api", "--accept-crash"];

/// How long four nodes on loopback take at most to form one ring and one membership
/// (a few seconds; the bound leaves room for a loaded machine).
const CONVERGE: Duration = Duration::from_secs(60);

fn peerlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peerlab"))
        .args(args)
        .output()
        .expect("run peerlab")
}

fn testnet(dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["testnet"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--dir", dir.to_str().unwrap(), "--json"]);
    peerlab(&all)
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {} {}", stdout(o), stderr(o)))
}

/// What a plain-HTTP request to `addr` gets back (TLS servers answer none).
fn plain_http(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_controller_reaches_remote_nodes_only_through_their_pinned_tls() {
    let root = tempfile::tempdir().unwrap();
    let a = Proc::start(&root.path().join("a"), free_port(), None, &REMOTE);
    let mut nodes = vec![a];
    for name in ["b", "c"] {
        let boot = nodes[0].addr();
        nodes.push(Proc::start(
            &root.path().join(name),
            free_port(),
            Some(&boot),
            &REMOTE,
        ));
    }
    // A node that lets remote clients in but does not accept /crash.
    let boot = nodes[0].addr();
    let mut plain = Proc::start(
        &root.path().join("d"),
        free_port(),
        Some(&boot),
        &["--allow-remote-api"],
    );

    // Its API speaks only TLS: a cleartext request gets no HTTP answer.
    let api = std::fs::read_to_string(nodes[0].dir.join("api.addr")).unwrap();
    let answer = plain_http(api.trim());
    assert!(!answer.starts_with("HTTP/"), "cleartext answered: {answer}");
    // The CLI on the node's own host pins the certificate from the data dir.
    assert!(nodes[0].cli(&["status"]).status.success());

    // Credentials, as a controller would collect them over an encrypted channel.
    let mut lines = Vec::new();
    for p in nodes.iter().chain([&plain]) {
        let o = p.cli(&["credentials"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v = json(&o);
        assert_eq!(v["peer_id"], p.peer_id.as_str());
        lines.push(v);
    }
    let write = |name: &str, lines: &[serde_json::Value]| {
        let path = root.path().join(name);
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        std::fs::write(&path, text.join("\n")).unwrap();
        path
    };

    let tn = root.path().join("tn");
    let attach = |name: &str, lines: &[serde_json::Value]| {
        let file = write(name, lines);
        testnet(&tn, &["attach", "--credentials", file.to_str().unwrap()])
    };
    // A certificate that is not the node's own (another node's) is refused: whoever
    // answers at that address cannot prove it holds the pinned key.
    let mut swapped = lines.clone();
    swapped[0]["cert"] = lines[1]["cert"].clone();
    let o = attach("swapped.jsonl", &swapped);
    assert!(!o.status.success(), "attached with a foreign certificate");
    assert!(stderr(&o).contains(api.trim()), "{}", stderr(&o));
    // So is a line that names another peer id than the one that answers.
    let mut other = lines.clone();
    other[0]["peer_id"] = lines[1]["peer_id"].clone();
    other[1]["peer_id"] = lines[0]["peer_id"].clone();
    let o = attach("other.jsonl", &other);
    assert!(!o.status.success(), "attached under another peer id");
    assert!(stderr(&o).contains("answers as"), "{}", stderr(&o));

    let o = attach("creds.jsonl", &lines);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["nodes"], 4);
    let converged = eventually(CONVERGE, || {
        let o = testnet(&tn, &["status"]);
        o.status.success() && json(&o)["converged"] == true
    });
    assert!(converged, "{}", stdout(&testnet(&tn, &["status"])));
    let o = testnet(&tn, &["lookups", "--count", "40"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(
        (r["lookups"].as_u64(), r["failed"].as_u64()),
        (Some(40), Some(0)),
        "{r}"
    );
    assert_eq!(r["wrong_owner"], 0, "{r}");

    // POST /crash: refused by a node that does not accept it, the end of one that does
    // (exit status 137, as after SIGKILL).
    let refused = Client::from_data_dir(&plain.dir)
        .unwrap()
        .post::<_, serde_json::Value>("/crash", &serde_json::json!({}));
    assert!(
        matches!(
            refused,
            Err(peerlab_node::client::ClientError::Api { status: 403, .. })
        ),
        "{refused:?}"
    );
    assert!(
        plain.wait_exit(Duration::from_secs(1)).is_none(),
        "a refused crash ended the node"
    );
    let victim = nodes.last_mut().unwrap();
    let _ = Client::from_data_dir(&victim.dir)
        .unwrap()
        .post::<_, serde_json::Value>("/crash", &serde_json::json!({}));
    let st = victim
        .wait_exit(Duration::from_secs(10))
        .expect("the node did not end");
    assert_eq!(
        st.code().or(st.signal().map(|s| 128 + s)),
        Some(137),
        "{st:?}"
    );

    // Down forgets the nodes; they keep running.
    let o = testnet(&tn, &["down"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["forgotten"], 4);
    assert!(nodes[0].cli(&["status"]).status.success());
}

/// How long the test's orchestrator leaves a crashed node down (a kubelet waits 10 s before
/// its first restart of a container).
const RESTART_DELAY: Duration = Duration::from_secs(3);

/// `testnet churn` against nodes on "other hosts": departures are `POST /crash`, returns
/// are an orchestrator's (here a thread restarting every process that ended, from its data
/// dir on its ports, as a kubelet restarts a container). The pinned certificates keep
/// verifying the restarted nodes, which issue themselves new certificates from the same key.
#[test]
fn churn_crashes_remote_nodes_and_waits_for_their_orchestrator() {
    use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
    use std::sync::{Arc, Mutex};

    let root = tempfile::tempdir().unwrap();
    let mut procs = Vec::new();
    let mut flags = Vec::new();
    for i in 0..5 {
        let api = format!("127.0.0.1:{}", free_port());
        let f: Vec<String> = REMOTE
            .iter()
            .map(|s| s.to_string())
            .chain(["--api".to_string(), api])
            .collect();
        let boot = (i > 0).then(|| Proc::addr(&procs[0]));
        let refs: Vec<&str> = f.iter().map(String::as_str).collect();
        procs.push(Proc::start(
            &root.path().join(format!("n{i}")),
            free_port(),
            boot.as_deref(),
            &refs,
        ));
        flags.push((f, boot));
    }
    let creds: Vec<String> = procs
        .iter()
        .map(|p| stdout(&p.cli(&["credentials"])).trim().to_string())
        .collect();
    let file = root.path().join("creds.jsonl");
    std::fs::write(&file, creds.join("\n")).unwrap();
    let tn = root.path().join("tn");
    let o = testnet(&tn, &["attach", "--credentials", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        eventually(CONVERGE, || json(&testnet(&tn, &["status"]))["converged"]
            == true),
        "never converged"
    );

    // The orchestrator: a thread per node that waits for its process to end and starts
    // it again after RESTART_DELAY, until told to stop (its channel closes).
    let restarted = Arc::new(Mutex::new(0usize));
    let mut kubelets = Vec::new();
    for (mut p, (f, boot)) in procs.into_iter().zip(flags) {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let pid = Arc::new(Mutex::new(p.pid()));
        let restarted = restarted.clone();
        let current = pid.clone();
        let thread = std::thread::spawn(move || {
            let refs: Vec<&str> = f.iter().map(String::as_str).collect();
            loop {
                p.wait();
                if stop_rx.recv_timeout(RESTART_DELAY) != Err(RecvTimeoutError::Timeout) {
                    return;
                }
                let mut pid = current.lock().unwrap();
                if stop_rx.try_recv() != Err(TryRecvError::Empty) {
                    return;
                }
                p = Proc::start(&p.dir.clone(), p.port, boot.as_deref(), &refs);
                *pid = p.pid();
                *restarted.lock().unwrap() += 1;
            }
        });
        kubelets.push((stop_tx, pid, thread));
    }
    let o = testnet(
        &tn,
        &[
            "churn",
            "--rate",
            "0.2",
            "--duration",
            "20",
            "--keys",
            "20",
            "--ops-rate",
            "5",
            "--min-downtime",
            "2",
            "--settle",
            "60",
        ],
    );
    for (stop_tx, pid, thread) in kubelets {
        drop(stop_tx);
        // The process may have ended already (crashed, restart cancelled).
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.lock().unwrap().to_string())
            .status();
        thread.join().unwrap();
    }
    assert!(o.status.success(), "{}", stderr(&o));
    let r = json(&o);
    assert!(
        r["crashes"].as_u64() >= Some(1),
        "no crash in 20 s at 0.2/s: {r}"
    );
    assert!(
        *restarted.lock().unwrap() >= r["crashes"].as_u64().unwrap() as usize,
        "a crash did not end its process: {r}"
    );
    assert!(r["restarts"].as_u64() >= Some(1), "{r}");
    assert_eq!(r["lost_keys"], 0, "{r}");
    // Churn to the nodes, refused where a node can only be crashed: graceful leaves.
    let o = testnet(
        &tn,
        &["churn", "--crash-fraction", "0.5", "--duration", "1"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--crash-fraction 1"), "{}", stderr(&o));
}
