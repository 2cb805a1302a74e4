//! Prometheus text exposition (format 0.0.4) for `GET /metrics`, written by
//! hand: a [`Exposition`] collects samples by family and renders each family
//! once (HELP, TYPE, samples together), and a lock-free [`Histogram`] for
//! latencies.
//!
//! Every sample carries `bgf_instance="<process identity>"` (the active's
//! instance id, the standby's name, the state log's listen address); the
//! label is not called `instance` so that it does not clash with the
//! `instance` label Prometheus gives every target.
//!
//! The families themselves are filled by the roles ([`core_families`] for
//! a core loop's `/v1/stats`, [`link_families`] and [`takeover_families`]
//! for the standby). Names and labels are listed in docs/OPERATIONS.md.

use crate::runtime::StatsReply;
use serde::Serialize;
use standby::heartbeat::{LinkStatus, RttStats};
use standby::{ReplicaStatus, TakeoverReport};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, µs (the last bucket is `+Inf`).
pub const BUCKETS_US: [u64; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

/// A latency histogram updated from any thread without a lock.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

/// A copy of a [`Histogram`] (the `append_latency` object of `/v1/stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HistogramSnapshot {
    /// Bucket upper bounds, µs (`+Inf` implied after the last).
    pub le_us: Vec<u64>,
    /// Observations per bucket, cumulative (Prometheus style); one more
    /// entry than `le_us` (the `+Inf` bucket = `count`).
    pub cumulative: Vec<u64>,
    /// Number of observations.
    pub count: u64,
    /// Sum of the observations, µs.
    pub sum_us: u64,
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let k = BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS_US.len());
        self.counts[k].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// A consistent-enough copy (each counter read once).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let cumulative: Vec<u64> = self
            .counts
            .iter()
            .map(|c| {
                acc += c.load(Ordering::Relaxed);
                acc
            })
            .collect();
        HistogramSnapshot {
            le_us: BUCKETS_US.to_vec(),
            count: acc,
            cumulative,
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// Family type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

struct Family {
    kind: Kind,
    help: &'static str,
    lines: Vec<String>,
}

/// Samples collected by family, rendered in the text format.
pub struct Exposition {
    base: Vec<(&'static str, String)>,
    families: BTreeMap<&'static str, Family>,
}

/// Escape a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn num(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Exposition {
    /// Samples of the process `instance`.
    pub fn new(instance: &str) -> Exposition {
        Exposition {
            base: vec![("bgf_instance", instance.to_string())],
            families: BTreeMap::new(),
        }
    }

    fn labels(&self, extra: &[(&str, &str)]) -> String {
        let mut s = String::from("{");
        let all = self
            .base
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(extra.iter().copied());
        for (i, (k, v)) in all.enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "{k}=\"{}\"", escape(v));
        }
        s.push('}');
        s
    }

    fn family(&mut self, name: &'static str, kind: Kind, help: &'static str) -> &mut Family {
        self.families.entry(name).or_insert_with(|| Family {
            kind,
            help,
            lines: Vec::new(),
        })
    }

    /// One sample of a counter or gauge.
    pub fn sample(
        &mut self,
        name: &'static str,
        kind: Kind,
        help: &'static str,
        extra: &[(&str, &str)],
        value: f64,
    ) {
        let line = format!("{name}{} {}", self.labels(extra), num(value));
        self.family(name, kind, help).lines.push(line);
    }

    /// A counter sample.
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        extra: &[(&str, &str)],
        v: u64,
    ) {
        self.sample(name, Kind::Counter, help, extra, v as f64);
    }

    /// A gauge sample.
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        extra: &[(&str, &str)],
        v: f64,
    ) {
        self.sample(name, Kind::Gauge, help, extra, v);
    }

    /// A histogram in seconds from a µs snapshot.
    pub fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        extra: &[(&str, &str)],
        h: &HistogramSnapshot,
    ) {
        let mut lines = Vec::new();
        for (i, c) in h.cumulative.iter().enumerate() {
            let le = match h.le_us.get(i) {
                Some(us) => format!("{}", *us as f64 / 1e6),
                None => "+Inf".to_string(),
            };
            let mut l: Vec<(&str, &str)> = extra.to_vec();
            l.push(("le", &le));
            lines.push(format!("{name}_bucket{} {c}", self.labels(&l)));
        }
        let lb = self.labels(extra);
        lines.push(format!("{name}_sum{lb} {}", h.sum_us as f64 / 1e6));
        lines.push(format!("{name}_count{lb} {}", h.count));
        self.family(name, Kind::Histogram, help).lines.extend(lines);
    }

    /// The text format, families in name order.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, f) in &self.families {
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {}", f.kind.as_str());
            for l in &f.lines {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// `bgf_info`: role and version of this process.
pub fn info_family(e: &mut Exposition, role: &str) {
    e.gauge(
        "bgf_info",
        "Process identity: role and version (always 1).",
        &[("role", role), ("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
}

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

fn u(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return 0,
        }
    }
    cur.as_u64().unwrap_or(0)
}

/// The families of one core loop (`/v1/stats` of an active, or of the
/// instance a standby serves after a takeover).
pub fn core_families(e: &mut Exposition, s: &StatsReply) {
    e.gauge(
        "bgf_sessions",
        "Live sessions (calls).",
        &[],
        s.sessions as f64,
    );
    e.gauge(
        "bgf_registrations",
        "Live registration bindings.",
        &[],
        s.registrations as f64,
    );
    e.gauge(
        "bgf_pinholes",
        "Installed media pinholes.",
        &[],
        s.pinholes as f64,
    );
    let admission = s.statelog.as_ref().map_or(0, |c| c.refused_503);
    let c = &s.core;
    e.counter(
        "bgf_call_attempts_total",
        "New sessions offered: created, refused by the core, or refused with 503 by admission control (rate() gives call attempts/s).",
        &[],
        c.sessions_created + c.sessions_refused + admission,
    );
    e.counter(
        "bgf_sessions_created_total",
        "Sessions created.",
        &[],
        c.sessions_created,
    );
    e.counter(
        "bgf_sessions_ended_total",
        "Sessions ended.",
        &[],
        c.sessions_ended,
    );
    for (by, v) in [("core", c.sessions_refused), ("admission", admission)] {
        e.counter(
            "bgf_sessions_refused_total",
            "New sessions refused, by who refused (core: no ports / unusable SDP; admission: state log degraded or congested).",
            &[("by", by)],
            v,
        );
    }
    let t = &s.transport;
    for (dir, arr) in [
        ("received", &t.sip_responses.received),
        ("sent", &t.sip_responses.sent),
    ] {
        for (k, class) in CLASSES.iter().enumerate() {
            e.counter(
                "bgf_sip_responses_total",
                "SIP responses on the wire, by direction and status class.",
                &[("direction", dir), ("class", class)],
                arr[k],
            );
        }
    }
    for (tr, dir, v) in [
        ("udp", "received", t.udp_rx),
        ("udp", "sent", t.udp_tx),
        ("tcp", "received", t.tcp_rx),
        ("tcp", "sent", t.tcp_tx),
    ] {
        e.counter(
            "bgf_sip_messages_total",
            "SIP messages on the wire, by transport and direction.",
            &[("transport", tr), ("direction", dir)],
            v,
        );
    }
    let held_full = s.statelog.as_ref().map_or(0, |c| c.dropped_held_full);
    for (reason, v) in [
        ("malformed_request", c.malformed_requests),
        ("bad_response", c.dropped_responses),
        ("other", c.dropped_other),
        ("oversize", t.oversize_drops),
        ("framing", t.framing_errors),
        ("send_error", t.send_errors),
        ("held_full", held_full),
    ] {
        e.counter(
            "bgf_sip_dropped_total",
            "SIP messages not forwarded, by reason (malformed requests are answered 400).",
            &[("reason", reason)],
            v,
        );
    }
    e.counter(
        "bgf_sip_retransmissions_absorbed_total",
        "Retransmissions absorbed by the transaction layer.",
        &[],
        c.retransmissions_absorbed,
    );
    e.gauge(
        "bgf_sip_tcp_connections",
        "Open SIP TCP connections, both sides.",
        &[],
        t.tcp_connections as f64,
    );
    e.counter(
        "bgf_media_events_dropped_total",
        "Media plane events (latch, inactivity) dropped because the core loop's queue was full.",
        &[],
        t.core_queue_full,
    );
    e.counter(
        "bgf_media_packets_forwarded_total",
        "RTP/RTCP packets relayed (rate() gives packets/s).",
        &[],
        u(&s.media, &["forwarded_packets"]),
    );
    e.counter(
        "bgf_media_bytes_forwarded_total",
        "UDP payload bytes relayed.",
        &[],
        u(&s.media, &["forwarded_bytes"]),
    );
    if let Some(drops) = s.media.get("drops").and_then(|d| d.as_object()) {
        for (reason, v) in drops {
            e.counter(
                "bgf_media_packets_dropped_total",
                "Media packets dropped, by reason.",
                &[("reason", reason)],
                v.as_u64().unwrap_or(0),
            );
        }
    }
    if s.media.get("xdp").is_some() {
        e.counter(
            "bgf_media_xdp_upcalls_total",
            "Packets the XDP program sent up to user space (latches, unresolved next hops).",
            &[],
            u(&s.media, &["xdp", "upcalls"]),
        );
        e.counter(
            "bgf_media_xdp_upcalls_lost_total",
            "Packets dropped because the XDP upcall ring was full.",
            &[],
            u(&s.media, &["xdp", "upcalls_lost"]),
        );
        e.gauge(
            "bgf_media_xdp_pinholes_free",
            "Pinholes the XDP maps can still take (media.xdp.max_pinholes minus those in use).",
            &[],
            u(&s.media, &["xdp", "pinholes_free"]) as f64,
        );
    }
    if let Some(l) = &s.statelog {
        e.gauge(
            "bgf_log_epoch",
            "Epoch this process appends under.",
            &[],
            l.epoch as f64,
        );
        e.gauge(
            "bgf_log_durable_seq",
            "Highest log seq known durable.",
            &[],
            l.durable_seq as f64,
        );
        e.gauge(
            "bgf_log_lag_records",
            "Log lag: records appended but not yet durable (active), or not yet applied by the standby's replica (label protected).",
            &[],
            l.lag as f64,
        );
        e.gauge(
            "bgf_log_held_sends",
            "SIP messages held until their record is durable.",
            &[],
            l.held as f64,
        );
        e.gauge(
            "bgf_log_degraded",
            "1 while appends fail (new calls refused with 503).",
            &[],
            if l.degraded { 1.0 } else { 0.0 },
        );
        e.counter(
            "bgf_log_appends_total",
            "Append calls that became durable.",
            &[],
            l.appends,
        );
        e.counter(
            "bgf_log_append_failures_total",
            "Failed or timed-out append attempts.",
            &[],
            l.append_failures,
        );
        e.counter(
            "bgf_log_checkpoints_total",
            "Checkpoints written.",
            &[],
            l.checkpoints,
        );
        e.counter(
            "bgf_log_truncated_records_total",
            "Records removed by compaction after a checkpoint.",
            &[],
            l.truncated_records,
        );
        e.histogram(
            "bgf_log_append_duration_seconds",
            "Time from an append call to its durable ack (one observation per group-committed batch).",
            &[],
            &l.append_latency,
        );
    }
}

/// One heartbeat link and (standby) its replica.
pub fn link_families(
    e: &mut Exposition,
    peer: &str,
    link: &LinkStatus,
    replica: Option<&ReplicaStatus>,
) {
    let alive = matches!(link.state, standby::heartbeat::PeerState::Alive);
    e.gauge(
        "bgf_heartbeat_peer_up",
        "1 while the peer's heartbeats arrive in time.",
        &[("peer", peer)],
        if alive { 1.0 } else { 0.0 },
    );
    if let Some(ms) = link.last_heard_ms_ago {
        e.gauge(
            "bgf_heartbeat_last_heard_seconds",
            "Age of the peer's last valid heartbeat.",
            &[("peer", peer)],
            ms as f64 / 1e3,
        );
    }
    let st = &link.stats;
    for (kind, v) in [
        ("sent", st.sent),
        ("received", st.received),
        ("malformed", st.malformed),
        ("forged", st.forged),
        ("old", st.old),
        ("old_version", st.old_version),
        ("refused", st.refused),
        ("send_error", st.send_errors),
    ] {
        e.counter(
            "bgf_heartbeat_packets_total",
            "Heartbeat packets by peer and kind (sent, received, and refused ones by reason).",
            &[("peer", peer), ("kind", kind)],
            v,
        );
    }
    e.counter(
        "bgf_heartbeat_failures_total",
        "Peer failures declared.",
        &[("peer", peer)],
        st.failures,
    );
    for (reason, v) in [
        ("unknown_seq", st.echo_unknown),
        ("bad_hold", st.echo_bad_hold),
    ] {
        e.counter(
            "bgf_heartbeat_rtt_echoes_ignored_total",
            "RTT echoes ignored in accepted heartbeats, by reason (a seq not sent recently, an absurd hold time).",
            &[("peer", peer), ("reason", reason)],
            v,
        );
    }
    rtt_families(e, peer, &link.rtt);
    if let Some(r) = replica {
        e.gauge(
            "bgf_log_lag_records",
            "Log lag: records appended but not yet durable (active), or not yet applied by the standby's replica (label protected).",
            &[("protected", peer)],
            r.lag as f64,
        );
        e.gauge(
            "bgf_replica_applied_seq",
            "Last log seq the standby's replica applied.",
            &[("protected", peer)],
            r.applied as f64,
        );
        e.gauge(
            "bgf_replica_sessions",
            "Sessions in the standby's replica.",
            &[("protected", peer)],
            r.sessions as f64,
        );
    }
}

/// Heartbeat round-trip times to `peer` (both roles): the histogram of
/// samples and, once there is one, the smoothed RTT.
pub fn rtt_families(e: &mut Exposition, peer: &str, r: &RttStats) {
    e.histogram(
        "bgf_heartbeat_rtt_seconds",
        "Heartbeat round-trip time to the peer (from the peer's echo of our seq, minus its hold time).",
        &[("peer", peer)],
        &HistogramSnapshot {
            le_us: r.le_us.clone(),
            cumulative: r.cumulative.clone(),
            count: r.samples,
            sum_us: r.sum_us,
        },
    );
    if let Some(us) = r.srtt_us {
        e.gauge(
            "bgf_heartbeat_srtt_seconds",
            "Smoothed heartbeat round-trip time to the peer (EWMA, gain 1/8, like TCP's srtt).",
            &[("peer", peer)],
            us as f64 / 1e6,
        );
    }
}

/// The last takeover's phases (seconds since detection).
pub fn takeover_families(e: &mut Exposition, r: &TakeoverReport) {
    let phases = [
        ("fenced", Some(r.fenced_us)),
        ("drained", Some(r.drained_us)),
        ("addresses_up", Some(r.addresses_up_us)),
        ("serving", Some(r.serving_us)),
        ("first_announcement", Some(r.first_announcement_us)),
        ("first_media", r.first_media_us),
        ("first_sip", r.first_sip_us),
    ];
    for (phase, us) in phases {
        if let Some(us) = us {
            e.gauge(
                "bgf_takeover_phase_seconds",
                "Last takeover: time from failure detection to the end of each phase.",
                &[("taken_over", &r.instance), ("phase", phase)],
                us as f64 / 1e6,
            );
        }
    }
    e.gauge(
        "bgf_takeover_sessions",
        "Last takeover: sessions carried over.",
        &[("taken_over", &r.instance)],
        r.sessions as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative[0], 1); // <= 100 µs
        assert_eq!(s.cumulative[2], 2); // <= 500 µs
        assert_eq!(s.cumulative[BUCKETS_US.len() - 1], 2);
        assert_eq!(*s.cumulative.last().unwrap(), 3); // +Inf
        assert_eq!(s.sum_us, 50 + 300 + 60_000_000);
    }

    #[test]
    fn heartbeat_rtt_renders_as_a_histogram_and_a_gauge() {
        let mut t = standby::heartbeat::RttTracker::default();
        let at = std::time::Instant::now();
        t.sent(1, at);
        t.echo(1, 0, at + Duration::from_micros(300));
        let mut e = Exposition::new("sb");
        rtt_families(&mut e, "bgf1", &t.stats());
        let out = e.render();
        assert!(
            out.contains("# TYPE bgf_heartbeat_rtt_seconds histogram"),
            "{out}"
        );
        assert!(
            out.contains(
                r#"bgf_heartbeat_rtt_seconds_bucket{bgf_instance="sb",peer="bgf1",le="0.00005"} 0"#
            ),
            "{out}"
        );
        assert!(
            out.contains(
                r#"bgf_heartbeat_rtt_seconds_bucket{bgf_instance="sb",peer="bgf1",le="0.0005"} 1"#
            ),
            "{out}"
        );
        assert!(
            out.contains(
                r#"bgf_heartbeat_rtt_seconds_bucket{bgf_instance="sb",peer="bgf1",le="0.1"} 1"#
            ),
            "{out}"
        );
        assert!(
            out.contains(r#"bgf_heartbeat_rtt_seconds_count{bgf_instance="sb",peer="bgf1"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"bgf_heartbeat_srtt_seconds{bgf_instance="sb",peer="bgf1"} 0.0003"#),
            "{out}"
        );
        // No sample yet: an empty histogram, no srtt gauge.
        let mut e = Exposition::new("sb");
        rtt_families(
            &mut e,
            "bgf1",
            &standby::heartbeat::RttTracker::default().stats(),
        );
        let out = e.render();
        assert!(!out.contains("srtt"), "{out}");
    }

    #[test]
    fn families_render_once_with_escaped_labels() {
        let mut e = Exposition::new("a\"1");
        e.counter("bgf_x_total", "X.", &[("k", "1")], 5);
        e.gauge("bgf_a", "A.", &[], 0.5);
        e.counter("bgf_x_total", "X.", &[("k", "2")], 6);
        let h = Histogram::default();
        h.observe(Duration::from_millis(1));
        e.histogram("bgf_h_seconds", "H.", &[], &h.snapshot());
        let t = e.render();
        assert_eq!(t.matches("# TYPE bgf_x_total counter").count(), 1);
        let x = t.find("bgf_x_total{").unwrap();
        let y = t.rfind("bgf_x_total{").unwrap();
        assert!(!t[x..y].contains("# TYPE"), "family split:\n{t}");
        assert!(t.contains(r#"bgf_a{bgf_instance="a\"1"} 0.5"#), "{t}");
        assert!(
            t.contains(r#"bgf_h_seconds_bucket{bgf_instance="a\"1",le="0.001"} 1"#),
            "{t}"
        );
        assert!(
            t.contains(r#"bgf_h_seconds_bucket{bgf_instance="a\"1",le="+Inf"} 1"#),
            "{t}"
        );
        assert!(
            t.contains(r#"bgf_h_seconds_count{bgf_instance="a\"1"} 1"#),
            "{t}"
        );
    }
}
