//! Both media I/O paths interoperate and measure the same thing: a UAC on
//! one path and a UAS on the other (so each packet the ring path sends is
//! received by the kernel's ordinary UDP stack, and vice versa), IPv4 on
//! 127.204.x and IPv6 on ::1. The ring path needs CAP_NET_RAW: without root
//! these tests only run socket ↔ socket.

use serde_json::Value;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_bgf-callgen");

fn root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

/// Runs 4 calls of 1.5 s UAC(`uac_io`) ↔ UAS(`uas_io`); returns the UAC's JSON.
fn run(tag: &str, uac_sip: &str, uas_sip: &str, uac_io: &str, uas_io: &str) -> Value {
    let dir = std::env::temp_dir().join(format!("callgen-io-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("ctl.sock");
    let _ = std::fs::remove_file(&sock);
    let json = dir.join("uac.json");
    let mut uas = Command::new(BIN)
        .args(["uas", "--local", uas_sip, "--rtp-ports", "21000-21999"])
        .args(["--io", uas_io, "--rtcp", "--max-run-s", "30"])
        .arg("--ctl-listen")
        .arg(format!("unix:{}", sock.display()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = Command::new(BIN)
        .args(["uac", "--local", uac_sip, "--proxy", uas_sip])
        .args(["--rtp-ports", "23000-23999", "--io", uac_io, "--rtcp"])
        .args(["--calls", "4", "--rate", "20", "--hold-ms", "1500"])
        .args(["--marker-at-s", "0.8", "--quiet"])
        .arg("--ctl-connect")
        .arg(format!("unix:{}", sock.display()))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let _ = uas.wait();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{tag}: uac failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    v
}

fn check(tag: &str, v: &Value, uac_io: &str, uas_io: &str) {
    let s = &v["summary"];
    assert_eq!(s["ok"], 4, "{tag}: {s}");
    assert_eq!(s["lost_packets_down"], 0, "{tag}");
    assert_eq!(s["lost_packets_up"], 0, "{tag}");
    assert_eq!(v["uac"]["media"]["io"], uac_io, "{tag}");
    assert_eq!(v["uas"]["media"]["io"], uas_io, "{tag}");
    for side in ["uac", "uas"] {
        let m = &v[side]["media"];
        let (tx, rx) = (
            m["tx_packets"].as_u64().unwrap(),
            m["rx_packets"].as_u64().unwrap(),
        );
        // ~75 packets per call and direction before the check; a few in flight at hang-up.
        assert!(tx >= 4 * 60, "{tag} {side}: tx {tx}");
        assert!(rx + 8 >= tx, "{tag} {side}: tx {tx} rx {rx}");
        assert_eq!(m["tx_errors"], 0, "{tag} {side}");
        assert_eq!(m["rx_ring_drops"], 0, "{tag} {side}");
        assert!(m["rtcp_rx"].as_u64().unwrap() >= 4, "{tag} {side}: {m}");
    }
    // Every call passed the check: re-INVITE to a new port, media on it.
    for c in v["calls"].as_array().unwrap() {
        let chk = &c["check"];
        assert!(chk["new_port_packets"].as_u64().unwrap() >= 5, "{tag}: {c}");
        let gap = c["down"]["max_gap_ms"].as_f64().unwrap();
        assert!(gap < 500.0, "{tag}: {c}");
    }
}

#[test]
fn socket_to_socket_ipv4() {
    let v = run(
        "ss4",
        "127.204.0.1:5060",
        "127.204.0.2:5060",
        "socket",
        "socket",
    );
    check("ss4", &v, "socket", "socket");
}

#[test]
fn ring_uac_socket_uas_ipv4() {
    if !root() {
        eprintln!("skipped: the ring path needs CAP_NET_RAW");
        return;
    }
    let v = run(
        "rs4",
        "127.204.1.1:5060",
        "127.204.1.2:5060",
        "ring",
        "socket",
    );
    check("rs4", &v, "ring", "socket");
}

#[test]
fn socket_uac_ring_uas_ipv4() {
    if !root() {
        eprintln!("skipped: the ring path needs CAP_NET_RAW");
        return;
    }
    let v = run(
        "sr4",
        "127.204.2.1:5060",
        "127.204.2.2:5060",
        "socket",
        "ring",
    );
    check("sr4", &v, "socket", "ring");
}

#[test]
fn ring_both_ways_ipv6() {
    if !root() {
        eprintln!("skipped: the ring path needs CAP_NET_RAW");
        return;
    }
    // Both on ::1 (distinct SIP ports and RTP ranges): each ring sees the
    // other side's packets and must ignore them (not its ports).
    let v = run("rr6", "[::1]:5071", "[::1]:5072", "ring", "ring");
    check("rr6", &v, "ring", "ring");
}

#[test]
fn ring_uac_socket_uas_ipv6() {
    if !root() {
        eprintln!("skipped: the ring path needs CAP_NET_RAW");
        return;
    }
    let v = run("rs6", "[::1]:5073", "[::1]:5074", "ring", "socket");
    check("rs6", &v, "ring", "socket");
}
