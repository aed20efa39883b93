//! Hostile clients for the storm: each is its own identity, connects straight to the
//! server (not through the proxy, so the drop does not touch them) and floods it with
//! `set-status` messages at a fixed rate, reading and discarding whatever comes back;
//! when the server closes it (`rate-limited`), it reconnects and goes on. The storm's
//! honest figures taken with them running show what one abusive user costs everyone
//! else.

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

/// What the hostile clients did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HostileTally {
    pub clients: usize,
    /// Messages sent.
    pub frames_sent: u64,
    /// Sockets opened (the first of each client and every reconnect).
    pub connects: u64,
}

#[derive(Default)]
struct Counters {
    frames: AtomicU64,
    connects: AtomicU64,
}

/// Running hostile clients; [`Hostile::stop`] ends them.
pub struct Hostile {
    tasks: JoinSet<()>,
    counters: Arc<Counters>,
    clients: usize,
}

impl Hostile {
    /// Starts `clients` hostile clients against `ws://{addr}{path}`, each sending
    /// `per_sec` messages a second. Dev-mode tokens `hostile-0`, `hostile-1`, …
    pub fn start(addr: SocketAddr, path: &str, clients: usize, per_sec: u32) -> Self {
        let counters = Arc::new(Counters::default());
        let mut tasks = JoinSet::new();
        let url = format!("ws://{addr}{path}");
        let gap = Duration::from_secs_f64(1.0 / f64::from(per_sec.max(1)));
        for i in 0..clients {
            let url = url.clone();
            let counters = counters.clone();
            tasks.spawn(async move { flood(&url, &format!("hostile-{i}"), gap, &counters).await });
        }
        Self {
            tasks,
            counters,
            clients,
        }
    }

    /// Stops every hostile client and says what they did.
    pub async fn stop(mut self) -> HostileTally {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        HostileTally {
            clients: self.clients,
            frames_sent: self.counters.frames.load(Ordering::Relaxed),
            connects: self.counters.connects.load(Ordering::Relaxed),
        }
    }
}

/// One hostile client, until aborted.
async fn flood(url: &str, token: &str, gap: Duration, counters: &Counters) {
    let hello = serde_json::json!({"t": "hello", "v": 1, "token": token}).to_string();
    loop {
        counters.connects.fetch_add(1, Ordering::Relaxed);
        let Ok((ws, _)) = tokio_tungstenite::connect_async(url).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (mut sink, mut stream) = ws.split();
        // Whatever the server says is read and dropped, so it never waits on us.
        let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        if sink.send(Message::text(hello.clone())).await.is_ok() {
            let mut tick = tokio::time::interval(gap);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0u64;
            loop {
                tick.tick().await;
                if reader.is_finished() {
                    break;
                }
                seq += 1;
                let status = if seq % 2 == 0 { "available" } else { "busy" };
                let frame = serde_json::json!({"t": "msg", "seq": seq, "ack": 0,
                    "body": {"type": "set-status", "status": status}});
                if sink.send(Message::text(frame.to_string())).await.is_err() {
                    break;
                }
                counters.frames.fetch_add(1, Ordering::Relaxed);
            }
        }
        reader.abort();
        // Reconnect at once: a flood does not back off.
    }
}
