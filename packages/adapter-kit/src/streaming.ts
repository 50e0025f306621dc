/**
 * Streaming a reply into chat messages by throttled edits: what every platform without a native stream needs,
 * and what keeps a bot clear of rate limits.
 */
import { closingLength, displayText, splitText } from './split.js';

/** A message the adapter sent; `id` plus whatever the adapter needs to edit it later. */
export interface SentRef {
  id: string;
  [k: string]: unknown;
}

/** What an adapter implements for one conversation (or one reply): sending, editing, and a typing pulse. */
export interface Outbox {
  /** Longest message the platform takes (Discord 2000; Slack about 3000 keeps chat.update happy). */
  maxLength: number;
  send(text: string, opts: { replyTo?: string }): Promise<SentRef>;
  edit(ref: SentRef, text: string): Promise<void>;
  /** One typing pulse; the kit repeats it every `typingIntervalMs` while the reply is generated. */
  typing?(): Promise<void>;
}

export interface StreamingReplyOptions {
  /** At most one edit per this many ms, measured from the start of the previous write (default 1000). */
  editIntervalMs?: number;
  /** A typing pulse every this many ms while generating (default 8000; Discord's indicator lasts 10 s). */
  typingIntervalMs?: number;
  /** The message to answer: the first message sent refers to it, the others do not. */
  replyTo?: string;
  /** Sent at once, before any text; the reply then replaces it by edits. */
  placeholder?: string;
  /** Shown when the reply is blank (default: nothing is sent, and a placeholder stays as it is). */
  emptyText?: string;
}

export interface StreamedReply {
  /** Everything the stream produced, as produced. */
  text: string;
  /** The messages sent, in order (the placeholder, if any, first). */
  messages: SentRef[];
}

const ABORTED = Symbol('aborted');

/**
 * Failed edits tolerated in a row. An edit replaces a message's whole text, so a failed one is not lost: the
 * next attempt carries the latest text. Retried after max(editIntervalMs, 250 ms), doubling each time; then the
 * failure is thrown (a platform that keeps failing, or refusing, is reported after about 1.75 s to 7 s).
 */
export const EDIT_RETRIES = 3;
const MIN_EDIT_RETRY_MS = 250;

/** An edit that failed (the platform library had retried it already, where it retries). */
class EditFailed {
  constructor(readonly error: unknown) {}
}

export class StreamingReply {
  private readonly editIntervalMs: number;
  private readonly typingIntervalMs: number;
  private used = false;

  constructor(
    private readonly outbox: Outbox,
    private readonly opts: StreamingReplyOptions = {},
  ) {
    if (!outbox || typeof outbox.send !== 'function' || typeof outbox.edit !== 'function') {
      throw new TypeError('StreamingReply: the outbox must have send() and edit()');
    }
    if (!Number.isInteger(outbox.maxLength) || outbox.maxLength < 1) {
      throw new RangeError(`StreamingReply: outbox.maxLength must be a positive integer, got ${String(outbox.maxLength)}`);
    }
    this.editIntervalMs = checkMs('editIntervalMs', opts.editIntervalMs, 1000, 0);
    this.typingIntervalMs = checkMs('typingIntervalMs', opts.typingIntervalMs, 8000, 1);
    for (const key of ['placeholder', 'emptyText'] as const) {
      const value = opts[key];
      if (value !== undefined && (typeof value !== 'string' || !value.trim() || value.length > outbox.maxLength)) {
        throw new TypeError(`StreamingReply: ${key} must be non-blank text of at most ${outbox.maxLength} characters`);
      }
    }
  }

  /**
   * Streams `stream` into messages: the first text is sent at once, later text is applied by edits at most once
   * per `editIntervalMs` (an edit never starts before the previous write finished), text beyond `maxLength`
   * finishes the current message (split as `splitMessage` does) and continues in new ones, and the final text is
   * always flushed. An aborted `signal` stops reading; what came so far is flushed and returned. A failed edit is
   * tried again with the latest text (`EDIT_RETRIES` times in a row, backing off), since a later edit carries
   * everything; errors of the stream, of a send, and of an edit that keeps failing are thrown once the write in
   * progress has finished. A send is never repeated here: it could post the same text twice.
   */
  async run(stream: AsyncIterable<string>, signal?: AbortSignal): Promise<StreamedReply> {
    if (this.used) throw new Error('StreamingReply.run: each StreamingReply streams one reply');
    this.used = true;
    const outbox = this.outbox;
    const max = outbox.maxLength;
    const messages: SentRef[] = [];
    let raw = '';
    let carry = ''; // the current message's text and what follows it (with a reopened fence at its start)
    let current: { ref: SentRef; shown: string } | undefined;
    let wroteText = false;
    let lastWrite = Number.NEGATIVE_INFINITY;
    let done = false;
    let failure: { error: unknown } | undefined;
    // Set by the reader; the writer rethrows it (a function, since TypeScript does not see the reader assign it).
    const rethrow = () => {
      if (failure) throw failure.error;
    };
    let wake: (() => void) | undefined;
    const notify = () => {
      const w = wake;
      wake = undefined;
      w?.();
    };

    const write = async (text: string): Promise<void> => {
      lastWrite = Date.now();
      if (current) {
        if (current.shown === text) return;
        try {
          await outbox.edit(current.ref, text);
        } catch (error) {
          throw new EditFailed(error);
        }
        current.shown = text;
      } else {
        const first = messages.length === 0 && this.opts.replyTo !== undefined;
        const ref = await outbox.send(text, first ? { replyTo: this.opts.replyTo } : {});
        messages.push(ref);
        current = { ref, shown: text };
      }
    };

    // Applies `carry` to the messages: finishes full messages, then shows the rest in the current one.
    const sync = async (): Promise<void> => {
      for (;;) {
        const snapshot = carry;
        if (displayText(snapshot).length <= max) break;
        const parts = splitText(snapshot, Math.max(1, max - closingLength(snapshot.trimEnd())), false);
        if (parts.length < 2) break;
        for (const part of parts.slice(0, -1)) {
          await write(part.trimEnd());
          wroteText = true;
          current = undefined; // that message is final
        }
        carry = parts[parts.length - 1]! + carry.slice(snapshot.length);
      }
      const shown = displayText(carry);
      if (shown && shown !== current?.shown) {
        await write(shown);
        wroteText = true;
      }
    };
    const dirty = () => {
      const shown = displayText(carry);
      return shown !== '' && shown !== current?.shown;
    };

    // Typing pulses until the reply is complete; they are cosmetic, so their failures are ignored.
    let typingBusy = false;
    const pulse = () => {
      if (!outbox.typing || typingBusy) return;
      typingBusy = true;
      Promise.resolve()
        .then(() => outbox.typing!())
        .catch(() => undefined)
        .finally(() => {
          typingBusy = false;
        });
    };
    const typingTimer = outbox.typing ? setInterval(pulse, this.typingIntervalMs) : undefined;
    pulse();

    // The reader: appends the stream's text; stops early on abort or when the writer failed.
    const stop = new AbortController();
    const stopped = new Promise<typeof ABORTED>((resolve) => {
      const onAbort = () => resolve(ABORTED);
      stop.signal.addEventListener('abort', onAbort, { once: true });
      signal?.addEventListener('abort', onAbort, { once: true });
      if (signal?.aborted) onAbort();
    });
    const reading = (async () => {
      let iterator: AsyncIterator<string> | undefined;
      try {
        iterator = stream[Symbol.asyncIterator]();
        for (;;) {
          const next = iterator.next();
          next.catch(() => undefined); // it may settle after we stopped listening
          const step = await Promise.race([next, stopped]);
          if (step === ABORTED) {
            void Promise.resolve(iterator.return?.()).catch(() => undefined);
            break;
          }
          if (step.done) break;
          if (typeof step.value !== 'string') throw new TypeError(`the reply stream yielded ${typeof step.value}, not text`);
          raw += step.value;
          carry += step.value.replace(/\r\n?/g, '\n');
          notify();
        }
      } catch (error) {
        failure = { error };
      } finally {
        done = true;
        notify();
      }
    })();

    let failedEdits = 0; // in a row
    try {
      if (this.opts.placeholder !== undefined) await write(this.opts.placeholder);
      for (;;) {
        rethrow();
        if (!dirty()) {
          if (done) break;
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
          continue;
        }
        const wait = failedEdits ? Math.max(this.editIntervalMs, MIN_EDIT_RETRY_MS) * 2 ** (failedEdits - 1) : this.editIntervalMs;
        if (current) await sleep(lastWrite + wait - Date.now());
        rethrow();
        try {
          await sync();
          failedEdits = 0;
        } catch (error) {
          if (!(error instanceof EditFailed)) throw error;
          if (++failedEdits > EDIT_RETRIES) throw error.error;
        }
      }
      if (!wroteText && !signal?.aborted && this.opts.emptyText !== undefined) {
        try {
          await write(this.opts.emptyText);
        } catch (error) {
          throw error instanceof EditFailed ? error.error : error;
        }
      }
      return { text: raw, messages };
    } finally {
      stop.abort();
      if (typingTimer) clearInterval(typingTimer);
      await reading;
    }
  }
}

function sleep(ms: number): Promise<void> {
  return ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve();
}

function checkMs(name: string, value: number | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw new RangeError(`StreamingReply: ${name} must be a number of ms >= ${min}, got ${String(value)}`);
  }
  return value;
}
