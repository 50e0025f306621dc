// The server's limits with real `ws` clients: concurrency, conversations, rates per IP, connections per IP,
// idle and heartbeat timeouts, bearer-token auth, origins, and graceful shutdown.
import { describe, expect, it } from 'vitest';
import { CloseCode } from '../src/index.js';
import { GREEDY, RawClient, delay, httpGet, withTinyEngine } from './helpers.js';

const tiny = withTinyEngine();

const SHORT = { ...GREEDY, maxNewTokens: 6 };
const LONG = { ...GREEDY, maxNewTokens: 150, minNewTokens: 150 };

describe('per connection', () => {
  it('at most maxConcurrentRequests replies in progress; a reply counts until its done frame', async () => {
    const server = await tiny.serve({ limits: { maxConcurrentRequests: 2 } });
    const c = await RawClient.open(server.wsUrl);
    for (const id of ['q1', 'q2', 'q3']) c.send({ type: 'message', id, conversation: id, text: 'hello', options: LONG });
    expect(await c.end('q3')).toMatchObject({ type: 'error', code: 'too_many_requests' });
    c.send({ type: 'message', id: 'q1', conversation: 'other', text: 'hello', options: SHORT });
    expect(await c.waitFor((f) => f.type === 'error' && f.id === 'q1')).toMatchObject({ code: 'duplicate_id' });
    const q2 = await c.waitFor((f) => f.type === 'done' && f.id === 'q2');
    const q1 = await c.waitFor((f) => f.type === 'done' && f.id === 'q1');
    expect([q1.finishReason, q2.finishReason]).toEqual(['length', 'length']);
    // free again
    expect((await c.ask('q4', 'hello', { options: SHORT })).type).toBe('done');
  });

  it('at most maxConversations conversations; reset frees one', async () => {
    const server = await tiny.serve({ limits: { maxConversations: 2 } });
    const c = await RawClient.open(server.wsUrl);
    expect((await c.ask('a', 'hi', { conversation: 'one', options: SHORT })).type).toBe('done');
    expect((await c.ask('b', 'hi', { conversation: 'two', options: SHORT })).type).toBe('done');
    expect(await c.ask('c', 'hi', { conversation: 'three', options: SHORT })).toMatchObject({ type: 'error', code: 'too_many_conversations' });
    expect((await c.ask('d', 'again', { conversation: 'one', options: SHORT })).type).toBe('done');
    c.send({ type: 'reset', id: 'r', conversation: 'one' });
    await c.waitFor((f) => f.type === 'reset_ok');
    expect((await c.ask('e', 'hi', { conversation: 'three', options: SHORT })).type).toBe('done');
  });

  it('closes an idle connection with 4000; a reply in progress is not idleness', async () => {
    const server = await tiny.serve({ limits: { idleTimeoutMs: 300 } });
    const c = await RawClient.open(server.wsUrl);
    const busy = await RawClient.open(server.wsUrl);
    busy.send({ type: 'message', id: 'slow', text: 'hello', options: { ...GREEDY, maxNewTokens: 200, minNewTokens: 200 } });
    const t = performance.now();
    expect(await c.closed).toEqual({ code: CloseCode.idleTimeout, reason: 'idle timeout' });
    expect(performance.now() - t).toBeGreaterThanOrEqual(250);
    expect(performance.now() - t).toBeLessThan(3000);
    // the busy one was not idle while its reply streamed (on a loaded machine it may take longer than 300 ms)
    expect((await busy.end('slow')).type).toBe('done');
    expect(await busy.closed).toMatchObject({ code: CloseCode.idleTimeout });
  });

  it('heartbeats: answers app-level pings; drops a client that has read everything but stops answering pings', async () => {
    const server = await tiny.serve({ limits: { heartbeatMs: 200 } });
    const good = await RawClient.open(server.wsUrl);
    let pings = 0;
    good.ws.on('ping', () => pings++);
    // It answers one ping (so the server knows it read its hello), then nothing: it is gone, not slow.
    const dead = await RawClient.open(server.wsUrl, { autoPong: false });
    dead.ws.once('ping', (data: Buffer) => dead.ws.pong(data));
    const disconnects: { code: number; reason: string }[] = [];
    server.on('disconnect', (info) => disconnects.push(info));
    expect(await dead.closed).toMatchObject({ code: 1006 }); // dropped without a close frame
    await delay(300);
    expect(disconnects).toContainEqual(expect.objectContaining({ reason: 'heartbeat timeout' }));
    expect(pings).toBeGreaterThanOrEqual(2);
    good.send({ type: 'ping', id: 'hb' });
    const pong = await good.waitFor((f) => f.type === 'pong');
    expect(pong.id).toBe('hb');
    expect(Math.abs((pong.time as number) - Date.now())).toBeLessThan(5000);
    expect(good.ws.readyState).toBe(good.ws.OPEN);
  });
});

describe('per IP address', () => {
  it('messages over the per-IP rate get rate_limited, across connections', async () => {
    const server = await tiny.serve({ limits: { messageRatePerIp: { burst: 3, perSecond: 0.2 } } });
    const a = await RawClient.open(server.wsUrl);
    const b = await RawClient.open(server.wsUrl);
    expect((await a.ask('1', 'hi', { options: SHORT })).type).toBe('done');
    expect((await b.ask('2', 'hi', { options: SHORT })).type).toBe('done');
    expect((await a.ask('3', 'hi', { options: SHORT })).type).toBe('done');
    const limited = await b.ask('4', 'hi', { options: SHORT });
    expect(limited).toMatchObject({ type: 'error', code: 'rate_limited' });
    expect(limited.retryAfterMs).toBeGreaterThan(1000);
    expect(limited.retryAfterMs).toBeLessThanOrEqual(5000);
    // pings are not messages
    a.send({ type: 'ping', id: 'p' });
    expect((await a.waitFor((f) => f.type === 'pong')).id).toBe('p');
  });

  it('more than maxConnectionsPerIp connections get HTTP 429 at upgrade; more than maxConnections 503', async () => {
    const server = await tiny.serve({ limits: { maxConnectionsPerIp: 2 } });
    const a = await RawClient.open(server.wsUrl);
    await RawClient.open(server.wsUrl);
    expect(await RawClient.status(server.wsUrl)).toBe(429);
    await a.close();
    await delay(50);
    expect(await RawClient.status(server.wsUrl)).toBe(101);
    const full = await tiny.serve({ limits: { maxConnections: 1 } });
    await RawClient.open(full.wsUrl);
    expect(await RawClient.status(full.wsUrl)).toBe(503);
  });
});

describe('bearer token', () => {
  it('requires auth before messages; a wrong token closes with 4001; the right one opens the door', async () => {
    const server = await tiny.serve({ token: 's3cret-token' });
    const c = await RawClient.open(server.wsUrl);
    expect(c.hello).toMatchObject({ auth: 'required', authenticated: false, model: { name: 'tiny-random' } });
    expect(await c.ask('m', 'hi', { options: SHORT })).toMatchObject({ type: 'error', code: 'auth_required' });
    c.send({ type: 'reset', id: 'r' });
    expect(await c.end('r')).toMatchObject({ code: 'auth_required' });
    c.send({ type: 'ping', id: 'p' });
    await c.waitFor((f) => f.type === 'pong'); // pings need no auth
    c.send({ type: 'auth', id: 'a', token: 's3cret-tokem' });
    expect(await c.waitFor((f) => f.type === 'error' && f.id === 'a')).toMatchObject({ code: 'unauthorized' });
    expect(await c.closed).toEqual({ code: CloseCode.unauthorized, reason: 'unauthorized' });

    const d = await RawClient.open(server.wsUrl);
    d.send({ type: 'auth', id: 'a', token: 's3cret-token' });
    await d.waitFor((f) => f.type === 'auth_ok' && f.id === 'a');
    expect((await d.ask('m', 'hi', { options: SHORT })).type).toBe('done');
  });

  it('accepts the token in an Authorization header; refuses a wrong one with HTTP 401', async () => {
    const server = await tiny.serve({ token: 's3cret-token' });
    const c = await RawClient.open(server.wsUrl, { headers: { Authorization: 'Bearer s3cret-token' } });
    expect(c.hello).toMatchObject({ auth: 'required', authenticated: true });
    expect((await c.ask('m', 'hi', { options: SHORT })).type).toBe('done');
    expect(await RawClient.status(server.wsUrl, { headers: { Authorization: 'Bearer nope' } })).toBe(401);
    expect(await RawClient.status(server.wsUrl, { headers: { Authorization: 'Basic czNjcmV0LXRva2Vu' } })).toBe(401);
    expect(await RawClient.status(server.wsUrl, { headers: { Authorization: 'Bearer s3cret-token-and-more' } })).toBe(401);
  });

  it('closes with 4001 a connection that does not authenticate in time', async () => {
    const server = await tiny.serve({ token: 't', limits: { authTimeoutMs: 200 } });
    const c = await RawClient.open(server.wsUrl);
    expect(await c.closed).toEqual({ code: CloseCode.unauthorized, reason: 'authentication timeout' });
  });
});

describe('origins', () => {
  it('by default: the server’s own page and clients without Origin; others get HTTP 403', async () => {
    const server = await tiny.serve();
    const own = server.url.replace(/\/$/, '');
    expect(await RawClient.status(server.wsUrl, { origin: own })).toBe(101);
    expect(await RawClient.status(server.wsUrl)).toBe(101);
    expect(await RawClient.status(server.wsUrl, { origin: 'http://evil.example' })).toBe(403);
    expect(await RawClient.status(server.wsUrl, { origin: 'null' })).toBe(403);
  });

  it('an allow-list adds origins; "*" allows any', async () => {
    const server = await tiny.serve({ allowedOrigins: ['https://app.example'] });
    expect(await RawClient.status(server.wsUrl, { origin: 'https://app.example' })).toBe(101);
    expect(await RawClient.status(server.wsUrl, { origin: 'https://app.example.evil' })).toBe(403);
    expect(await RawClient.status(server.wsUrl, { origin: server.url.replace(/\/$/, '') })).toBe(101);
    const any = await tiny.serve({ allowedOrigins: ['*'] });
    expect(await RawClient.status(any.wsUrl, { origin: 'http://evil.example' })).toBe(101);
  });
});

describe('graceful shutdown', () => {
  it('finish: replies in progress complete, new messages get shutting_down, then 1001; no new connections', async () => {
    const server = await tiny.serve();
    const c = await RawClient.open(server.wsUrl);
    c.send({ type: 'message', id: 'inflight', text: 'hello', options: LONG });
    await c.waitFor((f) => f.type === 'token');
    const closing = server.close({ mode: 'finish', timeoutMs: 20_000 });
    c.send({ type: 'message', id: 'late', text: 'hello', options: SHORT });
    expect(await c.end('late')).toMatchObject({ type: 'error', code: 'shutting_down' });
    expect(await RawClient.status(server.wsUrl)).toBe(503); // no new connections while it drains
    const done = await c.end('inflight');
    expect(done).toMatchObject({ type: 'done', finishReason: 'length' });
    expect((done.usage as { completionTokens: number }).completionTokens).toBe(150);
    expect(await c.closed).toEqual({ code: CloseCode.goingAway, reason: 'server shutting down' });
    await closing;
    expect(server.connectionCount).toBe(0);
    await expect(fetch(server.url)).rejects.toThrow();
  });

  it('/healthz answers 503 while the server drains, then the listener closes', async () => {
    const server = await tiny.serve();
    expect(await httpGet(new URL('/healthz', server.url).href)).toMatchObject({ status: 200 });
    const c = await RawClient.open(server.wsUrl);
    c.send({ type: 'message', id: 'inflight', text: 'hello', options: LONG });
    await c.waitFor((f) => f.type === 'token');
    const closing = server.close({ mode: 'finish', timeoutMs: 20_000 });
    const health = await httpGet(new URL('/healthz', server.url).href);
    expect(health.status).toBe(503);
    expect(JSON.parse(health.body)).toMatchObject({ status: 'shutting_down', protocol: 1, model: 'tiny-random' });
    expect(health.headers.connection).toBe('close');
    expect((await httpGet(server.url)).status).toBe(503); // the page too: a new visitor could not connect
    expect(await c.end('inflight')).toMatchObject({ type: 'done', finishReason: 'length' });
    await closing;
    await expect(httpGet(new URL('/healthz', server.url).href)).rejects.toThrow(/ECONNREFUSED/);
  });

  it('cancel: replies in progress end aborted, then 1001', async () => {
    const server = await tiny.serve();
    const c = await RawClient.open(server.wsUrl);
    c.send({ type: 'message', id: 'inflight', text: 'hello', options: LONG });
    await c.waitFor((f) => f.type === 'token');
    await server.close({ mode: 'cancel' });
    expect(await c.end('inflight')).toMatchObject({ type: 'done', finishReason: 'aborted' });
    expect(await c.closed).toMatchObject({ code: CloseCode.goingAway });
  });

  it('finish with a timeout: replies still running then are stopped', async () => {
    const server = await tiny.serve();
    const c = await RawClient.open(server.wsUrl);
    c.send({ type: 'message', id: 'inflight', text: 'hello', options: { ...GREEDY, maxNewTokens: 250, minNewTokens: 250 } });
    await c.waitFor((f) => f.type === 'token');
    await server.close({ mode: 'finish', timeoutMs: 1 });
    expect(await c.end('inflight')).toMatchObject({ type: 'done', finishReason: 'aborted' });
    expect(await c.closed).toMatchObject({ code: CloseCode.goingAway });
  });
});
