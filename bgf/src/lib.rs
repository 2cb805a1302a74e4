//! # bgf — the daemon's library
//!
//! Owns process concerns: config loading and validation, logging, and the
//! wiring that drives the deterministic `sip-control` core from real sockets
//! (SIP over UDP/TCP), real time (timers) and the `media-plane` packet path;
//! the standby and state log roles; the admin API. The `bgf` binary
//! (`main.rs`) is its command line; the fuzz targets (`tests/fuzz`) drive
//! the same modules in-process (the TCP framer, the admin router).
//!
//! It does not own SIP or session logic (that is `sip-control`) nor packet
//! forwarding (that is `media-plane`).
//!
//! Modules: [`config`] (TOML schema and validation), [`transport`] (SIP
//! UDP/TCP sockets and framing), [`runtime`] (the core loop, timers and
//! effects), [`media`] (media plane glue; [`media_xdp`] the XDP section,
//! [`admission`] capacity-based 503s), [`admin`] (HTTP admin API),
//! [`process`] (start-up shared by the roles), [`store`] (which state log
//! and how to reach it: `[statelog]`, credentials), [`pipeline`] (the
//! pipelined appender of output commit).

pub mod admin;
pub mod admission;
pub mod border;
pub mod commit;
pub mod config;
pub mod guard;
pub mod ha;
pub mod ifaddrs;
pub mod media;
pub mod media_xdp;
pub mod metrics;
pub mod pipeline;
pub mod presync;
pub mod process;
pub mod runtime;
pub mod standby_role;
pub mod statelog_role;
pub mod store;
pub mod transport;
pub mod udp;
