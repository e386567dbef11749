//! The control API: HTTP + JSON on a loopback address, guarded by a bearer token.
//!
//! Every route requires `Authorization: Bearer <token>`, where the token is the content of
//! `api.token` in the data dir (mode 0600); without it the answer is 401. The API refuses
//! to bind a non-loopback address unless `allow_remote_api` is set. Handlers never touch
//! protocol state themselves: they send a command or an inspection closure to the driver
//! task and await the answer with a deadline.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/status` | identity, addresses, counts |
//! | GET | `/peers` | connected peers |
//! | GET | `/search?q=TERMS&ttl=N` | flooding search |
//! | GET | `/metrics` | Prometheus text format |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use peerlab_overlay::flood;
use serde::{Deserialize, Serialize};

use crate::driver::{DriverError, DriverHandle, NetStatus, PeerInfo};
use crate::peer::{self, Peer};

/// How long a handler waits for the driver before answering 504.
pub const API_TIMEOUT: Duration = Duration::from_secs(30);

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) driver: DriverHandle<Peer>,
    pub(crate) token: Arc<String>,
    pub(crate) metrics: PrometheusHandle,
}

/// An API error: a status code and one line of text, sent as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<DriverError> for ApiError {
    fn from(e: DriverError) -> Self {
        let code = match e {
            DriverError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            DriverError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            DriverError::Refused(_) => StatusCode::BAD_REQUEST,
        };
        ApiError(code, e.to_string())
    }
}

/// The JSON body of an error.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One line saying what went wrong.
    pub error: String,
}

/// `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// libp2p peer id.
    pub peer_id: String,
    /// Listen multiaddrs with `/p2p/<id>`.
    pub listen_addrs: Vec<String>,
    /// Connected peers.
    pub connected_peers: usize,
    /// Seconds since start.
    pub uptime_secs: f64,
    /// Flooding neighbours.
    pub flood_neighbours: usize,
    /// Names shared in the flooding index.
    pub shared_names: usize,
    /// Peers banned for bad frames.
    pub banned_peers: usize,
    /// Bad frames received.
    pub bad_frames: u64,
}

/// `GET /search` query string.
#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    /// Search terms.
    pub q: String,
    /// TTL of the flood (default 7).
    pub ttl: Option<u8>,
}

/// One search hit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchHit {
    /// The responder's libp2p peer id.
    pub peer_id: String,
    /// Matching names.
    pub names: Vec<String>,
    /// Overlay hops to the responder.
    pub hops: u16,
}

/// `GET /search` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchResult {
    /// Hits, in arrival order.
    pub hits: Vec<SearchHit>,
}

fn libp2p_string(p: &peerlab_overlay::PeerId) -> String {
    crate::driver::to_libp2p(p)
        .map(|p| p.to_string())
        .unwrap_or_else(|| p.to_string())
}

async fn status(State(st): State<ApiState>) -> Result<Json<Status>, ApiError> {
    let s = st
        .driver
        .inspect(|p: &mut Peer, n: &NetStatus| Status {
            peer_id: n.peer_id.clone(),
            listen_addrs: n.listen_addrs.clone(),
            connected_peers: n.peers.len(),
            uptime_secs: n.uptime_secs,
            flood_neighbours: p.flood().neighbours().len(),
            shared_names: p.flood().index().len(),
            banned_peers: n.banned,
            bad_frames: n.bad_frames,
        })
        .await?;
    Ok(Json(s))
}

async fn peers(State(st): State<ApiState>) -> Result<Json<Vec<PeerInfo>>, ApiError> {
    Ok(Json(st.driver.inspect(|_, n| n.peers.clone()).await?))
}

async fn search(
    State(st): State<ApiState>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<SearchResult>, ApiError> {
    let terms = q.q;
    let ttl = q.ttl;
    let mut rx = st
        .driver
        .call(|request| {
            peer::Command::Flood(flood::Command::Search {
                request,
                terms,
                strategy: flood::Strategy::Flood,
                ttl,
                want_hits: 1,
            })
        })
        .await?;
    let mut hits = Vec::new();
    let deadline = tokio::time::Instant::now() + peer::SEARCH_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(peer::Event::Flood(flood::Event::SearchHit {
                responder,
                names,
                hops,
                ..
            }))) => hits.push(SearchHit {
                peer_id: libp2p_string(&responder),
                names,
                hops,
            }),
            Ok(Some(peer::Event::Flood(flood::Event::SearchRejected { error, .. }))) => {
                return Err(ApiError(StatusCode::BAD_REQUEST, error.to_string()));
            }
            Ok(Some(_)) => break,
            Ok(None) | Err(_) => break,
        }
    }
    Ok(Json(SearchResult { hits }))
}

async fn metrics_text(State(st): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
}

/// Compares two strings in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), st.token.as_bytes()));
    if !ok {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (see api.token in the data dir)".into(),
        )
        .into_response();
    }
    next.run(req).await
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/peers", get(peers))
        .route("/search", get(search))
        .route("/metrics", get(metrics_text))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// Whether `addr` may be bound without `allow_remote_api`.
pub fn is_local(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}
