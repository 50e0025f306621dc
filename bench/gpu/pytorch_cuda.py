"""PyTorch baseline on a GPU: the VIKDF model of training/ with Hugging Face generate on CUDA (fp32, greedy,
fixed lengths), the same contexts as bench/engine.mjs. Run by bench/gpu/device.sh on a lent GPU machine.

    python3 bench/gpu/pytorch_cuda.py --checkpoint bench/.models/llama-100m-checkpoint --out result.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "training"))

from vikdf.data import DialogueFormatter, load_tokenizer, pad_right  # noqa: E402
from vikdf.train import load_checkpoint  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    n_new = args.new_tokens
    ckpt = Path(args.checkpoint)
    model, settings, tokens = load_checkpoint(ckpt, pretraining=False)
    model = model.eval().cuda()
    fmt = DialogueFormatter(load_tokenizer(ckpt / "text_tokenizer.json"), load_tokenizer(ckpt / "llm_tokenizer.json"), settings)
    contexts = json.loads((ROOT / "bench" / "contexts.json").read_text())["contexts"]

    def generate(turns_list):
        inputs = [fmt(t) for t in turns_list]
        text_ids, text_mask = pad_right([x.text_ids for x in inputs], tokens.text_pad_token_id)
        out = model.generate(text_ids.cuda(), text_mask.cuda(), [x.prompt_ids for x in inputs], [x.splice_at for x in inputs],
                             pad_id=tokens.llm_pad_token_id, max_new_tokens=n_new, min_new_tokens=n_new,
                             num_beams=1, do_sample=False, eos_token_id=tokens.llm_eos_token_id)
        torch.cuda.synchronize()
        return out

    def first_token(turns_list):
        inputs = [fmt(t) for t in turns_list]
        text_ids, text_mask = pad_right([x.text_ids for x in inputs], tokens.text_pad_token_id)
        model.generate(text_ids.cuda(), text_mask.cuda(), [x.prompt_ids for x in inputs], [x.splice_at for x in inputs],
                       pad_id=tokens.llm_pad_token_id, max_new_tokens=1, num_beams=1, do_sample=False)
        torch.cuda.synchronize()

    generate(contexts[:1])
    generate(contexts[:16])
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "newTokens": n_new, "aggregate": {}}
    ttft, decode = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        first_token(contexts[:1])
        t1 = time.perf_counter()
        generate(contexts[:1])
        t2 = time.perf_counter()
        ttft.append((t1 - t) * 1000)
        decode.append((n_new - 1) / max(t2 - t1 - (t1 - t), 1e-9))
    result["batch1"] = {"ttftMs": round(statistics.median(ttft), 2), "decodeTokPerS": round(statistics.median(decode), 2)}
    for n in (1, 4, 16):
        reps = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = generate(contexts[:n])
            reps.append(out.numel() / (time.perf_counter() - t))
        result["aggregate"][str(n)] = {"tokPerS": round(statistics.median(reps), 2)}
    result["peakGpuMemMiB"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
