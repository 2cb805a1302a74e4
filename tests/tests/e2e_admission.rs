//! Media admission control: an active whose open-files limit leaves room
//! for only a few dozen sessions' media sockets answers the calls beyond it
//! with 503 instead of setting them up without media — every call it did
//! answer has its pinholes, and the refusals are counted and alarmed.

use bgf_tests::sipp::require_sipp;
use bgf_tests::Bed;
use std::time::Duration;

#[test]
fn calls_beyond_the_descriptor_budget_get_503_not_silence() {
    if !require_sipp("calls_beyond_the_descriptor_budget_get_503_not_silence") {
        return;
    }
    // (1 200 - 1 024 reserved) / 4 sockets = 44 pinholes; a new INVITE is
    // admitted while a 2-stream session still fits (≤ 42 pinholes in use):
    // 43 one-stream calls.
    let bed = Bed::start_with("admission", |_, c| c.nofile = Some(1200));
    let uas = bed
        .core_sipp("uas", "uas_basic.xml")
        .key("rtp_port", 42000)
        .calls(60)
        .spawn_bound(bed.dir.path(), Duration::from_secs(10));
    // 60 calls in one second, each held 20 s: all are up at once.
    let uac = bed
        .ue_sipp("uac", "uac_basic.xml")
        .key("rtp_port", 41000)
        .calls(60)
        .rate(60, 60)
        .pause_ms(20_000)
        .spawn(bed.dir.path())
        .wait(Duration::from_secs(120));
    let ok = uac.stat("SuccessfulCall(C)").unwrap_or(0);
    let failed = uac.stat("FailedCall(C)").unwrap_or(0);
    let s = bed.stats();
    let refused = bed.stat("transport.refused_media");
    assert_eq!(ok + failed, 60, "{}", uac.describe());
    assert_eq!(ok, 43, "sessions admitted: {s}\n{}", uac.describe());
    // 17 calls refused; an INVITE retransmitted before its 503 arrived (a
    // loaded machine) is refused again and counted again.
    assert_eq!(failed, 17, "{}", uac.describe());
    assert!(refused >= 17, "refusals counted: {s}");
    assert_eq!(
        s["transport"]["sip_responses"]["sent"][4].as_u64(),
        Some(refused),
        "every refusal is a 503 to the UE: {s}"
    );
    let logs = bed.bgf.logs();
    assert!(logs.contains("ALARM new calls refused with 503"), "{logs}");
    assert!(
        !logs.contains("Too many open files"),
        "no session was set up without its sockets: {logs}"
    );
    drop(uas);
}
