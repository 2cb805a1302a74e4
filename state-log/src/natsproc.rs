//! A JetStream cluster of `nats-server` processes on this machine, for the
//! tests and the benchmarks: N nodes on loopback ports, configured by
//! [`crate::natsconf`] with a lab PKI ([`crate::pki`]), ready once every
//! node answers `/healthz?js-enabled-only=true` and the cluster has a
//! meta leader. Nodes can be killed (SIGKILL), frozen (SIGSTOP, a node cut
//! off: its peers see it vanish, it sees nothing), restarted, or restarted
//! with an empty disk; everything is stopped on drop.
//!
//! Not product code: production runs the Debian `nats-server` under systemd
//! with the same generated configuration.

use crate::natsconf::{self, Node, Users};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Is `nats-server` installed? Prints why a test is skipped when not.
pub fn available() -> bool {
    Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// One node.
pub struct NatsNode {
    /// Its node description.
    pub node: Node,
    child: Option<Child>,
    conf: PathBuf,
    data: PathBuf,
    log: PathBuf,
    frozen: bool,
}

/// A running cluster.
pub struct NatsCluster {
    /// The nodes, `n1`..`nN`.
    pub nodes: Vec<NatsNode>,
    /// The PKI directory (server certificates `server-nK`, and the clients').
    pub pki: PathBuf,
}

/// Free ports from a range derived from the pid (so parallel runs of
/// different checkouts do not collide), checked by binding, never handed
/// out twice in one process (clusters of parallel tests).
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    static NEXT: std::sync::Mutex<u16> = std::sync::Mutex::new(0);
    let mut next = NEXT.lock().unwrap_or_else(|p| p.into_inner());
    if *next == 0 {
        *next = 21_000 + (std::process::id() % 400) as u16 * 100;
    }
    let mut out = Vec::new();
    let mut p = *next;
    while out.len() < n && p < 64_000 {
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            out.push(p);
        }
        p += 1;
    }
    *next = p;
    if out.len() < n {
        return Err("no free ports for nats-server".into());
    }
    Ok(out)
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

impl NatsCluster {
    /// Start `n` nodes with data and logs under `dir`, PKI in `dir/pki`
    /// (made or completed here: servers `n1..nN` on 127.0.0.1, and client
    /// certificates for `users`), and wait until the cluster is ready.
    pub fn start(dir: &Path, n: usize, users: &Users) -> Result<NatsCluster, String> {
        let pki = dir.join("pki");
        let ports = free_ports(3 * n)?;
        let nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                name: format!("n{}", i + 1),
                client: format!("127.0.0.1:{}", ports[3 * i]),
                cluster: format!("127.0.0.1:{}", ports[3 * i + 1]),
                monitor: Some(format!("127.0.0.1:{}", ports[3 * i + 2])),
            })
            .collect();
        crate::pki::generate(
            &pki,
            &crate::pki::LabSpec {
                servers: nodes
                    .iter()
                    .map(|n| (n.name.clone(), vec!["127.0.0.1".into(), "localhost".into()]))
                    .collect(),
                actives: users.actives.clone(),
                standbys: users.standbys.clone(),
                operators: users.operators.clone(),
                overwrite: true,
            },
        )?;
        let mut c = NatsCluster {
            nodes: Vec::new(),
            pki: pki.clone(),
        };
        for node in &nodes {
            let data = dir.join(&node.name);
            std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
            let conf = dir.join(format!("{}.conf", node.name));
            let text =
                natsconf::server_config(node, &nodes, &pki, &data, users, "BGFLOG", "bgf.log");
            std::fs::write(&conf, text).map_err(|e| format!("{}: {e}", conf.display()))?;
            let mut nn = NatsNode {
                node: node.clone(),
                child: None,
                conf,
                log: dir.join(format!("{}.log", node.name)),
                data,
                frozen: false,
            };
            nn.spawn()?;
            c.nodes.push(nn);
        }
        c.wait_ready(Duration::from_secs(30))?;
        Ok(c)
    }

    /// Client URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("tls://{}", n.node.client))
            .collect()
    }

    /// Client URLs of the nodes that run (not killed).
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].child.is_some())
            .collect()
    }

    /// TLS files of client `cn` (`active:bgf1`, `standby:sb1`, ...).
    pub fn files(&self, cn: &str) -> crate::tls::TlsFiles {
        crate::pki::files_of(
            &self.pki,
            &crate::tls::Identity::parse(cn).expect("identity"),
        )
    }

    /// Wait until every running node is healthy with JetStream and a meta
    /// leader is known.
    pub fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let ok = self.running().iter().all(|i| {
                let m = self.nodes[*i].node.monitor.as_deref().unwrap_or("");
                matches!(http_get(m, "/healthz?js-enabled-only=true"), Some((200, _)))
                    && http_get(m, "/jsz").is_some_and(|(c, b)| {
                        c == 200 && b.contains("\"meta_cluster\"") && b.contains("\"leader\"")
                    })
            });
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nats cluster not ready within {within:?}\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node (index) leading `stream`, from the nodes' `/jsz`.
    pub fn leader_of(&self, stream: &str) -> Option<usize> {
        for i in self.running() {
            if self.nodes[i].frozen {
                continue;
            }
            let m = self.nodes[i].node.monitor.as_deref()?;
            let (_, body) = http_get(m, "/jsz?streams=true&raft=true")?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            for acc in v["account_details"].as_array().into_iter().flatten() {
                for s in acc["stream_detail"].as_array().into_iter().flatten() {
                    if s["name"] == stream {
                        if let Some(l) = s["cluster"]["leader"].as_str() {
                            return self.nodes.iter().position(|n| n.node.name == l);
                        }
                    }
                }
            }
        }
        None
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// SIGSTOP node `i`: it stops answering (its peers and clients see a
    /// partitioned node); [`Self::thaw`] resumes it.
    pub fn freeze(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGSTOP);
        self.nodes[i].frozen = true;
    }

    /// SIGCONT node `i`.
    pub fn thaw(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGCONT);
        self.nodes[i].frozen = false;
    }

    /// Start node `i` again on its data.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.nodes[i].kill();
        self.nodes[i].spawn()
    }

    /// Kill node `i`, erase its disk, start it empty.
    pub fn restart_empty(&mut self, i: usize) -> Result<(), String> {
        self.nodes[i].kill();
        let d = self.nodes[i].data.clone();
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        self.nodes[i].spawn()
    }

    /// The tails of the nodes' logs.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail = &text[text.len().saturating_sub(4096)..];
            s += &format!("--- {} ({}) ---\n{tail}\n", n.node.name, n.log.display());
        }
        s
    }
}

impl NatsNode {
    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start nats-server: {e} (apt-get install nats-server)"))?;
        self.child = Some(child);
        self.frozen = false;
        // Wait until it listens (the cluster may still be electing).
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&self.node.client).is_err() {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!(
                    "nats-server {} exited ({st}); {}:\n{}",
                    self.node.name,
                    self.log.display(),
                    &text[text.len().saturating_sub(2048)..]
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nats-server {} did not listen within 20 s",
                    self.node.name
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: signalling a child this harness started.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.frozen {
                // SAFETY: as above.
                unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.frozen = false;
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        self.kill();
    }
}
