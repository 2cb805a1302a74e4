//! The embedded log store: per-instance logs in a [fjall] keyspace on local
//! disk, with group commit. [`crate::server`] serves it over TCP as
//! `bgf statelog`; it is **single-node** — multi-host deployments use
//! JetStream (or Redis Streams).
//!
//! Layout (one fjall database in the data directory):
//! - keyspace `records`: key = instance id, `0x00`, seq (big-endian u64);
//!   value = the record's frame ([`Record::encode`], version + CRC32C).
//!   Instance ids are `[A-Za-z0-9_-]`, so the `0x00` makes every instance's
//!   key prefix unique and keys sort by seq.
//! - keyspace `meta`: key = instance id; value = epoch, last seq, first
//!   retained seq (three big-endian u64). Last seq survives truncation.
//!
//! **Group commit.** One writer thread serialises every mutation (appends,
//! fences, truncations). It takes the first queued command, drains whatever
//! else is queued (bounded), checks epochs and contiguity against the state
//! including the group's earlier commands, writes one fjall batch (records +
//! meta) and persists it with `PersistMode::SyncAll` (fsync) once, then
//! acknowledges every caller of the group and wakes the `wait_for` waiters of
//! the instances it advanced. A failed write fails the whole group with
//! [`LogError::Unavailable`] and changes nothing in memory.
//!
//! Reads never return a record before it is durable: they stop at the last
//! acknowledged seq. Every stored frame is decoded on read; a bad one, or a
//! hole inside the retained range, is [`LogError::Corrupt`] naming the seq.
//! Appends on one store (and on one connection of the server) are applied in
//! the order they were submitted, so a writer may pipeline appends to one
//! instance without waiting for each ack.

use crate::record::{Epoch, FrameError, Record, Seq};
use crate::store::{check_instance, LogError, LogStore};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

/// Most records in one append.
pub const MAX_RECORDS_PER_APPEND: usize = 4096;
/// Most encoded bytes in one append.
pub const MAX_APPEND_BYTES: usize = 64 * 1024 * 1024;
/// Most records returned by one read (larger `max` is clamped).
pub const MAX_READ_RECORDS: usize = 65_536;
/// Commands waiting for the writer; submitters wait when it is full.
const QUEUE: usize = 8192;
/// Most commands in one group.
const MAX_GROUP: usize = 2048;
/// Most bytes in one group (a group is cut after the command that crosses it).
const MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;

/// One committed group, as the writer saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCommit {
    /// Commands in the group (appends and fences).
    pub commands: usize,
    /// Records written by its successful appends.
    pub records: usize,
    /// Frame bytes written by its successful appends.
    pub bytes: usize,
    /// Time of the batch write including its fsync.
    pub write: Duration,
    /// Whether the write (and fsync) succeeded.
    pub ok: bool,
}

/// Hooks for a daemon's metrics of the store and its server (`bgf
/// statelog --admin`); every method defaults to nothing. Called on the
/// writer thread and the connection tasks: keep them cheap (counters).
pub trait StoreObserver: Send + Sync {
    /// A group was written and fsynced (or failed).
    fn group_committed(&self, _g: &GroupCommit) {}
    /// An append of `records` records was answered `latency` after its
    /// request arrived (queueing, group write and fsync included).
    fn append_answered(&self, _records: usize, _ok: bool, _latency: Duration) {}
    /// Another request (`read`, `wait_for`, `last_seq`, `truncate`,
    /// `fence`, `epoch`) arrived.
    fn request(&self, _op: &'static str) {}
    /// A client connected (`true`) or left (`false`).
    fn connection(&self, _opened: bool) {}
    /// The server refused something: `connections` (at the limit),
    /// `handshake` (TLS failed: no or untrusted certificate), `identity`
    /// (a certificate naming no client role), `rights` (a request the
    /// peer's role may not make).
    fn refused(&self, _what: &'static str) {}
}

/// One instance's log as the store holds it (durable values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceLog {
    /// Instance id.
    pub instance: String,
    /// Current epoch.
    pub epoch: Epoch,
    /// Last appended seq (0: none).
    pub last_seq: Seq,
    /// Lowest seq retained (above `last_seq` when all were truncated).
    pub first_seq: Seq,
}

/// A mutation for the writer thread.
enum Cmd {
    Append {
        instance: String,
        epoch: Epoch,
        first: Seq,
        frames: Vec<Vec<u8>>,
        reply: oneshot::Sender<Result<(), LogError>>,
    },
    Fence {
        instance: String,
        reply: oneshot::Sender<Result<Epoch, LogError>>,
    },
    Truncate {
        instance: String,
        before: Seq,
        reply: oneshot::Sender<Result<u64, LogError>>,
    },
}

impl Cmd {
    fn bytes(&self) -> usize {
        match self {
            Cmd::Append { frames, .. } => frames.iter().map(Vec::len).sum(),
            _ => 64,
        }
    }
}

/// Durable per-instance state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Meta {
    epoch: Epoch,
    last_seq: Seq,
    /// Lowest seq not removed by truncation (1 for a never-truncated log).
    first_seq: Seq,
}

impl Meta {
    fn new() -> Self {
        Meta {
            epoch: 0,
            last_seq: 0,
            first_seq: 1,
        }
    }
    fn encode(&self) -> [u8; 24] {
        let mut v = [0u8; 24];
        v[..8].copy_from_slice(&self.epoch.to_be_bytes());
        v[8..16].copy_from_slice(&self.last_seq.to_be_bytes());
        v[16..].copy_from_slice(&self.first_seq.to_be_bytes());
        v
    }
    fn decode(v: &[u8]) -> Option<Self> {
        let v: &[u8; 24] = v.try_into().ok()?;
        let u = |r: &[u8]| u64::from_be_bytes(r.try_into().unwrap_or([0; 8]));
        Some(Meta {
            epoch: u(&v[..8]),
            last_seq: u(&v[8..16]),
            first_seq: u(&v[16..]),
        })
    }
}

/// In-memory view of an instance: its durable meta and the waiters' channel.
struct Inst {
    meta: Meta,
    tail: watch::Sender<Seq>,
}

impl Inst {
    fn new(meta: Meta) -> Self {
        Inst {
            meta,
            tail: watch::Sender::new(meta.last_seq),
        }
    }
}

struct Shared {
    db: Database,
    records: Keyspace,
    meta: Keyspace,
    insts: Mutex<HashMap<String, Inst>>,
    dir: PathBuf,
    observer: OnceLock<Arc<dyn StoreObserver>>,
}

impl Shared {
    fn insts(&self) -> MutexGuard<'_, HashMap<String, Inst>> {
        // A panic while holding this lock is a bug; the map stays usable.
        self.insts.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn meta_of(&self, instance: &str) -> Meta {
        self.insts()
            .get(instance)
            .map(|i| i.meta)
            .unwrap_or_else(Meta::new)
    }
}

/// Record key: instance id, 0x00, seq big-endian.
pub fn record_key(instance: &str, seq: Seq) -> Vec<u8> {
    let mut k = Vec::with_capacity(instance.len() + 9);
    k.extend_from_slice(instance.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn io_err(what: &str, dir: &Path, e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(format!(
        "embedded log store at {}: {what}: {e}",
        dir.display()
    ))
}

/// The embedded store. Cheap to share behind an `Arc`; dropping the last
/// handle lets the writer finish its group and closes the database.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Cmd>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedStore {
    /// Open (or create) the store in `dir` and start its writer thread.
    /// Callable outside a tokio runtime.
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            io_err(
                "cannot create the data directory (check the path and permissions)",
                dir,
                e,
            )
        })?;
        let db = Database::builder(dir).open().map_err(|e| {
            io_err(
                "cannot open the database (is another `bgf statelog` using this directory?)",
                dir,
                e,
            )
        })?;
        let records = db
            .keyspace("records", KeyspaceCreateOptions::default)
            .map_err(|e| io_err("cannot open keyspace `records`", dir, e))?;
        let meta = db
            .keyspace("meta", KeyspaceCreateOptions::default)
            .map_err(|e| io_err("cannot open keyspace `meta`", dir, e))?;
        let mut insts = HashMap::new();
        for kv in meta.iter() {
            let (k, v) = kv
                .into_inner()
                .map_err(|e| io_err("cannot read keyspace `meta`", dir, e))?;
            let name = String::from_utf8_lossy(&k).into_owned();
            let Some(m) = Meta::decode(&v) else {
                return Err(io_err(
                    "corrupt instance metadata (restore the directory from a backup)",
                    dir,
                    format!("instance {name:?}: {} bytes", v.len()),
                ));
            };
            insts.insert(name, Inst::new(m));
        }
        info!(data = %dir.display(), instances = insts.len(), "embedded log store opened");
        let shared = Arc::new(Shared {
            db,
            records,
            meta,
            insts: Mutex::new(insts),
            dir: dir.to_path_buf(),
            observer: OnceLock::new(),
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let s = shared.clone();
        let writer = std::thread::Builder::new()
            .name("statelog-writer".into())
            .spawn(move || writer_loop(s, rx))
            .map_err(|e| io_err("cannot start the writer thread", dir, e))?;
        Ok(EmbeddedStore {
            shared,
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Report to `o` from now on (the first observer set stays; returns
    /// false if one was set already).
    pub fn set_observer(&self, o: Arc<dyn StoreObserver>) -> bool {
        self.shared.observer.set(o).is_ok()
    }

    /// The observer, if one was set.
    pub fn observer(&self) -> Option<&Arc<dyn StoreObserver>> {
        self.shared.observer.get()
    }

    /// Every instance with a log or an epoch (durable values), by id. An
    /// instance only waited on (never appended to nor fenced) is left out.
    pub fn instances(&self) -> Vec<InstanceLog> {
        let mut v: Vec<InstanceLog> = self
            .shared
            .insts()
            .iter()
            .filter(|(_, i)| i.meta != Meta::new())
            .map(|(name, i)| InstanceLog {
                instance: name.clone(),
                epoch: i.meta.epoch,
                last_seq: i.meta.last_seq,
                first_seq: i.meta.first_seq,
            })
            .collect();
        v.sort_by(|a, b| a.instance.cmp(&b.instance));
        v
    }

    async fn submit_cmd<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, LogError>>) -> Cmd,
    ) -> Result<oneshot::Receiver<Result<T, LogError>>, LogError> {
        let (reply, rx) = oneshot::channel();
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| LogError::Unavailable("embedded log store is closed".into()))?;
        tx.send(make(reply))
            .await
            .map_err(|_| LogError::Unavailable("embedded log store writer stopped".into()))?;
        Ok(rx)
    }

    async fn answer<T>(rx: oneshot::Receiver<Result<T, LogError>>) -> Result<T, LogError> {
        rx.await
            .map_err(|_| LogError::Unavailable("embedded log store writer stopped".into()))?
    }

    /// Queue an append of already-encoded frames (`frames[i]` is the frame of
    /// seq `first + i`) and return a future-like receiver for its ack.
    /// Queuing happens before this returns, so calls made one after another
    /// are applied in that order even if their acks are awaited later. The
    /// caller vouches that the frames decode to records with those seqs and
    /// `epoch` ([`check_frames`] does that for frames from the network).
    pub async fn enqueue_append(
        &self,
        instance: &str,
        epoch: Epoch,
        first: Seq,
        frames: Vec<Vec<u8>>,
    ) -> Result<AppendAck, LogError> {
        check_instance(instance)?;
        if frames.is_empty() {
            return Err(LogError::Invalid("append of no records".into()));
        }
        if frames.len() > MAX_RECORDS_PER_APPEND {
            return Err(LogError::Invalid(format!(
                "append of {} records; at most {MAX_RECORDS_PER_APPEND} per call",
                frames.len()
            )));
        }
        let bytes: usize = frames.iter().map(Vec::len).sum();
        if bytes > MAX_APPEND_BYTES {
            return Err(LogError::Invalid(format!(
                "append of {bytes} bytes; at most {MAX_APPEND_BYTES} per call"
            )));
        }
        let rx = self
            .submit_cmd(|reply| Cmd::Append {
                instance: instance.to_string(),
                epoch,
                first,
                frames,
                reply,
            })
            .await?;
        Ok(AppendAck(rx))
    }

    /// Read up to `max` records from `from`, each with its stored frame,
    /// stopping early (after at least one record) once the frames would
    /// exceed `max_bytes`.
    pub async fn read_frames(
        &self,
        instance: &str,
        from: Seq,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<(Record, Vec<u8>)>, LogError> {
        check_instance(instance)?;
        let shared = self.shared.clone();
        let instance = instance.to_string();
        tokio::task::spawn_blocking(move || read_blocking(&shared, &instance, from, max, max_bytes))
            .await
            .map_err(|e| LogError::Unavailable(format!("read task failed: {e}")))?
    }

    fn subscribe(&self, instance: &str) -> watch::Receiver<Seq> {
        let mut insts = self.shared.insts();
        insts
            .entry(instance.to_string())
            .or_insert_with(|| Inst::new(Meta::new()))
            .tail
            .subscribe()
    }
}

/// Pending acknowledgement of an append queued with
/// [`EmbeddedStore::enqueue_append`].
pub struct AppendAck(oneshot::Receiver<Result<(), LogError>>);

impl AppendAck {
    /// Resolve when the records are durable (or the append failed).
    pub async fn wait(self) -> Result<(), LogError> {
        EmbeddedStore::answer(self.0).await
    }
}

/// Check that `frames` decode to records with seqs `first, first + 1, ...`
/// and epoch `epoch`. Returns `first` (the seq of the first frame).
pub fn check_frames(instance: &str, epoch: Epoch, frames: &[Vec<u8>]) -> Result<Seq, LogError> {
    let mut first = None;
    for (i, f) in frames.iter().enumerate() {
        let (rec, used) = Record::decode(f).map_err(|e| {
            LogError::Invalid(format!(
                "instance {instance}: record #{i} of the append: {e}"
            ))
        })?;
        if used != f.len() {
            return Err(LogError::Invalid(format!(
                "instance {instance}: record #{i} of the append has {} trailing bytes",
                f.len() - used
            )));
        }
        let base = *first.get_or_insert(rec.seq);
        check_record(instance, epoch, base, i, &rec)?;
    }
    first.ok_or_else(|| LogError::Invalid("append of no records".into()))
}

fn check_record(
    instance: &str,
    epoch: Epoch,
    base: Seq,
    i: usize,
    rec: &Record,
) -> Result<(), LogError> {
    if Some(rec.seq) != base.checked_add(i as u64) {
        return Err(LogError::Invalid(format!(
            "instance {instance}: records of one append must have contiguous seqs; #{i} has {} after {base}",
            rec.seq
        )));
    }
    if rec.epoch != epoch {
        return Err(LogError::Invalid(format!(
            "instance {instance}: record {} carries epoch {} but the append presents epoch {epoch}",
            rec.seq, rec.epoch
        )));
    }
    Ok(())
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            if w.join().is_err() {
                error!("embedded log store writer thread panicked");
            }
        }
    }
}

fn corrupt(instance: &str, seq: Seq, reason: FrameError) -> LogError {
    LogError::Corrupt {
        instance: instance.to_string(),
        seq,
        reason,
    }
}

fn read_blocking(
    shared: &Shared,
    instance: &str,
    from: Seq,
    max: usize,
    max_bytes: usize,
) -> Result<Vec<(Record, Vec<u8>)>, LogError> {
    let meta = shared.meta_of(instance);
    let from = from.max(meta.first_seq).max(1);
    let max = max.min(MAX_READ_RECORDS) as u64;
    if max == 0 || from > meta.last_seq {
        return Ok(Vec::new());
    }
    let last = meta.last_seq.min(from.saturating_add(max - 1));
    let lo = record_key(instance, from);
    let hi = record_key(instance, last);
    let mut out = Vec::with_capacity((last - from + 1) as usize);
    let mut expect = from;
    let mut bytes = 0usize;
    for kv in shared.records.range(lo..=hi) {
        let (k, v) = kv
            .into_inner()
            .map_err(|e| io_err("read failed", &shared.dir, e))?;
        let key_seq = k
            .len()
            .checked_sub(8)
            .and_then(|at| k.get(at..))
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        if key_seq != expect {
            return Err(corrupt(
                instance,
                expect,
                FrameError::Decode(format!(
                    "record is missing from the store (next stored record is {key_seq})"
                )),
            ));
        }
        let rec = match Record::decode(&v) {
            Ok((rec, used)) if used == v.len() => rec,
            Ok((_, used)) => {
                return Err(corrupt(
                    instance,
                    expect,
                    FrameError::Decode(format!(
                        "{} trailing bytes after the frame",
                        v.len() - used
                    )),
                ))
            }
            Err(e) => return Err(corrupt(instance, expect, e)),
        };
        bytes = bytes.saturating_add(v.len());
        if !out.is_empty() && bytes > max_bytes {
            return Ok(out);
        }
        if rec.seq != expect {
            return Err(corrupt(
                instance,
                expect,
                FrameError::Decode(format!("frame holds seq {} under key {expect}", rec.seq)),
            ));
        }
        out.push((rec, v.to_vec()));
        expect += 1;
    }
    if expect <= last {
        return Err(corrupt(
            instance,
            expect,
            FrameError::Decode("record is missing from the store".into()),
        ));
    }
    Ok(out)
}

/// One command's outcome inside a group, sent after the fsync.
enum Done {
    Append(oneshot::Sender<Result<(), LogError>>, Result<(), LogError>),
    Fence(
        oneshot::Sender<Result<Epoch, LogError>>,
        Result<Epoch, LogError>,
    ),
}

fn writer_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<Cmd>) {
    let mut carry: Option<Cmd> = None;
    loop {
        let first = match carry.take() {
            Some(c) => c,
            None => match rx.blocking_recv() {
                Some(c) => c,
                None => break,
            },
        };
        if let Cmd::Truncate {
            instance,
            before,
            reply,
        } = first
        {
            let _ = reply.send(truncate(&shared, &instance, before));
            continue;
        }
        let mut group = vec![first];
        let mut bytes = group[0].bytes();
        while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                // A truncation reads the committed keyspace: commit first.
                Ok(c @ Cmd::Truncate { .. }) => {
                    carry = Some(c);
                    break;
                }
                Ok(c) => {
                    bytes += c.bytes();
                    group.push(c);
                }
                Err(_) => break,
            }
        }
        commit_group(&shared, group);
    }
    if let Err(e) = shared.db.persist(PersistMode::SyncAll) {
        warn!(error = %e, "embedded log store: final persist failed");
    }
}

fn commit_group(shared: &Shared, group: Vec<Cmd>) {
    // Working copy of the metas this group touches.
    let mut work: HashMap<String, Meta> = HashMap::new();
    let mut batch = shared.db.batch().durability(Some(PersistMode::SyncAll));
    let mut done = Vec::with_capacity(group.len());
    let mut g = GroupCommit {
        commands: group.len(),
        records: 0,
        bytes: 0,
        write: Duration::ZERO,
        ok: false,
    };
    {
        let insts = shared.insts();
        for cmd in group {
            match cmd {
                Cmd::Append {
                    instance,
                    epoch,
                    first,
                    frames,
                    reply,
                } => {
                    let m = work.entry(instance.clone()).or_insert_with(|| {
                        insts
                            .get(&instance)
                            .map(|i| i.meta)
                            .unwrap_or_else(Meta::new)
                    });
                    let res = if epoch != m.epoch {
                        Err(LogError::StaleEpoch {
                            instance: instance.clone(),
                            presented: epoch,
                            current: m.epoch,
                        })
                    } else if Some(first) != m.last_seq.checked_add(1) {
                        Err(LogError::Gap {
                            instance: instance.clone(),
                            expected: m.last_seq.saturating_add(1),
                            got: first,
                        })
                    } else {
                        let n = frames.len() as u64;
                        g.records += frames.len();
                        g.bytes += frames.iter().map(Vec::len).sum::<usize>();
                        for (i, f) in frames.into_iter().enumerate() {
                            batch.insert(
                                &shared.records,
                                record_key(&instance, first + i as u64),
                                f,
                            );
                        }
                        m.last_seq = first + n - 1;
                        Ok(())
                    };
                    done.push(Done::Append(reply, res));
                }
                Cmd::Fence { instance, reply } => {
                    let m = work.entry(instance.clone()).or_insert_with(|| {
                        insts
                            .get(&instance)
                            .map(|i| i.meta)
                            .unwrap_or_else(Meta::new)
                    });
                    let res = match m.epoch.checked_add(1) {
                        Some(e) => {
                            m.epoch = e;
                            Ok(e)
                        }
                        None => Err(LogError::Invalid(format!(
                            "instance {instance}: epoch cannot be bumped past {}",
                            m.epoch
                        ))),
                    };
                    done.push(Done::Fence(reply, res));
                }
                Cmd::Truncate { reply, .. } => {
                    // Never grouped (the loop carries it over); refuse defensively.
                    let _ = reply.send(Err(LogError::Unavailable(
                        "internal: truncation inside a group".into(),
                    )));
                }
            }
        }
    }
    for (name, m) in &work {
        batch.insert(&shared.meta, name.as_bytes(), m.encode().to_vec());
    }
    let started = Instant::now();
    let committed = batch.commit();
    g.write = started.elapsed();
    g.ok = committed.is_ok();
    if let Some(o) = shared.observer.get() {
        o.group_committed(&g);
    }
    if let Err(e) = committed {
        error!(data = %shared.dir.display(), error = %e, "embedded log store: write or fsync failed; appends are refused (check the disk, then restart `bgf statelog`)");
        let fail = || LogError::Unavailable(format!("write or fsync failed: {e}"));
        for d in done {
            match d {
                Done::Append(r, _) => {
                    let _ = r.send(Err(fail()));
                }
                Done::Fence(r, _) => {
                    let _ = r.send(Err(fail()));
                }
            }
        }
        return;
    }
    {
        let mut insts = shared.insts();
        for (name, m) in work {
            let inst = insts.entry(name).or_insert_with(|| Inst::new(Meta::new()));
            inst.meta = m;
            inst.tail.send_if_modified(|v| {
                let changed = *v != m.last_seq;
                *v = m.last_seq;
                changed
            });
        }
    }
    for d in done {
        match d {
            Done::Append(r, res) => {
                let _ = r.send(res);
            }
            Done::Fence(r, res) => {
                let _ = r.send(res);
            }
        }
    }
}

fn truncate(shared: &Shared, instance: &str, before: Seq) -> Result<u64, LogError> {
    let mut m = shared.meta_of(instance);
    // Never past the next seq: the log keeps counting from last_seq.
    let before = before.min(m.last_seq.saturating_add(1));
    if before <= m.first_seq {
        return Ok(0);
    }
    let mut batch = shared.db.batch().durability(Some(PersistMode::SyncAll));
    let mut n = 0u64;
    // From the first live record: starting at 0 would walk the tombstones of
    // every record ever truncated, and each truncation would get slower.
    let lo = record_key(instance, m.first_seq);
    let hi = record_key(instance, before);
    for kv in shared.records.range(lo..hi) {
        let k = kv
            .key()
            .map_err(|e| io_err("read during truncation failed", &shared.dir, e))?;
        batch.remove(&shared.records, k);
        n += 1;
    }
    m.first_seq = before;
    batch.insert(&shared.meta, instance.as_bytes(), m.encode().to_vec());
    batch
        .commit()
        .map_err(|e| io_err("truncation write or fsync failed", &shared.dir, e))?;
    let mut insts = shared.insts();
    let inst = insts
        .entry(instance.to_string())
        .or_insert_with(|| Inst::new(m));
    inst.meta.first_seq = m.first_seq;
    Ok(n)
}

#[async_trait::async_trait]
impl LogStore for EmbeddedStore {
    async fn append(
        &self,
        instance: &str,
        epoch: Epoch,
        records: &[Record],
    ) -> Result<(), LogError> {
        check_instance(instance)?;
        let batch = Arc::new(crate::store::Batch::encode(epoch, records)?);
        LogStore::submit(self, instance, batch).await?.await
    }

    async fn submit(
        &self,
        instance: &str,
        batch: Arc<crate::store::Batch>,
    ) -> Result<crate::store::Ack, LogError> {
        let frames = batch.frames().iter().map(|f| f.to_vec()).collect();
        let ack = self
            .enqueue_append(instance, batch.epoch(), batch.first(), frames)
            .await?;
        Ok(Box::pin(ack.wait()))
    }

    async fn read(&self, instance: &str, from: Seq, max: usize) -> Result<Vec<Record>, LogError> {
        Ok(self
            .read_frames(instance, from, max, usize::MAX)
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .collect())
    }

    async fn wait_for(
        &self,
        instance: &str,
        after: Seq,
        timeout: Duration,
    ) -> Result<bool, LogError> {
        check_instance(instance)?;
        let mut rx = self.subscribe(instance);
        let woke =
            tokio::time::timeout(timeout, async { rx.wait_for(|v| *v > after).await.is_ok() })
                .await;
        // Timed out, or the store is closing: report what is there.
        Ok(woke == Ok(true) || *rx.borrow() > after)
    }

    async fn last_seq(&self, instance: &str) -> Result<Seq, LogError> {
        check_instance(instance)?;
        Ok(self.shared.meta_of(instance).last_seq)
    }

    async fn truncate_before(&self, instance: &str, before: Seq) -> Result<u64, LogError> {
        check_instance(instance)?;
        let rx = self
            .submit_cmd(|reply| Cmd::Truncate {
                instance: instance.to_string(),
                before,
                reply,
            })
            .await?;
        Self::answer(rx).await
    }

    async fn fence(&self, instance: &str) -> Result<Epoch, LogError> {
        check_instance(instance)?;
        let rx = self
            .submit_cmd(|reply| Cmd::Fence {
                instance: instance.to_string(),
                reply,
            })
            .await?;
        Self::answer(rx).await
    }

    async fn epoch(&self, instance: &str) -> Result<Epoch, LogError> {
        check_instance(instance)?;
        Ok(self.shared.meta_of(instance).epoch)
    }
}
