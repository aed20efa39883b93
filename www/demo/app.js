// The Holdfast demo: plain ES modules, no bundler, no framework. It imports the npm
// package's built entry (`/dist/index.js`) exactly as an app would.
//
// Routes (hash): #/contacts, #/call/<id>. Moving between them never touches the socket:
// the client is a page singleton and the call's media lives outside the views.
import { connect, getClient, attachMedia, getMedia } from '/dist/index.js';

const IDENTITY_KEY = 'holdfast-demo:identity';
const params = new URLSearchParams(location.search);
/** Call kind for outgoing calls (selects the server's grace window), e.g. `?kind=support`. */
const KIND = params.get('kind') || undefined;

// ------------------------------------------------------------------ helpers

/** h('div', { class: 'x', onclick }, 'text', child) */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}
const $ = (sel, root = document) => root.querySelector(sel);
const initials = (name) => name.split(/\s+/).filter((w) => /^\p{L}/u.test(w)).slice(0, 2).map((w) => w[0].toUpperCase()).join('') || name.slice(0, 1).toUpperCase() || '?';
const secondsLeft = (deadline) => Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
/** A number of seconds that counts down by itself (see `tick`). */
const countdown = (deadline) => h('span', { 'data-deadline': String(deadline), class: 'secs' }, String(secondsLeft(deadline)));
/** The client's deadline for the other person's return, while they are away: the one
 *  source of every "waiting N s" on the page (overlay, notice, Connection card). */
const awayDeadline = (callId) => {
  const call = app.snap?.calls.find((c) => c.id === callId);
  return call?.peerLink === 'reconnecting' ? call.peerDeadline : null;
};
/** The seconds until the other person's window closes, counting down (see `tick`). */
const awayCountdown = (callId) =>
  h('span', { 'data-away': callId, class: 'secs' }, String(secondsLeft(awayDeadline(callId) ?? Date.now())));
const clock = (t = Date.now()) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const duration = (ms) => {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
};
const go = (hash) => {
  if (location.hash !== hash) location.hash = hash;
};

const REASONS = {
  hangup: (p) => `${p} hung up`,
  declined: (p) => `${p} declined the call`,
  cancelled: () => 'The call was cancelled',
  'no-answer': () => 'No answer',
  busy: (p) => `${p} is busy`,
  'reconnect-failed': (p) => `${p} didn't reconnect in time`,
  'server-shutdown': () => 'The server shut down',
  'server-lost': () => 'The server lost the call (it restarted)',
  moved: () => 'This call moved to another tab or device',
  'hung-up-here': () => 'You hung up',
};
const ERRORS = {
  'peer-offline': 'they are not online',
  'self-call': 'that is you',
  'already-in-call': 'you are already in a call with them',
  'invite-pending': 'already calling',
  'rate-limited': 'too many requests, slow down',
};

// ------------------------------------------------------------------ state

const app = {
  /** @type {import('/dist/index.js').HoldfastClient | null} */
  client: null,
  snap: null,
  /** callId → { peer, kind } of every call seen here (for names after the call ended). */
  calls: new Map(),
  /** callId → { reason, peer, at } */
  ended: new Map(),
  /** callId → toast element of the peer's absence */
  awayToasts: new Map(),
  /** callId → when it started here */
  startedAt: new Map(),
  /** callId → [{ t, text }] */
  logs: new Map(),
  /** a rejoin this page lost to another tab of this person: { call, peer } */
  movable: null,
  /** peers being invited right now (a double click calls once) */
  inviting: new Set(),
  hungUpHere: new Set(),
  linkDown: false,
  localStream: null,
  view: null,
};

function log(call, text) {
  if (!app.logs.has(call)) app.logs.set(call, []);
  const list = app.logs.get(call);
  list.unshift({ t: Date.now(), text });
  list.length = Math.min(list.length, 30);
  if (app.view?.call === call) app.view.renderLog?.();
}

function peerName(call) {
  return app.calls.get(call)?.peer.name ?? 'The other person';
}

/** Camera and microphone (fake ones in tests); null when none can be had. */
function localStream() {
  app.localStream ??= (async () => {
    const md = navigator.mediaDevices;
    if (!md?.getUserMedia) return null;
    for (const constraints of [
      { video: { width: 640, height: 360 }, audio: true },
      { video: { width: 640, height: 360 } },
      { audio: true },
    ]) {
      try {
        return await md.getUserMedia(constraints);
      } catch {
        /* try the next */
      }
    }
    toast('No camera or microphone: you will only receive.', 'warn');
    return null;
  })();
  return app.localStream;
}

// ------------------------------------------------------------------ toasts

function toast(text, kind = 'info', ms = 5000) {
  const el = h('div', { class: 'toast', 'data-kind': kind, 'data-testid': 'toast', role: 'status' });
  el.append(h('span', {}, ...[text].flat()));
  $('#toasts').append(el);
  if (ms > 0) setTimeout(() => el.remove(), ms);
  const all = $('#toasts').children;
  while (all.length > 5) all[0].remove();
  return el;
}

// ------------------------------------------------------------------ client

async function start(identity) {
  const client = await connect({ token: identity, presence: true });
  app.client = client;
  client.on('*', onEvent);
  client.subscribe(update);
  update();
}

function onEvent(ev) {
  const c = app.client;
  switch (ev.type) {
    case 'disconnected':
      if (!app.linkDown) {
        app.linkDown = true;
        toast('Connection lost — reconnecting…', 'warn');
      }
      break;
    case 'resumed':
      app.linkDown = false;
      toast(ev.recovered ? 'Reconnected — session resumed' : 'Reconnected — new session', 'good');
      for (const call of c.getSnapshot().calls) log(call.id, 'Signaling resumed');
      break;
    case 'connected':
      app.linkDown = false;
      break;
    case 'offline':
      toast('You are offline — waiting for the network', 'bad');
      break;
    case 'gave-up':
      toast('Could not reconnect. Click the badge to try again.', 'bad', 0);
      break;
    case 'auth-failed':
      toast(`Sign-in refused: ${ev.message}`, 'bad', 8000);
      break;
    case 'incoming-call':
      remember(ev.call);
      log(ev.call.id, `${ev.call.peer.name} is calling`);
      break;
    case 'outgoing-call':
      remember(ev.call);
      log(ev.call.id, `Calling ${ev.call.peer.name}`);
      break;
    case 'call-started': {
      const call = ev.call;
      remember(call);
      app.ended.delete(call.id);
      if (!app.startedAt.has(call.id)) app.startedAt.set(call.id, Date.now());
      log(call.id, ev.rejoined ? 'You rejoined the call' : 'Call started');
      if (ev.rejoined) toast(`Back in the call with ${call.peer.name}`, 'good');
      startMedia(call.id);
      go(`#/call/${call.id}`);
      break;
    }
    case 'participant-disconnected': {
      app.snap = c.getSnapshot(); // the countdown reads the call's deadline from it
      app.awayToasts.get(ev.call)?.remove();
      app.awayToasts.set(ev.call, toast(
        [`${peerName(ev.call)} disconnected — waiting `, awayCountdown(ev.call), ' s'], 'warn', 0));
      log(ev.call, `${peerName(ev.call)} disconnected`);
      break;
    }
    case 'participant-reconnected':
      clearAway(ev.call);
      toast(`${peerName(ev.call)} is back`, 'good');
      log(ev.call, `${peerName(ev.call)} reconnected`);
      break;
    case 'call-ended': {
      clearAway(ev.call);
      const reason = app.hungUpHere.has(ev.call) && ev.reason === 'hangup' ? 'hung-up-here' : ev.reason;
      if (!app.calls.has(ev.call)) app.calls.set(ev.call, { peer: ev.peer, kind: null, phase: 'away' });
      const info = app.calls.get(ev.call);
      app.ended.set(ev.call, { reason, code: ev.reason, at: Date.now() });
      const name = ev.peer?.name ?? peerName(ev.call);
      const text = REASONS[reason]?.(name) ?? `Call ended (${ev.reason})`;
      if (info?.phase === 'incoming' && (ev.reason === 'cancelled' || ev.reason === 'no-answer')) {
        toast(`Missed call from ${name} (${ev.reason})`, 'warn', 8000);
      } else {
        toast(`Call ended — ${text}`, ev.reason === 'hangup' ? 'info' : 'warn', 6000);
      }
      log(ev.call, `Call ended: ${ev.reason}`);
      break;
    }
    case 'call-moved':
      clearAway(ev.call);
      app.ended.set(ev.call, { reason: 'moved', code: 'call-moved', at: Date.now() });
      toast('The call moved to another tab', 'warn', 8000);
      log(ev.call, 'The call moved to another tab');
      break;
    case 'rejoin-withdrawn':
      // 'call-ended': the call-ended event that follows says who and why.
      if (ev.why === 'held-elsewhere') app.movable = { call: ev.call, peer: app.calls.get(ev.call)?.peer };
      break;
    case 'rejoin-available':
      app.calls.set(ev.offer.call, { peer: ev.offer.peer, kind: ev.offer.kind, phase: 'away' });
      break;
    case 'rejoin-expired':
      toast('The call can no longer be rejoined', 'info');
      break;
    case 'error':
      // Refusals of our own requests are handled where they were made (promises).
      if (ev.re === null && ev.code !== 'superseded') toast(`Server: ${ev.message}`, 'bad');
      break;
  }
}

function remember(call) {
  app.calls.set(call.id, { peer: call.peer, kind: call.kind, phase: call.phase });
}

function clearAway(call) {
  app.awayToasts.get(call)?.remove();
  app.awayToasts.delete(call);
}

function startMedia(callId) {
  const media = attachMedia(app.client, callId, localStream());
  if (media.__demo) return media;
  media.__demo = true;
  media.on('*', (ev) => {
    switch (ev.type) {
      case 'media-reconnecting':
        log(callId, `Media reconnecting (${ev.reason})`);
        break;
      case 'media-restored':
        log(callId, `Media restored after ${(ev.afterMs / 1000).toFixed(1)} s`);
        break;
      case 'media-state':
        if (ev.state === 'connected' && !media.__connectedOnce) {
          media.__connectedOnce = true;
          log(callId, 'Media connected');
        }
        break;
      case 'media-error':
        log(callId, `Media error: ${ev.message}`);
        break;
    }
    if (app.view?.call === callId) app.view.renderMedia?.();
  });
  return media;
}

async function callPeer(peerId) {
  const c = app.client;
  const existing = c.getSnapshot().calls.find((x) => x.peer.id === peerId);
  if (existing) {
    if (existing.phase === 'incoming') c.accept(existing.id);
    go(`#/call/${existing.id}`);
    return;
  }
  if (app.inviting.has(peerId)) return;
  app.inviting.add(peerId);
  try {
    const call = await c.call(peerId, { kind: KIND });
    remember(call);
    go(`#/call/${call.id}`);
  } catch (e) {
    const again = c.getSnapshot().calls.find((x) => x.peer.id === peerId);
    if (again) go(`#/call/${again.id}`);
    else toast(`Could not call: ${ERRORS[e.code] ?? e.message}`, 'bad');
  } finally {
    app.inviting.delete(peerId);
  }
}

function hangup(callId) {
  app.hungUpHere.add(callId);
  try {
    app.client.hangup(callId);
  } catch (e) {
    toast(e.message, 'bad');
  }
}

// ------------------------------------------------------------------ header

function renderHeader() {
  const snap = app.snap;
  const badge = $('#conn-badge');
  const state = snap?.state ?? 'idle';
  const label = {
    idle: 'Not signed in', connecting: 'Connecting…', connected: 'Connected', reconnecting: 'Reconnecting…',
    offline: 'Offline', 'gave-up': 'Disconnected — retry', 'auth-failed': 'Sign-in refused', 'logged-out': 'Signed out',
  }[state] ?? state;
  const shown = state === 'idle' && app.client ? 'connecting' : state;
  badge.dataset.state = shown;
  badge.textContent = shown === 'connecting' ? 'Connecting…' : label;
  badge.title = state === 'gave-up' ? 'Click to reconnect now' : '';
  $('#me').hidden = !snap?.user;
  $('#nav').hidden = !app.client;
  if (snap?.user) {
    $('#me-name').textContent = snap.user.name;
    $('#me-avatar').textContent = initials(snap.user.name);
  }
  const live = snap?.calls.find((c) => c.phase === 'active') ?? snap?.calls[0];
  const navCall = $('#nav-call');
  navCall.hidden = !live;
  if (live) {
    navCall.href = `#/call/${live.id}`;
    navCall.textContent = live.phase === 'active' ? `In call · ${live.peer.name}` : 'Call';
  }
  const r = route();
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.route === r.name);
}

$('#conn-badge').addEventListener('click', () => {
  if (app.snap?.state === 'gave-up') app.client?.reconnect();
});
$('#signout').addEventListener('click', async () => {
  localStorage.removeItem(IDENTITY_KEY);
  // Wait until the server has it, so the other person is told at once.
  await app.client?.logout();
  location.hash = '#/';
  location.reload();
});

// ------------------------------------------------------------------ routes

function route() {
  const [name, arg] = location.hash.replace(/^#\/?/, '').split('/');
  return { name: name || 'contacts', arg: arg ? decodeURIComponent(arg) : null };
}

function renderRoute() {
  const main = $('#view');
  app.view?.dispose?.();
  app.view = null;
  main.replaceChildren();
  if (!localStorage.getItem(IDENTITY_KEY)) {
    main.append(signInView());
    renderHeader();
    return;
  }
  const r = route();
  if (r.name === 'call' && !r.arg) {
    const live = app.snap?.calls[0];
    go(live ? `#/call/${live.id}` : '#/contacts');
    return;
  }
  app.view = r.name === 'call' ? callView(r.arg) : contactsView();
  main.append(app.view.el);
  update();
}

window.addEventListener('hashchange', renderRoute);

function update() {
  if (!app.client) return renderHeader();
  app.snap = app.client.getSnapshot();
  for (const call of app.snap.calls) remember(call);
  renderHeader();
  app.view?.update?.();
  renderDialogs();
}

// ---------------------------------------------------------------- sign in

function signInView() {
  const input = h('input', { class: 'input', id: 'name', name: 'name', placeholder: 'Your name, e.g. Alice', autocomplete: 'off', required: true, autofocus: true });
  const form = h('form', {
    onsubmit: (e) => {
      e.preventDefault();
      const name = input.value.replace(/:/g, ' ').trim();
      const id = name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
      if (!id) return;
      localStorage.setItem(IDENTITY_KEY, `${id}:${name}`);
      go('#/contacts');
      boot();
    },
  }, input, h('button', { class: 'btn primary', type: 'submit' }, 'Sign in'));
  return h('section', { class: 'card signin', 'data-testid': 'signin' },
    h('h1', {}, 'Calls that survive the network'),
    h('p', { class: 'sub' }, 'Sign in with any name (dev mode: no password). Open a second browser or a private window as someone else, and call them.'),
    form,
    h('ul', { class: 'features' },
      h('li', {}, 'Change pages mid-call: the socket stays'),
      h('li', {}, 'Lose the network: the call waits and resumes'),
      h('li', {}, 'Close or reload the tab: rejoin the same call'),
      h('li', {}, 'Media restarts ICE instead of hanging up')));
}

// ---------------------------------------------------------------- contacts

function contactsView() {
  const list = h('ul', { class: 'contacts', 'data-testid': 'contacts' });
  const banner = h('div', { class: 'banner', 'data-testid': 'held-elsewhere', hidden: true });
  const el = h('section', { 'data-testid': 'contacts-view' },
    banner,
    h('div', { class: 'grid2' },
      h('div', { class: 'card' },
        h('h2', {}, 'Who is online'),
        list),
      h('div', { class: 'card howto' },
        h('h2', {}, 'Try it'),
        h('ol', {},
          h('li', {}, 'Open this page in another browser (or a private window) and sign in as someone else.'),
          h('li', {}, 'Call them; accept on the other side.'),
          h('li', {}, 'Switch between Contacts and Call: the call and its media go on.'),
          h('li', {}, 'Reload or close one tab: the other side counts down, and the reloaded page offers to rejoin.'),
          h('li', {}, 'Turn the network off and on: both sides show reconnecting, then carry on.')),
        h('p', {}, 'Calls use the server\'s default grace window; add ', h('code', {}, '?kind=NAME'),
          ' to the URL to use a kind configured with ', h('code', {}, '--grace-kinds'), '.'))));

  let lastKey = '';
  const update = () => {
    const snap = app.snap;
    const me = snap?.user?.id;
    const others = (snap?.presence ?? []).filter((p) => p.user.id !== me && p.status !== 'offline')
      .slice().sort((a, b) => a.user.name.localeCompare(b.user.name));
    const calls = snap?.calls ?? [];
    const key = JSON.stringify([others, calls.map((c) => [c.id, c.peer.id, c.phase])]);
    if (key !== lastKey) {
      lastKey = key;
      list.replaceChildren(...(others.length === 0
        ? [h('li', { class: 'empty' }, snap?.state === 'connected' ? 'Nobody else is online yet. Open this page as someone else to call them.' : 'Connecting…')]
        : others.map((p) => {
          const call = calls.find((c) => c.peer.id === p.user.id);
          const label = call ? (call.phase === 'incoming' ? 'Answer' : 'Open call') : 'Call';
          return h('li', { class: 'contact', 'data-testid': 'contact', 'data-user': p.user.id },
            h('span', { class: 'avatar' }, initials(p.user.name)),
            h('div', { class: 'who' },
              h('div', { class: 'name' }, p.user.name),
              h('div', { class: 'id' }, h('span', { class: `dot ${p.status}` }), p.status === 'busy' ? 'busy' : 'available', ` · ${p.user.id}`)),
            h('button', { class: `btn ${call ? '' : 'primary'}`, type: 'button', onclick: () => callPeer(p.user.id) }, label));
        })));
    }
    // Calls this person holds live in another tab of this browser (the client's own list).
    const elsewhere = snap?.elsewhere?.[0];
    banner.hidden = !elsewhere;
    if (elsewhere) {
      banner.replaceChildren(
        h('span', { class: 'grow' }, `You are in a call with ${elsewhere.peer.name} in another tab.`),
        h('button', {
          class: 'btn primary', type: 'button',
          onclick: () => {
            try {
              app.client.moveHere(elsewhere.call);
            } catch (e) {
              toast(`Could not move the call: ${e.message}`, 'bad');
            }
          },
        }, 'Move call here'));
    }
  };
  return { el, update };
}

// ---------------------------------------------------------------- call view

function callView(callId) {
  const head = {
    avatar: h('span', { class: 'avatar' }),
    name: h('h1', {}),
    status: h('div', { class: 'muted small', 'data-testid': 'call-status' }),
    timer: h('span', { class: 'timer', 'data-testid': 'call-timer' }),
    media: h('span', { class: 'pill', 'data-testid': 'media-state' }),
  };
  const remoteVideo = h('video', { id: 'remote-video', autoplay: true, playsInline: true, 'data-testid': 'remote-video' });
  const localVideo = h('video', { id: 'local-video', class: 'mirror', autoplay: true, playsInline: true, muted: true, 'data-testid': 'local-video' });
  localVideo.muted = true;
  const remoteLabel = h('span', { class: 'label' });
  const waiting = h('div', { class: 'overlay', 'data-testid': 'peer-waiting', hidden: true });
  const mediaOverlay = h('div', { class: 'overlay', 'data-testid': 'media-overlay', hidden: true },
    h('div', { class: 'spinner' }), h('div', {}, 'Connecting media…'));
  const logList = h('ul', { class: 'log', 'data-testid': 'activity' });
  const facts = h('dl', { class: 'facts' });
  const reconnectBtn = h('button', {
    class: 'btn', type: 'button', 'data-testid': 'reconnect-media',
    onclick: () => getMedia(callId)?.reconnect(),
  }, '↻ Reconnect media');
  const hangupBtn = h('button', { class: 'btn danger', type: 'button', 'data-testid': 'hangup', onclick: () => hangup(callId) }, 'Hang up');

  const active = h('div', { 'data-testid': 'call-active' },
    h('div', { class: 'tiles' },
      h('div', { class: 'tile', 'data-testid': 'remote-tile' }, remoteVideo, remoteLabel, mediaOverlay, waiting),
      h('div', { class: 'tile', 'data-testid': 'local-tile' }, localVideo, h('span', { class: 'label' }, 'You'))),
    h('div', { class: 'controls' }, reconnectBtn, hangupBtn),
    h('div', { class: 'call-foot' },
      h('div', { class: 'card' }, h('h2', {}, 'Activity'), logList),
      h('div', { class: 'card' }, h('h2', {}, 'Connection'), facts)));

  const ringing = h('div', { class: 'card center-card', 'data-testid': 'call-ringing' });
  const ended = h('div', { class: 'card center-card', 'data-testid': 'call-ended' });
  const gone = h('div', { class: 'card center-card', 'data-testid': 'call-unknown' },
    h('h2', {}, 'This call is not on this page'),
    h('p', { class: 'muted' }, 'It may have ended, or it is held in another tab.'),
    h('a', { class: 'btn', href: '#/contacts' }, 'Back to contacts'));

  const el = h('section', { 'data-testid': 'call-view', 'data-call': callId },
    h('div', { class: 'call-head' }, head.avatar, h('div', { class: 'grow' }, head.name, head.status), head.media, head.timer),
    active, ringing, ended, gone);

  let phaseShown = '';
  let stream = null;
  let lastStats = null;
  let rate = '';

  const attachVideos = async () => {
    const media = getMedia(callId);
    const remote = media?.remoteStream ?? null;
    if (remote && remoteVideo.srcObject !== remote) remoteVideo.srcObject = remote;
    const local = await (app.localStream ?? Promise.resolve(null));
    if (local && localVideo.srcObject !== local) localVideo.srcObject = local;
  };

  const renderMedia = () => {
    const { state, away, text } = mediaStatus();
    head.media.dataset.state = away ? 'reconnecting' : state;
    head.media.textContent = `Media ${text}`;
    mediaOverlay.hidden = away || state === 'connected' || state === 'closed';
    mediaOverlay.lastChild.textContent = state === 'reconnecting' ? 'Reconnecting media…' : 'Connecting media…';
    attachVideos();
    renderFacts();
  };

  /** What the media is doing, in words: the header's pill and the Connection card
   *  both say this, so they cannot disagree. While the other person is away and media
   *  is not flowing, it waits for them (an ICE restart cannot succeed without them);
   *  media that flows while their signaling link is down is simply connected. */
  const mediaStatus = () => {
    const media = getMedia(callId);
    const state = media?.state ?? (app.ended.has(callId) ? 'closed' : 'new');
    const away = awayDeadline(callId) !== null && state !== 'connected' && state !== 'closed';
    const text = away ? 'waiting for the other side' : {
      new: 'starting', connecting: 'connecting…', connected: 'connected',
      reconnecting: 'reconnecting…', closed: 'closed',
    }[state];
    return { media, state, away, text };
  };

  const renderFacts = () => {
    const { media, text } = mediaStatus();
    const call = app.snap?.calls.find((c) => c.id === callId);
    const ice = media?.peerConnection ? ` · ICE ${media.peerConnection.iceConnectionState}` : '';
    const other = !call ? '—' : awayDeadline(callId) !== null
      ? ['reconnecting — window closes in ', awayCountdown(callId), ' s'] : call.peerLink;
    const rows = [
      ['Call id', callId],
      ['Kind', call?.kind ?? 'default'],
      ['Grace window', call ? `${Math.round(call.graceMs / 1000)} s` : '—'],
      ['Signaling', app.snap?.state ?? '—'],
      ['Other side', other],
      ['Media', media ? `${text}${ice}` : '—'],
      ['Receiving', rate || '—'],
    ];
    facts.replaceChildren(...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', { 'data-fact': k }, ...[v].flat())]));
    tick(); // a new countdown shows what the others show this very moment
  };

  const renderLog = () => {
    const items = app.logs.get(callId) ?? [];
    logList.replaceChildren(...items.map((i) => h('li', {}, h('time', {}, clock(i.t)), h('span', {}, i.text))));
  };

  const update = () => {
    const call = app.snap?.calls.find((c) => c.id === callId);
    const info = app.calls.get(callId);
    const end = app.ended.get(callId);
    const phase = call ? call.phase : end ? 'ended' : 'unknown';
    const peer = call?.peer ?? info?.peer;
    head.name.textContent = peer ? peer.name : 'Call';
    head.avatar.textContent = peer ? initials(peer.name) : '?';
    remoteLabel.textContent = peer?.name ?? '';
    el.dataset.phase = phase;
    active.hidden = phase !== 'active';
    ringing.hidden = phase !== 'outgoing' && phase !== 'incoming';
    ended.hidden = phase !== 'ended';
    gone.hidden = phase !== 'unknown';
    head.media.hidden = phase !== 'active';
    head.timer.hidden = phase !== 'active';

    if (phase !== phaseShown) {
      phaseShown = phase;
      if (phase === 'outgoing') {
        ringing.replaceChildren(
          h('span', { class: 'avatar big ring' }, initials(peer?.name ?? '?')),
          h('h2', {}, `Calling ${peer?.name ?? ''}…`),
          call.ringDeadline ? h('p', { class: 'muted' }, 'Rings for ', countdown(call.ringDeadline), ' s more') : null,
          h('div', { class: 'actions' }, h('button', { class: 'btn danger', type: 'button', onclick: () => hangup(callId) }, 'Cancel')));
      } else if (phase === 'incoming') {
        ringing.replaceChildren(
          h('span', { class: 'avatar big ring' }, initials(peer?.name ?? '?')),
          h('h2', {}, `${peer?.name ?? ''} is calling`),
          h('div', { class: 'actions' },
            h('button', { class: 'btn', type: 'button', onclick: () => app.client.decline(callId) }, 'Decline'),
            h('button', { class: 'btn green', type: 'button', onclick: () => app.client.accept(callId) }, 'Accept')));
      } else if (phase === 'ended') {
        const name = peer?.name ?? 'The other person';
        ended.dataset.reason = end.code;
        ended.replaceChildren(
          h('span', { class: 'avatar big' }, initials(name)),
          h('h2', {}, 'Call ended'),
          h('p', { class: 'muted', 'data-testid': 'ended-text' }, REASONS[end.reason]?.(name) ?? `Ended (${end.code})`),
          h('span', { class: 'code', 'data-testid': 'ended-reason' }, end.code),
          h('div', { class: 'actions' }, h('a', { class: 'btn primary', href: '#/contacts' }, 'Back to contacts')));
      }
    }

    if (phase === 'active') {
      const since = app.startedAt.get(callId);
      head.status.textContent = call.peerLink === 'reconnecting'
        ? `${peer.name} is reconnecting` : app.snap.state === 'connected' ? 'Connected' : 'You are reconnecting…';
      head.timer.textContent = since ? duration(Date.now() - since) : '';
      const deadline = awayDeadline(callId);
      waiting.hidden = !deadline;
      if (deadline && waiting.dataset.deadline !== String(deadline)) {
        waiting.dataset.deadline = String(deadline);
        waiting.replaceChildren(h('div', { class: 'spinner' }),
          h('div', { 'data-testid': 'waiting-text' }, `${peer.name} disconnected — waiting `, awayCountdown(callId), ' s'));
      }
      if (!getMedia(callId)) startMedia(callId);
      renderMedia();
    } else {
      head.status.textContent = phase === 'outgoing' ? 'Ringing' : phase === 'incoming' ? 'Incoming call' : '';
    }
    renderLog();
  };

  // Live numbers: bytes received per second from getStats().
  const statsTimer = setInterval(async () => {
    const media = getMedia(callId);
    if (!media) return;
    const s = await media.stats();
    if (lastStats) {
      const kbps = ((s.bytesReceived - lastStats.bytesReceived) * 8) / 1000;
      rate = `${kbps.toFixed(0)} kbit/s · ${(s.bytesReceived / 1e6).toFixed(2)} MB total`;
    }
    lastStats = s;
    head.timer.textContent = app.startedAt.has(callId) ? duration(Date.now() - app.startedAt.get(callId)) : '';
    renderFacts();
  }, 1000);

  return {
    el, call: callId, update, renderMedia, renderLog,
    dispose: () => {
      clearInterval(statsTimer);
      // Detaching the elements from the streams; the streams themselves go on.
      remoteVideo.srcObject = null;
      localVideo.srcObject = null;
      void stream;
    },
  };
}

// ---------------------------------------------------------------- dialogs

const dialogs = { incoming: null, rejoin: null, movable: null };

function renderDialogs() {
  const snap = app.snap;
  const host = $('#dialogs');
  // A call that went on in another tab (it rejoined first) is movable here, not gone.
  if (app.movable && (snap?.calls.some((c) => c.id === app.movable.call) || app.ended.has(app.movable.call))) app.movable = null;
  // Incoming call.
  const incoming = snap?.calls.find((c) => c.phase === 'incoming') ?? null;
  if (dialogs.incoming?.id !== incoming?.id) {
    dialogs.incoming?.el.remove();
    dialogs.incoming = null;
    if (incoming) {
      const el = h('div', { class: 'backdrop' },
        h('div', { class: 'dialog', role: 'dialog', 'aria-modal': 'true', 'data-testid': 'incoming' },
          h('span', { class: 'avatar big ring' }, initials(incoming.peer.name)),
          h('h2', {}, `${incoming.peer.name} is calling`),
          h('p', { class: 'muted' }, 'Video call',
            incoming.ringDeadline ? [' · rings for ', countdown(incoming.ringDeadline), ' s'] : []),
          h('div', { class: 'actions' },
            h('button', { class: 'btn', type: 'button', onclick: () => app.client.decline(incoming.id) }, 'Decline'),
            h('button', {
              class: 'btn green', type: 'button',
              onclick: () => {
                localStream(); // ask for the camera while the call connects
                app.client.accept(incoming.id);
                go(`#/call/${incoming.id}`);
              },
            }, 'Accept'))));
      host.append(el);
      dialogs.incoming = { id: incoming.id, el };
    }
  }
  // Rejoin prompt (after a reload, crash or closed tab).
  const offer = incoming ? null : snap?.pendingRejoin ?? null;
  const movable = incoming || offer ? null : app.movable;
  if (dialogs.movable?.id !== movable?.call) {
    dialogs.movable?.el.remove();
    dialogs.movable = null;
    if (movable) {
      const name = movable.peer?.name ?? 'the other person';
      const el = h('div', { class: 'backdrop' },
        h('div', { class: 'dialog', role: 'dialog', 'aria-modal': 'true', 'data-testid': 'rejoin' },
          h('span', { class: 'avatar big' }, initials(name)),
          h('h2', {}, `Your call with ${name} continues in another tab`),
          h('p', { class: 'muted' }, 'That tab rejoined first. You can move the call to this tab.'),
          h('div', { class: 'actions' },
            h('button', { class: 'btn', type: 'button', onclick: () => { app.movable = null; update(); } }, 'Keep it there'),
            h('button', {
              class: 'btn primary', type: 'button',
              onclick: (e) => {
                e.currentTarget.disabled = true;
                localStream();
                try {
                  app.client.moveHere(movable.call);
                } catch (err) {
                  toast(`Could not move the call: ${err.message}`, 'bad');
                }
              },
            }, 'Move call here'))));
      host.append(el);
      dialogs.movable = { id: movable.call, el };
    }
  }
  if (dialogs.rejoin?.id !== offer?.call) {
    dialogs.rejoin?.el.remove();
    dialogs.rejoin = null;
    if (offer) {
      const deadline = snap.now + offer.remainingMs;
      const secs = countdown(deadline);
      const el = h('div', { class: 'backdrop' },
        h('div', { class: 'dialog', role: 'dialog', 'aria-modal': 'true', 'data-testid': 'rejoin' },
          h('span', { class: 'avatar big' }, initials(offer.peer.name)),
          h('h2', {}, `You were in a call with ${offer.peer.name}`),
          h('p', { class: 'muted' }, 'The call is still open. You can rejoin for'),
          h('div', { class: 'countdown', 'data-testid': 'rejoin-countdown' }, secs, ' s'),
          h('div', { class: 'actions' },
            h('button', {
              class: 'btn', type: 'button',
              onclick: () => {
                try {
                  app.client.declineRejoin(offer.call);
                } catch {
                  /* already gone */
                }
              },
            }, 'No thanks'),
            h('button', {
              class: 'btn primary', type: 'button',
              onclick: (e) => {
                e.currentTarget.disabled = true;
                localStream();
                try {
                  app.client.rejoin(offer.call);
                } catch (err) {
                  toast(`Could not rejoin: ${err.message}`, 'bad');
                }
              },
            }, 'Rejoin call'))));
      host.append(el);
      dialogs.rejoin = { id: offer.call, el, secs };
    }
  } else if (offer && dialogs.rejoin) {
    // Keep the countdown on the client's clock (it ticks every second).
    dialogs.rejoin.secs.dataset.deadline = String(snap.now + offer.remainingMs);
  }
}

// ---------------------------------------------------------------- ticking

function tick() {
  const now = Date.now();
  for (const el of document.querySelectorAll('.secs')) {
    const deadline = el.dataset.away !== undefined ? awayDeadline(el.dataset.away) : Number(el.dataset.deadline);
    if (deadline === null) continue; // the person is back: the element goes with the next render
    const s = String(Math.max(0, Math.ceil((deadline - now) / 1000)));
    if (el.textContent !== s) el.textContent = s;
  }
}
setInterval(tick, 250);

// ---------------------------------------------------------------- boot

async function boot() {
  const identity = localStorage.getItem(IDENTITY_KEY);
  renderRoute();
  if (!identity) return;
  try {
    await start(identity);
  } catch (e) {
    toast(`Could not start: ${e.message}`, 'bad', 0);
  }
  renderRoute();
}

// For tests and the curious: the page's client and the call media.
window.holdfastDemo = { getClient, getMedia, app };
void boot();
