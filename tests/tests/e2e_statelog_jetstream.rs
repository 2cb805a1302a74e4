//! Faults of the store itself, end to end (issue 16): two `bgf active`, the
//! hot standby and a three-node NATS JetStream cluster (R3 streams, mutual
//! TLS) on loopback, calls from `bgf-callgen` through both actives. Then:
//!
//! 1. kill -9 the node leading active 1's stream while new calls arrive:
//!    the time to the first durable append of a record assigned after the
//!    kill is measured (printed for docs/PERFORMANCE.md); new calls go on
//!    (a 503 only while there is no quorum);
//! 2. that node comes back with an empty disk and catches up;
//! 3. the leader of active 2's stream is frozen (SIGSTOP: partitioned from
//!    its peers and clients) for a few seconds, then thawed;
//! 4. active 1 and the leader of its stream are killed together: the
//!    standby's takeover fences during a leader election and completes
//!    within its bound;
//! 5. every call survives (the in-dialog check through the standby and
//!    active 2), the fenced writer (active 1's credential, its old epoch)
//!    cannot append, and no record an active acknowledged is missing from
//!    its log.
//!
//! Needs `nats-server` (Debian package); no root (loopback cluster).

use bgf_tests::cluster::{self, pct, Cluster, ClusterNet, ClusterOptions, Uac};
use bgf_tests::proc::Proc;
use bgf_tests::util::{signal, wait_until};
use bgf_tests::TestDir;
use serde_json::Value;
use state_log::jetstream::{JetStreamConfig, JetStreamStore};
use state_log::{LogError, LogStore};
use std::time::{Duration, Instant};

const CALLS: u64 = 6;

fn stats(c: &Cluster, k: u8) -> Option<Value> {
    c.net
        .admin_get(&format!("a{k}"), c.net.active_mgmt(k), "/v1/stats")
}

fn statelog(c: &Cluster, k: u8) -> Option<Value> {
    stats(c, k).map(|v| v["statelog"].clone())
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

async fn store_as(c: &Cluster, cn: &str) -> JetStreamStore {
    let nats = c.nats.as_ref().unwrap();
    let mut cfg = JetStreamConfig::new(nats.urls(), nats.files(cn));
    cfg.request_timeout = Duration::from_secs(5);
    JetStreamStore::connect(cfg).await.unwrap()
}

/// A UAC of short calls through active `k` (new INVITEs while the store
/// misbehaves).
fn trickle(c: &Cluster, name: &str, k: u8, calls: u64) -> Proc {
    c.uac(&Uac {
        name: name.into(),
        k,
        v6: false,
        local_port: 5100 + u16::from(k),
        rtp: if k == 1 { "28000-28999" } else { "29000-29999" }.into(),
        uas: None,
        calls,
        rate: 4.0,
        hold_ms: 300,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// New calls during a store fault: refused with 503 (no quorum, the active
/// is degraded) or timed out while their answers were held — never another
/// failure — and the last calls, placed once the store has a leader again,
/// all succeed.
fn assert_new_calls_resume(r: &Value, uac: &Proc) {
    let calls = r["calls"].as_array().unwrap();
    for c in calls {
        if c["outcome"] != "ok" {
            let why = c["reason"].as_str().unwrap_or("");
            assert!(
                why.contains("503") || why.contains("timed out"),
                "a new call failed otherwise: {c}\n{}",
                uac.logs()
            );
        }
    }
    let tail = &calls[calls.len() - 5..];
    assert!(
        tail.iter().all(|c| c["outcome"] == "ok"),
        "new calls did not resume after the fault: {}\n{}",
        r["summary"],
        uac.logs()
    );
}

/// Every record an active acknowledged (its last durable seq as it
/// reported) is in its log, contiguous from its start.
fn assert_acked_in_log(c: &Cluster, instance: &str, acked: u64) {
    let rt = bgf_tests::logcheck::rt();
    let recs = rt.block_on(async {
        let s = store_as(c, "operator:ops").await;
        let mut out = Vec::new();
        let mut from = 1;
        loop {
            let batch = s.read(instance, from, 1024).await.unwrap();
            let Some(last) = batch.last() else { break };
            from = last.seq + 1;
            out.extend(batch);
        }
        out
    });
    let first = recs.first().map_or(0, |r| r.seq);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(
            r.seq,
            first + i as u64,
            "{instance}: records not contiguous"
        );
    }
    let last = recs.last().map_or(0, |r| r.seq);
    assert!(
        last >= acked,
        "{instance}: the active acknowledged up to {acked}, the log ends at {last}"
    );
    println!("JETSTREAM {instance}: log holds {first}..={last}, acknowledged up to {acked}: nothing lost");
}

#[test]
fn store_faults_lose_nothing_and_calls_carry_on() {
    if !state_log::natsproc::available() {
        eprintln!(
            "SKIPPED store_faults_lose_nothing_and_calls_carry_on: nats-server is not installed"
        );
        return;
    }
    let dir = TestDir::new("jetstream-faults");
    let o = ClusterOptions {
        a1_v6: false,
        jetstream: true,
        standby_extra: "fence_timeout_ms = 20000".into(),
        ..Default::default()
    };
    let mut c = Cluster::start(ClusterNet::loopback(), dir, &o).unwrap_or_else(|e| panic!("{e}"));
    let [_uas1, _uas2, mut uac1, mut uac2] = c
        .place_calls(CALLS, 10.0, 40_000, true, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("{e}"));

    // 1. The leader of bgf1's stream dies while new calls come in.
    let nats = c.nats.as_ref().unwrap();
    let leader = nats
        .leader_of("BGFLOG_bgf1")
        .expect("a leader for bgf1's stream");
    let mut t1 = trickle(&c, "trickle1", 1, 72);
    std::thread::sleep(Duration::from_millis(500));
    let assigned = n(&statelog(&c, 1).unwrap(), "next_seq");
    let t_kill = Instant::now();
    c.nats.as_mut().unwrap().kill(leader);
    let first_durable = wait_until(Duration::from_secs(30), || {
        let s = statelog(&c, 1)?;
        (n(&s, "durable_seq") >= assigned).then(|| t_kill.elapsed())
    });
    let first_durable = first_durable.unwrap_or_else(|| {
        panic!(
            "no durable append after the leader kill: {:?}\n{}",
            statelog(&c, 1),
            c.logs()
        )
    });
    println!(
        "JETSTREAM leader kill (node n{}): first durable append of a record assigned after the kill {:.0} ms after kill -9",
        leader + 1,
        first_durable.as_secs_f64() * 1000.0
    );
    let st = t1.wait_exit(Duration::from_secs(90));
    assert!(st.is_some(), "trickle did not finish");
    let (_, r1) = cluster::finish(&mut t1, &c.dir, Duration::from_secs(5)).unwrap();
    println!(
        "JETSTREAM new calls through the leader kill: {}",
        r1["summary"]
    );
    assert_new_calls_resume(&r1, &t1);

    // 2. Back with an empty disk: it catches up (R3 again).
    c.nats.as_mut().unwrap().restart_empty(leader).unwrap();
    c.nats
        .as_ref()
        .unwrap()
        .wait_ready(Duration::from_secs(30))
        .unwrap();

    // 3. Partition (freeze) the leader of bgf2's stream for 4 s.
    let l2 = c
        .nats
        .as_ref()
        .unwrap()
        .leader_of("BGFLOG_bgf2")
        .expect("leader of bgf2");
    let mut t2 = trickle(&c, "trickle2", 2, 72);
    std::thread::sleep(Duration::from_millis(300));
    c.nats.as_mut().unwrap().freeze(l2);
    // Longer than the followers' election timeout: they elect a new
    // leader while the old one is cut off; it returns as a follower.
    std::thread::sleep(Duration::from_secs(10));
    c.nats.as_mut().unwrap().thaw(l2);
    t2.wait_exit(Duration::from_secs(90));
    let (_, r2) = cluster::finish(&mut t2, &c.dir, Duration::from_secs(5)).unwrap();
    println!(
        "JETSTREAM new calls through a partitioned (frozen) leader: {}",
        r2["summary"]
    );
    assert_new_calls_resume(&r2, &t2);

    // 4. Takeover during a leader change: active 1 and its stream's leader
    //    die together.
    let acked1 = n(&statelog(&c, 1).unwrap(), "durable_seq");
    let epoch1 = n(&statelog(&c, 1).unwrap(), "epoch");
    let leader = c
        .nats
        .as_ref()
        .unwrap()
        .leader_of("BGFLOG_bgf1")
        .expect("leader");
    let t_fail = Instant::now();
    signal(c.actives[0].pid(), libc::SIGKILL);
    c.nats.as_mut().unwrap().kill(leader);
    let v = c
        .wait_serving(1, Duration::from_secs(40))
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "JETSTREAM takeover during a leader election: serving {:.0} ms after the kills; report {}",
        t_fail.elapsed().as_secs_f64() * 1000.0,
        v["last_takeover"]
    );
    c.nats.as_mut().unwrap().restart(leader).unwrap();
    c.nats
        .as_ref()
        .unwrap()
        .wait_ready(Duration::from_secs(30))
        .unwrap();
    // The in-dialog check's re-INVITE answers are held until durable: check
    // once the store has its leaders back (active 2 caught up).
    wait_until(Duration::from_secs(30), || {
        let s = statelog(&c, 2)?;
        (s["degraded"] == false && n(&s, "lag") == 0).then_some(())
    })
    .unwrap_or_else(|| panic!("active 2 never caught up: {:?}", statelog(&c, 2)));

    // 5. The calls survive, through the standby and through active 2.
    signal(uac1.pid(), libc::SIGUSR1);
    signal(uac2.pid(), libc::SIGUSR1);
    let (code1, r1) = cluster::finish(&mut uac1, &c.dir, Duration::from_secs(90)).unwrap();
    let (code2, r2) = cluster::finish(&mut uac2, &c.dir, Duration::from_secs(90)).unwrap();
    for (what, code, r, uac) in [
        ("via bgf1 (taken over)", code1, &r1, &uac1),
        ("via bgf2", code2, &r2, &uac2),
    ] {
        let s = &r["summary"];
        println!(
            "{}",
            cluster::gaps_line(&format!("JetStream faults, {what}"), &cluster::gaps(r))
        );
        assert_eq!(s["lost"].as_u64(), Some(0), "{what}: {s}\n{}", uac.logs());
        assert_eq!(s["ok"].as_u64(), Some(CALLS), "{what}: {s}\n{}", uac.logs());
        assert_eq!(code, Some(0), "{what}\n{}", uac.logs());
        let bound = if what.starts_with("via bgf2") {
            1_500.0
        } else {
            15_000.0
        };
        assert!(
            pct(&cluster::gaps(r), 100.0) < bound,
            "{what}: media stalled {:?}",
            cluster::gaps(r)
        );
    }

    // The fenced writer cannot append.
    let rt = bgf_tests::logcheck::rt();
    let r = rt.block_on(async {
        let a1 = store_as(&c, "active:bgf1").await;
        let next = a1.last_seq("bgf1").await.unwrap() + 1;
        a1.append(
            "bgf1",
            epoch1,
            &[state_log::testkit::rec("bgf1", next, epoch1)],
        )
        .await
    });
    assert!(matches!(r, Err(LogError::StaleEpoch { .. })), "{r:?}");

    // Nothing acknowledged is missing.
    assert_acked_in_log(&c, "bgf1", acked1);
    let acked2 = n(&statelog(&c, 2).unwrap(), "durable_seq");
    assert_acked_in_log(&c, "bgf2", acked2);
}
