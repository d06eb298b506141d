"""Background jobs as real OS processes: progress, cancel, resume, SIGKILL, heavy queue.
The jobs that generate use the tests' scripted target (their subject is the job, not the
model), slowed per row where a cancel or a queue must meet a running job."""

import fcntl
import os
import signal
import time

import duckdb
import pytest
from click.testing import CliRunner
from conftest import wait_until as _until

from pipeline.core import config
from pipeline.loop import jobs
from pipeline.problems.data import import_demo
from pipeline.shells.cli import cli


@pytest.mark.slow
def test_extract_job_progress_cancel_resume(store, scripted_slow):
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


@pytest.mark.slow
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


def _stop_outside_a_write(store, pid, read_only=True):
    """SIGSTOP the job while it holds no DuckDB lock. A job hangs in compute, not in the
    milliseconds of a write; stopping it mid-write would freeze the file for everyone,
    which is a different failure (see README, Jobs)."""
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        try:
            # read_only=False also needs the job outside its reads (they block writers)
            duckdb.connect(str(store.path), read_only=read_only).close()
            return
        except duckdb.Error:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.03)
    raise AssertionError("job always held the lock")


@pytest.mark.slow
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


@pytest.mark.slow
def test_heavy_jobs_run_one_at_a_time_light_alongside(store, scripted, monkeypatch):
    monkeypatch.setenv("SCRIPTED_DELAY_S", "1")  # the first runs ~8 s: the light job ends first
    import_demo(store, 10, 2)
    a = jobs.submit(store, "extract", {"limit": 8, "batch_size": 2, "max_new_tokens": 32})
    b = jobs.submit(store, "extract", {"limit": 4, "batch_size": 2, "max_new_tokens": 16,
                                       "seed": 1})
    first = _until(lambda: next((j for j in (store.job(a), store.job(b))
                                 if j["status"] == "running"), None))
    other = b if first["job_id"] == a else a
    # While one heavy job runs, the other waits for the slot, and a light job runs and ends.
    _until(lambda: "heavy slot" in (store.job(other)["message"] or ""))
    light = jobs.submit(store, "ticks", {"n": 3, "seconds": 0.05, "tag": "l"})
    assert jobs.wait(store, light, timeout=120)["status"] == "succeeded"
    assert store.job(first["job_id"])["status"] == "running"  # the heavy one still runs
    assert store.job(other)["status"] == "queued"
    assert len(store.ticks_done("l")) == 3
    never_both = True
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        ja, jb = store.job(a), store.job(b)
        never_both &= not (ja["status"] == "running" and jb["status"] == "running")
        if ja["status"] not in jobs.ACTIVE and jb["status"] not in jobs.ACTIVE:
            break
        time.sleep(0.1)
    assert never_both
    assert store.job(a)["status"] == store.job(b)["status"] == "succeeded"
    assert store.job(other)["started_at"] >= store.job(first["job_id"])["finished_at"]


@pytest.mark.slow
def test_stage_that_raises_fails_the_job_with_its_reason(store, scripted):
    jid = jobs.submit(store, "extract", {"dataset": "nope", "limit": 2})
    j = jobs.wait(store, jid, timeout=120)
    assert j["status"] == "failed"
    assert j["error"].startswith("ValueError: no problems for dataset='nope'")
    log = open(j["log_file"]).read()  # an expected failure: its one line, no traceback
    assert "Traceback" not in log and "failed: ValueError: no problems for dataset" in log
    r = CliRunner().invoke(cli, ["--db", str(store.path), "jobs", "list"])
    assert "error: ValueError: no problems for dataset='nope'" in r.output


@pytest.mark.slow
def test_forced_cancel_kills_a_job_that_does_not_reach_a_safe_point(store):
    """One item of 600 s: the job never reaches its next safe point, so the cancel
    forces it after the grace period, and its process is gone."""
    jid = jobs.submit(store, "ticks", {"n": 2, "seconds": 600, "tag": "f"})
    _until(lambda: store.job(jid)["step"] == "ticks")  # past its first safe point
    j = jobs.cancel(store, jid, wait=1.0)
    assert j["status"] == "cancelled" and j["message"].startswith("forced")
    _until(lambda: not jobs.alive(store.job(jid)), timeout=10)
    assert store.ticks_done("f") == set()


def test_the_latest_progress_always_lands(store):
    """Two progress reports within the write throttle's half second, then ten silent
    seconds: the second one still reaches the store (with the next heartbeat), not only
    after the silence (an extraction showed "4/64" for 9 minutes)."""
    jid = jobs.submit(store, "ticks", {"n": 3, "seconds": [0.05, 0.05, 10], "tag": "l"})
    _until(lambda: len(store.ticks_done("l")) == 2, timeout=60)
    j = _until(lambda: (store.job(jid)["message"] == "item 1" and store.job(jid)), timeout=8)
    assert j["done"] == 2 and j["status"] == "running"
    assert len(store.ticks_done("l")) == 2  # still inside the silence
    assert jobs.cancel(store, jid, wait=0.5)["status"] == "cancelled"  # forced: it sleeps


def test_a_cancel_right_after_the_launch_is_cancelled_not_failed(store):
    """A cancel sent before the job's process has set its handler ends the process at
    once (SIGTERM's default): the job is cancelled, as asked, never "failed"."""
    jid = jobs.submit(store, "ticks", {"n": 3, "seconds": 5, "tag": "c"})
    jobs.cancel(store, jid, wait=0)  # its process is still importing Python
    j = jobs.wait(store, jid, timeout=30)
    assert j["status"] == "cancelled" and j["error"] is None, j
    assert store.ticks_done("c") == set()


@pytest.mark.slow
def test_cancelling_a_queued_job(store, scripted):
    """A heavy job waiting for the slot (held here by a real flock) is cancelled while
    queued: it shows 'cancelling' until it ends, and never runs its stage."""
    config.jobs_dir(store.path).mkdir(parents=True, exist_ok=True)
    lock = open(config.jobs_dir(store.path) / "heavy.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        jid = jobs.submit(store, "extract", {"limit": 2})
        _until(lambda: "heavy slot" in (store.job(jid)["message"] or ""))
        pid = store.job(jid)["pid"]
        _stop_outside_a_write(store, pid, read_only=False)  # the cancel cannot end first
        j = jobs.cancel(store, jid, wait=0)
        assert j["status"] == "queued" and jobs.display_status(j) == "cancelling"
        r = CliRunner().invoke(cli, ["--db", str(store.path), "jobs", "list"])
        assert "cancelling" in r.output
        os.kill(pid, signal.SIGCONT)
        j = jobs.wait(store, jid, timeout=60)
        assert j["status"] == "cancelled" and j["started_at"] is None
        assert jobs.display_status(j) == "cancelled"
    finally:
        lock.close()
    assert store.count("runs") == 0


@pytest.mark.slow
def test_two_stores_in_one_folder_keep_their_logs_apart(tmp_path):
    from pipeline.storage.store import Store

    a, b = Store(tmp_path / "a.duckdb"), Store(tmp_path / "b.duckdb")
    ja = jobs.submit(a, "ticks", {"n": 1, "seconds": 0.01, "tag": "a"})
    jb = jobs.submit(b, "ticks", {"n": 1, "seconds": 0.01, "tag": "b"})
    assert ja == jb == 1
    la, lb = jobs.wait(a, ja, 60)["log_file"], jobs.wait(b, jb, 60)["log_file"]
    assert la != lb
    assert "tag a" in open(la).read() and "tag b" not in open(la).read()
    assert "tag b" in open(lb).read()


@pytest.mark.slow
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
    for cmd in ("wait", "cancel", "show", "logs", "resume"):
        r = CliRunner().invoke(cli, ["--db", str(store.path), "jobs", cmd, "999"])
        assert r.exit_code == 1 and "no job 999" in r.output, (cmd, r.output)
        assert isinstance(r.exception, SystemExit)  # a message, not a traceback
    # --timeout is honoured: exit 2, the job still running.
    r = CliRunner().invoke(cli, ["--db", str(store.path), "jobs", "submit", "ticks", "n=100",
                                 "seconds=0.2", "tag=w"])
    jid = int(r.output.split()[-1])
    r = CliRunner().invoke(cli, ["--db", str(store.path), "jobs", "wait", str(jid),
                                 "--timeout", "1"])
    assert r.exit_code == 2 and f"job {jid} still" in r.output
    assert store.job(jid)["status"] in jobs.ACTIVE
    pid = store.job(jid)["pid"]
    _stop_outside_a_write(store, pid, read_only=False)
    r = CliRunner().invoke(cli, ["--db", str(store.path), "jobs", "cancel", str(jid),
                                 "--wait", "0"])
    os.kill(pid, signal.SIGCONT)
    assert r.exit_code == 0 and "cancelling" in r.output, r.output
    assert jobs.wait(store, jid, timeout=60)["status"] == "cancelled"


@pytest.mark.slow
def test_quickstart_job_runs_to_completion(store, scripted):
    """The app's quick start as one job: demo data, extraction, analysis, clustering."""
    jid = jobs.submit(store, "quickstart", {"limit": 24, "max_new_tokens": 48,
                                            "n_train": 40, "n_test": 10})
    j = jobs.wait(store, jid, timeout=900)
    assert j["status"] == "succeeded", (j["error"], open(j["log_file"]).read()[-3000:])
    res = j["result"]
    run = next(r for r in store.runs() if r["run_id"] == res["run_id"])
    assert (run["n_done"], run["n_items"], run["status"]) == (24, 24, "finished")
    assert store.count("problems") == 50
    bad = store.bad_cases(res["run_id"])
    assert len(bad) == 24 - run["n_correct"]
    done = store.analysis_done(res["analysis_id"])
    assert done == {b["case_id"] for b in bad}
    cl = store.latest_clustering()
    assert cl["clustering_id"] == res["clustering_id"]
    assert cl["n_points"] == len(store.keyphrases(res["analysis_id"]))
    # its log and its line read as words: no Python dict, no third-party warning
    log = open(j["log_file"]).read()
    assert "{" not in log and "Timeout is disabled" not in log, log[-2000:]
    assert "{" not in jobs.result_line(res) and "diff: " in jobs.result_line(res)


def test_job_lines_round_numbers_and_never_print_a_dict():
    """The results of select, synthesize and evaluate jobs, as job lines show them."""
    import re

    lines = [jobs.result_line({"selection_id": "sel-1-oneshot-ab12", "n_scored": 16,
                               "score_mean": 0.46506794157688264, "spearman_n": 3}),
             jobs.result_line({"batch_id": "syn-1", "iteration": 1, "counts": [
                 {"type_id": 1, "title": "a", "generated": 8, "rejected": 2,
                  "near_duplicate": 1, "contaminated": 0, "kept": 5},
                 {"type_id": 2, "title": "b", "generated": 4, "rejected": 0,
                  "near_duplicate": 3, "contaminated": 1, "kept": 0}],
                 "failed_calls": [], "unreached": {"n": 3, "by_reason": {"noise": 3},
                                                   "why": ["..."], "case_ids": {}}}),
             jobs.result_line({"runs": {"demo/test": "evaluate-1a", "svamp/test": "ev-2"},
                               "accuracy": 1 / 3, "ok": True, "adapter": None})]
    assert lines[0] == ("selection id sel-1-oneshot-ab12 · n scored 16 · score mean 0.4651 · "
                        "spearman n 3")
    # a synthesis batch in words: summed over its types, what failed, what it cannot reach
    assert lines[1] == ("batch id syn-1 · iteration 1 · kept 5 of 12 proposals over 2 types "
                        "(2 failed verification, 4 near duplicates, 1 contaminated) · "
                        "3 bad cases reached by no type (see the Synthesis page)")
    assert lines[2] == ("runs: demo/test evaluate-1a, svamp/test ev-2 · accuracy 0.3333 · "
                        "ok yes · adapter -")
    for line in lines:
        assert not re.search(r"[{}\[\]]|\d\.\d{5,}", line), line


def test_quickstart_stages_share_one_bar_that_never_moves_back():
    from pipeline.loop.registry import stage_part

    seen = []

    def bar(done, total, step, message):
        seen.append((done, total, step, message))

    for start, span, name, n in ((0, 80, "extract", 16), (80, 15, "analyze", 9),
                                 (95, 5, "cluster", 4)):
        part = stage_part(bar, start, span, name)
        for i in range(n + 1):
            part(i, n, name, f"item {i}")
    assert [d for d, *_ in seen] == sorted(d for d, *_ in seen)
    assert {t for _, t, *_ in seen} == {100} and seen[-1][0] == 100
    assert seen[0][2:] == ("extract", "0/16: item 0")  # the stage named, its own count
    assert ("analyze", "3/9: item 3") in [x[2:] for x in seen]
