"""Server time from a curation edit to the redrawn map, on a 10,000-point map.

    python benchmarks/map_edit.py [--n 10000]

Builds a store with exactly n keyphrases (corpus.py), clusters them for real
(MiniLM, UMAP, HDBSCAN), then times what the Error map page does on each edit: append
the edit, derive the current taxonomy from the log, build the figure's spec, and make the
map component's arguments (dashboard/map_view.py: the skeleton and the arrays not sent
before in this session), what goes to the browser. Reported per step and in total, median
of repeated edits (rename, exclude, merge, undo), with the bytes sent per edit; beside it,
on the same taxonomies, the way before map_view: a validated go.Figure serialised whole
as st.plotly_chart does, at every edit."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).parent
sys.path[:0] = [str(HERE), str(HERE.parent / "dashboard")]

import corpus  # noqa: E402
import map_view  # noqa: E402
import plotly.io  # noqa: E402
import plotly.tools  # noqa: E402
from common import build_map_figure, map_spec  # noqa: E402

from pipeline.analysis import taxonomy  # noqa: E402
from pipeline.stages.cluster import ClusterParams, cluster  # noqa: E402
from pipeline.storage.store import Store  # noqa: E402


def build_store(path: Path, n: int) -> Store:
    """A store with exactly n keyphrases: corpus cases (1-3 keyphrases each, ~1.4 on
    average) taken in order until n, the last one's list cut to fit."""
    s = Store(path)
    cases, total = [], 0
    for c in corpus.build(int(n / 1.2) + 10):
        if total == n:
            break
        cases.append(dict(c, keyphrases=c["keyphrases"][:n - total]))
        total += len(cases[-1]["keyphrases"])
    if total < n:
        raise SystemExit(f"the corpus made {total} keyphrases, fewer than {n}")
    s.insert_problems([dict(c, dataset="demo", split="train", source_file="bench")
                       for c in cases])
    run = {"run_id": "bench", "kind": "extract", "model_id": "corpus", "dataset": "demo",
           "split": "train", "n_items": len(cases)}
    s.upsert_run(run)
    s.record_generations("bench", [{"dataset": "demo", "split": "train", "pid": c["pid"],
                                    "output": c["output"], "pred": c["pred"], "correct": False}
                                   for c in cases])
    s.upsert_analysis("an-bench", "offline-analyzer-v1", None, {})
    ids = {r["pid"]: r["case_id"] for r in s.rows("SELECT pid, case_id FROM bad_cases")}
    s.record_keyphrases_bulk("an-bench", "offline-analyzer-v1",
                             [(ids[c["pid"]], c["keyphrases"]) for c in cases])
    return s


def to_streamlit_json(fig) -> str:
    """What st.plotly_chart did with the figure at every edit (the page before map_view)."""
    d = plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True)
    return plotly.io.to_json(d, validate=False)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        s = build_store(Path(d) / "map.duckdb", a.n)
        t0 = time.perf_counter()
        cluster(s, ClusterParams(min_cluster_size=15), analysis_id="an-bench")
        print(f"{s.count('keyphrases')} points clustered in {time.perf_counter() - t0:.0f}s")
        tax = taxonomy.current(s)
        ts = [t.type_id for t in tax.visible_types()]
        steps = {"edit": [], "taxonomy": [], "figure": [], "to_json": [], "total": []}
        sent: set[str] = set(map_view.args_of(map_spec(tax), set())["blobs"])  # page drawn
        sizes, before, old_sizes = [], [], []
        # As the page does: an edit is checked against the taxonomy last drawn.
        edits = [lambda i: taxonomy.rename(s, ts[i % len(ts)], f"renamed {i}", tax=tax),
                 lambda i: taxonomy.exclude(s, type_id=ts[-1 - i % len(ts)], tax=tax),
                 lambda i: taxonomy.merge(s, ts[:2], tax=tax),
                 lambda i: taxonomy.undo(s)]
        for i in range(a.repeats):
            for e in edits:
                # each lambda is called at once by timed(), so late binding is harmless
                _, te = timed(lambda: e(i))  # noqa: B023
                tax, tt = timed(lambda: taxonomy.current(s))
                spec, tf = timed(lambda: map_spec(tax))  # noqa: B023
                args, tj = timed(lambda: map_view.args_of(spec, sent))  # noqa: B023
                sizes.append(len(json.dumps(args)))
                old, to = timed(lambda: to_streamlit_json(build_map_figure(tax)))  # noqa: B023
                before.append((tt + to + te) * 1000)
                old_sizes.append(len(old))
                for k, v in zip(steps, (te, tt, tf, tj, te + tt + tf + tj)):
                    steps[k].append(v * 1000)
        print(f"{len(tax.points)} keyphrases on the map; median over {len(steps['total'])} edits, "
              f"{os.cpu_count()} cores:")
        for k, v in steps.items():
            print(f"  {k:9} {statistics.median(v):7.1f} ms   (max {max(v):.1f})")
        print(f"  sent     {statistics.median(sizes) / 1000:7.1f} kB   (max "
              f"{max(sizes) / 1000:.1f}) per edit")
        med, was = statistics.median(steps["total"]), statistics.median(before)
        print(f"before (go.Figure serialised whole): {was:.0f} ms and "
              f"{statistics.median(old_sizes) / 1000:.0f} kB per edit; now {med:.0f} ms and "
              f"{statistics.median(sizes) / 1000:.1f} kB ({was / med:.1f}x the time, "
              f"{statistics.median(old_sizes) / statistics.median(sizes):.0f}x the bytes)")
        print(f"edit -> redrawn figure: {med:.0f} ms; goal <= 300 ms: "
              f"{'met' if med <= 300 else 'NOT met'} ({300 / med:.1f}x headroom)")


if __name__ == "__main__":
    main()
