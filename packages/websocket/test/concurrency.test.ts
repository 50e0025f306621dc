// 50 concurrent conversations over real `ws` connections: every message answered exactly once, streamed in
// order, with the same text as the engine gives alone, and each conversation's turns in order.
import { expect, it } from 'vitest';
import { GREEDY, RawClient, withTinyEngine, type Frame } from './helpers.js';

const tiny = withTinyEngine();

const OPTIONS = { ...GREEDY, maxNewTokens: 16 };
const LIMITS = {
  maxConcurrentRequests: 100,
  maxConversations: 50,
  frameRate: { burst: 200, perSecond: 100 },
  messageRatePerIp: { burst: 200, perSecond: 100 },
  maxConnectionsPerIp: 20,
};

/** What the engine answers to `text` as the first turn of a conversation, alone. */
async function alone(texts: string[]): Promise<Map<string, string>> {
  const results = await Promise.all(texts.map((t) => tiny.engine.conversation().send(t, { options: OPTIONS }).result));
  return new Map(texts.map((t, i) => [t, results[i]!.text]));
}

/** Checks one request's frames on its connection: exactly one done, no error, tokens in order that add up. */
function checkReply(c: RawClient, id: string, conversation: string): Frame {
  const ends = c.frames.filter((f) => f.id === id && (f.type === 'done' || f.type === 'error'));
  expect(ends, id).toHaveLength(1);
  const done = ends[0]!;
  expect(done.type, `${id}: ${JSON.stringify(done)}`).toBe('done');
  expect(done.conversation).toBe(conversation);
  const tokens = c.tokens(id);
  expect(tokens.map((t) => t.seq), id).toEqual(tokens.map((_, i) => i));
  expect(tokens.every((t) => t.conversation === conversation)).toBe(true);
  expect(tokens.map((t) => t.text).join(''), id).toBe(done.text);
  const doneAt = c.frames.indexOf(done);
  expect(tokens.every((t) => c.frames.indexOf(t) < doneAt)).toBe(true);
  return done;
}

it('50 conversations on 10 connections, two turns each, sent all at once: all 100 answered, nothing lost', async () => {
  const server = await tiny.serve({ limits: LIMITS });
  const clients = await Promise.all(Array.from({ length: 10 }, () => RawClient.open(server.wsUrl)));
  const firstTexts = Array.from({ length: 50 }, (_, k) => `conversation ${k}: what do you see?`);
  const expected = await alone(firstTexts);
  const turns: { c: RawClient; conversation: string; first: string; second: string; text: string }[] = [];
  clients.forEach((c, i) => {
    for (let j = 0; j < 5; j++) {
      const k = i * 5 + j;
      const conversation = `conv-${k}`;
      const t = { c, conversation, first: `${conversation}/1`, second: `${conversation}/2`, text: firstTexts[k]! };
      turns.push(t);
      c.send({ type: 'message', id: t.first, conversation, text: t.text, options: OPTIONS });
      c.send({ type: 'message', id: t.second, conversation, text: 'and then?', options: OPTIONS });
    }
  });
  await Promise.all(turns.flatMap((t) => [t.c.end(t.first, 60_000), t.c.end(t.second, 60_000)]));
  for (const t of turns) {
    const first = checkReply(t.c, t.first, t.conversation);
    const second = checkReply(t.c, t.second, t.conversation);
    expect(first.text, t.first).toBe(expected.get(t.text));
    // turns in order, the second seeing the first
    expect(t.c.frames.indexOf(first)).toBeLessThan(t.c.frames.indexOf(second));
    expect((second.usage as { promptTokens: number }).promptTokens).toBeGreaterThan((first.usage as { promptTokens: number }).promptTokens);
  }
  // nothing extra: per connection, hello + the frames of its own 10 requests only
  for (const c of clients) {
    const ids = new Set(turns.filter((t) => t.c === c).flatMap((t) => [t.first, t.second]));
    expect(c.frames.slice(1).every((f) => ids.has(f.id as string))).toBe(true);
  }
});

it('50 conversations on one connection: all answered, nothing lost', async () => {
  const server = await tiny.serve({ limits: LIMITS });
  const c = await RawClient.open(server.wsUrl);
  const texts = Array.from({ length: 50 }, (_, k) => `hello number ${k}`);
  const expected = await alone(texts);
  texts.forEach((text, k) => c.send({ type: 'message', id: `m${k}`, conversation: `k${k}`, text, options: OPTIONS }));
  await Promise.all(texts.map((_, k) => c.end(`m${k}`, 60_000)));
  texts.forEach((text, k) => expect(checkReply(c, `m${k}`, `k${k}`).text).toBe(expected.get(text)));
  expect(c.frames.filter((f) => f.type === 'done')).toHaveLength(50);
  expect(c.frames.filter((f) => f.type === 'error')).toHaveLength(0);
});
