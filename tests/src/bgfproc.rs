//! One `bgf active` process: config written to the test directory, stdout and
//! stderr captured to files (printed if the test fails), `/health` awaited,
//! SIGTERM then SIGKILL on drop.

use crate::admin::AdminClient;
use crate::net::{host, TestNet};
use crate::util::{tail_file, terminate};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The daemon's configuration, as the harness writes it.
#[derive(Clone, Debug)]
pub struct BgfConfig {
    /// `[instance] name`.
    pub name: String,
    /// `[instance] secret`.
    pub secret: String,
    /// `[access] sip`.
    pub access_sip: SocketAddr,
    /// `[access] media_ip`.
    pub access_media_ip: IpAddr,
    /// `[access] rtp_ports` (inclusive).
    pub access_rtp_ports: (u16, u16),
    /// `[access] latching`.
    pub access_latching: bool,
    /// `[core] sip`.
    pub core_sip: SocketAddr,
    /// `[core] media_ip`.
    pub core_media_ip: IpAddr,
    /// `[core] rtp_ports` (inclusive).
    pub core_rtp_ports: (u16, u16),
    /// `[core] latching`.
    pub core_latching: bool,
    /// `[core] next_hop`.
    pub next_hop: SocketAddr,
    /// `[core] next_hop_transport` ("udp" or "tcp").
    pub next_hop_transport: String,
    /// `[sip] timer_c_ms`.
    pub timer_c_ms: Option<u64>,
    /// `[media] workers`.
    pub media_workers: u32,
    /// `[media] inactivity_timeout_s`.
    pub inactivity_timeout_s: u64,
    /// `[log] level`.
    pub log_level: String,
    /// `[admin] listen`.
    pub admin_listen: SocketAddr,
    /// `[admin] token`.
    pub admin_token: String,
    /// The body of a `[statelog]` section (TOML lines), if any.
    pub statelog: Option<String>,
    /// Start the process with this open-files limit (soft and hard), to
    /// exercise media admission control.
    pub nofile: Option<u64>,
    /// More `[media]` lines (e.g. `backend = "xdp"` and a `[media.xdp]`
    /// section after them).
    pub media_extra: String,
}

impl BgfConfig {
    /// The standard layout on a test's /24: access .1, core .2, next hop .3:5060,
    /// admin .6:8080.
    pub fn for_net(net: &TestNet) -> BgfConfig {
        BgfConfig {
            name: "bgf1".into(),
            secret: "test-secret-123".into(),
            access_sip: net.addr(host::BGF_ACCESS, 5060),
            access_media_ip: net.ip(host::BGF_ACCESS),
            access_rtp_ports: (20000, 20999),
            access_latching: true,
            core_sip: net.addr(host::BGF_CORE, 5060),
            core_media_ip: net.ip(host::BGF_CORE),
            core_rtp_ports: (30000, 30999),
            core_latching: false,
            next_hop: net.addr(host::CORE_PEER, 5060),
            next_hop_transport: "udp".into(),
            timer_c_ms: None,
            media_workers: 2,
            inactivity_timeout_s: 60,
            log_level: "info".into(),
            admin_listen: net.addr(host::ADMIN, 8080),
            admin_token: "test-token-0123456789".into(),
            statelog: None,
            nofile: None,
            media_extra: String::new(),
        }
    }

    /// The TOML file text.
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        s += &format!(
            "[instance]\nname = \"{}\"\nsecret = \"{}\"\n\n",
            self.name, self.secret
        );
        for (sect, sip, media, ports, latching) in [
            (
                "access",
                self.access_sip,
                self.access_media_ip,
                self.access_rtp_ports,
                self.access_latching,
            ),
            (
                "core",
                self.core_sip,
                self.core_media_ip,
                self.core_rtp_ports,
                self.core_latching,
            ),
        ] {
            s += &format!(
                "[{sect}]\nsip = \"{sip}\"\nmedia_ip = \"{media}\"\nrtp_ports = \"{}-{}\"\nlatching = {latching}\n",
                ports.0, ports.1
            );
            if sect == "core" {
                s += &format!(
                    "next_hop = \"{}\"\nnext_hop_transport = \"{}\"\n",
                    self.next_hop, self.next_hop_transport
                );
            }
            s += "\n";
        }
        if let Some(c) = self.timer_c_ms {
            s += &format!("[sip]\ntimer_c_ms = {c}\n\n");
        }
        s += &format!(
            "[media]\nworkers = {}\ninactivity_timeout_s = {}\n{}\n",
            self.media_workers, self.inactivity_timeout_s, self.media_extra
        );
        s += &format!(
            "[log]\nformat = \"json\"\nlevel = \"{}\"\n\n",
            self.log_level
        );
        s += &format!(
            "[admin]\nlisten = \"{}\"\ntoken = \"{}\"\n",
            self.admin_listen, self.admin_token
        );
        if let Some(l) = &self.statelog {
            s += &format!("\n[statelog]\n{l}\n");
        }
        s
    }
}

/// A running `bgf active`.
pub struct BgfProcess {
    child: Child,
    /// The configuration it runs with.
    pub config: BgfConfig,
    /// Its admin API.
    pub admin: AdminClient,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl BgfProcess {
    /// Writes `config` to `dir/bgf.toml`, starts `bgf active --config` and waits
    /// (up to 20 s) for `/health` to answer `ok`.
    pub fn start(config: BgfConfig, dir: &Path) -> Result<BgfProcess, String> {
        let bin = crate::build::bgf_binary()?;
        let cfg_path = dir.join(format!("{}.toml", config.name));
        std::fs::write(&cfg_path, config.to_toml())
            .map_err(|e| format!("write {}: {e}", cfg_path.display()))?;
        let stdout = dir.join(format!("{}.stdout.log", config.name));
        let stderr = dir.join(format!("{}.stderr.log", config.name));
        let out = std::fs::File::create(&stdout).map_err(|e| format!("{e}"))?;
        let err = std::fs::File::create(&stderr).map_err(|e| format!("{e}"))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("active")
            .arg("--config")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Some(n) = config.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs
            // between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let r = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let admin = AdminClient::new(config.admin_listen, &config.admin_token);
        let mut p = BgfProcess {
            child,
            config,
            admin,
            stdout,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(format!("bgf exited early with {status}\n{}", p.logs()));
            }
            if let Ok(h) = p.admin.health() {
                if h.get("status").and_then(|s| s.as_str()) == Some("ok") {
                    return Ok(p);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "bgf did not report /health ok within 20 s\n{}",
                    p.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The tails of its stdout and stderr.
    pub fn logs(&self) -> String {
        format!(
            "--- bgf stdout ({}) ---\n{}\n--- bgf stderr ({}) ---\n{}",
            self.stdout.display(),
            tail_file(&self.stdout, 16 * 1024),
            self.stderr.display(),
            tail_file(&self.stderr, 16 * 1024)
        )
    }

    /// Waits up to `timeout` for the process to exit on its own; its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}

impl Drop for BgfProcess {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}
