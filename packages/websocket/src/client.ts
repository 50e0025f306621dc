/**
 * A small typed client for the VIKDF WebSocket protocol (Node, on `ws`).
 *
 *   const client = await VikdfClient.connect('ws://127.0.0.1:8787/ws');
 *   const reply = client.send('hello!');
 *   for await (const chunk of reply) process.stdout.write(chunk);
 *   const { text, usage } = await reply.result;
 *   await client.close();
 */
import { EventEmitter } from 'node:events';
import type { GenerationOptions } from '@vikdf/core';
import { WebSocket, type RawData } from 'ws';
import { DEFAULT_CONVERSATION, PROTOCOL_VERSION, type ClientFrame, type DoneFrame, type ErrorCode, type ErrorFrame, type HelloFrame, type ServerFrame } from './protocol.js';

export type ClientErrorCode = ErrorCode | 'connect_failed' | 'connection_closed' | 'protocol_mismatch';

export class VikdfClientError extends Error {
  override name = 'VikdfClientError';
  /** bad_option: the option at fault. */
  readonly option: string | undefined;
  /** rate_limited: when to try again. */
  readonly retryAfterMs: number | undefined;
  /** connection_closed: the close code. */
  readonly closeCode: number | undefined;
  /** connect_failed: the HTTP status of a refused upgrade (401, 403, 429, 503...). */
  readonly status: number | undefined;

  constructor(
    readonly code: ClientErrorCode,
    message: string,
    extra: { option?: string; retryAfterMs?: number; closeCode?: number; status?: number } = {},
  ) {
    super(message);
    this.option = extra.option;
    this.retryAfterMs = extra.retryAfterMs;
    this.closeCode = extra.closeCode;
    this.status = extra.status;
  }

  static fromFrame(frame: ErrorFrame): VikdfClientError {
    return new VikdfClientError(frame.code, frame.message, {
      ...(frame.option === undefined ? {} : { option: frame.option }),
      ...(frame.retryAfterMs === undefined ? {} : { retryAfterMs: frame.retryAfterMs }),
    });
  }
}

export interface ClientOptions {
  /** Bearer token, sent as `Authorization: Bearer <token>` with the upgrade request. */
  token?: string;
  /** Origin header to send (browsers send their page's; Node sends none by default). */
  origin?: string;
  /** Give up connecting (and waiting for hello) after this long. Default 10 s. */
  connectTimeoutMs?: number;
}

export interface ClientSendOptions {
  /** Conversation id within this connection (default "default"). */
  conversation?: string;
  options?: GenerationOptions;
  /** Aborting it cancels the reply (it then ends with finishReason "aborted"). */
  signal?: AbortSignal;
  /** Request id (default: a fresh one). */
  id?: string;
}

export interface CloseInfo {
  code: number;
  reason: string;
}

export interface ReplyEvents {
  /** A streamed chunk and its sequence number. */
  token: [text: string, seq: number];
}

/** A reply in progress: an async iterable of text chunks, `token` events, and the done frame as `result`. */
export class Reply extends EventEmitter<ReplyEvents> implements AsyncIterable<string> {
  readonly result: Promise<DoneFrame>;
  private chunks: string[] = [];
  private finished = false;
  private failure: Error | undefined;
  private waiters: (() => void)[] = [];
  private resolveResult!: (frame: DoneFrame) => void;
  private rejectResult!: (err: Error) => void;

  constructor(
    readonly id: string,
    readonly conversation: string,
    private readonly onCancel: () => void,
  ) {
    super();
    this.result = new Promise<DoneFrame>((resolve, reject) => {
      this.resolveResult = resolve;
      this.rejectResult = reject;
    });
    this.result.catch(() => undefined);
  }

  /** Asks the server to stop this reply; it still ends with a done frame (finishReason "aborted"). */
  cancel(): void {
    if (!this.finished) this.onCancel();
  }

  /** @internal */
  push(text: string, seq: number): void {
    if (this.finished) return;
    this.chunks.push(text);
    this.emit('token', text, seq);
    this.wake();
  }

  /** @internal */
  finish(frame: DoneFrame): void {
    if (this.finished) return;
    this.finished = true;
    this.resolveResult(frame);
    this.wake();
  }

  /** @internal */
  fail(err: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.failure = err;
    this.rejectResult(err);
    this.wake();
  }

  get done(): boolean {
    return this.finished;
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    let i = 0;
    for (;;) {
      while (i < this.chunks.length) yield this.chunks[i++]!;
      if (this.finished) {
        if (this.failure) throw this.failure;
        return;
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }
}

export interface ClientEvents {
  /** An error frame that answers no request of this client (e.g. a rate-limit notice). */
  serverError: [error: VikdfClientError];
  close: [info: CloseInfo];
}

interface Waiter {
  resolve: (frame: ServerFrame) => void;
  reject: (err: Error) => void;
}

export class VikdfClient extends EventEmitter<ClientEvents> {
  /** Resolves when the connection is closed, with the close code and reason. */
  readonly closed: Promise<CloseInfo>;
  private readonly replies = new Map<string, Reply>();
  private readonly waiters = new Map<string, Waiter>();
  private nextId = 1;
  private closeInfo: CloseInfo | undefined;

  private constructor(
    private readonly ws: WebSocket,
    /** The server's hello: protocol, model, device, limits. */
    readonly hello: HelloFrame,
  ) {
    super();
    this.closed = new Promise<CloseInfo>((resolve) => {
      ws.on('close', (code: number, reason: Buffer) => {
        const info = { code, reason: reason.toString('utf8') };
        this.closeInfo = info;
        const err = () => new VikdfClientError('connection_closed', `the connection closed (${code}${info.reason ? ` ${info.reason}` : ''})`, { closeCode: code });
        for (const reply of this.replies.values()) reply.fail(err());
        for (const waiter of this.waiters.values()) waiter.reject(err());
        this.replies.clear();
        this.waiters.clear();
        this.emit('close', info);
        resolve(info);
      });
    });
    ws.on('message', (data: RawData, isBinary: boolean) => {
      if (!isBinary) this.onFrame(data);
    });
  }

  /** Connects and waits for the server's hello. */
  static connect(url: string, options: ClientOptions = {}): Promise<VikdfClient> {
    const timeout = options.connectTimeoutMs ?? 10_000;
    return new Promise<VikdfClient>((resolve, reject) => {
      const headers: Record<string, string> = {};
      if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
      const ws = new WebSocket(url, { headers, handshakeTimeout: timeout, ...(options.origin ? { origin: options.origin } : {}) });
      let settled = false;
      const fail = (err: VikdfClientError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        ws.terminate();
        reject(err);
      };
      const timer = setTimeout(() => fail(new VikdfClientError('connect_failed', `no hello from ${url} within ${timeout} ms`)), timeout);
      ws.on('unexpected-response', (req, res) => {
        const status = res.statusCode ?? 0;
        res.resume();
        req.destroy();
        fail(new VikdfClientError('connect_failed', `the server refused the connection: HTTP ${status}`, { status }));
      });
      ws.on('error', (err: Error) => fail(new VikdfClientError('connect_failed', `cannot connect to ${url}: ${err.message}`)));
      ws.once('close', (code: number) => fail(new VikdfClientError('connect_failed', `the connection closed (${code}) before hello`, { closeCode: code })));
      ws.once('message', (data: RawData) => {
        if (settled) return;
        let frame: ServerFrame;
        try {
          frame = JSON.parse(String(data)) as ServerFrame;
        } catch {
          return fail(new VikdfClientError('protocol_mismatch', 'the first frame is not JSON'));
        }
        if (frame.type !== 'hello' || frame.protocol !== PROTOCOL_VERSION) {
          return fail(new VikdfClientError('protocol_mismatch', `expected hello with protocol ${PROTOCOL_VERSION}, got ${String(data).slice(0, 200)}`));
        }
        settled = true;
        clearTimeout(timer);
        ws.removeAllListeners('error');
        ws.removeAllListeners('close');
        ws.on('error', () => undefined);
        resolve(new VikdfClient(ws, frame));
      });
    });
  }

  /** Sends a message; the reply streams in. */
  send(text: string, options: ClientSendOptions = {}): Reply {
    const id = options.id ?? this.newId();
    const conversation = options.conversation ?? DEFAULT_CONVERSATION;
    const reply = new Reply(id, conversation, () => this.write({ type: 'cancel', id }));
    if (this.replies.has(id) || this.waiters.has(id)) {
      reply.fail(new VikdfClientError('duplicate_id', `request id ${JSON.stringify(id)} is in use`));
      return reply;
    }
    if (!this.write({ type: 'message', id, conversation, text, ...(options.options ? { options: options.options } : {}) })) {
      reply.fail(this.closedError());
      return reply;
    }
    this.replies.set(id, reply);
    const signal = options.signal;
    if (signal) {
      const onAbort = () => reply.cancel();
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener('abort', onAbort, { once: true });
        void reply.result.finally(() => signal.removeEventListener('abort', onAbort)).catch(() => undefined);
      }
    }
    return reply;
  }

  /** Forgets a conversation's history on the server (stopping its replies in progress). */
  async reset(conversation: string = DEFAULT_CONVERSATION): Promise<void> {
    await this.request({ type: 'reset', id: this.newId(), conversation });
  }

  /** Authenticates with an auth frame (when the token was not given at connect). */
  async authenticate(token: string): Promise<void> {
    await this.request({ type: 'auth', id: this.newId(), token });
  }

  /** Round trip of an application-level ping, in milliseconds. */
  async ping(): Promise<number> {
    const t = performance.now();
    await this.request({ type: 'ping', id: this.newId() });
    return performance.now() - t;
  }

  /** Closes the connection (1000) and resolves once it is closed. */
  close(code = 1000, reason = ''): Promise<CloseInfo> {
    if (this.ws.readyState === WebSocket.CONNECTING || this.ws.readyState === WebSocket.OPEN) this.ws.close(code, reason);
    return this.closed;
  }

  /** True while the connection is open. */
  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  private request(frame: ClientFrame & { id: string }): Promise<ServerFrame> {
    return new Promise<ServerFrame>((resolve, reject) => {
      if (!this.write(frame)) return reject(this.closedError());
      this.waiters.set(frame.id, { resolve, reject });
    });
  }

  private write(frame: ClientFrame): boolean {
    if (this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  private closedError(): VikdfClientError {
    const code = this.closeInfo?.code;
    return new VikdfClientError('connection_closed', 'the connection is closed', code === undefined ? {} : { closeCode: code });
  }

  private newId(): string {
    return `r${this.nextId++}`;
  }

  private onFrame(data: RawData): void {
    let frame: ServerFrame;
    try {
      frame = JSON.parse(String(data)) as ServerFrame;
    } catch {
      return;
    }
    const id = 'id' in frame ? frame.id : undefined;
    switch (frame.type) {
      case 'token':
        this.replies.get(frame.id)?.push(frame.text, frame.seq);
        return;
      case 'done': {
        const reply = this.replies.get(frame.id);
        this.replies.delete(frame.id);
        reply?.finish(frame);
        return;
      }
      case 'error': {
        const err = VikdfClientError.fromFrame(frame);
        const reply = id === undefined ? undefined : this.replies.get(id);
        const waiter = id === undefined ? undefined : this.waiters.get(id);
        if (reply) {
          this.replies.delete(id!);
          reply.fail(err);
        } else if (waiter) {
          this.waiters.delete(id!);
          waiter.reject(err);
        } else {
          this.emit('serverError', err);
        }
        return;
      }
      case 'reset_ok':
      case 'pong':
      case 'auth_ok': {
        const waiter = id === undefined ? undefined : this.waiters.get(id);
        if (waiter) {
          this.waiters.delete(id!);
          waiter.resolve(frame);
        }
        return;
      }
      default:
        return;
    }
  }
}
