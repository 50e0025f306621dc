"""Golden outputs of the PyTorch model for a bundle: what any runtime must reproduce (docs/bundle-format.md).

For each case (one conversation, or a batch of them): the token ids the formatting rules give, the knowledge
vectors, the top-5 of the first decoder step, greedy continuations with each step's top-2 logit margin (near-ties),
and beam-3 no-repeat-3-gram continuations.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .data import DialogueFormatter, pad_right
from .modeling import VIKDFModel

GOLDEN_CASES = [
    {"name": "one-turn", "conversations": [["hello, how are you today?"]]},
    {"name": "two-turns", "conversations": [["what did you do at the weekend?", "i went hiking in the mountains."]]},
    {"name": "three-turns", "conversations": [[
        "do you like pizza or pasta more?", "pizza, especially with mushrooms.", "with cheese too?"]]},
    {"name": "empty-context", "conversations": [[]]},
    {"name": "longer-than-text-limit", "conversations": [[
        "a dog runs across the green park with a red ball in its mouth while two people sit on a bench",
        "near the river they watch the boats, the kite and the sun setting over the sea on a warm evening",
        "tell me more about the park"]]},
    {"name": "unicode", "conversations": [["café au lait ☕ or thé? 🙂"]]},
    {"name": "batch-with-padding", "conversations": [
        ["hi"],
        ["what did you do at the weekend?", "i went hiking in the mountains.", "was the weather good?"],
        []]},
]


def _trim(ids: list[int], eos: int, replace: dict) -> list[int]:
    """New tokens up to and including the first eos (the rest is padding), then the manifest's replacements."""
    ids = ids[: ids.index(eos) + 1] if eos in ids else ids
    table = {int(k): v for k, v in replace.items()}
    return [table.get(t, t) for t in ids]


@torch.no_grad()
def greedy_margins(model: VIKDFModel, x, pad: int, raw_ids: list[int]) -> list[float]:
    """Top-2 logit margin at each greedy step (batch 1, the golden's own ids fed back): where a margin is tiny, the
    token can flip on a runtime whose sums round differently, so the TypeScript tests compare ids only up to there."""
    from .decoder import position_ids_from_mask

    text = torch.tensor([x.text_ids])
    embeds, mask = model.generation_inputs(text, torch.ones_like(text), [x.prompt_ids], [x.splice_at], pad)
    fed = torch.tensor(raw_ids[:-1], dtype=torch.long)
    embeds = torch.cat([embeds, model.embed_llm(fed)[None]], dim=1)
    mask = torch.cat([mask, torch.ones(1, len(fed), dtype=mask.dtype)], dim=1)
    logits = model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    top2 = logits[0, -len(raw_ids):].topk(2, dim=-1).values
    return [round(float(a - b), 6) for a, b in top2.tolist()]


@torch.no_grad()
def golden_case(model: VIKDFModel, fmt: DialogueFormatter, manifest: dict, conversations: list[list[str]], new_tokens: int) -> dict:
    tokens = manifest["tokens"]
    eos, pad = tokens["llm_eos_token_id"], tokens["llm_pad_token_id"]
    replace = tokens["replace_generated"]
    inputs = [fmt(turns) for turns in conversations]
    text_ids, text_mask = pad_right([x.text_ids for x in inputs], tokens["text_pad_token_id"])
    knowledge, projected = model.encode_context(text_ids, text_mask)

    prompts, splice = [x.prompt_ids for x in inputs], [x.splice_at for x in inputs]
    embeds, mask = model.generation_inputs(text_ids, text_mask, prompts, splice, pad)
    from .decoder import position_ids_from_mask

    logits = model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits[:, -1]
    top = logits.topk(5, dim=-1)

    common = dict(max_new_tokens=new_tokens, do_sample=False, pad_id=pad, eos_token_id=eos)
    greedy = model.generate(text_ids, text_mask, prompts, splice, num_beams=1, **common)
    beam = model.generate(text_ids, text_mask, prompts, splice, num_beams=3, no_repeat_ngram_size=3,
                          length_penalty=1.0, early_stopping=False, **common)
    rows = []
    for i, (turns, x) in enumerate(zip(conversations, inputs)):
        rows.append({
            "turns": turns,
            "text_input_ids": x.text_ids,
            "prompt_input_ids": x.prompt_ids,
            "splice_at": x.splice_at,
            "knowledge_embeds": [[round(v, 7) for v in vec] for vec in projected[i].tolist()],
            "knowledge_vectors_sample": [round(v, 7) for v in knowledge[i, 0, :8].tolist()],
            "knowledge_embeds_checksum": {"sum": float(projected[i].sum()), "abs_sum": float(projected[i].abs().sum())},
            "first_step_top5": {"ids": top.indices[i].tolist(), "logits": [round(v, 6) for v in top.values[i].tolist()]},
            "greedy_ids": _trim(greedy[i].tolist(), eos, replace),
            "greedy_margins": greedy_margins(model, x, pad, _trim(greedy[i].tolist(), eos, {})),
            "beam3_no_repeat3_ids": _trim(beam[i].tolist(), eos, replace),
        })
    return {"rows": rows}


def write_golden(model: VIKDFModel, fmt: DialogueFormatter, manifest: dict, path: Path, new_tokens: int = 16) -> dict:
    model.eval()
    golden = {
        "description": "PyTorch outputs for the bundle beside this file; see docs/bundle-format.md and training/vikdf/golden.py",
        "new_tokens": new_tokens,
        "greedy": {"num_beams": 1, "do_sample": False},
        "beam": {"num_beams": 3, "no_repeat_ngram_size": 3, "length_penalty": 1.0, "early_stopping": False},
        "tolerance": {"knowledge_embeds_abs": 1e-4, "logits_abs": 1e-4},
        "cases": [],
    }
    for case in GOLDEN_CASES:
        golden["cases"].append({"name": case["name"], **golden_case(model, fmt, manifest, case["conversations"], new_tokens)})
    Path(path).write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")
    return golden
