"""Export a VIKDF model to the ONNX bundle that @vikdf/core runs (docs/bundle-format.md)."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from . import __version__
from .data import PromptSettings, TokenSettings
from .decoder import empty_past, export_decoder
from .modeling import VIKDFModel

FORMAT_VERSION = 1
OPSET = 17
GRAPH_FILES = {
    "knowledge_encoder": "onnx/knowledge_encoder.onnx",
    "embed_tokens": "onnx/embed_tokens.onnx",
    "decoder_model_merged": "onnx/decoder_model_merged.onnx",
}
OFFICIAL_GENERATION = {
    "num_beams": 3,
    "no_repeat_ngram_size": 3,
    "max_new_tokens": 32,
    "do_sample": False,
    "length_penalty": 1.0,
    "early_stopping": False,
}
ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64", onnx.TensorProto.FLOAT16: "float16"}


class KnowledgeEncoder(nn.Module):
    """Dialogue context ids -> (K, P(K)): frozen text encoder, IQ-Former, language projection."""

    def __init__(self, model: VIKDFModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.encode_context(input_ids, attention_mask)


class EmbedTokens(nn.Module):
    def __init__(self, language_model):
        super().__init__()
        self.embed = language_model.get_input_embeddings()

    def forward(self, input_ids):
        return self.embed(input_ids)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _onnx_export(module, args, path: Path, input_names, output_names, dynamic_axes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A wrapper module starts in training mode, and the exporter restores that mode on everything inside it
    # afterwards; put it in eval mode so the model is left (and traced) without dropout.
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but is what traces these graphs
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    onnx.checker.check_model(str(path))


def graph_signature(path: Path) -> dict:
    """Inputs and outputs of an ONNX graph as the manifest lists them."""
    model = onnx.load(str(path), load_external_data=False)

    def describe(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
            out.append({"name": v.name, "dtype": ONNX_DTYPES.get(t.elem_type, str(t.elem_type)), "shape": shape})
        return out

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def export_graphs(model: VIKDFModel, out_dir: Path) -> None:
    model = model.eval()
    # knowledge_encoder: example of batch 2 with padding, so both dimensions are traced as dynamic.
    ids = torch.tensor([[1, 5, 6, 7, 2], [1, 5, 2, 0, 0]]) % model.config.text_config().vocab_size
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    _onnx_export(
        KnowledgeEncoder(model),
        (ids, mask),
        out_dir / GRAPH_FILES["knowledge_encoder"],
        ["input_ids", "attention_mask"],
        ["knowledge_vectors", "knowledge_embeds"],
        {"input_ids": {0: "batch", 1: "text_sequence"}, "attention_mask": {0: "batch", 1: "text_sequence"},
         "knowledge_vectors": {0: "batch"}, "knowledge_embeds": {0: "batch"}},
    )
    _fix_output_shapes(
        out_dir / GRAPH_FILES["knowledge_encoder"],
        {"knowledge_vectors": ["batch", model.config.num_query_tokens, model.config.qformer_config().hidden_size],
         "knowledge_embeds": ["batch", model.config.num_query_tokens, model.config.llm_hidden_size()]},
    )
    export_embed_graph(model.language_model, out_dir / GRAPH_FILES["embed_tokens"])
    export_decoder_graph(model.language_model, model.config.llm_type, out_dir / GRAPH_FILES["decoder_model_merged"])


def export_embed_graph(language_model, path: Path) -> None:
    """The `embed_tokens` graph: LLM token ids -> input embeddings."""
    _onnx_export(
        EmbedTokens(language_model),
        (torch.tensor([[1, 2, 3]]),),
        path,
        ["input_ids"],
        ["inputs_embeds"],
        {"input_ids": {0: "batch", 1: "sequence"}, "inputs_embeds": {0: "batch", 1: "sequence"}},
    )


def export_decoder_graph(language_model, llm_type: str, path: Path) -> None:
    """The `decoder_model_merged` graph of a causal LM (float32; docs/bundle-format.md)."""
    decoder = export_decoder(language_model, llm_type).eval()
    n_layers_past = decoder.num_layers
    b, past_len, seq = 2, 3, 2
    hidden = language_model.get_input_embeddings().weight.shape[1]
    past = [t.normal_() for t in (torch.empty(b, decoder.num_kv_heads, past_len, decoder.head_dim) for _ in range(2 * n_layers_past))]
    past_names = [f"past_key_values.{i}.{kind}" for i in range(n_layers_past) for kind in ("key", "value")]
    present_names = [f"present.{i}.{kind}" for i in range(n_layers_past) for kind in ("key", "value")]
    axes = {"inputs_embeds": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "past_sequence + sequence"},
            "position_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
    axes.update({n: {0: "batch", 2: "past_sequence"} for n in past_names})
    axes.update({n: {0: "batch", 2: "past_sequence + sequence"} for n in present_names})
    _onnx_export(
        decoder,
        (torch.randn(b, seq, hidden), torch.ones(b, past_len + seq, dtype=torch.long),
         torch.arange(past_len, past_len + seq).repeat(b, 1), *past),
        path,
        ["inputs_embeds", "attention_mask", "position_ids", *past_names],
        ["logits", *present_names],
        axes,
    )


def _fix_output_shapes(path: Path, shapes: dict) -> None:
    """The tracer names the fixed query and hidden dimensions after internal nodes; state them plainly."""
    model = onnx.load(str(path))
    for value in model.graph.output:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, want in zip(dims, shapes[value.name]):
                if isinstance(want, str):
                    dim.dim_param = want
                else:
                    dim.dim_value = want
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_variants(out_dir: Path, variants: list[str]) -> dict:
    """Optional weight variants with the same inputs and outputs (float32 I/O kept)."""
    table: dict[str, dict[str, str]] = {}
    for variant in variants:
        table[variant] = {}
        for graph, rel in GRAPH_FILES.items():
            src = out_dir / rel
            dst_rel = rel.replace(".onnx", f"_{variant}.onnx")
            dst = out_dir / dst_rel
            if variant == "fp16":
                from onnxruntime.transformers.float16 import convert_float_to_float16

                converted = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
                onnx.save(converted, str(dst))
            elif variant == "int8":
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
            else:
                raise ValueError(f"unknown weight variant {variant!r}; known: fp16, int8")
            table[variant][graph] = dst_rel
    return table


def quantize_weights_int8(path: Path, min_size: int = 4096) -> int:
    """Weight-only int8: every large MatMul/Gemm/Gather weight becomes int8 with one scale per output channel
    (symmetric), and a DequantizeLinear restores it in float32 before use. Unlike dynamic quantisation,
    activations stay float32, so a row's output never depends on what else is in the batch. Returns the
    number of weights quantised."""
    import numpy as np
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    axis_of: dict[str, set[int]] = {}
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "MatMul" and len(node.input) > 1:
            name, axis = node.input[1], 1
        elif node.op_type == "Gemm" and len(node.input) > 1:
            name, axis = node.input[1], 0 if attrs.get("transB", 0) else 1
        elif node.op_type == "Gather" and attrs.get("axis", 0) == 0:
            name, axis = node.input[0], 0
        else:
            for name in node.input:
                axis_of.setdefault(name, set()).add(-1)  # used elsewhere too: leave it alone
            continue
        axis_of.setdefault(name, set()).add(axis)
    done = 0
    for name, axes in axis_of.items():
        tensor = inits.get(name)
        if tensor is None or len(axes) != 1 or -1 in axes or tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(tensor)
        if w.ndim != 2 or w.size < min_size:
            continue
        axis = axes.pop()
        scale = np.abs(w).max(axis=1 - axis) / 127.0
        scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
        shape = (-1, 1) if axis == 0 else (1, -1)
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        graph.initializer.remove(tensor)
        graph.initializer.extend([numpy_helper.from_array(q, name + "_int8"), numpy_helper.from_array(scale, name + "_scale"),
                                  numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), name + "_zero")])
        graph.node.insert(0, helper.make_node("DequantizeLinear", [name + "_int8", name + "_scale", name + "_zero"], [name],
                                              name=name + "_dequantize", axis=axis))
        done += 1
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return done


def count_parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def write_bundle(
    model: VIKDFModel,
    text_tokenizer: Path,
    llm_tokenizer: Path,
    out_dir: Path,
    settings: PromptSettings,
    tokens: TokenSettings,
    name: str,
    source: str = "export",
    generation: dict | None = None,
    variants: list[str] | None = None,
    quantize: list[str] | None = None,
) -> dict:
    """Writes a complete bundle directory and returns its manifest. `quantize` names graphs whose main file
    is written with int8 weights (dynamic quantisation, float32 inputs and outputs): a smaller bundle."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / "text_tokenizer").mkdir(parents=True)
    (out_dir / "llm_tokenizer").mkdir(parents=True)
    shutil.copyfile(text_tokenizer, out_dir / "text_tokenizer" / "tokenizer.json")
    shutil.copyfile(llm_tokenizer, out_dir / "llm_tokenizer" / "tokenizer.json")
    _check_llm_tokenizer(out_dir / "llm_tokenizer" / "tokenizer.json")

    export_graphs(model, out_dir)
    variant_table = make_variants(out_dir, variants or [])
    weights = {}
    for graph in quantize or []:
        if graph not in GRAPH_FILES:
            raise ValueError(f"cannot quantise unknown graph {graph!r}; graphs: {', '.join(GRAPH_FILES)}")
        quantize_weights_int8(out_dir / GRAPH_FILES[graph])
        weights[graph] = "int8"

    cfg = model.config
    decoder = export_decoder(model.language_model, cfg.llm_type)
    llm_cfg = cfg.llm_config()
    manifest = {
        "format": "vikdf-bundle",
        "format_version": FORMAT_VERSION,
        "name": name,
        "created_by": f"vikdf-training {__version__}",
        "source": source,
        "model": {
            "text_encoder": cfg.text_encoder_type,
            "llm_architecture": cfg.llm_type,
            "num_query_tokens": cfg.num_query_tokens,
            "qformer_hidden_size": cfg.qformer_config().hidden_size,
            "llm_hidden_size": cfg.llm_hidden_size(),
            "llm_num_layers": decoder.num_layers,
            "llm_num_key_value_heads": decoder.num_kv_heads,
            "llm_head_dim": decoder.head_dim,
            "llm_vocab_size": llm_cfg.vocab_size,
            "llm_max_position_embeddings": getattr(llm_cfg, "max_position_embeddings", None) or llm_cfg.n_positions,
            "parameters": {
                "text_encoder": count_parameters(model.text_encoder) + count_parameters(model.text_projection),
                "iq_former": count_parameters(model.qformer) + model.query_tokens.numel()
                + count_parameters(model.language_projection),
                "llm": count_parameters(model.language_model),
            },
        },
        "tokens": {
            "llm_bos_token_id": tokens.llm_bos_token_id,
            "llm_eos_token_id": tokens.llm_eos_token_id,
            "llm_pad_token_id": tokens.llm_pad_token_id,
            "text_pad_token_id": tokens.text_pad_token_id,
            "replace_generated": {str(k): v for k, v in tokens.replace_generated.items()},
        },
        "text_encoder_input": {
            "turn_separator": settings.turn_separator,
            "max_length": settings.text_max_length,
            "truncation": "right",
            "add_special_tokens": True,
        },
        "prompt": {
            "chat_template": settings.chat_template,
            "knowledge_placeholder": settings.knowledge_placeholder,
            "add_special_tokens": True,
            "max_length": settings.prompt_max_length,
            "truncation": "right",
        },
        "generation": dict(generation or OFFICIAL_GENERATION),
        "graphs": {g: {"file": rel, **graph_signature(out_dir / rel)} for g, rel in GRAPH_FILES.items()},
        "variants": variant_table,
    }
    if weights:
        manifest["weights"] = {g: weights.get(g, "float32") for g in GRAPH_FILES}
    files = sorted(p for p in out_dir.rglob("*") if p.is_file())
    manifest["files"] = {p.relative_to(out_dir).as_posix(): sha256_file(p) for p in files}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _check_llm_tokenizer(path: Path) -> None:
    """The splice rule needs an LLM tokenizer that adds special tokens only in front of the text."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    enc = tok.post_process(tok.encode("a", add_special_tokens=False), add_special_tokens=True)
    if enc.special_tokens_mask and enc.special_tokens_mask[-1] == 1:
        raise ValueError(f"{path}: the LLM tokenizer adds special tokens after the text; the splice rule needs none")
