//! Counters: lock-free atomics on the packet path, plain snapshots for the
//! admin API and metrics.
//!
//! Global totals are kept per worker (each on its own cache line) and summed
//! on read, so workers never contend on a shared counter. Per-pinhole
//! counters are atomics in the pinhole, touched only by the worker that owns
//! its sockets.

use crate::forward::Reason;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Totals of the whole media plane since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MediaCounters {
    /// Packets sent out of the other leg.
    pub forwarded_packets: u64,
    /// UDP payload bytes of those packets.
    pub forwarded_bytes: u64,
    /// Dropped packets by reason.
    pub drops: DropCounters,
}

/// Dropped packets by reason (see [`Reason`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DropCounters {
    /// A socket existed but no pinhole (just removed).
    pub unknown_port: u64,
    /// Source was not the negotiated/latched remote.
    pub wrong_source: u64,
    /// Failed RTP/RTCP validation (or larger than the receive buffer).
    pub not_rtp: u64,
    /// Shorter than an RTP/RTCP header.
    pub too_short: u64,
    /// The other leg had no remote (hold, not negotiated).
    pub no_destination: u64,
    /// The send failed (socket buffer full, route error).
    pub send_error: u64,
}

impl DropCounters {
    /// The count for `r`.
    pub fn get(&self, r: Reason) -> u64 {
        match r {
            Reason::UnknownPort => self.unknown_port,
            Reason::WrongSource => self.wrong_source,
            Reason::NotRtp => self.not_rtp,
            Reason::TooShort => self.too_short,
            Reason::NoDestination => self.no_destination,
            Reason::SendError => self.send_error,
        }
    }

    pub(crate) fn slot(&mut self, r: Reason) -> &mut u64 {
        match r {
            Reason::UnknownPort => &mut self.unknown_port,
            Reason::WrongSource => &mut self.wrong_source,
            Reason::NotRtp => &mut self.not_rtp,
            Reason::TooShort => &mut self.too_short,
            Reason::NoDestination => &mut self.no_destination,
            Reason::SendError => &mut self.send_error,
        }
    }

    /// Sum of all reasons.
    pub fn total(&self) -> u64 {
        Reason::ALL.iter().map(|r| self.get(*r)).sum()
    }
}

/// Packets arriving on one leg of a pinhole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DirCounters {
    /// Packets received on this leg and accepted for forwarding.
    pub packets: u64,
    /// Their UDP payload bytes.
    pub bytes: u64,
    /// Packets received on this leg and dropped by the decision.
    pub drops: u64,
}

/// Counters of one pinhole (kept across upserts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PinholeCounters {
    /// Received on the access leg (travelling towards the core).
    pub access_in: DirCounters,
    /// Received on the core leg (travelling towards the access side).
    pub core_in: DirCounters,
    /// Unix time in milliseconds of the last accepted packet, or of the
    /// pinhole's creation if none arrived yet.
    pub last_activity_ms: u64,
}

/// Per-worker totals, one cache line pair each.
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct WorkerCounters {
    pub(crate) forwarded_packets: AtomicU64,
    pub(crate) forwarded_bytes: AtomicU64,
    pub(crate) drops: [AtomicU64; 6],
}

impl WorkerCounters {
    /// Single-writer increment: the owning worker is the only writer, so a
    /// load + store is enough and avoids a locked instruction.
    #[inline]
    fn bump(a: &AtomicU64, n: u64) {
        a.store(a.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub(crate) fn forwarded(&self, packets: u64, bytes: u64) {
        Self::bump(&self.forwarded_packets, packets);
        Self::bump(&self.forwarded_bytes, bytes);
    }

    #[inline]
    pub(crate) fn drop(&self, r: Reason) {
        Self::bump(&self.drops[r.index()], 1);
    }

    pub(crate) fn add_to(&self, out: &mut MediaCounters) {
        out.forwarded_packets += self.forwarded_packets.load(Relaxed);
        out.forwarded_bytes += self.forwarded_bytes.load(Relaxed);
        for r in Reason::ALL {
            *out.drops.slot(r) += self.drops[r.index()].load(Relaxed);
        }
    }
}

/// Atomic form of [`DirCounters`].
#[derive(Default)]
pub(crate) struct DirStats {
    packets: AtomicU64,
    bytes: AtomicU64,
    drops: AtomicU64,
}

impl DirStats {
    #[inline]
    pub(crate) fn accepted(&self, bytes: usize) {
        // Both legs of a pinhole are served by the same worker, but RTP and
        // RTCP sockets of a leg may race after a rebind: use fetch_add.
        self.packets.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
    }

    #[inline]
    pub(crate) fn dropped(&self) {
        self.drops.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> DirCounters {
        DirCounters {
            packets: self.packets.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            drops: self.drops.load(Relaxed),
        }
    }
}
