//! The control API's HTTP server, with its limits: a cap on connections
//! ([`API_MAX_CONNECTIONS`]), an idle timeout that also bounds how long a request's headers
//! may take ([`API_IDLE_TIMEOUT`]), and a deadline for each request ([`API_REQUEST_TIMEOUT`]).
//!
//! The API listens on loopback by default, but anything that can reach it — another local
//! user's process, or a remote one with `allow_remote_api` — could otherwise hold
//! connections open without end or send a request a byte a minute. The server is hyper's
//! HTTP/1 connection driver with its timer, one task per connection; the routes are
//! [`crate::api::router`]'s. A connection beyond the cap waits in the kernel's accept queue
//! until one closes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::api::ApiError;

/// Most API connections open at once. The CLI opens one per command, the testnet poller 16;
/// 64 leaves room for both with scripts beside them.
pub(crate) const API_MAX_CONNECTIONS: usize = 64;

/// A connection that sends no request for this long is closed; so is one whose request
/// headers have not all arrived this long after they began. The client's pooled
/// connections are dropped after 15 s idle, before this.
pub(crate) const API_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most time a request may take, from its headers to its answer. Every handler answers
/// within its own deadline (30 s for the driver, 10 s of search), a share within the time
/// its file takes to hash; this bounds what a slow client (a body sent a byte a minute)
/// can hold, and stays under the client's 120 s timeout so the client hears why.
pub(crate) const API_REQUEST_TIMEOUT: Duration = Duration::from_secs(110);

/// How long a stopping server waits for the requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (out of file descriptors, say) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The limits a server runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Idle (and header) timeout of a connection.
    pub idle_timeout: Duration,
    /// Deadline of one request.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: API_MAX_CONNECTIONS,
            idle_timeout: API_IDLE_TIMEOUT,
            request_timeout: API_REQUEST_TIMEOUT,
        }
    }
}

/// Answers 408 for a request that did not complete within `limit`.
async fn deadline(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request did not complete within {} s",
                limit.as_secs_f64()
            ),
            None,
        )
        .into_response(),
    }
}

/// Serves `app` on `listener` within `limits` until `stop` fires (or its sender is
/// dropped); then lets the requests in flight finish (for at most a few seconds).
/// With `tls`, every connection is a TLS one whose handshake must complete within the
/// idle timeout.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    stop: oneshot::Receiver<()>,
) {
    let request_timeout = limits.request_timeout;
    let app = app.layer(middleware::from_fn(move |req, next| {
        deadline(request_timeout, req, next)
    }));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closing_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut stop => break,
        };
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(%e, "API accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let svc = TowerToHyperService::new(app.clone());
        let closing = closing_rx.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(TokioIo::new(tcp), svc, limits, closing).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.idle_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            connection(TokioIo::new(stream), svc, limits, closing).await
                        }
                        Ok(Err(e)) => tracing::debug!(%e, "API TLS handshake failed"),
                        Err(_) => tracing::debug!("API TLS handshake timed out"),
                    }
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
    let _ = closing.send(true);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        conns.abort_all();
    }
}

/// Serves one HTTP/1 connection until it ends or the server closes.
async fn connection<I>(
    io: I,
    svc: TowerToHyperService<Router>,
    limits: Limits,
    mut closing: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = closing.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    const SHORT: Duration = Duration::from_millis(300);
    /// Bound on any wait in these tests.
    const BOUND: Duration = Duration::from_secs(10);

    async fn start(limits: Limits) -> (std::net::SocketAddr, oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/hi", get(|| async { "hi" })).route(
            "/echo",
            axum::routing::post(|body: String| async move { body }),
        );
        let (stop, rx) = oneshot::channel();
        tokio::spawn(serve(listener, app, limits, None, rx));
        (addr, stop)
    }

    /// Sends `req` and reads until the server closes the connection (or `BOUND`).
    async fn exchange(addr: std::net::SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(BOUND, s.read_to_end(&mut out))
            .await
            .expect("the server ends the exchange")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn idle_and_slow_connections_are_closed() {
        let limits = Limits {
            idle_timeout: SHORT,
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        // Says nothing at all.
        assert_eq!(exchange(addr, "").await, "", "an idle connection is closed");
        // Starts its headers and stops.
        let r = exchange(addr, "GET /hi HTTP/1.1\r\nHost: x\r\n").await;
        assert!(!r.contains("200 OK"), "{r}");
        // A keep-alive connection is answered, then closed once idle.
        let r = exchange(addr, "GET /hi HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK") && r.ends_with("hi"), "{r}");
    }

    #[tokio::test]
    async fn a_request_whose_body_stalls_gets_a_timeout_answer() {
        let limits = Limits {
            request_timeout: SHORT,
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let r = exchange(
            addr,
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\nonly ten b",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 408"), "{r}");
        // A request that arrives whole is answered as usual.
        let r = exchange(
            addr,
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK") && r.ends_with("hello"),
            "{r}"
        );
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_for_a_free_one() {
        let limits = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            // Served, so certainly accepted (and holding a slot) before the next one.
            s.write_all(b"GET /hi HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            let n = tokio::time::timeout(BOUND, s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
            held.push(s);
        }
        let third = tokio::spawn(exchange(
            addr,
            "GET /hi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ));
        // While both slots are held the third is not served.
        tokio::time::sleep(SHORT).await;
        assert!(
            !third.is_finished(),
            "a third connection was served beyond the cap of 2"
        );
        drop(held.pop());
        let r = tokio::time::timeout(BOUND, third).await.unwrap().unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    }
}
