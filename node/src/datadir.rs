//! The data dir: everything a node keeps across restarts.
//!
//! | file | holds |
//! |---|---|
//! | `identity.key` | the Ed25519 keypair (libp2p protobuf encoding, mode 0600) — same PeerId after restart |
//! | `config.toml` | the configuration file (optional) |
//! | `api.token` | the control API's bearer token (mode 0600) |
//! | `api.addr` | the address the control API bound (written at start) |
//! | `listen.addrs` | the node's listen multiaddrs with `/p2p/<id>` (written at start) |
//! | `store.redb` | DHT records and swarm bitfields ([`crate::store`]) |
//! | `chunks/` | chunk files of shared and fetched content |

use std::io::Write;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

use crate::NodeError;

/// Paths inside a data dir.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `data` to `path` atomically (temp file + rename) with mode 0600 on Unix.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), NodeError> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
        f.write_all(data).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

impl DataDir {
    /// Opens (creating if needed) the data dir at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<DataDir, NodeError> {
        let root = root.into();
        std::fs::create_dir_all(root.join("chunks")).map_err(io_err(&root))?;
        Ok(DataDir { root })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The configuration file.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// The embedded database file.
    pub fn store_file(&self) -> PathBuf {
        self.root.join("store.redb")
    }

    /// The chunk directory.
    pub fn chunks_dir(&self) -> PathBuf {
        self.root.join("chunks")
    }

    /// The file holding the API address.
    pub fn api_addr_file(&self) -> PathBuf {
        self.root.join("api.addr")
    }

    /// The file holding the API token.
    pub fn token_file(&self) -> PathBuf {
        self.root.join("api.token")
    }

    /// The file listing the listen multiaddrs.
    pub fn listen_file(&self) -> PathBuf {
        self.root.join("listen.addrs")
    }

    /// Loads the identity, creating and saving a new Ed25519 key on first use.
    pub fn identity(&self) -> Result<Keypair, NodeError> {
        let path = self.root.join("identity.key");
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key = Keypair::from_protobuf_encoding(&bytes).map_err(|source| {
                    NodeError::Identity {
                        path: path.clone(),
                        source,
                    }
                })?;
                if let Err(source) = key.public().clone().try_into_ed25519() {
                    return Err(NodeError::KeyType { path, source });
                }
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Keypair::generate_ed25519();
                let bytes = key
                    .to_protobuf_encoding()
                    .map_err(|source| NodeError::Identity {
                        path: path.clone(),
                        source,
                    })?;
                write_private(&path, &bytes)?;
                Ok(key)
            }
            Err(e) => Err(NodeError::Io { path, source: e }),
        }
    }

    /// Loads the API token, creating a fresh random one (256 bits) on first use.
    pub fn token(&self) -> Result<String, NodeError> {
        let path = self.token_file();
        match std::fs::read_to_string(&path) {
            Ok(s) if s.trim().len() >= 32 => Ok(s.trim().to_string()),
            Ok(_) => self.new_token(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.new_token(&path),
            Err(e) => Err(NodeError::Io { path, source: e }),
        }
    }

    fn new_token(&self, path: &Path) -> Result<String, NodeError> {
        // The secret half of a freshly generated Ed25519 key is 32 bytes from the OS
        // CSPRNG (through libp2p-identity), which is what a bearer token needs.
        let secret = libp2p::identity::ed25519::Keypair::generate().secret();
        let token = hex::encode(secret.as_ref());
        write_private(path, token.as_bytes())?;
        Ok(token)
    }

    /// Records the bound API address.
    pub fn write_api_addr(&self, addr: &std::net::SocketAddr) -> Result<(), NodeError> {
        write_private(&self.api_addr_file(), addr.to_string().as_bytes())
    }

    /// Records the listen multiaddrs, one per line.
    pub fn write_listen_addrs(&self, addrs: &[String]) -> Result<(), NodeError> {
        write_private(&self.listen_file(), addrs.join("\n").as_bytes())
    }

    /// Reads the API address and token a running node wrote (for the CLI client).
    pub fn api_endpoint(&self) -> Result<(String, String), NodeError> {
        let addr_path = self.api_addr_file();
        let addr = std::fs::read_to_string(&addr_path).map_err(io_err(&addr_path))?;
        let tok_path = self.token_file();
        let token = std::fs::read_to_string(&tok_path).map_err(io_err(&tok_path))?;
        Ok((addr.trim().to_string(), token.trim().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_token_persist() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open(dir.path()).unwrap();
        let k1 = d.identity().unwrap();
        let t1 = d.token().unwrap();
        let d2 = DataDir::open(dir.path()).unwrap();
        assert_eq!(
            k1.public().to_peer_id(),
            d2.identity().unwrap().public().to_peer_id()
        );
        assert_eq!(t1, d2.token().unwrap());
        assert_eq!(t1.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.token_file())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn corrupt_identity_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("identity.key"), b"garbage").unwrap();
        assert!(matches!(d.identity(), Err(NodeError::Identity { .. })));
    }
}
