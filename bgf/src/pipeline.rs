//! The pipelined appender of output commit: records reach the store in seq
//! order, several batches in flight at once, each record encoded once.
//!
//! [`Pipeline`] decides (sans-IO, time as an input): which records form the
//! next batch and when it may go (at most [`Pipeline::window`] batches in
//! flight, [`WINDOW`]), what an acknowledgement proves (an `Ok` for a batch means the
//! store holds everything up to its last record: appends are contiguous), how
//! a failure is recovered (wait until the batches in flight have resolved,
//! back off, then send again everything not known durable — a `Gap` tells
//! what landed meanwhile), when the log is compacted (after a checkpoint is
//! durable) and when an idle store is probed (so that an outage raises the
//! alarm before the next call would be held). [`run`] is the I/O: it encodes
//! what the loop logs, submits, awaits acks and reports [`AppenderStatus`].
//!
//! Not here: which records exist and what waits on them (`commit.rs`).

use crate::commit::AppenderStatus;
use bytes::Bytes;
use state_log::{Batch, Body, Epoch, LogError, LogStore, Record, Seq};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Batches in flight at most.
pub const WINDOW: usize = 8;
/// Records in one batch at most.
pub const MAX_BATCH: usize = 1024;
/// Backoff between attempts after a failure.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// A record as the store will get it.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub seq: Seq,
    pub frame: Bytes,
    pub checkpoint: bool,
}

impl Encoded {
    /// Encode `r` (once).
    pub fn of(r: &Record) -> Encoded {
        Encoded {
            seq: r.seq,
            frame: r.encode().into(),
            checkpoint: matches!(r.body, Body::Checkpoint(_)),
        }
    }
}

/// What the driver must do.
#[derive(Debug)]
pub enum Effect {
    /// Submit this batch; report its outcome with [`Pipeline::acked`].
    Submit { id: u64, batch: Arc<Batch> },
    /// Truncate the log before this checkpoint; report with
    /// [`Pipeline::truncated`].
    Truncate(Seq),
    /// Ask the store anything (last seq); report with [`Pipeline::probed`].
    Probe,
}

#[derive(Debug)]
struct InFlight {
    id: u64,
    last: Seq,
    generation: u64,
}

/// The appender's decisions.
#[derive(Debug)]
pub struct Pipeline {
    epoch: Epoch,
    window: usize,
    max_batch: usize,
    probe_every: Duration,
    /// Records not known durable, in seq order.
    unacked: VecDeque<Encoded>,
    /// Highest seq submitted in this generation.
    submitted: Seq,
    in_flight: VecDeque<InFlight>,
    next_id: u64,
    /// Bumped by every failure: acks of older generations still prove
    /// durability but no longer drive retries.
    generation: u64,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Checkpoints not yet compacted (durable or not).
    checkpoints: VecDeque<Seq>,
    truncating: bool,
    probing: bool,
    last_activity: Instant,
    st: AppenderStatus,
}

impl Pipeline {
    /// A pipeline writing under `epoch` after `durable` (the log's end).
    pub fn new(epoch: Epoch, durable: Seq, probe_every: Duration, now: Instant) -> Pipeline {
        Pipeline {
            epoch,
            window: WINDOW,
            max_batch: MAX_BATCH,
            probe_every,
            unacked: VecDeque::new(),
            submitted: durable,
            in_flight: VecDeque::new(),
            next_id: 1,
            generation: 0,
            retry_at: None,
            backoff: BACKOFF_MIN,
            checkpoints: VecDeque::new(),
            truncating: false,
            probing: false,
            last_activity: now,
            st: AppenderStatus {
                durable,
                ..Default::default()
            },
        }
    }

    /// With another window and batch size.
    #[cfg(test)]
    pub fn with_limits(mut self, window: usize, max_batch: usize) -> Pipeline {
        self.window = window.max(1);
        self.max_batch = max_batch.max(1);
        self
    }

    /// What to report.
    pub fn status(&self) -> &AppenderStatus {
        &self.st
    }

    /// Whether the store fenced us (nothing more will be submitted).
    pub fn fenced(&self) -> bool {
        self.st.fenced.is_some()
    }

    /// A record the loop logged (seqs come in order).
    pub fn push(&mut self, e: Encoded, now: Instant) {
        if e.checkpoint {
            self.checkpoints.push_back(e.seq);
        }
        self.unacked.push_back(e);
        self.last_activity = now;
    }

    fn advance(&mut self, to: Seq) {
        if to <= self.st.durable {
            return;
        }
        self.st.durable = to;
        while self.unacked.front().is_some_and(|e| e.seq <= to) {
            self.unacked.pop_front();
        }
        self.submitted = self.submitted.max(to);
        if let Some(cp) = self.checkpoints.iter().rev().find(|c| **c <= to).copied() {
            if cp > self.st.last_checkpoint_seq {
                self.st.checkpoints += self.checkpoints.iter().filter(|c| **c <= to).count() as u64;
                self.st.last_checkpoint_seq = cp;
            }
        }
    }

    fn fail(&mut self, e: &LogError, now: Instant) {
        self.st.failures += 1;
        self.st.failing = true;
        self.st.last_error = Some(e.to_string());
        self.generation += 1;
        self.submitted = self.st.durable;
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// The outcome of batch `id`.
    pub fn acked(&mut self, id: u64, res: Result<(), LogError>, now: Instant) {
        let Some(k) = self.in_flight.iter().position(|b| b.id == id) else {
            return;
        };
        let Some(b) = self.in_flight.remove(k) else {
            return;
        };
        self.last_activity = now;
        let current = b.generation == self.generation;
        match res {
            Ok(()) => {
                self.advance(b.last);
                self.st.appends += 1;
                if current {
                    self.st.failing = false;
                    self.backoff = BACKOFF_MIN;
                }
            }
            Err(LogError::StaleEpoch {
                presented, current, ..
            }) => {
                self.st.fenced = Some((presented, current));
            }
            Err(LogError::Gap { expected, .. }) => {
                // The store holds everything below `expected`: what an
                // earlier attempt landed (never more than we assigned).
                let landed = expected.saturating_sub(1);
                let assigned = self.unacked.back().map_or(self.st.durable, |e| e.seq);
                if landed > self.st.durable && landed <= assigned {
                    self.advance(landed);
                    self.st.appends += 1;
                }
                if current && landed < b.last {
                    let e = LogError::Gap {
                        instance: String::new(),
                        expected,
                        got: self.submitted,
                    };
                    self.fail(&e, now);
                } else if current {
                    self.st.failing = false;
                }
            }
            Err(e) => {
                if current {
                    self.fail(&e, now);
                }
            }
        }
    }

    /// The outcome of the truncation asked for.
    pub fn truncated(&mut self, res: Result<u64, LogError>, unix_ms: u64) {
        self.truncating = false;
        if let Ok(n) = res {
            self.st.truncated += n;
            self.st.last_compaction_unix_ms = Some(unix_ms);
        }
        // A failure is retried at the next checkpoint.
    }

    /// The outcome of a probe.
    pub fn probed(&mut self, res: Result<(), LogError>, now: Instant) {
        self.probing = false;
        self.last_activity = now;
        match res {
            Ok(()) if self.in_flight.is_empty() && self.unacked.is_empty() => {
                self.st.failing = false;
            }
            Ok(()) => {}
            Err(e) => {
                if !self.st.failing || self.st.last_error.as_deref() != Some(&e.to_string()) {
                    self.st.failing = true;
                    self.st.failures += 1;
                    self.st.last_error = Some(e.to_string());
                }
            }
        }
    }

    /// What to do now.
    pub fn poll(&mut self, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.fenced() {
            return out;
        }
        // Compaction: the latest durable checkpoint not yet compacted.
        if !self.truncating {
            if let Some(cp) = self
                .checkpoints
                .iter()
                .rev()
                .find(|c| **c <= self.st.durable)
                .copied()
            {
                self.checkpoints.retain(|c| *c > cp);
                self.truncating = true;
                out.push(Effect::Truncate(cp));
            }
        }
        let waiting = self.retry_at.is_some_and(|t| now < t);
        // After a failure, let the old generation resolve before sending
        // again (what it landed shows up as Gaps or Oks).
        let draining = self
            .in_flight
            .iter()
            .any(|b| b.generation != self.generation);
        if !waiting && !draining {
            self.retry_at = None;
            while self.in_flight.len() < self.window {
                let start = self.unacked.iter().position(|e| e.seq > self.submitted);
                let Some(start) = start else { break };
                let frames: Vec<&Encoded> = self
                    .unacked
                    .iter()
                    .skip(start)
                    .take(self.max_batch)
                    .collect();
                let first = frames[0].seq;
                let last = frames[frames.len() - 1].seq;
                let cp = frames.iter().rev().find(|e| e.checkpoint).map(|e| e.seq);
                let batch = Batch::from_encoded(
                    self.epoch,
                    first,
                    frames.iter().map(|e| e.frame.clone()).collect(),
                    cp,
                );
                let id = self.next_id;
                self.next_id += 1;
                self.submitted = last;
                self.in_flight.push_back(InFlight {
                    id,
                    last,
                    generation: self.generation,
                });
                out.push(Effect::Submit {
                    id,
                    batch: Arc::new(batch),
                });
            }
        }
        if self.unacked.is_empty()
            && self.in_flight.is_empty()
            && !self.probing
            && now.duration_since(self.last_activity) >= self.probe_every
        {
            self.probing = true;
            out.push(Effect::Probe);
        }
        out
    }

    /// When [`Self::poll`] may have something new without another input.
    pub fn next_wake(&self) -> Option<Instant> {
        match self.retry_at {
            Some(t) => Some(t),
            None if self.unacked.is_empty() && self.in_flight.is_empty() && !self.probing => {
                Some(self.last_activity + self.probe_every)
            }
            None => None,
        }
    }
}

type Pending = std::pin::Pin<
    Box<dyn std::future::Future<Output = (u64, Result<(), LogError>, Instant)> + Send>,
>;

/// Drive a [`Pipeline`]: take records from `rx` (encoding each once),
/// submit, await acks (each bounded by `bound`), truncate and probe;
/// report every change on `tx`. Returns when `rx` closes or the store
/// fenced us.
#[allow(clippy::too_many_arguments)] // one task's inputs, passed once at spawn
pub async fn run(
    store: Arc<dyn LogStore>,
    instance: String,
    epoch: Epoch,
    bound: Duration,
    latency: Arc<crate::metrics::Histogram>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Record>,
    tx: tokio::sync::watch::Sender<AppenderStatus>,
    durable: Seq,
) {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let probe = bound.clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut p = Pipeline::new(epoch, durable, probe, Instant::now());
    let mut acks: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut truncation: Option<tokio::task::JoinHandle<Result<u64, LogError>>> = None;
    let mut probing: Option<tokio::task::JoinHandle<Result<(), LogError>>> = None;
    let mut open = true;
    loop {
        for eff in p.poll(Instant::now()) {
            match eff {
                Effect::Submit { id, batch } => {
                    let t0 = Instant::now();
                    let sub = tokio::time::timeout(bound, store.submit(&instance, batch)).await;
                    let fut: Pending = match sub {
                        Ok(Ok(ack)) => Box::pin(async move {
                            let r = match tokio::time::timeout(bound, ack).await {
                                Ok(r) => r,
                                Err(_) => Err(LogError::Timeout(bound)),
                            };
                            (id, r, t0)
                        }),
                        Ok(Err(e)) => Box::pin(std::future::ready((id, Err(e), t0))),
                        Err(_) => {
                            Box::pin(std::future::ready((id, Err(LogError::Timeout(bound)), t0)))
                        }
                    };
                    acks.push(fut);
                }
                Effect::Truncate(cp) => {
                    let (s, i) = (store.clone(), instance.clone());
                    truncation = Some(tokio::spawn(async move {
                        match tokio::time::timeout(bound, s.truncate_before(&i, cp)).await {
                            Ok(r) => r,
                            Err(_) => Err(LogError::Timeout(bound)),
                        }
                    }));
                }
                Effect::Probe => {
                    let (s, i) = (store.clone(), instance.clone());
                    probing = Some(tokio::spawn(async move {
                        match tokio::time::timeout(bound, s.last_seq(&i)).await {
                            Ok(r) => r.map(|_| ()),
                            Err(_) => Err(LogError::Timeout(bound)),
                        }
                    }));
                }
            }
        }
        tx.send_if_modified(|cur| {
            let changed = cur != p.status();
            if changed {
                *cur = p.status().clone();
            }
            changed
        });
        if p.fenced() || (!open && acks.is_empty()) {
            return;
        }
        let wake = p.next_wake().map(tokio::time::Instant::from_std);
        tokio::select! {
            r = rx.recv(), if open => match r {
                Some(rec) => {
                    let now = Instant::now();
                    p.push(Encoded::of(&rec), now);
                    while let Ok(rec) = rx.try_recv() {
                        p.push(Encoded::of(&rec), now);
                    }
                }
                None => open = false,
            },
            Some((id, res, t0)) = acks.next(), if !acks.is_empty() => {
                if res.is_ok() {
                    latency.observe(t0.elapsed());
                } else if let Err(e) = &res {
                    tracing::debug!(error = %e, batch = id, "append failed; the records are sent again");
                }
                p.acked(id, res, Instant::now());
            }
            r = async { truncation.as_mut().expect("guarded").await }, if truncation.is_some() => {
                truncation = None;
                let r = r.unwrap_or_else(|e| Err(LogError::Unavailable(format!("truncation task: {e}"))));
                match &r {
                    Ok(n) => tracing::debug!(removed = n, "log truncated"),
                    Err(e) => tracing::warn!(error = %e, "log truncation failed; retried at the next checkpoint"),
                }
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                p.truncated(r, ms);
            }
            r = async { probing.as_mut().expect("guarded").await }, if probing.is_some() => {
                probing = None;
                let r = r.unwrap_or_else(|e| Err(LogError::Unavailable(format!("probe task: {e}"))));
                p.probed(r, Instant::now());
            }
            _ = async { tokio::time::sleep_until(wake.expect("guarded")).await }, if wake.is_some() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: Seq) -> Encoded {
        Encoded {
            seq,
            frame: Bytes::from(vec![seq as u8]),
            checkpoint: false,
        }
    }

    fn submits(e: &[Effect]) -> Vec<(u64, Seq, Seq)> {
        e.iter()
            .filter_map(|e| match e {
                Effect::Submit { id, batch } => Some((*id, batch.first(), batch.last())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn several_batches_fly_at_once_and_acks_advance_durability() {
        let t = Instant::now();
        let mut p = Pipeline::new(1, 0, Duration::from_secs(1), t).with_limits(3, 2);
        for s in 1..=9 {
            p.push(rec(s), t);
        }
        let s = submits(&p.poll(t));
        assert_eq!(
            s,
            vec![(1, 1, 2), (2, 3, 4), (3, 5, 6)],
            "window 3, batches of 2"
        );
        assert!(submits(&p.poll(t)).is_empty(), "window full");
        // Out of order acks: batch 2 first proves 1..4 durable.
        p.acked(2, Ok(()), t);
        assert_eq!(p.status().durable, 4);
        p.acked(1, Ok(()), t);
        assert_eq!(p.status().durable, 4);
        let s = submits(&p.poll(t));
        assert_eq!(s, vec![(4, 7, 8), (5, 9, 9)]);
        p.acked(3, Ok(()), t);
        p.acked(4, Ok(()), t);
        p.acked(5, Ok(()), t);
        assert_eq!(p.status().durable, 9);
        assert_eq!(p.status().appends, 5);
    }

    #[test]
    fn a_failure_waits_for_the_flight_backs_off_and_resends_what_is_not_durable() {
        let t = Instant::now();
        let mut p = Pipeline::new(1, 10, Duration::from_secs(1), t).with_limits(3, 2);
        for s in 11..=16 {
            p.push(rec(s), t);
        }
        assert_eq!(submits(&p.poll(t)).len(), 3);
        p.acked(1, Err(LogError::Timeout(Duration::from_secs(1))), t);
        assert!(p.status().failing);
        // The others of the old generation are still out: nothing new.
        assert!(submits(&p.poll(t + Duration::from_secs(1))).is_empty());
        // Batch 1 did land after all: batch 2 succeeds, 3 fails.
        p.acked(2, Ok(()), t);
        assert_eq!(p.status().durable, 14);
        p.acked(3, Err(LogError::Unavailable("x".into())), t);
        // Backoff: not before retry_at.
        let wake = p.next_wake().unwrap();
        assert!(wake > t);
        assert!(submits(&p.poll(t)).is_empty());
        let s = submits(&p.poll(wake));
        assert_eq!(s, vec![(4, 15, 16)], "only what is not durable");
        p.acked(4, Ok(()), wake);
        assert!(!p.status().failing);
        assert_eq!(p.status().durable, 16);
    }

    #[test]
    fn a_gap_after_a_lost_ack_proves_what_landed() {
        let t = Instant::now();
        let mut p = Pipeline::new(1, 0, Duration::from_secs(1), t).with_limits(1, 4);
        for s in 1..=6 {
            p.push(rec(s), t);
        }
        assert_eq!(submits(&p.poll(t)), vec![(1, 1, 4)]);
        p.acked(1, Err(LogError::Timeout(Duration::from_secs(1))), t);
        let w = p.next_wake().unwrap();
        assert_eq!(submits(&p.poll(w)), vec![(2, 1, 4)]);
        // It had landed: the store expects 5.
        p.acked(
            2,
            Err(LogError::Gap {
                instance: "x".into(),
                expected: 5,
                got: 1,
            }),
            w,
        );
        assert_eq!(p.status().durable, 4);
        assert!(!p.status().failing);
        assert_eq!(submits(&p.poll(w)), vec![(3, 5, 6)]);
        // A gap beyond what we assigned proves nothing (someone else wrote).
        p.acked(
            3,
            Err(LogError::Gap {
                instance: "x".into(),
                expected: 99,
                got: 5,
            }),
            w,
        );
        assert_eq!(p.status().durable, 4);
    }

    #[test]
    fn fenced_stops_everything() {
        let t = Instant::now();
        let mut p = Pipeline::new(1, 0, Duration::from_secs(1), t);
        p.push(rec(1), t);
        p.push(rec(2), t);
        let s = submits(&p.poll(t));
        p.acked(
            s[0].0,
            Err(LogError::StaleEpoch {
                instance: "x".into(),
                presented: 1,
                current: 2,
            }),
            t,
        );
        assert!(p.fenced());
        p.push(rec(3), t);
        assert!(p.poll(t).is_empty());
    }

    #[test]
    fn checkpoints_compact_once_durable_and_idle_stores_are_probed() {
        let t = Instant::now();
        let mut p = Pipeline::new(1, 0, Duration::from_millis(100), t);
        p.push(rec(1), t);
        p.push(
            Encoded {
                checkpoint: true,
                ..rec(2)
            },
            t,
        );
        let e = p.poll(t);
        assert!(!e.iter().any(|e| matches!(e, Effect::Truncate(_))));
        p.acked(1, Ok(()), t);
        assert_eq!(p.status().last_checkpoint_seq, 2);
        assert_eq!(p.status().checkpoints, 1);
        let e = p.poll(t);
        assert!(matches!(e[..], [Effect::Truncate(2)]), "{e:?}");
        p.truncated(Ok(1), 7);
        assert_eq!(p.status().truncated, 1);
        // Idle: a probe after probe_every, failing while it fails.
        assert!(p.poll(t).is_empty());
        let later = t + Duration::from_millis(150);
        assert!(matches!(p.poll(later)[..], [Effect::Probe]));
        p.probed(Err(LogError::Timeout(Duration::from_secs(1))), later);
        assert!(p.status().failing);
        let again = later + Duration::from_millis(150);
        assert!(matches!(p.poll(again)[..], [Effect::Probe]));
        p.probed(Ok(()), again);
        assert!(!p.status().failing);
    }

    /// Seeded simulation: a store that applies batches in order with
    /// contiguity, fails some submissions at random (before or after
    /// applying: a lost ack), and acks in random order. Whatever happens,
    /// durability never runs ahead of the store and everything ends durable
    /// exactly once, in order.
    #[test]
    fn seeded_faults_lose_nothing_and_claim_nothing_early() {
        for seed in 1..=200u64 {
            let mut rng = seed;
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let t0 = Instant::now();
            let mut now = t0;
            let mut p = Pipeline::new(1, 0, Duration::from_secs(3600), t0)
                .with_limits(1 + (seed % 5) as usize, 1 + (seed % 7) as usize);
            let mut store: Vec<Seq> = Vec::new();
            let mut pending: Vec<(u64, Result<(), LogError>)> = Vec::new();
            let total = 60;
            let mut pushed = 0;
            for _ in 0..10_000 {
                if pushed < total && next() % 3 == 0 {
                    pushed += 1;
                    p.push(rec(pushed), now);
                }
                for e in p.poll(now) {
                    if let Effect::Submit { id, batch } = e {
                        let land = next() % 5 != 0;
                        let ok_ack = next() % 6 != 0;
                        let expected = store.len() as u64 + 1;
                        let res = if batch.first() != expected {
                            Err(LogError::Gap {
                                instance: "s".into(),
                                expected,
                                got: batch.first(),
                            })
                        } else if land {
                            store.extend(batch.first()..=batch.last());
                            if ok_ack {
                                Ok(())
                            } else {
                                Err(LogError::Timeout(Duration::from_secs(1)))
                            }
                        } else {
                            Err(LogError::Unavailable("down".into()))
                        };
                        pending.push((id, res));
                    }
                }
                if !pending.is_empty() && next() % 2 == 0 {
                    let k = (next() as usize) % pending.len();
                    let (id, res) = pending.swap_remove(k);
                    p.acked(id, res, now);
                }
                assert!(
                    p.status().durable <= store.len() as u64,
                    "seed {seed}: durable {} ahead of the store {}",
                    p.status().durable,
                    store.len()
                );
                now += Duration::from_millis(5);
                if pushed == total && p.status().durable == total {
                    break;
                }
            }
            assert_eq!(p.status().durable, total, "seed {seed}: not all durable");
            assert_eq!(store, (1..=total).collect::<Vec<_>>(), "seed {seed}");
        }
    }
}
