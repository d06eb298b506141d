"""Lineage of error types across re-clusterings: a new clustering's clusters are matched
to the previous clustering's types (by member overlap, then by centroid similarity), so
they inherit type ids and the edits that name them replay on top; and a diff for people
says what was kept, new, gone, split and merged."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np


def match(prev: dict[int, int], labels: dict[int, int], emb: dict[int, np.ndarray],
          min_precision: float = 0.3, min_recall: float = 0.5,
          min_cos: float = 0.85) -> tuple[dict[int, int | None], dict]:
    """Map new clusters to previous types.

    prev: kp_id -> type_id of the previous clustering's base assignment.
    labels: kp_id -> new cluster label (-1 noise).
    emb: kp_id -> unit embedding (for centroid similarity).
    Returns ({cluster: type_id or None for a new type}, diff).
    """
    new_members = _groups((k, c) for k, c in labels.items() if c >= 0)
    old_members = _groups((k, t) for k, t in prev.items() if t is not None)
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
    split_, merged = _splits_and_merges(prev, labels, old_members, new_members)
    diff = {
        "kept": sorted([{"cluster": c, "type_id": t, "by": how[c]} for c, t in assign.items()
                        if t is not None], key=lambda d: d["type_id"]),
        "new": sorted(c for c, t in assign.items() if t is None),
        "gone": sorted(t for t in old_members if t not in used),
        "split": split_, "merged": merged,
    }
    return assign, diff


def _groups(pairs) -> dict[int, set[int]]:
    """(kp_id, group) pairs as group -> kp ids."""
    out: dict[int, set[int]] = defaultdict(set)
    for k, g in pairs:
        out[g].add(k)
    return out


def _splits_and_merges(prev: dict[int, int], labels: dict[int, int],
                       old_members: dict[int, set[int]],
                       new_members: dict[int, set[int]]) -> tuple[list[dict], list[dict]]:
    """Old types whose members went to two or more new clusters (a quarter each at least),
    and new clusters made of two or more old types."""
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
    return split_, merged
