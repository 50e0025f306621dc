#!/usr/bin/env node
// A WebSocket chat server in a process of its own, for what an in-process server cannot show: SIGKILL, a
// restart on the same port, SIGTERM. The fault suite (test/faults/websocket.test.ts) and the soak
// (bench/soak/soak.mjs) start it. It runs the built packages (packages/*/dist: `pnpm test` builds them first).
//
//   node test/faults/ws-server.mjs [--bundle DIR] [--port N] [--limits JSON] [--memory-every MS]
//
// Without --bundle it serves the default model (@vikdf/model-mini, Engine.load() with no source).
// Prints `listening <ws url>` once it accepts connections; with --memory-every, a line
// `memory {"rss":…,"heapUsed":…,…}` (process.memoryUsage(), bytes) that often. SIGTERM or SIGINT: graceful
// shutdown as `pnpm start` does it (replies in progress get 5 s, then close 1001), then `stopped` and exit 0.
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { values } = parseArgs({
  options: {
    bundle: { type: 'string' },
    port: { type: 'string', default: '0' },
    limits: { type: 'string', default: '{}' },
    'memory-every': { type: 'string' },
  },
});

const { Engine } = await import(pathToFileURL(path.join(root, 'packages/core/dist/index.js')).href);
const { createServer } = await import(pathToFileURL(path.join(root, 'packages/websocket/dist/index.js')).href);

const engine = values.bundle ? await Engine.load(path.resolve(values.bundle), { devices: ['cpu'] }) : await Engine.load(undefined, { devices: ['cpu'] });
const server = createServer({
  engine,
  host: '127.0.0.1',
  port: Number(values.port),
  defaults: { numBeams: 1 },
  limits: JSON.parse(values.limits),
});
await server.listen();
console.log(`listening ${server.wsUrl}`);

if (values['memory-every']) {
  setInterval(() => console.log(`memory ${JSON.stringify(process.memoryUsage())}`), Number(values['memory-every'])).unref();
}

let stopping = false;
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    if (stopping) process.exit(130);
    stopping = true;
    server
      .close({ mode: 'finish', timeoutMs: 5000 })
      .then(() => engine.close())
      .then(() => {
        console.log('stopped');
        process.exit(0);
      })
      .catch((err) => {
        console.error(`ws-server: shutdown failed: ${err?.stack ?? err}`);
        process.exit(1);
      });
  });
}
