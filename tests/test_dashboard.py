"""Each dashboard page under streamlit's AppTest, on a real store with real clusters of
the real model's bad cases. Edits made through widgets must land in DuckDB."""

import base64
import json
import sys
import time

import numpy as np
import pytest

from pipeline import jobs, settings, taxonomy
from pipeline.config import ROOT

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


def test_overview_quick_start_launches_a_job(store):
    at = ok(page("Overview.py"))
    assert "No runs yet" in at.info[0].value
    at.number_input[0].set_value(8)
    at.number_input[1].set_value(32)
    at.button[0].click().run()  # the form's submit button
    ok(at)
    [j] = store.jobs()
    assert j["kind"] == "quickstart" and j["params"]["limit"] == 8
    jobs.cancel(store, j["job_id"], wait=30)
    assert store.job(j["job_id"])["status"] == "cancelled"


def test_bad_cases_filters(clustered):
    at = ok(page("1_Bad_cases.py"))
    n_bad = clustered.count("bad_cases")
    n_all = clustered.count("generations")
    assert f"{n_bad} of {n_all} generations" in " ".join(c.value for c in at.caption)
    at.selectbox[0].set_value("all").run()
    assert f"{n_all} of {n_all} generations" in " ".join(c.value for c in ok(at).caption)
    # Filter by an error type: only cases with a keyphrase of that type remain.
    tax = taxonomy.current(clustered)
    t = tax.visible_types()[0]
    at.selectbox[0].set_value("wrong only")
    at.selectbox[1].set_value(f"{t.type_id}: {t.title}").run()
    cases = {p["case_id"] for p in tax.points if p["type"] == t.type_id and not p["excluded"]}
    assert f"{len(cases)} of {n_all} generations" in " ".join(c.value for c in ok(at).caption)


def _array(v):
    """Plotly sends numpy columns as typed arrays: {"dtype": "f8", "bdata": base64}."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
    return v


def test_error_map_rename_merge_undo(clustered):
    at = ok(page("2_Error_map.py"))
    tax = taxonomy.current(clustered)
    ts = tax.visible_types()
    assert len(ts) >= 2
    assert len(at.get("plotly_chart")) == 1
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    n_drawn = sum(len(_array(tr["x"])) for tr in fig["data"])
    kp_ids = {int(k) for tr in fig["data"] for k in _array(tr["customdata"])}
    assert kp_ids == {p["kp_id"] for p in tax.points if not p["excluded"]}
    assert n_drawn == sum(1 for p in tax.points if not p["excluded"])
    a, b = ts[0].type_id, ts[1].type_id
    at.text_input(key=f"title-{a}").set_value("carry slip in totals")
    at.button(key=f"rename-{a}").click().run()
    ok(at)
    assert taxonomy.current(clustered).types[a].title == "carry slip in totals"
    assert clustered.edits()[-1]["op"] == "rename"
    at.multiselect(key="merge_ids").set_value([a, b])
    at.button[[x.label for x in at.button].index("Merge")].click().run()
    ok(at)
    now = taxonomy.current(clustered)
    assert now.types[b].merged_into == a or now.types[a].merged_into == b
    at.button(key="undo").click().run()
    ok(at)
    assert all(t.merged_into is None for t in taxonomy.current(clustered).types.values())


def test_jobs_page_shows_progress_and_cancels(store):
    jid = jobs.submit(store, "ticks", {"n": 40, "seconds": 0.25, "tag": "apptest"})
    at = ok(page("3_Jobs.py"))
    deadline = time.time() + 60
    while time.time() < deadline and not (store.job(jid)["done"] or 0):
        time.sleep(0.3)
    at.run()
    bars = ok(at).get("progress")
    assert bars and f"#{jid} ticks" in bars[0].proto.text
    at.button(key=f"cancel-{jid}").click().run()
    ok(at)
    j = jobs.wait(store, jid, timeout=30)
    assert j["status"] == "cancelled" and j["done"] < 40


def test_settings_never_store_the_key(store, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-123")
    at = ok(page("4_Settings.py"))
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
