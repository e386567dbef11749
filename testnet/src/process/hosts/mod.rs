//! Emulated hosts: a testnet's nodes spread over network namespaces on one machine, each
//! namespace a host with its own address, joined by a bridge the testnet creates.
//!
//! `testnet up --hosts H` builds, for a private subnet `10.77.X.0/24` that no address or
//! route of the machine uses yet:
//!
//! - a bridge `plbX` holding `10.77.X.1`, the controller's address on the hosts' network;
//! - per host `h` (1-based), a namespace `peerlabXhH` whose `eth0` holds `10.77.X.(10+h)`,
//!   joined to the bridge by a veth pair whose bridge end is `plvXhH`;
//! - an nftables table `bridge peerlab_X` for partitions and loss, and `tc` token buckets
//!   for bandwidth (`faults.rs`).
//!
//! The hosts have no route beyond their subnet, so nodes can reach each other and the
//! controller, nothing else. Node `i` runs on host `i mod H + 1` (seeds on different
//! hosts), started through `ip netns exec`, listening on its host's address only.
//!
//! # How the controller reaches the control API
//!
//! A node's API binds its host's address (`allow_remote_api`), and the controller, in the
//! machine's own namespace, reaches it through the bridge with the bearer token from the
//! node's data dir. The bridge is a virtual link inside this kernel: no frame of it leaves
//! the machine, and only root (who can read every data dir anyway) can attach to it.
//! Binding 127.0.0.1 inside the namespace instead would make every API call enter the
//! namespace (`ip netns exec` per call, or a thread that switches namespaces), and the
//! measurements, written against plain API addresses, would have to know about it. Frames
//! between a host and the controller do not cross the bridge's `forward` hook, so a
//! partition between hosts never cuts the controller off.
//!
//! # Clean-up
//!
//! What is about to be built is recorded in `hosts.json` in the testnet dir *before* it is
//! built, and every name derives from `X` and `H`, so `testnet down` removes every table,
//! link and namespace also after the controller died or `up` failed half-way; removing
//! what does not exist is not an error.

#![allow(clippy::disallowed_methods)] // a driver: wall-clock time is its job

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::{TestnetError, io_err};

mod faults;
mod sys;

pub use faults::{
    Faults, LOSS_RESOLUTION, LinkFaults, MAX_RATE_MBIT, MIN_RATE_MBIT, TBF_LATENCY_MS, nft_script,
    parse_groups, parse_hosts, tbf_args, validate_link,
};
pub use sys::{PROGRAMS, find_program, is_root, preflight as hosts_preflight};

/// Name of the hosts' state file in the testnet dir.
pub const HOSTS_FILE: &str = "hosts.json";
/// Most hosts of a testnet: one namespace, two links and a process group each; beyond a few
/// dozen the machine's scheduler, not the network, shapes what is measured.
pub const MAX_HOSTS: usize = 64;
/// First two octets of the hosts' subnets (`10.77.X.0/24`): private (RFC 1918) and rarely
/// used by container engines, which prefer 10.88 (podman), 172.17 (docker) and 10.244
/// (Kubernetes).
pub const SUBNET_PREFIX: [u8; 2] = [10, 77];
/// Host `h` holds `10.77.X.(HOST_OFFSET + h)`; `.1` is the controller's.
pub const HOST_OFFSET: u8 = 10;
/// The interface of each host on its link to the bridge.
pub const HOST_IFACE: &str = "eth0";

/// A testnet's emulated hosts (`hosts.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hosts {
    /// `X` of the subnet `10.77.X.0/24`; every name derives from it.
    pub net: u8,
    /// Number of hosts.
    pub count: usize,
    /// Partitions, loss and rates in force.
    #[serde(default)]
    pub faults: Faults,
}

impl Hosts {
    /// The bridge.
    pub fn bridge(&self) -> String {
        format!("plb{}", self.net)
    }

    /// Host `h`'s namespace.
    pub fn namespace(&self, h: usize) -> String {
        format!("peerlab{}h{h}", self.net)
    }

    /// Host `h`'s port on the bridge (the bridge end of its veth pair).
    pub fn port(&self, h: usize) -> String {
        format!("plv{}h{h}", self.net)
    }

    /// The nftables table (family `bridge`).
    pub fn table(&self) -> String {
        format!("peerlab_{}", self.net)
    }

    /// Host `h`'s address.
    pub fn addr(&self, h: usize) -> Ipv4Addr {
        Ipv4Addr::new(
            SUBNET_PREFIX[0],
            SUBNET_PREFIX[1],
            self.net,
            HOST_OFFSET + h as u8,
        )
    }

    /// The controller's address on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET_PREFIX[0], SUBNET_PREFIX[1], self.net, 1)
    }

    /// The host node `i` runs on.
    pub fn host_of(&self, i: usize) -> usize {
        i % self.count + 1
    }

    /// Reads `hosts.json` from `dir` (`None` when the testnet has no emulated hosts).
    pub fn load(dir: &Path) -> Result<Option<Hosts>, TestnetError> {
        let path = dir.join(HOSTS_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| TestnetError::Io {
                    path: path.display().to_string(),
                    msg: format!("not a hosts file: {e}"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Writes `hosts.json` into `dir` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), TestnetError> {
        let path = dir.join(HOSTS_FILE);
        let tmp = dir.join(format!("{HOSTS_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|e| TestnetError::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        fs::write(&tmp, text).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    /// Builds `count` hosts on a free subnet, recording them in `dir` first; on failure
    /// removes what it built.
    pub fn create(dir: &Path, count: usize, link: LinkFaults) -> Result<Hosts, TestnetError> {
        if count == 0 || count > MAX_HOSTS {
            return Err(TestnetError::Invalid(format!(
                "--hosts must be in 1..={MAX_HOSTS}"
            )));
        }
        validate_link(&link)?;
        sys::preflight()?;
        let net = free_subnet()?;
        let hosts = Hosts {
            net,
            count,
            faults: Faults {
                partition: Vec::new(),
                links: vec![link; count],
            },
        };
        hosts.save(dir)?;
        if let Err(e) = hosts.build() {
            let _ = hosts.destroy(dir);
            return Err(e);
        }
        Ok(hosts)
    }

    fn build(&self) -> Result<(), TestnetError> {
        let br = self.bridge();
        let gw = format!("{}/24", self.gateway());
        sys::run("ip", &["link", "add", &br, "type", "bridge"], None)?;
        sys::run("ip", &["addr", "add", &gw, "dev", &br], None)?;
        sys::run("ip", &["link", "set", &br, "up"], None)?;
        for h in 1..=self.count {
            let ns = self.namespace(h);
            let port = self.port(h);
            let addr = format!("{}/24", self.addr(h));
            sys::run("ip", &["netns", "add", &ns], None)?;
            sys::run(
                "ip",
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", HOST_IFACE, "netns", &ns,
                ],
                None,
            )?;
            sys::run("ip", &["link", "set", &port, "master", &br, "up"], None)?;
            sys::run("ip", &["-n", &ns, "addr", "add", &addr, "dev", HOST_IFACE], None)?;
            sys::run("ip", &["-n", &ns, "link", "set", HOST_IFACE, "up"], None)?;
            sys::run("ip", &["-n", &ns, "link", "set", "lo", "up"], None)?;
        }
        self.apply()
    }

    /// Loads the nftables table and the token buckets for the faults in force.
    pub fn apply(&self) -> Result<(), TestnetError> {
        let script = nft_script(&self.table(), &self.faults, |h| self.port(h));
        sys::run("nft", &["-f", "-"], Some(&script))?;
        for h in 1..=self.count {
            let link = self.faults.links.get(h - 1).copied().unwrap_or_default();
            let ns = self.namespace(h);
            let port = self.port(h);
            match link.rate_mbit {
                Some(mbit) => {
                    // What the host receives leaves the bridge through its port; what it
                    // sends leaves the namespace through its eth0.
                    let a = tbf_args(&port, mbit);
                    sys::run("tc", &a.iter().map(String::as_str).collect::<Vec<_>>(), None)?;
                    let mut b = vec!["-n".to_string(), ns.clone()];
                    b.extend(tbf_args(HOST_IFACE, mbit));
                    sys::run("tc", &b.iter().map(String::as_str).collect::<Vec<_>>(), None)?;
                }
                None => {
                    // No qdisc of ours there is fine.
                    let _ = sys::run("tc", &["qdisc", "del", "dev", &port, "root"], None);
                    let _ = sys::run(
                        "tc",
                        &["-n", &ns, "qdisc", "del", "dev", HOST_IFACE, "root"],
                        None,
                    );
                }
            }
        }
        Ok(())
    }

    /// Changes the faults, applies them and records them in `dir`.
    pub fn set_faults(&mut self, dir: &Path, faults: Faults) -> Result<(), TestnetError> {
        for l in &faults.links {
            validate_link(l)?;
        }
        self.faults = faults;
        self.save(dir)?;
        self.apply()
    }

    /// Removes the table, every link and namespace and the bridge (whatever of them
    /// exists), then `hosts.json`. Run after the nodes stopped: a namespace with a
    /// process in it lives on until the process ends. Returns what could not be removed.
    pub fn destroy(&self, dir: &Path) -> Vec<String> {
        let _ = sys::run("nft", &["delete", "table", "bridge", &self.table()], None);
        let present = sys::namespaces();
        for h in 1..=self.count {
            let port = self.port(h);
            if sys::link_exists(&port) {
                // Deleting one end removes the pair, the host's eth0 with it.
                let _ = sys::run("ip", &["link", "del", &port], None);
            }
            let ns = self.namespace(h);
            if present.contains(&ns) {
                let _ = sys::run("ip", &["netns", "del", &ns], None);
            }
        }
        if sys::link_exists(&self.bridge()) {
            let _ = sys::run("ip", &["link", "del", &self.bridge()], None);
        }
        let left = self.leftovers();
        if left.is_empty() {
            let _ = fs::remove_file(dir.join(HOSTS_FILE));
        }
        left
    }

    /// Tables, links and namespaces of these hosts that exist.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        if sys::nft_table_exists("bridge", &self.table()) {
            left.push(format!("nftables table bridge {}", self.table()));
        }
        if sys::link_exists(&self.bridge()) {
            left.push(format!("link {}", self.bridge()));
        }
        let present = sys::namespaces();
        for h in 1..=self.count {
            if sys::link_exists(&self.port(h)) {
                left.push(format!("link {}", self.port(h)));
            }
            if present.contains(&self.namespace(h)) {
                left.push(format!("namespace {}", self.namespace(h)));
            }
        }
        left
    }

    /// A command that runs `exe` on host `h`.
    pub fn command(&self, h: usize, exe: &Path) -> Command {
        let ip = find_program("ip").unwrap_or_else(|| "ip".into());
        let mut cmd = Command::new(ip);
        cmd.arg("netns").arg("exec").arg(self.namespace(h)).arg(exe);
        cmd
    }
}

/// The first `X` in 1..=254 such that `10.77.X.0/24` appears in no address or route of
/// this machine and none of the names derived from it exists.
fn free_subnet() -> Result<u8, TestnetError> {
    let used = sys::ipv4_in_use();
    let namespaces = sys::namespaces();
    for x in 1..=254u8 {
        let prefix = format!("{}.{}.{x}.", SUBNET_PREFIX[0], SUBNET_PREFIX[1]);
        let h = Hosts {
            net: x,
            count: 1,
            faults: Faults::default(),
        };
        let taken = used.contains(&prefix)
            || sys::link_exists(&h.bridge())
            || sys::link_exists(&h.port(1))
            || namespaces.iter().any(|n| n.starts_with(&format!("peerlab{x}h")));
        if !taken {
            return Ok(x);
        }
    }
    Err(TestnetError::Resources(format!(
        "no free subnet in {}.{}.0.0/16 for emulated hosts",
        SUBNET_PREFIX[0], SUBNET_PREFIX[1]
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_interface_names_and_hosts_spread_the_seeds() {
        let h = Hosts {
            net: 254,
            count: MAX_HOSTS,
            faults: Faults::default(),
        };
        // IFNAMSIZ is 16 with the terminating zero.
        assert!(h.port(MAX_HOSTS).len() <= 15 && h.bridge().len() <= 15);
        assert_eq!(h.addr(3), Ipv4Addr::new(10, 77, 254, 13));
        assert_eq!(h.gateway(), Ipv4Addr::new(10, 77, 254, 1));
        assert!(usize::from(HOST_OFFSET) + MAX_HOSTS < 255);
        let six = Hosts { count: 6, ..h };
        assert_eq!((0..3).map(|i| six.host_of(i)).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(six.host_of(6), 1);
        let back: Hosts = serde_json::from_str(&serde_json::to_string(&six).unwrap()).unwrap();
        assert_eq!(back, six);
    }
}
