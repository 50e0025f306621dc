// Frames the server cannot take: each gets an error frame or a documented close, and the server keeps serving
// the connection (where it stays open) and every other client.
import { describe, expect, it } from 'vitest';
import { CloseCode, type VikdfServer } from '../src/index.js';
import { GREEDY, RawClient, delay, withTinyEngine } from './helpers.js';

const tiny = withTinyEngine();

const SHORT = { ...GREEDY, maxNewTokens: 8 };

/** A second client that must still be answered in full while another misbehaves. */
async function stillServes(server: VikdfServer, c?: RawClient): Promise<void> {
  const client = c ?? (await RawClient.open(server.wsUrl));
  const id = `check-${client.frames.length}`;
  const done = await client.ask(id, 'are you still there?', { options: SHORT });
  expect(done.type).toBe('done');
  expect(client.tokens(id).map((t) => t.text).join('')).toBe(done.text);
}

describe('bad frames get an error frame and the connection goes on', () => {
  it('malformed JSON', async () => {
    const server = await tiny.serve();
    const c = await RawClient.open(server.wsUrl);
    for (const raw of ['{"type":"message",', 'not json', '', '{"type":"ping"}}']) {
      const before = c.frames.length;
      c.send(raw);
      const err = await c.waitFor((f) => c.frames.indexOf(f) >= before && f.type === 'error');
      expect(err, raw).toMatchObject({ code: 'bad_json' });
      expect(err.id).toBeUndefined();
    }
    await stillServes(server, c);
  });

  it('unknown type', async () => {
    const server = await tiny.serve();
    const c = await RawClient.open(server.wsUrl);
    c.send({ type: 'shutdown', id: 'u1' });
    expect(await c.waitFor((f) => f.type === 'error' && f.id === 'u1')).toMatchObject({ code: 'unknown_type' });
    c.send({ type: 'x'.repeat(10_000) });
    const err = await c.waitFor((f) => f.type === 'error' && f.code === 'unknown_type' && f.id === undefined);
    expect((err.message as string).length).toBeLessThan(200); // the type is not echoed in full
    await stillServes(server, c);
  });

  it('JSON that is not a frame', async () => {
    const server = await tiny.serve();
    const c = await RawClient.open(server.wsUrl);
    const raws = ['[1,2]', '42', 'null', '"message"', '{"id":"n1"}', '{"type":7,"id":"n2"}', '{"type":"ping","id":5}', `{"type":"ping","id":"${'i'.repeat(129)}"}`];
    for (const raw of raws) {
      const before = c.frames.length;
      c.send(raw);
      const err = await c.waitFor((f) => c.frames.indexOf(f) >= before && f.type === 'error');
      expect(err, raw).toMatchObject({ code: 'bad_frame' });
    }
    // a request id that is valid is echoed
    expect((await c.waitFor((f) => f.type === 'error' && f.id === 'n2')).code).toBe('bad_frame');
    await stillServes(server, c);
  });

  it('binary frame', async () => {
    const server = await tiny.serve();
    const c = await RawClient.open(server.wsUrl);
    c.send(Buffer.from(JSON.stringify({ type: 'message', id: 'b1', text: 'hello' })));
    expect(await c.waitFor((f) => f.type === 'error')).toMatchObject({ code: 'binary_not_supported' });
    expect(c.frames.some((f) => f.id === 'b1')).toBe(false); // not answered as a message
    await stillServes(server, c);
  });
});

describe('documented closes', () => {
  it('a frame over maxFrameBytes closes that connection with 1009; other clients go on', async () => {
    const server = await tiny.serve({ limits: { maxFrameBytes: 4096 } });
    const bystander = await RawClient.open(server.wsUrl);
    bystander.send({ type: 'message', id: 'during', text: 'hello', options: { ...GREEDY, maxNewTokens: 100, minNewTokens: 100 } });
    const c = await RawClient.open(server.wsUrl);
    c.send({ type: 'message', id: 'big', text: 'x'.repeat(5000) });
    expect(await c.closed).toMatchObject({ code: CloseCode.messageTooBig });
    expect(c.frames.some((f) => f.id === 'big')).toBe(false);
    // just under the limit is fine
    const d = await RawClient.open(server.wsUrl);
    d.send({ type: 'message', id: 'fits', text: 'y'.repeat(3900) });
    expect(await d.end('fits')).toMatchObject({ type: 'error', code: 'message_too_long' }); // over the engine's token budget, not the frame size
    expect((await bystander.end('during')).finishReason).toBe('length');
    await stillServes(server, bystander);
  });

  it('a text frame that is not UTF-8 closes that connection with 1007', async () => {
    const server = await tiny.serve();
    const c = await RawClient.open(server.wsUrl);
    c.ws.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
    expect((await c.closed).code).toBe(CloseCode.invalidPayload);
    await stillServes(server);
  });

  it('a message flood gets rate_limited errors, then a 1008 close; the server keeps serving others', async () => {
    const server = await tiny.serve({
      limits: { frameRate: { burst: 20, perSecond: 10 }, floodCloseAfter: 50, maxConcurrentRequests: 4 },
    });
    const bystander = await RawClient.open(server.wsUrl);
    const flooder = await RawClient.open(server.wsUrl);
    const long = { ...GREEDY, maxNewTokens: 60, minNewTokens: 60 };
    bystander.send({ type: 'message', id: 'during', text: 'hello', options: long });
    for (let i = 0; i < 2000; i++) flooder.send({ type: 'message', id: `f${i}`, conversation: `c${i % 8}`, text: 'spam', options: SHORT });
    expect(await flooder.closed).toMatchObject({ code: CloseCode.policyViolation, reason: 'rate limit exceeded' });
    const errors = flooder.frames.filter((f) => f.type === 'error');
    expect(errors.some((f) => f.code === 'rate_limited' && f.id === undefined && (f.retryAfterMs as number) > 0)).toBe(true);
    expect(errors.some((f) => f.code === 'too_many_requests')).toBe(true); // the first burst was taken, beyond 4 at once refused
    // the server wrote far fewer frames than it was sent: at most the burst's answers and one notice
    expect(flooder.frames.length).toBeLessThan(150);
    const during = await bystander.end('during');
    expect(during).toMatchObject({ type: 'done', finishReason: 'length' });
    expect(bystander.tokens('during').map((t) => t.text).join('')).toBe(during.text);
    await stillServes(server, bystander);
    await stillServes(server);
  });

  it('a sustained flood is closed with 1008 even when spaced so that some frames pass; a bursty client within the rate stays', async () => {
    // 20 frames a second allowed (burst 10); more than 20 dropped within 2 s is a flood.
    const limits = { frameRate: { burst: 10, perSecond: 20 }, floodCloseAfter: 20, floodWindowMs: 2000 };
    const server = await tiny.serve({ limits });
    const flooder = await RawClient.open(server.wsUrl);
    const bursty = await RawClient.open(server.wsUrl);
    // The flooder: 100 frames a second (5 times the rate), paced, so that the limiter lets one in every 50 ms.
    const start = performance.now();
    let sent = 0;
    const flood = setInterval(() => {
      if (flooder.ws.readyState === flooder.ws.OPEN) flooder.send({ type: 'ping', id: `f${sent++}` });
    }, 10);
    // The bursty client: 14 frames at once every second (4 over the burst, dropped), 14 a second on average.
    const bursts = (async () => {
      for (let b = 0; b < 4; b++) {
        for (let i = 0; i < 14; i++) bursty.send({ type: 'ping', id: `b${b}-${i}` });
        await delay(1000);
      }
    })();
    try {
      expect(await flooder.closed).toEqual({ code: CloseCode.policyViolation, reason: 'rate limit exceeded' });
    } finally {
      clearInterval(flood);
    }
    const closedAfter = performance.now() - start;
    // burst spent after ~0.1 s, then 80 drops a second: 21 drops after ~0.4 s (2.5 s allowed for a loaded machine)
    expect(closedAfter).toBeLessThan(2500);
    expect(flooder.frames.filter((f) => f.type === 'pong').length).toBeGreaterThan(10); // some frames did pass
    await bursts;
    expect(bursty.ws.readyState).toBe(bursty.ws.OPEN);
    expect(bursty.frames.filter((f) => f.type === 'pong').length).toBeGreaterThanOrEqual(4 * 10);
    expect(bursty.frames.some((f) => f.type === 'error' && f.code === 'rate_limited')).toBe(true); // it was limited, not closed
    await stillServes(server, bursty);
  });

  it('frames beyond the rate are dropped with one notice a second; a client that slows down is served again', async () => {
    const server = await tiny.serve({ limits: { frameRate: { burst: 5, perSecond: 50 }, floodCloseAfter: 1000 } });
    const c = await RawClient.open(server.wsUrl);
    for (let i = 0; i < 30; i++) c.send({ type: 'ping', id: `p${i}` });
    await c.waitFor((f) => f.type === 'error' && f.code === 'rate_limited');
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(c.frames.filter((f) => f.type === 'pong').length).toBeLessThan(30);
    expect(c.frames.filter((f) => f.type === 'error' && f.code === 'rate_limited')).toHaveLength(1);
    await stillServes(server, c);
  });
});
