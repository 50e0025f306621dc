"""Hand-computed checks of vikdf.metrics (coco-caption BLEU/ROUGE-L, Distinct, PPL).

Every expected value is worked out in the comments so it can be checked on
paper.  Throughout, beta = 1.2 so beta^2 = 1.44 and 1 + beta^2 = 2.44.
"""

import math

import pytest

from vikdf.metrics import (
    bleu,
    distinct,
    distinct_n,
    evaluate,
    normalize_answer,
    perplexity,
    rouge_l,
    tokenize_for_eval,
)

# coco-caption's smoothing constants, to spell out expected values exactly.
SMALL, TINY = 1e-9, 1e-15


# --------------------------------------------------------------------------- #
# normalize_answer / distinct
# --------------------------------------------------------------------------- #


def test_normalize_answer_drops_punctuation_and_articles():
    # lower:        "the cat's hat, a thing... an apple!"
    # punct -> ' ': "the cat s hat  a thing    an apple "
    # articles:     "    cat s hat    thing       apple "
    # squeeze:      "cat s hat thing apple"
    assert normalize_answer("The cat's hat, a thing... An apple!") == "cat s hat thing apple"


def test_normalize_answer_articles_only_as_whole_words():
    # "the" inside "theater" and "an" inside "anthem" are not removed.
    assert normalize_answer("Theater ANTHEM a-b") == "theater anthem b"


def test_normalize_answer_ellipsis_keeps_words_apart():
    # "..." becomes spaces before the (official, no-op) "... " removal runs,
    # so the two words stay separate ("waitwhat" would be wrong).
    assert normalize_answer("wait... what") == "wait what"


def test_distinct_n_counts_repeats_over_the_corpus():
    hyps = ["i like it", "i like dogs"]
    # unigrams: i like it i like dogs -> 6 total, {i, like, it, dogs} -> 4 unique
    assert distinct_n(hyps, 1) == pytest.approx(4 / 6)
    # bigrams: (i like) (like it) (i like) (like dogs) -> 4 total, 3 unique
    assert distinct_n(hyps, 2) == pytest.approx(3 / 4)


def test_distinct_n_does_not_join_hypotheses():
    # Per hypothesis: (x y), (x y) -> 1 unique / 2 = 0.5.
    # Joining the corpus would add (y x) and give 2/3 instead.
    assert distinct_n(["x y", "x y"], 2) == pytest.approx(0.5)


def test_distinct_normalises_first_and_handles_no_ngrams():
    # normalize_answer -> "cat", "cat": unigrams 1 unique / 2; no bigrams -> 0.0
    assert distinct(["The cat!", "the CAT."]) == (pytest.approx(0.5), 0.0)
    assert distinct_n([], 1) == 0.0
    assert distinct_n([""], 1) == 0.0


# --------------------------------------------------------------------------- #
# tokenize_for_eval
# --------------------------------------------------------------------------- #


def test_tokenize_splits_punctuation_and_contractions():
    assert (
        tokenize_for_eval("I don't think it's a dog's life, really!")
        == "i do n't think it 's a dog 's life , really !"
    )
    assert tokenize_for_eval("We'll see, you're right, I'd've... I'm") == (
        "we 'll see , you 're right , i 'd 've ... i 'm"
    )


def test_tokenize_keeps_numbers_hyphens_and_quotes_like_treebank():
    assert tokenize_for_eval("1,000 well-known people at 10:30.") == (
        "1,000 well-known people at 10:30 ."
    )
    assert tokenize_for_eval('She said "hi" (twice)') == "she said `` hi '' ( twice )"


# --------------------------------------------------------------------------- #
# BLEU
# --------------------------------------------------------------------------- #


def test_bleu_perfect_match_is_one():
    s = "the cat sat on the mat"
    b1, b2, b3, b4 = bleu([s], [s])
    # Every p_k = (c + 1e-15) / (c + 1e-9) ~ 1 and BP ~ 1 (equal lengths).
    assert b1 == pytest.approx(1.0, abs=1e-8)
    assert b4 == pytest.approx(1.0, abs=1e-8)


def test_bleu_partial_overlap_with_brevity_penalty():
    b1, b2, b3, b4 = bleu(["a cat sat"], ["the cat sat on the mat"])
    # unigrams a/cat/sat: cat, sat match          -> p1 = 2/3
    # bigrams (a cat) (cat sat): (cat sat) matches -> p2 = 1/2
    # trigram (a cat sat): no match                -> p3 = 1e-15 / (1 + 1e-9)
    # no 4-grams in a 3-word hypothesis            -> p4 = 1e-15 / 1e-9 = 1e-6
    # hyp 3 words < ref 6 words -> BP = exp(1 - 6/3) = e^-1
    bp = math.exp(1 - (6 + SMALL) / (3 + TINY))
    assert bp == pytest.approx(math.exp(-1))
    assert b1 == pytest.approx(bp * (2 / 3), rel=1e-9)  # ~0.24525
    assert b2 == pytest.approx(bp * math.sqrt(2 / 3 * 1 / 2), rel=1e-9)  # ~0.21240
    # The smoothing constants decide the zero-match orders (swapping tiny and
    # small would give ~2.6e-4 here instead of ~2.6e-6).
    p3 = TINY / (1 + SMALL)
    assert b3 == pytest.approx(bp * (2 / 3 * 1 / 2 * p3) ** (1 / 3), rel=1e-9)  # ~2.55e-6
    assert b4 == pytest.approx(bp * (2 / 3 * 1 / 2 * p3 * 1e-6) ** (1 / 4), rel=1e-9)


def test_bleu_is_corpus_level_not_a_mean_of_sentences():
    hyps = ["a cat sat", "hello there"]
    refs = ["the cat sat on the mat", "hello there"]
    b1, b2, _, _ = bleu(hyps, refs)
    # unigrams: 2 + 2 = 4 correct of 3 + 2 = 5    -> p1 = 0.8
    # bigrams:  1 + 1 = 2 correct of 2 + 1 = 3    -> p2 = 2/3
    # lengths:  hyp 3 + 2 = 5, ref 6 + 2 = 8      -> BP = exp(1 - 8/5) = exp(-0.6)
    assert b1 == pytest.approx(math.exp(-0.6) * 0.8, rel=1e-8)  # 0.43905
    assert b2 == pytest.approx(math.exp(-0.6) * math.sqrt(0.8 * 2 / 3), rel=1e-8)  # 0.40080
    # The mean of sentence BLEU-1s would be (e^-1 * 2/3 + 1) / 2 ~ 0.62.


def test_bleu_clips_repeated_ngrams():
    b1, b2 = bleu(["the the the"], ["the cat"], max_n=2)
    # "the" x3 in the hypothesis, x1 in the reference -> clipped to 1 -> p1 = 1/3
    # hyp 3 words >= ref 2 words -> BP = 1
    assert b1 == pytest.approx(1 / 3, rel=1e-8)
    # bigrams (the the) x2, none in the reference -> p2 = 1e-15 / 2
    assert b2 == pytest.approx(math.sqrt(1 / 3 * TINY / 2), rel=1e-6)


def test_bleu_empty_hypothesis_and_empty_corpus_score_zero():
    # hyp length 0 < 2: BP = exp(1 - (2 + 1e-9) / 1e-15) underflows to 0.
    assert bleu([""], ["the cat"]) == [0.0, 0.0, 0.0, 0.0]
    assert bleu([], []) == [0.0, 0.0, 0.0, 0.0]


def test_bleu_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        bleu(["a"], [])


# --------------------------------------------------------------------------- #
# ROUGE-L
# --------------------------------------------------------------------------- #


def test_rouge_l_perfect_match_is_one():
    # P = R = 1 -> 2.44 / (1 + 1.44) = 1
    assert rouge_l(["the cat sat"], ["the cat sat"]) == pytest.approx(1.0)


def test_rouge_l_uses_lcs_not_unigram_overlap():
    # hyp "cat sat the mat" vs ref "the cat sat on mat": all 4 hyp words occur
    # in the ref, but the longest common subsequence is "cat sat mat" = 3.
    # P = 3/4, R = 3/5
    # F = 2.44 * 0.75 * 0.6 / (0.6 + 1.44 * 0.75) = 1.098 / 1.68 = 0.6535714...
    assert rouge_l(["cat sat the mat"], ["the cat sat on mat"]) == pytest.approx(1.098 / 1.68)


def test_rouge_l_is_mean_over_pairs_and_beta_matters():
    # Pair 1: "a cat sat" vs "the cat sat on the mat": LCS "cat sat" = 2,
    #   P = 2/3, R = 1/3, F = 2.44 * 2/9 / (1/3 + 1.44 * 2/3) = (4.88/9) / (1.29333)
    # Pair 2: identical -> 1
    f1 = (2.44 * 2 / 9) / (1 / 3 + 1.44 * 2 / 3)  # 0.41924
    hyps, refs = ["a cat sat", "hello there"], ["the cat sat on the mat", "hello there"]
    assert rouge_l(hyps, refs) == pytest.approx((f1 + 1) / 2)
    # beta = 1 is the harmonic mean of P and R: 2 * (2/3)(1/3) / (1/3 + 2/3) = 4/9
    assert rouge_l(hyps[:1], refs[:1], beta=1.0) == pytest.approx(4 / 9)


def test_rouge_l_empty_hypothesis_scores_zero():
    assert rouge_l([""], ["the cat"]) == 0.0
    assert rouge_l(["the cat"], [""]) == 0.0
    assert rouge_l([], []) == 0.0


# --------------------------------------------------------------------------- #
# perplexity / evaluate
# --------------------------------------------------------------------------- #


def test_perplexity_is_exp_of_mean_loss():
    assert perplexity([1.0, 3.0]) == pytest.approx(math.exp(2.0))
    assert perplexity([0.0]) == 1.0
    assert perplexity([1000.0, 2000.0]) == float("inf")


def test_evaluate_applies_official_postprocessing():
    result = evaluate(["Hello hello, world! [img] world"], ["Hello, world!"])
    # hyp tokens:  "hello hello , world ! [ img ] world" -> cut at "[" ->
    #              hello hello , world !   (5 tokens)
    # ref tokens:  hello , world !         (4 tokens; lower-cased too)
    # BLEU-1: "hello" x2 clipped to 1 -> 4/5 correct; BP = 1 (5 >= 4) -> 80.0
    # BLEU-2: (hello hello) misses; (hello ,) (, world) (world !) hit -> 3/4
    #         -> sqrt(0.8 * 0.75) = sqrt(0.6) = 0.7745967 -> 77.4597
    # ROUGE-L: LCS = 4, P = 4/5, R = 1 -> 2.44 * 0.8 / (1 + 1.44 * 0.8)
    #          = 1.952 / 2.152 = 0.9070632 -> 90.7063
    # Distinct on normalize_answer(raw) = "hello hello world img world":
    #   unigrams 3 unique / 5 -> 60.0; bigrams 4 unique / 4 -> 100.0
    assert result == {
        "bleu_1": 80.0,
        "bleu_2": 77.4597,
        "rouge_l": 90.7063,
        "distinct_1": 60.0,
        "distinct_2": 100.0,
    }


def test_evaluate_empty_hypothesis_gives_zero_scores():
    result = evaluate([""], ["The cat."])
    assert result == {
        "bleu_1": 0.0,
        "bleu_2": 0.0,
        "rouge_l": 0.0,
        "distinct_1": 0.0,
        "distinct_2": 0.0,
    }
