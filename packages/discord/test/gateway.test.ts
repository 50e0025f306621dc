// The gateway side: heartbeats, and a bot that keeps answering across dropped connections, reconnect requests
// and sessions that cannot be resumed.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { DiscordBot } from '../src/index.js';
import { FakeDiscord } from './fake-discord.js';
import { ScriptedResponder, startBot, type BotEvents } from './helpers.js';

let fake: FakeDiscord;
let bot: DiscordBot | undefined;
let events: BotEvents;
beforeEach(async () => {
  fake = await FakeDiscord.start({ heartbeatIntervalMs: 100 });
  const started = await startBot(fake, { responder: new ScriptedResponder(), historyLimit: 0 });
  bot = started.bot;
  events = started.events;
});
afterEach(async () => {
  await bot?.stop();
  await fake.close();
});

async function askAndExpectAnswer(text: string): Promise<void> {
  const before = events.replied.length;
  const question = fake.mention(fake.general, text);
  await vi.waitFor(() => expect(events.replied.length).toBe(before + 1), { timeout: 15_000 });
  expect(events.replied.at(-1)).toEqual({ id: question.id, text: `echo: ${text}` });
}

describe('DiscordBot gateway', () => {
  it('heartbeats, and the fake acknowledges', async () => {
    await fake.until(() => fake.gateway.heartbeats >= 2, 'two heartbeats');
    await vi.waitFor(() => expect(bot!.client.ws.ping).toBeGreaterThanOrEqual(0));
  });

  it('resumes after a dropped connection and answers what was said meanwhile', async () => {
    await askAndExpectAnswer('before the drop');
    fake.dropConnection();
    const meanwhile = fake.mention(fake.general, 'while you were away'); // replayed on resume
    await fake.until(() => fake.gateway.resumes === 1, 'a resume');
    await vi.waitFor(() => expect(events.replied.map((r) => r.id)).toContain(meanwhile.id), { timeout: 15_000 });
    expect(events.log).toContain('resumed');
    expect(fake.gateway.identifies).toBe(1);
    await askAndExpectAnswer('after the drop');
    expect(fake.botMessages(fake.general)).toHaveLength(3); // nothing answered twice
  });

  it('reconnects when Discord asks it to', async () => {
    fake.requestReconnect();
    await fake.until(() => fake.gateway.connections === 2 && fake.gateway.resumes === 1, 'a resumed second connection');
    await askAndExpectAnswer('still there?');
  });

  it('identifies afresh when the session cannot be resumed', async () => {
    fake.denyResume = true;
    fake.dropConnection();
    await fake.until(() => fake.gateway.identifies === 2, 'a second identify', 20_000);
    await vi.waitFor(() => expect(bot!.client.isReady()).toBe(true));
    await askAndExpectAnswer('new session');
  });
});
