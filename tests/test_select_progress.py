"""One-shot scoring's progress inside a batch (issue 38): a batch of dev answers can take
minutes on a CPU, so its count must move before the batch ends, also while none of its
answers has ended yet (a job sat at 0/18 for 7 minutes while every row ran to its token
limit). Once through select() on a real store with the scripted target, once on the real
model where no answer ends before the limit."""

from __future__ import annotations

import time

import pytest
from test_batching import oneshot_inputs

from pipeline.problems.data import import_demo
from pipeline.stages.extract import extract
from pipeline.stages.select import OneShot, SelectParams, select


def _with_candidates(store, n: int) -> list[str]:
    """Demo problems, an extraction of 12 of them (the dev set's pool) and n kept
    candidates for iteration 1 (other demo problems); the candidates' questions."""
    import_demo(store, 12 + n, 4)
    extract(store, "demo", "train", limit=12)
    probs = store.problems("demo", "train")[12:12 + n]
    store.add_candidates([{"slot": f"b/1/{i}", "batch_id": "b", "iteration": 1, "type_id": 1,
                           "question": p["question"], "solution": p["solution"],
                           "answer": p["answer"], "status": "kept"}
                          for i, p in enumerate(probs)])
    return [p["question"] for p in probs]


def test_oneshot_selection_progress_moves_inside_a_batch(store, scripted_slow):
    """Three candidates on four dev problems: twelve dev answers in one batch of 160 rows,
    the scripted target writing one every 0.25 s; the selection's progress hears the count
    go up one by one before the batch ends, then each candidate's score."""
    _with_candidates(store, 3)
    heard = []
    out = select(store, SelectParams(method="oneshot", n_good=2, n_bad=2, batch_size=160),
                 lambda done, total, step, message: heard.append((done, total, message)))
    assert out["n_scored"] == 3
    first_score = next(k for k, h in enumerate(heard) if h[2].startswith("cand "))
    inside = [done for done, total, _ in heard[:first_score]]
    assert {total for _, total, _ in heard} == {12}
    assert inside == list(range(13))  # 0, then every answer of the batch as it is written
    assert [done for done, _, _ in heard[first_score:]] == [12]  # the scores stored


def test_oneshot_progress_moves_while_no_answer_has_ended(target):
    """The real model, at most 12 new tokens per dev answer, six answers in one batch:
    until the first answer ends, counting finished answers alone stays at 0. The count
    moves with the tokens written before that, never goes back, and ends at six."""
    cands, dev = oneshot_inputs(3)
    heard = []
    scored = OneShot(target, SelectParams(max_new_tokens=12, batch_size=6)).score_many(
        cands, dev, on_rows=heard.append)  # 6 dev answers, one batch
    first_end = min(r["completion_tokens"] for _, rs in scored for r in rs)
    assert first_end >= 3  # (greedy: the same every run) some steps before an answer ends
    # one call per decoding step; those before the first answer ended:
    assert any(n > 0 for n in heard[:first_end - 1]), heard
    assert heard == sorted(heard) and heard[-1] == 6


@pytest.mark.slow
def test_a_one_shot_job_cancelled_mid_batch_keeps_its_scored_candidates(
        store, scripted_slow, tmp_path, monkeypatch):
    """Issue 37, item 4: six candidates on four dev problems in one batch (24 answers, one
    every 0.25 s). A candidate is stored once its four answers are in, so a cancel in the
    middle of the batch keeps those scored; the resumed job asks the target nothing about
    them (the target's own log of who was asked what) and scores the rest."""
    import json

    from pipeline.loop import jobs

    log = tmp_path / "asked.jsonl"
    monkeypatch.setenv("SCRIPTED_LOG", str(log))
    questions = _with_candidates(store, 6)
    log.unlink(missing_ok=True)  # the extraction's rows: not this test's subject
    jid = jobs.submit(store, "select", {"iteration": 1, "method": "oneshot", "n_good": 2,
                                        "n_bad": 2, "batch_size": 160})

    def scored() -> set:
        sels = store.selections(1)
        return store.scored_cands(sels[0]["selection_id"]) if sels else set()
    deadline = time.monotonic() + 300
    while len(scored()) < 2:
        assert time.monotonic() < deadline and store.job(jid)["status"] in jobs.ACTIVE
        time.sleep(0.1)
    j = jobs.cancel(store, jid, wait=60)
    assert j["status"] == "cancelled", j
    kept = scored()
    assert 2 <= len(kept) < 6  # stored inside the one batch, before it ended
    cands = {c["cand_id"]: c["question"] for c in store.candidates(iteration=1)}
    asked_before = [json.loads(x) for x in log.read_text().splitlines()]
    n_before = len(asked_before)
    assert n_before < 24

    jobs.resume(store, jid)
    j = jobs.wait(store, jid, timeout=300)
    assert j["status"] == "succeeded", j
    assert scored() == set(cands)
    asked_after = [json.loads(x) for x in log.read_text().splitlines()][n_before:]
    demos_after = {next(q for q in questions if q in a["demo"]) for a in asked_after}
    assert demos_after == {cands[c] for c in cands if c not in kept}
    assert len(asked_after) == 4 * (6 - len(kept))
