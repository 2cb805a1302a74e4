//! Redis Streams backend of [`LogStore`]: the distributed store for
//! multi-host deployments.
//!
//! Layout (per instance, `P` = [`RedisConfig::key_prefix`]; the `{instance}`
//! hash tag keeps both keys in one Redis Cluster slot):
//!
//! - `P:{instance}:log` — a stream, one entry per record, entry id
//!   `{seq}-0` (stream ids *are* the seqs), field `f` = the encoded frame
//!   ([`Record::encode`]).
//! - `P:{instance}:meta` — a hash: `epoch` (fencing epoch, absent = 0) and
//!   `last_seq` (last seq written; kept here because trimming the stream
//!   must not reset the count).
//!
//! How the [`LogStore`] guarantees are met:
//!
//! - **Epoch check, contiguity and write are one atomic step**: a Lua script
//!   (EVALSHA, loaded again on `NOSCRIPT`) reads `epoch` and `last_seq`,
//!   refuses with `BGFSTALE <current>` ([`LogError::StaleEpoch`]) or
//!   `BGFGAP <expected>` ([`LogError::Gap`]) before writing anything, then
//!   XADDs every record with its explicit id and sets `last_seq`. Redis runs
//!   scripts without interleaving other commands, so a `fence` either
//!   happens before the whole batch (which is then refused) or after it.
//! - **Durable acknowledgement**: with `replicas >= 1` the script and
//!   `WAIT replicas wait_timeout` travel in one pipeline on the same
//!   connection (WAIT counts the writes of *its* connection, so they must
//!   not be split across a reconnect). If fewer replicas acknowledge before
//!   the timeout the append fails with [`LogError::Unavailable`]. The records
//!   may nevertheless exist on the primary (and be replicated later): the
//!   caller treats the append as failed, which is safe for output commit
//!   because nothing was released for them. A retry of the same seqs finds
//!   them on the primary; since a writer takes `Gap` after a failed attempt
//!   to mean "my records landed", the store first confirms them on the
//!   replicas (a write plus `WAIT` on the same connection covers every
//!   earlier write): `Gap` only once they are replicated, `Unavailable`
//!   ("not durable yet") while they are not.
//!   With `replicas = 0` the acknowledgement is only as durable as the
//!   primary's own persistence: run it with `appendonly yes` and
//!   `appendfsync always` (a warning is logged at connect when it is not).
//! - **Reads** use XRANGE from `{from}-0`; each frame is decoded and checked
//!   (CRC, version) and its seq compared with the stream id; a bad entry or
//!   a hole inside the returned range is [`LogError::Corrupt`] with that
//!   seq, never skipped.
//! - **Tailing** (`wait_for`) uses XREAD BLOCK, which Redis answers as soon
//!   as an XADD (from the append script) lands. A blocked XREAD occupies its
//!   whole connection, and the crate's default 500 ms response timeout would
//!   cut it off, so every waiter takes its *own* connection with the response
//!   timeout disabled (bounded instead by a tokio timeout of the block time
//!   plus the command timeout). Connections are reused through a small idle
//!   pool ([`RedisConfig::idle_wait_connections`]); a connection whose wait
//!   was cut off by the outer timeout is dropped, not reused.
//! - **Truncation**: `XTRIM key MINID {before}-0` (exact), which leaves the
//!   meta hash's `last_seq` alone, so seqs keep counting.
//! - **Fencing**: `HINCRBY meta epoch 1` is atomic in Redis.
//!
//! Commands other than waits go through [`RedisConfig::connections`]
//! multiplexed `ConnectionManager`s (round-robin; they reconnect in the
//! background after Redis restarts). Every call is bounded by
//! [`RedisConfig::command_timeout`] (plus `wait_timeout` for appends); a
//! refused or dropped connection is [`LogError::Unavailable`], an expired
//! bound [`LogError::Timeout`].

use crate::record::{Epoch, FrameError, Record, Seq};
use crate::store::{check_instance, LogError, LogStore};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError, Script, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Configuration of the Redis Streams backend.
#[derive(Clone)]
pub struct RedisConfig {
    /// Redis URL of the primary, e.g. `redis://127.0.0.1:6379/0`
    /// (`rediss://` for TLS). A user and password written in it are taken
    /// out at connect ([`split_url`]) and never shown.
    pub url: String,
    /// ACL user (AUTH user password); `None`: the default user.
    pub username: Option<String>,
    /// Password (never logged, never in an error).
    pub password: Option<String>,
    /// TLS with `rediss://`: the CA that signs the server's certificate, and
    /// this client's certificate and key (presented when the server asks:
    /// `tls-auth-clients yes`).
    pub tls: Option<crate::tls::TlsFiles>,
    /// Replicas that must acknowledge every append (`WAIT`); 0 = none (then
    /// durability relies on the primary's `appendfsync always`).
    pub replicas: u32,
    /// How long an append waits for the replicas before failing.
    pub wait_timeout: Duration,
    /// Bound on every command (connect, script, read, trim, fence).
    pub command_timeout: Duration,
    /// Key prefix (`{prefix}:{instance}:log` / `:meta`).
    pub key_prefix: String,
    /// Multiplexed command connections (appends are spread round-robin;
    /// with `replicas >= 1` a WAIT holds its connection until the replicas
    /// answer, so several connections let appends overlap).
    pub connections: usize,
    /// Idle dedicated connections kept for `wait_for` (one per concurrent
    /// waiter is opened on demand).
    pub idle_wait_connections: usize,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &split_url(&self.url).0)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .field("tls", &self.tls)
            .field("replicas", &self.replicas)
            .field("wait_timeout", &self.wait_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

/// Take the user and password out of a Redis URL: returns the URL without
/// them, the user and the password. `redis://u:pw@host:6379/0` →
/// (`redis://host:6379/0`, `u`, `pw`).
pub fn split_url(url: &str) -> (String, Option<String>, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None, None);
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) if !a.contains('/') => (Some(a), h),
        _ => (None, rest),
    };
    let clean = format!("{scheme}://{host}");
    match auth {
        None => (clean, None, None),
        Some(a) => {
            let (u, p) = match a.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (a, None),
            };
            let u = (!u.is_empty()).then(|| u.to_string());
            (clean, u, p.map(str::to_string))
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            username: None,
            password: None,
            tls: None,
            replicas: 0,
            wait_timeout: Duration::from_millis(200),
            command_timeout: Duration::from_millis(500),
            key_prefix: "bgf".into(),
            connections: 2,
            idle_wait_connections: 4,
        }
    }
}

/// Atomic epoch check + contiguity check + XADD of the batch.
/// KEYS: stream, meta. ARGV: epoch, first seq, frame...
const APPEND_LUA: &str = r#"
local cur = redis.call('HGET', KEYS[2], 'epoch')
if not cur then cur = '0' end
if tonumber(cur) ~= tonumber(ARGV[1]) then
  return redis.error_reply('BGFSTALE ' .. cur)
end
local last = tonumber(redis.call('HGET', KEYS[2], 'last_seq') or '0')
local first = tonumber(ARGV[2])
if first ~= last + 1 then
  return redis.error_reply('BGFGAP ' .. string.format('%d', last + 1))
end
local seq = first
for i = 3, #ARGV do
  redis.call('XADD', KEYS[1], string.format('%d-0', seq), 'f', ARGV[i])
  seq = seq + 1
end
redis.call('HSET', KEYS[2], 'last_seq', string.format('%d', seq - 1))
return seq - 1
"#;

/// The Redis Streams log store.
pub struct RedisStore {
    cfg: RedisConfig,
    client: Client,
    conns: Vec<ConnectionManager>,
    next: AtomicUsize,
    script: Script,
    idle_waiters: Mutex<Vec<MultiplexedConnection>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("cfg", &self.cfg)
            .finish()
    }
}

fn ms(d: Duration) -> u64 {
    // Round up so a sub-millisecond bound never becomes 0 (= forever for
    // WAIT and BLOCK).
    let m = d.as_millis() as u64;
    if Duration::from_millis(m) < d {
        m + 1
    } else {
        m.max(1)
    }
}

impl RedisStore {
    /// Connect to the primary named by `cfg.url`. Fails with
    /// [`LogError::Unavailable`] when it cannot be reached within
    /// `command_timeout`.
    pub async fn connect(mut cfg: RedisConfig) -> Result<RedisStore, LogError> {
        let (clean, user, pw) = split_url(&cfg.url);
        cfg.url = clean;
        cfg.username = cfg.username.take().or(user);
        cfg.password = cfg.password.take().or(pw);
        if cfg.key_prefix.is_empty() || cfg.key_prefix.contains(['{', '}']) {
            return Err(LogError::Invalid(format!(
                "redis key prefix {:?} must be non-empty and contain no braces",
                cfg.key_prefix
            )));
        }
        let client = client(&cfg)?;
        let append_bound = cfg.command_timeout + cfg.wait_timeout;
        let mcfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.command_timeout))
            .set_response_timeout(Some(append_bound))
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(3);
        let mut conns = Vec::new();
        for _ in 0..cfg.connections.max(1) {
            let fut = ConnectionManager::new_with_config(client.clone(), mcfg.clone());
            let c = tokio::time::timeout(cfg.command_timeout * 2, fut)
                .await
                .map_err(|_| {
                    LogError::Unavailable(format!(
                        "redis at {} did not answer within {:?}; check that redis-server is \
                         running and reachable",
                        cfg.url,
                        cfg.command_timeout * 2
                    ))
                })?
                .map_err(|e| unavailable(&cfg.url, "connect", &e))?;
            conns.push(c);
        }
        let store = RedisStore {
            script: Script::new(APPEND_LUA),
            client,
            conns,
            next: AtomicUsize::new(0),
            idle_waiters: Mutex::new(Vec::new()),
            cfg,
        };
        store.check_durability().await;
        Ok(store)
    }

    /// The configuration in use.
    pub fn config(&self) -> &RedisConfig {
        &self.cfg
    }

    /// Warn when neither replicas nor fsync-per-write make acks durable.
    async fn check_durability(&self) {
        if self.cfg.replicas > 0 {
            return;
        }
        let mut c = self.conn();
        let got: Result<Result<Vec<String>, RedisError>, _> = tokio::time::timeout(
            self.cfg.command_timeout,
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("appendfsync")
                .query_async(&mut c),
        )
        .await;
        let mut c2 = self.conn();
        let aof: Result<Result<Vec<String>, RedisError>, _> = tokio::time::timeout(
            self.cfg.command_timeout,
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("appendonly")
                .query_async(&mut c2),
        )
        .await;
        if let (Ok(Ok(fsync)), Ok(Ok(aof))) = (got, aof) {
            let always = fsync.get(1).map(|v| v == "always").unwrap_or(false);
            let on = aof.get(1).map(|v| v == "yes").unwrap_or(false);
            if !(always && on) {
                tracing::warn!(
                    url = %self.cfg.url,
                    appendonly = aof.get(1).map(String::as_str).unwrap_or("?"),
                    appendfsync = fsync.get(1).map(String::as_str).unwrap_or("?"),
                    "state log on Redis without replicas and without appendfsync always: \
                     acknowledged records can be lost if Redis crashes; set replicas >= 1 \
                     or run redis with --appendonly yes --appendfsync always"
                );
            }
        }
    }

    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    /// Make sure the primary's writes up to now are acknowledged by
    /// `replicas` replicas: a propagating write on `c`, then WAIT.
    async fn confirm_replicated(
        &self,
        c: &mut ConnectionManager,
        meta: &str,
        instance: &str,
        landed: Seq,
        bound: Duration,
    ) -> Result<(), LogError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HINCRBY")
            .arg(meta)
            .arg("replica_checks")
            .arg(1)
            .ignore();
        pipe.cmd("WAIT")
            .arg(self.cfg.replicas)
            .arg(ms(self.cfg.wait_timeout));
        let (acked,): (u64,) = self
            .bounded("WAIT (confirm)", bound, pipe.query_async(c))
            .await?;
        if acked < u64::from(self.cfg.replicas) {
            return Err(LogError::Unavailable(format!(
                "instance {instance}: seqs up to {landed} are on the primary but only {acked} of {} \
                 redis replicas acknowledged them within {:?}; not durable yet — check the \
                 replicas (INFO replication on {})",
                self.cfg.replicas, self.cfg.wait_timeout, self.cfg.url
            )));
        }
        Ok(())
    }

    fn keys(&self, instance: &str) -> (String, String) {
        let p = &self.cfg.key_prefix;
        (
            format!("{p}:{{{instance}}}:log"),
            format!("{p}:{{{instance}}}:meta"),
        )
    }

    /// Stream key of `instance` (for tools and tests).
    pub fn stream_key(&self, instance: &str) -> String {
        self.keys(instance).0
    }

    /// Meta hash key of `instance` (for tools and tests).
    pub fn meta_key(&self, instance: &str) -> String {
        self.keys(instance).1
    }

    async fn bounded<T>(
        &self,
        what: &str,
        bound: Duration,
        fut: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, LogError> {
        match tokio::time::timeout(bound, fut).await {
            Err(_) => {
                tracing::warn!(url = %self.cfg.url, op = what, ?bound, "redis command timed out");
                Err(LogError::Timeout(bound))
            }
            Ok(Err(e)) => Err(self.map_err(what, bound, &e)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    fn map_err(&self, what: &str, bound: Duration, e: &RedisError) -> LogError {
        if e.is_timeout() {
            tracing::warn!(url = %self.cfg.url, op = what, ?bound, "redis command timed out");
            return LogError::Timeout(bound);
        }
        let err = unavailable(&self.cfg.url, what, e);
        tracing::warn!(url = %self.cfg.url, op = what, error = %e, "redis command failed");
        err
    }

    async fn hget_u64(&self, key: &str, field: &str, what: &str) -> Result<u64, LogError> {
        let mut c = self.conn();
        let v: Option<u64> = self
            .bounded(
                what,
                self.cfg.command_timeout,
                redis::cmd("HGET").arg(key).arg(field).query_async(&mut c),
            )
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// Take an idle wait connection or open a new one (response timeout off).
    async fn wait_conn(&self) -> Result<MultiplexedConnection, LogError> {
        let idle = self.idle_waiters.lock().ok().and_then(|mut v| v.pop());
        if let Some(c) = idle {
            return Ok(c);
        }
        let acfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.cfg.command_timeout))
            .set_response_timeout(None);
        self.bounded(
            "open wait connection",
            self.cfg.command_timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&acfg),
        )
        .await
    }

    fn return_wait_conn(&self, c: MultiplexedConnection) {
        if let Ok(mut v) = self.idle_waiters.lock() {
            if v.len() < self.cfg.idle_wait_connections {
                v.push(c);
            }
        }
    }
}

/// The client of `cfg` (credentials and TLS applied; `cfg.url` holds none).
fn client(cfg: &RedisConfig) -> Result<Client, LogError> {
    use redis::IntoConnectionInfo;
    let invalid = |e: RedisError| {
        LogError::Invalid(format!(
            "redis url {:?} is not valid ({e}); expected redis://host:port[/db] or rediss://host:port[/db]",
            cfg.url
        ))
    };
    let info = cfg.url.as_str().into_connection_info().map_err(invalid)?;
    let mut rs = info.redis_settings().clone();
    if let Some(u) = &cfg.username {
        rs = rs.set_username(u);
    }
    if let Some(p) = &cfg.password {
        rs = rs.set_password(p);
    }
    let info = info.set_redis_settings(rs);
    match &cfg.tls {
        None => Client::open(info).map_err(invalid),
        Some(t) => {
            let read = |p: &std::path::Path| {
                std::fs::read(p)
                    .map_err(|e| LogError::Invalid(format!("redis TLS: {}: {e}", p.display())))
            };
            let certs = redis::TlsCertificates {
                client_tls: Some(redis::ClientTlsConfig {
                    client_cert: read(&t.cert)?,
                    client_key: read(&t.key)?,
                }),
                root_cert: Some(read(&t.ca)?),
            };
            Client::build_with_tls(info, certs).map_err(|e| {
                LogError::Invalid(format!(
                    "redis TLS for {}: {e} (TLS needs a rediss:// url and PEM files)",
                    cfg.url
                ))
            })
        }
    }
}

fn unavailable(url: &str, what: &str, e: &RedisError) -> LogError {
    let hint = if e.code() == Some("READONLY") {
        "the url points at a replica; point it at the primary"
    } else if e.code() == Some("NOAUTH") || e.code() == Some("WRONGPASS") {
        "check statelog.redis_user and the password (redis_password_file) against the server's ACL"
    } else if e.is_connection_refusal() || e.is_io_error() || e.is_connection_dropped() {
        "check that redis-server is running and reachable; appends resume once it is back"
    } else {
        "check the redis server log"
    };
    LogError::Unavailable(format!("redis at {url}: {what} failed: {e} ({hint})"))
}

fn parse_u64(s: Option<&str>) -> Option<u64> {
    s.and_then(|s| s.trim().parse().ok())
}

/// Stream id `"{seq}-0"` → seq.
fn id_seq(id: &[u8]) -> Option<Seq> {
    let s = std::str::from_utf8(id).ok()?;
    let (ms, sub) = s.split_once('-')?;
    if sub != "0" {
        return None;
    }
    ms.parse().ok()
}

fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn corrupt(instance: &str, seq: Seq, why: impl Into<String>) -> LogError {
    LogError::Corrupt {
        instance: instance.to_string(),
        seq,
        reason: FrameError::Decode(why.into()),
    }
}

#[async_trait::async_trait]
impl LogStore for RedisStore {
    async fn append(
        &self,
        instance: &str,
        epoch: Epoch,
        records: &[Record],
    ) -> Result<(), LogError> {
        check_instance(instance)?;
        let Some(first) = records.first() else {
            return Err(LogError::Invalid("append of an empty batch".into()));
        };
        for (i, r) in records.iter().enumerate() {
            if r.seq != first.seq + i as u64 {
                return Err(LogError::Invalid(format!(
                    "instance {instance}: batch seqs must be contiguous: record {i} has seq {}, \
                     expected {}",
                    r.seq,
                    first.seq + i as u64
                )));
            }
        }
        if first.seq == 0 {
            return Err(LogError::Invalid(format!(
                "instance {instance}: seqs start at 1"
            )));
        }
        let (stream, meta) = self.keys(instance);
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha
            .arg(self.script.get_hash())
            .arg(2)
            .arg(&stream)
            .arg(&meta)
            .arg(epoch)
            .arg(first.seq);
        for r in records {
            evalsha.arg(r.encode());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors().add_command(evalsha);
        if self.cfg.replicas > 0 {
            pipe.cmd("WAIT")
                .arg(self.cfg.replicas)
                .arg(ms(self.cfg.wait_timeout));
        }
        let bound = self.cfg.command_timeout + self.cfg.wait_timeout;
        let mut c = self.conn();
        let mut loaded = false;
        loop {
            let replies: Vec<Result<Value, RedisError>> = self
                .bounded("append", bound, pipe.query_async(&mut c))
                .await?;
            let mut it = replies.into_iter();
            match it.next() {
                Some(Ok(_)) => {}
                Some(Err(e)) if e.code() == Some("NOSCRIPT") && !loaded => {
                    loaded = true;
                    let _: String = self
                        .bounded(
                            "load append script",
                            self.cfg.command_timeout,
                            self.script.load_async(&mut c),
                        )
                        .await?;
                    continue;
                }
                Some(Err(e)) if e.code() == Some("BGFSTALE") => {
                    let current = parse_u64(e.detail()).unwrap_or(0);
                    return Err(LogError::StaleEpoch {
                        instance: instance.to_string(),
                        presented: epoch,
                        current,
                    });
                }
                Some(Err(e)) if e.code() == Some("BGFGAP") => {
                    let expected = parse_u64(e.detail()).unwrap_or(0);
                    if self.cfg.replicas > 0 && expected > first.seq {
                        // Some of these seqs are already on the primary (an
                        // earlier attempt whose WAIT failed): the caller will
                        // treat them as durable, so they must be on the
                        // replicas first. A write on this connection followed
                        // by WAIT covers every earlier write (one stream).
                        self.confirm_replicated(&mut c, &meta, instance, expected - 1, bound)
                            .await?;
                    }
                    return Err(LogError::Gap {
                        instance: instance.to_string(),
                        expected,
                        got: first.seq,
                    });
                }
                Some(Err(e)) => return Err(self.map_err("append", bound, &e)),
                None => {
                    return Err(LogError::Unavailable(format!(
                        "redis at {}: append got no reply; check the redis server log",
                        self.cfg.url
                    )))
                }
            }
            if self.cfg.replicas > 0 {
                let acked = match it.next() {
                    Some(Ok(Value::Int(n))) => n.max(0) as u64,
                    Some(Ok(other)) => {
                        return Err(LogError::Unavailable(format!(
                            "redis at {}: unexpected WAIT reply {other:?}",
                            self.cfg.url
                        )))
                    }
                    Some(Err(e)) => return Err(self.map_err("WAIT", bound, &e)),
                    None => 0,
                };
                if acked < u64::from(self.cfg.replicas) {
                    tracing::warn!(
                        url = %self.cfg.url, instance, acked, required = self.cfg.replicas,
                        first_seq = first.seq, count = records.len(),
                        "state log append not acknowledged by enough replicas"
                    );
                    return Err(LogError::Unavailable(format!(
                        "instance {instance}: only {acked} of {} redis replicas acknowledged \
                         seqs {}..={} within {:?}; the records may exist on the primary but are \
                         not durable — check the replicas (INFO replication on {})",
                        self.cfg.replicas,
                        first.seq,
                        first.seq + records.len() as u64 - 1,
                        self.cfg.wait_timeout,
                        self.cfg.url
                    )));
                }
            }
            return Ok(());
        }
    }

    async fn read(&self, instance: &str, from: Seq, max: usize) -> Result<Vec<Record>, LogError> {
        check_instance(instance)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let (stream, _) = self.keys(instance);
        let mut c = self.conn();
        let start = format!("{}-0", from.max(1));
        let v: Value = self
            .bounded(
                "read",
                self.cfg.command_timeout,
                redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(max)
                    .query_async(&mut c),
            )
            .await?;
        let entries = match v {
            Value::Array(a) => a,
            Value::Nil => Vec::new(),
            other => {
                return Err(LogError::Unavailable(format!(
                    "redis at {}: unexpected XRANGE reply {other:?}",
                    self.cfg.url
                )))
            }
        };
        let mut out = Vec::with_capacity(entries.len());
        let mut prev: Option<Seq> = None;
        for e in entries {
            let Value::Array(parts) = e else {
                return Err(corrupt(
                    instance,
                    prev.map_or(from, |p| p + 1),
                    "stream entry is not an [id, fields] pair",
                ));
            };
            let id = parts.first().and_then(bytes_of).and_then(id_seq);
            let Some(seq) = id else {
                return Err(corrupt(
                    instance,
                    prev.map_or(from, |p| p + 1),
                    "stream entry id is not {seq}-0",
                ));
            };
            if let Some(p) = prev {
                if seq != p + 1 {
                    return Err(corrupt(
                        instance,
                        p + 1,
                        format!("record missing from the stream (next entry is {seq})"),
                    ));
                }
            }
            prev = Some(seq);
            let fields = match parts.get(1) {
                Some(Value::Array(f)) => f.as_slice(),
                Some(Value::Map(_)) | Some(_) | None => &[],
            };
            let mut frame = None;
            for kv in fields.chunks(2) {
                if kv.len() == 2 && bytes_of(&kv[0]) == Some(b"f") {
                    frame = bytes_of(&kv[1]);
                }
            }
            let Some(frame) = frame else {
                return Err(corrupt(instance, seq, "stream entry has no field f"));
            };
            let rec = match Record::decode(frame) {
                Ok((rec, used)) if used == frame.len() => rec,
                Ok((_, used)) => {
                    return Err(corrupt(
                        instance,
                        seq,
                        format!("{} trailing bytes after the frame", frame.len() - used),
                    ))
                }
                Err(reason) => {
                    return Err(LogError::Corrupt {
                        instance: instance.to_string(),
                        seq,
                        reason,
                    })
                }
            };
            if rec.seq != seq {
                return Err(corrupt(
                    instance,
                    seq,
                    format!("frame carries seq {} under stream id {seq}-0", rec.seq),
                ));
            }
            out.push(rec);
        }
        Ok(out)
    }

    async fn wait_for(
        &self,
        instance: &str,
        after: Seq,
        timeout: Duration,
    ) -> Result<bool, LogError> {
        check_instance(instance)?;
        let (stream, _) = self.keys(instance);
        let mut c = self.wait_conn().await?;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(1);
        if !timeout.is_zero() {
            cmd.arg("BLOCK").arg(ms(timeout));
        }
        cmd.arg("STREAMS").arg(&stream).arg(format!("{after}-0"));
        let bound = timeout + self.cfg.command_timeout;
        let v: Value = match tokio::time::timeout(bound, cmd.query_async(&mut c)).await {
            // The connection may still be blocked in XREAD: drop it.
            Err(_) => return Err(LogError::Timeout(bound)),
            Ok(Err(e)) => return Err(self.map_err("wait_for", bound, &e)),
            Ok(Ok(v)) => v,
        };
        self.return_wait_conn(c);
        Ok(match v {
            Value::Nil => false,
            Value::Array(a) => !a.is_empty(),
            Value::Map(m) => !m.is_empty(),
            _ => false,
        })
    }

    async fn last_seq(&self, instance: &str) -> Result<Seq, LogError> {
        check_instance(instance)?;
        let (_, meta) = self.keys(instance);
        self.hget_u64(&meta, "last_seq", "last_seq").await
    }

    async fn truncate_before(&self, instance: &str, before: Seq) -> Result<u64, LogError> {
        check_instance(instance)?;
        let (stream, _) = self.keys(instance);
        let mut c = self.conn();
        self.bounded(
            "truncate_before",
            self.cfg.command_timeout,
            redis::cmd("XTRIM")
                .arg(&stream)
                .arg("MINID")
                .arg(format!("{before}-0"))
                .query_async(&mut c),
        )
        .await
    }

    async fn fence(&self, instance: &str) -> Result<Epoch, LogError> {
        check_instance(instance)?;
        let (_, meta) = self.keys(instance);
        let mut c = self.conn();
        let e: Epoch = self
            .bounded(
                "fence",
                self.cfg.command_timeout,
                redis::cmd("HINCRBY")
                    .arg(&meta)
                    .arg("epoch")
                    .arg(1)
                    .query_async(&mut c),
            )
            .await?;
        tracing::info!(url = %self.cfg.url, instance, epoch = e, "state log instance fenced");
        Ok(e)
    }

    async fn epoch(&self, instance: &str) -> Result<Epoch, LogError> {
        check_instance(instance)?;
        let (_, meta) = self.keys(instance);
        self.hget_u64(&meta, "epoch", "epoch").await
    }
}
