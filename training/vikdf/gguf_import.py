"""Import a llama.cpp GGUF Llama (e.g. SmolLM2-135M-Instruct.Q4_1.gguf) as the project's frozen LLM.

`vikdf-train import-gguf GGUF OUT_DIR` writes a Hugging Face-style checkpoint that `LlamaForCausalLM`
loads (`load_frozen_llama`):

    config.json            LlamaConfig from the GGUF metadata (GQA heads, RoPE base, RMSNorm eps, tied head)
    model.safetensors      float32 weights: every tensor dequantised with `gguf.quants.dequantize`, and the
                           Q/K rows put back in Hugging Face order (llama.cpp's converter permutes them)
    tokenizer.json         byte-level BPE from the GGUF's vocabulary and merges (vikdf/gguf_tokenizer.py)
    tokenizer_config.json  special tokens and the chat template (`tokenizer.chat_template`)
    SOURCE.md              the source file, its sha256 and its licence

Only what this importer understands is accepted: the Llama architecture, default RoPE (no scaling, no
`rope_freqs`), no biases; anything else is an ImportError naming it, rather than a model that computes
something else.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .gguf_tokenizer import build_tokenizer, tokenizer_config

# GGUF tensor names (per layer: "blk.{i}.NAME.weight") -> LlamaForCausalLM parameter names.
GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


class GGUFImportError(ValueError):
    """The GGUF is not a model this importer can reproduce exactly."""


@dataclass
class GGUFSource:
    """A parsed GGUF: its metadata fields (plain Python values) and its tensors (the reader's objects)."""

    path: Path
    fields: dict
    tensors: dict

    @classmethod
    def read(cls, path: str | Path) -> "GGUFSource":
        from gguf import GGUFReader

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such GGUF file")
        reader = GGUFReader(path)
        fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
        return cls(path, fields, {t.name: t for t in reader.tensors})

    def get(self, key: str, default=None):
        return self.fields.get(key, default)

    def require(self, key: str):
        if key not in self.fields:
            raise GGUFImportError(f"{self.path.name}: metadata {key!r} is missing")
        return self.fields[key]


def llama_config_dict(src: GGUFSource) -> dict:
    """config.json of the LlamaForCausalLM that computes what the GGUF computes."""
    arch = src.require("general.architecture")
    if arch != "llama":
        raise GGUFImportError(f"{src.path.name}: architecture {arch!r}; only 'llama' is supported")
    for key in ("llama.rope.scaling.type", "llama.rope.scaling.factor"):
        if key in src.fields and src.fields[key] not in ("none", 0, 1, 1.0):
            raise GGUFImportError(f"{src.path.name}: {key} = {src.fields[key]!r}; only the default RoPE is supported")
    if "rope_freqs.weight" in src.tensors:
        raise GGUFImportError(f"{src.path.name}: has rope_freqs (scaled RoPE); only the default RoPE is supported")
    hidden = int(src.require("llama.embedding_length"))
    heads = int(src.require("llama.attention.head_count"))
    kv_heads = int(src.get("llama.attention.head_count_kv", heads))
    head_dim = int(src.get("llama.attention.key_length", hidden // heads))
    if int(src.get("llama.attention.value_length", head_dim)) != head_dim:
        raise GGUFImportError(f"{src.path.name}: key and value head sizes differ")
    if int(src.get("llama.rope.dimension_count", head_dim)) != head_dim:
        raise GGUFImportError(f"{src.path.name}: partial RoPE (rope.dimension_count != head size) is not supported")
    tokens = src.require("tokenizer.ggml.tokens")
    embd = src.tensors.get("token_embd.weight")
    if embd is None:
        raise GGUFImportError(f"{src.path.name}: no token_embd.weight")
    vocab = int(src.get("llama.vocab_size", len(tokens)))
    if int(embd.shape[1]) != vocab or len(tokens) != vocab:
        raise GGUFImportError(f"{src.path.name}: vocab size {vocab}, {len(tokens)} tokens, embedding rows {int(embd.shape[1])}")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(src.require("llama.feed_forward_length")),
        "num_hidden_layers": int(src.require("llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": int(src.get("llama.context_length", 2048)),
        "rope_theta": _f32(src.get("llama.rope.freq_base", 10000.0)),
        "rms_norm_eps": _f32(src.require("llama.attention.layer_norm_rms_epsilon")),
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": "output.weight" not in src.tensors,
        "torch_dtype": "float32",
    }
    for name, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("padding", "pad_token_id")):
        value = src.get(f"tokenizer.ggml.{name}_token_id")
        if value is not None:
            config[key] = int(value)
    return config


def _f32(value) -> float:
    """A float32 metadata value as the shortest decimal that reads back to it (1e-05, not 9.9999997e-06)."""
    return float(str(np.float32(value)))


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row order. Its converter stores, per head, the rotary pairs (i, i + d/2) of the
    Hugging Face layout as adjacent rows (2i, 2i + 1); this puts each head's even rows first, odd rows second."""
    rows, cols = w.shape
    if rows % (2 * n_head):
        raise GGUFImportError(f"cannot un-permute {rows} rows for {n_head} heads")
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def dequantize(tensor) -> np.ndarray:
    """The float32 matrix of a GGUF tensor, shaped [rows, cols] = reversed GGUF dims (PyTorch's [out, in])."""
    from gguf import quants

    w = quants.dequantize(tensor.data, tensor.tensor_type)
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    return np.ascontiguousarray(w.reshape(shape), dtype=np.float32)


def llama_state_dict(src: GGUFSource, config: dict, unpermute: bool = True) -> dict[str, torch.Tensor]:
    """LlamaForCausalLM weights (float32). `unpermute=False` is for the tests' mutation check only."""
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    state: dict[str, torch.Tensor] = {}
    for name, tensor in src.tensors.items():
        if name in GLOBAL_TENSORS:
            target, kind = GLOBAL_TENSORS[name], None
        else:
            parts = name.split(".")
            if len(parts) != 4 or parts[0] != "blk" or parts[3] != "weight" or parts[2] not in LAYER_TENSORS:
                raise GGUFImportError(f"{src.path.name}: unexpected tensor {name!r}")
            if not 0 <= int(parts[1]) < config["num_hidden_layers"]:
                raise GGUFImportError(f"{src.path.name}: tensor {name!r} beyond block_count")
            target, kind = f"model.layers.{parts[1]}.{LAYER_TENSORS[parts[2]]}.weight", parts[2]
        w = dequantize(tensor)
        if unpermute and kind in heads:
            w = unpermute_qk(w, heads[kind])
        state[target] = torch.from_numpy(w.copy() if not w.flags.writeable else w)
    return state


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_markdown(src: GGUFSource, sha256: str, origin: str | None, licence: str | None, weights: bool = True) -> str:
    licence = licence or src.get("general.license") or "unknown (not in the GGUF metadata)"
    lines = [
        "# Source",
        "",
        f"Imported by `vikdf-train import-gguf` (training/vikdf/gguf_import.py) from `{src.path.name}`.",
        "",
        f"- sha256 of the GGUF: `{sha256}`",
        f"- model: {src.get('general.name', '?')} ({src.get('general.organization', '?')}), "
        f"{src.get('general.size_label', '?')}, file type {src.get('general.file_type', '?')}",
        f"- licence: {licence}",
    ]
    if origin:
        lines.append(f"- obtained from: {origin}")
    lines.append("")
    if weights:
        lines.append("Weights dequantised to float32 with `gguf.quants.dequantize` (Q/K rows un-permuted); tokenizer and")
        lines.append("chat template rebuilt from the GGUF's `tokenizer.*` metadata.")
    else:
        lines.append("Tokenizer only (`--tokenizer-only`, no weights): tokenizer.json and tokenizer_config.json (with the chat")
        lines.append("template) rebuilt from the GGUF's `tokenizer.*` metadata.")
    lines.append("")
    return "\n".join(lines)


def import_gguf(gguf_path: str | Path, out_dir: str | Path, *, origin: str | None = None,
                licence: str | None = None, weights: bool = True) -> Path:
    """Writes the checkpoint described in the module docstring; `weights=False` writes only the tokenizer
    files and SOURCE.md (the committed tokenizer fixture)."""
    from safetensors.torch import save_file

    src = GGUFSource.read(gguf_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = llama_config_dict(src)
    if weights:
        state = llama_state_dict(src, config)
        missing = _expected_names(config) - set(state)
        if missing:
            raise GGUFImportError(f"{src.path.name}: missing tensors for {sorted(missing)[:5]}")
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    build_tokenizer(src).save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(src), indent=2, ensure_ascii=False) + "\n")
    (out / "SOURCE.md").write_text(source_markdown(src, _sha256(src.path), origin, licence, weights))
    return out


def _expected_names(config: dict) -> set[str]:
    names = {"model.embed_tokens.weight", "model.norm.weight"}
    if not config["tie_word_embeddings"]:
        names.add("lm_head.weight")
    for i in range(config["num_hidden_layers"]):
        names |= {f"model.layers.{i}.{v}.weight" for v in LAYER_TENSORS.values()}
    return names


def load_frozen_llama(out_dir: str | Path):
    """The imported LLM as the project uses it: LlamaForCausalLM, float32, eval mode, no gradients."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(out_dir), dtype=torch.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
