//! Durable append latency and throughput of the Redis Streams backend
//! against a local redis-server (started here on 127.0.0.1, killed at the
//! end): ~600-byte records, one record per append, a single appender and 8
//! concurrent appenders (one instance each), for three setups:
//!
//! - `aof-always`: `appendonly yes`, `appendfsync always` (durable on the
//!   primary, fsync before each reply), `replicas = 0`;
//! - `no-persist`: no AOF, no RDB (in-memory; the cost of Redis alone);
//! - `replica-wait`: no persistence, one replica, `replicas = 1` (WAIT).
//!
//! Run: `cargo bench -p state-log --bench redis_append` (prints a markdown
//! table). Counts and time are bounded.

#[path = "../tests/redis_common/mod.rs"]
mod redis_common;

use redis_common::{available, Persistence, RedisServer};
use sip_control::{Input, Side, SipIn, Transport};
use state_log::redis_store::{RedisConfig, RedisStore};
use state_log::{Body, LogStore, Record};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SINGLE: usize = 4000;
const PER_TASK: usize = 1500;
const TASKS: usize = 8;
const TIME_CAP: Duration = Duration::from_secs(20);

fn record(seq: u64) -> Record {
    Record {
        seq,
        epoch: 0,
        body: Body::Input(Input::Sip(SipIn {
            side: Side::Access,
            transport: Transport::Udp,
            src: "198.18.1.100:5061".parse().unwrap(),
            dst: "198.18.1.10:5060".parse().unwrap(),
            at: 1_700_000_000_123 + seq,
            data: vec![b'x'; 524],
        })),
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Run {
    lat: Vec<Duration>,
    elapsed: Duration,
}

async fn appender(store: Arc<RedisStore>, inst: String, n: usize, deadline: Instant) -> Run {
    let recs: Vec<Record> = (1..=n as u64).map(record).collect();
    let mut lat = Vec::with_capacity(n);
    let t0 = Instant::now();
    for r in &recs {
        if Instant::now() > deadline {
            break;
        }
        let t = Instant::now();
        store
            .append(&inst, 0, std::slice::from_ref(r))
            .await
            .expect("append");
        lat.push(t.elapsed());
    }
    Run {
        lat,
        elapsed: t0.elapsed(),
    }
}

async fn scenario(name: &str, store: Arc<RedisStore>) {
    // Warm-up (script load, connections).
    let _ = appender(
        store.clone(),
        format!("{name}-w"),
        200,
        Instant::now() + TIME_CAP,
    )
    .await;

    let single = appender(
        store.clone(),
        format!("{name}-s"),
        SINGLE,
        Instant::now() + TIME_CAP,
    )
    .await;
    report(name, 1, &[single]);

    let deadline = Instant::now() + TIME_CAP;
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        set.spawn(appender(
            store.clone(),
            format!("{name}-c{t}"),
            PER_TASK,
            deadline,
        ));
    }
    let mut runs = Vec::new();
    while let Some(r) = set.join_next().await {
        runs.push(r.expect("appender task"));
    }
    let wall = t0.elapsed();
    let mut all: Vec<Duration> = runs.iter().flat_map(|r| r.lat.iter().copied()).collect();
    all.sort();
    println!(
        "| {name} | {TASKS} | {} | {:.0} | {:.0} | {:.0} |",
        all.len(),
        pct(&all, 0.5).as_secs_f64() * 1e6,
        pct(&all, 0.99).as_secs_f64() * 1e6,
        all.len() as f64 / wall.as_secs_f64()
    );
}

/// Tail wake-up: a waiter blocked in `wait_for` on one task, an append on
/// another; time from the start of the append to the waiter's return.
async fn tail_wake(store: Arc<RedisStore>) {
    const N: u64 = 300;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Instant>(1);
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            for after in 0..N {
                let woke = store
                    .wait_for("tail", after, Duration::from_secs(5))
                    .await
                    .expect("wait_for");
                assert!(woke, "waiter timed out");
                if tx.send(Instant::now()).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut lat = Vec::new();
    for seq in 1..=N {
        // Give the waiter time to block (it must not find the record yet).
        tokio::time::sleep(Duration::from_millis(2)).await;
        let t = Instant::now();
        store
            .append("tail", 0, &[record(seq)])
            .await
            .expect("append");
        let Some(woke) = rx.recv().await else { break };
        lat.push(woke.saturating_duration_since(t));
    }
    let _ = waiter.await;
    lat.sort();
    println!(
        "tail wake-up (append start → wait_for returns, {} samples): p50 {:.0} µs, p99 {:.0} µs",
        lat.len(),
        pct(&lat, 0.5).as_secs_f64() * 1e6,
        pct(&lat, 0.99).as_secs_f64() * 1e6
    );
}

fn report(name: &str, tasks: usize, runs: &[Run]) {
    let mut all: Vec<Duration> = runs.iter().flat_map(|r| r.lat.iter().copied()).collect();
    all.sort();
    let wall = runs.iter().map(|r| r.elapsed).max().unwrap_or_default();
    println!(
        "| {name} | {tasks} | {} | {:.0} | {:.0} | {:.0} |",
        all.len(),
        pct(&all, 0.5).as_secs_f64() * 1e6,
        pct(&all, 0.99).as_secs_f64() * 1e6,
        all.len() as f64 / wall.as_secs_f64()
    );
}

fn main() {
    if !available("redis_append bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "record frame: {} bytes; one record per append",
        record(1).encode().len()
    );
    println!("| setup | appenders | appends | p50 µs | p99 µs | appends/s |");
    println!("|---|---|---|---|---|---|");
    rt.block_on(async {
        {
            let srv = RedisServer::start(Persistence::AofAlways);
            let store = RedisStore::connect(RedisConfig {
                url: srv.url(),
                ..RedisConfig::default()
            })
            .await
            .expect("connect");
            scenario("aof-always", Arc::new(store)).await;
        }
        {
            let srv = RedisServer::start(Persistence::None);
            let store = RedisStore::connect(RedisConfig {
                url: srv.url(),
                ..RedisConfig::default()
            })
            .await
            .expect("connect");
            let store = Arc::new(store);
            scenario("no-persist", store.clone()).await;
            tail_wake(store).await;
        }
        {
            let primary = RedisServer::start(Persistence::None);
            let _replica = RedisServer::start_replica(primary.port);
            primary.wait_replicas_online(1);
            let store = RedisStore::connect(RedisConfig {
                url: primary.url(),
                replicas: 1,
                wait_timeout: Duration::from_millis(500),
                ..RedisConfig::default()
            })
            .await
            .expect("connect");
            scenario("replica-wait", Arc::new(store)).await;
        }
    });
}
