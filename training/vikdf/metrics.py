"""Evaluation metrics of the VIKDF paper, without dependencies.

The official code (zhangbo-nlp/VIKDF, ``inference.py`` / ``eval.py``) scores
generated responses with Maluuba's ``nlg-eval``, whose BLEU and ROUGE-L are
coco-caption's ``BleuScorer`` and ``Rouge``, plus its own Distinct-1/2 and
perplexity.  This module re-implements those numbers with the standard library
only, so the model factory can report metrics comparable to the paper without
pulling in nlg-eval, NLTK or Java.

The one known approximation is :func:`tokenize_for_eval`, which stands in for
NLTK's ``word_tokenize``; BLEU/ROUGE-L can differ slightly from the paper's
where the two tokenizers disagree.
"""

from __future__ import annotations

import math
import re
from collections import Counter

__all__ = [
    "normalize_answer",
    "distinct_n",
    "distinct",
    "tokenize_for_eval",
    "bleu",
    "rouge_l",
    "perplexity",
    "evaluate",
]

# --------------------------------------------------------------------------- #
# Distinct-n
# --------------------------------------------------------------------------- #

_PUNCTUATION = "!\"#$%&()*+,-./:;<=>?@[]\\^`{|}~_'"
_PUNCT_RE = re.compile("[" + re.escape(_PUNCTUATION) + "]")
_ARTICLE_RE = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lower-case, blank out punctuation and the articles a/an/the, squeeze spaces.

    Same steps and order as ``normalize_answer`` in the official ``eval.py``,
    including its ``s.replace('... ', '')``.  That replacement runs *after* the
    punctuation has been turned into spaces, so it can never match and is a
    no-op; it is kept (in that position) only so the code reads like the
    original.  Moving it earlier would change results (``"wait... what"``
    would become ``"waitwhat"`` instead of ``"wait what"``).
    """
    s = s.lower()
    s = _PUNCT_RE.sub(" ", s)
    s = _ARTICLE_RE.sub(" ", s)
    s = s.replace("... ", "")  # no-op after the line above; see docstring
    return " ".join(s.split())


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(hyps: list[str], n: int) -> float:
    """Corpus-level Distinct-n: unique n-grams / all n-grams over every hypothesis.

    Each hypothesis is split on whitespace and contributes its own n-grams
    (n-grams never span two hypotheses).  0.0 when there are no n-grams at all.
    """
    counts: Counter[tuple[str, ...]] = Counter()
    for hyp in hyps:
        counts.update(_ngrams(hyp.split(), n))
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def distinct(hyps: list[str]) -> tuple[float, float]:
    """(Distinct-1, Distinct-2) of raw hypotheses, normalised first as the paper does."""
    normalized = [normalize_answer(h) for h in hyps]
    return distinct_n(normalized, 1), distinct_n(normalized, 2)


# --------------------------------------------------------------------------- #
# Tokenisation
# --------------------------------------------------------------------------- #

# Clitics that NLTK's Treebank tokenizer splits off the end of a word.
_CONTRACTION_RE = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN_RE = re.compile(
    r"n't|'(?:s|re|ve|ll|d|m)\b"  # a clitic split off above
    r"|\.\.\.+"  # an ellipsis stays one token
    r"|``|''"  # normalised double quotes
    r"|--"  # double dash
    # a word; keeps inner - . / ' and digit-group commas/colons (well-known,
    # u.s, and/or, o'clock, 1,000, 10:30) as NLTK does
    r"|\w+(?:(?:[-./'’]|[,:](?=\d))\w+)*"
    r"|\S"  # any other character is a token of its own
)


def tokenize_for_eval(text: str) -> str:
    """Lower-case word tokenisation, tokens joined by single spaces.

    A small stand-in for NLTK's ``word_tokenize`` (Treebank rules), which the
    official code applies before BLEU/ROUGE.  It approximates, but is not
    identical to, NLTK: punctuation is split off words (``dog,`` → ``dog ,``),
    the clitics n't 's 're 've 'll 'd 'm become their own tokens
    (``don't`` → ``do n't``), ``...`` and ``--`` stay whole, commas and colons
    between digits stay inside numbers, and double quotes become `` / ''
    (opening / closing) like Treebank.  Unlike NLTK it always splits a word's
    trailing period (NLTK keeps it inside a word mid-sentence, e.g. ``u.s.``),
    does not split special forms such as "cannot"/"gonna", and has no
    sentence splitter.
    """
    text = text.lower()
    # Opening double quote at the start or after space/bracket, closing otherwise.
    text = re.sub(r'(^|(?<=[\s(\[{<]))"', " `` ", text)
    text = text.replace('"', " '' ")
    text = _CONTRACTION_RE.sub(r" \1", text)
    return " ".join(_TOKEN_RE.findall(text))


# --------------------------------------------------------------------------- #
# BLEU and ROUGE-L (coco-caption, one reference per hypothesis)
# --------------------------------------------------------------------------- #

# coco-caption's BleuScorer.compute_score constants, verbatim:
#   small = 1e-9; tiny = 1e-15  ("so that if guess is 0 still return 0")
#   p_k   = (correct_k + tiny) / (guess_k + small)
#   ratio = (testlen + tiny) / (reflen + small); if ratio < 1: bleu *= exp(1 - 1/ratio)
_SMALL = 1e-9
_TINY = 1e-15


def _check_pairs(hyps: list[str], refs: list[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")


def bleu(hyps: list[str], refs: list[str], max_n: int = 4) -> list[float]:
    """Corpus BLEU-1..BLEU-max_n exactly as coco-caption's BleuScorer ('closest').

    Inputs are pre-tokenised strings (split on whitespace), one reference per
    hypothesis.  Clipped n-gram matches and n-gram counts are summed over the
    corpus (not averaged per sentence); the brevity penalty compares total
    hypothesis length with total reference length.  BLEU-n is the brevity
    penalty times the geometric mean of p_1..p_n.  The tiny/small constants
    keep an empty or very short corpus from dividing by zero; they make a
    zero-match precision ~1e-15 (or 1e-6 when there are no n-grams of that
    order at all) instead of exactly 0.
    """
    _check_pairs(hyps, refs)
    correct = [0] * max_n
    guess = [0] * max_n
    hyp_len = ref_len = 0
    for hyp, ref in zip(hyps, refs):
        hyp_tokens, ref_tokens = hyp.split(), ref.split()
        hyp_len += len(hyp_tokens)
        ref_len += len(ref_tokens)  # one reference: "closest" is just its length
        for n in range(1, max_n + 1):
            hyp_counts = Counter(_ngrams(hyp_tokens, n))
            ref_counts = Counter(_ngrams(ref_tokens, n))
            # A repeated n-gram only counts as often as the reference has it.
            correct[n - 1] += sum(min(c, ref_counts[g]) for g, c in hyp_counts.items())
            guess[n - 1] += max(0, len(hyp_tokens) - n + 1)

    scores = []
    product = 1.0
    for k in range(max_n):
        product *= (correct[k] + _TINY) / (guess[k] + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (hyp_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        # exp(1 - 1/ratio) underflows to 0.0 for an empty hypothesis corpus.
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, two rows)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hyps: list[str], refs: list[str], beta: float = 1.2) -> float:
    """Mean sentence ROUGE-L F-score, as coco-caption's Rouge computes it.

    Per pair: P = LCS/len(hyp), R = LCS/len(ref),
    F = (1 + beta^2) P R / (R + beta^2 P), or 0 if P or R is 0; the corpus
    score is the plain mean over pairs (0.0 for an empty corpus).  Empty
    strings score 0; coco-caption splits on " " and would see an empty string
    as one empty token, which differs only when both sides are empty.
    """
    _check_pairs(hyps, refs)
    if not hyps:
        return 0.0
    total = 0.0
    for hyp, ref in zip(hyps, refs):
        hyp_tokens, ref_tokens = hyp.split(), ref.split()
        lcs = _lcs_length(ref_tokens, hyp_tokens)
        if lcs == 0:
            continue  # also covers empty strings: P or R would be 0
        prec, rec = lcs / len(hyp_tokens), lcs / len(ref_tokens)
        total += ((1 + beta**2) * prec * rec) / (rec + beta**2 * prec)
    return total / len(hyps)


# --------------------------------------------------------------------------- #
# Perplexity and the full report
# --------------------------------------------------------------------------- #


def perplexity(per_example_losses: list[float]) -> float:
    """exp(mean loss), as inference.py reports it; inf when exp overflows."""
    if not per_example_losses:
        raise ValueError("perplexity needs at least one loss")
    mean = sum(per_example_losses) / len(per_example_losses)
    try:
        return math.exp(mean)
    except OverflowError:
        return float("inf")


_FROM_BRACKET_RE = re.compile(r"\[.*$")


def evaluate(hyps: list[str], refs: list[str]) -> dict[str, float]:
    """The paper's metric report: BLEU-1/2, ROUGE-L and Distinct-1/2, ×100, 4 decimals.

    Post-processing follows the official inference.py:

    * Distinct-1/2 are computed on ``normalize_answer(raw hypothesis)``.
    * Hypotheses are tokenised, lower-cased and cut at the first "[" (the LLM
      sometimes continues with "[image]"-style markup).  U+FFFD replacement
      characters are dropped first, as the official code does; its emoji
      filter is not reproduced.
    * References are tokenised.  The official code does not lower-case
      references; here both sides are lower-cased (tokenize_for_eval always
      does), so casing differences are not counted as errors.
    """
    _check_pairs(hyps, refs)
    d1, d2 = distinct(hyps)
    hyp_tokens = [
        _FROM_BRACKET_RE.sub("", tokenize_for_eval(h.replace("\ufffd", ""))).strip()
        for h in hyps
    ]
    ref_tokens = [tokenize_for_eval(r.strip()) for r in refs]
    b1, b2 = bleu(hyp_tokens, ref_tokens, max_n=2)
    raw = {
        "bleu_1": b1,
        "bleu_2": b2,
        "rouge_l": rouge_l(hyp_tokens, ref_tokens),
        "distinct_1": d1,
        "distinct_2": d2,
    }
    return {k: round(v * 100, 4) for k, v in raw.items()}
