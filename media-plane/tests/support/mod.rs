//! What the media plane's socket-level tests share: RTP/RTCP packets, a
//! bounded receive, pinhole legs and ids, and waiting for a condition.

#![allow(dead_code)]

use media_plane::{Leg, PinholeId};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Bound of every wait.
pub const WAIT: Duration = Duration::from_secs(5);

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// RTP v2, PT 8, SSRC 0x11223344, 160-byte payload.
pub fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 8, 0, 0, 0, 0, 0, 1, 0x11, 0x22, 0x33, 0x44];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

/// An RTCP receiver report with no report blocks.
pub fn rtcp_rr(ssrc: u8) -> Vec<u8> {
    vec![0x80, 201, 0, 1, 0, 0, 0, ssrc]
}

/// The next datagram on `s` (its read timeout bounds the wait).
pub fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = s
        .recv_from(&mut buf)
        .expect("packet relayed within the bound");
    (buf[..n].to_vec(), from)
}

pub fn id(session: u64) -> PinholeId {
    PinholeId { session, stream: 0 }
}

pub fn leg(local: &str, rtp: Option<&str>, rtcp: Option<&str>) -> Leg {
    Leg {
        local: sa(local),
        remote_rtp: rtp.map(sa),
        remote_rtcp: rtcp.map(sa),
        latch_ip: None,
    }
}

/// Wait until `f` holds (counters are updated right after the send).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
