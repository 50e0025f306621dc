// End to end: the real discord.js client, the fake Discord, and the tiny random VIKDF bundle on ONNX Runtime.
import { Engine } from '@vikdf/core';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { DiscordBot } from '../src/index.js';
import { FakeDiscord } from './fake-discord.js';
import { tinyBundle } from '@vikdf/test-support';

const bundle = tinyBundle;
const GREEDY = { numBeams: 1, doSample: false, maxNewTokens: 12 } as const;

let engine: Engine;
let fake: FakeDiscord;
beforeAll(async () => {
  engine = await Engine.load(bundle, { devices: ['cpu'] });
  fake = await FakeDiscord.start();
});
afterAll(async () => {
  await fake?.close();
  await engine?.close();
});

it('answers a mention with the model, in context of the channel history', async () => {
  const bot = new DiscordBot({
    token: fake.token,
    engine,
    generation: GREEDY,
    editIntervalMs: 50,
    clientOptions: { rest: { api: fake.api } },
  });
  const replies: string[] = [];
  const errors: Error[] = [];
  bot.on('replied', (_m, r) => replies.push(r.text));
  bot.on('error', (e) => errors.push(e));
  await bot.start();
  try {
    fake.post({ channel: fake.random, author: fake.bob, content: 'the weather is nice', dispatch: false });
    const question = fake.mention(fake.random, 'shall we go outside?');
    await vi.waitFor(() => expect(replies).toHaveLength(1), { timeout: 20_000 });
    const expected = (await engine.generate({ context: ['the weather is nice', 'shall we go outside?'], options: GREEDY }).result).text;
    expect(replies[0]).toBe(expected);
    const sent = fake.botMessages(fake.random);
    expect(sent.length).toBeGreaterThanOrEqual(1);
    expect(sent[0]!.message_reference).toMatchObject({ message_id: question.id });
    expect(errors).toEqual([]);
  } finally {
    await bot.stop();
  }
});
