//! The three stores side by side in one run (issue 16): the embedded store
//! over mutual TLS (`bgf statelog`'s server, in-process, loopback), Redis
//! with one replica and `WAIT 1`, and NATS JetStream R3 (three nodes on
//! loopback, mutual TLS). ~600-byte records. For each: one appender waiting
//! for every ack (append latency p50 / p99), and one writer keeping 8
//! batches of 16 records in flight through `LogStore::submit` (the pipelined
//! output commit's pattern: records/s).
//!
//! Run: `cargo bench -p state-log --bench store_compare` (a markdown table;
//! counts and time bounded). Needs redis-server and nats-server. Figures on
//! a shared 2-core VM are noisy: record `uptime` beside them.

#[path = "../tests/redis_common/mod.rs"]
mod redis_common;

use sip_control::{Input, Side, SipIn, Transport};
use state_log::jetstream::{JetStreamConfig, JetStreamStore};
use state_log::redis_store::{RedisConfig, RedisStore};
use state_log::{Batch, Body, LogStore, Record};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SINGLE: u64 = 2000;
const PIPELINED: u64 = 20_000;
const BATCH: u64 = 16;
const WINDOW: usize = 8;
const CAP: Duration = Duration::from_secs(20);

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
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len().saturating_sub(1))]
}

async fn run(name: &str, store: Arc<dyn LogStore>) {
    // One appender, each append awaited.
    let inst = "cmp-single";
    let mut lat = Vec::new();
    let t0 = Instant::now();
    for s in 1..=SINGLE {
        let t = Instant::now();
        store.append(inst, 0, &[record(s)]).await.expect("append");
        lat.push(t.elapsed());
        if t0.elapsed() > CAP {
            break;
        }
    }
    let n = lat.len();
    let rate1 = n as f64 / t0.elapsed().as_secs_f64();
    lat.sort();
    // Pipelined: WINDOW batches in flight.
    let inst = "cmp-pipe";
    let t0 = Instant::now();
    let mut inflight: VecDeque<state_log::Ack> = VecDeque::new();
    let mut next = 1u64;
    let mut done = 0u64;
    while done < PIPELINED && t0.elapsed() < CAP {
        while inflight.len() < WINDOW && next <= PIPELINED {
            let recs: Vec<Record> = (next..next + BATCH).map(record).collect();
            let b = Arc::new(Batch::encode(0, &recs).unwrap());
            inflight.push_back(store.submit(inst, b).await.expect("submit"));
            next += BATCH;
        }
        match inflight.pop_front() {
            Some(a) => {
                a.await.expect("ack");
                done += BATCH;
            }
            None => break,
        }
    }
    let rate8 = done as f64 / t0.elapsed().as_secs_f64();
    println!(
        "| {name} | {n} | {:.0} | {:.0} | {rate1:.0} | {rate8:.0} |",
        pct(&lat, 0.5).as_secs_f64() * 1e6,
        pct(&lat, 0.99).as_secs_f64() * 1e6,
    );
}

fn main() {
    if !redis_common::available("store_compare") || !state_log::natsproc::available() {
        eprintln!("SKIPPED store_compare: needs redis-server and nats-server");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = std::env::temp_dir().join(format!("bgf-store-compare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    println!("| store | single appends | p50 µs | p99 µs | appends/s (1 waiting) | records/s (8 × {BATCH} in flight) |");
    println!("|---|---|---|---|---|---|");
    rt.block_on(async {
        {
            let store =
                Arc::new(state_log::embedded::EmbeddedStore::open(&dir.join("emb")).unwrap());
            let certs = state_log::testkit::LabCerts::generate(&dir.join("pki"), &[]);
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap().to_string();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let srv = tokio::spawn(state_log::server::serve(l, store, certs.server(), async {
                let _ = rx.await;
            }));
            let c = state_log::remote::RemoteStore::connect(
                &addr,
                certs.client("standby:sb1", &addr),
                state_log::remote::Timeouts::default(),
            )
            .await
            .unwrap();
            run("embedded (TLS, fsync)", Arc::new(c)).await;
            let _ = tx.send(());
            let _ = srv.await;
        }
        {
            let primary = redis_common::RedisServer::start(redis_common::Persistence::None);
            let replica = redis_common::RedisServer::start_replica(primary.port);
            primary.wait_replicas_online(1);
            let store = RedisStore::connect(RedisConfig {
                url: primary.url(),
                replicas: 1,
                ..RedisConfig::default()
            })
            .await
            .expect("redis");
            run("redis, 1 replica (WAIT 1)", Arc::new(store)).await;
            drop(replica);
        }
        {
            let users = state_log::natsconf::Users {
                standbys: vec!["sb1".into()],
                ..Default::default()
            };
            let c = state_log::natsproc::NatsCluster::start(&dir.join("nats"), 3, &users).unwrap();
            let mut cfg = JetStreamConfig::new(c.urls(), c.files("standby:sb1"));
            cfg.request_timeout = Duration::from_secs(5);
            let store = JetStreamStore::connect(cfg).await.unwrap();
            run("jetstream R3 (TLS)", Arc::new(store)).await;
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
