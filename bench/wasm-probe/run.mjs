// Runs the probe under node's WASI. Envoy's V8 compiles wasm with TurboFan only (Liftoff
// off), so run node with --no-liftoff. The filter's proxy-wasm imports are stubbed: the
// probe calls none of them. Usage: node --no-liftoff run.mjs probe.wasm leaf.pem [n]
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { WASI } from 'node:wasi';

const [wasmPath, pemPath, ...rest] = process.argv.slice(2);
const pemDir = dirname(resolve(pemPath));
const wasi = new WASI({
  version: 'preview1',
  args: ['wasm-probe', `/pem/${pemPath.split('/').pop()}`, ...rest],
  preopens: { '/pem': pemDir },
});
const module = await WebAssembly.compile(await readFile(wasmPath));
const imports = wasi.getImportObject();
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.module in imports && imp.module.startsWith('wasi')) continue;
  imports[imp.module] ??= {};
  imports[imp.module][imp.name] ??= () => 0;
}
const instance = await WebAssembly.instantiate(module, imports);
// The filter exports `_initialize` (a reactor) next to the probe's `_start`; node's
// WASI refuses both, so hand it the command's exports only.
wasi.start({ exports: { memory: instance.exports.memory, _start: instance.exports._start } });
