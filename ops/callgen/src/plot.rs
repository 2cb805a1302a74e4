//! The SVG plot (no dependencies): top, the longest media gap of every call
//! per direction; bottom, the aggregate received media rate over time with
//! the marker drawn in.

use crate::report::Report;
use std::fmt::Write as _;

const W: f64 = 1000.0;
const PH: f64 = 300.0; // panel height
const ML: f64 = 70.0; // left margin
const MR: f64 = 20.0;

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let e = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * e {
            return m * e;
        }
    }
    10.0 * e
}

#[allow(clippy::too_many_arguments)]
fn axes(
    s: &mut String,
    top: f64,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    xmax: f64,
    ymax: f64,
    x0: f64,
) {
    let (l, r, b) = (ML, W - MR, top + PH);
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" font-size="15" font-weight="bold">{title}</text>"##,
        ML,
        top - 10.0
    );
    let _ = write!(
        s,
        r##"<rect x="{l}" y="{top}" width="{}" height="{PH}" fill="none" stroke="#444"/>"##,
        r - l
    );
    for k in 0..=5 {
        let f = f64::from(k) / 5.0;
        let y = b - f * PH;
        let x = l + f * (r - l);
        let _ = write!(
            s,
            r##"<line x1="{l}" y1="{y}" x2="{r}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" font-size="11" text-anchor="end">{:.0}</text>"##,
            l - 5.0,
            y + 4.0,
            f * ymax
        );
        let _ = write!(
            s,
            r##"<text x="{x}" y="{}" font-size="11" text-anchor="middle">{:.1}</text>"##,
            b + 15.0,
            x0 + f * xmax
        );
    }
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" font-size="12" text-anchor="middle">{xlabel}</text><text x="15" y="{}" font-size="12" transform="rotate(-90 15 {})" text-anchor="middle">{ylabel}</text>"##,
        (l + r) / 2.0,
        b + 32.0,
        top + PH / 2.0,
        top + PH / 2.0
    );
}

/// Renders the report as an SVG document.
pub fn svg(r: &Report) -> String {
    let mut s = String::new();
    let h = 2.0 * PH + 170.0;
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"##
    );
    // Panel 1: gap per call.
    let top1 = 40.0;
    let gaps: Vec<(Option<f64>, Option<f64>)> = r
        .calls
        .iter()
        .map(|c| {
            (
                c.down.as_ref().map(|d| d.max_gap_ms),
                c.up.as_ref().map(|d| d.max_gap_ms),
            )
        })
        .collect();
    let gmax = nice_max(
        gaps.iter()
            .flat_map(|(a, b)| [a.unwrap_or(0.0), b.unwrap_or(0.0)])
            .fold(0.0, f64::max),
    );
    let n = gaps.len().max(1) as f64;
    axes(
        &mut s,
        top1,
        &format!(
            "Longest media gap per call ({} calls: {} ok, {} failed, {} lost)",
            r.summary.calls, r.summary.ok, r.summary.failed, r.summary.lost
        ),
        "call (in start order)",
        "max gap (ms)",
        n,
        gmax,
        0.0,
    );
    let px = |i: usize| ML + (i as f64 + 0.5) / n * (W - MR - ML);
    let py = |v: f64, top: f64, max: f64| top + PH - (v / max).min(1.0) * PH;
    for (i, (d, u)) in gaps.iter().enumerate() {
        if let Some(v) = d {
            let _ = write!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="2" fill="#1f77b4"/>"##,
                px(i),
                py(*v, top1, gmax)
            );
        }
        if let Some(v) = u {
            let _ = write!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="2" fill="#ff7f0e"/>"##,
                px(i),
                py(*v, top1, gmax)
            );
        }
    }
    for (k, c) in r.calls.iter().enumerate() {
        if c.outcome == crate::report::Outcome::Lost {
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="{top1}" x2="{x:.1}" y2="{}" stroke="red" stroke-opacity="0.3"/>"##,
                top1 + PH,
                x = px(k)
            );
        }
    }
    // Panel 2: aggregate rate, 100 ms bins.
    let top2 = top1 + PH + 90.0;
    let bin = 10usize; // 10 × 10 ms
    let rate = |v: &[u32]| -> Vec<f64> {
        v.chunks(bin)
            .map(|c| c.iter().map(|&x| f64::from(x)).sum::<f64>() * (1000.0 / (bin as f64 * 10.0)))
            .collect()
    };
    let down = rate(&r.series.down_rx);
    let up = r.series.up_rx.as_deref().map(rate);
    let total_bins = down.len().max(1);
    // Window: whole run, or marker −20 s … +40 s for long runs.
    let (b0, b1) = match r.marker_ms {
        Some(m) if total_bins > 600 => {
            let mb = (m / 100.0) as usize;
            (mb.saturating_sub(200), (mb + 400).min(total_bins))
        }
        _ => (0, total_bins),
    };
    let span = (b1 - b0).max(1) as f64;
    let rmax = nice_max(
        down.get(b0..b1.min(down.len()))
            .unwrap_or(&[])
            .iter()
            .chain(
                up.iter()
                    .flat_map(|u| u.get(b0..b1.min(u.len())).unwrap_or(&[])),
            )
            .copied()
            .fold(0.0, f64::max),
    );
    axes(
        &mut s,
        top2,
        "Received media rate (packets/s, 100 ms bins)",
        "time since start (s)",
        "packets/s",
        span / 10.0,
        rmax,
        b0 as f64 / 10.0,
    );
    let tx = |b: usize| ML + ((b - b0) as f64 + 0.5) / span * (W - MR - ML);
    for (series, color) in [(Some(&down), "#1f77b4"), (up.as_ref(), "#ff7f0e")] {
        let Some(v) = series else { continue };
        let mut pts = String::new();
        for (b, &val) in v.iter().enumerate().take(b1).skip(b0) {
            let _ = write!(pts, "{:.1},{:.1} ", tx(b), py(val, top2, rmax));
        }
        let _ = write!(
            s,
            r##"<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.2"/>"##
        );
    }
    if let Some(m) = r.marker_ms {
        let mb = (m / 100.0) as usize;
        if (b0..b1).contains(&mb) {
            let x = tx(mb);
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="{top2}" x2="{x:.1}" y2="{}" stroke="red" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" font-size="11" fill="red">marker</text>"##,
                top2 + PH,
                x + 3.0,
                top2 + 12.0
            );
        }
    }
    let ly = h - 20.0;
    let _ = write!(
        s,
        r##"<circle cx="{ML}" cy="{ly}" r="4" fill="#1f77b4"/><text x="{}" y="{}" font-size="12">UAS → UAC (down, measured at the UAC)</text><circle cx="{}" cy="{ly}" r="4" fill="#ff7f0e"/><text x="{}" y="{}" font-size="12">UAC → UAS (up, measured at the UAS)</text>"##,
        ML + 10.0,
        ly + 4.0,
        ML + 330.0,
        ML + 340.0,
        ly + 4.0
    );
    s.push_str("</svg>\n");
    s
}
