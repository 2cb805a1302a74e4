//! Output commit: every input that changed the core's state is appended to
//! the state log, and the SIP messages it produced are released only once
//! its record is durable (docs/ARCHITECTURE.md, "Output commit").
//!
//! The loop side ([`Commit`]) assigns sequence numbers, queues records to ONE
//! appender task (`crate::pipeline`: batches pipelined, several in flight,
//! each record encoded once, retried in order until durable) and holds
//! `Send` effects in a FIFO ([`HeldSends`]) tagged with the seq they wait
//! for. The appender reports its progress through a `watch` channel the
//! loop selects on. The loop never awaits the store.
//!
//! Not owned here: what changes state (the core says so), pinhole operations
//! and timers (executed at once by the loop: media never waits on the log).

use serde::Serialize;
use sip_control::{Input, Transmit};
use state_log::{Body, Epoch, LogStore, OperatorCommand, Record, Seq};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub use crate::store::StatelogSettings;

/// Sends waiting for their record (or an earlier one) to be durable, in the
/// order the core produced them. Tags never decrease.
#[derive(Debug, Default)]
pub struct HeldSends {
    q: VecDeque<(Seq, Transmit)>,
}

impl HeldSends {
    /// Queue `t`, releasable once `seq` is durable.
    pub fn push(&mut self, seq: Seq, t: Transmit) {
        debug_assert!(self.q.back().is_none_or(|(s, _)| *s <= seq));
        self.q.push_back((seq, t));
    }

    /// Pop, in order, every send whose seq is `<= durable`.
    pub fn release(&mut self, durable: Seq) -> Vec<Transmit> {
        let mut out = Vec::new();
        while self.q.front().is_some_and(|(s, _)| *s <= durable) {
            if let Some((_, t)) = self.q.pop_front() {
                out.push(t);
            }
        }
        out
    }

    /// Number held.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Drop everything held; returns how many.
    pub fn clear(&mut self) -> usize {
        let n = self.q.len();
        self.q.clear();
        n
    }
}

/// What the appender reports to the loop (latest value wins).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppenderStatus {
    /// Highest seq known durable.
    pub durable: Seq,
    /// Successful append calls.
    pub appends: u64,
    /// Failed or timed-out append attempts.
    pub failures: u64,
    /// Whether the batch in hand has failed and is being retried.
    pub failing: bool,
    /// Last error message.
    pub last_error: Option<String>,
    /// Set when the store refused our epoch: `(presented, current)`.
    pub fenced: Option<(Epoch, Epoch)>,
    /// Checkpoints written and records truncated.
    pub checkpoints: u64,
    pub truncated: u64,
    /// Seq of the last durable checkpoint, and when (ms since the Unix
    /// epoch) the log was last compacted before it.
    pub last_checkpoint_seq: Seq,
    pub last_compaction_unix_ms: Option<u64>,
}

/// `/v1/stats` `statelog` object.
#[derive(Clone, Debug, Serialize)]
pub struct CommitStats {
    pub backend: &'static str,
    pub epoch: Epoch,
    pub next_seq: Seq,
    pub durable_seq: Seq,
    pub held: usize,
    pub appends: u64,
    pub append_failures: u64,
    pub degraded: bool,
    pub last_error: Option<String>,
    /// Whether the backlog is past half of `max_held` (new calls get 503).
    pub congested: bool,
    /// New INVITEs refused with 503 while degraded or congested.
    pub refused_503: u64,
    /// SIP inputs dropped because `max_held` was reached.
    pub dropped_held_full: u64,
    pub checkpoints: u64,
    pub truncated_records: u64,
    /// Records assigned but not yet durable (`next_seq - 1 - durable_seq`).
    pub lag: u64,
    pub last_checkpoint_seq: Seq,
    pub last_compaction_unix_ms: Option<u64>,
    /// Append call → durable ack, per batch.
    pub append_latency: crate::metrics::HistogramSnapshot,
}

/// Who writes an instance's log under the current epoch. Every writer logs
/// it as the first record of its epoch and again after each checkpoint, so
/// the log from its latest checkpoint on always names its owner — which is
/// how an active that is (re)started learns that a standby took its
/// instance over and must not serve it ([`Commit::start`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// `active` or `standby`.
    pub role: String,
    /// The process: the instance name (active) or the standby's name.
    pub name: String,
    /// Why it owns the log: `start`, or the takeover's reason.
    pub why: String,
}

/// The operator command name of an [`Owner`] record.
pub const OWNER_COMMAND: &str = "owner";

impl Owner {
    pub fn active(instance: &str) -> Owner {
        Owner {
            role: "active".into(),
            name: instance.into(),
            why: "start".into(),
        }
    }

    pub fn standby(name: &str, why: &str) -> Owner {
        Owner {
            role: "standby".into(),
            name: name.into(),
            why: why.into(),
        }
    }

    fn body(&self) -> Body {
        Body::Operator(OperatorCommand::Command {
            name: OWNER_COMMAND.into(),
            args: vec![self.role.clone(), self.name.clone(), self.why.clone()],
        })
    }

    /// The owner a record names, if it is an owner record.
    pub fn of(r: &Record) -> Option<Owner> {
        match &r.body {
            Body::Operator(OperatorCommand::Command { name, args })
                if name == OWNER_COMMAND && args.len() == 3 =>
            {
                Some(Owner {
                    role: args[0].clone(),
                    name: args[1].clone(),
                    why: args[2].clone(),
                })
            }
            _ => None,
        }
    }
}

/// Why `bgf active` must not start.
#[derive(Debug)]
pub enum StartError {
    /// A standby took this instance over: it serves its calls now.
    TakenOver { owner: Owner, epoch: Epoch },
    /// The store could not be used.
    Store(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::TakenOver { owner, epoch } => write!(
                f,
                "this instance was taken over by {} {} ({}, epoch {epoch}), which serves its calls now — not starting: a second process serving it would split the calls between two owners. Start this host as the standby (`bgf standby`) instead; `bgfctl status` shows who serves what",
                owner.role, owner.name, owner.why
            ),
            StartError::Store(e) => f.write_str(e),
        }
    }
}

/// The owner of `instance`'s log under `epoch`: the last owner record at
/// that epoch (the log holds one from its latest checkpoint on).
pub async fn current_owner(
    store: &dyn LogStore,
    instance: &str,
    epoch: Epoch,
    bound: Duration,
) -> Result<Option<Owner>, String> {
    let mut from = 0;
    let mut owner = None;
    loop {
        let batch = tokio::time::timeout(bound, store.read(instance, from, 256))
            .await
            .map_err(|_| format!("reading the log of {instance}: no answer within {bound:?}"))?
            .map_err(|e| format!("reading the log of {instance}: {e}"))?;
        let Some(last) = batch.last() else {
            return Ok(owner);
        };
        from = last.seq + 1;
        for r in &batch {
            if r.epoch == epoch {
                if let Some(o) = Owner::of(r) {
                    owner = Some(o);
                }
            }
        }
    }
}

/// The loop's side of output commit.
pub struct Commit {
    settings: StatelogSettings,
    epoch: Epoch,
    /// Next seq to assign.
    next_seq: Seq,
    /// Seq of the last checkpoint (or the start).
    last_checkpoint: Seq,
    held: HeldSends,
    records: mpsc::UnboundedSender<Record>,
    status: watch::Receiver<AppenderStatus>,
    /// Latest status seen by the loop.
    seen: AppenderStatus,
    degraded: bool,
    pub refused_503: u64,
    pub dropped_held_full: u64,
    latency: Arc<crate::metrics::Histogram>,
    /// Logged after each checkpoint (set by [`Commit::stamp_owner`]).
    owner: Option<Owner>,
}

/// Why the loop must stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fenced {
    pub presented: Epoch,
    pub current: Epoch,
}

impl Commit {
    /// An active's start: refuses when a standby owns the instance's log
    /// (it took the instance over and serves its calls), else claims the
    /// log under a new epoch of its own (fence: any other writer — a zombie
    /// of an earlier run — is refused from now on), logs its ownership and
    /// starts the appender task. `initial` is the core's state to checkpoint
    /// when the log already holds records of an earlier run (so that replay
    /// starts from this core).
    pub async fn start(
        settings: StatelogSettings,
        store: Arc<dyn LogStore>,
        instance: String,
        initial: impl FnOnce() -> Vec<u8>,
    ) -> Result<Commit, StartError> {
        let where_ = settings.backend.location();
        let bound = settings.append_timeout;
        let no_answer = || {
            StartError::Store(format!(
                "state log at {where_} did not answer within {bound:?}"
            ))
        };
        let epoch = tokio::time::timeout(bound, store.epoch(&instance))
            .await
            .map_err(|_| no_answer())?
            .map_err(|e| {
                StartError::Store(format!(
                    "state log at {where_}: reading the epoch failed: {e}"
                ))
            })?;
        let owner = current_owner(&*store, &instance, epoch, bound)
            .await
            .map_err(|e| StartError::Store(format!("state log at {where_}: {e}")))?;
        if let Some(o) = owner.filter(|o| o.role != "active") {
            return Err(StartError::TakenOver { owner: o, epoch });
        }
        tokio::time::timeout(bound, store.fence(&instance))
            .await
            .map_err(|_| no_answer())?
            .map_err(|e| {
                StartError::Store(format!(
                    "state log at {where_}: claiming a new epoch failed: {e}"
                ))
            })?;
        let mut c = Self::open(settings, store, instance.clone(), Some(initial))
            .await
            .map_err(StartError::Store)?;
        c.stamp_owner(Owner::active(&instance));
        Ok(c)
    }

    /// Log `owner` as the owner of this epoch now, and after every
    /// checkpoint from now on.
    pub fn stamp_owner(&mut self, owner: Owner) {
        self.push(owner.body());
        self.owner = Some(owner);
    }

    fn push(&mut self, body: Body) -> Seq {
        let seq = self.next_seq;
        self.next_seq += 1;
        let _ = self.records.send(Record {
            seq,
            epoch: self.epoch,
            body,
        });
        seq
    }

    /// Continue the log of a core that *is* the replay of that log (a
    /// standby's drained replica): no base checkpoint is needed — replaying
    /// the log as it stands rebuilds this very core, and the records this
    /// process appends follow on (next seq, new epoch). The first checkpoint
    /// is the periodic one (`checkpoint_every` records on). Writing one here
    /// would put the serialisation of every session on a takeover's
    /// critical path.
    pub async fn resume(
        settings: StatelogSettings,
        store: Arc<dyn LogStore>,
        instance: String,
    ) -> Result<Commit, String> {
        Self::open(settings, store, instance, None::<fn() -> Vec<u8>>).await
    }

    async fn open(
        settings: StatelogSettings,
        store: Arc<dyn LogStore>,
        instance: String,
        initial: Option<impl FnOnce() -> Vec<u8>>,
    ) -> Result<Commit, String> {
        let where_ = settings.backend.location();
        let bound = settings.append_timeout;
        let epoch = tokio::time::timeout(bound, store.epoch(&instance))
            .await
            .map_err(|_| format!("state log at {where_} did not answer within {bound:?}"))?
            .map_err(|e| format!("state log at {where_}: reading the epoch failed: {e}"))?;
        let last = tokio::time::timeout(bound, store.last_seq(&instance))
            .await
            .map_err(|_| format!("state log at {where_} did not answer within {bound:?}"))?
            .map_err(|e| format!("state log at {where_}: reading the last seq failed: {e}"))?;
        let (rec_tx, rec_rx) = mpsc::unbounded_channel();
        let latency = Arc::new(crate::metrics::Histogram::default());
        let (st_tx, st_rx) = watch::channel(AppenderStatus {
            durable: last,
            ..Default::default()
        });
        tokio::spawn(crate::pipeline::run(
            store,
            instance,
            epoch,
            bound,
            latency.clone(),
            rec_rx,
            st_tx,
            last,
        ));
        let mut c = Commit {
            settings,
            epoch,
            next_seq: last + 1,
            last_checkpoint: last,
            held: HeldSends::default(),
            records: rec_tx,
            status: st_rx,
            seen: AppenderStatus {
                durable: last,
                ..Default::default()
            },
            degraded: false,
            refused_503: 0,
            dropped_held_full: 0,
            latency,
            owner: None,
        };
        if let (true, Some(initial)) = (last > 0, initial) {
            // The log holds an earlier run's records; this core starts
            // empty, so the log restarts from a checkpoint of it.
            c.checkpoint(initial());
        }
        Ok(c)
    }

    /// The store's status channel (the loop selects on `changed()`).
    pub fn status_rx(&mut self) -> &mut watch::Receiver<AppenderStatus> {
        &mut self.status
    }

    /// A receiver of the appender's status (every durable ack), for the
    /// heartbeats' log seq.
    pub fn durable_watch(&self) -> watch::Receiver<AppenderStatus> {
        self.status.clone()
    }

    /// Whether new sessions must be refused.
    pub fn degraded(&self) -> bool {
        self.degraded
    }

    /// Whether the held queue (or the records pending) reached `max_held`.
    pub fn full(&self) -> bool {
        self.backlog() >= self.settings.max_held
    }

    /// Whether the backlog passed half of `max_held`: the store (or this
    /// loop) is not keeping up. New sessions are refused with 503 from here
    /// on, so the room left goes to the calls already admitted — their
    /// ACKs, BYEs and re-INVITEs — instead of every input being dropped once
    /// the queue is full.
    pub fn congested(&self) -> bool {
        self.backlog() >= self.settings.max_held.div_ceil(2)
    }

    /// Held sends or records not yet durable, whichever is larger.
    fn backlog(&self) -> usize {
        let pending = self.next_seq.saturating_sub(1 + self.seen.durable);
        self.held
            .len()
            .max(usize::try_from(pending).unwrap_or(usize::MAX))
    }

    /// Log `input` (it changed state) and return its seq. The caller passes
    /// the core's state for a checkpoint when [`Self::checkpoint_due`].
    pub fn log(&mut self, input: Input) -> Seq {
        self.push(Body::Input(input))
    }

    /// Whether a checkpoint is due after the last logged record.
    pub fn checkpoint_due(&self) -> bool {
        let every = self.settings.checkpoint_every;
        every > 0 && self.next_seq.saturating_sub(1 + self.last_checkpoint) >= every
    }

    /// Append a checkpoint (MessagePack of the core's state after the last
    /// logged record); the appender truncates the log before it once durable.
    pub fn checkpoint(&mut self, state: Vec<u8>) {
        self.last_checkpoint = self.push(Body::Checkpoint(state));
        if let Some(o) = &self.owner {
            let body = o.body();
            self.push(body);
        }
    }

    /// The seq a send of the latest input waits for (the last assigned).
    pub fn latest(&self) -> Seq {
        self.next_seq - 1
    }

    /// Hold `t` until `seq` is durable; returns what may go out now.
    pub fn hold(&mut self, seq: Seq, t: Transmit) -> Vec<Transmit> {
        self.held.push(seq, t);
        self.held.release(self.seen.durable)
    }

    /// Take in the appender's latest status: returns the sends now released
    /// or `Err` when fenced. Logs degraded transitions.
    pub fn on_status(&mut self) -> Result<Vec<Transmit>, Fenced> {
        let st = self.status.borrow_and_update().clone();
        if let Some((presented, current)) = st.fenced {
            let dropped = self.held.clear();
            tracing::error!(
                epoch = presented,
                current,
                dropped_held = dropped,
                "fenced by the store: epoch {presented} is stale (current {current}); another instance has taken over; stopping without releasing held messages"
            );
            return Err(Fenced { presented, current });
        }
        if st.failing && !self.degraded {
            self.degraded = true;
            tracing::error!(
                store = %self.settings.backend.location(),
                backend = self.settings.backend.name(),
                error = st.last_error.as_deref().unwrap_or(""),
                held = self.held.len(),
                "ALARM state log degraded: appends are not durable within {:?}; new calls are refused with 503 and answers of existing calls are held — check the store address, that `bgf statelog` is running (embedded) or that redis is reachable",
                self.settings.append_timeout
            );
        } else if !st.failing && self.degraded && st.durable >= self.seen.durable {
            self.degraded = false;
            tracing::info!(
                store = %self.settings.backend.location(),
                durable = st.durable,
                "state log recovered: appends are durable again; accepting new calls"
            );
        }
        self.seen = st;
        Ok(self.held.release(self.seen.durable))
    }

    /// Counters for `/v1/stats`.
    pub fn stats(&self) -> CommitStats {
        CommitStats {
            backend: self.settings.backend.name(),
            epoch: self.epoch,
            next_seq: self.next_seq,
            durable_seq: self.seen.durable,
            held: self.held.len(),
            appends: self.seen.appends,
            append_failures: self.seen.failures,
            degraded: self.degraded,
            last_error: self.seen.last_error.clone(),
            congested: self.congested(),
            refused_503: self.refused_503,
            dropped_held_full: self.dropped_held_full,
            checkpoints: self.seen.checkpoints,
            truncated_records: self.seen.truncated,
            lag: self.next_seq.saturating_sub(1 + self.seen.durable),
            last_checkpoint_seq: self.seen.last_checkpoint_seq,
            last_compaction_unix_ms: self.seen.last_compaction_unix_ms,
            append_latency: self.latency.snapshot(),
        }
    }

    /// Sends still held (dropped at shutdown).
    pub fn held_len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_control::{Side, Transport};
    use state_log::LogError;

    fn t(n: u8) -> Transmit {
        Transmit {
            side: Side::Access,
            transport: Transport::Udp,
            src: "127.0.0.1:5060".parse().unwrap(),
            dst: "127.0.0.1:5061".parse().unwrap(),
            data: vec![n],
        }
    }

    fn ids(v: Vec<Transmit>) -> Vec<u8> {
        v.into_iter().map(|t| t.data[0]).collect()
    }

    #[test]
    fn held_sends_release_in_order_up_to_durable() {
        let mut h = HeldSends::default();
        h.push(1, t(1));
        h.push(1, t(2));
        h.push(2, t(3));
        h.push(4, t(4));
        assert!(h.release(0).is_empty());
        assert_eq!(ids(h.release(1)), vec![1, 2]);
        assert_eq!(h.len(), 2);
        // 3 is durable but 4 is not: the send tagged 4 stays.
        assert_eq!(ids(h.release(3)), vec![3]);
        assert_eq!(ids(h.release(10)), vec![4]);
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn unchanged_input_waits_behind_pending_record() {
        let mut h = HeldSends::default();
        // Input A changed state (seq 5) and sent; input B changed nothing and
        // is tagged with the latest pending seq (5): it must not overtake A.
        h.push(5, t(1));
        h.push(5, t(2));
        assert!(h.release(4).is_empty());
        assert_eq!(ids(h.release(5)), vec![1, 2]);
        assert_eq!(h.clear(), 0);
    }

    #[derive(Default)]
    struct MemStore {
        log: std::sync::Mutex<Vec<Record>>,
        epoch: std::sync::Mutex<Epoch>,
        /// Fail the next N appends with Unavailable.
        fail: std::sync::atomic::AtomicU32,
    }

    #[async_trait::async_trait]
    impl LogStore for MemStore {
        async fn append(
            &self,
            instance: &str,
            epoch: Epoch,
            records: &[Record],
        ) -> Result<(), LogError> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                self.fail.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                return Err(LogError::Unavailable("down".into()));
            }
            let cur = *self.epoch.lock().unwrap();
            if cur != epoch {
                return Err(LogError::StaleEpoch {
                    instance: instance.into(),
                    presented: epoch,
                    current: cur,
                });
            }
            let mut l = self.log.lock().unwrap();
            let expected = l.last().map_or(1, |r| r.seq + 1);
            if records[0].seq != expected {
                return Err(LogError::Gap {
                    instance: instance.into(),
                    expected,
                    got: records[0].seq,
                });
            }
            l.extend_from_slice(records);
            Ok(())
        }
        async fn read(&self, _: &str, from: Seq, max: usize) -> Result<Vec<Record>, LogError> {
            Ok(self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.seq >= from)
                .take(max)
                .cloned()
                .collect())
        }
        async fn wait_for(&self, _: &str, _: Seq, _: Duration) -> Result<bool, LogError> {
            Ok(false)
        }
        async fn last_seq(&self, _: &str) -> Result<Seq, LogError> {
            Ok(self.log.lock().unwrap().last().map_or(0, |r| r.seq))
        }
        async fn truncate_before(&self, _: &str, before: Seq) -> Result<u64, LogError> {
            let mut l = self.log.lock().unwrap();
            let n = l.len();
            l.retain(|r| r.seq >= before);
            Ok((n - l.len()) as u64)
        }
        async fn fence(&self, _: &str) -> Result<Epoch, LogError> {
            let mut e = self.epoch.lock().unwrap();
            *e += 1;
            Ok(*e)
        }
        async fn epoch(&self, _: &str) -> Result<Epoch, LogError> {
            Ok(*self.epoch.lock().unwrap())
        }
    }

    fn settings() -> StatelogSettings {
        StatelogSettings {
            backend: crate::store::Backend::Embedded {
                addr: "127.0.0.1:1".parse().unwrap(),
            },
            credentials: Default::default(),
            append_timeout: Duration::from_secs(5),
            max_held: 4,
            checkpoint_every: 0,
        }
    }

    fn timer(n: u64) -> Input {
        Input::Timer {
            id: sip_control::TimerId(n),
            at: n,
        }
    }

    async fn next_status(c: &mut Commit) -> Result<Vec<Transmit>, Fenced> {
        c.status_rx().changed().await.unwrap();
        c.on_status()
    }

    /// Start as an active and wait until its owner record is durable.
    async fn started(store: &Arc<MemStore>) -> Commit {
        let mut c = Commit::start(settings(), store.clone(), "bgf1".into(), Vec::new)
            .await
            .unwrap();
        while c.stats().durable_seq < c.latest() {
            next_status(&mut c).await.unwrap();
        }
        c
    }

    #[tokio::test]
    async fn sends_are_released_on_durable_acks_and_retries_keep_order() {
        let store = Arc::new(MemStore::default());
        let mut c = started(&store).await;
        store.fail.store(2, std::sync::atomic::Ordering::SeqCst);
        let s1 = c.log(timer(1));
        assert_eq!(s1, 2, "seq 1 is the owner record");
        assert!(c.hold(s1, t(1)).is_empty(), "released before durable");
        let s2 = c.log(timer(2));
        assert!(c.hold(s2, t(2)).is_empty());
        // Unchanged input: waits behind seq 2.
        assert!(c.hold(c.latest(), t(3)).is_empty());
        let mut out = Vec::new();
        let mut saw_degraded = false;
        while out.len() < 3 {
            out.extend(ids(next_status(&mut c).await.unwrap()));
            saw_degraded |= c.degraded();
        }
        assert!(saw_degraded, "two failed attempts must degrade");
        assert_eq!(out, vec![1, 2, 3]);
        assert!(!c.degraded());
        let log = store.log.lock().unwrap().clone();
        assert_eq!(log.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(Owner::of(&log[0]), Some(Owner::active("bgf1")));
        assert!(c.stats().append_failures >= 2);
    }

    #[tokio::test]
    async fn a_backlog_congests_at_half_and_fills_at_max_held() {
        let store = Arc::new(MemStore::default());
        let mut c = started(&store).await;
        // The store fails every append: nothing becomes durable.
        store
            .fail
            .store(u32::MAX, std::sync::atomic::Ordering::SeqCst);
        assert!(!c.congested() && !c.full());
        let s = c.log(timer(1));
        c.hold(s, t(1));
        assert!(!c.congested(), "1 of 4");
        let s = c.log(timer(2));
        c.hold(s, t(2));
        assert!(c.congested() && !c.full(), "2 of 4: new calls refused");
        assert!(c.stats().congested);
        for i in 3..=4 {
            let s = c.log(timer(i));
            c.hold(s, t(i as u8));
        }
        assert!(c.full(), "4 of 4: input dropped");
    }

    #[tokio::test]
    async fn stale_epoch_fences_and_drops_held() {
        let store = Arc::new(MemStore::default());
        let mut c = started(&store).await;
        assert_eq!(c.stats().epoch, 1, "an active claims an epoch of its own");
        store.fence("bgf1").await.unwrap();
        let s = c.log(timer(1));
        assert!(c.hold(s, t(1)).is_empty());
        let f = loop {
            if let Err(f) = next_status(&mut c).await {
                break f;
            }
        };
        assert_eq!(
            f,
            Fenced {
                presented: 1,
                current: 2
            }
        );
        assert_eq!(c.held_len(), 0);
        assert!(store
            .log
            .lock()
            .unwrap()
            .iter()
            .all(|r| !matches!(r.body, Body::Input(_))));
    }

    #[tokio::test]
    async fn restart_on_existing_log_checkpoints_and_truncates() {
        let store = Arc::new(MemStore::default());
        {
            let mut c = started(&store).await;
            c.log(timer(1));
            c.log(timer(2));
            while c.stats().durable_seq < 3 {
                next_status(&mut c).await.unwrap();
            }
        }
        let mut c = Commit::start(settings(), store.clone(), "bgf1".into(), || vec![7])
            .await
            .unwrap();
        assert_eq!(c.stats().epoch, 2, "a restart claims a new epoch");
        assert_eq!(c.latest(), 5, "checkpoint 4, owner 5");
        while c.stats().checkpoints < 1 || c.stats().durable_seq < 5 {
            next_status(&mut c).await.unwrap();
        }
        let log = store.log.lock().unwrap().clone();
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[0].seq, 4);
        assert_eq!(log[0].body, Body::Checkpoint(vec![7]));
        assert_eq!(Owner::of(&log[1]), Some(Owner::active("bgf1")));
        // The owner follows every checkpoint, so it survives truncation.
        c.checkpoint(vec![8]);
        assert_eq!(c.latest(), 7);
    }

    #[tokio::test]
    async fn an_active_does_not_start_on_a_log_a_standby_took_over() {
        let store = Arc::new(MemStore::default());
        drop(started(&store).await);
        // A standby fences and logs its ownership (a takeover).
        let e = store.fence("bgf1").await.unwrap();
        let owner = Owner::standby("sb1", "missed");
        store
            .append(
                "bgf1",
                e,
                &[Record {
                    seq: 2,
                    epoch: e,
                    body: owner.body(),
                }],
            )
            .await
            .unwrap();
        match Commit::start(settings(), store.clone(), "bgf1".into(), Vec::new).await {
            Err(StartError::TakenOver { owner: o, epoch }) => {
                assert_eq!((o, epoch), (owner, e));
            }
            Err(e) => panic!("wrong refusal: {e}"),
            Ok(_) => panic!("an active started on a log a standby owns"),
        }
        let msg = StartError::TakenOver {
            owner: Owner::standby("sb1", "missed"),
            epoch: 2,
        }
        .to_string();
        assert!(msg.contains("bgf standby") && msg.contains("sb1"), "{msg}");
        assert_eq!(*store.epoch.lock().unwrap(), e, "refusing fences nothing");
        // A standby's ownership of an older epoch does not stop a start.
        store.fence("bgf1").await.unwrap();
        assert!(
            Commit::start(settings(), store.clone(), "bgf1".into(), Vec::new)
                .await
                .is_ok()
        );
    }
}
