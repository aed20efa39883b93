//! The server driver: axum + tokio around the pure server engine.
//!
//! One actor task owns the [`ServerEngine`]; every socket has a reader task (decodes JSON
//! off the actor) and a writer task (encodes JSON off the actor). The actor feeds the
//! engine, drains its outputs to the writers and sleeps until its next timer.

pub mod auth;
pub mod config;
pub mod metrics;

use crate::engine::server::{Authenticator, ConnId, DevAuth, Output, ServerConfig, ServerEngine};
use crate::engine::store::MemoryStore;
use crate::engine::Entropy;
use crate::protocol::{decode_client, encode, BadFrame, ClientFrame, ServerFrame};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use metrics::MetricsSnapshot;
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

/// Operating-system randomness for session ids, resume secrets and rejoin tokens.
struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        // The OS CSPRNG does not fail on supported platforms; if it ever did, serving
        // predictable tokens would be worse than stopping.
        getrandom::getrandom(buf).expect("the operating system's random source failed");
    }
}

/// Wall clock in epoch milliseconds: the only clock the server reads.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a socket's writer task is told. Frames are boxed: the queue allocates its
/// slots in blocks, and a few-hundred-byte slot per socket adds up at 10,000 sockets.
enum Outbound {
    Frame(Box<ServerFrame>),
    Close,
}

enum Cmd {
    Open {
        writer: mpsc::Sender<Outbound>,
        reply: oneshot::Sender<ConnId>,
    },
    Frame(ConnId, Result<ClientFrame, BadFrame>),
    Closed(ConnId),
    Metrics(oneshot::Sender<MetricsSnapshot>),
    DropUser(String, oneshot::Sender<usize>),
    Shutdown(oneshot::Sender<()>),
}

#[derive(Clone)]
struct AppState {
    actor: mpsc::UnboundedSender<Cmd>,
    max_frame_bytes: usize,
    /// Test suites run pages from other origins (the wasm test runner): with test hooks
    /// on, `/metrics` and `/test/*` answer cross-origin reads.
    test_hooks: bool,
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

/// Frames queued per socket before it counts as a dead (too slow) link.
const WRITER_QUEUE: usize = 4096;
/// Per-socket read buffer.
const READ_BUFFER: usize = 4 * 1024;
/// After we close a socket, how long the peer has to answer the close before the
/// socket is dropped anyway (a half-open peer never answers).
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Pending connections the kernel queues; a resume storm reconnects thousands at once.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with a backlog deep enough for a reconnect storm (the default 128
/// makes the kernel drop connects, which clients then retry seconds later).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

struct Actor {
    engine: ServerEngine<MemoryStore>,
    writers: HashMap<ConnId, mpsc::Sender<Outbound>>,
}

impl Actor {
    /// Hands every engine output to the socket tasks.
    fn flush(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Send { conn, frame } => {
                    let full = match self.writers.get(&conn) {
                        Some(w) => w.try_send(Outbound::Frame(Box::new(frame))).is_err(),
                        None => false,
                    };
                    if full {
                        // A socket that cannot keep up is treated as dead; its session
                        // resumes on a new socket.
                        if let Some(w) = self.writers.remove(&conn) {
                            let _ = w.try_send(Outbound::Close);
                        }
                        self.engine.handle_close(conn, now_ms());
                    }
                }
                Output::Close { conn, reason } => {
                    tracing::debug!(conn, ?reason, "closing socket");
                    if let Some(w) = self.writers.remove(&conn) {
                        // The frames before it are already queued; the writer sends them,
                        // then closes.
                        let _ = w.try_send(Outbound::Close);
                    }
                }
            }
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            let deadline = self.engine.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(at) => {
                        let wait = at.saturating_sub(now_ms());
                        tokio::time::sleep(Duration::from_millis(wait)).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return };
                    let now = now_ms();
                    match cmd {
                        Cmd::Open { writer, reply } => {
                            let conn = self.engine.handle_open(now);
                            self.writers.insert(conn, writer);
                            let _ = reply.send(conn);
                        }
                        Cmd::Frame(conn, Ok(frame)) => self.engine.handle_frame(conn, frame, now),
                        Cmd::Frame(conn, Err(bad)) => self.engine.handle_bad_frame(conn, bad, now),
                        Cmd::Closed(conn) => {
                            self.writers.remove(&conn);
                            self.engine.handle_close(conn, now);
                        }
                        Cmd::Metrics(reply) => {
                            let _ = reply.send(MetricsSnapshot {
                                counters: self.engine.metrics().clone(),
                                counts: self.engine.counts(),
                                connections: self.engine.connection_count(),
                            });
                        }
                        Cmd::DropUser(user, reply) => {
                            let n = self.engine.drop_links_of(&user, now);
                            tracing::info!(%user, sockets = n, "test hook: dropped links");
                            let _ = reply.send(n);
                        }
                        Cmd::Shutdown(reply) => {
                            self.engine.shutdown(now);
                            self.flush();
                            let _ = reply.send(());
                            return;
                        }
                    }
                    self.flush();
                }
                _ = sleep => {
                    self.engine.handle_timeout(now_ms());
                    self.flush();
                }
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
        .route("/ws", get(ws_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics_handler));
    if config.test_hooks {
        tracing::warn!("test hooks enabled: POST /test/drop?user=ID drops a user's sockets");
        app = app.route("/test/drop", post(drop_handler));
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

async fn metrics_handler(State(state): State<AppState>) -> Response {
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
struct DropQuery {
    user: String,
}

async fn drop_handler(State(state): State<AppState>, Query(q): Query<DropQuery>) -> Response {
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

async fn ws_handler(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    // Let frames somewhat above the protocol limit through, so the engine can answer
    // `frame-too-large` instead of the socket dying without a word.
    let transport_limit = state.max_frame_bytes.saturating_mul(4).max(64 * 1024);
    ws.max_message_size(transport_limit)
        .max_frame_size(transport_limit)
        // tungstenite's default 128 KiB read buffer is allocated (and zeroed) per
        // socket; signaling frames are small, so 4 KiB costs nothing and saves most of
        // a session's memory.
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| serve_socket(socket, state))
}

async fn serve_socket(socket: WebSocket, state: AppState) {
    let (writer_tx, mut writer_rx) = mpsc::channel::<Outbound>(WRITER_QUEUE);
    let (reply_tx, reply_rx) = oneshot::channel();
    if state
        .actor
        .send(Cmd::Open {
            writer: writer_tx,
            reply: reply_tx,
        })
        .is_err()
    {
        return;
    }
    let Ok(conn) = reply_rx.await else { return };
    let (mut sink, mut stream) = socket.split();
    let (gone_tx, mut gone_rx) = oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        while let Some(out) = writer_rx.recv().await {
            match out {
                Outbound::Frame(frame) => {
                    if sink
                        .send(Message::Text(encode(&*frame).into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Outbound::Close => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: 1000,
                            reason: "".into(),
                        })))
                        .await;
                    // A live peer answers the close at once; a half-open one never
                    // does, and its socket must not linger.
                    tokio::time::sleep(CLOSE_GRACE).await;
                    break;
                }
            }
        }
        let _ = sink.close().await;
        let _ = gone_tx.send(());
    });
    let max = state.max_frame_bytes;
    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            _ = &mut gone_rx => break,
        };
        let input = match msg {
            Some(Ok(Message::Text(text))) => decode_client(text.as_str(), max),
            Some(Ok(Message::Binary(_))) => Err(BadFrame::Binary),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
        };
        if state.actor.send(Cmd::Frame(conn, input)).is_err() {
            break;
        }
    }
    let _ = state.actor.send(Cmd::Closed(conn));
    writer.abort();
}
