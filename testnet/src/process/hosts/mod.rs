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
//! A node's API binds its host's address (`allow_remote_api`, so TLS only), and the
//! controller, in the machine's own namespace, reaches it through the bridge with the
//! bearer token from the node's data dir, inside TLS pinned to the node's `api.cert`: no
//! token crosses the bridge in cleartext.
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
//! what does not exist is not an error. It also sweeps every name with the testnet's
//! prefixes (`peerlabXh*`, `plvXh*`), whatever `H` says. `testnet down --sweep` removes the
//! emulated hosts of every testnet whose namespaces hold no process, for when the testnet
//! dir itself is gone ([`sweep_idle`]).

#![allow(clippy::disallowed_methods)] // a driver: wall-clock time is its job

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::{TestnetError, io_err, save_json};

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

/// What `testnet up --hosts` builds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HostsOptions {
    /// Number of hosts (network namespaces).
    pub count: usize,
    /// Loss and bandwidth every host's link starts with.
    pub link: LinkFaults,
}

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
        save_json(dir, HOSTS_FILE, self)
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
            sys::run(
                "ip",
                &["-n", &ns, "addr", "add", &addr, "dev", HOST_IFACE],
                None,
            )?;
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
                    sys::run(
                        "tc",
                        &a.iter().map(String::as_str).collect::<Vec<_>>(),
                        None,
                    )?;
                    let mut b = vec!["-n".to_string(), ns.clone()];
                    b.extend(tbf_args(HOST_IFACE, mbit));
                    sys::run(
                        "tc",
                        &b.iter().map(String::as_str).collect::<Vec<_>>(),
                        None,
                    )?;
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
        remove_net(self.net);
        let left = self.leftovers();
        if left.is_empty() {
            let _ = fs::remove_file(dir.join(HOSTS_FILE));
        }
        left
    }

    /// Tables, links and namespaces with this testnet's names that exist.
    pub fn leftovers(&self) -> Vec<String> {
        let names = Names::of(self.net);
        let mut left = Vec::new();
        if sys::nft_table_exists("bridge", &names.table) {
            left.push(format!("nftables table bridge {}", names.table));
        }
        left.extend(
            sys::links()
                .into_iter()
                .filter(|l| names.is_link(l))
                .map(|l| format!("link {l}")),
        );
        left.extend(
            sys::namespaces()
                .into_iter()
                .filter(|n| names.is_namespace(n))
                .map(|n| format!("namespace {n}")),
        );
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

/// The names every resource of subnet `X` carries: what `down` sweeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// The bridge.
    pub bridge: String,
    /// Prefix of the hosts' ports on the bridge.
    pub port_prefix: String,
    /// Prefix of the hosts' namespaces.
    pub namespace_prefix: String,
    /// The nftables table (family `bridge`).
    pub table: String,
}

impl Names {
    /// The names of subnet `net`.
    pub fn of(net: u8) -> Names {
        Names {
            bridge: format!("plb{net}"),
            port_prefix: format!("plv{net}h"),
            namespace_prefix: format!("peerlab{net}h"),
            table: format!("peerlab_{net}"),
        }
    }

    /// Whether link `l` is this subnet's bridge or one of its ports.
    pub fn is_link(&self, l: &str) -> bool {
        l == self.bridge || host_number(l, &self.port_prefix).is_some()
    }

    /// Whether namespace `n` is one of this subnet's hosts.
    pub fn is_namespace(&self, n: &str) -> bool {
        host_number(n, &self.namespace_prefix).is_some()
    }
}

/// `H` when `name` is `prefix` followed by a host number (so that `peerlab1h` does not
/// claim `peerlab11h2`: the `h` ends the subnet's digits).
fn host_number(name: &str, prefix: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.parse().ok()
}

/// The subnet `X` a peerlab namespace name `peerlabXhH` belongs to.
fn net_of_namespace(name: &str) -> Option<u8> {
    let rest = name.strip_prefix("peerlab")?;
    let (x, h) = rest.split_once('h')?;
    h.parse::<usize>().ok()?;
    x.parse().ok()
}

/// Removes the table, ports, namespaces and bridge named after subnet `net`, whichever
/// exist.
fn remove_net(net: u8) {
    let names = Names::of(net);
    let _ = sys::run("nft", &["delete", "table", "bridge", &names.table], None);
    for l in sys::links() {
        if host_number(&l, &names.port_prefix).is_some() {
            // Deleting one end removes the pair, the host's eth0 with it.
            let _ = sys::run("ip", &["link", "del", &l], None);
        }
    }
    for n in sys::namespaces() {
        if names.is_namespace(&n) {
            let _ = sys::run("ip", &["netns", "del", &n], None);
        }
    }
    if sys::link_exists(&names.bridge) {
        let _ = sys::run("ip", &["link", "del", &names.bridge], None);
    }
}

/// Removes the emulated hosts of every testnet on this machine none of whose namespaces
/// holds a process (a testnet whose dir and controller are gone); returns the subnets
/// removed. Subnets with a running node are left alone.
pub fn sweep_idle() -> Result<Vec<u8>, TestnetError> {
    sys::preflight()?;
    let namespaces = sys::namespaces();
    let mut nets: Vec<u8> = namespaces
        .iter()
        .filter_map(|n| net_of_namespace(n))
        .collect();
    for l in sys::links() {
        if let Some(x) = l.strip_prefix("plb").and_then(|x| x.parse().ok()) {
            nets.push(x);
        }
    }
    for t in sys::bridge_tables() {
        if let Some(x) = t.strip_prefix("peerlab_").and_then(|x| x.parse().ok()) {
            nets.push(x);
        }
    }
    nets.sort_unstable();
    nets.dedup();
    let mut removed = Vec::new();
    for x in nets {
        let names = Names::of(x);
        let busy = namespaces
            .iter()
            .any(|n| names.is_namespace(n) && sys::namespace_busy(n));
        if !busy {
            remove_net(x);
            removed.push(x);
        }
    }
    Ok(removed)
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
        let names = Names::of(h.net);
        let taken = used.contains(&prefix)
            || sys::link_exists(&h.bridge())
            || sys::nft_table_exists("bridge", &names.table)
            || namespaces.iter().any(|n| names.is_namespace(n));
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
        assert_eq!(
            (0..3).map(|i| six.host_of(i)).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(six.host_of(6), 1);
        let back: Hosts = serde_json::from_str(&serde_json::to_string(&six).unwrap()).unwrap();
        assert_eq!(back, six);
    }

    #[test]
    fn the_sweep_claims_exactly_its_subnets_names() {
        let one = Names::of(1);
        assert!(one.is_namespace("peerlab1h1") && one.is_namespace("peerlab1h64"));
        assert!(
            !one.is_namespace("peerlab11h2"),
            "subnet 11 is another testnet's"
        );
        assert!(!one.is_namespace("peerlab1h") && !one.is_namespace("peerlab1hx"));
        assert!(one.is_link("plb1") && one.is_link("plv1h3"));
        assert!(!one.is_link("plb12") && !one.is_link("plv12h3") && !one.is_link("eth0"));
        assert_eq!(net_of_namespace("peerlab17h4"), Some(17));
        assert_eq!(net_of_namespace("peerlab17"), None);
        assert_eq!(net_of_namespace("other"), None);
        // Every name a testnet builds is one its sweep claims.
        let h = Hosts {
            net: 9,
            count: 3,
            faults: Faults::default(),
        };
        let n = Names::of(9);
        assert!(n.is_link(&h.bridge()) && (1..=3).all(|i| n.is_link(&h.port(i))));
        assert!((1..=3).all(|i| n.is_namespace(&h.namespace(i))));
        assert_eq!(n.table, h.table());
    }
}
