import { defineConfig, type Options } from 'tsup';

/**
 * Shared tsup setup, in the style of discord.js: each package's own `tsup.config.ts` calls
 * `createTsupConfig({ entry: [...] })` and overrides only what it needs.
 * Output: ESM + `.d.ts`, for Node 20.
 */
export function createTsupConfig(options: Options = {}) {
  return defineConfig({
    entry: ['src/index.ts'],
    format: ['esm'],
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
