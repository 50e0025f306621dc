/**
 * The WebSocket server: exposes an engine's conversations through protocol version 1 (docs/websocket-protocol.md)
 * and serves the chat page at `/`. This file wires the parts: the HTTP side (http.ts: page, /healthz, Host and
 * Origin checks), connections (connection.ts: frames, conversations, flow control), limits (limits.ts,
 * rate-limit.ts) and the store of resumable conversations (conversations.ts).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { resolveOptions, type BundleManifest, type GenerationOptions } from '@vikdf/core';
import { WebSocketServer, type WebSocket } from 'ws';
import { Connection, type ChatEngine, type ConnectionHost, type ConnectionInfo, type ConnectionState } from './connection.js';
import { ConversationStore } from './conversations.js';
import { HostPolicy, handleRequest, loadChatPage, pathOf, refuse, type HttpState } from './http.js';
import { resolveLimits, type ServerLimits } from './limits.js';
import { CloseCode, FEATURES, PROTOCOL_VERSION, WS_PATH, type AnnouncedLimits, type HelloFrame, type ModelSummary } from './protocol.js';
import { TokenBucket } from './rate-limit.js';

export type { ChatConversation } from './conversations.js';
export type { ChatEngine, ConnectionInfo, ConnectionState } from './connection.js';
export { errorFrame } from './connection.js';
export { DEFAULT_LIMITS, type ServerLimits } from './limits.js';

export interface ServerOptions {
  engine: ChatEngine;
  /** Interface to listen on (default 127.0.0.1). */
  host?: string;
  /** Port (default 8787; 0 picks a free one). */
  port?: number;
  /**
   * Bearer token. When set, a connection must present it (`Authorization: Bearer <token>` at upgrade, or an
   * `auth` frame) before sending messages. Compared in constant time.
   */
  token?: string;
  /**
   * Host names the server answers to besides its own address (and `localhost`, `127.0.0.1`, `[::1]` on loopback):
   * `chat.example` (any port), `chat.example:8443` (that port), `*` (any: only behind a proxy that checks Host).
   * Requests with another Host header get HTTP 403 (the defence against DNS rebinding).
   */
  allowedHosts?: string[];
  /**
   * Browser origins allowed to connect besides the server's own hosts (the chat page); `'*'` allows any. Upgrades
   * with another Origin header get HTTP 403. Clients that send no Origin (non-browser) are always allowed.
   */
  allowedOrigins?: string[];
  /** Persona or system text for every conversation. */
  system?: string;
  /** Generation options applied under each message's own (e.g. `{ numBeams: 1 }` to stream token by token). */
  defaults?: GenerationOptions;
  limits?: Partial<ServerLimits>;
  /** Serve the chat page at `/` (default true). */
  chatPage?: boolean;
}

export interface DisconnectInfo extends ConnectionInfo {
  /** The close code (the server's own when it closed the connection; 1006 when the TCP connection was dropped). */
  code: number;
  reason: string;
}

export interface ServerEvents {
  listening: [url: string];
  connection: [info: ConnectionInfo];
  disconnect: [info: DisconnectInfo];
}

export interface CloseOptions {
  /** `finish` (default): let replies in progress complete (up to `timeoutMs`); `cancel`: stop them. */
  mode?: 'finish' | 'cancel';
  /** Longest wait for replies in progress before they are stopped. Default 10 s. */
  timeoutMs?: number;
}

const PACKAGE = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { name: string; version: string };
const SERVER_NAME = `${PACKAGE.name}/${PACKAGE.version}`;

export class VikdfServer extends EventEmitter<ServerEvents> implements ConnectionHost {
  readonly limits: Readonly<ServerLimits>;
  readonly engine: ChatEngine;
  /** @internal Conversations by token (resumable ones included). */
  readonly store: ConversationStore;
  private readonly http: HttpServer;
  private readonly wss: WebSocketServer;
  private readonly httpState: HttpState;
  private readonly hosts: HostPolicy;
  private readonly connections = new Map<string, Connection>();
  private readonly connectionsPerIp = new Map<string, number>();
  private readonly ipBuckets = new Map<string, TokenBucket>();
  private readonly tokenDigest: Buffer | undefined;
  private readonly announced: AnnouncedLimits;
  private nextConnection = 1;
  private sweepTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;
  private bound: AddressInfo | undefined;
  /**
   * Generation options applied under each message's: `ServerOptions.defaults`, plus `maxNewTokens` and
   * `numBeams` lowered to the server's limits where the bundle's defaults exceed them.
   */
  readonly defaults: GenerationOptions;
  /** True once close() was called: no new connections or messages. */
  shuttingDown = false;

  constructor(readonly options: ServerOptions) {
    super();
    if (!options || typeof options !== 'object') throw new TypeError('createServer needs options ({ engine, ... })');
    if (!options.engine) throw new TypeError('ServerOptions.engine is required');
    this.engine = options.engine;
    this.limits = resolveLimits(options.limits);
    if (options.token !== undefined && (typeof options.token !== 'string' || !options.token)) {
      throw new TypeError('ServerOptions.token must be a non-empty string');
    }
    if (options.system !== undefined && typeof options.system !== 'string') throw new TypeError('ServerOptions.system must be a string');
    this.tokenDigest = options.token === undefined ? undefined : digest(options.token);
    this.hosts = new HostPolicy({
      ...(options.allowedHosts === undefined ? {} : { allowedHosts: options.allowedHosts }),
      ...(options.allowedOrigins === undefined ? {} : { allowedOrigins: options.allowedOrigins }),
    });
    // Fail at construction, not on the first message, if the server's own defaults are invalid.
    this.defaults = effectiveDefaults(this.engine.manifest, options.defaults, this.generationLimits);
    this.announced = announcedLimits(this.engine, options.system, this.limits);
    this.store = new ConversationStore(this.limits);
    this.httpState = {
      page: options.chatPage === false ? new Map() : loadChatPage(),
      hosts: this.hosts,
      shuttingDown: false,
      health: () => ({ protocol: PROTOCOL_VERSION, model: this.engine.manifest.name, device: this.engine.provider.device }),
    };
    this.http = createHttpServer((req, res) => handleRequest(this.httpState, req, res));
    this.http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.onUpgrade(req, socket, head));
    this.wss = new WebSocketServer({ noServer: true, maxPayload: this.limits.maxFrameBytes, perMessageDeflate: false, clientTracking: false });
  }

  /** Starts listening; resolves with the page's URL (`http://host:port/`). */
  async listen(): Promise<string> {
    const host = this.options.host ?? '127.0.0.1';
    const port = this.options.port ?? 8787;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.http.once('error', onError);
      this.http.listen(port, host, () => {
        this.http.off('error', onError);
        this.bound = this.http.address() as AddressInfo;
        resolve();
      });
    });
    this.hosts.bind(host, this.bound!);
    const l = this.limits;
    const every = Math.max(20, Math.min(1000, Math.floor(Math.min(l.idleTimeoutMs, l.authTimeoutMs, l.stallTimeoutMs) / 4)));
    this.sweepTimer = setInterval(() => this.sweep(), every).unref();
    this.heartbeatTimer = setInterval(() => this.heartbeat(), l.heartbeatMs).unref();
    this.emit('listening', this.url);
    return this.url;
  }

  /** Where the server listens (kept after close). */
  get address(): AddressInfo {
    if (!this.bound) throw new Error('the server is not listening yet (call listen())');
    return this.bound;
  }

  /** The chat page, e.g. `http://127.0.0.1:8787/`. */
  get url(): string {
    const { address, port } = this.address;
    return `http://${address.includes(':') ? `[${address}]` : address}:${port}/`;
  }

  /** The WebSocket endpoint, e.g. `ws://127.0.0.1:8787/ws`. */
  get wsUrl(): string {
    return `${this.url.replace(/^http/, 'ws').replace(/\/$/, '')}${WS_PATH}`;
  }

  /** Open connections. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** A snapshot of every open connection (for monitoring). */
  connectionsInfo(): ConnectionState[] {
    return [...this.connections.values()].map((c) => c.info());
  }

  /** Conversations held (owned by a connection, or kept for resumption) and bytes of their history. */
  get conversationStats(): { conversations: number; detached: number; bytes: number } {
    return this.store.stats;
  }

  /**
   * Graceful shutdown: refuses new connections (HTTP 503) and messages (`shutting_down`), lets replies in
   * progress finish (`finish`, up to `timeoutMs`) or stops them (`cancel`), then closes every connection with
   * 1001 and stops listening. While it drains, the listener stays open so that `/healthz` answers 503. The
   * engine is not closed (it belongs to the caller).
   */
  close(options: CloseOptions = {}): Promise<void> {
    this.closing ??= this.shutdown(options);
    return this.closing;
  }

  private async shutdown({ mode = 'finish', timeoutMs = 10_000 }: CloseOptions): Promise<void> {
    this.shuttingDown = true;
    this.httpState.shuttingDown = true;
    this.http.closeIdleConnections();
    const all = [...this.connections.values()];
    if (mode === 'cancel') for (const c of all) c.abortAll();
    await withTimeout(Promise.all(all.map((c) => c.idle())), timeoutMs);
    // Replies still running are stopped; their done frames (finishReason "aborted") go out before the close.
    for (const c of all) c.abortAll();
    await withTimeout(Promise.all(all.map((c) => c.idle())), this.limits.closeGraceMs);
    for (const c of all) c.close(CloseCode.goingAway, 'server shutting down');
    await Promise.all(all.map((c) => c.closed));
    clearInterval(this.sweepTimer);
    clearInterval(this.heartbeatTimer);
    const httpClosed = new Promise<void>((resolve) => {
      if (!this.http.listening) resolve();
      else this.http.close(() => resolve());
    });
    this.http.closeAllConnections();
    await httpClosed;
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    if (!this.hosts.hostAllowed(req.headers.host)) return refuse(socket, 403, 'host not allowed');
    if (pathOf(req) !== WS_PATH) return refuse(socket, 404, `WebSocket endpoint is ${WS_PATH}`);
    if (this.shuttingDown) return refuse(socket, 503, 'server shutting down');
    if (!this.hosts.originAllowed(req.headers.origin)) return refuse(socket, 403, 'origin not allowed');
    const ip = req.socket.remoteAddress ?? 'unknown';
    if (this.connections.size >= this.limits.maxConnections) return refuse(socket, 503, 'too many connections');
    if ((this.connectionsPerIp.get(ip) ?? 0) >= this.limits.maxConnectionsPerIp) {
      return refuse(socket, 429, 'too many connections from this address');
    }
    let authenticated = this.tokenDigest === undefined;
    const header = req.headers.authorization;
    if (this.tokenDigest && header !== undefined) {
      const match = /^Bearer +(\S+) *$/i.exec(header);
      if (!match || !this.tokenMatches(match[1]!)) return refuse(socket, 401, 'bad token', { 'WWW-Authenticate': 'Bearer' });
      authenticated = true;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, ip, authenticated));
  }

  private onConnection(ws: WebSocket, ip: string, authenticated: boolean): void {
    const id = `c${this.nextConnection++}`;
    const conn = new Connection(this, ws, id, ip, authenticated);
    this.connections.set(id, conn);
    this.connectionsPerIp.set(ip, (this.connectionsPerIp.get(ip) ?? 0) + 1);
    void conn.closed.then(() => {
      this.connections.delete(id);
      const n = (this.connectionsPerIp.get(ip) ?? 1) - 1;
      if (n > 0) this.connectionsPerIp.set(ip, n);
      else this.connectionsPerIp.delete(ip);
      this.emit('disconnect', { connection: id, ip, code: conn.closeCode, reason: conn.closeReason });
    });
    this.emit('connection', { connection: id, ip });
    conn.start(this.hello(id, authenticated));
  }

  private hello(connection: string, authenticated: boolean): HelloFrame {
    const m = this.engine.manifest;
    const model: ModelSummary = {
      name: m.name,
      source: m.source,
      textEncoder: m.model.text_encoder,
      llm: m.model.llm_architecture,
      parameters: Object.values(m.model.parameters ?? {}).reduce((a, b) => a + b, 0),
    };
    return {
      type: 'hello',
      protocol: PROTOCOL_VERSION,
      server: SERVER_NAME,
      connection,
      auth: this.tokenDigest ? 'required' : 'none',
      authenticated,
      model,
      device: this.engine.provider.device,
      limits: { ...this.announced },
      defaults: { ...this.defaults },
      features: [...FEATURES],
    };
  }

  // -- what connections use ---------------------------------------------------------------------------------
  /** @internal */
  get generationLimits(): { maxNewTokens: number; maxNumBeams: number } {
    return { maxNewTokens: this.limits.maxNewTokens, maxNumBeams: this.limits.maxNumBeams };
  }

  /** @internal */
  get system(): string | undefined {
    return this.options.system;
  }

  /** @internal Constant-time comparison of a presented token with the server's (both hashed first). */
  tokenMatches(presented: string): boolean {
    if (!this.tokenDigest) return true;
    return timingSafeEqual(digest(presented), this.tokenDigest);
  }

  /** @internal */
  get authRequired(): boolean {
    return this.tokenDigest !== undefined;
  }

  /** @internal Takes a message token from the IP's bucket; returns the wait in ms when there is none. */
  takeMessageToken(ip: string): number {
    let bucket = this.ipBuckets.get(ip);
    if (!bucket) {
      bucket = new TokenBucket(this.limits.messageRatePerIp);
      this.ipBuckets.set(ip, bucket);
    }
    return bucket.take() ? 0 : bucket.retryAfterMs();
  }

  private sweep(): void {
    const now = performance.now();
    for (const c of this.connections.values()) c.sweep(now);
    for (const [ip, bucket] of this.ipBuckets) if (!this.connectionsPerIp.has(ip) && bucket.full) this.ipBuckets.delete(ip);
    this.store.evict(now);
  }

  private heartbeat(): void {
    for (const c of this.connections.values()) c.heartbeat();
  }
}

/**
 * The server's defaults: its own, then `maxNewTokens` and `numBeams` lowered to its limits where the bundle's
 * defaults exceed them (a server limited to 64 new tokens starts on a bundle whose default is 128). Defaults the
 * caller set explicitly beyond the limits are an error.
 */
function effectiveDefaults(manifest: BundleManifest, given: GenerationOptions | undefined, limits: { maxNewTokens: number; maxNumBeams: number }): GenerationOptions {
  const fail = (err: unknown): never => {
    throw new TypeError(`invalid generation defaults (the bundle's, then ServerOptions.defaults): ${(err as Error).message}`, { cause: err });
  };
  const defaults: GenerationOptions = { ...given };
  try {
    const resolved = resolveOptions(manifest.generation, defaults);
    if (given?.maxNewTokens === undefined && resolved.maxNewTokens > limits.maxNewTokens) {
      defaults.maxNewTokens = limits.maxNewTokens;
      if (resolved.minNewTokens > limits.maxNewTokens && given?.minNewTokens === undefined) defaults.minNewTokens = limits.maxNewTokens;
    }
    if (given?.numBeams === undefined && resolved.numBeams > limits.maxNumBeams) defaults.numBeams = limits.maxNumBeams;
  } catch (err) {
    fail(err);
  }
  try {
    resolveOptions(manifest.generation, defaults, limits);
  } catch (err) {
    fail(err);
  }
  return defaults;
}

/**
 * Ordinary English chat text, to measure how many characters the model's tokenizer puts in a token (for the
 * character figure hello announces next to the token budget).
 */
const SAMPLE_TEXT =
  "Hi! How are you doing today? I just got back from a long walk in the park with my dog, and the weather was " +
  "lovely. Do you have any plans for the weekend? I was thinking of trying that new Italian place downtown, " +
  "but my sister says the pizza there is not as good as people claim. What kind of food do you like best?";

/**
 * The limits hello announces. With an engine that can count tokens (the core Engine): the prompt budget in
 * tokens (the bundle's `prompt.max_length` plus its knowledge tokens: the conversation window older turns are
 * dropped to fit), what of it a message alone may use, and that many tokens of ordinary English in characters
 * (the announced `maxMessageChars`, at most the server's cap).
 */
function announcedLimits(engine: ChatEngine, system: string | undefined, l: Readonly<ServerLimits>): AnnouncedLimits {
  const m = engine.manifest;
  const announced: AnnouncedLimits = {
    maxFrameBytes: l.maxFrameBytes,
    maxMessageChars: l.maxMessageChars,
    maxNewTokens: l.maxNewTokens,
    maxNumBeams: l.maxNumBeams,
    maxConversations: l.maxConversations,
    maxConcurrentRequests: l.maxConcurrentRequests,
    idleTimeoutMs: l.idleTimeoutMs,
    heartbeatMs: l.heartbeatMs,
    resumeTtlMs: l.resumeTtlMs,
  };
  const maxPromptTokens = m.prompt.max_length + m.model.num_query_tokens;
  if (!Number.isSafeInteger(maxPromptTokens)) return announced;
  announced.maxPromptTokens = maxPromptTokens;
  if (!engine.formatter || typeof engine.countTokens !== 'function') return announced;
  const options = system === undefined ? {} : { system };
  const overhead = engine.formatter.countPromptTokens(['a'], options) - engine.countTokens('a');
  const maxMessageTokens = Math.max(0, maxPromptTokens - overhead);
  const charsPerToken = SAMPLE_TEXT.length / Math.max(1, engine.countTokens(SAMPLE_TEXT));
  const chars = Math.floor((maxMessageTokens * charsPerToken) / 10) * 10;
  announced.maxMessageTokens = maxMessageTokens;
  announced.maxMessageChars = Math.max(1, Math.min(l.maxMessageChars, chars));
  return announced;
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

async function withTimeout(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/** Creates a server (call `listen()` to start it). */
export function createServer(options: ServerOptions): VikdfServer {
  return new VikdfServer(options);
}
