//! One spawner for every helper process of the harness (`bgf` daemons,
//! `bgf-callgen`): a [`Proc`] is started from a [`Command`] — plain, or
//! `ip netns exec NS …` from [`crate::netns::Topology::command`] — with its
//! stdout / stderr in files of the test directory, waited on with bounds,
//! and killed (SIGCONT first, in case a test froze it) when dropped.
//!
//! Every live `Proc` is registered so that an interrupted run (the demo on
//! Ctrl-C) can kill all of them at once: [`kill_all`].

use crate::util::{signal, tail_file, terminate, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// SIGKILLs every [`Proc`] of this process that is still registered (for a
/// signal handler's cleanup; the `Proc`s' own drops reap them later).
pub fn kill_all() {
    let pids = LIVE.lock().map(|v| v.clone()).unwrap_or_default();
    for pid in pids {
        signal(pid, libc::SIGCONT);
        signal(pid, libc::SIGKILL);
    }
}

/// A started helper process, output in `<dir>/<name>.out` / `.err`.
pub struct Proc {
    /// Which process (names its files).
    pub name: String,
    /// The child (for `try_wait` and the like).
    pub child: Child,
    out: PathBuf,
    err: PathBuf,
    /// The command line, for messages.
    pub cmdline: String,
}

impl Proc {
    /// Starts `cmd ARGS` in `dir`.
    pub fn spawn(
        mut cmd: Command,
        args: &[String],
        dir: &Path,
        name: &str,
    ) -> Result<Proc, String> {
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        let file = |p: &Path| {
            std::fs::File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))
        };
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(file(&out)?)
            .stderr(file(&err)?);
        let cmdline = format!(
            "{} {}",
            cmd.get_program().to_string_lossy(),
            cmd.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({cmdline}): {e}"))?;
        if let Ok(mut v) = LIVE.lock() {
            v.push(child.id());
        }
        Ok(Proc {
            name: name.into(),
            child,
            out,
            err,
            cmdline,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// The tail of its stdout.
    pub fn stdout_tail(&self, max: usize) -> String {
        tail_file(&self.out, max)
    }

    /// The tail of its stderr.
    pub fn stderr_tail(&self, max: usize) -> String {
        tail_file(&self.err, max)
    }

    /// Both outputs' tails, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- {} stderr ({}) ---\n{}\n--- {} stdout ---\n{}",
            self.name,
            self.err.display(),
            tail_file(&self.err, 12_000),
            self.name,
            tail_file(&self.out, 6_000)
        )
    }

    /// Waits until its stderr contains `needle`.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.stderr().contains(needle).then_some(())).is_some()
    }

    /// Waits up to `timeout` for the exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.child.try_wait().ok().flatten())
    }

    /// Is it still running?
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; reaped.
    pub fn terminate(&mut self, grace: Duration) {
        signal(self.pid(), libc::SIGCONT);
        terminate(&mut self.child, grace);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), libc::SIGCONT);
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let pid = self.child.id();
        if let Ok(mut v) = LIVE.lock() {
            v.retain(|&p| p != pid);
        }
    }
}
