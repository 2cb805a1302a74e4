//! Conformance suite for [`LogStore`] backends: the semantics in
//! [`crate::store`] checked through the trait only, so every backend
//! (embedded in-process, embedded over TCP, Redis) runs the same checks.
//!
//! Each check takes the store and a `prefix` that makes its instance ids
//! unique (a backend that keeps data between runs, such as a shared Redis,
//! needs a fresh prefix per run; ids must stay within 32 characters, so keep
//! the prefix ≤ 16 characters). Checks panic with a message on a violation —
//! call them from tests. [`run_all`] runs every check.
//!
//! Timing bounds are generous (seconds); nothing here measures speed.

use crate::record::{Body, Epoch, OperatorCommand, Record, Seq};
use crate::store::{LogError, LogStore};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A small record whose body names its instance and seq.
pub fn rec(instance: &str, seq: Seq, epoch: Epoch) -> Record {
    Record {
        seq,
        epoch,
        body: Body::Operator(OperatorCommand::Command {
            name: format!("{instance}/{seq}"),
            args: vec!["x".repeat((seq % 7) as usize)],
        }),
    }
}

fn recs(instance: &str, from: Seq, n: u64, epoch: Epoch) -> Vec<Record> {
    (from..from + n).map(|s| rec(instance, s, epoch)).collect()
}

fn id(prefix: &str, name: &str) -> String {
    let s = format!("{prefix}-{name}");
    assert!(
        s.len() <= 32,
        "instance id {s:?} too long: shorten the prefix"
    );
    s
}

/// Run every check.
pub async fn run_all(store: Arc<dyn LogStore>, prefix: &str) {
    round_trip(&*store, prefix).await;
    gaps(&*store, prefix).await;
    fencing(&*store, prefix).await;
    truncation(&*store, prefix).await;
    wait_for(store.clone(), prefix).await;
    concurrent_appenders(store.clone(), prefix, 16, 40).await;
}

/// Append/read round trip on several instances; logs stay separate.
pub async fn round_trip(store: &dyn LogStore, prefix: &str) {
    let names: Vec<String> = ["a", "b", "ab", "a-b"]
        .iter()
        .map(|n| id(prefix, &format!("rt-{n}")))
        .collect();
    for (k, n) in names.iter().enumerate() {
        assert_eq!(store.last_seq(n).await.unwrap(), 0, "{n}: fresh log");
        assert_eq!(store.epoch(n).await.unwrap(), 0, "{n}: fresh epoch");
        assert!(store.read(n, 1, 100).await.unwrap().is_empty());
        let mut seq = 1;
        for batch in [1u64, 3, k as u64 + 1] {
            store.append(n, 0, &recs(n, seq, batch, 0)).await.unwrap();
            seq += batch;
        }
    }
    for (k, n) in names.iter().enumerate() {
        let total = 4 + k as u64 + 1;
        assert_eq!(store.last_seq(n).await.unwrap(), total);
        let all = store.read(n, 1, 1000).await.unwrap();
        assert_eq!(
            all,
            recs(n, 1, total, 0),
            "{n}: read back what was appended"
        );
        let mid = store.read(n, 2, 2).await.unwrap();
        assert_eq!(mid, recs(n, 2, 2, 0), "{n}: read from/max");
        assert!(store.read(n, total + 1, 10).await.unwrap().is_empty());
    }
    let bad = store.append("bad id!", 0, &recs("x", 1, 1, 0)).await;
    assert!(matches!(bad, Err(LogError::Invalid(_))), "{bad:?}");
    let empty = store.append(&names[0], 0, &[]).await;
    assert!(matches!(empty, Err(LogError::Invalid(_))), "{empty:?}");
}

/// Non-contiguous appends fail with `Gap` and change nothing.
pub async fn gaps(store: &dyn LogStore, prefix: &str) {
    let n = &id(prefix, "gap");
    let r = store.append(n, 0, &recs(n, 2, 1, 0)).await;
    assert_eq!(
        r,
        Err(LogError::Gap {
            instance: n.clone(),
            expected: 1,
            got: 2
        })
    );
    store.append(n, 0, &recs(n, 1, 3, 0)).await.unwrap();
    for got in [1, 3, 5] {
        let r = store.append(n, 0, &recs(n, got, 1, 0)).await;
        assert_eq!(
            r,
            Err(LogError::Gap {
                instance: n.clone(),
                expected: 4,
                got
            })
        );
    }
    store.append(n, 0, &recs(n, 4, 1, 0)).await.unwrap();
    assert_eq!(store.read(n, 1, 100).await.unwrap(), recs(n, 1, 4, 0));
}

/// `fence` bumps the epoch; appends under the old epoch fail with
/// `StaleEpoch`, under the new one succeed; records keep their epoch.
pub async fn fencing(store: &dyn LogStore, prefix: &str) {
    let n = &id(prefix, "fence");
    store.append(n, 0, &recs(n, 1, 2, 0)).await.unwrap();
    assert_eq!(store.fence(n).await.unwrap(), 1);
    assert_eq!(store.epoch(n).await.unwrap(), 1);
    let stale = store.append(n, 0, &recs(n, 3, 1, 0)).await;
    assert_eq!(
        stale,
        Err(LogError::StaleEpoch {
            instance: n.clone(),
            presented: 0,
            current: 1
        })
    );
    let future = store.append(n, 2, &recs(n, 3, 1, 2)).await;
    assert!(
        matches!(future, Err(LogError::StaleEpoch { .. })),
        "{future:?}"
    );
    store.append(n, 1, &recs(n, 3, 2, 1)).await.unwrap();
    assert_eq!(store.fence(n).await.unwrap(), 2);
    assert_eq!(store.fence(n).await.unwrap(), 3);
    let stale = store.append(n, 1, &recs(n, 5, 1, 1)).await;
    assert!(
        matches!(stale, Err(LogError::StaleEpoch { current: 3, .. })),
        "{stale:?}"
    );
    let mut want = recs(n, 1, 2, 0);
    want.extend(recs(n, 3, 2, 1));
    assert_eq!(store.read(n, 1, 100).await.unwrap(), want);
    assert_eq!(store.last_seq(n).await.unwrap(), 4);
    // Fencing one instance does not touch another.
    let other = &id(prefix, "fence2");
    assert_eq!(store.epoch(other).await.unwrap(), 0);
    store.append(other, 0, &recs(other, 1, 1, 0)).await.unwrap();
}

/// `truncate_before` removes exactly the records below; seqs keep counting.
pub async fn truncation(store: &dyn LogStore, prefix: &str) {
    let n = &id(prefix, "trunc");
    store.append(n, 0, &recs(n, 1, 10, 0)).await.unwrap();
    assert_eq!(store.truncate_before(n, 4).await.unwrap(), 3);
    assert_eq!(store.read(n, 1, 100).await.unwrap(), recs(n, 4, 7, 0));
    assert_eq!(store.read(n, 6, 2).await.unwrap(), recs(n, 6, 2, 0));
    assert_eq!(store.truncate_before(n, 4).await.unwrap(), 0, "idempotent");
    assert_eq!(
        store.truncate_before(n, 2).await.unwrap(),
        0,
        "below the start"
    );
    // Everything, then keep counting.
    assert_eq!(store.truncate_before(n, 11).await.unwrap(), 7);
    assert!(store.read(n, 1, 100).await.unwrap().is_empty());
    assert_eq!(
        store.last_seq(n).await.unwrap(),
        10,
        "last seq survives truncation"
    );
    let r = store.append(n, 0, &recs(n, 1, 1, 0)).await;
    assert!(
        matches!(r, Err(LogError::Gap { expected: 11, .. })),
        "{r:?}"
    );
    store.append(n, 0, &recs(n, 11, 2, 0)).await.unwrap();
    assert_eq!(store.read(n, 1, 100).await.unwrap(), recs(n, 11, 2, 0));
}

/// `wait_for` wakes promptly after an append from another task, returns
/// immediately when the record is already there, and times out otherwise.
pub async fn wait_for(store: Arc<dyn LogStore>, prefix: &str) {
    let n = id(prefix, "wait");
    store.append(&n, 0, &recs(&n, 1, 1, 0)).await.unwrap();
    assert!(store.wait_for(&n, 0, Duration::from_secs(5)).await.unwrap());
    let t = Instant::now();
    assert!(!store
        .wait_for(&n, 1, Duration::from_millis(200))
        .await
        .unwrap());
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "returned early: {:?}",
        t.elapsed()
    );

    let waiter = {
        let (s, n) = (store.clone(), n.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let r = s.wait_for(&n, 1, Duration::from_secs(20)).await;
            (r, t.elapsed())
        })
    };
    // Let the waiter block first (not required for correctness: a waiter
    // that starts late finds the record and returns at once).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let appender = {
        let (s, n) = (store.clone(), n.clone());
        tokio::spawn(async move { s.append(&n, 0, &recs(&n, 2, 1, 0)).await })
    };
    appender.await.unwrap().unwrap();
    let (r, took) = waiter.await.unwrap();
    assert_eq!(r, Ok(true));
    assert!(
        took < Duration::from_secs(10),
        "wait_for woke after {took:?}"
    );
    // A waiter on an instance nobody writes to times out with false.
    let quiet = id(prefix, "quiet");
    assert!(!store
        .wait_for(&quiet, 0, Duration::from_millis(100))
        .await
        .unwrap());
}

/// `tasks` tasks append concurrently (each to its own instance, plus all of
/// them to one shared instance under a lock that assigns seqs); every ack is
/// durable and nothing is lost or reordered.
pub async fn concurrent_appenders(
    store: Arc<dyn LogStore>,
    prefix: &str,
    tasks: usize,
    appends: u64,
) {
    let shared_id = id(prefix, "conc-all");
    let shared_next = Arc::new(tokio::sync::Mutex::new(1u64));
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let s = store.clone();
        let own = id(prefix, &format!("conc-{t}"));
        let (sid, next) = (shared_id.clone(), shared_next.clone());
        set.spawn(async move {
            let mut seq = 1;
            for k in 0..appends {
                let n = 1 + (k + t as u64) % 3;
                s.append(&own, 0, &recs(&own, seq, n, 0)).await.unwrap();
                seq += n;
                if k % 4 == 0 {
                    let mut g = next.lock().await;
                    s.append(&sid, 0, &recs(&sid, *g, 1, 0)).await.unwrap();
                    *g += 1;
                }
            }
            (own, seq - 1)
        });
    }
    let mut owns = Vec::new();
    while let Some(r) = set.join_next().await {
        owns.push(r.expect("appender task panicked"));
    }
    assert_eq!(owns.len(), tasks);
    for (own, last) in owns {
        assert_eq!(store.last_seq(&own).await.unwrap(), last, "{own}");
        assert_eq!(
            store.read(&own, 1, 100_000).await.unwrap(),
            recs(&own, 1, last, 0),
            "{own}"
        );
    }
    let total = *shared_next.lock().await - 1;
    assert_eq!(
        store.read(&shared_id, 1, 100_000).await.unwrap(),
        recs(&shared_id, 1, total, 0)
    );
}

/// A lab PKI for tests: one CA, the server certificate `server:statelog`
/// for 127.0.0.1 / ::1 / localhost, and client certificates — one per
/// active named, `standby:sb1` and `operator:ops`.
pub struct LabCerts {
    /// Where the files are.
    pub dir: std::path::PathBuf,
}

impl LabCerts {
    /// Issue them into `dir`.
    pub fn generate(dir: &std::path::Path, actives: &[&str]) -> LabCerts {
        crate::pki::generate(
            dir,
            &crate::pki::LabSpec {
                servers: vec![(
                    "statelog".into(),
                    vec!["127.0.0.1".into(), "::1".into(), "localhost".into()],
                )],
                actives: actives.iter().map(|a| a.to_string()).collect(),
                standbys: vec!["sb1".into()],
                operators: vec!["ops".into()],
                overwrite: false,
            },
        )
        .expect("lab certificates");
        LabCerts {
            dir: dir.to_path_buf(),
        }
    }

    /// The files of `cn` (`role:name`).
    pub fn files(&self, cn: &str) -> crate::tls::TlsFiles {
        crate::pki::files_of(
            &self.dir,
            &crate::tls::Identity::parse(cn).expect("identity"),
        )
    }

    /// Server settings with default limits.
    pub fn server(&self) -> crate::server::ServerSettings {
        self.server_with(crate::server::Limits::default())
    }

    /// Server settings with `limits`.
    pub fn server_with(&self, limits: crate::server::Limits) -> crate::server::ServerSettings {
        crate::server::ServerSettings {
            tls: crate::tls::server_config(&self.files("server:statelog")).expect("server TLS"),
            limits,
        }
    }

    /// The client TLS of `cn` for a server at `addr`.
    pub fn client(&self, cn: &str, addr: &str) -> crate::remote::ClientTls {
        crate::remote::ClientTls::from_files(&self.files(cn), None, addr).expect("client TLS")
    }
}

/// A store whose truncations go through a second connection: the contract
/// suite truncates at arbitrary seqs, which only an operator credential may
/// (`main` is a standby's connection, `truncator` an operator's).
pub struct SplitRights {
    /// Everything but truncation.
    pub main: Arc<dyn LogStore>,
    /// Truncation.
    pub truncator: Arc<dyn LogStore>,
}

#[async_trait::async_trait]
impl LogStore for SplitRights {
    async fn append(&self, i: &str, e: Epoch, r: &[Record]) -> Result<(), LogError> {
        self.main.append(i, e, r).await
    }
    async fn read(&self, i: &str, f: Seq, m: usize) -> Result<Vec<Record>, LogError> {
        self.main.read(i, f, m).await
    }
    async fn wait_for(&self, i: &str, a: Seq, t: Duration) -> Result<bool, LogError> {
        self.main.wait_for(i, a, t).await
    }
    async fn last_seq(&self, i: &str) -> Result<Seq, LogError> {
        self.main.last_seq(i).await
    }
    async fn truncate_before(&self, i: &str, b: Seq) -> Result<u64, LogError> {
        self.truncator.truncate_before(i, b).await
    }
    async fn fence(&self, i: &str) -> Result<Epoch, LogError> {
        self.main.fence(i).await
    }
    async fn epoch(&self, i: &str) -> Result<Epoch, LogError> {
        self.main.epoch(i).await
    }
}
