// SlackBot: a VIKDF bot on Slack through @slack/bolt, in Socket Mode or over the HTTP Events API.
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import {
  ChatBot,
  Deduper,
  engineResponder,
  markdownToMrkdwn,
  type InboundMessage,
  type Responder,
  type RoutingPolicy,
} from '@vikdf/adapter-kit';
import type { Engine, GenerationOptions } from '@vikdf/core';
import { App, HTTPReceiver, LogLevel, SocketModeReceiver, webApi, type Logger } from '@slack/bolt';
import { EventEmitter } from 'eventemitter3';
import { normaliseEvent, type SlackIdentity, type SlackMessageEvent } from './events.js';
import { SlackOutbox } from './outbox.js';
import { slackToPlain } from './text.js';

export type SlackMode = 'socket' | 'http';

export interface SlackBotOptions {
  /** The model: an Engine (answered through the kit's engineResponder) ... */
  engine?: Engine;
  /** ... or any Responder (takes precedence over `engine`). */
  responder?: Responder;
  /** Bot User OAuth Token, `xoxb-...`. */
  botToken: string;
  /** App-level token, `xapp-...` with `connections:write`: selects Socket Mode. */
  appToken?: string;
  /** Signing secret of the app: selects the HTTP Events API (when no appToken is given). */
  signingSecret?: string;
  /** Force a mode when both appToken and signingSecret are given. Default: socket if appToken, else http. */
  mode?: SlackMode;
  /** HTTP mode: where the Events API endpoint listens. Default port 3000, host all interfaces. */
  port?: number;
  host?: string;
  /** HTTP mode: request paths (default `/slack/events`). */
  endpoints?: string | string[];
  /** Who and where the bot answers (channel allow/deny lists, DMs, bots). */
  policy?: RoutingPolicy;
  /** System prompt and generation options for `engine`. */
  system?: string;
  generation?: GenerationOptions;
  maxTurns?: number;
  maxContextTokens?: number;
  /** Conversations the engine responder keeps (least recently used forgotten beyond it). */
  maxConversations?: number;
  /** The short message posted when generating a reply fails (the kit's default otherwise); a function may word it by error. */
  apology?: string | ((error: Error, message: InboundMessage) => string);
  /** Posted at once while the reply is written, then replaced by it (default none: the first text is posted as it comes). */
  placeholder?: string;
  /** Posted when the reply is blank (the kit's default otherwise). */
  emptyReply?: string;
  /** Messages of one conversation waiting or being answered; more are ignored as 'busy' (kit default 10). */
  maxPendingPerConversation?: number;
  /** Minimum time between two chat.update edits of a streamed reply. Default 1500 ms (chat.update is rate limited). */
  editIntervalMs?: number;
  /**
   * How long a delivered event id / message ts is remembered to drop redeliveries. Default 15 minutes: Slack
   * retries a delivery up to three times, the last about five minutes after the one before.
   */
  dedupeTtlMs?: number;
  /** Answer top-level direct messages in a thread too. Default false: the DM itself is the conversation. */
  threadDMs?: boolean;
  /** On first contact in an existing thread, how many earlier thread messages become the history. Default 20. */
  historyLimit?: number;
  /** Markdown → Slack text. Default: the kit's markdownToMrkdwn. */
  formatText?: (markdown: string) => string;
  /** Characters per Slack message before the reply continues in a new one. Default 3000. */
  maxMessageLength?: number;
  /** Options for bolt's WebClient (and the Socket Mode client's apps.connections.open). */
  clientOptions?: webApi.WebClientOptions;
  /** Shorthand for clientOptions.slackApiUrl (tests point it at a local fake). */
  slackApiUrl?: string;
  /** Socket Mode connection health and reconnection (see @slack/socket-mode). */
  socketMode?: { clientPingTimeout?: number; serverPingTimeout?: number; autoReconnectEnabled?: boolean };
  logger?: Logger;
  logLevel?: LogLevel;
}

export interface SlackBotEvents {
  error: [Error, InboundMessage?];
  replied: [InboundMessage, { text: string }];
  ignored: [InboundMessage, string];
}

const DEFAULT_EDIT_INTERVAL_MS = 1500;
const DEFAULT_MAX_LENGTH = 3000;
const DEFAULT_HISTORY_LIMIT = 20;
const KNOWN_THREADS_MAX = 5000;
/**
 * Slack retries a failed delivery (no ack, a timeout) nearly at once, after one minute and after five minutes,
 * so its last retry can come six minutes or more after the first delivery: it must still be recognised.
 */
export const SLACK_DEDUPE_TTL_MS = 15 * 60_000;

export class SlackBot extends EventEmitter<SlackBotEvents> {
  readonly mode: SlackMode;
  private readonly opts: SlackBotOptions;
  private readonly chat: ChatBot;
  private readonly logger: Logger;
  private readonly clientOptions: webApi.WebClientOptions;
  private readonly deliveries: Deduper;
  private readonly knownThreads = new Map<string, true>();
  private readonly pending = new Set<Promise<void>>();
  private boltApp: App | undefined;
  private server: Server | undefined;
  private identityValue: SlackIdentity | undefined;
  private state: 'new' | 'starting' | 'running' | 'stopped' = 'new';

  constructor(opts: SlackBotOptions) {
    super();
    this.opts = opts;
    if (!opts || typeof opts !== 'object') throw new TypeError('SlackBot: options are required');
    if (!opts.botToken) {
      throw new Error('SlackBot: botToken is missing (the Bot User OAuth Token, xoxb-..., e.g. from SLACK_BOT_TOKEN)');
    }
    if (opts.botToken.startsWith('xapp-')) {
      throw new Error('SlackBot: botToken is an app-level token (xapp-...); pass it as appToken and the xoxb- token as botToken');
    }
    const mode = opts.mode ?? (opts.appToken ? 'socket' : opts.signingSecret ? 'http' : undefined);
    if (mode === undefined) {
      throw new Error(
        'SlackBot: neither appToken (Socket Mode, xapp-..., e.g. from SLACK_APP_TOKEN) nor signingSecret ' +
          '(HTTP Events API, e.g. from SLACK_SIGNING_SECRET) is set',
      );
    }
    if (mode === 'socket') {
      if (!opts.appToken) throw new Error('SlackBot: Socket Mode needs appToken (an app-level token, xapp-...)');
      if (!opts.appToken.startsWith('xapp-')) {
        throw new Error('SlackBot: appToken must be an app-level token (xapp-... with the connections:write scope)');
      }
    } else if (mode === 'http') {
      if (!opts.signingSecret) throw new Error('SlackBot: the HTTP Events API needs signingSecret (Basic Information → Signing Secret)');
    } else {
      throw new Error(`SlackBot: unknown mode ${JSON.stringify(mode)} (socket or http)`);
    }
    this.mode = mode;
    const responder = opts.responder ?? (opts.engine ? this.engineResponder(opts.engine) : undefined);
    if (!responder) throw new Error('SlackBot: pass an engine (@vikdf/core Engine) or a responder');
    for (const key of ['editIntervalMs', 'historyLimit', 'maxMessageLength', 'dedupeTtlMs'] as const) {
      const v = opts[key];
      if (v !== undefined && !(Number.isFinite(v) && v >= 0)) throw new RangeError(`SlackBot: ${key} must be a number >= 0`);
    }
    if (opts.maxMessageLength !== undefined && !(Number.isInteger(opts.maxMessageLength) && opts.maxMessageLength >= 100)) {
      throw new RangeError('SlackBot: maxMessageLength must be an integer of at least 100');
    }

    this.logger = opts.logger ?? new ConsoleLogger(opts.logLevel ?? LogLevel.INFO);
    this.clientOptions = {
      ...opts.clientOptions,
      ...(opts.slackApiUrl !== undefined ? { slackApiUrl: opts.slackApiUrl } : {}),
    };
    const dedupeTtlMs = opts.dedupeTtlMs ?? SLACK_DEDUPE_TTL_MS;
    this.deliveries = new Deduper({ ttlMs: dedupeTtlMs });
    this.chat = new ChatBot({
      responder,
      ...(opts.policy !== undefined ? { policy: opts.policy } : {}),
      ...(opts.apology !== undefined ? { apology: opts.apology } : {}),
      ...(opts.placeholder !== undefined ? { placeholder: opts.placeholder } : {}),
      ...(opts.emptyReply !== undefined ? { emptyReply: opts.emptyReply } : {}),
      ...(opts.maxPendingPerConversation !== undefined ? { maxPendingPerConversation: opts.maxPendingPerConversation } : {}),
      dedupeTtlMs, // the same message may come as app_mention and as message, each retried
      editIntervalMs: opts.editIntervalMs ?? DEFAULT_EDIT_INTERVAL_MS,
    });
    this.chat.on('error', (err, msg) => {
      this.logger.error(`SlackBot: ${err.message}`);
      this.emit('error', err, msg);
    });
    this.chat.on('ignored', (msg, reason) => this.emit('ignored', msg, reason));
    this.chat.on('replied', (msg, result) => {
      const thread = msg.conversation.threadId;
      if (thread !== undefined) this.rememberThread(msg.conversation.channelId, thread);
      this.emit('replied', msg, result);
    });
  }

  /** The bolt App, once started (to add listeners of your own). */
  get app(): App | undefined {
    return this.boltApp;
  }

  /** The bot's user and bot ids from auth.test, once started. */
  get identity(): SlackIdentity | undefined {
    return this.identityValue;
  }

  /** HTTP mode: the address the Events API endpoint listens on, once started. */
  get address(): { host: string; port: number } | undefined {
    const a = this.server?.address();
    if (!a || typeof a === 'string') return undefined;
    return { host: (a as AddressInfo).address, port: (a as AddressInfo).port };
  }

  /** HTTP mode: the URL of the (first) events endpoint, once started. */
  get url(): string | undefined {
    const a = this.address;
    if (!a) return undefined;
    const endpoint = [this.opts.endpoints ?? '/slack/events'].flat()[0] ?? '/slack/events';
    const host = a.host.includes(':') ? `[${a.host}]` : a.host;
    return `http://${host}:${a.port}${endpoint}`;
  }

  /**
   * Checks the bot token (auth.test), then connects: Socket Mode resolves once Slack said hello,
   * HTTP once the server listens.
   */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error(`SlackBot: start() was already called (state: ${this.state})`);
    this.state = 'starting';
    try {
      this.identityValue = await this.authTest();
      const app = this.buildApp(this.identityValue);
      this.boltApp = app;
      if (this.mode === 'socket') {
        try {
          await app.start();
        } catch (err) {
          throw new Error(`SlackBot: could not open a Socket Mode connection: ${errorText(err)} (check appToken and its connections:write scope)`, { cause: err });
        }
      } else {
        const server = (await app.start({ port: this.opts.port ?? 3000, ...(this.opts.host !== undefined ? { host: this.opts.host } : {}) })) as Server;
        this.server = server;
      }
      this.state = 'running';
    } catch (err) {
      this.state = 'stopped';
      await this.boltApp?.stop().catch(() => undefined);
      throw err;
    }
  }

  /**
   * Disconnects (Socket Mode) or closes the server (HTTP). Then `'finish'` (default) lets the replies under way
   * and queued complete; `'cancel'` aborts them (what they posted so far stays).
   */
  async stop(opts: { mode?: 'finish' | 'cancel' } = {}): Promise<void> {
    const mode = opts.mode ?? 'finish';
    if (mode !== 'finish' && mode !== 'cancel') throw new TypeError(`SlackBot.stop: mode must be 'finish' or 'cancel', got ${String(mode)}`);
    const wasRunning = this.state === 'starting' || this.state === 'running';
    this.state = 'stopped';
    if (!wasRunning) return;
    try {
      await this.boltApp?.stop();
    } finally {
      if (mode === 'cancel') await this.chat.close();
      await Promise.allSettled([...this.pending]);
      await this.chat.close();
    }
  }

  private engineResponder(engine: Engine): Responder {
    const o = this.opts;
    return engineResponder(engine, {
      ...(o.system !== undefined ? { system: o.system } : {}),
      ...(o.generation !== undefined ? { generation: o.generation } : {}),
      ...(o.maxTurns !== undefined ? { maxTurns: o.maxTurns } : {}),
      ...(o.maxContextTokens !== undefined ? { maxContextTokens: o.maxContextTokens } : {}),
      ...(o.maxConversations !== undefined ? { maxConversations: o.maxConversations } : {}),
    });
  }

  private async authTest(): Promise<SlackIdentity> {
    const client = new webApi.WebClient(this.opts.botToken, { ...this.clientOptions, logger: this.logger });
    let res: webApi.AuthTestResponse;
    try {
      res = await client.auth.test();
    } catch (err) {
      throw new Error(`SlackBot: auth.test failed, the bot token was not accepted: ${errorText(err)}`, { cause: err });
    }
    if (!res.user_id) throw new Error('SlackBot: auth.test returned no user_id (is botToken a bot token, xoxb-...?)');
    return { botUserId: res.user_id, ...(res.bot_id ? { botId: res.bot_id } : {}) };
  }

  private buildApp(identity: SlackIdentity): App {
    const o = this.opts;
    const receiver =
      this.mode === 'socket'
        ? new SocketModeReceiver({
            appToken: o.appToken as string,
            logger: this.logger,
            ...o.socketMode,
            // The Socket Mode client edits the options it gets (retryConfig): give it its own copy.
            installerOptions: { clientOptions: { ...this.clientOptions } },
          })
        : new HTTPReceiver({
            signingSecret: o.signingSecret as string,
            logger: this.logger,
            ...(o.endpoints !== undefined ? { endpoints: o.endpoints } : {}),
            // Respond (ack) first, run listeners after: generation never holds up the 3 s deadline.
            processBeforeResponse: false,
          });
    const app = new App({
      token: o.botToken,
      botUserId: identity.botUserId,
      ...(identity.botId !== undefined ? { botId: identity.botId } : {}),
      // auth.test already ran in start(); the ids above make bolt skip it.
      tokenVerificationEnabled: false,
      receiver,
      clientOptions: { ...this.clientOptions },
      logger: this.logger,
      // Self and other bots are filtered by the routing policy, which reports them as 'ignored'.
      ignoreSelf: false,
      convoStore: false,
    });
    // Listeners return at once: bolt has acked the event before calling them, and the reply runs on its own.
    app.event('app_mention', async ({ event, body }) => this.onEvent(event as unknown as SlackMessageEvent, body as { event_id?: string }, app));
    app.event('message', async ({ event, body }) => this.onEvent(event as unknown as SlackMessageEvent, body as { event_id?: string }, app));
    app.error(async (err) => {
      this.logger.error(`SlackBot: ${err.message}`);
      this.emit('error', err);
    });
    return app;
  }

  private onEvent(event: SlackMessageEvent, body: { event_id?: string }, app: App): void {
    const identity = this.identityValue;
    if (!identity || this.state === 'stopped') return;
    const msg = normaliseEvent(event, {
      identity,
      threadDMs: this.opts.threadDMs ?? false,
      isKnownThread: (channel, ts) => this.knownThreads.has(`${channel}:${ts}`),
    });
    if ('skip' in msg) {
      this.logger.debug(`SlackBot: skipped a ${event.type} event: ${msg.skip}`);
      return;
    }
    // Slack redelivers an event it thinks was not acked in time (x-slack-retry-num / retry_attempt): same event_id.
    if (body.event_id && !this.deliveries.firstTime(`event:${body.event_id}`)) {
      this.emit('ignored', msg, `duplicate delivery of ${body.event_id}`);
      return;
    }
    const channel = msg.conversation.channelId;
    const threadTs = msg.conversation.threadId;
    const outbox = new SlackOutbox(app.client, {
      channel,
      threadTs,
      format: this.opts.formatText ?? markdownToMrkdwn,
      maxLength: this.opts.maxMessageLength ?? DEFAULT_MAX_LENGTH,
    });
    // Thread context: only a message inside an existing thread has earlier messages to read.
    const parent = event.thread_ts && event.thread_ts !== event.ts ? event.thread_ts : undefined;
    const fetchHistory = parent !== undefined ? () => this.threadHistory(app, channel, parent, msg.id, identity) : undefined;
    const task = this.chat.handle(msg, outbox, fetchHistory).catch((err: unknown) => {
      // ChatBot.handle reports its own failures; this only guards against a broken promise chain.
      this.emit('error', err instanceof Error ? err : new Error(String(err)), msg);
    });
    this.pending.add(task);
    void task.finally(() => this.pending.delete(task));
  }

  /** The earlier messages of a thread (oldest first, before `beforeTs`), as plain text turns. */
  private async threadHistory(app: App, channel: string, threadTs: string, beforeTs: string, identity: SlackIdentity): Promise<string[]> {
    const limit = this.opts.historyLimit ?? DEFAULT_HISTORY_LIMIT;
    if (limit === 0) return [];
    try {
      const res = await app.client.conversations.replies({ channel, ts: threadTs, limit: 200 });
      const turns = (res.messages ?? [])
        .filter((m) => typeof m.ts === 'string' && compareTs(m.ts, beforeTs) < 0)
        .map((m) => slackToPlain(m.text ?? '', identity.botUserId))
        .filter((t) => t !== '');
      return turns.slice(-limit);
    } catch (err) {
      // The reply goes on without context; a missing channels:history / groups:history scope is the usual cause.
      this.logger.warn(`SlackBot: conversations.replies failed, answering without thread context: ${errorText(err)}`);
      return [];
    }
  }

  private rememberThread(channel: string, threadTs: string): void {
    const key = `${channel}:${threadTs}`;
    this.knownThreads.delete(key);
    this.knownThreads.set(key, true);
    if (this.knownThreads.size > KNOWN_THREADS_MAX) {
      const oldest = this.knownThreads.keys().next().value;
      if (oldest !== undefined) this.knownThreads.delete(oldest);
    }
  }
}

/** Orders Slack timestamps ("seconds.micros") exactly, without going through floating point. */
export function compareTs(a: string, b: string): number {
  const [as = '0', af = ''] = a.split('.');
  const [bs = '0', bf = ''] = b.split('.');
  const sec = BigInt(as) - BigInt(bs);
  if (sec !== 0n) return sec < 0n ? -1 : 1;
  const fa = af.padEnd(6, '0');
  const fb = bf.padEnd(6, '0');
  return fa < fb ? -1 : fa > fb ? 1 : 0;
}

function errorText(err: unknown): string {
  if (err && typeof err === 'object') {
    const data = (err as { data?: { error?: unknown } }).data;
    if (data && typeof data.error === 'string') return data.error;
    if (err instanceof Error) return err.message;
  }
  return String(err);
}

/** bolt's Logger on the console, with a level. */
class ConsoleLogger implements Logger {
  private name = 'vikdf-slack';
  private static readonly order = [LogLevel.ERROR, LogLevel.WARN, LogLevel.INFO, LogLevel.DEBUG];
  constructor(private level: LogLevel) {}
  getLevel(): LogLevel {
    return this.level;
  }
  setLevel(level: LogLevel): void {
    this.level = level;
  }
  setName(name: string): void {
    this.name = name;
  }
  debug(...msg: unknown[]): void {
    if (this.allows(LogLevel.DEBUG)) console.debug(`[DEBUG] ${this.name}`, ...msg);
  }
  info(...msg: unknown[]): void {
    if (this.allows(LogLevel.INFO)) console.info(`[INFO] ${this.name}`, ...msg);
  }
  warn(...msg: unknown[]): void {
    if (this.allows(LogLevel.WARN)) console.warn(`[WARN] ${this.name}`, ...msg);
  }
  error(...msg: unknown[]): void {
    if (this.allows(LogLevel.ERROR)) console.error(`[ERROR] ${this.name}`, ...msg);
  }
  private allows(level: LogLevel): boolean {
    return ConsoleLogger.order.indexOf(level) <= ConsoleLogger.order.indexOf(this.level);
  }
}
