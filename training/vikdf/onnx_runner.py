"""A small reference runtime for bundles on onnxruntime (Python).

It follows docs/bundle-format.md step by step, so it doubles as the readable reference for other runtimes
(the TypeScript core implements the same rules). Greedy and beam search reproduce Hugging Face `generate`
exactly: beam search by default as transformers 4.39.3, the version the official VIKDF code pins
(`stop_rule="hf-4.39"`), or as transformers 5 (`stop_rule="hf-5"`); the tests compare them against the PyTorch
model and against transformers 4.39.3 itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .beam import BEAM_STOP_RULES, BeamSearch
from .data import DialogueFormatter, PromptSettings, load_tokenizer
from .export import sha256_file


class BundleError(ValueError):
    pass


def load_manifest(bundle: Path, verify: bool = True) -> dict:
    bundle = Path(bundle)
    path = bundle / "manifest.json"
    if not path.is_file():
        raise BundleError(f"{path}: manifest.json is missing")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != "vikdf-bundle" or manifest.get("format_version") != 1:
        raise BundleError(f"{path}: not a version 1 vikdf-bundle manifest")
    if verify:
        for rel, digest in manifest["files"].items():
            f = bundle / rel
            if not f.is_file():
                raise BundleError(f"{f}: listed in manifest.json but missing")
            if sha256_file(f) != digest:
                raise BundleError(f"{f}: sha256 differs from manifest.json")
    return manifest


class BundleRunner:
    def __init__(self, bundle: str | Path, variant: str | None = None, verify: bool = True):
        self.dir = Path(bundle)
        self.manifest = load_manifest(self.dir, verify)
        self.formatter = DialogueFormatter(
            load_tokenizer(self.dir / "text_tokenizer" / "tokenizer.json"),
            load_tokenizer(self.dir / "llm_tokenizer" / "tokenizer.json"),
            PromptSettings.from_manifest(self.manifest),
        )
        files = {g: spec["file"] for g, spec in self.manifest["graphs"].items()}
        if variant:
            files.update(self.manifest["variants"][variant])
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # Float activations for int8-weight MatMuls, as the TypeScript runtime does (docs/bundle-format.md): ORT's
        # default fusion to MatMulNBits at accuracy level 4 would quantise them with CPU-specific kernels.
        opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
        self.sessions = {g: ort.InferenceSession(str(self.dir / f), opts, providers=["CPUExecutionProvider"]) for g, f in files.items()}
        m = self.manifest["model"]
        self.num_layers, self.kv_heads, self.head_dim = m["llm_num_layers"], m["llm_num_key_value_heads"], m["llm_head_dim"]
        self.tokens = self.manifest["tokens"]

    # -- graphs ---------------------------------------------------------------------------------------
    def encode_knowledge(self, text_rows: list[list[int]]):
        pad = self.tokens["text_pad_token_id"]
        width = max(len(r) for r in text_rows)
        ids = np.full((len(text_rows), width), pad, dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, r in enumerate(text_rows):
            ids[i, : len(r)], mask[i, : len(r)] = r, 1
        vectors, embeds = self.sessions["knowledge_encoder"].run(None, {"input_ids": ids, "attention_mask": mask})
        return vectors, embeds

    def embed(self, ids: list[int]) -> np.ndarray:
        return self.sessions["embed_tokens"].run(None, {"input_ids": np.array([ids], dtype=np.int64)})[0][0]

    def decoder_step(self, embeds, mask, past):
        pos = np.cumsum(mask, axis=-1) - 1
        pos = np.where(mask == 0, 1, pos)[:, -embeds.shape[1] :]
        feeds = {"inputs_embeds": embeds.astype(np.float32), "attention_mask": mask.astype(np.int64), "position_ids": pos.astype(np.int64)}
        for i in range(self.num_layers):
            feeds[f"past_key_values.{i}.key"], feeds[f"past_key_values.{i}.value"] = past[2 * i], past[2 * i + 1]
        out = self.sessions["decoder_model_merged"].run(None, feeds)
        return out[0], out[1:]

    def empty_past(self, batch: int):
        return [np.zeros((batch, self.kv_heads, 0, self.head_dim), dtype=np.float32) for _ in range(2 * self.num_layers)]

    # -- prompt ---------------------------------------------------------------------------------------
    def prefill_inputs(self, conversations: list[list[str]]):
        """Left-padded spliced embeddings and mask for a batch of contexts (bundle-format steps 1-7)."""
        inputs = [self.formatter(turns) for turns in conversations]
        _, knowledge = self.encode_knowledge([x.text_ids for x in inputs])
        rows = []
        for x, k in zip(inputs, knowledge):
            emb = self.embed(x.prompt_ids)
            rows.append(np.concatenate([emb[: x.splice_at], k, emb[x.splice_at :]]))
        width = max(len(r) for r in rows)
        pad_embed = self.embed([self.tokens["llm_pad_token_id"]])[0]
        embeds = np.stack([np.concatenate([np.repeat(pad_embed[None], width - len(r), 0), r]) for r in rows])
        mask = np.stack([np.r_[np.zeros(width - len(r), np.int64), np.ones(len(r), np.int64)] for r in rows])
        return inputs, knowledge, embeds, mask

    def _replace(self, ids: list[int]) -> list[int]:
        table = {int(k): v for k, v in self.tokens["replace_generated"].items()}
        return [table.get(t, t) for t in ids]

    # -- decoding -------------------------------------------------------------------------------------
    def greedy(self, conversations, max_new_tokens: int) -> list[list[int]]:
        eos = self.tokens["llm_eos_token_id"]
        _, _, embeds, mask = self.prefill_inputs(conversations)
        past = self.empty_past(len(conversations))
        out = [[] for _ in conversations]
        done = [False] * len(conversations)
        for _ in range(max_new_tokens):
            logits, past = self.decoder_step(embeds, mask, past)
            next_ids = logits[:, -1].argmax(-1)
            for i, t in enumerate(next_ids):
                if not done[i]:
                    out[i].append(int(t))
                    done[i] = int(t) == eos
            if all(done):
                break
            # Finished rows keep feeding a pad token, as Hugging Face does; their output is already closed.
            feed = [self.tokens["llm_pad_token_id"] if d and o[-1] != eos else o[-1] for o, d in zip(out, done)]
            embeds = np.stack([self.embed([t]) for t in feed])
            mask = np.concatenate([mask, np.ones((len(out), 1), np.int64)], axis=1)
        return [self._replace(o) for o in out]

    def beam_search(self, conversations, max_new_tokens: int, num_beams=3, no_repeat_ngram_size=3, length_penalty=1.0,
                    stop_rule: str = "hf-4.39") -> list[list[int]]:
        """Hugging Face beam search (early_stopping=False), one conversation at a time; `stop_rule` picks the
        transformers version whose rules it follows: "hf-4.39" (the official code's) or "hf-5" (vikdf/beam.py)."""
        if stop_rule not in BEAM_STOP_RULES:
            raise ValueError(f"stop_rule must be one of {BEAM_STOP_RULES}, got {stop_rule!r}")
        return [self._beam_one(turns, max_new_tokens, num_beams, no_repeat_ngram_size, length_penalty, stop_rule)
                for turns in conversations]

    def _beam_one(self, turns, max_new, k, ngram, lp, stop_rule):
        search = BeamSearch(k, max_new, self.tokens["llm_eos_token_id"], ngram, lp, False, stop_rule)
        _, _, embeds, mask = self.prefill_inputs([turns])
        embeds, mask = np.repeat(embeds, k, 0), np.repeat(mask, k, 0)
        past = self.empty_past(k)
        while True:
            logits, past = self.decoder_step(embeds, mask, past)
            parents, tokens = search.step(logits[:, -1])
            if search.done:
                return self._replace(search.result())
            past = [p[parents] for p in past]
            mask = np.concatenate([mask[parents], np.ones((k, 1), np.int64)], axis=1)
            embeds = np.stack([self.embed([t]) for t in tokens])
