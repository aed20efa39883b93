//! The server driver: axum + tokio around the pure server engine.
//!
//! One actor task owns the [`ServerEngine`]; every socket has one task that decodes
//! what it reads and encodes what it writes (JSON stays off the actor). The actor feeds
//! the engine, drains its outputs to the sockets' mailboxes and sleeps until its next
//! timer. If the actor dies, `/healthz` fails at once and [`run`] returns an error.

mod actor;
pub mod auth;
mod cluster;
pub mod config;
mod http;
pub mod metrics;
mod socket;
pub mod store;
mod websocket;

pub use auth::JwtRules;
pub use socket::{bind, NetLimits};

use crate::engine::server::{Authenticator, DevAuth, ServerConfig, ServerEngine};
use crate::engine::store::MemoryStore;
use actor::{Actor, ActorTx, Cmd, Durable, OsEntropy};
use axum::routing::{get, post};
use axum::Router;
use http::AppState;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::layout::{self, Layout, LayoutError};
use store::lease::{Acquired, Lease, LeaseConfig};
use store::redis::{RedisStore, Windows};
use store::{StoreHealth, StoreSpec, StoreStats};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Errors that stop the server.
#[derive(Debug)]
pub enum ServerError {
    /// Neither `--dev` nor a JWT secret was given.
    NoAuth,
    /// The JWT configuration cannot be used (a secret too short).
    Jwt(auth::JwtConfigError),
    /// The engine's task stopped (a panic): nothing would answer the sockets.
    EngineStopped(String),
    /// Another process took the store's lease (this node's was not renewed in time):
    /// nothing this process holds may be written any more.
    LeaseLost(String),
    /// `--node` is not a usable name.
    BadNode(String),
    /// `--cluster` without a Redis store: there is nothing to share.
    ClusterNeedsRedis,
    /// The Redis database holds the state of the other kind of server (a cluster's, or
    /// a single writer's): why, and what to do.
    StoreLayout(String),
    Io(std::io::Error),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::NoAuth => f.write_str(
                "no authentication configured: pass --jwt-secret (or HOLDFAST_JWT_SECRET), or --dev for local use",
            ),
            ServerError::Jwt(e) => write!(f, "--jwt-secret: {e}"),
            ServerError::EngineStopped(why) => write!(
                f,
                "the engine stopped ({why}); exiting so a supervisor can restart the server"
            ),
            ServerError::LeaseLost(node) => write!(
                f,
                "the store's lease went to {node} (this process stalled past --lease-ttl); exiting: its clients resume there"
            ),
            ServerError::BadNode(why) => write!(f, "--node: {why}"),
            ServerError::ClusterNeedsRedis => f.write_str(
                "--cluster needs --store redis://…: the processes of a cluster share their state there",
            ),
            ServerError::StoreLayout(why) => write!(f, "--store: {why}"),
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
    /// What a JWT must satisfy besides its signature (JWT mode only).
    pub jwt: JwtRules,
    /// Connection caps, header-read timeout, allowed origins.
    pub net: NetLimits,
    /// Where the state lives (`--store`).
    pub store: StoreSpec,
    /// The lease that lets one process at a time write a Redis store (`--node`,
    /// `--lease-ttl`).
    pub lease: LeaseConfig,
    /// With a Redis store: serve it together with every other process started so
    /// (`--cluster`), all of them active, instead of one at a time.
    pub cluster: bool,
}

impl RunConfig {
    /// Dev auth, default engine settings: what tests start from.
    pub fn dev() -> Self {
        Self {
            engine: ServerConfig::default(),
            auth: AuthMode::Dev,
            static_dir: None,
            test_hooks: true,
            jwt: JwtRules::default(),
            net: NetLimits::default(),
            store: StoreSpec::Memory,
            lease: LeaseConfig::default(),
            cluster: false,
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
/// How long one Redis operation may take before the store counts as unavailable.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// A random token naming one run of the process in its lease.
fn run_token() -> String {
    let mut bytes = [0u8; 16];
    crate::engine::Entropy::fill(&mut OsEntropy, &mut bytes);
    crate::engine::hex(&bytes)
}

/// Renews the lease every third of its time to live until the task is aborted (at a
/// graceful shutdown) or the lease is found held by another process, which the actor
/// is told. A renewal that fails (Redis away) is tried again at the next tick: while
/// Redis is away nobody else can take the lease either.
fn renew_lease(
    lease: Lease,
    mut conn: redis::aio::ConnectionManager,
    actor: ActorTx,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(lease.renew_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match lease.renew(&mut conn).await {
                Ok(Acquired::Held) => {}
                Ok(Acquired::HeldBy(value)) => {
                    let node = store::lease::holder_node(&value).to_owned();
                    let _ = actor.send(Cmd::LeaseLost(node));
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "store lease renewal failed; retrying"),
            }
            if actor.is_closed() {
                return;
            }
        }
    })
}

/// Waits until this process holds the store's lease, polling on `redis`'s connection;
/// the process is a standby meanwhile. `Err`: Redis could not be asked.
async fn acquire_lease(
    redis: &RedisStore,
    lease: &Lease,
    url: &str,
    health: &StoreHealth,
) -> Result<(), redis::RedisError> {
    let mut conn = redis.connection();
    let mut waiting_for: Option<String> = None;
    loop {
        match lease.acquire(&mut conn).await? {
            Acquired::Held => {
                if waiting_for.is_some() {
                    tracing::info!(
                        node = lease.node(),
                        "the store's lease is ours: loading the state"
                    );
                }
                return Ok(());
            }
            Acquired::HeldBy(value) => {
                let holder = store::lease::holder_node(&value).to_owned();
                if waiting_for.as_deref() != Some(holder.as_str()) {
                    tracing::info!(store = %url, %holder, node = lease.node(), "standby: another process holds the store; taking over when it stops");
                    waiting_for = Some(holder);
                }
                health.set_standby(true);
                tokio::time::sleep(lease.poll_interval()).await;
            }
        }
    }
}

/// Why one attempt to open the Redis store failed.
enum OpenFailed {
    /// Redis is away or slow: try again.
    Retry(String),
    /// The database holds a cluster's state ([`layout`]): trying again changes nothing.
    Layout(String),
}

/// The store opened: its lease held and renewing, its state loaded (in `load_ms`).
struct Opened {
    redis: RedisStore,
    renewal: tokio::task::JoinHandle<()>,
    records: crate::engine::store::Records,
    load_ms: u64,
}

/// One attempt: connects, claims the database's layout, waits as a standby until this
/// process holds the store's lease, and loads the state (the lease renewing meanwhile).
async fn open_once(
    url: &str,
    windows: Windows,
    held: impl FnOnce(&RedisStore) -> Lease,
    health: &StoreHealth,
    actor: &ActorTx,
) -> Result<Opened, OpenFailed> {
    let retry = |what: &str, e: &dyn std::fmt::Display| OpenFailed::Retry(format!("{what}{e}"));
    let redis = RedisStore::connect(url, windows, REDIS_TIMEOUT)
        .await
        .map_err(|e| retry("", &e))?;
    match layout::claim(&mut redis.connection(), redis.ns(), Layout::OneWriter).await {
        Err(LayoutError::Taken(why)) => return Err(OpenFailed::Layout(why)),
        Err(e) => return Err(retry("reading the database's layout: ", &e)),
        Ok(()) => {}
    }
    let held = held(&redis);
    acquire_lease(&redis, &held, url, health)
        .await
        .map_err(|e| retry("asking for the store's lease: ", &e))?;
    let started = std::time::Instant::now();
    let renewal = renew_lease(held.clone(), redis.connection(), actor.clone());
    let mut redis = redis.with_lease(held);
    match redis.load().await {
        Ok(records) => Ok(Opened {
            redis,
            renewal,
            records,
            load_ms: started.elapsed().as_millis() as u64,
        }),
        Err(e) => {
            renewal.abort();
            Err(retry("loading the state: ", &e))
        }
    }
}

/// Connects to Redis, waits as a standby until this process holds the store's lease,
/// and loads the state, retrying with backoff until each works (the server is not
/// ready meanwhile); then rebuilds the engine from it. Fails only when the database
/// holds a cluster's state ([`layout`]).
async fn open_redis(
    url: &str,
    config: ServerConfig,
    auth: Box<dyn Authenticator>,
    health: Arc<StoreHealth>,
    lease: &LeaseConfig,
    node: &str,
    actor: ActorTx,
) -> Result<(ServerEngine<MemoryStore>, Durable), String> {
    let windows = Windows::from_config(&config);
    let mut stats = StoreStats::default();
    let mut pause = Duration::from_millis(100);
    let token = run_token();
    let held = |redis: &RedisStore| Lease::new(redis.lease_key(), node, lease.ttl, &token);
    loop {
        match open_once(url, windows, held, &health, &actor).await {
            Ok(opened) => {
                stats.load_ms = opened.load_ms;
                let engine = restore_engine(config, auth, opened.records, &mut stats, url, node);
                health.set_standby(false);
                let durable = Durable::new(opened.redis, health, stats).renewing(opened.renewal);
                return Ok((engine, durable));
            }
            Err(OpenFailed::Layout(why)) => return Err(why),
            Err(OpenFailed::Retry(failed)) => {
                stats.errors += 1;
                tracing::warn!(store = %url, error = %failed, retry_in_ms = pause.as_millis() as u64, "cannot use Redis; not ready");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// The engine rebuilt from the records loaded at start.
fn restore_engine(
    config: ServerConfig,
    auth: Box<dyn Authenticator>,
    records: crate::engine::store::Records,
    stats: &mut StoreStats,
    url: &str,
    node: &str,
) -> ServerEngine<MemoryStore> {
    stats.records_loaded =
        (records.sessions.len() + records.calls.len() + records.users.len()) as u64;
    tracing::info!(
        store = %url,
        node,
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
    ServerEngine::restore(config, store, vanished, auth, Box::new(OsEntropy), now_ms())
}

/// Serves until `shutdown` resolves, then tells every client `server-shutdown` and
/// returns once their sockets had a moment to flush. Returns
/// [`ServerError::EngineStopped`] at once if the engine's task dies.
pub async fn run(
    listener: TcpListener,
    config: RunConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    run_with_metrics_listener(listener, None, config, shutdown).await
}

/// [`run`], with `/metrics` (and a `/healthz`) on a listener of its own instead of the
/// main one.
pub async fn run_with_metrics_listener(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: RunConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let auth: Box<dyn Authenticator> = match &config.auth {
        AuthMode::Dev => {
            tracing::warn!("DEV MODE: tokens are bare identities and anyone can be anyone. Never expose this server.");
            Box::new(DevAuth)
        }
        AuthMode::Jwt(secret) if !secret.is_empty() => Box::new(
            auth::JwtAuth::verifier(secret.as_bytes(), config.jwt.clone())
                .map_err(ServerError::Jwt)?,
        ),
        AuthMode::Jwt(_) => return Err(ServerError::NoAuth),
    };
    if config.cluster && config.store == StoreSpec::Memory {
        return Err(ServerError::ClusterNeedsRedis);
    }
    let max_frame_bytes = config.engine.max_frame_bytes;
    let node = match &config.lease.node {
        Some(node) => node.clone(),
        None => store::lease::default_node(listener.local_addr()?.port()),
    };
    store::lease::check_node(&node).map_err(ServerError::BadNode)?;
    let health = Arc::new(StoreHealth::new(config.store == StoreSpec::Memory));
    let (tx, rx) = ActorTx::channel();
    // Set when the shutdown begins.
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    // Sockets that open while the state loads wait (their `Open` queues) until the
    // actor runs.
    let mut actor = {
        let health = health.clone();
        let store = config.store.clone();
        let engine_config = config.engine.clone();
        let lease = config.lease.clone();
        let cluster = config.cluster;
        let actor_tx = tx.clone();
        let mut stopping = stopping_rx;
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
                    clock: now_ms(),
                },
                StoreSpec::Redis(url) if cluster => {
                    return cluster::run_node(
                        url,
                        engine_config,
                        auth,
                        health,
                        lease.ttl,
                        (actor_tx, rx),
                    )
                    .await;
                }
                StoreSpec::Redis(url) => {
                    // A standby (or a process still waiting for Redis) that is told to
                    // stop has nothing to flush: it stops at once.
                    let opened =
                        open_redis(&url, engine_config, auth, health, &lease, &node, actor_tx);
                    let (engine, durable) = tokio::select! {
                        opened = opened => match opened {
                            Ok(opened) => opened,
                            Err(why) => return actor::ActorExit::WrongLayout(why),
                        },
                        _ = stopping.wait_for(|stop| *stop) => return actor::ActorExit::Shutdown,
                    };
                    Actor {
                        engine,
                        writers: HashMap::new(),
                        durable: Some(durable),
                        clock: now_ms(),
                    }
                }
            };
            actor.run(rx).await
        })
    };
    let tracker = socket::ConnTracker::new(&config.net);
    let state = AppState {
        actor: tx.clone(),
        max_frame_bytes,
        allowed_origins: config.net.allowed_origins.clone().map(Arc::from),
        tracker: tracker.clone(),
        health: health.clone(),
    };
    let mut app = Router::new()
        .route("/ws", get(socket::ws_handler))
        .route("/ws/bye", post(http::bye_handler))
        .merge(http::health_routes());
    if metrics_listener.is_none() {
        app = app.merge(http::metrics_routes(config.test_hooks));
    }
    if config.test_hooks {
        tracing::warn!("test hooks enabled: POST /test/drop?user=ID drops a user's sockets, POST /test/crash stops the engine, POST /test/stall?ms=N pauses it");
        app = app.merge(http::test_routes());
    }
    if let Some(dir) = &config.static_dir {
        app = app.fallback_service(tower_http::services::ServeDir::new(dir));
    }
    let app = app.with_state(state.clone());
    let reserve = socket::reserve_router(http::health_routes().with_state(state.clone()));
    let addr = listener.local_addr()?;
    tracing::info!(%addr, max_connections = tracker.max_total(), "holdfast-server listening");
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let actor_tx = tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
        tracing::info!("shutting down: telling clients");
        let (done_tx, done_rx) = oneshot::channel();
        if actor_tx.send(Cmd::Shutdown(done_tx)).is_ok() {
            let _ = done_rx.await;
        }
        // Let the sockets flush the server-shutdown frames.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = stop_tx.send(());
    });
    let (metrics_stop_tx, metrics_stop_rx) = oneshot::channel::<()>();
    if let Some(ml) = metrics_listener {
        let metrics_addr = ml.local_addr()?;
        tracing::info!(%metrics_addr, "metrics listening");
        let metrics_app = http::metrics_routes(config.test_hooks)
            .merge(http::health_routes())
            .with_state(state.clone());
        // Its own small tracker: scrapes never compete with clients for connections.
        let metrics_tracker = socket::ConnTracker::new(&NetLimits {
            max_connections: 64,
            max_connections_per_ip: 0,
            ..NetLimits::default()
        });
        tokio::spawn(socket::serve(
            ml,
            metrics_app,
            socket::reserve_router(Router::new()),
            metrics_tracker,
            config.net.header_read_timeout,
            async {
                let _ = metrics_stop_rx.await;
            },
        ));
    }
    let serving = socket::serve(
        listener,
        app,
        reserve,
        tracker,
        config.net.header_read_timeout,
        async {
            let _ = stop_rx.await;
        },
    );
    tokio::pin!(serving);
    // The actor returns by itself only at shutdown; a panic ends it any time.
    let mut actor_done = false;
    let outcome = loop {
        tokio::select! {
            () = &mut serving => break Ok(()),
            joined = &mut actor, if !actor_done => match joined {
                Ok(actor::ActorExit::Shutdown) => actor_done = true,
                Ok(actor::ActorExit::WrongLayout(why)) => {
                    let _ = metrics_stop_tx.send(());
                    tracing::error!(%why, "this process cannot use the Redis database; exiting");
                    return Err(ServerError::StoreLayout(why));
                }
                Ok(actor::ActorExit::LeaseLost(node)) => {
                    let _ = metrics_stop_tx.send(());
                    tracing::error!(holder = %node, "the store's lease went to another process; exiting");
                    return Err(ServerError::LeaseLost(node));
                }
                Err(e) if e.is_panic() => {
                    let payload = e.into_panic();
                    let why = payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic".to_owned());
                    break Err(format!("panicked: {why}"));
                }
                Err(e) => break Err(e.to_string()),
            },
        }
    };
    let _ = metrics_stop_tx.send(());
    if let Err(why) = outcome {
        tracing::error!(%why, "the engine stopped; exiting so a supervisor can restart the server");
        return Err(ServerError::EngineStopped(why));
    }
    drop(tx);
    drop(state);
    if !actor_done {
        let _ = tokio::time::timeout(Duration::from_secs(1), actor).await;
    }
    tracing::info!("stopped");
    Ok(())
}
