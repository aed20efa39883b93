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
pub mod store;

pub use socket::bind;

use crate::engine::server::{Authenticator, DevAuth, ServerConfig, ServerEngine};
use crate::engine::store::MemoryStore;
use actor::{Actor, Cmd, Durable, OsEntropy};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use http::AppState;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::redis::{RedisStore, Windows};
use store::{StoreHealth, StoreSpec, StoreStats};
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
    /// Where the state lives (`--store`).
    pub store: StoreSpec,
}

impl RunConfig {
    /// Dev auth, default engine settings: what tests start from.
    pub fn dev() -> Self {
        Self {
            engine: ServerConfig::default(),
            auth: AuthMode::Dev,
            static_dir: None,
            test_hooks: true,
            store: StoreSpec::Memory,
        }
    }
}

/// Wall clock in epoch milliseconds: the only clock the server reads.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `/healthz` and `/readyz`: 503 while the store cannot be written (or is loading).
async fn ready(health: Arc<StoreHealth>) -> (StatusCode, &'static str) {
    if health.ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
    }
}

/// How long one Redis operation may take before the store counts as unavailable.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to Redis and loads the state, retrying with backoff until both work (the
/// server is not ready meanwhile), and rebuilds the engine from it.
async fn open_redis(
    url: &str,
    config: ServerConfig,
    auth: Box<dyn Authenticator>,
    health: Arc<StoreHealth>,
) -> (ServerEngine<MemoryStore>, Durable) {
    let windows = Windows::from_config(&config);
    let mut stats = StoreStats::default();
    let mut pause = Duration::from_millis(100);
    loop {
        let started = std::time::Instant::now();
        let loaded = match RedisStore::connect(url, windows, REDIS_TIMEOUT).await {
            Ok(mut redis) => redis.load().await.map(|records| (redis, records)),
            Err(e) => Err(e),
        };
        match loaded {
            Ok((redis, records)) => {
                stats.load_ms = started.elapsed().as_millis() as u64;
                stats.records_loaded =
                    (records.sessions.len() + records.calls.len() + records.users.len()) as u64;
                tracing::info!(
                    store = %url,
                    sessions = records.sessions.len(),
                    calls = records.calls.len(),
                    users = records.users.len(),
                    ms = stats.load_ms,
                    "state loaded"
                );
                let (store, vanished) = MemoryStore::from_records(records, true);
                if !vanished.is_empty() {
                    tracing::info!(
                        calls = vanished.len(),
                        "calls expired while no server ran: ending them reconnect-failed"
                    );
                }
                let engine = ServerEngine::restore(
                    config,
                    store,
                    vanished,
                    auth,
                    Box::new(OsEntropy),
                    now_ms(),
                );
                return (engine, Durable::new(redis, health, stats));
            }
            Err(e) => {
                stats.errors += 1;
                tracing::warn!(store = %url, error = %e, retry_in_ms = pause.as_millis() as u64, "cannot load the state from Redis; not ready");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
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
    let health = Arc::new(StoreHealth::new(config.store == StoreSpec::Memory));
    let (tx, rx) = mpsc::unbounded_channel();
    // Sockets that open while the state loads wait (their `Open` queues) until the
    // actor runs.
    let actor = {
        let health = health.clone();
        let store = config.store.clone();
        let engine_config = config.engine.clone();
        tokio::spawn(async move {
            let actor = match store {
                StoreSpec::Memory => Actor {
                    engine: ServerEngine::new(
                        engine_config,
                        MemoryStore::new(),
                        auth,
                        Box::new(OsEntropy),
                    ),
                    writers: HashMap::new(),
                    durable: None,
                },
                StoreSpec::Redis(url) => {
                    let (engine, durable) = open_redis(&url, engine_config, auth, health).await;
                    Actor {
                        engine,
                        writers: HashMap::new(),
                        durable: Some(durable),
                    }
                }
            };
            actor.run(rx).await
        })
    };
    let state = AppState {
        actor: tx.clone(),
        max_frame_bytes,
        test_hooks: config.test_hooks,
    };
    let (health_probe, ready_probe) = (health.clone(), health.clone());
    let mut app = Router::new()
        .route("/ws", get(socket::ws_handler))
        .route("/healthz", get(move || ready(health_probe.clone())))
        .route("/readyz", get(move || ready(ready_probe.clone())))
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
