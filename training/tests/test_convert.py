"""Conversion of checkpoints in the official VIKDF layout (ZRIGF2ForConditionalGeneration.save_pretrained).

The official classes are not a dependency, so the test writes a checkpoint the way the official code lays it
out: config.json with clip_config / qformer_config / llm_config (the Llama part as a Llama-2 config.json of
the transformers 4.3x era), weights under the official attribute names (pre-training heads included), and
text_tokenizer/ + llm_tokenizer/.
"""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import Blip2QFormerConfig, CLIPConfig

from vikdf.convert import ConversionError, convert, official_text_max_length
from vikdf.onnx_runner import BundleRunner
from vikdf.tiny import build_tiny_model, save_tokenizers, tiny_config

OURS_TO_OFFICIAL = {
    "text_encoder.": "clip_text_model.",
    "text_projection.": "clip_text_projection.",
    "vision_encoder.": "clip_vision_model.",
    "visual_projection.": "clip_visual_projection.",
}


def official_state(model):
    state = {}
    for key, value in model.state_dict().items():
        for ours, theirs in OURS_TO_OFFICIAL.items():
            if key.startswith(ours):
                key = theirs + key[len(ours):]
                break
        state[key] = value.clone().to(torch.bfloat16) if key.startswith("language_model.") else value.clone()
    return state


def official_config(cfg):
    clip = CLIPConfig(text_config=cfg.text_encoder, vision_config=cfg.vision_encoder, projection_dim=cfg.text_projection_dim)
    qformer = Blip2QFormerConfig(**cfg.qformer, encoder_hidden_size=cfg.text_projection_dim)
    llm = {  # a Llama-2 config.json, shrunk
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 0, "hidden_act": "silu", "hidden_size": 64, "intermediate_size": 128,
        "initializer_range": 0.02, "max_position_embeddings": 256, "num_attention_heads": 4,
        "num_hidden_layers": 2, "num_key_value_heads": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-06,
        "rope_scaling": None, "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "use_cache": True, "vocab_size": cfg.llm["vocab_size"],
    }
    return {"model_type": "zrigf-2", "architectures": ["ZRIGF2ForConditionalGeneration"], "clip_config": clip.to_dict(),
            "qformer_config": qformer.to_dict(), "llm_config": llm, "num_query_tokens": cfg.num_query_tokens,
            "query_projection_dim": cfg.query_projection_dim}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A tiny pre-trained-layout checkpoint (bf16 LLM, as the official run saves it), in two shards."""
    root = tmp_path_factory.mktemp("official")
    model = build_tiny_model(tiny_config("llama"), seed=7, pretraining=True)
    with torch.no_grad():  # the LLM is stored in bf16 officially; make the reference see the same weights
        for p in model.language_model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    ckpt = root / "zrigf2"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(official_config(model.config)))
    state = official_state(model)
    keys = sorted(state)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for name, part in shards.items():
        save_file({k: state[k].contiguous() for k in part}, str(ckpt / name))
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {k: n for n, ks in shards.items() for k in ks}}))
    text_tok, llm_tok = save_tokenizers(root / "tok")
    for sub, src in (("text_tokenizer", text_tok), ("llm_tokenizer", llm_tok)):
        (ckpt / sub).mkdir()
        shutil.copyfile(src, ckpt / sub / "tokenizer.json")
    return model, ckpt, state


def test_converted_bundle_matches_the_checkpoint(official, tmp_path):
    model, ckpt, _ = official
    manifest = convert(ckpt, tmp_path / "bundle")
    assert manifest["source"] == "convert"
    assert manifest["prompt"]["max_length"] == 128 and manifest["text_encoder_input"]["max_length"] == 32
    assert manifest["tokens"]["replace_generated"] == {"0": 2}
    runner = BundleRunner(tmp_path / "bundle")
    convs = [["do you like pizza?", "yes, with mushrooms.", "and cheese?"], ["hi there"]]
    inputs = [runner.formatter(c) for c in convs]
    # The Llama-2-chat splice: after "<s>" + "[INST]" (4 tokens with Llama-2's tokenizer and with ours).
    assert runner.formatter.render(convs[0])[1] == "[INST] do you like pizza? [/INST] yes, with mushrooms. </s><s> [INST] and cheese? [/INST]"
    _, knowledge = runner.encode_knowledge([x.text_ids for x in inputs])
    for x, k in zip(inputs, knowledge):
        ids = torch.tensor([x.text_ids])
        with torch.no_grad():
            _, ref = model.encode_context(ids, torch.ones_like(ids))
        assert np.abs(k - ref[0].numpy()).max() < 1e-4
        greedy = model.generate(ids, torch.ones_like(ids), [x.prompt_ids], [x.splice_at], pad_id=2, eos_token_id=2,
                                max_new_tokens=10, do_sample=False, num_beams=1)[0].tolist()
        greedy = greedy[: greedy.index(2) + 1] if 2 in greedy else greedy
        assert runner.greedy([convs[inputs.index(x)]], 10)[0] == [2 if t == 0 else t for t in greedy]


def _write_variant(ckpt, tmp_path, state=None, config=None, drop_tokenizer=False):
    out = tmp_path / "variant"
    shutil.copytree(ckpt, out)
    if state is not None:
        for f in out.glob("model-*.safetensors"):
            f.unlink()
        (out / "model.safetensors.index.json").unlink()
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
    if config is not None:
        (out / "config.json").write_text(json.dumps(config))
    if drop_tokenizer:
        (out / "llm_tokenizer" / "tokenizer.json").unlink()
    return out


def test_missing_key_is_named(official, tmp_path):
    _, ckpt, state = official
    broken = {k: v for k, v in state.items() if k != "qformer.encoder.layer.0.crossattention.self.key.weight"}
    with pytest.raises(ConversionError, match=r"missing keys.*qformer\.encoder\.layer\.0\.crossattention\.self\.key\.weight"):
        convert(_write_variant(ckpt, tmp_path, state=broken), tmp_path / "out")


def test_unexpected_key_is_named(official, tmp_path):
    _, ckpt, state = official
    broken = {**state, "adapter.weight": torch.zeros(2)}
    with pytest.raises(ConversionError, match=r"unexpected keys.*adapter\.weight"):
        convert(_write_variant(ckpt, tmp_path, state=broken), tmp_path / "out")


def test_wrong_shape_is_named(official, tmp_path):
    _, ckpt, state = official
    broken = {**state, "language_projection.weight": torch.zeros(3, 3)}
    with pytest.raises(ConversionError, match=r"wrong shapes: language_projection\.weight: checkpoint \(3, 3\)"):
        convert(_write_variant(ckpt, tmp_path, state=broken), tmp_path / "out")


def test_unsupported_architecture_is_named(official, tmp_path):
    model, ckpt, _ = official
    config = official_config(model.config)
    config["llm_config"].update(model_type="mistral", architectures=["MistralForCausalLM"])
    with pytest.raises(ConversionError, match="unsupported language model 'MistralForCausalLM'"):
        convert(_write_variant(ckpt, tmp_path, config=config), tmp_path / "out")


def test_missing_tokenizer_is_named(official, tmp_path):
    _, ckpt, _ = official
    with pytest.raises(ConversionError, match=r"llm_tokenizer/tokenizer\.json: missing"):
        convert(_write_variant(ckpt, tmp_path, drop_tokenizer=True), tmp_path / "out")


def test_text_encoder_limit_is_the_official_min_of_128_and_positions():
    # inference.py: max_source_length = min(args.max_source_length (128), text max_position_embeddings)
    assert official_text_max_length(77) == 77  # CLIP ViT-L/14, the official encoder
    assert official_text_max_length(32) == 32  # the tiny fixture
    assert official_text_max_length(100) == 100  # not capped at CLIP's 77
    assert official_text_max_length(248) == 128
