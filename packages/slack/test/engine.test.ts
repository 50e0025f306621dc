// End to end with the real engine on the tiny random-weight fixture: its replies are gibberish, but they are
// generated, streamed and posted through the same path a real model's are.
import { Engine } from '@vikdf/core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { markdownToMrkdwn } from '@vikdf/adapter-kit';
import { postSigned, userTs } from './fake-slack.js';
import { SIGNING_SECRET, bundle, closeAll, directMessage, mention, repliedTo, startBot, startFake } from './helpers.js';

let engine: Engine;
beforeAll(async () => {
  engine = await Engine.load(bundle, { devices: ['cpu'] });
});
afterAll(async () => {
  await engine?.close();
});
afterEach(closeAll);

const generation = { numBeams: 1, doSample: false, maxNewTokens: 12, minNewTokens: 4 };

describe('SlackBot with the tiny engine', () => {
  it('answers a mention over Socket Mode and a DM conversation over HTTP', async () => {
    const fake = await startFake();
    const { bot } = await startBot(fake, { engine, responder: undefined, generation, system: 'You are a test bot.' });
    const ts = userTs();
    const replied = repliedTo(bot, ts);
    fake.sendEvent(mention(fake, { ts, text: 'hello engine' }));
    const { text } = await replied;
    expect(text.length).toBeGreaterThan(0);
    const [posted] = fake.postedIn('C0GENERAL', ts);
    expect(posted?.text).toBe(markdownToMrkdwn(text).trim() === '' ? '…' : markdownToMrkdwn(text));
    await bot.stop();

    const { bot: http } = await startBot(fake, { mode: 'http', engine, responder: undefined, generation });
    const texts: string[] = [];
    for (const words of ['first turn', 'second turn']) {
      const dm = userTs();
      const repliedDm = repliedTo(http, dm);
      expect((await postSigned(http.url as string, directMessage({ ts: dm, text: words }), { secret: SIGNING_SECRET })).status).toBe(200);
      texts.push((await repliedDm).text);
    }
    expect(texts.every((t) => t.length > 0)).toBe(true);
    expect(fake.postedIn('D0ALICE', undefined)).toHaveLength(2);
  });
});
