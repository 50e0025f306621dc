#!/usr/bin/env node
// How far this machine's ONNX Runtime is from a bundle's travelling golden (training/vikdf/runtime_golden.py):
// the largest knowledge-vector and teacher-forced logit differences, and whether greedy decoding chose the same
// ids. Run it on machines with other CPUs (or under `qemu-x86_64 -cpu Haswell node ...` for AVX2 kernels on an
// AVX-512 machine) to measure the tolerances that the golden tests use; docs/reliability.md has the results.
//   node scripts/golden-drift.mjs [golden.json] [bundle-dir] [fast|exact]   (default: @vikdf/model-mini's, exact)
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Engine, scoreContinuation } from '../packages/core/dist/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const goldenFile = process.argv[2] ?? path.join(root, 'packages/model-mini/golden.json');
const bundle = process.argv[3] ?? path.join(root, 'packages/model-mini/bundle');
const golden = JSON.parse(await readFile(goldenFile, 'utf8'));
const precision = process.argv[4] ?? 'exact';
const engine = await Engine.load(bundle, { devices: ['cpu'], verify: false, precision });

let knowledgeAbs = 0;
let logitAbs = 0;
let marginAbs = 0;
let sameGreedy = 0;
for (const c of golden.cases) {
  const [k] = await engine.runtime.encodeKnowledge([c.text_input_ids]);
  c.knowledge_embeds.flat().forEach((v, i) => (knowledgeAbs = Math.max(knowledgeAbs, Math.abs(v - k[i]))));
  const scores = await scoreContinuation(engine, c.turns, c.greedy.raw_ids);
  scores.forEach((s, i) => {
    logitAbs = Math.max(logitAbs, Math.abs(s.logit - c.greedy.logits[i]));
    marginAbs = Math.max(marginAbs, Math.abs(s.margin - c.greedy.margins[i]));
  });
  const ids = (await engine.generate({ context: c.turns, options: { numBeams: 1, doSample: false, noRepeatNgramSize: 0, maxNewTokens: golden.new_tokens } }).result).tokenIds;
  sameGreedy += Number(JSON.stringify(ids) === JSON.stringify(c.greedy.ids));
}
await engine.close();
const minMargin = Math.min(...golden.cases.flatMap((c) => c.greedy.margins));
console.log(JSON.stringify({ golden: path.relative(root, goldenFile), precision, cases: golden.cases.length, knowledgeAbs, logitAbs, marginAbs, sameGreedy, minGoldenMargin: minMargin }));
