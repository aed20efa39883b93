//! The socket layer: the listener (connection caps, header-read timeout, accept errors)
//! and one task per WebSocket that both reads and writes it.

use super::actor::{ActorTx, Cmd, Outbound};
use super::http::AppState;
use super::websocket::{self, FrameReader, Incoming, NotAnUpgrade, Upgrade};
use crate::engine::server::ConnId;
use crate::protocol::{
    decode_client, encode, BadFrame, ProbeAnswer, PROBE_HEADER, PROBE_STATUS, PROTOCOL_VERSION,
};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Router;
use futures_util::task::AtomicWaker;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Frames queued per socket before it counts as a dead (too slow) link.
const WRITER_QUEUE: usize = 4096;
/// Bytes read from a socket at a time, into the worker's stack (a socket keeps no read
/// buffer of its own). Signaling frames are a few hundred bytes.
const READ_CHUNK: usize = 4096;
/// Chunks read from one socket before the others get their turn.
const READ_CHUNKS_PER_WAKE: usize = 8;
/// After we close a socket, how long the peer has to answer the close before the
/// socket is dropped anyway (a half-open peer never answers).
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Pending connections the kernel queues; a resume storm reconnects thousands at once.
const LISTEN_BACKLOG: u32 = 4096;
/// Connections served beyond the caps, only to answer `/healthz` (and refuse the
/// rest with 503), so health checks get through while the caps are full.
const RESERVE_CONNECTIONS: usize = 32;
/// Reserve connections one IP may hold.
const RESERVE_PER_IP: usize = 4;
/// How long a reserve connection may take to send its request.
const RESERVE_HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// File descriptors kept free beyond the connection caps: the listeners, the runtime's
/// own descriptors, log files, the reserve.
const FD_HEADROOM: usize = 64 + RESERVE_CONNECTIONS;
/// Pause after an accept error that is not about the one connection (out of file
/// descriptors, out of memory): accepting again at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// WebSocket close code for a server going away (RFC 6455 §7.4.1).
const CLOSE_GOING_AWAY: u16 = 1001;

/// Binds a listener with a backlog deep enough for a reconnect storm (the default 128
/// makes the kernel drop connects, which clients then retry seconds later).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Limits of the listener and the WebSocket upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetLimits {
    /// A connection must send its request headers within this long.
    pub header_read_timeout: Duration,
    /// Open connections at most; 0: the open-files limit minus headroom.
    pub max_connections: usize,
    /// Open connections per client IP at most; 0: no per-IP limit.
    pub max_connections_per_ip: usize,
    /// Client IPs the per-IP limits do not apply to (a local reverse proxy).
    pub per_ip_exempt: Vec<IpAddr>,
    /// `Origin`s allowed to open the WebSocket; `None`: any.
    pub allowed_origins: Option<Vec<String>>,
}

impl Default for NetLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 0,
            max_connections_per_ip: 256,
            per_ip_exempt: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
            ],
            allowed_origins: None,
        }
    }
}

/// The process's open-files limit (soft), if it can be read.
fn fd_limit() -> Option<usize> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid resource and a valid pointer to an rlimit.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    (ok && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur as usize)
}

/// The global cap actually used: what was asked for, but never so close to the fd
/// limit that an accept fails for want of a descriptor.
pub fn effective_max_connections(asked: usize, fd_limit: Option<usize>) -> usize {
    let ceiling = fd_limit.map_or(usize::MAX, |l| l.saturating_sub(FD_HEADROOM).max(1));
    if asked == 0 {
        ceiling
    } else {
        asked.min(ceiling)
    }
}

/// Counts open connections, globally and per IP.
pub(crate) struct ConnTracker {
    max_total: usize,
    max_per_ip: usize,
    exempt: Vec<IpAddr>,
    counts: Mutex<Counts>,
    pub(crate) refused_global: AtomicU64,
    pub(crate) refused_per_ip: AtomicU64,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    reserve: usize,
    /// Reserve slots by IP, so one client cannot take the whole reserve.
    reserve_per_ip: HashMap<IpAddr, usize>,
}

fn release(map: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = map.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            map.remove(&ip);
        }
    }
}

/// Which pool an accepted connection is served from.
enum Admission {
    Normal(ConnSlot),
    /// Over a cap: served only `/healthz`.
    Reserve(ConnSlot),
    Refused,
}

/// One open connection's place in the counts; freed when the connection's socket is
/// dropped (it lives inside the I/O object, so through the WebSocket upgrade too).
pub(crate) struct ConnSlot {
    tracker: Arc<ConnTracker>,
    /// The IP it is counted under, if its IP is counted.
    ip: Option<IpAddr>,
    reserve: bool,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.tracker.lock();
        if self.reserve {
            c.reserve -= 1;
            if let Some(ip) = self.ip {
                release(&mut c.reserve_per_ip, ip);
            }
        } else {
            c.total -= 1;
            if let Some(ip) = self.ip {
                release(&mut c.per_ip, ip);
            }
        }
    }
}

impl ConnTracker {
    pub(crate) fn new(limits: &NetLimits) -> Arc<Self> {
        let max_total = effective_max_connections(limits.max_connections, fd_limit());
        if limits.max_connections > max_total {
            tracing::warn!(
                asked = limits.max_connections,
                used = max_total,
                "--max-connections is above the open-files limit minus headroom; lowered"
            );
        }
        Arc::new(Self {
            max_total,
            max_per_ip: limits.max_connections_per_ip,
            exempt: limits.per_ip_exempt.clone(),
            counts: Mutex::new(Counts::default()),
            refused_global: AtomicU64::new(0),
            refused_per_ip: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn max_total(&self) -> usize {
        self.max_total
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Admission {
        let counted = !self.exempt.contains(&ip);
        let mut c = self.lock();
        let over_global = c.total >= self.max_total;
        let over_ip = counted
            && self.max_per_ip > 0
            && c.per_ip.get(&ip).is_some_and(|&n| n >= self.max_per_ip);
        if !over_global && !over_ip {
            c.total += 1;
            if counted && self.max_per_ip > 0 {
                *c.per_ip.entry(ip).or_insert(0) += 1;
            }
            return Admission::Normal(ConnSlot {
                tracker: self.clone(),
                ip: (counted && self.max_per_ip > 0).then_some(ip),
                reserve: false,
            });
        }
        if over_global {
            self.refused_global.fetch_add(1, Ordering::Relaxed);
        } else {
            self.refused_per_ip.fetch_add(1, Ordering::Relaxed);
        }
        let ip_reserve = c.reserve_per_ip.get(&ip).copied().unwrap_or(0);
        if c.reserve >= RESERVE_CONNECTIONS || (counted && ip_reserve >= RESERVE_PER_IP) {
            return Admission::Refused;
        }
        c.reserve += 1;
        if counted {
            *c.reserve_per_ip.entry(ip).or_insert(0) += 1;
        }
        Admission::Reserve(ConnSlot {
            tracker: self.clone(),
            ip: counted.then_some(ip),
            reserve: true,
        })
    }
}

/// A TCP stream that holds its connection's slot.
struct TrackedStream {
    io: TcpStream,
    _slot: ConnSlot,
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Errors that concern only the connection being accepted; anything else (EMFILE,
/// ENFILE, ENOMEM, ENOBUFS) concerns the whole process.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Accepts connections and serves HTTP/1.1 (with WebSocket upgrades) until `shutdown`
/// resolves. `app` serves admitted connections; connections over a cap are served by
/// `reserve_app` (a `/healthz` that always answers) while the small reserve lasts, and
/// are closed at once after that.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    reserve_app: Router,
    tracker: Arc<ConnTracker>,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let mut reserve_http = hyper::server::conn::http1::Builder::new();
    reserve_http
        .timer(TokioTimer::new())
        .header_read_timeout(RESERVE_HEADER_TIMEOUT)
        .keep_alive(false);
    // Every connection task holds a receiver; `closed()` tells when all are done.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let mut accept_errors: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors or memory: the caps should prevent it, but
                // something else in the process may hold descriptors. Log now and
                // then, pause, go on.
                accept_errors += 1;
                if accept_errors.is_power_of_two() {
                    tracing::error!(error = %e, count = accept_errors, "accept failed; pausing");
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let (slot, builder, router) = match tracker.admit(peer.ip()) {
            Admission::Normal(slot) => (slot, &http, &app),
            Admission::Reserve(slot) => (slot, &reserve_http, &reserve_app),
            Admission::Refused => {
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(TrackedStream {
            io: stream,
            _slot: slot,
        });
        // Per-IP budgets in the engine skip the exempt addresses too.
        let ip = (!tracker.exempt.contains(&peer.ip())).then_some(peer.ip());
        let service = WithClientIp {
            inner: TowerToHyperService::new(router.clone()),
            ip: ClientIp(ip),
        };
        let conn = builder.serve_connection(io, service).with_upgrades();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    // Idle HTTP connections close now; upgraded WebSockets are not HTTP connections
    // any more and were told `server-shutdown` by the engine.
    drop(stop_rx);
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(1), stop_tx.closed()).await;
}

/// The client's IP as the engine's per-IP budgets see it (`None`: exempt).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub(crate) Option<IpAddr>);

/// Hands every request of a connection its [`ClientIp`].
struct WithClientIp<S> {
    inner: S,
    ip: ClientIp,
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for WithClientIp<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut req: hyper::Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.ip);
        self.inner.call(req)
    }
}

/// The reserve's service: `/healthz`, and 503 for everything else.
pub(crate) fn reserve_router(health: Router) -> Router {
    health.fallback(|| async {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "the server is at its connection limit",
        )
    })
}

/// What a socket task is handed by the actor: a queue that allocates nothing while it
/// is empty (an idle socket costs no queue memory) and the socket task's waker. A
/// waker rather than a `Notify`, so that waiting costs the socket's future no state.
pub(crate) struct Mailbox {
    queue: Mutex<MailboxState>,
    waker: AtomicWaker,
}

#[derive(Default)]
struct MailboxState {
    items: VecDeque<Outbound>,
    /// The actor dropped its end.
    closed: bool,
}

/// The actor's end of a socket's mailbox; dropping it tells the socket that nothing
/// more will come.
pub(crate) struct Writer(Arc<Mailbox>);

impl Writer {
    /// Queues a frame, or the close. Fails (handing the frame back) when the socket has
    /// [`WRITER_QUEUE`] frames waiting: a socket that cannot keep up. The close is
    /// always taken.
    pub(crate) fn try_send(&self, out: Outbound) -> Result<(), Outbound> {
        let mut q = self.0.lock();
        if matches!(out, Outbound::Frame(_)) && q.items.len() >= WRITER_QUEUE {
            return Err(out);
        }
        q.items.push_back(out);
        drop(q);
        self.0.waker.wake();
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.waker.wake();
    }
}

impl Mailbox {
    fn pair() -> (Writer, Arc<Mailbox>) {
        let mailbox = Arc::new(Mailbox {
            queue: Mutex::new(MailboxState::default()),
            waker: AtomicWaker::new(),
        });
        (Writer(mailbox.clone()), mailbox)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MailboxState> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Everything queued so far (its allocation leaves with it), or `None` once the
    /// actor's end is gone and the queue is empty.
    fn poll_batch(&self, cx: &mut Context<'_>) -> Poll<Option<VecDeque<Outbound>>> {
        // Registered before looking, so a frame queued in between still wakes us.
        self.waker.register(cx.waker());
        let mut q = self.lock();
        if !q.items.is_empty() {
            Poll::Ready(Some(std::mem::take(&mut q.items)))
        } else if q.closed {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    async fn recv_batch(&self) -> Option<VecDeque<Outbound>> {
        std::future::poll_fn(|cx| self.poll_batch(cx)).await
    }
}

fn origin_allowed(allowed: Option<&[String]>, headers: &HeaderMap) -> bool {
    let Some(allowed) = allowed else { return true };
    headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)))
}

/// The answer to a request of the socket URL that does not become a socket: a plain
/// `GET` (a client's probe after a failed upgrade, see the protocol's "Probing the
/// socket URL") or a refused upgrade. Holdfast's JSON mark, readable from any origin, so
/// a client can tell this server from a wrong URL.
fn probe_answer(status: StatusCode) -> Response {
    use axum::http::HeaderValue;
    let body = serde_json::to_string(&ProbeAnswer::this_build()).unwrap_or_default();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(PROBE_HEADER),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(PROBE_HEADER, HeaderValue::from(PROTOCOL_VERSION));
    response
}

pub(crate) async fn ws_handler(
    State(state): State<AppState>,
    ip: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    upgrade: Result<Upgrade, NotAnUpgrade>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        // Not an upgrade: a probe.
        return probe_answer(
            StatusCode::from_u16(PROBE_STATUS).unwrap_or(StatusCode::UPGRADE_REQUIRED),
        );
    };
    let ip = ip.and_then(|Extension(ClientIp(ip))| ip);
    if state.health.standby() {
        // Another process holds the store: the client retries with backoff (or its
        // load balancer sends it to the holder, which is ready where this one is not).
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            super::store::STANDBY_ANSWER,
        )
            .into_response();
    }
    if !origin_allowed(state.allowed_origins.as_deref(), &headers) {
        // Still Holdfast's mark: the client reports the server as there but refusing.
        return probe_answer(StatusCode::FORBIDDEN);
    }
    let (response, on_upgrade) = upgrade.accept();
    tokio::spawn(serve_socket(
        on_upgrade,
        state.actor.clone(),
        state.max_frame_bytes,
        ip,
    ));
    response
}

/// How a socket's task ends.
enum Ending {
    /// The link broke, or the peer closed and was answered: nothing to send.
    Gone,
    /// The server closes: close handshake with this code.
    Close(u16),
}

/// A batch of frames, encoded for one write, and the close it asks for (what follows a
/// close is not sent).
fn encode_batch(batch: VecDeque<Outbound>) -> (Vec<u8>, Option<u16>) {
    let mut out = Vec::new();
    for item in batch {
        match item {
            Outbound::Frame(frame) => websocket::put_text(&mut out, &encode(&*frame)),
            Outbound::Close => return (out, Some(websocket::CLOSE_NORMAL)),
        }
    }
    (out, None)
}

/// What a read of a ready socket came to.
enum Read {
    /// Every whole message was handed on; more may come.
    Open,
    /// The peer closed the TCP stream, or it broke, or the engine is gone.
    Gone,
    /// The peer sent a WebSocket close (with this code).
    Closed(Option<u16>),
    /// The peer's bytes cannot be read further.
    Broken(websocket::ReadError),
}

/// Feeds `bytes` to the reader: WebSocket pings are answered into `pongs`, pongs
/// dropped, and every other message handed to `on`, which may end the reading.
fn feed(
    reader: &mut FrameReader,
    bytes: &[u8],
    pongs: &mut Vec<u8>,
    on: &mut dyn FnMut(Incoming) -> Option<Read>,
) -> Read {
    let mut ended = None;
    let fed = reader.feed(bytes, &mut |m| {
        if ended.is_some() {
            return;
        }
        match m {
            Incoming::Ping(payload) => websocket::put_pong(pongs, &payload),
            Incoming::Pong => {}
            m => ended = on(m),
        }
    });
    match (ended, fed) {
        (Some(end), _) => end,
        (None, Err(e)) => Read::Broken(e),
        (None, Ok(())) => Read::Open,
    }
}

/// Reads what the socket has (a bounded number of chunks, so one busy socket does not
/// hold its worker) and [`feed`]s it. Not async: the chunk lives on the worker's stack,
/// never in the socket's future, so an idle socket holds no buffer.
fn read_ready(
    io: &TcpStream,
    reader: &mut FrameReader,
    pongs: &mut Vec<u8>,
    on: &mut dyn FnMut(Incoming) -> Option<Read>,
) -> Read {
    let mut chunk = [0u8; READ_CHUNK];
    for _ in 0..READ_CHUNKS_PER_WAKE {
        match io.try_read(&mut chunk) {
            Ok(0) => return Read::Gone,
            Ok(n) => match feed(reader, &chunk[..n], pongs, on) {
                Read::Open if n == chunk.len() => {}
                read => return read,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Read::Gone,
        }
    }
    Read::Open
}

/// Waits up to [`CLOSE_GRACE`] for the peer to answer our close (a live peer answers
/// at once; a half-open one never does, and its socket must not linger).
async fn await_close_answer(io: &TcpStream, reader: &mut FrameReader) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        loop {
            if io.readable().await.is_err() {
                return;
            }
            let read = read_ready(io, reader, &mut Vec::new(), &mut |m| {
                matches!(m, Incoming::Close(_)).then_some(Read::Closed(None))
            });
            if !matches!(read, Read::Open) {
                return;
            }
        }
    })
    .await;
}

/// A socket taken over from HTTP and known to the engine.
struct Opened {
    stream: TrackedStream,
    actor: ActorTx,
    conn: ConnId,
    mailbox: Arc<Mailbox>,
    reader: FrameReader,
    /// WebSocket pings, answered with the next write.
    pongs: Vec<u8>,
    /// What reading the bytes that came with the upgrade request came to.
    read: Read,
}

/// Takes the connection over once the 101 answer has gone out, tells the engine, and
/// reads whatever the client sent right behind its request. Its own future, so that
/// none of this is kept in the socket's.
async fn open(
    on_upgrade: hyper::upgrade::OnUpgrade,
    actor: ActorTx,
    ip: Option<IpAddr>,
    max: usize,
) -> Option<Opened> {
    let upgraded = on_upgrade.await.ok()?;
    // The connection is the listener's own stream (see `serve`).
    let Ok(parts) = upgraded.downcast::<TokioIo<TrackedStream>>() else {
        tracing::error!("an upgraded connection is not the listener's stream");
        return None;
    };
    let (writer, mailbox) = Mailbox::pair();
    let (reply, conn) = oneshot::channel();
    actor.send(Cmd::Open { writer, ip, reply }).ok()?;
    let conn = conn.await.ok()?;
    // Let frames somewhat above the protocol limit through, so the engine can answer
    // `frame-too-large` and the socket stays open; past this one the transport stops
    // reading, and the socket gets the error and close 1009.
    let mut reader = FrameReader::new(max.saturating_mul(4).max(64 * 1024));
    let mut pongs = Vec::new();
    let read = feed(&mut reader, &parts.read_buf, &mut pongs, &mut |m| {
        hand_to_engine(&actor, conn, max, m)
    });
    Some(Opened {
        stream: parts.io.into_inner(),
        actor,
        conn,
        mailbox,
        reader,
        pongs,
        read,
    })
}

/// A message for the engine (`Some` if it ends the reading).
fn hand_to_engine(actor: &ActorTx, conn: ConnId, max: usize, m: Incoming) -> Option<Read> {
    let input = match m {
        Incoming::Text(text) => decode_client(&text, max),
        Incoming::Binary => Err(BadFrame::Binary),
        Incoming::Close(code) => return Some(Read::Closed(code)),
        // Answered by `feed`, never handed on.
        Incoming::Ping(_) | Incoming::Pong => return None,
    };
    actor
        .send(Cmd::Frame(conn, input))
        .is_err()
        .then_some(Read::Gone)
}

/// What woke a socket's task.
enum Wake {
    Batch(Option<VecDeque<Outbound>>),
    Readable(io::Result<()>),
}

/// One WebSocket, read and written by this one task, from the moment the 101 answer
/// has gone out.
///
/// Not an `async fn`: its arguments would be kept twice in the future, as captured and
/// as locals, and the future is most of what an idle socket costs. For the same reason
/// the wait is one `poll_fn` on the mailbox's waker and the stream's readiness (no
/// stored futures), the writes are awaited outside it, and the opening and the rare
/// long waits (the flush before a `frame-too-large` close, the close handshake) are
/// boxed.
#[allow(clippy::manual_async_fn)] // on purpose, as said above
fn serve_socket(
    on_upgrade: hyper::upgrade::OnUpgrade,
    actor: ActorTx,
    max: usize,
    ip: Option<IpAddr>,
) -> impl std::future::Future<Output = ()> + Send {
    // Made here, so the future keeps only the box of what the opening needs.
    let opening = Box::pin(open(on_upgrade, actor, ip, max));
    async move {
        let Some(Opened {
            mut stream,
            actor,
            conn,
            mailbox,
            mut reader,
            mut pongs,
            mut read,
        }) = opening.await
        else {
            return;
        };
        // Which of the two is looked at first alternates, so a busy mailbox cannot
        // starve the reading, nor a busy client the writing.
        let mut mailbox_first = true;
        let ending = loop {
            match std::mem::replace(&mut read, Read::Open) {
                Read::Open => {}
                Read::Gone => break Ending::Gone,
                Read::Closed(code) => {
                    // Answer the peer's close with its code, and go.
                    let mut out = Vec::new();
                    websocket::put_close(&mut out, code.unwrap_or(websocket::CLOSE_NORMAL));
                    let _ = stream.io.try_write(&out);
                    break Ending::Gone;
                }
                Read::Broken(websocket::ReadError::TooLarge { len }) => {
                    // The spec promises `frame-too-large`: hand it to the engine, send
                    // what it answers, then close 1009.
                    let _ = actor.send(Cmd::Frame(conn, Err(BadFrame::TooLarge { len, max })));
                    let _ = actor.send(Cmd::Closed(conn));
                    let flushed = tokio::time::timeout(CLOSE_GRACE, async {
                        while let Some(batch) = mailbox.recv_batch().await {
                            let (out, close) = encode_batch(batch);
                            if stream.io.write_all(&out).await.is_err() || close.is_some() {
                                break;
                            }
                        }
                    });
                    let _ = Box::pin(flushed).await;
                    break Ending::Close(websocket::CLOSE_TOO_BIG);
                }
                Read::Broken(e) => break Ending::Close(e.close_code()),
            }
            if !pongs.is_empty() {
                let out = std::mem::take(&mut pongs);
                if stream.io.write_all(&out).await.is_err() {
                    break Ending::Gone;
                }
            }
            mailbox_first = !mailbox_first;
            // The match ends before the write is awaited, so the future keeps no room
            // for what woke it.
            let batch = match std::future::poll_fn(|cx| {
                if mailbox_first {
                    if let Poll::Ready(batch) = mailbox.poll_batch(cx) {
                        return Poll::Ready(Wake::Batch(batch));
                    }
                }
                if let Poll::Ready(ready) = stream.io.poll_read_ready(cx) {
                    return Poll::Ready(Wake::Readable(ready));
                }
                mailbox.poll_batch(cx).map(Wake::Batch)
            })
            .await
            {
                Wake::Readable(Ok(())) => {
                    read = read_ready(&stream.io, &mut reader, &mut pongs, &mut |m| {
                        hand_to_engine(&actor, conn, max, m)
                    });
                    continue;
                }
                Wake::Readable(Err(_)) => break Ending::Gone,
                // The engine let go of this socket (shutdown, or it stopped): going away.
                Wake::Batch(None) => break Ending::Close(CLOSE_GOING_AWAY),
                Wake::Batch(Some(batch)) => batch,
            };
            // One write for the batch.
            let (out, close) = encode_batch(batch);
            if stream.io.write_all(&out).await.is_err() {
                break Ending::Gone;
            }
            if let Some(code) = close {
                break Ending::Close(code);
            }
        };
        let _ = actor.send(Cmd::Closed(conn));
        if let Ending::Close(code) = ending {
            let mut out = Vec::new();
            websocket::put_close(&mut out, code);
            if stream.io.write_all(&out).await.is_ok() {
                Box::pin(await_close_answer(&stream.io, &mut reader)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_global_cap_stays_below_the_fd_limit() {
        assert_eq!(effective_max_connections(0, Some(1024)), 1024 - FD_HEADROOM);
        assert_eq!(effective_max_connections(100, Some(1024)), 100);
        assert_eq!(
            effective_max_connections(5000, Some(1024)),
            1024 - FD_HEADROOM
        );
        assert_eq!(effective_max_connections(0, None), usize::MAX);
    }
}
