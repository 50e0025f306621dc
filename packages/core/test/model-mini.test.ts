// The shipped default model: the TypeScript engine reproduces the Python ONNX reference runner on held-out
// contexts (golden.json, written by `vikdf-train mini` when it exports the bundle), the bundle verifies, it
// stays within its size budget, and Engine.load() without a source picks it.
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/index.js';
import modelMini, { bundlePath } from '@vikdf/model-mini';

interface GoldenCase {
  turns: string[];
  text_input_ids: number[];
  prompt_input_ids: number[];
  splice_at: number;
  knowledge_embeds_checksum: { sum: number; abs_sum: number };
  greedy_ids: number[];
  beam3_no_repeat3_ids: number[];
}
const golden: { new_tokens: number; cases: GoldenCase[] } = JSON.parse(
  await readFile(path.join(bundlePath, '..', 'golden.json'), 'utf8'),
);
const greedy = { numBeams: 1, doSample: false, noRepeatNgramSize: 0, maxNewTokens: golden.new_tokens };
const beam = { numBeams: 3, noRepeatNgramSize: 3, lengthPenalty: 1, doSample: false, maxNewTokens: golden.new_tokens };

async function sizeOf(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    total += entry.isDirectory() ? await sizeOf(p) : (await stat(p)).size;
  }
  return total;
}

let engine: Engine;
beforeAll(async () => {
  engine = await Engine.load(modelMini, { devices: ['cpu'] }); // verifies every file's sha256
});
afterAll(async () => {
  await engine.close();
});

describe('@vikdf/model-mini', () => {
  it('is a verified bundle of at most 60 MB', async () => {
    expect(engine.manifest.name).toBe('vikdf-mini');
    expect(await sizeOf(bundlePath)).toBeLessThanOrEqual(60 * 1024 * 1024);
  });

  it('formats held-out contexts exactly as the Python reference (WordPiece text ids, prompt ids, splice)', () => {
    for (const c of golden.cases) {
      const inputs = engine.formatter.format(c.turns);
      expect(inputs.textIds).toEqual(c.text_input_ids);
      expect(inputs.promptIds).toEqual(c.prompt_input_ids);
      expect(inputs.spliceAt).toBe(c.splice_at);
    }
  });

  it('gives the same knowledge vectors as the reference runner', async () => {
    const k = await engine.runtime.encodeKnowledge(golden.cases.map((c) => c.text_input_ids));
    golden.cases.forEach((c, i) => {
      const row = Array.from(k[i]!);
      const sum = row.reduce((a, v) => a + v, 0);
      const abs = row.reduce((a, v) => a + Math.abs(v), 0);
      expect(Math.abs(sum - c.knowledge_embeds_checksum.sum)).toBeLessThan(1e-4 * c.knowledge_embeds_checksum.abs_sum);
      expect(Math.abs(abs - c.knowledge_embeds_checksum.abs_sum)).toBeLessThan(1e-4 * c.knowledge_embeds_checksum.abs_sum);
    });
  });

  it('greedy and beam-3 replies have the reference ids', async () => {
    // One request at a time, as the reference runner decodes: the same float operations, so the same ids.
    // (Batched rows are padded, which changes the order of float sums; tiny-random's goldens cover batching.)
    for (const c of golden.cases) {
      expect((await engine.generate({ context: c.turns, options: greedy }).result).tokenIds).toEqual(c.greedy_ids);
      expect((await engine.generate({ context: c.turns, options: beam }).result).tokenIds).toEqual(c.beam3_no_repeat3_ids);
    }
  });

  it('answers held-out contexts with printable text under the default options, batched', async () => {
    const results = await Promise.all(golden.cases.map((c) => engine.generate({ context: c.turns }).result));
    for (const r of results) {
      expect(r.text.trim().length).toBeGreaterThan(0);
      expect(r.text).toMatch(/^[\x20-\x7e]+$/); // printable ASCII: no byte-level debris
    }
  });

  it('is what Engine.load() loads when no bundle is named', async () => {
    const byDefault = await Engine.load(undefined, { devices: ['cpu'], verify: false });
    expect(byDefault.dir).toBe(engine.dir);
    await byDefault.close();
  });
});
