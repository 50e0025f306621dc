"""Runs Hugging Face transformers' own beam search for `vikdf.beam_golden`, in an interpreter of its own.

It imports nothing from vikdf, only torch and transformers, so that it runs where transformers 4.39.3 (the
version the official VIKDF code pins) is installed, apart from the training environment (transformers 5):

    python3 -m venv TF439 && TF439/bin/pip install torch==2.13.0 transformers==4.39.3
    TF439/bin/python hf439_worker.py JOB_DIR

JOB_DIR holds `job.json` (what to run) and `llm.pt` (the language model's weights and the spliced prompt
embeddings); the answer is written to `JOB_DIR/result.json`. Two jobs:

- `fake_cases`: `generate` with `inputs_embeds` on a fake causal LM whose next-token logits depend on the step
  and the last generated token (a table made by a seeded MINSTD generator, shared with the TypeScript tests)
  plus an eos boost that grows with the length (`fake_table`, `fake_logits`).
- `llm`: `generate` with `inputs_embeds` on `LlamaForCausalLM` built from the given config and weights, one
  context at a time (no padding).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

MINSTD_MODULUS = 2147483647


def fake_table(vocab: int, steps: int, seed: int) -> np.ndarray:
    """steps x (vocab + 1) x vocab float32 logits in [-3, 3): [n, 0] for step n with nothing generated yet,
    [n, t + 1] for step n after token t. Values from MINSTD (state = state * 48271 mod 2^31 - 1, starting from
    `seed`), in C order. The step index keeps two paths through the same transitions from tying."""
    state = seed
    table = np.zeros((steps, vocab + 1, vocab), dtype=np.float32)
    for n in range(steps):
        for r in range(vocab + 1):
            for t in range(vocab):
                state = state * 48271 % MINSTD_MODULUS
                table[n, r, t] = np.float32(state / MINSTD_MODULUS * 6 - 3)
    return table


def fake_logits(table: np.ndarray, generated: list[int], eos: int, eos_boost: float) -> np.ndarray:
    """The row for the next step after `generated`, its eos logit raised by eos_boost x length (float32)."""
    row = table[len(generated), (generated[-1] if generated else -1) + 1].copy()
    row[eos] = np.float32(row[eos] + np.float32(eos_boost * len(generated)))
    return row


class FakeLM(PreTrainedModel):
    """Logits from `fake_logits` of each row's generated tokens; no cache (the whole input_ids come each step)."""

    config_class = PretrainedConfig

    def __init__(self, config, table: np.ndarray, eos: int, eos_boost: float):
        super().__init__(config)
        self.table, self.eos, self.eos_boost = table, eos, eos_boost
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def prepare_inputs_for_generation(self, input_ids, inputs_embeds=None, attention_mask=None, **kwargs):
        return {"input_ids": input_ids}

    def forward(self, input_ids, attention_mask=None, **kwargs):
        rows = np.stack([fake_logits(self.table, seq.tolist(), self.eos, self.eos_boost) for seq in input_ids])
        return CausalLMOutputWithPast(logits=torch.from_numpy(rows)[:, None, :])


def _trim(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def run_fake_cases(cases: list[dict]) -> list[dict]:
    out = []
    for c in cases:
        table = fake_table(c["vocab"], c["max_new_tokens"], c["table_seed"])
        model = FakeLM(PretrainedConfig(vocab_size=c["vocab"]), table, c["eos"], c["eos_boost"]).eval()
        res = model.generate(inputs_embeds=torch.zeros(1, 2, 4), attention_mask=torch.ones(1, 2, dtype=torch.long),
                             num_beams=c["num_beams"], max_new_tokens=c["max_new_tokens"],
                             no_repeat_ngram_size=c["no_repeat_ngram_size"], length_penalty=c["length_penalty"],
                             early_stopping=c["early_stopping"], do_sample=False, eos_token_id=c["eos"],
                             pad_token_id=c["eos"], bos_token_id=0, return_dict_in_generate=True, output_scores=True)
        out.append({"ids": _trim(res.sequences[0].tolist(), c["eos"]), "score": float(res.sequences_scores[0])})
    return out


def run_llm(job: dict, blob: dict) -> list[list[int]]:
    cfg = job["llm_config"]
    model = LlamaForCausalLM(LlamaConfig(**cfg, attn_implementation="eager")).eval()
    model.load_state_dict(blob["state_dict"], strict=True)
    g = job["generation"]
    out = []
    with torch.no_grad():
        for embeds in blob["inputs_embeds"]:
            res = model.generate(inputs_embeds=embeds[None], attention_mask=torch.ones(1, embeds.shape[0], dtype=torch.long),
                                 num_beams=g["num_beams"], max_new_tokens=g["max_new_tokens"],
                                 no_repeat_ngram_size=g["no_repeat_ngram_size"], length_penalty=g["length_penalty"],
                                 early_stopping=g["early_stopping"], do_sample=False, eos_token_id=g["eos_token_id"],
                                 pad_token_id=g["pad_token_id"])
            out.append(_trim(res[0].tolist(), g["eos_token_id"]))
    return out


def main(job_dir: str) -> None:
    job_dir = Path(job_dir)
    job = json.loads((job_dir / "job.json").read_text())
    result = {"transformers": transformers.__version__, "torch": torch.__version__}
    if "fake_cases" in job:
        result["fake_cases"] = run_fake_cases(job["fake_cases"])
    if "llm_config" in job:
        result["llm"] = run_llm(job, torch.load(job_dir / "llm.pt", weights_only=True))
    (job_dir / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
