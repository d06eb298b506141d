"""The store's edges, on real parts (issue 23): real DuckDB files copied from a store
made by `sei`, the `sei` CLI, a real read-only folder (root without CAP_DAC_OVERRIDE,
through setpriv), a real full filesystem (a tiny tmpfs), real job processes killed with
SIGKILL. Nothing of the code under test is monkeypatched.

The matrices of refusals run the CLI in this process (`sei_here`: click's CliRunner on the
same `cli` group, cwd and environment as a subprocess would have them); each kind of
refusal also runs once in a real `sei` subprocess (`sei`), so that the real exit code and
the one line on stderr are checked end to end. What needs a process of its own (a user
without CAP_DAC_OVERRIDE, killed jobs) stays in subprocesses."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import traceback
from contextlib import chdir
from pathlib import Path

import pytest
from conftest import wait_until as _wait

from pipeline.core.config import ROOT
from pipeline.loop import jobs
from pipeline.storage.store import Store, StoreWriteFailed

# root, but without the capability that lets root write what it may not: a read-only
# file or folder is read-only for the command
READ_ONLY_USER = ["setpriv", "--inh-caps=-dac_override", "--bounding-set=-dac_override", "--"]


def sei(*args, db: Path | None = None, ro: bool = False, timeout: float = 300,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """`sei ARGS` in a subprocess (as a read-only user with ro=True)."""
    cmd = [sys.executable, "-m", "pipeline.shells.cli"] + (["--db", str(db)] if db else []) \
        + [str(a) for a in args]
    return subprocess.run((READ_ONLY_USER if ro else []) + cmd, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, **(env or {})))


def sei_here(*args, db: Path | None = None,
             env: dict | None = None) -> subprocess.CompletedProcess:
    """`sei ARGS` run in this process by click's CliRunner, on the group `sei` runs (with
    cli_loop's commands), from ROOT like `sei()`; the same result as `sei()` gives. An
    exception that escapes the CLI ends a real process with its traceback on stderr and
    exit code 1: here too, so one_line_error fails on it the same way. SEI_DB, which the
    CLI sets for the job processes it starts, is put back by CliRunner afterwards (and
    by the autouse fixture below, at the end of each test)."""
    from click.testing import CliRunner

    from pipeline.shells.cli import cli

    argv = (["--db", str(db)] if db else []) + [str(a) for a in args]
    with chdir(ROOT):
        r = CliRunner().invoke(cli, argv, prog_name="sei",
                               env={"SEI_DB": os.environ.get("SEI_DB"), **(env or {})})
    stderr = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*r.exc_info))  # as a process shows it
    return subprocess.CompletedProcess(["sei", *argv], r.exit_code, r.stdout, stderr)


@pytest.fixture(autouse=True)
def _sei_db_restored(monkeypatch):
    """The CLI run in this process sets os.environ["SEI_DB"]: undone after each test."""
    if "SEI_DB" in os.environ:
        monkeypatch.setenv("SEI_DB", os.environ["SEI_DB"])
    else:
        monkeypatch.setenv("SEI_DB", "")
        monkeypatch.delenv("SEI_DB")  # recorded: gone again at the end


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """A command that failed in one clean line: non-zero exit, no traceback, one line."""
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "Traceback" not in out, out
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _random_selection(store: Store, n: int = 4) -> str:
    """Iteration 1 with n kept candidates and a finished random selection of all of them
    (no model needed); its selection id."""
    from pipeline.problems import demo
    from pipeline.stages.select import SelectParams, select

    store.create_iteration(1, "scratch", None, {"types": [], "edit_ids": [], "n_cases": 0},
                           None, {})
    store.upsert_synth_batch("t", 1, "offline", {}, {})
    store.add_candidates([{"slot": f"t/{i}", "batch_id": "t", "iteration": 1, "type_id": 0,
                           "question": p["question"], "solution": p["solution"],
                           "answer": p["answer"], "status": "kept", "synthesizer": "offline"}
                          for i, p in enumerate(demo.generate(n, seed=4))])
    return select(store, SelectParams(method="random", top=n))["selection_id"]


@pytest.fixture(scope="module")
def real_db(tmp_path_factory) -> Path:
    """A store made by `sei data demo`, with candidates and a random selection."""
    db = tmp_path_factory.mktemp("real") / "sei.duckdb"
    r = sei("data", "demo", "--n", 12, "--n-test", 6, db=db)
    assert r.returncode == 0, r.stderr
    _random_selection(Store(db))
    return db


def copy_store(real_db: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "sei.duckdb"
    shutil.copy(real_db, db)
    return db


# -- 1. exports ------------------------------------------------------------------------


EXPORTS = [["export", "types"], ["export", "candidates"], ["export", "selection"]]


@pytest.mark.slow
def test_export_refuses_the_store_its_wal_and_what_it_owns(real_db, tmp_path):
    db = copy_store(real_db, tmp_path / "s")
    Store(db).record_train_steps("x", [], 0)  # a write: the store as a job would leave it
    for d in ("jobs", "adapters/train-1", "models"):
        (tmp_path / "s" / d).mkdir(parents=True)
    wal = Path(f"{db}.wal")
    wal.write_bytes(b"")  # a WAL as a writer in flight leaves it
    before = digest(db)
    targets = [db, wal, tmp_path / "s" / "jobs" / "t.jsonl",
               tmp_path / "s" / "adapters" / "train-1" / "adapter_model.safetensors",
               tmp_path / "s" / "models" / "m.jsonl", tmp_path / "s" / "jobs" / "new" / "t.jsonl"]
    # once end to end in a real process, then the whole matrix in this one
    line = one_line_error(sei("export", "types", "--force", "-o", db, db=db))
    assert str(db) in line and "the store itself" in line and "refusing to write there" in line
    for cmd in EXPORTS:
        for target in targets:
            for extra in ([], ["--force"], ["--format", "parquet"]):
                line = one_line_error(sei_here(*cmd, *extra, "-o", target, db=db))
                assert str(target) in line and "refusing to write there" in line, line
    assert digest(db) == before and wal.read_bytes() == b""
    # the store's own path given another way (relative, through a symlink) is the store too
    (tmp_path / "link").symlink_to(db)
    for target in (tmp_path / "link", Path(os.path.relpath(db, ROOT))):
        line = one_line_error(sei_here("export", "candidates", "--force", "-o", target, db=db))
        assert "the store itself" in line
    assert digest(db) == before
    assert not (tmp_path / "s" / "jobs" / "new").exists()
    assert sei_here("data", "list", db=db).returncode == 0


@pytest.mark.slow
def test_export_makes_missing_folders_and_overwrites_only_with_force(real_db, tmp_path):
    db = copy_store(real_db, tmp_path / "s")
    sel = Store(db).selections()[-1]["selection_id"]
    for fmt in ("jsonl", "parquet"):
        for cmd in (["export", "candidates"], ["export", "selection", "--selection", sel]):
            # the first case in real processes (an export and its refusal end to end)
            run = sei if (fmt, cmd[1]) == ("jsonl", "candidates") else sei_here
            out = tmp_path / "out" / fmt / cmd[1] / "deeper" / f"x.{fmt}"
            r = run(*cmd, "--format", fmt, "-o", out, db=db)
            assert r.returncode == 0, r.stderr
            assert "4 " in r.stdout and out.stat().st_size > 0
            out.write_text("keep me")
            line = one_line_error(run(*cmd, "--format", fmt, "-o", out, db=db))
            assert line == f"Error: {out} exists; pass --force to overwrite it"
            assert out.read_text() == "keep me"
            r = run(*cmd, "--format", fmt, "--force", "-o", out, db=db)
            assert r.returncode == 0, r.stderr
            assert out.read_bytes() != b"keep me"
            if fmt == "jsonl":
                assert len(out.read_text().splitlines()) == 4
            else:
                import pandas as pd

                assert len(pd.read_parquet(out)) == 4
    # a folder that cannot be made: one line
    (tmp_path / "file").write_text("")
    line = one_line_error(sei("export", "candidates", "-o", tmp_path / "file" / "x.jsonl",
                              db=db))
    assert "cannot make the folder" in line


@pytest.mark.slow
def test_export_types_onto_the_store_is_refused_and_elsewhere_works(clustered, tmp_path):
    db = clustered.path
    before = digest(db)
    line = one_line_error(sei_here("export", "types", "-o", db, db=db))
    assert "the store itself" in line and digest(db) == before
    for fmt in ("jsonl", "parquet"):
        out = tmp_path / "new" / f"types.{fmt}"
        r = sei_here("export", "types", "--format", fmt, "-o", out, db=db)
        assert r.returncode == 0 and out.stat().st_size > 0, r.stderr
    assert sei_here("types", "list", db=db).returncode == 0 and digest(db) == before


# -- 2. a read-only store ----------------------------------------------------------------


@pytest.fixture
def read_only_store(real_db, tmp_path):
    folder = tmp_path / "ro"
    db = copy_store(real_db, folder)
    db.chmod(0o444)
    folder.chmod(0o555)
    probe = subprocess.run(READ_ONLY_USER + ["touch", str(folder / "probe")],
                           capture_output=True)
    if probe.returncode == 0:
        pytest.skip("cannot make a read-only user here (setpriv without effect)")
    yield db
    folder.chmod(0o755)
    db.chmod(0o644)


WRITES = [  # no options but what they need: they would run on a writable store
    ["extract"],
    ["quickstart"],
    ["evaluate"],
    ["iterate"],
    ["analyze", "--offline"],
    ["cluster"],
    ["extract", "--background"],
    ["data", "demo"],
    ["jobs", "submit", "analyze"],
]


@pytest.mark.slow
def test_read_only_store_reads_work_and_writes_refuse_in_one_line(read_only_store):
    db = read_only_store
    before, files = digest(db), tree(db.parent)
    r = sei("runs", db=db, ro=True)
    assert r.returncode == 0 and r.stdout.startswith("run "), r.stderr
    r = sei("data", "list", db=db, ro=True)
    assert r.returncode == 0 and "demo" in r.stdout, r.stderr
    line = one_line_error(sei("types", "list", db=db, ro=True))  # it read the store: empty
    assert "no clustering yet" in line
    for cmd in WRITES:
        line = one_line_error(sei(*cmd, db=db, ro=True))
        assert "read-only" in line and str(db) in line, (cmd, line)
        assert tree(db.parent) == files, (cmd, tree(db.parent))  # no lock, log or WAL made
    assert digest(db) == before


@pytest.mark.slow
def test_read_only_jobs_folder_refuses_before_any_lock(real_db, tmp_path):
    """The store is writable but the folder of its locks and logs is not."""
    db = copy_store(real_db, tmp_path / "s")
    (tmp_path / "s" / "jobs").mkdir()
    (tmp_path / "s" / "jobs").chmod(0o555)
    try:
        for cmd in (["extract"], ["quickstart"]):
            line = one_line_error(sei(*cmd, db=db, ro=True))
            assert "read-only" in line and f"{db} " in line and "jobs" in line, line
        assert tree(tmp_path / "s" / "jobs") == []
    finally:
        (tmp_path / "s" / "jobs").chmod(0o755)


# -- 3. a store DuckDB cannot open, or none at all -------------------------------------------


def _damaged(real_db: Path, folder: Path) -> dict[str, Path]:
    import duckdb

    out = {}
    size = real_db.stat().st_size
    for name in ("truncated", "zeroed", "random-header", "text", "foreign"):
        db = copy_store(real_db, folder / name)
        if name == "truncated":  # in its first block: DuckDB cannot open it
            os.truncate(db, 100_000)
        elif name == "zeroed":  # the blocks after the headers
            with open(db, "r+b") as f:
                f.seek(12288)
                f.write(b"\0" * (size - 12288))
        elif name == "random-header":
            with open(db, "r+b") as f:
                f.write(random.Random(0).randbytes(4096))
        elif name == "text":
            db.write_text('{"question": "not a store"}\n')
        else:
            db.unlink()
            con = duckdb.connect(str(db))
            con.execute("CREATE TABLE sales AS SELECT 1 AS x")
            con.close()
        out[name] = db
    return out


@pytest.mark.slow
def test_a_store_duckdb_cannot_open_is_one_line_naming_the_file(real_db, tmp_path):
    for name, db in _damaged(real_db, tmp_path).items():
        before, files = digest(db), tree(db.parent)
        for cmd in (["runs"], ["data", "list"], ["data", "demo", "--n", 2, "--n-test", 2],
                    ["extract"]):
            # each kind of refusal once in a real process: a damaged file, a foreign one
            real = name in ("zeroed", "foreign") and cmd == ["runs"]
            line = one_line_error((sei if real else sei_here)(*cmd, db=db))
            assert str(db) in line, (name, cmd, line)
            if name == "foreign":
                assert "not a SEI store" in line, line
            else:
                assert "restore it from a copy" in line and "--db" in line, (name, cmd, line)
        assert digest(db) == before, name  # nothing tried to repair or overwrite it
        assert tree(db.parent) == files, (name, tree(db.parent))


@pytest.mark.slow
def test_a_read_of_a_missing_store_creates_nothing_a_first_write_creates_it(tmp_path):
    db = tmp_path / "nowhere" / "sei.duckdb"
    for cmd in (["runs"], ["data", "list"], ["types", "list"], ["jobs", "list"],
                ["extract"]):
        line = one_line_error(sei_here(*cmd, db=db))
        assert line.startswith(f"Error: no store at {db}"), line
        assert not (tmp_path / "nowhere").exists()
    # through SEI_DB as well: in this process, and once end to end in a real one
    for run in (sei_here, sei):
        line = one_line_error(run("runs", env={"SEI_DB": str(db)}))
        assert "no store at" in line and not (tmp_path / "nowhere").exists()
    r = sei_here("data", "demo", "--n", 3, "--n-test", 2, db=db)
    assert r.returncode == 0 and db.exists(), r.stderr
    r = sei_here("data", "list", db=db)
    assert r.returncode == 0 and "demo" in r.stdout


# -- 4. a full disk -----------------------------------------------------------------------------


@pytest.fixture
def full_disk(real_db, tmp_path):
    """A copy of the store on a tmpfs with 64 KiB left."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    size = real_db.stat().st_size + 4 * 2 ** 20
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        db = copy_store(real_db, mnt)
        free = shutil.disk_usage(mnt).free
        (mnt / "filler").write_bytes(b"\0" * (free - 64 * 1024))
        yield db
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_a_failed_commit_says_why_in_one_line_and_keeps_the_store(full_disk, tmp_path):
    db = full_disk
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"question": f"{i} " + "How many apples? " * 40,
                                       "answer": f"Some steps.\n#### {i}"}) + "\n"
                           for i in range(3000)))
    line = one_line_error(sei("data", "import", big, "--format", "gsm8k", "--dataset", "big",
                              "--split", "train", db=db))
    assert "No space left on device" in line and str(db) in line, line
    assert "rollback" not in line.lower()
    # the same through Store.write: the real cause, not ROLLBACK's "no transaction"
    with pytest.raises(StoreWriteFailed, match="No space left on device"):
        Store(db).insert_problems([{"dataset": "big", "split": "t", "pid": str(i),
                                    "question": "q" * 2000, "answer": "1"}
                                   for i in range(3000)])
    # an error inside the block comes out as itself
    import duckdb

    with pytest.raises(duckdb.CatalogException, match="no_such_table"):
        with Store(db).write() as con:
            con.execute("INSERT INTO no_such_table VALUES (1)")
    (db.parent / "filler").unlink()
    r = sei("data", "list", db=db)
    assert r.returncode == 0 and "big" not in r.stdout and "demo" in r.stdout, r.stderr
    assert Store(db).problem_count("big") == 0


# -- 5 and 6. training resumes exactly; checkpoints hold data, not code ------------------------



@pytest.mark.slow
def test_training_killed_after_a_checkpoint_resumes_to_the_same_losses_and_adapter(
        real_db, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    monkeypatch.delenv("SEI_ADAPTERS_DIR", raising=False)
    monkeypatch.delenv("SEI_JOBS_DIR", raising=False)
    # dropout on (its masks are what a resume must draw again), 2 epochs of 2 steps
    params = {"method": "random", "epochs": 2, "batch_size": 2, "checkpoint_every": 2,
              "max_length": 128, "dropout": 0.1, "seed": 7}
    whole, killed = (Store(copy_store(real_db, tmp_path / n)) for n in ("whole", "killed"))
    ja = jobs.submit(whole, "train", params)
    jb = jobs.submit(killed, "train", params)
    _wait(lambda: (killed.train_runs() or [{}])[-1].get("step", 0) >= 3, what="step 3")
    os.killpg(killed.job(jb)["pid"], signal.SIGKILL)
    # reap() marks the dead job failed and returns the ids it changed: that one alone
    changed = _wait(lambda: jobs.reap(killed), what="reap() to see the killed job")
    assert changed == [jb], changed
    job = killed.job(jb)
    assert job["status"] == "failed", job
    assert f"process {job['pid']} died without reporting" in job["error"], job["error"]
    assert jobs.reap(killed) == []  # once: a second reap changes nothing
    run = killed.train_runs()[-1]
    assert run["step"] < run["total_steps"] == 4, "the kill did not land mid-run"
    assert run["status"] == "interrupted"  # nobody holds its lock: not 'running'
    assert killed.train_run(run["train_id"])["status"] == "interrupted"
    state = torch.load(Path(run["adapter_dir"]) / "checkpoint" / "state.pt", weights_only=True)
    assert {"torch", "python", "numpy"} <= set(state["rng"])
    jobs.resume(killed, jb)
    for s, j in ((killed, jb), (whole, ja)):
        done = jobs.wait(s, j, timeout=900)
        assert done["status"] == "succeeded", done["error"]
    assert "resumed at step" in open(killed.job(jb)["log_file"]).read()
    a, b = whole.train_runs()[-1], killed.train_runs()[-1]
    assert a["train_id"] == b["train_id"] and a["status"] == b["status"] == "finished"
    la = [(s["step"], s["loss"], s["lr"]) for s in whole.train_steps(a["train_id"])]
    lb = [(s["step"], s["loss"], s["lr"]) for s in killed.train_steps(b["train_id"])]
    assert [s for s, _, _ in la] == list(range(1, 5))
    assert all(math.isfinite(loss) and loss > 0 for _, loss, _ in la), la
    assert lb == la  # exactly: same batches, same dropout masks, same optimizer state
    wa = load_file(Path(a["adapter_dir"]) / "adapter_model.safetensors")
    wb = load_file(Path(b["adapter_dir"]) / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["adapter_hash"] == b["adapter_hash"]


class _Payload:
    """What a tampered checkpoint could carry: unpickling it runs os.mkdir."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_a_checkpoint_is_loaded_without_unpickling_code(tmp_path):
    import pickle

    import torch

    from pipeline.stages.train import _Fit

    (tmp_path / "checkpoint").mkdir()
    ran = tmp_path / "payload-ran"
    torch.save({"step": 2, "opt": {}, "sched": {}, "x": _Payload(str(ran))},
               tmp_path / "checkpoint" / "state.pt")
    with pytest.raises(pickle.UnpicklingError):
        _Fit(None, None, None, None, tmp_path).resume()
    assert not ran.exists()


# -- 7. job logs ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_job_log_has_one_line_for_an_expected_failure_and_a_traceback_for_a_bug(store):
    store.migrate()
    expected = jobs.submit(store, "train", {"method": "random"})  # nothing selected
    bug = jobs.submit(store, "train", {"method": "random", "iteration": "x"})  # a TypeError
    for jid, what in ((expected, "ValueError: no finished random selection"),
                      (bug, "TypeError")):
        j = jobs.wait(store, jid, timeout=300)
        assert j["status"] == "failed" and what in j["error"], j
    log = open(store.job(expected)["log_file"]).read()
    assert "Traceback" not in log, log
    failed = [ln for ln in log.splitlines() if "failed" in ln]
    assert len(failed) == 1 and "ValueError: no finished random selection" in failed[0], log
    r = sei("jobs", "logs", expected, db=store.path)
    assert r.returncode == 0 and "Traceback" not in r.stdout
    assert "no finished random selection" in r.stdout
    log = open(store.job(bug)["log_file"]).read()
    assert "Traceback (most recent call last)" in log and "TypeError" in log, log
