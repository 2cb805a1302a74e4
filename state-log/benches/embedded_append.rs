//! Durable append latency and throughput of the embedded store, through the
//! deployment path: `RemoteStore` → loopback TCP → `server::serve` →
//! group commit → fjall batch + fsync → ack. One record of ~600 bytes (a SIP
//! message) per append. Also the same in-process (no TCP) and the raw fsync
//! cost of the disk, for context.
//!
//! ```text
//! cargo bench -p state-log --bench embedded_append
//! STATELOG_BENCH_DIR=/path/on/the/disk/to/test  STATELOG_BENCH_N=4000 ...
//! ```
//!
//! Every run is bounded in count (`STATELOG_BENCH_N` appends per scenario,
//! default 4000) and time (20 s per scenario).

use sip_control::{Input, Side, SipIn, Transport};
use state_log::embedded::EmbeddedStore;
use state_log::remote::{RemoteStore, Timeouts};
use state_log::{Body, LogStore, Record};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
            at: 1_700_000_000_000 + seq,
            data: vec![b'x'; 600],
        })),
    }
}

struct Stats {
    lat: Vec<Duration>,
    wall: Duration,
}

impl Stats {
    fn print(&mut self, name: &str) {
        self.lat.sort();
        let q = |p: f64| {
            let i = ((self.lat.len() as f64 - 1.0) * p).round() as usize;
            self.lat[i].as_secs_f64() * 1e6
        };
        let n = self.lat.len();
        let tput = n as f64 / self.wall.as_secs_f64();
        println!(
            "{name:<34} n={n:>6}  p50={:>7.1} µs  p99={:>7.1} µs  p99.9={:>7.1} µs  max={:>8.1} µs  {:>8.0} appends/s",
            q(0.5),
            q(0.99),
            q(0.999),
            q(1.0),
            tput
        );
        println!(
            "{{\"bench\":\"{name}\",\"n\":{n},\"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\"appends_per_s\":{tput:.0}}}",
            q(0.5),
            q(0.99),
            q(0.999),
            q(1.0)
        );
    }
}

async fn run(store: Arc<dyn LogStore>, tag: &str, appenders: usize, n: usize) -> Stats {
    let per = n / appenders;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for a in 0..appenders {
        let s = store.clone();
        let inst = format!("{tag}{a}");
        set.spawn(async move {
            let mut lat = Vec::with_capacity(per);
            // Warm-up (not measured).
            for seq in 1..=20 {
                s.append(&inst, 0, &[record(seq)]).await.unwrap();
            }
            for seq in 21..21 + per as u64 {
                if start.elapsed() > TIME_CAP {
                    break;
                }
                let r = [record(seq)];
                let t = Instant::now();
                s.append(&inst, 0, &r).await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = set.join_next().await {
        lat.extend(r.unwrap());
    }
    Stats {
        lat,
        wall: start.elapsed(),
    }
}

/// Raw cost of the disk: write 600 bytes to a file and fdatasync, n times —
/// appending (the file grows: a metadata journal commit each time), or
/// overwriting a file written and synced beforehand (the floor).
fn raw_fsync(dir: &Path, n: usize, prewritten: bool) -> Stats {
    let p = dir.join("raw-fsync");
    let mut f = std::fs::File::create(&p).unwrap();
    let buf = vec![b'x'; 600];
    if prewritten {
        use std::io::Seek;
        f.write_all(&vec![0u8; 600 * n]).unwrap();
        f.sync_all().unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
    }
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        if start.elapsed() > TIME_CAP {
            break;
        }
        let t = Instant::now();
        f.write_all(&buf).unwrap();
        f.sync_data().unwrap();
        lat.push(t.elapsed());
    }
    let _ = std::fs::remove_file(&p);
    Stats {
        lat,
        wall: start.elapsed(),
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this with no
    // args too, so keep a test run short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("STATELOG_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 200 } else { 4000 });
    let base: PathBuf = std::env::var_os("STATELOG_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("statelog-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "embedded state log append benchmark: {n} appends of one ~600-byte record per scenario, data in {}",
        dir.display()
    );

    raw_fsync(&dir, n, false).print("raw append+fdatasync 600 B");
    raw_fsync(&dir, n, true).print("raw overwrite+fdatasync 600 B");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Arc::new(EmbeddedStore::open(&dir.join("db")).unwrap());
        let local: Arc<dyn LogStore> = store.clone();
        run(local.clone(), "l", 1, n)
            .await
            .print("in-process, 1 appender");
        run(local, "m", 8, n).await.print("in-process, 8 appenders");

        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let certs = state_log::testkit::LabCerts::generate(&dir.join("pki"), &[]);
        let srv = tokio::spawn(state_log::server::serve(l, store, certs.server(), async {
            let _ = stop_rx.await;
        }));
        let remote: Arc<dyn LogStore> = Arc::new(
            RemoteStore::connect(
                &addr,
                certs.client("standby:sb1", &addr),
                Timeouts::default(),
            )
            .await
            .unwrap(),
        );
        run(remote.clone(), "t", 1, n)
            .await
            .print("TCP + TLS, 1 appender");
        run(remote.clone(), "u", 8, n)
            .await
            .print("TCP + TLS, 8 appenders (one connection)");
        drop(remote);
        let _ = stop_tx.send(());
        let _ = srv.await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
