"""Convert an official VIKDF checkpoint (the `ZRIGF2ForConditionalGeneration` save_pretrained layout of
github.com/zhangbo-nlp/VIKDF) into a VIKDF model of this package, and from there into a bundle.

Expected directory:
    config.json                       ZRIGF2Config: clip_config, qformer_config, llm_config, num_query_tokens, ...
    model.safetensors                 or model.safetensors.index.json + shards, or pytorch_model.bin
    text_tokenizer/tokenizer.json     CLIP tokenizer (fast)
    llm_tokenizer/tokenizer.json      Llama-2 tokenizer (fast)

Only the dialogue-time parts are kept (CLIP text + projection, queries, IQ-Former, language projection, LLM),
as the official `pretraining=False` model does; the pre-training heads in the file are recognised and dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .configuration import VIKDFConfig
from .data import LLAMA2_CHAT_TEMPLATE, KNOWLEDGE_PLACEHOLDER, PromptSettings, TokenSettings
from .export import write_bundle
from .iq_former import IQFormerConfig
from .modeling import VIKDFModel

# official prefix -> ours
KEY_PREFIXES = {
    "clip_text_model.": "text_encoder.",
    "clip_text_projection.": "text_projection.",
    "query_tokens": "query_tokens",
    "qformer.": "qformer.",
    "language_projection.": "language_projection.",
    "language_model.": "language_model.",
}
# Pre-training-only modules of the official model (its `_keys_to_ignore_on_load_unexpected`).
PRETRAINING_PREFIXES = (
    "clip_vision_model.",
    "clip_visual_projection.",
    "query_text_projection.",
    "query_visual_projection.",
    "logit_scale",
    "visual_tb.",
    "visual_decoder.",
    "text_tb.",
    "text_decoder.",
    "query_llm_projection.",
)
# Buffers that some transformers versions saved and ours recompute.
IGNORED_BUFFERS = ("clip_text_model.embeddings.position_ids", "language_model.model.rotary_emb.inv_freq")
# inference.py's --max_source_length: the LLM prompt limit, and the text encoder's with its positions.
OFFICIAL_MAX_SOURCE_LENGTH = 128


class ConversionError(ValueError):
    pass


def config_from_official(data: dict) -> VIKDFConfig:
    for key in ("clip_config", "qformer_config", "llm_config"):
        if key not in data:
            raise ConversionError(f"config.json: missing {key!r}; is this a ZRIGF2Config (official VIKDF) checkpoint?")
    clip, llm = data["clip_config"], data["llm_config"]
    archs = llm.get("architectures") or ["LlamaForCausalLM"]
    if llm.get("model_type", "llama") != "llama" or archs[0] != "LlamaForCausalLM":
        raise ConversionError(f"config.json: unsupported language model {archs[0]!r} ({llm.get('model_type')}); only Llama is")
    if "text_config" not in clip:
        raise ConversionError("config.json: clip_config has no text_config")
    projection_dim = clip.get("projection_dim", 512)
    q_fields = set(IQFormerConfig.__dataclass_fields__) - {"encoder_hidden_size"}
    qformer = {k: v for k, v in data["qformer_config"].items() if k in q_fields}
    text = {k: v for k, v in clip["text_config"].items() if not k.startswith("_") and k not in ("architectures", "transformers_version", "model_type")}
    llm_kwargs = {k: v for k, v in llm.items() if not k.startswith("_") and k not in ("architectures", "transformers_version", "model_type")}
    return VIKDFConfig(
        text_encoder_type="clip",
        text_encoder=text,
        text_projection_dim=projection_dim,
        vision_encoder_type=None,
        qformer=qformer,
        llm_type="llama",
        llm=llm_kwargs,
        num_query_tokens=data.get("num_query_tokens", 32),
        query_projection_dim=data.get("query_projection_dim", 256),
    )


def read_state_dict(ckpt: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    single, index, bin_file = ckpt / "model.safetensors", ckpt / "model.safetensors.index.json", ckpt / "pytorch_model.bin"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state = {}
        for shard in shards:
            if not (ckpt / shard).is_file():
                raise ConversionError(f"{ckpt / shard}: shard listed in {index.name} is missing")
            state.update(load_file(str(ckpt / shard)))
        return state
    if bin_file.is_file():
        return torch.load(bin_file, map_location="cpu", weights_only=True)
    raise ConversionError(f"{ckpt}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def map_official_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    mapped, unexpected = {}, []
    for key, value in state.items():
        if key.startswith(PRETRAINING_PREFIXES) or key in IGNORED_BUFFERS:
            continue
        for old, new in KEY_PREFIXES.items():
            if key.startswith(old):
                mapped[new + key[len(old) :]] = value
                break
        else:
            unexpected.append(key)
    if unexpected:
        raise ConversionError(f"unexpected keys in the checkpoint: {', '.join(sorted(unexpected)[:20])}"
                              + (f" (+{len(unexpected) - 20} more)" if len(unexpected) > 20 else ""))
    return mapped


def load_official(ckpt: str | Path) -> VIKDFModel:
    ckpt = Path(ckpt)
    config_path = ckpt / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"{config_path}: missing")
    config = config_from_official(json.loads(config_path.read_text()))
    model = VIKDFModel(config, pretraining=False)
    state = map_official_keys(read_state_dict(ckpt))
    own = model.state_dict()
    if config.llm_config().tie_word_embeddings and "language_model.lm_head.weight" not in state:
        state["language_model.lm_head.weight"] = state.get("language_model.model.embed_tokens.weight")
    missing = sorted(k for k in own if k not in state)
    if missing:
        raise ConversionError(f"missing keys in the checkpoint: {', '.join(missing[:20])}"
                              + (f" (+{len(missing) - 20} more)" if len(missing) > 20 else ""))
    extra = sorted(k for k in state if k not in own)
    if extra:
        raise ConversionError(f"keys the configured model does not have: {', '.join(extra[:20])}")
    wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise ConversionError("wrong shapes: " + "; ".join(wrong[:10]))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval()


def convert(ckpt: str | Path, out_dir: str | Path, name: str | None = None, variants: list[str] | None = None) -> dict:
    ckpt = Path(ckpt)
    text_tok, llm_tok = ckpt / "text_tokenizer" / "tokenizer.json", ckpt / "llm_tokenizer" / "tokenizer.json"
    for tok in (text_tok, llm_tok):
        if not tok.is_file():
            raise ConversionError(f"{tok}: missing (save the tokenizer with its fast version so tokenizer.json exists)")
    model = load_official(ckpt)
    llm = model.config.llm_config()
    text_pad = _text_pad_id(text_tok, model.config.text_config().eos_token_id)
    eos = llm.eos_token_id if isinstance(llm.eos_token_id, int) else 2
    tokens = TokenSettings(
        llm_bos_token_id=llm.bos_token_id if llm.bos_token_id is not None else 1,
        llm_eos_token_id=eos,
        llm_pad_token_id=eos,  # the official scripts set pad := eos on the Llama tokenizer
        text_pad_token_id=text_pad,
        replace_generated={"0": 2},  # official generate: id 0 (Llama's pad/unk) -> eos before decoding
    )
    text_max = official_text_max_length(model.config.text_config().max_position_embeddings)
    settings = PromptSettings(chat_template=LLAMA2_CHAT_TEMPLATE, knowledge_placeholder=KNOWLEDGE_PLACEHOLDER,
                              text_max_length=text_max, prompt_max_length=OFFICIAL_MAX_SOURCE_LENGTH)
    return write_bundle(model, text_tok, llm_tok, Path(out_dir), settings, tokens, name or ckpt.name, "convert", variants=variants)


def official_text_max_length(text_positions: int) -> int:
    """The official text-encoder input limit for dialogue: inference.py's `min(max_source_length,
    max_position_embeddings)` with `max_source_length` 128, i.e. 77 for CLIP. (train.py's pre-training caps
    captions the same way with its `max_seq_length`.)"""
    return min(OFFICIAL_MAX_SOURCE_LENGTH, text_positions)


def _text_pad_id(path: Path, fallback: int | None) -> int:
    """CLIP pads with <|endoftext|> (49407); read the tokenizer's padding if it states one."""
    data = json.loads(path.read_text())
    padding = data.get("padding") or {}
    if "pad_id" in padding:
        return int(padding["pad_id"])
    vocab = (data.get("model") or {}).get("vocab") or {}
    if "<|endoftext|>" in vocab:
        return int(vocab["<|endoftext|>"])
    if fallback is None:
        raise ConversionError(f"{path}: cannot tell the text tokenizer's pad id")
    return int(fallback)
