// Test helpers: the tiny fixture engine, servers on free loopback ports, raw `ws` clients that record every
// frame, raw TCP clients that can stop reading, and plain HTTP requests with any Host header. Everything opened
// here is closed by `closeAll()` (`withTinyEngine()` registers it after each test).
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import net from 'node:net';
import { Engine } from '@vikdf/core';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { WebSocket, type ClientOptions as WsOptions } from 'ws';
import { createServer, type ChatEngine, type ServerFrame, type ServerOptions, type VikdfServer } from '../src/index.js';
import { launchBrowser, repoRoot, tinyBundle, upgradeRequest, type Browser, type Page } from '@vikdf/test-support';

export { repoRoot };
export const bundle = tinyBundle;

/** Greedy, streamed token by token, and long enough to cancel midway. */
export const GREEDY = { numBeams: 1, doSample: false } as const;

export function loadEngine(): Promise<Engine> {
  return Engine.load(bundle, { devices: ['cpu'] });
}

export interface TinySetup {
  /** The tiny fixture engine (loaded before the file's tests, closed after them). */
  readonly engine: Engine;
  /** A server on the tiny engine (or `options.engine`) on a free loopback port. */
  serve(options?: Omit<ServerOptions, 'engine'> & { engine?: ChatEngine }): Promise<VikdfServer>;
}

/**
 * The preamble of a test file on the tiny engine: loads it once before the tests, closes every server and client
 * after each test, closes the engine after the file. Call at the top level of the file.
 */
export function withTinyEngine(): TinySetup {
  let engine: Engine | undefined;
  beforeAll(async () => {
    engine = await loadEngine();
  });
  afterEach(closeAll);
  afterAll(async () => {
    await engine?.close();
  });
  const loaded = (): Engine => {
    if (!engine) throw new Error('the tiny engine is loaded in beforeAll: use it inside tests');
    return engine;
  };
  return {
    get engine() {
      return loaded();
    },
    serve: (options = {}) => startServer({ engine: loaded(), ...options }),
  };
}

const servers = new Set<VikdfServer>();
const clients = new Set<RawClient>();

export async function startServer(options: ServerOptions): Promise<VikdfServer> {
  const server = createServer({ host: '127.0.0.1', port: 0, ...options });
  servers.add(server);
  await server.listen();
  return server;
}

/** Closes every client and server the test opened. */
export async function closeAll(): Promise<void> {
  await Promise.all([...clients].map((c) => c.terminate()));
  clients.clear();
  for (const c of tcpClients) c.destroy();
  tcpClients.clear();
  await Promise.all([...proxies].map((p) => p.close()));
  proxies.clear();
  await Promise.all([...servers].map((s) => s.close({ mode: 'cancel', timeoutMs: 1000 })));
  servers.clear();
}

// Frames are plain objects; tests look at fields by name.
export type Frame = ServerFrame & Record<string, unknown>;

/** A plain `ws` client that records every frame it receives. */
export class RawClient {
  readonly frames: Frame[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: { match: (f: Frame) => boolean; resolve: (f: Frame) => void }[] = [];

  private constructor(readonly ws: WebSocket) {
    this.closed = new Promise((resolve) => {
      ws.on('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() }));
    });
    ws.on('error', () => undefined);
    ws.on('message', (data, isBinary) => {
      if (isBinary) throw new Error('the server sent a binary frame');
      const frame = JSON.parse(String(data)) as Frame;
      this.frames.push(frame);
      for (const w of [...this.waiters]) {
        if (w.match(frame)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(frame);
        }
      }
    });
  }

  /** Opens a connection and waits for the hello frame. */
  static async open(url: string, options: WsOptions = {}): Promise<RawClient> {
    const ws = new WebSocket(url, options);
    const client = new RawClient(ws);
    clients.add(client);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    });
    await client.waitFor((f) => f.type === 'hello');
    return client;
  }

  /** Tries to open a connection and returns the HTTP status of the refused upgrade (101 if accepted, -1 if none). */
  static async status(url: string, options: WsOptions = {}): Promise<number> {
    const ws = new WebSocket(url, options);
    return new Promise<number>((resolve) => {
      ws.once('unexpected-response', (req, res) => {
        resolve(res.statusCode ?? 0);
        req.destroy();
      });
      ws.once('open', () => {
        resolve(101);
        ws.terminate();
      });
      ws.on('error', () => resolve(-1));
    });
  }

  get hello(): Frame {
    return this.frames[0]!;
  }

  send(frame: object | string | Buffer): void {
    this.ws.send(typeof frame === 'string' || Buffer.isBuffer(frame) ? frame : JSON.stringify(frame));
  }

  /** The first frame so far or to come that matches. */
  waitFor(match: (f: Frame) => boolean, timeoutMs = 15_000): Promise<Frame> {
    const seen = this.frames.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`no matching frame within ${timeoutMs} ms; got ${JSON.stringify(this.frames.slice(-5))}`));
      }, timeoutMs);
      const done = (f: Frame) => {
        clearTimeout(timer);
        resolve(f);
      };
      this.waiters.push({ match, resolve: done });
    });
  }

  /** The done or error frame that ends request `id`. */
  end(id: string, timeoutMs?: number): Promise<Frame> {
    return this.waitFor((f) => f.id === id && (f.type === 'done' || f.type === 'error'), timeoutMs);
  }

  /** Token frames of request `id`, in arrival order. */
  tokens(id: string): Frame[] {
    return this.frames.filter((f) => f.type === 'token' && f.id === id);
  }

  /** Sends a message and waits for its done (or error) frame. */
  async ask(id: string, text: string, extra: object = {}): Promise<Frame> {
    this.send({ type: 'message', id, text, options: GREEDY, ...extra });
    return this.end(id);
  }

  close(): Promise<{ code: number; reason: string }> {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
    return this.closed;
  }

  async terminate(): Promise<void> {
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
    await this.closed;
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` until it returns something truthy; fails after `timeoutMs` with `what`. */
export async function until<T>(check: () => T | undefined | false, what: string, timeoutMs = 15_000, everyMs = 10): Promise<T> {
  const start = performance.now();
  for (;;) {
    const value = check();
    if (value) return value;
    if (performance.now() - start > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await delay(everyMs);
  }
}

/** A plain HTTP GET with the headers given (Host included): the status, headers and body. */
export function httpGet(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * A WebSocket client on a bare TCP socket that reads only when told to: it upgrades, then stops reading (what
 * the server sends stays in the socket buffers) until `read()`. Frames are parsed by hand, so nothing answers
 * the server's pings on its behalf: it is what a client that stops reading looks like from the server.
 */
export class TcpClient {
  /** Server frames parsed so far (text frames as JSON; the close frame as { type: 'close', code, reason }). */
  readonly frames: Record<string, unknown>[] = [];
  readonly ended: Promise<void>;
  private buffer = Buffer.alloc(0);
  private upgraded = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('error', () => undefined);
    this.ended = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
  }

  /** Connects and upgrades, then stops reading before anything the server sends after the upgrade is read. */
  static async open(wsUrl: string, headers: Record<string, string> = {}): Promise<TcpClient> {
    const { hostname, port } = new URL(wsUrl);
    const socket = net.connect(Number(port), hostname);
    const client = new TcpClient(socket);
    tcpClients.add(client);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    socket.write(upgradeRequest(wsUrl, headers));
    return client;
  }

  /** Stops reading: the kernel buffers what arrives; nothing answers pings. */
  pause(): void {
    this.socket.pause();
  }

  /** Reads again. */
  read(): void {
    this.socket.resume();
  }

  /** Writes one masked text frame (clients must mask). */
  send(frame: object): void {
    const payload = Buffer.from(JSON.stringify(frame));
    const mask = randomBytes(4);
    const header =
      payload.length < 126
        ? Buffer.from([0x81, 0x80 | payload.length])
        : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
    this.socket.write(Buffer.concat([header, mask, Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!))]));
  }

  destroy(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    if (!this.upgraded) {
      const end = this.buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this.buffer.subarray(0, end).toString('latin1');
      if (!head.startsWith('HTTP/1.1 101')) throw new Error(`upgrade refused: ${head.split('\r\n')[0]}`);
      this.upgraded = true;
      this.buffer = this.buffer.subarray(end + 4);
    }
    for (;;) {
      if (this.buffer.length < 2) return;
      const opcode = this.buffer[0]! & 0x0f;
      let length = this.buffer[1]! & 0x7f;
      let at = 2;
      if (length === 126) {
        if (this.buffer.length < 4) return;
        length = this.buffer.readUInt16BE(2);
        at = 4;
      } else if (length === 127) {
        if (this.buffer.length < 10) return;
        length = Number(this.buffer.readBigUInt64BE(2));
        at = 10;
      }
      if (this.buffer.length < at + length) return;
      const payload = this.buffer.subarray(at, at + length);
      this.buffer = this.buffer.subarray(at + length);
      if (opcode === 0x1) this.frames.push(JSON.parse(payload.toString('utf8')) as Record<string, unknown>);
      else if (opcode === 0x8) this.frames.push({ type: 'close', code: payload.length >= 2 ? payload.readUInt16BE(0) : 1005, reason: payload.subarray(2).toString('utf8') });
    }
  }
}

const tcpClients = new Set<TcpClient>();

export interface TcpProxy {
  /** Its own port. */
  readonly port: number;
  /** The loopback port it forwards to (may be set after it started). */
  target: number;
  /** Cuts every connection through it at once; later connections go through again. */
  drop(): void;
  close(): Promise<void>;
}

/**
 * A TCP proxy on a free loopback port to `target`: `drop()` cuts every connection through it (a network failure,
 * or a server killed, as the client sees it: no close frame).
 */
export async function tcpProxy(target = 0): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((inbound) => {
    const outbound = net.connect(proxy.target, '127.0.0.1');
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        sockets.delete(s);
        inbound.destroy();
        outbound.destroy();
      });
    }
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const proxy: TcpProxy = {
    port: (server.address() as net.AddressInfo).port,
    target,
    drop: () => {
      for (const s of sockets) s.resetAndDestroy();
    },
    close: () =>
      new Promise<void>((resolve) => {
        proxy.drop();
        server.close(() => resolve());
      }),
  };
  proxies.add(proxy);
  return proxy;
}

const proxies = new Set<{ close(): Promise<void> }>();

/** A page in headless Chromium, with the frames its WebSockets received and the errors it logged. */
export interface ChatPage {
  page: Page;
  frames: Record<string, unknown>[];
  /** Uncaught errors and console errors (a CSP violation shows up here). */
  problems: string[];
}

/**
 * One browser for the test file (launched before its tests; every test fails with the reason when it cannot
 * start, none is skipped), and fresh pages whose contexts are closed after each test. Console errors matching
 * `expectedConsoleErrors` (e.g. a connection the test cut on purpose) are not counted as problems.
 */
export function useChatPages(expectedConsoleErrors?: RegExp): { newPage(): Promise<ChatPage> } {
  let browser: Browser | undefined;
  let launchError: Error | undefined;
  const pages: Page[] = [];
  beforeAll(async () => {
    try {
      browser = await launchBrowser();
    } catch (err) {
      launchError = err as Error;
    }
  }, 90_000);
  afterEach(async () => {
    await Promise.all(pages.splice(0).map((p) => p.context().close()));
  });
  afterAll(async () => {
    await browser?.close();
  });
  return {
    async newPage() {
      if (!browser) throw launchError ?? new Error('no browser');
      const page = await (await browser.newContext()).newPage();
      pages.push(page);
      const frames: Record<string, unknown>[] = [];
      const problems: string[] = [];
      page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
      page.on('console', (msg) => {
        if (msg.type() === 'error' && !expectedConsoleErrors?.test(msg.text())) problems.push(`console: ${msg.text()}`);
      });
      page.on('websocket', (ws) => ws.on('framereceived', ({ payload }) => frames.push(JSON.parse(String(payload)) as Record<string, unknown>)));
      return { page, frames, problems };
    },
  };
}
