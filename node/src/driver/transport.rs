//! The libp2p side of a node: transports (QUIC, TCP + Noise + Yamux), the behaviours every
//! connection runs (connection limits, identify, ping, the generic streams of the cores)
//! and the settings that keep a few-hundred-node testnet's connections cheap.
//!
//! A node dials a peer on its own transport's addresses when it knows any (QUIC by default,
//! [`preferred_addrs`]), so that two nodes keep one connection rather than one per
//! transport. QUIC's keep-alive and libp2p ping run at [`QUIC_KEEP_ALIVE`] and
//! [`PING_INTERVAL`], slow enough that a node connected to every member of a
//! few-hundred-node testnet does not spend its time on them. A peer that restarted with the
//! same identity is recognised by the boot nonce in its identify agent string
//! ([`agent_version`]).

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol as AddrProto;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Multiaddr, Swarm, connection_limits, identify, noise, ping, yamux};
use peerlab_overlay::PeerId;

use crate::NodeError;

/// Interval of libp2p pings on every connection (the round-trip time `peerlab peers`
/// shows; the first ping goes out when the connection opens). libp2p's default of 15 s made
/// a node connected to 300 peers send 20 pings a second; failure detection does not depend
/// on it (gossip probes do that).
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(300);

/// Interval of identify's periodic re-identification on every connection. Addresses and
/// protocols of a node do not change while it runs; libp2p's default of 5 minutes cost a
/// fully connected 300-node testnet 300 identify exchanges a second.
pub(crate) const IDENTIFY_INTERVAL: Duration = Duration::from_secs(1800);

/// QUIC keep-alive: a connection that sent nothing for this long sends a PING frame, so
/// that idle connections live until libp2p's idle timeout closes them and a connection to
/// a vanished peer is noticed. quinn's default through libp2p (5 s) cost a fully connected
/// 300-node testnet tens of thousands of packets per second.
pub(crate) const QUIC_KEEP_ALIVE: Duration = Duration::from_secs(60);

/// QUIC idle timeout: a connection that received nothing (not even a keep-alive) for this
/// long is dead. Two and a half keep-alive periods, so one lost keep-alive does not close a
/// live connection. A peer that crashed is noticed by the gossip probes, and one that
/// restarted by its boot nonce, long before this.
pub(crate) const QUIC_IDLE_TIMEOUT: Duration = Duration::from_secs(150);

/// Streams a peer may open concurrently on one QUIC connection. A peer uses one long-lived
/// stream per channel (a few briefly, see
/// [`MAX_INBOUND_STREAMS_PER_PEER`](super::MAX_INBOUND_STREAMS_PER_PEER)) plus identify
/// and ping: well under 32. quinn reserves per-stream map slots for the whole limit when a
/// connection opens, so libp2p's default of 256 cost ~25 KiB per connection — at 1000
/// in-process nodes with ~100 connections each, gigabytes of empty stream slots.
pub(crate) const QUIC_MAX_STREAMS: u32 = 32;

/// Identify protocol version string nodes announce.
pub(crate) const IDENTIFY_PROTOCOL: &str = "/peerlab/id/1";

/// Network-level settings of the driver.
#[derive(Clone, Debug)]
pub(crate) struct NetConfig {
    /// Multiaddrs to listen on.
    pub listen: Vec<Multiaddr>,
    /// Multiaddrs of peers to join through.
    pub bootstrap: Vec<Multiaddr>,
    /// Connections without active streams are closed after this long.
    pub idle_timeout: Duration,
    /// Most established connections in total.
    pub max_connections: u32,
    /// The connection manager's bound: while more peers than this are connected, the
    /// connections to peers the core does not need are closed, least recently used first
    /// (see `keep`). Needed peers are kept even beyond it. 0: the manager is off.
    pub max_peers: u32,
    /// Most established connections per peer.
    pub max_connections_per_peer: u32,
    /// Most connections (both directions) per remote IP address (see `gate.rs`).
    pub max_connections_per_ip: u32,
    /// Whether the per-IP cap applies to loopback addresses too (off: every node of a
    /// local testnet connects from 127.0.0.1).
    pub limit_loopback: bool,
    /// Dial QUIC addresses of a peer when it has any (otherwise TCP ones first).
    pub prefer_quic: bool,
    /// Seed of the core's random source (`None`: from the OS).
    pub seed: Option<u64>,
    /// The file that keeps the last-known peers across restarts (see `rejoin`); `None`:
    /// remembered in memory only.
    pub known_peers_file: Option<std::path::PathBuf>,
    /// Delay of every outgoing core frame (`None`: sent at once; see [`Delay`]).
    ///
    /// [`Delay`]: super::Delay
    pub delay: Option<super::Delay>,
    /// Whether SWIM's probes travel as bare UDP datagrams (see `probe`).
    pub probe_datagrams: bool,
    /// UDP port of the probe socket (0: one the OS picks).
    pub probe_port: u16,
}

impl NetConfig {
    /// Where the probe socket binds: the IP of the first listen address that has one (the
    /// unspecified IPv4 address without one), at `probe_port`; `None` without datagrams.
    pub(crate) fn probe_socket(&self) -> Option<std::net::SocketAddr> {
        if !self.probe_datagrams {
            return None;
        }
        let ip = self
            .listen
            .iter()
            .find_map(super::probe::leading_ip)
            .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        Some(std::net::SocketAddr::new(ip, self.probe_port))
    }
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_peers: super::DEFAULT_MAX_PEERS,
            max_connections_per_peer: 2,
            max_connections_per_ip: super::MAX_CONNECTIONS_PER_IP,
            limit_loopback: false,
            prefer_quic: true,
            seed: None,
            known_peers_file: None,
            delay: None,
            probe_datagrams: true,
            probe_port: 0,
        }
    }
}

/// The libp2p behaviour of a node: limits, identify, ping and the streams that carry every
/// core's channel.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// First, so that a connection it refuses costs no other behaviour anything.
    pub(super) gate: super::gate::Gate,
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    /// Long-lived streams, one protocol per [`Channel`](crate::wire::Channel).
    pub(super) streams: super::streams::Behaviour,
}

/// The identify agent string: the version and a nonce drawn at each start, by which peers
/// tell a restarted node (same identity, new process) from the one they were connected to.
pub(crate) fn agent_version(boot: u64) -> String {
    format!("peerlab/{} boot={boot:016x}", env!("CARGO_PKG_VERSION"))
}

/// The boot nonce of a peerlab agent string (`None` for other agents).
pub(super) fn boot_nonce(agent: &str) -> Option<&str> {
    agent
        .strip_prefix("peerlab/")?
        .split_once(" boot=")
        .map(|(_, b)| b)
}

/// The addresses of this node's own transport among `all` when there are any (so that two
/// nodes keep one connection, not one per transport), else all of them.
pub(super) fn preferred_addrs(all: Vec<Multiaddr>, prefer_quic: bool) -> Vec<Multiaddr> {
    let quic = |a: &Multiaddr| a.iter().any(|p| matches!(p, AddrProto::QuicV1));
    if all.iter().any(|a| quic(a) == prefer_quic) {
        all.into_iter().filter(|a| quic(a) == prefer_quic).collect()
    } else {
        all
    }
}

impl Behaviour {
    fn new(key: &Keypair, cfg: &NetConfig, boot: u64) -> Behaviour {
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(cfg.max_connections))
            .with_max_established_per_peer(Some(cfg.max_connections_per_peer))
            .with_max_pending_incoming(Some(cfg.max_connections / 2 + 1));
        Behaviour {
            gate: super::gate::Gate::new(cfg.max_connections_per_ip, cfg.limit_loopback),
            limits: connection_limits::Behaviour::new(limits),
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                    .with_agent_version(agent_version(boot))
                    .with_interval(IDENTIFY_INTERVAL),
            ),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL)),
            streams: super::streams::Behaviour::default(),
        }
    }
}

/// Builds a swarm with QUIC and TCP + Noise + Yamux transports.
/// The system resolver's configuration, read when present.
const RESOLV_CONF: &str = "/etc/resolv.conf";

pub(crate) fn build_swarm(
    key: Keypair,
    cfg: &NetConfig,
    boot: u64,
) -> Result<Swarm<Behaviour>, NodeError> {
    let transports = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(NodeError::Noise)?
        .with_quic_config(|mut q| {
            q.keep_alive_interval = QUIC_KEEP_ALIVE;
            q.max_idle_timeout = QUIC_IDLE_TIMEOUT.as_millis() as u32;
            q.max_concurrent_stream_limit = QUIC_MAX_STREAMS;
            q
        });
    // `/dns4`, `/dns6` and `/dns` addresses (a bootstrap peer named by a cluster's DNS, as in
    // deploy/k8s) resolve through the system's resolver. A machine without a resolver
    // configuration still runs: its names then simply do not resolve.
    macro_rules! finish {
        ($builder:expr) => {
            $builder
                .with_behaviour(|key| Behaviour::new(key, cfg, boot))
                .unwrap_or_else(|never| match never {})
                .with_swarm_config(|c| c.with_idle_connection_timeout(cfg.idle_timeout))
                .build()
        };
    }
    let swarm = if std::path::Path::new(RESOLV_CONF).exists() {
        finish!(transports.with_dns().map_err(NodeError::Dns)?)
    } else {
        finish!(transports.with_dns_config(
            libp2p::dns::ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
            libp2p::dns::ResolverOpts::default()
        ))
    };
    Ok(swarm)
}

/// Converts a core peer id into a libp2p one.
pub(crate) fn to_libp2p(p: &PeerId) -> Option<libp2p::PeerId> {
    libp2p::PeerId::from_bytes(&p.to_libp2p_bytes()).ok()
}

/// Converts a libp2p peer id into a core one (`None` unless it names an Ed25519 key).
pub(crate) fn from_libp2p(p: &libp2p::PeerId) -> Option<PeerId> {
    PeerId::from_libp2p_bytes(&p.to_bytes())
}

/// `addr` without its `/p2p/<id>` part.
pub(super) fn strip_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, AddrProto::P2p(_)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_nonce_is_read_back_from_the_agent_string_only() {
        let agent = agent_version(0x1234);
        assert!(agent.starts_with("peerlab/"));
        assert_eq!(boot_nonce(&agent), Some("0000000000001234"));
        assert_ne!(boot_nonce(&agent_version(1)), boot_nonce(&agent_version(2)));
        assert_eq!(boot_nonce("peerlab/0.1.0"), None);
        assert_eq!(boot_nonce("rust-libp2p/0.46 boot=1"), None);
    }

    #[test]
    fn dials_use_the_own_transport_when_the_peer_has_it() {
        let quic: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
        let tcp: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let both = vec![tcp.clone(), quic.clone()];
        assert_eq!(preferred_addrs(both.clone(), true), vec![quic.clone()]);
        assert_eq!(preferred_addrs(both, false), vec![tcp.clone()]);
        assert_eq!(preferred_addrs(vec![tcp.clone()], true), vec![tcp]);
        assert_eq!(preferred_addrs(vec![quic.clone()], false), vec![quic]);
    }
}
