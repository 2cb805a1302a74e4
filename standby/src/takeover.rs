//! Taking over one failed active: fence → drain → addresses → serve →
//! announce, timed.
//!
//! [`Prepared`] is built when the standby starts (so a missing capability or
//! interface is reported then, not at the failure): it resolves the
//! interfaces and opens the announcement sockets. [`take_over`] then runs the
//! sequence for one active:
//!
//! 1. **fence** — `LogStore::fence` bumps the instance's epoch; from now on
//!    the old active's appends are refused (it stops at its next append, or
//!    when the standby's heartbeats tell it the new epoch), so the log's end
//!    is final;
//! 2. **drain** — the replica applies every record up to that end (hot: the
//!    few not yet tailed; cold: the whole log from its checkpoint);
//! 3. **addresses** — the service addresses are added to our interfaces
//!    (IPv6 without DAD);
//! 4. **serve** — the caller's callback gets the replayed `Core`, the new
//!    epoch and the next log seq, binds the SIP and media sockets and starts
//!    serving;
//! 5. **announce** — the first round of gratuitous ARP / unsolicited NA goes
//!    out at once; the rest of the [`Schedule`] runs in a background task.
//!
//! Every phase is timed from the failure's detection ([`TakeoverReport`],
//! serializable); the serving code marks the first media packet forwarded
//! and the first SIP message handled through [`Marks`].

use crate::announce::{self, Announcer, BurstReport, Schedule};
use crate::netif::{self, AddrChange, IfAddr};
use crate::replica::{Replica, ReplicaError};
use serde::Serialize;
use sip_control::Core;
use state_log::{Epoch, LogStore, Seq};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{error, info};

/// What the standby claims for one active.
#[derive(Clone, Debug)]
pub struct TakeoverPlan {
    /// The active's instance id.
    pub instance: String,
    /// Its service addresses (access and core side, SIP and media).
    pub addresses: Vec<IfAddr>,
    /// Announcement repeats.
    pub schedule: Schedule,
}

/// A plan with its interfaces resolved and announcement sockets open.
pub struct Prepared {
    plan: TakeoverPlan,
    announcers: Vec<Announcer>,
    /// False: the address step adds nothing (see [`Prepared::local_addresses`]).
    claim: bool,
}

impl Prepared {
    /// Resolve interfaces and open the raw sockets now (in the calling
    /// thread's network namespace). Fails with what to fix.
    pub fn new(plan: TakeoverPlan) -> Result<Prepared, String> {
        state_log::check_instance(&plan.instance).map_err(|e| e.to_string())?;
        if plan.addresses.is_empty() {
            return Err(format!(
                "takeover of {}: no service addresses configured",
                plan.instance
            ));
        }
        let mut ifs: Vec<(String, Vec<IpAddr>)> = Vec::new();
        for a in &plan.addresses {
            match ifs.iter_mut().find(|(n, _)| *n == a.ifname) {
                Some((_, v)) => v.push(a.addr),
                None => ifs.push((a.ifname.clone(), vec![a.addr])),
            }
        }
        let announcers = ifs
            .iter()
            .map(|(n, addrs)| Announcer::new(n, addrs))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("takeover of {}: {e}", plan.instance))?;
        Ok(Prepared {
            plan,
            announcers,
            claim: true,
        })
    }

    /// A plan whose addresses are already local (e.g. 127.0.0.0/8 on `lo`):
    /// the address step adds nothing and nothing is announced, so no
    /// capability is needed (`standby.address_step = "none"`, the
    /// unprivileged demo). The phases are still timed.
    pub fn local_addresses(plan: TakeoverPlan) -> Result<Prepared, String> {
        state_log::check_instance(&plan.instance).map_err(|e| e.to_string())?;
        Ok(Prepared {
            plan,
            announcers: Vec::new(),
            claim: false,
        })
    }

    /// The plan.
    pub fn plan(&self) -> &TakeoverPlan {
        &self.plan
    }
}

/// Timestamps the serving code records after a takeover.
#[derive(Clone, Debug)]
pub struct Marks {
    media: Arc<OnceLock<Instant>>,
    sip: Arc<OnceLock<Instant>>,
}

impl Marks {
    fn new() -> Marks {
        Marks {
            media: Arc::new(OnceLock::new()),
            sip: Arc::new(OnceLock::new()),
        }
    }

    /// Call when a media packet of the taken-over instance is forwarded
    /// (only the first call counts; cheap afterwards).
    pub fn media_forwarded(&self) {
        if self.media.get().is_none() {
            let _ = self.media.set(Instant::now());
        }
    }

    /// Call when a SIP message to the taken-over instance is handled.
    pub fn sip_handled(&self) {
        if self.sip.get().is_none() {
            let _ = self.sip.set(Instant::now());
        }
    }
}

/// What the serve callback receives.
pub struct ServeContext {
    /// The replayed core, current to the log's end.
    pub core: Core,
    /// The instance's new epoch: append under it from now on.
    pub epoch: Epoch,
    /// The next seq to append to the instance's log.
    pub next_seq: Seq,
    /// Marks to record the first media packet / SIP message.
    pub marks: Marks,
}

/// Phase of a takeover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Fencing in the store.
    Fence,
    /// Draining the log.
    Drain,
    /// Adding addresses.
    Addresses,
    /// The serve callback.
    Serve,
}

/// A failed takeover.
#[derive(Debug, thiserror::Error)]
#[error("takeover of {instance} failed at {phase:?}: {message}")]
pub struct TakeoverError {
    /// Instance.
    pub instance: String,
    /// Where it stopped.
    pub phase: Phase,
    /// Why, with what to do.
    pub message: String,
    /// The replica error, if the drain failed.
    pub replica: Option<ReplicaError>,
}

/// Timing breakdown of one takeover, in microseconds since the failure was
/// detected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TakeoverReport {
    /// Instance.
    pub instance: String,
    /// Why it was taken over (the detector's reason, or `manual`).
    pub reason: String,
    /// Wall clock of the detection, ms since the Unix epoch.
    pub detected_unix_ms: u64,
    /// The new epoch.
    pub epoch: Epoch,
    /// Records the drain applied (hot: the tail not yet seen; cold: all).
    pub records_drained: u64,
    /// Last seq applied (the log's end).
    pub applied_seq: Seq,
    /// Sessions in the replica.
    pub sessions: usize,
    /// Registrations in the replica.
    pub registrations: usize,
    /// Addresses added (the rest were already present).
    pub addresses_added: usize,
    /// Fenced.
    pub fenced_us: u64,
    /// Log drained.
    pub drained_us: u64,
    /// Addresses up.
    pub addresses_up_us: u64,
    /// Serve callback returned (sockets bound).
    pub serving_us: u64,
    /// First announcement round sent.
    pub first_announcement_us: u64,
    /// First media packet forwarded (if marked yet).
    pub first_media_us: Option<u64>,
    /// First SIP message handled (if marked yet).
    pub first_sip_us: Option<u64>,
}

/// A completed takeover: what the callback returned, the timing report and
/// the announcement task.
pub struct Takeover<S> {
    /// What the serve callback returned.
    pub serving: S,
    report: TakeoverReport,
    detected_at: Instant,
    marks: Marks,
    announce: tokio::task::JoinHandle<BurstReport>,
}

impl<S> Takeover<S> {
    /// The report, with the first media / SIP marks recorded so far.
    pub fn report(&self) -> TakeoverReport {
        let mut r = self.report.clone();
        let us = |t: &Instant| t.saturating_duration_since(self.detected_at).as_micros() as u64;
        r.first_media_us = self.marks.media.get().map(us);
        r.first_sip_us = self.marks.sip.get().map(us);
        r
    }

    /// The marks (also given to the serve callback).
    pub fn marks(&self) -> &Marks {
        &self.marks
    }

    /// Wait for the announcement schedule to finish.
    pub async fn announcements(self) -> (S, BurstReport) {
        let b = self.announce.await.unwrap_or_default();
        (self.serving, b)
    }
}

fn unix_ms_at(t: Instant) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    now.saturating_sub(t.elapsed()).as_millis() as u64
}

/// Take over `prep`'s instance: see the module doc. `detected_at` is the
/// failure's detection instant (`Failure::detected_at`), `reason` goes into
/// the report. The replica is consumed (its core is handed to `serve`).
pub async fn take_over<S, F, Fut>(
    store: &dyn LogStore,
    mut replica: Replica,
    prep: Prepared,
    detected_at: Instant,
    reason: &str,
    serve: F,
) -> Result<Takeover<S>, TakeoverError>
where
    F: FnOnce(ServeContext) -> Fut,
    Fut: Future<Output = Result<S, String>>,
{
    let instance = prep.plan.instance.clone();
    let fail = |phase: Phase, message: String, replica: Option<ReplicaError>| {
        error!(%instance, ?phase, %message, "takeover failed");
        TakeoverError {
            instance: instance.clone(),
            phase,
            message,
            replica,
        }
    };
    let us = |t: Instant| t.saturating_duration_since(detected_at).as_micros() as u64;
    let mut rep = TakeoverReport {
        instance: instance.clone(),
        reason: reason.to_string(),
        detected_unix_ms: unix_ms_at(detected_at),
        ..Default::default()
    };
    if replica.instance() != instance {
        return Err(fail(
            Phase::Fence,
            format!(
                "the replica is of instance {}, the plan of {instance}",
                replica.instance()
            ),
            None,
        ));
    }

    // 1. Fence.
    let epoch = store.fence(&instance).await.map_err(|e| {
        fail(
            Phase::Fence,
            format!("{e} — the old active is NOT fenced; retry once the store is reachable"),
            None,
        )
    })?;
    rep.epoch = epoch;
    rep.fenced_us = us(Instant::now());

    // 2. Drain.
    let d = replica.drain(store).await.map_err(|e| {
        fail(
            Phase::Drain,
            format!("{e} (the instance is fenced: nobody serves it until this is resolved)"),
            Some(e.clone()),
        )
    })?;
    rep.records_drained = d.records;
    rep.applied_seq = replica.applied();
    rep.sessions = replica.core().session_count();
    rep.registrations = replica.core().registration_count();
    rep.drained_us = us(Instant::now());

    // 3. Addresses (none to add when they are already local).
    for a in prep.plan.addresses.iter().filter(|_| prep.claim) {
        match netif::add_address(a) {
            Ok(AddrChange::Changed) => rep.addresses_added += 1,
            Ok(AddrChange::Unchanged) => {}
            Err(e) => return Err(fail(Phase::Addresses, e.to_string(), None)),
        }
    }
    rep.addresses_up_us = us(Instant::now());

    // 4. Serve.
    let marks = Marks::new();
    let ctx = ServeContext {
        core: replica.into_core(),
        epoch,
        next_seq: d.last_seq + 1,
        marks: marks.clone(),
    };
    let serving = serve(ctx).await.map_err(|e| fail(Phase::Serve, e, None))?;
    rep.serving_us = us(Instant::now());

    // 5. Announce: first round now, the rest in the background.
    let start = Instant::now();
    let mut first = announce::Sent::default();
    for a in &prep.announcers {
        let s = a.send_once();
        first.arp += s.arp;
        first.na += s.na;
        first.errors += s.errors;
    }
    rep.first_announcement_us = us(Instant::now());
    let announcers = prep.announcers;
    let rest = Schedule(
        prep.plan
            .schedule
            .0
            .iter()
            .copied()
            .filter(|o| !o.is_zero())
            .collect(),
    );
    let announce = tokio::spawn(async move {
        let mut b = announce::burst(&announcers, &rest, start, |_| {}).await;
        b.rounds += 1;
        b.sent.arp += first.arp;
        b.sent.na += first.na;
        b.sent.errors += first.errors;
        b
    });
    info!(%instance, epoch, reason, records_drained = rep.records_drained, applied_seq = rep.applied_seq,
        sessions = rep.sessions, fenced_us = rep.fenced_us, drained_us = rep.drained_us,
        addresses_up_us = rep.addresses_up_us, serving_us = rep.serving_us,
        first_announcement_us = rep.first_announcement_us, "takeover complete");
    Ok(Takeover {
        serving,
        report: rep,
        detected_at,
        marks,
        announce,
    })
}

/// Remove service addresses (an active that learnt it was fenced, or a
/// standby handing an instance back). Errors are collected, not fatal.
pub fn release_addresses(addrs: &[IfAddr]) -> Vec<String> {
    let mut errs = Vec::new();
    for a in addrs {
        if let Err(e) = netif::remove_address(a) {
            errs.push(e.to_string());
        }
    }
    errs
}
