"""The demo path from buttons alone, in Chromium, on an empty store (issue 24's done-when;
issue 22, item 7): quick start → synthesis → one-shot and random selection → training of
both arms → evaluation of the base model and both arms → the accuracy chart; then Run
iteration is pressed and its progress watched until a Cancel from the Jobs page.

Every stage runs for real (MiniLM, UMAP, HDBSCAN, LoRA training) at sizes typed into the
forms, except the target's answers: the app and its job processes run with the tests'
scripted target (tests/scripted_target.py), since this test's subject is the path through
the app, not the model's numbers (those are the looped store's, tests/conftest.py). Each
wait is on the store or on the page, never on a sleep."""

import re

import pytest
from test_browser import (  # noqa: F401
    CHROMIUM,
    browser,
    choose,
    idle,
    no_exception,
    page,
    server,
    shot,
    until,
)
from test_browser_loop import check_accuracy_chart

from pipeline.loop import jobs, views
from pipeline.storage.store import Store

pytestmark = pytest.mark.skipif(not __import__("os").path.exists(CHROMIUM),
                                reason="Debian chromium not installed (make test installs it)")


def number(pg, label: str, value) -> None:
    """Type a number and leave the box (Tab, not Enter: Enter in a form submits it)."""
    box = pg.get_by_role("spinbutton", name=label)
    box.fill(str(value))
    box.press("Tab")
    idle(pg)


def press_and_wait(pg, store: Store, button: str, kind: str, timeout: float):
    """Press a launch button; wait for its job to end; return the job (it must succeed)."""
    before = {j["job_id"] for j in store.jobs(limit=1000)}
    idle(pg)
    pg.get_by_role("button", name=button).click()
    assert until(lambda: any(j["job_id"] not in before and j["kind"] == kind
                             for j in store.jobs(limit=1000)), 60), f"{button}: no {kind} job"
    [j] = [j for j in store.jobs(limit=1000) if j["job_id"] not in before]
    assert until(lambda: store.job(j["job_id"])["status"] not in jobs.ACTIVE, timeout)
    j = store.job(j["job_id"])
    assert j["status"] == "succeeded", (button, j["error"])
    return j


def test_the_demo_path_from_buttons(server, page):  # noqa: F811
    url, db = server
    store = Store(db)

    # -- quick start: demo data, extraction, keyphrases, error types ------------------------
    page.goto(url)
    page.get_by_text("Quick start on the embedded default").first.wait_for()
    number(page, "problems", 24)
    number(page, "max new tokens", 64)
    press_and_wait(page, store, "Launch quick start", "quickstart", 600)
    cl = store.latest_clustering()
    assert cl and cl["n_clusters"] >= 1
    # the Overview redraws on its own and points at the next step
    page.get_by_text("Next: synthesize").first.wait_for()

    # -- synthesis ------------------------------------------------------------------------
    page.goto(f"{url}/Synthesis")
    page.get_by_text("Launch a synthesis batch").first.wait_for()
    idle(page)
    number(page, "for iteration", 1)
    number(page, "budget (proposals)", 16)
    choose(page, "synthesizer", "offline")
    j = press_and_wait(page, store, "Launch synthesis", "synthesize", 300)
    assert len(store.synth_batches()) == 1
    kept = len(store.candidates(iteration=1, status="kept"))
    assert kept >= 2, j["result"]
    page.get_by_text(f"{kept} kept").first.wait_for()

    # -- one-shot selection, then its random baseline --------------------------------------
    page.goto(f"{url}/Selection")
    page.get_by_text("Score candidates").first.wait_for()
    idle(page)
    choose(page, "method", "oneshot")
    number(page, "dev: right answers", 1)
    number(page, "dev: wrong answers", 2)
    number(page, "keep top (fraction < 1, else a count)", 2)
    number(page, "score only the first N (0: all)", 3)
    press_and_wait(page, store, "Score with oneshot", "select", 600)
    [one] = [x for x in store.selections(1) if x["method"] == "oneshot"]
    assert (one["n_scored"], one["n_selected"]) == (3, 2)
    choose(page, "method", "random")
    press_and_wait(page, store, "Score with random", "select", 120)
    [rnd] = [x for x in store.selections(1) if x["method"] == "random"]
    assert rnd["n_selected"] == one["n_selected"]  # the baseline is the same size
    page.get_by_text("A random baseline:").first.wait_for()
    no_exception(page)

    # -- training of both arms --------------------------------------------------------------
    page.goto(f"{url}/Iterations")
    page.get_by_role("tab", name="Train").first.wait_for()
    idle(page)
    number(page, "iteration", 1)
    for method in ("oneshot", "random"):
        choose(page, "selected by", method)
        press_and_wait(page, store, "Train", "train", 600)
    trains = store.train_runs(1)
    assert len(trains) == 2 and all(t["status"] == "finished" and t["adapter_hash"]
                                    for t in trains)
    assert {tuple(t["selection_ids"]) for t in trains} == {(one["selection_id"],),
                                                           (rnd["selection_id"],)}

    # -- evaluation of the base model and both arms -----------------------------------------
    for model in ("base model (iteration 0)", "iteration 1, sei arm",
                  "iteration 1, random arm"):
        page.reload()  # the tabs open on the first one when a job's end reruns the page
        page.get_by_role("tab", name="Evaluate").first.wait_for()
        idle(page)
        page.get_by_role("tab", name="Evaluate").click()
        choose(page, "model", model)
        number(page, "problems per set (0: all)", 6)
        number(page, "max new tokens per answer", 64)
        j = press_and_wait(page, store, "Evaluate", "evaluate", 600)
        # its bar counted problems (the set's 6, and the train check's), not a unit of its own
        runs = {r["run_id"]: r for r in store.runs()}
        assert j["done"] == j["total"] == sum(runs[r]["n_items"]
                                              for r in j["result"]["runs"].values())
        # the page's token budget reached the job and its runs
        assert j["params"]["max_new_tokens"] == 64
        gen = store.runs_gen_params()
        assert gen[j["result"]["runs"]["demo/test"]]["max_new_tokens"] == 64
        # the iteration is done once each arm it trained has been evaluated
        assert store.iteration(1)["status"] == ("done" if model.endswith("random arm")
                                                else "open"), model

    # -- the accuracy chart: one line per arm, base model to iteration 1, as stored -------------
    page.reload()
    page.get_by_text(re.compile(r"^iteration 1 · \w+ · done$")).first.wait_for()
    check_accuracy_chart(page, store)
    shot(page, "path-iterations")

    # -- Run iteration N: its progress shows; a Cancel on the Jobs page stops it -----------------
    # (N is 1 here: stages run one by one leave iteration 1 open until `iterate` closes it)
    page.get_by_role("tab", name="Next iteration").click()
    idle(page)
    before = {j["job_id"] for j in store.jobs(limit=1000)}
    run = page.get_by_role("button", name=re.compile(r"^Run iteration \d+$"))
    n = int(run.inner_text().split()[-1])
    assert n == views.next_iteration(store)
    run.click()
    assert until(lambda: any(j["job_id"] not in before for j in store.jobs(limit=1000)), 60)
    [it] = [j for j in store.jobs(limit=1000) if j["job_id"] not in before]
    assert it["kind"] == "iterate" and it["params"]["iterations"] == n
    # the job's own line on the page once it has a step: the store's count and total
    from pipeline.loop.iterate import STEPS

    jid = it["job_id"]
    assert until(lambda: store.job(jid)["step"], 300), store.job(jid)
    assert store.job(jid)["total"] == len(STEPS) * n + 2  # one bar: base eval, stages, check
    bar = page.get_by_text(re.compile(rf"^#{jid} iterate · ")).first
    bar.wait_for()

    def bar_is_the_store() -> bool:
        j = store.job(jid)
        return bar.inner_text().startswith(
            f"#{jid} iterate · running · {j['done'] or 0}/{j['total']}")

    assert until(bar_is_the_store, 60), (bar.inner_text(), store.job(jid))
    page.goto(f"{url}/Jobs")
    page.get_by_role("button", name="Cancel").first.wait_for()
    idle(page)
    page.get_by_role("button", name="Cancel").first.click()
    assert until(lambda: store.job(it["job_id"])["status"] == "cancelled", 120)
    no_exception(page)
