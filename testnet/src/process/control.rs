//! Starting, stopping and killing node processes (or in-process nodes), and the child side:
//! a node run from the testnet's data dir.
//!
//! Children run in their own process group (a Ctrl-C in the terminal that ran `testnet up`
//! does not reach them); before signalling a pid, the controller checks that
//! `/proc/<pid>/cmdline` still names the node's data dir, so a reused pid is never killed.
//! Stopping is SIGTERM (the node leaves the ring gracefully), then SIGKILL after
//! [`STOP_DEADLINE`].

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peerlab_node::config::Config;
use peerlab_node::{NodeHandle, NodeOptions};

use super::{Mode, SEEDS, Testnet, TestnetError, cmdline_contains, io_err, pid_alive};

/// How long a node may take to stop after SIGTERM before it gets SIGKILL.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// How long a started node may take to write its API address.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a restart of a node on another host waits for its orchestrator to bring it
/// back: Kubernetes restarts a crashed container after 10 s, then after 20, 40, … up to
/// 5 min for one that keeps crashing; three minutes covers the first few restarts.
pub const REMOTE_RETURN_DEADLINE: Duration = Duration::from_secs(180);
/// Processes spawned before the controller waits for the batch's API addresses (bounds the
/// join storm on the seeds and the start-up CPU burst).
pub const SPAWN_BATCH: usize = 25;
/// Environment variable holding a child node's data dir for [`run_child_from_env`].
pub const CHILD_ENV: &str = "PEERLAB_TESTNET_CHILD_DIR";
/// Environment variable asking a child to exit when its parent process goes away.
pub const CHILD_WATCH_PARENT_ENV: &str = "PEERLAB_TESTNET_WATCH_PARENT";

/// How a node process is started. In `args` and `env` values, `{data_dir}` is replaced by
/// the node's data dir; the node reads everything else from `<data_dir>/config.toml`.
#[derive(Clone, Debug)]
pub struct NodeProgram {
    /// The executable.
    pub exe: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl NodeProgram {
    /// `<exe> node --data-dir {data_dir} --threads 1`: the `peerlab` binary, each node on a
    /// single-threaded runtime (hundreds of processes share a few cores: a multi-threaded
    /// runtime per process only adds work stealing, parking and context switches — a
    /// profile of an idle 300-process testnet spent ~12 % in task switching and wakeups).
    pub fn peerlab(exe: impl Into<PathBuf>) -> NodeProgram {
        NodeProgram {
            exe: exe.into(),
            args: vec![
                "node".into(),
                "--data-dir".into(),
                "{data_dir}".into(),
                "--threads".into(),
                "1".into(),
            ],
            env: Vec::new(),
        }
    }

    /// The running executable as `peerlab` (what the CLI uses).
    pub fn current_peerlab() -> Result<NodeProgram, TestnetError> {
        let exe = std::env::current_exe().map_err(|e| {
            TestnetError::Resources(format!("cannot find the running executable: {e}"))
        })?;
        Ok(NodeProgram::peerlab(exe))
    }

    /// A libtest test binary re-run with only `test_name`, which must call
    /// [`run_child_from_env`]. Children exit when the test process goes away.
    pub fn test_harness(test_name: &str) -> Result<NodeProgram, TestnetError> {
        let exe = std::env::current_exe().map_err(|e| {
            TestnetError::Resources(format!("cannot find the test executable: {e}"))
        })?;
        Ok(NodeProgram {
            exe,
            args: vec![
                test_name.into(),
                "--exact".into(),
                "--nocapture".into(),
                "--test-threads=1".into(),
                // A second filter that matches no test: it puts the data dir in the
                // cmdline, which `down` checks before signalling.
                "{data_dir}".into(),
            ],
            env: vec![
                (CHILD_ENV.into(), "{data_dir}".into()),
                (CHILD_WATCH_PARENT_ENV.into(), "1".into()),
            ],
        })
    }
}

fn send_signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    for chunk in pids.chunks(500) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .args(chunk.iter().map(|p| p.to_string()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn log_tail(dir: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(dir.join("node.log")) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

impl Testnet {
    pub(super) fn start_all(&mut self, bar: &indicatif::ProgressBar) -> Result<(), TestnetError> {
        let n = self.manifest.nodes.len();
        // Node 0 first, then the other seeds through it, then everyone else in batches.
        self.spawn(0)?;
        self.await_ready(&[0])?;
        bar.inc(1);
        let seeds: Vec<usize> = (1..SEEDS.min(n)).collect();
        for &i in &seeds {
            self.spawn(i)?;
        }
        self.await_ready(&seeds)?;
        bar.inc(seeds.len() as u64);
        let rest: Vec<usize> = (SEEDS.min(n)..n).collect();
        for batch in rest.chunks(SPAWN_BATCH) {
            for &i in batch {
                self.spawn(i)?;
            }
            // A node that lost its first connections under the start-up load rejoins by
            // itself (the driver's rejoin rounds): the harness does not restart anyone.
            self.await_ready(batch)?;
            bar.inc(batch.len() as u64);
        }
        self.save()
    }

    /// Starts node `i` (fresh or from its data dir) without waiting for it.
    fn spawn(&mut self, i: usize) -> Result<(), TestnetError> {
        let cfg = self.node_config(i);
        let rec = &self.manifest.nodes[i];
        let data_dir = rec.data_dir.clone();
        fs::create_dir_all(&data_dir).map_err(io_err(&data_dir))?;
        for stale in [
            peerlab_node::API_ADDR_FILE,
            peerlab_node::LISTEN_ADDRS_FILE,
            peerlab_node::api_tls::API_CERT_FILE,
        ] {
            let _ = fs::remove_file(data_dir.join(stale));
        }
        match self.manifest.mode {
            Mode::InProcess => {
                let rt = self.rt.as_ref().ok_or_else(|| TestnetError::Start {
                    index: i,
                    msg: "no runtime".into(),
                })?;
                let h = rt
                    .block_on(peerlab_node::spawn(NodeOptions::new(&data_dir, cfg)))
                    .map_err(|e| TestnetError::Start {
                        index: i,
                        msg: e.to_string(),
                    })?;
                let rec = &mut self.manifest.nodes[i];
                rec.peer_id = h.peer_id().to_string();
                rec.api = h.api_addr().to_string();
                rec.token = h.token().to_string();
                rec.api_cert = h.api_cert().map(str::to_string);
                rec.listen_addrs = h.listen_addrs().iter().map(|a| a.to_string()).collect();
                rec.pid = Some(std::process::id());
                rec.alive = true;
                self.handles[i] = Some(h);
            }
            Mode::Remote => {
                return Err(TestnetError::Start {
                    index: i,
                    msg: "a node on another host is started by its orchestrator, not here".into(),
                });
            }
            Mode::Processes => {
                let text = toml::to_string(&cfg).map_err(|e| TestnetError::Start {
                    index: i,
                    msg: e.to_string(),
                })?;
                let cfg_path = data_dir.join(peerlab_node::CONFIG_FILE);
                fs::write(&cfg_path, text).map_err(io_err(&cfg_path))?;
                let prog = self.program.as_ref().ok_or_else(|| TestnetError::Start {
                    index: i,
                    msg: "no node program".into(),
                })?;
                let d = data_dir.display().to_string();
                let subst = |s: &String| s.replace("{data_dir}", &d);
                let log_path = data_dir.join("node.log");
                let log = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path)
                    .map_err(io_err(&log_path))?;
                let log2 = log.try_clone().map_err(io_err(&log_path))?;
                let mut cmd = match &self.hosts {
                    // `ip netns exec` enters the namespace and execs the node: same pid.
                    Some(h) => h.command(h.host_of(i), &prog.exe),
                    None => Command::new(&prog.exe),
                };
                cmd.args(prog.args.iter().map(subst))
                    .envs(prog.env.iter().map(|(k, v)| (k.clone(), subst(v))))
                    .stdin(Stdio::null())
                    .stdout(log)
                    .stderr(log2);
                if std::env::var_os("RUST_LOG").is_none()
                    && !prog.env.iter().any(|(k, _)| k == "RUST_LOG")
                {
                    cmd.env("RUST_LOG", "warn");
                }
                {
                    use std::os::unix::process::CommandExt as _;
                    // Own process group: a terminal's Ctrl-C for the controller does not
                    // reach the nodes; `down` stops them.
                    cmd.process_group(0);
                }
                let child = cmd.spawn().map_err(|e| TestnetError::Start {
                    index: i,
                    msg: format!("cannot run {}: {e}", prog.exe.display()),
                })?;
                let rec = &mut self.manifest.nodes[i];
                rec.pid = Some(child.id());
                rec.alive = true;
                self.children[i] = Some(child);
            }
        }
        self.save()
    }

    /// Waits until every node in `idx` wrote its API address (processes) and reads it.
    fn await_ready(&mut self, idx: &[usize]) -> Result<(), TestnetError> {
        if self.manifest.mode == Mode::InProcess {
            return Ok(());
        }
        let deadline = Instant::now() + START_DEADLINE;
        let mut pending: Vec<usize> = idx.to_vec();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for &i in &pending {
                let dir = self.manifest.nodes[i].data_dir.clone();
                if let Some(Some(c)) = self.children.get_mut(i)
                    && let Ok(Some(st)) = c.try_wait()
                {
                    return Err(TestnetError::Start {
                        index: i,
                        msg: format!("exited with {st}: {}", log_tail(&dir)),
                    });
                }
                let api = fs::read_to_string(dir.join(peerlab_node::API_ADDR_FILE)).ok();
                let token = fs::read_to_string(dir.join("api.token")).ok();
                let listen = fs::read_to_string(dir.join("listen.addrs")).ok();
                match (api, token, listen) {
                    (Some(a), Some(t), Some(l)) if !a.trim().is_empty() => {
                        let rec = &mut self.manifest.nodes[i];
                        rec.api = a.trim().to_string();
                        rec.token = t.trim().to_string();
                        rec.api_cert =
                            fs::read_to_string(dir.join(peerlab_node::api_tls::API_CERT_FILE)).ok();
                        rec.listen_addrs = l.lines().map(|s| s.trim().to_string()).collect();
                        rec.peer_id = rec
                            .listen_addrs
                            .first()
                            .and_then(|a| a.rsplit_once("/p2p/"))
                            .map(|(_, p)| p.to_string())
                            .unwrap_or_default();
                    }
                    _ => still.push(i),
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let i = pending[0];
                return Err(TestnetError::Start {
                    index: i,
                    msg: format!(
                        "no API address after {:?}: {}",
                        START_DEADLINE,
                        log_tail(&self.manifest.nodes[i].data_dir)
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.save()
    }

    /// Kills node `i` abruptly (SIGKILL; in-process: the tasks are aborted; on another
    /// host: `POST /crash`, which ends the process as SIGKILL would).
    pub fn kill(&mut self, i: usize) {
        self.manifest.nodes[i].alive = false;
        match self.manifest.mode {
            Mode::Remote => {
                // A node that accepts the crash ends without answering.
                let r = self
                    .client(i)
                    .post::<_, serde_json::Value>("/crash", &serde_json::json!({}));
                if let Err(e @ peerlab_node::client::ClientError::Api { .. }) = r {
                    eprintln!("warning: node {i} refused to crash: {e}");
                }
            }
            Mode::InProcess => {
                if let (Some(h), Some(rt)) = (self.handles[i].take(), self.rt.as_ref()) {
                    rt.block_on(h.abort());
                }
            }
            Mode::Processes => {
                if let Some(mut c) = self.children[i].take() {
                    let _ = c.kill();
                    let _ = c.wait();
                } else if let Some(pid) = self.manifest.nodes[i].pid
                    && cmdline_contains(pid, &self.manifest.nodes[i].data_dir.display().to_string())
                {
                    send_signal(&[pid], "KILL");
                }
            }
        }
        let _ = self.save();
    }

    /// Stops node `i` gracefully (SIGTERM: it leaves the ring and hands its records off),
    /// with SIGKILL after [`STOP_DEADLINE`]. A node on another host cannot be signalled:
    /// it is crashed as by [`Testnet::kill`].
    pub fn stop(&mut self, i: usize) {
        if self.manifest.mode == Mode::Remote {
            return self.kill(i);
        }
        self.manifest.nodes[i].alive = false;
        match self.manifest.mode {
            Mode::Remote => {}
            Mode::InProcess => {
                if let (Some(h), Some(rt)) = (self.handles[i].take(), self.rt.as_ref()) {
                    rt.block_on(async {
                        let _ = tokio::time::timeout(STOP_DEADLINE, h.shutdown()).await;
                    });
                }
            }
            Mode::Processes => self.stop_processes(&[i]),
        }
        let _ = self.save();
    }

    /// Restarts node `i` from its data dir (same identity and records) and waits for its API.
    /// A node on another host was restarted by its orchestrator: this waits until its API
    /// answers again (at most [`REMOTE_RETURN_DEADLINE`]).
    pub fn restart(&mut self, i: usize) -> Result<(), TestnetError> {
        if self.manifest.nodes[i].alive {
            return Ok(());
        }
        if self.manifest.mode == Mode::Remote {
            let client = self.client(i);
            let what = format!(
                "node {i}'s API at {} to answer again after its crash (is its orchestrator restarting it?)",
                self.manifest.nodes[i].api
            );
            super::wait_until(&what, REMOTE_RETURN_DEADLINE, || client.status().ok())?;
            self.manifest.nodes[i].alive = true;
            return self.save();
        }
        self.spawn(i)?;
        self.await_ready(&[i])
    }

    fn stop_processes(&mut self, idx: &[usize]) {
        let mut targets: Vec<(usize, u32)> = Vec::new();
        for &i in idx {
            let rec = &self.manifest.nodes[i];
            let Some(pid) = rec.pid else { continue };
            let own = self.children[i].is_some();
            if own || (pid_alive(pid) && cmdline_contains(pid, &rec.data_dir.display().to_string()))
            {
                targets.push((i, pid));
            }
        }
        let pids: Vec<u32> = targets.iter().map(|t| t.1).collect();
        send_signal(&pids, "TERM");
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            let mut left = 0;
            for &(i, pid) in &targets {
                if let Some(c) = self.children[i].as_mut() {
                    if let Ok(Some(_)) = c.try_wait() {
                        self.children[i] = None;
                    } else {
                        left += 1;
                    }
                } else if pid_alive(pid) {
                    left += 1;
                }
            }
            if left == 0 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for &(i, pid) in &targets {
            if let Some(mut c) = self.children[i].take() {
                let _ = c.kill();
                let _ = c.wait();
            } else if pid_alive(pid)
                && cmdline_contains(pid, &self.manifest.nodes[i].data_dir.display().to_string())
            {
                send_signal(&[pid], "KILL");
            }
        }
    }

    /// Stops every node this testnet started (SIGTERM, then SIGKILL after
    /// [`STOP_DEADLINE`]) and marks them stopped in `testnet.json`. Returns how many nodes
    /// were still running.
    pub fn down(&mut self) -> usize {
        let running = self.alive().len();
        match self.manifest.mode {
            // Not this controller's to stop: only forgotten.
            Mode::Remote => {}
            Mode::InProcess => {
                if let Some(rt) = self.rt.as_ref() {
                    let hs: Vec<NodeHandle> =
                        self.handles.iter_mut().filter_map(Option::take).collect();
                    rt.block_on(async {
                        let all = async {
                            let tasks: Vec<_> =
                                hs.into_iter().map(|h| tokio::spawn(h.shutdown())).collect();
                            for t in tasks {
                                let _ = t.await;
                            }
                        };
                        let _ = tokio::time::timeout(STOP_DEADLINE, all).await;
                    });
                } else {
                    // Another process hosts the nodes: ask it to stop.
                    let pid = self.manifest.controller_pid;
                    if pid != std::process::id()
                        && pid_alive(pid)
                        && cmdline_contains(pid, "testnet")
                    {
                        send_signal(&[pid], "TERM");
                        let deadline = Instant::now() + STOP_DEADLINE * 2;
                        while pid_alive(pid) && Instant::now() < deadline {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        if pid_alive(pid) && cmdline_contains(pid, "testnet") {
                            send_signal(&[pid], "KILL");
                        }
                    }
                }
            }
            Mode::Processes => {
                let all: Vec<usize> = (0..self.manifest.nodes.len()).collect();
                self.stop_processes(&all);
            }
        }
        for n in &mut self.manifest.nodes {
            n.alive = false;
        }
        self.stopped = true;
        let _ = self.save();
        if let Some(h) = self.hosts.take() {
            // After the nodes: a namespace lives on while a process runs in it.
            self.hosts_left = h.destroy(&self.dir);
            if !self.hosts_left.is_empty() {
                self.hosts = Some(h);
            }
        }
        running
    }

    /// Pids recorded for nodes that are still running (after [`Testnet::down`]: none).
    pub fn leftover_pids(&self) -> Vec<u32> {
        if self.manifest.mode == Mode::InProcess {
            return Vec::new();
        }
        self.manifest
            .nodes
            .iter()
            .filter_map(|n| {
                let pid = n.pid?;
                (pid_alive(pid) && cmdline_contains(pid, &n.data_dir.display().to_string()))
                    .then_some(pid)
            })
            .collect()
    }

    /// Blocks until SIGINT or SIGTERM (used by an in-process `testnet up`, whose nodes live
    /// in this process).
    pub fn wait_for_signal(&self) {
        let wait = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async {
                    match term.as_mut() {
                        Some(t) => { t.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
        };
        match self.rt.as_ref() {
            Some(rt) => rt.block_on(wait),
            None => {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(wait);
                }
            }
        }
    }

    /// Keeps the nodes running when this value is dropped (`testnet up` hands them over to
    /// `testnet.json`).
    pub fn detach(mut self) {
        self.stopped = true;
        for c in &mut self.children {
            // Dropping a Child neither kills nor waits; the nodes live on.
            c.take();
        }
    }
}

/// Runs a node from the data dir named by [`CHILD_ENV`] until SIGTERM/SIGINT (then leaves
/// gracefully), or until the parent process goes away when [`CHILD_WATCH_PARENT_ENV`] is
/// set. Returns false at once when the variable is not set. Test binaries call this from a
/// test named in [`NodeProgram::test_harness`].
pub fn run_child_from_env() -> bool {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return false;
    };
    let dir = PathBuf::from(dir);
    let watch = std::env::var_os(CHILD_WATCH_PARENT_ENV).is_some();
    let parent = std::os::unix::process::parent_id();
    let cfg = match Config::load(&dir.join(peerlab_node::CONFIG_FILE)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("child node: {e}");
            std::process::exit(2);
        }
    };
    // One thread runs the node: hundreds of node processes share a few cores, and a
    // separate worker thread would add a cross-thread wake-up to every packet.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("child node: {e}");
            std::process::exit(2);
        }
    };
    rt.block_on(async move {
        let node = match peerlab_node::spawn(NodeOptions::new(&dir, cfg)).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("child node: {e}");
                std::process::exit(2);
            }
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let orphaned = async {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if watch && std::os::unix::process::parent_id() != parent {
                    return;
                }
            }
        };
        tokio::select! {
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = orphaned => {
                node.abort().await;
                std::process::exit(0);
            }
        }
        node.shutdown().await;
    });
    true
}
