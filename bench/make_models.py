"""Builds the benchmark models into bench/.models/ (not committed). Run with training/.venv/bin/python.

From a seed, with no downloads:

* ``llama-100m-checkpoint/``: a VIKDF model with the tiny text encoder and IQ-Former of
  ``vikdf.tiny.tiny_config()`` and a randomly initialised Llama LLM of about 100 M parameters, saved with
  ``vikdf.train.save_checkpoint`` (what bench/pytorch.py loads);
* ``llama-100m/``: its bundle, exported with ``vikdf.export.write_bundle`` (no weight variants; what
  bench/engine.mjs loads);
* ``llama-100m-hf/``: the SAME LLM weights in the layout transformers.js loads for a decoder-only Llama
  (``config.json``, ``generation_config.json``, ``tokenizer.json``, ``tokenizer_config.json``,
  ``onnx/model.onnx`` taking ``input_ids``) plus ``bench_inputs.json``, the prompt ids of bench/contexts.json
  at the lengths our engine decodes (prompt ids with ``num_query_tokens`` stand-in ids where the knowledge
  vectors go);
* ``tiny-random-hf/``: the same for the LLM of the committed fixture ``test/fixtures/tiny-random``;
* ``models.json``: parameter counts, configs, and the checks below.

Checks (printed and written to models.json): the transformers.js graph, our decoder graph (fed the embeddings
of the same ids) and PyTorch's LlamaForCausalLM give the same last-position logits.

The LLM tokenizer is ``vikdf.tiny``'s byte-level BPE (384 ids). A random LLM with a larger vocabulary emits
mostly ids the tokenizer does not know, which decode to nothing, so no text and no ``token`` event would come
for most steps. The tokenizer's BPE vocabulary is therefore padded with filler tokens (`` w<id>``) up to the
LLM vocabulary: no merge produces them, so prompts encode exactly as before, and every id decodes to text.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "training"))

from vikdf.data import DialogueFormatter, PromptSettings, TokenSettings, load_tokenizer  # noqa: E402
from vikdf.decoder import LlamaDecoder, empty_past, position_ids_from_mask  # noqa: E402
from vikdf.export import _onnx_export, write_bundle  # noqa: E402
from vikdf.fixture import fixture_model  # noqa: E402
from vikdf.tiny import build_tiny_model, save_tokenizers, tiny_config  # noqa: E402
from vikdf.train import save_checkpoint  # noqa: E402

SEED = 1234
LLM_100M = dict(
    vocab_size=8192,
    hidden_size=768,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_key_value_heads=12,
    max_position_embeddings=512,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    initializer_range=0.02,
    tie_word_embeddings=False,
)
# Text-encoder input up to the tiny CLIP's 32 positions; prompts of bench/contexts.json are 52-85 LLM ids.
SETTINGS = dict(text_max_length=32, prompt_max_length=128, response_max_length=64)
TOKENS = TokenSettings(llm_bos_token_id=1, llm_eos_token_id=2, llm_pad_token_id=2, text_pad_token_id=1,
                       replace_generated={"0": 2})
FIXTURE = ROOT / "test" / "fixtures" / "tiny-random"


def log(msg: str) -> None:
    print(f"[make_models {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pad_llm_tokenizer(src: Path, dst: Path, vocab_size: int) -> int:
    """Copies a byte-level BPE tokenizer.json with filler tokens added to its vocabulary up to vocab_size."""
    data = json.loads(src.read_text())
    vocab = data["model"]["vocab"]
    used = set(vocab.values()) | {t["id"] for t in data.get("added_tokens", [])}
    added = 0
    for i in range(vocab_size):
        if i not in used:
            vocab[f"\u0120w{i}"] = i  # "Ġw123" decodes to " w123"
            added += 1
    dst.write_text(json.dumps(data, ensure_ascii=False))
    return added


class CausalLMWithIds(nn.Module):
    """input_ids -> LlamaDecoder: the decoder-only layout transformers.js runs (embedding lookup inside)."""

    def __init__(self, lm):
        super().__init__()
        self.embed = lm.get_input_embeddings()
        self.decoder = LlamaDecoder(lm)

    def forward(self, input_ids, attention_mask, position_ids, *past):
        return self.decoder(self.embed(input_ids), attention_mask, position_ids, *past)


def export_transformersjs(lm, llm_tokenizer: Path, out: Path, tokens: TokenSettings) -> None:
    """Writes a transformers.js model folder for a LlamaForCausalLM."""
    if out.exists():
        shutil.rmtree(out)
    (out / "onnx").mkdir(parents=True)
    module = CausalLMWithIds(lm).eval()
    dec = module.decoder
    n = dec.num_layers
    b, past_len, seq = 2, 3, 2
    past = [torch.randn(b, dec.num_kv_heads, past_len, dec.head_dim) for _ in range(2 * n)]
    past_names = [f"past_key_values.{i}.{kind}" for i in range(n) for kind in ("key", "value")]
    present_names = [f"present.{i}.{kind}" for i in range(n) for kind in ("key", "value")]
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
            "position_ids": {0: "batch_size", 1: "sequence_length"},
            "logits": {0: "batch_size", 1: "sequence_length"}}
    axes.update({k: {0: "batch_size", 2: "past_sequence_length"} for k in past_names})
    axes.update({k: {0: "batch_size", 2: "total_sequence_length"} for k in present_names})
    vocab = lm.config.vocab_size
    _onnx_export(
        module,
        (torch.randint(3, vocab, (b, seq)), torch.ones(b, past_len + seq, dtype=torch.long),
         torch.arange(past_len, past_len + seq).repeat(b, 1), *past),
        out / "onnx" / "model.onnx",
        ["input_ids", "attention_mask", "position_ids", *past_names],
        ["logits", *present_names],
        axes,
    )
    cfg = lm.config.to_dict()
    cfg.update(model_type="llama", architectures=["LlamaForCausalLM"], head_dim=dec.head_dim,
               bos_token_id=tokens.llm_bos_token_id, eos_token_id=tokens.llm_eos_token_id,
               pad_token_id=tokens.llm_pad_token_id, use_cache=True)
    cfg.setdefault("rope_theta", 10000.0)
    (out / "config.json").write_text(json.dumps(cfg, indent=2, default=str) + "\n")
    (out / "generation_config.json").write_text(json.dumps({
        "bos_token_id": tokens.llm_bos_token_id, "eos_token_id": tokens.llm_eos_token_id,
        "pad_token_id": tokens.llm_pad_token_id}, indent=2) + "\n")
    shutil.copyfile(llm_tokenizer, out / "tokenizer.json")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": "</s>", "model_max_length": lm.config.max_position_embeddings,
        "clean_up_tokenization_spaces": False}, indent=2) + "\n")


def bench_inputs(fmt: DialogueFormatter, n_q: int) -> list[dict]:
    """Per context: our prompt ids and splice index, and flat ids of the same total length for transformers.js."""
    contexts = json.loads((BENCH / "contexts.json").read_text())["contexts"]
    rows = []
    for turns in contexts:
        x = fmt(turns)
        k = x.splice_at
        stand_in = [x.prompt_ids[min(k, len(x.prompt_ids) - 1)]] * n_q  # real ids where the knowledge vectors go
        rows.append({"turns": turns, "text_ids": x.text_ids, "prompt_ids": x.prompt_ids, "splice_at": k,
                     "input_ids": x.prompt_ids[:k] + stand_in + x.prompt_ids[k:]})
    return rows


def check_same_decoder(lm, bundle: Path, hf: Path, ids: list[int]) -> dict:
    """Last-position logits of one prompt: PyTorch vs our decoder graph vs the transformers.js graph."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    t_ids = torch.tensor([ids])
    mask = torch.ones_like(t_ids)
    pos = position_ids_from_mask(mask)
    with torch.no_grad():
        ref = lm(input_ids=t_ids, attention_mask=mask, position_ids=pos).logits[0, -1].numpy()
        embeds = lm.get_input_embeddings()(t_ids).numpy()
    dec = LlamaDecoder(lm)
    names = [f"past_key_values.{i}.{kind}" for i in range(dec.num_layers) for kind in ("key", "value")]
    past = dict(zip(names, (t.numpy() for t in empty_past(dec, 1))))
    common = {"attention_mask": mask.numpy(), "position_ids": pos.numpy(), **past}
    s = ort.InferenceSession(str(bundle / "onnx" / "decoder_model_merged.onnx"), opts, providers=["CPUExecutionProvider"])
    ours = s.run(["logits"], {"inputs_embeds": embeds, **common})[0][0, -1]
    del s
    s = ort.InferenceSession(str(hf / "onnx" / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    tjs = s.run(["logits"], {"input_ids": t_ids.numpy(), **common})[0][0, -1]
    del s
    result = {
        "prompt_length": len(ids),
        "max_abs_diff_bundle_vs_pytorch": float(np.abs(ours - ref).max()),
        "max_abs_diff_transformersjs_vs_bundle": float(np.abs(tjs - ours).max()),
        "argmax": {"pytorch": int(ref.argmax()), "bundle": int(ours.argmax()), "transformersjs": int(tjs.argmax())},
    }
    if result["max_abs_diff_bundle_vs_pytorch"] > 1e-3 or result["max_abs_diff_transformersjs_vs_bundle"] > 1e-3:
        raise SystemExit(f"the exported graphs disagree: {result}")
    return result


def make_llama_100m(models: Path) -> dict:
    name = "llama-100m"
    cfg = tiny_config("llama")
    cfg.llm = dict(LLM_100M)
    t0 = time.time()
    model = build_tiny_model(cfg, seed=SEED, pretraining=False)
    llm_params = sum(p.numel() for p in model.language_model.parameters())
    log(f"{name}: built from seed {SEED}: LLM {llm_params:,} parameters ({time.time() - t0:.1f}s)")
    with tempfile.TemporaryDirectory() as tmp:
        text_tok, llm_tok = save_tokenizers(Path(tmp))
        padded = Path(tmp) / "llm_tokenizer_padded.json"
        fillers = pad_llm_tokenizer(llm_tok, padded, LLM_100M["vocab_size"])
        ckpt = models / f"{name}-checkpoint"
        save_checkpoint(ckpt, model, text_tok, padded, PromptSettings(**SETTINGS), TOKENS)
        log(f"{name}: checkpoint in {ckpt} ({fillers} filler tokens in the LLM tokenizer)")
    t0 = time.time()
    manifest = write_bundle(model, ckpt / "text_tokenizer.json", ckpt / "llm_tokenizer.json", models / name,
                            PromptSettings(**SETTINGS), TOKENS, name, variants=None)
    log(f"{name}: bundle in {models / name} ({time.time() - t0:.1f}s)")
    return finish(name, model, manifest, models, ckpt / "llm_tokenizer.json", ckpt / "text_tokenizer.json",
                  PromptSettings(**SETTINGS), extra={"seed": SEED, "llm_config": LLM_100M, "filler_tokens": fillers,
                                                     "checkpoint": str(ckpt.relative_to(BENCH))})


def make_tiny_hf(models: Path) -> dict:
    """transformers.js folder for the committed fixture's LLM (rebuilt from its seed by vikdf.fixture)."""
    model = fixture_model()
    manifest = json.loads((FIXTURE / "manifest.json").read_text())
    return finish("tiny-random", model, manifest, models, FIXTURE / "llm_tokenizer" / "tokenizer.json",
                  FIXTURE / "text_tokenizer" / "tokenizer.json", PromptSettings.from_manifest(manifest),
                  bundle=FIXTURE, extra={"bundle": "test/fixtures/tiny-random", "pytorch": "vikdf.fixture.fixture_model()"})


def finish(name, model, manifest, models: Path, llm_tok: Path, text_tok: Path, settings: PromptSettings,
           bundle: Path | None = None, extra: dict | None = None) -> dict:
    hf = models / f"{name}-hf"
    t0 = time.time()
    export_transformersjs(model.language_model, llm_tok, hf, TokenSettings(**manifest["tokens"]))
    log(f"{name}: transformers.js folder in {hf} ({time.time() - t0:.1f}s)")
    fmt = DialogueFormatter(load_tokenizer(text_tok), load_tokenizer(llm_tok), settings)
    rows = bench_inputs(fmt, manifest["model"]["num_query_tokens"])
    (hf / "bench_inputs.json").write_text(json.dumps({"num_query_tokens": manifest["model"]["num_query_tokens"],
                                                       "rows": rows}) + "\n")
    check = check_same_decoder(model.language_model, bundle or models / name, hf, rows[0]["input_ids"])
    log(f"{name}: same decoder in all three: {check}")
    return {"name": name, "parameters": manifest["model"]["parameters"],
            "llm": {k: manifest["model"][k] for k in ("llm_hidden_size", "llm_num_layers", "llm_num_key_value_heads",
                                                      "llm_head_dim", "llm_vocab_size", "llm_max_position_embeddings")},
            "num_query_tokens": manifest["model"]["num_query_tokens"],
            "prompt_lengths": [len(r["input_ids"]) for r in rows], "check": check, **(extra or {})}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(BENCH / ".models"))
    p.add_argument("--force", action="store_true", help="rebuild models that exist")
    args = p.parse_args()
    torch.set_num_threads(2)
    models = Path(args.out)
    models.mkdir(parents=True, exist_ok=True)
    summary_path = models / "models.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for name, make, marker in (("tiny-random", make_tiny_hf, "tiny-random-hf/bench_inputs.json"),
                               ("llama-100m", make_llama_100m, "llama-100m-hf/bench_inputs.json")):
        if not args.force and (models / marker).exists() and name in summary:
            log(f"{name}: present, skipped (--force rebuilds)")
            continue
        summary[name] = make(models)
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    log(f"done: {summary_path}")


if __name__ == "__main__":
    main()
