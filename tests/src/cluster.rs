//! An N+1 cluster of real processes (2 × `bgf active`, one `bgf standby`,
//! the embedded store `bgf statelog`) and `bgf-callgen` UAC / UAS pairs
//! through it — shared by the failover end-to-end tests and the demo.
//!
//! Two networks ([`ClusterNet`]):
//!
//! - **namespaces** (root): the topology of [`crate::netns`] — every node
//!   in its own namespace, the standby claims the failed active's service
//!   addresses (rtnetlink) and announces them (GARP / unsolicited NA);
//! - **loopback** (no privileges needed): every node is an address of one
//!   private `127.N.M.0/24` on `lo`; all of 127/8 is always local, so the
//!   standby can bind the failed active's service addresses without adding
//!   them, and runs with `standby.address_step = "none"` (no address is
//!   added, nothing is announced — the address step is *simulated*). IPv4
//!   only (loopback has one IPv6 address).
//!
//! Nothing here asserts: every step returns `Result` with the logs in the
//! error, so the demo can print and the tests can panic.

use crate::callgen::callgen_binary;
use crate::netns::{Lan, Topology};
use crate::proc::Proc;
use crate::util::wait_until;
use crate::{AdminClient, TestDir, TestNet};
use serde_json::Value;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The admin token of every cluster process.
pub const TOKEN: &str = "cluster-admin-token-0123456789";

/// `ip:port`, IPv6 bracketed.
pub fn bracket(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// `&str`s to an argument vector.
pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Where the cluster's nodes live.
pub enum ClusterNet {
    /// One network namespace per node (root).
    Namespaces(Topology),
    /// One loopback address per node (any user).
    Loopback(TestNet),
}

/// Loopback host numbers (inside the run's `127.N.M.0/24`).
mod lo_host {
    pub const UE: u8 = 200;
    pub const CORE_PEER: u8 = 201;
    pub const STORE: u8 = 202;
    pub const STANDBY: u8 = 99;
    pub const ACTIVE_NODE: u8 = 100;
    pub const ACCESS_SERVICE: u8 = 10;
    pub const CORE_SERVICE: u8 = 20;
}

impl ClusterNet {
    /// The namespace topology with two actives (`prefix` ≤ 6 characters,
    /// unique among concurrent runs).
    pub fn namespaces(prefix: &str) -> Result<ClusterNet, String> {
        Topology::new(prefix, 2).map(ClusterNet::Namespaces)
    }

    /// A private loopback /24.
    pub fn loopback() -> ClusterNet {
        ClusterNet::Loopback(TestNet::new())
    }

    /// Are nodes in namespaces?
    pub fn is_namespaces(&self) -> bool {
        matches!(self, ClusterNet::Namespaces(_))
    }

    /// The namespace topology (panics on loopback: for namespace-only tests).
    pub fn topology(&self) -> &Topology {
        match self {
            ClusterNet::Namespaces(t) => t,
            ClusterNet::Loopback(_) => panic!("a loopback cluster has no namespaces"),
        }
    }

    fn lo(n: &TestNet, h: u8) -> IpAddr {
        n.ip(h)
    }

    /// Active k's IPv4 service address on `lan` (access or core).
    pub fn service_v4(&self, k: u8, lan: Lan) -> IpAddr {
        match self {
            ClusterNet::Namespaces(t) => t.service_v4(k, lan),
            ClusterNet::Loopback(n) => Self::lo(
                n,
                k + match lan {
                    Lan::Core => lo_host::CORE_SERVICE,
                    _ => lo_host::ACCESS_SERVICE,
                },
            ),
        }
    }

    /// Active k's IPv6 access service address (`::1` on loopback, where
    /// only one active may use it).
    pub fn service_v6(&self, k: u8) -> IpAddr {
        match self {
            ClusterNet::Namespaces(t) => t.service_v6(k),
            ClusterNet::Loopback(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        }
    }

    /// Active k's node (management) address.
    pub fn active_mgmt(&self, k: u8) -> IpAddr {
        match self {
            ClusterNet::Namespaces(t) => t.active_node(k, Lan::Mgmt),
            ClusterNet::Loopback(n) => Self::lo(n, lo_host::ACTIVE_NODE + k),
        }
    }

    /// The standby's management address.
    pub fn standby_mgmt(&self) -> IpAddr {
        match self {
            ClusterNet::Namespaces(t) => t.standby_node(Lan::Mgmt),
            ClusterNet::Loopback(n) => Self::lo(n, lo_host::STANDBY),
        }
    }

    /// The UE's address.
    pub fn ue(&self, v6: bool) -> IpAddr {
        match self {
            ClusterNet::Namespaces(t) => t.ue(v6),
            ClusterNet::Loopback(_) if v6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ClusterNet::Loopback(n) => Self::lo(n, lo_host::UE),
        }
    }

    /// The core peer's address.
    pub fn core_peer(&self) -> IpAddr {
        match self {
            ClusterNet::Namespaces(t) => t.core_peer(),
            ClusterNet::Loopback(n) => Self::lo(n, lo_host::CORE_PEER),
        }
    }

    /// The store's address.
    pub fn store(&self) -> IpAddr {
        match self {
            ClusterNet::Namespaces(t) => t.store(),
            ClusterNet::Loopback(n) => Self::lo(n, lo_host::STORE),
        }
    }

    /// `program` to run on `node` (`ue`, `core`, `store`, `sb`, `a1`, …).
    pub fn command(&self, node: &str, program: &str) -> Command {
        match self {
            ClusterNet::Namespaces(t) => t.command(&t.ns(node), program),
            ClusterNet::Loopback(_) => Command::new(program),
        }
    }

    /// `GET path` with the token on the admin API at `addr:8080` of `node`.
    pub fn admin_get(&self, node: &str, addr: IpAddr, path: &str) -> Option<Value> {
        let (code, body) = self.admin_request(node, addr, path, None)?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// `GET path` (or `POST path` with `body`) with the token on the admin
    /// API at `addr:8080` of `node`: `(status, body)`, `None` if unreachable.
    pub fn admin_request(
        &self,
        node: &str,
        addr: IpAddr,
        path: &str,
        body: Option<&str>,
    ) -> Option<(u16, String)> {
        let c = AdminClient::new(SocketAddr::new(addr, 8080), TOKEN);
        let call = || match body {
            Some(b) => c.post(path, b, true).ok(),
            None => c.get(path, true).ok(),
        };
        match self {
            ClusterNet::Namespaces(t) => t.run_in(&t.ns(node), call).ok()?,
            ClusterNet::Loopback(_) => call(),
        }
    }

    /// What the output says about the address step.
    pub fn address_step(&self) -> &'static str {
        match self {
            ClusterNet::Namespaces(_) => "netlink",
            ClusterNet::Loopback(_) => "none",
        }
    }
}

/// Active k's config: access over IPv6 or IPv4, heartbeats over mgmt.
/// `miss`: heartbeat misses before a failure.
pub fn active_toml(
    net: &ClusterNet,
    store: &StoreKind,
    k: u8,
    v6_access: bool,
    uas_port: u16,
    miss: u32,
) -> String {
    let access_ip = if v6_access {
        net.service_v6(k)
    } else {
        net.service_v4(k, Lan::Access)
    };
    let core_ip = net.service_v4(k, Lan::Core);
    let mgmt = net.active_mgmt(k);
    let sb = net.standby_mgmt();
    format!(
        r#"[instance]
name = "bgf{k}"
secret = "fo{k}-Hq3vN8xLp2Rz7mKc5Wt9Yb4Jd6Sg1Af"

[access]
sip = "{access_sip}"
media_ip = "{access_ip}"
rtp_ports = "20000-49999"
latching = true
allow_loopback_media = {lo}
require_registration = false

[core]
sip = "{core_sip}"
media_ip = "{core_ip}"
rtp_ports = "30000-59999"
latching = false
next_hop = "{next_hop}"
allow_loopback_media = {lo}

[limits]
{limits}{rates}

[media]
workers = 1

[log]
format = "json"
level = "info"

[admin]
listen = "{mgmt}:8080"
token = "{TOKEN}"
drills = true

[statelog]
{statelog}
[ha]
heartbeat = "{mgmt}:7500"
standby = "{sb}:{sb_port}"
interval_ms = 50
miss_count = {miss}
"#,
        access_sip = bracket(access_ip, 5060),
        core_sip = bracket(core_ip, 5060),
        next_hop = bracket(net.core_peer(), uas_port),
        sb_port = 7500 + u16::from(k),
        lo = !net.is_namespaces(),
        limits = crate::bgfproc::limits_toml(&crate::bgfproc::lab_limits()),
        rates = crate::bgfproc::LAB_RATES,
        statelog = store.active_lines(net, k),
    )
}

/// Which store a cluster logs to.
#[derive(Clone, Debug, Default)]
pub enum StoreKind {
    /// `bgf statelog` on the store node (single node).
    #[default]
    Embedded,
    /// A three-node NATS JetStream cluster (R3) on loopback, its client
    /// URLs given (loopback clusters only).
    JetStream(Vec<String>),
}

impl StoreKind {
    /// The `[statelog]` lines of active `k`.
    pub fn active_lines(&self, net: &ClusterNet, k: u8) -> String {
        match self {
            StoreKind::Embedded => format!(
                "backend = \"embedded\"\naddr = \"{}\"\nappend_timeout_ms = 1000\n{}",
                bracket(net.store(), 7400),
                PKI_LINES.replace("ROLE-NAME", &format!("active-bgf{k}"))
            ),
            StoreKind::JetStream(urls) => format!(
                "backend = \"jetstream\"\nservers = {urls:?}\nappend_timeout_ms = 2000\n{}",
                NATS_PKI_LINES.replace("ROLE-NAME", &format!("active-bgf{k}"))
            ),
        }
    }

    /// The standby's `[statelog]` credential lines.
    pub fn standby_lines(&self) -> String {
        match self {
            StoreKind::Embedded => PKI_LINES.replace("ROLE-NAME", "standby-sb1"),
            StoreKind::JetStream(_) => NATS_PKI_LINES.replace("ROLE-NAME", "standby-sb1"),
        }
    }
}

/// The credential lines of a JetStream cluster file (the PKI
/// [`state_log::natsproc::NatsCluster`] made in `<dir>/nats/pki`).
pub const NATS_PKI_LINES: &str = "ca = \"nats/pki/ca.pem\"\ncert = \"nats/pki/ROLE-NAME.pem\"\nkey = \"nats/pki/ROLE-NAME.key\"\n";

/// The credential lines of a cluster file (relative to the test's
/// directory, where [`start_statelog`] made the lab PKI).
pub const PKI_LINES: &str =
    "ca = \"pki/ca.pem\"\ncert = \"pki/ROLE-NAME.pem\"\nkey = \"pki/ROLE-NAME.key\"\n";

/// The test's lab PKI (made by [`start_statelog`]).
pub fn pki(dir: &TestDir) -> crate::pki::Pki {
    crate::pki::Pki {
        dir: dir.join("pki"),
    }
}

/// The standby's config: `mode` hot/cold, `extra` more `[standby]` lines.
pub fn standby_toml(net: &ClusterNet, store: &StoreKind, mode: &str, extra: &str) -> String {
    let (acc, cor) = match net {
        ClusterNet::Namespaces(_) => ("acc", "cor"),
        ClusterNet::Loopback(_) => ("lo", "lo"),
    };
    format!(
        r#"[instance]
name = "sb1"

[standby]
mode = "{mode}"
access_interface = "{acc}"
core_interface = "{cor}"
address_step = "{step}"
announce_ms = [0, 50, 200, 500, 1000, 2000]
{extra}

[[standby.protect]]
config = "bgf1.toml"

[[standby.protect]]
config = "bgf2.toml"

[log]
format = "json"
level = "info"

[admin]
listen = "{}:8080"
token = "{TOKEN}"

[statelog]
{creds}"#,
        net.standby_mgmt(),
        step = net.address_step(),
        creds = store.standby_lines(),
    )
}

/// How to start a [`Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Active 1's access over IPv6 (active 2's the other way); ignored on
    /// loopback (IPv4 only).
    pub a1_v6: bool,
    /// `hot` or `cold`.
    pub mode: String,
    /// More lines for the standby file's `[standby]`.
    pub standby_extra: String,
    /// Heartbeat misses before a failure (50 ms heartbeats).
    pub miss: u32,
    /// The store: the embedded one, or JetStream R3 (loopback only).
    pub jetstream: bool,
    /// More `[media]` lines for the actives (and so for the standby's
    /// planes), e.g. `backend = "xdp"`; empty = kernel sockets.
    pub media_extra: String,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            a1_v6: true,
            mode: "hot".into(),
            standby_extra: String::new(),
            // 5 × 50 ms rather than the default 3: other builds may share a
            // 2-core machine (a process death is still seen in tens of ms
            // through ICMP port unreachable).
            miss: 5,
            jetstream: false,
            media_extra: String::new(),
        }
    }
}

/// A running cluster; dropped = every process killed (and, in namespaces,
/// the topology torn down).
pub struct Cluster {
    /// Its processes (dropped first): `bgf statelog` (embedded store).
    pub store: Option<Proc>,
    /// The JetStream store's nodes (with `ClusterOptions::jetstream`).
    pub nats: Option<state_log::natsproc::NatsCluster>,
    /// `bgf active` 1 and 2.
    pub actives: Vec<Proc>,
    /// `bgf standby`.
    pub standby: Proc,
    /// Its network.
    pub net: ClusterNet,
    /// Configs, data and logs.
    pub dir: TestDir,
    /// Whether active 1's access is IPv6.
    pub a1_v6: bool,
}

fn started(p: Proc, needle: &str) -> Result<Proc, String> {
    if p.wait_stderr(needle, Duration::from_secs(20)) {
        Ok(p)
    } else {
        Err(format!("{} did not start\n{}", p.name, p.logs()))
    }
}

/// `bgf <role> --config <dir>/<file>` run by `cmd` (a node's command for a
/// bgf binary: `ClusterNet::command`, `Topology::command`), not waited for.
pub fn spawn_bgf(
    cmd: Command,
    role: &str,
    dir: &TestDir,
    file: &str,
    name: &str,
) -> Result<Proc, String> {
    let config = dir.join(file).display().to_string();
    Proc::spawn(cmd, &s(&[role, "--config", &config]), dir.path(), name)
}

/// [`spawn_bgf`], returned once it logs `bgf <role> started`.
pub fn start_bgf(
    cmd: Command,
    role: &str,
    dir: &TestDir,
    file: &str,
    name: &str,
) -> Result<Proc, String> {
    started(
        spawn_bgf(cmd, role, dir, file, name)?,
        &format!("bgf {role} started"),
    )
}

/// `bgf statelog` (the embedded store) on `ip:7400` with its data in
/// `<dir>/store` and the lab PKI in `<dir>/pki` (made here), run by `cmd`,
/// once it logs that it started.
pub fn start_statelog(cmd: Command, ip: IpAddr, dir: &TestDir) -> Result<Proc, String> {
    std::fs::create_dir_all(dir.join("store")).map_err(|e| format!("store dir: {e}"))?;
    let pki = crate::pki::Pki::lab(&dir.join("pki"), &[ip])?;
    let listen = bracket(ip, 7400);
    let data = dir.join("store").display().to_string();
    let mut args = s(&["statelog", "--listen", &listen, "--data", &data]);
    args.extend(pki.server_args());
    started(
        Proc::spawn(cmd, &args, dir.path(), "statelog")?,
        "bgf statelog started",
    )
}

/// Starts `bgf standby` (file `standby.toml` in `dir`) and waits for it.
pub fn start_standby(net: &ClusterNet, dir: &TestDir, name: &str) -> Result<Proc, String> {
    let bin = crate::build::bgf_binary()?;
    let cmd = net.command("sb", &bin.display().to_string());
    start_bgf(cmd, "standby", dir, "standby.toml", name)
}

impl Cluster {
    /// Writes the configs into `dir` and starts the store, both actives and
    /// the standby; returns once the standby hears both actives.
    pub fn start(net: ClusterNet, dir: TestDir, o: &ClusterOptions) -> Result<Cluster, String> {
        // Build the tools first: a compile while the cluster runs starves
        // the heartbeat threads on a 2-core machine.
        let bin = crate::build::bgf_binary()?;
        let _ = callgen_binary();
        let a1_v6 = o.a1_v6 && net.is_namespaces();
        let (store, nats, kind) = if o.jetstream {
            if net.is_namespaces() {
                return Err(
                    "the JetStream test store runs on loopback: use a loopback cluster".into(),
                );
            }
            let users = state_log::natsconf::Users {
                actives: vec!["bgf1".into(), "bgf2".into()],
                standbys: vec!["sb1".into()],
                operators: vec!["ops".into()],
            };
            let n = state_log::natsproc::NatsCluster::start(&dir.join("nats"), 3, &users)?;
            let kind = StoreKind::JetStream(n.urls());
            (None, Some(n), kind)
        } else {
            let p = start_statelog(
                net.command("store", &bin.display().to_string()),
                net.store(),
                &dir,
            )?;
            (Some(p), None, StoreKind::Embedded)
        };
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
        };
        for (k, v6, port) in [
            (1u8, a1_v6, 5060u16),
            (2, !a1_v6 && net.is_namespaces(), 5070),
        ] {
            let mut text = active_toml(&net, &kind, k, v6, port, o.miss);
            if !o.media_extra.is_empty() {
                text = text.replace(
                    "[media]\nworkers = 1\n",
                    &format!("[media]\nworkers = 1\n{}\n", o.media_extra.trim_end()),
                );
            }
            write(&format!("bgf{k}.toml"), text)?;
        }
        write(
            "standby.toml",
            standby_toml(&net, &kind, &o.mode, &o.standby_extra),
        )?;
        let mut actives = Vec::new();
        for k in 1..=2u8 {
            let cmd = net.command(&format!("a{k}"), &bin.display().to_string());
            let (file, name) = (format!("bgf{k}.toml"), format!("bgf{k}"));
            actives.push(start_bgf(cmd, "active", &dir, &file, &name)?);
        }
        let standby = start_standby(&net, &dir, "standby")?;
        let c = Cluster {
            store,
            nats,
            actives,
            standby,
            net,
            dir,
            a1_v6,
        };
        c.wait_links_up()?;
        Ok(c)
    }

    /// The namespace topology (namespace-only tests).
    pub fn t(&self) -> &Topology {
        self.net.topology()
    }

    /// Waits until the standby hears both actives' heartbeats.
    pub fn wait_links_up(&self) -> Result<(), String> {
        wait_until(Duration::from_secs(10), || {
            let v = self.standby_view()?;
            let p = v["protected"].as_array()?;
            p.iter()
                .all(|g| g["heartbeat"]["state"] == "alive")
                .then_some(())
        })
        .ok_or_else(|| {
            format!(
                "heartbeats not up: {:?}\n{}",
                self.standby_view(),
                self.logs()
            )
        })
    }

    /// Active k's `/v1/ha`.
    pub fn ha_view(&self, k: u8) -> Option<Value> {
        self.net
            .admin_get(&format!("a{k}"), self.net.active_mgmt(k), "/v1/ha")
    }

    /// The standby's `/v1/standby`.
    pub fn standby_view(&self) -> Option<Value> {
        self.net
            .admin_get("sb", self.net.standby_mgmt(), "/v1/standby")
    }

    /// The addresses configured in namespace `ns` (`ip -br addr`).
    pub fn addrs(&self, ns: &str) -> String {
        let out = self
            .t()
            .command(ns, "ip")
            .args(["-br", "addr"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        String::from_utf8_lossy(&out).to_string()
    }

    /// Every daemon's log tail.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for p in self
            .actives
            .iter()
            .chain([&self.standby])
            .chain(self.store.as_ref())
        {
            s += &p.logs();
            s += "\n";
        }
        if let Some(n) = &self.nats {
            s += &n.logs();
        }
        s
    }

    /// A `bgf-callgen` UAS on the core peer (control socket `<name>.sock`),
    /// giving up after `max_run_s`.
    pub fn uas(&self, name: &str, port: u16, rtp: &str, max_run_s: u32) -> Result<Proc, String> {
        let sock = self.dir.join(&format!("{name}.sock"));
        let p = Proc::spawn(
            self.net
                .command("core", &callgen_binary().display().to_string()),
            &s(&[
                "uas",
                "--local",
                &bracket(self.net.core_peer(), port),
                "--ctl-listen",
                &format!("unix:{}", sock.display()),
                "--rtp-ports",
                rtp,
                "--progress",
                "--max-run-s",
                &max_run_s.to_string(),
            ]),
            self.dir.path(),
            name,
        )?;
        started(p, "SIP on")
    }

    /// A `bgf-callgen` UAC on the UE through active `u.k`'s access address
    /// (JSON report `<name>.json`, SVG `<name>.svg`).
    pub fn uac(&self, u: &Uac) -> Result<Proc, String> {
        let proxy = if u.v6 {
            self.net.service_v6(u.k)
        } else {
            self.net.service_v4(u.k, Lan::Access)
        };
        let mut args = s(&[
            "uac",
            "--local",
            &bracket(self.net.ue(u.v6), u.local_port),
            "--proxy",
            &bracket(proxy, 5060),
            "--rtp-ports",
            &u.rtp,
            "--calls",
            &u.calls.to_string(),
            "--rate",
            &u.rate.to_string(),
            "--hold-ms",
            &u.hold_ms.to_string(),
            "--gap-threshold-ms",
            "60",
            "--json",
            &self
                .dir
                .join(&format!("{}.json", u.name))
                .display()
                .to_string(),
            "--svg",
            &self
                .dir
                .join(&format!("{}.svg", u.name))
                .display()
                .to_string(),
            "--progress",
        ]);
        // No UAS name: no control connection (no UAC → UAS media figures;
        // the UAS does not stop when this UAC finishes).
        if let Some(uas) = &u.uas {
            args.push("--ctl-connect".into());
            args.push(format!(
                "unix:{}",
                self.dir.join(&format!("{uas}.sock")).display()
            ));
        }
        Proc::spawn(
            self.net
                .command("ue", &callgen_binary().display().to_string()),
            &args,
            self.dir.path(),
            &u.name,
        )
    }

    /// UAS + UAC pairs through both actives (active 1 with `a1_v6` access,
    /// active 2 the other way), `calls` each at `rate`/s held `hold_ms`
    /// (the marker ends the hold); returns `[uas1, uas2, uac1, uac2]` once
    /// every call is up at both ends and (hot) in the standby's replicas.
    /// `progress` is called every ~500 ms while waiting.
    pub fn place_calls(
        &self,
        calls: u64,
        rate: f64,
        hold_ms: u64,
        hot: bool,
        progress: &mut dyn FnMut(&Cluster, &[Proc]),
    ) -> Result<[Proc; 4], String> {
        let max_run = (30 + hold_ms / 1000 + (calls as f64 / rate) as u64) as u32 + 60;
        let uas1 = self.uas("uas1", 5060, "24000-24999", max_run)?;
        let uas2 = self.uas("uas2", 5070, "25000-25999", max_run)?;
        let v6 = self.a1_v6;
        let pair = |name: &str, k: u8, v6: bool, port: u16, rtp: &str, uas: &str| Uac {
            name: name.into(),
            k,
            v6,
            local_port: port,
            rtp: rtp.into(),
            uas: Some(uas.into()),
            calls,
            rate,
            hold_ms,
        };
        let uac1 = self.uac(&pair("uac1", 1, v6, 5060, "26000-26999", "uas1"))?;
        let uac2 = self.uac(&pair(
            "uac2",
            2,
            !v6 && self.net.is_namespaces(),
            5070,
            "27000-27999",
            "uas2",
        ))?;
        let all = [uas1, uas2, uac1, uac2];
        // Up at both ends (a 2xx lost on a loaded machine is retransmitted
        // seconds later: such a call would not be up at the UAC yet), and
        // the standby's replicas hold every call before anything fails.
        let needle = format!("calls up {calls} total {calls}");
        let uac_needle = format!("uac calls up {calls} started {calls}");
        let deadline =
            std::time::Instant::now() + Duration::from_secs_f64(calls as f64 / rate + 30.0);
        let mut last = std::time::Instant::now();
        loop {
            let up = (0..2).all(|i| {
                all[i].stderr().contains(&needle) && all[i + 2].stderr().contains(&uac_needle)
            });
            let replicated = up
                && (!hot
                    || self.standby_view().is_some_and(|v| {
                        v["protected"].as_array().is_some_and(|p| {
                            p.iter().all(|g| {
                                g["replica"]["sessions"].as_u64() == Some(calls)
                                    && g["replica"]["lag"] == 0
                            })
                        })
                    }));
            if replicated {
                progress(self, &all);
                return Ok(all);
            }
            if std::time::Instant::now() > deadline {
                let mut m = format!(
                    "calls not up (or not replicated) within {:.0} s: standby {:?}\n",
                    calls as f64 / rate + 30.0,
                    self.standby_view()
                );
                for p in &all {
                    m += &p.logs();
                }
                return Err(m + &self.logs());
            }
            if last.elapsed() >= Duration::from_millis(500) {
                progress(self, &all);
                last = std::time::Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes `cluster.toml` for `bgfctl` (bgf1, bgf2, sb1; `[drill]` with
    /// the UE and core peer of this network, in namespaces a cut / heal of
    /// active 1's switch ports) and returns its path.
    pub fn write_cluster_file(&self) -> Result<PathBuf, String> {
        let admin = |ip: IpAddr| format!("http://{}", bracket(ip, 8080));
        let q = |v: &[String]| {
            format!(
                "[{}]",
                v.iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let (uac_wrap, uas_wrap, cut) = match &self.net {
            ClusterNet::Namespaces(t) => {
                let wrap = |n: &str| s(&["ip", "netns", "exec", &t.ns(n)]);
                let sh = |fwd: bool| {
                    let cmds: Vec<String> = [Lan::Access, Lan::Core, Lan::Mgmt]
                        .iter()
                        .map(|l| t.port_state_cmd("a1", *l, fwd).join(" "))
                        .collect();
                    q(&s(&["sh", "-c", &cmds.join(" && ")]))
                };
                (
                    q(&wrap("ue")),
                    q(&wrap("core")),
                    format!("cut = {}\nheal = {}\n", sh(false), sh(true)),
                )
            }
            ClusterNet::Loopback(_) => ("[]".into(), "[]".into(), String::new()),
        };
        let v6 = match self.net.ue(true) {
            IpAddr::V6(a) if self.net.is_namespaces() => format!("uac_ip6 = \"{a}\"\n"),
            _ => String::new(),
        };
        let text = format!(
            r#"token = "{TOKEN}"
timeout_ms = 5000

[[instance]]
name = "bgf1"
admin = "{a1}"
{cut}
[[instance]]
name = "bgf2"
admin = "{a2}"

[[instance]]
name = "sb1"
admin = "{sb}"

[drill]
callgen = "{callgen}"
uac_ip = "{ue4}"
{v6}uac_wrap = {uac_wrap}
uas_wrap = {uas_wrap}
rtp_ports = "24000-31999"
"#,
            a1 = admin(self.net.active_mgmt(1)),
            a2 = admin(self.net.active_mgmt(2)),
            sb = admin(self.net.standby_mgmt()),
            callgen = callgen_binary().display(),
            ue4 = self.net.ue(false),
        );
        let p = self.dir.join("cluster.toml");
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(p)
    }

    /// `bgfctl` where it reaches every admin API (the store's namespace, on
    /// the management network; here on loopback).
    pub fn bgfctl_command(&self) -> Command {
        let ctl = crate::ops::bgfctl_binary();
        self.net.command("store", &ctl.display().to_string())
    }

    /// Waits until the standby serves `bgf{k}`; its view.
    pub fn wait_serving(&self, k: u8, timeout: Duration) -> Result<Value, String> {
        let inst = format!("bgf{k}");
        wait_until(timeout, || {
            let v = self.standby_view()?;
            (v["role"] == "serving" && v["serving"] == inst.as_str()).then_some(v)
        })
        .ok_or_else(|| {
            format!(
                "standby did not take over {inst}: {:?}\n{}",
                self.standby_view(),
                self.logs()
            )
        })
    }

    /// The standby's last takeover report, once the first SIP and media
    /// marks are in (they come with traffic; up to 20 s).
    pub fn final_report(&self) -> Value {
        wait_until(Duration::from_secs(20), || {
            let v = self.standby_view()?;
            let r = v["last_takeover"].clone();
            (r["first_media_us"].is_u64() && r["first_sip_us"].is_u64()).then_some(r)
        })
        .unwrap_or_else(|| {
            self.standby_view()
                .map(|v| v["last_takeover"].clone())
                .unwrap_or(Value::Null)
        })
    }
}

/// One UAC run of [`Cluster::uac`].
#[derive(Clone, Debug)]
pub struct Uac {
    /// Names its files.
    pub name: String,
    /// Through active k.
    pub k: u8,
    /// IPv6 access.
    pub v6: bool,
    /// The UE's SIP port.
    pub local_port: u16,
    /// The UE's RTP port range.
    pub rtp: String,
    /// The UAS whose control socket it connects to (media figures both ways).
    pub uas: Option<String>,
    /// Calls.
    pub calls: u64,
    /// Calls/s.
    pub rate: f64,
    /// Hold (the marker ends it).
    pub hold_ms: u64,
}

/// Waits for a UAC's exit; returns (exit code, its JSON report).
pub fn finish(
    uac: &mut Proc,
    dir: &TestDir,
    timeout: Duration,
) -> Result<(Option<i32>, Value), String> {
    let st = uac.wait_exit(timeout);
    let report = std::fs::read(report_path(dir, &uac.name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| format!("{}: no JSON report\n{}", uac.name, uac.logs()))?;
    Ok((st.and_then(|s| s.code()), report))
}

/// `<dir>/<name>.json`.
pub fn report_path(dir: &TestDir, name: &str) -> PathBuf {
    dir.join(&format!("{name}.json"))
}

pub use ops::drill::{gaps, pct};

/// One line: the gap distribution.
pub fn gaps_line(what: &str, g: &[f64]) -> String {
    format!(
        "FAILOVER {what}: per-call max media gap over {} calls: min {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; all: {:?}",
        g.len(),
        pct(g, 0.0),
        pct(g, 50.0),
        pct(g, 99.0),
        pct(g, 100.0),
        g.iter().map(|x| (x * 10.0).round() / 10.0).collect::<Vec<_>>()
    )
}

/// One line: the takeover report.
pub fn report_line(what: &str, r: &Value) -> String {
    let ms = |k: &str| {
        r[k].as_u64()
            .map_or("-".to_string(), |v| format!("{:.2} ms", v as f64 / 1000.0))
    };
    format!(
        "FAILOVER {what}: takeover of {} ({}), epoch {}, {} sessions, {} records drained; since detection: fenced {}, log drained {}, addresses up {}, serving {}, first announcement {}, first media forwarded {}, first SIP handled {}",
        r["instance"], r["reason"], r["epoch"], r["sessions"], r["records_drained"],
        ms("fenced_us"), ms("drained_us"), ms("addresses_up_us"), ms("serving_us"),
        ms("first_announcement_us"), ms("first_media_us"), ms("first_sip_us")
    )
}
