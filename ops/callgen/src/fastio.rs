//! The batched media path (needs CAP_NET_RAW): every call's RTP leaves
//! through **one socket**, up to [`MAX_BATCH`](crate::engine::MAX_BATCH)
//! packets per `sendmmsg`, each with the IP/UDP header built here (source
//! port = the call's SDP port) on a raw IP socket (`IPPROTO_RAW`: routed by
//! the kernel, any interface; an `AF_PACKET` socket on `lo` was tried and
//! does not work for 127/8: packets injected below IP carry no route, and
//! the input route lookup drops loopback addresses as martians unless
//! `route_localnet` is set) — and every call's RTP/RTCP arrives through
//! **one `AF_PACKET` TPACKET_V3 receive ring** whose classic-BPF filter takes
//! the UDP packets addressed to this side's media IP and port range. The
//! kernel fills the ring in blocks and stamps each packet, so callgen reads
//! hundreds of packets per wake-up without a syscall per packet.
//!
//! The per-call UDP sockets stay bound (they reserve the ports, keep the
//! kernel from answering ICMP port-unreachable, and still send RTCP), but a
//! one-instruction "drop everything" socket filter keeps anything from being
//! queued on them: the kernel discards their copy right after the socket
//! lookup (counted as UDP `InErrors` of the namespace) and nobody is woken.
//!
//! Not here: the schedule, the accounting (engine.rs, rtp.rs), the
//! unprivileged per-socket path (engine.rs).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

const SOL_PACKET: i32 = 263;
const PACKET_VERSION: i32 = 10;
const PACKET_RX_RING: i32 = 5;
const PACKET_STATISTICS: i32 = 6;
const TPACKET_V3: i32 = 2;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_KERNEL: u32 = 0;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const SO_ATTACH_FILTER: i32 = 26;
/// Bytes of each received packet the ring keeps: IP (with options) + UDP +
/// RTP header; the payload is never looked at.
const RX_SNAPLEN: u32 = 60 + 8 + 12 + 16;

/// Ring geometry: 1024 blocks of 32 KiB (32 MiB); a block is handed to
/// callgen when full (~190 packets: each takes ~170 bytes with the
/// truncated copy) or 2 ms after its first packet. At 100 000 packets/s into
/// one side that is ~1.9 s of slack for a stalled callgen before the kernel
/// drops (counted in `rx_ring_drops`), and at low rates ≥ 2 s.
const BLOCK_SIZE: u32 = 32 * 1024;
const BLOCK_NR: u32 = 1024;
const FRAME_SIZE: u32 = 2048;
const RETIRE_TOV_MS: u32 = 2;

#[repr(C)]
struct TpacketReq3 {
    tp_block_size: u32,
    tp_block_nr: u32,
    tp_frame_size: u32,
    tp_frame_nr: u32,
    tp_retire_blk_tov: u32,
    tp_sizeof_priv: u32,
    tp_feature_req_word: u32,
}

#[repr(C)]
#[derive(Default)]
struct TpacketStatsV3 {
    tp_packets: u32,
    tp_drops: u32,
    tp_freeze_q_cnt: u32,
}

fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

// Classic BPF opcodes.
const LD_W_ABS: u16 = 0x20;
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_H_IND: u16 = 0x48;
const LDX_B_MSH: u16 = 0xb1;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JGT_K: u16 = 0x25;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

/// The ring's filter (offsets from the IP header: SOCK_DGRAM packet socket):
/// UDP, not a non-first fragment (IPv4), destination = `ip`, destination
/// port in `lo..=hi`. IPv6 only without extension headers (RTP never has them).
fn ring_filter(ip: IpAddr, lo: u16, hi: u16) -> Vec<libc::sock_filter> {
    let (lo, hi) = (u32::from(lo), u32::from(hi));
    match ip {
        IpAddr::V4(a) => {
            let ip = u32::from_be_bytes(a.octets());
            // 0 ldb [9]; 1 jeq 17; 2 ld [16]; 3 jeq ip; 4 ldh [6]; 5 jset 0x1fff;
            // 6 ldxb msh; 7 ldh [x+2]; 8 jge lo; 9 jgt hi; 10 accept; 11 drop
            vec![
                bpf(LD_B_ABS, 0, 0, 9),
                bpf(JEQ_K, 0, 9, 17),
                bpf(LD_W_ABS, 0, 0, 16),
                bpf(JEQ_K, 0, 7, ip),
                bpf(LD_H_ABS, 0, 0, 6),
                bpf(JSET_K, 5, 0, 0x1fff),
                bpf(LDX_B_MSH, 0, 0, 0),
                bpf(LD_H_IND, 0, 0, 2),
                bpf(JGE_K, 0, 2, lo),
                bpf(JGT_K, 1, 0, hi),
                bpf(RET_K, 0, 0, RX_SNAPLEN),
                bpf(RET_K, 0, 0, 0),
            ]
        }
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            // 0 ldb [6]; 1 jeq 17; 2..9 dst words; 10 ldh [42]; 11 jge; 12 jgt;
            // 13 accept; 14 drop
            vec![
                bpf(LD_B_ABS, 0, 0, 6),
                bpf(JEQ_K, 0, 12, 17),
                bpf(LD_W_ABS, 0, 0, 24),
                bpf(JEQ_K, 0, 10, w(0)),
                bpf(LD_W_ABS, 0, 0, 28),
                bpf(JEQ_K, 0, 8, w(4)),
                bpf(LD_W_ABS, 0, 0, 32),
                bpf(JEQ_K, 0, 6, w(8)),
                bpf(LD_W_ABS, 0, 0, 36),
                bpf(JEQ_K, 0, 4, w(12)),
                bpf(LD_H_ABS, 0, 0, 42),
                bpf(JGE_K, 0, 2, lo),
                bpf(JGT_K, 1, 0, hi),
                bpf(RET_K, 0, 0, RX_SNAPLEN),
                bpf(RET_K, 0, 0, 0),
            ]
        }
    }
}

fn attach_filter(fd: RawFd, prog: &[libc::sock_filter]) -> std::io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points at `prog`, alive for the call; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_ATTACH_FILTER,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes a UDP socket discard everything it receives before it is queued
/// (the ring sees the packet instead).
pub fn drop_all(fd: RawFd) -> std::io::Result<()> {
    attach_filter(fd, &[bpf(RET_K, 0, 0, 0)])
}

fn setopt<T>(fd: RawFd, level: i32, opt: i32, v: &T) -> std::io::Result<()> {
    // SAFETY: v is a valid T for the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            v as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One packet read from the ring.
pub struct RxPacket<'a> {
    /// Destination UDP port.
    pub port: u16,
    /// UDP payload.
    pub payload: &'a [u8],
    /// The kernel's receive stamp (CLOCK_REALTIME ns).
    pub stamp_rt_ns: i128,
}

/// A TPACKET_V3 receive ring for one side's media address and port range.
pub struct Ring {
    fd: RawFd,
    map: *mut u8,
    map_len: usize,
    next_block: u32,
    /// Packets the kernel could not put in the ring (ring full), so far.
    pub drops: u64,
}

impl Ring {
    /// Opens the ring (needs CAP_NET_RAW) for UDP to `ip`, ports `lo..=hi`.
    pub fn open(ip: IpAddr, lo: u16, hi: u16) -> std::io::Result<Ring> {
        let proto = if ip.is_ipv4() { ETH_P_IP } else { ETH_P_IPV6 };
        // Protocol 0 first: nothing is queued before the filter is attached.
        // SAFETY: plain syscall.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut ring = Ring {
            fd,
            map: std::ptr::null_mut(),
            map_len: 0,
            next_block: 0,
            drops: 0,
        };
        attach_filter(fd, &ring_filter(ip, lo, hi))?;
        setopt(fd, SOL_PACKET, PACKET_VERSION, &TPACKET_V3)?;
        let req = TpacketReq3 {
            tp_block_size: BLOCK_SIZE,
            tp_block_nr: BLOCK_NR,
            tp_frame_size: FRAME_SIZE,
            tp_frame_nr: BLOCK_SIZE / FRAME_SIZE * BLOCK_NR,
            tp_retire_blk_tov: RETIRE_TOV_MS,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setopt(fd, SOL_PACKET, PACKET_RX_RING, &req)?;
        let len = (BLOCK_SIZE * BLOCK_NR) as usize;
        // SAFETY: mapping the ring the kernel just allocated for fd.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_LOCKED,
                fd,
                0,
            )
        };
        let map = if map == libc::MAP_FAILED {
            // MAP_LOCKED can fail on a low RLIMIT_MEMLOCK; unlocked is fine.
            // SAFETY: as above.
            let m = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            if m == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            m
        } else {
            map
        };
        ring.map = map as *mut u8;
        ring.map_len = len;
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto.to_be();
        sll.sll_ifindex = 0; // every interface of the namespace
                             // SAFETY: sll is a valid sockaddr_ll.
        let r = unsafe {
            libc::bind(
                fd,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(ring)
    }

    /// The fd to wait on (readable when a block is ready).
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    fn block(&self, i: u32) -> *mut u8 {
        // SAFETY: i < BLOCK_NR, inside the mapping.
        unsafe { self.map.add((i * BLOCK_SIZE) as usize) }
    }

    fn block_status(&self, i: u32) -> &AtomicU32 {
        // SAFETY: block_status is the u32 at offset 8 of tpacket_block_desc,
        // 4-aligned, shared with the kernel (hence atomic access).
        unsafe { &*(self.block(i).add(8) as *const AtomicU32) }
    }

    /// Hands every packet of the ready blocks to `f`, returns the blocks to
    /// the kernel; returns how many packets were read. At most `max_blocks`
    /// blocks per call (the caller's loop comes back for the rest).
    pub fn drain(&mut self, max_blocks: u32, mut f: impl FnMut(RxPacket<'_>)) -> usize {
        let mut n = 0;
        for _ in 0..max_blocks {
            let b = self.next_block;
            let st = self.block_status(b);
            if st.load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                break;
            }
            let base = self.block(b);
            let rd = |off: usize| -> u32 {
                // SAFETY: off is inside this block (checked by the callers below).
                unsafe { std::ptr::read_unaligned(base.add(off) as *const u32) }
            };
            let num = rd(12);
            let mut off = rd(16) as usize;
            for _ in 0..num {
                if off + 32 > BLOCK_SIZE as usize {
                    break;
                }
                let next = rd(off) as usize;
                let sec = rd(off + 4);
                let nsec = rd(off + 8);
                let snap = rd(off + 12) as usize;
                // SAFETY: tp_net is a u16 at offset 26 of tpacket3_hdr.
                let net =
                    unsafe { std::ptr::read_unaligned(base.add(off + 26) as *const u16) } as usize;
                if off + net + snap <= BLOCK_SIZE as usize {
                    // SAFETY: bounds checked against the block just above.
                    let pkt = unsafe { std::slice::from_raw_parts(base.add(off + net), snap) };
                    if let Some((port, payload)) = udp_of(pkt) {
                        n += 1;
                        f(RxPacket {
                            port,
                            payload,
                            stamp_rt_ns: i128::from(sec) * 1_000_000_000 + i128::from(nsec),
                        });
                    }
                }
                if next == 0 {
                    break;
                }
                off += next;
            }
            st.store(TP_STATUS_KERNEL, Ordering::Release);
            self.next_block = (b + 1) % BLOCK_NR;
        }
        n
    }

    /// Reads (and resets) the kernel's drop counter into [`drops`](Self::drops).
    pub fn update_drops(&mut self) {
        let mut s = TpacketStatsV3::default();
        let mut len = std::mem::size_of::<TpacketStatsV3>() as u32;
        // SAFETY: s is a valid out-buffer of len bytes.
        let r = unsafe {
            libc::getsockopt(
                self.fd,
                SOL_PACKET,
                PACKET_STATISTICS,
                &mut s as *mut TpacketStatsV3 as *mut libc::c_void,
                &mut len,
            )
        };
        if r == 0 {
            self.drops += u64::from(s.tp_drops);
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: we own the mapping and the fd.
        unsafe {
            if !self.map.is_null() {
                libc::munmap(self.map as *mut libc::c_void, self.map_len);
            }
            libc::close(self.fd);
        }
    }
}

/// (destination port, UDP payload) of an IPv4/IPv6 UDP packet.
fn udp_of(p: &[u8]) -> Option<(u16, &[u8])> {
    let v = p.first()? >> 4;
    let l4 = match v {
        4 => usize::from(p[0] & 0x0f) * 4,
        6 => 40,
        _ => return None,
    };
    let udp = p.get(l4..l4 + 8)?;
    let port = u16::from_be_bytes([udp[2], udp[3]]);
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    let end = (l4 + ulen.max(8)).min(p.len());
    Some((port, &p[l4 + 8..end]))
}

/// Header room per packet: IPv6 40 + UDP 8 + RTP 12.
const HDR_MAX: usize = 60;

/// Batched sender for every call's RTP: one socket, `sendmmsg` batches.
pub struct RawTx {
    fd: RawFd,
    v6: bool,
    src: IpAddr,
    hdrs: Vec<[u8; HDR_MAX]>,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// Caller's tag per queued packet (the stream index).
    pub tags: Vec<u32>,
    payload: Vec<u8>,
    payload_sum: u32,
    cap: usize,
}

impl RawTx {
    /// A sender from `src` (needs CAP_NET_RAW); `payload` is the constant
    /// RTP payload, at most `cap` packets per batch.
    pub fn open(src: IpAddr, payload: Vec<u8>, cap: usize) -> std::io::Result<RawTx> {
        let v6 = src.is_ipv6();
        // IPPROTO_RAW implies IP_HDRINCL / IPV6_HDRINCL.
        // SAFETY: plain syscall.
        let fd = unsafe {
            libc::socket(
                if v6 { libc::AF_INET6 } else { libc::AF_INET },
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::IPPROTO_RAW,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let tx = RawTx {
            fd,
            v6,
            src,
            hdrs: vec![[0u8; HDR_MAX]; cap],
            // SAFETY: zeroed sockaddr_storage is valid.
            names: vec![unsafe { std::mem::zeroed() }; cap],
            iovs: Vec::with_capacity(cap * 2),
            msgs: Vec::with_capacity(cap),
            tags: Vec::with_capacity(cap),
            payload_sum: sum16(&payload, 0),
            payload,
            cap,
        };
        let big: i32 = 4 << 20;
        let _ = setopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &big)
            .or_else(|_| setopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, &big));
        Ok(tx)
    }

    /// Whether the batch is full.
    pub fn full(&self) -> bool {
        self.tags.len() >= self.cap
    }

    fn hdr_len(&self) -> usize {
        if self.v6 {
            60
        } else {
            40
        }
    }

    /// Queues one RTP packet (`rtp_hdr` = its 12-byte header) from
    /// `sport` to `dest`; false if the address family does not match or the
    /// batch is full.
    pub fn push(&mut self, tag: u32, sport: u16, dest: SocketAddr, rtp_hdr: &[u8; 12]) -> bool {
        if self.full() {
            return false;
        }
        let i = self.tags.len();
        let plen = self.payload.len();
        let ulen = 8 + 12 + plen;
        let h = &mut self.hdrs[i];
        let name = &mut self.names[i];
        match (self.src, dest) {
            (IpAddr::V4(s), SocketAddr::V4(d)) => {
                let tot = (20 + ulen) as u16;
                h[0] = 0x45;
                h[1] = 0;
                h[2..4].copy_from_slice(&tot.to_be_bytes());
                h[4..6].fill(0); // id (DF set, no fragments)
                h[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
                h[8] = 64;
                h[9] = 17;
                h[10..12].fill(0); // the kernel fills the header checksum
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.ip().octets());
                h[20..22].copy_from_slice(&sport.to_be_bytes());
                h[22..24].copy_from_slice(&d.port().to_be_bytes());
                h[24..26].copy_from_slice(&(ulen as u16).to_be_bytes());
                h[26..28].fill(0); // UDP checksum optional over IPv4
                h[28..40].copy_from_slice(rtp_hdr);
                // SAFETY: sockaddr_storage is large enough for sockaddr_in.
                let sin = unsafe { &mut *(name as *mut _ as *mut libc::sockaddr_in) };
                sin.sin_family = libc::AF_INET as u16;
                sin.sin_port = 0;
                sin.sin_addr.s_addr = u32::from_ne_bytes(d.ip().octets());
            }
            (IpAddr::V6(s), SocketAddr::V6(d)) => {
                h[0] = 0x60;
                h[1..4].fill(0);
                h[4..6].copy_from_slice(&(ulen as u16).to_be_bytes());
                h[6] = 17;
                h[7] = 64;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.ip().octets());
                h[40..42].copy_from_slice(&sport.to_be_bytes());
                h[42..44].copy_from_slice(&d.port().to_be_bytes());
                h[44..46].copy_from_slice(&(ulen as u16).to_be_bytes());
                h[46..48].fill(0);
                h[48..60].copy_from_slice(rtp_hdr);
                // Checksum (mandatory over IPv6): pseudo header + UDP header
                // + RTP header + the constant payload's precomputed sum.
                let mut acc = sum16(&h[8..40], 0);
                acc += ulen as u32 + 17;
                acc = sum16(&h[40..60], acc);
                acc += self.payload_sum;
                let mut c = !fold(acc);
                if c == 0 {
                    c = 0xffff;
                }
                h[46..48].copy_from_slice(&c.to_be_bytes());
                // SAFETY: sockaddr_storage is large enough for sockaddr_in6.
                let sin6 = unsafe { &mut *(name as *mut _ as *mut libc::sockaddr_in6) };
                sin6.sin6_family = libc::AF_INET6 as u16;
                sin6.sin6_port = 0;
                sin6.sin6_addr.s6_addr = d.ip().octets();
                sin6.sin6_scope_id = d.scope_id();
            }
            _ => return false,
        }
        self.tags.push(tag);
        true
    }

    /// Sends the queued batch; calls `done(tag, ok)` for every packet.
    pub fn flush(&mut self, mut done: impl FnMut(u32, bool)) {
        let n = self.tags.len();
        if n == 0 {
            return;
        }
        let hlen = self.hdr_len();
        let nlen = if self.v6 {
            std::mem::size_of::<libc::sockaddr_in6>()
        } else {
            std::mem::size_of::<libc::sockaddr_in>()
        } as u32;
        self.iovs.clear();
        self.msgs.clear();
        for i in 0..n {
            self.iovs.push(libc::iovec {
                iov_base: self.hdrs[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: hlen,
            });
            self.iovs.push(libc::iovec {
                iov_base: self.payload.as_mut_ptr() as *mut libc::c_void,
                iov_len: self.payload.len(),
            });
        }
        for i in 0..n {
            // SAFETY: zeroed mmsghdr is valid; pointers set below live until
            // the sendmmsg calls return (self is not touched meanwhile).
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = &mut self.names[i] as *mut _ as *mut libc::c_void;
            m.msg_hdr.msg_namelen = nlen;
            // SAFETY: 2*i+1 < iovs.len().
            m.msg_hdr.msg_iov = unsafe { self.iovs.as_mut_ptr().add(2 * i) };
            m.msg_hdr.msg_iovlen = 2;
            self.msgs.push(m);
        }
        let mut i = 0;
        while i < n {
            // SAFETY: msgs[i..n] are valid mmsghdrs.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd,
                    self.msgs.as_mut_ptr().add(i),
                    (n - i) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if r <= 0 {
                // The first of the rest failed (no route, buffer full …):
                // count it and go on with the next.
                done(self.tags[i], false);
                i += 1;
                continue;
            }
            for k in i..i + r as usize {
                done(self.tags[k], true);
            }
            i += r as usize;
        }
        self.tags.clear();
    }
}

impl Drop for RawTx {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe {
            libc::close(self.fd);
        }
    }
}

/// One's-complement sum of 16-bit big-endian words (odd tail padded).
fn sum16(b: &[u8], mut acc: u32) -> u32 {
    let mut it = b.chunks_exact(2);
    for w in &mut it {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [x] = it.remainder() {
        acc += u32::from(*x) << 8;
    }
    fold(acc) as u32
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_of_parses_v4_and_v6() {
        let mut v4 = vec![0u8; 20 + 8 + 4];
        v4[0] = 0x45;
        v4[22..24].copy_from_slice(&40000u16.to_be_bytes());
        v4[24..26].copy_from_slice(&12u16.to_be_bytes());
        v4[28..32].copy_from_slice(b"abcd");
        let (p, d) = udp_of(&v4).unwrap();
        assert_eq!((p, d), (40000, &b"abcd"[..]));
        let mut v6 = vec![0u8; 40 + 8 + 2];
        v6[0] = 0x60;
        v6[42..44].copy_from_slice(&20002u16.to_be_bytes());
        v6[44..46].copy_from_slice(&10u16.to_be_bytes());
        v6[48..50].copy_from_slice(b"xy");
        assert_eq!(udp_of(&v6).unwrap(), (20002, &b"xy"[..]));
        assert!(udp_of(&[0x45, 0, 0]).is_none());
        assert!(udp_of(&[0x20; 40]).is_none());
    }

    #[test]
    fn sum16_folds_odd_tail_and_carries() {
        // RFC 1071 example: 0001 f203 f4f5 f6f7 -> sum 0xddf2 (before complement).
        let b = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum16(&b, 0), 0xddf2);
        assert_eq!(sum16(&[0xab], 0), 0xab00);
    }
}
