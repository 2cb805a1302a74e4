//! Rate and count limits shared by the session core and the daemon:
//! a token bucket with time as an input ([`TokenBucket`]), and the gate that
//! keeps bad-input log lines to a bounded rate ([`LogGate`]).
//!
//! Both are sans-IO and deterministic: the caller passes the time. The core's
//! `LogGate` is not part of its replayable state (log lines are not state),
//! and it is driven by input times only, so a replay logs the same lines.
//! The daemon's per-source admission (bgf `guard.rs`) uses `TokenBucket`.

use serde::{Deserialize, Serialize};

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
/// Time is in milliseconds and only ever moves forward (an earlier time is
/// treated as no time passing).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenBucket {
    tokens: f64,
    last: u64,
}

impl TokenBucket {
    /// A full bucket at time `now`.
    pub fn full(burst: f64, now: u64) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: u64) {
        if now > self.last {
            let dt = (now - self.last) as f64 / 1000.0;
            self.tokens = (self.tokens + dt * rate).min(burst);
            self.last = now;
        }
    }

    /// Take one token if there is one.
    pub fn take(&mut self, rate: f64, burst: f64, now: u64) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full at `now` (an idle entry that may be forgotten).
    pub fn is_full(&self, rate: f64, burst: f64, now: u64) -> bool {
        let mut b = *self;
        b.refill(rate, burst, now);
        b.tokens >= burst
    }
}

/// Categories of bad input whose log lines are rate-limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    /// Unparseable or malformed SIP.
    Malformed,
    /// Refused by the policy (routing, dialog match, media addresses, caps).
    Policy,
    /// Refused for lack of capacity (ports, caps).
    Capacity,
}

const KINDS: usize = 3;

/// Log lines allowed per kind: 5 a second, bursts of 20.
const RATE: f64 = 5.0;
const BURST: f64 = 20.0;

/// Decides whether a bad-input event may write a log line. Suppressed lines
/// are counted; the next line that passes reports how many were suppressed.
#[derive(Clone, Debug, Default)]
pub struct LogGate {
    buckets: [Option<TokenBucket>; KINDS],
    suppressed: [u64; KINDS],
    /// Lines suppressed in all, since start.
    pub total_suppressed: u64,
}

impl LogGate {
    /// `Some(n)`: log now, mentioning `n` lines suppressed since the last
    /// one of this kind; `None`: suppressed (counted).
    pub fn allow(&mut self, kind: LogKind, now: u64) -> Option<u64> {
        let i = kind as usize;
        let b = self.buckets[i].get_or_insert(TokenBucket::full(BURST, now));
        if b.take(RATE, BURST, now) {
            Some(std::mem::take(&mut self.suppressed[i]))
        } else {
            self.suppressed[i] += 1;
            self.total_suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate_up_to_burst() {
        let mut b = TokenBucket::full(3.0, 0);
        assert!(b.take(2.0, 3.0, 0));
        assert!(b.take(2.0, 3.0, 0));
        assert!(b.take(2.0, 3.0, 0));
        assert!(!b.take(2.0, 3.0, 0));
        assert!(!b.take(2.0, 3.0, 400), "0.8 tokens after 400 ms");
        assert!(b.take(2.0, 3.0, 500));
        assert!(!b.take(2.0, 3.0, 100), "time going back adds nothing");
        assert!(b.is_full(2.0, 3.0, 10_000));
        assert!(!b.is_full(2.0, 3.0, 600));
    }

    #[test]
    fn log_gate_bounds_lines_and_counts_the_rest() {
        let mut g = LogGate::default();
        let passed = (0..1000)
            .filter(|_| g.allow(LogKind::Malformed, 1_000).is_some())
            .count();
        assert_eq!(passed, 20, "a burst of 20");
        assert_eq!(g.total_suppressed, 980);
        // Another kind has its own budget.
        assert_eq!(g.allow(LogKind::Policy, 1_000), Some(0));
        // A second later: 5 more, the first reporting what was suppressed.
        assert_eq!(g.allow(LogKind::Malformed, 2_000), Some(980));
        assert_eq!(g.allow(LogKind::Malformed, 2_000), Some(0));
    }
}
