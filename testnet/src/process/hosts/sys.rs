//! The system programs that build and tear down emulated hosts: `ip` (namespaces, links,
//! addresses), `nft` (the bridge's filter table) and `tc` (bandwidth shaping).
//!
//! Each call runs one program with its arguments (or a script on stdin for `nft -f -`) and
//! turns a failure into one line naming the command and what it printed. Nothing here
//! decides what to build; `mod.rs` and `faults.rs` do.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::process::TestnetError;

/// The programs a multi-host testnet needs, with the Debian package that has each.
pub const PROGRAMS: [(&str, &str); 3] =
    [("ip", "iproute2"), ("nft", "nftables"), ("tc", "iproute2")];

/// Directories searched for [`PROGRAMS`] beside `PATH` (root's usual sbin dirs, which a
/// non-login shell's `PATH` may lack).
const SBIN_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Whether this process runs as root (effective uid 0), read from `/proc/self/status`.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Where program `name` is, searching `PATH` and [`SBIN_DIRS`].
pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(|d| Path::new(d).to_path_buf()))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Checks that emulated hosts can be built here: root, and every one of [`PROGRAMS`].
/// The error says what is missing and how to get it.
pub fn preflight() -> Result<(), TestnetError> {
    if !is_root() {
        return Err(TestnetError::Resources(
            "must run as root to create network namespaces (emulated hosts: namespaces, veth \
             links, nftables and tc change the machine's network); run as root, or leave out --hosts"
                .into(),
        ));
    }
    match PROGRAMS.iter().find(|(p, _)| find_program(p).is_none()) {
        Some((p, pkg)) => Err(TestnetError::Resources(format!(
            "`{p}` not found: install {pkg} (emulated hosts need `ip`, `nft` and `tc`)"
        ))),
        None => Ok(()),
    }
}

/// Runs `program args…` (with `stdin` fed in when given); an error carries the command
/// line and what it printed on stderr.
pub(super) fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, TestnetError> {
    let exe = find_program(program).ok_or_else(|| {
        TestnetError::Resources(format!(
            "`{program}` not found (install iproute2 / nftables)"
        ))
    })?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let line = format!("{program} {}", args.join(" "));
    let mut child = cmd
        .spawn()
        .map_err(|e| TestnetError::Failed(format!("{line}: {e}")))?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(text.as_bytes())
            .map_err(|e| TestnetError::Failed(format!("{line}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| TestnetError::Failed(format!("{line}: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(TestnetError::Failed(format!(
            "{line}: {}",
            err.trim().lines().next().unwrap_or("failed")
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Network namespaces that exist (`ip netns list`, first word of each line).
pub(super) fn namespaces() -> Vec<String> {
    run("ip", &["netns", "list"], None)
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a network link `name` exists in this namespace.
pub(super) fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The IPv4 addresses and routes of this namespace, as `ip` prints them (used to find a
/// subnet nobody uses).
pub(super) fn ipv4_in_use() -> String {
    let mut s = run("ip", &["-4", "-o", "addr", "show"], None).unwrap_or_default();
    s.push_str(&run("ip", &["-4", "route", "show", "table", "all"], None).unwrap_or_default());
    s
}

/// Whether the nftables table `family name` exists.
pub(super) fn nft_table_exists(family: &str, name: &str) -> bool {
    run("nft", &["list", "table", family, name], None).is_ok()
}

/// Names of the network links in this namespace (`/sys/class/net`).
pub(super) fn links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a process runs in namespace `ns` (`ip netns pids`).
pub(super) fn namespace_busy(ns: &str) -> bool {
    run("ip", &["netns", "pids", ns], None).is_ok_and(|s| !s.trim().is_empty())
}

/// nftables tables of family `bridge`, by name.
pub(super) fn bridge_tables() -> Vec<String> {
    run("nft", &["list", "tables", "bridge"], None)
        .map(|s| {
            s.lines()
                .filter_map(|l| l.strip_prefix("table bridge "))
                .map(|n| n.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}
