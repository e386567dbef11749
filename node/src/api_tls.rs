//! TLS for a control API that other hosts may reach.
//!
//! The API's bearer token lets whoever holds it change what the node stores, so it never
//! crosses a network in cleartext: with `allow_remote_api` the API speaks only TLS (1.3 or
//! 1.2, rustls with ring). The node makes its own certificate: an ECDSA P-256 key made once
//! and kept in the data dir (`api.key`, 0600), and a self-signed certificate issued from it
//! at every start (`api.cert`, public) naming the addresses the API may be reached at — the
//! bound IP when it is a specific one, the machine's host name, `localhost`, and every
//! `api_names` entry (a cluster's DNS name for the node). There is no certificate authority:
//! a client pins the certificate it was given (`peerlab credentials` prints it beside the
//! token) and trusts nothing else. Since every certificate a node issues has the same
//! subject and is signed by the same key, a certificate pinned once keeps verifying the
//! node's later ones, also after its addresses changed (a rescheduled pod with a new IP
//! and the same data dir).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

use crate::NodeError;
use crate::datadir::{DataDir, check_private, write_private};

/// The file holding the API's TLS key (PKCS#8 PEM, mode 0600), made on first use.
pub const API_KEY_FILE: &str = "api.key";
/// The file holding the API's current certificate (PEM), rewritten at every TLS start and
/// removed when the API serves plain HTTP on loopback.
pub const API_CERT_FILE: &str = "api.cert";

/// The subject of every certificate a node issues for its API. Constant, so that a pinned
/// certificate (a trust anchor: subject and key) verifies the node's later certificates.
const SUBJECT: &str = "peerlab control API";

/// Most names `api_names` may add: a node has a handful of names in any deployment.
pub const MAX_API_NAMES: usize = 16;

/// The server side of the API's TLS, and the certificate it presents (PEM).
pub(crate) struct ApiTls {
    /// Accepts TLS connections with the node's certificate.
    pub acceptor: TlsAcceptor,
    /// The certificate, as written to `api.cert`.
    pub cert_pem: String,
}

/// Loads (or makes) the API key, issues a certificate for `bound` and `names`, writes it to
/// `api.cert` and returns the acceptor.
pub(crate) fn start(
    dir: &DataDir,
    bound: SocketAddr,
    names: &[String],
) -> Result<ApiTls, NodeError> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        NodeError::Invalid(format!("control API certificate: {what}: {e}"))
    };
    if names.len() > MAX_API_NAMES {
        return Err(NodeError::Invalid(format!(
            "{} api names given; at most {MAX_API_NAMES}",
            names.len()
        )));
    }
    let key = load_or_make_key(&dir.root().join(API_KEY_FILE))?;
    let mut sans = vec![
        SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
        SanType::IpAddress(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
        SanType::DnsName(
            "localhost"
                .try_into()
                .map_err(|e| invalid("localhost", &e))?,
        ),
    ];
    if !bound.ip().is_unspecified() && !bound.ip().is_loopback() {
        sans.push(SanType::IpAddress(bound.ip()));
    }
    let mut dns: Vec<String> = names.to_vec();
    if let Some(h) = host_name() {
        dns.push(h);
    }
    for name in dns {
        if let Ok(ip) = name.parse::<IpAddr>() {
            sans.push(SanType::IpAddress(ip));
            continue;
        }
        let n = name
            .clone()
            .try_into()
            .map_err(|e| invalid(&format!("name {name:?}"), &e))?;
        sans.push(SanType::DnsName(n));
    }
    sans.dedup();
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, SUBJECT);
    params.distinguished_name = subject;
    params.subject_alt_names = sans;
    let cert = params
        .self_signed(&key)
        .map_err(|e| invalid("issuing", &e))?;
    let cert_pem = cert.pem();
    write_private(&dir.root().join(API_CERT_FILE), cert_pem.as_bytes())?;
    let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
        .map_err(|e| invalid("key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("protocol versions", &e))?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], key_der)
        .map_err(|e| invalid("server configuration", &e))?;
    Ok(ApiTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        cert_pem,
    })
}

/// Removes a certificate a former TLS start left, so that clients reading the data dir
/// speak plain HTTP to a loopback API.
pub(crate) fn forget(dir: &DataDir) -> Result<(), NodeError> {
    let path = dir.root().join(API_CERT_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NodeError::Io { path, source }),
    }
}

fn load_or_make_key(path: &Path) -> Result<KeyPair, NodeError> {
    match std::fs::read_to_string(path) {
        Ok(pem) => {
            check_private(path)?;
            KeyPair::from_pem(&pem).map_err(|e| {
                NodeError::Invalid(format!(
                    "{}: not a key ({e}); remove it to make a new one (clients must then fetch the new certificate)",
                    path.display()
                ))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate()
                .map_err(|e| NodeError::Invalid(format!("making the API key: {e}")))?;
            write_private(path, key.serialize_pem().as_bytes())?;
            Ok(key)
        }
        Err(source) => Err(NodeError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The machine's host name (a pod's name on Kubernetes), when the kernel tells it and it is
/// a valid DNS name.
fn host_name() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim();
    let valid = !h.is_empty()
        && h.len() <= 253
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid.then(|| h.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_persists_and_the_certificate_is_reissued_for_new_addresses() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let a = start(&dir, "10.0.0.1:7000".parse().unwrap(), &[]).unwrap();
        let key1 = std::fs::read_to_string(tmp.path().join(API_KEY_FILE)).unwrap();
        let b = start(
            &dir,
            "10.0.0.2:7000".parse().unwrap(),
            &["node-3.peerlab".into()],
        )
        .unwrap();
        let key2 = std::fs::read_to_string(tmp.path().join(API_KEY_FILE)).unwrap();
        assert_eq!(key1, key2, "the key is made once");
        assert_ne!(
            a.cert_pem, b.cert_pem,
            "a new certificate names the new address"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join(API_CERT_FILE)).unwrap(),
            b.cert_pem
        );
        forget(&dir).unwrap();
        assert!(!tmp.path().join(API_CERT_FILE).exists());
    }

    #[test]
    fn bad_names_and_too_many_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let bound: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        assert!(start(&dir, bound, &["bad name\u{7f}é".into()]).is_err());
        let many: Vec<String> = (0..=MAX_API_NAMES).map(|i| format!("n{i}")).collect();
        assert!(start(&dir, bound, &many).is_err());
    }
}
