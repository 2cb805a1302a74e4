//! The little SDP callgen writes (one audio stream) and reads (the peer's
//! media address: `c=` at media or session level, the first `m=audio` port,
//! `a=rtcp:` if present).

use std::net::{IpAddr, SocketAddr};

/// The codec callgen offers and sends.
#[derive(Clone, Debug)]
pub struct Codec {
    /// RTP payload type.
    pub pt: u8,
    /// Encoding name for `a=rtpmap`.
    pub name: String,
    /// RTP clock rate (Hz).
    pub clock: u32,
    /// Payload bytes per packet.
    pub payload: usize,
    /// Packet time (ms).
    pub ptime_ms: u32,
}

impl Codec {
    /// RTP timestamp increment per packet.
    pub fn ts_step(&self) -> u32 {
        self.clock / 1000 * self.ptime_ms
    }
}

/// An SDP body for one audio stream at `media`.
pub fn build(media: SocketAddr, codec: &Codec, session: u64, version: u32) -> Vec<u8> {
    let (ipv, ip) = match media.ip() {
        IpAddr::V4(a) => ("IP4", a.to_string()),
        IpAddr::V6(a) => ("IP6", a.to_string()),
    };
    format!(
        "v=0\r\no=callgen {session} {version} IN {ipv} {ip}\r\ns=bgf-callgen\r\nc=IN {ipv} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {pt}\r\na=rtpmap:{pt} {name}/{clock}\r\na=ptime:{ptime}\r\na=sendrecv\r\n",
        port = media.port(),
        pt = codec.pt,
        name = codec.name,
        clock = codec.clock,
        ptime = codec.ptime_ms,
    )
    .into_bytes()
}

/// The peer's media: RTP address and the RTCP address (`a=rtcp:` or RTP+1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Media {
    /// Where to send RTP.
    pub rtp: SocketAddr,
    /// Where to send RTCP.
    pub rtcp: SocketAddr,
}

/// The `a=ptime:` of an SDP body (first one, 1..=1000 ms), if any.
pub fn ptime(body: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(body).ok()?;
    text.lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("a=ptime:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|p| (1..=1000).contains(p))
}

/// Reads the first audio stream's address from an SDP body.
pub fn parse(body: &[u8]) -> Result<Media, String> {
    let text = std::str::from_utf8(body).map_err(|_| "SDP is not UTF-8".to_string())?;
    let mut session_c: Option<IpAddr> = None;
    let mut media_c: Option<IpAddr> = None;
    let mut port: Option<u16> = None;
    let mut rtcp: Option<(u16, Option<IpAddr>)> = None;
    let mut in_audio = false;
    let mut seen_media = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("m=") {
            if port.is_some() {
                break; // only the first audio stream
            }
            seen_media = true;
            let mut f = rest.split_whitespace();
            in_audio = f.next() == Some("audio");
            if in_audio {
                port = Some(
                    f.next()
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| format!("bad m= line {line:?}"))?,
                );
            }
        } else if let Some(rest) = line.strip_prefix("c=") {
            let ip = rest
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.split('/').next())
                .and_then(|a| a.parse::<IpAddr>().ok())
                .ok_or_else(|| format!("bad c= line {line:?}"))?;
            if !seen_media {
                session_c = Some(ip);
            } else if in_audio {
                media_c = Some(ip);
            }
        } else if let Some(rest) = line.strip_prefix("a=rtcp:") {
            if in_audio {
                let mut f = rest.split_whitespace();
                if let Some(p) = f.next().and_then(|p| p.parse().ok()) {
                    let ip = f.nth(2).and_then(|a| a.parse().ok());
                    rtcp = Some((p, ip));
                }
            }
        }
    }
    let port = port.ok_or("no m=audio line")?;
    let ip = media_c.or(session_c).ok_or("no c= line")?;
    let rtp = SocketAddr::new(ip, port);
    let rtcp = match rtcp {
        Some((p, ip2)) => SocketAddr::new(ip2.unwrap_or(ip), p),
        None => SocketAddr::new(ip, port.wrapping_add(1)),
    };
    Ok(Media { rtp, rtcp })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptime_is_read_and_bounded() {
        assert_eq!(
            ptime(b"v=0\r\nm=audio 4000 RTP/AVP 8\r\na=ptime:1000\r\n"),
            Some(1000)
        );
        assert_eq!(ptime(b"v=0\r\na=ptime:20\r\n"), Some(20));
        assert_eq!(ptime(b"v=0\r\na=ptime:0\r\n"), None);
        assert_eq!(ptime(b"v=0\r\na=ptime:x\r\n"), None);
        assert_eq!(ptime(b"v=0\r\n"), None);
    }

    #[test]
    fn round_trip_v4_and_v6() {
        let c = Codec {
            pt: 8,
            name: "PCMA".into(),
            clock: 8000,
            payload: 160,
            ptime_ms: 20,
        };
        for a in ["198.18.0.1:4000", "[fd00::1]:4002"] {
            let a: SocketAddr = a.parse().unwrap();
            let m = parse(&build(a, &c, 1, 2)).unwrap();
            assert_eq!(m.rtp, a);
            assert_eq!(m.rtcp.port(), a.port() + 1);
        }
        assert_eq!(c.ts_step(), 160);
    }

    #[test]
    fn media_level_c_and_rtcp_attribute_win() {
        let sdp = b"v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 5000 RTP/AVP 8\r\nc=IN IP4 2.2.2.2\r\na=rtcp:6001\r\nm=audio 7000 RTP/AVP 0\r\n";
        let m = parse(sdp).unwrap();
        assert_eq!(m.rtp, "2.2.2.2:5000".parse().unwrap());
        assert_eq!(m.rtcp, "2.2.2.2:6001".parse().unwrap());
        assert!(parse(b"v=0\r\nm=audio x RTP/AVP 8\r\n").is_err());
        assert!(parse(b"v=0\r\nm=audio 5 RTP/AVP 8\r\n").is_err());
    }
}
