//! Found by the chaos soak (a black hole that began after the socket opened, before the
//! server's welcome): the page waited for the welcome forever, `reconnecting` with no
//! further attempt. The connect timeout was armed when the socket was asked for and
//! measured from the last thing heard, and opening counts as heard, so when it fired
//! it was not yet due and was never armed again. Now the welcome gets its own
//! `connect_timeout_ms` from the open, then the attempt is given up and retried.

use holdfast::engine::client::{ClientConfig, ClientEngine, Event, FailureReason, Io};

#[test]
fn a_socket_that_opens_but_never_gets_a_welcome_is_given_up_and_retried() {
    let config = ClientConfig::new("alice");
    let timeout = config.connect_timeout_ms;
    let mut e = ClientEngine::new(config);
    e.connect(0);
    let Some(Io::Open(first)) = e.poll_io() else {
        panic!("no socket asked for")
    };
    // The socket opens a moment later; the hello goes out and nothing ever answers.
    e.handle_open(first, 300);
    while e.poll_transmit().is_some() {}
    let mut now = 300;
    let mut reopened_at = None;
    while now < 300 + 4 * timeout && reopened_at.is_none() {
        now = e.poll_timeout().map_or(now + 100, |t| t.max(now + 1));
        e.handle_timeout(now);
        while let Some(io) = e.poll_io() {
            if matches!(io, Io::Open(l) if l != first) {
                reopened_at = Some(now);
            }
        }
    }
    let events: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
    let failure = events.iter().find_map(|ev| match ev {
        Event::ConnectionFailed(f) => Some(f.clone()),
        _ => None,
    });
    let failure = failure.expect("the silent attempt is reported as failed");
    assert_eq!(failure.reason, FailureReason::Timeout);
    assert!(
        failure.message.contains("welcome"),
        "it says what did not arrive: {}",
        failure.message
    );
    assert!(
        failure.at <= 300 + timeout + 50,
        "given up one connect timeout after the open, not later: {}",
        failure.at
    );
    let reopened_at = reopened_at.expect("a new attempt follows");
    assert!(reopened_at <= 300 + 3 * timeout, "retried at {reopened_at}");
}
