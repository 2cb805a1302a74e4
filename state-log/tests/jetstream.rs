//! The JetStream backend against a real three-node `nats-server` cluster on
//! loopback (R3 streams, mutual TLS, users mapped from certificates): the
//! contract suite, large records in parts, per-role rights, and a fenced
//! writer's next append failing.

use state_log::jetstream::{JetStreamConfig, JetStreamStore};
use state_log::natsconf::Users;
use state_log::natsproc::{self, NatsCluster};
use state_log::{testkit, LogError, LogStore, Record};
use std::sync::Arc;
use std::time::Duration;

fn users() -> Users {
    Users {
        actives: vec!["bgf1".into(), "bgf2".into()],
        standbys: vec!["sb1".into()],
        operators: vec!["ops".into()],
    }
}

fn cluster(dir: &std::path::Path) -> Option<NatsCluster> {
    if !natsproc::available() {
        eprintln!("SKIPPED: nats-server is not installed (apt-get install nats-server)");
        return None;
    }
    Some(NatsCluster::start(dir, 3, &users()).unwrap_or_else(|e| panic!("{e}")))
}

async fn store(c: &NatsCluster, cn: &str) -> JetStreamStore {
    let mut cfg = JetStreamConfig::new(c.urls(), c.files(cn));
    cfg.request_timeout = Duration::from_secs(5);
    JetStreamStore::connect(cfg)
        .await
        .unwrap_or_else(|e| panic!("connect as {cn}: {e}\n{}", c.logs()))
}

/// The standby's connection for everything but truncation, the operator's

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_suite_on_r3() {
    let dir = tempfile::tempdir().unwrap();
    let Some(c) = cluster(dir.path()) else { return };
    let s: Arc<dyn LogStore> = Arc::new(testkit::SplitRights {
        main: Arc::new(store(&c, "standby:sb1").await),
        truncator: Arc::new(store(&c, "operator:ops").await),
    });
    testkit::run_all(s, "js").await;
}

fn big(seq: u64, epoch: u64, n: usize) -> Record {
    Record {
        seq,
        epoch,
        body: state_log::Body::Checkpoint((0..n).map(|i| (i * 7 + seq as usize) as u8).collect()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_above_max_payload_go_in_parts_and_a_fence_stops_the_old_writer() {
    let dir = tempfile::tempdir().unwrap();
    let Some(c) = cluster(dir.path()) else { return };
    let a = store(&c, "active:bgf1").await;
    let e = a.fence("bgf1").await.unwrap();
    assert_eq!(e, 1);
    // 2.5 MiB checkpoint: three parts at the default 1 MiB max_payload.
    let recs = vec![
        testkit::rec("bgf1", 1, 1),
        big(2, 1, 2_500_000),
        testkit::rec("bgf1", 3, 1),
    ];
    a.append("bgf1", 1, &recs).await.unwrap();
    assert_eq!(a.last_seq("bgf1").await.unwrap(), 3);
    assert_eq!(a.read("bgf1", 1, 10).await.unwrap(), recs);
    assert_eq!(a.read("bgf1", 2, 1).await.unwrap(), vec![recs[1].clone()]);
    // Compaction at the checkpoint.
    assert_eq!(a.truncate_before("bgf1", 2).await.unwrap(), 1);
    assert_eq!(a.read("bgf1", 1, 10).await.unwrap(), recs[1..].to_vec());
    // The standby fences; the active's next append (its view is stale)
    // is refused by the server and reported as such.
    let sb = store(&c, "standby:sb1").await;
    assert_eq!(sb.fence("bgf1").await.unwrap(), 2);
    let r = a.append("bgf1", 1, &[testkit::rec("bgf1", 4, 1)]).await;
    assert!(
        matches!(
            r,
            Err(LogError::StaleEpoch {
                presented: 1,
                current: 2,
                ..
            })
        ),
        "{r:?}"
    );
    sb.append("bgf1", 2, &[testkit::rec("bgf1", 4, 2)])
        .await
        .unwrap();
    assert_eq!(a.last_seq("bgf1").await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_has_its_rights() {
    let dir = tempfile::tempdir().unwrap();
    let Some(c) = cluster(dir.path()) else { return };
    let a1 = store(&c, "active:bgf1").await;
    let a2 = store(&c, "active:bgf2").await;
    let op = store(&c, "operator:ops").await;
    a1.fence("bgf1").await.unwrap();
    a1.append("bgf1", 1, &[testkit::rec("bgf1", 1, 1)])
        .await
        .unwrap();
    // Another active can neither fence, write nor read bgf1's log.
    assert!(a2.fence("bgf1").await.is_err());
    assert!(a2
        .append("bgf1", 1, &[testkit::rec("bgf1", 2, 1)])
        .await
        .is_err());
    assert!(a2.read("bgf1", 1, 10).await.is_err());
    // The operator reads and truncates, never fences or appends.
    assert_eq!(op.read("bgf1", 1, 10).await.unwrap().len(), 1);
    assert!(op.fence("bgf1").await.is_err());
    assert!(op
        .append("bgf1", 1, &[testkit::rec("bgf1", 2, 1)])
        .await
        .is_err());
    assert_eq!(a1.epoch("bgf1").await.unwrap(), 1, "nobody else fenced");
    a1.append("bgf1", 1, &[testkit::rec("bgf1", 2, 1)])
        .await
        .unwrap();
}
