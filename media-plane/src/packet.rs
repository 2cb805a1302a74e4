//! Raw IPv4/UDP and IPv6/UDP packets in byte buffers: parse, rewrite the
//! addresses and ports in place with incremental checksum fix-up (RFC 1624),
//! or build a fresh header (for IPv6↔IPv4 interworking, where the header
//! changes size). Pure functions on `&[u8]` / `&mut [u8]`.
//!
//! The kernel-socket backend does not need these (the kernel builds headers);
//! a raw-frame backend (DPDK, AF_PACKET) uses them after [`crate::forward::decide`]:
//! `parse_udp` → decide on (dst, src, payload) → `rewrite_in_place` when the
//! family stays the same, `build_udp` when it changes.

use std::net::{IpAddr, SocketAddr};

/// Why a buffer could not be parsed or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The buffer ends before the headers it announces.
    #[error("truncated packet")]
    Truncated,
    /// Not IPv4 or IPv6, not UDP, a fragment, or IPv6 extension headers.
    #[error("not a plain UDP packet")]
    NotUdp,
    /// Rewrite asked for another address family than the packet has.
    #[error("address family differs from the packet's; use build_udp")]
    FamilyMismatch,
    /// The output buffer is too small or the payload too large for UDP.
    #[error("output buffer too small or payload too large")]
    NoRoom,
}

/// Where the parts of a parsed UDP packet are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpView {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Offset of the UDP header.
    pub udp_offset: usize,
    /// Offset of the UDP payload.
    pub payload_offset: usize,
    /// Payload length (from the UDP length field).
    pub payload_len: usize,
}

/// TTL / hop limit of packets the relay emits (it is an endpoint, like a NAT).
pub const TTL: u8 = 64;
const IPV4_HDR: usize = 20;
const IPV6_HDR: usize = 40;
const UDP_HDR: usize = 8;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Parse an IPv4 or IPv6 packet carrying UDP (no fragments, no IPv6
/// extension headers).
pub fn parse_udp(b: &[u8]) -> Result<UdpView, PacketError> {
    let Some(&first) = b.first() else {
        return Err(PacketError::Truncated);
    };
    let (src_ip, dst_ip, udp_offset): (IpAddr, IpAddr, usize) = match first >> 4 {
        4 => {
            if b.len() < IPV4_HDR {
                return Err(PacketError::Truncated);
            }
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < IPV4_HDR {
                return Err(PacketError::NotUdp);
            }
            if b[9] != 17 {
                return Err(PacketError::NotUdp);
            }
            // More-fragments flag or a fragment offset: not a whole datagram.
            if be16(b, 6) & 0x3fff != 0 {
                return Err(PacketError::NotUdp);
            }
            let total = usize::from(be16(b, 2));
            if total > b.len() || total < ihl + UDP_HDR {
                return Err(PacketError::Truncated);
            }
            let s: [u8; 4] = [b[12], b[13], b[14], b[15]];
            let d: [u8; 4] = [b[16], b[17], b[18], b[19]];
            (s.into(), d.into(), ihl)
        }
        6 => {
            if b.len() < IPV6_HDR {
                return Err(PacketError::Truncated);
            }
            if b[6] != 17 {
                return Err(PacketError::NotUdp);
            }
            let plen = usize::from(be16(b, 4));
            if IPV6_HDR + plen > b.len() || plen < UDP_HDR {
                return Err(PacketError::Truncated);
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&b[8..24]);
            d.copy_from_slice(&b[24..40]);
            (s.into(), d.into(), IPV6_HDR)
        }
        _ => return Err(PacketError::NotUdp),
    };
    if b.len() < udp_offset + UDP_HDR {
        return Err(PacketError::Truncated);
    }
    let u = &b[udp_offset..];
    let ulen = usize::from(be16(u, 4));
    if ulen < UDP_HDR || ulen > u.len() {
        return Err(PacketError::Truncated);
    }
    Ok(UdpView {
        src: SocketAddr::new(src_ip, be16(u, 0)),
        dst: SocketAddr::new(dst_ip, be16(u, 2)),
        udp_offset,
        payload_offset: udp_offset + UDP_HDR,
        payload_len: ulen - UDP_HDR,
    })
}

/// One's-complement sum of `data` (big-endian 16-bit words) added to `acc`.
fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The Internet checksum of `data` (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

fn ip_bytes(ip: IpAddr) -> ([u8; 16], usize) {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            out[..4].copy_from_slice(&v4.octets());
            (out, 4)
        }
        IpAddr::V6(v6) => {
            out.copy_from_slice(&v6.octets());
            (out, 16)
        }
    }
}

/// UDP checksum over the pseudo header and `udp` (header + payload, with
/// the checksum field as it is in `udp`; set it to 0 before computing).
pub fn udp_checksum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
    let (s, sl) = ip_bytes(src);
    let (d, dl) = ip_bytes(dst);
    let mut acc = sum(0, &s[..sl]);
    acc = sum(acc, &d[..dl]);
    acc = acc.wrapping_add(17);
    acc = acc.wrapping_add(udp.len() as u32);
    let c = !fold(sum(acc, udp));
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// RFC 1624 incremental update: checksum `hc` after the 16-bit-aligned
/// field `old` became `new` (equal lengths, even).
fn incremental(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut acc = u32::from(!hc);
    let mut o = old.chunks_exact(2);
    let mut n = new.chunks_exact(2);
    for (a, b) in (&mut o).zip(&mut n) {
        acc = acc.wrapping_add(u32::from(!u16::from_be_bytes([a[0], a[1]])));
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([b[0], b[1]])));
    }
    !fold(acc)
}

/// Rewrite source and destination (addresses and ports) of the packet
/// described by `view` in place, resetting the TTL/hop limit to [`TTL`] and
/// fixing the IPv4 header and UDP checksums incrementally. `src` and `dst`
/// must have the packet's address family.
pub fn rewrite_in_place(
    b: &mut [u8],
    view: &UdpView,
    src: SocketAddr,
    dst: SocketAddr,
) -> Result<(), PacketError> {
    let v4 = view.src.is_ipv4();
    if src.is_ipv4() != v4 || dst.is_ipv4() != v4 {
        return Err(PacketError::FamilyMismatch);
    }
    if b.len() < view.payload_offset {
        return Err(PacketError::Truncated);
    }
    let u = view.udp_offset;
    let old_udp_ck = be16(b, u + 6);
    let (addr_at, alen) = if v4 { (12, 4) } else { (8, 16) };
    let mut old_addrs = [0u8; 32];
    old_addrs[..2 * alen].copy_from_slice(&b[addr_at..addr_at + 2 * alen]);
    let (s, _) = ip_bytes(src.ip());
    let (d, _) = ip_bytes(dst.ip());
    b[addr_at..addr_at + alen].copy_from_slice(&s[..alen]);
    b[addr_at + alen..addr_at + 2 * alen].copy_from_slice(&d[..alen]);
    let mut old_ports = [0u8; 4];
    old_ports.copy_from_slice(&b[u..u + 4]);
    b[u..u + 2].copy_from_slice(&src.port().to_be_bytes());
    b[u + 2..u + 4].copy_from_slice(&dst.port().to_be_bytes());
    if v4 {
        // TTL shares a 16-bit word with the protocol byte.
        let old_ttl_word = [b[8], b[9]];
        b[8] = TTL;
        let mut ck = be16(b, 10);
        ck = incremental(ck, &old_ttl_word, &[b[8], b[9]]);
        let mut new_addrs = [0u8; 8];
        new_addrs.copy_from_slice(&b[12..20]);
        ck = incremental(ck, &old_addrs[..8], &new_addrs);
        b[10..12].copy_from_slice(&ck.to_be_bytes());
    } else {
        b[7] = TTL;
    }
    // IPv4 UDP checksum 0 means "none": leave it so.
    if !(v4 && old_udp_ck == 0) {
        let mut new_addrs = [0u8; 32];
        new_addrs[..2 * alen].copy_from_slice(&b[addr_at..addr_at + 2 * alen]);
        let mut new_ports = [0u8; 4];
        new_ports.copy_from_slice(&b[u..u + 4]);
        let mut ck = incremental(old_udp_ck, &old_addrs[..2 * alen], &new_addrs[..2 * alen]);
        ck = incremental(ck, &old_ports, &new_ports);
        if ck == 0 {
            ck = 0xffff;
        }
        b[u + 6..u + 8].copy_from_slice(&ck.to_be_bytes());
    }
    Ok(())
}

/// Write a complete IPv4/UDP or IPv6/UDP packet carrying `payload` from
/// `src` to `dst` into `out` (checksums computed); returns its length.
/// Used when the address family changes between legs.
pub fn build_udp(
    out: &mut [u8],
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) -> Result<usize, PacketError> {
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(PacketError::FamilyMismatch);
    }
    let hdr = if src.is_ipv4() { IPV4_HDR } else { IPV6_HDR };
    let udp_len = UDP_HDR + payload.len();
    let total = hdr + udp_len;
    if out.len() < total || udp_len > usize::from(u16::MAX) || total > usize::from(u16::MAX) {
        return Err(PacketError::NoRoom);
    }
    let (s, sl) = ip_bytes(src.ip());
    let (d, dl) = ip_bytes(dst.ip());
    if src.is_ipv4() {
        let h = &mut out[..IPV4_HDR];
        h.fill(0);
        h[0] = 0x45;
        h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        h[6] = 0x40; // don't fragment
        h[8] = TTL;
        h[9] = 17;
        h[12..16].copy_from_slice(&s[..sl]);
        h[16..20].copy_from_slice(&d[..dl]);
        let ck = checksum(h);
        h[10..12].copy_from_slice(&ck.to_be_bytes());
    } else {
        let h = &mut out[..IPV6_HDR];
        h.fill(0);
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        h[6] = 17;
        h[7] = TTL;
        h[8..24].copy_from_slice(&s[..sl]);
        h[24..40].copy_from_slice(&d[..dl]);
    }
    let u = &mut out[hdr..total];
    u[0..2].copy_from_slice(&src.port().to_be_bytes());
    u[2..4].copy_from_slice(&dst.port().to_be_bytes());
    u[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    u[6..8].fill(0);
    u[8..].copy_from_slice(payload);
    let ck = udp_checksum(src.ip(), dst.ip(), u);
    u[6..8].copy_from_slice(&ck.to_be_bytes());
    Ok(total)
}

/// Relay one raw packet: given the verdict's `from`/`to`, rewrite `buf`
/// in place when the family is unchanged (returns `Ok(None)`), or build the
/// translated packet into `out` (returns `Ok(Some(len))`).
pub fn relay_rewrite(
    buf: &mut [u8],
    view: &UdpView,
    from: SocketAddr,
    to: SocketAddr,
    out: &mut [u8],
) -> Result<Option<usize>, PacketError> {
    if from.is_ipv4() == view.src.is_ipv4() {
        rewrite_in_place(buf, view, from, to)?;
        Ok(None)
    } else {
        let end = view.payload_offset + view.payload_len;
        let payload = buf
            .get(view.payload_offset..end)
            .ok_or(PacketError::Truncated)?;
        build_udp(out, from, to, payload).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn verify(b: &[u8]) -> UdpView {
        let v = parse_udp(b).unwrap();
        if v.src.is_ipv4() {
            assert_eq!(checksum(&b[..20]), 0, "IPv4 header checksum");
        }
        let u = &b[v.udp_offset..v.payload_offset + v.payload_len];
        // Summing a packet including its correct checksum gives 0 (or ~0).
        let mut z = u.to_vec();
        let stored = be16(&z, 6);
        z[6] = 0;
        z[7] = 0;
        assert_eq!(
            udp_checksum(v.src.ip(), v.dst.ip(), &z),
            stored,
            "UDP checksum"
        );
        v
    }

    #[test]
    fn build_parse_round_trip_v4_v6() {
        let mut buf = [0u8; 400];
        for (s, d) in [
            ("192.0.2.1:1000", "198.51.100.7:2000"),
            ("[2001:db8::1]:1000", "[2001:db8::ff]:65535"),
        ] {
            let n = build_udp(&mut buf, sa(s), sa(d), b"hello rtp!").unwrap();
            let v = verify(&buf[..n]);
            assert_eq!((v.src, v.dst), (sa(s), sa(d)));
            assert_eq!(
                &buf[v.payload_offset..v.payload_offset + v.payload_len],
                b"hello rtp!"
            );
        }
        // Odd payload length is checksummed with padding.
        let n = build_udp(&mut buf, sa("192.0.2.1:1"), sa("192.0.2.2:2"), b"abc").unwrap();
        verify(&buf[..n]);
    }

    #[test]
    fn rewrite_in_place_fixes_checksums() {
        let payload: Vec<u8> = (0..172u16).map(|i| (i * 7) as u8).collect();
        let mut buf = [0u8; 400];
        for (s, d, ns, nd) in [
            (
                "192.0.2.1:1000",
                "10.1.1.1:30000",
                "10.2.2.2:40000",
                "203.0.113.9:5004",
            ),
            (
                "10.0.0.1:65535",
                "10.0.0.2:1",
                "255.255.255.255:0",
                "0.0.0.0:65535",
            ),
            (
                "[2001:db8::1]:1000",
                "[fd00::1]:30000",
                "[fd00::2]:40000",
                "[2001:db8:1::9]:5004",
            ),
        ] {
            let n = build_udp(&mut buf, sa(s), sa(d), &payload).unwrap();
            let mut p = buf[..n].to_vec();
            let v = parse_udp(&p).unwrap();
            rewrite_in_place(&mut p, &v, sa(ns), sa(nd)).unwrap();
            let v2 = verify(&p);
            assert_eq!((v2.src, v2.dst), (sa(ns), sa(nd)));
            assert_eq!(&p[v2.payload_offset..], &payload[..]);
            // Same as building from scratch.
            let m = build_udp(&mut buf, sa(ns), sa(nd), &payload).unwrap();
            assert_eq!(&p[v.udp_offset..], &buf[v.udp_offset..m]);
        }
    }

    #[test]
    fn ipv4_zero_udp_checksum_stays_zero() {
        let mut buf = [0u8; 100];
        let n = build_udp(&mut buf, sa("192.0.2.1:1"), sa("192.0.2.2:2"), b"xyz0").unwrap();
        buf[26] = 0;
        buf[27] = 0;
        let mut p = buf[..n].to_vec();
        let v = parse_udp(&p).unwrap();
        rewrite_in_place(&mut p, &v, sa("10.0.0.1:5"), sa("10.0.0.2:6")).unwrap();
        assert_eq!(&p[26..28], &[0, 0]);
        assert_eq!(checksum(&p[..20]), 0);
    }

    #[test]
    fn relay_translates_v6_to_v4() {
        let mut buf = [0u8; 400];
        let n = build_udp(
            &mut buf,
            sa("[2001:db8::99]:4000"),
            sa("[2001:db8::1]:30000"),
            b"media",
        )
        .unwrap();
        let mut p = buf[..n].to_vec();
        let v = parse_udp(&p).unwrap();
        let mut out = [0u8; 400];
        let m = relay_rewrite(
            &mut p,
            &v,
            sa("10.0.0.1:40000"),
            sa("10.0.0.9:5000"),
            &mut out,
        )
        .unwrap()
        .unwrap();
        let v2 = verify(&out[..m]);
        assert_eq!(
            (v2.src, v2.dst),
            (sa("10.0.0.1:40000"), sa("10.0.0.9:5000"))
        );
        assert_eq!(&out[v2.payload_offset..m], b"media");
        assert_eq!(
            rewrite_in_place(&mut p, &v, sa("10.0.0.1:1"), sa("10.0.0.2:2")),
            Err(PacketError::FamilyMismatch)
        );
    }

    #[test]
    fn parse_rejects_garbage() {
        assert_eq!(parse_udp(&[]), Err(PacketError::Truncated));
        assert_eq!(parse_udp(&[0x45; 10]), Err(PacketError::Truncated));
        let mut buf = [0u8; 100];
        let n = build_udp(&mut buf, sa("192.0.2.1:1"), sa("192.0.2.2:2"), b"x").unwrap();
        let mut p = buf[..n].to_vec();
        p[9] = 6; // TCP
        assert_eq!(parse_udp(&p), Err(PacketError::NotUdp));
        let mut p = buf[..n].to_vec();
        p[6] = 0x20; // more fragments
        assert_eq!(parse_udp(&p), Err(PacketError::NotUdp));
        assert_eq!(parse_udp(&buf[..n - 1]), Err(PacketError::Truncated));
    }

    proptest::proptest! {
        #[test]
        fn parse_random_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            if let Ok(v) = parse_udp(&bytes) {
                let mut b = bytes.clone();
                let (s, d) = if v.src.is_ipv4() {
                    (sa("10.0.0.1:1"), sa("10.0.0.2:2"))
                } else {
                    (sa("[fd00::1]:1"), sa("[fd00::2]:2"))
                };
                let mut out = [0u8; 200];
                let _ = relay_rewrite(&mut b, &v, s, d, &mut out);
            }
        }
    }
}
