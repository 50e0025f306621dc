// Diagnostic: how much ONNX Runtime's intra-op thread spinning costs the engine at batch 1 (decode tokens/s
// and the engine's time to the first token).
//
//   node bench/spin_experiment.mjs --bundle DIR [--repeats 3] [--cycles 1] [--out file.json]
//
// @vikdf/core opens three sessions (knowledge_encoder, embed_tokens, decoder_model_merged), each with its own
// intra-op thread pool, and runs embed_tokens then the decoder at every step. ORT's pool threads spin for a
// while after each run (session option session.intra_op.allow_spinning, default on); on a 2-core machine the
// spinning threads of one session compete with the next session's. This runs the same batch-1 decode with
// the engine's sessions created (1) as the engine creates them, (2) with spinning off for all but the
// decoder, (3) with spinning off everywhere, by patching InferenceSession.create of the onnxruntime-node
// that @vikdf/core loads (the engine has no option for it). Modes alternate, `cycles` times.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { BENCH, contexts, guarded, log, median, parseArgs, round, writeJson } from './lib.mjs';

const args = parseArgs(process.argv.slice(2), { bundle: '', repeats: 3, cycles: 1, newTokens: 64, threads: 2, out: '' });
if (!args.bundle) throw new Error('--bundle DIR is required');
const TAG = `spin ${path.basename(args.bundle)}`;
const core = createRequire(fs.realpathSync(path.join(BENCH, 'node_modules', '@vikdf', 'core', 'package.json')));
const ort = core('onnxruntime-node');
const MODES = ['default', 'nospin-except-decoder', 'nospin-all'];
let mode = 'default';
const create = ort.InferenceSession.create.bind(ort.InferenceSession);
ort.InferenceSession.create = (file, options) => {
  const off = mode === 'nospin-all' || (mode === 'nospin-except-decoder' && !String(file).includes('decoder_model_merged'));
  return create(file, off ? { ...options, extra: { ...options?.extra, session: { intra_op: { allow_spinning: '0' } } } } : options);
};
const { Engine } = await import('@vikdf/core');

const N = args.newTokens;
const OPTIONS = { numBeams: 1, doSample: false, noRepeatNgramSize: 0, maxNewTokens: N, minNewTokens: N };
const context = contexts()[0];
const rates = Object.fromEntries(MODES.map((m) => [m, []]));
const ttfts = Object.fromEntries(MODES.map((m) => [m, []]));
for (let c = 0; c < args.cycles; c++) {
  for (mode of MODES) {
    const engine = await Engine.load(args.bundle, { devices: ['cpu'], intraOpNumThreads: args.threads, prefixCacheBytes: 0 });
    await engine.generate({ context, options: OPTIONS }).result; // warm-up
    for (let i = 0; i < args.repeats; i++) {
      const { timings: t } = await guarded(TAG, `${mode} #${i + 1}`, () => engine.generate({ context, options: OPTIONS }).result);
      rates[mode].push(((N - 1) * 1000) / (t.totalMs - t.firstTokenMs));
      ttfts[mode].push(t.firstTokenMs);
    }
    await engine.close();
    log(TAG, `${mode}: ${rates[mode].map((x) => round(x)).join(', ')} tok/s; first token after ${ttfts[mode].map((x) => round(x)).join(', ')} ms`);
  }
}
writeJson(args.out, {
  bundle: args.bundle,
  threads: args.threads,
  newTokens: N,
  decodeTokPerSBatch1: Object.fromEntries(MODES.map((m) => [m, { median: round(median(rates[m])), all: rates[m].map((x) => round(x)) }])),
  firstTokenMsBatch1: Object.fromEntries(MODES.map((m) => [m, { median: round(median(ttfts[m])), all: ttfts[m].map((x) => round(x)) }])),
});
