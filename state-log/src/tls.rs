//! TLS of every store connection: rustls configurations built from PEM
//! files, and the identity a peer proves with its client certificate.
//!
//! Every connection to `bgf statelog` is mutual TLS: the server presents a
//! certificate for its address (checked by the client against the lab or
//! operator CA) and the client presents one signed by the same CA. The
//! client certificate's subject common name says who the client is —
//! `active:<instance>`, `standby:<name>` or `operator:<name>` — and the
//! server grants rights by that role ([`crate::server`] checks every
//! request). Store nodes' own certificates are `server:<name>`.
//!
//! Not here: making certificates ([`crate::pki`]), what each role may do
//! ([`crate::server`]).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a certificate's holder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// An active instance: its own log only.
    Active,
    /// A standby: reads and fences every log, writes the ones it took over.
    Standby,
    /// An operator's tool: reads every log, truncates anywhere.
    Operator,
    /// A store node (server certificate; not a client role).
    Server,
}

impl Role {
    /// The prefix in a certificate's common name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
            Role::Operator => "operator",
            Role::Server => "server",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "active" => Role::Active,
            "standby" => Role::Standby,
            "operator" => Role::Operator,
            "server" => Role::Server,
            _ => return None,
        })
    }
}

/// A peer's proven identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Its role.
    pub role: Role,
    /// Instance id (actives), or the standby's / operator's / node's name.
    pub name: String,
}

impl Identity {
    /// `role:name`, the certificate common name.
    pub fn common_name(&self) -> String {
        format!("{}:{}", self.role.as_str(), self.name)
    }

    /// Parse a common name `role:name` (`name` as an instance id:
    /// `[A-Za-z0-9_-]{1,32}`).
    pub fn parse(cn: &str) -> Result<Identity, String> {
        let (role, name) = cn
            .split_once(':')
            .ok_or_else(|| format!("certificate common name {cn:?} is not role:name"))?;
        let role = Role::parse(role).ok_or_else(|| {
            format!(
                "certificate common name {cn:?}: role must be active, standby, operator or server"
            )
        })?;
        crate::store::check_instance(name).map_err(|_| {
            format!("certificate common name {cn:?}: name must be 1-32 characters of [A-Za-z0-9_-]")
        })?;
        Ok(Identity {
            role,
            name: name.to_string(),
        })
    }

    /// The identity in a DER certificate (its subject common name).
    pub fn of_certificate(der: &[u8]) -> Result<Identity, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("peer certificate does not parse: {e}"))?;
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .ok_or("peer certificate has no common name")?;
        Identity::parse(cn)
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.role.as_str(), self.name)
    }
}

/// The files of one TLS endpoint: the CA that signs the peers, and this
/// endpoint's certificate chain and private key (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) trusted for peers.
    pub ca: PathBuf,
    /// This endpoint's certificate (chain).
    pub cert: PathBuf,
    /// Its private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The identity named in this endpoint's own certificate.
    pub fn identity(&self) -> Result<Identity, String> {
        let certs = load_certs(&self.cert)?;
        Identity::of_certificate(&certs[0]).map_err(|e| format!("{}: {e}", self.cert.display()))
    }
}

/// The ring provider: no OpenSSL, no cmake in the build. rustls 0.23.48
/// deprecates it for lacking post-quantum key exchange (aws-lc-rs has it);
/// store links run inside the cluster's own networks, and the classical
/// groups (X25519, P-256) are what every peer here (NATS 2.9, Redis 7)
/// speaks anyway.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificates from a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: cannot read certificates: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: bad PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in the file (expected PEM -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// A private key from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!(
            "{}: cannot read a private key: {e} (expected PEM PRIVATE KEY)",
            path.display()
        )
    })
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(ca)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
    }
    Ok(roots)
}

/// A server that requires a client certificate signed by `files.ca`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(&files.ca)?),
        provider(),
    )
    .build()
    .map_err(|e| format!("{}: cannot verify clients with it: {e}", files.ca.display()))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| {
            format!(
                "{} / {}: certificate and key do not go together: {e}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    Ok(Arc::new(cfg))
}

/// A server without client certificates (the admin API's HTTPS: clients
/// authenticate with the bearer token).
pub fn server_config_no_client_auth(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| {
            format!(
                "{} / {}: certificate and key do not go together: {e}",
                cert.display(),
                key.display()
            )
        })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A client that checks the server against `files.ca` and presents
/// `files.cert`.
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, String> {
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| {
            format!(
                "{} / {}: certificate and key do not go together: {e}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    Ok(Arc::new(cfg))
}

/// A client that checks the server against `ca` only (no client
/// certificate: HTTPS to an admin API, Redis with AUTH only).
pub fn client_config_no_auth(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The name to check the server's certificate against: a host name, or an
/// IP address (the lab certificates carry the store's addresses).
pub fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    rustls::pki_types::ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
        .map(|n| n.to_owned())
        .map_err(|e| format!("{host:?} is not a host name or address for TLS: {e}"))
}

/// The identity of an authenticated peer (its first certificate).
pub fn peer_identity(conn: &rustls::CommonState) -> Result<Identity, String> {
    let certs = conn
        .peer_certificates()
        .ok_or("the peer presented no certificate")?;
    let first = certs.first().ok_or("the peer presented no certificate")?;
    Identity::of_certificate(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_names_parse_strictly() {
        let i = Identity::parse("active:bgf1").unwrap();
        assert_eq!((i.role, i.name.as_str()), (Role::Active, "bgf1"));
        assert_eq!(i.to_string(), "active:bgf1");
        assert_eq!(Identity::parse("standby:sb-1").unwrap().role, Role::Standby);
        for bad in [
            "bgf1",
            "admin:x",
            "active:",
            "active:a b",
            "active:a:b",
            ":x",
        ] {
            assert!(Identity::parse(bad).is_err(), "{bad}");
        }
    }
}
