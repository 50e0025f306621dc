/**
 * One client connection: its frames in (rates, floods, validation), its conversations and replies in progress,
 * and its frames out (flow control: held and merged text while the client reads slowly, closed when it does not
 * read at all).
 */
import {
  GenerationOptionsError,
  VikdfError,
  resolveOptions,
  type BundleManifest,
  type ConversationOptions,
  type Generation,
  type GenerationOptions,
  type GenerationResult,
  type ProviderReport,
} from '@vikdf/core';
import { WebSocket, type RawData } from 'ws';
import type { ChatConversation, ConversationStore, StoredConversation } from './conversations.js';
import { ReadTracker } from './flow.js';
import type { ServerLimits } from './limits.js';
import {
  CloseCode,
  DEFAULT_CONVERSATION,
  PROTOCOL_VERSION,
  SERVER_ID_PREFIX,
  isValidId,
  type DoneFrame,
  type ErrorCode,
  type ErrorFrame,
  type HelloFrame,
  type ServerFrame,
} from './protocol.js';
import { DropWindow, TokenBucket } from './rate-limit.js';

/** What the server needs of an engine (`@vikdf/core`'s Engine). */
export interface ChatEngine {
  readonly manifest: BundleManifest;
  readonly provider: ProviderReport;
  conversation(options?: ConversationOptions): ChatConversation;
  /** Optional (the core Engine has them): for the token budget announced in hello. */
  readonly formatter?: { countPromptTokens(turns: readonly string[], options?: { system?: string }): number };
  countTokens?(text: string): number;
}

export interface ConnectionInfo {
  connection: string;
  ip: string;
}

export interface ConnectionState extends ConnectionInfo {
  authenticated: boolean;
  /** Replies in progress (until their done frame is sent). */
  requests: number;
  conversations: number;
  /** Bytes waiting to be sent in the server's process (ws bufferedAmount). */
  bufferedAmount: number;
  /** Bytes sent that the client has not acknowledged reading (by answering a ping sent after them). */
  unacknowledgedBytes: number;
  /**
   * How long the client has not read: the age of the oldest output it has not acknowledged, or how long the
   * send buffer has been over the high-water mark, whichever is longer (0 when neither).
   */
  stalledMs: number;
  /** The server has begun closing it. */
  closing: boolean;
}

/** What a connection uses of its server. */
export interface ConnectionHost {
  readonly limits: Readonly<ServerLimits>;
  readonly engine: ChatEngine;
  readonly defaults: GenerationOptions;
  readonly generationLimits: { maxNewTokens: number; maxNumBeams: number };
  readonly system: string | undefined;
  readonly store: ConversationStore;
  readonly shuttingDown: boolean;
  readonly authRequired: boolean;
  tokenMatches(presented: string): boolean;
  /** Takes a message token from the IP's bucket; returns the wait in ms when there is none. */
  takeMessageToken(ip: string): number;
}

interface ConversationState {
  entry: StoredConversation;
  /** Ids of this connection's replies in progress in it. */
  requests: Set<string>;
}

interface Request {
  id: string;
  conversation: string;
  state: ConversationState;
  generation: Generation;
  /** Text produced but not yet sent (merged while the connection is congested). */
  pending: string;
  seq: number;
  /** The done or error frame, once the generation ended; sent after the pending text. */
  final: DoneFrame | ErrorFrame | undefined;
  delivered: Promise<void>;
  markDelivered: () => void;
}

/** Longest text of one token frame (merged text is split into frames of this size at most). */
const MAX_TOKEN_FRAME_CHARS = 16 * 1024;

export class Connection {
  private readonly requests = new Map<string, Request>();
  private readonly conversations = new Map<string, ConversationState>();
  private readonly frames: TokenBucket;
  private readonly drops: DropWindow;
  private readonly reads = new ReadTracker();
  private readonly connectedAt = performance.now();
  private lastActivity = performance.now();
  private alive = true;
  private closing = false;
  private lastNotice = -Infinity;
  /** The client asked for feature `resume` (its hello, or a resume frame): it gets `conversation` frames. */
  private resumable = false;
  /** Since when the send buffer has been over the high-water mark. */
  private congestedSince: number | undefined;
  private drainTimer: NodeJS.Timeout | undefined;
  private killTimer: NodeJS.Timeout | undefined;
  private nextRequest = 1;
  private idleWaiters: (() => void)[] = [];
  readonly closed: Promise<void>;
  closeCode: number = CloseCode.normal;
  closeReason = '';
  private serverCloseReason: string | undefined;

  constructor(
    private readonly server: ConnectionHost,
    private readonly ws: WebSocket,
    readonly id: string,
    readonly ip: string,
    private authenticated: boolean,
  ) {
    this.frames = new TokenBucket(server.limits.frameRate);
    this.drops = new DropWindow(server.limits.floodCloseAfter, server.limits.floodWindowMs);
    this.closed = new Promise<void>((resolve) => {
      ws.on('close', (code: number, reason: Buffer) => {
        this.closeCode = code;
        this.closeReason = this.serverCloseReason ?? reason.toString('utf8');
        this.cleanup();
        resolve();
      });
    });
    ws.on('error', () => undefined); // ws closes the connection itself (1009 for an oversized frame, 1007 for bad UTF-8)
    ws.on('pong', (data: Buffer) => {
      this.alive = true;
      this.reads.pong(data);
    });
    ws.on('message', (data: RawData, isBinary: boolean) => {
      try {
        this.onFrame(data, isBinary);
      } catch (err) {
        // A bug must cost one frame, not the process.
        this.error(undefined, 'internal_error', `the server failed on this frame: ${err instanceof Error ? err.message : String(err)}`);
      }
    });
  }

  info(): ConnectionState {
    const now = performance.now();
    return {
      connection: this.id,
      ip: this.ip,
      authenticated: this.authenticated,
      requests: this.requests.size,
      conversations: this.conversations.size,
      bufferedAmount: this.ws.bufferedAmount,
      unacknowledgedBytes: this.reads.unreadBytes,
      stalledMs: Math.max(this.reads.unreadMs(now), this.congestedSince === undefined ? 0 : now - this.congestedSince),
      closing: this.closing,
    };
  }

  start(hello: HelloFrame): void {
    this.send(hello);
  }

  private get limits(): Readonly<ServerLimits> {
    return this.server.limits;
  }

  // -- incoming -------------------------------------------------------------------------------------------
  private onFrame(data: RawData, isBinary: boolean): void {
    if (this.closing) return;
    const now = performance.now();
    this.lastActivity = now;
    if (!this.frames.take()) {
      // Dropped. Counted over a window, not in a row: a flood spaced so that some frames get through is a flood.
      if (this.drops.record(now)) {
        this.close(CloseCode.policyViolation, 'rate limit exceeded');
      } else if (now - this.lastNotice >= 1000) {
        // One notice a second at most: a flood must not make the server write as much as it reads.
        this.lastNotice = now;
        this.error(undefined, 'rate_limited', 'too many frames: this one and the next ones are dropped until the rate falls', {
          retryAfterMs: this.frames.retryAfterMs(),
        });
      }
      return;
    }
    if (isBinary) return this.error(undefined, 'binary_not_supported', 'binary frames are not supported: send JSON text frames');
    let frame: unknown;
    try {
      frame = JSON.parse(rawText(data));
    } catch {
      return this.error(undefined, 'bad_json', 'the frame is not valid JSON');
    }
    if (!isObject(frame)) return this.error(undefined, 'bad_frame', 'a frame must be a JSON object with a "type"');
    if (frame.id !== undefined && !isValidId(frame.id)) {
      return this.error(undefined, 'bad_frame', '"id" must be a string of 1 to 128 characters');
    }
    const id = frame.id as string | undefined;
    if (typeof frame.type !== 'string') return this.error(id, 'bad_frame', 'a frame must have a string "type"');
    switch (frame.type) {
      case 'hello':
        return this.onHello(frame, id);
      case 'auth':
        return this.onAuth(frame, id);
      case 'ping':
        return this.send({ type: 'pong', ...(id === undefined ? {} : { id }), time: Date.now() });
      case 'message':
        return this.onMessage(frame, id);
      case 'cancel':
        return this.onCancel(id);
      case 'reset':
        return this.onReset(frame, id);
      case 'resume':
        return this.onResume(frame, id);
      default:
        return this.error(id, 'unknown_type', `unknown frame type ${JSON.stringify(frame.type.slice(0, 64))}`);
    }
  }

  private onHello(frame: Record<string, unknown>, id: string | undefined): void {
    if (frame.protocol !== PROTOCOL_VERSION) {
      this.error(id, 'unsupported_protocol', `this server speaks protocol ${PROTOCOL_VERSION}, not ${JSON.stringify(frame.protocol)}`);
      return this.close(CloseCode.unsupportedProtocol, 'unsupported protocol');
    }
    const features = frame.features;
    if (features === undefined) return;
    if (!Array.isArray(features) || !features.every((f) => typeof f === 'string')) {
      return this.error(id, 'bad_frame', '"features" must be an array of strings');
    }
    // Frames of optional features go only to clients that ask for them (others may not expect new frame types).
    if (features.includes('resume')) this.resumable = true;
  }

  private onAuth(frame: Record<string, unknown>, id: string | undefined): void {
    if (typeof frame.token !== 'string') return this.error(id, 'bad_frame', 'auth needs a string "token"');
    if (!this.server.tokenMatches(frame.token)) {
      this.error(id, 'unauthorized', 'wrong token');
      return this.close(CloseCode.unauthorized, 'unauthorized');
    }
    this.authenticated = true;
    this.send({ type: 'auth_ok', ...(id === undefined ? {} : { id }) });
  }

  private onMessage(frame: Record<string, unknown>, given: string | undefined): void {
    if (this.server.shuttingDown) return this.error(given, 'shutting_down', 'the server is shutting down');
    if (!this.authenticated) return this.error(given, 'auth_required', 'authenticate first (auth frame)');
    const conversation = frame.conversation ?? DEFAULT_CONVERSATION;
    if (!isValidId(conversation)) return this.error(given, 'bad_frame', '"conversation" must be a string of 1 to 128 characters');
    if (typeof frame.text !== 'string') return this.error(given, 'bad_frame', 'message needs a string "text"');
    if (frame.text.length > this.limits.maxMessageChars) {
      return this.error(given, 'message_too_long', `the message has ${frame.text.length} characters; the limit is ${this.limits.maxMessageChars}`);
    }
    if (given?.startsWith(SERVER_ID_PREFIX)) {
      return this.error(given, 'bad_frame', `request ids beginning with "${SERVER_ID_PREFIX}" are the server's; choose another id (or none)`);
    }
    // The server's ids have a prefix that clients' ids cannot have: the two never collide.
    const id = given ?? `${SERVER_ID_PREFIX}${this.nextRequest++}`;
    if (this.requests.has(id)) return this.error(id, 'duplicate_id', `request ${JSON.stringify(id)} is still in progress`);
    if (this.requests.size >= this.limits.maxConcurrentRequests) {
      return this.error(id, 'too_many_requests', `at most ${this.limits.maxConcurrentRequests} replies in progress per connection`);
    }
    if (frame.options !== undefined && !isObject(frame.options)) {
      return this.error(id, 'bad_option', '"options" must be an object', { option: 'options' });
    }
    const options: GenerationOptions = { ...this.server.defaults, ...(frame.options as GenerationOptions | undefined) };
    try {
      resolveOptions(this.server.engine.manifest.generation, options, this.server.generationLimits);
    } catch (err) {
      return this.fail(id, err);
    }
    const wait = this.server.takeMessageToken(this.ip);
    if (wait > 0) return this.error(id, 'rate_limited', 'too many messages from this address', { retryAfterMs: wait });
    let state = this.conversations.get(conversation);
    if (!state) {
      if (this.conversations.size >= this.limits.maxConversations) {
        return this.error(id, 'too_many_conversations', `at most ${this.limits.maxConversations} conversations per connection (reset one to free it)`);
      }
      state = this.newConversation(conversation);
      if (this.resumable) this.send({ type: 'conversation', id, conversation, token: state.entry.token, resumed: false });
    }
    let markDelivered!: () => void;
    const delivered = new Promise<void>((resolve) => (markDelivered = resolve));
    let generation: Generation;
    try {
      generation = state.entry.conversation.send(frame.text, { options });
    } catch (err) {
      return this.fail(id, err);
    }
    const req: Request = { id, conversation, state, generation, pending: '', seq: 0, final: undefined, delivered, markDelivered };
    this.requests.set(id, req);
    state.requests.add(id);
    generation.on('token', (text: string) => {
      req.pending += text;
      this.flush(req);
    });
    const entry = state.entry;
    generation.result.then(
      (result) => {
        this.server.store.measure(entry); // the reply is in the history now (kept for a resume)
        req.final = doneFrame(req, result);
        this.flush(req);
      },
      (err: unknown) => {
        req.final = errorFrame(id, err);
        this.flush(req);
      },
    );
  }

  private newConversation(name: string): ConversationState {
    const system = this.server.system;
    const conversation = this.server.engine.conversation(system === undefined ? {} : { system });
    const state: ConversationState = { entry: this.server.store.create(conversation, this), requests: new Set() };
    this.conversations.set(name, state);
    return state;
  }

  private onCancel(id: string | undefined): void {
    if (!this.authenticated) return this.error(id, 'auth_required', 'authenticate first (auth frame)');
    if (id === undefined) return this.error(undefined, 'bad_frame', 'cancel needs the "id" of the message to stop');
    const req = this.requests.get(id);
    if (!req) return this.error(id, 'unknown_request', `no reply in progress with id ${JSON.stringify(id)}`);
    if (!req.final) req.generation.abort();
  }

  private onReset(frame: Record<string, unknown>, id: string | undefined): void {
    if (!this.authenticated) return this.error(id, 'auth_required', 'authenticate first (auth frame)');
    const conversation = frame.conversation ?? DEFAULT_CONVERSATION;
    if (!isValidId(conversation)) return this.error(id, 'bad_frame', '"conversation" must be a string of 1 to 128 characters');
    const stopped = this.forget(conversation);
    // Stopped replies end (done, finishReason "aborted") before reset_ok.
    void stopped.then(() => this.send({ type: 'reset_ok', ...(id === undefined ? {} : { id }), conversation }));
  }

  /** Drops a conversation of this connection and its token; resolves once its stopped replies are delivered. */
  private forget(name: string): Promise<void> {
    const state = this.conversations.get(name);
    if (!state) return Promise.resolve();
    this.conversations.delete(name);
    this.server.store.delete(state.entry);
    return this.stop(state);
  }

  /** Stops a conversation's replies in progress on this connection; resolves when their done frames are sent. */
  private stop(state: ConversationState): Promise<void> {
    const pending: Promise<void>[] = [];
    for (const rid of state.requests) {
      const req = this.requests.get(rid);
      if (!req) continue;
      if (!req.final) req.generation.abort();
      pending.push(req.delivered);
    }
    return Promise.all(pending).then(() => undefined);
  }

  private onResume(frame: Record<string, unknown>, id: string | undefined): void {
    if (!this.authenticated) return this.error(id, 'auth_required', 'authenticate first (auth frame)');
    const name = frame.conversation ?? DEFAULT_CONVERSATION;
    if (!isValidId(name)) return this.error(id, 'bad_frame', '"conversation" must be a string of 1 to 128 characters');
    if (!isValidId(frame.token)) return this.error(id, 'bad_frame', 'resume needs the "token" of a conversation frame');
    this.resumable = true;
    const current = this.conversations.get(name);
    const answer = (state: ConversationState, resumed: boolean) => ({
      type: 'conversation' as const,
      ...(id === undefined ? {} : { id }),
      conversation: name,
      token: state.entry.token,
      resumed,
      ...(resumed ? { history: [...(state.entry.conversation.history ?? [])] } : { reason: 'unknown' as const }),
    });
    if (current?.entry.token === frame.token) return this.send(answer(current, true));
    const entry = this.server.store.get(frame.token, performance.now());
    const count = this.conversations.size - (current ? 1 : 0);
    if (count >= this.limits.maxConversations) {
      return this.error(id, 'too_many_conversations', `at most ${this.limits.maxConversations} conversations per connection (reset one to free it)`);
    }
    // The conversation under that name, if any, is dropped as by a reset (its stopped replies end first).
    const stopped = this.forget(name);
    let state: ConversationState;
    if (entry) {
      if (entry.owner instanceof Connection) entry.owner.release(entry, this);
      this.server.store.attach(entry, this);
      state = { entry, requests: new Set() };
      this.conversations.set(name, state);
    } else {
      state = this.newConversation(name);
    }
    void stopped.then(() => this.send(answer(state, entry !== undefined)));
  }

  /**
   * Another connection resumed one of this connection's conversations: it is no longer this connection's (its
   * replies in progress still end here). Says so with a `conversation_moved` error frame.
   */
  release(entry: StoredConversation, by: Connection): void {
    for (const [name, state] of this.conversations) {
      if (state.entry !== entry) continue;
      this.conversations.delete(name);
      const where = by === this ? 'under another name on this connection' : 'on another connection';
      this.error(undefined, 'conversation_moved', `conversation ${JSON.stringify(name)} was resumed ${where}; a message to it here starts a new one`, { conversation: name });
    }
  }

  // -- outgoing, with flow control ---------------------------------------------------------------------
  /** Sends what a request has ready, unless the client is not reading fast enough (then it waits and merges). */
  private flush(req: Request): void {
    if (this.closing || this.requests.get(req.id) !== req) return;
    while (req.pending) {
      if (this.congested()) return this.watchDrain();
      // Merged text goes out in frames of bounded size, so that the buffer stays near the high-water mark.
      const text = sliceText(req.pending, MAX_TOKEN_FRAME_CHARS);
      req.pending = req.pending.slice(text.length);
      this.send({ type: 'token', id: req.id, conversation: req.conversation, seq: req.seq++, text });
    }
    if (req.final) {
      if (this.congested()) return this.watchDrain();
      this.send(req.final);
      this.requests.delete(req.id);
      req.state.requests.delete(req.id);
      this.lastActivity = performance.now();
      req.markDelivered();
      if (this.requests.size === 0) for (const wake of this.idleWaiters.splice(0)) wake();
    }
  }

  private congested(): boolean {
    return this.ws.bufferedAmount > this.limits.highWaterMark;
  }

  private watchDrain(): void {
    this.congestedSince ??= performance.now();
    this.drainTimer ??= setInterval(() => this.checkDrain(), 20);
  }

  private checkDrain(): void {
    if (this.closing) return;
    if (!this.congested()) {
      clearInterval(this.drainTimer);
      this.drainTimer = undefined;
      this.congestedSince = undefined;
      for (const req of [...this.requests.values()]) this.flush(req);
    } else if (performance.now() - this.congestedSince! > this.limits.stallTimeoutMs) {
      this.close(CloseCode.slowReader, 'reader too slow');
    }
  }

  private send(frame: ServerFrame): void {
    if (this.closing || this.ws.readyState !== WebSocket.OPEN) return;
    const data = JSON.stringify(frame);
    const bytes = Buffer.byteLength(data);
    if (this.ws.bufferedAmount + bytes > this.limits.maxBufferedBytes) {
      this.close(CloseCode.slowReader, 'reader too slow (buffer limit)');
      return;
    }
    this.ws.send(data);
    this.reads.sentBytes(bytes, performance.now());
    if (this.congested()) this.watchDrain();
  }

  private error(id: string | undefined, code: ErrorCode, message: string, extra: { option?: string; retryAfterMs?: number; conversation?: string } = {}): void {
    this.send({ type: 'error', ...(id === undefined ? {} : { id }), code, message, ...extra });
  }

  private fail(id: string, err: unknown): void {
    this.send(errorFrame(id, err));
  }

  // -- lifetime -------------------------------------------------------------------------------------------
  /** Resolves when no reply is in progress. */
  idle(): Promise<void> {
    if (this.requests.size === 0 || this.closing) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  abortAll(): void {
    for (const req of this.requests.values()) if (!req.final) req.generation.abort();
  }

  /** Closes with a code; drops the TCP connection if the close handshake is not done within closeGraceMs. */
  close(code: number, reason: string): void {
    if (this.closing) return;
    this.closing = true;
    this.serverCloseReason = reason;
    this.abortAll();
    try {
      this.ws.close(code, reason);
    } catch {
      this.ws.terminate();
    }
    this.killTimer = setTimeout(() => this.ws.terminate(), this.limits.closeGraceMs);
  }

  /** Timeouts (authentication, idleness, a client that does not read), and read probes. Runs often (≤ 1 s). */
  sweep(now: number): void {
    if (this.closing || this.ws.readyState !== WebSocket.OPEN) return;
    if (!this.authenticated && this.server.authRequired && now - this.connectedAt > this.limits.authTimeoutMs) {
      this.close(CloseCode.unauthorized, 'authentication timeout');
    } else if (this.reads.unreadMs(now) > this.limits.stallTimeoutMs) {
      this.close(CloseCode.slowReader, 'reader too slow');
    } else if (this.requests.size === 0 && now - this.lastActivity > this.limits.idleTimeoutMs) {
      this.close(CloseCode.idleTimeout, 'idle timeout');
    } else if (this.reads.probeDue) {
      // Output the client has not acknowledged: ask it to (a ping answered only after what was sent before it).
      this.ws.ping(this.reads.startProbe(now));
    }
  }

  /**
   * WebSocket heartbeat. A client that answered nothing since the previous one is gone or not reading: closed with
   * 4002 when output sent to it is unacknowledged (it does not read), else dropped (1006, it is gone).
   */
  heartbeat(): void {
    if (this.closing || this.ws.readyState !== WebSocket.OPEN) return;
    if (!this.alive) {
      if (this.reads.unreadBytes > 0) return this.close(CloseCode.slowReader, 'reader too slow');
      this.serverCloseReason = 'heartbeat timeout';
      this.closing = true;
      this.ws.terminate();
      return;
    }
    this.alive = false;
    if (this.reads.probeDue) this.ws.ping(this.reads.startProbe(performance.now()));
    else this.ws.ping();
  }

  private cleanup(): void {
    this.closing = true;
    clearInterval(this.drainTimer);
    clearTimeout(this.killTimer);
    for (const req of this.requests.values()) {
      if (!req.final) req.generation.abort();
      req.markDelivered();
    }
    this.requests.clear();
    // Its conversations stay resumable for a while (the store forgets those without history at once).
    const now = performance.now();
    for (const state of this.conversations.values()) {
      if (state.entry.owner === this) this.server.store.detach(state.entry, now, state.requests.size > 0);
    }
    this.conversations.clear();
    for (const wake of this.idleWaiters.splice(0)) wake();
  }
}

function doneFrame(req: Request, r: GenerationResult): DoneFrame {
  return {
    type: 'done',
    id: req.id,
    conversation: req.conversation,
    text: r.text,
    finishReason: r.finishReason,
    usage: { promptTokens: r.usage.promptTokens, completionTokens: r.usage.completionTokens },
    timings: { queuedMs: round(r.timings.queuedMs), firstTokenMs: round(r.timings.firstTokenMs), totalMs: round(r.timings.totalMs) },
  };
}

const ENGINE_CODES = new Set<string>(['empty_message', 'message_too_long', 'bad_option', 'queue_full', 'engine_closed', 'generation_failed']);

/** An error frame for a request that failed: engine codes pass through, option errors name the option. */
export function errorFrame(id: string | undefined, err: unknown): ErrorFrame {
  const base = id === undefined ? {} : { id };
  if (err instanceof GenerationOptionsError || (err instanceof Error && err.name === 'GenerationOptionsError')) {
    return { type: 'error', ...base, code: 'bad_option', message: err.message, option: (err as GenerationOptionsError).option };
  }
  if (err instanceof VikdfError || (err instanceof Error && ENGINE_CODES.has((err as VikdfError).code))) {
    return { type: 'error', ...base, code: (err as VikdfError).code as ErrorCode, message: err.message };
  }
  return { type: 'error', ...base, code: 'internal_error', message: err instanceof Error ? err.message : String(err) };
}

/** The first `max` characters of `text`, never splitting a surrogate pair. */
function sliceText(text: string, max: number): string {
  if (text.length <= max) return text;
  const code = text.charCodeAt(max - 1);
  return text.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max);
}

function rawText(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
