//! Runs `bgf-callgen` (ops/callgen) from the tests: finds (or builds once)
//! the binary of the profile the tests run under, starts a UAS or UAC (on
//! loopback or inside a namespace; the process is a [`Proc`]) with its
//! output in the test directory, waits with a bound, and reads the JSON
//! report as a `serde_json::Value` (the tests check the documented schema,
//! not the tool's Rust types).

use crate::proc::Proc;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The `bgf-callgen` binary (`$BGF_CALLGEN_BIN`, else built at most once per test process).
pub fn callgen_binary() -> PathBuf {
    crate::build::workspace_binary("bgf-callgen", "bgf-callgen", "BGF_CALLGEN_BIN")
        .unwrap_or_else(|e| panic!("bgf-callgen: {e}"))
}

/// A running `bgf-callgen` process (a [`Proc`]: started plain or inside a
/// namespace, killed on drop).
pub struct Callgen {
    /// Which run (names its files).
    pub name: String,
    proc: Proc,
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
        Callgen::spawn_with(Command::new(callgen_binary()), name, dir, args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Callgen::spawn`] from a prepared command (e.g. `ip netns exec NS
    /// bgf-callgen` from [`crate::netns::Topology::command`]).
    pub fn spawn_with(
        cmd: Command,
        name: &str,
        dir: &Path,
        args: &[String],
    ) -> Result<Callgen, String> {
        Ok(Callgen {
            name: name.into(),
            proc: Proc::spawn(cmd, args, dir, name)?,
        })
    }

    /// The process.
    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Sends a signal (SIGUSR1: the marker; SIGKILL: vanish).
    pub fn signal(&self, sig: i32) {
        self.proc.signal(sig);
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    /// Both outputs' tails.
    pub fn logs(&self) -> String {
        self.proc.logs()
    }

    /// Waits until its stderr contains `needle`.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> bool {
        self.proc.wait_stderr(needle, timeout)
    }

    /// Waits up to `timeout` for the exit (then SIGTERM/SIGKILL); reads the
    /// JSON report at `json` if given.
    pub fn wait(mut self, timeout: Duration, json: Option<&Path>) -> CallgenResult {
        let code = match self.proc.wait_exit(timeout) {
            Some(st) => st.code(),
            None => {
                self.proc.terminate(Duration::from_secs(2));
                None
            }
        };
        let report = json
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok());
        CallgenResult {
            code,
            stdout: self.proc.stdout_tail(20_000),
            stderr: self.proc.stderr_tail(20_000),
            report,
            cmdline: self.proc.cmdline.clone(),
        }
    }
}

/// Turns `&str`s into an argument vector.
pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}
