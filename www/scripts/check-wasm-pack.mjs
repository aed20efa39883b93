// `wasm-pack build` of the crate makes a usable package: it loads and instantiates, and
// it exports exactly the functions the npm package's facade calls on its own build of
// the same crate (www/dist/wasm/holdfast.js, from `npm run build`).
// Usage: node www/scripts/check-wasm-pack.mjs <wasm-pack out dir>
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const pkgDir = resolve(process.argv[2] ?? 'target/wasm-pack/pkg');
const www = join(dirname(fileURLToPath(import.meta.url)), '..');

const manifest = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
assert.equal(manifest.name, 'holdfast');
for (const file of ['holdfast.js', 'holdfast.d.ts', 'holdfast_bg.wasm']) {
  assert.ok(manifest.files.includes(file), `package.json lists ${file}`);
}

const pack = await import(pathToFileURL(join(pkgDir, 'holdfast.js')).href);
pack.initSync({ module: readFileSync(join(pkgDir, 'holdfast_bg.wasm')) });
const ours = await import(pathToFileURL(join(www, 'dist/wasm/holdfast.js')).href);
const names = (m) => Object.keys(m).filter((k) => typeof m[k] === 'function' && k !== 'default').sort();
assert.deepEqual(names(pack), names(ours), 'the same exports as the npm package build');
// Not connected yet: a call into the instantiated module answers with a typed error.
assert.throws(() => pack.hangup('nope'), (e) => e?.name === 'HoldfastError' && typeof e.code === 'string');
console.log(`wasm-pack package ok: ${names(pack).length} exports, ${readFileSync(join(pkgDir, 'holdfast_bg.wasm')).length} B wasm`);
