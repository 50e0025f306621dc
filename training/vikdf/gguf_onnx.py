"""The GGUF's own quantised weights in an exported ONNX decoder, losslessly (issue 12, step 3).

A Q4_1 block (32 weights along the input dimension) stores w = d*q + m with fp16 d, m and q in 0..15: element j
in the low nibble and element j + 16 in the high nibble of byte j. Written as

    w = d*(q - 8) + (m + 8d)

the first term is a *symmetric* 4-bit `MatMulNBits` (com.microsoft; bits 4, block_size 32, no zero points, so
ONNX Runtime's default zero point 8 applies and its fast kernels run), the second a small float MatMul of the
per-block input sums [.., K/32] with c = m + 8d shaped [K/32, N]:

    y[n] = sum_b d[n,b] * sum_j (q[n,b,j] - 8) x[b,j]  +  sum_b c[b,n] * sum_j x[b,j]

which is x @ W.T exactly, up to float rounding. `MatMulNBits` packs element 2i in the low nibble and 2i + 1 in the
high nibble of byte i, so the nibbles are re-packed. A Q8_0 block (w = d*q, q int8) is an 8-bit `MatMulNBits`
with q + 128 (default zero point 128) and no correction.

`rewrite_embedding` does the same for the `embed_tokens` graph: the Q8_0 embedding as `GatherBlockQuantized`.
`rewrite_decoder` takes a float decoder graph exported from the imported checkpoint (vikdf/gguf_import.py,
vikdf/export.py `export_decoder_graph`) and replaces each MatMul whose weight initializer *is* the transposed,
dequantised GGUF tensor (matched by content, bit for bit) by its lossless pair; every other node is kept. The
content match makes the rewrite safe: a weight that was changed after import (training, another model) is left
alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .gguf_import import GGUFSource, dequantize, llama_config_dict, unpermute_qk

BLOCK = 32
Q4_1_BYTES = 20  # fp16 d, fp16 m, 16 bytes of nibbles
Q8_0_BYTES = 34  # fp16 d, 32 int8
MS_DOMAIN = "com.microsoft"
HEAD_MODES = ("float", "q8", "q8-level4")


@dataclass
class NBitsWeight:
    """Initializers of one weight matrix W [N, K] for `MatMulNBits` (+ the Q4_1 correction)."""

    bits: int
    n: int
    k: int
    packed: np.ndarray  # uint8 [N, K/32, 32*bits/8]
    scales: np.ndarray  # float32 [N, K/32]
    correction: np.ndarray | None = None  # float32 [K/32, N], Q4_1 only


def _blocks(raw: np.ndarray, rows: int, cols: int, block_bytes: int) -> np.ndarray:
    if cols % BLOCK:
        raise ValueError(f"input dimension {cols} is not a multiple of {BLOCK}")
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    if raw.size != rows * cols // BLOCK * block_bytes:
        raise ValueError(f"{raw.size} bytes for a [{rows}, {cols}] matrix of {block_bytes}-byte blocks")
    return raw.reshape(rows, cols // BLOCK, block_bytes)


def _fp16(blocks: np.ndarray, start: int) -> np.ndarray:
    return np.ascontiguousarray(blocks[..., start:start + 2]).view(np.float16)[..., 0].astype(np.float32)


def q4_1_weight(raw: np.ndarray, rows: int, cols: int) -> NBitsWeight:
    """Raw Q4_1 bytes of W [rows=N, cols=K] (rows in the order wanted) -> symmetric 4-bit MatMulNBits + correction."""
    blocks = _blocks(raw, rows, cols, Q4_1_BYTES)
    d, m = _fp16(blocks, 0), _fp16(blocks, 2)
    qs = blocks[..., 4:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # [N, K/32, 32]: element j low nibble, j + 16 high nibble
    packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)  # MatMulNBits: 2i low nibble, 2i + 1 high
    correction = (m + np.float32(8) * d).T.astype(np.float32)
    return NBitsWeight(4, rows, cols, np.ascontiguousarray(packed), d, np.ascontiguousarray(correction))


def q8_0_weight(raw: np.ndarray, rows: int, cols: int) -> NBitsWeight:
    """Raw Q8_0 bytes of W [N, K] -> 8-bit MatMulNBits (default zero point 128, no correction)."""
    blocks = _blocks(raw, rows, cols, Q8_0_BYTES)
    d = _fp16(blocks, 0)
    q = blocks[..., 2:].view(np.int8).astype(np.int16) + 128
    return NBitsWeight(8, rows, cols, np.ascontiguousarray(q.astype(np.uint8)), d)


def gguf_weight(tensor, unpermute_heads: int | None = None) -> NBitsWeight | None:
    """The NBitsWeight of a GGUF tensor (reader object), Q/K rows un-permuted; None for other types."""
    from gguf import GGMLQuantizationType as Q

    cols, rows = (int(x) for x in tensor.shape.tolist())
    make = {Q.Q4_1: (q4_1_weight, Q4_1_BYTES), Q.Q8_0: (q8_0_weight, Q8_0_BYTES)}.get(tensor.tensor_type)
    if make is None:
        return None
    fn, block_bytes = make
    raw = _blocks(tensor.data, rows, cols, block_bytes).reshape(rows, -1)
    if unpermute_heads:
        raw = unpermute_qk(raw, unpermute_heads)  # whole rows move: blocks stay intact
    return fn(raw, rows, cols)


def dequantized(weight: NBitsWeight) -> np.ndarray:
    """W [N, K] as the MatMulNBits pair computes it (float64 reference for tests and checks)."""
    if weight.bits == 4:
        q = np.stack([weight.packed & 0x0F, weight.packed >> 4], axis=-1).reshape(weight.n, -1, BLOCK)
        w = weight.scales[..., None].astype(np.float64) * (q.astype(np.float64) - 8)
        w += weight.correction.T[..., None]
    else:
        w = weight.scales[..., None].astype(np.float64) * (weight.packed.astype(np.float64) - 128)
    return w.reshape(weight.n, weight.k)


@dataclass
class _Builder:
    """New nodes and initializers; block sums of an input are built once and shared (q/k/v, gate/up)."""

    rank_of: dict
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    sums: dict = field(default_factory=dict)

    def block_sums(self, x: str, k: int) -> str:
        if (x, k) in self.sums:
            return self.sums[(x, k)]
        rank = self.rank_of.get(x)
        if rank is None or rank < 2:
            raise ValueError(f"rank of MatMul input {x!r} unknown; run shape inference first")
        base = f"{x}_blocks{BLOCK}".replace("/", "_")
        shape = numpy_helper.from_array(np.array([0] * (rank - 1) + [k // BLOCK, BLOCK], np.int64), base + "_shape")
        axes = numpy_helper.from_array(np.array([-1], np.int64), base + "_axes")
        self.inits += [shape, axes]
        self.nodes += [helper.make_node("Reshape", [x, shape.name], [base + "_split"], name=base + "_reshape"),
                       helper.make_node("ReduceSum", [base + "_split", axes.name], [base + "_sum"], name=base + "_sum",
                                        keepdims=0)]
        self.sums[(x, k)] = base + "_sum"
        return base + "_sum"


def nbits_nodes(b: _Builder, x: str, y: str, weight: NBitsWeight, prefix: str, accuracy_level: int = 0) -> None:
    """Nodes computing y = x @ W.T from `weight` (appended to the builder)."""
    packed = numpy_helper.from_array(weight.packed, prefix + "_nbits_B")
    scales = numpy_helper.from_array(weight.scales.astype(np.float32), prefix + "_nbits_scales")
    b.inits += [packed, scales]
    main = y if weight.correction is None else prefix + "_nbits_out"
    b.nodes.append(helper.make_node("MatMulNBits", [x, packed.name, scales.name], [main], name=prefix + "_nbits",
                                    domain=MS_DOMAIN, K=weight.k, N=weight.n, bits=weight.bits, block_size=BLOCK,
                                    accuracy_level=accuracy_level))
    if weight.correction is not None:
        corr = numpy_helper.from_array(weight.correction, prefix + "_q4_1_offset")
        b.inits.append(corr)
        sums = b.block_sums(x, weight.k)
        b.nodes += [helper.make_node("MatMul", [sums, corr.name], [prefix + "_offset_out"], name=prefix + "_offset"),
                    helper.make_node("Add", [main, prefix + "_offset_out"], [y], name=prefix + "_add")]


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


def gguf_weights(src: GGUFSource) -> dict[str, tuple[str, NBitsWeight]]:
    """digest of W.T (float32, as an exported MatMul holds it) -> (GGUF tensor name, NBitsWeight), for every
    Q4_1 / Q8_0 matrix of the GGUF. The tied head is the token embedding itself."""
    config = llama_config_dict(src)
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    table = {}
    for name, tensor in src.tensors.items():
        if len(tensor.shape) != 2:
            continue
        kind = name.split(".")[2] if name.startswith("blk.") else None
        weight = gguf_weight(tensor, heads.get(kind))
        if weight is None:
            continue
        w = dequantize(tensor)
        if kind in heads:
            w = unpermute_qk(w, heads[kind])
        table[_digest(w.T)] = (name, weight)
    return table


def rewrite_decoder(model: onnx.ModelProto, src: GGUFSource, head: str = "q8") -> tuple[onnx.ModelProto, dict]:
    """Replace each MatMul whose weight is a dequantised GGUF matrix by its MatMulNBits form (see module doc).
    `head` for the output head (token_embd / output, Q8_0): "float" keeps the float MatMul, "q8" an exact 8-bit
    MatMulNBits (accuracy_level 0: float activations; slow in ORT), "q8-level4" the same at accuracy_level 4
    (int8 activations, as llama.cpp computes it: fast, not exact). Returns the model and a report."""
    if head not in HEAD_MODES:
        raise ValueError(f"unknown head mode {head!r}; known: {', '.join(HEAD_MODES)}")
    table = gguf_weights(src)
    inferred = onnx.shape_inference.infer_shapes(model)
    rank_of = {v.name: len(v.type.tensor_type.shape.dim)
               for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
               if v.type.tensor_type.HasField("shape")}
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    builder = _Builder(rank_of)
    new_nodes, replaced, kept, drop = [], [], [], set()
    for node in graph.node:
        init = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if init is None or init.data_type != TensorProto.FLOAT or len(init.dims) != 2:
            new_nodes.append(node)
            continue
        hit = table.get(_digest(numpy_helper.to_array(init)))
        if hit is None:
            kept.append(init.name)
            new_nodes.append(node)
            continue
        gguf_name, weight = hit
        is_head = not gguf_name.startswith("blk.")
        if is_head and head == "float":
            kept.append(init.name)
            new_nodes.append(node)
            continue
        level = 4 if is_head and head == "q8-level4" else 0
        builder.nodes = []
        nbits_nodes(builder, node.input[0], node.output[0], weight, prefix=gguf_name.replace(".weight", ""),
                    accuracy_level=level)
        new_nodes += builder.nodes
        replaced.append(gguf_name)
        uses[init.name] -= 1
        if uses[init.name] == 0:
            drop.add(init.name)
    del graph.node[:]
    graph.node.extend(new_nodes)
    keep = [t for t in graph.initializer if t.name not in drop]
    del graph.initializer[:]
    graph.initializer.extend(keep + builder.inits)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    expected = {name for _, (name, _) in table.items()} - ({"token_embd.weight", "output.weight"} if head == "float" else set())
    report = {"replaced": sorted(replaced), "float_matmuls_kept": kept,
              "gguf_matrices_not_found": sorted(expected - set(replaced))}
    return model, report


def rewrite_embedding(model: onnx.ModelProto, src: GGUFSource) -> tuple[onnx.ModelProto, int]:
    """Replace each Gather (axis 0) whose data is the dequantised Q8_0 token embedding by a `GatherBlockQuantized`
    (com.microsoft; uint8 q + 128, bits 8, blocks of 32 along the hidden axis, default zero point 128): exact.
    Returns the model and the number of nodes replaced. (Out-of-range ids give zeros there, not an error.)"""
    from gguf import GGMLQuantizationType as Q

    tensor = src.tensors.get("token_embd.weight")
    if tensor is None or tensor.tensor_type != Q.Q8_0:
        raise ValueError(f"{src.path.name}: token_embd.weight is not Q8_0; only a Q8_0 embedding is mapped")
    weight = gguf_weight(tensor)
    digest = _digest(dequantize(tensor))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    data = numpy_helper.from_array(weight.packed.reshape(weight.n, weight.k), "token_embd_q8_data")
    scales = numpy_helper.from_array(weight.scales.astype(np.float32), "token_embd_q8_scales")
    nodes, matched, replaced = [], set(), 0
    for node in graph.node:
        init = inits.get(node.input[0]) if node.op_type == "Gather" else None
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
        if init is None or axis != 0 or init.data_type != TensorProto.FLOAT or len(init.dims) != 2 \
                or _digest(numpy_helper.to_array(init)) != digest:
            nodes.append(node)
            continue
        matched.add(init.name)
        nodes.append(helper.make_node("GatherBlockQuantized", [data.name, node.input[1], scales.name], list(node.output),
                                      name=node.name or "token_embd_gather", domain=MS_DOMAIN, bits=8, block_size=BLOCK,
                                      gather_axis=0, quantize_axis=1))
        replaced += 1
    if not replaced:
        return model, 0
    still_used = {name for node in nodes for name in node.input}
    keep = [t for t in graph.initializer if t.name not in matched or t.name in still_used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(keep + [data, scales])
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model, replaced


def _save(model: onnx.ModelProto, out_path: str | Path, external_data: bool) -> None:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(model)
    if external_data:
        onnx.save(model, str(out_path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=out_path.name + ".data", size_threshold=1024)
    else:
        onnx.save(model, str(out_path))


def quantize_embed_file(gguf_path: str | Path, embed_path: str | Path, out_path: str | Path,
                        external_data: bool = False) -> int:
    """rewrite_embedding on files; raises if no Gather holds this GGUF's token embedding."""
    model, replaced = rewrite_embedding(onnx.load(str(embed_path)), GGUFSource.read(gguf_path))
    if not replaced:
        raise ValueError(f"no Gather in {embed_path} holds this GGUF's dequantised token embedding bit for bit")
    _save(model, out_path, external_data)
    return replaced


def quantize_decoder_file(gguf_path: str | Path, decoder_path: str | Path, out_path: str | Path, head: str = "q8",
                          external_data: bool = False) -> dict:
    """rewrite_decoder on files. Raises if a layer matrix of the GGUF was not found in the graph (the decoder was
    not exported from this GGUF's import, or has been changed). `external_data` stores the weights beside the
    graph (`<out>.data`), as graphs over 2 GB or files to be split need."""
    src = GGUFSource.read(gguf_path)
    model, report = rewrite_decoder(onnx.load(str(decoder_path)), src, head=head)
    missing = [n for n in report["gguf_matrices_not_found"] if n.startswith("blk.")]
    if missing:
        raise ValueError(f"{len(missing)} GGUF layer matrices have no bit-identical MatMul weight in "
                         f"{decoder_path}, e.g. {missing[:3]}: was it exported from this GGUF's import?")
    _save(model, out_path, external_data)
    return report
