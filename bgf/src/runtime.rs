//! The core loop: one task owns the session core (`Core` is `&mut`, not
//! `Sync`), feeds it inputs (SIP from the transports, media events, timer
//! expiries), and carries out its effects in order (send, pinhole ops, timer
//! arm/disarm). Admin queries reach the core through a command channel, so
//! nothing else ever touches it.
//!
//! The loop reads the SIP UDP sockets itself (no hand-off to another task or
//! thread per datagram) and queues its UDP sends in an [`Outbox`] that is
//! flushed with `sendmmsg` once per wake-up (after a batch of inputs, or
//! after the state log released held sends).
//!
//! ```text
//!  UDP (recvmmsg, read by the loop itself) ┐
//!  TCP tasks ──Input::Sip──▶ ┐                
//!  media plane ─MediaEvent──▶ ├─▶ loop: core.apply(input) ─▶ [output commit seam] ─▶ execute(effects)
//!  timer queue ─Input::Timer▶ ┘                                  Send ▶ transports
//!  admin ───────Query──────▶ answered between inputs             Pinhole ▶ media
//!                                                                SetTimer/CancelTimer ▶ timer queue
//! ```

use crate::commit::{Commit, CommitStats, Fenced};
use crate::transport::{bump, now_ms, Counters, Outbox, TransportStats, Transports};
use crate::udp::RecvBatch;
use serde::{Deserialize, Serialize};
use sip_control::{
    Core, CoreStats, Effect, Input, MediaEvent, PinholeId, PinholeOp, Side, SipIn, TimerId,
    Transmit,
};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, trace, warn};

/// What the loop needs from the packet path. Implemented by
/// `media_plane::MediaPlane` (see `media.rs`); a trait so that the loop can
/// be tested without sockets for media.
pub trait MediaOps: Send {
    /// Apply one pinhole operation.
    fn apply(&self, op: &PinholeOp) -> Result<(), String>;
    /// Global counters, as JSON.
    fn counters(&self) -> serde_json::Value;
    /// One pinhole's counters, as JSON, if it exists.
    fn pinhole_counters(&self, id: PinholeId) -> Option<serde_json::Value>;
    /// Number of pinholes.
    fn pinhole_count(&self) -> usize;
    /// `None` while a new session's media can still be installed (see
    /// `admission.rs`), else what is full. Checked before a new INVITE
    /// reaches the core, so a call is refused with 503 rather than answered
    /// without media.
    fn refuses_session(&self) -> Option<crate::admission::Full>;
    /// Stop forwarding and join the packet path's threads.
    fn shutdown(self: Box<Self>);
}

/// `/v1/stats` body.
#[derive(Debug, Serialize)]
pub struct StatsReply {
    pub instance: String,
    /// The instance's service addresses (from its config).
    pub service: ServiceAddrs,
    pub sessions: usize,
    pub registrations: usize,
    pub core: CoreStats,
    pub media: serde_json::Value,
    pub pinholes: usize,
    /// Armed core timers.
    pub timers: usize,
    pub transport: TransportStats,
    /// Output commit (absent without `[statelog]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statelog: Option<CommitStats>,
}

/// Where an instance serves (the `service` object of `/v1/stats`).
#[derive(Clone, Debug, Serialize)]
pub struct ServiceAddrs {
    pub access_sip: std::net::SocketAddr,
    pub core_sip: std::net::SocketAddr,
    pub access_media_ip: std::net::IpAddr,
    pub core_media_ip: std::net::IpAddr,
    /// Where core-bound requests go (the drill's UAS listens there).
    pub core_next_hop: std::net::SocketAddr,
}

/// `/v1/sessions` query parameters; every filter given must match.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFilter {
    /// Exact Call-ID.
    pub call_id: Option<String>,
    /// `early`, `confirmed` or `terminating` (case-insensitive).
    pub state: Option<String>,
    /// `access` or `core`: the side the dialog-creating request came from.
    pub origin: Option<String>,
    /// At most this many sessions (default [`SessionFilter::DEFAULT_LIMIT`]).
    pub limit: Option<usize>,
}

impl SessionFilter {
    /// Sessions returned when `limit` is not given.
    pub const DEFAULT_LIMIT: usize = 10_000;

    fn matches(&self, v: &sip_control::SessionView) -> bool {
        let eq = |want: &Option<String>, have: &str| {
            want.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(have))
        };
        let origin = match v.origin {
            Side::Access => "access",
            Side::Core => "core",
        };
        self.call_id.as_deref().is_none_or(|c| c == v.call_id)
            && eq(&self.state, &v.state)
            && eq(&self.origin, origin)
    }
}

/// The sessions a [`SessionFilter`] selected.
#[derive(Debug, Serialize)]
pub struct SessionsReply {
    /// Live sessions in all.
    pub total: usize,
    /// Sessions that matched the filter (before `limit`).
    pub matched: usize,
    /// `SessionView` JSON, each pinhole with its `counters`.
    pub sessions: Vec<serde_json::Value>,
}

/// A question for the loop from the admin server.
pub enum Query {
    /// Counters and gauges.
    Stats(oneshot::Sender<StatsReply>),
    /// Live sessions matching a filter.
    Sessions(SessionFilter, oneshot::Sender<SessionsReply>),
}

/// The core's timers: ordered by deadline, indexed by id.
#[derive(Debug, Default)]
pub struct TimerQueue {
    by_deadline: BTreeSet<(u64, TimerId)>,
    by_id: HashMap<TimerId, u64>,
}

impl TimerQueue {
    /// Arm (or re-arm) `id` at `at`.
    pub fn set(&mut self, id: TimerId, at: u64) {
        if let Some(old) = self.by_id.insert(id, at) {
            self.by_deadline.remove(&(old, id));
        }
        self.by_deadline.insert((at, id));
    }

    /// Disarm `id` (no-op if not armed).
    pub fn cancel(&mut self, id: TimerId) {
        if let Some(old) = self.by_id.remove(&id) {
            self.by_deadline.remove(&(old, id));
        }
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.by_deadline.first().map(|(at, _)| *at)
    }

    /// Remove and return every timer due at `now`, earliest first. If none is
    /// due yet but the caller was woken for the earliest (clock skew between
    /// the monotonic sleep and the wall clock), that one is returned.
    pub fn pop_due(&mut self, now: u64) -> Vec<(TimerId, u64)> {
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.by_deadline.first() {
            let due = at <= now || (out.is_empty() && at <= now + 5);
            if !due {
                break;
            }
            self.by_deadline.remove(&(at, id));
            self.by_id.remove(&id);
            out.push((id, at));
        }
        out
    }

    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Everything the loop owns.
pub struct CoreLoop {
    pub core: Core,
    pub media: Box<dyn MediaOps>,
    pub transports: Arc<Transports>,
    pub counters: Arc<Counters>,
    pub timers: TimerQueue,
    /// Output commit to the state log (`None` = no log: effects at once).
    pub commit: Option<Commit>,
    /// UDP sends queued until the end of the current wake-up.
    pub outbox: Outbox,
}

/// How the loop ended.
pub struct LoopEnd {
    /// The media plane, for shutdown.
    pub media: Box<dyn MediaOps>,
    /// Set when the store fenced this instance (exit code 3).
    pub fenced: Option<Fenced>,
}

/// The loop's input channels.
pub struct Channels {
    /// SIP messages from the TCP connections (UDP is read by the loop).
    pub inputs: mpsc::Receiver<Input>,
    /// Events from the media plane (its sink uses `try_send`).
    pub media_events: mpsc::Receiver<MediaEvent>,
    /// Admin queries.
    pub queries: mpsc::Receiver<Query>,
    /// Turns `true` on SIGTERM/SIGINT.
    pub shutdown: watch::Receiver<bool>,
}

fn instant_for(deadline_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms()))
}

impl CoreLoop {
    /// Run until shutdown. The input in hand is always finished (applied and
    /// its effects executed) before the loop returns the media plane for
    /// shutdown.
    pub async fn run(mut self, mut ch: Channels) -> LoopEnd {
        let mut fenced = None;
        let (access_udp, core_udp) = (
            self.transports.udp(Side::Access),
            self.transports.udp(Side::Core),
        );
        let mut batch = RecvBatch::new(self.core.config().max_message_bytes + 1);
        let mut inbox = Vec::new();
        // One timer entry, re-armed only when the earliest deadline changes.
        let sleep = tokio::time::sleep_until(Instant::now());
        tokio::pin!(sleep);
        let mut armed: Option<u64> = None;
        loop {
            let deadline = self.timers.next_deadline();
            if deadline != armed {
                if let Some(d) = deadline {
                    sleep.as_mut().reset(instant_for(d));
                }
                armed = deadline;
            }
            let has_commit = self.commit.is_some();
            // Biased so that under a sustained SIP load due timers, media
            // events and admin queries are never starved by the input queue.
            tokio::select! {
                biased;
                _ = ch.shutdown.changed() => break,
                r = status_changed(&mut self.commit), if has_commit => {
                    if r.is_err() {
                        warn!("state log appender stopped; stopping the core loop");
                        break;
                    }
                    if let Err(f) = self.on_commit_status() {
                        fenced = Some(f);
                        break;
                    }
                }
                _ = &mut sleep, if deadline.is_some() => {
                    // Re-armed next round (even if nothing was due yet).
                    armed = None;
                    let now = now_ms();
                    for (id, due) in self.timers.pop_due(now) {
                        self.handle(Input::Timer { id, at: now.max(due) });
                    }
                }
                Some(event) = ch.media_events.recv() => {
                    self.handle(Input::Media { event, at: now_ms() });
                }
                Some(q) = ch.queries.recv() => self.answer(q),
                r = access_udp.readable() => {
                    if r.is_ok() {
                        self.read_udp(Side::Access, &mut batch, &mut inbox);
                    }
                }
                r = core_udp.readable() => {
                    if r.is_ok() {
                        self.read_udp(Side::Core, &mut batch, &mut inbox);
                    }
                }
                Some(input) = ch.inputs.recv() => self.handle(input),
            }
            if !self.outbox.is_empty() {
                self.transports.flush(&mut self.outbox).await;
            }
        }
        if !self.outbox.is_empty() {
            self.transports.flush(&mut self.outbox).await;
        }
        if let Some(c) = &self.commit {
            if fenced.is_none() && c.held_len() > 0 {
                warn!(
                    held = c.held_len(),
                    "stopping with SIP messages still awaiting the state log; peers will retransmit to the standby"
                );
            }
        }
        debug!(
            timers = self.timers.len(),
            sessions = self.core.session_count(),
            "core loop stopped"
        );
        LoopEnd {
            media: self.media,
            fenced,
        }
    }

    /// Release what the appender's latest status allows.
    fn on_commit_status(&mut self) -> Result<(), Fenced> {
        let Some(c) = self.commit.as_mut() else {
            return Ok(());
        };
        let out = c.on_status()?;
        for t in out {
            self.send(t);
        }
        Ok(())
    }

    /// Drain what is queued on `side`'s UDP socket (a few `recvmmsg`
    /// batches at most, so that timers and other sockets get their turn)
    /// and apply each message.
    fn read_udp(&mut self, side: Side, batch: &mut RecvBatch, inbox: &mut Vec<Input>) {
        for _ in 0..4 {
            match self.transports.read_udp(side, batch, inbox) {
                Ok(_) => {
                    for input in inbox.drain(..) {
                        self.handle(input);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // ICMP errors from earlier sends surface here
                // (ECONNREFUSED); not fatal, and already consumed.
                Err(e) => debug!(side = %side, error = %e, "udp receive error"),
            }
        }
    }

    /// The daemon's own answer to a new INVITE while the log is degraded or
    /// congested, or while the media plane has no room for another session
    /// (admission control), or a drop when the held queue is full. `true` =
    /// the input is consumed. A refusal reveals no state and is not logged.
    fn refuse(&mut self, m: &SipIn) -> bool {
        if let Some(c) = self.commit.as_mut() {
            if c.full() {
                c.dropped_held_full += 1;
                if c.dropped_held_full.is_power_of_two() {
                    warn!(src = %m.src, dropped = c.dropped_held_full, "ALARM held queue full (statelog.max_held): SIP input dropped, peers will retransmit — the state log is not keeping up; check the store's load and latency");
                }
                return true;
            }
        }
        let media_full = self.media.refuses_session();
        let why = match (&self.commit, media_full) {
            (Some(c), _) if c.degraded() => "state log degraded",
            (Some(c), _) if c.congested() => "state log backlog past half of statelog.max_held",
            (_, Some(full)) => full.reason(),
            _ => return false,
        };
        let Ok(msg) =
            sip_control::msg::Message::parse(&m.data, self.core.config().max_message_bytes)
        else {
            return false;
        };
        if msg.code().is_some()
            || msg.method() != sip_control::msg::Method::Invite
            || msg.to_tag().is_some()
        {
            return false;
        }
        // A retransmission of an INVITE the core already took (its effects
        // are held until durable) is the core's to absorb: answering it 503
        // would leave the caller thinking the call failed while the held
        // INVITE goes on to ring the callee.
        if self.core.session_by_call_id(msg.call_id()).is_some() {
            return false;
        }
        let mut resp = sip_control::msg::make_response(&msg, 503, "Service Unavailable", None);
        resp.set("Retry-After", "30".to_string());
        resp.set("Content-Length", "0".to_string());
        if let Some(c) = self.commit.as_mut() {
            c.refused_503 += 1;
        }
        if let Some(full) = media_full.filter(|f| why == f.reason()) {
            let n = self
                .counters
                .refused_media
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if n.is_power_of_two() {
                warn!(
                    refused = n,
                    pinholes = self.media.pinhole_count(),
                    "ALARM new calls refused with 503: {}",
                    full.advice()
                );
            }
        }
        let t = Transmit {
            side: m.side,
            transport: m.transport,
            src: m.dst,
            dst: m.src,
            data: resp.to_bytes(),
        };
        debug!(src = %m.src, call_id = msg.call_id(), reason = why, "new INVITE refused with 503");
        self.send(t);
        true
    }

    /// Apply one input and carry out its effects.
    fn handle(&mut self, input: Input) {
        if let Input::Sip(m) = &input {
            debug!(side = %m.side, transport = ?m.transport, src = %m.src, bytes = m.data.len(), first_line = first_line(&m.data), "sip in");
        }
        if let Input::Sip(m) = &input {
            self.counters.count_response(&m.data, false);
            if self.refuse(m) {
                return;
            }
        }
        let applied = self.core.apply(&input);
        trace!(
            input = input_kind(&input),
            effects = applied.effects.len(),
            state_changed = applied.state_changed,
            "input applied"
        );
        // Output commit: a state-changing input is logged; its sends (and
        // those of any later input) wait until its record is durable.
        // Pinhole operations and timers run at once: media never waits.
        let Some(c) = self.commit.as_mut() else {
            self.execute(applied.effects);
            return;
        };
        let tag = if applied.state_changed {
            let seq = c.log(input);
            if c.checkpoint_due() {
                let state = rmp_serde::to_vec(self.core.state()).unwrap_or_default();
                c.checkpoint(state);
            }
            seq
        } else {
            c.latest()
        };
        let mut now = Vec::new();
        let mut local = Vec::new();
        for e in applied.effects {
            match e {
                Effect::Send(t) => now.extend(c.hold(tag, t)),
                other => local.push(other),
            }
        }
        self.execute(local);
        for t in now {
            self.send(t);
        }
    }

    /// Carry out effects in order. Failures are logged and counted, never fatal.
    fn execute(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send(t) => self.send(t),
                Effect::Pinhole(op) => {
                    if let Err(e) = self.media.apply(&op) {
                        let id = match &op {
                            PinholeOp::Upsert(s) => s.id,
                            PinholeOp::Remove(id) => *id,
                        };
                        warn!(pinhole = %id, error = %e, "pinhole operation failed; the stream will not be relayed");
                    }
                }
                Effect::SetTimer { id, at } => self.timers.set(id, at),
                Effect::CancelTimer(id) => self.timers.cancel(id),
            }
        }
    }

    /// Queue `t` (UDP goes out at the end of this wake-up).
    fn send(&mut self, t: Transmit) {
        self.counters.count_response(&t.data, true);
        debug!(side = %t.side, transport = ?t.transport, dst = %t.dst, bytes = t.data.len(), first_line = first_line(&t.data), "sip out");
        self.transports.push(t, &mut self.outbox)
    }

    fn answer(&self, q: Query) {
        match q {
            Query::Stats(reply) => {
                let cfg = self.core.config();
                let _ = reply.send(StatsReply {
                    instance: cfg.instance.clone(),
                    service: ServiceAddrs {
                        access_sip: cfg.access.sip,
                        core_sip: cfg.core.sip,
                        access_media_ip: cfg.access.media_ip,
                        core_media_ip: cfg.core.media_ip,
                        core_next_hop: cfg.core_next_hop,
                    },
                    sessions: self.core.session_count(),
                    registrations: self.core.registration_count(),
                    core: self.core.stats().clone(),
                    media: self.media.counters(),
                    pinholes: self.media.pinhole_count(),
                    timers: self.timers.len(),
                    transport: TransportStats {
                        tcp_connections: self.transports.tcp_connections() as u64,
                        ..self.counters.snapshot()
                    },
                    statelog: self.commit.as_ref().map(|c| c.stats()),
                });
            }
            Query::Sessions(filter, reply) => {
                let all = match &filter.call_id {
                    Some(c) => self.core.session_by_call_id(c).into_iter().collect(),
                    None => self.core.sessions(),
                };
                let selected: Vec<_> = all.into_iter().filter(|v| filter.matches(v)).collect();
                let matched = selected.len();
                let limit = filter.limit.unwrap_or(SessionFilter::DEFAULT_LIMIT);
                let views = selected
                    .into_iter()
                    .take(limit)
                    .map(|v| {
                        let ids: Vec<PinholeId> = v.pinholes.iter().map(|p| p.id).collect();
                        let mut json = serde_json::to_value(&v).unwrap_or_default();
                        if let Some(ps) = json.get_mut("pinholes").and_then(|p| p.as_array_mut()) {
                            for (p, id) in ps.iter_mut().zip(ids) {
                                if let Some(obj) = p.as_object_mut() {
                                    obj.insert(
                                        "counters".into(),
                                        self.media.pinhole_counters(id).unwrap_or_default(),
                                    );
                                }
                            }
                        }
                        json
                    })
                    .collect();
                let _ = reply.send(SessionsReply {
                    total: self.core.session_count(),
                    matched,
                    sessions: views,
                });
            }
        }
    }
}

impl CoreLoop {
    /// A loop resuming a replayed core (a standby taking over): `timers`
    /// re-armed from the core's state, `commit` continuing the instance's
    /// log under the new epoch. Same loop as `bgf active` from then on.
    pub fn resume(
        core: Core,
        media: Box<dyn MediaOps>,
        transports: Arc<Transports>,
        counters: Arc<Counters>,
        timers: TimerQueue,
        commit: Option<Commit>,
    ) -> CoreLoop {
        CoreLoop {
            core,
            media,
            transports,
            counters,
            timers,
            commit,
            outbox: Default::default(),
        }
    }
}

/// Resolves when the appender reports progress (never without a log).
async fn status_changed(c: &mut Option<Commit>) -> Result<(), watch::error::RecvError> {
    match c {
        Some(c) => c.status_rx().changed().await,
        None => std::future::pending().await,
    }
}

/// The start line of a SIP message, for logs.
fn first_line(data: &[u8]) -> String {
    let end = data
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .unwrap_or(data.len())
        .min(120);
    String::from_utf8_lossy(&data[..end]).into_owned()
}

fn input_kind(i: &Input) -> &'static str {
    match i {
        Input::Sip(_) => "sip",
        Input::Timer { .. } => "timer",
        Input::Media { .. } => "media",
    }
}

/// The media plane's event sink: never blocks the packet path; a full queue
/// is counted as `core_queue_full` (the core then misses a latch or an
/// inactivity report, which the next packet / scan repeats).
pub fn media_event_sink(
    tx: mpsc::Sender<MediaEvent>,
    counters: Arc<Counters>,
) -> impl Fn(MediaEvent) + Send + Sync + 'static {
    move |ev| {
        if tx.try_send(ev).is_err() {
            bump(&counters.core_queue_full);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::bind_free;
    use media_plane::{Leg, PinholeSpec, Side};
    use sip_control::{CoreConfig, Transmit, Transport};
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, UdpSocket};

    #[derive(Default, Clone)]
    struct FakeMedia {
        ops: Arc<Mutex<Vec<PinholeOp>>>,
        down: Arc<AtomicBool>,
    }

    impl MediaOps for FakeMedia {
        fn apply(&self, op: &PinholeOp) -> Result<(), String> {
            self.ops.lock().unwrap().push(op.clone());
            match op {
                PinholeOp::Remove(_) => Err("no such pinhole".into()),
                PinholeOp::Upsert(_) => Ok(()),
            }
        }
        fn counters(&self) -> serde_json::Value {
            serde_json::json!({"forwarded_packets": 0})
        }
        fn pinhole_counters(&self, _id: PinholeId) -> Option<serde_json::Value> {
            None
        }
        fn pinhole_count(&self) -> usize {
            self.ops.lock().unwrap().len()
        }
        fn refuses_session(&self) -> Option<crate::admission::Full> {
            None
        }
        fn shutdown(self: Box<Self>) {
            self.down.store(true, Ordering::SeqCst);
        }
    }

    fn leg(port: u16) -> Leg {
        Leg {
            local: SocketAddr::from(([127, 0, 0, 1], port)),
            remote_rtp: None,
            remote_rtcp: None,
            latch_ip: None,
        }
    }

    async fn stats(q: &mpsc::Sender<Query>) -> StatsReply {
        let (tx, rx) = oneshot::channel();
        q.send(Query::Stats(tx)).await.unwrap();
        rx.await.unwrap()
    }

    #[tokio::test]
    async fn effects_run_in_order_timers_fire_and_shutdown_returns_media() {
        let (a, c) = (bind_free().await, bind_free().await);
        let (access, core_addr) = (a.addr, c.addr);
        let (in_tx, in_rx) = mpsc::channel(16);
        let (stop_tx, stop_rx) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let (transports, _readers) = Transports::start(
            a,
            c,
            counters.clone(),
            in_tx,
            65535,
            stop_rx.clone(),
            tracing::Span::none(),
        );
        let core = Core::new(CoreConfig::example(
            access.ip(),
            core_addr.ip(),
            "127.0.0.3:5060".parse().unwrap(),
        ))
        .unwrap();
        let media = FakeMedia::default();
        let mut lp = CoreLoop {
            core,
            media: Box::new(media.clone()),
            transports,
            counters: counters.clone(),
            timers: TimerQueue::default(),
            commit: None,
            outbox: Outbox::default(),
        };
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let far = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let id = PinholeId {
            session: 7,
            stream: 0,
        };
        let now = now_ms();
        lp.execute(vec![
            Effect::Send(Transmit {
                side: Side::Access,
                transport: Transport::Udp,
                src: access,
                dst: peer.local_addr().unwrap(),
                data: b"one".to_vec(),
            }),
            Effect::Pinhole(PinholeOp::Upsert(PinholeSpec {
                id,
                access: leg(42000),
                core: leg(42100),
            })),
            // Fails in the fake: logged, and the next effects still run.
            Effect::Pinhole(PinholeOp::Remove(id)),
            Effect::SetTimer {
                id: TimerId(1),
                at: now + 30,
            },
            Effect::SetTimer {
                id: TimerId(2),
                at: now + 600_000,
            },
            Effect::SetTimer {
                id: TimerId(3),
                at: now + 600_000,
            },
            Effect::CancelTimer(TimerId(2)),
            Effect::Send(Transmit {
                side: Side::Core,
                transport: Transport::Tcp,
                src: core_addr,
                dst: far.local_addr().unwrap(),
                data: b"two".to_vec(),
            }),
        ]);
        // UDP goes out when the loop flushes its outbox.
        assert_eq!(lp.counters.snapshot().udp_tx, 0);
        lp.transports.flush(&mut lp.outbox).await;
        let mut b = [0u8; 8];
        let (n, from) = peer.recv_from(&mut b).await.unwrap();
        assert_eq!((&b[..n], from), (&b"one"[..], access));
        let (mut s, _) = far.accept().await.unwrap();
        let mut two = [0u8; 3];
        s.read_exact(&mut two).await.unwrap();
        assert_eq!(&two, b"two");
        assert_eq!(media.ops.lock().unwrap().len(), 2);
        assert_eq!(lp.timers.len(), 2);

        // Run the loop: timer 1 fires (and is gone), timer 3 stays armed.
        let (_media_tx, media_rx) = mpsc::channel(4);
        let (q_tx, q_rx) = mpsc::channel(4);
        let task = tokio::spawn(lp.run(Channels {
            inputs: in_rx,
            media_events: media_rx,
            queries: q_rx,
            shutdown: stop_rx,
        }));
        let mut fired = false;
        for _ in 0..500 {
            let s = stats(&q_tx).await;
            assert_eq!(s.pinholes, 2);
            assert_eq!(s.transport.udp_tx, 1);
            if s.timers == 1 {
                fired = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(fired, "timer 1 never fired");
        let (tx, rx) = oneshot::channel();
        q_tx.send(Query::Sessions(SessionFilter::default(), tx))
            .await
            .unwrap();
        let r = rx.await.unwrap();
        assert!(r.sessions.is_empty());
        assert_eq!((r.total, r.matched), (0, 0));

        stop_tx.send(true).unwrap();
        let back = task.await.unwrap();
        assert!(back.fenced.is_none());
        back.media.shutdown();
        assert!(media.down.load(Ordering::SeqCst));
    }

    #[test]
    fn media_sink_counts_a_full_queue() {
        let (tx, mut rx) = mpsc::channel(1);
        let counters = Arc::new(Counters::default());
        let sink = media_event_sink(tx, counters.clone());
        sink(MediaEvent::Inactive { session: 1 });
        sink(MediaEvent::Inactive { session: 2 });
        assert_eq!(counters.snapshot().core_queue_full, 1);
        assert_eq!(rx.try_recv().unwrap(), MediaEvent::Inactive { session: 1 });
    }

    #[test]
    fn timer_queue_orders_rearms_and_cancels() {
        let mut q = TimerQueue::default();
        q.set(TimerId(1), 300);
        q.set(TimerId(2), 100);
        q.set(TimerId(3), 200);
        assert_eq!(q.next_deadline(), Some(100));
        q.set(TimerId(2), 400); // re-arm moves it
        assert_eq!(q.next_deadline(), Some(200));
        q.cancel(TimerId(3));
        q.cancel(TimerId(99));
        assert_eq!(q.next_deadline(), Some(300));
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop_due(350), vec![(TimerId(1), 300)]);
        assert_eq!(q.pop_due(1000), vec![(TimerId(2), 400)]);
        assert_eq!(q.next_deadline(), None);
        assert!(q.pop_due(2000).is_empty());
    }

    #[test]
    fn timer_queue_pops_all_due_in_order_and_tolerates_small_skew() {
        let mut q = TimerQueue::default();
        for (id, at) in [(1, 50), (2, 10), (3, 30), (4, 1000)] {
            q.set(TimerId(id), at);
        }
        assert_eq!(
            q.pop_due(60),
            vec![(TimerId(2), 10), (TimerId(3), 30), (TimerId(1), 50)]
        );
        // Woken 2 ms early by the wall clock: the earliest still fires, once.
        assert_eq!(q.pop_due(998), vec![(TimerId(4), 1000)]);
        q.set(TimerId(5), 5000);
        assert!(q.pop_due(100).is_empty());
    }
}
