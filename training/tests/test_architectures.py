"""The other supported components: a BERT-style text encoder and a ViT image encoder."""

import numpy as np
import torch

from vikdf.data import PromptSettings, TokenSettings
from vikdf.export import write_bundle
from vikdf.onnx_runner import BundleRunner
from vikdf.tiny import build_tiny_model, save_tokenizers, tiny_config


def vit_bert_config():
    cfg = tiny_config("llama", text_encoder_type="bert")
    cfg.vision_encoder_type = "vit"
    cfg.vision_encoder = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                              image_size=28, patch_size=14)
    cfg.visual_projection_dim = None  # ViT features go to the IQ-Former as they are
    return cfg


def test_bert_and_vit_train_all_objectives():
    model = build_tiny_model(vit_bert_config(), seed=4)
    model.train()
    assert type(model.text_encoder).__name__ == "BertModel" and type(model.vision_encoder).__name__ == "ViTModel"
    assert not model.text_encoder.training  # frozen encoders stay in eval mode (BERT has dropout)
    ids = torch.tensor([[0, 5, 6, 7, 1], [0, 8, 9, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    llm_ids = torch.tensor([[1, 10, 11, 12, 13, 2], [1, 14, 15, 16, 2, 2]])
    labels = llm_ids.masked_fill(llm_ids == 2, -100)
    labels[:, :3] = -100
    masked = torch.zeros_like(ids, dtype=torch.bool)
    masked[:, 2] = True
    out = model(ids, llm_ids, labels, bias=2, text_attention_mask=mask, pixel_values=torch.randn(2, 3, 28, 28),
                bool_masked_pos=torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]]), masked_indices=masked,
                masked_text_labels=ids.masked_fill(~masked, -100), t2i_llm_input_ids=llm_ids,
                t2i_llm_attention_mask=(llm_ids != 2).long())
    assert set(out.losses) == {"tim", "tmim", "imtm", "i2t", "t2i"}
    out.loss.backward()
    assert model.text_encoder.embeddings.word_embeddings.weight.grad is None
    assert model.qformer.encoder.layer[0].crossattention.self.key.weight.grad.abs().sum() > 0


def test_bert_text_encoder_exports(tmp_path):
    model = build_tiny_model(vit_bert_config(), seed=4, pretraining=False)
    text_tok, llm_tok = save_tokenizers(tmp_path / "tok")
    manifest = write_bundle(model, text_tok, llm_tok, tmp_path / "bundle", PromptSettings(text_max_length=16),
                            TokenSettings(text_pad_token_id=1), "bert")
    assert manifest["model"]["text_encoder"] == "bert"
    runner = BundleRunner(tmp_path / "bundle")
    rows = [runner.formatter(["a dog runs in the park"]).text_ids, runner.formatter(["hi"]).text_ids]
    _, embeds = runner.encode_knowledge(rows)
    for row, got in zip(rows, embeds):
        ids = torch.tensor([row])
        with torch.no_grad():
            _, ref = model.encode_context(ids, torch.ones_like(ids))
        assert np.abs(got - ref[0].numpy()).max() < 1e-4
