// One vitest configuration for every way of running: each package that has tests has its own vitest.config.ts
// built from vitest.shared.ts (so `cd packages/x && npx vitest run` gets the same timeouts and Node-20
// polyfills as `pnpm test`), and the root config runs exactly those projects.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from '@vikdf/test-support';
import { describe, expect, it } from 'vitest';

const packagesWithTests = readdirSync(path.join(repoRoot, 'packages')).filter((p) =>
  existsSync(path.join(repoRoot, 'packages', p, 'test')),
);

describe('vitest configuration', () => {
  it.each(packagesWithTests)('packages/%s has a vitest.config.ts from the shared settings', (p) => {
    const config = path.join(repoRoot, 'packages', p, 'vitest.config.ts');
    expect(existsSync(config), `${config} is missing`).toBe(true);
    expect(readFileSync(config, 'utf8')).toMatch(/from '\.\.\/\.\.\/vitest\.shared\.js'/);
  });

  it('the shared settings polyfill what vitest 5 needs on Node 20', async () => {
    await import(path.join(repoRoot, 'vitest.shared.ts'));
    expect(typeof (Map as unknown as { groupBy: unknown }).groupBy).toBe('function');
    expect(typeof (Promise as unknown as { withResolvers: unknown }).withResolvers).toBe('function');
  });
});
