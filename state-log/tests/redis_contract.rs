//! The `LogStore` contract (shared `state_log::testkit` suite) against a
//! real redis-server, plus Redis-specific checks: corruption detection and
//! the error a caller gets for an unreachable server.

mod redis_common;

use redis_common::{available, Persistence, RedisServer};
use state_log::redis_store::{RedisConfig, RedisStore};
use state_log::testkit;
use state_log::{Body, FrameError, LogError, LogStore, OperatorCommand, Record};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn cfg(url: String) -> RedisConfig {
    RedisConfig {
        url,
        ..RedisConfig::default()
    }
}

fn rec(seq: u64) -> Record {
    Record {
        seq,
        epoch: 0,
        body: Body::Operator(OperatorCommand::Command {
            name: "c".into(),
            args: vec![seq.to_string()],
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_suite() {
    if !available("contract_suite") {
        return;
    }
    let srv = RedisServer::start(Persistence::None);
    let store: Arc<dyn LogStore> = Arc::new(RedisStore::connect(cfg(srv.url())).await.unwrap());
    testkit::run_all(store, "r").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_suite_single_connection_and_aof() {
    if !available("contract_suite_single_connection_and_aof") {
        return;
    }
    let srv = RedisServer::start(Persistence::AofAlways);
    let c = RedisConfig {
        connections: 1,
        idle_wait_connections: 0,
        key_prefix: "other".into(),
        ..cfg(srv.url())
    };
    let store: Arc<dyn LogStore> = Arc::new(RedisStore::connect(c).await.unwrap());
    testkit::run_all(store, "r1").await;
}

#[tokio::test]
async fn stored_layout_is_seq_ids_and_meta_hash() {
    if !available("stored_layout_is_seq_ids_and_meta_hash") {
        return;
    }
    let srv = RedisServer::start(Persistence::None);
    let store = RedisStore::connect(cfg(srv.url())).await.unwrap();
    store
        .append("inst", 0, &[rec(1), rec(2), rec(3)])
        .await
        .unwrap();
    store.truncate_before("inst", 2).await.unwrap();
    let mut c = srv.sync_conn();
    type Entry = (String, Vec<(String, Vec<u8>)>);
    let ids: Vec<Entry> = redis::cmd("XRANGE")
        .arg(store.stream_key("inst"))
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    let ids: Vec<&str> = ids.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["2-0", "3-0"]);
    assert_eq!(store.stream_key("inst"), "bgf:{inst}:log");
    let last: u64 = redis::cmd("HGET")
        .arg(store.meta_key("inst"))
        .arg("last_seq")
        .query(&mut c)
        .unwrap();
    assert_eq!(last, 3);
    // The script is reloaded when Redis forgets it (SCRIPT FLUSH, restart).
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
    store.append("inst", 0, &[rec(4)]).await.unwrap();
    assert_eq!(store.last_seq("inst").await.unwrap(), 4);
}

#[tokio::test]
async fn garbage_entry_is_reported_corrupt_with_its_seq() {
    if !available("garbage_entry_is_reported_corrupt_with_its_seq") {
        return;
    }
    let srv = RedisServer::start(Persistence::None);
    let store = RedisStore::connect(cfg(srv.url())).await.unwrap();
    store.append("c", 0, &[rec(1), rec(2)]).await.unwrap();
    let mut c = srv.sync_conn();
    // Someone writes a bad frame at the next id behind our back.
    let _: String = redis::cmd("XADD")
        .arg(store.stream_key("c"))
        .arg("3-0")
        .arg("f")
        .arg(b"\x01garbage-not-a-frame".as_slice())
        .query(&mut c)
        .unwrap();
    let r = store.read("c", 1, 10).await;
    assert!(
        matches!(&r, Err(LogError::Corrupt { seq: 3, instance, .. }) if instance == "c"),
        "{r:?}"
    );
    // Reading before it still works; reading at it fails again.
    assert_eq!(store.read("c", 1, 2).await.unwrap(), vec![rec(1), rec(2)]);
    assert!(matches!(
        store.read("c", 3, 1).await,
        Err(LogError::Corrupt { seq: 3, .. })
    ));

    // A valid frame with one bit flipped: CRC mismatch.
    let mut bad = rec(4).encode();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    let _: String = redis::cmd("XADD")
        .arg(store.stream_key("c"))
        .arg("4-0")
        .arg("f")
        .arg(bad)
        .query(&mut c)
        .unwrap();
    let r = store.read("c", 4, 10).await;
    assert!(
        matches!(
            r,
            Err(LogError::Corrupt {
                seq: 4,
                reason: FrameError::Crc { .. },
                ..
            })
        ),
        "{r:?}"
    );

    // A good frame filed under the wrong id, and a hole in the stream.
    let _: String = redis::cmd("XADD")
        .arg(store.stream_key("c"))
        .arg("5-0")
        .arg("f")
        .arg(rec(9).encode())
        .query(&mut c)
        .unwrap();
    assert!(matches!(
        store.read("c", 5, 10).await,
        Err(LogError::Corrupt { seq: 5, .. })
    ));
    let _: String = redis::cmd("XADD")
        .arg(store.stream_key("c"))
        .arg("7-0")
        .arg("f")
        .arg(rec(7).encode())
        .query(&mut c)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(store.stream_key("c"))
        .arg("9-0")
        .arg("f")
        .arg(rec(9).encode())
        .query(&mut c)
        .unwrap();
    let r = store.read("c", 7, 10).await;
    assert!(
        matches!(r, Err(LogError::Corrupt { seq: 8, .. })),
        "hole at 8: {r:?}"
    );
}

#[tokio::test]
async fn unreachable_server_fails_fast_with_a_hint() {
    if !available("unreachable_server_fails_fast_with_a_hint") {
        return;
    }
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = Instant::now();
    let r = RedisStore::connect(cfg(format!("redis://127.0.0.1:{port}/0"))).await;
    let err = r.expect_err("connect must fail");
    assert!(
        matches!(&err, LogError::Unavailable(m) if m.contains("redis-server is running")),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let bad = RedisStore::connect(cfg("http://nope".into())).await;
    assert!(matches!(bad, Err(LogError::Invalid(_))), "{bad:?}");
}
