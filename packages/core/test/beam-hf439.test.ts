// Beam search as the official VIKDF code decodes (transformers 4.39.3), end to end on the tiny fixture: the
// engine must reproduce, on every golden context, the ids that transformers 4.39.3's own `generate` gave on the
// fixture's PyTorch model (test/fixtures/tiny-random.beam-hf-4.39.json, written by `python -m vikdf.beam_golden`
// in training/; read its module comment for how).
//
// The fixture is random and almost never makes its eos likely, so with eos as the stop no hypothesis finishes
// early and every stop rule agrees. The goldens therefore stop on token 108, which the model often predicts: the
// test runs a copy of the bundle whose manifest names 108 as `llm_eos_token_id`.
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine, type GenerationOptions } from '../src/index.js';
import { fixturesDir, tinyBundle } from '@vikdf/test-support';

interface Golden {
  written_by: { transformers: string };
  stop_token_id: number;
  generation: { num_beams: number; no_repeat_ngram_size: number; length_penalty: number; early_stopping: boolean; max_new_tokens: number };
  contexts_where_hf5_differs: number;
  contexts: { turns: string[]; ids: number[]; hf5_ids?: number[] }[];
}
const golden: Golden = JSON.parse(await readFile(path.join(fixturesDir, 'tiny-random.beam-hf-4.39.json'), 'utf8'));
const g = golden.generation;
const beam: GenerationOptions = {
  numBeams: g.num_beams,
  noRepeatNgramSize: g.no_repeat_ngram_size,
  lengthPenalty: g.length_penalty,
  earlyStopping: g.early_stopping,
  maxNewTokens: g.max_new_tokens,
  doSample: false,
};

let dir: string;
let engine: Engine;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vikdf-beam439-'));
  const bundle = path.join(dir, 'bundle');
  await cp(tinyBundle, bundle, { recursive: true });
  const manifestPath = path.join(bundle, 'manifest.json');
  const manifest = JSON.parse(await readFile(manifestPath, 'utf8'));
  manifest.tokens.llm_eos_token_id = golden.stop_token_id; // manifest.json is not among the checksummed files
  await writeFile(manifestPath, JSON.stringify(manifest, null, 2));
  engine = await Engine.load(bundle, { devices: ['cpu'] });
});
afterAll(async () => {
  await engine?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** The engine's ids for every golden context, a few requests at a time (they decode in one batch). */
async function decodeAll(options: GenerationOptions): Promise<number[][]> {
  const out: number[][] = [];
  for (let i = 0; i < golden.contexts.length; i += 8) {
    const chunk = golden.contexts.slice(i, i + 8);
    const results = await Promise.all(chunk.map((c) => engine.generate({ context: c.turns, options }).result));
    out.push(...results.map((r) => r.tokenIds));
  }
  return out;
}

describe('beam search by the transformers 4.39.3 rule (the official code), against 4.39.3 itself', () => {
  it('the goldens were written by transformers 4.39.3, on at least 200 contexts', () => {
    expect(golden.written_by.transformers).toBe('4.39.3');
    expect(golden.contexts.length).toBeGreaterThanOrEqual(200);
  });

  it('the default rule reproduces the 4.39.3 ids on every context', async () => {
    const ids = await decodeAll(beam);
    golden.contexts.forEach((c, i) => expect(ids[i], `context ${i} ${JSON.stringify(c.turns)}`).toEqual(c.ids));
  });

  it("the 'hf-5' rule reproduces transformers 5 and differs from 4.39.3 on some contexts (counted)", async () => {
    const ids = await decodeAll({ ...beam, beamStopRule: 'hf-5' });
    let differ = 0;
    golden.contexts.forEach((c, i) => {
      expect(ids[i], `context ${i} ${JSON.stringify(c.turns)}`).toEqual(c.hf5_ids ?? c.ids);
      if (JSON.stringify(ids[i]) !== JSON.stringify(c.ids)) differ++;
    });
    // Without contexts where the rules disagree this file would not test the stop rule at all.
    expect(differ).toBeGreaterThan(0);
    expect(differ).toBe(golden.contexts_where_hf5_differs);
  });
});
