// A WebSocket opening handshake written by hand, for tests that drive a server over a plain TCP socket (a client
// that never reads, one that stops mid-frame): what a `ws` client would send, plus any extra headers.
import { randomBytes } from 'node:crypto';

/** The HTTP upgrade request for `wsUrl` (ws://host:port/path), ready to write to a connected socket. */
export function upgradeRequest(wsUrl: string, headers: Record<string, string> = {}): string {
  const { hostname, port, pathname } = new URL(wsUrl);
  return [
    `GET ${pathname} HTTP/1.1`,
    `Host: ${hostname}:${port}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
    'Sec-WebSocket-Version: 13',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    '',
    '',
  ].join('\r\n');
}
