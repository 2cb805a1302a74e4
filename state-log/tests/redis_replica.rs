//! Durable acknowledgement through `WAIT`: a primary with one replica.

mod redis_common;

use redis_common::{available, Persistence, RedisServer};
use state_log::redis_store::{RedisConfig, RedisStore};
use state_log::testkit::rec;
use state_log::{LogError, LogStore, Record};
use std::time::{Duration, Instant};

fn recs(inst: &str, from: u64, n: u64) -> Vec<Record> {
    (from..from + n).map(|s| rec(inst, s, 0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_wait_for_the_replica_and_fail_without_it() {
    if !available("appends_wait_for_the_replica_and_fail_without_it") {
        return;
    }
    let primary = RedisServer::start(Persistence::None);
    let mut replica = RedisServer::start_replica(primary.port);
    primary.wait_replicas_online(1);

    let cfg = RedisConfig {
        url: primary.url(),
        replicas: 1,
        wait_timeout: Duration::from_millis(300),
        ..RedisConfig::default()
    };
    let store = RedisStore::connect(cfg.clone()).await.unwrap();
    let mut seq = 1;
    for n in [1u64, 5, 20, 3] {
        store.append("a", 0, &recs("a", seq, n)).await.unwrap();
        seq += n;
    }
    let last = seq - 1;
    // Acknowledged means on the replica: read it there, right away.
    let on_replica = RedisStore::connect(RedisConfig {
        url: replica.url(),
        ..RedisConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(
        on_replica.read("a", 1, 1000).await.unwrap(),
        recs("a", 1, last)
    );
    assert_eq!(on_replica.last_seq("a").await.unwrap(), last);

    // Two replicas required, one present: refused after the WAIT timeout.
    let two = RedisStore::connect(RedisConfig {
        replicas: 2,
        ..cfg.clone()
    })
    .await
    .unwrap();
    let r = two.append("b", 0, &recs("b", 1, 1)).await;
    assert!(
        matches!(&r, Err(LogError::Unavailable(m)) if m.contains("only 1 of 2")),
        "{r:?}"
    );

    // Replica gone: appends fail (bounded), they do not hang.
    replica.kill();
    let t = Instant::now();
    let r = store.append("a", 0, &recs("a", seq, 2)).await;
    let took = t.elapsed();
    assert!(
        matches!(&r, Err(LogError::Unavailable(m)) if m.contains("only 0 of 1")),
        "{r:?}"
    );
    assert!(took < Duration::from_secs(5), "append took {took:?}");
    // The write may exist on the primary (documented). Retrying it must not
    // pass for durable while the replica is still gone: the Gap is only
    // reported once the landed records are confirmed on the replicas.
    let now_last = store.last_seq("a").await.unwrap();
    assert_eq!(now_last, last + 2);
    let again = store.append("a", 0, &recs("a", seq, 1)).await;
    assert!(
        matches!(&again, Err(LogError::Unavailable(m)) if m.contains("not durable yet")),
        "{again:?}"
    );

    // Replica back: the retry now reports Gap (the records are replicated,
    // the writer may count them durable), and appends are acknowledged again.
    replica.restart();
    primary.wait_replicas_online(1);
    let again = store.append("a", 0, &recs("a", seq, 1)).await;
    assert!(
        matches!(again, Err(LogError::Gap { expected, .. }) if expected == now_last + 1),
        "{again:?}"
    );
    store
        .append("a", 0, &recs("a", now_last + 1, 4))
        .await
        .unwrap();
    let on_replica = RedisStore::connect(RedisConfig {
        url: replica.url(),
        ..RedisConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(
        on_replica.read("a", 1, 1000).await.unwrap(),
        recs("a", 1, now_last + 4)
    );
}

#[tokio::test]
async fn the_replica_refuses_writes_with_a_hint() {
    if !available("the_replica_refuses_writes_with_a_hint") {
        return;
    }
    let primary = RedisServer::start(Persistence::None);
    let replica = RedisServer::start_replica(primary.port);
    primary.wait_replicas_online(1);
    let store = RedisStore::connect(RedisConfig {
        url: replica.url(),
        ..RedisConfig::default()
    })
    .await
    .unwrap();
    let r = store.append("x", 0, &recs("x", 1, 1)).await;
    assert!(
        matches!(&r, Err(LogError::Unavailable(m)) if m.contains("point it at the primary")),
        "{r:?}"
    );
}
