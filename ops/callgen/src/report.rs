//! The reports: what the UAS sends the UAC ([`SideReport`]), the final
//! per-call and summary report ([`Report`], written as JSON), the summary
//! table, and the threshold checks that decide the exit status.

use crate::engine::{Cpu, MediaTotals};
use crate::rtp::DirReport;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// SIP counters of one side.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SipTotals {
    /// Messages sent, retransmissions included.
    pub sent: u64,
    /// Retransmissions sent.
    pub retransmissions: u64,
    /// Datagrams that did not parse.
    pub unparsable: u64,
}

/// Media, SIP and CPU totals of one side.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SideTotals {
    /// Media counters.
    pub media: MediaTotals,
    /// SIP counters.
    pub sip: SipTotals,
    /// CPU used by this side's process.
    pub cpu: Cpu,
    /// Calls this side handled.
    pub calls: u64,
    /// CPU µs per call (user + sys over the whole run / calls).
    pub cpu_us_per_call: f64,
    /// CPU µs per RTP packet (sent + received).
    pub cpu_us_per_packet: f64,
}

impl SideTotals {
    /// Totals with the derived per-call/per-packet CPU figures.
    pub fn new(media: MediaTotals, sip: SipTotals, cpu: Cpu, calls: u64) -> SideTotals {
        let us = cpu.total_s() * 1e6;
        let pkts = media.tx_packets + media.rx_packets;
        SideTotals {
            cpu_us_per_call: if calls > 0 { us / calls as f64 } else { 0.0 },
            cpu_us_per_packet: if pkts > 0 { us / pkts as f64 } else { 0.0 },
            media,
            sip,
            cpu,
            calls,
        }
    }
}

/// One call as the UAS saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UasCall {
    /// Call-ID.
    pub call_id: String,
    /// INVITE arrival (ms since the UAS's start).
    pub start_ms: f64,
    /// BYE arrival or end of run (ms since the UAS's start).
    pub end_ms: Option<f64>,
    /// The call ended with a BYE the UAS answered.
    pub bye_received: bool,
    /// re-INVITEs answered.
    pub reinvites: u32,
    /// RTP packets the UAS sent in this call (the UAS → UAC direction).
    #[serde(default)]
    pub tx: u64,
    /// What the UAS received (the UAC → UAS direction).
    pub rx: DirReport,
}

/// The UAS's report (sent to the UAC over the control connection, or written
/// with `uas --json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SideReport {
    /// "uas".
    pub role: String,
    /// Wall-clock time of the UAS's start (its times are relative to it).
    pub t0_unix_ms: f64,
    /// The marker, if one was received (ms since the UAS's start).
    pub marker_ms: Option<f64>,
    /// Calls.
    pub calls: Vec<UasCall>,
    /// Packets received per 10 ms since the UAS's start.
    pub rx_series: Vec<u32>,
    /// Totals.
    pub totals: SideTotals,
}

/// How a call ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Set up, media both ways, ended normally (and passed the check if it
    /// was up at the marker).
    Ok,
    /// Never set up, or failed without having been up at the marker.
    Failed,
    /// Up at the marker and not healthy afterwards.
    Lost,
}

/// The in-dialog check of a call that was up at the marker.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Check {
    /// Status of the re-INVITE (None: no final response).
    pub reinvite_code: Option<u16>,
    /// re-INVITE round trip (ms).
    pub reinvite_ms: Option<f64>,
    /// The UE's new RTP port.
    pub new_port: Option<u16>,
    /// Packets that arrived on the new port before the BYE.
    pub new_port_packets: u64,
    /// Status of the BYE.
    pub bye_code: Option<u16>,
}

/// One call in the final report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallReport {
    /// Call-ID.
    pub call_id: String,
    /// ok / failed / lost.
    pub outcome: Outcome,
    /// Why it is not ok.
    pub reason: Option<String>,
    /// INVITE sent (ms since the UAC's start).
    pub start_ms: f64,
    /// INVITE → 2xx (ms).
    pub setup_ms: Option<f64>,
    /// End (ms since the UAC's start).
    pub end_ms: Option<f64>,
    /// The call was up when the marker came.
    pub up_at_marker: bool,
    /// The in-dialog check (calls up at the marker).
    pub check: Option<Check>,
    /// UAS → UAC direction, measured at the UAC.
    pub down: Option<DirReport>,
    /// UAC → UAS direction, measured at the UAS (times converted to the
    /// UAC's clock); None without a UAS report.
    pub up: Option<DirReport>,
}

/// Nearest-rank percentiles.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Pct {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Pct {
    /// Percentiles of `v` (all zero when empty).
    pub fn of(mut v: Vec<f64>) -> Pct {
        if v.is_empty() {
            return Pct::default();
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let at = |p: f64| {
            let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1]
        };
        Pct {
            n: v.len(),
            p50: at(50.0),
            p95: at(95.0),
            p99: at(99.0),
            max: v[v.len() - 1],
        }
    }
}

/// The summary.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Calls started.
    pub calls: u64,
    /// Calls ok.
    pub ok: u64,
    /// Calls failed.
    pub failed: u64,
    /// Calls lost.
    pub lost: u64,
    /// Calls up at the marker.
    pub up_at_marker: u64,
    /// Setup time (ms) of the answered calls.
    pub setup_ms: Pct,
    /// Per-call longest gap, UAS → UAC (ms), calls with media.
    pub gap_down_ms: Pct,
    /// Per-call longest gap, UAC → UAS (ms); None without a UAS report.
    pub gap_up_ms: Option<Pct>,
    /// Packets lost UAS → UAC.
    pub lost_packets_down: u64,
    /// Packets lost UAC → UAS.
    pub lost_packets_up: Option<u64>,
    /// Reordered UAS → UAC.
    pub reordered_down: u64,
    /// Reordered UAC → UAS.
    pub reordered_up: Option<u64>,
    /// Most concurrent calls up.
    pub peak_concurrent: u64,
    /// Sent by the UAS but never received by the UAC (lost + still in flight
    /// at the end of each call); None without a UAS report.
    #[serde(default)]
    pub undelivered_down: Option<u64>,
    /// Sent by the UAC but never received by the UAS.
    #[serde(default)]
    pub undelivered_up: Option<u64>,
}

/// Media rate around the marker (10 ms buckets, UAC clock).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SeriesReport {
    /// Bucket width (ms).
    pub bucket_ms: u32,
    /// Packets received by the UAC per bucket (UAS → UAC).
    pub down_rx: Vec<u32>,
    /// Packets received by the UAS per bucket, shifted to the UAC's clock.
    pub up_rx: Option<Vec<u32>>,
}

/// The final report (`--json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// "bgf-callgen".
    pub tool: String,
    /// Tool version.
    pub version: String,
    /// Wall-clock time of the UAC's start; every `*_ms` time is relative to it.
    pub t0_unix_ms: f64,
    /// The marker (ms since start), if any.
    pub marker_ms: Option<f64>,
    /// The options of the run.
    pub config: serde_json::Value,
    /// The summary.
    pub summary: Summary,
    /// Call-IDs of the lost calls.
    pub lost_call_ids: Vec<String>,
    /// Thresholds exceeded (empty: none).
    pub violations: Vec<String>,
    /// The UAS's report could not be had (why).
    pub uas_error: Option<String>,
    /// UAC totals.
    pub uac: SideTotals,
    /// UAS totals.
    pub uas: Option<SideTotals>,
    /// Media rate time series.
    pub series: SeriesReport,
    /// Every call.
    pub calls: Vec<CallReport>,
}

/// Thresholds from the command line.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Thresholds {
    /// Largest per-call gap allowed (ms), either direction.
    pub max_gap_ms: Option<f64>,
    /// Largest setup time allowed (ms).
    pub max_setup_ms: Option<f64>,
    /// Most failed calls allowed.
    pub max_failed: Option<u64>,
    /// Most lost packets allowed per call and direction.
    pub max_loss: Option<u64>,
}

impl Thresholds {
    /// The violations of `r`, one line each.
    pub fn check(&self, r: &Report) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(m) = self.max_gap_ms {
            let mut worst: Vec<(f64, &str, &str)> = Vec::new();
            for c in &r.calls {
                for (d, name) in [(&c.down, "down"), (&c.up, "up")] {
                    if let Some(d) = d {
                        if d.max_gap_ms > m {
                            worst.push((d.max_gap_ms, name, &c.call_id));
                        }
                    }
                }
            }
            if !worst.is_empty() {
                worst.sort_by(|a, b| b.0.total_cmp(&a.0));
                v.push(format!(
                    "--max-gap-ms {m}: {} call directions above it, worst {:.1} ms ({} of {})",
                    worst.len(),
                    worst[0].0,
                    worst[0].1,
                    worst[0].2
                ));
            }
        }
        if let Some(m) = self.max_setup_ms {
            if r.summary.setup_ms.max > m {
                v.push(format!(
                    "--max-setup-ms {m}: slowest setup {:.1} ms",
                    r.summary.setup_ms.max
                ));
            }
        }
        if let Some(m) = self.max_failed {
            if r.summary.failed > m {
                v.push(format!(
                    "--max-failed {m}: {} calls failed",
                    r.summary.failed
                ));
            }
        }
        if let Some(m) = self.max_loss {
            let n = r
                .calls
                .iter()
                .filter(|c| {
                    c.down.as_ref().is_some_and(|d| d.lost > m)
                        || c.up.as_ref().is_some_and(|d| d.lost > m)
                })
                .count();
            if n > 0 {
                v.push(format!(
                    "--max-loss {m}: {n} calls lost more packets in a direction"
                ));
            }
        }
        v
    }
}

fn pct_row(name: &str, p: &Pct) -> String {
    format!(
        "  {name:<24} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1}\n",
        p.n, p.p50, p.p95, p.p99, p.max
    )
}

/// The summary table for the terminal.
pub fn table(r: &Report) -> String {
    let s = &r.summary;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "calls: {} started, {} ok, {} failed, {} lost (up at marker: {}, peak concurrent {})",
        s.calls, s.ok, s.failed, s.lost, s.up_at_marker, s.peak_concurrent
    );
    if let Some(m) = r.marker_ms {
        let _ = writeln!(t, "marker at {:.3} s", m / 1000.0);
    }
    let _ = writeln!(
        t,
        "  {:<24} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "ms", "n", "p50", "p95", "p99", "max"
    );
    t += &pct_row("setup time", &s.setup_ms);
    t += &pct_row("gap UAS->UAC (down)", &s.gap_down_ms);
    match &s.gap_up_ms {
        Some(p) => t += &pct_row("gap UAC->UAS (up)", p),
        None => {
            let _ = writeln!(
                t,
                "  gap UAC->UAS (up)        n/a ({})",
                r.uas_error.as_deref().unwrap_or("no UAS report")
            );
        }
    }
    let _ = writeln!(
        t,
        "packets lost: down {} up {}; reordered: down {} up {}",
        s.lost_packets_down,
        s.lost_packets_up.map_or("n/a".into(), |v| v.to_string()),
        s.reordered_down,
        s.reordered_up.map_or("n/a".into(), |v| v.to_string()),
    );
    if let (Some(d), Some(u)) = (s.undelivered_down, s.undelivered_up) {
        let _ = writeln!(
            t,
            "sent but not received by the end of each call (loss + in flight): down {d} up {u}"
        );
    }
    let side = |name: &str, x: &SideTotals| {
        format!(
            "{name}: cpu {:.2} s user + {:.2} s sys over {:.1} s; {:.0} µs/call, {:.2} µs/packet; rtp tx {} rx {} (io {}{}, tx errors {}, max send lateness {:.1} ms, send stalls {}); sip sent {} (retransmissions {})\n",
            x.cpu.user_s,
            x.cpu.sys_s,
            x.cpu.wall_s,
            x.cpu_us_per_call,
            x.cpu_us_per_packet,
            x.media.tx_packets,
            x.media.rx_packets,
            if x.media.io.is_empty() { "?" } else { &x.media.io },
            if x.media.rx_ring_drops > 0 {
                format!(", RING DROPS {}", x.media.rx_ring_drops)
            } else {
                String::new()
            },
            x.media.tx_errors,
            x.media.tx_max_late_ms,
            x.media.tx_stalls,
            x.sip.sent,
            x.sip.retransmissions
        )
    };
    t += &side("uac", &r.uac);
    if let Some(u) = &r.uas {
        t += &side("uas", u);
    }
    if !r.lost_call_ids.is_empty() {
        let shown: Vec<&str> = r
            .lost_call_ids
            .iter()
            .take(20)
            .map(String::as_str)
            .collect();
        let _ = writeln!(
            t,
            "LOST calls ({}): {}{}",
            r.lost_call_ids.len(),
            shown.join(" "),
            if r.lost_call_ids.len() > 20 {
                " …"
            } else {
                ""
            }
        );
    }
    let failed: Vec<&CallReport> = r
        .calls
        .iter()
        .filter(|c| c.outcome == Outcome::Failed)
        .take(5)
        .collect();
    for c in failed {
        let _ = writeln!(
            t,
            "failed: {} ({})",
            c.call_id,
            c.reason.as_deref().unwrap_or("?")
        );
    }
    for v in &r.violations {
        let _ = writeln!(t, "THRESHOLD EXCEEDED: {v}");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let p = Pct::of((1..=100).map(f64::from).collect());
        assert_eq!(
            (p.p50, p.p95, p.p99, p.max, p.n),
            (50.0, 95.0, 99.0, 100.0, 100)
        );
        let p = Pct::of(vec![3.0]);
        assert_eq!((p.p50, p.max), (3.0, 3.0));
        assert_eq!(Pct::of(vec![]), Pct::default());
    }
}
