"""Error types as data: the base assignment of a clustering plus an append-only log of
human edits, folded in order. Undo is itself an edit. A new clustering inherits type
ids by matching its clusters to the previous clustering's types, so edits that name
type ids (rename, merge) and keyphrase ids (split, move, exclude) replay on top of it.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from pipeline.store import Store

OPS = ("rename", "describe", "merge", "split", "move", "exclude", "include", "undo")


@dataclass
class TypeView:
    type_id: int
    title: str
    description: str | None
    titled_by: str | None
    members: list[int] = field(default_factory=list)
    n_cases: int = 0
    share: float = 0.0
    excluded: bool = False
    merged_into: int | None = None
    edited: bool = False
    examples: list[int] = field(default_factory=list)


@dataclass
class Taxonomy:
    clustering: dict | None
    points: list[dict]                       # with current 'type' and 'excluded'
    types: dict[int, TypeView]
    n_cases: int                             # bad cases with a non-excluded keyphrase
    edits: list[dict]                        # active (not undone) edits

    def visible_types(self) -> list[TypeView]:
        ts = [t for t in self.types.values() if t.merged_into is None and t.members]
        return sorted(ts, key=lambda t: (t.excluded, -t.share, t.type_id))


def active_edits(edits: list[dict]) -> list[dict]:
    """Edits not undone. An undo names an edit id; undoing an undo restores it."""
    undone: set[int] = set()
    for e in reversed(edits):  # later undos decide about earlier edits
        if e["edit_id"] in undone:
            continue
        if e["op"] == "undo":
            undone.add(e["payload"]["edit_id"])
    return [e for e in edits if e["edit_id"] not in undone and e["op"] != "undo"]


def current(store: Store, clustering_id: str | None = None) -> Taxonomy:
    with store.read():  # one connection for all the reads below
        return _current(store, clustering_id)


# A clustering's points never change (only the edit log does), and reading 10k of them
# with their texts costs ~100 ms, so each process keeps the last few; the key changes
# if keyphrases were re-analysed since.
_POINTS: dict[tuple, list[dict]] = {}


def _base_points(store: Store, cl: dict) -> list[dict]:
    key = (str(store.path.resolve()), cl["clustering_id"], str(cl["created_at"]),
           store.keyphrases_version())
    if key not in _POINTS:
        if len(_POINTS) >= 4:
            _POINTS.clear()
        _POINTS[key] = store.cluster_points(cl["clustering_id"])
    return [dict(p) for p in _POINTS[key]]  # callers annotate their copies


def _current(store: Store, clustering_id: str | None) -> Taxonomy:
    cl = (next((c for c in store.clusterings() if c["clustering_id"] == clustering_id), None)
          if clustering_id else store.latest_clustering())
    meta = store.error_types()
    edits = active_edits(store.edits())
    if cl is None:
        return Taxonomy(None, [], {}, 0, edits)
    points = _base_points(store, cl)
    ptype = {p["kp_id"]: p["type_id"] for p in points}
    pexcl: dict[int, bool] = {p["kp_id"]: False for p in points}
    title = {tid: m["title"] for tid, m in meta.items()}
    desc = {tid: m["description"] for tid, m in meta.items()}
    by = {tid: m["titled_by"] for tid, m in meta.items()}
    texcl: dict[int, bool] = defaultdict(bool)
    merged_into: dict[int, int] = {}
    edited: set[int] = set()
    for e in edits:
        p, op = e["payload"], e["op"]
        if op == "rename":
            title[p["type_id"]], by[p["type_id"]] = p["title"], "human"
            edited.add(p["type_id"])
        elif op == "describe":
            desc[p["type_id"]] = p["description"]
            edited.add(p["type_id"])
        elif op == "merge":
            into = p["into"]
            for src in p["type_ids"]:
                if src == into:
                    continue
                merged_into[src] = into
                for k, t in ptype.items():
                    if t == src:
                        ptype[k] = into
            if p.get("title"):
                title[into], by[into] = p["title"], "human"
            edited.add(into)
        elif op in ("split", "move"):
            for k in p["kp_ids"]:
                if k in ptype:
                    ptype[k] = p["type_id"]
            edited.add(p["type_id"])
        elif op in ("exclude", "include"):
            flag = op == "exclude"
            if "type_id" in p:
                texcl[p["type_id"]] = flag
                edited.add(p["type_id"])
            for k in p.get("kp_ids", []):
                if k in pexcl:
                    pexcl[k] = flag
    types: dict[int, TypeView] = {}
    for tid in set(ptype.values()) | set(merged_into):
        if tid is None:
            continue
        types[tid] = TypeView(tid, title.get(tid) or f"type {tid}", desc.get(tid), by.get(tid),
                              excluded=texcl[tid], merged_into=merged_into.get(tid),
                              edited=tid in edited)
    for p in points:
        t = ptype[p["kp_id"]]
        p["type"] = t
        p["excluded"] = pexcl[p["kp_id"]] or (t is not None and texcl[t])
        if t is not None:
            types[t].members.append(p["kp_id"])
    live_cases = {p["case_id"] for p in points if not p["excluded"]}
    n_cases = len(live_cases)
    by_kp = {p["kp_id"]: p for p in points}
    for t in types.values():
        cases = {by_kp[k]["case_id"] for k in t.members if not by_kp[k]["excluded"]}
        t.n_cases = len(cases)
        t.share = len(cases) / n_cases if n_cases else 0.0
        if t.members:
            xy = np.array([[by_kp[k]["x"], by_kp[k]["y"]] for k in t.members])
            d = ((xy - xy.mean(0)) ** 2).sum(1)
            t.examples = [t.members[i] for i in np.argsort(d)[:5]]
    return Taxonomy(cl, points, types, n_cases, edits)


# -- edits ---------------------------------------------------------------------------------


def _check_types(tax: Taxonomy, ids) -> None:
    missing = [i for i in ids if i not in tax.types]
    if missing:
        raise ValueError(f"no error type {missing} in the current taxonomy")


# Each edit checks its ids against `tax`, the taxonomy the user acted on (the app passes
# the one it drew, which saves re-deriving it on every click), else the current one.


def rename(store: Store, type_id: int, title: str, author: str | None = None,
           tax: Taxonomy | None = None) -> int:
    if not title.strip():
        raise ValueError("a title cannot be empty")
    _check_types(tax or current(store), [type_id])
    return store.add_edit("rename", {"type_id": type_id, "title": title.strip()}, author)


def describe(store: Store, type_id: int, description: str, author: str | None = None,
             tax: Taxonomy | None = None) -> int:
    _check_types(tax or current(store), [type_id])
    return store.add_edit("describe", {"type_id": type_id, "description": description}, author)


def merge(store: Store, type_ids: list[int], into: int | None = None,
          title: str | None = None, author: str | None = None,
          tax: Taxonomy | None = None) -> int:
    type_ids = list(dict.fromkeys(type_ids))
    if len(type_ids) < 2:
        raise ValueError("merge needs at least two types")
    tax = tax or current(store)
    _check_types(tax, type_ids)
    # By default the largest type absorbs the others and keeps its id.
    into = into if into is not None else max(type_ids, key=lambda t: len(tax.types[t].members))
    payload = {"type_ids": type_ids, "into": into}
    if title and title.strip():
        payload["title"] = title.strip()  # one edit, so one undo takes back both
    return store.add_edit("merge", payload, author)


def split(store: Store, kp_ids: list[int], title: str, author: str | None = None,
          tax: Taxonomy | None = None) -> int:
    """The given members become a new error type; returns its type id."""
    if not kp_ids:
        raise ValueError("split needs at least one member")
    tax = tax or current(store)
    known = {p["kp_id"] for p in tax.points}
    unknown = [k for k in kp_ids if k not in known]
    if unknown:
        raise ValueError(f"keyphrases {unknown[:5]} are not in the current clustering")
    tid = store.new_type(title, None, "human",
                         tax.clustering["clustering_id"] if tax.clustering else None)
    store.add_edit("split", {"kp_ids": list(kp_ids), "type_id": tid}, author)
    return tid


def move(store: Store, kp_ids: list[int], type_id: int, author: str | None = None,
         tax: Taxonomy | None = None) -> int:
    _check_types(tax or current(store), [type_id])
    return store.add_edit("move", {"kp_ids": list(kp_ids), "type_id": type_id}, author)


def exclude(store: Store, type_id: int | None = None, kp_ids: list[int] | None = None,
            include: bool = False, author: str | None = None,
            tax: Taxonomy | None = None) -> int:
    if type_id is None and not kp_ids:
        raise ValueError("exclude needs a type or members")
    payload: dict = {}
    if type_id is not None:
        _check_types(tax or current(store), [type_id])
        payload["type_id"] = type_id
    if kp_ids:
        payload["kp_ids"] = list(kp_ids)
    return store.add_edit("include" if include else "exclude", payload, author)


def undo(store: Store, edit_id: int | None = None, author: str | None = None) -> int:
    """Undo an edit (by default the latest one still in force)."""
    act = active_edits(store.edits())
    if edit_id is None:
        if not act:
            raise ValueError("nothing to undo")
        edit_id = act[-1]["edit_id"]
    elif edit_id not in {e["edit_id"] for e in act}:
        raise ValueError(f"edit {edit_id} is not in force")
    return store.add_edit("undo", {"edit_id": edit_id}, author)


# -- matching a new clustering to existing types ---------------------------------------------


def match(prev: dict[int, int], labels: dict[int, int], emb: dict[int, np.ndarray],
          min_precision: float = 0.3, min_recall: float = 0.5,
          min_cos: float = 0.85) -> tuple[dict[int, int | None], dict]:
    """Map new clusters to previous types.

    prev: kp_id -> type_id of the previous clustering's base assignment.
    labels: kp_id -> new cluster label (-1 noise).
    emb: kp_id -> unit embedding (for centroid similarity).
    Returns ({cluster: type_id or None for a new type}, diff).
    """
    new_members: dict[int, set[int]] = defaultdict(set)
    for k, c in labels.items():
        if c >= 0:
            new_members[c].add(k)
    old_members: dict[int, set[int]] = defaultdict(set)
    for k, t in prev.items():
        if t is not None:
            old_members[t].add(k)
    pairs = []
    for c, m in new_members.items():
        for t, o in old_members.items():
            n = len(m & o)
            if n:
                pairs.append((n, c, t))
    pairs.sort(reverse=True)
    assign: dict[int, int | None] = {}
    used: set[int] = set()
    how: dict[int, str] = {}
    for n, c, t in pairs:  # one-to-one, biggest overlaps first
        if c in assign or t in used:
            continue
        if n / len(new_members[c]) >= min_precision or n / len(old_members[t]) >= min_recall:
            assign[c], how[c] = t, "overlap"
            used.add(t)

    def centroid(ks):
        v = np.mean([emb[k] for k in ks if k in emb], axis=0)
        return v / (np.linalg.norm(v) or 1.0)

    free_old = {t: centroid(o) for t, o in old_members.items()
                if t not in used and any(k in emb for k in o)}
    for c in sorted(new_members):
        if c in assign:
            continue
        cc = centroid(new_members[c])
        best = max(free_old, key=lambda t: float(cc @ free_old[t]), default=None)
        if best is not None and float(cc @ free_old.pop(best)) >= min_cos:
            assign[c], how[c] = best, "centroid"
            used.add(best)
        else:
            assign[c] = None
    # The diff, for people: what was kept, new, gone, split and merged.
    split_, merged = [], []
    for t, o in old_members.items():
        parts = Counter(labels.get(k, -1) for k in o if labels.get(k, -1) >= 0)
        big = [c for c, n in parts.items() if n >= 0.25 * len(o)]
        if len(big) >= 2:
            split_.append({"type_id": t, "into_clusters": sorted(big)})
    for c, m in new_members.items():
        parts = Counter(prev.get(k) for k in m if prev.get(k) is not None)
        prevn = sum(parts.values())
        big = [t for t, n in parts.items() if prevn and n >= 0.25 * prevn]
        if len(big) >= 2:
            merged.append({"cluster": c, "from_types": sorted(big)})
    diff = {
        "kept": sorted([{"cluster": c, "type_id": t, "by": how[c]} for c, t in assign.items()
                        if t is not None], key=lambda d: d["type_id"]),
        "new": sorted(c for c, t in assign.items() if t is None),
        "gone": sorted(t for t in old_members if t not in used),
        "split": split_, "merged": merged,
    }
    return assign, diff


# -- titles --------------------------------------------------------------------------------

_NUMS = re.compile(r"\d+(?:[.,]\d+)*")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def _template(text: str) -> str:
    return _NUMS.sub("N", _QUOTED.sub("'…'", text))


def offline_title(texts: list[str], central: list[str]) -> tuple[str, str]:
    """A title and description from the most representative keyphrases, without a model:
    the most common keyphrase pattern (numbers abstracted) when it covers a good share of
    the members, else the most central keyphrase."""
    counts = Counter(_template(t) for t in texts)
    pattern, n = counts.most_common(1)[0]
    title = pattern if n >= 0.3 * len(texts) else _template(central[0])
    examples = "; ".join(f"“{t}”" for t in central[:3])
    desc = f"{len(texts)} keyphrases; most representative: {examples}"
    return title[:120], desc
