//! A short chaos soak of the real `holdfast-load chaos` against the real
//! `holdfast-server`: random link faults, reloads and call churn for 25 s, then the
//! oracle's five counts must be zero, and enough calls must have started for that to
//! mean something. A failure prints the report (with its seed, to repeat the run).

use std::process::Command;

#[test]
fn a_short_chaos_soak_loses_doubles_and_sticks_nothing() {
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast-load"))
        .args([
            "chaos",
            "--sessions",
            "40",
            "--duration",
            "25s",
            "--settle",
            "30s",
            "--max-time",
            "120s",
            "--json",
        ])
        .output()
        .expect("holdfast-load runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {stdout}\n{stderr}"));
    let show = format!("{report:#}\n{stderr}");
    for field in [
        "calls_lost",
        "duplicate_calls",
        "stuck_calls",
        "messages_lost",
        "messages_doubled",
    ] {
        assert_eq!(report[field], 0, "{field} must be 0: {show}");
    }
    assert!(
        report["calls_started"].as_u64().unwrap_or(0) >= 20,
        "too few calls for the counts to mean anything: {show}"
    );
    assert!(
        report["messages_sent"].as_u64().unwrap_or(0) >= 200,
        "{show}"
    );
    assert_eq!(report["server_restarts"], 0, "{show}");
    assert!(report["ends_by_reason"].is_object(), "{show}");
    assert!(out.status.success(), "exit status {:?}: {show}", out.status);
}
