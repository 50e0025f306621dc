// `pnpm start` (scripts/start.mjs) and examples/websocket-bot, run as a user would, against the built packages
// (`pnpm test` builds them first; start.mjs would build them itself if they were missing).
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import path from 'node:path';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { VikdfClient } from '../src/index.js';
import { httpGet, repoRoot } from './helpers.js';

function newest(dir: string): number {
  return Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newest(path.join(dir, e.name)) : statSync(path.join(dir, e.name)).mtimeMs)));
}

// start.mjs rebuilds packages whose dist/ is missing or older than src/; in a test run that would delete dist/
// under the other test files' feet. So these tests need the packages built first, as `pnpm test` does.
beforeAll(() => {
  for (const name of ['core', 'websocket']) {
    const dir = path.join(repoRoot, 'packages', name);
    const built = path.join(dir, 'dist/index.js');
    if (!existsSync(built) || newest(path.join(dir, 'src')) > statSync(built).mtimeMs) {
      throw new Error(`packages/${name} is not built or changed since its build: run \`pnpm -r build\` first (pnpm test does)`);
    }
  }
});

const children: ChildProcess[] = [];
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const f of cleanups.splice(0)) await f();
});

interface Run {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function run(args: string[], env: Record<string, string> = {}): Run {
  const child = spawn(process.execPath, args, { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, stdout: () => out, stderr: () => err, exit };
}

async function waitForOutput(r: Run, pattern: RegExp, timeoutMs = 60_000): Promise<RegExpMatchArray> {
  const start = performance.now();
  for (;;) {
    const m = r.stdout().match(pattern);
    if (m) return m;
    if (r.child.exitCode !== null) throw new Error(`exited ${r.child.exitCode}:\n${r.stdout()}\n${r.stderr()}`);
    if (performance.now() - start > timeoutMs) throw new Error(`no ${pattern} within ${timeoutMs} ms:\n${r.stdout()}\n${r.stderr()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('pnpm start (scripts/start.mjs)', () => {
  it('serves the chat on the default model, prints the URL, and stops gracefully on SIGTERM', async () => {
    const r = run(['scripts/start.mjs'], { PORT: '0', VIKDF_ALLOWED_HOSTS: 'chat.example, other.example:8443' });
    const [, url] = await waitForOutput(r, /^VIKDF chat: (http:\/\/127\.0\.0\.1:\d+\/)$/m);
    expect(r.stdout()).toMatch(/model \(the default model\): vikdf-mini on cpu/);
    // Provider probing is silent: no Vulkan warning or native stack on a machine without a GPU.
    expect(r.stderr()).not.toMatch(/Couldn't load Vulkan|BackendVk/);
    const page = await fetch(url!);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('VIKDF chat');
    // DNS rebinding: a name the server was not told it has is refused; VIKDF_ALLOWED_HOSTS adds names.
    const port = new URL(url!).port;
    expect((await httpGet(url!, { Host: `evil.example:${port}` })).status).toBe(403);
    expect((await httpGet(url!, { Host: 'chat.example' })).status).toBe(200);
    expect((await httpGet(url!, { Host: 'other.example:8443' })).status).toBe(200);
    const client = await VikdfClient.connect(`${url!.replace('http', 'ws')}ws`);
    cleanups.push(async () => void (await client.close()));
    expect(client.hello).toMatchObject({ model: { name: 'vikdf-mini' }, defaults: { numBeams: 1 } });
    // The default model's real budget: 96 prompt tokens and 8 knowledge tokens; a message gets what the chat
    // template leaves, about 350 characters of English (not the 4000 the server would read).
    expect(client.hello.limits.maxPromptTokens).toBe(104);
    expect(client.hello.limits.maxMessageTokens).toBeGreaterThan(80);
    expect(client.hello.limits.maxMessageTokens).toBeLessThan(100);
    expect(client.hello.limits.maxMessageChars).toBeGreaterThan(250);
    expect(client.hello.limits.maxMessageChars).toBeLessThan(500);
    const reply = client.send('hello!');
    const chunks: string[] = [];
    for await (const c of reply) chunks.push(c);
    expect(chunks.length).toBeGreaterThan(1); // greedy by default: streamed token by token
    expect(chunks.join('')).toBe((await reply.result).text);

    r.child.kill('SIGTERM');
    expect(await client.closed).toEqual({ code: 1001, reason: 'server shutting down' });
    expect(await r.exit).toEqual({ code: 0, signal: null });
    expect(r.stdout()).toMatch(/SIGTERM: stopping[\s\S]*\nstopped\n/);
  });

  it('says so and exits 1 when the port is taken', async () => {
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => blocker.close(() => resolve())));
    const port = (blocker.address() as { port: number }).port;
    const r = run(['scripts/start.mjs'], { PORT: String(port) });
    expect((await r.exit).code).toBe(1);
    expect(r.stderr()).toContain(`port ${port} on 127.0.0.1 is in use`);
  });

  it('refuses a PORT that is not a port', async () => {
    const r = run(['scripts/start.mjs'], { PORT: 'eighty' });
    expect((await r.exit).code).toBe(1);
    expect(r.stderr()).toContain('PORT must be a port number');
  });
});

describe('examples/websocket-bot', () => {
  it('serves the tiny bundle and holds a two-turn conversation through the typed client', async () => {
    const r = run([path.join('examples/websocket-bot/index.mjs')]);
    expect(await r.exit).toEqual({ code: 0, signal: null });
    const out = r.stdout();
    expect(out).toMatch(/^connected to ws:\/\/127\.0\.0\.1:\d+\/ws: tiny-random on cpu$/m);
    expect(out).toContain('> hello! what do you see?\n< ');
    expect(out).toContain('> tell me more\n< ');
    expect(out.match(/^ {2}\(24 tokens in \d+ ms, length\)$/gm)).toHaveLength(2);
  });
});
