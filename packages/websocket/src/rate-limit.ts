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
