//! Plain data shared between the session core and the packet path: which side a
//! leg is on, what a pinhole looks like, the operations the core emits and the
//! events the packet path reports back. Pure data, no I/O.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// The two networks a BGF sits between.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Side {
    /// The access network: UEs, often IPv6, often behind NATs.
    Access,
    /// The IMS core network (IPv4 in practice).
    Core,
}

impl Side {
    /// The side opposite to this one.
    pub fn other(self) -> Side {
        match self {
            Side::Access => Side::Core,
            Side::Core => Side::Access,
        }
    }

    /// Lower-case name used in logs, metrics labels and config keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Access => "access",
            Side::Core => "core",
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one media stream (one `m=` line) of one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PinholeId {
    /// Session number assigned by the core (deterministic, replayable).
    pub session: u64,
    /// Index of the `m=` line in the SDP.
    pub stream: u16,
}

impl std::fmt::Display for PinholeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.session, self.stream)
    }
}

/// One side of a pinhole: the BGF's local port on that side and the remote
/// peer media is exchanged with there.
///
/// RTP uses `local`; RTCP uses `local.port() + 1` unless muxed (muxed RTCP
/// arrives on `local` and is forwarded like RTP).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Leg {
    /// The BGF's own media address and (even) RTP port on this side.
    pub local: SocketAddr,
    /// Where RTP for this side's peer is sent, and the only source accepted
    /// once known. `None`: not negotiated yet, or on hold (`c=0.0.0.0`).
    pub remote_rtp: Option<SocketAddr>,
    /// Where RTCP for this side's peer is sent (and accepted from).
    pub remote_rtcp: Option<SocketAddr>,
    /// NAT latching: while `Some(ip)`, the first packet whose source IP is
    /// `ip` (any port) becomes the remote; the packet path reports it as
    /// [`MediaEvent::Latched`]. `None` once latched or when latching is off.
    pub latch_ip: Option<IpAddr>,
}

impl Leg {
    /// The local RTCP address (RTP port + 1).
    pub fn local_rtcp(&self) -> SocketAddr {
        SocketAddr::new(self.local.ip(), self.local.port().wrapping_add(1))
    }
}

/// Everything the packet path needs to relay one media stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PinholeSpec {
    /// Which stream of which session.
    pub id: PinholeId,
    /// The access-side leg.
    pub access: Leg,
    /// The core-side leg.
    pub core: Leg,
}

impl PinholeSpec {
    /// The leg on `side`.
    pub fn leg(&self, side: Side) -> &Leg {
        match side {
            Side::Access => &self.access,
            Side::Core => &self.core,
        }
    }

    /// The leg on `side`, mutably.
    pub fn leg_mut(&mut self, side: Side) -> &mut Leg {
        match side {
            Side::Access => &mut self.access,
            Side::Core => &mut self.core,
        }
    }
}

/// A change the session core asks the packet path to make.
// Boxing the spec would change the shared interface; ops are not hot.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PinholeOp {
    /// Create the pinhole, or replace its addresses if it exists (counters kept).
    Upsert(PinholeSpec),
    /// Close the pinhole and release its ports.
    Remove(PinholeId),
}

/// Something the packet path observed that changes session state; fed back to
/// the core as an input (and so logged).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaEvent {
    /// The first packet from the expected IP fixed the remote port of a leg.
    Latched {
        /// The stream.
        id: PinholeId,
        /// The leg that latched.
        side: Side,
        /// `true` when the packet arrived on the RTCP port.
        rtcp: bool,
        /// The remote address now accepted and sent to.
        remote: SocketAddr,
    },
    /// No packet in either direction on any stream of the session for the
    /// configured inactivity timeout.
    Inactive {
        /// The session.
        session: u64,
    },
}
