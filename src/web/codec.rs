//! The browser's wire codec: server frames are read from the object the browser's own
//! `JSON.parse` produced, client frames are built as JS objects and written with
//! `JSON.stringify`, and events, snapshots, rejoin records and connect options cross
//! the JS boundary the same way.
//!
//! Why not serde here: serde's internally-tagged enums buffer every frame into a
//! `Content` tree and are monomorphized per struct, and serde_json brings its own parser
//! and formatter; together they were most of the wasm download. The browser already
//! ships a JSON parser, so this file only walks its result with `Reflect`.
//!
//! [`crate::protocol`] (serde, used by the server and the native client) stays the
//! specification: `tests/web_codec.rs` checks, in the browser, that this codec and serde
//! agree on every frame type, including a randomised round trip. The shapes here
//! mirror serde's: a missing or `null` optional field is `None`, a missing field with a
//! serde default is its default, a missing required field is a malformed frame.

use crate::engine::client::{
    CallPhase, ClientCall, ClientError, ClientSnapshot, ConnectionFailure, ConnectionState, Event,
    FailureReason, Goodbye, RejoinOffer, RejoinRecord, RejoinWithdrawn,
};
use crate::protocol::*;
use js_sys::{Array, Object, Reflect, JSON};
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use wasm_bindgen::{JsCast, JsValue};

type Decoded<T> = Result<T, BadFrame>;

/// Deepest nesting accepted in app data (a cyclic object would otherwise recurse
/// until the stack overflows).
const MAX_DEPTH: u32 = 64;

/// Largest integer a JS number holds exactly.
const MAX_SAFE: f64 = 9_007_199_254_740_991.0;

fn invalid(field: &str) -> BadFrame {
    BadFrame::Malformed(["missing or invalid field `", field, "`"].concat())
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    if !obj.is_object() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn absent(v: &JsValue) -> bool {
    v.is_undefined() || v.is_null()
}

fn as_u64(v: &JsValue) -> Option<u64> {
    let f = v.as_f64()?;
    ((0.0..=MAX_SAFE).contains(&f) && f == (f as u64) as f64).then_some(f as u64)
}

fn num(obj: &JsValue, key: &str) -> Decoded<u64> {
    as_u64(&get(obj, key)).ok_or_else(|| invalid(key))
}

fn num32(obj: &JsValue, key: &str) -> Decoded<u32> {
    u32::try_from(num(obj, key)?).map_err(|_| invalid(key))
}

fn opt_num(obj: &JsValue, key: &str) -> Decoded<Option<u64>> {
    let v = get(obj, key);
    if absent(&v) {
        return Ok(None);
    }
    as_u64(&v).map(Some).ok_or_else(|| invalid(key))
}

/// A signed integer field with serde's `#[serde(default)]` (a rejoin record's clock
/// offset): missing is `None`.
fn opt_int(obj: &JsValue, key: &str) -> Decoded<Option<i64>> {
    let v = get(obj, key);
    if v.is_undefined() {
        return Ok(None);
    }
    let f = v.as_f64().ok_or_else(|| invalid(key))?;
    if f.abs() <= MAX_SAFE && f == (f as i64) as f64 {
        Ok(Some(f as i64))
    } else {
        Err(invalid(key))
    }
}

fn text(obj: &JsValue, key: &str) -> Decoded<String> {
    get(obj, key).as_string().ok_or_else(|| invalid(key))
}

fn opt_text(obj: &JsValue, key: &str) -> Decoded<Option<String>> {
    let v = get(obj, key);
    if absent(&v) {
        return Ok(None);
    }
    v.as_string().map(Some).ok_or_else(|| invalid(key))
}

fn flag(obj: &JsValue, key: &str) -> Decoded<bool> {
    get(obj, key).as_bool().ok_or_else(|| invalid(key))
}

/// A bool with serde's `#[serde(default)]`: missing is false.
/// A required field holding any JSON value (a relayed payload).
fn json_value(obj: &JsValue, key: &str) -> Decoded<Value> {
    let v = get(obj, key);
    if v.is_undefined() {
        return Err(invalid(key));
    }
    value_from_js(&v).ok_or_else(|| invalid(key))
}

fn flag_or_false(obj: &JsValue, key: &str) -> Decoded<bool> {
    let v = get(obj, key);
    if v.is_undefined() {
        return Ok(false);
    }
    v.as_bool().ok_or_else(|| invalid(key))
}

fn list<T>(obj: &JsValue, key: &str, item: fn(&JsValue) -> Decoded<T>) -> Decoded<Vec<T>> {
    let v = get(obj, key);
    if !Array::is_array(&v) {
        return Err(invalid(key));
    }
    Array::from(&v).iter().map(|x| item(&x)).collect()
}

/// A wire name (kebab-case) among `names`, in the order of the enum's variants.
fn wire_name<T: Copy>(
    obj: &JsValue,
    key: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Decoded<T> {
    let s = get(obj, key).as_string().ok_or_else(|| invalid(key))?;
    all.iter()
        .copied()
        .find(|x| name(*x) == s)
        .ok_or_else(|| invalid(key))
}

/// `NAME: Enum { A, B, … }`: a const array of the listed variants, checked at compile
/// time against an exhaustive `match`, so a variant added to the enum does not compile
/// until it is listed (and one listed twice is an unreachable pattern).
macro_rules! every_variant {
    ($(#[$doc:meta])* $list:ident: $ty:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        pub const $list: [$ty; [$(stringify!($variant)),+].len()] = [$($ty::$variant),+];
        const _: () = {
            #[allow(dead_code)]
            const fn listed(x: $ty) {
                match x {
                    $($ty::$variant => {})+
                }
            }
        };
    };
}

every_variant! {
    /// Every [`PresenceStatus`].
    PRESENCE_STATUSES: PresenceStatus {
        Available,
        Busy,
        Offline,
    }
}

every_variant! {
    /// Every [`LinkState`].
    LINK_STATES: LinkState {
        Connected,
        Reconnecting,
        Pending,
    }
}

every_variant! {
    /// Every [`CallState`].
    CALL_STATES: CallState {
        Ringing,
        Active,
        Ended,
    }
}

every_variant! {
    /// Every [`ErrorCode`].
    ERROR_CODES: ErrorCode {
        BadFrame,
        FrameTooLarge,
        UnknownMessage,
        UnsupportedVersion,
        NotAuthenticated,
        AlreadyAuthenticated,
        AuthFailed,
        TokenExpired,
        TooManySessions,
        RateLimited,
        BadSequence,
        SelfCall,
        PeerOffline,
        UnknownCall,
        NotParticipant,
        InvalidState,
        RejoinDenied,
        HeldElsewhere,
        InvalidArgument,
        Superseded,
        ServerShutdown,
        ServerRestarting,
        HelloTimeout,
        SessionLost,
        Timeout,
    }
}

every_variant! {
    /// Every [`EndReason`].
    END_REASONS: EndReason {
        Hangup,
        Declined,
        Cancelled,
        NoAnswer,
        Busy,
        ReconnectFailed,
        ServerShutdown,
        ServerLost,
    }
}

fn call_state_name(s: CallState) -> &'static str {
    match s {
        CallState::Ringing => "ringing",
        CallState::Active => "active",
        CallState::Ended => "ended",
    }
}

fn link_state_name(s: LinkState) -> &'static str {
    match s {
        LinkState::Connected => "connected",
        LinkState::Reconnecting => "reconnecting",
        LinkState::Pending => "pending",
    }
}

/// The wire name of a presence status.
pub fn status_name(s: PresenceStatus) -> &'static str {
    match s {
        PresenceStatus::Available => "available",
        PresenceStatus::Busy => "busy",
        PresenceStatus::Offline => "offline",
    }
}

fn state_name(s: ConnectionState) -> &'static str {
    match s {
        ConnectionState::Idle => "idle",
        ConnectionState::Connecting => "connecting",
        ConnectionState::Connected => "connected",
        ConnectionState::Reconnecting => "reconnecting",
        ConnectionState::Offline => "offline",
        ConnectionState::GaveUp => "gave-up",
        ConnectionState::AuthFailed => "auth-failed",
        ConnectionState::LoggedOut => "logged-out",
    }
}

fn phase_name(p: CallPhase) -> &'static str {
    match p {
        CallPhase::Outgoing => "outgoing",
        CallPhase::Incoming => "incoming",
        CallPhase::Active => "active",
    }
}

fn failure_reason_name(r: FailureReason) -> &'static str {
    match r {
        FailureReason::Unreachable => "unreachable",
        FailureReason::NotFound => "not-found",
        FailureReason::AuthFailed => "auth-failed",
        FailureReason::Version => "version",
        FailureReason::Timeout => "timeout",
        FailureReason::Refused => "refused",
    }
}

fn withdrawn_name(w: RejoinWithdrawn) -> &'static str {
    match w {
        RejoinWithdrawn::CallEnded => "call-ended",
        RejoinWithdrawn::HeldElsewhere => "held-elsewhere",
        RejoinWithdrawn::Declined => "declined",
        RejoinWithdrawn::Denied => "denied",
    }
}

// ------------------------------------------------------------------ app data

/// JSON data from JS (what `JSON.stringify` would keep), or `None` for something that
/// is not JSON data (a function, a symbol, a bigint, a cycle).
pub fn value_from_js(v: &JsValue) -> Option<Value> {
    value_at_depth(v, 0)
}

fn value_at_depth(v: &JsValue, depth: u32) -> Option<Value> {
    if absent(v) {
        return Some(Value::Null);
    }
    if let Some(b) = v.as_bool() {
        return Some(Value::Bool(b));
    }
    if let Some(f) = v.as_f64() {
        let n = if f.abs() <= MAX_SAFE && f == (f as i64) as f64 {
            if f >= 0.0 {
                Number::from(f as u64)
            } else {
                Number::from(f as i64)
            }
        } else {
            // NaN and infinities: JSON.stringify writes them as null.
            return Some(Number::from_f64(f).map_or(Value::Null, Value::Number));
        };
        return Some(Value::Number(n));
    }
    if let Some(s) = v.as_string() {
        return Some(Value::String(s));
    }
    if depth >= MAX_DEPTH || v.is_function() || !v.is_object() {
        return None;
    }
    if Array::is_array(v) {
        return Array::from(v)
            .iter()
            .map(|x| value_at_depth(&x, depth + 1))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array);
    }
    let mut map = Map::new();
    for entry in Object::entries(v.unchecked_ref()).iter() {
        let pair = Array::from(&entry);
        map.insert(
            pair.get(0).as_string()?,
            value_at_depth(&pair.get(1), depth + 1)?,
        );
    }
    Some(Value::Object(map))
}

/// JSON data as a plain JS value.
pub fn value_to_js(v: &Value) -> JsValue {
    match v {
        Value::Null => JsValue::NULL,
        Value::Bool(b) => JsValue::from_bool(*b),
        Value::Number(n) => JsValue::from_f64(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => JsValue::from_str(s),
        Value::Array(items) => items.iter().map(value_to_js).collect::<Array>().into(),
        Value::Object(map) => {
            let obj = Obj::new();
            for (k, x) in map {
                obj.put(k, &value_to_js(x));
            }
            obj.done()
        }
    }
}

// ------------------------------------------------------------------ server frames

/// Decodes a server frame from the text of a WebSocket message.
pub fn decode_server_text(text: &str) -> Decoded<ServerFrame> {
    let js = JSON::parse(text).map_err(|_| BadFrame::Malformed("not JSON".into()))?;
    decode_server(&js)
}

/// Decodes a server frame from a parsed JSON object.
pub fn decode_server(f: &JsValue) -> Decoded<ServerFrame> {
    Ok(match text(f, "t")?.as_str() {
        "welcome" => ServerFrame::Welcome(Box::new(welcome(f)?)),
        "msg" => {
            let body = get(f, "body");
            ServerFrame::Msg {
                seq: num(f, "seq")?,
                ack: num(f, "ack")?,
                body: server_msg(&body)?,
            }
        }
        "ack" => ServerFrame::Ack {
            ack: num(f, "ack")?,
        },
        "pong" => ServerFrame::Pong {
            ack: num(f, "ack")?,
        },
        "error" => ServerFrame::Error(error_body(f)?),
        "bye" => ServerFrame::Bye,
        // Strings are open-ended; the variants are checked the other way round: the
        // encoder below matches every `ServerFrame` and the conformance tests decode
        // each one it writes.
        _ => return Err(invalid("t")),
    })
}

fn welcome(f: &JsValue) -> Decoded<Welcome> {
    let timers = get(f, "timers");
    let limits = get(f, "limits");
    let snapshot = get(f, "snapshot");
    Ok(Welcome {
        session: text(f, "session")?,
        secret: text(f, "secret")?,
        resumed: flag(f, "resumed")?,
        last_seq: num(f, "last_seq")?,
        user: peer_at(f, "user")?,
        timers: Timers {
            heartbeat_interval_ms: num(&timers, "heartbeat_interval_ms")?,
            heartbeat_timeout_ms: num(&timers, "heartbeat_timeout_ms")?,
            resume_window_ms: num(&timers, "resume_window_ms")?,
            default_grace_ms: num(&timers, "default_grace_ms")?,
            grace_ms: grace_map(&timers)?,
            ring_timeout_ms: num(&timers, "ring_timeout_ms")?,
            ring_detach_grace_ms: num(&timers, "ring_detach_grace_ms")?,
        },
        limits: Limits {
            max_frame_bytes: num(&limits, "max_frame_bytes")? as usize,
            max_msgs_per_sec: num32(&limits, "max_msgs_per_sec")?,
            burst: num32(&limits, "burst")?,
        },
        now: num(f, "now")?,
        snapshot: if absent(&snapshot) {
            None
        } else {
            Some(Snapshot {
                calls: list(&snapshot, "calls", call_info)?,
                presence: list(&snapshot, "presence", presence_entry)?,
                ended: if get(&snapshot, "ended").is_undefined() {
                    Vec::new()
                } else {
                    list(&snapshot, "ended", ended_call)?
                },
            })
        },
    })
}

fn grace_map(timers: &JsValue) -> Decoded<BTreeMap<String, u64>> {
    let v = get(timers, "grace_ms");
    if !v.is_object() || Array::is_array(&v) {
        return Err(invalid("grace_ms"));
    }
    let mut map = BTreeMap::new();
    for entry in Object::entries(v.unchecked_ref()).iter() {
        let pair = Array::from(&entry);
        let kind = pair.get(0).as_string().ok_or_else(|| invalid("grace_ms"))?;
        let ms = as_u64(&pair.get(1)).ok_or_else(|| invalid("grace_ms"))?;
        map.insert(kind, ms);
    }
    Ok(map)
}

fn peer(v: &JsValue) -> Decoded<Peer> {
    Ok(Peer {
        id: text(v, "id")?,
        name: text(v, "name")?,
    })
}

fn peer_at(v: &JsValue, key: &str) -> Decoded<Peer> {
    peer(&get(v, key))
}

fn participant(v: &JsValue) -> Decoded<ParticipantInfo> {
    Ok(ParticipantInfo {
        user: peer_at(v, "user")?,
        link: wire_name(v, "link", &LINK_STATES, link_state_name)?,
        deadline: opt_num(v, "deadline")?,
    })
}

fn call_info(v: &JsValue) -> Decoded<CallInfo> {
    let metadata = get(v, "metadata");
    Ok(CallInfo {
        id: text(v, "id")?,
        kind: opt_text(v, "kind")?,
        state: wire_name(v, "state", &CALL_STATES, call_state_name)?,
        caller: participant(&get(v, "caller"))?,
        callee: participant(&get(v, "callee"))?,
        grace_ms: num(v, "grace_ms")?,
        ring_deadline: opt_num(v, "ring_deadline")?,
        metadata: if absent(&metadata) {
            None
        } else {
            Some(value_from_js(&metadata).ok_or_else(|| invalid("metadata"))?)
        },
        held_here: flag(v, "held_here")?,
    })
}

fn call_info_at(v: &JsValue, key: &str) -> Decoded<CallInfo> {
    call_info(&get(v, key))
}

fn presence_entry(v: &JsValue) -> Decoded<PresenceEntry> {
    Ok(PresenceEntry {
        user: peer_at(v, "user")?,
        status: wire_name(v, "status", &PRESENCE_STATUSES, status_name)?,
    })
}

fn end_reason(v: &JsValue, key: &str) -> Decoded<EndReason> {
    wire_name(v, key, &END_REASONS, EndReason::as_str)
}

fn ended_call(v: &JsValue) -> Decoded<EndedCall> {
    Ok(EndedCall {
        call: text(v, "call")?,
        reason: end_reason(v, "reason")?,
    })
}

fn error_body(v: &JsValue) -> Decoded<ErrorBody> {
    Ok(ErrorBody {
        code: wire_name(v, "code", &ERROR_CODES, ErrorCode::as_str)?,
        message: text(v, "message")?,
        re: opt_num(v, "re")?,
        fatal: flag_or_false(v, "fatal")?,
    })
}

fn server_msg(b: &JsValue) -> Decoded<ServerMsg> {
    Ok(match text(b, "type")?.as_str() {
        "call-created" => ServerMsg::CallCreated {
            re: num(b, "re")?,
            call: Box::new(call_info_at(b, "call")?),
            existing: flag(b, "existing")?,
        },
        "incoming-call" => ServerMsg::IncomingCall {
            call: Box::new(call_info_at(b, "call")?),
        },
        "call-started" => ServerMsg::CallStarted {
            call: Box::new(call_info_at(b, "call")?),
            rejoin_token: text(b, "rejoin_token")?,
            rejoined: flag(b, "rejoined")?,
        },
        "participant-disconnected" => ServerMsg::ParticipantDisconnected {
            call: text(b, "call")?,
            user: text(b, "user")?,
            deadline: num(b, "deadline")?,
            remaining_ms: num(b, "remaining_ms")?,
        },
        "participant-reconnected" => ServerMsg::ParticipantReconnected {
            call: text(b, "call")?,
            user: text(b, "user")?,
        },
        "call-ended" => ServerMsg::CallEnded {
            call: text(b, "call")?,
            reason: end_reason(b, "reason")?,
        },
        "call-moved" => ServerMsg::CallMoved {
            call: text(b, "call")?,
        },
        "signal" => {
            let payload = json_value(b, "payload")?;
            ServerMsg::Signal {
                call: text(b, "call")?,
                from: text(b, "from")?,
                payload,
            }
        }
        "presence" => ServerMsg::Presence {
            entries: list(b, "entries", presence_entry)?,
        },
        "presence-changed" => ServerMsg::PresenceChanged {
            entry: presence_entry(&get(b, "entry"))?,
        },
        "error" => ServerMsg::Error(error_body(b)?),
        _ => return Err(invalid("type")),
    })
}

// ------------------------------------------------------------------ JS objects out

/// A plain JS object being filled in.
struct Obj(Object);

impl Obj {
    fn new() -> Self {
        Obj(Object::new())
    }

    fn tagged(key: &str, tag: &str) -> Self {
        let o = Obj::new();
        o.put(key, &JsValue::from_str(tag));
        o
    }

    fn put(&self, key: &str, v: &JsValue) -> &Self {
        // Setting a data property on a fresh plain object cannot throw.
        let _ = Reflect::set(&self.0, &JsValue::from_str(key), v);
        self
    }

    fn str(&self, key: &str, v: &str) -> &Self {
        self.put(key, &JsValue::from_str(v))
    }

    fn num(&self, key: &str, v: u64) -> &Self {
        self.put(key, &JsValue::from_f64(v as f64))
    }

    fn flag(&self, key: &str, v: bool) -> &Self {
        self.put(key, &JsValue::from_bool(v))
    }

    fn opt_num(&self, key: &str, v: Option<u64>) -> &Self {
        self.put(
            key,
            &v.map_or(JsValue::NULL, |n| JsValue::from_f64(n as f64)),
        )
    }

    fn opt_str(&self, key: &str, v: Option<&str>) -> &Self {
        self.put(key, &v.map_or(JsValue::NULL, JsValue::from_str))
    }

    fn done(self) -> JsValue {
        self.0.into()
    }
}

fn list_js<T>(items: impl IntoIterator<Item = T>, f: impl Fn(T) -> JsValue) -> JsValue {
    items.into_iter().map(f).collect::<Array>().into()
}

/// Encodes a client frame as JSON text (what serde writes, up to key order).
pub fn encode_client(frame: &ClientFrame) -> String {
    stringify(&client_frame_js(frame))
}

/// The length of a client message's JSON text as [`encode_client`] writes it (the
/// engine's frame-size check, [`crate::engine::client::ClientConfig::json_bytes`]).
pub fn client_msg_bytes(msg: &ClientMsg) -> usize {
    stringify(&client_msg_js(msg)).len()
}

fn client_frame_js(frame: &ClientFrame) -> JsValue {
    let (tag, o) = match frame {
        ClientFrame::Hello(h) => {
            let o = Obj::tagged("t", "hello");
            o.num("v", h.v.into()).str("token", &h.token);
            if let Some(r) = &h.resume {
                let resume = Obj::new();
                resume
                    .str("session", &r.session)
                    .str("secret", &r.secret)
                    .num("last_seq", r.last_seq);
                o.put("resume", &resume.done());
            }
            o.flag("presence", h.presence)
                .flag("call_waiting", h.call_waiting);
            if let Some(tab) = &h.tab {
                o.str("tab", tab);
            }
            return o.done();
        }
        ClientFrame::Msg { seq, ack, body } => {
            let o = Obj::tagged("t", "msg");
            o.num("seq", *seq)
                .num("ack", *ack)
                .put("body", &client_msg_js(body));
            return o.done();
        }
        ClientFrame::Ack { ack } => ("ack", Some(*ack)),
        ClientFrame::Ping { ack } => ("ping", Some(*ack)),
        ClientFrame::Bye => ("bye", None),
        ClientFrame::Leave => ("leave", None),
        ClientFrame::Unknown => ("unknown", None),
    };
    let out = Obj::tagged("t", tag);
    if let Some(ack) = o {
        out.num("ack", ack);
    }
    out.done()
}

fn client_msg_js(m: &ClientMsg) -> JsValue {
    let on_call = |tag: &str, call: &str| {
        let o = Obj::tagged("type", tag);
        o.str("call", call);
        o
    };
    let o = match m {
        ClientMsg::Invite {
            peer,
            kind,
            metadata,
        } => {
            let o = Obj::tagged("type", "invite");
            o.str("peer", peer);
            if let Some(k) = kind {
                o.str("kind", k);
            }
            if let Some(md) = metadata {
                o.put("metadata", &value_to_js(md));
            }
            o
        }
        ClientMsg::Accept { call } => on_call("accept", call),
        ClientMsg::Decline { call, busy } => {
            let o = on_call("decline", call);
            o.flag("busy", *busy);
            o
        }
        ClientMsg::Cancel { call } => on_call("cancel", call),
        ClientMsg::Hangup { call } => on_call("hangup", call),
        ClientMsg::Signal { call, payload } => {
            let o = on_call("signal", call);
            o.put("payload", &value_to_js(payload));
            o
        }
        ClientMsg::Rejoin { call, token } => {
            let o = on_call("rejoin", call);
            o.str("token", token);
            o
        }
        ClientMsg::SetStatus { status } => {
            let o = Obj::tagged("type", "set-status");
            o.str("status", status_name(*status));
            o
        }
        ClientMsg::Unknown => Obj::tagged("type", "unknown"),
    };
    o.done()
}

// ------------------------------------------------------------------ app-facing values

fn peer_js(p: &Peer) -> JsValue {
    let o = Obj::new();
    o.str("id", &p.id).str("name", &p.name);
    o.done()
}

fn presence_js(e: &PresenceEntry) -> JsValue {
    let o = Obj::new();
    o.put("user", &peer_js(&e.user))
        .str("status", status_name(e.status));
    o.done()
}

fn call_js(c: &ClientCall) -> JsValue {
    let o = Obj::new();
    o.str("id", &c.id)
        .str("phase", phase_name(c.phase))
        .put("peer", &peer_js(&c.peer))
        .opt_str("kind", c.kind.as_deref())
        .put(
            "metadata",
            &c.metadata.as_ref().map_or(JsValue::NULL, value_to_js),
        )
        .num("graceMs", c.grace_ms)
        .str("peerLink", link_state_name(c.peer_link))
        .opt_num("peerDeadline", c.peer_deadline)
        .opt_num("ringDeadline", c.ring_deadline);
    o.done()
}

fn offer_js(r: &RejoinOffer) -> JsValue {
    let o = Obj::new();
    o.str("call", &r.call)
        .put("peer", &peer_js(&r.peer))
        .opt_str("kind", r.kind.as_deref())
        .num("deadline", r.deadline)
        .num("remainingMs", r.remaining_ms);
    o.done()
}

/// An event as the JS object the facade dispatches (`{ type: "call-ended", call,
/// reason }`, fields in camelCase).
pub fn event_to_js(ev: &Event) -> JsValue {
    let tagged = |tag: &str| Obj::tagged("type", tag);
    let on_call = |tag: &str, call: &str| {
        let o = tagged(tag);
        o.str("call", call);
        o
    };
    let o = match ev {
        Event::Connecting { attempt } => {
            let o = tagged("connecting");
            o.num("attempt", (*attempt).into());
            o
        }
        Event::Reconnecting { attempt } => {
            let o = tagged("reconnecting");
            o.num("attempt", (*attempt).into());
            o
        }
        Event::Connected { session, user } => {
            let o = tagged("connected");
            o.str("session", session).put("user", &peer_js(user));
            o
        }
        Event::Resumed { recovered } => {
            let o = tagged("resumed");
            o.flag("recovered", *recovered);
            o
        }
        Event::Disconnected { next_attempt_at } => {
            let o = tagged("disconnected");
            o.opt_num("nextAttemptAt", *next_attempt_at);
            o
        }
        Event::SessionLost { unconfirmed } => {
            let o = tagged("session-lost");
            o.num("unconfirmed", *unconfirmed as u64);
            o
        }
        Event::ConnectionFailed(failure) => {
            let o = tagged("connection-failed");
            failure_fields(&o, failure);
            o
        }
        Event::Offline => tagged("offline"),
        Event::GaveUp => tagged("gave-up"),
        Event::AuthFailed { code, message } => {
            let o = tagged("auth-failed");
            o.str("code", code.as_str()).str("message", message);
            o
        }
        Event::LoggedOut => tagged("logged-out"),
        Event::Presence { entries } => {
            let o = tagged("presence");
            o.put("entries", &list_js(entries, presence_js));
            o
        }
        Event::PresenceChanged { entry } => {
            let o = tagged("presence-changed");
            o.put("entry", &presence_js(entry));
            o
        }
        Event::OutgoingCall { re, call, existing } => {
            let o = tagged("outgoing-call");
            o.num("re", *re)
                .put("call", &call_js(call))
                .flag("existing", *existing);
            o
        }
        Event::IncomingCall { call } => {
            let o = tagged("incoming-call");
            o.put("call", &call_js(call));
            o
        }
        Event::CallStarted { call, rejoined } => {
            let o = tagged("call-started");
            o.put("call", &call_js(call)).flag("rejoined", *rejoined);
            o
        }
        Event::ParticipantDisconnected {
            call,
            user,
            deadline,
            remaining_ms,
        } => {
            let o = on_call("participant-disconnected", call);
            o.str("user", user)
                .num("deadline", *deadline)
                .num("remainingMs", *remaining_ms);
            o
        }
        Event::ParticipantReconnected { call, user } => {
            let o = on_call("participant-reconnected", call);
            o.str("user", user);
            o
        }
        Event::CallEnded { call, reason, peer } => {
            let o = on_call("call-ended", call);
            o.str("reason", reason.as_str()).put("peer", &peer_js(peer));
            o
        }
        Event::CallMoved { call } => on_call("call-moved", call),
        Event::Signal {
            call,
            from,
            payload,
        } => {
            let o = on_call("signal", call);
            o.str("from", from).put("payload", &value_to_js(payload));
            o
        }
        Event::RejoinAvailable { offer } => {
            let o = tagged("rejoin-available");
            o.put("offer", &offer_js(offer));
            o
        }
        Event::RejoinCountdown { call, remaining_ms } => {
            let o = on_call("rejoin-countdown", call);
            o.num("remainingMs", *remaining_ms);
            o
        }
        Event::RejoinExpired { call } => on_call("rejoin-expired", call),
        Event::RejoinWithdrawn { call, why } => {
            let o = on_call("rejoin-withdrawn", call);
            o.str("why", withdrawn_name(*why));
            o
        }
        Event::Error { code, message, re } => {
            let o = tagged("error");
            o.str("code", code.as_str())
                .str("message", message)
                .opt_num("re", *re);
            o
        }
    };
    o.done()
}

fn failure_fields(o: &Obj, f: &ConnectionFailure) {
    o.str("reason", failure_reason_name(f.reason))
        .opt_str("code", f.code.map(ErrorCode::as_str))
        .str("message", &f.message)
        .num("attempt", f.attempt.into())
        .num("at", f.at)
        .flag("willRetry", f.will_retry)
        .opt_num("nextAttemptAt", f.next_attempt_at);
}

fn failure_js(f: &ConnectionFailure) -> JsValue {
    let o = Obj::new();
    failure_fields(&o, f);
    o.done()
}

/// What the facade's `getSnapshot()` reads (fields in camelCase).
pub fn snapshot_to_js(snap: &ClientSnapshot) -> JsValue {
    let o = Obj::new();
    o.str("state", state_name(snap.state))
        .put("user", &snap.user.as_ref().map_or(JsValue::NULL, peer_js))
        .opt_str("session", snap.session.as_deref())
        .opt_num("nextAttemptAt", snap.next_attempt_at)
        .put("calls", &list_js(&snap.calls, call_js))
        .put("presence", &list_js(&snap.presence, presence_js))
        .put("pendingRejoins", &list_js(&snap.pending_rejoins, offer_js))
        .put(
            "lastFailure",
            &snap.last_failure.as_ref().map_or(JsValue::NULL, failure_js),
        )
        .num("now", snap.now);
    o.done()
}

/// A logout's HTTP fallback body as JSON text (see [`ClientFrame::Bye`]).
pub fn goodbye_text(g: &Goodbye) -> String {
    let o = Obj::new();
    o.str("token", &g.token)
        .str("session", &g.session)
        .str("secret", &g.secret);
    stringify(&o.done())
}

fn stringify(v: &JsValue) -> String {
    JSON::stringify(v)
        .ok()
        .and_then(|s| s.as_string())
        .unwrap_or_else(|| String::from("{}"))
}

/// A rejoin record as stored (the same JSON serde writes natively).
pub fn record_to_text(r: &RejoinRecord) -> Option<String> {
    let o = Obj::new();
    o.num("v", r.v.into())
        .str("call", &r.call)
        .str("user", &r.user)
        .str("token", &r.token)
        .put("peer", &peer_js(&r.peer))
        .opt_str("kind", r.kind.as_deref())
        .num("grace_ms", r.grace_ms)
        .num("deadline", r.deadline)
        .put("clock_offset", &JsValue::from_f64(r.clock_offset as f64));
    JSON::stringify(&o.done()).ok()?.as_string()
}

/// A stored rejoin record, or `None` when it is not one.
pub fn record_from_text(stored: &str) -> Option<RejoinRecord> {
    let v = JSON::parse(stored).ok()?;
    let record = || -> Decoded<RejoinRecord> {
        Ok(RejoinRecord {
            v: num32(&v, "v")?,
            call: text(&v, "call")?,
            user: text(&v, "user")?,
            token: text(&v, "token")?,
            peer: peer_at(&v, "peer")?,
            kind: opt_text(&v, "kind")?,
            grace_ms: num(&v, "grace_ms")?,
            deadline: num(&v, "deadline")?,
            clock_offset: opt_int(&v, "clock_offset")?.unwrap_or(0),
        })
    };
    record().ok()
}

/// `connect()`'s options object (camelCase), checked the way serde checked it: `url`
/// and `token` are required strings, the rest optional.
pub fn connect_options(v: &JsValue) -> Result<super::ConnectOptions, String> {
    read_connect_options(v).map_err(|e| match e {
        BadFrame::Malformed(why) => why,
        other => other.message(),
    })
}

fn read_connect_options(v: &JsValue) -> Decoded<super::ConnectOptions> {
    let opt_flag = |key: &str| -> Decoded<bool> {
        let x = get(v, key);
        if absent(&x) {
            return Ok(false);
        }
        x.as_bool().ok_or_else(|| invalid(key))
    };
    let held = get(v, "heldElsewhere");
    Ok(super::ConnectOptions {
        url: text(v, "url")?,
        token: text(v, "token")?,
        presence: opt_flag("presence")?,
        call_waiting: opt_flag("callWaiting")?,
        held_elsewhere: if absent(&held) {
            Vec::new()
        } else {
            list(v, "heldElsewhere", |x| {
                x.as_string().ok_or_else(|| invalid("heldElsewhere"))
            })?
        },
        backoff_base_ms: opt_num(v, "backoffBaseMs")?,
        backoff_max_ms: opt_num(v, "backoffMaxMs")?,
        give_up_after_ms: opt_num(v, "giveUpAfterMs")?,
        connect_timeout_ms: opt_num(v, "connectTimeoutMs")?,
    })
}

/// The message of a refused command (the engine's `Display`, without `core::fmt`).
pub fn client_error_message(e: &ClientError) -> String {
    match e {
        ClientError::AlreadyInCall { call } => {
            ["already in call ", call, " with this peer"].concat()
        }
        ClientError::LoggedOut => "logged out".into(),
        ClientError::InvitePending => "an invite to this peer is already pending".into(),
        ClientError::UnknownCall => "no such call".into(),
        ClientError::InvalidState(why) | ClientError::InvalidArgument(why) => (*why).into(),
        ClientError::BufferFull => "too many unacknowledged messages".into(),
        ClientError::NoRejoin => "no rejoin is available for this call".into(),
        ClientError::FrameTooLarge { bytes, max } => [
            "the message is about ",
            &decimal(*bytes as u64),
            " bytes; the server accepts frames of at most ",
            &decimal(*max as u64),
        ]
        .concat(),
    }
}

/// `n` in decimal, without `core::fmt`.
pub fn decimal(mut n: u64) -> String {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits[at..].iter().map(|&d| d as char).collect()
}

// ------------------------------------------------------------------ the other direction
//
// The browser never decodes client frames nor encodes server frames; these exist for
// the conformance tests (`tests/web_codec.rs`), which check both directions of both
// frame types against serde. Nothing calls them in the package, so the wasm build
// drops them.

/// Encodes a server frame as JSON text (what the server's serde writes, up to key order).
pub fn encode_server(frame: &ServerFrame) -> String {
    stringify(&server_frame_js(frame))
}

fn server_frame_js(frame: &ServerFrame) -> JsValue {
    match frame {
        ServerFrame::Welcome(w) => {
            let o = Obj::tagged("t", "welcome");
            let t = &w.timers;
            let grace = Obj::new();
            for (kind, ms) in &t.grace_ms {
                grace.num(kind, *ms);
            }
            let timers = Obj::new();
            timers
                .num("heartbeat_interval_ms", t.heartbeat_interval_ms)
                .num("heartbeat_timeout_ms", t.heartbeat_timeout_ms)
                .num("resume_window_ms", t.resume_window_ms)
                .num("default_grace_ms", t.default_grace_ms)
                .put("grace_ms", &grace.done())
                .num("ring_timeout_ms", t.ring_timeout_ms)
                .num("ring_detach_grace_ms", t.ring_detach_grace_ms);
            let limits = Obj::new();
            limits
                .num("max_frame_bytes", w.limits.max_frame_bytes as u64)
                .num("max_msgs_per_sec", w.limits.max_msgs_per_sec.into())
                .num("burst", w.limits.burst.into());
            o.str("session", &w.session)
                .str("secret", &w.secret)
                .flag("resumed", w.resumed)
                .num("last_seq", w.last_seq)
                .put("user", &peer_js(&w.user))
                .put("timers", &timers.done())
                .put("limits", &limits.done())
                .num("now", w.now);
            if let Some(snap) = &w.snapshot {
                let so = Obj::new();
                so.put("calls", &list_js(&snap.calls, call_info_js))
                    .put("presence", &list_js(&snap.presence, presence_js))
                    .put(
                        "ended",
                        &list_js(&snap.ended, |e| {
                            let eo = Obj::new();
                            eo.str("call", &e.call).str("reason", e.reason.as_str());
                            eo.done()
                        }),
                    );
                o.put("snapshot", &so.done());
            }
            o.done()
        }
        ServerFrame::Msg { seq, ack, body } => {
            let o = Obj::tagged("t", "msg");
            o.num("seq", *seq)
                .num("ack", *ack)
                .put("body", &server_msg_js(body));
            o.done()
        }
        ServerFrame::Ack { ack } => {
            let o = Obj::tagged("t", "ack");
            o.num("ack", *ack);
            o.done()
        }
        ServerFrame::Pong { ack } => {
            let o = Obj::tagged("t", "pong");
            o.num("ack", *ack);
            o.done()
        }
        ServerFrame::Error(e) => {
            let o = Obj::tagged("t", "error");
            error_fields(&o, e);
            o.done()
        }
        ServerFrame::Bye => Obj::tagged("t", "bye").done(),
    }
}

fn error_fields(o: &Obj, e: &ErrorBody) {
    o.str("code", e.code.as_str()).str("message", &e.message);
    if let Some(re) = e.re {
        o.num("re", re);
    }
    o.flag("fatal", e.fatal);
}

fn participant_js(p: &ParticipantInfo) -> JsValue {
    let o = Obj::new();
    o.put("user", &peer_js(&p.user))
        .str("link", link_state_name(p.link));
    if let Some(d) = p.deadline {
        o.num("deadline", d);
    }
    o.done()
}

fn call_info_js(c: &CallInfo) -> JsValue {
    let o = Obj::new();
    o.str("id", &c.id)
        .opt_str("kind", c.kind.as_deref())
        .str("state", call_state_name(c.state))
        .put("caller", &participant_js(&c.caller))
        .put("callee", &participant_js(&c.callee))
        .num("grace_ms", c.grace_ms);
    if let Some(d) = c.ring_deadline {
        o.num("ring_deadline", d);
    }
    if let Some(md) = &c.metadata {
        o.put("metadata", &value_to_js(md));
    }
    o.flag("held_here", c.held_here);
    o.done()
}

fn server_msg_js(m: &ServerMsg) -> JsValue {
    let tagged = |tag: &str| Obj::tagged("type", tag);
    let on_call = |tag: &str, call: &str| {
        let o = tagged(tag);
        o.str("call", call);
        o
    };
    let o = match m {
        ServerMsg::CallCreated { re, call, existing } => {
            let o = tagged("call-created");
            o.num("re", *re)
                .put("call", &call_info_js(call))
                .flag("existing", *existing);
            o
        }
        ServerMsg::IncomingCall { call } => {
            let o = tagged("incoming-call");
            o.put("call", &call_info_js(call));
            o
        }
        ServerMsg::CallStarted {
            call,
            rejoin_token,
            rejoined,
        } => {
            let o = tagged("call-started");
            o.put("call", &call_info_js(call))
                .str("rejoin_token", rejoin_token)
                .flag("rejoined", *rejoined);
            o
        }
        ServerMsg::ParticipantDisconnected {
            call,
            user,
            deadline,
            remaining_ms,
        } => {
            let o = on_call("participant-disconnected", call);
            o.str("user", user)
                .num("deadline", *deadline)
                .num("remaining_ms", *remaining_ms);
            o
        }
        ServerMsg::ParticipantReconnected { call, user } => {
            let o = on_call("participant-reconnected", call);
            o.str("user", user);
            o
        }
        ServerMsg::CallEnded { call, reason } => {
            let o = on_call("call-ended", call);
            o.str("reason", reason.as_str());
            o
        }
        ServerMsg::CallMoved { call } => on_call("call-moved", call),
        ServerMsg::Signal {
            call,
            from,
            payload,
        } => {
            let o = on_call("signal", call);
            o.str("from", from).put("payload", &value_to_js(payload));
            o
        }
        ServerMsg::Presence { entries } => {
            let o = tagged("presence");
            o.put("entries", &list_js(entries, presence_js));
            o
        }
        ServerMsg::PresenceChanged { entry } => {
            let o = tagged("presence-changed");
            o.put("entry", &presence_js(entry));
            o
        }
        ServerMsg::Error(e) => {
            let o = tagged("error");
            error_fields(&o, e);
            o
        }
    };
    o.done()
}

/// Decodes a client frame from JSON text the way the server's serde does (an unknown
/// `t` or message `type` is `Unknown`).
pub fn decode_client_text(text: &str) -> Decoded<ClientFrame> {
    let f = JSON::parse(text).map_err(|_| BadFrame::Malformed("not JSON".into()))?;
    Ok(match self::text(&f, "t")?.as_str() {
        "hello" => {
            let r = get(&f, "resume");
            ClientFrame::Hello(Hello {
                v: num32(&f, "v")?,
                token: self::text(&f, "token")?,
                resume: if absent(&r) {
                    None
                } else {
                    Some(Resume {
                        session: self::text(&r, "session")?,
                        secret: self::text(&r, "secret")?,
                        last_seq: num(&r, "last_seq")?,
                    })
                },
                presence: flag_or_false(&f, "presence")?,
                call_waiting: flag_or_false(&f, "call_waiting")?,
                tab: opt_text(&f, "tab")?,
            })
        }
        "msg" => ClientFrame::Msg {
            seq: num(&f, "seq")?,
            ack: num(&f, "ack")?,
            body: client_msg(&get(&f, "body"))?,
        },
        "ack" => ClientFrame::Ack {
            ack: num(&f, "ack")?,
        },
        "ping" => ClientFrame::Ping {
            ack: num(&f, "ack")?,
        },
        "bye" => ClientFrame::Bye,
        "leave" => ClientFrame::Leave,
        _ => ClientFrame::Unknown,
    })
}

fn client_msg(b: &JsValue) -> Decoded<ClientMsg> {
    Ok(match text(b, "type")?.as_str() {
        "invite" => {
            let md = get(b, "metadata");
            ClientMsg::Invite {
                peer: text(b, "peer")?,
                kind: opt_text(b, "kind")?,
                metadata: if absent(&md) {
                    None
                } else {
                    Some(value_from_js(&md).ok_or_else(|| invalid("metadata"))?)
                },
            }
        }
        "accept" => ClientMsg::Accept {
            call: text(b, "call")?,
        },
        "decline" => ClientMsg::Decline {
            call: text(b, "call")?,
            busy: flag_or_false(b, "busy")?,
        },
        "cancel" => ClientMsg::Cancel {
            call: text(b, "call")?,
        },
        "hangup" => ClientMsg::Hangup {
            call: text(b, "call")?,
        },
        "signal" => {
            let payload = json_value(b, "payload")?;
            ClientMsg::Signal {
                call: text(b, "call")?,
                payload,
            }
        }
        "rejoin" => ClientMsg::Rejoin {
            call: text(b, "call")?,
            token: text(b, "token")?,
        },
        "set-status" => ClientMsg::SetStatus {
            status: wire_name(b, "status", &PRESENCE_STATUSES, status_name)?,
        },
        _ => ClientMsg::Unknown,
    })
}
