//! Runs `bgf-callgen` (ops/callgen) from the tests: finds (or builds once)
//! the binary of the profile the tests run under, starts a UAS or UAC with
//! its output in the test directory, waits with a bound, and reads the JSON
//! report as a `serde_json::Value` (the tests check the documented schema,
//! not the tool's Rust types).

use crate::util::{signal, tail_file, terminate, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn build() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("BGF_CALLGEN_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut dir = exe
        .parent()
        .ok_or("test executable has no parent")?
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().map(Path::to_path_buf).unwrap_or(dir);
    }
    let profile = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or("cannot tell the profile")?;
    let target = dir.parent().ok_or("no target dir")?.to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(crate::build::workspace_root())
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "-q", "-p", "bgf-callgen", "--bin", "bgf-callgen"]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        p => {
            cmd.args(["--profile", p]);
        }
    }
    let st = cmd
        .status()
        .map_err(|e| format!("cannot run {cargo} build -p bgf-callgen: {e}"))?;
    if !st.success() {
        return Err(format!("`cargo build -p bgf-callgen` failed: {st}"));
    }
    let bin = target.join(&profile).join("bgf-callgen");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} missing after the build", bin.display()))
    }
}

/// The `bgf-callgen` binary (built at most once per test process).
pub fn callgen_binary() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(build)
        .clone()
        .unwrap_or_else(|e| panic!("bgf-callgen: {e}"))
}

/// A running `bgf-callgen` process.
pub struct Callgen {
    /// Which run (names its files).
    pub name: String,
    child: Option<Child>,
    dir: PathBuf,
    cmdline: String,
}

/// How a run ended.
#[derive(Debug)]
pub struct CallgenResult {
    /// Exit code (None: killed by a signal or timed out).
    pub code: Option<i32>,
    /// Its stdout (the summary table).
    pub stdout: String,
    /// Its stderr (progress, errors).
    pub stderr: String,
    /// The JSON report, if it wrote one.
    pub report: Option<serde_json::Value>,
    /// The command line.
    pub cmdline: String,
}

impl CallgenResult {
    /// For assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "bgf-callgen exit {:?}\n  cmd: {}\n--- stdout ---\n{}\n--- stderr (tail) ---\n{}",
            self.code,
            self.cmdline,
            self.stdout,
            &self.stderr[self.stderr.len().saturating_sub(3000)..]
        )
    }

    /// The report, panicking with the run's output if there is none.
    pub fn report(&self) -> &serde_json::Value {
        self.report
            .as_ref()
            .unwrap_or_else(|| panic!("no JSON report: {}", self.describe()))
    }
}

impl Callgen {
    /// Starts `bgf-callgen <args>` in `dir`; stdout/stderr go to
    /// `<name>.out` / `<name>.err` there.
    pub fn spawn(name: &str, dir: &Path, args: &[String]) -> Callgen {
        let bin = callgen_binary();
        let out = std::fs::File::create(dir.join(format!("{name}.out"))).unwrap();
        let err = std::fs::File::create(dir.join(format!("{name}.err"))).unwrap();
        let child = Command::new(&bin)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Callgen {
            name: name.into(),
            child: Some(child),
            dir: dir.to_path_buf(),
            cmdline: format!("bgf-callgen {}", args.join(" ")),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal (SIGUSR1: the marker; SIGKILL: vanish).
    pub fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.err", self.name))).unwrap_or_default()
    }

    /// Waits until its stderr contains `needle`.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.stderr().contains(needle).then_some(())).is_some()
    }

    /// Waits up to `timeout` for the exit (then SIGTERM/SIGKILL); reads the
    /// JSON report at `json` if given.
    pub fn wait(mut self, timeout: Duration, json: Option<&Path>) -> CallgenResult {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        let code = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st.code(),
                Ok(None) if Instant::now() >= deadline => {
                    terminate(&mut child, Duration::from_secs(2));
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break None,
            }
        };
        let report = json
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok());
        CallgenResult {
            code,
            stdout: tail_file(&self.dir.join(format!("{}.out", self.name)), 20_000),
            stderr: tail_file(&self.dir.join(format!("{}.err", self.name)), 20_000),
            report,
            cmdline: self.cmdline.clone(),
        }
    }
}

impl Drop for Callgen {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Turns `&str`s into an argument vector.
pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}
