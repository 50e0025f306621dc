// Teacher-forced scoring: the logits the model gives each token of a fixed continuation of a context, one decoder
// step per token, exactly as generation would compute them had it chosen those tokens. Used to check a runtime
// against stored references whatever near-ties the references contain (docs/reliability.md), and to score
// candidate replies (log-probabilities, margins).
import type { Engine } from './engine.js';
import { KvCache } from './kv-cache.js';
import type { DialogueInputs } from './prompt.js';
import { spliceKnowledge } from './splice.js';

export interface TokenScore {
  /** The forced token. */
  id: number;
  /** Its logit at this step. */
  logit: number;
  /** Its log-probability at this step. */
  logprob: number;
  /** The highest logit of the step, and the token that has it (lowest id on ties). */
  best: { id: number; logit: number };
  /** Highest minus second-highest logit: how far the step is from a tie between the two best tokens. */
  margin: number;
}

/**
 * Scores `tokenIds` as the reply to `context` (or to already formatted inputs): entry i describes the step that
 * produced tokenIds[i]. One conversation, unpadded, so the float operations are those of a batch-1 generation.
 */
export async function scoreContinuation(engine: Engine, context: readonly string[] | DialogueInputs, tokenIds: readonly number[]): Promise<TokenScore[]> {
  const inputs = Array.isArray(context) ? engine.formatter.format(context as readonly string[]) : (context as DialogueInputs);
  const { runtime } = engine;
  const hidden = engine.manifest.model.llm_hidden_size;
  const [knowledge] = await runtime.encodeKnowledge([inputs.textIds]);
  const prompt = spliceKnowledge(await runtime.embed(inputs.promptIds), knowledge!, inputs.spliceAt, hidden);
  let { logits, cache } = await runtime.decode(prompt, prompt.length / hidden, KvCache.empty(runtime.kvShape, 1));
  const scores: TokenScore[] = [];
  for (let i = 0; i < tokenIds.length; i++) {
    scores.push(scoreStep(logits[0]!, tokenIds[i]!));
    if (i + 1 < tokenIds.length) ({ logits, cache } = await runtime.decode(await runtime.embed([tokenIds[i]!]), 1, cache));
  }
  return scores;
}

function scoreStep(logits: Float32Array, id: number): TokenScore {
  let best = 0;
  let second = -Infinity;
  for (let j = 1; j < logits.length; j++) {
    if (logits[j]! > logits[best]!) {
      second = logits[best]!;
      best = j;
    } else if (logits[j]! > second) second = logits[j]!;
  }
  let sum = 0;
  for (let j = 0; j < logits.length; j++) sum += Math.exp(logits[j]! - logits[best]!);
  return {
    id,
    logit: logits[id]!,
    logprob: logits[id]! - logits[best]! - Math.log(sum),
    best: { id: best, logit: logits[best]! },
    margin: logits[best]! - second,
  };
}
