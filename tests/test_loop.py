"""The SEI loop on real parts: the real model, real DuckDB files, real job processes,
a real llama.cpp server as instructor. Sizes are tiny so that the suite stays in budget;
the demo-scale figures live in benchmarks/loop.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import wait_until as _wait

from pipeline.core.config import ROOT
from pipeline.core.progress import no_progress
from pipeline.loop import jobs
from pipeline.loop import registry as stages
from pipeline.problems.answers import cut_at_final_answer, judge
from pipeline.stages.select import SelectParams, oneshot_score, select
from pipeline.stages.synthesize import SynthParams, summary, synthesize
from pipeline.storage.store import Store

pytestmark = pytest.mark.slow



def test_offline_synthesis_covers_every_type_and_filters(clustered):
    from pipeline.analysis import taxonomy

    out = synthesize(clustered, SynthParams(budget=60, per_call=10, synthesizer="offline"))
    it = clustered.iteration(1)
    types = {t["type_id"] for t in taxonomy.types_of(it)}
    counts = {r["type_id"]: r for r in summary(clustered, out["batch_id"])}
    assert set(counts) == types  # every visible, non-excluded type got proposals
    assert sum(r["generated"] for r in counts.values()) == 60
    cands = clustered.candidates(batch_id=out["batch_id"])
    kept = [c for c in cands if c["status"] == "kept"]
    assert kept, "offline synthesis kept nothing"
    for c in kept:  # provenance and verification on every kept candidate
        assert c["synthesizer"] == "offline" and c["source_cases"] and c["type_title"]
        assert c["verification"]["agrees"] is True and c["verification"]["chain"] == "ok"
        src = clustered.cases_by_id(c["source_cases"])[0]
        assert c["question"] != src["question"]
        assert json.loads(src["meta"])["template"] == c["meta"]["template"]
    dropped = [c for c in cands if c["status"] != "kept"]
    near = [c for c in cands if c["status"] == "near_duplicate"]
    assert near, "offline redraws of these templates always give some near-duplicates"
    assert [c["cand_id"] for c in dropped if not c["reason"]] == []
    assert [c["cand_id"] for c in near
            if not (c["nearest_score"] >= 0.7 and c["nearest"])] == []
    # kept candidates are novel against each other and the train problems (brute force)
    from rouge_score import rouge_scorer

    sc = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    train = [r["question"] for r in clustered.problem_texts(not_split="test")]
    for i, c in enumerate(kept):
        for other in train + [k["question"] for k in kept[:i]]:
            assert sc.score(other, c["question"])["rougeL"].fmeasure < 0.7

    # contamination: the kept questions become a test split; the same proposals drawn
    # again for iteration 2 are caught as contaminated, not kept
    rows = [{"dataset": "leak", "split": "test", "pid": f"leak-{c['cand_id']}",
             "question": c["question"], "answer": c["answer"]} for c in kept]
    clustered.insert_problems(rows)
    out2 = synthesize(clustered, SynthParams(iteration=2, budget=60, per_call=10,
                                             synthesizer="offline"))
    again = {c["question"]: c for c in clustered.candidates(batch_id=out2["batch_id"])}
    for c in kept:
        assert again[c["question"]]["status"] == "contaminated"
        assert again[c["question"]]["contamination"]["test_set"] == "leak/test"


def test_synthesis_killed_and_rerun_leaves_no_duplicates(clustered):
    env = dict(os.environ, SEI_DB=str(clustered.path))
    cmd = [sys.executable, "-m", "pipeline.shells.cli", "synthesize", "--budget", "600",
           "--per-call", "5", "--synthesizer", "offline", "--yes"]
    p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    _wait(lambda: p.poll() is not None or Store(clustered.path).count("candidates") > 0,
          what="first candidates")
    p.send_signal(signal.SIGKILL)
    p.wait()
    n_killed = clustered.count("candidates")
    assert 0 < n_killed < 600, "the kill did not land mid-run"
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    cands = clustered.candidates()
    assert len(cands) == 600
    assert len({c["slot"] for c in cands}) == 600
    kept = [c["question"] for c in cands if c["status"] == "kept"]
    assert len(kept) == len(set(kept))


# A synthesis reply as an instructor writes it: one problem whose stated answer is what
# its solution concludes, one whose stated answer disagrees with its own solution.
GOOD_PROBLEM = {"question": "A lighthouse keeper stacks 17 crates of lamp oil on each of 6 "
                            "shelves, then ships 29 crates to the island. How many crates "
                            "stay in the lighthouse?",
                "solution": "6 shelves hold 6 * 17 = 102 crates. After shipping 29, "
                            "102 - 29 = 73 crates stay.\nThe answer is 73.",
                "answer": "73"}
WRONG_PROBLEM = {"question": "An orchard sells pears in bags of 9. Mira buys 14 bags and gives "
                             "away 35 pears to neighbours. How many pears does Mira keep?",
                 "solution": "14 * 9 = 126 pears. 126 - 35 = 91.\nThe answer is 91.",
                 "answer": "95"}


def test_instructor_synthesis_keeps_a_verified_candidate_and_rejects_a_wrong_answer(clustered):
    """End to end through a real OpenAI-compatible server on 127.0.0.1 that answers with a
    valid synthesis reply: the candidate whose answer its solution reaches is kept, with
    its provenance; the one whose stated answer disagrees is rejected by verification."""
    from fault_server import FaultServer, completion

    from pipeline.analysis import taxonomy
    from pipeline.models.instructor import Instructor
    from pipeline.stages.synthesize import InstructorSynthesizer

    class SynthesisServer(FaultServer):
        def respond(self, h, fault):
            reply = {"problems": [GOOD_PROBLEM, WRONG_PROBLEM]}
            h._send(200, json.dumps(completion(json.dumps(reply))).encode())

    tid = taxonomy.types_of(taxonomy.freeze(clustered, 1))[0]["type_id"]
    with SynthesisServer() as srv:
        ins = Instructor(model="m", base_url=srv.base_url, max_retries=1, backoff_s=0.01)
        out = synthesize(clustered, SynthParams(budget=2, per_call=2, k=1,
                                                synthesizer="instructor", types=[tid]),
                         synthesizer=InstructorSynthesizer(ins))
    assert out["failed_calls"] == [] and len(srv.requests) == 1
    assert srv.requests[0]["path"].endswith("/chat/completions")
    cands = {c["question"]: c for c in clustered.candidates(batch_id=out["batch_id"])}
    assert set(cands) == {GOOD_PROBLEM["question"], WRONG_PROBLEM["question"]}
    good, wrong = cands[GOOD_PROBLEM["question"]], cands[WRONG_PROBLEM["question"]]
    assert good["status"] == "kept", good["reason"]
    assert good["synthesizer"] == ins.name and good["model"] == "m" and good["call_key"]
    assert good["type_id"] == tid and good["source_cases"]
    assert good["answer"] == "73" and json.loads(good["raw"]) == GOOD_PROBLEM
    assert good["verification"]["agrees"] is True
    assert good["verification"]["solution_answer"] == "73"
    assert wrong["status"] == "rejected"
    assert wrong["verification"]["agrees"] is False
    assert wrong["verification"]["solution_answer"] == "91"
    assert "'95' disagrees with its solution ('91')" in wrong["reason"]
    calls = clustered.llm_calls(100)
    assert [c["purpose"] for c in calls] == [f"synthesize type {tid}"]


def _synth_and_select(store, method, **kw):
    synthesize(store, SynthParams(budget=24, per_call=8, synthesizer="offline"))
    return select(store, SelectParams(method=method, n_good=2, n_bad=2, max_new_tokens=96,
                                      **kw))


def test_oneshot_selection_scores_recompute_from_stored_generations(clustered, scripted):
    res = _synth_and_select(clustered, "oneshot", limit=3, top=2)
    sid = res["selection_id"]
    dev = {d["pid"]: d for d in clustered.dev_set(1)}
    assert {d["half"] for d in dev.values()} == {"good", "bad"}
    assert all(d["split"] == "train" for d in dev.values())
    scores = clustered.cand_scores(sid)
    assert len(scores) == 3 and sum(s["selected"] for s in scores) == 2
    for s in scores:
        gens = clustered.score_generations(sid, s["cand_id"])
        assert len(gens) == len(dev)
        rows = [{"pid": g["pid"], "half": dev[g["pid"]]["half"],
                 "zero_correct": dev[g["pid"]]["zero_correct"],
                 "correct": bool(judge(cut_at_final_answer(g["output"]),
                                       dev[g["pid"]]["answer"])["correct"])} for g in gens]
        by_hand = oneshot_score(s["cand_id"], rows)
        assert by_hand["score"] == pytest.approx(s["score"])
        assert by_hand["fixed"] == s["fixed"] and by_hand["broken"] == s["broken"]
    # a random baseline of the same size, and a proxy with its Spearman stored
    rnd = select(clustered, SelectParams(method="random", limit=3, top=2))
    assert rnd["n_selected"] == 2
    prx = select(clustered, SelectParams(method="proxy", n_good=2, n_bad=2, limit=3, top=2))
    from scipy.stats import spearmanr

    one = {s["cand_id"]: s["score"] for s in clustered.cand_scores(sid)}
    px = {s["cand_id"]: s["score"] for s in clustered.cand_scores(prx["selection_id"])}
    assert set(one) == set(px) and len(px) == 3 == prx["spearman_n"]
    assert prx["spearman_with"] == sid
    ids = sorted(one)
    rho = spearmanr([px[c] for c in ids], [one[c] for c in ids]).statistic
    assert prx["spearman_proxy_oneshot"] == pytest.approx(rho)  # a number: no ties here


def test_selection_killed_and_rerun_has_no_duplicate_scores(clustered, scripted_slow):
    synthesize(clustered, SynthParams(budget=24, per_call=8, synthesizer="offline"))
    # one candidate per batch (4 dev rows): candidates are stored as their batch ends,
    # and the kill must land between two of them
    jid = jobs.submit(clustered, "select", {"n_good": 2, "n_bad": 2, "limit": 6,
                                            "max_new_tokens": 96, "top": 2, "batch_size": 4})
    _wait(lambda: clustered.count("cand_scores") >= 1, what="first score")
    job = clustered.job(jid)
    os.killpg(job["pid"], signal.SIGKILL)
    jobs.reap(clustered)
    n_killed = clustered.count("cand_scores")
    assert n_killed < 6
    jobs.resume(clustered, jid)
    assert jobs.wait(clustered, jid, timeout=900)["status"] == "succeeded"
    sel = clustered.selections()[-1]
    assert sel["n_scored"] == 6 and sel["n_selected"] == 2
    assert clustered.count("cand_scores") == 6


def test_a_trained_adapter_changes_outputs_and_its_evaluation_records_it(clustered,
                                                                         monkeypatch):
    """A training's adapter is a standard peft one that changes the model's outputs, and the
    evaluation of its arm names it. (A training killed mid-run and resumed to the same
    losses and weights: test_store_edges.py, test_training_killed_after_a_checkpoint_...)"""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _synth_and_select(clustered, "random", limit=8, top=8)
    out = stages.run_stage(clustered, "train", {"method": "random", "epochs": 1,
                                                "batch_size": 2, "max_length": 256},
                           no_progress)
    run = clustered.train_run(out["train_id"])
    assert run["status"] == "finished" and run["step"] == run["total_steps"] == 4
    steps = clustered.train_steps(run["train_id"])
    assert [s["step"] for s in steps] == list(range(1, 5))
    assert all(s["loss"] > 0 for s in steps)
    # a standard peft adapter that changes the model's outputs
    from pipeline.models.target import resolve_model_path

    path, _ = resolve_model_path("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = tok("A box holds 12 eggs. How many eggs are in 3 boxes?", return_tensors="pt")
    with torch.inference_mode():
        before = base(**ids).logits
    tuned = PeftModel.from_pretrained(base, run["adapter_dir"])
    with torch.inference_mode():
        after = tuned(**ids).logits
    assert (after - before).abs().max() > 1e-3
    # an evaluation run records the adapter and its hash (answered by the scripted target:
    # the subject here is what is recorded, the real adapter's effect was checked above)
    from conftest import SCRIPTED

    from pipeline.loop import resolve

    monkeypatch.setenv("SEI_TEST_TARGET", str(SCRIPTED))
    from pipeline.stages.evaluate import EvalParams, evaluate

    with pytest.raises(ValueError, match="needs its adapter"):  # never the base silently
        evaluate(clustered, EvalParams(iteration=1, arm="random", sets=["demo/test"], limit=4))
    with pytest.raises(ValueError, match="it has one for --arm random"):
        resolve.models(clustered, "evaluate", EvalParams(iteration=1, sets=["demo/test"]))
    assert clustered.iteration(1)["status"] == "open"  # trained, not yet evaluated
    # as `sei evaluate` and the app's job run it: the stage closes the iteration once
    # each trained arm is evaluated
    ev = stages.run_stage(clustered, "evaluate", {
        "iteration": 1, "arm": "random", "sets": ["demo/test"], "limit": 4,
        "max_new_tokens": 64, "train_check": False}, no_progress)
    assert clustered.iteration(1)["status"] == "done"
    assert clustered.iteration(1)["finished_at"] is not None
    r = clustered.run(ev["runs"]["demo/test"])
    assert r["adapter"] == run["adapter_dir"]
    assert r["weights_hash"].endswith("+" + run["adapter_hash"][:8])


def _whole_store(s: Store) -> dict:
    """Everything a rerun of the loop could add to or change, row by row."""
    return {
        "runs": sorted((r["run_id"], r["status"], r["n_done"]) for r in s.runs()),
        "train": sorted((r["train_id"], r["status"], r["step"], r["adapter_hash"])
                        for r in s.train_runs()),
        "steps": s.count("train_steps"), "generations": s.count("generations"),
        "selections": sorted((x["selection_id"], x["status"], x["n_scored"])
                             for it in (1, 2) for x in s.selections(it)),
        "candidates": s.count("candidates"), "scores": s.count("cand_scores"),
        "links": sorted((lk["iteration"], lk["role"], lk["ref"]) for lk in s.iteration_links()),
    }


def test_iterate_one_iteration_end_to_end(looped_db, tmp_path):
    import shutil

    from conftest import LOOP_CONFIG, run_loop_config

    from pipeline.core.stats import pair_runs, paired_diff
    from pipeline.loop.views import iteration_table
    from pipeline.stages.evaluate import accuracy_table

    db = tmp_path / "sei.duckdb"
    shutil.copy(looped_db, db)
    s = Store(db)
    it = s.iteration(1)
    assert it["status"] == "done" and it["taxonomy"]["types"]
    roles = {lk["role"] for lk in s.iteration_links(1)}
    assert {"extract", "synthesis", "selection:oneshot", "selection:random",
            "train:scratch:oneshot", "eval:demo/test", "eval:svamp/test",
            "train_check"} <= roles
    assert {lk["role"] for lk in s.iteration_links(0)} == {"eval:demo/test", "eval:svamp/test"}
    rows = {(r["iteration"], r["arm"], r["set"]): r for r in accuracy_table(s)}
    base, one = rows[(0, "sei", "demo/test")], rows[(1, "sei", "demo/test")]
    assert base["n"] == one["n"] == 8
    assert one["adapter"] and not base["adapter"]
    a, b = pair_runs(s.run_items(base["run_id"]), s.run_items(one["run_id"]))
    d = paired_diff(a, b)
    assert (one["diff"], one["lo"], one["hi"]) == pytest.approx((d.diff, d.lo, d.hi))
    table = iteration_table(s)
    assert table[1]["adapter"] and table[1]["n_selected"] == 3
    # the next iteration's extraction is the adapter's rerun of the base train problems
    nxt = [lk["ref"] for lk in s.iteration_links(2) if lk["role"] == "extract"]
    assert len(nxt) == 2 and {s.run(x)["adapter"] for x in nxt} == {table[1]["adapter"]}
    # a second call of the same command resumes: nothing is generated, trained, scored,
    # selected or linked again, and no stored row changes
    before = _whole_store(s)
    exp = tmp_path / "exp.toml"
    exp.write_text(LOOP_CONFIG)
    r = run_loop_config(db, tmp_path, exp)
    assert r.exit_code == 0, r.output
    assert _whole_store(s) == before


def test_training_under_accelerate_launch_single_process(looped_db, tmp_path):
    """The scale-out path, its single-process case: `accelerate launch -m pipeline.shells.cli
    train` runs the same training loop and stores a finished run with its adapter."""
    import shutil

    db = tmp_path / "sei.duckdb"
    shutil.copy(looped_db, db)
    n_before = len(Store(db).train_runs())
    env = dict(os.environ, SEI_DB=str(db), SEI_DATA_DIR=str(tmp_path), HF_HUB_OFFLINE="1")
    from pipeline.core import config

    env.setdefault("SEI_MODELS_DIR", str(config.models_dir()))
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    r = subprocess.run([accelerate, "launch", "--cpu", "--num_processes", "1",
                        "--num_machines", "1", "--mixed_precision", "no",
                        "--dynamo_backend", "no", "-m", "pipeline.shells.cli", "train",
                        "--iteration", "1", "--method", "random", "--epochs", "1",
                        "--batch-size", "2", "--max-length", "256", "--seed", "7"],
                       env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = Store(db).train_runs()
    assert len(runs) == n_before + 1
    run = runs[-1]
    assert run["status"] == "finished" and run["params"]["seed"] == 7
    assert run["step"] == run["total_steps"] > 0
    assert os.path.exists(os.path.join(run["adapter_dir"], "adapter_model.safetensors"))
    assert run["adapter_dir"].startswith(str(tmp_path))
