//! Browser tests of the wasm driver, in headless Chromium (wasm-bindgen-test), against
//! a real `holdfast-server` that `scripts/test-browser.sh` starts with short windows and
//! test hooks. The server's address comes in at compile time as `HOLDFAST_TEST_HTTP`.
#![cfg(target_arch = "wasm32")]

use holdfast::web::{self, record_key, ConnectOptions, Driver, RECORD_PREFIX};
use js_sys::{Function, Promise, Reflect};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const HTTP: &str = match option_env!("HOLDFAST_TEST_HTTP") {
    Some(v) => v,
    None => "http://127.0.0.1:18391",
};

fn ws_url() -> String {
    format!("{}/ws", HTTP.replacen("http://", "ws://", 1))
}

/// A unique identity per test, so tests sharing the server never meet.
fn user(name: &str) -> String {
    format!("{name}-{}", (js_sys::Math::random() * 1e9) as u64)
}

async fn sleep(ms: i32) {
    let p = Promise::new(&mut |resolve, _| {
        let w = web_sys::window().unwrap();
        w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .unwrap();
    });
    JsFuture::from(p).await.unwrap();
}

async fn fetch_text(method: &str, path: &str) -> String {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    let w = web_sys::window().unwrap();
    let resp = JsFuture::from(w.fetch_with_str_and_init(&format!("{HTTP}{path}"), &init))
        .await
        .expect("server reachable");
    let resp: web_sys::Response = resp.dyn_into().unwrap();
    JsFuture::from(resp.text().unwrap())
        .await
        .unwrap()
        .as_string()
        .unwrap()
}

async fn metric(name: &str) -> u64 {
    let body = fetch_text("GET", "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

/// Events a client produced, as JS objects.
#[derive(Clone, Default)]
struct Events(Rc<RefCell<Vec<JsValue>>>);

impl Events {
    fn callback(&self) -> (Function, Closure<dyn FnMut(JsValue)>) {
        let store = self.0.clone();
        let closure = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
            store.borrow_mut().push(ev);
        });
        (
            closure.as_ref().unchecked_ref::<Function>().clone(),
            closure,
        )
    }

    fn kinds(&self) -> Vec<String> {
        self.0.borrow().iter().map(|e| get_str(e, "type")).collect()
    }

    fn of(&self, kind: &str) -> Vec<JsValue> {
        self.0
            .borrow()
            .iter()
            .filter(|e| get_str(e, "type") == kind)
            .cloned()
            .collect()
    }

    /// Waits until an event of `kind` arrives (up to `ms`), returning it.
    async fn wait(&self, kind: &str, ms: i32) -> JsValue {
        let mut waited = 0;
        loop {
            if let Some(e) = self.of(kind).into_iter().next() {
                return e;
            }
            assert!(
                waited < ms,
                "no {kind} event within {ms} ms; saw {:?}",
                self.kinds()
            );
            sleep(20).await;
            waited += 20;
        }
    }

    fn clear(&self) {
        self.0.borrow_mut().clear();
    }
}

/// JSON data as a plain JS object (not a `Map`).
fn js_options(v: &serde_json::Value) -> JsValue {
    use serde::Serialize;
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .unwrap()
}

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &key.into()).unwrap()
}

fn get_str(v: &JsValue, key: &str) -> String {
    get(v, key).as_string().unwrap_or_default()
}

fn get_num(v: &JsValue, key: &str) -> f64 {
    get(v, key).as_f64().unwrap_or(f64::NAN)
}

fn opts(token: &str) -> ConnectOptions {
    ConnectOptions {
        url: ws_url(),
        token: token.to_owned(),
        presence: false,
        call_waiting: false,
        held_elsewhere: vec![],
        backoff_base_ms: Some(50),
        backoff_max_ms: Some(300),
        give_up_after_ms: None,
        connect_timeout_ms: None,
    }
}

/// A client outside the page singleton (a second person, or a "reloaded page").
struct Person {
    driver: Rc<Driver>,
    events: Events,
    _cb: Closure<dyn FnMut(JsValue)>,
}

impl Person {
    fn start(token: &str) -> Person {
        let events = Events::default();
        let (f, cb) = events.callback();
        let driver = Driver::start(opts(token), Some(f)).expect("client starts");
        Person {
            driver,
            events,
            _cb: cb,
        }
    }
}

fn storage() -> web_sys::Storage {
    web_sys::window().unwrap().local_storage().unwrap().unwrap()
}

fn record_keys() -> Vec<String> {
    let s = storage();
    (0..s.length().unwrap())
        .filter_map(|i| s.key(i).unwrap())
        .filter(|k| k.starts_with(RECORD_PREFIX))
        .collect()
}

fn clear_records() {
    for k in record_keys() {
        storage().remove_item(&k).unwrap();
    }
}

/// `caller` calls `callee` and the callee accepts; returns the call id.
async fn make_call(caller: &Person, callee: &Person, callee_id: &str) -> String {
    caller.events.wait("connected", 3000).await;
    callee.events.wait("connected", 3000).await;
    caller
        .driver
        .command(|e, t| e.call(callee_id, None, None, t).map(|_| ()))
        .unwrap()
        .unwrap();
    let incoming = callee.events.wait("incoming-call", 3000).await;
    let id = get_str(&get(&incoming, "call"), "id");
    callee
        .driver
        .command(|e, t| e.accept(&id, t).map(|_| ()))
        .unwrap()
        .unwrap();
    caller.events.wait("call-started", 3000).await;
    callee.events.wait("call-started", 3000).await;
    id
}

#[wasm_bindgen_test]
async fn singleton_keeps_one_socket_across_connects() {
    let me = user("solo");
    let opened_before = metric("holdfast_connections_opened_total").await;
    let events = Events::default();
    let (f, _cb) = events.callback();
    let options = |token: &str| js_options(&serde_json::json!({"url": ws_url(), "token": token}));
    assert!(web::connect(options(&me), f.clone()).unwrap());
    events.wait("connected", 3000).await;
    // Any number of components connecting again get the same client and socket.
    for _ in 0..5 {
        let again = web::connect(options(&me), f.clone()).unwrap();
        assert!(!again, "a second connect reuses the client");
    }
    // Another identity is a clear error, not a second socket.
    let other = web::connect(options("someone-else"), f.clone());
    let err = other.unwrap_err();
    assert_eq!(get_str(&err, "code"), "already-connected");
    sleep(200).await;
    // Six connects, one socket (tests run one at a time, so nobody else connects).
    assert_eq!(
        metric("holdfast_connections_opened_total").await,
        opened_before + 1
    );
    // Only logout closes it, and nothing reconnects afterwards.
    web::logout(None).unwrap();
    events.wait("logged-out", 1000).await;
    sleep(300).await;
    assert!(!web::is_connected());
    assert_eq!(
        metric("holdfast_connections_opened_total").await,
        opened_before + 1
    );
    let err = web::hangup("nothing".into()).unwrap_err();
    assert_eq!(get_str(&err, "code"), "not-connected");
}

#[wasm_bindgen_test]
async fn reconnects_and_resumes_after_the_server_drops_the_socket() {
    let me = user("dropped");
    let p = Person::start(&me);
    p.events.wait("connected", 3000).await;
    p.events.clear();
    let dropped = fetch_text("POST", &format!("/test/drop?user={me}")).await;
    assert_eq!(dropped, "1");
    p.events.wait("disconnected", 3000).await;
    let resumed = p.events.wait("resumed", 3000).await;
    assert_eq!(get(&resumed, "recovered").as_bool(), Some(true));
    let kinds = p.events.kinds();
    assert!(kinds.contains(&"reconnecting".to_string()), "{kinds:?}");
}

#[wasm_bindgen_test]
async fn messages_sent_during_the_gap_arrive_once_in_order() {
    clear_records();
    let (a_id, b_id) = (user("alice"), user("bob"));
    let alice = Person::start(&a_id);
    let bob = Person::start(&b_id);
    let call = make_call(&alice, &bob, &b_id).await;
    alice.events.clear();
    fetch_text("POST", &format!("/test/drop?user={a_id}")).await;
    for n in 0..10 {
        let c = call.clone();
        bob.driver
            .command(move |e, t| e.send(&c, serde_json::json!({ "n": n }), t).map(|_| ()))
            .unwrap()
            .unwrap();
    }
    alice.events.wait("resumed", 3000).await;
    let mut waited = 0;
    while alice.events.of("signal").len() < 10 && waited < 3000 {
        sleep(20).await;
        waited += 20;
    }
    sleep(200).await;
    let got: Vec<f64> = alice
        .events
        .of("signal")
        .iter()
        .map(|s| get_num(&get(s, "payload"), "n"))
        .collect();
    assert_eq!(got, (0..10).map(f64::from).collect::<Vec<_>>());
    clear_records();
}

#[wasm_bindgen_test]
async fn rejoin_record_is_written_used_by_a_fresh_client_and_removed_on_hangup() {
    clear_records();
    let (a_id, b_id) = (user("alice"), user("bob"));
    let alice = Person::start(&a_id);
    let bob = Person::start(&b_id);
    let call = make_call(&alice, &bob, &b_id).await;
    let key = record_key(&call, &a_id);
    // Both people share this page's localStorage: both records are there, apart.
    assert!(record_keys().contains(&key));
    assert!(record_keys().contains(&record_key(&call, &b_id)));
    let stored = storage().get_item(&key).unwrap().unwrap();
    let token_before = get_str(&js_sys::JSON::parse(&stored).unwrap(), "token");

    // Alice's page dies without a word (no hang-up).
    let Person { driver, .. } = alice;
    driver.shutdown();
    drop(driver);
    bob.events.wait("participant-disconnected", 6000).await;

    // A fresh client (the reloaded page) finds the record and counts down.
    let alice2 = Person::start(&a_id);
    let offer = alice2.events.wait("rejoin-available", 3000).await;
    assert_eq!(get_str(&get(&offer, "offer"), "call"), call);
    assert_eq!(get_str(&get(&get(&offer, "offer"), "peer"), "id"), b_id);
    sleep(2300).await;
    let ticks: Vec<f64> = alice2
        .events
        .of("rejoin-countdown")
        .iter()
        .map(|e| get_num(e, "remainingMs"))
        .collect();
    assert!(ticks.len() >= 2, "a tick every second: {ticks:?}");
    assert!(
        ticks.windows(2).all(|w| w[1] < w[0]),
        "decreasing: {ticks:?}"
    );

    let c = call.clone();
    alice2
        .driver
        .command(move |e, t| e.rejoin(&c, t).map(|_| ()))
        .unwrap()
        .unwrap();
    let started = alice2.events.wait("call-started", 3000).await;
    assert_eq!(get(&started, "rejoined").as_bool(), Some(true));
    assert_eq!(get_str(&get(&started, "call"), "id"), call, "the same call");
    bob.events.wait("participant-reconnected", 3000).await;
    let token_after = get_str(
        &js_sys::JSON::parse(&storage().get_item(&key).unwrap().unwrap()).unwrap(),
        "token",
    );
    assert_ne!(token_before, token_after, "the token rotates on rejoin");

    let c = call.clone();
    bob.driver
        .command(move |e, t| e.hangup(&c, t).map(|_| ()))
        .unwrap()
        .unwrap();
    let ended = alice2.events.wait("call-ended", 3000).await;
    assert_eq!(get_str(&ended, "reason"), "hangup");
    sleep(100).await;
    assert!(
        !record_keys().contains(&key),
        "records are removed when the call ends"
    );
}

#[wasm_bindgen_test]
async fn expired_and_corrupt_records_are_ignored_and_removed() {
    clear_records();
    let me = user("careful");
    let s = storage();
    let expired = serde_json::json!({
        "v": 1, "call": "expiredcall", "user": me, "token": "a".repeat(64),
        "peer": {"id": "bob", "name": "Bob"}, "kind": null, "grace_ms": 60000,
        "deadline": js_sys::Date::now() as u64 - 1000,
    });
    s.set_item(&record_key("expiredcall", &me), &expired.to_string())
        .unwrap();
    s.set_item(&record_key("garbage", &me), "{not json")
        .unwrap();
    s.set_item(&record_key("shape", &me), r#"{"call": 5}"#)
        .unwrap();
    s.set_item(&format!("{RECORD_PREFIX}nouser"), "{}").unwrap();
    // A record naming another call than its key says is not trusted either.
    let mut swapped = expired.clone();
    swapped["call"] = "othercall".into();
    swapped["deadline"] = (js_sys::Date::now() as u64 + 60_000).into();
    s.set_item(&record_key("swapcall", &me), &swapped.to_string())
        .unwrap();
    // Another identity's record in the same browser is not touched.
    let theirs = record_key("theircall", "somebody-else");
    s.set_item(&theirs, &expired.to_string()).unwrap();
    let p = Person::start(&me);
    p.events.wait("connected", 3000).await;
    sleep(100).await;
    assert!(
        p.events.of("rejoin-available").is_empty(),
        "{:?}",
        p.events.kinds()
    );
    assert_eq!(
        record_keys(),
        vec![theirs.clone()],
        "only the other identity's record stays"
    );
    storage().remove_item(&theirs).unwrap();
    let snap = p.driver.snapshot().unwrap();
    assert_eq!(
        js_sys::Array::from(&get(&snap, "pendingRejoins")).length(),
        0
    );
    assert_eq!(get_str(&snap, "state"), "connected");
}
