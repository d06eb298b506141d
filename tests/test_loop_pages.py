"""The loop's pages (Synthesis, Selection, Iterations) under streamlit's AppTest, on a real
temporary DuckDB store filled through the Store's own write methods with small real data:
a base train run with bad cases, an iteration's frozen taxonomy, a synthesis batch, one-shot
and proxy selections with their dev set and generations, a training run's loss curve, and
evaluation runs of iterations 0 and 1. No model is needed; the figures shown are checked
against pipeline.core.stats on the same data."""

from __future__ import annotations

import json
import sys

import pytest

from pipeline.core import stats
from pipeline.core.config import ROOT
from pipeline.stages import synthesize
from pipeline.storage.store import Store

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

DASH = ROOT / "dashboard"
sys.path.insert(0, str(DASH))  # as `streamlit run` does for the main script's folder

TRAIN = [f"p{i:02d}" for i in range(12)]
TRAIN_OK = [True, False, True, False, False, True, True, False, True, False, True, True]
TEST = [f"t{i:02d}" for i in range(30)]
# iteration 0 (base) and 1 on demo/test: 1 fixes some of 0's errors and breaks two
EVAL0 = [i % 3 == 0 for i in range(30)]
EVAL1 = [(i % 3 == 0 and i not in (3, 12)) or i in (1, 4, 7, 10, 13, 16, 19) for i in range(30)]
CHECK1 = [True, True, True, False, True, True, True, True, True, False, True, True]


def page(name: str) -> AppTest:
    return AppTest.from_file(str(DASH / "pages" / name), default_timeout=60).run()


def frame(at: AppTest, column: str):
    """The first dataframe on the page with this column (AppTest exposes no dataframe keys)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def run(s: Store, run_id: str, dataset: str, split: str, pids: list[str], correct: list[bool],
        kind: str = "extract", adapter: str | None = None) -> str:
    s.upsert_run({"run_id": run_id, "kind": kind, "model_id": "smollm2-135m-instruct",
                  "weights_hash": "w0000base", "adapter": adapter, "backend": "local",
                  "dataset": dataset, "split": split, "data_hash": f"d-{dataset}-{split}",
                  "n_items": len(pids), "prompt_template": "solve", "gen_params": {},
                  "seed": 0, "code_version": "test"})
    s.record_generations(run_id, [{
        "dataset": dataset, "split": split, "pid": p, "correct": c,
        "output": f"Step 1: ... The answer is {7 if c else 5}.", "pred": "7" if c else "5",
        "completion_tokens": 40} for p, c in zip(pids, correct)])
    s.finish_run(run_id)
    return run_id


@pytest.fixture
def loop_store(store) -> Store:
    return fill(store)


def fill(s: Store) -> Store:
    """The loop's data, written as the stages write it (also used to prepare a store for
    a look at the pages in a browser)."""
    s.insert_problems(
        [{"dataset": "demo", "split": "train", "pid": p,
          "question": f"Sam has {i + 3} boxes of 7 pencils. How many pencils? (train {p})",
          "solution": f"{i + 3}*7 = {(i + 3) * 7}. The answer is {(i + 3) * 7}.",
          "answer": "7", "meta": {}} for i, p in enumerate(TRAIN)]
        + [{"dataset": "demo", "split": "test", "pid": p,
            "question": f"A test problem number {p}?", "solution": "The answer is 7.",
            "answer": "7", "meta": {}} for p in TEST])
    base = run(s, "run-base-train", "demo", "train", TRAIN, TRAIN_OK)
    cases = [c["case_id"] for c in s.bad_cases(base)]
    assert len(cases) == TRAIN_OK.count(False)
    types = [
        {"type_id": 1, "title": "multiplication slip", "description": "a wrong product",
         "excluded": False, "share": 0.6, "n_cases": 3, "case_ids": cases[:3],
         "keyphrases": {"1": "multiplication error: 7*4 given as 24"}},
        {"type_id": 2, "title": "stops <b>early</b>", "description": None, "excluded": False,
         "share": 0.4, "n_cases": 2, "case_ids": cases[3:],
         "keyphrases": {"2": "answer is an intermediate value"}}]
    s.create_iteration(1, "scratch", None, {"types": types, "edit_ids": [1, 2],
                                            "n_cases": len(cases)}, "cl-test", {})
    s.link_run(1, "extract", base)

    bid = "syn-1-test"
    s.upsert_synth_batch(bid, 1, "offline", {"budget": 8}, {"n_calls": 2})
    s.link_run(1, "synthesis", bid)
    # type 1: 3 kept, 1 rejected, 1 near duplicate; type 2: 2 kept, 1 contaminated
    plan = [(1, "kept", None), (1, "kept", None), (1, "rejected", "stated answer '9' disagrees"),
            (1, "near_duplicate", "Rouge-L 0.81 >= 0.7"), (1, "kept", None),
            (2, "kept", None), (2, "contaminated", "13-gram with demo/test"), (2, "kept", None)]
    rows = []
    for j, (t, st, why) in enumerate(plan):
        rows.append({
            "slot": f"{bid}/{t}/0/{j}", "batch_id": bid, "iteration": 1, "type_id": t,
            "type_title": types[t - 1]["title"], "source_cases": types[t - 1]["case_ids"][:2],
            "synthesizer": "offline", "question": f"Candidate {j}: Ann buys {j + 2} bags of "
            f"6 apples <b>bold</b>. How many apples?", "solution": f"{j + 2}*6 = {(j + 2) * 6}."
            f" The answer is {(j + 2) * 6}.", "answer": str((j + 2) * 6), "meta": {},
            "status": st, "reason": why,
            "nearest": TRAIN[0] if st == "near_duplicate" else None,
            "nearest_score": 0.81 if st == "near_duplicate" else None,
            "contamination": {"test_set": "demo/test", "reason": "13-gram"}
            if st == "contaminated" else None})
    assert s.add_candidates(rows) == len(rows)
    s.finish_synth_batch(bid)
    kept = s.candidates(iteration=1, status="kept")

    good = [p for p, c in zip(TRAIN, TRAIN_OK) if c][:3]
    bad = [p for p, c in zip(TRAIN, TRAIN_OK) if not c][:3]
    s.save_dev_set(1, [{"run_id": base, "dataset": "demo", "split": "train", "pid": p,
                        "half": h, "seed": 0} for h, ps in (("good", good), ("bad", bad))
                       for p in ps])
    one = "sel-1-oneshot-test"
    s.upsert_selection(one, 1, "oneshot", {"top": 0.4, "seed": 0},
                       {"model": "smollm2", "n_candidates": len(kept)})
    s.link_run(1, "selection:oneshot", one)
    for i, c in enumerate(kept):
        fixed, broken = bad[:i % 3], good[:1] if i == 4 else []
        gens = [{"cand_id": c["cand_id"], "dataset": "demo", "split": "train", "pid": p,
                 "output": f"one-shot output for {p} with cand {c['cand_id']}",
                 "pred": "7", "correct": (p in good and p not in broken) or p in fixed}
                for p in good + bad]
        s.record_scores(one, [{"cand_id": c["cand_id"], "score": 0.5 + 0.1 * (i % 3) - 0.05 * i,
                               "good_acc": 1.0 - len(broken) / 3, "bad_acc": len(fixed) / 3,
                               "fixed": fixed, "broken": broken, "detail": {}}], gens)
    sc = s.cand_scores(one)
    s.finish_selection(one, [(sc[0]["cand_id"], 1), (sc[1]["cand_id"], 2)],
                       {"n_scored": len(sc), "n_selected": 2, "score_mean": 0.5})
    prox = "sel-1-proxy-test"
    s.upsert_selection(prox, 1, "proxy", {"top": 0.4, "seed": 0}, {})
    s.record_scores(prox, [{"cand_id": c["cand_id"], "score": -0.1 * i, "detail": {}}
                           for i, c in enumerate(kept)], [])
    s.finish_selection(prox, [(kept[0]["cand_id"], 1)],
                       {"n_scored": len(kept), "n_selected": 1, "score_mean": -0.2,
                        "spearman_proxy_oneshot": 0.7, "spearman_n": len(kept),
                        "spearman_with": one})

    tid = "train-1-scratch-test"
    s.upsert_train_run({"train_id": tid, "iteration": 1, "mode": "scratch",
                        "base_model": "smollm2-135m-instruct", "init_adapter": None,
                        "selection_ids": [one], "data_hash": "dh1", "n_examples": 2,
                        "params": {"method": "oneshot", "epochs": 3},
                        "adapter_dir": "data/adapters/train-1-scratch-test", "total_steps": 3})
    s.record_train_steps(tid, [{"step": k, "epoch": k / 1, "loss": 2.0 / k, "lr": 2e-4,
                                "tokens": 300, "seconds": 1.5} for k in (1, 2, 3)], 3)
    s.finish_train_run(tid, "finished", "adapterhash1", {"seconds": 4.5})
    s.link_run(1, "train:scratch:oneshot", tid)

    s.link_run(0, "eval:demo/test", run(s, "run-eval-0", "demo", "test", TEST, EVAL0,
                                        kind="evaluate"))
    s.link_run(1, "eval:demo/test", run(s, "run-eval-1", "demo", "test", TEST, EVAL1,
                                        kind="evaluate", adapter="data/adapters/t1"))
    s.link_run(1, "train_check", run(s, "run-check-1", "demo", "train", TRAIN, CHECK1,
                                     adapter="data/adapters/t1"))
    return s


@pytest.mark.slow
def test_synthesis_counts_per_type_and_candidates_beside_their_cases(loop_store):
    at = ok(page("5_Synthesis.py"))
    df = frame(at, "near_duplicate")
    got = {int(r.type_id): (r.generated, r.rejected, r.near_duplicate, r.contaminated, r.kept)
           for r in df.itertuples()}
    assert got == {1: (5, 1, 1, 0, 3), 2: (3, 0, 0, 1, 2)}
    cands = frame(at, "nearest_score")
    assert sorted(cands["status"]) == ["kept", "kept", "kept", "near_duplicate", "rejected"]
    # the candidate's question as text (its <b> not rendered) beside its source bad cases
    codes = [c.value for c in at.code]
    assert any("<b>bold</b>" in c for c in codes)
    src = loop_store.cases_by_id(loop_store.candidates(batch_id="syn-1-test")[0]["source_cases"])
    assert all(any(b["question"] == c for c in codes) for b in src)
    assert all(any(b["output"] == c for c in codes) for b in src)
    at.selectbox(key="syn_type").set_value(2).run()
    at.selectbox(key="syn_status").set_value("contaminated").run()
    assert list(frame(ok(at), "nearest_score")["status"]) == ["contaminated"]
    # the estimate comes before the launch: 8 proposals over the frozen taxonomy's 2 types
    at.number_input(key="syn_budget").set_value(8).run()
    ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["proposals"] == "8" and metrics["synthesizer"] == "offline"


@pytest.mark.slow
def test_selection_scores_cut_preview_and_dev_changes(loop_store):
    from pipeline.stages.select import n_keep, rank

    at = ok(page("6_Selection.py"))
    # the latest one-shot selection first; the proxy's too (newest first)
    assert at.selectbox(key="sel_pick").value == "sel-1-oneshot-test"
    assert at.selectbox(key="sel_pick").options[0].startswith("proxy · sel-1-proxy-test")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Spearman proxy vs one-shot"] == "0.70"
    assert metrics["selected"] == "2"
    scores = loop_store.cand_scores("sel-1-oneshot-test")
    at.slider(key="sel_top").set_value(0.4).run()
    prev = frame(ok(at), "top 40%")
    keep = set(rank(scores, n_keep(0.4, len(scores)), 0))
    for tid in prev["type_id"]:
        want = sum(1 for x in scores if x["cand_id"] in keep and x["type_id"] == tid)
        assert prev.loc[prev.type_id == tid, "top 40%"].item() == want
    assert prev["scored"].sum() == len(scores)
    # the chosen candidate's fixed dev problems with both outputs, as text
    top = scores[0]
    at.selectbox(key="sel_cand").set_value(top["cand_id"]).run()
    codes = [c.value for c in ok(at).code]
    dev = {d["pid"]: d for d in loop_store.dev_set(1)}
    for pid in top["fixed"]:
        assert dev[pid]["question"] in codes
        assert f"one-shot output for {pid} with cand {top['cand_id']}" in codes
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(figs) == 2  # the score distribution and proxy vs one-shot
    # issue 37, item 6: the zero-shot line (a demonstration that does no better than none)
    below = sum(x["score"] < 0.5 for x in scores)
    assert any(c.value.startswith(f"{below} of {len(scores)} candidates score below the "
                                  "zero-shot line (0.500)") for c in at.caption)
    assert any(sh.get("y0") == 0.5 and sh.get("line", {}).get("dash") == "dot"
               for sh in figs[0]["layout"].get("shapes", []))
    table = next(d.value for d in at.dataframe if "fixed − broken" in d.value.columns)
    by_id = {x["cand_id"]: x for x in scores}
    for cid, net, flag in zip(table["cand_id"], table["fixed − broken"],
                              table["below zero-shot"]):
        x = by_id[cid]
        assert net == len(x["fixed"] or []) - len(x["broken"] or [])
        assert flag == (x["score"] < 0.5)
    # a type title is user text: escaped for plotly, which draws a subset of HTML
    spec = json.dumps(figs)
    assert "stops &lt;b&gt;early&lt;/b&gt;" in spec and "<b>early" not in spec


@pytest.mark.slow
def test_iterations_accuracy_interval_fix_rates_loss_and_lineage(loop_store):
    at = ok(page("7_Iterations.py"))
    d = stats.paired_diff(EVAL0, EVAL1, n_boot=10_000, seed=0)  # pids t00..t29 in order
    table = frame(at, "95% interval")
    row0 = table[table.iteration == 0].iloc[0]
    row1 = table[table.iteration == 1].iloc[0]
    assert row0["accuracy"] == f"{100 * d.acc_a:.1f}%"
    assert row1["accuracy"] == f"{100 * d.acc_b:.1f}%"
    assert row1["change vs base"] == f"{100 * d.diff:+.1f} pts"
    assert row1["95% interval"] == f"[{100 * d.lo:+.1f}, {100 * d.hi:+.1f}] pts"
    assert row1["McNemar p"] == f"{d.mcnemar_p:.3g}"
    assert (row1["fixed"], row1["broken"]) == (d.fixed, d.broken)
    assert (row1["weights_hash"], row1["data_hash"], row1["seed"]) == \
        ("w0000base", "d-demo-test", 0)
    charts = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec)
              for c in at.get("plotly_chart")}
    assert set(charts) == {"Accuracy per iteration", "Fix rate by error type", "Loss per step"}
    [tr] = charts["Accuracy per iteration"]["data"]
    assert tr["y"] == pytest.approx([100 * d.acc_a, 100 * d.acc_b])
    assert tr["error_y"]["array"] == pytest.approx([0, 100 * (d.hi - d.diff)])
    assert tr["error_y"]["arrayminus"] == pytest.approx([0, 100 * (d.diff - d.lo)])
    assert f"95% [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}] pts" in tr["hovertext"][1]
    # fix rate per type: of the base run's bad cases of the type, those right in the check
    base_ok = dict(zip(TRAIN, TRAIN_OK))
    now = dict(zip(TRAIN, CHECK1))
    bad = [p for p in TRAIN if not base_ok[p]]
    hm = charts["Fix rate by error type"]["data"][0]
    assert hm["y"] == ["2: stops &lt;b&gt;early&lt;/b&gt;", "1: multiplication slip"]
    hm["z"] = hm["z"][::-1]
    want = [100 * sum(now[p] for p in ps) / len(ps) for ps in (bad[:3], bad[3:])]
    assert [row[0] for row in hm["z"]] == pytest.approx(want)
    loss = charts["Loss per step"]["data"][0]
    assert loss["y"] == pytest.approx([2.0, 1.0, 2.0 / 3])
    assert loss["name"] == "iteration 1 · sei arm · scratch (finished)"  # by arm, not by id
    texts = " ".join(t.value for t in at.text)
    assert "2 types, 2 edits" in texts and "candidates: 5 kept of 8" in texts
    assert "hash adapterhash1" in texts
    caps = " ".join(c.value for c in at.caption)
    assert "Estimate: 2 examples × 3 epochs" in caps  # the one-shot selection's 2 chosen
    assert f"Estimate: {len(TEST) + len(TRAIN)} problems" in caps  # demo/test + train check
    # iteration 1 is open but synthesized, selected, trained and evaluated: the next run
    # would only resume it, so its estimate has no parts left
    assert at.button(key="lp_go").label == "Run iteration 1"
    assert "every stage of it has finished" in caps


@pytest.mark.slow
def test_empty_store_says_what_to_do_first(store):
    at = ok(page("7_Iterations.py"))
    assert "Nothing yet: run the quick start" in at.info[0].value
    assert "then synthesize" in at.info[0].value
    assert not at.get("plotly_chart")
    at = ok(page("5_Synthesis.py"))
    assert at.info[0].value.startswith("No synthesis batch for iteration 1 yet. Run the "
                                       "quick start (Overview)")
    assert [w.value for w in at.warning] == [
        "No error types to synthesize from: run the quick start first."]
    est = synthesize.estimate(store, synthesize.SynthParams(iteration=1))
    assert est["n_calls"] == est["n_proposals"] == 0  # nothing to synthesize from
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["calls"], metrics["proposals"]) == ("0", "0")
    assert at.button(key="syn_go").disabled  # nothing to launch
    at = ok(page("6_Selection.py"))
    assert "No selection for iteration 1 yet" in at.info[0].value


@pytest.mark.slow
def test_launch_buttons_submit_real_jobs_after_the_estimate(loop_store):
    """Offline synthesis and random selection need no model: launched from the pages, they
    run as real job processes and write a batch and a selection."""
    from pipeline.loop import jobs

    at = ok(page("5_Synthesis.py"))
    at.number_input(key="syn_budget").set_value(6).run()
    at.selectbox(key="syn_synth").set_value("offline").run()
    assert {m.label: m.value for m in ok(at).metric}["calls"] == "2"
    at.button(key="syn_go").click().run()
    [j] = [j for j in loop_store.jobs() if j["kind"] == "synthesize"]
    assert j["params"]["budget"] == 6 and j["params"]["synthesizer"] == "offline"
    j = jobs.wait(loop_store, j["job_id"], timeout=120)
    assert j["status"] == "succeeded", j["error"]
    batch = j["result"]["batch_id"]
    # these problems have no offline recipe: every proposal is rejected, with its reason
    assert {c["status"] for c in loop_store.candidates(batch_id=batch)} == {"rejected"}
    assert len(loop_store.candidates(batch_id=batch)) == 6
    at.run()
    assert any(f"#{j['job_id']} synthesize · succeeded" in p.proto.text
               for p in ok(at).get("progress"))

    at = ok(page("6_Selection.py"))
    at.selectbox(key="sel_method").set_value("random").run()
    assert "5 kept candidates to score with random" in " ".join(c.value for c in ok(at).caption)
    at.button(key="sel_go").click().run()
    [j] = [j for j in loop_store.jobs() if j["kind"] == "select"]
    j = jobs.wait(loop_store, j["job_id"], timeout=120)
    assert j["status"] == "succeeded", j["error"]
    sel = loop_store.selection(j["result"]["selection_id"])
    assert sel["method"] == "random" and j["result"]["n_scored"] == 5


@pytest.mark.slow
def test_forms_offer_only_what_exists_and_point_to_the_page_that_makes_it(loop_store, store):
    """Evaluate picks among models that exist (the base, iteration 1's sei arm: the only
    trained one), opening on the newest; Train with nothing selected links to Selection."""
    at = ok(page("7_Iterations.py"))
    pick = at.selectbox(key="ev_model")
    assert pick.options == ["base model (iteration 0)", "iteration 1, sei arm"]
    assert pick.value == "iteration 1, sei arm"
    at.selectbox(key="tr_method").set_value("random").run()  # nothing selected by random
    warn = [w.value for w in ok(at).warning]
    assert any("select candidates on the Selection page first" in w for w in warn), warn
    assert at.button(key="tr_go").disabled


@pytest.mark.slow
def test_a_random_baseline_reads_as_a_baseline_beside_its_pair(loop_store):
    """A random selection paired with the one-shot one (same size, same pool) is shown as
    a baseline: what it kept per type beside its pair, no score chart or cut; a newer
    cancelled selection does not become the page's default."""
    from pipeline.stages.select import SelectParams, select

    one = "sel-1-oneshot-test"
    rnd = select(loop_store, SelectParams(method="random", size_of=one))["selection_id"]
    loop_store.upsert_selection("sel-1-oneshot-cancelled", 1, "oneshot", {"top": 0.4}, {})
    at = ok(page("6_Selection.py"))
    assert at.selectbox(key="sel_pick").value == one
    at.selectbox(key="sel_pick").set_value(rnd).run()
    info = ok(at).info[0].value
    assert {m.label: m.value for m in at.metric}["mean score"] == "–"  # a draw has no score
    assert info.startswith("A random baseline: 2 of 5 kept candidates drawn uniformly")
    assert f"as many as selection `{one}` kept" in info
    assert not at.get("plotly_chart")
    table = next(d.value for d in at.dataframe if "baseline kept" in d.value.columns)
    assert table["baseline kept"].sum() == table["paired selection kept"].sum() == 2


def test_a_chart_with_one_point_says_so_instead_of_drawing_it(store):
    """Issue 24, item 5: only the base model evaluated, and a training run with one step,
    are sentences with their values, not axes drawn around a single point."""
    store.insert_problems([{"dataset": "demo", "split": "test", "pid": p, "question": f"Q {p}?",
                            "solution": "The answer is 7.", "answer": "7", "meta": {}}
                           for p in TEST])
    store.link_run(0, "eval:demo/test", run(store, "run-eval-0", "demo", "test", TEST, EVAL0,
                                            kind="evaluate"))
    store.create_iteration(1, "scratch", None, {"types": [], "edit_ids": [], "n_cases": 0},
                           "cl-test", {})
    tid = "train-1-scratch-one"
    store.upsert_train_run({"train_id": tid, "iteration": 1, "mode": "scratch",
                            "base_model": "smollm2-135m-instruct", "init_adapter": None,
                            "selection_ids": [], "data_hash": "dh", "n_examples": 2,
                            "params": {}, "adapter_dir": "data/adapters/x", "total_steps": 3})
    store.record_train_steps(tid, [{"step": 1, "epoch": 0.3, "loss": 1.23456, "lr": 2e-4,
                                    "tokens": 300, "seconds": 1.5}], 1)
    at = ok(page("7_Iterations.py"))
    titles = [json.loads(c.proto.spec)["layout"].get("title", {}).get("text")
              for c in at.get("plotly_chart")]
    assert "Accuracy per iteration" not in titles and "Loss per step" not in titles
    said = " ".join(i.value for i in at.info)
    assert (f"Only the base model (iteration 0) is evaluated so far: demo/test "
            f"{100 * sum(EVAL0) / len(EVAL0):.1f}% (n 30)") in said
    caps = [c.value for c in at.caption]
    # (a run with no live process is shown as interrupted)
    assert ("No loss curve yet: iteration 1 · sei arm · scratch "
            f"(interrupted, {tid}): loss 1.235 after step 1.") in caps, \
        "\n".join(caps)


def test_fix_rates_count_the_verdicts_a_person_decided(loop_store):
    """A review decision is the verdict, in the fix rates too: a base bad case judged right
    leaves its type's count (and, wrong in the check, becomes a new error); a check's
    generation judged right is fixed."""
    from pipeline.analysis import review
    from pipeline.stages import evaluate

    def rates():
        return {(r["iteration"], r["type_id"]): r for r in evaluate.fix_rates(loop_store)}

    was = rates()
    assert (was[1, 1]["n"], was[1, 1]["fixed"]) == (3, 2)  # p01, p03, p04: p03 still wrong
    assert (was[1, 2]["n"], was[1, 2]["fixed"]) == (2, 1)  # p07, p09: p09 still wrong
    review.override(loop_store, "run-base-train/demo/train/p03", True)
    review.override(loop_store, "run-check-1/demo/train/p09", True)
    now = rates()
    assert (now[1, 1]["n"], now[1, 1]["fixed"], now[1, 1]["fix_rate"]) == (2, 2, 1.0)
    assert (now[1, 2]["n"], now[1, 2]["fixed"]) == (2, 2)
    assert now[1, 1]["new_errors"] == was[1, 1]["new_errors"] + 1  # p03: right, then wrong
    review.undo(loop_store)
    review.undo(loop_store)
    assert rates() == was
