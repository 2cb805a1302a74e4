//! Configuration of the trust boundary: the `[limits]` section and the
//! per-side policy keys of `[access]`/`[core]` (media address rules,
//! topology hiding, access routes), validated with every problem collected,
//! mapped to the core's `sip_control::Security` (what the core enforces:
//! routing, media addresses, caps on sessions, registrations and ports) and
//! to [`GuardSettings`] (what the daemon enforces before the core:
//! per-source request rates, emergency share, SIP/TCP connection limits).
//!
//! The schema of the other sections and the mapping of everything else is
//! `config.rs`; the admission itself is `guard.rs`.

use crate::config::SideSection;
use serde::Deserialize;
use sip_control::policy::{MediaRules, Prefix};
use sip_control::{Limits, Security, SidePolicy};
use std::time::Duration;

/// `[limits]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub invite_rate: Option<f64>,
    pub invite_burst: Option<f64>,
    pub register_rate: Option<f64>,
    pub register_burst: Option<f64>,
    pub other_rate: Option<f64>,
    pub other_burst: Option<f64>,
    pub refusal_rate: Option<f64>,
    pub emergency_rate: Option<f64>,
    pub sessions_per_source: Option<u64>,
    pub early_dialogs_per_source: Option<u64>,
    pub registrations_per_source: Option<u64>,
    pub unanswered_invite_ports: Option<u64>,
    pub max_streams_per_session: Option<u64>,
    pub emergency_reserve_percent: Option<u64>,
    pub ipv6_source_prefix: Option<u64>,
    pub tcp_max_connections: Option<u64>,
    pub tcp_max_connections_per_ip: Option<u64>,
    pub tcp_header_timeout_s: Option<u64>,
    pub tcp_idle_timeout_s: Option<u64>,
}

/// One request class's rate: `rate` a second per source, bursts of `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub rate: f64,
    pub burst: f64,
}

/// What the daemon enforces before the core (see `guard.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct GuardSettings {
    /// INVITEs per access source.
    pub invite: Rate,
    /// REGISTERs per access source.
    pub register: Rate,
    /// Every other request per access source.
    pub other: Rate,
    /// 503 answers per access source a second; past it requests are
    /// dropped silently (no reflection).
    pub refusal: Rate,
    /// Emergency requests a second in all (they bypass the per-source rates).
    pub emergency: Rate,
    /// IPv6 sources are counted by this prefix.
    pub ipv6_source_prefix: u8,
    /// SIP TCP connections in all (both sides).
    pub tcp_max_connections: usize,
    /// SIP TCP connections per access source.
    pub tcp_max_connections_per_ip: usize,
    /// Time a started message may take to arrive complete.
    pub tcp_header_timeout: Duration,
    /// A connection without a message or keep-alive for this long is closed.
    pub tcp_idle_timeout: Duration,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            invite: Rate {
                rate: 50.0,
                burst: 100.0,
            },
            register: Rate {
                rate: 20.0,
                burst: 40.0,
            },
            other: Rate {
                rate: 100.0,
                burst: 200.0,
            },
            refusal: Rate {
                rate: 5.0,
                burst: 10.0,
            },
            emergency: Rate {
                rate: 50.0,
                burst: 100.0,
            },
            ipv6_source_prefix: 64,
            // With the media plane's reserve of 1024 descriptors (512 + this).
            tcp_max_connections: 512,
            tcp_max_connections_per_ip: 16,
            tcp_header_timeout: Duration::from_secs(10),
            tcp_idle_timeout: Duration::from_secs(300),
        }
    }
}

fn rate(name: &str, r: Option<f64>, b: Option<f64>, def: Rate, errs: &mut Vec<String>) -> Rate {
    let rate = r.unwrap_or(def.rate);
    // A burst defaults to twice the rate (at least 1).
    let burst = b.unwrap_or(if r.is_some() {
        (2.0 * rate).max(1.0)
    } else {
        def.burst
    });
    if !(rate > 0.0 && rate <= 1e7) {
        errs.push(format!(
            "limits.{name}_rate: {rate} is out of range — use a rate per second above 0 (default {})",
            def.rate
        ));
    }
    if !(1.0..=1e8).contains(&burst) {
        errs.push(format!(
            "limits.{name}_burst: {burst} is out of range — use at least 1 (default {})",
            def.burst
        ));
    }
    Rate { rate, burst }
}

fn count(
    name: &str,
    v: Option<u64>,
    def: u64,
    range: std::ops::RangeInclusive<u64>,
    errs: &mut Vec<String>,
) -> u64 {
    let n = v.unwrap_or(def);
    if !range.contains(&n) {
        errs.push(format!(
            "limits.{name}: {n} is out of range — use {}-{} (default {def})",
            range.start(),
            range.end()
        ));
        return def;
    }
    n
}

/// Validate `[limits]`.
pub fn limits(l: &LimitsSection, errs: &mut Vec<String>) -> (Limits, GuardSettings) {
    let d = Limits::default();
    let g = GuardSettings::default();
    let limits = Limits {
        sessions_per_source: count(
            "sessions_per_source",
            l.sessions_per_source,
            u64::from(d.sessions_per_source),
            1..=10_000_000,
            errs,
        ) as u32,
        early_dialogs_per_source: count(
            "early_dialogs_per_source",
            l.early_dialogs_per_source,
            u64::from(d.early_dialogs_per_source),
            1..=10_000_000,
            errs,
        ) as u32,
        registrations_per_source: count(
            "registrations_per_source",
            l.registrations_per_source,
            u64::from(d.registrations_per_source),
            1..=10_000_000,
            errs,
        ) as u32,
        unanswered_invite_ports: count(
            "unanswered_invite_ports",
            l.unanswered_invite_ports,
            u64::from(d.unanswered_invite_ports),
            1..=65_536,
            errs,
        ) as u32,
        max_streams_per_session: count(
            "max_streams_per_session",
            l.max_streams_per_session,
            u64::from(d.max_streams_per_session),
            1..=16,
            errs,
        ) as u8,
        emergency_reserve_percent: count(
            "emergency_reserve_percent",
            l.emergency_reserve_percent,
            u64::from(d.emergency_reserve_percent),
            0..=50,
            errs,
        ) as u8,
        ipv6_source_prefix: count(
            "ipv6_source_prefix",
            l.ipv6_source_prefix,
            u64::from(d.ipv6_source_prefix),
            32..=128,
            errs,
        ) as u8,
    };
    let guard = GuardSettings {
        invite: rate("invite", l.invite_rate, l.invite_burst, g.invite, errs),
        register: rate(
            "register",
            l.register_rate,
            l.register_burst,
            g.register,
            errs,
        ),
        other: rate("other", l.other_rate, l.other_burst, g.other, errs),
        refusal: rate("refusal", l.refusal_rate, None, g.refusal, errs),
        emergency: rate("emergency", l.emergency_rate, None, g.emergency, errs),
        ipv6_source_prefix: limits.ipv6_source_prefix,
        tcp_max_connections: count(
            "tcp_max_connections",
            l.tcp_max_connections,
            g.tcp_max_connections as u64,
            1..=1_000_000,
            errs,
        ) as usize,
        tcp_max_connections_per_ip: count(
            "tcp_max_connections_per_ip",
            l.tcp_max_connections_per_ip,
            g.tcp_max_connections_per_ip as u64,
            1..=1_000_000,
            errs,
        ) as usize,
        tcp_header_timeout: Duration::from_secs(count(
            "tcp_header_timeout_s",
            l.tcp_header_timeout_s,
            g.tcp_header_timeout.as_secs(),
            1..=600,
            errs,
        )),
        tcp_idle_timeout: Duration::from_secs(count(
            "tcp_idle_timeout_s",
            l.tcp_idle_timeout_s,
            g.tcp_idle_timeout.as_secs(),
            5..=86_400,
            errs,
        )),
    };
    if guard.tcp_max_connections_per_ip > guard.tcp_max_connections {
        errs.push(format!(
            "limits.tcp_max_connections_per_ip: {} exceeds limits.tcp_max_connections {} — lower it",
            guard.tcp_max_connections_per_ip, guard.tcp_max_connections
        ));
    }
    (limits, guard)
}

fn prefixes(field: &str, v: Option<&Vec<String>>, errs: &mut Vec<String>) -> Vec<Prefix> {
    v.into_iter()
        .flatten()
        .filter_map(|p| match Prefix::parse(p) {
            Ok(p) => Some(p),
            Err(e) => {
                errs.push(format!("{field}: {e}"));
                None
            }
        })
        .collect()
}

/// The policy keys of `[access]` / `[core]`.
fn side_policy(
    name: &str,
    side: sip_control::Side,
    sec: Option<&SideSection>,
    errs: &mut Vec<String>,
) -> SidePolicy {
    let d = SidePolicy::default_for(side);
    let Some(sec) = sec else { return d };
    let hiding = sec.topology_hiding.unwrap_or(d.topology_hiding);
    SidePolicy {
        media: MediaRules {
            deny: prefixes(&format!("{name}.media_deny"), sec.media_deny.as_ref(), errs),
            allow_loopback: sec.allow_loopback_media.unwrap_or(false),
            allow_hold_address: sec.allow_hold_address.unwrap_or(false),
        },
        topology_hiding: hiding,
    }
}

/// Everything the core enforces, from the file's sections.
pub fn security(
    access: Option<&SideSection>,
    core: Option<&SideSection>,
    keep_access_route_headers: Option<bool>,
    limits: Limits,
    errs: &mut Vec<String>,
) -> Security {
    if core.is_some_and(|c| c.require_registration.is_some()) {
        errs.push("core.require_registration: not allowed on the core side — set access.require_registration".into());
    }
    if core.is_some_and(|c| c.routes.is_some()) {
        errs.push("core.routes: not allowed on the core side — set access.routes (prefixes initial requests from the core may reach without a registration)".into());
    }
    Security {
        access: side_policy("access", sip_control::Side::Access, access, errs),
        core: side_policy("core", sip_control::Side::Core, core, errs),
        keep_access_route_headers: keep_access_route_headers.unwrap_or(false),
        require_registration: access.and_then(|a| a.require_registration).unwrap_or(true),
        access_routes: prefixes(
            "access.routes",
            access.and_then(|a| a.routes.as_ref()),
            errs,
        ),
        limits,
    }
}
