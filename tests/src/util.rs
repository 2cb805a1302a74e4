//! Small helpers: per-test scratch directories and bounded waiting.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A scratch directory for one test (configs, logs, SIPp traces). It is removed
/// when dropped, unless the thread is panicking (a failing test): then it is
/// kept and its path printed so the logs can be read. Set `BGF_E2E_KEEP=1`
/// to keep every test's directory.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates `/tmp/bgf-e2e/<name>-<pid>-<n>`.
    pub fn new(name: &str) -> TestDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join("bgf-e2e")
            .join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create test dir {}: {e}", path.display()));
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("BGF_E2E_KEEP").is_some() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `max` bytes of a file (lossy UTF-8), or a note that it is missing.
pub fn tail_file(path: &Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(b) => {
            let start = b.len().saturating_sub(max);
            String::from_utf8_lossy(&b[start..]).into_owned()
        }
        Err(e) => format!("<{}: {e}>", path.display()),
    }
}

/// Sends `sig` to `pid` (no-op if it is gone).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Terminates a child: SIGTERM, up to `grace` to exit, then SIGKILL; reaps it.
pub fn terminate(child: &mut std::process::Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits until something has bound UDP `addr` (our own bind attempt fails with
/// "address in use"): a started peer is ready to receive.
pub fn wait_udp_bound(addr: std::net::SocketAddr, timeout: Duration) -> bool {
    wait_until(timeout, || match std::net::UdpSocket::bind(addr) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Some(()),
        _ => None,
    })
    .is_some()
}

/// Splits a SIPp `-trace_msg` log into messages (blocks between the dashed
/// separator lines).
pub fn sipp_messages(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in log.lines() {
        if line.starts_with("----------------------------------------------- ") {
            if !cur.trim().is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            cur.clear();
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}
