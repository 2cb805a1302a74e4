//! The state log stays bounded and media never waits on it, end to end:
//! `bgf active` with `[statelog] backend = "embedded"` against a real
//! `bgf statelog` server.
//!
//! - Thousands of short SIPp calls with `checkpoint_every = 100` (the
//!   smallest the config accepts): once they are over, the log holds one
//!   checkpoint and the records after it — a size independent of the number
//!   of calls — and the checkpoint plus those records replay into the live
//!   state.
//! - A call with RTP both ways keeps its media flowing while the store is
//!   dead (degraded), and ends normally once the store is back.

use bgf_tests::logcheck::{self, core_config, degraded, live_sessions, num, rt, statelog};
use bgf_tests::net::host;
use bgf_tests::rtp::RtpEndpoint;
use bgf_tests::sipp::require_sipp;
use bgf_tests::util::TestDir;
use bgf_tests::{wait_until, Bed, Sipp, StatelogProcess};
use sip_control::{Core, CoreState};
use state_log::{Body, Record};
use std::sync::Arc;
use std::time::Duration;

const SIPP_T: Duration = Duration::from_secs(180);
const READY: Duration = Duration::from_secs(10);
const CHECKPOINT_EVERY: u64 = 100;
const SHORT_CALLS: u32 = 2000;
const SHORT_RATE: u32 = 50;
const LONG_CALLS: u32 = 3;

/// Start a statelog server on the test's .7 address, then the bed using it.
fn bed_with_log(name: &str, extra: &str) -> (Bed, StatelogProcess, TestDir) {
    let data = TestDir::new(&format!("{name}-log"));
    let mut store = None;
    let bed = Bed::start_with(name, |net, cfg| {
        // Calls in these tests may carry no media for minutes.
        cfg.inactivity_timeout_s = 3600;
        // A call SIPp gives up on is cleaned up by the BGF within bounded time.
        cfg.timer_c_ms = Some(30_000);
        let addr = net.addr(7, 7400);
        store = Some(
            StatelogProcess::start(addr, &data.join("data"), data.path())
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let st = store.as_ref().unwrap();
        cfg.statelog = Some(format!("{}{extra}", st.statelog_toml(&cfg.name)));
    });
    (bed, store.unwrap(), data)
}

fn read_log(st: &StatelogProcess, instance: &str) -> Vec<Record> {
    rt().block_on(async {
        let store = st.connect("standby:sb1").await;
        logcheck::read_all(Arc::new(store), instance).await
    })
}

/// Waits until `/v1/stats` shows exactly `n` sessions.
fn wait_sessions(bed: &Bed, n: u64, timeout: Duration) -> bool {
    wait_until(timeout, || {
        (bed.bgf.admin.stat("sessions").ok()? == n).then_some(())
    })
    .is_some()
}

/// Waits until every assigned record is durable and nothing is held.
fn wait_log_settled(bed: &Bed, timeout: Duration) -> bool {
    wait_until(timeout, || {
        let l = bed.bgf.admin.stats().ok()?.get("statelog")?.clone();
        let (d, n, h) = (
            l.get("durable_seq")?.as_u64()?,
            l.get("next_seq")?.as_u64()?,
            l.get("held")?.as_u64()?,
        );
        (d + 1 == n && h == 0).then_some(())
    })
    .is_some()
}

/// What the bounded-log test measured, for the report.
struct LogShape {
    records: usize,
    checkpoint_seq: u64,
    checkpoint_bytes: usize,
    checkpoint_sessions: usize,
    next_seq: u64,
}

/// Reads the whole log and checks its shape: exactly one checkpoint, first,
/// followed by fewer than `checkpoint_every` records; replays it (restore the
/// checkpoint, apply the inputs after it) and compares with the live core.
/// Retried while the live state moves between the reads.
fn check_bounded_log_replays_to_live(bed: &Bed, store: &StatelogProcess) -> LogShape {
    let cfg = core_config(&bed.bgf.config);
    let mut last = String::new();
    for _ in 0..40 {
        if !wait_log_settled(bed, Duration::from_secs(10)) {
            panic!("the log never settled: {}", bed.stats());
        }
        let s1 = statelog(bed);
        let live = live_sessions(bed);
        let stats = bed.stats();
        let s2 = stats.get("statelog").cloned().unwrap();
        if num(&s2, "next_seq") != num(&s1, "next_seq") {
            continue;
        }
        let next_seq = num(&s1, "next_seq");
        let log = read_log(store, &cfg.instance);
        if log.last().map(|r| r.seq + 1) != Some(next_seq) {
            // Something was appended after our stats read; try again.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        // Shape: [checkpoint, inputs...], contiguous seqs, small.
        let Some(Record {
            seq: cp_seq,
            body: Body::Checkpoint(cp),
            ..
        }) = log.first()
        else {
            panic!(
                "the log does not start with a checkpoint (first record {:?}, {} records)",
                log.first().map(|r| r.seq),
                log.len()
            );
        };
        let checkpoints = log
            .iter()
            .filter(|r| matches!(r.body, Body::Checkpoint(_)))
            .count();
        assert_eq!(
            checkpoints,
            1,
            "records before the latest checkpoint were not truncated: {} records from seq {}",
            log.len(),
            cp_seq
        );
        for (i, r) in log.iter().enumerate() {
            assert_eq!(r.seq, cp_seq + i as u64, "seq gap in the log");
        }
        assert!(
            (log.len() as u64) <= CHECKPOINT_EVERY + 1,
            "the log holds {} records (checkpoint_every {CHECKPOINT_EVERY})",
            log.len()
        );
        assert!(log.len() < 400, "the log holds {} records", log.len());

        // Replay: restore the checkpoint, apply the inputs after it.
        let state: CoreState = rmp_serde::from_slice(cp).unwrap();
        let checkpoint_sessions = state.sessions.len();
        eprintln!(
            "checkpoint seq {cp_seq}: {} bytes; sessions {} ({} B) servers {} ({} B) clients {} ({} B) timers {} ({} B) pools {} B bindings {}",
            cp.len(),
            state.sessions.len(), rmp_serde::to_vec(&state.sessions).unwrap().len(),
            state.servers.len(), rmp_serde::to_vec(&state.servers).unwrap().len(),
            state.clients.len(), rmp_serde::to_vec(&state.clients).unwrap().len(),
            state.timers.len(), rmp_serde::to_vec(&state.timers).unwrap().len(),
            rmp_serde::to_vec(&state.pools).unwrap().len(),
            state.bindings.len(),
        );
        let mut core = Core::restore(cfg.clone(), state).unwrap();
        for r in &log[1..] {
            match &r.body {
                Body::Input(i) => {
                    core.apply(i);
                }
                Body::Operator(_) => {}
                Body::Checkpoint(_) => unreachable!("counted above"),
            }
        }
        let replayed = serde_json::to_value(core.sessions()).unwrap();
        if replayed == live
            && core.session_count() as u64 == num(&stats, "sessions")
            && core.registration_count() as u64 == num(&stats, "registrations")
        {
            return LogShape {
                records: log.len(),
                checkpoint_seq: *cp_seq,
                checkpoint_bytes: cp.len(),
                checkpoint_sessions,
                next_seq,
            };
        }
        last = format!("replayed {replayed}\nlive {live}\nstats {stats}");
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("replay never matched the live state:\n{last}");
}

#[test]
fn thousands_of_calls_leave_a_bounded_log_that_replays_to_the_live_state() {
    let name = "thousands_of_calls_leave_a_bounded_log_that_replays_to_the_live_state";
    if !require_sipp(name) {
        return;
    }
    let (bed, store, _data) = bed_with_log(
        "statelog-bounded",
        &format!("checkpoint_every = {CHECKPOINT_EVERY}\n"),
    );
    // The core side answers every call (no -m: killed on drop).
    let _uas = bed
        .core_sipp("uas", "uas_basic.xml")
        .key("rtp_port", 42000)
        .spawn_bound(bed.dir.path(), READY);
    // Three long calls from another UE port stay up for the whole test
    // (killed on drop).
    let _long = Sipp::new("long", "uac_basic.xml")
        .local(bed.net.addr(host::UE, 5070))
        .remote(bed.access_sip())
        .key("rtp_port", 41500)
        .calls(LONG_CALLS)
        .rate(10, LONG_CALLS)
        .pause_ms(600_000)
        .spawn(bed.dir.path());
    let up = wait_until(Duration::from_secs(15), || {
        let s = bed.bgf.admin.sessions().ok()?;
        (s.len() == LONG_CALLS as usize
            && s.iter().all(|s| {
                s.pinholes
                    .first()
                    .is_some_and(|p| p.core.remote_rtp.is_some())
            }))
        .then_some(())
    });
    assert!(up.is_some(), "long calls not answered: {}", bed.stats());

    let uac = bed
        .ue_sipp("uac", "uac_basic.xml")
        .key("rtp_port", 41000)
        .calls(SHORT_CALLS)
        .rate(SHORT_RATE, 2 * SHORT_RATE)
        .pause_ms(200)
        // Generous timing: on a loaded 2-core machine an fsync can stall for
        // seconds; SIPp's default 5 retransmissions (~16 s) would give up on
        // a call the BGF still completes. 10 gives ~36 s.
        .arg("-max_retrans")
        .arg("10")
        .spawn(bed.dir.path())
        .wait(SIPP_T);
    // Every call must succeed: output commit with frequent checkpoints and
    // truncations may not cost a single call.
    let ok = uac.stat("SuccessfulCall(C)").unwrap_or(0);
    let failed = uac.stat("FailedCall(C)").unwrap_or(0);
    eprintln!("short calls: {ok} succeeded, {failed} failed");
    assert!(
        !uac.timed_out && ok == u64::from(SHORT_CALLS) && failed == 0,
        "{}",
        uac.describe()
    );
    assert!(
        wait_sessions(&bed, u64::from(LONG_CALLS), Duration::from_secs(90)),
        "short calls did not all end: {}",
        bed.stats()
    );
    // Ended calls' transactions linger (absorbing retransmissions) for
    // 64*T1 = 32 s and are part of the state; once their timers are gone,
    // nothing of the short calls may remain in a checkpoint.
    let quiet = wait_until(Duration::from_secs(90), || {
        (bed.bgf.admin.stat("timers").ok()? <= 2 * u64::from(LONG_CALLS)).then_some(())
    });
    assert!(
        quiet.is_some(),
        "the short calls' timers never expired: {}",
        bed.stats()
    );
    let after_short = statelog(&bed);
    let cps_before = num(&after_short, "checkpoints");

    // Drive the log past the next checkpoint with a few more short calls
    // (OPTIONS would not be logged).
    let mut extra = 0;
    for batch in 0..5 {
        let r = Sipp::new(&format!("extra{batch}"), "uac_basic.xml")
            .local(bed.net.addr(host::UE, 5080))
            .remote(bed.access_sip())
            .key("rtp_port", 41700)
            .calls(20)
            .rate(10, 20)
            .pause_ms(50)
            .spawn(bed.dir.path())
            .wait(SIPP_T);
        assert!(!r.timed_out, "{}", r.describe());
        extra += 20;
        assert!(
            wait_sessions(&bed, u64::from(LONG_CALLS), Duration::from_secs(90)),
            "extra calls did not all end: {}",
            bed.stats()
        );
        assert!(wait_log_settled(&bed, Duration::from_secs(10)));
        if num(&statelog(&bed), "checkpoints") > cps_before {
            break;
        }
    }
    let l = statelog(&bed);
    assert!(
        num(&l, "checkpoints") > cps_before,
        "no checkpoint after {extra} extra calls: {l}"
    );

    let shape = check_bounded_log_replays_to_live(&bed, &store);
    let l = statelog(&bed);
    eprintln!(
        "bounded log: {} short + {extra} extra calls, {} records assigned, {} checkpoints, {} truncated; \
         the log holds {} records from checkpoint seq {} ({} bytes, {} sessions in it)",
        SHORT_CALLS,
        shape.next_seq - 1,
        num(&l, "checkpoints"),
        num(&l, "truncated_records"),
        shape.records,
        shape.checkpoint_seq,
        shape.checkpoint_bytes,
        shape.checkpoint_sessions,
    );
    // The checkpoint holds the 3 long calls and at most the extra calls'
    // transactions: nothing of the 2 000 short calls.
    assert!(
        shape.checkpoint_bytes < 256 * 1024,
        "checkpoint of {} bytes",
        shape.checkpoint_bytes
    );
    // The log is small although the calls produced many times more records.
    assert!(
        shape.next_seq > 10 * CHECKPOINT_EVERY * 5,
        "too few records for the test to mean anything: {l}"
    );
    assert_eq!(
        bed.stat("sessions"),
        u64::from(LONG_CALLS),
        "{}",
        bed.stats()
    );
    assert_eq!(
        l.get("degraded"),
        Some(&serde_json::Value::Bool(false)),
        "{l}"
    );
}

#[test]
fn media_flows_both_ways_while_the_store_is_down_and_the_call_ends_normally() {
    let name = "media_flows_both_ways_while_the_store_is_down_and_the_call_ends_normally";
    if !require_sipp(name) {
        return;
    }
    let (bed, mut store, data) = bed_with_log("statelog-media-down", "append_timeout_ms = 300\n");
    let ue_rtp = bed.net.addr(host::UE, 41000);
    let core_rtp = bed.net.addr(host::CORE_PEER, 42000);
    let mut ue = RtpEndpoint::bind(ue_rtp).unwrap();
    let mut core = RtpEndpoint::bind(core_rtp).unwrap();
    let uas = bed
        .core_sipp("uas", "uas_basic.xml")
        .key("rtp_port", core_rtp.port())
        .calls(1)
        .spawn_bound(bed.dir.path(), READY);
    // The call lasts long enough for: media up, store killed, degraded seen,
    // media watched for a while, store restarted. If the BYE comes while the
    // store is still down, it is held and SIPp retransmits it.
    let uac = bed
        .ue_sipp("uac", "uac_basic.xml")
        .key("rtp_port", ue_rtp.port())
        .calls(1)
        .pause_ms(15_000)
        .spawn(bed.dir.path());
    let p = bed
        .wait_answered_pinhole(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("call not answered: {}", bed.stats()));
    let (access_local, core_local) = (p.access.local, p.core.local);
    // 20 ms packets for up to 60 s; stopped below.
    ue.start_sending(access_local, 0x0000_ae01, 3000);
    core.start_sending(core_local, 0x0000_c0e1, 3000);
    assert!(
        ue.wait_from(access_local, 20, Duration::from_secs(5)),
        "UE got no media: {}",
        ue.summary()
    );
    assert!(
        core.wait_from(core_local, 20, Duration::from_secs(5)),
        "core got no media: {}",
        core.summary()
    );

    store.kill();
    let went_degraded = wait_until(Duration::from_secs(10), || {
        degraded(&bed).filter(|d| *d).map(|_| ())
    });
    assert!(went_degraded.is_some(), "never degraded: {}", bed.stats());
    // From here the store is known dead: media must keep coming for ≥ 1 s.
    let (ue0, core0) = (
        ue.received_from(access_local),
        core.received_from(core_local),
    );
    let t0 = std::time::Instant::now();
    // 1.2 s at 50 packets/s is 60 packets per direction; ask for 40.
    let flowing = wait_until(Duration::from_secs(10), || {
        (t0.elapsed() >= Duration::from_millis(1200)
            && ue.received_from(access_local) >= ue0 + 40
            && core.received_from(core_local) >= core0 + 40)
            .then_some(())
    });
    assert!(
        flowing.is_some(),
        "media stopped while the store was down: UE {} → {}, core {} → {}\n{}\n{}\n{}",
        ue0,
        ue.received_from(access_local),
        core0,
        core.received_from(core_local),
        ue.summary(),
        core.summary(),
        bed.stats()
    );
    assert_eq!(
        degraded(&bed),
        Some(true),
        "still degraded while the store is down"
    );
    assert_eq!(
        bed.stat("sessions"),
        1,
        "the call must continue: {}",
        bed.stats()
    );

    // The store returns on the same data and port: degraded clears, the
    // call ends normally (its BYE is logged and released).
    store = StatelogProcess::start(store.addr, &store.data.clone(), data.path())
        .unwrap_or_else(|e| panic!("{e}"));
    let cleared = wait_until(Duration::from_secs(15), || {
        degraded(&bed).filter(|d| !*d).map(|_| ())
    });
    assert!(cleared.is_some(), "degraded never cleared: {}", bed.stats());
    let uac = uac.wait(SIPP_T);
    assert!(uac.ok(), "the call failed: {}", uac.describe());
    let uas = uas.wait(SIPP_T);
    assert!(uas.ok(), "{}", uas.describe());
    ue.stop_sending();
    core.stop_sending();
    assert!(bed.wait_idle(Duration::from_secs(15)), "{}", bed.stats());
    let l = statelog(&bed);
    assert_eq!(num(&l, "held"), 0, "{l}");
    assert!(num(&l, "append_failures") >= 1, "{l}");
    assert!(
        bed.stat("media.forwarded_packets") >= 2 * 100,
        "{}",
        bed.stats()
    );
    drop(store);
}
