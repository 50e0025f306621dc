/**
 * Next-token choice for one sequence (greedy or sampling), with Hugging Face's processor order.
 */

import {
  applyRepetitionPenalty,
  applyTemperature,
  argmax,
  banNgramRepeats,
  minP,
  sample,
  suppressTokens,
  topK,
  topP,
  type LogitsRow,
} from './logits.js';
import type { ResolvedGenerationOptions } from './options.js';
import { Rng, type RandomSource } from './rng.js';

/** The options a `TokenSelector` reads (a `ResolvedGenerationOptions` will do). */
export type TokenSelectorOptions = Partial<
  Pick<
    ResolvedGenerationOptions,
    'doSample' | 'temperature' | 'topK' | 'topP' | 'minP' | 'seed' | 'repetitionPenalty' | 'noRepeatNgramSize'
  >
> & {
  /** Ids that are never chosen (e.g. padding). */
  suppressTokenIds?: readonly number[];
};

/**
 * Chooses the next token of one sequence from its logits row. Hugging Face's order:
 * repetition penalty, no-repeat-n-gram, suppressed tokens, then, when sampling, temperature, top-k, top-p,
 * min-p and a draw; otherwise argmax (ties: the lowest id).
 *
 * Missing options mean "off" here (top-k 0, no penalty), not the library defaults: pass the result of
 * `resolveOptions` to get those.
 */
export class TokenSelector {
  readonly doSample: boolean;
  private readonly temperature: number;
  private readonly topK: number;
  private readonly topP: number;
  private readonly minP: number;
  private readonly repetitionPenalty: number;
  private readonly noRepeatNgramSize: number;
  private readonly suppressTokenIds: readonly number[];
  private readonly rng: RandomSource | undefined;

  /**
   * @param rng the random source for sampling; by default one seeded with `options.seed` (random when
   *   unset). Give each sequence of a batch its own selector and rng.
   */
  constructor(options: TokenSelectorOptions = {}, rng?: RandomSource) {
    this.doSample = options.doSample ?? false;
    this.temperature = options.temperature ?? 1;
    this.topK = options.topK ?? 0;
    this.topP = options.topP ?? 1;
    this.minP = options.minP ?? 0;
    this.repetitionPenalty = options.repetitionPenalty ?? 1;
    this.noRepeatNgramSize = options.noRepeatNgramSize ?? 0;
    this.suppressTokenIds = options.suppressTokenIds ?? [];
    this.rng = this.doSample ? (rng ?? new Rng(options.seed)) : rng;
  }

  /**
   * The next token id. Modifies `row` in place.
   * @param promptIds ids the repetition penalty also counts (not the n-gram rule). Hugging Face with
   *   `inputs_embeds` and no `input_ids` (how this SDK's models are fed) counts none: pass `[]` for parity.
   * @param generatedIds the ids generated so far for this sequence.
   */
  select(row: LogitsRow, promptIds: readonly number[], generatedIds: readonly number[]): number {
    if (this.repetitionPenalty !== 1) {
      applyRepetitionPenalty(row, concat(promptIds, generatedIds), this.repetitionPenalty);
    }
    if (this.noRepeatNgramSize > 0) banNgramRepeats(row, generatedIds, this.noRepeatNgramSize);
    if (this.suppressTokenIds.length > 0) suppressTokens(row, this.suppressTokenIds);
    if (!this.doSample) return argmax(row);
    applyTemperature(row, this.temperature);
    if (this.topK > 0) topK(row, this.topK);
    if (this.topP < 1) topP(row, this.topP);
    if (this.minP > 0) minP(row, this.minP);
    return sample(row, this.rng!);
  }
}

function* concat(a: readonly number[], b: readonly number[]): Iterable<number> {
  yield* a;
  yield* b;
}
