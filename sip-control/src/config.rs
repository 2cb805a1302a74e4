//! Configuration of one instance's session core. The daemon builds it from the
//! validated TOML file; tests build it directly.

use media_plane::Side;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// One interface (access or core) of the BGF.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideConfig {
    /// The SIP service address (IP and port) on this side. Used in Via,
    /// Record-Route and rewritten Contacts. Same port for UDP and TCP.
    pub sip: SocketAddr,
    /// The media service address on this side (what rewritten SDP carries).
    pub media_ip: IpAddr,
    /// RTP port pool on this side: `[min, max]`.
    pub rtp_port_min: u16,
    /// Upper bound of the pool.
    pub rtp_port_max: u16,
    /// NAT latching of the remote media port on this side (UEs behind NAT).
    pub latching: bool,
}

/// Transaction timer values (RFC 3261 §17, Table 4), in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerConfig {
    /// T1: RTT estimate (default 500).
    pub t1: u64,
    /// T2: maximum retransmit interval for non-INVITE requests and INVITE responses (default 4000).
    pub t2: u64,
    /// T4: maximum duration a message remains in the network (default 5000).
    pub t4: u64,
    /// Timer C: proxy INVITE transaction timeout (default 180 000, must be > 180 000 per RFC; lab may lower).
    pub timer_c: u64,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: 500,
            t2: 4000,
            t4: 5000,
            timer_c: 180_000,
        }
    }
}

/// Everything the session core needs to know about its instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreConfig {
    /// Instance name (appears in logs and in generated tags/branches).
    pub instance: String,
    /// Key of the PRF behind generated branches, tags and registration tokens
    /// (derived from the instance secret, [`crate::ids::Key::derive`]), so
    /// they are unguessable from outside yet a pure function of the inputs
    /// (the standby has the same config, so replay generates the same values).
    pub secret: crate::ids::Key,
    /// Access interface.
    pub access: SideConfig,
    /// Core interface.
    pub core: SideConfig,
    /// Where requests from the access side go (the P-CSCF/I-CSCF), by default.
    pub core_next_hop: SocketAddr,
    /// Transport towards the core next hop.
    pub core_transport: crate::Transport,
    /// Transaction timers.
    pub timers: TimerConfig,
    /// Sessions without a negotiated Session-Expires end after this many
    /// seconds without a refresh (re-INVITE/UPDATE); 0 disables.
    pub session_expires_s: u64,
    /// Largest registration expiry granted, seconds (longer requests are capped).
    pub max_register_expires_s: u64,
    /// Largest SIP message accepted, bytes.
    pub max_message_bytes: usize,
    /// Trust-boundary policy: routing, media addresses, topology hiding, caps.
    #[serde(default)]
    pub security: Security,
}

/// Policy of one side at the trust boundary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidePolicy {
    /// Which media addresses an SDP body from this side may name.
    pub media: crate::policy::MediaRules,
    /// Hide the other side's topology from this side: its Via, Record-Route
    /// and Contact values never reach this side (restored from transaction
    /// and dialog state on the way back). Default on for access, off for core.
    pub topology_hiding: bool,
}

impl SidePolicy {
    /// The default of `side`: hiding on for access, off for core.
    pub fn default_for(side: Side) -> SidePolicy {
        SidePolicy {
            media: Default::default(),
            topology_hiding: side == Side::Access,
        }
    }
}

/// Caps the core enforces (it knows sessions, registrations and ports).
/// Per-source caps count by [`crate::policy::source_key`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Concurrent dialogs (calls and subscriptions) one access source may hold.
    pub sessions_per_source: u32,
    /// Of those, unanswered (early) INVITE dialogs.
    pub early_dialogs_per_source: u32,
    /// Registration bindings one access source may hold.
    pub registrations_per_source: u32,
    /// Port pairs (per side) that unanswered INVITEs may hold in all, so a
    /// flood of INVITEs nobody answers cannot exhaust the pools.
    pub unanswered_invite_ports: u32,
    /// Media streams (`m=` lines with a port) one session may have.
    pub max_streams_per_session: u8,
    /// Share of each port pool (percent) that only emergency calls may use.
    pub emergency_reserve_percent: u8,
    /// IPv6 sources are counted by this prefix length (a subscriber has a /64).
    pub ipv6_source_prefix: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            sessions_per_source: 200,
            early_dialogs_per_source: 50,
            registrations_per_source: 50,
            unanswered_invite_ports: 4000,
            max_streams_per_session: 4,
            emergency_reserve_percent: 5,
            ipv6_source_prefix: 64,
        }
    }
}

/// Everything the core enforces at the trust boundary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    /// Access-side policy.
    pub access: SidePolicy,
    /// Core-side policy.
    pub core: SidePolicy,
    /// Keep the Route headers of initial requests from the access side
    /// (they never choose the destination; by default they are removed so
    /// that the next hop does not follow them either).
    pub keep_access_route_headers: bool,
    /// Initial requests from the access side (but REGISTER and emergency
    /// requests) only from an address with a live registration; others get
    /// 403 (3GPP TS 24.229: the P-CSCF serves registered UEs). Default on.
    pub require_registration: bool,
    /// Access-side prefixes that initial requests from the core may reach
    /// without a registration (the Request-URI or top Route must name an IP
    /// inside one). Empty by default: only registered bindings.
    pub access_routes: Vec<crate::policy::Prefix>,
    /// Caps.
    pub limits: Limits,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            access: SidePolicy::default_for(Side::Access),
            core: SidePolicy::default_for(Side::Core),
            keep_access_route_headers: false,
            require_registration: true,
            access_routes: Vec::new(),
            limits: Limits::default(),
        }
    }
}

impl Security {
    /// The policy of `side`.
    pub fn side(&self, side: Side) -> &SidePolicy {
        match side {
            Side::Access => &self.access,
            Side::Core => &self.core,
        }
    }
}

impl CoreConfig {
    /// The configuration of `side`.
    pub fn side(&self, side: Side) -> &SideConfig {
        match side {
            Side::Access => &self.access,
            Side::Core => &self.core,
        }
    }

    /// A configuration for tests and examples: access on `access_ip`, core on
    /// `core_ip`, next hop `next_hop`, default timers and pools.
    pub fn example(access_ip: IpAddr, core_ip: IpAddr, next_hop: SocketAddr) -> Self {
        CoreConfig {
            instance: "bgf1".into(),
            secret: crate::ids::Key::test(0),
            access: SideConfig {
                sip: SocketAddr::new(access_ip, 5060),
                media_ip: access_ip,
                rtp_port_min: 20000,
                rtp_port_max: 29999,
                latching: true,
            },
            core: SideConfig {
                sip: SocketAddr::new(core_ip, 5060),
                media_ip: core_ip,
                rtp_port_min: 30000,
                rtp_port_max: 39999,
                latching: false,
            },
            core_next_hop: next_hop,
            core_transport: crate::Transport::Udp,
            timers: TimerConfig::default(),
            session_expires_s: 0,
            max_register_expires_s: 3600,
            max_message_bytes: 65535,
            // Tests place calls from UEs that did not register.
            security: Security {
                require_registration: false,
                ..Security::default()
            },
        }
    }
}
