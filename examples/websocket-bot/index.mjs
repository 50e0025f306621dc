// A minimal bot on @vikdf/websocket.
//
//   node examples/websocket-bot/index.mjs                     serves the tiny test bundle and chats with it
//   node examples/websocket-bot/index.mjs path/to/bundle      serves another bundle
//   node examples/websocket-bot/index.mjs ws://127.0.0.1:8787/ws   chats with a running server (pnpm start)
//
// Needs the packages built (pnpm install && pnpm build, which `pnpm start` and `pnpm test` do).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { VikdfClient, serve } from '@vikdf/websocket';

const here = path.dirname(fileURLToPath(import.meta.url));
const arg = process.argv[2];

// 1. A server: the model behind a WebSocket endpoint on a free loopback port (unless we were given one).
let serving;
let url = arg;
if (!arg?.startsWith('ws')) {
  const bundle = arg ?? path.join(here, '../../test/fixtures/tiny-random');
  serving = await serve({ bundle, port: 0, defaults: { numBeams: 1, maxNewTokens: 24 } });
  url = serving.wsUrl;
}

// 2. A client: its hello says which model and device answer.
const client = await VikdfClient.connect(url);
console.log(`connected to ${url}: ${client.hello.model.name} on ${client.hello.device}`);

// 3. A conversation of two turns; replies stream in.
for (const text of ['hello! what do you see?', 'tell me more']) {
  console.log(`> ${text}`);
  const reply = client.send(text, { conversation: 'demo' });
  process.stdout.write('< ');
  for await (const chunk of reply) process.stdout.write(JSON.stringify(chunk).slice(1, -1)); // escaped: random models write control characters
  const { usage, timings, finishReason } = await reply.result;
  console.log(`\n  (${usage.completionTokens} tokens in ${Math.round(timings.totalMs)} ms, ${finishReason})`);
}

// 4. Forget the conversation, then shut everything down.
await client.reset('demo');
await client.close();
await serving?.close();
