//! Errors of the media plane, worded for the operator who has to fix them.

use crate::model::PinholeId;
use std::net::SocketAddr;

/// Why the media plane could not start or apply a pinhole operation.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Another process (or another pinhole) already holds the address.
    #[error(
        "media address {addr} is already in use{}; make sure the media port range is reserved for bgf (no other process or instance binds it)",
        by.map(|id| format!(" by pinhole {id}")).unwrap_or_else(|| " by another socket".into())
    )]
    PortInUse {
        /// The local address.
        addr: SocketAddr,
        /// The pinhole holding it, if it is one of ours.
        by: Option<PinholeId>,
    },
    /// The local IP is not configured on this host.
    #[error("media address {addr} is not configured on any interface of this host; add the address (or enable freebind on a standby that will take it over)")]
    AddressNotLocal {
        /// The local address.
        addr: SocketAddr,
    },
    /// Binding failed for another reason.
    #[error("cannot bind media address {addr}: {source}")]
    Bind {
        /// The local address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The spec cannot be relayed as given (a bug in the caller).
    #[error("pinhole {id} is invalid: {reason}")]
    InvalidSpec {
        /// The pinhole.
        id: PinholeId,
        /// What is wrong.
        reason: String,
    },
    /// Too many sockets for the backend's registry.
    #[error(
        "media socket limit of {limit} reached; raise it or spread sessions over more instances"
    )]
    TooManySockets {
        /// The limit.
        limit: usize,
    },
    /// The in-kernel fast path's maps are full.
    #[error(
        "media pinhole limit of {limit} reached (media.xdp.max_pinholes); raise it or spread sessions over more instances"
    )]
    TooManyPinholes {
        /// The limit.
        limit: usize,
    },
    /// A system call needed to run the plane failed.
    #[error("media plane: {what} failed: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration cannot work.
    #[error("media plane configuration: {0}")]
    Config(String),
}
