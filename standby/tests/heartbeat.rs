//! Heartbeat links on loopback: failure detection time (sender gone → port
//! unreachable; sender silent → misses), no false detection beside CPU hogs,
//! fencing news both ways, and bad/forged/old packets counted, never
//! accepted.

use standby::heartbeat::{
    Detector, FailureReason, Heartbeat, HeartbeatEvent, HeartbeatRuntime, HeartbeatSender, Key,
    Link, LinkConfig, Role,
};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"hb-test-secret";

/// A port below the ephemeral range (so no `bind(0)` elsewhere takes it
/// between our choosing and binding it), distinct per process and call.
fn free_port() -> SocketAddr {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 500) as u16 * 20;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 10_000;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return SocketAddr::from(([127, 0, 0, 1], port));
        }
    }
}

/// The timing tests do not overlap each other (the hog would skew the
/// detection figures).
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn event(link: &mut Link, within: Duration) -> Option<HeartbeatEvent> {
    tokio::time::timeout(within, link.next_event())
        .await
        .ok()
        .flatten()
}

async fn up(link: &mut Link) {
    match event(link, Duration::from_secs(5)).await {
        Some(HeartbeatEvent::PeerUp { .. }) => {}
        other => panic!("expected PeerUp, got {other:?}"),
    }
}

fn pct(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    v[(v.len() - 1) * p / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_sender_is_detected_by_port_unreachable_and_a_silent_one_by_misses() {
    let _g = TIMING.lock().await;
    let rt = HeartbeatRuntime::start("hb-test").unwrap();
    // --- Sender process gone: its socket closes, our probe draws ICMP port
    // unreachable → ECONNREFUSED, confirmed by one more probe.
    let mut fast = Vec::new();
    for _ in 0..10 {
        let (sb, ac) = (free_port(), free_port());
        let mut det =
            Detector::spawn(rt.handle(), LinkConfig::standby("bgf1", SECRET, sb, ac), 0).unwrap();
        let sender =
            HeartbeatSender::spawn(rt.handle(), LinkConfig::active("bgf1", SECRET, ac, sb), 0)
                .unwrap();
        up(&mut det).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        let killed = Instant::now();
        drop(sender);
        match event(&mut det, Duration::from_secs(5)).await {
            Some(HeartbeatEvent::PeerFailed(f)) => {
                assert_eq!(f.reason, FailureReason::PortUnreachable, "{f:?}");
                fast.push(f.detected_at.saturating_duration_since(killed));
            }
            other => panic!("expected PeerFailed, got {other:?}"),
        }
    }
    // --- Sender frozen / cut off: its socket stays, nothing arrives → misses.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let sb = free_port();
        let active = UdpSocket::bind("127.0.0.1:0").unwrap();
        active.connect(sb).unwrap();
        let ac = active.local_addr().unwrap();
        let mut det =
            Detector::spawn(rt.handle(), LinkConfig::standby("bgf1", SECRET, sb, ac), 0).unwrap();
        let key = Key::new(SECRET);
        let mut last_sent = Instant::now();
        for seq in 1..=4u64 {
            let hb = Heartbeat {
                role: Role::Active,
                instance: "bgf1".into(),
                incarnation: 7,
                seq,
                epoch: 0,
                log_seq: seq * 10,
                echo_seq: 0,
                echo_hold_us: 0,
            };
            active.send(&hb.encode(&key)).unwrap();
            last_sent = Instant::now();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        up(&mut det).await;
        match event(&mut det, Duration::from_secs(5)).await {
            Some(HeartbeatEvent::PeerFailed(f)) => {
                assert_eq!(f.reason, FailureReason::Missed);
                assert_eq!(f.peer_log_seq, 40, "last log seq reported");
                // Measured from the last heartbeat sent (3 intervals = 150 ms).
                slow.push(f.detected_at.saturating_duration_since(last_sent));
            }
            other => panic!("expected PeerFailed, got {other:?}"),
        }
        drop(active);
    }
    let (f50, fmax) = (pct(&mut fast, 50), pct(&mut fast, 100));
    let (s50, smax) = (pct(&mut slow, 50), pct(&mut slow, 100));
    println!(
        "detection at 50 ms × 3: process gone (port unreachable) p50 {f50:?} max {fmax:?}; silent (misses, from the last heartbeat) p50 {s50:?} max {smax:?}"
    );
    // Generous bounds: the fast path must beat the miss path by far.
    assert!(fmax < Duration::from_millis(100), "fast path {fast:?}");
    assert!(smax < Duration::from_millis(700), "miss path {slow:?}");
    assert!(
        slow.iter().all(|d| *d >= Duration::from_millis(145)),
        "misses declared before 3 intervals: {slow:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_false_detection_beside_cpu_hogs() {
    let _g = TIMING.lock().await;
    let rt = HeartbeatRuntime::start("hb-hog").unwrap();
    let mut links = Vec::new();
    for i in 0..4 {
        let (sb, ac) = (free_port(), free_port());
        let id = format!("bgf{i}");
        let mut det =
            Detector::spawn(rt.handle(), LinkConfig::standby(&id, SECRET, sb, ac), 0).unwrap();
        let snd = HeartbeatSender::spawn(rt.handle(), LinkConfig::active(&id, SECRET, ac, sb), 0)
            .unwrap();
        up(&mut det).await;
        let mut snd = snd;
        up(&mut snd).await;
        links.push((det, snd));
    }
    // 8 busy loops on 2 cores for 4 s (bounded).
    let stop_at = Instant::now() + Duration::from_secs(4);
    let hogs: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut x = 0u64;
                while Instant::now() < stop_at {
                    for _ in 0..10_000 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    for h in hogs {
        tokio::task::spawn_blocking(move || h.join().unwrap())
            .await
            .unwrap();
    }
    for (det, snd) in &mut links {
        assert_eq!(
            det.try_event(),
            None,
            "false detection under load: {:?}",
            det.status()
        );
        assert_eq!(
            snd.try_event(),
            None,
            "sender saw a false failure: {:?}",
            snd.status()
        );
        let s = det.stats();
        assert!(s.received > 40, "{s:?}");
        assert_eq!(s.failures, 0);
    }
    println!(
        "under 8 CPU hogs for 4 s: {} links, received per link {:?}",
        links.len(),
        links
            .iter()
            .map(|(d, _)| d.stats().received)
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_active_learns_it_from_the_standby_heartbeats() {
    let rt = HeartbeatRuntime::start("hb-fence").unwrap();
    let (sb, ac) = (free_port(), free_port());
    let mut det =
        Detector::spawn(rt.handle(), LinkConfig::standby("bgf1", SECRET, sb, ac), 2).unwrap();
    let mut snd =
        HeartbeatSender::spawn(rt.handle(), LinkConfig::active("bgf1", SECRET, ac, sb), 2).unwrap();
    snd.set_log_seq(99);
    up(&mut det).await;
    up(&mut snd).await;
    // The standby fences (epoch 2 → 3) and says so in its heartbeats.
    det.set_epoch(3);
    match event(&mut snd, Duration::from_secs(2)).await {
        Some(HeartbeatEvent::Fenced { own: 2, store: 3 }) => {}
        other => panic!("expected Fenced, got {other:?}"),
    }
    match event(&mut det, Duration::from_secs(2)).await {
        Some(HeartbeatEvent::PeerStale {
            peer_epoch: 2,
            store_epoch: 3,
        }) => {}
        other => panic!("expected PeerStale, got {other:?}"),
    }
    assert_eq!(det.status().peer_log_seq, 99);
    // Reported once, not on every packet.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(snd.try_event(), None);
    assert_eq!(det.try_event(), None);
    // Both ends measure the round trip from each other's echoes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while (det.rtt().samples < 3 || snd.rtt().samples < 3) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (end, link) in [("standby", &det), ("active", &snd)] {
        let st = link.status();
        let r = &st.rtt;
        assert!(r.samples >= 3, "{end}: {r:?}");
        let srtt = r.srtt_us.unwrap();
        assert!(srtt > 0 && srtt < 1_000_000, "{end}: srtt {srtt} µs");
        let (min, max) = (r.min_us.unwrap(), r.max_us.unwrap());
        assert!(min > 0 && min <= max && max < 1_000_000, "{end}: {r:?}");
        assert_eq!(*r.cumulative.last().unwrap(), r.samples, "{end}: {r:?}");
        assert_eq!(
            (
                st.stats.echo_unknown,
                st.stats.echo_bad_hold,
                st.stats.old_version
            ),
            (0, 0, 0),
            "{end}: {:?}",
            st.stats
        );
        println!("{end}: heartbeat RTT over loopback {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_forged_and_old_packets_are_counted_and_refused() {
    let rt = HeartbeatRuntime::start("hb-bad").unwrap();
    let sb = free_port();
    let active = UdpSocket::bind("127.0.0.1:0").unwrap();
    active.connect(sb).unwrap();
    let ac = active.local_addr().unwrap();
    let mut det =
        Detector::spawn(rt.handle(), LinkConfig::standby("bgf1", SECRET, sb, ac), 0).unwrap();
    let hb = |seq, instance: &str, role| Heartbeat {
        role,
        instance: instance.into(),
        incarnation: 5,
        seq,
        epoch: 0,
        log_seq: 0,
        echo_seq: 0,
        echo_hold_us: 0,
    };
    let good = Key::new(SECRET);
    active.send(b"hello").unwrap(); // malformed
    active.send(&[0u8; 200]).unwrap(); // malformed (too long)
    active
        .send(&hb(1, "bgf1", Role::Active).encode(&Key::new(b"wrong")))
        .unwrap(); // forged: wrong key
    active
        .send(&hb(1, "bgf2", Role::Active).encode(&good))
        .unwrap(); // forged: other instance
    active
        .send(&hb(1, "bgf1", Role::Standby).encode(&good))
        .unwrap(); // forged: reflected role
    active
        .send(&hb(2, "bgf1", Role::Active).encode(&good))
        .unwrap(); // good
    active
        .send(&hb(2, "bgf1", Role::Active).encode(&good))
        .unwrap(); // old: replay
    active
        .send(&hb(1, "bgf1", Role::Active).encode(&good))
        .unwrap(); // old: reordered
                   // The previous wire format (version 1, no echo), correctly signed.
    let mut v1 = b"BGFH".to_vec();
    v1.extend_from_slice(&[1, 1, 0, 4]);
    v1.extend_from_slice(b"bgf1");
    for v in [5u64, 3, 0, 0] {
        v1.extend_from_slice(&v.to_be_bytes());
    }
    let mac = good.hmac(&v1);
    v1.extend_from_slice(&mac[..16]);
    active.send(&v1).unwrap(); // old_version
    up(&mut det).await;
    // Echoes: a seq the standby never sent, and a real one with an absurd
    // hold. Both packets are accepted; the echoes are ignored and counted.
    let mut buf = [0u8; 256];
    active
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = active.recv(&mut buf).unwrap();
    let theirs = Heartbeat::decode(&buf[..n], &good).unwrap();
    let mut unknown = hb(3, "bgf1", Role::Active);
    unknown.echo_seq = theirs.seq + 1_000_000;
    active.send(&unknown.encode(&good)).unwrap();
    let mut absurd = hb(4, "bgf1", Role::Active);
    absurd.echo_seq = theirs.seq;
    absurd.echo_hold_us = u32::MAX;
    active.send(&absurd.encode(&good)).unwrap();
    let mut s = det.stats();
    for _ in 0..200 {
        s = det.stats();
        if s.old == 2 && s.received == 3 && s.old_version == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(s.received, 3, "{s:?}");
    assert_eq!(s.malformed, 2, "{s:?}");
    assert_eq!(s.forged, 3, "{s:?}");
    assert_eq!(s.old, 2, "{s:?}");
    assert_eq!(s.old_version, 1, "{s:?}");
    assert_eq!((s.echo_unknown, s.echo_bad_hold), (1, 1), "{s:?}");
    assert_eq!(det.rtt().samples, 0, "bad echoes give no RTT sample");
}
