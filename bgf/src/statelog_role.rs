//! `bgf statelog --admin`: the embedded store server's admin API —
//! `GET /health` (role `statelog`, version, data directory, uptime, how
//! many instances the store holds) and `GET /metrics` (appends, their
//! latency including the group write and fsync, group-commit batches,
//! bytes written, per-instance last seq and epoch, clients, reads and
//! waits). Bearer token and 404 handling are [`crate::admin`]'s, the
//! exposition [`crate::metrics`]'s; the numbers come from the store
//! through its [`StoreObserver`] hooks, so the server without `--admin`
//! counts nothing.
//!
//! Not here: the store and its TCP protocol (`state_log::embedded`,
//! `state_log::server`), the process start-up (`main.rs`).

use crate::admin::{self, Auth};
use crate::metrics::{self, Exposition, Histogram};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use state_log::embedded::{EmbeddedStore, GroupCommit, StoreObserver};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Request kinds counted (besides appends).
const OPS: [&str; 6] = ["read", "wait_for", "last_seq", "truncate", "fence", "epoch"];
/// What the server refuses (see `StoreObserver::refused`).
const REFUSED: [&str; 4] = ["connections", "handshake", "identity", "rights"];

/// The store's numbers, fed by its observer hooks.
#[derive(Debug, Default)]
pub struct StatelogMetrics {
    appends_durable: AtomicU64,
    appends_refused: AtomicU64,
    append_latency: Histogram,
    groups_ok: AtomicU64,
    groups_failed: AtomicU64,
    group_commands: AtomicU64,
    group_commands_max: AtomicU64,
    group_write: Histogram,
    records: AtomicU64,
    bytes: AtomicU64,
    requests: [AtomicU64; OPS.len()],
    clients: AtomicI64,
    connections: AtomicU64,
    refused: [AtomicU64; REFUSED.len()],
}

impl StoreObserver for StatelogMetrics {
    fn group_committed(&self, g: &GroupCommit) {
        let r = Ordering::Relaxed;
        if g.ok {
            self.groups_ok.fetch_add(1, r);
            self.records.fetch_add(g.records as u64, r);
            self.bytes.fetch_add(g.bytes as u64, r);
        } else {
            self.groups_failed.fetch_add(1, r);
        }
        self.group_commands.fetch_add(g.commands as u64, r);
        self.group_commands_max.fetch_max(g.commands as u64, r);
        self.group_write.observe(g.write);
    }

    fn append_answered(&self, _records: usize, ok: bool, latency: Duration) {
        let r = Ordering::Relaxed;
        if ok {
            self.appends_durable.fetch_add(1, r);
            self.append_latency.observe(latency);
        } else {
            self.appends_refused.fetch_add(1, r);
        }
    }

    fn request(&self, op: &'static str) {
        if let Some(k) = OPS.iter().position(|o| *o == op) {
            self.requests[k].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn refused(&self, what: &'static str) {
        if let Some(k) = REFUSED.iter().position(|o| *o == what) {
            self.refused[k].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn connection(&self, opened: bool) {
        if opened {
            self.connections.fetch_add(1, Ordering::Relaxed);
            self.clients.fetch_add(1, Ordering::Relaxed);
        } else {
            self.clients.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What the admin API answers from.
pub struct StatelogAdmin {
    /// The process identity (`bgf_instance`): the store's listen address.
    pub who: String,
    pub token: String,
    pub store: Arc<EmbeddedStore>,
    pub metrics: Arc<StatelogMetrics>,
    pub started: Instant,
}

type St = State<Arc<StatelogAdmin>>;

async fn health(State(st): St) -> Response {
    Json(json!({
        "status": "ok",
        "role": "statelog",
        "version": env!("CARGO_PKG_VERSION"),
        "listen": st.who,
        "data": st.store.dir().display().to_string(),
        "uptime_s": st.started.elapsed().as_secs(),
        "instances": st.store.instances().len(),
    }))
    .into_response()
}

/// The exposition of `bgf statelog`.
pub fn exposition(st: &StatelogAdmin) -> Exposition {
    let m = &st.metrics;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut e = Exposition::new(&st.who);
    metrics::info_family(&mut e, "statelog");
    for (result, v) in [
        ("durable", g(&m.appends_durable)),
        ("refused", g(&m.appends_refused)),
    ] {
        e.counter(
            "bgf_statelog_appends_total",
            "Append requests answered, by result (refused: stale epoch, gap, bad frame, write or fsync failure).",
            &[("result", result)],
            v,
        );
    }
    e.histogram(
        "bgf_statelog_append_duration_seconds",
        "Time from an append request's arrival to its durable ack (queueing, group write and fsync).",
        &[],
        &m.append_latency.snapshot(),
    );
    e.histogram(
        "bgf_statelog_group_write_duration_seconds",
        "Time to write one group-commit batch including its fsync.",
        &[],
        &m.group_write.snapshot(),
    );
    for (result, v) in [("ok", g(&m.groups_ok)), ("failed", g(&m.groups_failed))] {
        e.counter(
            "bgf_statelog_groups_total",
            "Group-commit batches written (one fsync each), by result.",
            &[("result", result)],
            v,
        );
    }
    e.counter(
        "bgf_statelog_group_commands_total",
        "Commands (appends, fences) in the batches: rate() of this over rate() of bgf_statelog_groups_total is the mean batch size.",
        &[],
        g(&m.group_commands),
    );
    e.gauge(
        "bgf_statelog_group_commands_max",
        "Largest batch so far, in commands.",
        &[],
        g(&m.group_commands_max) as f64,
    );
    e.counter(
        "bgf_statelog_records_appended_total",
        "Records made durable.",
        &[],
        g(&m.records),
    );
    e.counter(
        "bgf_statelog_bytes_written_total",
        "Record bytes made durable (frames as sent by the actives).",
        &[],
        g(&m.bytes),
    );
    for (k, op) in OPS.iter().enumerate() {
        e.counter(
            "bgf_statelog_requests_total",
            "Requests other than appends, by operation (read and wait_for are the standby's tailing).",
            &[("op", op)],
            g(&m.requests[k]),
        );
    }
    e.gauge(
        "bgf_statelog_clients",
        "Connected clients.",
        &[],
        m.clients.load(Ordering::Relaxed).max(0) as f64,
    );
    e.counter(
        "bgf_statelog_connections_total",
        "Client connections accepted.",
        &[],
        g(&m.connections),
    );
    for (k, what) in REFUSED.iter().enumerate() {
        e.counter(
            "bgf_statelog_refused_total",
            "Refused by the server: connections (at the limit), handshake (TLS failed: no or untrusted client certificate), identity (certificate naming no client role), rights (a request the role may not make).",
            &[("what", what)],
            g(&m.refused[k]),
        );
    }
    let logs = st.store.instances();
    e.gauge(
        "bgf_statelog_instances",
        "Instances with a log in the store.",
        &[],
        logs.len() as f64,
    );
    for l in &logs {
        e.gauge(
            "bgf_statelog_last_seq",
            "Last durable seq of each instance's log.",
            &[("log_instance", &l.instance)],
            l.last_seq as f64,
        );
        e.gauge(
            "bgf_statelog_epoch",
            "Current epoch of each instance (bumped by every fence).",
            &[("log_instance", &l.instance)],
            l.epoch as f64,
        );
    }
    e.gauge(
        "bgf_statelog_uptime_seconds",
        "Seconds since this bgf statelog started.",
        &[],
        st.started.elapsed().as_secs() as f64,
    );
    e
}

async fn metrics_view(State(st): St) -> Response {
    admin::metrics_response(&exposition(&st))
}

const ENDPOINTS: &[&str] = &["/health", "/metrics"];

/// The router.
pub fn router(st: Arc<StatelogAdmin>) -> Router {
    let auth = Arc::new(Auth {
        who: st.who.clone(),
        token: st.token.clone(),
    });
    let routes = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_view))
        .with_state(st);
    admin::finish(routes, auth, ENDPOINTS)
}

/// The bearer token from `--admin-token-file` (surrounding whitespace
/// dropped; at least 16 characters, like `admin.token`).
pub fn read_token(path: &Path) -> Result<String, String> {
    let raw = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "--admin-token-file {}: {e} — give a readable file holding the admin token",
            path.display()
        )
    })?;
    let t = raw.trim();
    if t.chars().count() < 16 {
        return Err(format!(
            "--admin-token-file {}: the token is too short — use at least 16 characters",
            path.display()
        ));
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir.
    fn temp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("bgf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn token_file_is_trimmed_and_checked() {
        let dir = temp("statelog-token");
        let p = dir.join("t");
        std::fs::write(&p, "  0123456789abcdef\n").unwrap();
        assert_eq!(read_token(&p).unwrap(), "0123456789abcdef");
        std::fs::write(&p, "short\n").unwrap();
        assert!(read_token(&p).unwrap_err().contains("too short"));
        assert!(read_token(&dir.join("none"))
            .unwrap_err()
            .contains("readable"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn exposition_counts_what_the_hooks_saw() {
        let dir = temp("statelog-metrics");
        let store = Arc::new(EmbeddedStore::open(&dir.join("data")).unwrap());
        let m = Arc::new(StatelogMetrics::default());
        m.group_committed(&GroupCommit {
            commands: 3,
            records: 5,
            bytes: 500,
            write: Duration::from_micros(800),
            ok: true,
        });
        m.append_answered(5, true, Duration::from_millis(2));
        m.append_answered(1, false, Duration::from_millis(1));
        m.request("wait_for");
        m.request("nonsense");
        m.connection(true);
        let st = StatelogAdmin {
            who: "127.0.0.1:7400".into(),
            token: "x".into(),
            store,
            metrics: m,
            started: Instant::now(),
        };
        let t = exposition(&st).render();
        for line in [
            r#"bgf_statelog_appends_total{bgf_instance="127.0.0.1:7400",result="durable"} 1"#,
            r#"bgf_statelog_appends_total{bgf_instance="127.0.0.1:7400",result="refused"} 1"#,
            r#"bgf_statelog_append_duration_seconds_bucket{bgf_instance="127.0.0.1:7400",le="0.0025"} 1"#,
            r#"bgf_statelog_group_write_duration_seconds_count{bgf_instance="127.0.0.1:7400"} 1"#,
            r#"bgf_statelog_group_commands_total{bgf_instance="127.0.0.1:7400"} 3"#,
            r#"bgf_statelog_bytes_written_total{bgf_instance="127.0.0.1:7400"} 500"#,
            r#"bgf_statelog_requests_total{bgf_instance="127.0.0.1:7400",op="wait_for"} 1"#,
            r#"bgf_statelog_clients{bgf_instance="127.0.0.1:7400"} 1"#,
            r#"bgf_info{bgf_instance="127.0.0.1:7400",role="statelog","#,
        ] {
            assert!(t.contains(line), "no {line}:\n{t}");
        }
        drop(st);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
