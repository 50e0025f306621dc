"""Shipped configurations: the official sizes build to the parameter counts of the spec (section 2.1), and the
IQ-Former adopts BERT's self-attention the way the official code initialises it (section 2.2)."""

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from vikdf.configuration import VIKDFConfig
from vikdf.iq_former import IQFormer
from vikdf.modeling import TransformerBlock
from vikdf.tiny import build_tiny_model, tiny_config
from vikdf.train import RunConfig, adopt_bert_into_iq_former

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_official_configs_load_and_validate():
    official = VIKDFConfig.load(CONFIGS / "model-official.json")
    official.validate()
    pre = RunConfig.load(CONFIGS / "pretrain-official.json")
    assert (pre.batch_size * pre.grad_accum, pre.lr, pre.weight_decay, pre.max_steps, pre.warmup_steps) == (128, 1e-4, 0.05, 100_000, 10_000)
    assert VIKDFConfig.from_dict(pre.model) == official
    dia = RunConfig.load(CONFIGS / "dialogue-reddit-official.json")
    assert (dia.stage, dia.batch_size * dia.grad_accum, dia.epochs, dia.schedule) == ("dialogue", 32, 5, "linear")


def test_official_iq_former_size():
    """Spec 2.1: Q-Former 99.24 M; each pre-training TransformerBlock 7.09 M; dialogue-trainable 102.41 M."""
    official = VIKDFConfig.load(CONFIGS / "model-official.json")
    q = IQFormer(official.qformer_config())
    assert round(count(q) / 1e6, 2) == 99.24
    assert sum(1 for layer in q.encoder.layer if layer.has_cross_attention) == 6
    assert round(count(TransformerBlock(768)) / 1e6, 2) == 7.09
    trainable = count(q) + official.num_query_tokens * 768 + (768 * 4096 + 4096)  # + queries + language projection
    assert round(trainable / 1e6, 2) == 102.41


def test_unknown_model_config_key_is_named():
    with pytest.raises(ValueError, match="unknown VIKDF config keys: hidden"):
        VIKDFConfig.from_dict({"hidden": 3})


def test_inconsistent_sizes_are_refused():
    cfg = tiny_config()
    cfg.qformer = {**cfg.qformer, "hidden_size": 36, "num_attention_heads": 4}
    with pytest.raises(ValueError, match="IQ-Former hidden_size 36 must equal the encoder feature size 32"):
        cfg.validate()


def test_iq_former_adopts_bert_self_attention_only(tmp_path):
    model = build_tiny_model(tiny_config(), seed=2)
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=16))
    bert.save_pretrained(tmp_path / "bert")
    before = {k: v.clone() for k, v in model.qformer.state_dict().items()}
    loaded = adopt_bert_into_iq_former(model, str(tmp_path / "bert"))
    after = model.qformer.state_dict()
    reference = bert.state_dict()
    assert "encoder.layer.0.attention.self.query.weight" in loaded and "embeddings.LayerNorm.weight" in loaded
    for key in loaded:
        assert torch.equal(after[key], reference[key])
    untouched = [k for k in after if k not in loaded]
    assert any("crossattention" in k for k in untouched) and any("intermediate_query" in k for k in untouched)
    for key in untouched:
        assert torch.equal(after[key], before[key])
