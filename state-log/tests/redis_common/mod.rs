//! Test helper: a real `redis-server` (Debian package) on 127.0.0.1, a free
//! port and its own temp dir, started by hand (the service manager is not
//! available in the sandbox), ready when it answers PING, killed on drop.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Is `redis-server` installed? Prints why a test is skipped when not.
pub fn available(test: &str) -> bool {
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
    /// No RDB, no AOF (fast, nothing survives a restart).
    None,
    /// AOF with fsync on every write (acknowledged writes survive kill -9).
    AofAlways,
}

/// One redis-server process.
pub struct RedisServer {
    child: Option<Child>,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Data directory (removed on drop).
    pub dir: PathBuf,
    persistence: Persistence,
    replica_of: Option<u16>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl RedisServer {
    /// Start a primary.
    pub fn start(persistence: Persistence) -> RedisServer {
        Self::start_with(persistence, None)
    }

    /// Start a replica of the server on `primary_port`.
    pub fn start_replica(primary_port: u16) -> RedisServer {
        Self::start_with(Persistence::None, Some(primary_port))
    }

    fn start_with(persistence: Persistence, replica_of: Option<u16>) -> RedisServer {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("bgf-redis-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir,
            persistence,
            replica_of,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--protected-mode", "no", "--daemonize", "no"])
            // Replicas sync at once instead of after the default 5 s.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        match self.persistence {
            Persistence::None => {
                cmd.args(["--appendonly", "no"]);
            }
            Persistence::AofAlways => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
            }
        }
        if let Some(p) = self.replica_of {
            cmd.args(["--replicaof", "127.0.0.1"]).arg(p.to_string());
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "redis-server on port {} exited ({st}); log:\n{}",
                        self.port,
                        self.log()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} not ready in 10 s; log:\n{}",
                self.port,
                self.log()
            );
            // Polling interval of the readiness probe.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Does the server answer PING with PONG?
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(n) => buf[..n].starts_with(b"+PONG"),
            Err(_) => false,
        }
    }

    /// The server's log file.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A blocking connection (test-side checks).
    pub fn sync_conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// `INFO replication` as text.
    pub fn info_replication(&self) -> String {
        let mut c = self.sync_conn();
        redis::cmd("INFO").arg("replication").query(&mut c).unwrap()
    }

    /// Wait until this primary has `n` replicas online (generous bound).
    pub fn wait_replicas_online(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let info = self.info_replication();
            let online = info
                .lines()
                .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                .count();
            // "online" is reported before a freshly synced replica streams
            // (Redis 7 waits for its first REPLCONF ACK, sent once a
            // second): ready means a write is actually acknowledged.
            if online >= n {
                let mut c = self.sync_conn();
                let _: () = redis::cmd("SET")
                    .arg("bgf-test:probe")
                    .arg(1)
                    .query(&mut c)
                    .unwrap();
                let acked: usize = redis::cmd("WAIT").arg(n).arg(200).query(&mut c).unwrap();
                if acked >= n {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "replicas not online in 20 s:\n{info}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kill the process (SIGKILL: a crash, no shutdown save).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port and data dir.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
