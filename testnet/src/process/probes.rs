//! What the operating system says: open-file limits, whether a pid lives and what it runs,
//! resident memory, and the preflight check that the machine can host a testnet at all.
//!
//! Everything here reads `/proc` (Linux) or runs `kill -l`; nothing changes the system.

use std::fs;
use std::process::{Command, Stdio};

use peerlab_node::config::Transport;

use super::{MAX_NODES, Mode, TestnetError, UpOptions};

/// File descriptors one in-process node needs (its QUIC and probe UDP sockets, TCP and API
/// listeners, a few API connections, its store file; the runtime is shared), with margin:
/// a node process of a 300-node testnet, runtime and log files included, held 16 before it
/// had a probe socket.
pub const FDS_PER_IN_PROCESS_NODE: u64 = 17;
/// File descriptors one node process needs beyond one per TCP connection.
pub const FDS_PER_PROCESS: u64 = 128;

/// The soft and hard limits on open files of this process.
pub fn fd_limits() -> Option<(u64, u64)> {
    let text = fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut it = line["Max open files".len()..].split_whitespace();
    let parse = |s: Option<&str>| match s {
        Some("unlimited") => Some(u64::MAX),
        Some(v) => v.parse().ok(),
        None => None,
    };
    Some((parse(it.next())?, parse(it.next())?))
}

/// Checks up front that the machine can host `opts`: node count, file descriptors, the
/// `kill` program, and free ports when a range is configured.
pub fn preflight(opts: &UpOptions) -> Result<(), TestnetError> {
    if opts.nodes == 0 || opts.nodes > MAX_NODES {
        return Err(TestnetError::Invalid(format!(
            "--nodes must be in 1..={MAX_NODES}"
        )));
    }
    if opts.vnodes == 0 || opts.vnodes > 64 {
        return Err(TestnetError::Invalid("--vnodes must be in 1..=64".into()));
    }
    if let Some((soft, hard)) = fd_limits() {
        let n = opts.nodes as u64;
        let need = match opts.mode {
            // QUIC connections share their node's UDP socket; over TCP each connection is
            // a descriptor, and a node may hold one to every other node.
            Mode::InProcess => match opts.transport {
                Transport::Quic => n * FDS_PER_IN_PROCESS_NODE + 256,
                Transport::Tcp => n * (FDS_PER_IN_PROCESS_NODE + n) + 256,
            },
            // Each node process may hold a TCP connection to every other node.
            Mode::Processes => n + FDS_PER_PROCESS,
            // Not started here.
            Mode::Remote => 0,
        };
        if soft < need {
            return Err(TestnetError::Resources(format!(
                "the open-file limit (ulimit -n) is {soft}, but {} {} nodes need about {need}: \
                 raise it with `ulimit -n {}` (hard limit {hard}) or start fewer nodes",
                opts.nodes,
                if opts.mode == Mode::InProcess {
                    "in-process"
                } else {
                    ""
                },
                need.min(hard)
            )));
        }
    }
    if opts.mode == Mode::Processes {
        if opts.program.is_none() {
            return Err(TestnetError::Invalid(
                "a process testnet needs a node program".into(),
            ));
        }
        let ok = Command::new("kill")
            .arg("-l")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(TestnetError::Resources(
                "the `kill` program is needed to stop node processes (install procps)".into(),
            ));
        }
    }
    if let Some(base) = opts.base_port {
        let last = base as usize + 3 * opts.nodes - 1;
        if base < 1024 || last > u16::MAX as usize {
            return Err(TestnetError::Invalid(format!(
                "--base-port {base}: ports {base}..{last} must lie in 1024..=65535"
            )));
        }
        for i in 0..opts.nodes {
            let p = base + i as u16;
            let api = base + (opts.nodes + i) as u16;
            let probe = base + (2 * opts.nodes + i) as u16;
            let busy = std::net::UdpSocket::bind(("127.0.0.1", p)).is_err()
                || std::net::TcpListener::bind(("127.0.0.1", p)).is_err()
                || std::net::TcpListener::bind(("127.0.0.1", api)).is_err()
                || std::net::UdpSocket::bind(("127.0.0.1", probe)).is_err();
            if busy {
                return Err(TestnetError::Resources(format!(
                    "port {p}, {api} or {probe} on 127.0.0.1 is in use: choose another \
                     --base-port, or omit it to let the OS assign ports"
                )));
            }
        }
    }
    Ok(())
}

/// Whether process `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// Whether `/proc/<pid>/cmdline` contains `needle`.
pub fn cmdline_contains(pid: u32, needle: &str) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            let s = String::from_utf8_lossy(&b).replace('\0', " ");
            s.contains(needle)
        })
        .unwrap_or(false)
}

/// Proportional set size of `pid` in KiB (`Pss` in `/proc/<pid>/smaps_rollup`): its
/// resident memory with every page shared by k processes counted 1/k. Node processes share
/// the `peerlab` binary's pages (~20 MiB resident in each), which a sum of RSS counts once
/// per process; a sum of PSS is what the machine holds.
pub fn pss_kib(pid: u32) -> u64 {
    proc_kib(pid, "smaps_rollup", "Pss:")
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_kib(pid, "status", "VmRSS:")
}

/// The KiB figure of the line starting with `field` in `/proc/<pid>/<file>`; 0 if the
/// process or the line is gone.
fn proc_kib(pid: u32, file: &str, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
