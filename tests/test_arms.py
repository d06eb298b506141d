"""The loop over real data with the real model: no test item reaches analysis, synthesis
or selection; several train sets are extracted, analysed and clustered together; the arms
(SEI and random) are trained and evaluated side by side with paired intervals and
averages across the evaluation sets."""

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.shells.cli import cli
from pipeline.storage.store import Store

pytestmark = pytest.mark.slow
N_TRAIN, N_EVAL = 16, 8  # the looped store's limit_train and eval_limit (LOOP_CONFIG)


def _env(monkeypatch, d):
    from pipeline.core import config

    monkeypatch.setenv("SEI_MODELS_DIR", str(config.models_dir()))  # the model stays put
    monkeypatch.setenv("SEI_DATA_DIR", str(d))  # adapters beside this store


def _copy(looped_db, tmp_path, monkeypatch) -> Path:
    db = tmp_path / "sei.duckdb"
    shutil.copy(looped_db, db)
    monkeypatch.setenv("SEI_DB", str(db))
    _env(monkeypatch, tmp_path)
    return db


def test_no_test_item_reaches_analysis_synthesis_or_selection(looped_db, tmp_path,
                                                              monkeypatch):
    """In the looped store (the base model and both arms evaluated on two test sets, whose
    wrong answers are stored like any other), no test item is analysed, typed, used as a
    synthesis source or put in the dev set; analysing an evaluation run is refused."""
    from pipeline.stages.evaluate import eval_runs

    db = _copy(looped_db, tmp_path, monkeypatch)
    s = Store(db)
    runs = eval_runs(s)
    assert {(it, st) for it, _, st in runs} == {(0, "demo/test"), (0, "svamp/test"),
                                                (1, "demo/test"), (1, "svamp/test")}
    test_pids = {(c["dataset"], c["split"], c["pid"]) for rid in runs.values()
                 for c in s.bad_cases(rid)}
    assert {x[:2] for x in test_pids} == {("demo", "test"), ("svamp", "test")}, \
        "the evaluation runs must have bad cases on both sets for this test to mean anything"

    # an evaluation run is refused by name, through the CLI
    eval_run = runs[(0, "sei", "demo/test")]
    r = CliRunner().invoke(cli, ["--db", str(db), "analyze", "--offline", "--run", eval_run])
    assert r.exit_code != 0 and eval_run in r.output and "evaluation run" in r.output
    assert "Traceback" not in r.output

    kp_cases = {k["case_id"] for k in s.rows("SELECT case_id FROM keyphrases")}
    analysed = {(c["dataset"], c["split"], c["pid"]) for c in s.cases_by_id(sorted(kp_cases))}
    assert {x[:2] for x in analysed} == {("demo", "train"), ("gsm8k", "train")}
    type_cases = {c for t in s.iteration(1)["taxonomy"]["types"] for c in t["case_ids"]}
    in_types = {(c["dataset"], c["split"]) for c in s.cases_by_id(sorted(type_cases))}
    assert in_types == {("demo", "train"), ("gsm8k", "train")}
    sources = {x for c in s.candidates(iteration=1) for x in c["source_cases"]}
    assert sources
    assert {c["split"] for c in s.cases_by_id(sorted(sources))} == {"train"}
    dev = s.dev_set(1)  # up to n_good 2 + n_bad 2: as many right answers as the base gave
    assert 0 < len(dev) <= 4 and {d["split"] for d in dev} == {"train"}
    assert not {(d["dataset"], d["split"], d["pid"]) for d in dev} & test_pids


def _correct(s: Store, run_id: str) -> dict:
    return {(r["dataset"], r["split"], r["pid"]): bool(r["correct"]) for r in s.run_items(run_id)}


def test_loop_over_two_train_sets_with_arms(looped_db, tmp_path, monkeypatch):
    """`sei iterate --config` (the looped store's own command) on the demo train set and
    GSM8K train (from the shared folder), arms sei and random, two evaluation sets (one
    in-domain, one out-of-domain): what `sei iterations --json` reports, checked against
    the stored items it comes from."""
    from pipeline.core.stats import paired_diff
    from pipeline.stages.evaluate import eval_runs

    db = _copy(looped_db, tmp_path, monkeypatch)
    r = CliRunner().invoke(cli, ["--db", str(db), "iterations", "--json"])
    assert r.exit_code == 0, r.output
    table = {it["iteration"]: it for it in json.loads(r.output)}
    it1 = table[1]
    # both train sets' extraction runs, by the base model
    assert sorted((e["dataset"], e["split"]) for e in it1["extractions"]) == \
        [("demo", "train"), ("gsm8k", "train")]
    assert [(e["adapter"], e["n_done"]) for e in it1["extractions"]] == [(None, N_TRAIN)] * 2
    assert it1["config"]["train_sets"] == ["demo/train", "gsm8k/train"]
    assert it1["preset"] == "demo" and it1["deviations"]["synthesize.budget"] == [64, 24]
    s = Store(db)
    # the analysis covered both datasets' bad cases together
    types = s.iteration(1)["taxonomy"]["types"]
    ds = {c["dataset"] for c in s.cases_by_id(sorted({c for t in types
                                                      for c in t["case_ids"]}))}
    assert ds == {"demo", "gsm8k"}
    # the dev set is stratified across the two train sets
    dev = s.dev_set(1)
    assert {d["dataset"] for d in dev} == {"demo", "gsm8k"}
    # both arms trained on selections of the same size from the same pool
    trains = {(t["params"] or {}).get("method"): t for t in s.train_runs(1)}
    assert trains["oneshot"]["status"] == trains["random"]["status"] == "finished"
    sels = {x["method"]: x for x in s.selections(1)}
    assert sels["random"]["n_selected"] == sels["oneshot"]["n_selected"] == 3
    assert sels["random"]["manifest"]["n_candidates"] == \
        sels["oneshot"]["manifest"]["n_candidates"]
    assert trains["oneshot"]["adapter_dir"] != trains["random"]["adapter_dir"]
    # each arm evaluated on both sets, against the base; every figure recomputed from the
    # stored items of the runs it compares
    runs = eval_runs(s)
    base = {st: _correct(s, rid) for (it, _, st), rid in runs.items() if it == 0}
    arm_items = {arm: {st: _correct(s, rid) for (it, a, st), rid in runs.items()
                       if it == 1 and a == arm} for arm in ("sei", "random")}
    assert sorted(base) == ["demo/test", "svamp/test"]
    for arm in ("sei", "random"):
        cmp_ = it1["arms"][arm]
        assert sorted(cmp_["sets"]) == sorted(arm_items[arm]) == ["demo/test", "svamp/test"]
        per_set = {}
        for st, got in cmp_["sets"].items():
            a, b = base[st], arm_items[arm][st]
            assert sorted(a) == sorted(b) and len(a) == got["n"] == N_EVAL
            per_set[st] = (sum(b.values()) - sum(a.values())) / N_EVAL
            assert got["diff"] == pytest.approx(per_set[st])
            assert got["fixed"] == sum(b[k] and not a[k] for k in a)
            assert got["broken"] == sum(a[k] and not b[k] for k in a)
        avg = cmp_["averages"]
        pooled_a = [base[st][k] for st in sorted(base) for k in sorted(base[st])]
        pooled_b = [arm_items[arm][st][k] for st in sorted(base) for k in sorted(base[st])]
        ref = paired_diff(pooled_a, pooled_b, seed=0)
        assert avg["all"]["micro"]["n"] == 2 * N_EVAL
        assert avg["all"]["micro"]["diff"] == pytest.approx(
            (sum(pooled_b) - sum(pooled_a)) / (2 * N_EVAL))
        assert (avg["all"]["micro"]["lo"], avg["all"]["micro"]["hi"]) == \
            pytest.approx((ref.lo, ref.hi))
        assert avg["all"]["macro"]["diff"] == pytest.approx(
            (per_set["demo/test"] + per_set["svamp/test"]) / 2)
        assert avg["in_domain"]["sets"] == ["demo/test"]
        assert avg["in_domain"]["micro"]["diff"] == pytest.approx(per_set["demo/test"])
        assert avg["out_of_domain"]["sets"] == ["svamp/test"]
        assert avg["out_of_domain"]["micro"]["diff"] == pytest.approx(per_set["svamp/test"])
    # SEI against random, item by item on the same problems
    vs = it1["sei_vs"]["random"]["sets"]["demo/test"]
    a, b = arm_items["random"]["demo/test"], arm_items["sei"]["demo/test"]
    assert vs["n"] == N_EVAL
    assert vs["diff"] == pytest.approx((sum(b.values()) - sum(a.values())) / N_EVAL)
    ref = paired_diff([a[k] for k in sorted(a)], [b[k] for k in sorted(a)], seed=0)
    assert (vs["lo"], vs["hi"]) == pytest.approx((ref.lo, ref.hi))
    # the random arm's evaluation runs used the random arm's adapter, not the SEI one's
    rand_runs = [lk["ref"] for lk in s.iteration_links(1) if lk["role"].startswith("eval@random")]
    assert len(rand_runs) == 2
    assert {s.run(x)["adapter"] for x in rand_runs} == {trains["random"]["adapter_dir"]}
    # the last model's rerun of both train sets (its fix rates), with the SEI adapter
    nxt = [s.run(lk["ref"]) for lk in s.iteration_links(2) if lk["role"] == "extract"]
    assert sorted(r["dataset"] for r in nxt) == ["demo", "gsm8k"]
    assert {r["adapter"] for r in nxt} == {trains["oneshot"]["adapter_dir"]}
    assert os.path.isdir(trains["random"]["adapter_dir"])


def test_random_baseline_does_not_wait_for_the_heavy_slot(looped_db, tmp_path, monkeypatch):
    """A random selection needs no model: as a job it runs while a heavy job holds the
    slot (held here by a real flock), and takes exactly as many of the same candidates
    as the one-shot selection it is paired with."""
    import fcntl

    from pipeline.core import config
    from pipeline.loop import jobs

    db = tmp_path / "sei.duckdb"
    shutil.copy(looped_db, db)
    monkeypatch.setenv("SEI_DB", str(db))
    _env(monkeypatch, tmp_path)
    s = Store(db)
    one = [x for x in s.selections(1) if x["method"] == "oneshot"][-1]
    config.jobs_dir(db).mkdir(parents=True, exist_ok=True)
    lock = open(config.jobs_dir(db) / "heavy.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        jid = jobs.submit(s, "select", {"iteration": 1, "method": "random", "seed": 5,
                                        "limit": 6, "size_of": one["selection_id"]})
        job = jobs.wait(s, jid, timeout=300)
    finally:
        lock.close()
    assert job["status"] == "succeeded", job
    sel = s.selection(job["result"]["selection_id"] if isinstance(job["result"], dict)
                      else json.loads(job["result"])["selection_id"])
    assert len(s.cand_scores(sel["selection_id"], selected_only=True)) == one["n_selected"]
    assert sel["manifest"]["n_candidates"] == one["manifest"]["n_candidates"]
