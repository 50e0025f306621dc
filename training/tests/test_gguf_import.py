"""`vikdf-train import-gguf` on a small random Llama GGUF written with the `gguf` package (tests/gguf_fixture.py).

The file is laid out as llama.cpp's converter writes SmolLM2: Q4_1 layer matrices, Q8_0 token embedding (tied
output head), F32 norms, Q/K rows permuted, GQA (4 query / 2 key-value heads), byte-level BPE with ChatML
control tokens and `smollm` pre-tokenizer, a ChatML chat template. References: `gguf.quants` round trips of the
Hugging Face-order weights, and transformers' own GGUF loader (model and tokenizer).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import gguf  # noqa: E402  (pinned in pyproject.toml; missing = an install failure, never a skip)
from gguf import GGMLQuantizationType as Q  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: E402

from vikdf.cli import main as cli_main  # noqa: E402
from vikdf.gguf_import import GGUFSource, import_gguf, llama_state_dict, load_frozen_llama, unpermute_qk  # noqa: E402
from vikdf.gguf_tokenizer import build_tokenizer  # noqa: E402
from vikdf.tokenizer_parity import PARITY_CHATS, PARITY_CORPUS, parity_record, render_chat  # noqa: E402

from gguf_fixture import (  # noqa: E402
    CHATML, CONTEXT, EPS, HEAD_DIM, HEADS, KV_HEADS, LAYERS, ROPE_BASE,
    hf_weights, permute_qk, train_vocab, write_gguf,
)

# Measured: transformers' GGUF loader and the import give bit-identical weights and, on this machine, max
# |Δlogit| 0.0 (the same float32 ops on the same weights; logits up to ~16 in size); 1e-5 leaves room for
# other kernels. Skipping the un-permutation moves later positions' logits by ~18.
LOGIT_TOL = 1e-5


def roundtrip(w: np.ndarray, qtype) -> np.ndarray:
    return gguf.quants.dequantize(gguf.quants.quantize(w, qtype), qtype)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    tokens, merges = train_vocab()
    weights = hf_weights(len(tokens))
    path = root / "tiny.gguf"
    write_gguf(path, weights, tokens, merges)
    out = import_gguf(path, root / "imported")
    reference = AutoModelForCausalLM.from_pretrained(str(root), gguf_file=path.name, dtype=torch.float32).eval()
    return {"path": path, "out": out, "weights": weights, "tokens": tokens, "reference": reference}


def sample_inputs(vocab: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab, (3, 12), generator=gen)


def test_unpermute_inverts_llama_cpp_permutation():
    w = np.arange(96 * 8, dtype=np.float32).reshape(96, 8)
    for heads in (1, 3, 6):
        assert not np.array_equal(permute_qk(w, heads), w)
        assert np.array_equal(unpermute_qk(permute_qk(w, heads), heads), w)


def test_weights_equal_dequantised_hugging_face_order(tiny):
    state = load_frozen_llama(tiny["out"]).state_dict()
    w = tiny["weights"]
    expect = {"model.embed_tokens.weight": roundtrip(w["token_embd.weight"], Q.Q8_0), "model.norm.weight": w["output_norm.weight"]}
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    for i in range(LAYERS):
        expect[f"model.layers.{i}.input_layernorm.weight"] = w[f"blk.{i}.attn_norm.weight"]
        expect[f"model.layers.{i}.post_attention_layernorm.weight"] = w[f"blk.{i}.ffn_norm.weight"]
        for g, h in names.items():
            # Quantisation blocks run along a row, so quantising then permuting rows = permuting then quantising.
            expect[f"model.layers.{i}.{h}.weight"] = roundtrip(w[f"blk.{i}.{g}.weight"], Q.Q4_1)
    for name, value in expect.items():
        assert state[name].dtype == torch.float32
        assert np.array_equal(state[name].numpy(), value), name
    assert torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"])  # tied
    # Q4_1 really did lose information (else the check above would not test dequantisation).
    assert not np.array_equal(expect["model.layers.0.self_attn.q_proj.weight"], w["blk.0.attn_q.weight"])


def test_config_from_metadata(tiny):
    cfg = json.loads((tiny["out"] / "config.json").read_text())
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (HEADS, KV_HEADS, HEAD_DIM)
    assert (cfg["rope_theta"], cfg["rms_norm_eps"], cfg["tie_word_embeddings"]) == (ROPE_BASE, EPS, True)
    assert (cfg["vocab_size"], cfg["num_hidden_layers"], cfg["max_position_embeddings"]) == (len(tiny["tokens"]), LAYERS, CONTEXT)
    model = load_frozen_llama(tiny["out"])
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    source = (tiny["out"] / "SOURCE.md").read_text()
    assert hashlib.sha256(tiny["path"].read_bytes()).hexdigest() in source and "apache-2.0" in source


def test_logits_equal_transformers_gguf_loader(tiny):
    ours = load_frozen_llama(tiny["out"])
    ids = sample_inputs(len(tiny["tokens"]))
    with torch.no_grad():
        a, b = ours(ids).logits, tiny["reference"](ids).logits
    assert a.abs().max() > 0.5  # not a degenerate model
    assert (a - b).abs().max().item() <= LOGIT_TOL


def test_mutation_skipping_unpermute_changes_logits(tiny):
    src = GGUFSource.read(tiny["path"])
    cfg = json.loads((tiny["out"] / "config.json").read_text())
    wrong = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    wrong.load_state_dict(llama_state_dict(src, cfg, unpermute=False), strict=False)
    wrong.tie_weights()
    ids = sample_inputs(len(tiny["tokens"]))
    with torch.no_grad():
        diff = (wrong(ids).logits - tiny["reference"](ids).logits).abs()
    # Position 0 sees no rotation, so only later positions can tell; they must, by far more than the tolerance.
    assert diff[:, 0].max().item() <= LOGIT_TOL
    assert diff[:, 1:].max().item() > 1000 * LOGIT_TOL


def test_tokenizer_ids_equal_transformers_gguf_tokenizer(tiny):
    ours = Tokenizer.from_file(str(tiny["out"] / "tokenizer.json"))
    theirs = AutoTokenizer.from_pretrained(str(tiny["path"].parent), gguf_file=tiny["path"].name)
    template = json.loads((tiny["out"] / "tokenizer_config.json").read_text())["chat_template"]
    texts = PARITY_CORPUS + [render_chat(template, m) for m in PARITY_CHATS]
    for text in texts:
        assert ours.encode(text, add_special_tokens=False).ids == theirs.encode(text, add_special_tokens=False), text
    # The ChatML markers are single control tokens, and the vocabulary really is tiny (words get split).
    marked = ours.encode("<|im_start|>user<|im_end|>", add_special_tokens=False).ids
    assert marked[::len(marked) - 1] == [1, 2]
    # Control tokens are special: decoding can skip them, as transformers' tokenizer does.
    assert ours.decode(marked, skip_special_tokens=True) == theirs.decode(marked, skip_special_tokens=True) == "user"
    assert ours.decode(marked, skip_special_tokens=False) == "<|im_start|>user<|im_end|>"
    assert len(ours.encode(PARITY_CORPUS[1], add_special_tokens=False).ids) > 20


def test_chat_template_renders_chatml(tiny):
    template = json.loads((tiny["out"] / "tokenizer_config.json").read_text())["chat_template"]
    assert template == CHATML
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}]
    expected = ("<|im_start|>system\nYou are a test bot<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert render_chat(template, messages) == expected
    theirs = AutoTokenizer.from_pretrained(str(tiny["path"].parent), gguf_file=tiny["path"].name)
    assert theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
    # The imported directory also loads as a transformers tokenizer with the same ids and template.
    imported = AutoTokenizer.from_pretrained(str(tiny["out"]))
    assert imported.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
    assert imported.encode(expected, add_special_tokens=False) == theirs.encode(expected, add_special_tokens=False)
    assert (imported.bos_token_id, imported.eos_token_id, imported.pad_token_id) == (1, 2, 2)


def test_numerals_split_one_by_one_as_llama_cpp(tmp_path):
    """llama.cpp's smollm rule isolates each numeral even where the vocabulary has a multi-digit token."""
    tokens, merges = train_vocab(extra_merges=[("1", "2")])
    path = tmp_path / "digits.gguf"
    write_gguf(path, hf_weights(len(tokens)), tokens, merges)
    src = GGUFSource.read(path)
    ours = build_tokenizer(src)
    assert ours.encode("x 12", add_special_tokens=False).tokens[-2:] == ["1", "2"]
    src.fields["tokenizer.ggml.pre"] = "gpt-2"  # the same vocabulary without the rule merges them
    assert build_tokenizer(src).encode("x 12", add_special_tokens=False).tokens[-1] == "12"
    src.fields["tokenizer.ggml.pre"] = "qwen2"
    with pytest.raises(ValueError, match="not supported"):
        build_tokenizer(src)


def test_cli_import(tiny, tmp_path, capsys):
    cli_main(["import-gguf", str(tiny["path"]), str(tmp_path / "cli")])
    assert "model.safetensors" in capsys.readouterr().out
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "SOURCE.md"):
        assert (tmp_path / "cli" / name).read_bytes() == (tiny["out"] / name).read_bytes(), name


def test_committed_smollm2_parity_file_is_what_python_writes():
    """The TypeScript parity test reads these ids; they must be what `tokenizers` gives today."""
    fixture = Path(__file__).resolve().parents[2] / "test" / "fixtures" / "smollm2-tokenizer"
    committed = json.loads((fixture / "parity.json").read_text())
    fresh = parity_record(fixture)
    assert committed == fresh
    assert len(committed["texts"]) == len(PARITY_CORPUS) and len(committed["chats"]) == len(PARITY_CHATS)
