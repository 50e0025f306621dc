// Which Host and Origin headers the server answers: its own address and loopback names, not a name an attacker
// made resolve to it (DNS rebinding), and what allowedHosts / allowedOrigins add. Checked with raw HTTP requests
// and upgrades whose headers are set by hand, as a rebinding page's browser would send them.
import { describe, expect, it } from 'vitest';
import { createServer } from '../src/index.js';
import { RawClient, httpGet, withTinyEngine } from './helpers.js';

const tiny = withTinyEngine();

/** Status of a WebSocket upgrade with exactly these Host and Origin headers. */
function upgradeStatus(wsUrl: string, host: string, origin?: string): Promise<number> {
  return RawClient.status(wsUrl, { headers: { Host: host }, ...(origin === undefined ? {} : { origin }) });
}

describe('DNS rebinding', () => {
  it('refuses requests whose Host is not the server: a rebound name with its own origin gets 403, page and upgrade alike', async () => {
    const server = await tiny.serve(); // 127.0.0.1, a free port
    const port = server.address.port;
    // evil.example was made to resolve to 127.0.0.1: its page is same-origin with http://evil.example:port.
    expect(await upgradeStatus(server.wsUrl, `evil.example:${port}`, `http://evil.example:${port}`)).toBe(403);
    expect(await upgradeStatus(server.wsUrl, `evil.example:${port}`)).toBe(403);
    for (const path of ['/', '/chat.js', '/healthz']) {
      const res = await httpGet(new URL(path, server.url).href, { Host: `evil.example:${port}` });
      expect(res.status, path).toBe(403);
      expect(res.body).toBe('host not allowed\n');
    }
    // The rebound page cannot use a loopback Host either: its Origin gives it away.
    expect(await upgradeStatus(server.wsUrl, `127.0.0.1:${port}`, `http://evil.example:${port}`)).toBe(403);
    // Other ports of loopback are other servers.
    expect(await upgradeStatus(server.wsUrl, `127.0.0.1:${port + 1}`, `http://127.0.0.1:${port + 1}`)).toBe(403);
    expect(await upgradeStatus(server.wsUrl, `127.0.0.1:${port}`, `http://127.0.0.1:${port + 1}`)).toBe(403);
    // Host headers that are not host names
    for (const host of ['evil.example@127.0.0.1', `127.0.0.1:${port}/x`, `[zz]:${port}`, `127.0.0.1:99999`]) {
      expect((await httpGet(server.url, { Host: host })).status, JSON.stringify(host)).toBe(403);
    }
  });

  it('answers its own address and the loopback names of its port, with or without a matching origin', async () => {
    const server = await tiny.serve();
    const port = server.address.port;
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LOCALHOST.:${port}`, `[::1]:${port}`]) {
      expect((await httpGet(server.url, { Host: host })).status, host).toBe(200);
      const name = host.toLowerCase().replace('.:', ':');
      expect(await upgradeStatus(server.wsUrl, host, `http://${name}`), host).toBe(101);
      expect(await upgradeStatus(server.wsUrl, host), host).toBe(101);
    }
    // The page served as localhost may talk to the socket as 127.0.0.1: both are this server.
    expect(await upgradeStatus(server.wsUrl, `127.0.0.1:${port}`, `http://localhost:${port}`)).toBe(101);
  });

  it('allowedHosts adds names (any port, or one); allowedOrigins adds origins; "*" allows any', async () => {
    const server = await tiny.serve({ allowedHosts: ['chat.example', 'other.example:8443'], allowedOrigins: ['https://app.example'] });
    const port = server.address.port;
    expect((await httpGet(server.url, { Host: 'chat.example' })).status).toBe(200); // behind a proxy on port 80/443
    expect(await upgradeStatus(server.wsUrl, 'chat.example', 'https://chat.example')).toBe(101);
    expect(await upgradeStatus(server.wsUrl, `chat.example:${port}`, `http://chat.example:${port}`)).toBe(101);
    expect(await upgradeStatus(server.wsUrl, 'other.example:8443', 'https://other.example:8443')).toBe(101);
    expect(await upgradeStatus(server.wsUrl, 'other.example', 'https://other.example')).toBe(403);
    expect(await upgradeStatus(server.wsUrl, 'chat.example.evil', 'https://chat.example.evil')).toBe(403);
    expect(await upgradeStatus(server.wsUrl, `127.0.0.1:${port}`, 'https://app.example')).toBe(101);
    expect(await upgradeStatus(server.wsUrl, `127.0.0.1:${port}`, 'https://app.example:444')).toBe(403);
    const any = await tiny.serve({ allowedHosts: ['*'], allowedOrigins: ['*'] });
    expect(await upgradeStatus(any.wsUrl, 'anything.example', 'http://elsewhere.example')).toBe(101);
  });

  it('on all interfaces: any IP address of the machine (ports may be forwarded), names only when known', async () => {
    const server = await tiny.serve({ host: '0.0.0.0' });
    const port = server.address.port;
    const ws = `ws://127.0.0.1:${port}/ws`;
    expect(await upgradeStatus(ws, `127.0.0.1:${port}`, `http://127.0.0.1:${port}`)).toBe(101);
    expect(await upgradeStatus(ws, '192.0.2.7:18787', 'http://192.0.2.7:18787')).toBe(101); // a forwarded port
    expect(await upgradeStatus(ws, `localhost:${port}`)).toBe(101);
    expect(await upgradeStatus(ws, `evil.example:${port}`, `http://evil.example:${port}`)).toBe(403);
  });

  it('refuses bad allow-lists clearly', async () => {
    expect(() => createServer({ engine: tiny.engine, allowedHosts: ['http://chat.example'] })).toThrow(/allowedHosts: "http:\/\/chat\.example" is not a host name/);
    expect(() => createServer({ engine: tiny.engine, allowedOrigins: ['app.example'] })).toThrow(/allowedOrigins: "app\.example" is not an origin/);
    expect(() => createServer({ engine: tiny.engine, allowedHosts: 'chat.example' as unknown as string[] })).toThrow(/allowedHosts must be an array/);
  });
});
