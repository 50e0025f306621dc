/**
 * A conversation: its history, a context window that drops the oldest whole turns, an optional persona, and
 * messages answered strictly in order (each reply sees the previous ones).
 */
import { randomUUID } from 'node:crypto';
import type { Engine } from './engine.js';
import { VikdfError } from './errors.js';
import type { GenerationOptions } from './generation/options.js';
import { Generation, type GenerationResult } from './generation-handle.js';

export interface ConversationOptions {
  id?: string;
  /** Persona or system text given to the chat template. */
  system?: string;
  /** Prompt-token budget of the context (default: the bundle's prompt.max_length, so the prompt is never cut). */
  maxContextTokens?: number;
  /** Keep at most this many turns of history (default 64). */
  maxTurns?: number;
  /** Earlier turns, oldest first (e.g. a thread's history on first contact). */
  history?: string[];
}

export interface SendOptions {
  options?: GenerationOptions;
  signal?: AbortSignal;
}

export class Conversation {
  readonly id: string;
  private turns: string[];
  private tail: Promise<unknown> = Promise.resolve();
  /** Bumped by reset(), so that replies begun before it stay out of the new history. */
  private epoch = 0;

  constructor(
    private readonly engine: Engine,
    private readonly config: ConversationOptions = {},
  ) {
    this.id = config.id ?? randomUUID();
    this.turns = [...(config.history ?? [])];
  }

  /** The turns so far, oldest first. */
  get history(): readonly string[] {
    return this.turns;
  }

  /** Forgets the history; a reply still being generated is not added to the new one. */
  reset(): void {
    this.turns = [];
    this.epoch++;
  }

  /**
   * Answers a message after every earlier message of this conversation is answered. Empty messages and
   * messages that alone exceed the context budget are refused at once (the returned handle fails).
   */
  send(text: string, send: SendOptions = {}): Generation {
    let inner: Generation | undefined;
    let aborted = false;
    const outer = new Generation(() => {
      aborted = true;
      inner?.abort();
    });
    try {
      this.check(text);
    } catch (err) {
      outer.fail(err as Error);
      return outer;
    }
    const message = text.trim();
    const epoch = this.epoch; // a reset() after this send keeps its reply out of the new history
    const run = async () => {
      if (aborted || send.signal?.aborted) {
        outer.finish(emptyResult());
        return;
      }
      const context = this.window([...this.turns, message]);
      const request = { context, orderKey: this.id, ...(this.config.system === undefined ? {} : { system: this.config.system }) };
      inner = this.engine.generate({ ...request, ...(send.options ? { options: send.options } : {}), ...(send.signal ? { signal: send.signal } : {}) });
      inner.on('token', (chunk, ids) => outer.pushText(chunk, ids));
      try {
        const result = await inner.result;
        if (epoch === this.epoch) this.remember(message, result.text);
        outer.finish(result);
      } catch (err) {
        outer.fail(err as Error);
      }
    };
    this.tail = this.tail.then(run, run);
    return outer;
  }

  private check(text: string): void {
    if (typeof text !== 'string' || !text.trim()) throw new VikdfError('empty_message', 'the message is empty');
    const budget = this.budget();
    const alone = this.engine.formatter.countPromptTokens([text.trim()]);
    if (alone > budget) {
      throw new VikdfError('message_too_long', `the message needs ${alone} prompt tokens; the limit is ${budget}`);
    }
  }

  private budget(): number {
    const m = this.engine.manifest;
    return (this.config.maxContextTokens ?? m.prompt.max_length) + m.model.num_query_tokens;
  }

  /**
   * The most recent whole turns that fit the budget (the last one always does: `check` made sure). Dropping a
   * turn never adds tokens, so the first start that fits is found by bisection: about 6 renderings of the prompt
   * for 64 turns, where a scan from the oldest turn rendered up to 64 (and blocked the event loop for long
   * conversations: docs/reliability.md).
   */
  private window(turns: string[]): string[] {
    const budget = this.budget();
    const fits = (start: number) => this.engine.formatter.countPromptTokens(turns.slice(start)) <= budget;
    let lo = Math.max(0, turns.length - (this.config.maxTurns ?? 64));
    let hi = turns.length - 1; // fits
    if (fits(lo)) return turns.slice(lo);
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (fits(mid)) hi = mid;
      else lo = mid;
    }
    return turns.slice(hi);
  }

  private remember(message: string, reply: string): void {
    this.turns.push(message, reply.trim());
    const max = this.config.maxTurns ?? 64;
    if (this.turns.length > max) this.turns = this.turns.slice(this.turns.length - max);
  }
}

function emptyResult(): GenerationResult {
  return {
    text: '',
    tokenIds: [],
    finishReason: 'aborted',
    usage: { promptTokens: 0, completionTokens: 0 },
    timings: { queuedMs: 0, firstTokenMs: 0, totalMs: 0 },
  };
}
