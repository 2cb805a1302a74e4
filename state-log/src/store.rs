//! The backend trait every log store implements (embedded fjall server,
//! Redis Streams), and its errors. The DAL-style client ([`crate::client`],
//! batching, replay and tail streams) is written once on top of it.
//!
//! Semantics every backend must provide:
//! - **Per-instance ordered logs** keyed by (instance id, [`Seq`]); sequence
//!   numbers are assigned by the writer, start at 1 and are contiguous: an
//!   append whose first seq is not `last_seq + 1` fails with [`LogError::Gap`]
//!   (a truncated log keeps counting from its last seq).
//! - **Durable acknowledgement**: `append` returns `Ok` only once the records
//!   survive a crash of the store process (fsync; for Redis, `WAIT` for a
//!   replica when replicas are configured).
//! - **Fencing**: every instance has an epoch (0 until first fenced).
//!   `fence` bumps it atomically and returns the new value; an `append`
//!   presenting any other epoch fails with [`LogError::StaleEpoch`], checked
//!   atomically with the write. Records keep the epoch they were written
//!   under.
//! - **Integrity**: a record that fails its frame check is reported with
//!   [`LogError::Corrupt`] naming the instance and seq — never skipped.

use crate::record::{Body, Epoch, FrameError, Record, Seq};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Records encoded once ([`Record::encode`]) for an append: contiguous seqs
/// under one epoch. A writer keeps the batch (not the records) until it is
/// durable, so a retry sends the same bytes without encoding again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    epoch: Epoch,
    first: Seq,
    frames: Vec<bytes::Bytes>,
    checkpoint: Option<Seq>,
}

impl Batch {
    /// Encode `records` (at least one, contiguous seqs, all of `epoch`).
    pub fn encode(epoch: Epoch, records: &[Record]) -> Result<Batch, LogError> {
        let first = records
            .first()
            .map(|r| r.seq)
            .ok_or_else(|| LogError::Invalid("append of no records".into()))?;
        let mut checkpoint = None;
        for (i, r) in records.iter().enumerate() {
            if Some(r.seq) != first.checked_add(i as u64) {
                return Err(LogError::Invalid(format!(
                    "records of one append must have contiguous seqs; #{i} has {} after {first}",
                    r.seq
                )));
            }
            if r.epoch != epoch {
                return Err(LogError::Invalid(format!(
                    "record {} carries epoch {} but the append presents epoch {epoch}",
                    r.seq, r.epoch
                )));
            }
            if matches!(r.body, Body::Checkpoint(_)) {
                checkpoint = Some(r.seq);
            }
        }
        Ok(Batch {
            epoch,
            first,
            frames: records.iter().map(|r| r.encode().into()).collect(),
            checkpoint,
        })
    }

    /// A batch of frames encoded by the caller: `frames[i]` must be the
    /// frame of seq `first + i` under `epoch` (the store checks what it can:
    /// the embedded server decodes every frame; a mismatch is refused
    /// there, written as is elsewhere — build batches from
    /// [`Record::encode`] only). `checkpoint`: the last checkpoint's seq.
    pub fn from_encoded(
        epoch: Epoch,
        first: Seq,
        frames: Vec<bytes::Bytes>,
        checkpoint: Option<Seq>,
    ) -> Batch {
        Batch {
            epoch,
            first,
            frames,
            checkpoint,
        }
    }

    /// Epoch of every record.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }
    /// Seq of the first record.
    pub fn first(&self) -> Seq {
        self.first
    }
    /// Seq of the last record.
    pub fn last(&self) -> Seq {
        self.first + self.frames.len() as u64 - 1
    }
    /// The frames, `frames()[i]` holding seq `first() + i`.
    pub fn frames(&self) -> &[bytes::Bytes] {
        &self.frames
    }
    /// Number of records.
    pub fn len(&self) -> usize {
        self.frames.len()
    }
    /// Never empty (encode refuses that); for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
    /// Seq of the last checkpoint in the batch, if any.
    pub fn checkpoint(&self) -> Option<Seq> {
        self.checkpoint
    }
    /// Bytes of all frames.
    pub fn bytes(&self) -> usize {
        self.frames.iter().map(|f| f.len()).sum()
    }
    /// The records back (test doubles and the fallback of
    /// [`LogStore::submit`]).
    pub fn decode(&self) -> Result<Vec<Record>, LogError> {
        self.frames
            .iter()
            .map(|f| {
                Record::decode(f)
                    .map(|(r, _)| r)
                    .map_err(|e| LogError::Invalid(format!("batch frame: {e}")))
            })
            .collect()
    }
}

/// The acknowledgement of a submitted append: resolves once the records are
/// durable (or the append failed).
pub type Ack = Pin<Box<dyn Future<Output = Result<(), LogError>> + Send>>;

/// Errors of log operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The writer's epoch is not the instance's current one: it was fenced
    /// (a standby took over). The writer must stop serving.
    #[error("instance {instance}: append under epoch {presented} refused, current epoch is {current} (fenced)")]
    StaleEpoch {
        /// Instance.
        instance: String,
        /// Epoch the writer presented.
        presented: Epoch,
        /// The store's epoch.
        current: Epoch,
    },
    /// The first record of an append does not follow the log's last one.
    #[error("instance {instance}: append starts at seq {got}, log expects {expected}")]
    Gap {
        /// Instance.
        instance: String,
        /// Next seq the log expects.
        expected: Seq,
        /// Seq presented.
        got: Seq,
    },
    /// A stored record failed its integrity check.
    #[error("instance {instance}: record {seq} is corrupt: {reason}")]
    Corrupt {
        /// Instance.
        instance: String,
        /// Seq of the bad record (or of the position where it was expected).
        seq: Seq,
        /// What failed.
        reason: FrameError,
    },
    /// The store did not answer in time.
    #[error("log store timed out after {0:?}")]
    Timeout(Duration),
    /// The store cannot be reached or refused the operation.
    #[error("log store unavailable: {0}")]
    Unavailable(String),
    /// Invalid request (bad instance id, empty batch, ...).
    #[error("invalid log request: {0}")]
    Invalid(String),
    /// The store refused the operation to this client's identity (its
    /// role does not allow it, or not on this instance). Not retried: fix
    /// the credentials or the configuration.
    #[error("log store refused the operation: {0}")]
    Denied(String),
}

/// Validate an instance id: `[A-Za-z0-9_-]{1,32}` (same rule as the config).
pub fn check_instance(instance: &str) -> Result<(), LogError> {
    let ok = !instance.is_empty()
        && instance.len() <= 32
        && instance
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(LogError::Invalid(format!(
            "instance id {instance:?} must be 1-32 characters of [A-Za-z0-9_-]"
        )))
    }
}

/// A log store backend.
#[async_trait::async_trait]
pub trait LogStore: Send + Sync + 'static {
    /// Append `records` (contiguous seqs, in order) to `instance`'s log under
    /// `epoch`. Resolves when they are durable.
    async fn append(
        &self,
        instance: &str,
        epoch: Epoch,
        records: &[Record],
    ) -> Result<(), LogError>;

    /// Up to `max` records with `seq >= from`, in order (fewer at the end).
    async fn read(&self, instance: &str, from: Seq, max: usize) -> Result<Vec<Record>, LogError>;

    /// Resolve when the log holds a record with `seq > after`, or after
    /// `timeout` (returns whether one exists). Backends wake waiters promptly
    /// (the tail latency budget is well under a millisecond on one host).
    async fn wait_for(
        &self,
        instance: &str,
        after: Seq,
        timeout: Duration,
    ) -> Result<bool, LogError>;

    /// Last seq written (`0` for an empty, never-written log).
    async fn last_seq(&self, instance: &str) -> Result<Seq, LogError>;

    /// Remove every record with `seq < before` (compaction after a
    /// checkpoint). Returns how many were removed.
    async fn truncate_before(&self, instance: &str, before: Seq) -> Result<u64, LogError>;

    /// Bump `instance`'s epoch and return the new one. From then on appends
    /// under older epochs fail with [`LogError::StaleEpoch`].
    async fn fence(&self, instance: &str) -> Result<Epoch, LogError>;

    /// The current epoch of `instance`.
    async fn epoch(&self, instance: &str) -> Result<Epoch, LogError>;

    /// Queue the append of an encoded `batch` (under `batch.epoch()`) and
    /// return its acknowledgement without waiting for durability: a writer
    /// keeps several batches in flight. Batches submitted one after another
    /// (each `submit` awaited before the next is called) reach the store in
    /// that order; when one fails, the ones after it fail too or land after
    /// it — the writer retries from its first non-durable record (a `Gap`
    /// then tells it what landed). Backends override this; the default
    /// decodes and appends before returning (no pipelining — for test
    /// doubles).
    async fn submit(&self, instance: &str, batch: Arc<Batch>) -> Result<Ack, LogError> {
        let records = batch.decode()?;
        let res = self.append(instance, batch.epoch(), &records).await;
        Ok(Box::pin(std::future::ready(res)))
    }
}
