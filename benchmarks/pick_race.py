"""Why a rename typed right after picking a type in the Error map's type editor was lost, and
that waiting for the type's own title box keeps it: both waits side by side, on both ways an
edit reruns (the curation as a fragment, the default, and the whole page), with the two cores
kept busy as under CI's full suite.

    python benchmarks/pick_race.py [--keyphrases 120] [--repeats 20] [--load 2]

A pick in the editor's picker asks the server for a rerun; the page shows no run until the
server says it runs, so "the page is idle" can hold before the run that replaces the
previous type's form has started. Per repeat, on one store (corpus.py, clustered for real),
one server per path, one page at a time: pick a type (a different one each time), wait
either for an idle page ("idle") or for that type's own title box and then an idle page
("own box", tests/test_browser.py::type_editor), count whether the editor still shows the
previous type, type a new title into the editor's rename form, press Rename, and read the
store: a rename is lost when the type did not get the typed title. The waits alternate
repeat by repeat, so both see the same load. --load starts that many busy processes."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent)]
import browser_edit as be  # noqa: E402

from pipeline.analysis import taxonomy  # noqa: E402
from pipeline.storage.store import Store  # noqa: E402

PATHS = {"fragment": {"SEI_MAP_FRAGMENT": "1"}, "whole-page": {"SEI_MAP_FRAGMENT": "0"}}
WAITS = ("idle", "own box")
FORMS = ".st-key-type_editor [data-testid='stForm']"


def run_path(page, store: Store, repeats: int) -> dict[str, dict[str, int]]:
    out = {w: {"picks": 0, "previous type shown": 0, "lost renames": 0} for w in WAITS}
    for i in range(repeats):
        wait = WAITS[i % 2]
        vis = taxonomy.current(store).visible_types()
        t = vis[(i + 1) % len(vis)]  # a different type each time: the editor switches forms
        if wait == "idle":
            be.choose(page, be.EDIT_TYPE, re.compile(rf"^{t.type_id}: "))
            be.idle(page)
            form = page.locator(FORMS).first  # the editor's rename form, whichever type
        else:
            form = be.type_form(page, t.type_id)
        shown = page.locator(f"{FORMS} input[aria-label='title']").evaluate_all(
            "es => es.map(e => e.value)")
        title = f"pick race {i}"
        form.get_by_label("title", exact=True).fill(title)
        form.get_by_role("button", name="Rename").click()
        try:
            be.on_map(page, title).wait_for(timeout=20_000)
        except Exception:
            pass  # counted below, from the store
        be.idle(page)
        out[wait]["picks"] += 1
        out[wait]["previous type shown"] += shown != [t.title]
        out[wait]["lost renames"] += taxonomy.current(store).types[t.type_id].title != title
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keyphrases", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--load", type=int, default=2, help="busy processes beside the run")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as d:
        base = Path(d) / "map.duckdb"
        be.clustered_store(base, args.keyphrases)  # (a Store holds no open connection)
        counts = {}
        with sync_playwright() as pw:
            br = pw.chromium.launch(executable_path=be.CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
            for path, flags in PATHS.items():
                db = Path(d) / path / "sei.duckdb"
                db.parent.mkdir()
                shutil.copy(base, db)
                proc, url = be.serve(db, flags, db.parent / "streamlit.log")
                load = []
                try:
                    page = br.new_context(viewport={"width": 1500, "height": 1100}).new_page()
                    page.sei_path = path  # the map is in the component's frame (browser_edit)
                    page.set_default_timeout(30_000)
                    page.goto(f"{url}/Error_map")
                    be.plot(page).locator(".js-plotly-plot .nsewdrag").first.wait_for(
                        timeout=120_000)
                    be.idle(page)
                    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                            for _ in range(args.load)]
                    counts[path] = run_path(page, Store(db), args.repeats)
                    page.context.close()
                finally:
                    for p in load:
                        p.kill()
                    proc.terminate()
                    proc.wait(10)
            br.close()
    print(f"\n{args.keyphrases} keyphrases, {args.repeats} picks + renames per path, waits "
          f"alternating, {args.load} busy processes:")
    for path, by_wait in counts.items():
        for wait, c in by_wait.items():
            print(f"  {path:10} wait for {wait:8} " + "   ".join(f"{k} {v:2d}"
                                                              for k, v in c.items()))


if __name__ == "__main__":
    main()
