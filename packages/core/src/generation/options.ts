/**
 * Generation options: what a caller may ask for, the bundle's defaults (`manifest.generation`), and their
 * validation.
 */

import type { GenerationDefaults } from '../bundle.js';
import { BEAM_STOP_RULES, type BeamStopRule } from './beam.js';

/** What a caller may set for one generation; every field is optional (the bundle's defaults fill the rest). */
export interface GenerationOptions {
  /** Most tokens to generate (>= 1 integer). Bundle default: `max_new_tokens`. */
  maxNewTokens?: number;
  /** End-of-sequence is impossible before this many tokens (integer, 0 to maxNewTokens). Default 0. */
  minNewTokens?: number;
  /** Sample instead of taking the most likely token. Bundle default: `do_sample`. Not with `numBeams` > 1. */
  doSample?: boolean;
  /** Sampling temperature (> 0). Default 1. */
  temperature?: number;
  /** Sample among the k most likely tokens only (integer >= 0; 0 = off). Default 50, as Hugging Face. */
  topK?: number;
  /** Nucleus sampling: the smallest set of likely tokens with this much probability, in (0, 1]. Default 1 (off). */
  topP?: number;
  /** Drop tokens less likely than `minP` times the most likely one, in [0, 1]. Default 0 (off). */
  minP?: number;
  /** Seed for sampling (safe integer): the same seed, prompt and options give the same text. Default: random. */
  seed?: number;
  /** > 1 discourages repeating tokens, < 1 encourages it (> 0). Default 1 (off). */
  repetitionPenalty?: number;
  /** Never repeat an n-gram of this size in the generated text (integer >= 0; 0 = off). Bundle default. */
  noRepeatNgramSize?: number;
  /** Beam search with this many beams (integer >= 1; 1 = greedy or sampling). Bundle default: `num_beams`. */
  numBeams?: number;
  /** Beam search: finished beams score `logprob / length ** lengthPenalty`. Bundle default: `length_penalty`. */
  lengthPenalty?: number;
  /** Beam search stopping rule, as Hugging Face's `early_stopping`. Bundle default: `early_stopping`. */
  earlyStopping?: boolean | 'never';
  /**
   * Beam search bookkeeping: 'hf-4.39' (default), as transformers 4.39.3, which the official VIKDF code pins
   * (the early stop compares against the best candidate of the step, eos ones included); 'hf-5', as
   * transformers 5 (against the best running beam, so it may stop earlier, with a shorter reply).
   */
  beamStopRule?: BeamStopRule;
  /** Stop when the generated text contains one of these strings (the text is cut before it). Default none. */
  stopStrings?: string[];
  /** Stop after generating one of these ids (as with end-of-sequence). Default none. */
  stopTokenIds?: number[];
}

/** Options with every field decided. */
export interface ResolvedGenerationOptions {
  maxNewTokens: number;
  minNewTokens: number;
  doSample: boolean;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  /** Undefined: no seed asked for (sampling draws a random one). */
  seed: number | undefined;
  repetitionPenalty: number;
  noRepeatNgramSize: number;
  numBeams: number;
  lengthPenalty: number;
  earlyStopping: boolean | 'never';
  beamStopRule: BeamStopRule;
  stopStrings: string[];
  stopTokenIds: number[];
}

/** Upper bounds a host may impose (e.g. a bot that must answer quickly). */
export interface GenerationLimits {
  /** Largest `maxNewTokens` allowed. */
  maxNewTokens?: number;
  /** Largest `numBeams` allowed. */
  maxNumBeams?: number;
}

/** A generation option with a bad value; `option` names it (camelCase, as in `GenerationOptions`). */
export class GenerationOptionsError extends RangeError {
  override name = 'GenerationOptionsError';
  readonly option: string;
  constructor(option: string, message: string) {
    super(message);
    this.option = option;
  }
}

/** Hugging Face's defaults for what a bundle does not set. */
const LIBRARY_DEFAULTS = {
  maxNewTokens: 32,
  minNewTokens: 0,
  doSample: false,
  temperature: 1,
  topK: 50,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  noRepeatNgramSize: 0,
  numBeams: 1,
  lengthPenalty: 1,
  earlyStopping: false as boolean | 'never',
  // Not a Hugging Face option: the rule of the transformers version the official VIKDF code runs.
  beamStopRule: 'hf-4.39' as BeamStopRule,
};

const OPTION_NAMES: readonly (keyof GenerationOptions)[] = [
  'maxNewTokens',
  'minNewTokens',
  'doSample',
  'temperature',
  'topK',
  'topP',
  'minP',
  'seed',
  'repetitionPenalty',
  'noRepeatNgramSize',
  'numBeams',
  'lengthPenalty',
  'earlyStopping',
  'beamStopRule',
  'stopStrings',
  'stopTokenIds',
];

const SNAKE_TO_CAMEL: Record<string, keyof GenerationOptions> = {
  max_new_tokens: 'maxNewTokens',
  min_new_tokens: 'minNewTokens',
  do_sample: 'doSample',
  top_k: 'topK',
  top_p: 'topP',
  min_p: 'minP',
  repetition_penalty: 'repetitionPenalty',
  no_repeat_ngram_size: 'noRepeatNgramSize',
  num_beams: 'numBeams',
  length_penalty: 'lengthPenalty',
  early_stopping: 'earlyStopping',
  beam_stop_rule: 'beamStopRule',
  stop_strings: 'stopStrings',
  stop_token_ids: 'stopTokenIds',
};

/**
 * Merges the bundle's defaults (`manifest.generation`, snake_case), then the caller's overrides (camelCase;
 * `undefined` fields are skipped), then validates everything.
 *
 * @throws GenerationOptionsError naming the first bad option, an unknown override key, a value over `limits`,
 *   or `doSample` with `numBeams` > 1 ('sampling with beams is not supported').
 */
export function resolveOptions(
  defaults?: Partial<GenerationDefaults>,
  overrides?: GenerationOptions,
  limits: GenerationLimits = {},
): ResolvedGenerationOptions {
  const fromBundle: GenerationOptions = {};
  if (defaults) {
    const d = defaults;
    if (d.max_new_tokens !== undefined) fromBundle.maxNewTokens = d.max_new_tokens;
    if (d.do_sample !== undefined) fromBundle.doSample = d.do_sample;
    if (d.no_repeat_ngram_size !== undefined) fromBundle.noRepeatNgramSize = d.no_repeat_ngram_size;
    if (d.num_beams !== undefined) fromBundle.numBeams = d.num_beams;
    if (d.length_penalty !== undefined) fromBundle.lengthPenalty = d.length_penalty;
    if (d.early_stopping !== undefined) fromBundle.earlyStopping = d.early_stopping;
  }
  const given: GenerationOptions = {};
  if (overrides !== undefined) {
    if (overrides === null || typeof overrides !== 'object' || Array.isArray(overrides)) {
      throw new GenerationOptionsError('options', `generation options must be an object, got ${show(overrides)}`);
    }
    for (const [key, value] of Object.entries(overrides)) {
      if (!(OPTION_NAMES as readonly string[]).includes(key)) {
        const hint = SNAKE_TO_CAMEL[key] ? ` (did you mean ${SNAKE_TO_CAMEL[key]}?)` : '';
        throw new GenerationOptionsError(key, `unknown generation option "${key}"${hint}`);
      }
      if (value !== undefined) (given as Record<string, unknown>)[key] = value;
    }
  }
  const pick = <K extends keyof typeof LIBRARY_DEFAULTS>(key: K): unknown =>
    key in given ? given[key] : key in fromBundle ? fromBundle[key] : LIBRARY_DEFAULTS[key];

  const maxNewTokens = integer('maxNewTokens', pick('maxNewTokens'), 1, limits.maxNewTokens);
  const minNewTokens = integer('minNewTokens', pick('minNewTokens'), 0, maxNewTokens);
  const doSample = boolean('doSample', pick('doSample'));
  const temperature = number('temperature', pick('temperature'));
  if (!(temperature > 0)) fail('temperature', `temperature must be > 0, got ${temperature}`);
  const topK = integer('topK', pick('topK'), 0);
  const topP = number('topP', pick('topP'));
  if (!(topP > 0 && topP <= 1)) fail('topP', `topP must be in (0, 1], got ${topP}`);
  const minP = number('minP', pick('minP'));
  if (!(minP >= 0 && minP <= 1)) fail('minP', `minP must be in [0, 1], got ${minP}`);
  const repetitionPenalty = number('repetitionPenalty', pick('repetitionPenalty'));
  if (!(repetitionPenalty > 0)) fail('repetitionPenalty', `repetitionPenalty must be > 0, got ${repetitionPenalty}`);
  const noRepeatNgramSize = integer('noRepeatNgramSize', pick('noRepeatNgramSize'), 0);
  const numBeams = integer('numBeams', pick('numBeams'), 1, limits.maxNumBeams);
  const lengthPenalty = number('lengthPenalty', pick('lengthPenalty'));
  const earlyStopping = pick('earlyStopping');
  if (earlyStopping !== true && earlyStopping !== false && earlyStopping !== 'never') {
    fail('earlyStopping', `earlyStopping must be true, false or "never", got ${show(earlyStopping)}`);
  }
  const beamStopRule = pick('beamStopRule');
  if (!(BEAM_STOP_RULES as readonly unknown[]).includes(beamStopRule)) {
    fail('beamStopRule', `beamStopRule must be ${BEAM_STOP_RULES.map((r) => `"${r}"`).join(' or ')}, got ${show(beamStopRule)}`);
  }

  let seed: number | undefined;
  if (given.seed !== undefined) {
    seed = given.seed;
    if (!Number.isSafeInteger(seed)) fail('seed', `seed must be a safe integer, got ${show(seed)}`);
  }

  const stopStrings = given.stopStrings ?? [];
  if (!Array.isArray(stopStrings) || !stopStrings.every((s) => typeof s === 'string' && s.length > 0)) {
    fail('stopStrings', `stopStrings must be a list of non-empty strings, got ${show(stopStrings)}`);
  }
  const stopTokenIds = given.stopTokenIds ?? [];
  if (!Array.isArray(stopTokenIds) || !stopTokenIds.every((id) => Number.isInteger(id) && id >= 0)) {
    fail('stopTokenIds', `stopTokenIds must be a list of token ids (integers >= 0), got ${show(stopTokenIds)}`);
  }

  if (doSample && numBeams > 1) {
    fail('doSample', `sampling with beams is not supported (doSample is true and numBeams is ${numBeams})`);
  }

  return {
    maxNewTokens,
    minNewTokens,
    doSample,
    temperature,
    topK,
    topP,
    minP,
    seed,
    repetitionPenalty,
    noRepeatNgramSize,
    numBeams,
    lengthPenalty,
    earlyStopping: earlyStopping as boolean | 'never',
    beamStopRule: beamStopRule as BeamStopRule,
    stopStrings: [...stopStrings],
    stopTokenIds: [...stopTokenIds],
  };
}

function fail(option: string, message: string): never {
  throw new GenerationOptionsError(option, message);
}

function number(option: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    fail(option, `${option} must be a finite number, got ${show(value)}`);
  }
  return value;
}

function integer(option: string, value: unknown, min: number, max?: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    fail(option, `${option} must be an integer >= ${min}, got ${show(value)}`);
  }
  if (max !== undefined && value > max) fail(option, `${option} must be <= ${max} (the host's limit), got ${value}`);
  return value;
}

function boolean(option: string, value: unknown): boolean {
  if (typeof value !== 'boolean') fail(option, `${option} must be true or false, got ${show(value)}`);
  return value;
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || value === undefined) return String(value);
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
