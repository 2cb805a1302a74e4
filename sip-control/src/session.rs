//! Sessions (one per INVITE dialog) and their media plan: which pinholes
//! exist, with which local ports and which remotes, derived from every SDP
//! body seen in either direction (offer or answer alike: a body from side X
//! describes X's media; it fixes X's remote and is rewritten with our ports on
//! the other side).

use crate::api::{Millis, TimerId};
use crate::policy::{media_addr_problem, MediaRules, OwnAddrs};
use crate::sdp::{Rewrite, Sdp, SdpError, StreamInfo};
use crate::txn::Flow;
use media_plane::{Leg, PinholeId, PinholeOp, PinholeSpec, PortPool, Side};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionState {
    /// INVITE forwarded, no 2xx yet.
    Early,
    /// 2xx seen.
    Confirmed,
    /// BYE seen (or sent by us); pinholes go at its final response.
    Terminating,
}

impl SessionState {
    /// Name used in views and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Early => "early",
            SessionState::Confirmed => "confirmed",
            SessionState::Terminating => "terminating",
        }
    }
}

/// What a dialog is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Usage {
    /// An INVITE dialog: a call with media.
    #[default]
    Invite,
    /// A subscription (SUBSCRIBE, or the implicit one of an out-of-dialog
    /// REFER): no media; ends on `Subscription-State: terminated`, a failed
    /// initial request or its expiry.
    Subscription,
}

/// Most early dialog tags remembered per session (forking).
pub const MAX_EARLY_TAGS: usize = 8;

/// One dialog through the BGF (a call, or a subscription).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Session number.
    pub id: u64,
    /// Call-ID.
    pub call_id: String,
    /// Side the initial INVITE came from.
    pub origin: Side,
    /// State.
    pub state: SessionState,
    /// Creation time.
    pub created_at: Millis,
    /// The access-side peer (UE) flow.
    pub ue_flow: Flow,
    /// From header of the initial INVITE (caller, with tag).
    pub caller: String,
    /// To header (callee), with the tag once known.
    pub callee: String,
    /// Caller's From-tag.
    pub from_tag: String,
    /// Callee's To-tag once known.
    pub to_tag: Option<String>,
    /// Remote target (Contact URI) of the party on the access side.
    pub access_contact: Option<String>,
    /// Remote target of the party on the core side.
    pub core_contact: Option<String>,
    /// Route set to reach the access party from us (Route header values).
    pub access_routes: Vec<String>,
    /// Route set to reach the core party from us.
    pub core_routes: Vec<String>,
    /// Highest CSeq seen in requests arriving from the access side.
    pub cseq_from_access: u32,
    /// Highest CSeq seen in requests arriving from the core side.
    pub cseq_from_core: u32,
    /// One entry per `m=` line: the pinhole, or `None` when rejected.
    pub streams: Vec<Option<PinholeSpec>>,
    /// Session expiry timer.
    pub expiry: Option<TimerId>,
    // Fields added after checkpoints existed stay last, with defaults: a
    // checkpoint is a positional (MessagePack array) encoding.
    /// To-tags of early dialogs (provisional responses with a tag, up to
    /// [`MAX_EARLY_TAGS`]): in-dialog requests of any of them match.
    #[serde(default)]
    pub early_tags: Vec<String>,
    /// What the dialog is for.
    #[serde(default)]
    pub usage: Usage,
    /// The Record-Route list of the dialog-creating request, when it went
    /// to a hidden side with only our entry (topology hiding).
    #[serde(default)]
    pub hidden_rr: Vec<String>,
}

impl Session {
    /// Contact of the party on `side`.
    pub fn contact(&self, side: Side) -> Option<&String> {
        match side {
            Side::Access => self.access_contact.as_ref(),
            Side::Core => self.core_contact.as_ref(),
        }
    }

    /// Route set towards `side`.
    pub fn routes(&self, side: Side) -> &[String] {
        match side {
            Side::Access => &self.access_routes,
            Side::Core => &self.core_routes,
        }
    }

    /// Highest CSeq of requests that came from `side`.
    pub fn cseq_from(&self, side: Side) -> u32 {
        match side {
            Side::Access => self.cseq_from_access,
            Side::Core => self.cseq_from_core,
        }
    }

    /// Record a CSeq from `side`.
    pub fn note_cseq(&mut self, side: Side, n: u32) {
        let c = match side {
            Side::Access => &mut self.cseq_from_access,
            Side::Core => &mut self.cseq_from_core,
        };
        *c = (*c).max(n);
    }

    /// Whether `side` is the caller's side.
    pub fn is_caller_side(&self, side: Side) -> bool {
        side == self.origin
    }

    /// Whether `tag` is a tag of the callee (the confirmed one or an early one).
    pub fn is_callee_tag(&self, tag: &str) -> bool {
        self.to_tag.as_deref() == Some(tag) || self.early_tags.iter().any(|t| t == tag)
    }

    /// Remember the tag of an early dialog.
    pub fn note_early_tag(&mut self, tag: &str) {
        if !self.is_callee_tag(tag) && self.early_tags.len() < MAX_EARLY_TAGS {
            self.early_tags.push(tag.to_string());
        }
    }

    /// The pinholes in place.
    pub fn pinholes(&self) -> impl Iterator<Item = &PinholeSpec> {
        self.streams.iter().flatten()
    }
}

/// Why a body could not be turned into a media plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaPlanError {
    /// The SDP is unusable (→ 488).
    Sdp(SdpError),
    /// A port pool is exhausted (→ 503).
    NoPorts(Side),
    /// The media policy refuses it (→ 488): an address it may not name, too
    /// many streams.
    Refused(String),
}

/// The port pools of both sides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pools {
    /// Access-side RTP ports.
    pub access: PortPool,
    /// Core-side RTP ports.
    pub core: PortPool,
}

impl Pools {
    fn pool(&mut self, side: Side) -> &mut PortPool {
        match side {
            Side::Access => &mut self.access,
            Side::Core => &mut self.core,
        }
    }

    /// Release both ports of a pinhole.
    pub fn release(&mut self, spec: &PinholeSpec) {
        self.access.release(spec.access.local.port());
        self.core.release(spec.core.local.port());
    }
}

/// Addresses and rules the media plan needs from the config.
#[derive(Clone, Debug)]
pub struct MediaAddrs {
    /// Access media IP.
    pub access_ip: IpAddr,
    /// Core media IP.
    pub core_ip: IpAddr,
    /// Latching on the access side.
    pub access_latching: bool,
    /// Latching on the core side.
    pub core_latching: bool,
    /// Media addresses an SDP from the access side may name.
    pub access_rules: MediaRules,
    /// Media addresses an SDP from the core side may name.
    pub core_rules: MediaRules,
    /// The BGF's own addresses and ports (never a media remote).
    pub own: OwnAddrs,
    /// Most active streams per session.
    pub max_streams: usize,
}

impl MediaAddrs {
    fn ip(&self, side: Side) -> IpAddr {
        match side {
            Side::Access => self.access_ip,
            Side::Core => self.core_ip,
        }
    }
    fn latching(&self, side: Side) -> bool {
        match side {
            Side::Access => self.access_latching,
            Side::Core => self.core_latching,
        }
    }
    fn rules(&self, side: Side) -> &MediaRules {
        match side {
            Side::Access => &self.access_rules,
            Side::Core => &self.core_rules,
        }
    }

    /// Why the streams an SDP body from `from` describes may not be
    /// relayed, if they may not: a media address the policy refuses
    /// ([`media_addr_problem`]) or more active streams than allowed.
    pub fn refusal(&self, from: Side, infos: &[StreamInfo]) -> Option<String> {
        let active: Vec<&StreamInfo> = infos.iter().filter(|i| i.port != 0).collect();
        if active.len() > self.max_streams {
            return Some(format!(
                "{} media streams, more than the {} a session may have",
                active.len(),
                self.max_streams
            ));
        }
        let rules = self.rules(from);
        active.iter().find_map(|i| {
            let rtp = i
                .addr
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            media_addr_problem(rtp, i.port, rules, &self.own).or_else(|| {
                i.rtcp
                    .and_then(|r| media_addr_problem(r.ip(), r.port(), rules, &self.own))
            })
        })
    }
}

/// Apply an SDP body that came from `from` (whose signalling peer is at
/// `peer_ip`) to the session's streams. Returns the body to forward and the
/// pinhole operations, or an error with nothing changed.
pub fn apply_sdp(
    session: &mut Session,
    pools: &mut Pools,
    addrs: &MediaAddrs,
    from: Side,
    peer_ip: IpAddr,
    body: &[u8],
    ops: &mut Vec<PinholeOp>,
) -> Result<Vec<u8>, MediaPlanError> {
    let sdp = Sdp::parse(body).map_err(MediaPlanError::Sdp)?;
    let infos = sdp.streams();
    if let Some(why) = addrs.refusal(from, &infos) {
        return Err(MediaPlanError::Refused(why));
    }
    let to = from.other();

    // Allocate first (all or nothing), then mutate.
    let mut fresh: Vec<(usize, u16, u16)> = Vec::new();
    for info in &infos {
        let idx = usize::from(info.index);
        let exists = session
            .streams
            .get(idx)
            .map(|s| s.is_some())
            .unwrap_or(false);
        if info.port != 0 && !exists {
            let a = pools.pool(Side::Access).allocate();
            let c = pools.pool(Side::Core).allocate();
            match (a, c) {
                (Some(a), Some(c)) => fresh.push((idx, a, c)),
                (a, c) => {
                    if let Some(a) = a {
                        pools.access.release(a);
                    }
                    if let Some(c) = c {
                        pools.core.release(c);
                    }
                    for (_, a, c) in fresh {
                        pools.access.release(a);
                        pools.core.release(c);
                    }
                    let side = if a.is_none() {
                        Side::Access
                    } else {
                        Side::Core
                    };
                    return Err(MediaPlanError::NoPorts(side));
                }
            }
        }
    }

    let mut ports = Vec::with_capacity(infos.len());
    for info in &infos {
        let idx = usize::from(info.index);
        if session.streams.len() <= idx {
            session.streams.resize(idx + 1, None);
        }
        if info.port == 0 {
            if let Some(old) = session.streams[idx].take() {
                pools.release(&old);
                ops.push(PinholeOp::Remove(old.id));
            }
            ports.push(None);
            continue;
        }
        if session.streams[idx].is_none() {
            if let Some(&(_, a, c)) = fresh.iter().find(|f| f.0 == idx) {
                session.streams[idx] = Some(PinholeSpec {
                    id: PinholeId {
                        session: session.id,
                        stream: info.index,
                    },
                    access: Leg {
                        local: SocketAddr::new(addrs.access_ip, a),
                        remote_rtp: None,
                        remote_rtcp: None,
                        latch_ip: None,
                    },
                    core: Leg {
                        local: SocketAddr::new(addrs.core_ip, c),
                        remote_rtp: None,
                        remote_rtcp: None,
                        latch_ip: None,
                    },
                });
            }
        }
        let Some(spec) = session.streams[idx].as_mut() else {
            ports.push(None);
            continue;
        };
        let before = spec.clone();
        let leg = spec.leg_mut(from);
        leg.remote_rtp = info.rtp();
        leg.remote_rtcp = info.rtcp;
        leg.latch_ip = if addrs.latching(from) && info.rtp().is_some() {
            Some(peer_ip)
        } else {
            None
        };
        let created = fresh.iter().any(|f| f.0 == idx);
        if created || *spec != before {
            ops.push(PinholeOp::Upsert(spec.clone()));
        }
        ports.push(Some(spec.leg(to).local.port()));
    }
    sdp.rewrite(&Rewrite {
        media_ip: addrs.ip(to),
        ports,
    })
    .map_err(MediaPlanError::Sdp)
}

/// Release every pinhole of a session.
pub fn release_all(session: &mut Session, pools: &mut Pools, ops: &mut Vec<PinholeOp>) {
    for spec in session.streams.drain(..).flatten() {
        pools.release(&spec);
        ops.push(PinholeOp::Remove(spec.id));
    }
}

/// Restore the streams saved before a re-offer that failed (RFC 3264 §8:
/// the old session parameters stay in force).
pub fn rollback(
    session: &mut Session,
    saved: Vec<Option<PinholeSpec>>,
    pools: &mut Pools,
    ops: &mut Vec<PinholeOp>,
) {
    let n = session.streams.len().max(saved.len());
    let mut restored = Vec::with_capacity(saved.len());
    for i in 0..n {
        let cur = session.streams.get(i).cloned().flatten();
        let old = saved.get(i).cloned().flatten();
        let keep = match (cur, old) {
            (Some(c), None) => {
                pools.release(&c);
                ops.push(PinholeOp::Remove(c.id));
                None
            }
            (Some(c), Some(o)) => {
                if c != o {
                    ops.push(PinholeOp::Upsert(o.clone()));
                }
                Some(o)
            }
            (None, Some(o)) => {
                // The failed offer rejected a stream we had and its ports went
                // back to the pool: take them again if nothing else did.
                if pools.access.reserve(o.access.local.port()) {
                    if pools.core.reserve(o.core.local.port()) {
                        ops.push(PinholeOp::Upsert(o.clone()));
                        Some(o)
                    } else {
                        pools.access.release(o.access.local.port());
                        None
                    }
                } else {
                    None
                }
            }
            (None, None) => None,
        };
        if i < saved.len() {
            restored.push(keep);
        }
    }
    session.streams = restored;
}
