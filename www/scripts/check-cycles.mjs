// Fails when the modules of www/src import each other in a cycle (type-only imports
// count too: a cycle of types is still two modules that cannot be read apart). Run by
// `npm run build` and `npm run test:unit`; `node scripts/check-cycles.mjs [dir]` checks
// another tree.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const src = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'src'));
const generatedBindings = join(src, 'wasm');

/** Every .ts file under `dir` except the wasm-bindgen output. */
function sources(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (path === generatedBindings) continue;
    if (statSync(path).isDirectory()) out.push(...sources(path));
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

// `import … from './x.js'`, `export … from './x.js'`, `import './x.js'`, `import('./x.js')`.
const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(?\s*)['"](\.{1,2}\/[^'"]+)['"]/g;

/** The local modules `file` imports (relative specifiers, `.js` → `.ts`). */
function imports(file) {
  const text = readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*/g, '');
  const deps = [];
  for (const [, spec] of text.matchAll(SPECIFIER)) {
    const target = resolve(dirname(file), spec.replace(/\.js$/, '.ts'));
    if (!target.startsWith(generatedBindings) && existsSync(target)) deps.push(target);
  }
  return deps;
}

const graph = new Map(sources(src).map((f) => [f, imports(f)]));
const state = new Map(); // file → 'open' while on the DFS stack, 'done' after
const cycles = [];
function visit(file, stack) {
  state.set(file, 'open');
  stack.push(file);
  for (const dep of graph.get(file) ?? []) {
    if (state.get(dep) === 'open') cycles.push([...stack.slice(stack.indexOf(dep)), dep]);
    else if (!state.has(dep)) visit(dep, stack);
  }
  stack.pop();
  state.set(file, 'done');
}
for (const file of graph.keys()) if (!state.has(file)) visit(file, []);

if (cycles.length > 0) {
  for (const c of cycles) console.error(`import cycle: ${c.map((f) => relative(src, f)).join(' → ')}`);
  process.exit(1);
}
console.log(`no import cycles among ${graph.size} modules of www/src`);
