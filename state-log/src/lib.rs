//! # state-log — the DAL-style input log (skeleton)
//!
//! Will own the input log every active appends to and the standby tails: the
//! versioned record format (serde + rmp-serde, per-record integrity check),
//! the client API (`append` resolving when durable, `replay`, `tail`,
//! `compact`, `fence` with epoch-checked appends), the embedded store server
//! (fjall, group commit with fsync) and the Redis Streams backend.
//!
//! It does not own session state or decide what to log: the session core
//! (`sip-control`) marks each input that changed state, and the daemon logs
//! exactly those inputs before releasing their effects.
//!
//! Status: skeleton. The log arrives with issue 3; until then an active runs
//! without durability (see README, "What this version does not do yet").
