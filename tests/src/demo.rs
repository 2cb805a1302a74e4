//! The failover drill `bgf-demo` runs (and its end-to-end test): an N+1
//! cluster on this machine ([`crate::cluster`]: the embedded store, two
//! actives, a hot standby) and the operator's own drill against it —
//! `bgfctl drill failover bgf1 --mode kill --others` with a cluster file
//! written for this network: `bgf-callgen` calls with RTP through both
//! actives, `kill -9` of active 1 (through its admin API), the standby's
//! takeover, the marker (every call then re-INVITEs to a new media port and
//! hangs up through whoever serves it), and the drill report (timeline,
//! phases, per-call media gap per active, calls ok / lost, files).
//!
//! As root the nodes are network namespaces and the standby really claims
//! and announces the addresses; otherwise they are loopback addresses and
//! the address step is simulated (`standby.address_step = "none"`), which
//! the output says.

use crate::cluster::{Cluster, ClusterNet, ClusterOptions};
use crate::netns::Lan;
use crate::TestDir;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Calls per active.
    pub calls: u64,
    /// Calls/s per active.
    pub rate: f64,
    /// Namespaces (root) or loopback.
    pub namespaces: bool,
    /// Namespace prefix (≤ 6 characters, unique on the machine).
    pub prefix: String,
    /// Where the JSON / SVG reports are copied.
    pub report_dir: PathBuf,
    /// Media seconds before the kill.
    pub media_before_kill: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            calls: 30,
            rate: 20.0,
            // SAFETY: geteuid has no preconditions.
            namespaces: unsafe { libc::geteuid() } == 0,
            prefix: format!("dm{}", std::process::id() % 10_000),
            report_dir: std::env::temp_dir().join("bgf-demo"),
            media_before_kill: Duration::from_secs(2),
        }
    }
}

/// How the drill went.
#[derive(Clone, Debug)]
pub struct DemoOutcome {
    /// Calls placed (both actives).
    pub calls: u64,
    /// Calls that passed the in-dialog check after the takeover.
    pub ok: u64,
    /// Calls lost.
    pub lost: u64,
    /// The standby's takeover report.
    pub takeover: Value,
    /// The drill's `drill.json`.
    pub drill: Value,
    /// The drill's run directory (reports, plots, call generator logs).
    pub report_dir: PathBuf,
}

impl DemoOutcome {
    /// Every call survived.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.ok == self.calls
    }
}

/// Runs the drill, printing as it goes; `Err` on a setup failure (with the
/// daemons' logs), `Ok` with the outcome otherwise (lost calls included).
pub fn run(o: &DemoOptions) -> Result<DemoOutcome, String> {
    let t0 = Instant::now();
    let say = |m: &str| println!("[{:5.1} s] {m}", t0.elapsed().as_secs_f64());
    let net = if o.namespaces {
        say(&format!(
            "network: namespaces {p}-{{ue,core,store,a1,a2,sb,sw}} (access 198.18.0.0/24 + fd00:a::/64, core 198.18.1.0/24, mgmt 198.18.2.0/24)",
            p = o.prefix
        ));
        ClusterNet::namespaces(&o.prefix)?
    } else {
        let n = ClusterNet::loopback();
        let ClusterNet::Loopback(t) = &n else {
            unreachable!()
        };
        say(&format!(
            "network: loopback 127.{}.{}.0/24 on lo (not root: no namespaces) — ADDRESS STEP SIMULATED: the standby runs with standby.address_step = \"none\"; the failed active's service addresses are always local on lo, so it binds them without adding or announcing anything (run as root for the real address takeover with GARP / unsolicited NA)",
            t.n, t.m
        ));
        n
    };
    let dir = TestDir::new("demo");
    say("starting the embedded store (bgf statelog), bgf1, bgf2 and the hot standby sb1 ...");
    // In namespaces the BGFs relay media with the XDP fast path; where it
    // cannot attach (program not built in: no clang/libbpf-dev at build
    // time) they fall back to kernel sockets on their own, and say so.
    let media_extra = if net.is_namespaces() {
        "backend = \"xdp\"".to_string()
    } else {
        String::new()
    };
    let c = Cluster::start(
        net,
        dir,
        &ClusterOptions {
            media_extra,
            ..ClusterOptions::default()
        },
    )?;
    let n = &c.net;
    let access = |k: u8, v6: bool| {
        if v6 {
            n.service_v6(k)
        } else {
            n.service_v4(k, Lan::Access)
        }
    };
    say(&format!(
        "cluster up: store {}:7400 | bgf1 access {} core {} | bgf2 access {} core {} | standby sb1 (hot) hears both (heartbeats every 50 ms)",
        n.store(),
        access(1, c.a1_v6),
        n.service_v4(1, Lan::Core),
        access(2, !c.a1_v6 && n.is_namespaces()),
        n.service_v4(2, Lan::Core),
    ));
    if let Some(st) = c.net.admin_get("a1", c.net.active_mgmt(1), "/v1/stats") {
        let m = &st["media"];
        let how = m["xdp"]["attached"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        format!(
                            "{} {}",
                            i["interface"].as_str().unwrap_or("?"),
                            i["mode"].as_str().unwrap_or("?")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        say(&match m["backend"].as_str() {
            Some("xdp") => format!("media: XDP fast path in the kernel ({how}) — no socket per call"),
            Some(b) => format!("media: {b} sockets (the XDP fast path is used in namespaces where bgf was built with clang and libbpf-dev; see the BGF's log for why not here)"),
            None => "media: backend unknown (no /v1/stats)".to_string(),
        });
    }
    let cluster_file = c.write_cluster_file()?;
    std::fs::create_dir_all(&o.report_dir)
        .map_err(|e| format!("cannot create {}: {e}", o.report_dir.display()))?;
    let args = [
        "--cluster".to_string(),
        cluster_file.display().to_string(),
        "drill".into(),
        "failover".into(),
        "bgf1".into(),
        "--mode".into(),
        "kill".into(),
        "--calls".into(),
        o.calls.to_string(),
        "--rate".into(),
        o.rate.to_string(),
        "--before-s".into(),
        o.media_before_kill.as_secs_f64().to_string(),
        "--others".into(),
        "--report-dir".into(),
        o.report_dir.display().to_string(),
    ];
    say(&format!(
        "the operator's drill: bgfctl {} (cluster file {})",
        args[2..].join(" "),
        cluster_file.display()
    ));
    let before = drill_dirs(&o.report_dir);
    let st = c
        .bgfctl_command()
        .args(&args)
        .env_remove("BGF_CLUSTER")
        .env_remove("BGF_TOKEN_FILE")
        .status()
        .map_err(|e| format!("cannot run bgfctl: {e}"))?;
    let run_dir = drill_dirs(&o.report_dir)
        .into_iter()
        .find(|d| !before.contains(d))
        .ok_or_else(|| {
            format!(
                "bgfctl drill ({st}) wrote no report under {}\n{}",
                o.report_dir.display(),
                c.logs()
            )
        })?;
    let drill: Value = std::fs::read(run_dir.join("drill.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            format!(
                "bgfctl drill ({st}): no drill.json in {}\n{}",
                run_dir.display(),
                c.logs()
            )
        })?;
    if c.net.is_namespaces() {
        say("the standby added the service addresses (rtnetlink) and announced them (GARP / unsolicited NA)");
    } else {
        say("reminder: loopback run — the address step was SIMULATED (standby.address_step = \"none\": addresses already local on lo, nothing added, nothing announced)");
    }
    let num = |k: &str| drill[k].as_u64().unwrap_or(0);
    Ok(DemoOutcome {
        calls: num("calls"),
        ok: num("ok"),
        lost: num("lost"),
        takeover: drill["takeover"].clone(),
        drill: drill.clone(),
        report_dir: run_dir,
    })
}

/// The drill run directories under `dir`.
fn drill_dirs(dir: &std::path::Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("drill-"))
                })
                .collect()
        })
        .unwrap_or_default()
}
