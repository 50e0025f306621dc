"""Beam search by the transformers 4.39.3 rule (the official code's) against transformers 4.39.3 itself.

The goldens (test/fixtures/tiny-random.beam-hf-4.39.json) were written by 4.39.3's `generate`, run in its own
environment by `python -m vikdf.beam_golden`: on fake models, and on the tiny fixture's PyTorch model with token
108 as the stop (see that module for why).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vikdf.beam import BeamSearch
from vikdf.beam_golden import DEFAULT_OUT, FIXTURE, GENERATION, contexts
from vikdf.fixture import TOKENS, fixture_model
from vikdf.hf439_worker import fake_logits, fake_table
from vikdf.onnx_runner import BundleRunner

GOLDEN = json.loads(DEFAULT_OUT.read_text())


def _run_fake(case: dict, stop_rule: str) -> BeamSearch:
    table = fake_table(case["vocab"], case["max_new_tokens"], case["table_seed"])
    search = BeamSearch(case["num_beams"], case["max_new_tokens"], case["eos"], case["no_repeat_ngram_size"],
                        case["length_penalty"], case["early_stopping"], stop_rule)
    seqs = [[] for _ in range(case["num_beams"])]
    while True:
        parents, tokens = search.step(np.stack([fake_logits(table, s, case["eos"], case["eos_boost"]) for s in seqs]))
        if search.done:
            return search
        seqs = [seqs[p] + [t] for p, t in zip(parents, tokens)]


def test_golden_written_by_transformers_4_39_3_from_these_contexts():
    assert GOLDEN["written_by"]["transformers"] == "4.39.3"
    assert [c["turns"] for c in GOLDEN["contexts"]] == contexts()
    assert len(GOLDEN["contexts"]) >= 200


def test_numpy_reference_reproduces_4_39_3_on_fake_models():
    differ = 0
    for i, case in enumerate(GOLDEN["fake_cases"]):
        search = _run_fake(case, "hf-4.39")
        assert search.result() == case["ids"], i
        assert search.score == pytest.approx(case["score"], rel=5e-7), i  # 4.39 returns it in float32
        differ += _run_fake(case, "hf-5").result() != case["ids"]
    assert differ > 0  # the cases tell the two rules apart


def test_onnx_reference_runner_reproduces_4_39_3_on_the_fixture():
    runner = BundleRunner(FIXTURE)
    runner.tokens["llm_eos_token_id"] = GOLDEN["stop_token_id"]
    g = GOLDEN["generation"]
    args = (g["max_new_tokens"], g["num_beams"], g["no_repeat_ngram_size"], g["length_penalty"])
    differ = 0
    for i, c in enumerate(GOLDEN["contexts"]):
        assert runner.beam_search([c["turns"]], *args)[0] == c["ids"], i
        if "hf5_ids" in c:
            assert runner.beam_search([c["turns"]], *args, stop_rule="hf-5")[0] == c["hf5_ids"], i
            differ += 1
    assert differ == GOLDEN["contexts_where_hf5_differs"] > 0


@torch.no_grad()
def test_pytorch_generate_follows_4_39_3_batched_and_hf5_on_request():
    """VIKDFModel.generate, one left-padded batch of contexts: the default rule gives the 4.39.3 ids (rows finish
    at different steps and are fed padding), beam_stop_rule="hf-5" gives transformers 5's own."""
    model = fixture_model().eval()
    runner = BundleRunner(FIXTURE)
    fmt = runner.formatter
    rows = [c for c in GOLDEN["contexts"] if "hf5_ids" in c] + GOLDEN["contexts"][:5]
    inputs = [fmt(c["turns"]) for c in rows]
    width = max(len(x.text_ids) for x in inputs)
    text_ids = torch.tensor([x.text_ids + [TOKENS.text_pad_token_id] * (width - len(x.text_ids)) for x in inputs])
    text_mask = torch.tensor([[1] * len(x.text_ids) + [0] * (width - len(x.text_ids)) for x in inputs])
    kw = {k: v for k, v in GENERATION.items() if k != "pad_token_id"}
    args = (text_ids, text_mask, [x.prompt_ids for x in inputs], [x.splice_at for x in inputs], TOKENS.llm_pad_token_id)
    stop = GOLDEN["stop_token_id"]

    def trimmed(out):
        return [[2 if t == 0 else t for t in (r[: r.index(stop) + 1] if stop in r else r)] for r in out.tolist()]

    assert trimmed(model.generate(*args, do_sample=False, **kw)) == [c["ids"] for c in rows]
    assert trimmed(model.generate(*args, do_sample=False, beam_stop_rule="hf-5", **kw)) == \
        [c.get("hf5_ids", c["ids"]) for c in rows]
    with pytest.raises(ValueError, match="beam_stop_rule"):
        model.generate(*args, beam_stop_rule="hf-4", **kw)


def test_beam_search_validates_its_options():
    with pytest.raises(ValueError, match="stop_rule"):
        BeamSearch(2, 4, 1, stop_rule="hf-6")
    with pytest.raises(ValueError, match="early_stopping"):
        BeamSearch(2, 4, 1, early_stopping="sometimes")
    search = BeamSearch(2, 1, 1)
    search.step(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(RuntimeError, match="after the search finished"):
        search.step(np.zeros((2, 4), dtype=np.float32))
