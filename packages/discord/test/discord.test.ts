// The real discord.js client against the local fake Discord: replies, streaming, splitting, addressing, routing,
// history, rate limits and failures.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DEFAULT_APOLOGY } from '@vikdf/adapter-kit';
import type { DiscordBot } from '../src/index.js';
import { FakeDiscord, type Payload } from './fake-discord.js';
import { ScriptedResponder, startBot, type BotEvents } from './helpers.js';

let fake: FakeDiscord;
let bot: DiscordBot | undefined;
beforeEach(async () => {
  fake = await FakeDiscord.start();
});
afterEach(async () => {
  await bot?.stop();
  bot = undefined;
  await fake.close();
});

async function start(options: Parameters<typeof startBot>[1] = {}): Promise<BotEvents> {
  const started = await startBot(fake, options);
  bot = started.bot;
  return started.events;
}

const sends = (channel: string) => fake.requestsTo('POST', new RegExp(`^/channels/${channel}/messages$`)).filter((r) => r.status === 200);
const edits = (channel: string) => fake.requestsTo('PATCH', new RegExp(`^/channels/${channel}/messages/\\d+$`)).filter((r) => r.status === 200);
const fenceCount = (text: string) => (text.match(/^```/gm) ?? []).length;

describe('DiscordBot', () => {
  it('logs in through the gateway with the intents it needs', async () => {
    await start();
    const identify = fake.received.find((f) => f.op === 2)!.d as { token: string; intents: number };
    expect(identify.token).toBe(fake.token);
    const bits = [0, 9, 12, 15]; // Guilds, GuildMessages, DirectMessages, MessageContent
    for (const bit of bits) expect(identify.intents & (1 << bit)).not.toBe(0);
    expect(bot!.client.user!.id).toBe(fake.bot.id);
    expect(bot!.client.guilds.cache.has(fake.guildId)).toBe(true);
  });

  it('answers a mention with a reply streamed through edits', async () => {
    const responder = new ScriptedResponder(() => undefined);
    const events = await start({ responder });
    const question = fake.mention(fake.general, 'tell me a story');
    const call = await responder.call(0);
    expect(call.message.text).toBe('tell me a story');
    expect(call.message.addressedBy).toBe('mention');
    expect(call.conversation).toEqual({ platform: 'discord', channelId: fake.general, isDM: false });

    call.feed.push('Once');
    await fake.until(() => sends(fake.general).length === 1, 'the first message');
    expect(sends(fake.general)[0]!.body).toMatchObject({
      content: 'Once',
      message_reference: { message_id: question.id },
      allowed_mentions: { parse: [] },
    });
    call.feed.push(' upon');
    await fake.until(() => edits(fake.general).length === 1, 'an edit');
    call.feed.push(' a time.').end();
    await vi.waitFor(() => expect(events.replied).toHaveLength(1));
    expect(edits(fake.general).map((r) => r.body!.content)).toEqual(['Once upon', 'Once upon a time.']);
    expect(fake.botMessages(fake.general).map((m) => m.content)).toEqual(['Once upon a time.']);
    expect(fake.requestsTo('POST', new RegExp(`^/channels/${fake.general}/typing$`)).length).toBeGreaterThan(0);
    expect(events.replied[0]).toEqual({ id: question.id, text: 'Once upon a time.' });
    expect(events.errors).toEqual([]);
  });

  it('edits at most once per second by default', async () => {
    const responder = new ScriptedResponder(() => undefined);
    await start({ responder, editIntervalMs: undefined });
    fake.mention(fake.general, 'go');
    const call = await responder.call(0);
    call.feed.push('a');
    await fake.until(() => sends(fake.general).length === 1, 'the first message');
    call.feed.push('b');
    call.feed.push('c').end();
    await fake.until(() => edits(fake.general).length === 1, 'the edit');
    // One edit for both chunks, no sooner than a second after the message was sent.
    expect(edits(fake.general)[0]!.body!.content).toBe('abc');
    expect(edits(fake.general)[0]!.at - sends(fake.general)[0]!.at).toBeGreaterThanOrEqual(950);
  });

  it('splits a long reply into messages of at most 2000 characters, code fences intact, the first one a reply', async () => {
    const code = Array.from({ length: 90 }, (_, i) => `    result.append(transform(items[${i}], weight=${i}))`).join('\n');
    const prose = 'The knowledge vectors summarise what the dialogue evokes. '.repeat(30);
    const long = `${prose}\n\n\`\`\`python\ndef run(items):\n    result = []\n${code}\n    return result\n\`\`\`\n\n${prose}`;
    const responder = new ScriptedResponder((_t, feed) => {
      for (let i = 0; i < long.length; i += 97) feed.push(long.slice(i, i + 97));
      feed.end();
    });
    const events = await start({ responder });
    const question = fake.mention(fake.general, 'write the code');
    await vi.waitFor(() => expect(events.replied).toHaveLength(1), { timeout: 15_000 });
    const shown = fake.botMessages(fake.general).map((m) => String(m.content));
    expect(long.length).toBeGreaterThan(6000);
    expect(shown.length).toBeGreaterThanOrEqual(4);
    for (const m of shown) {
      expect(m.length).toBeLessThanOrEqual(2000);
      expect(fenceCount(m) % 2).toBe(0);
    }
    // Every message holding code opens the python fence; the code survives whole and in order.
    for (const m of shown.filter((s) => s.includes('result.append'))) expect(m).toMatch(/```python\n/);
    expect(shown.join('\n').split('\n').filter((l) => l.includes('result.append'))).toEqual(code.split('\n'));
    // No word was cut: the prose words all come back.
    const words = (s: string) => s.replace(/```python|```/g, ' ').split(/\s+/).filter(Boolean);
    expect(words(shown.join(' '))).toEqual(words(long));
    const withReference = sends(fake.general).filter((r) => r.body!.message_reference);
    expect(withReference).toHaveLength(1);
    expect(withReference[0]!.body!.message_reference).toMatchObject({ message_id: question.id });
    expect(fake.requestsTo('POST', /messages$/).every((r) => r.status === 200)).toBe(true);
  });

  it('answers DMs without a mention, and not when DMs are off', async () => {
    const responder = new ScriptedResponder();
    const events = await start({ responder });
    fake.post({ channel: fake.dm, author: fake.alice, content: 'hello in private' });
    await vi.waitFor(() => expect(events.replied).toHaveLength(1));
    expect(responder.calls[0]!.message.addressedBy).toBe('dm');
    expect(responder.calls[0]!.conversation).toEqual({ platform: 'discord', channelId: fake.dm, isDM: true });
    expect(fake.botMessages(fake.dm).map((m) => m.content)).toEqual(['echo: hello in private']);

    await bot!.stop();
    const closed = await start({ responder, policy: { allowDMs: false } });
    const dm = fake.post({ channel: fake.dm, author: fake.alice, content: 'still there?' });
    await vi.waitFor(() => expect(closed.ignored).toContainEqual({ id: dm.id, reason: 'dm-disabled' }));
    expect(responder.calls).toHaveLength(1);
  });

  it('ignores other bots and itself', async () => {
    const responder = new ScriptedResponder();
    const events = await start({ responder });
    const fromBot = fake.post({ channel: fake.general, author: fake.otherBot, content: `<@${fake.bot.id}> hi`, mentions: [fake.bot] });
    await vi.waitFor(() => expect(events.ignored).toContainEqual({ id: fromBot.id, reason: 'bot' }));
    fake.mention(fake.general, 'hi');
    await vi.waitFor(() => expect(events.replied).toHaveLength(1));
    // Discord echoes the bot's own reply through the gateway: ignored as its own.
    const own = fake.botMessages(fake.general)[0]!;
    await vi.waitFor(() => expect(events.ignored).toContainEqual({ id: own.id, reason: 'self' }));
    expect(responder.calls).toHaveLength(1);
  });

  it('answers replies to its messages, ignores unaddressed ones, and strips its mention', async () => {
    const responder = new ScriptedResponder();
    const events = await start({ responder });
    fake.post({ channel: fake.general, author: fake.alice, content: `<@${fake.bot.id}> ask <@${fake.bob.id}>`, mentions: [fake.bot, fake.bob] });
    await vi.waitFor(() => expect(events.replied).toHaveLength(1));
    expect(responder.calls[0]!.message.text).toBe('ask @bob');
    const answer = fake.botMessages(fake.general)[0]!;
    fake.post({ channel: fake.general, author: fake.alice, content: 'and then?', replyTo: answer, mentions: [fake.bot] });
    await vi.waitFor(() => expect(events.replied).toHaveLength(2));
    expect(responder.calls[1]!.message.addressedBy).toBe('reply');
    const chatter = fake.post({ channel: fake.general, author: fake.bob, content: 'just talking' });
    await vi.waitFor(() => expect(events.ignored).toContainEqual({ id: chatter.id, reason: 'not-addressed' }));
    expect(responder.calls).toHaveLength(2);
  });

  it('keeps to its channel allow-list, threads counting by their channel', async () => {
    const responder = new ScriptedResponder();
    const events = await start({ responder, policy: { allowChannels: [fake.general] }, historyLimit: 0 });
    const elsewhere = fake.mention(fake.random, 'hello?');
    await vi.waitFor(() => expect(events.ignored).toContainEqual({ id: elsewhere.id, reason: 'channel-not-allowed' }));
    fake.mention(fake.thread, 'in the thread');
    fake.mention(fake.general, 'in general');
    await vi.waitFor(() => expect(events.replied).toHaveLength(2));
    expect(fake.botMessages(fake.random)).toEqual([]);
    expect(fake.botMessages(fake.thread).map((m) => m.content)).toEqual(['echo: in the thread']);
    expect(fake.botMessages(fake.general).map((m) => m.content)).toEqual(['echo: in general']);
  });

  it('gives the thread history, starter message first, as context on first contact only', async () => {
    const responder = new ScriptedResponder();
    const events = await start({ responder });
    fake.post({ channel: fake.general, author: fake.alice, content: 'Shall we plan the trip?', id: fake.thread, dispatch: false });
    fake.post({ channel: fake.thread, author: fake.bob, content: 'Yes, to the coast', dispatch: false });
    fake.post({ channel: fake.thread, author: fake.alice, content: `or the mountains, <@${fake.bot.id}>?`, mentions: [fake.bot], dispatch: false });
    fake.mention(fake.thread, 'what do you think?');
    await vi.waitFor(() => expect(events.replied).toHaveLength(1));
    expect(responder.calls[0]!.conversation).toEqual({ platform: 'discord', channelId: fake.general, threadId: fake.thread, isDM: false });
    expect(responder.calls[0]!.history).toEqual(['Shall we plan the trip?', 'Yes, to the coast', 'or the mountains, ?']);
    fake.mention(fake.thread, 'and you?');
    await vi.waitFor(() => expect(events.replied).toHaveLength(2));
    expect(responder.calls[1]!.history).toBeUndefined();
    expect(fake.requestsTo('GET', new RegExp(`^/channels/${fake.thread}/messages$`))).toHaveLength(1);
    expect(fake.botMessages(fake.thread)).toHaveLength(2);
  });

  it('waits out 429s and still delivers the whole reply', async () => {
    const responder = new ScriptedResponder(() => undefined);
    const events = await start({ responder });
    fake.rateLimit('POST', new RegExp(`^/channels/${fake.general}/messages$`), 1);
    fake.rateLimit('PATCH', new RegExp(`^/channels/${fake.general}/messages/\\d+$`), 2);
    fake.mention(fake.general, 'busy day');
    const call = await responder.call(0);
    call.feed.push('first part');
    await fake.until(() => sends(fake.general).length === 1, 'the first message');
    call.feed.push(', second part').end();
    await vi.waitFor(() => expect(events.replied).toHaveLength(1));
    const statuses = fake.requests.filter((r) => r.path.startsWith(`/channels/${fake.general}/messages`) && r.method !== 'GET').map((r) => `${r.method} ${r.status}`);
    expect(statuses).toEqual(['POST 429', 'POST 200', 'PATCH 429', 'PATCH 429', 'PATCH 200']);
    expect(fake.botMessages(fake.general).map((m) => m.content)).toEqual(['first part, second part']);
    expect(events.errors).toEqual([]);
  });

  it('turns an engine error into a short apology, not a crash, and keeps answering', async () => {
    const responder = new ScriptedResponder((text, feed) => {
      if (text === 'break') feed.push('Half an ans').fail(new Error('decoder failed'));
      else feed.push('fine').end();
    });
    const events = await start({ responder });
    const question = fake.mention(fake.general, 'break');
    await vi.waitFor(() => expect(fake.botMessages(fake.general)).toHaveLength(2));
    const [partial, apology] = fake.botMessages(fake.general) as [Payload, Payload];
    expect(partial.content).toBe('Half an ans');
    expect(apology.content).toBe(DEFAULT_APOLOGY);
    expect(apology.message_reference).toMatchObject({ message_id: question.id });
    expect(events.errors.map((e) => e.message)).toEqual(['decoder failed']);
    fake.mention(fake.general, 'again');
    await vi.waitFor(() => expect(events.replied).toHaveLength(1));
    expect(fake.botMessages(fake.general).at(-1)!.content).toBe('fine');
  });

  it('answers a redelivered message once', async () => {
    const responder = new ScriptedResponder();
    const events = await start({ responder });
    const question = fake.mention(fake.general, 'once please');
    await vi.waitFor(() => expect(events.replied).toHaveLength(1));
    fake.dispatch('MESSAGE_CREATE', question);
    fake.mention(fake.general, 'next');
    await vi.waitFor(() => expect(events.replied).toHaveLength(2));
    expect(responder.calls.map((c) => c.message.text)).toEqual(['once please', 'next']);
  });

  it('rejects a missing token, and a wrong one at login, with clear errors', async () => {
    const { DiscordBot } = await import('../src/index.js');
    expect(() => new DiscordBot({ token: '', responder: new ScriptedResponder() })).toThrow(/token is required/);
    expect(() => new DiscordBot({ token: 'x' } as never)).toThrow(/exactly one of engine and responder/);
    expect(() => new DiscordBot({ token: 'x', responder: new ScriptedResponder(), historyLimit: 500 })).toThrow(/historyLimit/);
    const wrong = new DiscordBot({ token: 'not-the-token', responder: new ScriptedResponder(), clientOptions: { rest: { api: fake.api } } });
    await expect(wrong.start()).rejects.toThrow(/login failed: An invalid token was provided/);
  });
});
