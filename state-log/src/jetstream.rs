//! NATS JetStream backend of [`LogStore`]: the replicated store for
//! multi-host deployments (three `nats-server` nodes, streams replicated by
//! their raft groups).
//!
//! Layout: one stream per instance, `{stream_prefix}_{instance}`, with three
//! subjects under `{subject_prefix}.{instance}`:
//!
//! - `.r` — the records: one message per record (or per part of a record
//!   larger than the server's `max_payload`: headers `Bgf-Part: k/n`), the
//!   payload its frame ([`crate::Record::encode`], CRC included), header
//!   `Bgf-Seq` its seq.
//! - `.e` — the epoch: one message per fence, payload the new epoch
//!   (decimal). The last one is the instance's epoch.
//! - `.t` — truncation marks: written when a truncation removes every
//!   record, payload the last seq, so the log keeps counting.
//!
//! How the [`LogStore`] guarantees are met:
//!
//! - **Durable acknowledgement**: an append returns once JetStream acked
//!   every message of it, which it does only after the stream's quorum (2 of
//!   3) stored it. (nats-server 2.9 syncs its files to disk every 2 minutes:
//!   a process crash loses nothing, a simultaneous power loss of two nodes
//!   can — docs/DEPLOY-OPENSTACK.md says so.)
//! - **Contiguity and fencing by optimistic concurrency**: every record
//!   message is published with `Nats-Expected-Last-Sequence` = the stream's
//!   last sequence as this writer knows it. A fence publishes the next epoch
//!   on `.e` (with `Nats-Expected-Last-Subject-Sequence`, a compare-and-set
//!   between fencers), which moves the stream's last sequence: the old
//!   writer's next message no longer matches and is refused; the writer
//!   re-reads the stream and reports [`LogError::StaleEpoch`]. Seq and epoch
//!   checks happen before publishing against that view; a view gone stale is
//!   caught by the server the same way. A batch is not atomic: after a
//!   failure a prefix of it may be durable (like an unacknowledged append in
//!   any backend); the retry learns it from [`LogError::Gap`].
//! - **Pipelining**: [`LogStore::submit`] publishes and returns; several
//!   batches are in flight on the one connection, each message expecting the
//!   sequence of the one before.
//! - **Reads and the live tail via consumers**: per instance read, an
//!   ordered pull consumer filtered on `.r`, started where the wanted record
//!   begins (found by bisection with message gets) and kept while reads go
//!   on from where the last ended; a pump task assembles records into a
//!   bounded buffer and publishes the highest seq seen, which `wait_for`
//!   watches. Every frame is decoded and checked; a bad one is
//!   [`LogError::Corrupt`].
//! - **Compaction**: `truncate_before` purges `.r` below the stream sequence
//!   where the record `before` starts (purge with a subject filter), and the
//!   older `.e` / `.t` marks.
//!
//! Credentials: TLS with this process's certificate; the servers map it to a
//! NATS user (`verify_and_map`) whose permissions give each role its rights
//! (an active: its own stream; a standby: every stream; an operator: read
//! and purge). Replies come to an inbox named after the identity
//! (`_INBOX_<role>_<name>`), so no user can subscribe to another's replies.
//!
//! Not here: which servers and credentials (the daemon's config).

use crate::record::{Epoch, Record, Seq};
use crate::store::{check_instance, Ack, Batch, LogError, LogStore};
use crate::tls::{Identity, TlsFiles};
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Records a reader buffers ahead of its caller.
const READ_AHEAD: usize = 4096;
/// Room left in a message for headers.
const HEADER_ROOM: usize = 4096;

/// Configuration of the JetStream backend.
#[derive(Clone, Debug)]
pub struct JetStreamConfig {
    /// Server URLs (`nats://host:port`, `tls://host:port`); any one reached
    /// is enough, the client follows the cluster.
    pub servers: Vec<String>,
    /// CA, this process's certificate and key.
    pub tls: TlsFiles,
    /// Replicas of every stream (3 in production; 1 for a single node).
    pub replicas: usize,
    /// Bound on every request and on every ack.
    pub request_timeout: Duration,
    /// Stream name prefix (`{prefix}_{instance}`).
    pub stream_prefix: String,
    /// Subject prefix (`{prefix}.{instance}.r|e|t`).
    pub subject_prefix: String,
}

impl JetStreamConfig {
    /// Defaults for `servers` with `tls`: R3, 1 s bound, `BGFLOG` / `bgf.log`.
    pub fn new(servers: Vec<String>, tls: TlsFiles) -> Self {
        JetStreamConfig {
            servers,
            tls,
            replicas: 3,
            request_timeout: Duration::from_secs(1),
            stream_prefix: "BGFLOG".into(),
            subject_prefix: "bgf.log".into(),
        }
    }
}

/// What a writer knows of an instance's stream.
#[derive(Clone, Copy, Debug)]
struct View {
    epoch: Epoch,
    /// Next record seq.
    next: Seq,
    /// The stream's last sequence after our last publish.
    stream_last: u64,
}

/// A message of `.r`, parsed.
struct Part {
    seq: Seq,
    k: u32,
    n: u32,
    stream_seq: u64,
    payload: Bytes,
}

/// The pump's output.
#[derive(Default)]
struct ReadBuf {
    records: VecDeque<Record>,
    /// Next record seq to hand out.
    next: Seq,
    /// A fatal error of the pump (corrupt record, consumer gone).
    error: Option<LogError>,
}

struct Reader {
    buf: Mutex<ReadBuf>,
    /// Highest record seq the pump assembled.
    high: watch::Sender<Seq>,
    room: Notify,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The JetStream log store.
pub struct JetStreamStore {
    cfg: JetStreamConfig,
    js: jetstream::Context,
    client: async_nats::Client,
    chunk: usize,
    writers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<View>>>>>,
    readers: Mutex<HashMap<String, Arc<Reader>>>,
    known: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for JetStreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamStore")
            .field("servers", &self.cfg.servers)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(format!("jetstream: {what}: {e}"))
}

fn header(h: Option<&HeaderMap>, name: &str) -> Option<String> {
    h?.get(name).map(|v| v.as_str().to_string())
}

impl JetStreamStore {
    /// Connect (mutual TLS) to any of `cfg.servers`.
    pub async fn connect(cfg: JetStreamConfig) -> Result<JetStreamStore, LogError> {
        let id: Identity = cfg
            .tls
            .identity()
            .map_err(|e| LogError::Invalid(format!("jetstream credentials: {e}")))?;
        let tls = crate::tls::client_config(&cfg.tls).map_err(LogError::Invalid)?;
        let opts = async_nats::ConnectOptions::new()
            .require_tls(true)
            .tls_client_config((*tls).clone())
            .custom_inbox_prefix(format!("_INBOX_{}_{}", id.role.as_str(), id.name))
            .connection_timeout(cfg.request_timeout.max(Duration::from_millis(500)))
            .request_timeout(Some(cfg.request_timeout))
            // A node cut off (or frozen) keeps its TCP connection open:
            // three unanswered pings (~1.5 s) and the client moves to
            // another node instead of waiting the default 2 minutes.
            .ping_interval(Duration::from_millis(500))
            .name(id.to_string());
        let servers: Vec<async_nats::ServerAddr> = cfg
            .servers
            .iter()
            .map(|s| {
                s.parse().map_err(|e| {
                    LogError::Invalid(format!("jetstream server {s:?} is not a NATS URL: {e}"))
                })
            })
            .collect::<Result<_, _>>()?;
        let bound = cfg.request_timeout * 4 + Duration::from_secs(1);
        let client = tokio::time::timeout(bound, async_nats::connect_with_options(servers, opts))
            .await
            .map_err(|_| {
                LogError::Unavailable(format!(
                    "jetstream: no server of {:?} answered within {bound:?}",
                    cfg.servers
                ))
            })?
            .map_err(|e| {
                unavailable(
                    &format!("connect to {:?} as {id}", cfg.servers),
                    format!("{e} — check the servers, the CA and that our certificate maps to a NATS user"),
                )
            })?;
        let chunk = client
            .server_info()
            .max_payload
            .saturating_sub(HEADER_ROOM)
            .max(1024);
        let js = jetstream::ContextBuilder::new()
            .timeout(cfg.request_timeout)
            .max_ack_inflight(65_536)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(JetStreamStore {
            cfg,
            js,
            client,
            chunk,
            writers: Mutex::new(HashMap::new()),
            readers: Mutex::new(HashMap::new()),
            known: Mutex::new(Default::default()),
        })
    }

    /// The stream of `instance`.
    pub fn stream_name(&self, instance: &str) -> String {
        format!("{}_{instance}", self.cfg.stream_prefix)
    }

    fn subject(&self, instance: &str, kind: &str) -> String {
        format!("{}.{instance}.{kind}", self.cfg.subject_prefix)
    }

    /// The underlying client (tests: server info, flush).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    async fn bounded<T, E: std::fmt::Display>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, LogError> {
        match tokio::time::timeout(self.cfg.request_timeout, fut).await {
            Err(_) => Err(LogError::Timeout(self.cfg.request_timeout)),
            Ok(Err(e)) => Err(unavailable(what, e)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Create the stream if it does not exist (writers and fencers do).
    async fn ensure_stream(&self, instance: &str) -> Result<(), LogError> {
        if lock(&self.known).contains(instance) {
            return Ok(());
        }
        let cfg = stream::Config {
            name: self.stream_name(instance),
            subjects: vec![format!("{}.{instance}.*", self.cfg.subject_prefix)],
            num_replicas: self.cfg.replicas,
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            deny_delete: true,
            ..Default::default()
        };
        let what = format!("creating stream {}", cfg.name);
        self.bounded(&what, self.js.get_or_create_stream(cfg))
            .await?;
        lock(&self.known).insert(instance.to_string());
        Ok(())
    }

    /// The stream, if it exists.
    async fn stream(&self, instance: &str) -> Result<Option<stream::Stream>, LogError> {
        let name = self.stream_name(instance);
        match tokio::time::timeout(self.cfg.request_timeout, self.js.get_stream(&name)).await {
            Err(_) => Err(LogError::Timeout(self.cfg.request_timeout)),
            Ok(Ok(s)) => Ok(Some(s)),
            Ok(Err(e)) if not_found(&e) => Ok(None),
            Ok(Err(e)) => Err(unavailable(&format!("stream {name}"), e)),
        }
    }

    /// The last message on `subject` of `instance`'s stream.
    async fn last_on(
        &self,
        instance: &str,
        kind: &str,
    ) -> Result<Option<jetstream::message::StreamMessage>, LogError> {
        let st = self.js.get_stream_no_info(self.stream_name(instance)).await;
        let st = match st {
            Ok(s) => s,
            Err(e) => return Err(unavailable("stream handle", e)),
        };
        let subj = self.subject(instance, kind);
        match tokio::time::timeout(
            self.cfg.request_timeout,
            st.get_last_raw_message_by_subject(&subj),
        )
        .await
        {
            Err(_) => Err(LogError::Timeout(self.cfg.request_timeout)),
            Ok(Ok(m)) => Ok(Some(m)),
            Ok(Err(e)) if not_found(&e) => Ok(None),
            Ok(Err(e)) => Err(unavailable(&format!("last message of {subj}"), e)),
        }
    }

    /// The first `.r` message at or after stream sequence `from`.
    async fn first_part_from(&self, instance: &str, from: u64) -> Result<Option<Part>, LogError> {
        let st = self
            .js
            .get_stream_no_info(self.stream_name(instance))
            .await
            .map_err(|e| unavailable("stream handle", e))?;
        let subj = self.subject(instance, "r");
        match tokio::time::timeout(
            self.cfg.request_timeout,
            st.get_first_raw_message_by_subject(&subj, from.max(1)),
        )
        .await
        {
            Err(_) => Err(LogError::Timeout(self.cfg.request_timeout)),
            Ok(Ok(m)) => part_of(instance, m.sequence, Some(&m.headers), m.payload).map(Some),
            Ok(Err(e)) if not_found(&e) => Ok(None),
            Ok(Err(e)) => Err(unavailable(&format!("message of {subj}"), e)),
        }
    }

    async fn epoch_of(&self, instance: &str) -> Result<(u64, Epoch), LogError> {
        match self.last_on(instance, "e").await? {
            None => Ok((0, 0)),
            Some(m) => {
                let e = std::str::from_utf8(&m.payload)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| LogError::Corrupt {
                        instance: instance.to_string(),
                        seq: 0,
                        reason: crate::FrameError::Decode(format!(
                            "epoch message {} does not hold a number",
                            m.sequence
                        )),
                    })?;
                Ok((m.sequence, e))
            }
        }
    }

    /// Last complete record seq (a `.t` mark counts).
    async fn last_record(&self, instance: &str) -> Result<Seq, LogError> {
        let rec = match self.last_on(instance, "r").await? {
            None => 0,
            Some(m) => {
                let p = part_of(instance, m.sequence, Some(&m.headers), m.payload)?;
                if p.k == p.n {
                    p.seq
                } else {
                    p.seq - 1
                }
            }
        };
        let mark = match self.last_on(instance, "t").await? {
            None => 0,
            Some(m) => std::str::from_utf8(&m.payload)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
        };
        Ok(rec.max(mark))
    }

    /// A writer's fresh view of the stream.
    async fn view(&self, instance: &str) -> Result<View, LogError> {
        self.ensure_stream(instance).await?;
        // The stream's last sequence first: anything landing after it makes
        // the view stale, which the server catches.
        let mut st = self
            .stream(instance)
            .await?
            .ok_or_else(|| unavailable("stream", "vanished after creation"))?;
        let stream_last = self
            .bounded("stream info", st.info())
            .await?
            .state
            .last_sequence;
        let (_, epoch) = self.epoch_of(instance).await?;
        let last = self.last_record(instance).await?;
        Ok(View {
            epoch,
            next: last + 1,
            stream_last,
        })
    }

    fn writer(&self, instance: &str) -> Arc<tokio::sync::Mutex<Option<View>>> {
        lock(&self.writers)
            .entry(instance.to_string())
            .or_default()
            .clone()
    }

    /// Smallest stream sequence whose `.r` message belongs to a record
    /// `>= r` (where a reader of `r` starts, where a purge below `r` ends);
    /// `None` when no record `>= r` is stored. Bisection with message gets:
    /// record seqs never decrease along the stream, and record `r` cannot
    /// start before stream sequence `r` (every record takes one at least).
    async fn locate(&self, instance: &str, r: Seq) -> Result<Option<u64>, LogError> {
        let mut st = match self.stream(instance).await? {
            Some(s) => s,
            None => return Ok(None),
        };
        let end = self
            .bounded("stream info", st.info())
            .await?
            .state
            .last_sequence
            + 1;
        let (mut lo, mut hi) = (r.max(1), end.max(r.max(1)));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.first_part_from(instance, mid).await? {
                Some(p) if p.seq < r => lo = p.stream_seq + 1,
                _ => hi = mid,
            }
        }
        Ok(self
            .first_part_from(instance, lo)
            .await?
            .filter(|p| p.seq >= r)
            .map(|p| p.stream_seq))
    }

    /// A reader of `instance` whose next record is `from` (the cached one
    /// when it is there), and whether any record `>= from` is stored (when
    /// none is, the reader waits at the stream's end for new ones).
    async fn reader(&self, instance: &str, from: Seq) -> Result<(Arc<Reader>, bool), LogError> {
        if let Some(r) = lock(&self.readers).get(instance) {
            let b = lock(&r.buf);
            if b.error.is_none() && b.next == from {
                drop(b);
                return Ok((r.clone(), true));
            }
        }
        let (start, any) = match self.locate(instance, from).await? {
            Some(s) => (s, true),
            None => {
                let mut st = self
                    .stream(instance)
                    .await?
                    .ok_or_else(|| unavailable("stream", "vanished"))?;
                let end = self
                    .bounded("stream info", st.info())
                    .await?
                    .state
                    .last_sequence;
                (end + 1, false)
            }
        };
        let reader = self.start_reader(instance, from, Some(start)).await?;
        lock(&self.readers).insert(instance.to_string(), reader.clone());
        Ok((reader, any))
    }

    async fn start_reader(
        &self,
        instance: &str,
        from: Seq,
        start: Option<u64>,
    ) -> Result<Arc<Reader>, LogError> {
        let policy = match start {
            Some(s) => jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence: s },
            None => jetstream::consumer::DeliverPolicy::New,
        };
        let st = self
            .js
            .get_stream_no_info(self.stream_name(instance))
            .await
            .map_err(|e| unavailable("stream handle", e))?;
        // Pull, not push: a push consumer delivers before its subscription
        // exists and loses the first messages until a heartbeat is missed.
        static READERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = READERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let cfg = jetstream::consumer::pull::OrderedConfig {
            name: Some(format!("rd{}x{nanos:x}x{n}", std::process::id())),
            filter_subject: self.subject(instance, "r"),
            deliver_policy: policy,
            ..Default::default()
        };
        let consumer = self
            .bounded("creating a reader", st.create_consumer(cfg))
            .await?;
        let messages = self
            .bounded("starting a reader", consumer.messages())
            .await?;
        let (high, _) = watch::channel(from.saturating_sub(1));
        let reader = Arc::new_cyclic(|weak: &std::sync::Weak<Reader>| {
            let weak = weak.clone();
            let inst = instance.to_string();
            let task = tokio::spawn(async move { pump(weak, inst, messages).await });
            Reader {
                buf: Mutex::new(ReadBuf {
                    records: VecDeque::new(),
                    next: from,
                    error: None,
                }),
                high,
                room: Notify::new(),
                task,
            }
        });
        Ok(reader)
    }
}

fn not_found(e: &impl std::fmt::Display) -> bool {
    let s = e.to_string().to_ascii_lowercase();
    s.contains("no message found") || s.contains("not found") || s.contains("10037")
}

fn part_of(
    instance: &str,
    stream_seq: u64,
    h: Option<&HeaderMap>,
    payload: Bytes,
) -> Result<Part, LogError> {
    let bad = |why: String| LogError::Corrupt {
        instance: instance.to_string(),
        seq: 0,
        reason: crate::FrameError::Decode(format!("stream message {stream_seq}: {why}")),
    };
    let seq: Seq = header(h, "Bgf-Seq")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no Bgf-Seq header".into()))?;
    let (k, n) = match header(h, "Bgf-Part") {
        None => (1, 1),
        Some(p) => p
            .split_once('/')
            .and_then(|(k, n)| Some((k.parse().ok()?, n.parse().ok()?)))
            .filter(|(k, n): &(u32, u32)| *k >= 1 && k <= n)
            .ok_or_else(|| bad(format!("bad Bgf-Part {p:?}")))?,
    };
    Ok(Part {
        seq,
        k,
        n,
        stream_seq,
        payload,
    })
}

/// Feed a reader from its consumer: assemble parts into records, decode and
/// check them, buffer them (bounded), publish the highest seq.
async fn pump(
    reader: std::sync::Weak<Reader>,
    instance: String,
    mut messages: jetstream::consumer::pull::Ordered,
) {
    let mut partial: Option<(Seq, u32, u32, Vec<u8>)> = None;
    loop {
        let msg = messages.next().await;
        let Some(r) = reader.upgrade() else { return };
        let fail = |e: LogError| {
            lock(&r.buf).error = Some(e);
            r.high.send_modify(|_| {});
        };
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                fail(unavailable("reader", e));
                return;
            }
            None => {
                fail(unavailable("reader", "consumer ended"));
                return;
            }
        };
        let stream_seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
        let p = match part_of(
            &instance,
            stream_seq,
            msg.headers.as_ref(),
            msg.payload.clone(),
        ) {
            Ok(p) => p,
            Err(e) => {
                fail(e);
                return;
            }
        };
        let frame = if p.n == 1 {
            partial = None;
            p.payload.to_vec()
        } else if p.k == 1 {
            partial = Some((p.seq, 1, p.n, p.payload.to_vec()));
            continue;
        } else {
            match partial.as_mut() {
                Some((s, k, n, buf)) if *s == p.seq && *n == p.n && *k + 1 == p.k => {
                    *k = p.k;
                    buf.extend_from_slice(&p.payload);
                    if p.k < p.n {
                        continue;
                    }
                    let (_, _, _, buf) = partial.take().unwrap_or_default();
                    buf
                }
                // A part without its beginning: an aborted write (its
                // writer was fenced or failed); the record follows whole.
                _ => {
                    partial = None;
                    continue;
                }
            }
        };
        let rec = match Record::decode(&frame) {
            Ok((rec, used)) if used == frame.len() && rec.seq == p.seq => rec,
            Ok((rec, _)) => {
                fail(LogError::Corrupt {
                    instance: instance.clone(),
                    seq: p.seq,
                    reason: crate::FrameError::Decode(format!(
                        "message {stream_seq} holds record {} under Bgf-Seq {}",
                        rec.seq, p.seq
                    )),
                });
                return;
            }
            Err(e) => {
                fail(LogError::Corrupt {
                    instance: instance.clone(),
                    seq: p.seq,
                    reason: e,
                });
                return;
            }
        };
        loop {
            let room = {
                let mut b = lock(&r.buf);
                if rec.seq < b.next {
                    break; // before the reader's start
                }
                if b.records.len() < READ_AHEAD {
                    let seq = rec.seq;
                    b.records.push_back(rec);
                    drop(b);
                    r.high.send_if_modified(|h| {
                        let up = seq > *h;
                        *h = (*h).max(seq);
                        up
                    });
                    break;
                }
                r.room.notified()
            };
            room.await;
        }
    }
}

#[async_trait::async_trait]
impl LogStore for JetStreamStore {
    async fn append(
        &self,
        instance: &str,
        epoch: Epoch,
        records: &[Record],
    ) -> Result<(), LogError> {
        let batch = Arc::new(Batch::encode(epoch, records)?);
        self.submit(instance, batch).await?.await
    }

    async fn submit(&self, instance: &str, batch: Arc<Batch>) -> Result<Ack, LogError> {
        check_instance(instance)?;
        let w = self.writer(instance);
        let mut g = w.lock().await;
        let mut view = match *g {
            Some(v) => v,
            None => self.view(instance).await?,
        };
        // A view that disagrees may be stale (someone fenced, or landed
        // what we thought failed): look again before refusing.
        if view.epoch != batch.epoch() || view.next != batch.first() {
            view = self.view(instance).await?;
        }
        if view.epoch != batch.epoch() {
            *g = Some(view);
            return Err(LogError::StaleEpoch {
                instance: instance.to_string(),
                presented: batch.epoch(),
                current: view.epoch,
            });
        }
        if view.next != batch.first() {
            *g = Some(view);
            return Err(LogError::Gap {
                instance: instance.to_string(),
                expected: view.next,
                got: batch.first(),
            });
        }
        let subject = self.subject(instance, "r");
        let mut acks = Vec::with_capacity(batch.len());
        for (i, frame) in batch.frames().iter().enumerate() {
            let seq = batch.first() + i as u64;
            let parts = frame.len().div_ceil(self.chunk).max(1);
            for k in 0..parts {
                let chunk = frame.slice(k * self.chunk..((k + 1) * self.chunk).min(frame.len()));
                let mut h = HeaderMap::new();
                h.insert(
                    "Nats-Expected-Last-Sequence",
                    view.stream_last.to_string().as_str(),
                );
                h.insert("Bgf-Seq", seq.to_string().as_str());
                if parts > 1 {
                    h.insert("Bgf-Part", format!("{}/{parts}", k + 1).as_str());
                }
                let sent = self
                    .js
                    .publish_with_headers(subject.clone(), h, chunk)
                    .await;
                match sent {
                    Ok(ack) => acks.push(ack),
                    Err(e) => {
                        *g = None;
                        return Err(unavailable("publish", e));
                    }
                }
                view.stream_last += 1;
            }
        }
        view.next = batch.last() + 1;
        *g = Some(view);
        drop(g);
        let (epoch, first, inst) = (batch.epoch(), batch.first(), instance.to_string());
        let timeout = self.cfg.request_timeout;
        let writer = w.clone();
        let checker = self.view_checker(instance);
        Ok(Box::pin(async move {
            let mut failed = None;
            for a in acks {
                if let Err(e) = a.await {
                    failed = Some(e);
                    break;
                }
            }
            let Some(e) = failed else { return Ok(()) };
            // Whatever happened, the view is no longer known.
            *writer.lock().await = None;
            use jetstream::context::PublishErrorKind as K;
            match e.kind() {
                K::TimedOut => Err(LogError::Timeout(timeout)),
                K::WrongLastSequence => {
                    // Someone moved the stream: a fence (stale epoch), or
                    // our own earlier batch failed.
                    match checker.await {
                        Ok((current, _)) if current != epoch => Err(LogError::StaleEpoch {
                            instance: inst,
                            presented: epoch,
                            current,
                        }),
                        Ok((_, next)) if next > first => Err(LogError::Gap {
                            instance: inst,
                            expected: next,
                            got: first,
                        }),
                        Ok(_) => Err(LogError::Unavailable(format!(
                            "jetstream: instance {inst}: append from {first} refused (the stream moved under an earlier failed append); retried"
                        ))),
                        Err(e) => Err(e),
                    }
                }
                _ => Err(unavailable("append ack", e)),
            }
        }))
    }

    async fn read(&self, instance: &str, from: Seq, max: usize) -> Result<Vec<Record>, LogError> {
        check_instance(instance)?;
        let from = from.max(1);
        if max == 0 || self.stream(instance).await?.is_none() {
            return Ok(Vec::new());
        }
        let last = self.last_record(instance).await?;
        if from > last {
            return Ok(Vec::new());
        }
        let (reader, any) = self.reader(instance, from).await?;
        if !any {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + self.cfg.request_timeout * 2;
        let mut high = reader.high.subscribe();
        loop {
            {
                let mut b = lock(&reader.buf);
                if let Some(e) = b.error.clone() {
                    drop(b);
                    lock(&self.readers).remove(instance);
                    return Err(e);
                }
                while out.len() < max {
                    match b.records.pop_front() {
                        Some(r) => {
                            b.next = r.seq + 1;
                            out.push(r);
                        }
                        None => break,
                    }
                }
                reader.room.notify_one();
                let done = out.len() >= max || out.last().is_some_and(|r| r.seq >= last);
                if done {
                    return Ok(out);
                }
            }
            match tokio::time::timeout_at(deadline, high.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(unavailable("reader", "stopped")),
                Err(_) if !out.is_empty() => return Ok(out),
                Err(_) => {
                    lock(&self.readers).remove(instance);
                    return Err(LogError::Timeout(self.cfg.request_timeout * 2));
                }
            }
        }
    }

    async fn wait_for(
        &self,
        instance: &str,
        after: Seq,
        timeout: Duration,
    ) -> Result<bool, LogError> {
        check_instance(instance)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.stream(instance).await?.is_some() {
                if self.last_record(instance).await? > after {
                    return Ok(true);
                }
                // Watch a reader positioned at or before after + 1.
                let reader = {
                    let cached = lock(&self.readers).get(instance).cloned();
                    match cached {
                        Some(r)
                            if lock(&r.buf).next <= after + 1 && lock(&r.buf).error.is_none() =>
                        {
                            r
                        }
                        _ => self.reader(instance, after + 1).await?.0,
                    }
                };
                let mut high = reader.high.subscribe();
                let woke = tokio::time::timeout_at(deadline, high.wait_for(|h| *h > after)).await;
                return Ok(matches!(woke, Ok(Ok(_))) || *reader.high.borrow() > after);
            }
            // No stream yet (nobody wrote): look again now and then.
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            tokio::time::sleep_until((now + Duration::from_millis(100)).min(deadline)).await;
        }
    }

    async fn last_seq(&self, instance: &str) -> Result<Seq, LogError> {
        check_instance(instance)?;
        if self.stream(instance).await?.is_none() {
            return Ok(0);
        }
        self.last_record(instance).await
    }

    async fn truncate_before(&self, instance: &str, before: Seq) -> Result<u64, LogError> {
        check_instance(instance)?;
        if self.stream(instance).await?.is_none() {
            return Ok(0);
        }
        let last = self.last_record(instance).await?;
        let Some(first) = self.first_part_from(instance, 0).await? else {
            return Ok(0);
        };
        let before = before.min(last + 1);
        if before <= first.seq {
            return Ok(0);
        }
        let st = self
            .js
            .get_stream_no_info(self.stream_name(instance))
            .await
            .map_err(|e| unavailable("stream handle", e))?;
        let subj = self.subject(instance, "r");
        let upto = if before > last {
            // Everything goes: keep the count in a mark first.
            let ack = self
                .bounded(
                    "truncation mark",
                    self.js
                        .publish(self.subject(instance, "t"), last.to_string().into()),
                )
                .await?;
            let ack = self
                .bounded(
                    "truncation mark ack",
                    std::future::IntoFuture::into_future(ack),
                )
                .await?;
            *self.writer(instance).lock().await = None;
            ack.sequence
        } else {
            match self.locate(instance, before).await? {
                Some(s) => s,
                None => return Ok(0),
            }
        };
        self.bounded(
            "purge",
            std::future::IntoFuture::into_future(st.purge().filter(subj).sequence(upto)),
        )
        .await?;
        // Old marks: keep the latest of each.
        for kind in ["e", "t"] {
            let _ = self
                .bounded(
                    "purge marks",
                    std::future::IntoFuture::into_future(
                        st.purge().filter(self.subject(instance, kind)).keep(1),
                    ),
                )
                .await;
        }
        lock(&self.readers).remove(instance);
        Ok(before - first.seq)
    }

    async fn fence(&self, instance: &str) -> Result<Epoch, LogError> {
        check_instance(instance)?;
        self.ensure_stream(instance).await?;
        for _ in 0..32 {
            let (at, current) = self.epoch_of(instance).await?;
            let next = current.checked_add(1).ok_or_else(|| {
                LogError::Invalid(format!("instance {instance}: epoch cannot grow"))
            })?;
            let mut h = HeaderMap::new();
            h.insert(
                "Nats-Expected-Last-Subject-Sequence",
                at.to_string().as_str(),
            );
            let ack = self
                .bounded(
                    "fence",
                    self.js.publish_with_headers(
                        self.subject(instance, "e"),
                        h,
                        next.to_string().into(),
                    ),
                )
                .await?;
            match tokio::time::timeout(self.cfg.request_timeout, ack).await {
                Err(_) => return Err(LogError::Timeout(self.cfg.request_timeout)),
                Ok(Ok(_)) => {
                    *self.writer(instance).lock().await = None;
                    tracing::info!(
                        instance,
                        epoch = next,
                        "state log instance fenced (jetstream)"
                    );
                    return Ok(next);
                }
                Ok(Err(e))
                    if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence =>
                {
                    // Another fencer won this round; bump past it.
                    continue;
                }
                Ok(Err(e)) => return Err(unavailable("fence", e)),
            }
        }
        Err(LogError::Unavailable(format!(
            "jetstream: instance {instance}: the fence lost 32 rounds to other fencers"
        )))
    }

    async fn epoch(&self, instance: &str) -> Result<Epoch, LogError> {
        check_instance(instance)?;
        if self.stream(instance).await?.is_none() {
            return Ok(0);
        }
        Ok(self.epoch_of(instance).await?.1)
    }
}

impl JetStreamStore {
    /// After a refused append: the instance's (epoch, next seq) as stored.
    fn view_checker(
        &self,
        instance: &str,
    ) -> impl std::future::Future<Output = Result<(Epoch, Seq), LogError>> + Send + 'static {
        let this = self.handle();
        let inst = instance.to_string();
        async move {
            let (_, e) = this.epoch_of(&inst).await?;
            let last = this.last_record(&inst).await?;
            Ok((e, last + 1))
        }
    }

    /// A cheap second handle on the same connection (for futures that
    /// outlive a borrow).
    fn handle(&self) -> JetStreamStore {
        JetStreamStore {
            cfg: self.cfg.clone(),
            js: self.js.clone(),
            client: self.client.clone(),
            chunk: self.chunk,
            writers: Mutex::new(HashMap::new()),
            readers: Mutex::new(HashMap::new()),
            known: Mutex::new(Default::default()),
        }
    }
}
