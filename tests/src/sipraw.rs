//! Hand-made SIP over UDP: send a datagram, collect what comes back.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// A UDP socket for raw SIP.
pub struct RawSip {
    socket: UdpSocket,
}

impl RawSip {
    /// Binds `local`.
    pub fn bind(local: SocketAddr) -> std::io::Result<RawSip> {
        let socket = UdpSocket::bind(local)?;
        Ok(RawSip { socket })
    }

    /// The bound address.
    pub fn local(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Sends `msg` to `dest`.
    pub fn send(&self, dest: SocketAddr, msg: &[u8]) -> std::io::Result<usize> {
        self.socket.send_to(msg, dest)
    }

    /// Waits up to `timeout` for a datagram; returns it as text with its source.
    pub fn recv(&self, timeout: Duration) -> Option<(String, SocketAddr)> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            let _ = self.socket.set_read_timeout(Some(left));
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    return Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from));
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return None
                }
                Err(_) => continue, // ICMP-induced errors: keep listening
            }
        }
    }

    /// Waits for a response whose status line starts with `SIP/2.0 `; skips
    /// anything else (e.g. retransmissions of requests).
    pub fn recv_response(&self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (m, _) = self.recv(left)?;
            if m.starts_with("SIP/2.0 ") {
                return Some(m);
            }
        }
    }
}

/// The status code of a SIP response text.
pub fn status_code(resp: &str) -> Option<u16> {
    resp.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}
