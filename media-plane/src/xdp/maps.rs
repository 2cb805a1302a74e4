//! The XDP program's map layouts (mirrors of the C structs in
//! `bpf/relay.bpf.c`, `repr(C)`) and the pure translation of a pinhole into
//! its four map entries. No I/O: unit-tested without a kernel.
//!
//! One entry per local port (access RTP/RTCP, core RTP/RTCP), keyed by
//! (local address, port). Each says which source is accepted, which source
//! goes up to user space (the latch IP while that port kind may latch; the
//! negotiated remote while another one is latched), and where an accepted
//! packet goes (the other leg's local port as source, its remote as
//! destination) — the same rules as [`crate::forward::decide`], precomputed.

use crate::forward::{LatchPending, PortKind};
use crate::model::{PinholeSpec, Side};
use crate::table::local_addrs;
use std::net::{IpAddr, SocketAddr};

/// An address and UDP port as the program compares them: IPv4 as
/// `::ffff:a.b.c.d`, the port in network order, the family (4 or 6; 0 =
/// none, which no packet matches).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ap {
    /// 16 address bytes (IPv4 mapped).
    pub addr: [u8; 16],
    /// Port, network byte order.
    pub port: u16,
    /// 4, 6 or 0 (none).
    pub family: u8,
    /// Zero.
    pub pad: u8,
}

/// `ip` in the program's 16-byte form (IPv4 as `::ffff:a.b.c.d`).
pub fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl Ap {
    /// The program's form of `a`.
    pub fn of(a: SocketAddr) -> Ap {
        Ap {
            addr: mapped(a.ip()),
            port: a.port().to_be(),
            family: if a.is_ipv4() { 4 } else { 6 },
            pad: 0,
        }
    }

    /// `a`, or the empty address no packet matches.
    pub fn of_opt(a: Option<SocketAddr>) -> Ap {
        a.map(Ap::of).unwrap_or_default()
    }
}

/// The port is on the core leg (else the access leg).
pub const FL_CORE: u32 = 1;
/// The RTCP port (else the RTP port, which also carries muxed RTCP).
pub const FL_RTCP: u32 = 2;
/// This (leg, kind) may still latch from `latch_ip`.
pub const FL_LATCH: u32 = 4;

/// One local port of a pinhole (`struct leg_port`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LegPort {
    /// The accepted source.
    pub expect: Ap,
    /// The SDP remote: a packet from it while another remote is accepted
    /// goes up to user space (which takes the remote back).
    pub negotiated: Ap,
    /// Source of the forwarded packet (the other leg's local port).
    pub from: Ap,
    /// Its destination; family 0 = no usable destination.
    pub to: Ap,
    /// The latch IP (mapped form), valid with [`FL_LATCH`].
    pub latch_ip: [u8; 16],
    /// Index into the per-pinhole statistics.
    pub slot: u32,
    /// Index of the plane (see `PLANES`).
    pub plane: u32,
    /// `FL_*` bits.
    pub flags: u32,
}

/// Per-pinhole statistics, one per CPU (`struct ph_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhStats {
    /// Accepted packets by arrival leg (0 access, 1 core).
    pub pkts: [u64; 2],
    /// Their UDP payload bytes.
    pub bytes: [u64; 2],
    /// Dropped packets by arrival leg.
    pub drops: [u64; 2],
}

/// Per-plane totals, one per CPU (`struct totals`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Packets forwarded in the kernel.
    pub fwd_pkts: u64,
    /// Their UDP payload bytes.
    pub fwd_bytes: u64,
    /// Drops by [`crate::forward::Reason`] index.
    pub drops: [u64; 6],
    /// Packets sent up to user space.
    pub upcalls: u64,
    /// Packets dropped because the upcall ring was full.
    pub upcalls_lost: u64,
    /// Forwards sent back out of the interface they came in on.
    pub tx: u64,
    /// Forwards redirected to another interface.
    pub redirect: u64,
}

/// A media address's port range (`struct range`): packets to it with no
/// pinhole are dropped as `unknown_port` while its plane serves.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range {
    /// The address (mapped form).
    pub addr: [u8; 16],
    /// Lowest port (host order).
    pub lo: u16,
    /// Highest port.
    pub hi: u16,
    /// Plane index + 1 (0 = unused entry).
    pub plane: u32,
}

/// An attached interface (`struct iface`): frames to other MACs are passed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Iface {
    /// The interface's MAC.
    pub mac: [u8; 6],
    /// Zero.
    pub pad: [u8; 2],
}

/// Bytes before the packet in an upcall record (`ifindex`, `len`, `why`).
pub const UPCALL_HDR: usize = 8;
/// Largest IP packet an upcall carries.
pub const UPCALL_MAX: usize = 2048;
/// Most ranges (planes × sides) one program serves.
pub const MAX_RANGES: u32 = 32;
/// Most planes one program serves.
pub const MAX_PLANES: u32 = 64;

/// Why a packet went up (`UP_*` in the program).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upcall {
    /// Source is the latch IP or the negotiated remote: the relay decides.
    Latch,
    /// The next hop's MAC is not resolved yet: the kernel sends it.
    NoNeigh,
    /// A shape the program does not translate (IPv4 options, or a zero
    /// UDP checksum, towards IPv6).
    Shape,
    /// Unknown code.
    Other(u8),
}

impl Upcall {
    /// From the record's `why` byte.
    pub fn from_code(c: u8) -> Upcall {
        match c {
            1 => Upcall::Latch,
            2 => Upcall::NoNeigh,
            3 => Upcall::Shape,
            o => Upcall::Other(o),
        }
    }
}

// SAFETY: plain repr(C) integers and byte arrays with no padding the kernel
// would read uninitialised (explicit pad fields, all zeroed by Default).
unsafe impl aya::Pod for Ap {}
// SAFETY: as above.
unsafe impl aya::Pod for LegPort {}
// SAFETY: as above.
unsafe impl aya::Pod for PhStats {}
// SAFETY: as above.
unsafe impl aya::Pod for Totals {}
// SAFETY: as above.
unsafe impl aya::Pod for Range {}
// SAFETY: as above.
unsafe impl aya::Pod for Iface {}

/// The four map entries of a pinhole as it stands (`spec` with latched
/// remotes, `pending` latch state), in [`local_addrs`] order.
pub fn leg_ports(
    spec: &PinholeSpec,
    pending: LatchPending,
    slot: u32,
    plane: u32,
) -> [(Ap, LegPort); 4] {
    local_addrs(spec).map(|(side, kind, local)| {
        let leg = spec.leg(side);
        let other = spec.leg(side.other());
        let expect = match kind {
            PortKind::Rtp => leg.remote_rtp,
            PortKind::Rtcp => leg.remote_rtcp,
        };
        let (from, to) = match kind {
            PortKind::Rtp => (other.local, other.remote_rtp),
            PortKind::Rtcp => (other.local_rtcp(), other.remote_rtcp),
        };
        let to = to.filter(|t| t.is_ipv4() == from.is_ipv4() && t.port() != 0);
        let latch = pending.is_pending(side, kind) && leg.latch_ip.is_some();
        let mut flags = 0;
        if side == Side::Core {
            flags |= FL_CORE;
        }
        if kind == PortKind::Rtcp {
            flags |= FL_RTCP;
        }
        if latch {
            flags |= FL_LATCH;
        }
        (
            Ap::of(local),
            LegPort {
                expect: Ap::of_opt(expect),
                negotiated: Ap::of_opt(pending.negotiated(side, kind)),
                from: Ap::of(from),
                to: Ap::of_opt(to),
                latch_ip: leg
                    .latch_ip
                    .filter(|_| latch)
                    .map(|ip| mapped(ip.to_canonical()))
                    .unwrap_or_default(),
                slot,
                plane,
                flags,
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Leg, PinholeId};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn spec() -> PinholeSpec {
        PinholeSpec {
            id: PinholeId {
                session: 1,
                stream: 0,
            },
            access: Leg {
                local: sa("[fd00::1]:30000"),
                remote_rtp: Some(sa("[fd00::99]:4000")),
                remote_rtcp: None,
                latch_ip: Some("fd00::99".parse().unwrap()),
            },
            core: Leg {
                local: sa("198.18.1.1:40000"),
                remote_rtp: Some(sa("198.18.1.9:5000")),
                remote_rtcp: Some(sa("198.18.1.9:5001")),
                latch_ip: None,
            },
        }
    }

    #[test]
    fn layouts_match_the_c_structs() {
        assert_eq!(std::mem::size_of::<Ap>(), 20);
        assert_eq!(std::mem::size_of::<LegPort>(), 4 * 20 + 16 + 12);
        assert_eq!(std::mem::size_of::<PhStats>(), 48);
        assert_eq!(std::mem::size_of::<Totals>(), 12 * 8);
        assert_eq!(std::mem::size_of::<Range>(), 24);
        assert_eq!(std::mem::size_of::<Iface>(), 8);
    }

    #[test]
    fn entries_follow_the_decision_rules() {
        let s = spec();
        let e = leg_ports(&s, LatchPending::from_spec(&s), 7, 2);
        let (k, a_rtp) = e[0];
        assert_eq!(k, Ap::of(sa("[fd00::1]:30000")));
        assert_eq!(k.port, 30000u16.to_be());
        assert_eq!(a_rtp.expect, Ap::of(sa("[fd00::99]:4000")));
        assert_eq!(a_rtp.from, Ap::of(sa("198.18.1.1:40000")));
        assert_eq!(a_rtp.to, Ap::of(sa("198.18.1.9:5000")));
        assert_eq!(a_rtp.to.family, 4);
        assert_eq!(a_rtp.flags, FL_LATCH);
        assert_eq!((a_rtp.slot, a_rtp.plane), (7, 2));
        // Access RTCP: no remote yet, may latch; goes out of core RTCP.
        let (k, a_rtcp) = e[1];
        assert_eq!(k.port, 30001u16.to_be());
        assert_eq!(a_rtcp.expect.family, 0);
        assert_eq!(a_rtcp.flags, FL_RTCP | FL_LATCH);
        assert_eq!(a_rtcp.to, Ap::of(sa("198.18.1.9:5001")));
        // Core RTCP goes to the access RTCP remote, which is unknown.
        let (_, c_rtcp) = e[3];
        assert_eq!(c_rtcp.flags, FL_CORE | FL_RTCP);
        assert_eq!(c_rtcp.to.family, 0, "no destination");
        assert_eq!(c_rtcp.latch_ip, [0; 16]);
    }

    #[test]
    fn family_mismatch_is_no_destination_and_latch_is_canonical() {
        let mut s = spec();
        s.core.remote_rtp = Some(sa("[fd00::5]:5000"));
        s.core.latch_ip = Some("::ffff:198.18.1.9".parse().unwrap());
        let e = leg_ports(&s, LatchPending::from_spec(&s), 0, 0);
        assert_eq!(e[0].1.to.family, 0, "IPv6 remote behind an IPv4 local");
        assert_eq!(e[2].1.latch_ip, mapped("198.18.1.9".parse().unwrap()));
        assert_eq!(e[2].1.flags, FL_CORE | FL_LATCH);
    }
}
