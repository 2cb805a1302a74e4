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

use crate::record::Epoch;
use crate::record::{Body, Record, Seq};
use crate::store::{LogError, LogStore};
use serde::Serialize;
use sip_control::{Core, CoreConfig, CoreState};
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

/// The continuity rule of every reader: after `applied` (0: nothing yet)
/// comes `applied + 1`, or a checkpoint further on — a log truncated past
/// the reader's position resumes at its checkpoint, which carries the whole
/// state. Anything else means records are missing.
pub fn in_order(applied: Seq, rec: &Record) -> bool {
    rec.seq == applied + 1 || (rec.seq > applied + 1 && matches!(rec.body, Body::Checkpoint(_)))
}

/// Shared read position with the continuity check.
struct Cursor {
    store: Arc<dyn LogStore>,
    instance: String,
    /// Next seq wanted.
    next: Seq,
}

impl Cursor {
    fn new(store: Arc<dyn LogStore>, instance: &str, from: Seq) -> Cursor {
        Cursor {
            store,
            instance: instance.to_string(),
            next: from.max(1),
        }
    }

    /// One read of up to `max` records, continuity-checked.
    async fn read(&mut self, max: usize) -> Result<Vec<Record>, LogError> {
        let recs = self.store.read(&self.instance, self.next, max).await?;
        for r in &recs {
            if !in_order(self.next - 1, r) {
                return Err(LogError::Gap {
                    instance: self.instance.clone(),
                    expected: self.next,
                    got: r.seq,
                });
            }
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

/// Why a replay cannot advance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The store failed (unavailable, timeout, corrupt record with its seq).
    #[error("{0}")]
    Log(#[from] LogError),
    /// A record is missing: the next one read is not the next in order.
    #[error("instance {instance}: log gap: expected record {expected}, store returned {got} (records lost or truncated without a checkpoint; restore the store or start the standby cold after the active writes a checkpoint)")]
    Gap {
        /// Instance.
        instance: String,
        /// Seq expected.
        expected: Seq,
        /// Seq found (0: none although the log's end is past `expected`).
        got: Seq,
    },
    /// A checkpoint record does not decode or does not fit the config.
    #[error("instance {instance}: checkpoint at record {seq} unusable: {reason} (is the standby's config for this instance the same as the active's?)")]
    Checkpoint {
        /// Instance.
        instance: String,
        /// Seq of the checkpoint.
        seq: Seq,
        /// What failed.
        reason: String,
    },
    /// A record carries an older epoch than the one before it.
    #[error("instance {instance}: record {seq} has epoch {epoch} after epoch {previous}")]
    EpochRegression {
        /// Instance.
        instance: String,
        /// Seq.
        seq: Seq,
        /// Its epoch.
        epoch: Epoch,
        /// Epoch of the record before.
        previous: Epoch,
    },
    /// The config does not build a core.
    #[error("instance {instance}: core configuration: {reason}")]
    Config {
        /// Instance.
        instance: String,
        /// Why.
        reason: String,
    },
}

impl ReplayError {
    /// Whether retrying later may help (store down or slow).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ReplayError::Log(LogError::Unavailable(_)) | ReplayError::Log(LogError::Timeout(_))
        )
    }
}

/// An instance's session core, replayed from its log: inputs through
/// `Core::apply` (effects discarded — the active carried them out),
/// checkpoints through `Core::restore`, operator records as no-ops.
/// Continuity ([`in_order`]) and epochs are checked on every record.
pub struct Replayer {
    cfg: CoreConfig,
    core: Core,
    applied: Seq,
    epoch: Epoch,
    records: u64,
    checkpoints: u64,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer")
            .field("instance", &self.cfg.instance)
            .field("applied", &self.applied)
            .field("epoch", &self.epoch)
            .field("records", &self.records)
            .finish()
    }
}

/// Result of [`Replayer::drain`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Drained {
    /// Records applied by this call.
    pub records: u64,
    /// The log's last seq (now applied).
    pub last_seq: Seq,
}

impl Replayer {
    /// An empty core for the active's `cfg` (same config as the active's).
    pub fn new(cfg: CoreConfig) -> Result<Replayer, ReplayError> {
        let core = Core::new(cfg.clone()).map_err(|e| ReplayError::Config {
            instance: cfg.instance.clone(),
            reason: e.to_string(),
        })?;
        Ok(Replayer {
            cfg,
            core,
            applied: 0,
            epoch: 0,
            records: 0,
            checkpoints: 0,
        })
    }

    /// The instance id.
    pub fn instance(&self) -> &str {
        &self.cfg.instance
    }

    /// Seq of the last record applied (0: none).
    pub fn applied(&self) -> Seq {
        self.applied
    }

    /// Epoch of the last record applied.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Records applied since creation.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Checkpoints restored since creation.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints
    }

    /// The replayed core.
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The replayed state (compare with the live core's).
    pub fn state(&self) -> &CoreState {
        self.core.state()
    }

    /// The config.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Take the core to serve with it.
    pub fn into_core(self) -> Core {
        self.core
    }

    /// Apply one record; it must be the next in order (or a checkpoint
    /// past a truncation).
    pub fn apply(&mut self, rec: &Record) -> Result<(), ReplayError> {
        if !in_order(self.applied, rec) {
            return Err(ReplayError::Gap {
                instance: self.cfg.instance.clone(),
                expected: self.applied + 1,
                got: rec.seq,
            });
        }
        if rec.epoch < self.epoch {
            return Err(ReplayError::EpochRegression {
                instance: self.cfg.instance.clone(),
                seq: rec.seq,
                epoch: rec.epoch,
                previous: self.epoch,
            });
        }
        match &rec.body {
            Body::Input(input) => {
                self.core.apply(input);
            }
            Body::Checkpoint(bytes) => {
                let bad = |reason: String| ReplayError::Checkpoint {
                    instance: self.cfg.instance.clone(),
                    seq: rec.seq,
                    reason,
                };
                let state: CoreState = rmp_serde::from_slice(bytes)
                    .map_err(|e| bad(format!("does not decode: {e}")))?;
                self.core = Core::restore(self.cfg.clone(), state)
                    .map_err(|e| bad(format!("does not restore: {e}")))?;
                self.checkpoints += 1;
            }
            Body::Operator(_) => {}
        }
        self.applied = rec.seq;
        self.epoch = rec.epoch;
        self.records += 1;
        Ok(())
    }

    /// Apply a batch in order.
    pub fn apply_all(&mut self, recs: &[Record]) -> Result<(), ReplayError> {
        recs.iter().try_for_each(|r| self.apply(r))
    }

    /// Read and apply one batch from `applied + 1`; returns how many records
    /// were applied (0: caught up). Cancel-safe: nothing changes until the
    /// read has returned.
    pub async fn step(&mut self, store: &dyn LogStore, max: usize) -> Result<usize, ReplayError> {
        let recs = store
            .read(&self.cfg.instance, self.applied + 1, max)
            .await?;
        for r in &recs {
            self.apply(r)?;
        }
        Ok(recs.len())
    }

    /// Apply everything up to the log's end as of this call. After a
    /// `fence`, that end is final: this is the takeover's drain (and the
    /// whole replay in cold mode).
    pub async fn drain(&mut self, store: &dyn LogStore) -> Result<Drained, ReplayError> {
        let last = store.last_seq(&self.cfg.instance).await?;
        let before = self.records;
        while self.applied < last {
            if self.step(store, READ_BATCH).await? == 0 {
                return Err(ReplayError::Gap {
                    instance: self.cfg.instance.clone(),
                    expected: self.applied + 1,
                    got: 0,
                });
            }
        }
        Ok(Drained {
            records: self.records - before,
            last_seq: last,
        })
    }
}

/// Replay `instance`'s whole log into a fresh core for `cfg`.
pub async fn replay_all(client: &LogClient, cfg: &CoreConfig) -> Result<Replayer, ReplayError> {
    let mut replayer = Replayer::new(cfg.clone())?;
    replayer.drain(client.store().as_ref()).await?;
    Ok(replayer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_control::Input;

    fn cfg() -> CoreConfig {
        CoreConfig::example(
            "198.18.1.10".parse().unwrap(),
            "198.18.2.10".parse().unwrap(),
            "198.18.2.20:5060".parse().unwrap(),
        )
    }

    fn timer(seq: Seq, epoch: Epoch) -> Record {
        Record {
            seq,
            epoch,
            body: Body::Input(Input::Timer {
                id: sip_control::TimerId(999),
                at: 1_700_000_000_000,
            }),
        }
    }

    #[test]
    fn gaps_epoch_regressions_and_bad_checkpoints_are_reported_with_their_seq() {
        let mut r = Replayer::new(cfg()).unwrap();
        r.apply(&timer(1, 0)).unwrap();
        assert_eq!(
            r.apply(&timer(3, 0)),
            Err(ReplayError::Gap {
                instance: r.instance().to_string(),
                expected: 2,
                got: 3
            })
        );
        r.apply(&timer(2, 1)).unwrap();
        assert!(matches!(
            r.apply(&timer(3, 0)),
            Err(ReplayError::EpochRegression { seq: 3, .. })
        ));
        let bad = Record {
            seq: 3,
            epoch: 1,
            body: Body::Checkpoint(vec![1, 2, 3]),
        };
        let e = r.apply(&bad).unwrap_err();
        assert!(matches!(e, ReplayError::Checkpoint { seq: 3, .. }), "{e}");
        assert_eq!(r.applied(), 2, "nothing applied past the error");
    }

    #[test]
    fn a_checkpoint_may_follow_a_truncation() {
        let live = Core::new(cfg()).unwrap();
        let cp = Record {
            seq: 50,
            epoch: 0,
            body: Body::Checkpoint(rmp_serde::to_vec(live.state()).unwrap()),
        };
        let mut r = Replayer::new(cfg()).unwrap();
        r.apply(&cp).unwrap();
        assert_eq!(r.applied(), 50);
        assert_eq!(r.checkpoints(), 1);
        r.apply(&timer(51, 0)).unwrap();
    }
}
