"""Click -> redrawn map on the Error map, in Chromium: the page as it is now against the page
before issue 22's item 5 (git revision BEFORE), side by side in one run.

    python benchmarks/browser_edit.py [--sizes 120,10000] [--repeats 5] [--paths ...]

For each size, a store of that many keyphrases (corpus.py) clustered for real (MiniLM,
UMAP, HDBSCAN), copied once per path; one `streamlit run` server per path on its copy:
"before" (the dashboard of revision BEFORE, taken with `git archive`: st.plotly_chart
rebuilt at every edit, the whole page rerun, an editor per type; the pipeline is the same
code), "now" (SEI_MAP_FRAGMENT=1, the default: an edit reruns the curation alone, a fragment;
the map component updated in place; one type editor) and "now-whole-page" (the same code
with SEI_MAP_FRAGMENT=0: an edit reruns the whole page). Per repeat,
on each server in turn, its page alone open: rename the largest type, merge it with the
next, undo the merge;
each timed in the browser from the click to the first moment the map's document holds the
new title (a Plotly annotation; checked every 5 ms in the page). Same store, same edits,
same browser; the medians and their ratio to "before" are printed per edit."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from map_edit import build_store  # noqa: E402

from pipeline.analysis import taxonomy  # noqa: E402
from pipeline.models.serve import free_port  # noqa: E402
from pipeline.stages.cluster import ClusterParams, cluster  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
BEFORE = "acbfe43"  # the last revision before the map component (st.plotly_chart)
PATHS = {"before": {"SEI_MAP_FRAGMENT": "0"}, "now": {"SEI_MAP_FRAGMENT": "1"},
         "now-whole-page": {"SEI_MAP_FRAGMENT": "0"}}
BASELINE = "before"
FRAME = "iframe[src*='sei_map']"  # the component's frame
EDIT_TYPE = re.compile(r"^type to edit")  # the one type editor's picker
TIMEOUT_MS = 120_000


def checkout(rev: str, into: Path) -> Path:
    """The app at `rev` (git archive), with this checkout's models beside it."""
    into.mkdir()
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                         capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True)
    (into / "data").mkdir(exist_ok=True)
    (into / "data" / "models").symlink_to(ROOT / "data" / "models")
    return into


def serve(db: Path, flags: dict, log: Path, root: Path = ROOT) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, SEI_DB=str(db), SEI_SETTINGS=str(db.parent / "settings.json"),
               PYTHONPATH=str(root), **flags)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(root / "dashboard" / "Overview.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless",
         "true", "--browser.gatherUsageStats", "false"],
        cwd=root, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"streamlit did not start: {log.read_text()[-2000:]}")


def idle(page) -> None:
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']",
                           state="attached", timeout=TIMEOUT_MS)


def plot(page):
    """Where the map's plotly chart is: the component's frame, or the page itself."""
    return page.frame_locator(FRAME) if page.sei_path != BASELINE else page


def on_map(page, text: str):
    return plot(page).locator(".js-plotly-plot .annotation-text", has_text=text).first


# Timed in the page, not by Playwright's wait_for alone: its retries come at growing
# intervals (up to 500 ms), which once added 0.2-0.5 s to every figure here. The main page
# stamps the click (a capturing listener); the document that draws the map checks every
# 5 ms for an annotation with the new title and stamps the first check that sees it (a
# check runs when the page's main thread is free, as a frame is drawn). Both are Date.now()
# of one browser on one machine.
STAMP_CLICK = """() => { window.seiClicked = null;
  document.addEventListener('click', () => { window.seiClicked ??= Date.now(); },
                            {capture: true, once: true}); }"""
STAMP_SEEN = """(text) => {
  const norm = t => t.replace(/\\s+/g, ' ').trim().toLowerCase();
  const want = norm(text);
  const has = () => [...document.querySelectorAll('.js-plotly-plot .annotation-text')]
    .some(e => norm(e.textContent).includes(want));
  clearInterval(window.seiTimer);
  window.seiSeen = null;
  const before = has();
  window.seiTimer = setInterval(() => {
    if (has()) { window.seiSeen = Date.now(); clearInterval(window.seiTimer); } }, 5);
  return before; }"""
TEXTS = """() => [...document.querySelectorAll('.js-plotly-plot .annotation-text')]
  .map(e => e.textContent)"""


def map_doc(page):
    """The document (a Playwright Frame) that draws the map: the component's frame, or the
    page itself (the code before: st.plotly_chart)."""
    if page.sei_path == BASELINE:
        return page.main_frame
    return next(f for f in page.frames if "sei_map" in f.url)


def timed(page, click, text: str) -> float:
    """Seconds from the click to the first 5 ms check that finds `text` on the map."""
    doc = map_doc(page)
    if doc.evaluate(STAMP_SEEN, text):
        raise RuntimeError(f"{text!r} is on the map before the edit")
    page.evaluate(STAMP_CLICK)
    click()
    on_map(page, text).wait_for(timeout=TIMEOUT_MS)  # Playwright sees it
    try:
        doc.wait_for_function("() => window.seiSeen !== null", timeout=10_000)
    except Exception:
        raise RuntimeError(f"{text!r} is on the map for Playwright but the page's own check "
                           f"did not see it; map titles: {doc.evaluate(TEXTS)}") from None
    return (doc.evaluate("() => window.seiSeen") - page.evaluate("() => window.seiClicked")) / 1e3


def choose(page, box: str, pattern, tries: int = 6, typed: str | None = None) -> None:
    """Pick an option; a rerun can redraw the box under the open list (the option not
    shown, or gone under the click), so open it again. `typed` filters the list first: of
    hundreds of types only the first few are drawn in the open list."""
    for i in range(tries):
        idle(page)
        page.get_by_role("combobox", name=box).click()
        if typed:
            page.keyboard.type(typed)
        opt = page.get_by_role("option", name=pattern).first
        try:
            opt.wait_for(state="visible", timeout=5_000)
            opt.click(timeout=5_000)
        except Exception:
            page.keyboard.press("Escape")
            if i == tries - 1:
                raise
            continue
        page.keyboard.press("Escape")
        page.get_by_role("listbox").wait_for(state="hidden")
        return


def title_form(page, type_id: int):
    """The type editor's rename form for this type (its title box is keyed by the type)."""
    return page.locator(".st-key-type_editor [data-testid='stForm']").filter(
        has=page.locator(f"[class*='st-key-title-{type_id}-']"))


def type_form(page, type_id: int):
    """Open the one type editor on a type; its rename form. The pick's rerun starts after
    the click returns and the page reads as idle until the server says it runs, so this
    waits for the type's own title box (an idle page alone could still show the previous
    type's form, which the run then replaces: tests/test_browser.py::type_editor)."""
    choose(page, EDIT_TYPE, re.compile(rf"^{type_id}: "), typed=f"{type_id}: ")
    form = title_form(page, type_id)
    form.wait_for(timeout=TIMEOUT_MS)
    idle(page)
    return form


def edits(page, a: int, b: int, i: int, tag: str) -> dict[str, float]:
    """Rename type a, merge a and b, undo the merge: seconds from click to redrawn map."""
    out = {}
    idle(page)
    if page.sei_path == BASELINE:  # an editor per type, in expanders
        exp = page.locator("[data-testid='stExpander']").filter(
            has=page.locator("summary", has_text=re.compile(rf"(?<!\d){a}: ")))
        if not exp.get_by_label("title", exact=True).is_visible():
            exp.locator("summary").click()
    else:  # one type editor, opened on the type through its picker
        exp = type_form(page, a)
    name = f"renamed {tag} {i}"
    exp.get_by_label("title", exact=True).fill(name)
    out["rename"] = timed(page, lambda: exp.get_by_role("button", name="Rename").click(), name)
    box = page.locator("[data-testid='stMultiSelect']").filter(has_text="merge types")
    for t in (a, b):
        # the code before can keep a type's chip in the box from the last repeat's merge
        if not box.get_by_text(re.compile(rf"^{t}: ")).count():
            choose(page, "merge types", re.compile(rf"^{t}: "), typed=f"{t}: ")
    idle(page)  # a fragment rerun leaves the old form in the page until it ends
    page.get_by_label("title of the merged type (optional)").fill(f"merged {tag} {i}")
    out["merge"] = timed(page, lambda: page.get_by_role("button", name="Merge", exact=True)
                         .click(), f"merged {tag} {i}")
    idle(page)
    out["undo"] = timed(page, lambda: page.get_by_role("button", name="Undo last edit").click(),
                        name)
    return out


def clustered_store(path: Path, n: int):
    """A store of n keyphrases (corpus.py), clustered for real."""
    s = build_store(path, n)
    cluster(s, ClusterParams(min_cluster_size=5 if n < 1000 else 15), analysis_id="an-bench")
    return s


def one_size(n: int, repeats: int, work: Path, sync, paths: list[str]) -> dict:
    base = work / f"map-{n}.duckdb"
    s = clustered_store(base, n)
    tax = taxonomy.current(s)
    a, b = [t.type_id for t in sorted(tax.visible_types(), key=lambda t: -len(t.members))[:2]]
    print(f"{n} keyphrases: {len(tax.points)} points, {len(tax.visible_types())} types",
          flush=True)
    del s
    servers, times = {}, {p: {} for p in paths}
    try:
        for i, path in enumerate(paths):
            db = work / f"{n}-{i}" / "sei.duckdb"
            db.parent.mkdir()
            shutil.copy(base, db)
            root = checkout(BEFORE, db.parent / "app") if path == BASELINE else ROOT
            servers[path] = serve(db, PATHS[path], db.parent / "streamlit.log", root)
        with sync() as pw:
            br = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
            pages = {}
            for path in servers:
                pg = br.new_context(viewport={"width": 1500, "height": 1100}).new_page()
                pg.set_default_timeout(TIMEOUT_MS)
                pg.sei_path = path
                pages[path] = pg
            for i in range(repeats):
                for j, (path, pg) in enumerate(list(pages.items())):  # the paths alternate
                    try:
                        # Only the page being timed is open: an open page's job panel polls
                        # (every 2 s in the code before), which would load the others' runs.
                        pg.goto(f"{servers[path][1]}/Error_map")
                        plot(pg).locator(".js-plotly-plot .nsewdrag").first.wait_for()
                        got = edits(pg, a, b, i, f"p{j}")
                        pg.goto("about:blank")
                    except Exception as e:  # told, with a screenshot; the other paths go on
                        shot = ROOT / "artifacts" / f"failed-{n}-{path}.png"
                        shot.parent.mkdir(exist_ok=True)
                        pg.screenshot(path=str(shot), full_page=True)
                        if path == BASELINE:
                            raise
                        print(f"  {path} stopped in repeat {i + 1}: {str(e).splitlines()[0]} "
                              f"(screenshot {shot})", flush=True)
                        del pages[path]
                        times[path] = {}
                        continue
                    for k, v in got.items():
                        times[path].setdefault(k, []).append(v)
            br.close()
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="120,10000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--paths", default=",".join(PATHS), help=f"of {', '.join(PATHS)}")
    args = ap.parse_args()
    paths = args.paths.split(",")
    if BASELINE not in paths or not set(paths) <= set(PATHS):
        ap.error(f"--paths: {BASELINE} and any of {', '.join(PATHS)}")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as d:
        for n in map(int, args.sizes.split(",")):
            times = one_size(n, args.repeats, Path(d), sync_playwright, paths)
            print(f"\n{n} keyphrases, median of {args.repeats} (click -> map redrawn, "
                  f"{os.cpu_count()} cores):")
            for k in times[BASELINE]:
                base = statistics.median(times[BASELINE][k])
                cells = [f"{BASELINE} {base:5.2f} s"] + [
                    f"{p} {statistics.median(times[p][k]):5.2f} s "
                    f"({base / statistics.median(times[p][k]):3.1f}x)"
                    for p in paths if p != BASELINE and times[p]]
                print(f"  {k:7} " + "   ".join(cells))
            for p in (p for p in paths if times[p]):
                worst = max(statistics.median(v) for v in times[p].values())
                print(f"  {p}: goal median <= 1 s {'met' if worst <= 1 else 'NOT met'} "
                      f"(worst edit median {worst:.2f} s)", flush=True)


if __name__ == "__main__":
    main()
