//! Redis killed (-9) and restarted during appends: appends fail with
//! `Unavailable`/`Timeout` within a bound while it is down, succeed again
//! after the restart, and (AOF, `appendfsync always`) every acknowledged
//! record survives.

mod redis_common;

use redis_common::{available, Persistence, RedisServer};
use state_log::redis_store::{RedisConfig, RedisStore};
use state_log::testkit::rec;
use state_log::{LogError, LogStore};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Default, Clone, Debug)]
struct Progress {
    acked: Vec<u64>,
    failures: usize,
    longest_failure: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_during_appends_loses_no_acknowledged_record() {
    if !available("restart_during_appends_loses_no_acknowledged_record") {
        return;
    }
    const TOTAL: u64 = 300;
    let mut srv = RedisServer::start(Persistence::AofAlways);
    let store = Arc::new(
        RedisStore::connect(RedisConfig {
            url: srv.url(),
            command_timeout: Duration::from_millis(300),
            ..RedisConfig::default()
        })
        .await
        .unwrap(),
    );
    let (tx, mut rx) = watch::channel(Progress::default());
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut p = Progress::default();
            let mut seq = 1u64;
            let deadline = Instant::now() + Duration::from_secs(60);
            while seq <= TOTAL && Instant::now() < deadline {
                let t = Instant::now();
                match store.append("rs", 0, &[rec("rs", seq, 0)]).await {
                    Ok(()) => {
                        p.acked.push(seq);
                        seq += 1;
                    }
                    // An earlier append whose reply was lost did land.
                    Err(LogError::Gap { expected, .. }) => seq = expected,
                    Err(LogError::Unavailable(_)) | Err(LogError::Timeout(_)) => {
                        p.failures += 1;
                        p.longest_failure = p.longest_failure.max(t.elapsed());
                        // Retry back-off of the writer.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => panic!("unexpected error {e}"),
                }
                tx.send_replace(p.clone());
            }
            p
        })
    };
    rx.wait_for(|p| p.acked.len() >= 100).await.unwrap();
    srv.kill();
    rx.wait_for(|p| p.failures >= 3).await.unwrap();
    srv.restart();
    let p = writer.await.unwrap();
    eprintln!(
        "{} appends failed while Redis was down, longest {:?}",
        p.failures, p.longest_failure
    );
    assert_eq!(p.acked.last(), Some(&TOTAL), "writer did not finish: {p:?}");
    assert!(p.failures >= 3);
    assert!(
        p.longest_failure < Duration::from_secs(5),
        "a failing append took {:?}",
        p.longest_failure
    );
    // Every acknowledged record is there after the crash, in order, and
    // the log is contiguous.
    let all = store.read("rs", 1, 10_000).await.unwrap();
    let want: Vec<_> = (1..=TOTAL).map(|s| rec("rs", s, 0)).collect();
    assert_eq!(all, want);
    for s in &p.acked {
        assert_eq!(all[(*s - 1) as usize].seq, *s);
    }
    assert_eq!(store.last_seq("rs").await.unwrap(), TOTAL);
}
