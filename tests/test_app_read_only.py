"""The app on a store this user cannot write (issue 38, item 3): every button that starts
a job (the Overview's quick start and demo loop, the Jobs page's Start and Resume, the
Iterations page's run, the Error map's re-cluster and retitle) says in the page, in words,
that the store is read-only; no traceback, no job row, no file written beside the store.

The store is made read-only for real: its file 0o444 and its folder 0o555, and, since
root ignores modes, the immutable attribute as well (as tests/test_data.py does)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.config import ROOT
from pipeline.problems.data import import_demo
from pipeline.storage.store import Store

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

DASH = ROOT / "dashboard"
sys.path.insert(0, str(DASH))  # as `streamlit run` does for the main script's folder


def _lock(paths: list[Path], on: bool) -> None:
    """Make files and folders unwritable for this user (and back)."""
    for p in paths:
        if os.geteuid() == 0 and not on:
            subprocess.run(["chattr", "-i", str(p)], check=True)
        p.chmod((0o555 if p.is_dir() else 0o444) if on else (0o755 if p.is_dir() else 0o644))
        if os.geteuid() == 0 and on:  # root ignores modes: the immutable attribute binds it
            subprocess.run(["chattr", "+i", str(p)], check=True)


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A demo store with a failed job (to resume), then made read-only; yields its path."""
    folder = tmp_path / "ro"
    db = folder / "sei.duckdb"
    s = Store(db)
    import_demo(s, 16, 8)
    jid = s.job_insert("extract", {"limit": 4}, False)
    s.job_update(jid, status="failed", error="stopped for this test", finished_at="now")
    _clustering(s)
    monkeypatch.setenv("SEI_DB", str(db))
    locked = [db, folder]
    _lock(locked, True)
    try:
        assert not os.access(db, os.W_OK) and not os.access(folder, os.W_OK)
        yield db
    finally:
        _lock(locked, False)


def _clustering(s: Store) -> None:
    """Two error types of six keyphrases each, stored as a clustering makes them (the
    Error map's content; its map is drawn from these points, no model needed)."""
    from dataclasses import asdict

    from fault_server import make_bad_cases

    from pipeline.core import config
    from pipeline.stages.cluster import ClusterParams

    ids = make_bad_cases(s, [f"Case {i}" for i in range(12)])
    s.upsert_analysis("a-test", "test", None, {})
    for i, c in enumerate(ids):
        s.record_keyphrases("a-test", c, "test", [
            {"text": f"{'carry' if i < 6 else 'unit'} slip number {i}"}])
    kps = s.keyphrases("a-test")
    t1, t2 = s.next_type_ids(2)
    meta = {"clustering_id": "cl-test", "analysis_id": "a-test", "method": "hdbscan",
            "params": asdict(ClusterParams()), "seed": 0, "embed_model": "none",
            "n_points": len(kps), "n_clusters": 2, "timings": {},
            "diff": {"new": [], "kept": [], "gone": [], "split": [], "merged": []},
            "code_version": config.code_version()}
    s.save_clustering(meta, [{"kp_id": k["kp_id"], "x": float(i % 6) + (10 * (i >= 6)),
                              "y": float(i % 3), "cluster": int(i >= 6),
                              "type_id": t2 if i >= 6 else t1, "prob": 1.0}
                             for i, k in enumerate(kps)],
                      [{"type_id": t1, "title": "Carry slips", "titled_by": "test"},
                       {"type_id": t2, "title": "Unit slips", "titled_by": "test"}])


def page(name: str) -> AppTest:
    path = DASH / name if name == "Overview.py" else DASH / "pages" / name
    return AppTest.from_file(str(path), default_timeout=120).run()


def refused(at: AppTest, db: Path, what: str) -> None:
    """The page ran to its end and says, in words, that `what` was refused: read-only."""
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any(e.startswith(what) and f"{db} is read-only for this user" in e
               for e in errors), errors


def button(at: AppTest, label: str):
    return at.button[[b.label for b in at.button].index(label)]


@pytest.mark.slow
def test_every_job_button_refuses_a_read_only_store_in_words(read_only):
    db = read_only
    files, jobs_before = tree(db.parent), Store(db).jobs()
    [failed] = jobs_before

    at = page("Overview.py")
    button(at, "Launch quick start").click().run()
    refused(at, db, "The quickstart job was not started")
    button(at, "Run the demo loop").click().run()
    refused(at, db, "The iterate job was not started")

    at = page("8_Jobs.py")
    button(at, "Start").click().run()
    refused(at, db, "The extract job was not started")
    assert not [s.value for s in at.success]
    at = page("8_Jobs.py")
    button(at, "Resume").click().run()
    refused(at, db, f"Job #{failed['job_id']} was not resumed")

    at = page("7_Iterations.py")
    button(at, "Run iteration 1").click().run()
    refused(at, db, "The iterate job was not started")

    assert Store(db).jobs() == jobs_before  # no job queued, the failed one untouched
    assert tree(db.parent) == files  # no log, lock or write-ahead log made beside it


@pytest.mark.slow
def test_error_map_recluster_and_retitle_refuse_a_read_only_store_in_words(read_only):
    db = read_only
    files, jobs_before = tree(db.parent), Store(db).jobs()
    for label in ("Re-cluster (background job)", "Retitle types"):
        at = page("2_Error_map.py")
        assert not at.exception, [e.value for e in at.exception]
        button(at, label).click().run()
        kind = "cluster" if label.startswith("Re-cluster") else "retitle"
        refused(at, db, f"The {kind} job was not started")
    assert Store(db).jobs() == jobs_before
    assert tree(db.parent) == files
