//! Helpers for the output-commit tests: the `CoreConfig` a `bgf active`
//! derives from a harness config, reading an instance's whole log from any
//! `LogStore`, replaying it (from its checkpoint) into a fresh core, and the
//! live state and `statelog` stats to compare it with.

use crate::{Bed, BgfConfig};
use sip_control::{Core, CoreConfig, SideConfig, TimerConfig, Transport};
use state_log::{replay_all, LogClient, LogStore, Record};
use std::sync::Arc;
use std::time::Duration;

/// The core's PRF key for an instance secret, as `bgf`'s config derives it.
pub fn prf_key(secret: &str) -> sip_control::ids::Key {
    sip_control::ids::Key::derive(secret.as_bytes())
}

/// The `CoreConfig` the daemon derives from the harness config.
pub fn core_config(c: &BgfConfig) -> CoreConfig {
    let side = |sip, media_ip, (min, max): (u16, u16), latching| SideConfig {
        sip,
        media_ip,
        rtp_port_min: min,
        rtp_port_max: max,
        latching,
    };
    let mut timers = TimerConfig::default();
    if let Some(t) = c.timer_c_ms {
        timers.timer_c = t;
    }
    CoreConfig {
        instance: c.name.clone(),
        secret: prf_key(&c.secret),
        access: side(
            c.access_sip,
            c.access_media_ip,
            c.access_rtp_ports,
            c.access_latching,
        ),
        core: side(
            c.core_sip,
            c.core_media_ip,
            c.core_rtp_ports,
            c.core_latching,
        ),
        core_next_hop: c.next_hop,
        core_transport: if c.next_hop_transport == "tcp" {
            Transport::Tcp
        } else {
            Transport::Udp
        },
        timers,
        session_expires_s: 0,
        max_register_expires_s: 3600,
        max_message_bytes: 65535,
        security: security(c),
    }
}

/// The `Security` the daemon derives from the harness config (`[limits]`
/// caps and `allow_loopback_media`; the extra `[access]`/`[core]` lines a
/// test adds are not mirrored — replay tests do not use them).
pub fn security(c: &BgfConfig) -> sip_control::Security {
    let mut s = sip_control::Security {
        limits: c.limits.clone(),
        require_registration: c.require_registration,
        ..Default::default()
    };
    s.access.media.allow_loopback = c.allow_loopback_media;
    s.core.media.allow_loopback = c.allow_loopback_media;
    s
}

/// A current-thread runtime for the blocking tests.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Every record of `instance`'s log, in order (continuity-checked).
pub async fn read_all(store: Arc<dyn LogStore>, instance: &str) -> Vec<Record> {
    let mut replay = LogClient::new(store)
        .replay(instance, 1)
        .await
        .expect("log end");
    let mut out = Vec::new();
    while let Some(batch) = replay.next_batch().await.expect("log read") {
        out.extend(batch);
    }
    out
}

/// Read `cfg.instance`'s whole log from `store` and replay it (from its
/// checkpoint if any) with the product's `Replayer`; returns the core and
/// the number of records read.
pub async fn replay(store: Arc<dyn LogStore>, cfg: &CoreConfig) -> (Core, u64) {
    let r = replay_all(&LogClient::new(store), cfg)
        .await
        .expect("the log replays");
    let n = r.records();
    (r.into_core(), n)
}

/// The `statelog` object of `/v1/stats`.
pub fn statelog(bed: &Bed) -> serde_json::Value {
    bed.stats()
        .get("statelog")
        .cloned()
        .unwrap_or_else(|| panic!("no statelog in stats: {}", bed.stats()))
}

/// A numeric field of a JSON object.
pub fn num(v: &serde_json::Value, k: &str) -> u64 {
    v.get(k)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("{k} in {v}"))
}

/// `statelog.degraded`, if the stats answer.
pub fn degraded(bed: &Bed) -> Option<bool> {
    bed.bgf
        .admin
        .stats()
        .ok()?
        .get("statelog")?
        .get("degraded")?
        .as_bool()
}

/// `/v1/sessions` without the per-pinhole `counters` (not part of the core state).
pub fn live_sessions(bed: &Bed) -> serde_json::Value {
    let (code, body) = bed
        .bgf
        .admin
        .get("/v1/sessions", true)
        .expect("GET /v1/sessions");
    assert_eq!(code, 200, "{body}");
    let mut v: serde_json::Value = serde_json::from_str(&body).expect("sessions JSON");
    for s in v.as_array_mut().into_iter().flatten() {
        if let Some(ps) = s.get_mut("pinholes").and_then(|p| p.as_array_mut()) {
            for p in ps {
                if let Some(o) = p.as_object_mut() {
                    o.remove("counters");
                }
            }
        }
    }
    v
}

/// Replay the log (with `replay`) and compare with the live core: the
/// sessions view (without counters) and the session/registration counts.
/// Retried while the live state moves between the reads; returns the number
/// of records replayed.
pub fn assert_replay_equals_live(bed: &Bed, replay: impl Fn(&CoreConfig) -> (Core, u64)) -> u64 {
    let cfg = core_config(&bed.bgf.config);
    let mut last = String::new();
    for _ in 0..40 {
        let s1 = statelog(bed);
        if num(&s1, "durable_seq") + 1 != num(&s1, "next_seq") {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let live = live_sessions(bed);
        let stats = bed.stats();
        let s2 = stats.get("statelog").cloned().unwrap_or_default();
        if num(&s2, "next_seq") != num(&s1, "next_seq") {
            continue;
        }
        let (core, n) = replay(&cfg);
        assert!(n > 0, "the log is empty");
        let replayed = serde_json::to_value(core.sessions()).expect("sessions serialize");
        if replayed == live
            && core.session_count() as u64 == num(&stats, "sessions")
            && core.registration_count() as u64 == num(&stats, "registrations")
        {
            return n;
        }
        last = format!("replayed {replayed}\nlive {live}\nstats {stats}");
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("replay never matched the live state:\n{last}");
}
