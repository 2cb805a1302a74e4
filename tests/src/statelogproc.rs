//! One `bgf statelog` process (the embedded state log server): started on an
//! address and a data directory, awaited until it accepts TCP connections,
//! killed (SIGKILL) or stopped (SIGTERM) on demand and on drop. Its lab
//! PKI ([`Pki`]) lives beside its logs and is reused across restarts.

use crate::pki::Pki;
use crate::util::{tail_file, terminate};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `bgf statelog`.
pub struct StatelogProcess {
    child: Child,
    /// The address it serves on.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data: PathBuf,
    /// The credentials of it and its clients.
    pub pki: Pki,
    stderr: PathBuf,
}

impl StatelogProcess {
    /// Starts `bgf statelog --listen addr --data data` (logs in `log_dir`)
    /// and waits (up to 20 s) until it accepts connections.
    pub fn start(addr: SocketAddr, data: &Path, log_dir: &Path) -> Result<StatelogProcess, String> {
        let bin = crate::build::bgf_binary()?;
        let pki = Pki::lab(&log_dir.join("pki"), &[addr.ip()])?;
        let stderr = log_dir.join(format!("statelog-{}.stderr.log", addr.port()));
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)
            .map_err(|e| format!("{e}"))?;
        let child = Command::new(&bin)
            .arg("statelog")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data")
            .arg(data)
            .args(pki.server_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut p = StatelogProcess {
            child,
            addr,
            data: data.to_path_buf(),
            pki,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(format!(
                    "bgf statelog exited early with {status}\n{}",
                    p.logs()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(p);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "bgf statelog did not accept on {addr} within 20 s\n{}",
                    p.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A `[statelog]` section body for active `instance` using this store
    /// (its certificate is made when missing).
    pub fn statelog_toml(&self, instance: &str) -> String {
        if let Err(e) = self.pki.ensure_active(instance) {
            panic!("{e}");
        }
        format!(
            "backend = \"embedded\"\naddr = \"{}\"\n{}",
            self.addr,
            self.pki.toml_lines(&format!("active:{instance}"))
        )
    }

    /// A client under `cn` (`standby:sb1` reads and fences every log,
    /// `operator:ops` truncates anywhere).
    pub async fn connect(&self, cn: &str) -> state_log::remote::RemoteStore {
        self.pki
            .connect(cn, &self.addr.to_string())
            .await
            .unwrap_or_else(|e| panic!("state log at {}: {e}", self.addr))
    }

    /// The tail of its stderr.
    pub fn logs(&self) -> String {
        format!(
            "--- bgf statelog stderr ({}) ---\n{}",
            self.stderr.display(),
            tail_file(&self.stderr, 8 * 1024)
        )
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for StatelogProcess {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}
