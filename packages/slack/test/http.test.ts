// SlackBot over the HTTP Events API: a real bolt HTTPReceiver on 127.0.0.1 port 0, signed POSTs, the fake Web API.
import { afterEach, describe, expect, it } from 'vitest';
import { postSigned, userTs } from './fake-slack.js';
import { SIGNING_SECRET, ScriptedResponder, closeAll, deferred, directMessage, mention, repliedTo, startBot, startFake } from './helpers.js';

afterEach(closeAll);

describe('SlackBot over HTTP', () => {
  it('listens on the given host and port 0, and answers url_verification', async () => {
    const fake = await startFake();
    const { bot } = await startBot(fake, { mode: 'http' });
    expect(bot.mode).toBe('http');
    expect(bot.address?.host).toBe('127.0.0.1');
    expect(bot.address?.port).toBeGreaterThan(0);
    expect(bot.url).toBe(`http://127.0.0.1:${bot.address?.port}/slack/events`);
    const res = await postSigned(bot.url as string, { type: 'url_verification', token: 'x', challenge: 'abc123' }, { secret: SIGNING_SECRET });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toEqual({ challenge: 'abc123' });
    expect(fake.callsTo('apps.connections.open')).toEqual([]);
  });

  it('answers a signed mention in its thread, and a DM', async () => {
    const fake = await startFake();
    const responder = new ScriptedResponder();
    const { bot } = await startBot(fake, { mode: 'http', responder });
    const ts = userTs();
    const replied = repliedTo(bot, ts);
    const res = await postSigned(bot.url as string, mention(fake, { ts, text: '**hello**' }), { secret: SIGNING_SECRET });
    expect(res.status).toBe(200);
    await replied;
    expect(fake.postedIn('C0GENERAL', ts).map((m) => m.text)).toEqual(['You said: *hello*']);

    const dm = userTs();
    const repliedDm = repliedTo(bot, dm);
    expect((await postSigned(bot.url as string, directMessage({ ts: dm, text: 'psst' }), { secret: SIGNING_SECRET })).status).toBe(200);
    await repliedDm;
    expect(fake.postedIn('D0ALICE', undefined).map((m) => m.text)).toEqual(['You said: psst']);
  });

  it('rejects a bad signature and a stale timestamp with 401 and answers neither', async () => {
    const fake = await startFake();
    const responder = new ScriptedResponder();
    const { bot } = await startBot(fake, { mode: 'http', responder });
    let events = 0;
    bot.on('ignored', () => (events += 1));
    bot.on('replied', () => (events += 1));

    const forged = await postSigned(bot.url as string, mention(fake, { ts: userTs(), text: 'forged' }), { secret: SIGNING_SECRET, signWith: 'not-the-secret' });
    expect(forged.status).toBe(401);
    const stale = await postSigned(bot.url as string, mention(fake, { ts: userTs(), text: 'replayed' }), {
      secret: SIGNING_SECRET,
      timestamp: Math.floor(Date.now() / 1000) - 10 * 60,
    });
    expect(stale.status).toBe(401);
    const unsigned = await fetch(bot.url as string, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(mention(fake, { ts: userTs(), text: 'unsigned' })) });
    expect(unsigned.status).toBe(401);

    // A genuine request afterwards is the only one answered.
    const ts = userTs();
    const replied = repliedTo(bot, ts);
    expect((await postSigned(bot.url as string, mention(fake, { ts, text: 'genuine' }), { secret: SIGNING_SECRET })).status).toBe(200);
    await replied;
    expect(responder.calls.map((c) => c.message.text)).toEqual(['genuine']);
    expect(fake.posted).toHaveLength(1);
    expect(events).toBe(1);
  });

  it('answers a delivery retried with x-slack-retry-num once', async () => {
    const fake = await startFake();
    const responder = new ScriptedResponder();
    const { bot } = await startBot(fake, { mode: 'http', responder });
    const ts = userTs();
    const body = mention(fake, { ts, text: 'only once' });
    const replied = repliedTo(bot, ts);
    const reasons: string[] = [];
    bot.on('ignored', (_m, reason) => reasons.push(reason));
    const first = await postSigned(bot.url as string, body, { secret: SIGNING_SECRET });
    const retry1 = await postSigned(bot.url as string, body, { secret: SIGNING_SECRET, retryNum: 1 });
    const retry2 = await postSigned(bot.url as string, body, { secret: SIGNING_SECRET, retryNum: 2 });
    expect([first.status, retry1.status, retry2.status]).toEqual([200, 200, 200]);
    await replied;
    expect(reasons).toHaveLength(2);
    for (const r of reasons) expect(r).toMatch(/duplicate/);
    expect(responder.calls).toHaveLength(1);
    expect(fake.posted).toHaveLength(1);
  });

  it('responds to Slack before the reply is generated', async () => {
    const fake = await startFake();
    const gate = deferred();
    const responder = new ScriptedResponder(async function* () {
      await gate.promise;
      yield 'finally';
    });
    const { bot } = await startBot(fake, { mode: 'http', responder });
    const ts = userTs();
    const replied = repliedTo(bot, ts);
    const res = await postSigned(bot.url as string, mention(fake, { ts, text: 'take your time' }), { secret: SIGNING_SECRET });
    expect(res.status).toBe(200);
    // The HTTP response is back while the generation has not produced anything yet.
    expect(responder.calls.every((c) => !c.finished)).toBe(true);
    expect(fake.posted).toHaveLength(0);
    gate.resolve();
    expect((await replied).text).toBe('finally');
    expect(fake.posted.map((m) => m.text)).toEqual(['finally']);
  });

  it('closes the server on stop()', async () => {
    const fake = await startFake();
    const { bot } = await startBot(fake, { mode: 'http' });
    const url = bot.url as string;
    await bot.stop();
    await expect(fetch(url, { method: 'POST', body: '{}' })).rejects.toThrow();
  });
});
