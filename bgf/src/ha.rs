//! N+1 glue shared by both roles: the active's end of its heartbeat link
//! ([`ActiveHa`]: fencing news from the standby, dropping the service
//! addresses when fenced), the service addresses of an instance, and the
//! re-arming of a replayed core's timers at takeover ([`pending_timers`]).
//!
//! Not here: detection, replay and the takeover sequence (the `standby`
//! crate), the standby daemon (`standby_role`).

use crate::commit::AppenderStatus;
use crate::config::Config;
use serde::Serialize;
use sip_control::txn::TimerKind;
use sip_control::{Core, CoreConfig, TimerId};
use standby::{
    HeartbeatEvent, HeartbeatRuntime, HeartbeatSender, IfAddr, Link, LinkConfig, LinkWatch,
    RttStats,
};
use state_log::Epoch;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// The active's heartbeat link to its standby (`[ha]`).
pub struct ActiveHa {
    link: Link,
    /// The output-commit appender's progress: its durable seq goes into
    /// every heartbeat (`None` without a state log, or once it stopped).
    durable: Option<watch::Receiver<AppenderStatus>>,
    view: HaHandle,
    // Declared after the link: dropped last, so the link's task stops first.
    _rt: HeartbeatRuntime,
}

/// `/v1/ha` of `bgf active`: the standby as this active sees it.
#[derive(Clone, Debug, Serialize)]
pub struct HaView {
    /// The standby's heartbeat address.
    pub standby: String,
    /// `unknown` (not heard yet), `alive` or `failed`.
    pub standby_state: &'static str,
    /// Whether this active is protected (the standby is heard).
    pub protected: bool,
    /// Set while the standby's heartbeats are missing.
    pub alarm: Option<String>,
    /// When the alarm was raised (ms since the Unix epoch).
    pub alarm_since_unix_ms: Option<u64>,
    /// The epoch this active appends under.
    pub epoch: Epoch,
    /// The durable log seq sent in our heartbeats.
    pub log_seq: state_log::Seq,
    /// Heartbeat round-trip times to the standby (as of [`HaView::fresh`]).
    pub rtt: RttStats,
    /// The link, read when the view is shown.
    #[serde(skip)]
    link: Option<LinkWatch>,
}

impl HaView {
    /// A copy with the link's current round-trip times.
    pub fn fresh(&self) -> HaView {
        let mut v = self.clone();
        if let Some(l) = &self.link {
            v.rtt = l.rtt();
        }
        v
    }
}

/// Shared between the heartbeat handling and the admin server.
pub type HaHandle = Arc<Mutex<HaView>>;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ActiveHa {
    /// Start sending heartbeats (on a thread of their own) if `[ha]` is
    /// configured. `epoch` is the epoch this active appends under.
    /// `durable` is the output-commit appender's status channel
    /// ([`crate::commit::Commit::durable_watch`]): each durable ack updates
    /// the log seq our heartbeats carry.
    pub fn start(
        cfg: &Config,
        epoch: Epoch,
        durable: Option<watch::Receiver<AppenderStatus>>,
    ) -> Result<Option<ActiveHa>, String> {
        let Some(h) = &cfg.ha else {
            return Ok(None);
        };
        let rt = HeartbeatRuntime::start("bgf-heartbeat")
            .map_err(|e| format!("cannot start the heartbeat thread: {e}"))?;
        let mut lc = LinkConfig::active(
            &cfg.core.instance,
            cfg.secret.expose(),
            h.heartbeat,
            h.standby,
        );
        lc.interval = h.interval;
        lc.miss_count = h.miss_count;
        let link = HeartbeatSender::spawn(rt.handle(), lc, epoch)
            .map_err(|e| format!("{e} (ha.heartbeat)"))?;
        let log_seq = durable.as_ref().map_or(0, |d| d.borrow().durable);
        link.set_log_seq(log_seq);
        info!(heartbeat = %h.heartbeat, standby = %h.standby, epoch, log_seq, "heartbeats to the standby started");
        let view = Arc::new(Mutex::new(HaView {
            standby: h.standby.to_string(),
            standby_state: "unknown",
            protected: false,
            alarm: None,
            alarm_since_unix_ms: None,
            epoch,
            log_seq,
            rtt: link.rtt(),
            link: Some(link.watch()),
        }));
        Ok(Some(ActiveHa {
            link,
            durable,
            view,
            _rt: rt,
        }))
    }

    /// The view `/v1/ha` shows (updated as heartbeat events come in).
    pub fn view(&self) -> HaHandle {
        self.view.clone()
    }

    fn update(&self, f: impl FnOnce(&mut HaView)) {
        if let Ok(mut v) = self.view.lock() {
            f(&mut v);
        }
    }

    /// The next heartbeat event; meanwhile every durable ack of the
    /// appender goes into our heartbeats' log seq.
    async fn next_event(&mut self) -> Option<HeartbeatEvent> {
        loop {
            let Some(d) = self.durable.as_mut() else {
                return self.link.next_event().await;
            };
            tokio::select! {
                ev = self.link.next_event() => return ev,
                r = d.changed() => match r {
                    Ok(()) => {
                        let seq = d.borrow_and_update().durable;
                        self.link.set_log_seq(seq);
                        self.update(|v| v.log_seq = seq);
                    }
                    // The appender stopped (fenced or shutting down).
                    Err(_) => self.durable = None,
                },
            }
        }
    }

    /// Resolves when the standby reports that the store fenced us; logs the
    /// standby's comings and goings meanwhile.
    pub async fn fenced(&mut self) -> (Epoch, Epoch) {
        loop {
            match self.next_event().await {
                Some(HeartbeatEvent::Fenced { own, store }) => return (own, store),
                Some(HeartbeatEvent::PeerUp { returned, .. }) => {
                    let had_alarm = self.view.lock().is_ok_and(|v| v.alarm.is_some());
                    self.update(|v| {
                        v.standby_state = "alive";
                        v.protected = true;
                        v.alarm = None;
                        v.alarm_since_unix_ms = None;
                    });
                    if had_alarm {
                        info!(
                            "standby heard again: this active is protected again (alarm cleared)"
                        );
                    } else if returned {
                        info!("standby heard again: this active is protected again");
                    } else {
                        info!("standby heard: this active is protected");
                    }
                }
                Some(HeartbeatEvent::PeerFailed(f)) => {
                    let msg = format!(
                        "no standby heartbeats ({:?}): this active is UNPROTECTED — check that `bgf standby` runs and that ha.standby {} is reachable",
                        f.reason,
                        self.view.lock().map(|v| v.standby.clone()).unwrap_or_default()
                    );
                    warn!(reason = ?f.reason, "ALARM {msg}");
                    self.update(|v| {
                        v.standby_state = "failed";
                        v.protected = false;
                        v.alarm = Some(msg);
                        v.alarm_since_unix_ms = Some(unix_ms());
                    });
                }
                Some(other) => warn!(event = ?other, "unexpected heartbeat event"),
                None => std::future::pending::<()>().await,
            }
        }
    }
}

/// Waits for [`ActiveHa::fenced`], forever if there is no `[ha]`.
pub async fn fenced(ha: &mut Option<ActiveHa>) -> (Epoch, Epoch) {
    match ha {
        Some(h) => h.fenced().await,
        None => std::future::pending().await,
    }
}

/// The instance's service addresses (SIP and media, both sides), deduplicated.
pub fn service_ips(c: &CoreConfig) -> Vec<(sip_control::Side, IpAddr)> {
    let mut v: Vec<(sip_control::Side, IpAddr)> = Vec::new();
    for (side, ip) in [
        (sip_control::Side::Access, c.access.sip.ip()),
        (sip_control::Side::Access, c.access.media_ip),
        (sip_control::Side::Core, c.core.sip.ip()),
        (sip_control::Side::Core, c.core.media_ip),
    ] {
        if !ip.is_unspecified() && !v.iter().any(|(_, x)| *x == ip) {
            v.push((side, ip));
        }
    }
    v
}

/// Every address configured on this host's interfaces: `(ifname, addr,
/// prefix length)`.
fn interface_addrs() -> Vec<(String, IpAddr, u8)> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut p = head;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated C string.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr is non-null; the family says which struct it is.
        let fam = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let prefix = |mask: &[u8]| mask.iter().map(|b| b.count_ones() as u8).sum::<u8>();
        if fam == libc::AF_INET {
            // SAFETY: AF_INET → sockaddr_in.
            let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            let ip = IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes());
            let len = if ifa.ifa_netmask.is_null() {
                32
            } else {
                // SAFETY: the netmask has the address's family.
                let m = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in) };
                prefix(&m.sin_addr.s_addr.to_ne_bytes())
            };
            out.push((name, ip, len));
        } else if fam == libc::AF_INET6 {
            // SAFETY: AF_INET6 → sockaddr_in6.
            let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
            let ip = IpAddr::from(a.sin6_addr.s6_addr);
            let len = if ifa.ifa_netmask.is_null() {
                128
            } else {
                // SAFETY: as above.
                let m = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in6) };
                prefix(&m.sin6_addr.s6_addr)
            };
            out.push((name, ip, len));
        }
    }
    // SAFETY: `head` came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// A fenced active drops its service addresses so that it can never answer
/// for them again (the standby owns them now). Only with `[ha]`: an
/// unprotected instance's addresses are the operator's.
pub fn release_service_addresses(cfg: &Config) {
    if cfg.ha.is_none() {
        return;
    }
    let wanted = service_ips(&cfg.core);
    let held: Vec<IfAddr> = interface_addrs()
        .into_iter()
        .filter(|(_, ip, _)| wanted.iter().any(|(_, w)| w == ip))
        .map(|(ifname, addr, prefix_len)| IfAddr {
            ifname,
            addr,
            prefix_len,
        })
        .collect();
    if held.is_empty() {
        info!("fenced: no service address was configured here any more");
        return;
    }
    let errs = standby::takeover::release_addresses(&held);
    let names: Vec<String> = held
        .iter()
        .map(|a| format!("{}/{} on {}", a.addr, a.prefix_len, a.ifname))
        .collect();
    if errs.is_empty() {
        info!(released = ?names, "fenced: service addresses dropped; their new owner answers for them now");
    } else {
        for e in errs {
            error!(error = %e, "fenced: could not drop a service address — remove it by hand (`ip addr del`), or two hosts answer for it");
        }
    }
}

/// Deadlines for every timer armed in a replayed core, so that the serving
/// standby re-arms them (the log holds inputs, not deadlines). Registration
/// expiries keep their exact time; transaction timers restart from `now`
/// (a retransmission is due at once, cleanups after their full wait);
/// session expiries restart a full interval (a call is never cut early).
pub fn pending_timers(core: &Core, now: u64) -> Vec<(TimerId, u64)> {
    let st = core.state();
    let cfg = core.config();
    let t1 = cfg.timers.t1.max(1);
    let session_ms = if cfg.session_expires_s > 0 {
        cfg.session_expires_s.saturating_mul(1000)
    } else {
        1_800_000
    };
    st.timers
        .iter()
        .map(|(id, kind)| {
            let at = match kind {
                TimerKind::ClientRetransmit(k) => {
                    now + st.clients.get(k).map_or(t1, |c| c.interval.clamp(1, t1))
                }
                TimerKind::ServerRetransmit(k) => {
                    now + st.servers.get(k).map_or(t1, |s| s.g_interval.clamp(1, t1))
                }
                TimerKind::ClientTimeout(_)
                | TimerKind::ClientCleanup(_)
                | TimerKind::ServerCleanup(_) => now + 64 * t1,
                TimerKind::TimerC(_) => now + cfg.timers.timer_c,
                TimerKind::SessionExpiry(_) => now + session_ms,
                TimerKind::Registration(token) => st
                    .bindings
                    .get(token)
                    .map_or(now, |b| b.expires_at.max(now)),
            };
            (*id, at)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_control::{Input, Side, SipIn, Transport};

    fn cfg() -> CoreConfig {
        CoreConfig::example(
            "198.18.0.11".parse().unwrap(),
            "198.18.1.11".parse().unwrap(),
            "198.18.1.200:5060".parse().unwrap(),
        )
    }

    #[test]
    fn service_ips_dedupe_and_keep_sides() {
        let c = cfg();
        let ips = service_ips(&c);
        assert_eq!(
            ips,
            vec![
                (Side::Access, "198.18.0.11".parse().unwrap()),
                (Side::Core, "198.18.1.11".parse().unwrap())
            ]
        );
    }

    #[test]
    fn interface_addrs_lists_loopback() {
        let all = interface_addrs();
        assert!(
            all.iter()
                .any(|(n, ip, len)| n == "lo" && *ip == IpAddr::from([127, 0, 0, 1]) && *len == 8),
            "{all:?}"
        );
    }

    #[test]
    fn every_armed_timer_gets_a_deadline_registration_keeps_its_own() {
        let mut core = Core::new(cfg()).unwrap();
        let reg = "REGISTER sip:ims.example SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.200:5060;branch=z9hG4bK-r1\r\nFrom: <sip:ue@ims.example>;tag=a\r\nTo: <sip:ue@ims.example>\r\nCall-ID: reg1\r\nCSeq: 1 REGISTER\r\nContact: <sip:ue@198.18.0.200:5060>\r\nExpires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        let at = 1_000_000;
        core.apply(&Input::Sip(SipIn {
            side: Side::Access,
            transport: Transport::Udp,
            src: "198.18.0.200:5060".parse().unwrap(),
            dst: "198.18.0.11:5060".parse().unwrap(),
            at,
            data: reg.as_bytes().to_vec(),
        }));
        assert!(!core.state().timers.is_empty(), "REGISTER armed timers");
        let now = at + 10_000;
        let t = pending_timers(&core, now);
        assert_eq!(t.len(), core.state().timers.len());
        for (id, due) in &t {
            assert!(core.state().timers.contains_key(id));
            assert!(*due >= now, "{id:?} due {due} before now {now}");
        }
    }
}
