//! The embedded store served over mutual TLS (`bgf statelog`): accepting,
//! authenticating and bounding connections, and deciding what each peer
//! may do. The protocol itself is [`crate::wire`] (re-exported here).
//!
//! `bgf statelog` is **single-node**: one process, one data directory, no
//! replication. Multi-host deployments use JetStream (or Redis).
//!
//! # Requests
//!
//! - Client → server: [`Request`] `{ id: u64, op: Op }`. `id` is chosen by the
//!   client and echoed in the response; requests pipeline on one connection
//!   (many tasks share it) and responses may come back in any order.
//! - Server → client: [`Response`] `{ id: u64, res: Result<Reply, WireError> }`.
//!
//! Operations ([`Op`]) mirror [`LogStore`]: `Append { instance, epoch,
//! frames }` (each frame a record encoded with [`crate::Record::encode`],
//! checked by the server — CRC, contiguous seqs, epoch — and stored byte for
//! byte, so the CRC travels end to end), `Read { instance, from, max }`
//! (replies with frames; the reply is cut at [`MAX_READ_REPLY_BYTES`],
//! always carrying at least one record when any exists, so readers loop
//! until a read comes back empty), `WaitFor { instance, after, timeout_ms }`
//! (at most [`MAX_WAIT_MS`]), `LastSeq`, `Truncate { instance, before }`,
//! `Fence`, `Epoch`.
//!
//! # Who may do what
//!
//! Every connection is TLS with a client certificate signed by the CA the
//! server was given; its common name is the peer's [`Identity`]
//! ([`crate::tls`]). Rights ([`authorize`]):
//!
//! | request | `active:I` | `standby:S` | `operator:O` |
//! |---|---|---|---|
//! | read, wait, last seq, epoch | instance `I` | any | any |
//! | append | instance `I` | any (it writes what it took over) | — |
//! | fence | instance `I` (the claim of its own epoch at start) | any | — |
//! | truncate | `I`, at a checkpoint only | any, at a checkpoint only | anywhere |
//!
//! "At a checkpoint" means the record at `before` is a checkpoint: the
//! compaction after a checkpoint, which removes nothing replay needs. A
//! refused request gets [`WireError::Denied`] and is counted; the
//! connection stays.
//!
//! # Bounds ([`Limits`])
//!
//! Connections (beyond the limit a new one is closed at once), the TLS
//! handshake time, the frame size, the bytes of request frames held at once
//! over all connections (a reader waits for room before it takes a frame's
//! body: memory is bounded whatever the peers announce), the requests in
//! progress per connection (the server stops reading the connection until
//! one finishes), `wait_for` waiters per instance, the time to receive a
//! frame once its header arrived, and idle connections (nothing in progress
//! and no frame for [`Limits::idle_timeout`]). TCP keepalive finds peers
//! that vanished (half-open connections).
//!
//! The server handles every request in its own task, so a `WaitFor` never
//! holds up other requests on the connection, but it queues appends for the
//! group-commit writer in the order they arrive: appends pipelined on one
//! connection are applied in the order sent.
//!
//! A frame that is too long or does not decode as a request closes the
//! connection with a warning in the log (the stream cannot be resynchronised);
//! the server keeps serving the other connections. A request that decodes but
//! is invalid (bad instance id, bad frame, too many records) gets an error
//! response.

pub use crate::wire::*;

use crate::embedded::{check_frames, EmbeddedStore};
use crate::record::{Body, Seq};
use crate::store::{LogError, LogStore};
use crate::tls::{Identity, Role};
use serde_bytes::ByteBuf;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// Encoded responses waiting for the connection's writer.
const OUT_QUEUE: usize = 1024;

/// The server's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections at once.
    pub max_connections: usize,
    /// Largest request frame (bytes).
    pub max_frame: usize,
    /// Bytes of request frames held at once, all connections together.
    pub memory: usize,
    /// Requests in progress per connection.
    pub max_in_flight: usize,
    /// `wait_for` requests waiting at once per instance.
    pub max_waiters_per_instance: usize,
    /// Time for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time to receive a frame's body once its header arrived.
    pub frame_timeout: Duration,
    /// A connection with nothing in progress and no frame this long is closed.
    pub idle_timeout: Duration,
    /// Time for one socket write to the client.
    pub write_timeout: Duration,
    /// TCP keepalive idle time (probes every third of it, 3 of them).
    pub keepalive: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            max_frame: MAX_WIRE_FRAME,
            memory: 512 * 1024 * 1024,
            max_in_flight: 1024,
            max_waiters_per_instance: 64,
            handshake_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(15),
        }
    }
}

/// TLS and bounds of a server.
#[derive(Clone)]
pub struct ServerSettings {
    /// Mutual TLS ([`crate::tls::server_config`]).
    pub tls: Arc<rustls::ServerConfig>,
    /// Bounds.
    pub limits: Limits,
}

/// What `who` may do with `op`, before the store is asked (a truncation by
/// an active or a standby is further checked against the log:
/// [`checkpoint_at`]).
pub fn authorize(who: &Identity, op: &Op) -> Result<(), LogError> {
    let (instance, what) = match op {
        Op::Append { instance, .. } => (instance, "append to"),
        Op::Read { instance, .. } => (instance, "read"),
        Op::WaitFor { instance, .. } => (instance, "wait on"),
        Op::LastSeq { instance } => (instance, "read"),
        Op::Epoch { instance } => (instance, "read"),
        Op::Truncate { instance, .. } => (instance, "truncate"),
        Op::Fence { instance } => (instance, "fence"),
    };
    let ok = match who.role {
        Role::Active => *instance == who.name,
        Role::Standby => true,
        Role::Operator => !matches!(op, Op::Append { .. } | Op::Fence { .. }),
        Role::Server => false,
    };
    if ok {
        return Ok(());
    }
    let hint = match who.role {
        Role::Active => format!(
            "an active may only use its own instance's log ({})",
            who.name
        ),
        Role::Operator => "an operator may read and truncate, not append or fence".into(),
        _ => "a store node certificate is not a client credential".into(),
    };
    Err(LogError::Denied(format!(
        "{who} may not {what} the log of {instance}: {hint}"
    )))
}

/// Check that the record at `before` in `instance`'s log is a checkpoint
/// (so truncating below it removes nothing a replay needs).
async fn checkpoint_at(store: &EmbeddedStore, instance: &str, before: Seq) -> Result<(), LogError> {
    let recs = store.read_frames(instance, before, 1, usize::MAX).await?;
    match recs.first() {
        Some((r, _)) if r.seq == before && matches!(r.body, Body::Checkpoint(_)) => Ok(()),
        _ => Err(LogError::Denied(format!(
            "instance {instance}: record {before} is not a checkpoint — only an operator credential may truncate elsewhere"
        ))),
    }
}

/// Waiters per instance, bounded.
#[derive(Default)]
struct Waiters(Mutex<HashMap<String, usize>>);

struct WaiterSlot(Arc<Waiters>, String);

impl Waiters {
    fn take(self: &Arc<Self>, instance: &str, max: usize) -> Option<WaiterSlot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(instance.to_string()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(WaiterSlot(self.clone(), instance.to_string()))
    }
}

impl Drop for WaiterSlot {
    fn drop(&mut self) {
        let mut m = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// What every connection shares.
struct Shared {
    store: Arc<EmbeddedStore>,
    limits: Limits,
    memory: Arc<Semaphore>,
    waiters: Arc<Waiters>,
}

fn keepalive(stream: &TcpStream, idle: Duration) {
    let sock = socket2::SockRef::from(stream);
    let ka = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval((idle / 3).max(Duration::from_secs(1)))
        .with_retries(3);
    if let Err(e) = sock.set_tcp_keepalive(&ka) {
        debug!(error = %e, "cannot set TCP keepalive on a state log connection");
    }
}

/// Serve `store` on `listener` until `shutdown` resolves. Then stop
/// accepting, stop reading requests, let the requests in progress finish
/// (up to 5 s) and return.
pub async fn serve(
    listener: TcpListener,
    store: Arc<EmbeddedStore>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let acceptor = tokio_rustls::TlsAcceptor::from(settings.tls.clone());
    let limits = settings.limits;
    let shared = Arc::new(Shared {
        store: store.clone(),
        limits,
        memory: Arc::new(Semaphore::new(limits.memory.min(Semaphore::MAX_PERMITS))),
        waiters: Arc::new(Waiters::default()),
    });
    let mut refused_logged = None::<std::time::Instant>;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            acc = listener.accept() => match acc {
                Ok((stream, peer)) => {
                    if conns.len() >= limits.max_connections {
                        if let Some(o) = store.observer() {
                            o.refused("connections");
                        }
                        // One line per 10 s at most: a flood must not flood the log.
                        if refused_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            refused_logged = Some(std::time::Instant::now());
                            warn!(%peer, max = limits.max_connections, "state log connection refused: at the connection limit (counted in bgf_statelog_refused_total; further refusals are not logged for 10 s)");
                        }
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    keepalive(&stream, limits.keepalive);
                    if let Some(o) = store.observer() {
                        o.connection(true);
                    }
                    conns.spawn(handshake(stream, peer, acceptor.clone(), shared.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    warn!(error = %e, "cannot accept a state log connection (out of file descriptors? raise the limit)");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {
                if let Some(o) = store.observer() {
                    o.connection(false);
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    let n = conns.len();
    let all = async {
        while conns.join_next().await.is_some() {
            if let Some(o) = store.observer() {
                o.connection(false);
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), all)
        .await
        .is_err()
    {
        warn!(
            connections = n,
            "state log connections did not finish within 5 s; closing them"
        );
    }
    info!("state log server stopped");
}

async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(shared.limits.handshake_timeout, acceptor.accept(stream))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            if let Some(o) = shared.store.observer() {
                o.refused("handshake");
            }
            debug!(%peer, error = %e, "state log connection refused: TLS handshake failed (no or untrusted client certificate?)");
            return;
        }
        Err(_) => {
            if let Some(o) = shared.store.observer() {
                o.refused("handshake");
            }
            debug!(%peer, "state log connection closed: no TLS handshake within {:?}", shared.limits.handshake_timeout);
            return;
        }
    };
    let who = match crate::tls::peer_identity(tls.get_ref().1) {
        Ok(i) if i.role != Role::Server => i,
        Ok(i) => {
            if let Some(o) = shared.store.observer() {
                o.refused("identity");
            }
            warn!(%peer, identity = %i, "state log connection refused: a store node certificate is not a client credential");
            return;
        }
        Err(e) => {
            if let Some(o) = shared.store.observer() {
                o.refused("identity");
            }
            warn!(%peer, error = %e, "state log connection refused: the client certificate names no bgf role (common name role:name)");
            return;
        }
    };
    debug!(%peer, identity = %who, "state log client connected");
    connection(tls, peer, who, shared, stop).await;
}

/// Read one frame under the bounds: the header (an idle connection may wait
/// for it up to `idle`), then room in the memory budget, then the body
/// within the frame timeout.
async fn next_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    shared: &Shared,
    idle: Option<Duration>,
) -> Result<(Vec<u8>, OwnedSemaphorePermit), String> {
    let header = match idle {
        Some(d) => tokio::time::timeout(d, read_header(rd))
            .await
            .map_err(|_| format!("idle for {d:?}"))?,
        None => read_header(rd).await,
    };
    let header = header.map_err(|e| match e {
        ReadError::Closed => String::new(),
        e => e.to_string(),
    })?;
    let len = frame_len(header, shared.limits.max_frame).map_err(|e| e.to_string())?;
    let permit = shared
        .memory
        .clone()
        .acquire_many_owned(len.max(1) as u32)
        .await
        .map_err(|_| "server stopping".to_string())?;
    let body = tokio::time::timeout(shared.limits.frame_timeout, read_payload(rd, len))
        .await
        .map_err(|_| {
            format!(
                "a frame of {len} bytes did not arrive within {:?}",
                shared.limits.frame_timeout
            )
        })?
        .map_err(|e| e.to_string())?;
    Ok((body, permit))
}

async fn connection<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    who: Identity,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let (rd, wr) = tokio::io::split(stream);
    let mut rd = tokio::io::BufReader::with_capacity(64 * 1024, rd);
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    let writer = tokio::spawn(write_frames_bounded(
        wr,
        out_rx,
        shared.limits.write_timeout,
    ));
    let permits = Arc::new(Semaphore::new(shared.limits.max_in_flight));
    let store = shared.store.clone();
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let idle = tasks.is_empty().then_some(shared.limits.idle_timeout);
        // next_frame is not cancel-safe: only the stop signal may interrupt
        // it, and then the connection is dropped anyway.
        let frame = tokio::select! {
            _ = stop.changed() => break,
            f = next_frame(&mut rd, &shared, idle) => f,
        };
        let (payload, mem) = match frame {
            Ok(p) => p,
            Err(e) if e.is_empty() => {
                debug!(%peer, identity = %who, "state log client disconnected");
                break;
            }
            Err(e) => {
                warn!(%peer, identity = %who, error = %e, "state log connection closed");
                break;
            }
        };
        let req = match decode_request(&payload) {
            Ok(r) => r,
            Err(e) => {
                warn!(%peer, identity = %who, error = %e, bytes = payload.len(), "state log connection closed: a frame is not a valid request (client and server versions differ?)");
                break;
            }
        };
        drop(payload);
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let id = req.id;
        let respond = {
            let out = out_tx.clone();
            move |res: Result<Reply, LogError>| async move {
                let resp = Response {
                    id,
                    res: res.map_err(|e| WireError::from(&e)),
                };
                match encode_frame(&resp) {
                    Ok(f) => {
                        let _ = out.send(f).await;
                    }
                    Err(e) => {
                        let err = Response {
                            id,
                            res: Err(WireError::Unavailable(format!("reply too large: {e}"))),
                        };
                        if let Ok(f) = encode_frame(&err) {
                            let _ = out.send(f).await;
                        }
                    }
                }
                drop(permit);
                drop(mem);
            }
        };
        if let Err(e) = authorize(&who, &req.op) {
            if let Some(o) = store.observer() {
                o.refused("rights");
            }
            debug!(%peer, identity = %who, error = %e, "state log request refused");
            tasks.spawn(respond(Err(e)));
            continue;
        }
        match req.op {
            Op::Append {
                instance,
                epoch,
                frames,
            } => {
                let arrived = std::time::Instant::now();
                let observer = store.observer().cloned();
                let records = frames.len();
                let frames: Vec<Vec<u8>> = frames.into_iter().map(ByteBuf::into_vec).collect();
                // Queue in arrival order; wait for the ack in a task.
                let queued = match check_frames(&instance, epoch, &frames) {
                    Ok(first) => store.enqueue_append(&instance, epoch, first, frames).await,
                    Err(e) => Err(e),
                };
                tasks.spawn(async move {
                    let res = match queued {
                        Ok(ack) => ack.wait().await.map(|()| Reply::Done),
                        Err(e) => Err(e),
                    };
                    if let Some(o) = observer {
                        o.append_answered(records, res.is_ok(), arrived.elapsed());
                    }
                    respond(res).await;
                });
            }
            op => {
                if let Some(o) = store.observer() {
                    o.request(op_name(&op));
                }
                let (shared, who) = (shared.clone(), who.clone());
                tasks.spawn(async move { respond(other_op(&shared, &who, op).await).await });
            }
        }
    }
    // Let the requests in hand finish, then close the writer.
    while tasks.join_next().await.is_some() {}
    drop(out_tx);
    match writer.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(%peer, error = %e, "state log connection: write failed"),
        Err(e) => warn!(%peer, error = %e, "state log connection writer failed"),
    }
}

/// [`write_frames`] with a bound on each write: a client that stops reading
/// its responses is dropped instead of holding the server's memory.
async fn write_frames_bounded<W: AsyncWrite + Unpin>(
    w: W,
    rx: mpsc::Receiver<Vec<u8>>,
    bound: Duration,
) -> std::io::Result<()> {
    write_frames_with(w, rx, Some(bound)).await
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Append { .. } => "append",
        Op::Read { .. } => "read",
        Op::WaitFor { .. } => "wait_for",
        Op::LastSeq { .. } => "last_seq",
        Op::Truncate { .. } => "truncate",
        Op::Fence { .. } => "fence",
        Op::Epoch { .. } => "epoch",
    }
}

async fn other_op(shared: &Shared, who: &Identity, op: Op) -> Result<Reply, LogError> {
    let store = &*shared.store;
    Ok(match op {
        Op::Append { .. } => return Err(LogError::Invalid("internal: append routed wrong".into())),
        Op::Read {
            instance,
            from,
            max,
        } => {
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            let recs = store
                .read_frames(&instance, from, max, MAX_READ_REPLY_BYTES)
                .await?;
            let out = recs.into_iter().map(|(_, f)| ByteBuf::from(f)).collect();
            Reply::Frames(out)
        }
        Op::WaitFor {
            instance,
            after,
            timeout_ms,
        } => {
            let Some(_slot) = shared
                .waiters
                .take(&instance, shared.limits.max_waiters_per_instance)
            else {
                return Err(LogError::Unavailable(format!(
                    "instance {instance}: {} waiters already; try again later",
                    shared.limits.max_waiters_per_instance
                )));
            };
            Reply::Bool(
                store
                    .wait_for(
                        &instance,
                        after,
                        Duration::from_millis(timeout_ms.min(MAX_WAIT_MS)),
                    )
                    .await?,
            )
        }
        Op::LastSeq { instance } => Reply::Num(store.last_seq(&instance).await?),
        Op::Truncate { instance, before } => {
            if who.role != Role::Operator {
                crate::store::check_instance(&instance)?;
                // Nothing to remove is always allowed (idempotent compaction).
                let first = store
                    .instances()
                    .into_iter()
                    .find(|l| l.instance == instance)
                    .map_or(1, |l| l.first_seq);
                if before > first {
                    checkpoint_at(store, &instance, before).await?;
                }
            }
            Reply::Num(store.truncate_before(&instance, before).await?)
        }
        Op::Fence { instance } => Reply::Num(store.fence(&instance).await?),
        Op::Epoch { instance } => Reply::Num(store.epoch(&instance).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(cn: &str) -> Identity {
        Identity::parse(cn).unwrap()
    }

    #[test]
    fn rights_by_role() {
        let a = who("active:bgf1");
        let s = who("standby:sb1");
        let o = who("operator:ops");
        let inst = |i: &str| i.to_string();
        let ops = |i: &str| {
            vec![
                Op::Append {
                    instance: inst(i),
                    epoch: 1,
                    frames: vec![],
                },
                Op::Read {
                    instance: inst(i),
                    from: 1,
                    max: 1,
                },
                Op::WaitFor {
                    instance: inst(i),
                    after: 0,
                    timeout_ms: 1,
                },
                Op::LastSeq { instance: inst(i) },
                Op::Epoch { instance: inst(i) },
                Op::Truncate {
                    instance: inst(i),
                    before: 2,
                },
                Op::Fence { instance: inst(i) },
            ]
        };
        for op in ops("bgf1") {
            assert!(authorize(&a, &op).is_ok(), "{op:?}");
            assert!(authorize(&s, &op).is_ok(), "{op:?}");
        }
        for op in ops("bgf2") {
            let e = authorize(&a, &op).unwrap_err();
            assert!(
                matches!(e, LogError::Denied(ref m) if m.contains("own instance")),
                "{e}"
            );
            assert!(authorize(&s, &op).is_ok(), "{op:?}");
            let allowed = !matches!(op, Op::Append { .. } | Op::Fence { .. });
            assert_eq!(authorize(&o, &op).is_ok(), allowed, "{op:?}");
        }
        assert!(authorize(
            &who("server:n1"),
            &Op::LastSeq {
                instance: inst("x")
            }
        )
        .is_err());
    }
}
