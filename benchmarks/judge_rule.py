"""Is the loop's gain an artefact of the evaluation rule? The same models judged the
other way.

Evaluation stops each answer at its first complete final answer and judges that (the
same rule for every model). A base model that guesses "The answer is 10." and reasons
afterwards is then judged on its guess. Here the base model and an iteration's adapter
answer the same test problems at full length (256 new tokens, no early stop) and are
judged on their *last* final answer, as `sei extract` does; the paired change gets the
same bootstrap interval and McNemar p.

Usage: python benchmarks/judge_rule.py [--db /tmp/sei-loop/sei.duckdb] [--iteration 2]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.core.stats import pair_runs, paired_diff  # noqa: E402
from pipeline.loop import resolve  # noqa: E402
from pipeline.models.target import GenParams  # noqa: E402
from pipeline.stages.extract import extract  # noqa: E402
from pipeline.storage.store import Store  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="/tmp/sei-loop/sei.duckdb")
    ap.add_argument("--iteration", type=int, default=2)
    ap.add_argument("--sets", default="demo/test,svamp/test")
    ap.add_argument("--limit", type=int, default=200)
    a = ap.parse_args()
    os.environ["SEI_DB"] = a.db
    s = Store(a.db)
    model, _ = resolve.model_for(s, 1)
    adapter = resolve.adapter_of(s, a.iteration)
    gp = GenParams(max_new_tokens=256, batch_size=32)
    print(f"full length (256 tokens), judged on the last final answer; adapter {adapter}")
    print(f"{'set':12} {'n':>4} {'base':>7} {'it ' + str(a.iteration):>7} {'change':>8} "
          f"{'95% CI':>18} {'McNemar p':>9} {'fixed/broken':>12}")
    for st in a.sets.split(","):
        ds, sp = st.split("/")
        base = extract(s, ds, sp, limit=a.limit, model=model, params=gp)
        tuned = extract(s, ds, sp, limit=a.limit, model=model, adapter=adapter, params=gp)
        x, y = pair_runs(s.run_items(base), s.run_items(tuned))
        d = paired_diff(x, y)
        print(f"{st:12} {d.n:>4} {d.acc_a:>7.1%} {d.acc_b:>7.1%} "
              f"{d.diff:>+8.1%} {f'[{d.lo:+.1%}, {d.hi:+.1%}]':>18} "
              f"{d.mcnemar_p:>9.4f} {f'{d.fixed}/{d.broken}':>12}")


if __name__ == "__main__":
    main()
