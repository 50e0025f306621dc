import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { EDIT_RETRIES, StreamingReply } from '../src/index.js';
import { Feed, RecordingOutbox } from './helpers.js';

beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
});
afterEach(() => {
  vi.useRealTimers();
});

const tick = (ms = 0) => vi.advanceTimersByTimeAsync(ms);

describe('StreamingReply', () => {
  it('sends the first text at once, then edits at most once per interval, and flushes the end', async () => {
    const outbox = new RecordingOutbox();
    const feed = new Feed();
    const run = new StreamingReply(outbox, { editIntervalMs: 1000, replyTo: 'q1' }).run(feed);

    feed.push('Hello');
    await tick();
    expect(outbox.writes).toEqual([{ op: 'send', id: 'm1', text: 'Hello', replyTo: 'q1', at: 0 }]);

    feed.push(' wor');
    await tick(400);
    feed.push('ld');
    await tick(500);
    expect(outbox.writes).toHaveLength(1); // 900 ms after the send: no edit yet
    await tick(100);
    expect(outbox.writes[1]).toMatchObject({ op: 'edit', id: 'm1', text: 'Hello world', at: 1000 });

    // A burst of chunks within one interval becomes one edit.
    for (const c of [',', ' how', ' are', ' you', '?']) {
      feed.push(c);
      await tick(150);
    }
    await tick(1000);
    expect(outbox.writes.filter((w) => w.op === 'edit').map((w) => w.text)).toEqual(['Hello world', 'Hello world, how are you?']);

    feed.push(' Fine.');
    feed.end();
    await tick(1000);
    const result = await run;
    expect(result).toEqual({ text: 'Hello world, how are you? Fine.', messages: [{ id: 'm1' }] });
    expect(outbox.messages()).toEqual(['Hello world, how are you? Fine.']);
    const starts = outbox.writes.map((w) => w.at);
    for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBeGreaterThanOrEqual(1000);
    expect(outbox.writes.slice(1).every((w) => w.replyTo === undefined)).toBe(true);
  });

  it('never starts an edit before the previous write finished', async () => {
    const outbox = new RecordingOutbox();
    outbox.hold = true;
    const feed = new Feed();
    const run = new StreamingReply(outbox, { editIntervalMs: 100 }).run(feed);
    feed.push('one');
    await tick();
    expect(outbox.waiting).toBe(1);
    feed.push(' two');
    await tick(5000); // the platform is slow: the send is still in flight
    expect(outbox.waiting).toBe(1);
    expect(outbox.writes).toHaveLength(0);
    outbox.release();
    await tick(100);
    expect(outbox.waiting).toBe(1); // now the edit, alone
    feed.push(' three');
    feed.end();
    await tick(5000);
    expect(outbox.waiting).toBe(1);
    outbox.release();
    await tick(100);
    outbox.release();
    outbox.hold = false;
    outbox.release();
    await tick(200);
    await run;
    expect(outbox.overlapped).toBe(false);
    expect(outbox.messages()).toEqual(['one two three']);
  });

  it('continues in new messages past maxLength, closing and reopening a code fence', async () => {
    const outbox = new RecordingOutbox(60);
    const feed = new Feed();
    const run = new StreamingReply(outbox, { editIntervalMs: 1000, replyTo: 'q' }).run(feed);
    const code = Array.from({ length: 14 }, (_, i) => `x${i} = f(${i})`).join('\n');
    const text = `Here you go, a loop in Python:\n\n\`\`\`python\n${code}\n\`\`\`\n\nThat is all for now, friend.`;
    for (let i = 0; i < text.length; i += 5) {
      feed.push(text.slice(i, i + 5));
      await tick(90);
    }
    feed.end();
    await tick(2000);
    const result = await run;
    expect(result.text).toBe(text);
    const shown = outbox.messages();
    expect(shown.length).toBeGreaterThan(3);
    expect(result.messages.map((m) => m.id)).toEqual([...outbox.shown.keys()]);
    for (const m of shown) {
      expect(m.length).toBeLessThanOrEqual(60);
      expect((m.match(/^```/gm) ?? []).length % 2).toBe(0); // fences balance in every message
    }
    const sends = outbox.writes.filter((w) => w.op === 'send');
    expect(sends[0]!.replyTo).toBe('q');
    expect(sends.slice(1).every((w) => w.replyTo === undefined)).toBe(true);
    // The code survives whole and in order, each message that continues it reopening the python fence.
    const lines = shown.join('\n').split('\n').filter((l) => /^x\d+ = /.test(l));
    expect(lines).toEqual(code.split('\n'));
    for (const m of shown.filter((s) => /^x\d+ = /m.test(s)).slice(1)) expect(m.startsWith('```python\n')).toBe(true);
    expect(shown.at(-1)).toMatch(/friend\.$/);
  });

  it('shows a code block that is still open as closed', async () => {
    const outbox = new RecordingOutbox();
    const feed = new Feed();
    const run = new StreamingReply(outbox).run(feed);
    feed.push('Look:\n```js\nlet a');
    await tick();
    expect(outbox.writes[0]!.text).toBe('Look:\n```js\nlet a\n```');
    feed.push(' = 1;\n```\nok');
    feed.end();
    await tick(1000);
    await run;
    expect(outbox.messages()).toEqual(['Look:\n```js\nlet a = 1;\n```\nok']);
  });

  it('pulses typing from the start until the reply is complete', async () => {
    const outbox = new RecordingOutbox();
    const feed = new Feed();
    const run = new StreamingReply(outbox, { typingIntervalMs: 3000 }).run(feed);
    await tick();
    expect(outbox.typings).toEqual([0]);
    await tick(7000);
    expect(outbox.typings).toEqual([0, 3000, 6000]);
    feed.push('done');
    feed.end();
    await tick(1000);
    await run;
    await tick(10_000);
    expect(outbox.typings).toEqual([0, 3000, 6000]);
  });

  it('replaces a placeholder, and says emptyText for a blank reply', async () => {
    const outbox = new RecordingOutbox();
    const feed = new Feed();
    const run = new StreamingReply(outbox, { placeholder: '…', replyTo: 'q', editIntervalMs: 500 }).run(feed);
    await tick();
    expect(outbox.writes).toEqual([{ op: 'send', id: 'm1', text: '…', replyTo: 'q', at: 0 }]);
    feed.push('hi');
    feed.end();
    await tick(500);
    expect(await run).toEqual({ text: 'hi', messages: [{ id: 'm1' }] });
    expect(outbox.writes[1]).toMatchObject({ op: 'edit', id: 'm1', text: 'hi', at: 500 });

    const blank = new RecordingOutbox();
    const blankFeed = new Feed();
    const blankRun = new StreamingReply(blank, { emptyText: '(no reply)', replyTo: 'q' }).run(blankFeed);
    blankFeed.push('  \n ');
    blankFeed.end();
    await tick();
    await blankRun;
    expect(blank.writes).toEqual([{ op: 'send', id: 'm1', text: '(no reply)', replyTo: 'q', at: 500 }]);

    const withPlaceholder = new RecordingOutbox();
    const f3 = new Feed();
    const r3 = new StreamingReply(withPlaceholder, { placeholder: '…', emptyText: '(no reply)' }).run(f3);
    f3.end();
    await tick(1000);
    await r3;
    expect(withPlaceholder.messages()).toEqual(['(no reply)']);

    const silent = new RecordingOutbox();
    const f4 = new Feed();
    const r4 = new StreamingReply(silent).run(f4);
    f4.end();
    await tick();
    expect(await r4).toEqual({ text: '', messages: [] });
    expect(silent.writes).toEqual([]);
  });

  it('rethrows a stream error after what came was shown, and stops typing', async () => {
    const outbox = new RecordingOutbox();
    const feed = new Feed();
    const run = new StreamingReply(outbox, { typingIntervalMs: 1000 }).run(feed);
    const settled = run.catch((e: Error) => e);
    feed.push('partial');
    await tick();
    feed.fail(new Error('engine exploded'));
    await tick();
    expect(await settled).toMatchObject({ message: 'engine exploded' });
    expect(outbox.messages()).toEqual(['partial']);
    const pulses = outbox.typings.length;
    await tick(5000);
    expect(outbox.typings.length).toBe(pulses);
  });

  it('rethrows a platform error that persists, after retrying the edit, and stops reading the stream', async () => {
    const outbox = new RecordingOutbox();
    const edit = vi.spyOn(outbox, 'edit');
    const feed = new Feed();
    const run = new StreamingReply(outbox, { editIntervalMs: 10 }).run(feed);
    const settled = run.catch((e: Error) => e);
    feed.push('a');
    await tick();
    outbox.failEdits = new Error('Missing Permissions');
    feed.push('b');
    await tick(100);
    expect(edit).toHaveBeenCalledTimes(1); // retried after 250, 500 and 1000 ms
    await tick(250 + 500 + 1000);
    expect(await settled).toMatchObject({ message: 'Missing Permissions' });
    expect(edit).toHaveBeenCalledTimes(1 + EDIT_RETRIES);
    expect(feed.returned).toBe(true);
  });

  it('retries a failed edit with the latest text, backing off, and completes the reply in its one message', async () => {
    const outbox = new RecordingOutbox();
    const edit = vi.spyOn(outbox, 'edit');
    const feed = new Feed();
    const run = new StreamingReply(outbox, { editIntervalMs: 100 }).run(feed);
    feed.push('one');
    await tick();
    outbox.failEdits = new Error('HTTP 502');
    feed.push(' two');
    await tick(100); // the edit to "one two" fails
    expect(edit).toHaveBeenCalledTimes(1);
    feed.push(' three');
    feed.end();
    await tick(249);
    expect(edit).toHaveBeenCalledTimes(1); // the retry waits max(editIntervalMs, 250 ms)
    await tick(1); // fails again: the next waits twice as long
    expect(edit).toHaveBeenCalledTimes(2);
    outbox.failEdits = undefined;
    await tick(500);
    expect(await run).toEqual({ text: 'one two three', messages: [{ id: 'm1' }] });
    // The failed edit carried "one two"; each retry the latest text.
    expect(edit.mock.calls.map(([, text]) => text)).toEqual(['one two', 'one two three', 'one two three']);
    expect(outbox.messages()).toEqual(['one two three']);
  });

  it('stops at an abort and flushes what came so far', async () => {
    const outbox = new RecordingOutbox();
    const feed = new Feed();
    const controller = new AbortController();
    const run = new StreamingReply(outbox, { editIntervalMs: 1000, emptyText: 'none' }).run(feed, controller.signal);
    feed.push('so');
    await tick();
    feed.push(' far');
    await tick(100);
    controller.abort();
    feed.push(' and beyond'); // after the abort: not read
    await tick(1000);
    expect(await run).toEqual({ text: 'so far', messages: [{ id: 'm1' }] });
    expect(outbox.messages()).toEqual(['so far']);
    expect(feed.returned).toBe(true);
  });

  it('rejects bad options and a second run', async () => {
    const outbox = new RecordingOutbox();
    expect(() => new StreamingReply({ ...outbox, maxLength: 0, send: outbox.send, edit: outbox.edit })).toThrow(/maxLength/);
    expect(() => new StreamingReply(outbox, { editIntervalMs: -1 })).toThrow(/editIntervalMs/);
    expect(() => new StreamingReply(outbox, { typingIntervalMs: 0 })).toThrow(/typingIntervalMs/);
    expect(() => new StreamingReply(outbox, { placeholder: '  ' })).toThrow(/placeholder/);
    expect(() => new StreamingReply({} as never)).toThrow(/send\(\) and edit\(\)/);
    const reply = new StreamingReply(outbox);
    const feed = new Feed();
    feed.end();
    await reply.run(feed);
    await expect(reply.run(feed)).rejects.toThrow(/one reply/);
    const bad = new StreamingReply(new RecordingOutbox()).run((async function* () {
      yield 42 as unknown as string;
    })());
    await expect(bad).rejects.toThrow(/yielded number/);
  });
});
