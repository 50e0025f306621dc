#!/usr/bin/env node
// `pnpm start`: the WebSocket chat server (@vikdf/websocket) on the default VIKDF model. Prints the URL of the
// chat page; Ctrl+C (SIGINT) or SIGTERM shuts it down gracefully.
//
// On a fresh clone it first installs the Node dependencies (pnpm install --frozen-lockfile) and builds the
// packages (pnpm -r build); it rebuilds when a package's src/ is newer than its dist/.
//
// Environment: PORT (default 8787), HOST (default 127.0.0.1), VIKDF_TOKEN (require this bearer token),
// VIKDF_BUNDLE (serve another bundle directory), VIKDF_ALLOWED_HOSTS (comma-separated host names the server
// answers to besides its own address, e.g. behind a proxy: chat.example), VIKDF_ALLOWED_ORIGINS (comma-separated
// browser origins allowed to connect besides its own pages, e.g. https://app.example).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
process.stdout.on('error', () => {}); // e.g. `pnpm start | head -1`: never crash on a closed pipe

// The default model: the bundle of @vikdf/model-mini (docs/model-card.md), read from its folder so that it
// works before the install step below.
const DEFAULT_BUNDLE = path.join(root, 'packages/model-mini/bundle');

// Chat defaults: greedy (one beam) so that replies stream token by token; the bundle's other defaults apply.
const CHAT_DEFAULTS = { numBeams: 1 };

function fail(message) {
  console.error(`pnpm start: ${message}`);
  process.exit(1);
}

/** Runs pnpm with its output on stderr (stdout stays for the server's own lines). */
function pnpm(args) {
  const exec = process.env.npm_execpath;
  const viaNode = exec && /pnpm/i.test(path.basename(exec)) && /\.c?js$/.test(exec);
  const [cmd, pre] = viaNode ? [process.execPath, [exec]] : ['pnpm', []];
  console.error(`pnpm start: running pnpm ${args.join(' ')}`);
  const r = spawnSync(cmd, [...pre, ...args], {
    cwd: root,
    stdio: ['ignore', 2, 2],
    env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip' },
  });
  if (r.error) fail(`cannot run pnpm (${r.error.message}); install it with: npm i -g pnpm@12.4.2`);
  if (r.status !== 0) fail(`pnpm ${args.join(' ')} failed (exit ${r.status})`);
}

function newestMtime(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/** Packages with a build script whose dist/ is missing or older than their src/. */
function stalePackages() {
  const stale = [];
  for (const name of readdirSync(path.join(root, 'packages'))) {
    const dir = path.join(root, 'packages', name);
    const manifest = path.join(dir, 'package.json');
    if (!existsSync(manifest) || !JSON.parse(readFileSync(manifest, 'utf8')).scripts?.build) continue;
    const built = path.join(dir, 'dist/index.js');
    if (!existsSync(built) || (existsSync(path.join(dir, 'src')) && newestMtime(path.join(dir, 'src')) > statSync(built).mtimeMs)) {
      stale.push(name);
    }
  }
  return stale;
}

// 1. dependencies and build
if (!existsSync(path.join(root, 'node_modules/.modules.yaml')) || !existsSync(path.join(root, 'packages/websocket/node_modules/ws'))) {
  pnpm(['install', '--frozen-lockfile']);
}
const stale = stalePackages();
if (stale.length) {
  console.error(`pnpm start: building ${stale.join(', ')} (not built, or src/ changed since)`);
  pnpm(['-r', ...stale.map((name) => `--filter=./packages/${name}`), 'build']); // in dependency order
}

// 2. the server
const port = process.env.PORT === undefined || process.env.PORT === '' ? 8787 : Number(process.env.PORT);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`PORT must be a port number, got ${JSON.stringify(process.env.PORT)}`);
const host = process.env.HOST || '127.0.0.1';
const bundle = process.env.VIKDF_BUNDLE ? path.resolve(process.env.VIKDF_BUNDLE) : DEFAULT_BUNDLE;
const token = process.env.VIKDF_TOKEN || undefined;
/** A comma-separated list from the environment (undefined when unset or empty). */
const listFromEnv = (name) => {
  const items = (process.env[name] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  return items.length ? items : undefined;
};
const allowedHosts = listFromEnv('VIKDF_ALLOWED_HOSTS');
const allowedOrigins = listFromEnv('VIKDF_ALLOWED_ORIGINS');

const { serve } = await import(pathToFileURL(path.join(root, 'packages/websocket/dist/index.js')).href);
const { describeProvider } = await import(pathToFileURL(path.join(root, 'packages/core/dist/index.js')).href);
let serving;
try {
  serving = await serve({ bundle, host, port, token, allowedHosts, allowedOrigins, defaults: CHAT_DEFAULTS });
} catch (err) {
  if (err?.code === 'EADDRINUSE') fail(`port ${port} on ${host} is in use: stop what uses it, or pick another port (PORT=8788 pnpm start)`);
  if (err?.code === 'EACCES') fail(`no permission to listen on ${host}:${port}; pick a port above 1023 (PORT=8787)`);
  if (err instanceof TypeError && /allowed(Hosts|Origins)/.test(err.message)) fail(`VIKDF_ALLOWED_HOSTS or VIKDF_ALLOWED_ORIGINS: ${err.message}`);
  fail(`cannot start: ${err?.message ?? err}`);
}
const { engine, server } = serving;

console.log(`VIKDF chat: ${serving.url}`);
console.log(`  model (${bundle === DEFAULT_BUNDLE ? 'the default model' : bundle}): ${describeProvider(engine.manifest.name, engine.provider)}`);
console.log(`  WebSocket: ${serving.wsUrl} (protocol 1, docs/websocket-protocol.md)${token ? '; bearer token required' : ''}`);
if (allowedHosts) console.log(`  also answers as: ${allowedHosts.join(', ')}`);
if (allowedOrigins) console.log(`  also allows pages from: ${allowedOrigins.join(', ')}`);
console.log('  Ctrl+C stops it.');

server.on('connection', ({ connection, ip }) => console.log(`connection ${connection} from ${ip}`));
server.on('disconnect', ({ connection, code, reason }) => console.log(`connection ${connection} closed (${code}${reason ? ` ${reason}` : ''})`));

// 3. graceful shutdown: replies in progress may finish (5 s), then connections close with 1001
let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (stopping) {
      console.log('stopping now');
      process.exit(130);
    }
    stopping = true;
    console.log(`${signal}: stopping (replies in progress get 5 s; ${signal} again stops at once)`);
    serving
      .close({ mode: 'finish', timeoutMs: 5000 })
      .then(() => {
        console.log('stopped');
        process.exit(0);
      })
      .catch((err) => {
        console.error(`pnpm start: shutdown failed: ${err?.message ?? err}`);
        process.exit(1);
      });
  });
}
