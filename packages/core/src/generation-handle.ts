/**
 * What `Engine.generate` returns: an async iterable of text chunks, typed events, and a result promise.
 */
import { EventEmitter } from 'eventemitter3';

export type FinishReason = 'eos' | 'length' | 'stop' | 'aborted';

export interface GenerationResult {
  text: string;
  tokenIds: number[];
  finishReason: FinishReason;
  usage: { promptTokens: number; completionTokens: number };
  timings: { queuedMs: number; firstTokenMs: number; totalMs: number };
}

export interface GenerationEvents {
  /** A chunk of new text (UTF-8 safe; never part of a stop string) and the ids it came from. */
  token: [text: string, ids: number[]];
  done: [result: GenerationResult];
  error: [error: Error];
}

export class Generation extends EventEmitter<GenerationEvents> implements AsyncIterable<string> {
  readonly result: Promise<GenerationResult>;
  private chunks: string[] = [];
  private finished = false;
  private failure: Error | undefined;
  private waiters = new Set<() => void>();
  private resolveResult!: (r: GenerationResult) => void;
  private rejectResult!: (e: Error) => void;

  constructor(private readonly onAbort: () => void) {
    super();
    this.result = new Promise<GenerationResult>((resolve, reject) => {
      this.resolveResult = resolve;
      this.rejectResult = reject;
    });
    // A caller that only iterates, or only listens to events, must not see an unhandled rejection.
    this.result.catch(() => undefined);
  }

  /** Stops generating; the result resolves with the text so far and finishReason 'aborted'. */
  abort(): void {
    this.onAbort();
  }

  /** @internal */
  pushText(text: string, ids: number[]): void {
    if (!text) return;
    this.chunks.push(text);
    this.emit('token', text, ids);
    this.wakeAll();
  }

  /** @internal */
  finish(result: GenerationResult): void {
    if (this.finished) return;
    this.finished = true;
    this.emit('done', result);
    this.resolveResult(result);
    this.wakeAll();
  }

  /** @internal */
  fail(error: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.failure = error;
    if (this.listenerCount('error') > 0) this.emit('error', error);
    this.rejectResult(error);
    this.wakeAll();
  }

  private wakeAll(): void {
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const wake of waiters) wake();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    let index = 0;
    for (;;) {
      while (index < this.chunks.length) yield this.chunks[index++]!;
      if (this.finished) {
        if (this.failure) throw this.failure;
        return;
      }
      await new Promise<void>((resolve) => this.waiters.add(resolve));
    }
  }
}
