//! The daemon's TOML configuration: the file schema (serde, unknown keys
//! rejected), up-front validation that collects every problem at once, and
//! the mapping to `sip_control::CoreConfig` and the media plane's settings.
//!
//! Addresses, port ranges and enumerations are read as strings and checked
//! here (not by serde) so that one bad value does not hide the others.

use crate::store::{statelog, StatelogSection, StatelogSettings};
use serde::Deserialize;
use sip_control::{CoreConfig, SideConfig, TimerConfig, Transport};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// The file as written by the operator.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub instance: Option<InstanceSection>,
    pub access: Option<SideSection>,
    pub core: Option<SideSection>,
    #[serde(default)]
    pub sip: SipSection,
    #[serde(default)]
    pub media: MediaSection,
    #[serde(default)]
    pub log: LogSection,
    pub admin: Option<AdminSection>,
    pub statelog: Option<StatelogSection>,
    pub ha: Option<HaSection>,
    #[serde(default)]
    pub limits: crate::border::LimitsSection,
}

/// `[ha]`: this active's heartbeat link to the standby protecting it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaSection {
    pub heartbeat: Option<String>,
    pub standby: Option<String>,
    pub interval_ms: Option<u64>,
    pub miss_count: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSection {
    pub name: Option<String>,
    pub secret: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SideSection {
    pub sip: Option<String>,
    pub media_ip: Option<String>,
    pub rtp_ports: Option<String>,
    pub latching: Option<bool>,
    /// Only valid in `[core]`.
    pub next_hop: Option<String>,
    /// Only valid in `[core]`.
    pub next_hop_transport: Option<String>,
    /// Prefixes SDP from this side may not name as media addresses.
    pub media_deny: Option<Vec<String>>,
    /// Accept loopback media addresses (labs on 127/8 only).
    pub allow_loopback_media: Option<bool>,
    /// Accept `c=0.0.0.0` (RFC 2543 hold).
    pub allow_hold_address: Option<bool>,
    /// Hide the other side's topology from this side.
    pub topology_hiding: Option<bool>,
    /// Only valid in `[access]`: prefixes initial requests from the core may
    /// reach without a registration.
    pub routes: Option<Vec<String>>,
    /// Only valid in `[access]`: serve initial requests only from registered
    /// sources.
    pub require_registration: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipSection {
    pub t1_ms: Option<u64>,
    pub t2_ms: Option<u64>,
    pub t4_ms: Option<u64>,
    pub timer_c_ms: Option<u64>,
    pub session_expires_s: Option<u64>,
    pub max_register_expires_s: Option<u64>,
    pub max_message_bytes: Option<u64>,
    pub keep_access_route_headers: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSection {
    pub backend: Option<String>,
    pub workers: Option<u64>,
    pub inactivity_timeout_s: Option<u64>,
    /// `[media.dpdk]` (backend = "dpdk"; see docs/DPDK.md).
    pub dpdk: Option<crate::media::DpdkSection>,
    /// `[media.xdp]` (backend = "xdp"; see docs/CONFIG.md).
    pub xdp: Option<crate::media_xdp::XdpSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub listen: Option<String>,
    pub token: Option<String>,
    pub drills: Option<bool>,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// Media plane settings (mapped to `media_plane::MediaConfig` at start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaSettings {
    /// Packet I/O backend: `kernel`, `xdp` (falls back to `kernel` where it
    /// cannot attach), or `dpdk` (built with `--features dpdk`).
    pub backend: &'static str,
    /// The DPDK ports and owned media addresses (backend `dpdk`).
    pub dpdk: Option<crate::media::DpdkMedia>,
    /// The XDP interfaces, limits and media ranges (backend `xdp`).
    pub xdp: Option<crate::media_xdp::XdpMedia>,
    /// Forwarding worker threads.
    pub workers: usize,
    /// A session without media in either direction for this long is reported inactive.
    pub inactivity_timeout: Duration,
}

/// Admin HTTP server settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Bearer token required on everything but `/health`.
    pub token: String,
    /// Whether `POST /v1/drill/fault` may inject a fault into this process
    /// (lab and test deployments only; default off).
    pub drills: bool,
}

/// A complete, validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The session core's configuration (instance name, hashed secret, sides, timers, limits).
    pub core: CoreConfig,
    /// The media plane's settings.
    pub media: MediaSettings,
    /// Log format from the file (the CLI may override).
    pub log_format: LogFormat,
    /// Log level / filter directive from the file (the CLI or `RUST_LOG` may override).
    pub log_level: String,
    /// The admin server, if enabled.
    pub admin: Option<AdminSettings>,
    /// Output commit to the state log, if enabled.
    pub statelog: Option<StatelogSettings>,
    /// Heartbeats to a standby, if protected.
    pub ha: Option<HaSettings>,
    /// The instance secret as written (heartbeat authentication key; the
    /// core only gets its hash).
    pub secret: Secret,
    /// Admission before the core: per-source rates, emergency share, SIP/TCP limits.
    pub guard: crate::border::GuardSettings,
}

/// A secret that never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret as text (to hand to a client library, never to a log).
    pub fn expose_str(&self) -> &str {
        &self.0
    }

    /// The secret's bytes (for keying).
    #[allow(dead_code)] // the heartbeat sender of `bgf active` / `bgf standby` (being wired)
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Secrets kept in files (a password file: the first line, trimmed).
pub struct SecretFile;

impl SecretFile {
    /// Read `path` for `field`: refuses an empty file and, as ssh does for
    /// keys, one that others can read.
    pub fn read(path: &Path, field: &str) -> Result<Secret, String> {
        use std::os::unix::fs::PermissionsExt;
        let meta =
            std::fs::metadata(path).map_err(|e| format!("{field} {}: {e}", path.display()))?;
        if meta.permissions().mode() & 0o007 != 0 {
            return Err(format!(
                "{field} {}: readable by every user — chmod o-rwx it",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{field} {}: {e}", path.display()))?;
        let s = text.lines().next().unwrap_or("").trim();
        if s.is_empty() {
            return Err(format!("{field} {}: the file is empty", path.display()));
        }
        Ok(Secret(s.to_string()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `[ha]` validated: the active's end of its heartbeat link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaSettings {
    /// This active's heartbeat socket (a management address: it is not
    /// taken over).
    pub heartbeat: SocketAddr,
    /// The standby's socket for this active.
    pub standby: SocketAddr,
    /// Heartbeat interval.
    pub interval: Duration,
    /// Intervals without a heartbeat before the peer counts as failed.
    pub miss_count: u32,
}

impl Config {
    /// One-line summary for `check-config` and the startup log.
    pub fn summary(&self) -> String {
        let c = &self.core;
        format!(
            "instance {}: access sip {} media {} rtp {}-{}{}; core sip {} media {} rtp {}-{}{}; next hop {} ({}); media backend {} with {} workers; admin {}; state log {}{}",
            c.instance,
            c.access.sip,
            c.access.media_ip,
            c.access.rtp_port_min,
            c.access.rtp_port_max,
            if c.access.latching { " latching" } else { "" },
            c.core.sip,
            c.core.media_ip,
            c.core.rtp_port_min,
            c.core.rtp_port_max,
            if c.core.latching { " latching" } else { "" },
            c.core_next_hop,
            c.core_transport.via_token().to_ascii_lowercase(),
            self.media.backend,
            self.media.workers,
            match &self.admin {
                Some(a) => a.listen.to_string(),
                None => "off".to_string(),
            },
            match &self.statelog {
                Some(l) => format!("{} at {}", l.backend.name(), l.backend.location()),
                None => "off".to_string(),
            },
            match &self.ha {
                Some(h) => format!(
                    "; heartbeats {} → standby {} every {} ms, failed after {} misses",
                    h.heartbeat,
                    h.standby,
                    h.interval.as_millis(),
                    h.miss_count
                ),
                None => String::new(),
            }
        )
    }
}

/// Everything wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(e)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Read and validate a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let mut c = parse(&read(path)?)?;
    if let Some(l) = &mut c.statelog {
        l.credentials
            .resolve(path.parent().unwrap_or(Path::new(".")));
        l.credentials
            .load_files(&format!("active:{}", c.core.instance))
            .map_err(|e| ConfigErrors(vec![e]))?;
    }
    Ok(c)
}

/// An active's file as a standby reads it: its `[statelog]` credentials are
/// the active's own (the standby uses its own, from its file) and are not
/// loaded — the standby's host has the active's file but not its key.
fn load_protected(path: &Path) -> Result<Config, ConfigErrors> {
    let mut c = parse(&read(path)?)?;
    if let Some(l) = &mut c.statelog {
        l.credentials
            .resolve(path.parent().unwrap_or(Path::new(".")));
    }
    Ok(c)
}

/// Parse and validate configuration text.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let file: FileConfig = toml::from_str(text).map_err(|e| {
        ConfigErrors(vec![format!(
            "TOML: {} (see bgf/examples/bgf.toml and docs/CONFIG.md for the schema)",
            e.to_string().trim_end()
        )])
    })?;
    validate(file)
}

/// The core's PRF key for an instance secret: deterministic across hosts
/// and builds, so an active and its standby (same file) derive the same key.
pub fn hash_secret(secret: &str) -> sip_control::ids::Key {
    sip_control::ids::Key::derive(secret.as_bytes())
}

/// Why `secret` is not good enough for `field`, if it is not.
pub fn secret_problem(field: &str, secret: &str) -> Option<String> {
    let bits = sip_control::ids::secret_entropy_bits(secret);
    (bits < sip_control::ids::MIN_SECRET_BITS).then(|| {
        format!(
            "{field}: too weak — about {bits:.0} bits of entropy, at least {:.0} needed; generate one with `bgf gen-secret` (the same value on the active and its standby)",
            sip_control::ids::MIN_SECRET_BITS
        )
    })
}

/// A fresh secret of 256 bits from the operating system's random source,
/// base64url without padding (43 characters).
pub fn gen_secret() -> std::io::Result<String> {
    use std::io::Read;
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(43);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in raw {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(char::from(A[((acc >> bits) & 63) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(A[((acc << (6 - bits)) & 63) as usize]));
    }
    Ok(out)
}

fn name_ok(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parse `IP:port` / `[v6]:port` with a non-zero port and a concrete IP.
pub(crate) fn socket_addr(field: &str, value: &str, errs: &mut Vec<String>) -> Option<SocketAddr> {
    match value.trim().parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => {
            errs.push(format!(
                "{field}: \"{value}\" has port 0 — give the port to use (1-65535)"
            ));
            None
        }
        Ok(a) if a.ip().is_unspecified() => {
            errs.push(format!(
                "{field}: \"{value}\" is a wildcard address — give the concrete service address (it is advertised to peers)"
            ));
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(format!(
                "{field}: \"{value}\" is not an IP:port (port must be 1-65535; write IPv6 as [addr]:port)"
            ));
            None
        }
    }
}

fn ip_addr(field: &str, value: &str, errs: &mut Vec<String>) -> Option<IpAddr> {
    match value.trim().parse::<IpAddr>() {
        Ok(a) if a.is_unspecified() => {
            errs.push(format!(
                "{field}: \"{value}\" is a wildcard address — give the concrete media address (it is written into SDP)"
            ));
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(format!(
                "{field}: \"{value}\" is not an IP address (write IPv6 without brackets, e.g. fd00::10)"
            ));
            None
        }
    }
}

fn port_range(field: &str, value: &str, errs: &mut Vec<String>) -> Option<(u16, u16)> {
    let parsed = value
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
    let Some((min, max)) = parsed else {
        errs.push(format!(
            "{field}: \"{value}\" is not a port range — write \"min-max\" with ports 1024-65535, e.g. \"20000-29999\""
        ));
        return None;
    };
    if min > max {
        errs.push(format!(
            "{field}: range {min}-{max} is empty — the first port must not exceed the last"
        ));
        return None;
    }
    if let Err(e) = media_plane::PortPool::new(min, max) {
        errs.push(format!("{field}: {e}"));
        return None;
    }
    Some((min, max))
}

fn ha(h: HaSection, errs: &mut Vec<String>) -> Option<HaSettings> {
    let heartbeat = match &h.heartbeat {
        Some(a) => socket_addr("ha.heartbeat", a, errs),
        None => {
            errs.push("ha.heartbeat missing — set this active's heartbeat address on the management network, e.g. heartbeat = \"198.18.2.101:7001\"".into());
            None
        }
    };
    let standby = match &h.standby {
        Some(a) => socket_addr("ha.standby", a, errs),
        None => {
            errs.push("ha.standby missing — set the standby's heartbeat address for this active, e.g. standby = \"198.18.2.99:7101\"".into());
            None
        }
    };
    let interval = h.interval_ms.unwrap_or(50);
    if !(1..=10_000).contains(&interval) {
        errs.push(format!(
            "ha.interval_ms: {interval} is out of range — use 1-10000 (default 50)"
        ));
    }
    let miss = h.miss_count.unwrap_or(3);
    if !(1..=100).contains(&miss) {
        errs.push(format!(
            "ha.miss_count: {miss} is out of range — use 1-100 (default 3)"
        ));
    }
    let (heartbeat, standby) = (heartbeat?, standby?);
    if heartbeat.is_ipv4() != standby.is_ipv4() {
        errs.push(format!("ha.heartbeat {heartbeat} and ha.standby {standby} are of different address families — use both IPv4 or both IPv6"));
        return None;
    }
    Some(HaSettings {
        heartbeat,
        standby,
        interval: Duration::from_millis(interval.clamp(1, 10_000)),
        miss_count: miss.clamp(1, 100) as u32,
    })
}

fn log_settings(log: &LogSection, errs: &mut Vec<String>) -> (LogFormat, String) {
    let log_format = match log.format.as_deref().map(str::trim) {
        None | Some("human") => LogFormat::Human,
        Some("json") => LogFormat::Json,
        Some(f) => {
            errs.push(format!(
                "log.format: \"{f}\" is not a format — use \"human\" or \"json\""
            ));
            LogFormat::Human
        }
    };
    let log_level = log.level.clone().unwrap_or_else(|| "info".to_string());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
        errs.push(format!(
            "log.level: \"{log_level}\" is not a level or filter ({e}) — use error, warn, info, debug or trace"
        ));
    }
    (log_format, log_level)
}

fn admin_settings(
    admin: Option<AdminSection>,
    taken: &[(&str, SocketAddr)],
    errs: &mut Vec<String>,
) -> Option<AdminSettings> {
    match admin {
        None => None,
        Some(a) => match a.listen {
            None => None,
            Some(l) => {
                let listen = match l.trim().parse::<SocketAddr>() {
                    Ok(addr) if addr.port() != 0 => Some(addr),
                    _ => {
                        errs.push(format!(
                            "admin.listen: \"{l}\" is not an IP:port (port must be 1-65535), e.g. \"127.0.0.1:9090\""
                        ));
                        None
                    }
                };
                let token = match a.token {
                    Some(t) if t.chars().count() >= 16 => Some(t),
                    Some(_) => {
                        errs.push("admin.token: too short — use at least 16 characters".into());
                        None
                    }
                    None => {
                        errs.push("admin.token missing — it is required when admin.listen is set (at least 16 characters)".into());
                        None
                    }
                };
                if let Some(addr) = listen {
                    for (n, sip) in taken {
                        if *sip == addr {
                            errs.push(format!(
                                "admin.listen: {addr} is also {n}.sip — use another port"
                            ));
                        }
                    }
                }
                match (listen, token) {
                    (Some(listen), Some(token)) => Some(AdminSettings {
                        listen,
                        token,
                        drills: a.drills.unwrap_or(false),
                    }),
                    _ => None,
                }
            }
        },
    }
}

struct SideOut {
    cfg: Option<SideConfig>,
}

fn side(
    name: &'static str,
    sec: Option<&SideSection>,
    default_latching: bool,
    errs: &mut Vec<String>,
) -> SideOut {
    let Some(sec) = sec else {
        errs.push(format!(
            "[{name}] section missing — add it with at least sip and rtp_ports"
        ));
        return SideOut { cfg: None };
    };
    let sip = match &sec.sip {
        Some(s) => socket_addr(&format!("{name}.sip"), s, errs),
        None => {
            errs.push(format!(
                "{name}.sip missing — set the SIP service address, e.g. sip = \"198.18.1.10:5060\""
            ));
            None
        }
    };
    let media_ip = match &sec.media_ip {
        Some(s) => ip_addr(&format!("{name}.media_ip"), s, errs),
        None => sip.map(|a| a.ip()),
    };
    let ports = match &sec.rtp_ports {
        Some(s) => port_range(&format!("{name}.rtp_ports"), s, errs),
        None => {
            errs.push(format!(
                "{name}.rtp_ports missing — set the RTP port range, e.g. rtp_ports = \"20000-29999\""
            ));
            None
        }
    };
    let latching = sec.latching.unwrap_or(default_latching);
    match (sip, media_ip, ports) {
        (Some(sip), Some(media_ip), Some((min, max))) => SideOut {
            cfg: Some(SideConfig {
                sip,
                media_ip,
                rtp_port_min: min,
                rtp_port_max: max,
                latching,
            }),
        },
        _ => SideOut { cfg: None },
    }
}

/// Validate a parsed file; collects every problem.
pub fn validate(file: FileConfig) -> Result<Config, ConfigErrors> {
    let mut errs = Vec::new();

    // [instance]
    let inst = file.instance.unwrap_or_default();
    let name = match inst.name {
        Some(n) if name_ok(&n) => Some(n),
        Some(n) => {
            errs.push(format!(
                "instance.name: \"{n}\" is not a valid name — use 1-32 characters from A-Z a-z 0-9 _ -"
            ));
            None
        }
        None => {
            errs.push(
                "instance.name missing — set a unique name per instance, e.g. name = \"bgf1\""
                    .into(),
            );
            None
        }
    };
    let raw_secret = inst.secret.clone();
    let secret = match inst.secret {
        Some(s) => match secret_problem("instance.secret", &s) {
            None => Some(hash_secret(&s)),
            Some(p) => {
                errs.push(p);
                None
            }
        },
        None => {
            errs.push("instance.secret missing — set one with at least 128 bits of entropy (`bgf gen-secret` prints one; the same value on the active and its standby)".into());
            None
        }
    };

    // [access], [core]
    if let Some(a) = &file.access {
        if a.next_hop.is_some() {
            errs.push("access.next_hop: not allowed on the access side — set core.next_hop".into());
        }
        if a.next_hop_transport.is_some() {
            errs.push("access.next_hop_transport: not allowed on the access side — set core.next_hop_transport".into());
        }
    }
    let access = side("access", file.access.as_ref(), true, &mut errs);
    let core = side("core", file.core.as_ref(), false, &mut errs);
    let (next_hop, transport) = match &file.core {
        Some(c) => {
            let nh = match &c.next_hop {
                Some(s) => socket_addr("core.next_hop", s, &mut errs),
                None => {
                    errs.push("core.next_hop missing — set the P-CSCF/I-CSCF address requests are forwarded to, e.g. next_hop = \"198.18.2.20:5060\"".into());
                    None
                }
            };
            let tr = match c.next_hop_transport.as_deref().map(str::trim) {
                None => Some(Transport::Udp),
                Some(t) if t.eq_ignore_ascii_case("udp") => Some(Transport::Udp),
                Some(t) if t.eq_ignore_ascii_case("tcp") => Some(Transport::Tcp),
                Some(t) => {
                    errs.push(format!(
                        "core.next_hop_transport: \"{t}\" is not a transport — use \"udp\" or \"tcp\""
                    ));
                    None
                }
            };
            (nh, tr)
        }
        None => (None, None),
    };
    if let (Some(a), Some(c)) = (&access.cfg, &core.cfg) {
        if a.sip == c.sip {
            errs.push(format!(
                "access.sip and core.sip are both {} — each side needs its own SIP address",
                a.sip
            ));
        }
        if a.media_ip == c.media_ip
            && a.rtp_port_min <= c.rtp_port_max
            && c.rtp_port_min <= a.rtp_port_max
        {
            errs.push(format!(
                "access.rtp_ports overlaps core.rtp_ports while access.media_ip == core.media_ip ({}) — use disjoint ranges or different media addresses",
                a.media_ip
            ));
        }
    }

    // [sip]
    let s = &file.sip;
    let d = TimerConfig::default();
    let t1 = s.t1_ms.unwrap_or(d.t1);
    let t2 = s.t2_ms.unwrap_or(d.t2);
    let t4 = s.t4_ms.unwrap_or(d.t4);
    let timer_c = s.timer_c_ms.unwrap_or(d.timer_c);
    if t1 == 0 {
        errs.push("sip.t1_ms: must be > 0 (RFC 3261 default 500)".into());
    }
    if t2 < t1 {
        errs.push(format!(
            "sip.t2_ms: {t2} is below sip.t1_ms {t1} — T2 must be >= T1 (RFC 3261 default 4000)"
        ));
    }
    if t4 == 0 {
        errs.push("sip.t4_ms: must be > 0 (RFC 3261 default 5000)".into());
    }
    if timer_c == 0 {
        errs.push("sip.timer_c_ms: must be > 0 (RFC 3261: more than 180000)".into());
    }
    let max_reg = s.max_register_expires_s.unwrap_or(3600);
    if max_reg == 0 {
        errs.push("sip.max_register_expires_s: must be > 0 (default 3600)".into());
    }
    let max_msg = s.max_message_bytes.unwrap_or(65535);
    if !(1500..=65535).contains(&max_msg) {
        errs.push(format!(
            "sip.max_message_bytes: {max_msg} is out of range — use 1500-65535 (default 65535)"
        ));
    }

    // [media]
    let m = &file.media;
    let backend = match m.backend.as_deref().map(str::trim) {
        None | Some("kernel") => Some("kernel"),
        Some("xdp") => Some("xdp"),
        Some("dpdk") if cfg!(feature = "dpdk") => Some("dpdk"),
        Some("dpdk") => {
            errs.push(
                "media.backend: \"dpdk\" is not built in this version — rebuild bgf with --features dpdk (needs libdpdk-dev) or use \"kernel\"".into(),
            );
            None
        }
        Some(b) => {
            errs.push(format!(
                "media.backend: \"{b}\" is not a backend — use \"kernel\", \"xdp\" or \"dpdk\""
            ));
            None
        }
    };
    let workers = match m.workers {
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        Some(w) if (1..=256).contains(&w) => w as usize,
        Some(w) => {
            errs.push(format!(
                "media.workers: {w} is out of range — use 1-256 (default: number of cores)"
            ));
            1
        }
    };
    let dpdk = match (backend, &access.cfg, &core.cfg) {
        (Some("dpdk"), Some(a), Some(c)) => crate::media::dpdk_settings(
            m.dpdk.as_ref(),
            [
                (sip_control::Side::Access, a.media_ip),
                (sip_control::Side::Core, c.media_ip),
            ],
            [a.sip.ip(), c.sip.ip()],
            &mut errs,
        ),
        _ => None,
    };
    let xdp = match (backend, &access.cfg, &core.cfg) {
        (Some("xdp"), Some(a), Some(c)) => {
            use crate::media_xdp::SideMedia;
            crate::media_xdp::xdp_settings(
                m.xdp.as_ref(),
                [
                    SideMedia {
                        side: sip_control::Side::Access,
                        ip: a.media_ip,
                        ports: (a.rtp_port_min, a.rtp_port_max),
                    },
                    SideMedia {
                        side: sip_control::Side::Core,
                        ip: c.media_ip,
                        ports: (c.rtp_port_min, c.rtp_port_max),
                    },
                ],
                &mut errs,
            )
        }
        _ => None,
    };
    if m.xdp.is_some() && backend != Some("xdp") {
        errs.push("[media.xdp]: only valid with media.backend = \"xdp\"".into());
    }
    let inactivity = m.inactivity_timeout_s.unwrap_or(60);
    if inactivity == 0 {
        errs.push("media.inactivity_timeout_s: must be > 0 (default 60)".into());
    }

    let (limits, guard) = crate::border::limits(&file.limits, &mut errs);
    let security = crate::border::security(
        file.access.as_ref(),
        file.core.as_ref(),
        file.sip.keep_access_route_headers,
        limits,
        &mut errs,
    );
    let (log_format, log_level) = log_settings(&file.log, &mut errs);
    let sips: Vec<(&str, SocketAddr)> = [("access", &access.cfg), ("core", &core.cfg)]
        .into_iter()
        .filter_map(|(n, c)| c.as_ref().map(|c| (n, c.sip)))
        .collect();
    let admin = admin_settings(file.admin, &sips, &mut errs);

    let statelog = file.statelog.and_then(|l| statelog(l, &mut errs));
    let ha = file.ha.and_then(|h| ha(h, &mut errs));
    if ha.is_some() && statelog.is_none() {
        errs.push("[ha] needs [statelog]: a standby can only take over what was logged — configure the state log".into());
    }
    if let Some(h) = &ha {
        for (n, c) in [("access", &access.cfg), ("core", &core.cfg)] {
            if let Some(c) = c {
                if c.sip.ip() == h.heartbeat.ip() || c.media_ip == h.heartbeat.ip() {
                    errs.push(format!("ha.heartbeat: {} is also a {n} service address — use a management address (service addresses move to the standby at takeover)", h.heartbeat.ip()));
                }
            }
        }
    }
    let raw_secret = raw_secret.map(Secret);

    if !errs.is_empty() {
        return Err(ConfigErrors(errs));
    }
    // Every `None` below has pushed an error above, so this cannot fail; the
    // match keeps it panic-free regardless.
    match (
        name, secret, access.cfg, core.cfg, next_hop, transport, backend, raw_secret,
    ) {
        (
            Some(instance),
            Some(secret),
            Some(access),
            Some(core),
            Some(core_next_hop),
            Some(core_transport),
            Some(backend),
            Some(raw_secret),
        ) => Ok(Config {
            core: CoreConfig {
                instance,
                secret,
                access,
                core,
                core_next_hop,
                core_transport,
                timers: TimerConfig {
                    t1,
                    t2,
                    t4,
                    timer_c,
                },
                session_expires_s: s.session_expires_s.unwrap_or(0),
                max_register_expires_s: max_reg,
                max_message_bytes: max_msg as usize,
                security,
            },
            media: MediaSettings {
                backend,
                dpdk,
                xdp,
                workers,
                inactivity_timeout: Duration::from_secs(inactivity),
            },
            log_format,
            log_level,
            admin,
            statelog,
            ha,
            secret: raw_secret,
            guard,
        }),
        _ => Err(ConfigErrors(vec![
            "configuration incomplete — see docs/CONFIG.md".into(),
        ])),
    }
}

// ---------------------------------------------------------------- standby

/// A standby's file: its own identity, the actives it protects (each by
/// its own configuration file, so active and standby read one source of
/// truth for addresses, secret, store and heartbeat link), and how it
/// claims their addresses.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandbyFile {
    pub instance: Option<InstanceSection>,
    pub standby: Option<StandbySection>,
    /// The standby's own store credentials (`standby:<name>`).
    pub statelog: Option<crate::store::CredentialsSection>,
    #[serde(default)]
    pub log: LogSection,
    pub admin: Option<AdminSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandbySection {
    pub mode: Option<String>,
    pub access_interface: Option<String>,
    pub core_interface: Option<String>,
    pub announce_ms: Option<Vec<u64>>,
    pub fence_timeout_ms: Option<u64>,
    pub address_step: Option<String>,
    pub protect: Option<Vec<ProtectSection>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectSection {
    pub config: Option<String>,
}

/// How the standby keeps the actives' state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StandbyMode {
    /// Tail every log continuously; takeover applies only the tail.
    Hot,
    /// Read the whole log only after a failure (the seed vBGF's way).
    Cold,
}

/// How a takeover claims the failed active's service addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressStep {
    /// Add them to the standby's interfaces (rtnetlink) and announce them
    /// (GARP / unsolicited NA): needs CAP_NET_ADMIN and CAP_NET_RAW.
    Netlink,
    /// Claim nothing, announce nothing: the addresses are already local
    /// (e.g. 127.0.0.0/8 on `lo` — the unprivileged loopback demo). Not for
    /// production: nothing moves the addresses to this host.
    None,
}

/// One protected active.
#[derive(Clone, Debug, PartialEq)]
pub struct Protected {
    /// Where its file is.
    pub path: std::path::PathBuf,
    /// Its validated configuration (with `[ha]` and `[statelog]`).
    pub config: Config,
}

/// A validated standby configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct StandbyConfig {
    /// The standby's own instance name.
    pub name: String,
    /// Hot or cold.
    pub mode: StandbyMode,
    /// Interface the actives' access-side service addresses are added to.
    pub access_interface: String,
    /// Interface the actives' core-side service addresses are added to.
    pub core_interface: String,
    /// Announcement schedule (offsets from takeover).
    pub announce: Vec<Duration>,
    /// `standby.address_step`: how the addresses are claimed.
    pub address_step: AddressStep,
    /// How long a takeover waits for the store to fence the failed active
    /// (no address is claimed without a fence); past it the takeover fails
    /// safe with an alarm.
    pub fence_timeout: Duration,
    /// The actives, in file order.
    pub protects: Vec<Protected>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log level / filter.
    pub log_level: String,
    /// The standby's admin server.
    pub admin: Option<AdminSettings>,
    /// Its own credentials for the protected actives' store (`[statelog]`
    /// of the standby's file): the standby reads, fences and takes over
    /// every protected log with its identity, never an active's.
    pub credentials: crate::store::Credentials,
}

impl StandbyConfig {
    /// One-line summary for `check-config` and the startup log.
    pub fn summary(&self) -> String {
        format!(
            "standby {} ({}): protects {}; {}; fence timeout {} ms; admin {}",
            self.name,
            match self.mode {
                StandbyMode::Hot => "hot",
                StandbyMode::Cold => "cold",
            },
            self.protects
                .iter()
                .map(|p| p.config.core.instance.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            match self.address_step {
                AddressStep::Netlink => format!(
                    "addresses claimed on {} (access) and {} (core); announcements at {:?} ms",
                    self.access_interface,
                    self.core_interface,
                    self.announce
                        .iter()
                        .map(|d| d.as_millis())
                        .collect::<Vec<_>>()
                ),
                AddressStep::None => {
                    "address step none: no address is added or announced at a takeover (they must already be local)".to_string()
                }
            },
            self.fence_timeout.as_millis(),
            match &self.admin {
                Some(a) => a.listen.to_string(),
                None => "off".to_string(),
            }
        )
    }
}

/// A configuration file of either role (`bgf check-config` takes both).
#[derive(Clone, Debug, PartialEq)]
pub enum AnyConfig {
    /// An active's file.
    Active(Box<Config>),
    /// A standby's file.
    Standby(Box<StandbyConfig>),
}

/// Read a file of either role: a file with a `[standby]` table is a
/// standby's.
pub fn load_any(path: &Path) -> Result<AnyConfig, ConfigErrors> {
    let text = read(path)?;
    let is_standby = toml::from_str::<toml::Table>(&text)
        .map(|t| t.contains_key("standby"))
        .unwrap_or(false);
    if is_standby {
        load_standby_text(&text, path).map(|c| AnyConfig::Standby(Box::new(c)))
    } else {
        parse(&text).map(|c| AnyConfig::Active(Box::new(c)))
    }
}

/// Read and validate a standby's file and every active file it names
/// (relative paths are relative to the standby's file).
#[allow(dead_code)] // `bgf standby` (being wired)
pub fn load_standby(path: &Path) -> Result<StandbyConfig, ConfigErrors> {
    let text = read(path)?;
    load_standby_text(&text, path)
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![format!(
            "cannot read {}: {e} — check the path and permissions",
            path.display()
        )])
    })
}

fn interface_name(field: &str, v: Option<&String>, errs: &mut Vec<String>) -> Option<String> {
    match v.map(|s| s.trim()) {
        Some(n)
            if (1..=15).contains(&n.len())
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'/') =>
        {
            Some(n.to_string())
        }
        Some(n) => {
            errs.push(format!(
                "{field}: \"{n}\" is not an interface name (1-15 characters, no '/' or spaces)"
            ));
            None
        }
        None => {
            errs.push(format!(
                "{field} missing — name the interface the actives' service addresses are added to, e.g. \"eth1\""
            ));
            None
        }
    }
}

/// Default `standby.fence_timeout_ms`: a store outage longer than this is
/// not a blip, and the failed active's media has been silent all along.
pub const DEFAULT_FENCE_TIMEOUT_MS: u64 = 5_000;

fn load_standby_text(text: &str, path: &Path) -> Result<StandbyConfig, ConfigErrors> {
    let file: StandbyFile = toml::from_str(text).map_err(|e| {
        ConfigErrors(vec![format!(
            "{}: TOML: {} (see docs/CONFIG.md, \"Standby\")",
            path.display(),
            e.to_string().trim_end()
        )])
    })?;
    let mut errs = Vec::new();
    let name = match file.instance.and_then(|i| i.name) {
        Some(n) if name_ok(&n) => Some(n),
        Some(n) => {
            errs.push(format!("instance.name: \"{n}\" is not a valid name — use 1-32 characters from A-Z a-z 0-9 _ -"));
            None
        }
        None => {
            errs.push("instance.name missing — name the standby, e.g. name = \"sb1\"".into());
            None
        }
    };
    let sb = file.standby.unwrap_or_default();
    let mode = match sb.mode.as_deref().map(str::trim) {
        None | Some("hot") => StandbyMode::Hot,
        Some("cold") => StandbyMode::Cold,
        Some(m) => {
            errs.push(format!(
                "standby.mode: \"{m}\" is not a mode — use \"hot\" (default) or \"cold\""
            ));
            StandbyMode::Hot
        }
    };
    let address_step = match sb.address_step.as_deref().map(str::trim) {
        None | Some("netlink") => AddressStep::Netlink,
        Some("none") => AddressStep::None,
        Some(m) => {
            errs.push(format!(
                "standby.address_step: \"{m}\" — use \"netlink\" (default: add and announce the addresses) or \"none\" (they are already local, e.g. on lo)"
            ));
            AddressStep::Netlink
        }
    };
    let access_interface = interface_name(
        "standby.access_interface",
        sb.access_interface.as_ref(),
        &mut errs,
    );
    let core_interface = interface_name(
        "standby.core_interface",
        sb.core_interface.as_ref(),
        &mut errs,
    );
    let announce_ms = sb
        .announce_ms
        .unwrap_or_else(|| vec![0, 50, 200, 500, 1000, 2000]);
    if announce_ms.is_empty()
        || announce_ms.len() > 32
        || announce_ms.windows(2).any(|w| w[0] >= w[1])
        || announce_ms.iter().any(|&m| m > 60_000)
    {
        errs.push(format!("standby.announce_ms: {announce_ms:?} — give 1-32 increasing offsets in ms, each at most 60000 (default [0, 50, 200, 500, 1000, 2000])"));
    }
    let fence_timeout_ms = sb.fence_timeout_ms.unwrap_or(DEFAULT_FENCE_TIMEOUT_MS);
    if !(100..=60_000).contains(&fence_timeout_ms) {
        errs.push(format!("standby.fence_timeout_ms: {fence_timeout_ms} — give 100-60000 ms (default {DEFAULT_FENCE_TIMEOUT_MS}): how long a takeover waits for an unreachable store before it gives up without claiming any address"));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut protects = Vec::new();
    let list = sb.protect.unwrap_or_default();
    if list.is_empty() {
        errs.push("standby.protect missing — add one [[standby.protect]] with config = \"<active's file>\" per active".into());
    }
    for (i, p) in list.into_iter().enumerate() {
        let Some(rel) = p.config else {
            errs.push(format!(
                "standby.protect[{i}].config missing — the path of the active's configuration file"
            ));
            continue;
        };
        let file_path = base.join(rel.trim());
        match load_protected(&file_path) {
            Err(e) => {
                for m in e.0 {
                    errs.push(format!("{}: {m}", file_path.display()));
                }
            }
            Ok(c) => {
                if c.ha.is_none() {
                    errs.push(format!(
                        "{}: no [ha] section — the active must send heartbeats to this standby",
                        file_path.display()
                    ));
                }
                if c.statelog.is_none() {
                    errs.push(format!("{}: no [statelog] section — the standby can only take over a logged active", file_path.display()));
                }
                protects.push(Protected {
                    path: file_path,
                    config: c,
                });
            }
        }
    }
    for (i, a) in protects.iter().enumerate() {
        for b in &protects[i + 1..] {
            if a.config.core.instance == b.config.core.instance {
                errs.push(format!(
                    "{} and {}: both are instance \"{}\" — every active needs its own name",
                    a.path.display(),
                    b.path.display(),
                    a.config.core.instance
                ));
            }
            for (x, y) in [
                (a.config.core.access.sip, b.config.core.access.sip),
                (a.config.core.core.sip, b.config.core.core.sip),
            ] {
                if x == y {
                    errs.push(format!("{} and {}: both use SIP address {x} — the standby cannot serve both after two takeovers", a.path.display(), b.path.display()));
                }
            }
            if let (Some(x), Some(y)) = (&a.config.ha, &b.config.ha) {
                if x.standby == y.standby {
                    errs.push(format!("{} and {}: both send heartbeats to {} — give each active its own ha.standby port", a.path.display(), b.path.display(), x.standby));
                }
            }
        }
    }
    let (log_format, log_level) = log_settings(&file.log, &mut errs);
    let admin = admin_settings(file.admin, &[], &mut errs);
    let mut credentials =
        crate::store::credentials(file.statelog.unwrap_or_default(), "statelog", &mut errs);
    credentials.resolve(base);
    let needs_tls = protects.iter().any(|p| {
        matches!(
            p.config.statelog.as_ref().map(|l| &l.backend),
            Some(crate::store::Backend::Embedded { .. } | crate::store::Backend::JetStream { .. })
        )
    });
    if needs_tls && credentials.tls.is_none() {
        errs.push("statelog.ca/cert/key missing — the standby reaches the protected actives' store with its own certificate (standby:<name>): add a [statelog] section with ca, cert and key (`bgf gen-certs DIR --standby NAME` makes the lab's)".into());
    }
    if let (Some(n), true) = (&name, errs.is_empty()) {
        if let Err(e) = credentials.load_files(&format!("standby:{n}")) {
            errs.push(e);
        }
    }
    if !errs.is_empty() {
        return Err(ConfigErrors(errs));
    }
    match (name, access_interface, core_interface) {
        (Some(name), Some(access_interface), Some(core_interface)) => Ok(StandbyConfig {
            name,
            mode,
            access_interface,
            core_interface,
            announce: announce_ms.into_iter().map(Duration::from_millis).collect(),
            address_step,
            fence_timeout: Duration::from_millis(fence_timeout_ms),
            protects,
            log_format,
            log_level,
            admin,
            credentials,
        }),
        _ => Err(ConfigErrors(vec![
            "standby configuration incomplete — see docs/CONFIG.md".into(),
        ])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[instance]
name = "bgf1"
secret = "ex-Tq8Vz3Lm7Xw2Kp9Rc5Nb4Hj6Yf1Gd0sAe"
[access]
sip = "198.18.1.10:5060"
rtp_ports = "20000-29999"
[core]
sip = "198.18.2.10:5060"
media_ip = "198.18.2.10"
rtp_ports = "30000-39999"
next_hop = "198.18.2.20:5060"
[admin]
listen = "127.0.0.1:9090"
token = "0123456789abcdef"
"#;

    fn errors_of(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(c) => panic!("expected errors, got {c:?}"),
            Err(e) => e.0,
        }
    }

    fn replace(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from}");
        GOOD.replace(from, to)
    }

    #[test]
    fn good_file_maps_to_core_config() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.core.instance, "bgf1");
        assert_eq!(
            c.core.secret,
            hash_secret("ex-Tq8Vz3Lm7Xw2Kp9Rc5Nb4Hj6Yf1Gd0sAe")
        );
        assert_eq!(c.core.access.sip, "198.18.1.10:5060".parse().unwrap());
        assert_eq!(
            c.core.access.media_ip,
            "198.18.1.10".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            (c.core.access.rtp_port_min, c.core.access.rtp_port_max),
            (20000, 29999)
        );
        assert!(c.core.access.latching);
        assert!(!c.core.core.latching);
        assert_eq!(c.core.core_next_hop, "198.18.2.20:5060".parse().unwrap());
        assert_eq!(c.core.core_transport, Transport::Udp);
        assert_eq!(c.core.timers, TimerConfig::default());
        assert_eq!(c.core.max_message_bytes, 65535);
        assert_eq!(c.core.max_register_expires_s, 3600);
        assert_eq!(c.media.backend, "kernel");
        assert!(c.media.workers >= 1);
        assert_eq!(c.media.inactivity_timeout, Duration::from_secs(60));
        assert_eq!(c.log_format, LogFormat::Human);
        assert_eq!(c.log_level, "info");
        assert_eq!(
            c.admin.as_ref().unwrap().listen,
            "127.0.0.1:9090".parse().unwrap()
        );
        assert!(c.summary().contains("instance bgf1"));
    }

    #[test]
    fn example_file_is_valid() {
        let text = include_str!("../examples/bgf.toml");
        let c = parse(text).unwrap();
        assert_eq!(c.core.instance, "bgf1");
    }

    #[test]
    fn secret_hash_is_deterministic_and_discriminating() {
        assert_eq!(hash_secret("change-me"), hash_secret("change-me"));
        assert_ne!(hash_secret("change-me"), hash_secret("change-me2"));
        assert_eq!(hash_secret("a"), sip_control::ids::Key::derive(b"a"));
    }

    #[test]
    fn weak_secrets_are_refused_and_gen_secret_is_strong() {
        for weak in [
            "change-me-cluster-secret",
            "short",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            let e = errors_of(&replace("ex-Tq8Vz3Lm7Xw2Kp9Rc5Nb4Hj6Yf1Gd0sAe", weak));
            assert!(
                e.iter()
                    .any(|m| m.starts_with("instance.secret: too weak")
                        && m.contains("bgf gen-secret")),
                "{weak}: {e:?}"
            );
        }
        let a = gen_secret().unwrap();
        let b = gen_secret().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(secret_problem("s", &a).is_none(), "{a}");
        parse(&replace("ex-Tq8Vz3Lm7Xw2Kp9Rc5Nb4Hj6Yf1Gd0sAe", &a)).unwrap();
    }

    #[test]
    fn ipv6_addresses_accepted() {
        let c = parse(&replace("\"198.18.1.10:5060\"", "\"[fd00::10]:5060\"")).unwrap();
        assert_eq!(
            c.core.access.media_ip,
            "fd00::10".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn bad_port_names_field() {
        let e = errors_of(&replace("198.18.1.10:5060", "198.18.1.10:70000"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "access.sip: \"198.18.1.10:70000\" is not an IP:port (port must be 1-65535"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn empty_range_names_field() {
        let e = errors_of(&replace("30000-39999", "30000-29999"));
        assert!(
            e.iter()
                .any(|m| m.starts_with("core.rtp_ports: range 30000-29999 is empty")),
            "{e:?}"
        );
    }

    #[test]
    fn garbage_range_and_low_ports() {
        let e = errors_of(&replace("30000-39999", "abc"));
        assert!(
            e.iter()
                .any(|m| m.starts_with("core.rtp_ports: \"abc\" is not a port range")),
            "{e:?}"
        );
        let e = errors_of(&replace("30000-39999", "100-200"));
        assert!(e.iter().any(|m| m.starts_with("core.rtp_ports: ")), "{e:?}");
    }

    #[test]
    fn overlapping_ranges_on_same_ip() {
        let text = replace("media_ip = \"198.18.2.10\"", "media_ip = \"198.18.1.10\"")
            .replace("30000-39999", "29000-39999");
        let e = errors_of(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "access.rtp_ports overlaps core.rtp_ports while access.media_ip == core.media_ip"
            ),
            "{e:?}"
        );
        // Same ranges on different media IPs are fine.
        assert!(parse(&replace("30000-39999", "20000-29999")).is_ok());
    }

    #[test]
    fn missing_next_hop() {
        let e = errors_of(&replace("next_hop = \"198.18.2.20:5060\"", ""));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("core.next_hop missing"), "{e:?}");
    }

    #[test]
    fn all_errors_are_collected() {
        let text = GOOD
            .replace("\"bgf1\"", "\"bad name!\"")
            .replace("ex-Tq8Vz3Lm7Xw2Kp9Rc5Nb4Hj6Yf1Gd0sAe", "short")
            .replace("198.18.1.10:5060", "nonsense")
            .replace("30000-39999", "40000-30000")
            .replace("0123456789abcdef", "tiny");
        let e = errors_of(&text);
        for field in [
            "instance.name",
            "instance.secret",
            "access.sip",
            "core.rtp_ports",
            "admin.token",
        ] {
            assert!(
                e.iter().any(|m| m.starts_with(field)),
                "{field} not in {e:?}"
            );
        }
    }

    #[test]
    fn each_optional_section_validated() {
        let cases = [
            ("[sip]\nt1_ms = 0\n", "sip.t1_ms"),
            ("[sip]\nt1_ms = 500\nt2_ms = 100\n", "sip.t2_ms"),
            ("[sip]\nmax_message_bytes = 100\n", "sip.max_message_bytes"),
            (
                "[sip]\nmax_register_expires_s = 0\n",
                "sip.max_register_expires_s",
            ),
            (
                "[media]\nbackend = \"dpdk\"\n",
                if cfg!(feature = "dpdk") {
                    "media.backend = \"dpdk\" needs a [media.dpdk] section"
                } else {
                    "media.backend: \"dpdk\" is not built in this version"
                },
            ),
            ("[media]\nbackend = \"afxdp\"\n", "media.backend"),
            (
                "[media]\nbackend = \"xdp\"\n[media.xdp]\nmode = \"turbo\"\n",
                "media.xdp.mode",
            ),
            (
                "[media.xdp]\nmode = \"native\"\n",
                "[media.xdp]: only valid",
            ),
            ("[media]\nworkers = 0\n", "media.workers"),
            (
                "[media]\ninactivity_timeout_s = 0\n",
                "media.inactivity_timeout_s",
            ),
            ("[log]\nformat = \"xml\"\n", "log.format"),
            ("[log]\nlevel = \"info,=[\"\n", "log.level"),
        ];
        for (extra, expect) in cases {
            let e = errors_of(&format!("{GOOD}\n{extra}"));
            assert!(
                e.iter().any(|m| m.starts_with(expect)),
                "{expect} not in {e:?}"
            );
        }
    }

    #[test]
    fn transport_and_admin_checks() {
        let e = errors_of(&replace(
            "next_hop = \"198.18.2.20:5060\"",
            "next_hop = \"198.18.2.20:5060\"\nnext_hop_transport = \"sctp\"",
        ));
        assert!(e[0].starts_with("core.next_hop_transport"), "{e:?}");
        let c = parse(&replace(
            "next_hop = \"198.18.2.20:5060\"",
            "next_hop = \"198.18.2.20:5060\"\nnext_hop_transport = \"tcp\"",
        ))
        .unwrap();
        assert_eq!(c.core.core_transport, Transport::Tcp);
        let e = errors_of(&replace("token = \"0123456789abcdef\"", ""));
        assert!(e[0].starts_with("admin.token missing"), "{e:?}");
        let e = errors_of(&replace("127.0.0.1:9090", "127.0.0.1"));
        assert!(e[0].starts_with("admin.listen"), "{e:?}");
        let e = errors_of(&replace("198.18.2.10:5060", "198.18.1.10:5060"));
        assert!(
            e.iter().any(|m| m.starts_with("access.sip and core.sip")),
            "{e:?}"
        );
        let e = errors_of(&replace(
            "media_ip = \"198.18.2.10\"",
            "media_ip = \"0.0.0.0\"",
        ));
        assert!(e[0].starts_with("core.media_ip"), "{e:?}");
    }

    #[test]
    fn missing_sections_and_fields() {
        let e = errors_of("");
        for field in ["instance.name", "instance.secret", "[access]", "[core]"] {
            assert!(
                e.iter().any(|m| m.starts_with(field)),
                "{field} not in {e:?}"
            );
        }
    }

    #[test]
    fn statelog_section() {
        assert!(parse(GOOD).unwrap().statelog.is_none());
        let c = parse(&format!(
            "{GOOD}\n[statelog]\nbackend = \"embedded\"\naddr = \"127.0.0.1:7400\"\n{TLS}"
        ))
        .unwrap();
        let l = c.statelog.unwrap();
        assert_eq!(
            l.backend,
            crate::store::Backend::Embedded {
                addr: "127.0.0.1:7400".parse().unwrap()
            }
        );
        assert_eq!(l.append_timeout, Duration::from_millis(1000));
        assert_eq!((l.max_held, l.checkpoint_every), (10_000, 20_000));
        let c = parse(&format!("{GOOD}\n[statelog]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379/0\"\nredis_replicas = 1\nappend_timeout_ms = 200\ncheckpoint_every = 0\n")).unwrap();
        let l = c.statelog.unwrap();
        assert_eq!(
            l.backend,
            crate::store::Backend::Redis {
                url: "redis://127.0.0.1:6379/0".into(),
                replicas: 1
            }
        );
        assert_eq!(l.checkpoint_every, 0);
        let cases = [
            ("", "statelog.backend missing"),
            ("backend = \"kafka\"\n", "statelog.backend: \"kafka\""),
            ("backend = \"embedded\"\n", "statelog.addr missing"),
            (
                "backend = \"embedded\"\naddr = \"nope\"\n",
                "statelog.addr: \"nope\"",
            ),
            ("backend = \"redis\"\n", "statelog.redis_url missing"),
            (
                "backend = \"redis\"\nredis_url = \"http://x\"\n",
                "statelog.redis_url",
            ),
            (
                "backend = \"embedded\"\naddr = \"127.0.0.1:7400\"\nappend_timeout_ms = 5\nca = \"c\"\ncert = \"c\"\nkey = \"k\"\n",
                "statelog.append_timeout_ms",
            ),
            (
                "backend = \"embedded\"\naddr = \"127.0.0.1:7400\"\nmax_held = 0\nca = \"c\"\ncert = \"c\"\nkey = \"k\"\n",
                "statelog.max_held",
            ),
            (
                "backend = \"embedded\"\naddr = \"127.0.0.1:7400\"\ncheckpoint_every = 5\nca = \"c\"\ncert = \"c\"\nkey = \"k\"\n",
                "statelog.checkpoint_every",
            ),
        ];
        for (body, expect) in cases {
            let e = errors_of(&format!("{GOOD}\n[statelog]\n{body}"));
            assert!(
                e.iter().any(|m| m.starts_with(expect)),
                "{expect} not in {e:?}"
            );
        }
    }

    #[test]
    fn unknown_key_rejected() {
        let e = errors_of(&replace("[access]\n", "[access]\nbogus = 1\n"));
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("unknown field `bogus`"), "{e:?}");
        let e = errors_of(&format!("{GOOD}\n[extra]\nx = 1\n"));
        assert!(e[0].contains("unknown field `extra`"), "{e:?}");
        let e = errors_of(&replace(
            "[access]\n",
            "[access]\nnext_hop = \"198.18.1.1:5060\"\n",
        ));
        assert!(e[0].starts_with("access.next_hop"), "{e:?}");
    }

    /// The lab certificates of bgf1 (`bgf gen-certs` names).
    const TLS: &str =
        "ca = \"pki/ca.pem\"\ncert = \"pki/active-bgf1.pem\"\nkey = \"pki/active-bgf1.key\"\n";

    const HA: &str = r#"
[statelog]
backend = "embedded"
addr = "198.18.9.200:7400"
ca = "pki/ca.pem"
cert = "pki/active-bgf1.pem"
key = "pki/active-bgf1.key"
[ha]
heartbeat = "198.18.9.101:7001"
standby = "198.18.9.99:7101"
"#;

    #[test]
    fn ha_section() {
        let c = parse(&format!("{GOOD}{HA}")).unwrap();
        let h = c.ha.unwrap();
        assert_eq!(h.interval, Duration::from_millis(50));
        assert_eq!(h.miss_count, 3);
        assert_eq!(h.standby, "198.18.9.99:7101".parse().unwrap());
        assert_eq!(c.secret.expose(), b"ex-Tq8Vz3Lm7Xw2Kp9Rc5Nb4Hj6Yf1Gd0sAe");
        assert_eq!(format!("{:?}", c.secret), "Secret(..)");

        let no_log = HA.replace(
            &format!("[statelog]\nbackend = \"embedded\"\naddr = \"198.18.9.200:7400\"\n{TLS}"),
            "",
        );
        let e = errors_of(&format!("{GOOD}{no_log}"));
        assert!(e[0].starts_with("[ha] needs [statelog]"), "{e:?}");

        let on_service = HA.replace("198.18.9.101:7001", "198.18.1.10:7001");
        let e = errors_of(&format!("{GOOD}{on_service}"));
        assert!(e[0].contains("service address"), "{e:?}");

        let bad = HA
            .replace("[ha]\n", "[ha]\ninterval_ms = 0\nmiss_count = 1000\n")
            .replace("198.18.9.99:7101", "[fd00::1]:7101");
        let e = errors_of(&format!("{GOOD}{bad}"));
        assert_eq!(e.len(), 3, "{e:?}");
    }

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn standby_file_loads_every_protected_active() {
        let dir = std::env::temp_dir().join(format!("bgf-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        state_log::pki::generate(
            &dir.join("pki"),
            &state_log::pki::LabSpec {
                actives: vec!["bgf1".into(), "bgf2".into()],
                standbys: vec!["sb".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let a1 = format!("{GOOD}{HA}");
        let a2 = a1
            .replace("bgf1", "bgf2")
            .replace("198.18.1.10", "198.18.1.11")
            .replace("198.18.2.10", "198.18.2.11")
            .replace("198.18.9.101", "198.18.9.102")
            .replace("7101", "7102");
        write(&dir, "a1.toml", &a1);
        write(&dir, "a2.toml", &a2);
        let sb = r#"
[instance]
name = "sb"
[standby]
access_interface = "acc"
core_interface = "cor"
[[standby.protect]]
config = "a1.toml"
[[standby.protect]]
config = "a2.toml"
[statelog]
ca = "pki/ca.pem"
cert = "pki/standby-sb.pem"
key = "pki/standby-sb.key"
"#;
        let path = write(&dir, "sb.toml", sb);
        let AnyConfig::Standby(c) = load_any(&path).unwrap() else {
            panic!("a standby file");
        };
        assert_eq!(c.mode, StandbyMode::Hot);
        assert_eq!(c.protects.len(), 2);
        assert_eq!(c.protects[1].config.core.instance, "bgf2");
        assert_eq!(c.announce.len(), 6);
        assert_eq!(
            c.fence_timeout,
            Duration::from_millis(DEFAULT_FENCE_TIMEOUT_MS)
        );
        assert!(
            c.summary().contains("protects bgf1, bgf2"),
            "{}",
            c.summary()
        );
        assert!(matches!(
            load_any(&dir.join("a1.toml")).unwrap(),
            AnyConfig::Active(_)
        ));

        // Same active twice, a missing file, bad mode and schedule: all reported.
        let bad = sb.replace("a2.toml", "a1.toml").replace(
            "[standby]\n",
            "[standby]\nmode = \"warm\"\nannounce_ms = [50, 0]\nfence_timeout_ms = 10\n",
        ) + "[[standby.protect]]\nconfig = \"nope.toml\"\n";
        let path = write(&dir, "bad.toml", &bad);
        let e = load_standby(&path).unwrap_err().0;
        for expect in [
            "standby.mode",
            "standby.announce_ms",
            "standby.fence_timeout_ms",
            "nope.toml",
            "both are instance",
        ] {
            assert!(
                e.iter().any(|m| m.contains(expect)),
                "{expect} not in {e:?}"
            );
        }
        // An active without [ha] cannot be protected.
        write(&dir, "a1.toml", GOOD);
        let e = load_standby(&dir.join("sb.toml")).unwrap_err().0;
        assert!(e.iter().any(|m| m.contains("no [ha] section")), "{e:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
