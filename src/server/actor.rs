//! The actor: one task owns the [`ServerEngine`], feeds it commands from the socket
//! tasks and the HTTP handlers, drains its outputs to the socket writers and sleeps
//! until its next timer.
//!
//! # Acknowledge only what is durable
//!
//! With a durable store ([`Durable`]), the actor writes the records each batch of
//! inputs changed (one `MULTI … EXEC`) and holds the batch's outputs until Redis
//! answered OK: a welcome, an acknowledgement or a message is on the wire only once
//! what it tells the client is in Redis. One write is in flight at a time; inputs
//! handled meanwhile form the next batch (group commit), so a busy server writes
//! larger batches rather than more of them. Outputs leave in the order the engine
//! produced them; an input that changed nothing durable waits only for the writes
//! before it.
//!
//! Pongs are the exception: they answer at once, so that clients do not declare
//! their links dead while Redis is slow or away, with their `ack` lowered to what
//! Redis has of that session (a pong never acknowledges a message whose effects are
//! not durable yet). While Redis is away, nothing else is released, `/readyz` and
//! `/healthz` say so, and writes are retried with backoff; when it returns, the
//! latest records of everything that changed are written and the held outputs go.

use super::metrics::MetricsSnapshot;
use super::now_ms;
use super::socket::Writer;
use super::store::redis::{Batch, RedisStore};
use super::store::{StoreHealth, StoreStats};
use crate::engine::server::{ByeOutcome, ConnId, Output, ServerEngine};
use crate::engine::store::{Changes, MemoryStore};
use crate::engine::Entropy;
use crate::protocol::{BadFrame, ClientFrame, ServerFrame};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Operating-system randomness for session ids, resume secrets and rejoin tokens.
pub(crate) struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        // The OS CSPRNG does not fail on supported platforms; if it ever did, serving
        // predictable tokens would be worse than stopping.
        getrandom::getrandom(buf).expect("the operating system's random source failed");
    }
}

/// What a socket's task is told. Frames are boxed so a queued item is one pointer.
pub(crate) enum Outbound {
    Frame(Box<ServerFrame>),
    Close,
}

pub(crate) enum Cmd {
    Open {
        writer: Writer,
        /// The client's IP for per-IP budgets (`None`: exempt).
        ip: Option<std::net::IpAddr>,
        reply: oneshot::Sender<ConnId>,
    },
    Frame(ConnId, Result<ClientFrame, BadFrame>),
    Closed(ConnId),
    Metrics(oneshot::Sender<MetricsSnapshot>),
    DropUser(String, oneshot::Sender<usize>),
    /// A logout over HTTP (`POST /ws/bye`): answers once what it did is durable.
    Bye {
        request: super::http::ByeRequest,
        reply: oneshot::Sender<ByeOutcome>,
    },
    Shutdown(oneshot::Sender<()>),
    /// Test hook: the actor panics, as a bug in the engine would make it.
    Crash,
}

/// First and longest pause between two attempts to write to an unavailable store.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Most commands handled between two flushes.
const BATCH: usize = 256;
/// How long a graceful shutdown waits for the last writes.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

type Write = JoinHandle<(Batch, Result<Duration, redis::RedisError>)>;

/// The durable side of the actor: what is being written and what waits for it.
pub(crate) struct Durable {
    redis: RedisStore,
    health: Arc<StoreHealth>,
    /// Changed records not yet in a batch.
    pending: Changes,
    /// The batch being written, and its number.
    inflight: Option<(u64, Write)>,
    /// Number of the last batch built; batches are numbered from 1.
    built: u64,
    /// Number of the last batch Redis acknowledged.
    written: u64,
    /// Outputs waiting for the batch of this number (or an earlier one) to be written.
    held: VecDeque<(u64, Output)>,
    /// Answers to logouts over HTTP, held the same way.
    held_byes: VecDeque<(u64, oneshot::Sender<ByeOutcome>, ByeOutcome)>,
    /// After a failed write: when to try again, and the pause after that.
    retry_at: Option<Instant>,
    backoff: Duration,
    stats: StoreStats,
}

impl Durable {
    pub(crate) fn new(redis: RedisStore, health: Arc<StoreHealth>, stats: StoreStats) -> Self {
        health.set_ready(true);
        Self {
            redis,
            health,
            pending: Changes::default(),
            inflight: None,
            built: 0,
            written: 0,
            held: VecDeque::new(),
            held_byes: VecDeque::new(),
            retry_at: None,
            backoff: RETRY_FIRST,
            stats,
        }
    }

    /// Nothing is waiting to be written or released.
    fn idle(&self) -> bool {
        self.pending.is_empty()
            && self.inflight.is_none()
            && self.held.is_empty()
            && self.held_byes.is_empty()
    }
}

pub(crate) struct Actor {
    pub(crate) engine: ServerEngine<MemoryStore>,
    pub(crate) writers: HashMap<ConnId, Writer>,
    /// `Some` with a durable store: outputs are held until their batch is written.
    pub(crate) durable: Option<Durable>,
}

/// Waits for the write in flight, if any.
async fn write_done(inflight: &mut Option<(u64, Write)>) -> (u64, Batch, Result<Duration, String>) {
    match inflight {
        Some((no, handle)) => {
            let no = *no;
            match handle.await {
                Ok((batch, result)) => (no, batch, result.map_err(|e| e.to_string())),
                // The write task does not panic; if it ever did, the records are rebuilt
                // and written again.
                Err(e) => {
                    let _ = e;
                    std::future::pending().await
                }
            }
        }
        None => std::future::pending().await,
    }
}

impl Actor {
    /// Hands one output to its socket. Returns a socket to treat as dead (its queue is
    /// full).
    fn deliver(&mut self, out: Output) -> Option<ConnId> {
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
                    return Some(conn);
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
        None
    }

    /// After every input: collects what changed, hands the outputs on (at once, or held
    /// for their batch), starts a write and releases what is durable.
    fn flush(&mut self) {
        loop {
            let changes = self.engine.store().take_changes();
            let mut dead = Vec::new();
            match self.durable.as_mut() {
                None => {
                    while let Some(out) = self.engine.poll_output() {
                        dead.extend(self.deliver(out));
                    }
                }
                Some(d) => {
                    d.pending.merge(changes);
                    // This input's outputs need the batch its changes go into, or (if
                    // it changed nothing) only the batches before.
                    let tag = if d.pending.is_empty() {
                        d.built
                    } else {
                        d.built + 1
                    };
                    let mut now_out = Vec::new();
                    while let Some(out) = self.engine.poll_output() {
                        match out {
                            Output::Send {
                                conn,
                                frame: ServerFrame::Pong { ack },
                            } => {
                                let durable = self
                                    .engine
                                    .session_of_conn(conn)
                                    .map_or(0, |s| d.redis.durable_in_seq(s));
                                now_out.push(Output::Send {
                                    conn,
                                    frame: ServerFrame::Pong {
                                        ack: ack.min(durable),
                                    },
                                });
                            }
                            out if d.held.is_empty() && tag <= d.written => now_out.push(out),
                            out => d.held.push_back((tag, out)),
                        }
                    }
                    for out in now_out {
                        dead.extend(self.deliver(out));
                    }
                    self.start_write();
                    dead.extend(self.release());
                }
            }
            if dead.is_empty() {
                return;
            }
            let now = now_ms();
            for conn in dead {
                self.engine.handle_close(conn, now);
            }
        }
    }

    /// A logout over HTTP is answered once the session's end is written (its changes
    /// were just flushed into the pending or the in-flight batch).
    fn answer_bye_when_durable(&mut self, reply: oneshot::Sender<ByeOutcome>, outcome: ByeOutcome) {
        let Some(d) = self.durable.as_mut() else {
            let _ = reply.send(outcome);
            return;
        };
        let tag = if d.pending.is_empty() {
            d.built
        } else {
            d.built + 1
        };
        if tag <= d.written {
            let _ = reply.send(outcome);
        } else {
            d.held_byes.push_back((tag, reply, outcome));
        }
    }

    /// Outputs whose batch is written go to their sockets, in order.
    fn release(&mut self) -> Vec<ConnId> {
        let mut ready = Vec::new();
        if let Some(d) = self.durable.as_mut() {
            while d.held.front().is_some_and(|(tag, _)| *tag <= d.written) {
                ready.extend(d.held.pop_front().map(|(_, out)| out));
            }
            while d
                .held_byes
                .front()
                .is_some_and(|(tag, ..)| *tag <= d.written)
            {
                if let Some((_, reply, outcome)) = d.held_byes.pop_front() {
                    let _ = reply.send(outcome);
                }
            }
        }
        ready
            .into_iter()
            .filter_map(|out| self.deliver(out))
            .collect()
    }

    /// Starts writing the pending changes unless a write is in flight or a retry waits.
    fn start_write(&mut self) {
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        if d.inflight.is_some() || d.pending.is_empty() {
            return;
        }
        if d.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        d.retry_at = None;
        d.built += 1;
        let batch = d
            .redis
            .build(self.engine.store(), std::mem::take(&mut d.pending));
        let mut conn = d.redis.connection();
        let handle = tokio::spawn(async move {
            let result = batch.execute(&mut conn).await;
            (batch, result)
        });
        d.inflight = Some((d.built, handle));
    }

    /// A write finished.
    fn written(&mut self, no: u64, batch: Batch, result: Result<Duration, String>) {
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        d.inflight = None;
        match result {
            Ok(took) => {
                d.redis.written(&batch);
                d.written = no;
                d.stats.observe_write(took.as_secs_f64(), batch.records);
                d.backoff = RETRY_FIRST;
                if d.stats.unavailable {
                    d.stats.unavailable = false;
                    tracing::info!("store available again: releasing held messages");
                }
                d.health.set_ready(true);
            }
            Err(e) => {
                d.redis.failed(&batch);
                let mut again = batch.changes.clone();
                again.merge(std::mem::take(&mut d.pending));
                d.pending = again;
                d.stats.errors += 1;
                if !d.stats.unavailable {
                    d.stats.unavailable = true;
                    tracing::warn!(error = %e, held = d.held.len(), "store write failed: holding acknowledgements until it is back");
                } else {
                    tracing::debug!(error = %e, "store write failed again");
                }
                d.health.set_ready(false);
                d.retry_at = Some(Instant::now() + d.backoff);
                d.backoff = (d.backoff * 2).min(RETRY_MAX);
            }
        }
        self.flush();
    }

    /// Graceful shutdown with a durable store: write what is left and release it,
    /// giving up after [`SHUTDOWN_FLUSH`] (what is not written was never acknowledged).
    async fn drain(&mut self) {
        let give_up = Instant::now() + SHUTDOWN_FLUSH;
        while self.durable.as_ref().is_some_and(|d| !d.idle()) {
            let retry_at = self.durable.as_ref().and_then(|d| d.retry_at);
            let Some(d) = self.durable.as_mut() else {
                return;
            };
            tokio::select! {
                (no, batch, result) = write_done(&mut d.inflight) => self.written(no, batch, result),
                _ = tokio::time::sleep_until(retry_at.unwrap_or(give_up).min(give_up)) => {
                    if Instant::now() >= give_up {
                        tracing::warn!("store unavailable at shutdown: unwritten changes were never acknowledged");
                        return;
                    }
                    self.flush();
                }
            }
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            let deadline = self.engine.poll_timeout();
            let retry_at = self.durable.as_ref().and_then(|d| d.retry_at);
            let sleep = async {
                match deadline {
                    Some(at) => {
                        let wait = at.saturating_sub(now_ms());
                        tokio::time::sleep(Duration::from_millis(wait)).await
                    }
                    None => std::future::pending().await,
                }
            };
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let mut no_write = None;
            let inflight = match self.durable.as_mut() {
                Some(d) => &mut d.inflight,
                None => &mut no_write,
            };
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return };
                    if self.handle_batch(cmd, &mut rx).await.is_break() {
                        return;
                    }
                }
                (no, batch, result) = write_done(inflight) => self.written(no, batch, result),
                _ = retry => self.flush(),
                _ = sleep => {
                    self.engine.handle_timeout(now_ms());
                    self.flush();
                }
            }
        }
    }

    /// Handles `first` and whatever else is already queued (up to [`BATCH`]), then
    /// flushes once and fires the timers that came due meanwhile. Under a storm of
    /// reconnects the queue is long: one flush and one timer re-arm per batch instead of
    /// per command is what keeps the engine ahead of it, so a hello waiting in the queue
    /// is not overtaken by its own timeout.
    async fn handle_batch(
        &mut self,
        first: Cmd,
        rx: &mut mpsc::UnboundedReceiver<Cmd>,
    ) -> std::ops::ControlFlow<()> {
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(cmd) = next.take() {
            if self.handle_cmd(cmd).await.is_break() {
                return std::ops::ControlFlow::Break(());
            }
            handled += 1;
            if handled < BATCH {
                next = rx.try_recv().ok();
            }
        }
        self.flush();
        let now = now_ms();
        if self.engine.poll_timeout().is_some_and(|at| at <= now) {
            self.engine.handle_timeout(now);
            self.flush();
        }
        std::ops::ControlFlow::Continue(())
    }

    /// One command from a socket task or an HTTP handler. `Break` after a shutdown.
    async fn handle_cmd(&mut self, cmd: Cmd) -> std::ops::ControlFlow<()> {
        let now = now_ms();
        match cmd {
            Cmd::Open { writer, ip, reply } => {
                let conn = self.engine.handle_open_from(ip, now);
                self.writers.insert(conn, writer);
                let _ = reply.send(conn);
            }
            Cmd::Frame(conn, Ok(frame)) => self.engine.handle_frame(conn, frame, now),
            Cmd::Frame(conn, Err(bad)) => self.engine.handle_bad_frame(conn, bad, now),
            Cmd::Closed(conn) => {
                // What the engine said to this socket earlier in the batch (an error
                // before the close, say) goes out before its writer is dropped.
                self.flush();
                self.writers.remove(&conn);
                self.engine.handle_close(conn, now);
            }
            Cmd::Metrics(reply) => {
                let _ = reply.send(MetricsSnapshot {
                    counters: self.engine.metrics().clone(),
                    counts: self.engine.counts(),
                    connections: self.engine.connection_count(),
                    store: self.durable.as_ref().map(|d| d.stats.clone()),
                });
            }
            Cmd::Bye { request, reply } => {
                let r = request;
                let outcome = self
                    .engine
                    .handle_bye_request(&r.token, &r.session, &r.secret, now);
                self.flush();
                self.answer_bye_when_durable(reply, outcome);
            }
            Cmd::DropUser(user, reply) => {
                let n = self.engine.drop_links_of(&user, now);
                tracing::info!(%user, sockets = n, "test hook: dropped links");
                let _ = reply.send(n);
            }
            Cmd::Crash => panic!("test hook: engine crash requested"),
            Cmd::Shutdown(reply) => {
                self.engine.shutdown(now);
                self.flush();
                self.drain().await;
                let _ = reply.send(());
                return std::ops::ControlFlow::Break(());
            }
        }
        std::ops::ControlFlow::Continue(())
    }
}
