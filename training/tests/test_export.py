"""ONNX bundle export against the PyTorch model it came from (Llama- and GPT-2-style LLMs)."""

import json
import shutil

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from vikdf.data import PromptSettings, TokenSettings
from vikdf.decoder import empty_past, export_decoder, position_ids_from_mask
from vikdf.export import graph_signature, sha256_file, write_bundle
from vikdf.golden import GOLDEN_CASES
from vikdf.onnx_runner import BundleError, BundleRunner, load_manifest
from vikdf.tiny import build_tiny_model, save_tokenizers, tiny_config

SETTINGS = PromptSettings(text_max_length=16, prompt_max_length=64)
TOKENS = TokenSettings(llm_bos_token_id=1, llm_eos_token_id=2, llm_pad_token_id=2, text_pad_token_id=1, replace_generated={"0": 2})
CONVERSATIONS = [c for case in GOLDEN_CASES for c in case["conversations"]]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def exported(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    model = build_tiny_model(tiny_config(request.param), seed=1, pretraining=False)
    text_tok, llm_tok = save_tokenizers(tmp / "tok")
    write_bundle(model, text_tok, llm_tok, tmp / "bundle", SETTINGS, TOKENS, "t", variants=["fp16", "int8"])
    return model, tmp / "bundle", BundleRunner(tmp / "bundle")


@pytest.mark.parametrize("llm_type", ["llama", "gpt2"])
def test_decoder_wrapper_matches_hugging_face(llm_type):
    """The export-friendly decoder equals the HF forward pass, first step and cached steps, with left padding."""
    model = build_tiny_model(tiny_config(llm_type), seed=3, pretraining=False)
    dec = export_decoder(model.language_model, llm_type).eval()
    emb = torch.randn(2, 9, model.config.llm_hidden_size())
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0
    pos = position_ids_from_mask(mask)
    with torch.no_grad():
        ref = model.language_model(inputs_embeds=emb, attention_mask=mask, position_ids=pos).logits
        first = dec(emb[:, :6], mask[:, :6], pos[:, :6], *empty_past(dec, 2))
        second = dec(emb[:, 6:8], mask[:, :8], pos[:, 6:8], *first[1:])
        third = dec(emb[:, 8:], mask, pos[:, 8:], *second[1:])
    got = torch.cat([first[0], second[0], third[0]], dim=1)
    assert (got[0] - ref[0]).abs().max() < 1e-5
    assert (got[1, 3:] - ref[1, 3:]).abs().max() < 1e-5  # padded positions are never read
    assert third[1].shape == (2, dec.num_kv_heads, 9, dec.head_dim)


def test_knowledge_encoder_matches_pytorch(exported):
    model, _, runner = exported
    rows = [runner.formatter(turns).text_ids for turns in CONVERSATIONS]
    vectors, embeds = runner.encode_knowledge(rows)
    ids = torch.full((len(rows), max(map(len, rows))), TOKENS.text_pad_token_id)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    with torch.no_grad():
        k, p = model.encode_context(ids, mask)
    assert np.abs(vectors - k.numpy()).max() < 1e-4
    assert np.abs(embeds - p.numpy()).max() < 1e-4
    assert embeds.shape == (len(rows), model.config.num_query_tokens, model.config.llm_hidden_size())


def test_decoder_first_and_cached_steps_match_pytorch(exported):
    model, _, runner = exported
    _, _, embeds, mask = runner.prefill_inputs(CONVERSATIONS[-3:])  # the padded batch
    pos = position_ids_from_mask(torch.from_numpy(mask))
    logits, past = runner.decoder_step(embeds, mask, runner.empty_past(len(embeds)))
    next_ids = logits[:, -1].argmax(-1)
    step_embeds = np.stack([runner.embed([int(t)]) for t in next_ids])
    mask2 = np.concatenate([mask, np.ones((len(mask), 1), np.int64)], axis=1)
    logits2, present = runner.decoder_step(step_embeds, mask2, past)

    full_embeds = torch.cat([torch.from_numpy(embeds), torch.from_numpy(step_embeds)], dim=1)
    full_mask = torch.from_numpy(mask2)
    with torch.no_grad():
        ref = model.language_model(inputs_embeds=full_embeds, attention_mask=full_mask,
                                   position_ids=position_ids_from_mask(full_mask)).logits.numpy()
    real = mask.astype(bool)
    assert np.abs(logits - ref[:, :-1])[real].max() < 1e-4
    assert np.abs(logits2[:, 0] - ref[:, -1]).max() < 1e-4
    assert present[0].shape[2] == mask2.shape[1]
    assert pos.shape == mask.shape


def test_greedy_and_beam_identical_to_pytorch_generate(exported):
    model, _, runner = exported
    fmt = runner.formatter
    for case in GOLDEN_CASES:
        convs = case["conversations"]
        inputs = [fmt(t) for t in convs]
        ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(x.text_ids) for x in inputs], batch_first=True,
                                              padding_value=TOKENS.text_pad_token_id)
        mask = torch.nn.utils.rnn.pad_sequence([torch.ones(len(x.text_ids), dtype=torch.long) for x in inputs], batch_first=True)
        args = (ids, mask, [x.prompt_ids for x in inputs], [x.splice_at for x in inputs])
        kw = dict(pad_id=2, eos_token_id=2, max_new_tokens=12, do_sample=False)
        greedy = model.generate(*args, num_beams=1, **kw)
        beam = model.generate(*args, num_beams=3, no_repeat_ngram_size=3, **kw)  # the 4.39.3 rule (vikdf/beam.py)
        beam5 = model.generate(*args, num_beams=3, no_repeat_ngram_size=3, beam_stop_rule="hf-5", **kw)  # HF 5's own
        assert runner.greedy(convs, 12) == [_trim(r) for r in greedy.tolist()], case["name"]
        assert runner.beam_search(convs, 12) == [_trim(r) for r in beam.tolist()], case["name"]
        assert runner.beam_search(convs, 12, stop_rule="hf-5") == [_trim(r) for r in beam5.tolist()], case["name"]


def _trim(ids, eos=2):
    ids = ids[: ids.index(eos) + 1] if eos in ids else ids
    return [2 if t == 0 else t for t in ids]


def test_manifest_describes_the_graphs(exported):
    _, bundle, _ = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format"] == "vikdf-bundle" and manifest["format_version"] == 1
    for name, spec in manifest["graphs"].items():
        assert graph_signature(bundle / spec["file"]) == {"inputs": spec["inputs"], "outputs": spec["outputs"]}
    decoder = manifest["graphs"]["decoder_model_merged"]
    n = manifest["model"]["llm_num_layers"]
    assert [i["name"] for i in decoder["inputs"]][3:] == [f"past_key_values.{i}.{k}" for i in range(n) for k in ("key", "value")]
    on_disk = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert sorted(manifest["files"]) == on_disk
    assert all(sha256_file(bundle / f) == h for f, h in manifest["files"].items())
    assert manifest["generation"] == {"num_beams": 3, "no_repeat_ngram_size": 3, "max_new_tokens": 32,
                                      "do_sample": False, "length_penalty": 1.0, "early_stopping": False}


def test_weight_variants_stay_close(exported):
    _, bundle, runner = exported
    conv = [["hello, how are you today?"]]
    _, _, embeds, mask = runner.prefill_inputs(conv)
    ref, _ = runner.decoder_step(embeds, mask, runner.empty_past(1))
    for variant, tol in (("fp16", 0.05), ("int8", 0.5)):
        other = BundleRunner(bundle, variant=variant)
        _, _, e2, m2 = other.prefill_inputs(conv)
        got, _ = other.decoder_step(e2, m2, other.empty_past(1))
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < tol * np.abs(ref).max(), variant


def test_corrupt_bundle_names_the_file(exported, tmp_path):
    _, bundle, _ = exported
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    target = copy / "onnx" / "embed_tokens.onnx"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="embed_tokens.onnx: sha256 differs"):
        load_manifest(copy)
    target.unlink()
    with pytest.raises(BundleError, match="embed_tokens.onnx: listed in manifest.json but missing"):
        load_manifest(copy)


def test_llm_tokenizer_with_trailing_specials_is_refused(tmp_path):
    model = build_tiny_model(tiny_config("llama"), pretraining=False)
    text_tok, _ = save_tokenizers(tmp_path / "tok")
    tok = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    tok.save(str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match="adds special tokens after the text"):
        write_bundle(model, text_tok, tmp_path / "bad.json", tmp_path / "out", SETTINGS, TOKENS, "t")
