//! Why a connection attempt failed: every attempt that ends before the server's welcome
//! is reported once, as [`Event::ConnectionFailed`], and kept in the snapshot until the
//! next welcome ([`ClientEngine::last_failure`]).
//!
//! A browser's WebSocket tells nothing about why it did not open: a server that is down
//! and a URL where no Holdfast server answers (a 404, an HTML page) both look like a
//! plain `close`. So when a socket fails before the first welcome, the engine asks the
//! driver for an HTTP probe of the socket URL ([`Io::Probe`]): a Holdfast server answers
//! a plain `GET` of its socket URL with a small JSON body (see
//! [`crate::protocol::ProbeAnswer`]), anything else is not Holdfast, and no answer at all
//! means unreachable. The driver reports what it found with
//! [`ClientEngine::handle_probe_result`]; if that takes longer than
//! [`ClientConfig::probe_timeout_ms`](super::ClientConfig::probe_timeout_ms) the failure
//! is reported as `unreachable`, so the app always hears within about a second.
//!
//! Once this page has had a session the endpoint is known to be Holdfast: a failed
//! reconnect attempt is reported as `unreachable` at once, without a probe.

use super::{ClientEngine, ConnectionState, Event, Io, LinkId, Timer};
use crate::protocol::{ErrorCode, PROTOCOL_VERSION};
use serde::Serialize;

/// Why a connection attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum FailureReason {
    /// Nothing answered: the server is down, the host or port is wrong, or the network
    /// is cut. Also a Holdfast server that answers HTTP but whose socket did not open
    /// (a proxy without WebSocket support, an origin the server does not allow).
    Unreachable,
    /// Something answered at that URL, but not a Holdfast server (a 404, a web page):
    /// the URL or its path is wrong.
    NotFound,
    /// The server refused the token (`code`: `auth-failed` or `token-expired`). The
    /// client stops retrying until `setToken()`.
    AuthFailed,
    /// The server speaks another protocol version (`code`: `unsupported-version` when it
    /// said so on the socket). The client stops retrying.
    Version,
    /// The socket did not open, or the server's welcome did not arrive, within the
    /// connect timeout.
    Timeout,
    /// The server refused this attempt for another reason it gave (`code`, e.g.
    /// `too-many-sessions`, `server-shutdown`); the client retries with backoff.
    Refused,
}

/// What the driver's HTTP probe of the socket URL found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// No HTTP answer at all (connection refused, DNS, TLS or network error).
    Unreachable,
    /// An HTTP answer that is not Holdfast's probe answer; its status if the driver
    /// could read it.
    NotHoldfast { status: Option<u16> },
    /// A Holdfast server answered, speaking this protocol version.
    Holdfast { protocol: u32 },
}

/// One failed connection attempt, as the app sees it (the `connection-failed` event and
/// the snapshot's `lastFailure`). Times are local epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ConnectionFailure {
    /// Why it failed (see [`FailureReason`]).
    pub reason: FailureReason,
    /// The server's error code, when it gave one (`auth-failed`, `token-expired`,
    /// `unsupported-version`, `too-many-sessions`, …).
    pub code: Option<ErrorCode>,
    /// What happened, for people (not for matching: use `reason` and `code`).
    pub message: String,
    /// Which attempt failed (1 for the first of a streak).
    pub attempt: u32,
    /// When it failed.
    pub at: u64,
    /// Whether the client will try again by itself (false after `auth-failed`,
    /// `version`, or when it gave up; true while offline: it tries when back online).
    pub will_retry: bool,
    /// When the next attempt goes, if one is scheduled.
    pub next_attempt_at: Option<u64>,
}

/// A failed attempt waiting for the driver's probe.
#[derive(Debug)]
pub(super) struct PendingProbe {
    link: LinkId,
    failure: ConnectionFailure,
}

impl ClientEngine {
    /// The last failed connection attempt, until the next welcome.
    pub fn last_failure(&self) -> Option<&ConnectionFailure> {
        self.last_failure.as_ref()
    }

    /// The driver's answer to [`Io::Probe`] for `link`. Late answers (after the probe
    /// timed out, or for an older attempt) are ignored.
    pub fn handle_probe_result(&mut self, link: LinkId, result: ProbeResult, _now: u64) {
        if self.probe.as_ref().map(|p| p.link) != Some(link) {
            return;
        }
        let Some(PendingProbe { mut failure, .. }) = self.probe.take() else {
            return;
        };
        match result {
            ProbeResult::Unreachable => {
                failure.message = "no server answered at this URL".into();
            }
            ProbeResult::NotHoldfast { status } => {
                failure.reason = FailureReason::NotFound;
                failure.message = match status {
                    Some(s) => format!("no Holdfast server at this URL (HTTP {s})"),
                    None => "no Holdfast server at this URL".into(),
                };
            }
            ProbeResult::Holdfast { protocol } if protocol != PROTOCOL_VERSION => {
                failure.reason = FailureReason::Version;
                failure.message = format!(
                    "the server speaks protocol {protocol}; this client speaks {PROTOCOL_VERSION}"
                );
                self.stop_retrying();
                failure.will_retry = false;
                failure.next_attempt_at = None;
                self.events.push_back(Event::AuthFailed {
                    code: ErrorCode::UnsupportedVersion,
                    message: failure.message.clone(),
                });
            }
            ProbeResult::Holdfast { .. } => {
                failure.message = "the Holdfast server answers over HTTP but its WebSocket did \
                                   not open (a proxy without WebSocket support, or an origin \
                                   the server does not allow)"
                    .into();
            }
        }
        self.report_failure(failure);
    }

    /// A socket failed before the welcome (the link is already gone and the next
    /// attempt scheduled): probe while this page has never had a session, else report
    /// `unreachable` at once.
    pub(super) fn attempt_failed(&mut self, link: LinkId, attempt: u32, now: u64) {
        let mut failure = self.failure(FailureReason::Unreachable, None, attempt, now);
        if self.session.is_some() {
            failure.message = "the socket closed before the server's welcome".into();
            return self.report_failure(failure);
        }
        // An older attempt's probe still out: it has had its chance.
        self.flush_probe();
        self.io.push_back(Io::Probe(link));
        self.probe = Some(PendingProbe { link, failure });
        self.timers
            .schedule(now + self.config.probe_timeout_ms, Timer::Probe);
    }

    /// A failure the engine saw itself (a timeout, an error frame): reported at once.
    pub(super) fn attempt_refused(
        &mut self,
        reason: FailureReason,
        code: Option<ErrorCode>,
        message: String,
        attempt: u32,
        now: u64,
    ) {
        self.flush_probe();
        let mut failure = self.failure(reason, code, attempt, now);
        failure.message = message;
        self.report_failure(failure);
    }

    /// The probe timer fired.
    pub(super) fn probe_timed_out(&mut self, now: u64) {
        if self
            .probe
            .as_ref()
            .is_some_and(|p| now >= p.failure.at + self.config.probe_timeout_ms)
        {
            self.flush_probe();
        }
    }

    /// Reports a pending probe's failure as `unreachable` (its answer did not come in
    /// time, or something newer happened).
    pub(super) fn flush_probe(&mut self) {
        if let Some(PendingProbe { mut failure, .. }) = self.probe.take() {
            failure.message = "the socket did not open and no server answered in time".into();
            self.report_failure(failure);
        }
    }

    /// A welcome arrived: what failed before is over.
    pub(super) fn clear_failure(&mut self) {
        self.flush_probe();
        self.last_failure = None;
    }

    fn failure(
        &self,
        reason: FailureReason,
        code: Option<ErrorCode>,
        attempt: u32,
        now: u64,
    ) -> ConnectionFailure {
        let will_retry = matches!(
            self.state,
            ConnectionState::Connecting | ConnectionState::Reconnecting | ConnectionState::Offline
        );
        ConnectionFailure {
            reason,
            code,
            message: String::new(),
            attempt,
            at: now,
            will_retry,
            next_attempt_at: if will_retry {
                self.next_attempt_at
            } else {
                None
            },
        }
    }

    fn report_failure(&mut self, failure: ConnectionFailure) {
        self.last_failure = Some(failure.clone());
        self.events.push_back(Event::ConnectionFailed(failure));
    }

    /// No more attempts by ourselves (a version the server does not speak).
    fn stop_retrying(&mut self) {
        if matches!(
            self.state,
            ConnectionState::Connecting | ConnectionState::Reconnecting | ConnectionState::Offline
        ) {
            self.state = ConnectionState::AuthFailed;
        }
        self.next_attempt_at = None;
        if self
            .link
            .is_some_and(|(_, phase)| phase != super::link::LinkPhase::Ready)
        {
            self.abandon_link();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ClientConfig;
    use super::*;
    use crate::protocol::{ErrorBody, ServerFrame};

    fn failures(e: &mut ClientEngine) -> Vec<ConnectionFailure> {
        std::iter::from_fn(|| e.poll_event())
            .filter_map(|ev| match ev {
                Event::ConnectionFailed(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    /// A page whose first socket opened and sent its hello, then got `code` (fatal).
    fn refused_with(code: ErrorCode) -> ClientEngine {
        let mut e = ClientEngine::new(ClientConfig::new("alice"));
        e.connect(1_000);
        e.handle_open(1, 1_010);
        e.handle_frame(
            1,
            ServerFrame::Error(ErrorBody {
                code,
                message: "no".into(),
                fatal: true,
                re: None,
            }),
            1_020,
        );
        e
    }

    #[test]
    fn an_unsupported_version_from_the_server_is_reason_version_without_retry() {
        let mut e = refused_with(ErrorCode::UnsupportedVersion);
        let f = failures(&mut e);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].reason, FailureReason::Version);
        assert_eq!(f[0].code, Some(ErrorCode::UnsupportedVersion));
        assert_eq!(
            (f[0].at, f[0].will_retry, f[0].next_attempt_at),
            (1_020, false, None)
        );
        assert_eq!(e.state(), ConnectionState::AuthFailed);
        assert_eq!(e.last_failure(), Some(&f[0]));
    }

    #[test]
    fn an_expired_token_is_auth_failed_with_its_code() {
        let mut e = refused_with(ErrorCode::TokenExpired);
        let f = failures(&mut e);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].reason, FailureReason::AuthFailed);
        assert_eq!(f[0].code, Some(ErrorCode::TokenExpired));
        assert!(!f[0].will_retry);
    }

    #[test]
    fn another_refusal_before_the_welcome_is_refused_and_retried() {
        let mut e = refused_with(ErrorCode::TooManySessions);
        let f = failures(&mut e);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].reason, FailureReason::Refused);
        assert_eq!(f[0].code, Some(ErrorCode::TooManySessions));
        assert!(f[0].will_retry);
        assert!(f[0].next_attempt_at.is_some_and(|t| t > 1_020));
        assert_eq!(e.state(), ConnectionState::Connecting);
        // The server's close of that socket is not a second failure.
        e.handle_close(1, 1_030);
        assert_eq!(failures(&mut e), []);
    }
}
