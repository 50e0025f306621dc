// A result's timings on the tiny fixture: queuedMs is the wait for a place in the batch (not the whole time),
// firstTokenMs is when the first text reached the caller (not when the first token was picked), and
// queuedMs <= firstTokenMs <= totalMs.
import { tinyBundle } from '@vikdf/test-support';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine, type GenerationResult } from '../src/index.js';

let engine: Engine;
beforeAll(async () => {
  engine = await Engine.load(tinyBundle, { devices: ['cpu'] });
});
afterAll(async () => {
  await engine.close();
});

const GREEDY = { numBeams: 1, doSample: false, noRepeatNgramSize: 0 } as const;

function ordered(r: GenerationResult): void {
  const { queuedMs, firstTokenMs, totalMs } = r.timings;
  expect(queuedMs).toBeGreaterThanOrEqual(0);
  expect(firstTokenMs).toBeGreaterThanOrEqual(queuedMs);
  expect(totalMs).toBeGreaterThanOrEqual(firstTokenMs);
}

describe('timings', () => {
  it('queuedMs is the time before the request got a place in the batch: short when it did at once, long when it waited', async () => {
    // Same order key: the second waits in the queue until the first is done.
    const long = { ...GREEDY, maxNewTokens: 60, minNewTokens: 60 };
    const first = engine.generate({ context: ['tell me a long story'], options: long, orderKey: 'k' });
    const second = engine.generate({ context: ['and another one'], options: { ...GREEDY, maxNewTokens: 4 }, orderKey: 'k' });
    const [a, b] = await Promise.all([first.result, second.result]);
    ordered(a);
    ordered(b);
    // The first went into the batch at once: its queue time is a small part of the whole (60 decoder steps).
    expect(a.timings.queuedMs).toBeLessThan(a.timings.totalMs / 2);
    expect(a.timings.queuedMs).toBeLessThan(a.timings.firstTokenMs);
    // The second waited for all of the first: most of its time was in the queue.
    expect(b.timings.queuedMs).toBeGreaterThan(a.timings.totalMs - a.timings.queuedMs - 1);
    expect(b.timings.queuedMs).toBeLessThan(b.timings.totalMs);
  });

  it('firstTokenMs is when the first text reached the caller, measured from generate()', async () => {
    const context = ['what do you see over there?'];
    const options = { ...GREEDY, maxNewTokens: 60, minNewTokens: 60 };
    const plain = await engine.generate({ context, options }).result;
    expect(plain.text.length).toBeGreaterThan(10);
    // A stop string that the first two thirds of the reply could begin: that text is held back (it could be the
    // start of the stop string) until the reply goes another way, many decoder steps after the first token.
    // The same context again also reuses its prefill, so the first token itself is picked at once.
    const held = Math.floor((plain.text.length * 2) / 3);
    const stop = `${plain.text.slice(0, held)}\u0000`;
    let firstAt: number | undefined;
    let firstText = '';
    const t0 = performance.now();
    const g = engine.generate({ context, options: { ...options, stopStrings: [stop] } });
    g.on('token', (text) => {
      if (firstAt === undefined) {
        firstAt = performance.now() - t0;
        firstText = text;
      }
    });
    const r = await g.result;
    expect(r.text).toBe(plain.text);
    expect(firstText.length).toBeGreaterThan(held); // the first text came out after the held part
    ordered(r);
    // What the caller saw first and what the result says agree (to the synchronous code between them).
    expect(r.timings.firstTokenMs).toBeLessThanOrEqual(firstAt! + 0.05);
    expect(r.timings.firstTokenMs).toBeGreaterThan(firstAt! - 0.5);
  });

  it('timings count from generate(), the prompt formatting included; a request with no text has firstTokenMs = totalMs', async () => {
    const turns = Array.from({ length: 40 }, (_, i) => `turn number ${i} of a long conversation about many things`);
    const t0 = performance.now();
    const r = await engine.generate({ context: turns, options: { ...GREEDY, maxNewTokens: 2 } }).result;
    const wall = performance.now() - t0;
    ordered(r);
    expect(r.timings.totalMs).toBeLessThanOrEqual(wall + 0.05);
    expect(r.timings.totalMs).toBeGreaterThan(wall - 1);
    const controller = new AbortController();
    controller.abort();
    const aborted = await engine.generate({ context: ['hello'], options: GREEDY, signal: controller.signal }).result;
    expect(aborted.finishReason).toBe('aborted');
    expect(aborted.timings.firstTokenMs).toBe(aborted.timings.totalMs);
  });
});
