import { rmSync } from 'node:fs';
import { createTsupConfig } from '../../tsup.config.js';

// The library in both formats; the `vikdf` CLI (the package's bin) only as ESM. The two builds run in parallel
// and write to the same dist/, so dist/ is emptied here, once, before either starts (not by tsup's `clean`).
rmSync(new URL('./dist/', import.meta.url), { recursive: true, force: true });

export default [
  createTsupConfig({ entry: ['src/index.ts'], clean: false }),
  // @vikdf/websocket is loaded at run time by `vikdf serve` (it depends on core, so core cannot depend on it).
  createTsupConfig({ entry: ['src/cli.ts'], format: ['esm'], clean: false, external: ['@vikdf/websocket'] }),
];
