"""The committed TypeScript fixture: `test/fixtures/tiny-random/` and its golden file.

Rebuilt by `vikdf-train make-fixture test/fixtures/tiny-random --golden test/fixtures/tiny-random.golden.json`;
tests/test_fixture.py checks that the committed files still match what this code and seed produce.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .data import DialogueFormatter, PromptSettings, TokenSettings, load_tokenizer
from .export import write_bundle
from .golden import write_golden
from .tiny import build_tiny_model, save_tokenizers, tiny_config

SEED = 0
# Short limits so the golden cases exercise truncation of both the text-encoder input and the prompt.
SETTINGS = dict(text_max_length=16, prompt_max_length=64, response_max_length=32)
TOKENS = TokenSettings(llm_bos_token_id=1, llm_eos_token_id=2, llm_pad_token_id=2, text_pad_token_id=1,
                       replace_generated={"0": 2})
VARIANTS = ["fp16", "int8"]


def fixture_model():
    return build_tiny_model(tiny_config("llama"), seed=SEED, pretraining=False)


def make_fixture(out_dir: Path, golden_path: Path) -> dict:
    model = fixture_model()
    with tempfile.TemporaryDirectory() as tmp:
        text_tok, llm_tok = save_tokenizers(Path(tmp))
        manifest = write_bundle(model, text_tok, llm_tok, out_dir, PromptSettings(**SETTINGS), TOKENS, "tiny-random",
                                variants=VARIANTS)
    fmt = DialogueFormatter(load_tokenizer(out_dir / "text_tokenizer" / "tokenizer.json"),
                            load_tokenizer(out_dir / "llm_tokenizer" / "tokenizer.json"), PromptSettings(**SETTINGS))
    write_golden(model, fmt, manifest, golden_path)
    return manifest
