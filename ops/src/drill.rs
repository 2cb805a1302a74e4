//! Failover drills (`bgfctl drill failover`) and planned switchovers
//! (`bgfctl switchover`) against a running cluster — a lab or test
//! deployment for drills, any deployment for switchovers.
//!
//! A drill: checks that a standby protects the target, starts `bgf-callgen`
//! pairs (UAS on each active's core next hop, UAC on the UE side, where the
//! cluster file's `[drill]` says) through the target (and, with `others`,
//! every other active), waits until every call is up and in the standby's
//! replica, injects the fault (`kill` / `stop` through the target's
//! `POST /v1/drill/fault`, `cut` / heal through the cluster file's
//! commands), waits for the standby to serve the target, sends the marker
//! (every call then re-INVITEs to a new media port through whoever serves
//! it and hangs up), and writes the report: timeline since the fault,
//! takeover phases, per-call media gap distribution per active, calls lost
//! by Call-ID, and the files (`drill.json`, `drill.txt`, the call
//! generator's JSON + SVG per active).
//!
//! Nothing here panics on what the cluster answers: every step returns
//! `Err` with what to do.

use crate::client::{ApiError, Client};
use crate::cluster::{Cluster, Instance};
use serde_json::{json, Value};
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The fault a drill injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of the target's process (a crash).
    Kill,
    /// SIGSTOP for the duration, then SIGCONT (a frozen VM).
    Stop(Duration),
    /// The cluster file's `cut` command, `heal` after the duration.
    Cut(Duration),
}

impl Fault {
    /// `kill`, `stop` or `cut`.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Stop(_) => "stop",
            Fault::Cut(_) => "cut",
        }
    }

    fn duration(&self) -> Duration {
        match self {
            Fault::Kill => Duration::ZERO,
            Fault::Stop(d) | Fault::Cut(d) => *d,
        }
    }
}

/// What to drill.
#[derive(Clone, Debug)]
pub struct DrillSpec {
    /// The active to fail.
    pub target: String,
    pub fault: Fault,
    /// Calls through each active carrying traffic.
    pub calls: u64,
    /// Calls/s per active.
    pub rate: f64,
    /// Media before the fault, once every call is up.
    pub media_before: Duration,
    /// Media through the standby before the calls' in-dialog check.
    pub media_after: Duration,
    /// Calls through the other actives too (they must be unaffected).
    pub others: bool,
}

/// How a drill went: `json` is `drill.json`, `text` the printed report.
#[derive(Clone, Debug)]
pub struct DrillOutcome {
    pub json: Value,
    pub text: String,
    pub calls: u64,
    pub ok: u64,
    pub lost: u64,
    pub dir: PathBuf,
}

impl DrillOutcome {
    /// Every call survived.
    pub fn passed(&self) -> bool {
        self.calls > 0 && self.lost == 0 && self.ok == self.calls
    }
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn api(e: ApiError) -> String {
    e.to_string()
}

/// A child process whose output goes to files in the run directory; killed
/// when dropped (a drill leaves nothing running).
struct Proc {
    name: String,
    child: Child,
    stderr: PathBuf,
}

impl Proc {
    fn spawn(
        wrap: &[String],
        program: &Path,
        args: &[String],
        dir: &Path,
        name: &str,
    ) -> Result<Proc, String> {
        let stderr = dir.join(format!("{name}.log"));
        let err = File::create(&stderr).map_err(|e| format!("{}: {e}", stderr.display()))?;
        let mut cmd = match wrap.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        };
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {name} ({} {}): {e} — check [drill] callgen / uac_wrap / uas_wrap in the cluster file",
                    wrap.join(" "),
                    program.display()
                )
            })?;
        Ok(Proc {
            name: name.to_string(),
            child,
            stderr,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn tail(&self) -> String {
        let l = self.log();
        let lines: Vec<&str> = l.lines().collect();
        let from = lines.len().saturating_sub(15);
        format!(
            "--- {} ({}):\n{}",
            self.name,
            self.stderr.display(),
            lines[from..].join("\n")
        )
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// The last `--progress` line containing `needle`, without its stamp.
    fn progress(&self, needle: &str) -> String {
        let l = self.log();
        l.lines()
            .rev()
            .find(|l| l.contains(needle))
            .map(|l| {
                let l = l.split_once("] ").map_or(l, |(_, r)| r);
                l.split(" | worst").next().unwrap_or(l).to_string()
            })
            .unwrap_or_else(|| "starting".into())
    }

    fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return Ok(());
            }
            if !self.running() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("{} did not start\n{}", self.name, self.tail()))
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Where one active's calls go.
struct Leg {
    instance: String,
    access_sip: SocketAddr,
    next_hop: SocketAddr,
}

fn leg(c: &Cluster, i: &Instance) -> Result<Leg, String> {
    let st = Client::new(i, c.timeout).json("/v1/stats").map_err(api)?;
    let addr = |k: &str| -> Result<SocketAddr, String> {
        st["service"][k]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                format!(
                    "{}: /v1/stats has no service.{k} — is it a bgf of the same version?",
                    i.name
                )
            })
    };
    Ok(Leg {
        instance: i.name.clone(),
        access_sip: addr("access_sip")?,
        next_hop: addr("core_next_hop")?,
    })
}

/// The standby protecting `target` (its instance), checked ready.
fn protecting_standby<'a>(c: &'a Cluster, target: &str) -> Result<&'a Instance, String> {
    let mut seen = Vec::new();
    for i in &c.instances {
        let Ok(v) = Client::new(i, c.timeout).json("/v1/standby") else {
            continue;
        };
        let Some(g) = v["protected"]
            .as_array()
            .and_then(|p| p.iter().find(|g| g["instance"] == target))
        else {
            continue;
        };
        if v["role"] != "standby" {
            seen.push(format!(
                "{} is {} (serves {})",
                i.name, v["role"], v["serving"]
            ));
            continue;
        }
        if g["state"] != "protected" || g["heartbeat"]["state"] != "alive" {
            seen.push(format!(
                "{} sees {target} as {} with heartbeats {}",
                i.name, g["state"], g["heartbeat"]["state"]
            ));
            continue;
        }
        return Ok(i);
    }
    Err(format!(
        "no standby in {} protects {target} right now{} — a failure now would lose its calls; run `bgfctl status` and restore N+1 protection first",
        c.path.display(),
        if seen.is_empty() {
            String::new()
        } else {
            format!(" ({})", seen.join("; "))
        }
    ))
}

fn callgen_path(c: &Cluster) -> PathBuf {
    if let Some(p) = &c.drill.callgen {
        return p.clone();
    }
    if let Some(p) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("bgf-callgen")))
        .filter(|p| p.exists())
    {
        return p;
    }
    PathBuf::from("bgf-callgen")
}

fn port_slices(spec: Option<&str>, n: usize, per: u64) -> Result<Vec<String>, String> {
    let s = spec.unwrap_or("24000-27999");
    let bad = || format!("[drill] rtp_ports {s:?}: use LOW-HIGH, e.g. \"24000-27999\"");
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let (lo, hi): (u32, u32) = (
        lo.trim().parse().map_err(|_| bad())?,
        hi.trim().parse().map_err(|_| bad())?,
    );
    if lo < 1024 || hi > 65535 || hi <= lo {
        return Err(bad());
    }
    let slice = (hi - lo + 1) / n as u32;
    if u64::from(slice) < per {
        return Err(format!(
            "[drill] rtp_ports {s:?} is too small: {n} call generators need {per} ports each — widen it or place fewer calls"
        ));
    }
    Ok((0..n as u32)
        .map(|k| format!("{}-{}", lo + k * slice, lo + (k + 1) * slice - 1))
        .collect())
}

/// Per-call longest media gap (either direction) of a callgen report, sorted.
pub fn gaps(r: &Value) -> Vec<f64> {
    let mut g: Vec<f64> = r["calls"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let d = c["down"]["max_gap_ms"].as_f64().unwrap_or(f64::NAN);
                    let u = c["up"]["max_gap_ms"].as_f64().unwrap_or(f64::NAN);
                    d.max(u)
                })
                .collect()
        })
        .unwrap_or_default();
    g.sort_by(|a, b| a.total_cmp(b));
    g
}

/// Percentile `p` (0..=100, nearest rank) of sorted `v`; NaN when empty.
pub fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

/// A progress printer: `[  12.3 s] message`.
pub type Say<'a> = &'a mut dyn FnMut(&str);

/// Runs a drill; `Err` when it cannot be run (nothing protected, a call
/// generator did not start, ...), `Ok` with the outcome otherwise (lost
/// calls included). Reports go in a new directory under `report_dir`.
pub fn run(
    c: &Cluster,
    spec: &DrillSpec,
    report_dir: &Path,
    say: Say,
) -> Result<DrillOutcome, String> {
    let target = c.get(&spec.target)?.clone();
    if spec.calls == 0 || spec.rate <= 0.0 {
        return Err("--calls and --rate must be positive".into());
    }
    let health = Client::new(&target, c.timeout)
        .json("/health")
        .map_err(api)?;
    if health["role"] != "active" {
        return Err(format!(
            "{} is not an active (its /health says role {}) — drill an active",
            target.name, health["role"]
        ));
    }
    if let Fault::Cut(_) = spec.fault {
        if target.cut.is_none() {
            return Err(format!(
                "--mode cut needs `cut` and `heal` commands for {} in {} (e.g. cut = [\"openstack\", \"port\", \"set\", \"--disable\", \"PORT\"]); or use --mode kill|stop",
                target.name,
                c.path.display()
            ));
        }
    }
    let sb = protecting_standby(c, &target.name)?.clone();
    let mut legs = vec![leg(c, &target)?];
    if spec.others {
        for i in &c.instances {
            if i.name != target.name
                && Client::new(i, c.timeout)
                    .json("/health")
                    .is_ok_and(|h| h["role"] == "active")
            {
                legs.push(leg(c, i)?);
            }
        }
    }
    let started_ms = unix_ms();
    let dir = report_dir.join(format!("drill-{}-{}", target.name, started_ms as u64));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let callgen = callgen_path(c);
    let ports = port_slices(c.drill.rtp_ports.as_deref(), 2 * legs.len(), spec.calls * 4)?;
    let setup = Duration::from_secs_f64(spec.calls as f64 / spec.rate);
    let hold = setup
        + spec.media_before
        + spec.fault.duration()
        + spec.media_after
        + Duration::from_secs(5);
    let max_run = (hold + setup + Duration::from_secs(90)).as_secs();
    say(&format!(
        "drill: {} of {} ({}), standby {} protects it; {} calls at {}/s through {}; reports in {}",
        spec.fault.name(),
        target.name,
        target.admin,
        sb.name,
        spec.calls,
        spec.rate,
        legs.iter()
            .map(|l| l.instance.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        dir.display()
    ));

    // Call generators.
    let mut uas = Vec::new();
    let mut uac = Vec::new();
    for (j, l) in legs.iter().enumerate() {
        let sock = dir.join(format!("uas-{}.sock", l.instance));
        let mut p = Proc::spawn(
            &c.drill.uas_wrap,
            &callgen,
            &[
                "uas".into(),
                "--local".into(),
                l.next_hop.to_string(),
                "--ctl-listen".into(),
                format!("unix:{}", sock.display()),
                "--rtp-ports".into(),
                ports[2 * j].clone(),
                "--progress".into(),
                "--max-run-s".into(),
                max_run.to_string(),
            ],
            &dir,
            &format!("uas-{}", l.instance),
        )?;
        p.wait_log("SIP on", Duration::from_secs(20))?;
        uas.push(p);
    }
    for (j, l) in legs.iter().enumerate() {
        let ue: IpAddr = match l.access_sip {
            SocketAddr::V4(_) => c.drill.uac_ip.map(IpAddr::V4).ok_or_else(|| {
                format!("{} has an IPv4 access address: set [drill] uac_ip (the UE side's IPv4 address) in {}", l.instance, c.path.display())
            })?,
            SocketAddr::V6(_) => c.drill.uac_ip6.map(IpAddr::V6).ok_or_else(|| {
                format!("{} has an IPv6 access address: set [drill] uac_ip6 (the UE side's IPv6 address) in {}", l.instance, c.path.display())
            })?,
        };
        let file = |ext: &str| {
            dir.join(format!("calls-{}.{ext}", l.instance))
                .display()
                .to_string()
        };
        let p = Proc::spawn(
            &c.drill.uac_wrap,
            &callgen,
            &[
                "uac".into(),
                "--local".into(),
                SocketAddr::new(ue, 5060 + 10 * j as u16).to_string(),
                "--proxy".into(),
                l.access_sip.to_string(),
                "--rtp-ports".into(),
                ports[2 * j + 1].clone(),
                "--calls".into(),
                spec.calls.to_string(),
                "--rate".into(),
                spec.rate.to_string(),
                "--hold-ms".into(),
                hold.as_millis().to_string(),
                "--gap-threshold-ms".into(),
                "60".into(),
                "--json".into(),
                file("json"),
                "--svg".into(),
                file("svg"),
                "--progress".into(),
                "--ctl-connect".into(),
                format!(
                    "unix:{}",
                    dir.join(format!("uas-{}.sock", l.instance)).display()
                ),
            ],
            &dir,
            &format!("uac-{}", l.instance),
        )?;
        uac.push(p);
    }
    let sbc = Client::new(&sb, c.timeout);
    let progress = |uac: &[Proc]| {
        legs.iter()
            .zip(uac)
            .map(|(l, p)| format!("via {}: {}", l.instance, p.progress("uac calls up")))
            .collect::<Vec<_>>()
            .join(" | ")
    };

    // Every call up at both ends and in the standby's replica.
    let up_uac = format!("uac calls up {n} started {n}", n = spec.calls);
    let up_uas = format!("calls up {n} total {n}", n = spec.calls);
    let deadline = Instant::now() + setup + Duration::from_secs(30);
    let mut last = Instant::now();
    loop {
        let up = uac.iter().all(|p| p.log().contains(&up_uac))
            && uas.iter().all(|p| p.log().contains(&up_uas));
        let replica = sbc.json("/v1/standby").ok().and_then(|v| {
            v["protected"].as_array().and_then(|p| {
                p.iter()
                    .find(|g| g["instance"] == target.name.as_str())
                    .cloned()
            })
        });
        let replicated = replica.as_ref().is_some_and(|g| {
            g["replica"].is_null() // cold standby: nothing to wait for
                || (g["replica"]["sessions"].as_u64() >= Some(spec.calls) && g["replica"]["lag"] == 0)
        });
        if up && replicated {
            break;
        }
        if Instant::now() > deadline {
            let mut m = format!(
                "the calls were not all up (or not in {}'s replica) within {:.0} s — is the machine overloaded, or the call generator's path through {} broken?\n",
                sb.name,
                (setup + Duration::from_secs(30)).as_secs_f64(),
                target.name
            );
            for p in uac.iter().chain(&uas) {
                m += &p.tail();
                m += "\n";
            }
            return Err(m);
        }
        if last.elapsed() >= Duration::from_secs(1) {
            let rep = replica
                .map(|g| {
                    format!(
                        "{} replica: {} sessions, lag {}",
                        sb.name, g["replica"]["sessions"], g["replica"]["lag"]
                    )
                })
                .unwrap_or_default();
            say(&format!("  {} | {rep}", progress(&uac)));
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    say(&format!(
        "all {} calls up and replicated; media for {:.0} s before the fault ...",
        spec.calls * legs.len() as u64,
        spec.media_before.as_secs_f64()
    ));
    std::thread::sleep(spec.media_before);

    // The fault.
    let tc = Client::new(&target, c.timeout);
    let (fault_ms, how) = match spec.fault {
        Fault::Kill | Fault::Stop(_) => {
            let mut body = json!({"mode": spec.fault.name()});
            if let Fault::Stop(d) = spec.fault {
                body["duration_ms"] = json!(d.as_millis() as u64);
            }
            let r = tc
                .post("/v1/drill/fault", &body, c.timeout)
                .map_err(|e| format!("injecting the fault: {e}"))?;
            let at = r["at_unix_ms"].as_f64().unwrap_or_else(unix_ms);
            (
                at,
                format!(
                    "POST {}/v1/drill/fault {body} (pid {})",
                    target.admin, r["pid"]
                ),
            )
        }
        Fault::Cut(_) => {
            let cmd = target.cut.clone().unwrap_or_default();
            let at = unix_ms();
            run_cmd(&cmd).map_err(|e| format!("cut command of {}: {e}", target.name))?;
            (at, format!("cut command: {}", cmd.join(" ")))
        }
    };
    let t_fault = Instant::now();
    say(&format!(
        "FAULT {} injected into {} ({how})",
        spec.fault.name(),
        target.name
    ));

    // The takeover.
    let took = loop {
        if let Ok(v) = sbc.json("/v1/standby") {
            if v["role"] == "serving" && v["serving"] == target.name.as_str() {
                break v;
            }
            if t_fault.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "{} did not take over {} within 30 s of the fault: /v1/standby says {v} — read its log; the calls of {} are at risk",
                    sb.name, target.name, target.name
                ));
            }
        } else if t_fault.elapsed() > Duration::from_secs(30) {
            return Err(format!("{} not answering 30 s after the fault", sb.name));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    say(&format!(
        "{} serves {} ({:.0} ms after the fault, admin API polled)",
        sb.name,
        target.name,
        t_fault.elapsed().as_secs_f64() * 1000.0
    ));
    for p in &uac {
        p.signal(libc::SIGUSR1);
    }
    say(&format!(
        "marker sent: media keeps flowing; at the end of the hold every call re-INVITEs to a new media port through whoever serves it, checks media there and hangs up (~{:.0} s) ...",
        (hold.saturating_sub(t_fault.elapsed())).as_secs_f64()
    ));

    // Stop / cut end: the old active must step down (exit 3).
    let mut healed_ms = None;
    if let Fault::Cut(d) = spec.fault {
        std::thread::sleep(d.saturating_sub(t_fault.elapsed()));
        let cmd = target.heal.clone().unwrap_or_default();
        healed_ms = Some(unix_ms() - fault_ms);
        run_cmd(&cmd).map_err(|e| {
            format!(
                "heal command of {}: {e} — heal {} by hand",
                target.name, target.name
            )
        })?;
        say(&format!("healed {} ({})", target.name, cmd.join(" ")));
    }
    let wake = spec.fault.duration() + Duration::from_secs(10);
    let mut gone_ms = None;
    while t_fault.elapsed() < wake {
        match tc.json("/health") {
            Err(ApiError::Unreachable(_)) if t_fault.elapsed() >= spec.fault.duration() => {
                gone_ms = Some(unix_ms() - fault_ms);
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
        if last.elapsed() >= Duration::from_secs(1) {
            say(&format!("  {}", progress(&uac)));
            last = Instant::now();
        }
    }
    match gone_ms {
        Some(ms) if spec.fault != Fault::Kill => say(&format!(
            "the old {} stepped down (its admin API stopped answering {ms:.0} ms after the fault: fenced, addresses dropped, exit 3)",
            target.name
        )),
        None => say(&format!(
            "WARNING the old {} still answers on its admin API {:.0} s after the fault — it should have exited (fenced); check it",
            target.name,
            wake.as_secs_f64()
        )),
        _ => {}
    }

    // The calls' end.
    let end = Instant::now() + hold + Duration::from_secs(60);
    while uac.iter_mut().any(|p| p.running()) && Instant::now() < end {
        if last.elapsed() >= Duration::from_secs(1) {
            say(&format!("  {}", progress(&uac)));
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let takeover = wait_final_report(&sbc).unwrap_or_else(|| took["last_takeover"].clone());
    let mut traffic = Vec::new();
    let (mut calls, mut ok, mut lost) = (0, 0, 0);
    for (l, p) in legs.iter().zip(uac.iter_mut()) {
        let code = p.wait_exit(Duration::from_secs(10));
        let json_path = dir.join(format!("calls-{}.json", l.instance));
        let r: Value = std::fs::read(&json_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                format!(
                    "{}: no call report {}\n{}",
                    p.name,
                    json_path.display(),
                    p.tail()
                )
            })?;
        let n = |k: &str| r["summary"][k].as_u64().unwrap_or(0);
        calls += n("calls");
        ok += n("ok");
        lost += n("lost");
        let g = gaps(&r);
        traffic.push(json!({
            "instance": l.instance,
            "failed_instance": l.instance == target.name,
            "access": l.access_sip.to_string(),
            "calls": n("calls"), "ok": n("ok"), "failed": n("failed"), "lost": n("lost"),
            "lost_call_ids": r["lost_call_ids"],
            "gap_ms": {"p50": pct(&g, 50.0), "p95": pct(&g, 95.0), "p99": pct(&g, 99.0), "max": pct(&g, 100.0)},
            "gaps_ms": g,
            "exit_code": code,
            "json": json_path.display().to_string(),
            "svg": dir.join(format!("calls-{}.svg", l.instance)).display().to_string(),
        }));
    }
    drop(uas);
    let report = json!({
        "drill": {
            "target": target.name, "mode": spec.fault.name(),
            "fault_duration_ms": spec.fault.duration().as_millis() as u64,
            "calls_per_active": spec.calls, "rate": spec.rate,
            "started_unix_ms": started_ms as u64, "dir": dir.display().to_string(),
        },
        "standby": sb.name,
        "fault": {"injected_unix_ms": fault_ms as u64, "how": how},
        "timeline_ms": timeline(&takeover, fault_ms, healed_ms, gone_ms, spec.fault),
        "phases_ms": phases(&takeover, fault_ms),
        "takeover": takeover,
        "old_active_stepped_down_ms": gone_ms,
        "traffic": traffic,
        "calls": calls, "ok": ok, "lost": lost,
        "passed": calls > 0 && lost == 0 && ok == calls,
    });
    let text = report_text(&report);
    let _ = std::fs::write(
        dir.join("drill.json"),
        serde_json::to_vec_pretty(&report).unwrap_or_default(),
    );
    let _ = std::fs::write(dir.join("drill.txt"), &text);
    Ok(DrillOutcome {
        json: report,
        text,
        calls,
        ok,
        lost,
        dir,
    })
}

fn run_cmd(cmd: &[String]) -> Result<(), String> {
    let (p, args) = cmd.split_first().ok_or("empty command")?;
    let out = Command::new(p)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cmd.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({}): {}",
            cmd.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The takeover report once its first-media and first-SIP marks are in
/// (they come with traffic; up to 20 s).
fn wait_final_report(sb: &Client) -> Option<Value> {
    let end = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    while Instant::now() < end {
        if let Ok(v) = sb.json("/v1/standby") {
            let r = v["last_takeover"].clone();
            if r["first_media_us"].is_u64() && r["first_sip_us"].is_u64() {
                return Some(r);
            }
            last = Some(r);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

const MARKS: &[(&str, &str)] = &[
    ("fenced", "fenced_us"),
    ("log drained", "drained_us"),
    ("addresses up", "addresses_up_us"),
    ("serving", "serving_us"),
    ("first announcement", "first_announcement_us"),
    ("first media forwarded", "first_media_us"),
    ("first SIP handled", "first_sip_us"),
];

/// Events in ms since the fault.
fn timeline(t: &Value, fault_ms: f64, healed: Option<f64>, gone: Option<f64>, f: Fault) -> Value {
    let det = t["detected_unix_ms"].as_f64().map(|d| d - fault_ms);
    let mut ev = vec![json!({"event": format!("fault ({})", f.name()), "at_ms": 0.0})];
    if let Some(d) = det {
        ev.push(json!({"event": format!("detected ({})", t["reason"].as_str().unwrap_or("?")), "at_ms": d}));
        for (label, k) in MARKS {
            if let Some(us) = t[*k].as_f64() {
                ev.push(json!({"event": label, "at_ms": d + us / 1000.0}));
            }
        }
    }
    if let Some(h) = healed {
        ev.push(json!({"event": "healed", "at_ms": h}));
    }
    if let (Some(g), false) = (gone, f == Fault::Kill) {
        ev.push(json!({"event": "old active stepped down", "at_ms": g}));
    }
    ev.sort_by(|a, b| {
        a["at_ms"]
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&b["at_ms"].as_f64().unwrap_or(0.0))
    });
    Value::Array(ev)
}

/// Phase durations in ms: detection (fault → detected) and the takeover's.
fn phases(t: &Value, fault_ms: f64) -> Value {
    let us = |k: &str| t[k].as_f64().map(|v| v / 1000.0);
    let d = |a: &str, b: &str| match (us(a), us(b)) {
        (Some(x), Some(y)) => json!(y - x),
        _ => Value::Null,
    };
    json!({
        "detection": t["detected_unix_ms"].as_f64().map(|x| x - fault_ms),
        "fence": us("fenced_us"),
        "drain": d("fenced_us", "drained_us"),
        "addresses": d("drained_us", "addresses_up_us"),
        "serve": d("addresses_up_us", "serving_us"),
        "announce": d("serving_us", "first_announcement_us"),
        "to_first_media": us("first_media_us"),
    })
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.2} ms"))
}

/// The printed report of a takeover (a drill's or a switchover's).
pub fn takeover_text(t: &Value) -> String {
    let mut s = format!(
        "takeover of {} by reason {}: new epoch {}, {} sessions and {} registrations carried over, {} records drained, {} addresses added\n",
        t["instance"], t["reason"], t["epoch"], t["sessions"], t["registrations"], t["records_drained"], t["addresses_added"]
    );
    s += "  since detection:";
    for (label, k) in MARKS {
        s += &format!(
            " {label} {};",
            ms(&t[*k].as_f64().map(|v| v / 1000.0).into())
        );
    }
    s.pop();
    s.push('\n');
    s
}

/// The printed drill report (from `drill.json`).
pub fn report_text(r: &Value) -> String {
    let d = &r["drill"];
    let mut s = String::from("\n== failover drill report ==\n");
    s += &format!(
        "drill: {} of {} (standby {}), {} calls per active at {}/s; {}\n",
        d["mode"].as_str().unwrap_or("?"),
        d["target"].as_str().unwrap_or("?"),
        r["standby"].as_str().unwrap_or("?"),
        d["calls_per_active"],
        d["rate"],
        r["fault"]["how"].as_str().unwrap_or("")
    );
    s += "timeline (ms since the fault):\n";
    for e in r["timeline_ms"].as_array().into_iter().flatten() {
        s += &format!(
            "  {:>9.2}  {}\n",
            e["at_ms"].as_f64().unwrap_or(f64::NAN),
            e["event"].as_str().unwrap_or("?")
        );
    }
    let p = &r["phases_ms"];
    s += &format!(
        "phases: detection {}, fence {}, drain {}, addresses {}, serve {}, announce {}; first media {} after detection\n",
        ms(&p["detection"]),
        ms(&p["fence"]),
        ms(&p["drain"]),
        ms(&p["addresses"]),
        ms(&p["serve"]),
        ms(&p["announce"]),
        ms(&p["to_first_media"])
    );
    s += &takeover_text(&r["takeover"]);
    s += "calls (per call: longest media gap, either direction):\n";
    s += &format!(
        "  {:<28}{:>6}{:>6}{:>6}{:>10}{:>10}{:>10}{:>10}\n",
        "", "calls", "ok", "lost", "gap p50", "p95", "p99", "max"
    );
    for t in r["traffic"].as_array().into_iter().flatten() {
        let what = format!(
            "via {} ({}){}",
            t["instance"].as_str().unwrap_or("?"),
            if t["access"].as_str().is_some_and(|a| a.starts_with('[')) {
                "IPv6"
            } else {
                "IPv4"
            },
            if t["failed_instance"] == true {
                " failed over"
            } else {
                ""
            }
        );
        let g = |k: &str| {
            t["gap_ms"][k]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.0} ms"))
        };
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        s += &format!(
            "  {what:<28}{:>6}{:>6}{:>6}{:>10}{:>10}{:>10}{:>10}\n",
            n("calls"),
            n("ok"),
            n("lost"),
            g("p50"),
            g("p95"),
            g("p99"),
            g("max")
        );
        if let Some(ids) = t["lost_call_ids"].as_array().filter(|a| !a.is_empty()) {
            s += &format!(
                "    lost Call-IDs: {}\n",
                ids.iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    s += &format!(
        "result: {} — {} of {} calls ok, {} lost\n",
        if r["passed"] == true {
            "PASSED"
        } else {
            "FAILED"
        },
        r["ok"],
        r["calls"],
        r["lost"]
    );
    s += "files:\n";
    let dir = d["dir"].as_str().unwrap_or(".");
    s += &format!("  {dir}/drill.json (this report), {dir}/drill.txt\n");
    for t in r["traffic"].as_array().into_iter().flatten() {
        s += &format!(
            "  {} (per call), {} (plot)\n",
            t["json"].as_str().unwrap_or("?"),
            t["svg"].as_str().unwrap_or("?")
        );
    }
    s
}

/// A planned switchover of `instance` to the standby protecting it: the
/// standby takes over at once (no detection delay), the old active learns
/// it was fenced, drops its addresses and exits 3. Returns the standby's
/// takeover report and whether the old active stepped down in time.
pub fn switchover(c: &Cluster, instance: &str, say: Say) -> Result<Value, String> {
    let target = c.get(instance)?.clone();
    let sb = protecting_standby(c, instance)?.clone();
    let sbc = Client::new(&sb, c.timeout);
    let lag = sbc
        .json("/v1/standby")
        .ok()
        .and_then(|v| {
            v["protected"].as_array().and_then(|p| {
                p.iter()
                    .find(|g| g["instance"] == instance)
                    .map(|g| g["replica"]["lag"].clone())
            })
        })
        .unwrap_or(Value::Null);
    say(&format!(
        "switchover: {} takes over {instance} now (replica lag {lag} records); {instance} steps down",
        sb.name
    ));
    let t0 = Instant::now();
    let report = sbc
        .post(
            "/v1/standby/switchover",
            &json!({"instance": instance}),
            Duration::from_secs(70),
        )
        .map_err(|e| format!("switchover refused: {e}"))?;
    say(&format!(
        "{} serves {instance} ({:.0} ms after the request)",
        sb.name,
        t0.elapsed().as_secs_f64() * 1000.0
    ));
    say(takeover_text(&report).trim_end());
    let tc = Client::new(&target, c.timeout);
    let mut stepped = None;
    while t0.elapsed() < Duration::from_secs(15) {
        if let Err(ApiError::Unreachable(_)) = tc.json("/health") {
            stepped = Some(t0.elapsed().as_secs_f64() * 1000.0);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match stepped {
        Some(ms) => say(&format!(
            "old {instance} stepped down ({ms:.0} ms after the request: fenced, addresses dropped, exit 3) — the cluster has NO standby now: after the maintenance start that host as the standby (`bgf standby --config ...`) to restore N+1 protection"
        )),
        None => say(&format!(
            "WARNING old {instance} still answers 15 s after the switchover — it should have exited 3 (fenced); stop it (`systemctl stop bgf-active`)"
        )),
    }
    Ok(json!({
        "instance": instance,
        "standby": sb.name,
        "takeover": report,
        "old_active_stepped_down_ms": stepped,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_ports_are_shared_out_or_refused() {
        let s = port_slices(Some("24000-27999"), 4, 100).unwrap();
        assert_eq!(
            s,
            ["24000-24999", "25000-25999", "26000-26999", "27000-27999"]
        );
        assert!(port_slices(Some("24000-24099"), 4, 100)
            .unwrap_err()
            .contains("too small"));
        for bad in ["x", "100-200", "30000-20000", "1-2-3", "24000-70000"] {
            assert!(port_slices(Some(bad), 1, 1).is_err(), "{bad}");
        }
        assert_eq!(port_slices(None, 1, 1).unwrap(), ["24000-27999"]);
    }

    #[test]
    fn percentiles_and_gaps() {
        let r = json!({"calls": [
            {"down": {"max_gap_ms": 20.0}, "up": {"max_gap_ms": 80.0}},
            {"down": {"max_gap_ms": 30.0}, "up": {"max_gap_ms": 10.0}},
        ]});
        let g = gaps(&r);
        assert_eq!(g, [30.0, 80.0]);
        assert_eq!(pct(&g, 0.0), 30.0);
        assert_eq!(pct(&g, 100.0), 80.0);
        assert!(pct(&[], 50.0).is_nan());
    }

    fn takeover() -> Value {
        json!({"instance": "bgf1", "reason": "missed", "epoch": 2, "sessions": 3,
            "registrations": 0, "records_drained": 1, "addresses_added": 2,
            "detected_unix_ms": 1_000_150u64, "fenced_us": 2000, "drained_us": 2500,
            "addresses_up_us": 3000, "serving_us": 4000, "first_announcement_us": 4100,
            "first_media_us": 9000, "first_sip_us": null})
    }

    #[test]
    fn timeline_is_relative_to_the_fault_and_ordered() {
        let t = timeline(
            &takeover(),
            1_000_000.0,
            Some(3000.0),
            Some(3100.0),
            Fault::Cut(Duration::from_secs(3)),
        );
        let ev: Vec<(String, f64)> = t
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["event"].as_str().unwrap().to_string(),
                    e["at_ms"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(ev[0], ("fault (cut)".into(), 0.0));
        assert_eq!(ev[1], ("detected (missed)".into(), 150.0));
        assert_eq!(ev[2], ("fenced".into(), 152.0));
        assert!(ev
            .iter()
            .any(|e| e.0 == "first media forwarded" && e.1 == 159.0));
        assert!(
            !ev.iter().any(|e| e.0 == "first SIP handled"),
            "not yet: {ev:?}"
        );
        assert_eq!(ev[ev.len() - 2].0, "healed");
        assert_eq!(ev[ev.len() - 1].0, "old active stepped down");
        assert!(ev.windows(2).all(|w| w[0].1 <= w[1].1));
        // A kill has no step-down event.
        let k = timeline(&takeover(), 1_000_000.0, None, Some(10.0), Fault::Kill);
        assert!(!k.to_string().contains("stepped down"));
        let p = phases(&takeover(), 1_000_000.0);
        assert_eq!(p["detection"], 150.0);
        assert_eq!(p["drain"], 0.5);
        assert!((p["announce"].as_f64().unwrap() - 0.1).abs() < 1e-9, "{p}");
    }

    #[test]
    fn report_lists_lost_calls_and_the_verdict() {
        let r = json!({
            "drill": {"target": "bgf1", "mode": "kill", "calls_per_active": 2, "rate": 5.0, "dir": "/r"},
            "standby": "sb1",
            "fault": {"how": "POST x"},
            "timeline_ms": timeline(&takeover(), 1_000_000.0, None, None, Fault::Kill),
            "phases_ms": phases(&takeover(), 1_000_000.0),
            "takeover": takeover(),
            "traffic": [{"instance": "bgf1", "failed_instance": true, "access": "[fd00::1]:5060",
                "calls": 2, "ok": 1, "lost": 1, "lost_call_ids": ["abc@x"],
                "gap_ms": {"p50": 20.0, "p95": 30.0, "p99": 30.0, "max": 30.0},
                "json": "/r/calls-bgf1.json", "svg": "/r/calls-bgf1.svg"}],
            "calls": 2, "ok": 1, "lost": 1, "passed": false,
        });
        let t = report_text(&r);
        assert!(t.contains("via bgf1 (IPv6) failed over"), "{t}");
        assert!(t.contains("lost Call-IDs: abc@x"), "{t}");
        assert!(
            t.contains("result: FAILED — 1 of 2 calls ok, 1 lost"),
            "{t}"
        );
        assert!(t.contains("150.00  detected (missed)"), "{t}");
        assert!(t.contains("/r/calls-bgf1.svg (plot)"), "{t}");
    }
}
