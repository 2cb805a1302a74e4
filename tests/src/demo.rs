//! The failover drill `bgf-demo` runs (and its end-to-end test): an N+1
//! cluster on this machine ([`crate::cluster`]: the embedded store, two
//! actives, a hot standby), `bgf-callgen` calls with RTP through both
//! actives, `kill -9` of active 1, the standby's takeover, the marker (every
//! call then re-INVITEs to a new media port and hangs up through whoever
//! serves it), and the drill report: takeover timeline and phases, per-call
//! media gap per active, calls ok / lost, where the reports were written.
//!
//! As root the nodes are network namespaces and the standby really claims
//! and announces the addresses; otherwise they are loopback addresses and
//! the address step is simulated (`standby.address_step = "none"`), which
//! the output says.

use crate::cluster::{finish, gaps, pct, Cluster, ClusterNet, ClusterOptions};
use crate::netns::Lan;
use crate::proc::Proc;
use crate::TestDir;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// Where the reports are.
    pub report_dir: PathBuf,
}

impl DemoOutcome {
    /// Every call survived.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.ok == self.calls
    }
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// The last `--progress` line of a callgen, without its timestamp.
fn last_progress(p: &Proc, needle: &str) -> String {
    let e = p.stderr();
    e.lines()
        .rev()
        .find(|l| l.contains(needle))
        .map(|l| {
            let l = l.split_once("] ").map_or(l, |(_, r)| r);
            l.split(" | worst").next().unwrap_or(l).to_string()
        })
        .unwrap_or_else(|| "starting".into())
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
    let c = Cluster::start(net, dir, &ClusterOptions::default())?;
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
    say(&format!(
        "placing {} calls with RTP through each active (bgf-callgen UAC on the UE → bgf → UAS on the core peer, {} calls/s) ...",
        o.calls, o.rate
    ));
    // Calls hang up (each after its in-dialog check) at their normal end:
    // hold long enough for the setup, the media before the kill and the
    // takeover; the rest of the hold is media through the standby.
    let hold = Duration::from_secs_f64(o.calls as f64 / o.rate)
        + o.media_before_kill
        + Duration::from_secs(8);
    let t_calls = Instant::now();
    let [_uas1, _uas2, mut uac1, mut uac2] = c.place_calls(
        o.calls,
        o.rate,
        hold.as_millis() as u64,
        true,
        &mut |c: &Cluster, p: &[Proc]| {
            let rep = c
                .standby_view()
                .and_then(|v| v["protected"].as_array().cloned())
                .map(|g| {
                    g.iter()
                        .map(|g| {
                            format!(
                                "{} {} sessions (lag {})",
                                g["instance"].as_str().unwrap_or("?"),
                                g["replica"]["sessions"],
                                g["replica"]["lag"]
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            say(&format!(
                "  via bgf1: {} | via bgf2: {} | standby replicas: {rep}",
                last_progress(&p[2], "uac calls up"),
                last_progress(&p[3], "uac calls up")
            ));
        },
    )?;
    say(&format!(
        "all {} calls up and in the standby's replicas; media flowing for {:.0} s ...",
        2 * o.calls,
        o.media_before_kill.as_secs_f64()
    ));
    std::thread::sleep(o.media_before_kill);
    say(&format!(
        "  via bgf1: {}",
        last_progress(&uac1, "uac calls up")
    ));

    if t_calls.elapsed() + Duration::from_secs(3) > hold {
        return Err(format!(
            "the calls took {:.1} s to be set up and replicated — too slow for their {:.1} s hold (is the machine overloaded?)",
            t_calls.elapsed().as_secs_f64(),
            hold.as_secs_f64()
        ));
    }
    let pid = c.actives[0].pid();
    let kill_ms = unix_ms();
    let t_kill = Instant::now();
    crate::util::signal(pid, libc::SIGKILL);
    say(&format!("kill -9 bgf1 (pid {pid})"));
    c.wait_serving(1, Duration::from_secs(15))?;
    say(&format!(
        "standby sb1 serves bgf1 ({:.0} ms after the kill, admin API polled) — the cluster has no standby left until one is started",
        t_kill.elapsed().as_secs_f64() * 1000.0
    ));
    uac1.signal(libc::SIGUSR1);
    uac2.signal(libc::SIGUSR1);
    say(&format!("marker sent: media keeps flowing (through the standby for bgf1's calls); at its end ({:.0} s after its start) every call re-INVITEs to a new media port, checks media there and hangs up ...", hold.as_secs_f64()));
    let deadline = Instant::now() + hold + Duration::from_secs(30);
    let mut last = Instant::now();
    while (uac1.running() || uac2.running()) && Instant::now() < deadline {
        if last.elapsed() >= Duration::from_secs(1) {
            say(&format!(
                "  via bgf1: {} | via bgf2: {}",
                last_progress(&uac1, "uac calls up"),
                last_progress(&uac2, "uac calls up")
            ));
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code1, r1) = finish(&mut uac1, &c.dir, Duration::from_secs(5))?;
    let (code2, r2) = finish(&mut uac2, &c.dir, Duration::from_secs(5))?;
    let rep = c.final_report();

    // Reports.
    std::fs::create_dir_all(&o.report_dir)
        .map_err(|e| format!("cannot create {}: {e}", o.report_dir.display()))?;
    let copy = |from: &str, to: &str| -> String {
        let dst = o.report_dir.join(to);
        match std::fs::copy(c.dir.join(from), &dst) {
            Ok(_) => dst.display().to_string(),
            Err(e) => format!("(not written: {e})"),
        }
    };
    let takeover_json = o.report_dir.join("takeover.json");
    let _ = std::fs::write(
        &takeover_json,
        serde_json::to_vec_pretty(&rep).unwrap_or_default(),
    );
    let files = [
        ("calls via bgf1, JSON", copy("uac1.json", "calls-bgf1.json")),
        ("calls via bgf1, SVG", copy("uac1.svg", "calls-bgf1.svg")),
        ("calls via bgf2, JSON", copy("uac2.json", "calls-bgf2.json")),
        ("calls via bgf2, SVG", copy("uac2.svg", "calls-bgf2.svg")),
        ("takeover report, JSON", takeover_json.display().to_string()),
    ];

    let out = report_text(&c, &rep, kill_ms, [(&r1, code1), (&r2, code2)], &files);
    println!("{out}");
    let num = |r: &Value, k: &str| r["summary"][k].as_u64().unwrap_or(0);
    Ok(DemoOutcome {
        calls: num(&r1, "calls") + num(&r2, "calls"),
        ok: num(&r1, "ok") + num(&r2, "ok"),
        lost: num(&r1, "lost") + num(&r2, "lost"),
        takeover: rep,
        report_dir: o.report_dir.clone(),
    })
}

fn report_text(
    c: &Cluster,
    rep: &Value,
    kill_ms: f64,
    runs: [(&Value, Option<i32>); 2],
    files: &[(&str, String)],
) -> String {
    let us = |k: &str| rep[k].as_u64().map(|v| v as f64 / 1000.0);
    let ms = |k: &str| us(k).map_or("-".to_string(), |v| format!("{v:8.2} ms"));
    let simulated = !c.net.is_namespaces();
    let mut s = String::from("\n== N+1 failover drill report ==\n");
    s += &format!(
        "network: {}\n",
        if simulated {
            "loopback (not root) — the address step was SIMULATED (standby.address_step = \"none\": addresses already local on lo, nothing added, nothing announced)"
        } else {
            "network namespaces — the standby added the service addresses (rtnetlink) and announced them (GARP / unsolicited NA)"
        }
    );
    let detected_after = rep["detected_unix_ms"]
        .as_f64()
        .map_or("-".into(), |d| format!("{:.0} ms", d - kill_ms));
    s += &format!(
        "failure: kill -9 bgf1; detected {detected_after} after the kill (reason {}); new epoch {}; {} sessions taken over, {} records drained at the takeover\n",
        rep["reason"], rep["epoch"], rep["sessions"], rep["records_drained"]
    );
    s += "timeline (since detection):\n";
    s += &format!("  {:<24}{:8.2} ms\n", "detected", 0.0);
    for (label, k, note) in [
        ("fenced (store epoch)", "fenced_us", String::new()),
        ("log drained", "drained_us", String::new()),
        (
            "addresses up",
            "addresses_up_us",
            if simulated {
                "  (simulated: already local)".into()
            } else {
                format!("  ({} added)", rep["addresses_added"])
            },
        ),
        ("serving (sockets bound)", "serving_us", String::new()),
        (
            "first announcement",
            "first_announcement_us",
            if simulated {
                "  (simulated: nothing sent)".into()
            } else {
                String::new()
            },
        ),
        ("first media forwarded", "first_media_us", String::new()),
        ("first SIP handled", "first_sip_us", String::new()),
    ] {
        s += &format!("  {label:<24}{}{note}\n", ms(k));
    }
    let d = |a: &str, b: &str| match (us(a), us(b)) {
        (Some(x), Some(y)) => format!("{:.2} ms", y - x),
        _ => "-".into(),
    };
    s += &format!(
        "phases: fence {}, drain {}, addresses {}, serve {}, announce {}\n",
        us("fenced_us").map_or("-".into(), |v| format!("{v:.2} ms")),
        d("fenced_us", "drained_us"),
        d("drained_us", "addresses_up_us"),
        d("addresses_up_us", "serving_us"),
        d("serving_us", "first_announcement_us"),
    );
    s += "calls (per-call longest media gap, either direction):\n";
    s += &format!(
        "  {:<34}{:>6}{:>6}{:>6}{:>8}{:>8}{:>8}{:>8}  exit\n",
        "", "calls", "ok", "lost", "p50", "p95", "p99", "max"
    );
    let v6 = c.a1_v6;
    for (i, (r, code)) in runs.iter().enumerate() {
        let g = gaps(r);
        let what = if i == 0 {
            format!("via bgf1 (killed, IPv{} access)", if v6 { 6 } else { 4 })
        } else {
            format!(
                "via bgf2 (kept, IPv{} access)",
                if !v6 && c.net.is_namespaces() { 6 } else { 4 }
            )
        };
        let n = |k: &str| r["summary"][k].as_u64().unwrap_or(0);
        s += &format!(
            "  {what:<34}{:>6}{:>6}{:>6}{:>6.0}ms{:>6.0}ms{:>6.0}ms{:>6.0}ms  {code:?}\n",
            n("calls"),
            n("ok"),
            n("lost"),
            pct(&g, 50.0),
            pct(&g, 95.0),
            pct(&g, 99.0),
            pct(&g, 100.0),
        );
    }
    s += "reports:\n";
    for (what, path) in files {
        s += &format!("  {what:<24}{path}\n");
    }
    s
}
