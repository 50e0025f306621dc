import { describe, expect, it } from 'vitest';
import { Deduper, KeyedQueue, conversationKey, route, validatePolicy } from '../src/index.js';
import { message } from './helpers.js';

describe('conversationKey', () => {
  it('is platform:channel:thread, with an empty thread outside threads', () => {
    expect(conversationKey({ platform: 'discord', channelId: 'c', isDM: false })).toBe('discord:c:');
    expect(conversationKey({ platform: 'slack', channelId: 'C1', threadId: '17.5', isDM: false })).toBe('slack:C1:17.5');
  });
});

describe('route', () => {
  it('answers mentions, replies and DMs by default, not unaddressed messages', () => {
    expect(route(message({ addressedBy: 'mention' }))).toEqual({ respond: true });
    expect(route(message({ addressedBy: 'reply' }))).toEqual({ respond: true });
    expect(route(message({ addressedBy: 'dm', isDM: true }))).toEqual({ respond: true });
    expect(route(message({ addressedBy: 'none' }))).toEqual({ respond: false, reason: 'not-addressed' });
    expect(route(message({ addressedBy: 'none' }), { respondTo: ['none', 'mention'] })).toEqual({ respond: true });
    expect(route(message({ addressedBy: 'reply' }), { respondTo: ['mention'] })).toEqual({ respond: false, reason: 'not-addressed' });
  });

  it('always ignores itself, and other bots unless told not to', () => {
    const self = message({ author: { id: 'b', name: 'me', isBot: true, isSelf: true } });
    const bot = message({ author: { id: 'o', name: 'other', isBot: true, isSelf: false } });
    expect(route(self)).toEqual({ respond: false, reason: 'self' });
    expect(route(self, { ignoreBots: false })).toEqual({ respond: false, reason: 'self' });
    expect(route(bot)).toEqual({ respond: false, reason: 'bot' });
    expect(route(bot, { ignoreBots: false })).toEqual({ respond: true });
  });

  it('turns DMs off on request; channel lists do not apply to DMs', () => {
    const dm = message({ addressedBy: 'dm', isDM: true, channelId: 'dm1' });
    expect(route(dm, { allowDMs: false })).toEqual({ respond: false, reason: 'dm-disabled' });
    expect(route(dm, { allowChannels: ['c1'] })).toEqual({ respond: true });
  });

  it('applies channel allow- and deny-lists, threads counting by their channel or their own id', () => {
    expect(route(message({ channelId: 'c1' }), { allowChannels: ['c1'] })).toEqual({ respond: true });
    expect(route(message({ channelId: 'c2' }), { allowChannels: ['c1'] })).toEqual({ respond: false, reason: 'channel-not-allowed' });
    expect(route(message({ channelId: 'c1', threadId: 't9' }), { allowChannels: ['c1'] })).toEqual({ respond: true });
    expect(route(message({ channelId: 'c2', threadId: 't9' }), { allowChannels: ['t9'] })).toEqual({ respond: true });
    expect(route(message({ channelId: 'c1' }), { allowChannels: ['c1'], denyChannels: ['c1'] })).toEqual({
      respond: false,
      reason: 'channel-denied',
    });
    expect(route(message({ channelId: 'c1', threadId: 't9' }), { denyChannels: ['t9'] })).toEqual({ respond: false, reason: 'channel-denied' });
  });

  it('applies user lists, in channels and DMs', () => {
    expect(route(message(), { allowUsers: ['u1'] })).toEqual({ respond: true });
    expect(route(message(), { allowUsers: ['u2'] })).toEqual({ respond: false, reason: 'user-not-allowed' });
    expect(route(message({ isDM: true, addressedBy: 'dm' }), { denyUsers: ['u1'] })).toEqual({ respond: false, reason: 'user-denied' });
  });

  it('ignores a message with nothing but the mention', () => {
    expect(route(message({ text: '  ' }))).toEqual({ respond: false, reason: 'empty' });
  });
});

describe('validatePolicy', () => {
  it('accepts a good policy and names what is wrong in a bad one', () => {
    expect(() => validatePolicy({ respondTo: ['mention', 'dm'], allowDMs: false, allowChannels: ['c'] })).not.toThrow();
    expect(() => validatePolicy(undefined)).not.toThrow();
    expect(() => validatePolicy({ respondTo: ['mentions'] })).toThrow(/respondTo has "mentions"/);
    expect(() => validatePolicy({ allowChannels: 'c1' })).toThrow(/allowChannels must be an array/);
    expect(() => validatePolicy({ allowDMs: 'no' })).toThrow(/allowDMs must be a boolean/);
    expect(() => validatePolicy({ allowChanels: [] })).toThrow(/unknown routing policy field "allowChanels"/);
    expect(() => validatePolicy([])).toThrow(/must be an object/);
  });
});

describe('Deduper', () => {
  it('says true once per key within the ttl, and again after it', () => {
    let now = 0;
    const d = new Deduper({ ttlMs: 1000, now: () => now });
    expect(d.firstTime('a')).toBe(true);
    expect(d.firstTime('a')).toBe(false);
    expect(d.firstTime('b')).toBe(true);
    now = 999;
    expect(d.firstTime('a')).toBe(false);
    now = 1000;
    expect(d.firstTime('a')).toBe(true);
    expect(d.size).toBe(1); // b expired and was dropped
  });

  it('keeps at most maxEntries keys, forgetting the oldest', () => {
    const d = new Deduper({ maxEntries: 2, now: () => 0 });
    d.firstTime('a');
    d.firstTime('b');
    d.firstTime('c');
    expect(d.size).toBe(2);
    expect(d.firstTime('c')).toBe(false);
    expect(d.firstTime('a')).toBe(true);
  });

  it('rejects bad options', () => {
    expect(() => new Deduper({ ttlMs: 0 })).toThrow(/ttlMs/);
    expect(() => new Deduper({ maxEntries: 0.5 })).toThrow(/maxEntries/);
  });
});

describe('KeyedQueue', () => {
  const deferred = () => {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    return { promise, resolve };
  };

  it('runs tasks of one key in order and tasks of different keys together', async () => {
    const q = new KeyedQueue();
    const log: string[] = [];
    const gate = deferred();
    const a1 = q.run('a', async () => {
      log.push('a1 start');
      await gate.promise;
      log.push('a1 end');
      return 1;
    });
    const a2 = q.run('a', async () => {
      log.push('a2');
      return 2;
    });
    const b1 = q.run('b', async () => {
      log.push('b1');
      return 3;
    });
    await b1;
    expect(log).toEqual(['a1 start', 'b1']); // b did not wait for a
    expect(q.pending('a')).toBe(2);
    gate.resolve();
    expect(await Promise.all([a1, a2])).toEqual([1, 2]);
    expect(log).toEqual(['a1 start', 'b1', 'a1 end', 'a2']);
    await q.idle();
    expect(q.size).toBe(0);
  });

  it('lets a failing task fail alone', async () => {
    const q = new KeyedQueue();
    const bad = q.run('k', async () => {
      throw new Error('boom');
    });
    const good = q.run('k', async () => 'ok');
    await expect(bad).rejects.toThrow('boom');
    await expect(good).resolves.toBe('ok');
  });
});
