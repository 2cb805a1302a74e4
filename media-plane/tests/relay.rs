//! The kernel relay over real sockets on loopback (127.77.T.x per test, ::1).

mod support;

use media_plane::{
    MediaConfig, MediaError, MediaEvent, MediaPlane, PinholeId, PinholeOp, PinholeSpec, Side,
};
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;
use support::{eventually, id, leg, recv, rtcp_rr, rtp, sa, WAIT};

fn start(timeout: Duration, scan: Duration) -> (MediaPlane, mpsc::Receiver<MediaEvent>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let cfg = MediaConfig {
        workers: 2,
        inactivity_timeout: timeout,
        scan_interval: scan,
        batch: 8,
        keep_released: 0,
    };
    let plane = MediaPlane::start_kernel(
        cfg,
        Box::new(move |e| {
            let _ = tx.lock().unwrap().send(e);
        }),
    )
    .unwrap();
    (plane, rx)
}

fn plane() -> (MediaPlane, mpsc::Receiver<MediaEvent>) {
    start(Duration::from_secs(600), Duration::from_secs(1))
}

fn peer(addr: &str) -> UdpSocket {
    let s = UdpSocket::bind(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// An even port on `ip` whose +1 is free too (probe-and-release).
fn free_pair(ip: &str) -> u16 {
    for _ in 0..200 {
        let a = UdpSocket::bind(SocketAddr::new(ip.parse().unwrap(), 0)).unwrap();
        let p = a.local_addr().unwrap().port();
        if p % 2 != 0 || p == u16::MAX {
            continue;
        }
        if UdpSocket::bind(SocketAddr::new(ip.parse().unwrap(), p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair on {ip}");
}

#[test]
fn relays_ipv4_both_ways_with_bgf_source() {
    let (mp, _ev) = plane();
    let ue = peer("127.77.1.10:4000");
    let core = peer("127.77.1.20:5000");
    mp.apply(&PinholeOp::Upsert(PinholeSpec {
        id: id(1),
        access: leg(
            "127.77.1.1:30000",
            Some("127.77.1.10:4000"),
            Some("127.77.1.10:4001"),
        ),
        core: leg(
            "127.77.1.2:40000",
            Some("127.77.1.20:5000"),
            Some("127.77.1.20:5001"),
        ),
    }))
    .unwrap();
    assert_eq!(mp.pinhole_count(), 1);
    ue.send_to(&rtp(1), "127.77.1.1:30000").unwrap();
    let (p, from) = recv(&core);
    assert_eq!(p, rtp(1));
    assert_eq!(
        from,
        sa("127.77.1.2:40000"),
        "core sees the BGF core address"
    );
    core.send_to(&rtp(2), "127.77.1.2:40000").unwrap();
    let (p, from) = recv(&ue);
    assert_eq!(p, rtp(2));
    assert_eq!(
        from,
        sa("127.77.1.1:30000"),
        "UE sees the BGF access address"
    );
    eventually("forward counters", || {
        let c = mp.counters();
        c.forwarded_packets == 2 && c.forwarded_bytes == 2 * 172
    });
    eventually("per-pinhole packets", || {
        mp.pinhole_counters(id(1))
            .is_some_and(|c| (c.access_in.packets, c.core_in.packets) == (1, 1))
    });
    let c = mp.pinhole_counters(id(1)).unwrap();
    assert_eq!(c.access_in.bytes, 172);
    assert!(c.last_activity_ms > 1_600_000_000_000, "unix ms");
    mp.shutdown();
}

#[test]
fn relays_ipv6_access_to_ipv4_core() {
    let (mp, _ev) = plane();
    let ue_port = free_pair("::1");
    let ue = peer(&format!("[::1]:{ue_port}"));
    let core = peer("127.77.2.20:5000");
    let bgf6 = free_pair("::1");
    let access_local = format!("[::1]:{bgf6}");
    mp.apply(&PinholeOp::Upsert(PinholeSpec {
        id: id(2),
        access: leg(&access_local, Some(&format!("[::1]:{ue_port}")), None),
        core: leg("127.77.2.2:40000", Some("127.77.2.20:5000"), None),
    }))
    .unwrap();
    ue.send_to(&rtp(7), access_local.as_str()).unwrap();
    let (p, from) = recv(&core);
    assert_eq!((p, from), (rtp(7), sa("127.77.2.2:40000")));
    core.send_to(&rtp(8), "127.77.2.2:40000").unwrap();
    let (p, from) = recv(&ue);
    assert_eq!((p, from), (rtp(8), sa(&access_local)));
    mp.shutdown();
}

#[test]
fn unauthorised_source_is_dropped_and_counted() {
    let (mp, _ev) = plane();
    let ue = peer("127.77.3.10:4000");
    let evil = peer("127.77.3.99:4000");
    let core = peer("127.77.3.20:5000");
    mp.apply(&PinholeOp::Upsert(PinholeSpec {
        id: id(3),
        access: leg("127.77.3.1:30000", Some("127.77.3.10:4000"), None),
        core: leg("127.77.3.2:40000", Some("127.77.3.20:5000"), None),
    }))
    .unwrap();
    evil.send_to(&rtp(1), "127.77.3.1:30000").unwrap();
    // The core leg does not accept the access peer either.
    ue.send_to(&rtp(2), "127.77.3.2:40000").unwrap();
    ue.send_to(&rtp(3), "127.77.3.1:30000").unwrap();
    let (p, _) = recv(&core);
    assert_eq!(p, rtp(3), "only the authorised packet passes");
    // Counters move after the send: await them, do not race the packet.
    eventually("wrong_source drops", || {
        mp.counters().drops.wrong_source == 2
    });
    eventually("per-pinhole drops on both legs", || {
        mp.pinhole_counters(id(3))
            .is_some_and(|c| (c.access_in.drops, c.core_in.drops) == (1, 1))
    });
    eventually("one packet forwarded", || {
        mp.counters().forwarded_packets == 1
    });
    mp.shutdown();
}

#[test]
fn latching_reports_once_then_only_latched_source_passes() {
    let (mp, ev) = plane();
    let ue = peer("127.77.4.10:4000");
    let ue_other_port = peer("127.77.4.10:4002");
    let core = peer("127.77.4.20:5000");
    let mut access = leg(
        "127.77.4.1:30000",
        Some("127.77.4.10:9998"),
        Some("127.77.4.10:9999"),
    );
    access.latch_ip = Some("127.77.4.10".parse().unwrap());
    mp.apply(&PinholeOp::Upsert(PinholeSpec {
        id: id(4),
        access,
        core: leg("127.77.4.2:40000", Some("127.77.4.20:5000"), None),
    }))
    .unwrap();
    ue.send_to(&rtp(1), "127.77.4.1:30000").unwrap();
    assert_eq!(recv(&core).0, rtp(1));
    let e = ev.recv_timeout(WAIT).unwrap();
    assert_eq!(
        e,
        MediaEvent::Latched {
            id: id(4),
            side: Side::Access,
            rtcp: false,
            remote: sa("127.77.4.10:4000")
        }
    );
    // Return media goes to the latched address, not the SDP one.
    core.send_to(&rtp(2), "127.77.4.2:40000").unwrap();
    assert_eq!(recv(&ue), (rtp(2), sa("127.77.4.1:30000")));
    // Same IP, other port: no longer accepted.
    ue_other_port.send_to(&rtp(3), "127.77.4.1:30000").unwrap();
    ue.send_to(&rtp(4), "127.77.4.1:30000").unwrap();
    assert_eq!(recv(&core).0, rtp(4));
    eventually("wrong_source", || mp.counters().drops.wrong_source == 1);
    assert!(ev.try_recv().is_err(), "exactly one latch event");
    let spec = mp.pinhole_spec(id(4)).unwrap();
    assert_eq!(spec.access.remote_rtp, Some(sa("127.77.4.10:4000")));
    mp.shutdown();
}

#[test]
fn rtcp_on_port_plus_one_and_muxed() {
    let (mp, _ev) = plane();
    let ue = peer("127.77.5.10:4000");
    let ue_rtcp = peer("127.77.5.10:4001");
    let core = peer("127.77.5.20:5000");
    let core_rtcp = peer("127.77.5.20:5001");
    mp.apply(&PinholeOp::Upsert(PinholeSpec {
        id: id(5),
        access: leg(
            "127.77.5.1:30000",
            Some("127.77.5.10:4000"),
            Some("127.77.5.10:4001"),
        ),
        core: leg(
            "127.77.5.2:40000",
            Some("127.77.5.20:5000"),
            Some("127.77.5.20:5001"),
        ),
    }))
    .unwrap();
    ue_rtcp.send_to(&rtcp_rr(1), "127.77.5.1:30001").unwrap();
    assert_eq!(recv(&core_rtcp), (rtcp_rr(1), sa("127.77.5.2:40001")));
    core_rtcp.send_to(&rtcp_rr(2), "127.77.5.2:40001").unwrap();
    assert_eq!(recv(&ue_rtcp), (rtcp_rr(2), sa("127.77.5.1:30001")));
    // Muxed RTCP on the RTP port travels on the RTP pair.
    ue.send_to(&rtcp_rr(3), "127.77.5.1:30000").unwrap();
    assert_eq!(recv(&core), (rtcp_rr(3), sa("127.77.5.2:40000")));
    // RTP on the RTCP port is refused.
    ue_rtcp.send_to(&rtp(1), "127.77.5.1:30001").unwrap();
    eventually("not_rtp", || mp.counters().drops.not_rtp == 1);
    mp.shutdown();
}

#[test]
fn hold_counts_no_destination_and_malformed_counts_not_rtp() {
    let (mp, _ev) = plane();
    let ue = peer("127.77.6.10:4000");
    mp.apply(&PinholeOp::Upsert(PinholeSpec {
        id: id(6),
        access: leg("127.77.6.1:30000", Some("127.77.6.10:4000"), None),
        core: leg("127.77.6.2:40000", None, None),
    }))
    .unwrap();
    ue.send_to(&rtp(1), "127.77.6.1:30000").unwrap();
    eventually("no_destination", || mp.counters().drops.no_destination == 1);
    ue.send_to(&[0x40; 40], "127.77.6.1:30000").unwrap();
    ue.send_to(&[0x80; 5], "127.77.6.1:30000").unwrap();
    eventually("not_rtp + too_short", || {
        let d = mp.counters().drops;
        d.not_rtp == 1 && d.too_short == 1
    });
    eventually("per-pinhole drops", || {
        mp.pinhole_counters(id(6))
            .is_some_and(|c| c.access_in.drops == 3)
    });
    assert_eq!(mp.counters().forwarded_packets, 0);
    mp.shutdown();
}

fn bindable(addr: &str) -> bool {
    UdpSocket::bind(addr).is_ok()
}

#[test]
fn remove_and_rebind_close_ports_and_keep_counters() {
    let (mp, _ev) = plane();
    let ue = peer("127.77.7.10:4000");
    let core = peer("127.77.7.20:5000");
    let spec = PinholeSpec {
        id: id(7),
        access: leg("127.77.7.1:30000", Some("127.77.7.10:4000"), None),
        core: leg("127.77.7.2:40000", Some("127.77.7.20:5000"), None),
    };
    mp.apply(&PinholeOp::Upsert(spec.clone())).unwrap();
    assert!(
        !bindable("127.77.7.1:30000"),
        "port held while the pinhole lives"
    );
    ue.send_to(&rtp(1), "127.77.7.1:30000").unwrap();
    assert_eq!(recv(&core).0, rtp(1));
    // Move the access leg to another port: old closed, new relays, counters kept.
    let mut moved = spec.clone();
    moved.access.local = sa("127.77.7.1:30002");
    mp.apply(&PinholeOp::Upsert(moved)).unwrap();
    eventually("old access ports closed", || {
        bindable("127.77.7.1:30000") && bindable("127.77.7.1:30001")
    });
    assert!(!bindable("127.77.7.2:40000"), "unchanged core port kept");
    ue.send_to(&rtp(2), "127.77.7.1:30002").unwrap();
    assert_eq!(recv(&core), (rtp(2), sa("127.77.7.2:40000")));
    core.send_to(&rtp(3), "127.77.7.2:40000").unwrap();
    assert_eq!(recv(&ue), (rtp(3), sa("127.77.7.1:30002")));
    eventually("counters kept", || {
        mp.pinhole_counters(id(7)).unwrap().access_in.packets == 2
    });
    mp.apply(&PinholeOp::Remove(id(7))).unwrap();
    mp.apply(&PinholeOp::Remove(id(7))).unwrap(); // idempotent
    assert_eq!(mp.pinhole_count(), 0);
    assert!(mp.pinhole_counters(id(7)).is_none());
    eventually("all ports closed", || {
        [
            "127.77.7.1:30002",
            "127.77.7.1:30003",
            "127.77.7.2:40000",
            "127.77.7.2:40001",
        ]
        .iter()
        .all(|a| bindable(a))
    });
    mp.shutdown();
}

#[test]
fn bind_errors_are_clear() {
    let (mp, _ev) = plane();
    let _squatter = UdpSocket::bind("127.77.8.1:30001").unwrap();
    let spec = PinholeSpec {
        id: id(8),
        access: leg("127.77.8.1:30000", None, None),
        core: leg("127.77.8.2:40000", None, None),
    };
    let e = mp.apply(&PinholeOp::Upsert(spec.clone())).unwrap_err();
    assert!(matches!(e, MediaError::PortInUse { by: None, .. }), "{e}");
    assert!(e.to_string().contains("127.77.8.1:30001"), "{e}");
    assert_eq!(mp.pinhole_count(), 0);
    assert!(bindable("127.77.8.1:30000"), "partial binds rolled back");
    // Another pinhole on our port.
    let mut a = spec.clone();
    a.access.local = sa("127.77.8.1:30010");
    mp.apply(&PinholeOp::Upsert(a.clone())).unwrap();
    let mut b = a.clone();
    b.id = id(9);
    b.core.local = sa("127.77.8.2:40010");
    let e = mp.apply(&PinholeOp::Upsert(b)).unwrap_err();
    assert!(
        matches!(e, MediaError::PortInUse { by: Some(p), .. } if p == id(8)),
        "{e}"
    );
    // An address not on this host (benchmarking range, never configured here).
    let mut c = spec.clone();
    c.id = id(10);
    c.access.local = sa("198.18.77.1:30000");
    c.core.local = sa("127.77.8.2:40020");
    let e = mp.apply(&PinholeOp::Upsert(c.clone())).unwrap_err();
    assert!(matches!(e, MediaError::AddressNotLocal { .. }), "{e}");
    mp.set_freebind(true);
    mp.apply(&PinholeOp::Upsert(c)).unwrap();
    // Invalid spec.
    let mut d = spec;
    d.id = id(11);
    d.core.local = d.access.local;
    assert!(matches!(
        mp.apply(&PinholeOp::Upsert(d)),
        Err(MediaError::InvalidSpec { .. })
    ));
    mp.shutdown();
}

#[test]
fn inactivity_reported_once_per_idle_period() {
    let (mp, ev) = start(Duration::from_millis(300), Duration::from_millis(50));
    let ue = peer("127.77.9.10:4000");
    let core = peer("127.77.9.20:5000");
    for stream in 0..2 {
        let p = 2 * stream;
        mp.apply(&PinholeOp::Upsert(PinholeSpec {
            id: PinholeId {
                session: 42,
                stream,
            },
            access: leg(
                &format!("127.77.9.1:{}", 30000 + p),
                Some("127.77.9.10:4000"),
                None,
            ),
            core: leg(
                &format!("127.77.9.2:{}", 40000 + p),
                Some("127.77.9.20:5000"),
                None,
            ),
        }))
        .unwrap();
    }
    assert_eq!(
        ev.recv_timeout(WAIT).unwrap(),
        MediaEvent::Inactive { session: 42 }
    );
    // Not repeated while still idle (several scan periods).
    std::thread::sleep(Duration::from_millis(400));
    assert!(ev.try_recv().is_err(), "reported once");
    // Activity on one stream re-arms it; idle again reports again.
    ue.send_to(&rtp(1), "127.77.9.1:30002").unwrap();
    assert_eq!(recv(&core).0, rtp(1));
    assert_eq!(
        ev.recv_timeout(WAIT).unwrap(),
        MediaEvent::Inactive { session: 42 }
    );
    mp.shutdown();
}

#[test]
fn active_session_not_reported_inactive() {
    let (mp, ev) = start(Duration::from_millis(1500), Duration::from_millis(50));
    let ue = peer("127.77.10.10:4000");
    let core = peer("127.77.10.20:5000");
    mp.apply(&PinholeOp::Upsert(PinholeSpec {
        id: id(43),
        access: leg("127.77.10.1:30000", Some("127.77.10.10:4000"), None),
        core: leg("127.77.10.2:40000", Some("127.77.10.20:5000"), None),
    }))
    .unwrap();
    // 20 ms packets for well over the timeout.
    for i in 0..100 {
        ue.send_to(&rtp(i), "127.77.10.1:30000").unwrap();
        assert_eq!(recv(&core).0, rtp(i));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ev.try_recv().is_err(), "no inactivity while media flows");
    mp.shutdown();
}

#[test]
fn released_sockets_kept_for_reuse_drop_stray_packets_and_relay_again() {
    let (tx, _rx) = mpsc::channel::<MediaEvent>();
    let tx = std::sync::Mutex::new(tx);
    let cfg = MediaConfig {
        workers: 1,
        inactivity_timeout: Duration::from_secs(600),
        scan_interval: Duration::from_secs(1),
        batch: 8,
        // Room for the first pinhole's four sockets only.
        keep_released: 4,
    };
    let mp = MediaPlane::start_kernel(
        cfg,
        Box::new(move |e| {
            let _ = tx.lock().unwrap().send(e);
        }),
    )
    .unwrap();
    let ue = peer("127.77.11.10:4000");
    let core = peer("127.77.11.20:5000");
    let spec = PinholeSpec {
        id: id(21),
        access: leg("127.77.11.1:30000", Some("127.77.11.10:4000"), None),
        core: leg("127.77.11.2:40000", Some("127.77.11.20:5000"), None),
    };
    let mut other = spec.clone();
    other.id = id(22);
    other.access.local = sa("127.77.11.1:30010");
    other.core.local = sa("127.77.11.2:40010");
    mp.apply(&PinholeOp::Upsert(spec.clone())).unwrap();
    mp.apply(&PinholeOp::Upsert(other.clone())).unwrap();
    mp.apply(&PinholeOp::Remove(id(21))).unwrap();
    mp.apply(&PinholeOp::Remove(id(22))).unwrap();
    assert_eq!(mp.pinhole_count(), 0);
    // The first four released sockets are kept bound; the rest close.
    assert!(!bindable("127.77.11.1:30000"), "kept for reuse");
    assert!(!bindable("127.77.11.2:40001"), "kept for reuse");
    eventually("sockets beyond the bound closed", || {
        bindable("127.77.11.1:30010") && bindable("127.77.11.2:40011")
    });
    // A packet to a kept port has no pinhole: dropped and counted.
    ue.send_to(&rtp(1), "127.77.11.1:30000").unwrap();
    eventually("stray packet counted", || {
        mp.counters().drops.unknown_port == 1
    });
    assert_eq!(mp.counters().forwarded_packets, 0);
    // A new pinhole on the same ports takes the kept sockets and relays.
    let mut again = spec;
    again.id = id(23);
    mp.apply(&PinholeOp::Upsert(again)).unwrap();
    ue.send_to(&rtp(2), "127.77.11.1:30000").unwrap();
    assert_eq!(recv(&core), (rtp(2), sa("127.77.11.2:40000")));
    core.send_to(&rtp(3), "127.77.11.2:40000").unwrap();
    assert_eq!(recv(&ue), (rtp(3), sa("127.77.11.1:30000")));
    mp.shutdown();
    // Shutdown closes kept sockets too.
    eventually("all ports closed after shutdown", || {
        bindable("127.77.11.1:30000") && bindable("127.77.11.2:40000")
    });
}
