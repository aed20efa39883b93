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

// 6. Size report and budget. What the budget checks is what an app's bundler ships:
// `import { connect } from 'holdfast'` bundled and minified by esbuild (the wasm-bindgen
// bindings included) plus the wasm it fetches; `holdfast/media` is its own figure (its
// own code only: the core modules it shares are counted in the core).
const sized = (f) => {
  const bytes = readFileSync(f);
  return { raw: bytes.length, gz: gzipSync(bytes, { level: 9 }).length };
};
const bundled_ = async (contents, { externalOutside } = {}) => {
  // Everything outside `externalOutside` is left out (it is another entry's code).
  const plugins = externalOutside ? [{
    name: 'external-outside',
    setup(b) {
      b.onResolve({ filter: /^\./ }, (args) => {
        const path = join(args.resolveDir, args.path);
        return path.startsWith(externalOutside) ? null : { path, external: true };
      });
    },
  }] : [];
  const out = await esbuild.build({
    stdin: { contents, resolveDir: dist, loader: 'js' }, bundle: true, minify: true, format: 'esm',
    target: 'es2020', write: false, logLevel: 'error', plugins,
    external: ['react', 'react-dom', 'vue'],
  });
  const bytes = out.outputFiles[0].contents;
  return { raw: bytes.length, gz: gzipSync(bytes, { level: 9 }).length };
};
const wasm = sized(join(dist, 'wasm', 'holdfast_bg.wasm'));
const bindings = await bundled_("export * from './wasm/holdfast.js';");
const coreJs = await bundled_("export { connect } from './index.js';");
const core = { raw: coreJs.raw + wasm.raw, gz: coreJs.gz + wasm.gz };
const media = await bundled_("export * from './media/index.js';", { externalOutside: join(dist, 'media') });
const react = await bundled_("export * from './react.js';");
const vue = await bundled_("export * from './vue.js';");
// Budgets in gzip bytes. The issue-13 target for the core is 24 KiB, not reached yet:
// until it is, each budget is the size reached (2026-12-01: core 75,044 B, media
// 4,437 B) plus about 2%, so any real growth fails the build. Lower them with every
// reduction.
const CORE_TARGET_GZ = 24 * 1024;
const CORE_BUDGET_GZ = 76_550;
const MEDIA_BUDGET_GZ = 4_550;
const row = (name, s, note = '') =>
  console.log(`  ${name.padEnd(34)} ${String(s.raw).padStart(8)} B raw ${String(s.gz).padStart(8)} B gzip${note}`);
console.log('\nholdfast package size (esbuild, minified; gzip -9):');
row('wasm/holdfast_bg.wasm', wasm);
row('wasm-bindgen bindings (JS)', bindings);
row("import { connect } (JS, bindings incl.)", coreJs);
row('= core: JS + wasm', core, ` (budget ${CORE_BUDGET_GZ}, target ${CORE_TARGET_GZ})`);
row('holdfast/media (own code)', media, ` (budget ${MEDIA_BUDGET_GZ})`);
row('holdfast/react (JS bundle)', react);
row('holdfast/vue (JS bundle)', vue);
const over = [];
if (core.gz > CORE_BUDGET_GZ) over.push(`the core is ${core.gz} B gzip, over its budget of ${CORE_BUDGET_GZ} B`);
if (media.gz > MEDIA_BUDGET_GZ) over.push(`holdfast/media is ${media.gz} B gzip, over its budget of ${MEDIA_BUDGET_GZ} B`);
if (over.length) {
  console.error(`\nsize budget exceeded:\n  ${over.join('\n  ')}`);
  process.exit(1);
}
