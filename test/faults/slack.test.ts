// The Slack adapter under faults: the real bolt App (Socket Mode) against the local fake Slack of
// packages/slack/test/fake-slack.ts. A Socket Mode connection dropped while replies stream (and a delivery whose
// ack was lost with it), redelivery storms (retries, the same message as two events, a retry minutes later), and
// 429s and 5xx on chat.update. What must hold: each message is answered exactly once, its reply completed once
// (one message, the whole text), never twice.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Engine } from '../../packages/core/dist/index.js';
import { SlackBot, type SlackBotOptions } from '../../packages/slack/src/index.js';
import { FakeSlack, eventCallback, userTs } from '../../packages/slack/test/fake-slack.js';
import { SlowResponder, delay, tinyBundle, until } from './support.js';

const BOT_TOKEN = 'xoxb-test-token'; // the fake's default
const APP_TOKEN = 'xapp-test-token';
const CHANNEL = 'C0GENERAL';

/** Keeps the warnings and errors bolt and the bot log (bolt's Logger interface). */
class QuietLogger {
  readonly lines: string[] = [];
  debug(): void {}
  info(): void {}
  warn(...msg: unknown[]): void {
    this.lines.push(`warn ${msg.map(String).join(' ')}`);
  }
  error(...msg: unknown[]): void {
    this.lines.push(`error ${msg.map(String).join(' ')}`);
  }
  setLevel(): void {}
  getLevel() {
    return 'warn' as never;
  }
  setName(): void {}
}

interface Running {
  fake: FakeSlack;
  bot: SlackBot;
  logger: QuietLogger;
  /** Message ids in the order the bot reported them answered (`replied`), and its errors. */
  replied: string[];
  errors: Error[];
  ignored: { id: string; reason: string }[];
}

const running: Running[] = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const r of running.splice(0)) {
    await r.bot.stop({ mode: 'cancel' }).catch(() => undefined);
    await r.fake.close();
  }
});

async function start(options: Partial<SlackBotOptions>): Promise<Running> {
  const fake = await FakeSlack.start();
  const logger = new QuietLogger();
  const bot = new SlackBot({
    botToken: BOT_TOKEN,
    appToken: APP_TOKEN,
    slackApiUrl: fake.apiUrl,
    // The Web API client's own retries, quick: 429s wait their Retry-After, 5xx are retried with a back-off.
    clientOptions: { retryConfig: { retries: 4, factor: 1, minTimeout: 30, maxTimeout: 60, randomize: false } },
    socketMode: { clientPingTimeout: 300 }, // also the reconnect delay after a drop
    editIntervalMs: 40,
    logger,
    ...options,
  });
  const r: Running = { fake, bot, logger, replied: [], errors: [], ignored: [] };
  bot.on('replied', (m) => r.replied.push(m.id));
  bot.on('error', (e) => r.errors.push(e));
  bot.on('ignored', (m, reason) => r.ignored.push({ id: m.id, reason }));
  running.push(r);
  await bot.start();
  return r;
}

function mentionBody(fake: FakeSlack, ts: string, text: string, eventId?: string) {
  return eventCallback(
    { type: 'app_mention', channel: CHANNEL, user: 'UALICE', ts, text: `<@${fake.botUserId}> ${text}` },
    eventId === undefined ? {} : { eventId },
  );
}

/** The same channel message as a `message.channels` event (its own event id). */
function channelMessageBody(fake: FakeSlack, ts: string, text: string) {
  return eventCallback({ type: 'message', channel: CHANNEL, channel_type: 'channel', user: 'UALICE', ts, text: `<@${fake.botUserId}> ${text}` });
}

/** Each message answered once: one reply message in its thread, holding the whole reply, and one `replied`. */
function expectAnsweredOnce(r: Running, questions: { ts: string; text: string }[], replyText: (text: string) => string): void {
  for (const q of questions) {
    const inThread = r.fake.postedIn(CHANNEL, q.ts);
    expect(inThread.map((m) => m.text), `thread ${q.ts}`).toEqual([replyText(q.text)]);
    expect(r.replied.filter((id) => id === q.ts), `replied ${q.ts}`).toHaveLength(1);
  }
  expect(r.fake.callsTo('chat.postMessage').filter((c) => c.status === 200)).toHaveLength(questions.length);
  expect(r.errors).toEqual([]);
  expect(r.fake.strayAcks).toEqual([]);
}

describe('Slack adapter under faults', () => {
  it('a Socket Mode drop while replies stream: each reply completes once; a delivery whose ack was lost is redelivered and answered once', async () => {
    const responder = new SlowResponder(10, 100);
    const r = await start({ responder });
    const { fake } = r;
    const questions = Array.from({ length: 6 }, (_, i) => ({ ts: userTs(), text: `question ${i}` }));
    const bodies = new Map(questions.map((q) => [q.ts, mentionBody(fake, q.ts, q.text)]));
    const envelopes = questions.map((q) => fake.sendEvent(bodies.get(q.ts)!));
    await Promise.all(envelopes.map((e) => fake.waitForAck(e)));
    await fake.until(() => fake.posted.length === questions.length); // every reply has begun

    // One more delivery, and the connection dies with it: Slack cannot know whether it arrived.
    const lostAck = { ts: userTs(), text: 'question lost ack' };
    questions.push(lostAck);
    bodies.set(lostAck.ts, mentionBody(fake, lostAck.ts, lostAck.text));
    const first = fake.socket;
    fake.sendEvent(bodies.get(lostAck.ts)!);
    fake.dropConnection();
    expect(responder.calls.filter((c) => c.finished).length).toBeLessThan(6); // the drop lands mid-stream

    // Reconnected: Slack redelivers what it is unsure of (retry_attempt 1, new envelopes), here every event.
    await fake.connections.waitFor((ws) => ws !== first);
    const redelivered = questions.map((q) => fake.sendEvent(bodies.get(q.ts)!, { retryAttempt: 1 }));
    await Promise.all(redelivered.map((e) => fake.waitForAck(e)));
    await until(() => r.replied.length + r.errors.length >= questions.length, 'every reply complete (or failed)', 15_000);
    await delay(300); // time for a wrong second answer to show

    expectAnsweredOnce(r, questions, (t) => responder.textFor(t));
    expect(responder.calls.map((c) => c.id).sort()).toEqual(questions.map((q) => q.ts).sort());
    expect(fake.callsTo('apps.connections.open')).toHaveLength(2);
  });

  it('a redelivery storm (retries, the same message as two events, interleaved with streaming) answered once each, by the tiny engine', async () => {
    const engine = await Engine.load(tinyBundle, { devices: ['cpu'] });
    try {
      const r = await start({ engine, generation: { numBeams: 1, doSample: false, maxNewTokens: 24, minNewTokens: 8 } });
      const { fake } = r;
      const questions = Array.from({ length: 12 }, (_, i) => ({ ts: userTs(), text: `storm ${i}` }));
      // Each message: its app_mention, three retries of it and the same message as message.channels, in a
      // shuffled order over a second and a half (some while its reply streams, some after).
      const deliveries: { body: Record<string, unknown>; retryAttempt: number }[] = [];
      for (const q of questions) {
        const body = mentionBody(fake, q.ts, q.text);
        deliveries.push({ body, retryAttempt: 0 });
        for (let attempt = 1; attempt <= 3; attempt++) deliveries.push({ body, retryAttempt: attempt });
        deliveries.push({ body: channelMessageBody(fake, q.ts, q.text), retryAttempt: 0 });
      }
      shuffle(deliveries, 7);
      const envelopes: string[] = [];
      for (const d of deliveries) {
        envelopes.push(fake.sendEvent(d.body, { retryAttempt: d.retryAttempt }));
        await delay(25);
      }
      await Promise.all(envelopes.map((e) => fake.waitForAck(e)));
      await until(() => r.replied.length + r.errors.length >= questions.length, 'every question answered (or failed)', 20_000);
      await delay(300);

      for (const q of questions) {
        const inThread = fake.postedIn(CHANNEL, q.ts);
        expect(inThread, `thread ${q.ts}`).toHaveLength(1);
        expect(inThread[0]!.text.length).toBeGreaterThan(0);
        expect(r.replied.filter((id) => id === q.ts)).toHaveLength(1);
      }
      expect(fake.callsTo('chat.postMessage')).toHaveLength(questions.length);
      expect(r.ignored.filter((i) => /duplicate/.test(i.reason))).toHaveLength(deliveries.length - questions.length);
      expect(r.errors).toEqual([]);
      expect(fake.strayAcks).toEqual([]);
    } finally {
      for (const x of running.splice(0)) {
        await x.bot.stop({ mode: 'cancel' });
        await x.fake.close();
      }
      await engine.close();
    }
  });

  it("Slack's last retry, minutes after the first delivery, is still recognised as a redelivery", async () => {
    // Slack retries a delivery it saw fail up to three times: nearly at once, after one minute, after five
    // minutes (the Events API's documented schedule). The last one can come more than five minutes after the
    // first; it must not be answered again.
    vi.useFakeTimers({ toFake: ['Date'] });
    const responder = new SlowResponder(2, 10);
    const r = await start({ responder });
    const { fake } = r;
    const q = { ts: userTs(), text: 'answer me once' };
    const body = mentionBody(fake, q.ts, q.text);
    await fake.waitForAck(fake.sendEvent(body));
    await until(() => r.replied.length === 1, 'the first answer');
    for (const [attempt, minutesLater] of [
      [1, 0],
      [2, 1],
      [3, 6],
    ] as const) {
      vi.setSystemTime(Date.now() + minutesLater * 60_000);
      await fake.waitForAck(fake.sendEvent(body, { retryAttempt: attempt }));
    }
    // The same message as message.channels, first seen only at the last retry.
    await fake.waitForAck(fake.sendEvent(channelMessageBody(fake, q.ts, q.text), { retryAttempt: 3 }));
    await delay(300);
    expectAnsweredOnce(r, [q], (t) => responder.textFor(t));
    expect(responder.calls).toHaveLength(1);
  });

  it('429s and 5xx on chat.update: every reply completed once, in one message, with its whole text', async () => {
    const responder = new SlowResponder(12, 50);
    const r = await start({ responder });
    const { fake } = r;
    // Rate limited twice (Retry-After 1 s), three 5xx, one of them after the edit took effect.
    fake.failNext('chat.update', 429, 2, { retryAfter: 1 });
    fake.failNext('chat.update', 500, 2);
    fake.failNext('chat.update', 503, 1, { afterEffect: true });
    const questions = Array.from({ length: 5 }, (_, i) => ({ ts: userTs(), text: `limited ${i}` }));
    for (const q of questions) fake.sendEvent(mentionBody(fake, q.ts, q.text));
    await until(() => r.replied.length + r.errors.length >= questions.length, 'every reply complete (or failed)', 20_000);
    await delay(200);

    const failed = fake.callsTo('chat.update').filter((c) => c.status !== 200).map((c) => c.status);
    expect(failed.sort()).toEqual([429, 429, 500, 500, 503]); // every injected failure was met
    expectAnsweredOnce(r, questions, (t) => responder.textFor(t));
  });

  it('chat.update failing for longer than the client retries: the reply still ends complete, once', async () => {
    const responder = new SlowResponder(12, 50);
    const r = await start({ responder });
    const { fake } = r;
    const q = { ts: userTs(), text: 'through an outage' };
    fake.sendEvent(mentionBody(fake, q.ts, q.text));
    await fake.until(() => fake.posted.length === 1);
    fake.failNext('chat.update', 502, 6); // more than the client's 4 retries of one call
    await until(() => r.replied.length + r.errors.length >= 1, 'the reply to end (or fail)', 20_000);
    await delay(300);
    expect(fake.callsTo('chat.update').filter((c) => c.status === 502)).toHaveLength(6); // the outage was met
    expectAnsweredOnce(r, [q], (t) => responder.textFor(t));
  });
});

/** Deterministic Fisher-Yates. */
function shuffle<T>(items: T[], seed: number): void {
  let s = seed;
  for (let i = items.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2147483648;
    const j = s % (i + 1);
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
}
