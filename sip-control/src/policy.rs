//! The trust boundary's address rules, as pure functions of the config:
//! which media addresses an SDP body may name (threat model items 2–3),
//! which IP prefixes are configured, and how a source address is reduced to
//! the key that per-source limits count (an IPv6 source by its prefix, since
//! one subscriber owns a whole /64).
//!
//! This module decides nothing about dialogs or transactions (`routing`
//! does) and holds no state.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP prefix (`198.18.0.0/15`, `fd00::/8`; a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Prefix {
    /// The network address (host bits cleared).
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Prefix {
    /// Parse `addr/len` or a bare address. Host bits set in `addr` are an
    /// error (they usually mean a typo in the length).
    pub fn parse(s: &str) -> Result<Prefix, String> {
        let s = s.trim();
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| {
            format!("\"{s}\" is not an IP prefix (write e.g. \"10.0.0.0/8\" or \"fd00::/8\")")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => match l.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("\"{s}\": prefix length must be 0-{max}")),
            },
        };
        let p = Prefix { addr, len };
        if p.network(addr) != addr {
            return Err(format!(
                "\"{s}\" has host bits set — did you mean {}/{len}?",
                p.network(addr)
            ));
        }
        Ok(p)
    }

    /// `ip` with the bits past this prefix's length cleared.
    fn network(&self, ip: IpAddr) -> IpAddr {
        mask(ip, self.len)
    }

    /// Whether `ip` is inside the prefix (never across address families,
    /// except that an IPv4-mapped IPv6 address is judged as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && self.network(ip) == self.addr
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// `ip` with only its first `len` bits kept.
pub fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// The key per-source limits count `ip` under: an IPv4 address itself, an
/// IPv6 address by its first `v6_prefix` bits.
pub fn source_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(_) => mask(ip, v6_prefix),
        v4 => v4,
    }
}

/// Media address rules of one side.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRules {
    /// Extra prefixes an SDP from this side may not name (e.g. the core
    /// network's own prefixes on the access side).
    pub deny: Vec<Prefix>,
    /// Accept loopback media addresses (a lab running everything on 127/8;
    /// never in production).
    pub allow_loopback: bool,
    /// Accept the unspecified address (`c=0.0.0.0`, RFC 2543 hold): no media
    /// is then sent to the stream. Off by default (RFC 3264 holds with
    /// `a=sendonly`/`a=inactive` and a real address).
    pub allow_hold_address: bool,
}

/// The BGF's own addresses, and the ports it uses on them.
#[derive(Clone, Debug, Default)]
pub struct OwnAddrs {
    /// SIP and media addresses of both sides.
    pub ips: Vec<IpAddr>,
    /// Port ranges (inclusive) in use on them: RTP pools, SIP ports.
    pub ports: Vec<(u16, u16)>,
}

/// Why a media address (`ip`, at `port`) an SDP body names is refused, if
/// it is. One of the BGF's own addresses is refused — except, in a loopback
/// lab (`allow_loopback`, where UEs share 127.0.0.1 or ::1 with the BGF),
/// at a port outside the BGF's own ranges.
pub fn media_addr_problem(
    ip: IpAddr,
    port: u16,
    rules: &MediaRules,
    own: &OwnAddrs,
) -> Option<String> {
    let ip = canonical(ip);
    let own_port = own.ports.iter().any(|(lo, hi)| (*lo..=*hi).contains(&port));
    let what = if own.ips.iter().any(|o| canonical(*o) == ip)
        && (own_port || !(ip.is_loopback() && rules.allow_loopback))
    {
        Some("one of this BGF's own addresses")
    } else if ip.is_unspecified() {
        (!rules.allow_hold_address).then_some("the unspecified address")
    } else if ip.is_loopback() {
        (!rules.allow_loopback).then_some("a loopback address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
        Some("the broadcast address")
    } else if is_link_local(ip) {
        Some("a link-local address")
    } else {
        None
    };
    if let Some(w) = what {
        return Some(format!("media address {ip} is {w}"));
    }
    rules
        .deny
        .iter()
        .find(|p| p.contains(ip))
        .map(|p| format!("media address {ip} is inside the denied prefix {p}"))
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_parse_and_match() {
        let p = Prefix::parse("198.18.0.0/15").unwrap();
        assert!(p.contains(ip("198.19.255.1")));
        assert!(!p.contains(ip("198.20.0.1")));
        assert!(!p.contains(ip("fd00::1")));
        assert!(
            p.contains(ip("::ffff:198.18.0.7")),
            "v4-mapped judged as v4"
        );
        let v6 = Prefix::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert_eq!(Prefix::parse("10.1.2.3").unwrap().len, 32);
        assert!(Prefix::parse("10.1.2.3/8")
            .unwrap_err()
            .contains("10.0.0.0/8"));
        assert!(Prefix::parse("10.0.0.0/33").is_err());
        assert!(Prefix::parse("nonsense").is_err());
        assert_eq!(Prefix::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert!(Prefix::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
    }

    #[test]
    fn v6_sources_count_by_prefix() {
        assert_eq!(source_key(ip("fd00:a::1:2"), 64), ip("fd00:a::"));
        assert_eq!(source_key(ip("198.18.0.5"), 64), ip("198.18.0.5"));
        assert_eq!(source_key(ip("::ffff:198.18.0.5"), 64), ip("198.18.0.5"));
    }

    #[test]
    fn media_address_rules() {
        let own = OwnAddrs {
            ips: vec![ip("198.18.0.11"), ip("198.18.1.11")],
            ports: vec![(5060, 5060), (20000, 29999)],
        };
        let r = MediaRules {
            deny: vec![Prefix::parse("198.18.1.0/24").unwrap()],
            ..MediaRules::default()
        };
        for bad in [
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "169.254.1.1",
            "fe80::1",
            "198.18.0.11",
            "::ffff:127.0.0.1",
            "198.18.1.200",
        ] {
            assert!(
                media_addr_problem(ip(bad), 4000, &r, &own).is_some(),
                "{bad}"
            );
        }
        for good in ["198.18.0.200", "fd00:a::200", "203.0.113.9"] {
            assert_eq!(media_addr_problem(ip(good), 4000, &r, &own), None, "{good}");
        }
        let lab = MediaRules {
            allow_loopback: true,
            allow_hold_address: true,
            ..MediaRules::default()
        };
        assert_eq!(media_addr_problem(ip("127.3.4.5"), 4000, &lab, &own), None);
        assert_eq!(media_addr_problem(ip("0.0.0.0"), 4000, &lab, &own), None);
        let lo = OwnAddrs {
            ips: vec![ip("::1")],
            ports: vec![(20000, 29999)],
        };
        assert!(
            media_addr_problem(ip("::1"), 20002, &lab, &lo).is_some(),
            "the BGF's own ports stay refused on loopback"
        );
        assert_eq!(
            media_addr_problem(ip("::1"), 41000, &lab, &lo),
            None,
            "a UE sharing ::1 with the BGF in a loopback lab"
        );
        assert!(media_addr_problem(ip("::1"), 41000, &r, &lo).is_some());
    }
}
