// Finding the .wasm file with no bundler configuration. Bundlers copy a file they see
// referenced as `new URL('<literal>', import.meta.url)` (webpack 5, Vite build, Vite 8
// dev, Parcel) and rewrite the URL. Vite 5–7 `vite dev` pre-bundles this package's JS into
// `node_modules/.vite/deps/` without rewriting such URLs, so the relative one then points
// into that folder and the dev server answers with index.html; there the package-path
// form below is the one Vite resolves (through the `./wasm/holdfast_bg.wasm` export), so
// the loader tries both and keeps the first that is a wasm file.
import { HoldfastError } from './errors.js';

/** The places the wasm file may be, most likely first, without duplicates. */
export function wasmCandidates(): URL[] {
  const nextToPackage = new URL('./wasm/holdfast_bg.wasm', import.meta.url);
  // webpack would fail the build if it cannot resolve a package path (e.g. the package is
  // installed under an alias); it finds the file through the URL above anyway.
  const throughExports = new URL(/* webpackIgnore: true */ 'holdfast/wasm/holdfast_bg.wasm', import.meta.url);
  return nextToPackage.href === throughExports.href ? [nextToPackage] : [nextToPackage, throughExports];
}

/** Whether `res` can be a wasm file: an SPA fallback answers 200 with text/html. */
function looksLikeWasm(res: Response): boolean {
  return res.ok && !(res.headers.get('content-type') ?? '').includes('text/html');
}

/** Fetches the wasm file from `explicit` (the `wasmUrl` option) or the first candidate
 *  that answers with something other than an error or a web page. Rejects with a
 *  `HoldfastError` (`wasm-load-failed`) that names every URL tried, or the network error. */
export async function fetchWasm(explicit?: string | URL): Promise<Response> {
  const urls = explicit !== undefined ? [explicit] : wasmCandidates();
  const tried: string[] = [];
  for (const url of urls) {
    let res: Response;
    try {
      res = await fetch(url);
    } catch (e) {
      // The network, not the URL: another candidate would fail the same way.
      throw new HoldfastError('wasm-load-failed', `holdfast could not fetch ${String(url)}: ${(e as Error)?.message ?? String(e)}`);
    }
    if (looksLikeWasm(res)) return res;
    tried.push(`${res.url || String(url)} (${res.status} ${res.headers.get('content-type') ?? ''})`.trim());
  }
  throw new HoldfastError('wasm-load-failed',
    `holdfast could not load its WebAssembly file; tried ${tried.join(', ')}. ` +
    'If your bundler does not copy files referenced by new URL(..., import.meta.url) ' +
    '(esbuild, Rollup without a plugin), copy node_modules/holdfast/dist/wasm/holdfast_bg.wasm ' +
    'to your static files and pass its URL as connect({ wasmUrl })');
}
