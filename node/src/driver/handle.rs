//! The driver's handle: how the control API (and in-process callers) talk to the driver
//! task.
//!
//! Every request goes through one bounded channel ([`REQUEST_CAPACITY`]) into the task that
//! owns the core; answers come back on a oneshot or, for commands that expect events, on a
//! bounded per-call channel ([`WAITER_CAPACITY`]) keyed by the request id the command
//! carries. Nothing here touches protocol state: the handle is `Clone + Send` and can be
//! used from any task.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::NetCore;

/// Most API calls waiting for their reply events at once.
pub(crate) const MAX_WAITERS: usize = 4096;

/// Capacity of one waiter's event channel (search hits, fetch progress).
pub(crate) const WAITER_CAPACITY: usize = 256;

/// Capacity of the API → driver request channel.
pub(crate) const REQUEST_CAPACITY: usize = 256;

/// A connected peer as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerInfo {
    /// libp2p peer id (base58).
    pub peer_id: String,
    /// Remote addresses of the open connections.
    pub addresses: Vec<String>,
    /// Last ping round-trip time in milliseconds.
    pub rtt_ms: Option<f64>,
    /// The agent version the peer announced through identify.
    pub agent: Option<String>,
    /// The peer's strike points now (they leak away; see `driver::STRIKE_LEAK`).
    pub strikes: u32,
}

/// The driver's view of the network, passed to inspection closures.
#[derive(Clone, Debug, Serialize)]
pub struct NetStatus {
    /// This node's libp2p peer id.
    pub peer_id: String,
    /// The addresses this node listens on (with `/p2p/<id>`).
    pub listen_addrs: Vec<String>,
    /// Where this node takes probe datagrams (`None`: probes travel on connections).
    pub probe_addr: Option<String>,
    /// Connected peers.
    pub peers: Vec<PeerInfo>,
    /// Seconds since the driver started.
    pub uptime_secs: f64,
    /// Peers currently banned.
    pub banned: usize,
    /// Bad frames received in total.
    pub bad_frames: u64,
}

pub(super) type Inspect<P> = Box<dyn FnOnce(&mut P, &NetStatus) + Send>;

/// A request from the API to the driver.
pub(crate) enum Request<P: NetCore> {
    Command(P::Command),
    Call {
        id: u64,
        cmd: P::Command,
        reply: mpsc::Sender<P::Event>,
    },
    Inspect(Inspect<P>),
    Dial(Multiaddr, oneshot::Sender<Result<(), String>>),
    Shutdown(oneshot::Sender<()>),
}

/// Why a request to the driver failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DriverError {
    /// The driver task has stopped.
    #[error("the node has stopped")]
    Stopped,
    /// No answer arrived in time.
    #[error("timed out waiting for the node")]
    Timeout,
    /// The request was refused.
    #[error("{0}")]
    Refused(String),
}

/// A cloneable handle for talking to the driver task.
pub struct DriverHandle<P: NetCore> {
    tx: mpsc::Sender<Request<P>>,
    next_id: Arc<AtomicU64>,
}

impl<P: NetCore> Clone for DriverHandle<P> {
    fn clone(&self) -> Self {
        DriverHandle {
            tx: self.tx.clone(),
            next_id: self.next_id.clone(),
        }
    }
}

impl<P: NetCore> DriverHandle<P> {
    /// A handle sending into `tx`, and the receiving end for the driver.
    pub(super) fn channel() -> (DriverHandle<P>, mpsc::Receiver<Request<P>>) {
        let (tx, rx) = mpsc::channel(REQUEST_CAPACITY);
        let handle = DriverHandle {
            tx,
            next_id: Arc::new(AtomicU64::new(1)),
        };
        (handle, rx)
    }

    /// Sends a command that expects no answer.
    pub async fn command(&self, cmd: P::Command) -> Result<(), DriverError> {
        self.tx
            .send(Request::Command(cmd))
            .await
            .map_err(|_| DriverError::Stopped)
    }

    /// Sends a command built around a fresh request id and returns the stream of events
    /// answering it (closed after the final one).
    pub async fn call(
        &self,
        make: impl FnOnce(u64) -> P::Command,
    ) -> Result<mpsc::Receiver<P::Event>, DriverError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = mpsc::channel(WAITER_CAPACITY);
        self.tx
            .send(Request::Call {
                id,
                cmd: make(id),
                reply,
            })
            .await
            .map_err(|_| DriverError::Stopped)?;
        Ok(rx)
    }

    /// Sends a command and waits (at most `timeout`) for its final answer.
    pub async fn call_once(
        &self,
        make: impl FnOnce(u64) -> P::Command,
        timeout: Duration,
    ) -> Result<P::Event, DriverError> {
        let mut rx = self.call(make).await?;
        match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(ev)) => Ok(ev),
            Ok(None) => Err(DriverError::Stopped),
            Err(_) => Err(DriverError::Timeout),
        }
    }

    /// Runs `f` on the core and the network view inside the driver task.
    pub async fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut P, &NetStatus) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        let (tx, rx) = oneshot::channel();
        let job: Inspect<P> = Box::new(move |p, n| {
            let _ = tx.send(f(p, n));
        });
        self.tx
            .send(Request::Inspect(job))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Dials an address.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), DriverError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Dial(addr, tx))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await
            .map_err(|_| DriverError::Stopped)?
            .map_err(DriverError::Refused)
    }

    /// Leaves the overlay gracefully and stops the driver; returns once it stopped.
    pub async fn shutdown(&self) -> Result<(), DriverError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Shutdown(tx))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }
}
