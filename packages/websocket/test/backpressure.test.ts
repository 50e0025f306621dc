// Backpressure with real `ws` clients that stop reading, and clients on bare TCP sockets that never read. The kernel's loopback socket buffers take about 4 MB
// before anything waits in the server (ws bufferedAmount), far more than the tiny model writes in a test, so a
// fast text source stands in for the engine here: it streams megabytes in 1 KiB chunks as fast as the event loop
// allows. Everything else (server, protocol, sockets, clients) is real.
import path from 'node:path';
import { Generation, readManifest, type BundleManifest, type GenerationResult } from '@vikdf/core';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CloseCode, type ChatEngine, type DisconnectInfo, type VikdfServer } from '../src/index.js';
import { RawClient, TcpClient, bundle, closeAll, delay, startServer, until } from './helpers.js';

const CHUNK = 'abcdefgh'.repeat(128); // 1 KiB
const FLOOD_BYTES = 12 * 1024 * 1024;

let manifest: BundleManifest;
beforeAll(async () => {
  manifest = await readManifest(path.resolve(bundle));
});
afterEach(closeAll);

/** An engine whose replies to "flood me" are 12 MiB of text in 1 KiB chunks; other messages get "ok". */
function fastSource(): ChatEngine & { chunks: number; finished: boolean } {
  const source = {
    manifest: undefined as unknown as BundleManifest,
    provider: { device: 'cpu' as const, skipped: [] },
    chunks: 0,
    finished: false,
    conversation: () => ({
      send(text: string): Generation {
        let aborted = false;
        const g = new Generation(() => (aborted = true));
        const parts: string[] = [];
        const total = text === 'flood me' ? FLOOD_BYTES : 0;
        const finish = (finishReason: GenerationResult['finishReason']) => {
          source.finished = true;
          const all = parts.join('');
          g.finish({ text: all, tokenIds: [], finishReason, usage: { promptTokens: 1, completionTokens: parts.length }, timings: { queuedMs: 0, firstTokenMs: 0, totalMs: 0 } });
        };
        const step = () => {
          if (aborted) return finish('aborted');
          if (parts.length * CHUNK.length >= total) {
            if (!total) {
              parts.push('ok');
              g.pushText('ok', [1]);
            }
            return finish('length');
          }
          parts.push(CHUNK);
          source.chunks++;
          g.pushText(CHUNK, [1]);
          setImmediate(step);
        };
        setImmediate(step);
        return g;
      },
    }),
  };
  source.manifest = manifest;
  return source;
}

function stateOf(server: VikdfServer, connection: string) {
  return server.connectionsInfo().find((c) => c.connection === connection);
}

describe('a client that stops reading', () => {
  it('gets its tokens merged, the server buffers at most about the high-water mark, and all arrives once it reads', async () => {
    const source = fastSource();
    const hwm = 256 * 1024;
    const server = await startServer({ engine: source, limits: { highWaterMark: hwm, maxBufferedBytes: 64 * 1024 * 1024, stallTimeoutMs: 60_000 } });
    const slow = await RawClient.open(server.wsUrl);
    const connection = slow.hello.connection as string;
    slow.send({ type: 'message', id: 'big', text: 'flood me' });
    slow.ws.pause(); // stop reading: the socket buffers fill up
    let maxBuffered = 0;
    while (!source.finished) {
      maxBuffered = Math.max(maxBuffered, stateOf(server, connection)?.bufferedAmount ?? 0);
      await delay(2);
    }
    await delay(50);
    const state = stateOf(server, connection)!;
    maxBuffered = Math.max(maxBuffered, state.bufferedAmount);
    expect(maxBuffered).toBeGreaterThan(hwm); // the reader did fall behind: the test means something
    expect(maxBuffered).toBeLessThan(hwm + 64 * 1024); // bounded: one merged frame at most over the mark
    expect(state.stalledMs).toBeGreaterThan(0);
    expect(state.requests).toBe(1); // the reply is not done until its frames are sent

    // Others are served meanwhile.
    const other = await RawClient.open(server.wsUrl);
    expect(await other.ask('o', 'hello')).toMatchObject({ type: 'done', text: 'ok' });

    slow.ws.resume();
    const done = await slow.end('big', 30_000);
    expect(done.type).toBe('done');
    const tokens = slow.tokens('big');
    expect(tokens.map((t) => t.seq)).toEqual(tokens.map((_, i) => i));
    const text = tokens.map((t) => t.text as string).join('');
    expect(text.length).toBe(FLOOD_BYTES);
    expect(text).toBe(done.text);
    expect(tokens.length).toBeLessThan(source.chunks * 0.75); // merged: fewer frames than chunks
    expect(Math.max(...tokens.map((t) => (t.text as string).length))).toBeLessThanOrEqual(16 * 1024);
    expect(stateOf(server, connection)!.requests).toBe(0);
    // the done frame (12 MiB of text) went over the mark once more; the buffer drains now that the client reads
    for (let i = 0; i < 500 && stateOf(server, connection)!.stalledMs > 0; i++) await delay(10);
    expect(stateOf(server, connection)).toMatchObject({ bufferedAmount: 0, stalledMs: 0 });
  });

  it('is closed with 4002 when it stays stalled past stallTimeoutMs', async () => {
    const source = fastSource();
    const server = await startServer({ engine: source, limits: { highWaterMark: 64 * 1024, stallTimeoutMs: 300, closeGraceMs: 10_000 } });
    const disconnects: { reason: string }[] = [];
    server.on('disconnect', (d) => disconnects.push(d));
    const slow = await RawClient.open(server.wsUrl);
    const connection = slow.hello.connection as string;
    slow.send({ type: 'message', id: 'big', text: 'flood me' });
    slow.ws.pause();
    const t = performance.now();
    while (!stateOf(server, connection)?.closing) {
      expect(performance.now() - t).toBeLessThan(20_000);
      await delay(10);
    }
    expect(stateOf(server, connection)!.stalledMs).toBeGreaterThanOrEqual(300);
    slow.ws.resume(); // read what was buffered, then the close frame
    expect(await slow.closed).toEqual({ code: CloseCode.slowReader, reason: 'reader too slow' });
    expect(slow.frames.some((f) => f.type === 'done')).toBe(false);
    await delay(20);
    expect(disconnects).toContainEqual(expect.objectContaining({ reason: 'reader too slow' }));
    expect(server.connectionCount).toBe(0);
  });

  it('is dropped after closeGraceMs when it does not read the close frame either', async () => {
    const source = fastSource();
    // (a stall timeout well above the time a loaded machine takes to answer a ping, so that only the pause counts)
    const server = await startServer({ engine: source, limits: { highWaterMark: 64 * 1024, stallTimeoutMs: 1000, closeGraceMs: 200 } });
    const slow = await RawClient.open(server.wsUrl);
    slow.send({ type: 'message', id: 'big', text: 'flood me' });
    slow.ws.pause();
    const gone = new Promise((resolve) => server.on('disconnect', resolve));
    expect(await gone).toMatchObject({ code: 1006, reason: 'reader too slow' });
    expect(server.connectionCount).toBe(0);
    slow.ws.resume();
    expect((await slow.closed).code).toBe(1006);
  });
});

describe('a client that never reads, with little sent to it (the kernel takes it all)', () => {
  it('is closed with 4002 once what was sent stays unacknowledged for stallTimeoutMs, though nothing waits in the server', async () => {
    const stallTimeoutMs = 500;
    const server = await startServer({ engine: fastSource(), limits: { stallTimeoutMs, closeGraceMs: 10_000 } });
    const opened = new Promise<number>((resolve) => server.once('connection', () => resolve(performance.now())));
    const gone = new Promise<DisconnectInfo>((resolve) => server.once('disconnect', resolve));
    const c = await TcpClient.open(server.wsUrl);
    c.pause(); // from now on nothing is read, and nothing answers the server's pings
    c.send({ type: 'message', id: 'm', text: 'hello' });
    const openedAt = await opened;
    const state = await until(() => server.connectionsInfo().find((s) => s.closing), 'the server closing the connection', 5000, 5);
    const after = performance.now() - openedAt;
    // Everything went into the socket: the server's own buffer is empty, so only acknowledgements can tell.
    expect(state.bufferedAmount).toBe(0);
    expect(state.unacknowledgedBytes).toBeGreaterThan(0);
    expect(after).toBeGreaterThanOrEqual(stallTimeoutMs - 20);
    expect(after).toBeLessThan(stallTimeoutMs + 1500); // the documented bound is stallTimeoutMs + the probe interval (125 ms here)
    c.read(); // the client looks again: the reply, then the close frame, are there
    await until(() => c.frames.find((f) => f.type === 'close'), 'the close frame', 5000);
    expect(c.frames.map((f) => f.type)).toEqual(['hello', 'token', 'done', 'close']);
    expect(c.frames.at(-1)).toMatchObject({ code: CloseCode.slowReader, reason: 'reader too slow' });
    c.destroy();
    expect(await gone).toMatchObject({ reason: 'reader too slow' });
  });

  it('is closed with 4002 at the heartbeat when that comes first, not dropped as if it were gone', async () => {
    const server = await startServer({ engine: fastSource(), limits: { heartbeatMs: 300, closeGraceMs: 10_000 } }); // stallTimeoutMs 30 s
    const gone = new Promise<DisconnectInfo>((resolve) => server.once('disconnect', resolve));
    const c = await TcpClient.open(server.wsUrl);
    c.pause();
    c.send({ type: 'message', id: 'm', text: 'hello' });
    const t = performance.now();
    await until(() => server.connectionsInfo().find((s) => s.closing), 'the server closing the connection', 5000, 5);
    expect(performance.now() - t).toBeLessThan(2 * 300 + 1000);
    c.read();
    await until(() => c.frames.find((f) => f.type === 'close'), 'the close frame', 5000);
    expect(c.frames.at(-1)).toMatchObject({ code: CloseCode.slowReader, reason: 'reader too slow' });
    c.destroy();
    expect(await gone).toMatchObject({ reason: 'reader too slow' });
  });

  it('a client that reads stays connected: its acknowledgements keep the unread age near zero', async () => {
    const stallTimeoutMs = 1500;
    const server = await startServer({ engine: fastSource(), limits: { stallTimeoutMs, heartbeatMs: 500 } });
    const c = await RawClient.open(server.wsUrl);
    const start = performance.now();
    let maxStalled = 0;
    // twice as long as the stall timeout, sending now and then
    for (let i = 0; performance.now() - start < 2 * stallTimeoutMs; i++) {
      expect(await c.ask(`m${i}`, 'hello')).toMatchObject({ type: 'done', text: 'ok' });
      await delay(150);
      maxStalled = Math.max(maxStalled, server.connectionsInfo()[0]!.stalledMs);
    }
    expect(c.ws.readyState).toBe(c.ws.OPEN);
    expect(server.connectionsInfo()[0]!.closing).toBe(false);
    expect(maxStalled).toBeLessThan(stallTimeoutMs);
  });
});
