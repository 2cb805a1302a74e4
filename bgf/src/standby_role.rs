//! `bgf standby --config FILE`: one standby protecting N actives.
//!
//! Per protected active k (from the standby file's `[[standby.protect]]`):
//! a heartbeat [`Detector`] on the standby's management address (its own
//! thread, so a busy loop cannot delay detection), a hot replica tailing k's
//! log (or, in cold mode, nothing until a failure), an idle media plane
//! (hot: holding k's pinholes, kept in step by `presync`), and a
//! [`Prepared`] takeover plan (interfaces resolved, announcement sockets
//! open at start).
//!
//! When k fails: stop its replica (cold: read the whole log), and run the
//! `standby` crate's sequence — fence k in the store, drain the log, add k's
//! service addresses, **serve** (this file: bind k's SIP sockets, bring the
//! media plane to every session's pinholes with their latched addresses —
//! hot, only the drained tail's delta —, re-arm the core's timers, continue
//! output commit to k's log under the new epoch, and run the same core loop
//! as `bgf active`), then
//! announce. The timing breakdown is logged and shown on `/v1/standby`.
//!
//! After a takeover this process serves k and the cluster has no standby: a
//! second failure raises an alarm (log and admin) and is not taken over.
//!
//! Not here: detection, replay, fencing and announcement mechanics (the
//! `standby` crate), the core loop (`runtime`), the active's end (`ha`).

use crate::commit::{Commit, Owner};
use crate::config::{self, AddressStep, Config, LogFormat, StandbyConfig, StandbyMode};
use crate::ha;
use crate::presync::{self, Budget, Presync};
use crate::runtime::{self, Channels, CoreLoop, LoopEnd, MediaOps, Query, TimerQueue};
use crate::transport::{self, now_ms, Counters, Transports};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use media_plane::{MediaPlane, PinholeId, PinholeOp};
use serde::Serialize;
use serde_json::json;
use sip_control::Side;
use standby::announce::Schedule;
use standby::heartbeat::{LinkStatus, PeerState};
use standby::{
    take_over, Detector, HeartbeatEvent, HeartbeatRuntime, HotReplica, IfAddr, Link, LinkConfig,
    Marks, Prepared, Replica, ReplicaMode, ReplicaStatus, ServeContext, Takeover, TakeoverPlan,
    TakeoverReport,
};
use state_log::{Epoch, LogError, LogStore, Record, Seq};
use std::future::{poll_fn, Future};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn, Instrument};

/// Queue sizes as in `bgf active`.
const INPUT_QUEUE: usize = 8192;
const MEDIA_QUEUE: usize = 8192;
/// Pause between fence attempts while the store is unreachable.
const FENCE_RETRY: Duration = Duration::from_millis(100);
/// How long the first-media / first-SIP marks are watched after a takeover.
const MARK_WATCH: Duration = Duration::from_secs(120);

/// Entry point of `bgf standby`.
pub fn main(path: &Path, log_format: Option<LogFormat>, log_level: Option<String>) -> ExitCode {
    let (cfg, rt) = match crate::process::start_role(
        path,
        log_format,
        log_level,
        "standby configuration",
        config::load_standby,
        |c: &config::StandbyConfig| (c.log_format, c.log_level.clone()),
    ) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let span = tracing::info_span!("bgf_standby", standby = %cfg.name);
    let result = rt.block_on(run(cfg).instrument(span.clone()));
    rt.shutdown_timeout(Duration::from_secs(2));
    let _enter = span.enter();
    match result {
        Ok(()) => {
            info!("shutdown complete");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Where one protected active stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum GuardState {
    /// Watched, replica kept (hot) — would be taken over.
    Protected,
    /// Failed and taken over: this process serves it.
    Serving,
    /// Failed while no standby was left: nobody serves it.
    FailedUnprotected,
    /// The takeover failed (see alarms).
    TakeoverFailed,
}

/// One protected active.
struct Guard {
    instance: String,
    config: Config,
    store: Arc<dyn LogStore>,
    detector: Link,
    prepared: Option<Prepared>,
    hot: Option<HotReplica>,
    /// A media plane started idle at standby start, so that a takeover does
    /// not pay its start-up (threads) — taken by the takeover.
    media: Option<Premedia>,
    state: GuardState,
}

/// An idle media plane with its event channel and counters; while hot, its
/// pinholes follow the replica's (`presync`).
struct Premedia {
    plane: Arc<MediaPlane>,
    events: mpsc::Receiver<media_plane::MediaEvent>,
    counters: Arc<Counters>,
    /// Set when the takeover serves: until then the plane's events (the
    /// idle pre-installed pinholes go "inactive") are dropped — the
    /// replica's core is fed from the log only.
    live: Arc<OnceLock<Instant>>,
    /// Keeps the plane in step with the hot replica (None: cold, or the
    /// active's addresses are local here).
    presync: Option<Presync>,
}

/// After going live, inactivity reports are dropped for this long: the
/// scanner may have measured the pre-installed pinholes' idleness just
/// before their activity was reset.
const INACTIVE_GRACE: Duration = Duration::from_secs(2);

impl Premedia {
    fn start(cfg: &Config) -> Result<Premedia, String> {
        crate::admission::reserve_for_tcp(cfg.guard.tcp_max_connections);
        let counters = Arc::new(Counters::default());
        let (tx, events) = mpsc::channel(MEDIA_QUEUE);
        let live: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
        let sink = runtime::media_event_sink(tx, counters.clone());
        let gate = live.clone();
        // Kernel, XDP or DPDK; an XDP plane relays nothing and a DPDK plane
        // answers no ARP/ND until it announces.
        let plane = crate::media::start_plane(&cfg.media, 0, false, move |ev| match gate.get() {
            None => {}
            Some(t)
                if matches!(ev, media_plane::MediaEvent::Inactive { .. })
                    && t.elapsed() < INACTIVE_GRACE => {}
            Some(_) => sink(ev),
        })?;
        Ok(Premedia {
            plane: Arc::new(plane),
            events,
            counters,
            live,
            presync: None,
        })
    }

    /// Follow `replica`'s pinholes, unless the active's service addresses
    /// are local here (then its own sockets hold the ports).
    fn start_presync(
        &mut self,
        instance: &str,
        cfg: &Config,
        replica: &HotReplica,
        budget: &Arc<Budget>,
    ) {
        let local: Vec<String> = ha::service_ips(&cfg.core)
            .into_iter()
            .filter(|(_, a)| presync::is_local(*a) != Some(false))
            .map(|(_, a)| a.to_string())
            .collect();
        if !local.is_empty() {
            info!(%instance, ?local, "service addresses already local: pinholes are installed at takeover, not ahead of it");
            return;
        }
        self.plane.set_freebind(true);
        self.presync = Some(Presync::spawn(
            instance.to_string(),
            self.plane.clone(),
            replica.pinholes(),
            budget.clone(),
        ));
    }

    async fn shutdown(mut self) {
        if let Some(p) = self.presync.take() {
            p.stop().await;
        }
        if let Ok(p) = Arc::try_unwrap(self.plane) {
            let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
        }
    }
}

/// `/v1/standby` body.
#[derive(Clone, Debug, Serialize)]
struct StandbyView {
    name: String,
    /// `standby` while protecting, `taking_over` during a takeover (e.g.
    /// while it waits for the store to fence), `serving` after one.
    role: &'static str,
    mode: ReplicaMode,
    /// Whether this cluster still has a standby (false once this one serves).
    standby_available: bool,
    /// The instance this process serves, if any.
    serving: Option<String>,
    protected: Vec<GuardView>,
    /// The last takeover's timing breakdown (µs since detection).
    last_takeover: Option<TakeoverReport>,
    alarms: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
struct GuardView {
    instance: String,
    state: GuardState,
    heartbeat: LinkStatus,
    replica: Option<ReplicaStatus>,
}

/// A question from the admin server to the main loop.
enum AdminReq {
    Standby(oneshot::Sender<StandbyView>),
    /// `POST /v1/standby/switchover`: take `instance` over now.
    Switchover {
        instance: String,
        reply: oneshot::Sender<Result<TakeoverReport, SwitchoverRefused>>,
    },
    /// Forwarded to the serving core loop (None if not serving).
    Core(Query),
}

/// What serving a taken-over instance consists of.
struct Serving {
    instance: String,
    core_task: JoinHandle<LoopEnd>,
    readers: Vec<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    queries: mpsc::Sender<Query>,
}

async fn run(cfg: StandbyConfig) -> Result<(), String> {
    let hb = HeartbeatRuntime::start("bgf-heartbeat")
        .map_err(|e| format!("cannot start the heartbeat thread: {e}"))?;
    let schedule = Schedule(cfg.announce.clone());
    // Pinholes pre-installed in the idle planes, all protected actives
    // together, stay within the descriptors (the media plane's start raises
    // the limit; this reads it after the first start).
    let mut budget: Option<Arc<Budget>> = None;
    let mut guards = Vec::new();
    for p in &cfg.protects {
        let c = p.config.clone();
        let instance = c.core.instance.clone();
        let (Some(sl), Some(h)) = (&c.statelog, &c.ha) else {
            return Err(format!(
                "{}: [statelog] and [ha] are required",
                p.path.display()
            ));
        };
        let store = crate::store::connect(&sl.with_credentials(&cfg.credentials)).await?;
        let plan = TakeoverPlan {
            instance: instance.clone(),
            addresses: ha::service_ips(&c.core)
                .into_iter()
                // DPDK: the data plane owns the media addresses (not the kernel).
                .filter(|(_, a)| !crate::media::data_plane_ips(&c.media).contains(a))
                .map(|(side, addr)| IfAddr {
                    ifname: match side {
                        Side::Access => cfg.access_interface.clone(),
                        Side::Core => cfg.core_interface.clone(),
                    },
                    addr,
                    prefix_len: if addr.is_ipv4() { 32 } else { 128 },
                })
                .collect(),
            schedule: schedule.clone(),
        };
        let prepared = match cfg.address_step {
            AddressStep::Netlink => Prepared::new(plan).map_err(|e| {
                format!("{e} — the standby needs CAP_NET_ADMIN and CAP_NET_RAW and the interfaces of standby.access_interface / core_interface (or standby.address_step = \"none\" where the addresses are already local, e.g. on lo)")
            })?,
            AddressStep::None => Prepared::local_addresses(plan)?,
        };
        let epoch = store
            .epoch(&instance)
            .await
            .map_err(|e| format!("state log of {instance}: reading the epoch failed: {e}"))?;
        let mut lc = LinkConfig::standby(&instance, c.secret.expose(), h.standby, h.heartbeat);
        lc.interval = h.interval;
        lc.miss_count = h.miss_count;
        let detector = Detector::spawn(hb.handle(), lc, epoch)
            .map_err(|e| format!("{e} (ha.standby of {})", p.path.display()))?;
        let hot = match cfg.mode {
            StandbyMode::Hot => {
                let r = Replica::new(c.core.clone())
                    .map_err(|e| format!("core config of {instance}: {e}"))?;
                Some(HotReplica::spawn(store.clone(), r))
            }
            StandbyMode::Cold => None,
        };
        info!(%instance, epoch, active = %h.heartbeat, listen = %h.standby,
            interval_ms = h.interval.as_millis() as u64, miss_count = h.miss_count,
            addresses = ?ha::service_ips(&c.core).iter().map(|(_, a)| a.to_string()).collect::<Vec<_>>(),
            "protecting active");
        let mut media = Premedia::start(&c)?;
        let budget = budget
            .get_or_insert_with(|| Budget::new(crate::admission::pinhole_capacity(&media.plane)))
            .clone();
        if let Some(h) = &hot {
            media.start_presync(&instance, &c, h, &budget);
        }
        let media = Some(media);
        guards.push(Guard {
            instance,
            config: c,
            store,
            detector,
            prepared: Some(prepared),
            hot,
            media,
            state: GuardState::Protected,
        });
    }

    let (admin_tx, mut admin_rx) = mpsc::channel::<AdminReq>(64);
    let (stop_admin, stop_admin_rx) = watch::channel(false);
    let admin_task = match &cfg.admin {
        Some(a) => {
            let l = crate::admin::bind(a.listen).await?;
            let stores = guards
                .iter()
                .map(|g| (g.instance.clone(), g.store.clone()))
                .collect();
            let app = admin_router(&cfg.name, &a.token, admin_tx.clone(), stores);
            let mut stop = stop_admin_rx.clone();
            Some(tokio::spawn(
                crate::admin::serve_router(l, app, async move {
                    let _ = stop.changed().await;
                })
                .in_current_span(),
            ))
        }
        None => None,
    };
    info!(
        version = env!("CARGO_PKG_VERSION"),
        "bgf standby started: {}",
        cfg.summary()
    );

    let mut signals = tokio::spawn(crate::process::wait_for_signal());
    let mut takeover: Option<Takeover<Serving>> = None;
    let mut final_logged = false;
    let mut alarms: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failure = None;
    loop {
        let serving_task = takeover.as_mut().map(|t| &mut t.serving.core_task);
        tokio::select! {
            sig = &mut signals => {
                match sig {
                    Ok(Ok(name)) => info!(signal = name, "shutting down"),
                    Ok(Err(e)) => failure = Some(e),
                    Err(e) => failure = Some(format!("signal handler task failed: {e}")),
                }
                break;
            }
            r = async { match serving_task { Some(t) => t.await, None => std::future::pending().await } } => {
                let inst = takeover.as_ref().map(|t| t.serving.instance.clone()).unwrap_or_default();
                match r {
                    Ok(end) => {
                        if let Some(f) = &end.fenced {
                            error!(instance = %inst, presented = f.presented, current = f.current,
                                "the store fenced this standby's epoch for {inst}: another instance took it over; stopping (restart this process as a standby)");
                            // Like a fenced active: the addresses we claimed
                            // are the new owner's now.
                            if cfg.address_step == AddressStep::Netlink {
                                if let Some(g) = guards.iter().find(|g| g.instance == inst) {
                                    ha::release_service_addresses(&g.config);
                                }
                            }
                        } else {
                            error!(instance = %inst, "core loop of {inst} stopped unexpectedly");
                        }
                        let m = end.media;
                        let _ = tokio::task::spawn_blocking(move || m.shutdown()).await;
                        if let Some(t) = takeover.take() {
                            let _ = t.serving.shutdown.send(true);
                        }
                        return Err(format!("serving {inst} stopped"));
                    }
                    Err(e) => return Err(format!("core loop of {inst} failed: {e} — this is a bug")),
                }
            }
            (k, ev) = next_event(&mut guards) => {
                on_event(&cfg, &mut guards, k, ev, &mut takeover, &mut alarms, &mut admin_rx).await;
                final_logged = takeover.is_none();
            }
            Some(req) = admin_rx.recv() => {
                match req {
                    AdminReq::Standby(reply) => {
                        let _ = reply.send(view(&cfg, &guards, takeover.as_ref(), &alarms));
                    }
                    AdminReq::Core(q) => {
                        if let Some(t) = &takeover {
                            let _ = t.serving.queries.try_send(q);
                        }
                    }
                    AdminReq::Switchover { instance, reply } => {
                        let r = switchover(&cfg, &mut guards, &instance, &mut takeover, &mut alarms, &mut admin_rx).await;
                        final_logged = takeover.is_none();
                        let _ = reply.send(r);
                    }
                }
            }
            _ = tick.tick(), if !final_logged => {
                if let Some(t) = &takeover {
                    let r = t.report();
                    let done = r.first_media_us.is_some() && r.first_sip_us.is_some();
                    if done || detected_ago(&r) > Duration::from_secs(30) {
                        log_report(&r, "takeover report");
                        final_logged = true;
                    }
                }
            }
        }
    }

    // Shutdown.
    let _ = stop_admin.send(true);
    for g in guards.iter_mut() {
        if let Some(h) = g.hot.take() {
            let _ = h.stop().await;
        }
        if let Some(m) = g.media.take() {
            m.shutdown().await;
        }
    }
    if let Some(t) = takeover.take() {
        let s = t.serving;
        let _ = s.shutdown.send(true);
        for r in s.readers {
            let _ = r.await;
        }
        match s.core_task.await {
            Ok(end) => {
                let m = end.media;
                let _ = tokio::task::spawn_blocking(move || m.shutdown()).await;
            }
            Err(e) => warn!(error = %e, "core loop failed at shutdown"),
        }
    }
    if let Some(t) = admin_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    drop(hb);
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn detected_ago(r: &TakeoverReport) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Duration::from_millis(now.saturating_sub(r.detected_unix_ms))
}

fn log_report(r: &TakeoverReport, what: &str) {
    info!(
        instance = %r.instance,
        reason = %r.reason,
        epoch = r.epoch,
        records_drained = r.records_drained,
        applied_seq = r.applied_seq,
        sessions = r.sessions,
        registrations = r.registrations,
        addresses_added = r.addresses_added,
        fenced_us = r.fenced_us,
        drained_us = r.drained_us,
        addresses_up_us = r.addresses_up_us,
        serving_us = r.serving_us,
        first_announcement_us = r.first_announcement_us,
        first_media_us = r.first_media_us,
        first_sip_us = r.first_sip_us,
        report = %serde_json::to_string(r).unwrap_or_default(),
        "{what}: {} taken over (µs since detection: fenced {}, drained {}, addresses {}, serving {}, announced {}, first media {}, first SIP {})",
        r.instance, r.fenced_us, r.drained_us, r.addresses_up_us, r.serving_us, r.first_announcement_us,
        r.first_media_us.map_or("-".into(), |v| v.to_string()),
        r.first_sip_us.map_or("-".into(), |v| v.to_string()),
    );
}

/// The next event of any detector: `(guard index, event)`.
async fn next_event(guards: &mut [Guard]) -> (usize, HeartbeatEvent) {
    poll_fn(|cx| {
        for (k, g) in guards.iter_mut().enumerate() {
            // The receiver's waker stays registered when the future is
            // dropped (tokio mpsc), so polling a fresh one per round is fine.
            let fut = g.detector.next_event();
            tokio::pin!(fut);
            if let Poll::Ready(Some(ev)) = fut.poll(cx) {
                return Poll::Ready((k, ev));
            }
        }
        Poll::Pending
    })
    .await
}

fn view(
    cfg: &StandbyConfig,
    guards: &[Guard],
    takeover: Option<&Takeover<Serving>>,
    alarms: &[String],
) -> StandbyView {
    StandbyView {
        name: cfg.name.clone(),
        role: if takeover.is_some() {
            "serving"
        } else {
            "standby"
        },
        mode: match cfg.mode {
            StandbyMode::Hot => ReplicaMode::Hot,
            StandbyMode::Cold => ReplicaMode::Cold,
        },
        standby_available: takeover.is_none(),
        serving: takeover.map(|t| t.serving.instance.clone()),
        protected: guards
            .iter()
            .map(|g| GuardView {
                instance: g.instance.clone(),
                state: g.state.clone(),
                heartbeat: g.detector.status(),
                replica: g.hot.as_ref().map(|h| h.status()),
            })
            .collect(),
        last_takeover: takeover.map(|t| t.report()),
        alarms: alarms.to_vec(),
    }
}

async fn on_event(
    cfg: &StandbyConfig,
    guards: &mut [Guard],
    k: usize,
    ev: HeartbeatEvent,
    takeover: &mut Option<Takeover<Serving>>,
    alarms: &mut Vec<String>,
    admin_rx: &mut mpsc::Receiver<AdminReq>,
) {
    let instance = guards[k].instance.clone();
    match ev {
        HeartbeatEvent::PeerUp {
            incarnation,
            epoch,
            returned,
        } => {
            if guards[k].state == GuardState::Serving {
                warn!(%instance, incarnation, epoch, "the fenced active {instance} is back on the heartbeat link; it is being told its epoch is stale and must stop (exit 3)");
            } else if returned {
                info!(%instance, incarnation, epoch, "active {instance} heard again");
            } else {
                info!(%instance, incarnation, epoch, "active {instance} heard: protected");
            }
        }
        HeartbeatEvent::PeerStale {
            peer_epoch,
            store_epoch,
        } => {
            warn!(%instance, peer_epoch, store_epoch, "active {instance} still presents a stale epoch; our heartbeats tell it it was fenced");
        }
        HeartbeatEvent::Fenced { .. } => {}
        HeartbeatEvent::PeerFailed(f) => {
            if guards[k].state != GuardState::Protected {
                return;
            }
            if let Some(t) = takeover.as_ref() {
                let msg = format!(
                    "ALARM active {instance} failed ({:?}) but the cluster has NO standby: this standby already serves {} — the calls of {instance} are lost; restart {instance} (`bgf active --config {}`) and start a new `bgf standby` to restore N+1 protection",
                    f.reason,
                    t.serving.instance,
                    cfg.protects
                        .get(k)
                        .map(|p| p.path.display().to_string())
                        .unwrap_or_default()
                );
                error!(%instance, reason = ?f.reason, "{msg}");
                alarms.push(msg);
                guards[k].state = GuardState::FailedUnprotected;
                return;
            }
            let reason = match f.reason {
                standby::FailureReason::Missed => "missed",
                standby::FailureReason::PortUnreachable => "port_unreachable",
                standby::FailureReason::NeverHeard => "never_heard",
            };
            warn!(%instance, reason, peer_log_seq = f.peer_log_seq, "active {instance} failed: taking over");
            let _ = take_over_guard(
                cfg,
                guards,
                k,
                f.detected_at,
                reason,
                takeover,
                alarms,
                admin_rx,
            )
            .await;
        }
    }
}

/// Takes over `guards[k]` (a detected failure, or a planned switchover with
/// `detected_at` = the request): on success this process serves it and the
/// other replicas stop; the report, or why it failed (also alarmed).
#[allow(clippy::too_many_arguments)]
async fn take_over_guard(
    cfg: &StandbyConfig,
    guards: &mut [Guard],
    k: usize,
    detected_at: Instant,
    reason: &str,
    takeover: &mut Option<Takeover<Serving>>,
    alarms: &mut Vec<String>,
    admin_rx: &mut mpsc::Receiver<AdminReq>,
) -> Result<TakeoverReport, String> {
    let instance = guards[k].instance.clone();
    // The admin API keeps answering while the takeover runs (it may
    // wait up to standby.fence_timeout_ms for the store).
    let mut during = view(cfg, guards, None, alarms);
    during.role = "taking_over";
    let waiting: Waiting = Arc::new(Mutex::new(None));
    let result = {
        let fut = do_takeover(
            &mut guards[k],
            detected_at,
            Owner::standby(&cfg.name, reason),
            cfg.fence_timeout,
            waiting.clone(),
        );
        tokio::pin!(fut);
        loop {
            tokio::select! {
                r = &mut fut => break r,
                Some(req) = admin_rx.recv() => {
                    match req {
                        AdminReq::Standby(reply) => {
                            let mut v = during.clone();
                            if let Some(a) = waiting.lock().ok().and_then(|w| w.clone()) {
                                v.alarms.push(a);
                            }
                            let _ = reply.send(v);
                        }
                        AdminReq::Switchover { reply, .. } => {
                            let _ = reply.send(Err(SwitchoverRefused::Busy(format!("a takeover of {instance} is in progress"))));
                        }
                        // Core queries: nothing serves yet (503).
                        AdminReq::Core(_) => {}
                    }
                }
            }
        }
    };
    match result {
        Ok(t) => {
            let report = t.report();
            guards[k].detector.set_epoch(report.epoch);
            guards[k].state = GuardState::Serving;
            // Nobody else can be taken over now: stop the other replicas.
            for (j, g) in guards.iter_mut().enumerate() {
                if j != k {
                    if let Some(h) = g.hot.take() {
                        let _ = h.stop().await;
                    }
                    if let Some(m) = g.media.take() {
                        m.shutdown().await;
                    }
                }
            }
            log_report(&report, "takeover complete");
            error!(%instance, "ALARM this standby now serves {instance}; the cluster has NO standby — a further active failure cannot be taken over: start a new `bgf standby` (and restart {instance} as a standby) to restore N+1 protection");
            alarms.push(format!(
                "no standby: this standby serves {instance} since its takeover; start a new standby to restore N+1 protection"
            ));
            *takeover = Some(t);
            Ok(report)
        }
        Err(e) => {
            let msg = format!("ALARM takeover of {instance} failed: {e}");
            error!(%instance, "{msg}");
            alarms.push(msg.clone());
            guards[k].state = GuardState::TakeoverFailed;
            Err(msg)
        }
    }
}

/// Why a switchover request was refused (the HTTP status follows).
#[derive(Debug)]
enum SwitchoverRefused {
    /// Not an instance this standby protects (404).
    Unknown(String),
    /// Not now: already serving, a takeover running, the active not
    /// protected (409).
    Busy(String),
    /// Tried and failed (500; alarmed).
    Failed(String),
}

/// A planned switchover of `instance`: the same takeover as after a
/// failure, started now (no detection delay). The old active learns from
/// our heartbeats (or its next append, refused) that it was fenced, drops
/// its addresses and exits 3.
async fn switchover(
    cfg: &StandbyConfig,
    guards: &mut [Guard],
    instance: &str,
    takeover: &mut Option<Takeover<Serving>>,
    alarms: &mut Vec<String>,
    admin_rx: &mut mpsc::Receiver<AdminReq>,
) -> Result<TakeoverReport, SwitchoverRefused> {
    let Some(k) = guards.iter().position(|g| g.instance == instance) else {
        return Err(SwitchoverRefused::Unknown(format!(
            "this standby does not protect {instance:?} (it protects {})",
            guards
                .iter()
                .map(|g| g.instance.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    if let Some(t) = takeover.as_ref() {
        return Err(SwitchoverRefused::Busy(format!(
            "this standby already serves {} — it has nothing left to take over {instance} with; start a new standby first",
            t.serving.instance
        )));
    }
    let g = &guards[k];
    if g.state != GuardState::Protected {
        return Err(SwitchoverRefused::Busy(format!(
            "{instance} is {:?} here, not protected",
            g.state
        )));
    }
    let hb = g.detector.status();
    if hb.state != PeerState::Alive {
        return Err(SwitchoverRefused::Busy(format!(
            "{instance}'s heartbeats are {:?}: a switchover moves a running active; for a failed one the standby takes over by itself",
            hb.state
        )));
    }
    if let Some(e) = g.hot.as_ref().and_then(|h| h.status().error) {
        return Err(SwitchoverRefused::Busy(format!(
            "the replica of {instance} is broken ({e}): a switchover would lose state — fix the replica (restart this standby) first"
        )));
    }
    warn!(%instance, "planned switchover of {instance} requested: taking over now");
    take_over_guard(
        cfg,
        guards,
        k,
        Instant::now(),
        "switchover",
        takeover,
        alarms,
        admin_rx,
    )
    .await
    .map_err(SwitchoverRefused::Failed)
}

async fn do_takeover(
    g: &mut Guard,
    detected_at: Instant,
    owner: Owner,
    fence_timeout: Duration,
    waiting: Waiting,
) -> Result<Takeover<Serving>, String> {
    let reason = owner.why.clone();
    let replica = match g.hot.take() {
        Some(h) => h.stop().await?,
        None => Replica::new(g.config.core.clone()).map_err(|e| e.to_string())?,
    };
    let prepared = g
        .prepared
        .take()
        .ok_or("already taken over once (no takeover plan left)")?;
    let store = g.store.clone();
    let cfg = g.config.clone();
    let mut media = g.media.take();
    // Pre-installing stops where the replica stopped; serve applies the
    // drained tail's delta.
    let mut installed = presync::Installed::new();
    if let Some(p) = media.as_mut().and_then(|m| m.presync.take()) {
        installed = p.stop().await;
    }
    let patient = PatientFence {
        inner: g.store.clone(),
        bound: fence_timeout,
        before: g.detector.status().epoch,
        waiting,
    };
    // DPDK: the data plane announces the media addresses itself.
    let data_plane = media
        .as_ref()
        .map(|m| (m.plane.clone(), prepared.plan().schedule.0.clone()));
    let r = take_over(&patient, replica, prepared, detected_at, &reason, |ctx| {
        serve(ctx, cfg, store, media, installed, owner)
    })
    .await
    .map_err(|e| e.to_string());
    if let (Ok(_), Some((plane, schedule))) = (&r, data_plane) {
        crate::media::announce(&g.instance, &plane, &schedule);
    }
    r
}

/// The alarm shown while a takeover waits for the store.
type Waiting = Arc<Mutex<Option<String>>>;

/// The store as a takeover sees it: `fence` waits up to `bound` for an
/// unreachable store (the failed active may be alive behind a cut cable, so
/// no address is claimed without a fence), then fails with what happened.
/// Everything else goes straight to the store.
///
/// A fence whose answer was lost may still have landed: before fencing again
/// the epoch is read (harmless if that request lands late), and an epoch
/// above the one before the takeover means our fence took effect.
struct PatientFence {
    inner: Arc<dyn LogStore>,
    bound: Duration,
    /// The instance's epoch before this takeover.
    before: Epoch,
    waiting: Waiting,
}

impl PatientFence {
    fn alarm(&self, instance: &str, since: Instant, err: &LogError) {
        let msg = format!(
            "ALARM takeover of {instance} waits for the state log: cannot fence {instance} ({err}) — NO address is claimed without a fence (the old active may still be alive); waiting {} ms of standby.fence_timeout_ms {} — check the store and the standby's path to it",
            since.elapsed().as_millis(),
            self.bound.as_millis()
        );
        let first = self
            .waiting
            .lock()
            .map(|mut w| w.replace(msg.clone()).is_none())
            .unwrap_or(false);
        if first {
            error!(%instance, error = %err, "{msg}");
        }
    }
}

#[async_trait::async_trait]
impl LogStore for PatientFence {
    async fn append(&self, i: &str, e: Epoch, r: &[Record]) -> Result<(), LogError> {
        self.inner.append(i, e, r).await
    }
    async fn read(&self, i: &str, from: Seq, max: usize) -> Result<Vec<Record>, LogError> {
        self.inner.read(i, from, max).await
    }
    async fn wait_for(&self, i: &str, after: Seq, t: Duration) -> Result<bool, LogError> {
        self.inner.wait_for(i, after, t).await
    }
    async fn last_seq(&self, i: &str) -> Result<Seq, LogError> {
        self.inner.last_seq(i).await
    }
    async fn truncate_before(&self, i: &str, before: Seq) -> Result<u64, LogError> {
        self.inner.truncate_before(i, before).await
    }
    async fn epoch(&self, i: &str) -> Result<Epoch, LogError> {
        self.inner.epoch(i).await
    }
    async fn fence(&self, instance: &str) -> Result<Epoch, LogError> {
        let start = Instant::now();
        // Whether a fence went out whose outcome we do not know.
        let mut unknown = false;
        let mut before = self.before;
        let mut last = LogError::Unavailable("not tried".into());
        loop {
            let left = self.bound.saturating_sub(start.elapsed());
            if left.is_zero() {
                let msg = format!(
                    "the state log did not fence {instance} within standby.fence_timeout_ms {} ms (last error: {last}) — NO address was claimed, nobody serves {instance}'s calls: the old active may still be alive behind a cut link. Once the store is reachable, check whether {instance} still runs; if not, restart this standby so that it protects the others again",
                    self.bound.as_millis()
                );
                return Err(LogError::Unavailable(msg));
            }
            let step = async {
                let now = self.inner.epoch(instance).await?;
                if unknown && now > before {
                    return Ok(now);
                }
                before = now;
                unknown = true;
                self.inner.fence(instance).await
            };
            match tokio::time::timeout(left, step).await {
                Ok(Ok(e)) => {
                    let was_waiting = self.waiting.lock().ok().and_then(|mut w| w.take());
                    if was_waiting.is_some() {
                        info!(%instance, epoch = e, waited_ms = start.elapsed().as_millis() as u64,
                            "the state log is reachable again: {instance} fenced, the takeover goes on");
                    }
                    return Ok(e);
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = LogError::Timeout(left),
            }
            self.alarm(instance, start, &last);
            tokio::time::sleep(FENCE_RETRY.min(self.bound.saturating_sub(start.elapsed()))).await;
        }
    }
}

/// `MediaOps` over a shared `MediaPlane`, so that the mark watcher can read
/// its counters while the core loop owns it.
struct SharedMedia(Arc<MediaPlane>);

impl MediaOps for SharedMedia {
    fn apply(&self, op: &PinholeOp) -> Result<(), String> {
        self.0.apply(op).map_err(|e| e.to_string())
    }
    fn counters(&self) -> serde_json::Value {
        crate::media::counters_json(&self.0)
    }
    fn pinhole_counters(&self, id: PinholeId) -> Option<serde_json::Value> {
        self.0
            .pinhole_counters(id)
            .and_then(|c| serde_json::to_value(c).ok())
    }
    fn pinhole_count(&self) -> usize {
        self.0.pinhole_count()
    }
    fn refuses_session(&self) -> Option<crate::admission::Full> {
        crate::admission::check(&self.0)
    }
    fn shutdown(self: Box<Self>) {
        match Arc::try_unwrap(self.0) {
            Ok(p) => p.shutdown(),
            // The watcher holds only a Weak; another strong ref would be a bug.
            Err(_) => {
                warn!("media plane still shared at shutdown; its threads stop with the process")
            }
        }
    }
}

/// The serve step of a takeover: the same runtime as `bgf active`, resumed
/// from the replayed core.
async fn serve(
    ctx: ServeContext,
    cfg: Config,
    store: Arc<dyn LogStore>,
    media: Option<Premedia>,
    installed: presync::Installed,
    owner: Owner,
) -> Result<Serving, String> {
    let ServeContext {
        core,
        epoch,
        next_seq,
        marks,
    } = ctx;
    let t0 = Instant::now();
    let instance = cfg.core.instance.clone();
    let span = tracing::info_span!("bgf", instance = %instance);
    let sl = cfg.statelog.clone().ok_or("no [statelog]")?;
    // Bind k's SIP sockets (its addresses are ours now).
    let access = transport::bind_side(Side::Access, cfg.core.access.sip).await?;
    let core_side = transport::bind_side(Side::Core, cfg.core.core.sip).await?;
    let t_bind = t0.elapsed();
    // Output commit continues k's log under the new epoch. The core is the
    // replay of that log up to its end, so no base checkpoint is written
    // (see `Commit::resume`): the next periodic one follows.
    let mut commit = Commit::resume(sl, store, instance.clone()).await?;
    let st = commit.stats();
    if st.next_seq != next_seq {
        return Err(format!(
            "the log of {instance} ends at seq {} but the replica drained it to {} — it changed after the fence; not serving from a core that is not the log's replay",
            st.next_seq.saturating_sub(1),
            next_seq.saturating_sub(1)
        ));
    }
    if st.epoch != epoch {
        return Err(format!(
            "the store's epoch for {instance} is {} but the takeover fenced at {epoch} — another standby is taking over too",
            st.epoch
        ));
    }
    // The log's first record under our epoch says who owns it now: an
    // active (re)started for this instance reads it and does not serve.
    commit.stamp_owner(owner);
    let t_commit = t0.elapsed();
    // Media: every session's pinholes (latched remotes included) go in
    // before the first announcement — most were pre-installed while hot;
    // this applies the delta (the drained tail; cold: everything).
    let Premedia {
        plane,
        events: media_rx,
        counters,
        live,
        presync: _,
    } = match media {
        Some(m) => m,
        None => Premedia::start(&cfg)?,
    };
    let t_plane = t0.elapsed();
    let want = standby::replica::pinhole_snapshot(&core);
    let pre_installed = installed.len();
    let mut installed = installed;
    let delta = presync::apply_diff(&plane, &want, &mut installed, None, None);
    if delta.failed > 0 {
        warn!(%instance, failed = delta.failed, error = delta.last_error.as_deref().unwrap_or(""),
            "pinholes not installed at takeover; those streams are not relayed");
    }
    // The pre-installed pinholes were idle by construction: their
    // inactivity timeout starts now, and the plane's events reach the core.
    plane.reset_activity();
    // XDP: the idle map's pinholes start relaying (before the addresses
    // are announced, so the first packets are relayed, not passed).
    if let Err(e) = plane.serve() {
        warn!(%instance, error = %e, "the XDP plane cannot start relaying; media of the taken-over calls is not relayed");
    }
    let _ = live.set(Instant::now());
    let t_media = t0.elapsed();
    let mut timers = TimerQueue::default();
    let pending = ha::pending_timers(&core, now_ms());
    for (id, at) in &pending {
        timers.set(*id, *at);
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (in_tx, in_rx) = mpsc::channel(INPUT_QUEUE);
    let (query_tx, query_rx) = mpsc::channel(64);
    let (transports, readers) = Transports::start_with(
        access,
        core_side,
        counters.clone(),
        in_tx,
        cfg.core.max_message_bytes,
        shutdown_rx.clone(),
        span.clone(),
        (&cfg.guard).into(),
    );
    let sessions = core.session_count();
    let mut core_loop = CoreLoop::resume(
        core,
        Box::new(SharedMedia(plane.clone())),
        transports,
        counters.clone(),
        timers,
        Some(commit),
    );
    core_loop.guard = crate::guard::Guard::new(cfg.guard.clone());
    let core_task = tokio::spawn(
        core_loop
            .run(Channels {
                inputs: in_rx,
                media_events: media_rx,
                queries: query_rx,
                shutdown: shutdown_rx.clone(),
            })
            .instrument(span.clone()),
    );
    tokio::spawn(watch_marks(
        marks,
        counters,
        Arc::downgrade(&plane),
        shutdown_rx,
    ));
    drop(plane);
    info!(%instance, epoch, next_seq, log_next_seq = st.next_seq, sessions, pinholes = installed.len(), pre_installed,
        delta_added = delta.added, delta_updated = delta.updated, delta_removed = delta.removed,
        timers = pending.len(), bind_us = t_bind.as_micros() as u64, commit_us = t_commit.as_micros() as u64,
        plane_us = t_plane.as_micros() as u64,
        media_us = t_media.as_micros() as u64, total_us = t0.elapsed().as_micros() as u64, access_sip = %cfg.core.access.sip, core_sip = %cfg.core.core.sip,
        "serving {instance}: sockets bound, pinholes installed, timers re-armed, output commit under epoch {epoch}");
    Ok(Serving {
        instance,
        core_task,
        readers,
        shutdown: shutdown_tx,
        queries: query_tx,
    })
}

/// Marks the first SIP message received and the first media packet
/// forwarded after the takeover (1 ms resolution, bounded in time).
async fn watch_marks(
    marks: Marks,
    counters: Arc<Counters>,
    plane: Weak<MediaPlane>,
    shutdown: watch::Receiver<bool>,
) {
    let end = Instant::now() + MARK_WATCH;
    let sip_now = |c: &Counters| {
        let s = c.snapshot();
        s.udp_rx + s.tcp_rx
    };
    let media_now = |p: &Weak<MediaPlane>| p.upgrade().map(|p| p.counters().forwarded_packets);
    let (sip0, media0) = (sip_now(&counters), media_now(&plane).unwrap_or(0));
    let (mut sip_done, mut media_done) = (false, false);
    while Instant::now() < end && !*shutdown.borrow() && !(sip_done && media_done) {
        if !sip_done && sip_now(&counters) > sip0 {
            marks.sip_handled();
            sip_done = true;
        }
        if !media_done {
            match media_now(&plane) {
                Some(n) if n > media0 => {
                    marks.media_forwarded();
                    media_done = true;
                }
                Some(_) => {}
                None => return,
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// ------------------------------------------------------------------ admin
//
// The shared admin parts (`crate::admin`: token check, core routes, log
// routes) plus what only the standby answers: `/health` with its role,
// `/v1/standby` and its `/metrics`.

struct AdminSt {
    name: String,
    tx: mpsc::Sender<AdminReq>,
    /// Core queries, forwarded to the main loop (answered while serving).
    queries: mpsc::Sender<Query>,
}

type St = State<Arc<AdminSt>>;

async fn health(State(st): St) -> Response {
    match crate::admin::ask(&st.tx, AdminReq::Standby).await {
        Some(v) => Json(json!({"status": "ok", "instance": st.name, "role": v.role, "version": env!("CARGO_PKG_VERSION"), "serving": v.serving, "standby_available": v.standby_available})).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "busy", "instance": st.name}))).into_response(),
    }
}

async fn standby_status(State(st): St) -> Response {
    match crate::admin::ask(&st.tx, AdminReq::Standby).await {
        Some(v) => Json(v).into_response(),
        None => crate::admin::error(StatusCode::SERVICE_UNAVAILABLE, "main loop not answering"),
    }
}

async fn standby_metrics(State(st): St) -> Response {
    use crate::metrics;
    let Some(v) = crate::admin::ask(&st.tx, AdminReq::Standby).await else {
        return crate::admin::error(StatusCode::SERVICE_UNAVAILABLE, "main loop not answering");
    };
    let mut e = metrics::Exposition::new(&st.name);
    metrics::info_family(&mut e, v.role);
    e.gauge(
        "bgf_standby_available",
        "1 while this standby protects (0 once it serves a taken-over instance).",
        &[],
        if v.standby_available { 1.0 } else { 0.0 },
    );
    e.gauge(
        "bgf_standby_alarms",
        "Alarms raised by the standby (see /v1/standby).",
        &[],
        v.alarms.len() as f64,
    );
    for g in &v.protected {
        let state = serde_json::to_value(&g.state)
            .ok()
            .and_then(|s| s.as_str().map(str::to_string))
            .unwrap_or_default();
        e.gauge(
            "bgf_standby_guard",
            "Per protected active: 1 for its current state (protected, serving, failed_unprotected, takeover_failed).",
            &[("protected", &g.instance), ("state", &state)],
            1.0,
        );
        metrics::link_families(&mut e, &g.instance, &g.heartbeat, g.replica.as_ref());
    }
    if let Some(r) = &v.last_takeover {
        metrics::takeover_families(&mut e, r);
    }
    if v.serving.is_some() {
        if let Some(s) = crate::admin::core_stats(&st.queries).await {
            metrics::core_families(&mut e, &s);
        }
    }
    crate::admin::metrics_response(&e)
}

/// `POST /v1/standby/switchover` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchoverReq {
    instance: String,
}

/// `POST /v1/standby/switchover {"instance": "bgf1"}`: a planned takeover,
/// answered when it is done (200 with the takeover report) or refused
/// (404 not protected here, 409 not now, 500 failed — with the reason).
async fn switchover_req(
    State(st): St,
    body: Result<Json<SwitchoverReq>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            return crate::admin::error(
                StatusCode::BAD_REQUEST,
                format!("{e} — send {{\"instance\": \"<protected active>\"}}"),
            )
        }
    };
    let (tx, rx) = oneshot::channel();
    let ask = AdminReq::Switchover {
        instance: req.instance.clone(),
        reply: tx,
    };
    if st.tx.send(ask).await.is_err() {
        return crate::admin::error(StatusCode::SERVICE_UNAVAILABLE, "standby shutting down");
    }
    // A takeover may wait standby.fence_timeout_ms for the store.
    match tokio::time::timeout(Duration::from_secs(60), rx).await {
        Ok(Ok(Ok(report))) => Json(report).into_response(),
        Ok(Ok(Err(SwitchoverRefused::Unknown(m)))) => crate::admin::error(StatusCode::NOT_FOUND, m),
        Ok(Ok(Err(SwitchoverRefused::Busy(m)))) => crate::admin::error(StatusCode::CONFLICT, m),
        Ok(Ok(Err(SwitchoverRefused::Failed(m)))) => {
            crate::admin::error(StatusCode::INTERNAL_SERVER_ERROR, m)
        }
        Ok(Err(_)) => crate::admin::error(StatusCode::SERVICE_UNAVAILABLE, "standby shutting down"),
        Err(_) => crate::admin::error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the switchover of {} did not finish within 60 s — see GET /v1/standby and the standby's log", req.instance),
        ),
    }
}

const STANDBY_ENDPOINTS: &[&str] = &[
    "/health",
    "/metrics",
    "/v1/standby",
    "POST /v1/standby/switchover",
    "/v1/stats",
    "/v1/sessions",
    "/v1/sessions/{call_id}",
    "/v1/log/{instance}",
];

/// The standby's router: `stores` are the protected actives' logs.
fn admin_router(
    name: &str,
    token: &str,
    tx: mpsc::Sender<AdminReq>,
    stores: Vec<(String, Arc<dyn LogStore>)>,
) -> Router {
    // Core queries go to the main loop, which forwards them to the serving
    // core loop (or drops them: 503 until a takeover).
    let (queries, mut q_rx) = mpsc::channel::<Query>(64);
    let fwd = tx.clone();
    tokio::spawn(
        async move {
            while let Some(q) = q_rx.recv().await {
                if fwd.send(AdminReq::Core(q)).await.is_err() {
                    break;
                }
            }
        }
        .in_current_span(),
    );
    let st = Arc::new(AdminSt {
        name: name.to_string(),
        tx,
        queries: queries.clone(),
    });
    let routes = Router::new()
        .route("/health", get(health))
        .route("/v1/standby", get(standby_status))
        .route(
            "/v1/standby/switchover",
            axum::routing::post(switchover_req),
        )
        .route("/metrics", get(standby_metrics))
        .with_state(st)
        .merge(crate::admin::core_routes(crate::admin::CoreRoutes {
            queries: queries.clone(),
            unavailable: "this standby serves no instance yet (see /v1/standby)",
        }))
        .merge(crate::admin::log_routes(crate::admin::LogRoutes {
            stores,
            queries,
        }));
    crate::admin::finish(
        routes,
        Arc::new(crate::admin::Auth {
            who: name.to_string(),
            token: token.to_string(),
        }),
        STANDBY_ENDPOINTS,
    )
}
