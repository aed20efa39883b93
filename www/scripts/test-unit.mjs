// Unit tests of the package's pure logic under `node --test`: www/test-unit/*.test.ts,
// bundled by esbuild (types stripped, imports of www/src inlined) into
// target/test-unit, then run. Also checks that www/src has no import cycle.
// Usage: `npm run test:unit`.
import { execFileSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const www = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(www, '..', 'target', 'test-unit');
const tests = readdirSync(join(www, 'test-unit')).filter((f) => f.endsWith('.test.ts'));

execFileSync('node', [join(www, 'scripts', 'check-cycles.mjs')], { stdio: 'inherit' });

rmSync(out, { recursive: true, force: true });
const esbuild = await import('esbuild');
await esbuild.build({
  entryPoints: tests.map((f) => join(www, 'test-unit', f)),
  outdir: out,
  outExtension: { '.js': '.mjs' },
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  packages: 'external',
  logLevel: 'warning',
});
execFileSync('node', ['--test', ...tests.map((f) => join(out, f.replace(/\.ts$/, '.mjs')))], { stdio: 'inherit' });
