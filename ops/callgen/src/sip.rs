//! The small SIP user agent both roles use: UDP only, messages parsed and
//! serialised with `sip_control::msg` (the BGF's own framing), client
//! transactions with RFC 3261 retransmission (Timer A/E: T1 = 500 ms doubling,
//! capped at T2 = 4 s for non-INVITE), and dialog routing from Record-Route.

use sip_control::msg::{split_host_port, Header, Message, Method, NameAddr, StartLine, Via};
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// RFC 3261 T1.
pub const T1_NS: u64 = 500_000_000;
/// RFC 3261 T2.
pub const T2_NS: u64 = 4_000_000_000;
/// Largest SIP datagram accepted.
pub const MAX_SIP: usize = 65_535;

/// The SIP socket with send/receive counters.
pub struct SipSock {
    /// The socket (non-blocking).
    pub sock: UdpSocket,
    /// Its local address.
    pub local: SocketAddr,
    buf: Vec<u8>,
    /// Messages sent (retransmissions included).
    pub sent: u64,
    /// Retransmissions sent.
    pub retransmissions: u64,
    /// Datagrams that did not parse (dropped, counted).
    pub unparsable: u64,
}

impl SipSock {
    /// Binds `local`.
    pub fn bind(local: SocketAddr) -> std::io::Result<SipSock> {
        let sock = UdpSocket::bind(local)?;
        sock.set_nonblocking(true)?;
        crate::engine::set_rcvbuf(&sock, 8 << 20);
        let local = sock.local_addr()?;
        Ok(SipSock {
            sock,
            local,
            buf: vec![0u8; MAX_SIP],
            sent: 0,
            retransmissions: 0,
            unparsable: 0,
        })
    }

    /// Sends raw bytes (errors are counted by the caller's retransmissions).
    pub fn send(&mut self, data: &[u8], to: SocketAddr) {
        self.sent += 1;
        if let Err(e) = self.sock.send_to(data, to) {
            tracing_like(&format!("SIP send to {to} failed: {e}"));
        }
    }

    /// The next parsed message, if one is queued.
    pub fn recv(&mut self) -> Option<(Message, SocketAddr)> {
        loop {
            match self.sock.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    let data = &self.buf[..n];
                    if data.iter().all(|b| b.is_ascii_whitespace()) {
                        continue; // keep-alive
                    }
                    match Message::parse(data, MAX_SIP) {
                        Ok(m) => return Some((m, from)),
                        Err(_) => self.unparsable += 1,
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(_) => continue, // ICMP error on the socket: nothing to read
            }
        }
    }
}

/// Rare diagnostics go to stderr (no logging framework in this tool).
pub fn tracing_like(msg: &str) {
    eprintln!("bgf-callgen: {msg}");
}

/// A client transaction in flight (one per call at a time).
#[derive(Clone, Debug)]
pub struct ClientTxn {
    /// The request, serialised.
    pub bytes: Vec<u8>,
    /// Where it goes.
    pub dest: SocketAddr,
    /// INVITE (Timer A, stops on a provisional) or not (Timer E, capped at T2).
    pub invite: bool,
    /// CSeq number and method.
    pub cseq: (u32, Method),
    /// Via branch.
    pub branch: String,
    /// Next retransmission (ns); None once a provisional arrived (INVITE).
    pub next_retx: Option<u64>,
    interval: u64,
    /// Give up at (ns).
    pub deadline: u64,
}

impl ClientTxn {
    /// A transaction sent at `now`, timing out after `timeout_ns`.
    pub fn new(req: &Message, dest: SocketAddr, now: u64, timeout_ns: u64) -> ClientTxn {
        let cseq = req.cseq().unwrap_or((0, Method::Other("?".into())));
        let invite = cseq.1 == Method::Invite;
        let branch = req
            .top_via()
            .and_then(|v| Via::parse(v).ok())
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        ClientTxn {
            bytes: req.to_bytes(),
            dest,
            invite,
            cseq,
            branch,
            next_retx: Some(now + T1_NS),
            interval: T1_NS,
            deadline: now + timeout_ns,
        }
    }

    /// Whether a response belongs to this transaction (CSeq and branch).
    pub fn matches(&self, resp: &Message) -> bool {
        let Ok(c) = resp.cseq() else { return false };
        if c != self.cseq {
            return false;
        }
        resp.top_via()
            .and_then(|v| Via::parse(v).ok())
            .is_some_and(|v| v.branch() == Some(self.branch.as_str()))
    }

    /// A provisional response arrived: INVITE retransmissions stop (Timer A);
    /// non-INVITE ones continue at T2.
    pub fn provisional(&mut self) {
        if self.invite {
            self.next_retx = None;
        } else {
            self.interval = T2_NS;
        }
    }

    /// Retransmits if due; returns whether it did.
    pub fn poll(&mut self, now: u64, sip: &mut SipSock) -> bool {
        match self.next_retx {
            Some(t) if t <= now => {
                sip.send(&self.bytes, self.dest);
                sip.retransmissions += 1;
                self.interval = if self.invite {
                    self.interval * 2
                } else {
                    (self.interval * 2).min(T2_NS)
                };
                self.next_retx = Some(now + self.interval);
                true
            }
            _ => false,
        }
    }
}

/// Builds a request with the usual headers (Content-Length is added on
/// serialisation).
pub fn request(method: Method, uri: &str, headers: Vec<(&str, String)>, body: Vec<u8>) -> Message {
    Message {
        start: StartLine::Request {
            method,
            uri: uri.to_string(),
        },
        headers: headers
            .into_iter()
            .map(|(n, v)| Header {
                name: n.to_string(),
                value: v,
            })
            .collect(),
        body,
    }
}

/// The socket address a `sip:` URI (possibly in `<…>`, with parameters)
/// points at; only IP-literal hosts (callgen does no DNS).
pub fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let u = uri.trim();
    let u = u
        .strip_prefix('<')
        .map(|r| r.split('>').next().unwrap_or(r))
        .unwrap_or(u);
    let rest = u.strip_prefix("sip:").or_else(|| u.strip_prefix("sips:"))?;
    let hostport = match rest.rfind('@') {
        Some(i) => &rest[i + 1..],
        None => rest,
    };
    let hostport = hostport.split([';', '?', '>']).next()?;
    let (host, port) = split_host_port(hostport)?;
    let ip: IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(ip, port.unwrap_or(5060)))
}

/// The URI inside a name-addr header value.
pub fn name_addr_uri(v: &str) -> Option<String> {
    NameAddr::parse(v).ok().map(|n| n.uri)
}

/// A dialog as the UAC sees it after the 2xx: where in-dialog requests go.
#[derive(Clone, Debug, Default)]
pub struct Route {
    /// Remote target (the 2xx's Contact URI).
    pub target: String,
    /// Route set (the 2xx's Record-Route, reversed), raw values.
    pub set: Vec<String>,
}

impl Route {
    /// From the UAC's 2xx: Record-Route reversed, Contact as target.
    pub fn from_2xx(resp: &Message) -> Option<Route> {
        let target = name_addr_uri(resp.header("Contact")?)?;
        let mut set: Vec<String> = resp
            .headers_named("Record-Route")
            .map(str::to_string)
            .collect();
        set.reverse();
        Some(Route { target, set })
    }

    /// Request-URI, Route headers and the next hop for an in-dialog request
    /// (loose routing; a strict router in the set is treated as loose).
    pub fn next_hop(&self, fallback: SocketAddr) -> (String, Vec<String>, SocketAddr) {
        let hop = match self.set.first() {
            Some(r) => name_addr_uri(r).and_then(|u| uri_addr(&u)),
            None => uri_addr(&self.target),
        };
        (
            self.target.clone(),
            self.set.clone(),
            hop.unwrap_or(fallback),
        )
    }
}

/// A token for tags, branches and Call-IDs.
pub fn token(seed: &mut u64) -> String {
    // splitmix64
    *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:012x}", (z ^ (z >> 31)) & 0xffff_ffff_ffff)
}

/// A response's status code (0 for a request).
pub fn code(m: &Message) -> u16 {
    m.code().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_addresses() {
        assert_eq!(
            uri_addr("sip:bgf@198.18.0.1:5070;lr"),
            Some("198.18.0.1:5070".parse().unwrap())
        );
        assert_eq!(
            uri_addr("<sip:[fd00::1]:5060;transport=udp>"),
            Some("[fd00::1]:5060".parse().unwrap())
        );
        assert_eq!(
            uri_addr("sip:198.18.0.2"),
            Some("198.18.0.2:5060".parse().unwrap())
        );
        assert_eq!(uri_addr("sip:host.example.com"), None);
        assert_eq!(uri_addr("tel:+123"), None);
    }

    #[test]
    fn route_from_record_route_reversed() {
        let raw = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.0.9:5060;branch=z9hG4bKx\r\nRecord-Route: <sip:198.18.1.1:5060;lr>, <sip:198.18.0.1:5060;lr>\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:uas@198.18.1.2:5060>\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(raw, MAX_SIP).unwrap();
        let r = Route::from_2xx(&m).unwrap();
        let (uri, routes, hop) = r.next_hop("198.18.9.9:5060".parse().unwrap());
        assert_eq!(uri, "sip:uas@198.18.1.2:5060");
        assert_eq!(routes.len(), 2);
        assert!(routes[0].contains("198.18.0.1"));
        assert_eq!(hop, "198.18.0.1:5060".parse().unwrap());
    }
}
