// The `vikdf` command as a user runs it: the built dist/cli.js in a child process, on the tiny fixture.
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { tinyBundle, tinyGoldenPath } from '@vikdf/test-support';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'dist', 'cli.js');
const bundle = tinyBundle;
const run = promisify(execFile);

async function vikdf(...args: string[]) {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args], { timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('vikdf CLI (built)', () => {
  beforeAll(() => {
    if (!existsSync(cli)) throw new Error(`${cli} is missing: build first (pnpm -r build; pnpm test does)`);
  });

  it('generate prints the same reply as the golden greedy run', async () => {
    const golden = JSON.parse(await readFile(tinyGoldenPath, 'utf8'));
    const row = golden.cases[0].rows[0];
    const out = await vikdf('generate', bundle, '--context', row.turns[0], '--greedy', '--max-new-tokens', '16', '--json');
    expect(out.code).toBe(0);
    const result = JSON.parse(out.stdout);
    expect(result.tokenIds).toEqual(row.greedy_ids);
    expect(out.stderr).toMatch(/tiny-random on cpu/);
  });

  it('inspect reports the model, sizes and the provider with reasons for skipped ones', async () => {
    const out = await vikdf('inspect', bundle, '--json');
    expect(out.code).toBe(0);
    const report = JSON.parse(out.stdout);
    expect(report.model.llm_architecture).toBe('llama');
    expect(report.variants).toEqual(['fp16', 'int8']);
    expect(report.provider.device).toBe('cpu');
    expect(report.size_mb).toBeGreaterThan(0.5);
  });

  it('chat streams replies and understands /reset and /quit', async () => {
    const child = spawn(process.execPath, [cli, 'chat', bundle, '--greedy', '--max-new-tokens', '5'], { stdio: 'pipe' });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stdin.write('hello there\n/reset\nsecond\n/quit\n');
    const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? -1)));
    expect(code).toBe(0);
    expect(stdout.match(/bot> /g)?.length).toBe(2);
    expect(stdout).toContain('(history cleared)');
  });

  it('bad usage exits 2 with usage; a missing bundle exits 1 naming it', async () => {
    const unknown = await vikdf('frobnicate', bundle);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command "frobnicate"/);
    const missing = await vikdf('generate', '/nonexistent/bundle', '--context', 'hi');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/nonexistent\/bundle/);
    const noContext = await vikdf('generate', bundle);
    expect(noContext.code).toBe(1);
    expect(noContext.stderr).toMatch(/--context/);
  });
});
