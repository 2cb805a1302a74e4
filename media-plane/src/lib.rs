//! # media-plane — pinholes, NAT and the RTP relay
//!
//! Owns the packet path of a BGF: the pinhole table (which local port relays
//! to which remote), port pools, NAT rewrite and latching, RTP/RTCP sanity
//! checks, per-pinhole counters and inactivity detection, and the packet I/O
//! backends that move bytes (kernel sockets; XDP; DPDK with the `dpdk` feature,
//! reusing the same lookup and rewrite code).
//!
//! It does not own session state: the session core (`sip-control`) decides
//! which pinholes exist and emits [`PinholeOp`]s; this crate applies them and
//! reports [`MediaEvent`]s (latches, inactivity) back. Forwarding never waits
//! on the control plane or the state log. It does not allocate ports either:
//! the core allocates them from a [`PortPool`] and this crate binds what the
//! spec says.
//!
//! Modules:
//! - [`model`]: the data shared with the core (specs, ops, events).
//! - [`ports`]: deterministic RTP/RTCP port pools (used by the core).
//! - [`forward`]: the pure forwarding decision (source check, latching,
//!   RTP/RTCP validation, destination) — one implementation for all backends.
//! - [`packet`]: raw IPv4/IPv6 UDP parse, in-place rewrite with checksum
//!   fix-up, and header build for IPv6↔IPv4 (raw-frame backends).
//! - [`table`]: the lock-free pinhole table and the per-packet [`Relay`] logic
//!   (latch recording, counters, activity).
//! - [`counters`]: counter snapshots ([`MediaCounters`], [`PinholeCounters`]).
//! - [`backend`]: the [`PacketBackend`] trait.
//! - [`kernel`]: the kernel-socket backend (socket per port, epoll per
//!   worker, `recvmmsg`/`sendmmsg`).
//! - [`l2`]: Ethernet, the ARP / neighbour-discovery responder, neighbour
//!   resolution and the takeover announcements for raw-frame backends.
//! - [`dpdk`]: DPDK settings and, with the `dpdk` feature, the poll-mode
//!   backend (`dpdk::backend`) — same table, decision and rewrite code.
//! - [`xdp`]: the in-kernel fast path — an XDP program holding the
//!   pinholes in a BPF map, with what it cannot decide going up to the same
//!   [`Relay::process`] (built with clang where present; falls back).
//! - [`plane`]: [`MediaPlane`], the handle the daemon uses, and the
//!   inactivity scanner.

pub mod backend;
pub mod counters;
pub mod dpdk;
pub mod error;
pub mod forward;
pub mod kernel;
pub mod l2;
pub mod model;
pub mod packet;
pub mod plane;
pub mod ports;
pub mod table;
pub mod xdp;

pub use backend::PacketBackend;
pub use counters::{DirCounters, DropCounters, MediaCounters, PinholeCounters};
pub use error::MediaError;
pub use forward::{decide, Reason, Verdict};
pub use model::{Leg, MediaEvent, PinholeId, PinholeOp, PinholeSpec, Side};
pub use plane::{MediaConfig, MediaPlane};
pub use ports::{PortPool, PortPoolError};
pub use table::{EventSink, Relay};
