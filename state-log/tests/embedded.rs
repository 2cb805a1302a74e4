//! The embedded store in-process: the conformance suite, reopening
//! (durability across restarts), and corruption detection.

use state_log::embedded::{record_key, EmbeddedStore};
use state_log::{testkit, FrameError, LogError, LogStore};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn LogStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    testkit::run_all(store, "emb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        s.append(
            "i1",
            0,
            &(1..=5)
                .map(|q| testkit::rec("i1", q, 0))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
        assert_eq!(s.fence("i1").await.unwrap(), 1);
        s.append("i1", 1, &[testkit::rec("i1", 6, 1)])
            .await
            .unwrap();
        assert_eq!(s.truncate_before("i1", 3).await.unwrap(), 2);
    }
    let s = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(s.epoch("i1").await.unwrap(), 1);
    assert_eq!(s.last_seq("i1").await.unwrap(), 6);
    let got = s.read("i1", 1, 100).await.unwrap();
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );
    assert_eq!(got[3], testkit::rec("i1", 6, 1));
    s.append("i1", 1, &[testkit::rec("i1", 7, 1)])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_value_is_reported_with_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let recs: Vec<_> = (1..=5).map(|q| testkit::rec("c1", q, 0)).collect();
        s.append("c1", 0, &recs).await.unwrap();
    }
    {
        // Overwrite record 3 behind the store's back.
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let ks = db
            .keyspace("records", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let mut good = ks.get(record_key("c1", 3)).unwrap().unwrap().to_vec();
        let last = good.len() - 1;
        good[last] ^= 0x55;
        ks.insert(record_key("c1", 3), good).unwrap();
        ks.insert(record_key("c1", 4), b"garbage".to_vec()).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let s = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(
        s.read("c1", 1, 2).await.unwrap().len(),
        2,
        "records before are fine"
    );
    match s.read("c1", 1, 100).await {
        Err(LogError::Corrupt {
            instance,
            seq,
            reason,
        }) => {
            assert_eq!((instance.as_str(), seq), ("c1", 3));
            assert!(matches!(reason, FrameError::Crc { .. }), "{reason:?}");
        }
        other => panic!("expected Corrupt at 3, got {other:?}"),
    }
    match s.read("c1", 4, 100).await {
        Err(LogError::Corrupt { seq: 4, .. }) => {}
        other => panic!("expected Corrupt at 4, got {other:?}"),
    }
    assert_eq!(s.read("c1", 5, 100).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_frames_stops_at_the_byte_budget_but_returns_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path()).unwrap();
    let recs: Vec<_> = (1..=10).map(|q| testkit::rec("b1", q, 0)).collect();
    s.append("b1", 0, &recs).await.unwrap();
    let one = s.read_frames("b1", 1, 100, 1).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].0, recs[0]);
    assert_eq!(one[0].1, recs[0].encode());
    let f = recs[0].encode().len() + recs[1].encode().len();
    assert_eq!(s.read_frames("b1", 1, 100, f).await.unwrap().len(), 2);
    assert_eq!(
        s.read_frames("b1", 1, 100, usize::MAX).await.unwrap().len(),
        10
    );
}
