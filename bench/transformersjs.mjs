// Benchmark of transformers.js (@huggingface/transformers, onnxruntime-node CPU) on the same LLM weights,
// exported by bench/make_models.py in transformers.js's decoder-only Llama layout. Greedy, fixed lengths.
//
//   node bench/transformersjs.mjs --model llama-100m-hf [--models-dir bench/.models] [--out file.json]
//
// The prompts are bench_inputs.json's input_ids: our engine's prompt ids for bench/contexts.json with
// num_query_tokens stand-in ids where the engine splices the knowledge vectors, so every decoder call has the
// same sequence lengths as the engine's (transformers.js cannot take the spliced embeddings).
// * TTFT (batch 1): from generate() to the first generated token (streamer.put after the prompt's).
// * decode tokens/s at batch 1: (new tokens - 1) / (time of the last token - time of the first).
// * aggregate tokens/s with N conversations: one left-padded batch (transformers.js has no continuous
//   batching), N x new tokens / wall.
// * profile: per step, ONNX Runtime session.run vs the rest of transformers.js's generate loop.
import { AutoModelForCausalLM, Tensor, env } from '@huggingface/transformers';
import fs from 'node:fs';
import path from 'node:path';
import { BENCH, guarded, log, median, parseArgs, peakRssMiB, round, writeJson } from './lib.mjs';

const args = parseArgs(process.argv.slice(2), {
  model: '',
  modelsDir: path.join(BENCH, '.models'),
  newTokens: 64,
  repeats: 3,
  levels: '1,4,16',
  threads: 2,
  noProfile: false,
  out: '',
});
if (!args.model) throw new Error('--model NAME (a folder of --models-dir) is required');
const TAG = `transformers.js ${args.model}`;
const N = args.newTokens;
const LEVELS = args.levels.split(',').map(Number);
const inputs = JSON.parse(fs.readFileSync(path.join(args.modelsDir, args.model, 'bench_inputs.json'), 'utf8'));
const generation = JSON.parse(fs.readFileSync(path.join(args.modelsDir, args.model, 'generation_config.json'), 'utf8'));
const PAD = generation.pad_token_id;

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.resolve(args.modelsDir) + path.sep;

const t0 = performance.now();
const model = await AutoModelForCausalLM.from_pretrained(args.model, {
  dtype: 'fp32',
  device: 'cpu',
  session_options: { intraOpNumThreads: args.threads },
});
const loadMs = performance.now() - t0;
log(TAG, `loaded in ${round(loadMs)} ms (${model.constructor.name}), ${args.threads} intra-op threads`);

/** Left-padded input_ids / attention_mask of the first n prompts. */
function batchInputs(n) {
  const rows = inputs.rows.slice(0, n).map((r) => r.input_ids);
  const width = Math.max(...rows.map((r) => r.length));
  const ids = new BigInt64Array(n * width).fill(BigInt(PAD));
  const mask = new BigInt64Array(n * width);
  rows.forEach((r, i) => {
    const off = i * width + (width - r.length);
    r.forEach((t, j) => {
      ids[off + j] = BigInt(t);
      mask[off + j] = 1n;
    });
  });
  return { input_ids: new Tensor('int64', ids, [n, width]), attention_mask: new Tensor('int64', mask, [n, width]) };
}

async function generate(n, newTokens, timed = false) {
  const times = [];
  const streamer = timed ? { put: () => times.push(performance.now()), end: () => undefined } : undefined;
  const start = performance.now();
  const out = await model.generate({
    ...batchInputs(n),
    max_new_tokens: newTokens,
    min_new_tokens: newTokens,
    do_sample: false,
    num_beams: 1,
    repetition_penalty: 1.0,
    no_repeat_ngram_size: 0,
    ...(streamer ? { streamer } : {}),
  });
  const end = performance.now();
  const width = out.dims[1];
  const prompt = width - newTokens;
  const newIds = [];
  for (let i = 0; i < out.dims[0]; i++) newIds.push(Array.from(out.data.slice(i * width + prompt, (i + 1) * width), Number));
  return { start, end, times: times.slice(1), newIds };
}

const warm = performance.now();
await generate(1, N);
await generate(Math.max(...LEVELS), N);
log(TAG, `warm-up ${round(performance.now() - warm)} ms`);

const single = [];
for (let i = 0; i < args.repeats; i++) {
  const { start, end, times, newIds, otherCpu, retries } = await guarded(TAG, `batch 1 #${i + 1}`, () => generate(1, N, true));
  if (times.length !== N || newIds[0].length !== N) throw new Error(`expected ${N} new tokens, got ${times.length}`);
  single.push({
    ttftMs: times[0] - start,
    decodeTokPerS: ((N - 1) * 1000) / (times[N - 1] - times[0]),
    totalMs: end - start,
    tokenIds: newIds[0],
    otherCpu,
    retries,
  });
  log(TAG, `batch 1 #${i + 1}: ttft ${round(single.at(-1).ttftMs)} ms, decode ${round(single.at(-1).decodeTokPerS)} tok/s`);
}

const aggregate = {};
for (const n of LEVELS) {
  const reps = [];
  for (let i = 0; i < args.repeats; i++) {
    const { start, end, newIds, otherCpu, retries } = await guarded(TAG, `${n} conversations #${i + 1}`, () => generate(n, N));
    const tokens = newIds.reduce((s, r) => s + r.length, 0);
    if (tokens !== n * N) throw new Error(`expected ${n * N} tokens, got ${tokens}`);
    reps.push({ wallMs: end - start, tokPerS: (tokens * 1000) / (end - start), otherCpu, retries });
    log(TAG, `${n} conversations #${i + 1}: ${round(reps.at(-1).tokPerS)} tok/s (${round(end - start)} ms)`);
  }
  aggregate[n] = {
    tokPerS: round(median(reps.map((x) => x.tokPerS))),
    wallMs: round(median(reps.map((x) => x.wallMs))),
    repeats: reps.map((x) => round(x.tokPerS)),
    otherCpu: reps.map((x) => x.otherCpu),
    retries: reps.reduce((s, x) => s + x.retries, 0),
  };
}

let profile;
if (!args.noProfile) {
  profile = {};
  const session = model.sessions.model;
  for (const n of [1, Math.max(...LEVELS)]) {
    let runs = [];
    const before = session.run;
    session.run = async (...a) => {
      const t = performance.now();
      try {
        return await before.apply(session, a);
      } finally {
        runs.push(performance.now() - t);
      }
    };
    let r;
    try {
      r = await guarded(TAG, `profile ${n}`, () => {
        runs = [];
        return generate(n, N, true);
      });
    } finally {
      session.run = before;
    }
    const perStep = (r.times[N - 1] - r.times[0]) / (N - 1);
    const decodeRuns = runs.slice(1); // the first run is the prefill
    const ort = decodeRuns.reduce((s, x) => s + x, 0) / decodeRuns.length;
    profile[n] = {
      steps: decodeRuns.length,
      otherCpu: r.otherCpu,
      prefillOrtRunMs: round(runs[0], 3),
      perStepMs: { step: round(perStep, 3), ortRun: round(ort, 3), restOfStep: round(perStep - ort, 3) },
    };
    log(TAG, `profile ${n} conversations: ${JSON.stringify(profile[n])}`);
  }
}

const med = (k) => round(median(single.map((x) => x[k])));
writeJson(args.out, {
  runtime: 'transformers.js',
  version: env.version,
  model: args.model,
  intraOpNumThreads: args.threads,
  newTokens: N,
  repeats: args.repeats,
  loadMs: round(loadMs),
  promptTokens: inputs.rows[0].input_ids.length,
  batch1: {
    ttftMs: med('ttftMs'),
    decodeTokPerS: med('decodeTokPerS'),
    totalMs: med('totalMs'),
    repeats: single.map((x) => ({ ttftMs: round(x.ttftMs), decodeTokPerS: round(x.decodeTokPerS), otherCpu: x.otherCpu, retries: x.retries })),
    firstTokenIds: single[0].tokenIds.slice(0, 16),
  },
  aggregate,
  profile,
  peakRssMiB: peakRssMiB(),
});
