/**
 * The WebSocket server: exposes an engine's conversations through protocol version 1 (docs/websocket-protocol.md),
 * serves the chat page at `/`, and enforces the limits (frame size, rates, concurrency, backpressure, idle time,
 * origins, authentication).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { STATUS_CODES, createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
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
  type SendOptions,
} from '@vikdf/core';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import {
  CloseCode,
  DEFAULT_CONVERSATION,
  PROTOCOL_VERSION,
  WS_PATH,
  isValidId,
  type AnnouncedLimits,
  type DoneFrame,
  type ErrorCode,
  type ErrorFrame,
  type HelloFrame,
  type ModelSummary,
  type ServerFrame,
} from './protocol.js';
import { TokenBucket, type RateLimit } from './rate-limit.js';

/** One conversation of the engine, as the server uses it (`@vikdf/core`'s Conversation). */
export interface ChatConversation {
  send(text: string, options?: SendOptions): Generation;
}

/** What the server needs of an engine (`@vikdf/core`'s Engine). */
export interface ChatEngine {
  readonly manifest: BundleManifest;
  readonly provider: ProviderReport;
  conversation(options?: ConversationOptions): ChatConversation;
}

export interface ServerLimits {
  /** Largest frame accepted, in bytes; a larger one closes the connection with 1009. Default 64 KiB. */
  maxFrameBytes: number;
  /** Longest message text, in characters (the engine also checks its token budget). Default 4000. */
  maxMessageChars: number;
  /** Largest `maxNewTokens` a client may ask for. Default 256. */
  maxNewTokens: number;
  /** Largest `numBeams` a client may ask for. Default 4. */
  maxNumBeams: number;
  /** Conversations one connection may hold (reset frees one). Default 16. */
  maxConversations: number;
  /** Replies in progress per connection (a reply counts until its done frame is sent). Default 4. */
  maxConcurrentRequests: number;
  /** Open connections in all. Default 256. */
  maxConnections: number;
  /** Open connections per client IP address. Default 16. */
  maxConnectionsPerIp: number;
  /** Frames of any kind per connection. Default burst 40, 20 per second. */
  frameRate: RateLimit;
  /** Messages (generation requests) per client IP address, over all its connections. Default burst 20, 2 per second. */
  messageRatePerIp: RateLimit;
  /** Frames dropped in a row by the frame rate limit before the connection is closed with 1008. Default 100. */
  floodCloseAfter: number;
  /** Close (4000) a connection with no frame from the client and no reply in progress for this long. Default 5 min. */
  idleTimeoutMs: number;
  /** With a token: close (4001) a connection not authenticated after this long. Default 10 s. */
  authTimeoutMs: number;
  /** WebSocket ping interval; a connection that has not answered the previous ping is dropped. Default 30 s. */
  heartbeatMs: number;
  /** Above this many bytes waiting to be sent, token frames are held and merged. Default 64 KiB. */
  highWaterMark: number;
  /** A connection with more than this waiting is closed with 4002 at once. Default 4 MiB. */
  maxBufferedBytes: number;
  /** A connection above the high-water mark for this long is closed with 4002. Default 30 s. */
  stallTimeoutMs: number;
  /** After the server sends a close frame, drop the TCP connection if the close is not done by then. Default 2 s. */
  closeGraceMs: number;
}

export const DEFAULT_LIMITS: Readonly<ServerLimits> = Object.freeze({
  maxFrameBytes: 64 * 1024,
  maxMessageChars: 4000,
  maxNewTokens: 256,
  maxNumBeams: 4,
  maxConversations: 16,
  maxConcurrentRequests: 4,
  maxConnections: 256,
  maxConnectionsPerIp: 16,
  frameRate: { burst: 40, perSecond: 20 },
  messageRatePerIp: { burst: 20, perSecond: 2 },
  floodCloseAfter: 100,
  idleTimeoutMs: 5 * 60_000,
  authTimeoutMs: 10_000,
  heartbeatMs: 30_000,
  highWaterMark: 64 * 1024,
  maxBufferedBytes: 4 * 1024 * 1024,
  stallTimeoutMs: 30_000,
  closeGraceMs: 2_000,
});

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
   * Browser origins allowed to connect besides the server's own (the chat page); `'*'` allows any. Upgrades
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

export interface ConnectionInfo {
  connection: string;
  ip: string;
}

export interface DisconnectInfo extends ConnectionInfo {
  /** The close code (the server's own when it closed the connection; 1006 when the TCP connection was dropped). */
  code: number;
  reason: string;
}

export interface ConnectionState extends ConnectionInfo {
  authenticated: boolean;
  /** Replies in progress (until their done frame is sent). */
  requests: number;
  conversations: number;
  /** Bytes waiting to be sent (ws bufferedAmount). */
  bufferedAmount: number;
  /** How long the connection has been over the high-water mark (0 when it is not). */
  stalledMs: number;
  /** The server has begun closing it. */
  closing: boolean;
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

const PAGE_FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/index.html': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/chat.js': { file: 'chat.js', type: 'text/javascript; charset=utf-8' },
  '/chat.css': { file: 'chat.css', type: 'text/css; charset=utf-8' },
};

const PAGE_HEADERS = {
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  'Cache-Control': 'no-cache',
};

export class VikdfServer extends EventEmitter<ServerEvents> {
  readonly limits: Readonly<ServerLimits>;
  readonly engine: ChatEngine;
  private readonly http: HttpServer;
  private readonly wss: WebSocketServer;
  private readonly connections = new Map<string, Connection>();
  private readonly connectionsPerIp = new Map<string, number>();
  private readonly ipBuckets = new Map<string, TokenBucket>();
  private readonly page = new Map<string, { body: Buffer; type: string }>();
  private readonly tokenDigest: Buffer | undefined;
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
    if (!options.engine) throw new TypeError('ServerOptions.engine is required');
    this.engine = options.engine;
    const given = Object.fromEntries(Object.entries(options.limits ?? {}).filter(([, v]) => v !== undefined));
    this.limits = Object.freeze({ ...DEFAULT_LIMITS, ...given });
    if (options.token !== undefined && (typeof options.token !== 'string' || !options.token)) {
      throw new TypeError('ServerOptions.token must be a non-empty string');
    }
    this.tokenDigest = options.token === undefined ? undefined : digest(options.token);
    // Fail at construction, not on the first message, if the server's own defaults are invalid.
    this.defaults = effectiveDefaults(this.engine.manifest, options.defaults, this.generationLimits);
    if (options.chatPage !== false) {
      for (const [route, { file, type }] of Object.entries(PAGE_FILES)) {
        this.page.set(route, { body: readFileSync(new URL(`../public/${file}`, import.meta.url)), type });
      }
    }
    this.http = createHttpServer((req, res) => this.onRequest(req, res));
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
    const every = Math.max(20, Math.min(1000, Math.floor(Math.min(this.limits.idleTimeoutMs, this.limits.authTimeoutMs, this.limits.stallTimeoutMs) / 4)));
    this.sweepTimer = setInterval(() => this.sweep(), every).unref();
    this.heartbeatTimer = setInterval(() => this.heartbeat(), this.limits.heartbeatMs).unref();
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

  /**
   * Graceful shutdown: refuses new connections (HTTP 503) and messages (`shutting_down`), lets replies in
   * progress finish (`finish`, up to `timeoutMs`) or stops them (`cancel`), then closes every connection with
   * 1001 and stops listening. The engine is not closed (it belongs to the caller).
   */
  close(options: CloseOptions = {}): Promise<void> {
    this.closing ??= this.shutdown(options);
    return this.closing;
  }

  private async shutdown({ mode = 'finish', timeoutMs = 10_000 }: CloseOptions): Promise<void> {
    this.shuttingDown = true;
    const httpClosed = new Promise<void>((resolve) => {
      if (!this.http.listening) resolve();
      else this.http.close(() => resolve());
    });
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
    this.http.closeAllConnections();
    await httpClosed;
  }

  // -- HTTP -----------------------------------------------------------------------------------------------
  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const pathname = pathOf(req);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
      return;
    }
    if (pathname === '/healthz') {
      const body = JSON.stringify({
        status: this.shuttingDown ? 'shutting_down' : 'ok',
        protocol: PROTOCOL_VERSION,
        model: this.engine.manifest.name,
        device: this.engine.provider.device,
      });
      res.writeHead(this.shuttingDown ? 503 : 200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    const file = this.page.get(pathname);
    if (!file) {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('not found\n');
      return;
    }
    res.writeHead(200, { 'Content-Type': file.type, 'Content-Length': file.body.length, ...PAGE_HEADERS });
    res.end(req.method === 'HEAD' ? undefined : file.body);
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    if (pathOf(req) !== WS_PATH) return refuse(socket, 404, `WebSocket endpoint is ${WS_PATH}`);
    if (this.shuttingDown) return refuse(socket, 503, 'server shutting down');
    if (!this.originAllowed(req)) return refuse(socket, 403, 'origin not allowed');
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

  private originAllowed(req: IncomingMessage): boolean {
    const origin = req.headers.origin;
    if (origin === undefined) return true;
    const allowed = this.options.allowedOrigins ?? [];
    if (allowed.includes('*') || allowed.includes(origin)) return true;
    const host = req.headers.host?.toLowerCase();
    return host !== undefined && (origin.toLowerCase() === `http://${host}` || origin.toLowerCase() === `https://${host}`);
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
    const l = this.limits;
    const limits: AnnouncedLimits = {
      maxFrameBytes: l.maxFrameBytes,
      maxMessageChars: l.maxMessageChars,
      maxNewTokens: l.maxNewTokens,
      maxNumBeams: l.maxNumBeams,
      maxConversations: l.maxConversations,
      maxConcurrentRequests: l.maxConcurrentRequests,
      idleTimeoutMs: l.idleTimeoutMs,
      heartbeatMs: l.heartbeatMs,
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
      limits,
      defaults: { ...this.defaults },
    };
  }

  // -- shared state used by connections -----------------------------------------------------------------
  /** @internal */
  get generationLimits(): { maxNewTokens: number; maxNumBeams: number } {
    return { maxNewTokens: this.limits.maxNewTokens, maxNumBeams: this.limits.maxNumBeams };
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
  }

  private heartbeat(): void {
    for (const c of this.connections.values()) c.heartbeat();
  }
}

interface ConversationState {
  conversation: ChatConversation;
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

/** One client connection: its conversations, requests in progress, rate limits and outgoing flow control. */
class Connection {
  private readonly requests = new Map<string, Request>();
  private readonly conversations = new Map<string, ConversationState>();
  private readonly frames: TokenBucket;
  private readonly connectedAt = performance.now();
  private lastActivity = performance.now();
  private alive = true;
  private closing = false;
  private drops = 0;
  private lastNotice = -Infinity;
  private stalledSince: number | undefined;
  private drainTimer: NodeJS.Timeout | undefined;
  private killTimer: NodeJS.Timeout | undefined;
  private nextRequest = 1;
  private idleWaiters: (() => void)[] = [];
  readonly closed: Promise<void>;
  closeCode: number = CloseCode.normal;
  closeReason = '';
  private serverCloseReason: string | undefined;

  constructor(
    private readonly server: VikdfServer,
    private readonly ws: WebSocket,
    readonly id: string,
    readonly ip: string,
    private authenticated: boolean,
  ) {
    this.frames = new TokenBucket(server.limits.frameRate);
    this.closed = new Promise<void>((resolve) => {
      ws.on('close', (code: number, reason: Buffer) => {
        this.closeCode = code;
        this.closeReason = this.serverCloseReason ?? reason.toString('utf8');
        this.cleanup();
        resolve();
      });
    });
    ws.on('error', () => undefined); // ws closes the connection itself (1009 for an oversized frame, 1007 for bad UTF-8)
    ws.on('pong', () => (this.alive = true));
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
    return {
      connection: this.id,
      ip: this.ip,
      authenticated: this.authenticated,
      requests: this.requests.size,
      conversations: this.conversations.size,
      bufferedAmount: this.ws.bufferedAmount,
      stalledMs: this.stalledSince === undefined ? 0 : performance.now() - this.stalledSince,
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
    this.lastActivity = performance.now();
    if (!this.frames.take()) {
      this.drops++;
      if (this.drops > this.limits.floodCloseAfter) {
        this.close(CloseCode.policyViolation, 'rate limit exceeded');
      } else if (this.lastActivity - this.lastNotice >= 1000) {
        // One notice a second at most: a flood must not make the server write as much as it reads.
        this.lastNotice = this.lastActivity;
        this.error(undefined, 'rate_limited', 'too many frames: this one and the next ones are dropped until the rate falls', {
          retryAfterMs: this.frames.retryAfterMs(),
        });
      }
      return;
    }
    this.drops = 0;
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
      default:
        return this.error(id, 'unknown_type', `unknown frame type ${JSON.stringify(frame.type.slice(0, 64))}`);
    }
  }

  private onHello(frame: Record<string, unknown>, id: string | undefined): void {
    if (frame.protocol !== PROTOCOL_VERSION) {
      this.error(id, 'unsupported_protocol', `this server speaks protocol ${PROTOCOL_VERSION}, not ${JSON.stringify(frame.protocol)}`);
      this.close(CloseCode.unsupportedProtocol, 'unsupported protocol');
    }
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
    const id = given ?? `srv-${this.nextRequest++}`;
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
      const system = this.server.options.system;
      state = { conversation: this.server.engine.conversation(system === undefined ? {} : { system }), requests: new Set() };
      this.conversations.set(conversation, state);
    }
    let markDelivered!: () => void;
    const delivered = new Promise<void>((resolve) => (markDelivered = resolve));
    let generation: Generation;
    try {
      generation = state.conversation.send(frame.text, { options });
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
    generation.result.then(
      (result) => {
        req.final = doneFrame(req, result);
        this.flush(req);
      },
      (err: unknown) => {
        req.final = errorFrame(id, err);
        this.flush(req);
      },
    );
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
    const state = this.conversations.get(conversation);
    this.conversations.delete(conversation);
    const pending: Promise<void>[] = [];
    for (const rid of state?.requests ?? []) {
      const req = this.requests.get(rid);
      if (!req) continue;
      if (!req.final) req.generation.abort();
      pending.push(req.delivered);
    }
    // Stopped replies end (done, finishReason "aborted") before reset_ok.
    void Promise.all(pending).then(() => this.send({ type: 'reset_ok', ...(id === undefined ? {} : { id }), conversation }));
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
    this.stalledSince ??= performance.now();
    this.drainTimer ??= setInterval(() => this.checkDrain(), 20);
  }

  private checkDrain(): void {
    if (this.closing) return;
    if (!this.congested()) {
      clearInterval(this.drainTimer);
      this.drainTimer = undefined;
      this.stalledSince = undefined;
      for (const req of [...this.requests.values()]) this.flush(req);
    } else if (performance.now() - this.stalledSince! > this.limits.stallTimeoutMs) {
      this.close(CloseCode.slowReader, 'reader too slow');
    }
  }

  private send(frame: ServerFrame): void {
    if (this.closing || this.ws.readyState !== WebSocket.OPEN) return;
    const data = JSON.stringify(frame);
    if (this.ws.bufferedAmount + Buffer.byteLength(data) > this.limits.maxBufferedBytes) {
      this.close(CloseCode.slowReader, 'reader too slow (buffer limit)');
      return;
    }
    this.ws.send(data);
    if (this.congested()) this.watchDrain();
  }

  private error(id: string | undefined, code: ErrorCode, message: string, extra: { option?: string; retryAfterMs?: number } = {}): void {
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

  sweep(now: number): void {
    if (this.closing) return;
    if (!this.authenticated && this.server.authRequired && now - this.connectedAt > this.limits.authTimeoutMs) {
      this.close(CloseCode.unauthorized, 'authentication timeout');
    } else if (this.requests.size === 0 && now - this.lastActivity > this.limits.idleTimeoutMs) {
      this.close(CloseCode.idleTimeout, 'idle timeout');
    }
  }

  heartbeat(): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    if (!this.alive) {
      this.serverCloseReason = 'heartbeat timeout';
      this.closing = true;
      this.ws.terminate();
      return;
    }
    this.alive = false;
    this.ws.ping();
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
    this.conversations.clear();
    for (const wake of this.idleWaiters.splice(0)) wake();
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

function refuse(socket: Duplex, status: number, message: string, headers: Record<string, string> = {}): void {
  const body = `${message}\n`;
  const lines = [
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}`,
    'Connection: close',
    'Content-Type: text/plain; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  socket.once('finish', () => socket.destroy());
  socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
}

/** Longest text of one token frame (merged text is split into frames of this size at most). */
const MAX_TOKEN_FRAME_CHARS = 16 * 1024;

/** The first `max` characters of `text`, never splitting a surrogate pair. */
function sliceText(text: string, max: number): string {
  if (text.length <= max) return text;
  const code = text.charCodeAt(max - 1);
  return text.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max);
}

/** The path of a request target, without its query (no URL parsing: a bad target must not throw). */
function pathOf(req: IncomingMessage): string {
  const target = req.url ?? '/';
  const end = target.search(/[?#]/);
  return end < 0 ? target : target.slice(0, end);
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

function rawText(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
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
