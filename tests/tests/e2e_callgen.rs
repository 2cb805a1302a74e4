//! bgf-callgen measures what it claims (issue 4, item 7):
//! - UAC ↔ UAS with nothing in between: no loss, no reordering, no gap beyond
//!   scheduling jitter, every call passes the in-dialog check after the marker;
//! - through a real `bgf active` that the test freezes (SIGSTOP/SIGCONT) for
//!   500 ms: every call's longest gap, both directions, is the measured pause
//!   (plus at most one packet interval), and every call still passes the
//!   re-INVITE/new-port/BYE check through the BGF's route set;
//! - the UAS killed mid-call: after the marker every call is listed as lost
//!   by Call-ID and the exit status is non-zero.

use bgf_tests::callgen::{args, Callgen};
use bgf_tests::net::host;
use bgf_tests::{Bed, TestDir, TestNet};
use serde_json::Value;
use std::time::{Duration, Instant};

const RUN_T: Duration = Duration::from_secs(50);

fn calls(r: &Value) -> &Vec<Value> {
    r["calls"].as_array().expect("calls array")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn uas(
    dir: &TestDir,
    name: &str,
    local: std::net::SocketAddr,
    sock: &str,
    extra: &[&str],
) -> Callgen {
    let mut a = args(extra);
    a.extend(args(&[
        "uas",
        "--local",
        &local.to_string(),
        "--ctl-listen",
        &format!("unix:{sock}"),
        "--rtp-ports",
        "24000-25999",
        "--progress",
        "--json",
        &dir.join(&format!("{name}.json")).display().to_string(),
    ]));
    a.rotate_left(extra.len());
    let c = Callgen::spawn(name, dir.path(), &a);
    assert!(
        c.wait_stderr("SIP on", Duration::from_secs(10)),
        "UAS did not start: {}",
        c.stderr()
    );
    c
}

#[test]
fn direct_calls_measure_no_gap_and_no_loss() {
    let net = TestNet::new();
    let dir = TestDir::new("callgen-direct");
    let sock = dir.join("ctl.sock").display().to_string();
    let uas_addr = net.addr(host::CORE_PEER, 5060);
    let _uas = uas(&dir, "uas", uas_addr, &sock, &["--gap-threshold-ms", "100"]);
    let json = dir.join("uac.json");
    let uac = Callgen::spawn(
        "uac",
        dir.path(),
        &args(&[
            "uac",
            "--local",
            &net.addr(host::UE, 5060).to_string(),
            "--proxy",
            &uas_addr.to_string(),
            "--rtp-ports",
            "26000-27999",
            "--calls",
            "20",
            "--rate",
            "20",
            "--hold-ms",
            "2500",
            "--marker-at-s",
            "1.5",
            "--gap-threshold-ms",
            "100",
            "--ctl-connect",
            &format!("unix:{sock}"),
            "--json",
            &json.display().to_string(),
            "--svg",
            &dir.join("uac.svg").display().to_string(),
            "--progress",
        ]),
    );
    let res = uac.wait(RUN_T, Some(&json));
    assert_eq!(res.code, Some(0), "{}", res.describe());
    let r = res.report();
    let s = &r["summary"];
    assert_eq!(s["ok"], 20, "{}", res.describe());
    assert_eq!(s["lost"], 0);
    assert_eq!(s["up_at_marker"], 20, "every call was up at 1.5 s");
    assert_eq!(s["lost_packets_down"], 0);
    assert_eq!(s["lost_packets_up"], 0);
    assert!(r["uas_error"].is_null(), "{}", r["uas_error"]);
    // Sent but never received: at most what is in flight when each call ends.
    for d in ["undelivered_down", "undelivered_up"] {
        assert!(s[d].as_u64() <= Some(2 * 20), "{d}: {s}");
    }
    for c in calls(r) {
        assert_eq!(c["outcome"], "ok", "{c}");
        assert_eq!(c["check"]["reinvite_code"], 200, "{c}");
        assert_eq!(c["check"]["bye_code"], 200, "{c}");
        assert!(c["check"]["new_port_packets"].as_u64() >= Some(5), "{c}");
        for d in ["down", "up"] {
            let m = &c[d];
            // 2.5 s of 20 ms packets, ± start/stop.
            assert!(m["received"].as_u64() > Some(100), "{d}: {m}");
            assert!(m["sent"].as_u64() >= m["received"].as_u64(), "{d}: {m}");
            assert_eq!(m["lost"], 0, "{d}: {m}");
            assert_eq!(m["reordered"], 0, "{d}: {m}");
            assert_eq!(m["duplicates"], 0, "{d}: {m}");
            // No gap beyond one packet interval plus how late the sender's
            // own loop ever was (arrivals carry kernel receive stamps, so
            // the receiver's scheduling does not count), + 30 ms slack.
            let peer = if d == "down" { "uas" } else { "uac" };
            let late = f(&r[peer]["media"]["tx_max_late_ms"]);
            let bound = 20.0 + late + 30.0;
            assert!(
                f(&m["max_gap_ms"]) <= bound,
                "{d}: bound {bound:.1} ms: {m}"
            );
        }
    }
    let svg = std::fs::read_to_string(dir.join("uac.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("marker"), "plot");
}

#[test]
fn relay_paused_500ms_shows_as_the_gap_of_every_call() {
    let bed = Bed::start("callgen-pause");
    let sock = bed.dir.join("ctl.sock").display().to_string();
    let _uas = uas(&bed.dir, "uas", bed.core_peer(), &sock, &["--rtcp"]);
    let json = bed.dir.join("uac.json");
    let n = 20;
    let uac = Callgen::spawn(
        "uac",
        bed.dir.path(),
        &args(&[
            "uac",
            "--local",
            &bed.ue_sip().to_string(),
            "--proxy",
            &bed.access_sip().to_string(),
            "--rtp-ports",
            "26000-27999",
            "--calls",
            &n.to_string(),
            "--rate",
            "40",
            "--hold-ms",
            "4000",
            "--register",
            "--rtcp",
            "--ctl-connect",
            &format!("unix:{sock}"),
            "--json",
            &json.display().to_string(),
            "--progress",
        ]),
    );
    // Every call answered through the BGF, and media flowing for a while.
    let up = bgf_tests::wait_until(Duration::from_secs(15), || {
        let s = bed.bgf.admin.stats().ok()?;
        (bgf_tests::admin::stat_of(&s, "sessions").ok()? >= n as u64).then_some(())
    });
    assert!(
        up.is_some(),
        "calls not up: {}\n{}",
        bed.stats(),
        uac.stderr()
    );
    std::thread::sleep(Duration::from_millis(600));
    // Marker, then freeze the relay for 500 ms.
    uac.signal(libc::SIGUSR1);
    let t_stop = Instant::now();
    bgf_tests::util::signal(bed.bgf.pid(), libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(500));
    bgf_tests::util::signal(bed.bgf.pid(), libc::SIGCONT);
    let pause_ms = t_stop.elapsed().as_secs_f64() * 1000.0;
    let res = uac.wait(RUN_T, Some(&json));
    assert_eq!(res.code, Some(0), "{}", res.describe());
    let r = res.report();
    assert_eq!(r["summary"]["ok"], n, "{}", res.describe());
    assert_eq!(r["summary"]["up_at_marker"], n);
    // The gap is the pause, plus up to one packet interval (20 ms) for where
    // in its period each stream was frozen; ±20 ms of slack on top.
    let (lo, hi) = (pause_ms - 20.0, pause_ms + 20.0 + 20.0);
    for c in calls(r) {
        assert_eq!(c["outcome"], "ok", "{c}");
        for d in ["down", "up"] {
            let g = f(&c[d]["max_gap_ms"]);
            assert!(
                (lo..=hi).contains(&g),
                "call {} {d}: max gap {g:.1} ms, relay paused {pause_ms:.1} ms (allowed {lo:.1}..{hi:.1})\n{}",
                c["call_id"],
                c[d]
            );
            // Packets queued in the frozen relay's sockets are delivered after it resumes.
            assert_eq!(c[d]["lost"], 0, "{d}: {}", c[d]);
        }
    }
    // RTCP (--rtcp on both sides) went through the BGF both ways too.
    for side in ["uac", "uas"] {
        assert!(
            r[side]["media"]["rtcp_rx"].as_u64() > Some(0),
            "{side} got no RTCP: {}",
            r[side]["media"]
        );
    }
    assert!(bed.wait_idle(Duration::from_secs(15)), "{}", bed.stats());
}

#[test]
fn calls_whose_peer_vanishes_are_reported_lost() {
    let net = TestNet::new();
    let dir = TestDir::new("callgen-vanish");
    let sock = dir.join("ctl.sock").display().to_string();
    let uas_addr = net.addr(host::CORE_PEER, 5060);
    let uas = uas(&dir, "uas", uas_addr, &sock, &[]);
    let json = dir.join("uac.json");
    let uac = Callgen::spawn(
        "uac",
        dir.path(),
        &args(&[
            "uac",
            "--local",
            &net.addr(host::UE, 5060).to_string(),
            "--proxy",
            &uas_addr.to_string(),
            "--rtp-ports",
            "26000-27999",
            "--calls",
            "10",
            "--rate",
            "50",
            "--hold-ms",
            "3000",
            "--sip-timeout-ms",
            "1500",
            "--check-media-ms",
            "1000",
            "--ctl-connect",
            &format!("unix:{sock}"),
            "--json",
            &json.display().to_string(),
        ]),
    );
    assert!(
        uas.wait_stderr("calls up 10 total 10", Duration::from_secs(15)),
        "{}",
        uas.stderr()
    );
    uas.signal(libc::SIGKILL);
    uac.signal(libc::SIGUSR1);
    let res = uac.wait(RUN_T, Some(&json));
    assert_eq!(res.code, Some(1), "{}", res.describe());
    let r = res.report();
    assert_eq!(r["summary"]["lost"], 10, "{}", res.describe());
    let lost: Vec<&str> = r["lost_call_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let ids: Vec<&str> = calls(r)
        .iter()
        .filter_map(|c| c["call_id"].as_str())
        .collect();
    assert_eq!(lost.len(), 10);
    for id in &lost {
        assert!(ids.contains(id), "{id} not a call of the run");
    }
    for c in calls(r) {
        assert_eq!(c["outcome"], "lost", "{c}");
        assert!(
            c["reason"].as_str().unwrap_or("").contains("re-INVITE"),
            "{c}"
        );
    }
    assert!(
        !r["uas_error"].is_null(),
        "the UAS's report cannot have arrived"
    );
    assert!(res.stdout.contains("LOST calls (10)"), "{}", res.stdout);
}

#[test]
fn ipv6_access_ipv4_core_through_the_bgf() {
    let bed = Bed::start_with("callgen-v6", |net, c| {
        c.access_sip = net.v6(0);
        c.access_media_ip = net.v6(0).ip();
        c.access_rtp_ports = (net.port_block + 20, net.port_block + 99);
    });
    let sock = bed.dir.join("ctl.sock").display().to_string();
    let _uas = uas(&bed.dir, "uas", bed.core_peer(), &sock, &[]);
    let json = bed.dir.join("uac.json");
    // The UE on [::1] with this test's ports: SIP +1, RTP +2…+19.
    let (lo, hi) = (bed.net.port_block + 2, bed.net.port_block + 19);
    let res = Callgen::spawn(
        "uac",
        bed.dir.path(),
        &args(&[
            "uac",
            "--local",
            &bed.net.v6(1).to_string(),
            "--proxy",
            &bed.access_sip().to_string(),
            "--rtp-ports",
            &format!("{lo}-{hi}"),
            "--calls",
            "3",
            "--rate",
            "10",
            "--hold-ms",
            "2500",
            "--marker-at-s",
            "1",
            "--ctl-connect",
            &format!("unix:{sock}"),
            "--json",
            &json.display().to_string(),
        ]),
    )
    .wait(RUN_T, Some(&json));
    assert_eq!(res.code, Some(0), "{}", res.describe());
    let r = res.report();
    assert_eq!(r["summary"]["ok"], 3, "{}", res.describe());
    assert_eq!(r["summary"]["up_at_marker"], 3);
    for c in calls(r) {
        for d in ["down", "up"] {
            assert!(c[d]["received"].as_u64() > Some(50), "{d}: {}", c[d]);
            assert_eq!(c[d]["lost"], 0, "{d}: {}", c[d]);
        }
        let port = c["check"]["new_port"].as_u64().unwrap_or(0);
        assert!((u64::from(lo)..=u64::from(hi)).contains(&port), "{c}");
    }
    assert!(bed.wait_idle(Duration::from_secs(15)), "{}", bed.stats());
}
