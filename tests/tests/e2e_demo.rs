//! The README's main job stays working: the failover drill `bgf-demo` runs
//! (`bgf_tests::demo::run`), with 5 calls per active.
//!
//! - `demo_drill_namespaces`: as root, in network namespaces (the real
//!   address takeover); SKIP when not root.
//! - `demo_drill_loopback`: on loopback with the address step simulated
//!   (`standby.address_step = "none"`) — the path a non-root user gets;
//!   runs as any user.
//!
//! Both: every call survives the `kill -9` of active 1, the takeover
//! report has every phase, and the JSON / SVG reports are written.

use bgf_tests::demo::{run, DemoOptions};
use bgf_tests::netns::require_root;
use bgf_tests::TestDir;

fn drill(namespaces: bool, prefix: &str, name: &str) {
    let out_dir = TestDir::new(name);
    let o = DemoOptions {
        calls: 5,
        namespaces,
        prefix: prefix.into(),
        report_dir: out_dir.join("reports"),
        ..DemoOptions::default()
    };
    let out = run(&o).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.calls, 10, "{out:?}");
    assert!(out.passed(), "calls lost: {out:?}");
    for k in [
        "fenced_us",
        "drained_us",
        "addresses_up_us",
        "serving_us",
        "first_announcement_us",
        "first_media_us",
        "first_sip_us",
    ] {
        assert!(out.takeover[k].is_u64(), "no {k}: {}", out.takeover);
    }
    assert_eq!(out.takeover["instance"], "bgf1", "{}", out.takeover);
    // The drill report: both actives' traffic, the failed one marked,
    // a timeline from the fault through detection to first media.
    let d = &out.drill;
    assert_eq!(d["drill"]["target"], "bgf1", "{d}");
    assert_eq!(d["drill"]["mode"], "kill", "{d}");
    let t = d["traffic"].as_array().unwrap();
    assert_eq!(t.len(), 2, "{d}");
    assert_eq!(t[0]["failed_instance"], true, "{d}");
    assert_eq!(t[0]["gaps_ms"].as_array().map(|g| g.len()), Some(5), "{d}");
    let events: Vec<&str> = d["timeline_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for e in ["fault (kill)", "fenced", "serving", "first media forwarded"] {
        assert!(events.contains(&e), "{e} missing from {events:?}");
    }
    assert!(
        events.iter().any(|e| e.starts_with("detected (")),
        "{events:?}"
    );
    assert!(
        d["phases_ms"]["detection"]
            .as_f64()
            .is_some_and(|v| v >= 0.0),
        "{d}"
    );
    for f in [
        "drill.json",
        "drill.txt",
        "calls-bgf1.json",
        "calls-bgf1.svg",
        "calls-bgf2.json",
        "calls-bgf2.svg",
    ] {
        let p = out.report_dir.join(f);
        assert!(
            std::fs::metadata(&p).is_ok_and(|m| m.len() > 0),
            "{} missing",
            p.display()
        );
    }
}

#[test]
fn demo_drill_namespaces() {
    if !require_root("demo_drill_namespaces") {
        return;
    }
    drill(true, "wdemo", "demo-ns");
}

#[test]
fn demo_drill_loopback() {
    drill(false, "unused", "demo-lo");
}
