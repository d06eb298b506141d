"""End to end in a real browser: Debian's headless Chromium driven by Playwright against
`streamlit run` on a prepared store with real clusters. One test per page (and per
curation flow), so a failure names the page. Every wait is on state: a text, a selector,
a value, the app's script state or a row in the store; never on a sleep alone.

One Streamlit server serves the module; each test copies a fresh clustered store over the
file it reads (the app keeps no connection, so that is safe between tests). Screenshots
go to artifacts/screenshots/, interaction times (edit -> redrawn map) to
artifacts/interaction_times.json and the test output."""

import json
import os
import re
import shutil
import time

import pytest
from conftest import CHROMIUM, three_types

from pipeline.analysis import taxonomy
from pipeline.core import config
from pipeline.core.config import ROOT
from pipeline.loop import jobs
from pipeline.stages.cluster import ClusterParams
from pipeline.storage.store import Store

SHOTS = ROOT / "artifacts" / "screenshots"
TIMES: dict[str, list[float]] = {}
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="Debian chromium not installed (make test installs it)")


@pytest.fixture(scope="module", autouse=True)
def _interaction_times():
    yield
    if TIMES:
        out = ROOT / "artifacts" / "interaction_times.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(TIMES, indent=1))


@pytest.fixture
def server(app_server):
    """The session's app (conftest.app_server) on an empty store: the previous test's
    store, write-ahead log, job logs and saved settings removed (its jobs have ended)."""
    url, db = app_server
    for f in (db, db.parent / (db.name + ".wal"), db.parent / "settings.json"):
        f.unlink(missing_ok=True)
    shutil.rmtree(config.jobs_dir(db), ignore_errors=True)
    return url, db


@pytest.fixture
def app(server, clustered_db):
    url, db = server
    for f in (db, db.parent / (db.name + ".wal")):
        f.unlink(missing_ok=True)
    shutil.copy(clustered_db, db)
    yield url, Store(db)


@pytest.fixture
def browser(chromium):
    return chromium


@pytest.fixture
def page(browser, request):
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    SHOTS.mkdir(parents=True, exist_ok=True)  # the last state, for a failure's story
    pg.evaluate("() => document.querySelectorAll('section, [data-testid=stMain]')"
                ".forEach(e => e.scrollTo(0, 0))")
    pg.screenshot(path=str(SHOTS / f"end-{request.node.name}.png"), full_page=True)
    ctx.close()


def idle(page, timeout=60_000):
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']",
                           state="attached", timeout=timeout)


def no_exception(page):
    assert page.locator("[data-testid='stException']").count() == 0, \
        page.locator("[data-testid='stException']").first.inner_text()


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    idle(page)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def until(cond, timeout=30.0):
    """Poll the store (another process writes it) until cond() holds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.3)
    return False


def choose(page, box: str, option, tries: int = 6):
    """Pick an option in a combobox. A rerun can redraw the widget under an open list (an
    option that never holds still), so open it again until a pick lands (each wait is on
    the option, not a sleep)."""
    for i in range(tries):
        idle(page)
        page.get_by_role("combobox", name=box).click()
        opt = page.get_by_role("option", name=option, exact=isinstance(option, str))
        try:
            opt.first.wait_for(state="visible", timeout=5_000)
            opt.first.click(timeout=10_000)
        except Exception:
            page.keyboard.press("Escape")
            if i == tries - 1:
                raise
            continue
        page.keyboard.press("Escape")
        # A multiselect stays open after a pick; a click while it is open only closes it.
        page.get_by_role("listbox").wait_for(state="hidden", timeout=10_000)
        return


# The map component's frame (dashboard/map_view.py). While a rerun replaces the map, the
# page can hold the outgoing frame beside the new one, drawn at height 0: never that one.
MAP = "iframe[src*='sei_map']:not([height='0'])"


def map_frame(page):
    """The frame the map is drawn in (scripts run there; its coordinates are its own)."""
    return page.wait_for_selector(MAP).content_frame()


def map_ready(page):
    idle(page)
    page.frame_locator(MAP).first.locator(".js-plotly-plot .nsewdrag").first.wait_for()
    # The map in the middle of the window, clear of the fixed header, so that a lasso drawn
    # by pixels lands on it whole (the search box above pushes its bottom past the window).
    page.locator(MAP).first.scroll_into_view_if_needed()
    page.evaluate("s => document.querySelector(s).scrollIntoView({block: 'center'})", MAP)


def map_title(page, text: str):
    """A title drawn on the map (a plotly annotation)."""
    return page.frame_locator(MAP).first.locator(".js-plotly-plot .annotation-text",
                                           has_text=text).first


EDIT_TYPE = re.compile(r"^type to edit")  # the type editor's picker


def title_form(page, type_id: int):
    """The type editor's rename form for this type (its title box is keyed by the type)."""
    return page.locator(".st-key-type_editor [data-testid='stForm']").filter(
        has=page.locator(f"[class*='st-key-title-{type_id}-']"))


def type_editor(page, type_id: int):
    """The type editor opened on this type through its picker: that type's rename form.
    The rerun a pick asks for starts after the click returns, and the page reads as idle
    until the server says it runs: waiting for an idle page alone, a title could be typed
    into the previous type's form, which the run then replaced (with two busy cores, 5 of
    20 picks still showed the previous type at "idle"). So wait for this type's own box."""
    choose(page, EDIT_TYPE, re.compile(rf"^{type_id}: "))
    form = title_form(page, type_id)
    form.wait_for()
    idle(page)
    return form


def picked(page) -> str:
    """The type the editor is open on, as its picker shows it."""
    box = page.get_by_role("combobox", name=EDIT_TYPE)
    return box.input_value() or box.evaluate("e => e.getAttribute('aria-label') || ''")


def rename_on_map(page, type_id: int, title: str) -> None:
    """Rename a type in the type editor; wait for the new title on the map and for the run
    to end."""
    ed = type_editor(page, type_id)
    ed.get_by_label("title", exact=True).fill(title)
    ed.get_by_role("button", name="Rename").click()
    map_title(page, title).wait_for()
    idle(page)


def map_px(page, x: float, y: float) -> tuple[float, float]:
    """Where the data point (x, y) is on the page, in pixels."""
    fx, fy = map_frame(page).evaluate("""([x, y]) => { const g = document.querySelector(
        '.js-plotly-plot'); const L = g._fullLayout;
        const r = g.querySelector('.nsewdrag').getBoundingClientRect();
        return [r.left + L.xaxis.d2p(x), r.top + L.yaxis.d2p(y)]; }""", [x, y])
    box = page.locator(MAP).first.bounding_box()
    return box["x"] + fx, box["y"] + fy


def dots_px(page, dots: list[dict]) -> list[tuple[float, float]]:
    """Where each of these dots is drawn on the page, in pixels (map_px for many)."""
    fr = map_frame(page).evaluate("""(pts) => { const g = document.querySelector(
        '.js-plotly-plot'); const L = g._fullLayout;
        const r = g.querySelector('.nsewdrag').getBoundingClientRect();
        return pts.map(([x, y]) => [r.left + L.xaxis.d2p(x), r.top + L.yaxis.d2p(y)]); }""",
                                  [[d["x"], d["y"]] for d in dots])
    box = page.locator(MAP).first.bounding_box()
    return [(box["x"] + fx, box["y"] + fy) for fx, fy in fr]


def timed(name: str, act, done):
    t = time.perf_counter()
    act()
    done()
    dt = time.perf_counter() - t
    TIMES.setdefault(name, []).append(round(dt, 3))
    print(f"{name}: {dt:.2f} s")
    return dt


def lasso(page, x0, y0, x1, y1):
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 1)):
        page.mouse.move(x, y, steps=8)
    page.mouse.up()


def test_overview_page(app, page):
    url, store = app
    page.goto(url)
    page.get_by_text("Quick start on the embedded default").wait_for()
    # Dataframes draw on a canvas; their accessible cells are in the DOM but hidden.
    page.get_by_text(store.runs()[0]["run_id"]).first.wait_for(state="attached")
    no_exception(page)
    shot(page, "1-overview")


def test_bad_cases_select_filter_and_show_on_the_map(app, page):
    """Issue 12: filter by a type, select the 9th row, type a word in the search box ->
    IndexError (or another case shown). Then "show on the map" rings the case's points."""
    url, store = app
    tax = taxonomy.current(store)
    t = max(tax.visible_types(), key=lambda x: x.n_cases)
    view = taxonomy.find_generations(store.generations_view(), tax, None, "wrong only",
                                     t.type_id)
    row = min(8, len(view) - 1)
    page.goto(f"{url}/Bad_cases")
    page.get_by_text(re.compile(r"\d+ of \d+ generations")).wait_for()
    choose(page, "error type", f"{t.type_id}: {t.title}")
    page.get_by_text(f"{len(view)} of ").wait_for()
    idle(page)
    grid = page.locator("[data-testid='stDataFrame']").first
    bb = grid.bounding_box()
    page.mouse.click(bb["x"] + 12, bb["y"] + 35 * (row + 1) + 17)  # the row's marker cell
    page.get_by_text(f"bad case {view[row]['case_id']}").wait_for()
    shot(page, "2-bad-cases-detail")
    word = "how"
    left = taxonomy.find_generations(store.generations_view(), tax, None, "wrong only",
                                     t.type_id, word)
    box = page.get_by_label("keyphrase or question contains")
    box.fill(word)
    box.press("Enter")
    page.get_by_text(f"{len(left)} of ").wait_for()
    page.get_by_text("Select a row for its details.").wait_for()
    idle(page)  # the run that drew this has ended: nothing stale is left on the page
    no_exception(page)
    assert page.get_by_text(re.compile(r"· bad case \d+")).count() == 0

    # Open a case by its id (the page's own link form) and show it on the map.
    first = taxonomy.find_generations(store.generations_view(), tax)[0]
    page.goto(f"{url}/Bad_cases?case={first['case_id']}")
    page.get_by_text(f"bad case {first['case_id']}").wait_for()
    page.get_by_role("link", name=re.compile("Show on the map")).click()
    page.wait_for_url(re.compile(rf"Error_map\?case={first['case_id']}"))
    map_ready(page)
    page.get_by_text(f"Case {first['case_id']}", exact=False).first.wait_for()
    rings = map_frame(page).evaluate("() => document.querySelector('.js-plotly-plot')._fullData"
                          ".filter(t => t.name === 'shown case').map(t => t._length)")
    assert rings and rings[0] >= 1
    no_exception(page)
    shot(page, "3-case-on-the-map")


def test_error_map_edit_bugs(app, page):
    """Issue 12: merge 2 types with a title -> Undo -> stale chip -> Merge again gave
    "merge needs at least two types" then a TypeError; after a titled merge the title
    box kept the old title and Rename wrote it back. Times edit -> redrawn map."""
    url, store = app
    ts = three_types(store)
    a, b, c = ts[0], ts[1], ts[2]
    page.goto(f"{url}/Error_map")
    map_ready(page)
    map_title(page, a.title[:20]).wait_for()
    shot(page, "4-error-map")

    # Rename the largest type: its title on the map changes.
    ed = type_editor(page, a.type_id)
    ed.get_by_label("title", exact=True).fill("renamed in the browser")
    timed("rename -> map redrawn",
          lambda: ed.get_by_role("button", name="Rename").click(),
          lambda: map_title(page, "renamed in the browser").wait_for())
    assert taxonomy.current(store).types[a.type_id].title == "renamed in the browser"

    for t in (a, b):
        choose(page, "merge types", re.compile(rf"^{t.type_id}: "))
    page.get_by_label("title of the merged type (optional)").fill("merged in the browser")
    timed("merge -> map redrawn",
          lambda: page.get_by_role("button", name="Merge", exact=True).click(),
          lambda: map_title(page, "merged in the browser").wait_for())
    merge = store.edits()[-1]["payload"]
    assert merge["title"] == "merged in the browser" and set(merge["type_ids"]) == \
        {a.type_id, b.type_id}
    into = merge["into"]
    # The type editor opens on the merged type, its title box shows the new title, and
    # Rename keeps it.
    idle(page)
    assert picked(page) == f"{into}: merged in the browser"
    ed = title_form(page, into)
    assert ed.get_by_label("title", exact=True).input_value() == "merged in the browser"
    n = len(store.edits())
    ed.get_by_role("button", name="Rename").click()
    page.get_by_text(f"renamed type {into}").wait_for()
    assert until(lambda: len(store.edits()) == n + 1)
    assert taxonomy.current(store).types[into].title == "merged in the browser"

    # Undo (the rename), undo (the merge): the merge box holds no stale chip.
    page.get_by_role("button", name="Undo last edit").click()
    page.get_by_text("undid the last edit").wait_for()
    idle(page)
    timed("undo merge -> map redrawn",
          lambda: page.get_by_role("button", name="Undo last edit").click(),
          lambda: map_title(page, "renamed in the browser").wait_for())
    idle(page)
    merge_box = page.locator("[data-testid='stMultiSelect']").filter(has_text="merge types")
    assert f"{b.type_id}: " not in merge_box.inner_text()
    # The view is the clustering's extent, so an edit does not move it.
    ranges = "() => { const L = document.querySelector('.js-plotly-plot').layout; " \
             "return [L.xaxis.range, L.yaxis.range].flat().map(v => +v.toFixed(6)); }"
    view = map_frame(page).evaluate(ranges)
    traces = "() => document.querySelector('.js-plotly-plot').data.length"
    n_traces = map_frame(page).evaluate(traces)

    for t in (a, c):
        choose(page, "merge types", re.compile(rf"^{t.type_id}: "))
    # Leave the merge box first, as a person does: it changes height when it loses focus,
    # which would move the button between press and release of the click.
    page.get_by_label("title of the merged type (optional)").click()
    page.get_by_role("button", name="Merge", exact=True).click()
    page.get_by_text(re.compile(r"merged types \[")).wait_for()
    idle(page)
    no_exception(page)
    page.get_by_role("button", name="Undo last edit").wait_for()  # the side panel is whole
    assert page.get_by_text("merge needs at least two types").count() == 0
    last = store.edits()[-1]
    assert last["op"] == "merge" and set(last["payload"]["type_ids"]) == {a.type_id, c.type_id}
    map_frame(page).wait_for_function(f"() => ({traces[6:]}) === {n_traces - 1}")  # c is gone
    assert map_frame(page).evaluate(ranges) == view  # and the view did not move
    shot(page, "5-error-map-after-edits")

    # Zoom to a type: the view follows it, and stays through an edit of that type.
    d = b  # the one type the edits above left as it was
    choose(page, "zoom to", re.compile(rf"^{d.type_id}: "))
    map_frame(page).wait_for_function("v => { const L = document.querySelector("
                                      "'.js-plotly-plot').layout; return [L.xaxis.range, "
                                      "L.yaxis.range].flat().map(x => +x.toFixed(6)).join() "
                                      "!== v.join(); }", arg=view)
    zoomed = map_frame(page).evaluate(ranges)
    xs = [q["x"] for q in taxonomy.current(store).points if q["type"] == d.type_id]
    assert zoomed[0] <= min(xs) and max(xs) <= zoomed[1]
    assert zoomed[1] - zoomed[0] < view[1] - view[0]
    rename_on_map(page, d.type_id, "zoomed and renamed")
    assert map_frame(page).evaluate(ranges) == zoomed

    # A person's own zoom (the mouse wheel on the map) outlives an edit: the figure is
    # updated in place (map_view.py), not drawn as a new chart.
    map_ready(page)  # in the window, where the wheel turns
    bb = page.frame_locator(MAP).first.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    page.mouse.move(bb["x"] + bb["width"] / 2, bb["y"] + bb["height"] / 2)
    page.mouse.wheel(0, -400)
    map_frame(page).wait_for_function("v => { const L = document.querySelector("
                                      "'.js-plotly-plot').layout; return L.xaxis.range[1] - "
                                      "L.xaxis.range[0] < v[1] - v[0] - 1e-9; }", arg=zoomed)
    mine = map_frame(page).evaluate(ranges)
    rename_on_map(page, d.type_id, "renamed while zoomed in")
    assert map_frame(page).evaluate(ranges) == mine

    # A click on a type's row in the types table opens that type's editor.
    vis = taxonomy.current(store).visible_types()
    e = next(t for t in vis if t.type_id != d.type_id)
    grid = page.locator("[class*='st-key-legend'] [data-testid='stDataFrame']")
    grid.scroll_into_view_if_needed()
    bb = grid.bounding_box()
    row = [t.type_id for t in vis].index(e.type_id)
    page.mouse.click(bb["x"] + 12, bb["y"] + 35 + 35 * row + 17)  # its row's selection box
    assert until(lambda: picked(page) == f"{e.type_id}: {e.title}")
    idle(page)
    assert title_form(page, e.type_id).get_by_label("title", exact=True).input_value() == e.title


def deltas(frames: list[bytes]) -> list[tuple[str, object]]:
    """(fragment id, delta) of each element or block the server sent in these websocket
    frames: the fragment id is "" for one drawn by a run of the whole page."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    out = []
    for f in frames:
        m = ForwardMsg()
        m.ParseFromString(f)
        if m.WhichOneof("type") == "delta":
            out.append((m.delta.fragment_id, m.delta))
    return out


def alerts(sent: list[tuple[str, object]], text: str) -> list[str]:
    """The fragment ids of the runs that sent a message (st.success, ...) reading `text`."""
    return [f for f, d in sent if d.WhichOneof("type") == "new_element"
            and d.new_element.WhichOneof("type") == "alert" and d.new_element.alert.body == text]


def sends(sent: list[tuple[str, object]], label: str) -> list[str]:
    """The fragment ids of the runs that sent a button labelled `label`."""
    return [f for f, d in sent if d.WhichOneof("type") == "new_element"
            and d.new_element.WhichOneof("type") == "button"
            and d.new_element.button.label == label]


def test_error_map_edit_reruns_the_curation_alone(app, page):
    """Issue 22, item 5: an edit reruns the map and the panels beside it (a fragment), not
    the whole page, and leaves one copy of each form. A job of a kind the map does not
    watch runs meanwhile: the map's job panel does not poll for it (a poll's run right
    after an edit's fragment run left the replaced forms on screen, streamlit#16708).
    While a clustering-kind job is active the panel polls, and an edit reruns the whole page."""
    import fcntl

    from pipeline.core import config

    url, store = app
    a = three_types(store)[0]
    got: list[bytes] = []  # the server's websocket frames (ForwardMsg protobufs)
    page.on("websocket", lambda ws: ws.on(
        "framereceived", lambda p: got.append(p if isinstance(p, bytes) else p.encode())))

    def rename(title: str) -> tuple[str, list[tuple[str, object]]]:
        """Rename type a; the fragment id of the run that drew the edit's message, and the
        elements sent after the click."""
        ed = type_editor(page, a.type_id)
        ed.get_by_label("title", exact=True).fill(title)
        got.clear()
        ed.get_by_role("button", name="Rename").click()
        map_title(page, title).wait_for()
        idle(page)
        no_exception(page)
        sent = deltas(got)
        [run] = alerts(sent, f"renamed type {a.type_id}")
        assert page.get_by_label("title", exact=True).count() == 1
        assert page.get_by_label("title of the merged type (optional)").count() == 1
        assert taxonomy.current(store).types[a.type_id].title == title
        return run, sent

    recluster = "Re-cluster (background job)"  # a button outside the curation
    tick = jobs.submit(store, "ticks", {"n": 400, "seconds": 0.25, "tag": "map-edits"})
    try:
        page.goto(f"{url}/Error_map")
        map_ready(page)
        assert sends(deltas(got), recluster) == [""]  # the first run draws the whole page
        fragment = config.map_fragment()  # the default; the app's server inherits the setting
        for i in range(4):
            run, sent = rename(f"edit {i}")
            assert (run != "") is fragment  # a fragment's run sends nothing else
            assert ({f for f, _ in sent} == {run}) is fragment
            assert sends(sent, recluster) == ([] if fragment else [""])
        assert store.job(tick)["status"] == "running"  # it ran through every edit
    finally:
        jobs.cancel(store, tick, wait=30)

    # A quickstart (a kind the map watches) waiting for the heavy slot, which this test
    # holds: the panel shows it and polls, and an edit reruns the whole page.
    slot = config.jobs_dir(store.path) / "heavy.lock"
    slot.parent.mkdir(parents=True, exist_ok=True)
    with open(slot, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        qs = jobs.submit(store, "quickstart", {})
        try:
            page.reload()
            map_ready(page)
            page.get_by_text(re.compile(rf"#{qs} quickstart · (queued|running)")).wait_for()
            for i in range(2):
                run, sent = rename(f"whole-page edit {i}")
                assert run == "" and sends(sent, recluster) == [""]
            assert store.job(qs)["status"] in jobs.ACTIVE
        finally:
            jobs.cancel(store, qs, wait=30)
    assert store.job(qs)["status"] == "cancelled"
    no_exception(page)


def test_error_map_frame_made_again_gets_its_arrays(app, page):
    """The map's frame keeps the arrays it was sent in the tab's session storage, and the
    app sends each array once per session (map_view.py). Leaving the page and coming back
    makes a new frame: it finds them in storage; with storage emptied it asks for them, once,
    and draws the whole map."""
    url, store = app
    big = max(taxonomy.current(store).visible_types(), key=lambda t: len(t.members))
    drawn = "() => document.querySelector('.js-plotly-plot')._fullData" \
            ".reduce((n, t) => n + t._length, 0)"
    page.goto(f"{url}/Error_map")
    map_ready(page)
    n = map_frame(page).evaluate(drawn)
    for emptied in (False, True):
        if emptied:
            page.evaluate("() => sessionStorage.clear()")  # the frame's storage too
        page.get_by_role("link", name="Bad cases").click()  # same session, no reload
        page.get_by_text(re.compile(r"\d+ of \d+ generations")).wait_for()
        page.get_by_role("link", name="Error map").click()
        map_ready(page)
        map_title(page, big.title[:20]).wait_for()
        assert map_frame(page).evaluate(drawn) == n
        assert map_frame(page).evaluate("() => window.seiAsks || 0") == (1 if emptied else 0)
    no_exception(page)


def test_error_map_lasso_opens_cases_and_splits(app, page):
    url, store = app
    tax = taxonomy.current(store)
    page.goto(f"{url}/Error_map")
    map_ready(page)
    # A small lasso round the largest dot (identical keyphrases): all of them come back,
    # with the dots that lie in the lasso beside it (where every dot is drawn, in pixels;
    # the lasso's half-width leaves no dot within 1.5 px of its edge).
    dots = taxonomy.dots(tax)
    big = max(dots, key=lambda d: len(d["kp_ids"]))
    px = map_px(page, big["x"], big["y"])
    away = [max(abs(x - px[0]), abs(y - px[1])) for x, y in dots_px(page, dots)]
    h = next(h for h in (5, 4, 6, 3, 7, 8, 9, 10)
             if not any(h - 1.5 <= a <= h + 1.5 for a in away))
    inside = sorted(d["kp_id"] for d, a in zip(dots, away) if a < h)
    kps = taxonomy.expand(inside, tax)  # the big dot (at 0 px) and its neighbours
    lasso(page, px[0] - h, px[1] - h, px[0] + h, px[1] + h)
    page.get_by_text(f"{len(kps)} selected keyphrases ({len(inside)} dots)").wait_for()
    idle(page)
    # The first of its cases (most keyphrases first) opens beside the map.
    small = taxonomy.cases_of(tax, kps)
    case = small[0]
    page.get_by_text(re.compile(rf"^Case {case} · ")).first.wait_for()
    shot(page, "6-lasso-one-dot")

    # Lasso the whole map: every drawn keyphrase comes back; split them into a type.
    drawn = {q["kp_id"] for q in tax.points if not q["excluded"]}
    bb = page.frame_locator(MAP).first.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    lasso(page, bb["x"] + 3, bb["y"] + 3, bb["x"] + bb["width"] - 3, bb["y"] + bb["height"] - 3)
    page.get_by_text(f"{len(drawn)} selected keyphrases").wait_for()
    idle(page)
    # The cases behind the selection, one at a time beside the map. The picker keeps the
    # case it had open while that is still behind the selection (the small lasso's picker,
    # when it had several cases); else it opens the first (most keyphrases). Then another.
    cases = taxonomy.cases_of(tax, sorted(drawn))
    assert len(cases) >= 2, cases
    box = page.get_by_role("combobox", name=f"{len(cases)} cases behind the selection")
    box.wait_for()
    shown = case if len(small) > 1 else cases[0]
    page.get_by_text(re.compile(rf"^Case {shown} · ")).first.wait_for()
    assert box.input_value().startswith(f"case {shown}: "), box.input_value()
    other = next(c for c in cases if c != shown)
    choose(page, re.compile(r"cases behind the selection"), re.compile(rf"^case {other}:"))
    page.get_by_text(re.compile(rf"^Case {other} · ")).first.wait_for()
    shot(page, "7-case-beside-the-map")
    page.get_by_label("new type title").fill("split in the browser")
    timed("split -> map redrawn",
          lambda: page.get_by_role("button", name="Make new type (split)").click(),
          lambda: map_title(page, "split in the browser").wait_for())
    split = [e for e in store.edits() if e["op"] == "split"][-1]["payload"]
    assert set(split["kp_ids"]) == drawn
    assert taxonomy.current(store).types[split["type_id"]].title == "split in the browser"
    page.get_by_text(f"new type {split['type_id']} from {len(drawn)} keyphrases").wait_for()
    idle(page)  # the type editor opens on the new type
    assert picked(page) == f"{split['type_id']}: split in the browser"
    assert title_form(page, split["type_id"]).get_by_label(
        "title", exact=True).input_value() == "split in the browser"
    timed("undo split -> map redrawn",
          lambda: page.get_by_role("button", name="Undo last edit").click(),
          lambda: map_title(page, "split in the browser").wait_for(state="detached"))
    page.get_by_text("undid the last edit").wait_for()
    assert split["type_id"] not in taxonomy.current(store).types

    # Open a case in Bad cases from the map (a fresh selection: one dot).
    page.goto(f"{url}/Error_map?case={cases[1]}")
    map_ready(page)
    page.get_by_text(re.compile(rf"^Case {cases[1]} · ")).first.wait_for()
    page.get_by_role("link", name=re.compile("Open in Bad cases")).click()
    page.wait_for_url(re.compile(rf"Bad_cases\?case={cases[1]}"))
    page.get_by_text(f"bad case {cases[1]}").wait_for()
    no_exception(page)
    shot(page, "7b-case-from-the-map")



def test_error_map_clusterings_switch_and_recluster(app, page):
    """A subset clustering asks before it becomes current; the picker switches and back;
    the map redraws by itself when a re-cluster job ends."""
    from pipeline.stages.analyze import analyze_bad_cases
    from pipeline.stages.cluster import ClusterParams, cluster

    url, store = app
    cur = taxonomy.current(store).clustering["clustering_id"]
    aid = analyze_bad_cases(store, run_id=store.runs()[0]["run_id"], instructor="offline", limit=8)
    small = cluster(store, ClusterParams(min_cluster_size=2), analysis_id=aid)["clustering_id"]
    page.goto(f"{url}/Error_map")
    map_ready(page)
    page.get_by_text("so it was not made current").wait_for()
    shot(page, "8-held-clustering")
    page.get_by_role("button", name="Make it current").click()
    page.get_by_text(f"clustering {small} is current").wait_for()
    map_ready(page)
    assert taxonomy.current(store).clustering["clustering_id"] == small
    page.get_by_text(re.compile(rf"Current clustering {small}")).first.wait_for()
    shot(page, "9-small-clustering")

    choose(page, "clustering", re.compile(rf"^{cur} "))
    page.get_by_role("button", name="Make current").click()
    page.get_by_text(f"clustering {cur} is current").wait_for()
    map_ready(page)
    assert taxonomy.current(store).clustering["clustering_id"] == cur

    # Re-cluster from the form: the map follows when the job ends, without a reload.
    page.get_by_label("min cluster size").fill("6")
    t0 = time.perf_counter()
    page.get_by_role("button", name="Re-cluster (background job)").click()
    page.get_by_text(re.compile(r"clustering job #\d+ started")).wait_for()
    assert until(lambda: len(store.clusterings()) == 3, 240), "no new clustering"
    new = taxonomy.current(store).clustering["clustering_id"]
    assert new not in (cur, small)
    page.get_by_text(re.compile(rf"Current clustering {new}")).first.wait_for(timeout=120_000)
    TIMES.setdefault("re-cluster job -> new map drawn", []).append(
        round(time.perf_counter() - t0, 2))
    map_ready(page)
    page.get_by_text("What changed against the previous clustering").wait_for()
    no_exception(page)
    shot(page, "10-after-recluster")


def test_jobs_page(app, page):
    """Progress moves without a reload; a job started from the form runs to the end."""
    url, store = app
    tick = jobs.submit(store, "ticks", {"n": 30, "seconds": 0.5, "tag": "browser"})
    page.goto(f"{url}/Jobs")
    page.get_by_text(re.compile(rf"#{tick} ticks · running · [1-9]\d*/30")).wait_for()
    page.get_by_text(re.compile(rf"#{tick} ticks · succeeded · 30/30")).wait_for()
    page.get_by_text("Start a job").click()
    choose(page, "stage", re.compile(r"^cluster: "))  # every stage, its one-line help
    # the form is the stage's Params: a changed field is what the job is given
    box = page.get_by_role("spinbutton", name="min_cluster_size")
    assert box.input_value() == str(ClusterParams.default("min_cluster_size"))
    box.fill("4")
    box.press("Tab")
    idle(page)
    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_text(re.compile(r"job #\d+ started")).wait_for()
    jid = int(re.search(r"#(\d+)", page.get_by_text(re.compile(r"job #\d+ started"))
                        .inner_text()).group(1))
    # a clustering counts its progress in percent (cluster.STEPS)
    page.get_by_text(re.compile(rf"#{jid} cluster · succeeded · 100/100")).wait_for(
        timeout=240_000)
    job = store.job(jid)
    assert job["status"] == "succeeded" and job["kind"] == "cluster"
    assert job["params"] == {"min_cluster_size": 4}  # what was changed, nothing else
    assert store.latest_clustering()["params"]["min_cluster_size"] == 4
    no_exception(page)
    shot(page, "11-jobs")


def test_settings_page(app, page):
    """An instructor saved on the Settings page is the one the app uses: written to the
    app's settings file, read back into the form after a reload, in use on the Overview."""
    url, store = app
    saved = store.path.parent / "settings.json"  # the server's SEI_SETTINGS (see server)
    saved.unlink(missing_ok=True)
    base, model = "http://127.0.0.1:9/v1", "browser-instructor"
    try:
        page.goto(f"{url}/Settings")
        page.get_by_text("in use: offline analyzer").wait_for()  # nothing configured yet
        page.get_by_label(re.compile(r"^endpoint")).fill(base)
        page.get_by_label(re.compile(r"^model \(empty")).fill(model)
        page.get_by_role("button", name="Save").click()
        page.get_by_text(f"saved to {saved}").wait_for()
        page.get_by_text(f"in use: openai:{model}@{base}").wait_for()
        assert json.loads(saved.read_text())["instructor_base_url"] == base
        assert json.loads(saved.read_text())["instructor_model"] == model
        page.reload()
        page.get_by_text(f"in use: openai:{model}@{base}").wait_for()
        idle(page)
        assert page.get_by_label(re.compile(r"^endpoint")).input_value() == base
        assert page.get_by_label(re.compile(r"^model \(empty")).input_value() == model
        no_exception(page)
        shot(page, "12-settings")
        page.goto(url)  # another page, another script run: the same instructor
        page.get_by_text(f"{model} @ {base}", exact=True).wait_for()
        no_exception(page)
    finally:
        saved.unlink(missing_ok=True)  # the next test's app has no instructor
