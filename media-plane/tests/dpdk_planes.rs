//! Several planes on one EAL (feature `dpdk`; root): the way a standby
//! protecting several actives runs. Two namespaces joined by two veth pairs
//! (`<tag>-dkm-gen`: UE 198.18.0.200 on g0, peer 198.18.1.200 on g1;
//! `<tag>-dkm-rel`: r0/r1 driven by net_af_packet, no addresses; tag =
//! `BGF_NETNS_TAG` or the pid — see `netns/mod.rs`). Plane A owns its media
//! addresses from the start; plane B is idle (answers no ARP) until it
//! announces. Both share the process's one poll loop and ports; a packet
//! goes to the plane whose table holds its destination.
//!
//! Run: `cargo test -p media-plane --features dpdk --test dpdk_planes`.
#![cfg(feature = "dpdk")]

use media_plane::dpdk::{DpdkPort, DpdkSettings};
use media_plane::{Leg, MediaConfig, MediaPlane, PinholeId, PinholeOp, PinholeSpec, Side};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

mod netns;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn spec(session: u64, access: &str, ue: &str, core: &str, peer: &str) -> PinholeSpec {
    PinholeSpec {
        id: PinholeId { session, stream: 0 },
        access: Leg {
            local: sa(access),
            remote_rtp: Some(sa(ue)),
            remote_rtcp: None,
            latch_ip: None,
        },
        core: Leg {
            local: sa(core),
            remote_rtp: Some(sa(peer)),
            remote_rtcp: None,
            latch_ip: None,
        },
    }
}

fn settings() -> DpdkSettings {
    DpdkSettings {
        eal_args: [
            "-l",
            "0",
            "--no-huge",
            "-m",
            "256",
            "--no-pci",
            "--no-shconf",
            "--no-telemetry",
            "--log-level",
            "lib.eal:notice",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        access: DpdkPort {
            device: "net_af_packet0,iface=r0".into(),
            gateway: None,
        },
        core: DpdkPort {
            device: "net_af_packet1,iface=r1".into(),
            gateway: None,
        },
        idle_sleep_us: 50,
        mbufs: 2047,
        ..DpdkSettings::default()
    }
}

fn plane(addrs: [&str; 2], answer: bool, s: &DpdkSettings) -> Result<MediaPlane, String> {
    MediaPlane::start_dpdk(
        MediaConfig::default(),
        s,
        vec![
            (Side::Access, addrs[0].parse::<IpAddr>().unwrap()),
            (Side::Core, addrs[1].parse::<IpAddr>().unwrap()),
        ],
        answer,
        Box::new(|_| {}),
    )
    .map_err(|e| e.to_string())
}

/// Send `n` RTP packets from `from` to `to` (in the generator namespace,
/// socket made there) and count what `sink` receives within 2 s.
fn send_and_count(from: &UdpSocket, to: SocketAddr, sink: &UdpSocket, n: u16) -> usize {
    for i in 0..n {
        let mut p = [0u8; 172];
        p[0] = 0x80;
        p[2..4].copy_from_slice(&i.to_be_bytes());
        let _ = from.send_to(&p, to);
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut got = 0;
    let end = Instant::now() + Duration::from_secs(2);
    let mut b = [0u8; 512];
    sink.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while Instant::now() < end {
        if sink.recv_from(&mut b).is_ok() {
            got += 1;
            if got >= usize::from(n) {
                break;
            }
        }
    }
    got
}

#[test]
fn two_planes_share_one_eal_and_an_idle_plane_answers_only_after_announcing() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root for network namespaces");
        return;
    }
    // Both veth pairs, no addresses on the relay's ends (DPDK owns them).
    let net = netns::Net::up("dkm", false, &[]);
    let s = settings();
    let (a, b) = net.in_rel(|| {
        let a = plane(["198.18.0.41", "198.18.1.41"], true, &s).unwrap();
        let b = plane(["198.18.0.42", "198.18.1.42"], false, &s).unwrap();
        // One EAL per process: other settings are refused with the reason.
        let mut other = s.clone();
        other.burst = 16;
        let e = plane(["198.18.0.43", "198.18.1.43"], true, &other)
            .err()
            .unwrap_or_default();
        assert!(e.contains("EAL starts once per process"), "{e}");
        (a, b)
    });
    a.apply(&PinholeOp::Upsert(spec(
        1,
        "198.18.0.41:20000",
        "198.18.0.200:41000",
        "198.18.1.41:30000",
        "198.18.1.200:40000",
    )))
    .unwrap();
    b.apply(&PinholeOp::Upsert(spec(
        2,
        "198.18.0.42:20000",
        "198.18.0.200:41002",
        "198.18.1.42:30000",
        "198.18.1.200:40002",
    )))
    .unwrap();
    // A pinhole on an address the plane does not serve is refused.
    let e = a.apply(&PinholeOp::Upsert(spec(
        3,
        "198.18.0.99:20000",
        "198.18.0.200:41004",
        "198.18.1.41:30010",
        "198.18.1.200:40004",
    )));
    assert!(e.is_err(), "{e:?}");
    let (ue_a, sink_a, ue_b, sink_b) = net.in_gen(|| {
        (
            UdpSocket::bind("198.18.0.200:41000").unwrap(),
            UdpSocket::bind("198.18.1.200:40000").unwrap(),
            UdpSocket::bind("198.18.0.200:41002").unwrap(),
            UdpSocket::bind("198.18.1.200:40002").unwrap(),
        )
    });
    let got_a = send_and_count(&ue_a, sa("198.18.0.41:20000"), &sink_a, 50);
    assert!(
        got_a >= 45,
        "plane A relayed {got_a}/50: {:?}",
        a.counters()
    );
    // B is idle: nobody can resolve its address, nothing reaches it.
    let got_b = send_and_count(&ue_b, sa("198.18.0.42:20000"), &sink_b, 20);
    assert_eq!(got_b, 0, "idle plane B relayed: {:?}", b.counters());
    assert_eq!(b.counters().forwarded_packets, 0);
    assert_eq!(
        a.counters().forwarded_packets as usize,
        got_a,
        "A counts only its own"
    );
    // B takes over: GARPs go out (the generator's incomplete entry for
    // .42 is updated by them), B answers ARP from now on.
    let announced = b
        .announce(&[Duration::ZERO, Duration::from_millis(100)])
        .unwrap();
    assert_eq!(announced.len(), 2);
    std::thread::sleep(Duration::from_millis(300));
    let got_b = send_and_count(&ue_b, sa("198.18.0.42:20000"), &sink_b, 50);
    assert!(
        got_b >= 45,
        "plane B relayed {got_b}/50 after announcing: {:?}",
        b.counters()
    );
    // A packet to B's address on a port without a pinhole: B counts it.
    let _ = ue_b.send_to(&[0x80; 20], sa("198.18.0.42:21000"));
    let t = Instant::now();
    while b.counters().drops.unknown_port == 0 && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.counters().drops.unknown_port, 1, "{:?}", b.counters());
    assert_eq!(a.counters().drops.unknown_port, 0, "{:?}", a.counters());
    // A shut down: B keeps relaying on the shared poll loop.
    a.shutdown();
    let got_b = send_and_count(&ue_b, sa("198.18.0.42:20000"), &sink_b, 20);
    assert!(got_b >= 18, "plane B relayed {got_b}/20 after A stopped");
    let got_a = send_and_count(&ue_a, sa("198.18.0.41:20000"), &sink_a, 10);
    assert_eq!(got_a, 0, "a stopped plane relayed");
    b.shutdown();
}
