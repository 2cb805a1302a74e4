//! The host's interface addresses (getifaddrs): which addresses are local,
//! and which interface carries an address or its subnet. Used by the
//! standby's pre-install (is a service address already here?) and by the
//! XDP media backend (which interfaces to attach to).

use std::net::IpAddr;

/// One configured address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfAddr {
    /// Interface name.
    pub name: String,
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
}

fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: a non-null sockaddr from getifaddrs; its family says its type.
    match i32::from(unsafe { (*sa).sa_family }) {
        libc::AF_INET => {
            // SAFETY: AF_INET: a sockaddr_in.
            let sin = unsafe { &*(sa as *const libc::sockaddr_in) };
            Some(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()))
        }
        libc::AF_INET6 => {
            // SAFETY: AF_INET6: a sockaddr_in6.
            let sin6 = unsafe { &*(sa as *const libc::sockaddr_in6) };
            Some(IpAddr::from(sin6.sin6_addr.s6_addr))
        }
        _ => None,
    }
}

fn prefix_of(mask: Option<IpAddr>) -> u8 {
    match mask {
        Some(IpAddr::V4(m)) => u32::from(m).count_ones() as u8,
        Some(IpAddr::V6(m)) => u128::from(m).count_ones() as u8,
        None => 0,
    }
}

/// Every address configured in the calling thread's network namespace;
/// `None` if the interfaces cannot be listed.
pub fn list() -> Option<Vec<IfAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if let Some(addr) = sockaddr_ip(ifa.ifa_addr) {
            // SAFETY: ifa_name is a C string owned by the list.
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
                .to_string_lossy()
                .into_owned();
            out.push(IfAddr {
                name,
                addr,
                prefix: prefix_of(sockaddr_ip(ifa.ifa_netmask)),
            });
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: freeing the list getifaddrs allocated.
    unsafe { libc::freeifaddrs(head) };
    Some(out)
}

/// Whether `ip` is configured on an interface of this host (network
/// namespace). A test bind would not do: with `ip_nonlocal_bind` it
/// succeeds for any address. Loopback addresses count as local (all of
/// 127.0.0.0/8 is, without being listed). `None` if the interfaces cannot
/// be listed.
pub fn is_local(ip: IpAddr) -> Option<bool> {
    if ip.is_loopback() {
        return Some(true);
    }
    Some(list()?.iter().any(|a| a.addr == ip))
}

fn in_subnet(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            u32::from(n) & m == u32::from(i) & m
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            u128::from(n) & m == u128::from(i) & m
        }
        _ => false,
    }
}

/// The interface that carries `ip`, else the one with an address on
/// `ip`'s subnet (a standby whose own address shares the LAN of the
/// service address it will take over). Loopback is never chosen for a
/// non-loopback address.
pub fn interface_for(addrs: &[IfAddr], ip: IpAddr) -> Option<String> {
    if let Some(a) = addrs.iter().find(|a| a.addr == ip) {
        return Some(a.name.clone());
    }
    addrs
        .iter()
        .filter(|a| !a.addr.is_loopback() && a.prefix > 0 && in_subnet(a.addr, a.prefix, ip))
        .max_by_key(|a| a.prefix)
        .map(|a| a.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(name: &str, addr: &str, prefix: u8) -> IfAddr {
        IfAddr {
            name: name.into(),
            addr: addr.parse().unwrap(),
            prefix,
        }
    }

    #[test]
    fn loopback_is_local_and_a_test_range_address_is_not() {
        assert_eq!(is_local("127.0.0.5".parse().unwrap()), Some(true));
        assert_eq!(is_local("198.19.254.77".parse().unwrap()), Some(false));
        assert_eq!(is_local("fd00:dead:beef::77".parse().unwrap()), Some(false));
    }

    #[test]
    fn interface_by_address_then_by_longest_subnet() {
        let l = [
            a("lo", "127.0.0.1", 8),
            a("acc", "198.18.0.5", 24),
            a("acc", "fd00:a::5", 64),
            a("wide", "198.18.0.9", 16),
            a("cor", "198.18.1.5", 24),
        ];
        let f = |ip: &str| interface_for(&l, ip.parse().unwrap());
        assert_eq!(f("198.18.1.5").as_deref(), Some("cor"));
        assert_eq!(f("198.18.0.77").as_deref(), Some("acc"), "longest prefix");
        assert_eq!(f("fd00:a::41").as_deref(), Some("acc"));
        assert_eq!(f("198.18.7.1").as_deref(), Some("wide"));
        assert_eq!(f("203.0.113.1"), None);
        assert_eq!(f("fd00:b::1"), None);
    }
}
