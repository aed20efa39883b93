//! The HTTP endpoints beside the WebSocket: `/metrics` and the test hooks.

use super::actor::Cmd;
use super::metrics;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot};

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) actor: mpsc::UnboundedSender<Cmd>,
    pub(crate) max_frame_bytes: usize,
    /// Test suites run pages from other origins (the wasm test runner): with test hooks
    /// on, `/metrics` and `/test/*` answer cross-origin reads.
    pub(crate) test_hooks: bool,
}

fn cors(state: &AppState, mut resp: Response) -> Response {
    if state.test_hooks {
        resp.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::HeaderValue::from_static("*"),
        );
    }
    resp
}

pub(crate) async fn metrics_handler(State(state): State<AppState>) -> Response {
    let (tx, rx) = oneshot::channel();
    if state.actor.send(Cmd::Metrics(tx)).is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let resp = match rx.await {
        Ok(m) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            metrics::render(&m),
        )
            .into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    cors(&state, resp)
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
    let resp = match rx.await {
        Ok(n) => n.to_string().into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    cors(&state, resp)
}
