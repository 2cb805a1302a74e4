//! Announcing taken-over addresses: gratuitous ARP and unsolicited neighbour
//! advertisements, sent by our own code on raw sockets.
//!
//! For every IPv4 address two broadcast ARP frames go out on the interface
//! (an `AF_PACKET` socket): a request and a reply, both with sender = target
//! = the address and sender hardware address = our MAC (the reply's target
//! hardware address is our MAC too). For every IPv6 address an unsolicited
//! neighbour advertisement goes to ff02::1 (ICMPv6 type 136, hop limit 255,
//! override flag set, solicited flag clear, target link-layer address
//! option = our MAC).
//!
//! Peer behaviour (measured on this testbed, Linux 6.x): a peer that already
//! has a neighbour entry for the address (any state: REACHABLE, STALE,
//! DELAY) moves it to our MAC on the first such packet — GARP bypasses
//! `locktime`; the NA's override flag replaces the cached link-layer
//! address. A peer with *no* entry ignores both by default (`arp_accept=0`,
//! `accept_untracked_na=0`); it resolves the address normally when it next
//! needs it, and then only we answer (the old owner is fenced). The burst
//! is repeated on a schedule ([`Schedule`], default 0, 50, 200, 500 ms,
//! 1 s, 2 s) so a lost packet or a peer that was busy still converges.
//!
//! Needs `CAP_NET_RAW`. Sockets belong to the calling thread's namespace.

use serde::Serialize;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

const ETH_P_ARP: u16 = 0x0806;

/// When to repeat the announcement, as offsets from the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule(pub Vec<Duration>);

impl Default for Schedule {
    /// 0, 50, 200, 500 ms, 1 s, 2 s.
    fn default() -> Self {
        Schedule(
            [0u64, 50, 200, 500, 1000, 2000]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
        )
    }
}

/// Why announcing failed.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}{hint}")]
pub struct AnnounceError {
    /// What was attempted.
    pub op: String,
    /// The OS error.
    #[source]
    pub source: io::Error,
    hint: &'static str,
}

fn err(op: String, source: io::Error) -> AnnounceError {
    let hint = match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " — needs CAP_NET_RAW (run bgf as root or `setcap cap_net_admin,cap_net_raw+ep` on its binary)"
        }
        Some(libc::ENETDOWN) => " — the interface is down: bring it up",
        Some(libc::ENODEV) | Some(libc::ENXIO) => " — no such interface: check the config",
        _ => "",
    };
    AnnounceError { op, source, hint }
}

struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe {
            libc::close(self.0);
        }
    }
}

/// The gratuitous ARP payload (28 bytes, after the Ethernet header):
/// `op` 1 = request (target MAC zero), 2 = reply (target MAC = ours).
pub fn garp(op: u16, mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&op.to_be_bytes());
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip.octets());
    if op == 2 {
        p[18..24].copy_from_slice(&mac);
    }
    p[24..28].copy_from_slice(&ip.octets());
    p
}

/// The unsolicited neighbour advertisement (ICMPv6 message, 32 bytes; the
/// kernel fills the checksum).
pub fn unsolicited_na(mac: [u8; 6], target: Ipv6Addr) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = 136; // neighbour advertisement
    p[4] = 0x20; // R=0 S=0 O=1
    p[8..24].copy_from_slice(&target.octets());
    p[24] = 2; // target link-layer address
    p[25] = 1; // 8 bytes
    p[26..32].copy_from_slice(&mac);
    p
}

/// Packets sent by one round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sent {
    /// ARP frames.
    pub arp: u32,
    /// Neighbour advertisements.
    pub na: u32,
    /// Sends that failed.
    pub errors: u32,
}

/// Announces a set of addresses on one interface.
pub struct Announcer {
    ifname: String,
    ifindex: u32,
    mac: [u8; 6],
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
    arp: Option<Fd>,
    icmp6: Option<Fd>,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer")
            .field("ifname", &self.ifname)
            .field("v4", &self.v4)
            .field("v6", &self.v6)
            .finish()
    }
}

fn setopt<T>(fd: libc::c_int, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` points to a value of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            v as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Announcer {
    /// Open the raw sockets for `addrs` on `ifname` (MAC read from the
    /// interface).
    pub fn new(ifname: &str, addrs: &[IpAddr]) -> Result<Announcer, AnnounceError> {
        let ifindex = crate::netif::ifindex(ifname)
            .map_err(|e| err(format!("announce on {ifname:?}"), e.source))?;
        let mac = crate::netif::mac_address(ifname)
            .map_err(|e| err(format!("announce on {ifname:?}"), e.source))?;
        let v4: Vec<Ipv4Addr> = addrs
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(a) => Some(*a),
                _ => None,
            })
            .collect();
        let v6: Vec<Ipv6Addr> = addrs
            .iter()
            .filter_map(|a| match a {
                IpAddr::V6(a) => Some(*a),
                _ => None,
            })
            .collect();
        let arp = if v4.is_empty() {
            None
        } else {
            // SAFETY: plain socket call.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                    i32::from(ETH_P_ARP.to_be()),
                )
            };
            if fd < 0 {
                return Err(err(
                    format!("open the ARP socket on {ifname}"),
                    io::Error::last_os_error(),
                ));
            }
            Some(Fd(fd))
        };
        let icmp6 = if v6.is_empty() {
            None
        } else {
            // SAFETY: plain socket call.
            let fd = unsafe {
                libc::socket(
                    libc::AF_INET6,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::IPPROTO_ICMPV6,
                )
            };
            if fd < 0 {
                return Err(err(
                    format!("open the ICMPv6 socket on {ifname}"),
                    io::Error::last_os_error(),
                ));
            }
            let fd = Fd(fd);
            let hops: libc::c_int = 255;
            let idx = ifindex as libc::c_int;
            setopt(fd.0, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &hops)
                .and_then(|_| setopt(fd.0, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &hops))
                .and_then(|_| setopt(fd.0, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &idx))
                .map_err(|e| err(format!("configure the ICMPv6 socket on {ifname}"), e))?;
            Some(fd)
        };
        Ok(Announcer {
            ifname: ifname.to_string(),
            ifindex,
            mac,
            v4,
            v6,
            arp,
            icmp6,
        })
    }

    /// Our MAC on the interface.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Send one round: ARP request + reply per IPv4 address, one NA per
    /// IPv6 address. Failures are counted and logged, not fatal: the next
    /// round tries again.
    pub fn send_once(&self) -> Sent {
        let mut s = Sent::default();
        if let Some(fd) = &self.arp {
            // SAFETY: zeroed sockaddr_ll is valid.
            let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            to.sll_family = libc::AF_PACKET as u16;
            to.sll_protocol = ETH_P_ARP.to_be();
            to.sll_ifindex = self.ifindex as i32;
            to.sll_halen = 6;
            to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
            for ip in &self.v4 {
                for op in [1u16, 2] {
                    let p = garp(op, self.mac, *ip);
                    // SAFETY: valid buffer and address.
                    let r = unsafe {
                        libc::sendto(
                            fd.0,
                            p.as_ptr() as *const libc::c_void,
                            p.len(),
                            0,
                            &to as *const _ as *const libc::sockaddr,
                            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                        )
                    };
                    if r < 0 {
                        s.errors += 1;
                        warn!(ifname = %self.ifname, %ip, error = %io::Error::last_os_error(), "gratuitous ARP send failed");
                    } else {
                        s.arp += 1;
                    }
                }
            }
        }
        if let Some(fd) = &self.icmp6 {
            // SAFETY: zeroed sockaddr_in6 is valid.
            let mut to: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            to.sin6_family = libc::AF_INET6 as u16;
            to.sin6_addr.s6_addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
            to.sin6_scope_id = self.ifindex;
            for ip in &self.v6 {
                let p = unsolicited_na(self.mac, *ip);
                // SAFETY: valid buffer and address.
                let r = unsafe {
                    libc::sendto(
                        fd.0,
                        p.as_ptr() as *const libc::c_void,
                        p.len(),
                        0,
                        &to as *const _ as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    )
                };
                if r < 0 {
                    s.errors += 1;
                    warn!(ifname = %self.ifname, %ip, error = %io::Error::last_os_error(), "unsolicited neighbour advertisement send failed");
                } else {
                    s.na += 1;
                }
            }
        }
        debug!(ifname = %self.ifname, arp = s.arp, na = s.na, errors = s.errors, "announced");
        s
    }
}

/// Outcome of a whole schedule.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BurstReport {
    /// Rounds sent.
    pub rounds: u32,
    /// Packets, summed.
    pub sent: Sent,
}

/// Send a round on every announcer at each offset of `schedule` (from
/// `start`). `first` is called right after the first round.
pub async fn burst(
    announcers: &[Announcer],
    schedule: &Schedule,
    start: Instant,
    mut first: impl FnMut(Instant),
) -> BurstReport {
    let mut rep = BurstReport::default();
    for (i, off) in schedule.0.iter().enumerate() {
        tokio::time::sleep_until((start + *off).into()).await;
        for a in announcers {
            let s = a.send_once();
            rep.sent.arp += s.arp;
            rep.sent.na += s.na;
            rep.sent.errors += s.errors;
        }
        rep.rounds += 1;
        if i == 0 {
            first(Instant::now());
        }
    }
    rep
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x42];

    #[test]
    fn garp_request_and_reply_layout() {
        let ip: Ipv4Addr = "198.18.1.10".parse().unwrap();
        let r = garp(1, MAC, ip);
        assert_eq!(&r[6..8], &[0, 1]);
        assert_eq!(&r[8..14], &MAC);
        assert_eq!(&r[14..18], &ip.octets(), "SPA");
        assert_eq!(&r[18..24], &[0; 6], "THA zero in the request");
        assert_eq!(&r[24..28], &ip.octets(), "TPA == SPA");
        let p = garp(2, MAC, ip);
        assert_eq!(&p[6..8], &[0, 2]);
        assert_eq!(&p[18..24], &MAC, "THA = SHA in the reply");
    }

    #[test]
    fn na_layout() {
        let t: Ipv6Addr = "fd00::10".parse().unwrap();
        let p = unsolicited_na(MAC, t);
        assert_eq!(p[0], 136);
        assert_eq!(p[1], 0);
        assert_eq!(p[4] & 0xe0, 0x20, "override only");
        assert_eq!(&p[8..24], &t.octets());
        assert_eq!(&p[24..26], &[2, 1]);
        assert_eq!(&p[26..32], &MAC);
    }

    #[test]
    fn default_schedule() {
        let s = Schedule::default();
        assert_eq!(s.0.len(), 6);
        assert_eq!(s.0[5], Duration::from_secs(2));
    }
}
