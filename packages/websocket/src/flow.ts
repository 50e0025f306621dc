/**
 * What a client has read, as far as the server can tell.
 *
 * `ws.bufferedAmount` only shows what waits in the server's process: the kernel's socket buffers (megabytes on
 * loopback) take a reply long before anything waits there, so a client that stops reading looks healthy for a
 * long time. What the client acknowledges tells more: a WebSocket ping travels behind every frame sent before it,
 * and a client answers it (its pong) only after reading them. So the server counts the bytes it sends, pings with
 * an unguessable payload when output is unacknowledged, and on the matching pong knows the client has read
 * everything sent before that ping. `unreadMs` is then the age of the oldest output not known to be read: near
 * zero for a client that reads (at most about the probe interval plus a round trip), growing for one that does
 * not.
 */
import { randomBytes } from 'node:crypto';

interface Probe {
  payload: Buffer;
  /** Bytes sent before the probe: acknowledged when it is answered. */
  upTo: number;
  sentAt: number;
}

export class ReadTracker {
  private sent = 0;
  private acked = 0;
  /** When the oldest output not known to be read was sent (undefined: everything is acknowledged). */
  private unreadSince: number | undefined;
  /** When the first output after the probe in flight was sent (it becomes unreadSince when the probe is answered). */
  private sentAfterProbe: number | undefined;
  private probe: Probe | undefined;

  /** Counts `bytes` of output sent at `now`. */
  sentBytes(bytes: number, now: number): void {
    this.sent += bytes;
    if (this.probe) this.sentAfterProbe ??= now;
    else this.unreadSince ??= now;
  }

  /** True when output is unacknowledged and no probe is on its way. */
  get probeDue(): boolean {
    return this.probe === undefined && this.sent > this.acked;
  }

  /** True while a probe is unanswered. */
  get probing(): boolean {
    return this.probe !== undefined;
  }

  /** Starts a probe: returns the payload of the ping to send now. */
  startProbe(now: number): Buffer {
    this.probe = { payload: randomBytes(8), upTo: this.sent, sentAt: now };
    this.sentAfterProbe = undefined;
    return this.probe.payload;
  }

  /** A pong arrived: if it answers the probe, everything sent before that probe has been read. */
  pong(payload: Buffer): boolean {
    if (!this.probe || !payload.equals(this.probe.payload)) return false;
    this.acked = this.probe.upTo;
    this.unreadSince = this.sentAfterProbe;
    this.sentAfterProbe = undefined;
    this.probe = undefined;
    return true;
  }

  /** Bytes sent and not yet acknowledged. */
  get unreadBytes(): number {
    return this.sent - this.acked;
  }

  /** Age of the oldest output not known to be read (0 when everything is acknowledged). */
  unreadMs(now: number): number {
    return this.unreadSince === undefined ? 0 : now - this.unreadSince;
  }
}
