"""The VIKDF model: frozen encoders, the IQ-Former, BVIF into a frozen causal LM, and the five objectives.

Behaviour follows the official code (github.com/zhangbo-nlp/VIKDF, model/modeling_zrigf_2.py); section
numbers refer to ../shared/vikdf-spec.md. One joint forward pass computes every objective whose inputs are
present, with the official weights:

    L = 0.5 L_tim + 0.2 L_tmim + 0.2 L_imtm + 1.0 L_i2t + 0.5 L_t2i

At dialogue time only the I2T path runs: the dialogue context goes through the frozen text encoder and the
IQ-Former, and the projected knowledge vectors are spliced into the prompt embeddings after `bias` tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from transformers import (
    BertModel,
    CLIPTextModel,
    CLIPVisionModel,
    GPT2LMHeadModel,
    LlamaForCausalLM,
    ViTModel,
)

from .beam import BEAM_STOP_RULES, BeamSearch
from .configuration import VIKDFConfig
from .decoder import position_ids_from_mask
from .iq_former import IQFormer

LOSS_WEIGHTS = {"tim": 0.5, "tmim": 0.2, "imtm": 0.2, "i2t": 1.0, "t2i": 0.5}

# Modules that exist only for pre-training (spec 2.1); a dialogue-only model does not build them.
PRETRAINING_MODULES = (
    "vision_encoder",
    "visual_projection",
    "query_text_projection",
    "query_visual_projection",
    "logit_scale",
    "visual_tb",
    "visual_decoder",
    "text_tb",
    "text_decoder",
    "query_llm_projection",
)
FROZEN_MODULES = ("text_encoder", "text_projection", "vision_encoder", "visual_projection", "language_model")


class TransformerBlock(nn.Module):
    """Post-LN block of the masked-modelling heads: 4-head attention (Q from the masked input, K=V=knowledge),
    then a 4x ReLU feed-forward."""

    def __init__(self, hidden_size: int, num_heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.multihead_attention = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(nn.Linear(hidden_size, 4 * hidden_size), nn.ReLU(), nn.Linear(4 * hidden_size, hidden_size))
        self.dropout = nn.Dropout(dropout)

    def forward(self, q, k, v):
        attn, _ = self.multihead_attention(q, k, v)
        x = self.norm1(q + self.dropout(attn))
        return self.norm2(x + self.dropout(self.ffn(x)))


@dataclass
class VIKDFOutput:
    loss: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # unweighted, per objective
    logits: torch.Tensor | None = None  # I2T logits, sliced to the label length
    knowledge: torch.Tensor | None = None  # K_T


def _build_text_encoder(config: VIKDFConfig) -> nn.Module:
    cfg = config.text_config()
    if config.text_encoder_type == "clip":
        return CLIPTextModel(cfg)
    return BertModel(cfg, add_pooling_layer=False)


def _build_vision_encoder(config: VIKDFConfig) -> nn.Module:
    cfg = config.vision_config()
    if config.vision_encoder_type == "clip":
        return CLIPVisionModel(cfg)
    return ViTModel(cfg, add_pooling_layer=False)


def _build_language_model(config: VIKDFConfig) -> nn.Module:
    cfg = config.llm_config()
    return LlamaForCausalLM(cfg) if config.llm_type == "llama" else GPT2LMHeadModel(cfg)


class VIKDFModel(nn.Module):
    def __init__(self, config: VIKDFConfig, pretraining: bool = True):
        super().__init__()
        config.validate()
        self.config = config
        self.pretraining = pretraining and config.vision_encoder_type is not None
        q_cfg = config.qformer_config()
        hidden = q_cfg.hidden_size
        text_hidden = config.text_config().hidden_size
        llm_hidden = config.llm_hidden_size()

        self.text_encoder = _build_text_encoder(config)
        self.text_projection = (
            nn.Linear(text_hidden, config.text_projection_dim, bias=False)
            if config.text_projection_dim
            else nn.Identity()
        )
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, hidden))
        self.qformer = IQFormer(q_cfg)
        self.language_projection = nn.Linear(hidden, llm_hidden)
        self.language_model = _build_language_model(config)

        if self.pretraining:
            vision = config.vision_config()
            self.vision_encoder = _build_vision_encoder(config)
            self.visual_projection = (
                nn.Linear(vision.hidden_size, config.visual_projection_dim, bias=False)
                if config.visual_projection_dim
                else nn.Identity()
            )
            self.num_channels = vision.num_channels
            self.patch_size = vision.patch_size
            self.image_size = vision.image_size
            self.query_text_projection = nn.Linear(hidden, config.query_projection_dim)
            self.query_visual_projection = nn.Linear(hidden, config.query_projection_dim)
            self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
            self.visual_tb = TransformerBlock(hidden)
            self.visual_decoder = nn.Sequential(
                nn.Conv2d(hidden, self.patch_size**2 * self.num_channels, kernel_size=1),
                nn.PixelShuffle(self.patch_size),
            )
            self.text_tb = TransformerBlock(hidden)
            self.text_decoder = nn.Linear(hidden, config.text_config().vocab_size)
            self.query_llm_projection = nn.Linear(llm_hidden, hidden)

        self._init_trainable()
        self.freeze()

    # -- set-up ---------------------------------------------------------------------------------------
    def _init_trainable(self) -> None:
        """Official `_init_weights` for the new modules: N(0, 0.02) linear/conv weights, zero biases, unit LN.
        (nn.MultiheadAttention's in-projection is not an nn.Linear and keeps PyTorch's default init there too.)"""
        std = self.config.initializer_range
        nn.init.normal_(self.query_tokens, std=std)
        for name, module in self.named_children():
            if name in FROZEN_MODULES:
                continue
            for m in module.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)):
                    nn.init.normal_(m.weight, std=std)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.LayerNorm):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

    def freeze(self) -> None:
        """Frozen CLIP/encoders and LLM: no gradient (spec 3.4)."""
        for name in FROZEN_MODULES:
            module = getattr(self, name, None)
            if module is not None:
                module.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        # Frozen modules stay in eval mode so their dropout (BERT-style encoders have some) never fires.
        for name in FROZEN_MODULES:
            module = getattr(self, name, None)
            if module is not None:
                module.eval()
        return self

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def llm_base(self) -> nn.Module:
        """The LLM without its LM head (LlamaModel / GPT2Model), used by T2I."""
        return self.language_model.base_model

    # -- encoders -------------------------------------------------------------------------------------
    def text_features(self, input_ids, attention_mask):
        """H_T: the frozen text encoder's last hidden state, projected on every token."""
        hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.text_projection(hidden)

    def image_features(self, pixel_values):
        """H_I: vision last hidden state (CLIP: before post_layernorm, spec 7.12), projected on every token."""
        hidden = self.vision_encoder(pixel_values=pixel_values).last_hidden_state
        return self.visual_projection(hidden)

    def knowledge(self, features, attention_mask=None):
        queries = self.query_tokens.expand(features.shape[0], -1, -1)
        return self.qformer(queries, features, attention_mask)

    def encode_context(self, input_ids, attention_mask):
        """Dialogue context -> (K, P(K)): the knowledge vectors and their projection into the LLM space."""
        k, _ = self.knowledge(self.text_features(input_ids, attention_mask), attention_mask)
        return k, self.language_projection(k)

    def embed_llm(self, input_ids):
        return self.language_model.get_input_embeddings()(input_ids)

    # -- objectives -----------------------------------------------------------------------------------
    def forward(
        self,
        text_input_ids,
        i2t_llm_input_ids,
        labels,
        bias: int = 3,
        text_attention_mask=None,
        i2t_llm_attention_mask=None,
        pixel_values=None,
        bool_masked_pos=None,
        masked_indices=None,
        masked_text_labels=None,
        t2i_llm_input_ids=None,
        t2i_llm_attention_mask=None,
    ) -> VIKDFOutput:
        losses: dict[str, torch.Tensor] = {}
        text_feats = self.text_features(text_input_ids, text_attention_mask)
        k_text, pooled_text = self.knowledge(text_feats, text_attention_mask)

        if pixel_values is not None:
            if not self.pretraining:
                raise ValueError("pixel_values given to a model built without the pre-training heads")
            k_image, pooled_image = self.knowledge(self.image_features(pixel_values))
            losses["tim"] = self._text_image_matching(pooled_text, pooled_image)
            if bool_masked_pos is not None:
                losses["tmim"] = self._masked_image_modelling(pixel_values, bool_masked_pos, k_text)
            if masked_indices is not None:
                losses["imtm"] = self._masked_text_modelling(
                    text_input_ids, text_attention_mask, masked_indices, masked_text_labels, k_image
                )

        projected = self.language_projection(k_text)
        losses["i2t"], logits = self._knowledge_to_text(i2t_llm_input_ids, i2t_llm_attention_mask, labels, projected, bias)
        if t2i_llm_input_ids is not None:
            if not self.pretraining:
                raise ValueError("t2i_llm_input_ids given to a model built without the pre-training heads")
            losses["t2i"] = self._text_to_knowledge(t2i_llm_input_ids, t2i_llm_attention_mask, projected, k_text)

        total = sum(LOSS_WEIGHTS[name] * value for name, value in losses.items())
        return VIKDFOutput(loss=total, losses=losses, logits=logits, knowledge=k_text)

    def _text_image_matching(self, pooled_text, pooled_image):
        """TIM: symmetric InfoNCE between pooled K_T and K_I within the batch (no cross-device gather)."""
        t = F.normalize(self.query_text_projection(pooled_text), dim=-1)
        v = F.normalize(self.query_visual_projection(pooled_image), dim=-1)
        sim = t @ v.t() * self.logit_scale.exp()
        target = torch.arange(sim.shape[0], device=sim.device)
        return (F.cross_entropy(sim, target) + F.cross_entropy(sim.t(), target)) / 2

    def _keep_mask(self, shape, device):
        """Bernoulli(1 - unchanged_ratio): which selected positions are actually masked."""
        return torch.bernoulli(torch.full(shape, 1 - self.config.unchanged_ratio, device=device)).bool()

    def _masked_image_modelling(self, pixel_values, bool_masked_pos, k_text):
        """TMIM: reconstruct the masked patches' pixels from the masked image attending to K_T.
        L1 over all selected pixels (the unchanged ones too), divided by the channel count."""
        size = self.image_size // self.patch_size
        bool_masked_pos = bool_masked_pos.bool()
        masked_rand = self._keep_mask(bool_masked_pos.shape, pixel_values.device) & bool_masked_pos

        def to_pixels(patch_mask):
            grid = patch_mask.reshape(-1, size, size)
            return grid.repeat_interleave(self.patch_size, 1).repeat_interleave(self.patch_size, 2).unsqueeze(1)

        pixel_mask = to_pixels(bool_masked_pos).to(pixel_values.dtype)
        pixel_mask_rand = to_pixels(masked_rand).to(pixel_values.dtype)
        masked_pixels = pixel_values * (1 - pixel_mask_rand)  # masked pixels become 0 after normalisation
        fused = self.visual_tb(self.image_features(masked_pixels), k_text, k_text)[:, 1:]  # drop CLS
        b, n, c = fused.shape
        side = math.floor(n**0.5)
        reconstructed = self.visual_decoder(fused.permute(0, 2, 1).reshape(b, c, side, side))
        l1 = (pixel_values - reconstructed).abs()
        return (l1 * pixel_mask).sum() / (pixel_mask.sum() + 1e-5) / self.num_channels

    def _masked_text_modelling(self, input_ids, attention_mask, masked_indices, masked_text_labels, k_image):
        """IMTM: predict the masked caption tokens from the masked text attending to K_I."""
        replaced = self._keep_mask(masked_text_labels.shape, input_ids.device) & masked_indices.bool()
        masked_ids = input_ids.masked_fill(replaced, self.config.mask_token_id)
        fused = self.text_tb(self.text_features(masked_ids, attention_mask), k_image, k_image)
        scores = self.text_decoder(fused)
        return F.cross_entropy(scores.reshape(-1, scores.shape[-1]), masked_text_labels.reshape(-1))

    def splice(self, llm_input_ids, llm_attention_mask, projected, bias: int):
        """[emb[:bias], P(K), emb[bias:]] and the matching attention mask (spec 2.4)."""
        embeds = self.embed_llm(llm_input_ids)
        if llm_attention_mask is None:
            llm_attention_mask = torch.ones_like(llm_input_ids)
        ones = torch.ones(projected.shape[:2], dtype=llm_attention_mask.dtype, device=projected.device)
        embeds = torch.cat([embeds[:, :bias], projected.to(embeds.dtype), embeds[:, bias:]], dim=1)
        mask = torch.cat([llm_attention_mask[:, :bias], ones, llm_attention_mask[:, bias:]], dim=1)
        return embeds, mask

    def _knowledge_to_text(self, input_ids, attention_mask, labels, projected, bias):
        """I2T (BVIF, knowledge -> text): token-mean CE of the caption/response given P(K_T)."""
        embeds, mask = self.splice(input_ids, attention_mask, projected, bias)
        logits = self.language_model(inputs_embeds=embeds, attention_mask=mask).logits
        logits = logits[:, -labels.shape[1] :, :]
        shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
        loss = F.cross_entropy(shift_logits, labels[:, 1:].reshape(-1), ignore_index=-100)
        return loss, logits

    def _text_to_knowledge(self, input_ids, attention_mask, projected, k_text):
        """T2I (BVIF, text -> knowledge): P(K_T) appended after each row's last real token; the LLM's hidden
        states from the last prompt token on regress K_T (next-vector prediction, MSE)."""
        embeds = self.embed_llm(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        n_q = projected.shape[1]
        ones = torch.ones(n_q, dtype=attention_mask.dtype, device=attention_mask.device)
        counts = attention_mask.sum(dim=1).tolist()
        rows = [torch.cat([embeds[i, :c], projected[i].to(embeds.dtype), embeds[i, c:]]) for i, c in enumerate(counts)]
        masks = [torch.cat([attention_mask[i, :c], ones, attention_mask[i, c:]]) for i, c in enumerate(counts)]
        hidden = self.llm_base(inputs_embeds=torch.stack(rows), attention_mask=torch.stack(masks)).last_hidden_state
        states = torch.stack([hidden[i, c - 1 : c - 1 + n_q] for i, c in enumerate(counts)])
        target = k_text.detach() if self.config.t2i_detach_target else k_text
        return F.mse_loss(self.query_llm_projection(states), target)

    # -- generation -----------------------------------------------------------------------------------
    def generation_inputs(self, text_input_ids, text_attention_mask, prompts: list[list[int]], splice_at: list[int], pad_id: int):
        """Left-padded inputs_embeds/attention_mask for a batch of prompts (spec 2.4; bundle-format step 7).

        For one unpadded prompt this is exactly the official generate's input. The official code builds the
        mask as [ones(n_q), prompt mask] and never pads at generation; we pad on the left so that batches work.
        """
        _, projected = self.encode_context(text_input_ids, text_attention_mask)
        rows, masks = [], []
        for i, (ids, k) in enumerate(zip(prompts, splice_at)):
            ids_t = torch.tensor([ids], dtype=torch.long, device=projected.device)
            emb, m = self.splice(ids_t, None, projected[i : i + 1], k)
            rows.append(emb[0])
            masks.append(m[0])
        width = max(r.shape[0] for r in rows)
        pad_embed = self.embed_llm(torch.tensor([pad_id], device=projected.device))[0]
        embeds = torch.stack([torch.cat([pad_embed.expand(width - r.shape[0], -1), r]) for r in rows])
        mask = torch.stack([torch.cat([torch.zeros(width - m.shape[0], dtype=m.dtype, device=m.device), m]) for m in masks])
        return embeds, mask

    @torch.no_grad()
    def generate(self, text_input_ids, text_attention_mask, prompts, splice_at, pad_id: int, replace: dict | None = None,
                 beam_stop_rule: str = "hf-4.39", **generate_kwargs):
        """Returns the new token ids only (batch x new, padded with `pad_id` after eos), with `replace` applied
        (official: 0 -> 2). Greedy and sampling are Hugging Face `generate`. Beam search (`num_beams` > 1)
        follows `beam_stop_rule`: "hf-4.39", as the official code decodes (transformers 4.39.3; run here by
        vikdf/beam.py over this model), or "hf-5", this transformers' own `generate`."""
        if beam_stop_rule not in BEAM_STOP_RULES:
            raise ValueError(f"beam_stop_rule must be one of {BEAM_STOP_RULES}, got {beam_stop_rule!r}")
        embeds, mask = self.generation_inputs(text_input_ids, text_attention_mask, prompts, splice_at, pad_id)
        if generate_kwargs.get("num_beams", 1) > 1 and beam_stop_rule == "hf-4.39":
            out = self._beam_search(embeds, mask, pad_id, **generate_kwargs)
        else:
            out = self.language_model.generate(inputs_embeds=embeds, attention_mask=mask, pad_token_id=pad_id, **generate_kwargs)
        for src, dst in (replace or {}).items():
            out[out == int(src)] = int(dst)
        return out

    def _beam_search(self, embeds, mask, pad_id: int, num_beams: int, max_new_tokens: int, eos_token_id: int,
                     no_repeat_ngram_size: int = 0, length_penalty: float = 1.0, early_stopping: bool | str = False,
                     do_sample: bool = False, **unsupported):
        """Beam search of a (left-padded) batch by the transformers 4.39.3 rules: the language model runs all
        rows x beams at once with its KV cache, and one `beam.BeamSearch` per row decides. A finished row is
        fed `pad_id`, as 4.39 does."""
        if do_sample or unsupported:
            raise TypeError(f"beam search by the hf-4.39 rule takes no {'do_sample=True' if do_sample else sorted(unsupported)}")
        k, rows = num_beams, embeds.shape[0]
        searches = [BeamSearch(k, max_new_tokens, eos_token_id, no_repeat_ngram_size, length_penalty, early_stopping, "hf-4.39")
                    for _ in range(rows)]
        embeds, mask = embeds.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
        cache = None
        while True:
            out = self.language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=True, cache=cache,
                                      position_ids=position_ids_from_mask(mask)[:, -embeds.shape[1] :])
            cache = out.cache
            logits = out.logits[:, -1].float().numpy()
            order, tokens = [], []
            for i, search in enumerate(searches):
                if search.done:  # keeps its rows, fed padding
                    order += range(i * k, (i + 1) * k)
                    tokens += [pad_id] * k
                    continue
                parents, next_tokens = search.step(logits[i * k : (i + 1) * k])
                order += [i * k + int(p) for p in parents]
                tokens += next_tokens
            if all(s.done for s in searches):
                break
            index = torch.tensor(order, device=mask.device)
            cache.reorder_cache(index)
            mask = torch.cat([mask[index], torch.ones_like(mask[:, :1])], dim=1)
            embeds = self.embed_llm(torch.tensor(tokens, device=mask.device)[:, None])
        results = [s.result() for s in searches]
        width = max(len(r) for r in results)
        return torch.tensor([r + [pad_id] * (width - len(r)) for r in results], dtype=torch.long)
