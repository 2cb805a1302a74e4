//! The trust boundary, attacked through the core with real SIP text
//! (threat model items 1–3): routing that access peers cannot steer,
//! responses that must match our transactions, dialogs matched by their full
//! identifier and flow, media addresses SDP may not name, rollback of failed
//! offers. Every test ends with the replay check.

mod common;

use common::*;
use media_plane::Side;
use sip_control::msg::{Message, StartLine};
use sip_control::policy::Prefix;
use sip_control::sdp::Sdp;

const INTERNAL: &str = "198.18.2.77:5060"; // a core host that is not the next hop
const ROGUE: &str = "198.18.1.66:5061"; // another access source

fn ruri(m: &Message) -> String {
    match &m.start {
        StartLine::Request { uri, .. } => uri.clone(),
        _ => String::new(),
    }
}

/// Nothing the core sent went to the core side anywhere but the next hop.
fn only_next_hop(out: &[Sent]) {
    for s in out.iter().filter(|s| s.side == Side::Core) {
        assert_eq!(s.dst, sa(NEXT_HOP), "reached {}: {}", s.dst, s.raw);
    }
}

fn message(call: &str, branch: &str, to_tag: Option<&str>, route: Option<&str>) -> String {
    let to = match to_tag {
        Some(t) => format!("<sip:x@{INTERNAL}>;tag={t}"),
        None => format!("<sip:x@{INTERNAL}>"),
    };
    let route = route.map(|r| format!("Route: {r}\r\n")).unwrap_or_default();
    format!(
        "MESSAGE sip:x@{INTERNAL} SIP/2.0\r\nVia: SIP/2.0/UDP {UE};branch={branch};rport\r\n{route}Max-Forwards: 70\r\nFrom: <sip:ue@ims.example>;tag=f1\r\nTo: {to}\r\nCall-ID: {call}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn access_requests_reach_only_the_next_hop() {
    let mut h = Harness::new();
    // In-dialog (To-tag) for no dialog, Request-URI an internal host: 481.
    let out = h.recv(
        Side::Access,
        UE,
        &message("m1", "z9hG4bK-m1", Some("x"), None),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(code(&out[0]), Some(481));
    assert_eq!(out[0].dst, sa(UE));
    // Out of dialog with a Route naming the internal host: to the next hop,
    // the Route removed.
    let route = format!("<sip:{INTERNAL};lr>");
    let out = h.recv(
        Side::Access,
        UE,
        &message("m2", "z9hG4bK-m2", None, Some(&route)),
    );
    only_next_hop(&out);
    let fwd = out.iter().find(|s| s.side == Side::Core).unwrap();
    assert_eq!(fwd.msg.header("Route"), None);
    // With ;transport=tcp too (no port scanning through the BGF).
    let route = format!("<sip:{INTERNAL};transport=tcp;lr>");
    let out = h.recv(
        Side::Access,
        UE,
        &message("m3", "z9hG4bK-m3", None, Some(&route)),
    );
    only_next_hop(&out);
    assert!(out
        .iter()
        .all(|s| s.transport == sip_control::Transport::Udp));
    // An INVITE whose Request-URI names the internal host goes to the next hop.
    let inv = sipp_invite("i1", "z9hG4bK-i1", UE, 6000).replace(
        "sip:service@198.18.2.20:5060 SIP/2.0",
        &format!("sip:svc@{INTERNAL} SIP/2.0"),
    );
    let out = h.recv(Side::Access, UE, &inv);
    only_next_hop(&out);
    assert_eq!(h.core.stats().dialog_mismatches, 1);
    h.assert_replay_equal();
}

#[test]
fn keep_access_route_headers_keeps_them_but_never_follows_them() {
    let mut cfg = config();
    cfg.security.keep_access_route_headers = true;
    let mut h = Harness::with(cfg);
    let route = format!("<sip:{INTERNAL};lr>");
    let out = h.recv(
        Side::Access,
        UE,
        &message("k1", "z9hG4bK-k1", None, Some(&route)),
    );
    only_next_hop(&out);
    let fwd = out.iter().find(|s| s.side == Side::Core).unwrap();
    assert_eq!(fwd.msg.header("Route"), Some(route.as_str()));
    h.assert_replay_equal();
}

#[test]
fn forged_responses_are_never_relayed() {
    let mut h = Harness::new();
    // Top Via ours, unknown branch, next Via an internal host, from either side.
    for (side, src) in [(Side::Access, UE), (Side::Core, NEXT_HOP)] {
        let ours = if side == Side::Access {
            BGF_ACCESS
        } else {
            BGF_CORE
        };
        let resp = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {ours};branch=z9hG4bK-bgf-0000000000000000;rport\r\nVia: SIP/2.0/UDP {INTERNAL};branch=z9hG4bK-x\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: forged\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        assert!(h.recv(side, src, &resp).is_empty());
    }
    // A real call towards the UE (terminating): a response with the right
    // branch from another access source is dropped; the UE's own goes through.
    let (mut h2, inv_to_ue) = terminating_call(h);
    let from_rogue = respond(&inv_to_ue, 486, "Busy Here", Some("u1"), None, None);
    assert!(h2.recv(Side::Access, ROGUE, &from_rogue).is_empty());
    // ...and the same branch arriving on the core side is dropped too.
    assert!(h2.recv(Side::Core, NEXT_HOP, &from_rogue).is_empty());
    assert_eq!(h2.core.stats().responses_unmatched, 4);
    let from_ue = respond(&inv_to_ue, 180, "Ringing", Some("u1"), None, None);
    let out = h2.recv(Side::Access, "198.18.1.200:40000", &from_ue);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dst, sa(NEXT_HOP));
    h2.assert_replay_equal();
}

/// Register a UE behind NAT and send it a terminating INVITE; returns the
/// INVITE as the UE got it.
fn terminating_call(mut h: Harness) -> (Harness, Message) {
    let nat = "198.18.1.200:40000";
    let reg = "REGISTER sip:ims.example SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.9.5:5060;rport;branch=z9hG4bK-reg1\r\nFrom: <sip:alice@ims.example>;tag=r1\r\nTo: <sip:alice@ims.example>\r\nCall-ID: reg1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@198.18.9.5:5060>;expires=600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    let out = h.recv(Side::Access, nat, reg);
    let fwd = out[0].msg.clone();
    let contact = sip_control::msg::NameAddr::parse(fwd.header("Contact").unwrap()).unwrap();
    let ok = respond(&fwd, 200, "OK", Some("reg"), None, None).replace(
        "Content-Length: 0",
        &format!(
            "Contact: <{}>;expires=600\r\nContent-Length: 0",
            contact.uri
        ),
    );
    h.recv(Side::Core, NEXT_HOP, &ok);
    let body = sdp_of("198.18.2.30", 8000);
    let inv = format!(
        "INVITE {} SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.2.20:5060;branch=z9hG4bK-t1\r\nRecord-Route: <sip:198.18.2.20;lr>\r\nFrom: <sip:bob@ims.example>;tag=b1\r\nTo: <sip:alice@ims.example>\r\nCall-ID: term1\r\nCSeq: 5 INVITE\r\nContact: <sip:bob@198.18.2.30>\r\nMax-Forwards: 60\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        contact.uri,
        body.len()
    );
    let out = h.recv(Side::Core, NEXT_HOP, &inv);
    let to_ue = out.iter().find(|s| s.side == Side::Access).unwrap();
    assert_eq!(to_ue.dst, sa(nat));
    let m = to_ue.msg.clone();
    (h, m)
}

#[test]
fn core_initial_requests_reach_only_bindings_or_configured_routes() {
    let ue_host = "198.18.1.150:5060";
    let req = format!(
        "MESSAGE sip:alice@{ue_host} SIP/2.0\r\nVia: SIP/2.0/UDP {NEXT_HOP};branch=z9hG4bK-c1\r\nMax-Forwards: 70\r\nFrom: <sip:as@ims.example>;tag=a\r\nTo: <sip:alice@ims.example>\r\nCall-ID: c1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    );
    let mut h = Harness::new();
    let out = h.recv(Side::Core, NEXT_HOP, &req);
    assert_eq!(out.len(), 1);
    assert_eq!(code(&out[0]), Some(404));
    assert_eq!(h.core.stats().routing_refused, 1);
    h.assert_replay_equal();

    let mut cfg = config();
    cfg.security.access_routes = vec![Prefix::parse("198.18.1.128/25").unwrap()];
    let mut h = Harness::with(cfg);
    let out = h.recv(Side::Core, NEXT_HOP, &req);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].side, Side::Access);
    assert_eq!(out[0].dst, sa(ue_host));
    // Outside the configured prefix: 404.
    let out = h.recv(
        Side::Core,
        NEXT_HOP,
        &req.replace("198.18.1.150", "198.18.1.20")
            .replace("c1", "c2"),
    );
    assert_eq!(code(&out[0]), Some(404));
    h.assert_replay_equal();
}

/// The UE's view of an established originating call: (From, To, Route set).
fn ue_dialog(ok: &Message) -> (String, String, Vec<String>) {
    let routes: Vec<String> = ok
        .headers_named("Record-Route")
        .map(str::to_string)
        .rev()
        .collect();
    (
        ok.header("From").unwrap().to_string(),
        ok.header("To").unwrap().to_string(),
        routes,
    )
}

#[test]
fn in_dialog_requests_need_the_full_dialog_id_and_the_ue_flow() {
    let mut h = Harness::new();
    let (_inv, ok) = establish(&mut h, "hj1");
    let (from, to, routes) = ue_dialog(&ok);
    let before = h.core.sessions()[0].pinholes.clone();
    let evil_sdp = sdp_of("198.18.1.66", 9000);
    // The hijacker knows Call-ID and both tags but sends from elsewhere.
    let upd = in_dialog(
        "UPDATE",
        "sip:svc@198.18.2.20:5060",
        &routes,
        &format!("SIP/2.0/UDP {ROGUE};branch=z9hG4bK-hj-u1"),
        &from,
        &to,
        "hj1",
        3,
        Some(&evil_sdp),
    );
    let out = h.recv(Side::Access, ROGUE, &upd);
    assert_eq!(out.len(), 1);
    assert_eq!(code(&out[0]), Some(481));
    assert_eq!(out[0].dst, sa(ROGUE));
    // BYE from the hijacker: 481, the call stays.
    let bye = in_dialog(
        "BYE",
        "sip:svc@198.18.2.20:5060",
        &routes,
        &format!("SIP/2.0/UDP {ROGUE};branch=z9hG4bK-hj-b1"),
        &from,
        &to,
        "hj1",
        4,
        None,
    );
    assert_eq!(code(&h.recv(Side::Access, ROGUE, &bye)[0]), Some(481));
    // From the UE's flow but with a wrong To-tag: 481.
    let wrong = in_dialog(
        "UPDATE",
        "sip:svc@198.18.2.20:5060",
        &routes,
        &format!("SIP/2.0/UDP {UE};branch=z9hG4bK-hj-u2"),
        &from,
        &to.replace("callee1", "callee9"),
        "hj1",
        5,
        Some(&evil_sdp),
    );
    assert_eq!(code(&h.recv(Side::Access, UE, &wrong)[0]), Some(481));
    // Out of dialog (no To-tag) UPDATE/BYE naming the Call-ID: 481.
    let no_tag = bye
        .replace(";tag=callee1", "")
        .replace(ROGUE, UE)
        .replace("hj-b1", "hj-b2");
    assert_eq!(code(&h.recv(Side::Access, UE, &no_tag)[0]), Some(481));
    // A new INVITE reusing the live Call-ID from another source: 482.
    let inv = sipp_invite("hj1", "z9hG4bK-hj-i", ROGUE, 9000);
    assert_eq!(code(&h.recv(Side::Access, ROGUE, &inv)[0]), Some(482));
    // A spoofed ACK and CANCEL from elsewhere change nothing either.
    let ack = in_dialog(
        "ACK",
        "sip:svc@198.18.2.20:5060",
        &routes,
        &format!("SIP/2.0/UDP {ROGUE};branch=z9hG4bK-hj-a"),
        &from,
        &to,
        "hj1",
        1,
        Some(&evil_sdp),
    );
    assert!(h.recv(Side::Access, ROGUE, &ack).is_empty());
    assert_eq!(h.core.sessions().len(), 1);
    assert_eq!(
        h.core.sessions()[0].pinholes,
        before,
        "media not re-pointed"
    );
    assert_eq!(h.core.sessions()[0].state, "confirmed");
    assert!(h.core.stats().dialog_mismatches >= 6);
    // The real UE still can.
    let bye = in_dialog(
        "BYE",
        "sip:svc@198.18.2.20:5060",
        &routes,
        &format!("SIP/2.0/UDP {UE};branch=z9hG4bK-hj-b9"),
        &from,
        &to,
        "hj1",
        9,
        None,
    );
    let out = h.recv(Side::Access, UE, &bye);
    only_next_hop(&out);
    assert_eq!(out.iter().filter(|s| s.side == Side::Core).count(), 1);
    h.assert_replay_equal();
}

#[test]
fn in_dialog_requests_follow_the_dialog_not_their_own_route() {
    let mut h = Harness::new();
    let (_inv, ok) = establish(&mut h, "rt1");
    let (from, to, mut routes) = ue_dialog(&ok);
    // The UE appends an internal host to the route set and targets it.
    routes.push(format!("<sip:{INTERNAL};lr>"));
    let info = in_dialog(
        "INFO",
        &format!("sip:x@{INTERNAL}"),
        &routes,
        &format!("SIP/2.0/UDP {UE};branch=z9hG4bK-rt-1"),
        &from,
        &to,
        "rt1",
        2,
        None,
    );
    let out = h.recv(Side::Access, UE, &info);
    only_next_hop(&out);
    let fwd = &out.iter().find(|s| s.side == Side::Core).unwrap().msg;
    // The callee's Contact is the remote target; no Route was recorded
    // beyond ours, so none is sent.
    assert_eq!(ruri(fwd), "sip:svc@198.18.2.20:5060");
    assert_eq!(fwd.header("Route"), None);
    h.assert_replay_equal();
}

#[test]
fn sdp_media_addresses_the_policy_refuses_get_488() {
    let mut cfg = config();
    cfg.security.access.media.deny = vec![Prefix::parse("198.18.2.0/24").unwrap()];
    let mut h = Harness::with(cfg);
    for (i, ip) in [
        "127.0.0.1",
        "169.254.3.4",
        "224.1.1.1",
        "0.0.0.0",
        "198.18.1.10", // the BGF's own access address
        "198.18.2.10", // its core address
        "198.18.2.77", // a denied prefix
    ]
    .iter()
    .enumerate()
    {
        let call = format!("sd{i}");
        let inv = fix_length(
            &sipp_invite(&call, &format!("z9hG4bK-{call}"), UE, 6000)
                .replace("c=IN IP4 198.18.1.100", &format!("c=IN IP4 {ip}")),
        );
        let out = h.recv(Side::Access, UE, &inv);
        assert_eq!(out.len(), 1, "{ip}: {out:#?}");
        assert_eq!(code(&out[0]), Some(488), "{ip}");
        assert!(
            out[0].msg.header("Warning").unwrap().contains(ip),
            "{:?}",
            out[0].msg.header("Warning")
        );
    }
    assert_eq!(h.core.session_count(), 0);
    // (multicast is already unusable to the SDP layer: counted there)
    assert_eq!(h.core.stats().media_refused, 6);
    // The BGF's own media ports via a=rtcp: refused too.
    let inv = sipp_invite("sdr", "z9hG4bK-sdr", UE, 6000).replace(
        "a=rtpmap:0 PCMU/8000\r\n",
        "a=rtpmap:0 PCMU/8000\r\na=rtcp:20001 IN IP4 198.18.1.10\r\n",
    );
    let inv = fix_length(&inv);
    assert_eq!(code(&h.recv(Side::Access, UE, &inv)[0]), Some(488));
    // More streams than a session may have.
    let extra = "m=audio 6002 RTP/AVP 0\r\nm=audio 6004 RTP/AVP 0\r\nm=audio 6006 RTP/AVP 0\r\nm=audio 6008 RTP/AVP 0\r\n";
    let inv = fix_length(&format!(
        "{}{extra}",
        sipp_invite("sdm", "z9hG4bK-sdm", UE, 6000)
    ));
    let out = h.recv(Side::Access, UE, &inv);
    assert_eq!(code(&out[0]), Some(488));
    assert!(out[0]
        .msg
        .header("Warning")
        .unwrap()
        .contains("5 media streams"));
    h.assert_replay_equal();
}

/// Recompute Content-Length after editing a message's body.
fn fix_length(msg: &str) -> String {
    let (head, body) = msg.split_once("\r\n\r\n").unwrap();
    let head: Vec<&str> = head
        .split("\r\n")
        .filter(|l| !l.starts_with("Content-Length"))
        .collect();
    format!(
        "{}\r\nContent-Length: {}\r\n\r\n{body}",
        head.join("\r\n"),
        body.len()
    )
}

#[test]
fn an_answer_at_a_refused_address_is_relayed_without_its_body() {
    let mut h = Harness::new();
    let out = h.recv(
        Side::Access,
        UE,
        &sipp_invite("an1", "z9hG4bK-an1", UE, 6000),
    );
    let inv = out[1].msg.clone();
    let ok = respond(
        &inv,
        200,
        "OK",
        Some("c1"),
        Some("sip:svc@198.18.2.20:5060"),
        Some(&sdp_of("127.0.0.1", 7000)),
    );
    let out = h.recv(Side::Core, NEXT_HOP, &ok);
    assert_eq!(out.len(), 1);
    assert!(out[0].msg.body.is_empty(), "no SDP naming loopback relayed");
    let p = &h.core.sessions()[0].pinholes[0];
    assert_eq!(p.core.remote_rtp, None, "no media towards loopback");
    assert_eq!(h.core.stats().media_refused, 1);
    h.assert_replay_equal();
}

#[test]
fn a_rejected_offer_in_prack_rolls_back() {
    let mut h = Harness::new();
    let out = h.recv(
        Side::Access,
        UE,
        &sipp_invite("pr1", "z9hG4bK-pr1", UE, 6000),
    );
    let inv = out[1].msg.clone();
    let r183 = respond(
        &inv,
        183,
        "Session Progress",
        Some("e1"),
        Some("sip:svc@198.18.2.20:5060"),
        Some(&sdp_of("198.18.2.20", 7000)),
    )
    .replace("Content-Type", "Require: 100rel\r\nRSeq: 1\r\nContent-Type");
    let out = h.recv(Side::Core, NEXT_HOP, &r183);
    let r183m = out[0].msg.clone();
    let before = h.core.sessions()[0].pinholes.clone();
    let routes: Vec<String> = r183m
        .headers_named("Record-Route")
        .map(str::to_string)
        .rev()
        .collect();
    // PRACK with a new offer (the UE moves its media).
    let prack = in_dialog(
        "PRACK",
        "sip:svc@198.18.2.20:5060",
        &routes,
        &format!("SIP/2.0/UDP {UE};branch=z9hG4bK-prk"),
        r183m.header("From").unwrap(),
        r183m.header("To").unwrap(),
        "pr1",
        2,
        Some(&sdp_of("198.18.1.100", 6200)),
    )
    .replace("Content-Type", "RAck: 1 1 INVITE\r\nContent-Type");
    let out = h.recv(Side::Access, UE, &prack);
    let fwd = out
        .iter()
        .find(|s| s.side == Side::Core)
        .unwrap()
        .msg
        .clone();
    assert_ne!(h.core.sessions()[0].pinholes, before, "offer applied");
    // The far end rejects it: the media plan is back as it was.
    let out = h.recv(
        Side::Core,
        NEXT_HOP,
        &respond(&fwd, 488, "Not Acceptable Here", Some("e1"), None, None),
    );
    assert_eq!(code(&out[0]), Some(488));
    assert_eq!(h.core.sessions()[0].pinholes, before, "rolled back");
    let s = Sdp::parse(&r183m.body).unwrap().streams();
    assert_eq!(s.len(), 1);
    h.assert_replay_equal();
}

#[test]
fn subscriptions_are_dialogs_too() {
    let mut h = Harness::new();
    let sub = format!(
        "SUBSCRIBE sip:alice@ims.example SIP/2.0\r\nVia: SIP/2.0/UDP {UE};branch=z9hG4bK-s1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@ims.example>;tag=s1\r\nTo: <sip:alice@ims.example>\r\nCall-ID: sub1\r\nCSeq: 1 SUBSCRIBE\r\nEvent: reg\r\nExpires: 600\r\nContact: <sip:alice@198.18.1.100:5061>\r\nContent-Length: 0\r\n\r\n"
    );
    let out = h.recv(Side::Access, UE, &sub);
    only_next_hop(&out);
    let fwd = out[0].msg.clone();
    // The notifier NOTIFYs before its 2xx arrives (RFC 6665): it reaches the UE.
    let notify = |tag: &str, branch: &str, cseq: u32, state: &str| {
        format!(
            "NOTIFY sip:alice@198.18.1.100:5061 SIP/2.0\r\nVia: SIP/2.0/UDP {NEXT_HOP};branch={branch}\r\nRoute: <sip:{BGF_CORE};lr>\r\nMax-Forwards: 70\r\nFrom: <sip:alice@ims.example>;tag={tag}\r\nTo: <sip:alice@ims.example>;tag=s1\r\nCall-ID: sub1\r\nCSeq: {cseq} NOTIFY\r\nEvent: reg\r\nSubscription-State: {state}\r\nContact: <sip:scscf@198.18.2.20:5060>\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let out = h.recv(
        Side::Core,
        NEXT_HOP,
        &notify("n1", "z9hG4bK-n1", 1, "active;expires=600"),
    );
    let to_ue = out.iter().find(|s| s.side == Side::Access).unwrap();
    assert_eq!(to_ue.dst, sa(UE));
    let out = h.recv(
        Side::Core,
        NEXT_HOP,
        &respond(
            &fwd,
            200,
            "OK",
            Some("n1"),
            Some("sip:scscf@198.18.2.20:5060"),
            None,
        )
        .replace("Content-Length: 0", "Expires: 600\r\nContent-Length: 0"),
    );
    assert_eq!(out[0].dst, sa(UE));
    // A NOTIFY with another notifier tag: 481.
    let out = h.recv(
        Side::Core,
        NEXT_HOP,
        &notify("n9", "z9hG4bK-n9", 2, "active;expires=600"),
    );
    assert_eq!(code(&out[0]), Some(481));
    // The final NOTIFY ends the subscription once answered.
    let out = h.recv(
        Side::Core,
        NEXT_HOP,
        &notify("n1", "z9hG4bK-n2", 3, "terminated;reason=timeout"),
    );
    let n = out
        .iter()
        .find(|s| s.side == Side::Access)
        .unwrap()
        .msg
        .clone();
    assert_eq!(h.core.session_count(), 1);
    h.recv(Side::Access, UE, &respond(&n, 200, "OK", None, None, None));
    assert_eq!(h.core.session_count(), 0);
    h.assert_replay_equal();
}

fn sos_invite(call: &str, branch: &str, ue: &str, port: u16) -> String {
    sipp_invite(call, branch, ue, port).replace(
        "INVITE sip:service@198.18.2.20:5060 SIP/2.0",
        "INVITE urn:service:sos SIP/2.0",
    )
}

#[test]
fn per_source_caps_answer_503_and_emergency_calls_pass() {
    let mut cfg = config();
    cfg.security.limits.sessions_per_source = 3;
    cfg.security.limits.early_dialogs_per_source = 2;
    let mut h = Harness::with(cfg);
    let other = "198.18.1.101:5061";
    // Two unanswered calls from the UE: the third unanswered one is refused.
    for i in 0..2 {
        let out = h.recv(
            Side::Access,
            UE,
            &sipp_invite(&format!("e{i}"), &format!("z9hG4bK-e{i}"), UE, 6000 + 2 * i),
        );
        assert_eq!(code(&out[0]), Some(100));
    }
    let out = h.recv(Side::Access, UE, &sipp_invite("e2", "z9hG4bK-e2", UE, 6100));
    assert_eq!(code(&out[0]), Some(503));
    assert!(out[0].msg.header("Retry-After").is_some());
    assert!(out[0].raw.contains("unanswered"), "{}", out[0].raw);
    // Another source is not affected; an emergency call from the UE passes.
    let out = h.recv(
        Side::Access,
        other,
        &sipp_invite("o1", "z9hG4bK-o1", other, 6000),
    );
    assert_eq!(code(&out[0]), Some(100));
    let out = h.recv(
        Side::Access,
        UE,
        &sos_invite("sos1", "z9hG4bK-sos1", UE, 6200),
    );
    assert_eq!(code(&out[0]), Some(100), "{}", out[0].raw);
    // Now three dialogs from the UE: a fourth (even answered ones count) is refused.
    let out = h.recv(Side::Access, UE, &sipp_invite("e3", "z9hG4bK-e3", UE, 6300));
    assert_eq!(code(&out[0]), Some(503));
    assert!(out[0].raw.contains("too many dialogs"), "{}", out[0].raw);
    assert_eq!(h.core.stats().capacity_refused, 2);
    h.assert_replay_equal();
}

#[test]
fn unanswered_invites_cannot_hold_every_port_and_the_emergency_share_stays() {
    let mut cfg = config();
    cfg.access.rtp_port_min = 20000;
    cfg.access.rtp_port_max = 20039; // 20 pairs
    cfg.security.limits.unanswered_invite_ports = 8;
    cfg.security.limits.emergency_reserve_percent = 50;
    let mut h = Harness::with(cfg);
    // Eight unanswered single-stream calls from many sources fill the cap.
    let mut refused = 0;
    for i in 0..12u16 {
        let ue = format!("198.18.1.{}:5061", 100 + i);
        let out = h.recv(
            Side::Access,
            &ue,
            &sipp_invite(&format!("u{i}"), &format!("z9hG4bK-u{i}"), &ue, 6000),
        );
        if code(&out[0]) == Some(503) {
            refused += 1;
        }
    }
    assert_eq!(refused, 4, "8 admitted");
    assert_eq!(h.core.state().pools.access.in_use(), 8);
    // Answered calls do not count against the unanswered cap, but the
    // emergency share (10 of 20 pairs) is kept from ordinary calls.
    let mut h = Harness::with({
        let mut c = config();
        c.access.rtp_port_min = 20000;
        c.access.rtp_port_max = 20039;
        c.security.limits.emergency_reserve_percent = 50;
        c
    });
    for i in 0..10 {
        establish(&mut h, &format!("a{i}"));
    }
    let out = h.recv(
        Side::Access,
        UE,
        &sipp_invite("a10", "z9hG4bK-a10", UE, 6000),
    );
    assert_eq!(code(&out[0]), Some(503));
    assert!(out[0].raw.contains("emergency"), "{}", out[0].raw);
    let out = h.recv(Side::Access, UE, &sos_invite("s1", "z9hG4bK-s1", UE, 6000));
    assert_eq!(code(&out[0]), Some(100), "{}", out[0].raw);
    assert_eq!(h.core.state().pools.access.in_use(), 11);
    h.assert_replay_equal();
}

/// A REGISTER from `src` for `user`, answered 200 by the registrar with the
/// contact the BGF gave it (plus `extra_headers`); returns what the UE got.
fn registered(
    h: &mut Harness,
    call: &str,
    user: &str,
    src: &str,
    extra_headers: &str,
) -> Vec<Sent> {
    let out = h.recv(Side::Access, src, &register(call, user, src, ""));
    let fwd = out[0].msg.clone();
    let c = sip_control::msg::NameAddr::parse(fwd.header("Contact").unwrap()).unwrap();
    let ok = respond(&fwd, 200, "OK", Some("reg"), None, None).replace(
        "Content-Length: 0",
        &format!(
            "Contact: <{}>;expires=600\r\n{extra_headers}Content-Length: 0",
            c.uri
        ),
    );
    h.recv(Side::Core, NEXT_HOP, &ok)
}

fn register(call: &str, contact_user: &str, src: &str, extra: &str) -> String {
    let (ip, port) = src.rsplit_once(':').unwrap();
    format!(
        "REGISTER sip:ims.example SIP/2.0\r\nVia: SIP/2.0/UDP {src};rport;branch=z9hG4bK-{call}\r\nFrom: <sip:{contact_user}@ims.example>;tag=r{call}\r\nTo: <sip:{contact_user}@ims.example>\r\nCall-ID: {call}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{contact_user}@{ip}:{port}{extra}>;expires=600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn registrations_per_source_are_capped_and_only_registered_flows_get_retransmissions() {
    let mut cfg = config();
    cfg.security.limits.registrations_per_source = 1;
    let mut h = Harness::with(cfg);
    registered(&mut h, "rg1", "alice", UE, "");
    assert_eq!(h.core.registration_count(), 1);
    // A second AOR from the same source: 503.
    let out = h.recv(Side::Access, UE, &register("rg2", "bob", UE, ""));
    assert_eq!(code(&out[0]), Some(503));
    // A refresh of the same binding is not a new one; an emergency
    // registration passes.
    let out = h.recv(Side::Access, UE, &register("rg3", "alice", UE, ""));
    assert_eq!(out[0].side, Side::Core);
    let out = h.recv(Side::Access, UE, &register("rg4", "carol", UE, ";sos"));
    assert_eq!(out[0].side, Side::Core);

    // A refused INVITE from an unregistered source gets its 488 once.
    let stranger = "198.18.1.77:5061";
    let bad = sipp_invite("x1", "z9hG4bK-x1", stranger, 6000)
        .replace("c=IN IP4 198.18.1.77", "c=IN IP4 127.0.0.1");
    let out = h.recv(Side::Access, stranger, &fix_length(&bad));
    assert_eq!(code(&out[0]), Some(488));
    let later = h.advance(40_000);
    assert!(
        later.iter().all(|s| s.dst != sa(stranger)),
        "no retransmission towards an unverified source: {later:#?}"
    );
    // ...and again when its INVITE comes again (one for one).
    let out = h.recv(Side::Access, stranger, &fix_length(&bad));
    assert!(out.len() <= 1);
    // The registered UE gets it retransmitted until its ACK.
    let bad = sipp_invite("x2", "z9hG4bK-x2", UE, 6000)
        .replace("c=IN IP4 198.18.1.100", "c=IN IP4 127.0.0.1");
    let out = h.recv(Side::Access, UE, &fix_length(&bad));
    assert_eq!(code(&out[0]), Some(488));
    let later = h.advance(2_000);
    assert!(later
        .iter()
        .any(|s| s.dst == sa(UE) && code(s) == Some(488)));
    h.assert_replay_equal();
}

/// No trace of the core network (198.18.2.0/24) in a message's topology
/// headers (From/To carry identities the UE chose or must see).
fn no_core_topology(s: &Sent) {
    for h in &s.msg.headers {
        let topo = [
            "Via",
            "Record-Route",
            "Route",
            "Contact",
            "Service-Route",
            "Path",
            "P-Charging-Vector",
        ]
        .iter()
        .any(|n| h.name.eq_ignore_ascii_case(n));
        assert!(
            !(topo && h.value.contains("198.18.2.")),
            "core topology leaks to the UE: {}: {}\n{}",
            h.name,
            h.value,
            s.raw
        );
    }
}

#[test]
fn topology_hiding_keeps_core_via_record_route_and_contact_from_the_ue() {
    let mut h = Harness::new();
    let nat = "198.18.1.200:40000";
    // Register, then a terminating INVITE through two core proxies.
    let out = h.recv(Side::Access, nat, &register("tr1", "alice", nat, ""));
    let fwd = out[0].msg.clone();
    let contact = sip_control::msg::NameAddr::parse(fwd.header("Contact").unwrap()).unwrap();
    let ok = respond(&fwd, 200, "OK", Some("reg"), None, None).replace(
        "Content-Length: 0",
        &format!(
            "Contact: <{}>;expires=600\r\nService-Route: <sip:orig@198.18.2.40;lr>\r\nPath: <sip:198.18.2.20;lr>\r\nContent-Length: 0",
            contact.uri
        ),
    );
    let out = h.recv(Side::Core, NEXT_HOP, &ok);
    no_core_topology(&out[0]);
    assert_eq!(
        out[0].msg.header("Service-Route"),
        Some("<sip:198.18.1.10:5060;lr>")
    );
    let body = sdp_of("198.18.2.30", 8000);
    let inv = format!(
        "INVITE {} SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.2.20:5060;branch=z9hG4bK-p1\r\nVia: SIP/2.0/UDP 198.18.2.40:5060;branch=z9hG4bK-s1\r\nRecord-Route: <sip:198.18.2.20;lr>\r\nRecord-Route: <sip:198.18.2.40;lr>\r\nFrom: <sip:bob@ims.example>;tag=b1\r\nTo: <sip:alice@ims.example>\r\nCall-ID: hide1\r\nCSeq: 5 INVITE\r\nContact: <sip:bob@198.18.2.30>\r\nP-Charging-Vector: icid-value=x;orig-ioi=198.18.2.40\r\nMax-Forwards: 60\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        contact.uri,
        body.len()
    );
    let out = h.recv(Side::Core, NEXT_HOP, &inv);
    let to_ue = out.iter().find(|s| s.side == Side::Access).unwrap().clone();
    no_core_topology(&to_ue);
    assert_eq!(to_ue.msg.count("Via"), 1);
    assert_eq!(to_ue.msg.count("Record-Route"), 1);
    assert_eq!(to_ue.msg.header("Contact"), Some("<sip:198.18.1.10:5060>"));
    // The UE answers with what it got (its own proxy on top of our entry).
    let ringing = respond(
        &to_ue.msg,
        180,
        "Ringing",
        Some("a1"),
        Some("sip:alice@198.18.9.5:5060"),
        None,
    )
    .replace(
        "Record-Route: <sip:198.18.1.10:5060;lr>",
        "Record-Route: <sip:198.18.1.99;lr>\r\nRecord-Route: <sip:198.18.1.10:5060;lr>",
    );
    let out = h.recv(Side::Access, nat, &ringing);
    let at_core = &out[0].msg;
    assert_eq!(out[0].dst, sa(NEXT_HOP));
    let vias: Vec<&str> = at_core.headers_named("Via").collect();
    assert_eq!(vias.len(), 2, "the core's Vias are back: {vias:?}");
    assert!(vias[0].contains("z9hG4bK-p1") && vias[1].contains("z9hG4bK-s1"));
    let rr: Vec<&str> = at_core.headers_named("Record-Route").collect();
    assert_eq!(
        rr,
        vec![
            "<sip:198.18.1.99;lr>",
            "<sip:198.18.1.10:5060;lr>",
            "<sip:198.18.2.10:5060;lr>",
            "<sip:198.18.2.20;lr>",
            "<sip:198.18.2.40;lr>"
        ]
    );
    let ok = respond(
        &to_ue.msg,
        200,
        "OK",
        Some("a1"),
        Some("sip:alice@198.18.9.5:5060"),
        Some(&sdp_of("198.18.1.200", 7000)),
    );
    let out = h.recv(Side::Access, nat, &ok);
    assert_eq!(out[0].msg.count("Via"), 2);
    // The UE hangs up towards the remote target it knows (us): the BYE
    // reaches the core along the dialog's route set with the real target.
    let bye = format!(
        "BYE sip:198.18.1.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {nat};branch=z9hG4bK-hb1;rport\r\nRoute: <sip:198.18.1.10:5060;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:alice@ims.example>;tag=a1\r\nTo: <sip:bob@ims.example>;tag=b1\r\nCall-ID: hide1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let out = h.recv(Side::Access, nat, &bye);
    let b = out.iter().find(|s| s.side == Side::Core).unwrap();
    assert_eq!(b.dst, sa(NEXT_HOP));
    assert_eq!(ruri(&b.msg), "sip:bob@198.18.2.30");
    let routes: Vec<&str> = b.msg.headers_named("Route").collect();
    assert_eq!(routes, vec!["<sip:198.18.2.20;lr>", "<sip:198.18.2.40;lr>"]);
    let out = h.recv(
        Side::Core,
        NEXT_HOP,
        &respond(&b.msg, 200, "OK", None, None, None),
    );
    no_core_topology(&out[0]);
    assert_eq!(h.core.session_count(), 0);
    h.assert_replay_equal();
}

#[test]
fn topology_hiding_on_an_originating_call() {
    let mut h = Harness::new();
    let out = h.recv(
        Side::Access,
        UE,
        &sipp_invite("ho1", "z9hG4bK-ho1", UE, 6000),
    );
    let inv = out[1].msg.clone();
    let ok = respond(
        &inv,
        200,
        "OK",
        Some("c1"),
        Some("sip:callee@198.18.2.30:5060"),
        Some(&sdp_of("198.18.2.30", 7000)),
    )
    .replacen(
        "Record-Route:",
        "Record-Route: <sip:198.18.2.20;lr>\r\nRecord-Route:",
        1,
    );
    let out = h.recv(Side::Core, NEXT_HOP, &ok);
    assert_eq!(out[0].dst, sa(UE));
    no_core_topology(&out[0]);
    let rr: Vec<&str> = out[0].msg.headers_named("Record-Route").collect();
    assert_eq!(rr, vec!["<sip:198.18.1.10:5060;lr>"]);
    // ACK and BYE from the UE reach the callee through the recorded route.
    let (from, to, routes) = ue_dialog(&out[0].msg);
    let bye = in_dialog(
        "BYE",
        "sip:198.18.1.10:5060",
        &routes,
        &format!("SIP/2.0/UDP {UE};branch=z9hG4bK-ho-b"),
        &from,
        &to,
        "ho1",
        2,
        None,
    );
    let out = h.recv(Side::Access, UE, &bye);
    let b = out.iter().find(|s| s.side == Side::Core).unwrap();
    assert_eq!(b.dst, sa(NEXT_HOP));
    assert_eq!(ruri(&b.msg), "sip:callee@198.18.2.30:5060");
    assert_eq!(b.msg.header("Route"), Some("<sip:198.18.2.20;lr>"));
    h.assert_replay_equal();
}

#[test]
fn with_require_registration_only_registered_sources_may_call() {
    let mut cfg = config();
    cfg.security.require_registration = true;
    let mut h = Harness::with(cfg);
    let out = h.recv(
        Side::Access,
        UE,
        &sipp_invite("rr1", "z9hG4bK-rr1", UE, 6000),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(code(&out[0]), Some(403));
    assert_eq!(h.core.session_count(), 0);
    // Emergency calls need no registration.
    let out = h.recv(
        Side::Access,
        UE,
        &sos_invite("rr2", "z9hG4bK-rr2", UE, 6000),
    );
    assert_eq!(code(&out[0]), Some(100));
    // After a registration from that address, calls pass.
    registered(&mut h, "rr3", "alice", UE, "");
    let out = h.recv(
        Side::Access,
        UE,
        &sipp_invite("rr4", "z9hG4bK-rr4", UE, 6002),
    );
    assert_eq!(code(&out[0]), Some(100));
    h.assert_replay_equal();
}
