/**
 * Beam search for one sequence, exactly as Hugging Face transformers 5 `generate` (and the Python reference
 * `training/vikdf/onnx_runner.py`, `_beam_one`; docs/bundle-format.md, "Decoding").
 *
 * The model stays outside: each `step` takes one logits row per running beam and says which beam each new
 * beam continues (`parents`, to reorder the KV cache by) and which token it appends (`tokens`, to feed next).
 *
 * Numbers follow the reference's numpy dtypes: log-probabilities, beam scores and finished scores are
 * float32 (rounded with `Math.fround` or stored in a `Float32Array`); the "-1e9 if stopped" adjustments are
 * float64 before being rounded, as numpy promotes them. Candidate ties go to the lower flat index
 * (beam-major), like `np.argsort(-x, kind='stable')`.
 */

import { applyRepetitionPenalty, banNgramRepeats, logSoftmax, type LogitsRow } from './logits.js';

/** Hugging Face's "impossible" score. */
const NEG = -1.0e9;

export interface BeamSearchOptions {
  /** k, the number of beams (integer >= 1). */
  numBeams: number;
  /** Most tokens to generate (integer >= 1); a candidate at this length stops. */
  maxNewTokens: number;
  /** End-of-sequence id(s). With n ids, each step considers max(2, 1 + n) * k candidates, as Hugging Face. */
  eosTokenId: number | readonly number[];
  /** Ban tokens that would repeat an n-gram of the beam's generated tokens (0 = off). Default 0. */
  noRepeatNgramSize?: number;
  /** Finished beams score `sum of logprobs / length ** lengthPenalty`. Default 1. */
  lengthPenalty?: number;
  /** Hugging Face's `early_stopping`: false (the bundles' setting), true or 'never'. Default false. */
  earlyStopping?: boolean | 'never';
  /**
   * Repetition penalty, applied (as Hugging Face does in beam search) to the log-probabilities, over
   * `promptIds` and the beam's generated tokens. Default 1 (off).
   */
  repetitionPenalty?: number;
  /** Ids the repetition penalty also counts. Hugging Face with `inputs_embeds` counts none. Default []. */
  promptIds?: readonly number[];
}

/** What one step decided. */
export interface BeamStep {
  /**
   * For each beam of the next step, the index of the row (of this step's `rows`) it continues: gather the
   * KV cache by these indices.
   */
  parents: number[];
  /** For each beam of the next step, the token it appends: the next decoder input. */
  tokens: number[];
  /** True when the search is over: call `result()` (parents and tokens are then of no use). */
  done: boolean;
}

export class BeamSearch {
  readonly numBeams: number;
  readonly maxNewTokens: number;
  private readonly eos: Set<number>;
  private readonly candidates: number;
  private readonly noRepeatNgramSize: number;
  private readonly lengthPenalty: number;
  private readonly earlyStopping: boolean | 'never';
  private readonly repetitionPenalty: number;
  private readonly promptIds: readonly number[];

  /** Generated tokens of each running beam, best first. */
  private running: number[][];
  private runningScores: Float32Array;
  /** Finished slots: sequences, length-normalised scores, and whether each slot holds a real hypothesis. */
  private finished: number[][];
  private finishedScores: Float32Array;
  private finishedFlags: boolean[];
  /** The early-stop heuristic: false once no running beam can beat the finished ones. */
  private improvable = true;
  private curLen = 0;
  private isDone = false;

  constructor(options: BeamSearchOptions) {
    const k = options.numBeams;
    if (!Number.isInteger(k) || k < 1) throw new RangeError(`numBeams must be an integer >= 1, got ${k}`);
    if (!Number.isInteger(options.maxNewTokens) || options.maxNewTokens < 1) {
      throw new RangeError(`maxNewTokens must be an integer >= 1, got ${options.maxNewTokens}`);
    }
    const eos = typeof options.eosTokenId === 'number' ? [options.eosTokenId] : [...options.eosTokenId];
    this.numBeams = k;
    this.maxNewTokens = options.maxNewTokens;
    this.eos = new Set(eos);
    this.candidates = Math.max(2, 1 + this.eos.size) * k;
    this.noRepeatNgramSize = options.noRepeatNgramSize ?? 0;
    this.lengthPenalty = options.lengthPenalty ?? 1;
    this.earlyStopping = options.earlyStopping ?? false;
    this.repetitionPenalty = options.repetitionPenalty ?? 1;
    this.promptIds = options.promptIds ?? [];

    // Step 1: k beams of the prompt alone; only the first one is live, so the first step does not pick the
    // same continuation k times.
    this.running = Array.from({ length: k }, () => []);
    this.runningScores = new Float32Array(k).fill(NEG);
    this.runningScores[0] = 0;
    this.finished = Array.from({ length: k }, () => []);
    this.finishedScores = new Float32Array(k).fill(NEG);
    this.finishedFlags = new Array<boolean>(k).fill(false);
  }

  /** Whether the search is over. */
  get done(): boolean {
    return this.isDone;
  }

  /** Tokens generated so far by each running beam (best first); before the first step, k empty lists. */
  get beams(): readonly (readonly number[])[] {
    return this.running;
  }

  /**
   * One decoding step.
   * @param rows the last position's logits of each running beam, in the order of the previous step's
   *   `tokens` (all the same length, the vocabulary). The first step may pass a single row, since all beams
   *   hold the same prompt; its `parents` are then all 0.
   */
  step(rows: readonly LogitsRow[]): BeamStep {
    if (this.isDone) throw new Error('BeamSearch.step called after the search finished');
    const k = this.numBeams;
    const shared = rows.length === 1 && this.curLen === 0 && k > 1;
    if (rows.length !== k && !shared) {
      throw new RangeError(`BeamSearch.step expects ${k} logits rows${this.curLen === 0 ? ' (or 1)' : ''}, got ${rows.length}`);
    }
    const vocab = rows[0]!.length;
    if (rows.some((r) => r.length !== vocab) || vocab === 0) {
      throw new RangeError('BeamSearch.step: every logits row must have the same, non-zero length');
    }

    // Step 2: per beam, float32 log-softmax, processors, plus the beam's score.
    const total = new Float32Array(k * vocab);
    for (let b = 0; b < k; b++) {
      const logp = Float32Array.from(rows[shared ? 0 : b]!);
      logSoftmax(logp);
      if (this.repetitionPenalty !== 1) {
        applyRepetitionPenalty(logp, [...this.promptIds, ...this.running[b]!], this.repetitionPenalty);
      }
      banNgramRepeats(logp, this.running[b]!, this.noRepeatNgramSize);
      const score = this.runningScores[b]!;
      const offset = b * vocab;
      for (let t = 0; t < vocab; t++) total[offset + t] = logp[t]! + score; // float32 sum
    }

    // Step 3: the best 2k candidates; a candidate stops on eos or at the last step.
    const n = this.candidates;
    const cand = topIndices(total, n);
    const candScores = cand.map((i) => total[i]!);
    const candParents = cand.map((i) => Math.floor(i / vocab));
    const candTokens = cand.map((i) => i % vocab);
    const lastStep = this.curLen + 1 >= this.maxNewTokens;
    const hits = candTokens.map((t) => this.eos.has(t) || lastStep);

    // Step 4: the next running beams, the best k candidates that did not stop (float64 adjustment).
    const adjusted = candScores.map((s, i) => s + (hits[i] ? NEG : 0));
    const keep = topIndices(adjusted, k);

    // Step 5: stopping candidates among the first k become finished hypotheses (length-normalised);
    // merge with the finished slots and keep the best k.
    const lp = this.lengthPenalty;
    const denominator = Math.fround((this.curLen + 1) ** lp);
    const full = this.finishedFlags.every(Boolean);
    const acceptOpen = this.improvable && !(this.earlyStopping === true && full);
    const mergedScores = new Float32Array(k + n);
    mergedScores.set(this.finishedScores);
    const mergedFlags = [...this.finishedFlags];
    for (let i = 0; i < n; i++) {
      const accept = hits[i]! && i < k && acceptOpen;
      const normalised = Math.fround(candScores[i]! / denominator);
      mergedScores[k + i] = normalised + (accept ? 0 : NEG);
      mergedFlags.push(accept);
    }
    const best = topIndices(mergedScores, k);
    const nextFinished = best.map((j) =>
      j < k ? this.finished[j]! : [...this.running[candParents[j - k]!]!, candTokens[j - k]!],
    );
    this.finishedScores = Float32Array.from(best, (j) => mergedScores[j]!);
    this.finishedFlags = best.map((j) => mergedFlags[j]!);
    this.finished = nextFinished;

    const parents = keep.map((i) => candParents[i]!);
    const tokens = keep.map((i) => candTokens[i]!);
    this.running = keep.map((i) => [...this.running[candParents[i]!]!, candTokens[i]!]);
    this.runningScores = Float32Array.from(keep, (i) => adjusted[i]!);
    this.curLen += 1;

    // Step 6: the early-stop heuristic, then the stop decision.
    const allFinished = this.finishedFlags.every(Boolean);
    const worst = allFinished ? Math.min(...this.finishedScores) : NEG;
    const hypotheticalLength = this.earlyStopping === 'never' && lp > 0 ? this.maxNewTokens : this.curLen;
    const bestPossible = Math.fround(this.runningScores[0]! / Math.fround(hypotheticalLength ** lp));
    this.improvable = this.improvable && bestPossible > worst;
    this.isDone = !this.improvable || hits.every(Boolean) || (this.earlyStopping === true && allFinished);

    return { parents: shared ? parents.map(() => 0) : parents, tokens, done: this.isDone };
  }

  /**
   * Step 7: the best finished sequence (its eos included when it ended with one). Called before the search
   * is done (e.g. cancelled), it falls back to the best running beam when nothing has finished yet.
   */
  result(): number[] {
    const finished = this.isDone || this.finishedFlags[0];
    return [...(finished ? this.finished[0]! : this.running[0]!)];
  }

  /** The length-normalised score of `result()` when it is a finished sequence, else undefined. */
  get score(): number | undefined {
    return this.finishedFlags[0] ? this.finishedScores[0] : undefined;
  }
}

/**
 * Indices of the `count` largest values, largest first; equal values keep index order (lower first), NaN
 * ranks below everything, as `np.argsort(-values, kind='stable')[:count]`.
 */
export function topIndices(values: ArrayLike<number>, count: number): number[] {
  const top: number[] = [];
  const above = (a: number, b: number) => a > b || (Number.isNaN(b) && !Number.isNaN(a));
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (top.length === count && !above(v, values[top[count - 1]!]!)) continue;
    let pos = top.length;
    while (pos > 0 && above(v, values[top[pos - 1]!]!)) pos--;
    top.splice(pos, 0, i);
    if (top.length > count) top.pop();
  }
  return top;
}
