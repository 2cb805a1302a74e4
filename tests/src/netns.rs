//! The N+1 cluster's network in namespaces: the topology of
//! `../shared/design/testbed-notes.md`, built and torn down per test.
//!
//! ```text
//!  ns P-ue ──acc──┐                     ┌──cor── ns P-core
//!                 │   ns P-sw           │
//!  ns P-a1 ─acc/cor/mgmt─▶ bridges acc, cor, mgmt ◀─ ... ─ ns P-sb
//!  ns P-aN ─acc/cor/mgmt─┘               └──mgmt── ns P-store
//! ```
//!
//! Every node namespace has its interfaces named `acc`, `cor`, `mgmt`
//! (created inside it, the peer end moved straight into `P-sw`, so nothing is
//! named in the root namespace and topologies with different prefixes run in
//! parallel). Addresses (all inside 198.18.0.0/15 and fd00::/8):
//!
//! | LAN | prefix | UE / core peer / store | active k node | active k **service** | standby node |
//! |---|---|---|---|---|---|
//! | access | 198.18.0.0/24, fd00:a::/64 | .200 / ::200 | .(100+k) | .(10+k), fd00:a::(10+k) | .99 |
//! | core | 198.18.1.0/24, fd00:c::/64 | .200 / ::200 | .(100+k) | .(10+k) | .99 |
//! | mgmt | 198.18.2.0/24 | store .200 | .(100+k) | — | .99 |
//!
//! Node addresses stay with their node; service addresses are what a
//! standby takes over. Sysctls per node follow the notes: no DAD, non-local
//! bind, `arp_ignore=1`, `arp_announce=2`, `keep_addr_on_down=1`.
//!
//! Fault injection: [`Topology::black_hole`] (switch port to STP state
//! disabled: silence both ways), [`Topology::heal`], [`Topology::link_down`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Prefixes of the topologies alive in this process (for [`teardown_all`]).
static LIVE: Mutex<Vec<(String, u8)>> = Mutex::new(Vec::new());

/// Tears down every topology of this process that is still alive: every
/// process in it killed, every namespace deleted (a signal handler's
/// cleanup; the `Topology`s' own drops are then no-ops).
pub fn teardown_all() {
    let live = LIVE.lock().map(|v| v.clone()).unwrap_or_default();
    for (prefix, actives) in live {
        Topology { prefix, actives }.teardown_only();
    }
}

/// Is the harness root (namespaces need CAP_SYS_ADMIN/CAP_NET_ADMIN)?
/// Prints why a test is skipped when not.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED {test}: needs root for network namespaces (run the suite as root)");
    }
    root
}

/// The three LANs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lan {
    /// UEs ↔ BGFs.
    Access,
    /// BGFs ↔ IMS core.
    Core,
    /// Heartbeats, the store, admin.
    Mgmt,
}

impl Lan {
    /// Interface name inside a node (and the bridge's name in the switch).
    pub fn ifname(self) -> &'static str {
        match self {
            Lan::Access => "acc",
            Lan::Core => "cor",
            Lan::Mgmt => "mgmt",
        }
    }

    fn v4(self, host: u8) -> Ipv4Addr {
        let third = match self {
            Lan::Access => 0,
            Lan::Core => 1,
            Lan::Mgmt => 2,
        };
        Ipv4Addr::new(198, 18, third, host)
    }

    fn v6(self, host: u8) -> Ipv6Addr {
        let net = match self {
            Lan::Access => 0xa,
            Lan::Core => 0xc,
            Lan::Mgmt => 0xe,
        };
        Ipv6Addr::new(0xfd00, net, 0, 0, 0, 0, 0, u16::from(host))
    }
}

/// Host numbers.
pub mod host {
    /// The UE (access) / the core peer (core) / the store (mgmt).
    pub const PEER: u8 = 200;
    /// The standby node.
    pub const STANDBY: u8 = 99;
    /// Active k's node address is `ACTIVE_NODE + k`.
    pub const ACTIVE_NODE: u8 = 100;
    /// Active k's service address is `SERVICE + k`.
    pub const SERVICE: u8 = 10;
}

/// One running topology; dropped = every process in it killed and every
/// namespace deleted.
pub struct Topology {
    /// Namespace prefix.
    pub prefix: String,
    /// Number of actives.
    pub actives: u8,
}

impl Topology {
    /// Builds `P-{sw,ue,core,store,a1..aN,sb}`. `prefix` must be short (≤ 6
    /// characters) and unique among concurrently running tests.
    ///
    /// `BGF_NETNS_TAG` (≤ 4 characters), when set, is put in front of every
    /// prefix, so two checkouts can run the same namespace tests at once on
    /// one machine without deleting each other's namespaces.
    pub fn new(prefix: &str, actives: u8) -> Result<Topology, String> {
        let tag = std::env::var("BGF_NETNS_TAG").unwrap_or_default();
        if prefix.len() > 6 || tag.len() > 4 || actives == 0 || actives > 8 {
            return Err(format!(
                "topology {prefix:?} (BGF_NETNS_TAG {tag:?}) with {actives} actives: \
                 prefix ≤ 6 chars, tag ≤ 4, 1..=8 actives"
            ));
        }
        let t = Topology {
            prefix: format!("{tag}{prefix}"),
            actives,
        };
        t.teardown(); // leftovers of a crashed earlier run
        if let Ok(mut v) = LIVE.lock() {
            v.push((t.prefix.clone(), actives));
        }
        t.build()?;
        Ok(t)
    }

    /// Namespace of a node: `ue`, `core`, `store`, `sb`, `a1`.. .
    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    /// Namespace of active k (1-based).
    pub fn active_ns(&self, k: u8) -> String {
        self.ns(&format!("a{k}"))
    }

    /// The standby's namespace.
    pub fn standby_ns(&self) -> String {
        self.ns("sb")
    }

    /// Active k's service address on `lan` (access or core).
    pub fn service_v4(&self, k: u8, lan: Lan) -> IpAddr {
        IpAddr::V4(lan.v4(host::SERVICE + k))
    }

    /// Active k's IPv6 service address on the access LAN.
    pub fn service_v6(&self, k: u8) -> IpAddr {
        IpAddr::V6(Lan::Access.v6(host::SERVICE + k))
    }

    /// Active k's node (management) address on `lan`.
    pub fn active_node(&self, k: u8, lan: Lan) -> IpAddr {
        IpAddr::V4(lan.v4(host::ACTIVE_NODE + k))
    }

    /// The standby's node address on `lan`.
    pub fn standby_node(&self, lan: Lan) -> IpAddr {
        IpAddr::V4(lan.v4(host::STANDBY))
    }

    /// The UE's IPv4 / IPv6 address (access LAN).
    pub fn ue(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(Lan::Access.v6(host::PEER))
        } else {
            IpAddr::V4(Lan::Access.v4(host::PEER))
        }
    }

    /// The core peer's address (core LAN).
    pub fn core_peer(&self) -> IpAddr {
        IpAddr::V4(Lan::Core.v4(host::PEER))
    }

    /// The store's address (mgmt LAN).
    pub fn store(&self) -> IpAddr {
        IpAddr::V4(Lan::Mgmt.v4(host::PEER))
    }

    /// A command run inside `ns` (`ip netns exec`; the program is exec'd,
    /// so the child's pid is the program's).
    pub fn command(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Runs `ip ARGS` inside `ns`, failing with its stderr.
    pub fn ip(&self, ns: &str, args: &[&str]) -> Result<(), String> {
        run("ip", &[&["-n", ns], args].concat())
    }

    /// Silences the switch port of `node`'s interface on `lan` both ways
    /// (bridge port state disabled) — a cut link that the node cannot see.
    pub fn black_hole(&self, node: &str, lan: Lan) -> Result<(), String> {
        let c = self.port_state_cmd(node, lan, false);
        let args: Vec<&str> = c[1..].iter().map(String::as_str).collect();
        run(&c[0], &args)
    }

    /// Undoes [`black_hole`](Self::black_hole) (port forwarding again).
    pub fn heal(&self, node: &str, lan: Lan) -> Result<(), String> {
        let c = self.port_state_cmd(node, lan, true);
        let args: Vec<&str> = c[1..].iter().map(String::as_str).collect();
        run(&c[0], &args)
    }

    /// The command that stops (`forwarding` false: STP state disabled) or
    /// restarts `node`'s switch port on `lan` — a cable cut, also given to
    /// `bgfctl drill --mode cut` as the cut / heal command.
    pub fn port_state_cmd(&self, node: &str, lan: Lan, forwarding: bool) -> Vec<String> {
        let state = if forwarding { "3" } else { "0" };
        [
            "bridge",
            "-n",
            &self.ns("sw"),
            "link",
            "set",
            "dev",
            &self.port(node, lan),
            "state",
            state,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Sets `node`'s own interface on `lan` down (the node sees ENETUNREACH).
    pub fn link_down(&self, node: &str, lan: Lan) -> Result<(), String> {
        self.ip(&self.ns(node), &["link", "set", lan.ifname(), "down"])
    }

    /// Pids of every process in `ns`.
    pub fn pids(&self, ns: &str) -> Vec<i32> {
        let out = Command::new("ip")
            .args(["netns", "pids", ns])
            .stderr(Stdio::null())
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The MAC address of `node`'s interface on `lan`.
    pub fn mac(&self, node: &str, lan: Lan) -> Result<String, String> {
        let out = Command::new("ip")
            .args(["-n", &self.ns(node), "-br", "link", "show", lan.ifname()])
            .output()
            .map_err(|e| format!("ip link show: {e}"))?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .map(str::to_string)
            .ok_or_else(|| format!("no MAC for {node}/{}", lan.ifname()))
    }

    /// The neighbour entry (`lladdr` and state) `node` holds for `addr`.
    pub fn neighbour(&self, node: &str, addr: IpAddr) -> Option<String> {
        let out = Command::new("ip")
            .args(["-n", &self.ns(node), "neigh", "show", &addr.to_string()])
            .output()
            .ok()?;
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!s.is_empty()).then_some(s)
    }

    fn port(&self, node: &str, lan: Lan) -> String {
        format!("{node}{}", lan.ifname())
    }

    fn nodes(&self) -> Vec<(String, Vec<(Lan, u8)>)> {
        let mut v = vec![
            ("ue".to_string(), vec![(Lan::Access, host::PEER)]),
            ("core".to_string(), vec![(Lan::Core, host::PEER)]),
            ("store".to_string(), vec![(Lan::Mgmt, host::PEER)]),
            (
                "sb".to_string(),
                vec![
                    (Lan::Access, host::STANDBY),
                    (Lan::Core, host::STANDBY),
                    (Lan::Mgmt, host::STANDBY),
                ],
            ),
        ];
        for k in 1..=self.actives {
            let h = host::ACTIVE_NODE + k;
            v.push((
                format!("a{k}"),
                vec![(Lan::Access, h), (Lan::Core, h), (Lan::Mgmt, h)],
            ));
        }
        v
    }

    fn build(&self) -> Result<(), String> {
        let sw = self.ns("sw");
        run("ip", &["netns", "add", &sw])?;
        self.ip(&sw, &["link", "set", "lo", "up"])?;
        for lan in [Lan::Access, Lan::Core, Lan::Mgmt] {
            self.ip(&sw, &["link", "add", lan.ifname(), "type", "bridge"])?;
            self.ip(&sw, &["link", "set", lan.ifname(), "up"])?;
        }
        for (node, ifs) in self.nodes() {
            let ns = self.ns(&node);
            run("ip", &["netns", "add", &ns])?;
            for (k, v) in [
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                ("net.ipv6.conf.all.keep_addr_on_down", "1"),
                ("net.ipv6.conf.default.keep_addr_on_down", "1"),
                ("net.ipv4.ip_nonlocal_bind", "1"),
                ("net.ipv6.ip_nonlocal_bind", "1"),
                ("net.ipv4.conf.all.arp_ignore", "1"),
                ("net.ipv4.conf.all.arp_announce", "2"),
            ] {
                run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &ns,
                        "sysctl",
                        "-q",
                        "-w",
                        &format!("{k}={v}"),
                    ],
                )?;
            }
            self.ip(&ns, &["link", "set", "lo", "up"])?;
            for (lan, h) in ifs {
                let port = self.port(&node, lan);
                self.ip(
                    &ns,
                    &[
                        "link",
                        "add",
                        lan.ifname(),
                        "type",
                        "veth",
                        "peer",
                        "name",
                        &port,
                        "netns",
                        &sw,
                    ],
                )?;
                self.ip(&sw, &["link", "set", &port, "master", lan.ifname()])?;
                self.ip(&sw, &["link", "set", &port, "up"])?;
                self.ip(&ns, &["link", "set", lan.ifname(), "up"])?;
                // Native XDP on a node's veth (media.backend = "xdp") can
                // only transmit to a peer end that has NAPI: GRO on.
                run(
                    "ip",
                    &["netns", "exec", &sw, "ethtool", "-K", &port, "gro", "on"],
                )?;
                // The peers send complete UDP checksums (no partial
                // checksum offload), as packets from a wire have: a relay
                // that rewrites in place keeps the checksum it got.
                if node == "ue" || node == "core" {
                    run(
                        "ip",
                        &[
                            "netns",
                            "exec",
                            &ns,
                            "ethtool",
                            "-K",
                            lan.ifname(),
                            "tx",
                            "off",
                        ],
                    )?;
                }
                self.ip(
                    &ns,
                    &[
                        "addr",
                        "add",
                        &format!("{}/24", lan.v4(h)),
                        "dev",
                        lan.ifname(),
                    ],
                )?;
                self.ip(
                    &ns,
                    &[
                        "addr",
                        "add",
                        &format!("{}/64", lan.v6(h)),
                        "dev",
                        lan.ifname(),
                        "nodad",
                    ],
                )?;
            }
        }
        // Each active starts owning its service addresses.
        for k in 1..=self.actives {
            self.add_service_addrs(&format!("a{k}"), k)?;
        }
        Ok(())
    }

    /// Adds active k's service addresses to `node`'s interfaces (what the
    /// harness does for an active at start; the standby does it itself).
    pub fn add_service_addrs(&self, node: &str, k: u8) -> Result<(), String> {
        let ns = self.ns(node);
        for (addr, lan) in [
            (
                format!("{}/24", self.service_v4(k, Lan::Access)),
                Lan::Access,
            ),
            (format!("{}/24", self.service_v4(k, Lan::Core)), Lan::Core),
            (format!("{}/64", self.service_v6(k)), Lan::Access),
        ] {
            self.ip(&ns, &["addr", "add", &addr, "dev", lan.ifname(), "nodad"])?;
        }
        Ok(())
    }

    /// Runs `f` on a thread inside `ns` (`setns(2)`), e.g. an HTTP request
    /// to a node's admin API from the harness.
    pub fn run_in<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
        let path = std::path::Path::new("/run/netns").join(ns);
        let file = std::fs::File::open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        std::thread::scope(|s| {
            s.spawn(move || {
                use std::os::fd::AsRawFd;
                // SAFETY: setns on a valid namespace fd; it affects only this
                // (scoped, short-lived) thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(format!("setns({ns}): {}", std::io::Error::last_os_error()));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| format!("thread in {ns} panicked"))?
        })
    }

    /// Kills every process in the topology and deletes its namespaces.
    pub fn teardown(&self) {
        self.teardown_only();
        if let Ok(mut v) = LIVE.lock() {
            v.retain(|(p, _)| *p != self.prefix);
        }
    }

    fn teardown_only(&self) {
        let mut names = vec![self.ns("sw")];
        names.extend(self.nodes().into_iter().map(|(n, _)| self.ns(&n)));
        for ns in &names {
            for pid in self.pids(ns) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        for ns in &names {
            if std::path::Path::new("/run/netns").join(ns).exists() {
                let _ = Command::new("ip")
                    .args(["netns", "del", ns])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
