//! Media through the pinholes of one active BGF: the project's RTP endpoints
//! own the SDP ports of the UE and the core party; SIPp does the signalling.

use bgf_tests::net::host;
use bgf_tests::rtp::RtpEndpoint;
use bgf_tests::sipp::require_sipp;
use bgf_tests::util::{sipp_messages, wait_until};
use bgf_tests::{Bed, PinholeView};
use std::time::{Duration, Instant};

const SIPP_T: Duration = Duration::from_secs(90);
const MEDIA_T: Duration = Duration::from_secs(5);
const UE_RTP: u16 = 41000;
const CORE_RTP: u16 = 42000;

fn pinhole(bed: &Bed) -> PinholeView {
    bed.wait_answered_pinhole(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no answered session with a pinhole: {:?}", bed.sessions()))
}

/// The SDP `c=`/`m=` a SIPp run saw in messages it received with `first_line`.
fn received_sdp(messages: &str, first_line_prefix: &str) -> Vec<String> {
    sipp_messages(messages)
        .into_iter()
        .filter(|m| m.contains("message received"))
        .filter(|m| {
            m.lines()
                .find(|l| !l.trim().is_empty() && !l.contains("message received"))
                .is_some_and(|l| l.starts_with(first_line_prefix))
        })
        .flat_map(|m| {
            m.lines()
                .filter(|l| l.starts_with("c=") || l.starts_with("m="))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn media_flows_through_the_bgf_addresses_and_strangers_are_dropped() {
    if !require_sipp("media_flows_through_the_bgf_addresses_and_strangers_are_dropped") {
        return;
    }
    let bed = Bed::start("media");
    let ue_rtp = bed.net.addr(host::UE, UE_RTP);
    let core_rtp = bed.net.addr(host::CORE_PEER, CORE_RTP);
    let mut ue = RtpEndpoint::bind(ue_rtp).unwrap();
    let mut core = RtpEndpoint::bind(core_rtp).unwrap();
    let uas = bed
        .core_sipp("uas", "uas_basic.xml")
        .key("rtp_port", CORE_RTP)
        .calls(1)
        .spawn_bound(bed.dir.path(), Duration::from_secs(10));
    let uac = bed
        .ue_sipp("uac", "uac_basic.xml")
        .key("rtp_port", UE_RTP)
        .calls(1)
        .pause_ms(8000)
        .spawn(bed.dir.path());
    let p = pinhole(&bed);
    let (access_local, core_local) = (p.access.local, p.core.local);
    assert_eq!(access_local.ip(), bed.bgf.config.access_media_ip);
    assert_eq!(core_local.ip(), bed.bgf.config.core_media_ip);

    ue.start_sending(access_local, 0x0000_ae01, 300);
    core.start_sending(core_local, 0x0000_c0e1, 300);
    assert!(
        ue.wait_from(access_local, 20, MEDIA_T),
        "UE got no media from the BGF access address {access_local}: {}",
        ue.summary()
    );
    assert!(
        core.wait_from(core_local, 20, MEDIA_T),
        "core got no media from the BGF core address {core_local}: {}",
        core.summary()
    );
    // Nobody but the BGF talks to either party, and SSRCs pass through.
    assert_eq!(ue.sources(), vec![access_local], "{}", ue.summary());
    assert_eq!(core.sources(), vec![core_local], "{}", core.summary());
    assert!(ue.received().iter().all(|r| r.ssrc == Some(0x0000_c0e1)));
    assert!(core.received().iter().all(|r| r.ssrc == Some(0x0000_ae01)));

    // An unauthorised sender on the core side: dropped, counted, never relayed.
    let before = bed.stat("media.drops.wrong_source");
    let mut rogue = RtpEndpoint::bind(bed.net.addr(host::ROGUE, CORE_RTP)).unwrap();
    rogue.start_sending(core_local, 0x0bad_0bad, 50);
    let counted = wait_until(MEDIA_T, || {
        (bed.bgf.admin.stat("media.drops.wrong_source").ok()? > before).then_some(())
    });
    assert!(
        counted.is_some(),
        "wrong_source did not grow: {}",
        bed.stats()
    );
    rogue.stop_sending();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        ue.received().iter().all(|r| r.ssrc != Some(0x0bad_0bad)),
        "rogue media reached the UE"
    );
    let s = bed.stats();
    assert!(bed.stat("media.forwarded_packets") >= 40, "{s}");

    let uac = uac.wait(SIPP_T);
    assert!(uac.ok(), "{}", uac.describe());
    let uas = uas.wait(SIPP_T);
    assert!(uas.ok(), "{}", uas.describe());
    // SDP rewrite: each party saw only the BGF's media address and port of its side.
    let ue_sdp = received_sdp(&uac.read("messages.log"), "SIP/2.0 200");
    assert!(
        ue_sdp.contains(&format!("c=IN IP4 {}", access_local.ip()))
            && ue_sdp
                .iter()
                .any(|l| l.starts_with(&format!("m=audio {} ", access_local.port()))),
        "UE saw SDP {ue_sdp:?}, expected {access_local}"
    );
    let core_sdp = received_sdp(&uas.read("messages.log"), "INVITE");
    assert!(
        core_sdp.contains(&format!("c=IN IP4 {}", core_local.ip()))
            && core_sdp
                .iter()
                .any(|l| l.starts_with(&format!("m=audio {} ", core_local.port()))),
        "core saw SDP {core_sdp:?}, expected {core_local}"
    );
    assert!(bed.wait_idle(Duration::from_secs(15)), "{}", bed.stats());
}

#[test]
fn ipv6_access_with_ipv4_core() {
    if !require_sipp("ipv6_access_with_ipv4_core") {
        return;
    }
    let bed = Bed::start_with("media-v6", |net, c| {
        c.access_sip = net.v6(0);
        c.access_media_ip = net.v6(0).ip();
        c.access_rtp_ports = (net.port_block + 20, net.port_block + 99);
    });
    let ue_sip = bed.net.v6(1);
    let ue_rtp = bed.net.v6(10);
    let core_rtp = bed.net.addr(host::CORE_PEER, CORE_RTP);
    let mut ue = RtpEndpoint::bind(ue_rtp).unwrap();
    let mut core = RtpEndpoint::bind(core_rtp).unwrap();
    let uas = bed
        .core_sipp("uas", "uas_basic.xml")
        .key("rtp_port", CORE_RTP)
        .calls(1)
        .spawn_bound(bed.dir.path(), Duration::from_secs(10));
    let uac = bgf_tests::Sipp::new("uac", "uac_basic.xml")
        .local(ue_sip)
        .remote(bed.access_sip())
        .arg("-mp")
        .arg((bed.net.port_block + 4).to_string())
        .key("rtp_port", ue_rtp.port())
        .calls(1)
        .pause_ms(6000)
        .spawn(bed.dir.path());
    let p = pinhole(&bed);
    assert!(p.access.local.is_ipv6(), "access leg not IPv6: {p:?}");
    assert!(p.core.local.is_ipv4(), "core leg not IPv4: {p:?}");
    ue.start_sending(p.access.local, 0x6666, 200);
    core.start_sending(p.core.local, 0x4444, 200);
    assert!(
        ue.wait_from(p.access.local, 20, MEDIA_T),
        "{}",
        ue.summary()
    );
    assert!(
        core.wait_from(p.core.local, 20, MEDIA_T),
        "{}",
        core.summary()
    );

    let uac = uac.wait(SIPP_T);
    assert!(uac.ok(), "{}", uac.describe());
    let uas = uas.wait(SIPP_T);
    assert!(uas.ok(), "{}", uas.describe());
    let core_sdp = received_sdp(&uas.read("messages.log"), "INVITE");
    assert!(
        core_sdp.iter().any(|l| l.starts_with("c=IN IP4 "))
            && !core_sdp.iter().any(|l| l.contains("IP6")),
        "core must see IPv4 SDP only: {core_sdp:?}"
    );
    let ue_sdp = received_sdp(&uac.read("messages.log"), "SIP/2.0 200");
    assert!(
        ue_sdp.iter().any(|l| l.starts_with("c=IN IP6 ")),
        "UE must see IPv6 SDP: {ue_sdp:?}"
    );
    assert!(bed.wait_idle(Duration::from_secs(15)), "{}", bed.stats());
}

#[test]
fn reinvite_moves_the_ue_media_port() {
    if !require_sipp("reinvite_moves_the_ue_media_port") {
        return;
    }
    let bed = Bed::start("media-reinvite");
    let (old_port, new_port) = (UE_RTP, UE_RTP + 2);
    let mut ue_old = RtpEndpoint::bind(bed.net.addr(host::UE, old_port)).unwrap();
    let mut ue_new = RtpEndpoint::bind(bed.net.addr(host::UE, new_port)).unwrap();
    let mut core = RtpEndpoint::bind(bed.net.addr(host::CORE_PEER, CORE_RTP)).unwrap();
    let uas = bed
        .core_sipp("uas", "uas_dialog.xml")
        .key("rtp_port", CORE_RTP)
        .calls(1)
        .spawn_bound(bed.dir.path(), Duration::from_secs(10));
    let uac = bed
        .ue_sipp("uac", "uac_reinvite.xml")
        .key("rtp_port", old_port)
        .key("rtp_port2", new_port)
        .calls(1)
        .pause_ms(6000)
        .spawn(bed.dir.path());
    let p = pinhole(&bed);
    core.start_sending(p.core.local, 0xc0c0, 1000);
    ue_old.start_sending(p.access.local, 0x0101, 1000);
    assert!(
        ue_old.wait_from(p.access.local, 10, MEDIA_T),
        "before the re-INVITE: {}",
        ue_old.summary()
    );
    // The UE keeps sending from its old port while it re-INVITEs, as a real
    // UE switching ports does: late packets from the old port must not keep
    // (or capture) the stream once the new port's media arrives.
    let reinvited = wait_until(Duration::from_secs(15), || {
        uac.messages_so_far().contains("CSeq: 2 ACK").then_some(())
    });
    assert!(reinvited.is_some(), "the re-INVITE did not complete");
    // Pinholes after the re-INVITE (the BGF may keep or change its ports).
    let p2 = pinhole(&bed);
    if p2.core.local != p.core.local {
        core.stop_sending();
        core.start_sending(p2.core.local, 0xc0c1, 1000);
    }
    ue_new.start_sending(p2.access.local, 0x0102, 1000);
    assert!(
        ue_new.wait_from(p2.access.local, 10, MEDIA_T),
        "after the re-INVITE nothing reached the new UE port: new {} / old {}\npinhole before {p:?}\npinhole after {p2:?}",
        ue_new.summary(),
        ue_old.summary()
    );
    // Only now does the old port fall silent.
    ue_old.stop_sending();
    assert!(
        core.wait_from(p2.core.local, 10, MEDIA_T),
        "{}",
        core.summary()
    );
    // And nothing goes to the old port any more.
    let old_rx = ue_old.received_count();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        ue_old.received_count(),
        old_rx,
        "media still goes to the old UE port: {}",
        ue_old.summary()
    );
    core.stop_sending();
    ue_new.stop_sending();
    let uac = uac.wait(SIPP_T);
    assert!(uac.ok(), "{}", uac.describe());
    let uas = uas.wait(SIPP_T);
    assert!(uas.ok(), "{}", uas.describe());
    assert!(bed.wait_idle(Duration::from_secs(15)), "{}", bed.stats());
}

#[test]
fn early_media_flows_before_the_200() {
    if !require_sipp("early_media_flows_before_the_200") {
        return;
    }
    const EARLY_MS: u64 = 12_000;
    let bed = Bed::start("media-early");
    let mut ue = RtpEndpoint::bind(bed.net.addr(host::UE, UE_RTP)).unwrap();
    let mut core = RtpEndpoint::bind(bed.net.addr(host::CORE_PEER, CORE_RTP)).unwrap();
    let uas = bed
        .core_sipp("uas", "uas_early_media.xml")
        .key("rtp_port", CORE_RTP)
        .calls(1)
        .pause_ms(EARLY_MS)
        .spawn_bound(bed.dir.path(), Duration::from_secs(10));
    let started = Instant::now();
    let uac = bed
        .ue_sipp("uac", "uac_early_media.xml")
        .key("rtp_port", UE_RTP)
        .calls(1)
        .pause_ms(1000)
        .spawn(bed.dir.path());
    let p = pinhole(&bed);
    ue.start_sending(p.access.local, 0xea01, 300);
    core.start_sending(p.core.local, 0xea02, 300);
    assert!(
        ue.wait_from(p.access.local, 10, MEDIA_T),
        "{}",
        ue.summary()
    );
    assert!(
        core.wait_from(p.core.local, 10, MEDIA_T),
        "{}",
        core.summary()
    );
    // The core answers 200 only EARLY_MS after it got the INVITE, which was
    // after `started`: media both ways before that is early media.
    assert!(
        started.elapsed() < Duration::from_millis(EARLY_MS),
        "media took too long to tell whether it was early"
    );
    let answered = sipp_messages(&uac.messages_so_far()).iter().any(|m| {
        m.contains("message received")
            && m.contains("SIP/2.0 200")
            && m.lines()
                .any(|l| l.starts_with("CSeq:") && l.trim_end().ends_with("INVITE"))
    });
    assert!(
        !answered,
        "the 200 for the INVITE arrived before the media check"
    );
    ue.stop_sending();
    core.stop_sending();
    let uac = uac.wait(SIPP_T);
    assert!(uac.ok(), "{}", uac.describe());
    let uas = uas.wait(SIPP_T);
    assert!(uas.ok(), "{}", uas.describe());
    assert!(bed.wait_idle(Duration::from_secs(15)), "{}", bed.stats());
}
