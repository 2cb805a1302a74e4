//! Harness self-check with no BGF in between: every SIPp scenario pair of
//! `tests/sipp/` completes when the caller talks straight to the answerer. If
//! one of these fails, the scenario is wrong, not the product.

use bgf_tests::net::host;
use bgf_tests::sipp::require_sipp;
use bgf_tests::{Sipp, TestDir, TestNet};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn pair(name: &str, uac: &str, uas: &str, extra_args: &[&str], pause_ms: u64) {
    if !require_sipp(name) {
        return;
    }
    let net = TestNet::new();
    let dir = TestDir::new(name);
    let uas_addr = net.addr(host::CORE_PEER, 5060);
    let mut server = Sipp::new("uas", uas)
        .local(uas_addr)
        .key("rtp_port", 42000)
        .calls(2)
        .pause_ms(pause_ms);
    for a in extra_args {
        server = server.arg(*a);
    }
    let server = server.spawn(dir.path());
    std::thread::sleep(Duration::from_millis(300));
    let mut client = Sipp::new("uac", uac)
        .local(net.addr(host::UE, 5060))
        .remote(uas_addr)
        .key("rtp_port", 41000)
        .key("rtp_port2", 41002)
        .calls(2)
        .rate(10, 10)
        .pause_ms(pause_ms);
    for a in extra_args {
        client = client.arg(*a);
    }
    let c = client.spawn(dir.path()).wait(T);
    assert!(c.ok(), "{}", c.describe());
    assert_eq!(c.stat("SuccessfulCall(C)"), Some(2), "{}", c.describe());
    let s = server.wait(T);
    // Over TCP the caller's exit closes the connection under the answerer's
    // last call (in its timewait), which SIPp counts as failed: check UDP only.
    if !extra_args.contains(&"t1") {
        assert!(s.ok(), "{}", s.describe());
    }
}

#[test]
fn basic_pair() {
    pair("pair-basic", "uac_basic.xml", "uas_basic.xml", &[], 200);
}

#[test]
fn basic_pair_tcp() {
    pair(
        "pair-tcp",
        "uac_basic.xml",
        "uas_basic.xml",
        &["-t", "t1"],
        200,
    );
}

#[test]
fn reinvite_pair() {
    pair(
        "pair-reinvite",
        "uac_reinvite.xml",
        "uas_dialog.xml",
        &[],
        200,
    );
}

#[test]
fn hold_pair() {
    pair("pair-hold", "uac_hold.xml", "uas_dialog.xml", &[], 200);
}

#[test]
fn cancel_pair() {
    pair("pair-cancel", "uac_cancel.xml", "uas_cancel.xml", &[], 200);
}

#[test]
fn early_media_pair() {
    pair(
        "pair-early",
        "uac_early_media.xml",
        "uas_early_media.xml",
        &[],
        300,
    );
}

#[test]
fn register_then_terminating_pair() {
    if !require_sipp("register_then_terminating_pair") {
        return;
    }
    let net = TestNet::new();
    let dir = TestDir::new("pair-register");
    let registrar = net.addr(host::CORE_PEER, 5060);
    let ue = net.addr(host::UE, 5060);
    let reg_srv = Sipp::new("registrar", "core_registrar.xml")
        .local(registrar)
        .calls(1)
        .spawn(dir.path());
    std::thread::sleep(Duration::from_millis(300));
    let r = Sipp::new("ue-register", "ue_register.xml")
        .local(ue)
        .remote(registrar)
        .calls(1)
        .spawn(dir.path())
        .wait(T);
    assert!(r.ok(), "{}", r.describe());
    let reg = reg_srv.wait(T);
    assert!(reg.ok(), "{}", reg.describe());
    let contact = bgf_tests::sipp::logged_contact_uri(&reg.read("logs.log"))
        .unwrap_or_else(|| panic!("no CONTACT logged: {}", reg.describe()));
    assert_eq!(contact, format!("sip:ue1@{ue};transport=UDP"));
    let ue_srv = Sipp::new("ue-answer", "uas_basic.xml")
        .local(ue)
        .key("rtp_port", 41000)
        .calls(1)
        .spawn(dir.path());
    std::thread::sleep(Duration::from_millis(300));
    let call = Sipp::new("core-call", "uac_to_uri.xml")
        .local(net.addr(host::CORE_PEER, 5070))
        .remote(ue)
        .key("ruri", &contact)
        .key("rtp_port", 42000)
        .calls(1)
        .pause_ms(200)
        .spawn(dir.path())
        .wait(T);
    assert!(call.ok(), "{}", call.describe());
    let a = ue_srv.wait(T);
    assert!(a.ok(), "{}", a.describe());
}
