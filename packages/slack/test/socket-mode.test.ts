// SlackBot in Socket Mode: a real bolt App against the local fake Slack (Web API + Socket Mode WebSocket).
import { afterEach, describe, expect, it } from 'vitest';
import { eventCallback, userTs } from './fake-slack.js';
import {
  APP_TOKEN,
  BOT_TOKEN,
  ScriptedResponder,
  closeAll,
  deferred,
  directMessage,
  ignoredMessage,
  mention,
  nextError,
  repliedTo,
  startBot,
  startFake,
} from './helpers.js';

afterEach(closeAll);

describe('SlackBot in Socket Mode', () => {
  it('answers a mention in its thread, streaming the reply through chat.update edits', async () => {
    const fake = await startFake();
    const responder = new ScriptedResponder(async function* () {
      yield 'Hello';
      await fake.until(() => fake.posted.length === 1);
      yield ' there';
      await fake.until(() => fake.posted[0]?.text === 'Hello there');
      yield ', friend.';
    });
    const { bot, logger } = await startBot(fake, { responder });
    expect(bot.identity).toEqual({ botUserId: 'UBOT', botId: 'BBOT' });

    const ts = userTs();
    const replied = repliedTo(bot, ts);
    const envelope = fake.sendEvent(mention(fake, { ts, text: 'hi there' }));
    await fake.waitForAck(envelope);
    expect((await replied).text).toBe('Hello there, friend.');

    // One message, in a new thread under the mention, edited as the text grew.
    expect(fake.posted).toHaveLength(1);
    const [msg] = fake.postedIn('C0GENERAL', ts);
    expect(msg?.texts[0]).toBe('Hello');
    expect(msg?.texts).toContain('Hello there');
    expect(msg?.text).toBe('Hello there, friend.');
    expect(fake.callsTo('chat.update').length).toBeGreaterThanOrEqual(2);
    for (const call of fake.callsTo('chat.update')) expect(call.params).toMatchObject({ channel: 'C0GENERAL', ts: msg?.ts });

    // The responder saw the text without the bot's mention, addressed by mention, in the thread's conversation.
    const [call] = responder.calls;
    expect(call?.message.text).toBe('hi there');
    expect(call?.message.addressedBy).toBe('mention');
    expect(call?.conversation).toEqual({ platform: 'slack', channelId: 'C0GENERAL', threadId: ts, isDM: false });

    // The bot token for the Web API, the app token for apps.connections.open only.
    expect(fake.callsTo('apps.connections.open').map((c) => c.token)).toEqual([APP_TOKEN]);
    for (const method of ['auth.test', 'chat.postMessage', 'chat.update']) {
      for (const c of fake.callsTo(method)) expect(c.token).toBe(BOT_TOKEN);
    }
    expect(fake.strayAcks).toEqual([]);
    expect(logger.errors).toEqual([]);
  });

  it('answers a direct message (message.im) in the DM, and in a thread when threadDMs is set', async () => {
    const fake = await startFake();
    const responder = new ScriptedResponder();
    const { bot } = await startBot(fake, { responder });
    const ts = userTs();
    const replied = repliedTo(bot, ts);
    fake.sendEvent(directMessage({ ts, text: 'hello &lt;bot&gt; &amp; co' }));
    expect((await replied).text).toBe('You said: hello <bot> & co');
    expect(fake.postedIn('D0ALICE', undefined).map((m) => m.text)).toEqual(['You said: hello &lt;bot&gt; &amp; co']);
    expect(responder.calls[0]?.message.addressedBy).toBe('dm');
    expect(responder.calls[0]?.conversation).toEqual({ platform: 'slack', channelId: 'D0ALICE', isDM: true });

    // A DM inside a thread is answered in that thread.
    const inThread = userTs();
    const repliedInThread = repliedTo(bot, inThread);
    fake.sendEvent(directMessage({ ts: inThread, thread_ts: ts, text: 'more' }));
    await repliedInThread;
    expect(fake.postedIn('D0ALICE', ts).map((m) => m.text)).toEqual(['You said: more']);
    await bot.stop();

    const { bot: threaded } = await startBot(fake, { responder, threadDMs: true });
    const ts2 = userTs();
    const replied2 = repliedTo(threaded, ts2);
    fake.sendEvent(directMessage({ ts: ts2, text: 'in a thread please' }));
    await replied2;
    expect(fake.postedIn('D0ALICE', ts2).map((m) => m.text)).toEqual(['You said: in a thread please']);
  });

  it('ignores other bots and itself, and still answers people', async () => {
    const fake = await startFake();
    const responder = new ScriptedResponder();
    const { bot } = await startBot(fake, { responder });

    const fromBot = userTs();
    const fromBotMention = userTs();
    const fromSelf = userTs();
    const ignored = [ignoredMessage(bot, fromBot), ignoredMessage(bot, fromBotMention), ignoredMessage(bot, fromSelf)];
    // A bot_message in the DM, a mention by another app's bot user, and the bot's own message.
    fake.sendEvent(eventCallback({ type: 'message', subtype: 'bot_message', bot_id: 'BOTHER', username: 'other', channel: 'D0ALICE', channel_type: 'im', text: 'beep', ts: fromBot }));
    fake.sendEvent(mention(fake, { ts: fromBotMention, text: 'hey bot', user: 'UOTHERBOT', bot_id: 'BOTHER' }));
    fake.sendEvent(eventCallback({ type: 'message', user: 'UBOT', bot_id: 'BBOT', channel: 'D0ALICE', channel_type: 'im', text: 'my own words', ts: fromSelf }));
    const reasons = await Promise.all(ignored);
    expect(reasons).toHaveLength(3);
    for (const r of reasons) expect(r).toMatch(/bot|self/i);

    const human = userTs();
    const replied = repliedTo(bot, human);
    fake.sendEvent(directMessage({ ts: human, text: 'a person' }));
    await replied;
    expect(responder.calls.map((c) => c.message.id)).toEqual([human]);
    expect(fake.posted.map((m) => m.text)).toEqual(['You said: a person']);
  });

  it('answers other bots when the policy allows it, but never itself', async () => {
    const fake = await startFake();
    const responder = new ScriptedResponder();
    const { bot } = await startBot(fake, { responder, policy: { ignoreBots: false } });
    const fromBot = userTs();
    const fromSelf = userTs();
    const replied = repliedTo(bot, fromBot);
    const ignored = ignoredMessage(bot, fromSelf);
    fake.sendEvent(eventCallback({ type: 'message', user: 'UBOT', bot_id: 'BBOT', channel: 'D0ALICE', channel_type: 'im', text: 'echo', ts: fromSelf }));
    fake.sendEvent(eventCallback({ type: 'message', subtype: 'bot_message', bot_id: 'BOTHER', channel: 'D0ALICE', channel_type: 'im', text: 'beep', ts: fromBot }));
    await Promise.all([replied, ignored]);
    expect(responder.calls.map((c) => c.message.id)).toEqual([fromBot]);
  });

  it('answers only in allowed channels', async () => {
    const fake = await startFake();
    const responder = new ScriptedResponder();
    const { bot } = await startBot(fake, { responder, policy: { allowChannels: ['C0ALLOWED'] } });
    const outside = userTs();
    const inside = userTs();
    const ignored = ignoredMessage(bot, outside);
    const replied = repliedTo(bot, inside);
    fake.sendEvent(mention(fake, { ts: outside, text: 'hello?' }));
    fake.sendEvent(mention(fake, { ts: inside, text: 'hello!', channel: 'C0ALLOWED' }));
    expect(await ignored).toMatch(/channel/i);
    await replied;
    expect(fake.posted.map((m) => [m.channel, m.threadTs])).toEqual([['C0ALLOWED', inside]]);
  });

  it('reads the thread as history on first contact in an existing thread, then follows it', async () => {
    const fake = await startFake();
    const responder = new ScriptedResponder();
    const { bot } = await startBot(fake, { responder });
    const parent = userTs();
    const bob = userTs();
    const asked = userTs();
    const later = userTs();
    fake.threads.set(`C0GENERAL:${parent}`, [
      { user: 'UALICE', text: 'What is the capital of France?', ts: parent, thread_ts: parent },
      { user: 'UBOB', text: 'I think it is &lt;Paris&gt;, ask <@UBOT>', ts: bob, thread_ts: parent },
      { user: 'UALICE', text: '<@UBOT> is Bob right?', ts: asked, thread_ts: parent },
      { user: 'UCAROL', text: 'posted after the question', ts: later, thread_ts: parent },
    ]);
    const replied = repliedTo(bot, asked);
    fake.sendEvent(mention(fake, { ts: asked, thread_ts: parent, text: 'is Bob right?' }));
    await replied;
    expect(fake.callsTo('conversations.replies').map((c) => c.params)).toEqual([expect.objectContaining({ channel: 'C0GENERAL', ts: parent })]);
    expect(responder.calls[0]?.history).toEqual(['What is the capital of France?', 'I think it is <Paris>, ask']);
    expect(fake.postedIn('C0GENERAL', parent).map((m) => m.text)).toEqual(['You said: is Bob right?']);

    // A second mention in the same thread: the conversation exists, the thread is not read again.
    const again = userTs();
    const repliedAgain = repliedTo(bot, again);
    fake.sendEvent(mention(fake, { ts: again, thread_ts: parent, text: 'and Germany?' }));
    await repliedAgain;
    expect(fake.callsTo('conversations.replies')).toHaveLength(1);

    // A plain message in a thread the bot answered in (message.channels) counts as a reply to the bot ...
    const followUp = userTs();
    const repliedFollowUp = repliedTo(bot, followUp);
    fake.sendEvent(eventCallback({ type: 'message', channel: 'C0GENERAL', channel_type: 'channel', user: 'UALICE', text: 'thanks, and Spain?', ts: followUp, thread_ts: parent }));
    expect((await repliedFollowUp).message.addressedBy).toBe('reply');
    // ... while one elsewhere in the channel is not addressed to it.
    const chatter = userTs();
    const ignored = ignoredMessage(bot, chatter);
    fake.sendEvent(eventCallback({ type: 'message', channel: 'C0GENERAL', channel_type: 'channel', user: 'UALICE', text: 'lunch?', ts: chatter }));
    expect(await ignored).toBeTruthy();
    expect(fake.postedIn('C0GENERAL', parent)).toHaveLength(3);
    expect(fake.posted).toHaveLength(3);
  });

  it('answers without thread context when conversations.replies fails', async () => {
    const fake = await startFake();
    const responder = new ScriptedResponder();
    const { bot, logger } = await startBot(fake, { responder });
    const parent = userTs();
    const ts = userTs();
    const replied = repliedTo(bot, ts);
    fake.sendEvent(mention(fake, { ts, thread_ts: parent, text: 'hello' })); // the fake knows no such thread
    await replied;
    expect(responder.calls[0]?.history ?? []).toEqual([]);
    expect(logger.warnings.join('\n')).toMatch(/conversations\.replies failed.*thread_not_found/);
  });

  it('answers a redelivered event (retry_attempt) once, and a mention seen as app_mention and message once', async () => {
    const fake = await startFake();
    const responder = new ScriptedResponder();
    const { bot } = await startBot(fake, { responder });
    const ts = userTs();
    const body = mention(fake, { ts, text: 'once please' });
    const replied = repliedTo(bot, ts);
    const duplicate = ignoredMessage(bot, ts);
    const first = fake.sendEvent(body);
    const retry = fake.sendEvent(body, { retryAttempt: 1 });
    await Promise.all([fake.waitForAck(first), fake.waitForAck(retry)]);
    expect(await duplicate).toMatch(/duplicate/);
    await replied;

    // The same channel message delivered as app_mention and as message.channels (two event ids, one ts).
    const both = userTs();
    const repliedBoth = repliedTo(bot, both);
    fake.sendEvent(mention(fake, { ts: both, text: 'twice delivered' }));
    fake.sendEvent(eventCallback({ type: 'message', channel: 'C0GENERAL', channel_type: 'channel', user: 'UALICE', text: '<@UBOT> twice delivered', ts: both }));
    await repliedBoth;
    // A later message in the same thread is answered after anything queued before it.
    const sentinel = userTs();
    const repliedSentinel = repliedTo(bot, sentinel);
    fake.sendEvent(mention(fake, { ts: sentinel, thread_ts: both, text: 'sentinel' }));
    await repliedSentinel;

    expect(responder.calls.map((c) => c.message.id)).toEqual([ts, both, sentinel]);
    expect(fake.postedIn('C0GENERAL', ts)).toHaveLength(1);
    expect(fake.postedIn('C0GENERAL', both)).toHaveLength(2);
  });

  it('acks each envelope before the reply is generated', async () => {
    const fake = await startFake();
    const gate = deferred();
    const responder = new ScriptedResponder(async function* () {
      yield 'thinking';
      await gate.promise;
      yield ' ... done';
    });
    const { bot } = await startBot(fake, { responder });
    const ts = userTs();
    const replied = repliedTo(bot, ts);
    const envelope = fake.sendEvent(mention(fake, { ts, text: 'slow question' }));
    await Promise.all([fake.waitForAck(envelope), fake.until(() => fake.posted.length === 1)]);
    // Acked and streaming, while the generation is still held open.
    expect(responder.calls[0]?.finished).toBe(false);
    expect(fake.log.indexOf(`ack:${envelope}`)).toBeGreaterThan(fake.log.indexOf(`send:${envelope}`));
    gate.resolve();
    expect((await replied).text).toBe('thinking ... done');
    expect(responder.calls[0]?.finished).toBe(true);
  });

  it('converts Markdown to Slack mrkdwn', async () => {
    const fake = await startFake();
    const md = '# Title\n**Bold**, _it_, ~~gone~~ and [docs](https://example.com/a?b=1&c=2)\nR&D <ok>\n`x<y && **z**`';
    const responder = new ScriptedResponder(() => [md]);
    const { bot } = await startBot(fake, { responder });
    const ts = userTs();
    const replied = repliedTo(bot, ts);
    fake.sendEvent(mention(fake, { ts, text: 'format' }));
    expect((await replied).text).toBe(md);
    expect(fake.postedIn('C0GENERAL', ts).map((m) => m.text)).toEqual([
      '*Title*\n*Bold*, _it_, ~gone~ and <https://example.com/a?b=1&amp;c=2|docs>\nR&amp;D &lt;ok&gt;\n`x<y && **z**`',
    ]);
  });

  it('posts a short apology when the engine fails, and keeps answering', async () => {
    const fake = await startFake();
    let calls = 0;
    const responder = new ScriptedResponder(async function* () {
      calls += 1;
      if (calls === 1) throw new Error('engine exploded');
      if (calls === 2) {
        yield 'half a';
        throw new Error('engine exploded mid-reply');
      }
      yield 'fine again';
    });
    const { bot } = await startBot(fake, { responder, apology: 'Sorry, that did not work.' });

    for (const expected of ['engine exploded', 'engine exploded mid-reply']) {
      const ts = userTs();
      const failed = nextError(bot);
      fake.sendEvent(mention(fake, { ts, text: 'break' }));
      const [err, msg] = await failed;
      expect(err.message).toBe(expected);
      expect(msg?.id).toBe(ts);
      await fake.until(() => fake.postedIn('C0GENERAL', ts).some((m) => m.text.includes('Sorry, that did not work.')));
    }
    const ts = userTs();
    const replied = repliedTo(bot, ts);
    fake.sendEvent(mention(fake, { ts, text: 'again' }));
    expect((await replied).text).toBe('fine again');
  });

  it('continues a long reply in new messages of the same thread, code fences closed and reopened', async () => {
    const fake = await startFake();
    const code = Array.from({ length: 12 }, (_, i) => `console.log(${i});`).join('\n');
    const long = `Here is the code:\n\n\`\`\`js\n${code}\n\`\`\`\n\nThat is all.`;
    const responder = new ScriptedResponder(function* () {
      for (const word of long.split(/(?<=\s)/)) yield word;
    });
    const { bot } = await startBot(fake, { responder, maxMessageLength: 100 });
    const ts = userTs();
    const replied = repliedTo(bot, ts);
    fake.sendEvent(mention(fake, { ts, text: 'code please' }));
    expect((await replied).text).toBe(long);
    const parts = fake.postedIn('C0GENERAL', ts).map((m) => m.text);
    expect(parts.length).toBeGreaterThan(1);
    expect(fake.posted).toHaveLength(parts.length);
    for (const p of parts) {
      expect(p.length).toBeLessThanOrEqual(100);
      expect((p.match(/```/g) ?? []).length % 2).toBe(0); // every message's fences are balanced
    }
    expect(parts.join('\n').replace(/```js\n|```\n?/g, '')).toContain('console.log(11);');
  });

  it('stop() lets a reply under way finish, or cancels it with mode cancel', async () => {
    const fake = await startFake();
    const gate = deferred();
    const responder = new ScriptedResponder(async function* () {
      yield 'part one';
      await gate.promise;
      yield ', part two';
    });
    const { bot } = await startBot(fake, { responder });
    const ts = userTs();
    const replied = repliedTo(bot, ts);
    fake.sendEvent(mention(fake, { ts, text: 'long one' }));
    await fake.until(() => fake.posted.length === 1);
    let stopped = false;
    const socket = fake.socket;
    const disconnected = new Promise((resolve) => socket?.once('close', resolve));
    const stopping = bot.stop().then(() => (stopped = true));
    // Disconnected from Slack, but the reply under way holds stop() open.
    await disconnected;
    expect(stopped).toBe(false);
    gate.resolve();
    await stopping;
    expect((await replied).text).toBe('part one, part two');
    expect(fake.posted[0]?.text).toBe('part one, part two');

    const fake2 = await startFake();
    const never = deferred();
    const stuck = new ScriptedResponder(async function* () {
      yield 'started';
      await never.promise;
      yield ' never';
    });
    const { bot: bot2 } = await startBot(fake2, { responder: stuck });
    fake2.sendEvent(mention(fake2, { ts: userTs(), text: 'hang' }));
    await fake2.until(() => fake2.posted.length === 1);
    await bot2.stop({ mode: 'cancel' });
    expect(stuck.calls[0]?.aborted).toBe(true);
    expect(fake2.posted.map((m) => m.text)).toEqual(['started']);
  });

  it('skips edits, deletions and joins', async () => {
    const fake = await startFake();
    const responder = new ScriptedResponder();
    const { bot } = await startBot(fake, { responder });
    let ignoredCount = 0;
    bot.on('ignored', () => (ignoredCount += 1));
    fake.sendEvent(eventCallback({ type: 'message', subtype: 'message_changed', channel: 'D0ALICE', channel_type: 'im', ts: userTs(), message: { text: 'edited', user: 'UALICE' } }));
    fake.sendEvent(eventCallback({ type: 'message', subtype: 'message_deleted', channel: 'D0ALICE', channel_type: 'im', ts: userTs() }));
    fake.sendEvent(eventCallback({ type: 'message', subtype: 'channel_join', channel: 'C0GENERAL', channel_type: 'channel', user: 'UALICE', text: '<@UALICE> has joined', ts: userTs() }));
    const ts = userTs();
    const replied = repliedTo(bot, ts);
    fake.sendEvent(directMessage({ ts, text: 'real one' }));
    await replied;
    expect(responder.calls.map((c) => c.message.text)).toEqual(['real one']);
    expect(ignoredCount).toBe(0);
    expect(fake.acks.items).toHaveLength(4);
  });

  it('reconnects after the Socket Mode connection drops and keeps answering', async () => {
    const fake = await startFake();
    const responder = new ScriptedResponder();
    // clientPingTimeout also sets the reconnect delay (one timeout per consecutive failure).
    const { bot } = await startBot(fake, { responder, socketMode: { clientPingTimeout: 300 } });
    const before = userTs();
    const replied = repliedTo(bot, before);
    fake.sendEvent(mention(fake, { ts: before, text: 'before the drop' }));
    await replied;

    const first = fake.socket;
    fake.dropConnection();
    const second = await fake.connections.waitFor((ws) => ws !== first);
    expect(fake.callsTo('apps.connections.open')).toHaveLength(2);
    expect(fake.socket).toBe(second);

    const after = userTs();
    const repliedAfter = repliedTo(bot, after);
    const envelope = fake.sendEvent(mention(fake, { ts: after, text: 'after the drop' }));
    await fake.waitForAck(envelope);
    await repliedAfter;
    expect(fake.posted.map((m) => m.text)).toEqual(['You said: before the drop', 'You said: after the drop']);
  });
});
