"""Error types as data: the base assignment of a clustering plus an append-only log of
human edits, folded in order. Undo is itself an edit. A new clustering inherits type
ids by matching its clusters to the previous clustering's types (pipeline/analysis/lineage.py),
so edits that name type ids (rename, merge) and keyphrase ids (split, move, exclude)
replay on top of it.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.storage.store import Store

OPS = ("rename", "describe", "merge", "split", "move", "exclude", "include", "undo", "use",
       "assign_noise", "verdict")  # verdict: a reviewer's decision (pipeline/analysis/review.py)


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
    redoable: bool = False                   # an undo in force that redo would take back

    def by_kp(self) -> dict[int, dict]:
        """Points by keyphrase id: the lookup that every view of members starts from."""
        return {p["kp_id"]: p for p in self.points}

    def visible_types(self) -> list[TypeView]:
        """Types with members that were not merged away: excluded last, then largest."""
        ts = [t for t in self.types.values() if t.merged_into is None and t.members]
        return sorted(ts, key=lambda t: (t.excluded, -t.share, t.type_id))


def undone_ids(edits: list[dict]) -> set[int]:
    """Ids of edits taken back. An undo names an edit id; undoing an undo restores it."""
    undone: set[int] = set()
    for e in reversed(edits):  # later undos decide about earlier edits
        if e["edit_id"] in undone:
            continue
        if e["op"] == "undo":
            undone.add(e["payload"]["edit_id"])
    return undone


def active_edits(edits: list[dict]) -> list[dict]:
    """Edits not undone (undos themselves left out)."""
    undone = undone_ids(edits)
    return [e for e in edits if e["edit_id"] not in undone and e["op"] != "undo"]


def current(store: Store, clustering_id: str | None = None) -> Taxonomy:
    """The taxonomy in force: the current clustering (or the one named) folded with the
    edit log."""
    with store.read():  # one connection for all the reads below
        return _current(store, clustering_id)


# -- which clustering is current -------------------------------------------------------------
# A clustering becomes current when it is made, unless it covers fewer bad cases than the
# current one (a quick start on 8 problems must not replace a curated 95-case taxonomy):
# then it is "held" (diff["held"]) until a person makes it current. Making one current is
# a "use" edit in the log, so a switch is undone like any other edit.


def current_clustering(store: Store, clusterings: list[dict] | None = None,
                       edits: list[dict] | None = None) -> dict | None:
    """The clustering in force: the last one made current by a 'use' edit,
    unless a later one was made without being held."""
    cls = clusterings if clusterings is not None else store.clusterings()
    if not cls:
        return None
    by_id = {c["clustering_id"]: c for c in cls}
    act = active_edits(edits if edits is not None else store.edits())
    uses = [e for e in act if e["op"] == "use" and e["payload"]["clustering_id"] in by_id]
    auto = [c for c in cls if not (c.get("diff") or {}).get("held")]
    last_use, last_auto = (uses[-1] if uses else None), (auto[-1] if auto else None)
    if last_use and (last_auto is None or last_auto["created_at"] <= last_use["created_at"]):
        return by_id[last_use["payload"]["clustering_id"]]
    return last_auto or cls[-1]


def held_clusterings(store: Store) -> list[dict]:
    """Held clusterings made after the last switch, newest first: the app asks about them."""
    with store.read():
        cls, edits = store.clusterings(), store.edits()
    cur = current_clustering(store, cls, edits)
    uses = [e for e in active_edits(edits) if e["op"] == "use"]
    since = uses[-1]["created_at"] if uses else None
    return [c for c in reversed(cls) if (c.get("diff") or {}).get("held")
            and c is not cur and (since is None or c["created_at"] > since)]


def use_clustering(store: Store, clustering_id: str, author: str | None = None) -> int:
    """Make a clustering current (an edit: undo goes back to the one before)."""
    if clustering_id not in {c["clustering_id"] for c in store.clusterings()}:
        raise ValueError(f"no clustering {clustering_id}")
    return store.add_edit("use", {"clustering_id": clustering_id}, author)


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


@dataclass
class _Folded:
    """The edit log folded onto a clustering's base assignment."""
    type_of: dict[int, int | None]           # kp_id -> type_id
    kp_excluded: dict[int, bool]             # kp_id -> excluded by a member exclusion
    title: dict[int, str]
    desc: dict[int, str | None]
    titled_by: dict[int, str | None]
    type_excluded: dict[int, bool]
    merged_into: dict[int, int]
    edited: set[int]


def _fold_edits(points: list[dict], meta: dict[int, dict], edits: list[dict]) -> _Folded:
    """Apply the active edits, in order, to the base assignment and stored titles."""
    f = _Folded(type_of={p["kp_id"]: p["type_id"] for p in points},
                kp_excluded={p["kp_id"]: False for p in points},
                title={tid: m["title"] for tid, m in meta.items()},
                desc={tid: m["description"] for tid, m in meta.items()},
                titled_by={tid: m["titled_by"] for tid, m in meta.items()},
                type_excluded=defaultdict(bool), merged_into={}, edited=set())
    for e in edits:
        op, pay = e["op"], e["payload"]
        if op == "rename":
            # a forced retitle is a rename by the titler (with a description), undoable
            f.title[pay["type_id"]] = pay["title"]
            f.titled_by[pay["type_id"]] = pay.get("titled_by", "human")
            if "description" in pay:
                f.desc[pay["type_id"]] = pay["description"]
            f.edited.add(pay["type_id"])
        elif op == "describe":
            f.desc[pay["type_id"]] = pay["description"]
            f.edited.add(pay["type_id"])
        elif op == "merge":
            _fold_merge(f, pay)
        elif op in ("split", "move"):
            for k in pay["kp_ids"]:
                if k in f.type_of:
                    f.type_of[k] = pay["type_id"]
            f.edited.add(pay["type_id"])
        elif op == "assign_noise":  # a batch of moves, one edit (one undo takes all back)
            for k, tid in zip(pay["kp_ids"], pay["type_ids"]):
                if k in f.type_of:
                    f.type_of[k] = tid
        elif op in ("exclude", "include"):
            flag = op == "exclude"
            if "type_id" in pay:
                f.type_excluded[pay["type_id"]] = flag
                f.edited.add(pay["type_id"])
            for k in pay.get("kp_ids", []):
                if k in f.kp_excluded:
                    f.kp_excluded[k] = flag
        # "undo" is already folded into which edits are active; "use" picks the clustering
    return f


def _fold_merge(f: _Folded, pay: dict) -> None:
    into = pay["into"]
    # the merged type's description covers what it absorbed (until a person or a retitle
    # writes a new one): the kept type's, then each absorbed type's title and description
    absorbed = [f"{f.title.get(s) or s}" + (f": {f.desc[s]}" if f.desc.get(s) else "")
                for s in pay["type_ids"] if s != into]
    if absorbed:
        f.desc[into] = ((f.desc.get(into) or "") + " Merged with " + "; ".join(absorbed)
                        ).strip()[:1000]
    for src in pay["type_ids"]:
        if src == into:
            continue
        f.merged_into[src] = into
        for k, t in f.type_of.items():
            if t == src:
                f.type_of[k] = into
    if pay.get("title"):
        f.title[into], f.titled_by[into] = pay["title"], "human"
    f.edited.add(into)


def _type_views(f: _Folded) -> dict[int, TypeView]:
    """One view per type that has members or was merged away, without members yet."""
    types: dict[int, TypeView] = {}
    for tid in set(f.type_of.values()) | set(f.merged_into):
        if tid is None:
            continue
        types[tid] = TypeView(tid, f.title.get(tid) or f"type {tid}", f.desc.get(tid),
                              f.titled_by.get(tid), excluded=f.type_excluded[tid],
                              merged_into=f.merged_into.get(tid), edited=tid in f.edited)
    return types


def _place_points(points: list[dict], f: _Folded, types: dict[int, TypeView]) -> int:
    """Annotate each point with its type and exclusion, fill the types' members, shares
    and examples (the members nearest their centre). Returns the bad cases still live."""
    for pt in points:
        t = f.type_of[pt["kp_id"]]
        pt["type"] = t
        pt["excluded"] = f.kp_excluded[pt["kp_id"]] or (t is not None and f.type_excluded[t])
        if t is not None:
            types[t].members.append(pt["kp_id"])
    n_cases = len({pt["case_id"] for pt in points if not pt["excluded"]})
    by_kp = {pt["kp_id"]: pt for pt in points}
    for t in types.values():
        cases = {by_kp[k]["case_id"] for k in t.members if not by_kp[k]["excluded"]}
        t.n_cases = len(cases)
        t.share = len(cases) / n_cases if n_cases else 0.0
        if t.members:
            xy = np.array([[by_kp[k]["x"], by_kp[k]["y"]] for k in t.members])
            d = ((xy - xy.mean(0)) ** 2).sum(1)
            t.examples = [t.members[i] for i in np.argsort(d)[:5]]
    return n_cases


def _current(store: Store, clustering_id: str | None) -> Taxonomy:
    """The taxonomy of a clustering (default: the current one) with its edits folded in."""
    cls, all_edits = store.clusterings(), store.edits()
    cl = (next((c for c in cls if c["clustering_id"] == clustering_id), None)
          if clustering_id else current_clustering(store, cls, all_edits))
    meta = store.error_types()
    edits = active_edits(all_edits)
    if cl is None:
        return Taxonomy(None, [], {}, 0, edits)
    points = _base_points(store, cl)
    folded = _fold_edits(points, meta, edits)
    types = _type_views(folded)
    n_cases = _place_points(points, folded, types)
    return Taxonomy(cl, points, types, n_cases, edits, bool(_redoable(all_edits)))


# -- edits ---------------------------------------------------------------------------------


def _check_types(tax: Taxonomy, ids) -> None:
    missing = [i for i in ids if i not in tax.types]
    if missing:
        raise ValueError(f"no error type {missing} in the current taxonomy")


# Each edit checks its ids against `tax`, the taxonomy the user acted on (the app passes
# the one it drew, which saves re-deriving it on every click), else the current one.


def rename(store: Store, type_id: int, title: str, author: str | None = None,
           tax: Taxonomy | None = None) -> int:
    """Give a type a new title (an undoable edit); returns the edit id."""
    if not title.strip():
        raise ValueError("a title cannot be empty")
    _check_types(tax or current(store), [type_id])
    return store.add_edit("rename", {"type_id": type_id, "title": title.strip()}, author)


def describe(store: Store, type_id: int, description: str, author: str | None = None,
             tax: Taxonomy | None = None) -> int:
    """Give a type a new description (an undoable edit); returns the edit id."""
    _check_types(tax or current(store), [type_id])
    return store.add_edit("describe", {"type_id": type_id, "description": description}, author)


def merge(store: Store, type_ids: list[int], into: int | None = None,
          title: str | None = None, author: str | None = None,
          tax: Taxonomy | None = None) -> int:
    """Merge types into one, by default the largest; returns the edit id."""
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
    """Move keyphrases into an existing type; returns the edit id."""
    _check_types(tax or current(store), [type_id])
    return store.add_edit("move", {"kp_ids": list(kp_ids), "type_id": type_id}, author)


# -- noise: keyphrases HDBSCAN left in no cluster ----------------------------------------------


def noise(tax: Taxonomy) -> dict:
    """Keyphrases in no type (noise, not excluded) and their bad cases; `only_noise`: the
    cases whose every live keyphrase is noise (no type reaches them)."""
    kp_ids = [p["kp_id"] for p in tax.points if p["type"] is None and not p["excluded"]]
    by = tax.by_kp()
    cases = sorted({by[k]["case_id"] for k in kp_ids})
    return {"kp_ids": kp_ids, "case_ids": cases, "only_noise": unreached_cases(tax)["noise"]}


def unreached_cases(tax: Taxonomy) -> dict[str, list[int]]:
    """Bad cases on the map that no live type reaches, by reason: `noise` (their live
    keyphrases are all unassigned) and `excluded` (every keyphrase excluded, or in an
    excluded type)."""
    live, noisy, seen = set(), set(), set()
    for p in tax.points:
        seen.add(p["case_id"])
        if not p["excluded"]:
            (noisy if p["type"] is None else live).add(p["case_id"])
    return {"noise": sorted(noisy - live), "excluded": sorted(seen - live - noisy)}


def type_centroids(tax: Taxonomy, emb: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Unit mean embedding of the live members of each visible, non-excluded type."""
    by = tax.by_kp()
    out = {}
    for t in tax.visible_types():
        vs = [emb[k] for k in t.members if not by[k]["excluded"] and k in emb]
        if t.excluded or not vs:
            continue
        c = np.mean(vs, axis=0)
        out[t.type_id] = c / (np.linalg.norm(c) or 1.0)
    return out


def nearest_types(store: Store, tax: Taxonomy, kp_ids: list[int]) -> dict[int, tuple[int, float]]:
    """For each keyphrase, the type whose centroid is nearest (cosine over the cached
    MiniLM embeddings) and the similarity."""
    from pipeline.models.embed import embed

    by = tax.by_kp()
    ids = [p["kp_id"] for p in tax.points]
    emb = dict(zip(ids, embed(store, [by[k]["text"] for k in ids])))
    cents = type_centroids(tax, emb)
    if not cents or not kp_ids:
        return {}
    tids = list(cents)
    sims = np.stack([emb[k] for k in kp_ids]) @ np.stack([cents[t] for t in tids]).T
    best = sims.argmax(1)
    return {k: (tids[int(j)], float(sims[i, j])) for i, (k, j) in enumerate(zip(kp_ids, best))}


def assign_noise(store: Store, min_similarity: float | None = None, author: str | None = None,
                 tax: Taxonomy | None = None) -> dict:
    """Assign every noise keyphrase to its nearest type by embedding, as one undoable edit
    (a batch of moves: it survives re-clustering as moves do). Keyphrases less similar than
    `min_similarity` to every type are left as noise. Returns the edit id (None when nothing
    moved), how many were assigned and how many left."""
    tax = tax or current(store)
    kps = noise(tax)["kp_ids"]
    if not kps:
        raise ValueError("no unassigned keyphrases: nothing to assign")
    near = nearest_types(store, tax, kps)
    if not near:
        raise ValueError("no live error type to assign noise to")
    pick = [k for k in kps if min_similarity is None or near[k][1] >= min_similarity]
    edit = None
    if pick:
        edit = store.add_edit("assign_noise", {"kp_ids": pick,
                                               "type_ids": [near[k][0] for k in pick],
                                               "similarity": [round(near[k][1], 4)
                                                              for k in pick]}, author)
    return {"edit_id": edit, "assigned": len(pick), "left": len(kps) - len(pick),
            "types": sorted({near[k][0] for k in pick})}


def exclude(store: Store, type_id: int | None = None, kp_ids: list[int] | None = None,
            include: bool = False, author: str | None = None,
            tax: Taxonomy | None = None) -> int:
    """Exclude (or include again) a type or some keyphrases; returns the edit id."""
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
    """Undo an edit (by default the latest one still in force). Any edit in force can be
    undone, an undo too (which redoes what it took back)."""
    edits = store.edits()
    if edit_id is None:
        edit_id = last_effective(edits)
        if edit_id is None:
            raise ValueError("nothing to undo")
    elif edit_id not in {e["edit_id"] for e in edits} - undone_ids(edits):
        raise ValueError(f"edit {edit_id} is not in force")
    return store.add_edit("undo", {"edit_id": edit_id}, author)


def last_effective(edits: list[dict], ops: tuple[str, ...] | None = None) -> int | None:
    """The id of the edit in force (of these ops, or any) made effective last: a redo
    makes its edit effective again at the redo's id, so Undo after Redo takes back what
    was redone. None when no such edit is in force."""
    act = [e for e in active_edits(edits) if ops is None or e["op"] in ops]
    if not act:
        return None
    by_id = {e["edit_id"]: e for e in edits}
    undone = undone_ids(edits)
    when = {e["edit_id"]: e["edit_id"] for e in act}
    for e in edits:
        target = by_id.get(e["payload"].get("edit_id")) if e["op"] == "undo" else None
        if e["edit_id"] not in undone and target and target["op"] == "undo":
            again = target["payload"]["edit_id"]
            if again in when:
                when[again] = max(when[again], e["edit_id"])
    return max(when, key=when.get)


def redo(store: Store, author: str | None = None) -> int:
    """Take back the latest undo still in force: its edit is in force again."""
    undos = _redoable(store.edits())
    if not undos:
        raise ValueError("nothing to redo")
    return store.add_edit("undo", {"edit_id": undos[-1]["edit_id"]}, author)


def _redoable(edits: list[dict]) -> list[dict]:
    """Undos in force that took back an edit (a redo is an undo of an undo: not these)."""
    undone = undone_ids(edits)
    by_id = {e["edit_id"]: e for e in edits}
    return [e for e in edits if e["op"] == "undo" and e["edit_id"] not in undone
            and by_id.get(e["payload"]["edit_id"], {}).get("op") != "undo"]


# -- views for people: the edit log, duplicate titles, dots on the map, a readable diff ------


def _tname(titles: dict[int, str], tid) -> str:
    return f"{tid} “{titles[tid]}”" if tid in titles else str(tid)


def _kps(ids: list[int]) -> str:
    return f"{len(ids)} keyphrase{'s' if len(ids) != 1 else ''}"


def describe_edit(e: dict, titles: dict[int, str], by_id: dict[int, dict] | None = None) -> str:
    """One edit as a sentence; `titles` names the types (ids alone are opaque)."""
    p, op = e["payload"], e["op"]
    if op == "rename":
        return f"renamed type {p['type_id']} to “{p['title']}”"
    if op == "describe":
        return f"described type {_tname(titles, p['type_id'])}: “{p['description']}”"
    if op == "merge":
        others = [t for t in p["type_ids"] if t != p["into"]]
        s = (f"merged {', '.join(_tname(titles, t) for t in others)} into "
             f"{_tname(titles, p['into'])}")
        return s + (f", titled “{p['title']}”" if p.get("title") else "")
    if op == "split":
        return f"split {_kps(p['kp_ids'])} into the new type {_tname(titles, p['type_id'])}"
    if op == "move":
        return f"moved {_kps(p['kp_ids'])} to type {_tname(titles, p['type_id'])}"
    if op == "assign_noise":
        n_types = len(set(p["type_ids"]))
        return (f"assigned {_kps(p['kp_ids'])} left as noise to their nearest types "
                f"({n_types} type{'s' if n_types != 1 else ''})")
    if op in ("exclude", "include"):
        verb = "excluded" if op == "exclude" else "included again"
        parts = ([f"type {_tname(titles, p['type_id'])}"] if "type_id" in p else []) + \
                ([_kps(p["kp_ids"])] if p.get("kp_ids") else [])
        return f"{verb} {' and '.join(parts)}"
    if op == "undo":
        target = (by_id or {}).get(p["edit_id"])
        if target and target["op"] == "undo":  # undoing an undo redoes its edit
            again = (by_id or {}).get(target["payload"]["edit_id"])
            what = f": {describe_edit(again, titles, by_id)}" if again else ""
            return f"redid edit {target['payload']['edit_id']}{what}"
        what = f": {describe_edit(target, titles, by_id)}" if target else ""
        return f"undid edit {p['edit_id']}{what}"
    if op == "use":
        return f"made clustering {p['clustering_id']} current"
    if op == "verdict":
        word = {True: "correct", False: "wrong"}
        what = (f"confirmed the verdict {word[p['correct']]}" if p["correct"] == p["stored"]
                else f"overrode the verdict {word[p['stored']]} → {word[p['correct']]}")
        return f"{what} of {p['dataset']}/{p['split']}/{p['pid']} (run {p['run_id']})"
    return f"{op} {p}"


def edit_log(store: Store, tax: Taxonomy | None = None) -> list[dict]:
    """Every edit, newest first, as a sentence, with whether it is in force."""
    with store.read():
        edits = store.edits()
        titles = {tid: m["title"] for tid, m in store.error_types().items()}
        tax = tax if tax is not None else current(store)
    undone = undone_ids(edits)
    titles.update({t.type_id: t.title for t in tax.types.values()})
    by_id = {e["edit_id"]: e for e in edits}
    return [{"edit": e["edit_id"], "at": e["created_at"], "by": e["author"] or "",
             "what": describe_edit(e, titles, by_id), "op": e["op"],
             "in force": e["edit_id"] not in undone} for e in reversed(edits)]


def duplicate_titles(tax: Taxonomy) -> dict[str, list[int]]:
    """Titles that more than one visible type carries (case and spacing ignored)."""
    seen: dict[str, list[int]] = defaultdict(list)
    for t in tax.visible_types():
        if not t.excluded:
            seen[" ".join(t.title.lower().split())].append(t.type_id)
    return {k: sorted(v) for k, v in seen.items() if len(v) > 1}


def dots(tax: Taxonomy, show_excluded: bool = False) -> list[dict]:
    """What the map draws: identical keyphrases of one type are one dot (they share a
    position), with every keyphrase id behind it and the count for its size. The first
    keyphrase id names the dot (what a selection hands back)."""
    out: dict[tuple, dict] = {}
    for p in tax.points:
        if p["excluded"] and not show_excluded:
            continue
        key = (p["text"], p["type"], p["excluded"])
        d = out.get(key)
        if d is None:
            out[key] = {"kp_id": p["kp_id"], "kp_ids": [p["kp_id"]], "text": p["text"],
                        "type": p["type"], "excluded": p["excluded"], "x": p["x"], "y": p["y"],
                        "cases": {p["case_id"]}, "question": p["question"],
                        "case_id": p["case_id"], "dataset": p["dataset"]}
        else:
            d["kp_ids"].append(p["kp_id"])
            d["cases"].add(p["case_id"])
    return list(out.values())


COLOUR_BY = ("type", "dataset", "analyzer", "verdict")  # verdict: review.point_verdicts


def point_attribute(tax: Taxonomy, by: str) -> dict[int, str]:
    """What the map can colour keyphrases by besides their type: the dataset of their
    bad case, or the analyzer (instructor or offline) that wrote them."""
    if by not in ("dataset", "analyzer"):
        raise ValueError(f"cannot colour by {by!r}; one of {', '.join(COLOUR_BY)}")
    return {p["kp_id"]: str(p[by]) for p in tax.points}


def expand(dot_ids: list[int], tax: Taxonomy, show_excluded: bool = False) -> list[int]:
    """Keyphrase ids behind the dots a selection named."""
    if not dot_ids:  # (the map asks at every run; no need to group 10,000 points for none)
        return []
    by = {d["kp_id"]: d["kp_ids"] for d in dots(tax, show_excluded)}
    return sorted({k for i in dot_ids for k in by.get(i, [i])})


def case_types(tax: Taxonomy) -> dict[int, set[int]]:
    """Error types of each bad case, through its non-excluded keyphrases."""
    out: dict[int, set[int]] = defaultdict(set)
    for p in tax.points:
        if p["type"] is not None and not p["excluded"]:
            out[p["case_id"]].add(p["type"])
    return out


def case_texts(tax: Taxonomy) -> dict[int, list[str]]:
    """The keyphrase texts of each bad case (what a text filter searches)."""
    out: dict[int, list[str]] = defaultdict(list)
    for p in tax.points:
        out[p["case_id"]].append(p["text"])
    return out


def kp_ids_of_case(tax: Taxonomy, case_id: int) -> set[int]:
    """The keyphrases of one bad case on this map (what the map rings for a shown case)."""
    return {p["kp_id"] for p in tax.points if p["case_id"] == case_id}


def cases_of(tax: Taxonomy, kp_ids: list[int]) -> list[int]:
    """Bad cases behind some keyphrases, most keyphrases first."""
    by = {p["kp_id"]: p["case_id"] for p in tax.points}
    n = Counter(by[k] for k in kp_ids if k in by)
    return [c for c, _ in n.most_common()]


def case_view(store: Store, tax: Taxonomy, case_id: int) -> dict | None:
    """One bad case for the side panel: problem, output, grading, keyphrases with their
    type and where their evidence sits in the output."""
    from pipeline.analysis.offline_analyzer import evidence_span

    case = store.bad_case(case_id)
    if case is None:
        return None
    by_kp = tax.by_kp()
    kps = []
    for k in store.case_keyphrases(case_id):
        p = by_kp.get(k["kp_id"])
        t = tax.types.get(p["type"]) if p and p["type"] is not None else None
        kps.append(dict(k, on_map=p is not None, type_id=t.type_id if t else None,
                        type=t.title if t else ("unassigned" if p else "not in this clustering"),
                        excluded=bool(p and p["excluded"]),
                        span=evidence_span(case["output"] or "", k["evidence"] or "")))
    return dict(case, keyphrases=kps)


def compare(old: Taxonomy, new: Taxonomy) -> list[dict]:
    """The curated taxonomy before and after a re-clustering, type by type: where the
    keyphrases of each type went (by keyphrase text, so a new analysis compares too)."""
    def members(tax):
        by = tax.by_kp()
        return {t.type_id: [by[k]["text"] for k in t.members if not by[k]["excluded"]]
                for t in tax.visible_types() if not t.excluded}

    om, nm = members(old), members(new)
    ntype = {p["text"]: p["type"] for p in new.points if not p["excluded"]}
    rows, reached = [], set()
    for tid, texts in sorted(om.items(), key=lambda kv: -len(kv[1])):
        if not texts:
            continue
        dest = Counter(ntype.get(x, "gone") for x in texts)
        parts = [(d, n) for d, n in dest.most_common() if n >= 0.2 * len(texts)] \
            or dest.most_common(1)
        main, n_main = parts[0]
        if main in ("gone", None):
            status = "gone (noise)" if main is None else "gone (not in the new analysis)"
        elif len([d for d, _ in parts if d not in ("gone", None)]) >= 2:
            status = "split"
        elif main == tid:
            status = "kept" if n_main >= 0.8 * len(texts) else "kept, changed"
        else:
            status = f"now part of {main}"
        reached.update(d for d, _ in parts)
        rows.append({"type": tid, "title": old.types[tid].title, "keyphrases": len(texts),
                     "status": status,
                     "now": ", ".join(f"{d if d not in ('gone', None) else 'noise'}: "
                                      f"{n}" for d, n in parts),
                     "inherited title": (main == tid and new.types[tid].titled_by != "human"
                                         and n_main < 0.8 * len(texts))})
    for tid, texts in sorted(nm.items(), key=lambda kv: -len(kv[1])):
        if tid not in om:
            rows.append({"type": tid, "title": new.types[tid].title, "keyphrases": len(texts),
                         "status": "new", "now": f"{tid}: {len(texts)}",
                         "inherited title": False})
    return rows


def export_rows(store: Store, tax: Taxonomy) -> list[dict]:
    """Per visible type: title, share and its bad cases with question, model output and
    the keyphrases of that type (what `sei export types` and the app's Export write)."""
    cases = {c["case_id"]: c for c in store.bad_cases()}
    by_kp = tax.by_kp()
    rows = []
    for t in tax.visible_types():
        per_case: dict[int, list[dict]] = defaultdict(list)
        for k in t.members:
            per_case[by_kp[k]["case_id"]].append(by_kp[k])
        rows.append({
            "type_id": t.type_id, "title": t.title, "description": t.description,
            "titled_by": t.titled_by, "excluded": t.excluded, "share": t.share,
            "n_cases": t.n_cases, "clustering_id": tax.clustering["clustering_id"],
            "members": [{"kp_id": k, "text": by_kp[k]["text"], "case_id": by_kp[k]["case_id"],
                         "excluded": by_kp[k]["excluded"]} for k in t.members],
            "cases": [{"case_id": c, "question": cases[c]["question"] if c in cases else None,
                       "output": cases[c]["output"] if c in cases else None,
                       "reference": cases[c]["answer"] if c in cases else None,
                       "pred": cases[c]["pred"] if c in cases else None,
                       "keyphrases": [p["text"] for p in ps]}
                      for c, ps in sorted(per_case.items())]})
    return rows


def export_jsonl(store: Store, tax: Taxonomy) -> str:
    """export_rows as JSON Lines, one type a line (the file `sei export types` and the
    app's Export button hand out)."""
    return "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n"
                   for r in export_rows(store, tax))


def find_generations(rows: list[dict], tax: Taxonomy, datasets: list[str] | None = None,
                     verdict: str = "wrong only", type_id: int | None = None,
                     text: str = "", analysed_only: bool = False) -> list[dict]:
    """Judged generations filtered as on the Bad cases page, each with `key` (run/pid: a
    stable id for correct answers too), `types` (titles of its case's error types) and
    `model` (the model that wrote it, with its adapter). analysed_only: only extraction
    runs' generations, the cases analysis reads (no evaluation's test-split answers)."""
    ctypes, ctexts = case_types(tax), case_texts(tax)
    t = text.lower().strip()
    out = []
    for r in rows:
        c = r["case_id"]
        c = int(c) if c is not None and c == c else None  # NaN from pandas is no case
        if datasets and r["dataset"] not in datasets:
            continue
        if analysed_only and r.get("run_kind", "extract") != "extract":
            continue
        # a case judged wrong that a person judged right keeps its id: the verdict decides
        if (verdict == "wrong only" and (c is None or r["correct"] is True)) or (
                verdict == "correct only" and r["correct"] is not True):
            continue
        if type_id is not None and type_id not in ctypes.get(c, ()):
            continue
        if t and t not in (r["question"] or "").lower() and not any(
                t in k.lower() for k in ctexts.get(c, [])):
            continue
        adapter = r.get("adapter")
        out.append(dict(r, case_id=c, key=f"{r['run_id']}/{r['dataset']}/{r['split']}/{r['pid']}",
                        model=(r.get("model_id") or "")
                        + (f" + adapter {Path(adapter).name}" if adapter else ""),
                        types=", ".join(tax.types[x].title for x in sorted(ctypes.get(c, ()))
                                        if x in tax.types)))
    return out


# -- an iteration's frozen taxonomy ---------------------------------------------------------


def snapshot(store: Store) -> tuple[dict, str | None]:
    """The taxonomy in force as plain data: per visible type its title, share and cases."""
    tax = current(store)
    by_kp = tax.by_kp()
    types = []
    for t in tax.visible_types():
        cases = sorted({by_kp[k]["case_id"] for k in t.members if not by_kp[k]["excluded"]})
        kps = [k for k in t.members if not by_kp[k]["excluded"]]
        types.append({"type_id": t.type_id, "title": t.title, "description": t.description,
                      "excluded": t.excluded, "share": t.share, "n_cases": len(cases),
                      "case_ids": cases,
                      "keyphrases": {str(k): by_kp[k]["text"] for k in kps[:200]}})
    # bad cases no type reaches, by reason: synthesis reports them
    snap = {"types": types, "edit_ids": [e["edit_id"] for e in tax.edits],
            "n_cases": tax.n_cases, "unreached": unreached_cases(tax)}
    return snap, (tax.clustering or {}).get("clustering_id")


def freeze(store: Store, n: int, mode: str = "scratch", params: dict | None = None) -> dict:
    """Iteration n's record: the taxonomy in force, frozen the first time it is asked
    for, so later curation never rewrites what an iteration was made from."""
    it = store.iteration(n)
    if it is None:
        snap, cl = snapshot(store)
        if not snap["types"]:
            raise ValueError("no error types to work from: run analysis and clustering first "
                             "(`sei quickstart`, or `sei analyze` then `sei cluster`)")
        store.create_iteration(n, mode, n - 1 if n > 1 else None, snap, cl, params or {})
        it = store.iteration(n)
    return it


def types_of(it: dict, type_ids: list[int] | None = None) -> list[dict]:
    """An iteration's non-excluded types (or the ones named)."""
    ts = [t for t in it["taxonomy"]["types"] if not t["excluded"]]
    if type_ids:
        missing = set(type_ids) - {t["type_id"] for t in ts}
        if missing:
            raise ValueError(f"types {sorted(missing)} are not visible, non-excluded types "
                             f"of iteration {it['iteration']}")
        ts = [t for t in ts if t["type_id"] in type_ids]
    return ts
