//! The admin HTTP API (axum), shared by every role: bearer-token
//! authentication, JSON helpers, the routes a core loop answers
//! (`/v1/stats`, `/v1/sessions`, `/v1/sessions/{call_id}`), log inspection
//! (`/v1/log/{instance}`), and `bgf active`'s own router (`/health`,
//! `/v1/ha`, `/metrics`). `bgf standby` builds its router from the same
//! parts (`standby_role.rs`), `bgf statelog` its `/health` + `/metrics`
//! (`statelog_role.rs`).
//!
//! Everything except `GET /health` needs `Authorization: Bearer <token>`
//! (`/metrics` too: Prometheus sends it with `authorization:` in the scrape
//! config); a request without it gets 401 and a warning in the log with the
//! peer, method and path. Answers about the core come from the core loop
//! through its query channel, so the server never touches the core or the
//! media plane directly. Schemas: docs/OPERATIONS.md.

use crate::metrics::{self, Exposition};
use crate::runtime::{Query, SessionFilter, SessionsReply, StatsReply};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use state_log::{Body, Epoch, LogStore, Seq};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Paths answered without a token.
const PUBLIC: &[&str] = &["/health"];

/// Who is asked, and the token that opens it.
pub struct Auth {
    /// The process's identity, for the rejection log line.
    pub who: String,
    pub token: String,
}

/// Constant-time comparison so the token cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `value` (an `Authorization` header) carries `token`.
fn bearer_ok(value: Option<&HeaderValue>, token: &str) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same(t.trim().as_bytes(), token.as_bytes()))
}

/// The middleware: 401 (logged) unless the path is public or the token is right.
async fn require_token(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    if PUBLIC.contains(&req.uri().path())
        || bearer_ok(req.headers().get(header::AUTHORIZATION), &auth.token)
    {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "-".to_string(), |c| c.0.to_string());
    warn!(instance = %auth.who, peer = %peer, method = %req.method(), path = %req.uri().path(),
        "admin request rejected: missing or wrong bearer token (send `Authorization: Bearer <admin.token>`)");
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"error": "unauthorized: send `Authorization: Bearer <admin.token>`"})),
    )
        .into_response()
}

/// A JSON error body `{"error": msg}` with `status`.
pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

/// Ask a loop over its channel; `None` if it does not answer within 5 s
/// (or drops the question: nothing to answer it).
pub async fn ask<Q, T>(
    tx: &mpsc::Sender<Q>,
    make: impl FnOnce(oneshot::Sender<T>) -> Q,
) -> Option<T> {
    let (otx, orx) = oneshot::channel();
    tx.send_timeout(make(otx), Duration::from_secs(5))
        .await
        .ok()?;
    tokio::time::timeout(Duration::from_secs(5), orx)
        .await
        .ok()?
        .ok()
}

/// `/metrics` body with the exposition content type.
pub fn metrics_response(e: &Exposition) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        e.render(),
    )
        .into_response()
}

/// Adds the 404 fallback (listing `endpoints`) and the token check to a
/// role's routes.
pub fn finish(routes: Router, auth: Arc<Auth>, endpoints: &'static [&'static str]) -> Router {
    routes
        .fallback(move || async move {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "not found", "endpoints": endpoints})),
            )
        })
        .layer(middleware::from_fn_with_state(auth, require_token))
}

// ----------------------------------------------------------- core routes

/// What the core routes answer with.
#[derive(Clone)]
pub struct CoreRoutes {
    pub queries: mpsc::Sender<Query>,
    /// Why nothing answered (503 body), e.g. "this standby serves no instance yet".
    pub unavailable: &'static str,
}

async fn stats(State(c): State<CoreRoutes>) -> Response {
    match ask(&c.queries, Query::Stats).await {
        Some(s) => Json(s).into_response(),
        None => error(StatusCode::SERVICE_UNAVAILABLE, c.unavailable),
    }
}

async fn sessions(
    State(c): State<CoreRoutes>,
    q: Result<axum::extract::Query<SessionFilter>, QueryRejection>,
) -> Response {
    let filter = match q {
        Ok(axum::extract::Query(f)) => f,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{e} — parameters: call_id, state (early|confirmed|terminating), origin (access|core), limit (a number)"),
            )
        }
    };
    match ask(&c.queries, |tx| Query::Sessions(filter, tx)).await {
        Some(SessionsReply {
            total,
            matched,
            sessions,
        }) => (
            [
                ("x-total-count", total.to_string()),
                ("x-matched-count", matched.to_string()),
            ],
            Json(sessions),
        )
            .into_response(),
        None => error(StatusCode::SERVICE_UNAVAILABLE, c.unavailable),
    }
}

async fn session(State(c): State<CoreRoutes>, Path(call_id): Path<String>) -> Response {
    let filter = SessionFilter {
        call_id: Some(call_id.clone()),
        ..Default::default()
    };
    match ask(&c.queries, |tx| Query::Sessions(filter, tx)).await {
        Some(mut r) => match r.sessions.pop() {
            Some(s) => Json(s).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                format!("no live session with Call-ID {call_id:?} here"),
            ),
        },
        None => error(StatusCode::SERVICE_UNAVAILABLE, c.unavailable),
    }
}

/// `/v1/stats`, `/v1/sessions`, `/v1/sessions/{call_id}`.
pub fn core_routes(c: CoreRoutes) -> Router {
    Router::new()
        .route("/v1/stats", get(stats))
        .route("/v1/sessions", get(sessions))
        .route("/v1/sessions/{call_id}", get(session))
        .with_state(c)
}

/// A core loop's stats, for `/metrics` (`None` if nothing answers).
pub async fn core_stats(q: &mpsc::Sender<Query>) -> Option<StatsReply> {
    ask(q, Query::Stats).await
}

// ------------------------------------------------------------ log routes

/// Records of one kind in a log.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct KindCount {
    pub records: u64,
    /// Encoded frame bytes.
    pub bytes: u64,
}

/// The latest checkpoint found in the log.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub seq: Seq,
    pub epoch: Epoch,
    pub bytes: u64,
}

/// `GET /v1/log/{instance}`: what an instance's log holds now, read from
/// the store, plus (when this process writes that log) the writer's view.
#[derive(Clone, Debug, Serialize)]
pub struct LogReport {
    pub instance: String,
    pub epoch: Epoch,
    /// First seq retained (`None`: empty log).
    pub first_seq: Option<Seq>,
    pub last_seq: Seq,
    pub records: u64,
    pub bytes: u64,
    pub inputs: KindCount,
    pub checkpoints: KindCount,
    pub operator: KindCount,
    /// The latest checkpoint (compaction removes what precedes it).
    pub last_checkpoint: Option<CheckpointInfo>,
    /// False if the scan stopped at its bound (see `scan_limit`).
    pub complete: bool,
    pub scan_limit: u64,
    pub scan_ms: u64,
    /// Output-commit counters when this process writes the log
    /// (`/v1/stats` `statelog`: checkpoints written, records truncated,
    /// `last_compaction_unix_ms`, append latency).
    pub writer: Option<serde_json::Value>,
}

/// Records read per request, and at most this many per inspection.
const LOG_CHUNK: usize = 2048;
const LOG_SCAN_MAX: u64 = 2_000_000;
const LOG_SCAN_TIME: Duration = Duration::from_secs(20);

/// Read `instance`'s log from the store (bounded in records and time).
pub async fn inspect_log(store: &dyn LogStore, instance: &str) -> Result<LogReport, String> {
    let t0 = Instant::now();
    let epoch = store
        .epoch(instance)
        .await
        .map_err(|e| format!("reading the epoch of {instance}: {e}"))?;
    let last_seq = store
        .last_seq(instance)
        .await
        .map_err(|e| format!("reading the last seq of {instance}: {e}"))?;
    let mut r = LogReport {
        instance: instance.to_string(),
        epoch,
        first_seq: None,
        last_seq,
        records: 0,
        bytes: 0,
        inputs: KindCount::default(),
        checkpoints: KindCount::default(),
        operator: KindCount::default(),
        last_checkpoint: None,
        complete: true,
        scan_limit: LOG_SCAN_MAX,
        scan_ms: 0,
        writer: None,
    };
    let mut from = 0;
    while from <= last_seq {
        if r.records >= LOG_SCAN_MAX || t0.elapsed() > LOG_SCAN_TIME {
            r.complete = false;
            break;
        }
        let chunk = store
            .read(instance, from, LOG_CHUNK)
            .await
            .map_err(|e| format!("reading the log of {instance} from seq {from}: {e}"))?;
        let Some(last) = chunk.last().map(|x| x.seq) else {
            break;
        };
        for rec in &chunk {
            let n = rec.encode().len() as u64;
            r.first_seq.get_or_insert(rec.seq);
            r.records += 1;
            r.bytes += n;
            let k = match &rec.body {
                Body::Input(_) => &mut r.inputs,
                Body::Checkpoint(_) => {
                    r.last_checkpoint = Some(CheckpointInfo {
                        seq: rec.seq,
                        epoch: rec.epoch,
                        bytes: n,
                    });
                    &mut r.checkpoints
                }
                Body::Operator(_) => &mut r.operator,
            };
            k.records += 1;
            k.bytes += n;
        }
        from = last + 1;
    }
    r.scan_ms = t0.elapsed().as_millis() as u64;
    Ok(r)
}

/// The logs this process can read, and the core loop that may write one.
#[derive(Clone)]
pub struct LogRoutes {
    pub stores: Vec<(String, Arc<dyn LogStore>)>,
    pub queries: mpsc::Sender<Query>,
}

async fn log(State(l): State<LogRoutes>, Path(instance): Path<String>) -> Response {
    let Some((_, store)) = l.stores.iter().find(|(i, _)| *i == instance) else {
        let known: Vec<&str> = l.stores.iter().map(|(i, _)| i.as_str()).collect();
        return error(
            StatusCode::NOT_FOUND,
            format!("this process does not read the log of {instance:?} (it reads {known:?}); ask the instance itself or the standby protecting it"),
        );
    };
    match inspect_log(store.as_ref(), &instance).await {
        Ok(mut r) => {
            if let Some(s) = core_stats(&l.queries).await {
                if s.instance == instance {
                    r.writer = s.statelog.and_then(|c| serde_json::to_value(c).ok());
                }
            }
            Json(r).into_response()
        }
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            format!("state log: {e} — check the store and this process's path to it"),
        ),
    }
}

/// `/v1/log/{instance}`.
pub fn log_routes(l: LogRoutes) -> Router {
    Router::new()
        .route("/v1/log/{instance}", get(log))
        .with_state(l)
}

// ---------------------------------------------------------- bgf active

/// `bgf active`'s admin state.
pub struct AdminState {
    pub instance: String,
    pub token: String,
    pub queries: mpsc::Sender<Query>,
    /// The standby as this active sees it (`/v1/ha`), with `[ha]`.
    pub ha: Option<crate::ha::HaHandle>,
    /// This instance's log (with `[statelog]`), for `/v1/log/{instance}`.
    pub store: Option<Arc<dyn LogStore>>,
    /// `[admin] drills`: `POST /v1/drill/fault` may kill or freeze us.
    pub drills: bool,
}

type St = State<Arc<AdminState>>;

/// `POST /v1/drill/fault` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultReq {
    /// `kill` (SIGKILL: the process dies at once, like a crash) or `stop`
    /// (SIGSTOP for `duration_ms`, then SIGCONT: a frozen VM).
    pub mode: String,
    /// How long `stop` freezes the process (100..=600 000 ms, default 3 000).
    pub duration_ms: Option<u64>,
}

/// Delay between the answer and the fault, so the answer leaves first.
const FAULT_DELAY: Duration = Duration::from_millis(100);

/// `POST /v1/drill/fault`: a failover drill's fault, injected into this
/// process (`[admin] drills = true` only). Answers 202 with the wall-clock
/// time the fault happens, then injects it.
async fn drill_fault(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<FaultReq>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if !st.drills {
        return error(
            StatusCode::FORBIDDEN,
            "drills are disabled on this instance: set [admin] drills = true in its config (lab and test deployments only) and restart it",
        );
    }
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{e} — send {{\"mode\": \"kill\" | \"stop\", \"duration_ms\": N}}"),
            )
        }
    };
    let duration = Duration::from_millis(req.duration_ms.unwrap_or(3_000));
    if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&duration) {
        return error(StatusCode::BAD_REQUEST, "duration_ms must be 100..=600000");
    }
    let pid = std::process::id();
    let at = std::time::SystemTime::now() + FAULT_DELAY;
    let at_ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    match req.mode.as_str() {
        "kill" => {
            warn!(%peer, instance = %st.instance, "DRILL: fault injected on request: SIGKILL of this process in {} ms", FAULT_DELAY.as_millis());
            std::thread::spawn(move || {
                std::thread::sleep(FAULT_DELAY);
                // SAFETY: kill(2) on our own pid; no memory is involved.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            });
        }
        "stop" => {
            // The process cannot continue itself: a shell started now
            // sends SIGCONT after the freeze.
            let wake = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!(
                    "sleep {:.3}; kill -CONT {pid}",
                    (duration + FAULT_DELAY).as_secs_f64()
                ))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            if let Err(e) = wake {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot start /bin/sh to send SIGCONT after the freeze ({e}): not frozen"),
                );
            }
            warn!(%peer, instance = %st.instance, duration_ms = duration.as_millis() as u64, "DRILL: fault injected on request: SIGSTOP of this process in {} ms for {} ms", FAULT_DELAY.as_millis(), duration.as_millis());
            std::thread::spawn(move || {
                std::thread::sleep(FAULT_DELAY);
                // SAFETY: kill(2) on our own pid; no memory is involved.
                unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
            });
        }
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("mode {other:?}: use \"kill\" or \"stop\" (a network cut is injected outside the process: bgfctl runs the cluster file's cut/heal commands)"),
            )
        }
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "instance": st.instance,
            "mode": req.mode,
            "pid": pid,
            "at_unix_ms": at_ms,
            "duration_ms": if req.mode == "stop" { Some(duration.as_millis() as u64) } else { None },
        })),
    )
        .into_response()
}

async fn health(State(st): St) -> Response {
    Json(json!({"status": "ok", "instance": st.instance, "role": "active", "version": env!("CARGO_PKG_VERSION")}))
        .into_response()
}

/// `GET /v1/ha`: the standby's heartbeats as this active sees them, with
/// the "no standby heartbeats" alarm while they are missing.
async fn ha_view(State(st): St) -> Response {
    match st
        .ha
        .as_ref()
        .and_then(|h| h.lock().ok().map(|v| v.fresh()))
    {
        Some(v) => Json(v).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "no [ha] configured: this active has no standby",
        ),
    }
}

async fn active_metrics(State(st): St) -> Response {
    let mut e = Exposition::new(&st.instance);
    metrics::info_family(&mut e, "active");
    match core_stats(&st.queries).await {
        Some(s) => metrics::core_families(&mut e, &s),
        None => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "core loop not answering (shutting down or overloaded)",
            )
        }
    }
    if let Some(v) = st
        .ha
        .as_ref()
        .and_then(|h| h.lock().ok().map(|v| v.fresh()))
    {
        e.gauge(
            "bgf_ha_protected",
            "1 while this active hears its standby (N+1 protected).",
            &[],
            if v.protected { 1.0 } else { 0.0 },
        );
        metrics::rtt_families(&mut e, &v.standby, &v.rtt);
    }
    metrics_response(&e)
}

const ACTIVE_ENDPOINTS: &[&str] = &[
    "/health",
    "/metrics",
    "/v1/stats",
    "/v1/sessions",
    "/v1/sessions/{call_id}",
    "/v1/ha",
    "/v1/log/{instance}",
    "POST /v1/drill/fault",
];

/// `bgf active`'s router.
fn router(st: Arc<AdminState>) -> Router {
    let auth = Arc::new(Auth {
        who: st.instance.clone(),
        token: st.token.clone(),
    });
    let routes = Router::new()
        .route("/health", get(health))
        .route("/v1/ha", get(ha_view))
        .route("/v1/drill/fault", axum::routing::post(drill_fault))
        .route("/metrics", get(active_metrics))
        .with_state(st.clone())
        .merge(core_routes(CoreRoutes {
            queries: st.queries.clone(),
            unavailable: "core loop not answering (shutting down or overloaded)",
        }))
        .merge(log_routes(LogRoutes {
            stores: st
                .store
                .iter()
                .map(|s| (st.instance.clone(), s.clone()))
                .collect(),
            queries: st.queries.clone(),
        }));
    finish(routes, auth, ACTIVE_ENDPOINTS)
}

/// Bind the admin listener (fatal at startup if it fails).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot bind admin.listen {addr}: {e} — is the address configured on this host and the port free?")
    })
}

/// Serve `app` (any role's router) until `shutdown` resolves.
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        warn!(error = %e, "admin server stopped with an error");
    }
}

/// Serve `bgf active`'s API until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    serve_router(listener, router(state), shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(same(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same(b"0123456789abcdef", b"0123456789abcdeF"));
        assert!(!same(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!same(b"", b"x"));
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(bearer_ok(Some(&h("Bearer tok")), "tok"));
        assert!(!bearer_ok(Some(&h("Basic tok")), "tok"));
        assert!(!bearer_ok(Some(&h("Bearer tak")), "tok"));
        assert!(!bearer_ok(None, "tok"));
    }

    #[tokio::test]
    async fn log_inspection_counts_kinds_and_the_last_checkpoint() {
        use state_log::{LogStore, Record};
        let dir = std::env::temp_dir().join(format!("bgf-admin-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = state_log::embedded::EmbeddedStore::open(&dir).unwrap();
        let empty = inspect_log(&store, "x1").await.unwrap();
        assert_eq!(
            (empty.records, empty.first_seq, empty.last_seq),
            (0, None, 0)
        );
        let input = |seq| Record {
            seq,
            epoch: 0,
            body: Body::Input(sip_control::Input::Timer {
                id: sip_control::TimerId(seq),
                at: 5,
            }),
        };
        let cp = Record {
            seq: 3,
            epoch: 0,
            body: Body::Checkpoint(vec![7; 100]),
        };
        store
            .append("x1", 0, &[input(1), input(2), cp.clone(), input(4)])
            .await
            .unwrap();
        let r = inspect_log(&store, "x1").await.unwrap();
        assert_eq!((r.records, r.first_seq, r.last_seq), (4, Some(1), 4));
        assert_eq!((r.inputs.records, r.checkpoints.records), (3, 1));
        let c = r.last_checkpoint.clone().unwrap();
        assert_eq!((c.seq, c.bytes), (3, cp.encode().len() as u64));
        assert_eq!(r.bytes, r.inputs.bytes + r.checkpoints.bytes);
        assert!(r.complete);
        store.truncate_before("x1", 3).await.unwrap();
        let r = inspect_log(&store, "x1").await.unwrap();
        assert_eq!((r.records, r.first_seq), (2, Some(3)));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
