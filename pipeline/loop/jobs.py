"""Background jobs: each job is an OS process running one stage, shared by CLI and app.

Lifecycle: submit() inserts a 'queued' row and spawns `python -m pipeline.loop.jobs run ID`
in its own session, output to a per-job log file. The worker waits for the heavy slot
(an flock, so a dead holder frees it), runs the stage with a progress callback that
writes done/total/step/ETA and a heartbeat, and ends as succeeded, failed or cancelled.

Cancel sets a flag and sends SIGTERM; the stage stops at its next progress call (a
safe point between whole items). If it has not stopped after CANCEL_GRACE seconds,
reap() kills it. reap() also marks jobs whose process died (SIGKILL, reboot) or whose
heartbeat went stale as failed, with the reason. resume() reruns a failed or
cancelled job in a new process; stages skip the items they already finished.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from pipeline.core import config
from pipeline.core.redact import ScrubFilter, has_credentials, scrub
from pipeline.loop.registry import STAGES, is_heavy, parse, run_stage
from pipeline.storage.store import Store, StoreCloseFailed, StoreWriteFailed
from pipeline.storage.store_process import StoreProcess

ACTIVE = ("queued", "running")
HEARTBEAT_S = 2.0
STALE_S = float(os.environ.get("SEI_JOB_STALE_S", "60"))
CANCEL_GRACE = float(os.environ.get("SEI_CANCEL_GRACE_S", "10"))
# Space set aside on the store's disk for each job while it runs (a file beside its log),
# freed to record the job's end when the disk is full: its cause then reaches the log and
# the row. A submit that cannot set it aside stores nothing.
RESERVE_BYTES = 512 * 1024

log = logging.getLogger("sei.jobs")
_children: list[subprocess.Popen] = []  # reaped in reap() so no zombies linger


class Cancelled(Exception):
    pass


def _proc_start(pid: int) -> str | None:
    """Start time of a process (field 22 of /proc/PID/stat): with the pid it names a
    process uniquely, so a recycled pid is not mistaken for our job."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # a zombie has finished, once its last thread is gone: a killed leader reads Z while
    # its other threads still free the heap and hold its files (the run's lock among them)
    if fields[0] == "Z":
        try:
            if len(os.listdir(f"/proc/{pid}/task")) <= 1:
                return None
        except OSError:  # gone meanwhile
            return None
    return fields[19]


def alive(job: dict) -> bool:
    """Whether the job's own process still runs (a recycled pid is not taken for it)."""
    return bool(job.get("pid")) and _proc_start(job["pid"]) == job.get("pid_start")


def log_dir(store: Store) -> Path:
    """Job logs of one store: a folder of its own (two stores side by side in one folder
    would otherwise both write jobs/job-1.log)."""
    return config.jobs_dir(store.path) / store.path.stem


def display_status(job: dict) -> str:
    """The status to show: 'cancelling' between a cancel request and the job's end."""
    if job["status"] in ACTIVE and job.get("cancel_requested"):
        return "cancelling"
    return job["status"]


# -- how a job reads to people: the same lines in `sei jobs` and on the app's pages --------


def job_line(j: dict) -> str:
    """A job in one short line, the label of its progress bar in the app."""
    eta = f", ETA {j['eta_s']:.0f}s" if j.get("eta_s") else ""
    return f"#{j['job_id']} {j['kind']} · {j['status']} · {j['done'] or 0}/{j['total'] or '?'}{eta}"


def job_row(j: dict) -> str:
    """A job as a row of `sei jobs list` (status, progress, ETA, step, message), with the
    first line of its error when it failed."""
    prog = f"{j['done'] or 0}/{j['total']}" if j["total"] else "-"
    eta = f" eta {j['eta_s']:.0f}s" if j.get("eta_s") and j["status"] == "running" else ""
    line = (f"{j['job_id']:>4} {j['kind']:10} {display_status(j):10} {prog:>10}{eta}  "
            f"{(j['step'] or '')} {(j['message'] or '')[:50]}")
    if j["status"] == "failed" and j.get("error"):
        line += f"\n       error: {j['error'].splitlines()[0][:200]}"
    return line


def readable(v, depth: int = 0) -> str:
    """A value as a person reads it: floats to 4 significant digits, mappings as
    `key value` pairs, lists of records as a count, never Python's repr of a dict."""
    if isinstance(v, bool) or v is None:
        return {True: "yes", False: "no", None: "-"}[v]
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        if depth:  # nested: its size, the details are in `sei jobs show`
            return f"{len(v)} {'entry' if len(v) == 1 else 'entries'}"
        return ", ".join(f"{str(k).replace('_', ' ')} {readable(x, depth + 1)}"
                         for k, x in v.items())
    if isinstance(v, (list, tuple)):
        if all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in v) \
                and len(v) <= 4:
            return ", ".join(readable(x, depth + 1) for x in v)
        return f"{len(v)} {'item' if len(v) == 1 else 'items'}"
    return str(v)


def result_line(result: dict) -> str:
    """A job's result in one line of words and rounded numbers; a clustering diff as
    counts (the full diff is on the Error map page and in `sei jobs show`)."""
    parts = []
    for k, v in result.items():
        if k == "counts" and isinstance(v, list) and all("kept" in c for c in v):
            # a synthesis batch: its outcome in words, summed over the types
            n = {x: sum(c.get(x, 0) for c in v) for x in
                 ("generated", "kept", "rejected", "near_duplicate", "contaminated")}
            parts.append(f"kept {n['kept']} of {n['generated']} proposals over {len(v)} "
                         f"types ({n['rejected']} failed verification, {n['near_duplicate']} "
                         f"near duplicates, {n['contaminated']} contaminated)")
        elif k == "failed_calls" and isinstance(v, list):
            if v:
                parts.append(f"{len(v)} instructor calls failed (a rerun retries them)")
        elif k == "unreached" and isinstance(v, dict) and "n" in v:
            if v["n"]:
                parts.append(f"{v['n']} bad cases reached by no type (see the Synthesis page)")
        elif k == "diff" and isinstance(v, dict):
            parts.append("diff: " + ", ".join(f"{len(v.get(n) or [])} {n}" for n in
                                              ("kept", "new", "gone", "split", "merged")))
        elif isinstance(v, dict):
            parts.append(f"{k.replace('_', ' ')}: {readable(v)}")
        else:
            parts.append(f"{k.replace('_', ' ')} {readable(v, 1)}")
    return " · ".join(parts)


def fraction_done(j: dict) -> float:
    """How far a job is, 0..1 (0 while its total is unknown): what a progress bar shows."""
    return min(1.0, (j["done"] or 0) / j["total"]) if j["total"] else 0.0


def log_tail(path: str | None, n: int, max_bytes: int | None = None) -> str | None:
    """The last n lines of a job's log; None when it has none. With max_bytes only the
    file's end is read (logs can be long; the app polls every 2 s)."""
    if not path or not Path(path).exists():
        return None
    with open(path, "rb") as f:
        if max_bytes is not None:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - max_bytes))
        return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])


def reserve_path(job: dict) -> Path | None:
    """The space a job's process holds for recording its end (see RESERVE_BYTES)."""
    return Path(job["log_file"]).with_suffix(".reserve") if job.get("log_file") else None


def _free(reserve: Path | None) -> bool:
    """Give a job's reserved space back to the disk; whether there was any."""
    try:
        reserve.unlink()
        return True
    except (AttributeError, OSError):
        return False


def _spawn(store: Store, job_id: int, made: list) -> int:
    """Start the job's process (its log and its reserve first). What it made goes into
    `made`, for _abandon to undo if the row is not saved."""
    log_file = (log_dir(store) / f"job-{job_id}.log").absolute()  # the worker runs elsewhere
    made += [d for d in (log_file.parent.parent, log_file.parent) if not d.exists()]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    if not log_file.exists():
        made.append(log_file)
    reserve = log_file.with_suffix(".reserve")
    made.append(reserve)
    fd = os.open(reserve, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, RESERVE_BYTES)
    except OSError as e:
        raise OSError(e.errno, f"{e.strerror} (a job sets {RESERVE_BYTES // 1024} KiB aside "
                      "there, to record its end even on a full disk)", str(reserve)) from None
    finally:
        os.close(fd)
    env = dict(os.environ, SEI_DB=str(store.path.resolve()), PYTHONUNBUFFERED="1")
    with open(log_file, "ab") as out:
        p = subprocess.Popen([sys.executable, "-m", "pipeline.loop.jobs", "run", str(job_id)],
                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, cwd=str(config.ROOT), start_new_session=True)
    made.append(p)
    _children.append(p)
    # Record the pid at once so that a job that dies before starting is still detected.
    store.job_update(job_id, pid=p.pid, pid_start=_proc_start(p.pid) or "", log_file=str(log_file),
                     heartbeat="now")
    return p.pid


def _abandon(made: list) -> None:
    """Undo a _spawn whose row was not saved: kill the process (it waits for the store's
    lock, so it has done nothing) and remove the files made for it."""
    for thing in reversed(made):
        if isinstance(thing, subprocess.Popen):
            try:
                os.killpg(thing.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                thing.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        else:
            try:
                thing.rmdir() if thing.is_dir() else thing.unlink()
            except OSError:
                pass


def _launch(store: Store, job_id_of) -> int:
    """Save a job's row and start its process as one: `job_id_of()` writes the row (inside
    the transaction), then the process starts and its pid is written. If any of it fails,
    or the commit does (a full disk), the process is killed, its files removed and nothing
    is stored: the error says so. A job is either stored and running, or not there."""
    made: list = []
    job_id = None
    try:
        with store.write():
            job_id = job_id_of()
            _spawn(store, job_id, made)
    except StoreCloseFailed:  # committed: the row stands, and its process runs
        return job_id
    except StoreWriteFailed as e:
        _abandon(made)
        raise StoreWriteFailed(f"no job started, nothing was stored: {e}") from None
    except OSError as e:  # its log or its reserve: no space, no such folder
        _abandon(made)
        raise StoreWriteFailed(f"no job started, nothing was stored: cannot make "
                               f"{e.filename or 'its files'}: {e.strerror or e}") from None
    except BaseException:
        _abandon(made)
        raise
    return job_id


def submit(store: Store, kind: str, params: dict | None = None) -> int:
    """Queue a job of a registered stage and start its process; returns the job id."""
    if kind not in STAGES:
        raise ValueError(f"unknown job kind {kind!r}; one of {sorted(STAGES)}")
    params = params or {}
    json.dumps(params)  # parameters must be data
    if has_credentials(json.dumps(params)):
        raise ValueError("job parameters are stored, so they cannot carry user:password; "
                         "put the endpoint in OPENAI_BASE_URL and the key in OPENAI_API_KEY "
                         "(read from the environment, never stored)")
    parse(kind, params)  # an unknown or ill-typed parameter is refused before anything runs
    return _launch(store, lambda: store.job_insert(kind, params, is_heavy(kind, params)))


def cancel(store: Store, job_id: int, wait: float = 0.0) -> dict:
    """Ask a job to stop; with wait > 0, block up to `wait` seconds, then force."""
    job = store.job(job_id)
    if job is None:
        raise KeyError(f"no job {job_id}")
    if job["status"] not in ACTIVE:
        return job
    store.job_update(job_id, cancel_requested=True, cancel_at="now",
                     message="cancelling: stops at its next safe point")
    if alive(job):
        try:
            os.kill(job["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    else:  # never started or already gone: nothing to wait for
        store.job_update(job_id, ACTIVE, status="cancelled", finished_at="now",
                         message="cancelled before it ran")
    deadline = time.monotonic() + wait
    while wait and time.monotonic() < deadline:
        if store.job(job_id)["status"] not in ACTIVE:
            break
        time.sleep(0.2)
    else:
        if wait:
            _force(store, store.job(job_id), "forced: did not stop within the grace period")
    reap(store)
    return store.job(job_id)


def _force(store: Store, job: dict, why: str) -> None:
    if alive(job):
        try:
            os.killpg(job["pid"], signal.SIGKILL)  # its own session: children go too
        except ProcessLookupError:
            pass
    _free(reserve_path(job))
    store.job_update(job["job_id"], ACTIVE, status="cancelled", finished_at="now", message=why)


def reap(store: Store) -> list[int]:
    """Detect dead, stale and overdue-cancel jobs; returns the ids it changed."""
    for p in list(_children):
        if p.poll() is not None:
            _children.remove(p)
    changed = []
    for job in store.jobs(ACTIVE):
        jid = job["job_id"]
        if job["cancel_requested"] and job["cancel_at"] is not None:
            age = store.job_cancel_age(jid)
            if age is not None and age > CANCEL_GRACE:
                _force(store, job, f"forced after {CANCEL_GRACE:.0f}s grace")
                changed.append(jid)
                continue
        if job["pid"] and not alive(job):
            _free(reserve_path(job))
            if job["cancel_requested"]:
                # a cancel that reached the process before its handler was set (a cancel
                # right after the launch) ends it at once: cancelled, as asked, not failed
                done = store.job_update(jid, ACTIVE, status="cancelled", finished_at="now",
                                        message="cancelled (its process ended on the "
                                                "cancel; what it finished is kept)")
            else:
                done = store.job_update(jid, ACTIVE, status="failed", finished_at="now",
                                        error=f"process {job['pid']} died without "
                                              "reporting (killed, crashed or lost in a "
                                              "restart)")
            if done:
                changed.append(jid)
        elif job["heartbeat_age_s"] is not None and job["heartbeat_age_s"] > STALE_S:
            _force(store, job, "")
            store.job_update(jid, ("cancelled",), status="failed",
                             error=f"heartbeat stale for {job['heartbeat_age_s']:.0f}s")
            changed.append(jid)
    return changed


def resume(store: Store, job_id: int) -> int:
    """Start a failed or cancelled job again; its stage skips what it finished."""
    job = store.job(job_id)
    if job is None:
        raise KeyError(f"no job {job_id}")
    if job["status"] in ACTIVE:
        reap(store)
        job = store.job(job_id)
        if job["status"] in ACTIVE:
            raise ValueError(f"job {job_id} is {job['status']}; nothing to resume")
    if job["status"] == "succeeded":
        raise ValueError(f"job {job_id} already succeeded")

    def requeue():
        store.job_update(job_id, status="queued", cancel_requested=False, cancel_at=None,
                         error=None, finished_at=None, message="resumed")
        return job_id
    return _launch(store, requeue)


def wait(store: Store, job_id: int, timeout: float = 600, poll: float = 0.5,
         on_poll=None, raise_on_timeout: bool = True) -> dict:
    """Block until the job ends (or `timeout` passes); returns its row. `on_poll(job)`
    sees the row at each poll (a progress bar); past the timeout, TimeoutError, or the
    still-active row when raise_on_timeout is False."""
    deadline = time.monotonic() + timeout
    if store.job(job_id) is None:
        raise KeyError(f"no job {job_id}")
    while True:
        reap(store)
        job = store.job(job_id)
        if on_poll:
            on_poll(job)
        if job["status"] not in ACTIVE:
            return job
        if time.monotonic() >= deadline:
            break
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
    if raise_on_timeout:
        raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s")
    return job


# -- the worker process -------------------------------------------------------------------


class _Worker:
    def __init__(self, store: Store, job_id: int):
        self.store, self.job_id = store, job_id
        self.stop = threading.Event()
        self.cancel = False
        self.t0 = time.monotonic()
        self.first_done: int | None = None
        self.last_write = 0.0
        self.pending: dict | None = None  # the latest progress the throttle held back
        self.wlock = threading.Lock()  # a held-back row never lands over a newer one
        self.lock = None  # the heavy slot, once held

    def heartbeat_loop(self):
        while not self.stop.wait(HEARTBEAT_S):
            try:
                # the latest progress always lands: what the throttle held back goes with
                # the heartbeat (a "generating 5-64" followed by minutes of silence)
                with self.wlock:
                    held, self.pending = self.pending, None
                    self.store.job_update(self.job_id, ACTIVE, heartbeat="now", **(held or {}))
                job = self.store.job(self.job_id)
                if job and job["cancel_requested"]:
                    self.cancel = True
            except Exception as e:  # never let the heartbeat kill the job
                log.warning("heartbeat failed: %s", e)

    def progress(self, done: int, total: int, step: str, message: str) -> None:
        if self.cancel:
            raise Cancelled()
        now = time.monotonic()
        if self.first_done is None:
            self.first_done, self.t0 = done, now
        eta = None
        if total and done > self.first_done:
            eta = (now - self.t0) / (done - self.first_done) * (total - done)
        row = dict(done=done, total=total, step=step, message=message, eta_s=eta)
        if now - self.last_write < 0.5 and done != total:
            self.pending = row
        else:
            with self.wlock:
                self.last_write, self.pending = now, None
                self.store.job_update(self.job_id, ACTIVE, heartbeat="now", **row)
            log.info("%s %d/%d %s", step, done, total, message)
            if self.store.job(self.job_id)["cancel_requested"]:
                self.cancel = True
                raise Cancelled()


def expected_failure(e: BaseException) -> bool:
    """Whether a job's error is an expected one (bad input or parameters, an endpoint
    refusing us, a store that is busy, read-only, damaged or full, a missing model):
    its message is the whole story. Anything else is a bug and keeps its traceback."""
    import click

    from pipeline.models.instructor import InstructorError
    from pipeline.models.target import ModelError
    from pipeline.storage.store import StoreBusy, StoreReadOnly, StoreUnusable, StoreWriteFailed

    return isinstance(e, (ValueError, click.ClickException, InstructorError,
                          ModelError, StoreBusy, StoreReadOnly, StoreUnusable,
                          StoreWriteFailed, PermissionError, TimeoutError)) \
        or getattr(e, "errno", None) == errno.ENOSPC  # no space left on device


def _wait_heavy_slot(store: Store, w: _Worker):
    lock_path = config.jobs_dir(store.path) / "heavy.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock_path, "w")
    said = False
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fh  # held until the process exits
        except BlockingIOError:
            if not said:
                store.job_update(w.job_id, ACTIVE, message="waiting for the heavy slot "
                                 "(another model or training job is running)")
                said = True
            if w.cancel:
                raise Cancelled() from None
            time.sleep(0.5)


def _say(level: int, text: str) -> bool:
    """One record in the job's log (its stdout), as logging writes it; whether it got
    there (logging itself drops a write that fails, as on a full disk)."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now % 1 * 1000):03d}"
    try:
        sys.stdout.write(f"{stamp} {logging.getLevelName(level)} {scrub(text)}\n")
        sys.stdout.flush()
        return True
    except (OSError, ValueError):
        return False


def _save(store: Store, job_id: int, when=ACTIVE, **fields) -> None:
    """Write the job's row (while its status is one of `when`); a write whose commit stood
    (only the close after it failed) counts as saved."""
    try:
        store.job_update(job_id, when, **fields)
    except StoreCloseFailed:
        pass


def _settle(store: Store, job_id: int, reserve: Path | None, level: int, text: str,
            **fields) -> None:
    """Record how a job ended: `text` in its log, `fields` in its row. On a full disk both
    can fail: then the job's reserve is freed and what failed is tried again, so the cause
    of the end is kept."""
    logged = stored = False
    why = None
    for _ in range(2):
        logged = logged or _say(level, text)
        if not stored:
            try:
                _save(store, job_id, **fields)
                stored = True
            except Exception as e:  # noqa: BLE001 (a full disk, a store gone bad)
                why = e
        if (logged and stored) or not _free(reserve):
            break
    if not stored:
        _say(logging.ERROR, f"job {job_id}: could not record this in the store: "
                            f"{type(why).__name__}: {why}")


def run_worker(job_id: int) -> int:
    """Run one job in this process (`python -m pipeline.loop.jobs run ID`); the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stdout)
    for h in logging.getLogger().handlers:
        h.addFilter(ScrubFilter())
    store = Store()
    try:
        job = store.job(job_id)
    except Exception as e:  # noqa: BLE001 (a store gone bad: its one line)
        _say(logging.ERROR, f"job {job_id} failed: {type(e).__name__}: {e}")
        return 2
    if job is None:
        log.error("no job %s in %s", job_id, store.path)
        return 2
    reserve = reserve_path(job)
    try:
        return _work(store, job, reserve)
    finally:
        _free(reserve)


def _work(store: Store, job: dict, reserve: Path | None) -> int:
    job_id = job["job_id"]
    if job["heavy"]:  # DuckDB trims the heap at every connection close: not in this process
        store = StoreProcess(store.path)
    w = _Worker(store, job_id)

    def on_term(signum, frame):
        w.cancel = True  # stop at the next safe point
    signal.signal(signal.SIGTERM, on_term)
    try:
        _save(store, job_id, None, pid=os.getpid(), pid_start=_proc_start(os.getpid()),
              heartbeat="now")
        hb = threading.Thread(target=w.heartbeat_loop, daemon=True)
        hb.start()
        # in words (the exact parameters are in `sei jobs show`)
        log.info("job %s: %s with %s (attempt %s)", job_id, job["kind"],
                 readable(job["params"] or {}) or "defaults", (job["attempts"] or 0) + 1)
        if job["heavy"]:
            w.lock = _wait_heavy_slot(store, w)  # held until the process exits
        if w.cancel:
            raise Cancelled()
        _save(store, job_id, status="running", started_at="now",
              attempts=(job["attempts"] or 0) + 1, message="started")
        result = run_stage(store, job["kind"], job["params"] or {}, w.progress)
        w.stop.set()
        _save(store, job_id, status="succeeded", finished_at="now", result=result,
              message="done", eta_s=0)
        log.info("job %s succeeded: %s", job_id, result_line(result or {}))
        return 0
    except Cancelled:
        w.stop.set()
        _settle(store, job_id, reserve, logging.INFO, f"job {job_id} cancelled",
                status="cancelled", finished_at="now", message="cancelled at a safe point")
        return 0
    except Exception as e:
        w.stop.set()
        if expected_failure(e):  # the user's to fix, and the message says how: one line
            text = f"job {job_id} failed: {type(e).__name__}: {e}"
        else:  # a bug: the whole traceback, for whoever fixes it
            text = f"job {job_id} failed:\n{traceback.format_exc()}"
        _settle(store, job_id, reserve, logging.ERROR, text, status="failed",
                finished_at="now", error=f"{type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        sys.exit(run_worker(int(sys.argv[2])))
    print("usage: python -m pipeline.loop.jobs run JOB_ID", file=sys.stderr)
    sys.exit(2)
