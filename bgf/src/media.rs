//! Glue between the core loop and `media_plane::MediaPlane`: starting the
//! kernel backend from the validated settings and the [`MediaOps`] adapter.

use crate::config::MediaSettings;
use crate::runtime::MediaOps;
use media_plane::{MediaConfig, MediaEvent, MediaPlane, PinholeId, PinholeOp};

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
/// client, the admin API, epoll and eventfds.
const FD_RESERVE: u64 = 1024;
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
    let cap = nofile_limit().saturating_sub(FD_RESERVE) / SOCKETS_PER_PINHOLE;
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
    let capacity = nofile.saturating_sub(FD_RESERVE) / SOCKETS_PER_PINHOLE;
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
    let cfg = MediaConfig {
        workers: settings.workers,
        inactivity_timeout: settings.inactivity_timeout,
        keep_released,
        ..MediaConfig::default()
    };
    match settings.backend {
        "kernel" => MediaPlane::start_kernel(cfg, Box::new(sink))
            .map(|p| Box::new(p) as Box<dyn MediaOps>)
            .map_err(|e| format!("cannot start the media plane: {e}")),
        other => Err(format!(
            "media.backend \"{other}\" is not built in this version — use \"kernel\""
        )),
    }
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
    use super::admits;

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
