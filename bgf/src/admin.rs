//! The admin HTTP server (axum): health, stats, the session list and the
//! standby as this active sees it (`/v1/ha`).
//!
//! Everything except `GET /health` needs `Authorization: Bearer <token>`.
//! Answers come from the core loop through its query channel, so the server
//! never touches the core or the media plane directly.

use crate::runtime::Query;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Shared by all handlers.
pub struct AdminState {
    pub instance: String,
    pub token: String,
    pub queries: mpsc::Sender<Query>,
    /// The standby as this active sees it (`/v1/ha`), with `[ha]`.
    pub ha: Option<crate::ha::HaHandle>,
}

type St = State<Arc<AdminState>>;
type Peer = ConnectInfo<SocketAddr>;

/// Constant-time comparison so the token cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request carries the right bearer token (logs a warning if not).
fn authorized(
    st: &AdminState,
    headers: &HeaderMap,
    peer: SocketAddr,
    method: &Method,
    uri: &Uri,
) -> bool {
    let ok = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same(t.trim().as_bytes(), st.token.as_bytes()));
    if !ok {
        warn!(instance = %st.instance, peer = %peer, method = %method, path = %uri.path(), "admin request rejected: missing or wrong bearer token (send `Authorization: Bearer <admin.token>`)");
    }
    ok
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"error": "unauthorized"})),
    )
        .into_response()
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "core loop not answering (shutting down or overloaded)"})),
    )
        .into_response()
}

/// Ask the core loop; `None` if it does not answer within 5 s.
async fn ask<T>(st: &AdminState, make: impl FnOnce(oneshot::Sender<T>) -> Query) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    st.queries
        .send_timeout(make(tx), Duration::from_secs(5))
        .await
        .ok()?;
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .ok()?
        .ok()
}

async fn health(State(st): St) -> Response {
    Json(json!({"status": "ok", "instance": st.instance, "role": "active"})).into_response()
}

async fn stats(
    State(st): St,
    ConnectInfo(peer): Peer,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !authorized(&st, &headers, peer, &method, &uri) {
        return unauthorized();
    }
    match ask(&st, Query::Stats).await {
        Some(s) => Json(s).into_response(),
        None => unavailable(),
    }
}

async fn sessions(
    State(st): St,
    ConnectInfo(peer): Peer,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !authorized(&st, &headers, peer, &method, &uri) {
        return unauthorized();
    }
    match ask(&st, Query::Sessions).await {
        Some(s) => Json(s).into_response(),
        None => unavailable(),
    }
}

/// `GET /v1/ha`: the standby's heartbeats as this active sees them, with
/// the "no standby heartbeats" alarm while they are missing.
async fn ha_view(
    State(st): St,
    ConnectInfo(peer): Peer,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !authorized(&st, &headers, peer, &method, &uri) {
        return unauthorized();
    }
    match st
        .ha
        .as_ref()
        .and_then(|h| h.lock().ok().map(|v| v.clone()))
    {
        Some(v) => Json(v).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no [ha] configured: this active has no standby"})),
        )
            .into_response(),
    }
}

async fn fallback(
    State(st): St,
    ConnectInfo(peer): Peer,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !authorized(&st, &headers, peer, &method, &uri) {
        return unauthorized();
    }
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "not found", "endpoints": ["/health", "/v1/stats", "/v1/sessions", "/v1/ha"]})),
    )
        .into_response()
}

/// The router.
fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/stats", get(stats))
        .route("/v1/sessions", get(sessions))
        .route("/v1/ha", get(ha_view))
        .fallback(fallback)
        .with_state(state)
}

/// Bind the admin listener (fatal at startup if it fails).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot bind admin.listen {addr}: {e} — is the address configured on this host and the port free?")
    })
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        warn!(error = %e, "admin server stopped with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn token_comparison() {
        assert!(same(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same(b"0123456789abcdef", b"0123456789abcdeF"));
        assert!(!same(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!same(b"", b"x"));
    }
}
