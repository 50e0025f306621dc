import { describe, expect, it, vi } from 'vitest';
import { ChatBot, DEFAULT_APOLOGY, type InboundMessage } from '../src/index.js';
import { RecordingOutbox, ScriptedResponder, message } from './helpers.js';

function bot(responder: ScriptedResponder, extra: Partial<ConstructorParameters<typeof ChatBot>[0]> = {}) {
  const b = new ChatBot({ responder, editIntervalMs: 0, ...extra });
  const events: { type: string; args: unknown[] }[] = [];
  b.on('replied', (...args) => events.push({ type: 'replied', args }));
  b.on('ignored', (...args) => events.push({ type: 'ignored', args }));
  b.on('error', (...args) => events.push({ type: 'error', args }));
  return { bot: b, events };
}

const reasons = (events: { type: string; args: unknown[] }[]) => events.filter((e) => e.type === 'ignored').map((e) => e.args[1]);

describe('ChatBot', () => {
  it('answers a mention with a streamed reply that refers to it', async () => {
    const responder = new ScriptedResponder((text) => `you said: ${text}`);
    const { bot: b, events } = bot(responder);
    const outbox = new RecordingOutbox();
    const msg = message({ id: 'q1', text: 'hello there' });
    await b.handle(msg, outbox);
    expect(outbox.messages()).toEqual(['you said: hello there']);
    expect(outbox.writes[0]).toMatchObject({ op: 'send', replyTo: 'q1' });
    expect(responder.calls[0]).toMatchObject({ conversation: msg.conversation, text: 'hello there', history: undefined });
    expect(events).toEqual([{ type: 'replied', args: [msg, { text: 'you said: hello there' }] }]);
  });

  it('ignores what the policy rules out, saying why', async () => {
    const responder = new ScriptedResponder(() => 'x');
    const { bot: b, events } = bot(responder, { policy: { allowChannels: ['c1'] } });
    const outbox = new RecordingOutbox();
    await b.handle(message({ id: '1', author: { id: 'me', name: 'me', isBot: true, isSelf: true } }), outbox);
    await b.handle(message({ id: '2', author: { id: 'b', name: 'b', isBot: true, isSelf: false } }), outbox);
    await b.handle(message({ id: '3', addressedBy: 'none' }), outbox);
    await b.handle(message({ id: '4', channelId: 'c2' }), outbox);
    expect(reasons(events)).toEqual(['self', 'bot', 'not-addressed', 'channel-not-allowed']);
    expect(responder.calls).toHaveLength(0);
    expect(outbox.writes).toHaveLength(0);
  });

  it('answers a redelivered message once', async () => {
    const responder = new ScriptedResponder(() => 'once');
    const { bot: b, events } = bot(responder);
    const outbox = new RecordingOutbox();
    const msg = message({ id: 'dup' });
    await Promise.all([b.handle(msg, outbox), b.handle({ ...msg }, outbox)]);
    await b.handle({ ...msg }, outbox);
    expect(responder.calls).toHaveLength(1);
    expect(outbox.messages()).toEqual(['once']);
    expect(reasons(events)).toEqual(['duplicate', 'duplicate']);
    // The same id in another channel is another message.
    await b.handle(message({ id: 'dup', channelId: 'c2' }), outbox);
    expect(responder.calls).toHaveLength(2);
  });

  it('answers one conversation in order and different conversations together', async () => {
    const responder = new ScriptedResponder(() => 'feed');
    const { bot: b } = bot(responder);
    const outbox = new RecordingOutbox();
    const first = b.handle(message({ id: 'a1', channelId: 'A' }), outbox);
    const second = b.handle(message({ id: 'a2', channelId: 'A' }), outbox);
    const other = b.handle(message({ id: 'b1', channelId: 'B' }), outbox);
    await vi.waitFor(() => expect(responder.calls.map((c) => c.conversation.channelId)).toEqual(['A', 'B']));
    responder.feeds[1]!.push('from B');
    responder.feeds[1]!.end();
    await other; // B finished while A's first reply is still open
    expect(responder.calls).toHaveLength(2);
    responder.feeds[0]!.push('first A');
    responder.feeds[0]!.end();
    await first;
    await vi.waitFor(() => expect(responder.calls).toHaveLength(3));
    responder.feeds[2]!.push('second A');
    responder.feeds[2]!.end();
    await second;
    expect(outbox.messages()).toEqual(['from B', 'first A', 'second A']);
  });

  it('turns an engine error into a short apology and an error event, never a rejection', async () => {
    const responder = new ScriptedResponder((text) => (text === 'boom' ? new Error('decoder failed') : 'fine'));
    const { bot: b, events } = bot(responder);
    const outbox = new RecordingOutbox();
    await expect(b.handle(message({ id: 'x', text: 'boom' }), outbox)).resolves.toBeUndefined();
    expect(outbox.writes).toEqual([expect.objectContaining({ op: 'send', text: DEFAULT_APOLOGY, replyTo: 'x' })]);
    expect(events[0]).toMatchObject({ type: 'error', args: [{ message: 'decoder failed' }, { id: 'x' }] });
    // The conversation goes on.
    await b.handle(message({ id: 'y', text: 'again' }), outbox);
    expect(outbox.messages().at(-1)).toBe('fine');
  });

  it('apologises in its own words, and survives a responder that throws', async () => {
    const throwing = { reply: () => { throw new Error('no model'); } };
    const b = new ChatBot({ responder: throwing, apology: (err) => `Oops (${err.message}).` });
    const errors: Error[] = [];
    b.on('error', (e) => errors.push(e));
    const outbox = new RecordingOutbox();
    await b.handle(message(), outbox);
    expect(outbox.messages()).toEqual(['Oops (no model).']);
    expect(errors.map((e) => e.message)).toEqual(['no model']);
  });

  it('reports a platform failure, including a failed apology, without throwing', async () => {
    const responder = new ScriptedResponder(() => 'text');
    const { bot: b, events } = bot(responder);
    const outbox = new RecordingOutbox();
    outbox.failSends = new Error('Missing Access');
    await b.handle(message(), outbox);
    expect(events.map((e) => [e.type, (e.args[0] as Error).message])).toEqual([
      ['error', 'Missing Access'],
      ['error', 'Missing Access'],
    ]);
    expect(responder.calls[0]!.signal!.aborted).toBe(true); // generation was stopped
  });

  it('fetches history on first contact only, and answers without it when the fetch fails', async () => {
    const responder = new ScriptedResponder(() => 'ok');
    const { bot: b, events } = bot(responder);
    const outbox = new RecordingOutbox();
    const fetchHistory = vi.fn(async () => ['earlier one', '', 'earlier two']);
    await b.handle(message({ id: '1', threadId: 't' }), outbox, fetchHistory);
    await b.handle(message({ id: '2', threadId: 't' }), outbox, fetchHistory);
    expect(fetchHistory).toHaveBeenCalledTimes(1);
    expect(responder.calls.map((c) => c.history)).toEqual([['earlier one', 'earlier two'], undefined]);

    const failing = vi.fn(async () => {
      throw new Error('403');
    });
    await b.handle(message({ id: '3', channelId: 'other' }), outbox, failing);
    expect(responder.calls[2]!.history).toBeUndefined();
    expect(outbox.messages()).toHaveLength(3);
    expect(events.find((e) => e.type === 'error')!.args[0]).toMatchObject({ message: 'history fetch failed: 403' });
  });

  it('asks a responder that can tell whether it knows the conversation', async () => {
    const responder = new ScriptedResponder(() => 'ok');
    const known = new Set<string>();
    const withHas = Object.assign(responder, {
      has: (ref: InboundMessage['conversation']) => known.has(ref.channelId),
    });
    const { bot: b } = bot(withHas);
    const fetchHistory = vi.fn(async () => ['before']);
    await b.handle(message({ id: '1' }), new RecordingOutbox(), fetchHistory);
    await b.handle(message({ id: '2' }), new RecordingOutbox(), fetchHistory); // still unknown: fetched again
    known.add('c1');
    await b.handle(message({ id: '3' }), new RecordingOutbox(), fetchHistory);
    expect(fetchHistory).toHaveBeenCalledTimes(2);
  });

  it('splits a long reply with code at the outbox limit', async () => {
    const code = Array.from({ length: 120 }, (_, i) => `    total += values[${i}] * weights[${i}];`).join('\n');
    const long = `Here is the function.\n\n\`\`\`c\nint dot(void) {\n${code}\n}\n\`\`\`\n\n${'Some closing words. '.repeat(40)}`;
    const responder = new ScriptedResponder(() => long);
    const { bot: b } = bot(responder);
    const outbox = new RecordingOutbox(2000);
    await b.handle(message({ id: 'q' }), outbox);
    const shown = outbox.messages();
    expect(long.length).toBeGreaterThan(5000);
    expect(shown.length).toBeGreaterThanOrEqual(3);
    for (const m of shown) {
      expect(m.length).toBeLessThanOrEqual(2000);
      expect((m.match(/^```/gm) ?? []).length % 2).toBe(0);
    }
    expect(shown.join('\n').split('\n').filter((l) => l.includes('total +='))).toEqual(code.split('\n'));
    expect(outbox.writes.filter((w) => w.replyTo !== undefined).map((w) => w.id)).toEqual(['m1']);
  });

  it('says busy beyond the per-conversation queue, and stops cleanly on close', async () => {
    const responder = new ScriptedResponder(() => 'feed');
    const { bot: b, events } = bot(responder, { maxPendingPerConversation: 1 });
    const outbox = new RecordingOutbox();
    const first = b.handle(message({ id: '1' }), outbox);
    await vi.waitFor(() => expect(responder.calls).toHaveLength(1));
    responder.feeds[0]!.push('partial');
    await vi.waitFor(() => expect(outbox.writes).toHaveLength(1));
    await b.handle(message({ id: '2' }), outbox);
    expect(reasons(events)).toEqual(['busy']);
    await b.close();
    await first;
    expect(responder.calls[0]!.signal!.aborted).toBe(true);
    expect(outbox.messages()).toEqual(['partial']); // no apology, no "(no reply)" on shutdown
    await b.handle(message({ id: '3' }), outbox);
    expect(reasons(events)).toEqual(['busy', 'closed']);
  });

  it('reports a malformed message and bad options clearly', async () => {
    const responder = new ScriptedResponder(() => 'x');
    const { bot: b, events } = bot(responder);
    await b.handle({ id: 1 } as unknown as InboundMessage, new RecordingOutbox());
    expect(events[0]!.type).toBe('error');
    expect((events[0]!.args[0] as Error).message).toMatch(/not an InboundMessage/);
    expect(() => new ChatBot({} as never)).toThrow(/responder/);
    expect(() => new ChatBot({ responder, policy: { respondTo: ['all' as never] } })).toThrow(/respondTo/);
    expect(() => new ChatBot({ responder, editIntervalMs: -5 })).toThrow(/editIntervalMs/);
  });

  it('writes to stderr when nobody listens for errors', async () => {
    const spy = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      const b = new ChatBot({ responder: new ScriptedResponder(() => new Error('quiet failure')), editIntervalMs: 0 });
      await b.handle(message(), new RecordingOutbox());
      expect(spy).toHaveBeenCalledWith(expect.stringContaining('quiet failure'));
    } finally {
      spy.mockRestore();
    }
  });
});
