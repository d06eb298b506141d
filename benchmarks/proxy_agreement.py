"""How well the likelihood proxy ranks candidates like the one-shot score, on >= 100.

Runs on a store where `sei iterate` (e.g. benchmarks/loop.py) already scored every kept
candidate one-shot: for each iteration it runs the proxy selection on the same candidates
and the same dev set (`select --method proxy`, which stores its Spearman against the
one-shot selection), then prints the Spearman per iteration, pooled over all iterations
(on ranks within each iteration, since each has its own dev set),
the overlap of the two top fractions, and the proxy's seconds per candidate (set it
against the select:oneshot minutes that benchmarks/loop.py printed for the same candidates).

Usage: python benchmarks/proxy_agreement.py [--db /tmp/sei-loop/sei.duckdb]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from scipy.stats import rankdata, spearmanr  # noqa: E402

from pipeline.stages.select import SelectParams, n_keep, rank, select  # noqa: E402
from pipeline.storage.store import Store  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="/tmp/sei-loop/sei.duckdb")
    ap.add_argument("--top", type=float, default=0.5)
    a = ap.parse_args()
    os.environ["SEI_DB"] = a.db
    s = Store(a.db)
    pooled_one, pooled_prx, rows = [], [], []
    for it in sorted({x["iteration"] for x in s.selections() if x["method"] == "oneshot"}):
        one = [x for x in s.selections(it) if x["method"] == "oneshot"][-1]
        prm = one["params"] if isinstance(one.get("params"), dict) else {}
        p = SelectParams.from_dict({**prm, "iteration": it, "method": "proxy",
                                    "top": a.top})
        t0 = time.perf_counter()
        out = select(s, p)
        secs = time.perf_counter() - t0
        a1 = {x["cand_id"]: x["score"] for x in s.cand_scores(one["selection_id"])}
        a2 = {x["cand_id"]: x["score"] for x in s.cand_scores(out["selection_id"])}
        common = sorted(set(a1) & set(a2))
        k = n_keep(a.top, len(common))
        top1 = set(rank([{"cand_id": c, "score": a1[c]} for c in common], k, 0))
        top2 = set(rank([{"cand_id": c, "score": a2[c]} for c in common], k, 0))
        rho = spearmanr([a1[c] for c in common], [a2[c] for c in common]).statistic
        rows.append((it, len(common), rho, len(top1 & top2), k, secs / max(1, len(common))))
        # pooled on ranks within each iteration: the two dev sets put scores on other scales
        pooled_one += list(rankdata([a1[c] for c in common]) / len(common))
        pooled_prx += list(rankdata([a2[c] for c in common]) / len(common))
    print(f"{'iteration':>9} {'n':>4} {'Spearman':>9} {'top overlap':>12} {'proxy s/cand':>13}")
    for it, n, rho, ov, k, spc in rows:
        print(f"{it:>9} {n:>4} {rho:>9.3f} {ov:>6}/{k:<5} {spc:>13.2f}")
    rho = spearmanr(pooled_one, pooled_prx).statistic
    print(f"{'pooled':>9} {len(pooled_one):>4} {rho:>9.3f}   (ranks within each iteration)")
    print("(a proxy run that already finished is read back, not re-scored: its s/cand is ~0)")


if __name__ == "__main__":
    main()
