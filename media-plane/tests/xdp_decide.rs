//! The XDP program against the relay's own decision and rewrite, packet by
//! packet: seeded random packets (valid, mutated and garbage RTP/RTCP, from
//! the accepted remote, the negotiated one, a latch IP, strangers; IPv4 and
//! IPv6, with and without an IPv4 UDP checksum) are run through the loaded
//! program with `BPF_PROG_TEST_RUN` and through `forward::decide` +
//! `packet::relay_rewrite`. Every drop must be a drop for the same reason,
//! every latch an upcall, every forward the same bytes out.
//!
//! Root; `XDP_DIFF_SEED=N` replays a seed, `XDP_DIFF_CASES=N` sets the count.
//! Run: `BGF_NETNS_TAG=w17 cargo test -p media-plane --test xdp_decide`.

mod netns;

use media_plane::forward::{decide, Arrival, LatchPending, PortKind, Reason, Verdict};
use media_plane::packet::{build_udp, parse_udp, relay_rewrite};
use media_plane::xdp::{XdpAddr, XdpMode, XdpSettings};
use media_plane::{
    Leg, MediaConfig, MediaEvent, MediaPlane, PinholeId, PinholeOp, PinholeSpec, Side,
};
use netns::Net;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::time::Duration;

const XDP_DROP: u32 = 1;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// xorshift64*: small, seeded, replayable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn leg(local: &str, rtp: Option<&str>, rtcp: Option<&str>, latch: Option<&str>) -> Leg {
    Leg {
        local: sa(local),
        remote_rtp: rtp.map(sa),
        remote_rtcp: rtcp.map(sa),
        latch_ip: latch.map(|i| i.parse().unwrap()),
    }
}

fn specs() -> Vec<PinholeSpec> {
    let id = |session| PinholeId { session, stream: 0 };
    vec![
        PinholeSpec {
            id: id(1),
            access: leg(
                "198.18.0.1:20000",
                Some("198.18.0.200:4000"),
                Some("198.18.0.200:4001"),
                None,
            ),
            core: leg(
                "198.18.1.1:30000",
                Some("198.18.1.200:5000"),
                Some("198.18.1.200:5001"),
                None,
            ),
        },
        PinholeSpec {
            id: id(2),
            access: leg("[fd00:a::1]:20002", Some("[fd00:a::200]:4002"), None, None),
            core: leg(
                "198.18.1.1:30002",
                Some("198.18.1.200:5002"),
                Some("198.18.1.200:5003"),
                None,
            ),
        },
        PinholeSpec {
            id: id(3),
            access: leg(
                "198.18.0.1:20004",
                Some("198.18.0.200:9998"),
                None,
                Some("198.18.0.200"),
            ),
            core: leg("198.18.1.1:30004", Some("198.18.1.200:5004"), None, None),
        },
        PinholeSpec {
            id: id(4),
            access: leg("198.18.0.1:20006", Some("198.18.0.200:4006"), None, None),
            core: leg("198.18.1.1:30006", None, None, None),
        },
        PinholeSpec {
            id: id(5),
            access: leg("[fd00:a::1]:20008", Some("[fd00:a::200]:4008"), None, None),
            core: leg("198.18.1.1:30008", Some("[fd00:c::200]:5008"), None, None),
        },
    ]
}

fn payload(r: &mut Rng) -> Vec<u8> {
    let len = r.below(200) as usize;
    let mut p: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
    match r.below(5) {
        // Plain valid RTP (PT 8), sometimes with one header byte changed.
        0..=2 if len >= 12 => {
            p[0] = 0x80;
            p[1] = 8;
            if r.below(3) == 0 {
                let i = r.below(4) as usize;
                p[i] = r.next() as u8;
            }
        }
        // RTCP-looking, the length field sometimes right.
        3 if len >= 8 => {
            p[0] = 0x80 | (p[0] & 0x1f);
            p[1] = 192 + r.below(40) as u8;
            let words = if r.below(2) == 0 {
                (len / 4 - 1) as u16
            } else {
                r.next() as u16 % 64
            };
            p[2..4].copy_from_slice(&words.to_be_bytes());
        }
        _ => {}
    }
    p
}

#[test]
fn the_program_decides_and_rewrites_as_the_relay_does() {
    if !netns::xdp_can_run("the_program_decides_and_rewrites_as_the_relay_does") {
        return;
    }
    let net = Net::up(
        "xdiff",
        true,
        &[
            ("r0", "198.18.0.1/24"),
            ("r0", "fd00:a::1/64"),
            ("r1", "198.18.1.1/24"),
            ("r1", "fd00:c::1/64"),
        ],
    );
    let (g0, g1) = (netns::mac(&net.gen, "g0"), netns::mac(&net.gen, "g1"));
    let (r0, r1) = (netns::mac(&net.rel, "r0"), netns::mac(&net.rel, "r1"));
    let hex = |m: [u8; 6]| m.map(|b| format!("{b:02x}")).join(":");
    for (ip, m, dev) in [
        ("198.18.0.200", g0, "r0"),
        ("fd00:a::200", g0, "r0"),
        ("198.18.1.200", g1, "r1"),
        ("fd00:c::200", g1, "r1"),
    ] {
        netns::sh(&[
            "ip",
            "-n",
            &net.rel,
            "neigh",
            "replace",
            ip,
            "lladdr",
            &hex(m),
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
    }
    let (tx, events) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let settings = XdpSettings {
        access_interface: "r0".into(),
        core_interface: "r1".into(),
        mode: XdpMode::Native,
        max_pinholes: 64,
        upcall_ring_kib: 256,
    };
    let addr = |side, ip: &str, lo, hi| XdpAddr {
        side,
        ip: ip.parse().unwrap(),
        port_min: lo,
        port_max: hi,
    };
    let (plane, ifx) = net.in_rel(|| {
        let p = MediaPlane::start_xdp(
            MediaConfig::default(),
            &settings,
            vec![
                addr(Side::Access, "198.18.0.1", 20000, 29999),
                addr(Side::Access, "fd00:a::1", 20000, 29999),
                addr(Side::Core, "198.18.1.1", 30000, 39999),
            ],
            true,
            Box::new(move |e| {
                let _ = tx.lock().unwrap().send(e);
            }),
        )
        .unwrap();
        let ifx: Vec<u32> = p.xdp_attached().iter().map(|a| a.ifindex).collect();
        (p, ifx)
    });
    let all = specs();
    for s in &all {
        plane.apply(&PinholeOp::Upsert(s.clone())).unwrap();
    }
    let seed: u64 = std::env::var("XDP_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_0017);
    let cases: u32 = std::env::var("XDP_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let mut r = Rng(seed | 1);
    let (mut drops, mut forwards, mut latches) = (0, 0, 0);
    for case in 0..cases {
        let ctx = format!("seed {seed} case {case}");
        let spec = &all[r.below(all.len() as u64) as usize];
        let side = if r.below(2) == 0 {
            Side::Access
        } else {
            Side::Core
        };
        let kind = if r.below(3) == 0 {
            PortKind::Rtcp
        } else {
            PortKind::Rtp
        };
        let leg = spec.leg(side);
        let mut dst = if kind == PortKind::Rtp {
            leg.local
        } else {
            leg.local_rtcp()
        };
        let unknown = r.below(12) == 0;
        if unknown {
            dst.set_port(dst.port() + 1000);
        }
        let v4 = dst.is_ipv4();
        let peer_ip: IpAddr = match (side, v4) {
            (Side::Access, true) => "198.18.0.200".parse().unwrap(),
            (Side::Access, false) => "fd00:a::200".parse().unwrap(),
            (Side::Core, true) => "198.18.1.200".parse().unwrap(),
            (Side::Core, false) => "fd00:c::200".parse().unwrap(),
        };
        let expected = if kind == PortKind::Rtp {
            leg.remote_rtp
        } else {
            leg.remote_rtcp
        };
        let src = match r.below(7) {
            0..=2 => expected
                .filter(|e| e.is_ipv4() == v4)
                .unwrap_or(SocketAddr::new(peer_ip, 4000)),
            3 | 4 => SocketAddr::new(peer_ip, 6000 + r.below(100) as u16),
            5 => SocketAddr::new(peer_ip, 9998),
            _ => {
                let other: IpAddr = if v4 {
                    "198.18.0.99".parse().unwrap()
                } else {
                    "fd00:a::99".parse().unwrap()
                };
                SocketAddr::new(other, 4000)
            }
        };
        let p = payload(&mut r);
        let mut ip = vec![0u8; 2048];
        let n = build_udp(&mut ip, src, dst, &p).unwrap();
        ip.truncate(n);
        if v4 && r.below(3) == 0 {
            ip[26] = 0; // no UDP checksum (IPv4 allows it)
            ip[27] = 0;
        }
        let (in_mac, gen_mac, ifindex) = match side {
            Side::Access => (r0, g0, ifx[0]),
            Side::Core => (r1, g1, ifx[1]),
        };
        let mut frame = Vec::with_capacity(14 + ip.len());
        frame.extend_from_slice(&in_mac);
        frame.extend_from_slice(&gen_mac);
        frame.extend_from_slice(&(if v4 { 0x0800u16 } else { 0x86dd }).to_be_bytes());
        frame.extend_from_slice(&ip);

        let verdict = if unknown {
            Verdict::Drop(Reason::UnknownPort)
        } else {
            decide(
                spec,
                LatchPending::from_spec(spec),
                &Arrival { side, kind, src },
                &p,
            )
        };
        let before = plane.xdp_totals().unwrap();
        let (act, out) = net.in_rel(|| plane.xdp_test_run(&frame, ifindex).unwrap().unwrap());
        let after = plane.xdp_totals().unwrap();
        match verdict {
            Verdict::Drop(reason) => {
                assert_eq!(
                    act, XDP_DROP,
                    "{ctx}: {reason} expected, program said {act}"
                );
                assert_eq!(
                    after.drops[reason.index()],
                    before.drops[reason.index()] + 1,
                    "{ctx}: dropped for {reason}? before {before:?} after {after:?}; packet {src} → {dst} {:02x?}",
                    p
                );
                drops += 1;
            }
            Verdict::Forward {
                latched: Some(_), ..
            } => {
                assert_eq!(act, XDP_DROP, "{ctx}: a latch goes up");
                assert_eq!(after.upcalls, before.upcalls + 1, "{ctx}: upcall");
                // User space latches it; put the pinhole back as it was.
                match events.recv_timeout(Duration::from_secs(5)) {
                    Ok(MediaEvent::Latched { .. }) => {}
                    e => panic!("{ctx}: expected the latch event, got {e:?}"),
                }
                std::thread::sleep(Duration::from_millis(20));
                plane.apply(&PinholeOp::Upsert(spec.clone())).unwrap();
                latches += 1;
            }
            Verdict::Forward {
                latched: None,
                from,
                to,
            } => {
                assert!(
                    act == XDP_TX || act == XDP_REDIRECT,
                    "{ctx}: forward expected, program said {act}"
                );
                let mut b = ip.clone();
                let view = parse_udp(&b).unwrap();
                let mut built = vec![0u8; 2048];
                let want = match relay_rewrite(&mut b, &view, from, to, &mut built).unwrap() {
                    None => b,
                    Some(n) => built[..n].to_vec(),
                };
                assert_eq!(&out[14..], &want[..], "{ctx}: bytes out ({from} → {to})");
                let (out_mac, peer_mac) = if to.ip() == "198.18.0.200".parse::<IpAddr>().unwrap()
                    || to.ip() == "fd00:a::200".parse::<IpAddr>().unwrap()
                {
                    (r0, g0)
                } else {
                    (r1, g1)
                };
                assert_eq!(
                    (&out[0..6], &out[6..12]),
                    (&peer_mac[..], &out_mac[..]),
                    "{ctx}: Ethernet"
                );
                forwards += 1;
            }
        }
    }
    println!("xdp_decide: {cases} packets, seed {seed}: {drops} drops, {forwards} forwards, {latches} latches agree");
    assert!(
        drops > 50 && forwards > 50 && latches > 3,
        "the cases cover every outcome"
    );
}
