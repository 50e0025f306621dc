"""Checks of vikdf.modeling / vikdf.iq_former on tiny random models (spec 2, 3 and 9).

Each objective is compared with a reference computed here from the model's sub-modules (text/vision
encoders, IQ-Former, LLM), written independently of the package's own loss code: per-row loops, explicit
index arithmetic for the splice, log-softmax by hand. Dropout is off (eval mode) and
`unchanged_ratio = 0.0` makes the in-model Bernoulli draws all ones, so everything is deterministic.
"""

import math

import pytest
import torch

from vikdf.modeling import FROZEN_MODULES, LOSS_WEIGHTS
from vikdf.tiny import build_tiny_model, tiny_config


IGN = -100
EOS = 2
ALL = ("tim", "tmim", "imtm", "i2t", "t2i")
TEXT_LENS = [8, 6, 5]  # real CLIP-style lengths (incl. <|startoftext|> 0 ... <|endoftext|> 1), right padded with 1
I2T_LENS = [12, 10, 9]  # real LLM lengths, right padded with eos 2
I2T_PROMPT_LENS = [5, 4, 6]  # >= bias (3 or 4)
T2I_LENS = [9, 7, 5]
MASKED_POS = [[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 1, 0]]  # the tiny 2x2 patch grid
MASKED_TEXT = [1, 3]  # caption positions selected for IMTM (non-special in every row)


def make_batch(seed: int = 0, B: int = 3) -> dict:
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(2, 300, (B, 8), generator=g)
    text[:, 0] = 0
    text_mask = torch.ones(B, 8, dtype=torch.long)
    for i, n in enumerate(TEXT_LENS[:B]):
        text[i, n - 1 :] = 1
        text_mask[i, n:] = 0

    i2t = torch.randint(3, 380, (B, 12), generator=g)
    i2t[:, 0] = 1
    i2t_mask = torch.ones(B, 12, dtype=torch.long)
    labels = i2t.clone()
    for i, (n, p) in enumerate(zip(I2T_LENS[:B], I2T_PROMPT_LENS[:B])):
        i2t[i, n - 1 :] = EOS  # caption's </s>, then pads (= eos)
        i2t_mask[i, n:] = 0
        labels[i, :p] = IGN
        labels[i, n - 1 :] = IGN

    t2i = torch.randint(3, 380, (B, 9), generator=g)
    t2i[:, 0] = 1
    t2i_mask = torch.ones(B, 9, dtype=torch.long)
    for i, n in enumerate(T2I_LENS[:B]):
        t2i[i, n:] = EOS
        t2i_mask[i, n:] = 0

    pixels = torch.randn(B, 3, 28, 28, generator=g)
    bool_masked_pos = torch.tensor(MASKED_POS[:B])
    masked = torch.zeros(B, 8, dtype=torch.bool)
    masked[:, MASKED_TEXT] = True
    masked_labels = text.masked_fill(~masked, IGN)
    return dict(
        text_input_ids=text,
        text_attention_mask=text_mask,
        i2t_llm_input_ids=i2t,
        i2t_llm_attention_mask=i2t_mask,
        labels=labels,
        t2i_llm_input_ids=t2i,
        t2i_llm_attention_mask=t2i_mask,
        pixel_values=pixels,
        bool_masked_pos=bool_masked_pos,
        masked_indices=masked,
        masked_text_labels=masked_labels,
    )


BASE_KEYS = ("text_input_ids", "text_attention_mask", "i2t_llm_input_ids", "i2t_llm_attention_mask", "labels")
KEYS_FOR = {
    "i2t": BASE_KEYS,
    "t2i": BASE_KEYS + ("t2i_llm_input_ids", "t2i_llm_attention_mask"),
    "tim": BASE_KEYS + ("pixel_values",),
    "tmim": BASE_KEYS + ("pixel_values", "bool_masked_pos"),
    "imtm": BASE_KEYS + ("pixel_values", "masked_indices", "masked_text_labels"),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one thread is faster and leaves the other core free; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def subset(batch, keys):
    return {k: batch[k] for k in keys}


def new_model(llm_type="llama", seed=0):
    model = build_tiny_model(tiny_config(llm_type), seed=seed)
    model.config.unchanged_ratio = 0.0
    return model.eval()


def spread(model, seed=0):
    """Re-draw the trainable Linear weights at 1/sqrt(fan_in) and the queries at N(0, 1).

    At the official N(0, 0.02) init K barely depends on the input (rows of K_T differ by ~3e-3), so e.g. a
    TIM loss is log(B) whatever the similarity matrix; with this scale the rows differ by O(0.1) and the
    reference comparisons below can tell a wrong row, column or scale apart."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_children():
            if name in FROZEN_MODULES or name == "language_projection":
                continue
            for sub in module.modules():
                if isinstance(sub, torch.nn.Linear):
                    sub.weight.copy_(torch.randn(sub.weight.shape, generator=g) / math.sqrt(sub.weight.shape[1]))
        model.query_tokens.copy_(torch.randn(model.query_tokens.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def model():
    return spread(new_model())


@pytest.fixture(scope="module")
def gpt2_model():
    return spread(new_model("gpt2"))


@pytest.fixture(params=["llama", "gpt2"])
def any_model(request, model, gpt2_model):
    return model if request.param == "llama" else gpt2_model


def test_spread_model_knowledge_depends_on_input(model, batch):
    with torch.no_grad():
        k = model(**subset(batch, BASE_KEYS)).knowledge
    assert k.std(0).mean() > 0.05


@pytest.fixture(scope="module")
def batch():
    return make_batch()


# --------------------------------------------------------------------------- #
# Independent pieces of the reference computation
# --------------------------------------------------------------------------- #


def ref_text_features(model, ids, mask):
    return model.text_projection(model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state)


def ref_image_features(model, pixels):
    return model.visual_projection(model.vision_encoder(pixel_values=pixels).last_hidden_state)


def ref_knowledge(model, feats, mask=None):
    q = model.query_tokens.expand(feats.shape[0], -1, -1)
    k, pooled = model.qformer(q, feats, mask)
    return k


def is_frozen_name(name):
    return name.split(".")[0] in FROZEN_MODULES


# --------------------------------------------------------------------------- #
# Frozen parts (spec 3.4)
# --------------------------------------------------------------------------- #


def test_requires_grad_split():
    model = new_model()
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert set(FROZEN_MODULES) <= names  # all five frozen modules exist in a pre-training model
    assert {"qformer", "query_tokens", "language_projection", "query_llm_projection", "logit_scale"} <= names
    for name, p in model.named_parameters():
        assert p.requires_grad == (not is_frozen_name(name)), name
    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable == {id(p) for n, p in model.named_parameters() if not is_frozen_name(n)}


def test_frozen_modules_stay_in_eval_mode():
    model = new_model().train()
    for name in FROZEN_MODULES:
        assert not getattr(model, name).training, name
    assert model.qformer.training and model.text_tb.training


def test_frozen_parameters_unchanged_by_training(batch):
    model = new_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    for _ in range(3):
        out = model(**batch)
        assert set(out.losses) == set(ALL)
        opt.zero_grad()
        out.loss.backward()
        for n, p in model.named_parameters():
            if is_frozen_name(n):
                assert p.grad is None, n
        opt.step()
    for n, p in model.named_parameters():
        if is_frozen_name(n):
            assert torch.equal(p, before[n]), n
    changed = [n for n, p in model.named_parameters() if n.startswith("qformer.") and not torch.equal(p, before[n])]
    assert len(changed) > 0.9 * sum(1 for n, _ in model.named_parameters() if n.startswith("qformer."))
    for n in ("query_tokens", "language_projection.weight", "query_llm_projection.weight", "logit_scale"):
        assert not torch.equal(dict(model.named_parameters())[n], before[n]), n


# --------------------------------------------------------------------------- #
# Loss bookkeeping
# --------------------------------------------------------------------------- #


def test_total_loss_is_weighted_sum(model, batch):
    with torch.no_grad():
        out = model(**batch)
    assert set(out.losses) == set(ALL)
    expected = (
        0.5 * out.losses["tim"]
        + 0.2 * out.losses["tmim"]
        + 0.2 * out.losses["imtm"]
        + 1.0 * out.losses["i2t"]
        + 0.5 * out.losses["t2i"]
    )
    assert torch.allclose(out.loss, expected, rtol=0, atol=1e-6)
    assert LOSS_WEIGHTS == {"tim": 0.5, "tmim": 0.2, "imtm": 0.2, "i2t": 1.0, "t2i": 0.5}
    for v in out.losses.values():
        assert v.ndim == 0 and torch.isfinite(v) and v > 0


@pytest.mark.parametrize(
    "keys, expected",
    [
        (BASE_KEYS, {"i2t"}),
        (KEYS_FOR["t2i"], {"i2t", "t2i"}),
        (BASE_KEYS + ("bool_masked_pos", "masked_indices", "masked_text_labels"), {"i2t"}),  # no pixels
        (KEYS_FOR["tim"], {"i2t", "tim"}),
        (KEYS_FOR["tmim"], {"i2t", "tim", "tmim"}),
        (KEYS_FOR["imtm"], {"i2t", "tim", "imtm"}),
    ],
)
def test_loss_decomposition_by_inputs(model, batch, keys, expected):
    with torch.no_grad():
        full = model(**batch)
        out = model(**subset(batch, keys))
    assert set(out.losses) == expected
    for name in expected:  # each objective's value does not depend on which others run
        assert torch.allclose(out.losses[name], full.losses[name], rtol=0, atol=1e-6), name
    total = sum(LOSS_WEIGHTS[n] * out.losses[n] for n in expected)
    assert torch.allclose(out.loss, total, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_each_loss_decreases(batch, name):
    model = spread(new_model())  # at the N(0, 0.02) init TIM starts at log(B) and moves slowly
    inputs = subset(batch, KEYS_FOR[name])
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        loss = model(**inputs).losses[name]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    with torch.no_grad():
        final = model(**inputs).losses[name].item()
    assert final < 0.8 * history[0], (name, history[0], final)


# --------------------------------------------------------------------------- #
# IQ-Former (spec 2.2, 9.2)
# --------------------------------------------------------------------------- #


def test_iqformer_padding_mask(model):
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(2, 7, 32, generator=g)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    q = model.query_tokens.expand(2, -1, -1)
    with torch.no_grad():
        k, pooled = model.qformer(q, feats, mask)
        assert k.shape == (2, 4, 32)
        assert torch.equal(pooled, k[:, 0])
        alone, _ = model.qformer(q[:1], feats[1:2, :4])
        assert torch.allclose(k[1], alone[0], rtol=0, atol=1e-5)
        row0, _ = model.qformer(q[:1], feats[:1])
        assert torch.allclose(k[0], row0[0], rtol=0, atol=1e-5)
        # Garbage at the padded positions changes nothing.
        feats2 = feats.clone()
        feats2[1, 4:] = 100 * torch.randn(3, 32, generator=g)
        k2, _ = model.qformer(q, feats2, mask)
        assert torch.allclose(k2, k, rtol=0, atol=1e-5)
        # ... but the same positions do matter when they are not masked.
        k_unmasked, _ = model.qformer(q, feats2, torch.ones_like(mask))
        assert not torch.allclose(k_unmasked[1], k[1], atol=1e-3)


def test_knowledge_of_padded_text_row_equals_row_alone(model, batch):
    ids, mask = batch["text_input_ids"], batch["text_attention_mask"]
    with torch.no_grad():
        k, _ = model.encode_context(ids, mask)
        for i, n in enumerate(TEXT_LENS):
            alone, _ = model.encode_context(ids[i : i + 1, :n], mask[i : i + 1, :n])
            assert torch.allclose(k[i], alone[0], rtol=0, atol=1e-5), i


def test_forward_knowledge_matches_reference(model, batch):
    with torch.no_grad():
        out = model(**subset(batch, BASE_KEYS))
        ref = ref_knowledge(model, ref_text_features(model, batch["text_input_ids"], batch["text_attention_mask"]),
                            batch["text_attention_mask"])
    assert out.knowledge.shape == (3, 4, 32)
    assert torch.allclose(out.knowledge, ref, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- #
# TIM / TMIM / IMTM against references (spec 3.1)
# --------------------------------------------------------------------------- #


def test_tim_matches_reference(batch):
    model = spread(new_model())
    with torch.no_grad():
        model.logit_scale.fill_(1.3)  # a non-default scale, so its use is checked
        out = model(**subset(batch, KEYS_FOR["tim"]))
        kt = ref_knowledge(model, ref_text_features(model, batch["text_input_ids"], batch["text_attention_mask"]),
                           batch["text_attention_mask"])
        ki = ref_knowledge(model, ref_image_features(model, batch["pixel_values"]))
        t = model.query_text_projection(kt[:, 0])
        v = model.query_visual_projection(ki[:, 0])
        t = t / t.norm(dim=-1, keepdim=True)
        v = v / v.norm(dim=-1, keepdim=True)
        B = t.shape[0]
        sim = torch.empty(B, B)
        for i in range(B):
            for j in range(B):
                sim[i, j] = torch.exp(torch.tensor(1.3)) * (t[i] * v[j]).sum()  # text i vs image j
        t2i = -torch.stack([sim[i].log_softmax(0)[i] for i in range(B)]).mean()
        i2t = -torch.stack([sim[:, j].log_softmax(0)[j] for j in range(B)]).mean()
        ref = (t2i + i2t) / 2
    assert torch.allclose(out.losses["tim"], ref, rtol=0, atol=1e-5)


def test_tmim_matches_reference(model, batch):
    """Masked patches zeroed, visual_tb attends to K_T, 1x1 conv + PixelShuffle decoder: reconstructed per
    patch by hand; L1 averaged over the selected patches' pixels and channels."""
    pixels, bmp = batch["pixel_values"], batch["bool_masked_pos"]
    with torch.no_grad():
        out = model(**subset(batch, KEYS_FOR["tmim"]))
        kt = ref_knowledge(model, ref_text_features(model, batch["text_input_ids"], batch["text_attention_mask"]),
                           batch["text_attention_mask"])
        masked = pixels.clone()
        for b in range(3):
            for p in range(4):
                if bmp[b, p]:
                    r, c = divmod(p, 2)
                    masked[b, :, r * 14 : (r + 1) * 14, c * 14 : (c + 1) * 14] = 0
        fused = model.visual_tb(ref_image_features(model, masked), kt, kt)  # B x (1 + 4) x 32
        conv = model.visual_decoder[0]
        w, bias = conv.weight[:, :, 0, 0], conv.bias  # 588 x 32
        diffs = []
        for b in range(3):
            for p in range(4):
                if bmp[b, p]:
                    r, c = divmod(p, 2)
                    patch = (w @ fused[b, 1 + p] + bias).reshape(3, 14, 14)
                    target = pixels[b, :, r * 14 : (r + 1) * 14, c * 14 : (c + 1) * 14]
                    diffs.append((patch - target).abs().flatten())
        ref = torch.cat(diffs).mean()
    assert torch.allclose(out.losses["tmim"], ref, rtol=1e-5, atol=1e-6)


def test_imtm_matches_reference(model, batch):
    ids, mask = batch["text_input_ids"], batch["text_attention_mask"]
    with torch.no_grad():
        out = model(**subset(batch, KEYS_FOR["imtm"]))
        ki = ref_knowledge(model, ref_image_features(model, batch["pixel_values"]))
        masked_ids = ids.clone()
        masked_ids[:, MASKED_TEXT] = model.config.mask_token_id  # unchanged_ratio 0: every selected one replaced
        fused = model.text_tb(ref_text_features(model, masked_ids, mask), ki, ki)
        logits = model.text_decoder(fused)
        nll = [-logits[b, j].log_softmax(0)[ids[b, j]] for b in range(3) for j in MASKED_TEXT]
        ref = torch.stack(nll).mean()
    assert model.config.mask_token_id == 1
    assert torch.allclose(out.losses["imtm"], ref, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- #
# I2T / splice (spec 2.4, 3.1)
# --------------------------------------------------------------------------- #


def test_splice_positions(model, batch):
    ids, mask = batch["i2t_llm_input_ids"], batch["i2t_llm_attention_mask"]
    g = torch.Generator().manual_seed(9)
    projected = torch.randn(3, 4, 64, generator=g)
    emb = model.language_model.get_input_embeddings().weight
    for bias in (3, 4):
        with torch.no_grad():
            embeds, m = model.splice(ids, mask, projected, bias)
        assert embeds.shape == (3, 12 + 4, 64) and m.shape == (3, 16)
        assert torch.equal(embeds[:, bias : bias + 4], projected)
        assert torch.equal(embeds[:, :bias], emb[ids[:, :bias]])
        assert torch.equal(embeds[:, bias + 4 :], emb[ids[:, bias:]])
        assert torch.equal(m[:, :bias], mask[:, :bias])
        assert torch.equal(m[:, bias : bias + 4], torch.ones(3, 4, dtype=mask.dtype))
        assert torch.equal(m[:, bias + 4 :], mask[:, bias:])
    # An arbitrary 0/1 mask (not only right padding) is split at the same place as the embeddings.
    odd = torch.tensor([[0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1]] * 3)
    with torch.no_grad():
        _, m = model.splice(ids, odd, projected, 3)
    assert m[0].tolist() == [0, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 1]


@pytest.mark.parametrize("bias", [3, 4])
def test_i2t_matches_reference(any_model, batch, bias):
    model = any_model
    ids, mask, labels = batch["i2t_llm_input_ids"], batch["i2t_llm_attention_mask"], batch["labels"]
    B, L = ids.shape
    n_q = 4
    with torch.no_grad():
        out = model(**subset(batch, BASE_KEYS), bias=bias)
        kt = ref_knowledge(model, ref_text_features(model, batch["text_input_ids"], batch["text_attention_mask"]),
                           batch["text_attention_mask"])
        proj = model.language_projection(kt)
        emb = model.language_model.get_input_embeddings()(ids)
        E = torch.cat([emb[:, :bias], proj, emb[:, bias:]], dim=1)
        M = torch.cat([mask[:, :bias], torch.ones(B, n_q, dtype=mask.dtype), mask[:, bias:]], dim=1)
        logits = model.language_model(inputs_embeds=E, attention_mask=M).logits

        def spliced_pos(t):  # where original token t sits in the spliced sequence
            return t if t < bias else t + n_q

        nll = []
        for b in range(B):
            for t in range(1, L):
                if labels[b, t] != IGN:
                    nll.append(-logits[b, spliced_pos(t) - 1].log_softmax(0)[labels[b, t]])
        ref = torch.stack(nll).mean()
    assert len(nll) == sum(n - 1 - p for n, p in zip(I2T_LENS, I2T_PROMPT_LENS))
    assert torch.allclose(out.losses["i2t"], ref, rtol=0, atol=1e-5)
    assert out.logits.shape == (B, L, logits.shape[-1])
    assert torch.allclose(out.logits, logits[:, -L:], rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- #
# T2I (spec 2.3.6, 3.1, quirk 7.11)
# --------------------------------------------------------------------------- #


def test_t2i_matches_per_row_reference(any_model, batch):
    model = any_model
    ids, mask = batch["t2i_llm_input_ids"], batch["t2i_llm_attention_mask"]
    n_q = 4
    with torch.no_grad():
        out = model(**subset(batch, KEYS_FOR["t2i"]))
        kt = ref_knowledge(model, ref_text_features(model, batch["text_input_ids"], batch["text_attention_mask"]),
                           batch["text_attention_mask"])
        proj = model.language_projection(kt)
        sq = []
        for b, c in enumerate(T2I_LENS):  # each row alone, no padding at all
            e = torch.cat([model.language_model.get_input_embeddings()(ids[b, :c]), proj[b]])[None]
            h = model.llm_base(inputs_embeds=e).last_hidden_state[0]
            assert h.shape[0] == c + n_q
            pred = model.query_llm_projection(h[c - 1 : c - 1 + n_q])
            sq.append((pred - kt[b]) ** 2)
        ref = torch.stack(sq).mean()
    assert torch.allclose(out.losses["t2i"], ref, rtol=1e-5, atol=1e-6)


def _t2i_grads(batch, detach):
    model = spread(new_model())
    model.config.t2i_detach_target = detach
    out = model(**subset(batch, KEYS_FOR["t2i"]))
    out.losses["t2i"].backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_t2i_gradient_through_target(batch):
    attached = _t2i_grads(batch, detach=False)
    detached = _t2i_grads(batch, detach=True)
    assert new_model().config.t2i_detach_target is False  # official default
    assert set(attached) == set(detached)
    q_names = [n for n in attached if n.startswith("qformer.")]
    assert q_names
    # The IQ-Former gets gradient in both cases (through P(K_T)), but a different one when the target
    # is not detached.
    assert any(detached[n].abs().sum() > 0 for n in q_names)
    assert any(not torch.allclose(attached[n], detached[n], rtol=1e-4, atol=1e-7) for n in q_names)
    # The prediction head is not on the target path: identical gradients.
    for n in ("query_llm_projection.weight", "query_llm_projection.bias"):
        assert torch.allclose(attached[n], detached[n], rtol=1e-5, atol=1e-8), n


# --------------------------------------------------------------------------- #
# Generation (spec 2.4, 2.5)
# --------------------------------------------------------------------------- #

PROMPT_A = [1, 61, 314, 63, 40, 41, 42, 43, 44]
PROMPT_B = [1, 61, 314, 63, 50, 51, 52, 53, 54, 55, 56, 57, 58]


def _reference_greedy(model, text_ids, prompt, splice_at, steps=5):
    emb = model.language_model.get_input_embeddings()
    with torch.no_grad():
        mask = torch.ones_like(text_ids)
        kt = ref_knowledge(model, ref_text_features(model, text_ids, mask), mask)
        proj = model.language_projection(kt)[0]
        p = torch.tensor(prompt)
        E = torch.cat([emb(p[:splice_at]), proj, emb(p[splice_at:])])[None]
        new = []
        for _ in range(steps):
            logits = model.language_model(inputs_embeds=E).logits[0, -1]  # full forward, no cache
            nxt = int(logits.argmax())
            new.append(nxt)
            if nxt == EOS:
                break
            E = torch.cat([E, emb(torch.tensor([[nxt]]))], dim=1)
    return new


def _generate(model, text_ids, prompts, **kw):
    mask = torch.ones_like(text_ids)
    return model.generate(text_ids, mask, prompts, [4] * len(prompts), pad_id=EOS, max_new_tokens=5,
                          do_sample=False, num_beams=1, **kw)


@pytest.fixture(scope="module")
def context_ids():
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(2, 300, (2, 6), generator=g)
    ids[:, 0], ids[:, -1] = 0, 1
    return ids


def test_generate_matches_hand_written_greedy_loop(any_model, context_ids):
    model = any_model
    for i, prompt in enumerate((PROMPT_A, PROMPT_B)):
        ref = _reference_greedy(model, context_ids[i : i + 1], prompt, 4)
        got = _generate(model, context_ids[i : i + 1], [prompt])
        assert got.shape[0] == 1
        assert got[0].tolist() == ref, i  # new tokens only


def test_generate_replace(model, context_ids):
    plain = _generate(model, context_ids[:1], [PROMPT_A])[0].tolist()
    src = plain[0]
    got = _generate(model, context_ids[:1], [PROMPT_A], replace={str(src): 7})[0].tolist()
    assert got == [7 if t == src else t for t in plain]


def test_generate_batch_left_padding_equals_single(any_model, context_ids):
    model = any_model
    batch = _generate(model, context_ids, [PROMPT_A, PROMPT_B])
    for i, prompt in enumerate((PROMPT_A, PROMPT_B)):
        alone = _generate(model, context_ids[i : i + 1], [prompt])[0].tolist()
        row = batch[i].tolist()
        assert row[: len(alone)] == alone, i
        assert all(t == EOS for t in row[len(alone) :])  # finished rows are padded with pad_id


def test_generation_inputs_left_padding(model, context_ids):
    with torch.no_grad():
        embeds, mask = model.generation_inputs(context_ids, torch.ones_like(context_ids), [PROMPT_A, PROMPT_B], [4, 4], EOS)
        single, _ = model.generation_inputs(context_ids[:1], torch.ones_like(context_ids[:1]), [PROMPT_A], [4], EOS)
    la, lb = len(PROMPT_A) + 4, len(PROMPT_B) + 4
    assert embeds.shape == (2, lb, 64)
    assert mask[0].tolist() == [0] * (lb - la) + [1] * la
    assert mask[1].tolist() == [1] * lb
    assert torch.equal(embeds[0, lb - la :], single[0])


# --------------------------------------------------------------------------- #
# GPT-2 language model
# --------------------------------------------------------------------------- #


def test_gpt2_variant_forward_and_frozen(batch):
    model = new_model("gpt2")
    assert type(model.language_model).__name__ == "GPT2LMHeadModel"
    for name, p in model.named_parameters():
        assert p.requires_grad == (not is_frozen_name(name)), name
    out = model(**batch)
    assert set(out.losses) == set(ALL)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for name, p in model.named_parameters():
        if is_frozen_name(name):
            assert p.grad is None, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.startswith("qformer."))
    assert model.language_projection.weight.grad.abs().sum() > 0
