//! Output commit end to end: `bgf active` with `[statelog] backend =
//! "embedded"` against a real `bgf statelog` server. SIPp calls complete
//! through the commit; the captured log replays into a fresh core equal to
//! the live one; a dead store degrades the instance (503 for new INVITEs,
//! calls in progress continue) and its return clears it; a fence stops the
//! instance with exit 3 without releasing held messages.

use bgf_tests::logcheck::{self, num, rt, statelog};
use bgf_tests::net::host;
use bgf_tests::sipp::require_sipp;
use bgf_tests::sipraw::{status_code, RawSip};
use bgf_tests::util::TestDir;
use bgf_tests::{wait_until, Bed, Sipp, StatelogProcess};
use sip_control::{Core, CoreConfig};
use state_log::LogStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const SIPP_T: Duration = Duration::from_secs(90);
const READY: Duration = Duration::from_secs(10);

/// Start a statelog server on the test's .7 address, then the bed using it.
fn bed_with_log(name: &str, extra: &str) -> (Bed, StatelogProcess, TestDir) {
    let data = TestDir::new(&format!("{name}-log"));
    let mut store = None;
    let bed = Bed::start_with(name, |net, cfg| {
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

/// Replay the instance's whole log (from its checkpoint if any) into a
/// fresh core; returns it and the records read.
fn replay(st: &StatelogProcess, cfg: &CoreConfig) -> (Core, u64) {
    rt().block_on(async {
        let store = st.connect("standby:sb1").await;
        logcheck::replay(Arc::new(store), cfg).await
    })
}

fn assert_replay_equals_live(bed: &Bed, store: &StatelogProcess) {
    logcheck::assert_replay_equals_live(bed, |cfg| replay(store, cfg));
}

#[test]
fn sipp_calls_through_output_commit_and_the_log_replays_to_the_live_state() {
    if !require_sipp("sipp_calls_through_output_commit_and_the_log_replays_to_the_live_state") {
        return;
    }
    let (bed, store, _data) = bed_with_log("statelog-replay", "");
    let uas = bed
        .core_sipp("uas", "uas_basic.xml")
        .key("rtp_port", 42000)
        .calls(21)
        .spawn_bound(bed.dir.path(), READY);
    // One long call from another UE port, held up while the others run.
    let long = Sipp::new("long", "uac_basic.xml")
        .local(bed.net.addr(host::UE, 5070))
        .remote(bed.access_sip())
        .key("rtp_port", 41500)
        .calls(1)
        .pause_ms(12_000)
        .spawn(bed.dir.path());
    assert!(
        bed.wait_session_with_pinhole(Duration::from_secs(10))
            .is_some(),
        "long call not set up: {}",
        bed.stats()
    );
    let uac = bed
        .ue_sipp("uac", "uac_basic.xml")
        .key("rtp_port", 41000)
        .calls(20)
        .rate(10, 20)
        .pause_ms(300)
        .spawn(bed.dir.path())
        .wait(SIPP_T);
    uac.assert_all_succeeded(20);
    // The long call is still up: replay the log and compare.
    assert_eq!(bed.stat("sessions"), 1, "{}", bed.stats());
    assert_replay_equals_live(&bed, &store);
    let long = long.wait(SIPP_T);
    assert!(long.ok(), "{}", long.describe());
    let uas = uas.wait(SIPP_T);
    assert!(uas.ok(), "{}", uas.describe());
    assert!(bed.wait_idle(Duration::from_secs(15)), "{}", bed.stats());
    assert_replay_equals_live(&bed, &store);
    let l = statelog(&bed);
    assert_eq!(
        l.get("degraded"),
        Some(&serde_json::Value::Bool(false)),
        "{l}"
    );
    assert_eq!(num(&l, "held"), 0, "{l}");
    assert!(num(&l, "appends") > 0, "{l}");
}

fn invite(call_id: &str, from: SocketAddr, to: SocketAddr) -> Vec<u8> {
    format!(
        "INVITE sip:svc@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:ue@{from}>;tag=t-{call_id}\r\n\
         To: <sip:svc@{to}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:ue@{from}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn dead_store_degrades_refuses_new_calls_with_503_and_recovers() {
    if !require_sipp("dead_store_degrades_refuses_new_calls_with_503_and_recovers") {
        return;
    }
    let (bed, mut store, data) = bed_with_log("statelog-down", "append_timeout_ms = 300\n");
    let uas = bed
        .core_sipp("uas", "uas_basic.xml")
        .key("rtp_port", 42000)
        .calls(2)
        .spawn_bound(bed.dir.path(), READY);
    let long = Sipp::new("long", "uac_basic.xml")
        .local(bed.net.addr(host::UE, 5070))
        .remote(bed.access_sip())
        .key("rtp_port", 41500)
        .calls(1)
        .pause_ms(8_000)
        .spawn(bed.dir.path());
    assert!(
        bed.wait_answered_pinhole(Duration::from_secs(10)).is_some(),
        "long call not answered: {}",
        bed.stats()
    );

    store.kill();
    let degraded = wait_until(Duration::from_secs(10), || {
        (statelog(&bed).get("degraded")? == &serde_json::Value::Bool(true)).then_some(())
    });
    assert!(degraded.is_some(), "never degraded: {}", bed.stats());
    let raw = RawSip::bind(bed.net.addr(host::ROGUE, 5060)).unwrap();
    raw.send(
        bed.access_sip(),
        &invite("refused-1", raw.local(), bed.access_sip()),
    )
    .unwrap();
    let resp = raw
        .recv_response(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no answer to the INVITE: {}", bed.stats()));
    assert_eq!(status_code(&resp), Some(503), "{resp}");
    assert!(resp.contains("Retry-After:"), "{resp}");
    let l = statelog(&bed);
    assert!(num(&l, "refused_503") >= 1, "{l}");
    assert_eq!(
        bed.stat("sessions"),
        1,
        "the long call must continue: {}",
        bed.stats()
    );

    // The store returns on the same data and port: degraded clears.
    store = StatelogProcess::start(store.addr, &store.data.clone(), data.path())
        .unwrap_or_else(|e| panic!("{e}"));
    let cleared = wait_until(Duration::from_secs(15), || {
        (statelog(&bed).get("degraded")? == &serde_json::Value::Bool(false)).then_some(())
    });
    assert!(cleared.is_some(), "degraded never cleared: {}", bed.stats());
    let uac = bed
        .ue_sipp("uac", "uac_basic.xml")
        .key("rtp_port", 41000)
        .calls(1)
        .pause_ms(200)
        .spawn(bed.dir.path())
        .wait(SIPP_T);
    assert!(uac.ok(), "{}", uac.describe());
    let long = long.wait(SIPP_T);
    assert!(long.ok(), "the long call failed: {}", long.describe());
    let uas = uas.wait(SIPP_T);
    assert!(uas.ok(), "{}", uas.describe());
    assert!(bed.wait_idle(Duration::from_secs(15)), "{}", bed.stats());
    assert_replay_equals_live(&bed, &store);
    drop(store);
}

#[test]
fn fenced_instance_exits_3_and_sends_nothing_held() {
    let (mut bed, store, _data) = bed_with_log("statelog-fence", "");
    let peer = RawSip::bind(bed.core_peer()).unwrap();
    let ue = RawSip::bind(bed.ue_sip()).unwrap();
    let epoch = rt().block_on(async {
        let s = store.connect("standby:sb1").await;
        s.fence(&bed.bgf.config.name).await.unwrap()
    });
    // The active claimed epoch 1 at its start; this fence is 2.
    assert_eq!(epoch, 2);
    ue.send(
        bed.access_sip(),
        &invite("fenced-1", ue.local(), bed.access_sip()),
    )
    .unwrap();
    let status = bed.bgf.wait_exit(Duration::from_secs(15));
    let status = status.unwrap_or_else(|| panic!("bgf did not exit\n{}", bed.bgf.logs()));
    assert_eq!(status.code(), Some(3), "{}", bed.bgf.logs());
    assert!(
        peer.recv(Duration::from_millis(300)).is_none(),
        "the INVITE was forwarded"
    );
    assert!(
        ue.recv(Duration::from_millis(300)).is_none(),
        "the UE got an answer"
    );
    assert!(
        bed.bgf.logs().contains("fenced by the store"),
        "{}",
        bed.bgf.logs()
    );
}
