// Benchmark of @vikdf/core's Engine on one bundle (greedy, fixed lengths). Prints JSON (or writes --out).
//
//   node bench/engine.mjs --bundle bench/.models/llama-100m [--new-tokens 64] [--repeats 3] [--out file.json]
//
// * TTFT: from engine.generate() to the first 'token' event (batch 1); the engine's own timings.firstTokenMs
//   (when the first id was chosen, text or not) is reported beside it.
// * decode tokens/s at batch 1: (new tokens - 1) / (totalMs - firstTokenMs) of the result's timings.
// * aggregate tokens/s with N conversations: N distinct contexts submitted at once (concurrency 16),
//   N x new tokens / wall time from the first generate() call to the last result (prefill included).
// * peak RSS: process.resourceUsage().maxRSS at the end (the whole process: model, runs, Node itself).
// * profile (not in the timed runs): time per decoder step split into ONNX Runtime session.run of the decoder,
//   of embed_tokens, the JS around them in BundleRuntime.decode/embed, and the rest of Engine.step.
import { Engine } from '@vikdf/core';
import path from 'node:path';
import { contexts, guarded, log, median, parseArgs, peakRssMiB, round, writeJson } from './lib.mjs';

const args = parseArgs(process.argv.slice(2), {
  bundle: '',
  label: '',
  newTokens: 64,
  repeats: 3,
  levels: '1,4,16',
  threads: 2,
  noProfile: false,
  out: '',
});
if (!args.bundle) throw new Error('--bundle DIR is required');
const TAG = `engine ${args.label || path.basename(args.bundle)}`;
const CONTEXTS = contexts();
const LEVELS = args.levels.split(',').map(Number);
const N = args.newTokens;
const OPTIONS = { numBeams: 1, doSample: false, noRepeatNgramSize: 0, repetitionPenalty: 1, maxNewTokens: N, minNewTokens: N };

const t0 = performance.now();
// The prefix cache (reuse of an identical context's prefill) is off: the other runtimes have none, and the
// repeats below send the same contexts again, which would turn TTFT into a cache hit.
const engine = await Engine.load(args.bundle, {
  devices: ['cpu'],
  concurrency: Math.max(16, ...LEVELS),
  intraOpNumThreads: args.threads,
  prefixCacheBytes: 0,
});
const loadMs = performance.now() - t0;
log(TAG, `loaded in ${round(loadMs)} ms on ${engine.provider.device}, ${args.threads} intra-op threads`);

/** One request; resolves with its timings measured here and by the engine. */
function one(context, options = OPTIONS) {
  const start = performance.now();
  let firstEvent;
  const handle = engine.generate({ context, options });
  handle.on('token', () => {
    firstEvent ??= performance.now();
  });
  return handle.result.then((r) => ({ r, start, firstEvent, end: performance.now() }));
}

const stats = () => engine.stats ?? {};

async function batch(n, options = OPTIONS) {
  const before = stats();
  const start = performance.now();
  const runs = await Promise.all(CONTEXTS.slice(0, n).map((c) => one(c, options)));
  const wall = performance.now() - start;
  const tokens = runs.reduce((s, x) => s + x.r.tokenIds.length, 0);
  const after = stats();
  // Batched decoder calls and prefills this batch took (engine.stats): with continuous batching, about
  // newTokens decoder steps for all n conversations together.
  const work = Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - (before[k] ?? 0)]));
  return { wall, tokens, runs, work };
}

// Warm-up: one run of each kind, full length (JIT of the step code, allocator growth).
const warm = performance.now();
await one(CONTEXTS[0]);
await batch(Math.max(...LEVELS));
log(TAG, `warm-up ${round(performance.now() - warm)} ms`);

// Batch 1: the same context each repeat.
const single = [];
for (let i = 0; i < args.repeats; i++) {
  const { r, start, firstEvent, end, otherCpu, retries } = await guarded(TAG, `batch 1 #${i + 1}`, () => one(CONTEXTS[0]));
  if (r.tokenIds.length !== N) throw new Error(`expected ${N} new tokens, got ${r.tokenIds.length}`);
  const t = r.timings;
  single.push({
    ttftMs: (firstEvent ?? end) - start,
    engineFirstTokenMs: t.firstTokenMs,
    totalMs: t.totalMs,
    decodeTokPerS: ((N - 1) * 1000) / (t.totalMs - t.firstTokenMs),
    promptTokens: r.usage.promptTokens,
    tokenIds: r.tokenIds,
    otherCpu,
    retries,
  });
  log(TAG, `batch 1 #${i + 1}: ttft ${round(single.at(-1).ttftMs)} ms, decode ${round(single.at(-1).decodeTokPerS)} tok/s`);
}

const aggregate = {};
for (const n of LEVELS) {
  const reps = [];
  for (let i = 0; i < args.repeats; i++) {
    const b = await guarded(TAG, `${n} conversations #${i + 1}`, () => batch(n));
    if (b.tokens !== n * N) throw new Error(`expected ${n * N} tokens, got ${b.tokens}`);
    reps.push({ wallMs: b.wall, tokPerS: (b.tokens * 1000) / b.wall, meanTtftMs: b.runs.reduce((s, x) => s + (x.firstEvent ?? x.end) - x.start, 0) / n, work: b.work, otherCpu: b.otherCpu, retries: b.retries });
    log(TAG, `${n} conversations #${i + 1}: ${round(reps.at(-1).tokPerS)} tok/s (${round(b.wall)} ms)`);
  }
  aggregate[n] = {
    tokPerS: round(median(reps.map((x) => x.tokPerS))),
    wallMs: round(median(reps.map((x) => x.wallMs))),
    meanTtftMs: round(median(reps.map((x) => x.meanTtftMs))),
    repeats: reps.map((x) => round(x.tokPerS)),
    otherCpu: reps.map((x) => x.otherCpu),
    retries: reps.reduce((s, x) => s + x.retries, 0),
    engineWork: reps[0].work,
  };
}

// Profile: where a decoder step's time goes (separate runs, so the wrappers never touch the timings above).
// The engine's loop runs admit (prefill) and step one after the other, never overlapping, so calls made while
// admit runs are counted as prefill and the others as decoder steps.
let profile;
if (!args.noProfile) {
  profile = {};
  for (const n of [1, Math.max(...LEVELS)]) {
    const acc = { prefill: {}, step: {} };
    let phase = 'step';
    const rt = engine.runtime;
    const wrap = (obj, method, name) => {
      const own = Object.prototype.hasOwnProperty.call(obj, method);
      const before = obj[method];
      obj[method] = async (...a) => {
        const bucket = (acc[phase][name] ??= { ms: 0, calls: 0 });
        const t = performance.now();
        try {
          return await before.apply(obj, a);
        } finally {
          bucket.ms += performance.now() - t;
          bucket.calls++;
        }
      };
      return () => (own ? (obj[method] = before) : delete obj[method]);
    };
    const admitOrig = engine.admit;
    engine.admit = async (...a) => {
      phase = 'prefill';
      const t = performance.now();
      try {
        return await admitOrig.apply(engine, a);
      } finally {
        (acc.prefill.admit ??= { ms: 0, calls: 0 }).ms += performance.now() - t;
        phase = 'step';
      }
    };
    const undo = [
      () => delete engine.admit,
      wrap(engine, 'step', 'step'),
      wrap(rt, 'decode', 'decode'),
      wrap(rt, 'embed', 'embed'),
      wrap(rt, 'encodeKnowledge', 'encodeKnowledge'),
      wrap(rt.sessions.decoder_model_merged, 'run', 'ortDecoderRun'),
      wrap(rt.sessions.embed_tokens, 'run', 'ortEmbedRun'),
    ];
    let b;
    try {
      b = await guarded(TAG, `profile ${n}`, () => {
        for (const k of Object.keys(acc)) acc[k] = {};
        return batch(n);
      });
    } finally {
      undo.reverse().forEach((f) => f());
    }
    const s = acc.step;
    const steps = s.step.calls;
    const per = (x) => round(x / steps, 3);
    profile[n] = {
      steps,
      wallMs: round(b.wall),
      otherCpu: b.otherCpu,
      prefillMs: round(acc.prefill.admit.ms),
      prefillOrtDecoderRunMs: round(acc.prefill.ortDecoderRun.ms),
      perStepMs: {
        step: per(s.step.ms),
        ortDecoderRun: per(s.ortDecoderRun.ms),
        decodeJsAroundRun: per(s.decode.ms - s.ortDecoderRun.ms),
        ortEmbedRun: per(s.ortEmbedRun.ms),
        embedJsAroundRun: per(s.embed.ms - s.ortEmbedRun.ms),
        restOfStep: per(s.step.ms - s.decode.ms - s.embed.ms),
        betweenSteps: per(b.wall - s.step.ms - acc.prefill.admit.ms),
      },
    };
    log(TAG, `profile ${n} conversations: ${JSON.stringify(profile[n])}`);
  }
}

await engine.close();
const med = (k) => round(median(single.map((x) => x[k])));
writeJson(args.out, {
  runtime: 'vikdf-core',
  bundle: args.bundle,
  device: engine.provider.device,
  intraOpNumThreads: args.threads,
  newTokens: N,
  repeats: args.repeats,
  loadMs: round(loadMs),
  promptTokens: single[0].promptTokens,
  batch1: {
    ttftMs: med('ttftMs'),
    engineFirstTokenMs: med('engineFirstTokenMs'),
    decodeTokPerS: med('decodeTokPerS'),
    totalMs: med('totalMs'),
    repeats: single.map((x) => ({ ttftMs: round(x.ttftMs), decodeTokPerS: round(x.decodeTokPerS), otherCpu: x.otherCpu, retries: x.retries })),
    firstTokenIds: single[0].tokenIds.slice(0, 16),
  },
  aggregate,
  profile,
  peakRssMiB: peakRssMiB(),
});
