//! A blocking client of the control API (used by the CLI and by tests).
//!
//! It finds the node through `api.addr` and `api.token` in a data dir, or takes both
//! explicitly. Every call returns a typed answer or a [`ClientError`] with one clear line.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::api::{
    ErrorBody, FetchBody, FetchProgress, GossipValue, MemberInfo, PublishBody, Published, PutBody,
    RingView, Route, SearchResult, ShareBody, Shared, Status, Stored, Value,
};
use crate::driver::PeerInfo;

/// Parses a PEM certificate (the first one in `pem`).
pub fn parse_cert(pem: &str) -> Result<Certificate<'static>, ClientError> {
    Certificate::from_pem(pem.as_bytes()).map_err(|e| ClientError::Certificate(e.to_string()))
}

/// `addr` with an unspecified IP (the API bound every interface) replaced by loopback, the
/// address a client on the same machine reaches it at (and one the certificate names).
pub fn reachable(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let ip: std::net::IpAddr = if a.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            std::net::SocketAddr::new(ip, a.port()).to_string()
        }
        _ => addr.to_string(),
    }
}

/// Largest answer the client reads from the API: a `/ring` or `/fetches` listing of a big
/// node fits many times over, and a node that answers without end cannot exhaust the
/// client's memory.
const MAX_ANSWER_BYTES: u64 = 256 << 20;

/// How long one API call may take. Searches and fetches take the longest.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node could not be reached.
    #[error("cannot reach the node at {addr}: {msg}")]
    Unreachable {
        /// API address.
        addr: String,
        /// Transport error.
        msg: String,
    },
    /// The node answered with an error.
    #[error("node answered {status}: {msg}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The node's error line.
        msg: String,
    },
    /// A put or delete was refused: another writer owns the key until its record expires.
    #[error("key belongs to {owner}")]
    NotOwner {
        /// The owner's libp2p peer id.
        owner: String,
    },
    /// The answer could not be read.
    #[error("unreadable answer: {0}")]
    Body(String),
    /// A pinned API certificate is not a PEM certificate.
    #[error("not an API certificate: {0}")]
    Certificate(String),
    /// The data dir holds no running node's address or token.
    #[error(
        "no running node found in {dir}: {msg} (start one with `peerlab node`, or pass --api and --token)"
    )]
    NoNode {
        /// The data dir.
        dir: String,
        /// What was missing.
        msg: String,
    },
}

/// A blocking control API client.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    addr: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client for the plain-HTTP API at `addr` (`host:port`, a loopback one) with
    /// bearer `token`.
    pub fn new(addr: &str, token: &str) -> Client {
        Client::build(addr, token, None)
    }

    /// A client for the TLS API at `addr` with bearer `token` that trusts exactly the
    /// certificate `cert_pem` (the node's `api.cert`, as `peerlab credentials` prints it):
    /// the token goes only to a server that proves it holds that certificate's key.
    pub fn with_cert(addr: &str, token: &str, cert_pem: &str) -> Result<Client, ClientError> {
        Ok(Client::with_certificate(addr, token, parse_cert(cert_pem)?))
    }

    /// [`Client::with_cert`] for a certificate read earlier (a testnet file's): when
    /// `cert_pem` is no certificate, every call fails the TLS handshake — the client trusts
    /// nothing rather than falling back to plain HTTP.
    pub fn pinned(addr: &str, token: &str, cert_pem: &str) -> Client {
        let cert = parse_cert(cert_pem).unwrap_or_else(|_| Certificate::from_der(&[]));
        Client::with_certificate(addr, token, cert)
    }

    /// [`Client::with_cert`] with the certificate already parsed.
    pub fn with_certificate(addr: &str, token: &str, cert: Certificate<'static>) -> Client {
        Client::build(addr, token, Some(cert))
    }

    fn build(addr: &str, token: &str, cert: Option<Certificate<'static>>) -> Client {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(CLIENT_TIMEOUT));
        let scheme = match cert {
            Some(cert) => {
                config = config.tls_config(
                    TlsConfig::builder()
                        .root_certs(RootCerts::Specific(Arc::new(vec![cert])))
                        .build(),
                );
                "https"
            }
            None => "http",
        };
        Client {
            base: format!("{scheme}://{addr}"),
            addr: addr.to_string(),
            token: token.to_string(),
            agent: config.build().new_agent(),
        }
    }

    /// A client for the node whose data dir is `dir`: TLS pinned to `api.cert` when the
    /// node wrote one (its API allows remote clients), plain HTTP otherwise.
    pub fn from_data_dir(dir: &Path) -> Result<Client, ClientError> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map(|s| s.trim().to_string())
                .map_err(|e| ClientError::NoNode {
                    dir: dir.display().to_string(),
                    msg: format!("{name}: {e}"),
                })
        };
        let addr = reachable(&read(crate::API_ADDR_FILE)?);
        let token = read(crate::API_TOKEN_FILE)?;
        if dir.join(crate::api_tls::API_CERT_FILE).exists() {
            Client::with_cert(&addr, &token, &read(crate::api_tls::API_CERT_FILE)?)
        } else {
            Ok(Client::new(&addr, &token))
        }
    }

    /// The API address this client calls.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The bearer token this client sends.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Reads an answer's status and body (at most [`MAX_ANSWER_BYTES`]).
    fn answer(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, String), ClientError> {
        let mut resp = r.map_err(|e| ClientError::Unreachable {
            addr: self.addr.clone(),
            msg: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| ClientError::Body(e.to_string()))?;
        Ok((status, text))
    }

    fn finish<T: DeserializeOwned>(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let (status, text) = self.answer(r)?;
        if status >= 400 {
            return Err(match serde_json::from_str::<ErrorBody>(&text) {
                Ok(ErrorBody {
                    owner: Some(owner), ..
                }) => ClientError::NotOwner { owner },
                Ok(b) => ClientError::Api {
                    status,
                    msg: b.error,
                },
                Err(_) => ClientError::Api { status, msg: text },
            });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Body(e.to_string()))
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request that carries no body, with the token.
    fn call(
        &self,
        req: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        req.header("Authorization", self.auth()).call()
    }

    /// Sends `body` as JSON with the token, answer decoded as JSON.
    fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        req: ureq::RequestBuilder<ureq::typestate::WithBody>,
        body: &B,
    ) -> Result<T, ClientError> {
        self.finish(req.header("Authorization", self.auth()).send_json(body))
    }

    /// `GET path` decoded as JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.finish(self.call(self.agent.get(self.url(path))))
    }

    /// `POST path` with a JSON body, answer decoded as JSON.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send_json(self.agent.post(self.url(path)), body)
    }

    /// `PUT path` with a JSON body.
    pub fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send_json(self.agent.put(self.url(path)), body)
    }

    /// `DELETE path`.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.finish(self.call(self.agent.delete(self.url(path))))
    }

    /// The raw Prometheus text of `/metrics`.
    pub fn metrics(&self) -> Result<String, ClientError> {
        let (status, text) = self.answer(self.call(self.agent.get(self.url("/metrics"))))?;
        if status >= 400 {
            return Err(ClientError::Api { status, msg: text });
        }
        Ok(text)
    }

    /// `GET /status`.
    pub fn status(&self) -> Result<Status, ClientError> {
        self.get("/status")
    }

    /// `GET /peers`.
    pub fn peers(&self) -> Result<Vec<PeerInfo>, ClientError> {
        self.get("/peers")
    }

    /// `GET /ring`.
    pub fn ring(&self) -> Result<RingView, ClientError> {
        self.get("/ring")
    }

    /// `GET /lookup/{key}`.
    pub fn lookup(&self, key: &str) -> Result<Route, ClientError> {
        self.get(&format!("/lookup/{}", urlencode(key)))
    }

    /// `PUT /kv/{key}`.
    pub fn kv_put(&self, key: &str, value: &str) -> Result<Stored, ClientError> {
        self.put(
            &format!("/kv/{}", urlencode(key)),
            &PutBody {
                value: value.into(),
                ttl_secs: None,
            },
        )
    }

    /// `GET /kv/{key}`.
    pub fn kv_get(&self, key: &str) -> Result<Value, ClientError> {
        self.get(&format!("/kv/{}", urlencode(key)))
    }

    /// `DELETE /kv/{key}`.
    pub fn kv_delete(&self, key: &str) -> Result<Stored, ClientError> {
        self.delete(&format!("/kv/{}", urlencode(key)))
    }

    /// `POST /gossip`.
    pub fn publish(&self, key: &str, value: &str) -> Result<Published, ClientError> {
        self.post(
            "/gossip",
            &PublishBody {
                key: key.into(),
                value: value.into(),
            },
        )
    }

    /// `GET /gossip/{key}`.
    pub fn gossip_read(&self, key: &str) -> Result<GossipValue, ClientError> {
        self.get(&format!("/gossip/{}", urlencode(key)))
    }

    /// `GET /members`.
    pub fn members(&self) -> Result<Vec<MemberInfo>, ClientError> {
        self.get("/members")
    }

    /// `POST /share` (the path must be absolute), chunked as the node chooses for the size.
    pub fn share(&self, path: &Path) -> Result<Shared, ClientError> {
        self.share_chunked(path, None)
    }

    /// `POST /share` with a chunk size in KiB (`None`: the node chooses for the size).
    pub fn share_chunked(
        &self,
        path: &Path,
        chunk_kib: Option<u32>,
    ) -> Result<Shared, ClientError> {
        self.post(
            "/share",
            &ShareBody {
                path: path.display().to_string(),
                chunk_kib,
            },
        )
    }

    /// `POST /fetch` (the output path, if any, must be absolute).
    pub fn fetch(&self, cid: &str, output: Option<&Path>) -> Result<FetchProgress, ClientError> {
        self.post(
            "/fetch",
            &FetchBody {
                cid: cid.into(),
                output: output.map(|p| p.display().to_string()),
                providers: Vec::new(),
                force: false,
            },
        )
    }

    /// `GET /transfers`.
    pub fn transfers(&self) -> Result<Vec<crate::api::TransferInfo>, ClientError> {
        self.get("/transfers")
    }

    /// `DELETE /fetch/{cid}` (`share == false`) or `DELETE /share/{cid}`.
    pub fn cancel(&self, cid: &str, share: bool) -> Result<serde_json::Value, ClientError> {
        let kind = if share { "share" } else { "fetch" };
        self.delete(&format!("/{kind}/{}", urlencode(cid)))
    }

    /// `GET /fetch/{cid}`.
    pub fn fetch_progress(&self, cid: &str) -> Result<FetchProgress, ClientError> {
        self.get(&format!("/fetch/{}", urlencode(cid)))
    }

    /// `GET /search`.
    pub fn search(&self, terms: &str, ttl: Option<u8>) -> Result<SearchResult, ClientError> {
        let mut path = format!("/search?q={}", urlencode(terms));
        if let Some(t) = ttl {
            path.push_str(&format!("&ttl={t}"));
        }
        self.get(&path)
    }
}

/// Percent-encodes a query or path component.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
