//! `bgfctl status`: what each process says about itself ([`gather`]), the
//! cluster's protection state ([`protection`]) and the table ([`table`]).
//!
//! Protection states:
//! - **N+1 protected**: a standby protects every active (heartbeats alive,
//!   replica healthy), every active hears it, no alarm, all reachable.
//! - **no standby**: no standby in the cluster, or it already serves a
//!   taken-over instance (a further failure would not be taken over).
//! - **degraded**: anything else (an instance unreachable, a heartbeat not
//!   alive, a replica error, an active nobody protects, an alarm, a
//!   takeover in progress, a state log degraded).
//!
//! A `bgf statelog` (role `statelog` on `/health`) gets a row of its own
//! and counts only if it is unreachable; a role this build does not know
//! is shown as it is and counts for nothing.

use crate::client::{ApiError, Client};
use serde::Serialize;
use serde_json::Value;

/// One heartbeat peer as a process sees it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Peer {
    pub peer: String,
    /// `alive`, `suspect`, `failed`, `unknown`.
    pub state: String,
    pub last_heard_ms_ago: Option<u64>,
    /// Smoothed heartbeat round-trip time, µs (`None`: not measured yet, or
    /// an older bgf).
    pub srtt_us: Option<u64>,
}

/// The roles of a `bgf standby` process.
pub const STANDBY_ROLES: &[&str] = &["standby", "taking_over", "serving"];

/// One active protected by a standby.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Guard {
    pub instance: String,
    /// `protected`, `serving`, `failed_unprotected`, `takeover_failed`.
    pub state: String,
    /// Heartbeat state of the link to that active.
    pub heartbeat: String,
    pub replica_lag: Option<u64>,
    pub replica_error: Option<String>,
}

/// What one process reported (or why it did not).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct InstanceStatus {
    pub name: String,
    pub admin: String,
    pub reachable: bool,
    /// Why not, with what to do.
    pub error: Option<String>,
    /// `active`, `standby`, `taking_over`, `serving`.
    pub role: Option<String>,
    /// The instance a standby serves after a takeover.
    pub serving: Option<String>,
    /// `{access_sip, core_sip, access_media_ip, core_media_ip}`.
    pub service: Option<Value>,
    pub epoch: Option<u64>,
    pub sessions: Option<u64>,
    /// Active: records not yet durable. Standby: the largest replica lag.
    pub log_lag: Option<u64>,
    pub log_degraded: bool,
    pub heartbeats: Vec<Peer>,
    /// Active: whether it hears its standby (`None` without `[ha]`).
    pub ha_protected: Option<bool>,
    /// Standby: the actives it protects.
    pub guards: Vec<Guard>,
    pub standby_available: Option<bool>,
    pub alarms: Vec<String>,
    /// `bgf statelog`: its data directory and how many instances it holds.
    pub statelog: Option<StatelogInfo>,
}

/// What a `bgf statelog` says on `/health`.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StatelogInfo {
    pub data: Option<String>,
    pub instances: Option<u64>,
    pub uptime_s: Option<u64>,
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(|x| x.as_str()).map(str::to_string)
}

fn n(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64()
}

/// Add what `/v1/stats` says (sessions, service addresses, epoch, log lag).
fn take_stats(st: &mut InstanceStatus, v: &Value) {
    st.sessions = n(v, &["sessions"]);
    st.service = v.get("service").cloned();
    if let Some(l) = v.get("statelog") {
        st.epoch = n(l, &["epoch"]);
        st.log_lag = n(l, &["lag"]);
        st.log_degraded = l.get("degraded").and_then(|d| d.as_bool()) == Some(true);
    }
}

/// Ask one process for everything `status` shows.
pub fn gather(c: &Client) -> InstanceStatus {
    let mut st = InstanceStatus {
        name: c.instance.name.clone(),
        admin: c.instance.admin.clone(),
        ..Default::default()
    };
    let fail = |mut st: InstanceStatus, e: ApiError| {
        st.error = Some(e.to_string());
        st
    };
    let health = match c.json("/health") {
        Ok(h) => h,
        Err(e) => return fail(st, e),
    };
    st.reachable = true;
    st.role = s(&health, "role");
    if let Some(id) = s(&health, "instance") {
        if id != st.name {
            st.alarms.push(format!(
                "the process at {} says it is {id:?}, not {:?} — fix the cluster file",
                st.admin, st.name
            ));
        }
    }
    if st.role.as_deref() == Some("statelog") {
        st.statelog = Some(StatelogInfo {
            data: s(&health, "data"),
            instances: n(&health, &["instances"]),
            uptime_s: n(&health, &["uptime_s"]),
        });
    } else if st
        .role
        .as_deref()
        .is_some_and(|r| r != "active" && !STANDBY_ROLES.contains(&r))
    {
        // A role this build does not know (a newer bgf): shown, not asked.
    } else if st.role.as_deref() == Some("active") {
        match c.json("/v1/stats") {
            Ok(v) => take_stats(&mut st, &v),
            Err(e) => return fail(st, e),
        }
        match c.json("/v1/ha") {
            Ok(v) => {
                st.ha_protected = v.get("protected").and_then(|p| p.as_bool());
                st.heartbeats.push(Peer {
                    peer: s(&v, "standby").unwrap_or_default(),
                    state: s(&v, "standby_state").unwrap_or_default(),
                    last_heard_ms_ago: None,
                    srtt_us: n(&v, &["rtt", "srtt_us"]),
                });
                if let Some(a) = s(&v, "alarm") {
                    st.alarms.push(a);
                }
            }
            Err(ApiError::Status(404, _)) => {}
            Err(e) => return fail(st, e),
        }
    } else {
        let v = match c.json("/v1/standby") {
            Ok(v) => v,
            Err(e) => return fail(st, e),
        };
        st.role = s(&v, "role").or(st.role);
        st.serving = s(&v, "serving");
        st.standby_available = v.get("standby_available").and_then(|b| b.as_bool());
        for g in v
            .get("protected")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            let hb = g.get("heartbeat").cloned().unwrap_or_default();
            let rep = g.get("replica").cloned().unwrap_or_default();
            let guard = Guard {
                instance: s(g, "instance").unwrap_or_default(),
                state: s(g, "state").unwrap_or_default(),
                heartbeat: s(&hb, "state").unwrap_or_default(),
                replica_lag: n(&rep, &["lag"]),
                replica_error: s(&rep, "error"),
            };
            st.heartbeats.push(Peer {
                peer: guard.instance.clone(),
                state: guard.heartbeat.clone(),
                last_heard_ms_ago: n(&hb, &["last_heard_ms_ago"]),
                srtt_us: n(&hb, &["rtt", "srtt_us"]),
            });
            st.guards.push(guard);
        }
        st.log_lag = st.guards.iter().filter_map(|g| g.replica_lag).max();
        st.alarms.extend(
            v.get("alarms")
                .and_then(|a| a.as_array())
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_string)),
        );
        if st.serving.is_some() {
            if let Ok(v) = c.json("/v1/stats") {
                take_stats(&mut st, &v);
                // The replicas stopped at the takeover: the lag is the log's.
                st.log_lag = n(&v, &["statelog", "lag"]);
            }
        }
    }
    st
}

/// The cluster's protection state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Protection {
    #[serde(rename = "N+1 protected")]
    Protected,
    #[serde(rename = "no standby")]
    NoStandby,
    #[serde(rename = "degraded")]
    Degraded,
}

impl std::fmt::Display for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protection::Protected => "N+1 protected",
            Protection::NoStandby => "no standby",
            Protection::Degraded => "degraded",
        })
    }
}

/// The protection state and the reasons it is not "N+1 protected".
pub fn protection(all: &[InstanceStatus]) -> (Protection, Vec<String>) {
    let mut reasons = Vec::new();
    for i in all.iter().filter(|i| !i.reachable || i.error.is_some()) {
        reasons.push(
            i.error
                .clone()
                .unwrap_or_else(|| format!("{} unreachable", i.name)),
        );
    }
    let reachable: Vec<&InstanceStatus> = all.iter().filter(|i| i.error.is_none()).collect();
    let standbys: Vec<&&InstanceStatus> = reachable
        .iter()
        .filter(|i| {
            i.role
                .as_deref()
                .is_some_and(|r| STANDBY_ROLES.contains(&r))
        })
        .collect();
    let available: Vec<&&&InstanceStatus> = standbys
        .iter()
        .filter(|i| i.standby_available != Some(false))
        .collect();
    for i in &reachable {
        for a in &i.alarms {
            reasons.push(format!("{}: {a}", i.name));
        }
        if i.log_degraded {
            reasons.push(format!(
                "{}: state log degraded (new calls refused)",
                i.name
            ));
        }
    }
    let mut no_standby = false;
    if standbys.is_empty() {
        if reasons.is_empty() {
            no_standby = true;
            reasons.push("no bgf standby in the cluster: an active failure loses its calls".into());
        } else {
            reasons.push("no standby reachable".into());
        }
    } else if available.is_empty() {
        no_standby = true;
        for sb in &standbys {
            let said = |k: &str| sb.alarms.iter().any(|a| a.contains(&format!("serves {k}")));
            if let Some(k) = sb.serving.as_ref().filter(|k| !said(k)) {
                reasons.push(format!(
                    "{} serves {k} since its takeover: start a new `bgf standby` to restore N+1 protection",
                    sb.name
                ));
            }
        }
    } else {
        for sb in &available {
            if sb.role.as_deref() == Some("taking_over") {
                reasons.push(format!("{}: a takeover is in progress", sb.name));
            }
            for g in &sb.guards {
                if g.state != "protected" {
                    reasons.push(format!("{}: {} is {}", sb.name, g.instance, g.state));
                } else if g.heartbeat != "alive" {
                    reasons.push(format!(
                        "{}: heartbeats of {} are {}",
                        sb.name, g.instance, g.heartbeat
                    ));
                }
                if let Some(e) = &g.replica_error {
                    reasons.push(format!("{}: replica of {}: {e}", sb.name, g.instance));
                }
            }
        }
        for a in reachable
            .iter()
            .filter(|i| i.role.as_deref() == Some("active"))
        {
            let guarded = available
                .iter()
                .any(|sb| sb.guards.iter().any(|g| g.instance == a.name));
            if !guarded {
                reasons.push(format!("{} is protected by no standby", a.name));
            } else if a.ha_protected == Some(false) {
                reasons.push(format!("{} does not hear its standby", a.name));
            }
        }
    }
    let p = if reasons.is_empty() {
        Protection::Protected
    } else if no_standby {
        Protection::NoStandby
    } else {
        Protection::Degraded
    };
    (p, reasons)
}

/// Format rows as columns separated by two spaces.
pub fn columns(rows: &[Vec<String>]) -> String {
    let w = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..w)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |x| x.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                let pad = widths[c] - cell.chars().count() + 2;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), |x| x.to_string())
}

/// A round-trip time for the table: `0.3 ms`, `12 ms`.
fn ms(us: u64) -> String {
    if us < 10_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{} ms", (us + 500) / 1_000)
    }
}

/// The status table (header line with the protection state first).
pub fn table(all: &[InstanceStatus], p: Protection, reasons: &[String]) -> String {
    let mut out = format!("cluster: {p}\n");
    for r in reasons {
        out.push_str(&format!("  - {r}\n"));
    }
    out.push('\n');
    let mut rows = vec![[
        "INSTANCE",
        "ROLE",
        "ADMIN",
        "SERVICE (access / core SIP)",
        "EPOCH",
        "SESSIONS",
        "LOG LAG",
        "HEARTBEAT",
    ]
    .map(String::from)
    .to_vec()];
    for i in all {
        let role = match (&i.error, &i.role, &i.serving) {
            (Some(_), None, _) if !i.reachable => "unreachable".to_string(),
            (Some(_), _, _) => "error".to_string(),
            (None, Some(r), Some(k)) => format!("{r} ({k})"),
            (None, Some(r), None) => r.clone(),
            (None, None, _) => "?".to_string(),
        };
        let service = match (&i.service, &i.statelog) {
            (Some(v), _) => format!(
                "{} / {}",
                s(v, "access_sip").unwrap_or_default(),
                s(v, "core_sip").unwrap_or_default()
            ),
            (None, Some(l)) => format!(
                "state log: {} instances in {}",
                opt(&l.instances),
                l.data.as_deref().unwrap_or("?")
            ),
            (None, None) => "-".to_string(),
        };
        let hb = if i.heartbeats.is_empty() {
            if i.role.as_deref() == Some("active") && i.error.is_none() {
                "no [ha]".to_string()
            } else {
                "-".to_string()
            }
        } else {
            i.heartbeats
                .iter()
                .map(|p| {
                    let rtt = p
                        .srtt_us
                        .filter(|_| p.state == "alive")
                        .map_or(String::new(), |us| format!(" {}", ms(us)));
                    if i.role.as_deref() == Some("active") {
                        format!("standby {}{rtt}", p.state)
                    } else {
                        format!("{} {}{rtt}", p.peer, p.state)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let lag = match (i.log_lag, i.log_degraded) {
            (Some(l), true) => format!("{l} (degraded)"),
            (l, _) => opt(&l),
        };
        rows.push(vec![
            i.name.clone(),
            role,
            i.admin.clone(),
            service,
            opt(&i.epoch),
            opt(&i.sessions),
            lag,
            hb,
        ]);
    }
    out.push_str(&columns(&rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(name: &str, heard: bool) -> InstanceStatus {
        InstanceStatus {
            name: name.into(),
            reachable: true,
            role: Some("active".into()),
            ha_protected: Some(heard),
            heartbeats: vec![Peer {
                peer: "sb".into(),
                state: if heard { "alive" } else { "failed" }.into(),
                last_heard_ms_ago: None,
                srtt_us: Some(312),
            }],
            sessions: Some(3),
            log_lag: Some(0),
            ..Default::default()
        }
    }

    fn standby(guards: &[(&str, &str, &str)], serving: Option<&str>) -> InstanceStatus {
        InstanceStatus {
            heartbeats: guards
                .iter()
                .map(|(i, _, hb)| Peer {
                    peer: i.to_string(),
                    state: hb.to_string(),
                    last_heard_ms_ago: Some(10),
                    srtt_us: Some(12_345),
                })
                .collect(),
            name: "sb".into(),
            reachable: true,
            role: Some(
                if serving.is_some() {
                    "serving"
                } else {
                    "standby"
                }
                .into(),
            ),
            serving: serving.map(String::from),
            standby_available: Some(serving.is_none()),
            guards: guards
                .iter()
                .map(|(i, st, hb)| Guard {
                    instance: i.to_string(),
                    state: st.to_string(),
                    heartbeat: hb.to_string(),
                    replica_lag: Some(0),
                    replica_error: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn protection_states() {
        let ok = [
            active("a1", true),
            active("a2", true),
            standby(
                &[("a1", "protected", "alive"), ("a2", "protected", "alive")],
                None,
            ),
        ];
        assert_eq!(protection(&ok), (Protection::Protected, vec![]));

        let (p, r) = protection(&[active("a1", false)]);
        assert_eq!(p, Protection::NoStandby, "{r:?}");

        let served = [
            active("a2", true),
            standby(
                &[("a1", "serving", "failed"), ("a2", "protected", "alive")],
                Some("a1"),
            ),
        ];
        let (p, r) = protection(&served);
        assert_eq!(p, Protection::NoStandby);
        assert!(r[0].contains("serves a1"), "{r:?}");

        let mut down = ok.clone();
        down[0] = InstanceStatus {
            name: "a1".into(),
            error: Some("a1 unreachable at http://x: refused".into()),
            ..Default::default()
        };
        down[2].guards[0].heartbeat = "failed".into();
        let (p, r) = protection(&down);
        assert_eq!(p, Protection::Degraded);
        assert!(r.iter().any(|x| x.contains("a1 unreachable")), "{r:?}");
        assert!(
            r.iter().any(|x| x.contains("heartbeats of a1 are failed")),
            "{r:?}"
        );

        let unguarded = [
            active("a1", true),
            active("a3", true),
            standby(&[("a1", "protected", "alive")], None),
        ];
        let (p, r) = protection(&unguarded);
        assert_eq!(p, Protection::Degraded);
        assert_eq!(r, vec!["a3 is protected by no standby".to_string()]);

        // The standby itself unreachable: degraded, not "no standby".
        let (p, _) = protection(&[
            active("a1", false),
            InstanceStatus {
                name: "sb".into(),
                error: Some("sb unreachable".into()),
                ..Default::default()
            },
        ]);
        assert_eq!(p, Protection::Degraded);
    }

    #[test]
    fn table_has_a_row_per_instance() {
        let all = [
            active("a1", true),
            standby(&[("a1", "protected", "alive")], None),
        ];
        let t = table(&all, Protection::Protected, &[]);
        assert!(t.starts_with("cluster: N+1 protected\n"), "{t}");
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[2].starts_with("INSTANCE  ROLE"), "{t}");
        assert!(
            lines[3].starts_with("a1 ") && lines[3].contains("standby alive 0.3 ms"),
            "{t}"
        );
        assert!(lines[4].contains("a1 alive 12 ms"), "{t}");
    }

    fn statelog() -> InstanceStatus {
        InstanceStatus {
            name: "log".into(),
            reachable: true,
            role: Some("statelog".into()),
            statelog: Some(StatelogInfo {
                data: Some("/var/lib/bgf/log".into()),
                instances: Some(2),
                uptime_s: Some(5),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_statelog_and_an_unknown_role_are_rows_not_standbys() {
        let ok = [
            active("a1", true),
            standby(&[("a1", "protected", "alive")], None),
            statelog(),
        ];
        assert_eq!(protection(&ok), (Protection::Protected, vec![]));
        let t = table(&ok, Protection::Protected, &[]);
        let row = t.lines().find(|l| l.starts_with("log ")).unwrap();
        assert!(
            row.contains("statelog") && row.contains("state log: 2 instances in /var/lib/bgf/log"),
            "{t}"
        );
        // Alone with an active, a statelog is no standby.
        let (p, r) = protection(&[active("a1", true), statelog()]);
        assert_eq!(p, Protection::NoStandby, "{r:?}");
        // A role from a newer build: shown, counted as nothing.
        let mut odd = statelog();
        odd.role = Some("witness".into());
        odd.statelog = None;
        let all = [
            active("a1", true),
            standby(&[("a1", "protected", "alive")], None),
            odd,
        ];
        assert_eq!(protection(&all), (Protection::Protected, vec![]));
        assert!(table(&all, Protection::Protected, &[]).contains("witness"));
        // Unreachable: degraded like any other process.
        let mut down = ok.clone();
        down[2] = InstanceStatus {
            name: "log".into(),
            error: Some("log unreachable at http://x: refused".into()),
            ..Default::default()
        };
        let (p, r) = protection(&down);
        assert_eq!(p, Protection::Degraded);
        assert!(r.iter().any(|x| x.contains("log unreachable")), "{r:?}");
    }

    #[test]
    fn round_trip_times_read_well() {
        assert_eq!(ms(312), "0.3 ms");
        assert_eq!(ms(9_949), "9.9 ms");
        assert_eq!(ms(12_345), "12 ms");
    }
}
