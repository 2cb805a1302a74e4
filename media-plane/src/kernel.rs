//! Kernel-socket backend: one non-blocking UDP socket per local port (RTP
//! and RTCP, IPv4 and IPv6), spread over `workers` threads, each with its
//! own epoll. A ready socket is drained with one `recvmmsg` of up to `batch`
//! datagrams; every packet goes through [`Relay::process`]; the forwards of
//! that batch (they all leave through the partner socket on the other leg)
//! go out with one `sendmmsg`.
//!
//! Sockets live in a registry indexed by the epoll token and are reference
//! counted: closing a pinhole removes the socket from epoll and the
//! registry, and the fd closes when the last worker batch using it ends.
//!
//! With `keep_released > 0` ([`KernelBackend::keep_released`]) up to that
//! many released sockets stay bound and registered as spares, keyed by local
//! address: a later pinhole on the same address takes its socket back
//! without `socket`/`bind`/`epoll_ctl`/`close`. Packets reaching a spare
//! find no pinhole and are dropped and counted as `unknown_port`, as for
//! any port without a pinhole.

use crate::backend::PacketBackend;
use crate::error::MediaError;
use crate::forward::{PortKind, Reason};
use crate::model::{PinholeSpec, Side};
use crate::table::{local_addrs, port_index, Outcome, Relay};
use arc_swap::ArcSwapOption;
use std::collections::HashMap;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Maximum number of sockets (4 per pinhole).
pub const MAX_SOCKETS: usize = 1 << 18;
/// Receive buffer per datagram; larger datagrams are dropped as `not_rtp`.
pub const BUF_SIZE: usize = 4096;
const WAKE_TOKEN: u64 = u64::MAX;

/// One bound UDP socket.
pub struct Sock {
    fd: OwnedFd,
    /// The local address it is bound to.
    pub local: SocketAddr,
    token: usize,
    worker: usize,
}

/// The kernel backend's handles for one pinhole: its four sockets in
/// [`local_addrs`] order.
pub struct KernelIo {
    socks: [Arc<Sock>; 4],
    worker: usize,
}

impl KernelIo {
    /// The socket of (side, kind).
    pub fn sock(&self, side: Side, kind: PortKind) -> &Arc<Sock> {
        &self.socks[port_index(side, kind)]
    }
}

struct Registry {
    slots: Box<[ArcSwapOption<Sock>]>,
    free: Mutex<Vec<usize>>,
}

impl Registry {
    fn new() -> Registry {
        Registry {
            slots: (0..MAX_SOCKETS).map(|_| ArcSwapOption::empty()).collect(),
            free: Mutex::new((0..MAX_SOCKETS).rev().collect()),
        }
    }

    fn alloc(&self) -> Option<usize> {
        self.free.lock().ok()?.pop()
    }

    fn release(&self, token: usize) {
        self.slots[token].store(None);
        if let Ok(mut f) = self.free.lock() {
            f.push(token);
        }
    }
}

struct WorkerHandle {
    epfd: Arc<OwnedFd>,
    wake: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

/// The kernel-socket backend. See the module docs.
pub struct KernelBackend {
    workers_wanted: usize,
    batch: usize,
    registry: Arc<Registry>,
    workers: Vec<WorkerHandle>,
    next_worker: AtomicUsize,
    stop: Arc<AtomicBool>,
    freebind: AtomicBool,
    /// Released sockets kept bound and registered, by local address.
    spare: Mutex<HashMap<SocketAddr, Arc<Sock>>>,
    /// Bound on `spare` (0 = close released sockets at once).
    keep_released: usize,
}

fn last_err(what: &'static str) -> MediaError {
    MediaError::Io {
        what,
        source: io::Error::last_os_error(),
    }
}

/// Raise the open-files limit (one fd per port): first try the kernel
/// maximum (`fs.nr_open`, allowed when running with CAP_SYS_RESOURCE), else
/// the soft limit up to the hard limit. Returns the resulting soft limit.
pub fn raise_nofile_limit() -> u64 {
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    // SAFETY: plain getrlimit/setrlimit on a stack struct.
    unsafe {
        let mut r: libc::rlimit = zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.rlim_max < nr_open {
            let want = libc::rlimit {
                rlim_cur: nr_open,
                rlim_max: nr_open,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return nr_open;
            }
        }
        if r.rlim_cur < r.rlim_max {
            let old = r.rlim_cur;
            r.rlim_cur = r.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return old;
            }
        }
        r.rlim_cur
    }
}

/// Write `addr` into a `sockaddr_storage`; returns the length used (for
/// `sendmmsg`/`bind`; shared with the daemon's SIP UDP path).
pub fn to_sockaddr(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(out as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(out as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = 0;
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Read a `sockaddr_storage` filled by the kernel (`recvmmsg`).
pub fn from_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: family says sockaddr_in.
            let sin = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: family says sockaddr_in6.
            let sin6 = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, val: i32) -> io::Result<()> {
    // SAFETY: pointer to a live i32 with its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &val as *const i32 as *const libc::c_void,
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bind a non-blocking UDP socket at `addr` (IPv6 sockets are v6-only).
/// With `freebind` the address need not be configured yet.
pub fn bind_udp(addr: SocketAddr, freebind: bool) -> Result<OwnedFd, MediaError> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket(2) with constant arguments.
    let raw = unsafe {
        libc::socket(
            family,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(last_err("socket()"));
    }
    // SAFETY: raw is a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let bind_err = |source: io::Error| MediaError::Bind { addr, source };
    if addr.is_ipv6() {
        setsockopt_int(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1).map_err(bind_err)?;
    }
    if freebind {
        let r = if addr.is_ipv4() {
            setsockopt_int(raw, libc::IPPROTO_IP, libc::IP_FREEBIND, 1)
        } else {
            setsockopt_int(raw, libc::IPPROTO_IPV6, libc::IPV6_FREEBIND, 1)
        };
        r.map_err(bind_err)?;
    }
    // SAFETY: zeroed sockaddr_storage is valid; to_sockaddr fills it.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = to_sockaddr(&addr, &mut ss);
    // SAFETY: ss is a valid sockaddr of length len.
    let r = unsafe { libc::bind(raw, &ss as *const _ as *const libc::sockaddr, len) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EADDRINUSE) => MediaError::PortInUse { addr, by: None },
            Some(libc::EADDRNOTAVAIL) => MediaError::AddressNotLocal { addr },
            _ => bind_err(e),
        });
    }
    Ok(fd)
}

impl KernelBackend {
    /// A backend with `workers` threads and `batch` datagrams per syscall.
    pub fn new(workers: usize, batch: usize) -> KernelBackend {
        KernelBackend {
            workers_wanted: workers.max(1),
            batch: batch.clamp(1, 1024),
            registry: Arc::new(Registry::new()),
            workers: Vec::new(),
            next_worker: AtomicUsize::new(0),
            stop: Arc::new(AtomicBool::new(false)),
            freebind: AtomicBool::new(false),
            spare: Mutex::new(HashMap::new()),
            keep_released: 0,
        }
    }

    /// Keep up to `n` released sockets bound and registered for reuse by a
    /// later pinhole on the same address (see the module docs). Each costs
    /// one file descriptor and its kernel socket while unused.
    pub fn keep_released(mut self, n: usize) -> KernelBackend {
        self.keep_released = n;
        self
    }

    /// Number of spare sockets held.
    pub fn spare_count(&self) -> usize {
        self.spare.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// A bound, registered socket for `addr`: a spare if one is held, else
    /// a new one on `worker`.
    fn take_or_register(&self, addr: SocketAddr, worker: usize) -> Result<Arc<Sock>, MediaError> {
        if self.keep_released == 0 {
            return self.register(addr, worker);
        }
        if let Some(s) = self.spare.lock().ok().and_then(|mut m| m.remove(&addr)) {
            return Ok(s);
        }
        match self.register(addr, worker) {
            // Out of file descriptors: spares give theirs back first.
            Err(MediaError::Io { source, .. })
                if matches!(source.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                    && self.evict_spares(64) > 0 =>
            {
                self.register(addr, worker)
            }
            r => r,
        }
    }

    /// Close up to `n` spare sockets; returns how many.
    fn evict_spares(&self, n: usize) -> usize {
        let gone: Vec<Arc<Sock>> = match self.spare.lock() {
            Ok(mut m) => {
                let keys: Vec<SocketAddr> = m.keys().take(n).copied().collect();
                keys.iter().filter_map(|k| m.remove(k)).collect()
            }
            Err(_) => return 0,
        };
        for s in &gone {
            self.unregister(s);
        }
        gone.len()
    }

    /// Give back a socket no pinhole uses: kept as a spare while there is
    /// room, else unregistered (its fd closes with the last reference).
    fn release_sock(&self, sock: &Arc<Sock>) {
        if self.keep_released > 0 && !self.stop.load(Ordering::Relaxed) {
            if let Ok(mut m) = self.spare.lock() {
                if m.len() < self.keep_released {
                    m.insert(sock.local, sock.clone());
                    return;
                }
            }
        }
        self.unregister(sock);
    }

    /// Bind future sockets with `IP_FREEBIND`/`IPV6_FREEBIND` (a standby
    /// preparing addresses it does not own yet).
    pub fn set_freebind(&self, on: bool) {
        self.freebind.store(on, Ordering::Relaxed);
    }

    fn register(&self, addr: SocketAddr, worker: usize) -> Result<Arc<Sock>, MediaError> {
        let w = self
            .workers
            .get(worker)
            .ok_or_else(|| MediaError::Config("media workers not started".into()))?;
        let fd = bind_udp(addr, self.freebind.load(Ordering::Relaxed))?;
        let token = self
            .registry
            .alloc()
            .ok_or(MediaError::TooManySockets { limit: MAX_SOCKETS })?;
        let sock = Arc::new(Sock {
            fd,
            local: addr,
            token,
            worker,
        });
        self.registry.slots[token].store(Some(sock.clone()));
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token as u64,
        };
        // SAFETY: valid epoll fd, valid socket fd, valid event.
        let r = unsafe {
            libc::epoll_ctl(
                w.epfd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                sock.fd.as_raw_fd(),
                &mut ev,
            )
        };
        if r != 0 {
            let e = last_err("epoll_ctl(ADD)");
            self.registry.release(token);
            return Err(e);
        }
        Ok(sock)
    }

    fn unregister(&self, sock: &Sock) {
        if let Some(w) = self.workers.get(sock.worker) {
            // SAFETY: valid fds; a null event is allowed for DEL.
            unsafe {
                libc::epoll_ctl(
                    w.epfd.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    sock.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                );
            }
        }
        self.registry.release(sock.token);
    }
}

impl PacketBackend for KernelBackend {
    type Io = KernelIo;

    fn start(&mut self, relay: Arc<Relay<KernelIo>>) -> Result<(), MediaError> {
        let limit = raise_nofile_limit();
        tracing::info!(
            workers = self.workers_wanted,
            batch = self.batch,
            nofile = limit,
            "kernel media backend starting"
        );
        for idx in 0..self.workers_wanted {
            // SAFETY: epoll_create1/eventfd with constant flags.
            let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if ep < 0 {
                return Err(last_err("epoll_create1"));
            }
            // SAFETY: fresh fd.
            let epfd = Arc::new(unsafe { OwnedFd::from_raw_fd(ep) });
            // SAFETY: as above.
            let ev = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if ev < 0 {
                return Err(last_err("eventfd"));
            }
            // SAFETY: fresh fd.
            let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(ev) });
            let mut e = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: WAKE_TOKEN,
            };
            // SAFETY: valid fds and event.
            if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, ev, &mut e) } != 0 {
                return Err(last_err("epoll_ctl(ADD eventfd)"));
            }
            let worker = Worker {
                idx,
                epfd: epfd.clone(),
                wake: wake.clone(),
                relay: relay.clone(),
                registry: self.registry.clone(),
                stop: self.stop.clone(),
                batch: self.batch,
            };
            let thread = std::thread::Builder::new()
                .name(format!("media-{idx}"))
                .spawn(move || worker.run())
                .map_err(|source| MediaError::Io {
                    what: "spawning a media worker thread",
                    source,
                })?;
            self.workers.push(WorkerHandle {
                epfd,
                wake,
                thread: Some(thread),
            });
        }
        Ok(())
    }

    fn open(&self, spec: &PinholeSpec, prev: Option<&KernelIo>) -> Result<KernelIo, MediaError> {
        let worker = match prev {
            Some(p) => p.worker,
            None => self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len().max(1),
        };
        let mut opened: Vec<Arc<Sock>> = Vec::with_capacity(4);
        let mut socks: Vec<Arc<Sock>> = Vec::with_capacity(4);
        for (_, _, addr) in local_addrs(spec) {
            if let Some(s) = prev.and_then(|p| p.socks.iter().find(|s| s.local == addr)) {
                socks.push(s.clone());
                continue;
            }
            match self.take_or_register(addr, worker) {
                Ok(s) => {
                    opened.push(s.clone());
                    socks.push(s);
                }
                Err(e) => {
                    for s in &opened {
                        self.release_sock(s);
                    }
                    return Err(e);
                }
            }
        }
        let socks: [Arc<Sock>; 4] = match socks.try_into() {
            Ok(a) => a,
            Err(_) => return Err(MediaError::Config("internal: expected four sockets".into())),
        };
        Ok(KernelIo { socks, worker })
    }

    fn close(&self, io: &KernelIo, keep: Option<&KernelIo>) {
        for s in &io.socks {
            let kept = keep.is_some_and(|k| k.socks.iter().any(|o| Arc::ptr_eq(o, s)));
            if !kept {
                self.release_sock(s);
            }
        }
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in &self.workers {
            let one: u64 = 1;
            // SAFETY: writing 8 bytes to an eventfd.
            unsafe {
                libc::write(
                    w.wake.as_raw_fd(),
                    &one as *const u64 as *const libc::c_void,
                    8,
                );
            }
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
        self.workers.clear();
        if let Ok(mut m) = self.spare.lock() {
            m.clear();
        }
        for slot in self.registry.slots.iter() {
            slot.store(None);
        }
    }
}

struct Worker {
    idx: usize,
    epfd: Arc<OwnedFd>,
    wake: Arc<OwnedFd>,
    relay: Arc<Relay<KernelIo>>,
    registry: Arc<Registry>,
    stop: Arc<AtomicBool>,
    batch: usize,
}

/// Pending sends of one batch, all through one socket.
struct SendBatch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    n: usize,
    bytes: Vec<usize>,
    sock: Option<Arc<Sock>>,
}

impl Worker {
    fn run(self) {
        let b = self.batch;
        let mut bufs = vec![0u8; b * BUF_SIZE];
        // SAFETY: zeroed C structs are valid initial values.
        let mut rhdrs: Vec<libc::mmsghdr> = (0..b).map(|_| unsafe { zeroed() }).collect();
        let mut riovs: Vec<libc::iovec> = (0..b)
            .map(|i| libc::iovec {
                // SAFETY: in-bounds offset into bufs, which outlives the loop.
                iov_base: unsafe { bufs.as_mut_ptr().add(i * BUF_SIZE) } as *mut libc::c_void,
                iov_len: BUF_SIZE,
            })
            .collect();
        // SAFETY: as above.
        let mut rnames: Vec<libc::sockaddr_storage> = (0..b).map(|_| unsafe { zeroed() }).collect();
        let mut out = SendBatch {
            // SAFETY: as above.
            hdrs: (0..b).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..b)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            // SAFETY: as above.
            names: (0..b).map(|_| unsafe { zeroed() }).collect(),
            n: 0,
            bytes: vec![0; b],
            sock: None,
        };
        // SAFETY: zeroed epoll_event is valid.
        let mut events: Vec<libc::epoll_event> = (0..256).map(|_| unsafe { zeroed() }).collect();
        let relay = &*self.relay;
        while !self.stop.load(Ordering::Relaxed) {
            // SAFETY: events buffer of the given length.
            let n = unsafe {
                libc::epoll_wait(
                    self.epfd.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    500,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(worker = self.idx, error = %e, "epoll_wait failed; media worker stops");
                return;
            }
            let now = relay.clock.now_ms();
            for ev in &events[..n as usize] {
                let token = ev.u64;
                if token == WAKE_TOKEN {
                    let mut v = 0u64;
                    // SAFETY: reading 8 bytes from an eventfd.
                    unsafe {
                        libc::read(
                            self.wake.as_raw_fd(),
                            &mut v as *mut u64 as *mut libc::c_void,
                            8,
                        );
                    }
                    continue;
                }
                let Some(sock) = self
                    .registry
                    .slots
                    .get(token as usize)
                    .and_then(|s| s.load_full())
                else {
                    continue;
                };
                for i in 0..b {
                    rhdrs[i].msg_hdr.msg_name = &mut rnames[i] as *mut _ as *mut libc::c_void;
                    rhdrs[i].msg_hdr.msg_namelen =
                        size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                    rhdrs[i].msg_hdr.msg_iov = &mut riovs[i];
                    rhdrs[i].msg_hdr.msg_iovlen = 1;
                    rhdrs[i].msg_hdr.msg_control = std::ptr::null_mut();
                    rhdrs[i].msg_hdr.msg_controllen = 0;
                    rhdrs[i].msg_hdr.msg_flags = 0;
                    rhdrs[i].msg_len = 0;
                }
                // SAFETY: b headers, each pointing to live name/iov buffers.
                let got = unsafe {
                    libc::recvmmsg(
                        sock.fd.as_raw_fd(),
                        rhdrs.as_mut_ptr(),
                        b as libc::c_uint,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                };
                if got <= 0 {
                    continue;
                }
                for i in 0..got as usize {
                    let len = rhdrs[i].msg_len as usize;
                    if rhdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                        relay.count_drop(self.idx, Reason::NotRtp);
                        continue;
                    }
                    let Some(src) = from_sockaddr(&rnames[i]) else {
                        relay.count_drop(self.idx, Reason::WrongSource);
                        continue;
                    };
                    let payload = &bufs[i * BUF_SIZE..i * BUF_SIZE + len.min(BUF_SIZE)];
                    let out_ref = &mut out;
                    let idx = self.idx;
                    relay.process(self.idx, sock.local, src, payload, now, |o| {
                        if let Outcome::Forward {
                            to,
                            io,
                            to_side,
                            kind,
                            ..
                        } = o
                        {
                            let s = io.sock(to_side, kind);
                            if !out_ref.sock.as_ref().is_some_and(|c| Arc::ptr_eq(c, s)) {
                                flush(relay, idx, out_ref);
                                out_ref.sock = Some(s.clone());
                            }
                            let k = out_ref.n;
                            out_ref.iovs[k] = libc::iovec {
                                iov_base: payload.as_ptr() as *mut libc::c_void,
                                iov_len: payload.len(),
                            };
                            let nl = to_sockaddr(&to, &mut out_ref.names[k]);
                            let h = &mut out_ref.hdrs[k].msg_hdr;
                            h.msg_name = &mut out_ref.names[k] as *mut _ as *mut libc::c_void;
                            h.msg_namelen = nl;
                            h.msg_iov = &mut out_ref.iovs[k];
                            h.msg_iovlen = 1;
                            h.msg_control = std::ptr::null_mut();
                            h.msg_controllen = 0;
                            h.msg_flags = 0;
                            out_ref.bytes[k] = payload.len();
                            out_ref.n += 1;
                        }
                    });
                }
                flush(relay, self.idx, &mut out);
                out.sock = None;
            }
        }
    }
}

/// Send the pending batch with `sendmmsg`, counting sent packets and send
/// errors (a failing datagram is skipped and the rest retried).
fn flush(relay: &Relay<KernelIo>, worker: usize, out: &mut SendBatch) {
    let Some(sock) = out.sock.as_ref() else {
        out.n = 0;
        return;
    };
    let mut start = 0;
    while start < out.n {
        // SAFETY: headers start..n point into live buffers (names, iovs and
        // the receive buffers, untouched until the next recvmmsg).
        let r = unsafe {
            libc::sendmmsg(
                sock.fd.as_raw_fd(),
                out.hdrs.as_mut_ptr().add(start),
                (out.n - start) as libc::c_uint,
                0,
            )
        };
        if r <= 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::debug!(from = %sock.local, error = %e, "media send failed");
            relay.count_drop(worker, Reason::SendError);
            start += 1;
            continue;
        }
        let r = r as usize;
        let bytes: usize = out.bytes[start..start + r].iter().sum();
        relay.count_forwarded(worker, r as u64, bytes as u64);
        start += r;
    }
    out.n = 0;
}
