//! End-to-end takeover in network namespaces (root only).
//!
//! The "old" active owns the service addresses, sends heartbeats from its
//! management address and appends a real workload's inputs to an embedded
//! log store; the standby tails the log (hot replica) and runs a detector.
//! A peer sends a UDP probe to the service address every 5 ms and has a
//! neighbour entry pointing at the old MAC. The old active dies (heartbeat
//! task gone, link down); the standby detects it, fences, drains, claims the
//! addresses, binds the service port in the serve callback (a UDP echo that
//! marks the first message handled) and announces. The peer gets answers
//! from the standby; the timing breakdown is printed. Afterwards the old
//! active comes back with its stale epoch: its appends are refused and the
//! standby's heartbeats tell it it was fenced.

#[path = "../../sip-control/tests/common/mod.rs"]
mod common;
mod netns;

use common::*;
use media_plane::Side;
use netns::*;
use standby::announce::Schedule;
use standby::heartbeat::{Detector, HeartbeatEvent, HeartbeatRuntime, HeartbeatSender, LinkConfig};
use standby::netif::IfAddr;
use standby::replica::{HotReplica, Replica};
use standby::takeover::{take_over, Prepared, TakeoverPlan};
use state_log::embedded::EmbeddedStore;
use state_log::{Body, LogError, LogStore, Record};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"takeover-secret";

/// A few calls through a live core, logged to the store as the active would.
fn workload(store: &EmbeddedStore, rt: &tokio::runtime::Runtime) -> (Harness, u64) {
    let mut h = Harness::new();
    for n in 0..20u32 {
        let call = format!("c{n}");
        let out = h.recv(
            Side::Access,
            UE,
            &sipp_invite(&call, &format!("z9hG4bK-{n}"), UE, 6000 + 2 * n as u16),
        );
        let inv = out
            .iter()
            .find(|s| s.side == Side::Core)
            .unwrap()
            .msg
            .clone();
        h.recv(
            Side::Core,
            NEXT_HOP,
            &respond(
                &inv,
                200,
                "OK",
                Some(&format!("t{n}")),
                Some("sip:svc@198.18.2.20:5060"),
                Some(&sdp_of("198.18.2.20", 7000 + 2 * n as u16)),
            ),
        );
    }
    let recs: Vec<Record> = h
        .log
        .iter()
        .enumerate()
        .map(|(i, inp)| Record {
            seq: i as u64 + 1,
            epoch: 0,
            body: Body::Input(inp.clone()),
        })
        .collect();
    let n = recs.len() as u64;
    rt.block_on(store.append("bgf1", 0, &recs)).unwrap();
    (h, n)
}

#[test]
fn standby_takes_over_a_dead_active_and_the_peer_reaches_it() {
    if !root("standby_takes_over_a_dead_active_and_the_peer_reaches_it") {
        return;
    }
    let bed = Bed::new("sbT");
    let (peer, sb, old) = (bed.ns("peer"), bed.ns("sb"), bed.ns("old"));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let rt0 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (live, n_records) = workload(&store, &rt0);
    let live_state = rmp_serde::to_vec(live.core.state()).unwrap();
    let cfg = live.cfg.clone();

    // Heartbeats: the old active's sender from its namespace.
    let hb_rt = HeartbeatRuntime::start("hb-takeover").unwrap();
    let sb_hb: SocketAddr = format!("{SB4}:7500").parse().unwrap();
    let old_hb: SocketAddr = format!("{OLD_MGMT4}:7500").parse().unwrap();
    let h = hb_rt.handle().clone();
    let sender = in_ns(&old, move || {
        HeartbeatSender::spawn(&h, LinkConfig::active("bgf1", SECRET, old_hb, sb_hb), 0).unwrap()
    });

    // The peer: neighbour entry to the old MAC, then a 5 ms UDP prober to
    // the service address that records when answers start.
    assert!(sh(&peer, &format!("ping -c1 -W2 {SVC4}")).0);
    assert!(sh(&peer, &format!("ping -6 -c1 -W2 {SVC6}")).0);
    let prober = spawn_in_ns(&peer, || {
        let s = UdpSocket::bind(format!("{PEER4}:0")).unwrap();
        s.connect(format!("{SVC4}:5060")).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        let end = Instant::now() + Duration::from_secs(15);
        let mut buf = [0u8; 64];
        while Instant::now() < end {
            let _ = s.send(b"probe");
            if let Ok(n) = s.recv(&mut buf) {
                if &buf[..n] == b"sb:probe" {
                    return Some(Instant::now());
                }
            }
        }
        None
    });

    // The standby: hot replica + detector + takeover, all in its namespace.
    let h = hb_rt.handle().clone();
    let store2 = store.clone();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    let standby = spawn_in_ns(&sb, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let plan = TakeoverPlan {
                instance: "bgf1".into(),
                addresses: vec![
                    IfAddr {
                        ifname: "eth0".into(),
                        addr: SVC4.parse().unwrap(),
                        prefix_len: 24,
                    },
                    IfAddr {
                        ifname: "eth0".into(),
                        addr: SVC6.parse().unwrap(),
                        prefix_len: 64,
                    },
                ],
                schedule: Schedule::default(),
            };
            let prep = Prepared::new(plan).unwrap();
            let hot = HotReplica::spawn(store2.clone(), Replica::new(cfg).unwrap());
            assert_eq!(
                hot.wait_applied(n_records, Duration::from_secs(10)).await,
                n_records
            );
            let mut det =
                Detector::spawn(&h, LinkConfig::standby("bgf1", SECRET, sb_hb, old_hb), 0).unwrap();
            match tokio::time::timeout(Duration::from_secs(5), det.next_event()).await {
                Ok(Some(HeartbeatEvent::PeerUp { .. })) => {}
                other => panic!("expected PeerUp, got {other:?}"),
            }
            kill_tx.send(()).unwrap();
            let failure = match tokio::time::timeout(Duration::from_secs(5), det.next_event()).await
            {
                Ok(Some(HeartbeatEvent::PeerFailed(f))) => f,
                other => panic!("expected PeerFailed, got {other:?}"),
            };
            let replica = hot.stop().await.unwrap();
            let t = take_over(
                store2.as_ref(),
                replica,
                prep,
                failure.detected_at,
                "missed",
                |ctx| async move {
                    let sock = tokio::net::UdpSocket::bind(format!("{SVC4}:5060"))
                        .await
                        .map_err(|e| e.to_string())?;
                    let state = rmp_serde::to_vec(ctx.core.state()).unwrap();
                    let marks = ctx.marks.clone();
                    let echo = tokio::spawn(async move {
                        let mut buf = [0u8; 64];
                        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                            marks.sip_handled();
                            let mut r = b"sb:".to_vec();
                            r.extend_from_slice(&buf[..n]);
                            let _ = sock.send_to(&r, from).await;
                        }
                    });
                    Ok((state, ctx.epoch, ctx.next_seq, echo))
                },
            )
            .await
            .unwrap();
            det.set_epoch(t.serving.1);
            // Let answers flow, then collect the report.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let report = t.report();
            let (serving, burst) = t.announcements().await;
            (report, failure, serving.0, serving.1, serving.2, burst, det)
        })
    });

    kill_rx.recv().unwrap();
    let killed = Instant::now();
    drop(sender);
    ip(&format!("-n {old} link set eth0 down"));
    let (report, failure, replayed, epoch, next_seq, burst, mut det) = standby.join().unwrap();
    let answered = prober
        .join()
        .unwrap()
        .expect("the peer never reached the standby");

    println!(
        "takeover report: {}",
        serde_json::to_string(&report).unwrap()
    );
    println!(
        "kill → detected {:?}, kill → peer answered by the standby {:?}; announcement rounds {} ({:?})",
        failure.detected_at - killed,
        answered - killed,
        burst.rounds,
        burst.sent
    );
    assert_eq!(
        replayed, live_state,
        "the standby serves the live core's state"
    );
    assert_eq!(epoch, 1);
    assert_eq!(next_seq, n_records + 1);
    assert_eq!(report.applied_seq, n_records);
    assert_eq!(report.sessions, 20);
    assert!(report.fenced_us <= report.drained_us);
    assert!(report.drained_us <= report.addresses_up_us);
    assert!(report.addresses_up_us <= report.serving_us);
    assert!(report.serving_us <= report.first_announcement_us);
    assert!(report.first_sip_us.is_some(), "{report:?}");
    assert_eq!(burst.rounds, 6);
    assert_eq!(
        (burst.sent.arp, burst.sent.na, burst.sent.errors),
        (12, 6, 0)
    );
    assert!(answered - killed < Duration::from_secs(3));
    let sb_mac = bed.mac("sb");
    assert_eq!(bed.neigh(SVC6).map(|n| n.0), Some(sb_mac.clone()));
    assert_eq!(bed.neigh(SVC4).map(|n| n.0), Some(sb_mac));

    // The old active comes back: its appends are refused, and the standby's
    // heartbeats tell it it was fenced.
    let refused = rt0.block_on(store.append(
        "bgf1",
        0,
        &[Record {
            seq: n_records + 1,
            epoch: 0,
            body: Body::Checkpoint(vec![]),
        }],
    ));
    assert!(
        matches!(refused, Err(LogError::StaleEpoch { current: 1, .. })),
        "{refused:?}"
    );
    ip(&format!("-n {old} link set eth0 up"));
    let h = hb_rt.handle().clone();
    let mut zombie = in_ns(&old, move || {
        HeartbeatSender::spawn(&h, LinkConfig::active("bgf1", SECRET, old_hb, sb_hb), 0).unwrap()
    });
    let (fenced, stale) = rt0.block_on(async {
        let mut fenced = None;
        let mut stale = None;
        let end = Instant::now() + Duration::from_secs(5);
        while (fenced.is_none() || stale.is_none()) && Instant::now() < end {
            if let Some(e) = zombie.try_event() {
                if matches!(e, HeartbeatEvent::Fenced { .. }) {
                    fenced = Some(e);
                }
            }
            if let Some(e) = det.try_event() {
                if matches!(e, HeartbeatEvent::PeerStale { .. }) {
                    stale = Some(e);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (fenced, stale)
    });
    assert_eq!(fenced, Some(HeartbeatEvent::Fenced { own: 0, store: 1 }));
    assert_eq!(
        stale,
        Some(HeartbeatEvent::PeerStale {
            peer_epoch: 0,
            store_epoch: 1
        })
    );
}
