//! # standby — N+1 protection
//!
//! Owns what lets one standby protect N actives: heartbeats and failure
//! detection ([`heartbeat`]: authenticated UDP, miss counting plus the fast
//! ICMP-port-unreachable signal, fencing news for a stale active), hot and
//! cold replay of every active's log through the same `sip-control` core
//! ([`replica`]), and the takeover itself ([`takeover`]: fence in the store,
//! drain the log, claim the service addresses via rtnetlink ([`netif`]),
//! hand the replayed core to the caller to serve, announce with gratuitous
//! ARP / unsolicited neighbour advertisements from raw sockets
//! ([`announce`])), with a timing breakdown of every takeover.
//!
//! It does not own the session logic (`sip-control`, replayed unchanged),
//! the log store (`state-log`), sockets for SIP and media, or the daemon's
//! wiring and configuration (`bgf`: `bgf standby` builds the links,
//! replicas and plans from its config and binds the taken-over sockets in
//! the serve callback). Everything here is a library; nothing is started on
//! its own.
//!
//! ```text
//!  active k ──heartbeat (epoch, log seq)──▶ Detector k ──PeerFailed──▶ take_over(k)
//!          ◀──standby heartbeat (store epoch)─┘                        │ fence · drain · addresses
//!  active k ──append──▶ state log ──tail──▶ HotReplica k ──stop()──────┘ serve(core) · announce
//! ```

pub mod announce;
pub mod heartbeat;
pub mod netif;
pub mod replica;
pub mod takeover;

pub use heartbeat::{
    Detector, Failure, FailureReason, HeartbeatEvent, HeartbeatRuntime, HeartbeatSender, Link,
    LinkConfig, LinkWatch, Role, RttStats,
};
pub use netif::{AddrChange, IfAddr};
pub use replica::{HotReplica, Replica, ReplicaError, ReplicaMode, ReplicaStatus};
pub use takeover::{
    take_over, Marks, Prepared, ServeContext, Takeover, TakeoverPlan, TakeoverReport,
};
