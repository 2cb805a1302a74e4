//! The log record and its on-wire/on-disk frame.
//!
//! A record is one state-changing input of one instance's session core (or a
//! checkpoint of that core's state), tagged with its sequence number in the
//! instance's log and the fencing epoch it was written under. Every choice the
//! core makes (ports, branches, tags, tokens, timer numbers) is a pure
//! function of the inputs and the config — proved by the replay tests in
//! `sip-control` — so inputs are all that needs logging.
//!
//! Frame (all integers big-endian):
//!
//! ```text
//!  0      1        5        9
//!  +------+--------+--------+---------------------------+
//!  | ver  | len    | crc32c | payload (len bytes,        |
//!  | = 1  | u32    | u32    |  MessagePack of Record)    |
//!  +------+--------+--------+---------------------------+
//! ```
//!
//! The CRC (Castagnoli) covers the payload. A frame whose version is unknown,
//! whose length runs past the data, or whose CRC or payload does not check is
//! refused with [`FrameError`], never decoded silently.

use serde::{Deserialize, Serialize};
use sip_control::Input;

/// Current frame format version.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes before the payload.
pub const FRAME_HEADER: usize = 9;
/// Largest payload accepted (a checkpoint of a large core can be big).
pub const MAX_PAYLOAD: usize = 256 * 1024 * 1024;

/// Position of a record in its instance's log (1-based, contiguous).
pub type Seq = u64;
/// Fencing epoch of an instance (bumped by every takeover).
pub type Epoch = u64;

/// An operator command that changes core state (logged like any input).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorCommand {
    /// Free-form command name and arguments (the command set grows with the
    /// operator tools; unknown commands are replayed as no-ops by older cores).
    Command {
        /// Command name.
        name: String,
        /// Arguments.
        args: Vec<String>,
    },
}

/// What a record carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A state-changing input of the session core (SIP message as received
    /// with interface, source, destination, transport and arrival time; a
    /// timer expiry; a media event such as a latch).
    Input(Input),
    /// An operator command.
    Operator(OperatorCommand),
    /// The core's complete state after the record `seq - 1` (MessagePack of
    /// `sip_control::CoreState`). Replay may start at the latest checkpoint;
    /// everything before it can be truncated.
    Checkpoint(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// One record of an instance's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Sequence number in the instance's log.
    pub seq: Seq,
    /// Epoch the writer held.
    pub epoch: Epoch,
    /// Content.
    pub body: Body,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than a header, or than the header's length says.
    #[error("truncated frame: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// A version this build does not read.
    #[error("unknown frame version {0} (this build reads {FORMAT_VERSION})")]
    Version(u8),
    /// Length field beyond [`MAX_PAYLOAD`].
    #[error("frame length {0} exceeds the maximum")]
    TooLarge(usize),
    /// CRC mismatch.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc {
        /// CRC in the frame.
        stored: u32,
        /// CRC of the payload.
        computed: u32,
    },
    /// The payload is not a valid record.
    #[error("payload does not decode: {0}")]
    Decode(String),
}

impl Record {
    /// Encode as one frame.
    pub fn encode(&self) -> Vec<u8> {
        // rmp-serde cannot fail on these types (no maps with non-string keys,
        // no unsupported types); an error would be a programming error.
        let payload = rmp_serde::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Decode one frame from the start of `data`; returns the record and the
    /// number of bytes it used.
    pub fn decode(data: &[u8]) -> Result<(Record, usize), FrameError> {
        if data.len() < FRAME_HEADER {
            return Err(FrameError::Truncated {
                need: FRAME_HEADER,
                have: data.len(),
            });
        }
        if data[0] != FORMAT_VERSION {
            return Err(FrameError::Version(data[0]));
        }
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        let need = FRAME_HEADER + len;
        if data.len() < need {
            return Err(FrameError::Truncated {
                need,
                have: data.len(),
            });
        }
        let stored = u32::from_be_bytes([data[5], data[6], data[7], data[8]]);
        let payload = &data[FRAME_HEADER..need];
        let computed = crc32c::crc32c(payload);
        if stored != computed {
            return Err(FrameError::Crc { stored, computed });
        }
        let rec = rmp_serde::from_slice(payload).map_err(|e| FrameError::Decode(e.to_string()))?;
        Ok((rec, need))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            seq: 7,
            epoch: 2,
            body: Body::Input(Input::Sip(sip_control::SipIn {
                side: sip_control::Side::Access,
                transport: sip_control::Transport::Udp,
                src: "198.18.1.100:5061".parse().unwrap(),
                dst: "198.18.1.10:5060".parse().unwrap(),
                at: 1_700_000_000_123,
                data: vec![0xff; 600],
            })),
        }
    }

    #[test]
    fn round_trip_and_bytes_are_compact() {
        let r = sample();
        let f = r.encode();
        // serde_bytes: a 600-byte message costs ~600 bytes, not ~1200.
        assert!(f.len() < 700, "frame is {} bytes", f.len());
        let (back, used) = Record::decode(&f).unwrap();
        assert_eq!(back, r);
        assert_eq!(used, f.len());
    }

    #[test]
    fn corruption_and_truncation_are_detected() {
        let f = sample().encode();
        for cut in [0, 4, FRAME_HEADER, f.len() - 1] {
            assert!(matches!(
                Record::decode(&f[..cut]),
                Err(FrameError::Truncated { .. })
            ));
        }
        let mut bad = f.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(Record::decode(&bad), Err(FrameError::Crc { .. })));
        let mut v = f.clone();
        v[0] = 9;
        assert_eq!(Record::decode(&v), Err(FrameError::Version(9)));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = Record::decode(&data);
        }
    }
}
