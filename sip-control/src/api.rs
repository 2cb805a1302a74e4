//! The core's inputs and outputs: plain data, so the same core can be driven
//! by live sockets, by a log replay, or by a test.

use media_plane::{MediaEvent, PinholeOp, Side};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Logical time in milliseconds, supplied by the driver with every input
/// (wall-clock milliseconds since the UNIX epoch when live). The core never
/// reads a clock.
pub type Millis = u64;

/// SIP transport of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Transport {
    /// UDP: one datagram, one message; transaction timers retransmit.
    Udp,
    /// TCP: a byte stream framed by Content-Length; no retransmissions.
    Tcp,
}

impl Transport {
    /// Token used in Via and URI `transport=` parameters.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

/// A SIP message as received, with everything about its arrival the core may
/// use. This is exactly what the state log records for a SIP input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipIn {
    /// The interface it arrived on.
    pub side: Side,
    /// Its transport.
    pub transport: Transport,
    /// The peer's address (after any NAT: what the socket saw).
    pub src: SocketAddr,
    /// The local address it was received on.
    pub dst: SocketAddr,
    /// Arrival time.
    pub at: Millis,
    /// The message bytes (one complete message; TCP framing is the driver's).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Identifies a timer the core armed. Opaque to the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimerId(pub u64);

/// One input to the core.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// A SIP message arrived.
    Sip(SipIn),
    /// A timer the core armed has expired.
    Timer {
        /// Which timer.
        id: TimerId,
        /// When it fired.
        at: Millis,
    },
    /// The packet path observed something (latch, inactivity).
    Media {
        /// What happened.
        event: MediaEvent,
        /// When the driver handed it over.
        at: Millis,
    },
}

impl Input {
    /// The time this input carries.
    pub fn at(&self) -> Millis {
        match self {
            Input::Sip(m) => m.at,
            Input::Timer { at, .. } | Input::Media { at, .. } => *at,
        }
    }
}

/// A message to put on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transmit {
    /// Interface to send it from.
    pub side: Side,
    /// Transport. For TCP the driver reuses a connection to `dst` if one is
    /// open (the one the request came in on), else connects.
    pub transport: Transport,
    /// Local address to send from (the side's SIP service address).
    pub src: SocketAddr,
    /// Destination.
    pub dst: SocketAddr,
    /// The message bytes.
    pub data: Vec<u8>,
}

/// One thing the driver must do on the core's behalf, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// Send a SIP message.
    Send(Transmit),
    /// Create, change or remove a pinhole.
    Pinhole(PinholeOp),
    /// Arm (or re-arm) a timer to fire at `at`.
    SetTimer {
        /// Timer identity.
        id: TimerId,
        /// Absolute deadline.
        at: Millis,
    },
    /// Disarm a timer (firing it anyway is harmless: the core ignores stale timers).
    CancelTimer(TimerId),
}

/// The result of applying one input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// What to do, in order.
    pub effects: Vec<Effect>,
    /// Whether the input changed the core's state. Only such inputs need to be
    /// logged, and their effects must wait until the log record is durable
    /// (output commit). Retransmissions the transaction layer absorbs and
    /// OPTIONS keepalives answered by the BGF itself leave this `false`.
    pub state_changed: bool,
}
