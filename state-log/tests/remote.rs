//! `RemoteStore` ↔ `server::serve` over real loopback TCP: the conformance
//! suite, pipelining, malformed input, timeouts and reconnection.

use state_log::embedded::EmbeddedStore;
use state_log::remote::{RemoteStore, Timeouts};
use state_log::server::{self, encode_frame, Limits, Op, Reply, Request, Response};
use state_log::testkit::LabCerts;
use state_log::{testkit, LogError, LogStore};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

struct Server {
    addr: SocketAddr,
    certs: Arc<LabCerts>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(dir: &std::path::Path) -> Server {
        Self::start_with("127.0.0.1:0", dir, Limits::default()).await
    }
    async fn start_on(addr: &str, dir: &std::path::Path) -> Server {
        Self::start_with(addr, dir, Limits::default()).await
    }
    async fn start_with(addr: &str, dir: &std::path::Path, limits: Limits) -> Server {
        let certs = Arc::new(LabCerts::generate(&dir.join("pki"), &["m1", "bgf1"]));
        let store = Arc::new(EmbeddedStore::open(&dir.join("data")).unwrap());
        let l = TcpListener::bind(addr).await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server::serve(l, store, certs.server_with(limits), async {
            let _ = rx.await;
        }));
        Server {
            addr,
            certs,
            stop: Some(tx),
            task,
        }
    }
    async fn client_as(&self, cn: &str) -> RemoteStore {
        let a = self.addr.to_string();
        RemoteStore::connect(&a, self.certs.client(cn, &a), Timeouts::default())
            .await
            .unwrap()
    }
    /// A raw TLS stream authenticated as `cn`.
    async fn raw(&self, cn: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tls = self.certs.client(cn, &self.addr.to_string());
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        tokio_rustls::TlsConnector::from(tls.config)
            .connect(tls.server_name, tcp)
            .await
            .unwrap()
    }
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server did not stop")
            .unwrap();
    }
}

/// The standby's credential: every instance (truncation at checkpoints).
async fn client(srv: &Server) -> RemoteStore {
    srv.client_as("standby:sb1").await
}

/// The contract suite's store over TCP: the standby's connection for
/// everything but truncation, the operator's for that (the suite truncates

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path()).await;
    let store: Arc<dyn LogStore> = Arc::new(testkit::SplitRights {
        main: Arc::new(client(&srv).await),
        truncator: Arc::new(srv.client_as("operator:ops").await),
    });
    testkit::run_all(store, "tcp").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_does_not_block_appends_on_the_same_connection() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path()).await;
    let c = Arc::new(client(&srv).await);
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
    let c = Arc::new(client(&srv).await);
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

/// The server closes the connection (a plain TCP peer may first get a TLS
/// alert record: a few bytes, never a response).
async fn expect_closed<S: tokio::io::AsyncRead + Unpin>(s: &mut S) {
    let mut buf = [0u8; 64];
    let mut got = 0;
    loop {
        let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("server did not close the connection");
        match r {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                got += n;
                assert!(got <= 64, "the server answered {got} bytes");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_closes_the_connection_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path()).await;
    let good = client(&srv).await;
    good.append("m1", 0, &[testkit::rec("m1", 1, 0)])
        .await
        .unwrap();

    // Oversize length prefix (from an authenticated peer).
    let mut s = srv.raw("active:m1").await;
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    s.flush().await.unwrap();
    expect_closed(&mut s).await;

    // A valid length with garbage inside.
    let mut s = srv.raw("active:m1").await;
    let mut g = 16u32.to_be_bytes().to_vec();
    g.extend_from_slice(&[0xc1; 16]);
    s.write_all(&g).await.unwrap();
    s.flush().await.unwrap();
    expect_closed(&mut s).await;

    // A well-formed request with a bad record frame: error response, the
    // connection stays usable.
    let mut s = srv.raw("active:m1").await;
    let req = Request {
        id: 7,
        op: Op::Append {
            instance: "m1".into(),
            epoch: 0,
            frames: vec![serde_bytes::ByteBuf::from(vec![1, 2, 3])],
        },
    };
    s.write_all(&encode_frame(&req).unwrap()).await.unwrap();
    s.flush().await.unwrap();
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
    s.flush().await.unwrap();
    assert_eq!(read_response(&mut s).await.res, Ok(Reply::Num(1)));

    // Random junk of every length, plain or inside TLS, never takes the
    // server down.
    for n in [1usize, 3, 4, 5, 9, 100, 4096] {
        let junk: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(&junk).await.unwrap();
        drop(s);
        let mut s = srv.raw("active:m1").await;
        s.write_all(&junk).await.unwrap();
        s.flush().await.unwrap();
        drop(s);
    }
    good.append("m1", 0, &[testkit::rec("m1", 2, 0)])
        .await
        .unwrap();
    assert_eq!(good.read("m1", 1, 10).await.unwrap().len(), 2);
    srv.stop().await;
}

async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Response {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.unwrap();
    server::decode_response(&buf).unwrap()
}

/// The attack of issue 16: a 30-byte MessagePack `Fence` frame from a plain
/// TCP socket raised an instance's epoch. Now nothing without a client
/// certificate of our CA gets past the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_touch_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path()).await;
    let fence = encode_frame(&Request {
        id: 1,
        op: Op::Fence {
            instance: "bgf1".into(),
        },
    })
    .unwrap();
    // Plain TCP: the bytes are not a TLS hello; closed, nothing done.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(&fence).await.unwrap();
    expect_closed(&mut s).await;
    // TLS without a client certificate.
    let no_cert = state_log::tls::client_config_no_auth(&srv.certs.dir.join("ca.pem")).unwrap();
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let r = tokio_rustls::TlsConnector::from(no_cert)
        .connect(state_log::tls::server_name("127.0.0.1").unwrap(), tcp)
        .await;
    if let Ok(mut s) = r {
        // TLS 1.3: the client learns of the refusal on its first read.
        let _ = s.write_all(&fence).await;
        let _ = s.flush().await;
        expect_closed(&mut s).await;
    }
    // A certificate of another CA (a stranger's lab).
    let other = tempfile::tempdir().unwrap();
    let stranger = LabCerts::generate(other.path(), &["bgf1"]);
    let a = srv.addr.to_string();
    let mut theirs = stranger.client("active:bgf1", &a);
    // ... trusting our server (so only our side can refuse).
    theirs.config = {
        let mut files = stranger.files("active:bgf1");
        files.ca = srv.certs.dir.join("ca.pem");
        state_log::tls::client_config(&files).unwrap()
    };
    let r = RemoteStore::connect(&a, theirs, Timeouts::default()).await;
    match r {
        Err(_) => {}
        Ok(c) => assert!(c.fence("bgf1").await.is_err()),
    }
    // A client that does not trust the server's CA refuses it.
    let r = RemoteStore::connect(&a, stranger.client("active:bgf1", &a), Timeouts::default()).await;
    assert!(
        matches!(r, Err(LogError::Unavailable(ref m)) if m.contains("TLS")),
        "{:?}",
        r.err()
    );
    let sb = client(&srv).await;
    assert_eq!(sb.epoch("bgf1").await, Ok(0), "nobody fenced bgf1");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_has_its_rights() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path()).await;
    let a1 = srv.client_as("active:bgf1").await;
    let m1 = srv.client_as("active:m1").await;
    let sb = client(&srv).await;
    let op = srv.client_as("operator:ops").await;
    let denied = |r: Result<u64, LogError>| matches!(r, Err(LogError::Denied(_)));
    // An active: its own log, fenced by itself at start.
    assert_eq!(a1.fence("bgf1").await, Ok(1));
    a1.append(
        "bgf1",
        1,
        &[testkit::rec("bgf1", 1, 1), testkit::rec("bgf1", 2, 1)],
    )
    .await
    .unwrap();
    // ... never another's.
    assert!(denied(m1.fence("bgf1").await));
    assert!(denied(m1.last_seq("bgf1").await));
    let r = m1.append("bgf1", 1, &[testkit::rec("bgf1", 3, 1)]).await;
    assert!(
        matches!(r, Err(LogError::Denied(ref m)) if m.contains("active:m1")),
        "{r:?}"
    );
    assert!(matches!(
        m1.read("bgf1", 1, 10).await,
        Err(LogError::Denied(_))
    ));
    // Truncation by a writer only at a checkpoint.
    assert!(denied(a1.truncate_before("bgf1", 2).await));
    let cp = state_log::Record {
        seq: 3,
        epoch: 1,
        body: state_log::Body::Checkpoint(vec![1, 2, 3]),
    };
    a1.append("bgf1", 1, &[cp]).await.unwrap();
    assert_eq!(a1.truncate_before("bgf1", 3).await, Ok(2));
    assert_eq!(a1.truncate_before("bgf1", 3).await, Ok(0), "idempotent");
    // The standby fences and reads any instance.
    assert_eq!(sb.fence("bgf1").await, Ok(2));
    assert_eq!(sb.read("bgf1", 1, 10).await.unwrap().len(), 1);
    assert!(matches!(
        a1.append("bgf1", 1, &[testkit::rec("bgf1", 4, 1)]).await,
        Err(LogError::StaleEpoch { .. })
    ));
    // The operator reads and truncates anywhere, never appends or fences.
    assert!(denied(op.fence("bgf1").await));
    assert!(matches!(
        op.append("bgf1", 2, &[testkit::rec("bgf1", 4, 2)]).await,
        Err(LogError::Denied(_))
    ));
    assert_eq!(op.last_seq("bgf1").await, Ok(3));
    assert_eq!(op.truncate_before("bgf1", 4).await, Ok(1));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_waiters_frames_and_idle_peers_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_connections: 3,
        max_waiters_per_instance: 2,
        max_frame: 64 * 1024,
        idle_timeout: Duration::from_millis(600),
        ..Limits::default()
    };
    let srv = Server::start_with("127.0.0.1:0", dir.path(), limits).await;
    // Waiters per instance.
    let sb = Arc::new(client(&srv).await);
    let mut waits = Vec::new();
    for _ in 0..2 {
        let c = sb.clone();
        waits.push(tokio::spawn(async move {
            c.wait_for("w", 0, Duration::from_secs(3)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = sb.wait_for("w", 0, Duration::from_secs(3)).await;
    assert!(
        matches!(third, Err(LogError::Unavailable(ref m)) if m.contains("waiters")),
        "{third:?}"
    );
    sb.append("w", 0, &[testkit::rec("w", 1, 0)]).await.unwrap();
    for w in waits {
        assert_eq!(w.await.unwrap(), Ok(true));
    }
    // A frame above the limit closes the connection.
    let mut s = srv.raw("standby:sb1").await;
    s.write_all(&(64 * 1024 + 1u32).to_be_bytes())
        .await
        .unwrap();
    s.flush().await.unwrap();
    expect_closed(&mut s).await;
    // Idle peers are closed: a TLS connection that says nothing, and a
    // plain TCP one that never starts its handshake (bounded at 5 s).
    let mut idle = srv.raw("standby:sb1").await;
    expect_closed(&mut idle).await;
    // Connections: sb holds one; two more fill the limit; the next is
    // closed at once.
    let _c2 = srv.raw("standby:sb1").await;
    let _c3 = srv.raw("standby:sb1").await;
    let mut c4 = TcpStream::connect(srv.addr).await.unwrap();
    expect_closed(&mut c4).await;
    drop((_c2, _c3));
    // Room again (the idle timeout closed the others, or they were dropped).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sb.last_seq("w").await, Ok(1));
    srv.stop().await;
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
        connect: Duration::from_millis(300),
        request: Duration::from_millis(200),
    };
    let dir = tempfile::tempdir().unwrap();
    let certs = LabCerts::generate(dir.path(), &[]);
    let a = mute_addr.to_string();
    // The TLS handshake never completes: the connect deadline applies.
    let r = RemoteStore::connect(&a, certs.client("standby:sb1", &a), t).await;
    assert_eq!(r.err(), Some(LogError::Timeout(Duration::from_millis(300))));

    // Nothing listening → Unavailable.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let a = closed_addr.to_string();
    assert!(matches!(
        RemoteStore::connect(&a, certs.client("standby:sb1", &a), t).await,
        Err(LogError::Unavailable(_))
    ));

    // Server restart: in-flight/next request fails Unavailable, then the
    // client reconnects on its own.
    let srv = Server::start(dir.path()).await;
    let addr = srv.addr;
    let c = client(&srv).await;
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
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("data")).unwrap());
    let seen = Arc::new(Counted::default());
    assert!(store.set_observer(seen.clone()));
    assert!(
        !store.set_observer(Arc::new(Counted::default())),
        "first one stays"
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let certs = LabCerts::generate(&dir.path().join("pki"), &[]);
    let task = tokio::spawn(server::serve(l, store.clone(), certs.server(), async {
        let _ = rx.await;
    }));
    let a = addr.to_string();
    let c = RemoteStore::connect(&a, certs.client("standby:sb1", &a), Timeouts::default())
        .await
        .unwrap();
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
