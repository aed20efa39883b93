//! What every report of the load tool's storms and restarts must say, whatever the
//! figure.

/// Asserts that a load-tool report (a storm, a restart, a rolling restart) had every
/// payload sent arrive once and in order, and lost or doubled no call and no session.
/// A macro because the reports are different types with the same fields.
#[macro_export]
macro_rules! assert_nothing_lost {
    ($report:expr) => {{
        let r = &$report;
        let show = format!("{r:#?}");
        assert!(
            r.drained,
            "every payload arrived before the drain timeout: {show}"
        );
        assert!(r.msgs_sent > 0, "payloads flowed: {show}");
        assert_eq!(r.msgs_delivered, r.msgs_sent, "{show}");
        assert_eq!(r.msgs_lost, 0, "{show}");
        assert_eq!(r.msgs_doubled, 0, "{show}");
        assert_eq!(r.msgs_reordered, 0, "{show}");
        assert_eq!(r.calls_lost, 0, "{show}");
        assert_eq!(r.duplicate_calls, 0, "{show}");
        assert_eq!(r.sessions_lost, 0, "{show}");
    }};
}
