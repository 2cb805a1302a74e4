//! One `redis-server` process (the Debian package, started by hand: there is
//! no service manager in the sandbox) for the Redis Streams state log: bound
//! to one loopback address and port, its own data directory, ready when it
//! answers PING, killed (SIGKILL, a crash) or restarted on the same data and
//! port on demand, stopped on drop. Talks RESP itself (a few inline commands
//! over TCP) so the harness needs no redis client crate.

use crate::util::{tail_file, terminate};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Is `redis-server` installed? Prints why a test is skipped when not.
pub fn require_redis(test: &str) -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED {test}: redis-server is not installed (apt-get install redis-server)");
    }
    ok
}

/// How the server persists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// No RDB, no AOF (nothing survives a restart).
    None,
    /// AOF with fsync on every write (acknowledged writes survive kill -9).
    AofAlways,
}

/// A running `redis-server`.
pub struct RedisProcess {
    child: Option<Child>,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its data directory (AOF lives here).
    pub data: PathBuf,
    persistence: Persistence,
    replica_of: Option<SocketAddr>,
}

impl RedisProcess {
    /// Starts a primary on `addr` with data in `data` and waits (up to 20 s)
    /// for PONG.
    pub fn start(
        addr: SocketAddr,
        data: &Path,
        persistence: Persistence,
    ) -> Result<RedisProcess, String> {
        Self::start_with(addr, data, persistence, None)
    }

    /// Starts a replica of `primary` on `addr` (no persistence of its own).
    pub fn start_replica(
        addr: SocketAddr,
        data: &Path,
        primary: SocketAddr,
    ) -> Result<RedisProcess, String> {
        Self::start_with(addr, data, Persistence::None, Some(primary))
    }

    fn start_with(
        addr: SocketAddr,
        data: &Path,
        persistence: Persistence,
        replica_of: Option<SocketAddr>,
    ) -> Result<RedisProcess, String> {
        std::fs::create_dir_all(data).map_err(|e| format!("mkdir {}: {e}", data.display()))?;
        let mut p = RedisProcess {
            child: None,
            addr,
            data: data.to_path_buf(),
            persistence,
            replica_of,
        };
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--bind")
            .arg(self.addr.ip().to_string())
            .arg("--port")
            .arg(self.addr.port().to_string())
            .args(["--save", "", "--protected-mode", "no", "--daemonize", "no"])
            // Replicas sync at once instead of after the default 5 s.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&self.data)
            .arg("--logfile")
            .arg(self.data.join("redis.log"));
        match self.persistence {
            Persistence::None => {
                cmd.args(["--appendonly", "no"]);
            }
            Persistence::AofAlways => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
            }
        }
        if let Some(p) = self.replica_of {
            cmd.arg("--replicaof")
                .arg(p.ip().to_string())
                .arg(p.port().to_string());
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.ping() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(format!(
                        "redis-server on {} exited ({st})\n{}",
                        self.addr,
                        self.logs()
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "redis-server on {} did not answer PING within 20 s\n{}",
                    self.addr,
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://ADDR/0`.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Sends one inline command; the raw reply (up to 64 KiB, 2 s bound).
    pub fn command(&self, cmd: &str) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
        let mut buf = vec![0u8; 65536];
        let mut got = 0;
        // A bulk reply may arrive in pieces: read until a complete one.
        loop {
            let n = s.read(&mut buf[got..]).ok()?;
            if n == 0 {
                break;
            }
            got += n;
            let text = String::from_utf8_lossy(&buf[..got]);
            if complete_reply(&text) || got == buf.len() {
                break;
            }
        }
        Some(String::from_utf8_lossy(&buf[..got]).into_owned())
    }

    /// Does the server answer PING with PONG?
    pub fn ping(&self) -> bool {
        self.command("PING").is_some_and(|r| r.starts_with("+PONG"))
    }

    /// Replicas in `state=online` (from `INFO replication`).
    pub fn replicas_online(&self) -> usize {
        self.command("INFO replication")
            .map(|i| {
                i.lines()
                    .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Waits (up to `timeout`) until `n` replicas are online and actually
    /// acknowledge a write (`WAIT`): Redis reports "online" before a freshly
    /// synced replica sends its first ACK.
    pub fn wait_replicas_acking(&self, n: usize, timeout: Duration) -> bool {
        crate::util::wait_until(timeout, || {
            if self.replicas_online() < n {
                return None;
            }
            self.command("SET bgf-test:probe 1")?;
            let r = self.command(&format!("WAIT {n} 200"))?;
            let acked: usize = r.trim().trim_start_matches(':').parse().ok()?;
            (acked >= n).then_some(())
        })
        .is_some()
    }

    /// The tail of its log file.
    pub fn logs(&self) -> String {
        let f = self.data.join("redis.log");
        format!(
            "--- redis-server log ({}) ---\n{}",
            f.display(),
            tail_file(&f, 8 * 1024)
        )
    }

    /// SIGKILL and reap (a crash: no shutdown save).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills it if running, then starts it again on the same address and
    /// data directory and waits for PONG.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }
}

/// Whether `text` holds one complete RESP reply.
fn complete_reply(text: &str) -> bool {
    let Some(first) = text.find("\r\n") else {
        return false;
    };
    match text.as_bytes()[0] {
        b'$' => {
            let len: i64 = text[1..first].parse().unwrap_or(-1);
            len < 0 || text.len() >= first + 2 + len as usize + 2
        }
        _ => true,
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c, Duration::from_secs(5));
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}
