//! # sip-control — the BGF's session core
//!
//! A fully deterministic implementation of the BGF's SIP control logic: a
//! transaction-stateful, record-routing proxy between an **access** and a
//! **core** interface, with registrations (binding → NAT address), dialogs,
//! SDP offer/answer rewrite and the pinhole plan of every session. It contains
//! no networking code, never reads a clock and draws no random numbers: time
//! arrives with every input, and every choice (ports, Via branches, tags,
//! registration tokens) is a pure function of the inputs and the config.
//!
//! ```text
//!   driver (bgf daemon / standby replay / tests)
//!     │  Input::{Sip, Timer, Media}                 ▲ Effect::{Send, Pinhole,
//!     ▼                                             │   SetTimer, CancelTimer}
//!   Core::apply(&Input) ──────────────────────────▶ Applied { effects, state_changed }
//! ```
//!
//! The live instance and the standby run the same `Core` on the same inputs
//! and reach the same state ([`Core::state`] compares equal). The driver logs
//! every input with `state_changed` and releases its effects only after the
//! record is durable.
//!
//! Not here: sockets, TCP framing, timers' clocks, the log store, the packet
//! path (see `bgf`, `state-log`, `media-plane`).

pub mod api;
pub mod caps;
pub mod config;
pub mod core;
pub mod ids;
pub mod limits;
pub mod msg;
pub mod policy;
pub mod registrar;
mod routing;
pub mod sdp;
pub mod session;
pub mod topo;
pub mod txn;

pub use crate::core::{Core, CoreError, CoreState, CoreStats, SessionView};
pub use api::{Applied, Effect, Input, Millis, SipIn, TimerId, Transmit, Transport};
pub use config::{CoreConfig, Limits, Security, SideConfig, SidePolicy, TimerConfig};
pub use media_plane::{Leg, MediaEvent, PinholeId, PinholeOp, PinholeSpec, Side};
