/** Token buckets for the server's rate limits. */

export interface RateLimit {
  /** Requests allowed at once (bucket size). */
  burst: number;
  /** Refill rate, requests per second. */
  perSecond: number;
}

export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly limit: RateLimit,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = limit.burst;
    this.last = this.now();
  }

  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(this.limit.burst, this.tokens + ((t - this.last) / 1000) * this.limit.perSecond);
    this.last = t;
  }

  /** Takes one token if there is one. */
  take(): boolean {
    this.refill();
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    return false;
  }

  /** Milliseconds until a token is available (0 if one is). */
  retryAfterMs(): number {
    this.refill();
    if (this.tokens >= 1 || this.limit.perSecond <= 0) return this.tokens >= 1 ? 0 : Infinity;
    return Math.ceil(((1 - this.tokens) / this.limit.perSecond) * 1000);
  }

  /** True when the bucket is full again (nothing to remember about its owner). */
  get full(): boolean {
    this.refill();
    return this.tokens >= this.limit.burst;
  }
}

/**
 * Counts frames dropped by a rate limit over a sliding window: `record()` says when more than `max` drops fell
 * within `windowMs`, i.e. when a client keeps sending over the rate (a flood), however its frames are spaced.
 * Accepted frames in between do not reset it. Keeps the times of the last `max + 1` drops (allocated as drops
 * happen, so a connection that is never limited costs nothing).
 */
export class DropWindow {
  private readonly times: number[] = [];
  private next = 0;

  constructor(
    private readonly max: number,
    private readonly windowMs: number,
  ) {
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError(`DropWindow max must be a whole number >= 1, got ${max}`);
    if (!(windowMs > 0)) throw new RangeError(`DropWindow windowMs must be > 0, got ${windowMs}`);
  }

  /** Records a drop at `now` (ms); true when this is more than `max` drops within the window. */
  record(now: number): boolean {
    const size = this.max + 1;
    if (this.times.length < size) {
      this.times.push(now);
      if (this.times.length < size) return false;
      return now - this.times[0]! <= this.windowMs;
    }
    this.times[this.next] = now;
    this.next = (this.next + 1) % size;
    // times[next] is now the oldest of the last max + 1 drops.
    return now - this.times[this.next]! <= this.windowMs;
  }

  /** Drops within the window ending at `now`. */
  count(now: number): number {
    return this.times.reduce((n, t) => (now - t <= this.windowMs ? n + 1 : n), 0);
  }
}
