"""The loop over real data with the real model: no test item reaches analysis, synthesis
or selection; several train sets are extracted, analysed and clustered together; the arms
(SEI and random) are trained and evaluated side by side with paired intervals and
averages across the evaluation sets."""

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.store import Store

pytestmark = pytest.mark.slow


def _env(monkeypatch, d):
    from pipeline import config

    monkeypatch.setenv("SEI_MODELS_DIR", str(config.models_dir()))  # the model stays put
    monkeypatch.setenv("SEI_DATA_DIR", str(d))  # adapters beside this store


def test_no_test_item_reaches_analysis_synthesis_or_selection(prepared_db, tmp_path,
                                                              monkeypatch):
    from pipeline import taxonomy
    from pipeline.cluster import ClusterParams, cluster
    from pipeline.evaluate import EvalParams, evaluate
    from pipeline.keyphrases import analyze_bad_cases
    from pipeline.select import dev_set
    from pipeline.synthesize import SynthParams, synthesize

    db = tmp_path / "sei.duckdb"
    shutil.copy(prepared_db, db)
    monkeypatch.setenv("SEI_DB", str(db))
    _env(monkeypatch, tmp_path)
    s = Store(db)
    ev = evaluate(s, EvalParams(iteration=0, sets=["demo/test"], limit=24,
                                max_new_tokens=96, train_check=False))
    eval_run = ev["runs"]["demo/test"]
    test_cases = s.bad_cases(eval_run)
    assert test_cases, "the evaluation run must have bad cases for this test to mean anything"
    test_pids = {("demo", "test", c["pid"]) for c in test_cases}

    # an evaluation run is refused by name, through the CLI
    r = CliRunner().invoke(cli, ["--db", str(db), "analyze", "--offline", "--run", eval_run])
    assert r.exit_code != 0 and eval_run in r.output and "evaluation run" in r.output
    assert "Traceback" not in r.output

    aid = analyze_bad_cases(s, instructor="offline")          # default: train runs only
    cluster(s, ClusterParams(min_cluster_size=3), analysis_id=aid)
    kp_cases = {k["case_id"] for k in s.rows("SELECT case_id FROM keyphrases")}
    analysed = {(c["dataset"], c["split"], c["pid"]) for c in s.cases_by_id(sorted(kp_cases))}
    assert analysed and not analysed & test_pids
    it = taxonomy.freeze(s, 1)
    type_cases = {c for t in it["taxonomy"]["types"] for c in t["case_ids"]}
    in_types = {(c["dataset"], c["split"]) for c in s.cases_by_id(sorted(type_cases))}
    assert in_types == {("demo", "train")}
    synthesize(s, SynthParams(iteration=1, budget=12, per_call=6, synthesizer="offline"))
    sources = {x for c in s.candidates(iteration=1) for x in c["source_cases"]}
    assert sources and {(c["dataset"], c["split"]) for c in s.cases_by_id(sorted(sources))} \
        == {("demo", "train")}
    dev = dev_set(s, 1, 4, 4, seed=0)
    assert len(dev) == 8 and {d["split"] for d in dev} == {"train"}
    assert not {("demo", d["split"], d["pid"]) for d in dev} & test_pids


def test_loop_over_two_train_sets_with_arms(prepared_db, bench, tmp_path, monkeypatch):
    """`sei iterate` on the demo train set and GSM8K train (from the shared folder), arms
    sei and random, two evaluation sets (one in-domain, one out-of-domain)."""
    db = tmp_path / "sei.duckdb"
    shutil.copy(prepared_db, db)
    monkeypatch.setenv("SEI_DB", str(db))
    monkeypatch.setenv("SEI_BENCHMARKS_DIR", str(bench))
    _env(monkeypatch, tmp_path)
    cfg = tmp_path / "exp.toml"
    cfg.write_text('train_sets = ["demo:train", "gsm8k:train"]\n'
                   'eval_sets = ["demo:test", "svamp:test"]\n'
                   "limit_train = 24\neval_limit = 12\nmax_new_tokens = 96\n"
                   '[cluster]\nmin_cluster_size = 3\n'
                   '[synthesize]\nbudget = 24\nper_call = 6\nsynthesizer = "offline"\n'
                   '[select]\nn_good = 2\nn_bad = 2\nlimit = 6\ntop = 3\nmax_new_tokens = 96\n'
                   '[train]\nepochs = 1\nbatch_size = 2\nmax_length = 256\n')
    r = CliRunner().invoke(cli, ["--db", str(db), "iterate", "--config", str(cfg)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["--db", str(db), "iterations", "--json"])
    assert r.exit_code == 0, r.output
    table = {it["iteration"]: it for it in json.loads(r.output)}
    it1 = table[1]
    # both train sets' extraction runs, by the base model
    assert sorted((e["dataset"], e["split"]) for e in it1["extractions"]) == \
        [("demo", "train"), ("gsm8k", "train")]
    assert all(e["adapter"] is None and e["n_done"] == 24 for e in it1["extractions"])
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
    # each arm evaluated on both sets, against the base, and SEI against random
    for arm in ("sei", "random"):
        cmp_ = it1["arms"][arm]
        assert sorted(cmp_["sets"]) == ["demo/test", "svamp/test"]
        avg = cmp_["averages"]
        assert avg["all"]["micro"]["n"] == 24
        assert avg["in_domain"]["sets"] == ["demo/test"]
        assert avg["out_of_domain"]["sets"] == ["svamp/test"]
        for g in avg.values():
            for how in ("micro", "macro"):
                assert g[how]["lo"] <= g[how]["diff"] <= g[how]["hi"]
    vs = it1["sei_vs"]["random"]["sets"]["demo/test"]
    assert vs["n"] == 12 and vs["lo"] <= vs["diff"] <= vs["hi"]
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

    from pipeline import config, jobs

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
