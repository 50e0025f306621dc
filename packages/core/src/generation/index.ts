export { BEAM_STOP_RULES, BeamSearch, topIndices } from './beam.js';
export type { BeamSearchOptions, BeamStep, BeamStopRule } from './beam.js';
export {
  applyRepetitionPenalty,
  applyTemperature,
  argmax,
  banNgramRepeats,
  bannedNgramTokens,
  logSoftmax,
  minP,
  sample,
  softmax,
  suppressTokens,
  topK,
  topP,
} from './logits.js';
export type { LogitsRow } from './logits.js';
export { GenerationOptionsError, resolveOptions } from './options.js';
export type { GenerationLimits, GenerationOptions, ResolvedGenerationOptions } from './options.js';
export { Rng } from './rng.js';
export type { RandomSource } from './rng.js';
export { TokenSelector } from './sampler.js';
export type { TokenSelectorOptions } from './sampler.js';
export { StopChecker } from './stopping.js';
export type { StopCheckerOptions, TextCheck } from './stopping.js';
