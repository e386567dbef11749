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
    /// Allow the control API to bind a non-loopback address. Default false: the API can
    /// change what the node stores and shares, so it stays local unless asked.
    pub allow_remote_api: bool,
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
    /// Seed of the protocol random source; default none (from the OS). Tests set it.
    pub seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            api: "127.0.0.1:0".into(),
            allow_remote_api: false,
            transport: Transport::Quic,
            vnodes: 4,
            profile: Profile::Lan,
            idle_timeout_secs: 60,
            max_connections: 512,
            seed: None,
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
            Ok(s) => toml::from_str(&s).map_err(|e| NodeError::Config {
                path: path.to_path_buf(),
                msg: e.to_string(),
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

    /// The cores' configuration this node runs with.
    pub fn peer_config(&self) -> crate::peer::Config {
        let mut c = match self.profile {
            Profile::Lan => crate::peer::Config::lan(),
            Profile::Wan => crate::peer::Config::wan(),
        };
        c.dht.vnodes = self.vnodes.max(1);
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
