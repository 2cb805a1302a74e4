//! The wire protocol of the embedded store (`bgf statelog`, served by
//! [`crate::server`], spoken by [`crate::remote::RemoteStore`]): message
//! types, the length-prefixed MessagePack framing, and pure decoders (no
//! I/O) that fuzz targets and both ends share.
//!
//! Both directions carry frames: a big-endian `u32` payload length, then the
//! payload, a MessagePack value (rmp-serde, structs as arrays). A length
//! above the receiver's limit ([`MAX_WIRE_FRAME`] at most) is a protocol
//! error. The byte stream runs inside mutual TLS ([`crate::tls`]).
//!
//! Not here: who may send what ([`crate::server`]), connections and
//! retries ([`crate::remote`]).

use crate::embedded::MAX_APPEND_BYTES;
use crate::record::{Epoch, FrameError, Record, Seq};
use crate::store::LogError;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Largest frame payload accepted in either direction.
pub const MAX_WIRE_FRAME: usize = MAX_APPEND_BYTES + 1024 * 1024;
/// A read reply stops adding records past this many bytes.
pub const MAX_READ_REPLY_BYTES: usize = 16 * 1024 * 1024;
/// Longest `WaitFor` the server accepts (clients wait longer in rounds).
pub const MAX_WAIT_MS: u64 = 60_000;
/// Bytes coalesced into one socket write.
const WRITE_COALESCE: usize = 256 * 1024;
/// A frame's buffer grows by at most this much per read (a peer that
/// announces a large frame must send it before we allocate it).
const READ_CHUNK: usize = 256 * 1024;
/// A request frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Client-chosen id, echoed in the response.
    pub id: u64,
    /// The operation.
    pub op: Op,
}

/// Operations (mirror `LogStore`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// [`crate::LogStore::append`] with encoded records.
    Append {
        /// Instance id.
        instance: String,
        /// Writer's epoch.
        epoch: Epoch,
        /// Frames ([`Record::encode`]) with contiguous seqs.
        frames: Vec<ByteBuf>,
    },
    /// [`crate::LogStore::read`].
    Read {
        /// Instance id.
        instance: String,
        /// First seq.
        from: Seq,
        /// Most records.
        max: u64,
    },
    /// [`crate::LogStore::wait_for`].
    WaitFor {
        /// Instance id.
        instance: String,
        /// Wait for a seq above this.
        after: Seq,
        /// Milliseconds (≤ [`MAX_WAIT_MS`]).
        timeout_ms: u64,
    },
    /// [`crate::LogStore::last_seq`].
    LastSeq {
        /// Instance id.
        instance: String,
    },
    /// [`crate::LogStore::truncate_before`].
    Truncate {
        /// Instance id.
        instance: String,
        /// Remove seqs below this.
        before: Seq,
    },
    /// [`crate::LogStore::fence`].
    Fence {
        /// Instance id.
        instance: String,
    },
    /// [`crate::LogStore::epoch`].
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
    /// [`LogError::Denied`].
    Denied(String),
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
            LogError::Denied(s) => WireError::Denied(s),
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
            WireError::Denied(s) => LogError::Denied(format!("server: {s}")),
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
    /// Length prefix above the limit: (announced, limit).
    TooLong(usize, usize),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => write!(f, "connection closed"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::TooLong(n, max) => {
                write!(f, "frame length {n} exceeds the maximum {max}")
            }
        }
    }
}

/// The payload length a frame header announces, checked against `max`
/// (pure: what a receiver decides before it reads or allocates anything).
pub fn frame_len(header: [u8; 4], max: usize) -> Result<usize, ReadError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max.min(MAX_WIRE_FRAME) {
        return Err(ReadError::TooLong(len, max.min(MAX_WIRE_FRAME)));
    }
    Ok(len)
}

/// Read one frame's header; `Closed` on a clean end between frames.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<[u8; 4], ReadError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => Ok(len),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ReadError::Closed),
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// Read a payload of `len` bytes, growing the buffer as the bytes arrive.
pub async fn read_payload<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::with_capacity(len.min(READ_CHUNK));
    while buf.len() < len {
        let want = (len - buf.len()).min(READ_CHUNK);
        let at = buf.len();
        buf.resize(at + want, 0);
        r.read_exact(&mut buf[at..]).await.map_err(ReadError::Io)?;
    }
    Ok(buf)
}

/// Read one frame's payload (at most `max` bytes).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Vec<u8>, ReadError> {
    let len = frame_len(read_header(r).await?, max)?;
    read_payload(r, len).await
}

/// Decode a request payload (pure; what the server does with every frame
/// after its length check).
pub fn decode_request(payload: &[u8]) -> Result<Request, String> {
    rmp_serde::from_slice(payload).map_err(|e| e.to_string())
}

/// Decode a response payload (pure; the client's side).
pub fn decode_response(payload: &[u8]) -> Result<Response, String> {
    rmp_serde::from_slice(payload).map_err(|e| e.to_string())
}

/// Write frames from `rx` to `w`, coalescing what is queued into one write.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    w: W,
    rx: mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    write_frames_with(w, rx, None).await
}

/// [`write_frames`], each socket write bounded by `bound` (then
/// `TimedOut`).
pub async fn write_frames_with<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    bound: Option<Duration>,
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
        match bound {
            Some(d) => tokio::time::timeout(d, w.write_all(&buf))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the peer did not take {} bytes within {d:?}", buf.len()),
                    )
                })??,
            None => w.write_all(&buf).await?,
        }
        w.flush().await?;
    }
    let _ = w.shutdown().await;
    Ok(())
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
