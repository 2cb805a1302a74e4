//! Layer 2 for raw-frame backends (DPDK): Ethernet parse/build, the ARP and
//! IPv6 neighbour-discovery responder for the addresses the data plane
//! owns, neighbour resolution (ARP requests / neighbour solicitations and a
//! small neighbour table with a hold queue), and the gratuitous ARP /
//! unsolicited NA frames sent on takeover. Pure functions over byte slices
//! plus plain data structures, so all of it is unit-tested without DPDK.
//!
//! Not here: UDP parse/rewrite ([`crate::packet`]) and the forwarding
//! decision ([`crate::table::Relay::process`]) — the DPDK backend runs the
//! same code as every backend for those. No VLAN tags (untagged ports only).

use crate::packet::checksum;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// A MAC address.
pub type Mac = [u8; 6];
/// Ethernet header length (untagged).
pub const ETH_HDR: usize = 14;
/// EtherType IPv4.
pub const ETH_IPV4: u16 = 0x0800;
/// EtherType ARP.
pub const ETH_ARP: u16 = 0x0806;
/// EtherType IPv6.
pub const ETH_IPV6: u16 = 0x86dd;
/// The broadcast MAC.
pub const BROADCAST: Mac = [0xff; 6];
const ARP_LEN: usize = 28;
/// Length of the NS/NA frames built here (Ethernet + IPv6 + ICMPv6 with one
/// link-layer address option).
pub const ND_FRAME_LEN: usize = ETH_HDR + 40 + 32;
/// Length of the ARP frames built here (padded to the Ethernet minimum).
pub const ARP_FRAME_LEN: usize = 60;

/// Format a MAC for logs.
pub fn mac_str(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// What a received frame is, as far as the data plane cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Not addressed to us (another unicast MAC), or a protocol we ignore.
    Ignore,
    /// An IPv4 or IPv6 packet starting at [`ETH_HDR`].
    Ip,
    /// An ARP request or reply (IPv4 over Ethernet).
    Arp(Arp),
    /// An ICMPv6 neighbour solicitation.
    Solicit(Nd),
    /// An ICMPv6 neighbour advertisement.
    Advert(Nd),
}

/// A parsed ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1 request, 2 reply.
    pub op: u16,
    /// Sender MAC.
    pub sha: Mac,
    /// Sender IP.
    pub spa: Ipv4Addr,
    /// Target IP.
    pub tpa: Ipv4Addr,
}

/// A parsed neighbour solicitation / advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nd {
    /// IPv6 source of the packet.
    pub src: Ipv6Addr,
    /// The target address.
    pub target: Ipv6Addr,
    /// Link-layer address from the option (source LL for NS, target LL for
    /// NA), else the Ethernet source.
    pub lladdr: Mac,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn mac_at(b: &[u8], at: usize) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

/// Classify a received Ethernet frame for a port whose MAC is `mine`.
/// Unicast to another MAC is ignored; broadcast and multicast are looked at.
pub fn classify(f: &[u8], mine: &Mac) -> Frame {
    if f.len() < ETH_HDR {
        return Frame::Ignore;
    }
    let dst = mac_at(f, 0);
    if dst != *mine && dst[0] & 1 == 0 {
        return Frame::Ignore;
    }
    match be16(f, 12) {
        ETH_IPV4 => Frame::Ip,
        ETH_ARP => parse_arp(&f[ETH_HDR..]).map_or(Frame::Ignore, Frame::Arp),
        ETH_IPV6 => match parse_nd(f) {
            Some((135, nd)) => Frame::Solicit(nd),
            Some((136, nd)) => Frame::Advert(nd),
            Some(_) => Frame::Ignore,
            None => Frame::Ip,
        },
        _ => Frame::Ignore,
    }
}

fn parse_arp(a: &[u8]) -> Option<Arp> {
    if a.len() < ARP_LEN {
        return None;
    }
    // Ethernet / IPv4, 6-byte and 4-byte addresses.
    if be16(a, 0) != 1 || be16(a, 2) != ETH_IPV4 || a[4] != 6 || a[5] != 4 {
        return None;
    }
    let op = be16(a, 6);
    if op != 1 && op != 2 {
        return None;
    }
    Some(Arp {
        op,
        sha: mac_at(a, 8),
        spa: Ipv4Addr::new(a[14], a[15], a[16], a[17]),
        tpa: Ipv4Addr::new(a[24], a[25], a[26], a[27]),
    })
}

/// `Some((icmp type, nd))` for an NS/NA, `None` for any other IPv6 packet.
fn parse_nd(f: &[u8]) -> Option<(u8, Nd)> {
    let ip = f.get(ETH_HDR..)?;
    if ip.len() < 40 + 24 || ip[0] >> 4 != 6 || ip[6] != 58 {
        return None;
    }
    let plen = usize::from(be16(ip, 4));
    let icmp = ip.get(40..40 + plen)?;
    let t = icmp[0];
    if !(t == 135 || t == 136) || icmp.len() < 24 || icmp[1] != 0 {
        return None;
    }
    // RFC 4861 7.1.1: hop limit must be 255 (not forwarded by a router).
    if ip[7] != 255 {
        return None;
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&ip[8..24]);
    let mut target = [0u8; 16];
    target.copy_from_slice(&icmp[8..24]);
    let want_opt = if t == 135 { 1 } else { 2 };
    let mut lladdr = mac_at(f, 6);
    let mut opts = &icmp[24..];
    while opts.len() >= 8 {
        let len = usize::from(opts[1]) * 8;
        if len == 0 || len > opts.len() {
            break;
        }
        if opts[0] == want_opt && len >= 8 {
            lladdr = mac_at(opts, 2);
        }
        opts = &opts[len..];
    }
    Some((
        t,
        Nd {
            src: src.into(),
            target: target.into(),
            lladdr,
        },
    ))
}

fn eth(out: &mut [u8], dst: &Mac, src: &Mac, ethertype: u16) {
    out[0..6].copy_from_slice(dst);
    out[6..12].copy_from_slice(src);
    out[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// Write the Ethernet header of an outgoing IP frame (`ipv4`: EtherType).
pub fn write_eth(out: &mut [u8], dst: &Mac, src: &Mac, ipv4: bool) {
    eth(out, dst, src, if ipv4 { ETH_IPV4 } else { ETH_IPV6 });
}

/// Build an ARP frame into `out` (at least [`ARP_FRAME_LEN`] bytes); returns
/// its length. `eth_dst` is the frame's destination, `tha` the target
/// hardware address field.
#[allow(clippy::too_many_arguments)]
pub fn arp_frame(
    out: &mut [u8],
    eth_dst: &Mac,
    op: u16,
    sha: &Mac,
    spa: Ipv4Addr,
    tha: &Mac,
    tpa: Ipv4Addr,
) -> usize {
    let f = &mut out[..ARP_FRAME_LEN];
    f.fill(0);
    eth(f, eth_dst, sha, ETH_ARP);
    let a = &mut f[ETH_HDR..];
    a[0..2].copy_from_slice(&1u16.to_be_bytes());
    a[2..4].copy_from_slice(&ETH_IPV4.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&op.to_be_bytes());
    a[8..14].copy_from_slice(sha);
    a[14..18].copy_from_slice(&spa.octets());
    a[18..24].copy_from_slice(tha);
    a[24..28].copy_from_slice(&tpa.octets());
    ARP_FRAME_LEN
}

/// The reply to ARP request `req` for an address we own, from `mine`.
pub fn arp_reply(out: &mut [u8], mine: &Mac, req: &Arp) -> usize {
    arp_frame(out, &req.sha, 2, mine, req.tpa, &req.sha, req.spa)
}

/// An ARP request for `target` from `(mine, spa)` (broadcast).
pub fn arp_request(out: &mut [u8], mine: &Mac, spa: Ipv4Addr, target: Ipv4Addr) -> usize {
    arp_frame(out, &BROADCAST, 1, mine, spa, &[0; 6], target)
}

/// A gratuitous ARP for `ip` at `mine`: a broadcast request with sender and
/// target both `ip` (what Linux's `arping -U` sends; updates every cache).
pub fn garp(out: &mut [u8], mine: &Mac, ip: Ipv4Addr) -> usize {
    arp_frame(out, &BROADCAST, 1, mine, ip, &BROADCAST, ip)
}

/// The solicited-node multicast address of `a` (RFC 4291 2.7.1).
pub fn solicited_node(a: &Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The Ethernet multicast MAC of an IPv6 multicast address (33:33:…).
pub fn multicast_mac(a: &Ipv6Addr) -> Mac {
    let o = a.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + icmp.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(icmp);
    checksum(&pseudo)
}

/// Build an NS (`icmp_type` 135) or NA (136) frame with one link-layer
/// address option carrying `mine`; returns [`ND_FRAME_LEN`].
#[allow(clippy::too_many_arguments)]
fn nd_frame(
    out: &mut [u8],
    eth_dst: &Mac,
    mine: &Mac,
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
    icmp_type: u8,
    flags: u8,
    target: &Ipv6Addr,
) -> usize {
    let f = &mut out[..ND_FRAME_LEN];
    f.fill(0);
    eth(f, eth_dst, mine, ETH_IPV6);
    let ip = &mut f[ETH_HDR..];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&32u16.to_be_bytes());
    ip[6] = 58;
    ip[7] = 255;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    let icmp = &mut ip[40..72];
    icmp[0] = icmp_type;
    icmp[4] = flags;
    icmp[8..24].copy_from_slice(&target.octets());
    // Option: 1 source link-layer (NS), 2 target link-layer (NA).
    icmp[24] = if icmp_type == 135 { 1 } else { 2 };
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(mine);
    let ck = icmpv6_checksum(src, dst, &ip[40..72]);
    ip[42..44].copy_from_slice(&ck.to_be_bytes());
    ND_FRAME_LEN
}

/// NA flags: solicited.
const NA_SOLICITED: u8 = 0x40;
/// NA flags: override.
const NA_OVERRIDE: u8 = 0x20;

/// The solicited NA answering `ns` for an address we own.
pub fn na_reply(out: &mut [u8], mine: &Mac, ns: &Nd) -> usize {
    // An NS from the unspecified address (DAD) is answered to all-nodes.
    let (dst, eth_dst) = if ns.src.is_unspecified() {
        let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        (all, multicast_mac(&all))
    } else {
        (ns.src, ns.lladdr)
    };
    let flags = if ns.src.is_unspecified() {
        NA_OVERRIDE
    } else {
        NA_SOLICITED | NA_OVERRIDE
    };
    nd_frame(
        out, &eth_dst, mine, &ns.target, &dst, 136, flags, &ns.target,
    )
}

/// An NS for `target` from `(mine, src)` to its solicited-node group.
pub fn ns_request(out: &mut [u8], mine: &Mac, src: &Ipv6Addr, target: &Ipv6Addr) -> usize {
    let group = solicited_node(target);
    nd_frame(
        out,
        &multicast_mac(&group),
        mine,
        src,
        &group,
        135,
        0,
        target,
    )
}

/// An unsolicited NA for `ip` at `mine` to all-nodes, override set
/// (RFC 4861 7.2.6).
pub fn unsolicited_na(out: &mut [u8], mine: &Mac, ip: &Ipv6Addr) -> usize {
    let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    nd_frame(
        out,
        &multicast_mac(&all),
        mine,
        ip,
        &all,
        136,
        NA_OVERRIDE,
        ip,
    )
}

/// The announcement frame for `ip` (gratuitous ARP or unsolicited NA).
pub fn announcement(out: &mut [u8], mine: &Mac, ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(v4) => garp(out, mine, v4),
        IpAddr::V6(v6) => unsolicited_na(out, mine, &v6),
    }
}

/// The resolution request for `target` sent from our address `src` (same
/// family): ARP request or neighbour solicitation.
pub fn solicitation(out: &mut [u8], mine: &Mac, src: IpAddr, target: IpAddr) -> Option<usize> {
    match (src, target) {
        (IpAddr::V4(s), IpAddr::V4(t)) => Some(arp_request(out, mine, s, t)),
        (IpAddr::V6(s), IpAddr::V6(t)) => Some(ns_request(out, mine, &s, &t)),
        _ => None,
    }
}

/// Resolution state of one next hop.
struct Neighbour<P> {
    mac: Option<Mac>,
    updated: Instant,
    /// When the last solicitation went out.
    asked: Option<Instant>,
    /// Packets waiting for the MAC, oldest first.
    held: Vec<(P, Instant)>,
}

/// The neighbour table with a hold queue: packets to a next hop whose MAC
/// is unknown wait (up to [`NeighbourTable::HOLD`] per next hop, for
/// [`NeighbourTable::HOLD_FOR`]) while a solicitation is out, like the
/// kernel's unresolved queue. `P` is the backend's packet handle. Single
/// threaded (the poll loop owns it).
pub struct NeighbourTable<P> {
    map: HashMap<IpAddr, Neighbour<P>>,
}

/// What [`NeighbourTable::resolve`] decided.
pub enum Resolve<P> {
    /// Send now to this MAC.
    Ready(Mac, P),
    /// Held; send a solicitation now if `solicit`.
    Held {
        /// Whether to send a solicitation now (rate-limited).
        solicit: bool,
    },
    /// The hold queue is full: the packet comes back to be dropped.
    Full(P),
}

impl<P> Default for NeighbourTable<P> {
    fn default() -> Self {
        NeighbourTable {
            map: HashMap::new(),
        }
    }
}

impl<P> NeighbourTable<P> {
    /// Packets held per unresolved next hop.
    pub const HOLD: usize = 16;
    /// How long a held packet waits.
    pub const HOLD_FOR: Duration = Duration::from_secs(1);
    /// Minimum time between solicitations for one next hop.
    pub const RESOLICIT: Duration = Duration::from_millis(200);

    /// The known MAC of `ip`.
    pub fn get(&self, ip: &IpAddr) -> Option<Mac> {
        self.map.get(ip).and_then(|n| n.mac)
    }

    /// Number of entries (resolved or not).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Learn `ip` at `mac` (from ARP or ND); returns the packets that were
    /// waiting for it.
    pub fn learn(&mut self, ip: IpAddr, mac: Mac, now: Instant) -> Vec<P> {
        if ip.is_unspecified() || mac[0] & 1 != 0 {
            return Vec::new();
        }
        let n = self.map.entry(ip).or_insert_with(|| Neighbour {
            mac: None,
            updated: now,
            asked: None,
            held: Vec::new(),
        });
        n.mac = Some(mac);
        n.updated = now;
        n.held.drain(..).map(|(p, _)| p).collect()
    }

    /// Update `ip` only if it is already in the table (a GARP for a host we
    /// talk to moves it; others are not added).
    pub fn refresh(&mut self, ip: IpAddr, mac: Mac, now: Instant) -> Vec<P> {
        if self.map.contains_key(&ip) {
            self.learn(ip, mac, now)
        } else {
            Vec::new()
        }
    }

    /// The MAC of `ip`, or hold `p` for it.
    pub fn resolve(&mut self, ip: IpAddr, p: P, now: Instant) -> Resolve<P> {
        let n = self.map.entry(ip).or_insert_with(|| Neighbour {
            mac: None,
            updated: now,
            asked: None,
            held: Vec::new(),
        });
        if let Some(mac) = n.mac {
            return Resolve::Ready(mac, p);
        }
        if n.held.len() >= Self::HOLD {
            return Resolve::Full(p);
        }
        n.held.push((p, now));
        let solicit = n
            .asked
            .is_none_or(|t| now.saturating_duration_since(t) >= Self::RESOLICIT);
        if solicit {
            n.asked = Some(now);
        }
        Resolve::Held { solicit }
    }

    /// Drop held packets older than [`Self::HOLD_FOR`] (returned, to be
    /// freed and counted), and list unresolved next hops still waiting that
    /// are due another solicitation.
    pub fn expire(&mut self, now: Instant) -> (Vec<P>, Vec<IpAddr>) {
        let mut dead = Vec::new();
        let mut again = Vec::new();
        for (ip, n) in self.map.iter_mut() {
            let mut i = 0;
            while i < n.held.len() {
                if now.saturating_duration_since(n.held[i].1) >= Self::HOLD_FOR {
                    dead.push(n.held.remove(i).0);
                } else {
                    i += 1;
                }
            }
            if n.mac.is_none()
                && !n.held.is_empty()
                && n.asked
                    .is_none_or(|t| now.saturating_duration_since(t) >= Self::RESOLICIT)
            {
                n.asked = Some(now);
                again.push(*ip);
            }
        }
        // Unresolved entries with nothing waiting are forgotten.
        self.map
            .retain(|_, n| n.mac.is_some() || !n.held.is_empty());
        (dead, again)
    }

    /// Take every held packet (shutdown).
    pub fn drain(&mut self) -> Vec<P> {
        let mut v = Vec::new();
        for n in self.map.values_mut() {
            v.extend(n.held.drain(..).map(|(p, _)| p));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINE: Mac = [0x02, 0, 0, 0, 0, 0x01];
    const PEER: Mac = [0x02, 0, 0, 0, 0, 0x02];

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn arp_request_is_answered_with_our_mac() {
        let mut f = [0u8; 64];
        let n = arp_request(&mut f, &PEER, v4("198.18.0.200"), v4("198.18.0.31"));
        let Frame::Arp(req) = classify(&f[..n], &MINE) else {
            panic!("not ARP: {:?}", classify(&f[..n], &MINE))
        };
        assert_eq!(
            (req.op, req.sha, req.spa, req.tpa),
            (1, PEER, v4("198.18.0.200"), v4("198.18.0.31"))
        );
        let mut r = [0u8; 64];
        let m = arp_reply(&mut r, &MINE, &req);
        assert_eq!(&r[0..6], &PEER, "unicast back to the asker");
        let Frame::Arp(rep) = classify(&r[..m], &PEER) else {
            panic!("reply not ARP")
        };
        assert_eq!(
            (rep.op, rep.sha, rep.spa, rep.tpa),
            (2, MINE, v4("198.18.0.31"), v4("198.18.0.200"))
        );
    }

    #[test]
    fn frames_for_other_macs_are_ignored_broadcast_is_not() {
        let mut f = [0u8; 64];
        let n = arp_frame(&mut f, &PEER, 2, &MINE, v4("1.1.1.1"), &PEER, v4("2.2.2.2"));
        assert_eq!(classify(&f[..n], &[0x02, 9, 9, 9, 9, 9]), Frame::Ignore);
        let n = garp(&mut f, &PEER, v4("198.18.0.9"));
        assert!(matches!(classify(&f[..n], &MINE), Frame::Arp(a) if a.spa == a.tpa));
        assert_eq!(classify(&f[..10], &MINE), Frame::Ignore);
        // Truncated ARP payload.
        f[12..14].copy_from_slice(&ETH_ARP.to_be_bytes());
        assert_eq!(classify(&f[..20], &MINE), Frame::Ignore);
    }

    fn verify_icmpv6(f: &[u8]) {
        let ip = &f[ETH_HDR..];
        let mut s = [0u8; 16];
        s.copy_from_slice(&ip[8..24]);
        let mut d = [0u8; 16];
        d.copy_from_slice(&ip[24..40]);
        let mut icmp = ip[40..72].to_vec();
        let stored = be16(&icmp, 2);
        icmp[2] = 0;
        icmp[3] = 0;
        assert_eq!(icmpv6_checksum(&s.into(), &d.into(), &icmp), stored);
    }

    #[test]
    fn neighbour_solicitation_is_answered_with_a_solicited_na() {
        let mut f = [0u8; 128];
        let n = ns_request(&mut f, &PEER, &v6("fd00:a::200"), &v6("fd00:a::31"));
        verify_icmpv6(&f[..n]);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0, 0, 0x31]);
        let Frame::Solicit(ns) = classify(&f[..n], &MINE) else {
            panic!("not an NS")
        };
        assert_eq!(
            (ns.src, ns.target, ns.lladdr),
            (v6("fd00:a::200"), v6("fd00:a::31"), PEER)
        );
        let mut r = [0u8; 128];
        let m = na_reply(&mut r, &MINE, &ns);
        verify_icmpv6(&r[..m]);
        assert_eq!(&r[0..6], &PEER);
        let Frame::Advert(na) = classify(&r[..m], &PEER) else {
            panic!("not an NA")
        };
        assert_eq!((na.target, na.lladdr), (v6("fd00:a::31"), MINE));
        assert_eq!(r[ETH_HDR + 40 + 4], NA_SOLICITED | NA_OVERRIDE);
    }

    #[test]
    fn nd_with_a_forwarded_hop_limit_is_not_nd() {
        let mut f = [0u8; 128];
        let n = ns_request(&mut f, &PEER, &v6("fd00:a::200"), &v6("fd00:a::31"));
        f[ETH_HDR + 7] = 64;
        assert_eq!(classify(&f[..n], &MINE), Frame::Ip);
    }

    #[test]
    fn announcements_are_garp_and_unsolicited_na() {
        let mut f = [0u8; 128];
        let n = announcement(&mut f, &MINE, "198.18.1.31".parse().unwrap());
        assert_eq!(n, ARP_FRAME_LEN);
        assert_eq!(&f[0..6], &BROADCAST);
        let Frame::Arp(a) = classify(&f[..n], &PEER) else {
            panic!()
        };
        assert_eq!(
            (a.sha, a.spa, a.tpa),
            (MINE, v4("198.18.1.31"), v4("198.18.1.31"))
        );
        let n = announcement(&mut f, &MINE, "fd00:a::31".parse().unwrap());
        verify_icmpv6(&f[..n]);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        let Frame::Advert(na) = classify(&f[..n], &PEER) else {
            panic!()
        };
        assert_eq!((na.target, na.lladdr), (v6("fd00:a::31"), MINE));
        assert_eq!(
            f[ETH_HDR + 40 + 4],
            NA_OVERRIDE,
            "unsolicited: S clear, O set"
        );
    }

    #[test]
    fn neighbour_table_holds_until_resolved_and_expires() {
        let t0 = Instant::now();
        let mut nt: NeighbourTable<u32> = NeighbourTable::default();
        let ip: IpAddr = "198.18.1.200".parse().unwrap();
        assert!(matches!(
            nt.resolve(ip, 1, t0),
            Resolve::Held { solicit: true }
        ));
        assert!(matches!(
            nt.resolve(ip, 2, t0),
            Resolve::Held { solicit: false }
        ));
        assert_eq!(nt.learn(ip, PEER, t0), vec![1, 2]);
        assert!(matches!(nt.resolve(ip, 3, t0), Resolve::Ready(m, 3) if m == PEER));
        // Unresolved: full queue, expiry, re-solicitation.
        let other: IpAddr = "fd00:c::200".parse().unwrap();
        for i in 0..NeighbourTable::<u32>::HOLD as u32 {
            assert!(matches!(nt.resolve(other, i, t0), Resolve::Held { .. }));
        }
        assert!(matches!(nt.resolve(other, 99, t0), Resolve::Full(99)));
        let (dead, again) = nt.expire(t0 + Duration::from_millis(300));
        assert!(dead.is_empty());
        assert_eq!(again, vec![other]);
        let (dead, _) = nt.expire(t0 + Duration::from_secs(2));
        assert_eq!(dead.len(), NeighbourTable::<u32>::HOLD);
        assert_eq!(nt.len(), 1, "the resolved entry stays, the empty one goes");
        // Multicast sender MACs are never learned.
        assert!(nt.learn(other, [1, 0, 0, 0, 0, 0], t0).is_empty());
        assert_eq!(nt.get(&other), None);
        assert!(nt.refresh(other, PEER, t0).is_empty());
        assert_eq!(nt.get(&other), None, "refresh does not add");
    }

    #[test]
    fn solicitation_matches_the_family() {
        let mut f = [0u8; 128];
        assert_eq!(
            solicitation(
                &mut f,
                &MINE,
                "198.18.0.31".parse().unwrap(),
                "198.18.0.1".parse().unwrap()
            ),
            Some(ARP_FRAME_LEN)
        );
        assert_eq!(
            solicitation(
                &mut f,
                &MINE,
                "198.18.0.31".parse().unwrap(),
                "fd00::1".parse().unwrap()
            ),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn classify_random_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = classify(&bytes, &MINE);
            let _ = classify(&bytes, &[bytes.first().copied().unwrap_or(0); 6]);
        }
    }

    proptest::proptest! {
        /// Whatever arrives on a DPDK port, classifying it never panics, and
        /// what it answers is built in a buffer of the usual size.
        #[test]
        fn arbitrary_frames_are_classified_without_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            prefix in proptest::num::u8::ANY,
        ) {
            let mine: Mac = [2, 0, 0, 0, 0, 1];
            // Half of the inputs start like an ARP or IPv6 frame to us, so
            // the parsers behind the EtherType are reached too.
            let mut f = bytes.clone();
            if prefix % 2 == 0 && f.len() >= 14 {
                f[..6].copy_from_slice(&mine);
                f[12..14].copy_from_slice(if prefix % 4 == 0 { &[0x08, 0x06] } else { &[0x86, 0xdd] });
            }
            let mut out = [0u8; 128];
            match classify(&f, &mine) {
                Frame::Arp(a) => { let _ = arp_reply(&mut out, &mine, &a); }
                Frame::Solicit(n) => { let _ = na_reply(&mut out, &mine, &n); }
                _ => {}
            }
        }
    }
}
