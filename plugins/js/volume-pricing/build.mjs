// Builds volume-pricing.js into a WebAssembly component for world `pricing`.
//
//   node build.mjs [OUT.wasm]      (default: ./volume-pricing-js.wasm)
//
// Uses the `componentize()` API rather than the `jco componentize` CLI, which fails on
// some machines ("failed to get path metadata"). `http` and `fetch-event` are disabled so
// the component imports no wasi:http; stdio, clocks and random stay (the host links WASI
// with nothing behind it).
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? resolve(here, 'volume-pricing-js.wasm'));

const { component } = await componentize({
  sourcePath: resolve(here, 'volume-pricing.js'),
  witPath: resolve(here, '../../../wit'),
  worldName: 'hephaestus:plugins/pricing@0.1.0',
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
console.log(`wrote ${out} (${component.byteLength} bytes)`);
