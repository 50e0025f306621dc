// What every vitest run in this repository shares, wherever it is started from: the root (`pnpm test`,
// `pnpm exec vitest run`) or a package directory (`cd packages/discord && npx vitest run`). The root config
// and each package's vitest.config.ts import this file, so the polyfills and the timeouts always apply.
import { defineProject, type TestProjectConfiguration } from 'vitest/config';

// vitest 5 targets Node >= 22 and its main process (reporters, snapshot saving, watch mode) calls
// Map.groupBy, Object.groupBy and Promise.withResolvers, which Node 20 lacks: without these, the
// default reporter crashes as soon as a test fails, and the JSON report is never written.
// Config files are loaded in that main process, so polyfill them here when missing.
type GroupKey = PropertyKey;
const groupEntries = <T, K>(items: Iterable<T>, keyOf: (item: T, index: number) => K): [K, T[]][] => {
  const groups = new Map<K, T[]>();
  let index = 0;
  for (const item of items) {
    const key = keyOf(item, index++);
    const group = groups.get(key);
    if (group) group.push(item);
    else groups.set(key, [item]);
  }
  return [...groups];
};
const MapCtor = Map as unknown as { groupBy?: unknown };
if (typeof MapCtor.groupBy !== 'function') {
  MapCtor.groupBy = <T, K>(items: Iterable<T>, keyOf: (item: T, index: number) => K) => new Map(groupEntries(items, keyOf));
}
const ObjectCtor = Object as unknown as { groupBy?: unknown };
if (typeof ObjectCtor.groupBy !== 'function') {
  ObjectCtor.groupBy = <T>(items: Iterable<T>, keyOf: (item: T, index: number) => GroupKey) =>
    Object.assign(Object.create(null), Object.fromEntries(groupEntries(items, keyOf)));
}
const PromiseCtor = Promise as unknown as { withResolvers?: unknown };
if (typeof PromiseCtor.withResolvers !== 'function') {
  PromiseCtor.withResolvers = <T>() => {
    let resolve!: (value: T | PromiseLike<T>) => void;
    let reject!: (reason?: unknown) => void;
    const promise = new Promise<T>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

/** The settings every project shares: its test files, and timeouts sized for a busy 2-core machine. */
export function project(name: string, include = ['test/**/*.test.ts']): TestProjectConfiguration {
  return defineProject({
    test: {
      name,
      include,
      exclude: ['**/node_modules/**', '**/dist/**'],
      testTimeout: 30_000,
      hookTimeout: 90_000,
    },
  });
}
