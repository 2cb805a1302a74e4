//! # bgf-demo — one active BGF carrying real calls, on loopback
//!
//! Run with `cargo run --release -p bgf-tests --bin bgf-demo`. It finds (or
//! builds once) the `bgf` binary of the same profile, starts one `bgf active`
//! on a private loopback /24, a SIPp answerer on the core side and a SIPp caller
//! on the access side placing 50 calls at 10 calls/s, sends RTP both ways
//! through the pinholes of a few of those calls with the project's own RTP
//! endpoints, prints a summary, stops everything and exits 0 on success.
//!
//! It owns nothing of the product; it is a user-facing tour of what works.

use bgf_tests::admin::stat_of;
use bgf_tests::net::host;
use bgf_tests::rtp::RtpEndpoint;
use bgf_tests::sipp::sipp_available;
use bgf_tests::util::{wait_udp_bound, wait_until};
use bgf_tests::{BgfConfig, BgfProcess, Sipp, TestDir, TestNet};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const CALLS: u32 = 50;
const CPS: u32 = 10;
const HOLD_MS: u64 = 3000;
const MEDIA_CALLS: usize = 5;
const UE_RTP: u16 = 41000;
const CORE_RTP: u16 = 42000;

fn main() -> ExitCode {
    let started = Instant::now();
    println!("bgf-demo: one active BGF on loopback, {CALLS} calls at {CPS} calls/s, RTP on {MEDIA_CALLS} of them");
    if !sipp_available() && !install_sipp() {
        eprintln!("bgf-demo: `sipp` is not installed; install it with `apt-get install sip-tester` (as root) and rerun");
        return ExitCode::from(2);
    }
    let net = TestNet::new();
    let dir = TestDir::new("demo");
    match run(&net, &dir) {
        Ok(summary) => {
            println!("{summary}");
            println!(
                "bgf-demo: OK in {:.1} s. The N+1 failover part (standby, state log, address takeover) arrives with later issues.",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bgf-demo: FAILED: {e}");
            eprintln!("bgf-demo: logs kept in {}", dir.path().display());
            std::mem::forget(dir);
            ExitCode::FAILURE
        }
    }
}

fn run(net: &TestNet, dir: &TestDir) -> Result<String, String> {
    let cfg = BgfConfig::for_net(net);
    println!(
        "  bgf active: access SIP {} media {} | core SIP {} media {} | next hop {} | admin http://{}",
        cfg.access_sip,
        cfg.access_media_ip,
        cfg.core_sip,
        cfg.core_media_ip,
        cfg.next_hop,
        cfg.admin_listen
    );
    let bgf = BgfProcess::start(cfg, dir.path())?;
    let fail = |msg: String| -> String { format!("{msg}\n{}", bgf.logs()) };

    let mut ue = RtpEndpoint::bind(net.addr(host::UE, UE_RTP)).map_err(|e| e.to_string())?;
    let mut core =
        RtpEndpoint::bind(net.addr(host::CORE_PEER, CORE_RTP)).map_err(|e| e.to_string())?;

    let uas = Sipp::new("uas", "uas_basic.xml")
        .local(bgf.config.next_hop)
        .key("rtp_port", CORE_RTP)
        .calls(CALLS)
        .spawn(dir.path());
    if !wait_udp_bound(bgf.config.next_hop, Duration::from_secs(10)) {
        return Err(fail("the core-side SIPp did not start".into()));
    }
    let uac = Sipp::new("uac", "uac_basic.xml")
        .local(net.addr(host::UE, 5060))
        .remote(bgf.config.access_sip)
        .key("rtp_port", UE_RTP)
        .calls(CALLS)
        .rate(CPS, CALLS)
        .pause_ms(HOLD_MS)
        .spawn(dir.path());
    println!("  SIPp uac (access side) → bgf → SIPp uas (core side): placing calls ...");

    // Pick a few live calls and send RTP through their pinholes both ways.
    let mut media: BTreeMap<String, (SocketAddr, SocketAddr)> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while media.len() < MEDIA_CALLS && Instant::now() < deadline {
        if let Ok(sessions) = bgf.admin.sessions() {
            for s in sessions {
                if media.len() >= MEDIA_CALLS || media.contains_key(&s.call_id) {
                    continue;
                }
                if let Some(p) = s.pinholes.first().filter(|p| p.core.remote_rtp.is_some()) {
                    let ssrc = 0x1000 + media.len() as u32;
                    ue.start_sending(p.access.local, ssrc, 75);
                    core.start_sending(p.core.local, 0x2000 + ssrc, 75);
                    media.insert(s.call_id.clone(), (p.access.local, p.core.local));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let uac = uac.wait(Duration::from_secs(90));
    let uas = uas.wait(Duration::from_secs(30));
    ue.stop_sending();
    core.stop_sending();
    let idle = wait_until(Duration::from_secs(15), || {
        let s = bgf.admin.stats().ok()?;
        (stat_of(&s, "sessions").ok()? == 0).then_some(())
    })
    .is_some();
    let stats = bgf.admin.stats().map_err(fail)?;
    let st = |p: &str| stat_of(&stats, p).unwrap_or(0);

    let ok_calls = uac.stat("SuccessfulCall(C)").unwrap_or(0);
    let failed_calls = uac.stat("FailedCall(C)").unwrap_or(0);
    let mut media_ok = 0;
    let mut lines = String::new();
    for (call_id, (access, core_local)) in &media {
        let to_ue = ue.received_from(*access);
        let to_core = core.received_from(*core_local);
        if to_ue > 0 && to_core > 0 {
            media_ok += 1;
        }
        lines += &format!(
            "    call {call_id}: core→UE {to_ue} pkts (from {access}), UE→core {to_core} pkts (from {core_local})\n"
        );
    }
    let drops = [
        "unknown_port",
        "wrong_source",
        "not_rtp",
        "too_short",
        "no_destination",
        "send_error",
    ]
    .iter()
    .map(|d| format!("{d}={}", st(&format!("media.drops.{d}"))))
    .collect::<Vec<_>>()
    .join(" ");
    let summary = format!(
        "\n== bgf-demo summary ==\n  calls: {ok_calls} ok, {failed_calls} failed (of {CALLS}); core SIPp exit {:?}\n  sessions: created {} ended {} refused {} now {}\n  SIP: requests forwarded {} responses forwarded {} retransmissions absorbed {} malformed {}\n  media: {} packets / {} bytes relayed by the BGF; RTP sent by the test endpoints {}\n  media on {}/{} sampled calls flowed both ways:\n{lines}  media drops: {drops}",
        uas.code,
        st("core.sessions_created"),
        st("core.sessions_ended"),
        st("core.sessions_refused"),
        st("sessions"),
        st("core.requests_forwarded"),
        st("core.responses_forwarded"),
        st("core.retransmissions_absorbed"),
        st("core.malformed_requests"),
        st("media.forwarded_packets"),
        st("media.forwarded_bytes"),
        ue.sent() + core.sent(),
        media_ok,
        media.len(),
    );
    let mut problems = Vec::new();
    if !uac.ok() || ok_calls != u64::from(CALLS) {
        problems.push(format!("calls failed:\n{}", uac.describe()));
    }
    if !uas.ok() {
        problems.push(format!("core side failed:\n{}", uas.describe()));
    }
    if media.len() < MEDIA_CALLS || media_ok < media.len() {
        problems.push(format!(
            "media did not flow on every sampled call ({media_ok}/{} of {MEDIA_CALLS} wanted)",
            media.len()
        ));
    }
    if !idle {
        problems.push("sessions did not return to 0 after the calls".into());
    }
    if problems.is_empty() {
        Ok(summary)
    } else {
        Err(fail(format!("{summary}\n\n{}", problems.join("\n"))))
    }
}

/// On a fresh machine the demo's one prerequisite is SIPp (Debian package
/// `sip-tester`). As root, install it (saying so); otherwise leave it to the
/// operator.
fn install_sipp() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    println!("bgf-demo: sipp missing; installing Debian package sip-tester (apt-get) ...");
    let ok = |mut c: std::process::Command| c.status().map(|s| s.success()).unwrap_or(false);
    let mut update = std::process::Command::new("apt-get");
    update.args(["update", "-qq"]);
    let mut install = std::process::Command::new("apt-get");
    install
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "sip-tester",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive");
    ok(update) && ok(install) && sipp_available()
}
