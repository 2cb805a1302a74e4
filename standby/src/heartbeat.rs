//! Heartbeats between each active and the standby, and failure detection.
//!
//! Both ends run the same [`Link`]: a UDP socket bound to a local address and
//! *connected* to the peer, sending one authenticated [`Heartbeat`] every
//! `interval` and watching the peer's. The active's link ([`HeartbeatSender`])
//! carries its epoch and last appended log seq; the standby's link
//! ([`Detector`]) carries the store epoch the standby knows for that instance,
//! so an active that was fenced while frozen or cut off learns it at the first
//! packet it hears ([`HeartbeatEvent::Fenced`]).
//!
//! Failure is declared ([`HeartbeatEvent::PeerFailed`]) after `miss_count`
//! intervals without a valid packet, or sooner on a fast signal: an ICMP port
//! unreachable for our packet (the peer's process died and its port closed)
//! surfaces as `ECONNREFUSED` on the connected socket; one more probe is sent
//! at once and a second refusal confirms the failure (a valid packet in
//! between clears the suspicion). Before declaring a miss the socket is
//! drained, so a task that was starved on a busy machine counts the packets
//! that did arrive instead of reporting a false failure. Run links on a
//! [`HeartbeatRuntime`] (its own thread) so a busy main runtime cannot delay
//! them either.
//!
//! Wire format (version 2, big-endian), at most 100 bytes:
//!
//! ```text
//!  0       4     5      6       7       8            8+n
//!  | "BGFH" | ver | role | flags | n     | instance  | incarnation u64 | seq u64 |
//!  | epoch u64 | log_seq u64 | echo_seq u64 | echo_hold_us u32 |
//!  | mac: first 16 bytes of HMAC-SHA256(secret, all before) |
//! ```
//!
//! `incarnation` is the sender's start time (µs since the Unix epoch);
//! `(incarnation, seq)` must grow, so replayed or reordered old packets are
//! refused. Every refused packet is counted by reason ([`HeartbeatStats`]);
//! nothing from the network can make this code panic.
//!
//! Round-trip time: `echo_seq` is the seq of the last packet the sender
//! accepted from us (0: none yet) and `echo_hold_us` how long before sending
//! it accepted it. We keep the send times of our last [`SEND_RING`] packets
//! ([`RttTracker`]), so `RTT = now − sent(echo_seq) − hold` — one sample per
//! echoed seq, smoothed like TCP's srtt (RFC 6298) and bucketed for a
//! histogram ([`RttStats`]). An echo of a seq we no longer (or never) sent,
//! or a hold longer than [`MAX_HOLD_US`] or than the time since we sent it,
//! is ignored and counted; the packet itself is still accepted.
//!
//! Version 1 (before the echo) is refused and counted (`old_version`): both
//! ends of a link must run the same format, so upgrade the standby and its
//! actives together.

use serde::Serialize;
use sha2::{Digest, Sha256};
use state_log::{Epoch, Seq};
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// Packet magic.
pub const MAGIC: [u8; 4] = *b"BGFH";
/// Current wire format version (2: with the RTT echo).
pub const VERSION: u8 = 2;
/// Bytes of the truncated MAC.
pub const MAC_LEN: usize = 16;
/// Bytes after the instance id and before the MAC.
const FIXED: usize = 4 * 8 + 8 + 4;
/// Longest packet.
pub const MAX_PACKET: usize = 8 + 32 + FIXED + MAC_LEN;
/// Send times kept for RTT echoes (64 × 50 ms: echoes up to 3.2 s late).
pub const SEND_RING: usize = 64;
/// Longest hold accepted in an echo (10 s); longer is refused as absurd.
pub const MAX_HOLD_US: u32 = 10_000_000;
/// Upper bounds of the RTT histogram buckets, µs (`+Inf` after the last).
pub const RTT_BUCKETS_US: [u64; 11] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
];

/// Which end sent a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An active instance.
    Active,
    /// The standby (its heartbeats double as probes).
    Standby,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Active => 1,
            Role::Standby => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Role> {
        match b {
            1 => Some(Role::Active),
            2 => Some(Role::Standby),
            _ => None,
        }
    }

    fn peer(self) -> Role {
        match self {
            Role::Active => Role::Standby,
            Role::Standby => Role::Active,
        }
    }
}

/// One heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Heartbeat {
    /// Sender's role.
    pub role: Role,
    /// Protected instance (the active's id, on both ends).
    pub instance: String,
    /// Sender's start time, µs since the Unix epoch.
    pub incarnation: u64,
    /// Sender's packet counter (from 1 per incarnation).
    pub seq: u64,
    /// Active: the epoch it appends under. Standby: the store epoch it knows.
    pub epoch: Epoch,
    /// Active: last log seq it appended. Standby: last seq its replica applied.
    pub log_seq: Seq,
    /// Seq of the last packet the sender accepted from its peer (0: none).
    pub echo_seq: u64,
    /// µs between accepting `echo_seq` and sending this packet.
    pub echo_hold_us: u32,
}

/// Why a packet was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than its fields say, or longer than any valid packet.
    #[error("bad length {0}")]
    Length(usize),
    /// Not a heartbeat.
    #[error("bad magic")]
    Magic,
    /// A version this build does not read.
    #[error("unknown version {0} (this build reads {VERSION})")]
    Version(u8),
    /// Unknown role byte or reserved flags set.
    #[error("bad header field")]
    Header,
    /// Instance id empty, too long or not `[A-Za-z0-9_-]`.
    #[error("bad instance id")]
    Instance,
    /// MAC does not verify (wrong secret or tampered).
    #[error("authentication failed")]
    Mac,
}

/// HMAC-SHA256 keyed with an instance secret (RFC 2104).
#[derive(Clone)]
pub struct Key {
    ipad: [u8; 64],
    opad: [u8; 64],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// Key from the instance secret (the `[instance] secret` string's bytes).
    pub fn new(secret: &[u8]) -> Key {
        let mut k = [0u8; 64];
        if secret.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            k[..secret.len()].copy_from_slice(secret);
        }
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for i in 0..64 {
            ipad[i] ^= k[i];
            opad[i] ^= k[i];
        }
        Key { ipad, opad }
    }

    /// Full HMAC-SHA256 of `data`.
    pub fn hmac(&self, data: &[u8]) -> [u8; 32] {
        let mut inner = Sha256::new();
        inner.update(self.ipad);
        inner.update(data);
        let ih = inner.finalize();
        let mut outer = Sha256::new();
        outer.update(self.opad);
        outer.update(ih);
        let mut out = [0u8; 32];
        out.copy_from_slice(&outer.finalize());
        out
    }
}

impl Heartbeat {
    /// Encode and authenticate. The instance id must be 1-32 bytes (checked
    /// by [`LinkConfig::validate`]); a longer one is cut.
    pub fn encode(&self, key: &Key) -> Vec<u8> {
        let id = &self.instance.as_bytes()[..self.instance.len().min(32)];
        let mut out = Vec::with_capacity(MAX_PACKET);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.role.byte());
        out.push(0);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        for v in [
            self.incarnation,
            self.seq,
            self.epoch,
            self.log_seq,
            self.echo_seq,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&self.echo_hold_us.to_be_bytes());
        let mac = key.hmac(&out);
        out.extend_from_slice(&mac[..MAC_LEN]);
        out
    }

    /// Decode and verify a packet.
    pub fn decode(data: &[u8], key: &Key) -> Result<Heartbeat, DecodeError> {
        if data.len() < 8 || data.len() > MAX_PACKET {
            return Err(DecodeError::Length(data.len()));
        }
        if data[..4] != MAGIC {
            return Err(DecodeError::Magic);
        }
        if data[4] != VERSION {
            return Err(DecodeError::Version(data[4]));
        }
        let role = Role::from_byte(data[5]).ok_or(DecodeError::Header)?;
        if data[6] != 0 {
            return Err(DecodeError::Header);
        }
        let n = data[7] as usize;
        let body_end = 8 + n + FIXED;
        if data.len() != body_end + MAC_LEN {
            return Err(DecodeError::Length(data.len()));
        }
        let mac = key.hmac(&data[..body_end]);
        // Constant-time comparison.
        let diff = mac[..MAC_LEN]
            .iter()
            .zip(&data[body_end..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(DecodeError::Mac);
        }
        let id = &data[8..8 + n];
        if n == 0
            || !id
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return Err(DecodeError::Instance);
        }
        let u = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let at = 8 + n;
        Ok(Heartbeat {
            role,
            instance: String::from_utf8_lossy(id).into_owned(),
            incarnation: u(at),
            seq: u(at + 8),
            epoch: u(at + 16),
            log_seq: u(at + 24),
            echo_seq: u(at + 32),
            echo_hold_us: u32::from_be_bytes([
                data[at + 40],
                data[at + 41],
                data[at + 42],
                data[at + 43],
            ]),
        })
    }
}

/// Settings of one link (one active ↔ standby pair, seen from one end).
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// Our role.
    pub role: Role,
    /// The active's instance id (on both ends).
    pub instance: String,
    /// The active's instance secret (both ends must have the same).
    pub secret: Vec<u8>,
    /// Local address to bind (a management address, never a service
    /// address: it must stay reachable after a takeover).
    pub local: SocketAddr,
    /// The peer's heartbeat address.
    pub peer: SocketAddr,
    /// Heartbeat interval (default 50 ms).
    pub interval: Duration,
    /// Intervals without a valid packet before the peer is declared failed
    /// (default 3).
    pub miss_count: u32,
    /// Standby only: declare the active failed if it was never heard within
    /// this long after start (`None`: wait for first contact; default).
    pub never_heard_after: Option<Duration>,
}

impl LinkConfig {
    /// Defaults for an active's sender: 50 ms × 3.
    pub fn active(instance: &str, secret: &[u8], local: SocketAddr, standby: SocketAddr) -> Self {
        LinkConfig {
            role: Role::Active,
            instance: instance.to_string(),
            secret: secret.to_vec(),
            local,
            peer: standby,
            interval: Duration::from_millis(50),
            miss_count: 3,
            never_heard_after: None,
        }
    }

    /// Defaults for the standby's detector of one active: 50 ms × 3.
    pub fn standby(instance: &str, secret: &[u8], local: SocketAddr, active: SocketAddr) -> Self {
        LinkConfig {
            role: Role::Standby,
            ..LinkConfig::active(instance, secret, local, active)
        }
    }

    /// Check the settings; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        state_log::check_instance(&self.instance).map_err(|e| e.to_string())?;
        if self.secret.is_empty() {
            return Err(format!(
                "heartbeat for {}: empty secret — set the instance secret",
                self.instance
            ));
        }
        if self.interval < Duration::from_millis(1) || self.interval > Duration::from_secs(10) {
            return Err(format!(
                "heartbeat for {}: interval {:?} out of range — use 1 ms to 10 s (default 50 ms)",
                self.instance, self.interval
            ));
        }
        if !(1..=100).contains(&self.miss_count) {
            return Err(format!(
                "heartbeat for {}: miss_count {} out of range — use 1-100 (default 3)",
                self.instance, self.miss_count
            ));
        }
        if self.local.is_ipv4() != self.peer.is_ipv4() {
            return Err(format!(
                "heartbeat for {}: local {} and peer {} are of different address families",
                self.instance, self.local, self.peer
            ));
        }
        Ok(())
    }

    fn silence_limit(&self) -> Duration {
        self.interval * self.miss_count
    }
}

/// Why a peer was declared failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// No valid packet for `miss_count` intervals.
    Missed,
    /// Two ICMP port unreachables in a row (the peer's process is gone).
    PortUnreachable,
    /// Never heard since start (`never_heard_after`).
    NeverHeard,
}

/// A declared failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The instance.
    pub instance: String,
    /// Why.
    pub reason: FailureReason,
    /// When it was declared (the zero of a takeover's timing breakdown).
    pub detected_at: Instant,
    /// Last valid packet from the peer.
    pub last_heard: Option<Instant>,
    /// The peer's last reported log seq.
    pub peer_log_seq: Seq,
    /// The peer's last reported epoch.
    pub peer_epoch: Epoch,
}

/// What a link reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeartbeatEvent {
    /// First valid packet (or first after a failure: the peer is back —
    /// a restarted process or a zombie that woke up).
    PeerUp {
        /// Peer's incarnation.
        incarnation: u64,
        /// Peer's epoch.
        epoch: Epoch,
        /// Whether the peer had been declared failed before.
        returned: bool,
    },
    /// The peer is declared failed.
    PeerFailed(Failure),
    /// Standby side: the active presents an epoch older than the store's —
    /// it was fenced and has not stopped yet (our packets tell it).
    PeerStale {
        /// The active's epoch.
        peer_epoch: Epoch,
        /// The store epoch we know.
        store_epoch: Epoch,
    },
    /// Active side: the standby knows a newer store epoch than ours — we
    /// were fenced. Stop serving and drop the service addresses.
    Fenced {
        /// Our epoch.
        own: Epoch,
        /// The store's epoch as the standby knows it.
        store: Epoch,
    },
}

/// What an echo in a peer's packet gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// The peer has not accepted a packet of ours yet (`echo_seq` 0).
    None,
    /// A new RTT sample.
    Sample(Duration),
    /// The seq already sampled, echoed again (the peer sent twice between
    /// two of ours): nothing new, not an error.
    Repeat,
    /// A seq older than one already sampled, or not among our last
    /// [`SEND_RING`] sends (never sent, or too long ago): ignored, counted.
    Unknown,
    /// A hold above [`MAX_HOLD_US`] or longer than the time since we sent
    /// the seq: ignored, counted.
    BadHold,
}

/// Round-trip times of one link, as numbers (µs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RttStats {
    /// Samples taken.
    pub samples: u64,
    /// The last sample.
    pub last_us: Option<u64>,
    /// Smoothed RTT (EWMA, gain 1/8, as TCP's srtt).
    pub srtt_us: Option<u64>,
    /// RTT variation (EWMA of |srtt − sample|, gain 1/4, as TCP's rttvar).
    pub rttvar_us: Option<u64>,
    /// Smallest sample.
    pub min_us: Option<u64>,
    /// Largest sample.
    pub max_us: Option<u64>,
    /// Histogram: bucket upper bounds, µs ([`RTT_BUCKETS_US`]; `+Inf` after).
    pub le_us: Vec<u64>,
    /// Histogram: samples per bucket, cumulative; one more entry than
    /// `le_us` (the `+Inf` bucket = `samples`).
    pub cumulative: Vec<u64>,
    /// Sum of the samples, µs.
    pub sum_us: u64,
}

/// Our recent send times and the RTT samples the peer's echoes gave.
/// Bounded memory: a ring of [`SEND_RING`] send times.
#[derive(Clone, Debug)]
pub struct RttTracker {
    ring: [Option<(u64, Instant)>; SEND_RING],
    /// Highest echoed seq sampled so far.
    sampled: u64,
    samples: u64,
    last: Option<Duration>,
    srtt_us: f64,
    rttvar_us: f64,
    min: Option<Duration>,
    max: Option<Duration>,
    buckets: [u64; RTT_BUCKETS_US.len() + 1],
    sum_us: u64,
}

impl Default for RttTracker {
    fn default() -> Self {
        RttTracker {
            ring: [None; SEND_RING],
            sampled: 0,
            samples: 0,
            last: None,
            srtt_us: 0.0,
            rttvar_us: 0.0,
            min: None,
            max: None,
            buckets: [0; RTT_BUCKETS_US.len() + 1],
            sum_us: 0,
        }
    }
}

impl RttTracker {
    /// We sent `seq` at `at`.
    pub fn sent(&mut self, seq: u64, at: Instant) {
        self.ring[(seq % SEND_RING as u64) as usize] = Some((seq, at));
    }

    /// The peer's packet, accepted at `now`, echoes `seq` held `hold_us`.
    pub fn echo(&mut self, seq: u64, hold_us: u32, now: Instant) -> Echo {
        if seq == 0 {
            return Echo::None;
        }
        if seq == self.sampled {
            return Echo::Repeat;
        }
        if seq < self.sampled {
            return Echo::Unknown;
        }
        let sent = match self.ring[(seq % SEND_RING as u64) as usize] {
            Some((s, at)) if s == seq => at,
            _ => return Echo::Unknown,
        };
        let hold = Duration::from_micros(u64::from(hold_us));
        let elapsed = now.saturating_duration_since(sent);
        if hold_us > MAX_HOLD_US || hold > elapsed {
            return Echo::BadHold;
        }
        let rtt = elapsed - hold;
        self.sampled = seq;
        self.record(rtt);
        Echo::Sample(rtt)
    }

    fn record(&mut self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        let x = us as f64;
        if self.samples == 0 {
            self.srtt_us = x;
            self.rttvar_us = x / 2.0;
        } else {
            // RFC 6298: rttvar first (with the old srtt), then srtt.
            self.rttvar_us += ((self.srtt_us - x).abs() - self.rttvar_us) / 4.0;
            self.srtt_us += (x - self.srtt_us) / 8.0;
        }
        self.samples += 1;
        self.last = Some(rtt);
        self.min = Some(self.min.map_or(rtt, |m| m.min(rtt)));
        self.max = Some(self.max.map_or(rtt, |m| m.max(rtt)));
        let k = RTT_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(RTT_BUCKETS_US.len());
        self.buckets[k] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// The numbers.
    pub fn stats(&self) -> RttStats {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let have = self.samples > 0;
        let mut acc = 0;
        RttStats {
            samples: self.samples,
            last_us: self.last.map(us),
            srtt_us: have.then(|| self.srtt_us.round() as u64),
            rttvar_us: have.then(|| self.rttvar_us.round() as u64),
            min_us: self.min.map(us),
            max_us: self.max.map(us),
            le_us: RTT_BUCKETS_US.to_vec(),
            cumulative: self
                .buckets
                .iter()
                .map(|c| {
                    acc += c;
                    acc
                })
                .collect(),
            sum_us: self.sum_us,
        }
    }
}

/// Counters of one link.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    malformed: AtomicU64,
    old_version: AtomicU64,
    echo_unknown: AtomicU64,
    echo_bad_hold: AtomicU64,
    forged: AtomicU64,
    old: AtomicU64,
    refused: AtomicU64,
    send_errors: AtomicU64,
    failures: AtomicU64,
}

/// Counters of one link, as numbers (admin API / metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeartbeatStats {
    /// Packets sent.
    pub sent: u64,
    /// Valid packets accepted.
    pub received: u64,
    /// Refused: not a heartbeat, bad length/header, or a version this build
    /// does not read other than the previous one.
    pub malformed: u64,
    /// Refused: the previous wire format (version 1, before the RTT echo) —
    /// the peer runs an older build; upgrade both ends of the link.
    pub old_version: u64,
    /// Echoes ignored: a seq we did not send recently (accepted packets).
    pub echo_unknown: u64,
    /// Echoes ignored: an absurd hold time (accepted packets).
    pub echo_bad_hold: u64,
    /// Refused: MAC did not verify, wrong instance or wrong role.
    pub forged: u64,
    /// Refused: not newer than the last accepted (replayed or reordered).
    pub old: u64,
    /// ICMP port unreachables seen (ECONNREFUSED).
    pub refused: u64,
    /// Other send/receive errors (network unreachable, ...).
    pub send_errors: u64,
    /// Failures declared.
    pub failures: u64,
}

/// Liveness of the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// Never heard yet.
    Unknown,
    /// Heard within the limit.
    Alive,
    /// One port unreachable seen; confirming.
    Suspect,
    /// Declared failed.
    Failed,
}

/// Snapshot of a link for the admin API.
#[derive(Clone, Debug, Serialize)]
pub struct LinkStatus {
    /// The instance.
    pub instance: String,
    /// Our role.
    pub role: Role,
    /// Peer liveness.
    pub state: PeerState,
    /// Milliseconds since the last valid packet.
    pub last_heard_ms_ago: Option<u64>,
    /// Peer's last epoch.
    pub peer_epoch: Epoch,
    /// Peer's last log seq.
    pub peer_log_seq: Seq,
    /// The epoch we send.
    pub epoch: Epoch,
    /// The log seq we send.
    pub log_seq: Seq,
    /// Counters.
    pub stats: HeartbeatStats,
    /// Round-trip times measured from the peer's echoes.
    pub rtt: RttStats,
}

#[derive(Debug)]
struct Shared {
    epoch: AtomicU64,
    log_seq: AtomicU64,
    counters: Counters,
    peer: Mutex<PeerInfo>,
    rtt: Mutex<RttTracker>,
}

#[derive(Clone, Copy, Debug)]
struct PeerInfo {
    state: PeerState,
    last_heard: Option<Instant>,
    epoch: Epoch,
    log_seq: Seq,
    incarnation: u64,
    seq: u64,
}

/// A running link. Dropping it stops the task.
pub struct Link {
    cfg: LinkConfig,
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<HeartbeatEvent>,
    _stop: oneshot::Sender<()>,
}

/// A read-only view of a running [`Link`] (status, counters, RTT) for
/// another task — the admin server — to keep. Once the link is dropped it
/// keeps showing the last values.
#[derive(Clone)]
pub struct LinkWatch {
    instance: String,
    role: Role,
    shared: Arc<Shared>,
}

/// The active's end of its link to the standby (see [`Link`]).
pub struct HeartbeatSender;

impl HeartbeatSender {
    /// Start sending `cfg` (role [`Role::Active`]) on `rt`. `epoch` is the
    /// epoch the active appends under; update the log seq with
    /// [`Link::set_log_seq`] as appends become durable.
    pub fn spawn(
        rt: &tokio::runtime::Handle,
        mut cfg: LinkConfig,
        epoch: Epoch,
    ) -> Result<Link, String> {
        cfg.role = Role::Active;
        Link::spawn(rt, cfg, epoch)
    }
}

/// The standby's failure detector for one active (see [`Link`]).
pub struct Detector;

impl Detector {
    /// Start watching the active of `cfg` (role [`Role::Standby`]) on `rt`;
    /// `store_epoch` is the instance's epoch in the store (update it with
    /// [`Link::set_epoch`] after fencing).
    pub fn spawn(
        rt: &tokio::runtime::Handle,
        mut cfg: LinkConfig,
        store_epoch: Epoch,
    ) -> Result<Link, String> {
        cfg.role = Role::Standby;
        Link::spawn(rt, cfg, store_epoch)
    }
}

impl Link {
    /// Bind, connect and start the link task on `rt`. Errors say what to fix
    /// (address not local, port in use, ...).
    pub fn spawn(
        rt: &tokio::runtime::Handle,
        cfg: LinkConfig,
        epoch: Epoch,
    ) -> Result<Link, String> {
        cfg.validate()?;
        let sock = StdUdpSocket::bind(cfg.local).map_err(|e| {
            format!(
                "heartbeat for {}: cannot bind {}: {e} — the address must be local and the port free",
                cfg.instance, cfg.local
            )
        })?;
        sock.connect(cfg.peer).map_err(|e| {
            format!(
                "heartbeat for {}: cannot connect to {}: {e} — check the peer address and routes",
                cfg.instance, cfg.peer
            )
        })?;
        sock.set_nonblocking(true)
            .map_err(|e| format!("heartbeat for {}: {e}", cfg.instance))?;
        let sock = {
            let _g = rt.enter();
            UdpSocket::from_std(sock).map_err(|e| format!("heartbeat for {}: {e}", cfg.instance))?
        };
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(epoch),
            log_seq: AtomicU64::new(0),
            counters: Counters::default(),
            peer: Mutex::new(PeerInfo {
                state: PeerState::Unknown,
                last_heard: None,
                epoch: 0,
                log_seq: 0,
                incarnation: 0,
                seq: 0,
            }),
            rtt: Mutex::new(RttTracker::default()),
        });
        let (tx, events) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = LinkTask {
            key: Key::new(&cfg.secret),
            cfg: cfg.clone(),
            sock,
            shared: shared.clone(),
            events: tx,
            started: Instant::now(),
            incarnation: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(1),
            seq: 0,
            suspect_since: None,
            stale_reported: None,
            fenced_reported: 0,
        };
        rt.spawn(task.run(stop_rx));
        info!(instance = %cfg.instance, role = ?cfg.role, local = %cfg.local, peer = %cfg.peer,
            interval_ms = cfg.interval.as_millis() as u64, miss_count = cfg.miss_count, "heartbeat link started");
        Ok(Link {
            cfg,
            shared,
            events,
            _stop: stop_tx,
        })
    }

    /// The next event (`None` once the task has stopped).
    pub async fn next_event(&mut self) -> Option<HeartbeatEvent> {
        self.events.recv().await
    }

    /// An event if one is queued.
    pub fn try_event(&mut self) -> Option<HeartbeatEvent> {
        self.events.try_recv().ok()
    }

    /// Set the epoch we send (active: ours after reading it from the store;
    /// standby: the store's after fencing).
    pub fn set_epoch(&self, epoch: Epoch) {
        self.shared.epoch.store(epoch, Ordering::Relaxed);
    }

    /// Set the log seq we send (active: last durable; standby: replica's applied).
    pub fn set_log_seq(&self, seq: Seq) {
        self.shared.log_seq.store(seq, Ordering::Relaxed);
    }

    /// Counters.
    pub fn stats(&self) -> HeartbeatStats {
        self.shared.stats()
    }

    /// Round-trip times.
    pub fn rtt(&self) -> RttStats {
        self.shared.rtt_stats()
    }

    /// Snapshot for the admin API.
    pub fn status(&self) -> LinkStatus {
        self.shared.status(&self.cfg.instance, self.cfg.role)
    }

    /// A view of this link for another task.
    pub fn watch(&self) -> LinkWatch {
        LinkWatch {
            instance: self.cfg.instance.clone(),
            role: self.cfg.role,
            shared: self.shared.clone(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }
}

impl std::fmt::Debug for LinkWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkWatch")
            .field("instance", &self.instance)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl LinkWatch {
    /// Snapshot for the admin API.
    pub fn status(&self) -> LinkStatus {
        self.shared.status(&self.instance, self.role)
    }

    /// Round-trip times.
    pub fn rtt(&self) -> RttStats {
        self.shared.rtt_stats()
    }
}

impl Shared {
    fn stats(&self) -> HeartbeatStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HeartbeatStats {
            sent: g(&c.sent),
            received: g(&c.received),
            malformed: g(&c.malformed),
            old_version: g(&c.old_version),
            echo_unknown: g(&c.echo_unknown),
            echo_bad_hold: g(&c.echo_bad_hold),
            forged: g(&c.forged),
            old: g(&c.old),
            refused: g(&c.refused),
            send_errors: g(&c.send_errors),
            failures: g(&c.failures),
        }
    }

    fn rtt(&self) -> std::sync::MutexGuard<'_, RttTracker> {
        self.rtt.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rtt_stats(&self) -> RttStats {
        self.rtt().stats()
    }

    fn status(&self, instance: &str, role: Role) -> LinkStatus {
        let p = *self.peer.lock().unwrap_or_else(|e| e.into_inner());
        LinkStatus {
            instance: instance.to_string(),
            role,
            state: p.state,
            last_heard_ms_ago: p.last_heard.map(|t| t.elapsed().as_millis() as u64),
            peer_epoch: p.epoch,
            peer_log_seq: p.log_seq,
            epoch: self.epoch.load(Ordering::Relaxed),
            log_seq: self.log_seq.load(Ordering::Relaxed),
            stats: self.stats(),
            rtt: self.rtt_stats(),
        }
    }
}

struct LinkTask {
    key: Key,
    cfg: LinkConfig,
    sock: UdpSocket,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<HeartbeatEvent>,
    started: Instant,
    incarnation: u64,
    seq: u64,
    suspect_since: Option<Instant>,
    /// Peer incarnation already reported stale.
    stale_reported: Option<u64>,
    /// Highest store epoch already reported as fencing us.
    fenced_reported: Epoch,
}

impl LinkTask {
    fn peer(&self) -> std::sync::MutexGuard<'_, PeerInfo> {
        self.shared.peer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, ev: HeartbeatEvent) {
        let _ = self.events.send(ev);
    }

    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = [0u8; 512];
        loop {
            let deadline = self.deadline();
            let sleep = tokio::time::sleep_until(
                deadline
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
                    .into(),
            );
            tokio::select! {
                biased;
                _ = &mut stop => break,
                r = self.sock.recv(&mut buf) => self.on_recv(r.map(|n| &buf[..n])),
                _ = tick.tick() => self.send().await,
                _ = sleep, if deadline.is_some() => {
                    // Count what did arrive while we were not running.
                    loop {
                        match self.sock.try_recv(&mut buf) {
                            Ok(n) => self.on_recv(Ok(&buf[..n])),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => self.on_recv(Err(e)),
                        }
                    }
                    if self.deadline().is_some_and(|d| d <= Instant::now()) {
                        let reason = if self.peer().state == PeerState::Unknown {
                            FailureReason::NeverHeard
                        } else {
                            FailureReason::Missed
                        };
                        self.declare(reason);
                    }
                }
            }
        }
        debug!(instance = %self.cfg.instance, "heartbeat link stopped");
    }

    /// When the peer will be declared failed if nothing arrives.
    fn deadline(&self) -> Option<Instant> {
        let p = self.peer();
        match p.state {
            PeerState::Alive | PeerState::Suspect => {
                p.last_heard.map(|t| t + self.cfg.silence_limit())
            }
            PeerState::Unknown => self.cfg.never_heard_after.map(|d| self.started + d),
            PeerState::Failed => None,
        }
    }

    fn declare(&mut self, reason: FailureReason) {
        let p = {
            let mut p = self.peer();
            if p.state == PeerState::Failed {
                return;
            }
            p.state = PeerState::Failed;
            *p
        };
        self.suspect_since = None;
        self.shared
            .counters
            .failures
            .fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        warn!(instance = %self.cfg.instance, role = ?self.cfg.role, peer = %self.cfg.peer, ?reason,
            silent_ms = p.last_heard.map(|t| now.duration_since(t).as_millis() as u64),
            "heartbeat peer declared failed");
        self.emit(HeartbeatEvent::PeerFailed(Failure {
            instance: self.cfg.instance.clone(),
            reason,
            detected_at: now,
            last_heard: p.last_heard,
            peer_log_seq: p.log_seq,
            peer_epoch: p.epoch,
        }));
    }

    /// The next packet: a new seq, the peer's last seq echoed with its
    /// hold time, and our send time remembered for the peer's echo of it.
    fn next_packet(&mut self) -> Vec<u8> {
        self.seq += 1;
        let now = Instant::now();
        let (echo_seq, echo_hold_us) = {
            let p = self.peer();
            match p.last_heard {
                Some(t) if p.seq > 0 => (
                    p.seq,
                    u32::try_from(now.saturating_duration_since(t).as_micros()).unwrap_or(u32::MAX),
                ),
                _ => (0, 0),
            }
        };
        let hb = Heartbeat {
            role: self.cfg.role,
            instance: self.cfg.instance.clone(),
            incarnation: self.incarnation,
            seq: self.seq,
            epoch: self.shared.epoch.load(Ordering::Relaxed),
            log_seq: self.shared.log_seq.load(Ordering::Relaxed),
            echo_seq,
            echo_hold_us,
        };
        self.shared.rtt().sent(self.seq, now);
        hb.encode(&self.key)
    }

    async fn send(&mut self) {
        let packet = self.next_packet();
        match self.sock.send(&packet).await {
            Ok(_) => {
                self.shared.counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.on_error(e),
        }
    }

    fn on_error(&mut self, e: io::Error) {
        if e.kind() == io::ErrorKind::ConnectionRefused {
            self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            let state = self.peer().state;
            match state {
                PeerState::Alive => {
                    debug!(instance = %self.cfg.instance, peer = %self.cfg.peer,
                        "heartbeat peer port unreachable; probing again to confirm");
                    self.peer().state = PeerState::Suspect;
                    self.suspect_since = Some(Instant::now());
                    // Confirm with one more probe right away.
                    let packet = self.next_packet();
                    match self.sock.try_send(&packet) {
                        Ok(_) => {
                            self.shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                            self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                            self.declare(FailureReason::PortUnreachable);
                        }
                        Err(_) => {
                            self.shared
                                .counters
                                .send_errors
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                PeerState::Suspect => self.declare(FailureReason::PortUnreachable),
                PeerState::Unknown | PeerState::Failed => {}
            }
        } else {
            let n = self
                .shared
                .counters
                .send_errors
                .fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(100) {
                warn!(instance = %self.cfg.instance, peer = %self.cfg.peer, error = %e,
                    "heartbeat socket error (link down or no route to the peer?)");
            }
        }
    }

    fn on_recv(&mut self, r: io::Result<&[u8]>) {
        let data = match r {
            Ok(d) => d,
            Err(e) => return self.on_error(e),
        };
        let c = &self.shared.counters;
        let hb = match Heartbeat::decode(data, &self.key) {
            Ok(hb) => hb,
            Err(DecodeError::Mac) => {
                c.forged.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(DecodeError::Version(v)) if v == VERSION - 1 => {
                let n = c.old_version.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    warn!(instance = %self.cfg.instance, peer = %self.cfg.peer, version = v, refused = n + 1,
                        "heartbeat refused: the peer sends wire format version {v} (an older bgf), this build reads {VERSION} — upgrade the standby and its actives together; until then this link does not see its peer");
                }
                return;
            }
            Err(_) => {
                c.malformed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if hb.instance != self.cfg.instance || hb.role != self.cfg.role.peer() {
            c.forged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = Instant::now();
        let (returned, first) = {
            let mut p = self.peer();
            if (hb.incarnation, hb.seq) <= (p.incarnation, p.seq) {
                c.old.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let prev = p.state;
            p.incarnation = hb.incarnation;
            p.seq = hb.seq;
            p.epoch = hb.epoch;
            p.log_seq = hb.log_seq;
            p.last_heard = Some(now);
            p.state = PeerState::Alive;
            (
                prev == PeerState::Failed,
                matches!(prev, PeerState::Unknown | PeerState::Failed),
            )
        };
        c.received.fetch_add(1, Ordering::Relaxed);
        self.suspect_since = None;
        match self.shared.rtt().echo(hb.echo_seq, hb.echo_hold_us, now) {
            Echo::Unknown => {
                c.echo_unknown.fetch_add(1, Ordering::Relaxed);
            }
            Echo::BadHold => {
                c.echo_bad_hold.fetch_add(1, Ordering::Relaxed);
            }
            Echo::None | Echo::Sample(_) | Echo::Repeat => {}
        }
        if first {
            info!(instance = %self.cfg.instance, role = ?self.cfg.role, peer = %self.cfg.peer,
                epoch = hb.epoch, returned, "heartbeat peer up");
            self.emit(HeartbeatEvent::PeerUp {
                incarnation: hb.incarnation,
                epoch: hb.epoch,
                returned,
            });
        }
        let ours = self.shared.epoch.load(Ordering::Relaxed);
        match self.cfg.role {
            Role::Active if hb.epoch > ours && hb.epoch > self.fenced_reported => {
                self.fenced_reported = hb.epoch;
                warn!(instance = %self.cfg.instance, own_epoch = ours, store_epoch = hb.epoch,
                    "the standby reports a newer epoch: this instance was fenced; stop serving");
                self.emit(HeartbeatEvent::Fenced {
                    own: ours,
                    store: hb.epoch,
                });
            }
            Role::Standby if hb.epoch < ours && self.stale_reported != Some(hb.incarnation) => {
                self.stale_reported = Some(hb.incarnation);
                warn!(instance = %self.cfg.instance, peer_epoch = hb.epoch, store_epoch = ours,
                    "a fenced active is still sending heartbeats; our replies tell it to stop");
                self.emit(HeartbeatEvent::PeerStale {
                    peer_epoch: hb.epoch,
                    store_epoch: ours,
                });
            }
            // An active claims a new epoch each time it starts (the store
            // fences its earlier runs): follow it, so that a takeover knows
            // the epoch it must fence past.
            Role::Standby if hb.epoch > ours => {
                self.shared.epoch.store(hb.epoch, Ordering::Relaxed);
                info!(instance = %self.cfg.instance, peer_epoch = hb.epoch, was = ours,
                    "the active serves under a newer epoch (it claimed one at its start)");
            }
            _ => {}
        }
    }
}

/// A dedicated thread running a current-thread tokio runtime for links, so
/// heartbeats are not delayed by a busy main runtime. Dropping it stops the
/// runtime (and every link on it).
pub struct HeartbeatRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HeartbeatRuntime {
    /// Start the thread.
    pub fn start(name: &str) -> io::Result<HeartbeatRuntime> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let thread_name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                raise_priority(&thread_name);
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
            })?;
        Ok(HeartbeatRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The runtime to spawn links on.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

/// Real-time priority of the heartbeat thread (SCHED_FIFO, low in the
/// 1-99 range: above every normal thread, below the kernel's own).
pub const HEARTBEAT_RT_PRIORITY: i32 = 10;

/// Give the calling thread SCHED_FIFO priority so a machine saturated by
/// normal-priority work (a build, a load spike in the media plane) cannot
/// delay heartbeats into a false detection — measured: a parallel build
/// silenced a normal-priority sender for 269 ms. The thread sleeps almost
/// always, so it cannot starve others. Without CAP_SYS_NICE this fails:
/// warn and carry on at normal priority.
fn raise_priority(thread: &str) {
    let param = libc::sched_param {
        sched_priority: HEARTBEAT_RT_PRIORITY,
    };
    // SAFETY: sched_setscheduler with pid 0 changes the calling thread only;
    // `param` is a valid, initialised struct.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        tracing::info!(%thread, priority = HEARTBEAT_RT_PRIORITY, "heartbeat thread runs at real-time priority (SCHED_FIFO)");
    } else {
        let e = io::Error::last_os_error();
        tracing::warn!(%thread, error = %e, "heartbeat thread stays at normal priority: a busy machine may delay heartbeats into false detections — grant CAP_SYS_NICE (systemd: AmbientCapabilities=CAP_SYS_NICE) or raise the miss count");
    }
}

impl Drop for HeartbeatRuntime {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_thread_gets_real_time_priority_when_allowed() {
        let hb = HeartbeatRuntime::start("hb-prio").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        hb.handle().spawn(async move {
            // SAFETY: queries the calling thread's policy only.
            let _ = tx.send(unsafe { libc::sched_getscheduler(0) });
        });
        let policy = rx.recv().unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(policy, libc::SCHED_FIFO, "root may set SCHED_FIFO");
        } else {
            assert!(policy == libc::SCHED_FIFO || policy == libc::SCHED_OTHER);
        }
    }

    fn hb() -> Heartbeat {
        Heartbeat {
            role: Role::Active,
            instance: "bgf-1".into(),
            incarnation: 1_700_000_000_000_000,
            seq: 42,
            epoch: 3,
            log_seq: 12345,
            echo_seq: 41,
            echo_hold_us: 1_234,
        }
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = Key::new(b"Jefe").hmac(b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Keys longer than a block are hashed first (RFC 4231 case 6).
        let mac =
            Key::new(&[0xaa; 131]).hmac(b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(mac[..4], [0x60, 0xe4, 0x31, 0x59]);
    }

    #[test]
    fn round_trip() {
        let k = Key::new(b"secret");
        let p = hb().encode(&k);
        assert!(p.len() <= MAX_PACKET);
        assert_eq!(Heartbeat::decode(&p, &k), Ok(hb()));
    }

    #[test]
    fn wrong_key_tamper_truncation_and_version_are_refused() {
        let k = Key::new(b"secret");
        let p = hb().encode(&k);
        assert_eq!(
            Heartbeat::decode(&p, &Key::new(b"other")),
            Err(DecodeError::Mac)
        );
        for i in 0..p.len() {
            let mut bad = p.clone();
            bad[i] ^= 0x01;
            assert!(
                Heartbeat::decode(&bad, &k).is_err(),
                "flip at byte {i} accepted"
            );
        }
        for cut in 0..p.len() {
            assert!(Heartbeat::decode(&p[..cut], &k).is_err());
        }
        let mut v3 = p.clone();
        v3[4] = 3;
        assert_eq!(Heartbeat::decode(&v3, &k), Err(DecodeError::Version(3)));
    }

    /// A version 1 packet as the previous build encoded it (no echo).
    fn v1_packet(k: &Key) -> Vec<u8> {
        let mut out = b"BGFH".to_vec();
        out.extend_from_slice(&[1, 1, 0, 5]);
        out.extend_from_slice(b"bgf-1");
        for v in [1u64, 2, 3, 4] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        let mac = k.hmac(&out);
        out.extend_from_slice(&mac[..MAC_LEN]);
        out
    }

    #[test]
    fn version_1_packets_are_refused_by_version() {
        let k = Key::new(b"secret");
        let p = v1_packet(&k);
        assert_eq!(p.len(), 8 + 5 + 32 + MAC_LEN);
        assert_eq!(Heartbeat::decode(&p, &k), Err(DecodeError::Version(1)));
        assert_eq!(VERSION, 2);
        assert_eq!(hb().encode(&k)[4], 2);
    }

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn rtt_is_elapsed_minus_hold_and_smoothed_like_tcp() {
        let base = t0();
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        let mut r = RttTracker::default();
        assert_eq!(r.stats().srtt_us, None);
        assert_eq!(r.echo(0, 0, base), Echo::None);
        r.sent(1, base);
        // Echoed 10 ms later after the peer held it 9.2 ms: RTT 800 µs.
        assert_eq!(r.echo(1, 9_200, base + ms(10)), Echo::Sample(us(800)));
        let s = r.stats();
        assert_eq!(
            (s.samples, s.last_us, s.srtt_us, s.rttvar_us),
            (1, Some(800), Some(800), Some(400))
        );
        // The same seq echoed again: nothing new, not an error.
        assert_eq!(r.echo(1, 19_000, base + ms(20)), Echo::Repeat);
        assert_eq!(r.stats().samples, 1);
        // Second sample 1 600 µs: srtt = 800 + (1600 − 800)/8 = 900,
        // rttvar = 400 + (|800 − 1600| − 400)/4 = 500.
        r.sent(2, base + ms(50));
        assert_eq!(
            r.echo(2, 0, base + ms(50) + us(1_600)),
            Echo::Sample(us(1_600))
        );
        let s = r.stats();
        assert_eq!((s.srtt_us, s.rttvar_us), (Some(900), Some(500)));
        assert_eq!((s.min_us, s.max_us), (Some(800), Some(1_600)));
        // Buckets: 800 µs ≤ 1 000, 1 600 µs ≤ 2 500; cumulative, +Inf last.
        assert_eq!(s.le_us, RTT_BUCKETS_US.to_vec());
        assert_eq!(s.cumulative.len(), RTT_BUCKETS_US.len() + 1);
        let at = |le: u64| s.cumulative[RTT_BUCKETS_US.iter().position(|b| *b == le).unwrap()];
        assert_eq!((at(500), at(1_000), at(2_500)), (0, 1, 2));
        assert_eq!(*s.cumulative.last().unwrap(), 2);
        assert_eq!(s.sum_us, 2_400);
    }

    #[test]
    fn unknown_old_and_absurd_echoes_are_refused_and_change_nothing() {
        let base = t0();
        let ms = Duration::from_millis;
        let mut r = RttTracker::default();
        r.sent(5, base);
        // Never sent.
        assert_eq!(r.echo(6, 0, base + ms(1)), Echo::Unknown);
        assert_eq!(r.echo(u64::MAX, 0, base + ms(1)), Echo::Unknown);
        // Hold longer than the time since we sent it, or beyond the limit.
        assert_eq!(r.echo(5, 2_000, base + ms(1)), Echo::BadHold);
        r.sent(7, base);
        assert_eq!(r.echo(7, MAX_HOLD_US + 1, base + ms(20_000)), Echo::BadHold);
        assert_eq!(r.echo(7, u32::MAX, base + ms(1)), Echo::BadHold);
        assert_eq!(r.stats().samples, 0, "refused echoes leave no sample");
        // A good one, then an older seq: refused (stale).
        assert_eq!(
            r.echo(7, 500, base + ms(1)),
            Echo::Sample(Duration::from_micros(500))
        );
        assert_eq!(r.echo(5, 0, base + ms(2)), Echo::Unknown);
        assert_eq!(r.stats().samples, 1);
    }

    #[test]
    fn the_ring_forgets_sends_older_than_its_size() {
        let base = t0();
        let mut r = RttTracker::default();
        let n = SEND_RING as u64;
        for seq in 1..=n + 10 {
            r.sent(seq, base + Duration::from_millis(seq));
        }
        // seq 10 shared its slot with seq 10 + n, which replaced it.
        let late = base + Duration::from_secs(10);
        assert_eq!(r.echo(10, 0, late), Echo::Unknown);
        // The oldest still held is 11; the newest n + 10.
        assert!(matches!(r.echo(11, 0, late), Echo::Sample(_)));
        match r.echo(n + 10, 0, late) {
            Echo::Sample(d) => {
                assert_eq!(d, Duration::from_secs(10) - Duration::from_millis(n + 10))
            }
            other => panic!("{other:?}"),
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let _ = Heartbeat::decode(&data, &Key::new(b"k"));
        }

        #[test]
        fn random_mutations_never_verify(i in 0usize..60, x in 1u8..=255) {
            let k = Key::new(b"secret");
            let mut p = hb().encode(&k);
            let i = i % p.len();
            p[i] ^= x;
            proptest::prop_assert!(Heartbeat::decode(&p, &k).is_err());
        }
    }

    #[test]
    fn config_validation_says_what_to_fix() {
        let mut c = LinkConfig::active(
            "bgf-1",
            b"s",
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        assert!(c.validate().is_ok());
        c.miss_count = 0;
        assert!(c.validate().unwrap_err().contains("miss_count"));
        c.miss_count = 3;
        c.peer = "[::1]:2".parse().unwrap();
        assert!(c.validate().unwrap_err().contains("families"));
    }
}
