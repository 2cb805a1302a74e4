//! Calls through one active BGF: SIPp on the access side (UE) → `bgf active` →
//! SIPp on the core side. Signalling outcomes and the session counters.

use bgf_tests::sipp::require_sipp;
use bgf_tests::Bed;
use std::time::Duration;

const SIPP_T: Duration = Duration::from_secs(90);
const READY: Duration = Duration::from_secs(10);

fn settle(bed: &Bed) {
    assert!(
        bed.wait_idle(Duration::from_secs(15)),
        "sessions/pinholes did not return to 0: {}",
        bed.stats()
    );
}

#[test]
fn twenty_basic_calls_complete_and_sessions_are_released() {
    if !require_sipp("twenty_basic_calls_complete_and_sessions_are_released") {
        return;
    }
    let bed = Bed::start("calls-basic");
    let uas = bed
        .core_sipp("uas", "uas_basic.xml")
        .key("rtp_port", 42000)
        .calls(20)
        .spawn_bound(bed.dir.path(), READY);
    let uac = bed
        .ue_sipp("uac", "uac_basic.xml")
        .key("rtp_port", 41000)
        .calls(20)
        .rate(10, 20)
        .pause_ms(500)
        .spawn(bed.dir.path())
        .wait(SIPP_T);
    uac.assert_all_succeeded(20);
    let uas = uas.wait(SIPP_T);
    assert!(uas.ok(), "{}", uas.describe());
    settle(&bed);
    let s = bed.stats();
    assert_eq!(bed.stat("core.sessions_created"), 20, "{s}");
    assert_eq!(bed.stat("core.sessions_ended"), 20, "{s}");
    assert_eq!(bed.stat("sessions"), 0, "{s}");
}

#[test]
fn call_over_tcp_on_the_access_side() {
    if !require_sipp("call_over_tcp_on_the_access_side") {
        return;
    }
    let bed = Bed::start("calls-tcp");
    let uas = bed
        .core_sipp("uas", "uas_basic.xml")
        .key("rtp_port", 42000)
        .calls(1)
        .spawn_bound(bed.dir.path(), READY);
    let uac = bed
        .ue_sipp("uac", "uac_basic.xml")
        .tcp()
        .key("rtp_port", 41000)
        .calls(1)
        .pause_ms(500)
        .spawn(bed.dir.path())
        .wait(SIPP_T);
    assert!(uac.ok(), "{}", uac.describe());
    let uas = uas.wait(SIPP_T);
    assert!(uas.ok(), "{}", uas.describe());
    assert!(
        uac.read("messages.log").contains("SIP/2.0/TCP"),
        "the UE side did not use TCP"
    );
    settle(&bed);
    assert_eq!(bed.stat("core.sessions_created"), 1);
}

#[test]
fn hold_and_resume_with_reinvites() {
    if !require_sipp("hold_and_resume_with_reinvites") {
        return;
    }
    let bed = Bed::start("calls-hold");
    let uas = bed
        .core_sipp("uas", "uas_dialog.xml")
        .key("rtp_port", 42000)
        .calls(1)
        .spawn_bound(bed.dir.path(), READY);
    let uac = bed
        .ue_sipp("uac", "uac_hold.xml")
        .key("rtp_port", 41000)
        .calls(1)
        .pause_ms(500)
        .spawn(bed.dir.path())
        .wait(SIPP_T);
    assert!(uac.ok(), "{}", uac.describe());
    let uas = uas.wait(SIPP_T);
    assert!(uas.ok(), "{}", uas.describe());
    // The core side saw the hold offer and the UE got the recvonly answer.
    assert!(uas.read("messages.log").contains("a=sendonly"));
    assert!(uac.read("messages.log").contains("a=recvonly"));
    settle(&bed);
    assert_eq!(bed.stat("core.sessions_ended"), 1);
}

#[test]
fn cancel_of_an_early_dialog_gets_487_and_releases_everything() {
    if !require_sipp("cancel_of_an_early_dialog_gets_487_and_releases_everything") {
        return;
    }
    let bed = Bed::start("calls-cancel");
    let uas = bed
        .core_sipp("uas", "uas_cancel.xml")
        .calls(3)
        .spawn_bound(bed.dir.path(), READY);
    let uac = bed
        .ue_sipp("uac", "uac_cancel.xml")
        .key("rtp_port", 41000)
        .calls(3)
        .rate(5, 3)
        .spawn(bed.dir.path())
        .wait(SIPP_T);
    assert!(uac.ok(), "{}", uac.describe());
    assert_eq!(uac.stat("SuccessfulCall(C)"), Some(3), "{}", uac.describe());
    let msgs = uac.read("messages.log");
    assert!(msgs.contains("SIP/2.0 487"), "no 487 reached the UE");
    let uas = uas.wait(SIPP_T);
    assert!(uas.ok(), "{}", uas.describe());
    settle(&bed);
    let s = bed.stats();
    assert_eq!(bed.stat("pinholes"), 0, "{s}");
    assert_eq!(
        bed.stat("core.sessions_created"),
        bed.stat("core.sessions_ended"),
        "{s}"
    );
}

#[test]
fn media_inactivity_ends_the_call_with_bye_to_both_sides() {
    if !require_sipp("media_inactivity_ends_the_call_with_bye_to_both_sides") {
        return;
    }
    let bed = Bed::start_with("calls-inactivity", |_, c| c.inactivity_timeout_s = 2);
    let uas = bed
        .core_sipp("uas", "uas_basic.xml")
        .key("rtp_port", 42000)
        .calls(1)
        .spawn_bound(bed.dir.path(), READY);
    // No RTP at all: after ~2 s the BGF must hang up both parties.
    let uac = bed
        .ue_sipp("uac", "uac_wait_bye.xml")
        .key("rtp_port", 41000)
        .calls(1)
        .spawn(bed.dir.path())
        .wait(Duration::from_secs(40));
    assert!(uac.ok(), "UE did not get a BYE: {}", uac.describe());
    let uas = uas.wait(Duration::from_secs(40));
    assert!(uas.ok(), "core did not get a BYE: {}", uas.describe());
    settle(&bed);
    assert_eq!(bed.stat("core.sessions_ended"), 1);
}
