//! Test driver for the core: feeds real SIP text, collects what it sends, and
//! keeps the log of state-changing inputs so every test can check replay.
#![allow(dead_code)]

use media_plane::{PinholeOp, Side};
use sip_control::msg::{Message, Via};
use sip_control::{Applied, Core, CoreConfig, Effect, Input, SipIn, TimerId, Transport};
use std::collections::BTreeMap;
use std::net::SocketAddr;

pub const BGF_ACCESS: &str = "198.18.1.10:5060";
pub const BGF_CORE: &str = "198.18.2.10:5060";
pub const NEXT_HOP: &str = "198.18.2.20:5060";
pub const UE: &str = "198.18.1.100:5061";

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn config() -> CoreConfig {
    CoreConfig::example(sa(BGF_ACCESS).ip(), sa(BGF_CORE).ip(), sa(NEXT_HOP))
}

#[derive(Debug, Clone)]
pub struct Sent {
    pub side: Side,
    pub transport: Transport,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub msg: Message,
    pub raw: String,
}

pub struct Harness {
    pub core: Core,
    pub cfg: CoreConfig,
    pub now: u64,
    pub log: Vec<Input>,
    pub timers: BTreeMap<TimerId, u64>,
    pub pinholes: Vec<PinholeOp>,
    /// Check that inputs reported as not state-changing left the state
    /// untouched (a full state comparison per input: off for benchmarks).
    pub check_unchanged: bool,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        Self::with(config())
    }

    pub fn with(cfg: CoreConfig) -> Self {
        Harness {
            core: Core::new(cfg.clone()).unwrap(),
            cfg,
            now: 1_700_000_000_000,
            log: Vec::new(),
            timers: BTreeMap::new(),
            pinholes: Vec::new(),
            check_unchanged: true,
        }
    }

    /// Apply, checking that inputs reported as not state-changing really
    /// left the state untouched, and logging the others.
    pub fn apply(&mut self, input: Input) -> Applied {
        let before = self.check_unchanged.then(|| self.core.state().clone());
        let out = self.core.apply(&input);
        if self.check_unchanged {
            assert!(
                self.core.caps_consistent(),
                "the caps index differs from a rebuild after {}",
                describe(&input)
            );
        }
        if out.state_changed {
            self.log.push(input);
        } else if let Some(before) = before {
            assert_eq!(
                &before,
                self.core.state(),
                "input reported no state change but changed state: {input:?}"
            );
        }
        for e in &out.effects {
            match e {
                Effect::SetTimer { id, at } => {
                    self.timers.insert(*id, *at);
                }
                Effect::CancelTimer(id) => {
                    self.timers.remove(id);
                }
                Effect::Pinhole(op) => self.pinholes.push(op.clone()),
                Effect::Send(_) => {}
            }
        }
        out
    }

    pub fn recv(&mut self, side: Side, src: &str, text: &str) -> Vec<Sent> {
        self.recv_t(side, Transport::Udp, src, text)
    }

    pub fn recv_t(&mut self, side: Side, transport: Transport, src: &str, text: &str) -> Vec<Sent> {
        self.now += 10;
        let dst = match side {
            Side::Access => sa(BGF_ACCESS),
            Side::Core => sa(BGF_CORE),
        };
        let out = self.apply(Input::Sip(SipIn {
            side,
            transport,
            src: sa(src),
            dst,
            at: self.now,
            data: text.as_bytes().to_vec(),
        }));
        sent(&out)
    }

    /// Fire every timer due at or before `until` (in deadline order).
    pub fn advance(&mut self, ms: u64) -> Vec<Sent> {
        let until = self.now + ms;
        let mut all = Vec::new();
        loop {
            let next = self
                .timers
                .iter()
                .filter(|(_, at)| **at <= until)
                .min_by_key(|(id, at)| (**at, **id))
                .map(|(id, at)| (*id, *at));
            let Some((id, at)) = next else { break };
            self.timers.remove(&id);
            self.now = self.now.max(at);
            let out = self.apply(Input::Timer { id, at: self.now });
            all.extend(sent(&out));
        }
        self.now = until;
        all
    }

    pub fn media(&mut self, event: media_plane::MediaEvent) -> Vec<Sent> {
        self.now += 10;
        let out = self.apply(Input::Media {
            event,
            at: self.now,
        });
        sent(&out)
    }

    /// Replay the log into a fresh core and compare the states exactly.
    pub fn assert_replay_equal(&self) {
        let mut fresh = Core::new(self.cfg.clone()).unwrap();
        for i in &self.log {
            fresh.apply(i);
        }
        assert_eq!(
            fresh.state(),
            self.core.state(),
            "replayed state differs from live state"
        );
    }
}

/// An input in one line (its kind, or a SIP message's first line).
pub fn describe(input: &Input) -> String {
    match input {
        Input::Sip(m) => String::from_utf8_lossy(&m.data)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        other => format!("{other:?}"),
    }
}

pub fn sent(out: &Applied) -> Vec<Sent> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(t) => Some(Sent {
                side: t.side,
                transport: t.transport,
                src: t.src,
                dst: t.dst,
                msg: parse_sent(&t.data),
                raw: String::from_utf8_lossy(&t.data).into_owned(),
            }),
            _ => None,
        })
        .collect()
}

pub fn top_branch(m: &Message) -> String {
    Via::parse(m.top_via().unwrap())
        .unwrap()
        .branch()
        .unwrap()
        .to_string()
}

pub fn code(s: &Sent) -> Option<u16> {
    s.msg.code()
}

/// Set up a call UE → BGF → core; returns (INVITE as the core saw it, 200 as the UE saw it).
pub fn establish(h: &mut Harness, call: &str) -> (Message, Message) {
    let out = h.recv(
        Side::Access,
        UE,
        &sipp_invite(call, &format!("z9hG4bK-{call}-1"), UE, 6000),
    );
    assert_eq!(out.len(), 2, "100 Trying + forwarded INVITE: {out:#?}");
    assert_eq!(code(&out[0]), Some(100));
    assert_eq!(out[0].dst, sa(UE));
    let trying_vias: Vec<_> = out[0].msg.headers_named("Via").collect();
    assert_eq!(trying_vias.len(), 1, "100 Trying carries only the UE's Via");
    assert!(trying_vias[0].contains(&format!("branch=z9hG4bK-{call}-1")));
    let inv = out[1].msg.clone();
    assert_eq!(out[1].side, Side::Core);
    assert_eq!(out[1].dst, sa(NEXT_HOP));
    assert_eq!(out[1].src, sa(BGF_CORE));
    let out = h.recv(
        Side::Core,
        NEXT_HOP,
        &respond(
            &inv,
            180,
            "Ringing",
            Some("callee1"),
            Some("sip:svc@198.18.2.20:5060"),
            None,
        ),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(code(&out[0]), Some(180));
    let out = h.recv(
        Side::Core,
        NEXT_HOP,
        &respond(
            &inv,
            200,
            "OK",
            Some("callee1"),
            Some("sip:svc@198.18.2.20:5060"),
            Some(&sdp_of("198.18.2.20", 7000)),
        ),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dst, sa(UE));
    (inv, out[0].msg.clone())
}

/// SIPp's default uac INVITE (3.6.1), addressed via the BGF.
pub fn sipp_invite(call: &str, branch: &str, ue: &str, media_port: u16) -> String {
    let (ip, port) = ue.rsplit_once(':').unwrap();
    let body = format!(
        "v=0\r\no=user1 53655765 2353687637 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {media_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    format!(
        "INVITE sip:service@198.18.2.20:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP {ip}:{port};branch={branch}\r\n\
From: sipp <sip:sipp@{ip}:{port}>;tag={call}-tag\r\n\
To: service <sip:service@198.18.2.20:5060>\r\n\
Call-ID: {call}\r\n\
CSeq: 1 INVITE\r\n\
Contact: sip:sipp@{ip}:{port}\r\n\
Max-Forwards: 70\r\n\
Subject: Performance Test\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A response to the request `req` as a UAS would build it: all Vias,
/// From, To (+tag), Call-ID, CSeq, Record-Route copied.
pub fn respond(
    req: &Message,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    contact: Option<&str>,
    sdp: Option<&str>,
) -> String {
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for h in &req.headers {
        match h.name.as_str() {
            "Via" | "From" | "Call-ID" | "CSeq" => {
                s.push_str(&format!("{}: {}\r\n", h.name, h.value))
            }
            "Record-Route" if code > 100 && code < 300 => {
                s.push_str(&format!("Record-Route: {}\r\n", h.value))
            }
            "To" => match to_tag {
                Some(t) if code > 100 => s.push_str(&format!("To: {};tag={t}\r\n", h.value)),
                _ => s.push_str(&format!("To: {}\r\n", h.value)),
            },
            _ => {}
        }
    }
    if let Some(c) = contact {
        s.push_str(&format!("Contact: <{c}>\r\n"));
    }
    match sdp {
        Some(b) => s.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => s.push_str("Content-Length: 0\r\n\r\n"),
    }
    s
}

pub fn sdp_of(ip: &str, port: u16) -> String {
    let fam = if ip.contains(':') { "IP6" } else { "IP4" };
    format!("v=0\r\no=- 1 1 IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")
}

/// An in-dialog request built from the dialog's Route set.
#[allow(clippy::too_many_arguments)]
pub fn in_dialog(
    method: &str,
    ruri: &str,
    routes: &[String],
    via: &str,
    from: &str,
    to: &str,
    call: &str,
    cseq: u32,
    sdp: Option<&str>,
) -> String {
    let mut s = format!("{method} {ruri} SIP/2.0\r\nVia: {via}\r\n");
    for r in routes {
        s.push_str(&format!("Route: {r}\r\n"));
    }
    s.push_str(&format!("Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call}\r\nCSeq: {cseq} {method}\r\n"));
    match sdp {
        Some(b) => s.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => s.push_str("Content-Length: 0\r\n\r\n"),
    }
    s
}

/// Parse what the core sent; a 400 to a request that lacked mandatory
/// headers lacks them too, so fall back to the status line alone.
fn parse_sent(data: &[u8]) -> Message {
    match Message::parse(data, usize::MAX) {
        Ok(m) => m,
        Err(e) => {
            let text = String::from_utf8_lossy(data);
            let first = text.lines().next().unwrap_or_default();
            let code: u16 = first
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("core sent unparseable message ({e}): {text}"));
            assert!(
                code >= 400,
                "only error responses may be incomplete: {text}"
            );
            Message {
                start: sip_control::msg::StartLine::Response {
                    code,
                    reason: String::new(),
                },
                headers: Vec::new(),
                body: Vec::new(),
            }
        }
    }
}
