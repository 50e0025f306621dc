/**
 * A small typed client for the VIKDF WebSocket protocol (Node, on `ws`).
 *
 *   const client = await VikdfClient.connect('ws://127.0.0.1:8787/ws');
 *   const reply = client.send('hello!');
 *   for await (const chunk of reply) process.stdout.write(chunk);
 *   const { text, usage } = await reply.result;
 *   await client.close();
 *
 * With `reconnect`, a dropped connection is opened again on the next call, and the conversations this client
 * knows tokens of are resumed there (feature `resume`): the server still has their history.
 */
import { EventEmitter } from 'node:events';
import type { GenerationOptions } from '@vikdf/core';
import { WebSocket, type RawData } from 'ws';
import {
  CloseCode,
  DEFAULT_CONVERSATION,
  PROTOCOL_VERSION,
  type ClientFrame,
  type ConversationFrame,
  type DoneFrame,
  type ErrorCode,
  type ErrorFrame,
  type HelloFrame,
  type ServerFrame,
} from './protocol.js';

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
  /**
   * Conversations of an earlier connection to pick up at connect: conversation name -> token (from
   * `conversationTokens()` of the earlier client, or a `conversation` frame). `connect` resolves once the server
   * has answered each (see `resumed`).
   */
  resume?: Record<string, string>;
  /**
   * After the connection drops (anything but `close()`, 4001, 4003, 1007, 1008 or 1009), the next call (send,
   * reset, ping, resume, or `reconnect()`) connects again and resumes every conversation this client has a token
   * of. Replies in progress at the drop still fail with `connection_closed`. `true`: 5 attempts, 250 ms apart,
   * doubling. Default off.
   */
  reconnect?: boolean | { attempts?: number; delayMs?: number };
}

/** How a resume went (the server's `conversation` frame). */
export interface ResumeResult {
  conversation: string;
  /** The token to resume it with next time (a new one when it was not resumed). */
  token: string;
  /** False: the server no longer has it (it expired, was forgotten, or the server restarted): a new conversation. */
  resumed: boolean;
  /** Why it was not resumed. */
  reason?: string;
  /** Its turns, oldest first (empty when not resumed). */
  history: string[];
}

export interface ReconnectInfo {
  /** Which attempt got through (1 = the first). */
  attempt: number;
  hello: HelloFrame;
  conversations: ResumeResult[];
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
  /** A connection closed (with `reconnect`, the client may connect again; `closed` resolves when it will not). */
  close: [info: CloseInfo];
  /** A conversation's token, new or resumed (keep it to resume the conversation later). */
  conversation: [frame: ConversationFrame];
  /** Connected again after a drop, with how each known conversation was resumed. */
  reconnect: [info: ReconnectInfo];
}

interface Waiter {
  resolve: (frame: ServerFrame) => void;
  reject: (err: Error) => void;
}

/** Close codes after which reconnecting would not help (the same thing would happen again). */
const FINAL_CODES = new Set<number>([CloseCode.unauthorized, CloseCode.unsupportedProtocol, CloseCode.policyViolation, CloseCode.messageTooBig, CloseCode.invalidPayload]);

export class VikdfClient extends EventEmitter<ClientEvents> {
  /**
   * Resolves when the client is closed for good, with the last close code and reason: at the first close
   * without `reconnect`; with it, after `close()`, a close code reconnecting cannot help, or failed attempts.
   */
  readonly closed: Promise<CloseInfo>;
  /** How the conversations of `ClientOptions.resume` were resumed at connect. */
  resumed: ResumeResult[] = [];
  private ws: WebSocket;
  private currentHello: HelloFrame;
  private resolveClosed!: (info: CloseInfo) => void;
  private readonly replies = new Map<string, Reply>();
  private readonly waiters = new Map<string, Waiter>();
  /** Tokens of this client's conversations, by name (from conversation frames). */
  private readonly tokens = new Map<string, string>();
  private nextId = 1;
  private closeInfo: CloseInfo | undefined;
  private userClosed = false;
  private finished = false;
  private reconnecting: Promise<ResumeResult[]> | undefined;

  private constructor(
    private readonly url: string,
    private readonly options: ClientOptions,
    ws: WebSocket,
    hello: HelloFrame,
  ) {
    super();
    this.closed = new Promise<CloseInfo>((resolve) => (this.resolveClosed = resolve));
    this.ws = ws;
    this.currentHello = hello;
    this.attach(ws);
  }

  /** The server's hello (of the current connection): protocol, model, device, limits, features. */
  get hello(): HelloFrame {
    return this.currentHello;
  }

  /** Connects and waits for the server's hello (and the answers to `options.resume`). */
  static async connect(url: string, options: ClientOptions = {}): Promise<VikdfClient> {
    checkOptions(options);
    const { ws, hello } = await openSocket(url, options);
    const client = new VikdfClient(url, options, ws, hello);
    client.announce();
    try {
      for (const [conversation, token] of Object.entries(options.resume ?? {})) client.resumed.push(await client.resume(conversation, token));
    } catch (err) {
      await client.close();
      throw err;
    }
    return client;
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
    const frame: ClientFrame = { type: 'message', id, conversation, text, ...(options.options ? { options: options.options } : {}) };
    const start = () => {
      if (this.replies.has(id) || !this.write(frame)) return reply.fail(this.closedError());
      this.replies.set(id, reply);
    };
    if (this.open) start();
    else if (this.mayReconnect) this.ready().then(start, (err: Error) => reply.fail(err));
    else reply.fail(this.closedError());
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

  /** Forgets a conversation's history on the server (stopping its replies in progress); its token is void. */
  async reset(conversation: string = DEFAULT_CONVERSATION): Promise<void> {
    await this.request({ type: 'reset', id: this.newId(), conversation });
    this.tokens.delete(conversation);
  }

  /** Picks up a conversation of an earlier connection (by its token) under the name `conversation`. */
  async resume(conversation: string, token: string): Promise<ResumeResult> {
    if (typeof conversation !== 'string' || typeof token !== 'string' || !token) {
      throw new TypeError('resume(conversation, token) needs a conversation name and the token of its conversation frame');
    }
    const frame = (await this.request({ type: 'resume', id: this.newId(), conversation, token })) as ConversationFrame;
    return resumeResult(frame);
  }

  /** Tokens of this client's conversations (name -> token): keep them to resume the conversations later. */
  conversationTokens(): Record<string, string> {
    return Object.fromEntries(this.tokens);
  }

  /** Authenticates with an auth frame (when the token was not given at connect). */
  async authenticate(token: string): Promise<void> {
    await this.request({ type: 'auth', id: this.newId(), token });
  }

  /** Round trip of an application-level ping, in milliseconds. */
  async ping(): Promise<number> {
    await this.ready();
    const t = performance.now();
    await this.request({ type: 'ping', id: this.newId() });
    return performance.now() - t;
  }

  /**
   * Connects again (when the connection dropped and `reconnect` is on) and resumes the conversations this client
   * knows; resolves with how each went (nothing to do while connected: []).
   */
  reconnect(): Promise<ResumeResult[]> {
    if (this.open) return Promise.resolve([]);
    if (!this.mayReconnect) return Promise.reject(this.closedError());
    this.reconnecting ??= this.connectAgain().finally(() => (this.reconnecting = undefined));
    return this.reconnecting;
  }

  /** Closes the connection (1000) and resolves once it is closed; no reconnecting after this. */
  close(code = 1000, reason = ''): Promise<CloseInfo> {
    this.userClosed = true;
    if (this.ws.readyState === WebSocket.CONNECTING || this.ws.readyState === WebSocket.OPEN) this.ws.close(code, reason);
    else if (!this.reconnecting) this.finish(this.closeInfo ?? { code, reason });
    return this.closed;
  }

  /** True while the connection is open. */
  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  private get mayReconnect(): boolean {
    return Boolean(this.options.reconnect) && !this.userClosed && !this.finished;
  }

  /** Waits for a reconnection when one is due or under way. */
  private async ready(): Promise<void> {
    if (this.open) return;
    if (this.reconnecting || this.mayReconnect) await this.reconnect();
  }

  private async connectAgain(): Promise<ResumeResult[]> {
    const settings = typeof this.options.reconnect === 'object' ? this.options.reconnect : {};
    const attempts = settings.attempts ?? 5;
    const delayMs = settings.delayMs ?? 250;
    let last: unknown;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (this.userClosed) break;
      try {
        const { ws, hello } = await openSocket(this.url, this.options);
        if (this.userClosed) {
          ws.close(1000);
          break;
        }
        this.ws = ws;
        this.currentHello = hello;
        this.attach(ws);
        this.announce();
        const conversations: ResumeResult[] = [];
        for (const [conversation, token] of [...this.tokens]) {
          const frame = (await this.requestNow({ type: 'resume', id: this.newId(), conversation, token })) as ConversationFrame;
          conversations.push(resumeResult(frame));
        }
        this.emit('reconnect', { attempt, hello, conversations });
        return conversations;
      } catch (err) {
        last = err;
        const status = (err as VikdfClientError).status;
        if (status === 401 || status === 403 || status === 404) break; // refused: trying again will not help
        if (attempt < attempts) await new Promise((resolve) => setTimeout(resolve, delayMs * 2 ** (attempt - 1)));
      }
    }
    const message = last instanceof Error ? last.message : 'closed';
    const err = new VikdfClientError('connection_closed', `could not reconnect to ${this.url}: ${message}`, {
      ...(this.closeInfo ? { closeCode: this.closeInfo.code } : {}),
      ...((last as VikdfClientError | undefined)?.status === undefined ? {} : { status: (last as VikdfClientError).status! }),
    });
    this.finish(this.closeInfo ?? { code: 1006, reason: '' });
    throw err;
  }

  /** Tells the server which optional features this client wants (when it has them). */
  private announce(): void {
    if (this.currentHello.features?.includes('resume')) this.write({ type: 'hello', protocol: PROTOCOL_VERSION, features: ['resume'] });
  }

  private attach(ws: WebSocket): void {
    ws.on('error', () => undefined);
    ws.on('close', (code: number, reason: Buffer) => this.onClose(ws, code, reason.toString('utf8')));
    ws.on('message', (data: RawData, isBinary: boolean) => {
      if (!isBinary && ws === this.ws) this.onFrame(data);
    });
  }

  private onClose(ws: WebSocket, code: number, reason: string): void {
    if (ws !== this.ws) return;
    const info = { code, reason };
    this.closeInfo = info;
    const err = () => new VikdfClientError('connection_closed', `the connection closed (${code}${reason ? ` ${reason}` : ''})`, { closeCode: code });
    for (const reply of this.replies.values()) reply.fail(err());
    for (const waiter of this.waiters.values()) waiter.reject(err());
    this.replies.clear();
    this.waiters.clear();
    this.emit('close', info);
    if (!this.options.reconnect || this.userClosed || FINAL_CODES.has(code)) this.finish(info);
  }

  private finish(info: CloseInfo): void {
    this.finished = true;
    this.resolveClosed(info);
  }

  private async request(frame: ClientFrame & { id: string }): Promise<ServerFrame> {
    await this.ready();
    return this.requestNow(frame);
  }

  private requestNow(frame: ClientFrame & { id: string }): Promise<ServerFrame> {
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
      case 'conversation': {
        if (typeof frame.conversation === 'string' && typeof frame.token === 'string') this.tokens.set(frame.conversation, frame.token);
        this.emit('conversation', frame);
        const waiter = id === undefined ? undefined : this.waiters.get(id);
        if (waiter) {
          this.waiters.delete(id!);
          waiter.resolve(frame);
        }
        return;
      }
      case 'error': {
        const err = VikdfClientError.fromFrame(frame);
        if (frame.code === 'conversation_moved' && frame.conversation !== undefined) this.tokens.delete(frame.conversation);
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

function resumeResult(frame: ConversationFrame): ResumeResult {
  return {
    conversation: frame.conversation,
    token: frame.token,
    resumed: frame.resumed === true,
    ...(frame.reason === undefined ? {} : { reason: frame.reason }),
    history: Array.isArray(frame.history) ? [...frame.history] : [],
  };
}

function checkOptions(options: ClientOptions): void {
  if (typeof options !== 'object' || options === null) throw new TypeError('VikdfClient.connect options must be an object');
  const { resume, reconnect } = options;
  if (resume !== undefined && (typeof resume !== 'object' || resume === null || !Object.values(resume).every((t) => typeof t === 'string' && t))) {
    throw new TypeError('ClientOptions.resume must map conversation names to tokens (non-empty strings)');
  }
  if (reconnect !== undefined && typeof reconnect !== 'boolean') {
    const ok =
      typeof reconnect === 'object' &&
      reconnect !== null &&
      (reconnect.attempts === undefined || (Number.isSafeInteger(reconnect.attempts) && reconnect.attempts >= 1)) &&
      (reconnect.delayMs === undefined || (Number.isFinite(reconnect.delayMs) && reconnect.delayMs >= 0));
    if (!ok) throw new TypeError('ClientOptions.reconnect must be true, false or { attempts: a whole number >= 1, delayMs: a number >= 0 }');
  }
}

/** Opens a WebSocket and waits for the server's hello. */
function openSocket(url: string, options: ClientOptions): Promise<{ ws: WebSocket; hello: HelloFrame }> {
  const timeout = options.connectTimeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
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
      ws.removeAllListeners('unexpected-response');
      resolve({ ws, hello: frame });
    });
  });
}
