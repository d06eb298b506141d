"""Background jobs as real OS processes: progress, cancel, resume, SIGKILL, heavy queue."""

import os
import signal
import time

import duckdb

from click.testing import CliRunner

from pipeline import jobs
from pipeline.cli import cli
from pipeline.data import import_demo


def _until(pred, timeout=120, poll=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"condition not met within {timeout}s")


def test_extract_job_progress_cancel_resume(store):
    import_demo(store, 40, 10)
    params = {"limit": 12, "batch_size": 2, "max_new_tokens": 24}
    jid = jobs.submit(store, "extract", params)
    seen = set()

    def advanced():
        j = store.job(jid)
        seen.add(j["done"] or 0)
        return j["status"] == "running" and (j["done"] or 0) >= 4 and j

    j = _until(advanced, timeout=300)
    assert j["total"] == 12 and j["pid"] and j["heartbeat_age_s"] < 10
    assert j["eta_s"] is not None and j["eta_s"] > 0
    assert len(seen - {0}) >= 2  # progress moved in steps, visible from outside
    j = jobs.cancel(store, jid, wait=60)
    assert j["status"] == "cancelled" and "safe point" in j["message"]
    done_at_cancel = store.count("generations")
    assert 4 <= done_at_cancel < 12 and done_at_cancel % 2 == 0
    log = open(j["log_file"]).read()
    assert "cancelled" in log

    jobs.resume(store, jid)
    j = jobs.wait(store, jid, timeout=400)
    assert j["status"] == "succeeded", j
    assert j["done"] == 12 and j["attempts"] == 2
    assert store.count("generations") == 12
    assert store.count("runs") == 1
    assert j["result"]["run_id"] == store.runs()[0]["run_id"]


def test_sigkilled_job_is_marked_failed_then_resumes(store):
    jid = jobs.submit(store, "ticks", {"n": 30, "seconds": 0.1, "tag": "k"})
    _until(lambda: len(store.ticks_done("k")) >= 5)
    pid = store.job(jid)["pid"]
    os.kill(pid, signal.SIGKILL)
    _until(lambda: not jobs.alive(store.job(jid)), timeout=10)
    changed = jobs.reap(store)
    assert jid in changed
    j = store.job(jid)
    assert j["status"] == "failed" and "died" in j["error"]
    n_before = len(store.ticks_done("k"))
    assert 5 <= n_before < 30
    jobs.resume(store, jid)
    j = jobs.wait(store, jid, timeout=60)
    assert j["status"] == "succeeded"
    rows = store.rows("SELECT i, count(*) AS n FROM ticks WHERE tag = 'k' GROUP BY i")
    assert len(rows) == 30 and all(r["n"] == 1 for r in rows)


def _stop_outside_a_write(store, pid):
    """SIGSTOP the job while it holds no DuckDB lock. A job hangs in compute, not in the
    milliseconds of a write; stopping it mid-write would freeze the file for everyone,
    which is a different failure (see README, Jobs)."""
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        try:
            duckdb.connect(str(store.path), read_only=True).close()
            return
        except duckdb.Error:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.03)
    raise AssertionError("job always held the lock")


def test_stale_heartbeat_is_failed(store, monkeypatch):
    jid = jobs.submit(store, "ticks", {"n": 1000, "seconds": 0.05, "tag": "s"})
    _until(lambda: store.job(jid)["status"] == "running")
    pid = store.job(jid)["pid"]
    _stop_outside_a_write(store, pid)  # hung: alive but silent
    try:
        monkeypatch.setattr(jobs, "STALE_S", 1.5)
        _until(lambda: jobs.reap(store) and store.job(jid)["status"] == "failed", timeout=30)
        assert "heartbeat stale" in store.job(jid)["error"]
        _until(lambda: not jobs.alive(store.job(jid)), timeout=10)  # and it was killed
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_heavy_jobs_run_one_at_a_time_light_alongside(store):
    import_demo(store, 10, 2)
    a = jobs.submit(store, "extract", {"limit": 4, "batch_size": 2, "max_new_tokens": 16})
    b = jobs.submit(store, "extract", {"limit": 4, "batch_size": 2, "max_new_tokens": 16,
                                       "seed": 1})
    light = jobs.submit(store, "ticks", {"n": 3, "seconds": 0.05, "tag": "l"})
    # The light job finishes while the heavy ones share one slot.
    assert jobs.wait(store, light, timeout=60)["status"] == "succeeded"
    waited = False
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        ja, jb = store.job(a), store.job(b)
        assert not (ja["status"] == "running" and jb["status"] == "running")
        if "heavy slot" in (ja["message"] or "") + (jb["message"] or ""):
            waited = True
        if ja["status"] == jb["status"] == "succeeded":
            break
        time.sleep(0.1)
    assert store.job(a)["status"] == store.job(b)["status"] == "succeeded"
    assert waited


def test_cli_jobs_commands(store):
    r = CliRunner().invoke(cli, ["--db", str(store.path), "jobs", "submit", "ticks", "n=4",
                                 "seconds=0.05", "tag=c"])
    assert r.exit_code == 0, r.output
    jid = int(r.output.split()[-1])
    r = CliRunner().invoke(cli, ["--db", str(store.path), "jobs", "wait", str(jid)])
    assert r.exit_code == 0 and "succeeded" in r.output
    r = CliRunner().invoke(cli, ["--db", str(store.path), "jobs", "list"])
    assert "ticks" in r.output and "succeeded" in r.output and "4/4" in r.output
    r = CliRunner().invoke(cli, ["--db", str(store.path), "jobs", "logs", str(jid)])
    assert "succeeded" in r.output
    r = CliRunner().invoke(cli, ["--db", str(store.path), "jobs", "resume", str(jid)])
    assert r.exit_code != 0 and "already succeeded" in r.output
    r = CliRunner().invoke(cli, ["--db", str(store.path), "jobs", "submit", "nope"])
    assert r.exit_code != 0 and "unknown job kind" in r.output
