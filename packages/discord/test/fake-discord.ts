// A local fake of Discord for the real discord.js client: the REST routes a chat bot uses (under /api/v10) and
// the gateway (HELLO, IDENTIFY, READY, GUILD_CREATE, heartbeats, RESUME with replay, dispatches), on 127.0.0.1.
// It keeps channels and messages, echoes the bot's own messages back through the gateway as Discord does, and
// can answer with 429s or drop the gateway connection.
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';

const DISCORD_EPOCH = 1420070400000n;
let sequence = 0n;
/** Increasing snowflakes: ordered by time, as Discord's are. */
export function snowflake(): string {
  return String(((BigInt(Date.now()) - DISCORD_EPOCH) << 22n) + sequence++);
}

export interface User {
  id: string;
  username: string;
  discriminator: string;
  global_name: string | null;
  avatar: null;
  bot?: boolean;
}

export type Payload = Record<string, unknown> & { id: string };

export interface RecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  body: Record<string, unknown> | undefined;
  status: number;
  at: number;
}

const user = (id: string, username: string, bot = false): User => ({
  id,
  username,
  discriminator: '0',
  global_name: username,
  avatar: null,
  ...(bot ? { bot: true } : {}),
});

export class FakeDiscord {
  readonly token: string;
  readonly bot = user('110000000000000000', 'vikdf', true);
  readonly alice = user('110000000000000001', 'alice');
  readonly bob = user('110000000000000002', 'bob');
  readonly otherBot = user('110000000000000003', 'otherbot', true);
  readonly guildId = '120000000000000000';
  /** A text channel, a second one, a thread in the first, and Alice's DM channel (ids of Discord's length). */
  readonly general = '130000000000000000';
  readonly random = '130000000000000001';
  readonly thread = '140000000000000000';
  readonly dm = '150000000000000000';

  readonly requests: RecordedRequest[] = [];
  /** Messages by channel, oldest first. */
  readonly messages = new Map<string, Payload[]>();
  readonly gateway = { connections: 0, identifies: 0, resumes: 0, heartbeats: 0 };
  /** Gateway frames the client sent, in order. */
  readonly received: { op: number; d: unknown }[] = [];

  private readonly server: Server;
  private readonly wss: WebSocketServer;
  private socket: WebSocket | undefined;
  private seq = 0;
  private sessionId = '';
  private readonly dispatched: { s: number; frame: string }[] = [];
  private readonly rateLimits: { method: string; path: RegExp; count: number; retryAfter: number }[] = [];
  private readonly failures: { method: string; path: RegExp; status: number; count: number; afterEffect: boolean }[] = [];
  private readonly listeners = new Set<() => void>();

  private constructor(
    readonly port: number,
    server: Server,
    wss: WebSocketServer,
    private readonly heartbeatIntervalMs: number,
    token: string,
  ) {
    this.server = server;
    this.wss = wss;
    this.token = token;
    for (const id of [this.general, this.random, this.thread, this.dm]) this.messages.set(id, []);
  }

  static async start(opts: { token?: string; heartbeatIntervalMs?: number } = {}): Promise<FakeDiscord> {
    const server = createServer();
    const wss = new WebSocketServer({ server, path: '/gateway' });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as AddressInfo).port;
    const fake = new FakeDiscord(port, server, wss, opts.heartbeatIntervalMs ?? 250, opts.token ?? 'fake-token');
    server.on('request', (req, res) => void fake.onRequest(req, res));
    wss.on('connection', (socket) => fake.onConnection(socket));
    return fake;
  }

  /** The base URL for discord.js (`rest.api`). */
  get api(): string {
    return `http://127.0.0.1:${this.port}/api`;
  }

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/gateway`;
  }

  async close(): Promise<void> {
    for (const client of this.wss.clients) client.terminate();
    this.wss.close();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ---------------------------------------------------------------- scenario controls

  /** The next `count` requests matching `method` and `path` get a 429 asking to retry after `retryAfter` seconds. */
  rateLimit(method: string, path: RegExp, count = 1, retryAfter = 0.05): void {
    this.rateLimits.push({ method, path, count, retryAfter });
  }

  /**
   * The next `count` requests matching `method` and `path` get HTTP `status` (a 5xx); with `afterEffect`, the
   * request takes effect first (a message is created or edited) and the error comes after, as when a proxy in
   * front of Discord fails on the way back.
   */
  failNext(method: string, path: RegExp, status: number, count = 1, opts: { afterEffect?: boolean } = {}): void {
    this.failures.push({ method, path, status, count, afterEffect: opts.afterEffect ?? false });
  }

  /** Cuts the gateway connection without a close frame (a network drop). */
  dropConnection(): void {
    this.socket?.terminate();
    this.socket = undefined;
  }

  /** Sends op 7 RECONNECT, as Discord does before moving a session: the client should reconnect and resume. */
  requestReconnect(): void {
    this.socket?.send(JSON.stringify({ op: 7, d: null }));
  }

  /** When set, RESUME gets op 9 INVALID_SESSION (not resumable): the client must identify afresh. */
  denyResume = false;

  /** Whether the client holds a gateway connection that has identified or resumed. */
  get connected(): boolean {
    return this.socket !== undefined && this.socket.readyState === WebSocket.OPEN;
  }

  /** A message from a user (or bot), stored and dispatched as MESSAGE_CREATE. */
  post(opts: {
    channel: string;
    author: User;
    content: string;
    mentions?: User[];
    replyTo?: Payload;
    id?: string;
    dispatch?: boolean;
  }): Payload {
    const message = this.message(opts.channel, opts.author, opts.content, opts.mentions ?? [], opts.replyTo, opts.id);
    if (opts.dispatch !== false) this.dispatch('MESSAGE_CREATE', message);
    return message;
  }

  /** Alice mentions the bot in `channel`. */
  mention(channel: string, text: string, author: User = this.alice): Payload {
    return this.post({ channel, author, content: `<@${this.bot.id}> ${text}`, mentions: [this.bot] });
  }

  /** Sends a dispatch (or queues it for replay when no client is connected, as Discord does for a resume). */
  dispatch(t: string, d: unknown): void {
    const s = ++this.seq;
    const frame = JSON.stringify({ op: 0, t, s, d });
    this.dispatched.push({ s, frame });
    if (this.connected && t !== 'READY') this.socket!.send(frame);
  }

  /** Messages the bot wrote in `channel`, as shown now. */
  botMessages(channel: string): Payload[] {
    return (this.messages.get(channel) ?? []).filter((m) => (m.author as User).id === this.bot.id);
  }

  requestsTo(method: string, path: RegExp): RecordedRequest[] {
    return this.requests.filter((r) => r.method === method && path.test(r.path));
  }

  /** Resolves when `check` holds (checked after every request and gateway frame); rejects after `timeoutMs`. */
  async until(check: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
    if (check()) return;
    await new Promise<void>((resolve, reject) => {
      const listener = () => {
        if (!check()) return;
        cleanup();
        resolve();
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`fake Discord: timed out waiting for ${what}; last requests: ${this.requests.slice(-5).map((r) => `${r.method} ${r.path} ${r.status}`).join(', ')}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.listeners.delete(listener);
      };
      this.listeners.add(listener);
    });
  }

  private changed(): void {
    for (const l of [...this.listeners]) l();
  }

  // ---------------------------------------------------------------- data

  private channel(id: string): Payload | undefined {
    const base = { guild_id: this.guildId, permission_overwrites: [], nsfw: false, rate_limit_per_user: 0 };
    if (id === this.general) return { ...base, id, type: 0, name: 'general', position: 0, parent_id: null };
    if (id === this.random) return { ...base, id, type: 0, name: 'random', position: 1, parent_id: null };
    if (id === this.thread) {
      return {
        id,
        type: 11,
        guild_id: this.guildId,
        parent_id: this.general,
        name: 'a thread',
        owner_id: this.alice.id,
        message_count: this.messages.get(id)!.length,
        member_count: 2,
        rate_limit_per_user: 0,
        thread_metadata: { archived: false, auto_archive_duration: 1440, archive_timestamp: new Date().toISOString(), locked: false },
      };
    }
    if (id === this.dm) return { id, type: 1, recipients: [this.alice], last_message_id: null };
    return undefined;
  }

  private isGuildChannel(id: string): boolean {
    return id !== this.dm;
  }

  private message(channel: string, author: User, content: string, mentions: User[], replyTo?: Payload, id = snowflake()): Payload {
    const guild = this.isGuildChannel(channel);
    const message: Payload = {
      id,
      channel_id: channel,
      author,
      content,
      timestamp: new Date().toISOString(),
      edited_timestamp: null,
      tts: false,
      mention_everyone: false,
      mentions,
      mention_roles: [],
      attachments: [],
      embeds: [],
      pinned: false,
      type: replyTo ? 19 : 0,
      flags: 0,
      ...(guild
        ? { guild_id: this.guildId, member: { roles: [], joined_at: new Date().toISOString(), deaf: false, mute: false, flags: 0 } }
        : { channel_type: 1 }),
      ...(replyTo
        ? {
            message_reference: { type: 0, message_id: replyTo.id, channel_id: channel, ...(guild ? { guild_id: this.guildId } : {}) },
            referenced_message: replyTo,
          }
        : {}),
    };
    this.messages.get(channel)!.push(message);
    return message;
  }

  // ---------------------------------------------------------------- gateway

  private onConnection(socket: WebSocket): void {
    this.gateway.connections++;
    this.socket?.terminate();
    this.socket = socket;
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data)) as { op: number; d: Record<string, unknown> };
      this.received.push(frame);
      this.onFrame(socket, frame);
      this.changed();
    });
    socket.on('close', () => {
      if (this.socket === socket) this.socket = undefined;
      this.changed();
    });
    socket.send(JSON.stringify({ op: 10, d: { heartbeat_interval: this.heartbeatIntervalMs } }));
  }

  private onFrame(socket: WebSocket, frame: { op: number; d: Record<string, unknown> }): void {
    switch (frame.op) {
      case 1: // heartbeat
        this.gateway.heartbeats++;
        socket.send(JSON.stringify({ op: 11 }));
        break;
      case 2: {
        // identify
        if (frame.d.token !== this.token) {
          socket.close(4004, 'Authentication failed.');
          return;
        }
        this.gateway.identifies++;
        this.sessionId = `session-${this.gateway.identifies}`;
        const ready = {
          v: 10,
          user: this.bot,
          guilds: [{ id: this.guildId, unavailable: true }],
          session_id: this.sessionId,
          resume_gateway_url: this.wsUrl,
          shard: [0, 1],
          application: { id: this.bot.id, flags: 0 },
          private_channels: [],
        };
        this.send(socket, 'READY', ready);
        this.send(socket, 'GUILD_CREATE', this.guildCreate());
        break;
      }
      case 6: {
        // resume: replay what the client missed, then RESUMED
        if (this.denyResume || frame.d.session_id !== this.sessionId || frame.d.token !== this.token) {
          socket.send(JSON.stringify({ op: 9, d: false }));
          return;
        }
        this.gateway.resumes++;
        const from = Number(frame.d.seq ?? 0);
        for (const { s, frame: missed } of this.dispatched) if (s > from) socket.send(missed);
        this.send(socket, 'RESUMED', {});
        break;
      }
      default:
        break;
    }
  }

  private send(socket: WebSocket, t: string, d: unknown): void {
    const s = ++this.seq;
    const frame = JSON.stringify({ op: 0, t, s, d });
    if (t !== 'READY' && t !== 'RESUMED' && t !== 'GUILD_CREATE') this.dispatched.push({ s, frame });
    socket.send(frame);
  }

  private guildCreate(): Payload {
    return {
      id: this.guildId,
      name: 'test guild',
      icon: null,
      owner_id: this.alice.id,
      unavailable: false,
      member_count: 4,
      large: false,
      joined_at: new Date().toISOString(),
      features: [],
      premium_tier: 0,
      verification_level: 0,
      default_message_notifications: 0,
      explicit_content_filter: 0,
      mfa_level: 0,
      nsfw_level: 0,
      system_channel_flags: 0,
      preferred_locale: 'en-US',
      roles: [
        { id: this.guildId, name: '@everyone', permissions: '68608', position: 0, color: 0, hoist: false, managed: false, mentionable: false, flags: 0 },
      ],
      emojis: [],
      stickers: [],
      members: [{ user: this.bot, roles: [], joined_at: new Date().toISOString(), deaf: false, mute: false, flags: 0 }],
      channels: [this.channel(this.general), this.channel(this.random)],
      threads: [this.channel(this.thread)],
      voice_states: [],
      presences: [],
      stage_instances: [],
      guild_scheduled_events: [],
    };
  }

  // ---------------------------------------------------------------- REST

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', `http://127.0.0.1:${this.port}`);
    const method = req.method ?? 'GET';
    const path = url.pathname.replace(/^\/api\/v10/, '');
    let raw = '';
    for await (const chunk of req) raw += chunk;
    const body = raw ? (JSON.parse(raw) as Record<string, unknown>) : undefined;
    const record: RecordedRequest = { method, path, query: url.searchParams, body, status: 0, at: Date.now() };
    const reply = (status: number, data?: unknown, headers: Record<string, string> = {}) => {
      record.status = status;
      this.requests.push(record);
      res.writeHead(status, { ...(data === undefined ? {} : { 'content-type': 'application/json' }), ...headers });
      res.end(data === undefined ? undefined : JSON.stringify(data));
      this.changed();
    };

    if (req.headers.authorization !== `Bot ${this.token}`) return reply(401, { message: '401: Unauthorized', code: 0 });
    const limit = this.rateLimits.find((l) => l.method === method && l.path.test(path) && l.count > 0);
    if (limit) {
      limit.count--;
      return reply(
        429,
        { message: 'You are being rate limited.', retry_after: limit.retryAfter, global: false },
        { 'retry-after': String(limit.retryAfter), 'x-ratelimit-scope': 'user' },
      );
    }

    const failure = this.failures.find((f) => f.method === method && f.path.test(path) && f.count > 0);
    if (failure) {
      failure.count--;
      if (failure.afterEffect) {
        const done = await new Promise<number>((resolve) => void this.route(method, path, url, body, (status) => resolve(status)));
        if (done >= 400) throw new Error(`fake Discord: ${method} ${path} failed (${done}) before its injected failure`);
      }
      return reply(failure.status, { message: `${failure.status}: injected failure`, code: 0 });
    }
    return this.route(method, path, url, body, reply);
  }

  private async route(
    method: string,
    path: string,
    url: URL,
    body: Record<string, unknown> | undefined,
    reply: (status: number, data?: unknown, headers?: Record<string, string>) => void,
  ): Promise<void> {
    let m: RegExpExecArray | null;
    if (method === 'GET' && path === '/gateway/bot') {
      return reply(200, { url: this.wsUrl, shards: 1, session_start_limit: { total: 1000, remaining: 999, reset_after: 0, max_concurrency: 1 } });
    }
    if (method === 'GET' && path === '/users/@me') return reply(200, this.bot);
    if ((m = /^\/channels\/(\d+)$/.exec(path)) && method === 'GET') {
      const channel = this.channel(m[1]!);
      return channel ? reply(200, channel) : reply(404, { message: 'Unknown Channel', code: 10003 });
    }
    if ((m = /^\/channels\/(\d+)\/typing$/.exec(path)) && method === 'POST') return reply(204);
    if ((m = /^\/channels\/(\d+)\/messages$/.exec(path))) {
      const channelId = m[1]!;
      const list = this.messages.get(channelId);
      if (!list) return reply(404, { message: 'Unknown Channel', code: 10003 });
      if (method === 'POST') {
        const content = String(body?.content ?? '');
        if (!content.trim()) return reply(400, { message: 'Cannot send an empty message', code: 50006 });
        if (content.length > 2000) {
          return reply(400, { message: 'Invalid Form Body', code: 50035, errors: { content: { _errors: [{ code: 'BASE_TYPE_MAX_LENGTH' }] } } });
        }
        // enforce_nonce: a message of the same author with the same nonce (a retried request) is returned again.
        const nonce = body?.nonce === undefined ? undefined : String(body.nonce);
        if (nonce !== undefined && body?.enforce_nonce === true) {
          const again = list.find((x) => x.nonce === nonce && (x.author as User).id === this.bot.id);
          if (again) return reply(200, again);
        }
        const ref = body?.message_reference as { message_id?: string } | undefined;
        const replyTo = ref?.message_id ? list.find((x) => x.id === ref.message_id) : undefined;
        const message = this.message(channelId, this.bot, content, [], replyTo);
        if (nonce !== undefined) message.nonce = nonce;
        this.dispatch('MESSAGE_CREATE', message); // Discord echoes the bot's own messages
        return reply(200, message);
      }
      if (method === 'GET') {
        const before = url.searchParams.get('before');
        const max = Number(url.searchParams.get('limit') ?? 50);
        const older = list
          .filter((x) => !before || BigInt(x.id) < BigInt(before))
          .sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1));
        return reply(200, older.slice(-max).reverse()); // newest first, as Discord
      }
    }
    if ((m = /^\/channels\/(\d+)\/messages\/(\d+)$/.exec(path))) {
      const channelId = m[1]!;
      const messageId = m[2]!;
      // (A thread's starter message is the parent channel's message with the thread's own id.)
      const found = (this.messages.get(channelId) ?? []).find((x) => x.id === messageId);
      if (!found) return reply(404, { message: 'Unknown Message', code: 10008 });
      if (method === 'GET') return reply(200, found);
      if (method === 'PATCH') {
        const content = String(body?.content ?? found.content);
        if (content.length > 2000) return reply(400, { message: 'Invalid Form Body', code: 50035 });
        found.content = content;
        found.edited_timestamp = new Date().toISOString();
        this.dispatch('MESSAGE_UPDATE', found);
        return reply(200, found);
      }
    }
    return reply(404, { message: `fake Discord: no route ${method} ${path}`, code: 0 });
  }
}
