//! Conformance of the browser's wire codec (`holdfast::web::codec`, no serde) with the
//! protocol's serde definitions (`holdfast::protocol`, the specification, which the
//! server speaks), in headless Chromium (wasm-bindgen-test): every frame type both
//! ways, app-facing values against what serde would have written, and a randomised
//! round trip of generated frames (proptest). Needs no server.
//!
//! Every frame, message and event variant must appear in the hand-written lists below:
//! the `*_slot` functions match each enum exhaustively, so a variant added to the
//! protocol does not compile here until it is, and the tests check that every slot is
//! filled.
#![cfg(target_arch = "wasm32")]

use holdfast::engine::client::{
    CallPhase, ClientCall, ClientError, ClientSnapshot, ConnectionFailure, ConnectionState, Event,
    FailureReason, Goodbye, RejoinOffer, RejoinRecord, RejoinWithdrawn,
};
use holdfast::protocol::*;
use holdfast::web::codec;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// What serde writes for a value, read back as JSON data.
fn serde_shape<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap()
}

/// A JS value read back as JSON data (through the browser's JSON.stringify).
fn js_shape(v: &JsValue) -> Value {
    let text = js_sys::JSON::stringify(v).unwrap().as_string().unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The server's encoding decoded by the browser codec gives the same frame, and the
/// codec's own encoding is what serde writes and decodes.
fn server_frame_agrees(frame: &ServerFrame) {
    let text = serde_json::to_string(frame).unwrap();
    let decoded =
        codec::decode_server_text(&text).unwrap_or_else(|e| panic!("codec rejected {text}: {e:?}"));
    assert_eq!(&decoded, frame, "decoding {text}");
    let ours = codec::encode_server(frame);
    assert_eq!(
        serde_json::from_str::<ServerFrame>(&ours).ok().as_ref(),
        Some(frame),
        "serde decoding the codec's {ours}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&ours).unwrap(),
        serde_shape(frame),
        "shape of {ours}"
    );
}

/// The browser codec's encoding decodes (serde, as the server does) to the same frame
/// and has exactly serde's shape.
fn client_frame_agrees(frame: &ClientFrame) {
    let text = codec::encode_client(frame);
    let decoded: ClientFrame =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("serde rejected {text}: {e}"));
    assert_eq!(&decoded, frame, "encoding {text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        serde_shape(frame),
        "shape of {text}"
    );
    let serde_text = serde_json::to_string(frame).unwrap();
    assert_eq!(
        codec::decode_client_text(&serde_text).as_ref(),
        Ok(frame),
        "codec decoding serde's {serde_text}"
    );
}

// ------------------------------------------------------------------ every variant

fn server_frame_slot(f: &ServerFrame) -> usize {
    match f {
        ServerFrame::Welcome(_) => 0,
        ServerFrame::Msg { .. } => 1,
        ServerFrame::Ack { .. } => 2,
        ServerFrame::Pong { .. } => 3,
        ServerFrame::Error(_) => 4,
        ServerFrame::Bye => 5,
    }
}
const SERVER_FRAME_SLOTS: usize = 6;

fn server_msg_slot(m: &ServerMsg) -> usize {
    match m {
        ServerMsg::CallCreated { .. } => 0,
        ServerMsg::IncomingCall { .. } => 1,
        ServerMsg::CallStarted { .. } => 2,
        ServerMsg::ParticipantDisconnected { .. } => 3,
        ServerMsg::ParticipantReconnected { .. } => 4,
        ServerMsg::CallEnded { .. } => 5,
        ServerMsg::CallMoved { .. } => 6,
        ServerMsg::Signal { .. } => 7,
        ServerMsg::Presence { .. } => 8,
        ServerMsg::PresenceChanged { .. } => 9,
        ServerMsg::Error(_) => 10,
    }
}
const SERVER_MSG_SLOTS: usize = 11;

fn client_frame_slot(f: &ClientFrame) -> usize {
    match f {
        ClientFrame::Hello(_) => 0,
        ClientFrame::Msg { .. } => 1,
        ClientFrame::Ack { .. } => 2,
        ClientFrame::Ping { .. } => 3,
        ClientFrame::Bye => 4,
        ClientFrame::Leave => 5,
        ClientFrame::Unknown => 6,
    }
}
const CLIENT_FRAME_SLOTS: usize = 7;

fn client_msg_slot(m: &ClientMsg) -> usize {
    match m {
        ClientMsg::Invite { .. } => 0,
        ClientMsg::Accept { .. } => 1,
        ClientMsg::Decline { .. } => 2,
        ClientMsg::Cancel { .. } => 3,
        ClientMsg::Hangup { .. } => 4,
        ClientMsg::Signal { .. } => 5,
        ClientMsg::Rejoin { .. } => 6,
        ClientMsg::SetStatus { .. } => 7,
        ClientMsg::Unknown => 8,
    }
}
const CLIENT_MSG_SLOTS: usize = 9;

fn event_slot(e: &Event) -> usize {
    match e {
        Event::Connecting { .. } => 0,
        Event::Reconnecting { .. } => 1,
        Event::Connected { .. } => 2,
        Event::Resumed { .. } => 3,
        Event::Disconnected { .. } => 4,
        Event::SessionLost { .. } => 5,
        Event::ConnectionFailed(_) => 6,
        Event::Offline => 7,
        Event::GaveUp => 8,
        Event::AuthFailed { .. } => 9,
        Event::LoggedOut => 10,
        Event::Presence { .. } => 11,
        Event::PresenceChanged { .. } => 12,
        Event::OutgoingCall { .. } => 13,
        Event::IncomingCall { .. } => 14,
        Event::CallStarted { .. } => 15,
        Event::ParticipantDisconnected { .. } => 16,
        Event::ParticipantReconnected { .. } => 17,
        Event::CallEnded { .. } => 18,
        Event::CallMoved { .. } => 19,
        Event::Signal { .. } => 20,
        Event::RejoinAvailable { .. } => 21,
        Event::RejoinCountdown { .. } => 22,
        Event::RejoinExpired { .. } => 23,
        Event::RejoinWithdrawn { .. } => 24,
        Event::Error { .. } => 25,
    }
}
const EVENT_SLOTS: usize = 26;

fn assert_every_slot<T>(items: &[T], slots: usize, slot: impl Fn(&T) -> usize, what: &str) {
    let mut seen = vec![false; slots];
    for item in items {
        seen[slot(item)] = true;
    }
    let missing: Vec<usize> = (0..slots).filter(|&i| !seen[i]).collect();
    assert!(
        missing.is_empty(),
        "{what}: no sample of slot(s) {missing:?}"
    );
}

#[wasm_bindgen_test]
fn the_samples_cover_every_variant() {
    let server = every_server_frame();
    assert_every_slot(
        &server,
        SERVER_FRAME_SLOTS,
        server_frame_slot,
        "server frames",
    );
    let bodies: Vec<ServerMsg> = server
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Msg { body, .. } => Some(body.clone()),
            _ => None,
        })
        .collect();
    assert_every_slot(
        &bodies,
        SERVER_MSG_SLOTS,
        server_msg_slot,
        "server messages",
    );
    let client = every_client_frame();
    assert_every_slot(
        &client,
        CLIENT_FRAME_SLOTS,
        client_frame_slot,
        "client frames",
    );
    let bodies: Vec<ClientMsg> = client
        .iter()
        .filter_map(|f| match f {
            ClientFrame::Msg { body, .. } => Some(body.clone()),
            _ => None,
        })
        .collect();
    assert_every_slot(
        &bodies,
        CLIENT_MSG_SLOTS,
        client_msg_slot,
        "client messages",
    );
    assert_every_slot(&every_event(), EVENT_SLOTS, event_slot, "events");
}

fn peer(id: &str) -> Peer {
    Peer {
        id: id.into(),
        name: format!("{id} \"the\" näme ✓"),
    }
}

fn call_info(metadata: Option<Value>, ring_deadline: Option<u64>) -> CallInfo {
    CallInfo {
        id: "c0ffee".into(),
        kind: Some("support".into()),
        state: CallState::Active,
        caller: ParticipantInfo {
            user: peer("alice"),
            link: LinkState::Connected,
            deadline: None,
        },
        callee: ParticipantInfo {
            user: peer("bob"),
            link: LinkState::Reconnecting,
            deadline: Some(1_700_000_000_123),
        },
        grace_ms: 30_000,
        ring_deadline,
        metadata,
        held_here: true,
    }
}

fn presence_entry(id: &str, status: PresenceStatus) -> PresenceEntry {
    PresenceEntry {
        user: peer(id),
        status,
    }
}

fn welcome(snapshot: Option<Snapshot>) -> ServerFrame {
    ServerFrame::Welcome(Box::new(Welcome {
        session: "s".repeat(32),
        secret: "secret/+=".into(),
        resumed: snapshot.is_none(),
        last_seq: 7,
        user: peer("alice"),
        timers: Timers {
            heartbeat_interval_ms: 1_500,
            heartbeat_timeout_ms: 4_500,
            resume_window_ms: 60_000,
            default_grace_ms: 30_000,
            grace_ms: BTreeMap::from([("support".into(), 90_000), ("x-y".into(), 1)]),
            ring_timeout_ms: 30_000,
            ring_detach_grace_ms: 3_000,
        },
        limits: Limits {
            max_frame_bytes: 16_384,
            max_msgs_per_sec: 20,
            burst: 40,
        },
        now: 1_700_000_000_000,
        snapshot,
    }))
}

fn msg(seq: u64, body: ServerMsg) -> ServerFrame {
    ServerFrame::Msg { seq, ack: 3, body }
}

fn error_body(code: ErrorCode, re: Option<u64>, fatal: bool) -> ErrorBody {
    ErrorBody {
        code,
        message: "why \u{1} \\ \"quoted\"".into(),
        re,
        fatal,
    }
}

fn every_server_frame() -> Vec<ServerFrame> {
    let md = json!({"topic": "billing", "n": [1, -2, 3.5, null, true], "deep": {"a": {}}});
    let mut frames = vec![
        welcome(None),
        welcome(Some(Snapshot::default())),
        welcome(Some(Snapshot {
            calls: vec![call_info(Some(md.clone()), Some(5)), call_info(None, None)],
            presence: vec![
                presence_entry("bob", PresenceStatus::Available),
                presence_entry("carol", PresenceStatus::Offline),
            ],
            ended: vec![EndedCall {
                call: "c1".into(),
                reason: EndReason::ReconnectFailed,
            }],
        })),
        ServerFrame::Ack { ack: 0 },
        ServerFrame::Pong {
            ack: 9_007_199_254_740_991,
        },
        ServerFrame::Error(error_body(ErrorCode::Superseded, None, true)),
        ServerFrame::Error(error_body(ErrorCode::BadFrame, Some(2), false)),
        ServerFrame::Bye,
        msg(
            1,
            ServerMsg::CallCreated {
                re: 1,
                call: Box::new(call_info(Some(md.clone()), None)),
                existing: false,
            },
        ),
        msg(
            2,
            ServerMsg::IncomingCall {
                call: Box::new(call_info(None, Some(77))),
            },
        ),
        msg(
            3,
            ServerMsg::CallStarted {
                call: Box::new(call_info(None, None)),
                rejoin_token: "ab".repeat(32),
                rejoined: true,
            },
        ),
        msg(
            4,
            ServerMsg::ParticipantDisconnected {
                call: "c".into(),
                user: "bob".into(),
                deadline: 1_700_000_030_000,
                remaining_ms: 30_000,
            },
        ),
        msg(
            5,
            ServerMsg::ParticipantReconnected {
                call: "c".into(),
                user: "bob".into(),
            },
        ),
        msg(6, ServerMsg::CallMoved { call: "c".into() }),
        msg(
            7,
            ServerMsg::Signal {
                call: "c".into(),
                from: "bob".into(),
                payload: json!({"sdp": "v=0\r\n", "candidates": [{"m": 0}]}),
            },
        ),
        msg(
            8,
            ServerMsg::Signal {
                call: "c".into(),
                from: "bob".into(),
                payload: Value::Null,
            },
        ),
        msg(
            9,
            ServerMsg::Presence {
                entries: vec![presence_entry("bob", PresenceStatus::Busy)],
            },
        ),
        msg(
            10,
            ServerMsg::PresenceChanged {
                entry: presence_entry("bob", PresenceStatus::Available),
            },
        ),
        msg(
            11,
            ServerMsg::Error(error_body(ErrorCode::RejoinDenied, Some(4), false)),
        ),
    ];
    for code in codec::ERROR_CODES {
        frames.push(ServerFrame::Error(error_body(
            code,
            None,
            code.as_str().len() % 2 == 0,
        )));
        frames.push(msg(13, ServerMsg::Error(error_body(code, Some(1), false))));
    }
    for reason in codec::END_REASONS {
        frames.push(msg(
            12,
            ServerMsg::CallEnded {
                call: "c".into(),
                reason,
            },
        ));
    }
    frames
}

fn every_client_frame() -> Vec<ClientFrame> {
    let body = |seq, body| ClientFrame::Msg { seq, ack: 2, body };
    vec![
        ClientFrame::Hello(Hello {
            v: PROTOCOL_VERSION,
            token: "alice:Alice".into(),
            resume: None,
            presence: false,
            call_waiting: true,
            tab: None,
        }),
        ClientFrame::Hello(Hello {
            v: PROTOCOL_VERSION,
            token: "a.b.c".into(),
            resume: Some(Resume {
                session: "s".into(),
                secret: "k".into(),
                last_seq: 12,
            }),
            presence: true,
            call_waiting: false,
            tab: Some("0123456789abcdef0123456789abcdef".into()),
        }),
        ClientFrame::Ack { ack: 5 },
        ClientFrame::Ping { ack: 0 },
        ClientFrame::Bye,
        ClientFrame::Leave,
        ClientFrame::Unknown,
        body(0, ClientMsg::Unknown),
        body(
            1,
            ClientMsg::Invite {
                peer: "bob".into(),
                kind: None,
                metadata: None,
            },
        ),
        body(
            2,
            ClientMsg::Invite {
                peer: "bob".into(),
                kind: Some("support".into()),
                metadata: Some(json!({"topic": "billing", "n": [1, 2.5, -3]})),
            },
        ),
        body(3, ClientMsg::Accept { call: "c".into() }),
        body(
            4,
            ClientMsg::Decline {
                call: "c".into(),
                busy: true,
            },
        ),
        body(
            5,
            ClientMsg::Decline {
                call: "c".into(),
                busy: false,
            },
        ),
        body(6, ClientMsg::Cancel { call: "c".into() }),
        body(7, ClientMsg::Hangup { call: "c".into() }),
        body(
            8,
            ClientMsg::Signal {
                call: "c".into(),
                payload: json!({"ice": {"candidate": "a=b", "sdpMLineIndex": 0}}),
            },
        ),
        body(
            9,
            ClientMsg::Rejoin {
                call: "c".into(),
                token: "ab".repeat(32),
            },
        ),
        body(
            10,
            ClientMsg::SetStatus {
                status: PresenceStatus::Busy,
            },
        ),
        body(
            11,
            ClientMsg::SetStatus {
                status: PresenceStatus::Available,
            },
        ),
    ]
}

#[wasm_bindgen_test]
fn every_server_frame_decodes_as_serde_encodes_it() {
    for frame in every_server_frame() {
        server_frame_agrees(&frame);
    }
}

#[wasm_bindgen_test]
fn every_client_frame_encodes_as_serde_decodes_it() {
    for frame in every_client_frame() {
        client_frame_agrees(&frame);
    }
}

#[wasm_bindgen_test]
fn optional_and_defaulted_fields_follow_serde() {
    // Absent optionals, explicit nulls and absent serde defaults.
    let text = r#"{"t":"error","code":"bad-frame","message":"m","re":null}"#;
    let serde: ServerFrame = serde_json::from_str(text).unwrap();
    assert_eq!(codec::decode_server_text(text).unwrap(), serde);
    let text = r#"{"t":"msg","seq":1,"ack":0,"body":{"type":"call-moved","call":"c","extra":1}}"#;
    let serde: ServerFrame = serde_json::from_str(text).unwrap();
    assert_eq!(codec::decode_server_text(text).unwrap(), serde);
}

#[wasm_bindgen_test]
fn frames_serde_refuses_the_codec_refuses() {
    for text in [
        "not json",
        "[]",
        "{}",
        r#"{"t":"teleport"}"#,
        r#"{"t":"ack"}"#,
        r#"{"t":"ack","ack":-1}"#,
        r#"{"t":"ack","ack":1.5}"#,
        r#"{"t":"ack","ack":"1"}"#,
        r#"{"t":"msg","seq":1,"ack":0,"body":{"type":"nope"}}"#,
        r#"{"t":"msg","seq":1,"ack":0,"body":{"type":"call-ended","call":"c","reason":"bored"}}"#,
        r#"{"t":"msg","seq":1,"ack":0,"body":{"type":"signal","call":"c","from":"b"}}"#,
        r#"{"t":"error","code":"no-such-code","message":"m"}"#,
        r#"{"t":"error","code":"bad-frame"}"#,
    ] {
        assert!(
            serde_json::from_str::<ServerFrame>(text).is_err(),
            "serde accepts {text}"
        );
        assert!(
            codec::decode_server_text(text).is_err(),
            "codec accepts {text}"
        );
    }
}

fn failure(reason: FailureReason, i: usize) -> ConnectionFailure {
    ConnectionFailure {
        reason,
        code: codec::ERROR_CODES
            .get(i * 3)
            .copied()
            .filter(|_| i % 2 == 0),
        message: "why".into(),
        attempt: i as u32 + 1,
        at: 1_700_000_000_000 + i as u64,
        will_retry: i % 2 == 1,
        next_attempt_at: (i % 3 == 0).then_some(5),
    }
}

fn client_call(metadata: Option<Value>) -> ClientCall {
    ClientCall {
        id: "c".into(),
        phase: CallPhase::Incoming,
        peer: peer("bob"),
        kind: None,
        metadata,
        grace_ms: 30_000,
        peer_link: LinkState::Pending,
        peer_deadline: None,
        ring_deadline: Some(99),
    }
}

fn every_event() -> Vec<Event> {
    let offer = RejoinOffer {
        call: "c".into(),
        peer: peer("bob"),
        kind: Some("support".into()),
        deadline: 10,
        remaining_ms: 5,
    };
    let mut events = vec![
        Event::Connecting { attempt: 1 },
        Event::Reconnecting { attempt: 3 },
        Event::Connected {
            session: "s".into(),
            user: peer("alice"),
        },
        Event::Resumed { recovered: false },
        Event::Disconnected {
            next_attempt_at: Some(5),
        },
        Event::Disconnected {
            next_attempt_at: None,
        },
        Event::SessionLost { unconfirmed: 2 },
        Event::ConnectionFailed(ConnectionFailure {
            reason: FailureReason::NotFound,
            code: None,
            message: "no Holdfast server at this URL (HTTP 404)".into(),
            attempt: 1,
            at: 1_700_000_000_000,
            will_retry: true,
            next_attempt_at: Some(1_700_000_000_250),
        }),
        Event::Offline,
        Event::GaveUp,
        Event::AuthFailed {
            code: ErrorCode::TokenExpired,
            message: "expired".into(),
        },
        Event::LoggedOut,
        Event::Presence {
            entries: vec![presence_entry("bob", PresenceStatus::Busy)],
        },
        Event::PresenceChanged {
            entry: presence_entry("bob", PresenceStatus::Offline),
        },
        Event::OutgoingCall {
            re: 1,
            call: client_call(Some(json!({"a": [1, "x"]}))),
            existing: true,
        },
        Event::IncomingCall {
            call: client_call(None),
        },
        Event::CallStarted {
            call: client_call(None),
            rejoined: false,
        },
        Event::ParticipantDisconnected {
            call: "c".into(),
            user: "bob".into(),
            deadline: 100,
            remaining_ms: 50,
        },
        Event::ParticipantReconnected {
            call: "c".into(),
            user: "bob".into(),
        },
        Event::CallMoved { call: "c".into() },
        Event::Signal {
            call: "c".into(),
            from: "bob".into(),
            payload: json!({"sdp": "v=0"}),
        },
        Event::RejoinAvailable { offer },
        Event::RejoinCountdown {
            call: "c".into(),
            remaining_ms: 1_000,
        },
        Event::RejoinExpired { call: "c".into() },
        Event::Error {
            code: ErrorCode::PeerOffline,
            message: "offline".into(),
            re: Some(3),
        },
        Event::Error {
            code: ErrorCode::SessionLost,
            message: "lost".into(),
            re: None,
        },
    ];
    for reason in codec::END_REASONS {
        events.push(Event::CallEnded {
            call: "c".into(),
            reason,
            peer: peer("bob"),
        });
    }
    for (i, reason) in [
        FailureReason::Unreachable,
        FailureReason::NotFound,
        FailureReason::AuthFailed,
        FailureReason::Version,
        FailureReason::Timeout,
        FailureReason::Refused,
    ]
    .into_iter()
    .enumerate()
    {
        events.push(Event::ConnectionFailed(failure(reason, i)));
    }
    for why in [
        RejoinWithdrawn::CallEnded,
        RejoinWithdrawn::HeldElsewhere,
        RejoinWithdrawn::Declined,
        RejoinWithdrawn::Denied,
    ] {
        events.push(Event::RejoinWithdrawn {
            call: "c".into(),
            why,
        });
    }
    events
}

#[wasm_bindgen_test]
fn events_reach_js_in_serdes_shape() {
    for ev in every_event() {
        assert_eq!(
            js_shape(&codec::event_to_js(&ev)),
            serde_shape(&ev),
            "event {ev:?}"
        );
    }
}

#[wasm_bindgen_test]
fn rejoin_records_are_stored_as_serde_stores_them() {
    let record = RejoinRecord {
        v: 1,
        call: "c".into(),
        user: "alice".into(),
        token: "ab".repeat(32),
        peer: peer("bob"),
        kind: None,
        grace_ms: 30_000,
        deadline: 1_700_000_000_000,
        clock_offset: -1_234,
    };
    let text = codec::record_to_text(&record).unwrap();
    assert_eq!(serde_json::from_str::<RejoinRecord>(&text).unwrap(), record);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        serde_shape(&record)
    );
    let stored = serde_json::to_string(&record).unwrap();
    assert_eq!(codec::record_from_text(&stored), Some(record.clone()));
    // A record written before `clock_offset` existed reads as offset 0, as with serde.
    let mut old: Value = serde_shape(&record);
    old.as_object_mut().unwrap().remove("clock_offset");
    let old = old.to_string();
    let serde_old: RejoinRecord = serde_json::from_str(&old).unwrap();
    assert_eq!(serde_old.clock_offset, 0);
    assert_eq!(codec::record_from_text(&old), Some(serde_old));
    assert_eq!(codec::record_from_text(r#"{"v":1,"call":"c"}"#), None);
    assert_eq!(codec::record_from_text("garbage"), None);
}

#[wasm_bindgen_test]
fn refusal_messages_match_the_engines() {
    for e in [
        ClientError::LoggedOut,
        ClientError::AlreadyInCall { call: "c9".into() },
        ClientError::InvitePending,
        ClientError::UnknownCall,
        ClientError::InvalidState("not ringing"),
        ClientError::BufferFull,
        ClientError::NoRejoin,
        ClientError::InvalidArgument("bad"),
        ClientError::FrameTooLarge {
            bytes: 20_480,
            max: 16_384,
        },
        ClientError::FrameTooLarge { bytes: 0, max: 0 },
    ] {
        assert_eq!(codec::client_error_message(&e), e.to_string());
    }
}

#[wasm_bindgen_test]
fn snapshots_reach_js_in_serdes_shape() {
    let offer = RejoinOffer {
        call: "c".into(),
        peer: peer("bob"),
        kind: None,
        deadline: 10,
        remaining_ms: 5,
    };
    let full = ClientSnapshot {
        state: ConnectionState::Reconnecting,
        user: Some(peer("alice")),
        session: Some("s".repeat(32)),
        next_attempt_at: Some(99),
        calls: vec![client_call(Some(json!({"k": [1, 2]}))), client_call(None)],
        presence: vec![presence_entry("bob", PresenceStatus::Busy)],
        pending_rejoins: vec![offer],
        last_failure: Some(failure(FailureReason::Timeout, 2)),
        now: 1_700_000_000_000,
    };
    let states = [
        ConnectionState::Idle,
        ConnectionState::Connecting,
        ConnectionState::Connected,
        ConnectionState::Reconnecting,
        ConnectionState::Offline,
        ConnectionState::GaveUp,
        ConnectionState::AuthFailed,
        ConnectionState::LoggedOut,
    ];
    for state in states {
        let empty = ClientSnapshot {
            state,
            user: None,
            session: None,
            next_attempt_at: None,
            calls: vec![],
            presence: vec![],
            pending_rejoins: vec![],
            last_failure: None,
            now: 0,
        };
        assert_eq!(
            js_shape(&codec::snapshot_to_js(&empty)),
            serde_shape(&empty)
        );
    }
    assert_eq!(js_shape(&codec::snapshot_to_js(&full)), serde_shape(&full));
}

#[wasm_bindgen_test]
fn goodbyes_are_posted_as_serde_writes_them() {
    let g = Goodbye {
        token: "alice:Alice".into(),
        session: "s".repeat(32),
        secret: "k\"/+=".into(),
    };
    assert_eq!(
        serde_json::from_str::<Value>(&codec::goodbye_text(&g)).unwrap(),
        serde_shape(&g)
    );
}

#[wasm_bindgen_test]
fn app_data_that_is_not_json_is_refused() {
    let cyclic = js_sys::Object::new();
    js_sys::Reflect::set(&cyclic, &"me".into(), &cyclic).unwrap();
    assert_eq!(codec::value_from_js(&cyclic.into()), None);
    let f = js_sys::Function::new_no_args("return 1");
    assert_eq!(codec::value_from_js(&f.into()), None);
    assert_eq!(codec::value_from_js(&JsValue::UNDEFINED), Some(Value::Null));
}

// ------------------------------------------------------------------ randomised

/// A small deterministic generator (xorshift64*), so a failure names its seed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn coin(&mut self) -> bool {
        self.below(2) == 0
    }
    /// Integers a JS number holds exactly, weighted to the edges.
    fn int(&mut self) -> u64 {
        match self.below(4) {
            0 => self.below(10),
            1 => 9_007_199_254_740_991 - self.below(3),
            _ => self.below(1 << 53),
        }
    }
    fn string(&mut self) -> String {
        const PIECES: [&str; 12] = [
            "a",
            "Z",
            "0",
            " ",
            "\"",
            "\\",
            "\n",
            "\u{1}",
            "é",
            "✓",
            "😀",
            "</script>",
        ];
        (0..self.below(12))
            .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
            .collect()
    }
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        if self.coin() {
            Some(f(self))
        } else {
            None
        }
    }
    fn pick<T: Copy>(&mut self, all: &[T]) -> T {
        all[self.below(all.len() as u64) as usize]
    }
    /// JSON data. Floats are never integral: JavaScript has one number type, so a
    /// float like 2.0 comes back from any JS path as the integer 2.
    fn value(&mut self, depth: u32) -> Value {
        match self.below(if depth > 2 { 5 } else { 7 }) {
            0 => Value::Null,
            1 => Value::Bool(self.coin()),
            2 => json!(self.int()),
            3 => json!(-(self.below(1 << 40) as i64) - 1),
            4 => json!(self.below(1 << 20) as f64 + 0.25),
            5 => Value::Array((0..self.below(4)).map(|_| self.value(depth + 1)).collect()),
            _ => Value::Object(
                (0..self.below(4))
                    .map(|_| (self.string(), self.value(depth + 1)))
                    .collect(),
            ),
        }
    }
    fn peer(&mut self) -> Peer {
        Peer {
            id: self.string(),
            name: self.string(),
        }
    }
    fn participant(&mut self) -> ParticipantInfo {
        ParticipantInfo {
            user: self.peer(),
            link: self.pick(&[
                LinkState::Connected,
                LinkState::Reconnecting,
                LinkState::Pending,
            ]),
            deadline: self.opt(Gen::int),
        }
    }
    fn call(&mut self) -> CallInfo {
        CallInfo {
            id: self.string(),
            kind: self.opt(Gen::string),
            state: self.pick(&[CallState::Ringing, CallState::Active, CallState::Ended]),
            caller: self.participant(),
            callee: self.participant(),
            grace_ms: self.int(),
            ring_deadline: self.opt(Gen::int),
            metadata: self.opt(|g| g.value(0)).filter(|v| !v.is_null()),
            held_here: self.coin(),
        }
    }
    fn presence(&mut self) -> PresenceEntry {
        PresenceEntry {
            user: self.peer(),
            status: self.pick(&[
                PresenceStatus::Available,
                PresenceStatus::Busy,
                PresenceStatus::Offline,
            ]),
        }
    }
    fn error(&mut self) -> ErrorBody {
        ErrorBody {
            code: self.pick(&codec::ERROR_CODES),
            message: self.string(),
            re: self.opt(Gen::int),
            fatal: self.coin(),
        }
    }
    fn server_msg(&mut self) -> ServerMsg {
        match self.below(11) {
            0 => ServerMsg::CallCreated {
                re: self.int(),
                call: Box::new(self.call()),
                existing: self.coin(),
            },
            1 => ServerMsg::IncomingCall {
                call: Box::new(self.call()),
            },
            2 => ServerMsg::CallStarted {
                call: Box::new(self.call()),
                rejoin_token: self.string(),
                rejoined: self.coin(),
            },
            3 => ServerMsg::ParticipantDisconnected {
                call: self.string(),
                user: self.string(),
                deadline: self.int(),
                remaining_ms: self.int(),
            },
            4 => ServerMsg::ParticipantReconnected {
                call: self.string(),
                user: self.string(),
            },
            5 => ServerMsg::CallEnded {
                call: self.string(),
                reason: self.pick(&codec::END_REASONS),
            },
            6 => ServerMsg::CallMoved {
                call: self.string(),
            },
            7 => ServerMsg::Signal {
                call: self.string(),
                from: self.string(),
                payload: self.value(0),
            },
            8 => ServerMsg::Presence {
                entries: (0..self.below(3)).map(|_| self.presence()).collect(),
            },
            9 => ServerMsg::PresenceChanged {
                entry: self.presence(),
            },
            _ => ServerMsg::Error(self.error()),
        }
    }
    fn server_frame(&mut self) -> ServerFrame {
        match self.below(7) {
            0 => ServerFrame::Welcome(Box::new(Welcome {
                session: self.string(),
                secret: self.string(),
                resumed: self.coin(),
                last_seq: self.int(),
                user: self.peer(),
                timers: Timers {
                    heartbeat_interval_ms: self.int(),
                    heartbeat_timeout_ms: self.int(),
                    resume_window_ms: self.int(),
                    default_grace_ms: self.int(),
                    grace_ms: (0..self.below(3))
                        .map(|_| (self.string(), self.int()))
                        .collect(),
                    ring_timeout_ms: self.int(),
                    ring_detach_grace_ms: self.int(),
                },
                limits: Limits {
                    max_frame_bytes: self.below(1 << 20) as usize,
                    max_msgs_per_sec: self.below(1 << 31) as u32,
                    burst: self.below(100) as u32,
                },
                now: self.int(),
                snapshot: self.opt(|g| Snapshot {
                    calls: (0..g.below(3)).map(|_| g.call()).collect(),
                    presence: (0..g.below(3)).map(|_| g.presence()).collect(),
                    ended: (0..g.below(3))
                        .map(|_| EndedCall {
                            call: g.string(),
                            reason: g.pick(&codec::END_REASONS),
                        })
                        .collect(),
                }),
            })),
            1 => ServerFrame::Ack { ack: self.int() },
            2 => ServerFrame::Pong { ack: self.int() },
            3 => ServerFrame::Error(self.error()),
            4 => ServerFrame::Bye,
            _ => ServerFrame::Msg {
                seq: self.int(),
                ack: self.int(),
                body: self.server_msg(),
            },
        }
    }
    fn client_msg(&mut self) -> ClientMsg {
        match self.below(9) {
            0 => ClientMsg::Invite {
                peer: self.string(),
                kind: self.opt(Gen::string),
                metadata: self.opt(|g| g.value(0)).filter(|v| !v.is_null()),
            },
            1 => ClientMsg::Accept {
                call: self.string(),
            },
            2 => ClientMsg::Decline {
                call: self.string(),
                busy: self.coin(),
            },
            3 => ClientMsg::Cancel {
                call: self.string(),
            },
            4 => ClientMsg::Hangup {
                call: self.string(),
            },
            5 => ClientMsg::Signal {
                call: self.string(),
                payload: self.value(0),
            },
            6 => ClientMsg::Rejoin {
                call: self.string(),
                token: self.string(),
            },
            7 => ClientMsg::SetStatus {
                status: self.pick(&[PresenceStatus::Available, PresenceStatus::Busy]),
            },
            _ => ClientMsg::Unknown,
        }
    }
    fn client_frame(&mut self) -> ClientFrame {
        match self.below(8) {
            0 => ClientFrame::Hello(Hello {
                v: self.below(3) as u32,
                token: self.string(),
                resume: self.opt(|g| Resume {
                    session: g.string(),
                    secret: g.string(),
                    last_seq: g.int(),
                }),
                presence: self.coin(),
                call_waiting: self.coin(),
                tab: self.opt(Gen::string),
            }),
            1 => ClientFrame::Ack { ack: self.int() },
            2 => ClientFrame::Ping { ack: self.int() },
            3 => ClientFrame::Bye,
            4 => ClientFrame::Leave,
            5 => ClientFrame::Unknown,
            _ => ClientFrame::Msg {
                seq: self.int(),
                ack: self.int(),
                body: self.client_msg(),
            },
        }
    }
}

/// One generated case: the frames the seed makes agree on both paths, both ways.
fn round_trip(seed: u64) -> Result<(), TestCaseError> {
    let mut g = Gen(seed | 1);
    let server = g.server_frame();
    let text = serde_json::to_string(&server).unwrap();
    prop_assert_eq!(
        codec::decode_server_text(&text),
        Ok(server.clone()),
        "{}",
        text
    );
    let ours = codec::encode_server(&server);
    prop_assert_eq!(
        serde_json::from_str::<ServerFrame>(&ours).ok(),
        Some(server),
        "{}",
        ours
    );
    let client = g.client_frame();
    let text = codec::encode_client(&client);
    prop_assert_eq!(
        serde_json::from_str::<ClientFrame>(&text).ok(),
        Some(client.clone()),
        "{}",
        text
    );
    prop_assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        serde_shape(&client),
        "shape of {}",
        text
    );
    let text = serde_json::to_string(&client).unwrap();
    prop_assert_eq!(codec::decode_client_text(&text), Ok(client), "{}", text);
    Ok(())
}

/// Property: for any seed, the generated server and client frames round-trip between
/// serde and the codec in both directions (proptest picks the seeds and, on a failure,
/// reports the smallest failing one).
#[wasm_bindgen_test]
fn generated_frames_round_trip_between_serde_and_the_codec() {
    let config = ProptestConfig {
        cases: 512,
        // No file system in the browser: failures are reported, not persisted.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&any::<u64>(), round_trip) {
        panic!("{e}");
    }
}

// ------------------------------------------------------------------ mutated text

/// Pieces spliced into mutated frames: JSON syntax, and values JSON.parse and serde
/// read differently (exponents, `-0`, integers past 2^53, escapes).
const SPLICES: [&str; 16] = [
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    ":",
    "null",
    "true",
    "1e3",
    "-0",
    "1.0",
    "9007199254740993",
    "\\u0000",
    "\"t\":\"ack\"",
    "\"seq\":",
];

/// `text` with one to four random edits (delete, insert, replace, duplicate, truncate),
/// on character boundaries so that it stays a string the socket could deliver.
fn mutate(g: &mut Gen, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..=g.below(4) {
        let at = g.below(chars.len() as u64 + 1) as usize;
        match g.below(5) {
            0 if at < chars.len() => {
                chars.remove(at);
            }
            1 => {
                let piece = SPLICES[g.below(SPLICES.len() as u64) as usize];
                chars.splice(at..at, piece.chars());
            }
            2 if at < chars.len() => chars[at] = char::from(b'0' + g.below(10) as u8),
            3 => {
                let end = (at + g.below(12) as usize).min(chars.len());
                let span: Vec<char> = chars[at..end].to_vec();
                chars.splice(at..at, span);
            }
            _ => chars.truncate(at.max(chars.len() / 2)),
        }
    }
    chars.into_iter().collect()
}

/// `frame` with every integer of app data (payloads, metadata) past 2^53 as the double
/// nearest to it: what `JSON.parse` makes of it, and so what the browser's codec and
/// the app see; serde keeps such an integer exact. (The frame's own fields past 2^53
/// the codec refuses, so they are never compared.)
fn as_json_parse_reads(frame: ServerFrame) -> ServerFrame {
    fn doubles(v: &mut Value) {
        match v {
            Value::Number(n) => {
                // Past the largest safe integer (2^53 - 1), as the codec counts.
                let past = n.as_u64().is_some_and(|u| u >= 1 << 53)
                    || n.as_i64().is_some_and(|i| i <= -(1 << 53));
                if past {
                    if let Some(d) = n.as_f64().and_then(serde_json::Number::from_f64) {
                        *n = d;
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(doubles),
            Value::Object(map) => map.values_mut().for_each(doubles),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(&frame).unwrap();
    doubles(&mut v);
    serde_json::from_value(v).unwrap_or(frame)
}

/// Found by the mutated-frames test in CI: a digit change made a payload integer
/// 16711671372286712289, which serde keeps exact and `JSON.parse` reads as a double.
#[wasm_bindgen_test]
fn a_payload_integer_past_2_53_decodes_as_json_parse_reads_it() {
    let text = r#"{"t":"msg","seq":4,"ack":3,"body":{"type":"signal","call":"c","from":"u","payload":{"big":16711671372286712289,"n":-9007199254740993,"edge":9007199254740992,"small":9007199254740991}}}"#;
    let ours = codec::decode_server_text(text).unwrap();
    let ServerFrame::Msg {
        body: ServerMsg::Signal { payload, .. },
        ..
    } = &ours
    else {
        panic!("not a signal: {ours:?}");
    };
    assert_eq!(
        payload["big"].as_f64(),
        Some(16711671372286712289u64 as f64)
    );
    assert!(payload["big"].is_f64());
    assert_eq!(payload["n"].as_f64(), Some(-9007199254740993i64 as f64));
    assert!(payload["edge"].is_f64());
    assert_eq!(payload["small"].as_u64(), Some(9007199254740991));
    let serde = as_json_parse_reads(serde_json::from_str::<ServerFrame>(text).unwrap());
    assert_eq!(ours, serde);
    // The case as the mutated-frames test drew it.
    assert!(mutated_case(15_305_665_981_764_017_780).unwrap());
}

/// One mutated case: a server frame or a stored rejoin record, edited at random, is
/// either refused (an error or `None`, never a panic, which in wasm would take the
/// whole client down) or decoded exactly as serde decodes it. (The two may differ on
/// what they accept: `JSON.parse` reads `1e3` as an integer and keeps the last of two
/// equal keys, serde does neither; the codec refuses integers past 2^53.) Returns
/// whether both decoded it, so the caller can check the cases were not all garbage.
fn mutated_case(seed: u64) -> Result<bool, TestCaseError> {
    let mut g = Gen(seed | 1);
    let frame = g.server_frame();
    let text = mutate(&mut g, &serde_json::to_string(&frame).unwrap());
    let ours = codec::decode_server_text(&text);
    let serde = serde_json::from_str::<ServerFrame>(&text).map(as_json_parse_reads);
    let mut both = false;
    if let (Ok(ours), Ok(serde)) = (&ours, &serde) {
        prop_assert_eq!(ours, serde, "{}", text);
        both = true;
    }
    let record = RejoinRecord {
        v: 1,
        call: g.string(),
        user: g.string(),
        token: g.string(),
        peer: g.peer(),
        kind: g.opt(Gen::string),
        grace_ms: g.int(),
        deadline: g.int(),
        clock_offset: g.int() as i64 - (1 << 52),
    };
    let stored = mutate(&mut g, &serde_json::to_string(&record).unwrap());
    if let (Some(ours), Ok(serde)) = (
        codec::record_from_text(&stored),
        serde_json::from_str::<RejoinRecord>(&stored),
    ) {
        prop_assert_eq!(ours, serde, "{}", stored);
        both = true;
    }
    Ok(both)
}

/// Found by the test below: `"metadata":-63925428659254286549`, an integer past
/// u64, which serde_json read one unit in the last place away from `JSON.parse` until
/// its correctly rounded parsing (`float_roundtrip`) was on.
#[wasm_bindgen_test]
fn an_integer_past_u64_in_metadata_decodes_as_json_parse_reads_it() {
    mutated_case(5_796_175_509_451_514_656).unwrap();
}

/// Fuzzing the browser's decoding path (libFuzzer cannot run it: it reads what the
/// browser's `JSON.parse` built): 2,000 mutated frames and rejoin records never make
/// the codec panic, and whatever both it and serde decode, they decode alike.
#[wasm_bindgen_test]
fn mutated_frames_are_refused_or_decoded_as_serde_decodes_them() {
    let config = ProptestConfig {
        cases: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let decoded_by_both = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&any::<u64>(), |seed| {
        if mutated_case(seed)? {
            decoded_by_both.set(decoded_by_both.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Some edits keep the text valid (a digit changed, a span repeated inside a
    // string); if none did, the comparison above would never have run.
    assert!(
        decoded_by_both.get() >= 100,
        "only {} of 2,000 mutated cases decoded on both paths",
        decoded_by_both.get()
    );
}
