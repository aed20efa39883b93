//! The server side of a simulation as several cluster nodes over one shared store in
//! memory ([`MemoryLedger`]), for [`super::sim::Sim`]: each new socket goes to the next
//! live node, as a load balancer that knows nothing of sessions would send it.
//!
//! The shared store answers at once: after every input the nodes run their
//! transactions to the end, and what the store tells them (moved sessions, queued
//! messages) is handed over before anything else happens. A node that is killed
//! stops at once; its lease ends `LEASE_MS` later, and then a live node claims it.
#![allow(dead_code)]

use super::sim::TestRedis;
use holdfast::engine::cluster::{
    node_of_conn, ClusterNode, Committed, Fresh, MemoryLedger, Note, Queue, Txn,
};
use holdfast::engine::server::{ByeOutcome, ConnId, DevAuth, Output, ServerConfig, ServerEngine};
use holdfast::engine::store::{MemoryStore, Record, RecordKey, Records};
use holdfast::engine::SplitMix;
use holdfast::protocol::{BadFrame, ClientFrame};
use holdfast::server::store::redis::Keys;
use holdfast::server::store::shared::{RedisLedger, SharedError};

/// How long a killed node's sessions stay attached to it, until its lease ends.
pub const LEASE_MS: u64 = 3_000;

/// How long a claimed deadline stays with its claimer before another node may claim it
/// again (should the claimer die first, or the deadline turn out not to be due).
pub const CLAIM_MS: u64 = 1_000;

/// The shared store of a simulated cluster: in memory, or a throwaway Redis when
/// `HOLDFAST_TEST_REDIS` is set (then every transaction runs the real scripts, and the
/// scenarios check them).
pub enum SimLedger {
    Memory(Box<MemoryLedger>),
    Redis(Box<RedisSide>),
}

pub struct RedisSide {
    rt: tokio::runtime::Runtime,
    ledger: RedisLedger,
    taken: u64,
}

impl SimLedger {
    fn new(config: &ServerConfig) -> Self {
        let Some(TestRedis {
            url,
            rt,
            windows,
            namespace: ns,
        }) = TestRedis::from_env(config, "hf-cluster")
        else {
            return SimLedger::Memory(Box::new(MemoryLedger::new(config.replay_buffer)));
        };
        let conn = rt
            .block_on(async {
                let client = redis::Client::open(url.as_str())?;
                redis::aio::ConnectionManager::new(client).await
            })
            .expect("HOLDFAST_TEST_REDIS is set but Redis cannot be reached");
        let ledger = RedisLedger::new(
            conn,
            Keys::with_namespace(&ns),
            windows,
            config.replay_buffer,
        );
        SimLedger::Redis(Box::new(RedisSide {
            rt,
            ledger,
            taken: 0,
        }))
    }

    /// Runs one operation of the Redis side to its end.
    fn redis<T>(
        r: &RedisSide,
        op: impl AsyncFnOnce(&mut RedisLedger) -> Result<T, SharedError>,
    ) -> T {
        let mut ledger = r.ledger.clone();
        r.rt.block_on(op(&mut ledger))
            .expect("the shared store in Redis")
    }

    fn join(&mut self, until: u64) -> u64 {
        match self {
            SimLedger::Memory(m) => m.join(until),
            SimLedger::Redis(r) => Self::redis(r, async |l| l.join(until).await),
        }
    }

    fn end_lease(&mut self, no: u64, at: u64) {
        match self {
            SimLedger::Memory(m) => m.end_lease(no, at),
            SimLedger::Redis(r) => Self::redis(r, async |l| l.end_lease(no, at).await),
        }
    }

    fn next_claim(&self) -> Option<u64> {
        match self {
            SimLedger::Memory(m) => m.next_claim(0),
            SimLedger::Redis(r) => Self::redis(r, async |l| l.next_claim().await),
        }
    }

    fn claim_lost(&mut self, now: u64) -> Vec<(u64, Vec<String>)> {
        match self {
            SimLedger::Memory(m) => m.claim_lost(now),
            SimLedger::Redis(r) => Self::redis(r, async |l| l.claim_lost(now).await),
        }
    }

    fn claim_due(&mut self, now: u64, claim_ms: u64) -> Vec<RecordKey> {
        match self {
            SimLedger::Memory(m) => m.claim_due(now, claim_ms),
            SimLedger::Redis(r) => Self::redis(r, async |l| l.claim_due(now, claim_ms).await),
        }
    }

    fn commit(&mut self, txn: Txn) -> Committed {
        match self {
            SimLedger::Memory(m) => m.commit(txn),
            SimLedger::Redis(r) => {
                let answer = Self::redis(r, async |l| l.commit(&txn).await);
                if matches!(answer, Committed::Taken(_)) {
                    r.taken += 1;
                }
                answer
            }
        }
    }

    fn fence(&mut self, no: u64, seq: u64) -> bool {
        match self {
            SimLedger::Memory(m) => m.fence(no, seq),
            SimLedger::Redis(r) => Self::redis(r, async |l| l.fence(no, seq).await),
        }
    }

    fn take_notes(&mut self, no: u64) -> Vec<Note> {
        match self {
            SimLedger::Memory(m) => m.take_notes(no),
            SimLedger::Redis(r) => Self::redis(r, async |l| l.take_notes(no).await),
        }
    }

    fn fetch(&mut self, keys: &[RecordKey]) -> Vec<Fresh> {
        match self {
            SimLedger::Memory(m) => m.fetch(keys),
            SimLedger::Redis(r) => Self::redis(r, async |l| l.fetch(keys).await),
        }
    }

    fn queue(&mut self, sid: &str) -> Queue {
        match self {
            SimLedger::Memory(m) => m.queue(sid),
            SimLedger::Redis(r) => Self::redis(r, async |l| l.queue(sid).await),
        }
    }

    fn records(&self) -> Vec<(RecordKey, Record)> {
        match self {
            SimLedger::Memory(m) => m.records().map(|(k, r)| (k.clone(), r.clone())).collect(),
            SimLedger::Redis(r) => Self::redis(r, async |l| l.records().await),
        }
    }

    /// Transactions the shared store took.
    pub fn taken(&self) -> u64 {
        match self {
            SimLedger::Memory(m) => m.taken,
            SimLedger::Redis(r) => r.taken,
        }
    }
}

impl Drop for RedisSide {
    fn drop(&mut self) {
        let mut ledger = self.ledger.clone();
        let _ = self.rt.block_on(ledger.clear());
    }
}

/// How the answer to a commit is lost (the connection to the store broke, or the
/// answer came too late), for [`SimCluster::lose_next_answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostAnswer {
    /// The store took the transaction; its answer never came.
    Taken,
    /// The transaction never reached the store.
    NotSent,
    /// The transaction reaches the store only after the node gave up on it and asked.
    Late,
}

pub struct SimCluster {
    pub ledger: SimLedger,
    /// Every node started, with `None` for those killed.
    pub nodes: Vec<Option<ClusterNode>>,
    config: ServerConfig,
    seed: u64,
    /// Where the next socket goes (counts over live nodes).
    next_route: usize,
    /// Outputs released and not yet taken.
    released: Vec<Output>,
    /// Notes the shared store left, handed to their node `note_delay_ms` later.
    notes: Vec<(u64, usize, Note)>,
    /// How long a note takes to reach its node (the bell and the reads take a moment,
    /// and meanwhile the node goes on). 0 by default: scenarios time what a user sees.
    pub note_delay_ms: u64,
    /// The answer to the next commit (of any node) is lost this way.
    lose_next: Option<LostAnswer>,
}

impl SimCluster {
    pub fn new(config: ServerConfig, count: usize, seed: u64) -> Self {
        let mut cluster = Self {
            ledger: SimLedger::new(&config),
            nodes: Vec::new(),
            config,
            seed,
            next_route: 0,
            released: Vec::new(),
            notes: Vec::new(),
            note_delay_ms: 0,
            lose_next: None,
        };
        for _ in 0..count {
            cluster.start_node();
        }
        cluster
    }

    /// A new node joins; returns its index.
    pub fn start_node(&mut self) -> usize {
        let no = self.ledger.join(u64::MAX);
        self.seed = self.seed.wrapping_add(0x9E37_79B9);
        let engine = ServerEngine::new(
            self.config.clone(),
            MemoryStore::with_change_tracking(true),
            Box::new(DevAuth),
            Box::new(SplitMix(self.seed)),
        );
        let mut node = ClusterNode::new(engine, no);
        // A node starts knowing who is online (presence is cluster-wide).
        let users: Vec<RecordKey> = self
            .ledger
            .records()
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| matches!(k, RecordKey::User(_)))
            .collect();
        node.handle_fresh(self.ledger.fetch(&users));
        self.nodes.push(Some(node));
        self.nodes.len() - 1
    }

    /// Node `i` dies without a word; its lease ends `LEASE_MS` after `now`, or at once
    /// with `lease_now`. Returns the sockets it held (their clients see a reset).
    pub fn kill(&mut self, i: usize, now: u64, lease_now: bool) {
        if let Some(node) = self.nodes[i].take() {
            let until = if lease_now { now } else { now + LEASE_MS };
            // The lease is no longer renewed: it ends `until`.
            self.ledger.end_lease(node.no(), until);
        }
    }

    /// Node `i` stops gracefully (SIGTERM): its sockets are told to resume elsewhere
    /// and closed. Its lease ends `LEASE_MS` later, for whoever did not come back.
    pub fn stop(&mut self, i: usize, now: u64) {
        if let Some(node) = self.nodes[i].as_mut() {
            node.handle_shutdown();
        }
        self.run(now);
        self.kill(i, now, false);
    }

    /// The number of the node with index `i`.
    pub fn no_of(&self, i: usize) -> Option<u64> {
        self.nodes[i].as_ref().map(|n| n.no())
    }

    pub fn live(&self) -> impl Iterator<Item = (usize, &ClusterNode)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// The next live node, round robin.
    fn next_live(&mut self) -> usize {
        let live: Vec<usize> = self.live().map(|(i, _)| i).collect();
        assert!(!live.is_empty(), "no node is running");
        self.next_route += 1;
        live[(self.next_route - 1) % live.len()]
    }

    /// The index of the node with number `no`, if it lives.
    fn index_of(&self, no: u64) -> Option<usize> {
        self.live().find(|(_, n)| n.no() == no).map(|(i, _)| i)
    }

    fn node_of(&mut self, conn: ConnId) -> Option<&mut ClusterNode> {
        let i = self.index_of(node_of_conn(conn))?;
        self.nodes[i].as_mut()
    }

    /// A socket opens on the next live node (or on node `on`, if it lives).
    pub fn open(&mut self, on: Option<usize>) -> ConnId {
        // A page routed to a node that died goes where the balancer sends it.
        let i = match on.filter(|i| self.nodes[*i].is_some()) {
            Some(i) => i,
            None => self.next_live(),
        };
        self.nodes[i]
            .as_mut()
            .expect("a live node")
            .handle_open(None)
    }

    pub fn frame(&mut self, conn: ConnId, frame: ClientFrame) {
        if let Some(n) = self.node_of(conn) {
            n.handle_frame(conn, frame);
        }
    }

    pub fn bad_frame(&mut self, conn: ConnId, bad: BadFrame) {
        if let Some(n) = self.node_of(conn) {
            n.handle_bad_frame(conn, bad);
        }
    }

    pub fn close(&mut self, conn: ConnId) {
        if let Some(n) = self.node_of(conn) {
            n.handle_close(conn);
        }
    }

    /// A logout over HTTP, to the next live node; answered once its transaction is in.
    pub fn bye_request(
        &mut self,
        token: &str,
        session: &str,
        secret: &str,
        now: u64,
    ) -> ByeOutcome {
        let i = self.next_live();
        let ticket = self.nodes[i]
            .as_mut()
            .expect("live")
            .handle_bye_request(token, session, secret);
        self.run(now);
        let node = self.nodes[i].as_mut().expect("live");
        let mut answer = None;
        while let Some((t, outcome)) = node.poll_bye() {
            if t == ticket {
                answer = Some(outcome);
            }
        }
        answer.expect("the logout was answered")
    }

    /// The earliest timer of any node, or claim of the shared store.
    pub fn poll_timeout(&self) -> Option<u64> {
        let timers = self.live().filter_map(|(_, n)| n.poll_timeout());
        let claims = self.ledger.next_claim();
        let notes = self.notes.iter().map(|(at, ..)| *at).min();
        timers.chain(claims).chain(notes).min()
    }

    /// Whatever is due at `now`: node timers, then lost nodes and overdue deadlines
    /// claimed by the first live node.
    pub fn handle_timeout(&mut self, now: u64) {
        for n in self.nodes.iter_mut().flatten() {
            if n.poll_timeout().is_some_and(|t| t <= now) {
                n.handle_timeout();
            }
        }
        let Some(first) = self.live().map(|(i, _)| i).next() else {
            return;
        };
        let lost = self.ledger.claim_lost(now);
        // At the deadline itself, even while the node that armed it lives: whichever
        // node acts first commits, the other finds nothing left to do.
        let due = self.ledger.claim_due(now, CLAIM_MS);
        let node = self.nodes[first].as_mut().expect("live");
        for (no, sessions) in lost {
            node.handle_node_lost(no, sessions);
        }
        for key in due {
            node.handle_due(key);
        }
    }

    /// Runs every transaction there is to run, then returns every output released.
    pub fn take_outputs(&mut self, now: u64) -> Vec<Output> {
        self.run(now);
        std::mem::take(&mut self.released)
    }

    /// Runs every node's transactions against the shared store until none is left,
    /// handing over what the store tells them.
    fn run(&mut self, now: u64) {
        // A dead node hears nothing more.
        let nodes = &self.nodes;
        self.notes.retain(|(_, i, _)| nodes[*i].is_some());
        let out = &mut self.released;
        for _ in 0..100_000 {
            let mut progress = false;
            for i in 0..self.nodes.len() {
                let Some(node) = self.nodes[i].as_mut() else {
                    continue;
                };
                while let Some(txn) = node.poll_txn(now) {
                    progress = true;
                    let Some(lost) = self.lose_next.take() else {
                        let answer = self.ledger.commit(txn);
                        node.handle_committed(answer);
                        continue;
                    };
                    // What the server driver does when an answer is lost: ask whether
                    // the transaction was taken, fetch, and hand both to the node.
                    if lost == LostAnswer::Taken {
                        let _ = self.ledger.commit(txn.clone());
                    }
                    let applied = self.ledger.fence(txn.node, txn.seq);
                    let fresh = self.ledger.fetch(&txn.keys_to_fetch(applied));
                    if lost == LostAnswer::Late {
                        let late = self.ledger.commit(txn);
                        assert!(
                            matches!(late, Committed::Refused(..)),
                            "a fenced transaction is never taken"
                        );
                    }
                    node.handle_answer_lost(applied, fresh);
                }
                while let Some(o) = node.poll_output() {
                    progress = true;
                    out.push(o);
                }
                for note in self.ledger.take_notes(node.no()) {
                    self.notes.push((now + self.note_delay_ms, i, note));
                }
                let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.notes)
                    .into_iter()
                    .partition(|(at, n, _)| *at <= now && *n == i);
                self.notes = later;
                for (_, _, note) in due {
                    progress = true;
                    match note {
                        Note::Moved(sid) => {
                            let key = RecordKey::Session(sid);
                            node.handle_fresh(self.ledger.fetch(&[key]));
                        }
                        Note::Queued(sid) => {
                            let queue = self.ledger.queue(&sid);
                            node.handle_queued(sid, queue);
                        }
                        Note::Presence(user) => {
                            let key = RecordKey::User(user.clone());
                            node.handle_fresh(self.ledger.fetch(&[key]));
                            node.handle_presence(user);
                        }
                    }
                }
            }
            if !progress {
                return;
            }
        }
        panic!("the cluster does not settle at {now}");
    }

    /// The answer to the next commit, whichever node makes it, is lost as `how`.
    pub fn lose_next_answer(&mut self, how: LostAnswer) {
        self.lose_next = Some(how);
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The session a socket is attached to, on the node holding it.
    pub fn session_of_conn(&self, conn: ConnId) -> Option<String> {
        let i = self.index_of(node_of_conn(conn))?;
        self.nodes[i]
            .as_ref()?
            .engine()
            .session_of_conn(conn)
            .cloned()
    }

    /// What the shared store holds, as one store (tests read calls and sessions).
    pub fn store(&self) -> MemoryStore {
        let mut records = Records::default();
        for (key, record) in self.ledger.records() {
            match (&key, record) {
                (_, Record::Session(s)) => records.sessions.push(s),
                (_, Record::Call(c)) => records.calls.push(c),
                (RecordKey::User(id), Record::User(u)) => records.users.push((id.clone(), u)),
                _ => {}
            }
        }
        MemoryStore::from_records(records, true).0
    }
}
