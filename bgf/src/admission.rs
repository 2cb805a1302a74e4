//! Admission tied to the media plane's real capacity, whatever the backend:
//! a new call is only let in while the plane can still install a session's
//! pinholes, so a call is refused with 503 before it is answered instead of
//! being answered without media.
//!
//! What limits a plane: file descriptors for the kernel-socket backend
//! (four sockets per pinhole), map entries for XDP (`media.xdp.max_pinholes`,
//! shared by every plane of the process), nothing per pinhole for DPDK (its
//! table is in memory). Ports are the session core's: an exhausted pool is
//! answered 503 there. The caller (the core loop) asks before a new INVITE
//! reaches the core, and counts and alarms the refusals.
//!
//! Not here: the 503 itself and its counters (`runtime::CoreLoop::refuse`),
//! the other reasons to refuse (state log degraded or congested).

use media_plane::MediaPlane;

/// Sockets one pinhole may hold: RTP and RTCP on both sides.
const SOCKETS_PER_PINHOLE: u64 = 4;
/// Descriptors kept back for SIP sockets and TCP connections, the store
/// client, the admin API, epoll and eventfds.
const FD_RESERVE: u64 = 1024;
/// Streams a new session may bring (audio + video).
pub const STREAMS_PER_NEW_SESSION: usize = 2;

/// Why a plane refuses new sessions, worded for the operator's alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// Kernel sockets: the open-files limit.
    Descriptors,
    /// XDP: the pinhole map.
    MapEntries,
}

impl Full {
    /// The `reason` of the refusal log line.
    pub fn reason(self) -> &'static str {
        match self {
            Full::Descriptors => "media plane has no descriptors left for another session",
            Full::MapEntries => "media plane's XDP pinhole map is full",
        }
    }

    /// What the operator should do (the ALARM line).
    pub fn advice(self) -> &'static str {
        match self {
            Full::Descriptors => "no file descriptors left for media sockets — raise LimitNOFILE / RLIMIT_NOFILE (4 per audio session) or spread load over more instances",
            Full::MapEntries => "the XDP pinhole map is full — raise media.xdp.max_pinholes or spread load over more instances",
        }
    }
}

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

/// Pinholes the process's descriptors hold under `nofile`.
fn fd_capacity(nofile: u64) -> usize {
    let cap = nofile.saturating_sub(FD_RESERVE) / SOCKETS_PER_PINHOLE;
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// How many pinholes the process can hold with `plane`'s backend, all
/// planes together (the standby's pre-install budget).
pub fn pinhole_capacity(plane: &MediaPlane) -> usize {
    match plane.backend_name() {
        "kernel" => fd_capacity(nofile_limit()),
        "xdp" => plane.xdp_capacity().unwrap_or(0),
        _ => usize::MAX,
    }
}

/// `None` while `plane` can install one more session's pinholes, else why
/// not.
pub fn check(plane: &MediaPlane) -> Option<Full> {
    match plane.backend_name() {
        "kernel" => {
            (!fits(plane.pinhole_count(), fd_capacity(nofile_limit()))).then_some(Full::Descriptors)
        }
        "xdp" => (plane.xdp_free_pinholes().unwrap_or(0) < STREAMS_PER_NEW_SESSION)
            .then_some(Full::MapEntries),
        _ => None,
    }
}

/// Whether `in_use` pinholes leave room, out of `capacity`, for one more
/// session's. Kept (released) sockets do not count: the plane closes them
/// when it runs out of descriptors.
fn fits(in_use: usize, capacity: usize) -> bool {
    in_use.saturating_add(STREAMS_PER_NEW_SESSION) <= capacity
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_s_sockets_must_fit_under_the_descriptor_limit() {
        // 20 000 descriptors: (20 000 - 1 024) / 4 = 4 744 pinholes.
        let cap = fd_capacity(20_000);
        assert_eq!(cap, 4_744);
        assert!(fits(0, cap));
        assert!(fits(4_742, cap));
        assert!(!fits(4_743, cap));
        assert_eq!(fd_capacity(100), 0, "below the reserve nothing is admitted");
        assert!(fits(1_000_000, fd_capacity(1 << 30)));
    }

    #[test]
    fn alarms_say_what_to_raise() {
        assert!(Full::Descriptors.advice().contains("RLIMIT_NOFILE"));
        assert!(Full::MapEntries.advice().contains("media.xdp.max_pinholes"));
    }
}
