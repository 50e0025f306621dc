import { defineConfig, type Options } from 'tsup';

/**
 * Shared tsup setup, in the style of discord.js: each package's own `tsup.config.ts` calls
 * `createTsupConfig({ entry: [...] })` and overrides only what it needs.
 * Output: ESM (`.js`, `.d.ts`) and CommonJS (`.cjs`, `.d.cts`), for Node 20; each package.json maps them with
 * `types`/`import`/`require` conditions. `shims: true` makes `import.meta.url` work in the CommonJS output (core finds
 * onnxruntime-node's folder with it, websocket its `public/` page and package.json).
 */
export function createTsupConfig(options: Options = {}) {
  return defineConfig({
    entry: ['src/index.ts'],
    format: ['esm', 'cjs'],
    shims: true,
    target: 'node20',
    platform: 'node',
    dts: true,
    sourcemap: true,
    clean: true,
    splitting: false,
    treeshake: true,
    minify: false,
    keepNames: true,
    skipNodeModulesBundle: true,
    tsconfig: 'tsconfig.json',
    outDir: 'dist',
    ...options,
  });
}
