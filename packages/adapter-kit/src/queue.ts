/**
 * Per-conversation order: tasks with the same key run one after another, in the order given; tasks with
 * different keys run concurrently. A failing task fails alone and does not stop the ones behind it.
 */
export class KeyedQueue {
  private readonly tails = new Map<string, { tail: Promise<unknown>; pending: number }>();

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const entry = this.tails.get(key) ?? { tail: Promise.resolve(), pending: 0 };
    entry.pending++;
    const result = entry.tail.then(() => task());
    // The chain waits for each task to settle, whatever its outcome; the key is dropped once nothing waits.
    entry.tail = result.then(
      () => this.settle(key, entry),
      () => this.settle(key, entry),
    );
    this.tails.set(key, entry);
    return result;
  }

  /** Tasks of `key` queued or running. */
  pending(key: string): number {
    return this.tails.get(key)?.pending ?? 0;
  }

  /** Keys with a task queued or running. */
  get size(): number {
    return this.tails.size;
  }

  /** Resolves once every task queued so far has settled. */
  async idle(): Promise<void> {
    while (this.tails.size) await Promise.all([...this.tails.values()].map((e) => e.tail));
  }

  private settle(key: string, entry: { pending: number }): void {
    entry.pending--;
    if (entry.pending === 0 && this.tails.get(key) === entry) this.tails.delete(key);
  }
}
