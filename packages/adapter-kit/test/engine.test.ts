// End to end on the tiny random bundle: engineResponder behind a ChatBot, with a recording outbox.
import { Engine } from '@vikdf/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatBot, DEFAULT_APOLOGY, engineResponder } from '../src/index.js';
import { RecordingOutbox, message } from './helpers.js';
import { tinyBundle } from '@vikdf/test-support';

const bundle = tinyBundle;
const GREEDY = { numBeams: 1, doSample: false, maxNewTokens: 12 } as const;

let engine: Engine;
beforeAll(async () => {
  engine = await Engine.load(bundle, { devices: ['cpu'] });
});
afterAll(async () => {
  await engine?.close();
});

async function direct(context: string[]): Promise<string> {
  return (await engine.generate({ context, options: GREEDY }).result).text;
}

describe('engineResponder', () => {
  it('answers through a ChatBot with the context a core conversation would see, history included', async () => {
    const responder = engineResponder(engine, { generation: GREEDY });
    const bot = new ChatBot({ responder, editIntervalMs: 0 });
    const replies: string[] = [];
    bot.on('replied', (_m, r) => replies.push(r.text));
    bot.on('error', (e) => {
      throw e;
    });
    const history = ['what a day', 'it was sunny'];
    const outbox = new RecordingOutbox();
    const first = message({ id: '1', text: 'do you like the sea?', threadId: 't1' });
    expect(responder.has(first.conversation)).toBe(false);
    await bot.handle(first, outbox, async () => history);
    expect(responder.has(first.conversation)).toBe(true);

    const expected1 = await direct([...history, first.text]);
    expect(replies).toEqual([expected1]);
    expect(outbox.writes[0]).toMatchObject({ op: 'send', replyTo: '1' });
    // What the messages show is the reply (blank replies would say "(no reply)").
    expect(outbox.messages().join('')).toBe(expected1.trim() || '(no reply)');

    const second = message({ id: '2', text: 'and the mountains?', threadId: 't1' });
    await bot.handle(second, outbox, async () => {
      throw new Error('not asked again');
    });
    // The same as a core conversation seeded with the history (its window may drop old turns: same rule).
    const reference = engine.conversation({ history });
    expect((await reference.send(first.text, { options: GREEDY }).result).text).toBe(expected1);
    expect(replies[1]).toBe((await reference.send(second.text, { options: GREEDY }).result).text);

    // Another conversation starts from nothing.
    await bot.handle(message({ id: '3', text: 'hello', channelId: 'c9' }), outbox);
    expect(replies[2]).toBe(await direct(['hello']));
    expect(responder.size).toBe(2);
  });

  it('forgets the least recently used conversation beyond maxConversations', async () => {
    const responder = engineResponder(engine, { generation: GREEDY, maxConversations: 2 });
    const a = { platform: 't', channelId: 'a', isDM: false };
    const b = { platform: 't', channelId: 'b', isDM: false };
    const c = { platform: 't', channelId: 'c', isDM: false };
    for (const ref of [a, b, a, c]) await responder.reply(ref, message({ text: 'hi' })).result;
    expect([responder.has(a), responder.has(b), responder.has(c)]).toEqual([true, false, true]);
    responder.forget(a);
    expect(responder.has(a)).toBe(false);
  });

  it('turns an engine refusal into the apology', async () => {
    const bot = new ChatBot({ responder: engineResponder(engine, { generation: GREEDY }), editIntervalMs: 0 });
    const errors: Error[] = [];
    bot.on('error', (e) => errors.push(e));
    const outbox = new RecordingOutbox();
    await bot.handle(message({ text: 'word '.repeat(400) }), outbox);
    expect(outbox.messages()).toEqual([DEFAULT_APOLOGY]);
    expect(errors[0]).toMatchObject({ code: 'message_too_long' });
  });

  it('rejects what is not an engine', () => {
    expect(() => engineResponder({} as never)).toThrow(/expected an Engine/);
    expect(() => engineResponder(engine, { maxConversations: 0 })).toThrow(/maxConversations/);
  });
});
