//! # bgf-tests — end-to-end harness
//!
//! Owns the end-to-end tests of the product: it starts real `bgf` processes,
//! real SIPp peers and the project's own RTP endpoints, on loopback or in
//! network namespaces, and asserts outcomes (calls complete, media flows
//! through the pinholes with the BGF's addresses, bad input is dropped and
//! counted). It owns no product code.
