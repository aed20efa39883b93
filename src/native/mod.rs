//! The native client driver: the client engine over tokio and tokio-tungstenite. Used by
//! the integration tests and the load tool, so they exercise the very engine the
//! browser runs.
//!
//! One task per client owns the [`ClientEngine`]. Every socket has one task that
//! forwards the text frames it reads and writes what the engine queued (everything
//! queued at once in one write), so a frame crosses one task boundary each way.
//! Rejoin records are kept in an in-memory map standing in for localStorage;
//! [`NativeClient::records`] hands them to a new client, as a reloaded page would find
//! them.
//!
//! Every event is stamped with the local time at which the engine emitted it
//! ([`NativeClient::recv_event`]), so a load tool driving thousands of clients measures
//! the engine's timing, not how long its own tasks took to look.
//!
//! Sockets use a small read buffer ([`READ_BUFFER_BYTES`]): tungstenite's default of
//! 128 KiB is zero-filled on every read, so it would cost 128 KiB of resident memory per
//! client (over a gigabyte for 10,000 clients). Larger frames still arrive whole. Like a
//! browser's sockets they set `TCP_NODELAY`.
//!
//! A link can be broken from the client's side the ways networks break them
//! ([`NativeClient::break_link`]), and every socket counts its bytes
//! ([`socket_traffic`]): the load tool's storms need no proxy between the clients and
//! the server, whose second TCP hop took more CPU than the server itself.

mod counted;

pub use counted::{socket_traffic, SocketTraffic};

use crate::engine::client::{
    ClientConfig, ClientEngine, Event, Io, LinkId, ProbeResult, RejoinRecord, StorageOp,
};
use crate::protocol::{decode_server, encode, BadFrame, CallId, ClientFrame, ProbeAnswer};
use counted::Counted;
use futures_util::{SinkExt, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// Read chunk of each client socket (frames of any allowed size still arrive whole).
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

/// How long a socket the engine closed waits for the server's answering close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Wall clock in epoch milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

type EngineFn = Box<dyn FnOnce(&mut ClientEngine, u64) + Send>;

/// How [`NativeClient::break_link`] breaks the current socket. The engine sees the link
/// close at once in every case; what differs is what the server sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkBreak {
    /// A clean TCP close (FIN), as a NAT that says goodbye would make.
    Close,
    /// A reset (RST): `SO_LINGER` 0, then the socket is closed.
    Reset,
    /// Nothing at all: the socket stays open and silent, so the server's side is
    /// half-open and the server learns of the drop only from the resume (or its
    /// heartbeat timeout). What the server sends is read and discarded, as bytes sent
    /// into a dead link vanish, until the server closes it.
    HalfOpen,
}

enum Cmd {
    With(EngineFn),
    KillLink,
    FreezeLink,
    BreakLink(LinkBreak),
    SendRaw(String),
    Records(oneshot::Sender<Vec<RejoinRecord>>),
    Stop(oneshot::Sender<()>),
}

enum LinkEvent {
    Opened(LinkId, OpenedLink),
    /// The socket did not open; what its upgrade answer says about the endpoint.
    Failed(LinkId, ProbeResult),
    Text(LinkId, Utf8Bytes),
    Binary(LinkId),
    Closed(LinkId),
}

/// A socket's handles, as its task hands them to the driver.
struct OpenedLink {
    writer: mpsc::UnboundedSender<Message>,
    breaker: oneshot::Sender<LinkBreak>,
    task: JoinHandle<()>,
}

struct Link {
    writer: mpsc::UnboundedSender<Message>,
    /// Tells the socket's task how to break it (taken when used).
    breaker: Option<oneshot::Sender<LinkBreak>>,
    tasks: Vec<JoinHandle<()>>,
    /// Half-open emulation: nothing goes in or out, and the socket stays open.
    frozen: bool,
}

/// A client running on tokio. Dropping it stops the task.
pub struct NativeClient {
    cmd: mpsc::UnboundedSender<Cmd>,
    events: mpsc::UnboundedReceiver<(u64, Event)>,
    task: JoinHandle<()>,
}

impl Drop for NativeClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NativeClient {
    /// Starts a client for `url` (e.g. `ws://127.0.0.1:8080/ws`) with rejoin records as
    /// a reloaded page would find them in storage, and connects.
    pub fn start(url: &str, config: ClientConfig, records: Vec<RejoinRecord>) -> Self {
        Self::start_from(url, None, config, records)
    }

    /// [`NativeClient::start`], with every socket bound to `source` (a loopback address
    /// other than 127.0.0.1, say): thousands of clients on one machine, each from the
    /// same address to the same server, leave the kernel searching a crowded port space
    /// for every new connection, while real clients come from many addresses.
    pub fn start_from(
        url: &str,
        source: Option<IpAddr>,
        config: ClientConfig,
        records: Vec<RejoinRecord>,
    ) -> Self {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            url: url.to_owned(),
            source,
            engine: ClientEngine::new(config),
            links: HashMap::new(),
            probe_answers: HashMap::new(),
            zombies: Vec::new(),
            storage: BTreeMap::new(),
            events: ev_tx,
        };
        let task = tokio::spawn(driver.run(cmd_rx, records));
        Self {
            cmd: cmd_tx,
            events: ev_rx,
            task,
        }
    }

    /// Runs `f` on the engine (any command: call, accept, hangup, send, rejoin, …) and
    /// returns its result.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ClientEngine, u64) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        let f: EngineFn = Box::new(move |engine, now| {
            let _ = tx.send(f(engine, now));
        });
        self.cmd.send(Cmd::With(f)).expect("client task is running");
        rx.await.expect("client task answered")
    }

    /// The next event, or None after `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
            .map(|(_, ev)| ev)
    }

    /// The next event with the local epoch ms at which the engine emitted it; None once
    /// the client task has stopped. Cancel-safe (usable in `select!`).
    pub async fn recv_event(&mut self) -> Option<(u64, Event)> {
        self.events.recv().await
    }

    /// Waits for the first event for which `pick` returns Some. On timeout, returns the
    /// events seen meanwhile (for the assertion message).
    pub async fn expect<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Result<T, Vec<Event>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((_, ev))) => {
                    if let Some(t) = pick(&ev) {
                        return Ok(t);
                    }
                    seen.push(ev);
                }
                _ => return Err(seen),
            }
        }
    }

    /// Drains events that already arrived.
    pub fn drain_events(&mut self) -> Vec<Event> {
        let mut v = Vec::new();
        while let Ok((_, ev)) = self.events.try_recv() {
            v.push(ev);
        }
        v
    }

    /// Drops the current socket without a WebSocket close (the server sees the TCP
    /// connection end; the engine sees the link close).
    pub fn kill_link(&self) {
        let _ = self.cmd.send(Cmd::KillLink);
    }

    /// Half-open: the current socket stays open but nothing passes either way, as when
    /// a NAT forgets the connection. Both sides must notice through heartbeats.
    pub fn freeze_link(&self) {
        let _ = self.cmd.send(Cmd::FreezeLink);
    }

    /// Breaks the current socket the way `how` says, from the client's side; the
    /// engine sees the link close at once and reconnects.
    pub fn break_link(&self, how: LinkBreak) {
        let _ = self.cmd.send(Cmd::BreakLink(how));
    }

    /// Sends a raw text frame on the current socket (bad-input tests).
    pub fn send_raw(&self, text: impl Into<String>) {
        let _ = self.cmd.send(Cmd::SendRaw(text.into()));
    }

    /// The rejoin records this client has stored.
    pub async fn records(&self) -> Vec<RejoinRecord> {
        let (tx, rx) = oneshot::channel();
        let _ = self.cmd.send(Cmd::Records(tx));
        rx.await.unwrap_or_default()
    }

    /// Stops the client like a closed tab: sockets drop, nothing is said to the server.
    pub async fn close_tab(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

struct Driver {
    url: String,
    /// The address every socket is bound to (None: the kernel's choice).
    source: Option<IpAddr>,
    engine: ClientEngine,
    links: HashMap<LinkId, Link>,
    /// What each failed socket's upgrade answer said, for the engine's [`Io::Probe`]:
    /// the native driver judges from the HTTP answer to the upgrade itself (a Holdfast
    /// server answers an upgrade it refuses like a probe), so it needs no second request.
    probe_answers: HashMap<LinkId, ProbeResult>,
    /// Frozen sockets the engine gave up on: kept open (and silent) so the server side
    /// stays half-open, as with a real dead NAT mapping.
    zombies: Vec<Link>,
    storage: BTreeMap<CallId, RejoinRecord>,
    events: mpsc::UnboundedSender<(u64, Event)>,
}

impl Driver {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>, records: Vec<RejoinRecord>) {
        let (link_tx, mut link_rx) = mpsc::unbounded_channel::<LinkEvent>();
        let now = now_ms();
        for r in &records {
            self.storage.insert(r.call.clone(), r.clone());
        }
        self.engine.load_rejoin_records(records, now);
        self.engine.connect(now);
        self.flush(&link_tx);
        loop {
            let sleep = match self.engine.poll_timeout() {
                Some(at) => Duration::from_millis(at.saturating_sub(now_ms())),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                cmd = cmds.recv() => {
                    let Some(cmd) = cmd else { break };
                    match cmd {
                        Cmd::With(f) => f(&mut self.engine, now_ms()),
                        Cmd::KillLink => {
                            if let Some(id) = self.engine.current_link() {
                                if let Some(link) = self.links.remove(&id) {
                                    for t in link.tasks { t.abort(); }
                                }
                                self.engine.handle_close(id, now_ms());
                            }
                        }
                        Cmd::FreezeLink => {
                            if let Some(id) = self.engine.current_link() {
                                if let Some(link) = self.links.get_mut(&id) { link.frozen = true; }
                            }
                        }
                        Cmd::BreakLink(how) => {
                            if let Some(id) = self.engine.current_link() {
                                if let Some(mut link) = self.links.remove(&id) {
                                    if let Some(breaker) = link.breaker.take() {
                                        let _ = breaker.send(how);
                                    }
                                    if how == LinkBreak::HalfOpen {
                                        // Its task holds the socket open; stopped with the client.
                                        self.zombies.push(link);
                                    }
                                }
                                self.engine.handle_close(id, now_ms());
                            }
                        }
                        Cmd::SendRaw(text) => {
                            if let Some(link) = self.engine.current_link().and_then(|id| self.links.get(&id)) {
                                let _ = link.writer.send(Message::Text(text.into()));
                            }
                        }
                        Cmd::Records(reply) => {
                            let _ = reply.send(self.storage.values().cloned().collect());
                        }
                        Cmd::Stop(reply) => {
                            for link in self.links.drain().map(|(_, l)| l).chain(self.zombies.drain(..)) {
                                for t in link.tasks { t.abort(); }
                            }
                            let _ = reply.send(());
                            return;
                        }
                    }
                }
                ev = link_rx.recv() => {
                    let Some(ev) = ev else { break };
                    let now = now_ms();
                    match ev {
                        LinkEvent::Opened(id, opened) => {
                            if self.engine.current_link() == Some(id) {
                                self.links.insert(id, Link {
                                    writer: opened.writer,
                                    breaker: Some(opened.breaker),
                                    tasks: vec![opened.task],
                                    frozen: false,
                                });
                                self.engine.handle_open(id, now);
                            } else {
                                opened.task.abort();
                            }
                        }
                        LinkEvent::Failed(id, answer) => {
                            self.links.remove(&id);
                            self.probe_answers.insert(id, answer);
                            self.engine.handle_close(id, now);
                        }
                        LinkEvent::Closed(id) => {
                            let frozen = self.links.get(&id).is_some_and(|l| l.frozen);
                            if !frozen {
                                self.links.remove(&id);
                                self.engine.handle_close(id, now);
                            }
                        }
                        LinkEvent::Text(id, text) => {
                            if self.links.get(&id).is_some_and(|l| !l.frozen) {
                                match decode_server(text.as_str(), usize::MAX) {
                                    Ok(frame) => self.engine.handle_frame(id, frame, now),
                                    Err(bad) => self.engine.handle_bad_frame(id, bad, now),
                                }
                            }
                        }
                        LinkEvent::Binary(id) => {
                            if self.links.get(&id).is_some_and(|l| !l.frozen) {
                                self.engine.handle_bad_frame(id, BadFrame::Binary, now);
                            }
                        }
                    }
                }
                _ = tokio::time::sleep(sleep) => {
                    self.engine.handle_timeout(now_ms());
                }
            }
            self.flush(&link_tx);
        }
    }

    fn flush(&mut self, link_tx: &mpsc::UnboundedSender<LinkEvent>) {
        while let Some(io) = self.engine.poll_io() {
            match io {
                Io::Open(id) => {
                    tokio::spawn(open_link(
                        self.url.clone(),
                        self.source,
                        id,
                        link_tx.clone(),
                    ));
                }
                Io::Probe(id) => {
                    // A socket that opened and then closed before the welcome left no
                    // upgrade answer: nothing more is known without a request.
                    let answer = self
                        .probe_answers
                        .remove(&id)
                        .unwrap_or(ProbeResult::Unreachable);
                    self.engine.handle_probe_result(id, answer, now_ms());
                }
                Io::Close(id) => {
                    self.probe_answers.remove(&id);
                    if let Some(link) = self.links.remove(&id) {
                        if link.frozen {
                            self.zombies.push(link);
                        } else {
                            let _ = link.writer.send(Message::Close(None));
                            // A peer that never answers the close (a dead link) must
                            // not keep the socket: give up on the handshake, as a
                            // browser does.
                            let tasks = link.tasks;
                            tokio::spawn(async move {
                                tokio::time::sleep(CLOSE_GRACE).await;
                                for t in tasks {
                                    t.abort();
                                }
                            });
                        }
                    }
                }
            }
        }
        while let Some(frame) = self.engine.poll_transmit() {
            if let Some(link) = self
                .engine
                .current_link()
                .and_then(|id| self.links.get(&id))
            {
                if !link.frozen {
                    let _ = link
                        .writer
                        .send(Message::Text(encode::<ClientFrame>(&frame).into()));
                }
            }
        }
        while let Some(op) = self.engine.poll_storage() {
            match op {
                StorageOp::Put(r) => {
                    self.storage.insert(r.call.clone(), r);
                }
                StorageOp::Remove(call) => {
                    self.storage.remove(&call);
                }
            }
        }
        let mut at = None;
        while let Some(ev) = self.engine.poll_event() {
            let at = *at.get_or_insert_with(now_ms);
            let _ = self.events.send((at, ev));
        }
    }
}

/// A client socket: the WebSocket over its counted TCP stream.
type Socket = WebSocketStream<Counted>;

/// Connects a `ws://` URL's TCP stream from `source` if given (`TCP_NODELAY`, as
/// browsers set on their sockets). None: unreachable (refused, or not a
/// `ws://host:port` URL).
async fn connect_tcp(url: &str, source: Option<IpAddr>) -> Option<Counted> {
    let uri: Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("ws") {
        return None;
    }
    let (host, port) = (uri.host()?, uri.port_u16().unwrap_or(80));
    let tcp = match source {
        None => TcpStream::connect((host, port)).await.ok()?,
        Some(ip) => {
            let to = tokio::net::lookup_host((host, port))
                .await
                .ok()?
                .find(|a| a.is_ipv4() == ip.is_ipv4())?;
            let socket = if ip.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .ok()?;
            socket.bind(SocketAddr::new(ip, 0)).ok()?;
            socket.connect(to).await.ok()?
        }
    };
    tcp.set_nodelay(true).ok()?;
    Some(Counted(tcp))
}

async fn open_link(
    url: String,
    source: Option<IpAddr>,
    id: LinkId,
    events: mpsc::UnboundedSender<LinkEvent>,
) {
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let Some(tcp) = connect_tcp(&url, source).await else {
        let _ = events.send(LinkEvent::Failed(id, ProbeResult::Unreachable));
        return;
    };
    let ws =
        match tokio_tungstenite::client_async_with_config(url.as_str(), tcp, Some(config)).await {
            Ok((ws, _)) => ws,
            Err(e) => {
                let _ = events.send(LinkEvent::Failed(id, upgrade_answer(&e)));
                return;
            }
        };
    let (writer, rx) = mpsc::unbounded_channel::<Message>();
    let (breaker, breaks) = oneshot::channel();
    let task = tokio::spawn(serve_link(ws, id, rx, breaks, events.clone()));
    let _ = events.send(LinkEvent::Opened(
        id,
        OpenedLink {
            writer,
            breaker,
            task,
        },
    ));
}

/// Breaks `ws` from the client's side (see [`LinkBreak`]); returns once the socket may
/// be dropped.
async fn break_socket(mut ws: Socket, how: LinkBreak) {
    let tcp = socket2::SockRef::from(&ws.get_ref().0);
    match how {
        LinkBreak::Close => {
            let _ = tcp.shutdown(std::net::Shutdown::Both);
        }
        LinkBreak::Reset => {
            let _ = tcp.set_linger(Some(Duration::ZERO));
        }
        LinkBreak::HalfOpen => while let Some(Ok(_)) = ws.next().await {},
    }
}

/// One open socket: reads until it ends and writes what the driver queues. After a
/// close is written (or the driver let go of the link), it only reads, until the
/// server's answering close or the end of the socket.
async fn serve_link(
    mut ws: Socket,
    id: LinkId,
    mut rx: mpsc::UnboundedReceiver<Message>,
    mut breaks: oneshot::Receiver<LinkBreak>,
    events: mpsc::UnboundedSender<LinkEvent>,
) {
    let mut writing = true;
    let mut breakable = true;
    loop {
        tokio::select! {
            how = &mut breaks, if breakable => {
                match how {
                    // The driver already counts the link as closed.
                    Ok(how) => return break_socket(ws, how).await,
                    // The driver let go of the link without breaking it.
                    Err(_) => breakable = false,
                }
            }
            out = rx.recv(), if writing => {
                let Some(msg) = out else {
                    writing = false;
                    continue;
                };
                let mut next = Some(msg);
                let mut ok = true;
                while let Some(msg) = next.take() {
                    writing = !matches!(msg, Message::Close(_));
                    ok = ws.feed(msg).await.is_ok();
                    if ok && writing {
                        next = rx.try_recv().ok();
                    }
                }
                if !ok || ws.flush().await.is_err() {
                    writing = false;
                }
            }
            msg = ws.next() => {
                let ev = match msg {
                    Some(Ok(Message::Text(text))) => LinkEvent::Text(id, text),
                    Some(Ok(Message::Binary(_))) => LinkEvent::Binary(id),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                if events.send(ev).is_err() {
                    return;
                }
            }
        }
    }
    let _ = events.send(LinkEvent::Closed(id));
}

/// What a failed upgrade says about the endpoint (see [`ProbeResult`]).
fn upgrade_answer(e: &tokio_tungstenite::tungstenite::Error) -> ProbeResult {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e {
        WsError::Http(response) => {
            let answer = response
                .body()
                .as_deref()
                .and_then(|body| serde_json::from_slice::<ProbeAnswer>(body).ok());
            match answer {
                Some(a) if a.holdfast == 1 => ProbeResult::Holdfast {
                    protocol: a.protocol,
                },
                _ => ProbeResult::NotHoldfast {
                    status: Some(response.status().as_u16()),
                },
            }
        }
        // Connection refused, DNS, TLS, or the connection reset mid-handshake.
        _ => ProbeResult::Unreachable,
    }
}
