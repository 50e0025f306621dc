"""A small random Llama GGUF written with the `gguf` package, laid out as llama.cpp's converter writes SmolLM2:
Q4_1 layer matrices, Q8_0 token embedding (tied output head), F32 norms, Q/K rows permuted, GQA (4 query / 2
key-value heads), byte-level BPE with ChatML control tokens and `smollm` pre-tokenizer, a ChatML chat template.
Shared by tests/test_gguf_import.py and tests/test_gguf_onnx.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import gguf  # pinned in pyproject.toml; missing = an install failure, never a skip
from gguf import GGMLQuantizationType as Q
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

HIDDEN, FF, LAYERS, HEADS, KV_HEADS, HEAD_DIM = 64, 128, 2, 4, 2, 16
ROPE_BASE, EPS, CONTEXT = 50000.0, 1e-5, 256
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a test bot<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TRAINING_TEXT = [
    "Hello world! How are you today? I'm fine, thanks. We'll see what they've done.",
    "Café crème naïve façade Zürich São Paulo Ångström the quick brown fox jumps over the lazy dog",
    "def square(x):\n    return x ** 2  # comment\n\tif (a && b) { c[i] = 0; }",
    "日本語 中文 한국어 😀 🎉 ❤️ numbers 0123456789 3.14 2024-12-04",
    "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\nhi there<|im_end|>\n",
] * 4


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf's Q/K permutation (Hugging Face rows -> GGUF rows), written independently
    of the importer's inverse."""
    rows, cols = w.shape
    return w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def train_vocab(extra_merges: list[tuple[str, str]] = ()) -> tuple[list[str], list[str]]:
    """A tiny byte-level BPE (specials first), trained with numerals isolated as llama.cpp's smollm rule does."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(TRAINING_TEXT, trainer)
    model = json.loads(tok.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    for a, b in extra_merges:
        tokens.append(a + b)
        merges.append(f"{a} {b}")
    return tokens, merges


def hf_weights(vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights in Hugging Face layout, GGUF tensor names."""
    rng = np.random.default_rng(seed)
    mat = lambda rows, cols, s=0.15: (rng.standard_normal((rows, cols)) * s).astype(np.float32)  # noqa: E731
    norm = lambda: (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)  # noqa: E731
    w = {"token_embd.weight": mat(vocab, HIDDEN, 0.5), "output_norm.weight": norm()}
    for i in range(LAYERS):
        w[f"blk.{i}.attn_norm.weight"] = norm()
        w[f"blk.{i}.ffn_norm.weight"] = norm()
        w[f"blk.{i}.attn_q.weight"] = mat(HEADS * HEAD_DIM, HIDDEN)
        w[f"blk.{i}.attn_k.weight"] = mat(KV_HEADS * HEAD_DIM, HIDDEN)
        w[f"blk.{i}.attn_v.weight"] = mat(KV_HEADS * HEAD_DIM, HIDDEN)
        w[f"blk.{i}.attn_output.weight"] = mat(HIDDEN, HEADS * HEAD_DIM)
        w[f"blk.{i}.ffn_gate.weight"] = mat(FF, HIDDEN)
        w[f"blk.{i}.ffn_up.weight"] = mat(FF, HIDDEN)
        w[f"blk.{i}.ffn_down.weight"] = mat(HIDDEN, FF)
    return w


def write_gguf(path: Path, weights: dict[str, np.ndarray], tokens: list[str], merges: list[str], pre: str = "smollm") -> None:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny test llama")
    writer.add_license("apache-2.0")
    writer.add_block_count(LAYERS)
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FF)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(ROPE_BASE)
    writer.add_layer_norm_rms_eps(EPS)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)
    for name, w in weights.items():
        if w.ndim == 1:
            writer.add_tensor(name, w)
            continue
        qtype = Q.Q8_0 if name == "token_embd.weight" else Q.Q4_1
        if name.endswith("attn_q.weight"):
            w = permute_qk(w, HEADS)
        elif name.endswith("attn_k.weight"):
            w = permute_qk(w, KV_HEADS)
        writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
