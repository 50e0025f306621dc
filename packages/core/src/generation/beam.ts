/**
 * Beam search for one sequence, exactly as Hugging Face `generate` (and the Python reference
 * `training/vikdf/onnx_runner.py`, `_beam_one`; docs/bundle-format.md, "Decoding"), by one of two rules:
 *
 * - `'hf-4.39'` (the default): transformers 4.39.3, which the official VIKDF code pins. Its
 *   `BeamSearchScorer.process` keeps the first k candidates that are not eos as the running beams, adds the
 *   eos candidates ranked among the first k to the finished hypotheses (score in float64), and stops when k
 *   hypotheses are finished and the worst of them is at least `best candidate of the step / cur_len ** lp`
 *   (`BeamHypotheses.is_done`, with the step's best candidate *whether or not it ended with eos*). At
 *   `max_new_tokens` the running beams join the hypotheses (`finalize`).
 * - `'hf-5'`: transformers 5's vectorised `_beam_search`, which compares the worst finished score against the
 *   best *running* beam (`_check_early_stop_heuristic`), so it may stop a step or more earlier.
 *
 * The model stays outside: each `step` takes one logits row per running beam and says which beam each new
 * beam continues (`parents`, to reorder the KV cache by) and which token it appends (`tokens`, to feed next).
 *
 * Numbers follow the references' dtypes: log-probabilities and running beam scores are float32 (rounded with
 * `Math.fround` or stored in a `Float32Array`). Finished scores are float64 under 'hf-4.39' (Python floats)
 * and float32 under 'hf-5' (a tensor), whose "-1e9 if stopped" adjustments are float64 before being rounded,
 * as numpy promotes them. Candidate ties go to the lower flat index (beam-major), like
 * `np.argsort(-x, kind='stable')`.
 */

import { applyRepetitionPenalty, banNgramRepeats, logSoftmax, type LogitsRow } from './logits.js';

/** Hugging Face's "impossible" score. */
const NEG = -1.0e9;

/** Which transformers version's beam search bookkeeping to follow (see the file comment). */
export type BeamStopRule = 'hf-4.39' | 'hf-5';

/** The rules `BeamStopRule` accepts. */
export const BEAM_STOP_RULES: readonly BeamStopRule[] = ['hf-4.39', 'hf-5'];

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
  /**
   * 'hf-4.39' (default): transformers 4.39.3, as the official VIKDF code decodes; 'hf-5': transformers 5,
   * whose early stop compares against the best running beam only.
   */
  stopRule?: BeamStopRule;
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
  readonly stopRule: BeamStopRule;
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
  /**
   * 'hf-5': k finished slots (sequences, float32 length-normalised scores, whether each slot holds a real
   * hypothesis), best first.
   */
  private finished: number[][];
  private finishedScores: Float32Array;
  private finishedFlags: boolean[];
  /** 'hf-5': the early-stop heuristic, false once no running beam can beat the finished ones. */
  private improvable = true;
  /** 'hf-4.39': `BeamHypotheses`, in its list order (which decides ties), and its `worst_score`. */
  private hypotheses: Hypothesis[] = [];
  private worstScore = 1e9;
  private curLen = 0;
  private isDone = false;

  constructor(options: BeamSearchOptions) {
    const k = options.numBeams;
    if (!Number.isInteger(k) || k < 1) throw new RangeError(`numBeams must be an integer >= 1, got ${k}`);
    if (!Number.isInteger(options.maxNewTokens) || options.maxNewTokens < 1) {
      throw new RangeError(`maxNewTokens must be an integer >= 1, got ${options.maxNewTokens}`);
    }
    const rule = options.stopRule ?? 'hf-4.39';
    if (!BEAM_STOP_RULES.includes(rule)) {
      throw new RangeError(`stopRule must be one of ${BEAM_STOP_RULES.join(', ')}, got ${String(rule)}`);
    }
    const eos = typeof options.eosTokenId === 'number' ? [options.eosTokenId] : [...options.eosTokenId];
    this.numBeams = k;
    this.maxNewTokens = options.maxNewTokens;
    this.stopRule = rule;
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

    // Step 3: the best (1 + number of eos ids, at least 2) * k candidates, best first.
    const cand = topIndices(total, this.candidates);
    const step: Candidates = {
      scores: cand.map((i) => total[i]!),
      parents: cand.map((i) => Math.floor(i / vocab)),
      tokens: cand.map((i) => i % vocab),
      lastStep: this.curLen + 1 >= this.maxNewTokens,
    };
    const keep = this.stopRule === 'hf-4.39' ? this.step439(step) : this.step5(step);

    const parents = keep.map((i) => step.parents[i]!);
    return { parents: shared ? parents.map(() => 0) : parents, tokens: keep.map((i) => step.tokens[i]!), done: this.isDone };
  }

  /**
   * Steps 4-6 as transformers 4.39.3 `BeamSearchScorer.process`, `BeamHypotheses.is_done` and `finalize`;
   * returns the candidates (indices into `c`) that run on.
   */
  private step439(c: Candidates): number[] {
    const k = this.numBeams;
    // Step 4: candidates in rank order; an eos one among the first k becomes a finished hypothesis, the
    // first k others run on (there are always k: each beam gives at most one candidate per eos id).
    const keep: number[] = [];
    const denominator = (this.curLen + 1) ** this.lengthPenalty; // float64, as Python
    for (let i = 0; i < c.tokens.length && keep.length < k; i++) {
      if (this.eos.has(c.tokens[i]!)) {
        if (i < k) this.addHypothesis([...this.running[c.parents[i]!]!, c.tokens[i]!], c.scores[i]! / denominator);
      } else {
        keep.push(i);
      }
    }
    this.running = keep.map((i) => [...this.running[c.parents[i]!]!, c.tokens[i]!]);
    this.runningScores = Float32Array.from(keep, (i) => c.scores[i]!);
    this.curLen += 1;

    // Step 5: done once k hypotheses are finished and the best candidate of the step, eos or not, cannot
    // beat the worst of them ('never' with lp > 0: at the longest length).
    let done = false;
    if (this.hypotheses.length >= k) {
      if (this.earlyStopping === true) done = true;
      else {
        const best = Math.max(...c.scores);
        const lp = this.lengthPenalty;
        const length = this.earlyStopping === 'never' && lp > 0 ? this.maxNewTokens : this.curLen;
        done = this.worstScore >= best / length ** lp;
      }
    }
    // Step 6: at the last step, the running beams join the hypotheses (`finalize`) unless already done.
    if (c.lastStep && !done) {
      this.running.forEach((seq, b) => this.addHypothesis(seq, this.runningScores[b]! / denominator));
    }
    this.isDone = done || c.lastStep;
    return keep;
  }

  /** `BeamHypotheses.add`: keeps the k best; a newcomer must beat the worst once k are held. */
  private addHypothesis(ids: number[], score: number): void {
    const k = this.numBeams;
    if (!(this.hypotheses.length < k || score > this.worstScore)) return;
    this.hypotheses.push({ ids, score });
    if (this.hypotheses.length > k) {
      // Python's sorted((score, index)): the lowest score goes, the earliest added among equals.
      const order = this.hypotheses.map((h, i) => ({ s: h.score, i })).sort((a, b) => a.s - b.s || a.i - b.i);
      this.hypotheses.splice(order[0]!.i, 1);
      this.worstScore = order[1]!.s;
    } else {
      this.worstScore = Math.min(score, this.worstScore);
    }
  }

  /** Steps 4-6 as transformers 5 `_beam_search`; returns the candidates (indices into `c`) that run on. */
  private step5(c: Candidates): number[] {
    const k = this.numBeams;
    const n = c.tokens.length;
    // A candidate stops on eos or at the last step.
    const hits = c.tokens.map((t) => this.eos.has(t) || c.lastStep);

    // Step 4: the next running beams, the best k candidates that did not stop (float64 adjustment).
    const adjusted = c.scores.map((s, i) => s + (hits[i] ? NEG : 0));
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
      const normalised = Math.fround(c.scores[i]! / denominator);
      mergedScores[k + i] = normalised + (accept ? 0 : NEG);
      mergedFlags.push(accept);
    }
    const best = topIndices(mergedScores, k);
    const nextFinished = best.map((j) =>
      j < k ? this.finished[j]! : [...this.running[c.parents[j - k]!]!, c.tokens[j - k]!],
    );
    this.finishedScores = Float32Array.from(best, (j) => mergedScores[j]!);
    this.finishedFlags = best.map((j) => mergedFlags[j]!);
    this.finished = nextFinished;

    this.running = keep.map((i) => [...this.running[c.parents[i]!]!, c.tokens[i]!]);
    this.runningScores = Float32Array.from(keep, (i) => adjusted[i]!);
    this.curLen += 1;

    // Step 6: the early-stop heuristic against the best *running* beam, then the stop decision.
    const allFinished = this.finishedFlags.every(Boolean);
    const worst = allFinished ? Math.min(...this.finishedScores) : NEG;
    const hypotheticalLength = this.earlyStopping === 'never' && lp > 0 ? this.maxNewTokens : this.curLen;
    const bestPossible = Math.fround(this.runningScores[0]! / Math.fround(hypotheticalLength ** lp));
    this.improvable = this.improvable && bestPossible > worst;
    this.isDone = !this.improvable || hits.every(Boolean) || (this.earlyStopping === true && allFinished);
    return keep;
  }

  /** The best finished hypothesis (4.39 `finalize`: the last of the highest-scored ones in list order). */
  private bestHypothesis(): Hypothesis | undefined {
    let best: Hypothesis | undefined;
    for (const h of this.hypotheses) if (best === undefined || h.score >= best.score) best = h;
    return best;
  }

  /**
   * Step 7: the best finished sequence (its eos included when it ended with one). Called before the search
   * is done (e.g. cancelled), it falls back to the best running beam when nothing has finished yet.
   */
  result(): number[] {
    if (this.stopRule === 'hf-4.39') return [...(this.bestHypothesis()?.ids ?? this.running[0]!)];
    const finished = this.isDone || this.finishedFlags[0];
    return [...(finished ? this.finished[0]! : this.running[0]!)];
  }

  /** The length-normalised score of `result()` when it is a finished sequence, else undefined. */
  get score(): number | undefined {
    if (this.stopRule === 'hf-4.39') return this.bestHypothesis()?.score;
    return this.finishedFlags[0] ? this.finishedScores[0] : undefined;
  }
}

/** A finished hypothesis of the 'hf-4.39' rule. */
interface Hypothesis {
  ids: number[];
  /** Sum of log-probabilities / length ** length penalty, in float64. */
  score: number;
}

/** One step's candidates, best first. */
interface Candidates {
  scores: number[];
  parents: number[];
  tokens: number[];
  /** Whether this step reaches `maxNewTokens`. */
  lastStep: boolean;
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
