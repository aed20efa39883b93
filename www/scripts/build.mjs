// Builds the npm package: the wasm client (cargo → wasm-bindgen → wasm-opt), the
// TypeScript facade and the React/Vue wrappers (tsc), then the fixture apps the wrapper
// tests run (esbuild, as an app's bundler would), and prints a size report. Run from
// anywhere: `npm run build`.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const www = join(dirname(fileURLToPath(import.meta.url)), '..');
const root = join(www, '..');
const bin = (name) => join(www, 'node_modules', '.bin', name);
const run = (cmd, args, opts = {}) => {
  console.log(`$ ${cmd} ${args.join(' ')}`);
  execFileSync(cmd, args, { stdio: 'inherit', ...opts });
};

// 1. Rust → wasm, size-tuned profile (opt-level z, LTO, panic=abort).
run('cargo', ['build', '--locked', '--lib', '--target', 'wasm32-unknown-unknown', '--profile', 'wasm-release'], { cwd: root });
const wasmIn = join(root, 'target', 'wasm32-unknown-unknown', 'wasm-release', 'holdfast.wasm');

// 2. JS bindings into src/wasm (generated, not committed) so tsc sees their types.
const gen = join(www, 'src', 'wasm');
rmSync(gen, { recursive: true, force: true });
run('wasm-bindgen', ['--target', 'web', '--out-dir', gen, '--out-name', 'holdfast', wasmIn]);

// 3. wasm-opt from npm's binaryen (Debian's wasm-opt 108 breaks wasm-bindgen output).
const wasmFile = join(gen, 'holdfast_bg.wasm');
run(bin('wasm-opt'), ['-Oz', '--enable-bulk-memory', '--enable-reference-types',
  '--enable-nontrapping-float-to-int', '--enable-sign-ext', '--enable-mutable-globals',
  '--enable-multivalue', wasmFile, '-o', wasmFile]);

// 4. The facade (its modules must not import each other in a cycle).
run('node', [join(www, 'scripts', 'check-cycles.mjs')]);
const dist = join(www, 'dist');
rmSync(dist, { recursive: true, force: true });
run(bin('tsc'), ['-p', join(www, 'tsconfig.json')]);
mkdirSync(join(dist, 'wasm'), { recursive: true });
for (const f of readdirSync(gen)) cpSync(join(gen, f), join(dist, 'wasm', f));

// 5. The React and Vue fixture apps (www/fixtures → www/fixtures/dist, served by the test
// server): typechecked against the built package, bundled the way an app bundles it.
const fixtures = join(www, 'fixtures');
rmSync(join(fixtures, 'dist'), { recursive: true, force: true });
run(bin('tsc'), ['-p', join(fixtures, 'tsconfig.json')]);
const esbuild = await import('esbuild');
// The Vue video-call fixture is the README's single-file component: compiled here with
// Vue's own compiler (which the `vue` package ships), as a Vue bundler plugin would.
const { parse: parseSfc, compileScript } = (await import('@vue/compiler-sfc')).default;
const vueSfc = {
  name: 'vue-sfc',
  setup(build) {
    build.onLoad({ filter: /\.vue$/ }, (args) => {
      const { descriptor, errors } = parseSfc(readFileSync(args.path, 'utf8'), { filename: args.path });
      if (errors.length) return { errors: errors.map((e) => ({ text: String(e.message ?? e) })) };
      const script = compileScript(descriptor, { id: args.path, inlineTemplate: true });
      return { contents: script.content, loader: script.lang === 'ts' ? 'ts' : 'js', resolveDir: dirname(args.path) };
    });
  },
};
const bundled = await esbuild.build({
  entryPoints: {
    react: join(fixtures, 'react', 'main.tsx'),
    vue: join(fixtures, 'vue', 'main.ts'),
    'video-react': join(fixtures, 'video-react', 'main.tsx'),
    'video-vue': join(fixtures, 'video-vue', 'main.ts'),
  },
  plugins: [vueSfc],
  outdir: join(fixtures, 'dist'),
  bundle: true,
  format: 'esm',
  target: 'es2020',
  jsx: 'automatic',
  sourcemap: true,
  metafile: true,
  logLevel: 'warning',
  // Development builds: StrictMode double-mounts and both frameworks warn loudly.
  define: {
    'process.env.NODE_ENV': '"development"',
    __VUE_OPTIONS_API__: 'false',
    __VUE_PROD_DEVTOOLS__: 'false',
    __VUE_PROD_HYDRATION_MISMATCH_DETAILS__: 'false',
  },
});
// Neither wrapper may pull in the other framework.
for (const [out, meta] of Object.entries(bundled.metafile.outputs)) {
  const inputs = Object.keys(meta.inputs);
  const other = out.endsWith('react.js') ? /node_modules\/(vue|@vue)\// : out.endsWith('vue.js') ? /node_modules\/(react|react-dom|scheduler)\// : null;
  const leak = other && inputs.find((i) => other.test(i));
  if (leak) throw new Error(`${out} bundles ${leak}`);
}
console.log('fixture apps: fixtures/dist/{react,vue,video-react,video-vue}.js');

// 6. Size report: what an app downloads (wasm + the JS of the core entry point).
const sized = (f) => {
  const bytes = readFileSync(f);
  return { raw: bytes.length, gz: gzipSync(bytes, { level: 9 }).length };
};
// The facade's modules: everything dist/index.js imports, transitively.
const reachable = (entry) => {
  const seen = new Set();
  const walk = (file) => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const [, spec] of readFileSync(file, 'utf8').matchAll(/\bfrom\s*['"](\.{1,2}\/[^'"]+)['"]/g)) {
      walk(join(dirname(file), spec));
    }
  };
  walk(entry);
  return [...seen];
};
const sizedAll = (files) => files.map(sized).reduce((a, s) => ({ raw: a.raw + s.raw, gz: a.gz + s.gz }), { raw: 0, gz: 0 });
const facade = reachable(join(dist, 'index.js')).filter((f) => !f.startsWith(join(dist, 'wasm')));
const mediaDir = join(dist, 'media');
const core = facade.filter((f) => !f.startsWith(mediaDir));
const media = facade.filter((f) => f.startsWith(mediaDir));
const parts = {
  'wasm/holdfast_bg.wasm': sized(join(dist, 'wasm', 'holdfast_bg.wasm')),
  'wasm/holdfast.js (bindings)': sized(join(dist, 'wasm', 'holdfast.js')),
  [`facade (${core.length} modules)`]: sizedAll(core),
  [`media/ (WebRTC, ${media.length} modules)`]: sizedAll(media),
};
let raw = 0, gz = 0;
console.log('\nholdfast package size (what a page loads):');
for (const [name, s] of Object.entries(parts)) {
  raw += s.raw; gz += s.gz;
  console.log(`  ${name.padEnd(30)} ${String(s.raw).padStart(8)} B raw ${String(s.gz).padStart(8)} B gzip`);
}
console.log(`  ${'total'.padEnd(30)} ${String(raw).padStart(8)} B raw ${String(gz).padStart(8)} B gzip (target 24576 B gzip)`);
// Per-file sizes count every module's comments and its own gzip dictionary; what an
// app's bundler ships is closer to this:
{
  const min = await esbuild.build({
    entryPoints: [join(dist, 'index.js')], bundle: true, minify: true, format: 'esm', target: 'es2020',
    write: false, external: ['*/wasm/holdfast.js'], logLevel: 'warning',
  });
  const bytes = min.outputFiles[0].contents;
  const gzMin = gzipSync(bytes, { level: 9 }).length;
  console.log(`  ${'(facade + media, minified)'.padEnd(30)} ${String(bytes.length).padStart(8)} B raw ${String(gzMin).padStart(8)} B gzip`);
}
const extra = (names) => names.map((n) => sized(join(dist, n))).reduce((a, s) => ({ raw: a.raw + s.raw, gz: a.gz + s.gz }), { raw: 0, gz: 0 });
for (const [name, files] of [['holdfast/react (optional)', ['react.js', 'bindings.js', 'media-bindings.js']], ['holdfast/vue (optional)', ['vue.js', 'bindings.js', 'media-bindings.js']]]) {
  const s = extra(files);
  console.log(`  ${('+ ' + name).padEnd(30)} ${String(s.raw).padStart(8)} B raw ${String(s.gz).padStart(8)} B gzip`);
}
