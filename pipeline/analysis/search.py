"""Find keyphrases and bad cases by words and by meaning, and a case's nearest cases.

Words: a case-insensitive substring of keyphrase texts (those of the clustering shown),
of questions and of model outputs, looked up by the store. Meaning: cosine between the
query's MiniLM embedding and the cached embeddings of the keyphrases (the ones clustering
made). A case's neighbours: cosine between the mean embeddings of cases' keyphrases.
The CLI (`sei search`) and the app (Error map, Bad cases) both call `search` and
`nearest_cases`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.analysis.taxonomy import Taxonomy, current
from pipeline.models.embed import embed, embed_query
from pipeline.storage.store import Store


@dataclass
class Hits:
    query: str
    keyphrases: list[dict] = field(default_factory=list)  # by words
    cases: list[dict] = field(default_factory=list)       # by words: question, output, keyphrase
    similar: list[dict] = field(default_factory=list)     # keyphrases by meaning, with score

    def kp_ids(self) -> set[int]:
        """Keyphrases hit by words or by meaning (what the map marks)."""
        return {k["kp_id"] for k in self.keyphrases + self.similar}

    def case_ids(self) -> list[int]:
        """Cases hit, words first, each once."""
        ids = [c["case_id"] for c in self.cases] + [k["case_id"] for k in self.similar]
        return list(dict.fromkeys(ids))


# The embedding matrix of a clustering's points, per process (a map's points never change).
_EMB: dict[tuple, tuple[list[int], np.ndarray]] = {}


def point_embeddings(store: Store, tax: Taxonomy) -> tuple[list[int], np.ndarray]:
    """Keyphrase ids of the map and their unit embeddings (rows), from the cache."""
    cl = tax.clustering or {}
    key = (str(store.path.resolve()), cl.get("clustering_id"), str(cl.get("created_at")),
           store.keyphrases_version())
    if key not in _EMB:
        if len(_EMB) >= 4:
            _EMB.clear()
        ids = [p["kp_id"] for p in tax.points]
        x = embed(store, [p["text"] for p in tax.points]) if ids else np.zeros((0, 384))
        _EMB[key] = (ids, x)
    return _EMB[key]


def _kp_row(tax: Taxonomy, p: dict, **extra) -> dict:
    t = tax.types.get(p["type"]) if p["type"] is not None else None
    return dict({"kp_id": p["kp_id"], "text": p["text"], "case_id": p["case_id"],
                 "type_id": p["type"], "type": t.title if t else "unassigned (noise)",
                 "excluded": p["excluded"]}, **extra)


def by_words(store: Store, tax: Taxonomy, text: str, limit: int = 20
             ) -> tuple[list[dict], list[dict]]:
    """Keyphrases and bad cases whose text holds `text` (any case)."""
    if not text.strip() or tax.clustering is None:
        kps = []
    else:
        by = tax.by_kp()
        kps = [_kp_row(tax, by[r["kp_id"]]) for r in
               store.search_keyphrases(text.strip(), tax.clustering["clustering_id"], limit)
               if r["kp_id"] in by]
    cases = store.search_cases(text.strip(), limit) if text.strip() else []
    seen = {c["case_id"] for c in cases}
    question = {p["case_id"]: p["question"] for p in tax.points}
    for k in kps:  # cases found through their keyphrases
        if k["case_id"] not in seen:
            seen.add(k["case_id"])
            cases.append({"case_id": k["case_id"], "question": question.get(k["case_id"]),
                          "found_in": f"keyphrase “{k['text']}”"})
    return kps, cases[:limit]


def by_meaning(store: Store, tax: Taxonomy, text: str, limit: int = 10) -> list[dict]:
    """Keyphrases nearest the query by meaning (cosine), identical texts once."""
    ids, x = point_embeddings(store, tax)
    if not text.strip() or not ids:
        return []
    sims = x @ embed_query(text.strip())
    by, out, seen = tax.by_kp(), [], set()
    for i in np.argsort(-sims, kind="stable"):
        p = by[ids[i]]
        if p["text"] in seen:
            continue
        seen.add(p["text"])
        out.append(_kp_row(tax, p, score=round(float(sims[i]), 4)))
        if len(out) >= limit:
            break
    return out


def search(store: Store, text: str, tax: Taxonomy | None = None, limit: int = 10,
           meaning: bool = True) -> Hits:
    """Keyphrases and cases by words, and keyphrases by meaning (unless `meaning` is off)."""
    tax = tax if tax is not None else current(store)
    kps, cases = by_words(store, tax, text, limit)
    similar = by_meaning(store, tax, text, limit) if meaning else []
    return Hits(text, kps, cases, similar)


def case_vectors(store: Store, tax: Taxonomy) -> tuple[list[int], np.ndarray]:
    """Each case on the map and the unit mean of its keyphrases' embeddings."""
    ids, x = point_embeddings(store, tax)
    rows: dict[int, list[int]] = {}
    for i, p in enumerate(tax.points):
        rows.setdefault(p["case_id"], []).append(i)
    cases = list(rows)
    if not cases:
        return [], np.zeros((0, x.shape[1] if x.ndim == 2 else 384))
    m = np.stack([x[rows[c]].mean(0) for c in cases])
    return cases, m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


def nearest_cases(store: Store, tax: Taxonomy, case_id: int, k: int = 5) -> list[dict]:
    """The k cases whose keyphrases mean most alike (cosine of mean embeddings)."""
    cases, m = case_vectors(store, tax)
    if case_id not in cases:
        return []
    sims = m @ m[cases.index(case_id)]
    question = {p["case_id"]: p["question"] for p in tax.points}
    texts: dict[int, list[str]] = {}
    for p in tax.points:
        texts.setdefault(p["case_id"], []).append(p["text"])
    order = [i for i in np.argsort(-sims, kind="stable") if cases[i] != case_id][:k]
    return [{"case_id": cases[i], "score": round(float(sims[i]), 4),
             "keyphrases": "; ".join(texts[cases[i]]), "question": question[cases[i]]}
            for i in order]
