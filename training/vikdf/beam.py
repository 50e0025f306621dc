"""Beam search bookkeeping for one sequence, in numpy, by the rules of a given transformers version.

The model stays outside: `BeamSearch.step` takes the last logits row of each running beam and says which row
each next beam continues (`parents`: reorder the KV cache by them) and which token it appends (`tokens`: the
next input). `onnx_runner.BundleRunner` drives it over the ONNX decoder, `modeling.VIKDFModel.generate` over the
PyTorch model; the TypeScript core (`packages/core/src/generation/beam.ts`) implements the same two rules.

- `"hf-4.39"` (the default): transformers 4.39.3, which the official VIKDF code pins. `BeamSearchScorer.process`
  walks the step's candidates in rank order: an eos candidate ranked among the first k becomes a finished
  hypothesis (`BeamHypotheses.add`, score `sum_logprobs / cur_len ** length_penalty` as a Python float), the
  first k others run on. `BeamHypotheses.is_done(next_scores.max(), cur_len)` ends the search once k hypotheses
  are held and the worst of them is >= the step's *best candidate, eos ones included*, over
  `cur_len ** length_penalty`. At the last step the running beams join the hypotheses (`finalize`).
- `"hf-5"`: transformers 5 `_beam_search`. A candidate stops on eos or at the last step; `_update_finished_beams`
  merges the stopping ones among the first k into k finished slots (float32);
  `_check_early_stop_heuristic` ends the search once the best *running* beam (eos candidates excluded), over
  `cur_len ** length_penalty`, is not above the worst finished score. Since the best running beam is never
  better than the best candidate, this rule may stop earlier than 4.39, with a shorter answer.

Numbers follow the references' dtypes: float32 log-probabilities and running scores; ties between candidates go
to the lower flat index (beam-major), like `np.argsort(-x, kind='stable')`.
"""

from __future__ import annotations

import numpy as np

NEG = -1.0e9  # Hugging Face's "impossible" beam score
BEAM_STOP_RULES = ("hf-4.39", "hf-5")


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def banned_ngram_tokens(generated: list[int], n: int) -> set[int]:
    """No-repeat-n-gram: tokens that would complete an n-gram already present in `generated`."""
    if n <= 0 or len(generated) + 1 < n:
        return set()
    prefix = tuple(generated[len(generated) - n + 1 :])
    return {generated[i + n - 1] for i in range(len(generated) - n + 1) if tuple(generated[i : i + n - 1]) == prefix}


def topk(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first (stable for ties: lower index first)."""
    return np.argsort(-values, kind="stable")[:k]


class BeamSearch:
    def __init__(self, num_beams: int, max_new_tokens: int, eos_token_id: int | list[int], no_repeat_ngram_size: int = 0,
                 length_penalty: float = 1.0, early_stopping: bool | str = False, stop_rule: str = "hf-4.39"):
        if stop_rule not in BEAM_STOP_RULES:
            raise ValueError(f"stop_rule must be one of {BEAM_STOP_RULES}, got {stop_rule!r}")
        if early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
        if num_beams < 1 or max_new_tokens < 1:
            raise ValueError("num_beams and max_new_tokens must be >= 1")
        self.k, self.max_new, self.ngram, self.lp = num_beams, max_new_tokens, no_repeat_ngram_size, length_penalty
        self.early_stopping, self.stop_rule = early_stopping, stop_rule
        self.eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id)
        self.n_candidates = max(2, 1 + len(self.eos)) * num_beams
        # k beams of the prompt alone; only the first is live, so the first step does not pick one token k times.
        self.running: list[list[int]] = [[] for _ in range(num_beams)]
        self.running_scores = np.array([0.0] + [NEG] * (num_beams - 1), dtype=np.float32)
        self.cur_len = 0
        self.done = False
        # hf-4.39: BeamHypotheses.beams in its list order (which decides ties) and its worst_score.
        self.hyps: list[tuple[float, list[int]]] = []
        self.worst = 1e9
        # hf-5: k finished slots, best first, with float32 scores and whether each holds a real hypothesis.
        self.finished: list[list[int]] = [[] for _ in range(num_beams)]
        self.finished_scores = np.full(num_beams, NEG, dtype=np.float32)
        self.finished_flags = np.zeros(num_beams, dtype=bool)
        self.improvable = True

    def step(self, logits: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """`logits`: k x vocab, one row per running beam. Returns (parents, tokens) of the next running beams."""
        if self.done:
            raise RuntimeError("BeamSearch.step called after the search finished")
        logp = log_softmax(np.asarray(logits, dtype=np.float32))
        for b in range(self.k):
            for t in banned_ngram_tokens(self.running[b], self.ngram):
                logp[b, t] = -np.inf
        total = (logp + self.running_scores[:, None]).reshape(-1)
        vocab = logp.shape[1]
        cand = topk(total, self.n_candidates)
        scores, parents, tokens = total[cand], cand // vocab, cand % vocab
        last = self.cur_len + 1 >= self.max_new
        keep = self._step_439(scores, parents, tokens, last) if self.stop_rule == "hf-4.39" else \
            self._step_5(scores, parents, tokens, last)
        return parents[keep], [int(tokens[i]) for i in keep]

    # -- transformers 4.39.3 --------------------------------------------------------------------------------
    def _add(self, seq: list[int], score: float) -> None:
        """BeamHypotheses.add: keep the k best; once k are held a newcomer must beat the worst."""
        if len(self.hyps) < self.k or score > self.worst:
            self.hyps.append((score, seq))
            if len(self.hyps) > self.k:
                order = sorted((s, i) for i, (s, _) in enumerate(self.hyps))
                del self.hyps[order[0][1]]
                self.worst = order[1][0]
            else:
                self.worst = min(score, self.worst)

    def _step_439(self, scores, parents, tokens, last: bool) -> list[int]:
        k = self.k
        cur_len = self.cur_len + 1  # generated length once this step's token is appended
        keep: list[int] = []
        for rank in range(len(tokens)):
            if int(tokens[rank]) in self.eos:
                if rank < k:
                    self._add(self.running[parents[rank]] + [int(tokens[rank])], float(scores[rank]) / cur_len**self.lp)
            else:
                keep.append(rank)
            if len(keep) == k:
                break
        self.running = [self.running[parents[i]] + [int(tokens[i])] for i in keep]
        self.running_scores = scores[keep].astype(np.float32)
        self.cur_len = cur_len
        done = False
        if len(self.hyps) >= k:
            if self.early_stopping is True:
                done = True
            else:
                length = self.max_new if self.early_stopping == "never" and self.lp > 0 else cur_len
                done = self.worst >= float(scores.max()) / length**self.lp
        if last and not done:  # finalize
            for seq, score in zip(self.running, self.running_scores):
                self._add(seq, float(score) / cur_len**self.lp)
        self.done = done or last
        return keep

    # -- transformers 5 -------------------------------------------------------------------------------------
    def _step_5(self, scores, parents, tokens, last: bool) -> list[int]:
        k, n = self.k, len(tokens)
        hits = np.array([int(t) in self.eos for t in tokens]) | last
        keep = topk(scores + hits * NEG, k)
        normalised = scores / np.float32((self.cur_len + 1) ** self.lp)
        full = bool(self.finished_flags.all())
        accept = hits & (np.arange(n) < k) & self.improvable & (not (self.early_stopping is True and full))
        merged_seqs = self.finished + [self.running[p] + [int(t)] for p, t in zip(parents, tokens)]
        merged_scores = np.concatenate([self.finished_scores, (normalised + (~accept) * NEG).astype(np.float32)])
        merged_flags = np.concatenate([self.finished_flags, accept])
        best = topk(merged_scores, k)
        self.finished = [merged_seqs[i] for i in best]
        self.finished_scores, self.finished_flags = merged_scores[best], merged_flags[best]

        self.running = [self.running[parents[i]] + [int(tokens[i])] for i in keep]
        self.running_scores = (scores + hits * NEG)[keep].astype(np.float32)
        self.cur_len += 1

        all_finished = bool(self.finished_flags.all())
        worst = self.finished_scores.min() if all_finished else NEG
        length = self.max_new if self.early_stopping == "never" and self.lp > 0 else self.cur_len
        best_possible = self.running_scores[0] / np.float32(length**self.lp)
        self.improvable = self.improvable and bool(best_possible > worst)
        self.done = not self.improvable or bool(hits.all()) or (self.early_stopping is True and all_finished)
        return list(keep)

    def result(self) -> list[int]:
        """The best finished sequence (its eos included when it ended with one); before the end, with nothing
        finished yet, the best running beam."""
        if self.stop_rule == "hf-4.39":
            if not self.hyps:
                return list(self.running[0])
            return list(max(reversed(self.hyps), key=lambda h: h[0])[1])  # sorted(...).pop(): last of the best
        return list(self.finished[0] if self.done or self.finished_flags[0] else self.running[0])

    @property
    def score(self) -> float | None:
        """The length-normalised score of `result()` when it is a finished sequence."""
        if self.stop_rule == "hf-4.39":
            return max(reversed(self.hyps), key=lambda h: h[0])[0] if self.hyps else None
        return float(self.finished_scores[0]) if self.finished_flags[0] else None
