// Test helpers: scripted responders, a recording logger, bots wired to a FakeSlack, and cleanup.
import type { ConversationRef, InboundMessage, ReplyOptions, Responder } from '@vikdf/adapter-kit';
import { LogLevel, type Logger } from '@slack/bolt';
import { SlackBot, type SlackBotOptions } from '../src/index.js';
import { FAKE_BOT_TOKEN, FakeSlack, eventCallback } from './fake-slack.js';
import { repoRoot, tinyBundle } from '@vikdf/test-support';

export { repoRoot };
export const bundle = tinyBundle;

export const BOT_TOKEN = FAKE_BOT_TOKEN;
export const APP_TOKEN = 'xapp-test-token';
export const SIGNING_SECRET = 'test-signing-secret';

export interface Deferred<T = void> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (err: unknown) => void;
}
export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export interface ResponderCall {
  conversation: ConversationRef;
  message: InboundMessage;
  history: string[] | undefined;
  finished: boolean;
  aborted: boolean;
}

type Script = (call: ResponderCall) => AsyncIterable<string> | Iterable<string>;

/** A Responder that streams what a script yields; records each call and whether its stream has ended. */
export class ScriptedResponder implements Responder {
  readonly calls: ResponderCall[] = [];
  constructor(private readonly script: Script = (c) => [`You said: ${c.message.text}`]) {}

  reply(conversation: ConversationRef, message: InboundMessage, history?: string[], opts?: ReplyOptions) {
    const call: ResponderCall = { conversation, message, history, finished: false, aborted: false };
    this.calls.push(call);
    const source = this.script(call);
    const done = deferred<{ text: string }>();
    // Handled here so that a consumer reading only the stream leaves no unhandled rejection behind.
    done.promise.catch(() => undefined);
    let text = '';
    // Like the engine: an abort ends the reply with the text so far.
    opts?.signal?.addEventListener(
      'abort',
      () => {
        call.aborted = true;
        done.resolve({ text });
      },
      { once: true },
    );
    async function* stream(): AsyncGenerator<string> {
      try {
        for await (const chunk of source) {
          text += chunk;
          yield chunk;
        }
        call.finished = true;
        done.resolve({ text });
      } catch (err) {
        call.finished = true;
        done.reject(err);
        throw err;
      }
    }
    return { stream: stream(), result: done.promise };
  }
}

/** A bolt Logger that keeps what is logged at warn and error level. */
export class RecordingLogger implements Logger {
  readonly warnings: string[] = [];
  readonly errors: string[] = [];
  private level = LogLevel.WARN;
  debug(): void {}
  info(): void {}
  warn(...msg: unknown[]): void {
    this.warnings.push(msg.map(String).join(' '));
  }
  error(...msg: unknown[]): void {
    this.errors.push(msg.map(String).join(' '));
  }
  setLevel(level: LogLevel): void {
    this.level = level;
  }
  getLevel(): LogLevel {
    return this.level;
  }
  setName(): void {}
}

const bots = new Set<SlackBot>();
const fakes = new Set<FakeSlack>();

export async function startFake(): Promise<FakeSlack> {
  const fake = await FakeSlack.start();
  fakes.add(fake);
  return fake;
}

export type TestBotOptions = Partial<SlackBotOptions> & { mode?: 'socket' | 'http' };

/** A SlackBot on the fake: Socket Mode by default, or HTTP on 127.0.0.1 port 0. Started. */
export async function startBot(fake: FakeSlack, opts: TestBotOptions = {}): Promise<{ bot: SlackBot; logger: RecordingLogger }> {
  const logger = new RecordingLogger();
  const mode = opts.mode ?? 'socket';
  const bot = new SlackBot({
    responder: new ScriptedResponder(),
    botToken: BOT_TOKEN,
    ...(mode === 'socket' ? { appToken: APP_TOKEN } : { signingSecret: SIGNING_SECRET, port: 0, host: '127.0.0.1' }),
    slackApiUrl: fake.apiUrl,
    // No retries against the fake: a failing call should fail the test, not back off for minutes.
    clientOptions: { retryConfig: { retries: 0 } },
    editIntervalMs: 0,
    logger,
    ...opts,
  });
  bots.add(bot);
  await bot.start();
  return { bot, logger };
}

export async function closeAll(): Promise<void> {
  await Promise.all([...bots].map((b) => b.stop()));
  bots.clear();
  await Promise.all([...fakes].map((f) => f.close()));
  fakes.clear();
}

/** Resolves with the next `replied` event whose message id is `ts`. */
export function repliedTo(bot: SlackBot, ts: string): Promise<{ message: InboundMessage; text: string }> {
  return new Promise((resolve) => {
    const on = (message: InboundMessage, result: { text: string }) => {
      if (message.id !== ts) return;
      bot.off('replied', on);
      resolve({ message, text: result.text });
    };
    bot.on('replied', on);
  });
}

/** Resolves with the reason of the next `ignored` event whose message id is `ts`. */
export function ignoredMessage(bot: SlackBot, ts: string): Promise<string> {
  return new Promise((resolve) => {
    const on = (message: InboundMessage, reason: string) => {
      if (message.id !== ts) return;
      bot.off('ignored', on);
      resolve(reason);
    };
    bot.on('ignored', on);
  });
}

export function nextError(bot: SlackBot): Promise<[Error, InboundMessage | undefined]> {
  return new Promise((resolve) => bot.once('error', (err, msg) => resolve([err, msg])));
}

/** An app_mention event body. */
export function mention(
  fake: FakeSlack,
  fields: { channel?: string; ts: string; text: string; user?: string; bot_id?: string; thread_ts?: string; eventId?: string },
) {
  const { eventId, ...rest } = fields;
  return eventCallback(
    { type: 'app_mention', channel: 'C0GENERAL', user: 'UALICE', ...rest, text: `<@${fake.botUserId}> ${fields.text}` },
    eventId !== undefined ? { eventId } : {},
  );
}

/** A message.im event body (a direct message to the bot). */
export function directMessage(fields: { channel?: string; ts: string; text: string; user?: string; thread_ts?: string; eventId?: string }) {
  const { eventId, ...rest } = fields;
  return eventCallback({ type: 'message', channel: 'D0ALICE', channel_type: 'im', user: 'UALICE', ...rest }, eventId !== undefined ? { eventId } : {});
}
