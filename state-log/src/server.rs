//! The embedded store served over TCP (`bgf statelog`), and the wire
//! protocol shared with [`crate::remote::RemoteStore`].
//!
//! `bgf statelog` is **single-node**: one process, one data directory, no
//! replication. Multi-host deployments (a standby on another host) use the
//! Redis Streams backend.
//!
//! # Protocol
//!
//! Both directions carry frames: a big-endian `u32` payload length, then the
//! payload, a MessagePack value (rmp-serde, structs as arrays). A length above
//! [`MAX_WIRE_FRAME`] is a protocol error.
//!
//! - Client → server: [`Request`] `{ id: u64, op: Op }`. `id` is chosen by the
//!   client and echoed in the response; requests pipeline on one connection
//!   (many tasks share it) and responses may come back in any order.
//! - Server → client: [`Response`] `{ id: u64, res: Result<Reply, WireError> }`.
//!
//! Operations ([`Op`]) mirror [`LogStore`]: `Append { instance, epoch,
//! frames }` (each frame a record encoded with [`Record::encode`], checked by
//! the server — CRC, contiguous seqs, epoch — and stored byte for byte, so the
//! CRC travels end to end), `Read { instance, from, max }` (replies with
//! frames; the reply is cut at [`MAX_READ_REPLY_BYTES`], always carrying at
//! least one record when any exists, so readers loop until a read comes back
//! empty), `WaitFor { instance, after, timeout_ms }` (at most
//! [`MAX_WAIT_MS`]), `LastSeq`, `Truncate { instance, before }`, `Fence`,
//! `Epoch`.
//!
//! The server handles every request in its own task, so a `WaitFor` never
//! holds up other requests on the connection, but it queues appends for the
//! group-commit writer in the order they arrive: appends pipelined on one
//! connection are applied in the order sent. At most [`MAX_IN_FLIGHT`]
//! requests per connection are in progress; the server stops reading the
//! connection until one finishes (backpressure, no unbounded queue).
//!
//! A frame that is too long or does not decode as a request closes the
//! connection with a warning in the log (the stream cannot be resynchronised);
//! the server keeps serving the other connections. A request that decodes but
//! is invalid (bad instance id, bad frame, too many records) gets an error
//! response.

use crate::embedded::{check_frames, EmbeddedStore, MAX_APPEND_BYTES};
use crate::record::{Epoch, FrameError, Record, Seq};
use crate::store::{LogError, LogStore};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// Largest frame payload accepted in either direction.
pub const MAX_WIRE_FRAME: usize = MAX_APPEND_BYTES + 1024 * 1024;
/// A read reply stops adding records past this many bytes.
pub const MAX_READ_REPLY_BYTES: usize = 16 * 1024 * 1024;
/// Longest `WaitFor` the server accepts (clients wait longer in rounds).
pub const MAX_WAIT_MS: u64 = 60_000;
/// Requests in progress per connection.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Encoded responses waiting for the connection's writer.
const OUT_QUEUE: usize = 1024;
/// Bytes coalesced into one socket write.
const WRITE_COALESCE: usize = 256 * 1024;

/// A request frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Client-chosen id, echoed in the response.
    pub id: u64,
    /// The operation.
    pub op: Op,
}

/// Operations (mirror [`LogStore`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// [`LogStore::append`] with encoded records.
    Append {
        /// Instance id.
        instance: String,
        /// Writer's epoch.
        epoch: Epoch,
        /// Frames ([`Record::encode`]) with contiguous seqs.
        frames: Vec<ByteBuf>,
    },
    /// [`LogStore::read`].
    Read {
        /// Instance id.
        instance: String,
        /// First seq.
        from: Seq,
        /// Most records.
        max: u64,
    },
    /// [`LogStore::wait_for`].
    WaitFor {
        /// Instance id.
        instance: String,
        /// Wait for a seq above this.
        after: Seq,
        /// Milliseconds (≤ [`MAX_WAIT_MS`]).
        timeout_ms: u64,
    },
    /// [`LogStore::last_seq`].
    LastSeq {
        /// Instance id.
        instance: String,
    },
    /// [`LogStore::truncate_before`].
    Truncate {
        /// Instance id.
        instance: String,
        /// Remove seqs below this.
        before: Seq,
    },
    /// [`LogStore::fence`].
    Fence {
        /// Instance id.
        instance: String,
    },
    /// [`LogStore::epoch`].
    Epoch {
        /// Instance id.
        instance: String,
    },
}

/// Successful results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Append done (durable).
    Done,
    /// Frames read.
    Frames(Vec<ByteBuf>),
    /// `wait_for` result.
    Bool(bool),
    /// A seq, count or epoch.
    Num(u64),
}

/// A response frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// Outcome.
    pub res: Result<Reply, WireError>,
}

/// [`LogError`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireError {
    /// [`LogError::StaleEpoch`].
    StaleEpoch(String, Epoch, Epoch),
    /// [`LogError::Gap`].
    Gap(String, Seq, Seq),
    /// [`LogError::Corrupt`].
    Corrupt(String, Seq, WireFrameError),
    /// [`LogError::Timeout`] (milliseconds).
    Timeout(u64),
    /// [`LogError::Unavailable`].
    Unavailable(String),
    /// [`LogError::Invalid`].
    Invalid(String),
}

/// [`FrameError`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireFrameError {
    /// [`FrameError::Truncated`].
    Truncated(u64, u64),
    /// [`FrameError::Version`].
    Version(u8),
    /// [`FrameError::TooLarge`].
    TooLarge(u64),
    /// [`FrameError::Crc`].
    Crc(u32, u32),
    /// [`FrameError::Decode`].
    Decode(String),
}

impl From<&LogError> for WireError {
    fn from(e: &LogError) -> Self {
        match e.clone() {
            LogError::StaleEpoch {
                instance,
                presented,
                current,
            } => WireError::StaleEpoch(instance, presented, current),
            LogError::Gap {
                instance,
                expected,
                got,
            } => WireError::Gap(instance, expected, got),
            LogError::Corrupt {
                instance,
                seq,
                reason,
            } => WireError::Corrupt(
                instance,
                seq,
                match reason {
                    FrameError::Truncated { need, have } => {
                        WireFrameError::Truncated(need as u64, have as u64)
                    }
                    FrameError::Version(v) => WireFrameError::Version(v),
                    FrameError::TooLarge(n) => WireFrameError::TooLarge(n as u64),
                    FrameError::Crc { stored, computed } => WireFrameError::Crc(stored, computed),
                    FrameError::Decode(s) => WireFrameError::Decode(s),
                },
            ),
            LogError::Timeout(d) => WireError::Timeout(d.as_millis() as u64),
            LogError::Unavailable(s) => WireError::Unavailable(s),
            LogError::Invalid(s) => WireError::Invalid(s),
        }
    }
}

impl From<WireError> for LogError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::StaleEpoch(instance, presented, current) => LogError::StaleEpoch {
                instance,
                presented,
                current,
            },
            WireError::Gap(instance, expected, got) => LogError::Gap {
                instance,
                expected,
                got,
            },
            WireError::Corrupt(instance, seq, r) => LogError::Corrupt {
                instance,
                seq,
                reason: match r {
                    WireFrameError::Truncated(need, have) => FrameError::Truncated {
                        need: need as usize,
                        have: have as usize,
                    },
                    WireFrameError::Version(v) => FrameError::Version(v),
                    WireFrameError::TooLarge(n) => FrameError::TooLarge(n as usize),
                    WireFrameError::Crc(stored, computed) => FrameError::Crc { stored, computed },
                    WireFrameError::Decode(s) => FrameError::Decode(s),
                },
            },
            WireError::Timeout(ms) => LogError::Timeout(Duration::from_millis(ms)),
            WireError::Unavailable(s) => LogError::Unavailable(format!("server: {s}")),
            WireError::Invalid(s) => LogError::Invalid(s),
        }
    }
}

/// Encode a value as one wire frame (length prefix + MessagePack).
pub fn encode_frame<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; 4];
    rmp_serde::encode::write(&mut out, v).map_err(|e| format!("encode: {e}"))?;
    let len = out.len() - 4;
    if len > MAX_WIRE_FRAME {
        return Err(format!("message of {len} bytes exceeds {MAX_WIRE_FRAME}"));
    }
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Why reading a frame stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection between frames.
    Closed,
    /// I/O error (including EOF inside a frame).
    Io(std::io::Error),
    /// Length prefix above [`MAX_WIRE_FRAME`].
    TooLong(usize),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => write!(f, "connection closed"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::TooLong(n) => {
                write!(f, "frame length {n} exceeds the maximum {MAX_WIRE_FRAME}")
            }
        }
    }
}

/// Read one frame's payload.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, ReadError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ReadError::Closed),
        Err(e) => return Err(ReadError::Io(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_WIRE_FRAME {
        return Err(ReadError::TooLong(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await.map_err(ReadError::Io)?;
    Ok(buf)
}

/// Write frames from `rx` to `w`, coalescing what is queued into one write.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&first);
        while buf.len() < WRITE_COALESCE {
            match rx.try_recv() {
                Ok(f) => buf.extend_from_slice(&f),
                Err(_) => break,
            }
        }
        w.write_all(&buf).await?;
    }
    let _ = w.shutdown().await;
    Ok(())
}

/// Serve `store` on `listener` until `shutdown` resolves. Then stop
/// accepting, stop reading requests, let the requests in progress finish
/// (up to 5 s) and return.
pub async fn serve(
    listener: TcpListener,
    store: Arc<EmbeddedStore>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            acc = listener.accept() => match acc {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    debug!(%peer, "state log client connected");
                    if let Some(o) = store.observer() {
                        o.connection(true);
                    }
                    conns.spawn(connection(stream, peer, store.clone(), stop_rx.clone()));
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

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    store: Arc<EmbeddedStore>,
    mut stop: watch::Receiver<bool>,
) {
    let (rd, wr) = stream.into_split();
    let mut rd = tokio::io::BufReader::with_capacity(64 * 1024, rd);
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    let writer = tokio::spawn(write_frames(wr, out_rx));
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        // read_frame is not cancel-safe: only the stop signal may interrupt
        // it, and then the connection is dropped anyway.
        let frame = tokio::select! {
            _ = stop.changed() => break,
            f = read_frame(&mut rd) => f,
        };
        let payload = match frame {
            Ok(p) => p,
            Err(ReadError::Closed) => {
                debug!(%peer, "state log client disconnected");
                break;
            }
            Err(e) => {
                warn!(%peer, error = %e, "state log connection closed: unreadable frame");
                break;
            }
        };
        let req: Request = match rmp_serde::from_slice(&payload) {
            Ok(r) => r,
            Err(e) => {
                warn!(%peer, error = %e, bytes = payload.len(), "state log connection closed: a frame is not a valid request (client and server versions differ, or not a state log client)");
                break;
            }
        };
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
            }
        };
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
                    o.request(match &op {
                        Op::Append { .. } => "append",
                        Op::Read { .. } => "read",
                        Op::WaitFor { .. } => "wait_for",
                        Op::LastSeq { .. } => "last_seq",
                        Op::Truncate { .. } => "truncate",
                        Op::Fence { .. } => "fence",
                        Op::Epoch { .. } => "epoch",
                    });
                }
                let store = store.clone();
                tasks.spawn(async move { respond(other_op(&store, op).await).await });
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

async fn other_op(store: &EmbeddedStore, op: Op) -> Result<Reply, LogError> {
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
        } => Reply::Bool(
            store
                .wait_for(
                    &instance,
                    after,
                    Duration::from_millis(timeout_ms.min(MAX_WAIT_MS)),
                )
                .await?,
        ),
        Op::LastSeq { instance } => Reply::Num(store.last_seq(&instance).await?),
        Op::Truncate { instance, before } => {
            Reply::Num(store.truncate_before(&instance, before).await?)
        }
        Op::Fence { instance } => Reply::Num(store.fence(&instance).await?),
        Op::Epoch { instance } => Reply::Num(store.epoch(&instance).await?),
    })
}

/// Decode the frames of a read reply (`frames[i]` should hold seq
/// `from + i`... or later after truncation; the seq reported for a bad frame
/// is the one after the previous good record).
pub fn decode_frames(
    instance: &str,
    from: Seq,
    frames: Vec<ByteBuf>,
) -> Result<Vec<Record>, LogError> {
    let mut out: Vec<Record> = Vec::with_capacity(frames.len());
    for f in frames {
        let expect = out.last().map(|r| r.seq + 1).unwrap_or(from);
        match Record::decode(&f) {
            Ok((r, _)) => out.push(r),
            Err(reason) => {
                return Err(LogError::Corrupt {
                    instance: instance.to_string(),
                    seq: expect,
                    reason,
                })
            }
        }
    }
    Ok(out)
}
