//! What the comparison needs from the machine: finding programs, Ctrl-C, CPU time of a
//! process, and bytes on the loopback wire counted by nftables.
//!
//! # Bytes on the wire
//!
//! Each system's agents use port ranges of their own on 127.0.0.1 (Serf: memberlist's UDP
//! and TCP on `bind` ports; peerlab: QUIC and TCP on the nodes' listen ports, and the UDP
//! ports of their probe datagrams). An nftables table of this process's own (`inet
//! peerlab_compare_<pid>`) counts, at the `output` hook, every packet whose source or
//! destination port lies in one of those ranges — two rules, the first
//! that matches counts, so a packet between two agents is counted once, when it is sent.
//! Counted are whole IP packets (IP, UDP/TCP and QUIC headers included), the same for both
//! systems; control traffic (Serf RPC, peerlab's HTTP API) uses other ports and is not
//! counted. The table only counts (its chain's policy is accept) and is deleted when the
//! counter is dropped.

#![allow(clippy::disallowed_methods)] // a driver: wall-clock time is its job

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::process::TestnetError;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static WATCHING: AtomicBool = AtomicBool::new(false);

/// Starts a thread that turns SIGINT and SIGTERM into [`interrupted`] (once per process):
/// the comparison's waits then stop early and everything it started is stopped.
pub fn watch_interrupts() {
    if WATCHING.swap(true, Ordering::SeqCst) {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("compare-signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                let _ = tx.send(());
                return;
            };
            rt.block_on(async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                let ctrl_c = tokio::signal::ctrl_c();
                let _ = tx.send(());
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = async {
                        match term.as_mut() {
                            Some(t) => { t.recv().await; }
                            None => std::future::pending::<()>().await,
                        }
                    } => {}
                }
                INTERRUPTED.store(true, Ordering::SeqCst);
            });
        });
    if spawned.is_ok() {
        // Handlers installed before the run starts anything.
        let _ = rx.recv_timeout(Duration::from_secs(5));
    }
}

/// Whether SIGINT or SIGTERM arrived since [`watch_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The error a wait returns when interrupted.
pub fn check_interrupt() -> Result<(), TestnetError> {
    if interrupted() {
        Err(TestnetError::Failed(
            "interrupted; everything started was stopped".into(),
        ))
    } else {
        Ok(())
    }
}

/// Sleeps `d` in short steps, returning early with an error when interrupted.
pub fn pause(d: Duration) -> Result<(), TestnetError> {
    let end = Instant::now() + d;
    loop {
        check_interrupt()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

/// The wall clock as Unix seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Finds `program`: `explicit` if given (it must exist), else the first executable file of
/// that name in the directories of `path_var` (the `PATH` variable's value).
pub fn locate(program: &str, explicit: Option<&Path>, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::split_paths(path_var?)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Clock ticks per second of `/proc/<pid>/stat` (Linux's `USER_HZ`, 100 on every
/// architecture it supports for this interface).
pub const USER_HZ: f64 = 100.0;

/// User + system CPU seconds `pid` has used (`None` once it is gone).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// Counts bytes on the loopback wire whose source or destination port lies in given ranges
/// (see the module docs); deletes its nftables table when dropped.
pub struct WireCounter {
    table: String,
}

/// The `nft` program.
fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new("nft");
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run nft ({e}); install nftables"))?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        use std::io::Write as _;
        w.write_all(text.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl WireCounter {
    /// Installs counters for the port ranges `lo..=hi` (needs root, or CAP_NET_ADMIN, and
    /// `nft`). A packet is counted once, by the first rule it matches.
    pub fn install(ranges: &[(u16, u16)]) -> Result<WireCounter, String> {
        let table = format!("peerlab_compare_{}", std::process::id());
        // A table left by an earlier run of this pid (killed with SIGKILL) goes first.
        let _ = nft(&["delete", "table", "inet", &table], None);
        let set: Vec<String> = ranges.iter().map(|(lo, hi)| format!("{lo}-{hi}")).collect();
        let set = set.join(", ");
        let script = format!(
            "table inet {table} {{\n\
               chain out {{\n\
                 type filter hook output priority 0; policy accept;\n\
                 meta l4proto {{ tcp, udp }} th sport {{ {set} }} counter accept\n\
                 meta l4proto {{ tcp, udp }} th dport {{ {set} }} counter accept\n\
               }}\n\
             }}\n"
        );
        nft(&["-f", "-"], Some(&script))?;
        Ok(WireCounter { table })
    }

    /// Bytes counted so far.
    pub fn bytes(&self) -> Result<u64, String> {
        let text = nft(&["list", "table", "inet", &self.table], None)?;
        Ok(sum_counter_bytes(&text))
    }
}

impl Drop for WireCounter {
    fn drop(&mut self) {
        let _ = nft(&["delete", "table", "inet", &self.table], None);
    }
}

/// The sum of `counter packets P bytes B` in an `nft list` output.
pub fn sum_counter_bytes(text: &str) -> u64 {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "bytes")
        .filter_map(|w| w[1].parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_finds_executables_on_the_path_only() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("serf");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        // Not executable yet: not found.
        assert_eq!(locate("serf", None, Some(&path)), None);
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(locate("serf", None, Some(&path)), Some(exe.clone()));
        assert_eq!(locate("serf", None, None), None);
        // An explicit path must exist; the PATH is not consulted then.
        assert_eq!(
            locate("serf", Some(&dir.path().join("nope")), Some(&path)),
            None
        );
        assert_eq!(locate("serf", Some(&exe), None), Some(exe));
    }

    #[test]
    fn counter_bytes_are_summed() {
        let text = "table inet t {\n chain out {\n  type filter hook output priority filter; policy accept;\n  \
                    meta l4proto { tcp, udp } th sport 21000-21099 counter packets 10 bytes 1500 accept\n  \
                    meta l4proto { tcp, udp } th dport 21000-21099 counter packets 2 bytes 120 accept\n }\n}\n";
        assert_eq!(sum_counter_bytes(text), 1620);
        assert_eq!(sum_counter_bytes(""), 0);
    }

    #[test]
    fn cpu_time_of_this_process_is_read() {
        let t = cpu_secs(std::process::id()).expect("own /proc/<pid>/stat");
        assert!(t >= 0.0);
        assert_eq!(cpu_secs(u32::MAX), None);
    }
}
