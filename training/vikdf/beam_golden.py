"""Beam search goldens written by transformers 4.39.3 itself, the version the official VIKDF code decodes with.

    python3 -m venv TF439 && TF439/bin/pip install torch==2.13.0 transformers==4.39.3
    cd training && .venv/bin/python -m vikdf.beam_golden --hf439-python TF439/bin/python

(TF439: a directory of your choice, never training/.venv; give its python as an absolute path) writes `test/fixtures/tiny-random.beam-hf-4.39.json` (docs/bundle-format.md, "Decoding"). This environment
(transformers 5) builds the fixture's PyTorch model (`fixture.fixture_model`, the model the committed tiny bundle
was exported from), formats each context and splices its knowledge vectors (`VIKDFModel.generation_inputs`);
`hf439_worker.py`, run by the given interpreter, loads the language model's weights into transformers 4.39.3's
`LlamaForCausalLM` and runs its `generate` (its `BeamSearchScorer`) on those embeddings. It also runs 4.39.3's
beam search on small fake models (`fake_cases`) for the unit tests of the bookkeeping alone.

The fixture is random: it almost never makes its eos (id 2) likely, so no hypothesis finishes before
`max_new_tokens` and every stop rule gives the same answer. The contexts therefore end on token 108, which this
model often predicts (`STOP_TOKEN`, in a copy of the manifest for the runtimes): hypotheses finish, and the
rule deciding when the search stops matters. `hf5_ids`, where present, is what transformers 5's own `generate`
(the "hf-5" rule) answers instead.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tempfile
from pathlib import Path

import torch

from .data import DialogueFormatter, PromptSettings, load_tokenizer
from .fixture import SETTINGS, TOKENS, fixture_model
from .tiny import TOKENIZER_CORPUS

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "test" / "fixtures" / "tiny-random.beam-hf-4.39.json"
FIXTURE = REPO / "test" / "fixtures" / "tiny-random"
WORKER = Path(__file__).with_name("hf439_worker.py")

STOP_TOKEN = 108
CONTEXTS = 240
# The bundles' beam settings (export.OFFICIAL_GENERATION), with STOP_TOKEN as the end of sequence.
GENERATION = {"num_beams": 3, "no_repeat_ngram_size": 3, "length_penalty": 1.0, "early_stopping": False,
              "max_new_tokens": 32, "eos_token_id": STOP_TOKEN, "pad_token_id": TOKENS.llm_pad_token_id}


def contexts(n: int = CONTEXTS, seed: int = 439) -> list[list[str]]:
    """n dialogue contexts of 0 to 3 turns, 1 to 8 words each, drawn from the tokenizer corpus."""
    words = " ".join(TOKENIZER_CORPUS[:16]).replace("?", " ?").replace(".", " .").split()
    rng = random.Random(seed)
    return [[" ".join(rng.choice(words) for _ in range(rng.randint(1, 8))) for _ in range(rng.randint(0, 3))]
            for _ in range(n)]


def fake_cases(n: int = 160, seed: int = 4393) -> list[dict]:
    """Fake-model beam searches (hf439_worker.fake_table): 2 to 4 beams, a vocabulary of at least 2 x beams (so
    the first step's candidates all come from the live beam, with no ties at -1e9), eos boosts that make
    hypotheses finish early, every early_stopping value, length penalties of both signs (a positive one
    favours long hypotheses, where the two stop rules differ most)."""
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        vocab = rng.choice([8, 10, 12, 16])
        cases.append({"vocab": vocab, "table_seed": rng.randrange(1, 2**31 - 1), "eos": rng.randrange(vocab),
                      "eos_boost": rng.choice([0.0, 0.125, 0.25, 0.5, 1.0]), "num_beams": rng.choice([2, 3, 3, 4]),
                      "max_new_tokens": rng.choice([3, 8, 16, 16]), "no_repeat_ngram_size": rng.choice([0, 0, 2, 3]),
                      "length_penalty": rng.choice([-0.5, 0.0, 0.5, 1.0, 2.0, 2.0, 2.0]),
                      "early_stopping": rng.choice([False, False, False, False, True, "never"])})
    return cases


def _llama_config_439(cfg) -> dict:
    """The fields of a transformers-5 LlamaConfig that transformers 4.39's LlamaConfig reads."""
    rope = getattr(cfg, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError("only the default RoPE exists in both transformers versions")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if head_dim * cfg.num_attention_heads != cfg.hidden_size or getattr(cfg, "mlp_bias", False):
        raise ValueError("transformers 4.39 Llama needs head_dim = hidden_size / heads and no MLP bias")
    return {"vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads, "max_position_embeddings": cfg.max_position_embeddings,
            "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": rope.get("rope_theta", 10000.0),
            "hidden_act": cfg.hidden_act, "attention_bias": cfg.attention_bias,
            "tie_word_embeddings": cfg.tie_word_embeddings, "bos_token_id": TOKENS.llm_bos_token_id,
            "eos_token_id": TOKENS.llm_eos_token_id, "pad_token_id": TOKENS.llm_pad_token_id}


def _replace(ids: list[int]) -> list[int]:
    table = {int(k): v for k, v in TOKENS.replace_generated.items()}
    return [table.get(t, t) for t in ids]


def _trim(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


@torch.no_grad()
def write_beam_golden(hf439_python: str, out: Path = DEFAULT_OUT) -> dict:
    model = fixture_model().eval()
    fmt = DialogueFormatter(load_tokenizer(FIXTURE / "text_tokenizer" / "tokenizer.json"),
                            load_tokenizer(FIXTURE / "llm_tokenizer" / "tokenizer.json"), PromptSettings(**SETTINGS))
    convs = contexts()
    embeds = []
    for turns in convs:
        x = fmt(turns)
        e, mask = model.generation_inputs(torch.tensor([x.text_ids]), torch.ones(1, len(x.text_ids), dtype=torch.long),
                                          [x.prompt_ids], [x.splice_at], TOKENS.llm_pad_token_id)
        assert bool(mask.all())  # one context: no padding
        embeds.append(e[0].contiguous())
    lm = model.language_model
    if lm.config.model_type != "llama":
        raise ValueError("the worker builds a Llama")
    cases = fake_cases()
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp)
        (job / "job.json").write_text(json.dumps({"llm_config": _llama_config_439(lm.config), "generation": GENERATION,
                                                  "fake_cases": cases}))
        torch.save({"state_dict": {k: v.contiguous() for k, v in lm.state_dict().items()}, "inputs_embeds": embeds},
                   job / "llm.pt")
        subprocess.run([hf439_python, str(WORKER), str(job)], check=True)
        result = json.loads((job / "result.json").read_text())
    if result["transformers"] != "4.39.3":
        raise RuntimeError(f"{hf439_python} runs transformers {result['transformers']}, not 4.39.3")

    # What transformers 5 (this environment) answers, where it differs.
    g = {k: v for k, v in GENERATION.items() if k != "pad_token_id"}
    rows = []
    for turns, ids in zip(convs, result["llm"]):
        x = fmt(turns)
        hf5 = model.generate(torch.tensor([x.text_ids]), torch.ones(1, len(x.text_ids), dtype=torch.long), [x.prompt_ids],
                             [x.splice_at], TOKENS.llm_pad_token_id, beam_stop_rule="hf-5", do_sample=False, **g)[0].tolist()
        row = {"turns": turns, "ids": _replace(ids)}
        if _trim(hf5, STOP_TOKEN) != ids:
            row["hf5_ids"] = _replace(_trim(hf5, STOP_TOKEN))
        rows.append(row)
    golden = {
        "description": "Beam search on the tiny fixture by transformers 4.39.3 (the official code's version) itself; "
                       "written by `python -m vikdf.beam_golden` (training/vikdf/beam_golden.py): read it for how.",
        "written_by": {"transformers": result["transformers"], "torch": result["torch"],
                       "hf5_ids_by_transformers": _transformers_version()},
        "bundle": "tiny-random",
        "stop_token_id": STOP_TOKEN,
        "generation": {k: v for k, v in GENERATION.items() if k not in ("eos_token_id", "pad_token_id")},
        "ids_note": "new tokens up to and including the stop token, then the manifest's replace_generated",
        "contexts_where_hf5_differs": sum("hf5_ids" in r for r in rows),
        "contexts": rows,
        "fake_cases": [{**c, **r} for c, r in zip(cases, result["fake_cases"])],
    }
    out.write_text(_dump(golden))
    return golden


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _dump(golden: dict) -> str:
    """JSON with one line per context or case, to keep the file small and its diffs readable."""
    head = {k: v for k, v in golden.items() if k not in ("contexts", "fake_cases")}
    lines = json.dumps(head, indent=1, ensure_ascii=False)[:-2]
    for key in ("contexts", "fake_cases"):
        items = ",\n".join("  " + json.dumps(x, ensure_ascii=False) for x in golden[key])
        lines += f',\n "{key}": [\n{items}\n ]'
    return lines + "\n}\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m vikdf.beam_golden", description=__doc__.split("\n\n")[0])
    p.add_argument("--hf439-python", required=True, help="a Python with torch and transformers==4.39.3")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    golden = write_beam_golden(args.hf439_python, args.out)
    print(f"{args.out}: {len(golden['contexts'])} contexts ({golden['contexts_where_hf5_differs']} answered "
          f"differently by transformers 5), {len(golden['fake_cases'])} fake-model cases")


if __name__ == "__main__":
    main()
