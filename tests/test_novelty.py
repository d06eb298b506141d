"""Novelty filter and contamination check against rouge-score itself, on real GSM8K text."""

from __future__ import annotations

import json
import random
import re

import pytest
from rapidfuzz.distance import LCSseq
from rouge_score import rouge_scorer
from rouge_score.rouge_scorer import _lcs_table

from pipeline.problems.novelty import (
    NGRAM,
    ROUGE_THRESHOLD,
    NoveltyIndex,
    contamination,
    filter_novel,
    rouge_l,
    tokenize,
)

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
NUM = re.compile(r"\d+")


def rouge(a: str, b: str) -> float:
    return SCORER.score(a, b)["rougeL"].fmeasure


def read_questions(path, n: int) -> list[str]:
    with open(path) as fh:
        return [json.loads(line)["question"] for _, line in zip(range(n), fh)]


def variant(text: str, rng: random.Random, edits: int) -> str:
    """A near-duplicate: numbers changed, words swapped or dropped, sometimes truncated."""
    words = NUM.sub(lambda m: str(rng.randint(1, 99)), text).split()
    for _ in range(edits):
        i, j = rng.randrange(len(words)), rng.randrange(len(words))
        if rng.random() < 0.6:
            words[i], words[j] = words[j], words[i]
        elif len(words) > 4:
            del words[i]
    if rng.random() < 0.25:
        words = words[:max(4, int(len(words) * rng.uniform(0.6, 0.95)))]
    return " ".join(words)


def brute_force(candidates: list[str], pool: list[str]) -> list[tuple[bool, int | None, float]]:
    """Self-instruct's loop with rouge-score on every pair: (kept, nearest, best F)."""
    kept: list[int] = []
    out = []
    for i, cand in enumerate(candidates):
        others = list(enumerate(pool)) + [(len(pool) + k, candidates[k]) for k in kept]
        best, best_f = None, 0.0
        for j, text in others:
            f = rouge(cand, text)
            if f > best_f:
                best, best_f = j, f
        ok = best_f < ROUGE_THRESHOLD
        if ok:
            kept.append(i)
        out.append((ok, best, best_f))
    return out


@pytest.fixture(scope="module")
def gsm8k(bench) -> dict:
    """Pool, candidates (fresh questions and variants straddling 0.7) and the brute force."""
    qs = read_questions(bench / "gsm8k" / "train.jsonl", 360)
    rng = random.Random(7)
    pool = qs[:50]
    fresh = qs[50:110]
    variants = [variant(rng.choice(pool + fresh), rng, rng.randint(0, 10)) for _ in range(60)]
    candidates = fresh + variants + [fresh[3], variants[5]]  # exact repeats inside the batch
    rng.shuffle(candidates)
    return {"pool": pool, "candidates": candidates, "others": qs[110:],
            "brute": brute_force(candidates, pool)}


@pytest.mark.slow
def test_filter_matches_rouge_score_brute_force(gsm8k):
    pool, candidates, brute = gsm8k["pool"], gsm8k["candidates"], gsm8k["brute"]
    results = filter_novel(candidates, pool)

    assert [r.index for r in results] == list(range(len(candidates)))
    assert [r.kept for r in results] == [b[0] for b in brute]
    # A dropped candidate reports its true nearest text (lowest index on ties) and exact F.
    dropped = [(r, b) for r, b in zip(results, brute) if not r.kept]
    assert [(r.nearest, r.score) for r, _ in dropped] == [(b[1], b[2]) for _, b in dropped]
    assert [r.nearest_text_source for r, _ in dropped] == [
        "pool" if b[1] < len(pool) else "batch" for _, b in dropped]
    # The data must exercise both outcomes, near the threshold and from both sources.
    near = [b for b in brute if 0.6 <= b[2] < 0.8]
    assert sum(not ok for ok, _, _ in near) >= 5 and sum(ok for ok, _, _ in near) >= 5
    assert {r.nearest_text_source for r, _ in dropped} == {"pool", "batch"}


@pytest.mark.slow
def test_index_grown_from_empty_matches_rouge_score(gsm8k):
    # No order hint: every feature gets its rank when first added, the least favourable case
    # for the prefix filter's fixed order.
    pool, candidates = gsm8k["pool"], gsm8k["candidates"][:60]
    index = NoveltyIndex(threshold=ROUGE_THRESHOLD)
    assert [index.add(t) for t in pool] == list(range(len(pool)))
    assert len(index) == len(pool)
    for cand in candidates:
        scores = [rouge(cand, t) for t in pool]
        best = max(scores)
        expected = (scores.index(best), best) if best >= ROUGE_THRESHOLD else None
        assert index.best_match(cand) == expected


def test_rapidfuzz_lcs_equals_rouge_score_lcs(gsm8k):
    rng = random.Random(3)
    pairs = []
    for _ in range(250):  # small alphabets make long, ambiguous common subsequences
        alphabet = [f"w{k}" for k in range(rng.randint(1, 12))]
        pairs.append(([rng.choice(alphabet) for _ in range(rng.randint(0, 140))],
                      [rng.choice(alphabet) for _ in range(rng.randint(0, 140))]))
    real = [tokenize(t) for t in gsm8k["others"][:100]]
    pairs += list(zip(real[:50], real[50:]))
    for a, b in pairs:
        assert LCSseq.similarity(a, b) == _lcs_table(a, b)[-1][-1]
    for a, b in pairs[-50:]:  # and the F formula, through the scorer's own tokenizer
        lcs = LCSseq.similarity(a, b)
        assert rouge_l(lcs, len(a), len(b)) == rouge(" ".join(a), " ".join(b))


def test_contamination_rouge_ngram_and_clean(bench, gsm8k):
    test = read_questions(bench / "gsm8k" / "test.jsonl", 200)
    target = test[17]
    words = target.split()
    edited = " ".join(words[:3] + words[4:5] + words[3:4] + words[5:]).replace("?", "? Answer.")
    span_src = next(i for i, t in enumerate(test) if len(tokenize(t)) >= 40)
    span = tokenize(test[span_src])[10:10 + NGRAM]
    filler = " ".join(gsm8k["others"][:3])
    embedded = f"{filler} {' '.join(span)} {' '.join(gsm8k['others'][3:6])}"
    almost = f"{filler} {' '.join(span[:-1])} {' '.join(gsm8k['others'][3:6])}"
    unrelated = gsm8k["others"][10]
    sets = {"gsm8k": test, "tiny": ["What is 2 + 3?"]}

    hits = contamination([edited, embedded, almost, unrelated, "what is 2 3"], sets)

    assert rouge(edited, target) >= ROUGE_THRESHOLD
    assert (hits[0].test_set, hits[0].index, hits[0].reason) == ("gsm8k", 17, "rougeL>=0.7")
    assert hits[0].score == max(rouge(edited, t) for t in test)
    # The span is a small part of the candidate: only the n-gram rule can catch it.
    assert max(rouge(embedded, t) for t in test) < ROUGE_THRESHOLD
    assert (hits[1].test_set, hits[1].index, hits[1].reason) == (
        "gsm8k", span_src, "shared 13-gram")
    assert hits[1].score == 1 / len(set(zip(*[tokenize(embedded)[k:] for k in range(NGRAM)])))
    assert hits[2] is None  # 12 shared tokens are not 13
    assert hits[3] is None
    assert (hits[4].test_set, hits[4].index, hits[4].reason, hits[4].score) == (
        "tiny", 0, "rougeL>=0.7", 1.0)


def _lcs_pair(m: int, n: int, lcs: int) -> tuple[str, str]:
    """Two texts of m and n tokens whose LCS is exactly `lcs` tokens."""
    shared = [f"s{k}" for k in range(lcs)]
    return (" ".join(shared + [f"a{k}" for k in range(m - lcs)]),
            " ".join(shared + [f"b{k}" for k in range(n - lcs)]))


def test_edge_cases_match_rouge_score():
    # 21/23 vs 37 tokens is exactly 0.7 on paper but 0.6999999999999998 in rouge-score's
    # floats (kept); 7 of 10 vs 10 comes out as 0.7 (dropped).
    below = _lcs_pair(23, 37, 21)
    at = _lcs_pair(10, 10, 7)
    assert rouge(*below) < ROUGE_THRESHOLD <= rouge(*at)
    pool = ["", "?!", below[1], at[1]]
    candidates = ["", "!!! ...", below[0], at[0], "Same text, here.", "same TEXT here",
                  "Same text here!", "", "?"]

    results = filter_novel(candidates, pool)

    assert [r.kept for r in results] == [b[0] for b in brute_force(candidates, pool)]
    assert [r.kept for r in results] == [True, True, True, False, True, False, False, True, True]
    assert (results[3].nearest, results[3].nearest_text_source) == (3, "pool")
    assert [(r.nearest, r.nearest_text_source, r.score) for r in results[5:7]] == [
        (len(pool) + 4, "batch", 1.0)] * 2
    assert [(results[i].nearest, results[i].nearest_text_source, results[i].score)
            for i in (0, 1, 7, 8)] == [(None, None, 0.0)] * 4  # nothing to score against
    assert filter_novel([], pool) == []
    assert [r.kept for r in filter_novel(["a b", "b a", "a b"], [], threshold=1.0)] == [
        True, True, False]
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            filter_novel(["x"], [], threshold=bad)
