//! # ops — operator tools
//!
//! Owns `bgfctl`, the operator's command line for a bgf cluster: the cluster
//! file ([`cluster`]), a small blocking client for the admin API of every
//! `bgf` process ([`client`]), and what the commands compute from the
//! answers — the cluster status and its protection state ([`status`]),
//! sessions and log inspection (in the binary, `src/bin/bgfctl.rs`).
//!
//! It does not own any runtime behaviour of the BGF: it only talks to the
//! admin API of running `bgf` processes (docs/OPERATIONS.md). Failover
//! drills and planned switchover come later (issue 6); the OpenStack
//! deployment files with issue 8.

pub mod client;
pub mod cluster;
pub mod status;
