//! Two network namespaces joined by two veth pairs, for the media plane's
//! raw-frame backends (XDP, DPDK): `gen` holds the peers (UE on `g0`, IMS
//! core peer on `g1`), `rel` holds the relay's interfaces `r0` (access) and
//! `r1` (core). Addresses: access LAN 198.18.0.0/24 and fd00:a::/64, core LAN
//! 198.18.1.0/24 and fd00:c::/64; the peers are .200 / ::200.
//!
//! Names are `<tag>-<name>-gen` / `-rel` where tag is `BGF_NETNS_TAG`, or
//! `p<pid>` when unset, so parallel runs of the same test do not collide.
//! Dropped: the processes inside are killed and the namespaces deleted.

#![allow(dead_code)]

use std::os::fd::AsRawFd;
use std::process::Command;

/// Whether the test runs as root (namespaces, XDP and DPDK need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether this run can exercise XDP (root, program built in); panics
/// instead of skipping under `BGF_REQUIRE_XDP=1` (CI).
pub fn xdp_can_run(test: &str) -> bool {
    let require = std::env::var("BGF_REQUIRE_XDP").is_ok_and(|v| v == "1");
    let why = if !is_root() {
        "needs root (namespaces, XDP)"
    } else if media_plane::xdp::object().is_none() {
        "the XDP program is not built into this binary (clang/libbpf-dev missing at build time)"
    } else {
        return true;
    };
    assert!(!require, "BGF_REQUIRE_XDP=1 but {test} cannot run: {why}");
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// The MAC of `iface` in namespace `ns`.
pub fn mac(ns: &str, iface: &str) -> [u8; 6] {
    let out = Command::new("ip")
        .args(["-n", ns, "-br", "link", "show", iface])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let m = text
        .split_whitespace()
        .find(|w| w.len() == 17 && w.matches(':').count() == 5)
        .unwrap_or_else(|| panic!("no MAC in {text:?}"));
    let mut b = [0u8; 6];
    for (o, h) in b.iter_mut().zip(m.split(':')) {
        *o = u8::from_str_radix(h, 16).unwrap();
    }
    b
}

/// Run a command; panic with its output if it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {out:?}");
}

fn tag() -> String {
    match std::env::var("BGF_NETNS_TAG") {
        Ok(t) if !t.is_empty() => t,
        _ => format!("p{}", std::process::id()),
    }
}

fn del(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(p) = pid.parse::<i32>() {
                // SAFETY: kill(2) on a pid living in our own test namespace.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

/// The two namespaces. See the module docs.
pub struct Net {
    /// Generator namespace (peers).
    pub gen: String,
    /// Relay namespace.
    pub rel: String,
}

impl Drop for Net {
    fn drop(&mut self) {
        del(&self.gen);
        del(&self.rel);
    }
}

impl Net {
    /// Build the topology named `name`. With `gro` the peer ends get GRO
    /// (native XDP on a veth can only transmit to a peer that has NAPI).
    /// The relay ends get the addresses in `rel_addrs` (`(iface, cidr)`).
    pub fn up(name: &str, gro: bool, rel_addrs: &[(&str, &str)]) -> Net {
        let t = tag();
        let net = Net {
            gen: format!("{t}-{name}-gen"),
            rel: format!("{t}-{name}-rel"),
        };
        del(&net.gen);
        del(&net.rel);
        for n in [&net.gen, &net.rel] {
            sh(&["ip", "netns", "add", n]);
            sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
            for k in ["all", "default"] {
                sh(&[
                    "ip",
                    "netns",
                    "exec",
                    n,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{k}.accept_dad=0"),
                ]);
            }
        }
        for (g, r) in [("g0", "r0"), ("g1", "r1")] {
            sh(&[
                "ip", "-n", &net.gen, "link", "add", g, "type", "veth", "peer", "name", r, "netns",
                &net.rel,
            ]);
            for (n, i) in [(&net.gen, g), (&net.rel, r)] {
                sh(&["ip", "-n", n, "link", "set", i, "up"]);
                // Complete checksums: a rewritten packet keeps the sender's
                // (otherwise partial, offloaded) UDP checksum.
                sh(&["ip", "netns", "exec", n, "ethtool", "-K", i, "tx", "off"]);
            }
            if gro {
                sh(&[
                    "ip", "netns", "exec", &net.gen, "ethtool", "-K", g, "gro", "on",
                ]);
            }
        }
        for (i, a) in [
            ("g0", "198.18.0.200/24"),
            ("g0", "fd00:a::200/64"),
            ("g1", "198.18.1.200/24"),
            ("g1", "fd00:c::200/64"),
        ] {
            sh(&["ip", "-n", &net.gen, "addr", "add", a, "dev", i]);
        }
        for (i, a) in rel_addrs {
            sh(&["ip", "-n", &net.rel, "addr", "add", a, "dev", i]);
        }
        net
    }

    /// Run `f` on a thread inside `ns` (threads it spawns, and sockets it
    /// makes, belong to that namespace).
    pub fn run<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
        let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns on a valid namespace fd; affects this thread only.
                assert_eq!(
                    unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                    0
                );
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// Run `f` in the generator namespace.
    pub fn in_gen<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        Net::run(&self.gen, f)
    }

    /// Run `f` in the relay namespace.
    pub fn in_rel<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        Net::run(&self.rel, f)
    }
}
