//! The XDP backend on veth pairs between two namespaces (root; see
//! `netns/mod.rs`): the relay contract of `relay.rs` (both ways with the
//! BGF's source, IPv6↔IPv4, RTCP on +1 and muxed, wrong sources, malformed
//! packets, hold, latching, upsert/remove, inactivity) plus what is the
//! XDP path's own: unknown ports of the media range dropped in the kernel,
//! other traffic passed to the kernel, idle planes, the map's capacity, and
//! native and generic attachment.
//!
//! Without root or without the compiled program the tests say SKIPPED,
//! unless `BGF_REQUIRE_XDP=1` (CI), where that is a failure.
//!
//! Run: `BGF_NETNS_TAG=w17 cargo test -p media-plane --test xdp_relay`.

mod netns;

mod support;

use media_plane::xdp::{XdpAddr, XdpMode, XdpSettings};
use media_plane::{
    Leg, MediaConfig, MediaError, MediaEvent, MediaPlane, PinholeOp, PinholeSpec, Side,
};
use netns::Net;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::{eventually, id, leg, recv, rtcp_rr, rtp, sa, WAIT};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn can_run(test: &str) -> bool {
    netns::xdp_can_run(test)
}

const REL_ADDRS: [(&str, &str); 4] = [
    ("r0", "198.18.0.1/24"),
    ("r0", "fd00:a::1/64"),
    ("r1", "198.18.1.1/24"),
    ("r1", "fd00:c::1/64"),
];

fn settings(mode: XdpMode, max_pinholes: u32) -> XdpSettings {
    XdpSettings {
        access_interface: "r0".into(),
        core_interface: "r1".into(),
        mode,
        max_pinholes,
        upcall_ring_kib: 256,
    }
}

fn addrs(access4: &str, access6: &str, core4: &str) -> Vec<XdpAddr> {
    vec![
        XdpAddr {
            side: Side::Access,
            ip: ip(access4),
            port_min: 20000,
            port_max: 29999,
        },
        XdpAddr {
            side: Side::Access,
            ip: ip(access6),
            port_min: 20000,
            port_max: 29999,
        },
        XdpAddr {
            side: Side::Core,
            ip: ip(core4),
            port_min: 30000,
            port_max: 39999,
        },
    ]
}

struct Bed {
    net: Net,
    plane: MediaPlane,
    events: mpsc::Receiver<MediaEvent>,
}

fn bed(name: &str, mode: XdpMode, timeout: Duration, max_pinholes: u32) -> Bed {
    let net = Net::up(name, true, &REL_ADDRS);
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let cfg = MediaConfig {
        workers: 1,
        inactivity_timeout: timeout,
        scan_interval: Duration::from_millis(100),
        batch: 8,
        keep_released: 0,
    };
    let s = settings(mode, max_pinholes);
    let plane = net
        .in_rel(|| {
            MediaPlane::start_xdp(
                cfg,
                &s,
                addrs("198.18.0.1", "fd00:a::1", "198.18.1.1"),
                true,
                Box::new(move |e| {
                    let _ = tx.lock().unwrap().send(e);
                }),
            )
        })
        .expect("XDP plane starts");
    Bed {
        net,
        plane,
        events: rx,
    }
}

impl Bed {
    fn peer(&self, addr: &str) -> UdpSocket {
        let a = sa(addr);
        self.net.in_gen(move || {
            let s = UdpSocket::bind(a).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            s
        })
    }
}

/// Send IPv4 UDP from `s` with a zero checksum ("none").
fn set_no_check(s: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a live int of its size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_NO_CHECK");
}

fn nothing(s: &UdpSocket) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let r = s.recv_from(&mut buf).is_err();
    s.set_read_timeout(Some(WAIT)).unwrap();
    r
}

/// Both ways over IPv4, IPv6→IPv4 and back, RTCP on +1 and muxed: every
/// packet arrives with the BGF's address as its source and its payload
/// unchanged; the counters see them (most forwarded in the kernel).
fn relays_all_families(mode: XdpMode, name: &str) {
    let b = bed(name, mode, Duration::from_secs(600), 1024);
    let attached = b.plane.xdp_attached();
    assert_eq!(attached.len(), 2, "{attached:?}");
    let want = match mode {
        XdpMode::Generic => "generic",
        _ => "native",
    };
    assert!(attached.iter().all(|a| a.mode == want), "{attached:?}");
    assert_eq!(b.plane.backend_name(), "xdp");
    let ue = b.peer("198.18.0.200:4000");
    let ue_rtcp = b.peer("198.18.0.200:4001");
    let ue6 = b.peer("[fd00:a::200]:4000");
    let core = b.peer("198.18.1.200:5000");
    let core_rtcp = b.peer("198.18.1.200:5001");
    let core2 = b.peer("198.18.1.200:5002");
    b.plane
        .apply(&PinholeOp::Upsert(PinholeSpec {
            id: id(1),
            access: leg(
                "198.18.0.1:20000",
                Some("198.18.0.200:4000"),
                Some("198.18.0.200:4001"),
            ),
            core: leg(
                "198.18.1.1:30000",
                Some("198.18.1.200:5000"),
                Some("198.18.1.200:5001"),
            ),
        }))
        .unwrap();
    b.plane
        .apply(&PinholeOp::Upsert(PinholeSpec {
            id: id(2),
            access: leg("[fd00:a::1]:20002", Some("[fd00:a::200]:4000"), None),
            core: leg("198.18.1.1:30002", Some("198.18.1.200:5002"), None),
        }))
        .unwrap();
    let mut sent = 0u64;
    for seq in 0..20u16 {
        ue.send_to(&rtp(seq), "198.18.0.1:20000").unwrap();
        assert_eq!(recv(&core), (rtp(seq), sa("198.18.1.1:30000")), "v4 →");
        core.send_to(&rtp(seq), "198.18.1.1:30000").unwrap();
        assert_eq!(recv(&ue), (rtp(seq), sa("198.18.0.1:20000")), "v4 ←");
        ue6.send_to(&rtp(seq), "[fd00:a::1]:20002").unwrap();
        assert_eq!(recv(&core2), (rtp(seq), sa("198.18.1.1:30002")), "v6 → v4");
        core2.send_to(&rtp(seq), "198.18.1.1:30002").unwrap();
        assert_eq!(recv(&ue6), (rtp(seq), sa("[fd00:a::1]:20002")), "v4 → v6");
        sent += 4;
    }
    // IPv4 without a UDP checksum (allowed) towards IPv6 (where it is
    // mandatory): the program sums the payload; the UE's kernel would drop
    // a wrong checksum.
    set_no_check(&core2);
    for seq in 100..110u16 {
        core2.send_to(&rtp(seq), "198.18.1.1:30002").unwrap();
        assert_eq!(
            recv(&ue6),
            (rtp(seq), sa("[fd00:a::1]:20002")),
            "v4 no checksum → v6"
        );
        sent += 1;
    }
    ue_rtcp.send_to(&rtcp_rr(1), "198.18.0.1:20001").unwrap();
    assert_eq!(recv(&core_rtcp), (rtcp_rr(1), sa("198.18.1.1:30001")));
    core_rtcp.send_to(&rtcp_rr(2), "198.18.1.1:30001").unwrap();
    assert_eq!(recv(&ue_rtcp), (rtcp_rr(2), sa("198.18.0.1:20001")));
    ue.send_to(&rtcp_rr(3), "198.18.0.1:20000").unwrap();
    assert_eq!(recv(&core), (rtcp_rr(3), sa("198.18.1.1:30000")), "muxed");
    sent += 3;
    eventually("forward counters", || {
        b.plane.counters().forwarded_packets == sent
    });
    let t = b.plane.xdp_totals().unwrap();
    assert!(
        t.fwd_pkts + 8 >= sent,
        "nearly all forwarded in the kernel (the first of each direction waits for a neighbour): {t:?}"
    );
    let c = b.plane.pinhole_counters(id(1)).unwrap();
    assert_eq!(c.access_in.packets, 22);
    assert_eq!(c.core_in.packets, 21);
    assert_eq!(c.access_in.bytes, 20 * 172 + 16);
    assert_eq!(
        b.plane.counters().drops.total(),
        0,
        "{:?}",
        b.plane.counters()
    );
}

#[test]
fn relays_all_families_native() {
    if can_run("relays_all_families_native") {
        relays_all_families(XdpMode::Native, "xnat");
    }
}

#[test]
fn relays_all_families_generic() {
    if can_run("relays_all_families_generic") {
        relays_all_families(XdpMode::Generic, "xgen");
    }
}

/// What the program refuses is dropped and counted by reason, never
/// forwarded; what is not media (another port, another protocol) reaches
/// the kernel as if no program were there.
#[test]
fn drops_are_counted_and_other_traffic_passes() {
    if !can_run("drops_are_counted_and_other_traffic_passes") {
        return;
    }
    let b = bed("xdrop", XdpMode::Auto, Duration::from_secs(600), 1024);
    let ue = b.peer("198.18.0.200:4000");
    let evil = b.peer("198.18.0.200:4444");
    let core = b.peer("198.18.1.200:5000");
    b.plane
        .apply(&PinholeOp::Upsert(PinholeSpec {
            id: id(1),
            access: leg("198.18.0.1:20000", Some("198.18.0.200:4000"), None),
            core: leg("198.18.1.1:30000", None, None),
        }))
        .unwrap();
    b.plane
        .apply(&PinholeOp::Upsert(PinholeSpec {
            id: id(2),
            access: leg("198.18.0.1:20002", Some("198.18.0.200:4000"), None),
            core: leg("198.18.1.1:30002", Some("198.18.1.200:5000"), None),
        }))
        .unwrap();
    // A SIP-like socket in the relay namespace, outside the media range.
    let sip = b.net.in_rel(|| {
        let s = UdpSocket::bind("198.18.0.1:5060").unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    });
    evil.send_to(&rtp(1), "198.18.0.1:20002").unwrap(); // wrong source
    ue.send_to(&[0x40; 20], "198.18.0.1:20002").unwrap(); // not RTP
    ue.send_to(&[0x80; 5], "198.18.0.1:20002").unwrap(); // too short
    ue.send_to(&rtp(2), "198.18.0.1:20000").unwrap(); // hold: no destination
    ue.send_to(&rtp(3), "198.18.0.1:21000").unwrap(); // no pinhole in range
    assert!(nothing(&core), "nothing refused is forwarded");
    ue.send_to(b"OPTIONS sip:x SIP/2.0\r\n\r\n", "198.18.0.1:5060")
        .unwrap();
    let mut buf = [0u8; 256];
    let (n, from) = sip
        .recv_from(&mut buf)
        .expect("non-media reaches the kernel");
    assert_eq!((&buf[..4], from), (&b"OPTI"[..], sa("198.18.0.200:4000")));
    assert_eq!(n, 25);
    eventually("drop counters", || {
        let d = b.plane.counters().drops;
        d.wrong_source == 1
            && d.not_rtp == 1
            && d.too_short == 1
            && d.no_destination == 1
            && d.unknown_port == 1
    });
    assert_eq!(b.plane.counters().forwarded_packets, 0);
    let c = b.plane.pinhole_counters(id(2)).unwrap();
    assert_eq!((c.access_in.packets, c.access_in.drops), (0, 3));
}

/// The first packet from the latch IP goes up to user space, which latches
/// (one event), relays it and writes the latch into the map: the next
/// packets are forwarded in the kernel; another port of that IP is refused.
#[test]
fn latching_goes_up_once_then_forwards_in_the_kernel() {
    if !can_run("latching_goes_up_once_then_forwards_in_the_kernel") {
        return;
    }
    let b = bed("xlatch", XdpMode::Auto, Duration::from_secs(600), 1024);
    let ue = b.peer("198.18.0.200:4000");
    let ue_other = b.peer("198.18.0.200:4002");
    let core = b.peer("198.18.1.200:5000");
    let mut access = leg("198.18.0.1:20000", Some("198.18.0.200:9998"), None);
    access.latch_ip = Some(ip("198.18.0.200"));
    b.plane
        .apply(&PinholeOp::Upsert(PinholeSpec {
            id: id(1),
            access,
            core: leg("198.18.1.1:30000", Some("198.18.1.200:5000"), None),
        }))
        .unwrap();
    ue.send_to(&rtp(1), "198.18.0.1:20000").unwrap();
    assert_eq!(recv(&core), (rtp(1), sa("198.18.1.1:30000")));
    match b.events.recv_timeout(WAIT).unwrap() {
        MediaEvent::Latched {
            id: i,
            side,
            rtcp,
            remote,
        } => {
            assert_eq!((i, side, rtcp), (id(1), Side::Access, false));
            assert_eq!(remote, sa("198.18.0.200:4000"));
        }
        e => panic!("unexpected {e:?}"),
    }
    core.send_to(&rtp(2), "198.18.1.1:30000").unwrap();
    assert_eq!(
        recv(&ue),
        (rtp(2), sa("198.18.0.1:20000")),
        "back to the latched port"
    );
    for seq in 3..23 {
        ue.send_to(&rtp(seq), "198.18.0.1:20000").unwrap();
        assert_eq!(recv(&core).0, rtp(seq));
    }
    ue_other.send_to(&rtp(99), "198.18.0.1:20000").unwrap();
    assert!(nothing(&core), "another port of the latch IP is refused");
    assert!(b.events.try_recv().is_err(), "one latch event");
    let spec = b.plane.pinhole_spec(id(1)).unwrap();
    assert_eq!(spec.access.remote_rtp, Some(sa("198.18.0.200:4000")));
    eventually("wrong source counted", || {
        b.plane.counters().drops.wrong_source == 1
    });
}

/// Remove: the ports go back to unknown (dropped in the kernel). An upsert
/// moving a port keeps the counters and relays on the new port only.
#[test]
fn remove_and_move_ports() {
    if !can_run("remove_and_move_ports") {
        return;
    }
    let b = bed("xmove", XdpMode::Auto, Duration::from_secs(600), 1024);
    let ue = b.peer("198.18.0.200:4000");
    let core = b.peer("198.18.1.200:5000");
    let spec = |access_port: u16| PinholeSpec {
        id: id(1),
        access: leg(
            &format!("198.18.0.1:{access_port}"),
            Some("198.18.0.200:4000"),
            None,
        ),
        core: leg("198.18.1.1:30000", Some("198.18.1.200:5000"), None),
    };
    b.plane.apply(&PinholeOp::Upsert(spec(20000))).unwrap();
    ue.send_to(&rtp(1), "198.18.0.1:20000").unwrap();
    assert_eq!(recv(&core).0, rtp(1));
    b.plane.apply(&PinholeOp::Upsert(spec(20010))).unwrap();
    ue.send_to(&rtp(2), "198.18.0.1:20000").unwrap();
    assert!(nothing(&core), "the old port no longer relays");
    ue.send_to(&rtp(3), "198.18.0.1:20010").unwrap();
    assert_eq!(recv(&core).0, rtp(3));
    eventually("counters kept", || {
        b.plane.pinhole_counters(id(1)).unwrap().access_in.packets == 2
    });
    b.plane.apply(&PinholeOp::Remove(id(1))).unwrap();
    assert_eq!(b.plane.pinhole_count(), 0);
    ue.send_to(&rtp(4), "198.18.0.1:20010").unwrap();
    assert!(nothing(&core));
    eventually("unknown ports counted", || {
        b.plane.counters().drops.unknown_port == 2
    });
}

/// Inactivity sees kernel-forwarded packets: a session with media is not
/// reported, an idle one is, once.
#[test]
fn inactivity_follows_kernel_forwarded_media() {
    if !can_run("inactivity_follows_kernel_forwarded_media") {
        return;
    }
    let b = bed("xidle", XdpMode::Auto, Duration::from_millis(1500), 1024);
    let ue = b.peer("198.18.0.200:4000");
    let core = b.peer("198.18.1.200:5000");
    for (s, port) in [(1u64, 20000u16), (2, 20002)] {
        b.plane
            .apply(&PinholeOp::Upsert(PinholeSpec {
                id: id(s),
                access: leg(
                    &format!("198.18.0.1:{port}"),
                    Some("198.18.0.200:4000"),
                    None,
                ),
                core: leg(
                    &format!("198.18.1.1:{}", port + 10000),
                    Some("198.18.1.200:5000"),
                    None,
                ),
            }))
            .unwrap();
    }
    // Session 1 gets media every 100 ms for 3 s; session 2 none.
    let t = Instant::now();
    let mut seq = 0;
    while t.elapsed() < Duration::from_secs(3) {
        ue.send_to(&rtp(seq), "198.18.0.1:20000").unwrap();
        let _ = recv(&core);
        seq += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut inactive = Vec::new();
    while let Ok(e) = b.events.try_recv() {
        if let MediaEvent::Inactive { session } = e {
            inactive.push(session);
        }
    }
    assert_eq!(inactive, vec![2], "only the idle session");
}

/// An idle plane (a standby's) holds its pinholes and forwards nothing;
/// after `announce` it forwards. Two planes share the program; other
/// settings in the same process and namespace are refused.
#[test]
fn idle_plane_forwards_only_after_announce() {
    if !can_run("idle_plane_forwards_only_after_announce") {
        return;
    }
    let b = bed("xsby", XdpMode::Auto, Duration::from_secs(600), 1024);
    b.net.in_rel(|| {
        for a in ["198.18.0.2/24", "198.18.1.2/24", "fd00:a::2/64"] {
            let dev = if a.starts_with("198.18.1") {
                "r1"
            } else {
                "r0"
            };
            netns::sh(&["ip", "addr", "add", a, "dev", dev]);
        }
    });
    let cfg = MediaConfig::default();
    let s = settings(XdpMode::Auto, 1024);
    let idle = b
        .net
        .in_rel(|| {
            let mut other = s.clone();
            other.max_pinholes = 7;
            let e = MediaPlane::start_xdp(
                cfg.clone(),
                &other,
                addrs("198.18.0.3", "fd00:a::3", "198.18.1.3"),
                true,
                Box::new(|_| {}),
            )
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
            assert!(e.contains("same [media.xdp] section"), "{e}");
            MediaPlane::start_xdp(
                cfg,
                &s,
                addrs("198.18.0.2", "fd00:a::2", "198.18.1.2"),
                false,
                Box::new(|_| {}),
            )
        })
        .unwrap();
    let ue = b.peer("198.18.0.200:4000");
    let core = b.peer("198.18.1.200:5000");
    idle.apply(&PinholeOp::Upsert(PinholeSpec {
        id: id(1),
        access: leg("198.18.0.2:20000", Some("198.18.0.200:4000"), None),
        core: leg("198.18.1.2:30000", Some("198.18.1.200:5000"), None),
    }))
    .unwrap();
    ue.send_to(&rtp(1), "198.18.0.2:20000").unwrap();
    assert!(nothing(&core), "idle plane forwarded");
    assert_eq!(idle.counters().forwarded_packets, 0);
    assert_eq!(idle.announce(&[]).unwrap(), Vec::<IpAddr>::new());
    for seq in 2..7 {
        ue.send_to(&rtp(seq), "198.18.0.2:20000").unwrap();
        assert_eq!(recv(&core), (rtp(seq), sa("198.18.1.2:30000")));
    }
    eventually("the plane counts its own", || {
        idle.counters().forwarded_packets == 5
    });
    assert!(
        idle.xdp_totals().unwrap().fwd_pkts >= 4,
        "forwarded in the kernel"
    );
    assert_eq!(b.plane.counters().forwarded_packets, 0);
    drop(idle);
}

/// The map holds `max_pinholes`: one more is refused with a clear error
/// (the daemon turns that into 503s), a removal makes room again.
#[test]
fn capacity_is_the_map_not_descriptors() {
    if !can_run("capacity_is_the_map_not_descriptors") {
        return;
    }
    let b = bed("xcap", XdpMode::Auto, Duration::from_secs(600), 3);
    let spec = |s: u64| PinholeSpec {
        id: id(s),
        access: leg(
            &format!("198.18.0.1:{}", 20000 + 2 * s),
            Some("198.18.0.200:4000"),
            None,
        ),
        core: leg(
            &format!("198.18.1.1:{}", 30000 + 2 * s),
            Some("198.18.1.200:5000"),
            None,
        ),
    };
    for s in 0..3 {
        b.plane.apply(&PinholeOp::Upsert(spec(s))).unwrap();
    }
    match b.plane.apply(&PinholeOp::Upsert(spec(3))) {
        Err(MediaError::TooManyPinholes { limit: 3 }) => {}
        r => panic!("expected TooManyPinholes, got {r:?}"),
    }
    assert_eq!(b.plane.pinhole_count(), 3);
    b.plane.apply(&PinholeOp::Remove(id(0))).unwrap();
    b.plane.apply(&PinholeOp::Upsert(spec(3))).unwrap();
    // An address that is not the plane's is refused, as for sockets.
    let mut bad = spec(9);
    bad.access.local = sa("198.18.0.77:20100");
    assert!(matches!(
        b.plane.apply(&PinholeOp::Upsert(bad)),
        Err(MediaError::AddressNotLocal { .. })
    ));
}

/// Scale (ignored: ~1 min, run on demand): one plane holds 100 000
/// pinholes (five media addresses per side, 20 000 pairs each) in its maps
/// with no descriptor per pinhole; install and removal times, and media on
/// a spread sample of them, are printed.
/// `BGF_NETNS_TAG=w17 cargo test --release -p media-plane --test xdp_relay -- --ignored --nocapture holds_100k`
#[test]
#[ignore]
fn holds_100k_pinholes_without_descriptors() {
    if !can_run("holds_100k_pinholes_without_descriptors") {
        return;
    }
    const N: usize = 100_000;
    const PER_IP: usize = 20_000;
    let mut rel: Vec<(String, String)> = Vec::new();
    for k in 0..5 {
        rel.push(("r0".into(), format!("198.18.0.{}/24", 1 + k)));
        rel.push(("r1".into(), format!("198.18.1.{}/24", 1 + k)));
    }
    let rel_ref: Vec<(&str, &str)> = rel.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let net = Net::up("x100k", true, &rel_ref);
    let mut addrs = Vec::new();
    for k in 0..5u8 {
        for (side, ip) in [
            (Side::Access, format!("198.18.0.{}", 1 + k)),
            (Side::Core, format!("198.18.1.{}", 1 + k)),
        ] {
            addrs.push(XdpAddr {
                side,
                ip: ip.parse().unwrap(),
                port_min: 20000,
                port_max: 59999,
            });
        }
    }
    let fds_before = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let s = settings(XdpMode::Native, N as u32);
    let plane = net
        .in_rel(|| MediaPlane::start_xdp(MediaConfig::default(), &s, addrs, true, Box::new(|_| {})))
        .unwrap();
    let local = |side: u8, i: usize| {
        SocketAddr::new(
            IpAddr::from([198, 18, side, 1 + (i / PER_IP) as u8]),
            20000 + 2 * (i % PER_IP) as u16,
        )
    };
    let spec = |i: usize| PinholeSpec {
        id: id(i as u64),
        access: Leg {
            local: local(0, i),
            remote_rtp: Some(SocketAddr::new(
                ip("198.18.0.200"),
                4000 + (i % 20000) as u16,
            )),
            remote_rtcp: None,
            latch_ip: None,
        },
        core: Leg {
            local: local(1, i),
            remote_rtp: Some(sa("198.18.1.200:5000")),
            remote_rtcp: None,
            latch_ip: None,
        },
    };
    let t = Instant::now();
    for i in 0..N {
        plane.apply(&PinholeOp::Upsert(spec(i))).unwrap();
    }
    let install = t.elapsed();
    let fds_after = std::fs::read_dir("/proc/self/fd").unwrap().count();
    assert_eq!(plane.pinhole_count(), N);
    assert!(
        fds_after <= fds_before + 64,
        "descriptors grew from {fds_before} to {fds_after}"
    );
    // Media on 200 pinholes spread over the whole range.
    let sink = net.in_gen(|| {
        let s = UdpSocket::bind("198.18.1.200:5000").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s
    });
    let mut got = 0;
    for j in 0..200 {
        let i = j * (N / 200) + j % 7;
        let src = SocketAddr::new(ip("198.18.0.200"), 4000 + (i % 20000) as u16);
        let tx = net.in_gen(move || UdpSocket::bind(src).unwrap());
        for seq in 0..3u16 {
            tx.send_to(&rtp(seq), local(0, i)).unwrap();
        }
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = sink.recv_from(&mut buf) {
            if from == local(1, i) {
                got += 1;
            }
            if got >= (j + 1) * 3 {
                break;
            }
        }
    }
    let t = Instant::now();
    for i in 0..N {
        plane.apply(&PinholeOp::Remove(id(i as u64))).unwrap();
    }
    let remove = t.elapsed();
    println!(
        "XDP 100k: installed {N} pinholes in {:.1} s ({:.1} µs each), removed in {:.1} s; descriptors {fds_before} → {fds_after}; media on {got} of 600 sampled packets; map free again {}",
        install.as_secs_f64(),
        install.as_secs_f64() * 1e6 / N as f64,
        remove.as_secs_f64(),
        plane.xdp_free_pinholes().unwrap()
    );
    assert!(got >= 590, "media on the sampled pinholes: {got} of 600");
    assert_eq!(plane.xdp_free_pinholes(), Some(N));
}
