// Server-side rendering in Node as a framework's server does it: the built entry points
// (holdfast, holdfast/react, holdfast/vue, loaded by package name) import with no
// `window`, React's react-dom/server and Vue's server renderer (vue/server-renderer) render components
// that use every hook, and `connect()` rejects at once with a clear HoldfastError
// instead of fetching the wasm. Run after `npm run build`: node --test test-ssr/
import assert from 'node:assert/strict';
import { test } from 'node:test';

assert.equal(typeof window, 'undefined', 'this test must run without a window');
const fetched = [];
const realFetch = globalThis.fetch;
globalThis.fetch = (...args) => {
  fetched.push(String(args[0]));
  return realFetch(...args);
};

test('every entry imports on the server without touching browser globals', async () => {
  const core = await import('holdfast');
  const react = await import('holdfast/react');
  const vue = await import('holdfast/vue');
  assert.equal(typeof core.connect, 'function');
  assert.equal(typeof react.useHoldfast, 'function');
  assert.equal(typeof vue.useHoldfast, 'function');
  assert.equal(typeof globalThis.window, 'undefined');
  assert.deepEqual(fetched, []);
});

test('connect() during a server render rejects with HoldfastError not-in-browser, fetching nothing', async () => {
  const { connect, getClient, HoldfastError } = await import('holdfast');
  const started = Date.now();
  await assert.rejects(connect({ url: 'ws://127.0.0.1:9/ws', token: 'alice' }), (e) => {
    assert.ok(e instanceof HoldfastError, `not a HoldfastError: ${e}`);
    assert.equal(e.code, 'not-in-browser');
    assert.match(e.message, /browser only/);
    return true;
  });
  assert.ok(Date.now() - started < 1000);
  assert.equal(getClient(), null);
  assert.deepEqual(fetched, []);
});

test('React renderToString: the hooks render the idle state', async () => {
  const { createElement: h } = await import('react');
  const { renderToString } = await import('react-dom/server');
  const { useHoldfast, useCall, useRejoinPrompt, useHoldfastEvent } = await import('holdfast/react');
  function App() {
    const state = useHoldfast();
    const call = useCall();
    const rejoin = useRejoinPrompt();
    useHoldfastEvent('call-ended', () => {});
    return h('p', null, `state=${state.state} call=${call.status} rejoin=${rejoin.offer === null}`);
  }
  assert.equal(renderToString(h(App)), '<p>state=idle call=none rejoin=true</p>');
});

test('Vue renderToString: the composables render the idle state', async () => {
  const { createSSRApp, defineComponent, h } = await import('vue');
  const { renderToString } = await import('vue/server-renderer');
  const { useHoldfast, useCall, useRejoinPrompt, useHoldfastEvent } = await import('holdfast/vue');
  const App = defineComponent({
    setup() {
      const state = useHoldfast();
      const call = useCall();
      const rejoin = useRejoinPrompt();
      useHoldfastEvent('call-ended', () => {});
      return () => h('p', `state=${state.value.state} call=${call.status.value} rejoin=${rejoin.offer.value === null}`);
    },
  });
  assert.equal(await renderToString(createSSRApp(App)), '<p>state=idle call=none rejoin=true</p>');
});
