/**
 * The HTTP side of the server: the chat page's files, `/healthz`, refused upgrades, and which Host and Origin
 * headers the server answers (the defence against DNS rebinding and against other web sites).
 */
import { readFileSync } from 'node:fs';
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import { hostname as osHostname } from 'node:os';
import type { Duplex } from 'node:stream';

const PAGE_FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/index.html': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/chat.js': { file: 'chat.js', type: 'text/javascript; charset=utf-8' },
  '/chat.css': { file: 'chat.css', type: 'text/css; charset=utf-8' },
};

const PAGE_HEADERS = {
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  'Cache-Control': 'no-cache',
};

/** The chat page's files (`public/`), read once. */
export function loadChatPage(): Map<string, { body: Buffer; type: string }> {
  const page = new Map<string, { body: Buffer; type: string }>();
  for (const [route, { file, type }] of Object.entries(PAGE_FILES)) {
    page.set(route, { body: readFileSync(new URL(`../public/${file}`, import.meta.url)), type });
  }
  return page;
}

export interface HttpState {
  page: Map<string, { body: Buffer; type: string }>;
  hosts: HostPolicy;
  /** True while the server drains before closing: /healthz says 503, everything else too. */
  shuttingDown: boolean;
  health: () => Record<string, unknown>;
}

/** Answers a plain HTTP request: the page, /healthz, 403 for a Host the server does not serve, 404, 405. */
export function handleRequest(state: HttpState, req: IncomingMessage, res: ServerResponse): void {
  const draining = state.shuttingDown;
  const close = draining ? { Connection: 'close' } : {};
  const text = (status: number, body: string, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', ...close, ...headers }).end(`${body}\n`);
  };
  if (!state.hosts.hostAllowed(req.headers.host)) return text(403, 'host not allowed');
  if (req.method !== 'GET' && req.method !== 'HEAD') return text(405, 'method not allowed', { Allow: 'GET, HEAD' });
  const pathname = pathOf(req);
  if (pathname === '/healthz') {
    const body = JSON.stringify({ ...state.health(), status: draining ? 'shutting_down' : 'ok' });
    res.writeHead(draining ? 503 : 200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...close });
    res.end(req.method === 'HEAD' ? undefined : body);
    return;
  }
  if (draining) return text(503, 'server shutting down');
  const file = state.page.get(pathname);
  if (!file) return text(404, 'not found');
  res.writeHead(200, { 'Content-Type': file.type, 'Content-Length': file.body.length, ...PAGE_HEADERS });
  res.end(req.method === 'HEAD' ? undefined : file.body);
}

/** Answers a refused upgrade with a plain HTTP response and closes the socket. */
export function refuse(socket: Duplex, status: number, message: string, headers: Record<string, string> = {}): void {
  const body = `${message}\n`;
  const lines = [
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}`,
    'Connection: close',
    'Content-Type: text/plain; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  socket.once('finish', () => socket.destroy());
  socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
}

/** The path of a request target, without its query (no URL parsing: a bad target must not throw). */
export function pathOf(req: IncomingMessage): string {
  const target = req.url ?? '/';
  const end = target.search(/[?#]/);
  return end < 0 ? target : target.slice(0, end);
}

// -- hosts and origins --------------------------------------------------------------------------------------

/** A Host header or allow-list entry: a name or IPv4 address, or a bracketed IPv6 address, and a port. */
const HOST = /^(\[[0-9a-f:.]+\]|[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?)(?::(\d{1,5}))?$/;

interface HostPort {
  /** Lower case, no trailing dot; IPv6 in brackets. */
  name: string;
  /** undefined: none given. */
  port: number | undefined;
}

/** Parses `name[:port]`; undefined when it is not one. */
export function parseHost(value: string): HostPort | undefined {
  const m = HOST.exec(value.trim().toLowerCase().replace(/\.(?=:\d+$|$)/, ''));
  if (!m) return undefined;
  let name = m[1]!;
  if (name.startsWith('[')) {
    if (isIP(name.slice(1, -1)) !== 6) return undefined;
    name = `[${normalizeIpv6(name.slice(1, -1))}]`;
  }
  const port = m[2] === undefined ? undefined : Number(m[2]);
  if (port !== undefined && port > 65535) return undefined;
  return { name, port };
}

function normalizeIpv6(address: string): string {
  // The URL parser writes IPv6 addresses in their canonical form ("::1", not "0:0:0:0:0:0:0:1").
  return new URL(`http://[${address}]/`).hostname.slice(1, -1);
}

function isIpLiteral(name: string): boolean {
  return name.startsWith('[') || isIP(name) === 4;
}

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];

export interface HostPolicyOptions {
  /** Extra host names the server answers to (`chat.example`, any port; `chat.example:8443`, that port; `*`: any). */
  allowedHosts?: readonly string[];
  /** Extra browser origins allowed to connect (`https://app.example`; `*`: any). */
  allowedOrigins?: readonly string[];
}

/**
 * Which Host and Origin headers the server accepts. A Host must name the server: the address it listens on, the
 * name it was started for, `localhost`, `127.0.0.1` or `[::1]` when it listens on loopback (same port), any of the
 * machine's addresses or its host name when it listens on all interfaces, or an entry of `allowedHosts`. This is
 * what stops DNS rebinding: a page of evil.example whose name was made to resolve to 127.0.0.1 reaches the server
 * with `Host: evil.example:8787`, which is refused. An Origin must be one of those hosts (its scheme's port) or an
 * entry of `allowedOrigins`; requests without an Origin (non-browser clients) are not asked for one.
 */
export class HostPolicy {
  private readonly extraHosts: HostPort[] = [];
  private readonly anyHost: boolean;
  private readonly origins: Set<string>;
  private readonly anyOrigin: boolean;
  /** Exact `name:port` strings the server answers to (filled by `bind`). */
  private readonly served = new Set<string>();
  private wildcard = false;
  private port = 0;

  constructor(options: HostPolicyOptions = {}) {
    const hosts = list(options.allowedHosts, 'allowedHosts');
    const origins = list(options.allowedOrigins, 'allowedOrigins');
    this.anyHost = hosts.includes('*');
    for (const entry of hosts) {
      if (entry === '*') continue;
      const parsed = parseHost(entry);
      if (!parsed) throw new TypeError(`allowedHosts: ${JSON.stringify(entry)} is not a host name (like chat.example or chat.example:8443)`);
      this.extraHosts.push(parsed);
    }
    this.anyOrigin = origins.includes('*');
    this.origins = new Set();
    for (const entry of origins) {
      if (entry === '*') continue;
      const origin = normalizeOrigin(entry);
      if (!origin) throw new TypeError(`allowedOrigins: ${JSON.stringify(entry)} is not an origin (like https://app.example)`);
      this.origins.add(origin.origin);
    }
  }

  /** Called once listening: `requested` is the host the server was started for, `address` where it listens. */
  bind(requested: string, address: AddressInfo): void {
    this.port = address.port;
    const add = (name: string) => {
      const parsed = parseHost(name.includes(':') && !name.startsWith('[') ? `[${name}]` : name);
      if (parsed) this.served.add(`${parsed.name}:${this.port}`);
    };
    add(address.address);
    if (!isIP(requested)) add(requested);
    const loopback = isLoopback(address.address);
    this.wildcard = address.address === '0.0.0.0' || address.address === '::';
    if (loopback || this.wildcard) for (const name of LOOPBACK_NAMES) add(name);
    if (this.wildcard) {
      const name = osHostname();
      if (name) add(name);
    }
  }

  /** Whether a request with this Host header is for this server (a request without one is: not a browser). */
  hostAllowed(header: string | undefined): boolean {
    if (header === undefined || this.anyHost) return true;
    const host = parseHost(header);
    return host !== undefined && this.serves(host, 80);
  }

  /** Whether an upgrade with this Origin header may connect (none: a non-browser client, allowed). */
  originAllowed(header: string | undefined): boolean {
    if (header === undefined || this.anyOrigin) return true;
    const origin = normalizeOrigin(header);
    if (!origin) return false;
    if (this.origins.has(origin.origin)) return true;
    return this.serves(origin.host, origin.defaultPort);
  }

  private serves(host: HostPort, defaultPort: number): boolean {
    const port = host.port ?? defaultPort;
    if (this.served.has(`${host.name}:${port}`)) return true;
    // On all interfaces, any address of the machine (interfaces come and go, and ports may be forwarded):
    // an IP address cannot be rebound, only a name can.
    if (this.wildcard && isIpLiteral(host.name)) return true;
    return this.extraHosts.some((h) => h.name === host.name && (h.port === undefined || h.port === port));
  }
}

function list(value: readonly string[] | undefined, name: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string' && v.trim() !== '')) {
    throw new TypeError(`ServerOptions.${name} must be an array of non-empty strings`);
  }
  return value.map((v) => v.trim());
}

function isLoopback(address: string): boolean {
  return address === '::1' || /^127\./.test(address) || /^::ffff:127\./.test(address);
}

/** An http(s) origin, normalised; undefined for anything else (`null`, other schemes, paths). */
function normalizeOrigin(value: string): { origin: string; host: HostPort; defaultPort: number } | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return undefined;
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username || url.password) return undefined;
  if (url.pathname !== '/' || url.search || url.hash || /\/./.test(value.replace(/^[a-z]+:\/\//i, ''))) return undefined;
  const host = parseHost(url.host);
  if (!host) return undefined;
  return { origin: url.origin, host, defaultPort: url.protocol === 'https:' ? 443 : 80 };
}
