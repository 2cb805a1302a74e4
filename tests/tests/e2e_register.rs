//! Registration through the BGF and a terminating call from the core to the
//! Contact the BGF gave the core.

use bgf_tests::net::host;
use bgf_tests::sipp::{logged_contact_uri, require_sipp};
use bgf_tests::util::{wait_udp_bound, wait_until};
use bgf_tests::Bed;
use std::time::Duration;

const SIPP_T: Duration = Duration::from_secs(60);

#[test]
fn register_then_a_terminating_call_from_the_core_reaches_the_ue() {
    if !require_sipp("register_then_a_terminating_call_from_the_core_reaches_the_ue") {
        return;
    }
    let bed = Bed::start("register");
    // 1. REGISTER: UE → BGF → registrar stand-in (which logs the Contact it got).
    let registrar = bed
        .core_sipp("registrar", "core_registrar.xml")
        .calls(1)
        .spawn_bound(bed.dir.path(), Duration::from_secs(10));
    let reg = bed
        .ue_sipp("ue-register", "ue_register.xml")
        .calls(1)
        .spawn(bed.dir.path())
        .wait(SIPP_T);
    assert!(reg.ok(), "{}", reg.describe());
    let registrar = registrar.wait(SIPP_T);
    assert!(registrar.ok(), "{}", registrar.describe());
    let contact = logged_contact_uri(&registrar.read("logs.log"))
        .unwrap_or_else(|| panic!("registrar logged no Contact: {}", registrar.describe()));
    // The core must only ever see the BGF's core address, never the UE's.
    let core_ip = bed.core_sip().ip().to_string();
    assert!(
        contact.contains(&core_ip),
        "Contact given to the core is {contact}, expected the BGF core address {core_ip}"
    );
    assert!(
        !contact.contains(&bed.ue_sip().ip().to_string()),
        "UE address leaked to the core: {contact}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || {
            (bed.bgf.admin.stat("registrations").ok()? == 1).then_some(())
        })
        .is_some(),
        "registrations != 1: {}",
        bed.stats()
    );

    // 2. Terminating call: core → BGF core address (R-URI = that Contact) → UE.
    let ue = bed
        .ue_sipp("ue-answer", "uas_basic.xml")
        .key("rtp_port", 41000)
        .calls(1)
        .spawn(bed.dir.path());
    assert!(wait_udp_bound(bed.ue_sip(), Duration::from_secs(10)));
    let call = bgf_tests::Sipp::new("core-call", "uac_to_uri.xml")
        .local(bed.net.addr(host::CORE_PEER, 5070))
        .remote(bed.core_sip())
        .key("ruri", &contact)
        .key("rtp_port", 42000)
        .calls(1)
        .pause_ms(500)
        .spawn(bed.dir.path())
        .wait(SIPP_T);
    assert!(call.ok(), "{}", call.describe());
    let ue = ue.wait(SIPP_T);
    assert!(ue.ok(), "{}", ue.describe());
    // The UE saw the BGF's access media address, not the core's.
    let ue_msgs = ue.read("messages.log");
    assert!(
        ue_msgs.contains(&format!("c=IN IP4 {}", bed.bgf.config.access_media_ip)),
        "UE did not get SDP pointing at the BGF access media address"
    );
    assert!(bed.wait_idle(Duration::from_secs(15)), "{}", bed.stats());
}
