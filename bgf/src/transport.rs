//! SIP transports: per side a UDP socket and a TCP listener on the side's SIP
//! service address, TCP stream framing by Content-Length (RFC 3261 §18.3) with
//! RFC 5626 CRLF keep-alives, and the table of open TCP connections used to
//! send responses and requests back over the right connection.
//!
//! UDP is read and written by the core loop itself ([`Transports::read_udp`]
//! drains a socket with `recvmmsg`; sends are queued in an [`Outbox`] and
//! [`Transports::flush`]ed with `sendmmsg`), so a datagram never crosses
//! threads or tasks on its way to the core. TCP connections run as tasks and
//! put every complete message as an `Input::Sip` on the core loop's channel.
//! Nothing here interprets SIP beyond finding the end of a message.

use crate::udp::{self, RecvBatch};
use media_plane::Side;
use serde::Serialize;
use sip_control::{Input, SipIn, Transmit, Transport};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

/// Wall-clock milliseconds since the UNIX epoch (the core's `Millis`).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Transport counters, shared by the socket tasks and the core loop.
#[derive(Debug, Default)]
pub struct Counters {
    pub udp_rx: AtomicU64,
    pub udp_tx: AtomicU64,
    pub tcp_rx: AtomicU64,
    pub tcp_tx: AtomicU64,
    pub oversize_drops: AtomicU64,
    pub framing_errors: AtomicU64,
    pub send_errors: AtomicU64,
    pub core_queue_full: AtomicU64,
    /// New INVITEs refused with 503: no descriptors left for media sockets.
    pub refused_media: AtomicU64,
    /// Inbound SIP TCP connections refused: over the total or per-IP cap.
    pub tcp_refused: AtomicU64,
    /// Bad-input log lines of the transports suppressed by the rate limit.
    pub log_suppressed: AtomicU64,
    /// SIP TCP connections closed: a started message did not complete in
    /// time (slow header/body), or nothing arrived for the idle timeout, or
    /// the peer did not read what we sent.
    pub tcp_timeouts: AtomicU64,
    /// SIP responses received / sent by status class (index 0 = 1xx).
    pub responses_rx: [AtomicU64; 6],
    pub responses_tx: [AtomicU64; 6],
}

/// SIP responses by status class, `[1xx, 2xx, 3xx, 4xx, 5xx, 6xx]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SipResponses {
    pub received: [u64; 6],
    pub sent: [u64; 6],
}

/// The status class of a SIP response (0 = 1xx .. 5 = 6xx), `None` for a
/// request or anything else.
pub fn response_class(data: &[u8]) -> Option<usize> {
    let rest = data.strip_prefix(b"SIP/2.0 ")?;
    match rest.first()? {
        d @ b'1'..=b'6' => Some(usize::from(d - b'1')),
        _ => None,
    }
}

impl Counters {
    /// Count a SIP response received (`sent == false`) or sent.
    pub fn count_response(&self, data: &[u8], sent: bool) {
        if let Some(k) = response_class(data) {
            let arr = if sent {
                &self.responses_tx
            } else {
                &self.responses_rx
            };
            bump(&arr[k]);
        }
    }
}

/// A snapshot of [`Counters`] (the `transport` object of `/v1/stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TransportStats {
    pub udp_rx: u64,
    pub udp_tx: u64,
    pub tcp_rx: u64,
    pub tcp_tx: u64,
    pub oversize_drops: u64,
    pub framing_errors: u64,
    pub send_errors: u64,
    pub core_queue_full: u64,
    /// New INVITEs refused with 503: no descriptors left for media sockets.
    pub refused_media: u64,
    /// Inbound SIP TCP connections refused: over the total or per-IP cap.
    pub tcp_refused: u64,
    /// Bad-input log lines of the transports suppressed by the rate limit.
    pub log_suppressed: u64,
    /// SIP TCP connections closed for a slow message, idleness or a peer
    /// not reading.
    pub tcp_timeouts: u64,
    /// Open (or connecting) SIP TCP connections, both sides.
    pub tcp_connections: u64,
    /// SIP responses by direction and status class.
    pub sip_responses: SipResponses,
}

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub fn snapshot(&self) -> TransportStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            udp_rx: g(&self.udp_rx),
            udp_tx: g(&self.udp_tx),
            tcp_rx: g(&self.tcp_rx),
            tcp_tx: g(&self.tcp_tx),
            oversize_drops: g(&self.oversize_drops),
            framing_errors: g(&self.framing_errors),
            send_errors: g(&self.send_errors),
            core_queue_full: g(&self.core_queue_full),
            refused_media: g(&self.refused_media),
            tcp_refused: g(&self.tcp_refused),
            log_suppressed: g(&self.log_suppressed),
            tcp_timeouts: g(&self.tcp_timeouts),
            tcp_connections: 0,
            sip_responses: SipResponses {
                received: self.responses_rx.each_ref().map(g),
                sent: self.responses_tx.each_ref().map(g),
            },
        }
    }
}

// ---------------------------------------------------------------- framing

/// One unit read off a SIP TCP stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete SIP message (header section and body).
    Message(Vec<u8>),
    /// A CRLFCRLF keep-alive ping; answer with CRLF (RFC 5626 §3.5.1).
    Ping,
}

/// Why a stream can no longer be framed; the connection must be closed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message without Content-Length (mandatory on TCP, RFC 3261 §18.3)")]
    MissingContentLength,
    #[error("invalid Content-Length {0:?}")]
    BadContentLength(String),
    #[error("header section larger than {0} bytes")]
    HeaderTooLarge(usize),
    #[error("message of {size} bytes exceeds max_message_bytes {max}")]
    MessageTooLarge { size: usize, max: usize },
}

/// Splits a TCP byte stream into SIP messages by Content-Length.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for the end of the header section.
    scanned: usize,
    max: usize,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The Content-Length of a header section (start line included, final CRLFCRLF excluded).
fn content_length(headers: &[u8]) -> Result<usize, FrameError> {
    let mut found: Option<usize> = None;
    for line in headers.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            continue; // continuation of a folded header
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let value = line[colon + 1..].trim_ascii();
        let bad = || FrameError::BadContentLength(String::from_utf8_lossy(value).into_owned());
        if value.is_empty() || value.len() > 9 || !value.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let n: usize = std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        match found {
            Some(prev) if prev != n => return Err(bad()),
            _ => found = Some(n),
        }
    }
    found.ok_or(FrameError::MissingContentLength)
}

impl Framer {
    /// A framer for messages of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Framer {
            buf: Vec::new(),
            scanned: 0,
            max,
        }
    }

    /// Append bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        // Keep-alives between messages: CRLFCRLF is a ping, a lone CRLF a pong.
        while self.buf.starts_with(b"\r\n") {
            if self.buf.starts_with(b"\r\n\r\n") {
                self.buf.drain(..4);
                self.scanned = 0;
                return Ok(Some(Frame::Ping));
            }
            if b"\r\n\r\n".starts_with(&self.buf) {
                return Ok(None); // maybe the start of a ping
            }
            self.buf.drain(..2);
            self.scanned = 0;
        }
        let from = self.scanned.saturating_sub(3);
        let Some(pos) = find(&self.buf[from..], b"\r\n\r\n") else {
            self.scanned = self.buf.len();
            if self.buf.len() > self.max {
                return Err(FrameError::HeaderTooLarge(self.max));
            }
            return Ok(None);
        };
        let header_end = from + pos;
        if header_end + 4 > self.max {
            return Err(FrameError::HeaderTooLarge(self.max));
        }
        self.scanned = header_end;
        let body = content_length(&self.buf[..header_end])?;
        let total = header_end + 4 + body;
        if total > self.max {
            return Err(FrameError::MessageTooLarge {
                size: total,
                max: self.max,
            });
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        let msg = std::mem::replace(&mut self.buf, rest);
        self.scanned = 0;
        Ok(Some(Frame::Message(msg)))
    }
}

/// Whether a UDP datagram is only a CRLF keep-alive.
fn is_keepalive(data: &[u8]) -> bool {
    !data.is_empty() && data.iter().all(|b| *b == b'\r' || *b == b'\n')
}

// ---------------------------------------------------------------- sockets

/// The sockets of one side, bound but not yet serving.
pub struct BoundSide {
    pub addr: SocketAddr,
    pub udp: UdpSocket,
    pub tcp: TcpListener,
}

fn bind_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::AddrNotAvailable => "is the address configured on this host?",
        io::ErrorKind::AddrInUse => "is another bgf or SIP server already using it?",
        io::ErrorKind::PermissionDenied => "ports below 1024 need root or CAP_NET_BIND_SERVICE",
        _ => "check the address in the config",
    }
}

/// Receive buffer asked for on the SIP UDP sockets: the core loop reads
/// them on one thread, so a burst (or the thread being descheduled for a few
/// milliseconds) must queue in the kernel instead of being dropped.
const SIP_UDP_RCVBUF: libc::c_int = 16 << 20;

/// Raise the socket's receive buffer to [`SIP_UDP_RCVBUF`]: with
/// `SO_RCVBUFFORCE` when privileged, else as far as `net.core.rmem_max`
/// allows (logged, since bursts may then be dropped).
fn grow_receive_buffer(udp: &UdpSocket, side: Side) {
    let fd = udp.as_raw_fd();
    let set = |opt: libc::c_int| {
        // SAFETY: valid fd, pointer to a c_int of the given size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&SIP_UDP_RCVBUF as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    };
    if !set(libc::SO_RCVBUFFORCE) && !set(libc::SO_RCVBUF) {
        warn!(side = %side, error = %io::Error::last_os_error(), "cannot raise the SIP UDP receive buffer; bursts may be dropped");
        return;
    }
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd, out-pointers of the right size.
    let ok = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut got as *mut libc::c_int).cast(),
            &mut len,
        ) == 0
    };
    if ok && got < SIP_UDP_RCVBUF {
        info!(side = %side, bytes = got, wanted = SIP_UDP_RCVBUF, "SIP UDP receive buffer limited by net.core.rmem_max; raise it (sysctl) if SIP bursts are dropped");
    }
}

/// Bind the UDP socket and TCP listener of `side` on `addr`.
pub async fn bind_side(side: Side, addr: SocketAddr) -> Result<BoundSide, String> {
    let udp = UdpSocket::bind(addr).await.map_err(|e| {
        format!(
            "cannot bind {side}.sip {addr} (udp): {e} — {}",
            bind_hint(&e)
        )
    })?;
    grow_receive_buffer(&udp, side);
    let tcp = TcpListener::bind(addr).await.map_err(|e| {
        format!(
            "cannot bind {side}.sip {addr} (tcp): {e} — {}",
            bind_hint(&e)
        )
    })?;
    Ok(BoundSide { addr, udp, tcp })
}

struct ConnEntry {
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
}

struct SideNet {
    addr: SocketAddr,
    udp: Arc<UdpSocket>,
}

/// UDP datagrams queued by the core loop, per side, sent by
/// [`Transports::flush`] in the order queued.
#[derive(Debug, Default)]
pub struct Outbox {
    access: Vec<(SocketAddr, Vec<u8>)>,
    core: Vec<(SocketAddr, Vec<u8>)>,
}

impl Outbox {
    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.access.is_empty() && self.core.is_empty()
    }
}

/// Running transports: sends on behalf of the core loop.
pub struct Transports {
    counters: Arc<Counters>,
    limits: TcpLimits,
    /// Accepted access-side connections per source key.
    per_ip: Mutex<HashMap<std::net::IpAddr, usize>>,
    /// Bounds bad-input log lines (oversize datagrams, unframeable streams).
    log_gate: Mutex<sip_control::limits::LogGate>,
    access: SideNet,
    core: SideNet,
    conns: Mutex<HashMap<(Side, SocketAddr), ConnEntry>>,
    next_conn: AtomicU64,
    inputs: mpsc::Sender<Input>,
    max_message: usize,
    shutdown: watch::Receiver<bool>,
}

/// Messages queued per TCP connection before sends count as errors.
const CONN_QUEUE: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A write to a peer that does not read fails after this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits on SIP over TCP (from `[limits]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpLimits {
    /// Open connections (both sides) beyond which inbound ones are refused,
    /// so a flood cannot exhaust the descriptors media needs.
    pub max_total: usize,
    /// Inbound access connections per source (IPv6: per prefix).
    pub max_per_ip: usize,
    /// IPv6 sources are counted by this prefix.
    pub ipv6_source_prefix: u8,
    /// A message whose first bytes arrived must be complete within this.
    pub message_timeout: Duration,
    /// A connection that receives nothing (not even a keep-alive) for this
    /// long is closed.
    pub idle_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        let g = crate::border::GuardSettings::default();
        TcpLimits::from(&g)
    }
}

impl From<&crate::border::GuardSettings> for TcpLimits {
    fn from(g: &crate::border::GuardSettings) -> Self {
        TcpLimits {
            max_total: g.tcp_max_connections,
            max_per_ip: g.tcp_max_connections_per_ip,
            ipv6_source_prefix: g.ipv6_source_prefix,
            message_timeout: g.tcp_header_timeout,
            idle_timeout: g.tcp_idle_timeout,
        }
    }
}

impl Transports {
    /// Start serving both sides: spawns the TCP acceptors (in `span`, which
    /// carries the instance name); the UDP sockets are read by the core loop
    /// ([`Self::read_udp`]). The acceptors stop when `shutdown` turns true;
    /// the returned handles finish then.
    pub fn start(
        access: BoundSide,
        core: BoundSide,
        counters: Arc<Counters>,
        inputs: mpsc::Sender<Input>,
        max_message: usize,
        shutdown: watch::Receiver<bool>,
        span: tracing::Span,
    ) -> (Arc<Transports>, Vec<JoinHandle<()>>) {
        Self::start_with(
            access,
            core,
            counters,
            inputs,
            max_message,
            shutdown,
            span,
            TcpLimits::default(),
        )
    }

    /// [`Self::start`] with explicit TCP limits.
    #[allow(clippy::too_many_arguments)]
    pub fn start_with(
        access: BoundSide,
        core: BoundSide,
        counters: Arc<Counters>,
        inputs: mpsc::Sender<Input>,
        max_message: usize,
        shutdown: watch::Receiver<bool>,
        span: tracing::Span,
        limits: TcpLimits,
    ) -> (Arc<Transports>, Vec<JoinHandle<()>>) {
        let t = Arc::new(Transports {
            counters,
            limits,
            per_ip: Mutex::new(HashMap::new()),
            log_gate: Mutex::new(Default::default()),
            access: SideNet {
                addr: access.addr,
                udp: Arc::new(access.udp),
            },
            core: SideNet {
                addr: core.addr,
                udp: Arc::new(core.udp),
            },
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            inputs,
            max_message,
            shutdown,
        });
        let mut handles = Vec::new();
        for (side, tcp) in [(Side::Access, access.tcp), (Side::Core, core.tcp)] {
            handles.push(tokio::spawn(
                t.clone().tcp_acceptor(side, tcp).instrument(span.clone()),
            ));
        }
        (t, handles)
    }

    fn side(&self, side: Side) -> &SideNet {
        match side {
            Side::Access => &self.access,
            Side::Core => &self.core,
        }
    }

    /// Number of open (or connecting) TCP connections.
    pub fn tcp_connections(&self) -> usize {
        self.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// The UDP socket of `side` (the core loop awaits its readiness).
    pub fn udp(&self, side: Side) -> Arc<UdpSocket> {
        self.side(side).udp.clone()
    }

    /// Read what is queued on `side`'s UDP socket (one `recvmmsg`, up to
    /// [`udp::BATCH`] datagrams) and append the SIP messages to `out`
    /// (keep-alives skipped, oversize datagrams counted and dropped).
    /// `Ok(n)` = datagrams read; `WouldBlock` = none queued (readiness
    /// cleared: await `readable()` again). `batch` holds buffers of
    /// `max_message + 1` bytes.
    pub fn read_udp(
        &self,
        side: Side,
        batch: &mut RecvBatch,
        out: &mut Vec<Input>,
    ) -> io::Result<usize> {
        let net = self.side(side);
        let n = net
            .udp
            .try_io(Interest::READABLE, || batch.recv(net.udp.as_raw_fd()))?;
        let at = now_ms();
        for i in 0..n {
            let (src, data) = batch.get(i);
            let Some(src) = src else { continue };
            if data.is_empty() || is_keepalive(data) {
                continue;
            }
            if data.len() > self.max_message {
                bump(&self.counters.oversize_drops);
                if let Some(n) = self.bad_input_log(at) {
                    warn!(side = %side, peer = %src, suppressed = n, "dropped UDP datagram larger than sip.max_message_bytes ({})", self.max_message);
                }
                continue;
            }
            bump(&self.counters.udp_rx);
            out.push(Input::Sip(SipIn {
                side,
                transport: Transport::Udp,
                src,
                dst: net.addr,
                at,
                data: data.to_vec(),
            }));
        }
        Ok(n)
    }

    async fn tcp_acceptor(self: Arc<Self>, side: Side, listener: TcpListener) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.changed() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(side = %side, error = %e, "tcp accept failed (out of file descriptors? raise the limit)");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let total = self.tcp_connections();
            if total >= self.limits.max_total {
                let n = self.counters.tcp_refused.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    warn!(side = %side, peer = %peer, limit = self.limits.max_total, refused = n, "refusing SIP TCP connections: limits.tcp_max_connections reached (idle clients not closing? a flood?)");
                }
                drop(stream);
                continue;
            }
            if side == Side::Access && !self.take_ip_slot(peer.ip()) {
                let n = self.counters.tcp_refused.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    warn!(side = %side, peer = %peer, limit = self.limits.max_per_ip, refused = n, "refusing SIP TCP connections: limits.tcp_max_connections_per_ip reached for this source");
                }
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let (tx, rx) = mpsc::channel(CONN_QUEUE);
            let id = self.register(side, peer, tx.clone());
            debug!(side = %side, peer = %peer, conn = id, "tcp connection accepted");
            let me = self.clone();
            tokio::spawn(
                async move {
                    me.clone().connection(side, peer, id, stream, tx, rx).await;
                    if side == Side::Access {
                        me.release_ip_slot(peer.ip());
                    }
                }
                .in_current_span(),
            );
        }
        debug!(side = %side, "tcp acceptor stopped");
    }

    /// Whether a bad-input line may be logged now (`Some(suppressed since)`).
    fn bad_input_log(&self, now: u64) -> Option<u64> {
        let mut g = self.log_gate.lock().ok()?;
        let r = g.allow(sip_control::limits::LogKind::Malformed, now);
        self.counters
            .log_suppressed
            .store(g.total_suppressed, Ordering::Relaxed);
        r
    }

    fn ip_key(&self, ip: std::net::IpAddr) -> std::net::IpAddr {
        sip_control::policy::source_key(ip, self.limits.ipv6_source_prefix)
    }

    /// Count one more inbound access connection from `ip`, unless it has
    /// its share already.
    fn take_ip_slot(&self, ip: std::net::IpAddr) -> bool {
        let key = self.ip_key(ip);
        let Ok(mut m) = self.per_ip.lock() else {
            return false;
        };
        let n = m.entry(key).or_default();
        if *n >= self.limits.max_per_ip {
            return false;
        }
        *n += 1;
        true
    }

    fn release_ip_slot(&self, ip: std::net::IpAddr) {
        let key = self.ip_key(ip);
        if let Ok(mut m) = self.per_ip.lock() {
            if let Some(n) = m.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&key);
                }
            }
        }
    }

    fn register(&self, side: Side, peer: SocketAddr, tx: mpsc::Sender<Vec<u8>>) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut c) = self.conns.lock() {
            c.insert((side, peer), ConnEntry { id, tx });
        }
        id
    }

    fn unregister(&self, side: Side, peer: SocketAddr, id: u64) {
        if let Ok(mut c) = self.conns.lock() {
            if c.get(&(side, peer)).is_some_and(|e| e.id == id) {
                c.remove(&(side, peer));
            }
        }
    }

    /// Serve one TCP connection until it closes, fails to frame, or shutdown.
    async fn connection(
        self: Arc<Self>,
        side: Side,
        peer: SocketAddr,
        id: u64,
        mut stream: TcpStream,
        tx: mpsc::Sender<Vec<u8>>,
        mut rx: mpsc::Receiver<Vec<u8>>,
    ) {
        // Our own sender only keeps the table's entry meaningful; drop it so
        // that the queue closes once the table forgets the connection.
        drop(tx);
        let local = self.side(side).addr;
        let mut framer = Framer::new(self.max_message);
        let mut buf = vec![0u8; 16 * 1024];
        let mut shutdown = self.shutdown.clone();
        // Idle: nothing received for idle_timeout. Slow: a message started
        // (bytes buffered) but not complete within message_timeout.
        let mut last_rx = tokio::time::Instant::now();
        let mut started: Option<tokio::time::Instant> = None;
        'conn: loop {
            let deadline = match started {
                Some(t) => t + self.limits.message_timeout,
                None => last_rx + self.limits.idle_timeout,
            };
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep_until(deadline) => {
                    bump(&self.counters.tcp_timeouts);
                    let why = if started.is_some() { "a message did not complete within limits.tcp_header_timeout_s" } else { "nothing received within limits.tcp_idle_timeout_s" };
                    debug!(side = %side, peer = %peer, why, "closing SIP TCP connection");
                    break;
                }
                out = rx.recv() => {
                    let Some(data) = out else { break };
                    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&data)).await {
                        Ok(Ok(())) => bump(&self.counters.tcp_tx),
                        Ok(Err(e)) => {
                            bump(&self.counters.send_errors);
                            warn!(side = %side, peer = %peer, error = %e, "tcp send failed, closing connection");
                            break;
                        }
                        Err(_) => {
                            bump(&self.counters.send_errors);
                            bump(&self.counters.tcp_timeouts);
                            debug!(side = %side, peer = %peer, "closing SIP TCP connection: the peer does not read");
                            break;
                        }
                    }
                }
                r = stream.read(&mut buf) => {
                    let n = match r {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) => {
                            debug!(side = %side, peer = %peer, error = %e, "tcp read failed");
                            break;
                        }
                    };
                    framer.push(&buf[..n]);
                    last_rx = tokio::time::Instant::now();
                    if started.is_none() {
                        started = Some(last_rx);
                    }
                    loop {
                        match framer.next_frame() {
                            Ok(None) => {
                                if framer.buffered() == 0 {
                                    started = None;
                                }
                                break;
                            }
                            Ok(Some(Frame::Ping)) => {
                                if stream.write_all(b"\r\n").await.is_err() {
                                    break 'conn;
                                }
                            }
                            Ok(Some(Frame::Message(data))) => {
                                // What follows this message starts its own clock.
                                started = Some(tokio::time::Instant::now());
                                bump(&self.counters.tcp_rx);
                                let input = Input::Sip(SipIn {
                                    side,
                                    transport: Transport::Tcp,
                                    src: peer,
                                    dst: local,
                                    at: now_ms(),
                                    data,
                                });
                                if self.inputs.send(input).await.is_err() {
                                    break 'conn; // core loop gone: shutting down
                                }
                            }
                            Err(e) => {
                                if matches!(e, FrameError::MessageTooLarge { .. }) {
                                    bump(&self.counters.oversize_drops);
                                } else {
                                    bump(&self.counters.framing_errors);
                                }
                                if let Some(n) = self.bad_input_log(now_ms()) {
                                    warn!(side = %side, peer = %peer, error = %e, suppressed = n, "closing SIP TCP connection: cannot frame the stream (peer must send Content-Length and messages within sip.max_message_bytes)");
                                }
                                break 'conn;
                            }
                        }
                    }
                }
            }
        }
        self.unregister(side, peer, id);
        let _ = stream.shutdown().await;
        debug!(side = %side, peer = %peer, conn = id, "tcp connection closed");
    }

    /// Send one message at once (tests; the core loop queues with
    /// [`Self::push`] and sends a batch with [`Self::flush`]).
    #[cfg(test)]
    pub async fn send(self: &Arc<Self>, t: &Transmit) {
        let mut out = Outbox::default();
        self.push(t.clone(), &mut out);
        self.flush(&mut out).await;
    }

    /// Queue one message of the core: UDP into `out` (sent by
    /// [`Self::flush`]), TCP onto its connection's queue. Errors are logged
    /// and counted, never fatal.
    pub fn push(self: &Arc<Self>, t: Transmit, out: &mut Outbox) {
        // Never send SIP to ourselves: a routing mistake would otherwise loop
        // through the core at full speed until Max-Forwards runs out.
        if t.dst == self.access.addr || t.dst == self.core.addr {
            bump(&self.counters.send_errors);
            warn!(side = %t.side, dst = %t.dst, "dropped a SIP message addressed to this BGF's own SIP address (routing loop in the session core; please report it)");
            return;
        }
        match t.transport {
            Transport::Udp => match t.side {
                Side::Access => out.access.push((t.dst, t.data)),
                Side::Core => out.core.push((t.dst, t.data)),
            },
            Transport::Tcp => self.send_tcp(t.side, t.dst, t.data),
        }
    }

    /// Send the queued UDP datagrams (`sendmmsg`, in order per side) and
    /// empty `out`. Errors are logged and counted, never fatal.
    pub async fn flush(&self, out: &mut Outbox) {
        for side in [Side::Access, Side::Core] {
            let q = match side {
                Side::Access => &mut out.access,
                Side::Core => &mut out.core,
            };
            if q.is_empty() {
                continue;
            }
            let sock = &self.side(side).udp;
            let mut i = 0;
            while i < q.len() {
                let r = sock.try_io(Interest::WRITABLE, || {
                    udp::send_batch(sock.as_raw_fd(), &q[i..])
                });
                match r {
                    Ok(n) => {
                        self.counters.udp_tx.fetch_add(n as u64, Ordering::Relaxed);
                        i += n.max(1);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if let Err(e) = sock.writable().await {
                            warn!(side = %side, error = %e, "udp socket failed; queued SIP messages dropped");
                            self.counters
                                .send_errors
                                .fetch_add((q.len() - i) as u64, Ordering::Relaxed);
                            break;
                        }
                    }
                    Err(e) => {
                        bump(&self.counters.send_errors);
                        warn!(side = %side, dst = %q[i].0, error = %e, "udp send failed (is there a route to the peer?)");
                        i += 1;
                    }
                }
            }
            q.clear();
        }
    }

    fn send_tcp(self: &Arc<Self>, side: Side, dst: SocketAddr, data: Vec<u8>) {
        let Ok(mut conns) = self.conns.lock() else {
            bump(&self.counters.send_errors);
            return;
        };
        let data = match conns.get(&(side, dst)) {
            Some(e) => match e.tx.try_send(data) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    bump(&self.counters.send_errors);
                    warn!(side = %side, dst = %dst, "tcp send queue full (peer not reading?), message dropped");
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    conns.remove(&(side, dst));
                    d
                }
            },
            None => data,
        };
        // No connection: open one from the side's SIP address and queue the
        // message until it is established.
        let (tx, rx) = mpsc::channel(CONN_QUEUE);
        let _ = tx.try_send(data);
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        conns.insert((side, dst), ConnEntry { id, tx: tx.clone() });
        drop(conns);
        tokio::spawn(
            self.clone()
                .connect(side, dst, id, tx, rx)
                .in_current_span(),
        );
    }

    async fn connect(
        self: Arc<Self>,
        side: Side,
        dst: SocketAddr,
        id: u64,
        tx: mpsc::Sender<Vec<u8>>,
        mut rx: mpsc::Receiver<Vec<u8>>,
    ) {
        let from = SocketAddr::new(self.side(side).addr.ip(), 0);
        let attempt = async {
            let sock = if from.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            sock.bind(from)?;
            match tokio::time::timeout(CONNECT_TIMEOUT, sock.connect(dst)).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            }
        };
        match attempt.await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                info!(side = %side, peer = %dst, conn = id, "tcp connection opened");
                self.connection(side, dst, id, stream, tx, rx).await;
            }
            Err(e) => {
                self.unregister(side, dst, id);
                drop(tx);
                rx.close();
                let mut lost = 0u64;
                while rx.try_recv().is_ok() {
                    lost += 1;
                }
                self.counters
                    .send_errors
                    .fetch_add(lost.max(1), Ordering::Relaxed);
                warn!(side = %side, peer = %dst, from = %from, error = %e, dropped = lost, "cannot open SIP TCP connection; messages dropped (is the peer listening on TCP?)");
            }
        }
    }
}

/// Sockets on a 127.0.0.1 port free for both UDP and TCP (tests).
#[cfg(test)]
pub async fn bind_free() -> BoundSide {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        if let Ok(udp) = UdpSocket::bind(addr).await {
            return BoundSide { addr, udp, tcp };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG1: &[u8] =
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP x\r\nContent-Length: 4\r\n\r\nbody";
    const MSG2: &[u8] = b"BYE sip:a@b SIP/2.0\r\nl:0\r\n\r\n";

    fn frames(f: &mut Framer) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(fr) = f.next_frame().unwrap() {
            out.push(fr);
        }
        out
    }

    #[test]
    fn two_messages_in_one_read() {
        let mut f = Framer::new(65535);
        f.push(&[MSG1, MSG2].concat());
        assert_eq!(
            frames(&mut f),
            vec![Frame::Message(MSG1.to_vec()), Frame::Message(MSG2.to_vec())]
        );
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn message_split_over_reads_byte_by_byte() {
        let mut f = Framer::new(65535);
        let all = [MSG1, MSG2].concat();
        let mut got = Vec::new();
        for b in &all {
            f.push(std::slice::from_ref(b));
            got.extend(frames(&mut f));
        }
        assert_eq!(
            got,
            vec![Frame::Message(MSG1.to_vec()), Frame::Message(MSG2.to_vec())]
        );
    }

    #[test]
    fn body_split_waits_for_all_bytes() {
        let mut f = Framer::new(65535);
        let split = MSG1.len() - 2;
        f.push(&MSG1[..split]);
        assert_eq!(frames(&mut f), vec![]);
        f.push(&MSG1[split..]);
        assert_eq!(frames(&mut f), vec![Frame::Message(MSG1.to_vec())]);
    }

    #[test]
    fn missing_content_length_is_an_error() {
        let mut f = Framer::new(65535);
        f.push(b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FrameError::MissingContentLength));
    }

    #[test]
    fn garbage_and_conflicting_content_length() {
        for h in [
            "Content-Length: -1",
            "Content-Length: abc",
            "content-length:",
            "Content-Length: 99999999999",
            "Content-Length: 1\r\nl: 2",
        ] {
            let mut f = Framer::new(65535);
            f.push(format!("MESSAGE sip:a@b SIP/2.0\r\n{h}\r\n\r\n").as_bytes());
            assert!(
                matches!(f.next_frame(), Err(FrameError::BadContentLength(_))),
                "{h}"
            );
        }
    }

    #[test]
    fn compact_and_case_insensitive_names() {
        for h in ["L: 2", "CONTENT-LENGTH:2", "content-length :  2 "] {
            let mut f = Framer::new(65535);
            let m = format!("MESSAGE sip:a@b SIP/2.0\r\n{h}\r\n\r\nhi");
            f.push(m.as_bytes());
            assert_eq!(frames(&mut f), vec![Frame::Message(m.into_bytes())], "{h}");
        }
    }

    #[test]
    fn keepalive_ping_and_pong() {
        let mut f = Framer::new(65535);
        f.push(b"\r\n\r\n");
        assert_eq!(frames(&mut f), vec![Frame::Ping]);
        // A pong (lone CRLF) before a message is skipped.
        f.push(b"\r\n");
        assert_eq!(frames(&mut f), vec![]);
        f.push(MSG2);
        assert_eq!(frames(&mut f), vec![Frame::Message(MSG2.to_vec())]);
        // A ping split over reads.
        f.push(b"\r\n\r");
        assert_eq!(frames(&mut f), vec![]);
        f.push(b"\n");
        assert_eq!(frames(&mut f), vec![Frame::Ping]);
    }

    #[test]
    fn header_section_too_large() {
        let mut f = Framer::new(1500);
        f.push(b"INVITE sip:a@b SIP/2.0\r\n");
        for _ in 0..200 {
            f.push(b"X-Pad: 0123456789\r\n");
        }
        assert_eq!(f.next_frame(), Err(FrameError::HeaderTooLarge(1500)));
    }

    #[test]
    fn message_too_large() {
        let mut f = Framer::new(1500);
        f.push(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n");
        assert!(matches!(
            f.next_frame(),
            Err(FrameError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn udp_keepalive_detection() {
        assert!(is_keepalive(b"\r\n"));
        assert!(is_keepalive(b"\r\n\r\n"));
        assert!(!is_keepalive(b""));
        assert!(!is_keepalive(MSG2));
    }

    async fn started(
        max: usize,
    ) -> (
        Arc<Transports>,
        mpsc::Receiver<Input>,
        watch::Sender<bool>,
        SocketAddr,
        SocketAddr,
    ) {
        let a = bind_free().await;
        let c = bind_free().await;
        let (aa, ca) = (a.addr, c.addr);
        let (tx, rx) = mpsc::channel(64);
        let (stx, srx) = watch::channel(false);
        let (t, _h) = Transports::start(
            a,
            c,
            Arc::new(Counters::default()),
            tx,
            max,
            srx,
            tracing::Span::none(),
        );
        (t, rx, stx, aa, ca)
    }

    /// Whether the BGF closed `peer` within `within` (EOF or reset).
    async fn closed(peer: &mut TcpStream, within: Duration) -> bool {
        let mut b = [0u8; 64];
        matches!(
            tokio::time::timeout(within, peer.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn tcp_limits_cap_connections_per_ip_and_close_slow_and_idle_ones() {
        let a = bind_free().await;
        let c = bind_free().await;
        let access = a.addr;
        let (tx, mut rx) = mpsc::channel(64);
        let (_stop, srx) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let (t, _h) = Transports::start_with(
            a,
            c,
            counters.clone(),
            tx,
            65535,
            srx,
            tracing::Span::none(),
            TcpLimits {
                max_total: 10,
                max_per_ip: 2,
                ipv6_source_prefix: 64,
                message_timeout: Duration::from_millis(300),
                idle_timeout: Duration::from_millis(3000),
            },
        );
        // Two connections from one address are served; the third is refused.
        let mut c1 = TcpStream::connect(access).await.unwrap();
        let mut c2 = TcpStream::connect(access).await.unwrap();
        let mut c3 = TcpStream::connect(access).await.unwrap();
        assert!(
            closed(&mut c3, Duration::from_secs(5)).await,
            "third refused"
        );
        assert_eq!(counters.snapshot().tcp_refused, 1);
        // A slow sender (half a message, then silence) is cut after the
        // message timeout; a complete message in time is delivered.
        c1.write_all(&MSG1[..20]).await.unwrap();
        c2.write_all(MSG2).await.unwrap();
        let Input::Sip(m) = rx.recv().await.unwrap() else {
            panic!()
        };
        assert_eq!(m.data, MSG2);
        assert!(
            closed(&mut c1, Duration::from_secs(5)).await,
            "slow one cut"
        );
        // The idle one goes after the idle timeout, keep-alives keep it.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            c2.write_all(b"\r\n\r\n").await.unwrap();
            let mut pong = [0u8; 2];
            c2.read_exact(&mut pong).await.unwrap();
        }
        assert!(
            closed(&mut c2, Duration::from_secs(10)).await,
            "idle one closed"
        );
        assert!(counters.snapshot().tcp_timeouts >= 2);
        // Slots are released: the address may connect again.
        let mut c4 = TcpStream::connect(access).await.unwrap();
        c4.write_all(MSG2).await.unwrap();
        assert!(rx.recv().await.is_some());
        assert!(t.tcp_connections() >= 1);
    }

    #[tokio::test]
    async fn tcp_connection_frames_answers_pings_and_closes_on_garbage() {
        let (t, mut rx, _stop, access, _) = started(65535).await;
        let mut peer = TcpStream::connect(access).await.unwrap();
        let mut wire = Vec::new();
        wire.extend_from_slice(MSG1);
        wire.extend_from_slice(&MSG2[..10]);
        peer.write_all(&wire).await.unwrap();
        let Input::Sip(m) = rx.recv().await.unwrap() else {
            panic!()
        };
        assert_eq!(m.data, MSG1);
        assert_eq!(m.transport, Transport::Tcp);
        assert_eq!(m.side, Side::Access);
        assert_eq!(m.src, peer.local_addr().unwrap());
        assert_eq!(m.dst, access);
        peer.write_all(&MSG2[10..]).await.unwrap();
        let Input::Sip(m) = rx.recv().await.unwrap() else {
            panic!()
        };
        assert_eq!(m.data, MSG2);
        // Ping → pong.
        peer.write_all(b"\r\n\r\n").await.unwrap();
        let mut pong = [0u8; 2];
        peer.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"\r\n");
        // A reply over the same connection.
        t.send(&Transmit {
            side: Side::Access,
            transport: Transport::Tcp,
            src: access,
            dst: m.src,
            data: b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n".to_vec(),
        })
        .await;
        let mut reply = vec![0u8; 24];
        peer.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n");
        // Missing Content-Length → the BGF closes the connection.
        peer.write_all(b"INVITE sip:x SIP/2.0\r\n\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let n = peer.read_to_end(&mut rest).await.unwrap_or(0);
        assert_eq!(n, 0);
        // ... and forgets it.
        for _ in 0..200 {
            if t.tcp_connections() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(t.tcp_connections(), 0);
        assert_eq!(t.counters.snapshot().framing_errors, 1);
        assert_eq!(t.counters.snapshot().tcp_rx, 2);
    }

    #[tokio::test]
    async fn tcp_send_without_connection_connects_from_side_ip() {
        let (t, mut rx, _stop, _, core) = started(65535).await;
        let far = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let far_addr = far.local_addr().unwrap();
        t.send(&Transmit {
            side: Side::Core,
            transport: Transport::Tcp,
            src: core,
            dst: far_addr,
            data: MSG2.to_vec(),
        })
        .await;
        let (mut s, from) = far.accept().await.unwrap();
        assert_eq!(from.ip(), core.ip());
        let mut got = vec![0u8; MSG2.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, MSG2);
        // The peer's answer on that connection comes back as core-side input.
        s.write_all(MSG1).await.unwrap();
        let Input::Sip(m) = rx.recv().await.unwrap() else {
            panic!()
        };
        assert_eq!(
            (m.side, m.src, m.data.as_slice()),
            (Side::Core, far_addr, MSG1)
        );
        assert_eq!(t.tcp_connections(), 1);
    }

    #[tokio::test]
    async fn tcp_connect_failure_counts_send_errors_and_forgets_the_connection() {
        let (t, _rx, _stop, _, core) = started(65535).await;
        // A port nobody listens on: bind, note it, close.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        for _ in 0..2 {
            t.send(&Transmit {
                side: Side::Core,
                transport: Transport::Tcp,
                src: core,
                dst: closed,
                data: MSG2.to_vec(),
            })
            .await;
        }
        for _ in 0..500 {
            if t.counters.snapshot().send_errors == 2 && t.tcp_connections() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{:?} conns {}", t.counters.snapshot(), t.tcp_connections());
    }

    #[tokio::test]
    async fn never_sends_to_own_sip_address() {
        let (t, _rx, _stop, access, core) = started(65535).await;
        for (side, dst) in [(Side::Core, access), (Side::Access, core)] {
            t.send(&Transmit {
                side,
                transport: Transport::Udp,
                src: dst,
                dst,
                data: MSG2.to_vec(),
            })
            .await;
        }
        let s = t.counters.snapshot();
        assert_eq!((s.udp_tx, s.send_errors), (0, 2));
    }

    #[tokio::test]
    async fn udp_receive_and_keepalive_and_oversize() {
        let (t, mut rx, _stop, access, _) = started(1500).await;
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        peer.send_to(b"\r\n\r\n", access).await.unwrap();
        peer.send_to(&[b'x'; 2000], access).await.unwrap();
        peer.send_to(MSG2, access).await.unwrap();
        let mut batch = RecvBatch::new(1501);
        let mut got = Vec::new();
        let sock = t.udp(Side::Access);
        let mut read = 0;
        while read < 3 {
            sock.readable().await.unwrap();
            match t.read_udp(Side::Access, &mut batch, &mut got) {
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), 1);
        let Input::Sip(m) = got.pop().unwrap() else {
            panic!()
        };
        assert_eq!(m.data, MSG2);
        assert_eq!(m.transport, Transport::Udp);
        assert_eq!(m.src, peer.local_addr().unwrap());
        // Reply goes out of the access socket.
        t.send(&Transmit {
            side: Side::Access,
            transport: Transport::Udp,
            src: access,
            dst: m.src,
            data: b"pong".to_vec(),
        })
        .await;
        let mut b = [0u8; 16];
        let (n, from) = peer.recv_from(&mut b).await.unwrap();
        assert_eq!((&b[..n], from), (&b"pong"[..], access));
        let s = t.counters.snapshot();
        assert_eq!((s.udp_rx, s.udp_tx, s.oversize_drops), (1, 1, 1));
        assert!(rx.try_recv().is_err());
    }
}
