"""The committed TypeScript fixture (test/fixtures/tiny-random) is what the script makes, and the ONNX bundle
reproduces the PyTorch goldens."""

import json
from pathlib import Path

import numpy as np
import pytest

from vikdf.fixture import make_fixture
from vikdf.onnx_runner import BundleRunner

FIXTURES = Path(__file__).resolve().parents[2] / "test" / "fixtures"
BUNDLE = FIXTURES / "tiny-random"
GOLDEN = json.loads((FIXTURES / "tiny-random.golden.json").read_text())


def assert_same(a, b, where="golden"):
    """Equal structure, ids and strings; floats within 1e-5 (CPU kernels differ in the last bits across machines)."""
    if isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(b)), f"{where}: {a} != {b}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_committed_fixture_is_reproducible(tmp_path):
    """Rebuilding from the seed gives byte-identical files and the same golden file."""
    manifest = make_fixture(tmp_path / "tiny-random", tmp_path / "golden.json")
    committed = json.loads((BUNDLE / "manifest.json").read_text())
    assert manifest["files"] == committed["files"]
    assert_same(json.loads((tmp_path / "golden.json").read_text()), GOLDEN)


def test_fixture_is_small():
    size = sum(p.stat().st_size for p in BUNDLE.rglob("*") if p.is_file())
    assert size < 5 * 1024 * 1024


def test_golden_covers_the_required_cases():
    names = {c["name"] for c in GOLDEN["cases"]}
    assert {"one-turn", "three-turns", "empty-context", "longer-than-text-limit", "batch-with-padding"} <= names
    assert sum(len(c["rows"]) for c in GOLDEN["cases"]) >= 6
    long_row = next(c for c in GOLDEN["cases"] if c["name"] == "longer-than-text-limit")["rows"][0]
    assert len(long_row["text_input_ids"]) == 16  # truncated to the manifest's text-encoder limit


@pytest.fixture(scope="module")
def runner():
    return BundleRunner(BUNDLE)


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: c["name"])
def test_onnx_reproduces_golden(runner, case):
    convs = [row["turns"] for row in case["rows"]]
    inputs, knowledge, embeds, mask = runner.prefill_inputs(convs)
    logits, _ = runner.decoder_step(embeds, mask, runner.empty_past(len(convs)))
    greedy = runner.greedy(convs, GOLDEN["new_tokens"])
    beam = runner.beam_search(convs, GOLDEN["new_tokens"])
    for i, row in enumerate(case["rows"]):
        assert inputs[i].text_ids == row["text_input_ids"]
        assert inputs[i].prompt_ids == row["prompt_input_ids"]
        assert inputs[i].splice_at == row["splice_at"]
        assert np.abs(knowledge[i] - np.array(row["knowledge_embeds"])).max() < 1e-4
        assert abs(float(knowledge[i].sum()) - row["knowledge_embeds_checksum"]["sum"]) < 1e-3
        top = np.argsort(-logits[i, -1])[:5]
        assert top.tolist() == row["first_step_top5"]["ids"]
        assert np.abs(logits[i, -1, top] - np.array(row["first_step_top5"]["logits"])).max() < 1e-4
        assert greedy[i] == row["greedy_ids"]
        assert beam[i] == row["beam3_no_repeat3_ids"]
