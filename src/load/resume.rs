//! Single-session resume latency: one pair in a call; one side's link is reset again
//! and again while both keep sending. The figure is the time from the link coming back
//! (the engine's `online` input, as the browser's `online` event) to `resumed`, and
//! every payload must arrive exactly once both ways.

use super::fleet::{io_err, run_prefix};
use super::proxy::{Action, Proxy};
use super::report::ResumeLatencyReport;
use super::settings::Settings;
use super::stats;
use super::target::{Server, ServerSpec};
use crate::engine::client::{ClientConfig, Event};
use crate::native::NativeClient;
use std::io;
use std::time::Duration;
use tokio::time::Instant as TokioInstant;

/// One pair in a call; one side's link is reset again and again while both keep
/// sending. Measures the time from the link coming back (the engine's `online` input,
/// as the browser's `online` event) to `resumed`.
pub async fn resume_latency(
    spec: &ServerSpec,
    settings: &Settings,
) -> io::Result<ResumeLatencyReport> {
    let server = Server::start(spec).await?;
    let result = resume_latency_on(&server, settings).await;
    server.stop().await;
    result
}

/// Payloads received by one client, by number, and errors it was told of.
#[derive(Default)]
struct Received {
    counts: Vec<u32>,
    errors: Vec<String>,
}

impl Received {
    fn note(&mut self, ev: &Event) {
        match ev {
            Event::Signal { payload, .. } => {
                if let Some(n) = payload.get("n").and_then(|n| n.as_u64()) {
                    let i = (n as usize).saturating_sub(1);
                    if self.counts.len() <= i {
                        self.counts.resize(i + 1, 0);
                    }
                    self.counts[i] += 1;
                }
            }
            Event::Error { code, message, .. } => {
                self.errors.push(format!("{}: {message}", code.as_str()));
            }
            _ => {}
        }
    }

    fn complete(&self, sent: u64) -> bool {
        self.counts.len() as u64 >= sent && self.counts.iter().take(sent as usize).all(|c| *c > 0)
    }

    fn lost_doubled(&self, sent: u64) -> (u64, u64) {
        let lost = (0..sent as usize)
            .filter(|i| self.counts.get(*i).copied().unwrap_or(0) == 0)
            .count() as u64;
        let doubled = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if (i as u64) < sent {
                    u64::from(c.saturating_sub(1))
                } else {
                    u64::from(*c)
                }
            })
            .sum();
        (lost, doubled)
    }
}

/// Waits for the first event `pick` accepts, noting payloads on the way.
async fn await_event<T>(
    c: &mut NativeClient,
    rx: &mut Received,
    timeout: Duration,
    mut pick: impl FnMut(u64, &Event) -> Option<T>,
) -> io::Result<T> {
    let deadline = TokioInstant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, c.recv_event()).await {
            Ok(Some((at, ev))) => {
                rx.note(&ev);
                if let Some(t) = pick(at, &ev) {
                    return Ok(t);
                }
            }
            Ok(None) => return Err(io_err("client stopped")),
            Err(_) => return Err(io_err("timed out waiting for a client event")),
        }
    }
}

async fn send_n(c: &NativeClient, call: &str, n: u64) -> io::Result<()> {
    let call = call.to_owned();
    c.with(move |e, now| e.send(&call, serde_json::json!({ "n": n }), now))
        .await
        .map(|_| ())
        .map_err(|e| io_err(format!("send refused: {e}")))
}

/// Pause between two drops of the single-session figure.
const RESUME_GAP: Duration = Duration::from_millis(80);

async fn resume_latency_on(
    server: &Server,
    settings: &Settings,
) -> io::Result<ResumeLatencyReport> {
    const WAIT: Duration = Duration::from_secs(10);
    let proxy_a = Proxy::start(server.addr).await?;
    let proxy_b = Proxy::start(server.addr).await?;
    let prefix = run_prefix("rl");
    let (ua, ub) = (format!("{prefix}-a"), format!("{prefix}-b"));
    let mut a = NativeClient::start(
        &proxy_a.ws_url(&server.path),
        ClientConfig::new(ua.clone()),
        vec![],
    );
    let mut b = NativeClient::start(
        &proxy_b.ws_url(&server.path),
        ClientConfig::new(ub.clone()),
        vec![],
    );
    let (mut ra, mut rb) = (Received::default(), Received::default());
    for (c, r) in [(&mut a, &mut ra), (&mut b, &mut rb)] {
        await_event(c, r, WAIT, |_, e| {
            matches!(e, Event::Connected { .. }).then_some(())
        })
        .await?;
    }
    let peer = ub.clone();
    a.with(move |e, now| e.call(&peer, None, None, now))
        .await
        .map_err(|e| io_err(format!("invite refused: {e}")))?;
    let call = await_event(&mut b, &mut rb, WAIT, |_, e| match e {
        Event::IncomingCall { call } => Some(call.id.clone()),
        _ => None,
    })
    .await?;
    let id = call.clone();
    b.with(move |e, now| e.accept(&id, now))
        .await
        .map_err(|e| io_err(format!("accept refused: {e}")))?;
    for (c, r) in [(&mut a, &mut ra), (&mut b, &mut rb)] {
        await_event(c, r, WAIT, |_, e| {
            matches!(e, Event::CallStarted { .. }).then_some(())
        })
        .await?;
    }
    let (mut sent_a, mut sent_b) = (0u64, 0u64);
    let mut latencies = Vec::with_capacity(settings.iterations);
    let mut recovered = 0;
    for _ in 0..settings.iterations {
        // The network goes away: the browser says offline and the socket dies.
        a.with(|e, now| e.handle_online(false, now)).await;
        proxy_a.apply_all(Action::Reset);
        await_event(&mut a, &mut ra, WAIT, |_, e| {
            matches!(e, Event::Disconnected { .. }).then_some(())
        })
        .await?;
        // Both keep talking meanwhile: replay both ways on resume.
        for _ in 0..2 {
            sent_b += 1;
            send_n(&b, &call, sent_b).await?;
            sent_a += 1;
            send_n(&a, &call, sent_a).await?;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The network is back.
        let back = a
            .with(|e, now| {
                e.handle_online(true, now);
                now
            })
            .await;
        let (at, ok) = await_event(&mut a, &mut ra, WAIT, |at, e| match e {
            Event::Resumed { recovered } => Some((at, *recovered)),
            _ => None,
        })
        .await?;
        latencies.push(at.saturating_sub(back) as f64);
        if ok {
            recovered += 1;
        }
        // Stay well inside the server's per-socket rate limit (50 frames/s by default):
        // each round costs each side about four frames.
        tokio::time::sleep(RESUME_GAP).await;
    }
    // Everything sent must arrive.
    let deadline = TokioInstant::now() + settings.drain_timeout;
    loop {
        for ev in a.drain_events() {
            ra.note(&ev);
        }
        for ev in b.drain_events() {
            rb.note(&ev);
        }
        if (ra.complete(sent_b) && rb.complete(sent_a)) || TokioInstant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (lost_a, doubled_a) = ra.lost_doubled(sent_b);
    let (lost_b, doubled_b) = rb.lost_doubled(sent_a);
    let errors: Vec<String> = ra.errors.iter().chain(&rb.errors).cloned().collect();
    a.close_tab().await;
    b.close_tab().await;
    proxy_a.shutdown().await;
    proxy_b.shutdown().await;
    Ok(ResumeLatencyReport {
        iterations: settings.iterations,
        latency: stats::summarize(&latencies),
        recovered,
        msgs_sent: sent_a + sent_b,
        msgs_lost: lost_a + lost_b,
        msgs_doubled: doubled_a + doubled_b,
        errors: errors.len(),
        error_samples: errors.into_iter().take(3).collect(),
    })
}
