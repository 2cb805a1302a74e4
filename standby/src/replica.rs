//! A replica of one active's session core, kept current from its log.
//!
//! [`Replica`] applies records in seq order to a `sip_control::Core` built
//! from the active's config: inputs through `Core::apply` (effects are
//! discarded — the active already carried them out), checkpoints through
//! `Core::restore`, operator records as no-ops. Continuity is checked on every
//! record: the next record must be `applied + 1`, except that a log truncated
//! past our position resumes at a checkpoint. Anything else — a gap, a
//! corrupt frame (the store names the seq), a checkpoint that does not decode
//! or restore, an epoch that goes backwards — is a [`ReplicaError`] naming the
//! instance and seq; nothing is skipped.
//!
//! [`HotReplica`] runs a replica as a task that tails the log (`read` batches,
//! then `wait_for`) and publishes a [`ReplicaStatus`] (applied seq, log end, lag,
//! sessions); [`HotReplica::stop`] hands the replica back at a record
//! boundary for a takeover. Cold mode is the same [`Replica`] created empty
//! and drained only at takeover ([`Replica::drain`]).

use serde::Serialize;
use sip_control::{Core, CoreConfig, CoreState};
use state_log::{Body, Epoch, LogError, LogStore, Record, Seq};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

/// Records per read.
pub const READ_BATCH: usize = 1024;

/// Why a replica cannot advance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
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

impl ReplicaError {
    /// Whether retrying later may help (store down or slow).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ReplicaError::Log(LogError::Unavailable(_)) | ReplicaError::Log(LogError::Timeout(_))
        )
    }
}

/// One active's core, replayed.
pub struct Replica {
    cfg: CoreConfig,
    core: Core,
    applied: Seq,
    epoch: Epoch,
    records: u64,
    checkpoints: u64,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("instance", &self.cfg.instance)
            .field("applied", &self.applied)
            .field("epoch", &self.epoch)
            .field("records", &self.records)
            .finish()
    }
}

/// Result of [`Replica::drain`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Drained {
    /// Records applied by this call.
    pub records: u64,
    /// The log's last seq (now applied).
    pub last_seq: Seq,
}

impl Replica {
    /// An empty core for the active's `cfg` (same config as the active's).
    pub fn new(cfg: CoreConfig) -> Result<Replica, ReplicaError> {
        let core = Core::new(cfg.clone()).map_err(|e| ReplicaError::Config {
            instance: cfg.instance.clone(),
            reason: e.to_string(),
        })?;
        Ok(Replica {
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
    pub fn apply(&mut self, rec: &Record) -> Result<(), ReplicaError> {
        let next = self.applied + 1;
        let resync = rec.seq > next && matches!(rec.body, Body::Checkpoint(_));
        if rec.seq != next && !resync {
            return Err(ReplicaError::Gap {
                instance: self.cfg.instance.clone(),
                expected: next,
                got: rec.seq,
            });
        }
        if rec.epoch < self.epoch {
            return Err(ReplicaError::EpochRegression {
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
                let bad = |reason: String| ReplicaError::Checkpoint {
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

    /// Read and apply one batch from `applied + 1`; returns how many records
    /// were applied (0: caught up). Cancel-safe: nothing changes until the
    /// read has returned.
    pub async fn step(&mut self, store: &dyn LogStore, max: usize) -> Result<usize, ReplicaError> {
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
    pub async fn drain(&mut self, store: &dyn LogStore) -> Result<Drained, ReplicaError> {
        let last = store.last_seq(&self.cfg.instance).await?;
        let before = self.records;
        while self.applied < last {
            if self.step(store, READ_BATCH).await? == 0 {
                return Err(ReplicaError::Gap {
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

/// How a replica is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaMode {
    /// Tailing continuously.
    Hot,
    /// Read only at takeover.
    Cold,
}

/// Tail task state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TailState {
    /// Reading the backlog.
    CatchingUp,
    /// At the log's end, waiting for appends.
    Current,
    /// The store is unreachable or slow; retrying.
    StoreError,
    /// The log is damaged (gap, corrupt record, bad checkpoint); retrying
    /// the same position — a takeover now would fail the same way.
    Broken,
    /// Stopped (handed over to a takeover).
    Stopped,
}

/// What the standby's admin API shows per protected active.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaStatus {
    /// Instance.
    pub instance: String,
    /// Hot or cold.
    pub mode: ReplicaMode,
    /// Tail state.
    pub state: TailState,
    /// Last seq applied.
    pub applied: Seq,
    /// Log's last seq as last seen.
    pub log_end: Seq,
    /// `log_end - applied`.
    pub lag: u64,
    /// Records applied.
    pub records: u64,
    /// Live sessions in the replica.
    pub sessions: usize,
    /// Registrations in the replica.
    pub registrations: usize,
    /// Last error, with its location.
    pub error: Option<String>,
}

/// A replica tailed by a task (hot standby).
pub struct HotReplica {
    status: Arc<Mutex<ReplicaStatus>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Replica>,
}

/// How long one `wait_for` waits before the loop checks for stop / lag.
const WAIT: Duration = Duration::from_millis(500);
/// How often the log's end is queried for the lag figure while records flow.
const END_EVERY: Duration = Duration::from_millis(200);

impl HotReplica {
    /// Start tailing `store` into `replica` on the current runtime.
    pub fn spawn(store: Arc<dyn LogStore>, replica: Replica) -> HotReplica {
        let status = Arc::new(Mutex::new(ReplicaStatus {
            instance: replica.instance().to_string(),
            mode: ReplicaMode::Hot,
            state: TailState::CatchingUp,
            applied: replica.applied(),
            log_end: 0,
            lag: 0,
            records: replica.records(),
            sessions: replica.core().session_count(),
            registrations: replica.core().registration_count(),
            error: None,
        }));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(tail(store, replica, status.clone(), stop_rx));
        HotReplica { status, stop, task }
    }

    /// Current status.
    pub fn status(&self) -> ReplicaStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Wait until the replica has applied `seq` (or `timeout`); returns the
    /// applied seq.
    pub async fn wait_applied(&self, seq: Seq, timeout: Duration) -> Seq {
        let end = Instant::now() + timeout;
        loop {
            let a = self.status().applied;
            if a >= seq || Instant::now() >= end {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stop tailing and hand the replica back (at a record boundary).
    pub async fn stop(self) -> Result<Replica, String> {
        let _ = self.stop.send(true);
        let r = self
            .task
            .await
            .map_err(|e| format!("replica tail task failed: {e}"))?;
        if let Ok(mut s) = self.status.lock() {
            s.state = TailState::Stopped;
        }
        Ok(r)
    }
}

async fn tail(
    store: Arc<dyn LogStore>,
    mut r: Replica,
    status: Arc<Mutex<ReplicaStatus>>,
    mut stop: watch::Receiver<bool>,
) -> Replica {
    let instance = r.instance().to_string();
    let mut log_end: Seq = 0;
    let mut end_at = Instant::now() - END_EVERY;
    let mut backoff = Duration::from_millis(10);
    let mut reported: Option<String> = None;
    info!(%instance, from = r.applied() + 1, "hot replica: tailing the log");
    loop {
        if *stop.borrow() {
            break;
        }
        let res = tokio::select! {
            biased;
            _ = stop.changed() => break,
            res = async {
                let n = r.step(store.as_ref(), READ_BATCH).await?;
                if n > 0 && end_at.elapsed() >= END_EVERY {
                    log_end = store.last_seq(&instance).await?;
                    end_at = Instant::now();
                } else if n == 0 {
                    log_end = r.applied().max(log_end);
                    store.wait_for(&instance, r.applied(), WAIT).await?;
                }
                Ok::<usize, ReplicaError>(n)
            } => res,
        };
        let failed = {
            let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
            s.applied = r.applied();
            s.log_end = log_end.max(r.applied());
            s.lag = s.log_end - s.applied;
            s.records = r.records();
            s.sessions = r.core().session_count();
            s.registrations = r.core().registration_count();
            match res {
                Ok(n) => {
                    backoff = Duration::from_millis(10);
                    s.state = if n == READ_BATCH || s.lag > 0 {
                        TailState::CatchingUp
                    } else {
                        TailState::Current
                    };
                    if reported.take().is_some() {
                        info!(%instance, applied = r.applied(), "hot replica: tailing again");
                        s.error = None;
                    }
                    false
                }
                Err(e) => {
                    s.state = if e.is_transient() {
                        TailState::StoreError
                    } else {
                        TailState::Broken
                    };
                    let msg = e.to_string();
                    if reported.as_deref() != Some(msg.as_str()) {
                        warn!(%instance, applied = r.applied(), error = %msg, "hot replica cannot advance; retrying");
                        reported = Some(msg.clone());
                    }
                    s.error = Some(msg);
                    true
                }
            }
        };
        if failed {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
    r
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
        let mut r = Replica::new(cfg()).unwrap();
        r.apply(&timer(1, 0)).unwrap();
        assert_eq!(
            r.apply(&timer(3, 0)),
            Err(ReplicaError::Gap {
                instance: r.instance().to_string(),
                expected: 2,
                got: 3
            })
        );
        r.apply(&timer(2, 1)).unwrap();
        assert!(matches!(
            r.apply(&timer(3, 0)),
            Err(ReplicaError::EpochRegression { seq: 3, .. })
        ));
        let bad = Record {
            seq: 3,
            epoch: 1,
            body: Body::Checkpoint(vec![1, 2, 3]),
        };
        let e = r.apply(&bad).unwrap_err();
        assert!(matches!(e, ReplicaError::Checkpoint { seq: 3, .. }), "{e}");
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
        let mut r = Replica::new(cfg()).unwrap();
        r.apply(&cp).unwrap();
        assert_eq!(r.applied(), 50);
        assert_eq!(r.checkpoints(), 1);
        r.apply(&timer(51, 0)).unwrap();
    }
}
