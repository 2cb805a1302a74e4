//! # ops — operator tools
//!
//! Owns `bgfctl`, the operator's command line for a bgf cluster: the cluster
//! file ([`cluster`]), a small blocking client for the admin API of every
//! `bgf` process ([`client`]), and what the commands compute from the
//! answers — the cluster status and its protection state ([`status`]),
//! sessions and log inspection (in the binary, `src/bin/bgfctl.rs`),
//! failover drills with their reports and planned switchovers ([`drill`]).
//!
//! It does not own any runtime behaviour of the BGF: it talks to the admin
//! API of running `bgf` processes (docs/OPERATIONS.md), and for drills runs
//! `bgf-callgen` and the cluster file's fault commands.

pub mod client;
pub mod cluster;
pub mod drill;
pub mod status;
