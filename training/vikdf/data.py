"""Prompts, dialogue formatting, masking and label construction (spec 2.4, 3.1 to 3.3).

The same `DialogueFormatter` builds training batches, evaluation inputs and the golden files, and its
rules are the ones docs/bundle-format.md prescribes for runtimes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
import torch
from tokenizers import Tokenizer

I2T_PROMPTS = [
    "A short image caption:",
    "A short image description:",
    "An image that shows",
    "Write a short description for the image.",
    "Write a description for the photo.",
    "Provide a description of what is presented in the photo.",
    "Briefly describe the content of the image.",
    "Can you briefly explain what you see in the image?",
    "Could you use a few words to describe what you perceive in the photo?",
    "Please provide a short depiction of the picture.",
    "Use a few words to illustrate what is happening in the picture.",
]
T2I_PROMPTS = [
    "Draw an image based on this description:",
    "Create an image that reflects the following description:",
    "Generate a picture that matches this text:",
    "Illustrate the following scene:",
    "Construct a visual interpretation of the following text:",
    "Design an image according to this description:",
    "Can you visually represent the text below?",
    "Please generate an image that embodies the following narrative:",
    "Produce a visual representation of the following description:",
    "Depict the text in a picture:",
    "Render an image following the provided textual cue:",
]

KNOWLEDGE_PLACEHOLDER = "<|knowledge|>"
# The official Llama-2-chat dialogue template (spec 2.4) with the knowledge right after the first [INST].
LLAMA2_CHAT_TEMPLATE = (
    "[INST]" + KNOWLEDGE_PLACEHOLDER + "{% for m in messages %}{% if m.role == 'user' %}"
    "{% if m.content %} {{ m.content }}{% endif %} [/INST]"
    "{% else %} {{ m.content }} </s><s> [INST]{% endif %}{% endfor %}"
)
# The official pre-training splice point: "<s> Image:" is 3 Llama-2 tokens (spec 2.4, quirk 7.4).
I2T_PRETRAINING_PREFIX = "Image:"


# ---------------------------------------------------------------------------------------------------
# Masks (spec 3.3)
# ---------------------------------------------------------------------------------------------------
class MaskGenerator:
    """SimMIM-style block mask: ceil(ratio * blocks) random blocks of `mask_patch_size` pixels, upsampled to
    the model's patch grid and flattened (1 = masked). Official: 224 px, 28-px blocks, 14-px patches, 0.6."""

    def __init__(self, input_size=224, mask_patch_size=28, model_patch_size=14, mask_ratio=0.6, rng=None):
        if input_size % mask_patch_size:
            raise ValueError("input size must be divisible by the mask patch size")
        if mask_patch_size % model_patch_size:
            raise ValueError("mask patch size must be divisible by the model patch size")
        self.rand_size = input_size // mask_patch_size
        self.scale = mask_patch_size // model_patch_size
        self.token_count = self.rand_size**2
        self.mask_count = int(np.ceil(self.token_count * mask_ratio))
        self.rng = rng if rng is not None else np.random

    def __call__(self) -> torch.Tensor:
        mask = np.zeros(self.token_count, dtype=int)
        mask[self.rng.permutation(self.token_count)[: self.mask_count]] = 1
        mask = mask.reshape(self.rand_size, self.rand_size).repeat(self.scale, axis=0).repeat(self.scale, axis=1)
        return torch.tensor(mask.flatten())


def select_text_for_masking(input_ids: torch.Tensor, special_ids: set[int], probability=0.15, generator=None):
    """Bernoulli(`probability`) per token, never a special token. Returns (masked_indices, labels) where
    labels are -100 outside the selection (collate_fn of train.py)."""
    prob = torch.full(input_ids.shape, probability)
    special = torch.tensor([[int(t) in special_ids for t in row] for row in input_ids.tolist()], dtype=torch.bool)
    prob.masked_fill_(special, 0.0)
    selected = torch.bernoulli(prob, generator=generator).bool()
    labels = input_ids.clone()
    labels[~selected] = -100
    return selected, labels


# ---------------------------------------------------------------------------------------------------
# Label construction (spec 3.1, 3.3)
# ---------------------------------------------------------------------------------------------------
def concat_text_input_output(input_ids, input_atts, output_ids, output_atts):
    """LAVIS-style concatenation: per row, the prompt's real tokens, the output without its first token
    (the tokenizer's <s>), then the prompt's padding. Returns (ids, mask, prompt lengths)."""
    ids, masks, lengths = [], [], []
    for i in range(input_ids.shape[0]):
        n = int(input_atts[i].sum())
        lengths.append(n)
        ids.append(torch.cat([input_ids[i, :n], output_ids[i, 1:], input_ids[i, n:]]))
        masks.append(torch.cat([input_atts[i, :n], output_atts[i, 1:], input_atts[i, n:]]))
    return torch.stack(ids), torch.stack(masks), lengths


def pretraining_labels(ids, prompt_lengths, pad_id):
    """Every pad (= eos) and the prompt -> -100: the caption's final </s> is never a target (quirk 7.6)."""
    labels = ids.masked_fill(ids == pad_id, -100)
    for i, n in enumerate(prompt_lengths):
        labels[i, :n] = -100
    return labels


def dialogue_labels(ids, prompt_lengths, pad_id, rule: str = "official"):
    """Response tokens are targets, the prompt is not.

    `official`: eos/pad ids are masked from their third occurrence in the row on (cumsum > 2), which keeps
    the response's </s> as a target when the prompt holds exactly one </s> (the 2- and 3-turn templates).
    `response_eos`: the first eos after the prompt is kept and every later one masked, whatever the prompt.
    """
    is_pad = ids == pad_id
    if rule == "official":
        drop = is_pad & (torch.cumsum(is_pad.long(), dim=1) > 2)
    elif rule == "response_eos":
        drop = torch.zeros_like(is_pad)
        for i, n in enumerate(prompt_lengths):
            after = is_pad[i, n:]
            seen = torch.cumsum(after.long(), dim=0)
            drop[i, n:] = after & (seen > 1)
    else:
        raise ValueError(f"unknown label rule {rule!r}")
    labels = ids.masked_fill(drop, -100)
    for i, n in enumerate(prompt_lengths):
        labels[i, :n] = -100
    return labels


# ---------------------------------------------------------------------------------------------------
# Tokenizers and dialogue formatting
# ---------------------------------------------------------------------------------------------------
def load_tokenizer(path: str | Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))


def encode(tokenizer: Tokenizer, text: str, max_length: int | None, add_special_tokens=True) -> list[int]:
    """Right truncation that keeps the tokenizer's special tokens (as HF tokenizers truncate)."""
    enc = tokenizer.encode(text, add_special_tokens=False)
    if max_length is not None:
        n_special = tokenizer.num_special_tokens_to_add(False) if add_special_tokens else 0
        enc.truncate(max(max_length - n_special, 0))
    if add_special_tokens:
        enc = tokenizer.post_process(enc, add_special_tokens=True)
    return enc.ids


def dialogue_messages(turns: list[str]) -> list[dict]:
    """Roles from the last turn backwards (last = user); an empty user turn first if needed (spec 2.4)."""
    turns = [t.strip() for t in turns]
    if len(turns) % 2 == 0:
        turns = [""] + turns
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


@dataclass
class TokenSettings:
    """Special token ids of a model (the manifest's `tokens`)."""

    llm_bos_token_id: int = 1
    llm_eos_token_id: int = 2
    llm_pad_token_id: int = 2  # official: pad := eos on the Llama tokenizer
    text_pad_token_id: int = 49407
    replace_generated: dict = field(default_factory=lambda: {"0": 2})


@dataclass
class PromptSettings:
    chat_template: str = LLAMA2_CHAT_TEMPLATE
    knowledge_placeholder: str = KNOWLEDGE_PLACEHOLDER
    turn_separator: str = "[SEP]"
    text_max_length: int = 77
    prompt_max_length: int = 128
    response_max_length: int = 32

    @classmethod
    def from_manifest(cls, manifest: dict) -> "PromptSettings":
        return cls(
            chat_template=manifest["prompt"]["chat_template"],
            knowledge_placeholder=manifest["prompt"]["knowledge_placeholder"],
            turn_separator=manifest["text_encoder_input"]["turn_separator"],
            text_max_length=manifest["text_encoder_input"]["max_length"],
            prompt_max_length=manifest["prompt"]["max_length"],
        )


@dataclass
class DialogueInputs:
    text_ids: list[int]  # text-encoder ids of the joined context
    prompt_ids: list[int]  # LLM ids of the rendered prompt (knowledge placeholder removed)
    splice_at: int  # knowledge vectors go after this many prompt tokens


class DialogueFormatter:
    """Turns a dialogue context into text-encoder ids, prompt ids and the splice index (bundle-format steps 2-5)."""

    def __init__(self, text_tokenizer: Tokenizer, llm_tokenizer: Tokenizer, settings: PromptSettings | None = None):
        self.text_tokenizer = text_tokenizer
        self.llm_tokenizer = llm_tokenizer
        self.settings = settings or PromptSettings()
        self._template = jinja2.Environment(autoescape=False).from_string(self.settings.chat_template)

    def render(self, turns: list[str]) -> tuple[str, str]:
        """Returns (prefix before the placeholder, full text without the placeholder)."""
        text = self._template.render(messages=dialogue_messages(turns))
        placeholder = self.settings.knowledge_placeholder
        if placeholder not in text:
            raise ValueError(f"chat template does not render the knowledge placeholder {placeholder!r}")
        prefix, _, suffix = text.partition(placeholder)
        return prefix, prefix + suffix

    def __call__(self, turns: list[str], knowledge_turns: list[str] | None = None) -> DialogueInputs:
        """`knowledge_turns` (default: `turns`) is what the text encoder reads; an ablation can blank it."""
        s = self.settings
        source = turns if knowledge_turns is None else knowledge_turns
        text_ids = encode(self.text_tokenizer, s.turn_separator.join(t.strip() for t in source), s.text_max_length)
        prefix, full = self.render(turns)
        prompt_ids = encode(self.llm_tokenizer, full, s.prompt_max_length)
        # The LLM tokenizer adds special tokens only in front (checked at export), so the prefix's encoding
        # is the first k ids of the full prompt's.
        prefix_ids = encode(self.llm_tokenizer, prefix, None)
        k = len(prefix_ids)
        if prompt_ids[:k] != prefix_ids[: len(prompt_ids)]:
            raise ValueError("chat template prefix does not tokenise to a prefix of the full prompt")
        return DialogueInputs(text_ids, prompt_ids, min(k, len(prompt_ids)))


def pad_right(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def pick_prompt(prompts: list[str], rng: random.Random) -> str:
    return prompts[rng.randrange(len(prompts))]
