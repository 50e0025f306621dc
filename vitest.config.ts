import { defineConfig } from 'vitest/config';

// vitest 5 targets Node >= 22 and its main process (reporters, snapshot saving, watch mode) calls
// Map.groupBy, Object.groupBy and Promise.withResolvers, which Node 20 lacks: without these, the
// default reporter crashes as soon as a test fails, and the JSON report is never written.
// This file is loaded in that main process, so polyfill them here when missing.
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

export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    exclude: ['**/node_modules/**', '**/dist/**', 'training/**'],
    testTimeout: 30_000,
  },
});
