//! `media.backend = "xdp"` end to end.
//!
//! - In the N+1 cluster in namespaces (root): the actives relay calls in
//!   the kernel (native XDP on their veths), the hot standby pre-installs
//!   their pinholes into its idle map and, when an active is killed, carries
//!   every call on through the same program.
//! - Admission on the map's capacity: an active whose map holds a few
//!   dozen pinholes answers the calls beyond with 503, and every call it
//!   answered has media both ways — none is answered without it.
//! - Where XDP cannot attach (native mode asked on loopback), the daemon
//!   falls back to kernel sockets, says so, and relays (no root needed).
//!
//! The namespace tests fail instead of skipping under `BGF_REQUIRE_XDP=1`
//! (CI). Run: `BGF_NETNS_TAG=w17 cargo test -p bgf-tests --test e2e_xdp`.

use bgf_tests::cluster::{finish, gaps, pct, Cluster, ClusterNet, ClusterOptions, Uac};
use bgf_tests::net::host;
use bgf_tests::rtp::RtpEndpoint;
use bgf_tests::sipp::require_sipp;
use bgf_tests::util::{signal, wait_until};
use bgf_tests::{Bed, TestDir};
use serde_json::Value;
use std::time::Duration;

const CALLS: u64 = 10;

/// Whether the namespace tests can run; panics under `BGF_REQUIRE_XDP=1`.
fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    let require = std::env::var("BGF_REQUIRE_XDP").is_ok_and(|v| v == "1");
    assert!(!require, "BGF_REQUIRE_XDP=1 but {test} needs root");
    eprintln!("SKIPPED {test}: needs root (namespaces, XDP)");
    false
}

fn xdp_cluster(prefix: &str, name: &str, media_extra: &str) -> Cluster {
    let net = ClusterNet::namespaces(prefix).unwrap_or_else(|e| panic!("{e}"));
    let o = ClusterOptions {
        a1_v6: true,
        media_extra: format!("backend = \"xdp\"\n{media_extra}"),
        ..ClusterOptions::default()
    };
    Cluster::start(net, TestDir::new(name), &o).unwrap_or_else(|e| panic!("{e}"))
}

/// `/v1/stats` of active k (or of the standby once it serves).
fn stats(c: &Cluster, node: &str, k: Option<u8>) -> Value {
    let addr = match k {
        Some(k) => c.net.active_mgmt(k),
        None => c.net.standby_mgmt(),
    };
    c.net
        .admin_get(node, addr, "/v1/stats")
        .unwrap_or_else(|| panic!("no /v1/stats from {node}\n{}", c.logs()))
}

/// A JSON-log field of the first line holding `needle`.
fn log_field(logs: &str, needle: &str, field: &str) -> Option<u64> {
    let line = logs.lines().find(|l| l.contains(needle))?;
    let v: Value = serde_json::from_str(line).ok()?;
    v["fields"][field].as_u64().or_else(|| v[field].as_u64())
}

#[test]
fn xdp_actives_relay_in_the_kernel_and_the_standby_takes_over_from_its_idle_map() {
    if !can_run("xdp_actives_relay_in_the_kernel_and_the_standby_takes_over_from_its_idle_map") {
        return;
    }
    let c = xdp_cluster("wxd1", "xdp-failover", "");
    for k in [1u8, 2] {
        let s = stats(&c, &format!("a{k}"), Some(k));
        assert_eq!(s["media"]["backend"], "xdp", "active {k}: {s}");
        let modes: Vec<&str> = s["media"]["xdp"]["attached"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["mode"].as_str())
            .collect();
        assert_eq!(modes, ["native", "native"], "active {k}: {s}");
    }
    let [_uas1, _uas2, mut uac1, mut uac2] = c
        .place_calls(CALLS, 20.0, 9000, true, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(800));
    let s = stats(&c, "a1", Some(1));
    let kernel = s["media"]["xdp"]["kernel_forwarded"].as_u64().unwrap_or(0);
    let all = s["media"]["forwarded_packets"].as_u64().unwrap_or(0);
    assert!(
        kernel > 0 && kernel * 10 >= all * 9,
        "most media forwarded in the kernel ({kernel} of {all}): {s}"
    );
    assert_eq!(s["media"]["drops"]["send_error"], 0, "{s}");

    signal(c.actives[0].pid(), libc::SIGKILL);
    c.wait_serving(1, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    signal(uac1.pid(), libc::SIGUSR1);
    signal(uac2.pid(), libc::SIGUSR1);
    let (code1, r1) = finish(&mut uac1, &c.dir, Duration::from_secs(60)).unwrap();
    let (code2, r2) = finish(&mut uac2, &c.dir, Duration::from_secs(60)).unwrap();
    let g1 = gaps(&r1);
    println!(
        "XDP kill (hot): media gap p50 {:.0} / max {:.0} ms",
        pct(&g1, 50.0),
        pct(&g1, 100.0)
    );
    for (what, code, r) in [
        ("via the failed active", code1, &r1),
        ("via active 2", code2, &r2),
    ] {
        assert_eq!(
            r["summary"]["ok"].as_u64(),
            Some(CALLS),
            "{what}: {}",
            r["summary"]
        );
        assert_eq!(
            r["summary"]["lost"].as_u64(),
            Some(0),
            "{what}: {}",
            r["summary"]
        );
        assert_eq!(code, Some(0), "{what}");
    }
    assert!(
        pct(&g1, 100.0) < 3000.0,
        "media gap through the takeover: {g1:?}"
    );
    // The standby had the calls' pinholes in its idle map before the
    // failure, and relays them in the kernel now.
    let logs = c.standby.stderr();
    let pre = log_field(&logs, "serving bgf1", "pre_installed");
    assert_eq!(pre, Some(CALLS), "pre-installed pinholes:\n{logs}");
    let s = stats(&c, "sb", None);
    assert_eq!(s["media"]["backend"], "xdp", "{s}");
    assert!(
        s["media"]["xdp"]["kernel_forwarded"].as_u64().unwrap_or(0) > 0,
        "the standby forwards in the kernel: {s}"
    );
}

/// Admission tied to the map: 24 pinholes, one per call (audio), and room
/// kept for a two-stream session (a new INVITE needs 2 free) — 23 calls are
/// answered, the others get 503 before any answer, and every answered call
/// has media both ways.
#[test]
fn xdp_map_full_calls_get_503_and_no_answered_call_lacks_media() {
    if !can_run("xdp_map_full_calls_get_503_and_no_answered_call_lacks_media") {
        return;
    }
    let c = xdp_cluster("wxd2", "xdp-admission", "[media.xdp]\nmax_pinholes = 24\n");
    let uas = c
        .uas("uas1", 5060, "24000-24999", 120)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut uac = c
        .uac(&Uac {
            name: "uac1".into(),
            k: 1,
            v6: true,
            local_port: 5060,
            rtp: "26000-26999".into(),
            uas: Some("uas1".into()),
            calls: 40,
            rate: 40.0,
            hold_ms: 6000,
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let (_code, r) = finish(&mut uac, &c.dir, Duration::from_secs(90)).unwrap();
    drop(uas);
    let sum = &r["summary"];
    assert_eq!(sum["ok"].as_u64(), Some(23), "answered calls: {sum}");
    assert_eq!(sum["failed"].as_u64(), Some(17), "refused calls: {sum}");
    for call in r["calls"].as_array().unwrap() {
        if call["outcome"] == "ok" {
            let down = call["down"]["received"].as_u64().unwrap_or(0);
            let up = call["up"]["received"].as_u64().unwrap_or(0);
            assert!(
                down > 10 && up > 10,
                "an answered call without media: {call}"
            );
        } else {
            let why = call["reason"].as_str().unwrap_or("");
            assert!(why.contains("503"), "refused otherwise than 503: {call}");
            assert!(
                call["setup_ms"].is_null(),
                "refused after an answer: {call}"
            );
        }
    }
    let s = stats(&c, "a1", Some(1));
    assert_eq!(s["transport"]["refused_media"].as_u64(), Some(17), "{s}");
    let logs = c.actives[0].stderr();
    assert!(
        logs.contains("media.xdp.max_pinholes"),
        "the alarm names what to raise:\n{logs}"
    );
}

/// Native XDP asked on loopback cannot attach: the daemon says it falls
/// back, `/v1/stats` says `kernel`, and media flows through sockets.
#[test]
fn xdp_that_cannot_attach_falls_back_to_kernel_sockets_and_says_so() {
    if !require_sipp("xdp_that_cannot_attach_falls_back_to_kernel_sockets_and_says_so") {
        return;
    }
    let bed = Bed::start_with("xdp-fallback", |_, c| {
        c.media_extra = "backend = \"xdp\"\n[media.xdp]\nmode = \"native\"\naccess_interface = \"lo\"\ncore_interface = \"lo\"\n".into();
    });
    let s = bed.stats();
    assert_eq!(s["media"]["backend"], "kernel", "{s}");
    let logs = bed.bgf.logs();
    assert!(
        logs.contains("FALLING BACK to the kernel-socket backend"),
        "{logs}"
    );
    let ue_rtp = bed.net.addr(host::UE, 41000);
    let core_rtp = bed.net.addr(host::CORE_PEER, 42000);
    let mut ue = RtpEndpoint::bind(ue_rtp).unwrap();
    let mut core = RtpEndpoint::bind(core_rtp).unwrap();
    let _uas = bed
        .core_sipp("uas", "uas_basic.xml")
        .key("rtp_port", 42000)
        .calls(1)
        .spawn_bound(bed.dir.path(), Duration::from_secs(10));
    let _uac = bed
        .ue_sipp("uac", "uac_basic.xml")
        .key("rtp_port", 41000)
        .calls(1)
        .pause_ms(6000)
        .spawn(bed.dir.path());
    let p = bed
        .wait_answered_pinhole(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no answered session: {:?}", bed.sessions()));
    ue.start_sending(p.access.local, 0xae01, 200);
    core.start_sending(p.core.local, 0xc0e1, 200);
    assert!(
        ue.wait_from(p.access.local, 20, Duration::from_secs(5)),
        "{}",
        ue.summary()
    );
    assert!(
        core.wait_from(p.core.local, 20, Duration::from_secs(5)),
        "{}",
        core.summary()
    );
    let relayed = wait_until(Duration::from_secs(5), || {
        (bed.stat("media.forwarded_packets") >= 40).then_some(())
    });
    assert!(relayed.is_some(), "{}", bed.stats());
}
