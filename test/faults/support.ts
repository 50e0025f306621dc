// What the fault suite shares: paths, a WebSocket client that checks every frame against the protocol's promises
// (docs/websocket-protocol.md), a child-process server, heap measurement after garbage collection, a client that
// never reads. Everything runs on 127.0.0.1.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { repoRoot, tinyBundle, upgradeRequest } from '@vikdf/test-support';

export { repoRoot, tinyBundle };
export const serverScript = path.join(repoRoot, 'test/faults/ws-server.mjs');

// The repository root has no dependencies of its own: `ws` comes from the package that uses it.
interface WsSocket {
  readyState: number;
  bufferedAmount: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  terminate(): void;
  on(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): void;
  on(event: 'close', listener: (code: number, reason: Buffer) => void): void;
  on(event: 'error', listener: (err: Error) => void): void;
  once(event: 'open', listener: () => void): void;
  once(event: 'error', listener: (err: Error) => void): void;
  once(event: 'unexpected-response', listener: (req: unknown, res: { statusCode?: number }) => void): void;
}
const { WebSocket } = createRequire(path.join(repoRoot, 'packages/websocket/package.json'))('ws') as {
  WebSocket: { new (url: string): WsSocket; OPEN: number; CLOSED: number };
};

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` every 20 ms; rejects with `what` after `timeoutMs`. */
export async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const start = performance.now();
  while (!check()) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(20);
  }
}

/** The error codes docs/websocket-protocol.md lists: an error frame with another code is not a "clear error". */
export const STABLE_ERROR_CODES = new Set([
  'bad_json',
  'bad_frame',
  'unknown_type',
  'binary_not_supported',
  'unsupported_protocol',
  'auth_required',
  'unauthorized',
  'rate_limited',
  'too_many_requests',
  'too_many_conversations',
  'duplicate_id',
  'unknown_request',
  'shutting_down',
  'empty_message',
  'message_too_long',
  'bad_option',
  'queue_full',
  'engine_closed',
  'generation_failed',
]);
const FINISH_REASONS = new Set(['eos', 'length', 'stop', 'aborted']);

type Frame = Record<string, unknown> & { type: string; id?: string };

/** One message sent, and everything the server answered to it. */
export interface RequestRecord {
  id: string;
  conversation: string;
  text: string;
  sentAt: number;
  /** Texts of the token frames, in order. */
  tokens: string[];
  /** The done or error frame that ended it (undefined: the connection closed first). */
  end?: Frame;
  endedAt?: number;
}

/**
 * A raw protocol client that records every frame and checks, as each arrives, what the protocol promises for
 * a request: token frames numbered 0, 1, 2, …; one `done` or `error` at the end and nothing after it; the done
 * text equal to the token texts joined; error codes from the documented list; no frame for an id never sent.
 * Broken promises are collected in `violations` (the tests expect it empty).
 */
export class ProtocolClient {
  readonly requests = new Map<string, RequestRecord>();
  readonly violations: string[] = [];
  /** Error frames without an id (notices about the connection). */
  readonly notices: Frame[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  closeCode: number | undefined;
  hello: Frame | undefined;
  private waiters = new Map<string, () => void>();
  private firstToken: (() => void) | undefined;

  private constructor(
    readonly ws: WsSocket,
    readonly name: string,
  ) {
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeCode = code;
        for (const wake of this.waiters.values()) wake();
        this.waiters.clear();
        resolve({ code, reason: reason.toString() });
      });
    });
    ws.on('error', () => undefined);
    ws.on('message', (data, isBinary) => this.onFrame(data, isBinary));
  }

  /** Connects and waits for `hello`; retries a refused connection for up to `retryForMs` (a restarting server). */
  static async open(url: string, name: string, retryForMs = 0): Promise<ProtocolClient> {
    const start = performance.now();
    for (;;) {
      try {
        return await ProtocolClient.tryOpen(url, name);
      } catch (err) {
        if (performance.now() - start >= retryForMs) throw err;
        await delay(100);
      }
    }
  }

  private static async tryOpen(url: string, name: string): Promise<ProtocolClient> {
    const ws = new WebSocket(url);
    const client = new ProtocolClient(ws, name);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode })));
    });
    const start = performance.now();
    while (!client.hello) {
      if (client.closeCode !== undefined) throw new Error(`${name}: closed (${client.closeCode}) before hello`);
      if (performance.now() - start > 10_000) throw new Error(`${name}: no hello within 10 s`);
      await delay(5);
    }
    return client;
  }

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends a message; resolves with its record once it ended (done or error) or the connection closed. */
  ask(id: string, conversation: string, text: string, options: object, timeoutMs = 60_000): Promise<RequestRecord> {
    const record = this.sendMessage(id, conversation, text, options);
    return this.settled(record, timeoutMs);
  }

  sendMessage(id: string, conversation: string, text: string, options: object): RequestRecord {
    if (this.requests.has(id)) throw new Error(`${this.name}: id ${id} used twice by the test`);
    const record: RequestRecord = { id, conversation, text, sentAt: performance.now(), tokens: [] };
    this.requests.set(id, record);
    if (this.open) this.ws.send(JSON.stringify({ type: 'message', id, conversation, text, options }));
    return record;
  }

  settled(record: RequestRecord, timeoutMs = 60_000): Promise<RequestRecord> {
    if (record.end || this.closeCode !== undefined) return Promise.resolve(record);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters.delete(record.id);
        this.violations.push(`${this.name}/${record.id}: no done or error within ${timeoutMs} ms (${record.tokens.length} tokens so far)`);
        resolve(record);
      }, timeoutMs);
      this.waiters.set(record.id, () => {
        clearTimeout(timer);
        resolve(record);
      });
    });
  }

  /** Resolves at the next token frame of any request. */
  nextToken(): Promise<void> {
    return new Promise((resolve) => (this.firstToken = resolve));
  }

  /** Drops the TCP connection without a close frame. */
  terminate(): Promise<{ code: number; reason: string }> {
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
    return this.closed;
  }

  close(): Promise<{ code: number; reason: string }> {
    if (this.open) this.ws.close(1000);
    return this.closed;
  }

  private onFrame(data: Buffer, isBinary: boolean): void {
    const where = this.name;
    if (isBinary) return void this.violations.push(`${where}: a binary frame`);
    let frame: Frame;
    try {
      frame = JSON.parse(data.toString('utf8')) as Frame;
    } catch {
      return void this.violations.push(`${where}: a frame that is not JSON`);
    }
    if (!this.hello) {
      if (frame.type !== 'hello') this.violations.push(`${where}: first frame is ${frame.type}, not hello`);
      this.hello = frame;
      return;
    }
    if (frame.type === 'pong' || frame.type === 'reset_ok' || frame.type === 'auth_ok') return;
    if (frame.type === 'error' && frame.id === undefined) {
      this.notices.push(frame);
      if (!STABLE_ERROR_CODES.has(String(frame.code))) this.violations.push(`${where}: error notice with code ${String(frame.code)}`);
      return;
    }
    const record = frame.id === undefined ? undefined : this.requests.get(frame.id);
    if (!record) return void this.violations.push(`${where}: ${frame.type} frame for an id never sent: ${JSON.stringify(frame).slice(0, 200)}`);
    const at = `${where}/${record.id}`;
    if (record.end) return void this.violations.push(`${at}: ${frame.type} frame after its ${record.end.type} (${JSON.stringify(frame).slice(0, 200)})`);
    if (frame.type === 'token') {
      if (frame.seq !== record.tokens.length) this.violations.push(`${at}: token seq ${String(frame.seq)}, expected ${record.tokens.length}`);
      if (frame.conversation !== record.conversation) this.violations.push(`${at}: token of conversation ${String(frame.conversation)}`);
      record.tokens.push(String(frame.text));
      const wake = this.firstToken;
      this.firstToken = undefined;
      wake?.();
      return;
    }
    if (frame.type === 'done') {
      if (frame.text !== record.tokens.join('')) this.violations.push(`${at}: done text differs from its tokens joined`);
      if (!FINISH_REASONS.has(String(frame.finishReason))) this.violations.push(`${at}: finishReason ${String(frame.finishReason)}`);
      if (frame.conversation !== record.conversation) this.violations.push(`${at}: done of conversation ${String(frame.conversation)}`);
    } else if (frame.type === 'error') {
      if (!STABLE_ERROR_CODES.has(String(frame.code))) this.violations.push(`${at}: error code ${String(frame.code)} is not a documented one`);
      if (typeof frame.message !== 'string' || !frame.message) this.violations.push(`${at}: error without a message`);
    } else {
      return void this.violations.push(`${at}: unexpected ${frame.type} frame`);
    }
    record.end = frame;
    record.endedAt = performance.now();
    const wake = this.waiters.get(record.id);
    this.waiters.delete(record.id);
    wake?.();
  }
}

/**
 * A client that upgrades, sends its messages and never reads a byte (the 101 response, hello and replies stay
 * in the socket buffers). `closedByServer` resolves when the server drops the TCP connection.
 */
export class NonReader {
  readonly closedByServer: Promise<void>;
  private constructor(private readonly socket: net.Socket) {
    this.closedByServer = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  static async open(url: string): Promise<NonReader> {
    const { hostname, port } = new URL(url);
    const socket = net.connect(Number(port), hostname);
    socket.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    socket.pause(); // never consume what arrives
    socket.write(upgradeRequest(url));
    return new NonReader(socket);
  }

  /** Writes one masked text frame (clients must mask). */
  send(frame: object): void {
    const payload = Buffer.from(JSON.stringify(frame));
    const mask = randomBytes(4);
    const header =
      payload.length < 126
        ? Buffer.from([0x81, 0x80 | payload.length])
        : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
    const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
    this.socket.write(Buffer.concat([header, mask, masked]));
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Heap and array-buffer bytes after full garbage collections (`gc` is exposed at run time: vitest's workers lack --expose-gc). */
export async function memoryAfterGc(): Promise<{ heapUsed: number; arrayBuffers: number; external: number }> {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve)); // let finalizers and weak callbacks run in between
  }
  const { heapUsed, arrayBuffers, external } = process.memoryUsage();
  return { heapUsed, arrayBuffers, external };
}

export interface ChildServer {
  child: ChildProcess;
  wsUrl: string;
  port: number;
  output: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts test/faults/ws-server.mjs on the tiny bundle; resolves once it listens. */
export async function startChildServer(opts: { port?: number; limits?: object; bundle?: string } = {}): Promise<ChildServer> {
  const args = [serverScript, '--bundle', opts.bundle ?? tinyBundle, '--port', String(opts.port ?? 0), '--limits', JSON.stringify(opts.limits ?? {})];
  const child = spawn(process.execPath, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const start = performance.now();
  for (;;) {
    const m = /listening (ws:\/\/\S+)/.exec(out);
    if (m) {
      const wsUrl = m[1]!;
      return { child, wsUrl, port: Number(new URL(wsUrl).port), output: () => out, exit };
    }
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`ws-server.mjs exited before listening:\n${out}`);
    if (performance.now() - start > 60_000) {
      child.kill('SIGKILL');
      throw new Error(`ws-server.mjs did not listen within 60 s:\n${out}`);
    }
    await delay(20);
  }
}

/** What a chat adapter's Responder gets and gives (`@vikdf/adapter-kit`), as much as the fault tests need. */
interface ReplyRequest {
  conversation: { channelId: string; threadId?: string };
  message: { id: string; text: string };
}

/**
 * A Responder whose replies take time: `chunks` pieces of text, one every `chunkMs`, so that a fault can land
 * while a reply streams. Its text for a message is `SlowResponder.textFor(message text)`. Stops on abort.
 */
export class SlowResponder {
  readonly calls: { id: string; text: string; finished: boolean; aborted: boolean }[] = [];
  constructor(
    readonly chunks = 8,
    readonly chunkMs = 60,
  ) {}

  textFor(text: string): string {
    return this.pieces(text).join('');
  }

  private pieces(text: string): string[] {
    return Array.from({ length: this.chunks }, (_, i) => (i === 0 ? `re ${text}:` : ` part${i}`));
  }

  reply(conversation: ReplyRequest['conversation'], message: ReplyRequest['message'], _history?: string[], opts: { signal?: AbortSignal } = {}) {
    const call = { id: message.id, text: message.text, finished: false, aborted: false };
    this.calls.push(call);
    const pieces = this.pieces(message.text);
    const chunkMs = this.chunkMs;
    let text = '';
    async function* stream(): AsyncGenerator<string> {
      for (const piece of pieces) {
        await delay(chunkMs);
        if (opts.signal?.aborted) {
          call.aborted = true;
          return;
        }
        text += piece;
        yield piece;
      }
      call.finished = true;
    }
    const iterable = stream();
    let resolveResult!: (r: { text: string }) => void;
    const result = new Promise<{ text: string }>((resolve) => (resolveResult = resolve));
    return {
      stream: {
        async *[Symbol.asyncIterator]() {
          try {
            yield* iterable;
          } finally {
            resolveResult({ text });
          }
        },
      },
      result,
    };
  }
}
