// The typed client against the real server on the tiny fixture.
import { afterEach, describe, expect, it } from 'vitest';
import { CloseCode, VikdfClient, VikdfClientError, type DoneFrame } from '../src/index.js';
import { GREEDY, delay, withTinyEngine } from './helpers.js';

const tiny = withTinyEngine();
const clients: VikdfClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

async function connect(url: string, options?: Parameters<typeof VikdfClient.connect>[1]): Promise<VikdfClient> {
  const c = await VikdfClient.connect(url, options);
  clients.push(c);
  return c;
}

const LONG = { ...GREEDY, maxNewTokens: 200, minNewTokens: 200 };

describe('VikdfClient', () => {
  it('connects, reads hello, streams a reply as chunks and token events, and resolves its done frame', async () => {
    const server = await tiny.serve({ defaults: { numBeams: 1 } });
    const client = await connect(server.wsUrl);
    expect(client.hello).toMatchObject({ protocol: 1, model: { name: 'tiny-random' }, device: 'cpu' });
    const reply = client.send('do you like pizza?', { conversation: 'p', options: { maxNewTokens: 20 } });
    const seqs: number[] = [];
    reply.on('token', (_text, seq) => seqs.push(seq));
    const chunks: string[] = [];
    for await (const chunk of reply) chunks.push(chunk);
    const done: DoneFrame = await reply.result;
    expect(chunks.length).toBeGreaterThan(1);
    expect(chunks.join('')).toBe(done.text);
    expect(seqs).toEqual(chunks.map((_, i) => i));
    expect(done).toMatchObject({ type: 'done', id: reply.id, conversation: 'p' });
    expect(done.usage.completionTokens).toBeGreaterThan(0);
    expect(await client.ping()).toBeGreaterThanOrEqual(0);
  });

  it('cancels through an AbortSignal, resets a conversation', async () => {
    const server = await tiny.serve();
    const client = await connect(server.wsUrl);
    const controller = new AbortController();
    const reply = client.send('tell me a story', { options: LONG, signal: controller.signal });
    reply.once('token', () => controller.abort());
    const aborted = await reply.result;
    expect(aborted.finishReason).toBe('aborted');
    expect(aborted.usage.completionTokens).toBeLessThan(200);

    const conversation = 'r';
    const first = await client.send('hello', { conversation, options: GREEDY }).result;
    const second = await client.send('hello', { conversation, options: GREEDY }).result;
    expect(second.usage.promptTokens).toBeGreaterThan(first.usage.promptTokens);
    await client.reset(conversation);
    const third = await client.send('hello', { conversation, options: GREEDY }).result;
    expect(third.usage.promptTokens).toBe(first.usage.promptTokens);
    expect(third.text).toBe(first.text);
  });

  it('rejects with the server’s error code', async () => {
    const server = await tiny.serve({ limits: { maxNewTokens: 10 } }); // the bundle's default of 32 is lowered to 10
    expect(server.defaults).toEqual({ maxNewTokens: 10 });
    const client = await connect(server.wsUrl);
    const err = await client.send('hi', { options: { maxNewTokens: 11 } }).result.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VikdfClientError);
    expect(err).toMatchObject({ code: 'bad_option', option: 'maxNewTokens' });
    await expect(client.send('').result).rejects.toMatchObject({ code: 'empty_message' });
    expect((await client.send('hi').result).usage.completionTokens).toBeLessThanOrEqual(10);
    const iterated = (async () => {
      for await (const _ of client.send('hi', { options: { topP: 2 } })) void _;
    })();
    await expect(iterated).rejects.toMatchObject({ code: 'bad_option', option: 'topP' });
  });

  it('authenticates with a token (header or frame); a wrong one fails to connect with HTTP 401', async () => {
    const server = await tiny.serve({ token: 'tok' });
    const byHeader = await connect(server.wsUrl, { token: 'tok' });
    expect(byHeader.hello.authenticated).toBe(true);
    expect((await byHeader.send('hi', { options: { ...GREEDY, maxNewTokens: 3 } }).result).type).toBe('done');
    await expect(VikdfClient.connect(server.wsUrl, { token: 'nope' })).rejects.toMatchObject({ code: 'connect_failed', status: 401 });
    const later = await connect(server.wsUrl);
    expect(later.hello.authenticated).toBe(false);
    await expect(later.send('hi').result).rejects.toMatchObject({ code: 'auth_required' });
    await later.authenticate('tok');
    expect((await later.send('hi', { options: { ...GREEDY, maxNewTokens: 3 } }).result).type).toBe('done');
    const wrong = await connect(server.wsUrl);
    await expect(wrong.authenticate('bad')).rejects.toMatchObject({ code: 'unauthorized' });
    expect(await wrong.closed).toMatchObject({ code: CloseCode.unauthorized });
  });

  it('fails to connect clearly: refused origin, nothing listening', async () => {
    const server = await tiny.serve();
    await expect(VikdfClient.connect(server.wsUrl, { origin: 'http://evil.example' })).rejects.toMatchObject({ code: 'connect_failed', status: 403 });
    await server.close();
    const err = await VikdfClient.connect(server.wsUrl, { connectTimeoutMs: 2000 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'connect_failed' });
    expect((err as Error).message).toMatch(/ECONNREFUSED/);
  });

  it('replies in progress fail with connection_closed when the connection closes; sends after close fail at once', async () => {
    const server = await tiny.serve();
    const client = await connect(server.wsUrl);
    const reply = client.send('tell me a story', { options: LONG });
    await new Promise((resolve) => reply.once('token', resolve));
    const closed = client.close();
    await expect(reply.result).rejects.toMatchObject({ code: 'connection_closed', closeCode: 1000 });
    expect(await closed).toMatchObject({ code: 1000 });
    await expect(client.send('again').result).rejects.toMatchObject({ code: 'connection_closed' });
    await expect(client.ping()).rejects.toMatchObject({ code: 'connection_closed' });
  });

  it('on graceful shutdown: the reply in progress finishes, then the close (1001)', async () => {
    const server = await tiny.serve();
    const client = await connect(server.wsUrl);
    const reply = client.send('tell me a story', { options: { ...GREEDY, maxNewTokens: 60, minNewTokens: 60 } });
    await new Promise((resolve) => reply.once('token', resolve));
    const closing = server.close({ mode: 'finish' });
    expect((await reply.result).finishReason).toBe('length');
    expect(await client.closed).toEqual({ code: 1001, reason: 'server shutting down' });
    await closing;
  });

  it('reports error frames that answer none of its requests', async () => {
    const server = await tiny.serve({ limits: { frameRate: { burst: 3, perSecond: 1 }, floodCloseAfter: 1000 } });
    const client = await connect(server.wsUrl);
    const notices: VikdfClientError[] = [];
    client.on('serverError', (e) => notices.push(e));
    const pings = Array.from({ length: 6 }, () => client.ping().catch(() => undefined));
    await delay(200);
    expect(notices.map((e) => e.code)).toContain('rate_limited');
    expect(notices[0]!.retryAfterMs).toBeGreaterThan(0);
    void pings;
  });
});
