//! The DPDK media backend end to end (feature `dpdk`; needs root and the
//! system DPDK): `bgf active` / `bgf standby` built with `--features dpdk`
//! in network namespaces, each BGF node with its kernel interfaces
//! (`acc`/`cor`/`mgmt`: SIP, heartbeats, admin) and two more veths
//! (`dacc`/`dcor`) on the same LANs that the DPDK port drivers own
//! (`net_af_packet` — or `net_af_xdp` — with `--no-huge --no-pci`). The
//! media addresses are on no kernel interface: the data plane answers
//! ARP/ND for them, resolves the peers and, on takeover, announces them.
//!
//! Run: `cargo test -p bgf-tests --features dpdk --test e2e_dpdk`.
#![cfg(feature = "dpdk")]

use bgf_tests::admin::AdminClient;
use bgf_tests::callgen::callgen_binary;
use bgf_tests::cluster::{bracket, s, spawn_bgf, start_statelog, PKI_LINES, TOKEN};
use bgf_tests::netns::{require_root, Lan, Topology};
use bgf_tests::proc::Proc;
use bgf_tests::util::{wait_until, TestDir};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// One DPDK test at a time: each runs a busy-polling data plane per BGF.
static SERIAL: Mutex<()> = Mutex::new(());

/// `bgf` built with `--features dpdk` into the tests' target directory.
fn bgf_dpdk() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // <target>/<profile>/deps/e2e_dpdk-…
        let profile_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .ok_or("no profile dir")?
            .to_path_buf();
        let profile = profile_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or("no profile name")?;
        let target = profile_dir.parent().ok_or("no target dir")?;
        let root = bgf_tests::build::workspace_root();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(&root)
            .env("CARGO_TARGET_DIR", target)
            .args([
                "build",
                "-q",
                "-p",
                "bgf",
                "--bin",
                "bgf",
                "--features",
                "dpdk",
            ]);
        if profile == "release" {
            cmd.arg("--release");
        }
        let st = cmd.status().map_err(|e| format!("cargo build: {e}"))?;
        if !st.success() {
            return Err(format!("cargo build -p bgf --features dpdk failed: {st}"));
        }
        Ok(profile_dir.join("bgf"))
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The media (DPDK-owned) addresses of active k.
fn media_v4(k: u8, lan: Lan) -> IpAddr {
    let third = if lan == Lan::Access { 0 } else { 1 };
    IpAddr::V4(Ipv4Addr::new(198, 18, third, 40 + k))
}

fn media_v6(k: u8) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0xfd00,
        0xa,
        0,
        0,
        0,
        0,
        0,
        0x40 + u16::from(k),
    ))
}

/// Adds the DPDK veths `dacc`/`dcor` to `node` (bridged to the access /
/// core LANs, no addresses, TX checksum offload off on both ends).
fn add_dpdk_ifs(t: &Topology, node: &str) {
    let ns = t.ns(node);
    let sw = t.ns("sw");
    for (ifname, bridge) in [("dacc", "acc"), ("dcor", "cor")] {
        let peer = format!("{node}{ifname}");
        t.ip(
            &ns,
            &[
                "link", "add", ifname, "type", "veth", "peer", "name", &peer, "netns", &sw,
            ],
        )
        .unwrap();
        t.ip(&sw, &["link", "set", &peer, "master", bridge])
            .unwrap();
        t.ip(&sw, &["link", "set", &peer, "up"]).unwrap();
        t.ip(&ns, &["link", "set", ifname, "up"]).unwrap();
        for (n, i) in [(&ns, ifname), (&sw, peer.as_str())] {
            let st = Command::new("ip")
                .args(["netns", "exec", n, "ethtool", "-K", i, "tx", "off"])
                .output()
                .unwrap();
            assert!(st.status.success(), "ethtool -K {i} tx off: {st:?}");
        }
    }
}

/// `[media]` for DPDK on `dacc`/`dcor` with the given driver.
fn media_toml(driver: &str, lcore: u8, gateway_free: bool) -> String {
    let dev = |n: u8, iface: &str| match driver {
        "af_xdp" => format!("net_af_xdp{n},iface={iface},start_queue=0,queue_count=1"),
        _ => format!("net_af_packet{n},iface={iface}"),
    };
    let _ = gateway_free;
    format!(
        r#"[media]
backend = "dpdk"

[media.dpdk]
eal_args = ["-l", "{lcore}", "--no-huge", "-m", "256", "--no-pci", "--no-shconf", "--no-telemetry", "--log-level", "lib.eal:notice"]
idle_sleep_us = 50
mbufs = 4095

[media.dpdk.access]
device = "{acc}"

[media.dpdk.core]
device = "{cor}"
"#,
        acc = dev(0, "dacc"),
        cor = dev(1, "dcor"),
    )
}

fn active_toml(t: &Topology, v6: bool, driver: &str, ha: bool) -> String {
    let (sip, media) = if v6 {
        (t.service_v6(1), media_v6(1))
    } else {
        (t.service_v4(1, Lan::Access), media_v4(1, Lan::Access))
    };
    let mgmt = t.active_node(1, Lan::Mgmt);
    let mut text = format!(
        r#"[instance]
name = "bgf1"
secret = "dpdk1-Vn4Qz8Lm2Xr7Kp5Tw9Hc3Bj6Fy1Gd0s"

[access]
sip = "{access_sip}"
media_ip = "{media}"
rtp_ports = "20000-29999"
latching = true
require_registration = false

[core]
sip = "{core_sip}"
media_ip = "{core_media}"
rtp_ports = "30000-39999"
latching = false
next_hop = "{next_hop}"

[limits]
{limits}{rates}
{media_section}
[log]
format = "json"
level = "info"

[admin]
listen = "{mgmt}:8080"
token = "{TOKEN}"
"#,
        access_sip = bracket(sip, 5060),
        core_sip = bracket(t.service_v4(1, Lan::Core), 5060),
        core_media = media_v4(1, Lan::Core),
        next_hop = bracket(t.core_peer(), 5060),
        media_section = media_toml(driver, 0, true),
        limits = bgf_tests::bgfproc::limits_toml(&bgf_tests::bgfproc::lab_limits()),
        rates = bgf_tests::bgfproc::LAB_RATES,
    );
    if ha {
        text += &format!(
            r#"
[statelog]
backend = "embedded"
addr = "{store}:7400"
append_timeout_ms = 1000
{creds}
[ha]
heartbeat = "{mgmt}:7500"
standby = "{sb}:7501"
interval_ms = 50
miss_count = 5
"#,
            store = t.store(),
            creds = PKI_LINES.replace("ROLE-NAME", "active-bgf1"),
            sb = t.standby_node(Lan::Mgmt),
        );
    }
    text
}

/// Waits for `needle` in `p`'s log; fails at once if `p` exits.
fn started(mut p: Proc, needle: &str) -> Proc {
    let up = wait_until(Duration::from_secs(60), || {
        if p.stderr().contains(needle) {
            Some(true)
        } else if !p.running() {
            Some(false)
        } else {
            None
        }
    });
    assert_eq!(up, Some(true), "{} did not start\n{}", p.name, p.logs());
    p
}

fn admin(t: &Topology, node: &str, addr: IpAddr, path: &str) -> Option<Value> {
    let c = AdminClient::new(SocketAddr::new(addr, 8080), TOKEN);
    let (code, body) = t.run_in(&t.ns(node), || c.get(path, true).ok()).ok()??;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

fn uas(t: &Topology, dir: &TestDir, name: &str) -> Proc {
    let sock = dir.join(&format!("{name}.sock"));
    let p = Proc::spawn(
        t.command(&t.ns("core"), &callgen_binary().display().to_string()),
        &s(&[
            "uas",
            "--local",
            &bracket(t.core_peer(), 5060),
            "--ctl-listen",
            &format!("unix:{}", sock.display()),
            "--rtp-ports",
            "24000-24999",
            "--progress",
            "--max-run-s",
            "120",
        ]),
        dir.path(),
        name,
    )
    .unwrap();
    started(p, "SIP on")
}

fn uac(t: &Topology, dir: &TestDir, name: &str, v6: bool, calls: u64, hold_ms: u64) -> Proc {
    let proxy = if v6 {
        t.service_v6(1)
    } else {
        t.service_v4(1, Lan::Access)
    };
    Proc::spawn(
        t.command(&t.ns("ue"), &callgen_binary().display().to_string()),
        &s(&[
            "uac",
            "--local",
            &bracket(t.ue(v6), 5060),
            "--proxy",
            &bracket(proxy, 5060),
            "--rtp-ports",
            "26000-26999",
            "--calls",
            &calls.to_string(),
            "--rate",
            "5",
            "--hold-ms",
            &hold_ms.to_string(),
            "--json",
            &dir.join(&format!("{name}.json")).display().to_string(),
            "--ctl-connect",
            &format!("unix:{}", dir.join("uas.sock").display()),
            "--progress",
        ]),
        dir.path(),
        name,
    )
    .unwrap()
}

fn report(dir: &TestDir, name: &str) -> Value {
    std::fs::read(dir.join(&format!("{name}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// One call per access family... through the DPDK data plane; then packets
/// to a port with no pinhole are dropped and counted.
fn call_through_dpdk(prefix: &str, driver: &str, v6: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bin = bgf_dpdk();
    let _ = callgen_binary();
    let t = Topology::new(prefix, 1).unwrap();
    add_dpdk_ifs(&t, "a1");
    let dir = TestDir::new(&format!("dpdk-{prefix}"));
    std::fs::write(dir.join("bgf1.toml"), active_toml(&t, v6, driver, false)).unwrap();
    let active = spawn_bgf(
        t.command(&t.ns("a1"), &bin.display().to_string()),
        "active",
        &dir,
        "bgf1.toml",
        "bgf1",
    )
    .unwrap();
    let active = started(active, "bgf active started");
    assert!(
        active.stderr().contains("DPDK port started"),
        "{}",
        active.logs()
    );
    let mgmt = t.active_node(1, Lan::Mgmt);
    let _uas = uas(&t, &dir, "uas");
    let mut u = uac(&t, &dir, "uac", v6, 3, 3000);
    let st = u.wait_exit(Duration::from_secs(90));
    let r = report(&dir, "uac");
    let stats = admin(&t, "a1", mgmt, "/v1/stats").unwrap_or(Value::Null);
    let ctx = || format!("{}\n{}\nstats {stats}\nreport {r}", u.logs(), active.logs());
    assert_eq!(st.and_then(|s| s.code()), Some(0), "uac failed: {}", ctx());
    assert_eq!(r["summary"]["ok"], 3, "{}", ctx());
    assert_eq!(r["summary"]["lost"], 0, "{}", ctx());
    let fwd = stats["media"]["forwarded_packets"].as_u64().unwrap_or(0);
    assert!(fwd > 100, "forwarded {fwd}: {}", ctx());

    // A port with no pinhole: dropped and counted, nothing comes back.
    let before = stats["media"]["drops"]["unknown_port"]
        .as_u64()
        .unwrap_or(0);
    let (ue, media) = if v6 {
        (t.ue(true), media_v6(1))
    } else {
        (t.ue(false), media_v4(1, Lan::Access))
    };
    let sent = t
        .run_in(&t.ns("ue"), || {
            let sock = UdpSocket::bind(SocketAddr::new(ue, 27000)).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            for i in 0..20u8 {
                sock.send_to(
                    &[0x80, 0, 0, i, 0, 0, 0, 0, 0, 0, 0, 1],
                    SocketAddr::new(media, 29990),
                )
                .unwrap();
            }
            let mut b = [0u8; 64];
            sock.recv_from(&mut b).is_err()
        })
        .unwrap();
    assert!(sent, "something answered packets to an unknown port");
    let after = wait_until(Duration::from_secs(10), || {
        let v = admin(&t, "a1", mgmt, "/v1/stats")?;
        let n = v["media"]["drops"]["unknown_port"].as_u64()?;
        (n >= before + 20).then_some(n)
    });
    assert!(
        after.is_some(),
        "unknown-port drops not counted (before {before}): {:?}\n{}",
        admin(&t, "a1", mgmt, "/v1/stats"),
        active.logs()
    );
    // The data plane answered ARP/ND for the media address: the UE's
    // neighbour entry is the DPDK veth's MAC.
    let out = Command::new("ip")
        .args(["-n", &t.ns("a1"), "-br", "link", "show", "dacc"])
        .output()
        .unwrap();
    let mac = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .map(str::to_string)
        .unwrap_or_default();
    let n = t.neighbour("ue", media).unwrap_or_default();
    assert!(
        !mac.is_empty() && n.contains(&mac),
        "UE's neighbour entry for {media} is {n:?}, not the DPDK port's MAC {mac}"
    );
}

#[test]
fn dpdk_af_packet_call_v4_and_unknown_port_drop() {
    if !require_root("dpdk_af_packet_call_v4_and_unknown_port_drop") {
        return;
    }
    call_through_dpdk("dkp4", "af_packet", false);
}

#[test]
fn dpdk_af_packet_call_v6_access_to_v4_core() {
    if !require_root("dpdk_af_packet_call_v6_access_to_v4_core") {
        return;
    }
    call_through_dpdk("dkp6", "af_packet", true);
}

/// Active and hot standby both on DPDK: calls up through the active, kill
/// -9 of the active, the standby takes over (SIP addresses by netlink on its
/// kernel interfaces, media addresses claimed and announced from its data
/// plane), and every call passes the in-dialog check through it.
#[test]
fn dpdk_standby_takes_over_and_announces_from_the_data_plane() {
    if !require_root("dpdk_standby_takes_over_and_announces_from_the_data_plane") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bin = bgf_dpdk();
    let _ = callgen_binary();
    let t = Topology::new("dkf", 1).unwrap();
    add_dpdk_ifs(&t, "a1");
    add_dpdk_ifs(&t, "sb");
    let dir = TestDir::new("dpdk-failover");
    std::fs::create_dir_all(dir.join("store")).unwrap();
    std::fs::write(
        dir.join("bgf1.toml"),
        active_toml(&t, false, "af_packet", true),
    )
    .unwrap();
    std::fs::write(
        dir.join("standby.toml"),
        format!(
            r#"[instance]
name = "sb1"

[standby]
mode = "hot"
access_interface = "acc"
core_interface = "cor"
address_step = "netlink"
announce_ms = [0, 50, 200, 500, 1000]

[[standby.protect]]
config = "bgf1.toml"

[log]
format = "json"
level = "info"

[admin]
listen = "{}:8080"
token = "{TOKEN}"

[statelog]
{}"#,
            t.standby_node(Lan::Mgmt),
            PKI_LINES.replace("ROLE-NAME", "standby-sb1"),
        ),
    )
    .unwrap();
    let _store = start_statelog(
        t.command(&t.ns("store"), &bin.display().to_string()),
        t.store(),
        &dir,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let active = spawn_bgf(
        t.command(&t.ns("a1"), &bin.display().to_string()),
        "active",
        &dir,
        "bgf1.toml",
        "bgf1",
    )
    .unwrap();
    let mut active = started(active, "bgf active started");
    let standby = spawn_bgf(
        t.command(&t.ns("sb"), &bin.display().to_string()),
        "standby",
        &dir,
        "standby.toml",
        "standby",
    )
    .unwrap();
    let standby = started(standby, "bgf standby started");
    let sb = t.standby_node(Lan::Mgmt);
    let view = || admin(&t, "sb", sb, "/v1/standby");
    assert!(
        wait_until(Duration::from_secs(15), || {
            (view()?["protected"][0]["heartbeat"]["state"] == "alive").then_some(())
        })
        .is_some(),
        "heartbeats not up: {:?}\n{}",
        view(),
        standby.logs()
    );
    let _uas = uas(&t, &dir, "uas");
    let mut u = uac(&t, &dir, "uac", false, 3, 60_000);
    let up = wait_until(Duration::from_secs(30), || {
        let v = view()?;
        (u.stderr().contains("uac calls up 3 started 3")
            && v["protected"][0]["replica"]["sessions"] == 3
            && v["protected"][0]["replica"]["lag"] == 0)
            .then_some(())
    });
    assert!(
        up.is_some(),
        "calls not up / replicated: {:?}\n{}\n{}",
        view(),
        u.logs(),
        active.logs()
    );
    // Let media flow through the active for a moment, then kill it.
    std::thread::sleep(Duration::from_millis(1000));
    active.signal(libc::SIGKILL);
    let _ = active.wait_exit(Duration::from_secs(5));
    let serving = wait_until(Duration::from_secs(30), || {
        let v = view()?;
        (v["role"] == "serving").then_some(v)
    });
    assert!(
        serving.is_some(),
        "no takeover: {:?}\n{}",
        view(),
        standby.logs()
    );
    assert!(
        standby
            .stderr()
            .contains("media addresses announced from the DPDK data plane"),
        "{}",
        standby.logs()
    );
    // The UE and the core peer now reach the media addresses at the
    // standby's DPDK ports (the announcement moved their neighbour entries).
    let sb_mac = |ifname: &str| {
        let out = Command::new("ip")
            .args(["-n", &t.ns("sb"), "-br", "link", "show", ifname])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .map(str::to_string)
            .unwrap_or_default()
    };
    for (node, ip, ifname) in [
        ("ue", media_v4(1, Lan::Access), "dacc"),
        ("core", media_v4(1, Lan::Core), "dcor"),
    ] {
        let mac = sb_mac(ifname);
        let moved = wait_until(Duration::from_secs(5), || {
            t.neighbour(node, ip).filter(|n| n.contains(&mac))
        });
        assert!(
            moved.is_some(),
            "{node}'s neighbour entry for {ip} is {:?}, not the standby's {ifname} {mac}",
            t.neighbour(node, ip)
        );
    }
    // Marker: every call must pass the in-dialog check through the standby.
    std::thread::sleep(Duration::from_millis(1500));
    u.signal(libc::SIGUSR1);
    let st = u.wait_exit(Duration::from_secs(60));
    let r = report(&dir, "uac");
    let ctx = || format!("{}\n{}\nreport {r}", u.logs(), standby.logs());
    assert_eq!(r["summary"]["lost"], 0, "{}", ctx());
    assert_eq!(r["summary"]["up_at_marker"], 3, "{}", ctx());
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", ctx());
    let stats = admin(&t, "sb", sb, "/v1/stats").unwrap_or(Value::Null);
    assert!(
        stats["media"]["forwarded_packets"].as_u64().unwrap_or(0) > 50,
        "standby forwarded little: {stats}"
    );
}

#[test]
fn dpdk_af_xdp_call_v4_and_unknown_port_drop() {
    if !require_root("dpdk_af_xdp_call_v4_and_unknown_port_drop") {
        return;
    }
    call_through_dpdk("dkx4", "af_xdp", false);
}
