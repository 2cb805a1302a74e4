//! A replica of one active's session core, kept current from its log.
//!
//! [`Replica`] (the log's own `state_log::Replayer`) applies records in seq order to a `sip_control::Core` built
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
use sip_control::{PinholeId, PinholeSpec};
pub use state_log::client::{Drained, ReplayError as ReplicaError, Replayer as Replica};
use state_log::{LogStore, Seq};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

pub use state_log::client::READ_BATCH;

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

/// Every pinhole of a replica's sessions (latched remotes included), as of
/// its applied seq: what the active's media plane holds.
pub type PinholeSnapshot = Arc<HashMap<PinholeId, PinholeSpec>>;

/// The pinholes of `core`'s sessions.
pub fn pinhole_snapshot(core: &sip_control::Core) -> HashMap<PinholeId, PinholeSpec> {
    core.sessions()
        .into_iter()
        .flat_map(|s| s.pinholes)
        .map(|p| (p.id, p))
        .collect()
}

/// A replica tailed by a task (hot standby).
pub struct HotReplica {
    status: Arc<Mutex<ReplicaStatus>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Replica>,
    pinholes: watch::Receiver<PinholeSnapshot>,
}

/// How long one `wait_for` waits before the loop checks for stop / lag.
const WAIT: Duration = Duration::from_millis(500);
/// How often the log's end is queried for the lag figure while records flow.
const END_EVERY: Duration = Duration::from_millis(200);
/// At most how often the pinhole snapshot is republished while records flow
/// (a snapshot walks every session).
pub const PINHOLES_EVERY: Duration = Duration::from_millis(150);

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
        let (pin_tx, pinholes) = watch::channel(Arc::new(pinhole_snapshot(replica.core())));
        let task = tokio::spawn(tail(store, replica, status.clone(), stop_rx, pin_tx));
        HotReplica {
            status,
            stop,
            task,
            pinholes,
        }
    }

    /// The replica's pinholes, republished at most every
    /// [`PINHOLES_EVERY`] while records change them (and within that once
    /// the log goes quiet) — for a standby keeping an idle media plane in
    /// step with the active's.
    pub fn pinholes(&self) -> watch::Receiver<PinholeSnapshot> {
        self.pinholes.clone()
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
    pinholes: watch::Sender<PinholeSnapshot>,
) -> Replica {
    let instance = r.instance().to_string();
    // Records applied since the last pinhole snapshot, and when that was.
    let mut dirty = false;
    let mut published = Instant::now();
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
                dirty |= n > 0;
                if dirty && published.elapsed() >= PINHOLES_EVERY {
                    pinholes.send_replace(Arc::new(pinhole_snapshot(r.core())));
                    dirty = false;
                    published = Instant::now();
                }
                if n > 0 && end_at.elapsed() >= END_EVERY {
                    log_end = store.last_seq(&instance).await?;
                    end_at = Instant::now();
                } else if n == 0 {
                    log_end = r.applied().max(log_end);
                    // Wake in time to publish a pending snapshot.
                    let wait = if dirty {
                        PINHOLES_EVERY.saturating_sub(published.elapsed()).max(Duration::from_millis(1))
                    } else {
                        WAIT
                    };
                    store.wait_for(&instance, r.applied(), wait).await?;
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
