//! Node configuration: a TOML file in the data dir, overridden by command-line flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::NodeError;

/// Which transports a node listens on and dials.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// QUIC (the default), with TCP + Noise + Yamux beside it.
    #[default]
    Quic,
    /// TCP + Noise + Yamux only.
    Tcp,
}

/// Protocol timings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// LAN / local testnet: DHT maintenance every second, gossip's LAN preset (default).
    #[default]
    Lan,
    /// The papers' timings: DHT maintenance every 30 s, gossip's WAN preset.
    Wan,
}

/// A node's configuration. Every field has a default, so an empty file is valid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Multiaddrs to listen on. Default (empty): all interfaces, OS-assigned ports, on
    /// QUIC and TCP (or TCP only with `transport = "tcp"`).
    pub listen: Vec<String>,
    /// Multiaddrs of peers to join through (`/ip4/…/udp/…/quic-v1/p2p/<id>`). Default: none
    /// (the node starts a new overlay).
    pub bootstrap: Vec<String>,
    /// Address of the control API. Default `127.0.0.1:0` (an OS-assigned port; the chosen
    /// address is written to `api.addr` in the data dir).
    pub api: String,
    /// Allow the control API to bind a non-loopback address; it then speaks only TLS, with
    /// a certificate the node makes (`api.cert`, see `api_tls`), so that the token never
    /// crosses a network in cleartext. Default false: the API can change what the node
    /// stores and shares, so it stays local (plain HTTP on loopback) unless asked.
    pub allow_remote_api: bool,
    /// Names (DNS names or IPs) other hosts reach the control API by, put in its TLS
    /// certificate beside the bound IP and the host name; used with `allow_remote_api`
    /// (for example a pod's `peerlab-3.peerlab`). Default none.
    pub api_names: Vec<String>,
    /// Let the control API's `POST /crash` end the process at once, as SIGKILL would (for
    /// `testnet churn` against nodes on other hosts, which an orchestrator restarts).
    /// Default false.
    pub accept_crash: bool,
    /// Address of a read-only Prometheus endpoint (`GET /metrics`, no token), for scrapers
    /// that cannot hold each node's API token. Default none: metrics only through the
    /// token-protected control API. The counters reveal traffic volumes, not keys or data.
    pub metrics: Option<String>,
    /// Transport choice. Default QUIC (+ TCP).
    pub transport: Transport,
    /// Virtual nodes this peer runs on the Chord ring. Default 4: enough to even out the
    /// key share of a small testnet without multiplying maintenance traffic.
    pub vnodes: u16,
    /// Protocol timings (`lan` or `wan`). Default `lan`.
    pub profile: Profile,
    /// Connections idle this many seconds are closed. Default 60.
    pub idle_timeout_secs: u64,
    /// Most established connections. Default 512.
    pub max_connections: u32,
    /// The connection manager's bound: while more peers than this are connected, the
    /// connections to peers the node's protocols do not need (DHT neighbours and fingers,
    /// gossip partners, flooding neighbours) are closed, least recently used first. Needed
    /// peers are kept beyond it. Default 0: the manager is off (`driver::DEFAULT_MAX_PEERS`
    /// says why).
    pub max_peers: u32,
    /// Most connections (both directions) per remote IP address, so that identities, which
    /// are free, cannot crowd out other peers from one host. Default 8
    /// (`driver::MAX_CONNECTIONS_PER_IP`). Loopback addresses are exempt: every node of a
    /// local testnet connects from 127.0.0.1. Several nodes behind one NAT, or more than
    /// eight nodes per host in a multi-host testnet, need a higher value.
    pub max_connections_per_ip: u32,
    /// Seed of the protocol random source; default none (from the OS). Tests set it.
    pub seed: Option<u64>,
    /// DHT maintenance period in ms: stabilize and fix-fingers run this often,
    /// check-predecessor and replica repair every second period. Maintenance is adaptive
    /// (`dht::Config::max_backoff`): it runs at the profile's period (or this one, if
    /// shorter, but at most [`MAX_MAINTENANCE_SPEEDUP`] times faster) while the ring
    /// around the node changes (joins, failures) and stretches, once it is quiet, to this
    /// period or the profile's own rest period (32 s for `lan`), whichever is longer.
    /// Default: the profile's (1000 for `lan`, the paper's 30 000 for `wan`). Local
    /// testnets of hundreds of processes lengthen it so that start-up does not load the
    /// machine's cores with maintenance.
    pub maintenance_ms: Option<u64>,
    /// SWIM failure-detector probe period in ms; the direct-probe timeout is half of it
    /// and the suspicion timeout five periods. Default: the profile's (1000 for `lan`).
    /// Local testnets of hundreds of processes lengthen it: a starved process answers late
    /// and a short timeout turns that into false suspicions and refutation storms.
    pub probe_ms: Option<u64>,
    /// Gossip round period in ms. Default: the profile's (200 for `lan`).
    pub gossip_interval_ms: Option<u64>,
    /// Gossip fan-out (peers per round). Default: the profile's (3 for `lan`).
    pub gossip_fanout: Option<usize>,
    /// Gossip partial view: rumor and anti-entropy partners are drawn from a uniform
    /// sample of this many members (0: from all members). Default: the profile's (0).
    /// Groups of hundreds set it so that a node keeps ~2·view connections for gossip
    /// instead of one to every member.
    pub gossip_view: Option<usize>,
    /// One-way delay in ms the node adds to every frame it sends to a peer (its own latency
    /// injection, for testnets whose hosts share a machine). Default 0: none.
    pub delay_ms: u64,
    /// Send SWIM's probes (ping, indirect ping and their answers) as bare UDP datagrams
    /// rather than on the QUIC or TCP connections, as memberlist does: probing every member
    /// then needs no connection to every member. The socket's address is advertised in the
    /// node's signed member record; peers without one are probed on a connection. Default
    /// true.
    pub probe_datagrams: bool,
    /// UDP port of the probe socket, on the IP of the first listen address. Default 0: a
    /// port the OS picks (advertised, so peers need not know it in advance). Set it where
    /// a firewall or a container's published ports must name it.
    pub probe_port: u16,
    /// Spread of that delay: each frame waits a time drawn uniformly from
    /// `delay_ms ± delay_jitter_ms` (capped at `delay_ms`), frames keep their order.
    /// Default 0.
    pub delay_jitter_ms: u64,
}

/// Shortest DHT maintenance or probe period accepted: below it maintenance floods the links.
pub const MIN_MAINTENANCE_MS: u64 = 100;
/// Longest DHT maintenance or probe period accepted: beyond it failures go unnoticed too long.
pub const MAX_MAINTENANCE_MS: u64 = 600_000;
/// Adaptive DHT maintenance runs at most this many times faster while the ring changes
/// than at rest (see [`Config::maintenance_ms`]).
pub const MAX_MAINTENANCE_SPEEDUP: u32 = 4;
/// Shortest gossip period accepted.
pub const MIN_GOSSIP_INTERVAL_MS: u64 = 10;
/// Longest gossip period accepted.
pub const MAX_GOSSIP_INTERVAL_MS: u64 = 60_000;
/// Largest gossip fan-out accepted (the gossip literature uses 1–10).
pub const MAX_GOSSIP_FANOUT: usize = 64;
/// With `probe_ms` set, the gossip member sync runs at least every this many probe periods
/// (the LAN profile's 10 s at a 1 s probe, 15 s at the 7.5 s probe of a 300-node testnet,
/// 50 s at the 25 s probe of 1000). A sync is one digest of ≈ 43 bytes a member and no
/// answer when the tables agree; the full-table sync it replaced ran every 4 periods, and
/// the simulated 1000-node start's membership tail after the last join shrank from 262 s
/// (full table, 4 periods) to 93 s (digest, 4) and 44 s (digest, 2).
pub const MEMBER_SYNC_PROBES: u32 = 2;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            api: "127.0.0.1:0".into(),
            allow_remote_api: false,
            api_names: Vec::new(),
            accept_crash: false,
            metrics: None,
            transport: Transport::Quic,
            vnodes: 4,
            profile: Profile::Lan,
            idle_timeout_secs: 60,
            max_connections: 512,
            max_peers: crate::driver::DEFAULT_MAX_PEERS,
            max_connections_per_ip: crate::driver::MAX_CONNECTIONS_PER_IP,
            seed: None,
            maintenance_ms: None,
            probe_ms: None,
            probe_datagrams: true,
            probe_port: 0,
            gossip_interval_ms: None,
            gossip_fanout: None,
            gossip_view: None,
            delay_ms: 0,
            delay_jitter_ms: 0,
        }
    }
}

impl Config {
    /// A configuration for a node on 127.0.0.1 with OS-assigned ports (tests, local
    /// testnets).
    pub fn local(transport: Transport) -> Config {
        let listen = match transport {
            Transport::Quic => vec![
                "/ip4/127.0.0.1/udp/0/quic-v1".into(),
                "/ip4/127.0.0.1/tcp/0".into(),
            ],
            Transport::Tcp => vec!["/ip4/127.0.0.1/tcp/0".into()],
        };
        Config {
            listen,
            transport,
            ..Config::default()
        }
    }

    /// Reads a TOML file; a missing file is the default configuration.
    pub fn load(path: &Path) -> Result<Config, NodeError> {
        match std::fs::read_to_string(path) {
            Ok(s) => toml::from_str(&s).map_err(|source| NodeError::Config {
                path: path.to_path_buf(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(NodeError::Io {
                path: path.to_path_buf(),
                source: e,
            }),
        }
    }

    /// The listen addresses in force: the configured ones or the transport's defaults.
    pub fn listen_addrs(&self) -> Vec<String> {
        if !self.listen.is_empty() {
            return self.listen.clone();
        }
        match self.transport {
            Transport::Quic => vec![
                "/ip4/0.0.0.0/udp/0/quic-v1".into(),
                "/ip4/0.0.0.0/tcp/0".into(),
            ],
            Transport::Tcp => vec!["/ip4/0.0.0.0/tcp/0".into()],
        }
    }

    /// Checks the timing overrides; the cores check the rest when they are built.
    pub fn validate(&self) -> Result<(), String> {
        fn within(name: &str, v: Option<u64>, lo: u64, hi: u64) -> Result<(), String> {
            match v {
                Some(v) if !(lo..=hi).contains(&v) => {
                    Err(format!("{name} must be in {lo}..={hi}, not {v}"))
                }
                _ => Ok(()),
            }
        }
        within(
            "maintenance_ms",
            self.maintenance_ms,
            MIN_MAINTENANCE_MS,
            MAX_MAINTENANCE_MS,
        )?;
        within(
            "probe_ms",
            self.probe_ms,
            MIN_MAINTENANCE_MS,
            MAX_MAINTENANCE_MS,
        )?;
        within(
            "gossip_interval_ms",
            self.gossip_interval_ms,
            MIN_GOSSIP_INTERVAL_MS,
            MAX_GOSSIP_INTERVAL_MS,
        )?;
        within(
            "gossip_fanout",
            self.gossip_fanout.map(|f| f as u64),
            1,
            MAX_GOSSIP_FANOUT as u64,
        )?;
        within(
            "max_peers",
            Some(u64::from(self.max_peers)),
            0,
            u64::from(u32::MAX),
        )?;
        within(
            "max_connections_per_ip",
            Some(u64::from(self.max_connections_per_ip)),
            1,
            u64::from(u32::MAX),
        )?;
        within(
            "gossip_view",
            self.gossip_view.map(|v| v as u64),
            0,
            peerlab_gossip::MAX_PARTNER_VIEW as u64,
        )?;
        within(
            "delay_ms + delay_jitter_ms",
            Some(self.delay_ms.saturating_add(self.delay_jitter_ms)),
            0,
            crate::driver::MAX_DELAY.as_millis() as u64,
        )?;
        match (self.gossip_view, self.gossip_fanout) {
            (Some(v), f) if v != 0 && v < f.unwrap_or(1) => Err(format!(
                "gossip_view must be 0 or at least the fan-out, not {v}"
            )),
            _ => Ok(()),
        }
    }

    /// The cores' configuration this node runs with.
    pub fn peer_config(&self) -> crate::peer::Config {
        let mut c = match self.profile {
            Profile::Lan => crate::peer::Config::lan(),
            Profile::Wan => crate::peer::Config::wan(),
        };
        c.dht.vnodes = self.vnodes.max(1);
        if let Some(ms) = self.maintenance_ms {
            let p = Duration::from_millis(ms);
            // Under change, the profile's period (or `p` if that is shorter), but at most
            // `MAX_MAINTENANCE_SPEEDUP` times faster than at rest: a testnet of hundreds of
            // processes whose ring changes everywhere at once (start-up) would otherwise
            // load the machine with the full rate, answer late, and time out.
            let fast = c
                .dht
                .stabilize_period
                .max(p / MAX_MAINTENANCE_SPEEDUP)
                .min(p);
            // At rest, this period or the profile's rest period, whichever is longer: a
            // quiet ring needs no faster maintenance (a death or a join is a change).
            let rest = p.max(c.dht.stabilize_period * c.dht.max_backoff);
            let backoff = rest.as_millis().div_ceil(fast.as_millis().max(1));
            c.dht.max_backoff = u32::try_from(backoff)
                .unwrap_or(u32::MAX)
                .clamp(1, peerlab_dht::MAX_BACKOFF);
            c.dht.stabilize_period = fast;
            c.dht.fix_fingers_period = fast;
            c.dht.check_predecessor_period = 2 * fast;
            c.dht.repair_period = 2 * fast;
            // A node that takes longer than the request timeout to answer is dropped from
            // successor lists and fingers. Under the load that makes maintenance slow down,
            // answers slow down too; dropping live successors for it once split a 300-node
            // testnet's ring (Chord's stabilization cannot merge two rings again).
            c.dht.request_timeout = c.dht.request_timeout.max(p / 2);
        }
        if let Some(ms) = self.probe_ms {
            let p = Duration::from_millis(ms);
            c.gossip.probe_period = p;
            c.gossip.probe_timeout = p / 2;
            c.gossip.suspicion_timeout = 5 * p;
            // The member sync (a digest of the whole member table, tens of KiB in a
            // testnet of hundreds) is the backstop behind rumors; it slows down with the
            // probe period so that its traffic does not grow with N.
            c.gossip.member_sync_period = c.gossip.member_sync_period.max(MEMBER_SYNC_PROBES * p);
        }
        if let Some(ms) = self.gossip_interval_ms {
            c.gossip.period = Duration::from_millis(ms);
        }
        if let Some(f) = self.gossip_fanout {
            c.gossip.fanout = f;
        }
        if let Some(v) = self.gossip_view {
            c.gossip.partner_view = if v == 0 { 0 } else { v.max(c.gossip.fanout) };
        }
        c.create_ring = self.bootstrap.is_empty();
        c
    }

    /// The idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }
}

/// The default data dir: `<user data dir>/peerlab` (e.g. `~/.local/share/peerlab`).
pub fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "peerlab")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".peerlab"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_overrides_are_range_checked_and_reach_the_cores() {
        assert!(Config::default().validate().is_ok(), "no override is valid");
        for bad in [
            Config {
                maintenance_ms: Some(MIN_MAINTENANCE_MS - 1),
                ..Config::default()
            },
            Config {
                probe_ms: Some(MAX_MAINTENANCE_MS + 1),
                ..Config::default()
            },
            Config {
                gossip_interval_ms: Some(0),
                ..Config::default()
            },
            Config {
                gossip_fanout: Some(0),
                ..Config::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let c = Config {
            maintenance_ms: Some(3000),
            probe_ms: Some(2000),
            gossip_interval_ms: Some(150),
            gossip_fanout: Some(5),
            ..Config::default()
        };
        assert!(c.validate().is_ok());
        let p = c.peer_config();
        // Adaptive: the LAN profile's 1 s while the ring changes, its 32 s at rest (longer
        // than the 3 s asked for).
        assert_eq!(p.dht.stabilize_period, Duration::from_secs(1));
        assert_eq!(p.dht.repair_period, Duration::from_secs(2));
        assert_eq!(p.dht.max_backoff, 32);
        assert_eq!(Config::default().peer_config().dht.max_backoff, 32);
        // A period longer than the profile's rest period is the rest period.
        let long = Config {
            maintenance_ms: Some(60_000),
            ..Config::default()
        };
        let d = long.peer_config().dht;
        assert_eq!(
            (d.stabilize_period, d.max_backoff),
            (Duration::from_secs(15), 4)
        );
        assert_eq!(p.dht.request_timeout, Duration::from_millis(1500));
        assert_eq!(p.gossip.probe_period, Duration::from_secs(2));
        assert_eq!(p.gossip.probe_timeout, Duration::from_secs(1));
        assert_eq!(p.gossip.suspicion_timeout, Duration::from_secs(10));
        // 2 probe periods (4 s) is below the profile's 10 s: the profile's stays.
        assert_eq!(p.gossip.member_sync_period, Duration::from_secs(10));
        let slow = Config {
            probe_ms: Some(7500),
            ..Config::default()
        };
        assert_eq!(
            slow.peer_config().gossip.member_sync_period,
            Duration::from_secs(15)
        );
        assert_eq!(
            (p.gossip.period, p.gossip.fanout),
            (Duration::from_millis(150), 5)
        );
    }
}
