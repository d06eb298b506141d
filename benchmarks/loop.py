"""Demo acceptance: the SEI loop on the embedded default, end to end, timed.

A fresh store: the demo set (400 train / 200 test) and SVAMP (from ../shared), then
`iterate` for N iterations with the demo defaults. Prints held-out accuracy per iteration
on the demo test split and SVAMP with the 95% paired-bootstrap interval of the change
against the base model and the exact McNemar p, the fix rate per error type, and where
the time went. Goal: the interval of the last iteration's gain on the demo test split
excludes 0. Whatever comes out is reported as it is.

Usage: python benchmarks/loop.py [--iterations 2] [--db /tmp/sei-loop/sei.duckdb]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pipeline.core.config import ROOT  # noqa: E402
from pipeline.loop.iterate import LoopParams, iterate  # noqa: E402
from pipeline.loop.views import iteration_table  # noqa: E402
from pipeline.problems.data import import_demo, import_file  # noqa: E402
from pipeline.stages.evaluate import fix_rates  # noqa: E402
from pipeline.storage.store import Store  # noqa: E402

SVAMP = ROOT.parent / "shared" / "data" / "benchmarks" / "svamp" / "test.jsonl"


class Clock:
    """Wall time per step, from the stage's own progress calls."""

    def __init__(self):
        self.t = time.perf_counter()
        self.step = "setup"
        self.spent: dict[str, float] = defaultdict(float)

    def __call__(self, done, total, step, message):
        now = time.perf_counter()
        self.spent[self.step] += now - self.t
        self.t, self.step = now, step
        print(f"\r[{done}/{total}] {step}: {message[:70]:70}", end="", flush=True)

    def close(self):
        self.spent[self.step] += time.perf_counter() - self.t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--db", default="/tmp/sei-loop/sei.duckdb")
    ap.add_argument("--keep", action="store_true", help="Resume the store instead of a fresh one.")
    ap.add_argument("--eval-limit", type=int, default=200)
    ap.add_argument("--mode", default="scratch")
    a = ap.parse_args()

    db = Path(a.db)
    if not a.keep:  # a fresh store, and no adapter or checkpoint of an earlier run to resume
        if db.exists():
            db.unlink()
        shutil.rmtree(db.parent / "adapters", ignore_errors=True)
    db.parent.mkdir(parents=True, exist_ok=True)
    os.environ["SEI_DB"] = str(db)
    from pipeline.core import config

    os.environ.setdefault("SEI_MODELS_DIR", str(config.models_dir()))  # the model stays put
    os.environ.setdefault("SEI_DATA_DIR", str(db.parent))  # adapters beside the store
    store = Store(db)
    t0 = time.perf_counter()
    import_demo(store, 400, 200, seed=0)
    import_file(store, SVAMP, "svamp", "svamp", "test")
    clock = Clock()
    from pipeline.storage.store_process import StoreProcess

    # through a store process, as `sei iterate` and the job runner call it
    out = iterate(StoreProcess(db), LoopParams(iterations=a.iterations, mode=a.mode,
                                    eval_sets=["demo/test", "svamp/test"],
                                    eval_limit=a.eval_limit), clock)
    clock.close()
    wall = time.perf_counter() - t0
    print("\n")
    print(f"{'iteration':>9} {'set':12} {'n':>4} {'accuracy':>9} {'change vs base':>15} "
          f"{'95% CI':>18} {'McNemar p':>9} {'fixed/broken':>12}")
    for it in iteration_table(store):
        for s, e in sorted(it["eval"].items()):
            ci = f"[{e['lo']:+.1%}, {e['hi']:+.1%}]" if "lo" in e else ""
            ch = f"{e['diff']:+.1%}" if "diff" in e else ""
            p = f"{e['mcnemar_p']:.4f}" if "mcnemar_p" in e else ""
            fb = f"{e['fixed']}/{e['broken']}" if "fixed" in e else ""
            print(f"{it['iteration']:>9} {s:12} {e['n']:>4} {e['accuracy']:>9.1%} {ch:>15} "
                  f"{ci:>18} {p:>9} {fb:>12}")
        if it["iteration"]:
            print(f"{'':>9} kept candidates {it['n_kept']}, selected {it['n_selected']}, "
                  f"adapter {it['adapter']}")
            for arm, sets_ in sorted(it.get("eval_by_arm", {}).items()):
                if arm != "sei":
                    print(f"{'':>9} {arm} arm: " + ", ".join(
                        f"{s} {e['accuracy']:.1%}" for s, e in sorted(sets_.items())))
    print("\nSEI vs random (same number of candidates from the same kept pool, trained and "
          "evaluated the same way), paired on the same problems:")
    for it in iteration_table(store):
        for arm, cmp_ in it.get("sei_vs", {}).items():
            for s, d in sorted(cmp_["sets"].items()):
                print(f"  iteration {it['iteration']} {s:12} {arm} {d['acc_a']:.1%} -> sei "
                      f"{d['acc_b']:.1%}: {d['diff']:+.1%} [{d['lo']:+.1%}, {d['hi']:+.1%}] "
                      f"McNemar p={d['mcnemar_p']:.4f} (fixed {d['fixed']}, broken "
                      f"{d['broken']})")
            for g, avg in cmp_["averages"].items():
                m = avg["macro"]
                print(f"  iteration {it['iteration']} macro {g:13} {m['diff']:+.1%} "
                      f"[{m['lo']:+.1%}, {m['hi']:+.1%}]")
    print("\nfix rate per error type (base model's bad train cases):")
    for r in fix_rates(store):
        print(f"  it {r['iteration']} type {r['type_id']:>3} {r['fixed']:>3}/{r['n']:<3} fixed  "
              f"new errors {r['new_errors']}  {r['title'][:60]}")
    print("\nwhere the time went (wall, this machine):")
    for k, v in sorted(clock.spent.items(), key=lambda kv: -kv[1]):
        print(f"  {k:24} {v / 60:6.1f} min")
    print(f"  {'total':24} {wall / 60:6.1f} min for {a.iterations} iteration(s) "
          f"(goal: 2 iterations within 45 min)")
    print(out)


if __name__ == "__main__":
    main()
