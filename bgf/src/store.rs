//! The state log store as bgf reaches it: the `[statelog]` section (which
//! backend, where, with which credentials), validated into
//! [`StatelogSettings`], and [`connect`], which turns the settings into a
//! `LogStore`.
//!
//! Credentials never leave this module in clear: passwords are
//! [`Secret`]s (redacted in `Debug`), a password written inside a Redis URL
//! is taken out of it at load time, and [`Backend::location`] — what logs,
//! errors and `/v1/stats` show — carries no credential.
//!
//! Not here: output commit itself (`commit.rs`), the store implementations
//! (`state_log`).

use crate::config::{Secret, SecretFile};
use serde::Deserialize;
use state_log::tls::TlsFiles;
use state_log::LogStore;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `[statelog]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatelogSection {
    pub backend: Option<String>,
    pub addr: Option<String>,
    pub redis_url: Option<String>,
    pub redis_replicas: Option<u64>,
    /// JetStream: the cluster's client URLs.
    pub servers: Option<Vec<String>>,
    /// JetStream: replicas of each instance's stream.
    pub stream_replicas: Option<u64>,
    pub append_timeout_ms: Option<u64>,
    pub max_held: Option<u64>,
    pub checkpoint_every: Option<u64>,
    // The credential keys ([`CredentialsSection`]; serde's flatten does
    // not go with deny_unknown_fields, so they are listed here too).
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub server_name: Option<String>,
    pub redis_user: Option<String>,
    pub redis_password_file: Option<String>,
}

impl StatelogSection {
    fn take_credentials(&mut self) -> CredentialsSection {
        CredentialsSection {
            ca: self.ca.take(),
            cert: self.cert.take(),
            key: self.key.take(),
            server_name: self.server_name.take(),
            redis_user: self.redis_user.take(),
            redis_password_file: self.redis_password_file.take(),
        }
    }
}

/// The credential keys, shared by an active's `[statelog]` and a
/// standby's (which holds only these: the standby reaches every protected
/// log with its own identity).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsSection {
    /// CA certificate that signs the store's certificate (PEM).
    pub ca: Option<String>,
    /// This process's client certificate (PEM; `active:<instance>` or
    /// `standby:<name>`).
    pub cert: Option<String>,
    /// Its private key (PEM).
    pub key: Option<String>,
    /// Name the store's certificate must carry, when not the host of
    /// `addr`.
    pub server_name: Option<String>,
    /// Redis ACL user.
    pub redis_user: Option<String>,
    /// File holding the Redis password.
    pub redis_password_file: Option<String>,
}

/// Which store the log lives in. No credential in here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A `bgf statelog` server (mutual TLS).
    Embedded { addr: SocketAddr },
    /// Redis Streams; `url` has no password (see [`Credentials`]).
    Redis { url: String, replicas: u32 },
    /// NATS JetStream (mutual TLS, users mapped from certificates).
    JetStream {
        servers: Vec<String>,
        replicas: usize,
    },
}

impl Backend {
    /// Name for stats and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Embedded { .. } => "embedded",
            Backend::Redis { .. } => "redis",
            Backend::JetStream { .. } => "jetstream",
        }
    }

    /// Where the store is, for operator messages (never a credential).
    pub fn location(&self) -> String {
        match self {
            Backend::Embedded { addr } => addr.to_string(),
            Backend::Redis { url, .. } => url.clone(),
            Backend::JetStream { servers, .. } => servers.join(","),
        }
    }
}

/// How this process proves who it is to the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// TLS: CA, certificate and key (required for the embedded store).
    pub tls: Option<TlsFiles>,
    /// Overrides the name checked in the server's certificate.
    pub server_name: Option<String>,
    /// Redis ACL user.
    pub redis_user: Option<String>,
    /// Redis password (from `redis_password_file`, or taken out of the URL).
    pub redis_password: Option<Secret>,
    /// Where the password came from, for messages.
    pub redis_password_file: Option<PathBuf>,
}

impl Credentials {
    /// Relative paths are relative to the configuration file's directory.
    pub fn resolve(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(t) = &mut self.tls {
            abs(&mut t.ca);
            abs(&mut t.cert);
            abs(&mut t.key);
        }
        if let Some(p) = &mut self.redis_password_file {
            abs(p);
        }
    }

    /// Read the files named (password), check the certificate files load
    /// and name `want` (role, and for an active its instance). Errors say
    /// which file and what to do.
    pub fn load_files(&mut self, want: &str) -> Result<(), String> {
        if let Some(p) = &self.redis_password_file {
            self.redis_password = Some(SecretFile::read(p, "statelog.redis_password_file")?);
        }
        if let Some(t) = &self.tls {
            let id = t.identity().map_err(|e| {
                format!("statelog.cert: {e} — make the lab's with `bgf gen-certs DIR` (docs/CONFIG.md, \"State log credentials\")")
            })?;
            let ok = match want.split_once(':') {
                Some((role, "*")) => id.role.as_str() == role,
                _ => id.to_string() == want,
            };
            if !ok {
                return Err(format!(
                    "statelog.cert {}: the certificate is {id}, this process needs {want} — use the certificate issued for it",
                    t.cert.display()
                ));
            }
            for (f, what) in [(&t.ca, "statelog.ca"), (&t.key, "statelog.key")] {
                if !f.is_file() {
                    return Err(format!("{what} {}: no such file", f.display()));
                }
            }
        }
        Ok(())
    }
}

/// Validated `[statelog]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatelogSettings {
    pub backend: Backend,
    pub credentials: Credentials,
    /// An append not durable within this is a failure (→ degraded).
    pub append_timeout: Duration,
    /// Bound on sends held awaiting durability (and on pending records);
    /// past it new SIP input is dropped.
    pub max_held: usize,
    /// Write a checkpoint every this many records (0 = never).
    pub checkpoint_every: u64,
}

impl StatelogSettings {
    /// The same store reached with `c` (a standby's own identity).
    pub fn with_credentials(&self, c: &Credentials) -> StatelogSettings {
        StatelogSettings {
            credentials: c.clone(),
            ..self.clone()
        }
    }
}

fn path(v: &Option<String>) -> Option<PathBuf> {
    v.as_deref().map(|s| PathBuf::from(s.trim()))
}

/// Validate the credential keys (`section` names them in messages).
pub fn credentials(c: CredentialsSection, section: &str, errs: &mut Vec<String>) -> Credentials {
    let tls = match (path(&c.ca), path(&c.cert), path(&c.key)) {
        (Some(ca), Some(cert), Some(key)) => Some(TlsFiles { ca, cert, key }),
        (None, None, None) => None,
        _ => {
            errs.push(format!(
                "{section}.ca, cert and key go together — set all three (PEM files; `bgf gen-certs DIR` makes the lab's)"
            ));
            None
        }
    };
    let user = c.redis_user.map(|u| u.trim().to_string());
    if user.as_deref() == Some("") {
        errs.push(format!(
            "{section}.redis_user: empty — remove it or name the ACL user"
        ));
    }
    Credentials {
        tls,
        server_name: c.server_name.map(|s| s.trim().to_string()),
        redis_user: user,
        redis_password: None,
        redis_password_file: path(&c.redis_password_file),
    }
}

/// Validate an active's `[statelog]`.
pub fn statelog(mut l: StatelogSection, errs: &mut Vec<String>) -> Option<StatelogSettings> {
    let mut creds = credentials(l.take_credentials(), "statelog", errs);
    let backend = match l.backend.as_deref().map(str::trim) {
        None => {
            errs.push("statelog.backend missing — set \"jetstream\" (a NATS cluster), \"embedded\" (a `bgf statelog` server) or \"redis\"".into());
            None
        }
        Some("embedded") => {
            if l.redis_url.is_some() || l.redis_replicas.is_some() {
                errs.push(
                    "statelog.redis_url/redis_replicas: only valid with backend = \"redis\"".into(),
                );
            }
            if creds.tls.is_none() {
                errs.push("statelog.ca/cert/key missing — the embedded store takes only mutual TLS: give the CA and this active's certificate (active:<instance>) and key; `bgf gen-certs DIR` makes the lab's".into());
            }
            match &l.addr {
                None => {
                    errs.push("statelog.addr missing — set the `bgf statelog --listen` address, e.g. addr = \"127.0.0.1:7400\"".into());
                    None
                }
                Some(a) => crate::config::socket_addr("statelog.addr", a, errs)
                    .map(|addr| Backend::Embedded { addr }),
            }
        }
        Some("redis") => {
            if l.addr.is_some() {
                errs.push("statelog.addr: only valid with backend = \"embedded\" — use statelog.redis_url".into());
            }
            let replicas = l.redis_replicas.unwrap_or(0);
            if replicas > 16 {
                errs.push(format!(
                    "statelog.redis_replicas: {replicas} is out of range — use 0-16 (default 0)"
                ));
            }
            match l.redis_url.as_deref().map(str::trim) {
                Some(u) if u.starts_with("redis://") || u.starts_with("rediss://") => {
                    let (url, user, pw) = state_log::redis_store::split_url(u);
                    if let Some(pw) = pw {
                        if creds.redis_password_file.is_some() {
                            errs.push("statelog.redis_url holds a password and statelog.redis_password_file is set too — keep one (the file)".into());
                        }
                        creds.redis_password = Some(Secret::new(pw));
                    }
                    if creds.redis_user.is_none() {
                        creds.redis_user = user;
                    }
                    Some(Backend::Redis {
                        url,
                        replicas: replicas.min(16) as u32,
                    })
                }
                Some(_) => {
                    // Never echo the value: it may hold a password.
                    errs.push("statelog.redis_url is not a redis URL — write redis://host:port[/db] (rediss:// for TLS)".into());
                    None
                }
                None => {
                    errs.push("statelog.redis_url missing — set it, e.g. redis_url = \"redis://127.0.0.1:6379/0\"".into());
                    None
                }
            }
        }
        Some("jetstream") => {
            if l.addr.is_some() || l.redis_url.is_some() || l.redis_replicas.is_some() {
                errs.push("statelog.addr/redis_url/redis_replicas: not valid with backend = \"jetstream\" — list the cluster in statelog.servers".into());
            }
            if creds.tls.is_none() {
                errs.push("statelog.ca/cert/key missing — JetStream takes only mutual TLS: give the CA and this process's certificate and key (`bgf gen-certs DIR`)".into());
            }
            let replicas = l.stream_replicas.unwrap_or(3);
            if !(1..=5).contains(&replicas) {
                errs.push(format!(
                    "statelog.stream_replicas: {replicas} is out of range — use 1-5 (default 3; 1 only for a single node)"
                ));
            }
            match l.servers.clone() {
                Some(v) if !v.is_empty() => {
                    let mut ok = true;
                    for u in &v {
                        let u = u.trim();
                        let host = u
                            .strip_prefix("tls://")
                            .or_else(|| u.strip_prefix("nats://"));
                        if host.is_none_or(|h| !h.contains(':')) {
                            errs.push(format!("statelog.servers: \"{u}\" is not a NATS URL — write tls://host:port"));
                            ok = false;
                        }
                    }
                    ok.then(|| Backend::JetStream {
                        servers: v.iter().map(|u| u.trim().to_string()).collect(),
                        replicas: replicas.clamp(1, 5) as usize,
                    })
                }
                _ => {
                    errs.push("statelog.servers missing — list the JetStream cluster, e.g. servers = [\"tls://198.18.30.51:4222\", \"tls://198.18.30.52:4222\", \"tls://198.18.30.53:4222\"]".into());
                    None
                }
            }
        }
        Some(b) => {
            errs.push(format!(
                "statelog.backend: \"{b}\" is not a backend — use \"jetstream\", \"embedded\" or \"redis\""
            ));
            None
        }
    };
    if l.servers.is_some() && !matches!(l.backend.as_deref().map(str::trim), Some("jetstream")) {
        errs.push("statelog.servers: only valid with backend = \"jetstream\"".into());
    }
    let timeout = l.append_timeout_ms.unwrap_or(1000);
    if !(10..=60_000).contains(&timeout) {
        errs.push(format!(
            "statelog.append_timeout_ms: {timeout} is out of range — use 10-60000 (default 1000)"
        ));
    }
    let max_held = l.max_held.unwrap_or(10_000);
    if !(1..=10_000_000).contains(&max_held) {
        errs.push(format!(
            "statelog.max_held: {max_held} is out of range — use 1-10000000 (default 10000)"
        ));
    }
    let checkpoint_every = l.checkpoint_every.unwrap_or(20_000);
    if checkpoint_every > 0 && checkpoint_every < 100 {
        errs.push(format!("statelog.checkpoint_every: {checkpoint_every} is too small — use 0 (never) or at least 100 (default 20000)"));
    }
    Some(StatelogSettings {
        backend: backend?,
        credentials: creds,
        append_timeout: Duration::from_millis(timeout),
        max_held: max_held as usize,
        checkpoint_every,
    })
}

/// Connect to the configured store.
pub async fn connect(s: &StatelogSettings) -> Result<Arc<dyn LogStore>, String> {
    let c = &s.credentials;
    match &s.backend {
        Backend::Embedded { addr } => {
            let t = state_log::remote::Timeouts {
                connect: s.append_timeout,
                request: s.append_timeout,
            };
            let files = c
                .tls
                .as_ref()
                .ok_or("statelog.ca/cert/key missing: the embedded store takes only mutual TLS")?;
            let a = addr.to_string();
            let tls =
                state_log::remote::ClientTls::from_files(files, c.server_name.as_deref(), &a)?;
            let store = state_log::remote::RemoteStore::connect(&a, tls, t)
                .await
                .map_err(|e| {
                    format!(
                        "cannot reach the state log at {addr}: {e} — check statelog.addr and that `bgf statelog --listen {addr}` is running"
                    )
                })?;
            Ok(Arc::new(store))
        }
        Backend::JetStream { servers, replicas } => {
            let files = c
                .tls
                .as_ref()
                .ok_or("statelog.ca/cert/key missing: JetStream takes only mutual TLS")?;
            let mut cfg =
                state_log::jetstream::JetStreamConfig::new(servers.clone(), files.clone());
            cfg.replicas = *replicas;
            cfg.request_timeout = s.append_timeout;
            let store = state_log::jetstream::JetStreamStore::connect(cfg)
                .await
                .map_err(|e| {
                    format!("cannot reach the state log in JetStream at {}: {e} — check statelog.servers, the certificates and that nats-server runs there", servers.join(", "))
                })?;
            Ok(Arc::new(store))
        }
        Backend::Redis { url, replicas } => {
            let cfg = state_log::redis_store::RedisConfig {
                url: url.clone(),
                username: c.redis_user.clone(),
                password: c
                    .redis_password
                    .as_ref()
                    .map(|p| p.expose_str().to_string()),
                tls: c.tls.clone(),
                replicas: *replicas,
                wait_timeout: s.append_timeout,
                command_timeout: s.append_timeout,
                ..Default::default()
            };
            let store = state_log::redis_store::RedisStore::connect(cfg)
                .await
                .map_err(|e| {
                    format!("cannot reach the state log in redis at {url}: {e} — check statelog.redis_url, the credentials and that redis-server is running and reachable")
                })?;
            Ok(Arc::new(store))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_leave_redis_urls() {
        use state_log::redis_store::split_url as split_redis_url;
        assert_eq!(
            split_redis_url("redis://127.0.0.1:6379/0"),
            ("redis://127.0.0.1:6379/0".into(), None, None)
        );
        assert_eq!(
            state_log::redis_store::split_url("rediss://:s3cret@h:6380/1"),
            ("rediss://h:6380/1".into(), None, Some("s3cret".into()))
        );
        assert_eq!(
            state_log::redis_store::split_url("redis://bgf:p@ss@h:6379"),
            (
                "redis://h:6379".into(),
                Some("bgf".into()),
                Some("p@ss".into())
            )
        );
        let mut errs = Vec::new();
        let s = statelog(
            toml::from_str(
                "backend = \"redis\"\nredis_url = \"redis://bgf-active:hunter2hunter2@127.0.0.1:6379/0\"\n",
            )
            .unwrap(),
            &mut errs,
        )
        .unwrap();
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(s.backend.location(), "redis://127.0.0.1:6379/0");
        assert!(!format!("{s:?}").contains("hunter2"), "{s:?}");
        assert_eq!(s.credentials.redis_user.as_deref(), Some("bgf-active"));
        let mut errs = Vec::new();
        let bad: StatelogSection =
            toml::from_str("backend = \"redis\"\nredis_url = \"http://u:hunter2@x\"\n").unwrap();
        assert!(statelog(bad, &mut errs).is_none());
        assert!(!errs.join(" ").contains("hunter2"), "{errs:?}");
    }

    #[test]
    fn jetstream_section() {
        let mut errs = Vec::new();
        let s: StatelogSection = toml::from_str(
            "backend = \"jetstream\"\nservers = [\"tls://127.0.0.1:4222\", \"tls://127.0.0.1:4223\"]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
        )
        .unwrap();
        let s = statelog(s, &mut errs).unwrap();
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            s.backend,
            Backend::JetStream {
                servers: vec!["tls://127.0.0.1:4222".into(), "tls://127.0.0.1:4223".into()],
                replicas: 3
            }
        );
        assert_eq!(
            s.backend.location(),
            "tls://127.0.0.1:4222,tls://127.0.0.1:4223"
        );
        for (body, expect) in [
            ("backend = \"jetstream\"\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n", "statelog.servers missing"),
            ("backend = \"jetstream\"\nservers = [\"x\"]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n", "is not a NATS URL"),
            ("backend = \"jetstream\"\nservers = [\"tls://h:1\"]\n", "JetStream takes only mutual TLS"),
            ("backend = \"jetstream\"\nservers = [\"tls://h:1\"]\nstream_replicas = 9\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n", "statelog.stream_replicas"),
            ("backend = \"embedded\"\naddr = \"127.0.0.1:1\"\nservers = [\"tls://h:1\"]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n", "only valid with backend = \"jetstream\""),
        ] {
            let mut errs = Vec::new();
            statelog(toml::from_str(body).unwrap(), &mut errs);
            assert!(errs.iter().any(|e| e.contains(expect)), "{expect} not in {errs:?}");
        }
    }

    #[test]
    fn the_embedded_store_needs_tls() {
        let mut errs = Vec::new();
        let s: StatelogSection =
            toml::from_str("backend = \"embedded\"\naddr = \"127.0.0.1:7400\"\n").unwrap();
        statelog(s, &mut errs);
        assert!(
            errs.iter().any(|e| e.contains("only mutual TLS")),
            "{errs:?}"
        );
        let mut errs = Vec::new();
        let s: StatelogSection = toml::from_str(
            "backend = \"embedded\"\naddr = \"127.0.0.1:7400\"\nca = \"pki/ca.pem\"\n",
        )
        .unwrap();
        statelog(s, &mut errs);
        assert!(errs.iter().any(|e| e.contains("go together")), "{errs:?}");
        let mut errs = Vec::new();
        let s: StatelogSection = toml::from_str(
            "backend = \"embedded\"\naddr = \"127.0.0.1:7400\"\nca = \"pki/ca.pem\"\ncert = \"pki/a.pem\"\nkey = \"/abs/a.key\"\n",
        )
        .unwrap();
        let mut s = statelog(s, &mut errs).unwrap();
        assert!(errs.is_empty(), "{errs:?}");
        s.credentials.resolve(Path::new("/etc/bgf"));
        let t = s.credentials.tls.unwrap();
        assert_eq!(t.ca, PathBuf::from("/etc/bgf/pki/ca.pem"));
        assert_eq!(t.key, PathBuf::from("/abs/a.key"));
    }
}
