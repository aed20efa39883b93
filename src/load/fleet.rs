//! N sessions in pairs, each pair in an active call, driven through [`Phase`]s by one
//! coordinator that tallies what the sessions report; and what they saw, summed over
//! all pairs ([`Outcome`]).

use super::report::Delivery;
use super::session::{self, Note, Phase, SessionResult, SessionSpec, Shared};
use super::settings::Settings;
use crate::native::LinkBreak;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant as TokioInstant;

/// A failed figure, as the I/O error every figure returns.
pub(super) fn io_err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// A short random-enough prefix so identities never collide with another run against
/// the same server.
pub(super) fn run_prefix(kind: &str) -> String {
    let mut b = [0u8; 4];
    let _ = getrandom::getrandom(&mut b);
    format!("{kind}{}", crate::engine::hex(&b))
}

/// What the coordinator has heard from the sessions.
pub(super) struct Tally {
    pub(super) connected: usize,
    pub(super) started: usize,
    pub(super) quiet: usize,
    /// Only events at or after this local epoch ms count as resumes/disconnects.
    pub(super) since: u64,
    pub(super) resumed: Vec<Option<(u64, bool)>>,
    pub(super) disconnected: Vec<Option<u64>>,
    pub(super) resumed_count: usize,
    pub(super) disconnected_count: usize,
}

impl Tally {
    fn absorb(&mut self, note: Note) {
        match note {
            Note::Connected => self.connected += 1,
            Note::CallStarted => self.started += 1,
            Note::Quiet => self.quiet += 1,
            Note::Resumed { idx, at, recovered } => {
                if at >= self.since && self.resumed[idx].is_none() {
                    self.resumed[idx] = Some((at, recovered));
                    self.resumed_count += 1;
                }
            }
            Note::Disconnected { idx, at } => {
                if at >= self.since && self.disconnected[idx].is_none() {
                    self.disconnected[idx] = Some(at);
                    self.disconnected_count += 1;
                }
            }
        }
    }
}

/// N sessions in pairs, driven through phases.
pub(super) struct Fleet {
    pub(super) n: usize,
    phase: watch::Sender<Phase>,
    breaks: watch::Sender<Option<LinkBreak>>,
    notes: mpsc::UnboundedReceiver<Note>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<SessionResult>>,
    pub(super) tally: Tally,
}

impl Fleet {
    /// Starts `settings.sessions` (even) sessions against `url` in batches and waits
    /// until they are connected and paired into active calls.
    pub(super) async fn launch(
        url: impl Fn(usize) -> String,
        settings: &Settings,
        prefix: &str,
    ) -> io::Result<Fleet> {
        let n = settings.sessions.max(2).div_ceil(2) * 2;
        let (phase_tx, phase_rx) = watch::channel(Phase::Connect);
        let (breaks_tx, breaks_rx) = watch::channel(None);
        let (notes_tx, notes_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            phase: phase_rx,
            breaks: breaks_rx,
            notes: notes_tx,
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            in_order: (0..n).map(|_| AtomicU64::new(0)).collect(),
            rate: settings.rate,
            pad: "x".repeat(settings.pad_bytes),
        });
        let mut fleet = Fleet {
            n,
            phase: phase_tx,
            breaks: breaks_tx,
            notes: notes_rx,
            shared,
            tasks: Vec::with_capacity(n),
            tally: Tally {
                connected: 0,
                started: 0,
                quiet: 0,
                since: u64::MAX,
                resumed: vec![None; n],
                disconnected: vec![None; n],
                resumed_count: 0,
                disconnected_count: 0,
            },
        };
        let deadline = TokioInstant::now() + settings.setup_timeout;
        let batch = settings.batch.max(2);
        let mut started = 0;
        while started < n {
            let end = (started + batch).min(n);
            for idx in started..end {
                let spec = SessionSpec {
                    idx,
                    source: (!settings.client_sources.is_empty())
                        .then(|| settings.client_sources[idx % settings.client_sources.len()]),
                    user: format!("{prefix}-{idx}"),
                    peer: format!("{prefix}-{}", idx ^ 1),
                    caller: idx % 2 == 0,
                    url: url(idx),
                };
                fleet
                    .tasks
                    .push(tokio::spawn(session::run(spec, fleet.shared.clone())));
            }
            started = end;
            if !fleet.wait(deadline, |t| t.connected >= end).await {
                return Err(io_err(format!(
                    "only {} of {end} sessions connected within the setup timeout",
                    fleet.tally.connected
                )));
            }
        }
        fleet.set(Phase::Pair);
        if !fleet.wait(deadline, |t| t.started >= n).await {
            return Err(io_err(format!(
                "only {} of {n} sessions got into their call within the setup timeout",
                fleet.tally.started
            )));
        }
        fleet.set(Phase::Idle);
        Ok(fleet)
    }

    pub(super) fn set(&self, phase: Phase) {
        let _ = self.phase.send(phase);
    }

    /// Every session breaks its own socket `how` (no proxy). Returns how many were told.
    pub(super) fn break_links(&self, how: LinkBreak) -> usize {
        let _ = self.breaks.send(Some(how));
        self.n
    }

    /// Absorbs notes until `done` holds (true) or `until` passes (false).
    pub(super) async fn wait(
        &mut self,
        until: TokioInstant,
        done: impl Fn(&Tally) -> bool,
    ) -> bool {
        loop {
            while let Ok(note) = self.notes.try_recv() {
                self.tally.absorb(note);
            }
            if done(&self.tally) {
                return true;
            }
            match tokio::time::timeout_at(until, self.notes.recv()).await {
                Ok(Some(note)) => self.tally.absorb(note),
                Ok(None) => return done(&self.tally),
                Err(_) => return false,
            }
        }
    }

    /// Starts a new measurement at local epoch ms `since` (one step of a rolling
    /// restart): the resumes and disconnects counted so far are returned and
    /// forgotten.
    pub(super) fn rearm(&mut self, since: u64) -> Vec<Option<(u64, bool)>> {
        self.absorb_pending();
        let n = self.n;
        self.tally.since = since;
        self.tally.resumed_count = 0;
        self.tally.disconnected_count = 0;
        self.tally.disconnected = vec![None; n];
        std::mem::replace(&mut self.tally.resumed, vec![None; n])
    }

    /// Absorbs whatever notes are waiting.
    pub(super) fn absorb_pending(&mut self) {
        while let Ok(note) = self.notes.try_recv() {
            self.tally.absorb(note);
        }
    }

    /// Stops sending and waits until every payload sent has arrived (or `timeout`).
    pub(super) async fn quiesce(&mut self, timeout: Duration) -> bool {
        self.set(Phase::Quiet);
        let deadline = TokioInstant::now() + timeout;
        let n = self.n;
        if !self.wait(deadline, |t| t.quiet >= n).await {
            return false;
        }
        loop {
            let complete = (0..n).all(|i| {
                self.shared.in_order[i].load(Ordering::Relaxed)
                    >= self.shared.sent[i ^ 1].load(Ordering::Relaxed)
            });
            if complete {
                return true;
            }
            if TokioInstant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.absorb_pending();
        }
    }

    /// Stops every session and collects what each saw.
    pub(super) async fn finish(mut self) -> Vec<SessionResult> {
        self.set(Phase::Stop);
        let mut results = Vec::with_capacity(self.n);
        for task in self.tasks.drain(..) {
            let r = match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(r)) => r,
                _ => SessionResult {
                    setup_failed: true,
                    ..SessionResult::default()
                },
            };
            results.push(r);
        }
        results
    }
}

/// Message and call outcomes over all pairs.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) sent: u64,
    pub(super) delivered: u64,
    pub(super) lost: u64,
    pub(super) doubled: u64,
    pub(super) reordered: u64,
    pub(super) calls_lost: usize,
    pub(super) duplicate_calls: usize,
    pub(super) setup_failures: usize,
    pub(super) errors: u64,
    pub(super) samples: Vec<String>,
    pub(super) sessions_lost: usize,
}

impl Outcome {
    /// The report's counts: these, whether the drain finished, and the duplicate calls
    /// (the clients' count, or more when the server counted more).
    pub(super) fn delivery(&self, drained: bool, duplicate_calls: usize) -> Delivery {
        Delivery {
            msgs_sent: self.sent,
            msgs_delivered: self.delivered,
            drained,
            msgs_lost: self.lost,
            msgs_doubled: self.doubled,
            msgs_reordered: self.reordered,
            calls_lost: self.calls_lost,
            duplicate_calls: self.duplicate_calls.max(duplicate_calls),
            sessions_lost: self.sessions_lost,
        }
    }
}

pub(super) fn outcome(results: &[SessionResult]) -> Outcome {
    let mut o = Outcome::default();
    for (i, r) in results.iter().enumerate() {
        let peer_sent = results.get(i ^ 1).map_or(0, |p| p.sent);
        o.sent += r.sent;
        for n in 0..peer_sent as usize {
            match r.counts.get(n).copied().unwrap_or(0) {
                0 => o.lost += 1,
                c => {
                    o.delivered += 1;
                    o.doubled += u64::from(c - 1);
                }
            }
        }
        // Anything numbered past what the partner sent would be invented.
        o.doubled += r
            .counts
            .iter()
            .skip(peer_sent as usize)
            .map(|c| u64::from(*c))
            .sum::<u64>();
        o.reordered += r.reordered;
        o.errors += r.errors;
        if r.session_lost > 0 {
            o.sessions_lost += 1;
        }
        if r.setup_failed {
            o.setup_failures += 1;
        }
        for s in &r.error_samples {
            if o.samples.len() < 5 && !o.samples.contains(s) {
                o.samples.push(s.clone());
            }
        }
        if i % 2 == 0 {
            let p = results.get(i + 1);
            let ok = r.call_ok && p.is_some_and(|p| p.call_ok);
            if !ok {
                o.calls_lost += 1;
            }
            let most = r.calls_in_map.max(p.map_or(0, |p| p.calls_in_map));
            o.duplicate_calls += most.saturating_sub(1);
        }
    }
    o
}

/// Stops the fleet; returns the session results and the resume tally.
pub(super) async fn fleet_finish(
    mut fleet: Fleet,
) -> (Vec<SessionResult>, Vec<Option<(u64, bool)>>) {
    fleet.absorb_pending();
    let resumed = std::mem::take(&mut fleet.tally.resumed);
    (fleet.finish().await, resumed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_counts_lost_doubled_and_calls() {
        let a = SessionResult {
            sent: 3,
            counts: vec![1, 1],
            call_ok: true,
            calls_in_map: 1,
            ..Default::default()
        };
        let b = SessionResult {
            sent: 2,
            counts: vec![1, 2, 1],
            call_ok: true,
            calls_in_map: 1,
            ..Default::default()
        };
        let o = outcome(&[a, b]);
        assert_eq!(o.sent, 5);
        assert_eq!(o.lost, 0);
        assert_eq!(o.doubled, 1);
        assert_eq!(o.delivered, 5);
        assert_eq!(o.calls_lost, 0);

        let a = SessionResult {
            sent: 2,
            counts: vec![0, 1],
            call_ok: true,
            calls_in_map: 2,
            ..Default::default()
        };
        let b = SessionResult {
            sent: 2,
            counts: vec![1],
            call_ok: false,
            calls_in_map: 1,
            ..Default::default()
        };
        let o = outcome(&[a, b]);
        assert_eq!(o.lost, 2);
        assert_eq!(o.calls_lost, 1);
        assert_eq!(o.duplicate_calls, 1);
    }
}
