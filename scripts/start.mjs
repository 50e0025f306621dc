#!/usr/bin/env node
// `pnpm start`: will start the WebSocket chat server with the default VIKDF model.
// Placeholder until @vikdf/websocket and the trained default model exist; it must never crash.
const lines = [
  'VIKDF Bot SDK: the chat server is not built yet.',
  '',
  '`pnpm start` will serve a WebSocket chat answered by the default VIKDF model on ONNX Runtime.',
  'That arrives with the @vikdf/websocket package and the default-model work (trained by training/).',
  'What exists today: the model bundle verifier in @vikdf/core (see docs/bundle-format.md).',
  'Run the tests with: pnpm test',
];
process.stdout.on('error', () => {}); // e.g. `pnpm start | head -1`: never crash on a closed pipe
console.log(lines.join('\n'));
process.exitCode = 0;
