import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file is packages/test-support/src/fixtures.ts). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const fixturesDir = path.join(repoRoot, 'test/fixtures');
/** The tiny random-weight bundle written by `vikdf-train fixture` (test/fixtures/README.md). */
export const tinyBundle = path.join(fixturesDir, 'tiny-random');
/** Its PyTorch goldens (training/vikdf/golden.py). */
export const tinyGoldenPath = path.join(fixturesDir, 'tiny-random.golden.json');

export interface TinyGoldenRow {
  turns: string[];
  text_input_ids: number[];
  prompt_input_ids: number[];
  splice_at: number;
  knowledge_embeds: number[][];
  first_step_top5: { ids: number[]; logits: number[] };
  greedy_ids: number[];
  greedy_margins: number[];
  beam3_no_repeat3_ids: number[];
}
export interface TinyGolden {
  new_tokens: number;
  tolerance: { knowledge_embeds_abs: number; logits_abs: number };
  cases: { name: string; rows: TinyGoldenRow[] }[];
}

let cached: TinyGolden | undefined;
/** The parsed golden file (read once per test process). */
export function tinyGolden(): TinyGolden {
  cached ??= JSON.parse(readFileSync(tinyGoldenPath, 'utf8')) as TinyGolden;
  return cached;
}
