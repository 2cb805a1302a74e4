//! Recorded call workloads for the core benchmarks: every input of N full
//! calls (INVITE/180/200/ACK/BYE/200 and the transaction timers that clean up
//! after them), captured once so the benchmark measures `Core::apply` alone.
#![allow(dead_code)]

#[path = "../../tests/common/mod.rs"]
mod common;

pub use common::*;
use media_plane::Side;
use sip_control::{Core, CoreConfig, Input};

/// How far each call goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Through BYE/200 and timer cleanup: nothing left.
    Ended,
    /// Through ACK and timer cleanup: the session stays live.
    Confirmed,
}

/// Capture every input (logged or not) of `calls` calls.
pub fn record(calls: usize, until: Until) -> Vec<Input> {
    record_with(bench_config(), "bench", calls, until)
}

/// [`record`] for the instance configured by `cfg`, with Call-IDs
/// `{prefix}-{n}` (several instances' workloads are then distinct).
pub fn record_with(cfg: CoreConfig, prefix: &str, calls: usize, until: Until) -> Vec<Input> {
    let mut h = Harness::with(cfg);
    h.check_unchanged = false;
    let mut inputs = Vec::new();
    for n in 0..calls {
        let call = format!("{prefix}-{n}");
        let ue = format!("198.18.1.{}:5061", 100 + n % 100);
        let start = h.log.len();
        let out = h.recv(
            Side::Access,
            &ue,
            &sipp_invite(&call, &format!("z9hG4bK-b{n}"), &ue, 6000),
        );
        let inv = out[1].msg.clone();
        h.recv(
            Side::Core,
            NEXT_HOP,
            &respond(
                &inv,
                180,
                "Ringing",
                Some("c"),
                Some("sip:svc@198.18.2.20:5060"),
                None,
            ),
        );
        let out = h.recv(
            Side::Core,
            NEXT_HOP,
            &respond(
                &inv,
                200,
                "OK",
                Some("c"),
                Some("sip:svc@198.18.2.20:5060"),
                Some(&sdp_of("198.18.2.20", 7000)),
            ),
        );
        let ok = out[0].msg.clone();
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
            &format!("SIP/2.0/UDP {ue};branch=z9hG4bK-a{n}"),
            &from,
            &to,
            &call,
            1,
            None,
        );
        h.recv(Side::Access, &ue, &ack);
        if until == Until::Ended {
            let core_routes: Vec<String> = ok
                .headers_named("Record-Route")
                .map(str::to_string)
                .collect();
            let bye = in_dialog(
                "BYE",
                &format!("sip:sipp@{ue}"),
                &core_routes,
                &format!("SIP/2.0/UDP 198.18.2.20:5060;branch=z9hG4bK-y{n}"),
                &to,
                &from,
                &call,
                1,
                None,
            );
            let out = h.recv(Side::Core, NEXT_HOP, &bye);
            let fwd = out[0].msg.clone();
            h.recv(
                Side::Access,
                &ue,
                &respond(&fwd, 200, "OK", None, None, None),
            );
        }
        let _ = start;
    }
    h.advance(120_000);
    // Re-run the same inputs capturing all of them (the harness logs only
    // state-changing ones; a re-run with a recorder gets the full sequence).
    inputs.extend(h.log.iter().cloned());
    inputs
}

/// Apply a recorded workload to a fresh core.
pub fn run(inputs: &[Input]) -> Core {
    run_with(bench_config(), inputs)
}

/// Apply a recorded workload to a fresh core configured by `cfg`.
pub fn run_with(cfg: CoreConfig, inputs: &[Input]) -> Core {
    let mut core = Core::new(cfg).unwrap();
    for i in inputs {
        std::hint::black_box(core.apply(i));
    }
    core
}

/// The config of instance `n` (0-based) of several on one standby: its own
/// name, secret and media IPs (the SIP addresses stay those the harness
/// sends to), port pools as wide as [`bench_config`]'s.
pub fn instance_config(n: u8) -> CoreConfig {
    let mut c = bench_config();
    c.instance = format!("bgf{}", n + 1);
    c.secret = sip_control::ids::Key::test(n);
    c.access.media_ip = std::net::Ipv4Addr::new(198, 18, 1, 10 + n).into();
    c.core.media_ip = std::net::Ipv4Addr::new(198, 18, 2, 10 + n).into();
    c
}

/// Port pools wide enough for 10 000 live sessions.
pub fn bench_config() -> CoreConfig {
    let mut c = config();
    // The widest ranges one media IP allows (32 256 pairs per side).
    c.access.rtp_port_min = 1024;
    c.access.rtp_port_max = 65535;
    c.core.rtp_port_min = 1024;
    c.core.rtp_port_max = 65535;
    c
}
