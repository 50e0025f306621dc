// examples/slack-app run as a user would (node index.mjs with env vars), against the fake Slack and the built
// packages (`pnpm test` builds them first).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_BOT_TOKEN, postSigned, userTs } from './fake-slack.js';
import { APP_TOKEN, SIGNING_SECRET, bundle, closeAll, mention, repoRoot, startFake } from './helpers.js';

const example = path.join(repoRoot, 'examples/slack-app/index.mjs');

function newest(dir: string): number {
  return Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newest(path.join(dir, e.name)) : statSync(path.join(dir, e.name)).mtimeMs)));
}

beforeAll(() => {
  for (const name of ['core', 'adapter-kit', 'slack']) {
    const dir = path.join(repoRoot, 'packages', name);
    const built = path.join(dir, 'dist/index.js');
    if (!existsSync(built) || newest(path.join(dir, 'src')) > statSync(built).mtimeMs) {
      throw new Error(`packages/${name} is not built or changed since its build: run \`pnpm -r build\` first (pnpm test does)`);
    }
  }
});

interface Run {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const children: ChildProcess[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await closeAll();
});

function run(env: Record<string, string>): Run {
  // Only what the example reads, so that the developer's own SLACK_* variables never leak in.
  const base = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ONNXRUNTIME_NODE_INSTALL: 'skip' };
  const child = spawn(process.execPath, [example], { cwd: repoRoot, env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, stdout: () => out, stderr: () => err, exit };
}

/** Resolves when stdout matches; rejects if the process exits first. */
function output(r: Run, pattern: RegExp): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const m = r.stdout().match(pattern);
      if (m) {
        r.child.stdout!.off('data', check);
        resolve(m);
      }
    };
    r.child.stdout!.on('data', check);
    check();
    void r.exit.then(({ code }) => reject(new Error(`exited ${code} before ${pattern}:\n${r.stdout()}\n${r.stderr()}`)));
  });
}

describe('examples/slack-app', () => {
  it('runs in Socket Mode: answers a mention, then stops on SIGTERM', async () => {
    const fake = await startFake();
    const r = run({ SLACK_BOT_TOKEN: FAKE_BOT_TOKEN, SLACK_APP_TOKEN: APP_TOKEN, SLACK_API_URL: fake.apiUrl, VIKDF_BUNDLE: bundle });
    await output(r, /connected to Slack \(Socket Mode\) as UBOT/);
    const ts = userTs();
    fake.sendEvent(mention(fake, { ts, text: 'hello from the test' }));
    await output(r, /answered UALICE in C0GENERAL: \d+ chars/);
    const [reply] = fake.postedIn('C0GENERAL', ts);
    expect(reply?.text.length).toBeGreaterThan(0);
    r.child.kill('SIGTERM');
    expect(await r.exit).toEqual({ code: 0, signal: null });
  });

  it('runs over HTTP: answers a signed event', async () => {
    const fake = await startFake();
    const r = run({ SLACK_BOT_TOKEN: FAKE_BOT_TOKEN, SLACK_SIGNING_SECRET: SIGNING_SECRET, PORT: '0', HOST: '127.0.0.1', SLACK_API_URL: fake.apiUrl, VIKDF_BUNDLE: bundle });
    const [, url] = (await output(r, /listening on (http:\/\/\S+) as UBOT/)) as RegExpMatchArray;
    const ts = userTs();
    expect((await postSigned(url as string, mention(fake, { ts, text: 'over http' }), { secret: SIGNING_SECRET })).status).toBe(200);
    await output(r, /answered UALICE/);
    expect(fake.postedIn('C0GENERAL', ts)).toHaveLength(1);
    r.child.kill('SIGTERM');
    expect((await r.exit).code).toBe(0);
  });

  it('says which variable is missing', async () => {
    const noToken = run({ SLACK_APP_TOKEN: APP_TOKEN });
    expect((await noToken.exit).code).toBe(1);
    expect(noToken.stderr()).toMatch(/SLACK_BOT_TOKEN is not set/);
    const noMode = run({ SLACK_BOT_TOKEN: FAKE_BOT_TOKEN });
    expect((await noMode.exit).code).toBe(1);
    expect(noMode.stderr()).toMatch(/SLACK_APP_TOKEN .* or SLACK_SIGNING_SECRET/);
  });

  it('exits with the reason when Slack rejects the token', async () => {
    const fake = await startFake();
    const r = run({ SLACK_BOT_TOKEN: 'xoxb-revoked', SLACK_APP_TOKEN: APP_TOKEN, SLACK_API_URL: fake.apiUrl, VIKDF_BUNDLE: bundle });
    expect((await r.exit).code).toBe(1);
    expect(r.stderr()).toMatch(/auth\.test failed.*invalid_auth/);
  });
});
