//! The actor: one task owns the [`ServerEngine`], feeds it commands from the socket
//! tasks and the HTTP handlers, drains its outputs to the socket writers and sleeps
//! until its next timer.
//!
//! # Acknowledge only what is durable
//!
//! With a durable store ([`Durable`]), the actor writes the records each batch of
//! inputs changed (one atomic write: a script that checks the store's lease, then
//! writes; see `super::store::lease`) and holds the batch's outputs until Redis
//! answered OK: a welcome, an acknowledgement or a message is on the wire only once
//! what it tells the client is in Redis. Up to [`PIPELINE_DEPTH`] writes are in flight
//! at once, in order on one connection, so a message does not wait for the write
//! before its own to be answered; when that many are in flight, inputs handled
//! meanwhile form the next batch (group commit), so a busy server writes larger
//! batches rather than more of them. Outputs leave in the order the engine produced
//! them; an input that changed nothing durable waits only for the writes before it.
//! A change that no output waits for (an acknowledgement that trims a replay list)
//! waits for the next write that something needs, or [`LAZY_WRITE`] at most.
//! A failed write fails every write in flight after it too (they were built on the
//! assumption that it applied): all their changes are written again, together, once
//! the pipeline is empty.
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
use futures_util::stream::{FuturesOrdered, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
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

/// The actor's mailbox as socket tasks and HTTP handlers hold it. Every command is
/// stamped with the time it was sent, and the engine handles it as of that time: when
/// the actor falls behind (a reconnect storm on a busy machine), a hello or a ping that
/// waited in the queue counts from when it arrived, and no timer fires ahead of an
/// input that arrived before its deadline. So the server never declares a link dead,
/// or a hello late, because of its own backlog.
#[derive(Clone)]
pub(crate) struct ActorTx(mpsc::UnboundedSender<(u64, Cmd)>);

/// The actor's end of its mailbox.
pub(crate) type ActorRx = mpsc::UnboundedReceiver<(u64, Cmd)>;

impl ActorTx {
    pub(crate) fn channel() -> (ActorTx, ActorRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ActorTx(tx), rx)
    }

    /// Queues `cmd`; fails when the actor is gone.
    pub(crate) fn send(&self, cmd: Cmd) -> Result<(), Cmd> {
        self.0.send((now_ms(), cmd)).map_err(|e| e.0 .1)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.0.is_closed()
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
    /// Test hook: the actor handles nothing for this long, as on a busy machine.
    Stall(Duration),
    /// Another process took the store's lease (its node): this one must stop serving.
    LeaseLost(String),
}

/// Why [`Actor::run`] returned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ActorExit {
    /// A graceful shutdown: everything that could be written was, and the lease is
    /// released.
    Shutdown,
    /// Another process holds the store now (its node): nothing this one holds may be
    /// written or acknowledged any more.
    LeaseLost(String),
    /// The Redis database holds the state of the other kind of server (why): nothing
    /// was read or written.
    WrongLayout(String),
}

/// Why a write failed.
#[derive(Debug)]
enum WriteError {
    /// Another process holds the lease (its node): the write did nothing.
    Fenced(String),
    /// Redis is slow, away or refused it: retried.
    Failed(String),
}

/// First and longest pause between two attempts to write to an unavailable store.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Most commands handled between two flushes.
const BATCH: usize = 256;
/// Most store writes in flight at once.
const PIPELINE_DEPTH: usize = 4;
/// Longest a change that nothing waits for (a client's acknowledgement trimming a
/// replay list, a timer that told nobody) stays unwritten: such changes join the next
/// write that something waits for, so that a busy server does not spend a round trip
/// on each acknowledgement. Losing them in a crash loses nothing anyone was told: a
/// replay list that still holds acknowledged messages replays them, and the client
/// drops what it has already seen by its sequence number.
const LAZY_WRITE: Duration = Duration::from_millis(50);
/// How long a graceful shutdown waits for the last writes.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// A write in flight: its batch number, the batch, and what Redis answered.
type Write = Pin<Box<dyn Future<Output = (u64, Batch, Result<Duration, WriteError>)> + Send>>;

/// The durable side of the actor: what is being written and what waits for it.
pub(crate) struct Durable {
    redis: RedisStore,
    health: Arc<StoreHealth>,
    /// Changed records not yet in a batch.
    pending: Changes,
    /// Since when `pending` has had something in it.
    pending_since: Option<Instant>,
    /// An output, a logout's answer or a failed write's outputs wait for `pending`:
    /// it is written as soon as the pipeline allows, not after [`LAZY_WRITE`].
    pending_awaited: bool,
    /// A graceful shutdown: everything pending is written at once.
    draining: bool,
    /// The batches being written, oldest first (they complete in this order).
    inflight: FuturesOrdered<Write>,
    /// Number of the last batch built; batches are numbered from 1.
    built: u64,
    /// Number of the last batch Redis acknowledged (and every batch before it).
    written: u64,
    /// After a failed write: batches up to this number count as failed whatever
    /// Redis answers them.
    failed_upto: u64,
    /// Outputs waiting for the batch of this number (or an earlier one) to be written,
    /// and since when.
    held: VecDeque<(u64, Instant, Output)>,
    /// Answers to logouts over HTTP, held the same way.
    held_byes: VecDeque<(u64, oneshot::Sender<ByeOutcome>, ByeOutcome)>,
    /// After a failed write: when to try again, and the pause after that.
    retry_at: Option<Instant>,
    backoff: Duration,
    stats: StoreStats,
    /// Renews the store's lease while this process holds it.
    renewal: Option<tokio::task::JoinHandle<()>>,
    /// The lease was lost to this node: stop.
    lost: Option<String>,
}

impl Durable {
    pub(crate) fn new(redis: RedisStore, health: Arc<StoreHealth>, stats: StoreStats) -> Self {
        health.set_ready(true);
        Self {
            redis,
            health,
            pending: Changes::default(),
            pending_since: None,
            pending_awaited: false,
            draining: false,
            inflight: FuturesOrdered::new(),
            built: 0,
            written: 0,
            failed_upto: 0,
            held: VecDeque::new(),
            held_byes: VecDeque::new(),
            retry_at: None,
            backoff: RETRY_FIRST,
            stats,
            renewal: None,
            lost: None,
        }
    }

    /// Keeps the lease renewed by `task` until the store is released or lost.
    pub(crate) fn renewing(mut self, task: tokio::task::JoinHandle<()>) -> Self {
        self.renewal = Some(task);
        self
    }

    /// The process stops holding the store: renewal ends, and the lease goes to a
    /// standby at once (without waiting for it to expire).
    async fn release(&mut self) {
        if let Some(task) = self.renewal.take() {
            task.abort();
        }
        if let Some(lease) = self.redis.lease().cloned() {
            let mut conn = self.redis.connection();
            match lease.release(&mut conn).await {
                Ok(()) => tracing::info!(node = lease.node(), "store lease released"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not release the store lease: a standby takes over when it expires")
                }
            }
        }
    }

    /// When the actor must next call [`Actor::flush`] though no input came: a retry
    /// after a failed write, or the end of a change's [`LAZY_WRITE`] wait.
    /// None while a write in flight must finish first (its end wakes the actor).
    fn wake_at(&self) -> Option<Instant> {
        if self.inflight.len() >= PIPELINE_DEPTH
            || (self.retry_at.is_some() && !self.inflight.is_empty())
        {
            return None;
        }
        let since = self.pending_since?;
        let ready = if self.pending_awaited || self.draining {
            since
        } else {
            since + LAZY_WRITE
        };
        Some(self.retry_at.map_or(ready, |at| at.max(ready)))
    }

    /// `changes` join the pending batch.
    fn add_pending(&mut self, changes: Changes) {
        self.pending.merge(changes);
        if !self.pending.is_empty() && self.pending_since.is_none() {
            self.pending_since = Some(Instant::now());
        }
    }

    /// A batch that did not apply: its changes are pending again, and written as soon
    /// as they can be when anything held waits for them.
    fn requeue(&mut self, batch: Batch) {
        self.redis.failed(&batch);
        self.add_pending(batch.changes);
        self.pending_awaited |= !self.held.is_empty() || !self.held_byes.is_empty();
    }

    /// Nothing is waiting to be written or released.
    fn idle(&self) -> bool {
        self.pending.is_empty()
            && self.inflight.is_empty()
            && self.held.is_empty()
            && self.held_byes.is_empty()
    }
}

pub(crate) struct Actor {
    pub(crate) engine: ServerEngine<MemoryStore>,
    /// The engine's time (ms since the epoch): the send time of the command being
    /// handled, or the wall clock when none waits; never goes back.
    pub(crate) clock: u64,
    pub(crate) writers: HashMap<ConnId, Writer>,
    /// `Some` with a durable store: outputs are held until their batch is written.
    pub(crate) durable: Option<Durable>,
}

/// Sleeps until the epoch-ms deadline `at` (an engine's next timer), or forever.
pub(crate) async fn sleep_until_ms(at: Option<u64>) {
    match at {
        Some(at) => {
            let wait = at.saturating_sub(now_ms());
            tokio::time::sleep(Duration::from_millis(wait)).await
        }
        None => std::future::pending().await,
    }
}

/// Waits for the oldest write in flight (forever when none is).
async fn write_done(
    inflight: Option<&mut FuturesOrdered<Write>>,
) -> (u64, Batch, Result<Duration, WriteError>) {
    match inflight {
        Some(w) if !w.is_empty() => match w.next().await {
            Some(done) => done,
            None => std::future::pending().await,
        },
        _ => std::future::pending().await,
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
                    d.add_pending(changes);
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
                            out => {
                                d.pending_awaited |= tag > d.built;
                                d.held.push_back((tag, Instant::now(), out));
                            }
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
            let now = self.clock;
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
            d.pending_awaited |= tag > d.built;
            d.held_byes.push_back((tag, reply, outcome));
            self.start_write();
        }
    }

    /// Outputs whose batch is written go to their sockets, in order.
    fn release(&mut self) -> Vec<ConnId> {
        let mut ready = Vec::new();
        if let Some(d) = self.durable.as_mut() {
            while d.held.front().is_some_and(|(tag, ..)| *tag <= d.written) {
                if let Some((_, since, out)) = d.held.pop_front() {
                    d.stats.hold_seconds.observe(since.elapsed().as_secs_f64());
                    ready.push(out);
                }
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

    /// Starts writing the pending changes unless the pipeline is full, a retry waits,
    /// or nothing waits for them yet (see [`LAZY_WRITE`]).
    fn start_write(&mut self) {
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        if d.pending.is_empty() || d.inflight.len() >= PIPELINE_DEPTH {
            return;
        }
        let lazy_over = d
            .pending_since
            .is_some_and(|since| since.elapsed() >= LAZY_WRITE);
        if !(d.pending_awaited || d.draining || lazy_over) {
            return;
        }
        if let Some(at) = d.retry_at {
            // After a failure the retry waits for every write still in flight (they
            // count as failed), so that it carries all of their changes.
            if !d.inflight.is_empty() || Instant::now() < at {
                return;
            }
            d.retry_at = None;
        }
        d.built += 1;
        let no = d.built;
        d.pending_since = None;
        d.pending_awaited = false;
        let batch = d
            .redis
            .build(self.engine.store(), std::mem::take(&mut d.pending));
        let mut conn = d.redis.connection();
        d.inflight.push_back(Box::pin(async move {
            let result = batch.execute(&mut conn).await.map_err(|e| {
                match super::store::lease::fenced_by(&e) {
                    Some(node) => WriteError::Fenced(node),
                    None => WriteError::Failed(e.to_string()),
                }
            });
            (no, batch, result)
        }));
    }

    /// A write finished.
    fn written(&mut self, no: u64, batch: Batch, result: Result<Duration, WriteError>) {
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        // Built on the assumption that a write that failed before it applied.
        let result = match result {
            Ok(_) if no <= d.failed_upto => Err(None),
            Ok(took) => Ok(took),
            Err(WriteError::Fenced(node)) => {
                // Nothing of this batch, or of any after it, may be written or
                // acknowledged: the new holder loaded the state without it.
                tracing::error!(holder = %node, "another process holds the store now: this one stops serving");
                d.lost = Some(node);
                return;
            }
            Err(WriteError::Failed(e)) => Err(Some(e)),
        };
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
            Err(None) => d.requeue(batch),
            Err(Some(e)) => {
                d.requeue(batch);
                d.failed_upto = d.built;
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
        if let Some(d) = self.durable.as_mut() {
            d.draining = true;
        }
        self.flush();
        while self
            .durable
            .as_ref()
            .is_some_and(|d| !d.idle() && d.lost.is_none())
        {
            let retry_at = self.durable.as_ref().and_then(|d| d.retry_at);
            let Some(d) = self.durable.as_mut() else {
                return;
            };
            tokio::select! {
                (no, batch, result) = write_done(Some(&mut d.inflight)) => self.written(no, batch, result),
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

    /// The engine's time with nothing waiting in the queue: the wall clock.
    fn tick(&mut self) -> u64 {
        self.clock = self.clock.max(now_ms());
        self.clock
    }

    pub(crate) async fn run(mut self, mut rx: ActorRx) -> ActorExit {
        loop {
            if let Some(node) = self.durable.as_mut().and_then(|d| d.lost.take()) {
                return ActorExit::LeaseLost(node);
            }
            let sleep = sleep_until_ms(self.engine.poll_timeout());
            let wake_at = self.durable.as_ref().and_then(Durable::wake_at);
            let wake = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let inflight = self.durable.as_mut().map(|d| &mut d.inflight);
            // Biased: finished writes first (they release held outputs), then inputs,
            // and timers only when no input waits (a batch fires the timers due as of
            // its own inputs).
            tokio::select! {
                biased;
                (no, batch, result) = write_done(inflight) => self.written(no, batch, result),
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return ActorExit::Shutdown };
                    if let std::ops::ControlFlow::Break(exit) = self.handle_batch(cmd, &mut rx).await {
                        return exit;
                    }
                }
                _ = wake => self.flush(),
                _ = sleep => {
                    let now = self.tick();
                    self.engine.handle_timeout(now);
                    self.flush();
                }
            }
        }
    }

    /// Handles `first` and whatever else is already queued (up to [`BATCH`]), then
    /// flushes once and fires the timers that came due meanwhile. Under a storm of
    /// reconnects the queue is long: one flush and one timer re-arm per batch instead of
    /// per command is what keeps the engine ahead of it. While commands still wait,
    /// timers fire only up to the send time of the last one handled (see [`ActorTx`]):
    /// every input sent before such a deadline has been handled.
    async fn handle_batch(
        &mut self,
        first: (u64, Cmd),
        rx: &mut ActorRx,
    ) -> std::ops::ControlFlow<ActorExit> {
        let mut next = Some(first);
        let mut handled = 0;
        while let Some((sent, cmd)) = next.take() {
            self.clock = self.clock.max(sent);
            if let std::ops::ControlFlow::Break(exit) = self.handle_cmd(cmd).await {
                return std::ops::ControlFlow::Break(exit);
            }
            handled += 1;
            if handled < BATCH {
                next = rx.try_recv().ok();
            }
        }
        self.flush();
        let now = if rx.is_empty() {
            self.tick()
        } else {
            self.clock
        };
        if self.engine.poll_timeout().is_some_and(|at| at <= now) {
            self.engine.handle_timeout(now);
            self.flush();
        }
        std::ops::ControlFlow::Continue(())
    }

    /// One command from a socket task or an HTTP handler. `Break` after a shutdown, or
    /// when the store's lease is lost.
    async fn handle_cmd(&mut self, cmd: Cmd) -> std::ops::ControlFlow<ActorExit> {
        let now = self.clock;
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
                    cluster: None,
                    txns: None,
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
            Cmd::Stall(pause) => tokio::time::sleep(pause).await,
            Cmd::Shutdown(reply) => {
                self.engine.shutdown(now);
                self.flush();
                self.drain().await;
                if let Some(d) = self.durable.as_mut() {
                    if let Some(node) = d.lost.take() {
                        let _ = reply.send(());
                        return std::ops::ControlFlow::Break(ActorExit::LeaseLost(node));
                    }
                    d.release().await;
                }
                let _ = reply.send(());
                return std::ops::ControlFlow::Break(ActorExit::Shutdown);
            }
            Cmd::LeaseLost(node) => {
                tracing::error!(holder = %node, "the store's lease went to another process: this one stops serving");
                return std::ops::ControlFlow::Break(ActorExit::LeaseLost(node));
            }
        }
        std::ops::ControlFlow::Continue(())
    }
}
