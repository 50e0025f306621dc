// A scripted responder whose replies the test drives chunk by chunk, and bot setup against the fake.
import type { ConversationRef, InboundMessage, Responder } from '@vikdf/adapter-kit';
import { DiscordBot, type DiscordBotOptions } from '../src/index.js';
import { FakeDiscord } from './fake-discord.js';

/** A text stream the test writes to. */
export class Feed implements AsyncIterable<string> {
  private chunks: string[] = [];
  private ended = false;
  private error: Error | undefined;
  private waiters = new Set<() => void>();

  push(...chunks: string[]): this {
    this.chunks.push(...chunks);
    return this.poke();
  }
  end(): this {
    this.ended = true;
    return this.poke();
  }
  fail(error: Error): this {
    this.error = error;
    return this.poke();
  }
  private poke(): this {
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const w of waiters) w();
    return this;
  }
  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    let i = 0;
    for (;;) {
      if (i < this.chunks.length) {
        yield this.chunks[i++]!;
        continue;
      }
      if (this.error) throw this.error;
      if (this.ended) return;
      await new Promise<void>((resolve) => this.waiters.add(resolve));
    }
  }
  get text(): string {
    return this.chunks.join('');
  }
}

export interface Call {
  conversation: ConversationRef;
  message: InboundMessage;
  history: string[] | undefined;
  feed: Feed;
}

/** Answers each message with a Feed: `script` fills it (or leaves it to the test by returning nothing). */
export class ScriptedResponder implements Responder {
  readonly calls: Call[] = [];
  private waiters: (() => void)[] = [];

  constructor(private readonly script: (text: string, feed: Feed) => void = (text, feed) => void feed.push(`echo: ${text}`).end()) {}

  reply(conversation: ConversationRef, message: InboundMessage, history?: string[], opts?: { signal?: AbortSignal }) {
    const feed = new Feed();
    this.calls.push({ conversation, message, history, feed });
    opts?.signal?.addEventListener('abort', () => feed.end());
    this.script(message.text, feed);
    for (const w of this.waiters.splice(0)) w();
    const result = (async () => {
      let text = '';
      for await (const chunk of feed) text += chunk;
      return { text };
    })();
    result.catch(() => undefined);
    return { stream: feed, result };
  }

  /** Resolves with the n-th call (0-based) once it was made. */
  async call(n: number): Promise<Call> {
    while (this.calls.length <= n) await new Promise<void>((resolve) => this.waiters.push(resolve));
    return this.calls[n]!;
  }
}

/** A DiscordBot on the fake; fast edits unless the test says otherwise. */
export async function startBot(fake: FakeDiscord, options: Partial<DiscordBotOptions> = {}): Promise<{ bot: DiscordBot; events: BotEvents }> {
  const bot = new DiscordBot({
    token: fake.token,
    ...(options.engine ? {} : { responder: options.responder ?? new ScriptedResponder() }),
    editIntervalMs: 20,
    ...options,
    clientOptions: { rest: { api: fake.api, offset: 0 }, ...options.clientOptions },
  });
  const events = new BotEvents(bot);
  await bot.start();
  return { bot, events };
}

export class BotEvents {
  readonly ignored: { id: string; reason: string }[] = [];
  readonly replied: { id: string; text: string }[] = [];
  readonly errors: Error[] = [];
  readonly log: string[] = [];
  constructor(bot: DiscordBot) {
    bot.on('ignored', (m, reason) => this.ignored.push({ id: m.id, reason }));
    bot.on('replied', (m, r) => this.replied.push({ id: m.id, text: r.text }));
    bot.on('error', (e) => this.errors.push(e));
    bot.on('reconnecting', () => this.log.push('reconnecting'));
    bot.on('resumed', () => this.log.push('resumed'));
    bot.on('rateLimited', () => this.log.push('rateLimited'));
  }
}
