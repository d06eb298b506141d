"""Paired comparisons of two runs on the same items: the change in accuracy with a
paired-bootstrap interval (both runs resampled on the same items) and the exact
McNemar test on the discordant pairs. Every accuracy change the app shows uses this."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import comb

import numpy as np


@dataclass
class PairedDiff:
    n: int
    acc_a: float
    acc_b: float
    diff: float          # acc_b - acc_a
    lo: float            # 95% paired-bootstrap interval of diff
    hi: float
    fixed: int           # wrong in a, right in b
    broken: int          # right in a, wrong in b
    mcnemar_p: float     # exact two-sided binomial test on fixed vs broken
    n_boot: int
    seed: int

    def as_dict(self) -> dict:
        """The fields as a dict (for JSON and the tables)."""
        return asdict(self)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p: the discordant pairs as Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_diff(a: list[bool], b: list[bool], n_boot: int = 10_000, seed: int = 0,
                level: float = 0.95) -> PairedDiff:
    """Change b - a in accuracy over the same items (a[i] and b[i] judge item i)."""
    if len(a) != len(b):
        raise ValueError(f"paired runs differ in length: {len(a)} vs {len(b)}")
    if not a:
        raise ValueError("no shared items to compare")
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    d = y - x
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    boots = d[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    fixed = int(((x == 0) & (y == 1)).sum())
    broken = int(((x == 1) & (y == 0)).sum())
    return PairedDiff(n=len(d), acc_a=float(x.mean()), acc_b=float(y.mean()),
                      diff=float(d.mean()), lo=float(lo), hi=float(hi), fixed=fixed,
                      broken=broken, mcnemar_p=mcnemar_exact(fixed, broken), n_boot=n_boot,
                      seed=seed)


def pair_runs(items_a: list[dict], items_b: list[dict]) -> tuple[list[bool], list[bool]]:
    """Align two runs' judged items on (dataset, split, pid); only shared items count."""
    key = lambda r: (r["dataset"], r["split"], r["pid"])  # noqa: E731
    bmap = {key(r): bool(r["correct"]) for r in items_b}
    shared = [r for r in items_a if key(r) in bmap]
    return [bool(r["correct"]) for r in shared], [bmap[key(r)] for r in shared]


def paired_macro(pairs: list[tuple[list[bool], list[bool]]], n_boot: int = 10_000,
                 seed: int = 0, level: float = 0.95) -> dict:
    """The macro-averaged change b - a over several sets (each set's accuracy counts
    once), with a paired-bootstrap interval that resamples each set's items on its own."""
    pairs = [(a, b) for a, b in pairs if a]
    if not pairs:
        raise ValueError("no shared items to compare")
    rng = np.random.default_rng(seed)
    boots = np.zeros(n_boot)
    diffs, acc_a, acc_b = [], [], []
    for a, b in pairs:
        d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
        diffs.append(d.mean())
        acc_a.append(float(np.mean(a)))
        acc_b.append(float(np.mean(b)))
        boots += d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    boots /= len(pairs)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return {"n_sets": len(pairs), "n": sum(len(a) for a, _ in pairs),
            "acc_a": float(np.mean(acc_a)), "acc_b": float(np.mean(acc_b)),
            "diff": float(np.mean(diffs)), "lo": float(lo), "hi": float(hi)}
