"""Goldens that travel: what any runtime must reproduce on a shipped bundle, written by the Python ONNX reference
runner (onnx_runner.py), with what a comparison on another machine needs to tell a bug from float noise.

ONNX Runtime picks other kernels on other CPUs (AVX2, AVX-512, ...), so sums round differently: knowledge vectors
and logits differ in the last bits, and a step whose two best tokens are nearly tied may choose the other one.
So each case stores, besides the ids:
- the knowledge vectors element by element (compared within `tolerances.knowledge_abs`);
- for greedy decoding, per step, the chosen token's logit, the best logit and the top-2 margin: a runtime
  compares its teacher-forced logits within `tolerances.logit_abs` at every step, and its own greedy ids up to
  the first step whose margin is below `tolerances.tie_margin` (2 x logit_abs: past it, no such error can flip
  the choice);
- for beam search, whether the result survived PROBES re-runs with every step's logits perturbed by up to
  `tie_margin`: if one of them decodes other ids, the case has a near-tie and its beam ids are not compared.
The tolerances come from measurement (docs/reliability.md: AVX2 vs AVX-512 kernels, Python vs Node ONNX Runtime).
"""

from __future__ import annotations

import contextlib
import json
import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort

# Measured (docs/reliability.md, "Goldens that travel"): the largest drift seen across AVX-512 (AMD Genoa, Intel
# Emerald Rapids), AVX2 and SSE4 kernels and ONNX Runtime 1.30/1.32 was 3.3e-6 (knowledge) and 3.8e-6 (logits);
# these allow 15-25 times that, and stay far below what a real bug moves (the mutation checks there: >= 1e-2).
TOLERANCES = {"knowledge_abs": 5e-5, "logit_abs": 1e-4,
              # The TypeScript engine's 'fast' precision (int8 activations in int8-weight MatMuls) against this
              # float-activation golden: 0.072 / 0.036 at most on AVX2 and AVX-512 kernels; about 3.5x that.
              "fast_knowledge_abs": 0.25, "fast_logit_abs": 0.15}
PROBES = 16


def _tie_margin() -> float:
    return 2 * TOLERANCES["logit_abs"]


def greedy_trace(runner, turns: list[str], max_new_tokens: int) -> dict:
    """Greedy decoding of one conversation (unpadded, batch 1), recording each step's scores.

    `ids` are the raw model ids (before tokens.replace_generated), so that a runtime can feed them back."""
    eos = runner.tokens["llm_eos_token_id"]
    _, _, embeds, mask = runner.prefill_inputs([turns])
    past = runner.empty_past(1)
    ids, logits, margins = [], [], []
    for _ in range(max_new_tokens):
        out, past = runner.decoder_step(embeds, mask, past)
        row = out[0, -1].astype(np.float64)
        top = np.argsort(-row, kind="stable")[:2]
        ids.append(int(top[0]))
        logits.append(float(row[top[0]]))
        margins.append(float(row[top[0]] - row[top[1]]))
        if ids[-1] == eos:
            break
        embeds = runner.embed([ids[-1]])[None]
        mask = np.concatenate([mask, np.ones((1, 1), np.int64)], axis=1)
    return {"ids": ids, "logits": logits, "margins": margins}


@contextlib.contextmanager
def _perturbed(runner, rng: np.random.Generator, amplitude: float):
    """Adds uniform noise in [-amplitude, amplitude] to every logit the runner's decoder returns."""
    step = runner.decoder_step

    def noisy(embeds, mask, past):
        logits, present = step(embeds, mask, past)
        return logits + rng.uniform(-amplitude, amplitude, logits.shape).astype(np.float32), present

    runner.decoder_step = noisy
    try:
        yield
    finally:
        del runner.decoder_step  # back to the class's method


def beam_is_stable(runner, turns: list[str], ids: list[int], new_tokens: int, seed: int) -> bool:
    rng = np.random.default_rng(seed)
    for _ in range(PROBES):
        with _perturbed(runner, rng, _tie_margin()):
            if runner.beam_search([turns], new_tokens)[0] != ids:
                return False
    return True


def runtime_golden(runner, contexts: list[list[str]], new_tokens: int = 16) -> dict:
    cases = []
    for n, turns in enumerate(contexts):
        inputs, _, _, _ = runner.prefill_inputs([turns])
        x = inputs[0]
        _, knowledge = runner.encode_knowledge([x.text_ids])
        trace = greedy_trace(runner, turns, new_tokens)
        greedy = runner.greedy([turns], new_tokens)[0]
        if runner._replace(trace["ids"]) != greedy:  # the trace must be the runner's own greedy decoding
            raise AssertionError(f"case {n}: traced greedy ids differ from BundleRunner.greedy")
        beam = runner.beam_search([turns], new_tokens)[0]
        cases.append({
            "turns": turns, "text_input_ids": x.text_ids, "prompt_input_ids": x.prompt_ids, "splice_at": x.splice_at,
            "knowledge_embeds": [[round(float(v), 7) for v in vec] for vec in knowledge[0]],
            "greedy": {"ids": greedy, "raw_ids": trace["ids"], "logits": [round(v, 7) for v in trace["logits"]],
                       "margins": [round(v, 7) for v in trace["margins"]]},
            "beam3_no_repeat3": {"ids": beam, "stable": beam_is_stable(runner, turns, beam, new_tokens, seed=n)},
        })
    return {
        "description": "Python ONNX reference runner (training/vikdf/onnx_runner.py) on the bundle beside this file; "
                       "written by training/vikdf/runtime_golden.py, compared as it documents",
        "written_with": {"onnxruntime": ort.__version__, "machine": platform.machine(), "cpu_flags": _simd_flags()},
        "new_tokens": new_tokens,
        "tolerances": {**TOLERANCES, "tie_margin": _tie_margin(), "beam_probes": PROBES},
        "cases": cases,
    }


def _simd_flags() -> list[str]:
    try:
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return sorted(f for f in set(flags) if f in {"avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512vl", "amx_tile"})


def drift(runner, golden: dict) -> dict:
    """This machine's largest differences from a golden (scripts/golden-drift.mjs does the same for Node)."""
    knowledge_abs = logit_abs = margin_abs = 0.0
    same_greedy = 0
    for c in golden["cases"]:
        _, knowledge = runner.encode_knowledge([c["text_input_ids"]])
        knowledge_abs = max(knowledge_abs, float(np.abs(knowledge[0] - np.array(c["knowledge_embeds"])).max()))
        trace = greedy_trace(runner, c["turns"], golden["new_tokens"])
        n = min(len(trace["ids"]), len(c["greedy"]["raw_ids"]))
        logit_abs = max(logit_abs, float(np.abs(np.subtract(trace["logits"][:n], c["greedy"]["logits"][:n])).max()))
        margin_abs = max(margin_abs, float(np.abs(np.subtract(trace["margins"][:n], c["greedy"]["margins"][:n])).max()))
        same_greedy += int(trace["ids"] == c["greedy"]["raw_ids"])
    return {"cases": len(golden["cases"]), "knowledgeAbs": knowledge_abs, "logitAbs": logit_abs, "marginAbs": margin_abs,
            "sameGreedy": same_greedy, "simd": _simd_flags(), "onnxruntime": ort.__version__}


def write_runtime_golden(runner, contexts: list[list[str]], path: Path, new_tokens: int = 16) -> dict:
    golden = runtime_golden(runner, contexts, new_tokens)
    Path(path).write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")
    return golden
