//! # standby — N+1 protection (skeleton)
//!
//! Will own everything that makes one standby protect N actives: heartbeats
//! and failure detection, hot replay of every active's log through the same
//! `sip-control` core, fencing in the store, address takeover with gratuitous
//! ARP / unsolicited neighbour advertisements, and role changes.
//!
//! It does not own the session logic (that is `sip-control`, replayed
//! unchanged) nor the log store (`state-log`).
//!
//! Status: skeleton; arrives with issue 5.
