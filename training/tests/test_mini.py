"""The default-model recipe (vikdf/mini.py) on small inputs written here: data shaping, captions, the chat
template, weight-only int8 and the no-knowledge ablation."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from vikdf.data import DialogueFormatter, PromptSettings, TokenSettings, load_tokenizer
from vikdf.export import quantize_weights_int8, write_bundle
from vikdf.mini import (
    MINI_CHAT_TEMPLATE,
    WithoutKnowledge,
    _holdout,
    _svg_metadata,
    chitchat_conversations,
    clipart_pairs,
    conversation_text,
    dialogue_examples,
    retrieval_recall,
)
from vikdf.tiny import build_tiny_model, save_tokenizers, tiny_config


def test_chitchat_turns_merge_consecutive_messages_of_one_sender(tmp_path):
    data = {
        "c1": {"messages": [
            [{"text": "Hello", "sender": "a"}, {"text": " how are you?", "sender": "a"}],
            [{"text": "fine", "sender": "b"}],
            [{"text": "and", "sender": "b"}],  # same sender again: one turn
            [{"text": "", "sender": "a"}],  # empty: dropped
            [{"text": "great", "sender": "a"}],
        ]},
        "c2": {"messages": [[{"text": "alone", "sender": "a"}]]},  # one turn: not a dialogue
    }
    (tmp_path / "pip" / "chitchat_dataset").mkdir(parents=True)
    (tmp_path / "pip" / "chitchat_dataset" / "dataset.json").write_text(json.dumps(data))
    assert chitchat_conversations(tmp_path) == {"c1": ["Hello how are you?", "fine and", "great"]}


def test_dialogue_examples_keep_at_most_n_previous_turns():
    rows = dialogue_examples({"c": ["a", "b", "c", "d", "e"]}, max_turns=3)
    assert [r["response"] for r in rows] == ["b", "c", "d", "e"]
    assert rows[0]["context"] == ["a"]
    assert rows[-1]["context"] == ["b", "c", "d"]
    assert rows[-1]["id"] == "c:4"


def test_holdout_is_deterministic_and_near_its_share():
    keys = [f"k{i}" for i in range(20000)]
    picked = [k for k in keys if _holdout(k, 0.05)]
    assert picked == [k for k in keys if _holdout(k, 0.05)]
    assert 0.04 < len(picked) / len(keys) < 0.06


SVG = """<svg xmlns="http://www.w3.org/2000/svg" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
 xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:cc="http://web.resource.org/cc/">
 <metadata><rdf:RDF><cc:Work rdf:about="">
  <dc:title>{title}</dc:title><dc:description>{description}</dc:description>
  <dc:subject><rdf:Bag><rdf:li>orca</rdf:li><rdf:li>sea_life</rdf:li><rdf:li>icons</rdf:li><rdf:li></rdf:li></rdf:Bag></dc:subject>
  <dc:publisher><cc:Agent><dc:title>Open Clip Art Library</dc:title></cc:Agent></dc:publisher>
 </cc:Work></rdf:RDF></metadata></svg>"""


def _clipart(tmp_path, name, title, description):
    root = tmp_path / "deb" / "usr" / "share" / "openclipart"
    (root / "png" / "animals").mkdir(parents=True, exist_ok=True)
    (root / "svg" / "animals").mkdir(parents=True, exist_ok=True)
    (root / "png" / "animals" / f"{name}.png").write_bytes(b"")
    (root / "svg" / "animals" / f"{name}.svg").write_text(SVG.format(title=title, description=description))
    return root / "svg" / "animals" / f"{name}.svg"


def test_svg_metadata_reads_the_work_not_the_publisher(tmp_path):
    svg = _clipart(tmp_path, "orca_01", "Orca", "An orca, swimming")
    assert _svg_metadata(svg) == ("Orca", ["orca", "sea_life", "icons"], "An orca, swimming")


def test_clipart_captions_drop_collection_titles_and_junk(tmp_path):
    _clipart(tmp_path, "orca_01", "Orca", "An orca, swimming")
    _clipart(tmp_path, "killer_whale_02", "Part of the Flat Icon Collection", "converted from http://x")
    pairs = {p["id"]: p["caption"] for p in clipart_pairs(tmp_path)}
    assert pairs["clipart:animals/orca_01"] == "Orca, sea life. An orca, swimming"
    # a collection name is no title: the file name stands in; a junk description is dropped
    assert pairs["clipart:animals/killer_whale_02"] == "killer whale, orca, sea life"


def test_conversation_text_alternates_roles_and_ends_turns_with_eos():
    assert conversation_text(["hi", "hello", "bye"], "user") == "User: hi</s>Bot: hello</s>User: bye</s>"
    assert conversation_text(["hi", "hello"], "bot") == "Bot: hi</s>User: hello</s>"


def test_mini_template_splices_after_bos_and_prompts_the_bot(tmp_path):
    text_tok, llm_tok = save_tokenizers(tmp_path)
    fmt = DialogueFormatter(load_tokenizer(text_tok), load_tokenizer(llm_tok), PromptSettings(chat_template=MINI_CHAT_TEMPLATE))
    prefix, full = fmt.render(["what did you do?", "i went hiking.", "nice!"])
    assert prefix == ""
    assert full == "User: what did you do?</s>Bot: i went hiking.</s>User: nice!</s>Bot:"
    assert fmt.render(["a", "b"])[1] == "Bot: a</s>User: b</s>Bot:"  # the last turn is always the user's
    assert fmt(["hello"]).splice_at == 1  # right after <s>


def test_retrieval_recall_counts_ranks():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.0, 0.2, 0.1]])
    r = retrieval_recall(sim)
    assert r["r1"] == pytest.approx(1 / 3, abs=1e-4)  # row 0 ranks its match first; rows 1 and 2 do not
    assert r["r5"] == 1.0 and r["candidates"] == 3 and r["chance_r1"] == pytest.approx(1 / 3, abs=1e-4)


@pytest.fixture(scope="module")
def float_and_int8_bundles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("q")
    model = build_tiny_model(tiny_config("llama"), seed=4, pretraining=False)
    text_tok, llm_tok = save_tokenizers(tmp / "tok")
    settings, tokens = PromptSettings(text_max_length=16, prompt_max_length=64), TokenSettings(text_pad_token_id=1)
    write_bundle(model, text_tok, llm_tok, tmp / "f32", settings, tokens, "f")
    graphs = ["knowledge_encoder", "embed_tokens", "decoder_model_merged"]
    manifest = write_bundle(model, text_tok, llm_tok, tmp / "int8", settings, tokens, "q", quantize=graphs)
    return tmp / "f32", tmp / "int8", manifest


def test_weight_only_int8_is_smaller_close_and_batch_independent(float_and_int8_bundles):
    f32, int8, manifest = float_and_int8_bundles
    assert manifest["weights"] == {"knowledge_encoder": "int8", "embed_tokens": "int8", "decoder_model_merged": "int8"}
    f = f32 / "onnx" / "decoder_model_merged.onnx"
    q = int8 / "onnx" / "decoder_model_merged.onnx"
    assert q.stat().st_size < 0.5 * f.stat().st_size
    ids = np.array([[0, 5, 6, 7, 1], [0, 9, 1, 1, 1]])
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    run = lambda path, i, m: ort.InferenceSession(str(path)).run(None, {"input_ids": i, "attention_mask": m})[1]  # noqa: E731
    a = run(f32 / "onnx" / "knowledge_encoder.onnx", ids, mask)
    b = run(int8 / "onnx" / "knowledge_encoder.onnx", ids, mask)
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cos.min() > 0.999
    # activations stay float: a row's output is the same alone and in a batch
    alone = run(int8 / "onnx" / "knowledge_encoder.onnx", ids[1:, :3], mask[1:, :3])
    np.testing.assert_allclose(alone[0], b[1], atol=1e-5)


def test_quantize_leaves_small_and_shared_weights_alone(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    big = numpy_helper.from_array(np.random.default_rng(0).normal(size=(64, 128)).astype(np.float32), "big")
    small = numpy_helper.from_array(np.ones((4, 4), np.float32), "small")
    nodes = [helper.make_node("MatMul", ["x", "big"], ["y"]), helper.make_node("MatMul", ["z", "small"], ["w"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64]),
                                           helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128]),
                               helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 4])], [big, small])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert quantize_weights_int8(path) == 1
    x = np.random.default_rng(1).normal(size=(1, 64)).astype(np.float32)
    y = ort.InferenceSession(str(path)).run(["y"], {"x": x, "z": np.ones((1, 4), np.float32)})[0]
    want = x @ numpy_helper.to_array(big)
    assert np.abs(y - want).max() < 0.02 * np.abs(want).max()


@torch.no_grad()
def test_without_knowledge_is_the_lm_alone():
    """The ablation splices zero vectors: the LLM sees exactly the prompt embeddings, as with no VIKDF at all."""
    model = build_tiny_model(tiny_config("llama"), seed=2, pretraining=False)
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    k = torch.randn(1, model.config.num_query_tokens, model.config.qformer_config().hidden_size)
    model.language_projection = WithoutKnowledge(model.language_projection)
    embeds, mask = model.splice(ids, None, model.language_projection(k), bias=1)
    assert embeds.shape[1] == ids.shape[1]
    want = model.language_model(input_ids=ids).logits
    got = model.language_model(inputs_embeds=embeds, attention_mask=mask).logits
    torch.testing.assert_close(got, want)


def test_blank_knowledge_context_changes_only_the_text_encoder_input(tmp_path):
    """The constant-knowledge control: the prompt keeps the dialogue, the text encoder reads nothing."""
    from vikdf.mini import blank_knowledge

    text_tok, llm_tok = save_tokenizers(tmp_path)
    fmt = DialogueFormatter(load_tokenizer(text_tok), load_tokenizer(llm_tok), PromptSettings(chat_template=MINI_CHAT_TEMPLATE))
    src = tmp_path / "d.jsonl"
    src.write_text(json.dumps({"context": ["do you like pizza?"], "response": "yes"}) + "\n")
    row = json.loads(blank_knowledge(src, tmp_path / "b.jsonl").read_text())
    assert row["knowledge_context"] == [] and row["context"] == ["do you like pizza?"]
    full, blank = fmt(row["context"]), fmt(row["context"], row["knowledge_context"])
    assert blank.prompt_ids == full.prompt_ids and blank.splice_at == full.splice_at
    assert blank.text_ids == fmt([]).text_ids != full.text_ids
