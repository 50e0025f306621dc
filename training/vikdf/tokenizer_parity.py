"""Tokenizer and chat-template parity between Python and TypeScript.

`vikdf-train tokenizer-parity TOKENIZER_DIR OUT.json` encodes PARITY_CORPUS with `tokenizers` (the
directory's tokenizer.json, no special tokens added) and renders PARITY_CHATS with the directory's chat
template (jinja2 defaults, as vikdf/data.py renders templates), then encodes the renderings. The TypeScript
test (packages/core/test/smollm2-tokenizer.test.ts) reads OUT.json and must produce the same text and ids.
"""

from __future__ import annotations

import json
from pathlib import Path

# Emoji (with skin tone, ZWJ family, flag, variation selector), accents, CJK, numerals (ASCII and not),
# code, whitespace runs, ChatML markers inside text, contractions, a control character without a token.
PARITY_CORPUS = [
    "Hello, world! How are you today?",
    "Café crème, naïve façade, Ångström, São Paulo, Zürich, Dvořák, Łódź",
    "日本語のテキストと中文字符，한국어도 있어요。",
    "Emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 ❤️ 🇫🇷 🫠",
    "Digits 0123456789, 3.14159, 2024-12-04, 1,000,000 and ½ ² ٣ ① 〇",
    "def square(x):\n    return x ** 2  # squared\n\tif (a && b) { c[i] = 0; }\n",
    "a  b   c\t\td\n\n\ne    \n  trailing   ",
    "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>specials<|im_end|>glued<|im_start|>",
    "I'm sure they'll say it's fine, we've done what we'd planned. DON'T SHOUT",
    "bell\x07 and \x04 eot",
    "   leading spaces",
    " ",
    "Ünïcödé ✓ → ∞ ≠ ≤; math: ∑(xᵢ²) = 42",
    "https://example.com/path?q=1&x=y#frag <a href=\"x\">link</a>",
]

PARITY_CHATS = [
    [{"role": "user", "content": "Hi! What's 2+2? 😀"}],
    [
        {"role": "user", "content": "Tell me about Zürich."},
        {"role": "assistant", "content": "Zürich is a city in Switzerland.  It has 400,000 people."},
        {"role": "user", "content": "日本は？"},
    ],
    [{"role": "system", "content": "You are a friendly bot."}, {"role": "user", "content": "  spaces  "}],
]

# What the real-model checks (training/scripts/check_smollm2_*.py) ask SmolLM2: everyday chat, numbers, a persona.
CHECK_PROMPTS = [
    [{"role": "user", "content": "What do you think about cats?"}],
    [{"role": "user", "content": "Can you recommend a book?"}],
    [{"role": "user", "content": "Hi! How are you today?"}, {"role": "assistant", "content": "I'm great, thanks."},
     {"role": "user", "content": "What's 12 + 30?"}],
    [{"role": "system", "content": "You are a friendly bot."}, {"role": "user", "content": "Tell me about Zürich 🇨🇭."}],
]


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool = True) -> str:
    import jinja2

    return jinja2.Environment(autoescape=False).from_string(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt)


def parity_record(tokenizer_dir: str | Path) -> dict:
    from tokenizers import Tokenizer

    directory = Path(tokenizer_dir)
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    template = json.loads((directory / "tokenizer_config.json").read_text())["chat_template"]
    encode = lambda text: tok.encode(text, add_special_tokens=False).ids  # noqa: E731
    chats = []
    for messages in PARITY_CHATS:
        text = render_chat(template, messages)
        chats.append({"messages": messages, "add_generation_prompt": True, "text": text, "ids": encode(text)})
    return {
        "generator": "vikdf-train tokenizer-parity (training/vikdf/tokenizer_parity.py), Python tokenizers + jinja2",
        "texts": [{"text": t, "ids": encode(t)} for t in PARITY_CORPUS],
        "chats": chats,
    }


def write_parity(tokenizer_dir: str | Path, out: str | Path) -> dict:
    record = parity_record(tokenizer_dir)
    # One entry a line: reviewable diffs without a line per id.
    line = lambda v: json.dumps(v, ensure_ascii=False)  # noqa: E731
    parts = [f' "generator": {line(record["generator"])}']
    for key in ("texts", "chats"):
        parts.append(f' "{key}": [\n' + ",\n".join("  " + line(e) for e in record[key]) + "\n ]")
    Path(out).write_text("{\n" + ",\n".join(parts) + "\n}\n")
    return record
