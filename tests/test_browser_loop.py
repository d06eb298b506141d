"""The loop's pages in a real browser (Debian's Chromium, Playwright) on a store where
one real SEI iteration ran (the `looped_db` fixture): the Iterations page draws its
accuracy chart from the stored runs; Synthesis and Selection render their data."""

import shutil

import pytest
from test_browser import CHROMIUM, browser, idle, no_exception, page, server, shot  # noqa: F401

from pipeline.evaluate import accuracy_table
from pipeline.store import Store

pytestmark = pytest.mark.skipif(not __import__("os").path.exists(CHROMIUM),
                                reason="Debian chromium not installed (make test installs it)")


@pytest.fixture
def loop_app(server, looped_db):  # noqa: F811
    url, db = server
    for f in (db, db.parent / (db.name + ".wal")):
        f.unlink(missing_ok=True)
    shutil.copy(looped_db, db)
    yield url, Store(db)


def test_iterations_page_draws_accuracy_from_stored_runs(loop_app, page):  # noqa: F811
    url, store = loop_app
    page.goto(f"{url}/Iterations")
    page.get_by_text("Accuracy per iteration").first.wait_for()
    idle(page)
    page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot')]"
                           ".some(p => (p.layout && p.layout.title && p.layout.title.text || '')"
                           ".includes('Accuracy per iteration') && p.data.length > 0)")
    no_exception(page)
    # the chart's points are the stored accuracies: one line per arm (sei, random), each
    # from the base model (iteration 0) to that arm's iteration 1
    traces = page.evaluate("() => { const p = [...document.querySelectorAll('.js-plotly-plot')]"
                           ".find(p => (p.layout.title.text || '').includes('Accuracy per "
                           "iter')); return p.data.map(t => [t.name, Array.from(t.y)]); }")
    rows = [r for r in accuracy_table(store) if r["set"] == "demo/test"]
    base = [100 * r["accuracy"] for r in rows if r["iteration"] == 0]
    arms = {r["arm"]: 100 * r["accuracy"] for r in rows if r["iteration"] == 1}
    assert len(base) == 1 and set(arms) == {"sei", "random"}
    got = {name: ys for name, ys in traces}
    assert got["demo/test"] == pytest.approx([base[0], arms["sei"]])
    assert got["demo/test (random)"] == pytest.approx([base[0], arms["random"]])
    shot(page, "iterations")


@pytest.mark.parametrize("path,text", [("Synthesis", "kept"), ("Selection", "score")])
def test_synthesis_and_selection_pages_render(loop_app, page, path, text):  # noqa: F811
    url, _ = loop_app
    page.goto(f"{url}/{path}")
    page.get_by_text(text).first.wait_for()
    idle(page)
    no_exception(page)
    shot(page, path.lower())
