//! Glue between the core loop and `media_plane::MediaPlane`: starting the
//! kernel, XDP (falling back to kernel sockets when it cannot attach) or
//! DPDK backend from the validated settings, the `[media.dpdk]` section,
//! and the [`MediaOps`] adapter. Admission (capacity) is `admission.rs`,
//! `[media.xdp]` is `media_xdp.rs`.

use crate::config::MediaSettings;
use crate::runtime::MediaOps;
use media_plane::dpdk::{DpdkPort, DpdkSettings};
use media_plane::{MediaConfig, MediaEvent, MediaPlane, PinholeId, PinholeOp, Side};
use serde::Deserialize;
use std::net::IpAddr;

/// `[media.dpdk]` as written (see docs/DPDK.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkSection {
    pub eal_args: Option<Vec<String>>,
    pub burst: Option<u16>,
    pub mbufs: Option<u32>,
    pub descriptors: Option<u16>,
    pub checksum_offload: Option<bool>,
    pub idle_sleep_us: Option<u32>,
    pub access: Option<DpdkPortSection>,
    pub core: Option<DpdkPortSection>,
}

/// `[media.dpdk.access]` / `[media.dpdk.core]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkPortSection {
    pub device: Option<String>,
    pub gateway: Option<String>,
}

/// The DPDK backend's validated settings: the ports and the plane's media
/// addresses (the data plane owns them; SIP stays on kernel interfaces).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpdkMedia {
    pub settings: DpdkSettings,
    pub addrs: Vec<(Side, IpAddr)>,
}

/// Check `[media.dpdk]` for `backend = "dpdk"`; `media`/`sip` are each
/// side's media and SIP addresses.
pub fn dpdk_settings(
    sec: Option<&DpdkSection>,
    media: [(Side, IpAddr); 2],
    sip: [IpAddr; 2],
    errs: &mut Vec<String>,
) -> Option<DpdkMedia> {
    let Some(sec) = sec else {
        errs.push("media.backend = \"dpdk\" needs a [media.dpdk] section (eal_args, access.device, core.device) — see docs/DPDK.md".into());
        return None;
    };
    let d = DpdkSettings::default();
    let mut port = |name: &str, p: &Option<DpdkPortSection>| DpdkPort {
        device: p
            .as_ref()
            .and_then(|p| p.device.clone())
            .unwrap_or_default(),
        gateway: p.as_ref().and_then(|p| p.gateway.as_ref()).and_then(|g| {
            g.trim()
                .parse()
                .map_err(|_| {
                    errs.push(format!(
                        "media.dpdk.{name}.gateway: \"{g}\" is not an IP address"
                    ))
                })
                .ok()
        }),
    };
    let settings = DpdkSettings {
        eal_args: sec.eal_args.clone().unwrap_or_default(),
        access: port("access", &sec.access),
        core: port("core", &sec.core),
        burst: sec.burst.unwrap_or(d.burst),
        mbufs: sec.mbufs.unwrap_or(d.mbufs),
        descriptors: sec.descriptors.unwrap_or(d.descriptors),
        checksum_offload: sec.checksum_offload.unwrap_or(d.checksum_offload),
        idle_sleep_us: sec.idle_sleep_us.unwrap_or(d.idle_sleep_us),
    };
    let problems = settings.problems();
    let ok = problems.is_empty();
    errs.extend(problems);
    let mut bad = false;
    for ((side, m), s) in media.iter().zip(sip.iter()) {
        if m == s {
            errs.push(format!("{side}.media_ip: {m} is also the {side} SIP address — with media.backend = \"dpdk\" the DPDK port owns the media address and SIP stays on a kernel interface, so they must differ (see docs/DPDK.md)"));
            bad = true;
        }
        if m.is_unspecified() {
            bad = true;
        }
    }
    (ok && !bad).then(|| DpdkMedia {
        settings,
        addrs: if media[0].1 == media[1].1 {
            vec![media[0]]
        } else {
            media.to_vec()
        },
    })
}

/// Start a media plane for `settings`: the kernel backend, the XDP one
/// (kernel sockets if XDP cannot start), or the DPDK one (built with the
/// `dpdk` feature). `answer`: an XDP or DPDK plane relays (DPDK: answers
/// ARP/ND) for its addresses at once (an active) or only after `announce`
/// (a standby's idle plane).
pub fn start_plane(
    settings: &MediaSettings,
    keep_released: usize,
    answer: bool,
    sink: impl Fn(MediaEvent) + Send + Sync + 'static,
) -> Result<MediaPlane, String> {
    let cfg = MediaConfig {
        workers: settings.workers,
        inactivity_timeout: settings.inactivity_timeout,
        keep_released,
        ..MediaConfig::default()
    };
    match (settings.backend, &settings.dpdk) {
        ("kernel", _) => MediaPlane::start_kernel(cfg, Box::new(sink))
            .map_err(|e| format!("cannot start the media plane: {e}")),
        ("xdp", _) => start_xdp_or_kernel(settings, cfg, answer, sink),
        #[cfg(feature = "dpdk")]
        ("dpdk", Some(d)) => {
            MediaPlane::start_dpdk(cfg, &d.settings, d.addrs.clone(), answer, Box::new(sink))
                .map_err(|e| format!("cannot start the DPDK media plane: {e}"))
        }
        (other, _) => {
            let _ = answer;
            Err(format!(
                "media.backend \"{other}\" is not built in this version — rebuild with --features dpdk or use \"kernel\""
            ))
        }
    }
}

/// The XDP plane of `settings`, or — when XDP cannot start here (program
/// not built in, kernel or driver refuses, another program attached) — the
/// kernel-socket backend, with an ERROR line saying so: the calls still get
/// media, at the kernel backend's cost and descriptor limit.
fn start_xdp_or_kernel(
    settings: &MediaSettings,
    cfg: MediaConfig,
    serve: bool,
    sink: impl Fn(MediaEvent) + Send + Sync + 'static,
) -> Result<MediaPlane, String> {
    let sink = std::sync::Arc::new(sink);
    let why = match &settings.xdp {
        Some(x) => {
            let s = sink.clone();
            match crate::media_xdp::start(cfg.clone(), x, serve, move |e| s(e)) {
                Ok(p) => {
                    tracing::info!(attached = ?p.xdp_attached().iter().map(|a| format!("{} {}", a.name, a.mode)).collect::<Vec<_>>(),
                        "media plane: XDP fast path");
                    return Ok(p);
                }
                Err(e) => e,
            }
        }
        None => "no [media.xdp] settings".to_string(),
    };
    tracing::error!(error = %why, "media.backend = \"xdp\" cannot start here: FALLING BACK to the kernel-socket backend (one descriptor per media port, ~5 µs CPU per packet) — fix the cause and restart to get the XDP fast path");
    MediaPlane::start_kernel(cfg, Box::new(move |e| sink(e))).map_err(|e| {
        format!("cannot start the media plane (kernel fallback after XDP failed: {why}): {e}")
    })
}

/// After a takeover: a DPDK plane takes its media addresses and sends the
/// gratuitous ARP / unsolicited NA burst from the data plane on
/// `schedule` (the kernel backend announces nothing here: the standby's
/// raw sockets do).
pub fn announce(instance: &str, plane: &MediaPlane, schedule: &[std::time::Duration]) {
    match plane.announce(schedule) {
        Ok(a) if a.is_empty() => {}
        Ok(a) => tracing::info!(%instance, addresses = ?a, repeats = schedule.len(),
            "media addresses announced from the DPDK data plane"),
        Err(e) => tracing::error!(%instance, error = %e,
            "media addresses NOT announced from the DPDK data plane — peers keep sending media to the failed active's MAC until their ARP/ND entries expire"),
    }
}

/// The addresses a plane's data plane owns (DPDK: the media addresses —
/// a standby must not add them to a kernel interface, the plane announces
/// them); empty for the kernel backend.
pub fn data_plane_ips(settings: &MediaSettings) -> Vec<IpAddr> {
    match &settings.dpdk {
        Some(d) if settings.backend == "dpdk" => d.addrs.iter().map(|(_, a)| *a).collect(),
        _ => Vec::new(),
    }
}

/// Most released media sockets kept bound for reuse (one fd and one idle
/// kernel socket each).
const MAX_KEPT_SOCKETS: usize = 32_768;

/// How many released media sockets to keep bound: every port of both pools
/// (the pools hand ports out round-robin, so a port comes back only after a
/// full turn), up to [`MAX_KEPT_SOCKETS`].
pub fn kept_sockets(core: &sip_control::CoreConfig) -> usize {
    let ports = |s: &sip_control::SideConfig| {
        usize::from(s.rtp_port_max.saturating_sub(s.rtp_port_min)) + 1
    };
    (ports(&core.access) + ports(&core.core)).min(MAX_KEPT_SOCKETS)
}

/// Start the packet path; its events go to `sink` (which must never block).
/// Up to `keep_released` released sockets stay bound for later calls on the
/// same ports (no bind/epoll/close per call for those).
pub fn start(
    settings: &MediaSettings,
    keep_released: usize,
    sink: impl Fn(MediaEvent) + Send + Sync + 'static,
) -> Result<Box<dyn MediaOps>, String> {
    start_plane(settings, keep_released, true, sink).map(|p| Box::new(p) as Box<dyn MediaOps>)
}

/// The `media` object of `/v1/stats`: the totals, the backend actually
/// running (after any fallback) and, for XDP, how it is attached, what it
/// sent up to user space (and lost: ring full) and the room left in its
/// maps.
pub fn counters_json(plane: &MediaPlane) -> serde_json::Value {
    let mut v = serde_json::to_value(plane.counters()).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("backend".into(), plane.backend_name().into());
        if let Some(t) = plane.xdp_totals() {
            let attached: Vec<serde_json::Value> = plane
                .xdp_attached()
                .iter()
                .map(|a| serde_json::json!({"interface": a.name, "mode": a.mode}))
                .collect();
            o.insert(
                "xdp".into(),
                serde_json::json!({
                    "attached": attached,
                    "kernel_forwarded": t.fwd_pkts,
                    "upcalls": t.upcalls,
                    "upcalls_lost": t.upcalls_lost,
                    "pinholes_free": plane.xdp_free_pinholes().unwrap_or(0),
                }),
            );
        }
    }
    v
}

impl MediaOps for MediaPlane {
    fn apply(&self, op: &PinholeOp) -> Result<(), String> {
        MediaPlane::apply(self, op).map_err(|e| e.to_string())
    }

    fn counters(&self) -> serde_json::Value {
        counters_json(self)
    }

    fn pinhole_counters(&self, id: PinholeId) -> Option<serde_json::Value> {
        MediaPlane::pinhole_counters(self, id).and_then(|c| serde_json::to_value(c).ok())
    }

    fn pinhole_count(&self) -> usize {
        MediaPlane::pinhole_count(self)
    }

    fn refuses_session(&self) -> Option<crate::admission::Full> {
        crate::admission::check(self)
    }

    fn shutdown(self: Box<Self>) {
        MediaPlane::shutdown(*self)
    }
}

#[cfg(test)]
mod tests {
    use super::{dpdk_settings, DpdkSection};
    use media_plane::Side;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const SECTION: &str = r#"
eal_args = ["-l", "1", "--no-huge", "-m", "256"]
idle_sleep_us = 20
[access]
device = "net_af_packet0,iface=dacc"
[core]
device = "0000:00:05.0"
gateway = "198.18.1.1"
"#;

    #[test]
    fn dpdk_section_maps_to_settings_and_owned_addresses() {
        let sec: DpdkSection = toml::from_str(SECTION).unwrap();
        let mut errs = Vec::new();
        let d = dpdk_settings(
            Some(&sec),
            [
                (Side::Access, ip("fd00:a::41")),
                (Side::Core, ip("198.18.1.41")),
            ],
            [ip("fd00:a::11"), ip("198.18.1.11")],
            &mut errs,
        )
        .unwrap();
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(d.settings.core.gateway, Some(ip("198.18.1.1")));
        assert_eq!(d.settings.idle_sleep_us, 20);
        assert_eq!(d.settings.burst, 32, "default");
        assert_eq!(
            d.settings.eal_argv().last().map(String::as_str),
            Some("0000:00:05.0")
        );
        assert_eq!(d.addrs.len(), 2);
    }

    #[test]
    fn dpdk_section_errors_name_the_key() {
        let mut errs = Vec::new();
        let media = [
            (Side::Access, ip("198.18.0.11")),
            (Side::Core, ip("198.18.1.41")),
        ];
        let sip = [ip("198.18.0.11"), ip("198.18.1.11")];
        assert!(dpdk_settings(None, media, sip, &mut errs).is_none());
        assert!(errs[0].contains("[media.dpdk]"), "{errs:?}");
        errs.clear();
        let sec: DpdkSection =
            toml::from_str("burst = 0\n[access]\ndevice = \"net_tap0\"\ngateway = \"router\"\n")
                .unwrap();
        assert!(dpdk_settings(Some(&sec), media, sip, &mut errs).is_none());
        let all = errs.join("\n");
        for k in [
            "media.dpdk.access.gateway",
            "media.dpdk.core.device",
            "media.dpdk.burst",
            "access.media_ip: 198.18.0.11 is also the access SIP address",
        ] {
            assert!(all.contains(k), "{k} not in {all}");
        }
        assert!(toml::from_str::<DpdkSection>("lcores = 3\n").is_err());
    }
}
