//! # bgf-tests — end-to-end harness
//!
//! Owns the end-to-end tests of the product: it starts real `bgf` processes,
//! real SIPp peers and the project's own RTP endpoints, on loopback or in
//! network namespaces, and asserts outcomes (calls complete, media flows
//! through the pinholes with the BGF's addresses, bad input is dropped and
//! counted). It owns no product code.
//!
//! ```text
//!   UE side (127.N.M.4)            bgf (127.N.M.1 access, .2 core)        core side (127.N.M.3)
//!   SIPp uac / RtpEndpoint  ──SIP/RTP──▶  bgf active  ──SIP/RTP──▶  SIPp uas / RtpEndpoint
//!                                          ▲ admin HTTP (127.N.M.6:8080): AdminClient
//! ```
//!
//! Pieces: [`build`] finds (or builds once) the `bgf` binary of the profile the
//! tests run under; [`net`] gives every test its own loopback /24 so tests run in
//! parallel; [`bgfproc`] writes a config, starts `bgf active` and kills it on drop;
//! [`admin`] reads `/health`, `/v1/stats`, `/v1/sessions`; [`sipp`] runs SIPp
//! scenarios from `tests/sipp/` with bounded time; [`rtp`] is a small RTP endpoint
//! (send PCMA at 20 ms, record what arrives); [`sipraw`] sends hand-made SIP over
//! UDP; [`bed`] ties them together for one test; [`ops`] runs `bgfctl` and
//! parses Prometheus text; [`proc`] is the one spawner of helper processes
//! (plain or in a namespace); [`cluster`] runs an N+1 cluster (namespaces
//! or loopback) with `bgf-callgen` through it, and [`demo`] is the failover
//! drill `bgf-demo` runs; [`pki`] makes the store credentials every one of
//! them uses (`bgf gen-certs`).

pub mod admin;
pub mod bed;
pub mod bgfproc;
pub mod build;
pub mod callgen;
pub mod cluster;
pub mod demo;
pub mod logcheck;
pub mod net;
pub mod netns;
pub mod ops;
pub mod pki;
pub mod proc;
pub mod redisproc;
pub mod rtp;
pub mod sipp;
pub mod sipraw;
pub mod statelogproc;
pub mod util;

pub use admin::{AdminClient, LegView, PinholeView, SessionView};
pub use bed::Bed;
pub use bgfproc::{BgfConfig, BgfProcess};
pub use net::TestNet;
pub use rtp::RtpEndpoint;
pub use sipp::{Sipp, SippResult, SippRun};
pub use statelogproc::StatelogProcess;
pub use util::{wait_until, TestDir};
