// A local stand-in for Slack, for tests: a Web API (auth.test, chat.postMessage, chat.update, conversations.replies,
// apps.connections.open) that records every call, and a Socket Mode WebSocket server on the same port that says
// hello, delivers `events_api` envelopes and records the client's acks. Everything listens on 127.0.0.1, port 0.
import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';

export interface ApiCall {
  method: string;
  params: Record<string, unknown>;
  /** The bearer token the call carried. */
  token: string | undefined;
  /** What the fake answered. */
  response: Record<string, unknown>;
  /** The HTTP status it answered with (200 unless a failure was injected with `failNext`). */
  status: number;
}

/** An injected HTTP failure of a Web API method (see `FakeSlack.failNext`). */
export interface InjectedFailure {
  method: string;
  /** 429 (with Retry-After) or a 5xx. */
  status: number;
  /** How many calls still get it. */
  count: number;
  /** Seconds, for a 429's Retry-After header (default 1: the Web API client reads whole seconds). */
  retryAfter?: number;
  /** Take effect first, then fail (a 5xx from a proxy after Slack did the work): a retry repeats it. */
  afterEffect?: boolean;
}

/** A message the bot posted, with every text it was edited to (the first entry is the posted text). */
export interface PostedMessage {
  channel: string;
  ts: string;
  threadTs: string | undefined;
  texts: string[];
  readonly text: string;
}

/** A message as conversations.replies returns it. */
export interface ThreadMessage {
  user?: string;
  bot_id?: string;
  text: string;
  ts: string;
  thread_ts?: string;
}

export interface Envelope {
  envelope_id: string;
  type: 'events_api';
  accepts_response_payload: false;
  payload: Record<string, unknown>;
  retry_attempt: number;
  retry_reason: string;
}

/** The bot token the fake accepts by default. */
export const FAKE_BOT_TOKEN = 'xoxb-test-token';

type Waiter<T> = { match: (item: T) => boolean; resolve: (item: T) => void };

/** A list that can be awaited for its first item matching a predicate, present or future. */
class Watched<T> {
  readonly items: T[] = [];
  private waiters: Waiter<T>[] = [];
  push(item: T): void {
    this.items.push(item);
    for (const w of [...this.waiters]) {
      if (w.match(item)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(item);
      }
    }
  }
  waitFor(match: (item: T) => boolean): Promise<T> {
    const found = this.items.find(match);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve) => this.waiters.push({ match, resolve }));
  }
}

export interface FakeSlackOptions {
  botUserId?: string;
  botId?: string;
  teamId?: string;
  /** Bot tokens the Web API accepts (others get invalid_auth). Default: FAKE_BOT_TOKEN only. */
  validBotToken?: (token: string) => boolean;
}

export class FakeSlack {
  readonly botUserId: string;
  readonly botId: string;
  readonly teamId: string;
  readonly calls = new Watched<ApiCall>();
  readonly posted: PostedMessage[] = [];
  /** Everything observable in the order it happened: `ack:<envelope_id>`, `api:<method>`, `ws:connect`, ... */
  readonly log: string[] = [];
  /** Acked envelope ids, in order. */
  readonly acks = new Watched<string>();
  readonly connections = new Watched<WebSocket>();
  /** Envelopes a client acked that this server never sent (must stay empty). */
  readonly strayAcks: unknown[] = [];
  /** Make apps.connections.open answer invalid_auth (a revoked app token). */
  rejectAppTokens = false;
  /** Threads for conversations.replies, keyed `${channel}:${thread_ts}`. */
  readonly threads = new Map<string, ThreadMessage[]>();

  private readonly server: Server;
  private readonly wss: WebSocketServer;
  private readonly validBotToken: (token: string) => boolean;
  private readonly failures: InjectedFailure[] = [];
  private readonly sent = new Set<string>();
  private tsCounter = 0;
  private envelopeCounter = 0;
  private port = 0;

  private constructor(opts: FakeSlackOptions) {
    this.botUserId = opts.botUserId ?? 'UBOT';
    this.botId = opts.botId ?? 'BBOT';
    this.teamId = opts.teamId ?? 'T0001';
    this.validBotToken = opts.validBotToken ?? ((t) => t === FAKE_BOT_TOKEN);
    this.server = createServer((req, res) => {
      void this.onRequest(req).then(
        ({ status, body, headers }) => {
          res.writeHead(status, { 'content-type': 'application/json', ...headers });
          res.end(JSON.stringify(body));
        },
        (err: unknown) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(String(err));
        },
      );
    });
    this.wss = new WebSocketServer({ server: this.server, path: '/socket' });
    this.wss.on('connection', (ws) => this.onConnection(ws));
  }

  static async start(opts: FakeSlackOptions = {}): Promise<FakeSlack> {
    const fake = new FakeSlack(opts);
    await new Promise<void>((resolve) => fake.server.listen(0, '127.0.0.1', resolve));
    fake.port = (fake.server.address() as AddressInfo).port;
    return fake;
  }

  /** For `clientOptions.slackApiUrl`. */
  get apiUrl(): string {
    return `http://127.0.0.1:${this.port}/api/`;
  }

  get socketUrl(): string {
    return `ws://127.0.0.1:${this.port}/socket`;
  }

  /**
   * The next `count` calls of `method` get HTTP `status` instead of their answer: a 429 with a Retry-After
   * header, or a 5xx; with `afterEffect`, the call takes effect before the failure is returned.
   */
  failNext(method: string, status: number, count = 1, opts: { retryAfter?: number; afterEffect?: boolean } = {}): void {
    this.failures.push({ method, status, count, ...opts });
  }

  callsTo(method: string): ApiCall[] {
    return this.calls.items.filter((c) => c.method === method);
  }

  waitForCall(method: string, match: (params: Record<string, unknown>) => boolean = () => true): Promise<ApiCall> {
    return this.calls.waitFor((c) => c.method === method && match(c.params));
  }

  /** Resolves once a Web API call leaves the fake in a state where `check()` holds (at once if it holds now). */
  async until(check: () => boolean): Promise<void> {
    if (check()) return;
    await this.calls.waitFor(() => check());
  }

  /** The messages the bot posted in one thread (or at top level of a channel when threadTs is undefined). */
  postedIn(channel: string, threadTs?: string): PostedMessage[] {
    return this.posted.filter((m) => m.channel === channel && m.threadTs === threadTs);
  }

  async close(): Promise<void> {
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // --- Socket Mode -------------------------------------------------------------------------------------------

  /** The connection events go to (the newest open one). */
  get socket(): WebSocket | undefined {
    return [...this.connections.items].reverse().find((ws) => ws.readyState === ws.OPEN);
  }

  /** Delivers an event over Socket Mode; resolves with the envelope id once it is sent. */
  sendEvent(body: Record<string, unknown>, opts: { retryAttempt?: number; envelopeId?: string } = {}): string {
    const ws = this.socket;
    if (!ws) throw new Error('FakeSlack: no Socket Mode connection is open');
    const envelope: Envelope = {
      envelope_id: opts.envelopeId ?? `env-${++this.envelopeCounter}`,
      type: 'events_api',
      accepts_response_payload: false,
      payload: body,
      retry_attempt: opts.retryAttempt ?? 0,
      retry_reason: opts.retryAttempt ? 'timeout' : '',
    };
    this.sent.add(envelope.envelope_id);
    this.log.push(`send:${envelope.envelope_id}`);
    ws.send(JSON.stringify(envelope));
    return envelope.envelope_id;
  }

  waitForAck(envelopeId: string): Promise<string> {
    return this.acks.waitFor((id) => id === envelopeId);
  }

  /** Kills the current Socket Mode connection without a close handshake, as a network failure would. */
  dropConnection(): void {
    const ws = this.socket;
    if (!ws) throw new Error('FakeSlack: no Socket Mode connection to drop');
    this.log.push('ws:drop');
    ws.terminate();
  }

  private onConnection(ws: WebSocket): void {
    this.log.push('ws:connect');
    ws.on('message', (data) => {
      const frame = JSON.parse(String(data)) as { envelope_id?: unknown; payload?: unknown };
      if (typeof frame.envelope_id === 'string' && this.sent.has(frame.envelope_id)) {
        this.log.push(`ack:${frame.envelope_id}`);
        this.acks.push(frame.envelope_id);
      } else {
        this.strayAcks.push(frame);
      }
    });
    ws.send(
      JSON.stringify({
        type: 'hello',
        num_connections: 1,
        debug_info: { host: 'fake-slack', approximate_connection_time: 3600 },
        connection_info: { app_id: 'A0001' },
      }),
    );
    this.connections.push(ws);
  }

  // --- Web API -----------------------------------------------------------------------------------------------

  private async onRequest(req: IncomingMessage): Promise<{ status: number; body: unknown; headers: Record<string, string> }> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const params: Record<string, unknown> = {};
    if ((req.headers['content-type'] ?? '').includes('application/json')) {
      Object.assign(params, raw ? (JSON.parse(raw) as object) : {});
    } else {
      for (const [k, v] of new URLSearchParams(raw)) params[k] = v;
    }
    const auth = req.headers.authorization;
    const token = auth?.startsWith('Bearer ') ? auth.slice(7) : (params.token as string | undefined);
    const method = url.pathname.replace(/^\/api\//, '');
    this.log.push(`api:${method}`);
    const failure = this.failures.find((f) => f.method === method && f.count > 0);
    if (failure) {
      failure.count--;
      const response = failure.afterEffect ? this.answer(method, params, token) : {};
      const body = failure.status === 429 ? { ok: false, error: 'ratelimited' } : { ok: false, error: 'fatal_error' };
      this.calls.push({ method, params, token, response, status: failure.status });
      return { status: failure.status, body, headers: failure.status === 429 ? { 'retry-after': String(failure.retryAfter ?? 1) } : {} };
    }
    const response = this.answer(method, params, token);
    // Recorded after the answer took effect, so that a waiter sees the posted/edited message.
    this.calls.push({ method, params, token, response, status: 200 });
    return { status: 200, body: response, headers: {} };
  }

  private nextTs(): string {
    this.tsCounter += 1;
    return `1700000${String(this.tsCounter).padStart(3, '0')}.000100`;
  }

  private answer(method: string, params: Record<string, unknown>, token: string | undefined): Record<string, unknown> {
    const isBotToken = token !== undefined && this.validBotToken(token);
    switch (method) {
      case 'auth.test':
        if (!isBotToken) return { ok: false, error: 'invalid_auth' };
        return { ok: true, url: 'https://fake.slack/', team: 'Fake', user: 'vikbot', team_id: this.teamId, user_id: this.botUserId, bot_id: this.botId };
      case 'apps.connections.open':
        if (this.rejectAppTokens || !token?.startsWith('xapp-')) return { ok: false, error: 'invalid_auth' };
        return { ok: true, url: this.socketUrl };
      case 'chat.postMessage': {
        if (!isBotToken) return { ok: false, error: 'invalid_auth' };
        const channel = String(params.channel ?? '');
        const text = String(params.text ?? '');
        if (!channel) return { ok: false, error: 'channel_not_found' };
        if (!text) return { ok: false, error: 'no_text' };
        const ts = this.nextTs();
        const threadTs = typeof params.thread_ts === 'string' && params.thread_ts ? params.thread_ts : undefined;
        const texts = [text];
        this.posted.push({ channel, ts, threadTs, texts, get text() { return texts[texts.length - 1] ?? ''; } });
        return { ok: true, channel, ts, message: { type: 'message', text, user: this.botUserId, bot_id: this.botId, ts, thread_ts: threadTs } };
      }
      case 'chat.update': {
        if (!isBotToken) return { ok: false, error: 'invalid_auth' };
        const msg = this.posted.find((m) => m.channel === params.channel && m.ts === params.ts);
        if (!msg) return { ok: false, error: 'message_not_found' };
        const text = String(params.text ?? '');
        if (!text) return { ok: false, error: 'no_text' };
        msg.texts.push(text);
        return { ok: true, channel: msg.channel, ts: msg.ts, text };
      }
      case 'conversations.replies': {
        if (!isBotToken) return { ok: false, error: 'invalid_auth' };
        const messages = this.threads.get(`${String(params.channel)}:${String(params.ts)}`);
        if (!messages) return { ok: false, error: 'thread_not_found' };
        return { ok: true, messages, has_more: false };
      }
      default:
        return { ok: false, error: 'unknown_method' };
    }
  }
}

// --- Event bodies and signed HTTP deliveries ------------------------------------------------------------------

let eventCounter = 0;

/** An `event_callback` body around one event, as Slack sends it over HTTP or inside a Socket Mode envelope. */
export function eventCallback(event: Record<string, unknown>, opts: { eventId?: string; teamId?: string; botUserId?: string } = {}): Record<string, unknown> {
  eventCounter += 1;
  return {
    token: 'verification-token-unused',
    team_id: opts.teamId ?? 'T0001',
    api_app_id: 'A0001',
    event: { event_ts: event.ts, ...event },
    type: 'event_callback',
    event_id: opts.eventId ?? `Ev${String(eventCounter).padStart(8, '0')}`,
    event_time: 1_700_000_000 + eventCounter,
    authorizations: [{ enterprise_id: null, team_id: opts.teamId ?? 'T0001', user_id: opts.botUserId ?? 'UBOT', is_bot: true, is_enterprise_install: false }],
    is_ext_shared_channel: false,
  };
}

let userTsCounter = 0;
/** A fresh message ts for a user's message. */
export function userTs(): string {
  userTsCounter += 1;
  return `1690000${String(userTsCounter).padStart(3, '0')}.000200`;
}

export function sign(secret: string, timestamp: number, body: string): string {
  return `v0=${createHmac('sha256', secret).update(`v0:${timestamp}:${body}`).digest('hex')}`;
}

export interface PostOptions {
  secret: string;
  /** Unix seconds; default now. */
  timestamp?: number;
  /** Sign with this secret instead (a bad signature). */
  signWith?: string;
  retryNum?: number;
}

/** POSTs a body to the bot's HTTP endpoint, signed as Slack signs it. */
export async function postSigned(url: string, body: unknown, opts: PostOptions): Promise<{ status: number; text: string }> {
  const raw = JSON.stringify(body);
  const timestamp = opts.timestamp ?? Math.floor(Date.now() / 1000);
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'x-slack-request-timestamp': String(timestamp),
    'x-slack-signature': sign(opts.signWith ?? opts.secret, timestamp, raw),
  };
  if (opts.retryNum !== undefined) {
    headers['x-slack-retry-num'] = String(opts.retryNum);
    headers['x-slack-retry-reason'] = 'http_timeout';
  }
  const res = await fetch(url, { method: 'POST', headers, body: raw });
  return { status: res.status, text: await res.text() };
}
