//! Bad input on the wire: malformed requests get 400, malformed responses are
//! dropped and counted, a broken SDP body gets a 4xx, and the process keeps
//! serving calls afterwards.

use bgf_tests::net::host;
use bgf_tests::sipp::require_sipp;
use bgf_tests::sipraw::{status_code, RawSip};
use bgf_tests::util::wait_until;
use bgf_tests::Bed;
use std::net::SocketAddr;
use std::time::Duration;

const RESP_T: Duration = Duration::from_secs(3);

fn request(method: &str, to: SocketAddr, headers: &[&str], body: &str) -> String {
    let mut m = format!("{method} sip:svc@{to} SIP/2.0\r\n");
    for h in headers {
        m += h;
        m += "\r\n";
    }
    m += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
    m
}

/// The first final (>= 200) response within the time bound.
fn final_response(sock: &RawSip) -> Option<String> {
    let deadline = std::time::Instant::now() + RESP_T;
    loop {
        let left = deadline.checked_duration_since(std::time::Instant::now())?;
        let r = sock.recv_response(left)?;
        if status_code(&r).is_some_and(|c| c >= 200) {
            return Some(r);
        }
    }
}

#[test]
fn malformed_input_is_refused_or_dropped_and_the_bgf_keeps_serving() {
    let bed = Bed::start("malformed");
    let ue_addr = bed.net.addr(host::UE, 5071);
    let ue = RawSip::bind(ue_addr).unwrap();
    let to = bed.access_sip();
    let via = format!("Via: SIP/2.0/UDP {ue_addr};branch=z9hG4bK-bad-1");
    let from = format!("From: <sip:ue@{ue_addr}>;tag=t1");
    let contact = format!("Contact: <sip:ue@{ue_addr}>");
    let malformed_before = bed.stat("core.malformed_requests");

    // 1. Pure garbage: no crash (nothing to answer to).
    ue.send(to, b"\x00\x01garbage that is not SIP\r\n\r\n")
        .unwrap();

    // 2. A request without Call-ID → 400.
    let no_callid = request(
        "OPTIONS",
        to,
        &[
            &via,
            &from,
            "To: <sip:svc@ims.test>",
            "CSeq: 1 OPTIONS",
            "Max-Forwards: 70",
        ],
        "",
    );
    ue.send(to, no_callid.as_bytes()).unwrap();
    let r = final_response(&ue).expect("no response to a request without Call-ID");
    assert_eq!(status_code(&r), Some(400), "{r}");

    // 3. A request with a broken CSeq → 400.
    let via2 = format!("Via: SIP/2.0/UDP {ue_addr};branch=z9hG4bK-bad-2");
    let bad_cseq = request(
        "INVITE",
        to,
        &[
            &via2,
            &from,
            "To: <sip:svc@ims.test>",
            "Call-ID: bad-cseq-1@test",
            "CSeq: notanumber INVITE",
            &contact,
            "Max-Forwards: 70",
        ],
        "",
    );
    ue.send(to, bad_cseq.as_bytes()).unwrap();
    let r = final_response(&ue).expect("no response to a request with a broken CSeq");
    assert_eq!(status_code(&r), Some(400), "{r}");

    // 4. An INVITE whose SDP body is broken → 4xx (488 or 400), not forwarded.
    let via3 = format!("Via: SIP/2.0/UDP {ue_addr};branch=z9hG4bK-bad-3");
    let bad_sdp = request(
        "INVITE",
        to,
        &[
            &via3,
            &from,
            "To: <sip:svc@ims.test>",
            "Call-ID: bad-sdp-1@test",
            "CSeq: 1 INVITE",
            &contact,
            "Max-Forwards: 70",
            "Content-Type: application/sdp",
        ],
        "v=0\r\nthis is not sdp at all\r\nm=audio port RTP/AVP 8\r\n",
    );
    ue.send(to, bad_sdp.as_bytes()).unwrap();
    let r = final_response(&ue).expect("no final response to an INVITE with broken SDP");
    let code = status_code(&r).unwrap_or(0);
    assert!(code == 488 || code == 400, "expected 488/400, got {r}");
    if code == 488 || code == 400 {
        // A non-2xx final to INVITE is acknowledged hop by hop.
        let ack = request(
            "ACK",
            to,
            &[
                &via3,
                &from,
                "To: <sip:svc@ims.test>;tag=x",
                "Call-ID: bad-sdp-1@test",
                "CSeq: 1 ACK",
                "Max-Forwards: 70",
            ],
            "",
        );
        let _ = ue.send(to, ack.as_bytes());
    }
    assert!(
        bed.stat("core.malformed_requests") > malformed_before,
        "malformed_requests did not grow: {}",
        bed.stats()
    );

    // 5. A malformed response on the core side: dropped and counted.
    let core_raw = RawSip::bind(bed.net.addr(host::CORE_PEER, 5072)).unwrap();
    let dropped_before = bed.stat("core.dropped_responses");
    let bad_resp =
        "SIP/2.0 200 OK\r\nVia: \r\nFrom: broken\r\nCSeq: x\r\nContent-Length: 0\r\n\r\n";
    core_raw.send(bed.core_sip(), bad_resp.as_bytes()).unwrap();
    let counted = wait_until(RESP_T, || {
        (bed.bgf.admin.stat("core.dropped_responses").ok()? > dropped_before).then_some(())
    });
    assert!(
        counted.is_some(),
        "dropped_responses did not grow: {}",
        bed.stats()
    );
    assert!(
        core_raw.recv(Duration::from_millis(300)).is_none(),
        "a response must not be answered"
    );

    // 6. Still serving: a normal call completes.
    if !require_sipp("malformed_input_is_refused_or_dropped_and_the_bgf_keeps_serving (call part)")
    {
        return;
    }
    let uas = bed
        .core_sipp("uas", "uas_basic.xml")
        .key("rtp_port", 42000)
        .calls(1)
        .spawn_bound(bed.dir.path(), Duration::from_secs(10));
    let uac = bed
        .ue_sipp("uac", "uac_basic.xml")
        .key("rtp_port", 41000)
        .calls(1)
        .pause_ms(200)
        .spawn(bed.dir.path())
        .wait(Duration::from_secs(60));
    assert!(uac.ok(), "{}", uac.describe());
    assert!(uas.wait(Duration::from_secs(60)).ok());
    let mut bgf_alive = bed;
    assert!(bgf_alive.bgf.is_running(), "bgf died");
}
