#!/usr/bin/env node
// The WebSocket soak (not in CI): a chat server in a process of its own (test/faults/ws-server.mjs, the built
// packages) on the default model, and N clients in conversation with it for a while. Reports messages sent,
// answered, failed and lost, and the server's memory over time; writes it all to a JSON file.
//
//   node bench/soak/soak.mjs                       # 10 minutes, 50 clients, the default model (@vikdf/model-mini)
//   node bench/soak/soak.mjs --duration 2m --clients 20 --bundle test/fixtures/tiny-random --every 10s
//
// Flags: --duration (10m; s, m or ms), --clients (50), --bundle (default model when absent), --every (sampling
// period; 30s), --max-new-tokens (32), --out (bench/soak/results/<date>-<duration>-<clients>c.json),
// --drain (how long unanswered messages may still finish after the end; 60s).
// Each client keeps two conversations, each sending its next message when the previous reply ended (done or
// error). Every frame is checked: token frames numbered from 0, one done or error per message and nothing after
// it, the done text equal to the tokens joined. "lost" counts messages with no done or error by the end (their
// connection dropped, or no answer within --drain); a client whose connection drops reconnects.
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { WebSocket } = createRequire(path.join(root, 'packages/websocket/package.json'))('ws');

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '10m' },
    clients: { type: 'string', default: '50' },
    bundle: { type: 'string' },
    every: { type: 'string', default: '30s' },
    'max-new-tokens': { type: 'string', default: '32' },
    out: { type: 'string' },
    drain: { type: 'string', default: '60s' },
  },
});

function ms(text) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text);
  if (!m) throw new Error(`not a duration: ${text} (e.g. 90s, 10m, 500ms)`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] ?? 's'];
}
const durationMs = ms(values.duration);
const everyMs = ms(values.every);
const drainMs = ms(values.drain);
const clientCount = Number(values.clients);
const maxNewTokens = Number(values['max-new-tokens']);
const bundle = values.bundle ? path.resolve(values.bundle) : undefined;

// Small talk, as the default model knows it; each message gets the client and turn number so none repeats.
const LINES = [
  'hi, how are you today?',
  'what did you do this weekend?',
  'do you like music?',
  'i just got back from a walk in the park',
  'what is your favourite food?',
  'tell me about your family',
  'i am learning to play the guitar',
  'do you have any pets?',
  'the weather is nice today',
  'what do you do for work?',
];

const counts = { sent: 0, answered: 0, aborted: 0, errors: 0, lost: 0, violations: 0, reconnects: 0, tokens: 0 };
const errorCodes = {};
const violations = [];
const latencies = []; // ms from send to done
const firstTokens = []; // ms from send to the first token frame
let serverMemory; // the server's last process.memoryUsage()
const samples = [];

// --- the server --------------------------------------------------------------------------------------------
const limits = { maxConnectionsPerIp: 1000, messageRatePerIp: { burst: 1_000_000, perSecond: 1_000_000 } };
const serverArgs = [path.join(root, 'test/faults/ws-server.mjs'), '--port', '0', '--limits', JSON.stringify(limits), '--memory-every', '1000'];
if (bundle) serverArgs.push('--bundle', bundle);
const server = spawn(process.execPath, serverArgs, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
let serverOut = '';
const serverExit = new Promise((resolve) => server.once('exit', (code, signal) => resolve({ code, signal })));
const wsUrl = await new Promise((resolve, reject) => {
  server.stdout.on('data', (d) => {
    serverOut += d;
    for (const line of String(d).split('\n')) {
      if (line.startsWith('memory ')) serverMemory = JSON.parse(line.slice(7));
    }
    const m = /listening (ws:\/\/\S+)/.exec(serverOut);
    if (m) resolve(m[1]);
  });
  server.stderr.on('data', (d) => (serverOut += d));
  server.once('exit', (code) => reject(new Error(`the server exited (${code}) before listening:\n${serverOut}`)));
});
serverOut = '';
while (!serverMemory) await new Promise((r) => setTimeout(r, 50)); // the first memory line: the baseline, model loaded
const mb = (bytes) => Math.round((bytes / 1024 / 1024) * 10) / 10;
console.error(`soak: server ${wsUrl} (${bundle ? path.relative(root, bundle) : 'the default model'}), ${clientCount} clients for ${values.duration}`);

// --- the clients -------------------------------------------------------------------------------------------
const start = performance.now();
const stopAt = start + durationMs;
let stopping = false;

class Client {
  constructor(index) {
    this.index = index;
    this.turn = 0;
    this.pending = new Map(); // id -> { sentAt, tokens, text, resolve }
    this.nextId = 1;
  }

  async connect() {
    for (;;) {
      try {
        this.ws = await new Promise((resolve, reject) => {
          const ws = new WebSocket(wsUrl);
          ws.once('open', () => resolve(ws));
          ws.once('error', reject);
        });
        break;
      } catch (err) {
        if (stopping) return;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    this.ws.on('error', () => undefined);
    this.ws.on('message', (data) => this.onFrame(JSON.parse(String(data))));
    this.ws.on('close', () => {
      for (const [id, p] of this.pending) {
        counts.lost++;
        this.pending.delete(id);
        p.resolve();
      }
    });
  }

  get open() {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  onFrame(f) {
    if (f.type === 'hello' || f.type === 'pong') return;
    if (f.type === 'error' && f.id === undefined) return void (errorCodes[`notice:${f.code}`] = (errorCodes[`notice:${f.code}`] ?? 0) + 1);
    const p = this.pending.get(f.id);
    const violation = (what) => {
      counts.violations++;
      if (violations.length < 50) violations.push(`client ${this.index} ${f.id}: ${what}`);
    };
    if (!p) return violation(`${f.type} frame for no message in flight`);
    if (f.type === 'token') {
      if (f.seq !== p.tokens.length) violation(`token seq ${f.seq}, expected ${p.tokens.length}`);
      if (p.tokens.length === 0) firstTokens.push(performance.now() - p.sentAt);
      p.tokens.push(f.text);
      counts.tokens++;
      return;
    }
    this.pending.delete(f.id);
    if (f.type === 'done') {
      if (f.text !== p.tokens.join('')) violation('done text differs from its tokens joined');
      counts.answered++;
      if (f.finishReason === 'aborted') counts.aborted++;
      latencies.push(performance.now() - p.sentAt);
    } else if (f.type === 'error') {
      counts.errors++;
      errorCodes[f.code] = (errorCodes[f.code] ?? 0) + 1;
    } else {
      violation(`unexpected ${f.type} frame`);
    }
    p.resolve();
  }

  ask(conversation) {
    const id = `m${this.nextId++}`;
    const text = `${LINES[(this.index + this.turn++) % LINES.length]} (${this.index}.${this.turn})`;
    return new Promise((resolve) => {
      this.pending.set(id, { sentAt: performance.now(), tokens: [], resolve });
      counts.sent++;
      this.ws.send(JSON.stringify({ type: 'message', id, conversation, text, options: { maxNewTokens } }));
    });
  }

  async run() {
    await this.connect();
    await Promise.all(
      ['a', 'b'].map(async (conversation) => {
        while (!stopping) {
          if (!this.open) {
            if (this.ws?.readyState === WebSocket.CLOSED && !this.reconnecting) {
              counts.reconnects++;
              this.reconnecting = this.connect().finally(() => (this.reconnecting = undefined));
            }
            await (this.reconnecting ?? new Promise((r) => setTimeout(r, 100)));
            continue;
          }
          await this.ask(conversation);
        }
      }),
    );
  }
}

function percentile(values, p) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]);
}

let lastAnswered = 0;
let lastAt = start;
function sample() {
  const now = performance.now();
  const inFlight = clients.reduce((n, c) => n + c.pending.size, 0);
  const row = {
    t: Math.round((now - start) / 1000),
    sent: counts.sent,
    answered: counts.answered,
    errors: counts.errors,
    lost: counts.lost,
    inFlight,
    repliesPerS: Math.round(((counts.answered - lastAnswered) / ((now - lastAt) / 1000)) * 10) / 10,
    rssMB: serverMemory ? mb(serverMemory.rss) : null,
    heapMB: serverMemory ? mb(serverMemory.heapUsed) : null,
    arrayBuffersMB: serverMemory ? mb(serverMemory.arrayBuffers) : null,
  };
  lastAnswered = counts.answered;
  lastAt = now;
  samples.push(row);
  console.error(
    `soak: ${String(row.t).padStart(4)} s  sent ${row.sent}  answered ${row.answered}  errors ${row.errors}  lost ${row.lost}  ` +
      `in flight ${row.inFlight}  ${row.repliesPerS}/s  server rss ${row.rssMB} MB heap ${row.heapMB} MB`,
  );
}

const clients = Array.from({ length: clientCount }, (_, i) => new Client(i));
// t = 0: the server with its model loaded, before any client.
samples.push({ t: 0, sent: 0, answered: 0, errors: 0, lost: 0, inFlight: 0, repliesPerS: 0, rssMB: mb(serverMemory.rss), heapMB: mb(serverMemory.heapUsed), arrayBuffersMB: mb(serverMemory.arrayBuffers) });
const sampler = setInterval(sample, everyMs);
const running = clients.map((c) => c.run());
await new Promise((r) => setTimeout(r, Math.max(0, stopAt - performance.now())));
stopping = true; // no new messages; what is in flight may finish
const drainStart = performance.now();
while (clients.some((c) => c.pending.size) && performance.now() - drainStart < drainMs) await new Promise((r) => setTimeout(r, 100));
clearInterval(sampler);
sample();
const unfinished = clients.reduce((n, c) => n + c.pending.size, 0);
counts.lost += unfinished; // never answered within the drain time
for (const c of clients) {
  for (const p of c.pending.values()) p.resolve();
  c.pending.clear();
  c.ws?.close();
}
await Promise.all(running);
server.kill('SIGTERM');
const exit = await serverExit;

// --- the report -------------------------------------------------------------------------------------------
const rss = samples.map((s) => s.rssMB).filter((v) => v !== null);
const report = {
  date: new Date().toISOString(),
  machine: { cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.cpus().length, memoryGB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.release()}` },
  model: bundle ? path.relative(root, bundle) : '@vikdf/model-mini (default)',
  durationS: durationMs / 1000,
  clients: clientCount,
  maxNewTokens,
  counts,
  errorCodes,
  latencyMs: { p50: percentile(latencies, 50), p95: percentile(latencies, 95), p99: percentile(latencies, 99), max: percentile(latencies, 100) },
  firstTokenMs: { p50: percentile(firstTokens, 50), p95: percentile(firstTokens, 95), p99: percentile(firstTokens, 99) },
  repliesPerS: Math.round((counts.answered / (durationMs / 1000)) * 10) / 10,
  serverRssMB: { baseline: rss[0] ?? null, min: rss.length ? Math.min(...rss) : null, max: rss.length ? Math.max(...rss) : null, last: rss.at(-1) ?? null },
  serverExit: exit,
  violations,
  samples,
};
const out = values.out ?? path.join(root, 'bench/soak/results', `${report.date.slice(0, 10)}-${values.duration}-${clientCount}c.json`);
mkdirSync(path.dirname(out), { recursive: true });
writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);

const pad = (v, n) => String(v).padStart(n);
console.log(`\nsoak: ${report.model}, ${clientCount} clients, ${values.duration}, on ${report.machine.cpu} (${report.machine.cores} cores)`);
console.log(`   t (s)     sent  answered  errors   lost  in flight  replies/s  server RSS (MB)  heap (MB)`);
for (const s of samples) {
  console.log(`${pad(s.t, 8)} ${pad(s.sent, 8)} ${pad(s.answered, 9)} ${pad(s.errors, 7)} ${pad(s.lost, 6)} ${pad(s.inFlight, 10)} ${pad(s.repliesPerS, 10)} ${pad(s.rssMB, 16)} ${pad(s.heapMB, 10)}`);
}
console.log(
  `\nsent ${counts.sent}, answered ${counts.answered} (${counts.aborted} aborted), errors ${counts.errors}${Object.keys(errorCodes).length ? ` ${JSON.stringify(errorCodes)}` : ''}, ` +
    `lost ${counts.lost}, protocol violations ${counts.violations}, reconnects ${counts.reconnects}`,
);
console.log(`latency p50 ${report.latencyMs.p50} ms, p95 ${report.latencyMs.p95} ms, p99 ${report.latencyMs.p99} ms; first token p50 ${report.firstTokenMs.p50} ms`);
console.log(`server RSS ${report.serverRssMB.baseline} MB before the clients, ${report.serverRssMB.last} MB at the end (max ${report.serverRssMB.max}); server exit ${JSON.stringify(exit)}`);
console.log(`written ${path.relative(root, out)}`);
process.exitCode = counts.lost || counts.violations || exit.code !== 0 ? 1 : 0;
