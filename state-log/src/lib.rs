//! # state-log — the DAL-style input log
//!
//! Owns the input log every active appends to and the standby tails: the
//! versioned record format ([`record`]: MessagePack with `serde_bytes`, a
//! CRC32C per record), the backend trait ([`store::LogStore`]: durable
//! epoch-checked appends, reads, waits, truncation, fencing) and its
//! backends — the embedded store server on fjall and Redis Streams.
//!
//! It does not own session state or decide what to log: the session core
//! (`sip-control`) marks each input that changed state, and the daemon logs
//! exactly those inputs before releasing their effects (output commit).
//!
//! Modules: [`record`] (frame), [`store`] (trait and errors), [`embedded`]
//! (fjall store with group commit and fsync), [`server`] / [`remote`] (the
//! `bgf statelog` TCP server and its pipelined client), [`redis_store`]
//! (Redis Streams: Lua epoch/contiguity check, WAIT for replicas, XREAD
//! BLOCK tailing), [`testkit`] (the contract suite every backend passes).
//!
//! ```text
//!  bgf active ──append(records, epoch)──▶ RemoteStore ══TCP══▶ bgf statelog (fjall, fsync)
//!             └─────────────────────────▶ RedisStore ════════▶ redis primary ──▶ replica (WAIT)
//!  standby ◀──read / wait_for (tail)────── same LogStore trait
//! ```

pub mod client;
pub mod embedded;
pub mod jetstream;
pub mod natsconf;
pub mod natsproc;
pub mod pki;
pub mod record;
pub mod redis_store;
pub mod remote;
pub mod server;
pub mod store;
pub mod testkit;
pub mod tls;
pub mod wire;

pub use client::{in_order, replay_all, Drained, LogClient, Replay, ReplayError, Replayer, Tail};
pub use record::{Body, Epoch, FrameError, OperatorCommand, Record, Seq, FORMAT_VERSION};
pub use store::{check_instance, Ack, Batch, LogError, LogStore};
