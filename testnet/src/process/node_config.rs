//! What a testnet node runs with: the protocol timings of a testnet ([`Timings`]), its
//! connection limits, its listen addresses and the seeds it bootstraps through.

use peerlab_node::config::{Config, Transport};
use serde::{Deserialize, Serialize};

use super::{Mode, SEEDS, Testnet};

/// Nodes in a testnet for which one maintenance period of [`BASE_MAINTENANCE_MS`] is kept;
/// beyond it the period grows in proportion to `N`. The machine's cores are fixed, and
/// DHT maintenance costs every node about 20 messages per vnode and period, so a constant
/// period would make the testnet-wide message rate (and CPU load) grow with `N`: 100
/// processes at 1 s saturate two cores. Scaling keeps the total rate near that of 40
/// nodes at 1 s, at the price of slower repair — the Chord paper itself uses 30 s.
pub const NODES_PER_BASE_PERIOD: usize = 40;
/// The LAN profile's DHT maintenance period, ms.
pub const BASE_MAINTENANCE_MS: u64 = 1000;

/// Connection idle timeout of a testnet's nodes, seconds. Even with gossip partners from a
/// partial view a node of a 300-node testnet keeps ~220 peers busy (4 vnodes' fingers in
/// both directions, successors, gossip partners both ways, SWIM probes, flooding links);
/// two minutes instead of ten changed neither that count nor the start-up time, and only
/// adds re-handshakes for the peers a node talks to now and then.
pub const TESTNET_IDLE_TIMEOUT_SECS: u64 = 600;

/// Connection idle timeout of in-process nodes, seconds. All nodes share one address
/// space, and every connection costs both of its ends there (~55 KiB together: quinn's
/// connection and transmit buffer, libp2p's connection task, channels). With
/// [`TESTNET_IDLE_TIMEOUT_SECS`] a 1000-node in-process testnet kept every peer a node had
/// ever looked up through (iterative lookups, probes, member syncs): ~180 connections per
/// node after 5 minutes, 11.8 GiB resident and growing by ~2 GiB a minute before it had
/// converged. A minute (plus the streams' own idle time) keeps the peers a node works with
/// and closes the ones it met once.
pub const IN_PROCESS_IDLE_TIMEOUT_SECS: u64 = 60;

/// A testnet's gossip partial view (see `peerlab_gossip::Config::partner_view`): with
/// partners drawn from all members, every node of a testnet connects to every other — at
/// 300 processes ~45 000 QUIC connections and their handshakes, which cost more of the
/// machine during start-up than the protocols themselves. 16 is about 3·ln N at N = 300:
/// a random graph of that out-degree is connected with overwhelming probability and has
/// diameter ~2–3, so rumors spread nearly as fast as with uniform partners (the
/// simulator's prediction in `testnet converge` uses the same view).
pub const TESTNET_GOSSIP_VIEW: usize = 16;

/// Connections a testnet node may hold beyond one per other node (dials racing, clients).
pub const TESTNET_SPARE_CONNECTIONS: u32 = 64;

/// Protocol timings of a testnet's nodes (recorded in `testnet.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timings {
    /// DHT maintenance period and SWIM probe period, ms; `None`: chosen from `N` (see
    /// [`Timings::maintenance_for`]).
    pub maintenance_ms: Option<u64>,
    /// Gossip round period, ms.
    pub gossip_interval_ms: u64,
    /// Gossip fan-out.
    pub gossip_fanout: usize,
    /// Gossip partial view (0: partners from all members).
    pub gossip_view: usize,
    /// SWIM probe period, ms; `None`: the maintenance period (see [`Timings::apply`]).
    /// `testnet compare` sets memberlist's 1 s here while DHT maintenance keeps its scaled
    /// period.
    pub probe_ms: Option<u64>,
    /// One-way delay every node adds to each frame it sends, ms (`peerlab node
    /// --delay-ms`: latency injected by the node, as emulated hosts share one machine and
    /// its kernel may lack `netem`); 0: none.
    pub delay_ms: u64,
    /// Spread of that delay: uniform in `delay_ms ± delay_jitter_ms`, ms.
    pub delay_jitter_ms: u64,
}

impl Default for Timings {
    /// The LAN profile: gossip every 200 ms to 3 peers; maintenance chosen from `N`.
    fn default() -> Self {
        Timings {
            maintenance_ms: None,
            gossip_interval_ms: 200,
            gossip_fanout: 3,
            gossip_view: TESTNET_GOSSIP_VIEW,
            probe_ms: None,
            delay_ms: 0,
            delay_jitter_ms: 0,
        }
    }
}

impl Timings {
    /// Sets these timings, and the testnet's connection limits, in node `cfg` of an
    /// `n`-node testnet (shared by `testnet up` and `peerlab sim startup`).
    pub fn apply(&self, cfg: &mut Config, n: usize) {
        cfg.maintenance_ms = Some(self.maintenance_for(n));
        // The failure detector's period scales like maintenance: under a load of hundreds
        // of runnable processes, a 500 ms probe timeout mostly measures the scheduler.
        cfg.probe_ms = Some(self.probe_ms.unwrap_or_else(|| self.maintenance_for(n)));
        cfg.gossip_interval_ms = Some(self.gossip_interval_ms);
        cfg.gossip_fanout = Some(self.gossip_fanout);
        cfg.gossip_view = Some(self.gossip_view);
        cfg.delay_ms = self.delay_ms;
        cfg.delay_jitter_ms = self.delay_jitter_ms;
        cfg.idle_timeout_secs = TESTNET_IDLE_TIMEOUT_SECS;
        cfg.max_connections = cfg
            .max_connections
            .max(n as u32 + TESTNET_SPARE_CONNECTIONS);
    }

    /// The maintenance period for `n` nodes: [`BASE_MAINTENANCE_MS`] up to
    /// [`NODES_PER_BASE_PERIOD`] nodes, then in proportion to `n`.
    pub fn maintenance_for(&self, n: usize) -> u64 {
        self.maintenance_ms.unwrap_or_else(|| {
            (BASE_MAINTENANCE_MS * n as u64 / NODES_PER_BASE_PERIOD as u64).max(BASE_MAINTENANCE_MS)
        })
    }
}

/// The nodes node `i` of an `n`-node testnet bootstraps through: node 0 starts the
/// overlay; the other seeds join through the first live seed; everyone else through two
/// live seeds (a dead first seed does not stop a join). `alive(s)` tells whether seed `s`
/// is running.
pub fn bootstrap_through(i: usize, n: usize, alive: impl Fn(usize) -> bool) -> Vec<usize> {
    let live_seeds: Vec<usize> = (0..SEEDS.min(n)).filter(|&s| s != i && alive(s)).collect();
    if i == 0 && live_seeds.is_empty() {
        Vec::new()
    } else if i < SEEDS {
        live_seeds.into_iter().take(1).collect()
    } else {
        let k = live_seeds.len().max(1);
        (0..2.min(live_seeds.len()))
            .map(|j| live_seeds[(i + j) % k])
            .collect()
    }
}

impl Testnet {
    /// The config a node starts with.
    pub(super) fn node_config(&self, i: usize) -> Config {
        let n = self.manifest.nodes.len();
        let mut cfg = Config::local(self.manifest.transport);
        cfg.vnodes = self.manifest.vnodes;
        cfg.seed = Some(self.seed.wrapping_add(i as u64));
        self.manifest.timings.apply(&mut cfg, n);
        if self.manifest.mode == Mode::InProcess {
            cfg.idle_timeout_secs = IN_PROCESS_IDLE_TIMEOUT_SECS;
        }
        let ip = match &self.hosts {
            Some(h) => {
                // The controller reaches the API through the bridge (see `hosts`), and
                // every peer of a host shares its address: the per-IP connection limit,
                // meant for identities crowding in from one machine, would cut the
                // testnet's own nodes off.
                cfg.allow_remote_api = true;
                cfg.max_connections_per_ip = cfg.max_connections;
                h.addr(h.host_of(i))
            }
            None => std::net::Ipv4Addr::LOCALHOST,
        };
        let (p, api, probe) = match self.base_port {
            Some(base) => (
                base as usize + i,
                base as usize + n + i,
                base as usize + 2 * n + i,
            ),
            None => (0, 0, 0),
        };
        cfg.probe_port = probe as u16;
        if self.base_port.is_some() || self.hosts.is_some() {
            cfg.listen = match self.manifest.transport {
                Transport::Quic => vec![
                    format!("/ip4/{ip}/udp/{p}/quic-v1"),
                    format!("/ip4/{ip}/tcp/{p}"),
                ],
                Transport::Tcp => vec![format!("/ip4/{ip}/tcp/{p}")],
            };
            cfg.api = format!("{ip}:{api}");
        }
        let through = bootstrap_through(i, n, |s| self.manifest.nodes[s].alive);
        cfg.bootstrap = through
            .into_iter()
            .filter_map(|s| self.bootstrap_addr(s))
            .collect();
        cfg
    }

    fn bootstrap_addr(&self, i: usize) -> Option<String> {
        let want = match self.manifest.transport {
            Transport::Quic => "/quic-v1/",
            Transport::Tcp => "/tcp/",
        };
        self.manifest.nodes[i]
            .listen_addrs
            .iter()
            .find(|a| a.contains(want))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_goes_through_live_earlier_seeds() {
        let all = |_| true;
        assert_eq!(bootstrap_through(0, 10, |_| false), Vec::<usize>::new());
        assert_eq!(bootstrap_through(1, 10, |s| s < 1), vec![0]);
        assert_eq!(bootstrap_through(2, 10, |s| s < 2), vec![0]);
        // Everyone else: two distinct seeds, spread by index.
        for i in SEEDS..10 {
            let t = bootstrap_through(i, 10, all);
            assert_eq!(t.len(), 2, "node {i}: {t:?}");
            assert_ne!(t[0], t[1]);
            assert!(t.iter().all(|&s| s < SEEDS));
        }
        // A dead first seed does not stop a join.
        assert_eq!(bootstrap_through(7, 10, |s| s != 0).len(), 2);
        assert!(!bootstrap_through(7, 10, |s| s != 0).contains(&0));
    }
}
