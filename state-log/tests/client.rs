//! The DAL-style client over the real embedded store: streaming replay to
//! the end seen at its start, a live tail woken by concurrent appends, the
//! truncated-log rule (a log may start at a checkpoint, never elsewhere) and
//! the replayer's order check.

use sip_control::{Core, CoreConfig};
use state_log::embedded::EmbeddedStore;
use state_log::{testkit, Body, LogClient, LogError, LogStore, Record, ReplayError, Replayer};
use std::sync::Arc;
use std::time::Duration;

fn cfg(instance: &str) -> CoreConfig {
    let mut c = CoreConfig::example(
        "198.18.0.1".parse().unwrap(),
        "198.18.1.1".parse().unwrap(),
        "198.18.1.2:5060".parse().unwrap(),
    );
    c.instance = instance.into();
    c
}

fn store() -> (tempfile::TempDir, Arc<dyn LogStore>) {
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<dyn LogStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    (dir, s)
}

fn checkpoint(seq: u64) -> Record {
    let core = Core::new(cfg("cl")).unwrap();
    Record {
        seq,
        epoch: 0,
        body: Body::Checkpoint(rmp_serde::to_vec(core.state()).unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_streams_to_the_end_seen_at_its_start() {
    let (_d, s) = store();
    let recs: Vec<_> = (1..=2500).map(|q| testkit::rec("r1", q, 0)).collect();
    s.append("r1", 0, &recs).await.unwrap();
    let client = LogClient::new(s.clone());
    let mut replay = client.replay("r1", 1).await.unwrap();
    assert_eq!(replay.end(), 2500);
    // Records appended after the replay started are not part of it.
    s.append("r1", 0, &[testkit::rec("r1", 2501, 0)])
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut batches = 0;
    while let Some(b) = replay.next_batch().await.unwrap() {
        batches += 1;
        got.extend(b);
    }
    assert!(batches >= 3, "streamed in batches, got {batches}");
    assert_eq!(got, recs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_wakes_on_appends_and_returns_empty_when_idle() {
    let (_d, s) = store();
    let client = LogClient::new(s.clone());
    let mut tail = client.tail("t1", 1);
    assert!(tail
        .next_batch(Duration::from_millis(20))
        .await
        .unwrap()
        .is_empty());
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for q in 1..=300u64 {
                s.append("t1", 0, &[testkit::rec("t1", q, 0)])
                    .await
                    .unwrap();
            }
        })
    };
    let mut got = Vec::new();
    while got.len() < 300 {
        got.extend(tail.next_batch(Duration::from_secs(30)).await.unwrap());
    }
    writer.await.unwrap();
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=300).collect::<Vec<_>>()
    );
    assert_eq!(tail.position(), 301);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_log_must_start_at_a_checkpoint() {
    let (_d, s) = store();
    let mut recs: Vec<_> = (1..=4).map(|q| testkit::rec("k1", q, 0)).collect();
    recs.push(checkpoint(5));
    recs.push(testkit::rec("k1", 6, 0));
    s.append("k1", 0, &recs).await.unwrap();
    s.truncate_before("k1", 5).await.unwrap();
    let client = LogClient::new(s.clone());
    let cfg = cfg("k1");
    let r = state_log::replay_all(&client, &cfg).await.unwrap();
    assert_eq!((r.applied(), r.records()), (6, 2));

    // Truncating to a record that is not a checkpoint loses state: reading
    // from the start reports where the log should have begun.
    s.truncate_before("k1", 6).await.unwrap();
    let mut replay = client.replay("k1", 1).await.unwrap();
    match replay.next_batch().await {
        Err(LogError::Gap { expected, got, .. }) => assert_eq!((expected, got), (1, 6)),
        other => panic!("expected a gap, got {other:?}"),
    }
}

#[test]
fn replayer_refuses_records_out_of_order() {
    let mut r = Replayer::new(cfg("o1")).unwrap();
    r.apply(&testkit::rec("o1", 1, 0)).unwrap();
    match r.apply(&testkit::rec("o1", 3, 0)) {
        Err(ReplayError::Gap { expected, got, .. }) => assert_eq!((expected, got), (2, 3)),
        other => panic!("expected a gap, got {other:?}"),
    }
    let mut fresh = Replayer::new(cfg("o1")).unwrap();
    assert!(fresh.apply(&testkit::rec("o1", 7, 0)).is_err());
    fresh.apply(&checkpoint(7)).unwrap();
    assert_eq!(fresh.applied(), 7);
}

#[test]
fn a_damaged_checkpoint_is_reported_with_its_seq() {
    let mut r = Replayer::new(cfg("d1")).unwrap();
    let bad = Record {
        seq: 1,
        epoch: 0,
        body: Body::Checkpoint(vec![0xc1, 0x00]),
    };
    match r.apply(&bad) {
        Err(ReplayError::Checkpoint { seq, .. }) => assert_eq!(seq, 1),
        other => panic!("expected corrupt, got {other:?}"),
    }
}
