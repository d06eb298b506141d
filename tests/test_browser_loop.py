"""The loop's pages in a real browser (Debian's Chromium, Playwright) on a store where
one real SEI iteration ran (the `looped_db` fixture): the Iterations page draws its
accuracy chart from the stored runs; Synthesis and Selection render their data."""

import re
import shutil

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

from pipeline.stages.evaluate import accuracy_table
from pipeline.storage.store import Store

pytestmark = pytest.mark.skipif(not __import__("os").path.exists(CHROMIUM),
                                reason="Debian chromium not installed (make test installs it)")


@pytest.fixture
def loop_app(server, looped_db):  # noqa: F811
    url, db = server
    for f in (db, db.parent / (db.name + ".wal")):
        f.unlink(missing_ok=True)
    shutil.copy(looped_db, db)
    yield url, Store(db)


def check_accuracy_chart(pg, store: Store) -> None:
    """The Iterations page's accuracy chart holds the stored accuracies: one line per arm
    (sei, random), each from the base model (iteration 0) to that arm's iteration 1."""
    pg.get_by_text("Accuracy per iteration").first.wait_for()
    idle(pg)
    pg.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot')]"
                         ".some(p => (p.layout && p.layout.title && p.layout.title.text || '')"
                         ".includes('Accuracy per iteration') && p.data.length > 1)")
    traces = pg.evaluate("() => { const p = [...document.querySelectorAll('.js-plotly-plot')]"
                         ".find(p => (p.layout.title.text || '').includes('Accuracy per "
                         "iter')); return p.data.map(t => [t.name, Array.from(t.y)]); }")
    rows = [r for r in accuracy_table(store) if r["set"] == "demo/test"]
    base = [100 * r["accuracy"] for r in rows if r["iteration"] == 0]
    arms = {r["arm"]: 100 * r["accuracy"] for r in rows if r["iteration"] == 1}
    assert len(base) == 1 and set(arms) == {"sei", "random"}, rows
    got = dict(traces)
    assert got["demo/test"] == pytest.approx([base[0], arms["sei"]])
    assert got["demo/test (random)"] == pytest.approx([base[0], arms["random"]])
    no_exception(pg)


def test_iterations_page_draws_accuracy_from_stored_runs(loop_app, page):  # noqa: F811
    url, store = loop_app
    page.goto(f"{url}/Iterations")
    check_accuracy_chart(page, store)
    shot(page, "iterations")


def test_synthesis_page_renders(loop_app, page):  # noqa: F811
    """The Synthesis page shows iteration 1's batch as stored: its count of kept
    candidates (the loop kept some)."""
    url, store = loop_app
    kept = len(store.candidates(iteration=1, status="kept"))
    assert kept > 0
    page.goto(f"{url}/Synthesis")
    page.get_by_text(re.compile(rf"(^|· ){kept} kept ·")).first.wait_for()
    idle(page)
    no_exception(page)
    shot(page, "synthesis")


def test_selection_page_shows_the_stored_scores(loop_app, page):  # noqa: F811
    """Iteration 1's one-shot selection as stored: its top candidate's question and answer
    beside the picker, and its scored and selected counts."""
    url, store = loop_app
    [sel] = [x for x in store.selections(1) if x["method"] == "oneshot"]
    scores = store.cand_scores(sel["selection_id"])
    assert len(scores) == sel["n_scored"] > 0
    top = scores[0]
    page.goto(f"{url}/Selection")
    page.get_by_text("Score candidates").first.wait_for()
    choose(page, "iteration", "1")
    # the picker opens on the top stored candidate: its question and answer are shown
    # (the picker's own label lives in an input, not in the page's text; the top table's
    # cell holds the same words but is hidden under the grid's canvas, hence visible only)
    page.get_by_text(" ".join(top["question"].split())[:60]).filter(visible=True) \
        .first.wait_for()
    idle(page)
    no_exception(page)
    assert page.get_by_text(f"answer: {top['answer']}").count() >= 1
    # the metrics are the stored selection's counts
    values = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    assert values[:2] == [str(sel["n_scored"]), str(sel["n_selected"])], values
    shot(page, "selection")


@pytest.fixture
def filled_app(server, tmp_path):  # noqa: F811
    """The app on a store holding the loop's data as the stages write it (no model): made
    at a path of its own (a Store migrates a path once per process), then copied in."""
    from test_loop_pages import fill

    url, db = server
    made = tmp_path / "filled.duckdb"
    fill(Store(made))
    for f in (db, db.parent / (db.name + ".wal")):
        f.unlink(missing_ok=True)
    shutil.copy(made, db)
    if (made.parent / (made.name + ".wal")).exists():  # what is not checkpointed yet
        shutil.copy(made.parent / (made.name + ".wal"), db.parent / (db.name + ".wal"))
    yield url, Store(db)


def test_synthesize_and_random_select_from_their_buttons_and_see_the_results(
        filled_app, page):  # noqa: F811
    """Issues 22 (item 7) and 24 (item 4): Launch synthesis and Score with random pressed in
    Chromium; each page shows its job's end and what it made without a reload: the new batch
    in the picker (newest first), the random selection among the selections."""
    url, store = filled_app
    page.goto(f"{url}/Synthesis")
    page.get_by_text("Candidates per error type").first.wait_for()
    idle(page)
    n_batches = len(store.synth_batches())
    budget = page.get_by_role("spinbutton", name="budget (proposals)")
    budget.fill("6")
    budget.press("Enter")
    choose(page, "synthesizer", "offline")
    idle(page)
    page.get_by_role("button", name="Launch synthesis").click()
    assert until(lambda: len(store.synth_batches()) == n_batches + 1, 60)
    bid = store.synth_batches()[-1]["batch_id"]
    assert until(lambda: store.synth_batches()[-1]["status"] == "finished", 120)
    # no reload: the page reruns when its job ends, and the picker opens on the new batch
    # (its counts: these problems have no offline recipe; the old batch kept 5 of 8)
    page.get_by_text("6 generated · 6 rejected").first.wait_for(timeout=60_000)
    idle(page)
    no_exception(page)
    assert page.get_by_role("combobox", name="batch").input_value().startswith(bid)

    page.goto(f"{url}/Selection")
    page.get_by_text("Score candidates").first.wait_for()
    choose(page, "iteration", "1")
    choose(page, "method", "random")
    idle(page)
    n_sel = len(store.selections(1))
    page.get_by_role("button", name="Score with random").click()
    assert until(lambda: len(store.selections(1)) == n_sel + 1, 60)
    sid = store.selections(1)[-1]["selection_id"]
    assert until(lambda: store.selection(sid)["status"] == "finished", 120)
    # the page reruns when its job ends and opens on the selection it made
    page.get_by_text("A random baseline:").first.wait_for(timeout=60_000)
    assert sid in page.get_by_role("combobox", name="selection").input_value()
    no_exception(page)
    shot(page, "selection-random")
