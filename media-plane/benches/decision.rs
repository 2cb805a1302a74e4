//! Micro-benchmarks of the per-packet code every backend shares: the pure
//! decision, the full table lookup + decision + counters path, and the raw
//! packet rewrite (same family in place, IPv6→IPv4 rebuild).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use media_plane::forward::{decide, Arrival, LatchPending, PortKind};
use media_plane::packet::{build_udp, parse_udp, relay_rewrite, rewrite_in_place};
use media_plane::table::{local_addrs, Outcome, Relay};
use media_plane::{Leg, PinholeId, PinholeSpec, Side};
use std::net::SocketAddr;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn spec(i: u16) -> PinholeSpec {
    PinholeSpec {
        id: PinholeId {
            session: u64::from(i),
            stream: 0,
        },
        access: Leg {
            local: SocketAddr::new("2001:db8::1".parse().unwrap(), 20000 + 2 * i),
            remote_rtp: Some(sa("[2001:db8::99]:4000")),
            remote_rtcp: Some(sa("[2001:db8::99]:4001")),
            latch_ip: None,
        },
        core: Leg {
            local: SocketAddr::new("10.0.0.1".parse().unwrap(), 20000 + 2 * i),
            remote_rtp: Some(sa("10.0.0.9:5000")),
            remote_rtcp: Some(sa("10.0.0.9:5001")),
            latch_ip: None,
        },
    }
}

fn rtp() -> Vec<u8> {
    let mut p = vec![0x80, 8, 0, 1, 0, 0, 0, 1, 0, 0, 0, 42];
    p.extend_from_slice(&[0xd5; 160]);
    p
}

fn benches(c: &mut Criterion) {
    let s = spec(0);
    let p = LatchPending::from_spec(&s);
    let pkt = rtp();
    let arr = Arrival {
        side: Side::Access,
        kind: PortKind::Rtp,
        src: sa("[2001:db8::99]:4000"),
    };
    c.bench_function("decide_rtp", |b| {
        b.iter(|| decide(black_box(&s), p, black_box(&arr), black_box(&pkt)))
    });

    // Table with 10 000 pinholes; lookup + decide + counters + activity.
    let relay: Relay<()> = Relay::new(1, Box::new(|_| {}));
    let phs: Vec<_> = (0..10_000u16)
        .map(|i| {
            let s = spec(i);
            let ph = std::sync::Arc::new(media_plane::table::Pinhole::without_io(s.clone()));
            for (side, kind, a) in local_addrs(&s) {
                relay.table.bind(a, side, kind, ph.clone());
            }
            ph
        })
        .collect();
    let local = phs[4321].entry().spec.access.local;
    c.bench_function("relay_process_10k_table", |b| {
        b.iter(|| {
            relay.process(0, black_box(local), arr.src, black_box(&pkt), 1, |o| {
                matches!(o, Outcome::Forward { .. })
            })
        })
    });

    let mut buf = [0u8; 400];
    let n = build_udp(&mut buf, sa("10.0.0.9:5000"), sa("10.0.0.1:20000"), &pkt).unwrap();
    let v = parse_udp(&buf[..n]).unwrap();
    c.bench_function("parse_rewrite_v4_in_place", |b| {
        b.iter(|| {
            let v = parse_udp(black_box(&buf[..n])).unwrap();
            rewrite_in_place(&mut buf[..n], &v, sa("10.0.0.2:30000"), sa("10.0.0.7:6000")).unwrap();
        })
    });
    let _ = v;
    let mut b6 = [0u8; 400];
    let n6 = build_udp(
        &mut b6,
        sa("[2001:db8::99]:4000"),
        sa("[2001:db8::1]:20000"),
        &pkt,
    )
    .unwrap();
    let mut out = [0u8; 400];
    c.bench_function("parse_translate_v6_to_v4", |b| {
        b.iter(|| {
            let v = parse_udp(black_box(&b6[..n6])).unwrap();
            relay_rewrite(
                &mut b6[..n6],
                &v,
                sa("10.0.0.1:20000"),
                sa("10.0.0.9:5000"),
                &mut out,
            )
            .unwrap()
        })
    });
}

criterion_group!(g, benches);
criterion_main!(g);
