//! The actor: one task owns the [`ServerEngine`], feeds it commands from the socket
//! tasks and the HTTP handlers, drains its outputs to the socket writers and sleeps
//! until its next timer.

use super::metrics::MetricsSnapshot;
use super::now_ms;
use crate::engine::server::{ConnId, Output, ServerEngine};
use crate::engine::store::MemoryStore;
use crate::engine::Entropy;
use crate::protocol::{BadFrame, ClientFrame, ServerFrame};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Operating-system randomness for session ids, resume secrets and rejoin tokens.
pub(crate) struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        // The OS CSPRNG does not fail on supported platforms; if it ever did, serving
        // predictable tokens would be worse than stopping.
        getrandom::getrandom(buf).expect("the operating system's random source failed");
    }
}

/// What a socket's writer task is told. Frames are boxed: the queue allocates its
/// slots in blocks, and a few-hundred-byte slot per socket adds up at 10,000 sockets.
pub(crate) enum Outbound {
    Frame(Box<ServerFrame>),
    Close,
}

pub(crate) enum Cmd {
    Open {
        writer: mpsc::Sender<Outbound>,
        reply: oneshot::Sender<ConnId>,
    },
    Frame(ConnId, Result<ClientFrame, BadFrame>),
    Closed(ConnId),
    Metrics(oneshot::Sender<MetricsSnapshot>),
    DropUser(String, oneshot::Sender<usize>),
    /// A logout over HTTP (`POST /ws/bye`): answers whether a session was ended.
    Bye {
        request: super::http::ByeRequest,
        reply: oneshot::Sender<bool>,
    },
    Shutdown(oneshot::Sender<()>),
}

pub(crate) struct Actor {
    pub(crate) engine: ServerEngine<MemoryStore>,
    pub(crate) writers: HashMap<ConnId, mpsc::Sender<Outbound>>,
}

impl Actor {
    /// Hands every engine output to the socket tasks.
    fn flush(&mut self) {
        while let Some(out) = self.engine.poll_output() {
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
                        self.engine.handle_close(conn, now_ms());
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
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            let deadline = self.engine.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(at) => {
                        let wait = at.saturating_sub(now_ms());
                        tokio::time::sleep(Duration::from_millis(wait)).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return };
                    let now = now_ms();
                    match cmd {
                        Cmd::Open { writer, reply } => {
                            let conn = self.engine.handle_open(now);
                            self.writers.insert(conn, writer);
                            let _ = reply.send(conn);
                        }
                        Cmd::Frame(conn, Ok(frame)) => self.engine.handle_frame(conn, frame, now),
                        Cmd::Frame(conn, Err(bad)) => self.engine.handle_bad_frame(conn, bad, now),
                        Cmd::Closed(conn) => {
                            self.writers.remove(&conn);
                            self.engine.handle_close(conn, now);
                        }
                        Cmd::Metrics(reply) => {
                            let _ = reply.send(MetricsSnapshot {
                                counters: self.engine.metrics().clone(),
                                counts: self.engine.counts(),
                                connections: self.engine.connection_count(),
                            });
                        }
                        Cmd::Bye { request, reply } => {
                            let r = request;
                            let ended =
                                self.engine
                                    .handle_bye_request(&r.token, &r.session, &r.secret, now);
                            let _ = reply.send(ended);
                        }
                        Cmd::DropUser(user, reply) => {
                            let n = self.engine.drop_links_of(&user, now);
                            tracing::info!(%user, sockets = n, "test hook: dropped links");
                            let _ = reply.send(n);
                        }
                        Cmd::Shutdown(reply) => {
                            self.engine.shutdown(now);
                            self.flush();
                            let _ = reply.send(());
                            return;
                        }
                    }
                    self.flush();
                }
                _ = sleep => {
                    self.engine.handle_timeout(now_ms());
                    self.flush();
                }
            }
        }
    }
}
