//! RTP packets and the per-call, per-direction receive record.
//!
//! Nothing here stores packets: a [`RxStats`] is ~200 bytes whatever the call's
//! length (counters, extended highest sequence number, a 64-packet duplicate
//! window, the last arrival, the longest gap and when it began, and at most
//! [`MAX_GAPS`] gaps above the threshold).

use serde::{Deserialize, Serialize};

/// How many individual long gaps are kept per call and direction.
pub const MAX_GAPS: usize = 8;

/// Writes the 12-byte RTP header (V=2, no padding/extension/CSRC) into `buf`.
pub fn write_header(buf: &mut [u8], pt: u8, seq: u16, ts: u32, ssrc: u32) {
    if buf.len() < 12 {
        return;
    }
    buf[0] = 0x80;
    buf[1] = pt & 0x7f;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// `(seq, ssrc)` of an RTP v2 packet; None for anything else (RTCP included:
/// payload types 72–76 with the marker bit are RTCP SR/RR/SDES/BYE/APP).
pub fn parse(b: &[u8]) -> Option<(u16, u32)> {
    if b.len() < 12 || b[0] >> 6 != 2 || (200..=204).contains(&b[1]) {
        return None;
    }
    Some((
        u16::from_be_bytes([b[2], b[3]]),
        u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
    ))
}

/// One long gap: when it began (ms since the run's start) and how long it was.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Gap {
    /// Start of the gap (the arrival before it), ms since the run's start
    /// (sender's clock for the remote side's figures: see `t0_unix_ms`).
    pub at_ms: f64,
    /// Length in ms.
    pub ms: f64,
}

/// Receive record of one direction of one call.
#[derive(Clone, Debug, Default)]
pub struct RxStats {
    /// Packets received (RTP v2; duplicates included).
    pub received: u64,
    /// Packets whose extended sequence number was below the highest seen.
    pub reordered: u64,
    /// Packets whose sequence number had been seen already (64-packet window).
    pub duplicates: u64,
    /// Packets that were not RTP v2 (counted, ignored).
    pub non_rtp: u64,
    /// SSRC changes seen.
    pub ssrc_changes: u32,
    ssrc: Option<u32>,
    base_ext: u64,
    max_ext: u64,
    /// Bit i set: seq `max_ext - i` was received.
    window: u64,
    first_ns: Option<u64>,
    last_ns: u64,
    /// Longest inter-arrival interval (ns) and when it began (ns since start).
    pub max_gap_ns: u64,
    /// Start of the longest gap (ns since the run's start).
    pub max_gap_at_ns: u64,
    /// Gaps above the threshold, first [`MAX_GAPS`] only.
    pub gaps: Vec<(u64, u64)>,
    /// Gaps above the threshold, all of them (counted).
    pub gaps_over: u32,
}

impl RxStats {
    /// Records one datagram that arrived at `now_ns` (ns since the run start).
    /// `gap_threshold_ns`: gaps at least this long are kept in `gaps`.
    pub fn record(&mut self, data: &[u8], now_ns: u64, gap_threshold_ns: u64) {
        let Some((seq, ssrc)) = parse(data) else {
            self.non_rtp += 1;
            return;
        };
        self.received += 1;
        match self.ssrc {
            Some(s) if s != ssrc => {
                self.ssrc_changes += 1;
                self.ssrc = Some(ssrc);
            }
            None => self.ssrc = Some(ssrc),
            _ => {}
        }
        match self.first_ns {
            None => {
                self.first_ns = Some(now_ns);
                // Start well away from 0 so "below the first" stays representable.
                let ext = (1u64 << 32) + u64::from(seq);
                self.base_ext = ext;
                self.max_ext = ext;
                self.window = 1;
            }
            Some(_) => {
                let gap = now_ns.saturating_sub(self.last_ns);
                if gap > self.max_gap_ns {
                    self.max_gap_ns = gap;
                    self.max_gap_at_ns = self.last_ns;
                }
                if gap >= gap_threshold_ns {
                    self.gaps_over += 1;
                    if self.gaps.len() < MAX_GAPS {
                        self.gaps.push((self.last_ns, gap));
                    }
                }
                // Extend seq to the value nearest max_ext (RFC 3550 A.1 style).
                let cur = self.max_ext as i64;
                let low = (self.max_ext & 0xffff) as u16;
                let delta = seq.wrapping_sub(low) as i16 as i64;
                let ext = (cur + delta).max(0) as u64;
                if ext > self.max_ext {
                    let shift = ext - self.max_ext;
                    self.window = if shift >= 64 {
                        1
                    } else {
                        (self.window << shift) | 1
                    };
                    self.max_ext = ext;
                } else {
                    let back = self.max_ext - ext;
                    if back < 64 && self.window & (1 << back) != 0 {
                        self.duplicates += 1;
                    } else {
                        self.reordered += 1;
                        if back < 64 {
                            self.window |= 1 << back;
                        }
                        if ext < self.base_ext {
                            self.base_ext = ext;
                        }
                    }
                }
            }
        }
        self.last_ns = now_ns;
    }

    /// Packets expected from the first to the highest sequence number.
    pub fn expected(&self) -> u64 {
        if self.first_ns.is_none() {
            0
        } else {
            self.max_ext - self.base_ext + 1
        }
    }

    /// Packets lost (expected − unique received; ≥ 0).
    pub fn lost(&self) -> u64 {
        self.expected()
            .saturating_sub(self.received - self.duplicates)
    }

    /// Arrival of the last packet (ns since start), if any arrived.
    pub fn last_ns(&self) -> Option<u64> {
        self.first_ns.map(|_| self.last_ns)
    }

    /// Closes the record at `end_ns` (when this side stopped expecting media):
    /// the silence from the last arrival to then counts as a gap. A stream
    /// that never started has a gap from `start_ns` (when media was due).
    pub fn close(&mut self, start_ns: u64, end_ns: u64, gap_threshold_ns: u64) {
        let from = self.last_ns().unwrap_or(start_ns);
        let gap = end_ns.saturating_sub(from);
        if gap > self.max_gap_ns {
            self.max_gap_ns = gap;
            self.max_gap_at_ns = from;
        }
        if gap >= gap_threshold_ns {
            self.gaps_over += 1;
            if self.gaps.len() < MAX_GAPS {
                self.gaps.push((from, gap));
            }
        }
    }

    /// The report form (ms, with the run's start as time 0).
    pub fn report(&self) -> DirReport {
        DirReport {
            received: self.received,
            expected: self.expected(),
            lost: self.lost(),
            reordered: self.reordered,
            duplicates: self.duplicates,
            non_rtp: self.non_rtp,
            ssrc_changes: self.ssrc_changes,
            first_ms: self.first_ns.map(ns_ms),
            last_ms: self.last_ns().map(ns_ms),
            max_gap_ms: ns_ms(self.max_gap_ns),
            max_gap_at_ms: ns_ms(self.max_gap_at_ns),
            gaps_over_threshold: self.gaps_over,
            gaps: self
                .gaps
                .iter()
                .map(|&(at, len)| Gap {
                    at_ms: ns_ms(at),
                    ms: ns_ms(len),
                })
                .collect(),
            sent: None,
        }
    }
}

/// ns → ms with µs precision.
pub fn ns_ms(ns: u64) -> f64 {
    (ns / 1000) as f64 / 1000.0
}

/// What one side measured for one direction of one call (JSON report).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DirReport {
    /// RTP packets received.
    pub received: u64,
    /// Expected from the sequence numbers (first to highest).
    pub expected: u64,
    /// Lost (expected − unique received).
    pub lost: u64,
    /// Arrived after a higher sequence number.
    pub reordered: u64,
    /// Sequence number seen twice.
    pub duplicates: u64,
    /// Datagrams on the RTP port that were not RTP.
    pub non_rtp: u64,
    /// SSRC changes.
    pub ssrc_changes: u32,
    /// First arrival (ms since the receiving side's start).
    pub first_ms: Option<f64>,
    /// Last arrival (ms since the receiving side's start).
    pub last_ms: Option<f64>,
    /// Longest interval between consecutive arrivals, including the silence
    /// before the stream was closed (ms).
    pub max_gap_ms: f64,
    /// When that gap began (ms since the receiving side's start).
    pub max_gap_at_ms: f64,
    /// Number of gaps at or above the threshold.
    pub gaps_over_threshold: u32,
    /// The first few of those gaps.
    pub gaps: Vec<Gap>,
    /// Packets the other side sent in this direction (from its report; None
    /// when unknown). `sent − (received − duplicates)` were never delivered,
    /// including any still in flight when the call was closed.
    #[serde(default)]
    pub sent: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16) -> Vec<u8> {
        let mut b = vec![0u8; 172];
        write_header(&mut b, 8, seq, u32::from(seq) * 160, 7);
        b
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn in_order_stream_has_no_loss_and_ptime_gaps() {
        let mut s = RxStats::default();
        for i in 0..100u16 {
            s.record(
                &pkt(65500u16.wrapping_add(i)),
                u64::from(i) * 20 * MS,
                60 * MS,
            );
        }
        assert_eq!(s.received, 100);
        assert_eq!(s.expected(), 100);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.reordered, 0);
        assert_eq!(s.max_gap_ns, 20 * MS);
        assert!(s.gaps.is_empty());
    }

    #[test]
    fn loss_reorder_duplicate_and_gap() {
        let mut s = RxStats::default();
        let mut t = 0;
        for seq in [1u16, 2, 4, 3, 3, 5] {
            t += 20 * MS;
            s.record(&pkt(seq), t, 60 * MS);
        }
        t += 500 * MS;
        s.record(&pkt(9), t, 60 * MS);
        assert_eq!(s.received, 7);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.reordered, 1);
        assert_eq!(s.expected(), 9);
        assert_eq!(s.lost(), 3); // 6, 7, 8
        assert_eq!(s.max_gap_ns, 500 * MS);
        assert_eq!(s.max_gap_at_ns, 120 * MS);
        assert_eq!(s.gaps, vec![(120 * MS, 500 * MS)]);
        // Closing later adds the trailing silence as a gap.
        s.close(0, t + 800 * MS, 60 * MS);
        assert_eq!(s.max_gap_ns, 800 * MS);
        assert_eq!(s.gaps_over, 2);
    }

    #[test]
    fn empty_stream_closes_with_a_gap_from_its_start() {
        let mut s = RxStats::default();
        s.close(100 * MS, 400 * MS, 60 * MS);
        assert_eq!(s.max_gap_ns, 300 * MS);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.report().first_ms, None);
    }

    #[test]
    fn garbage_is_counted_not_recorded() {
        let mut s = RxStats::default();
        s.record(b"hello", 0, 1);
        s.record(&[0x80, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0, 1);
        assert_eq!(s.non_rtp, 2);
        assert_eq!(s.received, 0);
    }
}
