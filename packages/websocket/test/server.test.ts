// End to end, with real `ws` clients against the server on the tiny fixture: hello, the HTTP routes, streamed
// replies, conversations, cancel, reset and option checks.
import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { PROTOCOL_VERSION, createServer } from '../src/index.js';
import { GREEDY, RawClient, withTinyEngine } from './helpers.js';

const tiny = withTinyEngine();

/** Sends a raw HTTP request and returns the whole response. */
function rawHttp(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.end(request));
    let data = '';
    socket.on('data', (d) => (data += d.toString()));
    socket.on('end', () => resolve(data));
    socket.on('error', reject);
  });
}

/** Long enough to cancel midway: end-of-sequence is impossible before 200 tokens. */
const LONG = { ...GREEDY, maxNewTokens: 200, minNewTokens: 200 };

describe('connection and page', () => {
  it('hello announces protocol 1, the model, the device and the limits', async () => {
    const server = await tiny.serve({ defaults: { numBeams: 1 }, limits: { maxConcurrentRequests: 3 } });
    const c = await RawClient.open(server.wsUrl);
    const hello = c.hello;
    expect(hello).toMatchObject({
      type: 'hello',
      protocol: PROTOCOL_VERSION,
      auth: 'none',
      authenticated: true,
      model: { name: 'tiny-random', source: 'export', textEncoder: 'clip', llm: 'llama' },
      device: 'cpu',
      defaults: { numBeams: 1 },
      limits: { maxConcurrentRequests: 3, maxFrameBytes: 64 * 1024 },
    });
    expect(hello.server).toMatch(/^@vikdf\/websocket\/\d+\.\d+\.\d+/);
    expect((hello.model as { parameters: number }).parameters).toBe(29440 + 23680 + 123200);
    expect(c.frames).toHaveLength(1);
  });

  it('serves the chat page, its script and a health check; nothing else', async () => {
    const server = await tiny.serve();
    const page = await fetch(server.url);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    const html = await page.text();
    expect(html).toContain('<script src="/chat.js"');
    const script = await fetch(new URL('/chat.js', server.url));
    expect(script.status).toBe(200);
    expect(await script.text()).toContain("type: 'message'");
    expect((await fetch(new URL('/chat.css', server.url))).status).toBe(200);
    expect(await (await fetch(new URL('/healthz', server.url))).json()).toEqual({ status: 'ok', protocol: 1, model: 'tiny-random', device: 'cpu' });
    expect((await fetch(new URL('/../package.json', server.url))).status).toBe(404);
    expect((await fetch(new URL('/public/index.html', server.url))).status).toBe(404);
    expect((await fetch(server.url, { method: 'POST', body: 'x' })).status).toBe(405);
    expect(await RawClient.status(server.url.replace('http', 'ws') + 'elsewhere')).toBe(404);
    // request targets that are not URLs do not throw in the server
    for (const target of ['http://[', '//evil.example/x', '*']) {
      const reply = await rawHttp(server.address.port, `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${server.address.port}\r\nConnection: close\r\n\r\n`);
      expect(reply, target).toMatch(/^HTTP\/1\.1 (400|404) /);
    }
    expect((await fetch(new URL('/healthz?x=1', server.url))).status).toBe(200);
  });

  it("hello announces the model's budget in tokens and what it holds in characters; old turns make room, a message too long alone is refused", async () => {
    const server = await tiny.serve({ defaults: { numBeams: 1, maxNewTokens: 12 } });
    const c = await RawClient.open(server.wsUrl);
    const limits = c.hello.limits as { maxPromptTokens: number; maxMessageTokens: number; maxMessageChars: number };
    const m = tiny.engine.manifest;
    expect(limits.maxPromptTokens).toBe(m.prompt.max_length + m.model.num_query_tokens); // 64 + 4 for the fixture
    // The message gets the budget less the chat template around it and the knowledge tokens.
    expect(limits.maxMessageTokens).toBeGreaterThan(limits.maxPromptTokens / 2);
    expect(limits.maxMessageTokens).toBeLessThan(limits.maxPromptTokens - m.model.num_query_tokens);
    // An honest character figure: far under the server's cap of 4000.
    expect(limits.maxMessageChars).toBeLessThan(limits.maxMessageTokens * 8);
    expect(limits.maxMessageChars).toBeGreaterThan(limits.maxMessageTokens);
    const words = 'we walked to the park and then we had some tea and talked about the weather and our plans for the week '.repeat(20);
    const sized = (chars: number) => words.slice(0, chars).trim();
    // A message of about the announced size fits; several of them in one conversation are all answered (older
    // turns leave the window), each prompt within the budget.
    const prompts: number[] = [];
    for (let i = 0; i < 4; i++) {
      const done = await c.ask(`t${i}`, sized(Math.floor(limits.maxMessageChars * 0.8)), { conversation: 'long', options: { maxNewTokens: 12 } });
      expect(done.type, JSON.stringify(done)).toBe('done');
      prompts.push((done.usage as { promptTokens: number }).promptTokens);
    }
    for (const p of prompts) expect(p).toBeLessThanOrEqual(limits.maxPromptTokens);
    // One that alone is over the budget: a clear error naming the limit, and the conversation goes on.
    const tooLong = await c.ask('big', sized(limits.maxMessageChars * 3), { conversation: 'long' });
    expect(tooLong).toMatchObject({ type: 'error', code: 'message_too_long' });
    expect(tooLong.message).toMatch(/limit is \d+/);
    expect((await c.ask('after', 'hello', { conversation: 'long' })).type).toBe('done');
  });

  it('can run without the page', async () => {
    const server = await tiny.serve({ chatPage: false });
    expect((await fetch(server.url)).status).toBe(404);
    const c = await RawClient.open(server.wsUrl);
    expect(c.hello.type).toBe('hello');
  });
});

describe('messages', () => {
  it('streams token frames in order, then done with the full text, token counts and timings', async () => {
    const server = await tiny.serve();
    const c = await RawClient.open(server.wsUrl);
    const options = { ...GREEDY, noRepeatNgramSize: 0, maxNewTokens: 24 };
    c.send({ type: 'message', id: 'm1', conversation: 'a', text: 'do you like pizza?', options });
    const done = await c.end('m1');
    expect(done.type).toBe('done');
    const tokens = c.tokens('m1');
    expect(tokens.length).toBeGreaterThan(1); // streamed, not sent at once
    expect(tokens.map((t) => t.seq)).toEqual(tokens.map((_, i) => i));
    expect(tokens.every((t) => t.conversation === 'a')).toBe(true);
    expect(tokens.map((t) => t.text).join('')).toBe(done.text);
    // every token frame comes before the done frame
    const doneAt = c.frames.indexOf(done);
    for (const t of tokens) expect(c.frames.indexOf(t)).toBeLessThan(doneAt);
    expect(done).toMatchObject({ conversation: 'a', finishReason: expect.stringMatching(/^(length|eos)$/) });
    const usage = done.usage as { promptTokens: number; completionTokens: number };
    const timings = done.timings as { queuedMs: number; firstTokenMs: number; totalMs: number };
    expect(usage.promptTokens).toBeGreaterThan(4);
    expect(usage.completionTokens).toBeGreaterThan(0);
    expect(usage.completionTokens).toBeLessThanOrEqual(24);
    expect(timings.totalMs).toBeGreaterThanOrEqual(timings.firstTokenMs);
    // queued: until the engine took it into its batch, not until it finished
    expect(timings.firstTokenMs).toBeGreaterThanOrEqual(timings.queuedMs);
    expect(timings.queuedMs).toBeLessThan(timings.totalMs);
    // the same reply as the engine gives directly
    const direct = await tiny.engine.conversation().send('do you like pizza?', { options }).result;
    expect(done.text).toBe(direct.text);
    expect(usage).toEqual(direct.usage);
  });

  it("answers one conversation's messages in order, each seeing the earlier turns; conversations are separate", async () => {
    const server = await tiny.serve();
    const c = await RawClient.open(server.wsUrl);
    // sent back to back, without waiting
    c.send({ type: 'message', id: 'a1', conversation: 'a', text: 'hello there', options: GREEDY });
    c.send({ type: 'message', id: 'a2', conversation: 'a', text: 'how are you?', options: GREEDY });
    c.send({ type: 'message', id: 'b1', conversation: 'b', text: 'hello there', options: GREEDY });
    const [a1, a2, b1] = await Promise.all([c.end('a1'), c.end('a2'), c.end('b1')]);
    expect(c.frames.indexOf(a1)).toBeLessThan(c.frames.indexOf(a2));
    const prompt = (f: typeof a1) => (f.usage as { promptTokens: number }).promptTokens;
    expect(prompt(a2)).toBeGreaterThan(prompt(a1) + 3); // a2's context holds a1 and its reply
    expect(prompt(b1)).toBe(prompt(a1));
    expect(b1.text).toBe(a1.text);
    // a second connection's "a" is another conversation
    const other = await RawClient.open(server.wsUrl);
    const fresh = await other.ask('x1', 'hello there', { conversation: 'a' });
    expect(prompt(fresh)).toBe(prompt(a1));
  });

  it('makes up a request id when the message has none', async () => {
    const server = await tiny.serve();
    const c = await RawClient.open(server.wsUrl);
    c.send({ type: 'message', text: 'hi', options: { ...GREEDY, maxNewTokens: 4 } });
    const done = await c.waitFor((f) => f.type === 'done');
    expect(done.id).toMatch(/^srv:\d+$/);
    expect(done.conversation).toBe('default');
  });

  it("the server's ids and the client's never collide: a message without id is not a duplicate of a client id in flight", async () => {
    const server = await tiny.serve();
    const c = await RawClient.open(server.wsUrl);
    // Client ids that look like the server's own (the old "srv-N" form included) are the client's.
    c.send({ type: 'message', id: 'srv-1', conversation: 'a', text: 'tell me a story', options: LONG });
    await c.waitFor((f) => f.type === 'token' && f.id === 'srv-1');
    c.send({ type: 'message', conversation: 'b', text: 'hi', options: { ...GREEDY, maxNewTokens: 4 } });
    const made = await c.waitFor((f) => (f.type === 'done' || f.type === 'error') && f.conversation !== 'a' && f.id !== 'srv-1');
    expect(made).toMatchObject({ type: 'done', conversation: 'b' });
    expect(made.id).toMatch(/^srv:\d+$/);
    // The server's prefix is reserved: a client message id with it is refused, so replies are never ambiguous.
    c.send({ type: 'message', id: made.id, conversation: 'c', text: 'hi' });
    expect(await c.waitFor((f) => f.type === 'error' && f.id === made.id)).toMatchObject({ code: 'bad_frame' });
    // A reply under a server-made id can be cancelled by that id.
    c.send({ type: 'message', conversation: 'd', text: 'tell me a story', options: LONG });
    const first = await c.waitFor((f) => f.type === 'token' && f.conversation === 'd');
    c.send({ type: 'cancel', id: first.id });
    expect(await c.end(first.id as string)).toMatchObject({ type: 'done', finishReason: 'aborted' });
    c.send({ type: 'cancel', id: 'srv-1' });
    expect(await c.end('srv-1')).toMatchObject({ type: 'done', finishReason: 'aborted' });
  });

  it('cancel stops a reply midway; it ends with done, finishReason "aborted"', async () => {
    const server = await tiny.serve();
    const c = await RawClient.open(server.wsUrl);
    c.send({ type: 'message', id: 'long', text: 'tell me a story', options: LONG });
    await c.waitFor((f) => f.type === 'token' && f.id === 'long');
    c.send({ type: 'cancel', id: 'long' });
    const done = await c.end('long');
    expect(done.type).toBe('done');
    expect(done.finishReason).toBe('aborted');
    expect((done.usage as { completionTokens: number }).completionTokens).toBeLessThan(200);
    expect(c.tokens('long').map((t) => t.text).join('')).toBe(done.text);
    // cancelling again: nothing in progress with that id
    c.send({ type: 'cancel', id: 'long' });
    expect(await c.waitFor((f) => f.type === 'error' && f.id === 'long')).toMatchObject({ code: 'unknown_request' });
    c.send({ type: 'cancel' });
    expect(await c.waitFor((f) => f.type === 'error' && f.code === 'bad_frame')).toBeTruthy();
    // the connection still serves
    expect((await c.ask('after', 'hello', { options: { ...GREEDY, maxNewTokens: 4 } })).type).toBe('done');
  });

  it('reset forgets the history; replies in progress end (aborted) before reset_ok', async () => {
    const server = await tiny.serve();
    const c = await RawClient.open(server.wsUrl);
    const first = await c.ask('r1', 'hello there', { conversation: 'c' });
    const second = await c.ask('r2', 'and then?', { conversation: 'c' });
    const prompt = (f: typeof first) => (f.usage as { promptTokens: number }).promptTokens;
    expect(prompt(second)).toBeGreaterThan(prompt(first));
    c.send({ type: 'reset', id: 'x', conversation: 'c' });
    expect(await c.waitFor((f) => f.type === 'reset_ok' && f.id === 'x')).toMatchObject({ conversation: 'c' });
    const again = await c.ask('r3', 'hello there', { conversation: 'c' });
    expect(prompt(again)).toBe(prompt(first));
    expect(again.text).toBe(first.text);

    // reset during a reply
    c.send({ type: 'message', id: 'r4', conversation: 'c', text: 'tell me a story', options: LONG });
    await c.waitFor((f) => f.type === 'token' && f.id === 'r4');
    c.send({ type: 'reset', id: 'y', conversation: 'c' });
    const ok = await c.waitFor((f) => f.type === 'reset_ok' && f.id === 'y');
    const aborted = await c.end('r4');
    expect(aborted).toMatchObject({ type: 'done', finishReason: 'aborted' });
    expect(c.frames.indexOf(aborted)).toBeLessThan(c.frames.indexOf(ok));
    expect(prompt(await c.ask('r5', 'hello there', { conversation: 'c' }))).toBe(prompt(first));

    // resetting a conversation that does not exist is fine; the default conversation when none is named
    c.send({ type: 'reset', id: 'z' });
    expect(await c.waitFor((f) => f.type === 'reset_ok' && f.id === 'z')).toMatchObject({ conversation: 'default' });
  });

  it('refuses bad options, empty and too long messages with stable codes; the connection goes on', async () => {
    // defaults: explicit ones beyond the limits are refused; the bundle's (3 beams, 32 tokens) are lowered to them
    expect(() => createServer({ engine: tiny.engine, defaults: { numBeams: 3 }, limits: { maxNumBeams: 2 } })).toThrow(/numBeams must be <= 2/);
    expect(() => createServer({ engine: tiny.engine, defaults: { topP: 0 } })).toThrow(/invalid generation defaults.*topP/);
    expect(createServer({ engine: tiny.engine, limits: { maxNumBeams: 2, maxNewTokens: 16 } }).defaults).toEqual({ numBeams: 2, maxNewTokens: 16 });
    const server = await tiny.serve({ limits: { maxNewTokens: 64, maxNumBeams: 2, maxMessageChars: 100 } });
    const c = await RawClient.open(server.wsUrl);
    expect(c.hello.defaults).toEqual({ numBeams: 2 });
    const frame = (i: number, extra: object) => JSON.stringify({ type: 'message', id: `bad${i}`, text: 'hello', ...extra });
    const cases: [string, object][] = [
      [frame(0, { options: { maxNewTokens: 65 } }), { code: 'bad_option', option: 'maxNewTokens' }],
      [frame(1, { options: { numBeams: 3 } }), { code: 'bad_option', option: 'numBeams' }],
      [frame(2, { options: { temperature: -1 } }), { code: 'bad_option', option: 'temperature' }],
      [frame(3, { options: { max_new_tokens: 3 } }), { code: 'bad_option', option: 'max_new_tokens' }],
      [frame(4, { options: { doSample: true, numBeams: 2 } }), { code: 'bad_option', option: 'doSample' }],
      [frame(5, { options: 'fast' }), { code: 'bad_option', option: 'options' }],
      // "__proto__" as a key, as JSON.parse makes it: an unknown option, not a prototype
      ['{"type":"message","id":"bad6","text":"hello","options":{"__proto__":{"maxNewTokens":1}}}', { code: 'bad_option', option: '__proto__' }],
      [frame(7, { text: '   ' }), { code: 'empty_message' }],
      [frame(8, { text: 'x'.repeat(101) }), { code: 'message_too_long' }],
      [frame(9, { text: 42 }), { code: 'bad_frame' }],
      [frame(10, { conversation: '' }), { code: 'bad_frame' }],
      [frame(11, { conversation: 'c'.repeat(129) }), { code: 'bad_frame' }],
    ];
    for (const [i, [raw, want]] of cases.entries()) {
      c.send(raw);
      const end = await c.end(`bad${i}`);
      expect(end, raw).toMatchObject({ type: 'error', ...want });
      expect(typeof end.message).toBe('string');
    }
    expect((await c.ask('ok', 'hello', { options: { ...GREEDY, maxNewTokens: 64 } })).type).toBe('done');
  });
});
