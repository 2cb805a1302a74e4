//! # bgf — the daemon
//!
//! Owns process concerns: CLI, config loading and validation, logging, and the
//! wiring that drives the deterministic `sip-control` core from real sockets
//! (SIP over UDP/TCP), real time (timers) and the `media-plane` packet path.
//!
//! It does not own SIP or session logic (that is `sip-control`) nor packet
//! forwarding (that is `media-plane`).

fn main() {
    println!("bgf {}", env!("CARGO_PKG_VERSION"));
}
