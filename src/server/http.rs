//! The HTTP endpoints beside the WebSocket: `/metrics`, the logout fallback `/ws/bye`
//! and the test hooks.

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
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
