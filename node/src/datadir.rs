//! The data dir: everything a node keeps across restarts.
//!
//! | file | holds |
//! |---|---|
//! | `identity.key` | the Ed25519 keypair (libp2p protobuf encoding, mode 0600) — same PeerId after restart |
//! | `config.toml` | the configuration file (optional) |
//! | `api.token` | the control API's bearer token (mode 0600) |
//! | `api.addr` | the address the control API bound (written at start) |
//! | `api.key` | the control API's TLS key (PKCS#8 PEM, mode 0600), with `allow_remote_api` ([`crate::api_tls`]) |
//! | `api.cert` | the control API's current certificate (PEM), with `allow_remote_api` |
//! | `listen.addrs` | the node's listen multiaddrs with `/p2p/<id>` (written at start) |
//! | `peers` | last-known peers, one multiaddr with `/p2p/<id>` a line (for rejoining) |
//! | `store.redb` | DHT records and swarm bitfields ([`crate::store`]) |
//! | `chunks/` | chunk files of shared and fetched content |
//!
//! The data dir is private: created with mode 0700 (its `chunks/` too), secrets written
//! with mode 0600. A secret file (`identity.key`, `api.token`, `api.key`) that group or others may
//! read is refused at start, as ssh refuses such a key: the token lets anyone who reads it
//! drive the node, and the key lets them be it.

use std::io::Write;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

use crate::NodeError;

/// The configuration file's name inside a data dir.
pub const CONFIG_FILE: &str = "config.toml";
/// The name of the file holding the control API's address (written at start).
pub const API_ADDR_FILE: &str = "api.addr";
/// The name of the file holding the control API's bearer token.
pub const API_TOKEN_FILE: &str = "api.token";
/// The name of the file listing the node's listen multiaddrs (written at start).
pub const LISTEN_ADDRS_FILE: &str = "listen.addrs";

/// Paths inside a data dir.
#[derive(Clone, Debug)]
pub(crate) struct DataDir {
    root: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Mode of the data dir and the directories in it: the owner's only.
pub(crate) const DIR_MODE: u32 = 0o700;

/// Mode of the secret files: readable and writable by the owner only.
pub(crate) const SECRET_MODE: u32 = 0o600;

/// Writes `data` to `path` atomically (temp file + rename) with mode 0600 on Unix.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<(), NodeError> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(SECRET_MODE);
        }
        let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
        // A temp file left behind by a crash keeps its mode when reopened: set it anyway.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(SECRET_MODE))
                .map_err(io_err(&tmp))?;
        }
        f.write_all(data).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Refuses a secret file that group or others may read or write.
pub(crate) fn check_private(path: &Path) -> Result<(), NodeError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(io_err(path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(NodeError::Permissions {
                path: path.to_path_buf(),
                mode: mode & 0o777,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Creates `dir` and its missing parents with mode [`DIR_MODE`].
fn create_private_dir(dir: &Path) -> Result<(), NodeError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(DIR_MODE);
    }
    b.create(dir).map_err(io_err(dir))
}

impl DataDir {
    /// Opens the data dir at `root`, creating it (mode 0700) if needed. An existing
    /// directory keeps its mode (a warning says so if others may enter it).
    pub(crate) fn open(root: impl Into<PathBuf>) -> Result<DataDir, NodeError> {
        let root = root.into();
        create_private_dir(&root)?;
        create_private_dir(&root.join("chunks"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&root)
                .map_err(io_err(&root))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    dir = %root.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "the data dir is open to other users; `chmod 700` it"
                );
            }
        }
        Ok(DataDir { root })
    }

    /// The data dir itself.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The embedded database file.
    pub(crate) fn store_file(&self) -> PathBuf {
        self.root.join("store.redb")
    }

    /// The chunk directory.
    pub(crate) fn chunks_dir(&self) -> PathBuf {
        self.root.join("chunks")
    }

    /// The file holding the API address.
    pub(crate) fn api_addr_file(&self) -> PathBuf {
        self.root.join(API_ADDR_FILE)
    }

    /// The file holding the API token.
    pub(crate) fn token_file(&self) -> PathBuf {
        self.root.join(API_TOKEN_FILE)
    }

    /// The file listing the listen multiaddrs.
    pub(crate) fn listen_file(&self) -> PathBuf {
        self.root.join(LISTEN_ADDRS_FILE)
    }

    /// The last-known peers' multiaddrs, one per line (rewritten while the node runs; read at
    /// start so that a restarted node can find the overlay without its bootstrap peers).
    pub(crate) fn known_peers_file(&self) -> PathBuf {
        self.root.join("peers")
    }

    /// Loads the identity, creating and saving a new Ed25519 key on first use.
    pub(crate) fn identity(&self) -> Result<Keypair, NodeError> {
        let path = self.root.join("identity.key");
        match std::fs::read(&path) {
            Ok(bytes) => {
                check_private(&path)?;
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
    pub(crate) fn token(&self) -> Result<String, NodeError> {
        let path = self.token_file();
        match std::fs::read_to_string(&path) {
            Ok(s) if s.trim().len() >= 32 => {
                check_private(&path)?;
                Ok(s.trim().to_string())
            }
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
    pub(crate) fn write_api_addr(&self, addr: &std::net::SocketAddr) -> Result<(), NodeError> {
        write_private(&self.api_addr_file(), addr.to_string().as_bytes())
    }

    /// Records the listen multiaddrs, one per line.
    pub(crate) fn write_listen_addrs(&self, addrs: &[String]) -> Result<(), NodeError> {
        write_private(&self.listen_file(), addrs.join("\n").as_bytes())
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

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn a_new_data_dir_is_private() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("a/b/node");
        let d = DataDir::open(&root).unwrap();
        d.identity().unwrap();
        d.token().unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&d.chunks_dir()), 0o700);
        assert_eq!(mode(&root.join("identity.key")), 0o600);
        assert_eq!(mode(&d.token_file()), 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn secrets_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open(dir.path()).unwrap();
        let token = d.token().unwrap();
        d.identity().unwrap();
        for (file, bad) in [
            ("api.token", 0o640),
            ("api.token", 0o604),
            ("identity.key", 0o644),
        ] {
            let path = dir.path().join(file);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bad)).unwrap();
            let err = if file == "api.token" {
                d.token().unwrap_err()
            } else {
                d.identity().map(|_| ()).unwrap_err()
            };
            match &err {
                NodeError::Permissions { path: p, mode } => {
                    assert_eq!((p, *mode), (&path, bad));
                }
                e => panic!("{file} at {bad:o}: {e}"),
            }
            assert!(err.to_string().contains("chmod 600"), "{err}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(
            d.token().unwrap(),
            token,
            "a private token is read as before"
        );
        // A stricter mode is fine.
        let path = d.token_file();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(d.token().unwrap(), token);
    }

    #[test]
    fn corrupt_identity_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open(dir.path()).unwrap();
        write_private(&dir.path().join("identity.key"), b"garbage").unwrap();
        assert!(matches!(d.identity(), Err(NodeError::Identity { .. })));
    }
}
