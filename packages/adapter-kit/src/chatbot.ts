/**
 * The platform-neutral bot: an adapter normalises an event to an InboundMessage, gives an Outbox for the reply,
 * and `ChatBot.handle` does the rest: routing, dedupe, per-conversation order, history on first contact,
 * streaming, and an apology instead of a crash when something fails.
 */
import { EventEmitter } from 'eventemitter3';
import { Deduper } from './dedupe.js';
import { conversationKey, messageKey, type InboundMessage } from './message.js';
import { KeyedQueue } from './queue.js';
import type { Responder } from './responder.js';
import { route, validatePolicy, type RoutingPolicy } from './routing.js';
import { StreamingReply, type Outbox } from './streaming.js';

export const DEFAULT_APOLOGY = 'Sorry, something went wrong while answering.';
export const DEFAULT_EMPTY_REPLY = '(no reply)';

export interface ChatBotEvents {
  /** A failure: of the responder or engine, of the platform while sending, or of a history fetch. Never thrown. */
  error: [error: Error, message?: InboundMessage];
  replied: [message: InboundMessage, reply: { text: string }];
  /** Not answered: a routing reason (`IgnoreReason`), 'duplicate', 'busy' or 'closed'. */
  ignored: [message: InboundMessage, reason: string];
}

export interface ChatBotOptions {
  responder: Responder;
  policy?: RoutingPolicy;
  /** Sent in reply when answering fails (default DEFAULT_APOLOGY); a function may word it by error. */
  apology?: string | ((error: Error, message: InboundMessage) => string);
  /** How long a message id is remembered against redeliveries (default 5 minutes). */
  dedupeTtlMs?: number;
  /** At most one edit of a streaming reply per this many ms (default 1000). */
  editIntervalMs?: number;
  /** Typing pulse period while generating (default 8000). */
  typingIntervalMs?: number;
  /** Sent at once while the reply is being written (default none: the first text is sent as it comes). */
  placeholder?: string;
  /** Sent when the reply is blank (default DEFAULT_EMPTY_REPLY). */
  emptyReply?: string;
  /** Messages of one conversation waiting or being answered; more are ignored as 'busy' (default 10). */
  maxPendingPerConversation?: number;
}

export class ChatBot extends EventEmitter<ChatBotEvents> {
  private readonly responder: Responder;
  private readonly policy: RoutingPolicy;
  private readonly deduper: Deduper;
  private readonly queue = new KeyedQueue();
  private readonly inflight = new Set<AbortController>();
  /** Conversations whose history was fetched, for responders that cannot tell (no `has`). */
  private readonly contacted = new Set<string>();
  private readonly maxPending: number;
  private closed = false;

  constructor(private readonly opts: ChatBotOptions) {
    super();
    if (!opts || typeof opts.responder?.reply !== 'function') throw new TypeError('ChatBot: options.responder with a reply() method is required');
    validatePolicy(opts.policy);
    this.responder = opts.responder;
    this.policy = opts.policy ?? {};
    this.deduper = new Deduper(opts.dedupeTtlMs === undefined ? {} : { ttlMs: opts.dedupeTtlMs });
    this.maxPending = opts.maxPendingPerConversation ?? 10;
    if (!Number.isInteger(this.maxPending) || this.maxPending < 1) {
      throw new RangeError(`ChatBot: maxPendingPerConversation must be a positive integer, got ${String(this.maxPending)}`);
    }
    if (typeof opts.apology === 'string' && !opts.apology.trim()) throw new TypeError('ChatBot: apology must not be blank');
    // Checks the streaming options now rather than at the first message.
    new StreamingReply({ maxLength: 4000, send: async () => ({ id: '' }), edit: async () => undefined }, this.streamingOptions());
  }

  /**
   * Answers `msg` through `outbox` if the policy says so and it is not a redelivery. Resolves once the reply is
   * complete (or was ignored); never rejects: failures become an apology and an 'error' event.
   * `fetchHistory` gives the conversation's earlier messages (oldest first), asked on first contact only.
   */
  async handle(msg: InboundMessage, outbox: Outbox, fetchHistory?: () => Promise<string[]>): Promise<void> {
    try {
      checkMessage(msg);
      if (this.closed) return void this.emit('ignored', msg, 'closed');
      const decision = route(msg, this.policy);
      if (!decision.respond) return void this.emit('ignored', msg, decision.reason);
      if (!this.deduper.firstTime(messageKey(msg))) return void this.emit('ignored', msg, 'duplicate');
      const key = conversationKey(msg.conversation);
      if (this.queue.pending(key) >= this.maxPending) return void this.emit('ignored', msg, 'busy');
      await this.queue.run(key, () => this.answer(msg, outbox, fetchHistory));
    } catch (err) {
      this.fail(err, msg);
    }
  }

  /** Stops answering: replies in progress are aborted (what they wrote so far stays); resolves when all ended. */
  async close(): Promise<void> {
    this.closed = true;
    for (const controller of this.inflight) controller.abort();
    await this.queue.idle();
  }

  private async answer(msg: InboundMessage, outbox: Outbox, fetchHistory?: () => Promise<string[]>): Promise<void> {
    if (this.closed) return void this.emit('ignored', msg, 'closed');
    const controller = new AbortController();
    this.inflight.add(controller);
    try {
      const history = await this.history(msg, fetchHistory);
      const { stream, result } = this.responder.reply(msg.conversation, msg, history, { signal: controller.signal });
      Promise.resolve(result).catch(() => undefined); // the stream reports the failure; avoid an unhandled rejection
      const reply = new StreamingReply(outbox, { ...this.streamingOptions(), replyTo: msg.id });
      const streamed = await reply.run(stream, controller.signal);
      const final = await Promise.resolve(result).catch((err: unknown) => {
        if (controller.signal.aborted) return { text: streamed.text };
        throw err;
      });
      if (!controller.signal.aborted) this.emit('replied', msg, { text: final?.text ?? streamed.text });
    } catch (err) {
      controller.abort(); // the platform side failed: stop generating
      const error = this.fail(err, msg);
      if (!this.closed) {
        try {
          await outbox.send(this.apology(error, msg), { replyTo: msg.id });
        } catch (sendErr) {
          this.fail(sendErr, msg);
        }
      }
    } finally {
      this.inflight.delete(controller);
    }
  }

  private async history(msg: InboundMessage, fetchHistory?: () => Promise<string[]>): Promise<string[] | undefined> {
    if (!fetchHistory) return undefined;
    const key = conversationKey(msg.conversation);
    const known = this.responder.has ? this.responder.has(msg.conversation) : this.contacted.has(key);
    if (known) return undefined;
    if (!this.responder.has) {
      this.contacted.add(key);
      if (this.contacted.size > 10_000) this.contacted.delete(this.contacted.values().next().value as string);
    }
    try {
      const turns = await fetchHistory();
      if (!Array.isArray(turns)) throw new TypeError(`the history fetch gave ${typeof turns}, not an array of strings`);
      return turns.filter((t): t is string => typeof t === 'string' && t.trim() !== '');
    } catch (err) {
      // Without history the bot can still answer: report and go on.
      this.fail(new Error(`history fetch failed: ${errorOf(err).message}`, { cause: err }), msg);
      return undefined;
    }
  }

  private apology(error: Error, msg: InboundMessage): string {
    const apology = this.opts.apology;
    if (typeof apology === 'function') {
      try {
        const text = apology(error, msg);
        if (typeof text === 'string' && text.trim()) return text;
      } catch {
        // fall back to the default wording
      }
      return DEFAULT_APOLOGY;
    }
    return apology ?? DEFAULT_APOLOGY;
  }

  private streamingOptions() {
    const o = this.opts;
    return {
      ...(o.editIntervalMs === undefined ? {} : { editIntervalMs: o.editIntervalMs }),
      ...(o.typingIntervalMs === undefined ? {} : { typingIntervalMs: o.typingIntervalMs }),
      ...(o.placeholder === undefined ? {} : { placeholder: o.placeholder }),
      emptyText: o.emptyReply ?? DEFAULT_EMPTY_REPLY,
    };
  }

  private fail(err: unknown, msg?: InboundMessage): Error {
    const error = errorOf(err);
    if (this.listenerCount('error') > 0) this.emit('error', error, msg);
    else console.error(`@vikdf/adapter-kit: ${error.message}`); // nobody listens: do not fail silently
    return error;
  }
}

function errorOf(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

function checkMessage(msg: InboundMessage): void {
  const ok =
    msg &&
    typeof msg === 'object' &&
    typeof msg.id === 'string' &&
    typeof msg.platform === 'string' &&
    typeof msg.text === 'string' &&
    msg.conversation &&
    typeof msg.conversation.channelId === 'string' &&
    msg.author &&
    typeof msg.author.id === 'string';
  if (!ok) throw new TypeError('ChatBot.handle: not an InboundMessage (needs id, platform, text, conversation.channelId, author.id)');
}
