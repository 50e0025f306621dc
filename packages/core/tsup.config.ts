import { createTsupConfig } from '../../tsup.config.js';

// The library in both formats; the `vikdf` CLI (the package's bin) only as ESM.
export default [
  createTsupConfig({ entry: ['src/index.ts'] }),
  createTsupConfig({ entry: ['src/cli.ts'], format: ['esm'], clean: false }),
];
