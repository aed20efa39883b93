//! A small TCP proxy on 127.0.0.1 that can break links the ways networks do.
//!
//! Every accepted client connection gets its own connection to the upstream server and
//! one task pumping bytes both ways. Each connection can be told to:
//! - [`Action::Close`]: close both sides cleanly (FIN), as a server restart or a NAT
//!   that says goodbye would;
//! - [`Action::Reset`]: reset both sides (`SO_LINGER` 0, RST), as a crashed middlebox;
//! - [`Action::HalfOpen`]: reset the client's side only; the server's side stays open
//!   and silent (what the server sees when a phone switches networks);
//! - [`Action::Blackhole`]: stop forwarding both ways and keep both sockets open (a
//!   dead NAT mapping): only heartbeats can tell.
//!
//! Bytes that would have crossed a broken link are read and discarded, so neither peer
//! ever feels back-pressure from a dead link (as with a real one, whose bytes vanish).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What to do to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Close both sides cleanly (FIN both ways).
    Close,
    /// Reset both sides (RST both ways).
    Reset,
    /// Reset the client's side; keep the server's side open and silent.
    HalfOpen,
    /// Stop forwarding both ways; keep both sides open and silent.
    Blackhole,
}

/// Byte and chunk counters of everything forwarded (not what a broken link swallowed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Client to server.
    pub bytes_up: u64,
    /// Server to client.
    pub bytes_down: u64,
    /// Writes forwarded (about one TCP segment each at heartbeat rates).
    pub chunks_up: u64,
    pub chunks_down: u64,
}

impl Traffic {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Traffic) {
        self.bytes_up += other.bytes_up;
        self.bytes_down += other.bytes_down;
        self.chunks_up += other.chunks_up;
        self.chunks_down += other.chunks_down;
    }

    pub fn bytes(&self) -> u64 {
        self.bytes_up + self.bytes_down
    }

    pub fn chunks(&self) -> u64 {
        self.chunks_up + self.chunks_down
    }

    /// What passed between two readings.
    pub fn since(&self, earlier: &Traffic) -> Traffic {
        Traffic {
            bytes_up: self.bytes_up - earlier.bytes_up,
            bytes_down: self.bytes_down - earlier.bytes_down,
            chunks_up: self.chunks_up - earlier.chunks_up,
            chunks_down: self.chunks_down - earlier.chunks_down,
        }
    }
}

struct Inner {
    /// Where connections go: the first that accepts (a balancer's failover order).
    upstreams: Vec<SocketAddr>,
    conns: Mutex<HashMap<u64, mpsc::UnboundedSender<Action>>>,
    next_id: AtomicU64,
    /// New connections are accepted and black-holed (never forwarded), as when SYNs
    /// get through but nothing else does.
    blackhole_new: AtomicBool,
    /// Extra delay before every forwarded write, in milliseconds (a latency spike).
    delay_ms: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    chunks_up: AtomicU64,
    chunks_down: AtomicU64,
    accepted: AtomicU64,
    upstream_failures: AtomicU64,
    /// Slowest connect to the upstream so far, in microseconds.
    slowest_upstream_connect_us: AtomicU64,
}

/// A running proxy. Dropping it stops accepting; [`Proxy::shutdown`] also resets every
/// connection.
pub struct Proxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
    accept: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Listen backlog asked for (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 65_535;
/// Per-direction buffer of a connection.
const CHUNK: usize = 4 * 1024;
/// How long a cleanly closed connection waits for both peers to close their side.
const LINGER: Duration = Duration::from_secs(5);

impl Proxy {
    /// Listens on 127.0.0.1 (an ephemeral port) and forwards to `upstream`, which must
    /// be a loopback address.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        Self::start_to(vec![upstream]).await
    }

    /// Forwards each new connection to the first of `upstreams` that accepts it, as a
    /// load balancer in front of several server processes would (all on loopback).
    pub async fn start_to(upstreams: Vec<SocketAddr>) -> io::Result<Self> {
        if upstreams.is_empty() || !upstreams.iter().all(|u| u.ip().is_loopback()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the proxy only forwards to loopback addresses",
            ));
        }
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind("127.0.0.1:0".parse().expect("literal address"))?;
        let listener = socket.listen(BACKLOG)?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            upstreams,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            blackhole_new: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            chunks_up: AtomicU64::new(0),
            chunks_down: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            upstream_failures: AtomicU64::new(0),
            slowest_upstream_connect_us: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, inner.clone()));
        Ok(Self {
            addr,
            inner,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:PORT/ws` for clients.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Black-hole new connections (true: accepted, never forwarded, held open and
    /// silent) or forward them (false, the default).
    pub fn set_blackhole_new(&self, on: bool) {
        self.inner.blackhole_new.store(on, Ordering::SeqCst);
    }

    /// Delays everything forwarded from now on by `delay` (zero: no extra delay), in
    /// order, as a congested link would: a latency spike.
    pub fn set_delay(&self, delay: Duration) {
        self.inner
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Ids of the connections alive now.
    pub fn connection_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Live connections (including broken ones whose sockets are still held open).
    pub fn connection_count(&self) -> usize {
        self.lock().len()
    }

    /// Applies `action` to one connection. False if it is gone.
    pub fn apply(&self, id: u64, action: Action) -> bool {
        self.lock()
            .get(&id)
            .is_some_and(|tx| tx.send(action).is_ok())
    }

    /// Applies `action` to every live connection at once; returns how many.
    pub fn apply_all(&self, action: Action) -> usize {
        let conns = self.lock();
        conns.values().filter(|tx| tx.send(action).is_ok()).count()
    }

    pub fn traffic(&self) -> Traffic {
        let i = &self.inner;
        Traffic {
            bytes_up: i.bytes_up.load(Ordering::Relaxed),
            bytes_down: i.bytes_down.load(Ordering::Relaxed),
            chunks_up: i.chunks_up.load(Ordering::Relaxed),
            chunks_down: i.chunks_down.load(Ordering::Relaxed),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::Relaxed)
    }

    /// Connections whose upstream connect failed.
    pub fn upstream_failures(&self) -> u64 {
        self.inner.upstream_failures.load(Ordering::Relaxed)
    }

    /// The slowest connect to the upstream so far (a full accept queue shows as ~1 s,
    /// the first SYN retransmission).
    pub fn slowest_upstream_connect(&self) -> Duration {
        Duration::from_micros(
            self.inner
                .slowest_upstream_connect_us
                .load(Ordering::Relaxed),
        )
    }

    /// Stops accepting and resets every connection.
    pub async fn shutdown(self) {
        self.accept.abort();
        self.apply_all(Action::Reset);
        // Give the connection tasks a moment to drop their sockets.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.connection_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<Action>>> {
        self.inner
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let client = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                // Out of file descriptors or similar: back off briefly rather than spin.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        inner.accepted.fetch_add(1, Ordering::Relaxed);
        let blackhole = inner.blackhole_new.load(Ordering::SeqCst);
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        inner
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, tx);
        let inner = inner.clone();
        tokio::spawn(async move {
            if blackhole {
                hold(client, rx).await;
            } else {
                serve(&inner, client, rx).await;
            }
            inner
                .conns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id);
        });
    }
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Forwarding,
    /// Closed cleanly by us: waiting for both peers to close their side.
    Closing,
    /// Silent: the given sides are still held open and read into the void.
    Silent,
}

async fn serve(inner: &Inner, client: TcpStream, mut ctl: mpsc::UnboundedReceiver<Action>) {
    let started = std::time::Instant::now();
    let mut connected = None;
    for upstream in &inner.upstreams {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(upstream)).await
        {
            connected = Some(s);
            break;
        }
    }
    let Some(server) = connected else {
        inner.upstream_failures.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_zero_linger();
        return;
    };
    let us = started.elapsed().as_micros() as u64;
    inner
        .slowest_upstream_connect_us
        .fetch_max(us, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut client = Some(client);
    let mut server = Some(server);
    let mut cbuf = vec![0u8; CHUNK];
    let mut sbuf = vec![0u8; CHUNK];
    let mut state = State::Forwarding;
    // A side that reached EOF (its peer shut down writing) is not read again.
    let mut client_eof = false;
    let mut server_eof = false;
    let mut linger_until: Option<tokio::time::Instant> = None;
    loop {
        let done = match state {
            State::Forwarding => client_eof && server_eof,
            State::Closing | State::Silent => {
                (client.is_none() || client_eof) && (server.is_none() || server_eof)
            }
        };
        if done {
            return;
        }
        let linger = async {
            match linger_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            action = ctl.recv() => {
                let Some(action) = action else { return };
                match action {
                    Action::Reset => {
                        for s in [client.take(), server.take()].into_iter().flatten() {
                            let _ = s.set_zero_linger();
                        }
                        return;
                    }
                    Action::Close => {
                        if state == State::Forwarding {
                            for s in [client.as_mut(), server.as_mut()].into_iter().flatten() {
                                let _ = s.shutdown().await;
                            }
                            state = State::Closing;
                            linger_until = Some(tokio::time::Instant::now() + LINGER);
                        }
                    }
                    Action::HalfOpen => {
                        if let Some(c) = client.take() {
                            let _ = c.set_zero_linger();
                        }
                        state = State::Silent;
                    }
                    Action::Blackhole => state = State::Silent,
                }
            }
            r = read_some(client.as_mut(), &mut cbuf), if !client_eof && client.is_some() => {
                match r {
                    Ok(0) => {
                        client_eof = true;
                        if state == State::Forwarding {
                            if let Some(s) = server.as_mut() {
                                let _ = s.shutdown().await;
                            }
                        }
                    }
                    Ok(n) => {
                        delay(inner).await;
                        if state == State::Forwarding {
                            let Some(s) = server.as_mut() else { return };
                            if s.write_all(&cbuf[..n]).await.is_err() {
                                return;
                            }
                            inner.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
                            inner.chunks_up.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        if state == State::Forwarding {
                            // Mirror the reset to the server.
                            if let Some(s) = server.take() {
                                let _ = s.set_zero_linger();
                            }
                            return;
                        }
                        client = None;
                    }
                }
            }
            r = read_some(server.as_mut(), &mut sbuf), if !server_eof && server.is_some() => {
                match r {
                    Ok(0) => {
                        server_eof = true;
                        if state == State::Forwarding {
                            if let Some(c) = client.as_mut() {
                                let _ = c.shutdown().await;
                            }
                        }
                    }
                    Ok(n) => {
                        delay(inner).await;
                        if state == State::Forwarding {
                            let Some(c) = client.as_mut() else { return };
                            if c.write_all(&sbuf[..n]).await.is_err() {
                                return;
                            }
                            inner.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
                            inner.chunks_down.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        if state == State::Forwarding {
                            if let Some(c) = client.take() {
                                let _ = c.set_zero_linger();
                            }
                            return;
                        }
                        server = None;
                    }
                }
            }
            _ = linger => return,
        }
    }
}

/// A black-holed new connection: read into the void until told otherwise or closed.
async fn hold(mut client: TcpStream, mut ctl: mpsc::UnboundedReceiver<Action>) {
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            action = ctl.recv() => match action {
                Some(Action::Reset) | None => {
                    let _ = client.set_zero_linger();
                    return;
                }
                Some(Action::Close) => return,
                Some(Action::HalfOpen | Action::Blackhole) => {}
            },
            r = client.read(&mut buf) => {
                if !matches!(r, Ok(n) if n > 0) {
                    return;
                }
            }
        }
    }
}

/// A latency spike's delay, if one is on.
async fn delay(inner: &Inner) {
    let ms = inner.delay_ms.load(Ordering::Relaxed);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

async fn read_some(stream: Option<&mut TcpStream>, buf: &mut [u8]) -> io::Result<usize> {
    match stream {
        Some(s) => s.read(buf).await,
        None => std::future::pending().await,
    }
}
