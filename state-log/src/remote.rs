//! [`RemoteStore`]: the [`LogStore`] client of `bgf statelog` (the embedded
//! store served over TCP by [`crate::server`], whose module doc describes the
//! protocol).
//!
//! One TCP connection carries every request of the client: each request gets
//! an id, is queued to a writer task (which coalesces queued frames into one
//! socket write) and its caller awaits the response with that id, which a
//! reader task dispatches. Requests from many tasks therefore pipeline, and a
//! `wait_for` in progress does not hold up appends (the server runs each
//! request in its own task). Appends issued one after another (each queued
//! before the next is issued) are applied in that order, so a writer may
//! pipeline appends to one instance.
//!
//! Every request has a deadline ([`Timeouts::request`]; a `wait_for` gets its
//! own timeout on top) → [`LogError::Timeout`]. A lost connection fails the
//! requests in flight with [`LogError::Unavailable`]; the next request
//! connects again. Single-node: see [`crate::server`].
//!
//! The connection is mutual TLS ([`ClientTls`]): the client checks the
//! server's certificate against the CA and presents its own, whose common
//! name is its role (`active:<instance>`, `standby:<name>`,
//! `operator:<name>`); the server decides what that role may do.

use crate::record::{Epoch, Record, Seq};
use crate::store::{check_instance, Ack, Batch, LogError, LogStore};
use crate::tls::TlsFiles;
use crate::wire::{
    decode_frames, decode_response, encode_frame, read_frame, write_frames, Op, ReadError, Reply,
    Request, WireError, MAX_WAIT_MS, MAX_WIRE_FRAME,
};
use serde_bytes::ByteBuf;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Client deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the TCP connection.
    pub connect: Duration,
    /// Every request (a `wait_for` adds its own timeout to this).
    pub request: Duration,
}

impl Default for Timeouts {
    /// 1 s to connect, 1 s per request.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(1),
        }
    }
}

/// The client's TLS: its configuration (CA, certificate, key) and the
/// name the server's certificate must carry.
#[derive(Clone)]
pub struct ClientTls {
    /// rustls client configuration ([`crate::tls::client_config`]).
    pub config: Arc<rustls::ClientConfig>,
    /// Name checked against the server's certificate (host or IP).
    pub server_name: rustls::pki_types::ServerName<'static>,
}

impl ClientTls {
    /// From PEM files; the server is checked against `server_name`, or
    /// against the host part of `addr` when `None`.
    pub fn from_files(
        files: &TlsFiles,
        server_name: Option<&str>,
        addr: &str,
    ) -> Result<ClientTls, String> {
        let host = match server_name {
            Some(n) => n.to_string(),
            None => addr
                .rsplit_once(':')
                .map(|(h, _)| h.to_string())
                .unwrap_or_else(|| addr.to_string()),
        };
        Ok(ClientTls {
            config: crate::tls::client_config(files)?,
            server_name: crate::tls::server_name(&host)?,
        })
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

type Pending = HashMap<u64, oneshot::Sender<Result<Reply, WireError>>>;

/// Requests awaiting responses; `None` once the connection is dead.
type PendingMap = Arc<Mutex<Option<Pending>>>;

fn lock(p: &PendingMap) -> std::sync::MutexGuard<'_, Option<Pending>> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

struct Conn {
    out: mpsc::Sender<Vec<u8>>,
    pending: PendingMap,
    reader: tokio::task::JoinHandle<()>,
}

impl Conn {
    fn alive(&self) -> bool {
        lock(&self.pending).is_some()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Mark the connection dead and fail every request in flight.
fn kill(pending: &PendingMap) {
    // Dropping the senders wakes their callers with Unavailable.
    lock(pending).take();
}

/// A request on the wire, awaiting its response.
struct PendingReply {
    id: u64,
    rx: oneshot::Receiver<Result<Reply, WireError>>,
    conn: Arc<Conn>,
    lost: LogError,
}

impl PendingReply {
    /// The reply within `left` (reported as a timeout of `deadline`).
    async fn wait(self, left: Duration, deadline: Duration) -> Result<Reply, LogError> {
        match tokio::time::timeout(left, self.rx).await {
            Ok(Ok(r)) => r.map_err(LogError::from),
            Ok(Err(_)) => Err(self.lost),
            Err(_) => {
                if let Some(m) = lock(&self.conn.pending).as_mut() {
                    m.remove(&self.id);
                }
                Err(LogError::Timeout(deadline))
            }
        }
    }
}

/// Client of a `bgf statelog` server.
pub struct RemoteStore {
    addr: String,
    tls: ClientTls,
    timeouts: Timeouts,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    next_id: AtomicU64,
}

impl RemoteStore {
    /// Connect to `addr` (`host:port`). Fails with `Unavailable` or `Timeout`
    /// if the server cannot be reached now; later losses reconnect.
    pub async fn connect(addr: &str, tls: ClientTls, timeouts: Timeouts) -> Result<Self, LogError> {
        let s = RemoteStore {
            addr: addr.to_string(),
            tls,
            timeouts,
            conn: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
        };
        {
            let mut g = s.conn.lock().await;
            s.conn_locked(&mut g).await?;
        }
        Ok(s)
    }

    /// The server address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn conn_locked(&self, g: &mut Option<Arc<Conn>>) -> Result<Arc<Conn>, LogError> {
        if let Some(c) = g.as_ref().filter(|c| c.alive()) {
            return Ok(c.clone());
        }
        *g = None;
        let connector = tokio_rustls::TlsConnector::from(self.tls.config.clone());
        let connect = async {
            let tcp = TcpStream::connect(&self.addr).await.map_err(|e| {
                LogError::Unavailable(format!(
                    "cannot connect to the state log server at {}: {e} (is `bgf statelog` running there?)",
                    self.addr
                ))
            })?;
            let _ = tcp.set_nodelay(true);
            connector
                .connect(self.tls.server_name.clone(), tcp)
                .await
                .map_err(|e| {
                    LogError::Unavailable(format!(
                        "TLS with the state log server at {} failed: {e} — check that its certificate is signed by our CA and names {:?}, and that ours is signed by the CA it trusts",
                        self.addr, self.tls.server_name
                    ))
                })
        };
        let stream = match tokio::time::timeout(self.timeouts.connect, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(LogError::Timeout(self.timeouts.connect)),
        };
        let (rd, wr) = tokio::io::split(stream);
        let pending: PendingMap = Arc::new(Mutex::new(Some(HashMap::new())));
        let (out, out_rx) = mpsc::channel::<Vec<u8>>(4096);
        {
            let (p, addr) = (pending.clone(), self.addr.clone());
            tokio::spawn(async move {
                if let Err(e) = write_frames(wr, out_rx).await {
                    warn!(server = %addr, error = %e, "state log connection lost (write failed); reconnecting on next use");
                }
                kill(&p);
            });
        }
        let reader = {
            let (p, addr) = (pending.clone(), self.addr.clone());
            tokio::spawn(async move {
                let mut rd = tokio::io::BufReader::with_capacity(64 * 1024, rd);
                loop {
                    let payload = match read_frame(&mut rd, MAX_WIRE_FRAME).await {
                        Ok(f) => f,
                        Err(ReadError::Closed) => {
                            debug!(server = %addr, "state log server closed the connection");
                            break;
                        }
                        Err(e) => {
                            warn!(server = %addr, error = %e, "state log connection lost; reconnecting on next use");
                            break;
                        }
                    };
                    let resp = match decode_response(&payload) {
                        Ok(r) => r,
                        Err(e) => {
                            warn!(server = %addr, error = %e, "state log server sent an undecodable response (version mismatch?); dropping the connection");
                            break;
                        }
                    };
                    let tx = lock(&p).as_mut().and_then(|m| m.remove(&resp.id));
                    if let Some(tx) = tx {
                        let _ = tx.send(resp.res);
                    }
                }
                kill(&p);
            })
        };
        let c = Arc::new(Conn {
            out,
            pending,
            reader,
        });
        *g = Some(c.clone());
        Ok(c)
    }

    async fn call(&self, op: Op, deadline: Duration) -> Result<Reply, LogError> {
        let started = tokio::time::Instant::now();
        let reply = tokio::time::timeout(deadline, self.start(op))
            .await
            .map_err(|_| LogError::Timeout(deadline))??;
        reply
            .wait(deadline.saturating_sub(started.elapsed()), deadline)
            .await
    }

    /// Queue `op` on the connection (under the connection lock: requests
    /// started one after another go out in that order) and return the
    /// pending reply.
    async fn start(&self, op: Op) -> Result<PendingReply, LogError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_frame(&Request { id, op }).map_err(LogError::Invalid)?;
        let (tx, rx) = oneshot::channel();
        let mut g = self.conn.lock().await;
        let conn = self.conn_locked(&mut g).await?;
        match lock(&conn.pending).as_mut() {
            Some(m) => {
                m.insert(id, tx);
            }
            None => return Err(self.lost()),
        }
        conn.out.send(frame).await.map_err(|_| self.lost())?;
        Ok(PendingReply {
            id,
            rx,
            conn: conn.clone(),
            lost: self.lost(),
        })
    }

    fn lost(&self) -> LogError {
        LogError::Unavailable(format!(
            "connection to the state log server at {} lost",
            self.addr
        ))
    }

    async fn num(&self, op: Op) -> Result<u64, LogError> {
        match self.call(op, self.timeouts.request).await? {
            Reply::Num(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(r: &Reply) -> LogError {
    LogError::Unavailable(format!(
        "state log server sent an unexpected reply {r:?} (version mismatch?)"
    ))
}

#[async_trait::async_trait]
impl LogStore for RemoteStore {
    async fn append(
        &self,
        instance: &str,
        epoch: Epoch,
        records: &[Record],
    ) -> Result<(), LogError> {
        let batch = Arc::new(Batch::encode(epoch, records)?);
        self.submit(instance, batch).await?.await
    }

    async fn submit(&self, instance: &str, batch: Arc<Batch>) -> Result<Ack, LogError> {
        check_instance(instance)?;
        let op = Op::Append {
            instance: instance.to_string(),
            epoch: batch.epoch(),
            frames: batch
                .frames()
                .iter()
                .map(|f| ByteBuf::from(f.to_vec()))
                .collect(),
        };
        let deadline = self.timeouts.request;
        let reply = tokio::time::timeout(deadline, self.start(op))
            .await
            .map_err(|_| LogError::Timeout(deadline))??;
        Ok(Box::pin(async move {
            match reply.wait(deadline, deadline).await? {
                Reply::Done => Ok(()),
                other => Err(unexpected(&other)),
            }
        }))
    }

    async fn read(&self, instance: &str, from: Seq, max: usize) -> Result<Vec<Record>, LogError> {
        check_instance(instance)?;
        let op = Op::Read {
            instance: instance.to_string(),
            from,
            max: max as u64,
        };
        match self.call(op, self.timeouts.request).await? {
            Reply::Frames(f) => decode_frames(instance, from, f),
            other => Err(unexpected(&other)),
        }
    }

    async fn wait_for(
        &self,
        instance: &str,
        after: Seq,
        timeout: Duration,
    ) -> Result<bool, LogError> {
        check_instance(instance)?;
        let mut left = timeout;
        loop {
            let chunk = left.min(Duration::from_millis(MAX_WAIT_MS));
            let op = Op::WaitFor {
                instance: instance.to_string(),
                after,
                timeout_ms: chunk.as_millis() as u64,
            };
            match self.call(op, chunk + self.timeouts.request).await? {
                Reply::Bool(true) => return Ok(true),
                Reply::Bool(false) => {}
                other => return Err(unexpected(&other)),
            }
            left = left.saturating_sub(chunk);
            if left.is_zero() {
                return Ok(false);
            }
        }
    }

    async fn last_seq(&self, instance: &str) -> Result<Seq, LogError> {
        check_instance(instance)?;
        self.num(Op::LastSeq {
            instance: instance.to_string(),
        })
        .await
    }

    async fn truncate_before(&self, instance: &str, before: Seq) -> Result<u64, LogError> {
        check_instance(instance)?;
        self.num(Op::Truncate {
            instance: instance.to_string(),
            before,
        })
        .await
    }

    async fn fence(&self, instance: &str) -> Result<Epoch, LogError> {
        check_instance(instance)?;
        self.num(Op::Fence {
            instance: instance.to_string(),
        })
        .await
    }

    async fn epoch(&self, instance: &str) -> Result<Epoch, LogError> {
        check_instance(instance)?;
        self.num(Op::Epoch {
            instance: instance.to_string(),
        })
        .await
    }
}
