// The conversation's context window: the most recent whole turns that fit the prompt budget, found with a
// handful of prompt renderings whatever the history's length.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tinyBundle } from '@vikdf/test-support';
import { Engine, Rng, type GenerateRequest } from '../src/index.js';

let engine: Engine;
beforeAll(async () => {
  engine = await Engine.load(tinyBundle, { devices: ['cpu'] });
});
afterAll(async () => {
  await engine.close();
});

/** The reference rule, written the slow and obvious way: drop the oldest turn until the rest fits. */
function expectedWindow(turns: string[], budget: number, maxTurns: number): string[] {
  let start = Math.max(0, turns.length - maxTurns);
  while (start < turns.length - 1 && engine.formatter.countPromptTokens(turns.slice(start)) > budget) start++;
  return turns.slice(start);
}

const words = ['hello', 'the', 'park', 'was', 'sunny', 'and', 'we', 'ate', 'pizza', 'with', 'mushrooms', 'today'];
function randomTurn(rng: Rng): string {
  const n = 1 + Math.floor(rng.next() * 12);
  return Array.from({ length: n }, () => words[Math.floor(rng.next() * words.length)]).join(' ');
}

describe('Conversation context window', () => {
  it('keeps exactly the most recent turns that fit, for histories of every length', async () => {
    const rng = new Rng(7);
    const seen: string[][] = [];
    const generate = engine.generate.bind(engine);
    engine.generate = (request: GenerateRequest) => {
      seen.push([...request.context]);
      return generate({ ...request, options: { maxNewTokens: 1 } });
    };
    try {
      for (let trial = 0; trial < 40; trial++) {
        const history = Array.from({ length: Math.floor(rng.next() * 70) }, () => randomTurn(rng));
        const maxContextTokens = 40 + Math.floor(rng.next() * 60); // the longest single message needs 35
        const conversation = engine.conversation({ history, maxContextTokens });
        const message = randomTurn(rng);
        await conversation.send(message).result;
        const budget = maxContextTokens + engine.manifest.model.num_query_tokens;
        expect(seen.at(-1), `trial ${trial}`).toEqual(expectedWindow([...history, message], budget, 64));
      }
    } finally {
      engine.generate = generate;
    }
  });

  it('renders the prompt a few times per message, not once per dropped turn', async () => {
    const history = Array.from({ length: 64 }, (_, i) => `turn number ${i} about the weather in the park today`);
    const conversation = engine.conversation({ history, maxContextTokens: 30 });
    const count = engine.formatter.countPromptTokens.bind(engine.formatter);
    let renders = 0;
    engine.formatter.countPromptTokens = (...args) => {
      renders++;
      return count(...args);
    };
    try {
      await conversation.send('and tomorrow?', { options: { maxNewTokens: 1 } }).result;
    } finally {
      engine.formatter.countPromptTokens = count;
    }
    // One check of the message alone, then bisection over 64 turns: at most 1 + 1 + log2(64) renderings.
    expect(renders).toBeLessThanOrEqual(8);
  });
});
