/**
 * Dedupe of redelivered events (Slack retries, gateway replays after a resume): remembers keys for a while,
 * in bounded memory.
 */

export interface DeduperOptions {
  /** How long a key is remembered, in ms (default 5 minutes). */
  ttlMs?: number;
  /** At most this many keys; the oldest are forgotten first (default 10 000). */
  maxEntries?: number;
  /** The clock (default Date.now); tests pass their own. */
  now?: () => number;
}

export class Deduper {
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  /** key -> expiry time; insertion order is expiry order, since the ttl is fixed and a re-seen key is re-inserted. */
  private readonly seen = new Map<string, number>();

  constructor(opts: DeduperOptions = {}) {
    this.ttlMs = opts.ttlMs ?? 5 * 60_000;
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.now = opts.now ?? Date.now;
    if (!(this.ttlMs > 0) || !Number.isFinite(this.ttlMs)) throw new RangeError(`ttlMs must be a positive number of ms, got ${opts.ttlMs}`);
    if (!Number.isInteger(this.maxEntries) || this.maxEntries < 1) {
      throw new RangeError(`maxEntries must be a positive integer, got ${opts.maxEntries}`);
    }
  }

  /** True the first time `key` is seen within the ttl; false for a repeat. */
  firstTime(key: string): boolean {
    const now = this.now();
    for (const [k, expiry] of this.seen) {
      if (expiry > now) break;
      this.seen.delete(k);
    }
    if (this.seen.has(key)) return false;
    this.seen.set(key, now + this.ttlMs);
    if (this.seen.size > this.maxEntries) this.seen.delete(this.seen.keys().next().value as string);
    return true;
  }

  /** Keys remembered now. */
  get size(): number {
    return this.seen.size;
  }
}
