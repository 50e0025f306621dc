// The whole suite: one vitest project per package with tests, plus the repository-level tests under test/.
// Each project's own vitest.config.ts (built by vitest.shared.ts) is also what runs when vitest is started from
// that directory, so there is one configuration for every way of running.
import { defineConfig } from 'vitest/config';
import './vitest.shared.js';

export default defineConfig({
  test: {
    projects: ['packages/*/vitest.config.ts', 'test/vitest.config.ts'],
  },
});
