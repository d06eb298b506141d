"""The loop's arithmetic without a model: paired statistics, answer completion,
budget allocation, chat formatting of solutions, ranking."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy.stats import binomtest

from pipeline.core.stats import mcnemar_exact, pair_runs, paired_diff
from pipeline.problems.answers import cut_at_final_answer, final_answer_end, judge
from pipeline.stages.select import n_keep, oneshot_score, rank
from pipeline.stages.synthesize import allocate, chat_solution


@pytest.mark.parametrize("b,c", [(0, 0), (3, 0), (7, 2), (12, 12), (1, 30), (25, 11)])
def test_mcnemar_equals_exact_binomial(b, c):
    expect = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expect, rel=1e-12)


def _paired_runs(n, both_right, fixed, broken, seed):
    """Two judged runs over n items with known counts: right in both, fixed (wrong in a,
    right in b), broken (right in a, wrong in b); the rest wrong in both."""
    a = [True] * both_right + [False] * fixed + [True] * broken
    b = [True] * both_right + [True] * fixed + [False] * broken
    a += [False] * (n - len(a))
    b += [False] * (n - len(b))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [a[i] for i in order], [b[i] for i in order]


@pytest.mark.parametrize("n,both,fixed,broken", [(500, 180, 60, 25), (1319, 400, 90, 88),
                                                 (200, 30, 40, 0)])
@pytest.mark.slow
def test_paired_bootstrap_matches_scipy_percentile_bootstrap(n, both, fixed, broken):
    """The interval is scipy's percentile bootstrap of the per-item differences (both runs
    resampled on the same items), up to Monte Carlo error at 10,000 resamples."""
    from scipy.stats import bootstrap

    a, b = _paired_runs(n, both, fixed, broken, seed=n)
    d = paired_diff(a, b, n_boot=10_000, seed=7)
    assert d.n == n and (d.fixed, d.broken) == (fixed, broken)
    assert d.diff == pytest.approx((fixed - broken) / n, abs=1e-12)  # the known answer
    assert (d.acc_a, d.acc_b) == pytest.approx(((both + broken) / n, (both + fixed) / n))
    per_item = np.asarray(b, float) - np.asarray(a, float)
    ref = bootstrap((per_item,), np.mean, method="percentile", n_resamples=10_000,
                    confidence_level=0.95, random_state=np.random.default_rng(11))
    # Monte Carlo error of a 2.5% quantile at 10,000 resamples is about 0.03 se, and the
    # resampled means move in steps of 1/n
    tol = 0.15 * ref.standard_error + 1 / n
    assert d.lo == pytest.approx(ref.confidence_interval.low, abs=tol)
    assert d.hi == pytest.approx(ref.confidence_interval.high, abs=tol)


def test_paired_diff_of_identical_runs_is_exactly_zero():
    a = [True, False, True, False, False]
    d = paired_diff(a, list(a), n_boot=500)
    assert (d.diff, d.lo, d.hi, d.fixed, d.broken, d.mcnemar_p) == (0, 0, 0, 0, 0, 1.0)
    with pytest.raises(ValueError, match="length"):
        paired_diff(a, a[:-1])


def test_pair_runs_aligns_on_problem_keys():
    a = [{"dataset": "d", "split": "test", "pid": p, "correct": c}
         for p, c in [("x", True), ("y", False), ("z", False)]]
    b = [{"dataset": "d", "split": "test", "pid": p, "correct": c}
         for p, c in [("z", True), ("x", True)]]
    assert pair_runs(a, b) == ([True, False], [True, True])


@pytest.mark.parametrize("text,cut", [
    ("3+4=7. The answer is 7.\nMore text", "3+4=7. The answer is 7."),
    ("The answer is 7", None),                 # may still grow: 7 -> 72
    ("The answer is 7.", None),                # 7. may be 7.5
    ("The answer is 7.5 apples", "The answer is 7.5"),
    ("The answer is $1,200.\n", "The answer is $1,200."),
    ("so #### 42\nThe answer is 3. ", "so #### 42"),
    ("no answer here at all. ", None),
    ("The answer is 3/4 cup", "The answer is 3/4"),
    # an answer written as a computation runs to its result
    ("The answer is 8 * 7 = 56.\nNext", "The answer is 8 * 7 = 56."),
    ("The answer is 8 *", None),
    ("The answer is 8 ", None),
    ("The answer is 8 * 7", None),
    ("The answer is 12 - 4 = 8 apples", "The answer is 12 - 4 = 8"),
    ("The answer is 5 xylophones", "The answer is 5"),
])
def test_final_answer_end(text, cut):
    end = final_answer_end(text)
    assert (text[:end] if end is not None else None) == cut


def test_an_answer_written_as_a_computation_is_judged_on_its_result():
    out = "The answer is 8 * 7 = 56.\nThat is all."
    assert judge(cut_at_final_answer(out), "56")["correct"]
    assert judge(out, "56")["correct"]


def test_cutting_at_the_final_answer_never_changes_the_verdict_of_the_first_answer():
    out = "Step: 6*7 = 42.\nThe answer is 42.\nWait, the answer is 40. Let me check"
    assert judge(cut_at_final_answer(out), "42")["correct"]
    assert not judge(out, "42")["correct"]  # the full text ends on another answer


def test_allocate_by_share_and_equally_sums_to_the_budget():
    types = [{"type_id": 1, "share": 0.5}, {"type_id": 2, "share": 0.3},
             {"type_id": 3, "share": 0.2}]
    assert allocate(types, 10) == {1: 5, 2: 3, 3: 2}
    assert sum(allocate(types, 7).values()) == 7
    assert allocate(types, 9, "equal") == {1: 3, 2: 3, 3: 3}


def test_chat_solution_drops_annotations_and_ends_like_the_solve_prompt():
    sol = "Pens: 3*4 = <<3*4=12>>12.\nTotal: 12+5 = <<12+5=17>>17.\n#### 17"
    assert chat_solution(sol) == "Pens: 3*4 = 12.\nTotal: 12+5 = 17.\nThe answer is 17."


def test_oneshot_score_and_rank():
    rows = [{"pid": "g1", "half": "good", "correct": True, "zero_correct": True},
            {"pid": "g2", "half": "good", "correct": False, "zero_correct": True},
            {"pid": "b1", "half": "bad", "correct": True, "zero_correct": False},
            {"pid": "b2", "half": "bad", "correct": False, "zero_correct": False},
            {"pid": "b3", "half": "bad", "correct": True, "zero_correct": False},
            {"pid": "b4", "half": "bad", "correct": False, "zero_correct": False}]
    s = oneshot_score(9, rows)
    assert s["score"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert s["fixed"] == ["b1", "b3"] and s["broken"] == ["g2"]
    scores = [{"cand_id": i, "score": x} for i, x in enumerate([0.5, 0.9, 0.5, 0.1, 0.5])]
    top = rank(scores, 3, seed=0)
    assert top[0] == 1 and set(top[1:]) <= {0, 2, 4}
    assert rank(scores, 3, seed=0) == top  # ties broken by the seed, reproducibly
    assert {tuple(rank(scores, 2, seed=s)) for s in range(20)} != {tuple(top[:2])}
    assert (n_keep(0.05, 400), n_keep(0.05, 10), n_keep(12, 5), n_keep(0.25, 0)) == (20, 1, 5, 0)


def test_a_finished_training_run_returns_before_loading_anything(tmp_path):
    """A rerun of a finished training run (adapter still on disk) answers from the store:
    no tokenizer, no model, not even torch is imported for it."""
    import subprocess
    import sys

    from pipeline.stages import train as tr
    from pipeline.storage.store import Store

    store = Store(tmp_path / "s.duckdb")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    store.upsert_train_run({"train_id": "train-1-scratch-x", "iteration": 1, "mode": "scratch",
                            "selection_ids": [], "params": {}, "adapter_dir": str(adapter),
                            "total_steps": 1})
    store.finish_train_run("train-1-scratch-x", "finished", "h123", {})
    script = f"""
import sys
from pipeline.stages import train as tr
from pipeline.storage.store import Store
tr._identify = lambda store, p: tr._Run("train-1-scratch-x", [], [], "", "m", None, "d")
seen = []
out = tr.train(Store({str(store.path)!r}), tr.TrainParams(), lambda *a: seen.append(a))
assert out == {{"train_id": "train-1-scratch-x", "adapter_dir": {str(adapter)!r},
                "adapter_hash": "h123", "resumed": True}}, out
assert seen == [(1, 1, "train", "already trained")], seen
assert "torch" not in sys.modules and "transformers" not in sys.modules
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert tr._finished(None) is None


def test_a_synthesis_that_kept_nothing_says_why_and_what_to_do(tmp_path):
    """Issue 21's real-data run: offline synthesis on GSM8K + MATH kept none of 64 (its
    numeric variants are near-duplicates, MATH has no recipe), and the loop said only
    "run `sei synthesize` first". It now says why, by reason, and what to do."""
    from pipeline.stages.synthesize import none_kept
    from pipeline.storage.store import Store

    s = Store(tmp_path / "sei.duckdb")
    rows = ([{"status": "near_duplicate", "reason": f"Rouge-L 0.9{i} >= 0.7"} for i in range(3)]
            + [{"status": "rejected", "reason": f"no offline recipe for math/train-{i}: not a "
                "demo template and no <<expr=value>> steps"} for i in range(2)]
            + [{"status": "rejected", "reason": "variant: unexplained literal 60 in step 1"}])
    s.add_candidates([dict(r, slot=f"b/1/{i}", batch_id="b", iteration=1,
                           synthesizer="offline") for i, r in enumerate(rows)])
    why = none_kept(s, 1)
    assert why.startswith("iteration 1: synthesis kept none of its 6 candidates (3 "
                          "near-duplicates (Rouge-L at or above the novelty filter); 2 with "
                          "no offline recipe")
    assert "1 variant: unexplained literal N in step N" in why
    assert "-p synthesize.novelty=0.99" in why and "SEI_INSTRUCTOR_MODEL" in why
    assert none_kept(s, 2) is None  # nothing made: nothing to explain
    s.add_candidates([{"slot": "b/1/9", "batch_id": "b", "iteration": 1, "status": "kept",
                       "synthesizer": "offline"}])
    assert none_kept(s, 1) is None


def test_math500_is_in_domain_for_a_math_train_pool():
    """MATH-500 is drawn from MATH's test set: with MATH as a train pool it is in-domain
    (issue 21's run counted it out-of-domain, as a dataset name of its own)."""
    from pipeline.problems.sets import in_domain

    evals = ["gsm8k/test", "math500/test", "svamp/test", "college_math/test"]
    assert in_domain(evals, ["gsm8k/train", "math/train"]) == {"gsm8k/test", "math500/test"}
    assert in_domain(evals, ["gsm8k/train"]) == {"gsm8k/test"}
    assert in_domain(["demo/test"], ["demo/train"]) == {"demo/test"}
