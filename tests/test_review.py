"""The review queue (pipeline/analysis/review.py, `sei review`, the Review page) on real stores: a
store filled through the Store's own writes with outputs judged by the real judge, and
the prepared store with the real model's outputs. A decision is an edit in the log; an
override moves a case into or out of the bad cases analysis reads and the dev set's pools;
an undo restores both."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from pipeline.analysis import review, taxonomy
from pipeline.core.config import ROOT
from pipeline.problems.answers import final_answers, judge, string_verdict
from pipeline.storage.store import Store

RUN = "extract-review-test"
MAX_TOKENS = 64
# pid -> (model output, reference, completion tokens, timeout for the judge)
OUTPUTS = {
    "p0": ("3 * 7 = 21. The answer is 21.", "21", 20, 5.0),            # right, not doubtful
    "p1": ("3 * 7 = 24. The answer is 24.", "21", 20, 5.0),            # wrong, not doubtful
    "p2": ("The answer is 5.\n\nWait: 3 + 4 = 7. The answer is 7.", "7", 30, 5.0),  # two
    "p3": ("1 / 3 = 0.3333333. The answer is 0.3333333.", "1/3", 25, 5.0),  # rounded
    "p4": ("Let us think step by step. First we add the", "12", MAX_TOKENS, 5.0),  # cut
    "p5": ("The answer is 12.\n\nThen 12 - 3 = 9. The answer is 9.", "12", 30, 5.0),  # two
    "p6": ("The answer is \\frac{1}{\\sqrt{2}}.", "\\frac{\\sqrt{2}}{2}", 15, 0.001),  # time
}


def key(pid: str) -> tuple:
    return (RUN, "demo", "train", pid)


def fill(s: Store) -> Store:
    """Problems, one extraction run (max_new_tokens=64) and its generations judged by the
    real judge, written as extraction writes them."""
    s.insert_problems([{"dataset": "demo", "split": "train", "pid": p,
                        "question": f"Question {p}: how many?", "solution": f"... {ref}",
                        "answer": ref, "meta": {}} for p, (_, ref, _, _) in OUTPUTS.items()])
    s.upsert_run({"run_id": RUN, "kind": "extract", "model_id": "smollm2-135m-instruct",
                  "weights_hash": "w0", "adapter": None, "backend": "local", "dataset": "demo",
                  "split": "train", "data_hash": "d0", "n_items": len(OUTPUTS),
                  "prompt_template": "solve", "gen_params": {"max_new_tokens": MAX_TOKENS},
                  "seed": 0, "code_version": "test"})
    gens = []
    for pid, (out, ref, tokens, timeout) in OUTPUTS.items():
        j = judge(out, ref, timeout_s=timeout)
        gens.append({"dataset": "demo", "split": "train", "pid": pid, "output": out,
                     "pred": j["pred"], "correct": j["correct"], "judge": j,
                     "completion_tokens": tokens})
    s.record_generations(RUN, gens)
    s.finish_run(RUN)
    return s


@pytest.fixture
def rs(store) -> Store:
    return fill(store)


def bad_pids(s: Store) -> set[str]:
    return {c["pid"] for c in s.bad_cases_of([RUN], verdicts=review.overrides(s))}


def codes(items: list[dict]) -> dict[str, set[str]]:
    return {r["pid"]: {x["code"] for x in r["reasons"]} for r in items}


# -- reasons ------------------------------------------------------------------------------


def test_the_judge_gives_what_the_reasons_read():
    """The constructed outputs are judged as intended (the reasons below depend on it)."""
    verdicts = {p: judge(o, ref, timeout_s=t) for p, (o, ref, _, t) in OUTPUTS.items()}
    assert {p: v["correct"] for p, v in verdicts.items()} == {
        "p0": True, "p1": False, "p2": True, "p3": True, "p4": False, "p5": False, "p6": False}
    assert verdicts["p6"]["detail"] == "timeout"
    assert verdicts["p4"]["pred"] is None and verdicts["p4"]["method"] == "none"
    assert verdicts["p3"]["detail"] == "math-verify"  # math-verify rounds: 0.3333333 = 1/3


def test_string_comparison_and_final_answers():
    assert string_verdict("1/3", "0.3333333") is False      # exact, unlike math-verify
    assert string_verdict("0.5", "50%") is False
    assert string_verdict("50", "50%") is True
    assert string_verdict("\\frac{1}{2}", "0.50") is True
    assert string_verdict("x+1", "1+x") is None              # no opinion on symbols
    assert final_answers("The answer is 5. Then 3 + 4 = 7. The answer is 7.") == ["5", "7"]
    # one value stated several ways is one answer
    assert final_answers("The answer is 3 * 7 = 21 people. The answer is 21.") == ["21"]
    assert final_answers("#### 12\nThe answer is $12.00") == ["12"]
    assert final_answers("so \\boxed{3}, then \\boxed{\\frac{1}{2}}") == ["3", "\\frac{1}{2}"]
    assert final_answers("The answer is the number of apples.") == []


@pytest.mark.slow
def test_each_doubtful_verdict_is_queued_with_its_reasons(rs):
    items = review.queue(rs)
    assert items, "nothing queued"
    got = codes(items)
    assert got == {"p2": {"several_answers"}, "p3": {"disagree"},
                   "p4": {"no_answer", "truncated"}, "p5": {"several_answers"},
                   "p6": {"timeout"}}
    by = {r["pid"]: r for r in items}
    texts = {x["code"]: x["text"] for x in by["p4"]["reasons"]}
    assert texts["truncated"] == f"output cut at the token limit ({MAX_TOKENS} of {MAX_TOKENS} " \
                                 "new tokens)"
    assert "'5', '7'" in {x["code"]: x["text"] for x in by["p2"]["reasons"]}["several_answers"]
    assert "math-verify says correct, the string comparison says wrong" in \
        by["p3"]["reasons"][0]["text"]
    assert by["p5"]["case_id"] is not None and by["p2"]["case_id"] is None
    assert {r["id"] for r in items} == {review.item_id(key(p)) for p in got}


# -- decisions: analysis, dev set, undo --------------------------------------------------------


@pytest.mark.slow
def test_an_override_moves_a_case_out_of_and_into_the_bad_cases_and_undo_restores(rs):
    assert bad_pids(rs) == {"p1", "p4", "p5", "p6"}
    # judged wrong (it read the last of two answers); a person says right
    e5 = review.override(rs, review.item_id(key("p5")), True, author="t")
    assert bad_pids(rs) == {"p1", "p4", "p6"}
    assert [r["pid"] for r in review.queue(rs)].count("p5") == 0
    # judged right; a person says wrong: it gets a bad-case id and joins the bad cases
    e2 = review.override(rs, "/".join(key("p2")), False, author="t")
    assert bad_pids(rs) == {"p1", "p2", "p4", "p6"}
    # analysis reads the effective verdicts: p2 analysed, p5 not
    from pipeline.stages.analyze import analyze_bad_cases

    aid = analyze_bad_cases(rs, run_id=RUN, instructor="offline")
    cases = {c["case_id"]: c["pid"] for c in rs.bad_cases(RUN)}
    assert {cases[c] for c in rs.analysis_done(aid)} == {"p1", "p2", "p4", "p6"}
    assert {cases[k["case_id"]] for k in rs.keyphrases(aid)} >= {"p2"}
    # the log tells the decisions; undo (the log's own) takes one back, redo restores it
    log = taxonomy.edit_log(rs)
    assert log[0]["what"] == (f"overrode the verdict correct → wrong of demo/train/p2 "
                              f"(run {RUN})")
    taxonomy.undo(rs)                                    # what the map's Undo does
    assert bad_pids(rs) == {"p1", "p4", "p6"}            # p2's case row stays, not bad
    assert any(c["pid"] == "p2" for c in rs.bad_cases(RUN))
    taxonomy.redo(rs)
    assert bad_pids(rs) == {"p1", "p2", "p4", "p6"}
    review.undo(rs)                                      # the latest decision: p2 (redone)
    review.undo(rs, e5)
    assert bad_pids(rs) == {"p1", "p4", "p5", "p6"}
    assert review.decisions(rs) == {}
    with pytest.raises(ValueError, match="no review decision in force"):
        review.undo(rs)
    assert e2 > e5


@pytest.mark.slow
def test_the_dev_set_draws_from_effective_verdicts(rs):
    from pipeline.stages.select import dev_set

    def halves(it):
        d = rs.dev_set(it)
        assert d, "empty dev set"
        assert all(x["zero_correct"] == (x["half"] == "good") for x in d)
        return {h: {x["pid"] for x in d if x["half"] == h} for h in ("good", "bad")}

    right, wrong = {"p0", "p2", "p3"}, {"p1", "p4", "p5", "p6"}
    dev_set(rs, 1, len(right), len(wrong), run_id=RUN)
    assert halves(1) == {"good": right, "bad": wrong}
    review.override(rs, review.item_id(key("p5")), True)
    review.override(rs, review.item_id(key("p3")), False)
    dev_set(rs, 2, 3, 4, run_id=RUN)
    assert halves(2) == {"good": {"p0", "p2", "p5"}, "bad": {"p1", "p3", "p4", "p6"}}
    assert halves(1) == {"good": right, "bad": wrong}    # a drawn dev set stays as drawn
    review.undo(rs)
    review.undo(rs)
    dev_set(rs, 3, 3, 4, run_id=RUN)
    assert halves(3) == {"good": right, "bad": wrong}


@pytest.mark.slow
def test_confirm_leaves_the_queue_and_decisions_are_checked(rs):
    p6 = review.item_id(key("p6"))
    e = review.confirm(rs, p6)
    assert p6 not in {r["id"] for r in review.queue(rs)}
    done = {r["id"]: r for r in review.queue(rs, reviewed=True)}
    assert done[p6]["decision"] == "confirmed" and done[p6]["verdict"] is False
    assert done[p6]["edit_id"] == e
    assert bad_pids(rs) == {"p1", "p4", "p5", "p6"}      # a confirmation moves nothing
    with pytest.raises(ValueError, match="already confirmed as wrong"):
        review.override(rs, p6, False)
    with pytest.raises(ValueError, match="no judged generation"):
        review.confirm(rs, "nosuchid")
    with pytest.raises(ValueError, match="not a review decision"):
        review.undo(rs, 10_000)


@pytest.mark.slow
def test_a_test_split_run_is_not_reviewed(rs):
    rs.insert_problems([{"dataset": "demo", "split": "test", "pid": "t0", "question": "q?",
                         "answer": "7", "meta": {}}])
    rs.upsert_run({"run_id": "eval-t", "kind": "extract", "dataset": "demo", "split": "test",
                   "gen_params": {"max_new_tokens": MAX_TOKENS}})
    rs.record_generations("eval-t", [{"dataset": "demo", "split": "test", "pid": "t0",
                                      "output": "nothing", "pred": None, "correct": False,
                                      "judge": judge("nothing", "7"), "completion_tokens": 3}])
    assert "t0" not in {r["pid"] for r in review.queue(rs)}
    with pytest.raises(ValueError, match="no judged generation"):
        review.override(rs, "eval-t/demo/test/t0", True)


# -- the CLI -----------------------------------------------------------------------------


@pytest.mark.slow
def test_sei_review_lists_confirms_overrides_and_undoes(rs):
    from pipeline.shells.cli import cli

    def sei(*args, ok=True):
        r = CliRunner().invoke(cli, ["--db", str(rs.path), *args])
        assert (r.exit_code == 0) == ok, r.output
        return r.output

    out = sei("review")
    p5 = review.item_id(key("p5"))
    assert f"{p5}  demo/train/p5  judged wrong" in out
    assert "   - no final answer found\n   - output cut at the token limit (64 of 64" in out
    assert "5 waiting" in out
    assert "edit 1: overrode the verdict wrong → correct" in sei("review", "--override", p5,
                                                                 "--correct")
    assert "p5" not in {c["pid"] for c in rs.bad_cases_of([RUN], verdicts=review.overrides(rs))}
    listed = json.loads(sei("review", "--json", "--reviewed"))
    assert listed and {r["pid"]: r["decision"] for r in listed}["p5"] == "overridden"
    assert "needs --correct or --wrong" in sei("review", "--override", p5, ok=False)
    assert "already overridden as correct" in sei("review", "--override", p5, "--correct",
                                                  ok=False)
    assert "edit 2: confirmed the verdict" in sei("review", "--confirm",
                                                  review.item_id(key("p6")))
    assert "edit 3: undid edit 2" in sei("review", "--undo")
    assert sei("types", "undo", "1") == "edit 4\n"      # the log's own undo, alike
    assert "undid edit 1: overrode the verdict wrong → correct" in sei("types", "log")
    assert "5 waiting" in sei("review")


# -- the page ------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_review_page_lists_reasons_and_its_buttons_write_edits(rs):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    sys.path.insert(0, str(ROOT / "dashboard"))
    at = AppTest.from_file(str(ROOT / "dashboard" / "pages" / "3_Review.py"),
                           default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(d.value for d in at.dataframe if "reasons" in d.value.columns)
    assert len(table) == 5
    reasons = dict(zip(table["pid"], table["reasons"]))
    assert reasons["p4"] == "no final answer found; output cut at the token limit"
    pick = review.item_id(key("p5"))
    at.selectbox(key="rv_pick").set_value(pick).run()
    assert any("several different final answers: '12', '9'" in t.value for t in at.text)
    assert at.button(key="rv_override").label == "Override: correct"
    at.button(key="rv_override").click().run()
    assert not at.exception, [e.value for e in at.exception]
    last = rs.edits()[-1]
    assert last["op"] == "verdict" and last["author"] == "app"
    assert (last["payload"]["pid"], last["payload"]["correct"]) == ("p5", True)
    assert at.success[0].value == f"edit {last['edit_id']}: set {pick} to correct"
    table = next(d.value for d in at.dataframe if "reasons" in d.value.columns)
    assert "p5" not in set(table["pid"]) and len(table) == 4
    at.button(key="rv_undo").click().run()
    assert rs.edits()[-1]["op"] == "undo" and review.decisions(rs) == {}
    table = next(d.value for d in at.dataframe if "reasons" in d.value.columns)
    assert "p5" in set(table["pid"])


def test_the_bad_cases_page_shows_the_verdict_a_person_decided(rs):
    """An override moves a generation between the Bad cases page's "wrong only" and
    "correct only" lists, marked as a person's verdict; undo moves it back."""
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    sys.path.insert(0, str(ROOT / "dashboard"))
    at = AppTest.from_file(str(ROOT / "dashboard" / "pages" / "1_Bad_cases.py"),
                           default_timeout=60).run()

    def listed(verdict: str):
        at.selectbox(key="f_verdict").set_value(verdict).run()
        assert not at.exception, [e.value for e in at.exception]
        t = next(d.value for d in at.dataframe if "reviewed" in d.value.columns)
        return dict(zip(t["pid"], zip(t["correct"], t["reviewed"])))

    assert set(listed("wrong only")) == {"p1", "p4", "p5", "p6"}
    assert set(listed("correct only")) == {"p0", "p2", "p3"}
    review.override(rs, "/".join(key("p5")), True, author="t")   # judged wrong: right
    review.override(rs, "/".join(key("p2")), False, author="t")  # judged right: wrong
    assert listed("wrong only") == {"p1": (False, False), "p2": (False, True),
                                    "p4": (False, False), "p6": (False, False)}
    assert listed("correct only") == {"p0": (True, False), "p3": (True, False),
                                      "p5": (True, True)}
    review.undo(rs)
    review.undo(rs)
    assert set(listed("wrong only")) == {"p1", "p4", "p5", "p6"}


# -- the real model's outputs -----------------------------------------------------------


def test_reasons_on_the_real_model_outputs(prepared):
    """The prepared store (SmolLM2's real outputs, max_new_tokens 160): outputs cut at the
    limit and outputs stating several answers are queued; a confirmation takes one out and
    the map's Undo puts it back."""
    items = review.queue(prepared)
    assert items, "no doubtful verdict in the prepared store"
    cut = [r for r in items if "truncated" in {x["code"] for x in r["reasons"]}]
    limit = {rid: g["max_new_tokens"] for rid, g in prepared.runs_gen_params().items()}
    assert cut and all(r["completion_tokens"] >= limit[r["run_id"]] == 160 for r in cut)
    several = [r for r in items if "several_answers" in {x["code"] for x in r["reasons"]}]
    assert several and all(len(final_answers(r["output"])) > 1 for r in several)
    queued = {r["id"] for r in items}
    rest = [r for r in review._items(prepared) if r["id"] not in queued]
    assert rest and not any(r["reasons"] for r in rest)
    first = items[0]["id"]
    review.confirm(prepared, first)
    assert first not in {r["id"] for r in review.queue(prepared)}
    taxonomy.undo(prepared)
    assert first in {r["id"] for r in review.queue(prepared)}


def test_the_map_colours_by_verdict_and_a_new_clustering_leaves_out_cases_judged_right(
        clustered):
    """On the clustered store of real outputs: colour by verdict names each point's case
    as the review left it; a re-clustering places no keyphrase of a case overridden to
    correct, and keeps the one a person confirmed wrong."""
    from pipeline.stages.cluster import ClusterParams, cluster

    tax = taxonomy.current(clustered)
    wrong_cases = [c for c in clustered.bad_cases()
                   if c["case_id"] in {p["case_id"] for p in tax.points}]
    a, b = wrong_cases[0], wrong_cases[1]
    review.override(clustered, "/".join(review.key_of(a)), True)
    review.confirm(clustered, "/".join(review.key_of(b)))
    colours = review.point_verdicts(clustered, tax.points)
    assert set(colours) == {p["kp_id"] for p in tax.points}
    want = {p["kp_id"]: "overridden correct" if p["case_id"] == a["case_id"] else
            "confirmed wrong" if p["case_id"] == b["case_id"] else
            # the rest: as judged, or doubtful with a reason
            ("doubtful" if colours[p["kp_id"]].startswith("doubtful: ") else "wrong")
            for p in tax.points}
    got = {k: "doubtful" if v.startswith("doubtful: ") else v for k, v in colours.items()}
    assert got == want
    assert "overridden correct" in colours.values()
    meta = cluster(clustered, ClusterParams(min_cluster_size=4))
    cases = {r["case_id"] for r in clustered.cluster_points(meta["clustering_id"])}
    assert a["case_id"] not in cases and b["case_id"] in cases
    assert cases == {p["case_id"] for p in tax.points} - {a["case_id"]}
