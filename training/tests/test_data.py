"""Checks of vikdf.data against hand-written expectations (spec 2.4, 3.1, 3.3, quirk 7.6).

Every expected id row below is written out by hand; the MaskGenerator is compared with an independent
re-statement of the official SimMIM algorithm.
"""

import numpy as np
import pytest
import torch

from vikdf.data import (
    LLAMA2_CHAT_TEMPLATE,
    DialogueFormatter,
    MaskGenerator,
    PromptSettings,
    concat_text_input_output,
    dialogue_labels,
    dialogue_messages,
    pretraining_labels,
    select_text_for_masking,
)
from vikdf.tiny import build_llm_tokenizer, build_text_tokenizer

IGN = -100
EOS = 2  # Llama-2: pad = eos = 2, bos = 1


def t(rows):
    return torch.tensor(rows, dtype=torch.long)


# --------------------------------------------------------------------------- #
# MaskGenerator (spec 3.3)
# --------------------------------------------------------------------------- #


def official_mask(rng, input_size=224, mask_patch_size=28, model_patch_size=14, mask_ratio=0.6):
    """The official SimMIM MaskGenerator.__call__, restated."""
    rand_size = input_size // mask_patch_size  # 8
    scale = mask_patch_size // model_patch_size  # 2
    token_count = rand_size**2  # 64
    mask_count = int(np.ceil(token_count * mask_ratio))  # 39
    mask_idx = rng.permutation(token_count)[:mask_count]
    mask = np.zeros(token_count, dtype=int)
    mask[mask_idx] = 1
    mask = mask.reshape((rand_size, rand_size))
    mask = mask.repeat(scale, axis=0).repeat(scale, axis=1)
    return mask.flatten()


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_mask_generator_shape_count_and_blocks(seed):
    gen = MaskGenerator(224, 28, 14, 0.6, rng=np.random.RandomState(seed))
    m = gen()
    assert isinstance(m, torch.Tensor)
    assert m.shape == (256,)
    arr = m.numpy()
    assert set(np.unique(arr).tolist()) <= {0, 1}
    assert int(arr.sum()) == 156  # 39 blocks x 4 patches
    # 16x16 grid -> 8x8 blocks of 2x2 aligned patches; each block is all-0 or all-1.
    blocks = arr.reshape(8, 2, 8, 2).transpose(0, 2, 1, 3).reshape(64, 4)
    assert np.all((blocks.sum(1) == 0) | (blocks.sum(1) == 4))
    assert int((blocks.sum(1) == 4).sum()) == 39


@pytest.mark.parametrize("seed", [0, 7, 123])
def test_mask_generator_matches_official_algorithm(seed):
    gen = MaskGenerator(224, 28, 14, 0.6, rng=np.random.RandomState(seed))
    ref_rng = np.random.RandomState(seed)
    for _ in range(3):  # consecutive draws consume the generator as the official code does
        np.testing.assert_array_equal(gen().numpy(), official_mask(ref_rng))


def test_mask_generator_draws_differ():
    gen = MaskGenerator(224, 28, 14, 0.6, rng=np.random.RandomState(0))
    assert not torch.equal(gen(), gen())


def test_mask_generator_tiny_grid():
    # The tiny model's grid: 28 px, 14-px blocks and patches -> 2x2 = 4 positions, ceil(0.6*4) = 3 masked.
    m = MaskGenerator(28, 14, 14, 0.6, rng=np.random.RandomState(3))()
    assert m.shape == (4,) and int(m.sum()) == 3


# --------------------------------------------------------------------------- #
# select_text_for_masking (spec 3.3)
# --------------------------------------------------------------------------- #

TEXT_SPECIALS = {0, 1}  # tiny CLIP-style tokenizer: <|startoftext|> 0, <|endoftext|> 1 (also pad)
TEXT_IDS = t(
    [
        [0, 10, 11, 12, 13, 1, 1, 1],
        [0, 20, 21, 22, 23, 24, 25, 1],
    ]
)


def test_masking_probability_one_selects_every_non_special():
    selected, labels = select_text_for_masking(TEXT_IDS, TEXT_SPECIALS, probability=1.0)
    expected_sel = torch.tensor(
        [
            [0, 1, 1, 1, 1, 0, 0, 0],
            [0, 1, 1, 1, 1, 1, 1, 0],
        ],
        dtype=torch.bool,
    )
    assert selected.dtype == torch.bool
    assert torch.equal(selected, expected_sel)
    expected_labels = t(
        [
            [IGN, 10, 11, 12, 13, IGN, IGN, IGN],
            [IGN, 20, 21, 22, 23, 24, 25, IGN],
        ]
    )
    assert torch.equal(labels, expected_labels)
    # The input is not modified.
    assert TEXT_IDS[0, 0] == 0 and TEXT_IDS[0, 1] == 10


def test_masking_random_selection_properties():
    ids = torch.randint(2, 300, (16, 40), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = 0
    ids[:, -5:] = 1
    g = torch.Generator().manual_seed(1)
    selected, labels = select_text_for_masking(ids, TEXT_SPECIALS, probability=0.5, generator=g)
    special = (ids == 0) | (ids == 1)
    assert not selected[special].any()
    assert torch.equal(labels == IGN, ~selected)
    assert torch.equal(labels[selected], ids[selected])
    frac = selected[~special].float().mean().item()
    assert 0.35 < frac < 0.65
    # Same generator seed -> same selection.
    again, _ = select_text_for_masking(ids, TEXT_SPECIALS, probability=0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(selected, again)


def test_masking_probability_zero_selects_nothing():
    selected, labels = select_text_for_masking(TEXT_IDS, TEXT_SPECIALS, probability=0.0)
    assert not selected.any()
    assert (labels == IGN).all()


# --------------------------------------------------------------------------- #
# concat_text_input_output / labels (spec 3.1, 3.3, quirk 7.6)
# --------------------------------------------------------------------------- #

# Prompts, right padded with pad = eos = 2; rows of different real lengths (4 and 6).
PROMPT_IDS = t([[1, 10, 11, 12, 2, 2], [1, 20, 21, 22, 23, 24]])
PROMPT_MASK = t([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
# Captions "<s> ... </s>", right padded; their <s> must be dropped.
OUTPUT_IDS = t([[1, 30, 31, 2, 2], [1, 40, 2, 2, 2]])
OUTPUT_MASK = t([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])

CONCAT_IDS = t(
    [
        [1, 10, 11, 12, 30, 31, 2, 2, 2, 2],
        [1, 20, 21, 22, 23, 24, 40, 2, 2, 2],
    ]
)
CONCAT_MASK = t(
    [
        [1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 1, 0, 0],
    ]
)


def test_concat_text_input_output():
    ids, mask, lengths = concat_text_input_output(PROMPT_IDS, PROMPT_MASK, OUTPUT_IDS, OUTPUT_MASK)
    assert torch.equal(ids, CONCAT_IDS)
    assert torch.equal(mask, CONCAT_MASK)
    assert list(lengths) == [4, 6]


def test_pretraining_labels_mask_prompt_and_every_eos():
    labels = pretraining_labels(CONCAT_IDS, [4, 6], EOS)
    expected = t(
        [
            # prompt (4)            caption  </s> (not a target!) and pads
            [IGN, IGN, IGN, IGN, 30, 31, IGN, IGN, IGN, IGN],
            [IGN, IGN, IGN, IGN, IGN, IGN, 40, IGN, IGN, IGN],
        ]
    )
    assert torch.equal(labels, expected)
    # The input ids are not modified in place.
    assert CONCAT_IDS[0, 6] == 2


# Dialogue rows: prompt with exactly one </s> (the 2-/3-turn templates), with none, and with two.
ONE_EOS_ROW = t([[1, 5, 6, 2, 1, 7, 8, 9, 10, 2, 2, 2]])  # prompt length 7
ZERO_EOS_ROW = t([[1, 5, 6, 7, 9, 10, 2, 2, 2]])  # prompt length 4
TWO_EOS_ROW = t([[1, 5, 2, 1, 6, 2, 1, 7, 9, 10, 2, 2]])  # prompt length 8


def test_dialogue_labels_official_one_eos_in_prompt():
    expected = t([[IGN] * 7 + [9, 10, 2, IGN, IGN]])  # the response's </s> IS a target, later pads not
    assert torch.equal(dialogue_labels(ONE_EOS_ROW, [7], EOS, rule="official"), expected)
    assert torch.equal(dialogue_labels(ONE_EOS_ROW, [7], EOS, rule="response_eos"), expected)
    assert torch.equal(dialogue_labels(ONE_EOS_ROW, [7], EOS), expected)  # official is the default


def test_dialogue_labels_rules_differ_without_eos_in_prompt():
    # official cumsum > 2 keeps the first pad after the response </s> as a target too.
    official = dialogue_labels(ZERO_EOS_ROW, [4], EOS, rule="official")
    assert torch.equal(official, t([[IGN] * 4 + [9, 10, 2, 2, IGN]]))
    fixed = dialogue_labels(ZERO_EOS_ROW, [4], EOS, rule="response_eos")
    assert torch.equal(fixed, t([[IGN] * 4 + [9, 10, 2, IGN, IGN]]))


def test_dialogue_labels_rules_differ_with_two_eos_in_prompt():
    # official: the response's </s> is the third eos in the row -> masked.
    official = dialogue_labels(TWO_EOS_ROW, [8], EOS, rule="official")
    assert torch.equal(official, t([[IGN] * 8 + [9, 10, IGN, IGN]]))
    fixed = dialogue_labels(TWO_EOS_ROW, [8], EOS, rule="response_eos")
    assert torch.equal(fixed, t([[IGN] * 8 + [9, 10, 2, IGN]]))


def test_dialogue_labels_batch_rows_independent():
    # Two rows in one batch with different prompt lengths give the same labels as each row alone.
    a = t([[1, 5, 2, 1, 6, 9, 2, 2, 2]])  # prompt 5 (one eos), response [9, </s>]
    b = t([[1, 5, 6, 7, 2, 1, 8, 9, 2]])  # prompt 6 (one eos), response [8, 9, </s>]
    batch = torch.cat([a, b])
    for rule in ("official", "response_eos"):
        labels = dialogue_labels(batch, [5, 6], EOS, rule=rule)
        assert torch.equal(labels[0:1], t([[IGN] * 5 + [9, 2, IGN, IGN]]))
        assert torch.equal(labels[1:2], t([[IGN] * 6 + [8, 9, 2]]))


def test_dialogue_labels_unknown_rule():
    with pytest.raises(ValueError):
        dialogue_labels(ONE_EOS_ROW, [7], EOS, rule="nope")


# --------------------------------------------------------------------------- #
# dialogue_messages / DialogueFormatter (spec 2.4)
# --------------------------------------------------------------------------- #


def test_dialogue_messages_three_turns():
    assert dialogue_messages([" a1 ", "a2\n", "\ta3"]) == [
        {"role": "user", "content": "a1"},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "a3"},
    ]


def test_dialogue_messages_two_turns_empty_user_first():
    assert dialogue_messages(["a1 ", " a2"]) == [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "a2"},
    ]


def test_dialogue_messages_zero_and_one_turn():
    assert dialogue_messages([]) == [{"role": "user", "content": ""}]
    assert dialogue_messages(["  hi "]) == [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def tokenizers():
    return build_text_tokenizer(), build_llm_tokenizer()


def test_formatter_render_official_strings(tokenizers):
    f = DialogueFormatter(*tokenizers, PromptSettings(chat_template=LLAMA2_CHAT_TEMPLATE))
    assert f.render(["a1", "a2", "a3"]) == ("[INST]", "[INST] a1 [/INST] a2 </s><s> [INST] a3 [/INST]")
    assert f.render(["a1", "a2"]) == ("[INST]", "[INST] [/INST] a1 </s><s> [INST] a2 [/INST]")
    # Whitespace around turns is stripped before rendering.
    assert f.render([" a1  ", "\na2"]) == ("[INST]", "[INST] [/INST] a1 </s><s> [INST] a2 [/INST]")


def test_formatter_ids_and_splice(tokenizers):
    text_tok, llm_tok = tokenizers
    f = DialogueFormatter(text_tok, llm_tok)
    turns = ["hello there", "hi how are you", "fine thanks"]
    d = f(turns)
    # splice_at = number of tokens of "<s>" + "[INST]" (the tiny LLM tokenizer adds <s>).
    inst = llm_tok.encode("[INST]").ids
    assert inst[0] == 1
    assert d.splice_at == len(inst) == 4
    full = "[INST] hello there [/INST] hi how are you </s><s> [INST] fine thanks [/INST]"
    assert d.prompt_ids == llm_tok.encode(full).ids
    assert d.prompt_ids[: d.splice_at] == inst
    # The literal </s><s> become the special ids 2, 1.
    i = d.prompt_ids.index(2)
    assert d.prompt_ids[i + 1] == 1
    # Text-encoder ids: turns joined with the literal "[SEP]".
    assert d.text_ids == text_tok.encode("hello there[SEP]hi how are you[SEP]fine thanks").ids
    assert d.text_ids[0] == 0 and d.text_ids[-1] == 1


def test_formatter_strips_turns_in_text_ids(tokenizers):
    text_tok, llm_tok = tokenizers
    d = DialogueFormatter(text_tok, llm_tok)([" hello there ", "hi\n"])
    assert d.text_ids == text_tok.encode("hello there[SEP]hi").ids
    assert d.prompt_ids == llm_tok.encode("[INST] [/INST] hello there </s><s> [INST] hi [/INST]").ids
    assert d.splice_at == 4


def test_formatter_truncation_keeps_specials(tokenizers):
    text_tok, llm_tok = tokenizers
    turns = ["a dog runs across the green park", "two people sit on a bench", "what did you do at the weekend?"]
    full_text = text_tok.encode("[SEP]".join(turns)).ids
    full_prompt = llm_tok.encode(DialogueFormatter(text_tok, llm_tok).render(turns)[1]).ids
    assert len(full_text) > 12 and len(full_prompt) > 10
    settings = PromptSettings(text_max_length=12, prompt_max_length=10)
    d = DialogueFormatter(text_tok, llm_tok, settings)(turns)
    # Right truncation; <|startoftext|> ... <|endoftext|> kept.
    assert d.text_ids == full_text[:11] + [1]
    assert len(d.text_ids) == 12 and d.text_ids[0] == 0
    # The LLM tokenizer adds only <s> in front: truncation keeps the first 10 ids.
    assert d.prompt_ids == full_prompt[:10]
    assert d.splice_at == 4


def test_formatter_short_inputs_not_truncated(tokenizers):
    text_tok, llm_tok = tokenizers
    settings = PromptSettings(text_max_length=77, prompt_max_length=128)
    d = DialogueFormatter(text_tok, llm_tok, settings)(["hi", "thanks"])
    assert d.text_ids == text_tok.encode("hi[SEP]thanks").ids
    assert d.prompt_ids == llm_tok.encode("[INST] [/INST] hi </s><s> [INST] thanks [/INST]").ids
