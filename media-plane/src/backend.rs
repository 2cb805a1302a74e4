//! The packet I/O backend trait: how packets get in and out. Everything
//! else (table, decision, latching, counters, inactivity) is shared; a
//! backend only opens/closes the local ports of pinholes and runs workers
//! that feed received packets to [`Relay::process`] and send what it
//! returns.

use crate::counters::{MediaCounters, PinholeCounters};
use crate::error::MediaError;
use crate::model::PinholeSpec;
use crate::table::{Clock, Pinhole, Relay};
use std::sync::Arc;

/// A packet I/O backend (kernel sockets, XDP, DPDK).
pub trait PacketBackend: Send + Sync + 'static {
    /// Per-pinhole handles for its local ports (sockets, flow rules...).
    type Io: Send + Sync + 'static;

    /// Start the workers; they serve pinholes through `relay`.
    fn start(&mut self, relay: Arc<Relay<Self::Io>>) -> Result<(), MediaError>;

    /// Open the local ports of `spec` and start receiving on them. With
    /// `prev` (an upsert of an existing pinhole) ports whose address did not
    /// change are reused, not rebound.
    fn open(&self, spec: &PinholeSpec, prev: Option<&Self::Io>) -> Result<Self::Io, MediaError>;

    /// The plane installed or changed `ph` (an upsert), or the backend's
    /// own worker latched it: bring state the backend keeps outside the
    /// relay (the XDP pinhole map) in line with `ph.entry()`. Default:
    /// nothing (sockets and the DPDK table need no copy).
    fn sync(&self, _ph: &Arc<Pinhole<Self::Io>>) {}

    /// Add what the backend counted outside the relay for the pinhole of
    /// `io` (packets forwarded in the kernel, their last-packet time).
    fn add_pinhole_counters(&self, _io: &Self::Io, _c: &mut PinholeCounters, _clock: &Clock) {}

    /// Add the backend's own totals (packets forwarded or dropped in the
    /// kernel) to the relay's.
    fn add_totals(&self, _out: &mut MediaCounters) {}

    /// Stop receiving on the ports of `io` that are not also in `keep`, and
    /// release them (they close once no worker uses them any more).
    fn close(&self, io: &Self::Io, keep: Option<&Self::Io>);

    /// Stop and join the workers.
    fn shutdown(&mut self);
}
