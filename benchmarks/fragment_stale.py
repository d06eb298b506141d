"""How often an Error map edit leaves a stale copy of the type editor's form on screen, with
the curation as a fragment (SEI_MAP_FRAGMENT=1) and as a whole-page rerun, side by side.

    python benchmarks/fragment_stale.py [--keyphrases 120] [--repeats 30]

Why: the fragment meets issue 22's 1 s goal (browser_edit.py) but stays opt-in, because
Chromium sometimes kept a replaced form beside the new one after a fragment run, and a title
typed into the stale box is lost. This counts it, so a Streamlit upgrade or a workaround can
be judged by a number. One store (corpus.py, clustered for real), one server per path on its
copy, one page at a time. Per repeat: "zoom to" a type, pick the same type in the type
editor (the editor's form is replaced by that type's), then rename it. After each run has
ended and half a second more (a copy the clean-up removes a moment late is not counted), the
title boxes in the editor are counted; a rename is lost when the store does not get the
typed title. No job runs (the job panel does not poll)."""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent)]
import browser_edit as be  # noqa: E402

from pipeline import taxonomy  # noqa: E402
from pipeline.store import Store  # noqa: E402

PATHS = {"fragment": {"SEI_MAP_FRAGMENT": "1"}, "whole-page": {"SEI_MAP_FRAGMENT": "0"}}
BOXES = ".st-key-type_editor input[aria-label='title']"


def run_path(page, store: Store, repeats: int) -> dict[str, int]:
    out = {"picks": 0, "stale after pick": 0, "renames": 0, "stale after rename": 0,
           "lost renames": 0}
    for i in range(repeats):
        vis = taxonomy.current(store).visible_types()
        t = vis[(i + 1) % len(vis)]  # a different type each time: the editor switches forms
        be.choose(page, "zoom to", re.compile(rf"^{t.type_id}: "))
        be.choose(page, be.EDIT_TYPE, re.compile(rf"^{t.type_id}: "))
        be.idle(page)
        time.sleep(0.5)
        out["picks"] += 1
        out["stale after pick"] += page.locator(BOXES).count() > 1
        title = f"stale check {i}"
        ed = page.locator(".st-key-type_editor")
        ed.get_by_label("title", exact=True).first.fill(title)
        ed.get_by_role("button", name="Rename").first.click()
        try:
            be.on_map(page, title).wait_for(timeout=20_000)
        except Exception:
            pass  # counted below, from the store
        be.idle(page)
        time.sleep(0.5)
        out["renames"] += 1
        out["stale after rename"] += page.locator(BOXES).count() > 1
        out["lost renames"] += taxonomy.current(store).types[t.type_id].title != title
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keyphrases", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=30)
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
                try:
                    page = br.new_context(viewport={"width": 1500, "height": 1100}).new_page()
                    page.sei_path = path  # the map is in the component's frame (browser_edit)
                    page.set_default_timeout(15_000)
                    page.goto(f"{url}/Error_map")
                    be.plot(page).locator(".js-plotly-plot .nsewdrag").first.wait_for(
                        timeout=120_000)
                    counts[path] = run_path(page, Store(db), args.repeats)
                    page.context.close()
                finally:
                    proc.terminate()
                    proc.wait(10)
            br.close()
    print(f"\n{args.keyphrases} keyphrases, {args.repeats} repeats per path "
          "(zoom to a type, pick it in the type editor, rename it):")
    for k in next(iter(counts.values())):
        print(f"  {k:19} " + "   ".join(f"{p} {c[k]:3d}" for p, c in counts.items()))


if __name__ == "__main__":
    main()
