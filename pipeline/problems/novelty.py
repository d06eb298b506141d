"""Novelty filter and contamination check on Rouge-L, exactly as rouge-score computes it.

Self-instruct (and the SEI paper after it) drops a synthesized problem whose Rouge-L F-measure
against any problem already in the pool is >= 0.7. Done naively that is one pure-Python LCS table
per pair; here every text is tokenized once with rouge-score's own tokenizer, pairs that cannot
reach the threshold are pruned with bounds that never miss (length, then a prefix filter on the
multiset of tokens, then the exact multiset overlap), and only the survivors get an LCS, from
rapidfuzz. The final decision always uses rouge-score's float formula, so results are identical
to `RougeScorer(["rougeL"], use_stemmer=False)` pair by pair.

Pure Python over lists of strings: callers fetch texts from wherever they live.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np
from rapidfuzz.distance import LCSseq
from rouge_score import scoring
from rouge_score import tokenize as _rouge_tokenize

ROUGE_THRESHOLD = 0.7  # self-instruct's cut-off
NGRAM = 13  # the contamination n-gram length used by GPT-3 / Llama decontamination

_UNKNOWN = -1  # token id for a query token no indexed text contains: it can never match
_FIRST = -(1 << 62)  # rank below every assigned one


def tokenize(text: str) -> list[str]:
    """rouge-score's default tokenizer without stemming (lowercase, alphanumeric runs)."""
    return _rouge_tokenize.tokenize(text, None)


def rouge_l(lcs: int, n_target: int, n_prediction: int) -> float:
    """Rouge-L F-measure from an LCS length and the two token counts, rouge-score's float way.

    F is symmetric bit for bit: 2*p is exact, so (2*p)*r == (2*r)*p, and p + r == r + p.
    """
    if n_target == 0 or n_prediction == 0:
        return 0.0
    return scoring.fmeasure(lcs / n_prediction, lcs / n_target)


class _Bounds:
    """Integer forms of `rouge_l(L, m, n) >= threshold`, so that pruning has no float slack.

    For fixed m and n, F rises by about 2/(m+n) per unit of L, far above rounding error, so the
    float F is monotone in L and the test reduces to L >= need(m, n).
    """

    def __init__(self, threshold: float):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self._need: dict[tuple[int, int], int] = {}
        self._span: dict[int, tuple[int, int, int]] = {}
        self._rows: dict[int, np.ndarray] = {}

    def need(self, m: int, n: int) -> int:
        """Smallest LCS giving F >= threshold; min(m, n) + 1 when none does."""
        key = (m, n) if m <= n else (n, m)
        got = self._need.get(key)
        if got is None:
            t, top = self.threshold, min(m, n)
            lcs = max(1, int(t * (m + n) / 2) - 1)
            while lcs > 1 and rouge_l(lcs - 1, m, n) >= t:
                lcs -= 1
            while lcs <= top and rouge_l(lcs, m, n) < t:
                lcs += 1
            got = self._need[key] = lcs
        return got

    def span(self, m: int) -> tuple[int, int, int]:
        """(shortest, longest partner length that can reach the threshold, least `need`)."""
        got = self._span.get(m)
        if got is None:
            lo = m
            while lo > 1 and self.need(m, lo - 1) <= lo - 1:
                lo -= 1
            hi = m
            while self.need(m, hi + 1) <= m:
                hi += 1
            least = min(self.need(m, n) for n in range(lo, hi + 1))
            got = self._span[m] = (lo, hi, least)
        return got

    def need_row(self, m: int) -> np.ndarray:
        """need(m, n) for n = lo..hi of span(m), as an array indexed by n - lo."""
        got = self._rows.get(m)
        if got is None:
            lo, hi, _ = self.span(m)
            got = self._rows[m] = np.array([self.need(m, n) for n in range(lo, hi + 1)])
        return got


def _features(ids: list[int]) -> list[int]:
    """The multiset of tokens as a set: the k-th occurrence of token t is feature (t, k).

    Then |features(a) & features(b)| = sum over tokens of min(count_a, count_b), an upper
    bound on the LCS.
    """
    seen: dict[int, int] = {}
    out = []
    for tid in ids:
        k = seen.get(tid, 0)
        seen[tid] = k + 1
        out.append(tid | (k << 32))
    return out


class NoveltyIndex:
    """Texts indexed for "which indexed text has Rouge-L F >= threshold with this one?".

    Pruning is a prefix filter (as in set-similarity joins): order token features rarest first;
    two texts whose overlap reaches `need` must share a feature within the first
    len - need + 1 features of each, so only the rare prefix of each text is posted. The order
    is fixed from `texts` plus `order_hint` (texts to be added or queried later) and never
    changes, which keeps the filter exact as texts are added.
    """

    def __init__(self, texts: list[str] = (), threshold: float = ROUGE_THRESHOLD,
                 order_hint: list[str] = ()):
        """Index `texts` (positions 0..len-1) for matches at `threshold`, fixed for the index
        because the posted prefixes depend on it. `order_hint` only speeds up pruning."""
        self._init([tokenize(t) for t in texts], threshold, [tokenize(t) for t in order_hint])

    @classmethod
    def _from_tokens(cls, tokens: list[list[str]], threshold: float,
                     hint: list[list[str]] = ()) -> NoveltyIndex:
        self = cls.__new__(cls)
        self._init(tokens, threshold, hint)
        return self

    def _init(self, tokens, threshold, hint) -> None:
        self.bounds = _Bounds(threshold)
        self.threshold = threshold
        self._vocab: dict[str, int] = {}
        self._ids: list[list[int]] = []
        self._postings: dict[int, list[int]] = {}
        # Each entry's features as dense feature ids, back to back in one array, so that the
        # overlap with many entries at once is a gather plus a segmented sum in numpy.
        self._fid: dict[int, int] = {}
        self._flat = np.zeros(1 << 16, dtype=np.int32)
        self._start = np.zeros(1024, dtype=np.int64)
        self._lens = np.zeros(1024, dtype=np.int64)
        self._mark = np.zeros(1024, dtype=bool)  # the query's features, set during a scan
        self._n_flat = 0
        # Rarest first: document frequency over everything the caller will show us.
        df: dict[int, int] = {}
        for toks in chain(tokens, hint):
            for f in set(_features([self._vocab.setdefault(t, len(self._vocab)) for t in toks])):
                df[f] = df.get(f, 0) + 1
        self._rank = {f: r for r, f in enumerate(sorted(df, key=lambda f: (df[f], f)))}
        self._next_new_rank = -1  # features first seen later rank before all others
        for toks in tokens:
            self._add_tokens(toks)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, text: str) -> int:
        """Index one more text; returns its position."""
        return self._add_tokens(tokenize(text))

    def best_match(self, text: str) -> tuple[int, float] | None:
        """(position, F) of the indexed text with the highest Rouge-L F >= threshold (lowest
        position on ties), or None when no indexed text reaches the threshold."""
        idx, score = self._scan(tokenize(text))
        return (idx, score) if idx is not None and score >= self.threshold else None

    def _add_tokens(self, toks: list[str]) -> int:
        pos, m = len(self._ids), len(toks)
        ids = [self._vocab.setdefault(t, len(self._vocab)) for t in toks]
        feats = _features(ids)
        for f in feats:
            if f not in self._rank:
                self._rank[f] = self._next_new_rank
                self._next_new_rank -= 1
        fids = [self._fid.setdefault(f, len(self._fid)) for f in feats]
        self._ids.append(ids)
        self._start = _room(self._start, pos + 1)
        self._lens = _room(self._lens, pos + 1)
        self._flat = _room(self._flat, self._n_flat + m)
        self._mark = _room(self._mark, len(self._fid))
        self._start[pos], self._lens[pos] = self._n_flat, m
        self._flat[self._n_flat:self._n_flat + m] = fids
        self._n_flat += m
        if m:
            _, _, least = self.bounds.span(m)
            for f in sorted(feats, key=self._rank.__getitem__)[:m - least + 1]:
                self._postings.setdefault(f, []).append(pos)
        return pos

    def _scan(self, toks: list[str]) -> tuple[int | None, float]:
        """Best (position, F) among indexed texts that pass the bounds; (None, 0.0) if none.

        Every text with F >= threshold passes, so when the best is >= threshold it is the true
        best; below it, it is only the best of the pairs that were checked.
        """
        m = len(toks)
        if m == 0:
            return None, 0.0  # rouge-score scores an empty side as 0
        ids = [self._vocab.get(t, _UNKNOWN) for t in toks]
        known = _features([tid for tid in ids if tid != _UNKNOWN])
        lo, hi, least = self.bounds.span(m)
        # Features in no indexed text may go anywhere in the order (the filter only needs both
        # sides to agree on shared features): put them first, where they use up prefix slots.
        probe = m - least + 1 - (m - len(known))
        if probe <= 0:
            return None, 0.0
        known.sort(key=lambda f: self._rank.get(f, _FIRST))
        cand = set().union(*(self._postings.get(f, ()) for f in known[:probe]))
        if not cand:
            return None, 0.0
        pos = np.fromiter(cand, dtype=np.int64, count=len(cand))
        pos.sort()  # ascending, so ties go to the lowest position
        lens = self._lens[pos]
        keep = (lens >= lo) & (lens <= hi)
        pos, lens = pos[keep], lens[keep]
        if not len(pos):
            return None, 0.0
        # Multiset overlap with every surviving entry: count its features that the query has.
        qf = [self._fid[f] for f in known if f in self._fid]
        self._mark[qf] = True
        try:
            ends = np.cumsum(lens)
            gather = np.arange(ends[-1]) + np.repeat(self._start[pos] - (ends - lens), lens)
            overlap = np.add.reduceat(self._mark[self._flat[gather]], ends - lens)
        finally:
            self._mark[qf] = False
        hit = overlap >= self.bounds.need_row(m)[lens - lo]
        best, best_score = None, 0.0
        for y, n in zip(pos[hit].tolist(), lens[hit].tolist()):
            score = rouge_l(LCSseq.similarity(ids, self._ids[y]), m, n)
            if score > best_score:
                best, best_score = y, score
        return best, best_score


def _room(arr: np.ndarray, size: int) -> np.ndarray:
    """arr, or a copy doubled until it holds `size` items."""
    if size <= len(arr):
        return arr
    grown = np.zeros(max(size, 2 * len(arr)), dtype=arr.dtype)
    grown[:len(arr)] = arr
    return grown


@dataclass
class NoveltyResult:
    """The fate of one candidate.

    nearest indexes the combined pool: the given pool first, then the batch by candidate
    position. For a dropped candidate, nearest/score is its true best match (F >= threshold);
    for a kept one, the best among pairs that survived pruning (None/0.0 if none did).
    """

    index: int
    kept: bool
    nearest: int | None
    nearest_text_source: str | None  # 'pool' | 'batch'
    score: float


def filter_novel(candidates: list[str], pool: list[str],
                 threshold: float = ROUGE_THRESHOLD) -> list[NoveltyResult]:
    """Self-instruct's novelty rule: candidate i is dropped if its Rouge-L F with any pool text
    or with any kept candidate 0..i-1 is >= threshold. One result per candidate, in order."""
    cand_toks = [tokenize(t) for t in candidates]
    index = NoveltyIndex._from_tokens([tokenize(t) for t in pool], threshold, cand_toks)
    combined = list(range(len(pool)))  # index position -> combined-pool index
    out = []
    for i, toks in enumerate(cand_toks):
        pos, score = index._scan(toks)
        nearest = None if pos is None else combined[pos]
        source = None if nearest is None else ("pool" if nearest < len(pool) else "batch")
        kept = pos is None or score < threshold
        if kept:
            index._add_tokens(toks)
            combined.append(len(pool) + i)
        out.append(NoveltyResult(i, kept, nearest, source, score))
    return out


@dataclass
class ContaminationHit:
    """A candidate that looks like a test item. With the defaults, reason is 'rougeL>=0.7'
    (score = Rouge-L F) or 'shared 13-gram' (score = share of the candidate's distinct
    13-grams found in that item)."""

    test_set: str
    index: int
    reason: str
    score: float


def contamination(candidates: list[str], test_sets: dict[str, list[str]],
                  rouge_threshold: float = ROUGE_THRESHOLD,
                  ngram: int = NGRAM) -> list[ContaminationHit | None]:
    """Per candidate, the strongest evidence that it copies a test item, or None.

    Rouge-L >= rouge_threshold against any test item wins (highest F across sets); otherwise
    a shared token n-gram (the item sharing the most distinct n-grams). Candidates shorter than
    `ngram` tokens can only hit through Rouge-L.
    """
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    cand_toks = [tokenize(t) for t in candidates]
    set_toks = {name: [tokenize(t) for t in items] for name, items in test_sets.items()}
    hits: list[ContaminationHit | None] = [None] * len(candidates)
    rouge_reason, gram_reason = f"rougeL>={rouge_threshold:g}", f"shared {ngram}-gram"
    for name, item_toks in set_toks.items():
        index = NoveltyIndex._from_tokens(item_toks, rouge_threshold, cand_toks)
        for i, toks in enumerate(cand_toks):
            pos, score = index._scan(toks)
            old = hits[i]
            if pos is not None and score >= rouge_threshold and (
                    old is None or old.reason != rouge_reason or score > old.score):
                hits[i] = ContaminationHit(name, pos, rouge_reason, score)
    grams_of = [_ngrams(toks, ngram) for toks in cand_toks]
    for name, item_toks in set_toks.items():
        owners: dict[tuple[str, ...], list[int]] = {}
        for j, toks in enumerate(item_toks):
            for g in _ngrams(toks, ngram):
                owners.setdefault(g, []).append(j)
        for i, grams in enumerate(grams_of):
            old = hits[i]
            if not grams or (old is not None and old.reason == rouge_reason):
                continue
            counts: dict[int, int] = {}
            for g in grams:
                for j in owners.get(g, ()):
                    counts[j] = counts.get(j, 0) + 1
            if not counts:
                continue
            j = min(counts, key=lambda k: (-counts[k], k))
            share = counts[j] / len(grams)
            if old is None or share > old.score:
                hits[i] = ContaminationHit(name, j, gram_reason, share)
    return hits


def _ngrams(toks: list[str], n: int) -> set[tuple[str, ...]]:
    """Distinct token n-grams (tuples hash exactly; no collisions to worry about)."""
    return {tuple(toks[k:k + n]) for k in range(len(toks) - n + 1)}
