/** The server's limits (docs/websocket-protocol.md, "Limits"): their defaults and their validation. */
import type { RateLimit } from './rate-limit.js';

export interface ServerLimits {
  /** Largest frame accepted, in bytes; a larger one closes the connection with 1009. Default 64 KiB. */
  maxFrameBytes: number;
  /**
   * Longest message text the server reads, in characters (`message_too_long` beyond). The model's own limit is
   * in tokens (the engine checks it); `hello` announces this cap lowered to what the model's budget holds of
   * ordinary text. Default 4000.
   */
  maxMessageChars: number;
  /** Largest `maxNewTokens` a client may ask for. Default 256. */
  maxNewTokens: number;
  /** Largest `numBeams` a client may ask for. Default 4. */
  maxNumBeams: number;
  /** Conversations one connection may hold (reset frees one). Default 16. */
  maxConversations: number;
  /** Replies in progress per connection (a reply counts until its done frame is sent). Default 4. */
  maxConcurrentRequests: number;
  /** Open connections in all. Default 256. */
  maxConnections: number;
  /** Open connections per client IP address. Default 16. */
  maxConnectionsPerIp: number;
  /** Frames of any kind per connection. Default burst 40, 20 per second. */
  frameRate: RateLimit;
  /** Messages (generation requests) per client IP address, over all its connections. Default burst 20, 2 per second. */
  messageRatePerIp: RateLimit;
  /**
   * A connection that has more than this many frames dropped by the frame rate within `floodWindowMs` is closed
   * with 1008 (a flood). Default 100.
   */
  floodCloseAfter: number;
  /** The window over which dropped frames are counted for `floodCloseAfter`. Default 10 s. */
  floodWindowMs: number;
  /** Close (4000) a connection with no frame from the client and no reply in progress for this long. Default 5 min. */
  idleTimeoutMs: number;
  /** With a token: close (4001) a connection not authenticated after this long. Default 10 s. */
  authTimeoutMs: number;
  /**
   * WebSocket ping interval. A connection that has not answered the previous ping, with everything sent to it
   * acknowledged, is dropped (the client sees 1006). Default 30 s.
   */
  heartbeatMs: number;
  /** Above this many bytes waiting to be sent, token frames are held and merged. Default 64 KiB. */
  highWaterMark: number;
  /** A connection with more than this waiting is closed with 4002 at once. Default 4 MiB. */
  maxBufferedBytes: number;
  /**
   * A client that has not read what was sent to it for this long is closed with 4002: output it has not
   * acknowledged (by answering a WebSocket ping sent after it) that old, or the send buffer above the
   * high-water mark that long. Default 30 s.
   */
  stallTimeoutMs: number;
  /** After the server sends a close frame, drop the TCP connection if the close is not done by then. Default 2 s. */
  closeGraceMs: number;
  /** A conversation whose connection closed can be resumed for this long (then it is forgotten). Default 10 min. */
  resumeTtlMs: number;
  /** Conversations kept for resumption after their connection closed, at most (oldest forgotten first). Default 1000. */
  maxStoredConversations: number;
  /** Bytes of history (UTF-8 text of the turns) kept for resumption in all, at most. Default 16 MiB. */
  maxStoredBytes: number;
}

export const DEFAULT_LIMITS: Readonly<ServerLimits> = Object.freeze({
  maxFrameBytes: 64 * 1024,
  maxMessageChars: 4000,
  maxNewTokens: 256,
  maxNumBeams: 4,
  maxConversations: 16,
  maxConcurrentRequests: 4,
  maxConnections: 256,
  maxConnectionsPerIp: 16,
  frameRate: Object.freeze({ burst: 40, perSecond: 20 }),
  messageRatePerIp: Object.freeze({ burst: 20, perSecond: 2 }),
  floodCloseAfter: 100,
  floodWindowMs: 10_000,
  idleTimeoutMs: 5 * 60_000,
  authTimeoutMs: 10_000,
  heartbeatMs: 30_000,
  highWaterMark: 64 * 1024,
  maxBufferedBytes: 4 * 1024 * 1024,
  stallTimeoutMs: 30_000,
  closeGraceMs: 2_000,
  resumeTtlMs: 10 * 60_000,
  maxStoredConversations: 1000,
  maxStoredBytes: 16 * 1024 * 1024,
});

/** Limits that are counts (whole numbers of at least 1). */
const COUNTS = new Set<keyof ServerLimits>([
  'maxFrameBytes',
  'maxMessageChars',
  'maxNewTokens',
  'maxNumBeams',
  'maxConversations',
  'maxConcurrentRequests',
  'maxConnections',
  'maxConnectionsPerIp',
  'floodCloseAfter',
  'highWaterMark',
  'maxBufferedBytes',
  'maxStoredConversations',
  'maxStoredBytes',
]);
const RATES = new Set<keyof ServerLimits>(['frameRate', 'messageRatePerIp']);

/**
 * The defaults with `given` over them (undefined values ignored). Throws a TypeError naming the limit for an
 * unknown name or a value that is not a positive number (counts: a whole number; rates: `{ burst, perSecond }`).
 */
export function resolveLimits(given: Partial<ServerLimits> | undefined): Readonly<ServerLimits> {
  if (given !== undefined && (typeof given !== 'object' || given === null || Array.isArray(given))) {
    throw new TypeError('ServerOptions.limits must be an object');
  }
  const out: Record<string, unknown> = { ...DEFAULT_LIMITS };
  for (const [name, value] of Object.entries(given ?? {})) {
    if (value === undefined) continue;
    if (!Object.hasOwn(DEFAULT_LIMITS, name)) {
      throw new TypeError(`unknown limit ${JSON.stringify(name)} (known: ${Object.keys(DEFAULT_LIMITS).join(', ')})`);
    }
    const key = name as keyof ServerLimits;
    if (RATES.has(key)) {
      const rate = value as RateLimit;
      const ok = typeof rate === 'object' && rate !== null && positive(rate.burst) && rate.burst >= 1 && positive(rate.perSecond);
      if (!ok) throw new TypeError(`limits.${name} must be { burst: a number >= 1, perSecond: a number > 0 }, got ${JSON.stringify(value)}`);
      out[name] = Object.freeze({ burst: rate.burst, perSecond: rate.perSecond });
    } else if (COUNTS.has(key)) {
      if (!Number.isSafeInteger(value) || (value as number) < 1) throw new TypeError(`limits.${name} must be a whole number >= 1, got ${JSON.stringify(value)}`);
      out[name] = value;
    } else {
      if (!positive(value)) throw new TypeError(`limits.${name} must be a number of milliseconds > 0, got ${JSON.stringify(value)}`);
      out[name] = value;
    }
  }
  return Object.freeze(out) as unknown as Readonly<ServerLimits>;
}

function positive(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0;
}
