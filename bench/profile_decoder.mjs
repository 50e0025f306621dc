// Where one cached decoder step goes inside ONNX Runtime: the bundle's decoder_model_merged graph alone, run
// through onnxruntime-node with the session options @vikdf/core uses, with ORT's profiler on.
//
//   node bench/profile_decoder.mjs --bundle bench/.models/llama-100m [--batches 1,16] [--past 110] [--out file.json]
//
// For each batch size, with past length --past for every row:
// * without the profiler: median wall time of session.run (a) as the engine calls it (every output back in
//   JS), (b) asking only for `logits` (the present.* tensors are computed but stay inside ORT), and (c) with
//   pre-allocated output tensors passed as fetches. a - b is what handing the new KV cache back to JS costs.
// * with ORT's profiler (which slows the run down a little): ORT's own model_run time, the sum of kernel
//   times by operator type, and wall - model_run, the binding's share.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { BENCH, guarded, log, median, parseArgs, round, writeJson } from './lib.mjs';

const args = parseArgs(process.argv.slice(2), { bundle: '', batches: '1,16', past: 110, runs: 10, threads: 2, out: '' });
if (!args.bundle) throw new Error('--bundle DIR is required');
// The onnxruntime-node that @vikdf/core itself loads.
const core = createRequire(fs.realpathSync(path.join(BENCH, 'node_modules', '@vikdf', 'core', 'package.json')));
const ort = core('onnxruntime-node');
const TAG = `profile ${path.basename(args.bundle)}`;

const manifest = JSON.parse(fs.readFileSync(path.join(args.bundle, 'manifest.json'), 'utf8'));
const m = manifest.model;
const file = path.join(args.bundle, manifest.graphs.decoder_model_merged.file);
const P = args.past;

function feeds(b) {
  const rnd = (n) => Float32Array.from({ length: n }, () => Math.random() - 0.5);
  const f = {
    inputs_embeds: new ort.Tensor('float32', rnd(b * m.llm_hidden_size), [b, 1, m.llm_hidden_size]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(b * (P + 1)).fill(1n), [b, P + 1]),
    position_ids: new ort.Tensor('int64', new BigInt64Array(b).fill(BigInt(P)), [b, 1]),
  };
  const size = b * m.llm_num_key_value_heads * P * m.llm_head_dim;
  for (let i = 0; i < m.llm_num_layers; i++) {
    for (const kind of ['key', 'value']) {
      f[`past_key_values.${i}.${kind}`] = new ort.Tensor('float32', rnd(size), [b, m.llm_num_key_value_heads, P, m.llm_head_dim]);
    }
  }
  return f;
}

async function plainTimings(b) {
  const session = await ort.InferenceSession.create(file, { executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: args.threads });
  const input = feeds(b);
  const fetches = {};
  for (const name of session.outputNames) {
    const dims = name === 'logits' ? [b, 1, m.llm_vocab_size] : [b, m.llm_num_key_value_heads, P + 1, m.llm_head_dim];
    fetches[name] = new ort.Tensor('float32', new Float32Array(dims.reduce((x, y) => x * y)), dims);
  }
  const modes = { allOutputs: () => session.run(input), logitsOnly: () => session.run(input, ['logits']), preallocatedOutputs: () => session.run(input, fetches) };
  const times = Object.fromEntries(Object.keys(modes).map((k) => [k, []]));
  const { otherCpu } = await guarded(TAG, `batch ${b} without profiler`, async () => {
    for (const k of Object.keys(times)) times[k].length = 0;
    for (const run of Object.values(modes)) for (let i = 0; i < 2; i++) await run(); // warm-up
    for (let i = 0; i < args.runs; i++) {
      for (const [k, run] of Object.entries(modes)) {
        const t = performance.now();
        await run();
        times[k].push(performance.now() - t);
      }
    }
    return {};
  });
  await session.release();
  const out = Object.fromEntries(Object.entries(times).map(([k, v]) => [`${k}Ms`, round(median(v), 3)]));
  return { ...out, returnKvCacheToJsMs: round(out.allOutputsMs - out.logitsOnlyMs, 3), otherCpu };
}

const results = {};
for (const b of args.batches.split(',').map(Number)) {
  const plain = await plainTimings(b);
  log(TAG, `batch ${b} without profiler: ${JSON.stringify(plain)}`);
  const prefix = path.join(os.tmpdir(), `vikdf-profile-${process.pid}-${b}`);
  const session = await ort.InferenceSession.create(file, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: args.threads,
    enableProfiling: true,
    profileFilePrefix: prefix,
  });
  const input = feeds(b);
  for (let i = 0; i < 3; i++) await session.run(input); // warm-up
  const { walls, otherCpu } = await guarded(TAG, `batch ${b}`, async () => {
    const walls = [];
    for (let i = 0; i < args.runs; i++) {
      const t = performance.now();
      await session.run(input);
      walls.push(performance.now() - t);
    }
    return { walls };
  });
  session.endProfiling();
  await session.release();
  const profileFile = fs.readdirSync(os.tmpdir()).map((f) => path.join(os.tmpdir(), f)).find((f) => f.startsWith(prefix) && f.endsWith('.json'));
  const events = JSON.parse(fs.readFileSync(profileFile, 'utf8'));
  fs.rmSync(profileFile);
  // Only the timed runs: the last `runs` model_run events and the kernels inside them.
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').slice(-args.runs);
  const inRuns = (e) => runs.some((r) => e.ts >= r.ts && e.ts <= r.ts + r.dur);
  const byOp = {};
  let kernelUs = 0;
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time') || !inRuns(e)) continue;
    const op = e.args?.op_name ?? 'unknown';
    byOp[op] = (byOp[op] ?? 0) + e.dur;
    kernelUs += e.dur;
  }
  const perRun = (us) => round(us / 1000 / args.runs, 3);
  const kvBytes = 2 * m.llm_num_layers * b * m.llm_num_key_value_heads * m.llm_head_dim * 4;
  results[b] = {
    batch: b,
    pastLength: P,
    withoutProfiler: plain,
    otherCpu,
    wallMs: round(median(walls), 3),
    modelRunMs: perRun(runs.reduce((s, r) => s + r.dur, 0)),
    kernelSumMs: perRun(kernelUs),
    bindingMs: round(median(walls) - runs.reduce((s, r) => s + r.dur, 0) / 1000 / args.runs, 3),
    kvCacheInMiB: round((kvBytes * P) / 2 ** 20, 1),
    kvCacheOutMiB: round((kvBytes * (P + 1)) / 2 ** 20, 1),
    byOpMs: Object.fromEntries(Object.entries(byOp).sort((x, y) => y[1] - x[1]).map(([k, v]) => [k, perRun(v)])),
  };
  log(TAG, `batch ${b}: ${JSON.stringify(results[b])}`);
}
writeJson(args.out, { runtime: 'onnxruntime-node', version: ort.env.versions?.node ?? ort.env.versions?.common, bundle: args.bundle, threads: args.threads, results });
