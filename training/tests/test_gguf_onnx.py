"""The GGUF's Q4_1 / Q8_0 weights as lossless `MatMulNBits` in ONNX (vikdf/gguf_onnx.py), on the small GGUF of
tests/gguf_fixture.py, run by the Python onnxruntime (CPU, float activations).

References: `gguf.quants.dequantize` of the same tensors (one matrix), and the float decoder graph exported
from the imported checkpoint (the whole decoder)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import quants
from onnx import TensorProto, helper

from vikdf.cli import main as cli_main
from vikdf.decoder import export_decoder
from vikdf.export import export_decoder_graph, export_embed_graph
from vikdf.gguf_import import GGUFSource, import_gguf, load_frozen_llama
from vikdf.gguf_onnx import (
    MS_DOMAIN, NBitsWeight, _Builder, dequantized, gguf_weight, nbits_nodes, quantize_decoder_file, rewrite_decoder,
)

from gguf_fixture import HEAD_DIM, KV_HEADS, LAYERS, hf_weights, train_vocab, write_gguf

# Measured (this machine, ORT 1.32 CPU): one Q4_1 matrix, x ~ N(0, 1), outputs up to ~5: max |Δ| vs float64
# x @ dequantize(W).T is 0.9e-6..1.6e-6 (fp32 rounding of K = 64..128 products); the Q8_0 embedding as a head
# (outputs up to ~15) 3.8e-6. Q4_1's own nibble order gives 5.6..7.3, a missing +8d term 1.5..3.3, Q8_0 bytes
# without the +128 shift 34. Tolerance: 2e-5.
MATRIX_TOL = 2e-5
# Whole decoder, rewritten vs float graph, logits up to ~16: max |Δlogit| 1.3e-5..1.6e-5 (the same with the head
# q8 or float: the Q8_0 head adds nothing measurable), KV cache 2.9e-6; the float graph vs PyTorch 1.2e-5.
# 1e-4 leaves room for other kernels' summation orders.
LOGIT_TOL = 1e-4
# Head at accuracy_level 4 (int8 activations): max |Δlogit| 0.09..0.14 over 12 inputs here.
LEVEL4_TOL = 0.5


def session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")  # activations stay float
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def matmul_graph(weight: NBitsWeight) -> onnx.ModelProto:
    b = _Builder({"x": 3})
    nbits_nodes(b, "x", "y", weight, "w")
    graph = helper.make_graph(
        b.nodes, "one_matrix",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", weight.k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", weight.n])], b.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS_DOMAIN, 1)])


def run_matrix(weight: NBitsWeight, x: np.ndarray) -> np.ndarray:
    return session(matmul_graph(weight)).run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf_onnx")
    tokens, merges = train_vocab()
    path = root / "tiny.gguf"
    write_gguf(path, hf_weights(len(tokens), seed=3), tokens, merges)
    lm = load_frozen_llama(import_gguf(path, root / "imported"))
    float_path = root / "decoder.onnx"
    torch.manual_seed(0)
    export_decoder_graph(lm, "llama", float_path)
    return {"root": root, "path": path, "src": GGUFSource.read(path), "lm": lm, "float": float_path}


def inputs(rng, n=2, s=5, k=64):
    return rng.standard_normal((n, s, k)).astype(np.float32)


@pytest.mark.parametrize("name", ["blk.0.ffn_gate.weight", "blk.1.ffn_down.weight", "blk.0.attn_v.weight"])
def test_q4_1_matrix_equals_dequantised(smol, name):
    tensor = smol["src"].tensors[name]
    assert tensor.tensor_type == Q.Q4_1
    w = quants.dequantize(tensor.data, Q.Q4_1).astype(np.float64)  # [N, K], the independent reference
    weight = gguf_weight(tensor)
    x = inputs(np.random.default_rng(0), k=weight.k)
    want = x.astype(np.float64) @ w.T
    got = run_matrix(weight, x)
    assert np.abs(want).max() > 1.0
    assert np.abs(got - want).max() <= MATRIX_TOL
    # Mutations: Q4_1's own nibble order (j / j + 16) given to MatMulNBits (2i / 2i + 1), and no +8d term.
    raw = np.ascontiguousarray(tensor.data).reshape(weight.n, weight.k // 32, 20)
    wrong_order = NBitsWeight(4, weight.n, weight.k, np.ascontiguousarray(raw[..., 4:]), weight.scales, weight.correction)
    assert np.abs(run_matrix(wrong_order, x) - want).max() > 1000 * MATRIX_TOL
    no_offset = NBitsWeight(4, weight.n, weight.k, weight.packed, weight.scales, None)
    assert np.abs(run_matrix(no_offset, x) - want).max() > 1000 * MATRIX_TOL
    # The float64 model of the pair is the dequantised matrix itself (same algebra, no ORT).
    assert np.abs(dequantized(weight) - w).max() <= 1e-6


def test_q8_0_embedding_equals_dequantised(smol):
    tensor = smol["src"].tensors["token_embd.weight"]
    assert tensor.tensor_type == Q.Q8_0
    w = quants.dequantize(tensor.data, Q.Q8_0).astype(np.float64)
    weight = gguf_weight(tensor)
    assert weight.bits == 8 and weight.correction is None
    x = inputs(np.random.default_rng(1), k=weight.k)
    want = x.astype(np.float64) @ w.T
    assert np.abs(run_matrix(weight, x) - want).max() <= MATRIX_TOL
    signed = NBitsWeight(8, weight.n, weight.k, (weight.packed.astype(np.int16) - 128).astype(np.uint8), weight.scales)
    assert np.abs(run_matrix(signed, x) - want).max() > 1000 * MATRIX_TOL  # int8 bytes without the +128


def decoder_feed(lm, ids: np.ndarray, past_len: int = 0, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    b, s = ids.shape
    with torch.no_grad():
        embeds = lm.get_input_embeddings()(torch.from_numpy(ids)).numpy()
    feed = {"inputs_embeds": embeds, "attention_mask": np.ones((b, past_len + s), np.int64),
            "position_ids": np.tile(np.arange(past_len, past_len + s, dtype=np.int64), (b, 1))}
    for i in range(LAYERS):
        for kind in ("key", "value"):
            feed[f"past_key_values.{i}.{kind}"] = rng.standard_normal((b, KV_HEADS, past_len, HEAD_DIM)).astype(np.float32)
    return feed


def greedy(sess, lm, prompt: list[int], steps: int = 8) -> list[int]:
    ids = list(prompt)
    for _ in range(steps):
        logits = sess.run(["logits"], decoder_feed(lm, np.array([ids])))[0]
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt):]


@pytest.fixture(scope="module")
def rewritten(smol):
    out = {}
    for head in ("q8", "float", "q8-level4"):
        path = smol["root"] / f"decoder_{head}.onnx"
        out[head] = (path, quantize_decoder_file(smol["path"], smol["float"], path, head=head))
    return out


def test_rewrite_replaces_every_gguf_matrix(rewritten):
    layer = {f"blk.{i}.{n}.weight" for i in range(LAYERS)
             for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}
    path, report = rewritten["q8"]
    assert set(report["replaced"]) == layer | {"token_embd.weight"} and not report["gguf_matrices_not_found"]
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMulNBits") == len(layer) + 1
    # Left as float MatMuls: attention's own products only (no weight initializer).
    inits = {t.name for t in model.graph.initializer}
    assert not any(n.op_type == "MatMul" and n.input[1] in inits and not n.input[1].endswith("_q4_1_offset")
                   for n in model.graph.node)
    # Block sums shared: one per distinct input (q/k/v share one, gate/up another, o and down their own).
    assert ops.count("ReduceSum") == 4 * LAYERS
    _, float_report = rewritten["float"]
    assert "token_embd.weight" not in float_report["replaced"] and len(float_report["float_matmuls_kept"]) == 1


def test_rewritten_decoder_logits_equal_float_decoder(smol, rewritten):
    float_sess = session(str(smol["float"]))
    rng = np.random.default_rng(5)
    vocab = smol["lm"].config.vocab_size
    for past_len in (0, 3):
        ids = rng.integers(0, vocab, (2, 6))
        feed = decoder_feed(smol["lm"], ids, past_len, seed=past_len)
        want = float_sess.run(None, feed)
        assert np.abs(want[0]).max() > 1.0
        for head in ("q8", "float"):
            got = session(str(rewritten[head][0])).run(None, feed)
            assert np.abs(got[0] - want[0]).max() <= LOGIT_TOL, head
            for a, b in zip(got[1:], want[1:]):  # the KV cache too
                assert np.abs(a - b).max() <= LOGIT_TOL, head
    # The float graph itself is the imported checkpoint's forward (as test_export checks for export_decoder).
    with torch.no_grad():
        ref = export_decoder(smol["lm"], "llama")(*(torch.from_numpy(v) for v in feed.values()))[0].numpy()
    assert np.abs(ref - want[0]).max() <= LOGIT_TOL


def test_rewritten_decoder_greedy_ids_equal_float_decoder(smol, rewritten):
    float_sess = session(str(smol["float"]))
    q8_sess = session(str(rewritten["q8"][0]))
    for prompt in ([1, 40, 41, 42], [1, 7, 300, 12, 99, 5], [3, 200]):
        assert greedy(q8_sess, smol["lm"], prompt) == greedy(float_sess, smol["lm"], prompt)


def test_level4_head_is_close_not_exact(smol, rewritten):
    """accuracy_level 4 on the head quantises its activations to int8: close to the float decoder, not exact."""
    path, _ = rewritten["q8-level4"]
    heads = [n for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulNBits" and n.name.startswith("token_embd")]
    assert [a.i for a in heads[0].attribute if a.name == "accuracy_level"] == [4]
    feed = decoder_feed(smol["lm"], np.array([[1, 40, 41, 42, 43]]))
    want = session(str(smol["float"])).run(["logits"], feed)[0]
    diff = np.abs(session(str(path)).run(["logits"], feed)[0] - want).max()
    assert LOGIT_TOL < diff <= LEVEL4_TOL


def test_size_and_refusal(smol, rewritten, tmp_path):
    float_size = smol["float"].stat().st_size
    q8_size = rewritten["q8"][0].stat().st_size
    assert q8_size < 0.35 * float_size  # measured 0.305 here; head float 0.48 (tiny matrices: overhead weighs more)
    # A decoder whose weights are not this GGUF's is refused, not silently half-converted.
    other = tmp_path / "other.gguf"
    tokens, merges = train_vocab()
    write_gguf(other, hf_weights(len(tokens), seed=4), tokens, merges)
    with pytest.raises(ValueError, match="no bit-identical MatMul weight"):
        quantize_decoder_file(other, smol["float"], tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="unknown head mode"):
        rewrite_decoder(onnx.load(str(smol["float"])), smol["src"], head="int4")


def test_cli_gguf_onnx_with_external_data(smol, rewritten, tmp_path, capsys):
    out = tmp_path / "decoder.onnx"
    cli_main(["gguf-onnx", str(smol["path"]), str(smol["float"]), str(out), "--external-data"])
    assert "15 GGUF matrices as MatMulNBits" in capsys.readouterr().out
    assert (tmp_path / "decoder.onnx.data").stat().st_size > out.stat().st_size
    feed = decoder_feed(smol["lm"], np.array([[1, 40, 41]]))
    want = session(str(rewritten["q8"][0])).run(["logits"], feed)[0]
    assert np.array_equal(session(str(out)).run(["logits"], feed)[0], want)


def test_embedding_as_gather_block_quantized_is_exact(smol, tmp_path, capsys):
    float_path = tmp_path / "embed.onnx"
    export_embed_graph(smol["lm"], float_path)
    out = tmp_path / "embed_q8.onnx"
    cli_main(["gguf-onnx", str(smol["path"]), str(float_path), str(out), "--embed-tokens"])
    assert "1 Gather" in capsys.readouterr().out
    model = onnx.load(str(out))
    assert [n.op_type for n in model.graph.node].count("GatherBlockQuantized") == 1
    tensor = smol["src"].tensors["token_embd.weight"]
    table = quants.dequantize(tensor.data, Q.Q8_0)  # the independent reference, rows = token ids
    assert not any(t.data_type == TensorProto.FLOAT and list(t.dims) == list(table.shape) for t in model.graph.initializer)
    ids = np.random.default_rng(7).integers(0, table.shape[0], (3, 9))
    got = session(str(out)).run(None, {"input_ids": ids})[0]
    # d * q in float32 both ways: measured bit-identical, so equality is asserted.
    assert np.array_equal(got, table[ids].astype(np.float32))
    assert np.array_equal(got, session(str(float_path)).run(None, {"input_ids": ids})[0])
    assert out.stat().st_size < 0.35 * float_path.stat().st_size
    # A graph without this GGUF's embedding is refused.
    with pytest.raises(ValueError, match="token embedding"):
        from vikdf.gguf_onnx import quantize_embed_file
        quantize_embed_file(smol["path"], smol["float"], tmp_path / "x.onnx")
