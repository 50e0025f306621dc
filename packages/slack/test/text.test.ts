// Slack text → plain text for the model, event normalisation, and Slack timestamp order.
import { describe, expect, it } from 'vitest';
import { compareTs, isDirectChannel, mentions, normaliseEvent, replyThreadTs, slackToPlain } from '../src/index.js';

describe('slackToPlain', () => {
  it('strips the bot mention and nothing else', () => {
    expect(slackToPlain('<@UBOT> what is 2+2?', 'UBOT')).toBe('what is 2+2?');
    expect(slackToPlain('hey <@UBOT|vikbot>, ask <@UANN|ann> and <@UBEN>', 'UBOT')).toBe('hey , ask @ann and @UBEN');
    expect(slackToPlain('<@UBOT>', 'UBOT')).toBe('');
  });

  it('makes channels, specials and links readable and unescapes entities', () => {
    expect(slackToPlain('see <#C1|general> <!here> <!subteam^S1|@devs>')).toBe('see #general @here @devs');
    expect(slackToPlain('<https://example.com|the docs> and <https://example.com> and <mailto:a@b.c|a@b.c>')).toBe(
      'the docs (https://example.com) and https://example.com and a@b.c (mailto:a@b.c)',
    );
    expect(slackToPlain('a &lt;b&gt; &amp;&amp; c &amp;lt;')).toBe('a <b> && c &lt;');
  });

  it('finds mentions in both forms', () => {
    expect(mentions('hi <@UBOT>', 'UBOT')).toBe(true);
    expect(mentions('hi <@UBOT|bot>', 'UBOT')).toBe(true);
    expect(mentions('hi <@UBOTTER>', 'UBOT')).toBe(false);
  });
});

describe('normaliseEvent', () => {
  const identity = { botUserId: 'UBOT', botId: 'BBOT' };

  it('turns a mention into an InboundMessage for the thread', () => {
    const msg = normaliseEvent(
      {
        type: 'app_mention',
        channel: 'C1',
        user: 'UANN',
        text: '<@UBOT> look',
        ts: '1.000002',
        files: [{ name: 'cat.png', url_private: 'https://files/cat.png', mimetype: 'image/png', size: 12 }],
      },
      { identity, threadDMs: false },
    );
    expect(msg).toEqual({
      platform: 'slack',
      id: '1.000002',
      conversation: { platform: 'slack', channelId: 'C1', threadId: '1.000002', isDM: false },
      author: { id: 'UANN', name: 'UANN', isBot: false, isSelf: false },
      text: 'look',
      addressedBy: 'mention',
      attachments: [{ name: 'cat.png', url: 'https://files/cat.png', contentType: 'image/png', size: 12 }],
      raw: expect.objectContaining({ type: 'app_mention' }),
    });
  });

  it('tells DMs, replies in known threads and chatter apart', () => {
    const dm = normaliseEvent({ type: 'message', channel: 'D1', channel_type: 'im', user: 'UANN', text: 'hi', ts: '2.0' }, { identity, threadDMs: false });
    expect(dm).toMatchObject({ addressedBy: 'dm', conversation: { channelId: 'D1', isDM: true } });
    expect('conversation' in dm && dm.conversation.threadId).toBe(undefined);
    const known = normaliseEvent(
      { type: 'message', channel: 'C1', channel_type: 'channel', user: 'UANN', text: 'and?', ts: '3.0', thread_ts: '1.0' },
      { identity, threadDMs: false, isKnownThread: (c, t) => c === 'C1' && t === '1.0' },
    );
    expect(known).toMatchObject({ addressedBy: 'reply', conversation: { threadId: '1.0' } });
    const chatter = normaliseEvent({ type: 'message', channel: 'C1', channel_type: 'channel', user: 'UANN', text: 'lunch', ts: '4.0' }, { identity, threadDMs: false });
    expect(chatter).toMatchObject({ addressedBy: 'none' });
  });

  it('marks bots and the bot itself', () => {
    const self = normaliseEvent({ type: 'message', channel: 'D1', channel_type: 'im', user: 'UBOT', bot_id: 'BBOT', text: 'x', ts: '5.0' }, { identity, threadDMs: false });
    expect(self).toMatchObject({ author: { isBot: true, isSelf: true } });
    const selfByBotId = normaliseEvent({ type: 'message', subtype: 'bot_message', channel: 'D1', channel_type: 'im', bot_id: 'BBOT', text: 'x', ts: '5.1' }, { identity, threadDMs: false });
    expect(selfByBotId).toMatchObject({ author: { isBot: true, isSelf: true } });
    const other = normaliseEvent({ type: 'message', subtype: 'bot_message', channel: 'D1', channel_type: 'im', bot_id: 'B2', username: 'cron', text: 'x', ts: '6.0' }, { identity, threadDMs: false });
    expect(other).toMatchObject({ author: { id: 'B2', name: 'cron', isBot: true, isSelf: false } });
  });

  it('skips edits, deletions, joins and incomplete events', () => {
    for (const subtype of ['message_changed', 'message_deleted', 'channel_join', 'channel_topic']) {
      expect(normaliseEvent({ type: 'message', subtype, channel: 'C1', ts: '1.0' }, { identity, threadDMs: false })).toEqual({ skip: `subtype ${subtype}` });
    }
    expect(normaliseEvent({ type: 'message', text: 'no channel' }, { identity, threadDMs: false })).toHaveProperty('skip');
  });

  it('picks the reply thread', () => {
    expect(replyThreadTs({ type: 'app_mention', channel: 'C1', ts: '1.0' }, false)).toBe('1.0');
    expect(replyThreadTs({ type: 'app_mention', channel: 'C1', ts: '2.0', thread_ts: '1.0' }, false)).toBe('1.0');
    expect(replyThreadTs({ type: 'message', channel: 'D1', channel_type: 'im', ts: '1.0' }, false)).toBe(undefined);
    expect(replyThreadTs({ type: 'message', channel: 'D1', channel_type: 'im', ts: '1.0' }, true)).toBe('1.0');
    expect(isDirectChannel({ type: 'app_mention', channel: 'D9' })).toBe(true);
    expect(isDirectChannel({ type: 'message', channel: 'G9', channel_type: 'mpim' })).toBe(false);
  });
});

describe('compareTs', () => {
  it('orders Slack timestamps exactly', () => {
    expect(compareTs('1700000000.000100', '1700000000.000101')).toBe(-1);
    expect(compareTs('1700000001.000000', '1700000000.999999')).toBe(1);
    expect(compareTs('1700000000.0001', '1700000000.000100')).toBe(0);
    expect(compareTs('999.5', '1000.1')).toBe(-1);
  });
});
