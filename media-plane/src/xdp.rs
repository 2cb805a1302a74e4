//! The in-kernel (XDP) fast path: settings (always built, so the daemon can
//! parse and check them), the map layouts ([`maps`]) and the backend
//! ([`backend`]).
//!
//! The program (`bpf/relay.bpf.c`) is compiled by `build.rs` when clang and
//! libbpf-dev are present and embedded in the binary; [`object`] is `None`
//! otherwise and starting an XDP plane fails with a clear error (the daemon
//! then falls back to kernel sockets and says so).
//!
//! One program per interface and process: the first XDP plane of a process
//! (per network namespace) loads and attaches it; later planes (a standby
//! protecting several actives) share it, each with its own plane index, its
//! own media addresses and port ranges, and its own on/off switch (an idle
//! plane's pinholes sit in the map and forward nothing until it takes over).

use crate::model::Side;
use std::net::IpAddr;

pub mod backend;
pub mod maps;
pub mod sys;

/// The compiled XDP program, if this binary was built with clang.
pub fn object() -> Option<&'static [u8]> {
    #[cfg(bgf_xdp_object)]
    {
        // ELF parsing reads 8-byte fields in place: keep the bytes aligned.
        Some(aya::include_bytes_aligned!(concat!(
            env!("OUT_DIR"),
            "/relay.bpf.o"
        )))
    }
    #[cfg(not(bgf_xdp_object))]
    {
        None
    }
}

/// How to attach the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native (driver) mode where the driver supports it, else generic.
    #[default]
    Auto,
    /// Native (driver) mode only: fail if the driver cannot.
    Native,
    /// Generic (skb) mode: works on every interface, slower.
    Generic,
}

impl XdpMode {
    /// Parse `auto`, `native` or `generic`.
    pub fn parse(s: &str) -> Option<XdpMode> {
        match s {
            "auto" => Some(XdpMode::Auto),
            "native" => Some(XdpMode::Native),
            "generic" => Some(XdpMode::Generic),
            _ => None,
        }
    }
}

/// `[media.xdp]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpSettings {
    /// The access-side interface (carries the access media address).
    pub access_interface: String,
    /// The core-side interface (may be the same as the access one).
    pub core_interface: String,
    /// Native, generic or auto.
    pub mode: XdpMode,
    /// Pinholes the maps hold (all planes of the process together); each
    /// takes four map entries and a statistics slot. Calls beyond it are
    /// refused with 503.
    pub max_pinholes: u32,
    /// Size of the ring buffer carrying packets up to user space (KiB,
    /// a power of two; one packet takes ~2 KiB).
    pub upcall_ring_kib: u32,
}

impl Default for XdpSettings {
    fn default() -> Self {
        XdpSettings {
            access_interface: String::new(),
            core_interface: String::new(),
            mode: XdpMode::Auto,
            max_pinholes: 131_072,
            upcall_ring_kib: 8192,
        }
    }
}

impl XdpSettings {
    /// The interface of `side`.
    pub fn interface(&self, side: Side) -> &str {
        match side {
            Side::Access => &self.access_interface,
            Side::Core => &self.core_interface,
        }
    }

    /// Problems with these settings, for the config check.
    pub fn problems(&self) -> Vec<String> {
        let mut e = Vec::new();
        for side in [Side::Access, Side::Core] {
            if self.interface(side).trim().is_empty() {
                e.push(format!("media.xdp.{side}_interface missing — the interface carrying the {side} media address (e.g. \"eth1\")"));
            }
        }
        if !(1..=4_194_304).contains(&self.max_pinholes) {
            e.push(format!(
                "media.xdp.max_pinholes: {} is out of range — use 1-4194304 (default 131072)",
                self.max_pinholes
            ));
        }
        if !self.upcall_ring_kib.is_power_of_two()
            || !(64..=1 << 20).contains(&self.upcall_ring_kib)
        {
            e.push(format!(
                "media.xdp.upcall_ring_kib: {} must be a power of two from 64 to 1048576 (default 8192)",
                self.upcall_ring_kib
            ));
        }
        e
    }
}

/// A plane's media addresses and the port range of each (packets to them
/// with no pinhole are dropped while the plane serves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpAddr {
    /// Which side.
    pub side: Side,
    /// The media address.
    pub ip: IpAddr,
    /// First port of the range (RTP ports start here).
    pub port_min: u16,
    /// Last port (the last RTCP port).
    pub port_max: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_key() {
        let s = XdpSettings {
            max_pinholes: 0,
            upcall_ring_kib: 1000,
            ..XdpSettings::default()
        };
        let p = s.problems().join("\n");
        for k in [
            "media.xdp.access_interface",
            "media.xdp.core_interface",
            "media.xdp.max_pinholes",
            "media.xdp.upcall_ring_kib",
        ] {
            assert!(p.contains(k), "{k} in {p}");
        }
        let ok = XdpSettings {
            access_interface: "eth1".into(),
            core_interface: "eth1".into(),
            ..XdpSettings::default()
        };
        assert!(ok.problems().is_empty());
        assert_eq!(XdpMode::parse("generic"), Some(XdpMode::Generic));
        assert_eq!(XdpMode::parse("fast"), None);
    }
}
