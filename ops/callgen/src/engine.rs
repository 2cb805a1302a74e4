//! The event loop both roles share: one thread, one epoll set holding the SIP
//! socket and every call's RTP socket, a heap of send deadlines, and the
//! monotonic clock every measurement uses.
//!
//! Sending: every active stream has a next-due time; the loop sends each due
//! packet from the stream's own socket (the port its SDP announced) to the
//! peer's SDP address, then sleeps in `epoll_wait` until the next due packet,
//! SIP timer or arrival. A late loop sends the missed packets at once (seq and
//! timestamps stay continuous) and records how late it was (`tx_max_late_ms`),
//! so a stall of callgen itself is visible in the report.
//!
//! Receiving: level-triggered epoll, one `recv` per ready socket per round
//! (at 50 packets/s per socket there is rarely a second one queued; if there
//! is, the next round gets it). The arrival time is the kernel's receive stamp.
//!
//! Two I/O paths ([`IoMode`]): the **socket** path above (any user), and the
//! **ring** path (CAP_NET_RAW; the default when available, see fastio.rs):
//! sends batched over one raw socket, receives from one packet ring. The
//! schedule, the per-call sockets (ports), and the accounting are the same.

use crate::fastio::{RawTx, Ring};
use crate::rtp::RxStats;
use crate::sdp::Codec;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Token of the SIP socket in the epoll set.
pub const SIP_TOKEN: u64 = u64::MAX;
/// Token of the receive ring in the epoll set.
const RING_TOKEN: u64 = u64::MAX - 1;

/// How media is sent and received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// The ring path if this process may open raw/packet sockets, else sockets.
    Auto,
    /// One `sendto`/`recvmsg` per packet on the call's own socket (any user).
    Socket,
    /// Batched raw-socket sends and a TPACKET_V3 receive ring (CAP_NET_RAW).
    Ring,
}

/// The ring path's state.
struct Fast {
    ring: Ring,
    tx: RawTx,
    /// Local port -> token + 1 (0: not ours).
    port_map: Vec<u64>,
}
/// Sockets per stream (RTP now, RTP before a move, RTCP, spare).
const SOCK_BITS: u64 = 3;

/// The run's clock: ns since start (monotonic) and the wall time of the start.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    t0: Instant,
    /// Wall-clock time of `t0` (ms since the Unix epoch).
    pub t0_unix_ms: f64,
}

impl Clock {
    /// Starts the clock now.
    pub fn start() -> Clock {
        let t0 = Instant::now();
        let t0_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        Clock { t0, t0_unix_ms }
    }

    /// ns since start.
    pub fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// Converts a wall-clock time (ms since the epoch) into ns since start.
    pub fn unix_ms_to_ns(&self, unix_ms: f64) -> u64 {
        ((unix_ms - self.t0_unix_ms).max(0.0) * 1e6) as u64
    }

    /// Converts ns since start into wall-clock ms since the epoch.
    pub fn ns_to_unix_ms(&self, ns: u64) -> f64 {
        self.t0_unix_ms + ns as f64 / 1e6
    }
}

/// A thin epoll wrapper (level-triggered, read interest only).
pub struct Epoll {
    fd: i32,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    /// A new epoll set.
    pub fn new() -> std::io::Result<Epoll> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Epoll {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 4096],
        })
    }

    /// Adds `fd` with `token`.
    pub fn add(&self, fd: i32, token: u64) -> std::io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: ev is a valid epoll_event for the duration of the call.
        let r = unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms`; returns the ready tokens.
    pub fn wait(&mut self, timeout_ms: i32, out: &mut Vec<u64>) {
        out.clear();
        // SAFETY: the buffer holds `len` events.
        let n = unsafe {
            libc::epoll_wait(
                self.fd,
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                timeout_ms,
            )
        };
        for ev in self.events.iter().take(n.max(0) as usize) {
            out.push(ev.u64);
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe {
            libc::close(self.fd);
        }
    }
}

/// Packets per 10 ms bucket since the start of the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Series {
    /// Count per bucket; bucket i covers [10·i, 10·(i+1)) ms since the start.
    pub counts: Vec<u32>,
}

/// Bucket width of [`Series`].
pub const BUCKET_NS: u64 = 10_000_000;

impl Series {
    /// Counts one packet at `now_ns`.
    pub fn add(&mut self, now_ns: u64) {
        let i = (now_ns / BUCKET_NS) as usize;
        if i >= self.counts.len() {
            // Grow by at least a minute of buckets at a time.
            self.counts.resize(i + 6000, 0);
        }
        self.counts[i] += 1;
    }

    /// Drops the unused tail.
    pub fn trim(&mut self, end_ns: u64) {
        self.counts.truncate((end_ns / BUCKET_NS) as usize + 1);
    }
}

/// RTP/RTCP port pairs from a range on one address.
pub struct PortAlloc {
    ip: IpAddr,
    lo: u16,
    hi: u16,
    next: u16,
}

impl PortAlloc {
    /// Ports `lo..=hi` (even ports are used for RTP) on `ip`.
    pub fn new(ip: IpAddr, lo: u16, hi: u16) -> PortAlloc {
        let lo = lo + (lo % 2);
        PortAlloc {
            ip,
            lo,
            hi,
            next: lo,
        }
    }

    /// Binds the next free even port (and the odd one above it if `rtcp`).
    pub fn bind(&mut self, rtcp: bool) -> std::io::Result<(UdpSocket, Option<UdpSocket>)> {
        let span = u32::from(self.hi.saturating_sub(self.lo)) / 2 + 1;
        let mut last_err = None;
        for _ in 0..span {
            let p = self.next;
            self.next = if u32::from(p) + 2 > u32::from(self.hi) {
                self.lo
            } else {
                p + 2
            };
            match UdpSocket::bind(SocketAddr::new(self.ip, p)) {
                Ok(s) => {
                    let r = if rtcp {
                        match UdpSocket::bind(SocketAddr::new(self.ip, p + 1)) {
                            Ok(r) => Some(r),
                            Err(e) => {
                                last_err = Some(e);
                                continue;
                            }
                        }
                    } else {
                        None
                    };
                    s.set_nonblocking(true)?;
                    if let Some(r) = &r {
                        r.set_nonblocking(true)?;
                    }
                    return Ok((s, r));
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(std::io::Error::other(format!(
            "no free RTP port in {}-{} on {} (last error: {}); widen --rtp-ports or lower --concurrent",
            self.lo,
            self.hi,
            self.ip,
            last_err.map(|e| e.to_string()).unwrap_or_default()
        )))
    }
}

/// One call's media on this side.
pub struct Stream {
    /// RTP sockets: the last one is current; earlier ones were moved away
    /// from (kept open, still recorded, until the stream is closed).
    socks: Vec<UdpSocket>,
    /// Their local ports.
    ports: Vec<u16>,
    rtcp_port: Option<u16>,
    /// The socket RTP is sent from.
    cur: usize,
    rtcp: Option<UdpSocket>,
    /// Where RTP goes (the peer's SDP address); None: not sending.
    dest: Option<SocketAddr>,
    rtcp_dest: Option<SocketAddr>,
    seq: u16,
    ts: u32,
    ssrc: u32,
    next_due: u64,
    /// This stream's packet time if not the codec's (a UAS follows the
    /// offer's `a=ptime`).
    ptime_ns: Option<u64>,
    sending: bool,
    /// What arrived (all sockets of this stream).
    pub rx: RxStats,
    /// Packets that arrived on the current socket since the last move.
    pub rx_current: u64,
    /// RTCP packets received.
    pub rtcp_rx: u64,
    /// Packets sent.
    pub tx: u64,
    /// When media was first due (stream start), ns.
    pub start_ns: u64,
    closed: bool,
    next_rtcp_ns: u64,
}

/// Counters of this side's media.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MediaTotals {
    /// RTP packets sent.
    pub tx_packets: u64,
    /// Send errors (ICMP unreachable reported on the socket, buffer full …).
    pub tx_errors: u64,
    /// RTP packets received.
    pub rx_packets: u64,
    /// RTCP packets sent / received.
    pub rtcp_tx: u64,
    /// RTCP packets received.
    pub rtcp_rx: u64,
    /// Largest lateness of a send against its schedule (ms): callgen's own stalls.
    pub tx_max_late_ms: f64,
    /// Sends more than 3 packet times late: the stream's schedule restarted
    /// from then (the receiver sees a gap that callgen, not the SUT, caused).
    #[serde(default)]
    pub tx_stalls: u64,
    /// The I/O path: "socket" or "ring".
    #[serde(default)]
    pub io: String,
    /// Packets the kernel dropped because the receive ring was full (ring
    /// path only): they show as loss although the SUT delivered them.
    #[serde(default)]
    pub rx_ring_drops: u64,
}

/// Most packets sent per [`Media::send_due`] call.
pub const MAX_BATCH: usize = 256;

/// Every stream of this side, the send schedule and the time series.
pub struct Media {
    /// The epoll set (also holds the SIP socket).
    pub epoll: Epoll,
    /// Streams by call index.
    pub streams: Vec<Option<Stream>>,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    /// The codec.
    pub codec: Codec,
    ptime_ns: u64,
    stall_ns: u64,
    buf: Vec<u8>,
    rxbuf: Vec<u8>,
    /// Gaps at least this long are listed per call.
    pub gap_threshold_ns: u64,
    /// Packets received per 10 ms.
    pub rx_series: Series,
    /// Packets sent per 10 ms.
    pub tx_series: Series,
    /// Totals.
    pub totals: MediaTotals,
    /// Send RTCP (SR every 5 s) and count what arrives.
    pub rtcp: bool,
    ports: PortAlloc,
    ready: Vec<u64>,
    ssrc_seed: u32,
    fast: Option<Fast>,
}

impl Media {
    /// A media engine for `codec`, allocating RTP ports from `ports`.
    pub fn new(
        codec: Codec,
        ports: PortAlloc,
        gap_threshold_ns: u64,
        rtcp: bool,
        io: IoMode,
    ) -> std::io::Result<Media> {
        let ptime_ns = u64::from(codec.ptime_ms) * 1_000_000;
        let mut buf = vec![0xd5u8; 12 + codec.payload];
        buf[..12].fill(0);
        let epoll = Epoll::new()?;
        let fast = match io {
            IoMode::Socket => None,
            IoMode::Auto | IoMode::Ring => {
                let open = || -> std::io::Result<Fast> {
                    let ring = Ring::open(ports.ip, ports.lo, ports.hi)?;
                    let tx = RawTx::open(ports.ip, buf[12..].to_vec(), MAX_BATCH)?;
                    Ok(Fast {
                        ring,
                        tx,
                        port_map: vec![0; 65536],
                    })
                };
                match open() {
                    Ok(f) => {
                        epoll.add(f.ring.fd(), RING_TOKEN)?;
                        Some(f)
                    }
                    Err(e) if io == IoMode::Ring => {
                        return Err(std::io::Error::other(format!(
                            "--io ring: cannot open the raw socket / packet ring ({e}); \
                             it needs CAP_NET_RAW (root), or use --io socket"
                        )))
                    }
                    Err(e) => {
                        eprintln!(
                            "bgf-callgen: media over per-call sockets ({e} opening the packet ring; \
                             run as root / with CAP_NET_RAW for the batched path)"
                        );
                        None
                    }
                }
            }
        };
        let totals = MediaTotals {
            io: if fast.is_some() { "ring" } else { "socket" }.into(),
            ..MediaTotals::default()
        };
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1)
            ^ std::process::id().rotate_left(16);
        Ok(Media {
            epoll,
            streams: Vec::new(),
            heap: BinaryHeap::new(),
            codec,
            ptime_ns,
            stall_ns: 3 * ptime_ns,
            buf,
            rxbuf: vec![0u8; 2048],
            gap_threshold_ns,
            rx_series: Series::default(),
            tx_series: Series::default(),
            totals,
            rtcp,
            ports,
            ready: Vec::with_capacity(1024),
            ssrc_seed: seed | 1,
            fast,
        })
    }

    fn next_random(&mut self) -> u32 {
        // xorshift32: SSRCs, initial seq/ts (RFC 3550 wants them random).
        let mut x = self.ssrc_seed;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.ssrc_seed = x;
        x
    }

    /// Opens the stream of call `idx`: binds its RTP (and RTCP) port and
    /// registers them. Returns the RTP address to put in the SDP.
    pub fn open(&mut self, idx: usize) -> std::io::Result<SocketAddr> {
        let (s, r) = self.ports.bind(self.rtcp)?;
        let local = s.local_addr()?;
        let rtcp_port = match &r {
            Some(r) => Some(r.local_addr()?.port()),
            None => None,
        };
        let tok = (idx as u64) << SOCK_BITS;
        self.watch(&s, local.port(), tok)?;
        if let (Some(r), Some(p)) = (&r, rtcp_port) {
            self.watch(r, p, tok | 7)?;
        }
        if self.streams.len() <= idx {
            self.streams.resize_with(idx + 1, || None);
        }
        let (ssrc, seq, ts) = (
            self.next_random(),
            self.next_random() as u16,
            self.next_random(),
        );
        self.streams[idx] = Some(Stream {
            socks: vec![s],
            ports: vec![local.port()],
            rtcp_port,
            cur: 0,
            rtcp: r,
            dest: None,
            rtcp_dest: None,
            seq,
            ts,
            ssrc,
            next_due: 0,
            ptime_ns: None,
            sending: false,
            rx: RxStats::default(),
            rx_current: 0,
            rtcp_rx: 0,
            tx: 0,
            start_ns: 0,
            closed: false,
            next_rtcp_ns: 0,
        });
        Ok(local)
    }

    /// Sends call `idx`'s RTP every `ms` instead of the codec's ptime.
    pub fn set_ptime(&mut self, idx: usize, ms: u32) {
        if let Some(Some(st)) = self.streams.get_mut(idx) {
            st.ptime_ns = Some(u64::from(ms.max(1)) * 1_000_000);
        }
    }

    /// Binds a new RTP port for call `idx` (a re-INVITE moving its media);
    /// sending continues from the old socket until [`switch`](Self::switch).
    pub fn open_new_port(&mut self, idx: usize) -> std::io::Result<SocketAddr> {
        let k = match self.streams.get(idx) {
            Some(Some(st)) if st.socks.len() >= 7 => {
                return Err(std::io::Error::other("too many media moves in one call"))
            }
            Some(Some(st)) => st.socks.len() as u64,
            _ => return Err(std::io::Error::other("no stream")),
        };
        let (s, r) = self.ports.bind(self.rtcp)?;
        let local = s.local_addr()?;
        let tok = (idx as u64) << SOCK_BITS;
        self.watch(&s, local.port(), tok | k)?;
        let mut new_rtcp = None;
        if let Some(r) = &r {
            let p = r.local_addr()?.port();
            self.watch(r, p, tok | 7)?;
            new_rtcp = Some(p);
        }
        let Some(Some(st)) = self.streams.get_mut(idx) else {
            return Err(std::io::Error::other("no stream"));
        };
        st.socks.push(s);
        st.ports.push(local.port());
        let mut old_rtcp = None;
        if let Some(r) = r {
            // RTCP moves with RTP (port + 1); the old RTCP socket closes.
            st.rtcp = Some(r);
            old_rtcp = std::mem::replace(&mut st.rtcp_port, new_rtcp);
        }
        st.rx_current = 0;
        if let (Some(f), Some(p)) = (&mut self.fast, old_rtcp) {
            f.port_map[usize::from(p)] = 0;
        }
        Ok(local)
    }

    /// Registers a stream socket: in the epoll set (socket path), or in the
    /// port map with a drop-everything filter on the socket (ring path).
    fn watch(&mut self, s: &UdpSocket, port: u16, tok: u64) -> std::io::Result<()> {
        match &mut self.fast {
            None => {
                enable_rx_timestamps(s);
                self.epoll.add(s.as_raw_fd(), tok)
            }
            Some(f) => {
                crate::fastio::drop_all(s.as_raw_fd())?;
                f.port_map[usize::from(port)] = tok + 1;
                Ok(())
            }
        }
    }

    /// Sends from the newest socket from now on.
    pub fn switch(&mut self, idx: usize) {
        if let Some(Some(st)) = self.streams.get_mut(idx) {
            st.cur = st.socks.len().saturating_sub(1);
        }
    }

    /// Starts (or redirects) sending to `dest` at `now`.
    pub fn send_to(&mut self, idx: usize, dest: SocketAddr, rtcp_dest: SocketAddr, now: u64) {
        let Some(Some(st)) = self.streams.get_mut(idx) else {
            return;
        };
        if st.closed {
            return;
        }
        st.dest = Some(dest);
        st.rtcp_dest = Some(rtcp_dest);
        if !st.sending {
            st.sending = true;
            st.start_ns = now;
            st.next_due = now;
            st.next_rtcp_ns = now + 1_000_000_000;
            self.heap.push(Reverse((now, idx as u32)));
        }
    }

    /// Stops sending and closes the record at `now` (the trailing silence
    /// counts as a gap); the sockets are closed.
    pub fn close(&mut self, idx: usize, now: u64) {
        let thr = self.gap_threshold_ns;
        if let Some(Some(st)) = self.streams.get_mut(idx) {
            if st.closed {
                return;
            }
            st.closed = true;
            st.sending = false;
            let start = if st.start_ns > 0 { st.start_ns } else { now };
            st.rx.close(start, now, thr);
            st.socks.clear();
            st.rtcp = None;
            if let Some(f) = &mut self.fast {
                for p in st.ports.iter().chain(st.rtcp_port.iter()) {
                    f.port_map[usize::from(*p)] = 0;
                }
            }
        }
    }

    /// The stream of call `idx`.
    pub fn stream(&self, idx: usize) -> Option<&Stream> {
        self.streams.get(idx).and_then(|s| s.as_ref())
    }

    /// Sends the packets due at or before `now`, at most [`MAX_BATCH`] of
    /// them; returns whether more are due (poll without sleeping, then call
    /// again), so receiving is never starved by a long catch-up.
    pub fn send_due(&mut self, now: u64) -> bool {
        let mut n = 0;
        let mut more = false;
        while let Some(&Reverse((due, idx))) = self.heap.peek() {
            if due > now {
                break;
            }
            if n >= MAX_BATCH {
                more = true;
                break;
            }
            n += 1;
            self.heap.pop();
            let Some(Some(st)) = self.streams.get_mut(idx as usize) else {
                continue;
            };
            if !st.sending || st.next_due != due {
                continue;
            }
            let (Some(dest), Some(sock)) = (st.dest, st.socks.get(st.cur)) else {
                continue;
            };
            crate::rtp::write_header(&mut self.buf, self.codec.pt, st.seq, st.ts, st.ssrc);
            match &mut self.fast {
                None => match sock.send_to(&self.buf, dest) {
                    Ok(_) => {
                        self.totals.tx_packets += 1;
                        st.tx += 1;
                        self.tx_series.add(now);
                    }
                    Err(_) => self.totals.tx_errors += 1,
                },
                Some(f) => {
                    let mut hdr = [0u8; 12];
                    hdr.copy_from_slice(&self.buf[..12]);
                    let sport = st.ports.get(st.cur).copied().unwrap_or(0);
                    // Counted when the batch is flushed below.
                    if !f.tx.push(idx, sport, dest, &hdr) {
                        self.totals.tx_errors += 1;
                    }
                }
            }
            let late = now - due;
            let late_ms = late as f64 / 1e6;
            if late_ms > self.totals.tx_max_late_ms {
                self.totals.tx_max_late_ms = late_ms;
            }
            let (ptime, step) = match st.ptime_ns {
                Some(p) => (p, (u64::from(self.codec.clock) * p / 1_000_000_000) as u32),
                None => (self.ptime_ns, self.codec.ts_step()),
            };
            st.seq = st.seq.wrapping_add(1);
            st.ts = st.ts.wrapping_add(step);
            st.next_due = due + ptime;
            if late > self.stall_ns.max(3 * ptime) {
                // callgen itself stalled: do not burst the missed packets
                // (that feeds the overload); resume the clock from now, with
                // the RTP timestamp advanced and the sequence continuous, so
                // the receiver sees a gap, not loss.
                let missed = late / ptime;
                st.ts = st.ts.wrapping_add(step.wrapping_mul(missed as u32));
                st.next_due = now + ptime;
                self.totals.tx_stalls += 1;
            }
            self.heap.push(Reverse((st.next_due, idx)));
        }
        if let Some(f) = &mut self.fast {
            let (streams, totals, series) =
                (&mut self.streams, &mut self.totals, &mut self.tx_series);
            f.tx.flush(|idx, ok| {
                if ok {
                    totals.tx_packets += 1;
                    series.add(now);
                    if let Some(Some(st)) = streams.get_mut(idx as usize) {
                        st.tx += 1;
                    }
                } else {
                    totals.tx_errors += 1;
                }
            });
        }
        more
    }

    /// Brings the counters the kernel keeps (ring drops) into `totals`.
    pub fn refresh_totals(&mut self) {
        if let Some(f) = &mut self.fast {
            f.ring.update_drops();
            self.totals.rx_ring_drops = f.ring.drops;
        }
    }

    /// Sends RTCP sender reports that are due (every 5 s per stream).
    pub fn send_rtcp_due(&mut self, now: u64, clock: &Clock) {
        if !self.rtcp {
            return;
        }
        for st in self.streams.iter_mut().flatten() {
            if !st.sending || now < st.next_rtcp_ns {
                continue;
            }
            st.next_rtcp_ns = now + 5_000_000_000;
            let (Some(sock), Some(dest)) = (&st.rtcp, st.rtcp_dest) else {
                continue;
            };
            let unix = clock.ns_to_unix_ms(now) / 1000.0 + 2_208_988_800.0;
            let secs = unix as u32;
            let frac = ((unix - f64::from(secs)) * 4_294_967_296.0) as u32;
            let mut sr = [0u8; 28];
            sr[0] = 0x80;
            sr[1] = 200;
            sr[2..4].copy_from_slice(&6u16.to_be_bytes());
            sr[4..8].copy_from_slice(&st.ssrc.to_be_bytes());
            sr[8..12].copy_from_slice(&secs.to_be_bytes());
            sr[12..16].copy_from_slice(&frac.to_be_bytes());
            sr[16..20].copy_from_slice(&st.ts.to_be_bytes());
            sr[20..24].copy_from_slice(&(st.tx as u32).to_be_bytes());
            let octets = (st.tx as u32).wrapping_mul(self.codec.payload as u32);
            sr[24..28].copy_from_slice(&octets.to_be_bytes());
            if sock.send_to(&sr, dest).is_ok() {
                self.totals.rtcp_tx += 1;
            }
        }
    }

    /// When the next packet is due (ns), if any stream is sending.
    pub fn next_due(&self) -> Option<u64> {
        self.heap.peek().map(|r| r.0 .0)
    }

    /// Waits up to `timeout_ms` for arrivals; records RTP arrivals and returns
    /// whether the SIP socket is readable.
    pub fn poll(&mut self, timeout_ms: i32, clock: &Clock) -> bool {
        let mut ready = std::mem::take(&mut self.ready);
        self.epoll.wait(timeout_ms, &mut ready);
        let mut sip = false;
        // Arrival = now − (realtime now − the kernel's realtime receive
        // stamp): the stamp is only used for how long ago the packet
        // arrived, so every time stays on the monotonic clock.
        let (mono_now, rt_now) = (clock.now_ns(), realtime_ns());
        let mut cbuf = [0u8; 64];
        if let Some(f) = &mut self.fast {
            // Every ready block of the ring (not only when epoll said so:
            // checking costs one load). The stamps map onto the monotonic
            // clock by the offset between the two clocks read just now.
            let (mono_now, rt_now) = (clock.now_ns() as i128, realtime_ns());
            let Fast { ring, port_map, .. } = f;
            let (streams, totals, rx_series, thr) = (
                &mut self.streams,
                &mut self.totals,
                &mut self.rx_series,
                self.gap_threshold_ns,
            );
            ring.drain(u32::MAX, |p| {
                let Some(tok) = port_map[usize::from(p.port)].checked_sub(1) else {
                    return;
                };
                let (idx, k) = ((tok >> SOCK_BITS) as usize, tok & ((1 << SOCK_BITS) - 1));
                let Some(Some(st)) = streams.get_mut(idx) else {
                    return;
                };
                if st.closed {
                    return;
                }
                if k == 7 {
                    st.rtcp_rx += 1;
                    totals.rtcp_rx += 1;
                    return;
                }
                let now = (mono_now + (p.stamp_rt_ns - rt_now)).max(0) as u64;
                st.rx.record(p.payload, now, thr);
                if k as usize + 1 == st.socks.len() {
                    st.rx_current += 1;
                }
                totals.rx_packets += 1;
                rx_series.add(now);
            });
        }
        for &tok in &ready {
            if tok == SIP_TOKEN {
                sip = true;
                continue;
            }
            if tok == RING_TOKEN {
                continue;
            }
            let idx = (tok >> SOCK_BITS) as usize;
            let k = (tok & ((1 << SOCK_BITS) - 1)) as usize;
            let Some(Some(st)) = self.streams.get_mut(idx) else {
                continue;
            };
            if k == 7 {
                if let Some(r) = &st.rtcp {
                    while r.recv(&mut self.rxbuf).is_ok() {
                        st.rtcp_rx += 1;
                        self.totals.rtcp_rx += 1;
                    }
                }
                continue;
            }
            let Some(sock) = st.socks.get(k) else {
                continue;
            };
            // None here is an ICMP error queued on the socket, or a spurious wakeup.
            if let Some((n, stamp)) = recv_stamped(sock, &mut self.rxbuf, &mut cbuf) {
                let now = match stamp {
                    Some(k) if k <= rt_now => mono_now.saturating_sub((rt_now - k) as u64),
                    _ => clock.now_ns(),
                };
                st.rx.record(&self.rxbuf[..n], now, self.gap_threshold_ns);
                if k + 1 == st.socks.len() {
                    st.rx_current += 1;
                }
                self.totals.rx_packets += 1;
                self.rx_series.add(now);
            }
        }
        self.ready = ready;
        sip
    }

    /// The longest current silence among open streams that have received
    /// something (ms).
    pub fn worst_current_gap_ms(&self, now: u64) -> f64 {
        self.streams
            .iter()
            .flatten()
            .filter(|s| !s.closed)
            .filter_map(|s| s.rx.last_ns())
            .map(|l| now.saturating_sub(l) as f64 / 1e6)
            .fold(0.0, f64::max)
    }
}

/// `SO_TIMESTAMPNS` / `SCM_TIMESTAMPNS` (asm-generic; x86_64 and aarch64).
const SO_TIMESTAMPNS: i32 = 35;

/// Asks the kernel to stamp every received datagram (so a late loop turn
/// does not show as a media gap).
fn enable_rx_timestamps(sock: &UdpSocket) {
    let one: i32 = 1;
    // SAFETY: valid fd and option buffer.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_TIMESTAMPNS,
            &one as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as u32,
        );
    }
}

/// CLOCK_REALTIME in ns.
fn realtime_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// One datagram and its kernel receive stamp (realtime ns), if any.
fn recv_stamped(
    sock: &UdpSocket,
    buf: &mut [u8],
    cbuf: &mut [u8; 64],
) -> Option<(usize, Option<i128>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = cbuf.len() as _;
    // SAFETY: msg points at valid buffers.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return None;
    }
    let mut stamp = None;
    // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == SO_TIMESTAMPNS {
                let t: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                stamp = Some(i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Some((n as usize, stamp))
}

/// Set by SIGUSR1: the marker.
pub static MARKER_SIGNAL: AtomicBool = AtomicBool::new(false);
/// Set by SIGINT/SIGTERM: finish now.
pub static STOP_SIGNAL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: i32) {
    MARKER_SIGNAL.store(true, Ordering::SeqCst);
}
extern "C" fn on_stop(_: i32) {
    STOP_SIGNAL.store(true, Ordering::SeqCst);
}

/// Installs the SIGUSR1 (marker) and SIGINT/SIGTERM (finish) handlers, and
/// raises the open-file limit to its hard maximum (two sockets per call).
pub fn install_process_setup() {
    // SAFETY: the handlers only store to atomics (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Sets a socket's receive buffer (forced past rmem_max when root).
pub fn set_rcvbuf(sock: &UdpSocket, bytes: i32) {
    let fd = sock.as_raw_fd();
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: valid fd and option buffer.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &bytes as *const i32 as *const libc::c_void,
                std::mem::size_of::<i32>() as u32,
            )
        };
        if r == 0 {
            return;
        }
    }
}

/// CPU time this process used so far.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Cpu {
    /// User time (s).
    pub user_s: f64,
    /// System time (s).
    pub sys_s: f64,
    /// Wall time of the run (s).
    pub wall_s: f64,
    /// Peak resident set size (MiB).
    pub max_rss_mib: f64,
}

impl Cpu {
    /// getrusage(RUSAGE_SELF) now, with the run's wall time.
    pub fn now(clock: &Clock) -> Cpu {
        // SAFETY: zeroed rusage is a valid out-buffer.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Cpu {
            user_s: tv(ru.ru_utime),
            sys_s: tv(ru.ru_stime),
            wall_s: clock.now_ns() as f64 / 1e9,
            max_rss_mib: ru.ru_maxrss as f64 / 1024.0,
        }
    }

    /// user + sys.
    pub fn total_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

/// `timeout` in ms for epoll, rounded up, capped at `cap_ms`.
pub fn timeout_ms(now: u64, deadline: Option<u64>, cap_ms: i32) -> i32 {
    match deadline {
        None => cap_ms,
        Some(d) if d <= now => 0,
        Some(d) => {
            let ms = (d - now).div_ceil(1_000_000);
            ms.min(cap_ms as u64) as i32
        }
    }
}

/// A short sleep helper for retry loops outside the event loop.
pub fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}
