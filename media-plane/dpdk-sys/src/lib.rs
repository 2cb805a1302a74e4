//! # dpdk-sys — bgf's bindings to the system DPDK
//!
//! Owns the FFI boundary to DPDK (22.11, found with `pkg-config libdpdk`):
//! bindgen-generated declarations of the `rte_*` API and a small C shim
//! (`shim/shim.c`) that turns DPDK's static-inline functions (RX/TX burst,
//! mbuf alloc/free/data access, `rte_errno`, checksum-offload set-up, port
//! start) into real symbols.
//!
//! It does not own any logic: the media plane's DPDK backend
//! (`media-plane`, feature `dpdk`) is the only user. Without the `link`
//! feature this crate is empty and its build needs no DPDK, so the default
//! workspace build works on any machine. (The crates.io `dpdk-sys` bundles
//! DPDK 18.05 and no longer builds; this crate replaces it.)

#[cfg(feature = "link")]
#[allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    improper_ctypes,
    unnecessary_transmutes,
    clippy::all,
    clippy::pedantic,
    missing_docs
)]
mod bindings {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

#[cfg(feature = "link")]
pub use bindings::*;
