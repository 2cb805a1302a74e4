//! The DAL-style client on top of any [`LogStore`]: streaming `replay` of an
//! instance's log, a live `tail` with low wake-up latency, and the
//! [`Replayer`] that applies records to a session core — the one piece of
//! code the standby (hot and cold), the tests and the tools use to turn a
//! log back into state.
//!
//! Appends are not here: the active's output-commit appender (`bgf`) owns
//! batching and pipelining because it must interleave them with held sends.
//!
//! Continuity is checked on every read: records arrive in strictly
//! contiguous seq order, except that the log may start later than asked
//! when it was truncated — then the first record must be a checkpoint
//! (truncation always keeps the latest checkpoint). Anything else is a
//! [`LogError::Gap`] naming the expected and the found seq; records are never
//! skipped silently.

use crate::record::{Body, Record, Seq};
use crate::store::{LogError, LogStore};
use sip_control::{Core, CoreConfig};
use std::sync::Arc;
use std::time::Duration;

/// Records fetched per read request.
pub const READ_BATCH: usize = 1024;

/// The client handle: a shared store.
#[derive(Clone)]
pub struct LogClient {
    store: Arc<dyn LogStore>,
}

impl LogClient {
    /// Wrap a store.
    pub fn new(store: Arc<dyn LogStore>) -> LogClient {
        LogClient { store }
    }

    /// The underlying store (appends, fencing, truncation).
    pub fn store(&self) -> &Arc<dyn LogStore> {
        &self.store
    }

    /// Stream `instance`'s records with `seq >= from` up to the log's end as
    /// of this call; see [`Replay::next_batch`].
    pub async fn replay(&self, instance: &str, from: Seq) -> Result<Replay, LogError> {
        let end = self.store.last_seq(instance).await?;
        Ok(Replay {
            cursor: Cursor::new(self.store.clone(), instance, from),
            end,
        })
    }

    /// Follow `instance`'s log from `from` on, forever; see
    /// [`Tail::next_batch`].
    pub fn tail(&self, instance: &str, from: Seq) -> Tail {
        Tail {
            cursor: Cursor::new(self.store.clone(), instance, from),
        }
    }
}

/// Shared read position with the continuity check.
struct Cursor {
    store: Arc<dyn LogStore>,
    instance: String,
    /// Next seq wanted.
    next: Seq,
    /// Whether any record has been returned yet (the first may follow a
    /// truncation).
    started: bool,
}

impl Cursor {
    fn new(store: Arc<dyn LogStore>, instance: &str, from: Seq) -> Cursor {
        Cursor {
            store,
            instance: instance.to_string(),
            next: from.max(1),
            started: false,
        }
    }

    /// One read of up to `max` records, continuity-checked.
    async fn read(&mut self, max: usize) -> Result<Vec<Record>, LogError> {
        let recs = self.store.read(&self.instance, self.next, max).await?;
        for r in &recs {
            let truncated_start =
                !self.started && r.seq > self.next && matches!(r.body, Body::Checkpoint(_));
            if r.seq != self.next && !truncated_start {
                return Err(LogError::Gap {
                    instance: self.instance.clone(),
                    expected: self.next,
                    got: r.seq,
                });
            }
            self.started = true;
            self.next = r.seq + 1;
        }
        Ok(recs)
    }
}

/// A finite replay (see [`LogClient::replay`]).
pub struct Replay {
    cursor: Cursor,
    end: Seq,
}

impl Replay {
    /// The next batch, or `None` once the end seen at creation is reached.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Record>>, LogError> {
        if self.cursor.next > self.end {
            return Ok(None);
        }
        let left = usize::try_from(self.end - self.cursor.next + 1).unwrap_or(READ_BATCH);
        let recs = self.cursor.read(left.min(READ_BATCH)).await?;
        if recs.is_empty() {
            // The log ended before the seq it reported as last: records
            // vanished between the two requests (a concurrent truncation
            // cannot remove the tail, so this is damage).
            return Err(LogError::Gap {
                instance: self.cursor.instance.clone(),
                expected: self.cursor.next,
                got: 0,
            });
        }
        Ok(Some(recs))
    }

    /// Seq of the last record this replay will return.
    pub fn end(&self) -> Seq {
        self.end
    }
}

/// A live tail (see [`LogClient::tail`]).
pub struct Tail {
    cursor: Cursor,
}

impl Tail {
    /// The next records; waits up to `wait` for new ones when caught up and
    /// returns an empty batch if none arrived (so the caller can check for
    /// shutdown or report lag).
    pub async fn next_batch(&mut self, wait: Duration) -> Result<Vec<Record>, LogError> {
        let recs = self.cursor.read(READ_BATCH).await?;
        if !recs.is_empty() {
            return Ok(recs);
        }
        let after = self.cursor.next.saturating_sub(1);
        if self
            .cursor
            .store
            .wait_for(&self.cursor.instance, after, wait)
            .await?
        {
            return self.cursor.read(READ_BATCH).await;
        }
        Ok(Vec::new())
    }

    /// Next seq the tail will return.
    pub fn position(&self) -> Seq {
        self.cursor.next
    }
}

/// Applies an instance's records to a session core: inputs through
/// `Core::apply`, checkpoints through `Core::restore`; operator records are
/// kept in the log for audit and change no state.
pub struct Replayer {
    cfg: CoreConfig,
    core: Core,
    applied: Seq,
    records: u64,
}

impl Replayer {
    /// A fresh core for `cfg`.
    pub fn new(cfg: CoreConfig) -> Result<Replayer, LogError> {
        let core = Core::new(cfg.clone())
            .map_err(|e| LogError::Invalid(format!("core configuration: {e}")))?;
        Ok(Replayer {
            cfg,
            core,
            applied: 0,
            records: 0,
        })
    }

    /// Apply one record. Records must come in seq order (a [`Replay`] or
    /// [`Tail`] guarantees it); an out-of-order record is a [`LogError::Gap`].
    pub fn apply(&mut self, rec: &Record) -> Result<(), LogError> {
        let in_order = if self.applied == 0 {
            // A log starts at seq 1, or at a checkpoint once truncated.
            rec.seq == 1 || matches!(rec.body, Body::Checkpoint(_))
        } else {
            rec.seq == self.applied + 1
        };
        if !in_order {
            return Err(LogError::Gap {
                instance: self.cfg.instance.clone(),
                expected: self.applied + 1,
                got: rec.seq,
            });
        }
        match &rec.body {
            Body::Input(input) => {
                self.core.apply(input);
            }
            Body::Checkpoint(bytes) => {
                let corrupt = |reason: String| LogError::Corrupt {
                    instance: self.cfg.instance.clone(),
                    seq: rec.seq,
                    reason: crate::record::FrameError::Decode(reason),
                };
                let state = rmp_serde::from_slice(bytes)
                    .map_err(|e| corrupt(format!("checkpoint: {e}")))?;
                self.core = Core::restore(self.cfg.clone(), state)
                    .map_err(|e| corrupt(format!("checkpoint does not restore: {e}")))?;
            }
            Body::Operator(_) => {}
        }
        self.applied = rec.seq;
        self.records += 1;
        Ok(())
    }

    /// Apply a batch in order.
    pub fn apply_all(&mut self, recs: &[Record]) -> Result<(), LogError> {
        recs.iter().try_for_each(|r| self.apply(r))
    }

    /// Seq of the last record applied (0 before any).
    pub fn applied(&self) -> Seq {
        self.applied
    }

    /// Records applied so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The replayed core.
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Take the replayed core (to serve with it after a takeover).
    pub fn into_core(self) -> Core {
        self.core
    }
}

/// Replay `instance`'s whole log into a fresh core for `cfg`.
pub async fn replay_all(client: &LogClient, cfg: &CoreConfig) -> Result<Replayer, LogError> {
    let mut replayer = Replayer::new(cfg.clone())?;
    let mut replay = client.replay(&cfg.instance, 1).await?;
    while let Some(batch) = replay.next_batch().await? {
        replayer.apply_all(&batch)?;
    }
    Ok(replayer)
}
