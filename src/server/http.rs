//! The HTTP endpoints beside the WebSocket: `/healthz`, `/readyz`, `/metrics`, the
//! logout fallback `/ws/bye` and the test hooks.

use super::actor::{ActorTx, Cmd};
use super::metrics::{self, ListenerCounters};
use super::socket::ConnTracker;
use super::store::StoreHealth;
use crate::engine::server::ByeOutcome;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tower_http::cors::CorsLayer;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) actor: ActorTx,
    pub(crate) max_frame_bytes: usize,
    pub(crate) allowed_origins: Option<Arc<[String]>>,
    pub(crate) tracker: Arc<ConnTracker>,
    /// Whether the store can be written (always, for the memory store).
    pub(crate) health: Arc<StoreHealth>,
}

/// `/healthz` and `/readyz`: 200 while the engine runs and its store can be written;
/// 503 the moment the engine is not running, and while a durable store is unavailable
/// or the state is still loading (nothing would be acknowledged).
pub(crate) async fn health_handler(State(state): State<AppState>) -> Response {
    if state.actor.is_closed() {
        (StatusCode::SERVICE_UNAVAILABLE, "engine not running").into_response()
    } else if state.health.standby() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            super::store::STANDBY_ANSWER,
        )
            .into_response()
    } else if !state.health.ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
    } else {
        "ok".into_response()
    }
}

pub(crate) async fn metrics_handler(State(state): State<AppState>) -> Response {
    if state.health.standby() {
        // The engine does not run until this process holds the store: nothing would
        // answer, and a scrape would hang until the takeover.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            super::store::STANDBY_ANSWER,
        )
            .into_response();
    }
    let (tx, rx) = oneshot::channel();
    if state.actor.send(Cmd::Metrics(tx)).is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let listener = ListenerCounters {
        refused_global: state.tracker.refused_global.load(Ordering::Relaxed),
        refused_per_ip: state.tracker.refused_per_ip.load(Ordering::Relaxed),
        max_connections: state.tracker.max_total() as u64,
    };
    match rx.await {
        Ok(m) => (
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            metrics::render(&m, &listener),
        )
            .into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct DropQuery {
    user: String,
}

pub(crate) async fn drop_handler(
    State(state): State<AppState>,
    Query(q): Query<DropQuery>,
) -> Response {
    let (tx, rx) = oneshot::channel();
    if state.actor.send(Cmd::DropUser(q.user, tx)).is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match rx.await {
        Ok(n) => n.to_string().into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct StallQuery {
    ms: u64,
}

/// Test hook: the engine handles nothing for `ms` (as on a machine too busy to run
/// it); sockets go on reading, so inputs queue up meanwhile.
pub(crate) async fn stall_handler(
    State(state): State<AppState>,
    Query(q): Query<StallQuery>,
) -> Response {
    let stall = Duration::from_millis(q.ms.min(60_000));
    if state.actor.send(Cmd::Stall(stall)).is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    StatusCode::ACCEPTED.into_response()
}

pub(crate) async fn crash_handler(State(state): State<AppState>) -> Response {
    let _ = state.actor.send(Cmd::Crash);
    StatusCode::ACCEPTED.into_response()
}

/// `/healthz` alone: what connections over the caps are served.
pub(crate) fn health_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health_handler))
        .route("/readyz", get(health_handler))
}

/// `/metrics`. Test suites run pages from other origins (the wasm test runner): with
/// test hooks on, it answers cross-origin reads.
pub(crate) fn metrics_routes(test_hooks: bool) -> Router<AppState> {
    let routes = Router::new().route("/metrics", get(metrics_handler));
    if test_hooks {
        routes.layer(CorsLayer::permissive())
    } else {
        routes
    }
}

/// `POST /test/drop?user=ID` (drops a user's sockets), `POST /test/crash` (the
/// engine panics) and `POST /test/stall?ms=N` (the engine pauses), cross-origin like
/// `/metrics`.
pub(crate) fn test_routes() -> Router<AppState> {
    Router::new()
        .route("/test/drop", post(drop_handler))
        .route("/test/crash", post(crash_handler))
        .route("/test/stall", post(stall_handler))
        .layer(CorsLayer::permissive())
}

/// The body of `POST /ws/bye` (see `ClientFrame::Bye` in the protocol).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ByeRequest {
    pub(crate) token: String,
    pub(crate) session: String,
    pub(crate) secret: String,
}

/// A page's logout that its socket could not carry (sent with `sendBeacon`, so the body
/// is JSON as text and the answer is not read).
pub(crate) async fn bye_handler(State(state): State<AppState>, body: String) -> Response {
    let Ok(request) = serde_json::from_str::<ByeRequest>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let (tx, rx) = oneshot::channel();
    if state.actor.send(Cmd::Bye { request, reply: tx }).is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match rx.await {
        // Logging out twice is not an error: a page sends its `bye` on the socket and
        // here at once, and the later of the two finds the session gone.
        Ok(ByeOutcome::Ended | ByeOutcome::AlreadyGone) => StatusCode::NO_CONTENT.into_response(),
        Ok(ByeOutcome::Refused) => StatusCode::FORBIDDEN.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
