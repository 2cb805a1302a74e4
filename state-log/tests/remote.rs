//! `RemoteStore` ↔ `server::serve` over real loopback TCP: the conformance
//! suite, pipelining, malformed input, timeouts and reconnection.

use state_log::embedded::EmbeddedStore;
use state_log::remote::{RemoteStore, Timeouts};
use state_log::server::{self, encode_frame, Op, Reply, Request, Response};
use state_log::{testkit, LogError, LogStore};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(dir: &std::path::Path) -> Server {
        Self::start_on("127.0.0.1:0", dir).await
    }
    async fn start_on(addr: &str, dir: &std::path::Path) -> Server {
        let store = Arc::new(EmbeddedStore::open(dir).unwrap());
        let l = TcpListener::bind(addr).await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server::serve(l, store, async {
            let _ = rx.await;
        }));
        Server {
            addr,
            stop: Some(tx),
            task,
        }
    }
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server did not stop")
            .unwrap();
    }
}

async fn client(addr: SocketAddr) -> RemoteStore {
    RemoteStore::connect(&addr.to_string(), Timeouts::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path()).await;
    let store: Arc<dyn LogStore> = Arc::new(client(srv.addr).await);
    testkit::run_all(store, "tcp").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_does_not_block_appends_on_the_same_connection() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path()).await;
    let c = Arc::new(client(srv.addr).await);
    let w = {
        let c = c.clone();
        tokio::spawn(async move { c.wait_for("w1", 0, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // While the wait is parked on the server, other requests go through.
    for s in 1..=20 {
        c.append("other", 0, &[testkit::rec("other", s, 0)])
            .await
            .unwrap();
    }
    assert!(!w.is_finished());
    c.append("w1", 0, &[testkit::rec("w1", 1, 0)])
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .unwrap()
            .unwrap(),
        Ok(true)
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_appends_to_one_instance_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path()).await;
    let c = Arc::new(client(srv.addr).await);
    // Issue 200 appends without waiting for acks, from one task, polled in
    // issue order: each is queued on the connection before the next.
    let recs: Vec<_> = (1..=200).map(|s| testkit::rec("pipe", s, 0)).collect();
    let futs: Vec<_> = recs
        .iter()
        .map(|r| c.append("pipe", 0, std::slice::from_ref(r)))
        .collect();
    let results = join_in_order(futs).await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(c.read("pipe", 1, 1000).await.unwrap(), recs);
    srv.stop().await;
}

/// Poll all futures, first to last, until all are done (a minimal join_all).
async fn join_in_order<T>(
    futs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + '_>>>,
) -> Vec<T> {
    let mut futs: Vec<_> = futs.into_iter().map(Some).collect();
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if let Some(fut) = f {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        out[i] = Some(v);
                        *f = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

async fn expect_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("server did not close the connection");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_closes_the_connection_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path()).await;
    let good = client(srv.addr).await;
    good.append("m1", 0, &[testkit::rec("m1", 1, 0)])
        .await
        .unwrap();

    // Oversize length prefix.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    expect_closed(&mut s).await;

    // A valid length with garbage inside.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut g = 16u32.to_be_bytes().to_vec();
    g.extend_from_slice(&[0xc1; 16]);
    s.write_all(&g).await.unwrap();
    expect_closed(&mut s).await;

    // A well-formed request with a bad record frame: error response, the
    // connection stays usable.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let req = Request {
        id: 7,
        op: Op::Append {
            instance: "m1".into(),
            epoch: 0,
            frames: vec![serde_bytes::ByteBuf::from(vec![1, 2, 3])],
        },
    };
    s.write_all(&encode_frame(&req).unwrap()).await.unwrap();
    let resp = read_response(&mut s).await;
    assert_eq!(resp.id, 7);
    assert!(
        matches!(resp.res, Err(server::WireError::Invalid(_))),
        "{resp:?}"
    );
    let req = Request {
        id: 8,
        op: Op::LastSeq {
            instance: "m1".into(),
        },
    };
    s.write_all(&encode_frame(&req).unwrap()).await.unwrap();
    assert_eq!(read_response(&mut s).await.res, Ok(Reply::Num(1)));

    // Random junk of every length never takes the server down.
    for n in [1usize, 3, 4, 5, 9, 100, 4096] {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        let junk: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
        s.write_all(&junk).await.unwrap();
        drop(s);
    }
    good.append("m1", 0, &[testkit::rec("m1", 2, 0)])
        .await
        .unwrap();
    assert_eq!(good.read("m1", 1, 10).await.unwrap().len(), 2);
    srv.stop().await;
}

async fn read_response(s: &mut TcpStream) -> Response {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.unwrap();
    rmp_serde::from_slice(&buf).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_reconnect() {
    // A "server" that accepts and never answers → Timeout.
    let mute = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mute_addr = mute.local_addr().unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = mute.accept().await {
            held.push(s);
        }
    });
    let t = Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_millis(200),
    };
    let c = RemoteStore::connect(&mute_addr.to_string(), t)
        .await
        .unwrap();
    assert_eq!(
        c.last_seq("x").await,
        Err(LogError::Timeout(Duration::from_millis(200)))
    );

    // Nothing listening → Unavailable.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    assert!(matches!(
        RemoteStore::connect(&closed_addr.to_string(), t).await,
        Err(LogError::Unavailable(_))
    ));

    // Server restart: in-flight/next request fails Unavailable, then the
    // client reconnects on its own.
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path()).await;
    let addr = srv.addr;
    let c = client(addr).await;
    c.append("r1", 0, &[testkit::rec("r1", 1, 0)])
        .await
        .unwrap();
    srv.stop().await;
    let r = c.last_seq("r1").await;
    assert!(matches!(r, Err(LogError::Unavailable(_))), "{r:?}");
    let srv = Server::start_on(&addr.to_string(), dir.path()).await;
    assert_eq!(c.last_seq("r1").await, Ok(1));
    c.append("r1", 0, &[testkit::rec("r1", 2, 0)])
        .await
        .unwrap();
    srv.stop().await;
}

#[derive(Default)]
struct Counted {
    groups: std::sync::atomic::AtomicU64,
    group_records: std::sync::atomic::AtomicU64,
    group_bytes: std::sync::atomic::AtomicU64,
    appends_ok: std::sync::atomic::AtomicU64,
    appends_failed: std::sync::atomic::AtomicU64,
    reads: std::sync::atomic::AtomicU64,
    open: std::sync::atomic::AtomicI64,
}

impl state_log::embedded::StoreObserver for Counted {
    fn group_committed(&self, g: &state_log::embedded::GroupCommit) {
        use std::sync::atomic::Ordering::Relaxed;
        assert!(g.ok && g.commands >= 1);
        self.groups.fetch_add(1, Relaxed);
        self.group_records.fetch_add(g.records as u64, Relaxed);
        self.group_bytes.fetch_add(g.bytes as u64, Relaxed);
    }
    fn append_answered(&self, _records: usize, ok: bool, _latency: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        if ok {
            &self.appends_ok
        } else {
            &self.appends_failed
        }
        .fetch_add(1, Relaxed);
    }
    fn request(&self, op: &'static str) {
        if op == "read" {
            self.reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn connection(&self, opened: bool) {
        self.open.fetch_add(
            if opened { 1 } else { -1 },
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

#[tokio::test]
async fn the_observer_sees_groups_appends_requests_and_connections() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let seen = Arc::new(Counted::default());
    assert!(store.set_observer(seen.clone()));
    assert!(
        !store.set_observer(Arc::new(Counted::default())),
        "first one stays"
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(l, store.clone(), async {
        let _ = rx.await;
    }));
    let c = client(addr).await;
    let recs: Vec<_> = (1..=3).map(|s| testkit::rec("obs", s, 0)).collect();
    c.append("obs", 0, &recs).await.unwrap();
    c.append("obs", 0, &[testkit::rec("obs", 4, 0)])
        .await
        .unwrap();
    // A gap: answered, not durable.
    assert!(c
        .append("obs", 0, &[testkit::rec("obs", 9, 0)])
        .await
        .is_err());
    assert_eq!(c.read("obs", 1, 10).await.unwrap().len(), 4);
    assert_eq!(seen.open.load(Relaxed), 1);
    assert_eq!(seen.group_records.load(Relaxed), 4);
    assert!(seen.group_bytes.load(Relaxed) > 0);
    assert!((1..=3).contains(&seen.groups.load(Relaxed)));
    assert_eq!(seen.appends_ok.load(Relaxed), 2);
    assert_eq!(seen.appends_failed.load(Relaxed), 1);
    assert_eq!(seen.reads.load(Relaxed), 1);
    let logs = store.instances();
    assert_eq!(logs.len(), 1);
    assert_eq!(
        (logs[0].instance.as_str(), logs[0].last_seq, logs[0].epoch),
        ("obs", 4, 0)
    );
    drop(c);
    for _ in 0..200 {
        if seen.open.load(Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen.open.load(Relaxed), 0, "the connection's end is seen");
    let _ = tx.send(());
    task.await.unwrap();
}
