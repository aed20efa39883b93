//! A deterministic simulation of one [`ServerEngine`] and any number of [`ClientEngine`]s
//! on a simulated clock.
//!
//! Links are in-memory frame queues with a delay per direction. Every frame is encoded
//! to JSON and decoded again on arrival, so the wire shape is exercised. Nothing sleeps:
//! [`Sim::advance`] jumps from one due thing (a timer of any engine, a frame delivery)
//! to the next.
//!
//! Network faults:
//! - [`Sim::drop_link`]: the socket closes cleanly; both sides are told at once.
//! - [`Sim::half_open`]: the socket dies silently: frames in both directions (and any
//!   close) are discarded, both sides keep it open until their heartbeats notice.
//! - [`Sim::set_net`] with [`Net::Blackhole`]: the client's network swallows everything:
//!   its current link becomes half-open and new sockets never open. [`Net::Refuse`]:
//!   new sockets fail at once (server unreachable). [`Net::NotFound`]: new sockets fail
//!   at once and the HTTP probe of the URL gets a 404 (no Holdfast server there).
//!
//! A page's HTTP probe of a failed socket ([`Io::Probe`]) is answered one round trip
//! later: by the Holdfast server when the network is up, `unreachable` when refused,
//! never when blackholed; [`Node::probe_answer`] overrides that.
//!
//! Stores: with `HOLDFAST_TEST_REDIS=redis://…` set (scripts/test.sh runs the engine
//! suite a second time that way), the server engine's changes are written to that
//! Redis after every server input, exactly as the server's driver writes them, and the
//! records loaded back from Redis must then equal the engine's own: the suite runs
//! against both stores, and any state Redis would not keep fails the scenario.
#![allow(dead_code)]

use super::cluster::SimCluster;
use holdfast::engine::client::{
    ClientConfig, ClientEngine, Event, Io, LinkId, ProbeResult, RejoinRecord,
};
use holdfast::engine::client::{ConnectionState, Goodbye, StorageOp};
use holdfast::engine::server::{ByeOutcome, ConnId, DevAuth, Output, ServerConfig, ServerEngine};
use holdfast::engine::store::MemoryStore;
use holdfast::engine::SplitMix;
use holdfast::protocol::{decode_client, decode_server, encode, CallId, ServerFrame};
use holdfast::server::store::redis::{RedisStore, Windows};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A plausible epoch-ms start time (deadlines in events are absolute).
pub const T0: u64 = 1_700_000_000_000;

/// A client's index in the simulation.
pub type C = usize;

/// A client's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    Up,
    /// Everything vanishes; sockets never open.
    Blackhole,
    /// Sockets fail to open at once.
    Refuse,
    /// Sockets fail to open at once; something that is not Holdfast answers HTTP (404).
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dir {
    ToServer,
    ToClient,
}

#[derive(Debug)]
enum Wire {
    Frame(String),
    Close,
}

#[derive(Debug)]
struct Delivery {
    client: C,
    link: LinkId,
    dir: Dir,
    wire: Wire,
}

#[derive(Debug)]
struct Link {
    conn: Option<ConnId>,
    up_ms: u64,
    down_ms: u64,
    /// Half-open or blackholed: nothing gets through any more, nobody is told.
    dead: bool,
    /// Last scheduled arrival per direction (sockets are ordered).
    last_up: u64,
    last_down: u64,
}

/// One page: its engine and everything it produced.
pub struct Node {
    pub engine: ClientEngine,
    pub config: ClientConfig,
    /// Events with the time they were drained.
    pub events: Vec<(u64, Event)>,
    /// Storage writes with their time.
    pub storage_ops: Vec<(u64, StorageOp)>,
    /// The page's localStorage after those writes.
    pub stored: BTreeMap<CallId, RejoinRecord>,
    /// Every server frame that reached this page (any link).
    pub received: Vec<(u64, ServerFrame)>,
    /// Every socket the engine asked for: (time, io).
    pub io_log: Vec<(u64, Io)>,
    /// Logouts the page delivered over HTTP (`Goodbye`s, handed to the server at once;
    /// `false` when the server refused the proof).
    /// Logouts sent over HTTP: when, what the server made of it, and the request.
    pub goodbyes: Vec<(u64, ByeOutcome, Goodbye)>,
    pub net: Net,
    up_ms: u64,
    down_ms: u64,
    /// The socket the driver sends on (the last one opened and not closed).
    link: Option<LinkId>,
    /// How this page's HTTP probes are answered, if not as its network says: after this
    /// many ms, with this result (`None`: no answer ever).
    pub probe_answer: Option<(u64, Option<ProbeResult>)>,
    /// How far this page's clock is ahead of the simulation's (negative: behind). Every
    /// time the page's engine is handed, and every deadline it asks for, is on its clock.
    pub clock_skew: i64,
    /// With a cluster: the node this page's next sockets open on (`None`: the next one,
    /// round robin).
    pub route: Option<usize>,
}

impl Node {
    /// The simulation's time `t` on this page's clock.
    pub fn local(&self, t: u64) -> u64 {
        (t as i64 + self.clock_skew).max(0) as u64
    }

    /// This page's next timer, on the simulation's clock.
    fn next_timer(&self) -> Option<u64> {
        self.engine
            .poll_timeout()
            .map(|t| (t as i64 - self.clock_skew).max(0) as u64)
    }
}

/// The simulated world.
/// The Redis side of a simulation (see the module documentation).
struct Durable {
    rt: tokio::runtime::Runtime,
    writer: RedisStore,
    url: String,
    namespace: String,
    windows: Windows,
}

/// What a simulation needs to use the Redis of `HOLDFAST_TEST_REDIS` (None: unset).
pub struct TestRedis {
    pub url: String,
    /// To block on Redis from the simulation's synchronous steps.
    pub rt: tokio::runtime::Runtime,
    /// Expiries are absolute: these keep the simulated clock's records alive in Redis.
    pub windows: Windows,
    /// Keys of this simulation alone: `<prefix>-<pid>-<n>:`.
    pub namespace: String,
}

impl TestRedis {
    pub fn from_env(config: &ServerConfig, prefix: &str) -> Option<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let url = std::env::var("HOLDFAST_TEST_REDIS").ok()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut windows = Windows::from_config(config);
        windows.clock_offset_ms = holdfast::server::now_ms().saturating_sub(T0) + 3_600_000;
        let namespace = format!(
            "{prefix}-{}-{}:",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Some(Self {
            url,
            rt,
            windows,
            namespace,
        })
    }
}

impl Durable {
    fn from_env(config: &ServerConfig) -> Option<Self> {
        let TestRedis {
            url,
            rt,
            windows,
            namespace,
        } = TestRedis::from_env(config, "hf-sim")?;
        let writer = rt
            .block_on(RedisStore::connect(&url, windows, Duration::from_secs(5)))
            .expect("HOLDFAST_TEST_REDIS is set but Redis cannot be reached")
            .with_namespace(&namespace);
        Some(Self {
            rt,
            writer,
            url,
            namespace,
            windows,
        })
    }

    /// Everything Redis holds for this simulation.
    fn load(&mut self) -> holdfast::engine::store::Records {
        let mut reader = self
            .rt
            .block_on(RedisStore::connect(
                &self.url,
                self.windows,
                Duration::from_secs(5),
            ))
            .unwrap()
            .with_namespace(&self.namespace);
        self.rt.block_on(reader.load()).expect("load from Redis")
    }

    /// Writes what changed, then checks that Redis gives the same records back.
    fn sync(&mut self, store: &MemoryStore) {
        let changes = store.take_changes();
        if changes.is_empty() {
            return;
        }
        self.rt
            .block_on(self.writer.write(store, changes))
            .expect("write to Redis");
        let records = self.load();
        let (reloaded, vanished) = MemoryStore::from_records(records, false);
        assert!(
            vanished.is_empty(),
            "indexes name calls Redis lost: {vanished:?}"
        );
        assert_eq!(
            reloaded.records(),
            store.records(),
            "the records reloaded from Redis differ from the engine's"
        );
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        let _ = self.rt.block_on(self.writer.clear());
    }
}

/// The server's records, borrowed from the engine or gathered from a cluster's shared
/// store.
pub enum StoreView<'a> {
    Engine(&'a MemoryStore),
    Shared(Box<MemoryStore>),
}

impl std::ops::Deref for StoreView<'_> {
    type Target = MemoryStore;

    fn deref(&self) -> &MemoryStore {
        match self {
            StoreView::Engine(s) => s,
            StoreView::Shared(s) => s,
        }
    }
}

pub struct Sim {
    pub now: u64,
    /// The server, unless the simulation runs a cluster.
    pub server: ServerEngine<MemoryStore>,
    /// Set when the server side is several cluster nodes (`HOLDFAST_TEST_NODES=K`, or
    /// [`Sim::cluster`]).
    pub cluster: Option<SimCluster>,
    /// Set when the suite runs against Redis.
    durable: Option<Durable>,
    pub nodes: Vec<Node>,
    /// Every server output with its time.
    pub server_log: Vec<(u64, Output)>,
    links: BTreeMap<(C, LinkId), Link>,
    conns: HashMap<ConnId, (C, LinkId)>,
    /// Frames sent to sockets opened by hand (no client engine).
    raw: BTreeMap<ConnId, Vec<ServerFrame>>,
    raw_closed: Vec<ConnId>,
    wires: BTreeMap<(u64, u64), Delivery>,
    wire_seq: u64,
    /// Probe answers on their way: (due, seq) -> (page, link, answer).
    probes: BTreeMap<(u64, u64), (C, LinkId, ProbeResult)>,
    seed: u64,
    /// Delay per direction for new clients.
    pub default_delay_ms: u64,
}

impl Sim {
    /// Default server configuration, seeded entropy.
    pub fn new(seed: u64) -> Self {
        Self::with_config(ServerConfig::default(), seed)
    }

    pub fn with_config(config: ServerConfig, seed: u64) -> Self {
        let nodes = std::env::var("HOLDFAST_TEST_NODES")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n >= 2);
        match nodes {
            Some(k) => Self::cluster(config, k, seed),
            None => Self::single(config, seed),
        }
    }

    /// The server side as `nodes` cluster nodes over one shared store in memory.
    pub fn cluster(config: ServerConfig, nodes: usize, seed: u64) -> Self {
        let mut sim = Self::single_with(config.clone(), seed, None);
        sim.cluster = Some(SimCluster::new(config, nodes, seed));
        sim
    }

    /// One server process whatever `HOLDFAST_TEST_NODES` says: for what only a process
    /// on its own does (a memory store lost or shut down with it).
    pub fn one_process(seed: u64) -> Self {
        Self::single(ServerConfig::default(), seed)
    }

    fn single(config: ServerConfig, seed: u64) -> Self {
        let durable = Durable::from_env(&config);
        Self::single_with(config, seed, durable)
    }

    fn single_with(config: ServerConfig, seed: u64, durable: Option<Durable>) -> Self {
        let store = if durable.is_some() {
            // Not durable for the engine: shutdown keeps the in-memory semantics the
            // scenarios describe; only the records go through Redis.
            MemoryStore::with_change_tracking(false)
        } else {
            MemoryStore::new()
        };
        let server = ServerEngine::new(config, store, Box::new(DevAuth), Box::new(SplitMix(seed)));
        Self {
            now: T0,
            server,
            cluster: None,
            durable,
            nodes: Vec::new(),
            server_log: Vec::new(),
            links: BTreeMap::new(),
            conns: HashMap::new(),
            raw: BTreeMap::new(),
            raw_closed: Vec::new(),
            wires: BTreeMap::new(),
            wire_seq: 0,
            probes: BTreeMap::new(),
            seed,
            default_delay_ms: 5,
        }
    }

    // ------------------------------------------------------------ clients

    /// A page that will use `token` (in dev auth the token is the identity).
    pub fn add(&mut self, token: &str) -> C {
        let mut config = ClientConfig::new(token);
        config.seed = self.seed ^ (self.nodes.len() as u64 + 1).wrapping_mul(0x9E37_79B9);
        self.add_with(config)
    }

    pub fn add_with(&mut self, config: ClientConfig) -> C {
        self.nodes.push(Node {
            engine: ClientEngine::new(config.clone()),
            config,
            events: Vec::new(),
            storage_ops: Vec::new(),
            stored: BTreeMap::new(),
            received: Vec::new(),
            io_log: Vec::new(),
            goodbyes: Vec::new(),
            net: Net::Up,
            up_ms: self.default_delay_ms,
            down_ms: self.default_delay_ms,
            link: None,
            probe_answer: None,
            clock_skew: 0,
            route: None,
        });
        self.nodes.len() - 1
    }

    /// Add a page, connect it and wait until it is connected.
    pub fn online(&mut self, token: &str) -> C {
        let c = self.add(token);
        self.connect(c);
        c
    }

    /// `connect()` and run until connected (at most 10 s).
    pub fn connect(&mut self, c: C) {
        self.act(c, |e, now| e.connect(now));
        let ok = self.run_until(10_000, |s| s.state(c) == ConnectionState::Connected);
        assert!(ok, "client {c} did not connect: {:?}", self.state(c));
    }

    /// The page reloads (or crashes and is reopened): the page is hidden and the socket
    /// closes (neither happens when it dies `silently`), a fresh engine starts with the page's stored rejoin
    /// records, and connects.
    pub fn reload(&mut self, c: C, silently: bool) {
        if !silently {
            let now = self.nodes[c].local(self.now);
            self.nodes[c].engine.handle_pagehide(now);
            self.settle();
        }
        if let Some(link) = self.nodes[c].link.take() {
            self.kill_link(c, link, !silently);
        }
        let mut config = self.nodes[c].config.clone();
        config.seed = config.seed.wrapping_add(1);
        let records: Vec<RejoinRecord> = self.nodes[c].stored.values().cloned().collect();
        let node = &mut self.nodes[c];
        node.config = config.clone();
        node.engine = ClientEngine::new(config);
        let now = node.local(self.now);
        node.engine.load_rejoin_records(records, now);
        self.settle();
    }

    /// The identity of a page (its dev token up to any `:`).
    pub fn id(&self, c: C) -> String {
        let t = &self.nodes[c].config.token;
        t.split(':').next().unwrap_or(t).to_owned()
    }

    pub fn client(&mut self, c: C) -> &mut ClientEngine {
        &mut self.nodes[c].engine
    }

    pub fn state(&self, c: C) -> ConnectionState {
        self.nodes[c].engine.state()
    }

    /// Run an app command (or any engine input) at the current time, then let the
    /// consequences that are due now happen.
    pub fn act<R>(&mut self, c: C, f: impl FnOnce(&mut ClientEngine, u64) -> R) -> R {
        let now = self.nodes[c].local(self.now);
        let r = f(&mut self.nodes[c].engine, now);
        self.settle();
        r
    }

    /// Every event of a page so far.
    pub fn events(&self, c: C) -> Vec<Event> {
        self.nodes[c]
            .events
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Events of a page since the last call.
    pub fn take_events(&mut self, c: C) -> Vec<Event> {
        std::mem::take(&mut self.nodes[c].events)
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    /// The first event matching `f` (with its time), if any.
    pub fn find_event(&self, c: C, f: impl Fn(&Event) -> bool) -> Option<(u64, Event)> {
        self.nodes[c].events.iter().find(|(_, e)| f(e)).cloned()
    }

    pub fn stored(&self, c: C) -> Vec<RejoinRecord> {
        self.nodes[c].stored.values().cloned().collect()
    }

    /// Secrets of every welcome this page received, oldest first.
    pub fn welcomes(&self, c: C) -> Vec<holdfast::protocol::Welcome> {
        self.nodes[c]
            .received
            .iter()
            .filter_map(|(_, f)| match f {
                ServerFrame::Welcome(w) => Some((**w).clone()),
                _ => None,
            })
            .collect()
    }

    /// The server's socket id for a page's current link.
    pub fn conn_of(&self, c: C) -> Option<ConnId> {
        let link = self.nodes[c].link?;
        self.links.get(&(c, link)).and_then(|l| l.conn)
    }

    // ------------------------------------------------------------ network

    /// Per-direction delay of this page's current and future sockets.
    pub fn set_delay(&mut self, c: C, up_ms: u64, down_ms: u64) {
        self.nodes[c].up_ms = up_ms;
        self.nodes[c].down_ms = down_ms;
        if let Some(link) = self.nodes[c].link {
            if let Some(l) = self.links.get_mut(&(c, link)) {
                l.up_ms = up_ms;
                l.down_ms = down_ms;
            }
        }
    }

    pub fn set_net(&mut self, c: C, net: Net) {
        self.nodes[c].net = net;
        if net == Net::Blackhole {
            self.half_open(c);
        }
    }

    /// Close a page's socket cleanly: both sides are told now, frames in flight are lost.
    pub fn drop_link(&mut self, c: C) {
        if let Some(link) = self.nodes[c].link.take() {
            self.kill_link(c, link, true);
            let now = self.nodes[c].local(self.now);
            self.nodes[c].engine.handle_close(link, now);
            self.settle();
        }
    }

    /// The server process dies and a new one starts on the same state, as with a
    /// durable store: every socket resets (each client is told at once, as by a TCP
    /// reset), and the new engine is [`ServerEngine::restore`]d at `now` from the
    /// records (loaded back from Redis when the suite runs against it).
    pub fn restart_server(&mut self) {
        let now = self.now;
        for c in 0..self.nodes.len() {
            if let Some(link) = self.nodes[c].link.take() {
                self.kill_link(c, link, false);
                self.nodes[c].engine.handle_close(link, now);
            }
        }
        self.conns.clear();
        self.raw.clear();
        if let Some(cluster) = self.cluster.as_mut() {
            // Every node dies at once and as many new ones start; the old leases end
            // now, so the new nodes detach the old sessions at once, as a restored
            // engine does.
            let count = cluster.live().count();
            for i in 0..cluster.nodes.len() {
                cluster.kill(i, now, true);
            }
            for _ in 0..count {
                cluster.start_node();
            }
            self.now += 1;
            self.settle();
            return;
        }
        let records = match self.durable.as_mut() {
            Some(d) => {
                d.sync(self.server.store());
                d.load()
            }
            None => self.server.store().records(),
        };
        let (store, vanished) = MemoryStore::from_records(records, false);
        let config = self.server.config().clone();
        self.seed = self.seed.wrapping_add(1);
        self.server = ServerEngine::restore(
            config,
            store,
            vanished,
            Box::new(DevAuth),
            Box::new(SplitMix(self.seed)),
            now,
        );
        self.settle();
    }

    /// Cluster node `i` dies (SIGKILL): its sockets reset, so each client is told at
    /// once (as by a TCP reset) and reconnects, to another node.
    pub fn kill_node(&mut self, i: usize) {
        let now = self.now;
        let cluster = self.cluster.as_mut().expect("a cluster");
        let Some(no) = cluster.no_of(i) else {
            return;
        };
        cluster.kill(i, now, false);
        self.reset_links_of(no);
        self.settle();
    }

    /// Cluster node `i` stops gracefully (SIGTERM): its clients are told to resume
    /// elsewhere, and its sockets close once that is sent.
    pub fn stop_node(&mut self, i: usize) {
        let now = self.now;
        let cluster = self.cluster.as_mut().expect("a cluster");
        cluster.stop(i, now);
        // What it sent before it stopped is on the wires; it hears nothing more.
        self.settle();
    }

    /// A new cluster node joins; returns its index.
    pub fn start_node(&mut self) -> usize {
        self.cluster.as_mut().expect("a cluster").start_node()
    }

    /// Every page whose socket is on node `no` sees it reset.
    fn reset_links_of(&mut self, no: u64) {
        let now = self.now;
        for c in 0..self.nodes.len() {
            let Some(link) = self.nodes[c].link else {
                continue;
            };
            let on_node = self
                .links
                .get(&(c, link))
                .and_then(|l| l.conn)
                .is_some_and(|conn| holdfast::engine::cluster::node_of_conn(conn) == no);
            if on_node {
                self.nodes[c].link = None;
                self.kill_link(c, link, false);
                let local = self.nodes[c].local(now);
                self.nodes[c].engine.handle_close(link, local);
            }
        }
    }

    /// A page's socket dies silently (see the module documentation).
    pub fn half_open(&mut self, c: C) {
        if let Some(link) = self.nodes[c].link {
            if let Some(l) = self.links.get_mut(&(c, link)) {
                l.dead = true;
            }
        }
    }

    /// The link is gone for the simulation; tell the server if `tell_server`.
    fn kill_link(&mut self, c: C, link: LinkId, tell_server: bool) {
        let Some(l) = self.links.get_mut(&(c, link)) else {
            return;
        };
        let was_dead = l.dead;
        l.dead = true;
        if tell_server && !was_dead {
            if let Some(conn) = l.conn {
                self.server_close(conn);
            }
        }
    }

    // ------------------------------------------------------- server side

    fn server_open(&mut self, c: Option<C>) -> ConnId {
        match self.cluster.as_mut() {
            Some(cluster) => cluster.open(c.and_then(|c| self.nodes[c].route)),
            None => self.server.handle_open(self.now),
        }
    }

    /// Text from a socket, decoded as the server driver decodes it.
    fn server_text(&mut self, conn: ConnId, text: &str) {
        let max = self.config().max_frame_bytes;
        let now = self.now;
        match (decode_client(text, max), self.cluster.as_mut()) {
            (Ok(f), Some(cluster)) => cluster.frame(conn, f),
            (Err(bad), Some(cluster)) => cluster.bad_frame(conn, bad),
            (Ok(f), None) => self.server.handle_frame(conn, f, now),
            (Err(bad), None) => self.server.handle_bad_frame(conn, bad, now),
        }
    }

    /// A frame the server driver could not decode, handed to the server.
    pub fn server_bad_frame(&mut self, conn: ConnId, bad: holdfast::protocol::BadFrame) {
        match self.cluster.as_mut() {
            Some(cluster) => cluster.bad_frame(conn, bad),
            None => self.server.handle_bad_frame(conn, bad, self.now),
        }
    }

    /// The server hears that a socket closed (the page does not).
    pub fn server_close(&mut self, conn: ConnId) {
        match self.cluster.as_mut() {
            Some(cluster) => cluster.close(conn),
            None => self.server.handle_close(conn, self.now),
        }
    }

    fn server_timeout(&self) -> Option<u64> {
        match &self.cluster {
            Some(cluster) => cluster.poll_timeout(),
            None => self.server.poll_timeout(),
        }
    }

    fn server_handle_timeout(&mut self, now: u64) {
        match self.cluster.as_mut() {
            Some(cluster) => cluster.handle_timeout(now),
            None => self.server.handle_timeout(now),
        }
    }

    fn server_outputs(&mut self) -> Vec<Output> {
        let now = self.now;
        match self.cluster.as_mut() {
            Some(cluster) => cluster.take_outputs(now),
            None => std::iter::from_fn(|| self.server.poll_output()).collect(),
        }
    }

    /// A logout over HTTP, now.
    pub fn bye_request(&mut self, token: &str, session: &str, secret: &str) -> ByeOutcome {
        let now = self.now;
        self.server_bye(token, session, secret, now)
    }

    fn server_bye(&mut self, token: &str, session: &str, secret: &str, now: u64) -> ByeOutcome {
        match self.cluster.as_mut() {
            Some(cluster) => cluster.bye_request(token, session, secret, now),
            None => self.server.handle_bye_request(token, session, secret, now),
        }
    }

    pub fn config(&self) -> &ServerConfig {
        match &self.cluster {
            Some(cluster) => cluster.config(),
            None => self.server.config(),
        }
    }

    /// The server's records: the engine's store, or what a cluster's shared store holds.
    pub fn store(&self) -> StoreView<'_> {
        match &self.cluster {
            Some(cluster) => StoreView::Shared(Box::new(cluster.store())),
            None => StoreView::Engine(self.server.store()),
        }
    }

    /// The session a server socket is attached to.
    pub fn session_of_conn(&self, conn: ConnId) -> Option<String> {
        match &self.cluster {
            Some(cluster) => cluster.session_of_conn(conn),
            None => self.server.session_of_conn(conn).cloned(),
        }
    }

    /// A server counter, summed over the nodes of a cluster.
    pub fn metric(&self, f: impl Fn(&holdfast::engine::server::Metrics) -> u64) -> u64 {
        match &self.cluster {
            Some(cluster) => cluster.live().map(|(_, n)| f(n.engine().metrics())).sum(),
            None => f(self.server.metrics()),
        }
    }

    // ------------------------------------------------------- raw sockets

    /// Open a socket on the server with no client engine behind it.
    pub fn open_raw(&mut self) -> ConnId {
        let conn = self.server_open(None);
        self.raw.insert(conn, Vec::new());
        conn
    }

    /// Hand text to the server on a raw socket, as the server driver would.
    pub fn raw_send(&mut self, conn: ConnId, text: &str) {
        self.server_text(conn, text);
        self.settle();
    }

    /// Frames the server sent on a raw socket since the last call.
    pub fn raw_take(&mut self, conn: ConnId) -> Vec<ServerFrame> {
        self.raw
            .get_mut(&conn)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    pub fn raw_is_closed(&self, conn: ConnId) -> bool {
        self.raw_closed.contains(&conn)
    }

    /// Put text on a page's current socket towards the server, bypassing its engine.
    pub fn inject(&mut self, c: C, text: &str) {
        let link = self.nodes[c].link.expect("no socket");
        self.enqueue(c, link, Dir::ToServer, Wire::Frame(text.to_owned()));
        self.settle();
    }

    // --------------------------------------------------------------- time

    /// Run until `ms` from now.
    pub fn advance(&mut self, ms: u64) {
        let until = self.now + ms;
        self.run_to(until);
    }

    /// Run until the absolute time `t`.
    pub fn run_to(&mut self, t: u64) {
        self.settle();
        while let Some(next) = self.next_due() {
            if next > t {
                break;
            }
            self.now = self.now.max(next);
            self.settle();
        }
        self.now = self.now.max(t);
        self.settle();
    }

    /// Jump to the next due thing of anyone (timer or delivery). Returns its time.
    pub fn step(&mut self) -> Option<u64> {
        self.settle();
        let next = self.next_due()?;
        self.now = self.now.max(next);
        self.settle();
        Some(self.now)
    }

    /// Step until `cond` holds, for at most `max_ms`. Returns whether it held.
    pub fn run_until(&mut self, max_ms: u64, mut cond: impl FnMut(&Sim) -> bool) -> bool {
        let limit = self.now + max_ms;
        self.settle();
        loop {
            if cond(self) {
                return true;
            }
            match self.next_due() {
                Some(next) if next <= limit => {
                    self.now = self.now.max(next);
                    self.settle();
                }
                _ => {
                    self.now = self.now.max(limit);
                    self.settle();
                    return cond(self);
                }
            }
        }
    }

    /// The earliest timer or delivery of anyone.
    pub fn next_due(&self) -> Option<u64> {
        let timers = self
            .nodes
            .iter()
            .filter_map(|n| n.next_timer())
            .chain(self.server_timeout());
        let wire = self.wires.keys().next().map(|(at, _)| *at);
        let probe = self.probes.keys().next().map(|(at, _)| *at);
        timers.chain(wire).chain(probe).min()
    }

    /// Do everything due at the current time, until nothing more is.
    pub fn settle(&mut self) {
        for _ in 0..1_000_000 {
            if self.drain_outputs() {
                continue;
            }
            let now = self.now;
            if let Some(((at, seq), _)) = self.wires.first_key_value() {
                if *at <= now {
                    let key = (*at, *seq);
                    let d = self.wires.remove(&key).expect("present");
                    self.deliver(d);
                    continue;
                }
            }
            if let Some(((at, seq), _)) = self.probes.first_key_value() {
                if *at <= now {
                    let key = (*at, *seq);
                    let (c, link, answer) = self.probes.remove(&key).expect("present");
                    let local = self.nodes[c].local(now);
                    self.nodes[c]
                        .engine
                        .handle_probe_result(link, answer, local);
                    continue;
                }
            }
            if self.server_timeout().is_some_and(|t| t <= now) {
                self.server_handle_timeout(now);
                continue;
            }
            if let Some(node) = self
                .nodes
                .iter_mut()
                .find(|n| n.next_timer().is_some_and(|t| t <= now))
            {
                let local = node.local(now);
                node.engine.handle_timeout(local);
                continue;
            }
            return;
        }
        panic!("simulation does not settle at {}", self.now);
    }

    /// Move every engine output somewhere. Returns whether there was any.
    fn drain_outputs(&mut self) -> bool {
        let now = self.now;
        let mut any = false;
        for c in 0..self.nodes.len() {
            while let Some(frame) = self.nodes[c].engine.poll_transmit() {
                any = true;
                if let Some(link) = self.nodes[c].link {
                    self.enqueue(c, link, Dir::ToServer, Wire::Frame(encode(&frame)));
                }
            }
            while let Some(io) = self.nodes[c].engine.poll_io() {
                any = true;
                self.nodes[c].io_log.push((now, io));
                match io {
                    Io::Open(link) => self.open(c, link),
                    Io::Probe(link) => self.probe(c, link),
                    Io::Close(link) => {
                        if self.nodes[c].link == Some(link) {
                            self.nodes[c].link = None;
                        }
                        self.enqueue(c, link, Dir::ToServer, Wire::Close);
                    }
                }
            }
            while let Some(g) = self.nodes[c].engine.poll_goodbye() {
                any = true;
                // An HTTP request of its own: not held up by the page's socket.
                let ok = self.server_bye(&g.token, &g.session, &g.secret, now);
                self.nodes[c].goodbyes.push((now, ok, g));
            }
            let node = &mut self.nodes[c];
            while let Some(e) = node.engine.poll_event() {
                any = true;
                node.events.push((now, e));
            }
            while let Some(op) = node.engine.poll_storage() {
                any = true;
                match &op {
                    StorageOp::Put(r) => {
                        node.stored.insert(r.call.clone(), r.clone());
                    }
                    StorageOp::Remove(call) => {
                        node.stored.remove(call);
                    }
                }
                node.storage_ops.push((now, op));
            }
        }
        if let Some(d) = self.durable.as_mut() {
            d.sync(self.server.store());
        }
        for out in self.server_outputs() {
            any = true;
            self.server_log.push((now, out.clone()));
            let (conn, wire) = match out {
                Output::Send { conn, frame } => (conn, Wire::Frame(encode(&frame))),
                Output::Close { conn, .. } => (conn, Wire::Close),
            };
            if let Some(&(c, link)) = self.conns.get(&conn) {
                self.enqueue(c, link, Dir::ToClient, wire);
            } else if let Some(log) = self.raw.get_mut(&conn) {
                match wire {
                    Wire::Frame(text) => log.push(decode_server(&text, usize::MAX).unwrap()),
                    Wire::Close => self.raw_closed.push(conn),
                }
            }
        }
        any
    }

    fn probe(&mut self, c: C, link: LinkId) {
        let node = &self.nodes[c];
        let round_trip = node.up_ms + node.down_ms;
        let (delay, answer) = node.probe_answer.unwrap_or(match node.net {
            Net::Up => (
                round_trip,
                Some(ProbeResult::Holdfast {
                    protocol: holdfast::protocol::PROTOCOL_VERSION,
                }),
            ),
            Net::Refuse => (round_trip, Some(ProbeResult::Unreachable)),
            Net::NotFound => (
                round_trip,
                Some(ProbeResult::NotHoldfast { status: Some(404) }),
            ),
            Net::Blackhole => (0, None),
        });
        if let Some(answer) = answer {
            self.wire_seq += 1;
            self.probes
                .insert((self.now + delay, self.wire_seq), (c, link, answer));
        }
    }

    fn open(&mut self, c: C, link: LinkId) {
        let now = self.now;
        let node = &mut self.nodes[c];
        node.link = Some(link);
        let (up_ms, down_ms) = (node.up_ms, node.down_ms);
        let mut l = Link {
            conn: None,
            up_ms,
            down_ms,
            dead: false,
            last_up: now,
            last_down: now,
        };
        match node.net {
            Net::Up => {
                let conn = self.server_open(Some(c));
                l.conn = Some(conn);
                self.conns.insert(conn, (c, link));
                self.links.insert((c, link), l);
                let local = self.nodes[c].local(now);
                self.nodes[c].engine.handle_open(link, local);
            }
            Net::Blackhole => {
                l.dead = true;
                self.links.insert((c, link), l);
            }
            Net::Refuse | Net::NotFound => {
                node.link = None;
                let local = node.local(now);
                node.engine.handle_close(link, local);
            }
        }
    }

    fn enqueue(&mut self, c: C, link: LinkId, dir: Dir, wire: Wire) {
        let now = self.now;
        let Some(l) = self.links.get_mut(&(c, link)) else {
            return;
        };
        if l.dead {
            return;
        }
        let at = match dir {
            Dir::ToServer => {
                l.last_up = l.last_up.max(now + l.up_ms);
                l.last_up
            }
            Dir::ToClient => {
                l.last_down = l.last_down.max(now + l.down_ms);
                l.last_down
            }
        };
        self.wire_seq += 1;
        self.wires.insert(
            (at, self.wire_seq),
            Delivery {
                client: c,
                link,
                dir,
                wire,
            },
        );
    }

    fn deliver(&mut self, d: Delivery) {
        let now = self.now;
        let Some(l) = self.links.get_mut(&(d.client, d.link)) else {
            return;
        };
        if l.dead {
            return;
        }
        match (d.dir, d.wire) {
            (Dir::ToServer, Wire::Frame(text)) => {
                let conn = l.conn.expect("open link has a conn");
                self.server_text(conn, &text);
            }
            (Dir::ToServer, Wire::Close) => {
                l.dead = true;
                let conn = l.conn.expect("open link has a conn");
                self.server_close(conn);
            }
            (Dir::ToClient, Wire::Frame(text)) => {
                let node = &mut self.nodes[d.client];
                let local = node.local(now);
                match decode_server(&text, usize::MAX) {
                    Ok(f) => {
                        node.received.push((now, f.clone()));
                        node.engine.handle_frame(d.link, f, local);
                    }
                    Err(bad) => node.engine.handle_bad_frame(d.link, bad, local),
                }
            }
            (Dir::ToClient, Wire::Close) => {
                l.dead = true;
                let node = &mut self.nodes[d.client];
                if node.link == Some(d.link) {
                    node.link = None;
                }
                let local = node.local(now);
                node.engine.handle_close(d.link, local);
            }
        }
    }
}
