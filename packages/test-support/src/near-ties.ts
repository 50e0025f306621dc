// Near-ties in reference decodings (docs/reliability.md § Goldens that travel): a step whose two best logits are
// closer than the tie margin may pick the other token on a CPU whose kernels round differently, so a reference's
// ids are compared up to that step and no further.

/** How many leading steps are decided: those before the first margin below `tieMargin` (all of them if none). */
export function decidedSteps(margins: readonly number[], tieMargin: number): number {
  const tie = margins.findIndex((m) => m < tieMargin);
  return tie < 0 ? margins.length : tie;
}

/** The part of `ids` that every correct runtime must reproduce exactly; `complete` when that is all of it. */
export function decidedIds(ids: readonly number[], margins: readonly number[], tieMargin: number): { ids: number[]; complete: boolean } {
  const n = decidedSteps(margins, tieMargin);
  return { ids: ids.slice(0, n), complete: n >= margins.length };
}
