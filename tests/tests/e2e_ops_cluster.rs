//! `bgfctl` and the standby's admin API against a real N+1 cluster in
//! network namespaces (`bgf_tests::netns`: store, two actives, a hot
//! standby; bgfctl runs on the management LAN from the store's namespace):
//!
//! The cluster is `bgf_tests::cluster`'s (the one the failover tests and the
//! demo use), with the cluster file it writes for bgfctl.
//!
//! - `bgfctl_status_through_a_takeover`: the cluster reads "N+1 protected"
//!   (exit 0, one row per process, heartbeats alive); the standby's
//!   `/metrics` parses and has its heartbeat / replica / lag families, its
//!   API refuses a request without the token; `log inspect bgf1` is read by
//!   bgf1. After `kill -9` of bgf1 the standby serves it: `status` reads "no
//!   standby" (exit 2, `serving (bgf1)`), `log inspect bgf1` is answered by
//!   the standby, and its `/metrics` has the takeover's phase durations.
//!
//! Needs root (SKIP otherwise).

use bgf_tests::cluster::{bracket, Cluster, ClusterNet, ClusterOptions, TOKEN};
use bgf_tests::netns::{require_root, Lan, Topology};
use bgf_tests::ops::{bgfctl_in, parse_metrics, Run};
use bgf_tests::util::wait_until;
use bgf_tests::TestDir;
use std::net::IpAddr;
use std::time::Duration;

/// `GET path` on an admin API inside `ns` (curl in the node's namespace);
/// `(status, body)`.
fn curl(t: &Topology, ns: &str, ip: IpAddr, path: &str, token: bool) -> (u16, String) {
    let mut c = t.command(ns, "curl");
    c.args(["-s", "-m", "3", "-w", "\n%{http_code}"]);
    if token {
        c.args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
    }
    let out = c
        .arg(format!("http://{}{path}", bracket(ip, 8080)))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn bgfctl_status_through_a_takeover() {
    if !require_root("bgfctl_status_through_a_takeover") {
        return;
    }
    let net = ClusterNet::namespaces("opsc").unwrap();
    let c = Cluster::start(net, TestDir::new("ops-cluster"), &ClusterOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let cluster = c.write_cluster_file().unwrap();
    let t = c.t();
    // Active 1's access is IPv6, active 2's IPv4 (the cluster's default).
    let access = |k: u8| {
        let ip = if (k == 1) == c.a1_v6 {
            t.service_v6(k)
        } else {
            t.service_v4(k, Lan::Access)
        };
        bracket(ip, 5060)
    };
    let run = |args: &[&str]| -> Run { bgfctl_in(c.bgfctl_command(), &cluster, args) };

    // --- N+1 protected.
    let st = wait_until(Duration::from_secs(30), || {
        let r = run(&["status"]);
        (r.code == Some(0)).then_some(r)
    })
    .unwrap_or_else(|| panic!("never N+1 protected: {:?}\n{}", run(&["status"]), c.logs()));
    eprintln!("bgfctl status (protected):\n{}", st.stdout);
    assert!(
        st.stdout.starts_with("cluster: N+1 protected\n"),
        "{}",
        st.stdout
    );
    let row = |out: &str, n: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(n))
            .unwrap_or_else(|| panic!("no row {n}:\n{out}"))
            .to_string()
    };
    assert!(row(&st.stdout, "bgf1 ").contains("standby alive"));
    assert!(
        row(&st.stdout, "bgf2 ").contains(&access(2)),
        "{}",
        st.stdout
    );
    let sb = row(&st.stdout, "sb1 ");
    assert!(
        sb.contains("standby") && sb.contains("bgf1 alive") && sb.contains("bgf2 alive"),
        "{sb}"
    );
    // Every heartbeat link measures its round trip (shown as "alive 0.3 ms").
    let rtts = wait_until(Duration::from_secs(10), || {
        let j = run(&["status", "--json"]).json();
        let srtt: Vec<u64> = j["instances"]
            .as_array()?
            .iter()
            .flat_map(|i| i["heartbeats"].as_array().cloned().unwrap_or_default())
            .filter_map(|h| h["srtt_us"].as_u64())
            .collect();
        (srtt.len() == 4).then_some(srtt)
    })
    .unwrap_or_else(|| panic!("no heartbeat RTT: {:?}", run(&["status", "--json"])));
    assert!(rtts.iter().all(|us| *us > 0 && *us < 1_000_000), "{rtts:?}");
    assert!(run(&["status"]).stdout.contains(" ms"), "RTT in the table");
    let j = run(&["status", "--json"]).json();
    assert_eq!(j["protection"], "N+1 protected");
    let roles: Vec<&str> = j["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(roles, ["active", "active", "standby"]);
    assert_eq!(j["instances"][2]["guards"].as_array().unwrap().len(), 2);

    // --- The standby's API: token, /metrics.
    let sb_ip = t.standby_node(Lan::Mgmt);
    let store_ns = t.ns("store");
    assert_eq!(curl(t, &store_ns, sb_ip, "/v1/standby", false).0, 401);
    assert_eq!(curl(t, &store_ns, sb_ip, "/metrics", false).0, 401);
    let (code, body) = curl(t, &store_ns, sb_ip, "/v1/sessions", true);
    assert_eq!(code, 503, "not serving yet: {body}");
    let (code, text) = curl(t, &store_ns, sb_ip, "/metrics", true);
    assert_eq!(code, 200, "{text}");
    let fams = parse_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for f in [
        "bgf_info",
        "bgf_standby_available",
        "bgf_standby_guard",
        "bgf_heartbeat_peer_up",
        "bgf_heartbeat_packets_total",
        "bgf_heartbeat_rtt_seconds",
        "bgf_heartbeat_srtt_seconds",
        "bgf_log_lag_records",
        "bgf_replica_applied_seq",
    ] {
        assert!(fams.contains_key(f), "no {f}:\n{text}");
    }
    let rtt_counts = &fams["bgf_heartbeat_rtt_seconds"].samples["bgf_heartbeat_rtt_seconds_count"];
    assert_eq!(rtt_counts.len(), 2, "{text}");
    assert!(rtt_counts.iter().all(|s| s.value > 0.0), "{text}");
    let up = &fams["bgf_heartbeat_peer_up"].samples["bgf_heartbeat_peer_up"];
    assert_eq!(up.len(), 2);
    assert!(
        up.iter()
            .all(|s| s.value == 1.0 && s.labels["bgf_instance"] == "sb1"),
        "{text}"
    );

    let li = run(&["log", "inspect", "bgf1", "--json"]).json();
    assert_eq!(li["via"], "bgf1");
    assert_eq!(li["instance"], "bgf1");

    // --- Kill bgf1: the standby serves it; the cluster has no standby.
    bgf_tests::util::signal(c.actives[0].pid(), libc::SIGKILL);
    let st = wait_until(Duration::from_secs(30), || {
        let r = run(&["status"]);
        r.stdout.starts_with("cluster: no standby").then_some(r)
    })
    .unwrap_or_else(|| panic!("never 'no standby': {:?}\n{}", run(&["status"]), c.logs()));
    eprintln!(
        "bgfctl status (after the takeover):\n{}\n{}",
        st.stdout, st.stderr
    );
    assert_eq!(st.code, Some(2));
    assert!(
        st.stdout.contains("serves bgf1 since its takeover"),
        "{}",
        st.stdout
    );
    assert!(row(&st.stdout, "bgf1 ").contains("unreachable"));
    let sb = row(&st.stdout, "sb1 ");
    assert!(sb.contains("serving (bgf1)"), "{sb}");
    assert!(sb.contains(&access(1)), "{sb}");
    let li = run(&["log", "inspect", "bgf1", "--json"]).json();
    assert_eq!(li["via"], "sb1", "{li}");
    assert!(
        li["writer"].is_object(),
        "the standby writes bgf1's log now: {li}"
    );
    let (code, text) = curl(t, &store_ns, sb_ip, "/metrics", true);
    assert_eq!(code, 200);
    let fams = parse_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let phases: Vec<&str> = fams["bgf_takeover_phase_seconds"].samples
        ["bgf_takeover_phase_seconds"]
        .iter()
        .map(|s| s.labels["phase"].as_str())
        .collect();
    for p in [
        "fenced",
        "drained",
        "addresses_up",
        "serving",
        "first_announcement",
    ] {
        assert!(phases.contains(&p), "no phase {p}: {phases:?}");
    }
    assert!(
        fams.contains_key("bgf_sessions"),
        "serving core's families:\n{text}"
    );
    let sa = &fams["bgf_standby_available"].samples["bgf_standby_available"][0];
    assert_eq!(sa.value, 0.0);
}
