//! The few system calls the XDP backend makes itself: batch reads of a
//! per-CPU array (aya reads one element per call), raw IP sockets for the
//! packets user space sends, an interface's index and MAC, and the identity
//! of the calling thread's network namespace.

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// `bpf_attr` for `BPF_PROG_TEST_RUN`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// The struct's tail padding, explicit: the kernel rejects non-zero
    /// bytes past the last field (EINVAL).
    pad: u32,
}

/// `struct xdp_md` as a test run's context.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// Run the XDP program `prog_fd` once on `frame` as if it arrived on
/// `ifindex` (of the calling thread's namespace), without sending anything:
/// the verdict (`XDP_*`) and the frame as the program left it.
pub fn test_run(prog_fd: RawFd, frame: &[u8], ifindex: u32) -> io::Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex: ifindex,
        ..XdpMd::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_in: &mut ctx as *mut XdpMd as u64,
        ..TestRunAttr::default()
    };
    // SAFETY: bpf(2) with an attr pointing to live buffers of the sizes given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            size_of::<TestRunAttr>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    out.truncate(attr.data_size_out as usize);
    Ok((attr.retval, out))
}

/// `bpf_attr` for the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Read every element of the array map `fd` (keys `0..len`) whose value is
/// `value_size` bytes per CPU over `ncpus` CPUs, `chunk` keys per system
/// call, calling `f(key, values_of_all_cpus)` for each.
pub fn read_percpu_array(
    fd: RawFd,
    len: u32,
    value_size: usize,
    ncpus: usize,
    chunk: u32,
    mut f: impl FnMut(u32, &[u8]),
) -> io::Result<()> {
    let stride = value_size.div_ceil(8) * 8 * ncpus;
    let chunk = chunk.clamp(1, len.max(1));
    let mut keys = vec![0u32; chunk as usize];
    let mut values = vec![0u8; stride * chunk as usize];
    let mut token: u32 = 0;
    let mut first = true;
    loop {
        let mut out_token: u32 = 0;
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &token as *const u32 as u64
            },
            out_batch: &mut out_token as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: bpf(2) with an attr whose pointers reference live buffers
        // of `chunk` keys and `chunk * stride` value bytes.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>() as u32,
            )
        };
        let done = if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(e);
            }
            true
        } else {
            false
        };
        for i in 0..(attr.count as usize).min(keys.len()) {
            f(keys[i], &values[i * stride..(i + 1) * stride]);
        }
        if done || attr.count == 0 {
            return Ok(());
        }
        token = out_token;
        first = false;
    }
}

/// A raw IP socket of `addr`'s family that sends whole IP packets
/// (`IPPROTO_RAW`: the header is ours).
pub fn raw_socket(v4: bool) -> io::Result<OwnedFd> {
    let fam = if v4 { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe {
        libc::socket(
            fam,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Send the IP packet `pkt` (headers included) towards `to`.
pub fn send_raw(fd: &OwnedFd, pkt: &[u8], to: SocketAddr) -> io::Result<()> {
    // SAFETY: zeroed sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // The port of a raw socket's destination must be 0.
    let len = crate::kernel::to_sockaddr(&SocketAddr::new(to.ip(), 0), &mut ss);
    // SAFETY: pkt and ss are live for the call.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            pkt.as_ptr() as *const libc::c_void,
            pkt.len(),
            0,
            &ss as *const _ as *const libc::sockaddr,
            len,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The index and MAC of interface `name` in the calling thread's namespace.
pub fn interface(name: &str) -> io::Result<(u32, [u8; 6])> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: a valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface named {name:?} in this network namespace"),
        ));
    }
    // SAFETY: socket(2) with constant arguments.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: zeroed ifreq is valid; the name fits (checked below).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (d, b) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills req.ifr_ifru.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFHWADDR the union holds ifru_hwaddr.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok((idx, mac))
}

/// The inode of the calling thread's network namespace (planes of one
/// namespace share a program; other namespaces have their own).
pub fn netns_id() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock of `bpf_ktime_get_*`).
pub fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime writes the struct.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
