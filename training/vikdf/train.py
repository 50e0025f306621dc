"""Training stages of VIKDF (spec 3 and 4), small and readable in the spirit of nanoGPT.

  pretrain   knowledge distillation + BVIF on image-text pairs: all five objectives in one joint run, as the
             official train.py does (TIM 0.5, TMIM 0.2, IMTM 0.2, I2T 1.0, T2I 0.5)
  dialogue   zero-resource dialogue stage: text-only dialogues, I2T path only, training the IQ-Former,
             the queries and the language projection (no image-grounded dialogue is ever used)

A run is described by a JSON config (see training/configs/). Checkpoints are directories:
  config.json (VIKDFConfig), model.safetensors (all weights), text_tokenizer.json, llm_tokenizer.json,
  prompt.json (formatting and token ids), trainer.pt (optimiser, scheduler, step, RNG: for --resume).
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .configuration import VIKDFConfig
from .data import (
    I2T_PRETRAINING_PREFIX,
    I2T_PROMPTS,
    T2I_PROMPTS,
    DialogueFormatter,
    MaskGenerator,
    PromptSettings,
    concat_text_input_output,
    dialogue_labels,
    encode,
    load_tokenizer,
    pad_right,
    pick_prompt,
    pretraining_labels,
    read_jsonl,
    select_text_for_masking,
    TokenSettings,
)
from .modeling import VIKDFModel

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class RunConfig:
    stage: str  # "pretrain" | "dialogue"
    out_dir: str
    model: dict | None = None  # VIKDFConfig fields (pretrain from scratch)
    init_from: str | None = None  # checkpoint directory to start from (dialogue stage: the pretrained model)
    text_tokenizer: str | None = None
    llm_tokenizer: str | None = None
    pretrained_text_encoder: str | None = None  # HF model directory whose weights the frozen encoder adopts
    pretrained_vision_encoder: str | None = None
    pretrained_llm: str | None = None
    pretrained_qformer: str | None = None  # HF BERT directory: the IQ-Former adopts its self-attention (spec 2.2)
    train_data: str = ""  # JSONL: {"image", "caption"} (pretrain) or {"context": [...], "response"} (dialogue)
    eval_data: str | None = None
    prompt: dict = field(default_factory=dict)  # PromptSettings fields
    tokens: dict = field(default_factory=dict)  # TokenSettings fields
    seed: int = 42
    batch_size: int = 4
    grad_accum: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.05
    max_steps: int = 100_000  # pretrain; the dialogue stage counts epochs
    epochs: int = 5
    warmup_steps: int = 10_000
    warmup: str = "log"  # official DeepSpeed WarmupLR is log-shaped (quirk 7.2); "linear" is the clean choice
    schedule: str = "constant"  # pretrain: constant after warmup; dialogue: "linear" decay to 0
    grad_clip: float = 1.0
    unchanged_ratio: float = 0.2
    mlm_probability: float = 0.15
    mask_ratio: float = 0.6
    mask_patch_size: int | None = None  # default 2 x the model patch (official 28 px for 14-px patches)
    label_rule: str = "official"  # dialogue labels: "official" (cumsum > 2) or "response_eos"
    save_every: int = 1000
    eval_every_epoch: bool = True
    max_eval_examples: int | None = None
    generation: dict = field(default_factory=lambda: {"num_beams": 3, "no_repeat_ngram_size": 3, "max_new_tokens": 32})

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        data = json.loads(Path(path).read_text())
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"{path}: unknown run config keys: {', '.join(unknown)}")
        base = Path(path).parent
        for key in ("out_dir", "init_from", "text_tokenizer", "llm_tokenizer", "train_data", "eval_data",
                    "pretrained_text_encoder", "pretrained_vision_encoder", "pretrained_llm", "pretrained_qformer"):
            if data.get(key):
                data[key] = str((base / data[key]).resolve()) if not Path(data[key]).is_absolute() else data[key]
        return cls(**data)


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------
def save_checkpoint(path: Path, model: VIKDFModel, text_tok: Path, llm_tok: Path, prompt: PromptSettings, tokens: TokenSettings, trainer_state: dict | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.config.save(tmp / "config.json")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    shutil.copyfile(text_tok, tmp / "text_tokenizer.json")
    shutil.copyfile(llm_tok, tmp / "llm_tokenizer.json")
    (tmp / "prompt.json").write_text(json.dumps({"prompt": asdict(prompt), "tokens": asdict(tokens)}, indent=2) + "\n")
    if trainer_state is not None:
        torch.save(trainer_state, tmp / "trainer.pt")
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)  # a crash never leaves a half-written checkpoint under the real name


def load_checkpoint(path: str | Path, pretraining: bool | None = None):
    """Returns (model, prompt settings, token settings). `pretraining=False` drops the pre-training heads."""
    path = Path(path)
    config = VIKDFConfig.load(path / "config.json")
    state = load_file(str(path / "model.safetensors"))
    has_heads = any(k.startswith("visual_tb.") for k in state)
    model = VIKDFModel(config, pretraining=has_heads if pretraining is None else pretraining and has_heads)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {', '.join(missing[:10])}")
    model.load_state_dict({k: v for k, v in state.items() if k in own})
    meta = json.loads((path / "prompt.json").read_text())
    return model, PromptSettings(**meta["prompt"]), TokenSettings(**meta["tokens"])


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------
def load_image(path: str, size: int) -> torch.Tensor:
    """CLIP preprocessing: shortest side to `size` (bicubic), centre crop, /255, CLIP mean/std."""
    from PIL import Image

    img = Image.open(path)
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]


class PretrainCollator:
    """The official pre-training collate_fn (spec 3.3), with our tokenizers."""

    def __init__(self, model: VIKDFModel, text_tok, llm_tok, run: RunConfig, tokens: TokenSettings, settings: PromptSettings, rng: random.Random):
        self.text_tok, self.llm_tok, self.run, self.tokens, self.rng = text_tok, llm_tok, run, tokens, rng
        self.image_size, patch = model.image_size, model.patch_size
        self.mask_gen = MaskGenerator(self.image_size, run.mask_patch_size or 2 * patch, patch, run.mask_ratio,
                                      rng=np.random.RandomState(run.seed))
        self.eos_text = llm_tok.id_to_token(tokens.llm_eos_token_id)
        self.text_max = settings.text_max_length
        self.llm_max = 256  # official max_seq_length for the LLM texts
        self.special_text_ids = {i for tok, i in text_tok.get_vocab(with_added_tokens=True).items() if tok in _special_tokens(text_tok)}
        self.bias = len(encode(llm_tok, I2T_PRETRAINING_PREFIX, None))
        self.torch_rng = torch.Generator().manual_seed(run.seed)

    def state(self) -> dict:
        return {"mask_rng": self.mask_gen.rng.get_state(), "mlm_rng": self.torch_rng.get_state()}

    def load_state(self, state: dict) -> None:
        self.mask_gen.rng.set_state(state["mask_rng"])
        self.torch_rng.set_state(state["mlm_rng"])

    def __call__(self, examples: list[dict]) -> dict:
        captions = [e["caption"].strip() if e["caption"].strip().endswith(".") else e["caption"].strip() + "." for e in examples]
        pad = self.tokens.llm_pad_token_id
        text_ids, text_mask = pad_right([encode(self.text_tok, c, self.text_max) for c in captions], self.tokens.text_pad_token_id)
        t2i = [f"{pick_prompt(T2I_PROMPTS, self.rng)} {c} Image:" for c in captions]
        i2t = [f"{I2T_PRETRAINING_PREFIX} {pick_prompt(I2T_PROMPTS, self.rng)}" for c in captions]
        t2i_ids, t2i_mask = pad_right([encode(self.llm_tok, t, self.llm_max) for t in t2i], pad)
        prompt_ids, prompt_mask = pad_right([encode(self.llm_tok, t, self.llm_max) for t in i2t], pad)
        cap_ids, cap_mask = pad_right([encode(self.llm_tok, c + self.eos_text, self.llm_max) for c in captions], pad)
        ids, mask, lengths = concat_text_input_output(prompt_ids, prompt_mask, cap_ids, cap_mask)
        masked_indices, masked_labels = select_text_for_masking(text_ids, self.special_text_ids, self.run.mlm_probability, self.torch_rng)
        return {
            "text_input_ids": text_ids, "text_attention_mask": text_mask,
            "i2t_llm_input_ids": ids, "i2t_llm_attention_mask": mask, "labels": pretraining_labels(ids, lengths, pad),
            "t2i_llm_input_ids": t2i_ids, "t2i_llm_attention_mask": t2i_mask,
            "pixel_values": torch.stack([load_image(e["image"], self.image_size) for e in examples]),
            "bool_masked_pos": torch.stack([self.mask_gen() for _ in examples]),
            "masked_indices": masked_indices, "masked_text_labels": masked_labels,
            "bias": self.bias,
        }


class DialogueCollator:
    """The official dialogue collate_fn (inference.py): prompt with the chat template, response + </s>."""

    def __init__(self, formatter: DialogueFormatter, tokens: TokenSettings, label_rule: str):
        self.fmt, self.tokens, self.label_rule = formatter, tokens, label_rule
        self.eos_text = formatter.llm_tokenizer.id_to_token(tokens.llm_eos_token_id)

    def __call__(self, examples: list[dict]) -> dict:
        pad = self.tokens.llm_pad_token_id
        inputs = [self.fmt(e["context"], e.get("knowledge_context")) for e in examples]
        biases = {x.splice_at for x in inputs}
        if len(biases) != 1:
            raise ValueError(f"the chat template gives different splice points in one batch: {sorted(biases)}")
        text_ids, text_mask = pad_right([x.text_ids for x in inputs], self.tokens.text_pad_token_id)
        prompt_ids, prompt_mask = pad_right([x.prompt_ids for x in inputs], pad)
        resp = [encode(self.fmt.llm_tokenizer, e["response"].strip() + self.eos_text, self.fmt.settings.response_max_length) for e in examples]
        resp_ids, resp_mask = pad_right(resp, pad)
        ids, mask, lengths = concat_text_input_output(prompt_ids, prompt_mask, resp_ids, resp_mask)
        return {
            "text_input_ids": text_ids, "text_attention_mask": text_mask,
            "i2t_llm_input_ids": ids, "i2t_llm_attention_mask": mask,
            "labels": dialogue_labels(ids, lengths, pad, self.label_rule),
            "bias": biases.pop(),
        }

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


def _special_tokens(tok) -> set[str]:
    return {t.content for t in tok.get_added_tokens_decoder().values() if t.special}


# ---------------------------------------------------------------------------------------------------
# Optimisation
# ---------------------------------------------------------------------------------------------------
def lr_factor(step: int, run: RunConfig, total_steps: int) -> float:
    if run.warmup_steps and step < run.warmup_steps:
        if run.warmup == "log":  # DeepSpeed WarmupLR(warmup_type="log"): log(step+1)/log(warmup)
            return math.log(step + 1) / math.log(run.warmup_steps) if run.warmup_steps > 1 else 1.0
        return (step + 1) / run.warmup_steps
    if run.schedule == "linear":
        span = max(total_steps - run.warmup_steps, 1)
        return max(0.0, 1.0 - (step - run.warmup_steps) / span)
    return 1.0


def make_optimizer(model: VIKDFModel, run: RunConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            is_norm = "LayerNorm" in name or ".norm" in name or "layernorm" in name
            (no_decay if name.endswith("bias") or is_norm else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": run.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=run.lr)


def _forward(model, batch):
    kwargs = {k: v for k, v in batch.items() if k != "bias"}
    return model(bias=batch["bias"], **kwargs)


# ---------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------
def build_for_run(run: RunConfig):
    """Model, tokenizer paths, prompt and token settings for a fresh run or one that starts from a checkpoint."""
    if run.init_from:
        model, prompt, tokens = load_checkpoint(run.init_from, pretraining=run.stage == "pretrain")
        text_tok = Path(run.text_tokenizer or Path(run.init_from) / "text_tokenizer.json")
        llm_tok = Path(run.llm_tokenizer or Path(run.init_from) / "llm_tokenizer.json")
        if run.prompt:
            prompt = PromptSettings(**{**asdict(prompt), **run.prompt})
        return model, text_tok, llm_tok, prompt, tokens
    if not (run.model and run.text_tokenizer and run.llm_tokenizer):
        raise ValueError("a run without init_from needs model, text_tokenizer and llm_tokenizer")
    torch.manual_seed(run.seed)
    config = VIKDFConfig.from_dict(run.model)
    config.unchanged_ratio = run.unchanged_ratio
    model = VIKDFModel(config, pretraining=run.stage == "pretrain")
    adopt_pretrained(model, run)
    return model, Path(run.text_tokenizer), Path(run.llm_tokenizer), PromptSettings(**run.prompt), TokenSettings(**run.tokens)


def adopt_pretrained(model: VIKDFModel, run: RunConfig) -> None:
    """Load the frozen parts from Hugging Face model directories (local files only)."""
    for attr, path in (("text_encoder", run.pretrained_text_encoder), ("vision_encoder", run.pretrained_vision_encoder),
                       ("language_model", run.pretrained_llm)):
        if path and hasattr(model, attr):
            module = getattr(model, attr)
            loaded = type(module).from_pretrained(path, local_files_only=True)
            missing, unexpected = module.load_state_dict(loaded.state_dict(), strict=False)
            if missing:
                raise ValueError(f"{path}: pretrained {attr} lacks {', '.join(missing[:10])}")
    if run.pretrained_qformer:
        adopt_bert_into_iq_former(model, run.pretrained_qformer)
    model.freeze()


def adopt_bert_into_iq_former(model: VIKDFModel, path: str) -> list[str]:
    """As the official code initialises its Q-Former from bert-base-uncased: the embedding LayerNorm and every
    layer's self-attention come from BERT; cross-attention and the query feed-forward stay random (BERT's own
    feed-forward is dropped, unlike BLIP-2). Returns the IQ-Former keys that were loaded."""
    from transformers import BertModel

    bert = BertModel.from_pretrained(path, local_files_only=True).state_dict()
    own = model.qformer.state_dict()
    wanted = [k for k in own if k.startswith("embeddings.LayerNorm.") or ".attention." in k]
    missing = [k for k in wanted if k not in bert]
    if missing:
        raise ValueError(f"{path}: BERT checkpoint lacks {', '.join(missing[:10])}")
    wrong = [k for k in wanted if bert[k].shape != own[k].shape]
    if wrong:
        raise ValueError(f"{path}: BERT shapes differ from the IQ-Former's for {', '.join(wrong[:10])}")
    model.qformer.load_state_dict({k: bert[k] for k in wanted}, strict=False)
    return wanted


def train(run: RunConfig, resume: bool = False, log=print) -> Path:
    out = Path(run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(run.seed)
    torch.manual_seed(run.seed)
    model, text_tok_path, llm_tok_path, prompt, tokens = build_for_run(run)
    model.config.unchanged_ratio = run.unchanged_ratio
    text_tok, llm_tok = load_tokenizer(text_tok_path), load_tokenizer(llm_tok_path)
    examples = read_jsonl(run.train_data)
    if not examples:
        raise ValueError(f"{run.train_data}: no training examples")
    if run.stage == "pretrain":
        collate = PretrainCollator(model, text_tok, llm_tok, run, tokens, prompt, rng)
        total_steps = run.max_steps
    elif run.stage == "dialogue":
        collate = DialogueCollator(DialogueFormatter(text_tok, llm_tok, prompt), tokens, run.label_rule)
        steps_per_epoch = math.ceil(len(examples) / (run.batch_size * run.grad_accum))
        total_steps = steps_per_epoch * run.epochs
    else:
        raise ValueError(f"unknown stage {run.stage!r}; use pretrain or dialogue")

    optimizer = make_optimizer(model, run)
    step = 0
    order: list[int] = []  # example indices left in the current pass over the data
    last = out / "last"
    if resume and (last / "trainer.pt").is_file():
        model, _, _ = load_checkpoint(last, pretraining=run.stage == "pretrain")
        model.config.unchanged_ratio = run.unchanged_ratio
        optimizer = make_optimizer(model, run)
        state = torch.load(last / "trainer.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        step, order = state["step"], state["order"]
        rng.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
        collate.load_state(state["collate"])
        log(f"resumed from {last} at step {step}")

    def state():
        return {"optimizer": optimizer.state_dict(), "step": step, "order": list(order), "python_rng": rng.getstate(),
                "torch_rng": torch.get_rng_state(), "collate": collate.state()}

    model.train()
    metrics_log = open(out / "log.jsonl", "a")
    bar = tqdm(total=total_steps, initial=step, desc=run.stage, dynamic_ncols=True)
    while step < total_steps:
        running: dict[str, float] = {}
        for _ in range(run.grad_accum):
            if not order:
                order = list(range(len(examples)))
                rng.shuffle(order)
            idx, order = order[: run.batch_size], order[run.batch_size :]
            out_ = _forward(model, collate([examples[i] for i in idx]))
            (out_.loss / run.grad_accum).backward()
            for name, value in {"loss": out_.loss, **out_.losses}.items():
                running[name] = running.get(name, 0.0) + value.item() / run.grad_accum
        for group in optimizer.param_groups:
            group["lr"] = run.lr * lr_factor(step, run, total_steps)
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), run.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{running['loss']:.4f}")
        metrics_log.write(json.dumps({"step": step, "lr": optimizer.param_groups[0]["lr"], **running}) + "\n")
        metrics_log.flush()
        if step % run.save_every == 0 or step == total_steps:
            save_checkpoint(last, model, text_tok_path, llm_tok_path, prompt, tokens, state())
        if run.stage == "dialogue" and run.eval_data and run.eval_every_epoch and step % steps_per_epoch == 0:
            from .evaluate import evaluate_checkpoint_model

            result = evaluate_checkpoint_model(model, text_tok, llm_tok, prompt, tokens, run.eval_data, run.generation, run.max_eval_examples)
            result["step"] = step
            log(json.dumps(result))
            metrics_log.write(json.dumps({"eval": result}) + "\n")
            model.train()
    bar.close()
    metrics_log.close()
    final = out / "final"
    save_checkpoint(final, model, text_tok_path, llm_tok_path, prompt, tokens)
    return final
