//! Glue between the core loop and `media_plane::MediaPlane`: starting the
//! kernel or DPDK backend from the validated settings, the `[media.dpdk]`
//! section, and the [`MediaOps`] adapter.

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

/// Start a media plane for `settings`: the kernel backend, or the DPDK one
/// (built with the `dpdk` feature). `answer`: a DPDK plane answers ARP/ND
/// for its addresses at once (an active) or only after `announce` (a
/// standby's idle plane).
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

/// Sockets one pinhole may hold: RTP and RTCP on both sides.
const SOCKETS_PER_PINHOLE: u64 = 4;
/// Descriptors kept back for SIP sockets and TCP connections, the store
/// client, the admin API, epoll and eventfds: at least 1024, and room for
/// `limits.tcp_max_connections` plus 512 ([`reserve_for_tcp`]).
static FD_RESERVE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1024);

fn fd_reserve() -> u64 {
    FD_RESERVE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Keep descriptors back for `max_tcp` SIP TCP connections (called once at
/// start, before media admission counts): media capacity is what is left.
pub fn reserve_for_tcp(max_tcp: usize) {
    let want = (max_tcp as u64).saturating_add(512).max(1024);
    FD_RESERVE.store(want, std::sync::atomic::Ordering::Relaxed);
}
/// Streams a new session may bring (audio + video).
const STREAMS_PER_NEW_SESSION: u64 = 2;

/// The process's open-files soft limit (the media plane raised it as far
/// as allowed at start).
fn nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return u64::MAX;
    }
    r.rlim_cur
}

/// How many pinholes the process's descriptors hold (all planes together),
/// under the current open-files limit.
pub fn pinhole_capacity() -> usize {
    let cap = nofile_limit().saturating_sub(fd_reserve()) / SOCKETS_PER_PINHOLE;
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// Whether `plane` has descriptors left for one more session's sockets.
pub fn admits_session(plane: &MediaPlane) -> bool {
    admits(plane.pinhole_count(), nofile_limit())
}

/// Whether `pinholes` live pinholes leave room, under `nofile`, for the
/// sockets of one more session. Kept (released) sockets do not count: the
/// plane closes them when it runs out of descriptors.
fn admits(pinholes: usize, nofile: u64) -> bool {
    let capacity = nofile.saturating_sub(fd_reserve()) / SOCKETS_PER_PINHOLE;
    (pinholes as u64).saturating_add(STREAMS_PER_NEW_SESSION) <= capacity
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

impl MediaOps for MediaPlane {
    fn apply(&self, op: &PinholeOp) -> Result<(), String> {
        MediaPlane::apply(self, op).map_err(|e| e.to_string())
    }

    fn counters(&self) -> serde_json::Value {
        serde_json::to_value(MediaPlane::counters(self)).unwrap_or_default()
    }

    fn pinhole_counters(&self, id: PinholeId) -> Option<serde_json::Value> {
        MediaPlane::pinhole_counters(self, id).and_then(|c| serde_json::to_value(c).ok())
    }

    fn pinhole_count(&self) -> usize {
        MediaPlane::pinhole_count(self)
    }

    fn admits_session(&self) -> bool {
        admits_session(self)
    }

    fn shutdown(self: Box<Self>) {
        MediaPlane::shutdown(*self)
    }
}

#[cfg(test)]
mod tests {
    use super::{admits, dpdk_settings, DpdkSection};
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

    #[test]
    fn admission_leaves_room_for_a_session_s_sockets() {
        // 20 000 descriptors: (20 000 - 1 024) / 4 = 4 744 pinholes.
        assert!(admits(0, 20_000));
        assert!(admits(4_742, 20_000));
        assert!(!admits(4_743, 20_000));
        assert!(!admits(0, 100), "below the reserve nothing is admitted");
        assert!(admits(1_000_000, 1 << 30));
    }
}
