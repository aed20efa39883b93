//! The real `holdfast-server` process on a throwaway Redis, started, signalled and
//! started again on the same port, with native clients (the real client engine over
//! the native driver) and what they saw.

#![allow(dead_code)] // each test binary uses a different part

use super::redis::RedisServer;
use holdfast::engine::client::{ClientConfig, Event, RejoinRecord};
use holdfast::native::NativeClient;
use holdfast::protocol::EndReason;
use serde_json::json;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const WAIT: Duration = Duration::from_secs(10);
pub const GRACE_MS: u64 = 3_000;

/// The server binary, started and stopped by its process id.
pub struct ServerProcess {
    pub port: u16,
    redis_url: String,
    /// Flags besides the ones every test here uses.
    extra: Vec<String>,
    child: Option<Child>,
}

impl ServerProcess {
    pub fn start(redis: &RedisServer) -> Self {
        Self::start_with(redis, &[])
    }

    /// Started with `extra` flags too.
    pub fn start_with(redis: &RedisServer, extra: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let mut server = Self {
            port,
            redis_url: redis.url(),
            extra: extra.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        server.spawn();
        server
    }

    pub fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_holdfast-server"))
            .args(["--dev", "--test-hooks", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--store", &self.redis_url])
            .args([
                "--heartbeat-interval",
                "300ms",
                "--heartbeat-timeout",
                "900ms",
            ])
            .args([
                "--resume-window",
                "10s",
                "--grace",
                &format!("{GRACE_MS}ms"),
            ])
            .args(&self.extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("holdfast-server starts");
        self.child = Some(child);
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(started.elapsed() < WAIT, "the server never listened");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child we started and have not reaped.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
            let _ = child.wait();
        }
    }

    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
    }

    pub fn terminate(&mut self) {
        self.signal(libc::SIGTERM);
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub fn client(&self, token: &str, records: Vec<RejoinRecord>) -> NativeClient {
        client_at(&self.url(), token, records)
    }

    /// Stops the process (SIGSTOP) without ending it, as a paused VM would.
    pub fn pause(&self) {
        self.send_signal(libc::SIGSTOP);
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) {
        self.send_signal(libc::SIGCONT);
    }

    /// Sends `signal` and returns at once (see [`ServerProcess::wait_exit`]).
    pub fn send_signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on the pid of a child we started and have not reaped.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    /// Waits up to `within` for the process to end by itself; its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let started = std::time::Instant::now();
        while started.elapsed() < within {
            if let Some(status) = self.child.as_mut()?.try_wait().ok()? {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub async fn get(&self, path: &str) -> u16 {
        http_status(self.port, path, &[]).await
    }

    /// The value of one metric (a line `name value`) of `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        let req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        s.write_all(req.as_bytes()).await.ok()?;
        let mut body = String::new();
        tokio::time::timeout(WAIT, s.read_to_string(&mut body))
            .await
            .ok()?
            .ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn send(c: &NativeClient, call: &str, n: u64) {
    let call = call.to_owned();
    c.with(move |e, now| e.send(&call, json!({ "n": n }), now))
        .await
        .unwrap();
}

/// What one side saw: the `n` of every signal in arrival order, and whether its session
/// resumed (`recovered: true`), was lost, or saw its call end.
#[derive(Debug, Default)]
pub struct Seen {
    pub signals: Vec<u64>,
    pub resumed: usize,
    pub lost: bool,
    pub ended: Option<EndReason>,
}

/// Drains events until `count` signals arrived (or WAIT passes without one).
pub async fn collect(c: &mut NativeClient, seen: &mut Seen, count: usize) {
    while seen.signals.len() < count {
        let Some(ev) = c.next_event(WAIT).await else {
            panic!("stalled: {seen:?}");
        };
        note(seen, ev);
    }
}

pub fn note(seen: &mut Seen, ev: Event) {
    match ev {
        Event::Signal { payload, .. } => seen.signals.extend(payload["n"].as_u64()),
        Event::Resumed { recovered } => {
            seen.resumed += 1;
            seen.lost |= !recovered;
        }
        Event::SessionLost { .. } => seen.lost = true,
        Event::CallEnded { reason, .. } => seen.ended = Some(reason),
        _ => {}
    }
}

/// A native client with quick reconnects, on `url`.
pub fn client_at(url: &str, token: &str, records: Vec<RejoinRecord>) -> NativeClient {
    let mut config = ClientConfig::new(token);
    config.backoff_base_ms = 50;
    config.backoff_max_ms = 400;
    config.connect_timeout_ms = 2_000;
    NativeClient::start(url, config, records)
}

/// The status of `GET path` on 127.0.0.1:`port` with extra header lines (0: no answer
/// within 500 ms, as from a paused process).
pub async fn http_status(port: u16, path: &str, headers: &[&str]) -> u16 {
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n");
        if headers.is_empty() {
            req.push_str("Connection: close\r\n");
        }
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < 12 {
            let n = s.read(&mut buf[got..]).await.ok()?;
            if n == 0 {
                break;
            }
            got += n;
        }
        std::str::from_utf8(&buf[..got])
            .ok()?
            .get(9..12)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_millis(500), ask)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// A load balancer that knows nothing of sessions: each new connection goes to the
/// first backend whose `/readyz` answers 200 (none ready: the connection is dropped,
/// and the client retries).
pub struct Balancer {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    pub async fn start(backends: Vec<u16>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let backends = backends.clone();
                tokio::spawn(async move {
                    for backend in backends {
                        if http_status(backend, "/readyz", &[]).await != 200 {
                            continue;
                        }
                        if let Ok(mut outbound) =
                            tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Self { port, task }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A call with traffic both ways: `n` numbered payloads from each side (alice's 1..=n,
/// bob's 1001..), with `interrupt` run after the `at`-th while both go on sending;
/// returns what each saw once everything arrived, and what `interrupt` returned.
pub async fn exchange<T>(
    alice: &mut NativeClient,
    bob: &mut NativeClient,
    call: &str,
    n: u64,
    at: u64,
    interrupt: impl AsyncFnOnce() -> T,
) -> (Seen, Seen, T) {
    let (mut seen_a, mut seen_b) = (Seen::default(), Seen::default());
    let mut interrupt = Some(interrupt);
    let mut out = None;
    for i in 1..=n {
        send(alice, call, i).await;
        send(bob, call, 1_000 + i).await;
        if i == at {
            if let Some(f) = interrupt.take() {
                out = Some(f().await);
            }
        }
        for ev in alice.drain_events() {
            note(&mut seen_a, ev);
        }
        for ev in bob.drain_events() {
            note(&mut seen_b, ev);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    collect(bob, &mut seen_b, n as usize).await;
    collect(alice, &mut seen_a, n as usize).await;
    (seen_a, seen_b, out.expect("`at` is within 1..=n"))
}

/// What [`exchange`] must leave: every payload exactly once and in order on each side,
/// each resumed at least once, no session lost, the call not ended.
pub fn assert_exactly_once(seen_a: &Seen, seen_b: &Seen, n: u64, label: &str) {
    assert_delivered(seen_a, seen_b, n, label);
    for (who, seen) in [("alice", seen_a), ("bob", seen_b)] {
        assert!(seen.resumed >= 1, "{who} never resumed: {label}");
    }
}

/// Every payload of [`exchange`] exactly once and in order on each side, no session
/// lost, the call not ended (whether or not anyone resumed).
pub fn assert_delivered(seen_a: &Seen, seen_b: &Seen, n: u64, label: &str) {
    assert_eq!(seen_b.signals, (1..=n).collect::<Vec<_>>(), "bob: {label}");
    assert_eq!(
        seen_a.signals,
        (1_001..=1_000 + n).collect::<Vec<_>>(),
        "alice: {label}"
    );
    for (who, seen) in [("alice", seen_a), ("bob", seen_b)] {
        assert!(!seen.lost, "{who} lost the session: {label}");
        assert_eq!(seen.ended, None, "{who}'s call ended: {label}");
    }
}
