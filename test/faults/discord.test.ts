// The Discord adapter under faults: the real discord.js client against the local fake Discord of
// packages/discord/test/fake-discord.ts (REST and gateway on 127.0.0.1). The gateway drops while replies stream
// (resumed, or identified afresh when the session cannot be resumed), events are delivered again, edits meet 429s
// and 5xx, a send fails after Discord created the message. What must hold: each question is answered exactly
// once, its reply completed once (one message, the whole text), never twice.
import { afterEach, describe, expect, it } from 'vitest';
import { DiscordBot } from '../../packages/discord/src/index.js';
import { FakeDiscord, type Payload } from '../../packages/discord/test/fake-discord.js';
import { SlowResponder, delay, until } from './support.js';

interface Running {
  fake: FakeDiscord;
  bot: DiscordBot;
  responder: SlowResponder;
  replied: string[];
  errors: Error[];
  /** Ids of the messages an `error` event was about (an apology was sent for them). */
  failed: string[];
  log: string[];
}

const running: Running[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) {
    await r.bot.stop().catch(() => undefined);
    await r.fake.close();
  }
});

async function start(responder: SlowResponder): Promise<Running> {
  const fake = await FakeDiscord.start({ heartbeatIntervalMs: 100 });
  const bot = new DiscordBot({
    token: fake.token,
    responder,
    historyLimit: 0,
    editIntervalMs: 40,
    clientOptions: { rest: { api: fake.api, offset: 0 } },
  });
  const r: Running = { fake, bot, responder, replied: [], errors: [], failed: [], log: [] };
  bot.on('replied', (m) => r.replied.push(m.id));
  bot.on('error', (e, m) => {
    r.errors.push(e);
    if (m) r.failed.push(m.id);
  });
  bot.on('reconnecting', () => r.log.push('reconnecting'));
  bot.on('resumed', () => r.log.push('resumed'));
  running.push(r);
  await bot.start();
  return r;
}

interface Question {
  channel: string;
  text: string;
  message: Payload;
}

function ask(r: Running, channel: string, text: string): Question {
  const { fake } = r;
  const message = channel === fake.dm ? fake.post({ channel, author: fake.alice, content: text }) : fake.mention(channel, text);
  return { channel, text, message };
}

/** The bot's messages that answer `q` (replies referring to it). */
function answersTo(r: Running, q: Question): Payload[] {
  return r.fake.botMessages(q.channel).filter((m) => (m.message_reference as { message_id?: string } | undefined)?.message_id === q.message.id);
}

/** Each question answered once: one reply message holding the whole text, one `replied`; no apology, no error. */
function expectAnsweredOnce(r: Running, questions: Question[]): void {
  for (const q of questions) {
    expect(answersTo(r, q).map((m) => m.content), q.text).toEqual([r.responder.textFor(q.text)]);
    expect(r.replied.filter((id) => id === q.message.id), q.text).toHaveLength(1);
  }
  const channels = [...new Set(questions.map((q) => q.channel))];
  const botMessages = channels.flatMap((c) => r.fake.botMessages(c));
  expect(botMessages).toHaveLength(questions.length); // nothing else: no duplicate, no apology
  expect(r.errors).toEqual([]);
}

/** Waits until each question was answered, or failed (then the checks after it say how). */
async function allAnswered(r: Running, questions: Question[], timeoutMs = 20_000): Promise<void> {
  const ended = (id: string) => r.replied.includes(id) || r.failed.includes(id);
  await until(() => questions.every((q) => ended(q.message.id)), `${questions.length} replies`, timeoutMs);
  await delay(300); // time for a wrong second answer to show
}

describe('Discord adapter under faults', () => {
  it('a gateway drop while replies stream: resumed, replayed events answered, redeliveries ignored, every reply completed once', async () => {
    const r = await start(new SlowResponder(10, 100));
    const { fake } = r;
    const questions = [fake.general, fake.random, fake.thread, fake.dm].map((c, i) => ask(r, c, `question ${i}`));
    await fake.until(() => questions.every((q) => answersTo(r, q).length === 1), 'every reply begun');

    fake.dropConnection();
    expect(r.responder.calls.filter((c) => c.finished).length).toBeLessThan(questions.length); // the drop lands mid-stream
    const meanwhile = ask(r, fake.general, 'said during the drop'); // replayed by the resume
    await fake.until(() => fake.gateway.resumes === 1, 'a resume');
    // Discord may deliver an event again (a replay from an older sequence): the same messages once more.
    for (const q of [...questions, meanwhile]) fake.dispatch('MESSAGE_CREATE', q.message);
    const after = ask(r, fake.random, 'after the resume');
    const all = [...questions, meanwhile, after];
    await allAnswered(r, all);

    expectAnsweredOnce(r, all);
    expect(r.log).toContain('resumed');
    expect(fake.gateway.identifies).toBe(1);
    expect(r.responder.calls).toHaveLength(all.length);
  });

  it('a gateway drop that cannot be resumed: identified afresh, replies in flight completed once, later questions answered', async () => {
    const r = await start(new SlowResponder(10, 100));
    const { fake } = r;
    const questions = [fake.general, fake.thread, fake.dm].map((c, i) => ask(r, c, `question ${i}`));
    await fake.until(() => questions.every((q) => answersTo(r, q).length === 1), 'every reply begun');
    fake.denyResume = true;
    fake.dropConnection();
    expect(r.responder.calls.filter((c) => c.finished).length).toBeLessThan(questions.length); // the drop lands mid-stream
    await fake.until(() => fake.gateway.identifies === 2 && fake.connected, 'a second identify', 20_000);
    await until(() => r.bot.client.isReady(), 'the client ready again');
    const after = ask(r, fake.general, 'new session');
    const all = [...questions, after];
    await allAnswered(r, all);
    expectAnsweredOnce(r, all);
  });

  it('429s and 5xx on edits (some beyond discord.js retries, one after the edit took effect): every reply completed once', async () => {
    const r = await start(new SlowResponder(12, 50));
    const { fake } = r;
    const edits = /^\/channels\/\d+\/messages\/\d+$/;
    fake.rateLimit('PATCH', edits, 2, 0.1);
    fake.failNext('PATCH', edits, 500, 2); // retried by discord.js
    fake.failNext('PATCH', edits, 503, 1, { afterEffect: true });
    fake.failNext('PATCH', edits, 502, 5); // more than discord.js's 3 retries of one request: the kit tries again
    const questions = [fake.general, fake.random, fake.thread, fake.dm].map((c, i) => ask(r, c, `limited ${i}`));
    await allAnswered(r, questions);

    const failed = fake.requestsTo('PATCH', edits).filter((q) => q.status !== 200).map((q) => q.status);
    expect(failed.sort()).toEqual([429, 429, 500, 500, 502, 502, 502, 502, 502, 503]); // every injected failure met
    expectAnsweredOnce(r, questions);
  });

  it('a send answered 502 after Discord created the message: retried by discord.js, still one message', async () => {
    const r = await start(new SlowResponder(4, 30));
    const { fake } = r;
    fake.failNext('POST', new RegExp(`^/channels/${fake.general}/messages$`), 502, 1, { afterEffect: true });
    const q = ask(r, fake.general, 'post me once');
    await allAnswered(r, [q]);
    expect(fake.requestsTo('POST', /\/messages$/).map((x) => x.status)).toEqual([502, 200]);
    expectAnsweredOnce(r, [q]);
  });
});
