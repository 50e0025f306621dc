"""The training CLI end to end on a tiny model: pretrain (all five objectives), resume, the text-only dialogue
stage with evaluation, eval and export commands."""

import json
import random

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vikdf.cli import main
from vikdf.onnx_runner import BundleRunner
from vikdf.tiny import save_tokenizers, tiny_config
from vikdf.train import RunConfig, lr_factor, train

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (230, 220, 40)}
SHAPES = ["square", "bar", "dot"]


def make_pairs(root, n=12):
    rows, rng = [], random.Random(0)
    for i in range(n):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        img = Image.new("RGB", (40, 32), (255, 255, 255))
        box = {"square": (8, 4, 32, 28), "bar": (2, 12, 38, 20), "dot": (16, 12, 24, 20)}[shape]
        img.paste(COLOURS[colour], box)
        path = root / f"img{i}.png"
        img.save(path)
        rows.append({"image": str(path), "caption": f"a {colour} {shape} on white"})
    return rows


DIALOGUES = [
    {"context": ["hello there", "hi! how are you?", "good, thanks. what about you?"], "response": "i am fine, thank you."},
    {"context": ["do you like pizza?", "yes, with mushrooms."], "response": "me too, and cheese."},
    {"context": ["what did you do at the weekend?"], "response": "i went hiking in the mountains."},
    {"context": ["the weather is nice today"], "response": "yes, let us go to the park."},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    text_tok, llm_tok = save_tokenizers(root / "tok")
    pairs = write_jsonl(root / "pairs.jsonl", make_pairs(root))
    dialogues = write_jsonl(root / "dialogues.jsonl", DIALOGUES)
    return {"root": root, "text_tok": str(text_tok), "llm_tok": str(llm_tok), "pairs": pairs, "dialogues": dialogues}


def pretrain_config(w, out, steps):
    return RunConfig(
        stage="pretrain", out_dir=str(out), model=tiny_config().to_dict(), text_tokenizer=w["text_tok"],
        llm_tokenizer=w["llm_tok"], train_data=w["pairs"], prompt={"text_max_length": 16, "prompt_max_length": 64},
        tokens={"llm_bos_token_id": 1, "llm_eos_token_id": 2, "llm_pad_token_id": 2, "text_pad_token_id": 1},
        batch_size=3, grad_accum=1, lr=1e-3, max_steps=steps, warmup_steps=2, save_every=2, seed=5,
    )


@pytest.fixture(scope="module")
def pretrained(workdir):
    """4 pre-training steps in one go."""
    return train(pretrain_config(workdir, workdir["root"] / "straight", 4), log=lambda *_: None)


def test_pretrain_resume_is_exact(workdir, pretrained):
    """4 steps in one go == 2 steps, stop, resume for 2 more (weights bit-identical)."""
    straight = pretrained
    first = pretrain_config(workdir, workdir["root"] / "resumed", 2)
    train(first, log=lambda *_: None)
    second = pretrain_config(workdir, workdir["root"] / "resumed", 4)
    messages = []
    resumed = train(second, resume=True, log=messages.append)
    assert any("resumed" in m and "step 2" in m for m in messages)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (workdir["root"] / "straight" / "log.jsonl").read_text().splitlines()]
    assert {"tim", "tmim", "imtm", "i2t", "t2i"} <= set(log[0])  # all five objectives ran


def test_dialogue_stage_eval_and_export(workdir, pretrained, capsys):
    config = {
        "stage": "dialogue", "out_dir": "dialogue", "init_from": str(pretrained),
        "train_data": workdir["dialogues"], "eval_data": workdir["dialogues"], "batch_size": 2, "grad_accum": 1,
        "lr": 1e-3, "epochs": 2, "warmup_steps": 0, "schedule": "linear", "weight_decay": 0.0, "save_every": 100,
        "generation": {"num_beams": 3, "no_repeat_ngram_size": 3, "max_new_tokens": 6},
    }
    path = workdir["root"] / "dialogue.json"
    path.write_text(json.dumps(config))
    main(["train", str(path)])
    final = workdir["root"] / "dialogue" / "final"
    state = load_file(str(final / "model.safetensors"))
    assert not any(k.startswith(("vision_encoder.", "visual_tb.")) for k in state)  # dialogue model: no pre-training heads
    pre = load_file(str(pretrained / "model.safetensors"))
    assert torch.equal(state["language_model.lm_head.weight"], pre["language_model.lm_head.weight"])  # LLM frozen
    assert not torch.equal(state["language_projection.weight"], pre["language_projection.weight"])
    evals = [json.loads(line)["eval"] for line in (workdir["root"] / "dialogue" / "log.jsonl").read_text().splitlines() if "eval" in line]
    assert len(evals) == 2  # one evaluation per epoch

    capsys.readouterr()
    main(["eval", str(final), workdir["dialogues"], "--generation", '{"num_beams": 1, "max_new_tokens": 5}', "--out", str(workdir["root"] / "eval")])
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"bleu_1", "bleu_2", "rouge_l", "distinct_1", "distinct_2", "perplexity"}
    assert result["examples"] == 4 and result["perplexity"] > 1.0
    assert len((workdir["root"] / "eval" / "results_hyp.txt").read_text().splitlines()) == 4

    main(["export", str(final), str(workdir["root"] / "bundle")])
    runner = BundleRunner(workdir["root"] / "bundle")
    assert len(runner.greedy([DIALOGUES[0]["context"]], 4)[0]) >= 1


def test_log_warmup_matches_deepspeed_warmup_lr():
    run = RunConfig(stage="pretrain", out_dir="x", warmup_steps=10_000, warmup="log")
    assert lr_factor(0, run, 100_000) == 0.0
    assert abs(lr_factor(99, run, 100_000) - 0.5) < 1e-12  # log(100)/log(10000)
    assert lr_factor(50_000, run, 100_000) == 1.0
    linear = RunConfig(stage="dialogue", out_dir="x", warmup_steps=0, schedule="linear")
    assert lr_factor(0, linear, 10) == 1.0 and lr_factor(5, linear, 10) == 0.5


def test_bad_run_config_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stage": "pretrain", "out_dir": "o", "learning_rate": 1}))
    with pytest.raises(ValueError, match="unknown run config keys: learning_rate"):
        RunConfig.load(bad)
