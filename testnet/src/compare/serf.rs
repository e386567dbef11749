//! N Serf agents on 127.0.0.1 with memberlist's LAN profile.
//!
//! Agent `i` is named `s<i>`, binds memberlist (UDP and TCP) to `BASE+i` and its RPC to
//! `BASE+N+i`, and joins like a testnet node: node 0 alone, the other seeds through it,
//! everyone else through two seeds (`-join`, [`bootstrap_through`]). Each agent's output
//! comes through a pipe; a reader thread stamps every line with the wall clock as it
//! arrives (Serf's own stamps have whole seconds only), keeps it in `<dir>/s<i>.log` and
//! turns the lines [`timeline::parse_serf_line`] knows into observations. Agents run in
//! their own process group, so a Ctrl-C in the terminal reaches only the controller, which
//! stops them.

#![allow(clippy::disallowed_methods)] // a driver: wall-clock time is its job

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::timeline::{self, Observation, Seen};
use super::{Cluster, EVENT_DEADLINE, POLL, host};
use crate::process::{SEEDS, SPAWN_BATCH, START_DEADLINE, TestnetError, bootstrap_through};

/// How to install Serf, for the error when it is missing.
pub const SERF_INSTALL_HINT: &str = "install it with `apt-get install -y serf` (Debian, \
    Ubuntu) or from https://releases.hashicorp.com/serf/, or give its path with --serf";

/// The user event's name.
const EVENT_NAME: &str = "peerlab-compare";

/// The `serf` executable: `explicit`, or `serf` in the directories of `path_var`.
pub fn locate_serf(
    explicit: Option<&Path>,
    path_var: Option<&OsStr>,
) -> Result<PathBuf, TestnetError> {
    host::locate("serf", explicit, path_var).ok_or_else(|| {
        let what = match explicit {
            Some(p) => format!("{} does not exist", p.display()),
            None => "serf was not found on the PATH".to_string(),
        };
        TestnetError::Resources(format!("{what}; {SERF_INSTALL_HINT}"))
    })
}

/// `serf version`'s first line.
pub(crate) fn version(exe: &Path) -> Result<String, TestnetError> {
    let out = Command::new(exe)
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestnetError::Resources(format!("cannot run {}: {e}", exe.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or("").trim();
    Ok(if first.to_ascii_lowercase().starts_with("serf") {
        first.to_string()
    } else {
        format!("Serf {first}")
    })
}

struct Agent {
    child: Child,
    ready: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

/// N Serf agents (stopped on drop).
pub struct SerfCluster {
    exe: PathBuf,
    n: usize,
    base: u16,
    dir: PathBuf,
    agents: Vec<Option<Agent>>,
    obs: Arc<Mutex<Vec<Observation>>>,
}

impl SerfCluster {
    /// A cluster of `n` agents on ports from `base`, logging into `dir` (not started yet).
    pub fn new(
        exe: PathBuf,
        n: usize,
        base: u16,
        dir: PathBuf,
    ) -> Result<SerfCluster, TestnetError> {
        fs::create_dir_all(&dir).map_err(|e| TestnetError::Io {
            path: dir.display().to_string(),
            msg: e.to_string(),
        })?;
        Ok(SerfCluster {
            exe,
            n,
            base,
            dir,
            agents: (0..n).map(|_| None).collect(),
            obs: Arc::new(Mutex::new(Vec::new())),
        })
    }

    fn bind_port(&self, i: usize) -> u16 {
        self.base + i as u16
    }

    fn rpc_port(&self, i: usize) -> u16 {
        self.base + (self.n + i) as u16
    }

    fn spawn(&mut self, i: usize) -> Result<(), TestnetError> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("agent")
            .arg(format!("-node=s{i}"))
            .arg(format!("-bind=127.0.0.1:{}", self.bind_port(i)))
            .arg(format!("-rpc-addr=127.0.0.1:{}", self.rpc_port(i)))
            .arg("-profile=lan")
            .arg("-log-level=info");
        // Seeds start in index order: a node joins through the seeds started before it.
        for s in bootstrap_through(i, self.n, |s| s < i) {
            cmd.arg(format!("-join=127.0.0.1:{}", self.bind_port(s)));
        }
        let err_path = self.dir.join(format!("s{i}.err"));
        let err = fs::File::create(&err_path).map_err(|e| TestnetError::Io {
            path: err_path.display().to_string(),
            msg: e.to_string(),
        })?;
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
        {
            use std::os::unix::process::CommandExt as _;
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().map_err(|e| TestnetError::Start {
            index: i,
            msg: format!("cannot run {}: {e}", self.exe.display()),
        })?;
        let ready = Arc::new(AtomicBool::new(false));
        let reader = child.stdout.take().map(|out| {
            let ready = ready.clone();
            let obs = self.obs.clone();
            let log_path = self.dir.join(format!("s{i}.log"));
            std::thread::Builder::new()
                .name(format!("serf-s{i}"))
                .stack_size(64 * 1024)
                .spawn(move || read_agent(i, out, &log_path, &ready, &obs))
        });
        let reader = match reader {
            Some(Ok(h)) => Some(h),
            Some(Err(e)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TestnetError::Resources(format!("reader thread: {e}")));
            }
            None => None,
        };
        self.agents[i] = Some(Agent {
            child,
            ready,
            reader,
        });
        Ok(())
    }

    fn await_ready(&mut self, idx: &[usize]) -> Result<(), TestnetError> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            host::check_interrupt()?;
            let mut pending = 0;
            for &i in idx {
                let Some(a) = self.agents[i].as_mut() else {
                    continue;
                };
                if let Ok(Some(st)) = a.child.try_wait() {
                    let err =
                        fs::read_to_string(self.dir.join(format!("s{i}.err"))).unwrap_or_default();
                    let log =
                        fs::read_to_string(self.dir.join(format!("s{i}.log"))).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().chain(err.lines()).rev().take(4).collect();
                    return Err(TestnetError::Start {
                        index: i,
                        msg: format!("serf agent exited with {st}: {}", tail.join(" | ")),
                    });
                }
                if !a.ready.load(Ordering::SeqCst) {
                    pending += 1;
                }
            }
            if pending == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestnetError::Timeout {
                    what: format!("{pending} serf agents to start"),
                    secs: START_DEADLINE.as_secs_f64(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn stop_agent(a: &mut Agent) {
        let _ = a.child.kill();
        let _ = a.child.wait();
        if let Some(h) = a.reader.take() {
            let _ = h.join();
        }
    }
}

/// Reads agent `i`'s output until it exits: readiness, observations, the stamped log.
fn read_agent(
    i: usize,
    out: std::process::ChildStdout,
    log_path: &Path,
    ready: &AtomicBool,
    obs: &Mutex<Vec<Observation>>,
) {
    let mut log = fs::File::create(log_path).ok();
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        let at = host::unix_now();
        if let Some(f) = log.as_mut() {
            let _ = writeln!(f, "{at:.6} {line}");
        }
        if line.contains("Serf agent running") {
            ready.store(true, Ordering::SeqCst);
        }
        if let Some((seen, name)) = timeline::parse_serf_line(&line) {
            let subject = match seen {
                Seen::Event if name == EVENT_NAME => Some(i),
                Seen::Event => None,
                _ => name.strip_prefix('s').and_then(|k| k.parse::<usize>().ok()),
            };
            if let (Some(subject), Ok(mut o)) = (subject, obs.lock()) {
                o.push(Observation {
                    at,
                    observer: i,
                    subject,
                    seen,
                });
            }
        }
    }
}

impl Cluster for SerfCluster {
    fn name(&self) -> &'static str {
        "serf"
    }

    fn start(&mut self, _progress: bool) -> Result<(), TestnetError> {
        let n = self.n;
        self.spawn(0)?;
        self.await_ready(&[0])?;
        let seeds: Vec<usize> = (1..SEEDS.min(n)).collect();
        for &i in &seeds {
            self.spawn(i)?;
        }
        self.await_ready(&seeds)?;
        let rest: Vec<usize> = (SEEDS.min(n)..n).collect();
        for batch in rest.chunks(SPAWN_BATCH) {
            for &i in batch {
                self.spawn(i)?;
            }
            self.await_ready(batch)?;
        }
        Ok(())
    }

    fn observations(&mut self) -> Vec<Observation> {
        self.obs.lock().map(|o| o.clone()).unwrap_or_default()
    }

    fn pids(&self) -> Vec<u32> {
        self.agents.iter().flatten().map(|a| a.child.id()).collect()
    }

    fn event(&mut self, origin: usize) -> Result<Vec<f64>, TestnetError> {
        let live: Vec<usize> = (0..self.n).filter(|&i| self.agents[i].is_some()).collect();
        let asked = host::unix_now();
        let out = Command::new(&self.exe)
            .arg("event")
            .arg("-coalesce=false")
            .arg(format!("-rpc-addr=127.0.0.1:{}", self.rpc_port(origin)))
            .arg(EVENT_NAME)
            .arg("one user event")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| TestnetError::Failed(format!("serf event: {e}")))?;
        if !out.status.success() {
            return Err(TestnetError::Failed(format!(
                "serf event: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let deadline = Instant::now() + EVENT_DEADLINE;
        loop {
            let obs = self.observations();
            let got: std::collections::BTreeSet<usize> = obs
                .iter()
                .filter(|o| o.seen == Seen::Event)
                .map(|o| o.observer)
                .collect();
            if live.iter().all(|i| got.contains(i)) || Instant::now() > deadline {
                return Ok(timeline::event_arrivals(&obs, origin, asked));
            }
            host::pause(POLL)?;
        }
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut a) = self.agents[i].take() {
            Self::stop_agent(&mut a);
        }
    }

    fn stop(&mut self) {
        // SIGKILL all first, then reap: the agents need not leave gracefully after the run.
        for a in self.agents.iter_mut().flatten() {
            let _ = a.child.kill();
        }
        for mut a in self.agents.iter_mut().filter_map(Option::take) {
            Self::stop_agent(&mut a);
        }
    }

    fn wire_ports(&self) -> Vec<(u16, u16)> {
        vec![(self.base, self.base + self.n as u16 - 1)]
    }
}

impl Drop for SerfCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
