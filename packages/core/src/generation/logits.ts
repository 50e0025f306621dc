/**
 * Logits processors with Hugging Face transformers semantics.
 *
 * Each works in place on one row of scores (a `Float32Array` of length vocab, the last position's logits of
 * one sequence) and returns the same row, so that calls chain. A removed token gets `-Infinity`, as Hugging
 * Face's `filter_value`. Row values stay float32 (the array rounds every store); softmax-style sums are done
 * in float64, which is at least as accurate as PyTorch's float32 kernels.
 */

import type { RandomSource } from './rng.js';

/** A logits row: one score per vocabulary id. */
export type LogitsRow = Float32Array;

/**
 * Repetition penalty (HF `RepetitionPenaltyLogitsProcessor`): every distinct id of `previousIds` that is a
 * valid index of the row gets `score < 0 ? score * penalty : score / penalty`, once, however often it occurs.
 * Ids outside the row are ignored. `penalty` 1 changes nothing; > 1 discourages repeats, < 1 encourages them.
 */
export function applyRepetitionPenalty(row: LogitsRow, previousIds: Iterable<number>, penalty: number): LogitsRow {
  if (penalty === 1) return row;
  const p = Math.fround(penalty); // PyTorch multiplies a float32 tensor by the scalar in float32
  const seen = new Set<number>();
  for (const id of previousIds) {
    if (!Number.isInteger(id) || id < 0 || id >= row.length || seen.has(id)) continue;
    seen.add(id);
    const score = row[id]!;
    row[id] = score < 0 ? score * p : score / p;
  }
  return row;
}

/**
 * No-repeat-n-gram (HF `NoRepeatNGramLogitsProcessor`): the ids that would complete an n-gram already present
 * in `ids`, i.e. for every earlier occurrence of the last `n - 1` ids, the id that followed it. Empty when
 * `n <= 0` or `ids` is shorter than `n`.
 */
export function bannedNgramTokens(ids: readonly number[], n: number): Set<number> {
  const banned = new Set<number>();
  if (n <= 0 || ids.length < n) return banned;
  const prefixStart = ids.length - n + 1; // the last n - 1 ids
  for (let i = 0; i + n <= ids.length; i++) {
    let match = true;
    for (let j = 0; j < n - 1; j++) {
      if (ids[i + j] !== ids[prefixStart + j]) {
        match = false;
        break;
      }
    }
    if (match) banned.add(ids[i + n - 1]!);
  }
  return banned;
}

/** Sets to -Infinity every token that would repeat an n-gram of `generatedIds` (see `bannedNgramTokens`). */
export function banNgramRepeats(row: LogitsRow, generatedIds: readonly number[], n: number): LogitsRow {
  for (const id of bannedNgramTokens(generatedIds, n)) {
    if (id >= 0 && id < row.length) row[id] = -Infinity;
  }
  return row;
}

/** Sets the given ids to -Infinity (HF `SuppressTokensLogitsProcessor`); ids outside the row are ignored. */
export function suppressTokens(row: LogitsRow, ids: Iterable<number>): LogitsRow {
  for (const id of ids) {
    if (Number.isInteger(id) && id >= 0 && id < row.length) row[id] = -Infinity;
  }
  return row;
}

/** Divides every score by `temperature` (> 0) (HF `TemperatureLogitsWarper`). */
export function applyTemperature(row: LogitsRow, temperature: number): LogitsRow {
  if (!(temperature > 0)) throw new RangeError(`temperature must be > 0, got ${temperature}`);
  if (temperature === 1) return row;
  const t = Math.fround(temperature);
  for (let i = 0; i < row.length; i++) row[i] = row[i]! / t;
  return row;
}

/**
 * Top-k (HF `TopKLogitsWarper`): removes every token scoring below the k-th highest score. Tokens tied with
 * the k-th score are all kept, so more than k may remain. `k <= 0` or `k >= vocab` changes nothing.
 */
export function topK(row: LogitsRow, k: number): LogitsRow {
  if (k <= 0 || k >= row.length) return row;
  const sorted = Float32Array.from(row).sort(); // ascending; NaN last
  const kth = sorted[row.length - k]!;
  for (let i = 0; i < row.length; i++) {
    if (row[i]! < kth) row[i] = -Infinity;
  }
  return row;
}

/**
 * Top-p / nucleus (HF `TopPLogitsWarper`, min_tokens_to_keep 1): sorts the scores ascending, takes the
 * cumulative softmax, and removes the tokens whose cumulative probability is <= 1 - topP; the most likely
 * token is always kept. Equal scores are ordered by id (lower id first, so it is removed first). `topP >= 1`
 * changes nothing.
 */
export function topP(row: LogitsRow, p: number): LogitsRow {
  if (p >= 1) return row;
  const probs = softmax(row);
  const order = ascendingOrder(row);
  const threshold = 1 - p;
  let cumulative = 0;
  // The last (most likely) token is always kept.
  for (let r = 0; r < order.length - 1; r++) {
    const id = order[r]!;
    cumulative += probs[id]!;
    if (cumulative <= threshold) row[id] = -Infinity;
    else break; // the cumulative sum only grows
  }
  return row;
}

/**
 * Min-p (HF `MinPLogitsWarper`, min_tokens_to_keep 1): removes the tokens whose probability is below
 * `minP * (probability of the most likely token)`. The most likely token always stays. `minP` 0 changes
 * nothing.
 */
export function minP(row: LogitsRow, minProbability: number): LogitsRow {
  if (minProbability <= 0) return row;
  const probs = softmax(row);
  let best = 0;
  for (let i = 1; i < probs.length; i++) if (probs[i]! > probs[best]!) best = i;
  const threshold = minProbability * probs[best]!;
  for (let i = 0; i < row.length; i++) {
    if (i !== best && probs[i]! < threshold) row[i] = -Infinity;
  }
  return row;
}

/**
 * Softmax of a row into a new float64 array. A row that is all -Infinity gives all zeros (not NaN).
 */
export function softmax(row: ArrayLike<number>): Float64Array {
  const out = new Float64Array(row.length);
  const max = rowMax(row);
  if (max === -Infinity) return out;
  let sum = 0;
  for (let i = 0; i < row.length; i++) {
    const e = Math.exp(row[i]! - max);
    out[i] = e;
    sum += e;
  }
  for (let i = 0; i < out.length; i++) out[i]! /= sum;
  return out;
}

/**
 * Log-softmax in place, shaped like numpy's float32 `x - max - log(sum(exp(x - max)))`: `x - max` and the
 * final values are float32 (the row stores them), the sum of exponentials is float64 and its log is rounded
 * to float32. A row that is all -Infinity stays all -Infinity.
 */
export function logSoftmax(row: LogitsRow): LogitsRow {
  const max = rowMax(row);
  if (max === -Infinity) return row;
  let sum = 0;
  for (let i = 0; i < row.length; i++) {
    const shifted = Math.fround(row[i]! - max);
    row[i] = shifted;
    sum += Math.exp(shifted);
  }
  const logSum = Math.fround(Math.log(sum));
  for (let i = 0; i < row.length; i++) row[i] = row[i]! - logSum;
  return row;
}

/** Index of the highest score; ties give the lowest id (as `argmax` in numpy and PyTorch). NaN is skipped. */
export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  let bestValue = -Infinity;
  let found = false;
  for (let i = 0; i < row.length; i++) {
    const v = row[i]!;
    if (v > bestValue || (!found && v === -Infinity)) {
      best = i;
      bestValue = v;
      found = true;
    }
  }
  return best;
}

/**
 * Draws a token from softmax(row) by inverse CDF with one `rng.next()`: the first id whose cumulative
 * probability exceeds the uniform draw. Tokens at -Infinity are never drawn.
 * @throws Error when every score is -Infinity (nothing can be drawn).
 */
export function sample(row: LogitsRow, rng: RandomSource): number {
  const probs = softmax(row);
  let total = 0;
  let last = -1;
  for (let i = 0; i < probs.length; i++) {
    total += probs[i]!;
    if (probs[i]! > 0) last = i;
  }
  if (last < 0) throw new Error('cannot sample: every token has probability 0 (all scores are -Infinity)');
  const u = rng.next() * total;
  let cumulative = 0;
  for (let i = 0; i < probs.length; i++) {
    cumulative += probs[i]!;
    if (u < cumulative) return i;
  }
  return last; // rounding: u landed on the very end of the distribution
}

function rowMax(row: ArrayLike<number>): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  return max;
}

/** Ids sorted by ascending score, equal scores by ascending id. */
function ascendingOrder(row: LogitsRow): Uint32Array {
  const order = new Uint32Array(row.length);
  for (let i = 0; i < order.length; i++) order[i] = i;
  // Array.prototype.sort is stable (ES2019), but typed-array sort takes a comparator too; make ties explicit.
  return order.sort((a, b) => row[a]! - row[b]! || a - b);
}
