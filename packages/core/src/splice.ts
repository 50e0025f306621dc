// Bundle-format step 7: the knowledge vectors go into the prompt's embeddings at `spliceAt`.

/** The prompt embeddings with the knowledge vectors spliced in at `spliceAt` (docs/bundle-format.md). */
export function spliceKnowledge(promptEmbeds: Float32Array, knowledge: Float32Array, spliceAt: number, hidden: number): Float32Array {
  const row = new Float32Array(promptEmbeds.length + knowledge.length);
  row.set(promptEmbeds.subarray(0, spliceAt * hidden), 0);
  row.set(knowledge, spliceAt * hidden);
  row.set(promptEmbeds.subarray(spliceAt * hidden), spliceAt * hidden + knowledge.length);
  return row;
}
