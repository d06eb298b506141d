"""Each dashboard page under streamlit's AppTest, on a real store with real clusters of
the real model's bad cases. Edits made through widgets must land in DuckDB."""

import base64
import json
import re
import sys
import time

import numpy as np
import pytest
from conftest import three_types

from pipeline.analysis import taxonomy
from pipeline.core.config import ROOT
from pipeline.loop import jobs
from pipeline.models import settings
from pipeline.stages.extract import extract

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

DASH = ROOT / "dashboard"
sys.path.insert(0, str(DASH))  # as `streamlit run` does for the main script's folder


def page(name: str) -> AppTest:
    path = DASH / name if name == "Overview.py" else DASH / "pages" / name
    at = AppTest.from_file(str(path), default_timeout=120)
    return at.run()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_overview_shows_runs_and_accuracy(clustered):
    at = ok(page("Overview.py"))
    run = clustered.runs()[0]
    df = at.dataframe[1].value  # counts, then runs
    assert list(df["run_id"]) == [run["run_id"]]
    assert df["accuracy"][0] == f"{100 * run['accuracy']:.1f}%"
    assert "offline analyzer" in " ".join(t.value for t in at.text)


@pytest.mark.slow
def test_overview_quick_start_launches_a_job(store):
    at = ok(page("Overview.py"))
    assert "No runs yet" in at.info[1].value  # after the guided path's "Next: extract"
    at.number_input[0].set_value(8)
    at.number_input[1].set_value(32)
    at.button[0].click().run()  # the form's submit button
    ok(at)
    [j] = store.jobs()
    assert j["kind"] == "quickstart" and j["params"]["limit"] == 8
    jobs.cancel(store, j["job_id"], wait=30)
    assert store.job(j["job_id"])["status"] == "cancelled"


def test_overview_leads_to_the_next_step_of_the_loop(clustered, store):
    """The guided path: on a clustered store the next step is synthesis, with a link to its
    page; on an empty one it is extraction (the quick start)."""
    import common

    at = ok(page("Overview.py"))
    marks = [m.value for m in at.markdown if "**" in m.value][:7]
    done, nxt, todo = (":material/check_circle:", ":material/arrow_forward:",
                       ":material/radio_button_unchecked:")
    assert marks == [f"{done} **extract**", f"{done} **analyze**", f"{done} **curate**",
                     f"{nxt} **synthesize**", f"{todo} **select**", f"{todo} **train**",
                     f"{todo} **evaluate**"]
    assert at.info[0].value.startswith("Next: synthesize, on the Synthesis page")
    assert all((DASH / f).is_file() for f in common.PAGES.values())


def test_overview_on_an_empty_store_says_extract_first(store):
    at = ok(page("Overview.py"))
    assert at.info[0].value.startswith("Next: extract.")
    first = [m.value for m in at.markdown if "**" in m.value][0]
    assert first == ":material/arrow_forward: **extract**"


def test_bad_cases_filters(clustered):
    at = ok(page("1_Bad_cases.py"))
    n_bad = clustered.count("bad_cases")
    n_all = clustered.count("generations")
    assert f"{n_bad} of {n_all} generations" in " ".join(c.value for c in at.caption)
    at.selectbox(key="f_verdict").set_value("all").run()
    assert f"{n_all} of {n_all} generations" in " ".join(c.value for c in ok(at).caption)
    # Filter by an error type: only cases with a keyphrase of that type remain.
    tax = taxonomy.current(clustered)
    t = tax.visible_types()[0]
    at.selectbox(key="f_verdict").set_value("wrong only")
    at.selectbox[2].set_value(f"{t.type_id}: {t.title}").run()
    cases = {p["case_id"] for p in tax.points if p["type"] == t.type_id and not p["excluded"]}
    assert f"{len(cases)} of {n_all} generations" in " ".join(c.value for c in ok(at).caption)


def test_bad_cases_show_what_analysis_reads_unless_asked(store, scripted):
    """Issue 37, item 5: an evaluation of the base model on test problems listed its wrong
    answers as bad cases beside the extraction's. By default the page shows the extraction
    runs' cases only (what analysis reads: never a test item), with split, run kind and
    model as columns; "all" adds the evaluation's, labelled as such."""
    from pipeline.problems.data import import_demo
    from pipeline.stages.evaluate import EvalParams, evaluate

    import_demo(store, 12, 8)
    extract(store, "demo", "train", limit=12)
    evaluate(store, EvalParams(iteration=0, sets=["demo/test"], train_check=False))
    gens = store.generations_view()
    wrong = {k: [g for g in gens if g["run_kind"] == k and not g["correct"]]
             for k in ("extract", "evaluate")}
    assert wrong["extract"] and wrong["evaluate"]  # the scripted target misses some of each
    at = ok(page("1_Bad_cases.py"))
    table = at.dataframe[0].value
    assert {"split", "run_kind", "model"} <= set(table.columns)
    assert set(table["split"]) == {"train"} and set(table["run_kind"]) == {"extract"}
    assert len(table) == len(wrong["extract"])
    at.selectbox(key="f_runs").set_value("all, evaluations included").run()
    table = ok(at).dataframe[0].value
    assert len(table) == len(wrong["extract"]) + len(wrong["evaluate"])
    assert set(table[table["run_kind"] == "evaluate"]["split"]) == {"test"}
    assert set(table["model"]) == {"scripted-test-target"}


def _array(v):
    """Plotly sends numpy columns as typed arrays: {"dtype": "f8", "bdata": base64}."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
    return v


def map_fig(at: AppTest) -> dict:
    """The figure the Error map's component holds after this run: this run's skeleton with
    its arrays, and those sent in earlier runs (map_view.py sends an array once). Arrays
    sent in runs not read here are asked for again, as a new frame in the browser does."""
    import map_view

    cache = at.__dict__.setdefault("map_blobs", {})
    for _ in range(2):
        [el] = at.get("component_instance")
        args = json.loads(el.proto.json_args)
        cache.update(args["blobs"])
        try:
            return map_view.join(args["figure"], cache)
        except KeyError:
            at.session_state["_map_sent"] = set()
            ok(at.run())
    raise AssertionError("the map's arrays did not arrive")


def w(elements, name: str):
    """The widget whose key is `name` in its current generation (the Error map versions
    the keys of widgets that show stored values, so every edit draws them afresh)."""
    return next(e for e in elements if e.key and e.key.split("~")[0] == name)


def merge_button(at: AppTest):
    return at.button[[x.label for x in at.button].index("Merge")]


def test_error_map_rename_merge_undo(clustered):
    at = ok(page("2_Error_map.py"))
    tax = taxonomy.current(clustered)
    ts = tax.visible_types()
    assert len(ts) >= 2
    assert len(at.get("component_instance")) == 1
    a, b = ts[0].type_id, ts[1].type_id
    assert json.loads(at.get("component_instance")[0].proto.json_args)["blobs"]  # all, once
    w(at.text_input, f"title-{a}").set_value("carry slip in totals")
    at.button(key=f"rename-{a}").click().run()
    ok(at)
    assert taxonomy.current(clustered).types[a].title == "carry slip in totals"
    # a rename moves no dot: the map is sent no array again, only its skeleton
    assert json.loads(at.get("component_instance")[0].proto.json_args)["blobs"] == {}
    assert clustered.edits()[-1]["op"] == "rename"
    w(at.multiselect, "merge_ids").set_value([a, b])
    merge_button(at).click().run()
    ok(at)
    now = taxonomy.current(clustered)
    assert now.types[b].merged_into == a or now.types[a].merged_into == b
    at.button(key="undo").click().run()
    ok(at)
    assert all(t.merged_into is None for t in taxonomy.current(clustered).types.values())


def test_map_sends_each_array_once(clustered):
    """map_view.py: the skeleton plus only the arrays not sent before. A rename sends none,
    a merge those of the merged trace, the undo of it none (all seen); joined again, the
    figure is plotly's own JSON of it."""
    import common
    import map_view
    import plotly.io

    def spec(tax):
        """plotly's JSON of the map, in the component's plain white theme."""
        d = json.loads(plotly.io.to_json(common.build_map_figure(tax), validate=False))
        d["layout"]["template"] = json.loads(plotly.io.json.to_json_plotly(
            plotly.io.templates["plotly_white"].to_plotly_json()))
        return d

    sent, seen = set(), {}
    tax = taxonomy.current(clustered)
    first = map_view.args_of(common.map_spec(tax), sent)
    seen.update(first["blobs"])
    assert len(first["blobs"]) >= 3 and map_view.join(first["figure"], seen) == \
        {"data": spec(tax)["data"], "layout": spec(tax)["layout"]}
    a, b = [t.type_id for t in tax.visible_types()[:2]]
    taxonomy.rename(clustered, a, "renamed once", author="test")
    tax = taxonomy.current(clustered)
    renamed = map_view.args_of(common.map_spec(tax), sent)
    assert renamed["blobs"] == {}
    assert map_view.join(renamed["figure"], seen)["layout"] == spec(tax)["layout"]
    full = len(json.dumps(spec(tax)))
    assert len(json.dumps(renamed)) < full / 2  # what goes over the wire for a rename
    taxonomy.merge(clustered, [a, b], author="test")
    tax = taxonomy.current(clustered)
    merged = map_view.args_of(common.map_spec(tax), sent)
    seen.update(merged["blobs"])
    assert merged["blobs"] and map_view.join(merged["figure"], seen)["data"] == spec(tax)["data"]
    taxonomy.undo(clustered, author="test")
    undone = map_view.args_of(common.map_spec(taxonomy.current(clustered)), sent)
    assert undone["blobs"] == {}
    assert map_view.join(undone["figure"], seen)["data"] == \
        map_view.join(renamed["figure"], seen)["data"]  # the map as before the merge


def test_error_map_edits_one_type_at_a_time(clustered):
    """One type editor, on the largest type at first; the picker opens any other, and the
    choice holds through an edit of that type (its title changes the picker's labels)."""
    from conftest import three_types

    ts = three_types(clustered)
    at = ok(page("2_Error_map.py"))
    titles = [e.key.split("~")[0] for e in at.text_input if e.key and e.key.startswith("title-")]
    assert titles == [f"title-{ts[0].type_id}"]
    picker = w(at.selectbox, "edit_type")
    assert picker.options == [f"{t.type_id}: {t.title}" for t in ts]
    small = ts[-1].type_id
    picker.set_value(small).run()
    ok(at)
    w(at.text_input, f"title-{small}").set_value("edited through the picker")
    at.button(key=f"rename-{small}").click().run()
    ok(at)
    assert taxonomy.current(clustered).types[small].title == "edited through the picker"
    assert w(at.selectbox, "edit_type").value == small  # still open on it
    assert w(at.text_input, f"title-{small}").value == "edited through the picker"


def test_error_map_draws_dots_titles_and_distinct_colours(clustered):
    import common

    at = ok(page("2_Error_map.py"))
    tax = taxonomy.current(clustered)
    fig = map_fig(at)
    live = sorted(p["kp_id"] for p in tax.points if not p["excluded"])
    # One dot per distinct keyphrase of a type, named by its first keyphrase id; a dot of
    # n identical keyphrases is drawn larger than a dot of one.
    reps = [int(k) for tr in fig["data"] for k in _array(tr["customdata"])]
    assert sorted(reps) == sorted(d["kp_id"] for d in taxonomy.dots(tax))
    assert len(reps) < len(live) and taxonomy.expand(reps, tax) == live
    counts = {d["kp_id"]: len(d["kp_ids"]) for d in taxonomy.dots(tax)}
    sizes = {int(k): float(z) for tr in fig["data"] for k, z in
             zip(_array(tr["customdata"]), _array(tr["marker"]["size"]))}
    one = min(sizes[k] for k in sizes if counts[k] == 1 and by_type(tax, k) is not None)
    big = max(counts, key=counts.get)
    assert counts[big] > 1 and sizes[big] > one
    # Titles of the largest types drawn on the map.
    notes = [n["text"] for n in fig["layout"]["annotations"]]
    top = [t for t in tax.visible_types() if not t.excluded][:3]
    assert all(common._snip(t.title, 32) in notes for t in top), notes
    # No two types share a colour; hovers carry no HTML entities for quotes.
    colours = [tr["marker"]["color"] for tr in fig["data"] if tr["name"] != "unassigned (noise)"]
    assert len(set(colours)) == len(colours) == len([t for t in tax.visible_types()])
    assert not any("&quot;" in h or "&#x27;" in h for tr in fig["data"] for h in tr["hovertext"])


def by_type(tax, kp_id):
    return next(p["type"] for p in tax.points if p["kp_id"] == kp_id)


def test_type_colours_never_repeat():
    import common

    from pipeline.analysis.taxonomy import Taxonomy, TypeView

    n = len(common.COLOURS)
    ids = [5, 5 + n, 5 + 2 * n, 6, 7 + n]  # ids whose colours would collide by id alone
    tax = Taxonomy(None, [], {i: TypeView(i, f"t{i}", None, None, members=[i]) for i in ids},
                   0, [])
    cols = common.type_colours(tax)
    assert len(set(cols.values())) == len(ids)
    assert cols[5] == 5 % n  # the smallest id keeps its own colour


def test_merge_undo_merge_again_and_fresh_titles(clustered):
    """Issue 12's edit bugs: a stale merge chip after undo, an old title left in the box
    after a titled merge (and Rename writing it back), widget values kept after edits."""
    ts = three_types(clustered)
    at = ok(page("2_Error_map.py"))
    a, b, c = ts[0].type_id, ts[1].type_id, ts[2].type_id
    w(at.selectbox, "edit_type").set_value(c).run()
    w(at.text_area, f"desc-{c}").set_value("typed but not saved")
    w(at.multiselect, "merge_ids").set_value([a, b])
    w(at.text_input, "merge_title").set_value("merged under a new title")
    merge_button(at).click().run()
    ok(at)
    into = clustered.edits()[-1]["payload"]["into"]
    assert w(at.multiselect, "merge_ids").value == []
    assert w(at.text_input, "merge_title").value == ""
    assert w(at.selectbox, "edit_type").value == into  # the editor opens on the merged type
    assert w(at.text_input, f"title-{into}").value == "merged under a new title"
    at.button(key=f"rename-{into}").click().run()  # Rename must not write an old title back
    ok(at)
    assert taxonomy.current(clustered).types[into].title == "merged under a new title"
    w(at.selectbox, "edit_type").set_value(c).run()
    assert w(at.text_area, f"desc-{c}").value == (ts[2].description or "")  # typed text gone
    at.button(key="undo").click().run()  # the rename
    at.button(key="undo").click().run()  # the merge
    ok(at)
    assert w(at.multiselect, "merge_ids").value == []
    assert not at.error, [e.value for e in at.error]
    w(at.multiselect, "merge_ids").set_value([a, c])
    merge_button(at).click().run()
    ok(at)
    assert not at.error, [e.value for e in at.error]
    last = clustered.edits()[-1]
    assert last["op"] == "merge" and set(last["payload"]["type_ids"]) == {a, c}
    assert "merged types" in " ".join(x.value for x in at.success)


def test_error_map_switches_clusterings(clustered):
    from pipeline.stages.analyze import analyze_bad_cases
    from pipeline.stages.cluster import ClusterParams, cluster

    cur = taxonomy.current(clustered).clustering["clustering_id"]
    aid = analyze_bad_cases(clustered, run_id=clustered.runs()[0]["run_id"], instructor="offline",
                  limit=8)
    small = cluster(clustered, ClusterParams(min_cluster_size=2), analysis_id=aid)
    at = ok(page("2_Error_map.py"))
    assert "was not made current" in at.warning[0].value
    at.button(key="held_use").click().run()
    ok(at)
    assert taxonomy.current(clustered).clustering["clustering_id"] == small["clustering_id"]
    fig = map_fig(at)
    assert sum(len(_array(tr["customdata"])) for tr in fig["data"]) == len(
        taxonomy.dots(taxonomy.current(clustered)))
    w(at.selectbox, "cl_pick").set_value(cur).run()
    at.button(key="cl_use").click().run()
    ok(at)
    assert taxonomy.current(clustered).clustering["clustering_id"] == cur
    assert not at.warning or "was not made current" not in at.warning[0].value


def test_case_on_the_map_and_back(clustered):
    tax = taxonomy.current(clustered)
    case = next(p["case_id"] for p in tax.points if p["type"] is not None)
    at = AppTest.from_file(str(DASH / "pages" / "1_Bad_cases.py"), default_timeout=120)
    at.query_params["case"] = str(case)
    ok(at.run())
    assert f"bad case {case}" in at.subheader[0].value
    assert f"Error_map?case={case}" in " ".join(m.value for m in at.markdown)
    at.text_input(key="f_text").set_value("zzz-no-such-text").run()  # a filter change
    ok(at)
    assert not at.subheader and "0 of" in at.caption[1].value
    at = AppTest.from_file(str(DASH / "pages" / "2_Error_map.py"), default_timeout=120)
    at.query_params["case"] = str(case)
    ok(at.run())
    fig = map_fig(at)
    ring = next(tr for tr in fig["data"] if tr["name"] == "shown case")
    kps = {p["kp_id"] for p in tax.points if p["case_id"] == case}
    assert len(_array(ring["x"])) == len({(p["text"], p["type"]) for p in tax.points
                                          if p["kp_id"] in kps})
    assert f"Bad_cases?case={case}" in " ".join(m.value for m in at.markdown)
    text = " ".join(m.value for m in at.markdown)
    assert ":orange-background[" in text  # its evidence highlighted in the output


@pytest.mark.slow
def test_jobs_page_shows_progress_and_cancels(store):
    jid = jobs.submit(store, "ticks", {"n": 40, "seconds": 0.25, "tag": "apptest"})
    at = ok(page("8_Jobs.py"))
    deadline = time.monotonic() + 60
    while not (store.job(jid)["done"] or 0):
        assert time.monotonic() < deadline, f"no progress in 60 s: {store.job(jid)}"
        time.sleep(0.3)
    lo = store.job(jid)["done"]  # the job moves on while the page runs: read both sides
    at.run()
    hi = store.job(jid)["done"]
    [bar] = ok(at).get("progress")  # the one job, its bar
    m = re.fullmatch(rf"#{jid} ticks · running · (\d+)/40(, ETA \d+s)?", bar.proto.text)
    assert m, bar.proto.text
    shown = int(m.group(1))
    assert lo <= shown <= hi, (lo, shown, hi)  # the store's count at the page's run
    assert bar.proto.value == int(shown / 40 * 100)  # the bar is as far as its label
    at.button(key=f"cancel-{jid}").click().run()
    ok(at)
    j = jobs.wait(store, jid, timeout=30)
    assert j["status"] == "cancelled" and j["done"] < 40


def test_settings_never_store_the_key(store, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-123")
    at = ok(page("9_Settings.py"))
    at.text_input[0].set_value("http://127.0.0.1:9/v1")
    at.text_input[1].set_value("my-instructor")
    at.button[0].click().run()
    ok(at)
    saved = settings.path().read_text()
    assert "my-instructor" in saved and "sk-test" not in saved
    shown = " ".join(str(e.value) for els in (at.text, at.caption, at.success) for e in els)
    assert "sk-test" not in shown and "OPENAI_API_KEY is set" in shown
    assert "openai:my-instructor@http://127.0.0.1:9/v1" in shown
    settings.path().unlink()


def test_two_stores_in_one_folder_keep_their_own_settings(tmp_path, monkeypatch):
    """Settings live beside their store (issue 37, item 7): saved on the Settings page of
    one store, they are not the settings of another store in the same folder; a shared
    `settings.json` of an earlier version is read until the store's own is saved."""
    monkeypatch.delenv("SEI_SETTINGS", raising=False)
    (tmp_path / "settings.json").write_text(json.dumps({"instructor_model": "old-shared"}))
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    monkeypatch.setenv("SEI_DB", str(a))
    assert settings.load().instructor_model == "old-shared"
    at = ok(page("9_Settings.py"))
    at.text_input[1].set_value("instructor-of-a")
    at.button[0].click().run()
    ok(at)
    assert (tmp_path / "a.settings.json").exists()
    assert settings.load().instructor_model == "instructor-of-a"
    monkeypatch.setenv("SEI_DB", str(b))
    assert settings.load().instructor_model == "old-shared"  # b's own: none saved yet
    at = ok(page("9_Settings.py"))
    assert at.text_input[1].value == "old-shared"
    assert str(tmp_path / "b.settings.json") in " ".join(c.value for c in at.caption)


def test_edit_log_undo_any_redo_and_retitle(clustered):
    ts = taxonomy.current(clustered).visible_types()
    a, b = ts[0], ts[1]
    e1 = taxonomy.rename(clustered, a.type_id, "first by hand")
    taxonomy.rename(clustered, b.type_id, "second by hand")
    at = ok(page("2_Error_map.py"))
    log = at.dataframe[-1].value
    assert list(log["what"][:2]) == [f"renamed type {b.type_id} to “second by hand”",
                                     f"renamed type {a.type_id} to “first by hand”"]
    assert at.button(key="redo").disabled
    w(at.selectbox, "undo_pick").set_value(e1).run()
    at.button(key="undo_one").click().run()
    ok(at)
    now = taxonomy.current(clustered)
    assert now.types[a.type_id].title == a.title and now.types[b.type_id].title == \
        "second by hand"
    assert not at.button(key="redo").disabled
    at.button(key="redo").click().run()
    ok(at)
    assert taxonomy.current(clustered).types[a.type_id].title == "first by hand"
    # Retitle is a job (with an instructor it is one call per type): it recomputes every
    # title but the one a person gave.
    for t in taxonomy.current(clustered).visible_types():
        if t.type_id != a.type_id:
            clustered.set_type_title(t.type_id, "stale", None, "auto")
    at.button(key="retitle").click().run()
    ok(at)
    jid = int(re.search(r"retitle job #(\d+) started", at.success[0].value).group(1))
    job = jobs.wait(clustered, jid, timeout=300)
    assert job["status"] == "succeeded", jobs.readable(job)
    tx = taxonomy.current(clustered)
    assert tx.types[a.type_id].title == "first by hand"  # a person's title is kept
    assert all(t.title != "stale" for t in tx.visible_types())
    assert at.get("download_button")  # Export


def test_error_map_colours_by_dataset_and_analyzer(clustered):
    """Colour by another attribute: one trace per value, every dot in exactly one, the
    legend on; back to type colouring, the legend off again."""
    at = ok(page("2_Error_map.py"))
    tax = taxonomy.current(clustered)
    dots = sorted(d["kp_id"] for d in taxonomy.dots(tax))
    for by in ("dataset", "analyzer"):
        at.selectbox(key="colour_by").set_value(by).run()
        ok(at)
        fig = map_fig(at)
        values = taxonomy.point_attribute(tax, by)
        assert values  # the store has points to colour
        names = sorted(tr["name"] for tr in fig["data"])
        assert names == sorted(f"{by}: {v}" for v in set(values[k] for k in dots))
        drawn = [int(k) for tr in fig["data"] for k in _array(tr["customdata"])]
        assert sorted(drawn) == dots
        for tr in fig["data"]:
            value = tr["name"].split(": ", 1)[1]
            assert {values[int(k)] for k in _array(tr["customdata"])} == {value}
        assert fig["layout"]["showlegend"] is True
    at.selectbox(key="colour_by").set_value("type").run()
    fig = map_fig(ok(at))
    assert fig["layout"]["showlegend"] is False
    with pytest.raises(ValueError, match="cannot colour by 'length'"):
        taxonomy.point_attribute(tax, "length")


def test_a_type_title_sits_on_its_densest_island_not_between_two():
    """A type in two islands of 20 points, 20 apart: the median of x lies in the empty
    gap, the title spot on an island. With islands of 20, 20 and 30 points, the title
    goes on the largest (not on the middle one, where the median is)."""
    import common

    rng = np.random.default_rng(1)
    left, right = rng.normal(0, 0.3, 20), rng.normal(20, 0.3, 20)
    tx, ty = np.concatenate([left, right]), rng.normal(0, 0.3, 40)
    assert left.max() < np.median(tx) - 5 and np.median(tx) + 5 < right.min()  # in the gap
    x = tx[common.dense_spot(tx, ty, bw=1.0)]
    assert left.min() <= x <= left.max() or right.min() <= x <= right.max()
    tx3 = np.concatenate([left, rng.normal(10, 0.3, 20), rng.normal(20, 0.3, 30)])
    i = common.dense_spot(tx3, rng.normal(0, 0.3, 70), bw=1.0)
    assert i >= 40  # a point of the largest island (the median is on the middle one)


@pytest.mark.slow  # a job process that starts, runs and is cancelled: ~35 s under load
def test_a_quick_start_is_launched_once_and_can_be_cancelled_from_its_panel(
        store, scripted_slow):
    """Issue 37, item 1: an Enter in a quick-start field submitted the form, and its button
    then launched a duplicate. A launch of a job whose twin (same kind, same parameters)
    is queued or running starts nothing and says so; the Overview's button is disabled
    while its job runs; the panel beside it has a Cancel that ends it."""
    def twice():
        import common

        s = common.store()
        a = common.submit(s, "ticks", {"n": 50, "seconds": 0.2, "tag": "twice"})
        b = common.submit(s, "ticks", {"n": 50, "seconds": 0.2, "tag": "twice"})
        common.st.write(f"ids {a} {b}")

    at = ok(AppTest.from_function(twice, default_timeout=120).run())
    [t] = store.jobs()
    assert f"ids {t['job_id']} {t['job_id']}" in [m.value for m in at.markdown]
    assert at.info[0].value.startswith(f"Job #{t['job_id']} (ticks) with these parameters "
                                       "is already")
    jobs.cancel(store, t["job_id"], wait=30)

    at = ok(page("Overview.py"))
    next(b for b in at.button if b.label == "Launch quick start").click().run()
    ok(at)
    [j] = [x for x in store.jobs() if x["kind"] == "quickstart"]
    assert j["status"] in jobs.ACTIVE
    at.run()
    assert next(b for b in at.button if b.label == "Launch quick start").disabled
    at.button(key=f"cancel-{j['job_id']}").click().run()
    ok(at)
    assert jobs.wait(store, j["job_id"], timeout=60)["status"] == "cancelled"
    at.run()
    assert not next(b for b in at.button if b.label == "Launch quick start").disabled


def test_overview_demo_loop_button_submits_iteration_1_and_shows_its_progress(store):
    """Issue 24, item 7: the one click for the whole demo loop (the loop itself runs in
    test_loop and in the browser path): on a fresh store the page estimates every stage,
    the button submits iteration 1 of the demo preset as one iterate job, the page shows
    that job's bar as the store has it, and links to the Iterations page. The job is then
    cancelled and must end as cancelled."""
    import common

    from pipeline.loop import views
    from pipeline.loop.iterate import STEPS
    from pipeline.loop.presets import resolve

    demo = resolve("demo", None, {"iterations": 1})
    at = ok(page("Overview.py"))
    est = views.iterate_estimate(store, demo)
    assert est["parts"]  # a fresh store: every stage is still to run
    want = f"Estimate: ~{common.duration(60 * est['minutes'])} on this machine."
    assert [m.value for m in at.markdown if "Estimate: ~" in m.value][0].endswith(want)
    at.button(key="demo_loop").click().run()
    ok(at)
    [j] = store.jobs()
    jid = j["job_id"]
    assert j["kind"] == "iterate"
    assert j["params"] == json.loads(json.dumps(demo.resolved()))
    assert j["params"]["iterations"] == 1 and j["params"]["preset"] == "demo"
    assert at.success[0].value.startswith(f"Job #{jid} (iterate) started")
    # Once the job has reported its first step, the page's bar is the store's row.
    deadline = time.monotonic() + 120
    while not store.job(jid)["step"]:
        assert time.monotonic() < deadline, f"no step in 120 s: {store.job(jid)}"
        time.sleep(0.3)
    lo = store.job(jid)
    at.run()
    hi = store.job(jid)
    [bar] = ok(at).get("progress")
    assert bar.proto.text in (jobs.job_line(lo), jobs.job_line(hi)), bar.proto.text
    assert bar.proto.text.startswith(f"#{jid} iterate · running · ")
    assert hi["total"] == len(STEPS) + 2  # one bar over the whole loop: base eval + 7 + check
    assert any(c.value.startswith(hi["step"]) for c in at.caption), hi["step"]
    [link] = at.get("page_link")  # Overview is the app's main script: a real page link
    assert (link.proto.page, link.proto.label) == (
        "Iterations", "See the accuracy chart on the Iterations page")
    jobs.cancel(store, jid)  # it stops at its next safe point (after loading the model)
    j = jobs.wait(store, jid, timeout=60)  # TimeoutError past it
    assert j["status"] == "cancelled", j


@pytest.mark.parametrize("name", ["1_Bad_cases.py", "2_Error_map.py", "3_Review.py"])
def test_an_empty_store_leads_to_the_page_that_fills_it_not_to_the_cli(store, name):
    """Issue 22, item 7: every "do this first" is a link to the page that does it."""
    at = ok(page(name))
    said = " ".join(i.value for i in at.info)
    assert "quick start" in said and "`sei " not in said
    # run alone (AppTest), st.page_link falls back to a plain link to the Overview page
    assert "[Open the quick start](/)" in [m.value for m in at.markdown]
