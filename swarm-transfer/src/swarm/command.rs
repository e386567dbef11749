//! What the application asks of the core, and why it may refuse.

use peerlab_overlay::PeerId;

use crate::manifest::{ContentId, Manifest, ManifestError};

/// Local commands. Those that expect an answer carry a request id `req`, answered by
/// exactly one [`Event::Accepted`](crate::Event::Accepted) or
/// [`Event::Refused`](crate::Event::Refused) carrying it.
pub enum Command<S> {
    /// Serve a complete file.
    Share {
        /// Request id.
        req: u64,
        /// Its manifest.
        manifest: Manifest,
        /// A store holding every chunk.
        store: S,
    },
    /// Download a file by content id. Accepted once the transfer runs; its progress is
    /// reported by [`Event::Progress`](crate::Event::Progress) and
    /// [`Event::Completed`](crate::Event::Completed).
    Fetch {
        /// Request id.
        req: u64,
        /// The content id.
        cid: ContentId,
        /// Peers believed to have it (from the DHT, a tracker, or the user).
        providers: Vec<PeerId>,
    },
    /// More candidate peers for a transfer (e.g. a DHT `GetProviders` answer). A hint: no
    /// answer, and peers for a transfer that no longer runs are ignored.
    AddPeers {
        /// The transfer.
        cid: ContentId,
        /// The peers.
        peers: Vec<PeerId>,
    },
    /// What became of a [`Discovery::Announce`](crate::Discovery::Announce) of `cid`: the
    /// DHT stored this node's provider record, or could not (not in the ring yet, a lookup
    /// that failed). A failed announcement is made again after
    /// [`ANNOUNCE_RETRY`](crate::ANNOUNCE_RETRY), doubling per failure up to
    /// [`Config::announce_interval`](crate::Config::announce_interval); without it the
    /// provider would stay unfindable until its next periodic announcement. A hint: no
    /// answer, and one for a transfer that no longer runs is ignored.
    Announced {
        /// The transfer.
        cid: ContentId,
        /// Whether the provider record was stored.
        stored: bool,
    },
    /// Stop a transfer and forget it (the store is dropped, so a file store can resume).
    Cancel {
        /// Request id.
        req: u64,
        /// The transfer.
        cid: ContentId,
    },
}

impl<S> std::fmt::Debug for Command<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Share { req, manifest, .. } => write!(f, "Share(#{req}, {manifest:?})"),
            Command::Fetch {
                req,
                cid,
                providers,
            } => {
                write!(f, "Fetch(#{req}, {cid:?}, {} providers)", providers.len())
            }
            Command::AddPeers { cid, peers } => write!(f, "AddPeers({cid:?}, {})", peers.len()),
            Command::Announced { cid, stored } => write!(f, "Announced({cid:?}, {stored})"),
            Command::Cancel { req, cid } => write!(f, "Cancel(#{req}, {cid:?})"),
        }
    }
}

/// Why a command was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The transfer already runs.
    #[error("transfer already running")]
    Duplicate,
    /// [`Config::max_transfers`](crate::Config::max_transfers) transfers already run.
    #[error("too many transfers")]
    TooMany,
    /// The manifest is inconsistent.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The store does not hold every chunk of a shared file.
    #[error("store for a shared file is incomplete")]
    IncompleteStore,
    /// No such transfer.
    #[error("unknown transfer")]
    Unknown,
}
