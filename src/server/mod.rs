//! The server driver: axum + tokio around the pure server engine.
//!
//! One actor task owns the [`ServerEngine`]; every socket has a reader task (decodes JSON
//! off the actor) and a writer task (encodes JSON off the actor). The actor feeds the
//! engine, drains its outputs to the writers and sleeps until its next timer.

mod actor;
pub mod auth;
pub mod config;
mod http;
pub mod metrics;
mod socket;

pub use socket::bind;

use crate::engine::server::{Authenticator, DevAuth, ServerConfig, ServerEngine};
use crate::engine::store::MemoryStore;
use actor::{Actor, Cmd, OsEntropy};
use axum::routing::{get, post};
use axum::Router;
use http::AppState;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// Errors that stop the server.
#[derive(Debug)]
pub enum ServerError {
    /// Neither `--dev` nor a JWT secret was given.
    NoAuth,
    Io(std::io::Error),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::NoAuth => f.write_str(
                "no authentication configured: pass --jwt-secret (or HOLDFAST_JWT_SECRET), or --dev for local use",
            ),
            ServerError::Io(e) => write!(f, "io error: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

impl From<std::io::Error> for ServerError {
    fn from(e: std::io::Error) -> Self {
        ServerError::Io(e)
    }
}

/// How clients prove who they are.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// Bare identities (insecure; local use).
    Dev,
    /// HS256 JWTs signed with this secret.
    Jwt(String),
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub engine: ServerConfig,
    pub auth: AuthMode,
    pub static_dir: Option<PathBuf>,
    pub test_hooks: bool,
}

impl RunConfig {
    /// Dev auth, default engine settings: what tests start from.
    pub fn dev() -> Self {
        Self {
            engine: ServerConfig::default(),
            auth: AuthMode::Dev,
            static_dir: None,
            test_hooks: true,
        }
    }
}

/// Wall clock in epoch milliseconds: the only clock the server reads.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Serves until `shutdown` resolves, then tells every client `server-shutdown` and
/// returns once their sockets had a moment to flush.
pub async fn run(
    listener: TcpListener,
    config: RunConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let auth: Box<dyn Authenticator> = match &config.auth {
        AuthMode::Dev => {
            tracing::warn!("DEV MODE: tokens are bare identities and anyone can be anyone. Never expose this server.");
            Box::new(DevAuth)
        }
        AuthMode::Jwt(secret) if !secret.is_empty() => {
            Box::new(auth::JwtAuth::new(secret.as_bytes()))
        }
        AuthMode::Jwt(_) => return Err(ServerError::NoAuth),
    };
    let max_frame_bytes = config.engine.max_frame_bytes;
    let engine = ServerEngine::new(config.engine, MemoryStore::new(), auth, Box::new(OsEntropy));
    let (tx, rx) = mpsc::unbounded_channel();
    let actor = tokio::spawn(
        Actor {
            engine,
            writers: HashMap::new(),
        }
        .run(rx),
    );
    let state = AppState {
        actor: tx.clone(),
        max_frame_bytes,
        test_hooks: config.test_hooks,
    };
    let mut app = Router::new()
        .route("/ws", get(socket::ws_handler))
        .route("/ws/bye", post(http::bye_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(http::metrics_handler));
    if config.test_hooks {
        tracing::warn!("test hooks enabled: POST /test/drop?user=ID drops a user's sockets");
        app = app.route("/test/drop", post(http::drop_handler));
    }
    if let Some(dir) = &config.static_dir {
        app = app.fallback_service(tower_http::services::ServeDir::new(dir));
    }
    let app = app.with_state(state);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "holdfast-server listening");
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let actor_tx = tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: telling clients");
        let (done_tx, done_rx) = oneshot::channel();
        if actor_tx.send(Cmd::Shutdown(done_tx)).is_ok() {
            let _ = done_rx.await;
        }
        // Let writers flush the server-shutdown frames.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = stop_tx.send(());
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = stop_rx.await;
        })
        .await?;
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(1), actor).await;
    tracing::info!("stopped");
    Ok(())
}
