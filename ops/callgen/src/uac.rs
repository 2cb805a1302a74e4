//! The UAC role (access side): optionally REGISTERs, then places calls at the
//! configured rate up to the concurrency limit, streams RTP from the port of
//! its offer to the answer's address, hangs up after the hold time — and, for
//! every call that was up at the marker, first runs the in-dialog check:
//! re-INVITE moving its media to a new port, media arriving on that port,
//! BYE answered. It then collects the UAS's report and builds the final one.

use crate::ctl::{CtlClient, CtlMsg, Endpoint};
use crate::engine::{timeout_ms, Clock, Cpu, Media, PortAlloc, MARKER_SIGNAL, STOP_SIGNAL};
use crate::report::{
    CallReport, Check, Outcome, Pct, Report, SeriesReport, SideReport, SideTotals, SipTotals,
    Summary, Thresholds,
};
use crate::rtp::{ns_ms, DirReport};
use crate::sdp::{self, Codec};
use crate::sip::{self, ClientTxn, Route, SipSock};
use sip_control::msg::{Message, Method, StartLine};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// UAC options.
#[derive(Clone, Debug, serde::Serialize)]
pub struct UacOpts {
    /// Local SIP address.
    pub local: SocketAddr,
    /// Where every out-of-dialog request goes (the BGF's access SIP address,
    /// or the UAS directly).
    pub proxy: SocketAddr,
    /// Media address.
    pub media_ip: IpAddr,
    /// RTP port range.
    pub ports: (u16, u16),
    /// Codec.
    #[serde(skip)]
    pub codec: Codec,
    /// RTCP on.
    pub rtcp: bool,
    /// Gap threshold (ns).
    pub gap_threshold_ns: u64,
    /// Media I/O path.
    pub io: crate::engine::IoMode,
    /// New calls per second.
    pub rate: f64,
    /// Most calls at once.
    pub concurrent: usize,
    /// Hold time (ms).
    pub hold_ms: u64,
    /// Calls to place (None: until `duration_s`).
    pub calls: Option<u64>,
    /// Stop placing calls after this long (s).
    pub duration_s: Option<f64>,
    /// REGISTER first.
    pub register: bool,
    /// Our user.
    pub user: String,
    /// Called user.
    pub to_user: String,
    /// Domain for the URIs.
    pub domain: String,
    /// Marker this long after the start (s); SIGUSR1 also sets it.
    pub marker_at_s: Option<f64>,
    /// Check no earlier than this long after the marker (ms).
    pub check_after_ms: u64,
    /// Wait this long for media on the new port (ms).
    pub check_media_ms: u64,
    /// Packets that must arrive on the new port.
    pub check_packets: u64,
    /// Client transaction timeout (ms).
    pub sip_timeout_ms: u64,
    /// Control connection to the UAS.
    #[serde(skip)]
    pub ctl: Option<Endpoint>,
    /// Print progress every second.
    pub progress: bool,
    /// Thresholds.
    pub thresholds: Thresholds,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Inviting,
    Up,
    Reinviting,
    Moving { until: u64 },
    Byeing,
    Done,
}

struct Call {
    call_id: String,
    from_tag: String,
    to_tag: Option<String>,
    invite: Message,
    route: Route,
    cseq: u32,
    st: St,
    txn: Option<ClientTxn>,
    /// The last 2xx ACK (resent when its 2xx is retransmitted): CSeq, bytes, dest.
    ack: Option<(u32, Vec<u8>, SocketAddr)>,
    start_ns: u64,
    answered_ns: Option<u64>,
    end_ns: Option<u64>,
    hangup_ns: u64,
    up_at_marker: bool,
    check: Check,
    reinvite_sent: u64,
    fail: Option<String>,
    outcome: Option<Outcome>,
    sdp_version: u32,
    counted_down: bool,
}

struct Uac<'a> {
    o: &'a UacOpts,
    clock: Clock,
    sip: SipSock,
    media: Media,
    calls: Vec<Call>,
    by_id: HashMap<String, usize>,
    active: Vec<usize>,
    seed: u64,
    run_id: String,
    marker_ns: Option<u64>,
    ctl: Option<CtlClient>,
    ctl_error: Option<String>,
    up_now: u64,
    peak_up: u64,
}

fn req_headers(
    via_local: SocketAddr,
    branch: &str,
    from: String,
    to: String,
    call_id: &str,
    cseq: u32,
    method: &str,
) -> Vec<(&'static str, String)> {
    vec![
        (
            "Via",
            format!("SIP/2.0/UDP {via_local};branch=z9hG4bK{branch};rport"),
        ),
        ("Max-Forwards", "70".into()),
        ("From", from),
        ("To", to),
        ("Call-ID", call_id.to_string()),
        ("CSeq", format!("{cseq} {method}")),
    ]
}

impl Uac<'_> {
    fn hdr_from(&self, tag: &str) -> String {
        format!("<sip:{}@{}>;tag={tag}", self.o.user, self.o.domain)
    }

    fn hdr_to(&self, tag: Option<&str>) -> String {
        match tag {
            Some(t) => format!("<sip:{}@{}>;tag={t}", self.o.to_user, self.o.domain),
            None => format!("<sip:{}@{}>", self.o.to_user, self.o.domain),
        }
    }

    fn contact(&self) -> String {
        format!("<sip:{}@{}>", self.o.user, self.sip.local)
    }

    fn timeout_ns(&self) -> u64 {
        self.o.sip_timeout_ms * 1_000_000
    }

    fn start_call(&mut self, now: u64) {
        let i = self.calls.len();
        let call_id = format!("{}-{i}@bgf-callgen", self.run_id);
        let from_tag = sip::token(&mut self.seed);
        let branch = sip::token(&mut self.seed);
        let local_media = match self.media.open(i) {
            Ok(a) => Some(a),
            Err(e) => {
                sip::tracing_like(&format!("call {i}: {e}"));
                None
            }
        };
        let uri = format!("sip:{}@{}", self.o.to_user, self.o.domain);
        let mut h = req_headers(
            self.sip.local,
            &branch,
            self.hdr_from(&from_tag),
            self.hdr_to(None),
            &call_id,
            1,
            "INVITE",
        );
        h.push(("Contact", self.contact()));
        h.push(("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS".into()));
        h.push(("User-Agent", "bgf-callgen".into()));
        let body = match local_media {
            Some(a) => {
                h.push(("Content-Type", "application/sdp".into()));
                sdp::build(a, &self.o.codec, now, 1)
            }
            None => Vec::new(),
        };
        let invite = sip::request(Method::Invite, &uri, h, body);
        let mut call = Call {
            call_id: call_id.clone(),
            from_tag,
            to_tag: None,
            route: Route::default(),
            cseq: 1,
            st: St::Inviting,
            txn: None,
            ack: None,
            start_ns: now,
            answered_ns: None,
            end_ns: None,
            hangup_ns: 0,
            up_at_marker: false,
            check: Check::default(),
            reinvite_sent: 0,
            fail: None,
            outcome: None,
            sdp_version: 1,
            counted_down: false,
            invite,
        };
        if local_media.is_none() {
            call.st = St::Done;
            call.end_ns = Some(now);
            call.outcome = Some(Outcome::Failed);
            call.fail = Some("no RTP port".into());
        } else {
            let txn = ClientTxn::new(&call.invite, self.o.proxy, now, self.timeout_ns());
            self.sip.send(&txn.bytes, txn.dest);
            call.txn = Some(txn);
            self.active.push(i);
        }
        self.by_id.insert(call_id, i);
        self.calls.push(call);
    }

    /// An in-dialog request of call `i`.
    fn dialog_request(&mut self, i: usize, method: Method, body: Vec<u8>) -> (Message, SocketAddr) {
        let (uri, routes, hop) = self.calls[i].route.next_hop(self.o.proxy);
        let c = &self.calls[i];
        let branch = sip::token(&mut self.seed);
        let cseq = if method == Method::Ack {
            c.cseq
        } else {
            c.cseq + 1
        };
        let mut h = req_headers(
            self.sip.local,
            &branch,
            self.hdr_from(&c.from_tag),
            self.hdr_to(c.to_tag.as_deref()),
            &c.call_id,
            cseq,
            method.as_str(),
        );
        for r in routes {
            h.push(("Route", r));
        }
        if method == Method::Invite {
            h.push(("Contact", self.contact()));
        }
        if !body.is_empty() {
            h.push(("Content-Type", "application/sdp".into()));
        }
        if method != Method::Ack {
            self.calls[i].cseq = cseq;
        }
        (sip::request(method, &uri, h, body), hop)
    }

    fn send_ack_2xx(&mut self, i: usize, cseq: u32) {
        let saved = self.calls[i].cseq;
        self.calls[i].cseq = cseq;
        let (ack, hop) = self.dialog_request(i, Method::Ack, Vec::new());
        self.calls[i].cseq = saved;
        let bytes = ack.to_bytes();
        self.sip.send(&bytes, hop);
        self.calls[i].ack = Some((cseq, bytes, hop));
    }

    /// ACK for a non-2xx final response: same branch and R-URI as the INVITE
    /// it answers, To from the response.
    fn send_ack_non2xx(&mut self, resp: &Message, txn: &ClientTxn) {
        let Ok(req) = Message::parse(&txn.bytes, sip::MAX_SIP) else {
            return;
        };
        let StartLine::Request { uri, .. } = &req.start else {
            return;
        };
        let mut h: Vec<(&str, String)> = Vec::new();
        for n in ["Via", "From", "Call-ID"] {
            if let Some(v) = req.header(n) {
                h.push((n, v.to_string()));
            }
        }
        if let Some(v) = resp.header("To") {
            h.push(("To", v.to_string()));
        }
        h.push(("CSeq", format!("{} ACK", txn.cseq.0)));
        for r in req.headers_named("Route") {
            h.push(("Route", r.to_string()));
        }
        h.push(("Max-Forwards", "70".into()));
        let ack = sip::request(Method::Ack, uri, h, Vec::new());
        self.sip.send(&ack.to_bytes(), txn.dest);
    }

    fn send_bye(&mut self, i: usize, now: u64) {
        // Media ends when we hang up: the receive record is closed here.
        self.media.close(i, now);
        self.mark_down(i);
        let (bye, hop) = self.dialog_request(i, Method::Bye, Vec::new());
        let txn = ClientTxn::new(&bye, hop, now, self.timeout_ns());
        self.sip.send(&txn.bytes, txn.dest);
        let c = &mut self.calls[i];
        c.txn = Some(txn);
        c.st = St::Byeing;
    }

    fn mark_down(&mut self, i: usize) {
        let c = &mut self.calls[i];
        if c.answered_ns.is_some() && !c.counted_down {
            c.counted_down = true;
            self.up_now = self.up_now.saturating_sub(1);
        }
    }

    fn send_reinvite(&mut self, i: usize, now: u64) {
        let new = match self.media.open_new_port(i) {
            Ok(a) => a,
            Err(e) => {
                self.calls[i].fail = Some(format!("re-INVITE: {e}"));
                self.send_bye(i, now);
                return;
            }
        };
        self.calls[i].sdp_version += 1;
        self.calls[i].check.new_port = Some(new.port());
        let body = sdp::build(
            new,
            &self.o.codec,
            self.calls[i].start_ns,
            self.calls[i].sdp_version,
        );
        let (req, hop) = self.dialog_request(i, Method::Invite, body);
        let txn = ClientTxn::new(&req, hop, now, self.timeout_ns());
        self.sip.send(&txn.bytes, txn.dest);
        let c = &mut self.calls[i];
        c.txn = Some(txn);
        c.st = St::Reinviting;
        c.reinvite_sent = now;
    }

    fn finish_call(&mut self, i: usize, now: u64) {
        self.media.close(i, now);
        self.mark_down(i);
        let c = &mut self.calls[i];
        c.st = St::Done;
        c.txn = None;
        c.end_ns = Some(now);
        c.outcome = Some(match (&c.fail, c.up_at_marker) {
            (None, _) => Outcome::Ok,
            (Some(_), true) => Outcome::Lost,
            (Some(_), false) => Outcome::Failed,
        });
    }

    fn on_response(&mut self, m: &Message, now: u64) {
        let Some(&i) = self.by_id.get(m.call_id()) else {
            return;
        };
        let code = sip::code(m);
        let Ok((cseq, method)) = m.cseq() else {
            return;
        };
        let matches = self.calls[i].txn.as_ref().is_some_and(|t| t.matches(m));
        if !matches {
            // A retransmitted 2xx to an INVITE we have ACKed: ACK again.
            if method == Method::Invite && (200..300).contains(&code) {
                if let Some((c, bytes, hop)) = self.calls[i].ack.clone() {
                    if c == cseq {
                        self.sip.send(&bytes, hop);
                    }
                }
            }
            return;
        }
        if code < 200 {
            if let Some(t) = self.calls[i].txn.as_mut() {
                t.provisional();
            }
            return;
        }
        let Some(txn) = self.calls[i].txn.take() else {
            return;
        };
        let st = self.calls[i].st;
        match st {
            St::Inviting => {
                if (200..300).contains(&code) {
                    let c = &mut self.calls[i];
                    c.to_tag = m.to_tag();
                    c.answered_ns = Some(now);
                    match Route::from_2xx(m) {
                        Some(r) => c.route = r,
                        None => {
                            c.route = Route {
                                target: format!("sip:{}@{}", self.o.to_user, self.o.proxy),
                                set: Vec::new(),
                            };
                            c.fail = Some("2xx without Contact".into());
                        }
                    }
                    self.up_now += 1;
                    self.peak_up = self.peak_up.max(self.up_now);
                    self.send_ack_2xx(i, cseq);
                    let c = &mut self.calls[i];
                    match m.sdp().map(sdp::parse) {
                        Some(Ok(md)) => self.media.send_to(i, md.rtp, md.rtcp, now),
                        other => {
                            c.fail = Some(match other {
                                Some(Err(e)) => format!("bad SDP in the 2xx: {e}"),
                                _ => "no SDP in the 2xx".into(),
                            })
                        }
                    }
                    let c = &mut self.calls[i];
                    c.st = St::Up;
                    c.hangup_ns = now + self.o.hold_ms * 1_000_000;
                    if c.fail.is_some() {
                        self.send_bye(i, now);
                    }
                } else {
                    self.send_ack_non2xx(m, &txn);
                    let reason = m.start_reason();
                    self.calls[i].fail = Some(format!("INVITE answered {code} {reason}"));
                    self.finish_call(i, now);
                }
            }
            St::Reinviting => {
                let c = &mut self.calls[i];
                c.check.reinvite_code = Some(code);
                c.check.reinvite_ms = Some(ns_ms(now - c.reinvite_sent));
                if (200..300).contains(&code) {
                    self.send_ack_2xx(i, cseq);
                    self.media.switch(i);
                    match m.sdp().map(sdp::parse) {
                        Some(Ok(md)) => self.media.send_to(i, md.rtp, md.rtcp, now),
                        _ => {
                            self.calls[i].fail = Some("re-INVITE 2xx without usable SDP".into());
                        }
                    }
                    self.calls[i].st = St::Moving {
                        until: now + self.o.check_media_ms * 1_000_000,
                    };
                } else {
                    self.send_ack_non2xx(m, &txn);
                    self.calls[i].fail = Some(format!("re-INVITE answered {code}"));
                    self.send_bye(i, now);
                }
            }
            St::Byeing => {
                self.calls[i].check.bye_code = Some(code);
                if !(200..300).contains(&code) && self.calls[i].fail.is_none() {
                    self.calls[i].fail = Some(format!("BYE answered {code}"));
                }
                self.finish_call(i, now);
            }
            _ => {}
        }
    }

    fn on_request(&mut self, m: &Message, from: SocketAddr, now: u64) {
        let StartLine::Request { method, .. } = &m.start else {
            return;
        };
        let dest = m
            .top_via()
            .and_then(|v| sip_control::msg::Via::parse(v).ok())
            .and_then(|v| v.response_target())
            .unwrap_or(from);
        let respond = |sip: &mut SipSock, code: u16, reason: &str| {
            let r = sip_control::msg::make_response(m, code, reason, None);
            sip.send(&r.to_bytes(), dest);
        };
        match method {
            Method::Ack => {}
            Method::Bye => match self.by_id.get(m.call_id()).copied() {
                Some(i) => {
                    respond(&mut self.sip, 200, "OK");
                    if self.calls[i].st != St::Done {
                        self.calls[i].fail = Some("BYE from the network".into());
                        self.finish_call(i, now);
                    }
                }
                None => respond(&mut self.sip, 481, "Call/Transaction Does Not Exist"),
            },
            Method::Options => respond(&mut self.sip, 200, "OK"),
            _ => respond(&mut self.sip, 501, "Not Implemented"),
        }
    }

    fn tick(&mut self, now: u64) {
        let timeout_calls: Vec<usize> = self
            .active
            .iter()
            .copied()
            .filter(|&i| {
                self.calls[i]
                    .txn
                    .as_ref()
                    .is_some_and(|t| now >= t.deadline)
            })
            .collect();
        for i in timeout_calls {
            let st = self.calls[i].st;
            self.calls[i].txn = None;
            match st {
                St::Inviting => {
                    self.calls[i].fail = Some("INVITE timed out".into());
                    // A 2xx may still come; it will find no transaction.
                    self.finish_call(i, now);
                }
                St::Reinviting => {
                    self.calls[i].fail = Some("re-INVITE timed out".into());
                    self.send_bye(i, now);
                }
                St::Byeing => {
                    if self.calls[i].fail.is_none() {
                        self.calls[i].fail = Some("BYE timed out".into());
                    }
                    self.finish_call(i, now);
                }
                _ => {}
            }
        }
        let active = std::mem::take(&mut self.active);
        for &i in &active {
            if let Some(t) = self.calls[i].txn.as_mut() {
                t.poll(now, &mut self.sip);
            }
            match self.calls[i].st {
                St::Up => {
                    let c = &self.calls[i];
                    let due = if c.up_at_marker {
                        let after = self.marker_ns.unwrap_or(0) + self.o.check_after_ms * 1_000_000;
                        c.hangup_ns.max(after)
                    } else {
                        c.hangup_ns
                    };
                    if now >= due {
                        if c.up_at_marker {
                            self.send_reinvite(i, now);
                        } else {
                            self.send_bye(i, now);
                        }
                    }
                }
                St::Moving { until } => {
                    let got = self.media.stream(i).map_or(0, |s| s.rx_current);
                    self.calls[i].check.new_port_packets = got;
                    if got >= self.o.check_packets {
                        self.send_bye(i, now);
                    } else if now >= until {
                        self.calls[i].fail = Some(format!(
                            "only {got} packets on the new media port within {} ms",
                            self.o.check_media_ms
                        ));
                        self.send_bye(i, now);
                    }
                }
                _ => {}
            }
        }
        self.active = active;
        self.active.retain(|&i| self.calls[i].st != St::Done);
    }

    fn set_marker(&mut self, now: u64) {
        if self.marker_ns.is_some() {
            return;
        }
        self.marker_ns = Some(now);
        let mut n = 0;
        for &i in &self.active {
            let c = &mut self.calls[i];
            if c.st == St::Up {
                c.up_at_marker = true;
                n += 1;
            }
        }
        if self.o.progress {
            eprintln!(
                "bgf-callgen uac: MARKER at {:.3} s: {n} calls up will be checked",
                now as f64 / 1e9
            );
        }
        if let Some(ctl) = self.ctl.as_mut() {
            let m = CtlMsg::Marker {
                unix_ms: self.clock.ns_to_unix_ms(now),
            };
            if let Err(e) = ctl.send(&m) {
                self.ctl_error = Some(format!("control connection lost: {e}"));
            }
        }
    }

    fn register(&mut self) -> Result<(), String> {
        let now = self.clock.now_ns();
        let tag = sip::token(&mut self.seed);
        let branch = sip::token(&mut self.seed);
        let call_id = format!("{}-reg@bgf-callgen", self.run_id);
        let aor = format!("<sip:{}@{}>", self.o.user, self.o.domain);
        let mut h = req_headers(
            self.sip.local,
            &branch,
            format!("{aor};tag={tag}"),
            aor,
            &call_id,
            1,
            "REGISTER",
        );
        h.push(("Contact", self.contact()));
        h.push(("Expires", "3600".into()));
        let req = sip::request(
            Method::Register,
            &format!("sip:{}", self.o.domain),
            h,
            Vec::new(),
        );
        let mut txn = ClientTxn::new(&req, self.o.proxy, now, self.timeout_ns());
        self.sip.send(&txn.bytes, txn.dest);
        loop {
            let now = self.clock.now_ns();
            if now >= txn.deadline {
                return Err(format!(
                    "REGISTER to {} timed out after {} ms",
                    self.o.proxy, self.o.sip_timeout_ms
                ));
            }
            txn.poll(now, &mut self.sip);
            while let Some((m, _)) = self.sip.recv() {
                if m.code().is_some() && txn.matches(&m) {
                    let code = sip::code(&m);
                    if (200..300).contains(&code) {
                        return Ok(());
                    }
                    if code >= 300 {
                        return Err(format!("REGISTER answered {code} {}", m.start_reason()));
                    }
                }
            }
            crate::engine::nap(5);
        }
    }

    fn wants_more_calls(&self, now: u64) -> bool {
        let n = self.calls.len() as u64;
        if self.o.calls.is_some_and(|c| n >= c) {
            return false;
        }
        if let Some(d) = self.o.duration_s {
            if now as f64 / 1e9 >= d {
                return false;
            }
        }
        true
    }
}

trait StartReason {
    fn start_reason(&self) -> String;
}
impl StartReason for Message {
    fn start_reason(&self) -> String {
        match &self.start {
            StartLine::Response { reason, .. } => reason.clone(),
            StartLine::Request { .. } => String::new(),
        }
    }
}

/// Runs the UAC; returns the final report.
pub fn run(o: &UacOpts) -> Result<Report, String> {
    let clock = Clock::start();
    let sip = SipSock::bind(o.local).map_err(|e| format!("cannot bind SIP {}: {e}", o.local))?;
    let media = Media::new(
        o.codec.clone(),
        PortAlloc::new(o.media_ip, o.ports.0, o.ports.1),
        o.gap_threshold_ns,
        o.rtcp,
        o.io,
    )
    .map_err(|e| format!("media: {e}"))?;
    {
        use std::os::fd::AsRawFd;
        media
            .epoll
            .add(sip.sock.as_raw_fd(), crate::engine::SIP_TOKEN)
            .map_err(|e| format!("epoll: {e}"))?;
    }
    let ctl = match &o.ctl {
        Some(ep) => {
            Some(CtlClient::connect(ep, Duration::from_secs(10)).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let mut seed = (clock.t0_unix_ms * 1000.0) as u64 ^ (u64::from(std::process::id()) << 32);
    let run_id = sip::token(&mut seed);
    let mut u = Uac {
        o,
        clock,
        sip,
        media,
        calls: Vec::new(),
        by_id: HashMap::new(),
        active: Vec::new(),
        seed,
        run_id,
        marker_ns: None,
        ctl,
        ctl_error: None,
        up_now: 0,
        peak_up: 0,
    };
    if o.register {
        u.register()?;
        if o.progress {
            eprintln!("bgf-callgen uac: registered {}@{}", o.user, o.domain);
        }
    }
    let interval_ns = (1e9 / o.rate.max(0.001)) as u64;
    let start = u.clock.now_ns();
    let mut next_call = start;
    let mut next_scan = 0u64;
    let mut next_progress = start + 1_000_000_000;
    let mut last_tot = (0u64, 0u64);
    let marker_at_ns = o.marker_at_s.map(|s| (s * 1e9) as u64);
    // Hard bound: the last call's start + hold + three transaction timeouts +
    // the media check + a margin.
    let est_calls_s = match (o.calls, o.duration_s) {
        (Some(c), Some(d)) => (c as f64 / o.rate).min(d),
        (Some(c), None) => c as f64 / o.rate,
        (None, Some(d)) => d,
        (None, None) => 0.0,
    };
    let hard_ns = ((est_calls_s * 2.0 + 30.0) * 1e9) as u64
        + o.hold_ms * 1_000_000
        + 3 * o.sip_timeout_ms * 1_000_000
        + o.check_media_ms * 1_000_000
        + marker_at_ns.unwrap_or(0)
        + o.check_after_ms * 1_000_000;
    let mut sip_readable = true;
    let mut interrupted = false;
    loop {
        let now = u.clock.now_ns();
        let more_due = u.media.send_due(now);
        if sip_readable {
            while let Some((m, from)) = u.sip.recv() {
                let now = u.clock.now_ns();
                if m.code().is_some() {
                    u.on_response(&m, now);
                } else {
                    u.on_request(&m, from, now);
                }
            }
        }
        // New calls on schedule (a late loop catches up, bounded by the limit).
        while now >= next_call && u.wants_more_calls(now) && u.active.len() < o.concurrent {
            u.start_call(now);
            next_call += interval_ns;
        }
        if now >= next_call && u.active.len() >= o.concurrent {
            next_call = now; // at the limit: no burst of deferred calls later
        }
        if MARKER_SIGNAL.swap(false, Ordering::SeqCst) || marker_at_ns.is_some_and(|m| now >= m) {
            u.set_marker(now);
        }
        if now >= next_scan {
            next_scan = now + 5_000_000;
            u.tick(now);
            u.media.send_rtcp_due(now, &u.clock);
        }
        if o.progress && now >= next_progress {
            next_progress += 1_000_000_000;
            u.media.refresh_totals();
            let t = &u.media.totals;
            let done: Vec<Outcome> = u.calls.iter().filter_map(|c| c.outcome).collect();
            eprintln!(
                "[{:6.1}s] uac calls up {} started {} ok {} failed {} lost {} | tx {} pps rx {} pps | worst current silence {:.0} ms{}",
                now as f64 / 1e9,
                u.up_now,
                u.calls.len(),
                done.iter().filter(|o| **o == Outcome::Ok).count(),
                done.iter().filter(|o| **o == Outcome::Failed).count(),
                done.iter().filter(|o| **o == Outcome::Lost).count(),
                t.tx_packets - last_tot.0,
                t.rx_packets - last_tot.1,
                u.media.worst_current_gap_ms(now),
                u.marker_ns.map_or(String::new(), |m| format!(" | marker {:.1}s ago", (now - m) as f64 / 1e9)),
            );
            last_tot = (t.tx_packets, t.rx_packets);
        }
        if !u.wants_more_calls(now) && u.active.is_empty() {
            break;
        }
        if STOP_SIGNAL.load(Ordering::SeqCst) || now >= hard_ns {
            interrupted = true;
            break;
        }
        let mut deadline = [u.media.next_due(), Some(next_scan)]
            .into_iter()
            .flatten()
            .min();
        if u.wants_more_calls(now) && u.active.len() < o.concurrent {
            deadline = deadline.map(|d| d.min(next_call));
        }
        sip_readable = u.media.poll(
            if more_due {
                0
            } else {
                timeout_ms(u.clock.now_ns(), deadline, 20)
            },
            &u.clock,
        );
    }
    let now = u.clock.now_ns();
    if interrupted {
        let left = std::mem::take(&mut u.active);
        for i in left {
            if u.calls[i].fail.is_none() {
                u.calls[i].fail = Some(if STOP_SIGNAL.load(Ordering::SeqCst) {
                    "interrupted".into()
                } else {
                    "run time bound reached before the call ended".into()
                });
            }
            u.finish_call(i, now);
        }
    }
    let uac_cpu = Cpu::now(&u.clock);
    let mut uas_error = u.ctl_error.clone();
    let uas_report: Option<SideReport> = match u.ctl.as_mut() {
        Some(c) if uas_error.is_none() => match c.finish(Duration::from_secs(15)) {
            Ok(r) => Some(r),
            Err(e) => {
                uas_error = Some(e);
                None
            }
        },
        Some(_) => None,
        None => {
            uas_error = Some("no --ctl-connect: the UAC → UAS direction was not measured".into());
            None
        }
    };
    Ok(build_report(&mut u, uac_cpu, uas_report, uas_error, now))
}

fn shift(mut d: DirReport, off_ms: f64) -> DirReport {
    d.first_ms = d.first_ms.map(|t| t + off_ms);
    d.last_ms = d.last_ms.map(|t| t + off_ms);
    d.max_gap_at_ms += off_ms;
    for g in &mut d.gaps {
        g.at_ms += off_ms;
    }
    d
}

fn undelivered(calls: &[&CallReport], dir: impl Fn(&CallReport) -> Option<&DirReport>) -> u64 {
    calls
        .iter()
        .filter_map(|c| dir(c))
        .filter_map(|d| d.sent.map(|s| s.saturating_sub(d.received - d.duplicates)))
        .sum()
}

fn build_report(
    u: &mut Uac,
    uac_cpu: Cpu,
    uas: Option<SideReport>,
    uas_error: Option<String>,
    now: u64,
) -> Report {
    let off_ms = uas
        .as_ref()
        .map_or(0.0, |r| r.t0_unix_ms - u.clock.t0_unix_ms);
    let mut uas_calls: HashMap<String, (DirReport, u64)> = HashMap::new();
    if let Some(r) = &uas {
        for c in &r.calls {
            uas_calls.insert(c.call_id.clone(), (shift(c.rx.clone(), off_ms), c.tx));
        }
    }
    let mut calls = Vec::with_capacity(u.calls.len());
    for (i, c) in u.calls.iter().enumerate() {
        let mut down = c
            .answered_ns
            .and_then(|_| u.media.stream(i))
            .map(|s| s.rx.report());
        let up = if uas.is_some() && c.answered_ns.is_some() {
            uas_calls.remove(&c.call_id).map(|(mut up, uas_tx)| {
                up.sent = u.media.stream(i).map(|s| s.tx);
                if let Some(d) = down.as_mut() {
                    d.sent = Some(uas_tx);
                }
                up
            })
        } else {
            None
        };
        calls.push(CallReport {
            call_id: c.call_id.clone(),
            outcome: c.outcome.unwrap_or(Outcome::Failed),
            reason: c.fail.clone(),
            start_ms: ns_ms(c.start_ns),
            setup_ms: c.answered_ns.map(|a| ns_ms(a - c.start_ns)),
            end_ms: c.end_ns.map(ns_ms),
            up_at_marker: c.up_at_marker,
            check: c.up_at_marker.then(|| c.check.clone()),
            down,
            up,
        });
    }
    let count = |o: Outcome| calls.iter().filter(|c| c.outcome == o).count() as u64;
    let with_media: Vec<&CallReport> = calls.iter().filter(|c| c.setup_ms.is_some()).collect();
    let summary = Summary {
        calls: calls.len() as u64,
        ok: count(Outcome::Ok),
        failed: count(Outcome::Failed),
        lost: count(Outcome::Lost),
        up_at_marker: calls.iter().filter(|c| c.up_at_marker).count() as u64,
        setup_ms: Pct::of(calls.iter().filter_map(|c| c.setup_ms).collect()),
        gap_down_ms: Pct::of(
            with_media
                .iter()
                .filter_map(|c| c.down.as_ref().map(|d| d.max_gap_ms))
                .collect(),
        ),
        gap_up_ms: uas.as_ref().map(|_| {
            Pct::of(
                with_media
                    .iter()
                    .filter_map(|c| c.up.as_ref().map(|d| d.max_gap_ms))
                    .collect(),
            )
        }),
        lost_packets_down: with_media
            .iter()
            .filter_map(|c| c.down.as_ref())
            .map(|d| d.lost)
            .sum(),
        lost_packets_up: uas.as_ref().map(|_| {
            with_media
                .iter()
                .filter_map(|c| c.up.as_ref())
                .map(|d| d.lost)
                .sum()
        }),
        reordered_down: with_media
            .iter()
            .filter_map(|c| c.down.as_ref())
            .map(|d| d.reordered)
            .sum(),
        reordered_up: uas.as_ref().map(|_| {
            with_media
                .iter()
                .filter_map(|c| c.up.as_ref())
                .map(|d| d.reordered)
                .sum()
        }),
        peak_concurrent: u.peak_up,
        undelivered_down: uas
            .as_ref()
            .map(|_| undelivered(&with_media, |c| c.down.as_ref())),
        undelivered_up: uas
            .as_ref()
            .map(|_| undelivered(&with_media, |c| c.up.as_ref())),
    };
    u.media.rx_series.trim(now);
    let down_rx = std::mem::take(&mut u.media.rx_series.counts);
    let up_rx = uas.as_ref().map(|r| {
        let shift_b = (off_ms / 10.0).round() as i64;
        let mut v = vec![0u32; down_rx.len()];
        for (j, &n) in r.rx_series.iter().enumerate() {
            let k = j as i64 + shift_b;
            if k >= 0 && (k as usize) < v.len() {
                v[k as usize] = n;
            }
        }
        v
    });
    let lost_call_ids = calls
        .iter()
        .filter(|c| c.outcome == Outcome::Lost)
        .map(|c| c.call_id.clone())
        .collect();
    u.media.refresh_totals();
    let uac_totals = SideTotals::new(
        u.media.totals.clone(),
        SipTotals {
            sent: u.sip.sent,
            retransmissions: u.sip.retransmissions,
            unparsable: u.sip.unparsable,
        },
        uac_cpu,
        calls.len() as u64,
    );
    let config = serde_json::to_value(u.o).unwrap_or(serde_json::Value::Null);
    let mut report = Report {
        tool: "bgf-callgen".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        t0_unix_ms: u.clock.t0_unix_ms,
        marker_ms: u.marker_ns.map(ns_ms),
        config,
        summary,
        lost_call_ids,
        violations: Vec::new(),
        uas_error,
        uac: uac_totals,
        uas: uas.map(|r| r.totals),
        series: SeriesReport {
            bucket_ms: 10,
            down_rx,
            up_rx,
        },
        calls,
    };
    report.violations = u.o.thresholds.check(&report);
    report
}
