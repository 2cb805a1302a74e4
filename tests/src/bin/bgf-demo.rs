//! # bgf-demo — an N+1 failover drill on this machine
//!
//! Run with `cargo run --release -p bgf-tests --bin bgf-demo`. It builds (or
//! finds) `bgf` and `bgf-callgen` of the same profile, starts a demo N+1
//! cluster — the embedded store (`bgf statelog`), two `bgf active`, one hot
//! `bgf standby` — in network namespaces when run as root (else on loopback
//! addresses, with the standby's address step simulated, which it says),
//! and runs the operator's drill against it (`bgfctl drill failover bgf1
//! --mode kill --others`): calls with RTP through both actives with
//! `bgf-callgen`, `kill -9` of active 1, the standby's takeover, the marker
//! (every call re-INVITEs and hangs up through whoever serves it) and the
//! drill report. Exit 0 only if no call was lost.
//!
//! Everything it starts is stopped at the end, on failure and on Ctrl-C /
//! SIGTERM (processes killed, namespaces deleted).
//!
//! Options: `--calls N` (per active, default 30), `--loopback` (loopback
//! even as root), `--report-dir DIR` (default `$TMPDIR/bgf-demo`).
//!
//! It owns nothing of the product; the drill itself is `bgf_tests::demo`.

use bgf_tests::demo::{self, DemoOptions};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// SIGINT / SIGTERM / SIGHUP: a watcher kills every process the drill
/// started and deletes its namespaces, then exits 130.
fn install_cleanup() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores into an atomic (async-signal-safe).
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    std::thread::spawn(|| loop {
        let sig = SIGNAL.load(Ordering::SeqCst);
        if sig != 0 {
            eprintln!("bgf-demo: signal {sig}: stopping every process of the drill and deleting its namespaces ...");
            bgf_tests::proc::kill_all();
            bgf_tests::netns::teardown_all();
            eprintln!("bgf-demo: interrupted; nothing left running");
            std::process::exit(130);
        }
        std::thread::sleep(Duration::from_millis(50));
    });
}

fn usage() -> ExitCode {
    eprintln!("usage: bgf-demo [--calls N] [--loopback] [--report-dir DIR]");
    ExitCode::from(2)
}

fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Namespaces need `ip` (iproute2) and `sysctl` (procps): as root, install
/// what is missing (saying so).
fn install_packages() -> Result<(), String> {
    let mut missing = Vec::new();
    if !have("ip", "-V") {
        missing.push("iproute2");
    }
    if !have("sysctl", "-V") {
        missing.push("procps");
    }
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "bgf-demo: installing Debian packages {} (apt-get) ...",
        missing.join(" ")
    );
    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    let installed = ok(Command::new("apt-get").args(["update", "-qq"]))
        && ok(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"));
    if installed {
        Ok(())
    } else {
        Err(format!(
            "cannot install {} — install it (`apt-get install {}`) and rerun, or run with --loopback",
            missing.join(" "),
            missing.join(" ")
        ))
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    let mut o = DemoOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--calls" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if (1..=1000).contains(&n) => o.calls = n,
                _ => return usage(),
            },
            "--loopback" => o.namespaces = false,
            "--report-dir" => match args.next() {
                Some(d) => o.report_dir = PathBuf::from(d),
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    install_cleanup();
    println!(
        "bgf-demo: an N+1 failover drill — store + 2 actives + hot standby, {} calls with RTP per active, kill -9 of active 1",
        o.calls
    );
    if o.namespaces {
        if let Err(e) = install_packages() {
            eprintln!("bgf-demo: {e}");
            return ExitCode::from(2);
        }
    } else {
        println!("bgf-demo: not root (or --loopback): the cluster runs on loopback addresses and the address takeover is SIMULATED");
    }
    println!("bgf-demo: building / finding bgf, bgf-callgen and bgfctl (this profile) ...");
    if let Err(e) = bgf_tests::build::bgf_binary()
        .and_then(|_| bgf_tests::build::workspace_binary("ops", "bgfctl", "BGFCTL_BIN"))
    {
        eprintln!("bgf-demo: {e}");
        return ExitCode::from(2);
    }
    let _ = bgf_tests::callgen::callgen_binary();
    let t_run = Instant::now();
    match demo::run(&o) {
        Ok(out) if out.passed() => {
            println!(
                "RESULT: PASS — all {} calls survived the loss of an active ({:.1} s drill, {:.1} s in all)",
                out.calls,
                t_run.elapsed().as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Ok(out) => {
            println!(
                "RESULT: FAIL — {} of {} calls lost, {} ok (reports in {})",
                out.lost,
                out.calls,
                out.ok,
                out.report_dir.display()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bgf-demo: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
