"""An estimate the app shows before launch, checked against the run it priced.

    python benchmarks/estimates.py [--train 32] [--test 48]

A fresh store with the demo set; an extraction of the first `--train` train problems (the
store's first measured rate); then the evaluation of the base model on the first `--test`
test problems, priced before it starts exactly as the Iterations page prices it
(views.eval_estimate: problems x the rate measured in this store's runs) and as an empty
store would price it (the reference machine's rate), then run and timed. Prints both
estimates, the actual time and their ratios. Stated factor: the measured-rate estimate is
within 2x of the actual run on an idle machine (it assumes one; a shared machine is slower).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.loop import views  # noqa: E402
from pipeline.loop.costs import MIN_MEASURED  # noqa: E402
from pipeline.problems.data import import_demo  # noqa: E402
from pipeline.stages.evaluate import EvalParams, evaluate  # noqa: E402
from pipeline.stages.extract import extract  # noqa: E402
from pipeline.storage.store import Store  # noqa: E402

FACTOR = 2.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=32,
                    help=f"at least {MIN_MEASURED}: a rate rests on that many rows")
    ap.add_argument("--test", type=int, default=48)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        s = Store(Path(d) / "sei.duckdb")
        import_demo(s, max(a.train, 64), max(a.test, 64), seed=0)
        p = EvalParams(iteration=0, sets=["demo/test"], limit=a.test)
        reference = views.eval_estimate(s, p)  # no run yet: the reference machine's rate
        t0 = time.perf_counter()
        extract(s, "demo", "train", limit=a.train)
        print(f"extraction of {a.train} train problems: {time.perf_counter() - t0:.1f} s "
              "(the store's measured rate)")
        est = views.eval_estimate(s, p)
        assert est["measured"] and not reference["measured"]
        t0 = time.perf_counter()
        evaluate(s, p)
        actual = time.perf_counter() - t0
        print(f"evaluation of the base model on {a.test} demo/test problems, {os.cpu_count()} "
              "cores:")
        for name, e in (("measured-rate estimate", est), ("reference-rate estimate", reference)):
            print(f"  {name:24} {e['seconds']:6.1f} s   actual/estimate "
                  f"{actual / e['seconds']:.2f}")
        print(f"  actual                   {actual:6.1f} s")
        r = actual / est["seconds"]
        print(f"stated factor {FACTOR:g}x: {'within' if 1 / FACTOR <= r <= FACTOR else 'OUTSIDE'}")


if __name__ == "__main__":
    main()
