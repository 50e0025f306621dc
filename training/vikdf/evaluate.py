"""Evaluation as in the official inference.py (spec 5): teacher-forced perplexity over held-out dialogues,
then generation with the official decoding (beam 3, no-repeat-3-gram, 32 new tokens) scored with BLEU-1/2,
ROUGE-L and Distinct-1/2 (vikdf.metrics).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from .data import DialogueFormatter, PromptSettings, load_tokenizer, pad_right, read_jsonl
from .metrics import evaluate as score, perplexity


@torch.no_grad()
def evaluate_checkpoint_model(model, text_tok, llm_tok, prompt: PromptSettings, tokens, data_path, generation: dict,
                              max_examples: int | None = None, batch_size: int = 8, out_dir: Path | None = None) -> dict:
    from .train import DialogueCollator

    model.eval()
    examples = read_jsonl(data_path)[:max_examples]
    if not examples:
        raise ValueError(f"{data_path}: no evaluation examples")
    fmt = DialogueFormatter(text_tok, llm_tok, prompt)
    collate = DialogueCollator(fmt, tokens, "official")
    # Per-example losses (the official eval runs batch size 1), so perplexity = exp(mean per-example loss).
    losses = []
    for e in tqdm(examples, desc="perplexity", leave=False):
        batch = collate([e])
        out = model(bias=batch.pop("bias"), **batch)
        losses.append(float(out.losses["i2t"]))
    hyps = []
    replace = tokens.replace_generated
    for start in tqdm(range(0, len(examples), batch_size), desc="generate", leave=False):
        chunk = examples[start : start + batch_size]
        inputs = [fmt(e["context"], e.get("knowledge_context")) for e in chunk]
        text_ids, text_mask = pad_right([x.text_ids for x in inputs], tokens.text_pad_token_id)
        out = model.generate(text_ids, text_mask, [x.prompt_ids for x in inputs], [x.splice_at for x in inputs],
                             pad_id=tokens.llm_pad_token_id, replace=replace, eos_token_id=tokens.llm_eos_token_id,
                             do_sample=False, **generation)
        hyps += [llm_tok.decode(row.tolist(), skip_special_tokens=True).strip() for row in out]
    refs = [e["response"].strip() for e in examples]
    result = {**score(hyps, refs), "perplexity": round(perplexity(losses), 4), "examples": len(examples)}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "results_hyp.txt").write_text("\n".join(h.replace("\n", " ") for h in hyps) + "\n")
        (out_dir / "results_ref.txt").write_text("\n".join(r.replace("\n", " ") for r in refs) + "\n")
        (out_dir / "all_results.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def evaluate_checkpoint(checkpoint: str | Path, data_path: str | Path, generation: dict | None = None,
                        max_examples: int | None = None, out_dir: str | Path | None = None) -> dict:
    from .train import load_checkpoint

    checkpoint = Path(checkpoint)
    model, prompt, tokens = load_checkpoint(checkpoint, pretraining=False)
    text_tok = load_tokenizer(checkpoint / "text_tokenizer.json")
    llm_tok = load_tokenizer(checkpoint / "llm_tokenizer.json")
    gen = generation or {"num_beams": 3, "no_repeat_ngram_size": 3, "max_new_tokens": 32}
    return evaluate_checkpoint_model(model, text_tok, llm_tok, prompt, tokens, data_path, gen, max_examples,
                                     out_dir=Path(out_dir) if out_dir else None)
