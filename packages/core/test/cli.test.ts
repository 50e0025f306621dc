// The `vikdf` command as a user runs it: the built dist/cli.js in a child process, on the tiny fixture.
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
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
    // One clean line about the provider: no Vulkan warning, no native stack.
    expect(out.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(out.stderr).not.toMatch(/Couldn't load Vulkan|BackendVk/);
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
    // A generate without a context is bad usage, told before any model loads.
    const noContext = await vikdf('generate', bundle);
    expect(noContext.code).toBe(2);
    expect(noContext.stderr).toMatch(/vikdf generate: needs at least one --context TEXT\nusage: vikdf generate/);
    const twoBundles = await vikdf('inspect', bundle, bundle);
    expect(twoBundles.code).toBe(2);
    expect(twoBundles.stderr).toMatch(/at most one bundle/);
    const badNumber = await vikdf('generate', bundle, '--context', 'hi', '--top-k', 'many');
    expect(badNumber.code).toBe(2);
    expect(badNumber.stderr).toMatch(/--top-k must be a number, got "many"/);
    const noCommand = await vikdf();
    expect(noCommand.code).toBe(2);
    expect(noCommand.stderr).toMatch(/^usage:/);
  });

  it('--help of each command prints its own usage, the default model and the exit codes, and exits 0', async () => {
    const commands = ['chat', 'generate', 'inspect', 'serve'];
    for (const command of commands) {
      for (const args of [[command, '--help'], [command, '-h'], ['help', command]]) {
        const out = await vikdf(...args);
        expect(out.code, args.join(' ')).toBe(0);
        expect(out.stdout).toMatch(new RegExp(`^usage: vikdf ${command} \\[bundle\\]`));
        expect(out.stdout).toMatch(/@vikdf\/model-mini/);
        expect(out.stdout).toMatch(/exit codes: 0 ok, 1 runtime failure .*, 2 bad usage/);
        for (const other of commands.filter((c) => c !== command)) expect(out.stdout).not.toMatch(`vikdf ${other}`);
      }
    }
    expect((await vikdf('generate', '--help')).stdout).toMatch(/--context TEXT/);
    const general = await vikdf('--help');
    expect(general.code).toBe(0);
    expect(general.stdout).toMatch(/vikdf chat \[bundle\][\s\S]*vikdf generate \[bundle\][\s\S]*vikdf inspect \[bundle\][\s\S]*vikdf serve \[bundle\]/);
    expect((await vikdf('serve', '--help')).stdout).toMatch(/--port N[\s\S]*--host H[\s\S]*--token T/);
  });

  it('serve says which package it needs when @vikdf/websocket cannot be found; its options belong to it alone', async () => {
    // Run from a folder outside the workspace, without the NODE_PATH that `pnpm exec` sets (it points into pnpm's
    // store, where every workspace package is): neither core's location nor the folder has @vikdf/websocket.
    // (With the package installed, test/packaging.test.ts serves the page through the installed bin.)
    const env = { ...process.env, NODE_PATH: '' };
    const out = await run(process.execPath, [cli, 'serve', bundle, '--port', '0'], { cwd: tmpdir(), env, timeout: 20_000 }).catch((e) => e);
    expect(out.code).toBe(1);
    expect(out.stderr).toMatch(/vikdf serve: needs the package @vikdf\/websocket beside @vikdf\/core \(npm i @vikdf\/websocket\)/);
    const misplaced = await vikdf('inspect', bundle, '--port', '1');
    expect(misplaced.code).toBe(2);
    expect(misplaced.stderr).toMatch(/--port is an option of serve only/);
    const badPort = await vikdf('serve', bundle, '--port', 'eighty');
    expect(badPort.code).toBe(2);
    expect(badPort.stderr).toMatch(/--port must be a port number \(0-65535\), got "eighty"/);
  });

  it('without a bundle, generate, inspect and chat use the default model, as Engine.load() does', async () => {
    const gen = await vikdf('generate', '--context', 'hi, how are you?', '--greedy', '--max-new-tokens', '8', '--json');
    expect(gen.code, gen.stderr).toBe(0);
    expect(gen.stderr).toMatch(/vikdf-mini on cpu/);
    const result = JSON.parse(gen.stdout);
    expect(result.tokenIds.length).toBeGreaterThan(0);
    expect(result.text).not.toMatch(/^\s/);

    const inspect = await vikdf('inspect', '--json');
    expect(inspect.code, inspect.stderr).toBe(0);
    const report = JSON.parse(inspect.stdout);
    expect(report.name).toBe('vikdf-mini');
    expect(report.size_mb).toBeGreaterThan(10);

    const child = spawn(process.execPath, [cli, 'chat', '--greedy', '--max-new-tokens', '5'], { stdio: 'pipe' });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.end('hello there\n');
    const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? -1)));
    expect(code, stderr).toBe(0);
    expect(stderr).toMatch(/vikdf-mini on cpu/);
    expect(stdout).toMatch(/bot> \S/); // a reply, starting at its first word
  });
});
