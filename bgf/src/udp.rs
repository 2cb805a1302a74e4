//! Batched UDP I/O for the SIP sockets: `recvmmsg` into preallocated buffers
//! and `sendmmsg` of queued datagrams, on the non-blocking sockets that tokio
//! has registered (the caller wraps these in `UdpSocket::try_io`, so readiness
//! is cleared on `WouldBlock`).
//!
//! Only syscalls and address conversion live here; what a datagram means is
//! the transports' and the core's business.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Datagrams read (or sent) per syscall at most.
pub const BATCH: usize = 32;

use media_plane::kernel::{from_sockaddr, to_sockaddr};

/// Receive buffers for one `recvmmsg` of up to [`BATCH`] datagrams of at
/// most `size` bytes each (a longer datagram is reported with its length
/// capped at `size`, so callers use `size = max + 1` to detect oversize).
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
    n: usize,
}

impl RecvBatch {
    pub fn new(size: usize) -> Self {
        RecvBatch {
            bufs: (0..BATCH).map(|_| vec![0u8; size]).collect(),
            // SAFETY: all-zero is a valid sockaddr_storage.
            addrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            lens: vec![0; BATCH],
            n: 0,
        }
    }

    /// One non-blocking `recvmmsg` on `fd`: the number of datagrams read
    /// (at least 1), or `WouldBlock` when none is queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.bufs[i].as_mut_ptr().cast(),
            iov_len: self.bufs[i].len(),
        });
        // SAFETY: all-zero is a valid mmsghdr; the pointers set below stay
        // valid for the call (buffers and addresses are owned by `self`).
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, h) in hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: hdrs describes BATCH valid buffers.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            self.n = 0;
            return Err(io::Error::last_os_error());
        }
        let n = r as usize;
        for (i, h) in hdrs.iter().take(n).enumerate() {
            self.lens[i] = (h.msg_len as usize).min(self.bufs[i].len());
        }
        self.n = n;
        Ok(n)
    }

    /// Datagram `i` of the last receive: source (if the kernel gave a known
    /// family) and bytes.
    pub fn get(&self, i: usize) -> (Option<SocketAddr>, &[u8]) {
        (from_sockaddr(&self.addrs[i]), &self.bufs[i][..self.lens[i]])
    }
}

/// One non-blocking `sendmmsg` of (up to [`BATCH`] of) `msgs` on `fd`: the
/// number sent (at least 1). An error concerns `msgs[0]` (the kernel reports
/// an error only when it sent nothing).
pub fn send_batch(fd: RawFd, msgs: &[(SocketAddr, Vec<u8>)]) -> io::Result<usize> {
    let n = msgs.len().min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: all-zero is valid for these C structs.
    let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
    let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    for i in 0..n {
        let (dst, data) = &msgs[i];
        let len = to_sockaddr(dst, &mut addrs[i]);
        iovs[i] = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        hdrs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
        hdrs[i].msg_hdr.msg_namelen = len;
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: hdrs[..n] point into addrs/iovs/msgs, alive for the call; the
    // kernel only reads the data.
    let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_round_trip_v4_and_v6_and_caps_oversize() {
        for (a, b) in [("127.0.0.1:0", "127.0.0.1:0"), ("[::1]:0", "[::1]:0")] {
            let rx = std::net::UdpSocket::bind(a).unwrap();
            rx.set_nonblocking(true).unwrap();
            let tx = std::net::UdpSocket::bind(b).unwrap();
            let to = rx.local_addr().unwrap();
            let mut batch = RecvBatch::new(11);
            assert_eq!(
                batch.recv(rx.as_raw_fd()).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            let msgs: Vec<(SocketAddr, Vec<u8>)> = (0..40u8)
                .map(|i| (to, vec![i; 1 + i as usize % 20]))
                .collect();
            let mut sent = 0;
            while sent < msgs.len() {
                sent += send_batch(tx.as_raw_fd(), &msgs[sent..]).unwrap();
            }
            let mut got = Vec::new();
            while got.len() < 40 {
                match batch.recv(rx.as_raw_fd()) {
                    Ok(n) => {
                        for i in 0..n {
                            let (src, data) = batch.get(i);
                            assert_eq!(src, Some(tx.local_addr().unwrap()));
                            got.push(data.to_vec());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(1))
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            for (i, d) in got.iter().enumerate() {
                let full = 1 + i % 20;
                assert_eq!(d.len(), full.min(11), "datagram {i}");
                assert!(d.iter().all(|b| *b == i as u8));
            }
        }
    }
}
