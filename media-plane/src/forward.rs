//! The forwarding decision: pure, no I/O, no clock, no allocation.
//!
//! Given a pinhole's current [`PinholeSpec`] and latch state, where a packet
//! arrived (which leg, RTP or RTCP port, from which source) and its bytes,
//! [`decide`] says whether to forward it (from which local address to which
//! remote) or why to drop it. Every backend (kernel sockets today, DPDK later)
//! calls this one function, so there is exactly one implementation of the
//! firewall, NAT and latching rules.
//!
//! Rules, in order:
//! 1. **Source.** A packet on leg X's RTP port is accepted only from X's
//!    `remote_rtp`, on the RTCP port only from `remote_rtcp`. While X has a
//!    `latch_ip` and that port kind has not latched yet, a packet from
//!    `latch_ip` (any port) is also accepted and latches: it becomes the
//!    remote ([`Latch`]). RTP and RTCP latch independently (NATs map the two
//!    ports independently); after a kind has latched only the latched remote
//!    passes — except the negotiated (SDP) remote itself, which is always
//!    accepted and takes the remote back (a stale packet from a port the
//!    media just moved away from cannot capture the stream). Anything else:
//!    [`Reason::WrongSource`].
//! 2. **Content.** On the RTP port: a packet whose second byte is 192..=223
//!    is RTCP multiplexed on the RTP port (RFC 5761) and is checked as RTCP;
//!    anything else must be a valid RTP version-2 header (rtp-rs). On the RTCP
//!    port: RTCP. Failures: [`Reason::TooShort`] / [`Reason::NotRtp`].
//! 3. **Destination.** Sent from the other leg's local RTP (or RTCP) address
//!    to its `remote_rtp` (or `remote_rtcp`); muxed RTCP travels on the RTP
//!    pair. No remote there (not negotiated, or hold), or a remote of another
//!    address family than the local address: [`Reason::NoDestination`].

use crate::model::{PinholeSpec, Side};
use serde::Serialize;
use std::net::SocketAddr;

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Reason {
    /// A socket/port exists but no pinhole (just removed, or not yet installed).
    UnknownPort,
    /// The source is not the negotiated (or latched) remote of that leg.
    WrongSource,
    /// Not a valid RTP (or RTCP) packet.
    NotRtp,
    /// Shorter than the smallest RTP/RTCP header.
    TooShort,
    /// The other leg has no usable remote (hold, not negotiated yet).
    NoDestination,
    /// The backend could not send (buffer full, route error).
    SendError,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 6] = [
        Reason::UnknownPort,
        Reason::WrongSource,
        Reason::NotRtp,
        Reason::TooShort,
        Reason::NoDestination,
        Reason::SendError,
    ];

    /// Index into counter arrays (position in [`Reason::ALL`]).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Name used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnknownPort => "unknown_port",
            Reason::WrongSource => "wrong_source",
            Reason::NotRtp => "not_rtp",
            Reason::TooShort => "too_short",
            Reason::NoDestination => "no_destination",
            Reason::SendError => "send_error",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which of a leg's two local ports a packet arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortKind {
    /// The (even) RTP port, `Leg::local`. Also carries muxed RTCP.
    Rtp,
    /// The RTCP port, `Leg::local` + 1.
    Rtcp,
}

/// Where a packet arrived: leg, port kind and source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// The leg whose local port received it.
    pub side: Side,
    /// RTP or RTCP port.
    pub kind: PortKind,
    /// The packet's source address.
    pub src: SocketAddr,
}

/// Latch state of a pinhole: which (side, port kind) pairs may still latch,
/// and the remotes the session core negotiated (from SDP). Derived from the
/// spec as installed by each upsert; the pending bits are cleared one by one
/// as the packet path latches, the negotiated remotes never change until the
/// next upsert.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LatchPending {
    bits: u8,
    negotiated: [Option<SocketAddr>; 4],
}

impl LatchPending {
    fn idx(side: Side, kind: PortKind) -> usize {
        let s = match side {
            Side::Access => 0,
            Side::Core => 2,
        };
        let k = match kind {
            PortKind::Rtp => 0,
            PortKind::Rtcp => 1,
        };
        s + k
    }

    fn bit(side: Side, kind: PortKind) -> u8 {
        1 << Self::idx(side, kind)
    }

    /// Both port kinds pending on every leg that has a `latch_ip`; the
    /// negotiated remotes taken from the spec.
    pub fn from_spec(spec: &PinholeSpec) -> LatchPending {
        let mut p = LatchPending::default();
        for side in [Side::Access, Side::Core] {
            let leg = spec.leg(side);
            if leg.latch_ip.is_some() {
                p.bits |= Self::bit(side, PortKind::Rtp) | Self::bit(side, PortKind::Rtcp);
            }
            p.negotiated[Self::idx(side, PortKind::Rtp)] = leg.remote_rtp;
            p.negotiated[Self::idx(side, PortKind::Rtcp)] = leg.remote_rtcp;
        }
        p
    }

    /// Whether `kind` on `side` may still latch.
    pub fn is_pending(self, side: Side, kind: PortKind) -> bool {
        self.bits & Self::bit(side, kind) != 0
    }

    /// The remote the core negotiated for `kind` on `side` (before any latch).
    pub fn negotiated(self, side: Side, kind: PortKind) -> Option<SocketAddr> {
        self.negotiated[Self::idx(side, kind)]
    }

    /// This state with `kind` on `side` latched.
    pub fn cleared(self, side: Side, kind: PortKind) -> LatchPending {
        LatchPending {
            bits: self.bits & !Self::bit(side, kind),
            ..self
        }
    }

    /// Whether anything on `side` may still latch.
    pub fn side_pending(self, side: Side) -> bool {
        self.is_pending(side, PortKind::Rtp) || self.is_pending(side, PortKind::Rtcp)
    }
}

/// A latch the packet path must record (and report as `MediaEvent::Latched`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latch {
    /// The leg that latched.
    pub side: Side,
    /// Which port kind latched (muxed RTCP on the RTP port latches `Rtp`).
    pub kind: PortKind,
    /// The new remote for that kind.
    pub remote: SocketAddr,
}

impl Latch {
    /// `spec`/`pending` with this latch applied: the remote of that kind is
    /// set, the pending bit cleared, and `latch_ip` cleared once both kinds
    /// of the leg have latched.
    pub fn apply(&self, spec: &PinholeSpec, pending: LatchPending) -> (PinholeSpec, LatchPending) {
        let mut spec = spec.clone();
        let pending = pending.cleared(self.side, self.kind);
        let leg = spec.leg_mut(self.side);
        match self.kind {
            PortKind::Rtp => leg.remote_rtp = Some(self.remote),
            PortKind::Rtcp => leg.remote_rtcp = Some(self.remote),
        }
        if !pending.side_pending(self.side) {
            leg.latch_ip = None;
        }
        (spec, pending)
    }
}

/// What to do with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the same payload from local address `from` to `to`; if `latched`
    /// is set, record the latch first.
    Forward {
        /// The BGF's local address on the other leg (source of the sent packet).
        from: SocketAddr,
        /// The other leg's remote.
        to: SocketAddr,
        /// A latch this packet caused.
        latched: Option<Latch>,
    },
    /// Drop, counting the reason.
    Drop(Reason),
}

/// What kind of payload a packet carries (after validation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// RTP version 2.
    Rtp,
    /// RTCP (on the RTCP port, or muxed on the RTP port).
    Rtcp,
}

/// Smallest RTCP packet: 4-byte header + SSRC.
const RTCP_MIN: usize = 8;

/// Minimal RTCP check: version 2, packet type 192..=223, and the first
/// packet's length field fits in the datagram. Only the first header is
/// checked because the rest of an SRTCP packet is encrypted and followed by
/// an index and authentication tag.
fn check_rtcp(b: &[u8]) -> Result<Payload, Reason> {
    if b.len() < RTCP_MIN {
        return Err(Reason::TooShort);
    }
    if b[0] >> 6 != 2 || !(192..=223).contains(&b[1]) {
        return Err(Reason::NotRtp);
    }
    let words = usize::from(u16::from_be_bytes([b[2], b[3]]));
    if (words + 1) * 4 > b.len() {
        return Err(Reason::NotRtp);
    }
    Ok(Payload::Rtcp)
}

/// Validate a payload that arrived on a port of `kind`.
pub fn classify(kind: PortKind, b: &[u8]) -> Result<Payload, Reason> {
    match kind {
        PortKind::Rtcp => check_rtcp(b),
        PortKind::Rtp => {
            if b.len() >= 2 && (192..=223).contains(&b[1]) {
                return check_rtcp(b);
            }
            if b.len() < rtp_rs::RtpReader::MIN_HEADER_LEN {
                return Err(Reason::TooShort);
            }
            match rtp_rs::RtpReader::new(b) {
                Ok(_) => Ok(Payload::Rtp),
                Err(_) => Err(Reason::NotRtp),
            }
        }
    }
}

fn same_ip(a: std::net::IpAddr, b: std::net::IpAddr) -> bool {
    a == b || a.to_canonical() == b.to_canonical()
}

/// The forwarding decision for one packet. See the module docs for the rules.
pub fn decide(
    spec: &PinholeSpec,
    pending: LatchPending,
    arrival: &Arrival,
    payload: &[u8],
) -> Verdict {
    let leg = spec.leg(arrival.side);
    let expected = match arrival.kind {
        PortKind::Rtp => leg.remote_rtp,
        PortKind::Rtcp => leg.remote_rtcp,
    };
    let latched = if expected == Some(arrival.src) {
        None
    } else if pending.negotiated(arrival.side, arrival.kind) == Some(arrival.src) {
        // The negotiated (SDP) address always wins over an earlier latch: after
        // a re-INVITE moves the media, a late packet from the old port may have
        // latched first; the new port's packets take the remote back.
        Some(Latch {
            side: arrival.side,
            kind: arrival.kind,
            remote: arrival.src,
        })
    } else if pending.is_pending(arrival.side, arrival.kind)
        && leg.latch_ip.is_some_and(|ip| same_ip(ip, arrival.src.ip()))
    {
        Some(Latch {
            side: arrival.side,
            kind: arrival.kind,
            remote: arrival.src,
        })
    } else {
        return Verdict::Drop(Reason::WrongSource);
    };
    if let Err(r) = classify(arrival.kind, payload) {
        return Verdict::Drop(r);
    }
    let other = spec.leg(arrival.side.other());
    let (from, to) = match arrival.kind {
        PortKind::Rtp => (other.local, other.remote_rtp),
        PortKind::Rtcp => (other.local_rtcp(), other.remote_rtcp),
    };
    match to {
        Some(to) if to.is_ipv4() == from.is_ipv4() && to.port() != 0 => {
            Verdict::Forward { from, to, latched }
        }
        _ => Verdict::Drop(Reason::NoDestination),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Leg, PinholeId};
    use std::net::IpAddr;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    pub(crate) fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 42];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0xd5; 160]);
        p
    }

    fn rtcp_rr() -> Vec<u8> {
        // RR, no report blocks: length 1 word after header.
        vec![0x80, 201, 0, 1, 0, 0, 0, 42]
    }

    fn spec() -> PinholeSpec {
        PinholeSpec {
            id: PinholeId {
                session: 7,
                stream: 0,
            },
            access: Leg {
                local: sa("[2001:db8::1]:30000"),
                remote_rtp: Some(sa("[2001:db8::99]:4000")),
                remote_rtcp: Some(sa("[2001:db8::99]:4001")),
                latch_ip: None,
            },
            core: Leg {
                local: sa("10.0.0.1:40000"),
                remote_rtp: Some(sa("10.0.0.9:5000")),
                remote_rtcp: Some(sa("10.0.0.9:5001")),
                latch_ip: None,
            },
        }
    }

    fn arr(side: Side, kind: PortKind, src: &str) -> Arrival {
        Arrival {
            side,
            kind,
            src: sa(src),
        }
    }

    #[test]
    fn authorised_rtp_forwards_both_ways_across_families() {
        let s = spec();
        let p = LatchPending::from_spec(&s);
        let v = decide(
            &s,
            p,
            &arr(Side::Access, PortKind::Rtp, "[2001:db8::99]:4000"),
            &rtp(1),
        );
        assert_eq!(
            v,
            Verdict::Forward {
                from: sa("10.0.0.1:40000"),
                to: sa("10.0.0.9:5000"),
                latched: None
            }
        );
        let v = decide(
            &s,
            p,
            &arr(Side::Core, PortKind::Rtp, "10.0.0.9:5000"),
            &rtp(1),
        );
        assert_eq!(
            v,
            Verdict::Forward {
                from: sa("[2001:db8::1]:30000"),
                to: sa("[2001:db8::99]:4000"),
                latched: None
            }
        );
        let v = decide(
            &s,
            p,
            &arr(Side::Core, PortKind::Rtcp, "10.0.0.9:5001"),
            &rtcp_rr(),
        );
        assert_eq!(
            v,
            Verdict::Forward {
                from: sa("[2001:db8::1]:30001"),
                to: sa("[2001:db8::99]:4001"),
                latched: None
            }
        );
    }

    #[test]
    fn unauthorised_sources_dropped() {
        let s = spec();
        let p = LatchPending::from_spec(&s);
        for src in [
            "[2001:db8::99]:4002",
            "[2001:db8::98]:4000",
            "10.0.0.9:5000", // core's remote arriving on the access leg
        ] {
            assert_eq!(
                decide(&s, p, &arr(Side::Access, PortKind::Rtp, src), &rtp(1)),
                Verdict::Drop(Reason::WrongSource),
                "{src}"
            );
        }
        // RTCP remote on the RTP port is not the RTP remote.
        assert_eq!(
            decide(
                &s,
                p,
                &arr(Side::Access, PortKind::Rtp, "[2001:db8::99]:4001"),
                &rtp(1)
            ),
            Verdict::Drop(Reason::WrongSource)
        );
    }

    #[test]
    fn latching_once_then_only_latched_source() {
        let mut s = spec();
        s.access.latch_ip = Some("2001:db8::99".parse().unwrap());
        let p = LatchPending::from_spec(&s);
        let a = arr(Side::Access, PortKind::Rtp, "[2001:db8::99]:61000");
        let v = decide(&s, p, &a, &rtp(1));
        let Verdict::Forward {
            latched: Some(l), ..
        } = v
        else {
            panic!("expected latch, got {v:?}")
        };
        assert_eq!(l.remote, a.src);
        assert_eq!(l.kind, PortKind::Rtp);
        let (s2, p2) = l.apply(&s, p);
        assert_eq!(s2.access.remote_rtp, Some(a.src));
        assert!(s2.access.latch_ip.is_some(), "RTCP may still latch");
        // Same source again: forwarded, no new latch.
        assert!(matches!(
            decide(&s2, p2, &a, &rtp(2)),
            Verdict::Forward { latched: None, .. }
        ));
        // Another port of the same IP: refused now.
        assert_eq!(
            decide(
                &s2,
                p2,
                &arr(Side::Access, PortKind::Rtp, "[2001:db8::99]:61002"),
                &rtp(3)
            ),
            Verdict::Drop(Reason::WrongSource)
        );
        // RTCP latches on its own.
        let c = arr(Side::Access, PortKind::Rtcp, "[2001:db8::99]:61001");
        let Verdict::Forward {
            latched: Some(l2), ..
        } = decide(&s2, p2, &c, &rtcp_rr())
        else {
            panic!()
        };
        let (s3, p3) = l2.apply(&s2, p2);
        assert_eq!(s3.access.remote_rtcp, Some(c.src));
        assert_eq!(s3.access.latch_ip, None);
        assert!(!p3.side_pending(Side::Access));
        // A different IP never latches.
        assert_eq!(
            decide(
                &s,
                p,
                &arr(Side::Access, PortKind::Rtp, "[2001:db8::77]:61000"),
                &rtp(1)
            ),
            Verdict::Drop(Reason::WrongSource)
        );
    }

    #[test]
    fn latch_ip_matches_v4_mapped() {
        let mut s = spec();
        s.core.latch_ip = Some(IpAddr::V6("::ffff:10.0.0.8".parse().unwrap()));
        let p = LatchPending::from_spec(&s);
        assert!(matches!(
            decide(
                &s,
                p,
                &arr(Side::Core, PortKind::Rtp, "10.0.0.8:7000"),
                &rtp(1)
            ),
            Verdict::Forward {
                latched: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn invalid_packet_does_not_latch() {
        let mut s = spec();
        s.access.latch_ip = Some("2001:db8::99".parse().unwrap());
        let p = LatchPending::from_spec(&s);
        let a = arr(Side::Access, PortKind::Rtp, "[2001:db8::99]:61000");
        assert_eq!(
            decide(&s, p, &a, &[0x40; 20]),
            Verdict::Drop(Reason::NotRtp)
        );
    }

    #[test]
    fn hold_drops_no_destination() {
        let mut s = spec();
        s.core.remote_rtp = None;
        s.core.remote_rtcp = None;
        let p = LatchPending::from_spec(&s);
        assert_eq!(
            decide(
                &s,
                p,
                &arr(Side::Access, PortKind::Rtp, "[2001:db8::99]:4000"),
                &rtp(1)
            ),
            Verdict::Drop(Reason::NoDestination)
        );
        // Family mismatch is no usable destination either.
        let mut s = spec();
        s.core.remote_rtp = Some(sa("[2001:db8::5]:5000"));
        assert_eq!(
            decide(
                &s,
                p,
                &arr(Side::Access, PortKind::Rtp, "[2001:db8::99]:4000"),
                &rtp(1)
            ),
            Verdict::Drop(Reason::NoDestination)
        );
    }

    #[test]
    fn muxed_rtcp_forwarded_on_rtp_pair() {
        let s = spec();
        let p = LatchPending::from_spec(&s);
        let v = decide(
            &s,
            p,
            &arr(Side::Core, PortKind::Rtp, "10.0.0.9:5000"),
            &rtcp_rr(),
        );
        assert_eq!(
            v,
            Verdict::Forward {
                from: sa("[2001:db8::1]:30000"),
                to: sa("[2001:db8::99]:4000"),
                latched: None
            }
        );
        // Muxed RTCP with a lying length is not forwarded.
        let mut bad = rtcp_rr();
        bad[3] = 9;
        assert_eq!(
            decide(
                &s,
                p,
                &arr(Side::Core, PortKind::Rtp, "10.0.0.9:5000"),
                &bad
            ),
            Verdict::Drop(Reason::NotRtp)
        );
    }

    #[test]
    fn content_checks() {
        assert_eq!(classify(PortKind::Rtp, &[]), Err(Reason::TooShort));
        assert_eq!(classify(PortKind::Rtp, &[0x80; 11]), Err(Reason::TooShort));
        assert_eq!(classify(PortKind::Rtp, &[0x40; 12]), Err(Reason::NotRtp));
        // Extension flag set but no extension header.
        assert_eq!(
            classify(PortKind::Rtp, &[0x90, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(Reason::NotRtp)
        );
        assert_eq!(classify(PortKind::Rtp, &rtp(5)), Ok(Payload::Rtp));
        assert_eq!(classify(PortKind::Rtcp, &rtp(5)), Err(Reason::NotRtp));
        assert_eq!(classify(PortKind::Rtcp, &rtcp_rr()), Ok(Payload::Rtcp));
        assert_eq!(
            classify(PortKind::Rtcp, &rtcp_rr()[..6]),
            Err(Reason::TooShort)
        );
        assert_eq!(classify(PortKind::Rtp, &rtcp_rr()), Ok(Payload::Rtcp));
    }

    #[test]
    fn rtcp_built_by_rtcp_types_is_accepted() {
        use rtcp_types::{
            Compound, ReceiverReport, RtcpPacketWriter, RtcpPacketWriterExt, SenderReport,
        };
        let c = Compound::builder()
            .add_packet(SenderReport::builder(0x1234).ntp_timestamp(7))
            .add_packet(ReceiverReport::builder(0x5678));
        let mut buf = vec![0u8; c.calculate_size().unwrap()];
        let n = c.write_into(&mut buf).unwrap();
        assert_eq!(classify(PortKind::Rtcp, &buf[..n]), Ok(Payload::Rtcp));
        assert_eq!(classify(PortKind::Rtp, &buf[..n]), Ok(Payload::Rtcp));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            port in 0u16..=65535,
            rtcp_port in proptest::bool::ANY,
            access in proptest::bool::ANY,
            latch in proptest::bool::ANY,
        ) {
            let mut s = spec();
            if latch { s.access.latch_ip = Some("2001:db8::99".parse().unwrap()); }
            let p = LatchPending::from_spec(&s);
            let kind = if rtcp_port { PortKind::Rtcp } else { PortKind::Rtp };
            let side = if access { Side::Access } else { Side::Core };
            let src = if access { SocketAddr::new("2001:db8::99".parse().unwrap(), port) }
                      else { SocketAddr::new("10.0.0.9".parse().unwrap(), port) };
            let v = decide(&s, p, &Arrival { side, kind, src }, &bytes);
            // A forward always goes out of the other leg.
            if let Verdict::Forward { from, latched, .. } = v {
                let other = s.leg(side.other());
                proptest::prop_assert!(from == other.local || from == other.local_rtcp());
                if latched.is_some() { proptest::prop_assert!(latch && access); }
            }
        }

        #[test]
        fn unauthorised_never_forwarded(port in 0u16..=65535, last in 0u8..=255) {
            let s = spec();
            let p = LatchPending::from_spec(&s);
            let src = SocketAddr::new(std::net::Ipv4Addr::new(10, 0, 0, last).into(), port);
            let v = decide(&s, p, &Arrival { side: Side::Core, kind: PortKind::Rtp, src }, &rtp(1));
            if src != sa("10.0.0.9:5000") {
                proptest::prop_assert_eq!(v, Verdict::Drop(Reason::WrongSource));
            }
        }
    }

    #[test]
    fn negotiated_address_wins_over_a_stale_latch() {
        let mut s = spec();
        let sdp = sa("198.18.1.100:6002");
        s.access.remote_rtp = Some(sdp);
        s.access.latch_ip = Some(sdp.ip());
        let p = LatchPending::from_spec(&s);
        let stale = sa("198.18.1.100:6000");
        let a = |src| Arrival {
            side: Side::Access,
            kind: PortKind::Rtp,
            src,
        };
        let Verdict::Forward {
            latched: Some(l), ..
        } = decide(&s, p, &a(stale), &rtp(1))
        else {
            panic!("stale port latches first")
        };
        let (s2, p2) = l.apply(&s, p);
        assert_eq!(s2.access.remote_rtp, Some(stale));
        let Verdict::Forward {
            latched: Some(back),
            ..
        } = decide(&s2, p2, &a(sdp), &rtp(2))
        else {
            panic!("the negotiated address is accepted after the stale latch")
        };
        assert_eq!(back.remote, sdp);
        let (s3, p3) = back.apply(&s2, p2);
        assert_eq!(s3.access.remote_rtp, Some(sdp));
        assert_eq!(
            decide(&s3, p3, &a(stale), &rtp(3)),
            Verdict::Drop(Reason::WrongSource)
        );
    }
}
