//! The packet I/O backend trait: how packets get in and out. Everything
//! else (table, decision, latching, counters, inactivity) is shared; a
//! backend only opens/closes the local ports of pinholes and runs workers
//! that feed received packets to [`Relay::process`] and send what it
//! returns.

use crate::error::MediaError;
use crate::model::PinholeSpec;
use crate::table::Relay;
use std::sync::Arc;

/// A packet I/O backend (kernel sockets; DPDK later).
pub trait PacketBackend: Send + Sync + 'static {
    /// Per-pinhole handles for its local ports (sockets, flow rules...).
    type Io: Send + Sync + 'static;

    /// Start the workers; they serve pinholes through `relay`.
    fn start(&mut self, relay: Arc<Relay<Self::Io>>) -> Result<(), MediaError>;

    /// Open the local ports of `spec` and start receiving on them. With
    /// `prev` (an upsert of an existing pinhole) ports whose address did not
    /// change are reused, not rebound.
    fn open(&self, spec: &PinholeSpec, prev: Option<&Self::Io>) -> Result<Self::Io, MediaError>;

    /// Stop receiving on the ports of `io` that are not also in `keep`, and
    /// release them (they close once no worker uses them any more).
    fn close(&self, io: &Self::Io, keep: Option<&Self::Io>);

    /// Stop and join the workers.
    fn shutdown(&mut self);
}
