"""The one cost model's pricing of the paper's one-shot protocol (pipeline/loop/costs.py)."""

from __future__ import annotations

import pytest

from pipeline.loop import costs


def test_the_paper_protocol_is_three_million_generations():
    pp = costs.PAPER_ONESHOT
    assert pp["candidates"] * pp["dev_problems"] * pp["iterations"] == 3_000_000
    assert costs.oneshot_protocol_seconds(1.0) == 3_000_000
    assert costs.oneshot_protocol_seconds(0.5, candidates=10, dev_problems=4,
                                          iterations=1) == 20


def test_the_gpu_rate_per_generation_follows_the_stated_rate(monkeypatch):
    monkeypatch.setenv("SEI_GPU_GEN_TOKENS_PER_S", "1600")
    assert costs.gpu_s_per_generation(160) == pytest.approx(0.1)
    assert costs.gpu_s_per_generation() == pytest.approx(costs.COMPLETION_TOKENS / 1600)


def test_measured_oneshot_rates_are_positive_seconds(monkeypatch):
    """The measured rates are the ones docs/scale-out.md prices the paper's protocol with,
    and each of its days figures is what oneshot_protocol_seconds makes of its rate (the
    7-8B column scaled by parameter count, costs.gpu_rates()'s over REFERENCE_PARAMS); the
    vLLM row is gpu_s_per_generation() priced the same way, in hours."""
    from pipeline.core.config import ROOT

    for var in ("SEI_GPU_GEN_TOKENS_PER_S", "SEI_GPU_MODEL_PARAMS"):
        monkeypatch.delenv(var, raising=False)
    rates = sorted(costs.ONESHOT_S_PER_GENERATION.values())
    assert len(rates) == 4 and rates[0] > 0
    table = [[c.strip() for c in line.strip().strip("|").split("|")]
             for line in (ROOT / "docs" / "scale-out.md").read_text().splitlines()
             if line.startswith("| ") and " days |" in line]
    assert [float(row[1]) for row in table] == rates
    days = 86_400
    scale = costs.gpu_rates()["model_params"] / costs.REFERENCE_PARAMS
    iterations = costs.PAPER_ONESHOT["iterations"]
    for row, s in zip(table, rates):
        total = costs.oneshot_protocol_seconds(s)
        assert row[2:] == [f"{total / iterations / days:.1f} days", f"{total / days:.0f} days",
                           f"~{round(total * scale / days, -1):,.0f} days"], row
    vllm = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in (ROOT / "docs" / "scale-out.md").read_text().splitlines()
            if line.startswith("| vLLM")]
    total = costs.oneshot_protocol_seconds(costs.gpu_s_per_generation())
    assert vllm == [[vllm[0][0], f"{costs.gpu_s_per_generation():.3f}",
                     f"{total / iterations / 3600:.0f} hours", f"{total / 3600:.0f} hours", ""]]


def test_a_plan_prices_each_set_at_the_rate_measured_in_the_store(tmp_path):
    """Issue 24: the estimate said 20 min for a real-data run that took ~60, because every
    set was priced at the demo's 0.3 s per problem. With runs in the store, each dataset
    is priced at its own measured rate (a batch's time shared by its rows), a set never
    run at the pooled rate, and the plan says which rates it used."""
    from pipeline.loop.iterate import LoopParams
    from pipeline.loop.presets import resolve
    from pipeline.storage.store import Store

    s = Store(tmp_path / "sei.duckdb")
    for ds, secs, n in (("gsm8k", 1.5, 30), ("math", 3.0, 20), ("svamp", 9.0, 5)):
        run = f"extract-{ds}"
        s.upsert_run({"run_id": run, "kind": "extract", "model_id": "m", "backend": "local",
                      "dataset": ds, "split": "train"})
        s.record_generations(run, [{"dataset": ds, "split": "train", "pid": f"{ds}-{i}",
                                    "output": "x", "pred": "1", "correct": True,
                                    "latency_s": secs} for i in range(n)])
    rates = costs.measured_rates(s)
    # svamp's 5 rows are too few to trust; the pooled rate weighs rows
    assert set(rates) == {"gsm8k", "math", "*"}
    assert rates["gsm8k"] == (1.5, 30) and rates["math"] == (3.0, 20)
    assert rates["*"] == ((1.5 * 30 + 3.0 * 20) / 50, 50)
    p = resolve("demo", None, {"train_sets": ["gsm8k/train", "math/train"],
                               "eval_sets": ["gsm8k/test", "college_math/test"],
                               "limit_train": 10, "eval_limit": 10, "arms": ["sei"]})
    assert isinstance(p, LoopParams)
    plan = costs.plan(s, p)
    empty = costs.plan(Store(tmp_path / "empty.duckdb"), p)
    minutes = "minutes here (this CPU, 135M target)"
    # the difference between the two plans is exactly the generations' pricing
    gens = plan["estimate"]["per_iteration"]
    n_dev = gens["generations: select (one-shot: candidates x dev)"]
    measured = (10 * 1.5 + 10 * 3.0 + n_dev * (1.5 + 3.0) / 2 + 10 * 1.5 + 10 * rates["*"][0])
    reference = (20 + n_dev + 20) * costs.GEN_S_PER_PROBLEM
    # (each plan rounds its minutes to 0.1)
    assert abs(gens[minutes] - empty["estimate"]["per_iteration"][minutes]
               - (measured - reference) / 60) <= 0.1 + 1e-9
    said = " ".join(plan["estimate"]["assumptions"])
    assert "gsm8k 1.50 s (30 rows), math 3.00 s (20 rows)" in said
    assert "0.3 s per problem (the reference demo set)" in \
        " ".join(empty["estimate"]["assumptions"])
