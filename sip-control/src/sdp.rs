//! SDP offer/answer inspection and rewrite (RFC 8866 / RFC 3264), on top of
//! `sdp-types` (lossless round-trip of IMS SDP).
//!
//! The core parses each SDP body once ([`Sdp::parse`]), reads what the remote
//! party offered or answered ([`Sdp::streams`]), decides the pinhole plan, then
//! writes the body the other side must see ([`Sdp::rewrite`]): our media
//! address in `c=`/`o=`, our port in each accepted `m=`, our RTCP port in
//! `a=rtcp`, with everything else passed through unchanged.
//!
//! This module owns the SDP text only: it does not allocate ports, decide
//! which streams to accept, or know about dialogs; it never panics on input.
//! ICE attributes (`a=candidate`, `a=ice-*`, ...) and RFC 6947 `a=altc` are
//! removed on rewrite because they would let media bypass the pinholes.
//!
//! API CONTRACT (implemented by the SDP work item; signatures are fixed).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sdp_types::{AddrType, Attribute, Connection, NetType, Session};

/// Largest SDP body [`Sdp::parse`] accepts, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Most `m=` lines [`Sdp::parse`] accepts.
pub const MAX_STREAMS: usize = 16;

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
    /// The body as `sdp-types` models it (the rewrite starts from a copy).
    session: Session,
    /// What [`Sdp::streams`] reports, computed once at parse time.
    streams: Vec<StreamInfo>,
}

impl Sdp {
    /// Parse a body. Bodies larger than 16 KiB or with more than 16 `m=`
    /// lines are refused as `Unusable`.
    pub fn parse(body: &[u8]) -> Result<Sdp, SdpError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(SdpError::Unusable(format!(
                "body is {} bytes, more than the {MAX_BODY_BYTES} bytes we relay",
                body.len()
            )));
        }
        let session = Session::parse(body).map_err(|e| SdpError::Parse(e.to_string()))?;
        if session.medias.len() > MAX_STREAMS {
            return Err(SdpError::Unusable(format!(
                "{} m= lines, more than the {MAX_STREAMS} streams we relay",
                session.medias.len()
            )));
        }

        let session_addr = match &session.connection {
            Some(c) => Some(connection_ip(c, "session-level c=")?),
            None => None,
        };
        let session_dir = direction_of(&session.attributes);

        let mut streams = Vec::with_capacity(session.medias.len());
        for (i, m) in session.medias.iter().enumerate() {
            // i < MAX_STREAMS, checked above.
            let index = u16::try_from(i).unwrap_or(u16::MAX);
            let what = format!("m= line #{i} ({} {})", m.media, m.port);

            let mut media_addrs = Vec::with_capacity(m.connections.len());
            for c in &m.connections {
                media_addrs.push(connection_ip(c, &format!("c= of {what}"))?);
            }
            let mut rtcp_attr = None;
            for a in m.attributes.iter().filter(|a| is_attr(a, "rtcp")) {
                let parsed = parse_rtcp_attr(a.value.as_deref(), &what)?;
                rtcp_attr.get_or_insert(parsed);
            }

            if m.port != 0 {
                if m.num_ports.is_some_and(|n| n > 1) {
                    return Err(SdpError::Unusable(format!(
                        "{what} asks for a port range ({}/{}); only single streams are relayed",
                        m.port,
                        m.num_ports.unwrap_or(0)
                    )));
                }
                if media_addrs.len() > 1 {
                    return Err(SdpError::Unusable(format!(
                        "{what} has {} c= lines (layered multicast); only one unicast address per stream is relayed",
                        media_addrs.len()
                    )));
                }
            }

            let effective = media_addrs.first().copied().or(session_addr);
            if m.port != 0 && effective.is_none() {
                return Err(SdpError::Unusable(format!(
                    "{what} has no c= line, neither at media nor at session level"
                )));
            }
            let addr = effective.filter(|ip| !ip.is_unspecified());
            let rtcp_mux = m.attributes.iter().any(|a| is_attr(a, "rtcp-mux"));
            let direction = direction_of(&m.attributes)
                .or(session_dir)
                .unwrap_or(Direction::SendRecv);

            let rtcp = match addr {
                Some(ip) if m.port != 0 => match rtcp_attr {
                    Some((port, Some(rip))) if !rip.is_unspecified() => {
                        Some(SocketAddr::new(rip, port))
                    }
                    // `a=rtcp:9 IN IP4 0.0.0.0` (WebRTC style) names no
                    // usable address: with rtcp-mux RTCP follows RTP,
                    // otherwise it goes to the RTP address at that port.
                    Some((_, Some(_))) if rtcp_mux => Some(SocketAddr::new(ip, m.port)),
                    Some((port, _)) => Some(SocketAddr::new(ip, port)),
                    None if rtcp_mux => Some(SocketAddr::new(ip, m.port)),
                    None => match m.port.checked_add(1) {
                        Some(p) => Some(SocketAddr::new(ip, p)),
                        None => {
                            return Err(SdpError::Unusable(format!(
                                "{what}: RTP port 65535 leaves no port for RTCP and there is no a=rtcp or a=rtcp-mux"
                            )))
                        }
                    },
                },
                _ => None,
            };

            streams.push(StreamInfo {
                index,
                media: m.media.clone(),
                proto: m.proto.clone(),
                port: m.port,
                addr,
                rtcp,
                rtcp_mux,
                direction,
            });
        }

        Ok(Sdp { session, streams })
    }

    /// The streams, in `m=` order.
    pub fn streams(&self) -> Vec<StreamInfo> {
        self.streams.clone()
    }

    /// Write the body the other side must see.
    ///
    /// `o=` and every `c=` (session and media level, only where the original
    /// had one) carry `rw.media_ip` in its family, except that an unspecified
    /// (hold) address stays unspecified in that family. Each active `m=` gets
    /// `rw.ports[i]` (0 if `None`), `a=rtcp` gets that port + 1 (and our
    /// address if it carried one); ICE and `a=altc` attributes are dropped;
    /// everything else passes through in order. Lines end in CRLF.
    pub fn rewrite(&self, rw: &Rewrite) -> Result<Vec<u8>, SdpError> {
        if rw.ports.len() != self.session.medias.len() {
            return Err(SdpError::Unusable(format!(
                "rewrite plan has {} ports for {} m= lines (internal error: one entry per stream needed)",
                rw.ports.len(),
                self.session.medias.len()
            )));
        }
        if rw.media_ip.is_unspecified() || rw.media_ip.is_multicast() {
            return Err(SdpError::Unusable(format!(
                "our media address {} is not a unicast address; check the media address configuration",
                rw.media_ip
            )));
        }
        let hold_ip = unspecified_like(rw.media_ip);

        let mut s = self.session.clone();
        s.origin.nettype = NetType::In;
        s.origin.set_unicast_ip_address(rw.media_ip);
        if s.session_name.trim().is_empty() {
            // RFC 8866 §5.3: s= must not be empty; "-" is the customary filler.
            s.session_name = "-".to_owned();
        }
        if let Some(c) = &mut s.connection {
            *c = rewritten_connection(c, rw.media_ip, hold_ip);
        }
        s.attributes.retain(|a| !is_bypass_attr(a));

        for (i, (m, ours)) in s.medias.iter_mut().zip(&rw.ports).enumerate() {
            let port = if m.port == 0 { 0 } else { ours.unwrap_or(0) };
            m.port = port;
            for c in &mut m.connections {
                *c = rewritten_connection(c, rw.media_ip, hold_ip);
            }
            m.attributes.retain(|a| !is_bypass_attr(a));
            if port == 0 {
                // Rejected stream: no RTCP to announce, and the remote's
                // RTCP address must not leak to the other side.
                m.attributes.retain(|a| !is_attr(a, "rtcp"));
                continue;
            }
            for a in m.attributes.iter_mut().filter(|a| is_attr(a, "rtcp")) {
                let what = format!("m= line #{i} ({})", m.media);
                let (_, their_ip) = parse_rtcp_attr(a.value.as_deref(), &what)?;
                let rtcp_port = port.checked_add(1).ok_or_else(|| {
                    SdpError::Unusable(format!(
                        "{what}: our RTP port 65535 leaves no port for RTCP (port pool misconfigured)"
                    ))
                })?;
                a.value = Some(match their_ip {
                    None => rtcp_port.to_string(),
                    Some(ip) => {
                        let ip = if ip.is_unspecified() {
                            hold_ip
                        } else {
                            rw.media_ip
                        };
                        format!("{rtcp_port} IN {} {ip}", family_token(ip))
                    }
                });
            }
        }

        let mut out = Vec::with_capacity(1024);
        s.write(&mut out)
            .map_err(|e| SdpError::Unusable(format!("writing the rewritten SDP failed: {e}")))?;
        Ok(out)
    }
}

/// `IP4` or `IP6` for an address.
fn family_token(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

/// The unspecified address of `ip`'s family (`0.0.0.0` or `::`).
fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// The `c=` the other side sees: ours, or the target family's hold address
/// when the original was a hold address.
fn rewritten_connection(c: &Connection, ours: IpAddr, hold: IpAddr) -> Connection {
    let was_hold = ip_part(&c.connection_address)
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    Connection::from_ip_addr(if was_hold { hold } else { ours })
}

/// The address without an RFC 8866 `/ttl` or `/count` suffix.
/// The address without a `/ttl` suffix; an IPv6 address in URI brackets
/// (`[::1]`, as SIPp's `[local_ip]` and some UAs write it) is accepted.
fn ip_part(addr: &str) -> &str {
    let ip = addr.split_once('/').map_or(addr, |(ip, _)| ip);
    ip.strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip)
}

/// Validate `nettype addrtype address` (of `c=` or `a=rtcp`) and return the
/// unicast (or unspecified) address.
fn checked_ip(
    nettype: &str,
    addrtype: &str,
    address: &str,
    what: &str,
) -> Result<IpAddr, SdpError> {
    if !nettype.eq_ignore_ascii_case("IN") {
        return Err(SdpError::Unusable(format!(
            "{what}: network type '{nettype}' is not IN; only IP media can be relayed"
        )));
    }
    let v6 = match AddrType::new(addrtype) {
        AddrType::Ip4 => false,
        AddrType::Ip6 => true,
        AddrType::Other(_) => {
            return Err(SdpError::Unusable(format!(
                "{what}: address type '{addrtype}' is neither IP4 nor IP6"
            )))
        }
    };
    let ip: IpAddr = ip_part(address).parse().map_err(|_| {
        SdpError::Parse(format!(
            "{what}: '{address}' is not an IP address (host names are not accepted)"
        ))
    })?;
    if ip.is_ipv6() != v6 {
        return Err(SdpError::Parse(format!(
            "{what}: address {ip} does not match address type {addrtype}"
        )));
    }
    if ip.is_multicast() {
        return Err(SdpError::Unusable(format!(
            "{what}: multicast address {address} cannot be relayed"
        )));
    }
    if address.contains('/') {
        return Err(SdpError::Parse(format!(
            "{what}: unicast address '{address}' carries a multicast /ttl or /count suffix"
        )));
    }
    Ok(ip)
}

fn connection_ip(c: &Connection, what: &str) -> Result<IpAddr, SdpError> {
    checked_ip(
        c.nettype.as_str(),
        c.addrtype.as_str(),
        &c.connection_address,
        what,
    )
}

/// Parse an RFC 3605 `a=rtcp:` value: `port [IN IP4|IP6 address]`.
fn parse_rtcp_attr(value: Option<&str>, what: &str) -> Result<(u16, Option<IpAddr>), SdpError> {
    let bad = || {
        SdpError::Parse(format!(
            "{what}: a=rtcp:{} is not 'port [IN IP4|IP6 address]' (RFC 3605)",
            value.unwrap_or("")
        ))
    };
    let fields: Vec<&str> = value.unwrap_or("").split_ascii_whitespace().collect();
    let port = match fields.first().map(|p| p.parse::<u16>()) {
        Some(Ok(p)) if p != 0 => p,
        _ => return Err(bad()),
    };
    match fields.get(1..).unwrap_or(&[]) {
        [] => Ok((port, None)),
        [nettype, addrtype, address] => Ok((
            port,
            Some(checked_ip(
                nettype,
                addrtype,
                address,
                &format!("a=rtcp of {what}"),
            )?),
        )),
        _ => Err(bad()),
    }
}

/// Attribute names are compared case-insensitively (lenient towards odd UAs).
fn is_attr(a: &Attribute, name: &str) -> bool {
    a.attribute.eq_ignore_ascii_case(name)
}

/// The first direction attribute in a list (`None` if there is none).
fn direction_of(attrs: &[Attribute]) -> Option<Direction> {
    attrs.iter().find_map(|a| {
        let n = a.attribute.as_str();
        if n.eq_ignore_ascii_case("sendrecv") {
            Some(Direction::SendRecv)
        } else if n.eq_ignore_ascii_case("sendonly") {
            Some(Direction::SendOnly)
        } else if n.eq_ignore_ascii_case("recvonly") {
            Some(Direction::RecvOnly)
        } else if n.eq_ignore_ascii_case("inactive") {
            Some(Direction::Inactive)
        } else {
            None
        }
    })
}

/// Attributes that announce transport addresses other than `c=`/`m=`
/// (ICE, RFC 8838 trickle ICE, RFC 6947 alternate connection addresses):
/// relaying them would let media bypass the pinholes and leak addresses.
fn is_bypass_attr(a: &Attribute) -> bool {
    let n = a.attribute.to_ascii_lowercase();
    n == "candidate"
        || n == "remote-candidates"
        || n == "end-of-candidates"
        || n.starts_with("ice-")
        || n == "altc"
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// SIPp's built-in UAC scenario SDP (`uac.xml`), as sent on loopback.
    const SIPP_UAC: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    /// SIPp's built-in UAS answer (`uas.xml`) with `-mi ::1`.
    const SIPP_UAS_V6: &str = "v=0\r\no=user1 53655765 2353687637 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\nm=audio 6002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    /// An IMS VoLTE (GSMA IR.92) offer from a UE on IPv6 access:
    /// AMR-WB/AMR + telephone-event, preconditions, b=AS/RS/RR, ptime.
    const VOLTE_V6: &str = "v=0\r\n\
o=- 1027514470 1027514470 IN IP6 fd00:a::10\r\n\
s=-\r\n\
c=IN IP6 fd00:a::10\r\n\
b=AS:49\r\n\
t=0 0\r\n\
m=audio 49152 RTP/AVP 116 107 97 111 110\r\n\
b=AS:49\r\n\
b=RS:0\r\n\
b=RR:2500\r\n\
a=rtpmap:116 AMR-WB/16000/1\r\n\
a=fmtp:116 mode-change-capability=2;max-red=0\r\n\
a=rtpmap:107 AMR-WB/16000/1\r\n\
a=fmtp:107 octet-align=1;mode-change-capability=2;max-red=0\r\n\
a=rtpmap:97 AMR/8000/1\r\n\
a=fmtp:97 mode-change-capability=2;max-red=0\r\n\
a=rtpmap:111 telephone-event/16000\r\n\
a=fmtp:111 0-15\r\n\
a=rtpmap:110 telephone-event/8000\r\n\
a=fmtp:110 0-15\r\n\
a=curr:qos local none\r\n\
a=curr:qos remote none\r\n\
a=des:qos mandatory local sendrecv\r\n\
a=des:qos optional remote sendrecv\r\n\
a=sendrecv\r\n\
a=ptime:20\r\n\
a=maxptime:240\r\n\
a=x-unknown-vendor:42 foo\r\n";

    /// Audio + video offer, IPv4, with a=rtcp (port only) and rtcp-mux.
    const AV_V4: &str = "v=0\r\n\
o=alice 2890844526 2890844527 IN IP4 198.18.0.10\r\n\
s=call\r\n\
c=IN IP4 198.18.0.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=rtcp:49181\r\n\
m=video 51372 RTP/AVPF 99\r\n\
b=AS:512\r\n\
a=rtpmap:99 H264/90000\r\n\
a=fmtp:99 profile-level-id=42e01f;packetization-mode=1\r\n\
a=rtcp-fb:99 nack pli\r\n\
a=rtcp-mux\r\n";

    const CORE_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1));
    const ACCESS_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0xb, 0, 0, 0, 0, 0, 1));

    fn parse(s: &str) -> Sdp {
        Sdp::parse(s.as_bytes()).unwrap()
    }

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    fn lines(s: &str) -> Vec<&str> {
        s.split("\r\n").filter(|l| !l.is_empty()).collect()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn is_parse(r: Result<Sdp, SdpError>) -> bool {
        matches!(r, Err(SdpError::Parse(_)))
    }

    fn is_unusable(r: Result<Sdp, SdpError>) -> bool {
        matches!(r, Err(SdpError::Unusable(_)))
    }

    // ---- streams() ----

    #[test]
    fn sipp_uac_streams() {
        let st = parse(SIPP_UAC).streams();
        assert_eq!(st.len(), 1);
        let s = &st[0];
        assert_eq!(s.index, 0);
        assert_eq!(s.media, "audio");
        assert_eq!(s.proto, "RTP/AVP");
        assert_eq!(s.port, 6000);
        assert_eq!(s.addr, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(s.rtp(), Some(sa("127.0.0.1:6000")));
        assert_eq!(s.rtcp, Some(sa("127.0.0.1:6001")));
        assert!(!s.rtcp_mux);
        assert_eq!(s.direction, Direction::SendRecv);
    }

    #[test]
    fn sipp_uas_ipv6_streams() {
        let st = parse(SIPP_UAS_V6).streams();
        assert_eq!(st[0].rtp(), Some(sa("[::1]:6002")));
        assert_eq!(st[0].rtcp, Some(sa("[::1]:6003")));
    }

    #[test]
    fn volte_ipv6_offer_streams() {
        let st = parse(VOLTE_V6).streams();
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].rtp(), Some(sa("[fd00:a::10]:49152")));
        assert_eq!(st[0].rtcp, Some(sa("[fd00:a::10]:49153")));
        assert_eq!(st[0].direction, Direction::SendRecv);
    }

    #[test]
    fn audio_video_rtcp_attr_and_mux() {
        let st = parse(AV_V4).streams();
        assert_eq!(st.len(), 2);
        assert_eq!(st[0].rtcp, Some(sa("198.18.0.10:49181")));
        assert!(!st[0].rtcp_mux);
        assert_eq!(st[1].media, "video");
        assert_eq!(st[1].proto, "RTP/AVPF");
        assert_eq!(st[1].index, 1);
        assert!(st[1].rtcp_mux);
        assert_eq!(st[1].rtcp, Some(sa("198.18.0.10:51372")));
    }

    #[test]
    fn rtcp_attr_with_address_ipv4_and_ipv6() {
        let v4 = SIPP_UAC.replace(
            "a=rtpmap:0 PCMU/8000\r\n",
            "a=rtpmap:0 PCMU/8000\r\na=rtcp:53020 IN IP4 127.0.0.77\r\n",
        );
        assert_eq!(parse(&v4).streams()[0].rtcp, Some(sa("127.0.0.77:53020")));
        let v6 = SIPP_UAS_V6.replace(
            "a=rtpmap:0 PCMU/8000\r\n",
            "a=rtpmap:0 PCMU/8000\r\na=rtcp:7001 IN IP6 fd00:a::99\r\n",
        );
        assert_eq!(parse(&v6).streams()[0].rtcp, Some(sa("[fd00:a::99]:7001")));
    }

    #[test]
    fn rtcp_attr_with_unspecified_address_follows_rtp() {
        let s = format!("{SIPP_UAC}a=rtcp:9 IN IP4 0.0.0.0\r\n");
        assert_eq!(parse(&s).streams()[0].rtcp, Some(sa("127.0.0.1:9")));
        let mux = format!("{s}a=rtcp-mux\r\n");
        assert_eq!(parse(&mux).streams()[0].rtcp, Some(sa("127.0.0.1:6000")));
    }

    #[test]
    fn rtcp_attr_wins_over_rtcp_mux() {
        let s = SIPP_UAC.replace(
            "a=rtpmap:0 PCMU/8000\r\n",
            "a=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=rtcp:6010\r\n",
        );
        let st = parse(&s).streams();
        assert!(st[0].rtcp_mux);
        assert_eq!(st[0].rtcp, Some(sa("127.0.0.1:6010")));
    }

    #[test]
    fn media_level_c_overrides_session_level() {
        let s = AV_V4.replace(
            "m=video 51372 RTP/AVPF 99\r\n",
            "m=video 51372 RTP/AVPF 99\r\nc=IN IP4 198.18.0.20\r\n",
        );
        let st = parse(&s).streams();
        assert_eq!(st[0].addr, Some("198.18.0.10".parse().unwrap()));
        assert_eq!(st[1].addr, Some("198.18.0.20".parse().unwrap()));
        assert_eq!(st[1].rtcp, Some(sa("198.18.0.20:51372")));
    }

    #[test]
    fn media_level_c_without_session_level() {
        let s = "v=0\r\no=- 1 1 IN IP4 198.18.0.10\r\ns=-\r\nt=0 0\r\n\
                 m=audio 4000 RTP/AVP 0\r\nc=IN IP4 198.18.0.11\r\n\
                 m=audio 4002 RTP/AVP 0\r\nc=IN IP6 fd00:a::12\r\n";
        let st = parse(s).streams();
        assert_eq!(st[0].rtp(), Some(sa("198.18.0.11:4000")));
        assert_eq!(st[1].rtp(), Some(sa("[fd00:a::12]:4002")));
    }

    #[test]
    fn hold_forms() {
        let sendonly = SIPP_UAC.replace(
            "a=rtpmap:0 PCMU/8000\r\n",
            "a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n",
        );
        let st = parse(&sendonly).streams();
        assert_eq!(st[0].direction, Direction::SendOnly);
        assert_eq!(st[0].rtp(), Some(sa("127.0.0.1:6000")));

        let recvonly = SIPP_UAC.replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n");
        assert_eq!(
            parse(&recvonly).streams()[0].direction,
            Direction::RecvOnly,
            "session-level direction applies"
        );

        let both = recvonly.replace(
            "a=rtpmap:0 PCMU/8000\r\n",
            "a=rtpmap:0 PCMU/8000\r\na=inactive\r\n",
        );
        assert_eq!(
            parse(&both).streams()[0].direction,
            Direction::Inactive,
            "media level wins"
        );

        let c0 = SIPP_UAC.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        let st = parse(&c0).streams();
        assert_eq!(st[0].addr, None);
        assert_eq!(st[0].rtcp, None);
        assert_eq!(st[0].rtp(), None);
        assert_eq!(st[0].port, 6000);

        let c6 = SIPP_UAS_V6.replace("c=IN IP6 ::1", "c=IN IP6 ::");
        let st = parse(&c6).streams();
        assert_eq!((st[0].addr, st[0].rtcp), (None, None));
    }

    #[test]
    fn rejected_stream_reports_port_zero() {
        let s = AV_V4.replace("m=video 51372", "m=video 0");
        let st = parse(&s).streams();
        assert_eq!(st[1].port, 0);
        assert_eq!(st[1].rtp(), None);
        assert_eq!(st[1].rtcp, None);
        assert_eq!(st[0].rtp(), Some(sa("198.18.0.10:49170")));
    }

    #[test]
    fn rejected_stream_needs_no_connection() {
        let s = "v=0\r\no=- 1 1 IN IP4 198.18.0.10\r\ns=-\r\nt=0 0\r\n\
                 m=audio 4000 RTP/AVP 0\r\nc=IN IP4 198.18.0.11\r\n\
                 m=video 0 RTP/AVP 99\r\n";
        let st = parse(s).streams();
        assert_eq!(st[1].port, 0);
        assert_eq!(st[1].addr, None);
    }

    #[test]
    fn lf_only_input_is_accepted_and_written_with_crlf() {
        let lf = SIPP_UAC.replace("\r\n", "\n");
        let out = text(
            parse(&lf)
                .rewrite(&Rewrite {
                    media_ip: CORE_V4,
                    ports: vec![Some(30000)],
                })
                .unwrap(),
        );
        assert!(out.ends_with("\r\n"));
        assert_eq!(out.matches('\n').count(), out.matches("\r\n").count());
    }

    // ---- limits and malformed input ----

    #[test]
    fn too_large_or_too_many_streams_is_unusable() {
        let mut big = SIPP_UAC.to_owned();
        while big.len() <= MAX_BODY_BYTES {
            big.push_str("a=x-padding:0123456789abcdef0123456789abcdef\r\n");
        }
        assert!(is_unusable(Sdp::parse(big.as_bytes())));

        let mut sixteen = SIPP_UAC.to_owned();
        for i in 1..MAX_STREAMS {
            sixteen.push_str(&format!("m=audio {} RTP/AVP 0\r\n", 6000 + 2 * i));
        }
        assert_eq!(parse(&sixteen).streams().len(), MAX_STREAMS);
        let seventeen = format!("{sixteen}m=audio 7000 RTP/AVP 0\r\n");
        assert!(is_unusable(Sdp::parse(seventeen.as_bytes())));
    }

    #[test]
    fn malformed_bodies_are_parse_errors() {
        let no_v = SIPP_UAC.replace("v=0\r\n", "");
        assert!(is_parse(Sdp::parse(no_v.as_bytes())));
        for bad in [
            "m=audio 70000 RTP/AVP 0",
            "m=audio abc RTP/AVP 0",
            "m=audio -1 RTP/AVP 0",
            "m=audio 6000",
        ] {
            let s = SIPP_UAC.replace("m=audio 6000 RTP/AVP 0", bad);
            assert!(is_parse(Sdp::parse(s.as_bytes())), "{bad}");
        }
        for bad in [
            "c=IN IP4 300.1.1.1",
            "c=IN IP4 fd00::1",
            "c=IN IP6 127.0.0.1",
            "c=IN IP4 host.example",
            "c=IN IP4",
            "c=IN IP4 127.0.0.1/5",
        ] {
            let s = SIPP_UAC.replace("c=IN IP4 127.0.0.1", bad);
            let r = Sdp::parse(s.as_bytes());
            assert!(is_parse(r.clone()), "{bad}: {r:?}");
        }
        for bad in [
            "a=rtcp:",
            "a=rtcp:x",
            "a=rtcp:0",
            "a=rtcp:70000",
            "a=rtcp:6001 IN IP4",
            "a=rtcp:6001 IN IP4 nowhere",
        ] {
            let s = format!("{SIPP_UAC}{bad}\r\n");
            assert!(is_parse(Sdp::parse(s.as_bytes())), "{bad}");
        }
        for garbage in [
            &b""[..],
            b"\r\n",
            b"hello",
            b"v=1\r\n",
            b"INVITE sip:x SIP/2.0\r\n\r\n",
            b"v=0\r\nx\r\n",
            b"\xff\xfe\x00",
        ] {
            assert!(is_parse(Sdp::parse(garbage)), "{garbage:?}");
        }
        let err = Sdp::parse(b"v=0\r\nm=audio 9x RTP/AVP 0\r\n").unwrap_err();
        assert!(
            err.to_string().contains("line 2"),
            "error names the line: {err}"
        );
    }

    #[test]
    fn unrelayable_bodies_are_unusable() {
        let no_c = SIPP_UAC.replace("c=IN IP4 127.0.0.1\r\n", "");
        let err = Sdp::parse(no_c.as_bytes()).unwrap_err();
        assert!(
            matches!(err, SdpError::Unusable(ref m) if m.contains("no c= line")),
            "{err}"
        );
        for bad in [
            "c=TN RFC2543 +15551234",
            "c=IN X25 1234",
            "c=IN IP4 224.2.17.12/127",
            "c=IN IP6 ff15::101",
        ] {
            let s = SIPP_UAC.replace("c=IN IP4 127.0.0.1", bad);
            assert!(is_unusable(Sdp::parse(s.as_bytes())), "{bad}");
        }
        let range = SIPP_UAC.replace("m=audio 6000 ", "m=audio 6000/2 ");
        assert!(is_unusable(Sdp::parse(range.as_bytes())));
        let two_c = SIPP_UAC.replace(
            "a=rtpmap",
            "c=IN IP4 127.0.0.2\r\nc=IN IP4 127.0.0.3\r\na=rtpmap",
        );
        assert!(is_unusable(Sdp::parse(two_c.as_bytes())));
        let top = SIPP_UAC.replace("m=audio 6000 ", "m=audio 65535 ");
        assert!(is_unusable(Sdp::parse(top.as_bytes())));
        let top_mux = format!("{top}a=rtcp-mux\r\n");
        assert_eq!(
            parse(&top_mux).streams()[0].rtcp,
            Some(sa("127.0.0.1:65535"))
        );
    }

    #[test]
    fn no_streams_is_fine() {
        let s = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
        let sdp = parse(s);
        assert!(sdp.streams().is_empty());
        let out = text(
            sdp.rewrite(&Rewrite {
                media_ip: CORE_V4,
                ports: vec![],
            })
            .unwrap(),
        );
        assert!(out.contains("o=- 1 1 IN IP4 198.18.1.1\r\n"));
    }

    // ---- rewrite() ----

    #[test]
    fn sipp_ipv4_to_ipv6_rewrite() {
        let out = text(
            parse(SIPP_UAC)
                .rewrite(&Rewrite {
                    media_ip: ACCESS_V6,
                    ports: vec![Some(40000)],
                })
                .unwrap(),
        );
        assert_eq!(
            lines(&out),
            [
                "v=0",
                "o=user1 53655765 2353687637 IN IP6 fd00:b::1",
                "s=-",
                "c=IN IP6 fd00:b::1",
                "t=0 0",
                "m=audio 40000 RTP/AVP 0",
                "a=rtpmap:0 PCMU/8000",
            ]
        );
        assert!(!out.contains("IP4"));
        assert!(!out.contains("127.0.0.1"));
    }

    #[test]
    fn volte_ipv6_to_ipv4_rewrite_keeps_everything_else() {
        let orig = parse(VOLTE_V6);
        let out = text(
            orig.rewrite(&Rewrite {
                media_ip: CORE_V4,
                ports: vec![Some(30000)],
            })
            .unwrap(),
        );
        assert!(!out.contains("IN IP6"), "{out}");
        assert!(!out.contains("fd00:a::10"), "access address leaked: {out}");
        assert!(out.contains("o=- 1027514470 1027514470 IN IP4 198.18.1.1\r\n"));
        assert!(out.contains("c=IN IP4 198.18.1.1\r\n"));
        assert!(out.contains("m=audio 30000 RTP/AVP 116 107 97 111 110\r\n"));
        // Every attribute and bandwidth line passes through unchanged and in order.
        let pass = |s: &str| -> Vec<String> {
            lines(s)
                .into_iter()
                .filter(|l| l.starts_with("a=") || l.starts_with("b="))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(pass(&out), pass(VOLTE_V6));
        assert!(out.contains("a=rtpmap:116 AMR-WB/16000/1\r\n"));
        assert!(out.contains("a=des:qos mandatory local sendrecv\r\n"));
        let back = Sdp::parse(out.as_bytes()).unwrap().streams();
        assert_eq!(back[0].rtp(), Some(sa("198.18.1.1:30000")));
        assert_eq!(back[0].rtcp, Some(sa("198.18.1.1:30001")));
    }

    #[test]
    fn o_line_keeps_username_session_id_and_version() {
        let out = text(
            parse(AV_V4)
                .rewrite(&Rewrite {
                    media_ip: CORE_V4,
                    ports: vec![Some(1000), Some(1002)],
                })
                .unwrap(),
        );
        assert!(
            out.contains("o=alice 2890844526 2890844527 IN IP4 198.18.1.1\r\n"),
            "{out}"
        );
        assert!(out.contains("s=call\r\n"));
    }

    #[test]
    fn rtcp_attr_rewritten_to_our_port_and_address() {
        let s = AV_V4.replace(
            "a=rtcp-mux\r\n",
            "a=rtcp-mux\r\na=rtcp:51372 IN IP4 198.18.0.10\r\n",
        );
        let out = text(
            parse(&s)
                .rewrite(&Rewrite {
                    media_ip: ACCESS_V6,
                    ports: vec![Some(20000), Some(20002)],
                })
                .unwrap(),
        );
        assert!(out.contains("a=rtcp:20001\r\n"), "port-only a=rtcp: {out}");
        assert!(
            out.contains("a=rtcp-mux\r\na=rtcp:20003 IN IP6 fd00:b::1\r\n"),
            "{out}"
        );
        assert!(!out.contains("198.18.0.10"));
        let st = Sdp::parse(out.as_bytes()).unwrap().streams();
        assert_eq!(st[0].rtcp, Some(sa("[fd00:b::1]:20001")));
        assert_eq!(st[1].rtcp, Some(sa("[fd00:b::1]:20003")));
        assert!(st[1].rtcp_mux);
    }

    #[test]
    fn hold_address_stays_unspecified_in_target_family() {
        let c0 = SIPP_UAC.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        let out = text(
            parse(&c0)
                .rewrite(&Rewrite {
                    media_ip: ACCESS_V6,
                    ports: vec![Some(40000)],
                })
                .unwrap(),
        );
        assert!(out.contains("c=IN IP6 ::\r\n"), "{out}");
        assert!(out.contains("o=user1 53655765 2353687637 IN IP6 fd00:b::1\r\n"));
        assert_eq!(Sdp::parse(out.as_bytes()).unwrap().streams()[0].addr, None);

        let c6 = format!(
            "{}a=rtcp:6003 IN IP6 ::\r\n",
            SIPP_UAS_V6.replace("c=IN IP6 ::1", "c=IN IP6 ::")
        );
        let out = text(
            parse(&c6)
                .rewrite(&Rewrite {
                    media_ip: CORE_V4,
                    ports: vec![Some(30000)],
                })
                .unwrap(),
        );
        assert!(out.contains("c=IN IP4 0.0.0.0\r\n"), "{out}");
        assert!(out.contains("a=rtcp:30001 IN IP4 0.0.0.0\r\n"), "{out}");
    }

    #[test]
    fn direction_attributes_pass_through() {
        for dir in ["sendonly", "recvonly", "inactive", "sendrecv"] {
            let s = SIPP_UAC.replace(
                "a=rtpmap:0 PCMU/8000\r\n",
                &format!("a=rtpmap:0 PCMU/8000\r\na={dir}\r\n"),
            );
            let out = text(
                parse(&s)
                    .rewrite(&Rewrite {
                        media_ip: CORE_V4,
                        ports: vec![Some(30000)],
                    })
                    .unwrap(),
            );
            assert!(
                out.ends_with(&format!("a=rtpmap:0 PCMU/8000\r\na={dir}\r\n")),
                "{out}"
            );
        }
    }

    #[test]
    fn rejected_stream_keeps_port_zero() {
        let s = AV_V4.replace("m=video 51372", "m=video 0");
        let out = text(
            parse(&s)
                .rewrite(&Rewrite {
                    media_ip: CORE_V4,
                    ports: vec![Some(30000), Some(30002)],
                })
                .unwrap(),
        );
        assert!(out.contains("m=audio 30000 RTP/AVP 0 8 101\r\n"));
        assert!(out.contains("m=video 0 RTP/AVPF 99\r\n"), "{out}");
    }

    #[test]
    fn stream_refused_by_us_gets_port_zero_and_no_rtcp() {
        let s = format!("{AV_V4}a=rtcp:51373 IN IP4 198.18.0.10\r\n");
        let out = text(
            parse(&s)
                .rewrite(&Rewrite {
                    media_ip: CORE_V4,
                    ports: vec![Some(30000), None],
                })
                .unwrap(),
        );
        assert!(out.contains("m=video 0 RTP/AVPF 99\r\n"), "{out}");
        assert!(!out.contains("a=rtcp:5137"), "{out}");
        assert!(!out.contains("198.18.0.10"), "{out}");
        assert!(out.contains("a=rtcp-mux\r\n"));
        let st = Sdp::parse(out.as_bytes()).unwrap().streams();
        assert_eq!(st[1].port, 0);
        assert_eq!(st[0].rtp(), Some(sa("198.18.1.1:30000")));
    }

    #[test]
    fn session_and_media_level_c_both_rewritten_none_added() {
        let s = "v=0\r\no=- 1 1 IN IP6 fd00:a::10\r\ns=-\r\nc=IN IP6 fd00:a::10\r\nt=0 0\r\n\
                 m=audio 4000 RTP/AVP 0\r\nc=IN IP6 fd00:a::11\r\n\
                 m=video 4002 RTP/AVP 99\r\nc=IN IP6 fd00:a::12\r\n\
                 m=audio 4004 RTP/AVP 0\r\n";
        let out = text(
            parse(s)
                .rewrite(&Rewrite {
                    media_ip: CORE_V4,
                    ports: vec![Some(1), Some(3), Some(5)],
                })
                .unwrap(),
        );
        assert_eq!(out.matches("c=IN IP4 198.18.1.1\r\n").count(), 3, "{out}");
        assert!(
            out.ends_with("m=audio 5 RTP/AVP 0\r\n"),
            "no c= added to the third stream: {out}"
        );
        assert!(!out.contains("IP6"));

        // No session-level c=: none is added.
        let s2 = s
            .replace("c=IN IP6 fd00:a::10\r\n", "")
            .replace("m=audio 4004 RTP/AVP 0\r\n", "");
        let out = text(
            parse(&s2)
                .rewrite(&Rewrite {
                    media_ip: CORE_V4,
                    ports: vec![Some(1), Some(3)],
                })
                .unwrap(),
        );
        assert_eq!(out.matches("c=").count(), 2, "{out}");
        assert!(
            out.contains("t=0 0\r\nm=audio 1 RTP/AVP 0\r\nc=IN IP4 198.18.1.1\r\n"),
            "{out}"
        );
    }

    #[test]
    fn ice_attributes_are_removed() {
        let s = "v=0\r\no=- 1 1 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\n\
                 a=ice-lite\r\na=ice-options:trickle\r\na=group:BUNDLE 0\r\n\
                 m=audio 4000 RTP/AVP 0\r\n\
                 a=ice-ufrag:F7gI\r\na=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n\
                 a=candidate:1 1 UDP 2130706431 198.18.0.10 4000 typ host\r\n\
                 a=candidate:2 1 UDP 1694498815 198.18.9.9 45664 typ srflx raddr 198.18.0.10 rport 4000\r\n\
                 a=remote-candidates:1 198.18.0.1 5000\r\na=end-of-candidates\r\n\
                 a=altc:1 IP6 fd00:a::10 4000\r\n\
                 a=rtpmap:0 PCMU/8000\r\na=mid:0\r\n";
        let out = text(
            parse(s)
                .rewrite(&Rewrite {
                    media_ip: CORE_V4,
                    ports: vec![Some(30000)],
                })
                .unwrap(),
        );
        for gone in ["ice-", "candidate", "altc", "198.18.0.10", "198.18.9.9"] {
            assert!(!out.contains(gone), "{gone} still in {out}");
        }
        assert!(out.contains("c=IN IP4 198.18.1.1\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=mid:0\r\n"), "{out}");
    }

    #[test]
    fn wrong_port_count_or_our_address_is_unusable() {
        let sdp = parse(AV_V4);
        for ports in [vec![], vec![Some(1)], vec![Some(1), Some(3), Some(5)]] {
            let r = sdp.rewrite(&Rewrite {
                media_ip: CORE_V4,
                ports,
            });
            assert!(matches!(r, Err(SdpError::Unusable(_))));
        }
        for ip in ["0.0.0.0", "::", "224.0.0.1"] {
            let r = sdp.rewrite(&Rewrite {
                media_ip: ip.parse().unwrap(),
                ports: vec![Some(1), Some(3)],
            });
            assert!(matches!(r, Err(SdpError::Unusable(_))), "{ip}");
        }
        let r = sdp.rewrite(&Rewrite {
            media_ip: CORE_V4,
            ports: vec![Some(65535), Some(3)],
        });
        assert!(
            matches!(r, Err(SdpError::Unusable(_))),
            "a=rtcp would need port 65536"
        );
    }

    #[test]
    fn round_trip_with_original_address_and_ports() {
        // Our RTCP is always RTP + 1, so only a=rtcp of RTP + 1 round-trips.
        let av = AV_V4.replace("a=rtcp:49181", "a=rtcp:49171");
        let with_rtcp_addr = format!("{av}a=rtcp:51373 IN IP4 198.18.0.10\r\n");
        let hold = SIPP_UAC
            .replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")
            .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 PCMU/8000\r\na=sendonly");
        let rejected = av.replace("m=video 51372", "m=video 0");
        let cases: [(&str, IpAddr); 6] = [
            (SIPP_UAC, "127.0.0.1".parse().unwrap()),
            (SIPP_UAS_V6, "::1".parse().unwrap()),
            (VOLTE_V6, "fd00:a::10".parse().unwrap()),
            (&with_rtcp_addr, "198.18.0.10".parse().unwrap()),
            (&hold, "127.0.0.1".parse().unwrap()),
            (&rejected, "198.18.0.10".parse().unwrap()),
        ];
        for (body, ip) in cases {
            let sdp = parse(body);
            let ports = sdp.streams().iter().map(|s| Some(s.port)).collect();
            let out = sdp
                .rewrite(&Rewrite {
                    media_ip: ip,
                    ports,
                })
                .unwrap();
            let again = Sdp::parse(&out).unwrap();
            assert_eq!(again.session, sdp.session, "{}", text(out));
            assert_eq!(again.streams(), sdp.streams());
        }
        // SIPp's canonical SDP is reproduced byte for byte.
        let out = parse(SIPP_UAC)
            .rewrite(&Rewrite {
                media_ip: "127.0.0.1".parse().unwrap(),
                ports: vec![Some(6000)],
            })
            .unwrap();
        assert_eq!(text(out), SIPP_UAC);
    }

    #[test]
    fn rewritten_output_reports_our_address_and_ports() {
        for body in [SIPP_UAC, SIPP_UAS_V6, VOLTE_V6, AV_V4] {
            for ours in [CORE_V4, ACCESS_V6] {
                let sdp = parse(body);
                let n = sdp.streams().len();
                let ports: Vec<Option<u16>> = (0..n).map(|i| Some(20000 + 2 * i as u16)).collect();
                let out = sdp
                    .rewrite(&Rewrite {
                        media_ip: ours,
                        ports: ports.clone(),
                    })
                    .unwrap();
                let st = Sdp::parse(&out).unwrap().streams();
                for ((s, p), m) in st.iter().zip(&ports).zip(&sdp.session.medias) {
                    let p = p.unwrap();
                    assert_eq!(s.rtp(), Some(SocketAddr::new(ours, p)));
                    let has_rtcp_attr = m.attributes.iter().any(|a| a.attribute == "rtcp");
                    let want_rtcp = if s.rtcp_mux && !has_rtcp_attr {
                        p
                    } else {
                        p + 1
                    };
                    assert_eq!(
                        s.rtcp,
                        Some(SocketAddr::new(ours, want_rtcp)),
                        "{}",
                        text(out.clone())
                    );
                }
            }
        }
    }

    // ---- never panic ----

    const ALL: [&str; 4] = [SIPP_UAC, SIPP_UAS_V6, VOLTE_V6, AV_V4];

    /// Parse, and if that works, rewrite and re-parse: nothing may panic,
    /// and a rewrite of a parsed body must parse again with our address.
    fn exercise(body: &[u8]) {
        if let Ok(sdp) = Sdp::parse(body) {
            let st = sdp.streams();
            let ports = (0..st.len()).map(|i| Some(30000 + 2 * i as u16)).collect();
            if let Ok(out) = sdp.rewrite(&Rewrite {
                media_ip: CORE_V4,
                ports,
            }) {
                let again = Sdp::parse(&out).expect("rewritten body parses again");
                for s in again.streams() {
                    assert!(
                        s.addr.is_none() || s.addr == Some(CORE_V4),
                        "{}",
                        String::from_utf8_lossy(&out)
                    );
                }
            }
        }
    }

    #[test]
    fn truncated_real_sdps_never_panic() {
        for body in ALL {
            for cut in 0..=body.len() {
                exercise(&body.as_bytes()[..cut]);
            }
        }
    }

    /// One generated `m=` section: port, media-level c=, a=rtcp form,
    /// rtcp-mux, direction, pass-through attributes.
    type GenMedia = (
        u16,
        Option<&'static str>,
        u8,
        bool,
        Option<&'static str>,
        Vec<&'static str>,
    );

    fn gen_conn() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "IN IP4 198.18.0.5",
            "IN IP4 198.18.0.6",
            "IN IP6 fd00:a::5",
            "IN IP6 fd00:a::6",
            "IN IP4 0.0.0.0",
            "IN IP6 ::",
        ])
    }

    fn gen_media() -> impl Strategy<Value = GenMedia> {
        (
            prop_oneof![Just(0u16), 1024u16..60000],
            prop::option::of(gen_conn()),
            0u8..4,
            any::<bool>(),
            prop::option::of(prop::sample::select(vec![
                "sendrecv", "sendonly", "recvonly", "inactive",
            ])),
            prop::collection::vec(
                prop::sample::select(vec![
                    "a=rtpmap:116 AMR-WB/16000/1",
                    "a=fmtp:116 mode-change-capability=2;max-red=0",
                    "a=curr:qos local none",
                    "a=des:qos mandatory local sendrecv",
                    "a=ptime:20",
                    "a=maxptime:240",
                    "b=AS:49",
                    "a=candidate:1 1 UDP 2130706431 198.18.0.5 4000 typ host",
                    "a=ice-ufrag:abcd",
                    "a=x-vendor",
                ]),
                0..6,
            ),
        )
    }

    fn build(session_c: Option<&str>, medias: &[GenMedia]) -> String {
        let mut b = String::from("v=0\r\no=- 7 3 IN IP6 fd00:a::1\r\ns=-\r\n");
        if let Some(c) = session_c {
            b.push_str(&format!("c={c}\r\n"));
        }
        b.push_str("t=0 0\r\n");
        for (port, c, rtcp, mux, dir, extra) in medias {
            b.push_str(&format!("m=audio {port} RTP/AVP 116\r\n"));
            if let Some(c) = c {
                b.push_str(&format!("c={c}\r\n"));
            }
            for e in extra.iter().filter(|e| e.starts_with("b=")) {
                b.push_str(&format!("{e}\r\n"));
            }
            match rtcp {
                1 => b.push_str("a=rtcp:5001\r\n"),
                2 => b.push_str("a=rtcp:5001 IN IP4 198.18.0.7\r\n"),
                3 => b.push_str("a=rtcp:5001 IN IP6 fd00:a::7\r\n"),
                _ => {}
            }
            if *mux {
                b.push_str("a=rtcp-mux\r\n");
            }
            if let Some(d) = dir {
                b.push_str(&format!("a={d}\r\n"));
            }
            for e in extra.iter().filter(|e| e.starts_with("a=")) {
                b.push_str(&format!("{e}\r\n"));
            }
        }
        b
    }

    /// Attribute lines that must pass through unchanged.
    fn passthrough(m: &sdp_types::Media) -> Vec<Attribute> {
        m.attributes
            .iter()
            .filter(|a| !is_bypass_attr(a) && !is_attr(a, "rtcp"))
            .cloned()
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Generated valid SDPs: the rewrite follows the contract stream by
        /// stream, and no remote address survives it.
        #[test]
        fn generated_sdps_rewrite_per_contract(
            session_c in prop::option::of(gen_conn()),
            medias in prop::collection::vec(gen_media(), 1..5),
            ours_v6 in any::<bool>(),
            plan in prop::collection::vec(prop::option::of(1024u16..60000), 5),
        ) {
            let body = build(session_c, &medias);
            let sdp = match Sdp::parse(body.as_bytes()) {
                Ok(s) => s,
                Err(SdpError::Unusable(m)) => {
                    // Only legitimate reason here: an active stream without any c=.
                    prop_assert!(m.contains("no c= line"), "{m}\n{body}");
                    return Ok(());
                }
                Err(e) => return Err(TestCaseError::fail(format!("{e}\n{body}"))),
            };
            let ours = if ours_v6 { ACCESS_V6 } else { CORE_V4 };
            let ports: Vec<Option<u16>> = plan[..medias.len()].to_vec();
            let out = sdp.rewrite(&Rewrite { media_ip: ours, ports: ports.clone() }).unwrap();
            let out_s = text(out.clone());
            prop_assert!(!out_s.contains("198.18.0.") && !out_s.contains("fd00:a::"), "leak: {out_s}");
            prop_assert!(!out_s.contains("candidate") && !out_s.contains("ice-"), "{out_s}");
            let again = Sdp::parse(&out).unwrap();
            let fam = if ours_v6 { "IP6" } else { "IP4" };
            prop_assert!(out_s.contains(&format!("o=- 7 3 IN {fam} {ours}\r\n")), "{out_s}");
            prop_assert_eq!(again.session.connection.is_some(), session_c.is_some());
            for (i, (before, after)) in sdp.streams().iter().zip(again.streams()).enumerate() {
                let mb = &sdp.session.medias[i];
                let ma = &again.session.medias[i];
                prop_assert_eq!(ma.connections.len(), mb.connections.len());
                prop_assert_eq!(passthrough(ma), passthrough(mb));
                prop_assert_eq!(&ma.bandwidths, &mb.bandwidths);
                prop_assert_eq!(after.direction, before.direction);
                prop_assert_eq!(after.rtcp_mux, before.rtcp_mux);
                let want_port = if before.port == 0 { 0 } else { ports[i].unwrap_or(0) };
                prop_assert_eq!(after.port, want_port, "{}", out_s);
                if want_port == 0 {
                    prop_assert!(after.rtcp.is_none());
                    continue;
                }
                if before.addr.is_none() {
                    prop_assert_eq!(after.addr, None, "hold stays hold: {}", out_s);
                    continue;
                }
                prop_assert_eq!(after.rtp(), Some(SocketAddr::new(ours, want_port)));
                let has_attr = mb.attributes.iter().any(|a| is_attr(a, "rtcp"));
                // The generator never puts an unspecified address in a=rtcp.
                let want_rtcp = if before.rtcp_mux && !has_attr { want_port } else { want_port + 1 };
                prop_assert_eq!(after.rtcp.map(|s| s.port()), Some(want_rtcp), "{}\n->\n{}", body, out_s);
            }
        }

        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            exercise(&body);
        }

        #[test]
        fn sdp_shaped_lines_never_panic(
            ls in proptest::collection::vec(
                ("[vosctmabkiz]", "[ -~]{0,40}"), 0..30)
        ) {
            let mut body = String::from("v=0\r\n");
            for (k, v) in ls {
                body.push_str(&format!("{k}={v}\r\n"));
            }
            exercise(body.as_bytes());
        }

        #[test]
        fn mutated_real_sdps_never_panic(
            which in 0usize..4,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)
        ) {
            let mut body = ALL[which].as_bytes().to_vec();
            for (at, byte) in edits {
                let i = at.index(body.len());
                body[i] = byte;
            }
            exercise(&body);
        }
    }

    #[test]
    fn bracketed_ipv6_connection_address_is_accepted() {
        let body = "v=0\r\no=- 1 1 IN IP6 [::1]\r\ns=-\r\nc=IN IP6 [::1]\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
        let sdp = Sdp::parse(body.as_bytes()).unwrap();
        assert_eq!(sdp.streams()[0].rtp(), Some("[::1]:6000".parse().unwrap()));
    }
}
