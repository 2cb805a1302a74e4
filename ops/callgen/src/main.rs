//! # bgf-callgen — SIP + RTP call generator that measures every call
//!
//! Owns the tool operators and the end-to-end tests use to put calls through
//! a BGF and measure them: a **UAC** (access side; optionally REGISTERs; places
//! calls) and a **UAS** (core side; answers them), each a small UDP SIP user
//! agent that streams RTP both ways and records, per call and direction,
//! arrivals in constant memory (loss, reordering, the longest gap). A
//! **marker** (a time, or SIGUSR1) splits a run: every call up at the marker
//! must afterwards pass an in-dialog check (re-INVITE moving the UE's media to
//! a new port, media on that port, BYE answered) or it is reported **lost**.
//! The two roles coordinate over a Unix socket (across network namespaces) or
//! TCP; the UAC writes the report (table, JSON, SVG) and sets the exit status.
//!
//! Not here: the BGF itself, failover orchestration (`bgfctl drill` drives
//! this tool), SIP over TCP/TLS, 100rel, authentication, DNS.
//!
//! Exit status: 0 all calls healthy and no threshold exceeded; 1 some call
//! lost or a threshold exceeded; 2 the run could not be done (usage, bind,
//! REGISTER refused, …).

mod ctl;
mod engine;
mod fastio;
mod plot;
mod report;
mod rtp;
mod sdp;
mod sip;
mod uac;
mod uas;

use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "bgf-callgen",
    version,
    about = "SIP + RTP call generator measuring media gaps and call health across a failover"
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Access side: place calls (through the BGF) and write the report.
    Uac(Box<UacArgs>),
    /// Core side: answer calls and report what arrived to the UAC.
    Uas(UasArgs),
}

#[derive(Args, Clone)]
struct MediaArgs {
    /// Media address for SDP and RTP sockets (default: the --local IP).
    #[arg(long)]
    media_ip: Option<IpAddr>,
    /// RTP port range (even ports for RTP, +1 for RTCP).
    #[arg(long, default_value = "16384-32767")]
    rtp_ports: String,
    /// RTP payload type.
    #[arg(long, default_value_t = 8)]
    pt: u8,
    /// Encoding name in a=rtpmap.
    #[arg(long, default_value = "PCMA")]
    codec: String,
    /// RTP clock rate (Hz).
    #[arg(long, default_value_t = 8000)]
    clock_rate: u32,
    /// Payload bytes per packet.
    #[arg(long, default_value_t = 160)]
    payload: usize,
    /// Packet time (ms).
    #[arg(long, default_value_t = 20)]
    ptime: u32,
    /// Also send RTCP sender reports (every 5 s) and count received RTCP.
    #[arg(long)]
    rtcp: bool,
    /// Gaps at least this long are listed per call (default 3 × ptime).
    #[arg(long)]
    gap_threshold_ms: Option<f64>,
    /// Print a progress line every second (stderr).
    #[arg(long)]
    progress: bool,
    /// Write this side's report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Media I/O: `ring` = batched raw-socket sends + one packet receive
    /// ring (needs CAP_NET_RAW, ~3x cheaper per packet), `socket` = one
    /// syscall per packet on each call's socket, `auto` = ring if allowed.
    #[arg(long, value_enum, default_value = "auto")]
    io: engine::IoMode,
}

#[derive(Args)]
struct UacArgs {
    /// Local SIP address (IPv4 or IPv6, with port).
    #[arg(long)]
    local: SocketAddr,
    /// Target proxy (the BGF's access SIP address) or the UAS itself.
    #[arg(long)]
    proxy: SocketAddr,
    #[command(flatten)]
    media: MediaArgs,
    /// New calls per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Most concurrent calls.
    #[arg(long, default_value_t = 100)]
    concurrent: usize,
    /// Hold time of each call (ms).
    #[arg(long, default_value_t = 10_000)]
    hold_ms: u64,
    /// Calls to place (default: 10 unless --duration-s is given).
    #[arg(long)]
    calls: Option<u64>,
    /// Stop placing calls after this many seconds.
    #[arg(long)]
    duration_s: Option<f64>,
    /// REGISTER (user@domain, Contact = --local) before placing calls.
    #[arg(long)]
    register: bool,
    /// Our user name.
    #[arg(long, default_value = "callgen")]
    user: String,
    /// The called user.
    #[arg(long, default_value = "uas")]
    to_user: String,
    /// Domain of the URIs (default: the proxy address).
    #[arg(long)]
    domain: Option<String>,
    /// The marker, this many seconds after the start (SIGUSR1 also sets it).
    #[arg(long)]
    marker_at_s: Option<f64>,
    /// Calls up at the marker run their check at their normal hang-up time,
    /// but not before marker + this (ms).
    #[arg(long, default_value_t = 0)]
    check_after_ms: u64,
    /// How long to wait for media on the new port after the re-INVITE (ms).
    #[arg(long, default_value_t = 2000)]
    check_media_ms: u64,
    /// Packets that must arrive on the new port.
    #[arg(long, default_value_t = 5)]
    check_packets: u64,
    /// Client transaction timeout (INVITE, re-INVITE, BYE, REGISTER), ms.
    #[arg(long, default_value_t = 8000)]
    sip_timeout_ms: u64,
    /// The UAS's control endpoint (unix:/path or tcp:ip:port).
    #[arg(long)]
    ctl_connect: Option<String>,
    /// Write the SVG plot here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Exit 1 if any call's longest gap (either direction) exceeds this (ms).
    #[arg(long)]
    max_gap_ms: Option<f64>,
    /// Exit 1 if any setup takes longer (ms).
    #[arg(long)]
    max_setup_ms: Option<f64>,
    /// Exit 1 if more calls fail.
    #[arg(long)]
    max_failed: Option<u64>,
    /// Exit 1 if any call loses more packets in a direction.
    #[arg(long)]
    max_loss: Option<u64>,
    /// Print the summary as JSON on stdout instead of the table.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct UasArgs {
    /// Local SIP address (IPv4 or IPv6, with port).
    #[arg(long)]
    local: SocketAddr,
    #[command(flatten)]
    media: MediaArgs,
    /// Listen for the UAC's control connection (unix:/path or tcp:ip:port).
    #[arg(long)]
    ctl_listen: Option<String>,
    /// Exit after this many seconds in any case.
    #[arg(long, default_value_t = 3600.0)]
    max_run_s: f64,
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("--rtp-ports {s:?}: expected LOW-HIGH"))?;
    let a: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("--rtp-ports {s:?}: bad low port"))?;
    let b: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("--rtp-ports {s:?}: bad high port"))?;
    if a == 0 || b <= a {
        return Err(format!("--rtp-ports {s:?}: need 0 < LOW < HIGH"));
    }
    Ok((a, b))
}

fn codec(m: &MediaArgs) -> Result<sdp::Codec, String> {
    if m.ptime == 0 || m.ptime > 1000 {
        return Err(format!("--ptime {}: must be 1..=1000 ms", m.ptime));
    }
    if m.payload > 1400 {
        return Err(format!("--payload {}: at most 1400 bytes", m.payload));
    }
    if m.pt > 127 {
        return Err(format!("--pt {}: must be 0..=127", m.pt));
    }
    if m.clock_rate < 1000 {
        return Err(format!("--clock-rate {}: at least 1000", m.clock_rate));
    }
    Ok(sdp::Codec {
        pt: m.pt,
        name: m.codec.clone(),
        clock: m.clock_rate,
        payload: m.payload,
        ptime_ms: m.ptime,
    })
}

fn gap_threshold_ns(m: &MediaArgs) -> u64 {
    let ms = m.gap_threshold_ms.unwrap_or(3.0 * f64::from(m.ptime));
    (ms.max(0.0) * 1e6) as u64
}

fn write_file(path: &PathBuf, data: &[u8]) -> Result<(), String> {
    std::fs::write(path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn run_uac(a: UacArgs) -> Result<i32, String> {
    let codec = codec(&a.media)?;
    if !(a.rate > 0.0 && a.rate <= 10_000.0) {
        return Err(format!("--rate {}: must be in (0, 10000]", a.rate));
    }
    if a.concurrent == 0 {
        return Err("--concurrent must be at least 1".into());
    }
    let ctl = a.ctl_connect.as_deref().map(str::parse).transpose()?;
    let calls = match (a.calls, a.duration_s) {
        (None, None) => Some(10),
        (c, _) => c,
    };
    let o = uac::UacOpts {
        local: a.local,
        proxy: a.proxy,
        media_ip: a.media.media_ip.unwrap_or(a.local.ip()),
        ports: parse_range(&a.media.rtp_ports)?,
        codec,
        rtcp: a.media.rtcp,
        gap_threshold_ns: gap_threshold_ns(&a.media),
        io: a.media.io,
        rate: a.rate,
        concurrent: a.concurrent,
        hold_ms: a.hold_ms,
        calls,
        duration_s: a.duration_s,
        register: a.register,
        user: a.user,
        to_user: a.to_user,
        domain: a.domain.unwrap_or_else(|| a.proxy.to_string()),
        marker_at_s: a.marker_at_s,
        check_after_ms: a.check_after_ms,
        check_media_ms: a.check_media_ms,
        check_packets: a.check_packets,
        sip_timeout_ms: a.sip_timeout_ms.max(100),
        ctl,
        progress: a.media.progress,
        thresholds: report::Thresholds {
            max_gap_ms: a.max_gap_ms,
            max_setup_ms: a.max_setup_ms,
            max_failed: a.max_failed,
            max_loss: a.max_loss,
        },
    };
    let r = uac::run(&o)?;
    if let Some(p) = &a.media.json {
        let j = serde_json::to_vec_pretty(&r).map_err(|e| e.to_string())?;
        write_file(p, &j)?;
    }
    if let Some(p) = &a.svg {
        write_file(p, plot::svg(&r).as_bytes())?;
    }
    if a.quiet {
        println!(
            "{}",
            serde_json::to_string(&r.summary).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report::table(&r));
    }
    Ok(if r.summary.lost > 0 || !r.violations.is_empty() {
        1
    } else {
        0
    })
}

fn run_uas(a: UasArgs) -> Result<i32, String> {
    let codec = codec(&a.media)?;
    let ctl = a.ctl_listen.as_deref().map(str::parse).transpose()?;
    let o = uas::UasOpts {
        local: a.local,
        media_ip: a.media.media_ip.unwrap_or(a.local.ip()),
        ports: parse_range(&a.media.rtp_ports)?,
        codec,
        rtcp: a.media.rtcp,
        gap_threshold_ns: gap_threshold_ns(&a.media),
        io: a.media.io,
        ctl,
        max_run_s: a.max_run_s,
        progress: a.media.progress,
    };
    let r = uas::run(&o)?;
    if let Some(p) = &a.media.json {
        let j = serde_json::to_vec_pretty(&r).map_err(|e| e.to_string())?;
        write_file(p, &j)?;
    }
    let t = &r.totals;
    eprintln!(
        "bgf-callgen uas: {} calls, rtp tx {} rx {}, cpu {:.2} s ({:.0} µs/call, {:.2} µs/packet)",
        r.calls.len(),
        t.media.tx_packets,
        t.media.rx_packets,
        t.cpu.total_s(),
        t.cpu_us_per_call,
        t.cpu_us_per_packet
    );
    Ok(0)
}

fn main() {
    let cli = Cli::parse();
    engine::install_process_setup();
    let r = match cli.role {
        Role::Uac(a) => run_uac(*a),
        Role::Uas(a) => run_uas(a),
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("bgf-callgen: error: {e}");
            std::process::exit(2);
        }
    }
}
