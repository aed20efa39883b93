//! The browser driver (wasm32 only): the client engine over the browser's WebSocket,
//! localStorage, timers and page events, exposed to JavaScript through
//! `#[wasm_bindgen]`. The hand-written TypeScript facade in `www/src` wraps these raw
//! exports; apps use the facade.
//!
//! - **One client per page**: [`connect`] creates the page's client once; later calls
//!   with the same server and token reuse it (and its socket). Only [`logout`] ends it.
//! - **Owned registrations** (the gloo habit): every listener and timer is a handle that
//!   unregisters itself when dropped; nothing is leaked with `forget()`.
//! - **Callbacks only forward**: a browser event becomes one engine input; everything
//!   the engine asks for (sockets, frames, storage writes, events) is performed in
//!   [`Driver::pump`], after which the collected events are handed to JavaScript with
//!   no Rust borrow held, so JS may call back into the client from a handler.
//! - **No panics across the boundary**: every failure is a `HoldfastError` (a JS `Error`
//!   with a `code`).

use crate::engine::client::{
    ClientConfig, ClientEngine, ClientSnapshot, Event, Io, LinkId, ProbeResult, RejoinRecord,
    StorageOp,
};
use crate::protocol::{BadFrame, ClientFrame, PresenceStatus, ServerFrame, PROBE_HEADER};
use gloo_events::EventListener;
use gloo_timers::callback::Timeout;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, WebSocket};

/// localStorage key prefix of rejoin records (versioned with the record format). A
/// record's key is `<prefix><call>:<user>`: both people of a call may be signed in to
/// one browser (two tabs, two identities) without overwriting each other.
pub const RECORD_PREFIX: &str = "holdfast:v1:rejoin:";

/// The storage key of one identity's record for one call.
pub fn record_key(call: &str, user: &str) -> String {
    format!("{RECORD_PREFIX}{call}:{user}")
}

thread_local! {
    static CLIENT: RefCell<Option<Rc<Driver>>> = const { RefCell::new(None) };
    /// Clients that logged out and wait for the server's answer before they go.
    static LEAVING: RefCell<Vec<Rc<Driver>>> = const { RefCell::new(Vec::new()) };
    /// HTTP probes on their way. Kept here, not in their client: a callback must stay
    /// alive until its promise settles, even if the client is gone by then.
    static PROBES: RefCell<Vec<Probe>> = const { RefCell::new(Vec::new()) };
}

/// The same URL over HTTP(S).
fn http_url(ws_url: &str) -> String {
    if let Some(rest) = ws_url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = ws_url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        ws_url.to_owned()
    }
}

/// Where a page's logout fallback goes: `POST <socket URL>/bye` over HTTP(S).
fn bye_url(ws_url: &str) -> String {
    let http = http_url(ws_url);
    match http.split_once('?') {
        Some((path, query)) => format!("{}/bye?{query}", path.trim_end_matches('/')),
        None => format!("{}/bye", http.trim_end_matches('/')),
    }
}

/// A JS `Error` named `HoldfastError` with a stable `code`.
pub fn js_error(code: &str, message: &str) -> JsValue {
    let err = js_sys::Error::new(message);
    err.set_name("HoldfastError");
    let _ = js_sys::Reflect::set(&err, &"code".into(), &code.into());
    err.into()
}

/// Whether a `pagehide`/`pageshow` event says the page may be (or was) kept in the
/// back/forward cache.
fn persisted(ev: &web_sys::Event) -> bool {
    js_sys::Reflect::get(ev, &"persisted".into()).is_ok_and(|v| v.is_truthy())
}

/// sessionStorage key of this tab's id (see [`crate::protocol::Hello::tab`]).
const TAB_KEY: &str = "holdfast:v1:tab";

/// This tab's id: kept in sessionStorage, which is per tab and outlives a reload.
fn tab_id(window: &web_sys::Window) -> Option<String> {
    let storage = window.session_storage().ok().flatten()?;
    if let Some(id) = storage.get_item(TAB_KEY).ok().flatten() {
        return Some(id);
    }
    let id: String = (0..2)
        .map(|_| format!("{:013x}", (js_sys::Math::random() * 4.5e15) as u64))
        .collect();
    storage.set_item(TAB_KEY, &id).ok()?;
    Some(id)
}

fn now() -> u64 {
    js_sys::Date::now() as u64
}

fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| js_error("internal", &e.to_string()))
}

fn json_text<T: Serialize + ?Sized>(value: &T) -> Result<String, JsValue> {
    let js = to_js(value)?;
    js_sys::JSON::stringify(&js)
        .map(String::from)
        .map_err(|_| js_error("internal", "JSON.stringify failed"))
}

/// Who a token names, read without verifying it (only the server can): the `sub` of
/// a JWT, or the identity of a dev token (`alice` / `alice:Alice`).
fn identity_hint(token: &str) -> Option<String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return token.split(':').next().map(str::to_owned);
    }
    let mut b64: String = parts[1]
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while b64.len() % 4 != 0 {
        b64.push('=');
    }
    let json = web_sys::window()?.atob(&b64).ok()?;
    let claims = js_sys::JSON::parse(&json).ok()?;
    js_sys::Reflect::get(&claims, &"sub".into())
        .ok()?
        .as_string()
}

/// Options of [`connect`] (camelCase in JS).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectOptions {
    /// `ws://` or `wss://` URL of the server's `/ws` endpoint.
    pub url: String,
    /// The app backend's token (or a bare identity for a `--dev` server).
    pub token: String,
    #[serde(default)]
    pub presence: bool,
    #[serde(default)]
    pub call_waiting: bool,
    /// Calls another tab of this origin holds live (from Web Locks): not offered here.
    #[serde(default)]
    pub held_elsewhere: Vec<String>,
    #[serde(default)]
    pub backoff_base_ms: Option<u64>,
    #[serde(default)]
    pub backoff_max_ms: Option<u64>,
    #[serde(default)]
    pub give_up_after_ms: Option<u64>,
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
}

/// How long a probe's requests may take before the browser aborts them (the engine
/// reports the failure sooner; this only bounds how long the callbacks are kept).
const PROBE_ABORT_MS: u32 = 3_000;

/// One HTTP probe of the socket URL after a failed attempt (see
/// `crate::engine::client::ProbeResult`): a CORS `GET` first, whose answer carries
/// Holdfast's header when a Holdfast server is there; if the browser refuses it (a
/// network error, or an answer without CORS headers, which no Holdfast server sends), a
/// `no-cors` `GET` tells an answer that is not Holdfast's (opaque) from no answer at all.
struct Probe {
    done: Rc<Cell<bool>>,
    _on_answer: Closure<dyn FnMut(JsValue)>,
    _on_refused: Closure<dyn FnMut(JsValue)>,
}

impl Probe {
    fn start(driver: Weak<Driver>, url: &str, link: LinkId) {
        let Some(window) = web_sys::window() else {
            return report_probe(&driver, link, ProbeResult::Unreachable);
        };
        let url = http_url(url);
        let done = Rc::new(Cell::new(false));
        let settle = {
            let done = done.clone();
            let driver = driver.clone();
            move |result: ProbeResult| {
                if !done.replace(true) {
                    report_probe(&driver, link, result);
                }
            }
        };
        let on_answer = Closure::<dyn FnMut(JsValue)>::new({
            let settle = settle.clone();
            move |response: JsValue| {
                let Some(response) = response.dyn_ref::<web_sys::Response>() else {
                    return settle(ProbeResult::Unreachable);
                };
                let protocol = response
                    .headers()
                    .get(PROBE_HEADER)
                    .ok()
                    .flatten()
                    .and_then(|v| v.trim().parse().ok());
                settle(match protocol {
                    Some(protocol) => ProbeResult::Holdfast { protocol },
                    None => ProbeResult::NotHoldfast {
                        status: Some(response.status()),
                    },
                });
            }
        });
        // The CORS request failed: ask again without CORS, whose answer is opaque.
        let on_opaque = Closure::<dyn FnMut(JsValue)>::new({
            let settle = settle.clone();
            move |_| settle(ProbeResult::NotHoldfast { status: None })
        });
        let on_nothing = Closure::<dyn FnMut(JsValue)>::new({
            let settle = settle.clone();
            move |_| settle(ProbeResult::Unreachable)
        });
        let on_refused = Closure::<dyn FnMut(JsValue)>::new({
            let (window, url) = (window.clone(), url.clone());
            move |_| {
                let _ = probe_request(&window, &url, web_sys::RequestMode::NoCors)
                    .then2(&on_opaque, &on_nothing);
            }
        });
        let _ =
            probe_request(&window, &url, web_sys::RequestMode::Cors).then2(&on_answer, &on_refused);
        PROBES.with(|p| {
            let mut probes = p.borrow_mut();
            probes.retain(|p| !p.done.get());
            probes.push(Probe {
                done,
                _on_answer: on_answer,
                _on_refused: on_refused,
            });
        });
    }
}

fn probe_request(
    window: &web_sys::Window,
    url: &str,
    mode: web_sys::RequestMode,
) -> js_sys::Promise {
    let init = web_sys::RequestInit::new();
    init.set_mode(mode);
    init.set_cache(web_sys::RequestCache::NoStore);
    init.set_signal(Some(&web_sys::AbortSignal::timeout_with_u32(
        PROBE_ABORT_MS,
    )));
    window.fetch_with_str_and_init(url, &init)
}

fn report_probe(driver: &Weak<Driver>, link: LinkId, result: ProbeResult) {
    if let Some(d) = driver.upgrade() {
        d.input(|e, t| e.handle_probe_result(link, result, t));
    }
}

struct Socket {
    link: LinkId,
    ws: WebSocket,
    _listeners: Vec<EventListener>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Listeners go first (their own Drop), so no late event reaches the engine.
        let _ = self.ws.close();
    }
}

/// One client: the engine plus everything the browser gives it.
pub struct Driver {
    url: String,
    token: String,
    engine: RefCell<ClientEngine>,
    socket: RefCell<Option<Socket>>,
    timer: RefCell<Option<(u64, Timeout)>>,
    page: RefCell<Vec<EventListener>>,
    on_event: RefCell<Option<js_sys::Function>>,
    storage: Option<web_sys::Storage>,
    /// Which storage key each call's record lives under.
    record_keys: RefCell<HashMap<String, String>>,
    identity_hint: Option<String>,
    me: RefCell<Weak<Driver>>,
    pumping: Cell<bool>,
    /// In the back/forward cache or frozen: the socket is let go until thawed.
    frozen: Cell<bool>,
    /// Logged out: called (once) when the logout has reached the server or was handed
    /// to the browser for delivery; then the client is gone.
    on_left: RefCell<Option<Option<js_sys::Function>>>,
}

impl Driver {
    /// Builds a client, reads its rejoin records, hooks page events, and connects.
    pub fn start(
        opts: ConnectOptions,
        on_event: Option<js_sys::Function>,
    ) -> Result<Rc<Driver>, JsValue> {
        if !(opts.url.starts_with("ws://") || opts.url.starts_with("wss://")) {
            return Err(js_error(
                "invalid-argument",
                "url must start with ws:// or wss://",
            ));
        }
        if opts.token.is_empty() {
            return Err(js_error("invalid-argument", "token must not be empty"));
        }
        let mut config = ClientConfig::new(opts.token.clone());
        config.presence = opts.presence;
        config.call_waiting = opts.call_waiting;
        config.seed = (js_sys::Math::random() * 9.0e15) as u64;
        config.json_bytes = |msg| json_text(msg).map_or(usize::MAX, |text| text.len());
        let hint = identity_hint(&opts.token);
        config.identity_hint = hint.clone();
        if let Some(v) = opts.backoff_base_ms {
            config.backoff_base_ms = v;
        }
        if let Some(v) = opts.backoff_max_ms {
            config.backoff_max_ms = v;
        }
        if let Some(v) = opts.give_up_after_ms {
            config.give_up_after_ms = v;
        }
        if let Some(v) = opts.connect_timeout_ms {
            config.connect_timeout_ms = v;
        }
        let window = web_sys::window().ok_or_else(|| js_error("unsupported", "no window"))?;
        let storage = window.local_storage().ok().flatten();
        config.tab = tab_id(&window);
        let driver = Rc::new(Driver {
            url: opts.url,
            token: opts.token,
            engine: RefCell::new(ClientEngine::new(config)),
            socket: RefCell::new(None),
            timer: RefCell::new(None),
            page: RefCell::new(Vec::new()),
            on_event: RefCell::new(on_event),
            storage,
            record_keys: RefCell::new(HashMap::new()),
            identity_hint: hint,
            me: RefCell::new(Weak::new()),
            pumping: Cell::new(false),
            frozen: Cell::new(false),
            on_left: RefCell::new(None),
        });
        *driver.me.borrow_mut() = Rc::downgrade(&driver);
        driver.hook_page(&window);
        let records = driver.read_records();
        let t = now();
        {
            let mut engine = driver.engine.borrow_mut();
            engine.handle_online(window.navigator().on_line(), t);
            for call in &opts.held_elsewhere {
                engine.set_held_by_other_tab(call, true, t);
            }
            engine.load_rejoin_records(records, t);
            engine.connect(t);
        }
        driver.pump();
        Ok(driver)
    }

    fn weak(&self) -> Weak<Driver> {
        self.me.borrow().clone()
    }

    /// Runs one engine input, then performs what it asked for.
    fn input(&self, f: impl FnOnce(&mut ClientEngine, u64)) {
        match self.engine.try_borrow_mut() {
            Ok(mut engine) => f(&mut engine, now()),
            // Only reachable if a browser callback fired inside another input, which
            // the single-threaded event loop does not do; dropping it is safe because
            // every input is idempotent or repeated by the browser.
            Err(_) => return,
        }
        self.pump();
    }

    /// Runs an app command on the engine and performs what it asked for. The JS
    /// exports go through here; tests that need two people in one page use it on
    /// clients made with [`Driver::start`], outside the page singleton.
    pub fn command<R>(&self, f: impl FnOnce(&mut ClientEngine, u64) -> R) -> Result<R, JsValue> {
        let result = {
            let mut engine = self.engine.try_borrow_mut().map_err(|_| {
                js_error("busy", "the client is busy; call again from a later task")
            })?;
            f(&mut engine, now())
        };
        self.pump();
        Ok(result)
    }

    fn hook_page(&self, window: &web_sys::Window) {
        let mut page = self.page.borrow_mut();
        let on =
            |target: &web_sys::EventTarget, name: &'static str, f: fn(&Driver, &web_sys::Event)| {
                let weak = self.weak();
                EventListener::new(target, name, move |ev| {
                    if let Some(d) = weak.upgrade() {
                        f(&d, ev);
                    }
                })
            };
        page.push(on(window, "online", |d, _| {
            d.input(|e, t| e.handle_online(true, t))
        }));
        page.push(on(window, "offline", |d, _| {
            d.input(|e, t| e.handle_online(false, t))
        }));
        page.push(on(window, "pageshow", |d, ev| {
            if persisted(ev) {
                d.thaw();
            }
            d.input(|e, t| e.handle_wake(t))
        }));
        page.push(on(window, "pagehide", |d, ev| {
            if persisted(ev) {
                d.freeze();
            } else {
                d.unload();
            }
        }));
        if let Some(doc) = window.document() {
            // Page Lifecycle: a frozen page runs nothing, yet the browser still answers
            // the server's WebSocket pings, so its link would look alive while no frame
            // reaches the app.
            page.push(on(&doc, "freeze", |d, _| d.freeze()));
            page.push(on(&doc, "resume", |d, _| d.thaw()));
            page.push(on(&doc, "visibilitychange", |d, _| {
                let visible = web_sys::window()
                    .and_then(|w| w.document())
                    .is_some_and(|doc| doc.visibility_state() == web_sys::VisibilityState::Visible);
                if visible {
                    d.input(|e, t| e.handle_wake(t));
                }
            }));
        }
    }

    /// The page is going into the back/forward cache (`pagehide` with `persisted`) or
    /// being frozen: close the socket now, keeping the session, and make no attempt
    /// until [`Driver::thaw`]. Chromium would otherwise kill the socket itself (and log
    /// an error), and other browsers refuse to cache a page with an open socket. The
    /// server sees a dropped link and holds the calls for their grace windows.
    fn freeze(&self) {
        if self.frozen.replace(true) {
            return;
        }
        let link = self.socket.borrow_mut().take().map(|s| s.link); // Drop closes it.
        self.input(|e, t| {
            e.handle_pagehide(t);
            // The engine's offline state is exactly what a cached page needs: no link
            // and no attempts (no timer runs anyway) until it is told otherwise.
            e.handle_online(false, t);
            if let Some(link) = link {
                e.handle_close(link, t);
            }
        });
    }

    /// The page is going away for good: the engine says `leave` (the server forgets the
    /// session now; calls wait for a rejoin), then the socket closes behind the frame.
    fn unload(&self) {
        self.input(|e, t| e.handle_unload(t));
        *self.socket.borrow_mut() = None; // Drop unhooks listeners and closes.
    }

    /// The page came back from the cache (`pageshow` with `persisted`) or was resumed:
    /// reconnect at once, resuming the session.
    fn thaw(&self) {
        if !self.frozen.replace(false) {
            return;
        }
        let online = web_sys::window().is_none_or(|w| w.navigator().on_line());
        self.input(|e, t| e.handle_online(online, t));
    }

    /// This identity's rejoin records in localStorage. Unreadable ones are removed,
    /// never thrown; another identity's are left alone.
    fn read_records(&self) -> Vec<RejoinRecord> {
        let Some(storage) = &self.storage else {
            return Vec::new();
        };
        let len = storage.length().unwrap_or(0);
        let keys: Vec<String> = (0..len)
            .filter_map(|i| storage.key(i).ok().flatten())
            .filter(|k| k.starts_with(RECORD_PREFIX))
            .collect();
        let mut records = Vec::new();
        for key in keys {
            let named = key[RECORD_PREFIX.len()..].split_once(':');
            if let (Some((_, user)), Some(me)) = (named, &self.identity_hint) {
                if user != me {
                    continue;
                }
            }
            let parsed = named.and_then(|(call, user)| {
                storage
                    .get_item(&key)
                    .ok()
                    .flatten()
                    .and_then(|text| js_sys::JSON::parse(&text).ok())
                    .and_then(|js| serde_wasm_bindgen::from_value::<RejoinRecord>(js).ok())
                    .filter(|r| r.call == call && r.user == user)
            });
            match parsed {
                Some(r) => {
                    self.record_keys.borrow_mut().insert(r.call.clone(), key);
                    records.push(r);
                }
                None => {
                    let _ = storage.remove_item(&key);
                }
            }
        }
        records
    }

    /// This identity's stored record of one call, as it is in storage now.
    fn stored_record(&self, call: &str) -> Option<RejoinRecord> {
        let storage = self.storage.as_ref()?;
        let key = self
            .record_keys
            .borrow()
            .get(call)
            .cloned()
            .or_else(|| self.identity_hint.as_ref().map(|me| record_key(call, me)))?;
        let text = storage.get_item(&key).ok().flatten()?;
        let js = js_sys::JSON::parse(&text).ok()?;
        serde_wasm_bindgen::from_value::<RejoinRecord>(js)
            .ok()
            .filter(|r| r.call == call)
    }

    fn open_socket(&self, link: LinkId) {
        let ws = match WebSocket::new(&self.url) {
            Ok(ws) => ws,
            Err(_) => {
                // A malformed URL or a blocked port: a failed attempt. Safe to feed now:
                // the pump running this Io drains whatever the input queues.
                self.input(|e, t| e.handle_close(link, t));
                return;
            }
        };
        let weak = self.weak();
        let on_open = EventListener::new(&ws, "open", {
            let weak = weak.clone();
            move |_| {
                if let Some(d) = weak.upgrade() {
                    d.input(|e, t| e.handle_open(link, t));
                }
            }
        });
        let on_message = EventListener::new(&ws, "message", {
            let weak = weak.clone();
            move |ev| {
                let Some(d) = weak.upgrade() else { return };
                let frame = ev
                    .dyn_ref::<MessageEvent>()
                    .and_then(|m| m.data().as_string())
                    .ok_or(BadFrame::Binary)
                    .and_then(|text| {
                        let js = js_sys::JSON::parse(&text)
                            .map_err(|_| BadFrame::Malformed("not JSON".into()))?;
                        serde_wasm_bindgen::from_value::<ServerFrame>(js)
                            .map_err(|e| BadFrame::Malformed(e.to_string()))
                    });
                d.input(|e, t| match frame {
                    Ok(f) => e.handle_frame(link, f, t),
                    Err(bad) => e.handle_bad_frame(link, bad, t),
                });
            }
        });
        // `error` is always followed by `close`; only `close` is an input.
        let on_close = EventListener::new(&ws, "close", move |_| {
            if let Some(d) = weak.upgrade() {
                d.input(|e, t| e.handle_close(link, t));
            }
        });
        *self.socket.borrow_mut() = Some(Socket {
            link,
            ws,
            _listeners: vec![on_open, on_message, on_close],
        });
    }

    /// Performs everything the engine asked for, then hands events to JS.
    fn pump(&self) {
        if self.pumping.replace(true) {
            return; // an outer pump on the stack will drain what this input queued
        }
        let mut events: Vec<Event> = Vec::new();
        loop {
            let Ok(mut engine) = self.engine.try_borrow_mut() else {
                break;
            };
            let mut ios = Vec::new();
            while let Some(io) = engine.poll_io() {
                ios.push(io);
            }
            let mut frames = Vec::new();
            while let Some(f) = engine.poll_transmit() {
                frames.push(f);
            }
            let mut ops = Vec::new();
            while let Some(op) = engine.poll_storage() {
                ops.push(op);
            }
            let before = events.len();
            while let Some(ev) = engine.poll_event() {
                events.push(ev);
            }
            let goodbyes: Vec<_> = std::iter::from_fn(|| engine.poll_goodbye()).collect();
            let deadline = engine.poll_timeout();
            let current = engine.current_link();
            drop(engine);
            let idle = ios.is_empty()
                && frames.is_empty()
                && ops.is_empty()
                && goodbyes.is_empty()
                && events.len() == before;
            for goodbye in goodbyes {
                self.send_goodbye(&goodbye);
            }
            for io in ios {
                match io {
                    Io::Open(link) => self.open_socket(link),
                    Io::Probe(link) => Probe::start(self.weak(), &self.url, link),
                    Io::Close(link) => {
                        let mut sock = self.socket.borrow_mut();
                        if sock.as_ref().is_some_and(|s| s.link == link) {
                            *sock = None; // Drop unhooks listeners and closes.
                        }
                    }
                }
            }
            for frame in frames {
                self.transmit(current, &frame);
            }
            for op in ops {
                self.store(op);
            }
            self.arm_timer(deadline);
            if idle {
                break;
            }
        }
        self.pumping.set(false);
        self.dispatch(events);
        self.leave_when_delivered();
    }

    /// A logout's HTTP fallback, with `sendBeacon`: the browser delivers it even while
    /// the page unloads.
    fn send_goodbye(&self, goodbye: &crate::engine::client::Goodbye) {
        let (Some(window), Ok(body)) = (web_sys::window(), json_text(goodbye)) else {
            return;
        };
        let _ = window
            .navigator()
            .send_beacon_with_opt_str(&bye_url(&self.url), Some(&body));
    }

    /// After a logout: once the server has it (or the browser carries it), the client
    /// lets go of everything and tells whoever called `logout`.
    fn leave_when_delivered(&self) {
        let pending = self
            .engine
            .try_borrow()
            .map_or(true, |e| e.logout_pending());
        if pending {
            return;
        }
        let Some(done) = self.on_left.borrow_mut().take() else {
            return;
        };
        self.shutdown();
        LEAVING.with(|l| {
            l.borrow_mut()
                .retain(|d| !std::ptr::eq(Rc::as_ptr(d), self))
        });
        if let Some(done) = done {
            let _ = done.call0(&JsValue::NULL);
        }
    }

    fn transmit(&self, link: Option<LinkId>, frame: &ClientFrame) {
        let sock = self.socket.borrow();
        let Some(sock) = sock.as_ref().filter(|s| Some(s.link) == link) else {
            return;
        };
        // A socket the server or the network is closing has its close event queued:
        // the engine replays what matters on the next link. Sending into it would only
        // make the browser log "WebSocket is already in CLOSING or CLOSED state".
        if sock.ws.ready_state() != WebSocket::OPEN {
            return;
        }
        if let Ok(text) = json_text(frame) {
            let _ = sock.ws.send_with_str(&text);
        }
    }

    fn store(&self, op: StorageOp) {
        let Some(storage) = &self.storage else { return };
        match op {
            StorageOp::Put(r) => {
                if let Ok(text) = json_text(&r) {
                    let key = record_key(&r.call, &r.user);
                    // Quota errors leave the previous record; the server still holds
                    // the call and a same-page resume does not need storage.
                    let _ = storage.set_item(&key, &text);
                    self.record_keys.borrow_mut().insert(r.call, key);
                }
            }
            StorageOp::Remove(call) => {
                if let Some(key) = self.record_keys.borrow_mut().remove(&call) {
                    let _ = storage.remove_item(&key);
                }
            }
        }
    }

    fn arm_timer(&self, deadline: Option<u64>) {
        let mut timer = self.timer.borrow_mut();
        match deadline {
            None => *timer = None,
            Some(at) => {
                if timer.as_ref().is_some_and(|(armed, _)| *armed == at) {
                    return;
                }
                let delay = at.saturating_sub(now()).min(i32::MAX as u64) as u32;
                let weak = self.weak();
                let t = Timeout::new(delay, move || {
                    if let Some(d) = weak.upgrade() {
                        d.timer.borrow_mut().take();
                        d.input(|e, t| e.handle_timeout(t));
                    }
                });
                *timer = Some((at, t));
            }
        }
    }

    fn dispatch(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let Some(cb) = self.on_event.borrow().clone() else {
            return;
        };
        for ev in events {
            if let Ok(js) = to_js(&ev) {
                // An exception in the app's handler must not break the client.
                let _ = cb.call1(&JsValue::NULL, &js);
            }
        }
    }

    /// The state the facade's `getSnapshot()` exposes.
    pub fn snapshot(&self) -> Result<JsValue, JsValue> {
        let engine = self
            .engine
            .try_borrow()
            .map_err(|_| js_error("busy", "the client is busy"))?;
        let t = now();
        let snap = ClientSnapshot {
            state: engine.state(),
            user: engine.user().cloned(),
            session: engine.session_id().map(str::to_owned),
            next_attempt_at: engine.next_attempt_at(),
            calls: engine.calls().cloned().collect(),
            presence: engine.presence().cloned().collect(),
            pending_rejoins: engine.pending_rejoins(t),
            last_failure: engine.last_failure().cloned(),
            now: t,
        };
        to_js(&snap)
    }

    /// Drops the socket, timer and page listeners without a word to the server (what
    /// a closed tab does).
    pub fn shutdown(&self) {
        *self.socket.borrow_mut() = None;
        *self.timer.borrow_mut() = None;
        self.page.borrow_mut().clear();
    }
}

// ------------------------------------------------------------------ JS exports

fn with_client<R>(f: impl FnOnce(&Rc<Driver>) -> Result<R, JsValue>) -> Result<R, JsValue> {
    let client = CLIENT.with(|c| c.borrow().clone());
    match client {
        Some(c) => f(&c),
        None => Err(js_error("not-connected", "call connect() first")),
    }
}

fn engine_error(e: crate::engine::client::ClientError) -> JsValue {
    js_error(e.code(), &e.to_string())
}

/// Creates the page's client (or returns `false` when the same server and token are
/// already connected). `onEvent` receives every event object.
#[wasm_bindgen(js_name = connect)]
pub fn connect(options: JsValue, on_event: js_sys::Function) -> Result<bool, JsValue> {
    let opts: ConnectOptions = serde_wasm_bindgen::from_value(options)
        .map_err(|e| js_error("invalid-argument", &format!("connect options: {e}")))?;
    if let Some(existing) = CLIENT.with(|c| c.borrow().clone()) {
        if existing.url == opts.url && existing.token == opts.token {
            *existing.on_event.borrow_mut() = Some(on_event);
            return Ok(false);
        }
        return Err(js_error(
            "already-connected",
            "this page is connected with another server or identity; logout() first",
        ));
    }
    let driver = Driver::start(opts, Some(on_event))?;
    CLIENT.with(|c| *c.borrow_mut() = Some(driver));
    Ok(true)
}

#[wasm_bindgen(js_name = isConnected)]
pub fn is_connected() -> bool {
    CLIENT.with(|c| c.borrow().is_some())
}

/// Invites `peer`; returns the request id that `outgoing-call` / `error` events carry.
#[wasm_bindgen(js_name = call)]
pub fn call(peer: String, kind: Option<String>, metadata: JsValue) -> Result<f64, JsValue> {
    let metadata = if metadata.is_undefined() || metadata.is_null() {
        None
    } else {
        Some(
            serde_wasm_bindgen::from_value::<serde_json::Value>(metadata)
                .map_err(|_| js_error("invalid-argument", "metadata must be JSON data"))?,
        )
    };
    with_client(|c| {
        c.command(|e, t| e.call(&peer, kind, metadata, t))?
            .map(|r| r as f64)
            .map_err(engine_error)
    })
}

macro_rules! call_command {
    ($(#[$doc:meta])* $name:ident, $js:literal, $method:ident) => {
        $(#[$doc])*
        #[wasm_bindgen(js_name = $js)]
        pub fn $name(call: String) -> Result<f64, JsValue> {
            with_client(|c| {
                c.command(|e, t| e.$method(&call, t))?
                    .map(|r| r as f64)
                    .map_err(engine_error)
            })
        }
    };
}

call_command!(
    /// Accepts a ringing incoming call.
    accept, "accept", accept
);
call_command!(
    /// Declines a ringing incoming call.
    decline, "decline", decline
);
call_command!(
    /// Ends a call in any phase (cancel, decline or hang up).
    hangup, "hangup", hangup
);
/// Takes back a call this identity holds a rejoin record for. The stored record is read
/// again first: another tab of this origin may have rejoined the call meanwhile and
/// hold it with a newer token, which moving it here must present.
#[wasm_bindgen(js_name = rejoin)]
pub fn rejoin(call: String) -> Result<f64, JsValue> {
    with_client(|c| {
        let stored = c.stored_record(&call);
        c.command(|e, t| {
            if let Some(r) = stored {
                e.handle_stored_record(r);
            }
            e.rejoin(&call, t)
        })?
        .map(|r| r as f64)
        .map_err(engine_error)
    })
}

/// Moves here a call this identity holds in another tab of this origin (or on another
/// device): the stored record is loaded first, the current holder's with its token, even
/// if this page never saw the call (it started in another tab after this page loaded).
/// The holder is told `call-moved`.
#[wasm_bindgen(js_name = moveHere)]
pub fn move_here(call: String) -> Result<f64, JsValue> {
    with_client(|c| {
        let stored = c.stored_record(&call);
        c.command(|e, t| {
            if let Some(r) = stored {
                e.load_rejoin_records(vec![r], t);
            }
            e.rejoin(&call, t)
        })?
        .map(|r| r as f64)
        .map_err(engine_error)
    })
}

/// Relays `payload` (JSON data) to the other participant.
#[wasm_bindgen(js_name = send)]
pub fn send(call: String, payload: JsValue) -> Result<f64, JsValue> {
    let payload = serde_wasm_bindgen::from_value::<serde_json::Value>(payload)
        .map_err(|_| js_error("invalid-argument", "payload must be JSON data"))?;
    with_client(|c| {
        c.command(|e, t| e.send(&call, payload, t))?
            .map(|r| r as f64)
            .map_err(engine_error)
    })
}

#[wasm_bindgen(js_name = declineRejoin)]
pub fn decline_rejoin(call: String) -> Result<(), JsValue> {
    with_client(|c| {
        c.command(|e, _| e.decline_rejoin(&call))?
            .map_err(engine_error)
    })
}

#[wasm_bindgen(js_name = setStatus)]
pub fn set_status(status: String) -> Result<f64, JsValue> {
    let status = match status.as_str() {
        "available" => PresenceStatus::Available,
        "busy" => PresenceStatus::Busy,
        _ => {
            return Err(js_error(
                "invalid-argument",
                "status must be available or busy",
            ))
        }
    };
    with_client(|c| {
        c.command(|e, t| e.set_status(status, t))?
            .map(|r| r as f64)
            .map_err(engine_error)
    })
}

/// Tries to connect now, whatever the backoff says.
#[wasm_bindgen(js_name = reconnect)]
pub fn reconnect() -> Result<(), JsValue> {
    with_client(|c| c.command(|e, t| e.reconnect(t)))
}

/// Another tab took (`held = true`) or released a call.
#[wasm_bindgen(js_name = setHeldElsewhere)]
pub fn set_held_elsewhere(call: String, held: bool) -> Result<(), JsValue> {
    with_client(|c| c.command(|e, t| e.set_held_by_other_tab(&call, held, t)))
}

/// Ends the session: calls end, rejoin records are deleted, the socket closes and the
/// page's client is gone (a later `connect` starts a new one). `done` is called once
/// the server has the logout (its answer arrived, or the browser was handed the HTTP
/// fallback), which is when the page may go away.
#[wasm_bindgen(js_name = logout)]
pub fn logout(done: Option<js_sys::Function>) -> Result<(), JsValue> {
    let client = CLIENT.with(|c| c.borrow_mut().take());
    let Some(client) = client else {
        if let Some(done) = done {
            let _ = done.call0(&JsValue::NULL);
        }
        return Ok(());
    };
    *client.on_left.borrow_mut() = Some(done);
    LEAVING.with(|l| l.borrow_mut().push(client.clone()));
    client.command(|e, t| e.logout(t))?;
    Ok(())
}

#[wasm_bindgen(js_name = snapshot)]
pub fn snapshot() -> Result<JsValue, JsValue> {
    with_client(|c| c.snapshot())
}
