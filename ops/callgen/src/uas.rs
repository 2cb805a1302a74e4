//! The UAS role (core side): answers every INVITE at once with a 200 carrying
//! its own SDP, retransmits the 200 until the ACK (T1 doubling to T2), answers
//! re-INVITEs (redirecting its media to the new offer), BYE, REGISTER,
//! OPTIONS; streams RTP to the offer's address from the port of its answer and
//! records what arrives. At `finish` (from the UAC) or SIGTERM it closes every
//! call and hands its report over.

use crate::ctl::{CtlMsg, CtlServer, Endpoint};
use crate::engine::{timeout_ms, Clock, Cpu, Media, PortAlloc, STOP_SIGNAL};
use crate::report::{SideReport, SideTotals, SipTotals, UasCall};
use crate::rtp::ns_ms;
use crate::sdp::{self, Codec};
use crate::sip::{self, SipSock, T1_NS, T2_NS};
use sip_control::msg::{make_response, Message, Method, StartLine, Via};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

/// UAS options.
#[derive(Clone, Debug, serde::Serialize)]
pub struct UasOpts {
    /// SIP address to listen on.
    pub local: SocketAddr,
    /// Media address (default: the SIP address's IP).
    pub media_ip: IpAddr,
    /// RTP port range.
    pub ports: (u16, u16),
    /// Codec.
    #[serde(skip)]
    pub codec: Codec,
    /// RTCP on.
    pub rtcp: bool,
    /// Gap threshold (ns).
    pub gap_threshold_ns: u64,
    /// Media I/O path.
    pub io: crate::engine::IoMode,
    /// Control endpoint to listen on.
    #[serde(skip)]
    pub ctl: Option<Endpoint>,
    /// Exit after this long in any case (s).
    pub max_run_s: f64,
    /// Print progress every second.
    pub progress: bool,
}

struct Pending {
    bytes: Vec<u8>,
    dest: SocketAddr,
    cseq: u32,
    next: u64,
    interval: u64,
    deadline: u64,
}

struct Call {
    call_id: String,
    to_tag: String,
    start_ns: u64,
    end_ns: Option<u64>,
    bye: bool,
    reinvites: u32,
    local_media: SocketAddr,
    sdp_version: u32,
    last_invite_cseq: u32,
    last_invite_resp: Vec<u8>,
    pending: Option<Pending>,
}

/// Runs the UAS until told to finish; returns its report.
pub fn run(o: &UasOpts) -> Result<SideReport, String> {
    let clock = Clock::start();
    let mut sip = SipSock::bind(o.local).map_err(|e| {
        format!(
            "cannot bind SIP {}: {e} (is another UAS running there?)",
            o.local
        )
    })?;
    let ctl = match &o.ctl {
        Some(ep) => Some(
            CtlServer::listen(ep).map_err(|e| format!("cannot listen on control {ep:?}: {e}"))?,
        ),
        None => None,
    };
    let mut media = Media::new(
        o.codec.clone(),
        PortAlloc::new(o.media_ip, o.ports.0, o.ports.1),
        o.gap_threshold_ns,
        o.rtcp,
        o.io,
    )
    .map_err(|e| format!("media: {e}"))?;
    {
        use std::os::fd::AsRawFd;
        media
            .epoll
            .add(sip.sock.as_raw_fd(), crate::engine::SIP_TOKEN)
            .map_err(|e| format!("epoll: {e}"))?;
    }
    let mut calls: Vec<Call> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut marker_ns: Option<u64> = None;
    let mut seed = (clock.t0_unix_ms as u64) ^ u64::from(std::process::id()) << 20;
    let max_run_ns = (o.max_run_s * 1e9) as u64;
    let mut next_scan = 0u64;
    let mut next_progress = 1_000_000_000u64;
    let mut last_tot = (0u64, 0u64);
    let mut finish_requested = false;
    let mut sip_readable = true;
    if o.progress {
        eprintln!(
            "bgf-callgen uas: SIP on {}, media on {}",
            sip.local, o.media_ip
        );
    }
    loop {
        let now = clock.now_ns();
        let more_due = media.send_due(now);
        if sip_readable {
            while let Some((m, from)) = sip.recv() {
                let now = clock.now_ns();
                handle(
                    &mut sip, &mut media, &mut calls, &mut by_id, &mut seed, &m, from, now, o,
                );
            }
        }
        if now >= next_scan {
            next_scan = now + 10_000_000;
            for c in calls.iter_mut() {
                if let Some(p) = c.pending.as_mut() {
                    if now >= p.deadline {
                        sip::tracing_like(&format!(
                            "no ACK for the 200 of {}: giving up",
                            c.call_id
                        ));
                        c.pending = None;
                    } else if now >= p.next {
                        sip.send(&p.bytes, p.dest);
                        sip.retransmissions += 1;
                        p.interval = (p.interval * 2).min(T2_NS);
                        p.next = now + p.interval;
                    }
                }
            }
            media.send_rtcp_due(now, &clock);
            if let Some(c) = &ctl {
                while let Ok(m) = c.rx.try_recv() {
                    match m {
                        CtlMsg::Marker { unix_ms } => {
                            let t = clock.unix_ms_to_ns(unix_ms);
                            marker_ns = Some(t);
                            if o.progress {
                                eprintln!("bgf-callgen uas: marker at {:.3} s", ns_ms(t) / 1000.0);
                            }
                        }
                        CtlMsg::Finish => finish_requested = true,
                        _ => {}
                    }
                }
            }
            if crate::engine::MARKER_SIGNAL.swap(false, Ordering::SeqCst) {
                marker_ns = Some(now);
            }
            if o.progress && now >= next_progress {
                next_progress += 1_000_000_000;
                media.refresh_totals();
                let t = &media.totals;
                let up = calls.iter().filter(|c| c.end_ns.is_none()).count();
                eprintln!(
                    "[{:6.1}s] uas calls up {up} total {} | tx {} pps rx {} pps | worst current silence {:.0} ms",
                    now as f64 / 1e9,
                    calls.len(),
                    t.tx_packets - last_tot.0,
                    t.rx_packets - last_tot.1,
                    media.worst_current_gap_ms(now)
                );
                last_tot = (t.tx_packets, t.rx_packets);
            }
        }
        if finish_requested || STOP_SIGNAL.load(Ordering::SeqCst) || now >= max_run_ns {
            break;
        }
        let deadline = [media.next_due(), Some(next_scan)]
            .into_iter()
            .flatten()
            .min();
        let t = if more_due {
            0
        } else {
            timeout_ms(clock.now_ns(), deadline, 50)
        };
        sip_readable = media.poll(t, &clock);
    }
    let now = clock.now_ns();
    let mut out = Vec::with_capacity(calls.len());
    for (i, c) in calls.iter_mut().enumerate() {
        if c.end_ns.is_none() {
            media.close(i, now);
        }
        let rx = media
            .stream(i)
            .map(|s| s.rx.report())
            .unwrap_or_else(|| crate::rtp::RxStats::default().report());
        let tx = media.stream(i).map_or(0, |s| s.tx);
        out.push(UasCall {
            call_id: c.call_id.clone(),
            start_ms: ns_ms(c.start_ns),
            end_ms: c.end_ns.map(ns_ms),
            bye_received: c.bye,
            reinvites: c.reinvites,
            tx,
            rx,
        });
    }
    media.rx_series.trim(now);
    media.refresh_totals();
    let totals = SideTotals::new(
        media.totals.clone(),
        SipTotals {
            sent: sip.sent,
            retransmissions: sip.retransmissions,
            unparsable: sip.unparsable,
        },
        Cpu::now(&clock),
        calls.len() as u64,
    );
    let report = SideReport {
        role: "uas".into(),
        t0_unix_ms: clock.t0_unix_ms,
        marker_ms: marker_ns.map(ns_ms),
        calls: out,
        rx_series: std::mem::take(&mut media.rx_series.counts),
        totals,
    };
    if let Some(c) = &ctl {
        if finish_requested && !c.send(&CtlMsg::Report(Box::new(report.clone()))) {
            sip::tracing_like("could not send the report to the UAC (connection gone)");
        }
    }
    Ok(report)
}

fn respond_to(req: &Message, from: SocketAddr) -> SocketAddr {
    req.top_via()
        .and_then(|v| Via::parse(v).ok())
        .and_then(|v| v.response_target())
        .unwrap_or(from)
}

#[allow(clippy::too_many_arguments)]
fn handle(
    sip: &mut SipSock,
    media: &mut Media,
    calls: &mut Vec<Call>,
    by_id: &mut HashMap<String, usize>,
    seed: &mut u64,
    m: &Message,
    from: SocketAddr,
    now: u64,
    o: &UasOpts,
) {
    let StartLine::Request { method, .. } = &m.start else {
        return; // the UAS sends no requests: stray responses are ignored
    };
    let dest = respond_to(m, from);
    let contact = format!("<sip:uas@{}>", sip.local);
    let simple = |sip: &mut SipSock, code: u16, reason: &str| {
        let r = make_response(m, code, reason, None);
        sip.send(&r.to_bytes(), dest);
    };
    let cseq = m.cseq().map(|c| c.0).unwrap_or(0);
    let known = by_id.get(m.call_id()).copied();
    match method {
        Method::Invite => {
            if let Some(i) = known {
                let c = &mut calls[i];
                if cseq == c.last_invite_cseq {
                    // Retransmission: the same answer again.
                    sip.send(&c.last_invite_resp, dest);
                    return;
                }
                if m.to_tag().as_deref() != Some(c.to_tag.as_str()) || c.end_ns.is_some() {
                    simple(sip, 481, "Call/Transaction Does Not Exist");
                    return;
                }
                // re-INVITE: follow the new offer.
                let offer = m.sdp().map(sdp::parse);
                let mut r = make_response(m, 200, "OK", Some(&c.to_tag));
                match offer {
                    Some(Ok(md)) => media.send_to(i, md.rtp, md.rtcp, now),
                    Some(Err(e)) => {
                        let mut r = make_response(m, 488, "Not Acceptable Here", Some(&c.to_tag));
                        r.set("Warning", format!("399 bgf-callgen \"{e}\""));
                        sip.send(&r.to_bytes(), dest);
                        return;
                    }
                    None => {}
                }
                c.reinvites += 1;
                c.sdp_version += 1;
                r.set("Contact", contact);
                r.set("Content-Type", "application/sdp".into());
                r.body = sdp::build(c.local_media, &o.codec, 1, c.sdp_version);
                let bytes = r.to_bytes();
                sip.send(&bytes, dest);
                c.last_invite_cseq = cseq;
                c.last_invite_resp = bytes.clone();
                c.pending = Some(Pending {
                    bytes,
                    dest,
                    cseq,
                    next: now + T1_NS,
                    interval: T1_NS,
                    deadline: now + 64 * T1_NS,
                });
                return;
            }
            if m.to_tag().is_some() {
                simple(sip, 481, "Call/Transaction Does Not Exist");
                return;
            }
            let offer = match m.sdp().map(sdp::parse) {
                Some(Ok(md)) => md,
                Some(Err(e)) => {
                    let mut r = make_response(m, 488, "Not Acceptable Here", None);
                    r.set("Warning", format!("399 bgf-callgen \"{e}\""));
                    sip.send(&r.to_bytes(), dest);
                    return;
                }
                None => {
                    simple(sip, 488, "Not Acceptable Here");
                    return;
                }
            };
            let i = calls.len();
            let local_media = match media.open(i) {
                Ok(a) => a,
                Err(e) => {
                    sip::tracing_like(&format!("{e}"));
                    simple(sip, 503, "Service Unavailable");
                    return;
                }
            };
            let to_tag = sip::token(seed);
            let mut r = make_response(m, 200, "OK", Some(&to_tag));
            r.set("Contact", contact);
            r.set("Content-Type", "application/sdp".into());
            r.body = sdp::build(local_media, &o.codec, now, 1);
            let bytes = r.to_bytes();
            sip.send(&bytes, dest);
            // Send at the caller's packet rate (a UAC with a long --ptime
            // keeps many calls up at a few packets per second).
            if let Some(p) = m.sdp().and_then(sdp::ptime) {
                media.set_ptime(i, p);
            }
            media.send_to(i, offer.rtp, offer.rtcp, now);
            by_id.insert(m.call_id().to_string(), i);
            calls.push(Call {
                call_id: m.call_id().to_string(),
                to_tag,
                start_ns: now,
                end_ns: None,
                bye: false,
                reinvites: 0,
                local_media,
                sdp_version: 1,
                last_invite_cseq: cseq,
                last_invite_resp: bytes.clone(),
                pending: Some(Pending {
                    bytes,
                    dest,
                    cseq,
                    next: now + T1_NS,
                    interval: T1_NS,
                    deadline: now + 64 * T1_NS,
                }),
            });
        }
        Method::Ack => {
            if let Some(i) = known {
                let c = &mut calls[i];
                if c.pending.as_ref().is_some_and(|p| p.cseq == cseq) {
                    c.pending = None;
                }
            }
        }
        Method::Bye => match known {
            Some(i) => {
                let c = &mut calls[i];
                if c.end_ns.is_none() {
                    media.close(i, now);
                    c.end_ns = Some(now);
                    c.bye = true;
                    c.pending = None;
                }
                let r = make_response(m, 200, "OK", Some(&c.to_tag));
                sip.send(&r.to_bytes(), dest);
            }
            None => simple(sip, 481, "Call/Transaction Does Not Exist"),
        },
        Method::Register => {
            let mut r = make_response(m, 200, "OK", Some(&sip::token(seed)));
            for c in m.headers_named("Contact") {
                r.headers.push(sip_control::msg::Header {
                    name: "Contact".into(),
                    value: c.to_string(),
                });
            }
            r.set("Expires", m.header("Expires").unwrap_or("3600").to_string());
            sip.send(&r.to_bytes(), dest);
        }
        Method::Cancel => {
            // Every INVITE is answered at once, so there is nothing to cancel.
            simple(sip, 481, "Call/Transaction Does Not Exist");
        }
        Method::Options | Method::Prack | Method::Update => simple(sip, 200, "OK"),
        _ => simple(sip, 501, "Not Implemented"),
    }
}
