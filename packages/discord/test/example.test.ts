// examples/discord-bot as a process: it refuses to start without DISCORD_TOKEN, and otherwise logs in to the fake
// Discord, answers a mention with the tiny model, and stops on SIGTERM.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { FakeDiscord } from './fake-discord.js';
import { repoRoot, tinyBundle } from '@vikdf/test-support';

const script = path.join(repoRoot, 'examples/discord-bot/index.mjs');

let fake: FakeDiscord | undefined;
let child: ChildProcess | undefined;
afterEach(async () => {
  if (child && child.exitCode === null) child.kill('SIGKILL');
  await fake?.close();
});

function run(env: Record<string, string>) {
  const proc = spawn(process.execPath, [script], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  const onData = (data: Buffer) => {
    output += data.toString();
    for (const w of [...waiters]) if (w.pattern.test(output)) w.resolve();
  };
  proc.stdout.on('data', onData);
  proc.stderr.on('data', onData);
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  return {
    proc,
    exited,
    output: () => output,
    /** Resolves when the output matches; rejects if the process exits first. */
    waitFor: (pattern: RegExp) =>
      new Promise<void>((resolve, reject) => {
        if (pattern.test(output)) return resolve();
        waiters.push({ pattern, resolve });
        void exited.then((code) => reject(new Error(`exited (${code}) before ${pattern}: ${output}`)));
      }),
  };
}

it('says what is missing when DISCORD_TOKEN is not set', async () => {
  const p = run({});
  child = p.proc;
  expect(await p.exited).toBe(1);
  expect(p.output()).toMatch(/discord-bot: DISCORD_TOKEN is not set/);
});

it('answers a mention with the model and stops on SIGTERM', async () => {
  fake = await FakeDiscord.start();
  const p = run({ DISCORD_TOKEN: fake.token, DISCORD_API_URL: fake.api, VIKDF_BUNDLE: tinyBundle });
  child = p.proc;
  await p.waitFor(/logged in as vikdf/);
  const question = fake.mention(fake.general, 'hello from the test');
  await p.waitFor(/answered alice in \d+/);
  const sent = fake.botMessages(fake.general);
  expect(sent.length).toBeGreaterThanOrEqual(1);
  expect(sent[0]!.message_reference).toMatchObject({ message_id: question.id });
  p.proc.kill('SIGTERM');
  expect(await p.exited).toBe(0);
  expect(p.output()).toMatch(/stopping/);
});
