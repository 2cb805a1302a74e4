//! The DPDK poll-mode backend: one poll thread per process (it initialises
//! the EAL, so it is the EAL's main lcore and is pinned to its core) runs
//! RX burst → Ethernet → ARP/ND responder or IPv4/IPv6 UDP parse →
//! [`Relay::process`] (the same lookup, latching and counters as the kernel
//! backend) → [`packet::relay_rewrite`] (the same NAT rewrite with checksum
//! fix-up as every raw-frame path) → next-hop MAC from the neighbour table
//! → TX burst. UDP checksums: the port's TX offload when it offers it, else
//! the incremental software fix-up of `packet.rs`.
//!
//! Pinholes need no per-port state here: `open` only checks that the local
//! addresses are this plane's, the table is the demultiplexer.

use super::DpdkSettings;
use crate::backend::PacketBackend;
use crate::error::MediaError;
use crate::forward::Reason;
use crate::l2::{self, Frame, Mac, NeighbourTable, Resolve, ETH_HDR};
use crate::model::{PinholeSpec, Side};
use crate::packet;
use crate::table::{local_addrs, Outcome, Relay};
use arc_swap::ArcSwap;
use dpdk_sys as sys;
use std::ffi::CString;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A DPDK pinhole holds no I/O handles.
pub struct DpdkIo;

type Mbuf = *mut sys::rte_mbuf;

/// One plane attached to the poll loop.
struct Attached {
    id: u64,
    relay: Arc<Relay<DpdkIo>>,
    /// The plane's service (media) addresses and their sides.
    addrs: Vec<(Side, IpAddr)>,
    /// The subset it answers ARP/ND for (all of them for an active; none
    /// for a standby's idle plane until it takes over).
    owned: ArcSwap<Vec<(Side, IpAddr)>>,
}

impl Attached {
    fn serves(&self, ip: IpAddr) -> bool {
        self.addrs.iter().any(|(_, a)| *a == ip)
    }
}

/// A port as the poll loop uses it.
#[derive(Clone, Copy, Debug)]
struct PortRt {
    id: u16,
    mac: Mac,
    offload: bool,
}

/// Announcements queued for the poll loop: (when, side, address).
type Announce = Vec<(Instant, Side, IpAddr)>;

struct Shared {
    planes: ArcSwap<Vec<Arc<Attached>>>,
    announce: Mutex<Announce>,
    has_announce: AtomicBool,
    /// Access and core port (the same port twice when shared).
    ports: [PortRt; 2],
    rx_packets: AtomicU64,
    tx_packets: AtomicU64,
    /// Nanoseconds the poll loop spent in rounds that received packets.
    busy_ns: AtomicU64,
    next_id: AtomicU64,
}

enum RtState {
    None,
    Running(Arc<Shared>, DpdkSettings),
    Failed(String),
}

static RUNTIME: Mutex<RtState> = Mutex::new(RtState::None);

fn side_index(s: Side) -> usize {
    match s {
        Side::Access => 0,
        Side::Core => 1,
    }
}

fn err(msg: String) -> MediaError {
    MediaError::Config(msg)
}

/// The process's DPDK runtime: started by the first plane (EAL init, ports
/// up, poll thread), shared by the later ones.
fn runtime(settings: &DpdkSettings) -> Result<Arc<Shared>, MediaError> {
    let mut g = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    match &*g {
        RtState::Running(sh, s) => {
            if s != settings {
                return Err(err("media.dpdk: this process already runs DPDK with other settings — the EAL starts once per process, so every plane of a process (every protected active of a standby) must use the same [media.dpdk] section".into()));
            }
            return Ok(sh.clone());
        }
        RtState::Failed(e) => {
            return Err(err(format!(
                "DPDK failed to start earlier in this process ({e}); the EAL cannot be initialised twice — restart bgf"
            )))
        }
        RtState::None => {}
    }
    let (tx, rx) = mpsc::channel();
    let s = settings.clone();
    let spawned = std::thread::Builder::new()
        .name("media-dpdk".into())
        .spawn(move || poll_thread(s, tx));
    if let Err(e) = spawned {
        return Err(MediaError::Io {
            what: "spawning the DPDK poll thread",
            source: e,
        });
    }
    let r = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(r) => r,
        Err(_) => Err("the DPDK poll thread did not report (EAL init hung or crashed)".into()),
    };
    match r {
        Ok(sh) => {
            *g = RtState::Running(sh.clone(), settings.clone());
            Ok(sh)
        }
        Err(e) => {
            *g = RtState::Failed(e.clone());
            Err(err(e))
        }
    }
}

/// EAL init, mempool, ports; then the poll loop (forever: the EAL cannot
/// be restarted, an idle loop sleeps).
fn poll_thread(s: DpdkSettings, report: mpsc::Sender<Result<Arc<Shared>, String>>) {
    let (shared, pools) = match init(&s) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "DPDK media backend failed to start");
            let _ = report.send(Err(e));
            return;
        }
    };
    let _ = report.send(Ok(shared.clone()));
    Poller::new(&s, shared, pools).run();
}

fn rte_error(what: &str, code: i32) -> String {
    // SAFETY: rte_strerror returns a static/thread-local C string.
    let msg = unsafe {
        let p = sys::rte_strerror(code.abs());
        if p.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    format!("{what}: {msg} ({code})")
}

fn init(s: &DpdkSettings) -> Result<(Arc<Shared>, [*mut sys::rte_mempool; 2]), String> {
    let argv_s = s.eal_argv();
    tracing::info!(eal = ?argv_s, "DPDK EAL starting");
    let cargs: Vec<CString> = argv_s
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| format!("EAL argument {a:?} contains NUL")))
        .collect::<Result<_, _>>()?;
    let mut argv: Vec<*mut std::os::raw::c_char> =
        cargs.iter().map(|c| c.as_ptr() as *mut _).collect();
    argv.push(std::ptr::null_mut());
    // SAFETY: argv is a NULL-terminated array of valid C strings that
    // outlive the call (the EAL copies what it keeps).
    let r = unsafe { sys::rte_eal_init((argv.len() - 1) as i32, argv.as_mut_ptr()) };
    if r < 0 {
        // SAFETY: plain thread-local read.
        let e = unsafe { sys::bgf_rte_errno() };
        return Err(rte_error(
            "rte_eal_init failed (check media.dpdk.eal_args, hugepages or --no-huge, device binding)",
            e,
        ));
    }
    // One pool per port: af_xdp registers a port's pool as its UMEM, which
    // cannot be shared by two ports (other drivers do not mind).
    let mut pools: [*mut sys::rte_mempool; 2] = [std::ptr::null_mut(); 2];
    for (i, pool) in pools.iter_mut().enumerate() {
        if i == 1 && s.shared_port() {
            break;
        }
        let name = CString::new(format!("bgf_mbufs{i}")).map_err(|e| e.to_string())?;
        // SAFETY: valid name; sizes from config.
        *pool = unsafe {
            sys::rte_pktmbuf_pool_create(
                name.as_ptr(),
                s.mbufs,
                256,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                sys::rte_socket_id() as i32,
            )
        };
        if pool.is_null() {
            // SAFETY: plain thread-local read.
            let e = unsafe { sys::bgf_rte_errno() };
            return Err(rte_error(
                &format!(
                    "cannot create the mbuf pool ({} mbufs; raise -m / hugepages or lower media.dpdk.mbufs)",
                    s.mbufs
                ),
                e,
            ));
        }
    }
    if s.shared_port() {
        pools[1] = pools[0];
    }
    let mut ports = [PortRt {
        id: 0,
        mac: [0; 6],
        offload: false,
    }; 2];
    for side in [Side::Access, Side::Core] {
        let p = s.port(side);
        if side == Side::Core && s.shared_port() {
            ports[1] = ports[0];
            continue;
        }
        let cname = CString::new(p.port_name()).map_err(|e| e.to_string())?;
        let mut id: u16 = 0;
        // SAFETY: valid C string and out pointer.
        let r = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if r != 0 {
            return Err(format!(
                "media.dpdk.{side}.device: no DPDK port named {:?} (probe failed — for a vdev check the interface exists; for PCI check it is bound to vfio-pci)",
                p.port_name()
            ));
        }
        let mut offload: i32 = 0;
        let mut mac = [0u8; 6];
        // SAFETY: valid port id, pool and out pointers.
        let r = unsafe {
            sys::bgf_port_start(
                id,
                s.descriptors,
                s.descriptors,
                pools[side_index(side)],
                i32::from(s.checksum_offload),
                &mut offload,
                mac.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(rte_error(
                &format!("cannot start DPDK port {:?}", p.port_name()),
                r,
            ));
        }
        tracing::info!(%side, port = id, device = %p.device, mac = %l2::mac_str(&mac),
            checksum_offload = offload != 0, "DPDK port started");
        ports[side_index(side)] = PortRt {
            id,
            mac,
            offload: offload != 0,
        };
    }
    Ok((
        Arc::new(Shared {
            planes: ArcSwap::from_pointee(Vec::new()),
            announce: Mutex::new(Vec::new()),
            has_announce: AtomicBool::new(false),
            ports,
            rx_packets: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
        }),
        pools,
    ))
}

/// A frame on its way out, with what to count when it is sent.
struct Tx {
    m: Mbuf,
    /// The relay to count a forward on, and the payload bytes; `None` for
    /// control frames (ARP/ND).
    fwd: Option<(Arc<Relay<DpdkIo>>, usize)>,
}

/// A forward waiting for its next hop's MAC.
struct Held {
    tx: Tx,
    side: Side,
    l3_len: u16,
    ipv4: bool,
}

struct Poller {
    sh: Arc<Shared>,
    /// The mbuf pool of each side's port.
    pools: [*mut sys::rte_mempool; 2],
    burst: usize,
    idle_sleep: Duration,
    gateways: [Option<IpAddr>; 2],
    /// Distinct ports to poll (1 or 2), as side indexes.
    poll: Vec<usize>,
    neigh: [NeighbourTable<Held>; 2],
    txq: [Vec<Tx>; 2],
    scratch: Vec<u8>,
    pending: Announce,
}

impl Poller {
    fn new(s: &DpdkSettings, sh: Arc<Shared>, pools: [*mut sys::rte_mempool; 2]) -> Poller {
        Poller {
            poll: if s.shared_port() { vec![0] } else { vec![0, 1] },
            sh,
            pools,
            burst: usize::from(s.burst.max(1)),
            idle_sleep: Duration::from_micros(u64::from(s.idle_sleep_us)),
            gateways: [s.access.gateway, s.core.gateway],
            neigh: [NeighbourTable::default(), NeighbourTable::default()],
            txq: [Vec::new(), Vec::new()],
            scratch: vec![0u8; 4096],
            pending: Vec::new(),
        }
    }

    /// The TX queue index of `side` (0 for both when the port is shared).
    fn q(&self, side: Side) -> usize {
        if self.poll.len() == 1 {
            0
        } else {
            side_index(side)
        }
    }

    fn run(mut self) {
        let mut rx: Vec<Mbuf> = vec![std::ptr::null_mut(); self.burst];
        let mut last_expire = Instant::now();
        loop {
            let round = Instant::now();
            let planes = self.sh.planes.load_full();
            if self.sh.has_announce.swap(false, Ordering::AcqRel) {
                let mut a = self.sh.announce.lock().unwrap_or_else(|p| p.into_inner());
                self.pending.append(&mut a);
            }
            if !self.pending.is_empty() {
                self.announce_due();
            }
            let mut got = 0usize;
            for pi in 0..self.poll.len() {
                let side_i = self.poll[pi];
                let port = self.sh.ports[side_i];
                // SAFETY: rx has `burst` slots.
                let n = unsafe { sys::bgf_rx_burst(port.id, 0, rx.as_mut_ptr(), self.burst as u16) }
                    as usize;
                got += n;
                for &m in &rx[..n] {
                    self.handle(m, side_i, &planes);
                }
            }
            if got > 0 {
                self.sh.rx_packets.fetch_add(got as u64, Ordering::Relaxed);
            }
            self.flush();
            if got > 0 {
                self.sh
                    .busy_ns
                    .fetch_add(round.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            if last_expire.elapsed() >= Duration::from_millis(100) {
                last_expire = Instant::now();
                self.expire(&planes);
            }
            if got == 0 {
                if planes.is_empty() {
                    std::thread::sleep(Duration::from_millis(1));
                } else if !self.idle_sleep.is_zero() {
                    std::thread::sleep(self.idle_sleep);
                }
            }
        }
    }

    fn alloc(&self, side: Side) -> Option<Mbuf> {
        // SAFETY: valid pool.
        let m = unsafe { sys::bgf_pktmbuf_alloc(self.pools[side_index(side)]) };
        (!m.is_null()).then_some(m)
    }

    /// Queue a control frame built by `build` into a fresh mbuf.
    fn send_control(&mut self, side: Side, build: impl FnOnce(&mut [u8]) -> Option<usize>) {
        let Some(m) = self.alloc(side) else { return };
        // SAFETY: a fresh single-segment mbuf; room bytes are writable.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(
                sys::bgf_mbuf_data(m),
                usize::from(sys::bgf_mbuf_room(m)),
            )
        };
        match build(buf) {
            Some(n) if n <= buf.len() => {
                // SAFETY: n fits the buffer.
                unsafe { sys::bgf_mbuf_set_len(m, n as u16) };
                let q = self.q(side);
                self.txq[q].push(Tx { m, fwd: None });
            }
            // SAFETY: our mbuf.
            _ => unsafe { sys::bgf_pktmbuf_free(m) },
        }
    }

    fn announce_due(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        self.pending.retain(|(at, side, ip)| {
            if *at <= now {
                due.push((*side, *ip));
                false
            } else {
                true
            }
        });
        for (side, ip) in due {
            let mac = self.sh.ports[side_index(side)].mac;
            self.send_control(side, |b| Some(l2::announcement(b, &mac, ip)));
        }
    }

    /// The side (of the ports polled as `side_i`) owning `ip`, if any plane
    /// owns it there.
    fn owned_side(&self, planes: &[Arc<Attached>], side_i: usize, ip: IpAddr) -> Option<Side> {
        planes.iter().find_map(|p| {
            p.owned
                .load()
                .iter()
                .find(|(s, a)| *a == ip && (self.poll.len() == 1 || side_index(*s) == side_i))
                .map(|(s, _)| *s)
        })
    }

    fn free(m: Mbuf) {
        // SAFETY: an mbuf we own.
        unsafe { sys::bgf_pktmbuf_free(m) }
    }

    fn handle(&mut self, m: Mbuf, side_i: usize, planes: &Arc<Vec<Arc<Attached>>>) {
        let port = self.sh.ports[side_i];
        // SAFETY: a received mbuf; data_len bytes from its data pointer are
        // the frame (first segment).
        let (frame, room) = unsafe {
            if sys::bgf_mbuf_nb_segs(m) != 1 {
                Self::free(m);
                return;
            }
            (
                std::slice::from_raw_parts_mut(
                    sys::bgf_mbuf_data(m),
                    usize::from(sys::bgf_mbuf_room(m)),
                ),
                usize::from(sys::bgf_mbuf_room(m)),
            )
        };
        // SAFETY: as above.
        let len = usize::from(unsafe { sys::bgf_mbuf_data_len(m) }).min(room);
        let now = Instant::now();
        match l2::classify(&frame[..len], &port.mac) {
            Frame::Ignore => Self::free(m),
            Frame::Arp(a) => {
                let ours = self.owned_side(planes, side_i, IpAddr::V4(a.tpa));
                let nt = self.q_side(side_i, ours);
                let waiting = if ours.is_some() {
                    self.neigh[nt].learn(IpAddr::V4(a.spa), a.sha, now)
                } else {
                    self.neigh[nt].refresh(IpAddr::V4(a.spa), a.sha, now)
                };
                self.release_held(waiting, a.sha);
                if let (1, Some(side), true) = (a.op, ours, frame.len() >= l2::ARP_FRAME_LEN) {
                    let n = l2::arp_reply(frame, &port.mac, &a);
                    // SAFETY: n (60) fits any mbuf.
                    unsafe { sys::bgf_mbuf_set_len(m, n as u16) };
                    let q = self.q(side);
                    self.txq[q].push(Tx { m, fwd: None });
                } else {
                    Self::free(m);
                }
            }
            Frame::Solicit(ns) => {
                let ours = self.owned_side(planes, side_i, IpAddr::V6(ns.target));
                match ours {
                    Some(side) if frame.len() >= l2::ND_FRAME_LEN => {
                        let nt = self.q_side(side_i, ours);
                        if !ns.src.is_unspecified() {
                            let w = self.neigh[nt].learn(IpAddr::V6(ns.src), ns.lladdr, now);
                            self.release_held(w, ns.lladdr);
                        }
                        let n = l2::na_reply(frame, &port.mac, &ns);
                        // SAFETY: n fits (checked above).
                        unsafe { sys::bgf_mbuf_set_len(m, n as u16) };
                        let q = self.q(side);
                        self.txq[q].push(Tx { m, fwd: None });
                    }
                    _ => Self::free(m),
                }
            }
            Frame::Advert(na) => {
                let nt = self.q_side(side_i, None);
                let w = self.neigh[nt].refresh(IpAddr::V6(na.target), na.lladdr, now);
                self.release_held(w, na.lladdr);
                Self::free(m);
            }
            Frame::Ip => self.udp(m, frame, len, planes),
        }
    }

    /// Neighbour table index for frames received on `side_i`.
    fn q_side(&self, side_i: usize, _owned: Option<Side>) -> usize {
        if self.poll.len() == 1 {
            0
        } else {
            side_i
        }
    }

    fn release_held(&mut self, held: Vec<Held>, mac: Mac) {
        for h in held {
            self.emit(h, mac);
        }
    }

    /// Write the Ethernet header (and offload request) and queue.
    fn emit(&mut self, h: Held, dst: Mac) {
        let port = self.sh.ports[side_index(h.side)];
        // SAFETY: the mbuf's first 14 bytes are the Ethernet header.
        let f = unsafe { std::slice::from_raw_parts_mut(sys::bgf_mbuf_data(h.tx.m), ETH_HDR) };
        l2::write_eth(f, &dst, &port.mac, h.ipv4);
        if port.offload {
            // SAFETY: the frame holds L2/L3/UDP headers of these lengths.
            unsafe {
                sys::bgf_mbuf_udp_cksum_offload(h.tx.m, ETH_HDR as u16, h.l3_len, i32::from(h.ipv4))
            };
        }
        let q = self.q(h.side);
        self.txq[q].push(h.tx);
    }

    fn udp(&mut self, m: Mbuf, frame: &mut [u8], len: usize, planes: &Arc<Vec<Arc<Attached>>>) {
        let Ok(view) = packet::parse_udp(&frame[ETH_HDR..len]) else {
            Self::free(m);
            return;
        };
        let Some(pl) = planes
            .iter()
            .find(|p| p.relay.table.owner(view.dst).is_some())
            .or_else(|| planes.iter().find(|p| p.serves(view.dst.ip())))
        else {
            // Not one of our addresses (another host's traffic on the LAN).
            Self::free(m);
            return;
        };
        let relay = pl.relay.clone();
        let payload =
            &frame[ETH_HDR + view.payload_offset..ETH_HDR + view.payload_offset + view.payload_len];
        let now_ms = relay.clock.now_ms();
        let out = relay.process(0, view.dst, view.src, payload, now_ms, |o| match o {
            Outcome::Forward {
                from, to, to_side, ..
            } => Some((from, to, to_side)),
            Outcome::Drop(_) => None,
        });
        let Some((from, to, side)) = out else {
            Self::free(m);
            return;
        };
        let plen = view.payload_len;
        let ip = &mut frame[ETH_HDR..];
        let (ipv4, l3_len) = match packet::relay_rewrite(
            &mut ip[..len - ETH_HDR],
            &view,
            from,
            to,
            &mut self.scratch,
        ) {
            Ok(None) => (to.is_ipv4(), view.udp_offset),
            Ok(Some(n)) if ETH_HDR + n <= frame.len() => {
                frame[ETH_HDR..ETH_HDR + n].copy_from_slice(&self.scratch[..n]);
                // SAFETY: n + 14 fits the mbuf (checked).
                unsafe { sys::bgf_mbuf_set_len(m, (ETH_HDR + n) as u16) };
                (to.is_ipv4(), if to.is_ipv4() { 20 } else { 40 })
            }
            _ => {
                relay.count_drop(0, Reason::SendError);
                Self::free(m);
                return;
            }
        };
        let nh = self.gateways[side_index(side)].unwrap_or(to.ip());
        let nt = self.q(side);
        let held = Held {
            tx: Tx {
                m,
                fwd: Some((relay.clone(), plen)),
            },
            side,
            l3_len: l3_len as u16,
            ipv4,
        };
        match self.neigh[nt].resolve(nh, held, Instant::now()) {
            Resolve::Ready(mac, h) => self.emit(h, mac),
            Resolve::Held { solicit } => {
                if solicit {
                    self.solicit(side, from.ip(), nh);
                }
            }
            Resolve::Full(h) => {
                relay.count_drop(0, Reason::SendError);
                Self::free(h.tx.m);
            }
        }
    }

    fn solicit(&mut self, side: Side, src: IpAddr, target: IpAddr) {
        let mac = self.sh.ports[side_index(side)].mac;
        tracing::debug!(%side, %target, "resolving next hop");
        self.send_control(side, |b| l2::solicitation(b, &mac, src, target));
    }

    fn expire(&mut self, planes: &[Arc<Attached>]) {
        for t in 0..2 {
            let (dead, again) = self.neigh[t].expire(Instant::now());
            for h in dead {
                if let Some((r, _)) = &h.tx.fwd {
                    r.count_drop(0, Reason::SendError);
                }
                Self::free(h.tx.m);
            }
            for ip in again {
                let side = if self.poll.len() == 1 || t == 0 {
                    Side::Access
                } else {
                    Side::Core
                };
                // Our address of that family on that side, as the source.
                let src = planes.iter().find_map(|p| {
                    p.addrs
                        .iter()
                        .find(|(s, a)| {
                            (self.poll.len() == 1 || *s == side) && a.is_ipv4() == ip.is_ipv4()
                        })
                        .map(|(_, a)| *a)
                });
                if let Some(src) = src {
                    self.solicit(side, src, ip);
                }
            }
        }
    }

    fn flush(&mut self) {
        for q in 0..self.poll.len() {
            if self.txq[q].is_empty() {
                continue;
            }
            let port = self.sh.ports[self.poll[q]].id;
            let mut ms: Vec<Mbuf> = self.txq[q].iter().map(|t| t.m).collect();
            let mut sent = 0usize;
            let mut tries = 0;
            while sent < ms.len() && tries < 4 {
                let n = (ms.len() - sent).min(u16::MAX as usize) as u16;
                // SAFETY: pointers to mbufs we own; the PMD takes the sent ones.
                let k = unsafe { sys::bgf_tx_burst(port, 0, ms.as_mut_ptr().add(sent), n) };
                sent += usize::from(k);
                tries += 1;
            }
            self.sh.tx_packets.fetch_add(sent as u64, Ordering::Relaxed);
            for (i, t) in self.txq[q].drain(..).enumerate() {
                if i < sent {
                    if let Some((r, bytes)) = t.fwd {
                        r.count_forwarded(0, 1, bytes as u64);
                    }
                } else {
                    if let Some((r, _)) = t.fwd {
                        r.count_drop(0, Reason::SendError);
                    }
                    Self::free(t.m);
                }
            }
        }
    }
}

// The poll thread owns the raw pointers (pool, mbufs); nothing else uses them.
unsafe impl Send for Poller {}

/// The DPDK backend of one plane. See the module docs.
pub struct DpdkBackend {
    settings: DpdkSettings,
    addrs: Vec<(Side, IpAddr)>,
    own_now: bool,
    shared: Option<Arc<Shared>>,
    attached: Option<Arc<Attached>>,
}

impl DpdkBackend {
    /// A backend relaying for the service addresses `addrs`; with `own_now`
    /// it answers ARP/ND for them from the start (an active), else only
    /// after [`DpdkBackend::announce`] (a standby's idle plane).
    pub fn new(settings: DpdkSettings, addrs: Vec<(Side, IpAddr)>, own_now: bool) -> DpdkBackend {
        DpdkBackend {
            settings,
            addrs,
            own_now,
            shared: None,
            attached: None,
        }
    }

    /// Take ownership of every service address of this plane (answer
    /// ARP/ND for them) and send a gratuitous ARP / unsolicited NA for each
    /// from its port at every offset of `schedule` (from now). Returns the
    /// addresses announced.
    pub fn announce(&self, schedule: &[Duration]) -> Result<Vec<IpAddr>, MediaError> {
        let (Some(sh), Some(a)) = (&self.shared, &self.attached) else {
            return Err(err("the DPDK media plane is not started".into()));
        };
        a.owned.store(Arc::new(self.addrs.clone()));
        let now = Instant::now();
        let mut q = sh.announce.lock().unwrap_or_else(|p| p.into_inner());
        let offsets: &[Duration] = if schedule.is_empty() {
            &[Duration::ZERO]
        } else {
            schedule
        };
        for d in offsets {
            for (side, ip) in &self.addrs {
                q.push((now + *d, *side, *ip));
            }
        }
        sh.has_announce.store(true, Ordering::Release);
        Ok(self.addrs.iter().map(|(_, a)| *a).collect())
    }

    /// The process's poll loop (all planes): packets received, packets
    /// sent, and the time spent in rounds that had packets (its load: the
    /// rest of a busy-polling core is spent finding nothing).
    pub fn poll_totals(&self) -> (u64, u64, Duration) {
        self.shared.as_ref().map_or((0, 0, Duration::ZERO), |s| {
            (
                s.rx_packets.load(Ordering::Relaxed),
                s.tx_packets.load(Ordering::Relaxed),
                Duration::from_nanos(s.busy_ns.load(Ordering::Relaxed)),
            )
        })
    }
}

impl PacketBackend for DpdkBackend {
    type Io = DpdkIo;

    fn start(&mut self, relay: Arc<Relay<DpdkIo>>) -> Result<(), MediaError> {
        let sh = runtime(&self.settings)?;
        let a = Arc::new(Attached {
            id: sh.next_id.fetch_add(1, Ordering::Relaxed),
            relay,
            addrs: self.addrs.clone(),
            owned: ArcSwap::from_pointee(if self.own_now {
                self.addrs.clone()
            } else {
                Vec::new()
            }),
        });
        sh.planes.rcu(|v| {
            let mut v = (**v).clone();
            v.push(a.clone());
            v
        });
        tracing::info!(addresses = ?self.addrs.iter().map(|(s, a)| format!("{s} {a}")).collect::<Vec<_>>(),
            answering = self.own_now, "DPDK media plane attached");
        self.shared = Some(sh);
        self.attached = Some(a);
        Ok(())
    }

    fn open(&self, spec: &PinholeSpec, _prev: Option<&DpdkIo>) -> Result<DpdkIo, MediaError> {
        for (side, _, addr) in local_addrs(spec) {
            if !self
                .addrs
                .iter()
                .any(|(s, a)| *s == side && *a == addr.ip())
            {
                return Err(MediaError::AddressNotLocal { addr });
            }
        }
        Ok(DpdkIo)
    }

    fn close(&self, _io: &DpdkIo, _keep: Option<&DpdkIo>) {}

    fn shutdown(&mut self) {
        if let (Some(sh), Some(a)) = (&self.shared, self.attached.take()) {
            sh.planes.rcu(|v| {
                v.iter()
                    .filter(|p| p.id != a.id)
                    .cloned()
                    .collect::<Vec<_>>()
            });
        }
    }
}
