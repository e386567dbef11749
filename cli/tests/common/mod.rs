//! Real `peerlab node` processes on 127.0.0.1 for the recovery and crash tests: start one
//! on a fixed port from a data dir, drive it with the CLI, SIGKILL, SIGSTOP and SIGCONT it.

#![allow(dead_code)]
// Real processes run on the wall clock: waiting for them reads it.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How often a condition is polled while a test waits for it.
pub(crate) const POLL: Duration = Duration::from_millis(250);

/// Runs the `peerlab` binary with `args` against the node in `dir`.
pub(crate) fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peerlab"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run peerlab")
}

/// The text a command printed.
pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What a command complained about.
pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A port free on 127.0.0.1 now (for a node that must come back on the same port).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` until it holds or `within` passed; returns whether it held.
pub(crate) fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Sends `sig` (a name such as `KILL`) to process `pid`.
pub(crate) fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{sig} {pid}");
}

/// One `peerlab node` process; SIGKILLed when dropped.
pub(crate) struct Proc {
    /// Its data dir.
    pub(crate) dir: PathBuf,
    /// Its TCP port on 127.0.0.1.
    pub(crate) port: u16,
    /// Its libp2p peer id.
    pub(crate) peer_id: String,
    child: Option<Child>,
}

impl Proc {
    /// Starts a node on `port` (TCP) from `dir`, bootstrapped from `bootstrap`, and waits
    /// for its start-up line. `extra` are more `peerlab node` flags.
    pub(crate) fn start(dir: &Path, port: u16, bootstrap: Option<&str>, extra: &[&str]) -> Proc {
        let listen = format!("/ip4/127.0.0.1/tcp/{port}");
        std::fs::create_dir_all(dir).unwrap();
        // The node's log, appended across restarts, for the failure message.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerlab"));
        cmd.arg("node")
            .arg("--data-dir")
            .arg(dir)
            .args(["--transport", "tcp", "--listen", &listen, "--json"])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("PEERLAB_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        let mut child = cmd.spawn().expect("start peerlab node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let summary: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("start-up line {line:?}: {e}"));
        Proc {
            dir: dir.to_path_buf(),
            port,
            peer_id: summary["peer_id"].as_str().unwrap().to_string(),
            child: Some(child),
        }
    }

    /// Its multiaddr, for `--bootstrap`.
    pub(crate) fn addr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", self.port, self.peer_id)
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL, and reap the process: a crash, with no chance to flush or leave.
    pub(crate) fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "KILL");
            let _ = c.wait();
        }
    }

    /// Waits (at most `within`) for the process to end by itself; its exit status.
    pub(crate) fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        eventually(within, || {
            status = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            status.is_some() || self.child.is_none()
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Blocks until the process ends by itself or is killed; its exit status.
    pub(crate) fn wait(&mut self) -> Option<std::process::ExitStatus> {
        let st = self.child.as_mut()?.wait().ok();
        self.child = None;
        st
    }

    /// The last lines of its log (RUST_LOG taken from `PEERLAB_TEST_LOG`, `warn` if unset).
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// What the node shows of itself: members, and connected peers.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{}: members {} status {}\n{}",
            self.peer_id,
            stdout(&self.cli(&["members"])),
            stdout(&self.cli(&["status"])),
            self.log_tail()
        )
    }

    /// Runs a client command against this node.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        cli(&self.dir, args)
    }

    /// Whether this node lists `peer` as an alive member.
    pub(crate) fn sees_alive(&self, peer: &str) -> bool {
        let o = self.cli(&["members", "--json"]);
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&stdout(&o)) else {
            return false;
        };
        v.as_array()
            .into_iter()
            .flatten()
            .any(|m| m["peer_id"].as_str() == Some(peer) && m["state"].as_str() == Some("alive"))
    }

    /// `put key value`: whether the node acknowledged it.
    pub(crate) fn put(&self, key: &str, value: &str) -> bool {
        self.cli(&["put", key, value]).status.success()
    }

    /// `get key`: the value, if found.
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        let o = self.cli(&["get", key]);
        o.status.success().then(|| stdout(&o).trim().to_string())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.crash();
    }
}

/// Starts A, then B bootstrapped from A (data dirs `a` and `b` under `root`), and waits
/// until each lists the other as alive.
#[allow(dead_code)] // not every test binary uses it
pub(crate) fn started_pair(root: &Path) -> (Proc, Proc) {
    let a = Proc::start(&root.join("a"), free_port(), None, &[]);
    let b = Proc::start(&root.join("b"), free_port(), Some(&a.addr()), &[]);
    assert!(
        eventually(std::time::Duration::from_secs(60), || a
            .sees_alive(&b.peer_id)
            && b.sees_alive(&a.peer_id)),
        "A and B never joined"
    );
    (a, b)
}
