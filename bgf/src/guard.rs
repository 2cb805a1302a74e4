//! Admission before the core (threat model item 5): per access source,
//! token buckets for INVITE, REGISTER and every other request; over its
//! rate a request is answered 503 with Retry-After — at most
//! `refusal_rate` answers a second per source — and past that it is dropped
//! silently and counted (the BGF never sends an unverified source more than
//! it sent). Emergency requests (`urn:service:sos`, `sos` registrations)
//! bypass the per-source buckets within a global emergency rate.
//!
//! This decides in the daemon, before the core and before the log, like the
//! store-degraded 503 of output commit: a refused or dropped input never
//! reaches the core and is never logged, so what the core sees stays a pure
//! function of the log. It is sans-IO: the caller passes the time, and the
//! unit tests run faster than real time. Core-side caps (dialogs,
//! registrations, ports per source) are `sip_control::caps`.

use crate::border::{GuardSettings, Rate};
use serde::Serialize;
use sip_control::caps::is_emergency_request;
use sip_control::limits::TokenBucket;
use sip_control::policy::source_key;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// Sources tracked at once; past it, new sources share one set of buckets
/// (a flood from many spoofed sources then costs one source's share).
const MAX_SOURCES: usize = 100_000;
/// How often idle sources (all buckets full) are forgotten, ms.
const SWEEP_EVERY_MS: u64 = 10_000;

/// What to do with an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the core.
    Pass,
    /// Answer 503 with Retry-After (once; nothing retransmits it).
    Refuse,
    /// Drop it silently (counted).
    Drop,
}

/// Request classes with their own bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Invite,
    Register,
    Other,
}

#[derive(Clone, Copy, Debug)]
struct Source {
    invite: TokenBucket,
    register: TokenBucket,
    other: TokenBucket,
    refusal: TokenBucket,
}

/// Counters (the `guard` object of `/v1/stats`, and metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GuardStats {
    /// Access requests over their source's rate answered 503.
    pub refused_503: u64,
    /// Access messages over their source's rate dropped silently.
    pub dropped: u64,
    /// Emergency requests admitted on the emergency share.
    pub emergency_admitted: u64,
    /// Sources tracked now.
    pub sources: u64,
    /// Inputs from sources beyond the tracked number (sharing one bucket set).
    pub overflow: u64,
}

/// Per-source admission of access-side SIP.
#[derive(Debug)]
pub struct Guard {
    cfg: GuardSettings,
    sources: HashMap<IpAddr, Source>,
    emergency: TokenBucket,
    last_sweep: u64,
    stats: GuardStats,
}

/// The key shared by sources beyond [`MAX_SOURCES`].
const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

fn full(r: Rate, now: u64) -> TokenBucket {
    TokenBucket::full(r.burst, now)
}

impl Guard {
    /// A guard with no source seen yet.
    pub fn new(cfg: GuardSettings) -> Guard {
        Guard {
            emergency: full(cfg.emergency, 0),
            cfg,
            sources: HashMap::new(),
            last_sweep: 0,
            stats: GuardStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> GuardStats {
        GuardStats {
            sources: self.sources.len() as u64,
            ..self.stats.clone()
        }
    }

    /// Decide on a SIP message `data` from access source `src` at `now` (ms).
    pub fn check(&mut self, src: IpAddr, data: &[u8], now: u64) -> Verdict {
        self.sweep(now);
        let response = data.starts_with(b"SIP/");
        let method = if response {
            &b""[..]
        } else {
            data.split(|b| *b == b' ').next().unwrap_or_default()
        };
        let class = match method {
            b"INVITE" => Class::Invite,
            b"REGISTER" => Class::Register,
            _ => Class::Other,
        };
        if !response
            && matches!(class, Class::Invite | Class::Register)
            && is_emergency_request(data)
            && self
                .emergency
                .take(self.cfg.emergency.rate, self.cfg.emergency.burst, now)
        {
            self.stats.emergency_admitted += 1;
            return Verdict::Pass;
        }
        let cfg = self.cfg.clone();
        let key = self.key(src);
        let s = self.sources.entry(key).or_insert_with(|| Source {
            invite: full(cfg.invite, now),
            register: full(cfg.register, now),
            other: full(cfg.other, now),
            refusal: full(cfg.refusal, now),
        });
        let (bucket, rate) = match class {
            Class::Invite => (&mut s.invite, cfg.invite),
            Class::Register => (&mut s.register, cfg.register),
            Class::Other => (&mut s.other, cfg.other),
        };
        if bucket.take(rate.rate, rate.burst, now) {
            return Verdict::Pass;
        }
        // Never answer a response or an ACK; answer the rest while this
        // source's refusal budget lasts.
        let answerable = !response && method != b"ACK";
        if answerable && s.refusal.take(cfg.refusal.rate, cfg.refusal.burst, now) {
            self.stats.refused_503 += 1;
            Verdict::Refuse
        } else {
            self.stats.dropped += 1;
            Verdict::Drop
        }
    }

    /// The bucket key of `src`: its source key, or the shared overflow key
    /// when too many sources are tracked already.
    fn key(&mut self, src: IpAddr) -> IpAddr {
        let key = source_key(src, self.cfg.ipv6_source_prefix);
        if self.sources.contains_key(&key) || self.sources.len() < MAX_SOURCES {
            key
        } else {
            self.stats.overflow += 1;
            OVERFLOW
        }
    }

    /// Forget sources whose buckets are all full again (idle ones).
    fn sweep(&mut self, now: u64) {
        if now < self.last_sweep.saturating_add(SWEEP_EVERY_MS) {
            return;
        }
        self.last_sweep = now;
        let c = self.cfg.clone();
        self.sources.retain(|_, s| {
            !(s.invite.is_full(c.invite.rate, c.invite.burst, now)
                && s.register.is_full(c.register.rate, c.register.burst, now)
                && s.other.is_full(c.other.rate, c.other.burst, now)
                && s.refusal.is_full(c.refusal.rate, c.refusal.burst, now))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GuardSettings {
        GuardSettings {
            invite: Rate {
                rate: 10.0,
                burst: 20.0,
            },
            refusal: Rate {
                rate: 2.0,
                burst: 4.0,
            },
            emergency: Rate {
                rate: 5.0,
                burst: 5.0,
            },
            ..GuardSettings::default()
        }
    }

    const INVITE: &[u8] = b"INVITE sip:x@ims SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n\r\n";
    const SOS: &[u8] = b"INVITE urn:service:sos SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n\r\n";
    const ACK: &[u8] = b"ACK sip:x@ims SIP/2.0\r\n\r\n";
    const RESP: &[u8] = b"SIP/2.0 200 OK\r\n\r\n";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn run(g: &mut Guard, src: IpAddr, data: &[u8], n: usize, now: u64) -> [usize; 3] {
        let mut c = [0; 3];
        for _ in 0..n {
            match g.check(src, data, now) {
                Verdict::Pass => c[0] += 1,
                Verdict::Refuse => c[1] += 1,
                Verdict::Drop => c[2] += 1,
            }
        }
        c
    }

    #[test]
    fn a_flood_from_one_source_gets_a_few_503s_then_silence() {
        let mut g = Guard::new(settings());
        let a = ip("198.18.0.66");
        // 10 000 INVITEs in one instant: the burst passes, 4 refusals, the rest dropped.
        assert_eq!(run(&mut g, a, INVITE, 10_000, 1_000), [20, 4, 9_976]);
        // One second later: 10 more pass, 2 more 503s.
        assert_eq!(run(&mut g, a, INVITE, 100, 2_000), [10, 2, 88]);
        // Another source is untouched; so are the flooder's other classes.
        assert_eq!(run(&mut g, ip("198.18.0.7"), INVITE, 20, 2_000), [20, 0, 0]);
        assert_eq!(run(&mut g, a, ACK, 1, 2_000), [1, 0, 0]);
        let s = g.stats();
        assert_eq!((s.refused_503, s.dropped, s.sources), (6, 10_064, 2));
    }

    #[test]
    fn acks_and_responses_are_never_answered() {
        let mut g = Guard::new(GuardSettings {
            other: Rate {
                rate: 1.0,
                burst: 1.0,
            },
            ..settings()
        });
        let a = ip("198.18.0.66");
        assert_eq!(run(&mut g, a, ACK, 10, 0), [1, 0, 9]);
        assert_eq!(run(&mut g, a, RESP, 10, 0), [0, 0, 10]);
    }

    #[test]
    fn emergency_requests_bypass_the_source_rate_within_their_share() {
        let mut g = Guard::new(settings());
        let a = ip("198.18.0.66");
        run(&mut g, a, INVITE, 1_000, 0);
        assert_eq!(
            run(&mut g, a, SOS, 1, 0),
            [1, 0, 0],
            "through a flooded source"
        );
        // The emergency share is global: 5 a second; past it SOS requests
        // are judged like the others (here: the flooder's budget is gone).
        assert_eq!(run(&mut g, a, SOS, 10, 0), [4, 0, 6]);
        assert_eq!(g.stats().emergency_admitted, 5);
    }

    #[test]
    fn ipv6_sources_share_their_prefix_and_idle_sources_are_forgotten() {
        let mut g = Guard::new(settings());
        assert_eq!(run(&mut g, ip("fd00:a::1"), INVITE, 20, 0), [20, 0, 0]);
        // Same /64: same buckets.
        assert_eq!(run(&mut g, ip("fd00:a::2"), INVITE, 1, 0), [0, 1, 0]);
        assert_eq!(g.stats().sources, 1);
        // Idle long enough to be full again: forgotten at the next sweep.
        g.check(ip("198.18.0.1"), INVITE, 60_000);
        assert_eq!(g.stats().sources, 1);
    }
}
