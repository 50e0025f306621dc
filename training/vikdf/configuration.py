"""Configuration of a VIKDF model: which frozen encoders and LLM, the IQ-Former, and the objectives.

Sub-model configurations are the plain dicts of the Hugging Face config classes, so any size from a tiny
test model to the official one (CLIP ViT-L/14, BERT-base-sized IQ-Former, Llama-2-7b-chat) is one JSON file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import BertConfig, CLIPTextConfig, CLIPVisionConfig, GPT2Config, LlamaConfig, ViTConfig

from .iq_former import IQFormerConfig

TEXT_ENCODERS = {"clip": CLIPTextConfig, "bert": BertConfig}
VISION_ENCODERS = {"clip": CLIPVisionConfig, "vit": ViTConfig}
LANGUAGE_MODELS = {"llama": LlamaConfig, "gpt2": GPT2Config}

# The official code replaces masked caption tokens by CLIP's <|endoftext|> (CLIP has no [MASK]).
CLIP_MASK_TOKEN_ID = 49407


@dataclass
class VIKDFConfig:
    text_encoder_type: str = "clip"
    text_encoder: dict = field(default_factory=dict)  # CLIPTextConfig or BertConfig kwargs
    # CLIP's text projection (no bias) is applied to every token; None for encoders without one.
    text_projection_dim: int | None = 768
    vision_encoder_type: str | None = "clip"  # None: no image side (dialogue-only model)
    vision_encoder: dict = field(default_factory=dict)
    visual_projection_dim: int | None = 768
    qformer: dict = field(default_factory=dict)  # IQFormerConfig kwargs
    llm_type: str = "llama"
    llm: dict = field(default_factory=dict)
    num_query_tokens: int = 32
    query_projection_dim: int = 256
    logit_scale_init_value: float = 2.6592
    initializer_range: float = 0.02
    # Probability that a selected patch or token is left unchanged (train.py sets 0.2 on the model).
    unchanged_ratio: float = 0.2
    mask_token_id: int = CLIP_MASK_TOKEN_ID
    # Quirk switches (docs/training.md): official behaviour by default.
    t2i_detach_target: bool = False  # official: the T2I regression target K_T is not detached

    # -- sub-configs as Hugging Face / IQ-Former objects --------------------------------------------
    def text_config(self):
        return _build(TEXT_ENCODERS, self.text_encoder_type, self.text_encoder, "text encoder")

    def vision_config(self):
        if self.vision_encoder_type is None:
            return None
        return _build(VISION_ENCODERS, self.vision_encoder_type, self.vision_encoder, "vision encoder")

    def llm_config(self):
        return _build(LANGUAGE_MODELS, self.llm_type, self.llm, "language model")

    def text_feature_size(self) -> int:
        return self.text_projection_dim or self.text_config().hidden_size

    def image_feature_size(self) -> int | None:
        vision = self.vision_config()
        if vision is None:
            return None
        return self.visual_projection_dim or vision.hidden_size

    def qformer_config(self) -> IQFormerConfig:
        cfg = IQFormerConfig(**self.qformer)
        cfg.encoder_hidden_size = self.text_feature_size()
        return cfg

    def llm_hidden_size(self) -> int:
        llm = self.llm_config()
        return llm.hidden_size if self.llm_type == "llama" else llm.n_embd

    def validate(self) -> None:
        q = self.qformer_config()
        q.validate()
        image = self.image_feature_size()
        if image is not None:
            # The official heads mix text features, image features and K in one TransformerBlock, and the
            # IQ-Former reads both kinds of features with the same cross-attention weights.
            if image != self.text_feature_size():
                raise ValueError(
                    f"image feature size {image} must equal text feature size {self.text_feature_size()} "
                    "(the IQ-Former reads both with one cross-attention)"
                )
            if q.hidden_size != image:
                raise ValueError(
                    f"IQ-Former hidden_size {q.hidden_size} must equal the encoder feature size {image} "
                    "for the masked-modelling heads"
                )
            if q.hidden_size % 4:
                raise ValueError(f"IQ-Former hidden_size {q.hidden_size} must be divisible by 4 (4-head heads)")
            vision = self.vision_config()
            if vision.image_size % vision.patch_size:
                raise ValueError("vision image_size must be divisible by patch_size")
        if self.mask_token_id >= self.text_config().vocab_size and image is not None:
            raise ValueError(
                f"mask_token_id {self.mask_token_id} is outside the text vocabulary "
                f"({self.text_config().vocab_size}); set mask_token_id"
            )

    # -- persistence ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict) -> "VIKDFConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown VIKDF config keys: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "VIKDFConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _build(table: dict, kind: str, kwargs: dict, what: str):
    if kind not in table:
        raise ValueError(f"unsupported {what} type {kind!r}; supported: {', '.join(sorted(table))}")
    return table[kind](**kwargs)
