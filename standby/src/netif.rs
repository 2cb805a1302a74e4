//! Service addresses on the standby's interfaces, through rtnetlink.
//!
//! [`add_address`] / [`remove_address`] send one `RTM_NEWADDR` /
//! `RTM_DELADDR` request on a `NETLINK_ROUTE` socket and wait for the
//! kernel's acknowledgement — no `ip` process in the takeover path. IPv6
//! addresses are added with `IFA_F_NODAD`: duplicate address detection would
//! keep a fresh address tentative (unusable) for about a second, and the
//! address is *supposed* to be taken over from a dead owner. Both are
//! idempotent ([`AddrChange::Unchanged`] when there is nothing to do).
//!
//! The netlink socket lives in the network namespace of the calling thread.
//! Needs `CAP_NET_ADMIN`; errors say so.

use serde::Serialize;
use std::io;
use std::net::IpAddr;

const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;

/// An address with its prefix length on an interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IfAddr {
    /// Interface name (resolved to its index at use).
    pub ifname: String,
    /// The address.
    pub addr: IpAddr,
    /// Prefix length (e.g. 24, or 32 / 128 for a host address on an
    /// interface that already has one in the subnet).
    pub prefix_len: u8,
}

/// What an add/remove did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddrChange {
    /// The address was added / removed.
    Changed,
    /// Already present (add) / already absent (remove).
    Unchanged,
}

/// A failed interface operation; the message says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}{hint}")]
pub struct NetifError {
    /// What was attempted.
    pub op: String,
    /// The OS error.
    #[source]
    pub source: io::Error,
    hint: String,
}

fn err(op: String, source: io::Error) -> NetifError {
    let hint = match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " — needs CAP_NET_ADMIN (run bgf as root or `setcap cap_net_admin,cap_net_raw+ep` on its binary)"
        }
        Some(libc::ENODEV) => " — no such interface: check the interface name in the config",
        Some(libc::EINVAL) => " — invalid address or prefix length",
        Some(libc::EAFNOSUPPORT) => " — the address family is disabled on this host/interface (IPv6 disabled?)",
        _ => "",
    };
    NetifError {
        op,
        source,
        hint: hint.to_string(),
    }
}

/// The index of interface `name` (in the calling thread's namespace).
pub fn ifindex(name: &str) -> Result<u32, NetifError> {
    let c = std::ffi::CString::new(name).map_err(|_| {
        err(
            format!("look up interface {name:?}"),
            io::Error::from_raw_os_error(libc::EINVAL),
        )
    })?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(err(
            format!("look up interface {name:?}"),
            io::Error::from_raw_os_error(libc::ENODEV),
        ));
    }
    Ok(i)
}

/// The Ethernet address of interface `name`.
pub fn mac_address(name: &str) -> Result<[u8; 6], NetifError> {
    let op = || format!("read the MAC address of {name:?}");
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(err(op(), io::Error::from_raw_os_error(libc::ENODEV)));
    }
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err(op(), io::Error::last_os_error()));
    }
    let fd = Fd(fd);
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads ifr_name and fills ifr_hwaddr.
    let r = unsafe { libc::ioctl(fd.0, libc::SIOCGIFHWADDR, &mut req) };
    if r < 0 {
        return Err(err(op(), io::Error::last_os_error()));
    }
    // SAFETY: the union member written by SIOCGIFHWADDR.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(mac)
}

/// Add `a` (IPv6: without DAD). Already present → `Unchanged`.
pub fn add_address(a: &IfAddr) -> Result<AddrChange, NetifError> {
    let idx = ifindex(&a.ifname)?;
    let op = format!(
        "add {}/{} to {} (ifindex {idx})",
        a.addr, a.prefix_len, a.ifname
    );
    match request(
        RTM_NEWADDR,
        NLM_F_CREATE | NLM_F_EXCL,
        idx,
        a.addr,
        a.prefix_len,
    ) {
        Ok(()) => Ok(AddrChange::Changed),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(AddrChange::Unchanged),
        Err(e) => Err(err(op, e)),
    }
}

/// Remove `a`. Absent → `Unchanged`.
pub fn remove_address(a: &IfAddr) -> Result<AddrChange, NetifError> {
    let idx = ifindex(&a.ifname)?;
    let op = format!(
        "remove {}/{} from {} (ifindex {idx})",
        a.addr, a.prefix_len, a.ifname
    );
    match request(RTM_DELADDR, 0, idx, a.addr, a.prefix_len) {
        Ok(()) => Ok(AddrChange::Changed),
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(AddrChange::Unchanged),
        Err(e) => Err(err(op, e)),
    }
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

fn push_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// Build an address request message (exposed to the unit tests).
fn build(ty: u16, extra_flags: u16, idx: u32, addr: IpAddr, prefix: u8, seq: u32) -> Vec<u8> {
    let mut m = vec![0u8; 16];
    let (family, bytes): (u8, Vec<u8>) = match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    // ifaddrmsg
    m.push(family);
    m.push(prefix);
    m.push(0); // flags (the 8-bit field; IFA_FLAGS carries the full set)
    m.push(0); // RT_SCOPE_UNIVERSE
    m.extend_from_slice(&idx.to_ne_bytes());
    push_attr(&mut m, IFA_LOCAL, &bytes);
    push_attr(&mut m, IFA_ADDRESS, &bytes);
    if addr.is_ipv6() && ty == RTM_NEWADDR {
        push_attr(&mut m, IFA_FLAGS, &IFA_F_NODAD.to_ne_bytes());
    }
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&ty.to_ne_bytes());
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | extra_flags).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m
}

fn request(ty: u16, extra_flags: u16, idx: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: plain socket call.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = Fd(fd);
    let tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: valid option value of the right size.
    unsafe {
        libc::setsockopt(
            fd.0,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    let seq = 1u32;
    let msg = build(ty, extra_flags, idx, addr, prefix, seq);
    // SAFETY: sockaddr_nl zeroed is valid; pid 0 = the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: msg and kernel are valid for the given lengths.
    let n = unsafe {
        libc::sendto(
            fd.0,
            msg.as_ptr() as *const libc::c_void,
            msg.len(),
            0,
            &kernel as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd.0, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let data = &buf[..n as usize];
        let mut at = 0usize;
        while at + 16 <= data.len() {
            let len =
                u32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
            let mty = u16::from_ne_bytes([data[at + 4], data[at + 5]]);
            let mseq =
                u32::from_ne_bytes([data[at + 8], data[at + 9], data[at + 10], data[at + 11]]);
            if len < 16 || at + len > data.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed netlink reply",
                ));
            }
            if mty == NLMSG_ERROR && mseq == seq && len >= 20 {
                let code = i32::from_ne_bytes([
                    data[at + 16],
                    data[at + 17],
                    data[at + 18],
                    data[at + 19],
                ]);
                return if code == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-code))
                };
            }
            at += (len + 3) & !3;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let m = build(
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_EXCL,
            7,
            "fd00::10".parse().unwrap(),
            64,
            1,
        );
        // header 16 + ifaddrmsg 8 + 2 × (4 + 16) + (4 + 4)
        assert_eq!(m.len(), 16 + 8 + 40 + 8);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(m[16], libc::AF_INET6 as u8);
        assert_eq!(m[17], 64);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 7);
        let v4 = build(RTM_DELADDR, 0, 3, "198.18.1.10".parse().unwrap(), 24, 1);
        assert_eq!(v4.len(), 16 + 8 + 8 + 8, "no IFA_FLAGS on IPv4 / delete");
    }

    #[test]
    fn missing_interface_says_so() {
        let e = add_address(&IfAddr {
            ifname: "nonexistent0".into(),
            addr: "198.18.9.9".parse().unwrap(),
            prefix_len: 32,
        })
        .unwrap_err();
        assert!(e.to_string().contains("check the interface name"), "{e}");
    }
}
