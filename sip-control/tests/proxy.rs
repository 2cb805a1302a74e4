//! Call flows through the core with real SIP text: what it sends, where, and
//! that replaying its log reproduces its state.

mod common;

use common::*;
use media_plane::{MediaEvent, PinholeId, PinholeOp, Side};
use sip_control::msg::{NameAddr, Via};
use sip_control::sdp::Sdp;

#[test]
fn basic_call_rewrites_sdp_routes_and_releases() {
    let mut h = Harness::new();
    let (inv, ok) = establish(&mut h, "call1");

    // The INVITE towards the core: our Via on top, double Record-Route, SDP via our core side.
    let via = Via::parse(inv.top_via().unwrap()).unwrap();
    assert_eq!(via.sent_by(), BGF_CORE);
    assert!(via.branch().unwrap().starts_with("z9hG4bK"));
    let rr: Vec<_> = inv.headers_named("Record-Route").collect();
    assert_eq!(
        rr,
        vec!["<sip:198.18.2.10:5060;lr>", "<sip:198.18.1.10:5060;lr>"]
    );
    assert_eq!(inv.header("Max-Forwards"), Some("69"));
    let s = Sdp::parse(&inv.body).unwrap().streams();
    assert_eq!(
        s[0].rtp(),
        Some(sa("198.18.2.10:30000")),
        "core sees the BGF's core media address"
    );
    // The second Via is the UE's, with received/rport handling untouched (no rport asked).
    assert_eq!(inv.headers_named("Via").count(), 2);

    // The 200 towards the UE: our Via gone, SDP via our access side.
    assert_eq!(ok.headers_named("Via").count(), 1);
    let s = Sdp::parse(&ok.body).unwrap().streams();
    assert_eq!(s[0].rtp(), Some(sa("198.18.1.10:20000")));

    // The pinhole: UE remote from the INVITE, core remote from the 200, latching on access.
    let sess = h.core.sessions();
    assert_eq!(sess.len(), 1);
    assert_eq!(sess[0].state, "confirmed");
    let p = &sess[0].pinholes[0];
    assert_eq!(p.access.local, sa("198.18.1.10:20000"));
    assert_eq!(p.access.remote_rtp, Some(sa("198.18.1.100:6000")));
    assert_eq!(p.access.latch_ip, Some(sa(UE).ip()));
    assert_eq!(p.core.local, sa("198.18.2.10:30000"));
    assert_eq!(p.core.remote_rtp, Some(sa("198.18.2.20:7000")));
    assert_eq!(p.core.remote_rtcp, Some(sa("198.18.2.20:7001")));

    // ACK from the UE with the route set (reverse of Record-Route).
    let routes: Vec<String> = ok
        .headers_named("Record-Route")
        .map(str::to_string)
        .rev()
        .collect();
    let from = ok.header("From").unwrap().to_string();
    let to = ok.header("To").unwrap().to_string();
    let ack = in_dialog(
        "ACK",
        "sip:svc@198.18.2.20:5060",
        &routes,
        &format!("SIP/2.0/UDP {UE};branch=z9hG4bK-ack1"),
        &from,
        &to,
        "call1",
        1,
        None,
    );
    let out = h.recv(Side::Access, UE, &ack);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].side, Side::Core);
    assert_eq!(out[0].dst, sa("198.18.2.20:5060"));
    assert_eq!(out[0].msg.count("Route"), 0, "our routes are consumed");

    // BYE from the core with its route set (Record-Route in order).
    let core_routes: Vec<String> = ok
        .headers_named("Record-Route")
        .map(str::to_string)
        .collect();
    let bye = in_dialog(
        "BYE",
        "sip:sipp@198.18.1.100:5061",
        &core_routes,
        "SIP/2.0/UDP 198.18.2.20:5060;branch=z9hG4bK-bye1",
        &to,
        &from,
        "call1",
        1,
        None,
    );
    let out = h.recv(Side::Core, NEXT_HOP, &bye);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].dst,
        sa(UE),
        "in-dialog request reaches the UE at its flow"
    );
    assert_eq!(out[0].src, sa(BGF_ACCESS));
    let bye_fwd = out[0].msg.clone();
    let out = h.recv(
        Side::Access,
        UE,
        &respond(&bye_fwd, 200, "OK", None, None, None),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dst, sa(NEXT_HOP));
    assert_eq!(h.core.session_count(), 0);
    assert!(h
        .pinholes
        .iter()
        .any(|op| matches!(op, PinholeOp::Remove(id) if id.session == 1)));
    assert_eq!(h.core.state().pools.access.in_use(), 0, "ports released");
    assert_eq!(h.core.state().pools.core.in_use(), 0);

    h.advance(60_000);
    assert_eq!(h.core.transaction_count(), 0, "every transaction ends");
    assert!(h.timers.is_empty());
    h.assert_replay_equal();
}

#[test]
fn invite_retransmission_is_absorbed_and_not_logged() {
    let mut h = Harness::new();
    let inv = sipp_invite("rt1", "z9hG4bK-rt1", UE, 6000);
    let first = h.recv(Side::Access, UE, &inv);
    assert_eq!(first.len(), 2);
    let logged = h.log.len();
    let again = h.recv(Side::Access, UE, &inv);
    assert_eq!(again.len(), 1, "only the last response (100) is re-sent");
    assert_eq!(code(&again[0]), Some(100));
    assert_eq!(h.log.len(), logged, "retransmission not logged");
    assert_eq!(h.core.stats().retransmissions_absorbed, 1);
    // Timer A retransmits downstream over UDP.
    let out = h.advance(500);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dst, sa(NEXT_HOP));
    assert_eq!(out[0].msg.method().as_str(), "INVITE");
    h.assert_replay_equal();
}

#[test]
fn no_answer_times_out_with_408_and_ends_session() {
    let mut h = Harness::new();
    h.recv(
        Side::Access,
        UE,
        &sipp_invite("to1", "z9hG4bK-to1", UE, 6000),
    );
    let out = h.advance(40_000);
    let resp: Vec<_> = out.iter().filter(|s| code(s).is_some()).collect();
    assert!(!resp.is_empty(), "408 upstream: {out:#?}");
    assert!(
        resp.iter().all(|r| code(r) == Some(408)),
        "only 408s (Timer G retransmits it): {resp:#?}"
    );
    assert_eq!(resp[0].dst, sa(UE));
    assert_eq!(h.core.session_count(), 0);
    // 408 is retransmitted (Timer G) until ACK; ACK stops it.
    let ack = format!(
        "ACK sip:service@198.18.2.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {UE};branch=z9hG4bK-to1\r\nFrom: sipp <sip:sipp@198.18.1.100:5061>;tag=to1-tag\r\nTo: {}\r\nCall-ID: to1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        resp[0].msg.header("To").unwrap()
    );
    assert!(
        h.recv(Side::Access, UE, &ack).is_empty(),
        "ACK for our 408 is absorbed"
    );
    h.advance(100_000);
    assert_eq!(h.core.transaction_count(), 0);
    h.assert_replay_equal();
}

#[test]
fn cancel_of_early_dialog() {
    let mut h = Harness::new();
    let out = h.recv(Side::Access, UE, &sipp_invite("c1", "z9hG4bK-c1", UE, 6000));
    let inv = out[1].msg.clone();
    // CANCEL before any provisional: answered, held until a provisional arrives.
    let cancel = format!(
        "CANCEL sip:service@198.18.2.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {UE};branch=z9hG4bK-c1\r\nFrom: sipp <sip:sipp@198.18.1.100:5061>;tag=c1-tag\r\nTo: service <sip:service@198.18.2.20:5060>\r\nCall-ID: c1\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    let out = h.recv(Side::Access, UE, &cancel);
    assert_eq!(out.len(), 1);
    assert_eq!(code(&out[0]), Some(200));
    let out = h.recv(
        Side::Core,
        NEXT_HOP,
        &respond(
            &inv,
            180,
            "Ringing",
            Some("t9"),
            Some("sip:x@198.18.2.20"),
            None,
        ),
    );
    assert_eq!(
        out.len(),
        2,
        "180 relayed and the pending CANCEL sent: {out:#?}"
    );
    let c = out
        .iter()
        .find(|s| s.msg.method().as_str() == "CANCEL" && s.msg.code().is_none())
        .unwrap();
    assert_eq!(c.dst, sa(NEXT_HOP));
    assert_eq!(
        top_branch(&c.msg),
        top_branch(&inv),
        "CANCEL shares the INVITE's branch"
    );
    let c_msg = c.msg.clone();
    assert!(h
        .recv(
            Side::Core,
            NEXT_HOP,
            &respond(&c_msg, 200, "OK", Some("t9"), None, None)
        )
        .is_empty());
    let out = h.recv(
        Side::Core,
        NEXT_HOP,
        &respond(&inv, 487, "Request Terminated", Some("t9"), None, None),
    );
    // ACK downstream + 487 upstream.
    assert_eq!(out.len(), 2);
    assert!(out
        .iter()
        .any(|s| s.msg.method().as_str() == "ACK" && s.dst == sa(NEXT_HOP)));
    assert!(out.iter().any(|s| code(s) == Some(487) && s.dst == sa(UE)));
    assert_eq!(h.core.session_count(), 0);
    assert_eq!(h.core.state().pools.access.in_use(), 0);
    h.advance(100_000);
    assert_eq!(h.core.transaction_count(), 0);
    h.assert_replay_equal();
}

#[test]
fn cancel_without_transaction_gets_481() {
    let mut h = Harness::new();
    let cancel = format!(
        "CANCEL sip:x@198.18.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP {UE};branch=z9hG4bK-none\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@198.18.2.20>\r\nCall-ID: none\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    let out = h.recv(Side::Access, UE, &cancel);
    assert_eq!(code(&out[0]), Some(481));
}

#[test]
fn register_then_terminating_call_reaches_ue_at_nat_address() {
    let mut h = Harness::new();
    let nat = "198.18.1.200:40000"; // the UE's public (NAT) address
    let reg = "REGISTER sip:ims.example SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.9.5:5060;rport;branch=z9hG4bK-reg1\r\nFrom: <sip:alice@ims.example>;tag=r1\r\nTo: <sip:alice@ims.example>\r\nCall-ID: reg1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@198.18.9.5:5060;transport=udp>;expires=600;+sip.instance=\"<urn:uuid:1>\"\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    let out = h.recv(Side::Access, nat, reg);
    assert_eq!(out.len(), 1);
    let fwd = out[0].msg.clone();
    assert_eq!(out[0].dst, sa(NEXT_HOP));
    let contact = NameAddr::parse(fwd.header("Contact").unwrap()).unwrap();
    assert!(
        contact.uri.starts_with("sip:r"),
        "token user part: {}",
        contact.uri
    );
    assert!(
        contact.uri.contains("@198.18.2.10:5060"),
        "points at the BGF core side"
    );
    assert_eq!(contact.param("expires").as_deref(), Some("600"));
    // The UE's Via got received/rport.
    let ue_via = Via::parse(fwd.headers_named("Via").nth(1).unwrap()).unwrap();
    assert_eq!(ue_via.param("rport"), Some(Some("40000")));
    assert_eq!(ue_via.param("received"), Some(Some("198.18.1.200")));

    // Registrar answers 200 with the contact it stored.
    let mut ok = respond(&fwd, 200, "OK", Some("reg"), None, None);
    ok = ok.replace(
        "Content-Length: 0",
        &format!(
            "Contact: <{}>;expires=600\r\nContent-Length: 0",
            contact.uri
        ),
    );
    let out = h.recv(Side::Core, NEXT_HOP, &ok);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].dst,
        sa(nat),
        "response follows rport to the NAT address"
    );
    let back = NameAddr::parse(out[0].msg.header("Contact").unwrap()).unwrap();
    assert_eq!(
        back.uri, "sip:alice@198.18.9.5:5060;transport=udp",
        "UE sees its own contact"
    );
    assert_eq!(h.core.registration_count(), 1);

    // Terminating INVITE from the core to the contact it learned.
    let body = sdp_of("198.18.2.30", 8000);
    let inv = format!(
        "INVITE {} SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.2.20:5060;branch=z9hG4bK-t1\r\nRecord-Route: <sip:198.18.2.20;lr>\r\nFrom: <sip:bob@ims.example>;tag=b1\r\nTo: <sip:alice@ims.example>\r\nCall-ID: term1\r\nCSeq: 5 INVITE\r\nContact: <sip:bob@198.18.2.30>\r\nMax-Forwards: 60\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        contact.uri,
        body.len()
    );
    let out = h.recv(Side::Core, NEXT_HOP, &inv);
    assert_eq!(out.len(), 2);
    let to_ue = out.iter().find(|s| s.side == Side::Access).unwrap();
    assert_eq!(to_ue.dst, sa(nat));
    match &to_ue.msg.start {
        sip_control::msg::StartLine::Request { uri, .. } => {
            assert_eq!(uri, "sip:alice@198.18.9.5:5060;transport=udp")
        }
        _ => panic!(),
    }
    let s = Sdp::parse(&to_ue.msg.body).unwrap().streams();
    assert_eq!(s[0].rtp(), Some(sa("198.18.1.10:20000")));
    let sess = h.core.sessions();
    assert_eq!(sess[0].origin, Side::Core);
    assert_eq!(
        sess[0].pinholes[0].core.remote_rtp,
        Some(sa("198.18.2.30:8000"))
    );

    // Registration expiry removes the binding; a later INVITE gets 404.
    h.advance(601_000);
    assert_eq!(h.core.registration_count(), 0);
    let inv2 = inv
        .replace("term1", "term2")
        .replace("z9hG4bK-t1", "z9hG4bK-t2");
    let out = h.recv(Side::Core, NEXT_HOP, &inv2);
    assert_eq!(code(&out[0]), Some(404));
    h.assert_replay_equal();
}

#[test]
fn ipv6_access_ipv4_core_interworking() {
    let mut cfg = config();
    cfg.access.sip = sa("[fd00::10]:5060");
    cfg.access.media_ip = "fd00::10".parse().unwrap();
    let mut h = Harness::with(cfg);
    let ue6 = "[fd00::100]:5061";
    let body = sdp_of("fd00::100", 6000);
    let inv = format!(
        "INVITE sip:svc@198.18.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP [fd00::100]:5061;branch=z9hG4bK-v6\r\nFrom: <sip:ue@[fd00::100]>;tag=6\r\nTo: <sip:svc@198.18.2.20>\r\nCall-ID: v6call\r\nCSeq: 1 INVITE\r\nContact: <sip:ue@[fd00::100]:5061>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let now = h.now + 1;
    h.now = now;
    let out = h.apply(sip_control::Input::Sip(sip_control::SipIn {
        side: Side::Access,
        transport: sip_control::Transport::Udp,
        src: sa(ue6),
        dst: sa("[fd00::10]:5060"),
        at: now,
        data: inv.into_bytes(),
    }));
    let out = sent(&out);
    let fwd = out
        .iter()
        .find(|s| s.side == Side::Core)
        .unwrap()
        .msg
        .clone();
    let sdp = String::from_utf8(fwd.body.clone()).unwrap();
    assert!(
        sdp.contains("c=IN IP4 198.18.2.10"),
        "core sees IPv4: {sdp}"
    );
    assert!(!sdp.contains("IP6"), "no IPv6 leaks to the core: {sdp}");
    let rr: Vec<_> = fwd.headers_named("Record-Route").collect();
    assert_eq!(rr[1], "<sip:[fd00::10]:5060;lr>");
    let out = h.recv(
        Side::Core,
        NEXT_HOP,
        &respond(
            &fwd,
            200,
            "OK",
            Some("x"),
            Some("sip:svc@198.18.2.20"),
            Some(&sdp_of("198.18.2.20", 7000)),
        ),
    );
    let sdp = String::from_utf8(out[0].msg.body.clone()).unwrap();
    assert!(sdp.contains("c=IN IP6 fd00::10"), "UE sees IPv6: {sdp}");
    assert_eq!(out[0].dst, sa(ue6));
    let p = &h.core.sessions()[0].pinholes[0];
    assert_eq!(p.access.remote_rtp, Some(sa("[fd00::100]:6000")));
    assert_eq!(p.core.remote_rtp, Some(sa("198.18.2.20:7000")));
    h.assert_replay_equal();
}

#[test]
fn reinvite_moves_ue_media_and_failed_reinvite_rolls_back() {
    let mut h = Harness::new();
    let (_inv, ok) = establish(&mut h, "re1");
    let routes: Vec<String> = ok
        .headers_named("Record-Route")
        .map(str::to_string)
        .rev()
        .collect();
    let from = ok.header("From").unwrap().to_string();
    let to = ok.header("To").unwrap().to_string();
    let reinv = in_dialog(
        "INVITE",
        "sip:svc@198.18.2.20:5060",
        &routes,
        &format!("SIP/2.0/UDP {UE};branch=z9hG4bK-re2"),
        &from,
        &to,
        "re1",
        2,
        Some(&sdp_of("198.18.1.100", 6100)),
    );
    let out = h.recv(Side::Access, UE, &reinv);
    let fwd = out
        .iter()
        .find(|s| s.side == Side::Core)
        .unwrap()
        .msg
        .clone();
    // Same core-side port: the core need not change anything.
    assert_eq!(
        Sdp::parse(&fwd.body).unwrap().streams()[0].rtp(),
        Some(sa("198.18.2.10:30000"))
    );
    assert_eq!(
        h.core.sessions()[0].pinholes[0].access.remote_rtp,
        Some(sa("198.18.1.100:6100"))
    );
    h.recv(
        Side::Core,
        NEXT_HOP,
        &respond(
            &fwd,
            200,
            "OK",
            Some("callee1"),
            Some("sip:svc@198.18.2.20:5060"),
            Some(&sdp_of("198.18.2.20", 7000)),
        ),
    );
    assert_eq!(
        h.core.sessions()[0].pinholes[0].access.remote_rtp,
        Some(sa("198.18.1.100:6100"))
    );

    // A re-INVITE that adds video and is rejected: the old plan stays.
    let two = format!(
        "{}m=video 6200 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
        sdp_of("198.18.1.100", 6300)
    );
    let reinv = in_dialog(
        "INVITE",
        "sip:svc@198.18.2.20:5060",
        &routes,
        &format!("SIP/2.0/UDP {UE};branch=z9hG4bK-re3"),
        &from,
        &to,
        "re1",
        3,
        Some(&two),
    );
    let out = h.recv(Side::Access, UE, &reinv);
    let fwd = out
        .iter()
        .find(|s| s.side == Side::Core)
        .unwrap()
        .msg
        .clone();
    assert_eq!(h.core.sessions()[0].pinholes.len(), 2);
    h.recv(
        Side::Core,
        NEXT_HOP,
        &respond(
            &fwd,
            488,
            "Not Acceptable Here",
            Some("callee1"),
            None,
            None,
        ),
    );
    let s = &h.core.sessions()[0];
    assert_eq!(s.pinholes.len(), 1, "video pinhole removed again");
    assert_eq!(
        s.pinholes[0].access.remote_rtp,
        Some(sa("198.18.1.100:6100")),
        "audio back to the old remote"
    );
    assert_eq!(h.core.state().pools.access.in_use(), 1);
    h.assert_replay_equal();
}

#[test]
fn early_media_with_prack() {
    let mut h = Harness::new();
    let out = h.recv(
        Side::Access,
        UE,
        &sipp_invite("em1", "z9hG4bK-em1", UE, 6000),
    );
    let inv = out[1].msg.clone();
    let mut r183 = respond(
        &inv,
        183,
        "Session Progress",
        Some("e1"),
        Some("sip:svc@198.18.2.20:5060"),
        Some(&sdp_of("198.18.2.20", 7000)),
    );
    r183 = r183.replace("Content-Type", "Require: 100rel\r\nRSeq: 1\r\nContent-Type");
    let out = h.recv(Side::Core, NEXT_HOP, &r183);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].msg.header("RSeq"), Some("1"));
    assert_eq!(
        Sdp::parse(&out[0].msg.body).unwrap().streams()[0].rtp(),
        Some(sa("198.18.1.10:20000"))
    );
    // Media can flow before the 200: both remotes known.
    let p = &h.core.sessions()[0].pinholes[0];
    assert!(p.access.remote_rtp.is_some() && p.core.remote_rtp.is_some());
    assert_eq!(h.core.sessions()[0].state, "early");
    let r183m = out[0].msg.clone();
    let routes: Vec<String> = r183m
        .headers_named("Record-Route")
        .map(str::to_string)
        .rev()
        .collect();
    let prack = in_dialog(
        "PRACK",
        "sip:svc@198.18.2.20:5060",
        &routes,
        &format!("SIP/2.0/UDP {UE};branch=z9hG4bK-pr1"),
        r183m.header("From").unwrap(),
        r183m.header("To").unwrap(),
        "em1",
        2,
        None,
    )
    .replace("Content-Length: 0", "RAck: 1 1 INVITE\r\nContent-Length: 0");
    let out = h.recv(Side::Access, UE, &prack);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dst, sa("198.18.2.20:5060"));
    let pr = out[0].msg.clone();
    let out = h.recv(
        Side::Core,
        NEXT_HOP,
        &respond(&pr, 200, "OK", Some("e1"), None, None),
    );
    assert_eq!(out[0].dst, sa(UE));
    h.assert_replay_equal();
}

#[test]
fn media_inactivity_sends_bye_both_ways() {
    let mut h = Harness::new();
    establish(&mut h, "in1");
    let out = h.media(MediaEvent::Inactive { session: 1 });
    let byes: Vec<_> = out
        .iter()
        .filter(|s| s.msg.method().as_str() == "BYE" && s.msg.code().is_none())
        .collect();
    assert_eq!(byes.len(), 2, "{out:#?}");
    let to_ue = byes.iter().find(|s| s.side == Side::Access).unwrap();
    assert_eq!(to_ue.dst, sa(UE));
    assert_eq!(
        NameAddr::parse(to_ue.msg.header("To").unwrap())
            .unwrap()
            .param("tag")
            .as_deref(),
        Some("in1-tag")
    );
    let to_core = byes.iter().find(|s| s.side == Side::Core).unwrap();
    assert_eq!(to_core.dst, sa("198.18.2.20:5060"));
    assert_eq!(
        NameAddr::parse(to_core.msg.header("To").unwrap())
            .unwrap()
            .param("tag")
            .as_deref(),
        Some("callee1")
    );
    assert_eq!(h.core.session_count(), 0);
    assert_eq!(h.core.state().pools.core.in_use(), 0);
    // Their 200s are absorbed.
    let (a, c) = (to_ue.msg.clone(), to_core.msg.clone());
    assert!(h
        .recv(Side::Access, UE, &respond(&a, 200, "OK", None, None, None))
        .is_empty());
    assert!(h
        .recv(
            Side::Core,
            NEXT_HOP,
            &respond(&c, 200, "OK", None, None, None)
        )
        .is_empty());
    let internal = h
        .core
        .state()
        .clients
        .values()
        .filter(|c| c.role == sip_control::txn::ClientRole::Internal)
        .count();
    assert_eq!(internal, 0, "BYE transactions done once answered");
    h.advance(100_000);
    assert_eq!(h.core.transaction_count(), 0);
    h.assert_replay_equal();
}

#[test]
fn latch_is_state_and_replays() {
    let mut h = Harness::new();
    establish(&mut h, "l1");
    h.media(MediaEvent::Latched {
        id: PinholeId {
            session: 1,
            stream: 0,
        },
        side: Side::Access,
        rtcp: false,
        remote: sa("198.18.1.100:31000"),
    });
    let p = &h.core.sessions()[0].pinholes[0];
    assert_eq!(p.access.remote_rtp, Some(sa("198.18.1.100:31000")));
    assert_eq!(p.access.latch_ip, Some(sa(UE).ip()), "RTCP may still latch");
    h.assert_replay_equal();
}

#[test]
fn session_expiry_ends_unrefreshed_sessions() {
    let mut cfg = config();
    cfg.session_expires_s = 90;
    let mut h = Harness::with(cfg);
    establish(&mut h, "se1");
    let out = h.advance(91_000);
    let mut sides: Vec<_> = out
        .iter()
        .filter(|s| s.msg.method().as_str() == "BYE" && s.msg.code().is_none())
        .map(|s| s.side)
        .collect();
    sides.sort();
    sides.dedup();
    assert_eq!(
        sides.len(),
        2,
        "BYE to both parties (retransmitted while unanswered)"
    );
    assert_eq!(h.core.session_count(), 0);
    h.assert_replay_equal();
}

#[test]
fn proxy_rules_max_forwards_loop_options() {
    let mut h = Harness::new();
    let base = sipp_invite("mf", "z9hG4bK-mf", UE, 6000);
    let out = h.recv(
        Side::Access,
        UE,
        &base.replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    assert_eq!(code(&out[0]), Some(483));
    let looped = base.replace("Call-ID: mf", "Call-ID: lp").replace(
        &format!("Via: SIP/2.0/UDP {UE};branch=z9hG4bK-mf"),
        &format!("Via: SIP/2.0/UDP {UE};branch=z9hG4bK-lp\r\nVia: SIP/2.0/UDP {BGF_CORE};branch=z9hG4bK-old"),
    );
    let out = h.recv(Side::Access, UE, &looped);
    assert_eq!(code(&out[0]), Some(482));
    let logged = h.log.len();
    let opt = format!("OPTIONS sip:{BGF_ACCESS} SIP/2.0\r\nVia: SIP/2.0/UDP {UE};branch=z9hG4bK-o1\r\nFrom: <sip:ue@x>;tag=o\r\nTo: <sip:{BGF_ACCESS}>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    let out = h.recv(Side::Access, UE, &opt);
    assert_eq!(code(&out[0]), Some(200));
    assert!(out[0].msg.header("Allow").unwrap().contains("INVITE"));
    assert_eq!(h.log.len(), logged, "OPTIONS keepalive is not logged");
}

#[test]
fn malformed_input_gets_400_or_counted_drop() {
    let mut h = Harness::new();
    let bad_req = format!("INVITE sip:x@198.18.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP {UE};branch=z9hG4bK-bad\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
    let out = h.recv(Side::Access, UE, &bad_req);
    assert_eq!(code(&out[0]), Some(400));
    assert!(
        out[0].raw.contains("Call-ID"),
        "reason names the missing header: {}",
        out[0].raw
    );
    assert_eq!(h.core.stats().malformed_requests, 1);
    let bad_resp = "SIP/2.0 200 OK\r\nVia: garbage\r\n\r\n";
    assert!(h.recv(Side::Core, NEXT_HOP, bad_resp).is_empty());
    assert_eq!(h.core.stats().dropped_responses, 1);
    assert!(h.recv(Side::Access, UE, "\u{0}\u{1}binary junk").is_empty());
    assert_eq!(h.core.stats().dropped_other, 1);
    // Response whose Via is not ours: dropped and counted.
    let stray = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.7.7;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>;tag=2\r\nCall-ID: s\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    assert!(h.recv(Side::Core, NEXT_HOP, stray).is_empty());
    assert_eq!(h.core.stats().dropped_responses, 2);
    // Bad SDP: 488 with a Warning, no session left behind.
    let bad_sdp = sipp_invite("bs", "z9hG4bK-bs", UE, 6000)
        .replace("m=audio 6000 RTP/AVP 0", "m=audio 60x0 RTP/AVP 0");
    let out = h.recv(Side::Access, UE, &bad_sdp);
    assert_eq!(code(&out[0]), Some(488), "{out:#?}");
    assert!(out[0].msg.header("Warning").is_some());
    assert_eq!(h.core.session_count(), 0);
    assert_eq!(h.core.state().pools.access.in_use(), 0);
    // Still serving.
    establish(&mut h, "after");
    h.assert_replay_equal();
}

#[test]
fn port_exhaustion_gives_503() {
    let mut cfg = config();
    cfg.access.rtp_port_min = 20000;
    cfg.access.rtp_port_max = 20003; // two pairs
    let mut h = Harness::with(cfg);
    establish(&mut h, "p1");
    establish(&mut h, "p2");
    let out = h.recv(Side::Access, UE, &sipp_invite("p3", "z9hG4bK-p3", UE, 6000));
    assert_eq!(code(&out[0]), Some(503));
    // Refused before any port is taken: the pool has no pair left for it.
    assert_eq!(h.core.stats().capacity_refused, 1);
    h.assert_replay_equal();
}

#[test]
fn tcp_transport_relays_over_tcp() {
    let mut h = Harness::new();
    let inv = sipp_invite("tcp1", "z9hG4bK-tcp1", UE, 6000).replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let out = h.recv_t(Side::Access, sip_control::Transport::Tcp, UE, &inv);
    assert_eq!(
        out[0].transport,
        sip_control::Transport::Tcp,
        "100 Trying back over TCP"
    );
    assert_eq!(out[0].dst, sa(UE));
    let rr: Vec<_> = out[1].msg.headers_named("Record-Route").collect();
    assert_eq!(rr[1], "<sip:198.18.1.10:5060;transport=tcp;lr>");
    // No retransmission timer armed towards UDP next hop? (next hop is UDP: A is armed)
    h.assert_replay_equal();
}

#[test]
fn randomized_workloads_replay_exactly() {
    // A small deterministic generator of mixed call flows; each workload's log
    // replayed into a fresh core must give the same state.
    for seed in 1..=30u64 {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut h = Harness::new();
        for n in 0..12 {
            let call = format!("s{seed}c{n}");
            match next() % 6 {
                0 => {
                    establish(&mut h, &call);
                }
                1 => {
                    let (_i, ok) = establish(&mut h, &call);
                    let routes: Vec<String> = ok
                        .headers_named("Record-Route")
                        .map(str::to_string)
                        .rev()
                        .collect();
                    let from = ok.header("From").unwrap().to_string();
                    let to = ok.header("To").unwrap().to_string();
                    let port = 6000 + (next() % 100) as u16 * 2;
                    let re = in_dialog(
                        "INVITE",
                        "sip:svc@198.18.2.20:5060",
                        &routes,
                        &format!("SIP/2.0/UDP {UE};branch=z9hG4bK-{call}-r"),
                        &from,
                        &to,
                        &call,
                        2,
                        Some(&sdp_of("198.18.1.100", port)),
                    );
                    let out = h.recv(Side::Access, UE, &re);
                    if let Some(f) = out.iter().find(|s| s.side == Side::Core) {
                        let f = f.msg.clone();
                        let c = if next() % 2 == 0 { 200 } else { 488 };
                        let sdp = sdp_of("198.18.2.20", 7002);
                        h.recv(
                            Side::Core,
                            NEXT_HOP,
                            &respond(
                                &f,
                                c,
                                "X",
                                Some("callee1"),
                                Some("sip:svc@198.18.2.20:5060"),
                                (c == 200).then_some(sdp.as_str()),
                            ),
                        );
                    }
                }
                2 => {
                    h.recv(
                        Side::Access,
                        UE,
                        &sipp_invite(&call, &format!("z9hG4bK-{call}"), UE, 6000),
                    );
                }
                3 => {
                    establish(&mut h, &call);
                    let s = h.core.session_by_call_id(&call).unwrap();
                    h.media(MediaEvent::Latched {
                        id: PinholeId {
                            session: s.id,
                            stream: 0,
                        },
                        side: Side::Access,
                        rtcp: next() % 2 == 0,
                        remote: sa("198.18.1.100:40000"),
                    });
                }
                4 => {
                    establish(&mut h, &call);
                    let s = h.core.session_by_call_id(&call).unwrap();
                    h.media(MediaEvent::Inactive { session: s.id });
                }
                _ => {
                    h.advance(next() % 70_000);
                }
            }
            assert_replay_prefix(&h);
        }
        h.advance(400_000);
        h.assert_replay_equal();
    }
}

fn assert_replay_prefix(h: &Harness) {
    h.assert_replay_equal();
}

#[test]
fn in_dialog_requests_addressed_to_the_bgf_itself_follow_the_dialog() {
    // SIPp's stock uac sends ACK and BYE to sip:service@<proxy> without Route
    // headers: the BGF must route them to the callee, never to itself.
    let mut h = Harness::new();
    let (_inv, ok) = establish(&mut h, "strict1");
    let from = ok.header("From").unwrap().to_string();
    let to = ok.header("To").unwrap().to_string();
    for (method, cseq) in [("ACK", 1), ("BYE", 2)] {
        let req = in_dialog(
            method,
            &format!("sip:service@{BGF_ACCESS}"),
            &[],
            &format!("SIP/2.0/UDP {UE};branch=z9hG4bK-s{method}"),
            &from,
            &to,
            "strict1",
            cseq,
            None,
        );
        let out = h.recv(Side::Access, UE, &req);
        assert_eq!(out.len(), 1, "{method}: {out:#?}");
        assert_eq!(
            out[0].dst,
            sa("198.18.2.20:5060"),
            "{method} goes to the callee's contact"
        );
        match &out[0].msg.start {
            sip_control::msg::StartLine::Request { uri, .. } => {
                assert_eq!(uri, "sip:svc@198.18.2.20:5060")
            }
            _ => panic!(),
        }
    }
    h.assert_replay_equal();
}

#[test]
fn multipart_sdp_is_anchored_and_other_parts_pass() {
    // An IMS emergency INVITE: SDP beside a PIDF-LO location, multipart/mixed.
    let mut h = Harness::new();
    let sdp = sdp_of("198.18.1.100", 6000);
    let pidf = "<?xml version=\"1.0\"?><presence entity=\"pres:ue@x\"><tuple id=\"1\"/></presence>";
    let body = format!(
        "--sep\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--sep\r\nContent-Type: application/pidf+xml\r\nContent-ID: <loc@ue>\r\n\r\n{pidf}\r\n--sep--\r\n"
    );
    let inv = format!(
        "INVITE urn:service:sos SIP/2.0\r\nVia: SIP/2.0/UDP {UE};branch=z9hG4bK-sos\r\nFrom: <sip:ue@ims.example>;tag=s1\r\nTo: <urn:service:sos>\r\nCall-ID: sos1\r\nCSeq: 1 INVITE\r\nContact: <sip:ue@198.18.1.100:5061>\r\nGeolocation: <cid:loc@ue>\r\nMax-Forwards: 70\r\nContent-Type: multipart/mixed;boundary=sep\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let out = h.recv(Side::Access, UE, &inv);
    let fwd = out
        .iter()
        .find(|s| s.side == Side::Core)
        .expect("emergency INVITE forwarded, not refused")
        .msg
        .clone();
    let text = String::from_utf8(fwd.body.clone()).unwrap();
    assert!(
        text.contains("c=IN IP4 198.18.2.10"),
        "SDP part anchored: {text}"
    );
    assert!(
        !text.contains("198.18.1.100"),
        "UE media address hidden: {text}"
    );
    assert!(text.contains(pidf), "location part intact");
    assert!(text.ends_with("--sep--\r\n"));
    let p = &h.core.sessions()[0].pinholes[0];
    assert_eq!(p.access.remote_rtp, Some(sa("198.18.1.100:6000")));
    h.assert_replay_equal();
}

#[test]
fn restore_from_a_checkpoint_then_replay_the_rest() {
    // Checkpoint in the middle of a workload, then restore + replay the tail:
    // the result equals the live core (what log compaction relies on).
    let mut h = Harness::new();
    establish(&mut h, "cp1");
    h.recv(
        Side::Access,
        UE,
        &sipp_invite("cp2", "z9hG4bK-cp2", UE, 6002),
    );
    let checkpoint = h.core.state().clone();
    let split = h.log.len();
    establish(&mut h, "cp3");
    h.advance(70_000);
    let mut restored = sip_control::Core::restore(config(), checkpoint).unwrap();
    for i in &h.log[split..] {
        restored.apply(i);
    }
    assert_eq!(restored.state(), h.core.state());
    // A checkpoint from other port ranges is refused.
    let mut other = config();
    other.access.rtp_port_min = 40000;
    other.access.rtp_port_max = 40999;
    assert!(sip_control::Core::restore(other, h.core.state().clone()).is_err());
}
