//! What every report of the load tool's storms and restarts must say, whatever the
//! figure.
#![allow(dead_code)] // each test binary uses a different part

use holdfast::load::Delivery;

/// Asserts that a run (a storm, a restart, a rolling restart) had every payload sent
/// arrive once and in order, and lost or doubled no call and no session. `show`: the
/// whole report, for the failure message.
pub fn assert_nothing_lost(d: &Delivery, show: &str) {
    assert!(
        d.drained,
        "every payload arrived before the drain timeout: {show}"
    );
    assert!(d.msgs_sent > 0, "payloads flowed: {show}");
    assert_eq!(d.msgs_delivered, d.msgs_sent, "{show}");
    assert_eq!(d.msgs_lost, 0, "{show}");
    assert_eq!(d.msgs_doubled, 0, "{show}");
    assert_eq!(d.msgs_reordered, 0, "{show}");
    assert_eq!(d.calls_lost, 0, "{show}");
    assert_eq!(d.duplicate_calls, 0, "{show}");
    assert_eq!(d.sessions_lost, 0, "{show}");
}
