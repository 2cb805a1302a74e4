//! The N+1 namespace topology itself: every node reaches the service
//! addresses it should over the right LAN (IPv4 and IPv6), a black-holed
//! switch port silences a node and healing restores it, and teardown leaves
//! no namespace behind.

use bgf_tests::netns::{require_root, Lan, Topology};

fn ping(t: &Topology, node: &str, addr: std::net::IpAddr) -> bool {
    t.command(&t.ns(node), "ping")
        .args(["-c", "1", "-W", "2", &addr.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn topology_connects_and_cuts() {
    if !require_root("topology_connects_and_cuts") {
        return;
    }
    let t = Topology::new("tnt", 2).unwrap();
    for k in 1..=2 {
        assert!(ping(&t, "ue", t.service_v4(k, Lan::Access)), "UE → a{k} v4");
        assert!(ping(&t, "ue", t.service_v6(k)), "UE → a{k} v6");
        assert!(ping(&t, "core", t.service_v4(k, Lan::Core)), "core → a{k}");
        assert!(
            ping(&t, "sb", t.active_node(k, Lan::Mgmt)),
            "sb → a{k} mgmt"
        );
        assert!(ping(&t, &format!("a{k}"), t.store()), "a{k} → store");
    }
    assert!(ping(&t, "sb", t.store()));
    // The UE LAN does not reach the core LAN (no routing between them).
    assert!(!ping(&t, "ue", t.core_peer()));

    t.black_hole("a1", Lan::Access).unwrap();
    assert!(!ping(&t, "ue", t.service_v4(1, Lan::Access)), "black-holed");
    assert!(
        ping(&t, "ue", t.service_v4(2, Lan::Access)),
        "a2 unaffected"
    );
    t.heal("a1", Lan::Access).unwrap();
    assert!(ping(&t, "ue", t.service_v4(1, Lan::Access)), "healed");

    let mac = t.mac("a1", Lan::Access).unwrap();
    assert_eq!(mac.len(), 17, "{mac}");
    let entry = t.neighbour("ue", t.service_v4(1, Lan::Access)).unwrap();
    assert!(entry.contains(&mac), "{entry} vs {mac}");

    let ns = t.ns("sw");
    drop(t);
    assert!(!std::path::Path::new("/run/netns").join(ns).exists());
}
