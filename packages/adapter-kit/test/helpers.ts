// Test doubles: a text stream the test feeds by hand, an outbox that records every write (and can hold writes
// back to play a slow platform), and a scripted responder.
import type { ConversationRef, InboundMessage, Outbox, Responder, SentRef } from '../src/index.js';

/** An AsyncIterable<string> that yields what the test pushes; each iterator sees every chunk. */
export class Feed implements AsyncIterable<string> {
  private chunks: string[] = [];
  private ended = false;
  private error: Error | undefined;
  private waiters = new Set<() => void>();
  /** Set when a consumer stopped early (iterator.return). */
  returned = false;

  push(...chunks: string[]): void {
    this.chunks.push(...chunks);
    this.poke();
  }
  end(): void {
    this.ended = true;
    this.poke();
  }
  fail(error: Error): void {
    this.error = error;
    this.poke();
  }
  private poke(): void {
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const w of waiters) w();
  }
  [Symbol.asyncIterator](): AsyncIterator<string> {
    let index = 0;
    return {
      next: async () => {
        for (;;) {
          if (index < this.chunks.length) return { value: this.chunks[index++]!, done: false };
          if (this.error) throw this.error;
          if (this.ended) return { value: undefined, done: true };
          await new Promise<void>((resolve) => this.waiters.add(resolve));
        }
      },
      return: async () => {
        this.returned = true;
        return { value: undefined, done: true };
      },
    };
  }
}

export interface Write {
  op: 'send' | 'edit';
  id: string;
  text: string;
  replyTo?: string;
  at: number;
}

/** Records writes; `hold` makes writes wait until `release()`; more than one write at a time is an error. */
export class RecordingOutbox implements Outbox {
  readonly writes: Write[] = [];
  readonly typings: number[] = [];
  /** The text each message shows now, by id. */
  readonly shown = new Map<string, string>();
  hold = false;
  failEdits: Error | undefined;
  failSends: Error | undefined;
  private inFlight = 0;
  overlapped = false;
  private held: (() => void)[] = [];
  private next = 1;

  constructor(readonly maxLength = 2000) {}

  release(): void {
    const held = this.held;
    this.held = [];
    for (const r of held) r();
  }
  get waiting(): number {
    return this.held.length;
  }

  private async enter(): Promise<void> {
    this.inFlight++;
    if (this.inFlight > 1) this.overlapped = true;
    if (this.hold) await new Promise<void>((resolve) => this.held.push(resolve));
  }

  async send(text: string, opts: { replyTo?: string }): Promise<SentRef> {
    const at = Date.now();
    await this.enter();
    try {
      if (this.failSends) throw this.failSends;
      if (text.length > this.maxLength) throw new Error(`send: ${text.length} > ${this.maxLength}`);
      const id = `m${this.next++}`;
      this.writes.push({ op: 'send', id, text, at, ...(opts.replyTo === undefined ? {} : { replyTo: opts.replyTo }) });
      this.shown.set(id, text);
      return { id };
    } finally {
      this.inFlight--;
    }
  }

  async edit(ref: SentRef, text: string): Promise<void> {
    const at = Date.now();
    await this.enter();
    try {
      if (this.failEdits) throw this.failEdits;
      if (text.length > this.maxLength) throw new Error(`edit: ${text.length} > ${this.maxLength}`);
      this.writes.push({ op: 'edit', id: ref.id, text, at });
      this.shown.set(ref.id, text);
    } finally {
      this.inFlight--;
    }
  }

  async typing(): Promise<void> {
    this.typings.push(Date.now());
  }

  /** What the conversation shows now, message by message. */
  messages(): string[] {
    return [...this.shown.values()];
  }
}

export function message(overrides: Partial<InboundMessage> & { channelId?: string; threadId?: string; isDM?: boolean } = {}): InboundMessage {
  const { channelId = 'c1', threadId, isDM = false, ...rest } = overrides;
  const conversation: ConversationRef = { platform: 'test', channelId, isDM, ...(threadId === undefined ? {} : { threadId }) };
  return {
    platform: 'test',
    id: 'msg1',
    conversation,
    author: { id: 'u1', name: 'user', isBot: false, isSelf: false },
    text: 'hello',
    addressedBy: 'mention',
    attachments: [],
    ...rest,
  };
}

/** A responder that answers with scripted text (or fails), and records what it was asked. */
export class ScriptedResponder implements Responder {
  readonly calls: { conversation: ConversationRef; text: string; history: string[] | undefined; signal: AbortSignal | undefined }[] = [];
  readonly feeds: Feed[] = [];
  /** Per call: the reply text, an Error to fail with, or 'feed' to let the test drive the stream. */
  constructor(private readonly script: (text: string, call: number) => string | Error | 'feed') {}

  reply(conversation: ConversationRef, msg: InboundMessage, history?: string[], opts?: { signal?: AbortSignal }) {
    this.calls.push({ conversation, text: msg.text, history, signal: opts?.signal });
    const what = this.script(msg.text, this.calls.length - 1);
    const feed = new Feed();
    this.feeds.push(feed);
    if (what instanceof Error) feed.fail(what);
    else if (what !== 'feed') {
      // in a few chunks, as a model streams
      for (let i = 0; i < what.length; i += 7) feed.push(what.slice(i, i + 7));
      feed.end();
    }
    opts?.signal?.addEventListener('abort', () => feed.end());
    const result = (async () => {
      let text = '';
      const it = feed[Symbol.asyncIterator]();
      for (let r = await it.next(); !r.done; r = await it.next()) text += r.value;
      return { text };
    })();
    result.catch(() => undefined);
    return { stream: feed, result };
  }
}
