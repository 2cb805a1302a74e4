//! SDP offer/answer inspection and rewrite (RFC 8866 / RFC 3264), on top of
//! `sdp-types` (lossless round-trip of IMS SDP).
//!
//! The core parses each SDP body once ([`Sdp::parse`]), reads what the remote
//! party offered or answered ([`Sdp::streams`]), decides the pinhole plan, then
//! writes the body the other side must see ([`Sdp::rewrite`]): our media
//! address in `c=`/`o=`, our port in each accepted `m=`, our RTCP port in
//! `a=rtcp`, with everything else passed through unchanged.
//!
//! API CONTRACT (implemented by the SDP work item; signatures are fixed).

use std::net::{IpAddr, SocketAddr};

/// Why an SDP body could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body does not parse as SDP.
    #[error("SDP does not parse: {0}")]
    Parse(String),
    /// The SDP parses but cannot be relayed (e.g. a stream with no connection
    /// address, an address family we cannot read, too many streams).
    #[error("SDP not usable: {0}")]
    Unusable(String),
}

/// Media direction attribute of a stream (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

/// What one `m=` line says about the remote party's media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Index of the `m=` line (0-based).
    pub index: u16,
    /// Media type (`audio`, `video`, ...).
    pub media: String,
    /// Transport protocol (`RTP/AVP`, ...).
    pub proto: String,
    /// The port in `m=`; 0 means the stream is rejected/disabled.
    pub port: u16,
    /// Effective connection address (media-level `c=` overrides session-level);
    /// `None` when it is the unspecified address (`0.0.0.0`, `::`: hold).
    pub addr: Option<IpAddr>,
    /// Where the party wants RTCP: `a=rtcp` if present, else RTP port + 1, or
    /// the RTP address itself when `rtcp_mux`. `None` when `addr` is `None` or the stream is rejected.
    pub rtcp: Option<SocketAddr>,
    /// `a=rtcp-mux` present.
    pub rtcp_mux: bool,
    /// Direction attribute (media level, else session level, else sendrecv).
    pub direction: Direction,
}

impl StreamInfo {
    /// The remote RTP address, if the stream is active and addressed.
    pub fn rtp(&self) -> Option<SocketAddr> {
        match (self.addr, self.port) {
            (Some(ip), p) if p != 0 => Some(SocketAddr::new(ip, p)),
            _ => None,
        }
    }
}

/// How to rewrite a body for the other side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// Our media address on the side the body is going to (`IN IP4`/`IN IP6`
    /// follows its family: this is where IPv6↔IPv4 interworking happens).
    pub media_ip: IpAddr,
    /// Per `m=` index: our RTP port for that stream (RTCP = port + 1), or
    /// `None` to leave the stream rejected (port 0). Must have one entry per stream.
    pub ports: Vec<Option<u16>>,
}

/// A parsed SDP body.
#[derive(Debug, Clone)]
pub struct Sdp {
    _private: (),
}

impl Sdp {
    /// Parse a body. Bodies larger than 16 KiB or with more than 16 `m=`
    /// lines are refused as `Unusable`.
    pub fn parse(_body: &[u8]) -> Result<Sdp, SdpError> {
        Err(SdpError::Parse("not implemented yet".into()))
    }

    /// The streams, in `m=` order.
    pub fn streams(&self) -> Vec<StreamInfo> {
        Vec::new()
    }

    /// Write the body the other side must see.
    pub fn rewrite(&self, _rw: &Rewrite) -> Result<Vec<u8>, SdpError> {
        Err(SdpError::Unusable("not implemented yet".into()))
    }
}
