"""End to end in a real browser: Debian's headless Chromium driven by Playwright against
`streamlit run` on a prepared store with real clusters. Screenshots of every page go to
artifacts/screenshots/."""

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from pipeline import taxonomy
from pipeline.config import ROOT
from pipeline.serve import free_port
from pipeline.store import Store

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "artifacts" / "screenshots"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="Debian chromium not installed (make test installs it)")


@pytest.fixture
def app(clustered_db, tmp_path):
    db = tmp_path / "sei.duckdb"
    shutil.copy(clustered_db, db)
    port = free_port()
    env = dict(os.environ, SEI_DB=str(db), SEI_SETTINGS=str(tmp_path / "settings.json"))
    log = open(tmp_path / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "Overview.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError((tmp_path / "streamlit.log").read_text()[-3000:])
        time.sleep(0.5)
    yield url, Store(db)
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture
def page():
    sync = pytest.importorskip("playwright.sync_api")
    with sync.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking"])
        pg = browser.new_page(viewport={"width": 1500, "height": 1100})
        pg.set_default_timeout(60_000)
        yield pg
        browser.close()


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(800)  # let the last rerun paint
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def idle(page):
    """Wait until Streamlit has finished the current run."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText"
        ".includes('Running')", timeout=60_000)
    page.wait_for_timeout(300)


def until(cond, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.3)
    return False


def test_app_end_to_end(app, page):
    url, store = app
    run = store.runs()[0]

    page.goto(url)
    page.get_by_text("Quick start on the embedded default").wait_for()
    # Dataframes draw on a canvas; their accessible cells are in the DOM but hidden.
    page.get_by_text(run["run_id"]).first.wait_for(state="attached")
    shot(page, "1-overview")

    page.goto(f"{url}/Bad_cases")
    page.get_by_text(re.compile(r"\d+ of \d+ generations")).wait_for()
    shot(page, "2-bad-cases")

    # Error map: a real WebGL scatter, then rename and merge through the widgets.
    page.goto(f"{url}/Error_map")
    page.locator(".js-plotly-plot").first.wait_for()
    page.locator("canvas").first.wait_for()
    idle(page)
    shot(page, "3-error-map")
    ts = taxonomy.current(store).visible_types()
    a, b = ts[0], ts[1]
    exp = page.locator("[data-testid='stExpander']").filter(has_text=f"{a.type_id}: {a.title}")
    exp.locator("summary").click()
    box = exp.get_by_label("title", exact=True)
    box.fill("renamed in the browser")
    box.press("Enter")
    idle(page)
    exp.get_by_role("button", name="Rename").click()
    assert until(lambda: taxonomy.current(store).types[a.type_id].title
                 == "renamed in the browser"), "rename did not reach DuckDB"
    page.get_by_text(f"renamed type {a.type_id}").wait_for()

    for t in (a.type_id, b.type_id):
        page.get_by_role("combobox", name="merge types").click()
        page.get_by_role("option", name=re.compile(rf"^{t}: ")).click()
        page.keyboard.press("Escape")
    page.get_by_role("button", name="Merge", exact=True).click()
    assert until(lambda: any(e["op"] == "merge" and set(e["payload"]["type_ids"])
                             == {a.type_id, b.type_id} for e in store.edits())), "no merge"
    page.get_by_text(re.compile(r"merged types")).wait_for()
    idle(page)
    shot(page, "4-error-map-after-edits")

    # Lasso round the whole WebGL map: the selection must come back as the keyphrase ids
    # of every drawn point, and splitting them must land in DuckDB.
    drawn = {q["kp_id"] for q in taxonomy.current(store).points if not q["excluded"]}
    bb = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    x0, y0 = bb["x"] + 3, bb["y"] + 3
    x1, y1 = bb["x"] + bb["width"] - 3, bb["y"] + bb["height"] - 3
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 1)):
        page.mouse.move(x, y, steps=10)
    page.mouse.up()
    page.get_by_text(f"{len(drawn)} selected keyphrases").wait_for()
    idle(page)
    title = page.get_by_label("new type title")
    title.fill("split in the browser")
    title.press("Enter")
    idle(page)
    page.get_by_role("button", name="Make new type (split)").click()
    assert until(lambda: any(e["op"] == "split" for e in store.edits())), "no split"
    split = [e for e in store.edits() if e["op"] == "split"][-1]["payload"]
    assert set(split["kp_ids"]) == drawn
    assert taxonomy.current(store).types[split["type_id"]].title == "split in the browser"
    page.get_by_text(f"new type {split['type_id']} from {len(drawn)} keyphrases").wait_for()
    idle(page)
    page.get_by_role("button", name="Undo last edit").click()
    assert until(lambda: split["type_id"] not in taxonomy.current(store).types), "undo failed"
    page.get_by_text("undid the last edit").wait_for()

    # Jobs: launch a re-clustering from the browser and watch its progress move.
    page.goto(f"{url}/Jobs")
    page.get_by_text("Start a job").click()
    page.get_by_role("combobox", name="stage").click()
    page.get_by_role("option", name="cluster", exact=True).click()
    page.get_by_role("button", name="Start", exact=True).click()
    assert until(lambda: len(store.jobs()) == 1, 30), "no job was created"
    seen = set()
    bar = page.locator("[data-testid='stProgress']").first

    def progress_moved():
        txt = bar.inner_text() if bar.count() else ""
        m = re.search(r"· (\w+) · (\d+)/", txt)
        if m:
            seen.add((m.group(1), m.group(2)))
        return len(seen) >= 2 and any(s == "succeeded" for s, _ in seen)

    assert until(progress_moved, 240), f"progress seen: {seen}"
    job = store.jobs()[0]
    assert job["status"] == "succeeded" and job["kind"] == "cluster"
    shot(page, "5-jobs")

    page.goto(f"{url}/Settings")
    page.get_by_text("Keys are never stored or shown here").wait_for()
    shot(page, "6-settings")
