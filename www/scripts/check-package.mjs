// Checks what `npm publish` would ship, as a user installing the tarball gets it: the
// API reference is generated (TypeDoc, no warning allowed: every export, method, option
// and event payload documented), `npm publish --dry-run` lists the files, the tarball
// holds the README, both licence texts, the changelog, dist/ and the API reference,
// and publint and @arethetypeswrong/cli find nothing. Run after `npm run build`.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const www = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => join(www, 'node_modules', '.bin', name);
const run = (cmd, args) => {
  console.log(`$ ${cmd.replace(www + '/', '')} ${args.join(' ')}`);
  return execFileSync(cmd, args, { cwd: www, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
};
const fail = (msg) => {
  console.error(`check-package: ${msg}`);
  process.exit(1);
};

// 1. API reference (typedoc.json: validation.notDocumented + treatWarningsAsErrors).
process.stdout.write(run(bin('typedoc'), []));

// 2. What ships.
process.stdout.write(run('npm', ['publish', '--dry-run', '--ignore-scripts']));
const [packed] = JSON.parse(run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts']));
const files = new Set(packed.files.map((f) => f.path));
const required = [
  'package.json', 'README.md', 'LICENSE-MIT', 'LICENSE-APACHE', 'CHANGELOG.md',
  'dist/index.js', 'dist/index.d.ts', 'dist/react.js', 'dist/react.d.ts', 'dist/vue.js', 'dist/vue.d.ts',
  'dist/wasm/holdfast.js', 'dist/wasm/holdfast_bg.wasm', 'docs/api/index.html',
];
const missing = required.filter((f) => !files.has(f));
if (missing.length) fail(`the tarball lacks ${missing.join(', ')}`);
const stray = [...files].filter((f) => /^(src|tests|test-unit|fixtures|scripts|demo)\//.test(f));
if (stray.length) fail(`the tarball ships sources or tests: ${stray.slice(0, 5).join(', ')}`);
for (const licence of ['LICENSE-MIT', 'LICENSE-APACHE']) {
  if (readFileSync(join(www, licence), 'utf8') !== readFileSync(join(www, '..', licence), 'utf8')) {
    fail(`www/${licence} differs from the repository's ${licence}`);
  }
}
const pkg = JSON.parse(readFileSync(join(www, 'package.json'), 'utf8'));
for (const field of ['repository', 'homepage', 'license']) if (!pkg[field]) fail(`package.json has no ${field}`);
console.log(`tarball: ${files.size} files, ${packed.size} B packed, ${packed.unpackedSize} B unpacked; all required files present`);

// 3. Lints of the package as published (each packs it itself).
process.stdout.write(run(bin('publint'), ['--strict']));
// ESM-only by design, so CommonJS `require` and node10 resolution are not checked; the
// wasm export is a file, not a module.
process.stdout.write(run(bin('attw'), ['--pack', '.', '--profile', 'esm-only', '--exclude-entrypoints', './wasm/holdfast_bg.wasm', '--format', 'table-flipped']));
console.log('check-package: ok');
