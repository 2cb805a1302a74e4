//! Runs SIPp (Debian `sip-tester`, 3.6.1) with a scenario from `tests/sipp/`,
//! in a test directory, with bounded time. Every run writes its error log
//! (`-trace_err`), statistics (`-trace_stat`), screen (`-trace_screen`), message
//! log (`-trace_msg`) and `<log>` output (`-trace_logs`) to named files there.
//!
//! SIPp exits 0 only if every call succeeded (1: at least one failed; 97/99:
//! internal/usage errors).

use crate::util::{signal, tail_file};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `sipp` can be run.
pub fn sipp_available() -> bool {
    Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Prints why a test is skipped when SIPp is missing; returns whether to go on.
pub fn require_sipp(test: &str) -> bool {
    if sipp_available() {
        true
    } else {
        eprintln!(
            "SKIPPED {test}: `sipp` is not installed (apt-get install sip-tester); this e2e test needs it"
        );
        false
    }
}

/// A SIPp command line being built.
#[derive(Clone, Debug)]
pub struct Sipp {
    name: String,
    scenario: PathBuf,
    remote: Option<String>,
    local_ip: Option<IpAddr>,
    local_port: Option<u16>,
    args: Vec<String>,
}

impl Sipp {
    /// A run of `tests/sipp/<scenario>`; `name` names its log files.
    pub fn new(name: &str, scenario: &str) -> Sipp {
        Sipp {
            name: name.to_string(),
            scenario: crate::build::sipp_dir().join(scenario),
            remote: None,
            local_ip: None,
            local_port: None,
            args: Vec::new(),
        }
    }

    /// The remote host (first SIPp argument).
    pub fn remote(mut self, addr: SocketAddr) -> Sipp {
        self.remote = Some(addr.to_string());
        self
    }

    /// Local address (`-i`, `-p`).
    pub fn local(mut self, addr: SocketAddr) -> Sipp {
        self.local_ip = Some(addr.ip());
        self.local_port = Some(addr.port());
        self
    }

    /// `-key name value` (`[name]` in the scenario).
    pub fn key(self, name: &str, value: impl ToString) -> Sipp {
        self.arg("-key").arg(name).arg(value.to_string())
    }

    /// `-m calls`: stop after this many calls.
    pub fn calls(self, n: u32) -> Sipp {
        self.arg("-m").arg(n.to_string())
    }

    /// `-r rate` calls per second, `-l limit` simultaneous calls.
    pub fn rate(self, cps: u32, limit: u32) -> Sipp {
        self.arg("-r")
            .arg(cps.to_string())
            .arg("-l")
            .arg(limit.to_string())
    }

    /// `-d ms`: the `<pause/>` duration.
    pub fn pause_ms(self, ms: u64) -> Sipp {
        self.arg("-d").arg(ms.to_string())
    }

    /// `-t t1`: TCP, one socket.
    pub fn tcp(self) -> Sipp {
        self.arg("-t").arg("t1")
    }

    /// Any extra argument.
    pub fn arg(mut self, a: impl Into<String>) -> Sipp {
        self.args.push(a.into());
        self
    }

    /// The full argument list for a run in `dir`.
    pub fn command_args(&self, dir: &Path) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(r) = &self.remote {
            a.push(r.clone());
        }
        a.push("-sf".into());
        a.push(self.scenario.display().to_string());
        if let Some(ip) = self.local_ip {
            a.push("-i".into());
            a.push(ip.to_string());
            // SIPp binds media sockets on its local IP; keep them off our RTP ports.
            a.push("-mi".into());
            a.push(ip.to_string());
        }
        if let Some(p) = self.local_port {
            a.push("-p".into());
            a.push(p.to_string());
        }
        // A private control socket so parallel SIPps never clash on 8888.
        let cport =
            crate::net::free_udp_port("127.0.0.1".parse().unwrap_or(IpAddr::from([127, 0, 0, 1])));
        a.extend([
            "-ci".into(),
            "127.0.0.1".into(),
            "-cp".into(),
            cport.to_string(),
        ]);
        let f = |suffix: &str| {
            dir.join(format!("{}_{suffix}", self.name))
                .display()
                .to_string()
        };
        a.extend([
            "-nostdin".into(),
            "-trace_err".into(),
            "-error_file".into(),
            f("errors.log"),
            "-trace_stat".into(),
            "-stf".into(),
            f("stat.csv"),
            "-trace_screen".into(),
            "-screen_file".into(),
            f("screen.log"),
            "-trace_msg".into(),
            "-message_file".into(),
            f("messages.log"),
            "-trace_logs".into(),
            "-log_file".into(),
            f("logs.log"),
        ]);
        a.extend(self.args.iter().cloned());
        a
    }

    /// Starts SIPp in `dir` (its working directory).
    /// [`spawn`](Self::spawn) a SIPp that listens (a UAS), returned once its
    /// local address is bound — ready for the calls sent to it; panics with
    /// its log if it is not bound within `timeout`.
    pub fn spawn_bound(&self, dir: &Path, timeout: Duration) -> SippRun {
        let (Some(ip), Some(port)) = (self.local_ip, self.local_port) else {
            panic!("{}: spawn_bound needs .local(addr)", self.name);
        };
        let run = self.spawn(dir);
        assert!(
            crate::util::wait_udp_bound(SocketAddr::new(ip, port), timeout),
            "SIPp {} did not bind {} within {timeout:?}\n{}",
            self.name,
            SocketAddr::new(ip, port),
            run.logs_so_far()
        );
        run
    }

    pub fn spawn(&self, dir: &Path) -> SippRun {
        let args = self.command_args(dir);
        let stdout = dir.join(format!("{}_stdout.log", self.name));
        let out = std::fs::File::create(&stdout)
            .unwrap_or_else(|e| panic!("create {}: {e}", stdout.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("dup {}: {e}", stdout.display()));
        let child = Command::new("sipp")
            .args(&args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sipp {args:?}: {e}"));
        SippRun {
            name: self.name.clone(),
            child: Some(child),
            dir: dir.to_path_buf(),
            cmdline: format!("sipp {}", args.join(" ")),
            started: Instant::now(),
        }
    }
}

/// A running SIPp.
pub struct SippRun {
    name: String,
    child: Option<Child>,
    dir: PathBuf,
    cmdline: String,
    started: Instant,
}

/// How a SIPp run ended.
#[derive(Clone, Debug)]
pub struct SippResult {
    /// Which run.
    pub name: String,
    /// Exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// It did not finish in time and was killed.
    pub timed_out: bool,
    /// Wall time.
    pub elapsed: Duration,
    /// The command line.
    pub cmdline: String,
    /// The test directory.
    pub dir: PathBuf,
}

impl SippResult {
    /// All calls succeeded.
    pub fn ok(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// Panics (with the run's description) unless SIPp exited 0 and counted
    /// exactly `calls` successful calls.
    pub fn assert_all_succeeded(&self, calls: u64) {
        assert!(self.ok(), "{}", self.describe());
        assert_eq!(
            self.stat("SuccessfulCall(C)"),
            Some(calls),
            "{}",
            self.describe()
        );
    }

    fn file(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}_{suffix}", self.name))
    }

    /// Text of one of the run's files (`errors.log`, `stat.csv`, `screen.log`,
    /// `messages.log`, `logs.log`, `stdout.log`).
    pub fn read(&self, suffix: &str) -> String {
        std::fs::read_to_string(self.file(suffix)).unwrap_or_default()
    }

    /// The value of a column in the last line of the `-trace_stat` CSV, e.g.
    /// `SuccessfulCall(C)` or `FailedCall(C)`.
    pub fn stat(&self, column: &str) -> Option<u64> {
        let csv = self.read("stat.csv");
        let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
        let head: Vec<&str> = lines.next()?.split(';').collect();
        let last: Vec<&str> = lines.next_back()?.split(';').collect();
        let i = head.iter().position(|h| h.trim() == column)?;
        last.get(i)?.trim().parse().ok()
    }

    /// A report for assertion messages: exit code, the tails of the screen,
    /// stdout and error logs.
    pub fn describe(&self) -> String {
        format!(
            "sipp run `{}`: exit {:?}{} after {:?}\n  cmd: {}\n--- screen ---\n{}\n--- stdout ---\n{}\n--- errors ---\n{}",
            self.name,
            self.code,
            if self.timed_out { " (TIMED OUT, killed)" } else { "" },
            self.elapsed,
            self.cmdline,
            tail_file(&self.file("screen.log"), 3000),
            tail_file(&self.file("stdout.log"), 1500),
            tail_file(&self.file("errors.log"), 3000),
        )
    }
}

impl SippRun {
    /// Waits up to `timeout` for SIPp to exit; kills it after that.
    pub fn wait(mut self, timeout: Duration) -> SippResult {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().expect("child present until wait");
        let (code, timed_out) = loop {
            match child.try_wait() {
                Ok(Some(st)) => break (st.code(), false),
                Ok(None) if Instant::now() >= deadline => {
                    // SIGUSR1 would make SIPp dump and quit; SIGTERM then SIGKILL is enough.
                    signal(child.id(), libc::SIGTERM);
                    std::thread::sleep(Duration::from_millis(300));
                    let _ = child.kill();
                    let st = child.wait().ok();
                    break (st.and_then(|s| s.code()), true);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break (None, false),
            }
        };
        SippResult {
            name: self.name.clone(),
            code,
            timed_out,
            elapsed: self.started.elapsed(),
            cmdline: self.cmdline.clone(),
            dir: self.dir.clone(),
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The contents of its `<log>` output so far.
    pub fn logs_so_far(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}_logs.log", self.name)))
            .unwrap_or_default()
    }

    /// The contents of its message trace so far.
    pub fn messages_so_far(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}_messages.log", self.name)))
            .unwrap_or_default()
    }
}

impl Drop for SippRun {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The URI of the Contact that `core_registrar.xml` logged (`CONTACT <value>`):
/// the part inside `<…>` if bracketed, else up to the first `;` or space.
pub fn logged_contact_uri(log: &str) -> Option<String> {
    let line = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("CONTACT "))?;
    let v = line.trim();
    let uri = if let Some(start) = v.find('<') {
        let rest = &v[start + 1..];
        &rest[..rest.find('>')?]
    } else {
        v.split([';', ' ', ',']).next()?
    };
    (!uri.is_empty()).then(|| uri.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_uri_from_log() {
        assert_eq!(
            logged_contact_uri("x\nCONTACT <sip:abc@127.0.2.1:5060;transport=udp>;expires=3600\n")
                .as_deref(),
            Some("sip:abc@127.0.2.1:5060;transport=udp")
        );
        assert_eq!(
            logged_contact_uri("CONTACT sip:abc@[::1]:5060;expires=60").as_deref(),
            Some("sip:abc@[::1]:5060")
        );
        assert_eq!(logged_contact_uri("nothing"), None);
    }
}
