//! The session core: dispatches each input to the proxy, transaction, session
//! and registration logic and collects the effects. Everything here is a pure
//! function of (state, input, config).

use crate::api::{Applied, Effect, Input, Millis, SipIn, TimerId, Transmit, Transport};
use crate::caps::{self, Caps};
use crate::config::CoreConfig;
use crate::ids;
use crate::limits::{LogGate, LogKind};
use crate::msg::{self, make_response, Message, Method, NameAddr, StartLine, Via};
use crate::policy::OwnAddrs;
use crate::registrar::{self, Binding, PendingBinding};
use crate::routing::{self, creates_dialog, is_final_notify, DialogMatch};
use crate::sdp::Sdp;
use crate::session::{self, MediaAddrs, MediaPlanError, Pools, Session, SessionState, Usage};
use crate::topo;
use crate::txn::{
    ClientKey, ClientRole, ClientState, ClientTxn, Flow, ServerKey, ServerState, ServerTxn,
    TimerKind,
};
use media_plane::{MediaEvent, PinholeOp, PortPool, Side};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tracing::{debug, info, warn};

/// Counters the core keeps (exported as metrics by the daemon).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreStats {
    /// Requests answered with 400 because they did not parse or lacked mandatory headers.
    pub malformed_requests: u64,
    /// Responses dropped because they did not parse or could not be routed.
    pub dropped_responses: u64,
    /// Messages dropped that were neither (garbage, stray ACKs).
    pub dropped_other: u64,
    /// Requests forwarded.
    pub requests_forwarded: u64,
    /// Responses forwarded.
    pub responses_forwarded: u64,
    /// Retransmissions absorbed by the transaction layer.
    pub retransmissions_absorbed: u64,
    /// Sessions created.
    pub sessions_created: u64,
    /// Sessions ended.
    pub sessions_ended: u64,
    /// New sessions refused (no ports, SDP unusable, ...).
    pub sessions_refused: u64,
    /// Requests answered by the BGF itself with an error (4xx/5xx) other than 400.
    pub requests_rejected: u64,
    /// Sessions ended by the BGF (media inactivity, session expiry) with BYE both ways.
    pub sessions_ended_by_bgf: u64,
    /// In-dialog requests (and ACKs, CANCELs) that matched no dialog or
    /// transaction by their full identifier and flow: answered 481 or dropped.
    #[serde(default)]
    pub dialog_mismatches: u64,
    /// Initial requests refused by the routing policy (404: no registration
    /// or configured route for the target).
    #[serde(default)]
    pub routing_refused: u64,
    /// Responses dropped because they matched none of our client
    /// transactions, or came from another side or peer than the request went to.
    #[serde(default)]
    pub responses_unmatched: u64,
    /// Requests refused with 488 by the media policy (an address SDP may not
    /// name, too many streams).
    #[serde(default)]
    pub media_refused: u64,
    /// Requests refused with 503 because they were over a cap (dialogs,
    /// unanswered calls, registrations per source; ports held by unanswered
    /// calls; the emergency share of the port pools).
    #[serde(default)]
    pub capacity_refused: u64,
    /// Bad-input log lines suppressed by the rate limit (5/s per kind).
    #[serde(default)]
    pub log_suppressed: u64,
}

/// Why a core could not be built from a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// A port pool range is unusable.
    #[error("{side}.rtp_ports: {source}")]
    Ports {
        /// `access` or `core`.
        side: &'static str,
        /// The pool's complaint.
        source: media_plane::PortPoolError,
    },
    /// A saved state does not fit this config.
    #[error("cannot restore core state: {0}")]
    StateMismatch(String),
}

/// The complete replayable state of one instance. Two cores that applied the
/// same logged inputs compare equal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreState {
    /// Next session number.
    pub next_session: u64,
    /// Next timer number.
    pub next_timer: u64,
    /// Live sessions by number.
    pub sessions: BTreeMap<u64, Session>,
    /// Call-ID → session number.
    pub by_call_id: BTreeMap<String, u64>,
    /// Registration bindings by token.
    pub bindings: BTreeMap<String, Binding>,
    /// Server transactions.
    pub servers: BTreeMap<ServerKey, ServerTxn>,
    /// Client transactions.
    pub clients: BTreeMap<ClientKey, ClientTxn>,
    /// Armed timers.
    pub timers: BTreeMap<TimerId, TimerKind>,
    /// Media port pools.
    pub pools: Pools,
}

/// A read-only view of one session, for the admin API and logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// Session number (deterministic).
    pub id: u64,
    /// SIP Call-ID.
    pub call_id: String,
    /// `early`, `confirmed` or `terminating`.
    pub state: String,
    /// Side the dialog-creating INVITE came from (`access`: originating, `core`: terminating).
    pub origin: Side,
    /// When the session was created.
    pub created_at: Millis,
    /// The session's pinholes, one per accepted media stream.
    pub pinholes: Vec<media_plane::PinholeSpec>,
}

/// Per-input scratch: effects and whether state changed.
pub(crate) struct Cx {
    pub(crate) now: Millis,
    pub(crate) effects: Vec<Effect>,
    pub(crate) changed: bool,
    /// Sessions this input touched (their caps are re-counted at the end).
    pub(crate) touched: Vec<u64>,
}

/// One instance's session core.
#[derive(Debug)]
pub struct Core {
    pub(crate) cfg: CoreConfig,
    pub(crate) addrs: MediaAddrs,
    pub(crate) state: CoreState,
    pub(crate) stats: CoreStats,
    /// Bounds the rate of bad-input log lines (not state: see `limits`).
    pub(crate) gate: LogGate,
    /// Per-source counts behind the caps (derived from the state: `caps`).
    pub(crate) caps: Caps,
}

impl Core {
    /// A core with empty state.
    pub fn new(cfg: CoreConfig) -> Result<Core, CoreError> {
        let access =
            PortPool::new(cfg.access.rtp_port_min, cfg.access.rtp_port_max).map_err(|source| {
                CoreError::Ports {
                    side: "access",
                    source,
                }
            })?;
        let core =
            PortPool::new(cfg.core.rtp_port_min, cfg.core.rtp_port_max).map_err(|source| {
                CoreError::Ports {
                    side: "core",
                    source,
                }
            })?;
        let v6_prefix = cfg.security.limits.ipv6_source_prefix;
        let addrs = MediaAddrs {
            access_ip: cfg.access.media_ip,
            core_ip: cfg.core.media_ip,
            access_latching: cfg.access.latching,
            core_latching: cfg.core.latching,
            access_rules: cfg.security.access.media.clone(),
            core_rules: cfg.security.core.media.clone(),
            own: OwnAddrs {
                ips: vec![
                    cfg.access.media_ip,
                    cfg.core.media_ip,
                    cfg.access.sip.ip(),
                    cfg.core.sip.ip(),
                ],
                ports: vec![
                    (cfg.access.rtp_port_min, cfg.access.rtp_port_max),
                    (cfg.core.rtp_port_min, cfg.core.rtp_port_max),
                    (cfg.access.sip.port(), cfg.access.sip.port()),
                    (cfg.core.sip.port(), cfg.core.sip.port()),
                ],
            },
            max_streams: usize::from(cfg.security.limits.max_streams_per_session),
        };
        Ok(Core {
            cfg,
            addrs,
            state: CoreState {
                next_session: 1,
                next_timer: 1,
                sessions: BTreeMap::new(),
                by_call_id: BTreeMap::new(),
                bindings: BTreeMap::new(),
                servers: BTreeMap::new(),
                clients: BTreeMap::new(),
                timers: BTreeMap::new(),
                pools: Pools { access, core },
            },
            stats: CoreStats::default(),
            gate: LogGate::default(),
            caps: Caps::new(v6_prefix),
        })
    }

    /// A core resuming from a saved state (a log checkpoint). The state must
    /// have been produced under a config with the same port ranges.
    pub fn restore(cfg: CoreConfig, state: CoreState) -> Result<Core, CoreError> {
        let mut core = Core::new(cfg)?;
        if !core.state.pools.access.same_range(&state.pools.access)
            || !core.state.pools.core.same_range(&state.pools.core)
        {
            return Err(CoreError::StateMismatch(
                "the checkpoint's media port ranges differ from the config's rtp_ports".into(),
            ));
        }
        core.state = state;
        core.caps = core.rebuilt_caps();
        Ok(core)
    }

    /// Apply one input; returns the effects to carry out, in order.
    pub fn apply(&mut self, input: &Input) -> Applied {
        let mut cx = Cx {
            now: input.at(),
            effects: Vec::new(),
            changed: false,
            touched: Vec::new(),
        };
        match input {
            Input::Sip(m) => self.on_sip(&mut cx, m),
            Input::Timer { id, .. } => self.on_timer(&mut cx, *id),
            Input::Media { event, .. } => self.on_media(&mut cx, event),
        }
        for id in cx.touched {
            self.caps.sync(id, self.state.sessions.get(&id));
        }
        Applied {
            effects: cx.effects,
            state_changed: cx.changed,
        }
    }

    /// The replayable state (compare two cores with `==`).
    pub fn state(&self) -> &CoreState {
        &self.state
    }

    /// The caps index as it would be rebuilt from the state.
    fn rebuilt_caps(&self) -> Caps {
        Caps::rebuild(
            self.cfg.security.limits.ipv6_source_prefix,
            self.state.sessions.values(),
            self.state.bindings.iter(),
        )
    }

    /// Whether the caps index the core keeps up to date equals a rebuild
    /// from its state (tests check this after every input).
    pub fn caps_consistent(&self) -> bool {
        self.caps == self.rebuilt_caps()
    }

    /// Counters.
    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.state.sessions.len()
    }

    /// A view of every live session, ordered by session number.
    pub fn sessions(&self) -> Vec<SessionView> {
        self.state.sessions.values().map(view).collect()
    }

    /// One session by Call-ID.
    pub fn session_by_call_id(&self, call_id: &str) -> Option<SessionView> {
        let id = self.state.by_call_id.get(call_id)?;
        self.state.sessions.get(id).map(view)
    }

    /// Number of live registrations (bindings).
    pub fn registration_count(&self) -> usize {
        self.state.bindings.len()
    }

    /// Number of live transactions (server + client).
    pub fn transaction_count(&self) -> usize {
        self.state.servers.len() + self.state.clients.len()
    }

    // ----------------------------------------------------------------- helpers

    /// Whether a bad-input event of `kind` may log now (`Some(suppressed
    /// since the last line)`); counts the suppressed ones.
    pub(crate) fn log_gate(&mut self, kind: LogKind, now: Millis) -> Option<u64> {
        let r = self.gate.allow(kind, now);
        self.stats.log_suppressed = self.gate.total_suppressed;
        r
    }

    fn sip_addr(&self, side: Side) -> SocketAddr {
        self.cfg.side(side).sip
    }

    pub(crate) fn is_own(&self, addr: SocketAddr) -> bool {
        addr == self.cfg.access.sip || addr == self.cfg.core.sip
    }

    fn is_own_route(&self, value: &str) -> bool {
        NameAddr::parse(value)
            .ok()
            .and_then(|na| msg::parse_uri(&na.uri).ok())
            .and_then(|u| msg::uri_socket(&u))
            .map(|a| self.is_own(a))
            .unwrap_or(false)
    }

    /// Remove our own entries from the top of the Route set (double
    /// Record-Route: up to two). Returns how many were removed.
    fn pop_own_routes(&self, m: &mut Message) -> usize {
        let mut popped = 0;
        while popped < 2 {
            match m.header("Route") {
                Some(r) if self.is_own_route(r) => {
                    m.pop_front("Route");
                    popped += 1;
                }
                _ => break,
            }
        }
        popped
    }

    /// Run the SDP body of a message that cannot be refused (ACK, a response)
    /// through session `sid`'s media plan: the body is rewritten for the
    /// other side, or — if unusable — removed with a warning (never relayed
    /// with the peer's own addresses).
    fn sdp_pass(&mut self, cx: &mut Cx, sid: Option<u64>, inp: &SipIn, m: &mut Message) {
        cx.touched.extend(sid);
        let Some(s) = sid.and_then(|id| self.state.sessions.get_mut(&id)) else {
            return;
        };
        let before = s.streams.clone();
        let mut ops = Vec::new();
        let res = session::apply_sdp(
            s,
            &mut self.state.pools,
            &self.addrs,
            inp.side,
            inp.src.ip(),
            m.sdp().unwrap_or_default(),
            &mut ops,
        );
        if s.streams != before {
            cx.changed = true;
        }
        match res {
            Ok(body) => m.set_sdp(body),
            Err(e) => {
                if matches!(e, MediaPlanError::Refused(_)) {
                    self.stats.media_refused += 1;
                }
                if let Some(n) = self.log_gate(LogKind::Policy, cx.now) {
                    warn!(instance = %self.cfg.instance, call_id = %m.call_id(), error = ?e,
                          suppressed = n, "unusable SDP in a message that cannot be refused; relayed without body");
                }
                m.clear_body();
            }
        }
        Self::pinholes(cx, ops);
    }

    fn arm(&mut self, cx: &mut Cx, kind: TimerKind, delay: u64) -> TimerId {
        let id = TimerId(self.state.next_timer);
        self.state.next_timer += 1;
        self.state.timers.insert(id, kind);
        cx.effects.push(Effect::SetTimer {
            id,
            at: cx.now.saturating_add(delay),
        });
        cx.changed = true;
        id
    }

    fn disarm(&mut self, cx: &mut Cx, id: Option<TimerId>) {
        if let Some(id) = id {
            if self.state.timers.remove(&id).is_some() {
                cx.effects.push(Effect::CancelTimer(id));
                cx.changed = true;
            }
        }
    }

    fn send(&self, cx: &mut Cx, flow: Flow, data: Vec<u8>) {
        cx.effects.push(Effect::Send(Transmit {
            side: flow.side,
            transport: flow.transport,
            src: self.sip_addr(flow.side),
            dst: flow.addr,
            data,
        }));
    }

    fn pinholes(cx: &mut Cx, ops: Vec<PinholeOp>) {
        if !ops.is_empty() {
            cx.changed = true;
        }
        cx.effects.extend(ops.into_iter().map(Effect::Pinhole));
    }

    fn our_via(&self, side: Side, transport: Transport, branch: &str) -> String {
        let a = self.sip_addr(side);
        Via {
            transport: transport.via_token().to_string(),
            host: a.ip().to_string(),
            port: Some(a.port()),
            params: vec![
                ("branch".into(), Some(branch.to_string())),
                ("rport".into(), None),
            ],
        }
        .to_string()
    }

    fn record_route(&self, side: Side, transport: Transport) -> String {
        let t = match transport {
            Transport::Tcp => ";transport=tcp",
            Transport::Udp => "",
        };
        format!("<sip:{}{};lr>", self.sip_addr(side), t)
    }

    fn t1(&self) -> u64 {
        self.cfg.timers.t1.max(1)
    }

    /// Where to send a response to a request that arrived as `inp` with top Via `via`.
    fn response_flow(inp: &SipIn, via: &Via) -> Flow {
        let addr = match inp.transport {
            Transport::Tcp => inp.src,
            Transport::Udp if via.param("rport").is_some() => inp.src,
            Transport::Udp => SocketAddr::new(inp.src.ip(), via.port.unwrap_or(5060)),
        };
        Flow {
            side: inp.side,
            transport: inp.transport,
            addr,
        }
    }

    fn local_tag(&self, req: &Message) -> String {
        let branch = req
            .top_via()
            .and_then(|v| Via::parse(v).ok())
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        ids::tag(
            &self.cfg.secret,
            &[
                req.call_id().as_bytes(),
                req.from_tag().unwrap_or_default().as_bytes(),
                branch.as_bytes(),
            ],
        )
    }

    /// Refuse a request that is over a cap: 503 with Retry-After (counted,
    /// logged at a bounded rate).
    fn refuse_overload(&mut self, cx: &mut Cx, inp: &SipIn, m: &Message, why: &'static str) {
        self.stats.capacity_refused += 1;
        if let Some(n) = self.log_gate(LogKind::Capacity, cx.now) {
            warn!(instance = %self.cfg.instance, side = %inp.side, peer = %inp.src,
                  call_id = %m.call_id(), why, suppressed = n, "request refused with 503: over a cap");
        }
        let reason = format!("Service Unavailable ({why})");
        self.reply(cx, inp, m, 503, &reason, &[("Retry-After", "10".into())]);
    }

    /// Whether the other side's topology is hidden from `side`.
    fn hides(&self, side: Side) -> bool {
        self.cfg.security.side(side).topology_hiding
    }

    /// Our Contact towards `side` (what a hidden side sees as remote target).
    fn our_contact(&self, side: Side, transport: Transport) -> String {
        let t = match transport {
            Transport::Tcp => ";transport=tcp",
            Transport::Udp => "",
        };
        format!("<sip:{}{}>", self.sip_addr(side), t)
    }

    /// A response about to be relayed upstream on server transaction `sk`
    /// (our Via already popped): the Vias hidden from its request's
    /// receiver go back in, and if the upstream side is hidden, what it may
    /// not see comes out.
    fn unhide_rehide(&self, sk: &ServerKey, m: &mut Message) {
        let Some(st) = self.state.servers.get(sk) else {
            return;
        };
        topo::restore_vias(m, &st.hidden_vias);
        let up = st.upstream;
        if self.hides(up.side) {
            topo::hide_response(
                m,
                |r| self.is_own_route(r),
                &self.our_contact(up.side, up.transport),
                &self.record_route(up.side, up.transport),
            );
        }
    }

    /// Whether the BGF's own final error responses to `flow` are
    /// retransmitted (Timer G): core peers, and access flows a registration
    /// was accepted from. Others get each one once, and again only when their
    /// request comes again (they sent no 100 Trying's worth of trust: the
    /// request never passed) — never more than they sent (no reflection).
    /// Relayed responses follow RFC 3261: their request passed the policy.
    fn retransmits_to(&self, flow: &Flow) -> bool {
        flow.side == Side::Core || self.caps.is_verified(flow.addr)
    }

    /// Answer a request ourselves, statelessly.
    fn reply(
        &mut self,
        cx: &mut Cx,
        inp: &SipIn,
        req: &Message,
        code: u16,
        reason: &str,
        extra: &[(&str, String)],
    ) {
        let Some(via) = req.top_via().and_then(|v| Via::parse(v).ok()) else {
            return;
        };
        let tag = self.local_tag(req);
        let mut resp = make_response(req, code, reason, Some(&tag));
        for (n, v) in extra {
            resp.headers.push(msg::Header {
                name: (*n).to_string(),
                value: v.clone(),
            });
        }
        if code >= 300 {
            self.stats.requests_rejected += 1;
        }
        let flow = Self::response_flow(inp, &via);
        let bytes = resp.to_bytes();
        // A final non-2xx to an INVITE needs a server transaction to absorb
        // its ACK and (UDP) retransmit the response until then.
        if req.method() == Method::Invite && code >= 300 {
            let key = server_key(req, &via, &Method::Invite);
            let mut st = ServerTxn {
                upstream: flow,
                local: inp.dst,
                invite: true,
                state: ServerState::Completed,
                last_response: bytes.clone(),
                client: None,
                session: None,
                g_interval: self.t1(),
                timers: Vec::new(),
                hidden_vias: Vec::new(),
            };
            if flow.transport == Transport::Udp && self.retransmits_to(&flow) {
                st.timers
                    .push(self.arm(cx, TimerKind::ServerRetransmit(key.clone()), self.t1()));
            }
            st.timers
                .push(self.arm(cx, TimerKind::ServerCleanup(key.clone()), 64 * self.t1()));
            self.state.servers.insert(key, st);
            cx.changed = true;
        }
        self.send(cx, flow, bytes);
    }

    // ------------------------------------------------------------------- SIP

    fn on_sip(&mut self, cx: &mut Cx, inp: &SipIn) {
        let m = match Message::parse(&inp.data, self.cfg.max_message_bytes) {
            Ok(m) => m,
            Err(e) => return self.on_malformed(cx, inp, &e),
        };
        match m.start {
            StartLine::Request { .. } => self.on_request(cx, inp, m),
            StartLine::Response { .. } => self.on_response(cx, inp, m),
        }
    }

    fn on_malformed(&mut self, cx: &mut Cx, inp: &SipIn, e: &msg::ParseError) {
        let is_response = inp.data.starts_with(b"SIP/");
        let reason: String = format!("Bad Request ({e})")
            .chars()
            .filter(|c| !c.is_control())
            .take(120)
            .collect();
        match (!is_response)
            .then(|| msg::make_error_response_raw(&inp.data, 400, &reason))
            .flatten()
        {
            Some(resp) => {
                self.stats.malformed_requests += 1;
                if let Some(n) = self.log_gate(LogKind::Malformed, cx.now) {
                    warn!(instance = %self.cfg.instance, side = %inp.side, peer = %inp.src, error = %e,
                          suppressed = n, "malformed SIP request answered with 400");
                }
                let flow = Flow {
                    side: inp.side,
                    transport: inp.transport,
                    addr: inp.src,
                };
                self.send(cx, flow, resp);
            }
            None if is_response => {
                self.stats.dropped_responses += 1;
                if let Some(n) = self.log_gate(LogKind::Malformed, cx.now) {
                    warn!(instance = %self.cfg.instance, side = %inp.side, peer = %inp.src, error = %e,
                          suppressed = n, "malformed SIP response dropped");
                }
            }
            None => {
                self.stats.dropped_other += 1;
                if let Some(n) = self.log_gate(LogKind::Malformed, cx.now) {
                    warn!(instance = %self.cfg.instance, side = %inp.side, peer = %inp.src, error = %e,
                          suppressed = n, "unparseable SIP message dropped (no Via to answer to)");
                }
            }
        }
    }

    fn on_request(&mut self, cx: &mut Cx, inp: &SipIn, mut m: Message) {
        let method = m.method();
        let Some(via) = m.top_via().and_then(|v| Via::parse(v).ok()) else {
            return;
        };
        let upstream = Flow {
            side: inp.side,
            transport: inp.transport,
            addr: inp.src,
        };
        match method {
            Method::Ack => return self.on_ack(cx, inp, m, &via),
            Method::Cancel => return self.on_cancel(cx, inp, m, &via),
            _ => {}
        }
        let skey = server_key(&m, &via, &method);
        if let Some(st) = self.state.servers.get(&skey) {
            self.stats.retransmissions_absorbed += 1;
            if !st.last_response.is_empty() {
                let (flow, bytes) = (st.upstream, st.last_response.clone());
                self.send(cx, flow, bytes);
            }
            return;
        }
        // Only schemes we can route (RFC 3261 §16.3 item 2; RFC 4475 unkscm,
        // novelsc): rsipstack parses any scheme. `urn` is the service URN of
        // IMS emergency calls (urn:service:sos, RFC 5031); `im`/`pres` are
        // IMS messaging and presence targets. Requests from the access side
        // go to the core next hop whatever their target, so these route.
        if let StartLine::Request { uri, .. } = &m.start {
            let scheme = uri.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
            if !matches!(
                scheme.as_deref(),
                Some("sip" | "sips" | "tel" | "urn" | "im" | "pres")
            ) {
                return self.reply(cx, inp, &m, 416, "Unsupported URI Scheme", &[]);
            }
        }
        let max_forwards = m
            .header("Max-Forwards")
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(70);
        if max_forwards == 0 {
            if method == Method::Options {
                return self.reply_options(cx, inp, &m);
            }
            return self.reply(cx, inp, &m, 483, "Too Many Hops", &[]);
        }
        let looped = m.headers_named("Via").any(|v| {
            Via::parse(v)
                .ok()
                .and_then(|v| {
                    let ip: std::net::IpAddr = v.host.parse().ok()?;
                    Some(SocketAddr::new(ip, v.port.unwrap_or(5060)))
                })
                .map(|a| self.is_own(a))
                .unwrap_or(false)
        });
        if looped {
            return self.reply(cx, inp, &m, 482, "Loop Detected", &[]);
        }
        // We support no proxy extensions: every Proxy-Require option tag is
        // unknown to us (RFC 3261 §16.3 item 5; RFC 4475 bext01).
        let unsupported: Vec<&str> = m
            .headers_named("Proxy-Require")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        if !unsupported.is_empty() {
            let list = unsupported.join(", ");
            return self.reply(cx, inp, &m, 420, "Bad Extension", &[("Unsupported", list)]);
        }
        let StartLine::Request { uri: ruri, .. } = m.start.clone() else {
            return;
        };
        // Pop our own Route entries (double Record-Route: up to two).
        let popped = self.pop_own_routes(&mut m);
        if method == Method::Options && popped == 0 && self.addressed_to_us(&ruri, inp.side) {
            return self.reply_options(cx, inp, &m);
        }
        let egress = inp.side.other();
        let in_dialog = m.to_tag().is_some();
        let call_id = m.call_id().to_string();

        if method == Method::Register && inp.side == Side::Core {
            return self.reply(
                cx,
                inp,
                &m,
                403,
                "Forbidden (REGISTER from the core side)",
                &[],
            );
        }
        // A Contact we cannot rewrite must not reach the registrar as the UE
        // sent it: the core would then bypass the BGF (RFC 4475 regbadct).
        if method == Method::Register
            && m.headers_named("Contact")
                .any(|c| c.trim() != "*" && NameAddr::parse(c).is_err())
        {
            return self.reply(cx, inp, &m, 400, "Bad Request (unusable Contact)", &[]);
        }

        // Resolve where the request goes (routing policy, `routing.rs`).
        let mut sid = None;
        let routed = if in_dialog {
            match self.match_dialog(inp, &m) {
                DialogMatch::Matched { sid: id, new_tag } => {
                    if let (Some(tag), Some(s)) = (new_tag, self.state.sessions.get_mut(&id)) {
                        s.to_tag = Some(tag);
                        cx.changed = true;
                    }
                    sid = Some(id);
                    let s = &self.state.sessions[&id];
                    self.route_in_dialog(s, egress, &m, &ruri)
                }
                DialogMatch::None(why) => {
                    self.stats.dialog_mismatches += 1;
                    debug!(instance = %self.cfg.instance, side = %inp.side, peer = %inp.src,
                           call_id = %call_id, method = %method, why, "in-dialog request matches no dialog");
                    return self.reply(cx, inp, &m, 481, "Call/Transaction Does Not Exist", &[]);
                }
            }
        } else {
            if matches!(method, Method::Prack | Method::Update | Method::Bye) {
                // Only ever sent inside a dialog (with a To-tag).
                self.stats.dialog_mismatches += 1;
                return self.reply(cx, inp, &m, 481, "Call/Transaction Does Not Exist", &[]);
            }
            if creates_dialog(&method) && self.state.by_call_id.contains_key(&call_id) {
                // A second dialog on a live Call-ID (a hijack attempt, or a
                // fork we cannot tell apart): RFC 3261 §8.2.2.2 merged request.
                self.stats.dialog_mismatches += 1;
                return self.reply(cx, inp, &m, 482, "Loop Detected (Call-ID in use)", &[]);
            }
            if inp.side == Side::Access
                && self.cfg.security.require_registration
                && method != Method::Register
                && !self.caps.has_registration(inp.src.ip())
                && !caps::is_emergency_request(&inp.data)
            {
                self.stats.routing_refused += 1;
                return self.reply(cx, inp, &m, 403, "Forbidden (register first)", &[]);
            }
            match self.route_initial(inp, &m, &ruri) {
                Ok(r) => r,
                Err((code, reason)) => {
                    self.stats.routing_refused += 1;
                    return self.reply(cx, inp, &m, code, reason, &[]);
                }
            }
        };
        if let Some(routes) = &routed.routes {
            routing::set_routes(&mut m, routes);
        }
        let dest = routed.dest;
        let new_ruri = routed.ruri;

        // Caps (`caps.rs`): dialogs, unanswered calls and ports per access
        // source, the emergency share of the port pools. Emergency requests
        // are exempt.
        if !in_dialog && creates_dialog(&method) && !caps::is_emergency_request(&inp.data) {
            let invite = method == Method::Invite;
            let ports = if invite {
                m.sdp()
                    .and_then(|b| Sdp::parse(b).ok())
                    .map(|sdp| sdp.streams().iter().filter(|i| i.port != 0).count() as u32)
                    .unwrap_or(0)
            } else {
                0
            };
            let limits = &self.cfg.security.limits;
            let why = if inp.side == Side::Access {
                self.caps
                    .dialog_refusal(inp.src.ip(), invite, ports, limits)
            } else {
                None
            }
            .or_else(|| caps::reserve_refusal(&self.state.pools, ports, limits));
            if let Some(why) = why {
                return self.refuse_overload(cx, inp, &m, why);
            }
        }

        // Session association: dialog-creating INVITE / SUBSCRIBE / REFER.
        let mut new_session = false;
        if !in_dialog && creates_dialog(&method) {
            let id = self.state.next_session;
            let ue_flow = if inp.side == Side::Access {
                upstream
            } else {
                dest
            };
            let contact = m
                .header("Contact")
                .and_then(|c| NameAddr::parse(c).ok())
                .map(|na| na.uri);
            let s = Session {
                id,
                call_id: call_id.clone(),
                origin: inp.side,
                state: SessionState::Early,
                created_at: cx.now,
                ue_flow,
                caller: m.header("From").unwrap_or_default().to_string(),
                callee: m.header("To").unwrap_or_default().to_string(),
                from_tag: m.from_tag().unwrap_or_default(),
                to_tag: None,
                early_tags: Vec::new(),
                hidden_rr: Vec::new(),
                usage: if method == Method::Invite {
                    Usage::Invite
                } else {
                    Usage::Subscription
                },
                access_contact: if inp.side == Side::Access {
                    contact.clone()
                } else {
                    None
                },
                core_contact: if inp.side == Side::Core {
                    contact
                } else {
                    None
                },
                access_routes: Vec::new(),
                core_routes: Vec::new(),
                cseq_from_access: 0,
                cseq_from_core: 0,
                streams: Vec::new(),
                expiry: None,
            };
            self.state.next_session += 1;
            self.state.sessions.insert(id, s);
            self.state.by_call_id.insert(call_id.clone(), id);
            self.stats.sessions_created += 1;
            new_session = true;
            sid = Some(id);
            cx.changed = true;
        }
        cx.touched.extend(sid);
        let cseq = m.cseq().map(|c| c.0).unwrap_or(0);
        if let Some(s) = sid.and_then(|id| self.state.sessions.get_mut(&id)) {
            s.note_cseq(inp.side, cseq);
            if method == Method::Bye || is_final_notify(&m) {
                s.state = SessionState::Terminating;
            }
            // Target refresh (RFC 3261 §12.2.2): a re-INVITE, UPDATE or
            // in-dialog SUBSCRIBE/NOTIFY may carry a new Contact.
            if in_dialog
                && matches!(
                    method.as_str(),
                    "INVITE" | "UPDATE" | "SUBSCRIBE" | "NOTIFY"
                )
            {
                if let Some(c) = m.header("Contact").and_then(|c| NameAddr::parse(c).ok()) {
                    match inp.side {
                        Side::Access => s.access_contact = Some(c.uri),
                        Side::Core => s.core_contact = Some(c.uri),
                    }
                }
            }
            cx.changed = true;
        }

        // SDP.
        let mut ops = Vec::new();
        let mut rollback = None;
        if m.has_sdp() && matches!(method, Method::Invite | Method::Update | Method::Prack) {
            let Some(id) = sid else {
                return self.reply(cx, inp, &m, 481, "Call/Transaction Does Not Exist", &[]);
            };
            let Some(s) = self.state.sessions.get_mut(&id) else {
                return;
            };
            if !new_session && matches!(method, Method::Invite | Method::Update | Method::Prack) {
                rollback = Some(s.streams.clone());
            }
            let res = session::apply_sdp(
                s,
                &mut self.state.pools,
                &self.addrs,
                inp.side,
                inp.src.ip(),
                m.sdp().unwrap_or_default(),
                &mut ops,
            );
            match res {
                Ok(body) => m.set_sdp(body),
                Err(err) => {
                    if let Some(saved) = rollback.take() {
                        session::rollback(s, saved, &mut self.state.pools, &mut ops);
                    }
                    Self::pinholes(cx, ops);
                    if new_session {
                        self.end_session(cx, id);
                        self.stats.sessions_refused += 1;
                    }
                    return match err {
                        MediaPlanError::Refused(why) => {
                            self.stats.media_refused += 1;
                            if let Some(n) = self.log_gate(LogKind::Policy, cx.now) {
                                warn!(instance = %self.cfg.instance, call_id = %call_id, peer = %inp.src,
                                      why = %why, suppressed = n, "request refused with 488 by the media policy");
                            }
                            let warning = format!("399 bgf \"{}\"", sanitize(&why));
                            self.reply(
                                cx,
                                inp,
                                &m,
                                488,
                                "Not Acceptable Here",
                                &[("Warning", warning)],
                            )
                        }
                        MediaPlanError::Sdp(e) => {
                            if let Some(n) = self.log_gate(LogKind::Malformed, cx.now) {
                                warn!(instance = %self.cfg.instance, call_id = %call_id, error = %e,
                                      suppressed = n, "request refused: SDP not usable");
                            }
                            let warning = format!("399 bgf \"{}\"", sanitize(&e.to_string()));
                            self.reply(
                                cx,
                                inp,
                                &m,
                                488,
                                "Not Acceptable Here",
                                &[("Warning", warning)],
                            )
                        }
                        MediaPlanError::NoPorts(side) => {
                            if let Some(n) = self.log_gate(LogKind::Capacity, cx.now) {
                                warn!(instance = %self.cfg.instance, call_id = %call_id, side = %side,
                                      suppressed = n, "request refused: media port pool exhausted");
                            }
                            self.reply(
                                cx,
                                inp,
                                &m,
                                503,
                                "Service Unavailable (no media ports)",
                                &[("Retry-After", "5".into())],
                            )
                        }
                    };
                }
            }
        }

        // REGISTER: rewrite Contacts towards the core.
        let mut pending = Vec::new();
        if method == Method::Register {
            let aor = m
                .header("To")
                .and_then(|t| NameAddr::parse(t).ok())
                .map(|na| na.uri)
                .unwrap_or_default();
            let tcp = self.cfg.core_transport == Transport::Tcp;
            for h in m.headers.iter_mut().filter(|h| h.name == "Contact") {
                if h.value.trim() == "*" {
                    pending.push(PendingBinding {
                        token: "*".into(),
                        aor: aor.clone(),
                        contact: String::new(),
                        original: "*".into(),
                        flow: upstream,
                    });
                    continue;
                }
                if let Some((value, pb)) = registrar::rewrite_contact(
                    &self.cfg.secret,
                    &aor,
                    &h.value,
                    self.cfg.core.sip,
                    tcp,
                    upstream,
                ) {
                    h.value = value;
                    pending.push(pb);
                }
            }
        }

        if method == Method::Register && !caps::is_emergency_request(&inp.data) {
            let new = pending
                .iter()
                .filter(|p| p.token != "*" && !self.state.bindings.contains_key(&p.token))
                .count() as u32;
            if let Some(why) =
                self.caps
                    .registration_refusal(inp.src.ip(), new, &self.cfg.security.limits)
            {
                return self.refuse_overload(cx, inp, &m, why);
            }
        }

        // Build the forwarded request (RFC 3261 §16.6).
        if let Some(top) = m.headers.iter_mut().find(|h| h.name == "Via") {
            let mut v = via.clone();
            if v.host != inp.src.ip().to_string() {
                v.set_param("received", Some(inp.src.ip().to_string()));
            }
            if v.param("rport").is_some() {
                v.set_param("rport", Some(inp.src.port().to_string()));
            }
            top.value = v.to_string();
        }
        let branch = ids::branch(
            &self.cfg.secret,
            &[
                skey.branch.as_bytes(),
                skey.sent_by.as_bytes(),
                method.as_str().as_bytes(),
                inp.side.as_str().as_bytes(),
            ],
        );
        m.push_front("Via", self.our_via(egress, dest.transport, &branch));
        m.set("Max-Forwards", (max_forwards - 1).to_string());
        if !in_dialog && creates_dialog(&method) {
            m.push_front("Record-Route", self.record_route(inp.side, inp.transport));
            m.push_front("Record-Route", self.record_route(egress, dest.transport));
        }
        if let Some(u) = new_ruri {
            m.start = StartLine::Request {
                method: method.clone(),
                uri: u,
            };
        }
        // Topology hiding (`topo.rs`): what the hidden side may not see is
        // kept in the server transaction and the session.
        let (bytes, hidden) = if self.hides(egress) {
            let mut h = m.clone();
            let kept = topo::hide_request(
                &mut h,
                &self.record_route(egress, dest.transport),
                &self.our_contact(egress, dest.transport),
            );
            (h.to_bytes(), kept)
        } else {
            (m.to_bytes(), topo::Hidden::default())
        };
        if new_session && !hidden.record_route.is_empty() {
            if let Some(s) = sid.and_then(|id| self.state.sessions.get_mut(&id)) {
                s.hidden_rr = hidden.record_route;
            }
        }
        let invite = method == Method::Invite;
        let ckey = ClientKey {
            branch,
            cancel: false,
        };

        // Server transaction (upstream) and, for INVITE, 100 Trying at once.
        let mut st = ServerTxn {
            upstream: Self::response_flow(inp, &via),
            local: inp.dst,
            invite,
            state: ServerState::Proceeding,
            last_response: Vec::new(),
            client: Some(ckey.clone()),
            session: sid,
            g_interval: self.t1(),
            timers: Vec::new(),
            hidden_vias: hidden.vias,
        };
        if invite {
            // From the forwarded request minus our own Via: the upstream Via
            // then carries received/rport as RFC 3581 wants.
            let mut trying = make_response(&m, 100, "Trying", None);
            trying.pop_front("Via");
            st.last_response = trying.to_bytes();
            let flow = st.upstream;
            self.send(cx, flow, st.last_response.clone());
        }
        self.state.servers.insert(skey.clone(), st);

        // Client transaction (downstream).
        let mut ct = ClientTxn {
            downstream: dest,
            local: self.sip_addr(egress),
            invite,
            request: bytes.clone(),
            state: ClientState::Calling,
            role: ClientRole::Relay(skey),
            session: sid,
            cancel_pending: false,
            cancelled: false,
            interval: self.t1(),
            retransmit: None,
            timeout: None,
            timer_c: None,
            cleanup: None,
            pending_bindings: pending,
            rollback,
        };
        if dest.transport == Transport::Udp {
            ct.retransmit =
                Some(self.arm(cx, TimerKind::ClientRetransmit(ckey.clone()), self.t1()));
        }
        ct.timeout = Some(self.arm(cx, TimerKind::ClientTimeout(ckey.clone()), 64 * self.t1()));
        if invite {
            ct.timer_c =
                Some(self.arm(cx, TimerKind::TimerC(ckey.clone()), self.cfg.timers.timer_c));
        }
        self.state.clients.insert(ckey, ct);
        Self::pinholes(cx, ops);
        debug!(instance = %self.cfg.instance, call_id = %call_id, method = %method,
               from = %inp.side, to = %dest.addr, "request forwarded");
        self.send(cx, dest, bytes);
        self.stats.requests_forwarded += 1;
        cx.changed = true;
    }

    fn addressed_to_us(&self, ruri: &str, side: Side) -> bool {
        msg::parse_uri(ruri)
            .ok()
            .map(|u| {
                let user_empty = msg::uri_user(&u).map(str::is_empty).unwrap_or(true);
                user_empty
                    && msg::uri_socket(&u)
                        .map(|a| a == self.sip_addr(side))
                        .unwrap_or(false)
            })
            .unwrap_or(false)
    }

    fn reply_options(&mut self, cx: &mut Cx, inp: &SipIn, m: &Message) {
        let allow = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, PRACK, UPDATE".to_string();
        self.reply(
            cx,
            inp,
            m,
            200,
            "OK",
            &[
                ("Allow", allow),
                ("Accept", "application/sdp".into()),
                ("Supported", "100rel, timer".into()),
            ],
        );
    }

    fn on_ack(&mut self, cx: &mut Cx, inp: &SipIn, mut m: Message, via: &Via) {
        let ikey = server_key(&m, via, &Method::Invite);
        if let Some(st) = self.state.servers.get_mut(&ikey) {
            match st.state {
                ServerState::Completed => {
                    st.state = ServerState::Confirmed;
                    let timers = std::mem::take(&mut st.timers);
                    let udp = st.upstream.transport == Transport::Udp;
                    for t in timers {
                        self.disarm(cx, Some(t));
                    }
                    if udp {
                        let t = self.arm(
                            cx,
                            TimerKind::ServerCleanup(ikey.clone()),
                            self.cfg.timers.t4,
                        );
                        if let Some(st) = self.state.servers.get_mut(&ikey) {
                            st.timers.push(t);
                        }
                    } else {
                        self.state.servers.remove(&ikey);
                    }
                    cx.changed = true;
                    return;
                }
                ServerState::Confirmed => {
                    self.stats.retransmissions_absorbed += 1;
                    return;
                }
                _ => {}
            }
        }
        // ACK for a 2xx: end to end, routed like any in-dialog request —
        // only for a dialog it matches by Call-ID, both tags and flow.
        self.pop_own_routes(&mut m);
        let sid = match self.match_dialog(inp, &m) {
            DialogMatch::Matched { sid, .. } => sid,
            DialogMatch::None(why) => {
                self.stats.dropped_other += 1;
                self.stats.dialog_mismatches += 1;
                debug!(instance = %self.cfg.instance, call_id = %m.call_id(), peer = %inp.src, why, "stray ACK dropped");
                return;
            }
        };
        let StartLine::Request { uri: ruri, .. } = m.start.clone() else {
            return;
        };
        let egress = inp.side.other();
        let routed = {
            let s = &self.state.sessions[&sid];
            self.route_in_dialog(s, egress, &m, &ruri)
        };
        if let Some(u) = routed.ruri {
            m.start = StartLine::Request {
                method: Method::Ack,
                uri: u,
            };
        }
        if let Some(routes) = &routed.routes {
            routing::set_routes(&mut m, routes);
        }
        let dest = routed.dest;
        let sid = Some(sid);
        if m.has_sdp() {
            self.sdp_pass(cx, sid, inp, &mut m);
        }
        let branch = ids::branch(
            &self.cfg.secret,
            &[
                via.branch().unwrap_or_default().as_bytes(),
                via.sent_by().as_bytes(),
                b"ACK",
            ],
        );
        m.push_front("Via", self.our_via(egress, dest.transport, &branch));
        let mf = m
            .header("Max-Forwards")
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(70);
        m.set("Max-Forwards", mf.saturating_sub(1).to_string());
        self.send(cx, dest, m.to_bytes());
        self.stats.requests_forwarded += 1;
    }

    fn on_cancel(&mut self, cx: &mut Cx, inp: &SipIn, m: Message, via: &Via) {
        let ikey = server_key(&m, via, &Method::Invite);
        let from_upstream = |st: &ServerTxn| {
            st.upstream.side == inp.side
                && (inp.side == Side::Core
                    || routing::same_ue(&st.upstream, inp.transport, inp.src))
        };
        let Some(st) = self.state.servers.get(&ikey).filter(|st| from_upstream(st)) else {
            self.stats.dialog_mismatches += 1;
            return self.reply(cx, inp, &m, 481, "Call/Transaction Does Not Exist", &[]);
        };
        let client = st.client.clone();
        let proceeding = st.state == ServerState::Proceeding;
        self.reply(cx, inp, &m, 200, "OK", &[]);
        if !proceeding {
            return;
        }
        let Some(ck) = client else { return };
        let Some(ct) = self.state.clients.get_mut(&ck) else {
            return;
        };
        if ct.cancelled {
            self.stats.retransmissions_absorbed += 1;
            return;
        }
        ct.cancelled = true;
        cx.changed = true;
        if ct.state == ClientState::Proceeding {
            self.send_cancel(cx, &ck);
        } else {
            ct.cancel_pending = true;
        }
    }

    /// Send a CANCEL for the INVITE client transaction `ck` (RFC 3261 §9.1).
    fn send_cancel(&mut self, cx: &mut Cx, ck: &ClientKey) {
        let Some(ct) = self.state.clients.get(ck) else {
            return;
        };
        let Ok(inv) = Message::parse(&ct.request, usize::MAX) else {
            return;
        };
        let StartLine::Request { uri, .. } = &inv.start else {
            return;
        };
        let mut headers = Vec::new();
        if let Some(v) = inv.top_via() {
            headers.push(hdr("Via", v));
        }
        for r in inv.headers_named("Route") {
            headers.push(hdr("Route", r));
        }
        headers.push(hdr("Max-Forwards", "70"));
        for n in ["From", "To", "Call-ID"] {
            if let Some(v) = inv.header(n) {
                headers.push(hdr(n, v));
            }
        }
        let n = inv.cseq().map(|c| c.0).unwrap_or(1);
        headers.push(hdr("CSeq", &format!("{n} CANCEL")));
        let cancel = Message {
            start: StartLine::Request {
                method: Method::Cancel,
                uri: uri.clone(),
            },
            headers,
            body: Vec::new(),
        };
        let (dest, session) = (ct.downstream, ct.session);
        let key = ClientKey {
            branch: ck.branch.clone(),
            cancel: true,
        };
        self.start_internal(cx, key, dest, cancel.to_bytes(), session);
    }

    /// Start a client transaction for a request the core originates itself.
    fn start_internal(
        &mut self,
        cx: &mut Cx,
        key: ClientKey,
        dest: Flow,
        bytes: Vec<u8>,
        session: Option<u64>,
    ) {
        if self.state.clients.contains_key(&key) {
            return;
        }
        let mut ct = ClientTxn {
            downstream: dest,
            local: self.sip_addr(dest.side),
            invite: false,
            request: bytes.clone(),
            state: ClientState::Calling,
            role: ClientRole::Internal,
            session,
            cancel_pending: false,
            cancelled: false,
            interval: self.t1(),
            retransmit: None,
            timeout: None,
            timer_c: None,
            cleanup: None,
            pending_bindings: Vec::new(),
            rollback: None,
        };
        if dest.transport == Transport::Udp {
            ct.retransmit = Some(self.arm(cx, TimerKind::ClientRetransmit(key.clone()), self.t1()));
        }
        ct.timeout = Some(self.arm(cx, TimerKind::ClientTimeout(key.clone()), 64 * self.t1()));
        self.state.clients.insert(key, ct);
        self.send(cx, dest, bytes);
        cx.changed = true;
    }

    // ------------------------------------------------------------- responses

    fn on_response(&mut self, cx: &mut Cx, inp: &SipIn, mut m: Message) {
        let code = m.code().unwrap_or(0);
        let Some(via) = m.top_via().and_then(|v| Via::parse(v).ok()) else {
            return;
        };
        let ours = via
            .host
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, via.port.unwrap_or(5060)) == self.sip_addr(inp.side))
            .unwrap_or(false);
        if !ours {
            self.stats.dropped_responses += 1;
            self.stats.responses_unmatched += 1;
            if let Some(n) = self.log_gate(LogKind::Policy, cx.now) {
                warn!(instance = %self.cfg.instance, side = %inp.side, peer = %inp.src, via = %via,
                      suppressed = n, "response dropped: top Via is not ours");
            }
            return;
        }
        let method = m.method();
        let ckey = ClientKey {
            branch: via.branch().unwrap_or_default().to_string(),
            cancel: method == Method::Cancel,
        };
        // Only a response to one of our client transactions, arriving on the
        // side the request left on (and, on the access side, from the peer it
        // went to) is relayed; responses are never routed by their Vias.
        let matched = self.state.clients.get(&ckey).filter(|ct| {
            ct.downstream.side == inp.side
                && (inp.side == Side::Core
                    || routing::same_ue(&ct.downstream, inp.transport, inp.src))
        });
        let Some(ct) = matched else {
            self.stats.dropped_responses += 1;
            self.stats.responses_unmatched += 1;
            debug!(instance = %self.cfg.instance, code, call_id = %m.call_id(), peer = %inp.src,
                   "response matches no client transaction of ours; dropped");
            return;
        };
        let (invite, state, role) = (ct.invite, ct.state, ct.role.clone());

        if role == ClientRole::Internal {
            if code >= 200 {
                self.finish_client(cx, &ckey);
                if method == Method::Bye {
                    debug!(instance = %self.cfg.instance, call_id = %m.call_id(), code, "BYE sent by the BGF answered");
                }
            } else if state == ClientState::Calling {
                self.proceeding(cx, &ckey);
            }
            return;
        }
        let ClientRole::Relay(skey) = role else {
            return;
        };

        match state {
            ClientState::Completed => {
                self.stats.retransmissions_absorbed += 1;
                if invite && code >= 300 {
                    if let Some(ack) = self.build_ack(&ckey, &m) {
                        let dest = self.state.clients.get(&ckey).map(|c| c.downstream);
                        if let Some(dest) = dest {
                            self.send(cx, dest, ack);
                        }
                    }
                }
                return;
            }
            ClientState::Accepted => {
                if (200..300).contains(&code) {
                    return self.relay_2xx_again(cx, inp, &skey, m);
                }
                self.stats.dropped_responses += 1;
                return;
            }
            _ => {}
        }

        if code == 100 {
            self.proceeding(cx, &ckey);
            return;
        }

        let sid = self.state.clients.get(&ckey).and_then(|c| c.session);
        cx.touched.extend(sid);
        let mut ops = Vec::new();

        // A dialog-creating request went to a hidden side with only our
        // Record-Route: put the list back before the route sets are read.
        if self.hides(inp.side) && (101..300).contains(&code) {
            let full = sid
                .and_then(|id| self.state.sessions.get(&id))
                .map(|s| s.hidden_rr.clone())
                .unwrap_or_default();
            topo::restore_record_route(&mut m, &full, |r| self.is_own_route(r));
        }

        // Dialog and media bookkeeping.
        if let Some(s) = sid.and_then(|id| self.state.sessions.get_mut(&id)) {
            let dialog_response = (101..300).contains(&code)
                && (invite || (s.usage == Usage::Subscription && creates_dialog(&method)));
            if dialog_response {
                if let Some(tag) = m.to_tag() {
                    if s.to_tag.is_none() || code >= 200 {
                        if let Some(old) = s.to_tag.replace(tag) {
                            s.note_early_tag(&old);
                        }
                        s.callee = m.header("To").unwrap_or_default().to_string();
                    } else {
                        s.note_early_tag(&tag);
                    }
                }
                if let Some(c) = m.header("Contact").and_then(|c| NameAddr::parse(c).ok()) {
                    match inp.side {
                        Side::Access => s.access_contact = Some(c.uri),
                        Side::Core => s.core_contact = Some(c.uri),
                    }
                }
                if s.access_routes.is_empty() && s.core_routes.is_empty() {
                    let rr: Vec<String> = m
                        .headers_named("Record-Route")
                        .map(str::to_string)
                        .collect();
                    let (towards_origin, towards_other) = split_route_set(&rr, |r| {
                        NameAddr::parse(r)
                            .ok()
                            .and_then(|na| msg::parse_uri(&na.uri).ok())
                            .and_then(|u| msg::uri_socket(&u))
                            .map(|a| a == self.cfg.access.sip || a == self.cfg.core.sip)
                            .unwrap_or(false)
                    });
                    match s.origin {
                        Side::Access => {
                            s.access_routes = towards_origin;
                            s.core_routes = towards_other;
                        }
                        Side::Core => {
                            s.core_routes = towards_origin;
                            s.access_routes = towards_other;
                        }
                    }
                }
                cx.changed = true;
            }
        }
        if m.has_sdp()
            && code < 300
            && matches!(method, Method::Invite | Method::Prack | Method::Update)
        {
            self.sdp_pass(cx, sid, inp, &mut m);
        }

        if code < 200 {
            self.proceeding(cx, &ckey);
            if invite {
                let old = self.state.clients.get(&ckey).and_then(|c| c.timer_c);
                self.disarm(cx, old);
                let t = self.arm(cx, TimerKind::TimerC(ckey.clone()), self.cfg.timers.timer_c);
                let pending = match self.state.clients.get_mut(&ckey) {
                    Some(c) => {
                        c.timer_c = Some(t);
                        std::mem::take(&mut c.cancel_pending)
                    }
                    None => false,
                };
                if pending {
                    self.send_cancel(cx, &ckey);
                }
            }
        } else if invite && code < 300 {
            self.client_accepted(cx, &ckey);
            self.server_finish(cx, &skey, ServerState::Accepted, None);
            if let Some(id) = sid {
                self.confirm_session(cx, id, &m);
            }
        } else if invite {
            if let Some(ack) = self.build_ack(&ckey, &m) {
                let dest = self.state.clients.get(&ckey).map(|c| c.downstream);
                if let Some(dest) = dest {
                    self.send(cx, dest, ack);
                }
            }
            let rollback = self.client_completed(cx, &ckey, 32_000);
            if let Some(id) = sid {
                self.invite_failed(cx, id, rollback, &mut ops);
            }
        } else {
            let (rollback, pending) = match self.state.clients.get_mut(&ckey) {
                Some(c) => (c.rollback.take(), std::mem::take(&mut c.pending_bindings)),
                None => (None, Vec::new()),
            };
            self.client_completed(cx, &ckey, self.cfg.timers.t4);
            if method == Method::Register && code < 300 {
                self.registered(cx, &mut m, pending);
            }
            let sub = sid
                .and_then(|id| self.state.sessions.get(&id))
                .and_then(|s| (s.usage == Usage::Subscription).then_some((s.state, s.id)));
            if method == Method::Bye {
                if let Some(id) = sid {
                    self.end_session(cx, id);
                }
            } else if let Some((state, id)) = sub {
                self.subscription_response(cx, id, state, &method, code, &m);
            } else if code >= 300 {
                if let (Some(id), Some(saved)) = (sid, rollback) {
                    if let Some(s) = self.state.sessions.get_mut(&id) {
                        session::rollback(s, saved, &mut self.state.pools, &mut ops);
                    }
                }
            }
        }
        Self::pinholes(cx, ops);

        // Relay upstream (RFC 3261 §16.7).
        m.pop_front("Via");
        self.unhide_rehide(&skey, &mut m);
        let bytes = m.to_bytes();
        let Some(st) = self.state.servers.get_mut(&skey) else {
            return;
        };
        let flow = st.upstream;
        if code >= 200 {
            let keep = !(invite && code < 300);
            if keep {
                st.last_response = bytes.clone();
            }
        } else {
            st.last_response = bytes.clone();
        }
        if code >= 300 || (!invite && code >= 200) {
            self.server_finish(cx, &skey, ServerState::Completed, Some(bytes.clone()));
        }
        self.send(cx, flow, bytes);
        self.stats.responses_forwarded += 1;
        cx.changed = true;
    }

    /// A 2xx to an INVITE whose client transaction already accepted one (a
    /// retransmission, or a second 2xx of a fork): relayed statelessly to
    /// the upstream peer of its server transaction (RFC 6026), never by Via.
    fn relay_2xx_again(&mut self, cx: &mut Cx, inp: &SipIn, skey: &ServerKey, mut m: Message) {
        let Some(flow) = self.state.servers.get(skey).map(|st| st.upstream) else {
            self.stats.dropped_responses += 1;
            return;
        };
        m.pop_front("Via");
        self.unhide_rehide(skey, &mut m);
        if m.has_sdp() {
            let sid = self.state.by_call_id.get(m.call_id()).copied();
            self.sdp_pass(cx, sid, inp, &mut m);
        }
        self.send(cx, flow, m.to_bytes());
        self.stats.responses_forwarded += 1;
    }

    fn proceeding(&mut self, cx: &mut Cx, ck: &ClientKey) {
        let Some(c) = self.state.clients.get_mut(ck) else {
            return;
        };
        if c.state != ClientState::Calling {
            return;
        }
        c.state = ClientState::Proceeding;
        cx.changed = true;
        if c.invite {
            let t = c.retransmit.take();
            self.disarm(cx, t);
        } else {
            c.interval = self.cfg.timers.t2;
        }
    }

    fn client_accepted(&mut self, cx: &mut Cx, ck: &ClientKey) {
        let Some(c) = self.state.clients.get_mut(ck) else {
            return;
        };
        c.state = ClientState::Accepted;
        let ts = [c.retransmit.take(), c.timeout.take(), c.timer_c.take()];
        for t in ts {
            self.disarm(cx, t);
        }
        let t = self.arm(cx, TimerKind::ClientCleanup(ck.clone()), 64 * self.t1());
        if let Some(c) = self.state.clients.get_mut(ck) {
            c.cleanup = Some(t);
            c.rollback = None;
        }
    }

    /// Final non-2xx (or any non-INVITE final): completed; returns the saved
    /// media for rollback.
    fn client_completed(
        &mut self,
        cx: &mut Cx,
        ck: &ClientKey,
        udp_wait: u64,
    ) -> Option<Vec<Option<media_plane::PinholeSpec>>> {
        let c = self.state.clients.get_mut(ck)?;
        c.state = ClientState::Completed;
        let rollback = c.rollback.take();
        let udp = c.downstream.transport == Transport::Udp;
        let ts = [c.retransmit.take(), c.timeout.take(), c.timer_c.take()];
        for t in ts {
            self.disarm(cx, t);
        }
        if udp {
            let t = self.arm(cx, TimerKind::ClientCleanup(ck.clone()), udp_wait);
            if let Some(c) = self.state.clients.get_mut(ck) {
                c.cleanup = Some(t);
            }
        } else {
            self.state.clients.remove(ck);
        }
        cx.changed = true;
        rollback
    }

    fn finish_client(&mut self, cx: &mut Cx, ck: &ClientKey) {
        if let Some(c) = self.state.clients.remove(ck) {
            for t in [c.retransmit, c.timeout, c.timer_c, c.cleanup] {
                self.disarm(cx, t);
            }
            cx.changed = true;
        }
    }

    /// The server transaction got its final response.
    fn server_finish(
        &mut self,
        cx: &mut Cx,
        sk: &ServerKey,
        state: ServerState,
        last: Option<Vec<u8>>,
    ) {
        let Some(st) = self.state.servers.get_mut(sk) else {
            return;
        };
        if st.state != ServerState::Proceeding {
            return;
        }
        st.state = state;
        if let Some(l) = last {
            st.last_response = l;
        }
        let udp = st.upstream.transport == Transport::Udp;
        let invite = st.invite;
        cx.changed = true;
        match (state, invite) {
            (ServerState::Completed, true) => {
                if udp {
                    let g = self.arm(cx, TimerKind::ServerRetransmit(sk.clone()), self.t1());
                    let h = self.arm(cx, TimerKind::ServerCleanup(sk.clone()), 64 * self.t1());
                    if let Some(st) = self.state.servers.get_mut(sk) {
                        st.timers.extend([g, h]);
                    }
                } else {
                    let h = self.arm(cx, TimerKind::ServerCleanup(sk.clone()), 64 * self.t1());
                    if let Some(st) = self.state.servers.get_mut(sk) {
                        st.timers.push(h);
                    }
                }
            }
            _ => {
                // Timer J (non-INVITE) / L (INVITE accepted): absorb retransmissions a while.
                if udp || state == ServerState::Accepted {
                    let t = self.arm(cx, TimerKind::ServerCleanup(sk.clone()), 64 * self.t1());
                    if let Some(st) = self.state.servers.get_mut(sk) {
                        st.timers.push(t);
                    }
                } else {
                    self.state.servers.remove(sk);
                }
            }
        }
    }

    fn build_ack(&self, ck: &ClientKey, resp: &Message) -> Option<Vec<u8>> {
        let ct = self.state.clients.get(ck)?;
        let inv = Message::parse(&ct.request, usize::MAX).ok()?;
        let StartLine::Request { uri, .. } = &inv.start else {
            return None;
        };
        let mut headers = Vec::new();
        headers.push(hdr("Via", inv.top_via()?));
        for r in inv.headers_named("Route") {
            headers.push(hdr("Route", r));
        }
        headers.push(hdr("Max-Forwards", "70"));
        headers.push(hdr("From", inv.header("From")?));
        headers.push(hdr("To", resp.header("To")?));
        headers.push(hdr("Call-ID", inv.call_id()));
        let n = inv.cseq().ok()?.0;
        headers.push(hdr("CSeq", &format!("{n} ACK")));
        Some(
            Message {
                start: StartLine::Request {
                    method: Method::Ack,
                    uri: uri.clone(),
                },
                headers,
                body: Vec::new(),
            }
            .to_bytes(),
        )
    }

    fn confirm_session(&mut self, cx: &mut Cx, id: u64, resp: &Message) {
        let expires_s = resp
            .header("Session-Expires")
            .and_then(|v| v.split(';').next())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(self.cfg.session_expires_s);
        let old = match self.state.sessions.get_mut(&id) {
            Some(s) => {
                if s.state == SessionState::Early {
                    s.state = SessionState::Confirmed;
                    info!(instance = %self.cfg.instance, call_id = %s.call_id, session = id, "session confirmed");
                }
                s.expiry.take()
            }
            None => return,
        };
        self.disarm(cx, old);
        if expires_s > 0 {
            let t = self.arm(
                cx,
                TimerKind::SessionExpiry(id),
                expires_s.saturating_mul(1000),
            );
            if let Some(s) = self.state.sessions.get_mut(&id) {
                s.expiry = Some(t);
            }
        }
        cx.changed = true;
    }

    /// A final response to a request of subscription `id`: the initial
    /// SUBSCRIBE/REFER failing ends it, its 2xx (or a refresh's) confirms
    /// it until `Expires` (plus T4 for the refresh to arrive), and the
    /// response to a terminating NOTIFY ends it.
    fn subscription_response(
        &mut self,
        cx: &mut Cx,
        id: u64,
        state: SessionState,
        method: &Method,
        code: u16,
        resp: &Message,
    ) {
        match (state, method.as_str()) {
            (SessionState::Terminating, "NOTIFY") => self.end_session(cx, id),
            (SessionState::Early, _) if code >= 300 => self.end_session(cx, id),
            (_, "SUBSCRIBE" | "REFER") if code < 300 => {
                let expires_s = resp
                    .header("Expires")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(3600)
                    .min(self.cfg.max_register_expires_s.max(3600));
                let old = match self.state.sessions.get_mut(&id) {
                    Some(s) => {
                        if s.state == SessionState::Early {
                            s.state = SessionState::Confirmed;
                        }
                        s.expiry.take()
                    }
                    None => return,
                };
                self.disarm(cx, old);
                let t = self.arm(
                    cx,
                    TimerKind::SessionExpiry(id),
                    expires_s.saturating_mul(1000) + self.cfg.timers.t4,
                );
                if let Some(s) = self.state.sessions.get_mut(&id) {
                    s.expiry = Some(t);
                }
            }
            _ => {}
        }
    }

    fn invite_failed(
        &mut self,
        cx: &mut Cx,
        id: u64,
        rollback: Option<Vec<Option<media_plane::PinholeSpec>>>,
        ops: &mut Vec<PinholeOp>,
    ) {
        let Some(s) = self.state.sessions.get_mut(&id) else {
            return;
        };
        match rollback {
            // A failed re-INVITE leaves the session as it was.
            Some(saved) => session::rollback(s, saved, &mut self.state.pools, ops),
            None if s.state == SessionState::Early => self.end_session(cx, id),
            None => {}
        }
        cx.changed = true;
    }

    fn end_session(&mut self, cx: &mut Cx, id: u64) {
        cx.touched.push(id);
        let Some(mut s) = self.state.sessions.remove(&id) else {
            return;
        };
        if self.state.by_call_id.get(&s.call_id) == Some(&id) {
            self.state.by_call_id.remove(&s.call_id);
        }
        let mut ops = Vec::new();
        session::release_all(&mut s, &mut self.state.pools, &mut ops);
        self.disarm(cx, s.expiry);
        Self::pinholes(cx, ops);
        self.stats.sessions_ended += 1;
        cx.changed = true;
        info!(instance = %self.cfg.instance, call_id = %s.call_id, session = id, "session ended");
    }

    fn registered(&mut self, cx: &mut Cx, resp: &mut Message, pending: Vec<PendingBinding>) {
        let default_expires = resp
            .header("Expires")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(3600);
        let mut seen = Vec::new();
        for h in resp.headers.iter_mut().filter(|h| h.name == "Contact") {
            let Ok(mut na) = NameAddr::parse(&h.value) else {
                continue;
            };
            let Some(token) = registrar::token_of(&na.uri, self.cfg.core.sip) else {
                continue;
            };
            let expires = na
                .param("expires")
                .and_then(|e| e.parse::<u64>().ok())
                .unwrap_or(default_expires)
                .min(self.cfg.max_register_expires_s);
            if let Some(pb) = pending.iter().find(|p| p.token == token) {
                seen.push(token.clone());
                if let Ok(orig) = NameAddr::parse(&pb.original) {
                    na = NameAddr {
                        params: na.params.clone(),
                        ..orig
                    };
                }
                if expires == 0 {
                    self.remove_binding(cx, &token);
                } else {
                    self.upsert_binding(cx, pb, expires);
                }
            } else if let Some(b) = self.state.bindings.get(&token) {
                na.uri = b.contact.clone();
            }
            h.value = na.to_string();
        }
        for pb in &pending {
            if pb.token == "*" {
                let gone: Vec<String> = self
                    .state
                    .bindings
                    .iter()
                    .filter(|(_, b)| b.aor == pb.aor)
                    .map(|(t, _)| t.clone())
                    .collect();
                for t in gone {
                    self.remove_binding(cx, &t);
                }
            } else if !seen.contains(&pb.token) {
                self.remove_binding(cx, &pb.token);
            }
        }
    }

    fn upsert_binding(&mut self, cx: &mut Cx, pb: &PendingBinding, expires_s: u64) {
        let old = self.state.bindings.get(&pb.token).map(|b| b.timer);
        self.disarm(cx, old);
        let timer = self.arm(
            cx,
            TimerKind::Registration(pb.token.clone()),
            expires_s * 1000,
        );
        self.state.bindings.insert(
            pb.token.clone(),
            Binding {
                aor: pb.aor.clone(),
                contact: pb.contact.clone(),
                flow: pb.flow,
                expires_at: cx.now + expires_s * 1000,
                timer,
            },
        );
        self.caps
            .sync_binding(&pb.token, self.state.bindings.get(&pb.token));
        info!(instance = %self.cfg.instance, aor = %pb.aor, flow = %pb.flow.addr, expires_s, "registration bound");
        cx.changed = true;
    }

    fn remove_binding(&mut self, cx: &mut Cx, token: &str) {
        if let Some(b) = self.state.bindings.remove(token) {
            self.caps.sync_binding(token, None);
            self.disarm(cx, Some(b.timer));
            info!(instance = %self.cfg.instance, aor = %b.aor, "registration removed");
            cx.changed = true;
        }
    }

    // ---------------------------------------------------------------- timers

    fn on_timer(&mut self, cx: &mut Cx, id: TimerId) {
        let Some(kind) = self.state.timers.remove(&id) else {
            return; // stale: cancelled after the driver armed it
        };
        cx.changed = true;
        match kind {
            TimerKind::ClientRetransmit(k) => {
                let t2 = self.cfg.timers.t2;
                let Some(c) = self.state.clients.get_mut(&k) else {
                    return;
                };
                if c.retransmit != Some(id) {
                    return;
                }
                c.retransmit = None;
                let resend = matches!(
                    (c.invite, c.state),
                    (true, ClientState::Calling)
                        | (false, ClientState::Calling | ClientState::Proceeding)
                );
                if !resend {
                    return;
                }
                c.interval = if c.invite {
                    c.interval.saturating_mul(2)
                } else if c.state == ClientState::Proceeding {
                    t2
                } else {
                    c.interval.saturating_mul(2).min(t2)
                };
                let (dest, bytes, interval) = (c.downstream, c.request.clone(), c.interval);
                self.send(cx, dest, bytes);
                let t = self.arm(cx, TimerKind::ClientRetransmit(k.clone()), interval);
                if let Some(c) = self.state.clients.get_mut(&k) {
                    c.retransmit = Some(t);
                }
            }
            TimerKind::ClientTimeout(k) => self.client_timeout(cx, &k),
            TimerKind::TimerC(k) => {
                let Some(c) = self.state.clients.get_mut(&k) else {
                    return;
                };
                c.timer_c = None;
                match c.state {
                    ClientState::Proceeding if !c.cancelled => {
                        c.cancelled = true;
                        self.send_cancel(cx, &k);
                    }
                    ClientState::Calling => self.client_timeout(cx, &k),
                    _ => {}
                }
            }
            TimerKind::ClientCleanup(k) => self.finish_client(cx, &k),
            TimerKind::ServerRetransmit(k) => {
                let t2 = self.cfg.timers.t2;
                let Some(st) = self.state.servers.get_mut(&k) else {
                    return;
                };
                st.timers.retain(|t| *t != id);
                if st.state != ServerState::Completed {
                    return;
                }
                st.g_interval = st.g_interval.saturating_mul(2).min(t2);
                let (flow, bytes, g) = (st.upstream, st.last_response.clone(), st.g_interval);
                self.send(cx, flow, bytes);
                let t = self.arm(cx, TimerKind::ServerRetransmit(k.clone()), g);
                if let Some(st) = self.state.servers.get_mut(&k) {
                    st.timers.push(t);
                }
            }
            TimerKind::ServerCleanup(k) => {
                if let Some(st) = self.state.servers.remove(&k) {
                    for t in st.timers {
                        if t != id {
                            self.disarm(cx, Some(t));
                        }
                    }
                }
            }
            TimerKind::SessionExpiry(sid) => {
                let usage = match self.state.sessions.get_mut(&sid) {
                    Some(s) => {
                        s.expiry = None;
                        s.usage
                    }
                    None => return,
                };
                if usage == Usage::Subscription {
                    debug!(instance = %self.cfg.instance, session = sid, "subscription expired");
                    return self.end_session(cx, sid);
                }
                info!(instance = %self.cfg.instance, session = sid, "session expired without refresh");
                self.terminate_with_bye(cx, sid);
            }
            TimerKind::Registration(token) => {
                if self.state.bindings.get(&token).map(|b| b.timer) == Some(id) {
                    if let Some(b) = self.state.bindings.remove(&token) {
                        self.caps.sync_binding(&token, None);
                        info!(instance = %self.cfg.instance, aor = %b.aor, "registration expired");
                    }
                }
            }
        }
    }

    /// Timer B/F (or C before any provisional): no final response came.
    fn client_timeout(&mut self, cx: &mut Cx, k: &ClientKey) {
        let Some(c) = self.state.clients.get(k) else {
            return;
        };
        if !matches!(c.state, ClientState::Calling | ClientState::Proceeding) {
            return;
        }
        let (role, session, invite, request) =
            (c.role.clone(), c.session, c.invite, c.request.clone());
        self.finish_client(cx, k);
        let method = Message::parse(&request, usize::MAX)
            .map(|m| m.method())
            .ok();
        if let ClientRole::Relay(sk) = role {
            // Answer upstream with 408 built from the request we relayed.
            if let Ok(mut req) = Message::parse(&request, usize::MAX) {
                req.pop_front("Via");
                let tag = self.local_tag(&req);
                let resp = make_response(&req, 408, "Request Timeout", Some(&tag)).to_bytes();
                if let Some(st) = self.state.servers.get(&sk) {
                    if st.state == ServerState::Proceeding {
                        let flow = st.upstream;
                        self.send(cx, flow, resp.clone());
                        self.server_finish(cx, &sk, ServerState::Completed, Some(resp));
                    }
                }
            }
        }
        if let Some(id) = session {
            let (early, subscription) = self
                .state
                .sessions
                .get(&id)
                .map(|s| {
                    (
                        s.state == SessionState::Early,
                        s.usage == Usage::Subscription,
                    )
                })
                .unwrap_or((false, false));
            if (early && (invite || subscription)) || method == Some(Method::Bye) {
                self.end_session(cx, id);
            }
        }
    }

    // ----------------------------------------------------------------- media

    fn on_media(&mut self, cx: &mut Cx, ev: &MediaEvent) {
        match ev {
            MediaEvent::Latched {
                id,
                side,
                rtcp,
                remote,
            } => {
                let Some(spec) = self
                    .state
                    .sessions
                    .get_mut(&id.session)
                    .and_then(|s| s.streams.get_mut(usize::from(id.stream)))
                    .and_then(|s| s.as_mut())
                else {
                    return;
                };
                let leg = spec.leg_mut(*side);
                let before = leg.clone();
                // latch_ip stays: RTP and RTCP latch independently on the
                // packet path, and a later upsert must not stop the other kind
                // from latching (the negotiated remote always wins anyway).
                if *rtcp {
                    leg.remote_rtcp = Some(*remote);
                } else {
                    leg.remote_rtp = Some(*remote);
                }
                if *leg != before {
                    cx.changed = true;
                    debug!(instance = %self.cfg.instance, pinhole = %id, side = %side, remote = %remote, "media latched");
                }
            }
            MediaEvent::Inactive { session } => {
                let confirmed = self
                    .state
                    .sessions
                    .get(session)
                    .map(|s| s.state == SessionState::Confirmed)
                    .unwrap_or(false);
                if confirmed {
                    info!(instance = %self.cfg.instance, session, "media inactive: ending session");
                    self.terminate_with_bye(cx, *session);
                }
            }
        }
    }

    /// End a confirmed session from the middle: BYE to both parties.
    fn terminate_with_bye(&mut self, cx: &mut Cx, id: u64) {
        let Some(s) = self.state.sessions.get(&id).cloned() else {
            return;
        };
        for side in [Side::Access, Side::Core] {
            if let Some((dest, bytes)) = self.build_bye(&s, side) {
                let key = ClientKey {
                    branch: Via::parse(
                        &String::from_utf8_lossy(&bytes)
                            .lines()
                            .find(|l| l.starts_with("Via: "))
                            .unwrap_or_default()[5..],
                    )
                    .ok()
                    .and_then(|v| v.branch().map(str::to_string))
                    .unwrap_or_default(),
                    cancel: false,
                };
                self.start_internal(cx, key, dest, bytes, None);
            }
        }
        self.stats.sessions_ended_by_bgf += 1;
        self.end_session(cx, id);
    }

    fn build_bye(&self, s: &Session, to: Side) -> Option<(Flow, Vec<u8>)> {
        let target = s.contact(to)?.clone();
        let to_tag = s.to_tag.as_ref()?;
        let callee = if NameAddr::parse(&s.callee).ok()?.param("tag").is_some() {
            s.callee.clone()
        } else {
            let mut na = NameAddr::parse(&s.callee).ok()?;
            na.set_param("tag", Some(to_tag.clone()));
            na.to_string()
        };
        let (from_h, to_h) = if s.is_caller_side(to) {
            (callee, s.caller.clone())
        } else {
            (s.caller.clone(), callee)
        };
        let cseq = s.cseq_from(to.other()).saturating_add(1);
        let routes = s.routes(to);
        let dest = match to {
            Side::Access => s.ue_flow,
            Side::Core => {
                let first = routes.first().cloned().unwrap_or_else(|| target.clone());
                let uri = NameAddr::parse(&first).ok().map(|n| n.uri).unwrap_or(first);
                msg::parse_uri(&uri)
                    .ok()
                    .and_then(|u| msg::uri_socket(&u))
                    .map(|addr| Flow {
                        side: Side::Core,
                        transport: if uri.to_ascii_lowercase().contains(";transport=tcp") {
                            Transport::Tcp
                        } else {
                            Transport::Udp
                        },
                        addr,
                    })
                    .unwrap_or_else(|| self.next_hop())
            }
        };
        let branch = ids::branch(
            &self.cfg.secret,
            &[
                s.call_id.as_bytes(),
                b"BYE",
                to.as_str().as_bytes(),
                &cseq.to_le_bytes(),
            ],
        );
        let mut headers = vec![hdr("Via", &self.our_via(to, dest.transport, &branch))];
        for r in routes {
            headers.push(hdr("Route", r));
        }
        headers.push(hdr("Max-Forwards", "70"));
        headers.push(hdr("From", &from_h));
        headers.push(hdr("To", &to_h));
        headers.push(hdr("Call-ID", &s.call_id));
        headers.push(hdr("CSeq", &format!("{cseq} BYE")));
        headers.push(hdr(
            "Reason",
            "SIP;cause=408;text=\"media inactivity or session expiry (bgf)\"",
        ));
        let m = Message {
            start: StartLine::Request {
                method: Method::Bye,
                uri: target,
            },
            headers,
            body: Vec::new(),
        };
        Some((dest, m.to_bytes()))
    }
}

fn view(s: &Session) -> SessionView {
    SessionView {
        id: s.id,
        call_id: s.call_id.clone(),
        state: s.state.as_str().to_string(),
        origin: s.origin,
        created_at: s.created_at,
        pinholes: s.pinholes().cloned().collect(),
    }
}

fn hdr(name: &str, value: &str) -> msg::Header {
    msg::Header {
        name: name.to_string(),
        value: value.to_string(),
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .take(100)
        .collect()
}

/// Server transaction key of a request (RFC 3261 §17.2.3).
fn server_key(m: &Message, via: &Via, method: &Method) -> ServerKey {
    let branch = match via.branch() {
        Some(b) if b.starts_with("z9hG4bK") => b.to_string(),
        // RFC 2543 peer: fall back to Call-ID, From-tag and CSeq number.
        _ => format!(
            "2543:{}:{}:{}",
            m.call_id(),
            m.from_tag().unwrap_or_default(),
            m.cseq().map(|c| c.0).unwrap_or(0)
        ),
    };
    ServerKey {
        branch,
        sent_by: via.sent_by(),
        method: match method {
            Method::Ack | Method::Invite => "INVITE".into(),
            other => other.as_str().to_string(),
        },
    }
}

/// Split a Record-Route list around our own entries: the entries after ours
/// (added on the INVITE's ingress side) are the route towards the origin, in
/// order; the entries before ours (egress side) reversed are the route towards
/// the other party.
fn split_route_set(rr: &[String], is_own: impl Fn(&str) -> bool) -> (Vec<String>, Vec<String>) {
    let first = rr.iter().position(|r| is_own(r));
    let last = rr.iter().rposition(|r| is_own(r));
    match (first, last) {
        (Some(f), Some(l)) => {
            let towards_origin = rr[l + 1..].to_vec();
            let mut towards_other = rr[..f].to_vec();
            towards_other.reverse();
            (towards_origin, towards_other)
        }
        _ => (Vec::new(), Vec::new()),
    }
}
