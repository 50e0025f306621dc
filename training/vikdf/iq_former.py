"""The Implicit Query Transformer (IQ-Former).

A BLIP-2-style Q-Former as the official VIKDF code defines it (model/modeling_qformer.py): learned query
vectors go through a LayerNorm, then BERT layers of self-attention over the queries, cross-attention to
the frozen encoder's features on every `cross_attention_frequency`-th layer, and a query feed-forward.
There is no text path and no position embedding. The output is K (batch x n_q x hidden); the pooled
vector is the first query's output.

Module and parameter names follow the official code, so official `qformer.*` weights load unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers.activations import ACT2FN


@dataclass
class IQFormerConfig:
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    cross_attention_frequency: int = 2
    encoder_hidden_size: int = 768  # size of the frozen encoder's features (CLIP projection_dim)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"IQ-Former hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )


class IQFormerAttention(nn.Module):
    """Multi-head attention; keys and values come from the encoder when `is_cross_attention`."""

    def __init__(self, config: IQFormerConfig, is_cross_attention: bool):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        kv_size = config.encoder_hidden_size if is_cross_attention else config.hidden_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(kv_size, config.hidden_size)
        self.value = nn.Linear(kv_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_size).transpose(1, 2)

    def forward(self, hidden, kv, additive_mask=None):
        q, k, v = self._heads(self.query(hidden)), self._heads(self.key(kv)), self._heads(self.value(kv))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size)
        if additive_mask is not None:
            scores = scores + additive_mask
        probs = self.dropout(scores.softmax(dim=-1))
        out = (probs @ v).transpose(1, 2)
        return out.reshape(out.shape[0], out.shape[1], -1)


class IQFormerSelfOutput(nn.Module):
    """Dense + dropout + post-LN residual (BERT's `BertSelfOutput`)."""

    def __init__(self, config: IQFormerConfig, in_size: int | None = None):
        super().__init__()
        self.dense = nn.Linear(in_size or config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class IQFormerAttentionBlock(nn.Module):
    def __init__(self, config: IQFormerConfig, is_cross_attention: bool = False):
        super().__init__()
        self.self = IQFormerAttention(config, is_cross_attention)
        self.output = IQFormerSelfOutput(config)

    def forward(self, hidden, kv, additive_mask=None):
        return self.output(self.self(hidden, kv, additive_mask), hidden)


class IQFormerIntermediate(nn.Module):
    def __init__(self, config: IQFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, hidden):
        return self.act(self.dense(hidden))


class IQFormerLayer(nn.Module):
    def __init__(self, config: IQFormerConfig, layer_idx: int):
        super().__init__()
        self.attention = IQFormerAttentionBlock(config)
        self.has_cross_attention = layer_idx % config.cross_attention_frequency == 0
        if self.has_cross_attention:
            self.crossattention = IQFormerAttentionBlock(config, is_cross_attention=True)
        self.intermediate_query = IQFormerIntermediate(config)
        self.output_query = IQFormerSelfOutput(config, in_size=config.intermediate_size)

    def forward(self, hidden, encoder_hidden, encoder_additive_mask):
        # The queries' self-attention mask is all ones in the official code, so none is applied.
        hidden = self.attention(hidden, hidden)
        if self.has_cross_attention:
            hidden = self.crossattention(hidden, encoder_hidden, encoder_additive_mask)
        return self.output_query(self.intermediate_query(hidden), hidden)


class IQFormerEmbeddings(nn.Module):
    """LayerNorm + dropout on the query vectors: the Q-Former has no token or position embeddings."""

    def __init__(self, config: IQFormerConfig):
        super().__init__()
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, queries):
        return self.dropout(self.LayerNorm(queries))


class IQFormerEncoder(nn.Module):
    def __init__(self, config: IQFormerConfig):
        super().__init__()
        self.layer = nn.ModuleList(IQFormerLayer(config, i) for i in range(config.num_hidden_layers))


class IQFormer(nn.Module):
    def __init__(self, config: IQFormerConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.embeddings = IQFormerEmbeddings(config)
        self.encoder = IQFormerEncoder(config)

    def forward(self, query_embeds, encoder_hidden_states, encoder_attention_mask=None):
        """Returns (K, pooled): K is batch x n_q x hidden, pooled = K[:, 0]."""
        if encoder_attention_mask is None:
            encoder_attention_mask = torch.ones(encoder_hidden_states.shape[:2], device=query_embeds.device)
        # `invert_attention_mask` of the official code: 0 where attended, dtype-min where padded.
        mask = encoder_attention_mask[:, None, None, :].to(query_embeds.dtype)
        additive = (1.0 - mask) * torch.finfo(query_embeds.dtype).min
        hidden = self.embeddings(query_embeds)
        for layer in self.encoder.layer:
            hidden = layer(hidden, encoder_hidden_states, additive)
        return hidden, hidden[:, 0]
