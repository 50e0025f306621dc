"""The tokenizer and chat template of a GGUF (`tokenizer.*` metadata) as `tokenizer.json` + `tokenizer_config.json`.

Only llama.cpp's byte-level BPE (`tokenizer.ggml.model = "gpt2"`) is supported. The pre-tokenizer follows
llama.cpp's rule for the file's `tokenizer.ggml.pre`:

- `smollm` and the other StarCoder-style vocabularies: every numeral (`\\p{N}`) is its own piece, then the
  GPT-2 split. (transformers' GGUF loader drops the numeral rule; SmolLM2's vocabulary has no multi-digit
  tokens, so ids agree there, but a vocabulary with such merges would differ: the tests check both.)
- `gpt-2`: the GPT-2 split alone.

Control tokens (type 3) become special added tokens and user-defined ones (type 4) plain added tokens; both
match whole before any splitting, as in llama.cpp. Bytes without a token are dropped (no unknown token). No BOS is added unless `tokenizer.ggml.add_bos_token` says so.
"""

from __future__ import annotations

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

# llama.cpp pre-tokenizer names whose rule is "each numeral alone, then GPT-2" (llama-vocab.cpp).
NUMERAL_SPLIT_PRE = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
GPT2_PRE = {"gpt-2"}

CONTROL, USER_DEFINED = 3, 4


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (GPT-2's table)."""
    return list(pre_tokenizers.ByteLevel.alphabet())


def _pre_tokenizer(pre: str, add_space_prefix: bool):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=add_space_prefix, use_regex=True, trim_offsets=False)
    if pre in NUMERAL_SPLIT_PRE:
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"), byte_level])
    if pre in GPT2_PRE:
        return byte_level
    supported = ", ".join(sorted(NUMERAL_SPLIT_PRE | GPT2_PRE))
    raise ValueError(f"tokenizer.ggml.pre = {pre!r} is not supported (supported: {supported})")


def build_tokenizer(src) -> Tokenizer:
    """`src` is a vikdf.gguf_import.GGUFSource (anything with `.get(key)` / `.require(key)`)."""
    model = src.require("tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"tokenizer.ggml.model = {model!r}; only byte-level BPE ('gpt2') is supported")
    tokens: list[str] = list(src.require("tokenizer.ggml.tokens"))
    types: list[int] = list(src.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in src.require("tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("tokenizer.ggml.tokens has duplicates")
    # A byte without a token (SmolLM2 lacks 21: some C0 controls, bytes UTF-8 never uses) is dropped, as
    # llama.cpp and BPE without an unknown token do; but the letters and digits of ASCII must be there.
    missing = [s for s in _byte_symbols() if s.isascii() and s.isalnum() and s not in vocab]
    if missing:
        raise ValueError(f"byte-level vocabulary lacks ASCII byte tokens, e.g. {missing[:3]}")
    bad = [m for m in merges if len(m) != 2 or m[0] + m[1] not in vocab]
    if bad:
        raise ValueError(f"{len(bad)} merges do not produce a vocabulary token, e.g. {bad[:3]}")

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = _pre_tokenizer(src.get("tokenizer.ggml.pre", "gpt-2"), bool(src.get("tokenizer.ggml.add_space_prefix", False)))
    tok.decoder = decoders.ByteLevel()
    added = [AddedToken(tokens[i], special=t == CONTROL, normalized=False) for i, t in enumerate(types) if t in (CONTROL, USER_DEFINED)]
    tok.add_tokens(added)  # ids already in the vocabulary: the ids stay, the tokens match whole
    bos = src.get("tokenizer.ggml.bos_token_id")
    if src.get("tokenizer.ggml.add_bos_token", False) and bos is not None:
        name = tokens[int(bos)]
        tok.post_processor = processors.TemplateProcessing(single=f"{name} $A", pair=f"{name} $A {name} $B",
                                                            special_tokens=[(name, int(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def tokenizer_config(src) -> dict:
    """tokenizer_config.json for transformers' PreTrainedTokenizerFast, with the GGUF's chat template."""
    tokens = src.require("tokenizer.ggml.tokens")
    config: dict = {"tokenizer_class": "PreTrainedTokenizerFast"}
    for name, key in (("bos", "bos_token"), ("eos", "eos_token"), ("unknown", "unk_token"), ("padding", "pad_token")):
        value = src.get(f"tokenizer.ggml.{name}_token_id")
        if value is not None:
            config[key] = tokens[int(value)]
    config["add_bos_token"] = bool(src.get("tokenizer.ggml.add_bos_token", False))
    config["add_eos_token"] = bool(src.get("tokenizer.ggml.add_eos_token", False))
    config["clean_up_tokenization_spaces"] = False
    config["model_max_length"] = int(src.get("llama.context_length", 2048))
    template = src.get("tokenizer.chat_template")
    if template is not None:
        config["chat_template"] = template
    return config
