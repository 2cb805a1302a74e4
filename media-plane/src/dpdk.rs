//! DPDK backend settings (always built, so the daemon can parse and check
//! them) and, with the `dpdk` feature, the poll-mode backend itself
//! ([`backend`]).
//!
//! One EAL per process: the first DPDK plane of a process initialises the
//! EAL and starts the ports on a dedicated poll thread; later planes of the
//! same process (a standby protecting several actives) attach to that same
//! poll loop and must name the same settings. Packets are dispatched to the
//! plane whose pinhole table holds their destination.

use crate::model::Side;
use std::net::IpAddr;

/// One DPDK port (one per side; both sides may name the same device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkPort {
    /// A PCI address (`0000:00:05.0`, passed to the EAL as `-a`) or a
    /// virtual device with its arguments (`net_af_packet0,iface=eth1`,
    /// passed as `--vdev`).
    pub device: String,
    /// Next hop for every packet leaving on this side (a router); `None`:
    /// destinations are on-link and resolved themselves.
    pub gateway: Option<IpAddr>,
}

impl DpdkPort {
    /// Whether `device` is a PCI address (else a vdev).
    pub fn is_pci(&self) -> bool {
        let d = self.device.split(',').next().unwrap_or("");
        d.contains(':') && !d.starts_with("net_")
    }

    /// The ethdev name DPDK gives the port (the device up to the first comma).
    pub fn port_name(&self) -> &str {
        self.device.split(',').next().unwrap_or("").trim()
    }
}

/// `[media.dpdk]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkSettings {
    /// EAL arguments (cores, memory, `--no-huge`, `--file-prefix`...); the
    /// devices of `access`/`core` are added.
    pub eal_args: Vec<String>,
    /// The access side's port.
    pub access: DpdkPort,
    /// The core side's port.
    pub core: DpdkPort,
    /// Packets per RX/TX burst.
    pub burst: u16,
    /// Mbufs in the pool.
    pub mbufs: u32,
    /// RX / TX descriptors per queue.
    pub descriptors: u16,
    /// Use the port's UDP/IPv4 checksum TX offload when it has one.
    pub checksum_offload: bool,
    /// Sleep this long when a poll round found nothing (0: pure busy poll,
    /// one core at 100 %; > 0 trades latency for CPU on shared hosts).
    pub idle_sleep_us: u32,
}

impl Default for DpdkSettings {
    fn default() -> Self {
        DpdkSettings {
            eal_args: Vec::new(),
            access: DpdkPort {
                device: String::new(),
                gateway: None,
            },
            core: DpdkPort {
                device: String::new(),
                gateway: None,
            },
            burst: 32,
            mbufs: 8191,
            descriptors: 1024,
            checksum_offload: true,
            idle_sleep_us: 0,
        }
    }
}

impl DpdkSettings {
    /// The port of `side`.
    pub fn port(&self, side: Side) -> &DpdkPort {
        match side {
            Side::Access => &self.access,
            Side::Core => &self.core,
        }
    }

    /// Whether both sides share one port.
    pub fn shared_port(&self) -> bool {
        self.access.port_name() == self.core.port_name()
    }

    /// The full EAL argv: program name, `eal_args`, then each distinct
    /// device as `-a PCI` or `--vdev=...`.
    pub fn eal_argv(&self) -> Vec<String> {
        let mut v = vec!["bgf".to_string()];
        v.extend(self.eal_args.iter().cloned());
        let ports: &[&DpdkPort] = if self.shared_port() {
            &[&self.access]
        } else {
            &[&self.access, &self.core]
        };
        for p in ports {
            if p.is_pci() {
                v.push("-a".into());
                v.push(p.device.clone());
            } else {
                v.push(format!("--vdev={}", p.device));
            }
        }
        v
    }

    /// Problems with these settings, for the config check.
    pub fn problems(&self) -> Vec<String> {
        let mut e = Vec::new();
        for (name, p) in [("access", &self.access), ("core", &self.core)] {
            if p.port_name().is_empty() {
                e.push(format!("media.dpdk.{name}.device missing — a PCI address (\"0000:00:05.0\") or a vdev (\"net_af_packet0,iface=eth1\")"));
            }
        }
        if self.burst == 0 || self.burst > 512 {
            e.push(format!(
                "media.dpdk.burst: {} is out of range — use 1-512 (default 32)",
                self.burst
            ));
        }
        if self.mbufs < 1024 {
            e.push(format!(
                "media.dpdk.mbufs: {} is too small — use at least 1024 (default 8191)",
                self.mbufs
            ));
        }
        if !(64..=8192).contains(&self.descriptors) {
            e.push(format!(
                "media.dpdk.descriptors: {} is out of range — use 64-8192 (default 1024)",
                self.descriptors
            ));
        }
        if self
            .eal_args
            .iter()
            .any(|a| a.starts_with("--vdev") || a == "-a" || a.starts_with("--allow"))
        {
            e.push("media.dpdk.eal_args: give the devices as media.dpdk.access.device / core.device, not as EAL arguments".into());
        }
        e
    }
}

#[cfg(feature = "dpdk")]
pub mod backend;

#[cfg(test)]
mod tests {
    use super::*;

    fn port(d: &str) -> DpdkPort {
        DpdkPort {
            device: d.into(),
            gateway: None,
        }
    }

    #[test]
    fn eal_argv_adds_each_device_once() {
        let s = DpdkSettings {
            eal_args: vec!["-l".into(), "1".into(), "--no-huge".into()],
            access: port("net_af_packet0,iface=macc"),
            core: port("0000:00:05.0"),
            ..DpdkSettings::default()
        };
        assert_eq!(
            s.eal_argv(),
            [
                "bgf",
                "-l",
                "1",
                "--no-huge",
                "--vdev=net_af_packet0,iface=macc",
                "-a",
                "0000:00:05.0"
            ]
        );
        assert_eq!(s.access.port_name(), "net_af_packet0");
        assert!(s.core.is_pci() && !s.access.is_pci());
        assert!(s.problems().is_empty());
        let shared = DpdkSettings {
            access: port("net_tap0,iface=x"),
            core: port("net_tap0,iface=x"),
            ..DpdkSettings::default()
        };
        assert!(shared.shared_port());
        assert_eq!(shared.eal_argv(), ["bgf", "--vdev=net_tap0,iface=x"]);
    }

    #[test]
    fn problems_name_the_key() {
        let s = DpdkSettings {
            eal_args: vec!["--vdev=net_null0".into()],
            burst: 0,
            ..DpdkSettings::default()
        };
        let p = s.problems().join("\n");
        for k in [
            "media.dpdk.access.device",
            "media.dpdk.core.device",
            "media.dpdk.burst",
            "media.dpdk.eal_args",
        ] {
            assert!(p.contains(k), "{k} in {p}");
        }
    }
}
