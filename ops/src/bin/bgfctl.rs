//! `bgfctl` — the operator's command line for a bgf cluster: cluster status
//! with its protection state, sessions, log inspection, failover drills,
//! planned switchover, shell completions and a man page. It reads the
//! cluster file (`--cluster`, `BGF_CLUSTER`) and talks to each process's
//! admin API; only `drill` and `switchover` change anything.
//!
//! Exit status: 0 success (status: N+1 protected; drill: every call
//! survived); 1 error (cluster file, token rejected, nothing reachable, not
//! found, drill could not run, switchover refused); 2 status is "no
//! standby" or "degraded" (or some instance did not answer a listing), or a
//! drill lost calls.

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use ops::client::{encode_segment, ApiError, Client};
use ops::cluster::{Cluster, Instance, DEFAULT_PATH};
use ops::drill;
use ops::status::{self, columns, Protection};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

/// bgfctl — status, sessions, logs, failover drills and switchover of a bgf
/// cluster (N actives + 1 standby).
#[derive(Parser, Debug)]
#[command(name = "bgfctl", version)]
struct Cli {
    /// Cluster file: the bgf processes and their admin URLs (TOML; see
    /// docs/OPERATIONS.md).
    #[arg(long, global = true, env = "BGF_CLUSTER", default_value = DEFAULT_PATH, value_name = "FILE")]
    cluster: PathBuf,
    /// File holding the admin bearer token (overrides the cluster file's).
    #[arg(long, global = true, env = "BGF_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// One table for the cluster: roles, service addresses, sessions, log
    /// lag, heartbeats, and the protection state (exit 2 unless "N+1
    /// protected").
    Status,
    /// Live sessions.
    Sessions {
        #[command(subcommand)]
        cmd: SessionsCmd,
    },
    /// State logs.
    Log {
        #[command(subcommand)]
        cmd: LogCmd,
    },
    /// Failover drills (lab and test deployments: the target needs
    /// `[admin] drills = true`; `--mode cut` the cluster file's cut/heal
    /// commands): calls with bgf-callgen, a fault, the standby's takeover,
    /// and a report (timeline, phases, per-call media gaps, calls lost)
    /// with a JSON file and plots.
    Drill {
        #[command(subcommand)]
        cmd: DrillCmd,
    },
    /// Planned move of an active's calls to the standby (maintenance): the
    /// standby takes over at once, the old active steps down (exits 3);
    /// calls keep going. Leaves the cluster without a standby.
    Switchover {
        /// The active to move.
        instance: String,
    },
    /// Print a shell completion script (e.g. `bgfctl completions bash >
    /// /etc/bash_completion.d/bgfctl`).
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff; `bgfctl man | man -l -`).
    Man,
}

#[derive(Subcommand, Debug)]
enum SessionsCmd {
    /// Sessions of every instance that serves calls (or of one).
    List {
        /// Only this instance (or the standby serving it).
        #[arg(long)]
        instance: Option<String>,
        /// Only this Call-ID.
        #[arg(long)]
        call_id: Option<String>,
        /// Only sessions in this state.
        #[arg(long, value_parser = ["early", "confirmed", "terminating"])]
        state: Option<String>,
        /// Only sessions set up from this side.
        #[arg(long, value_parser = ["access", "core"])]
        origin: Option<String>,
        /// At most this many sessions per instance.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One session by Call-ID, with its pinholes and their counters.
    Show {
        /// The SIP Call-ID.
        call_id: String,
    },
}

#[derive(Subcommand, Debug)]
enum LogCmd {
    /// Records, sizes and the last compaction of an instance's state log
    /// (read from the store by the instance itself, or by the standby
    /// protecting it when the instance does not answer).
    Inspect {
        /// The instance whose log to read.
        instance: String,
    },
}

#[derive(Subcommand, Debug)]
enum DrillCmd {
    /// Fail an active under calls and report how the standby carried them.
    Failover {
        /// The active to fail.
        instance: String,
        /// kill: SIGKILL (a crash); stop: SIGSTOP for --fault-ms (a frozen
        /// VM); cut: the cluster file's cut command, heal after --fault-ms.
        #[arg(long, value_enum, default_value_t = Mode::Kill)]
        mode: Mode,
        /// Calls through each active carrying traffic.
        #[arg(long, default_value_t = 20)]
        calls: u64,
        /// Calls/s per active.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// How long a stop or cut lasts (ms).
        #[arg(long, default_value_t = 3000)]
        fault_ms: u64,
        /// Media seconds before the fault, once every call is up.
        #[arg(long, default_value_t = 2.0)]
        before_s: f64,
        /// Media seconds through the standby before the calls' in-dialog check.
        #[arg(long, default_value_t = 5.0)]
        after_s: f64,
        /// Also place calls through every other active (they must not notice).
        #[arg(long)]
        others: bool,
        /// Where the run's directory goes (default: the cluster file's
        /// [drill] report_dir, else the current directory).
        #[arg(long, value_name = "DIR")]
        report_dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Kill,
    Stop,
    Cut,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// A failed command: message and exit code.
struct Fail(String, u8);

impl From<String> for Fail {
    fn from(s: String) -> Fail {
        Fail(s, 1)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Cmd::Completions { shell } => {
            let sh = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            let mut buf = Vec::new();
            clap_complete::generate(sh, &mut Cli::command(), "bgfctl", &mut buf);
            write_out(&buf)
        }
        Cmd::Man => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut buf)
                .map_err(|e| Fail(format!("rendering the man page: {e}"), 1))
                .and_then(|()| write_out(&buf))
        }
        cmd => Cluster::load(&cli.cluster, cli.token_file.as_deref())
            .map_err(Fail::from)
            .and_then(|c| match cmd {
                Cmd::Status => status_cmd(&c, cli.json),
                Cmd::Sessions { cmd } => sessions_cmd(&c, cmd, cli.json),
                Cmd::Log {
                    cmd: LogCmd::Inspect { instance },
                } => log_inspect(&c, instance, cli.json),
                Cmd::Drill { cmd } => drill_cmd(&c, cmd, cli.json),
                Cmd::Switchover { instance } => switchover_cmd(&c, instance, cli.json),
                Cmd::Completions { .. } | Cmd::Man => Ok(()),
            }),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(msg, code)) => {
            if !msg.is_empty() {
                eprintln!("bgfctl: {msg}");
            }
            ExitCode::from(code)
        }
    }
}

/// Write to stdout; a closed pipe (`| head`) is not an error.
fn write_out(b: &[u8]) -> Result<(), Fail> {
    use std::io::Write;
    match std::io::stdout().write_all(b) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Fail(format!("writing to stdout: {e}"), 1))
        }
        _ => Ok(()),
    }
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// Progress lines: `[  1.2 s] ...` on stdout, or stderr with --json.
fn progress(as_json: bool) -> impl FnMut(&str) {
    let t0 = std::time::Instant::now();
    move |m: &str| {
        let line = format!("[{:6.1} s] {m}", t0.elapsed().as_secs_f64());
        if as_json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

fn drill_cmd(c: &Cluster, cmd: &DrillCmd, as_json: bool) -> Result<(), Fail> {
    let DrillCmd::Failover {
        instance,
        mode,
        calls,
        rate,
        fault_ms,
        before_s,
        after_s,
        others,
        report_dir,
    } = cmd;
    let secs = |v: f64, what: &str| {
        if v.is_finite() && (0.0..=3600.0).contains(&v) {
            Ok(std::time::Duration::from_secs_f64(v))
        } else {
            Err(Fail(format!("{what} must be 0..=3600 seconds"), 1))
        }
    };
    let fault_d = std::time::Duration::from_millis(*fault_ms);
    if !(100..=600_000).contains(fault_ms) {
        return Err(Fail("--fault-ms must be 100..=600000".into(), 1));
    }
    if !(rate.is_finite() && *rate > 0.0 && *rate <= 1000.0 && (1..=10_000).contains(calls)) {
        return Err(Fail(
            "--rate must be in (0, 1000] and --calls 1..=10000".into(),
            1,
        ));
    }
    let spec = drill::DrillSpec {
        target: instance.clone(),
        fault: match mode {
            Mode::Kill => drill::Fault::Kill,
            Mode::Stop => drill::Fault::Stop(fault_d),
            Mode::Cut => drill::Fault::Cut(fault_d),
        },
        calls: *calls,
        rate: *rate,
        media_before: secs(*before_s, "--before-s")?,
        media_after: secs(*after_s, "--after-s")?,
        others: *others,
    };
    let dir = report_dir
        .clone()
        .or_else(|| c.drill.report_dir.clone())
        .unwrap_or_else(|| PathBuf::from("."));
    let mut say = progress(as_json);
    let out = drill::run(c, &spec, &dir, &mut say).map_err(Fail::from)?;
    if as_json {
        print_json(&out.json);
    } else {
        print!("{}", out.text);
    }
    if out.passed() {
        Ok(())
    } else {
        Err(Fail(
            format!(
                "the drill lost calls ({} of {} ok, {} lost) — read {}/drill.txt and the standby's log",
                out.ok,
                out.calls,
                out.lost,
                out.dir.display()
            ),
            2,
        ))
    }
}

fn switchover_cmd(c: &Cluster, instance: &str, as_json: bool) -> Result<(), Fail> {
    let mut say = progress(as_json);
    let r = drill::switchover(c, instance, &mut say).map_err(Fail::from)?;
    if as_json {
        print_json(&r);
    }
    Ok(())
}

fn status_cmd(c: &Cluster, as_json: bool) -> Result<(), Fail> {
    let all: Vec<status::InstanceStatus> = c
        .instances
        .iter()
        .map(|i| status::gather(&Client::new(i, c.timeout)))
        .collect();
    let (p, reasons) = status::protection(&all);
    if as_json {
        print_json(&json!({"protection": p, "reasons": reasons, "instances": all}));
    } else {
        print!("{}", status::table(&all, p, &reasons));
    }
    if all.iter().all(|i| !i.reachable) {
        return Err(Fail(
            format!(
                "no instance of {} answered — is the cluster running, and are the admin URLs right?",
                c.path.display()
            ),
            1,
        ));
    }
    if all
        .iter()
        .any(|i| matches!(&i.error, Some(e) if e.contains("HTTP 401")))
    {
        return Err(Fail(
            "the token was rejected (see above): fix --token-file or the cluster file's token"
                .into(),
            1,
        ));
    }
    match p {
        Protection::Protected => Ok(()),
        _ => Err(Fail(String::new(), 2)),
    }
}

/// The processes that serve calls (actives, standbys after a takeover), as
/// `(client, the instance it serves)`; the others' errors are collected.
fn serving<'a>(
    c: &'a Cluster,
    only: Option<&str>,
    errors: &mut Vec<String>,
) -> Vec<(Client<'a>, String)> {
    let mut out = Vec::new();
    for i in &c.instances {
        let cl = Client::new(i, c.timeout);
        let h = match cl.json("/health") {
            Ok(h) => h,
            Err(e) => {
                if only.is_none_or(|o| o == i.name) {
                    errors.push(e.to_string());
                }
                continue;
            }
        };
        let served = match h.get("role").and_then(|r| r.as_str()) {
            Some("active") => Some(i.name.clone()),
            _ => h.get("serving").and_then(|s| s.as_str()).map(String::from),
        };
        if let Some(k) = served {
            if only.is_none_or(|o| o == k || o == i.name) {
                out.push((cl, k));
            }
        }
    }
    out
}

fn sessions_cmd(c: &Cluster, cmd: &SessionsCmd, as_json: bool) -> Result<(), Fail> {
    let mut errors = Vec::new();
    match cmd {
        SessionsCmd::List {
            instance,
            call_id,
            state,
            origin,
            limit,
        } => {
            if let Some(i) = instance {
                c.get(i)?;
            }
            let mut q = vec![format!("limit={limit}")];
            for (k, v) in [("call_id", call_id), ("state", state), ("origin", origin)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", encode_segment(v)));
                }
            }
            let path = format!("/v1/sessions?{}", q.join("&"));
            let mut per = Vec::new();
            let mut rows = vec![[
                "INSTANCE", "CALL-ID", "STATE", "ORIGIN", "CREATED", "STREAMS",
            ]
            .map(String::from)
            .to_vec()];
            let mut footer = Vec::new();
            for (cl, served) in serving(c, instance.as_deref(), &mut errors) {
                let a = match cl.get(&path) {
                    Ok(a) => a,
                    Err(e) => {
                        errors.push(e.to_string());
                        continue;
                    }
                };
                let list: Vec<Value> = serde_json::from_str(&a.body).map_err(|e| {
                    format!(
                        "{}: /v1/sessions is not a JSON array ({e})",
                        cl.instance.name
                    )
                })?;
                for s in &list {
                    rows.push(vec![
                        served.clone(),
                        s["call_id"].as_str().unwrap_or("").to_string(),
                        s["state"].as_str().unwrap_or("").to_string(),
                        s["origin"].as_str().unwrap_or("").to_lowercase(),
                        s["created_at"].to_string(),
                        s["pinholes"].as_array().map_or(0, |p| p.len()).to_string(),
                    ]);
                }
                if a.matched.is_some_and(|m| m > list.len()) {
                    footer.push(format!(
                        "{served}: {} of {} matching sessions shown (--limit)",
                        list.len(),
                        a.matched.unwrap_or(0)
                    ));
                }
                per.push(
                    json!({"instance": served, "via": cl.instance.name, "total": a.total,
                    "matched": a.matched, "sessions": list}),
                );
            }
            if as_json {
                print_json(&json!({"instances": per, "errors": errors}));
            } else {
                print!("{}", columns(&rows));
                for f in footer {
                    println!("{f}");
                }
            }
            finish_listing(errors, per.is_empty(), as_json)
        }
        SessionsCmd::Show { call_id } => {
            let path = format!("/v1/sessions/{}", encode_segment(call_id));
            for (cl, served) in serving(c, None, &mut errors) {
                match cl.json(&path) {
                    Ok(s) => {
                        if as_json {
                            print_json(
                                &json!({"instance": served, "via": cl.instance.name, "session": s}),
                            );
                        } else {
                            print_session(&served, &s);
                        }
                        return Ok(());
                    }
                    Err(ApiError::Status(404, _)) => {}
                    Err(e) => errors.push(e.to_string()),
                }
            }
            let mut msg =
                format!("no live session with Call-ID {call_id:?} on any instance that answered");
            for e in &errors {
                msg.push_str(&format!("\n  {e}"));
            }
            Err(Fail(msg, 1))
        }
    }
}

/// Errors of a listing: printed; exit 1 if nothing answered, 2 if some did not.
fn finish_listing(errors: Vec<String>, nothing: bool, as_json: bool) -> Result<(), Fail> {
    if errors.is_empty() {
        return Ok(());
    }
    if !as_json {
        for e in &errors {
            eprintln!("bgfctl: {e}");
        }
    }
    let auth = errors.iter().any(|e| e.contains("HTTP 401"));
    Err(Fail(String::new(), if nothing || auth { 1 } else { 2 }))
}

fn print_session(served: &str, s: &Value) {
    println!("instance:  {served}");
    for k in ["call_id", "id", "state", "origin", "created_at"] {
        let v = &s[k];
        let txt = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        println!("{:<10} {txt}", format!("{k}:"));
    }
    let mut rows = vec![[
        "STREAM",
        "SIDE",
        "LOCAL",
        "REMOTE RTP",
        "REMOTE RTCP",
        "LATCH",
    ]
    .map(String::from)
    .to_vec()];
    for p in s["pinholes"].as_array().into_iter().flatten() {
        let stream = p["id"]["stream"].to_string();
        for side in ["access", "core"] {
            let l = &p[side];
            let f = |v: &Value| v.as_str().map_or("-".to_string(), str::to_string);
            rows.push(vec![
                stream.clone(),
                side.into(),
                f(&l["local"]),
                f(&l["remote_rtp"]),
                f(&l["remote_rtcp"]),
                if l["latch_ip"].is_null() {
                    "-".into()
                } else {
                    l["latch_ip"].to_string()
                },
            ]);
        }
    }
    println!();
    print!("{}", columns(&rows));
    let counters: Vec<&Value> = s["pinholes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| &p["counters"])
        .filter(|c| !c.is_null())
        .collect();
    if !counters.is_empty() {
        println!("\ncounters:");
        for (k, c) in counters.iter().enumerate() {
            println!("  stream {k}: {c}");
        }
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 10 << 20 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n if n >= 10 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn log_inspect(c: &Cluster, instance: &str, as_json: bool) -> Result<(), Fail> {
    let own = c.get(instance)?;
    let path = format!("/v1/log/{}", encode_segment(instance));
    let mut errors = Vec::new();
    // The instance first; then whoever else can read its log (a standby).
    let order: Vec<&Instance> = std::iter::once(own)
        .chain(c.instances.iter().filter(|i| i.name != instance))
        .collect();
    for i in order {
        match Client::new(i, c.timeout).json(&path) {
            Ok(r) => {
                if as_json {
                    let mut r = r;
                    if let Some(o) = r.as_object_mut() {
                        o.insert("via".into(), json!(i.name));
                    }
                    print_json(&r);
                } else {
                    print_log(&r, &i.name);
                }
                return Ok(());
            }
            Err(ApiError::Status(404, _)) if i.name != instance => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    let mut msg = format!(
        "nobody answered for the log of {instance}: the instance and every standby protecting it failed"
    );
    for e in &errors {
        msg.push_str(&format!("\n  {e}"));
    }
    Err(Fail(msg, 1))
}

fn print_log(r: &Value, via: &str) {
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let o = |v: &Value| v.as_u64().map_or("-".to_string(), |x| x.to_string());
    println!(
        "log of:       {} (read by {via})",
        r["instance"].as_str().unwrap_or("")
    );
    println!("epoch:        {}", o(&r["epoch"]));
    println!(
        "records:      {} ({}), seq {} .. {}",
        u(&r["records"]),
        bytes(u(&r["bytes"])),
        o(&r["first_seq"]),
        o(&r["last_seq"])
    );
    for k in ["inputs", "checkpoints", "operator"] {
        println!(
            "  {:<11} {} ({})",
            format!("{k}:"),
            u(&r[k]["records"]),
            bytes(u(&r[k]["bytes"]))
        );
    }
    match r["last_checkpoint"].as_object() {
        Some(cp) => println!(
            "checkpoint:   seq {} ({}), epoch {} — compaction removes what precedes it",
            o(&cp["seq"]),
            bytes(cp["bytes"].as_u64().unwrap_or(0)),
            o(&cp["epoch"])
        ),
        None => println!("checkpoint:   none yet (the whole log is replayed)"),
    }
    let w = &r["writer"];
    if w.is_object() {
        let when = w["last_compaction_unix_ms"].as_u64().map_or_else(
            || "never (this run)".to_string(),
            |ms| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                format!("{} s ago", now.saturating_sub(ms) / 1000)
            },
        );
        println!(
            "writer:       {} checkpoints, {} records compacted, last compaction {when}; durable seq {}, lag {}",
            u(&w["checkpoints"]),
            u(&w["truncated_records"]),
            o(&w["durable_seq"]),
            o(&w["lag"])
        );
    }
    if r["complete"].as_bool() == Some(false) {
        println!(
            "(scan stopped at {} records: the counts are partial)",
            o(&r["scan_limit"])
        );
    }
}
