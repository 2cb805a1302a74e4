//! # media-plane — pinholes, NAT and the RTP relay
//!
//! Owns the packet path of a BGF: the pinhole table (which local port relays
//! to which remote), port pools, NAT rewrite and latching, RTP/RTCP sanity
//! checks, per-pinhole counters and inactivity detection, and the packet I/O
//! backends that move bytes (kernel sockets today; DPDK later, reusing the
//! same lookup and rewrite code).
//!
//! It does not own session state: the session core (`sip-control`) decides
//! which pinholes exist and emits [`PinholeOp`]s; this crate applies them and
//! reports [`MediaEvent`]s (latches, inactivity) back. Forwarding never waits
//! on the control plane or the state log.

pub mod model;
pub mod ports;

pub use model::{Leg, MediaEvent, PinholeId, PinholeOp, PinholeSpec, Side};
pub use ports::{PortPool, PortPoolError};
