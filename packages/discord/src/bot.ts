/**
 * A Discord bot answered by a VIKDF model: discord.js 14 for the gateway and REST (reconnects, resumes and 429s
 * are its job), the adapter kit for everything else.
 */
import {
  ChatBot,
  engineResponder,
  type ChatBotEvents,
  type ChatBotOptions,
  type EngineResponderOptions,
  type InboundMessage,
  type Responder,
  type ResponderEngine,
  type RoutingPolicy,
} from '@vikdf/adapter-kit';
import {
  Client,
  Events,
  GatewayIntentBits,
  Partials,
  RESTEvents,
  type ClientOptions,
  type Message,
  type RateLimitData,
} from 'discord.js';
import type { GenerationOptions } from '@vikdf/core';
import { EventEmitter } from 'eventemitter3';
import { toInbound } from './normalize.js';
import { channelOutbox, fetchHistory } from './outbox.js';

/** What the bot needs from the gateway: guild and DM messages with their content. */
export const DEFAULT_INTENTS = [
  GatewayIntentBits.Guilds,
  GatewayIntentBits.GuildMessages,
  GatewayIntentBits.MessageContent, // privileged: enable "Message Content Intent" for the bot in the developer portal
  GatewayIntentBits.DirectMessages,
];

export interface DiscordBotOptions
  extends Pick<
    ChatBotOptions,
    'apology' | 'dedupeTtlMs' | 'editIntervalMs' | 'typingIntervalMs' | 'placeholder' | 'emptyReply' | 'maxPendingPerConversation'
  > {
  /** The bot token (developer portal, Bot page). */
  token: string;
  /** The model: an `@vikdf/core` Engine (answered through `engineResponder`) ... */
  engine?: ResponderEngine;
  /** ... or any Responder. */
  responder?: Responder;
  /** For `engine`: system prompt (persona), generation options, turns and tokens of context kept per conversation. */
  system?: string;
  generation?: GenerationOptions;
  maxTurns?: number;
  maxContextTokens?: number;
  /** For `engine`: conversations kept (the least recently used is forgotten beyond it; default 1000). */
  maxConversations?: number;
  /** Who gets answered (default: mentions, replies to the bot and DMs; bots ignored). */
  policy?: RoutingPolicy;
  /** Messages of channel or thread history given as context on first contact (default 20, at most 100; 0: none). */
  historyLimit?: number;
  /** Notify the author when replying (default true). */
  mentionOnReply?: boolean;
  /** Options for the discord.js Client, over ours (intents, partials; `rest.api` points it elsewhere). */
  clientOptions?: Partial<ClientOptions>;
}

export interface DiscordBotEvents extends ChatBotEvents {
  /** Logged in and the guilds are loaded. */
  ready: [user: { id: string; tag: string }];
  /** The gateway connection dropped and discord.js is reconnecting. */
  reconnecting: [];
  /** The gateway session was resumed (events missed meanwhile are replayed). */
  resumed: [];
  /** A request hit a Discord rate limit; discord.js waits and retries it. */
  rateLimited: [info: RateLimitData];
}

export class DiscordBot extends EventEmitter<DiscordBotEvents> {
  readonly client: Client;
  readonly chat: ChatBot;
  private readonly token: string;
  private readonly historyLimit: number;
  private readonly mentionOnReply: boolean;
  private stopping = false;

  constructor(opts: DiscordBotOptions) {
    super();
    if (!opts || typeof opts.token !== 'string' || !opts.token.trim()) {
      throw new TypeError('DiscordBot: token is required (the bot token from the Discord developer portal, e.g. from DISCORD_TOKEN)');
    }
    if (!!opts.engine === !!opts.responder) throw new TypeError('DiscordBot: give exactly one of engine and responder');
    this.historyLimit = opts.historyLimit ?? 20;
    if (!Number.isInteger(this.historyLimit) || this.historyLimit < 0 || this.historyLimit > 100) {
      throw new RangeError(`DiscordBot: historyLimit must be an integer from 0 to 100, got ${String(opts.historyLimit)}`);
    }
    this.token = opts.token.trim();
    this.mentionOnReply = opts.mentionOnReply ?? true;
    const { system, generation, maxTurns, maxContextTokens, maxConversations } = opts;
    const responderOptions: EngineResponderOptions = withoutUndefined({ system, generation, maxTurns, maxContextTokens, maxConversations });
    const responder = opts.responder ?? engineResponder(opts.engine!, responderOptions);
    const { apology, dedupeTtlMs, editIntervalMs, typingIntervalMs, placeholder, emptyReply, maxPendingPerConversation } = opts;
    const chatOptions = { apology, dedupeTtlMs, editIntervalMs, typingIntervalMs, placeholder, emptyReply, maxPendingPerConversation, policy: opts.policy };
    this.chat = new ChatBot({ ...withoutUndefined(chatOptions), responder });
    this.chat.on('error', (err, msg) => this.report(err, msg));
    this.chat.on('replied', (msg, reply) => this.emit('replied', msg, reply));
    this.chat.on('ignored', (msg, reason) => this.emit('ignored', msg, reason));

    this.client = new Client({
      intents: DEFAULT_INTENTS,
      partials: [Partials.Channel], // DM channels arrive uncached; without this their messages are dropped
      ...opts.clientOptions,
    });
    this.client.on(Events.MessageCreate, (message) => void this.onMessage(message));
    this.client.on(Events.Error, (err) => this.report(err));
    this.client.on(Events.ShardReconnecting, () => this.emit('reconnecting'));
    this.client.on(Events.ShardResume, () => this.emit('resumed'));
    this.client.rest.on(RESTEvents.RateLimited, (info) => this.emit('rateLimited', info));
  }

  /** Logs in; resolves once the bot is ready (guilds loaded). A bad token or disallowed intents reject. */
  async start(): Promise<void> {
    if (this.client.isReady()) return;
    const ready = new Promise<void>((resolve) => this.client.once(Events.ClientReady, () => resolve()));
    try {
      await this.client.login(this.token);
    } catch (err) {
      await this.client.destroy().catch(() => undefined);
      throw new Error(`DiscordBot: login failed: ${(err as Error).message}`, { cause: err });
    }
    await ready;
    const user = this.client.user!;
    this.emit('ready', { id: user.id, tag: user.tag });
  }

  /** Stops answering (replies in progress are aborted) and disconnects. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.chat.close();
    await this.client.destroy();
  }

  private async onMessage(message: Message): Promise<void> {
    const me = this.client.user;
    if (!me || this.stopping) return;
    let inbound: InboundMessage<Message>;
    try {
      inbound = toInbound(message, me.id);
    } catch (err) {
      this.report(err);
      return;
    }
    const channel = message.channel;
    if (!channel.isSendable()) return void this.emit('ignored', inbound, 'not-sendable');
    const history = this.historyLimit > 0 ? () => fetchHistory(message, me.id, this.historyLimit) : undefined;
    await this.chat.handle(inbound, channelOutbox(channel, { mentionOnReply: this.mentionOnReply }), history);
  }

  private report(err: unknown, msg?: InboundMessage): void {
    const error = err instanceof Error ? err : new Error(String(err));
    if (this.listenerCount('error') > 0) this.emit('error', error, msg);
    else console.error(`@vikdf/discord: ${error.message}`); // nobody listens: do not fail silently
  }
}

function withoutUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
