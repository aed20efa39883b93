//! One simulated user: a [`NativeClient`] (the real client engine) that connects, gets
//! into a call with its partner, sends numbered payloads when told to, and checks that
//! every payload of its partner arrives exactly once and in order.

use crate::engine::client::{CallPhase, ClientConfig, Event};
use crate::native::{LinkBreak, NativeClient};
use crate::protocol::{CallId, ErrorCode};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What every session should be doing now (set by the coordinator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Connect and wait.
    Connect,
    /// Callers invite their partner; callees accept.
    Pair,
    /// In the call, quiet (heartbeats only).
    Idle,
    /// Send payloads at the configured rate.
    Send,
    /// Stop sending (acknowledge with [`Note::Quiet`]); keep receiving.
    Quiet,
    /// Report and stop.
    Stop,
}

/// What sessions tell the coordinator, as it happens.
#[derive(Debug, Clone)]
pub(crate) enum Note {
    Connected,
    CallStarted,
    /// `at`: local epoch ms at which the engine reported it.
    Resumed {
        idx: usize,
        at: u64,
        recovered: bool,
    },
    Disconnected {
        idx: usize,
        at: u64,
    },
    /// Sending has stopped; `sent` is final.
    Quiet,
}

/// State shared by the coordinator and all sessions of a run.
pub(crate) struct Shared {
    pub phase: watch::Receiver<Phase>,
    /// Set once, when every session is to break its own socket this way (a storm
    /// without a proxy).
    pub breaks: watch::Receiver<Option<LinkBreak>>,
    pub notes: mpsc::UnboundedSender<Note>,
    /// Payloads each session has handed to its engine.
    pub sent: Vec<AtomicU64>,
    /// Highest `n` up to which each session has received every payload of its partner.
    pub in_order: Vec<AtomicU64>,
    /// Payloads per second per session while sending.
    pub rate: f64,
    /// Extra bytes carried by every payload.
    pub pad: String,
}

/// Who a session is.
#[derive(Debug, Clone)]
pub(crate) struct SessionSpec {
    pub idx: usize,
    /// The address its sockets are bound to (None: the kernel's choice).
    pub source: Option<std::net::IpAddr>,
    pub user: String,
    pub peer: String,
    pub caller: bool,
    pub url: String,
}

/// What a session saw, for the final tally.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionResult {
    pub sent: u64,
    /// How often each payload `n` (index `n - 1`) arrived.
    pub counts: Vec<u32>,
    /// Payloads that arrived after a higher number.
    pub reordered: u64,
    /// The call is still in the engine's map, active, and the only one.
    pub call_ok: bool,
    /// Calls in the engine's map at the end.
    pub calls_in_map: usize,
    /// Calls that ended, moved away, or were found missing.
    pub call_ended: u64,
    pub session_lost: u64,
    pub send_refused: u64,
    /// Server or engine errors seen (first few kept in `error_samples`).
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Never got into its call.
    pub setup_failed: bool,
    /// Send→receive time of each partner payload, in microseconds (the payload carries
    /// its send time; both ends share this process's clock).
    pub relay_us: Vec<u32>,
}

/// Wall-clock microseconds since the epoch (payloads carry their send time in it).
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

struct State {
    idx: usize,
    call: Option<CallId>,
    connected: bool,
    invite_pending: bool,
    invite_attempts: u32,
    result: SessionResult,
    contiguous: u64,
    last_n: u64,
}

impl State {
    fn error(&mut self, what: String) {
        self.result.errors += 1;
        if self.result.error_samples.len() < 3 {
            self.result.error_samples.push(what);
        }
    }

    fn payload(&mut self, n: u64, shared: &Shared) {
        let i = (n as usize).saturating_sub(1);
        if self.result.counts.len() <= i {
            self.result.counts.resize(i + 1, 0);
        }
        self.result.counts[i] = self.result.counts[i].saturating_add(1);
        if n < self.last_n {
            self.result.reordered += 1;
        }
        self.last_n = self.last_n.max(n);
        while self
            .result
            .counts
            .get(self.contiguous as usize)
            .is_some_and(|c| *c > 0)
        {
            self.contiguous += 1;
        }
        shared.in_order[self.idx].store(self.contiguous, Ordering::Relaxed);
    }
}

/// Runs one session until the coordinator says [`Phase::Stop`] (or its channels close).
pub(crate) async fn run(spec: SessionSpec, shared: Arc<Shared>) -> SessionResult {
    let mut config = ClientConfig::new(spec.user.clone());
    // Distinct jitter per client, as distinct browsers have.
    config.seed = 0x5eed ^ (spec.idx as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut client = NativeClient::start_from(&spec.url, spec.source, config, Vec::new());
    let mut phase_rx = shared.phase.clone();
    let mut phase = *phase_rx.borrow_and_update();
    let mut breaks_rx = shared.breaks.clone();
    breaks_rx.mark_unchanged();
    let mut breaks_open = true;
    let mut st = State {
        idx: spec.idx,
        call: None,
        connected: false,
        invite_pending: false,
        invite_attempts: 0,
        result: SessionResult::default(),
        contiguous: 0,
        last_n: 0,
    };
    let period = Duration::from_secs_f64(1.0 / shared.rate.max(0.001));
    // Spread the senders over the period so the stream is steady, not pulsed.
    let offset = period.mul_f64(((spec.idx * 7919) % 1000) as f64 / 1000.0);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let sending = phase == Phase::Send && shared.rate > 0.0 && st.call.is_some();
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = client.recv_event() => {
                let Some((at, ev)) = ev else { break };
                on_event(&spec, &shared, &client, &mut st, at, ev, &mut retry_at).await;
            }
            changed = phase_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let next = *phase_rx.borrow_and_update();
                if next == Phase::Quiet && phase < Phase::Quiet {
                    let _ = shared.notes.send(Note::Quiet);
                }
                if next == Phase::Send && phase != Phase::Send {
                    // Ticks missed while not sending would all fire now, at once in
                    // every session: start the spread schedule afresh instead.
                    ticker.reset_at(tokio::time::Instant::now() + offset);
                }
                phase = next;
                if phase == Phase::Stop {
                    break;
                }
            }
            changed = breaks_rx.changed(), if breaks_open => {
                match changed {
                    Ok(()) => {
                        if let Some(how) = *breaks_rx.borrow_and_update() {
                            client.break_link(how);
                        }
                    }
                    Err(_) => breaks_open = false,
                }
            }
            _ = ticker.tick(), if sending => {
                send_next(&spec, &shared, &client, &mut st).await;
            }
            _ = retry => {
                retry_at = None;
            }
        }
        if phase >= Phase::Pair
            && spec.caller
            && st.connected
            && st.call.is_none()
            && !st.invite_pending
            && retry_at.is_none()
            && st.invite_attempts < 20
        {
            st.invite_attempts += 1;
            let peer = spec.peer.clone();
            match client
                .with(move |e, now| e.call(&peer, None, None, now))
                .await
            {
                Ok(_) => st.invite_pending = true,
                Err(e) => {
                    st.error(format!("invite refused locally: {e}"));
                    retry_at = Some(tokio::time::Instant::now() + Duration::from_millis(200));
                }
            }
        }
    }
    // The final look at the active-call map.
    let call = st.call.clone();
    let (in_map, ok) = client
        .with(move |e, _| {
            let ok = call.as_deref().is_some_and(|id| {
                e.call_info(id)
                    .is_some_and(|c| c.phase == CallPhase::Active)
            });
            (e.calls().count(), ok)
        })
        .await;
    st.result.calls_in_map = in_map;
    st.result.call_ok = ok && in_map == 1;
    if st.call.is_some() && !ok && st.result.call_ended == 0 {
        st.result.call_ended = 1;
    }
    st.result.setup_failed = st.call.is_none();
    st.result.sent = shared.sent[spec.idx].load(Ordering::Relaxed);
    client.close_tab().await;
    st.result
}

async fn send_next(spec: &SessionSpec, shared: &Shared, client: &NativeClient, st: &mut State) {
    let Some(call) = st.call.clone() else { return };
    let n = shared.sent[spec.idx].load(Ordering::Relaxed) + 1;
    let t = now_us();
    let payload = if shared.pad.is_empty() {
        json!({ "n": n, "t": t })
    } else {
        json!({ "n": n, "t": t, "pad": shared.pad })
    };
    match client.with(move |e, now| e.send(&call, payload, now)).await {
        Ok(_) => shared.sent[spec.idx].store(n, Ordering::Relaxed),
        Err(e) => {
            st.result.send_refused += 1;
            st.error(format!("send refused locally: {e}"));
        }
    }
}

async fn on_event(
    spec: &SessionSpec,
    shared: &Shared,
    client: &NativeClient,
    st: &mut State,
    at: u64,
    ev: Event,
    retry_at: &mut Option<tokio::time::Instant>,
) {
    match ev {
        Event::Connected { .. } if !st.connected => {
            st.connected = true;
            let _ = shared.notes.send(Note::Connected);
        }
        Event::Resumed { recovered } => {
            let _ = shared.notes.send(Note::Resumed {
                idx: spec.idx,
                at,
                recovered,
            });
        }
        Event::Disconnected { .. } => {
            let _ = shared.notes.send(Note::Disconnected { idx: spec.idx, at });
        }
        Event::SessionLost { .. } => st.result.session_lost += 1,
        Event::IncomingCall { call } if !spec.caller => {
            let id = call.id.clone();
            if let Err(e) = client.with(move |e, now| e.accept(&id, now)).await {
                st.error(format!("accept refused locally: {e}"));
            }
        }
        Event::CallStarted { call, .. } if st.call.is_none() => {
            st.call = Some(call.id);
            st.invite_pending = false;
            let _ = shared.notes.send(Note::CallStarted);
        }
        // Ringing (CallStarted follows), or an existing active call.
        Event::OutgoingCall { call, .. }
            if call.phase == CallPhase::Active && st.call.is_none() =>
        {
            st.call = Some(call.id);
            st.invite_pending = false;
            let _ = shared.notes.send(Note::CallStarted);
        }
        Event::CallEnded { call, reason, .. } => {
            if st.call.as_deref() == Some(call.as_str()) {
                st.result.call_ended += 1;
                st.error(format!("call ended: {}", reason.as_str()));
            } else if spec.caller && st.call.is_none() {
                // The invite failed (e.g. the partner was not there yet): try again.
                st.invite_pending = false;
                *retry_at = Some(tokio::time::Instant::now() + Duration::from_millis(200));
            }
        }
        Event::CallMoved { call } if st.call.as_deref() == Some(call.as_str()) => {
            st.result.call_ended += 1;
            st.error("call moved away".into());
        }
        Event::Signal { payload, .. } => {
            if let Some(n) = payload.get("n").and_then(|n| n.as_u64()) {
                st.payload(n, shared);
            }
            if let Some(t) = payload.get("t").and_then(|t| t.as_u64()) {
                let us = now_us().saturating_sub(t).min(u64::from(u32::MAX)) as u32;
                st.result.relay_us.push(us);
            }
        }
        Event::Error { code, message, .. } => {
            if spec.caller && st.call.is_none() && st.invite_pending {
                st.invite_pending = false;
                *retry_at = Some(tokio::time::Instant::now() + Duration::from_millis(200));
            }
            // A superseded socket is the expected end of a half-open one, and
            // `server-restarting` the expected notice of a graceful restart.
            if code != ErrorCode::Superseded && code != ErrorCode::ServerRestarting {
                st.error(format!("{}: {message}", code.as_str()));
            }
        }
        _ => {}
    }
}
