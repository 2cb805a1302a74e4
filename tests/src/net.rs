//! Address allocation so tests run in parallel: every [`TestNet`] owns a
//! loopback /24 `127.N.M.0/24` (all of 127/8 is on `lo` on Linux, no setup or
//! root needed) and a block of 100 ports for the shared `::1` address.
//!
//! `N` derives from the process id and `M` from a process-wide counter, so two
//! test binaries running at the same time very rarely pick the same /24.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

/// Host numbers inside a test's /24.
pub mod host {
    /// The BGF's access-side SIP and media address.
    pub const BGF_ACCESS: u8 = 1;
    /// The BGF's core-side SIP and media address.
    pub const BGF_CORE: u8 = 2;
    /// The core-side peer (SIPp UAS, S-CSCF stand-in, core RTP endpoint).
    pub const CORE_PEER: u8 = 3;
    /// The UE (SIPp UAC, UE RTP endpoint).
    pub const UE: u8 = 4;
    /// An unauthorised sender.
    pub const ROGUE: u8 = 5;
    /// The BGF's admin HTTP listener.
    pub const ADMIN: u8 = 6;
}

/// One test's private addresses.
#[derive(Clone, Debug)]
pub struct TestNet {
    /// Second octet.
    pub n: u8,
    /// Third octet.
    pub m: u8,
    /// First port of this test's private 100-port block (for `::1`).
    pub port_block: u16,
}

impl TestNet {
    /// Allocates the next /24 of this process.
    pub fn new() -> TestNet {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let c = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let n = 32 + (pid % 200) as u8;
        let m = 1 + ((pid / 200 + c) % 250) as u8;
        // 100-port blocks between 40000 and 59999 for ::1 users.
        let block = (pid.wrapping_mul(7).wrapping_add(c.wrapping_mul(13))) % 200;
        TestNet {
            n,
            m,
            port_block: 40000 + (block as u16) * 100,
        }
    }

    /// `127.N.M.host`.
    pub fn ip(&self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.n, self.m, host))
    }

    /// `127.N.M.host:port`.
    pub fn addr(&self, host: u8, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip(host), port)
    }

    /// `[::1]:port_block + offset` (offset < 100).
    pub fn v6(&self, offset: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), self.port_block + offset)
    }
}

impl Default for TestNet {
    fn default() -> Self {
        TestNet::new()
    }
}

/// A UDP port on `ip` that was free a moment ago (bind to port 0, read, close).
pub fn free_udp_port(ip: IpAddr) -> u16 {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}
