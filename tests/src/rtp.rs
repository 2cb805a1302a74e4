//! A small RTP endpoint on std UDP sockets: it sends RTP (v2, PT 8 PCMA,
//! 160-byte payload, 20 ms ptime, proper seq/timestamp/SSRC, bounded count)
//! from its own socket to a destination, and records every packet it receives
//! (source address, seq, SSRC, arrival time).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One received datagram.
#[derive(Clone, Debug)]
pub struct RxPacket {
    /// Its source address.
    pub from: SocketAddr,
    /// RTP sequence number (None: not RTP v2).
    pub seq: Option<u16>,
    /// RTP SSRC (None: not RTP v2).
    pub ssrc: Option<u32>,
    /// Datagram length.
    pub len: usize,
    /// When it arrived.
    pub at: Instant,
}

struct Shared {
    rx: Mutex<Vec<RxPacket>>,
    stop: AtomicBool,
    sent: AtomicU64,
}

/// An RTP endpoint bound to one address.
pub struct RtpEndpoint {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    shared: Arc<Shared>,
    rx_thread: Option<JoinHandle<()>>,
    senders: Vec<(Arc<AtomicBool>, JoinHandle<()>)>,
}

/// Builds one RTP packet: v2, PT 8, `payload` bytes of PCMA silence.
pub fn rtp_packet(seq: u16, ts: u32, ssrc: u32, payload: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload);
    p.push(0x80); // V=2, P=0, X=0, CC=0
    p.push(8); // M=0, PT=8 (PCMA)
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.resize(12 + payload, 0xd5);
    p
}

/// `(seq, ssrc)` of an RTP v2 packet, or None.
pub fn parse_rtp(b: &[u8]) -> Option<(u16, u32)> {
    if b.len() < 12 || b[0] >> 6 != 2 {
        return None;
    }
    Some((
        u16::from_be_bytes([b[2], b[3]]),
        u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
    ))
}

impl RtpEndpoint {
    /// Binds `addr` and starts recording what arrives.
    pub fn bind(addr: SocketAddr) -> std::io::Result<RtpEndpoint> {
        let socket = Arc::new(UdpSocket::bind(addr)?);
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let local = socket.local_addr()?;
        let shared = Arc::new(Shared {
            rx: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            sent: AtomicU64::new(0),
        });
        let (s, sh) = (socket.clone(), shared.clone());
        let rx_thread = std::thread::Builder::new()
            .name(format!("rtp-rx-{local}"))
            .spawn(move || {
                let mut buf = [0u8; 2048];
                while !sh.stop.load(Ordering::Relaxed) {
                    match s.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            let parsed = parse_rtp(&buf[..n]);
                            if let Ok(mut rx) = sh.rx.lock() {
                                rx.push(RxPacket {
                                    from,
                                    seq: parsed.map(|p| p.0),
                                    ssrc: parsed.map(|p| p.1),
                                    len: n,
                                    at: Instant::now(),
                                });
                            }
                        }
                        Err(_) => continue, // timeout (poll stop) or ICMP error
                    }
                }
            })?;
        Ok(RtpEndpoint {
            socket,
            local,
            shared,
            rx_thread: Some(rx_thread),
            senders: Vec::new(),
        })
    }

    /// The bound address.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Starts sending `count` packets (one per 20 ms) with `ssrc` to `dest`
    /// from this endpoint's socket. Several streams may run at once.
    pub fn start_sending(&mut self, dest: SocketAddr, ssrc: u32, count: u32) {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st, sh) = (self.socket.clone(), stop.clone(), self.shared.clone());
        let h = std::thread::spawn(move || {
            let start = Instant::now();
            let mut seq = (ssrc as u16) ^ 0x1234;
            let mut ts = ssrc.rotate_left(7);
            for i in 0..count {
                if st.load(Ordering::Relaxed) || sh.stop.load(Ordering::Relaxed) {
                    break;
                }
                let pkt = rtp_packet(seq, ts, ssrc, 160);
                if s.send_to(&pkt, dest).is_ok() {
                    sh.sent.fetch_add(1, Ordering::Relaxed);
                }
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(160);
                let next = start + Duration::from_millis(20 * (u64::from(i) + 1));
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
            }
        });
        self.senders.push((stop, h));
    }

    /// Stops all streams started with [`start_sending`](Self::start_sending).
    pub fn stop_sending(&mut self) {
        for (stop, h) in self.senders.drain(..) {
            stop.store(true, Ordering::Relaxed);
            let _ = h.join();
        }
    }

    /// Sends one datagram now.
    pub fn send_raw(&self, dest: SocketAddr, data: &[u8]) -> std::io::Result<usize> {
        self.socket.send_to(data, dest)
    }

    /// Packets sent so far.
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    /// A copy of everything received so far.
    pub fn received(&self) -> Vec<RxPacket> {
        self.shared.rx.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Number of RTP packets received from `from`.
    pub fn received_from(&self, from: SocketAddr) -> usize {
        self.received()
            .iter()
            .filter(|p| p.from == from && p.seq.is_some())
            .count()
    }

    /// Number of RTP packets received in total.
    pub fn received_count(&self) -> usize {
        self.received().iter().filter(|p| p.seq.is_some()).count()
    }

    /// The distinct source addresses seen.
    pub fn sources(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.received().iter().map(|p| p.from).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Waits until at least `k` RTP packets arrived from `from`.
    pub fn wait_from(&self, from: SocketAddr, k: usize, timeout: Duration) -> bool {
        crate::util::wait_until(timeout, || (self.received_from(from) >= k).then_some(())).is_some()
    }

    /// Waits until at least `k` RTP packets arrived from anywhere.
    pub fn wait_any(&self, k: usize, timeout: Duration) -> bool {
        crate::util::wait_until(timeout, || (self.received_count() >= k).then_some(())).is_some()
    }

    /// A one-line summary for assertion messages.
    pub fn summary(&self) -> String {
        let rx = self.received();
        let mut by_src: Vec<(SocketAddr, usize)> = Vec::new();
        for p in &rx {
            match by_src.iter_mut().find(|(a, _)| *a == p.from) {
                Some(e) => e.1 += 1,
                None => by_src.push((p.from, 1)),
            }
        }
        format!(
            "endpoint {}: sent {}, received {} ({by_src:?})",
            self.local,
            self.sent(),
            rx.len()
        )
    }
}

impl Drop for RtpEndpoint {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.stop_sending();
        if let Some(h) = self.rx_thread.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_layout_is_rtp_v2_pcma() {
        let p = rtp_packet(0xabcd, 0x01020304, 0xdeadbeef, 160);
        assert_eq!(p.len(), 172);
        assert_eq!(p[0], 0x80);
        assert_eq!(p[1], 8);
        assert_eq!(parse_rtp(&p), Some((0xabcd, 0xdeadbeef)));
        assert_eq!(parse_rtp(&p[..11]), None);
        assert_eq!(parse_rtp(&[0x40; 12]), None);
    }

    #[test]
    fn two_endpoints_exchange_rtp_with_correct_sequence() {
        let mut a = RtpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut b = RtpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        a.start_sending(b.local(), 0x1111, 10);
        b.start_sending(a.local(), 0x2222, 10);
        assert!(
            b.wait_from(a.local(), 10, Duration::from_secs(5)),
            "{}",
            b.summary()
        );
        assert!(
            a.wait_from(b.local(), 10, Duration::from_secs(5)),
            "{}",
            a.summary()
        );
        let rx = b.received();
        assert!(rx.iter().all(|p| p.ssrc == Some(0x1111) && p.len == 172));
        let seqs: Vec<u16> = rx.iter().filter_map(|p| p.seq).collect();
        for w in seqs.windows(2) {
            assert_eq!(w[1], w[0].wrapping_add(1), "consecutive sequence numbers");
        }
        // Bounded count: nothing beyond 10.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(b.received_count(), 10);
        a.stop_sending();
        assert_eq!(a.sent(), 10);
    }
}
