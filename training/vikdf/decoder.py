"""Export-friendly forward passes of the frozen causal LM with an explicit key-value cache.

Hugging Face models keep their cache in Cache objects that do not trace cleanly to ONNX. These modules run
the same weights with plain tensors in and out, matching the `decoder_model_merged` contract of
docs/bundle-format.md: one graph for the first step (empty past) and for cached steps. tests/test_export.py
checks them against the Hugging Face forward pass.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _additive_mask(attention_mask: torch.Tensor, query_len: int, dtype: torch.dtype) -> torch.Tensor:
    """Causal over absolute positions plus padding: query i of this call sits at past + i."""
    total = attention_mask.shape[1]
    past = total - query_len
    q_pos = torch.arange(query_len, device=attention_mask.device).unsqueeze(1) + past
    k_pos = torch.arange(total, device=attention_mask.device).unsqueeze(0)
    allowed = (k_pos <= q_pos).unsqueeze(0).unsqueeze(0) & attention_mask.bool().unsqueeze(1).unsqueeze(1)
    zero = torch.zeros((), dtype=dtype, device=attention_mask.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def _attend(q, k, v, mask, scale):
    scores = (q @ k.transpose(-1, -2)) * scale + mask
    return scores.softmax(dim=-1) @ v


class LlamaDecoder(nn.Module):
    """LlamaForCausalLM with tensors for the cache (default RoPE only, as Llama-2)."""

    def __init__(self, lm):
        super().__init__()
        cfg = lm.config
        rope = getattr(cfg, "rope_parameters", None) or {}
        rope_type = rope.get("rope_type", "default")
        if rope_type != "default":
            raise ValueError(f"unsupported Llama rope_type {rope_type!r}: only the default RoPE is exported")
        self.lm = lm
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        theta = rope.get("rope_theta", 10000.0)
        inv_freq = 1.0 / (theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @property
    def num_layers(self) -> int:
        return len(self.lm.model.layers)

    def _rope(self, x, cos, sin):
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        b, s, _ = inputs_embeds.shape
        freqs = position_ids.to(torch.float32).unsqueeze(-1) * self.inv_freq
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)
        mask = _additive_mask(attention_mask, s, inputs_embeds.dtype)
        scale = 1.0 / math.sqrt(self.head_dim)
        hidden = inputs_embeds
        presents = []
        for i, layer in enumerate(self.lm.model.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
            k = torch.cat([past[2 * i], k], dim=2)
            v = torch.cat([past[2 * i + 1], v], dim=2)
            presents += [k, v]
            groups = self.num_heads // self.num_kv_heads
            if groups > 1:  # grouped-query attention; with equal head counts this would be a pure copy (Tile)
                k_att, v_att = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
            else:
                k_att, v_att = k, v
            out = _attend(q, k_att, v_att, mask, scale)
            hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(b, s, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        logits = self.lm.lm_head(self.lm.model.norm(hidden))
        return (logits, *presents)


class GPT2Decoder(nn.Module):
    """GPT2LMHeadModel with tensors for the cache; position embeddings are added here."""

    def __init__(self, lm):
        super().__init__()
        cfg = lm.config
        if getattr(cfg, "scale_attn_by_inverse_layer_idx", False) or getattr(cfg, "reorder_and_upcast_attn", False):
            raise ValueError("unsupported GPT-2 attention options (scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn)")
        self.lm = lm
        self.num_heads = cfg.n_head
        self.num_kv_heads = cfg.n_head
        self.head_dim = cfg.n_embd // cfg.n_head
        self.scale = 1.0 / math.sqrt(self.head_dim) if cfg.scale_attn_weights else 1.0

    @property
    def num_layers(self) -> int:
        return len(self.lm.transformer.h)

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        b, s, d = inputs_embeds.shape
        tr = self.lm.transformer
        hidden = inputs_embeds + tr.wpe(position_ids)
        mask = _additive_mask(attention_mask, s, inputs_embeds.dtype)
        presents = []
        for i, block in enumerate(tr.h):
            x = block.ln_1(hidden)
            q, k, v = block.attn.c_attn(x).split(d, dim=2)
            q, k, v = (t.view(b, s, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
            k = torch.cat([past[2 * i], k], dim=2)
            v = torch.cat([past[2 * i + 1], v], dim=2)
            presents += [k, v]
            out = _attend(q, k, v, mask, self.scale)
            hidden = hidden + block.attn.c_proj(out.transpose(1, 2).reshape(b, s, d))
            hidden = hidden + block.mlp(block.ln_2(hidden))
        logits = self.lm.lm_head(tr.ln_f(hidden))
        return (logits, *presents)


def export_decoder(lm, llm_type: str) -> nn.Module:
    if llm_type == "llama":
        return LlamaDecoder(lm)
    if llm_type == "gpt2":
        return GPT2Decoder(lm)
    raise ValueError(f"unsupported language model type {llm_type!r}")


def empty_past(decoder, batch: int, dtype=torch.float32):
    return [torch.zeros(batch, decoder.num_kv_heads, 0, decoder.head_dim, dtype=dtype) for _ in range(2 * decoder.num_layers)]


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """cumsum(mask) - 1, with 1 where the mask is 0 (Hugging Face generate's rule)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)
