// Resumable conversations (feature `resume`): a conversation's token, handed out in a `conversation` frame,
// picks up the same history on another connection; what the server keeps for this is bounded in time, count
// and bytes; unknown tokens get a fresh conversation that says so. Raw clients, then the typed client.
import { describe, expect, it } from 'vitest';
import { VikdfClient, type ResumeResult } from '../src/index.js';
import { GREEDY, RawClient, delay, until, withTinyEngine, type Frame } from './helpers.js';

const tiny = withTinyEngine();

const SHORT = { ...GREEDY, maxNewTokens: 6 };
const LONG = { ...GREEDY, maxNewTokens: 200, minNewTokens: 200 };

/** A raw client that asked for feature `resume`. */
async function resumable(url: string): Promise<RawClient> {
  const c = await RawClient.open(url);
  c.send({ type: 'hello', protocol: 1, features: ['resume'] });
  return c;
}

const promptTokens = (f: Frame) => (f.usage as { promptTokens: number }).promptTokens;

/** Sends a resume frame and waits for its answer. */
async function resume(c: RawClient, id: string, token: string, conversation = 'default'): Promise<Frame> {
  c.send({ type: 'resume', id, conversation, token });
  return c.waitFor((f) => f.id === id && (f.type === 'conversation' || f.type === 'error'));
}

describe('resumable conversations', () => {
  it('hello announces the feature; conversation frames go only to clients that ask for it, before the first reply', async () => {
    const server = await tiny.serve();
    const plain = await RawClient.open(server.wsUrl);
    expect(plain.hello).toMatchObject({ features: ['resume'], limits: { resumeTtlMs: 600_000 } });
    await plain.ask('p1', 'hello', { options: SHORT });
    expect(plain.frames.some((f) => f.type === 'conversation')).toBe(false); // old clients see no new frame types

    const c = await resumable(server.wsUrl);
    c.send({ type: 'message', id: 'm1', conversation: 'a', text: 'hello there', options: SHORT });
    const done = await c.end('m1');
    const frame = c.frames.find((f) => f.type === 'conversation')!;
    expect(frame).toMatchObject({ id: 'm1', conversation: 'a', resumed: false });
    expect(frame.token).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(c.frames.indexOf(frame)).toBeLessThan(c.frames.indexOf(c.tokens('m1')[0] ?? done));
    // one per conversation, not per message
    await c.ask('m2', 'and then?', { conversation: 'a', options: SHORT });
    expect(c.frames.filter((f) => f.type === 'conversation')).toHaveLength(1);
  });

  it('another connection resumes the conversation with its token: the same history, and the next reply sees it', async () => {
    const server = await tiny.serve();
    const first = await resumable(server.wsUrl);
    const a1 = await first.ask('a1', 'hello there', { conversation: 'a', options: SHORT });
    const a2 = await first.ask('a2', 'what do you see?', { conversation: 'a', options: SHORT });
    const token = first.frames.find((f) => f.type === 'conversation')!.token as string;
    await first.close();
    await until(() => server.conversationStats.detached === 1, 'the conversation kept after its connection closed');

    const second = await RawClient.open(server.wsUrl);
    const answer = await resume(second, 'r', token, 'again');
    expect(answer).toMatchObject({ type: 'conversation', conversation: 'again', token, resumed: true });
    expect(answer.history).toEqual(['hello there', (a1.text as string).trim(), 'what do you see?', (a2.text as string).trim()]);
    const a3 = await second.ask('a3', 'and then?', { conversation: 'again', options: SHORT });
    expect(promptTokens(a3)).toBeGreaterThan(promptTokens(a2));
    // exactly what the engine answers with that history
    const direct = await tiny.engine.conversation({ history: answer.history as string[] }).send('and then?', { options: SHORT }).result;
    expect(a3.text).toBe(direct.text);
    expect(promptTokens(a3)).toBe(direct.usage.promptTokens);
    // resuming what this connection already has is a no-op that says so
    expect(await resume(second, 'r2', token, 'again')).toMatchObject({ resumed: true, token });
  });

  it('an unknown or expired token, a reset one, or one of a restarted server: a fresh conversation with resumed false', async () => {
    const server = await tiny.serve({ limits: { resumeTtlMs: 300 } });
    const c = await resumable(server.wsUrl);
    const fresh = await resume(c, 'r1', 'no-such-token-anywhere');
    expect(fresh).toMatchObject({ type: 'conversation', conversation: 'default', resumed: false, reason: 'unknown' });
    expect(fresh.token).not.toBe('no-such-token-anywhere');
    expect((await c.ask('m1', 'hello there', { options: SHORT })).type).toBe('done'); // the fresh one works
    expect(c.frames.filter((f) => f.type === 'conversation')).toHaveLength(1); // and needed no second frame

    // expired: kept 300 ms after the connection closed
    await c.close();
    await delay(500);
    const d = await resumable(server.wsUrl);
    expect(await resume(d, 'r2', fresh.token as string)).toMatchObject({ resumed: false, reason: 'unknown' });

    // reset: the token no longer resumes anything
    await d.ask('m2', 'hello', { conversation: 'x', options: SHORT });
    const xToken = d.frames.find((f) => f.type === 'conversation' && f.conversation === 'x')!.token as string;
    d.send({ type: 'reset', id: 'z', conversation: 'x' });
    await d.waitFor((f) => f.type === 'reset_ok');
    expect(await resume(d, 'r3', xToken, 'y')).toMatchObject({ resumed: false });

    // a restarted server knows nothing of the old one's conversations
    await d.ask('m3', 'hello', { conversation: 'w', options: SHORT });
    const wToken = d.frames.find((f) => f.type === 'conversation' && f.conversation === 'w')!.token as string;
    const restarted = await tiny.serve();
    const e = await resumable(restarted.wsUrl);
    expect(await resume(e, 'r4', wToken)).toMatchObject({ resumed: false, reason: 'unknown' });
  });

  it('a resume takes the conversation from a connection still open, which is told (conversation_moved)', async () => {
    const server = await tiny.serve();
    const old = await resumable(server.wsUrl);
    await old.ask('o1', 'hello there', { conversation: 'a', options: SHORT });
    const token = old.frames.find((f) => f.type === 'conversation')!.token as string;
    const other = await resumable(server.wsUrl);
    expect(await resume(other, 'r', token, 'a')).toMatchObject({ resumed: true });
    const moved = await old.waitFor((f) => f.type === 'error' && f.code === 'conversation_moved');
    expect(moved).toMatchObject({ conversation: 'a' });
    expect(moved.id).toBeUndefined();
    // the old connection's next message to "a" starts a new conversation, with a new token
    const again = await old.ask('o2', 'hello there', { conversation: 'a', options: SHORT });
    const frames = old.frames.filter((f) => f.type === 'conversation');
    expect(frames).toHaveLength(2);
    expect(frames[1]!.token).not.toBe(token);
    expect(promptTokens(again)).toBe(promptTokens(old.frames.find((f) => f.id === 'o1' && f.type === 'done')!));
  });

  it('keeps at most maxStoredConversations and maxStoredBytes: the oldest detached are forgotten first', async () => {
    const server = await tiny.serve({ limits: { maxStoredConversations: 2 } });
    const tokens: string[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await resumable(server.wsUrl);
      await c.ask(`m${i}`, `hello number ${i}`, { options: SHORT });
      tokens.push(c.frames.find((f) => f.type === 'conversation')!.token as string);
      await c.close();
      await until(() => server.conversationStats.detached === Math.min(i + 1, 2), `conversation ${i} detached`);
    }
    expect(server.conversationStats).toMatchObject({ conversations: 2, detached: 2 });
    const c = await resumable(server.wsUrl);
    expect(await resume(c, 'r0', tokens[0]!, 'x0')).toMatchObject({ resumed: false });
    expect(await resume(c, 'r1', tokens[1]!, 'x1')).toMatchObject({ resumed: true });
    expect(await resume(c, 'r2', tokens[2]!, 'x2')).toMatchObject({ resumed: true });

    const small = await tiny.serve({ limits: { maxStoredBytes: 40 } });
    const d = await resumable(small.wsUrl);
    await d.ask('b', 'a message of more than forty bytes, all by itself', { options: SHORT });
    const token = d.frames.find((f) => f.type === 'conversation')!.token as string;
    await d.close();
    await until(() => small.conversationStats.conversations === 0, 'the conversation over the byte bound forgotten');
    const e = await resumable(small.wsUrl);
    expect(await resume(e, 'r', token)).toMatchObject({ resumed: false });
  });

  it('a reply cut by a dropped connection is kept as far as it got: the resume shows it', async () => {
    const server = await tiny.serve();
    const c = await resumable(server.wsUrl);
    c.send({ type: 'message', id: 'long', text: 'tell me a story', options: LONG });
    await c.waitFor((f) => f.type === 'token' && f.id === 'long');
    const received = c.tokens('long').map((t) => t.text).join('');
    const token = c.frames.find((f) => f.type === 'conversation')!.token as string;
    await c.terminate(); // dropped mid-reply
    await until(() => server.conversationStats.detached === 1 && server.conversationStats.bytes > 0, 'the cut reply in the history');
    const d = await resumable(server.wsUrl);
    const answer = await resume(d, 'r', token);
    expect(answer.resumed).toBe(true);
    const history = answer.history as string[];
    expect(history).toHaveLength(2);
    expect(history[0]).toBe('tell me a story');
    expect(history[1]!.startsWith(received.trim())).toBe(true);
  });

  it('refuses bad resume frames clearly', async () => {
    const server = await tiny.serve({ token: 't' });
    const c = await RawClient.open(server.wsUrl);
    expect(await resume(c, 'r1', 'x')).toMatchObject({ type: 'error', code: 'auth_required' });
    c.send({ type: 'auth', id: 'a', token: 't' });
    await c.waitFor((f) => f.type === 'auth_ok');
    c.send({ type: 'resume', id: 'r2' });
    expect(await c.waitFor((f) => f.id === 'r2')).toMatchObject({ type: 'error', code: 'bad_frame' });
    c.send({ type: 'resume', id: 'r3', token: 'x', conversation: '' });
    expect(await c.waitFor((f) => f.id === 'r3')).toMatchObject({ type: 'error', code: 'bad_frame' });
    c.send({ type: 'hello', id: 'h', protocol: 1, features: 'resume' });
    expect(await c.waitFor((f) => f.id === 'h')).toMatchObject({ type: 'error', code: 'bad_frame' });
  });
});

describe('VikdfClient resumes', () => {
  it('with reconnect: after a drop (idle timeout) the next send connects again and the conversation goes on', async () => {
    const server = await tiny.serve({ limits: { idleTimeoutMs: 300 } });
    const client = await VikdfClient.connect(server.wsUrl, { reconnect: { attempts: 3, delayMs: 50 } });
    const first = await client.send('hello there', { conversation: 'a', options: SHORT }).result;
    const token = client.conversationTokens().a!;
    expect(token).toMatch(/^[A-Za-z0-9_-]{22}$/);
    const dropped = new Promise((resolve) => client.once('close', resolve));
    expect(await dropped).toMatchObject({ code: 4000 }); // idle
    const reconnected = new Promise<{ conversations: ResumeResult[] }>((resolve) => client.once('reconnect', resolve));
    const second = await client.send('and then?', { conversation: 'a', options: SHORT }).result;
    const info = await reconnected;
    expect(info.conversations).toEqual([{ conversation: 'a', token, resumed: true, history: ['hello there', first.text.trim()] }]);
    expect(second.usage.promptTokens).toBeGreaterThan(first.usage.promptTokens); // it saw the first turn
    await client.close();
    expect(await client.closed).toMatchObject({ code: 1000 });
  });

  it('says when a conversation could not be resumed (a server restart), and connect can resume given tokens', async () => {
    const server = await tiny.serve();
    const port = server.address.port;
    const client = await VikdfClient.connect(server.wsUrl, { reconnect: { attempts: 20, delayMs: 50 } });
    await client.send('hello there', { options: SHORT }).result;
    const tokens = client.conversationTokens();
    await server.close();
    await until(() => !client.open && 'closed', 'the client seeing the shutdown');
    const restarted = await tiny.serve({ port });
    const results = await client.reconnect();
    expect(results).toEqual([expect.objectContaining({ conversation: 'default', resumed: false, reason: 'unknown', history: [] })]);
    expect(client.conversationTokens().default).not.toBe(tokens.default);
    await client.send('hello there', { options: SHORT }).result;
    // a new client picks the conversation up at connect
    const later = await VikdfClient.connect(restarted.wsUrl, { resume: client.conversationTokens() });
    expect(later.resumed).toEqual([expect.objectContaining({ conversation: 'default', resumed: true })]);
    expect(later.resumed[0]!.history).toHaveLength(2);
    await Promise.all([client.close(), later.close()]);
  });

  it('does not reconnect after close() or a final close code, and refuses bad options', async () => {
    const server = await tiny.serve({ token: 'tok' });
    const client = await VikdfClient.connect(server.wsUrl, { reconnect: true });
    await expect(client.authenticate('wrong')).rejects.toMatchObject({ code: 'unauthorized' });
    expect(await client.closed).toMatchObject({ code: 4001 });
    await expect(client.send('hi').result).rejects.toMatchObject({ code: 'connection_closed' });
    await expect(VikdfClient.connect(server.wsUrl, { reconnect: { attempts: 0 } })).rejects.toThrow(/reconnect must be/);
    await expect(VikdfClient.connect(server.wsUrl, { resume: { a: '' } })).rejects.toThrow(/resume must map/);
  });
});
