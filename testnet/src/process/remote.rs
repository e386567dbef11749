//! `testnet attach`: a testnet of nodes on other hosts — a cluster's pods, containers,
//! machines — that this controller did not start.
//!
//! Each node gives its credentials with `peerlab credentials` (peer id, API address, bearer
//! token, the API's TLS certificate), carried to the controller over a channel that is
//! already encrypted (`kubectl exec`, ssh). The controller checks every node (its API
//! answers over TLS with the pinned certificate, under the peer id the line names) and
//! writes `testnet.json` in [`Mode::Remote`]; `testnet status`, `lookups`, `converge` and
//! `churn` then run against it as against local nodes. What differs: `churn` crashes a node
//! with `POST /crash` (the node must run with `--accept-crash`) and its orchestrator, not
//! the controller, restarts it; `down` forgets the nodes without stopping them.

use std::fs;
use std::path::Path;

use peerlab_node::client::{Client, parse_cert};
use peerlab_node::config::Transport;
use serde::Deserialize;

use super::{
    Manifest, Mode, NodeRecord, Testnet, TestnetError, Timings, io_err, par_map, private_dir,
};

/// Most nodes a credentials file may list: beyond what one controller measures.
pub const MAX_REMOTE_NODES: usize = 10_000;
/// Longest line of a credentials file: a certificate is under 1 KiB.
pub const MAX_CREDENTIALS_LINE: usize = 16 * 1024;

/// One line of a credentials file, as `peerlab credentials` prints it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The node's libp2p peer id.
    pub peer_id: String,
    /// Where its API is reached, `host:port` (a name its certificate holds).
    pub api: String,
    /// The API's bearer token.
    pub token: String,
    /// The API's certificate (PEM).
    pub cert: String,
}

/// Parses a credentials file: one JSON object a line (blank lines skipped).
pub fn parse_credentials(text: &str) -> Result<Vec<Credentials>, TestnetError> {
    let mut out = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad =
            |msg: String| TestnetError::Invalid(format!("credentials line {}: {msg}", no + 1));
        if line.len() > MAX_CREDENTIALS_LINE {
            return Err(bad(format!("longer than {MAX_CREDENTIALS_LINE} bytes")));
        }
        if out.len() == MAX_REMOTE_NODES {
            return Err(bad(format!("more than {MAX_REMOTE_NODES} nodes")));
        }
        let c: Credentials = serde_json::from_str(line).map_err(|e| {
            bad(format!(
                "{e} (expected what `peerlab credentials` prints: peer_id, api, token, cert)"
            ))
        })?;
        if c.peer_id.parse::<peerlab_node::libp2p::PeerId>().is_err() {
            return Err(bad(format!("{:?} is not a peer id", c.peer_id)));
        }
        if c.api
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(bad(format!("api {:?} is not host:port", c.api)));
        }
        if c.token.trim().is_empty() {
            return Err(bad("empty token".into()));
        }
        parse_cert(&c.cert).map_err(|e| bad(e.to_string()))?;
        if out.iter().any(|o: &Credentials| o.peer_id == c.peer_id) {
            return Err(bad(format!("peer {} listed twice", c.peer_id)));
        }
        out.push(c);
    }
    if out.is_empty() {
        return Err(TestnetError::Invalid("the credentials list no node".into()));
    }
    Ok(out)
}

/// How the nodes of a remote testnet run, as far as the measurements need to know.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// The first `seeds` nodes are never crashed by churn (every other node bootstraps
    /// through them).
    pub seeds: usize,
    /// Gossip round period and fan-out the nodes run (`converge` compares with the
    /// simulator at these).
    pub timings: Timings,
    /// The nodes' transport.
    pub transport: Transport,
}

impl Testnet {
    /// Records the nodes `creds` name as a testnet in `dir` after checking that each
    /// answers over TLS under its pinned certificate with the peer id it claims.
    pub fn attach_remote(
        dir: &Path,
        creds: Vec<Credentials>,
        opts: RemoteOptions,
    ) -> Result<Testnet, TestnetError> {
        private_dir(dir)?;
        let checked = par_map(&creds, |c| {
            let client = Client::with_cert(&c.api, &c.token, &c.cert)
                .map_err(|e| format!("{}: {e}", c.api))?;
            let st = client.status().map_err(|e| format!("{}: {e}", c.api))?;
            if st.peer_id != c.peer_id {
                return Err(format!(
                    "{} answers as {}, not as the {} its credentials name",
                    c.api, st.peer_id, c.peer_id
                ));
            }
            Ok(st.vnodes)
        });
        let mut vnodes = Vec::new();
        for r in checked {
            vnodes.push(r.map_err(TestnetError::Invalid)?);
        }
        vnodes.sort_unstable();
        vnodes.dedup();
        let [v] = vnodes[..] else {
            return Err(TestnetError::Invalid(format!(
                "the nodes run different numbers of virtual nodes ({vnodes:?}); the ideal ring the measurements compare with needs one"
            )));
        };
        let nodes = creds
            .into_iter()
            .enumerate()
            .map(|(index, c)| NodeRecord {
                index,
                data_dir: dir.join(format!("node-{index:04}")),
                peer_id: c.peer_id,
                api: c.api,
                token: c.token,
                api_cert: Some(c.cert),
                listen_addrs: Vec::new(),
                pid: None,
                alive: true,
                seed: index < opts.seeds,
                host: None,
            })
            .collect();
        let manifest = Manifest {
            mode: Mode::Remote,
            controller_pid: std::process::id(),
            transport: opts.transport,
            vnodes: u16::try_from(v).unwrap_or(u16::MAX),
            timings: opts.timings,
            nodes,
        };
        manifest.save(dir)?;
        Testnet::attach(dir, None)
    }
}

/// Reads a credentials file (`-`: standard input), bounded by what
/// [`MAX_REMOTE_NODES`] lines of [`MAX_CREDENTIALS_LINE`] bytes hold.
pub fn read_credentials(path: &Path) -> Result<Vec<Credentials>, TestnetError> {
    use std::io::Read;
    let limit = (MAX_REMOTE_NODES * MAX_CREDENTIALS_LINE) as u64;
    let mut text = String::new();
    let r = if path == Path::new("-") {
        std::io::stdin().take(limit).read_to_string(&mut text)
    } else {
        fs::File::open(path).and_then(|f| f.take(limit).read_to_string(&mut text))
    };
    r.map_err(io_err(path))?;
    parse_credentials(&text)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever a credentials file holds, parsing answers (an error or nodes) and never
        /// panics.
        #[test]
        fn any_text_parses_or_is_refused(text in "(\\PC|\n|[{}\":,]){0,400}") {
            let _ = parse_credentials(&text);
        }
    }

    fn cert() -> String {
        rcgen::generate_simple_self_signed(vec!["example".to_string()])
            .unwrap()
            .cert
            .pem()
    }

    fn line(peer: &str, api: &str, token: &str, cert: &str) -> String {
        serde_json::json!({"peer_id": peer, "api": api, "token": token, "cert": cert}).to_string()
    }

    #[test]
    fn credentials_are_validated_line_by_line() {
        let cert = cert();
        let cert = cert.as_str();
        let p1 = peerlab_node::libp2p::PeerId::random().to_string();
        let p2 = peerlab_node::libp2p::PeerId::random().to_string();
        let good = format!(
            "{}\n\n{}\n",
            line(&p1, "n1.example:7000", "t1", cert),
            line(&p2, "10.0.0.2:7000", "t2", cert)
        );
        let c = parse_credentials(&good).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].api, "10.0.0.2:7000");
        for (bad, why) in [
            (line("nope", "h:1", "t", cert), "not a peer id"),
            (line(&p1, "h", "t", cert), "not host:port"),
            (line(&p1, "h:99999", "t", cert), "not host:port"),
            (line(&p1, "h:1", " ", cert), "empty token"),
            (line(&p1, "h:1", "t", "not a cert"), "certificate"),
            (
                format!(
                    "{}\n{}",
                    line(&p1, "h:1", "t", cert),
                    line(&p1, "h:2", "t", cert)
                ),
                "twice",
            ),
            ("{\"peer_id\": 1}".to_string(), "expected what"),
            (String::new(), "no node"),
            ("x".repeat(MAX_CREDENTIALS_LINE + 1), "longer than"),
        ] {
            let e = parse_credentials(&bad).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
