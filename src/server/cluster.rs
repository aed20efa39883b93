//! The actor of a process that is one node of a cluster (`--cluster`): any number of
//! processes on one Redis serve as one server, all of them active (see
//! [`crate::engine::cluster`] for the design, [`super::store::shared`] for the keys).
//!
//! One task owns the [`ClusterNode`]: it feeds it the socket tasks' commands, offers
//! its transactions to Redis one at a time (inputs that arrive meanwhile form the next
//! one), hands the outputs of a transaction Redis took to the sockets, and in between
//! renews the node's lease, claims dead nodes and due deadlines, and reads the notes
//! other nodes left for it (their bell rings on the node's pub/sub channel).
//!
//! Nothing is released before Redis took the transaction that produced it: a welcome,
//! an acknowledgement, a message, a pong. When a commit's answer is lost (the
//! connection failed, or it took too long), the node asks Redis whether that
//! transaction was taken, by its number (`FENCE`, which also keeps it from being taken
//! later): if so, it is committed here as well; if not, the node undoes it, reloads
//! what it read and runs it again.

use super::actor::{sleep_until_ms, ActorExit, ActorRx, ActorTx, Cmd, Outbound};
use super::metrics::MetricsSnapshot;
use super::now_ms;
use super::socket::Writer;
use super::store::layout::{self, Layout, LayoutError};
use super::store::redis::{Keys, Windows, DEFAULT_NAMESPACE};
use super::store::shared::{RedisLedger, SharedError};
use super::store::StoreHealth;
use crate::engine::cluster::{ClusterNode, Committed, NodeNo, Note, Txn};
use crate::engine::server::{
    Authenticator, ByeOutcome, ConnId, Output, ServerConfig, ServerEngine,
};
use crate::engine::store::MemoryStore;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How often a node renews its lease, claims dead nodes and due deadlines, and looks
/// at its notes without the bell.
const TICK: Duration = Duration::from_millis(250);

/// How long a claimed deadline stays with its claimer before another node may claim
/// it again.
const CLAIM_MS: u64 = 2_000;

/// Pause after a failed Redis operation.
const RETRY: Duration = Duration::from_millis(100);

type Commit = Pin<Box<dyn Future<Output = (Txn, Result<Committed, SharedError>)> + Send>>;

/// Connects, joins the cluster and serves until shut down (see the module
/// documentation). Retries Redis with backoff until it answers; not ready meanwhile.
pub(crate) async fn run_node(
    url: String,
    config: ServerConfig,
    auth: Box<dyn Authenticator>,
    health: Arc<StoreHealth>,
    lease: Duration,
    (tx, rx): (ActorTx, ActorRx),
) -> ActorExit {
    let windows = Windows::from_config(&config);
    let mut pause = RETRY;
    let (ledger, client) = loop {
        match connect(&url, windows, config.replay_buffer).await {
            Ok(connected) => break connected,
            Err(LayoutError::Taken(why)) => return ActorExit::WrongLayout(why),
            Err(e) => {
                tracing::warn!(store = %url, error = %e, retry_in_ms = pause.as_millis() as u64, "cannot use Redis; not ready");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    };
    let mut ledger = ledger;
    let no = loop {
        match ledger.join(now_ms() + lease.as_millis() as u64).await {
            Ok(no) => break no,
            Err(e) => {
                tracing::warn!(error = %e, "cannot join the cluster; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    tracing::info!(store = %url, node = no, "joined the cluster");
    // Presence is cluster-wide: start knowing who is online.
    let online = loop {
        match ledger.online().await {
            Ok(online) => break online,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read who is online; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    let engine = ServerEngine::new(
        config,
        MemoryStore::with_change_tracking(true),
        auth,
        Box::new(super::actor::OsEntropy),
    );
    let mut node = ClusterNode::new(engine, no);
    node.handle_fresh(online);
    let renewal = tokio::spawn(renew_lease(ledger.clone(), no, lease, tx));
    let node = NodeActor {
        node,
        ledger,
        writers: HashMap::new(),
        byes: HashMap::new(),
        lease,
        commit: None,
        clock: now_ms(),
    };
    health.set_ready(true);
    let exit = node.run(rx, client).await;
    renewal.abort();
    exit
}

/// Renews the node's lease every third of its time, on its own task so that a busy
/// actor never lets it lapse; tells the actor when the node was declared dead.
async fn renew_lease(mut ledger: RedisLedger, no: NodeNo, lease: Duration, actor: ActorTx) {
    let mut every = tokio::time::interval(lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let until = now_ms() + lease.as_millis() as u64;
        match ledger.renew(no, until).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!(
                    node = no,
                    "this node's lease ran out and another node took its sessions; exiting"
                );
                let _ = actor.send(Cmd::LeaseLost(format!("node {no}")));
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew this node's lease"),
        }
    }
}

/// Connects and claims the database for a cluster ([`layout`]).
async fn connect(
    url: &str,
    windows: Windows,
    queue_limit: usize,
) -> Result<(RedisLedger, redis::Client), LayoutError> {
    let client = redis::Client::open(url)?;
    let mut conn = redis::aio::ConnectionManager::new(client.clone()).await?;
    layout::claim(&mut conn, DEFAULT_NAMESPACE, Layout::Cluster).await?;
    let keys = Keys::with_namespace(DEFAULT_NAMESPACE);
    Ok((RedisLedger::new(conn, keys, windows, queue_limit), client))
}

struct NodeActor {
    node: ClusterNode,
    ledger: RedisLedger,
    writers: HashMap<ConnId, Writer>,
    /// Logouts over HTTP waiting for their transaction, by ticket.
    byes: HashMap<u64, oneshot::Sender<ByeOutcome>>,
    lease: Duration,
    /// The transaction Redis has not answered yet.
    commit: Option<Commit>,
    /// The engine's time: never goes back.
    clock: u64,
}

/// Waits for the commit in flight (forever when none is).
async fn committed(commit: Option<&mut Commit>) -> (Txn, Result<Committed, SharedError>) {
    match commit {
        Some(c) => c.await,
        None => std::future::pending().await,
    }
}

impl NodeActor {
    fn tick(&mut self) -> u64 {
        self.clock = self.clock.max(now_ms());
        self.clock
    }

    async fn run(mut self, rx: ActorRx, client: redis::Client) -> ActorExit {
        let mut rx = rx;
        let mut bell = subscribe(&client, self.ledger.channel(self.node.no())).await;
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let sleep = sleep_until_ms(self.node.poll_timeout());
            let rung = async {
                match bell.as_mut() {
                    Some(b) => b.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                (txn, answer) = committed(self.commit.as_mut()) => {
                    self.commit = None;
                    self.answered(txn, answer).await;
                }
                _ = ticker.tick() => {
                    if bell.is_none() {
                        bell = subscribe(&client, self.ledger.channel(self.node.no())).await;
                    }
                    self.housekeeping().await;
                }
                rang = rung => {
                    if rang.is_none() {
                        // The subscription ended (Redis restarted): ticks read the
                        // notes until it is back.
                        bell = subscribe(&client, self.ledger.channel(self.node.no())).await;
                    }
                    self.read_notes().await;
                }
                cmd = rx.recv() => {
                    let Some((sent, cmd)) = cmd else { return ActorExit::Shutdown };
                    self.clock = self.clock.max(sent);
                    if let Some(exit) = self.handle_cmd(cmd, &mut rx).await {
                        return exit;
                    }
                    // Whatever else waits joins the same transaction.
                    while let Ok((sent, cmd)) = rx.try_recv() {
                        self.clock = self.clock.max(sent);
                        if let Some(exit) = self.handle_cmd(cmd, &mut rx).await {
                            return exit;
                        }
                    }
                }
                _ = sleep => self.node.handle_timeout(),
            }
            self.pump();
        }
    }

    /// Starts the next transaction unless one is in flight, and delivers what is
    /// released.
    fn pump(&mut self) {
        if self.commit.is_none() {
            let now = self.tick();
            if let Some(txn) = self.node.poll_txn(now) {
                let mut ledger = self.ledger.clone();
                self.commit = Some(Box::pin(async move {
                    let answer = ledger.commit(&txn).await;
                    (txn, answer)
                }));
            }
        }
        self.deliver();
    }

    fn deliver(&mut self) {
        let mut dead = Vec::new();
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Send { conn, frame } => {
                    let full = self
                        .writers
                        .get(&conn)
                        .is_some_and(|w| w.try_send(Outbound::Frame(Box::new(frame))).is_err());
                    if full {
                        // A socket that cannot keep up is treated as dead; its session
                        // resumes on a new socket.
                        if let Some(w) = self.writers.remove(&conn) {
                            let _ = w.try_send(Outbound::Close);
                        }
                        dead.push(conn);
                    }
                }
                Output::Close { conn, .. } => {
                    if let Some(w) = self.writers.remove(&conn) {
                        let _ = w.try_send(Outbound::Close);
                    }
                }
            }
        }
        for conn in dead {
            self.node.handle_close(conn);
        }
        while let Some((ticket, outcome)) = self.node.poll_bye() {
            if let Some(reply) = self.byes.remove(&ticket) {
                let _ = reply.send(outcome);
            }
        }
    }

    /// Redis answered a commit (or failed to).
    async fn answered(&mut self, txn: Txn, answer: Result<Committed, SharedError>) {
        match answer {
            Ok(answer) => self.node.handle_committed(answer),
            Err(e) => {
                // Taken or not, only Redis can tell: ask it (which also makes sure a
                // commit still on its way is not taken later), then fetch what it has.
                tracing::warn!(error = %e, "a commit's answer was lost; asking whether it was taken");
                let no = self.node.no();
                let (applied, fresh) = loop {
                    tokio::time::sleep(RETRY).await;
                    let applied = match self.ledger.fence(no, txn.seq).await {
                        Ok(applied) => applied,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot reach Redis; retrying");
                            continue;
                        }
                    };
                    match self.ledger.fetch(&txn.keys_to_fetch(applied)).await {
                        Ok(fresh) => break (applied, fresh),
                        Err(e) => tracing::warn!(error = %e, "cannot reach Redis; retrying"),
                    }
                };
                self.node.handle_answer_lost(applied, fresh);
            }
        }
    }

    /// What other nodes left for this one.
    async fn read_notes(&mut self) {
        let notes = match self.ledger.take_notes(self.node.no()).await {
            Ok(notes) => notes,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this node's notes");
                return;
            }
        };
        for note in notes {
            let done = match note {
                Note::Moved(sid) => {
                    let key = crate::engine::store::RecordKey::Session(sid);
                    self.ledger
                        .fetch(&[key])
                        .await
                        .map(|fresh| self.node.handle_fresh(fresh))
                }
                Note::Queued(sid) => self
                    .ledger
                    .queue(&sid)
                    .await
                    .map(|queue| self.node.handle_queued(sid, queue)),
                Note::Presence(user) => {
                    let key = crate::engine::store::RecordKey::User(user.clone());
                    self.ledger.fetch(&[key]).await.map(|fresh| {
                        self.node.handle_fresh(fresh);
                        self.node.handle_presence(user);
                    })
                }
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "cannot act on a note");
            }
        }
    }

    /// Claims dead nodes and due deadlines, reads notes.
    async fn housekeeping(&mut self) {
        let now = self.tick();
        match self.ledger.claim_lost(now).await {
            Ok(lost) => {
                for (no, sessions) in lost {
                    tracing::info!(
                        node = no,
                        sessions = sessions.len(),
                        "a node died: detaching its sessions"
                    );
                    self.node.handle_node_lost(no, sessions);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for dead nodes"),
        }
        match self.ledger.claim_due(now, CLAIM_MS).await {
            Ok(due) => {
                for key in due {
                    self.node.handle_due(key);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot claim due deadlines"),
        }
        self.read_notes().await;
    }

    /// One command from a socket task or an HTTP handler; `Some` to stop.
    async fn handle_cmd(&mut self, cmd: Cmd, rx: &mut ActorRx) -> Option<ActorExit> {
        match cmd {
            Cmd::Open { writer, ip, reply } => {
                let conn = self.node.handle_open(ip);
                self.writers.insert(conn, writer);
                let _ = reply.send(conn);
            }
            Cmd::Frame(conn, Ok(frame)) => self.node.handle_frame(conn, frame),
            Cmd::Frame(conn, Err(bad)) => self.node.handle_bad_frame(conn, bad),
            Cmd::Closed(conn) => {
                // What the node still says to this socket goes before its writer is
                // dropped (an error before the close, say).
                self.deliver();
                self.writers.remove(&conn);
                self.node.handle_close(conn);
            }
            Cmd::Metrics(reply) => {
                let cluster = match self.ledger.counts().await {
                    Ok(counts) => Some(counts),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the cluster's counts");
                        None
                    }
                };
                let engine = self.node.engine();
                let _ = reply.send(MetricsSnapshot {
                    counters: engine.metrics().clone(),
                    counts: engine.counts(),
                    connections: engine.connection_count(),
                    store: None,
                    cluster,
                    txns: Some(self.node.txns()),
                });
            }
            Cmd::Bye { request, reply } => {
                let r = request;
                let ticket = self
                    .node
                    .handle_bye_request(&r.token, &r.session, &r.secret);
                self.byes.insert(ticket, reply);
            }
            Cmd::DropUser(user, reply) => {
                tracing::warn!(%user, "test hook: dropping links is not available on a cluster node");
                let _ = reply.send(0);
            }
            Cmd::Crash => panic!("test hook: engine crash requested"),
            Cmd::Stall(pause) => tokio::time::sleep(pause).await,
            Cmd::Shutdown(reply) => {
                self.shutdown(rx).await;
                let _ = reply.send(());
                return Some(ActorExit::Shutdown);
            }
            Cmd::LeaseLost(node) => return Some(ActorExit::LeaseLost(node)),
        }
        None
    }

    /// SIGTERM: every socket is told `server-restarting` and closed once what the node
    /// holds is committed; the lease ends a lease time from now, so that whoever does
    /// not resume on another node by then is detached by the node that claims this one.
    async fn shutdown(&mut self, _rx: &mut ActorRx) {
        self.node.handle_shutdown();
        let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            self.pump();
            if !self.node.busy() && self.commit.is_none() {
                break;
            }
            if tokio::time::Instant::now() >= give_up {
                tracing::warn!(
                    "Redis did not take the last transactions: they were never acknowledged"
                );
                break;
            }
            if let Some(c) = self.commit.as_mut() {
                let (txn, answer) = c.await;
                self.commit = None;
                self.answered(txn, answer).await;
            }
        }
        self.deliver();
        let until = now_ms() + self.lease.as_millis() as u64;
        if let Err(e) = self.ledger.end_lease(self.node.no(), until).await {
            tracing::warn!(error = %e, "cannot end this node's lease; it runs out by itself");
        }
        tracing::info!(node = self.node.no(), "left the cluster");
    }
}

/// The node's bell: a pub/sub subscription to its channel (`None` while Redis is
/// away: the ticks read the notes meanwhile).
async fn subscribe(
    client: &redis::Client,
    channel: String,
) -> Option<Pin<Box<dyn futures_util::Stream<Item = redis::Msg> + Send>>> {
    let mut pubsub = match client.get_async_pubsub().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot subscribe to this node's channel");
            return None;
        }
    };
    if let Err(e) = pubsub.subscribe(&channel).await {
        tracing::warn!(error = %e, "cannot subscribe to this node's channel");
        return None;
    }
    Some(Box::pin(pubsub.into_on_message()))
}
