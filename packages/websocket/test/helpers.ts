// Test helpers: the tiny fixture engine, servers on free loopback ports, and raw `ws` clients that record every
// frame. Everything opened here is closed by `closeAll()` (call it in afterEach).
import { Engine } from '@vikdf/core';
import { WebSocket, type ClientOptions as WsOptions } from 'ws';
import { createServer, type ServerFrame, type ServerOptions, type VikdfServer } from '../src/index.js';
import { repoRoot, tinyBundle } from '@vikdf/test-support';

export { repoRoot };
export const bundle = tinyBundle;

/** Greedy, streamed token by token, and long enough to cancel midway. */
export const GREEDY = { numBeams: 1, doSample: false } as const;

export function loadEngine(): Promise<Engine> {
  return Engine.load(bundle, { devices: ['cpu'] });
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
