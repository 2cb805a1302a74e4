//! Network-namespace test bed for the standby: a switch namespace with one
//! bridge and a veth per host namespace (`<prefix>-peer`, `-sb`, `-old`).
//! Addresses from 198.18.0.0/15 and fd00::/8 only. Needs root; `root()`
//! prints a skip message otherwise.
#![allow(dead_code)]

use std::process::Command;

/// Whether we may create namespaces; prints the skip message if not.
pub fn root(test: &str) -> bool {
    // SAFETY: plain getter.
    let ok = unsafe { libc::geteuid() } == 0;
    if !ok {
        println!("SKIP {test}: needs root (network namespaces, CAP_NET_ADMIN/CAP_NET_RAW)");
    }
    ok
}

/// Run `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &str) -> String {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a shell command in namespace `ns`; returns (success, stdout).
pub fn sh(ns: &str, cmd: &str) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .output()
        .expect("run ip netns exec");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The bed: namespaces removed on drop.
pub struct Bed {
    pub prefix: String,
    names: Vec<String>,
}

pub const PEER4: &str = "198.18.200.1";
pub const SB4: &str = "198.18.200.5";
pub const OLD_MGMT4: &str = "198.18.200.11";
pub const SVC4: &str = "198.18.200.10";
pub const PEER6: &str = "fd00:200::1";
pub const SB6: &str = "fd00:200::5";
pub const SVC6: &str = "fd00:200::10";

impl Bed {
    /// `prefix` must be unique per test (it names the namespaces).
    pub fn new(prefix: &str) -> Bed {
        let prefix = format!("{prefix}{}", std::process::id() % 100_000);
        let mut bed = Bed {
            prefix: prefix.clone(),
            names: Vec::new(),
        };
        for n in ["sw", "peer", "sb", "old"] {
            let name = format!("{prefix}-{n}");
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            ip(&format!("netns add {name}"));
            bed.names.push(name.clone());
            ip(&format!("-n {name} link set lo up"));
            if n != "sw" {
                for s in [
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ] {
                    sh(&name, &format!("sysctl -qw {s}"));
                }
            }
        }
        let sw = bed.ns("sw");
        ip(&format!("-n {sw} link add br0 type bridge"));
        ip(&format!("-n {sw} link set br0 up"));
        for (i, n) in ["peer", "sb", "old"].iter().enumerate() {
            let host = bed.ns(n);
            ip(&format!(
                "-n {sw} link add p{i} type veth peer name eth0 netns {host}"
            ));
            ip(&format!("-n {sw} link set p{i} master br0"));
            ip(&format!("-n {sw} link set p{i} up"));
            ip(&format!("-n {host} link set eth0 up"));
        }
        let (peer, sb, old) = (bed.ns("peer"), bed.ns("sb"), bed.ns("old"));
        ip(&format!("-n {peer} addr add {PEER4}/24 dev eth0"));
        ip(&format!("-n {peer} addr add {PEER6}/64 dev eth0 nodad"));
        ip(&format!("-n {sb} addr add {SB4}/24 dev eth0"));
        ip(&format!("-n {sb} addr add {SB6}/64 dev eth0 nodad"));
        ip(&format!("-n {old} addr add {OLD_MGMT4}/24 dev eth0"));
        ip(&format!("-n {old} addr add {SVC4}/24 dev eth0"));
        ip(&format!("-n {old} addr add {SVC6}/64 dev eth0 nodad"));
        bed
    }

    pub fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    /// MAC of eth0 in namespace `n`.
    pub fn mac(&self, n: &str) -> String {
        let (_, out) = sh(&self.ns(n), "cat /sys/class/net/eth0/address");
        // /sys shows the mounting namespace; ask ip instead.
        let _ = out;
        let o = ip(&format!("-n {} -o link show eth0", self.ns(n)));
        o.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .expect("link/ether in ip link output")
            .to_string()
    }

    /// The peer's neighbour entry for `addr`: (lladdr, state).
    pub fn neigh(&self, addr: &str) -> Option<(String, String)> {
        let o = ip(&format!(
            "-n {} neigh show {addr} dev eth0",
            self.ns("peer")
        ));
        let w: Vec<&str> = o.split_whitespace().collect();
        let ll = w.iter().position(|x| *x == "lladdr")?;
        Some((w.get(ll + 1)?.to_string(), w.last()?.to_string()))
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// Run `f` on a new thread inside namespace `ns` (sockets it creates live
/// there) and return its result.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in_ns(ns, f).join().expect("namespace thread")
}

/// Start `f` on a new thread inside namespace `ns`.
pub fn spawn_in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        use std::os::fd::AsRawFd;
        // SAFETY: valid namespace fd; affects only this thread.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}
